//! Page allocator benches, side by side with buddy_system_allocator's
//! FrameAllocator managing the same page frames, in one run.
//!
//! - order-0 and order-9 pairs through kmem's per-CPU lists (Linux 6.x
//!   keeps pageblock-order, THP-sized, blocks on them too);
//! - order-0 and order-9 pairs through the buddy lists: per-CPU lists
//!   disabled with `zone_pcp_disable()` for order 0, a machine booted
//!   without THP (no order-9 per-CPU list) for order 9;
//! - booting a 64 GiB machine, from memory map to a ready page allocator.
//!
//! Two reference lines put the ratios in context: buddy_system_allocator's
//! `LockedFrameAllocator` (the same allocator behind its spin lock, as any
//! allocator shared between CPUs must be) and one locked read-modify-write,
//! the price of the atomic reference drop every `__free_pages()` makes
//! (`put_page_testzero()`).

use buddy_system_allocator::{FrameAllocator, LockedFrameAllocator};
use criterion::{criterion_group, criterion_main, Criterion};
use kmem::gfp::GFP_KERNEL;
use kmem::mmzone::ZoneType;
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

const RAM: u64 = 1 << 30;

fn sim(ram: u64) -> SimPlatform {
    SimPlatform::new(SimConfig::new(1, pc_memory_map(ram))).expect("simulated machine")
}

/// A FrameAllocator holding the same free page frames kmem's buddy lists got.
fn frames(k: &Kmem<&SimPlatform>) -> FrameAllocator<33> {
    let mut fa = FrameAllocator::<33>::new();
    for r in k.memblock().memory().regions() {
        fa.add_frame((r.base >> 12) as usize, (r.end() >> 12) as usize);
    }
    fa
}

/// The same frames behind buddy_system_allocator's spin lock.
fn locked_frames(k: &Kmem<&SimPlatform>) -> LockedFrameAllocator<33> {
    let fa = LockedFrameAllocator::<33>::new();
    for r in k.memblock().memory().regions() {
        fa.lock()
            .add_frame((r.base >> 12) as usize, (r.end() >> 12) as usize);
    }
    fa
}

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("page_pair");
    {
        let sim = sim(RAM);
        let _cpu = sim.bind(0);
        let k = Kmem::boot(&sim, sim.memory_map(), &BootParams::default()).expect("boot");
        let mut bsa = frames(&k);
        g.bench_function("kmem/order0_pcp", |b| {
            b.iter(|| {
                let p = k.alloc_page(GFP_KERNEL).unwrap();
                k.__free_pages(black_box(p), 0).unwrap();
            })
        });
        g.bench_function("buddy_system_allocator/order0", |b| {
            b.iter(|| {
                let f = bsa.alloc(1).unwrap();
                bsa.dealloc(black_box(f), 1);
            })
        });
        g.bench_function("kmem/order9_pcp", |b| {
            b.iter(|| {
                let p = k.alloc_pages(GFP_KERNEL, 9).unwrap();
                k.__free_pages(black_box(p), 9).unwrap();
            })
        });
        g.bench_function("buddy_system_allocator/order9", |b| {
            b.iter(|| {
                let f = bsa.alloc(512).unwrap();
                bsa.dealloc(black_box(f), 512);
            })
        });
        let locked = locked_frames(&k);
        g.bench_function("buddy_system_allocator_locked/order0", |b| {
            b.iter(|| {
                let f = locked.lock().alloc(1).unwrap();
                locked.lock().dealloc(black_box(f), 1);
            })
        });
        g.bench_function("buddy_system_allocator_locked/order9", |b| {
            b.iter(|| {
                let f = locked.lock().alloc(512).unwrap();
                locked.lock().dealloc(black_box(f), 512);
            })
        });
        let refcount = AtomicUsize::new(1);
        g.bench_function("floor/locked_rmw", |b| {
            b.iter(|| black_box(&refcount).fetch_add(1, Ordering::AcqRel))
        });
        for node in k.nodes() {
            for t in [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal] {
                k.zone_pcp_disable(node.zone(t as usize));
            }
        }
        g.bench_function("kmem/order0_buddy", |b| {
            b.iter(|| {
                let p = k.alloc_page(GFP_KERNEL).unwrap();
                k.__free_pages(black_box(p), 0).unwrap();
            })
        });
    }
    // A machine without THP (as a kernel built without it): order-9 blocks
    // have no per-CPU list and go to and from the buddy lists.
    let sim = sim(RAM);
    let _cpu = sim.bind(0);
    let params = BootParams {
        transparent_hugepage: false,
        ..BootParams::default()
    };
    let k = Kmem::boot(&sim, sim.memory_map(), &params).expect("boot");
    g.bench_function("kmem/order9_buddy", |b| {
        b.iter(|| {
            let p = k.alloc_pages(GFP_KERNEL, 9).unwrap();
            k.__free_pages(black_box(p), 9).unwrap();
        })
    });
    g.finish();
}

fn boot_64g(c: &mut Criterion) {
    let mut g = c.benchmark_group("boot");
    g.sample_size(10);
    g.bench_function("kmem/64GiB", |b| {
        b.iter(|| {
            let sim = sim(64 << 30);
            let _cpu = sim.bind(0);
            let k = Kmem::boot(&sim, sim.memory_map(), &BootParams::default()).expect("boot");
            black_box(k.nr_free_pages());
        })
    });
    g.finish();
}

criterion_group!(benches, pairs, boot_64g);
criterion_main!(benches);
