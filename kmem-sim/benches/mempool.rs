//! mempool benches on a simulated machine, bound to CPU 0, with memory to
//! spare: what a pool adds to the allocator it wraps.
//!
//! - `cache_pair`: kmem_cache_alloc + kmem_cache_free of a 64-byte object,
//!   the baseline;
//! - `slab_pool_pair`: mempool_alloc(GFP_NOIO) + mempool_free on a slab pool
//!   of that cache with a full reserve: alloc_fn succeeds, the free goes to
//!   free_fn (the common case in the block layer);
//! - `reserve_pair`: mempool_alloc_preallocated + mempool_free: an element
//!   out of the reserve and back in (lock, refill, wake-up);
//! - `typed_pair`: `Mempool<T>::alloc` + dropping the box.

use criterion::{criterion_group, criterion_main, Criterion};
use kmem::alloc::Mempool;
use kmem::gfp::{GFP_KERNEL, GFP_NOIO};
use kmem::slab::SlabFlags;
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let sim = SimPlatform::new(SimConfig::new(1, pc_memory_map(1 << 30))).unwrap();
    let _cpu = sim.bind(0);
    let k = Kmem::boot(&sim, sim.memory_map(), &BootParams::default()).unwrap();
    let cache = k
        .kmem_cache_create("bench_pool_obj", 64, 0, SlabFlags::NONE, None)
        .unwrap();
    let mut pool = k.mempool_create_slab_pool(16, cache).unwrap();
    let typed_cache = k
        .kmem_cache::<[u64; 8]>("bench_typed", SlabFlags::NONE)
        .unwrap();
    let typed = Mempool::new(&typed_cache, 16).unwrap();

    let mut g = c.benchmark_group("mempool");
    g.bench_function("cache_pair", |b| {
        b.iter(|| {
            let p = k.kmem_cache_alloc(cache, GFP_KERNEL).unwrap();
            // SAFETY: `p` was just allocated from `cache` on this machine; it is freed once, here,
            // and not used afterwards.
            unsafe { k.kmem_cache_free(cache, black_box(p.as_ptr())) }.unwrap();
        })
    });
    g.bench_function("slab_pool_pair", |b| {
        b.iter(|| {
            let e = k.mempool_alloc(&pool, GFP_NOIO).unwrap();
            // SAFETY: `e` is an element that `mempool_alloc` of this `pool` just returned; it is
            // freed once, here, and not used afterwards.
            unsafe { k.mempool_free(black_box(e.as_ptr()), &pool) }.unwrap();
        })
    });
    g.bench_function("reserve_pair", |b| {
        b.iter(|| {
            let e = k.mempool_alloc_preallocated(&pool).unwrap();
            // SAFETY: `e` is an element that `mempool_alloc_preallocated` of this `pool` just
            // returned; it is freed once, here, and not used afterwards.
            unsafe { k.mempool_free(black_box(e.as_ptr()), &pool) }.unwrap();
        })
    });
    g.bench_function("typed_pair", |b| {
        b.iter(|| {
            let v = typed.alloc([7; 8], GFP_NOIO).unwrap();
            black_box(&v);
        })
    });
    g.finish();
    drop(typed);
    k.mempool_destroy(&mut pool).unwrap();
}

criterion_group!(mempool, benches);
criterion_main!(mempool);
