//! A driver for instruction-level profiling of kmem's fast paths
//! (`valgrind --tool=callgrind`, `perf record`): boots the simulated
//! machine the benches use and runs one path `N` times.
//!
//! ```sh
//! cargo build --release -p kmem-sim --example hot_paths
//! valgrind --tool=callgrind target/release/examples/hot_paths pair64 100000
//! ```
//!
//! Paths: `pair64` (kmalloc+kfree of 64 B), `cache_pair`
//! (kmem_cache_alloc+free), `batch1000` (1000 kmalloc then 1000 kfree, N
//! times), `random` (random sizes 8..4096, 256 live), `order0_pcp`,
//! `order0_buddy`, `order9_pcp`, `order9_buddy` (page alloc+free pairs;
//! `order9_buddy` boots the machine without THP, so that order-9 blocks
//! have no per-CPU list),
//! `mimalloc_pair`, `system_pair`, `mimalloc_batch1000`,
//! `system_batch1000` (the same through `GlobalAlloc`, for scale),
//! `bsa_order0`, `bsa_order9` (buddy_system_allocator's `FrameAllocator`
//! over the same page frames, as in the page bench), `vmap_area_10`,
//! `vmap_area_100000` (`alloc_vmap_area` + `free_vmap_area` of two pages
//! among that many busy areas, as in the vmalloc bench; their setup runs
//! inside the path, so subtract a run of the same path with `N` = 0),
//! `none`
//! (boot only, to subtract).

use kmem::gfp::GFP_KERNEL;
use kmem::mmzone::ZoneType;
use kmem::slab::SlabFlags;
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

#[path = "../benches/support/vmap_busy.rs"]
mod vmap_busy;

const L64: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!("a valid layout"),
};

fn host_pair<A: GlobalAlloc>(a: &A, n: usize) {
    for _ in 0..n {
        // SAFETY: a fresh allocation of layout L64, freed once.
        unsafe {
            let p = a.alloc(L64);
            a.dealloc(black_box(p), L64);
        }
    }
}

