//! GFP behaviour under memory pressure on simulated machines: direct
//! reclaim, kswapd, shrinkers and their GFP_NOFS/GFP_NOIO rules, the retry
//! rules (__GFP_NORETRY, __GFP_RETRY_MAYFAIL, costly orders, __GFP_NOFAIL),
//! the OOM killer, sleeping versus atomic callers, and might_sleep.

use kmem::gfp::*;
use kmem::mmzone::ZoneType;
use kmem::page::Page;
use kmem::shrinker::{ShrinkControl, Shrinker, ShrinkerConfig, SHRINKER_NEEDS_IO, SHRINK_EMPTY};
use kmem::{BootParams, Error, Kmem, Platform};
use kmem_sim::{pc_memory_map, with_kswapd, Dcache, PageCache, SimConfig, SimPlatform};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// No reclaim, no kswapd, no warning: fills memory down to the min
/// watermark without disturbing anything.
fn fill_gfp() -> Gfp {
    __GFP_NOWARN
}

/// `SReclaimable` of /proc/meminfo, in kB.
fn sreclaimable(k: &Kmem<&SimPlatform>) -> u64 {
    let mut s = String::new();
    kmem::proc::meminfo(k, &mut s).unwrap();
    let line = s.lines().find(|l| l.starts_with("SReclaimable:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn machine(cpus: usize, mib: u64) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(mib << 20))).unwrap()
}

fn boot(s: &SimPlatform, params: BootParams) -> Kmem<&SimPlatform> {
    s.on_cpu(0, || Kmem::boot(s, s.memory_map(), &params))
        .unwrap()
}

/// Allocate order-0 pages with `gfp` until it fails (draining the per-CPU
/// lists once more at the end), and keep them.
fn exhaust<'k>(k: &'k Kmem<&SimPlatform>, gfp: Gfp, out: &mut Vec<&'k Page>) {
    for _ in 0..2 {
        while let Ok(p) = k.alloc_pages(gfp | __GFP_NOWARN, 0) {
            out.push(p);
        }
        k.drain_all_pages();
    }
}

fn free_all(k: &Kmem<&SimPlatform>, pages: Vec<&Page>) {
    for p in pages {
        k.__free_pages(p, 0).unwrap();
    }
}

/// A page cache, registered as a shrinker, that has read pages (dirty or
/// clean) until memory is down to the min watermark.
fn page_cache_filling_memory(
    k: &Kmem<&SimPlatform>,
    dirty: bool,
) -> (PageCache, kmem::shrinker::ShrinkerId) {
    let pc = PageCache::new();
    let id = pc.register(k).unwrap();
    let _ = pc.add_pages(k, usize::MAX, fill_gfp(), dirty);
    (pc, id)
}

/// Poll `cond` until it holds (at most 20 s, else fail with `what`).
fn wait_until(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Free up to 4096 of the pages in `held`.
fn free_some(k: &Kmem<&SimPlatform>, held: &Mutex<Vec<&Page>>) {
    let mut h = held.lock().unwrap();
    let n = h.len().min(4096);
    for p in h.drain(..n) {
        k.__free_pages(p, 0).unwrap();
    }
}

/// A shrinker with a fixed number of objects that never frees any.
struct Stubborn {
    calls: Arc<AtomicU64>,
}

impl<P: Platform> Shrinker<P> for Stubborn {
    fn count_objects(&self, _: &Kmem<P>, _: &ShrinkControl) -> u64 {
        1000
    }
    fn scan_objects(&self, _: &Kmem<P>, _: &mut ShrinkControl) -> u64 {
        self.calls.fetch_add(1, Relaxed);
        0
    }
}

/// Register a [`Stubborn`] shrinker with `flags`, then fill memory to the
/// min watermark; returns its id, its call count and the pages taken.
fn stubborn_and_full<'k>(
    k: &'k Kmem<&SimPlatform>,
    name: &'static str,
    flags: u32,
) -> (kmem::shrinker::ShrinkerId, Arc<AtomicU64>, Vec<&'k Page>) {
    let calls = Arc::new(AtomicU64::new(0));
    let id = k
        .register_shrinker(
            ShrinkerConfig::new(name, flags),
            Stubborn {
                calls: calls.clone(),
            },
        )
        .unwrap();
    let mut held = Vec::new();
    exhaust(k, fill_gfp(), &mut held);
    (id, calls, held)
}

/// A shrinker that owns some pages and gives back one per call.
struct Trickle {
    pfns: Arc<Mutex<Vec<u64>>>,
}

impl<P: Platform> Shrinker<P> for Trickle {
    fn count_objects(&self, _: &Kmem<P>, _: &ShrinkControl) -> u64 {
        match self.pfns.lock().unwrap().len() {
            0 => SHRINK_EMPTY,
            n => n as u64,
        }
    }
    fn scan_objects(&self, k: &Kmem<P>, _: &mut ShrinkControl) -> u64 {
        let Some(pfn) = self.pfns.lock().unwrap().pop() else {
            return 0;
        };
        k.__free_pages(k.pfn_to_page(pfn).unwrap(), 0).unwrap();
        1
    }
}

#[test]
fn gfp_kernel_reclaims_the_page_cache_and_gfp_nowait_does_not() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let (pc, id) = page_cache_filling_memory(&k, false);
    let cached = pc.nr_pages();
    assert!(cached > 10_000, "{cached}");
    let e0 = k.vm_events();
    // GFP_NOWAIT may not reclaim: it fails and only wakes kswapd.
    assert_eq!(
        k.alloc_pages(GFP_NOWAIT | __GFP_NOWARN, 0).err(),
        Some(Error::NoMemory)
    );
    let e1 = k.vm_events();
    assert_eq!(e1.allocstall, e0.allocstall);
    assert!(k.kswapd_pending(0));
    assert_eq!(pc.nr_pages(), cached);
    // GFP_KERNEL reclaims page cache and succeeds.
    let mut got = Vec::new();
    for _ in 0..256 {
        got.push(k.alloc_pages(GFP_KERNEL, 0).unwrap());
    }
    let e2 = k.vm_events();
    assert!(e2.allocstall > e1.allocstall);
    assert!(e2.pgsteal_direct >= 256);
    assert!(pc.nr_pages() <= cached - 256);
    assert_eq!(pc.reclaimed() as usize, cached - pc.nr_pages());
    free_all(&k, got);
    pc.truncate(&k).unwrap();
    k.unregister_shrinker(id).unwrap();
}

