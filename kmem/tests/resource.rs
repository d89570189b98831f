//! The iomem resource tree (`kernel/resource.c`) on the arena platform:
//! the tree boot builds from a firmware map as `e820__reserve_resources()`
//! and `e820__reserve_resources_late()` do, `/proc/iomem` in `r_show()`'s
//! format, `request_mem_region()` / `release_mem_region()` with Linux's
//! conflict rules and reports, and `region_intersects()`.

use kmem::arena::ArenaPlatform;
use kmem::memory_map::{MemRegion, RegionKind};
use kmem::platform::Level;
use kmem::resource::*;
use kmem::{BootParams, Error, Kmem};
use std::ops::ControlFlow;

/// The arena: physical address 0 sits at the 4 MiB boundary at or below
/// the buffer, so with 16 MiB the buffer's pages always cover
/// 4 MiB..12 MiB, wherever the host puts it.
const MEM: usize = 16 << 20;

const RAM: u64 = 0x40_0000;
const RAM_END: u64 = 0xbe_0000;
const WINDOW: u64 = 0xfe00_0000;

fn region(base: u64, size: u64, kind: RegionKind) -> MemRegion {
    MemRegion {
        base,
        size,
        kind,
        node: 0,
    }
}

/// A small PC-like map: reserved low pages (busy, below 1 MiB), RAM that
/// ends off a 1 MiB boundary, ACPI ranges, an unusable page and a device
/// window above 4 GiB's PCI hole start. Listed out of order: boot sorts.
fn map() -> [MemRegion; 7] {
    [
        region(WINDOW, 0x100_0000, RegionKind::Reserved),
        MemRegion::reserved(0, 0x1000),
        MemRegion::reserved(0xf_0000, 0x1_0000),
        MemRegion::usable(RAM, RAM_END - RAM),
        region(RAM_END, 0x1_0000, RegionKind::AcpiData),
        region(0xc0_0000, 0x1_0000, RegionKind::AcpiNvs),
        region(0xc1_0000, 0x1000, RegionKind::Unusable),
    ]
}

fn boot(buf: &mut [u8]) -> Kmem<ArenaPlatform<'_>> {
    let p = ArenaPlatform::new(buf, 1);
    let (start, end) = p.usable_range();
    assert!(
        start <= RAM && end >= 0xc0_0000,
        "arena {start:#x}-{end:#x}"
    );
    let params = BootParams {
        reserve_low: 0,
        ..BootParams::default()
    };
    Kmem::boot(p, &map(), &params).expect("boot")
}

fn iomem(k: &Kmem<ArenaPlatform<'_>>) -> String {
    let mut s = String::new();
    kmem::proc::iomem(k, &mut s).unwrap();
    s
}

/// The reports at `level` since the last call, emptied.
fn reports(k: &Kmem<ArenaPlatform<'_>>, level: Level) -> Vec<String> {
    let mut out = Vec::new();
    k.platform().for_each_report(|l, s| {
        if l == level {
            out.push(s.to_string());
        }
    });
    k.platform().clear_reports();
    out
}

const BOOT_IOMEM: &str = "\
00000000-00000fff : Reserved
000f0000-000fffff : Reserved
00400000-00bdffff : System RAM
00be0000-00beffff : ACPI Tables
00bf0000-00bfffff : RAM buffer
00c00000-00c0ffff : ACPI Non-volatile Storage
00c10000-00c10fff : Unusable memory
fe000000-feffffff : Reserved
";

