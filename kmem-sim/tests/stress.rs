//! Stress: a million mixed operations (kmalloc, a slab cache, pages, a
//! mempool, a page cache and a dentry cache that reclaim takes back) on two
//! simulated CPUs with kswapd running, 1% of slab and page allocations
//! failed by fault injection, and memory kept under pressure. At the end,
//! with everything freed, the free page count is exactly the boot value.

use kmem::gfp::*;
use kmem::page::Page;
use kmem::slab::{KmemCache, SlabFlags};
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, with_kswapd, Dcache, PageCache, SimConfig, SimPlatform};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

fn rnd(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Every CPU's lists drained, every slab cache shrunk: the free pages.
fn settled(k: &Kmem<&SimPlatform>, s: &SimPlatform) -> u64 {
    let mut caches: Vec<usize> = Vec::new();
    k.for_each_cache(|c| caches.push(c as *const KmemCache as usize));
    s.on_cpu(0, || {
        for c in caches {
            // SAFETY: no cache is destroyed while this runs; each is alive.
            k.kmem_cache_shrink(unsafe { &*(c as *const KmemCache) });
        }
    });
    s.run_on_cpus(|_| {
        k.drain_local_pages();
    });
    assert_eq!(k.nr_pcp_pages(), 0);
    k.check_free_counts().expect("counters match lists")
}

/// What a CPU holds.
enum Item<'k> {
    Kmalloc(NonNull<u8>),
    Obj(NonNull<u8>),
    Pages(&'k Page, u32),
    Pool(NonNull<u8>),
}

// SAFETY: the pointers are kmem objects handed between CPUs by value; every
// one is freed exactly once.
unsafe impl Send for Item<'_> {}

#[test]
fn a_million_operations_under_pressure_with_injected_failures_account_for_every_page() {
    let s = SimPlatform::new(SimConfig::new(2, pc_memory_map(96 << 20))).unwrap();
    let k = s
        .on_cpu(0, || Kmem::boot(&s, s.memory_map(), &BootParams::default()))
        .unwrap();
    let boot_free = settled(&k, &s);

    let (cache, dc, pc, ids, mut pool) = s.on_cpu(0, || {
        let cache = k
            .kmem_cache_create("stress_obj", 96, 0, SlabFlags::NONE, None)
            .unwrap();
        let dc = Dcache::new(&k).unwrap();
        let pc = PageCache::new();
        let ids = [dc.register(&k).unwrap(), pc.register(&k).unwrap()];
        let pool = k.mempool_create_kmalloc_pool(32, 512).unwrap();
        (cache, dc, pc, ids, pool)
    });
    // 1% of slab and page allocations fail, blocking ones included.
    for spec in [
        "failslab/probability=1",
        "failslab/times=-1",
        "failslab/verbose=0",
        "failslab/ignore-gfp-wait=N",
        "fail_page_alloc/probability=1",
        "fail_page_alloc/times=-1",
        "fail_page_alloc/verbose=0",
        "fail_page_alloc/ignore-gfp-wait=N",
        "fail_page_alloc/min-order=0",
    ] {
        k.fault_inject_write(spec).unwrap();
    }

    let ops_per_cpu: u64 = if cfg!(debug_assertions) {
        50_000
    } else {
        500_000
    };
    let ops = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let exchange: Mutex<Vec<Item<'_>>> = Mutex::new(Vec::new());
    let gfps = [
        GFP_KERNEL,
        GFP_KERNEL | __GFP_NORETRY,
        GFP_ATOMIC | __GFP_NOWARN,
        GFP_NOWAIT,
        GFP_NOFS | __GFP_NORETRY,
        GFP_NOIO | __GFP_NORETRY,
    ];
    let free_item = |it: Item<'_>| match it {
        // SAFETY: a `Kmalloc` item holds a live kmalloc object of `k`; items are neither `Copy` nor
        // `Clone` and this one is consumed, so it is freed once, here.
        Item::Kmalloc(p) => unsafe { k.kfree(p.as_ptr()) }.unwrap(),
        // SAFETY: an `Obj` item holds a live object `kmem_cache_alloc` of `cache` returned; the
        // item is consumed, so it is freed once, here.
        Item::Obj(p) => unsafe { k.kmem_cache_free(cache, p.as_ptr()) }.unwrap(),
        Item::Pages(p, o) => k.__free_pages(p, o).unwrap(),
        // SAFETY: a `Pool` item holds an element `mempool_alloc` of `pool` returned; the item is
        // consumed, so it is freed once, here.
        Item::Pool(p) => unsafe { k.mempool_free(p.as_ptr(), &pool) }.unwrap(),
    };

    with_kswapd(&s, &k, || {
        s.run_on_cpus(|cpu| {
            let mut seed = 0x2545_f491_4f6c_dd1d ^ (cpu as u64 + 1);
            let mut live: Vec<Item<'_>> = Vec::new();
            for _ in 0..ops_per_cpu {
                let r = rnd(&mut seed);
                let gfp = gfps[(r >> 40) as usize % gfps.len()];
                let pick = if live.len() > 3000 { 99 } else { r % 100 };
                let got: Option<Item<'_>> = match pick {
                    0..=29 => {
                        let size = if r & 0xf00 == 0 {
                            8192 + (r >> 20) as usize % 16384
                        } else {
                            8 + (r >> 20) as usize % 4096
                        };
                        k.kmalloc(size, gfp).ok().map(Item::Kmalloc)
                    }
                    30..=44 => k.kmem_cache_alloc(cache, gfp).ok().map(Item::Obj),
                    45..=54 => {
                        let order = (r >> 24) as u32 % 4;
                        k.alloc_pages(gfp, order)
                            .ok()
                            .map(|p| Item::Pages(p, order))
                    }
                    55..=62 => {
                        // Blocking callers never see a failure from a pool.
                        let e = k.mempool_alloc(&pool, GFP_NOIO).unwrap();
                        Some(Item::Pool(e))
                    }
                    63..=67 => {
                        let _ = pc.add_pages(
                            &k,
                            16,
                            GFP_HIGHUSER_MOVABLE | __GFP_NORETRY | __GFP_NOWARN,
                            r & 1 == 0,
                        );
                        None
                    }
                    68..=70 => {
                        let _ = dc.lookup(&k, 8, GFP_KERNEL | __GFP_NORETRY | __GFP_NOWARN);
                        None
                    }
                    _ => {
                        if !live.is_empty() {
                            let i = (r >> 16) as usize % live.len();
                            let it = live.swap_remove(i);
                            if r & 0x10000 != 0 {
                                // Freed by the other CPU.
                                exchange.lock().unwrap().push(it);
                            } else {
                                free_item(it);
                            }
                        }
                        None
                    }
                };
                if pick <= 54 && got.is_none() {
                    failures.fetch_add(1, Relaxed);
                }
                if let Some(it) = got {
                    live.push(it);
                }
                if r % 128 == 0 {
                    let theirs: Vec<Item<'_>> = std::mem::take(&mut *exchange.lock().unwrap());
                    theirs.into_iter().for_each(free_item);
                }
                ops.fetch_add(1, Relaxed);
            }
            live.into_iter().for_each(free_item);
        });
    });
    assert!(ops.load(Relaxed) >= 2 * ops_per_cpu);
    if !cfg!(debug_assertions) {
        assert!(ops.load(Relaxed) >= 1_000_000);
    }
    let injected = k.failslab().injected() + k.fail_page_alloc().injected();
    let ev = k.vm_events();
    println!(
        "ops {} failures {} injected {} allocstall {} pgsteal direct {} kswapd {} pageoutrun {}",
        ops.load(Relaxed),
        failures.load(Relaxed),
        injected,
        ev.allocstall,
        ev.pgsteal_direct,
        ev.pgsteal_kswapd,
        ev.pageoutrun
    );
    // The pressure was real and so were the injected failures.
    assert!(injected > 1000, "injected {injected}");
    assert!(ev.allocstall > 0 && ev.pgsteal_direct > 0);
    assert!(pc.reclaimed() > 0);

    // Everything back.
    k.fault_inject_write("failslab/probability=0").unwrap();
    k.fault_inject_write("fail_page_alloc/probability=0")
        .unwrap();
    s.on_cpu(0, || {
        let theirs: Vec<Item<'_>> = std::mem::take(&mut *exchange.lock().unwrap());
        theirs.into_iter().for_each(free_item);
    });
    s.on_cpu(0, || {
        pc.truncate(&k).unwrap();
        dc.prune(&k).unwrap();
        for id in ids {
            k.unregister_shrinker(id).unwrap();
        }
        k.mempool_destroy(&mut pool).unwrap();
        // SAFETY: every object of `cache` was freed above (each CPU freed its live items, then the
        // exchange was drained), kswapd has stopped and no other CPU runs; `cache` is not used
        // afterwards.
        unsafe { k.kmem_cache_destroy(cache) }.unwrap();
        // SAFETY: `dc.prune` freed every dentry (none is pinned in this test) and the dcache
        // shrinker was unregistered above; neither `dc` nor its cache is used afterwards.
        unsafe { k.kmem_cache_destroy(dc.cache()) }.unwrap();
    });
    assert_eq!(settled(&k, &s), boot_free, "every page came back");
    assert!(
        s.reports().iter().all(|(_, l)| !l.contains("BUG")),
        "no bad page or slab reports"
    );
}
