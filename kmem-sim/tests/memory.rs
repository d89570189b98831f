//! Physical memory, the direct map, the vmap area and machine creation.

use kmem::memory_map::MemRegion;
use kmem::platform::PgProt;
use kmem::{Error, Platform, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimError, SimPlatform};

const MIB: u64 = 1 << 20;

fn machine(mib: u64) -> SimPlatform {
    SimPlatform::new(SimConfig::new(2, pc_memory_map(mib * MIB))).unwrap()
}

fn ptr(va: usize) -> *mut u64 {
    std::ptr::with_exposed_provenance_mut(va)
}

#[test]
fn direct_map_covers_usable_memory_and_reads_zero() {
    let p = machine(64);
    let dm = p.direct_map();
    assert_eq!(p.phys_size(), 64 * MIB);
    assert_eq!(dm.end, 64 * MIB);
    assert!(p.memory_is_zeroed());
    assert_eq!(dm.base % PAGE_SIZE, 0);
    for pa in [0x1000u64, 0x10_0000, 64 * MIB - 8] {
        let va = dm.va(pa).unwrap();
        // SAFETY: pa is inside the direct map, which nothing else uses.
        unsafe {
            assert_eq!(ptr(va).read_volatile(), 0);
            ptr(va).write_volatile(pa ^ 0x5555);
            assert_eq!(ptr(va).read_volatile(), pa ^ 0x5555);
        }
        assert_eq!(dm.pa(va), Some(pa));
    }
    assert_eq!(dm.va(64 * MIB), None);
}

fn map(p: &SimPlatform, va: usize, pfn: u64, pages: usize) -> kmem::Result<()> {
    p.map_kernel_range(
        va,
        pfn * PAGE_SIZE as u64,
        pages * PAGE_SIZE,
        PgProt::Kernel,
        kmem::PAGE_SHIFT,
    )
}

#[test]
fn map_kernel_range_aliases_the_direct_map() {
    let p = machine(16);
    let dm = p.direct_map();
    let (start, end) = p.vmap_range().unwrap();
    assert!(end - start >= 1 << 30);
    let pfn = 0x321u64;
    let pa = pfn * PAGE_SIZE as u64;
    let direct = dm.va(pa).unwrap();
    let alias = start + 7 * PAGE_SIZE;
    map(&p, alias, pfn, 1).unwrap();
    // SAFETY: both addresses are mapped read/write to the same page.
    unsafe {
        ptr(direct + 16).write_volatile(0xdead_beef);
        assert_eq!(ptr(alias + 16).read_volatile(), 0xdead_beef);
        ptr(alias + 24).write_volatile(0x1234);
        assert_eq!(ptr(direct + 24).read_volatile(), 0x1234);
    }
    // Remapping the same address to another page shows that page instead.
    map(&p, alias, pfn + 1, 1).unwrap();
    // SAFETY: as above.
    unsafe {
        ptr(direct + PAGE_SIZE + 16).write_volatile(77);
        assert_eq!(ptr(alias + 16).read_volatile(), 77);
    }
    p.unmap_kernel_range(alias, PAGE_SIZE);
    // The page can be mapped again after unmapping (the area stays reserved).
    map(&p, alias, pfn, 1).unwrap();
    // SAFETY: as above.
    unsafe { assert_eq!(ptr(alias + 16).read_volatile(), 0xdead_beef) };
    p.unmap_kernel_range(alias, PAGE_SIZE);
    // A run of pages maps in one call and stays contiguous.
    map(&p, alias, pfn, 3).unwrap();
    // SAFETY: three pages mapped read/write at `alias`, aliasing `direct`.
    unsafe {
        ptr(direct + 2 * PAGE_SIZE + 8).write_volatile(0xabc);
        assert_eq!(ptr(alias + 2 * PAGE_SIZE + 8).read_volatile(), 0xabc);
    }
    p.unmap_kernel_range(alias, 3 * PAGE_SIZE);
    p.flush_tlb_kernel_range(alias, alias + 3 * PAGE_SIZE);
    assert!(p.reports().is_empty(), "{:?}", p.reports());
}

#[test]
fn map_kernel_range_rejects_bad_arguments() {
    let p = machine(16);
    let (start, end) = p.vmap_range().unwrap();
    let pages = p.phys_size() / PAGE_SIZE as u64;
    assert_eq!(map(&p, start + 1, 0, 1), Err(Error::InvalidArgument));
    assert_eq!(
        map(&p, start - PAGE_SIZE, 0, 1),
        Err(Error::InvalidArgument)
    );
    assert_eq!(map(&p, end, 0, 1), Err(Error::InvalidArgument));
    assert_eq!(map(&p, end - PAGE_SIZE, 0, 2), Err(Error::InvalidArgument));
    assert_eq!(map(&p, start, pages, 1), Err(Error::InvalidArgument));
    assert_eq!(map(&p, start, pages - 1, 2), Err(Error::InvalidArgument));
    assert_eq!(map(&p, end - PAGE_SIZE, pages - 1, 1), Ok(()));
    p.unmap_kernel_range(end - PAGE_SIZE, PAGE_SIZE);
    p.unmap_kernel_range(end, PAGE_SIZE);
    assert!(p.reported("not inside the vmap area"));
}