#[test]
fn boot_enters_the_map_as_linux_names_and_marks_it() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    // The RAM ends at 0xbe0000: Linux pads it to the next 1 MiB with a
    // "RAM buffer" where nothing else is, here after the ACPI tables.
    assert_eq!(iomem(&k), BOOT_IOMEM);
    assert_eq!(
        reports(&k, Level::Debug)
            .into_iter()
            .filter(|l| l.starts_with("e820:"))
            .collect::<Vec<_>>(),
        ["e820: reserve RAM buffer [mem 0x00be0000-0x00bfffff]"]
    );
    // Flags and descriptors as e820_type_to_iomem_type(),
    // e820_type_to_iores_desc() and do_mark_busy() give them.
    let mut seen = Vec::new();
    k.walk_iomem(|depth, r| {
        seen.push((depth, r.name, r.flags, r.desc));
        Ok::<(), ()>(())
    })
    .unwrap();
    let busy_mem = IORESOURCE_MEM | IORESOURCE_BUSY;
    assert_eq!(
        seen,
        [
            (0, "Reserved", busy_mem, IORES_DESC_RESERVED),
            (0, "Reserved", busy_mem, IORES_DESC_RESERVED),
            (
                0,
                "System RAM",
                IORESOURCE_SYSTEM_RAM | IORESOURCE_BUSY,
                IORES_DESC_NONE
            ),
            (0, "ACPI Tables", busy_mem, IORES_DESC_ACPI_TABLES),
            (0, "RAM buffer", busy_mem, IORES_DESC_NONE),
            (
                0,
                "ACPI Non-volatile Storage",
                busy_mem,
                IORES_DESC_ACPI_NV_STORAGE
            ),
            (0, "Unusable memory", busy_mem, IORES_DESC_NONE),
            // Above 1 MiB a reserved range is a device window: not busy.
            (0, "Reserved", IORESOURCE_MEM, IORES_DESC_RESERVED),
        ]
    );
    let root = k.iomem_resource();
    assert_eq!((root.name, root.start, root.end), ("PCI mem", 0, u64::MAX));
    assert_eq!(root.size(), 0, "2^64 bytes wrap, as resource_size() does");
}

#[test]
fn a_request_inside_a_device_window_becomes_its_child() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let hpet = k.request_mem_region(0xfed0_0000, 0x400, "HPET 0").unwrap();
    assert_eq!(
        hpet,
        Resource {
            start: 0xfed0_0000,
            end: 0xfed0_03ff,
            name: "HPET 0",
            flags: IORESOURCE_MEM | IORESOURCE_BUSY,
            // Inherited from the window, as __request_region() does.
            desc: IORES_DESC_RESERVED,
        }
    );
    // Outside every firmware range it goes under the root.
    let bar = k
        .request_mem_region_exclusive(0xd000_0000, 0x1000, "0000:00:02.0")
        .unwrap();
    assert_eq!(
        bar.flags,
        IORESOURCE_MEM | IORESOURCE_BUSY | IORESOURCE_EXCLUSIVE
    );
    assert_eq!(bar.desc, IORES_DESC_NONE);
    let want = BOOT_IOMEM.replace(
        "fe000000-feffffff : Reserved\n",
        "d0000000-d0000fff : 0000:00:02.0\n\
         fe000000-feffffff : Reserved\n  fed00000-fed003ff : HPET 0\n",
    );
    assert_eq!(iomem(&k), want);
    assert!(reports(&k, Level::Err).is_empty());
}

#[test]
fn an_overlapping_request_is_refused_with_the_collision_report() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    k.request_mem_region(0xfed0_0000, 0x400, "HPET 0").unwrap();
    reports(&k, Level::Debug);
    let cases: [(u64, u64, &str, &str); 5] = [
        // Another driver's registers.
        (
            0xfed0_0200,
            0x100,
            "HPET 1",
            "HPET 1: resource collision: [mem 0xfed00200-0xfed002ff] conflicts with \
             HPET 0 [mem 0xfed00000-0xfed003ff]",
        ),
        // RAM, ACPI tables, the busy legacy area: system ranges.
        (
            0x50_0000,
            0x1000,
            "ramdrv",
            "ramdrv: resource collision: [mem 0x00500000-0x00500fff] conflicts with \
             System RAM [mem 0x00400000-0x00bdffff]",
        ),
        (
            0xbd_f000,
            0x2000,
            "acpidrv",
            "acpidrv: resource collision: [mem 0x00bdf000-0x00be0fff] conflicts with \
             System RAM [mem 0x00400000-0x00bdffff]",
        ),
        (
            0xf_8000,
            0x100,
            "vga",
            "vga: resource collision: [mem 0x000f8000-0x000f80ff] conflicts with \
             Reserved [mem 0x000f0000-0x000fffff]",
        ),
        // Half in the window, half out: the window refuses it.
        (
            0xfeff_f000,
            0x2000,
            "edge",
            "edge: resource collision: [mem 0xfefff000-0xff000fff] conflicts with \
             Reserved [mem 0xfe000000-0xfeffffff]",
        ),
    ];
    let before = iomem(&k);
    for (start, n, name, report) in cases {
        assert_eq!(
            k.request_mem_region(start, n, name),
            Err(Error::Busy),
            "{name}"
        );
        assert_eq!(reports(&k, Level::Err), [report]);
        assert_eq!(iomem(&k), before, "{name}: the tree is unchanged");
    }
    // No range at all.
    assert_eq!(
        k.request_mem_region(0xd000_0000, 0, "empty"),
        Err(Error::InvalidArgument)
    );
    assert_eq!(
        k.request_mem_region(u64::MAX, 2, "wraps"),
        Err(Error::InvalidArgument)
    );
    assert!(reports(&k, Level::Err).is_empty());
}