#[test]
fn nofs_and_noio_reclaim_skip_what_needs_fs_or_io() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let dc = Dcache::new(&k).unwrap();
    let did = dc.register(&k).unwrap();
    let io_calls = Arc::new(AtomicU64::new(0));
    let ioid = k
        .register_shrinker(
            ShrinkerConfig::new("needs-io", SHRINKER_NEEDS_IO),
            Stubborn {
                calls: io_calls.clone(),
            },
        )
        .unwrap();
    let _ = dc.lookup(&k, usize::MAX, fill_gfp());
    let mut held = Vec::new();
    exhaust(&k, fill_gfp(), &mut held);
    let dentries = dc.nr_unused();
    assert!(dentries > 100_000, "{dentries}");
    let srecl = sreclaimable(&k);
    assert!(srecl > 40_000, "{srecl} kB");

    // GFP_NOFS: the dcache (needs __GFP_FS) is not touched, the I/O one is.
    let before = k.vm_events().allocstall;
    assert!(k
        .alloc_pages(GFP_NOFS | __GFP_NORETRY | __GFP_NOWARN, 0)
        .is_err());
    assert_eq!(k.vm_events().allocstall, before + 1);
    assert_eq!(dc.reclaimed(), 0);
    assert!(io_calls.load(Relaxed) > 0);

    // GFP_NOIO: neither.
    let io_before = io_calls.load(Relaxed);
    assert!(k
        .alloc_pages(GFP_NOIO | __GFP_NORETRY | __GFP_NOWARN, 0)
        .is_err());
    assert_eq!(io_calls.load(Relaxed), io_before);
    assert_eq!(dc.reclaimed(), 0);

    // A memalloc_nofs scope makes GFP_KERNEL behave as GFP_NOFS.
    {
        let _nofs = k.memalloc_nofs_scope();
        assert!(k
            .alloc_pages(GFP_KERNEL | __GFP_NORETRY | __GFP_NOWARN, 0)
            .is_err());
        assert_eq!(dc.reclaimed(), 0);
        let saved = k.memalloc_noio_save();
        let io_before = io_calls.load(Relaxed);
        assert!(k
            .alloc_pages(GFP_KERNEL | __GFP_NORETRY | __GFP_NOWARN, 0)
            .is_err());
        assert_eq!(io_calls.load(Relaxed), io_before);
        k.memalloc_noio_restore(saved);
    }

    // GFP_KERNEL may enter the filesystem: dentries go, their slabs with them.
    let p = k.alloc_pages(GFP_KERNEL | __GFP_NORETRY, 0).unwrap();
    assert!(dc.reclaimed() > 0);
    assert_eq!(dc.nr_unused(), dentries - dc.reclaimed() as usize);
    assert!(sreclaimable(&k) < srecl);
    held.push(p);
    free_all(&k, held);
    dc.prune(&k).unwrap();
    k.unregister_shrinker(did).unwrap();
    k.unregister_shrinker(ioid).unwrap();
}

