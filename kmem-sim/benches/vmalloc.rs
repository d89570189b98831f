//! vmalloc benches, side by side in one binary with the host's own virtual
//! memory calls and with kmem's kmalloc.
//!
//! - `vmap_area/<n>_busy`: `alloc_vmap_area()` + `free_vmap_area()` of one
//!   two-page area while `n` (10 and 100,000) other one-page areas are
//!   busy, a one-page hole between each two (the free tree holds `n - 1`
//!   holes too small for the request, which its augmented search must
//!   skip, and the busy tree `n` areas). The ratio of the two is how the
//!   allocator grows with the areas it keeps: logarithmic if well under 2.
//! - `vmalloc/<pages>/{kmem,host}`: `vmalloc()` + a write to every page +
//!   `vfree()` of 1, 16 and 256 pages, beside the host's anonymous
//!   `mmap()` + the same writes (first touch: a page fault each) +
//!   `munmap()`. kmem's area is mapped populated, one `mmap` per physically
//!   contiguous run, and unmapped with one `mmap(PROT_NONE)`; its range is
//!   freed lazily, and the purge that runs whenever the lazily freed pages
//!   pass `lazy_max_pages()` is part of the time (the summary counts the
//!   purges).
//! - `kvmalloc/<size>/{kvmalloc,kmalloc,vmalloc}`: `kvmalloc()` +
//!   `kvfree()` of 2 KiB and 64 KiB, beside `kmalloc()` + `kfree()` and
//!   `vmalloc()` + `vfree()` of the same size (kvmalloc is kmalloc first,
//!   vmalloc only when that fails).
//!
//! Every benchmark records the median of its samples (warm-up included);
//! a summary of the ratios is printed at the end, with the lazy purges and
//! the physically contiguous runs per area of each kmem vmalloc size (the
//! simulator maps each run with one host `mmap`, so runs are its cost).

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use kmem::gfp::GFP_KERNEL;
use kmem::{BootParams, Kmem, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use rustix::mm::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "support/vmap_busy.rs"]
mod vmap_busy;

type K<'a> = Kmem<&'a SimPlatform>;

/// Busy areas around the measured one, the small and the large case.
const BUSY: [usize; 2] = [10, 100_000];
/// vmalloc sizes, in pages.
const PAGES: [usize; 3] = [1, 16, 256];
/// kvmalloc sizes, in bytes.
const KV_SIZES: [usize; 2] = [2048, 64 * 1024];

/// The median time per iteration (ns) of each benchmark, for the summary.
static RESULTS: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());
/// (pages, purges, lazy frees, physically contiguous runs per area) of each
/// kmem vmalloc benchmark, warm-up included: the simulator maps each run
/// with a host `mmap`.
static PURGES: Mutex<Vec<(usize, usize, usize, f64)>> = Mutex::new(Vec::new());

fn result(id: &str) -> Option<f64> {
    let r = RESULTS.lock().unwrap();
    r.iter().find(|(n, _)| n == id).map(|&(_, t)| t)
}

/// A 2-CPU PC with 1 GiB, as the other benches use; the benches run on CPU
/// 0. Two CPUs make `lazy_max_pages()` 16384, Linux's value for them.
fn machine() -> SimPlatform {
    SimPlatform::new(SimConfig::new(2, pc_memory_map(1 << 30))).expect("simulated machine")
}

fn boot(sim: &SimPlatform) -> K<'_> {
    Kmem::boot(sim, sim.memory_map(), &BootParams::default()).expect("boot")
}

/// Bench `group/id` in `g`, timing `f(iters)` itself, and record the
/// median of the samples under `group/id`.
fn bench(g: &mut BenchmarkGroup<'_, WallTime>, group: &str, id: &str, mut f: impl FnMut(u64)) {
    let mut samples = Vec::new();
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            f(iters);
            let d: Duration = t0.elapsed();
            samples.push(d.as_nanos() as f64 / iters as f64);
            d
        })
    });
    if samples.len() < 10 {
        return; // filtered out, or criterion's test mode
    }
    samples.sort_by(f64::total_cmp);
    let m = samples[samples.len() / 2];
    RESULTS.lock().unwrap().push((format!("{group}/{id}"), m));
}

