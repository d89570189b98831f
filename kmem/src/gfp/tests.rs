//! Unit tests of the GFP flags against Linux 6.18's values and text.

use super::*;
use std::string::ToString;

#[test]
fn single_bits_match_linux() {
    // Literal values from the ___GFP_*_BIT enum of Linux 6.18
    // gfp_types.h, for !KASAN_HW_TAGS, !LOCKDEP, SLAB_OBJ_EXT.
    let expected: &[(Gfp, u32)] = &[
        (__GFP_DMA, 0x01),
        (__GFP_HIGHMEM, 0x02),
        (__GFP_DMA32, 0x04),
        (__GFP_MOVABLE, 0x08),
        (__GFP_RECLAIMABLE, 0x10),
        (__GFP_HIGH, 0x20),
        (__GFP_IO, 0x40),
        (__GFP_FS, 0x80),
        (__GFP_ZERO, 0x100),
        (__GFP_DIRECT_RECLAIM, 0x400),
        (__GFP_KSWAPD_RECLAIM, 0x800),
        (__GFP_WRITE, 0x1000),
        (__GFP_NOWARN, 0x2000),
        (__GFP_RETRY_MAYFAIL, 0x4000),
        (__GFP_NOFAIL, 0x8000),
        (__GFP_NORETRY, 0x10000),
        (__GFP_MEMALLOC, 0x20000),
        (__GFP_COMP, 0x40000),
        (__GFP_NOMEMALLOC, 0x80000),
        (__GFP_HARDWALL, 0x100000),
        (__GFP_THISNODE, 0x200000),
        (__GFP_ACCOUNT, 0x400000),
        (__GFP_ZEROTAGS, 0x800000),
        (__GFP_NO_OBJ_EXT, 0x1000000),
    ];
    let mut all = 0;
    for &(flag, value) in expected {
        assert_eq!(flag.bits(), value, "{flag:?}");
        assert_eq!(all & value, 0, "{flag:?} overlaps another flag");
        all |= value;
    }
    // Every bit below __GFP_BITS_SHIFT but the unused bit 9.
    assert_eq!(all, __GFP_BITS_MASK.bits() & !0x200);
    assert_eq!(__GFP_BITS_MASK.bits(), 0x1ff_ffff);
}

#[test]
fn masks_match_linux() {
    assert_eq!(__GFP_RECLAIM.bits(), 0xc00);
    assert_eq!(GFP_ZONEMASK.bits(), 0x0f);
    assert_eq!(GFP_MOVABLE_MASK.bits(), 0x18);
    assert_eq!(1 << GFP_MOVABLE_SHIFT, __GFP_MOVABLE.bits());
    // RECLAIM|HIGH|IO|FS|NOWARN|RETRY_MAYFAIL|NOFAIL|NORETRY|MEMALLOC|NOMEMALLOC
    assert_eq!(GFP_RECLAIM_MASK.bits(), 0xb_ece0);
    assert_eq!(GFP_BOOT_MASK.bits(), 0x1ff_ffff & !0xcc0);
    assert_eq!(GFP_CONSTRAINT_MASK.bits(), 0x30_0000);
}

#[test]
fn composites_match_linux() {
    assert_eq!(GFP_ATOMIC.bits(), 0x20 | 0x800);
    assert_eq!(GFP_KERNEL.bits(), 0xcc0);
    assert_eq!(GFP_KERNEL_ACCOUNT.bits(), 0x40_0cc0);
    assert_eq!(GFP_NOWAIT.bits(), 0x2800);
    assert_eq!(GFP_NOIO.bits(), 0xc00);
    assert_eq!(GFP_NOFS.bits(), 0xc40);
    assert_eq!(GFP_USER.bits(), 0x10_0cc0);
    assert_eq!(GFP_DMA.bits(), 0x01);
    assert_eq!(GFP_DMA32.bits(), 0x04);
    assert_eq!(GFP_HIGHUSER.bits(), 0x10_0cc2);
    assert_eq!(GFP_HIGHUSER_MOVABLE.bits(), 0x10_0cca);
    // (HIGHUSER_MOVABLE|COMP|NOMEMALLOC|NOWARN) & ~RECLAIM
    assert_eq!(GFP_TRANSHUGE_LIGHT.bits(), 0x1c_20ca);
    assert_eq!(GFP_TRANSHUGE.bits(), 0x1c_24ca);
}