#[test]
fn dirty_page_cache_is_written_back_only_when_io_and_fs_are_allowed() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let (pc, id) = page_cache_filling_memory(&k, true);
    let dirty = pc.nr_dirty();
    assert!(dirty > 10_000);
    assert!(k
        .alloc_pages(GFP_NOFS | __GFP_NORETRY | __GFP_NOWARN, 0)
        .is_err());
    assert_eq!(pc.writebacks(), 0);
    assert_eq!(pc.nr_dirty(), dirty);
    let p = k.alloc_pages(GFP_KERNEL | __GFP_NORETRY, 0).unwrap();
    assert!(pc.writebacks() > 0);
    k.__free_pages(p, 0).unwrap();
    pc.truncate(&k).unwrap();
    k.unregister_shrinker(id).unwrap();
}

#[test]
fn noretry_gives_up_after_one_reclaim_round_without_oom() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let (id, calls, held) = stubborn_and_full(&k, "stubborn", 0);
    let e0 = k.vm_events();
    let r = k.alloc_pages(GFP_KERNEL | __GFP_NORETRY, 0);
    assert_eq!(r.err(), Some(Error::NoMemory));
    let e1 = k.vm_events();
    assert_eq!(e1.allocstall, e0.allocstall + 1);
    assert!(calls.load(Relaxed) > 0);
    assert_eq!(e1.oom_kill, e0.oom_kill);
    assert!(!s.reported("invoked oom-killer"));
    assert!(s.reported("page allocation failure: order:0"));
    free_all(&k, held);
    k.unregister_shrinker(id).unwrap();
}

#[test]
fn costly_orders_give_up_unless_retry_mayfail() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let (id, calls, held) = stubborn_and_full(&k, "stubborn", 0);
    let victim = s.register_task("hog");
    // Costly order: one reclaim round, no OOM.
    let e0 = k.vm_events();
    assert!(k.alloc_pages(GFP_KERNEL | __GFP_NOWARN, 4).is_err());
    let e1 = k.vm_events();
    assert_eq!(e1.allocstall, e0.allocstall + 1);
    assert!(calls.load(Relaxed) > 0, "reclaim ran the shrinker");
    // With __GFP_RETRY_MAYFAIL: retried up to MAX_RECLAIM_RETRIES rounds
    // without progress, still no OOM.
    assert!(k
        .alloc_pages(GFP_KERNEL | __GFP_RETRY_MAYFAIL | __GFP_NOWARN, 4)
        .is_err());
    let e2 = k.vm_events();
    assert!(e2.allocstall > e1.allocstall + kmem::vmscan::MAX_RECLAIM_RETRIES as u64);
    assert_eq!(e2.oom_kill, 0);
    assert!(!victim.is_killed());
    assert!(!s.reported("invoked oom-killer"));
    free_all(&k, held);
    k.unregister_shrinker(id).unwrap();
}

