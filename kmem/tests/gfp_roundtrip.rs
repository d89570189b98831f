//! Every `gfp_flags=` string of the real trace `fs-build.trace.xz` must parse
//! and print back identically (`tests/fixtures/trace-gfp-flags.txt` is the
//! distinct set, extracted with
//! `xz -dc fs-build.trace.xz | grep -o 'gfp_flags=[^ ]*' | sort -u`).

use kmem::gfp::*;

const FIXTURE: &str = include_str!("fixtures/trace-gfp-flags.txt");

#[test]
fn every_trace_string_round_trips() {
    let mut n = 0;
    for line in FIXTURE.lines() {
        let flags = Gfp::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(flags.to_string(), line);
        // And the bits themselves survive a second trip.
        assert_eq!(Gfp::parse(&flags.to_string()), Ok(flags));
        n += 1;
    }
    assert_eq!(n, 45, "fixture should hold the 45 distinct strings");
}

#[test]
fn hand_checked_values() {
    let p = |s: &str| Gfp::parse(s).unwrap();
    // Each value below is worked out by hand from gfp_types.h bit numbers.
    assert_eq!(p("GFP_KERNEL"), __GFP_RECLAIM | __GFP_IO | __GFP_FS);
    assert_eq!(p("GFP_KERNEL").bits(), 0xcc0);
    assert_eq!(p("GFP_KERNEL|__GFP_ZERO").bits(), 0xdc0);
    assert_eq!(p("GFP_ATOMIC").bits(), 0x820);
    assert_eq!(p("GFP_NOWAIT").bits(), 0x2800);
    assert_eq!(p("GFP_NOFS").bits(), 0xc40);
    assert_eq!(p("GFP_KERNEL_ACCOUNT").bits(), 0x40_0cc0);
    assert_eq!(p("GFP_HIGHUSER|__GFP_ACCOUNT").bits(), 0x50_0cc2);
    assert_eq!(
        p("GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP").bits(),
        0x14_0dca
    );
    assert_eq!(
        p("GFP_NOFS|__GFP_ZERO|__GFP_NOFAIL|__GFP_ACCOUNT").bits(),
        0xc40 | 0x100 | 0x8000 | 0x40_0000
    );
    assert_eq!(
        p("GFP_NOWAIT|__GFP_FS|__GFP_NORETRY|__GFP_NOMEMALLOC").bits(),
        0x800 | 0x2000 | 0x80 | 0x1_0000 | 0x8_0000
    );
    assert_eq!(
        p("__GFP_RECLAIMABLE|__GFP_IO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC")
            .bits(),
        0x10 | 0x40 | 0x2000 | 0x1_0000 | 0x4_0000 | 0x8_0000
    );
}

#[test]
fn trace_flags_have_valid_zones_and_migratetypes() {
    for line in FIXTURE.lines() {
        let flags = Gfp::parse(line).unwrap();
        assert!(gfp_zone(flags).is_ok(), "{line}");
        assert!(gfp_migratetype(flags).is_ok(), "{line}");
    }
}
