//! Property tests: random sequences of page and kmalloc operations on two
//! simulated CPUs of the arena platform, checked against a model of what
//! the caller owns. They drive the fast paths and the slow paths (refills,
//! spills, zone fallback, splitting and merging, krealloc moves) in orders
//! no hand-written test picks.
//!
//! Natively only: proptest's many cases are too slow to interpret, and the
//! unsafe paths they reach run under Miri in `page_alloc.rs` and `slab.rs`.

use kmem::arena::ArenaPlatform;
use kmem::gfp::*;
use kmem::memory_map::MemRegion;
use kmem::mmzone::ZoneType;
use kmem::page::Page;
use kmem::{BootParams, Error, Kmem, PAGE_SIZE};
use proptest::prelude::*;
use std::collections::BTreeMap;

const MB: usize = 1 << 20;
/// Two zones: DMA below 16 MiB, DMA32 above.
const ARENA: usize = 48 * MB;

/// The requests a driver makes, and the highest zone each may use.
const GFPS: [(Gfp, ZoneType); 7] = [
    (GFP_KERNEL, ZoneType::Normal),
    (GFP_ATOMIC, ZoneType::Normal),
    (GFP_NOWAIT, ZoneType::Normal),
    (GFP_HIGHUSER_MOVABLE, ZoneType::Normal),
    (GFP_KERNEL.union(__GFP_ZERO), ZoneType::Normal),
    (GFP_KERNEL.union(__GFP_DMA32), ZoneType::Dma32),
    (GFP_KERNEL.union(__GFP_DMA), ZoneType::Dma),
];

#[derive(Clone, Debug)]
enum PageOp {
    Alloc { gfp: usize, order: u32, comp: bool },
    Free(usize),
    Cpu(usize),
    Drain,
}

fn page_op() -> impl Strategy<Value = PageOp> {
    prop_oneof![
        6 => (0..GFPS.len(), prop_oneof![8 => 0..=3u32, 1 => 4..=10u32], any::<bool>())
            .prop_map(|(gfp, order, comp)| PageOp::Alloc { gfp, order, comp }),
        5 => any::<usize>().prop_map(PageOp::Free),
        1 => (0..2usize).prop_map(PageOp::Cpu),
        1 => Just(PageOp::Drain),
    ]
}

/// A block the test owns, with the tag written into each of its pages.
struct Block<'k> {
    page: &'k Page,
    pfn: u64,
    order: u32,
    dma: bool,
}