#[test]
fn release_then_request_again_and_a_nonexistent_release_warns() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    reports(&k, Level::Debug);
    let before = iomem(&k);
    k.request_mem_region(0xfed0_0000, 0x400, "HPET 0").unwrap();
    k.release_mem_region(0xfed0_0000, 0x400).unwrap();
    assert_eq!(iomem(&k), before);
    k.request_mem_region(0xfed0_0000, 0x1000, "HPET 1").unwrap();
    assert!(iomem(&k).contains("  fed00000-fed00fff : HPET 1\n"));
    let nonexistent = |start: u64, n: u64| {
        assert_eq!(
            k.release_mem_region(start, n),
            Err(Error::InvalidArgument),
            "{start:#x}+{n:#x}"
        );
        assert_eq!(
            reports(&k, Level::Warning),
            [format!(
                "resource: Trying to free nonexistent resource <{start:#018x}-{:#018x}>",
                start + n - 1
            )]
        );
    };
    // Part of a region does not match it.
    nonexistent(0xfed0_0000, 0x400);
    k.release_mem_region(0xfed0_0000, 0x1000).unwrap();
    assert!(reports(&k, Level::Warning).is_empty());
    // Released twice, a window that is not busy, a hole.
    nonexistent(0xfed0_0000, 0x1000);
    nonexistent(WINDOW, 0x100_0000);
    nonexistent(0xd000_0000, 0x1000);
    assert_eq!(iomem(&k), before);
    // Exactly the warning Linux prints.
    assert_eq!(
        k.release_mem_region(0xfed0_0000, 0x400),
        Err(Error::InvalidArgument)
    );
    assert_eq!(
        reports(&k, Level::Warning),
        ["resource: Trying to free nonexistent resource <0x00000000fed00000-0x00000000fed003ff>"]
    );
}

#[test]
fn region_intersects_tells_ram_from_reserved_and_mixed() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let ram =
        |start, size| k.region_intersects(start, size, IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE);
    assert_eq!(ram(0x50_0000, 0x1000), RegionIntersects::Intersects);
    // RAM and a hole: holes do not count.
    assert_eq!(ram(RAM - 0x1000, 0x2000), RegionIntersects::Intersects);
    assert_eq!(ram(WINDOW, 0x1000), RegionIntersects::Disjoint);
    assert_eq!(ram(0xd000_0000, 0x1000), RegionIntersects::Disjoint);
    // RAM and the ACPI tables after it.
    assert_eq!(ram(RAM_END - 0x1000, 0x2000), RegionIntersects::Mixed);
    assert_eq!(ram(0, 0), RegionIntersects::Disjoint);
    // By descriptor.
    assert_eq!(
        k.region_intersects(WINDOW, 0x1000, IORESOURCE_MEM, IORES_DESC_RESERVED),
        RegionIntersects::Intersects
    );
    assert_eq!(
        k.region_intersects(RAM_END, 0x1000, IORESOURCE_MEM, IORES_DESC_ACPI_TABLES),
        RegionIntersects::Intersects
    );
    // A busy region nested in the window covers what it covers (Linux
    // 6.12's descent into children); beyond it the window is another kind.
    k.request_mem_region(0xfed0_0000, 0x1000, "HPET 0").unwrap();
    let busy = |start, size| {
        k.region_intersects(
            start,
            size,
            IORESOURCE_MEM | IORESOURCE_BUSY,
            IORES_DESC_NONE,
        )
    };
    assert_eq!(busy(0xfed0_0000, 0x1000), RegionIntersects::Intersects);
    assert_eq!(busy(0xfecf_f000, 0x2000), RegionIntersects::Mixed);
    assert_eq!(busy(0xfed0_0000, 0x2000), RegionIntersects::Mixed);
    assert_eq!(busy(0xfe00_0000, 0x1000), RegionIntersects::Disjoint);
}