fn host_batch<A: GlobalAlloc>(a: &A, n: usize) {
    let mut v = vec![std::ptr::null_mut(); 1000];
    for _ in 0..n {
        // SAFETY: fresh allocations of layout L64, each freed once.
        unsafe {
            for s in v.iter_mut() {
                *s = a.alloc(L64);
            }
            for s in v.iter() {
                a.dealloc(*s, L64);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("pair64", |s| s.as_str());
    // `time1 PATH N` times one path (what `time` runs for a path that needs
    // a machine of its own); otherwise `PATH N`.
    let (path, n) = match what {
        "time1" => (args.get(1).expect("a path").as_str(), args.get(2)),
        _ => (what, args.get(1)),
    };
    let n: usize = n.map_or(100_000, |s| s.parse().expect("a count"));
    let mut config = SimConfig::new(1, pc_memory_map(1 << 30));
    config.vmap_size = 1 << 30; // valgrind cannot reserve the default 64 GiB
    let sim = SimPlatform::new(config).expect("machine");
    let _cpu = sim.bind(0);
    let params = BootParams {
        transparent_hugepage: path != "order9_buddy",
        ..BootParams::default()
    };
    let k = Kmem::boot(&sim, sim.memory_map(), &params).expect("boot");
    let cache = k
        .kmem_cache_create("bench_obj", 64, 0, SlabFlags::NONE, None)
        .expect("cache");
    // Warm up the per-CPU structures so the measured loop is the steady state.
    for _ in 0..2 {
        let p = k.kmalloc(64, GFP_KERNEL).unwrap();
        // SAFETY: `p` was just kmalloc'ed on this machine; it is freed once, here, and not used
        // afterwards.
        unsafe { k.kfree(p.as_ptr()) }.unwrap();
        let p = k.kmem_cache_alloc(cache, GFP_KERNEL).unwrap();
        // SAFETY: `p` was just allocated from `cache` on this machine; it is freed once, here, and
        // not used afterwards.
        unsafe { k.kmem_cache_free(cache, p.as_ptr()) }.unwrap();
        let p = k.alloc_page(GFP_KERNEL).unwrap();
        k.__free_pages(p, 0).unwrap();
    }
    if what == "time1" {
        return time_path(&k, cache, path, n);
    }
    if what != "time" {
        return run(&k, cache, what, n);
    }
    // `time`: the best of many short runs of each path, in ns per
    // iteration. The minimum shrugs off preemption by other processes,
    // which a mean over a loaded machine does not.
    let paths = [
        "pair64",
        "mimalloc_pair",
        "system_pair",
        "cache_pair",
        "batch1000",
        "mimalloc_batch1000",
        "random",
        "order0_pcp",
        "bsa_order0",
        "order9_pcp",
        "order9_buddy",
        "bsa_order9",
        "order0_buddy",
    ];
    for path in paths {
        if path == "order9_buddy" {
            // A machine without THP, on a thread of its own (a thread is
            // bound to one simulated machine at a time).
            let exe = std::env::current_exe().expect("own path");
            let out = std::process::Command::new(exe)
                .args(["time1", path, &n.to_string()])
                .output()
                .expect("run");
            print!("{}", String::from_utf8_lossy(&out.stdout));
            continue;
        }
        time_path(&k, cache, path, n);
    }
}

/// Print the best time per iteration of `path` over many short runs.
fn time_path(k: &Kmem<&SimPlatform>, cache: &kmem::slab::KmemCache, path: &str, n: usize) {
    let per = match path {
        "batch1000" | "mimalloc_batch1000" => 10,
        "random" => 100_000,
        _ => 10_000,
    };
    let mut best = f64::MAX;
    for _ in 0..(n / per).max(1) {
        let t = std::time::Instant::now();
        run(k, cache, path, per);
        best = best.min(t.elapsed().as_nanos() as f64 / per as f64);
    }
    println!("{path:20} {best:10.2} ns");
}

fn run(k: &Kmem<&SimPlatform>, cache: &kmem::slab::KmemCache, what: &str, n: usize) {
    match what {
        "pair64" => {
            for _ in 0..n {
                let p = k.kmalloc(64, GFP_KERNEL).unwrap();
                // SAFETY: `p` was just kmalloc'ed on this machine; it is freed once, here, and not
                // used afterwards.
                unsafe { k.kfree(black_box(p.as_ptr())) }.unwrap();
            }
        }
        "cache_pair" => {
            for _ in 0..n {
                let p = k.kmem_cache_alloc(cache, GFP_KERNEL).unwrap();
                // SAFETY: `p` was just allocated from `cache` on this machine; it is freed once,
                // here, and not used afterwards.
                unsafe { k.kmem_cache_free(cache, black_box(p.as_ptr())) }.unwrap();
            }
        }
        "batch1000" => {
            let mut v = vec![std::ptr::null_mut(); 1000];
            for _ in 0..n {
                for s in v.iter_mut() {
                    *s = k.kmalloc(64, GFP_KERNEL).unwrap().as_ptr();
                }
                for s in v.iter() {
                    // SAFETY: every `*s` was kmalloc'ed by the loop above in this iteration and is
                    // freed once, here; the stale pointers left in `v` are overwritten before they
                    // are freed again.
                    unsafe { k.kfree(*s) }.unwrap();
                }
            }
        }
        "random" => {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let sz: Vec<usize> = (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    8 + (x % 4089) as usize
                })
                .collect();
            let mut live: Vec<*mut u8> = (0..256)
                .map(|i| k.kmalloc(sz[i], GFP_KERNEL).unwrap().as_ptr())
                .collect();
            for i in 0..n {
                let slot = i & 255;
                // SAFETY: `live[slot]` holds a live kmalloc object (allocated before the loop or in
                // an earlier iteration); it is freed once, here, and the slot is refilled at once.
                unsafe { k.kfree(live[slot]) }.unwrap();
                live[slot] = k.kmalloc(sz[i & 4095], GFP_KERNEL).unwrap().as_ptr();
            }
            for p in live {
                // SAFETY: each pointer left in `live` is a live kmalloc object of this machine; it
                // is freed once, here.
                unsafe { k.kfree(p) }.unwrap();
            }
        }
        "order0_pcp" => {
            // Warm the list first, as a steady state has it: otherwise each
            // pair may empty and refill a one-page list.
            let w: Vec<_> = (0..4).map(|_| k.alloc_page(GFP_KERNEL).unwrap()).collect();
            for p in w {
                k.__free_pages(p, 0).unwrap();
            }
            for _ in 0..n {
                let p = k.alloc_page(GFP_KERNEL).unwrap();
                k.__free_pages(black_box(p), 0).unwrap();
            }
        }
        "order9_pcp" | "order9_buddy" => {
            for _ in 0..n {
                let p = k.alloc_pages(GFP_KERNEL, 9).unwrap();
                k.__free_pages(black_box(p), 9).unwrap();
            }
        }
        "order0_buddy" => {
            for node in k.nodes() {
                for t in [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal] {
                    k.zone_pcp_disable(node.zone(t as usize));
                }
            }
            for _ in 0..n {
                let p = k.alloc_page(GFP_KERNEL).unwrap();
                k.__free_pages(black_box(p), 0).unwrap();
            }
        }
        "mimalloc_pair" => host_pair(&mimalloc::MiMalloc, n),
        "system_pair" => host_pair(&std::alloc::System, n),
        "mimalloc_batch1000" => host_batch(&mimalloc::MiMalloc, n),
        "system_batch1000" => host_batch(&std::alloc::System, n),
        "bsa_order0" | "bsa_order9" => {
            // buddy_system_allocator's FrameAllocator over the same frames.
            let mut fa = buddy_system_allocator::FrameAllocator::<33>::new();
            for r in k.memblock().memory().regions() {
                fa.add_frame((r.base >> 12) as usize, (r.end() >> 12) as usize);
            }
            let count = if what == "bsa_order0" { 1 } else { 512 };
            for _ in 0..n {
                let f = fa.alloc(count).unwrap();
                fa.dealloc(black_box(f), count);
            }
        }
        "vmap_area_10" | "vmap_area_100000" => {
            // As the vmalloc bench (the same setup and pair).
            let busy: usize = what["vmap_area_".len()..].parse().expect("a count");
            let held = vmap_busy::busy_with_holes(k, busy);
            for _ in 0..n {
                vmap_busy::pair(k);
            }
            vmap_busy::free_all(k, held);
        }
        "none" => {}
        other => panic!("unknown path {other}"),
    }
}