/// Write one byte into each page of `[p, p + pages * PAGE_SIZE)`.
///
/// # Safety
///
/// The range is mapped writable and the caller's.
unsafe fn touch(p: *mut u8, pages: usize) {
    for i in 0..pages {
        // SAFETY: inside the caller's writable range (the function's
        // contract); volatile, so the first touch is not optimised away.
        unsafe { p.add(i * PAGE_SIZE).write_volatile(i as u8) };
    }
}

/// The physically contiguous runs in `pages`-page areas vmalloc gives now
/// (the average over 100 areas): how many host `mmap` calls map one.
fn runs_per_area(k: &K<'_>, pages: usize) -> f64 {
    let mut runs = 0;
    for _ in 0..100 {
        let p = k.vmalloc(pages * PAGE_SIZE).unwrap().as_ptr();
        let pfn = |i: usize| k.vmalloc_to_pfn(p.wrapping_add(i * PAGE_SIZE)).unwrap();
        runs += 1 + (1..pages).filter(|&i| pfn(i) != pfn(i - 1) + 1).count();
        // SAFETY: just vmalloc'ed and not used again.
        unsafe { k.vfree(p) }.unwrap();
    }
    runs as f64 / 100.0
}

fn vmap_area(c: &mut Criterion) {
    let mut g = c.benchmark_group("vmap_area");
    for busy in BUSY {
        let sim = machine();
        let _cpu = sim.bind(0);
        let k = boot(&sim);
        let held = vmap_busy::busy_with_holes(&k, busy);
        bench(&mut g, "vmap_area", &format!("{busy}_busy"), |iters| {
            for _ in 0..iters {
                vmap_busy::pair(&k);
            }
        });
        vmap_busy::free_all(&k, held);
    }
    g.finish();
}

fn vmalloc_vs_host(c: &mut Criterion) {
    let mut g = c.benchmark_group("vmalloc");
    let sim = machine();
    let _cpu = sim.bind(0);
    let k = boot(&sim);
    for pages in PAGES {
        let size = pages * PAGE_SIZE;
        let (_, _, frees0, purges0, _) = k.vmap_area_stats();
        bench(&mut g, "vmalloc", &format!("{pages}/kmem"), |iters| {
            for _ in 0..iters {
                let p = k.vmalloc(size).unwrap().as_ptr();
                // SAFETY: `size` bytes just vmalloc'ed, mapped writable and
                // ours; freed once, here, and not used afterwards.
                unsafe {
                    touch(black_box(p), pages);
                    k.vfree(p).unwrap();
                }
            }
        });
        let (_, _, frees1, purges1, _) = k.vmap_area_stats();
        let runs = runs_per_area(&k, pages);
        PURGES
            .lock()
            .unwrap()
            .push((pages, purges1 - purges0, frees1 - frees0, runs));
        bench(&mut g, "vmalloc", &format!("{pages}/host"), |iters| {
            for _ in 0..iters {
                // SAFETY: a fresh private anonymous mapping at an address the
                // host picks: it aliases nothing.
                let p = unsafe {
                    mmap_anonymous(
                        std::ptr::null_mut(),
                        size,
                        ProtFlags::READ | ProtFlags::WRITE,
                        MapFlags::PRIVATE,
                    )
                }
                .unwrap()
                .cast::<u8>();
                // SAFETY: the mapping is `size` bytes, writable and ours; it
                // is unmapped once, here, and not used afterwards.
                unsafe {
                    touch(black_box(p), pages);
                    munmap(p.cast(), size).unwrap();
                }
            }
        });
    }
    g.finish();
}