fn tag(pfn: u64) -> u64 {
    pfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

fn page_words(k: &Kmem<ArenaPlatform<'_>>, b: &Block<'_>) -> Vec<*mut u64> {
    let base = k.page_address(b.page).expect("direct-mapped").as_ptr();
    (0..1usize << b.order)
        // SAFETY (of the callers' accesses): page i of a block the test owns.
        .map(|i| base.wrapping_add(i * PAGE_SIZE).cast::<u64>())
        .collect()
}

fn free_block(k: &Kmem<ArenaPlatform<'_>>, b: Block<'_>) -> Result<(), TestCaseError> {
    for (i, w) in page_words(k, &b).into_iter().enumerate() {
        // SAFETY: the block is still the test's.
        let got = unsafe { w.read() };
        prop_assert_eq!(
            got,
            tag(b.pfn + i as u64),
            "page {} overwritten",
            b.pfn + i as u64
        );
    }
    prop_assert_eq!(k.__free_pages(b.page, b.order), Ok(()));
    Ok(())
}

fn settle(k: &Kmem<ArenaPlatform<'_>>) -> u64 {
    for cpu in 0..k.nr_cpus() {
        k.platform().set_cpu(cpu);
        k.drain_local_pages();
    }
    k.platform().set_cpu(0);
    k.check_free_counts()
        .expect("free counters match the lists")
}

fn run_pages(ops: Vec<PageOp>) -> Result<(), TestCaseError> {
    let mut mem = vec![0u8; ARENA];
    let k = Kmem::boot_arena(&mut mem, 2).expect("boot");
    let before = settle(&k);
    let dma_managed = k.node(0).zone(ZoneType::Dma as usize).managed_pages();
    // Budgets well inside memory, so that a request of order <= 3 within
    // them must succeed; costly orders may fail, as in Linux.
    let budget = before / 8;
    let dma_budget = dma_managed / 8;
    let (mut live, mut live_dma) = (0u64, 0u64);
    let mut owned: Vec<Block<'_>> = Vec::new();
    let mut ranges: BTreeMap<u64, u64> = BTreeMap::new();
    for op in ops {
        match op {
            PageOp::Alloc { gfp, order, comp } => {
                let (g, top) = GFPS[gfp];
                let dma = top == ZoneType::Dma;
                let n = 1u64 << order;
                if live + n > budget || (dma && live_dma + n > dma_budget) {
                    continue;
                }
                let g = if comp { g | __GFP_COMP } else { g } | __GFP_NOWARN;
                let page = match k.alloc_pages(g, order) {
                    Ok(p) => p,
                    Err(e) => {
                        prop_assert!(order > 3, "order {} {} failed: {:?}", order, g, e);
                        prop_assert_eq!(e, Error::NoMemory);
                        continue;
                    }
                };
                let pfn = k.page_to_pfn(page);
                prop_assert_eq!(pfn % n, 0, "order {} block not aligned", order);
                prop_assert!(
                    k.page_zone(page).zone_type() <= top,
                    "{} from the wrong zone",
                    g
                );
                prop_assert_eq!(page.refcount(), 1);
                if let Some((&s, &e)) = ranges.range(..pfn + n).next_back() {
                    prop_assert!(e <= pfn, "[{}, {}) overlaps [{}, {})", pfn, pfn + n, s, e);
                }
                ranges.insert(pfn, pfn + n);
                let b = Block {
                    page,
                    pfn,
                    order,
                    dma,
                };
                let zero = g.contains(__GFP_ZERO);
                for (i, w) in page_words(&k, &b).into_iter().enumerate() {
                    if zero {
                        let bytes = w.cast::<u8>();
                        // SAFETY: the test's new block.
                        let page = unsafe { std::slice::from_raw_parts(bytes, PAGE_SIZE) };
                        prop_assert!(page.iter().all(|&x| x == 0), "__GFP_ZERO page not zero");
                    }
                    // SAFETY: the test's new block.
                    unsafe { w.write(tag(pfn + i as u64)) };
                }
                live += n;
                live_dma += if dma { n } else { 0 };
                owned.push(b);
            }
            PageOp::Free(i) => {
                if owned.is_empty() {
                    continue;
                }
                let b = owned.swap_remove(i % owned.len());
                ranges.remove(&b.pfn);
                live -= 1 << b.order;
                live_dma -= if b.dma { 1 << b.order } else { 0 };
                free_block(&k, b)?;
            }
            PageOp::Cpu(c) => k.platform().set_cpu(c),
            PageOp::Drain => {
                k.drain_all_pages();
            }
        }
    }
    for b in owned {
        free_block(&k, b)?;
    }
    prop_assert_eq!(settle(&k), before, "pages lost or gained");
    Ok(())
}

#[derive(Clone, Debug)]
enum KmallocOp {
    Alloc { size: usize, zero: bool },
    Free(usize),
    Realloc(usize, usize),
    Cpu(usize),
}

fn kmalloc_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 1..=256usize,
        4 => 257..=8192usize,
        1 => 8193..=65536usize,
    ]
}

fn kmalloc_op() -> impl Strategy<Value = KmallocOp> {
    prop_oneof![
        6 => (kmalloc_size(), any::<bool>()).prop_map(|(size, zero)| KmallocOp::Alloc { size, zero }),
        4 => any::<usize>().prop_map(KmallocOp::Free),
        2 => (any::<usize>(), kmalloc_size()).prop_map(|(i, s)| KmallocOp::Realloc(i, s)),
        1 => (0..2usize).prop_map(KmallocOp::Cpu),
    ]
}

/// An object the test owns: address, size asked for, fill byte.
struct Obj {
    p: *mut u8,
    size: usize,
    fill: u8,
}

fn check_fill(o: &Obj, len: usize) -> Result<(), TestCaseError> {
    // SAFETY: `len` bytes of an object the test owns.
    let bytes = unsafe { std::slice::from_raw_parts(o.p, len) };
    prop_assert!(
        bytes.iter().all(|&b| b == o.fill),
        "object {:p} overwritten",
        o.p
    );
    Ok(())
}

/// `slab_debug=FZPU` (consistency checks, red zones, poison, owner
/// tracking) and random freelists for every cache, or the defaults.
fn kmalloc_machine(mem: &mut [u8], debug: bool) -> Kmem<ArenaPlatform<'_>> {
    let p = ArenaPlatform::new(mem, 2);
    let (start, end) = p.usable_range();
    let mut params = BootParams {
        reserve_low: 0,
        ..BootParams::default()
    };
    if debug {
        params.slab.debug = kmem::slab::SlabDebug::parse("FZPU").expect("slab_debug");
        params.slab.freelist_random = true;
    }
    Kmem::boot(p, &[MemRegion::usable(start, end - start)], &params).expect("boot")
}

