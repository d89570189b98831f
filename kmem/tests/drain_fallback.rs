//! `drain_all_pages()` on a platform without cross-CPU calls: the default
//! `smp_call_function_single` answers `NotSupported` for other CPUs, and
//! those are asked to drain at their next page allocator call instead.

use kmem::arena::ArenaPlatform;
use kmem::gfp::*;
use kmem::memory_map::MemRegion;

use kmem::{BootParams, Error, Kmem, Platform};

/// The arena with the trait's default `smp_call_function_single`.
struct NoIpi<'a>(ArenaPlatform<'a>);

// SAFETY: every promise is the arena's, delegated unchanged; the provided
// `smp_call_function_single` runs `f` only on the caller's own CPU, inside a
// section, on this thread.
unsafe impl Platform for NoIpi<'_> {
    kmem::forward_platform!(p => &p.0;
        nr_cpu_ids, smp_processor_id, local_enter, local_exit,
        in_atomic, in_interrupt, direct_map, report,
        current, now_ns, random_u64
    );
}

#[test]
fn the_default_reaches_only_the_callers_cpu() {
    let mut mem = vec![0u8; 1 << 20];
    let p = NoIpi(ArenaPlatform::new(&mut mem, 2));
    p.0.set_cpu(1);
    let mut ran = 0;
    assert_eq!(
        p.smp_call_function_single(0, &mut || ran += 1),
        Err(Error::NotSupported)
    );
    p.smp_call_function_single(1, &mut || ran += 10).unwrap();
    assert_eq!(ran, 10);
    let mut cpus = Vec::new();
    assert_eq!(
        p.on_each_cpu(&mut |cpu| cpus.push(cpu)),
        Err(Error::NotSupported),
        "CPU 0 refused"
    );
    assert_eq!(cpus, [1], "but CPU 1 still ran it");
    assert!(!p.in_atomic());
}

#[test]
fn drain_all_pages_falls_back_to_asking() {
    let mut mem = vec![0u8; 8 << 20];
    let p = NoIpi(ArenaPlatform::new(&mut mem, 2));
    let (start, end) = p.0.usable_range();
    let map = [MemRegion::usable(start, end - start)];
    let params = BootParams {
        reserve_low: 0,
        ..BootParams::default()
    };
    let k = Kmem::boot(p, &map, &params).unwrap();
    let (a, c) = (
        k.alloc_page(GFP_KERNEL).unwrap(),
        k.alloc_page(GFP_KERNEL).unwrap(),
    );
    let zone = k.page_zone(a);
    k.__free_pages(c, 0).unwrap();
    k.platform().0.set_cpu(1);
    k.__free_pages(a, 0).unwrap();
    let (cpu0, cpu1) = (zone.pcp(0).unwrap(), zone.pcp(1).unwrap());
    assert!(cpu0.count() > 0 && cpu1.count() > 0);
    let mine = u64::from(cpu1.count());
    assert_eq!(
        k.drain_all_pages(),
        mine,
        "only CPU 1's pages came back now"
    );
    assert_eq!(cpu1.count(), 0);
    assert!(cpu0.count() > 0, "CPU 0 could not be reached");
    k.platform().0.set_cpu(0);
    let b = k.alloc_page(GFP_KERNEL).unwrap(); // honours the request
    assert!(cpu0.count() <= cpu0.batch());
    k.__free_pages(b, 0).unwrap();
    k.drain_local_pages();
    assert_eq!(k.nr_pcp_pages(), 0);
    assert_eq!(
        k.check_free_counts().unwrap(),
        k.totalram_pages() - k.slab_meta_pages() - k.boot_pages()
    );
}
