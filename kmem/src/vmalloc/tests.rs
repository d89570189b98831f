//! The vmap_area allocator on the arena (no page tables: the vmalloc space
//! is only numbered), small enough for Miri.

use super::*;
use crate::gfp::{__GFP_NOWARN, GFP_KERNEL};
use crate::Error;
use std::string::String;
use std::vec;
use std::vec::Vec;

const P: usize = PAGE_SIZE;

fn with_machine(f: impl FnOnce(&Kmem<crate::arena::ArenaPlatform<'_>>)) {
    let mut mem = vec![0u8; 4 << 20];
    let k = Kmem::boot_arena(&mut mem, 2).unwrap();
    f(&k);
}

#[test]
fn areas_are_lowest_fit_aligned_and_merge_back() {
    with_machine(|k| {
        let (start, end) = NUMBERED_VMALLOC_SPACE;
        assert!(k.vmalloc_range().is_none(), "the arena maps nothing");
        let a = k.alloc_vmap_area(5 * P, P, GFP_KERNEL).unwrap();
        assert_eq!(a, start, "the lowest address first");
        // 16 KiB aligned: skips to the next 16 KiB boundary, leaving a hole.
        let b = k.alloc_vmap_area(5 * P, 4 * P, GFP_KERNEL).unwrap();
        assert_eq!(b, start + 8 * P);
        // The hole [5P, 8P) takes a 3-page area (a full fit).
        let c = k.alloc_vmap_area(3 * P, P, GFP_KERNEL).unwrap();
        assert_eq!(c, start + 5 * P);
        assert_eq!(k.vmap_free_areas(), (1, end - start - 13 * P));
        // Freeing the middle one splits nothing; the others merge it back.
        k.free_vmap_area(c).unwrap();
        assert_eq!(k.vmap_free_areas().0, 2);
        k.free_vmap_area(a).unwrap();
        k.free_vmap_area(b).unwrap();
        assert_eq!(k.vmap_free_areas(), (1, end - start));
        assert_eq!(k.free_vmap_area(b), Err(Error::BadAddress));
        // Bad sizes and alignments are refused.
        assert_eq!(
            k.alloc_vmap_area(0, P, GFP_KERNEL),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            k.alloc_vmap_area(P + 1, P, GFP_KERNEL),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            k.alloc_vmap_area(P, 3 * P, GFP_KERNEL),
            Err(Error::InvalidArgument)
        );
    });
}

#[test]
fn a_split_free_area_keeps_both_sides() {
    with_machine(|k| {
        let (start, _) = NUMBERED_VMALLOC_SPACE;
        let a: Vec<usize> = (0..6)
            .map(|_| k.alloc_vmap_area(P, P, GFP_KERNEL).unwrap())
            .collect();
        for &x in &a[1..5] {
            k.free_vmap_area(x).unwrap();
        }
        // [P, 5P) is free. A page aligned to 2P lands at 2P, in its middle
        // (NE_FIT): the free area splits into [P, 2P) and [3P, 5P).
        let m = k.alloc_vmap_area(P, 2 * P, GFP_KERNEL).unwrap();
        assert_eq!(m, start + 2 * P);
        assert_eq!(k.vmap_free_areas().0, 3);
        let l = k.alloc_vmap_area(P, P, GFP_KERNEL).unwrap();
        assert_eq!(l, start + P, "the left part stayed free");
        let r = k.alloc_vmap_area(2 * P, P, GFP_KERNEL).unwrap();
        assert_eq!(r, start + 3 * P, "and the right part");
        // As in Linux, an aligned search looks only at areas of at least
        // size + align - 1 bytes: a 2-page hole is passed over for a
        // 2-page-aligned page.
        k.free_vmap_area(r).unwrap();
        let skip = k.alloc_vmap_area(P, 2 * P, GFP_KERNEL).unwrap();
        assert_eq!(skip, start + 6 * P);
        for x in [a[0], a[5], m, l, skip] {
            k.free_vmap_area(x).unwrap();
        }
        assert_eq!(k.vmap_free_areas().0, 1);
    });
}

#[test]
fn lazy_frees_are_counted_and_purged_in_one_flush() {
    with_machine(|k| {
        assert_eq!(k.lazy_max_pages(), 16384);
        let a = k.alloc_vmap_area(5 * P, 4 * P, GFP_KERNEL).unwrap();
        let b = k.alloc_vmap_area(5 * P, 4 * P, GFP_KERNEL).unwrap();
        let lf = k.free_vmap_area_noflush(a).unwrap();
        assert_eq!(
            (lf.nr_lazy, lf.nr_lazy_max, lf.purge_due()),
            (5, 16384, false)
        );
        let lf = k.free_vmap_area_noflush(b).unwrap();
        assert_eq!(lf.nr_lazy, 10);
        assert_eq!(k.free_vmap_area_noflush(b), Err(Error::BadAddress));
        // Lazily freed space is not reused before the purge.
        let c = k.alloc_vmap_area(5 * P, 4 * P, GFP_KERNEL).unwrap();
        assert!(c > b);
        let mut text = String::new();
        crate::proc::vmallocinfo(k, &mut text).unwrap();
        assert_eq!(
            text.lines()
                .filter(|l| l.ends_with("unpurged vm_area"))
                .count(),
            2
        );
        let ev = k.purge_vmap_area_lazy();
        assert_eq!(
            ev,
            PurgeEvent {
                start: a,
                end: b + 5 * P,
                num_purged: 2
            }
        );
        assert_eq!(k.vmap_lazy_nr(), 0);
        // An empty purge reports Linux's empty range.
        let ev = k.purge_vmap_area_lazy();
        assert_eq!(
            ev,
            PurgeEvent {
                start: usize::MAX,
                end: 0,
                num_purged: 0
            }
        );
        k.free_vmap_area(c).unwrap();
        assert_eq!(k.vmap_free_areas().0, 1);
        assert_eq!(k.vmap_area_stats(), (3, 0, 2, 1, 2));
    });
}

#[test]
fn a_full_space_and_a_platform_without_page_tables_are_reported() {
    with_machine(|k| {
        let (start, end) = NUMBERED_VMALLOC_SPACE;
        let r = k.alloc_vmap_area(end - start + P, P, GFP_KERNEL);
        assert_eq!(r, Err(Error::Busy));
        assert!(k.platform().reported("vmap allocation for size"));
        assert!(k
            .platform()
            .reported("failed: use vmalloc=<size> to increase size"));
        assert_eq!(
            k.alloc_vmap_area(end - start + P, P, GFP_KERNEL | __GFP_NOWARN),
            Err(Error::Busy)
        );
        assert_eq!(k.vmalloc(P), Err(Error::NotSupported));
        assert!(k
            .platform()
            .reported("vmalloc: this platform has no page tables"));
        assert_eq!(k.vmap_area_stats().1, 2);
        assert_eq!(k.vmap_free_areas(), (1, end - start));
        let mut s = String::new();
        k.describe_vmalloc_addr(start + P, &mut s).unwrap();
        assert!(s.contains("free vmalloc space"), "{s}");
    });
}

/// Random allocations of random sizes and alignments and frees in random
/// order (every fit type, every merge case), each followed by a full check
/// of both trees: order, balance and the free tree's `subtree_max_size`,
/// which an allocation refreshes along the descent that found its area and
/// a free along the descent that found its neighbours.
#[test]
fn random_allocs_and_frees_keep_both_trees_consistent() {
    with_machine(|k| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut held = Vec::new();
        for _ in 0..if cfg!(miri) { 60 } else { 3000 } {
            if held.is_empty() || rnd(3) != 0 {
                let size = (1 + rnd(8) as usize) * P;
                let align = P << rnd(4);
                if let Ok(a) = k.alloc_vmap_area(size, align, GFP_KERNEL | __GFP_NOWARN) {
                    held.push(a);
                }
            } else {
                let i = rnd(held.len() as u64) as usize;
                k.free_vmap_area(held.swap_remove(i)).unwrap();
            }
            k.vmalloc.free.lock().0.check().unwrap();
            k.vmalloc.busy.lock().0.check().unwrap();
        }
        for a in held {
            k.free_vmap_area(a).unwrap();
        }
        let (start, end) = NUMBERED_VMALLOC_SPACE;
        assert_eq!(k.vmap_free_areas(), (1, end - start));
    });
}
