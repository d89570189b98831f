//! The in-kernel suite, in KUnit's KTAP output
//! (`Documentation/dev-tools/ktap.rst`): one `kmem` suite whose cases
//! exercise kmem on real CPUs, page tables and interrupts. A case returns
//! `Err(reason)` to fail, or `Ok(Some(reason))` to be skipped.

use crate::{kmem, pr_info, println, serial, smp};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use kmem::gfp::{__GFP_ZERO, GFP_ATOMIC, GFP_DMA, GFP_DMA32, GFP_KERNEL};
use kmem::mmzone::ZoneType;
use kmem::platform::Platform;
use kmem::slab::{
    SLAB_CONSISTENCY_CHECKS, SLAB_HWCACHE_ALIGN, SLAB_POISON, SLAB_RED_ZONE, SLAB_STORE_USER,
};

type Outcome = Result<Option<String>, String>;

/// A case: its name and its function.
type Case = (&'static str, fn() -> Outcome);

/// The cases, in order.
const CASES: &[Case] = &[
    ("kmalloc_storm", kmalloc_storm),
    (
        "atomic_allocations_in_interrupts",
        atomic_allocations_in_interrupts,
    ),
    ("page_orders_and_zones", page_orders_and_zones),
    (
        "slab_cache_ctor_shrink_destroy",
        slab_cache_ctor_shrink_destroy,
    ),
    ("mempool_irq_completion", mempool_irq_completion),
    ("vmalloc_guard_page", vmalloc_guard_page),
    ("vfree_purge_tlb_shootdown", vfree_purge_tlb_shootdown),
    ("ioremap_device", ioremap_device),
    ("percpu_gs", percpu_gs),
    ("slab_debug_reports", slab_debug_reports),
    ("global_allocator", global_allocator),
];

/// Run the suite; returns the number of failed cases.
pub fn run() -> usize {
    println!("KTAP version 1");
    println!("1..1");
    println!("    KTAP version 1");
    println!("    # Subtest: kmem");
    println!("    # module: kmem_kernel");
    println!("    1..{}", CASES.len());
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for (i, (name, f)) in CASES.iter().enumerate() {
        match f() {
            Ok(None) => {
                pass += 1;
                println!("    ok {} {name}", i + 1);
            }
            Ok(Some(why)) => {
                skip += 1;
                println!("    ok {} {name} # SKIP {why}", i + 1);
            }
            Err(why) => {
                fail += 1;
                for line in why.lines() {
                    println!("    # {name}: {line}");
                }
                println!("    not ok {} {name}", i + 1);
            }
        }
    }
    let total = CASES.len();
    println!("# kmem: pass:{pass} fail:{fail} skip:{skip} total:{total}");
    println!("# Totals: pass:{pass} fail:{fail} skip:{skip} total:{total}");
    println!("{} 1 kmem", if fail == 0 { "ok" } else { "not ok" });
    fail
}

/// `/proc/buddyinfo`, `/proc/slabinfo`, `/proc/zoneinfo`,
/// `/proc/vmallocinfo`, each under a `# cat` line.
pub fn print_proc() {
    let k = kmem();
    type Show = fn(&kmem::Kmem<crate::platform::BarePlatform>, &mut String) -> core::fmt::Result;
    let files: [(&str, Show); 4] = [
        ("/proc/buddyinfo", |k, w| kmem::proc::buddyinfo(k, w)),
        ("/proc/slabinfo", |k, w| kmem::proc::slabinfo(k, w)),
        ("/proc/zoneinfo", |k, w| kmem::proc::zoneinfo(k, w)),
        ("/proc/vmallocinfo", |k, w| kmem::proc::vmallocinfo(k, w)),
    ];
    for (name, show) in files {
        let mut s = String::new();
        let _ = show(k, &mut s);
        println!("# cat {name}");
        for line in s.lines() {
            println!("{line}");
        }
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// A small xorshift generator, seeded per CPU.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A kmalloc'd object handed between CPUs: its address and size.
#[derive(Clone, Copy)]
struct Obj(usize, usize);

fn fill(o: Obj) {
    // SAFETY: a live kmalloc object of `o.1` bytes, owned by the caller.
    unsafe { core::ptr::write_bytes(o.0 as *mut u8, o.1 as u8 ^ 0x5a, o.1) };
}

fn intact(o: Obj) -> bool {
    // SAFETY: as in `fill`.
    let b = unsafe { core::slice::from_raw_parts(o.0 as *const u8, o.1) };
    b.iter().all(|&x| x == o.1 as u8 ^ 0x5a)
}

/// kmalloc/kfree storms on every CPU at once: each CPU allocates batches
/// of random sizes (8 B to 8 KiB), fills them, and hands them to the next
/// CPU, which checks and frees them (remote frees), while freeing half of
/// its own at once (local frees).
fn kmalloc_storm() -> Outcome {
    let k = kmem();
    let n = smp::num_online();
    let boxes: Vec<spin::Mutex<Vec<Obj>>> = (0..n).map(|_| spin::Mutex::new(Vec::new())).collect();
    let bad = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let remote = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|cpu| {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((cpu as u64 + 1) * 0x1234_5678_9abc));
        for _ in 0..100 {
            let mut out = Vec::with_capacity(32);
            for i in 0..64 {
                let size = 8 + (rng.next() % 8185) as usize;
                let Ok(p) = k.kmalloc(size, GFP_KERNEL) else {
                    failed.fetch_add(1, Relaxed);
                    continue;
                };
                let o = Obj(p.as_ptr() as usize, size);
                fill(o);
                if i % 2 == 0 {
                    out.push(o);
                } else {
                    if !intact(o) {
                        bad.fetch_add(1, Relaxed);
                    }
                    // SAFETY: our own live object.
                    let _ = unsafe { k.kfree(o.0 as *mut u8) };
                }
            }
            boxes[(cpu + 1) % n].lock().extend(out);
            let mine = core::mem::take(&mut *boxes[cpu].lock());
            for o in mine {
                if !intact(o) {
                    bad.fetch_add(1, Relaxed);
                }
                // SAFETY: an object another CPU allocated and gave us.
                let _ = unsafe { k.kfree(o.0 as *mut u8) };
                remote.fetch_add(1, Relaxed);
            }
        }
    });
    for b in &boxes {
        for o in core::mem::take(&mut *b.lock()) {
            // SAFETY: left over, ours now.
            let _ = unsafe { k.kfree(o.0 as *mut u8) };
        }
    }
    check(failed.load(Relaxed) == 0, || {
        format!("{} kmallocs failed", failed.load(Relaxed))
    })?;
    check(bad.load(Relaxed) == 0, || {
        format!("{} objects corrupted", bad.load(Relaxed))
    })?;
    check(n == 1 || remote.load(Relaxed) > 0, || {
        "no object was freed on another CPU".into()
    })?;
    pr_info!(
        "kmalloc_storm: {n} CPUs, {} objects freed by another CPU",
        remote.load(Relaxed)
    );
    Ok(None)
}

/// What the timer interrupt allocates while the storm below runs.
static IRQ_STORM: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// GFP_ATOMIC allocations made in interrupt context, per CPU.
static IRQ_ALLOCS: [AtomicUsize; crate::acpi::NR_CPUS] =
    [const { AtomicUsize::new(0) }; crate::acpi::NR_CPUS];

/// The storm's interrupt handler: kmalloc, a slab cache object's worth of
/// kmalloc sizes, and a page, all `GFP_ATOMIC`, written and freed, on
/// whatever CPU it interrupts, in whatever the CPU was doing.
fn irq_allocator(cpu: usize) {
    if !IRQ_STORM.load(Acquire) {
        return;
    }
    let k = kmem();
    let t = smp::this_cpu().ticks.load(Relaxed) as usize;
    for size in [16 + t % 200, 512 + t % 3000, 8192] {
        if let Ok(p) = k.kmalloc(size, GFP_ATOMIC) {
            // SAFETY: a fresh object of `size` bytes.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0x77, size) };
            // SAFETY: ours, not used again.
            let _ = unsafe { k.kfree(p.as_ptr()) };
            IRQ_ALLOCS[cpu].fetch_add(1, Relaxed);
        }
    }
    if let Ok(page) = k.alloc_pages(GFP_ATOMIC, (t % 3) as u32) {
        let _ = k.__free_pages(page, (t % 3) as u32);
        IRQ_ALLOCS[cpu].fetch_add(1, Relaxed);
    }
}

/// `GFP_ATOMIC` allocations from the timer interrupt (at 2000 Hz) on every
/// CPU while each CPU runs a kmalloc/kfree and slab cache storm: the
/// interrupts land inside the allocator's slow paths, holding or wanting
/// the locks the interrupted code takes, which kmem takes with interrupts
/// off (`spin_lock_irqsave`). A lock taken without would deadlock here.
fn atomic_allocations_in_interrupts() -> Outcome {
    let k = kmem();
    let n = smp::num_online();
    let c = k
        .kmem_cache_create("ktest_irq", 1000, 0, kmem::slab::SlabFlags::NONE, None)
        .map_err(|e| format!("kmem_cache_create: {e:?}"))?;
    for a in &IRQ_ALLOCS {
        a.store(0, Relaxed);
    }
    let failed = AtomicUsize::new(0);
    smp::set_timer_hook(Some(irq_allocator));
    IRQ_STORM.store(true, Release);
    smp::run_on_all_cpus(&|_| smp::set_timer_hz(2000));
    smp::run_on_all_cpus(&|cpu| {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((cpu as u64 + 7) << 32));
        let end = crate::time::now_ns() + 300_000_000;
        let mut held: Vec<(usize, bool)> = Vec::with_capacity(256);
        while crate::time::now_ns() < end {
            for _ in 0..64 {
                let r = rng.next();
                let got = if r.is_multiple_of(3) {
                    k.kmem_cache_alloc(c, GFP_KERNEL)
                        .map(|p| (p.as_ptr() as usize, true))
                } else {
                    k.kmalloc(8 + (r >> 8) as usize % 4096, GFP_KERNEL)
                        .map(|p| (p.as_ptr() as usize, false))
                };
                match got {
                    Ok(o) => held.push(o),
                    Err(_) => {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            }
            // Free most, in an order that spreads over slabs.
            while held.len() > 32 {
                let i = rng.next() as usize % held.len();
                let (p, cached) = held.swap_remove(i);
                // SAFETY: our live objects, each freed once.
                let _ = unsafe {
                    if cached {
                        k.kmem_cache_free(c, p as *mut u8)
                    } else {
                        k.kfree(p as *mut u8)
                    }
                };
            }
            // Now and then hand the sheaves back, taking the node locks.
            if rng.next().is_multiple_of(16) {
                k.kmem_cache_shrink(c);
            }
        }
        for (p, cached) in held {
            // SAFETY: as above.
            let _ = unsafe {
                if cached {
                    k.kmem_cache_free(c, p as *mut u8)
                } else {
                    k.kfree(p as *mut u8)
                }
            };
        }
    });
    IRQ_STORM.store(false, Release);
    smp::run_on_all_cpus(&|_| smp::set_timer_hz(smp::HZ));
    smp::set_timer_hook(None);
    smp::sync_interrupts();
    // SAFETY: every object was freed.
    let destroyed = unsafe { k.kmem_cache_destroy(c) };
    let per_cpu: Vec<usize> = (0..n).map(|c| IRQ_ALLOCS[c].load(Relaxed)).collect();
    check(failed.load(Relaxed) == 0, || {
        format!("{} allocations failed", failed.load(Relaxed))
    })?;
    check(per_cpu.iter().all(|&a| a > 0), || {
        format!("interrupt allocations per CPU: {per_cpu:?}")
    })?;
    check(destroyed.is_ok(), || {
        format!("kmem_cache_destroy: {destroyed:?}")
    })?;
    pr_info!("atomic_allocations_in_interrupts: GFP_ATOMIC allocations in interrupts per CPU {per_cpu:?}");
    Ok(None)
}

/// Pages of every order, aligned and writable; `__GFP_ZERO` gives zeroes
/// even after the block was dirtied; `GFP_DMA` lands in ZONE_DMA and
/// `GFP_DMA32` below 4 GiB.
fn page_orders_and_zones() -> Outcome {
    let k = kmem();
    for order in 0..=kmem::MAX_PAGE_ORDER {
        let page = k
            .alloc_pages(GFP_KERNEL, order)
            .map_err(|e| format!("order {order}: {e:?}"))?;
        let pfn = k.page_to_pfn(page);
        let addr = k.page_address(page).ok_or("no direct-map address")?;
        // SAFETY: a fresh block of 2^order pages, mapped in the direct map.
        unsafe { core::ptr::write_bytes(addr.as_ptr(), 0xa5, 4096 << order) };
        k.__free_pages(page, order)
            .map_err(|e| format!("free order {order}: {e:?}"))?;
        check(pfn.is_multiple_of(1 << order), || {
            format!("order {order} block at pfn {pfn:#x} is not aligned")
        })?;
    }
    for _ in 0..8 {
        let page = k
            .alloc_pages(GFP_KERNEL | __GFP_ZERO, 2)
            .map_err(|e| format!("{e:?}"))?;
        let addr = k.page_address(page).ok_or("no address")?;
        // SAFETY: a fresh 4-page block.
        let b = unsafe { core::slice::from_raw_parts_mut(addr.as_ptr(), 4 << 12) };
        let zero = b.iter().all(|&x| x == 0);
        b.fill(0xff);
        k.__free_pages(page, 2).map_err(|e| format!("{e:?}"))?;
        check(zero, || "__GFP_ZERO gave a block that is not zeroed".into())?;
    }
    let mut seen = String::new();
    for (gfp, name, limit, zones) in [
        (GFP_DMA, "GFP_DMA", 16u64 << 20, &[ZoneType::Dma][..]),
        (
            GFP_DMA32,
            "GFP_DMA32",
            4 << 30,
            &[ZoneType::Dma32, ZoneType::Dma][..],
        ),
    ] {
        let page = k
            .alloc_pages(gfp, 0)
            .map_err(|e| format!("{name}: {e:?}"))?;
        let pa = k.page_to_pfn(page) << 12;
        let zt = k.page_zone(page).zone_type();
        k.__free_pages(page, 0).map_err(|e| format!("{e:?}"))?;
        check(pa < limit && zones.contains(&zt), || {
            format!("{name} gave {pa:#x} in zone {zt:?}")
        })?;
        seen += &format!(" {name}:{zt:?}@{pa:#x}");
    }
    pr_info!(
        "page_orders_and_zones: orders 0..={}, zones{seen}",
        kmem::MAX_PAGE_ORDER
    );
    Ok(None)
}

static CTOR_RUNS: AtomicUsize = AtomicUsize::new(0);

fn ktest_ctor(p: *mut u8) {
    CTOR_RUNS.fetch_add(1, Relaxed);
    // SAFETY: the cache's constructor gets a whole object (200 bytes).
    unsafe { core::ptr::write_bytes(p, 0xc7, 200) };
}

/// Calls run by IPI on each CPU so far (counted in the handler).
fn ipi_calls() -> u64 {
    (0..smp::nr_possible())
        .map(|c| smp::cpu_local(c).calls.load(Relaxed))
        .sum()
}

/// A cache with a constructor used on every CPU, objects freed on other
/// CPUs and left in their per-CPU sheaves, then `kmem_cache_shrink()` and
/// `kmem_cache_destroy()`, which reach those CPUs by real IPIs.
fn slab_cache_ctor_shrink_destroy() -> Outcome {
    let k = kmem();
    let n = smp::num_online();
    let c = k
        .kmem_cache_create("ktest_ctor", 200, 0, SLAB_HWCACHE_ALIGN, Some(ktest_ctor))
        .map_err(|e| format!("kmem_cache_create: {e:?}"))?;
    let boxes: Vec<spin::Mutex<Vec<usize>>> =
        (0..n).map(|_| spin::Mutex::new(Vec::new())).collect();
    let bad = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|cpu| {
        let mut mine = Vec::new();
        for _ in 0..200 {
            let Ok(p) = k.kmem_cache_alloc(c, GFP_KERNEL) else {
                bad.fetch_add(1, Relaxed);
                continue;
            };
            // SAFETY: a live object of 200 bytes; the constructor filled
            // it and users give objects back constructed.
            let b = unsafe { core::slice::from_raw_parts(p.as_ptr(), 200) };
            if !b.iter().all(|&x| x == 0xc7) {
                bad.fetch_add(1, Relaxed);
            }
            mine.push(p.as_ptr() as usize);
        }
        // Half freed here (they stay in this CPU's sheaf), half by the next CPU.
        for p in mine.drain(100..) {
            // SAFETY: our live object, in its constructed state.
            let _ = unsafe { k.kmem_cache_free(c, p as *mut u8) };
        }
        boxes[(cpu + 1) % n].lock().extend(mine);
    });
    smp::run_on_all_cpus(&|cpu| {
        for p in core::mem::take(&mut *boxes[cpu].lock()) {
            // SAFETY: an object another CPU handed over.
            let _ = unsafe { k.kmem_cache_free(c, p as *mut u8) };
        }
    });
    let ctors = CTOR_RUNS.load(Relaxed);
    let before = ipi_calls();
    let freed = k.kmem_cache_shrink(c);
    let ipis = ipi_calls() - before;
    // Objects cached on every CPU again, then straight to destroy, which
    // must fetch them from the other CPUs' sheaves itself.
    smp::run_on_all_cpus(&|_| {
        let mut v = Vec::new();
        for _ in 0..50 {
            if let Ok(p) = k.kmem_cache_alloc(c, GFP_KERNEL) {
                v.push(p.as_ptr() as usize);
            }
        }
        for p in v {
            // SAFETY: our live object.
            let _ = unsafe { k.kmem_cache_free(c, p as *mut u8) };
        }
    });
    let before = ipi_calls();
    serial::capture_start();
    // SAFETY: every object was freed; the cache is not used again.
    let destroyed = unsafe { k.kmem_cache_destroy(c) };
    let remaining = serial::capture_end(|t| t.contains("remaining") || t.contains("BUG"));
    let destroy_ipis = ipi_calls() - before;
    check(bad.load(Relaxed) == 0, || {
        format!(
            "{} objects failed or were not constructed",
            bad.load(Relaxed)
        )
    })?;
    check(ctors >= 200 * n, || {
        format!("the constructor ran {ctors} times for {} objects", 200 * n)
    })?;
    check(n == 1 || ipis >= (n - 1) as u64, || {
        format!("shrink reached the other CPUs by {ipis} IPIs")
    })?;
    check(destroyed.is_ok() && !remaining, || {
        format!("kmem_cache_destroy: {destroyed:?}")
    })?;
    check(n == 1 || destroy_ipis >= (n - 1) as u64, || {
        format!("destroy reached the other CPUs by {destroy_ipis} IPIs")
    })?;
    pr_info!(
        "slab_cache_ctor_shrink_destroy: {ctors} constructor runs, shrink freed {freed} slabs by {ipis} IPIs, destroy {destroy_ipis} IPIs"
    );
    Ok(None)
}

/// The pool the "device" completes requests into, from its interrupt.
static POOL: AtomicPtr<kmem::mempool::MempoolT<'static, crate::platform::BarePlatform>> =
    AtomicPtr::new(core::ptr::null_mut());
/// Requests in flight: elements the device holds (0: empty slot).
static INFLIGHT: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
/// The CPU whose timer interrupt plays the device.
static DEVICE_CPU: AtomicUsize = AtomicUsize::new(0);
/// Requests completed in interrupt context, and GFP_ATOMIC allocations made there.
static IRQ_COMPLETIONS: AtomicUsize = AtomicUsize::new(0);
static IRQ_ATOMIC_ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// The allocator behind the pool is "exhausted": only the reserve serves.
static EXHAUSTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn pool_alloc(
    k: &kmem::Kmem<crate::platform::BarePlatform>,
    gfp: kmem::Gfp,
    _d: &kmem::mempool::PoolData<'_>,
) -> Option<NonNull<u8>> {
    if EXHAUSTED.load(Acquire) {
        None
    } else {
        k.kmalloc(256, gfp).ok()
    }
}

/// The device's interrupt: completes one request a tick, giving its
/// element back to the pool, and allocates a status block with
/// `GFP_ATOMIC`, as a driver's completion handler does.
fn device_irq(cpu: usize) {
    if cpu != DEVICE_CPU.load(Relaxed) {
        return;
    }
    let k = kmem();
    if !k.platform().in_interrupt() {
        return;
    }
    if let Ok(p) = k.kmalloc(64, GFP_ATOMIC) {
        IRQ_ATOMIC_ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: just allocated, not used again.
        let _ = unsafe { k.kfree(p.as_ptr()) };
    }
    let pool = POOL.load(Acquire);
    if pool.is_null() {
        return;
    }
    for slot in &INFLIGHT {
        let e = slot.swap(0, AcqRel);
        if e != 0 {
            // SAFETY: the pool lives while POOL is set; `e` is an element
            // of it that the test handed to the device.
            let _ = unsafe { k.mempool_free(e as *mut u8, &*pool) };
            IRQ_COMPLETIONS.fetch_add(1, Relaxed);
            return;
        }
    }
}

/// A mempool under exhaustion: the allocator behind it fails, the reserve
/// is handed out to the "device", and further `mempool_alloc(GFP_KERNEL)`
/// calls sleep (`hlt`) until the device's interrupt handler, on the last
/// CPU (the waiting one itself when there is one), completes a request
/// and `mempool_free()`s its element.
fn mempool_irq_completion() -> Outcome {
    let k = kmem();
    let n = smp::num_online();
    let mut pool = k
        .mempool_create(
            4,
            Some(pool_alloc),
            kmem::Kmem::mempool_kfree,
            kmem::mempool::PoolData::Kmalloc(256),
        )
        .map_err(|e| format!("mempool_create: {e:?}"))?;
    let pool_ptr: *mut kmem::mempool::MempoolT<'static, _> = &mut pool;
    EXHAUSTED.store(true, Release);
    DEVICE_CPU.store(n - 1, Relaxed);
    IRQ_COMPLETIONS.store(0, Relaxed);
    POOL.store(pool_ptr, Release);
    smp::set_timer_hook(Some(device_irq));
    let mut got = Vec::new();
    let mut err = None;
    // 4 from the reserve, then 8 that each wait for a completion.
    for i in 0..12 {
        match k.mempool_alloc(&pool, GFP_KERNEL) {
            Ok(e) => {
                got.push(e);
                // Hand it to the device.
                let slot = i % INFLIGHT.len();
                while INFLIGHT[slot].load(Acquire) != 0 {
                    core::hint::spin_loop();
                }
                INFLIGHT[slot].store(e.as_ptr() as usize, Release);
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    // Let the device finish, then stop it.
    let t0 = crate::time::now_ns();
    while INFLIGHT.iter().any(|s| s.load(Acquire) != 0)
        && crate::time::now_ns() - t0 < 2_000_000_000
    {
        core::hint::spin_loop();
    }
    smp::set_timer_hook(None);
    POOL.store(core::ptr::null_mut(), Release);
    // A handler already running on the device CPU may still hold the
    // pool: wait it out before the pool goes.
    smp::sync_interrupts();
    EXHAUSTED.store(false, Release);
    let done = IRQ_COMPLETIONS.load(Relaxed);
    let curr = pool.curr_nr();
    k.mempool_destroy(&mut pool)
        .map_err(|e| format!("mempool_destroy: {e:?}"))?;
    check(err.is_none(), || {
        format!("mempool_alloc(GFP_KERNEL) failed: {err:?}")
    })?;
    check(done >= 12, || {
        format!("{done} of 12 requests completed in interrupt context")
    })?;
    check(curr == 4, || {
        format!("the reserve holds {curr} elements after the completions, not 4")
    })?;
    check(IRQ_ATOMIC_ALLOCS.load(Relaxed) > 0, || {
        "no GFP_ATOMIC allocation in interrupt context".into()
    })?;
    pr_info!(
        "mempool_irq_completion: 12 allocations, 8 waited; {done} completions and {} GFP_ATOMIC allocations on CPU {}'s timer interrupt",
        IRQ_ATOMIC_ALLOCS.load(Relaxed),
        n - 1
    );
    Ok(None)
}

/// vmalloc over real page tables: written through the vmalloc mapping,
/// read back through the direct map page by page; a write to the guard
/// page after it faults, and the fault is caught and reported with the
/// area it belongs to.
fn vmalloc_guard_page() -> Outcome {
    let k = kmem();
    let size = 5 * 4096 + 100;
    let p = k.vmalloc(size).map_err(|e| format!("vmalloc: {e:?}"))?;
    let base = p.as_ptr() as usize;
    for i in 0..size {
        // SAFETY: inside the fresh area.
        unsafe { *p.as_ptr().add(i) = (i % 251) as u8 };
    }
    let mut mismatch = None;
    for pg in 0..size.div_ceil(4096) {
        let page = k
            .vmalloc_to_page((base + pg * 4096) as *const u8)
            .ok_or("vmalloc_to_page failed")?;
        let dm = k.page_address(page).ok_or("no direct-map address")?;
        for j in 0..4096.min(size - pg * 4096) {
            // SAFETY: the page backing this part of the area, in the direct map.
            let b = unsafe { *dm.as_ptr().add(j) };
            if b != ((pg * 4096 + j) % 251) as u8 {
                mismatch = Some(pg * 4096 + j);
            }
        }
    }
    let guard = base + size.next_multiple_of(4096);
    serial::capture_start();
    // SAFETY: `guard` is the unmapped guard page: the write faults and is
    // fixed up; it cannot land in memory.
    let faulted = unsafe { crate::idt::probe_write(guard, 0x42) };
    let (oops, named) = serial::capture_end(|t| {
        (
            t.contains(&format!(
                "BUG: unable to handle page fault for address: {guard:016x}"
            )),
            t.contains("the guard page of the vmalloc area"),
        )
    });
    // SAFETY: our area, not used again.
    let freed = unsafe { k.vfree(p.as_ptr()) };
    check(mismatch.is_none(), || {
        format!("byte {mismatch:?} differs through the direct map")
    })?;
    check(faulted, || {
        format!("the write to the guard page {guard:#x} did not fault")
    })?;
    check(oops && named, || {
        "the oops did not name the address and its vmalloc area".into()
    })?;
    check(freed.is_ok(), || format!("vfree: {freed:?}"))?;
    Ok(None)
}

/// vmalloc areas used on every CPU (so each CPU's TLB holds their
/// translations), freed, then purged: the purge's
/// `flush_tlb_kernel_range()` reaches every other CPU by IPI, and each
/// flushes before the addresses can be reused.
fn vfree_purge_tlb_shootdown() -> Outcome {
    let k = kmem();
    let n = smp::num_online();
    let areas: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    let failed = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|cpu| match k.vmalloc(8 * 4096) {
        Ok(p) => {
            // SAFETY: a fresh area of 8 pages.
            unsafe { core::ptr::write_bytes(p.as_ptr(), cpu as u8, 8 * 4096) };
            areas[cpu].store(p.as_ptr() as usize, Relaxed);
        }
        Err(_) => {
            failed.fetch_add(1, Relaxed);
        }
    });
    // Every CPU reads every area: each TLB holds them all.
    let bad = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|_| {
        for (c, a) in areas.iter().enumerate() {
            let p = a.load(Relaxed) as *const u8;
            // SAFETY: live areas, written above, only read now.
            if !p.is_null() && unsafe { p.add(5 * 4096).read_volatile() } != c as u8 {
                bad.fetch_add(1, Relaxed);
            }
        }
    });
    for a in &areas {
        // SAFETY: our areas, not used again.
        let _ = unsafe { k.vfree(a.load(Relaxed) as *mut u8) };
    }
    let before: Vec<u64> = (0..n)
        .map(|c| smp::cpu_local(c).tlb_flushes.load(Relaxed))
        .collect();
    let ev = k.purge_vmap_area_lazy();
    let me = smp::smp_processor_id();
    let flushed: Vec<u64> = (0..n)
        .map(|c| smp::cpu_local(c).tlb_flushes.load(Relaxed) - before[c])
        .collect();
    check(failed.load(Relaxed) == 0 && bad.load(Relaxed) == 0, || {
        format!(
            "{} vmallocs failed, {} reads wrong",
            failed.load(Relaxed),
            bad.load(Relaxed)
        )
    })?;
    check(ev.num_purged >= n, || {
        format!("the purge returned {} areas of {n}", ev.num_purged)
    })?;
    check((0..n).all(|c| c == me || flushed[c] > 0), || {
        format!("TLB shootdowns served per CPU: {flushed:?}")
    })?;
    pr_info!(
        "vfree_purge_tlb_shootdown: purged {} areas {:#x}-{:#x}; shootdowns served per CPU {flushed:?}",
        ev.num_purged,
        ev.start,
        ev.end
    );
    Ok(None)
}

/// ioremap of a QEMU device's memory: the ivshmem device's shared-memory
/// BAR, claimed with `request_mem_region()`, written through the mapping
/// and read back.
fn ioremap_device() -> Outcome {
    let k = kmem();
    let Some(bar) = crate::pci::find_bar(0x1af4, 0x1110, 2) else {
        return Ok(Some(
            "no ivshmem device (QEMU -device ivshmem-plain)".into(),
        ));
    };
    let len = bar.len.min(1 << 20) as usize;
    let res = k
        .request_mem_region(bar.start, len as u64, "ivshmem")
        .map_err(|e| format!("request_mem_region: {e:?}"))?;
    let va = k
        .ioremap_wc(bar.start, len)
        .map_err(|e| format!("ioremap_wc({:#x}): {e:?}", bar.start))?;
    // SAFETY: a live ioremap mapping of `len` bytes, until iounmap below.
    let io = unsafe { kmem::ioremap::IoMem::new(va, len) };
    let mut bad = 0;
    for off in (0..len).step_by(4096) {
        io.writel(0xdead_0000 | (off >> 12) as u32, off)
            .map_err(|e| format!("{e:?}"))?;
    }
    for off in (0..len).step_by(4096) {
        if io.readl(off).map_err(|e| format!("{e:?}"))? != 0xdead_0000 | (off >> 12) as u32 {
            bad += 1;
        }
    }
    let msg = b"kmem was here";
    io.memcpy_toio(len - 64, msg)
        .map_err(|e| format!("{e:?}"))?;
    let mut back = [0u8; 13];
    io.memcpy_fromio(&mut back, len - 64)
        .map_err(|e| format!("{e:?}"))?;
    let outside = io.readl(len).is_err();
    // SAFETY: our mapping, not used again.
    let unmapped = unsafe { k.iounmap(va.as_ptr()) };
    let _ = res;
    let released = k.release_mem_region(bar.start, len as u64);
    check(bad == 0 && &back == msg, || {
        format!("{bad} words and {back:?} read back wrong")
    })?;
    check(outside, || "a read past the mapping was not refused".into())?;
    check(unmapped.is_ok() && released.is_ok(), || {
        format!("iounmap {unmapped:?}, release {released:?}")
    })?;
    pr_info!(
        "ioremap_device: ivshmem BAR2 {:#x} ({} KiB) mapped at {:#x}",
        bar.start,
        len >> 10,
        va.as_ptr() as usize
    );
    Ok(None)
}

kmem::define_per_cpu! {
    /// Events counted by `this_cpu_inc` on each CPU.
    static KTEST_EVENTS: AtomicU64;
}

/// Per-CPU variables through the GS base: `this_cpu_inc` on every CPU at
/// once, each copy counting its own CPU's, the sum all of them; and a
/// dynamic `PerCpu<T>` from the per-CPU allocator.
fn percpu_gs() -> Outcome {
    let k = kmem();
    let n = smp::num_online();
    const N: u64 = 100_000;
    let before: Vec<u64> = k
        .for_each_possible_cpu()
        .map(|c| {
            k.per_cpu(&KTEST_EVENTS, c)
                .map(|v| v.load(Relaxed))
                .unwrap_or(0)
        })
        .collect();
    let dynamic =
        kmem::percpu::PerCpu::<AtomicU64, _>::new(k).map_err(|e| format!("alloc_percpu: {e:?}"))?;
    let wrong_id = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|cpu| {
        // The CPU number itself comes through GS (`cpu_number`).
        if smp::smp_processor_id() != cpu || smp::this_cpu().cpu.load(Relaxed) != cpu {
            wrong_id.fetch_add(1, Relaxed);
        }
        for _ in 0..N {
            k.this_cpu_inc(&KTEST_EVENTS);
        }
        k.this_cpu_add(&dynamic, cpu as u64 + 1);
    });
    check(smp::cpu_number_via_gs(), || {
        "smp_processor_id does not read cpu_number through GS".into()
    })?;
    check(wrong_id.load(Relaxed) == 0, || {
        "smp_processor_id disagrees with the CPU's own record".into()
    })?;
    let mut sum = 0;
    for (c, before) in before.iter().enumerate().take(n) {
        check(smp::cpu_local(c).gs_ready.load(Relaxed), || {
            format!("CPU {c} has no GS base")
        })?;
        let v = k
            .per_cpu(&KTEST_EVENTS, c)
            .map_err(|e| format!("{e:?}"))?
            .load(Relaxed)
            - before;
        check(v == N, || format!("CPU {c}'s copy counted {v}, not {N}"))?;
        sum += v;
        let d = dynamic
            .per_cpu(c)
            .map_err(|e| format!("{e:?}"))?
            .load(Relaxed);
        check(d == c as u64 + 1, || {
            format!("CPU {c}'s dynamic copy is {d}")
        })?;
    }
    check(sum == N * n as u64, || format!("sum {sum}"))?;
    pr_info!("percpu_gs: {n} CPUs x {N} this_cpu_inc = {sum}");
    Ok(None)
}

/// slab_debug on one cache: a double free and a red zone overwrite are
/// reported in SLUB's words and refused.
fn slab_debug_reports() -> Outcome {
    let k = kmem();
    let flags = SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER | SLAB_CONSISTENCY_CHECKS;
    let c = k
        .kmem_cache_create("ktest_debug", 64, 0, flags, None)
        .map_err(|e| format!("{e:?}"))?;
    let o = k
        .kmem_cache_alloc(c, GFP_KERNEL)
        .map_err(|e| format!("{e:?}"))?;
    serial::capture_start();
    // SAFETY: our object; the second free is the double free under test,
    // which slab_debug checks before touching anything.
    let (first, second) = unsafe {
        (
            k.kmem_cache_free(c, o.as_ptr()),
            k.kmem_cache_free(c, o.as_ptr()),
        )
    };
    let double =
        serial::capture_end(|t| t.contains("BUG ktest_debug") && t.contains("Object already free"));
    let o = k
        .kmem_cache_alloc(c, GFP_KERNEL)
        .map_err(|e| format!("{e:?}"))?;
    serial::capture_start();
    // SAFETY: one byte past the 64-byte object: its right red zone, which
    // slab_debug reserved and checks.
    unsafe { *o.as_ptr().add(64) = 0x42 };
    // SAFETY: our object.
    let third = unsafe { k.kmem_cache_free(c, o.as_ptr()) };
    let redzone = serial::capture_end(|t| t.contains("Redzone overwritten"));
    // SLUB leaves an object with a damaged red zone allocated ("FIX
    // ktest_debug: Object at ... not freed"); mend it and free it.
    // SAFETY: as above, the red zone byte of our still-allocated object.
    unsafe { *o.as_ptr().add(64) = 0xcc };
    // SAFETY: our object, now intact.
    let mended = unsafe { k.kmem_cache_free(c, o.as_ptr()) };
    check(first.is_ok() && second.is_err(), || {
        format!("frees: {first:?}, then {second:?}")
    })?;
    check(double, || "no 'Object already free' report".into())?;
    check(redzone && third.is_err(), || {
        format!("no red zone report (free: {third:?})")
    })?;
    check(mended.is_ok(), || {
        format!("freeing the mended object: {mended:?}")
    })?;
    // SAFETY: every object was freed.
    unsafe { k.kmem_cache_destroy(c) }.map_err(|e| format!("kmem_cache_destroy: {e:?}"))?;
    Ok(None)
}

/// `alloc`'s types over kmalloc (`#[global_allocator]`): a growing `Vec`,
/// `Box`, `String`, a `BTreeMap`, and an over-aligned layout.
fn global_allocator() -> Outcome {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..200_000 {
        v.push(i);
    }
    let sum: u64 = v.iter().sum();
    check(sum == 199_999 * 200_000 / 2, || format!("sum {sum}"))?;
    let mut m = BTreeMap::new();
    for i in 0..10_000u32 {
        m.insert(i.wrapping_mul(2_654_435_761), format!("{i}"));
    }
    check(m.len() == 10_000, || "map lost entries".into())?;
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let b = Box::new(Page([7; 4096]));
    check(
        (&*b as *const Page as usize).is_multiple_of(4096) && b.0[4095] == 7,
        || "over-aligned Box".into(),
    )?;
    drop((v, m, b));
    Ok(None)
}