fn run_kmalloc(ops: Vec<KmallocOp>, debug: bool) -> Result<(), TestCaseError> {
    let mut mem = vec![0u8; ARENA];
    let k = kmalloc_machine(&mut mem, debug);
    let mut owned: Vec<Obj> = Vec::new();
    let mut ranges: BTreeMap<usize, usize> = BTreeMap::new();
    let mut fill = 0u8;
    // kmalloc's alignment: 8 bytes, and power-of-two sizes to their size.
    // krealloc keeps an object that is big enough where it is, so only the
    // 8 bytes hold for what it returns (as in Linux).
    let place = |ranges: &mut BTreeMap<usize, usize>, o: &Obj, fresh: bool| {
        let (a, n) = (o.p as usize, k.ksize(o.p));
        prop_assert!(n >= o.size, "ksize {} < {}", n, o.size);
        let align = if fresh && o.size.is_power_of_two() {
            o.size.min(PAGE_SIZE)
        } else {
            8
        };
        prop_assert_eq!(a % align, 0, "{:p} of size {} misaligned", o.p, o.size);
        if let Some((&s, &e)) = ranges.range(..a + n).next_back() {
            prop_assert!(
                e <= a,
                "[{:#x}, {:#x}) overlaps [{:#x}, {:#x})",
                a,
                a + n,
                s,
                e
            );
        }
        ranges.insert(a, a + n);
        Ok(())
    };
    for op in ops {
        match op {
            KmallocOp::Alloc { size, zero } => {
                let gfp = if zero {
                    GFP_KERNEL | __GFP_ZERO
                } else {
                    GFP_KERNEL
                };
                let p = k.kmalloc(size, gfp).expect("kmalloc").as_ptr();
                fill = fill.wrapping_add(1);
                let o = Obj { p, size, fill };
                place(&mut ranges, &o, true)?;
                if zero {
                    // SAFETY: the new object's `size` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                    prop_assert!(bytes.iter().all(|&b| b == 0), "kzalloc not zero");
                }
                // SAFETY: the new object's `size` bytes.
                unsafe { p.write_bytes(fill, size) };
                owned.push(o);
            }
            KmallocOp::Free(i) => {
                if owned.is_empty() {
                    continue;
                }
                let o = owned.swap_remove(i % owned.len());
                check_fill(&o, o.size)?;
                ranges.remove(&(o.p as usize));
                // SAFETY: the test's object, not used again.
                prop_assert_eq!(unsafe { k.kfree(o.p) }, Ok(()));
            }
            KmallocOp::Realloc(i, size) => {
                if owned.is_empty() {
                    continue;
                }
                let i = i % owned.len();
                let old = &owned[i];
                check_fill(old, old.size)?;
                ranges.remove(&(old.p as usize));
                // SAFETY: the test's object; only the returned pointer is
                // used afterwards.
                let p = unsafe { k.krealloc(old.p, size, GFP_KERNEL) }
                    .expect("krealloc")
                    .as_ptr();
                let o = Obj {
                    p,
                    size,
                    fill: old.fill,
                };
                check_fill(&o, old.size.min(size))?;
                place(&mut ranges, &o, false)?;
                // SAFETY: the object's `size` bytes.
                unsafe { p.write_bytes(o.fill, size) };
                owned[i] = o;
            }
            KmallocOp::Cpu(c) => k.platform().set_cpu(c),
        }
    }
    for o in owned {
        check_fill(&o, o.size)?;
        // SAFETY: the test's object, not used again.
        prop_assert_eq!(unsafe { k.kfree(o.p) }, Ok(()));
    }
    prop_assert!(k.check_free_counts().is_ok());
    prop_assert!(!k.platform().reported("BUG"), "a report on good input");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    #[cfg_attr(miri, ignore = "proptest cases are too slow to interpret")]
    fn page_blocks_never_overlap_and_all_come_back(ops in prop::collection::vec(page_op(), 1..300)) {
        run_pages(ops)?;
    }

    #[test]
    #[cfg_attr(miri, ignore = "proptest cases are too slow to interpret")]
    fn kmalloc_objects_keep_their_bytes(ops in prop::collection::vec(kmalloc_op(), 1..300)) {
        run_kmalloc(ops, false)?;
    }

    #[test]
    #[cfg_attr(miri, ignore = "proptest cases are too slow to interpret")]
    fn kmalloc_under_slab_debug_reports_nothing_on_good_input(ops in prop::collection::vec(kmalloc_op(), 1..300)) {
        run_kmalloc(ops, true)?;
    }
}