fn kvmalloc(c: &mut Criterion) {
    let mut g = c.benchmark_group("kvmalloc");
    let sim = machine();
    let _cpu = sim.bind(0);
    let k = boot(&sim);
    for size in KV_SIZES {
        let kib = size / 1024;
        bench(&mut g, "kvmalloc", &format!("{kib}K/kvmalloc"), |iters| {
            for _ in 0..iters {
                let p = k.kvmalloc(size, GFP_KERNEL).unwrap();
                // SAFETY: just kvmalloc'ed; freed once, here.
                unsafe { k.kvfree(black_box(p.as_ptr())) }.unwrap();
            }
        });
        bench(&mut g, "kvmalloc", &format!("{kib}K/kmalloc"), |iters| {
            for _ in 0..iters {
                let p = k.kmalloc(size, GFP_KERNEL).unwrap();
                // SAFETY: just kmalloc'ed; freed once, here.
                unsafe { k.kfree(black_box(p.as_ptr())) }.unwrap();
            }
        });
        bench(&mut g, "kvmalloc", &format!("{kib}K/vmalloc"), |iters| {
            for _ in 0..iters {
                let p = k.vmalloc(size).unwrap();
                // SAFETY: just vmalloc'ed; freed once, here.
                unsafe { k.vfree(black_box(p.as_ptr())) }.unwrap();
            }
        });
    }
    g.finish();
}

/// The medians and the ratios.
fn summary(_: &mut Criterion) {
    if RESULTS.lock().unwrap().is_empty() {
        return;
    }
    println!();
    println!("vmalloc summary (median of each benchmark's samples, warm-up included)");
    if let (Some(small), Some(large)) = (
        result(&format!("vmap_area/{}_busy", BUSY[0])),
        result(&format!("vmap_area/{}_busy", BUSY[1])),
    ) {
        println!(
            "vmap_area alloc+free: {:.1} ns with {} busy, {:.1} ns with {} busy: {:.2}x (target <= 2)",
            small,
            BUSY[0],
            large,
            BUSY[1],
            large / small
        );
    }
    println!(
        "{:<28} {:>12} {:>12} {:>10} {:>16} {:>10}",
        "vmalloc+touch+vfree", "kmem ns", "host ns", "kmem/host", "purges/vfrees", "runs/area"
    );
    let purges = PURGES.lock().unwrap().clone();
    for pages in PAGES {
        let (Some(km), Some(host)) = (
            result(&format!("vmalloc/{pages}/kmem")),
            result(&format!("vmalloc/{pages}/host")),
        ) else {
            continue;
        };
        let (p, r) = purges
            .iter()
            .find(|(n, ..)| *n == pages)
            .map_or((String::new(), String::new()), |(_, p, f, r)| {
                (format!("{p}/{f}"), format!("{r:.1}"))
            });
        println!(
            "{:<28} {:>12.0} {:>12.0} {:>10.2} {:>16} {:>10}",
            format!("{pages} page(s)"),
            km,
            host,
            km / host,
            p,
            r
        );
    }
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "kvmalloc+kvfree", "kvmalloc ns", "kmalloc ns", "vmalloc ns", "kv/k", "kv/v"
    );
    for size in KV_SIZES {
        let kib = size / 1024;
        let (Some(kv), Some(km), Some(vm)) = (
            result(&format!("kvmalloc/{kib}K/kvmalloc")),
            result(&format!("kvmalloc/{kib}K/kmalloc")),
            result(&format!("kvmalloc/{kib}K/vmalloc")),
        ) else {
            continue;
        };
        println!(
            "{:<28} {:>12.1} {:>12.1} {:>12.1} {:>10.2} {:>10.3}",
            format!("{kib} KiB"),
            kv,
            km,
            vm,
            kv / km,
            kv / vm
        );
    }
}

criterion_group!(benches, vmap_area, vmalloc_vs_host, kvmalloc, summary);
criterion_main!(benches);
