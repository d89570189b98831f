//! A machine that one thread drives (as `kmem replay` drives it): an
//! allocation that would sleep for frees that no other context can make is
//! treated as Linux treats one with nothing left to reclaim: the OOM path,
//! then failure, with a report; it never waits forever (#11 item 2).

use kmem::gfp::*;
use kmem::page::Page;
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::sync::mpsc;
use std::time::Duration;

/// Run `f` on a thread bound to CPU 0 of a fresh one-CPU machine whose
/// memory is all taken, and return its result; fail if it has not returned
/// within a minute (it used to wait forever).
fn on_full_machine<R: Send + 'static>(
    f: impl FnOnce(&Kmem<&'static SimPlatform>) -> R + Send + 'static,
) -> (R, Vec<String>) {
    let s = one_cpu_machine();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _cpu = s.bind(0);
        let k = Kmem::boot(s, s.memory_map(), &BootParams::default()).unwrap();
        let held = take_every_page(&k);
        s.take_reports();
        let waits = k.vm_events().alloc_waits;
        let r = f(&k);
        assert_eq!(k.vm_events().alloc_waits, waits, "it never slept for frees");
        for p in held {
            k.__free_pages(p, 0).unwrap();
        }
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the allocation returned (it would wait forever for a free)");
    let reports = s.take_reports().into_iter().map(|(_, l)| l).collect();
    (r, reports)
}

/// A one-CPU, 64 MiB machine that lives as long as the test process (a
/// thread that would wait forever may still hold it).
fn one_cpu_machine() -> &'static SimPlatform {
    Box::leak(Box::new(
        SimPlatform::new(SimConfig::new(1, pc_memory_map(64 << 20))).unwrap(),
    ))
}

/// Every page, the reserves too (`__GFP_MEMALLOC` ignores watermarks).
fn take_every_page<'k>(k: &'k Kmem<&'static SimPlatform>) -> Vec<&'k Page> {
    let mut held = Vec::new();
    for _ in 0..2 {
        while let Ok(p) = k.alloc_pages(GFP_ATOMIC | __GFP_MEMALLOC | __GFP_NOWARN, 0) {
            held.push(p);
        }
        k.drain_all_pages();
    }
    held
}

fn says(reports: &[String], what: &str) -> bool {
    reports.iter().any(|l| l.contains(what))
}

#[test]
fn a_sleeping_gfp_kernel_allocation_fails_after_the_oom_path() {
    let (r, reports) = on_full_machine(|k| k.alloc_pages(GFP_KERNEL, 0).is_err());
    assert!(r, "it failed");
    assert!(
        says(
            &reports,
            "page allocation stalls for frees no other context can make"
        ),
        "{reports:?}"
    );
    assert!(
        says(&reports, "invoked oom-killer"),
        "the OOM path ran: {reports:?}"
    );
    assert!(says(&reports, "page allocation failure"), "{reports:?}");
}

#[test]
fn a_gfp_nofs_too_small_to_fail_allocation_fails_instead_of_retrying_forever() {
    let (r, reports) = on_full_machine(|k| k.alloc_pages(GFP_NOFS, 0).is_err());
    assert!(r, "it failed");
    assert!(
        says(
            &reports,
            "page allocation stalls for frees no other context can make"
        ),
        "{reports:?}"
    );
    assert!(says(&reports, "page allocation failure"), "{reports:?}");
}

#[test]
fn a_nofail_allocation_fails_with_a_warning_instead_of_waiting_forever() {
    let (r, reports) = on_full_machine(|k| k.alloc_pages(GFP_KERNEL | __GFP_NOFAIL, 0).is_err());
    assert!(r, "it failed");
    assert!(
        says(&reports, "__GFP_NOFAIL allocation would wait forever"),
        "{reports:?}"
    );
}

#[test]
fn with_another_cpu_thread_bound_the_allocation_still_waits_for_it() {
    let s = SimPlatform::new(SimConfig::new(2, pc_memory_map(64 << 20))).unwrap();
    let _cpu = s.bind(0);
    assert!(!kmem::Platform::others_can_run(&s), "alone");
    std::thread::scope(|sc| {
        let (tx, rx) = mpsc::channel::<()>();
        let s = &s;
        sc.spawn(move || {
            let _b = s.bind(1);
            let _ = rx.recv();
        });
        // The other thread counts once it asks to bind.
        while !kmem::Platform::others_can_run(s) {
            std::thread::yield_now();
        }
        drop(tx);
    });
    assert!(!kmem::Platform::others_can_run(&s), "alone again");
}

#[test]
fn an_empty_mempool_fails_instead_of_waiting_forever() {
    let s = one_cpu_machine();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _cpu = s.bind(0);
        let k = Kmem::boot(s, s.memory_map(), &BootParams::default()).unwrap();
        let mut pool = k.mempool_create_page_pool(1, 0).unwrap();
        let first = k.mempool_alloc(&pool, GFP_KERNEL).unwrap();
        let reserved = k.mempool_alloc_preallocated(&pool).unwrap();
        let held = take_every_page(&k);
        let got = k.mempool_alloc(&pool, GFP_KERNEL);
        let failed = got.is_err();
        if let Ok(e) = got {
            // SAFETY: the element came from this pool and is not used again.
            unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
        }
        for p in held {
            k.__free_pages(p, 0).unwrap();
        }
        for e in [first, reserved] {
            // SAFETY: the element came from this pool and is not used again.
            unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
        }
        k.mempool_destroy(&mut pool).unwrap();
        let _ = tx.send(failed);
    });
    let failed = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("mempool_alloc returned (it would wait forever)");
    assert!(failed);
    let reports: Vec<String> = s.take_reports().into_iter().map(|(_, l)| l).collect();
    assert!(
        says(&reports, "no other context can free an element"),
        "{reports:?}"
    );
}

/// `with_kswapd` called by the thread that holds the CPU kswapd runs on (a
/// one-CPU machine) returns: it gives the CPU up while kswapd stops.
#[test]
fn with_kswapd_on_a_one_cpu_machine_returns() {
    let s = one_cpu_machine();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _cpu = s.bind(0);
        let k = Kmem::boot(s, s.memory_map(), &BootParams::default()).unwrap();
        let p = kmem_sim::with_kswapd(s, &k, || k.alloc_pages(GFP_KERNEL, 0).unwrap());
        k.__free_pages(p, 0).unwrap();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("with_kswapd returned");
}