#[test]
fn operators() {
    let mut g = GFP_NOFS;
    g |= __GFP_FS;
    assert_eq!(g, GFP_KERNEL);
    g &= !__GFP_IO;
    assert_eq!(g.bits(), 0xc80);
    assert_eq!((GFP_KERNEL & __GFP_IO), __GFP_IO);
    assert_eq!(GFP_KERNEL.without(__GFP_FS), GFP_NOFS);
    assert_eq!(GFP_NOFS.union(__GFP_FS), GFP_KERNEL);
    assert!(GFP_KERNEL.contains(__GFP_RECLAIM));
    assert!(!GFP_ATOMIC.contains(__GFP_RECLAIM));
    assert!(GFP_ATOMIC.intersects(__GFP_RECLAIM));
    assert!(!GFP_ATOMIC.intersects(__GFP_FS));
    assert!(Gfp::default().is_empty());
    assert!(!GFP_DMA.is_empty());
    assert_eq!(Gfp::from_bits(0x123).bits(), 0x123);
    assert_eq!(u32::from(GFP_KERNEL), 0xcc0);
}

#[test]
fn predicates() {
    assert!(GFP_KERNEL.allows_blocking());
    assert!(!GFP_ATOMIC.allows_blocking());
    assert!(!GFP_TRANSHUGE_LIGHT.allows_blocking());
    assert!(GFP_TRANSHUGE.allows_blocking());
    assert!(GFP_NOWAIT.allows_spinning());
    assert!(!__GFP_ZERO.allows_spinning());
    assert!(GFP_ATOMIC.allows_kswapd());
    assert!(!GFP_TRANSHUGE.allows_kswapd());
    assert!(GFP_KERNEL.has_io_fs());
    assert!(!GFP_NOFS.has_io_fs());
    assert!(!__GFP_FS.has_io_fs());
    assert!(GFP_NOFS.compaction_allowed());
    assert!(!GFP_NOIO.compaction_allowed());
    assert_eq!(GFP_KERNEL.with_nofs(), GFP_NOFS);
    assert_eq!(GFP_KERNEL.with_noio(), GFP_NOIO);
    assert_eq!(GFP_USER.with_noio(), GFP_NOIO | __GFP_HARDWALL);
    assert_eq!(GFP_ATOMIC.with_noio(), GFP_ATOMIC);
}

#[test]
fn zone_for_all_sixteen_combinations() {
    use ZoneType::*;
    let bad = Err(Error::InvalidArgument);
    // Index = DMA | HIGHMEM<<1 | DMA32<<2 | MOVABLE<<3, as GFP_ZONE_TABLE.
    let table: [Result<ZoneType, Error>; 16] = [
        Ok(Normal),  // 0x0
        Ok(Dma),     // 0x1 DMA
        Ok(HighMem), // 0x2 HIGHMEM
        bad,         // 0x3 DMA|HIGHMEM
        Ok(Dma32),   // 0x4 DMA32
        bad,         // 0x5 DMA|DMA32
        bad,         // 0x6 HIGHMEM|DMA32
        bad,         // 0x7 all three
        Ok(Normal),  // 0x8 MOVABLE
        Ok(Dma),     // 0x9 MOVABLE|DMA
        Ok(Movable), // 0xa MOVABLE|HIGHMEM
        bad,         // 0xb MOVABLE|HIGHMEM|DMA
        Ok(Dma32),   // 0xc MOVABLE|DMA32
        bad,         // 0xd MOVABLE|DMA32|DMA
        bad,         // 0xe MOVABLE|DMA32|HIGHMEM
        bad,         // 0xf all four
    ];
    for (bits, want) in table.iter().enumerate() {
        let flags = Gfp::from_bits(bits as u32);
        assert_eq!(gfp_zone(flags), *want, "zone bits {bits:#x}");
        // Bits outside GFP_ZONEMASK never change the answer.
        assert_eq!(gfp_zone(flags | GFP_KERNEL | __GFP_RECLAIMABLE), *want);
    }
    assert_eq!(gfp_zone(GFP_HIGHUSER), Ok(HighMem));
    assert_eq!(gfp_zone(GFP_TRANSHUGE), Ok(Movable));
}