#[test]
fn retry_mayfail_retries_while_reclaim_progresses_then_fails_without_oom() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    // The trickle shrinker owns even pfns whose odd buddies stay allocated
    // (pinned, or taken when memory is exhausted below), so what it frees
    // never merges into the order-3 block asked for.
    let mut pinned = Vec::new();
    let mut pool = Vec::new();
    for _ in 0..200 {
        let p = k.alloc_pages(GFP_KERNEL, 0).unwrap();
        let pfn = k.page_to_pfn(p);
        if pfn % 2 == 0 && pool.len() < 40 {
            pool.push(pfn);
        } else {
            pinned.push(p);
        }
    }
    assert!(pool.len() >= 20);
    let pfns = Arc::new(Mutex::new(pool));
    let id = k
        .register_shrinker(
            ShrinkerConfig::new("trickle", 0),
            Trickle { pfns: pfns.clone() },
        )
        .unwrap();
    // A task the OOM killer could choose, were it called.
    let victim = s.register_task("hog");
    for _ in 0..100 {
        victim.alloc_pages(&k, GFP_KERNEL, 0).unwrap();
    }
    // Take everything else, reserves included: nothing can merge.
    let mut held = Vec::new();
    exhaust(&k, __GFP_MEMALLOC, &mut held);
    let e0 = k.vm_events();
    let r = k.alloc_pages(GFP_KERNEL | __GFP_RETRY_MAYFAIL | __GFP_NOWARN, 3);
    let e1 = k.vm_events();
    assert!(r.is_err());
    // Every round that freed a page was followed by another.
    assert!(pfns.lock().unwrap().is_empty());
    assert!(e1.allocstall - e0.allocstall > kmem::vmscan::MAX_RECLAIM_RETRIES as u64);
    assert_eq!(e1.oom_kill, 0);
    assert!(!victim.is_killed());
    assert!(!s.reported("invoked oom-killer"));
    free_all(&k, held);
    free_all(&k, pinned);
    victim.exit(&k).unwrap();
    k.unregister_shrinker(id).unwrap();
}

#[test]
fn too_small_to_fail_invokes_the_oom_killer_which_frees_the_biggest_task() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let small = s.register_task("small");
    let hog = s.register_task("hog");
    for _ in 0..100 {
        small.alloc_pages(&k, GFP_KERNEL, 0).unwrap();
    }
    for _ in 0..2000 {
        hog.alloc_pages(&k, GFP_KERNEL, 0).unwrap();
    }
    let mut held = Vec::new();
    exhaust(&k, fill_gfp(), &mut held);
    let p = k.alloc_pages(GFP_KERNEL, 0).unwrap();
    assert!(hog.is_killed());
    assert_eq!(hog.rss_pages(), 0);
    assert!(!small.is_killed());
    assert_eq!(k.vm_events().oom_kill, 1);
    for line in [
        "invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "Mem-Info:",
        "Tasks state (memory values in pages):",
        "Out of memory: Killed process 1001 (hog) total-vm:8000kB, anon-rss:8000kB",
        "oom_reaper: reaped process 1001 (hog)",
    ] {
        assert!(s.reported(line), "missing {line:?}");
    }
    k.__free_pages(p, 0).unwrap();
    small.exit(&k).unwrap();
    free_all(&k, held);
}

