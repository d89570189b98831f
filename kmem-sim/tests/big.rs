//! A 64 GiB machine costs only the memory it touches. In its own test
//! binary so other tests' allocations do not disturb the RSS measurement.

use kmem::{Platform, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::time::Instant;

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * PAGE_SIZE as u64
}

#[test]
fn a_64_gib_machine_is_cheap() {
    let t = Instant::now();
    let before = rss();
    let p = SimPlatform::new(SimConfig::new(4, pc_memory_map(64 << 30))).unwrap();
    assert_eq!(p.phys_size(), (64u64 << 30) + (1 << 30));
    let dm = p.direct_map();
    // Touch a few pages spread over the whole machine, the last one too.
    let top = p.phys_size() - PAGE_SIZE as u64;
    for pa in (0..16).map(|i| 0x10_0000 + i * (top / 16)).chain([top]) {
        let pa = pa & !(PAGE_SIZE as u64 - 1);
        let q: *mut u64 = std::ptr::with_exposed_provenance_mut(dm.va(pa).unwrap());
        // SAFETY: inside the direct map of usable memory.
        unsafe {
            q.write_volatile(pa);
            assert_eq!(q.read_volatile(), pa);
        }
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    drop(p);
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
}