#[test]
fn migratetype() {
    assert_eq!(gfp_migratetype(GFP_KERNEL), Ok(MigrateType::Unmovable));
    assert_eq!(gfp_migratetype(__GFP_MOVABLE), Ok(MigrateType::Movable));
    assert_eq!(
        gfp_migratetype(GFP_NOFS | __GFP_RECLAIMABLE),
        Ok(MigrateType::Reclaimable)
    );
    assert_eq!(
        gfp_migratetype(GFP_MOVABLE_MASK),
        Err(Error::InvalidArgument)
    );
    // Numbering agrees with Linux's shift trick.
    assert_eq!(
        MigrateType::Movable as u32,
        __GFP_MOVABLE.bits() >> GFP_MOVABLE_SHIFT
    );
    assert_eq!(
        MigrateType::Reclaimable as u32,
        __GFP_RECLAIMABLE.bits() >> GFP_MOVABLE_SHIFT
    );
}

fn show(bits: u32) -> std::string::String {
    Gfp::from_bits(bits).to_string()
}

#[test]
fn display_follows_the_trace_table() {
    assert_eq!(show(0), "none");
    assert_eq!(show(0xcc0), "GFP_KERNEL");
    // GFP_KERNEL|__GFP_HARDWALL is GFP_USER, which comes first.
    assert_eq!(show(0x10_0cc0), "GFP_USER");
    assert_eq!(show(0xdc0), "GFP_KERNEL|__GFP_ZERO");
    // GFP_ATOMIC takes __GFP_KSWAPD_RECLAIM before GFP_NOWAIT can.
    assert_eq!(show(0x2820), "GFP_ATOMIC|__GFP_NOWARN");
    // kswapd alone is not GFP_NOWAIT any more (6.18 added __GFP_NOWARN).
    assert_eq!(show(0x800), "__GFP_KSWAPD_RECLAIM");
    assert_eq!(show(0x2800), "GFP_NOWAIT");
    assert_eq!(show(0x400), "__GFP_DIRECT_RECLAIM");
    assert_eq!(show(0x1c_24ca), "GFP_TRANSHUGE");
    assert_eq!(show(0x1c_20ca), "GFP_TRANSHUGE_LIGHT");
    assert_eq!(show(0x1), "GFP_DMA");
    assert_eq!(show(0x1000000), "__GFP_NO_OBJ_EXT");
    // Leftovers print as hex, last.
    assert_eq!(show(0x200), "0x200");
    assert_eq!(show(0xcc0 | 0x200 | 0x8000_0000), "GFP_KERNEL|0x80000200");
    assert_eq!(
        std::format!("{:?}", GFP_NOFS | __GFP_ZERO),
        "Gfp(GFP_NOFS|__GFP_ZERO)"
    );
    assert_eq!(std::format!("{:#x}", GFP_KERNEL), "0xcc0");
    assert_eq!(std::format!("{:X}", GFP_KERNEL), "CC0");
}

#[test]
fn parse_round_trips() {
    for s in [
        "none",
        "GFP_KERNEL",
        "GFP_NOWAIT|__GFP_FS|__GFP_NORETRY|__GFP_NOMEMALLOC",
        "GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_COMP",
        "__GFP_RECLAIMABLE|__GFP_IO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC",
        "GFP_KERNEL|0x80000200",
        "__GFP_ZEROTAGS|__GFP_NO_OBJ_EXT",
    ] {
        assert_eq!(Gfp::parse(s).unwrap().to_string(), s);
    }
    // Every table entry parses to its own bits.
    for &(name, flags) in GFP_FLAG_NAMES {
        assert_eq!(Gfp::parse(name), Ok(flags), "{name}");
    }
    // Non-canonical input is accepted and normalised.
    assert_eq!(
        " __GFP_IO | __GFP_RECLAIM | __GFP_FS ".parse::<Gfp>(),
        Ok(GFP_KERNEL)
    );
    assert_eq!(Gfp::parse("0xCC0"), Ok(GFP_KERNEL));
    assert_eq!(Gfp::parse("0Xcc0"), Ok(GFP_KERNEL));
}

