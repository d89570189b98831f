//! `drain_all_pages()` on a simulated machine: every CPU's lists are empty
//! when it returns, whether the other CPU is busy (its mailbox), asleep or
//! idle (a helper thread).

use kmem::gfp::*;
use kmem::page::Page;
use kmem::platform::LocalGuard;
use kmem::{BootParams, Kmem, Platform};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;

fn sim(cpus: usize) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(256 * MB))).expect("machine")
}

fn boot(s: &SimPlatform) -> Kmem<&SimPlatform> {
    let _cpu = s.bind(0);
    Kmem::boot(s, s.memory_map(), &BootParams::default()).expect("boot")
}

/// Allocate `n` pages of assorted orders and free them again, so that the
/// calling CPU's lists hold pages.
fn churn(k: &Kmem<&SimPlatform>, n: usize) {
    let pages: Vec<(&Page, u32)> = (0..n)
        .map(|i| {
            let order = [0, 0, 1, 3][i % 4];
            (k.alloc_pages(GFP_KERNEL, order).unwrap(), order)
        })
        .collect();
    for (p, o) in pages {
        k.__free_pages(p, o).unwrap();
    }
}

/// Pages on CPU `cpu`'s lists, all zones.
fn pcp_of(k: &Kmem<&SimPlatform>, cpu: usize) -> u64 {
    k.nodes()
        .flat_map(|n| n.zones())
        .filter_map(|z| z.pcp(cpu))
        .map(|p| u64::from(p.count()))
        .sum()
}

fn wait_for(flag: &AtomicBool) {
    let t = Instant::now();
    while !flag.load(SeqCst) {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out");
        std::thread::yield_now();
    }
}

/// Every page free (but the kmalloc caches' metadata) and the counters
/// matching the lists.
fn settled(k: &Kmem<&SimPlatform>, s: &SimPlatform) {
    s.run_on_cpus(|_| {
        k.drain_local_pages();
    });
    assert_eq!(
        k.check_free_counts().expect("counters match lists"),
        k.totalram_pages() - k.slab_meta_pages() - k.boot_pages()
    );
}

#[test]
fn drains_a_busy_cpu_through_its_mailbox() {
    let s = sim(2);
    let k = boot(&s);
    let ready = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let sections = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        let other = sc.spawn(|| {
            let _cpu = s.bind(1);
            churn(&k, 200);
            assert!(pcp_of(&k, 1) > 0);
            ready.store(true, SeqCst);
            // Stay bound, touching only CPU-local sections, until told to
            // stop: CPU 1 is never free, so only its mailbox can drain it.
            while !stop.load(SeqCst) {
                let _g = LocalGuard::new(&s);
                sections.fetch_add(1, SeqCst);
            }
            // Nothing refilled the lists meanwhile.
            assert_eq!(pcp_of(&k, 1), 0);
        });
        wait_for(&ready);
        let _cpu = s.bind(0);
        churn(&k, 200);
        let (mine, theirs) = (pcp_of(&k, 0), pcp_of(&k, 1));
        assert!(mine > 0 && theirs > 0);
        assert_eq!(k.drain_all_pages(), mine + theirs, "both CPUs counted");
        assert_eq!(k.nr_pcp_pages(), 0, "empty when drain_all_pages returns");
        assert!(!other.is_finished(), "CPU 1's thread is still bound");
        stop.store(true, SeqCst);
        other.join().unwrap();
        assert!(sections.load(SeqCst) > 0);
    });
    assert!(!s.reported("WARNING"), "{:?}", s.reports());
    settled(&k, &s);
}

#[test]
fn drains_an_idle_cpu_and_a_sleeping_one() {
    let s = sim(3);
    let k = boot(&s);
    // CPU 1 churns and unbinds: idle, with pages on its lists.
    s.on_cpu(1, || churn(&k, 100));
    assert!(pcp_of(&k, 1) > 0);
    let asleep = AtomicBool::new(false);
    let wake = AtomicBool::new(false);
    std::thread::scope(|sc| {
        // CPU 2 churns and goes to sleep in wait_event.
        let sleeper = sc.spawn(|| {
            let _cpu = s.bind(2);
            churn(&k, 100);
            s.wait_event(
                0x2,
                &mut || {
                    asleep.store(true, SeqCst);
                    wake.load(SeqCst)
                },
                None,
            );
        });
        wait_for(&asleep);
        let _cpu = s.bind(0);
        assert!(pcp_of(&k, 2) > 0);
        k.drain_all_pages();
        assert_eq!(k.nr_pcp_pages(), 0);
        assert!(!sleeper.is_finished());
        wake.store(true, SeqCst);
        s.wake_up(0x2);
        sleeper.join().unwrap();
    });
    settled(&k, &s);
}

#[test]
fn atomic_context_asks_instead_of_waiting() {
    let s = sim(2);
    let k = boot(&s);
    s.on_cpu(1, || churn(&k, 100));
    let theirs = pcp_of(&k, 1);
    assert!(theirs > 0);
    let _cpu = s.bind(0);
    churn(&k, 100);
    let mine = pcp_of(&k, 0);
    // Under a (simulated) spinlock the caller may not wait for CPU 1.
    assert_eq!(s.spin_locked(|| k.drain_all_pages()), mine);
    assert_eq!(pcp_of(&k, 1), theirs, "CPU 1 was only asked");
    assert!(!s.reported("WARNING"), "no cross-CPU call was tried");
    // CPU 1 honours the request at its next allocation.
    s.on_cpu(1, || {
        let p = k.alloc_page(GFP_KERNEL).unwrap();
        assert!(pcp_of(&k, 1) < theirs);
        k.__free_pages(p, 0).unwrap();
    });
    drop(_cpu);
    settled(&k, &s);
}