#[test]
fn lowmem_limit_shortens_the_direct_map_only() {
    let mut cfg = SimConfig::new(1, pc_memory_map(64 * MIB));
    cfg.lowmem_limit = Some(32 * MIB);
    let p = SimPlatform::new(cfg).unwrap();
    assert_eq!(p.direct_map().end, 32 * MIB);
    assert_eq!(p.phys_size(), 64 * MIB);
    // High memory is reachable through a kernel mapping.
    let (start, _) = p.vmap_range().unwrap();
    map(&p, start, (48 * MIB) / PAGE_SIZE as u64, 1).unwrap();
    // SAFETY: mapped read/write just above.
    unsafe {
        ptr(start).write_volatile(9);
        assert_eq!(ptr(start).read_volatile(), 9);
    }

    let mut cfg = SimConfig::new(1, pc_memory_map(64 * MIB));
    cfg.lowmem_limit = Some(32 * MIB + 1);
    assert!(matches!(SimPlatform::new(cfg), Err(SimError::Config(_))));
}

#[test]
fn memory_size_is_the_highest_usable_end() {
    let map = vec![
        MemRegion::usable(0x1000, 0x9e000),
        MemRegion::usable(0x10_0000, 0x30_0000),
        MemRegion::reserved(0x100_0000, 0x100_0000),
    ];
    let p = SimPlatform::new(SimConfig::new(1, map)).unwrap();
    assert_eq!(p.phys_size(), 0x40_0000);
    assert_eq!(p.memory_map().len(), 3);
}

#[test]
fn overlapping_ranges_are_refused_in_e820_wording() {
    let map = vec![
        MemRegion::usable(0x10_0000, 0x100_0000),
        MemRegion::reserved(0x80_0000, 0x1000),
    ];
    let err = SimPlatform::new(SimConfig::new(1, map)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SimError::InvalidMap(_)), "{err:?}");
    assert!(
        text.contains("e820: overlapping ranges [mem 0x0000000000100000-0x00000000010fffff] usable and [mem 0x0000000000800000-0x0000000000800fff] reserved"),
        "{text}"
    );
}

#[test]
fn unusable_configurations_are_refused() {
    let no_ram = vec![MemRegion::reserved(0, 0x1000)];
    let err = SimPlatform::new(SimConfig::new(1, no_ram)).unwrap_err();
    assert!(err.to_string().contains("no usable range"), "{err}");
    let err = SimPlatform::new(SimConfig::new(0, pc_memory_map(16 * MIB))).unwrap_err();
    assert!(err.to_string().contains("at least one CPU"), "{err}");
    let empty = vec![MemRegion::usable(0x1000, 0)];
    let err = SimPlatform::new(SimConfig::new(1, empty)).unwrap_err();
    assert!(
        err.to_string().contains("e820: empty or wrapping range"),
        "{err}"
    );
}

#[test]
fn vmap_size_is_configurable_and_must_be_positive() {
    let mut c = SimConfig::new(1, pc_memory_map(16 * MIB));
    assert_eq!(c.vmap_size, kmem_sim::VMAP_SIZE);
    c.vmap_size = 5 * PAGE_SIZE + 1;
    let p = SimPlatform::new(c.clone()).unwrap();
    let (start, end) = p.vmap_range().unwrap();
    assert_eq!(end - start, 6 * PAGE_SIZE, "rounded up to whole pages");
    map(&p, start + 5 * PAGE_SIZE, 0x100, 1).unwrap();
    c.vmap_size = 0;
    let err = SimPlatform::new(c).unwrap_err();
    assert!(err.to_string().contains("vmap area"), "{err}");
}

#[test]
fn reports_are_kept_and_taken() {
    let p = machine(16);
    kmem::report!(&p, kmem::platform::Level::Warning, "hello {}", 42);
    kmem::report!(&p, kmem::platform::Level::Info, "second");
    assert!(p.reported("hello 42"));
    assert!(!p.reported("nothing like it"));
    assert_eq!(p.reports().len(), 2);
    let taken = p.take_reports();
    assert_eq!(
        taken[0],
        (kmem::platform::Level::Warning, "hello 42".to_string())
    );
    assert!(p.reports().is_empty());
    kmem::report!(&p, kmem::platform::Level::Info, "third");
    p.clear_reports();
    assert!(!p.reported("third"));
}

#[test]
fn clock_is_monotonic_and_platform_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SimPlatform>();
    let p = machine(16);
    let a = p.now_ns();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let b = p.now_ns();
    assert!(b >= a + 2_000_000, "{a} {b}");
}

#[test]
fn many_platforms_coexist() {
    let ps: Vec<_> = (0..8).map(|_| machine(8)).collect();
    for (i, p) in ps.iter().enumerate() {
        let va = p.direct_map().va(0x2000).unwrap();
        // SAFETY: inside each platform's own direct map.
        unsafe { ptr(va).write_volatile(i as u64) };
    }
    for (i, p) in ps.iter().enumerate() {
        let va = p.direct_map().va(0x2000).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { ptr(va).read_volatile() }, i as u64);
    }
}