#[test]
fn oom_without_a_killable_task_fails_the_allocation_after_the_report() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let immune = s.register_task("init");
    immune.set_oom_score_adj(-1000);
    immune.alloc_pages(&k, GFP_KERNEL, 0).unwrap();
    let mut held = Vec::new();
    exhaust(&k, fill_gfp(), &mut held);
    assert_eq!(k.alloc_pages(GFP_KERNEL, 0).err(), Some(Error::NoMemory));
    assert!(s.reported("invoked oom-killer"));
    assert!(s.reported("Out of memory and no killable processes..."));
    assert!(!immune.is_killed());
    immune.exit(&k).unwrap();
    free_all(&k, held);
}

#[test]
fn nofs_too_small_to_fail_retries_without_the_oom_killer_until_a_free() {
    // The machine of the test above, where GFP_KERNEL fails: no task can
    // be killed. out_of_memory() kills nothing for an allocation without
    // __GFP_FS but reports progress, so GFP_NOFS keeps retrying (Linux's
    // "too small to fail") until another CPU frees memory.
    let s = machine(2, 64);
    let k = boot(&s, BootParams::default());
    let immune = s.register_task("init");
    s.on_cpu(0, || {
        immune.set_oom_score_adj(-1000);
        immune.alloc_pages(&k, GFP_KERNEL, 0).unwrap();
    });
    let mut held = Vec::new();
    s.on_cpu(1, || exhaust(&k, fill_gfp(), &mut held));
    let held = Mutex::new(held);
    let waits_before = k.vm_events().alloc_waits;
    // MAX_RECLAIM_RETRIES waits, then the OOM stage and its wait: twice.
    let past_oom_twice = waits_before + 2 * (u64::from(kmem::vmscan::MAX_RECLAIM_RETRIES) + 1);
    s.run_on_cpus(|cpu| {
        if cpu == 0 {
            let p = k.alloc_pages(GFP_NOFS, 0).unwrap();
            k.__free_pages(p, 0).unwrap();
        } else {
            wait_until(
                || k.vm_events().alloc_waits >= past_oom_twice,
                "GFP_NOFS gave up instead of retrying",
            );
            assert!(!s.reported("invoked oom-killer"));
            free_some(&k, &held);
        }
    });
    assert!(!s.reported("page allocation failure"));
    s.on_cpu(0, || {
        immune.exit(&k).unwrap();
        free_all(&k, held.into_inner().unwrap());
    });
}

#[test]
fn atomic_returns_promptly_while_kernel_blocks_until_another_cpu_frees() {
    let s = machine(2, 64);
    let k = boot(&s, BootParams::default());
    // Take everything, reserves included.
    let mut held = Vec::new();
    s.on_cpu(1, || exhaust(&k, __GFP_MEMALLOC, &mut held));
    let held = Mutex::new(held);
    let waits_before = k.vm_events().alloc_waits;
    s.run_on_cpus(|cpu| {
        if cpu == 0 {
            // Atomic: fails at once, never sleeps or reclaims.
            let stalls = k.vm_events().allocstall;
            assert!(k.alloc_pages(GFP_ATOMIC | __GFP_NOWARN, 0).is_err());
            assert_eq!(k.vm_events().allocstall, stalls);
            assert_eq!(k.vm_events().alloc_waits, waits_before);
            // GFP_KERNEL: sleeps until CPU 1 frees, then succeeds.
            let p = k.alloc_pages(GFP_KERNEL, 0).unwrap();
            assert!(k.vm_events().alloc_waits > waits_before);
            k.__free_pages(p, 0).unwrap();
        } else {
            wait_until(|| k.nr_alloc_waiters() > 0, "CPU 0 never waited");
            free_some(&k, &held);
        }
    });
    s.on_cpu(0, || free_all(&k, held.into_inner().unwrap()));
}

