//! The per-CPU allocator on the arena (first chunk only: the arena has no
//! page tables for vmalloc chunks), small enough for Miri.

use super::counter::PercpuCounter;
use super::*;
use crate::gfp::GFP_KERNEL;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::vec;
use std::vec::Vec;

crate::define_per_cpu! {
    static TICKS: AtomicU32;
}

fn with_machine(cpus: usize, f: impl FnOnce(&Kmem<crate::arena::ArenaPlatform<'_>>)) {
    let mut mem = vec![0u8; 8 << 20];
    let k = Kmem::boot_arena(&mut mem, cpus).unwrap();
    f(&k);
}

/// The first chunk's statistics line.
fn first_chunk(k: &Kmem<crate::arena::ArenaPlatform<'_>>) -> PcpuChunkInfo {
    let mut first = None;
    k.pcpu_chunks(|c| {
        if c.label == "First Chunk" {
            first = Some(*c);
        }
    });
    first.expect("a first chunk")
}

#[test]
fn the_first_chunk_serves_until_full_and_frees_merge_back() {
    with_machine(2, |k| {
        assert!(k
            .platform()
            .reported("percpu: Embedded 13 pages/cpu s16384 r8192 d28672 u1048576"));
        let ai = k.pcpu_alloc_info();
        // Boot's own per-CPU structures (the zones' page lists) hold part
        // of the 28 KiB of dynamic space, as Linux's do.
        let start = first_chunk(k);
        let g0 = k.pcpu_global_stats();
        let zones = k.populated_zones().count();
        assert_eq!(start.nr_alloc, zones, "one per populated zone: {start:?}");
        assert_eq!(
            ai.dyn_size - start.free_bytes,
            zones * core::mem::size_of::<crate::mmzone::PerCpuPages>()
        );
        assert_eq!(g0.nr_cur_alloc, start.nr_alloc as u64);
        // Whole 4 KiB areas until the chunk is full, then no chunk to grow
        // into (the arena cannot map one).
        let mut v: Vec<PcpuPtr<u8>> = Vec::new();
        while let Ok(p) = k.__alloc_percpu_gfp(4096, 4096, GFP_KERNEL | crate::gfp::__GFP_NOWARN) {
            v.push(p);
        }
        let n = v.len();
        // Boot's lists take the start of the dynamic space, less than a
        // page: every whole page after them is an area.
        assert_eq!(n, start.free_bytes / 4096, "{n} areas");
        assert_eq!(k.__alloc_percpu(4096, 8), Err(Error::NoMemory));
        assert!(k.platform().reported(
            "percpu: allocation failed, size=4096 align=8 atomic=0, failed to allocate new chunk"
        ));
        for (i, p) in v.iter().enumerate() {
            assert_eq!(p.addr() % 4096, 0);
            let a = k.per_cpu_ptr(*p, 1).unwrap().as_ptr() as usize;
            assert_eq!(
                a - p.addr(),
                k.per_cpu_ptr(*p, 0).map(|c| c.as_ptr() as usize).unwrap() - p.addr()
                    + ai.unit_size,
                "area {i}"
            );
        }
        for p in v {
            // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
            unsafe { k.free_percpu(p) }.unwrap();
        }
        let g = k.pcpu_global_stats();
        assert_eq!(
            (g.nr_alloc, g.nr_cur_alloc, g.nr_max_alloc, g.nr_chunks),
            (
                g0.nr_alloc + n as u64,
                g0.nr_cur_alloc,
                g0.nr_cur_alloc + n as u64,
                1
            )
        );
        // The space merged back: the chunk is as it was, and one allocation
        // of its largest free run fits.
        let end = first_chunk(k);
        assert_eq!(
            (end.free_bytes, end.contig_bytes, end.nr_alloc),
            (start.free_bytes, start.contig_bytes, start.nr_alloc)
        );
        let all = k.__alloc_percpu(start.contig_bytes, 4).unwrap();
        // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
        unsafe { k.free_percpu(all) }.unwrap();
        // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
        assert_eq!(unsafe { k.free_percpu(all) }, Err(Error::InvalidArgument));
    });
}

#[test]
fn static_and_dynamic_variables_count_per_cpu() {
    with_machine(2, |k| {
        let c = PerCpu::<AtomicU32, _>::new(k).unwrap();
        for cpu in 0..2 {
            k.platform().set_cpu(cpu);
            for _ in 0..=cpu {
                k.this_cpu_inc(&TICKS);
                k.this_cpu_add(&c, 10);
            }
        }
        let sum = |v: &dyn Fn(usize) -> u32| (0..2).map(v).sum::<u32>();
        assert_eq!(sum(&|cpu| k.per_cpu(&TICKS, cpu).unwrap().load(Relaxed)), 3);
        assert_eq!(sum(&|cpu| k.per_cpu(&c, cpu).unwrap().load(Relaxed)), 30);
        drop(c);
        let n = PercpuCounter::new(k, 5, GFP_KERNEL).unwrap();
        n.add(3);
        k.platform().set_cpu(0);
        n.add(-1);
        assert_eq!(n.sum(), 7);
        assert_eq!(n.read(), 5, "the deltas stay per CPU below the batch");
    });
}