#[test]
fn parse_errors() {
    let e = Gfp::parse("").unwrap_err();
    assert_eq!(e.kind(), ParseGfpErrorKind::Empty);
    let e = Gfp::parse("GFP_KERNEL||__GFP_ZERO").unwrap_err();
    assert_eq!(e.kind(), ParseGfpErrorKind::EmptyToken);
    let e = Gfp::parse("GFP_KERNEL|").unwrap_err();
    assert_eq!(e.kind(), ParseGfpErrorKind::EmptyToken);
    let e = Gfp::parse("GFP_KERNEL|gfp_kernel").unwrap_err();
    assert_eq!(e.kind(), ParseGfpErrorKind::UnknownName);
    assert_eq!(e.token(), "gfp_kernel");
    assert!(!e.is_truncated());
    assert_eq!(e.to_string(), "unknown GFP flag \"gfp_kernel\"");
    // "none" is only the whole string; disabled configs' flags are unknown.
    assert_eq!(Gfp::parse("none|GFP_KERNEL").unwrap_err().token(), "none");
    assert_eq!(
        Gfp::parse("__GFP_NOLOCKDEP").unwrap_err().token(),
        "__GFP_NOLOCKDEP"
    );
    assert_eq!(
        Gfp::parse("__GFP_SKIP_KASAN").unwrap_err().kind(),
        ParseGfpErrorKind::UnknownName
    );
    for bad in ["0x", "0xg", "0x+1", "0x100000000"] {
        let e = Gfp::parse(bad).unwrap_err();
        assert_eq!(e.kind(), ParseGfpErrorKind::BadHex, "{bad}");
        assert_eq!(e.token(), bad);
    }
    // 47 ASCII bytes then a two-byte character: the cut must not split it.
    let mut long = std::string::String::from("_").repeat(47);
    long.push('Ä');
    let e = Gfp::parse(&long).unwrap_err();
    assert!(e.is_truncated());
    assert_eq!(e.token(), &long[..47]);
    assert_eq!(Error::from(e), Error::InvalidArgument);
}

#[test]
fn legacy_table() {
    let names: std::vec::Vec<&str> = LEGACY_FLAGS.iter().map(|l| l.name).collect();
    for want in [
        "__GFP_WAIT",
        "__GFP_REPEAT",
        "__GFP_COLD",
        "__GFP_NOTRACK",
        "__GFP_NO_KSWAPD",
        "__GFP_OTHER_NODE",
        "__GFP_ATOMIC",
    ] {
        assert!(names.contains(&want), "{want} missing");
        assert_eq!(legacy(want).unwrap().name, want);
    }
    for l in LEGACY_FLAGS {
        // No legacy name shadows a current one.
        assert!(GFP_FLAG_NAMES.iter().all(|(n, _)| *n != l.name));
        assert!(!l.linux.is_empty() && !l.note.is_empty());
        assert!(!l.sets.intersects(l.clears));
    }
    assert_eq!(legacy("__GFP_WAIT").unwrap().sets, __GFP_RECLAIM);
    assert_eq!(legacy("__GFP_REPEAT").unwrap().sets, __GFP_RETRY_MAYFAIL);
    assert_eq!(
        legacy("__GFP_NO_KSWAPD").unwrap().clears,
        __GFP_KSWAPD_RECLAIM
    );
    assert!(legacy("GFP_KERNEL").is_none());
    #[allow(deprecated)]
    {
        assert_eq!(__GFP_WAIT, __GFP_RECLAIM);
        assert_eq!(__GFP_REPEAT, __GFP_RETRY_MAYFAIL);
    }
}

#[test]
fn legacy_names_parse() {
    assert_eq!(
        Gfp::parse("GFP_KERNEL|__GFP_NO_KSWAPD"),
        Ok(GFP_KERNEL.without(__GFP_KSWAPD_RECLAIM))
    );
    // Clears win wherever the legacy name stands.
    assert_eq!(
        Gfp::parse("__GFP_NO_KSWAPD|GFP_KERNEL"),
        Ok(GFP_KERNEL.without(__GFP_KSWAPD_RECLAIM))
    );
    assert_eq!(Gfp::parse("__GFP_WAIT|__GFP_IO|__GFP_FS"), Ok(GFP_KERNEL));
    assert_eq!(
        Gfp::parse("GFP_KERNEL|__GFP_REPEAT"),
        Ok(GFP_KERNEL | __GFP_RETRY_MAYFAIL)
    );
    assert_eq!(
        Gfp::parse("GFP_KERNEL|__GFP_COLD|__GFP_NOTRACK"),
        Ok(GFP_KERNEL)
    );
    assert_eq!(Gfp::parse("GFP_KERNEL|__GFP_OTHER_NODE"), Ok(GFP_KERNEL));
    // Pre-6.3 GFP_ATOMIC spelled out.
    assert_eq!(
        Gfp::parse("__GFP_HIGH|__GFP_ATOMIC|__GFP_KSWAPD_RECLAIM"),
        Ok(GFP_ATOMIC)
    );
    // A legacy name alone can be the empty set.
    assert_eq!(Gfp::parse("__GFP_COLD"), Ok(Gfp::NONE));
}