#[test]
fn nofail_never_fails_waits_for_frees_and_warns_above_order_1() {
    let s = machine(2, 64);
    let k = boot(&s, BootParams::default());
    s.on_cpu(0, || {
        let p = k.alloc_pages(GFP_KERNEL | __GFP_NOFAIL, 2).unwrap();
        assert!(s.reported("__GFP_NOFAIL allocation of order 2 > 1"));
        k.__free_pages(p, 2).unwrap();
    });
    let mut held = Vec::new();
    s.on_cpu(1, || exhaust(&k, __GFP_MEMALLOC, &mut held));
    let held = Mutex::new(held);
    s.run_on_cpus(|cpu| {
        if cpu == 0 {
            // No task to kill and nothing to reclaim: still no failure.
            let p = k.alloc_pages(GFP_KERNEL | __GFP_NOFAIL, 0).unwrap();
            k.__free_pages(p, 0).unwrap();
        } else {
            wait_until(|| k.nr_alloc_waiters() > 0, "CPU 0 never waited");
            // Let it go through reclaim, the retries and an OOM kill that
            // finds no victim before freeing.
            wait_until(
                || s.reported("Out of memory and no killable processes..."),
                "no OOM report",
            );
            free_some(&k, &held);
        }
    });
    s.on_cpu(0, || free_all(&k, held.into_inner().unwrap()));
}

#[test]
fn might_sleep_reports_blocking_allocations_from_atomic_context() {
    let s = machine(1, 64);
    let params = BootParams {
        debug_atomic_sleep: true,
        ..BootParams::default()
    };
    let k = boot(&s, params);
    let _cpu = s.bind(0);
    // An interrupt, a held spinlock, a CPU-local section.
    let line = line!() + 1;
    let p = s.irq(|| k.alloc_pages(GFP_KERNEL, 0)).unwrap();
    k.__free_pages(p, 0).unwrap();
    let site = format!(
        "BUG: sleeping function called from invalid context at kmem-sim/tests/reclaim.rs:{line}"
    );
    assert!(s.reported(&site), "{:?}", s.reports());
    assert!(s.reported("in_atomic(): 1, irqs_disabled(): 1"));
    s.clear_reports();
    let p = s.spin_locked(|| k.alloc_pages(GFP_KERNEL, 0)).unwrap();
    k.__free_pages(p, 0).unwrap();
    assert!(s.reported("BUG: sleeping function called from invalid context"));
    s.clear_reports();
    let o = {
        let _section = kmem::platform::LocalGuard::new(&s);
        k.kmalloc(64, GFP_KERNEL).unwrap()
    };
    // SAFETY: `o` is not used again.
    unsafe { k.kfree(o.as_ptr()) }.unwrap();
    assert!(s.reported("BUG: sleeping function called from invalid context"));
    // Atomic allocations are fine there.
    s.clear_reports();
    let p = s.irq(|| k.alloc_pages(GFP_ATOMIC, 0)).unwrap();
    k.__free_pages(p, 0).unwrap();
    assert!(!s.reported("BUG: sleeping function"));
}

#[test]
fn a_blocking_allocation_in_atomic_context_never_sleeps() {
    // Without the debug option, the check happens where kmem would sleep:
    // under pressure it reports and fails at once.
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let (pc, id) = page_cache_filling_memory(&k, false);
    let mut held = Vec::new();
    exhaust(&k, fill_gfp(), &mut held);
    let e0 = k.vm_events();
    let r = s.irq(|| k.alloc_pages(GFP_KERNEL | __GFP_NOWARN, 0));
    assert!(r.is_err());
    let e1 = k.vm_events();
    assert_eq!(e1.allocstall, e0.allocstall);
    assert_eq!(e1.alloc_waits, e0.alloc_waits);
    assert!(s.reported("BUG: sleeping function called from invalid context"));
    // Outside the interrupt the same call reclaims and succeeds.
    let p = k.alloc_pages(GFP_KERNEL, 0).unwrap();
    k.__free_pages(p, 0).unwrap();
    free_all(&k, held);
    pc.truncate(&k).unwrap();
    k.unregister_shrinker(id).unwrap();
}

