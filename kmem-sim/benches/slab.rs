//! kmalloc and kmem_cache benches, side by side in one binary with the
//! `mimalloc` crate and the system allocator (glibc malloc).
//!
//! - a 64-byte alloc+free pair in a hot loop on one CPU;
//! - a kmem_cache alloc+free pair (a fixed-size 64-byte object for the others);
//! - 1000 allocations, then 1000 frees (64 bytes);
//! - random sizes 8..=4096, a window of 256 live objects.

use criterion::{criterion_group, criterion_main, Criterion};
use kmem::gfp::GFP_KERNEL;
use kmem::slab::SlabFlags;
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

/// Sizes for the random case, fixed so every allocator sees the same ones.
fn sizes() -> Vec<usize> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            8 + (x % 4089) as usize
        })
        .collect()
}

fn host<A: GlobalAlloc>(c: &mut Criterion, name: &str, a: &A) {
    let l64 = Layout::from_size_align(64, 8).unwrap();
    let mut g = c.benchmark_group("slab");
    g.bench_function(format!("{name}/pair64"), |b| {
        // SAFETY: `l64` has a non-zero size; `p` is deallocated once, by the allocator `a` that
        // returned it and with the layout it was allocated with, and not used afterwards. The
        // result is not checked for null: a 64-byte host allocation is assumed to succeed.
        b.iter(|| unsafe {
            let p = a.alloc(l64);
            a.dealloc(black_box(p), l64);
        })
    });
    g.bench_function(format!("{name}/cache_pair"), |b| {
        // SAFETY: `l64` has a non-zero size; `p` is deallocated once, by the allocator `a` that
        // returned it and with the layout it was allocated with, and not used afterwards. The
        // result is not checked for null: a 64-byte host allocation is assumed to succeed.
        b.iter(|| unsafe {
            let p = a.alloc(l64);
            a.dealloc(black_box(p), l64);
        })
    });
    let mut v = vec![std::ptr::null_mut(); 1000];
    g.bench_function(format!("{name}/batch1000"), |b| {
        // SAFETY: `l64` has a non-zero size; each of the 1000 pointers allocated by `a` in this
        // iteration is deallocated once, by `a` and with `l64`, before the next iteration
        // overwrites it. The results are not checked for null: 64-byte host allocations are assumed
        // to succeed.
        b.iter(|| unsafe {
            for s in v.iter_mut() {
                *s = a.alloc(l64);
            }
            for s in v.iter() {
                a.dealloc(*s, l64);
            }
        })
    });
    let sz = sizes();
    let mut live: Vec<(*mut u8, Layout)> = vec![(std::ptr::null_mut(), l64); 256];
    for (i, slot) in live.iter_mut().enumerate() {
        let l = Layout::from_size_align(sz[i], 8).unwrap();
        // SAFETY: `l` has a non-zero size (every entry of `sizes()` is at least 8).
        *slot = (unsafe { a.alloc(l) }, l);
    }
    let mut i = 0usize;
    g.bench_function(format!("{name}/random8_4096"), |b| {
        // SAFETY: `live[slot]` holds a pointer `a` allocated with the layout stored beside it
        // (before the bench or in an earlier iteration); it is deallocated once, with that layout,
        // and the slot is refilled at once. Every new layout has a non-zero size (at least 8). Null
        // results are not checked for: host allocations of at most 4 KiB are assumed to succeed.
        b.iter(|| unsafe {
            let slot = i & 255;
            let (p, l) = live[slot];
            a.dealloc(p, l);
            let nl = Layout::from_size_align(sz[i & 4095], 8).unwrap();
            live[slot] = (a.alloc(nl), nl);
            i = i.wrapping_add(1);
        })
    });
    g.finish();
    for (p, l) in live {
        // SAFETY: each entry of `live` is a pointer `a` allocated with the layout stored beside it
        // and not yet deallocated; it is deallocated once, here.
        unsafe { a.dealloc(p, l) };
    }
}

fn kmem_benches(c: &mut Criterion) {
    let sim = SimPlatform::new(SimConfig::new(1, pc_memory_map(1 << 30))).unwrap();
    let _cpu = sim.bind(0);
    let k = Kmem::boot(&sim, sim.memory_map(), &BootParams::default()).unwrap();
    let cache = k
        .kmem_cache_create("bench_obj", 64, 0, SlabFlags::NONE, None)
        .unwrap();
    let mut g = c.benchmark_group("slab");
    g.bench_function("kmem/pair64", |b| {
        b.iter(|| {
            let p = k.kmalloc(64, GFP_KERNEL).unwrap();
            // SAFETY: `p` was just kmalloc'ed on this machine; it is freed once, here, and not used
            // afterwards.
            unsafe { k.kfree(black_box(p.as_ptr())) }.unwrap();
        })
    });
    g.bench_function("kmem/cache_pair", |b| {
        b.iter(|| {
            let p = k.kmem_cache_alloc(cache, GFP_KERNEL).unwrap();
            // SAFETY: `p` was just allocated from `cache` on this machine; it is freed once, here,
            // and not used afterwards.
            unsafe { k.kmem_cache_free(cache, black_box(p.as_ptr())) }.unwrap();
        })
    });
    let mut v = vec![std::ptr::null_mut(); 1000];
    g.bench_function("kmem/batch1000", |b| {
        b.iter(|| {
            for s in v.iter_mut() {
                *s = k.kmalloc(64, GFP_KERNEL).unwrap().as_ptr();
            }
            for s in v.iter() {
                // SAFETY: every `*s` was kmalloc'ed by the loop above in this iteration and is
                // freed once, here; the stale pointers left in `v` are overwritten before they are
                // freed again.
                unsafe { k.kfree(*s) }.unwrap();
            }
        })
    });
    let sz = sizes();
    let mut live: Vec<*mut u8> = (0..256)
        .map(|i| k.kmalloc(sz[i], GFP_KERNEL).unwrap().as_ptr())
        .collect();
    let mut i = 0usize;
    g.bench_function("kmem/random8_4096", |b| {
        b.iter(|| {
            let slot = i & 255;
            // SAFETY: `live[slot]` holds a live kmalloc object (allocated before the bench or in an
            // earlier iteration); it is freed once, here, and the slot is refilled at once.
            unsafe { k.kfree(live[slot]) }.unwrap();
            live[slot] = k.kmalloc(sz[i & 4095], GFP_KERNEL).unwrap().as_ptr();
            i = i.wrapping_add(1);
        })
    });
    g.finish();
    for p in live {
        // SAFETY: each pointer left in `live` is a live kmalloc object of this machine; it is freed
        // once, here.
        unsafe { k.kfree(p) }.unwrap();
    }
}

fn all(c: &mut Criterion) {
    kmem_benches(c);
    host(c, "mimalloc", &MiMalloc);
    host(c, "system", &System);
}

criterion_group!(benches, all);
criterion_main!(benches);