#[test]
fn walks_find_ram_pages_and_busy_ranges() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    assert!(k.page_is_ram(RAM >> 12));
    assert!(k.page_is_ram((RAM_END >> 12) - 1));
    assert!(!k.page_is_ram(RAM_END >> 12), "ACPI tables");
    assert!(!k.page_is_ram(0));
    assert!(!k.page_is_ram(0xfed00));
    let mut runs = Vec::new();
    let calls = k.walk_system_ram_range(0, 1 << 20, |pfn, n| {
        runs.push((pfn, n));
        ControlFlow::Continue(())
    });
    assert_eq!(calls, 1);
    assert_eq!(runs, [(RAM >> 12, (RAM_END - RAM) >> 12)]);
    // walk_mem_res(): busy memory, clipped to the range asked for.
    let mut busy = Vec::new();
    k.walk_iomem_res_desc(
        IORES_DESC_NONE,
        IORESOURCE_MEM | IORESOURCE_BUSY,
        0xb0_0000,
        0xc0_7fff,
        |r| {
            busy.push((r.name, r.start, r.end));
            ControlFlow::Continue(())
        },
    );
    assert_eq!(
        busy,
        [
            ("System RAM", 0xb0_0000, 0xbd_ffff),
            ("ACPI Tables", 0xbe_0000, 0xbe_ffff),
            ("RAM buffer", 0xbf_0000, 0xbf_ffff),
            ("ACPI Non-volatile Storage", 0xc0_0000, 0xc0_7fff),
        ]
    );
    // A walk stops when asked.
    let n = k.walk_iomem_res_desc(IORES_DESC_NONE, IORESOURCE_MEM, 0, u64::MAX, |_| {
        ControlFlow::Break(())
    });
    assert_eq!(n, 1);
}

#[test]
fn resources_print_as_linux_pr_format() {
    let r = Resource {
        start: 0x9fc00,
        end: 0x9ffff,
        name: "x",
        flags: IORESOURCE_MEM,
        desc: IORES_DESC_NONE,
    };
    assert_eq!(r.to_string(), "[mem 0x0009fc00-0x0009ffff]");
    let one = Resource { end: r.start, ..r };
    assert_eq!(one.to_string(), "[mem 0x0009fc00]");
    let io = Resource {
        start: 0x60,
        end: 0x6f,
        flags: IORESOURCE_IO,
        ..r
    };
    assert_eq!(io.to_string(), "[io  0x0060-0x006f]");
    let high = Resource {
        start: 0x1_0000_0000,
        end: 0x1_3fff_ffff,
        ..r
    };
    assert_eq!(high.to_string(), "[mem 0x100000000-0x13fffffff]");
}

#[test]
fn an_arena_machine_has_its_ram_and_a_ram_buffer() {
    // 24 MiB: the RAM ends between 20 and 28 MiB, off a 64 MiB boundary.
    let mut m = vec![0u8; 24 << 20];
    let k = Kmem::boot_arena(&mut m, 1).unwrap();
    let (start, end) = k.platform().usable_range();
    let text = iomem(&k);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{start:08x}-{:08x} : System RAM", end - 1).as_str())
    );
    // The end is padded to 64 MiB (the RAM ends above 16 MiB).
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "{end:08x}-{:08x} : RAM buffer",
                end.next_multiple_of(64 << 20) - 1
            )
            .as_str()
        )
    );
    assert_eq!(lines.next(), None);
}