#[test]
fn kswapd_wakes_below_low_and_reclaims_to_high() {
    let s = machine(2, 128);
    let k = boot(&s, BootParams::default());
    let pc = PageCache::new();
    let id = s.on_cpu(0, || {
        let id = pc.register(&k).unwrap();
        let _ = pc.add_pages(&k, usize::MAX, fill_gfp(), false);
        id
    });
    let cached = pc.nr_pages();
    let high = ZoneType::Normal as usize;
    assert!(!k.pgdat_balanced(0, 0, high));
    // Without __GFP_KSWAPD_RECLAIM nothing wakes kswapd.
    s.on_cpu(0, || {
        let r = k.alloc_pages(GFP_ATOMIC.without(__GFP_KSWAPD_RECLAIM) | __GFP_NOWARN, 0);
        if let Ok(p) = r {
            k.__free_pages(p, 0).unwrap();
        }
    });
    assert_eq!(k.vm_events().kswapd_wakeups, 0);
    assert!(!k.kswapd_pending(0));
    with_kswapd(&s, &k, || {
        // An allocation that fails the low watermark wakes it (an atomic
        // one, which then dips into the reserve instead of reclaiming).
        let p = s.on_cpu(0, || k.alloc_pages(GFP_ATOMIC, 0).unwrap());
        wait_until(
            || k.vm_events().pageoutrun > 0 && !k.kswapd_pending(0),
            "kswapd did not run",
        );
        assert!(k.vm_events().kswapd_wakeups >= 1);
        s.on_cpu(0, || k.__free_pages(p, 0).unwrap());
    });
    // It reclaimed the page cache until a zone was back above high, and
    // went back to sleep.
    assert!(k.pgdat_balanced(0, 0, high));
    assert!(pc.nr_pages() < cached);
    assert!(k.vm_events().pgsteal_kswapd > 0);
    assert_eq!(k.vm_events().allocstall, 0);
    assert!(!k.kswapd_running(0));
    s.on_cpu(0, || {
        pc.truncate(&k).unwrap();
        k.unregister_shrinker(id).unwrap();
    });
}

/// The page cache is an LRU of pages (SHRINKER_LRU): what direct reclaim
/// and kswapd scan of it are `pgscan_direct` and `pgscan_kswapd`, as in
/// Linux, and the dentry cache's objects stay `slabs_scanned`.
#[test]
fn page_cache_scanning_counts_as_pgscan_and_slab_objects_as_slabs_scanned() {
    let s = machine(1, 64);
    let k = boot(&s, BootParams::default());
    let _cpu = s.bind(0);
    let (pc, id) = page_cache_filling_memory(&k, false);
    let e0 = k.vm_events();
    assert!(
        k.try_to_free_pages(GFP_KERNEL, 0, 0) > 0,
        "the page cache gave pages back"
    );
    let e1 = k.vm_events();
    assert!(e1.pgscan_direct > e0.pgscan_direct, "{e1:?}");
    assert_eq!(e1.pgscan_kswapd, e0.pgscan_kswapd);
    let _ = pc.add_pages(&k, usize::MAX, fill_gfp(), false);
    k.balance_pgdat(0, ZoneType::Normal as usize);
    let e2 = k.vm_events();
    assert!(e2.pgscan_kswapd > e1.pgscan_kswapd, "{e2:?}");
    assert_eq!(e2.pgscan_direct, e1.pgscan_direct);
    let mut vm = String::new();
    kmem::proc::vmstat(&k, &mut vm).unwrap();
    assert!(
        vm.contains(&format!("\npgscan_kswapd {}\n", e2.pgscan_kswapd)),
        "{vm}"
    );
    assert!(
        vm.contains(&format!("\npgscan_direct {}\n", e2.pgscan_direct)),
        "{vm}"
    );
    pc.truncate(&k).unwrap();
    k.unregister_shrinker(id).unwrap();
}
