//! Deferred struct page init (`BootParams::deferred_struct_page_init`,
//! Linux's `CONFIG_DEFERRED_STRUCT_PAGE_INIT`): boot frees one section per
//! zone and the rest joins as allocations need it. Natively only: the
//! machine is bigger than Miri can walk.
#![cfg(not(miri))]

use kmem::arena::ArenaPlatform;
use kmem::gfp::GFP_KERNEL;
use kmem::memory_map::MemRegion;
use kmem::{BootParams, Kmem, Platform, MAX_PAGE_ORDER, PAGE_SIZE};

fn boot(buf: &mut [u8], deferred: bool) -> Kmem<ArenaPlatform<'_>> {
    let p = ArenaPlatform::new(buf, 2);
    let (s, e) = p.usable_range();
    boot_on(p, s, e, deferred)
}

/// Boot `p` on its usable range `s..e`, with deferred init or without.
fn boot_on<P: Platform>(p: P, s: u64, e: u64, deferred: bool) -> Kmem<P> {
    let params = BootParams {
        reserve_low: 0,
        deferred_struct_page_init: deferred,
        ..BootParams::default()
    };
    Kmem::boot(p, &[MemRegion::usable(s, e - s)], &params).expect("boot")
}

const MEM: usize = 768 << 20;

#[test]
fn deferred_memory_joins_as_allocations_need_it() {
    let mut buf = vec![0u8; MEM];
    // The same buffer both times: where it lies decides the zones' edges.
    let full = boot(&mut buf, false).totalram_pages();
    buf.fill(0);
    let k = boot(&mut buf, true);
    let at_boot = k.totalram_pages();
    // One section (128 MiB) and the ends of the range at boot.
    assert!(at_boot < full / 2, "{at_boot} of {full} pages at boot");
    k.check_free_counts().unwrap();
    // Allocate all of it in max-order blocks: the zone grows until every
    // deferred block has joined, and nothing is lost.
    let mut held = Vec::new();
    while let Ok(page) = k.alloc_pages(GFP_KERNEL | kmem::gfp::__GFP_NOWARN, MAX_PAGE_ORDER) {
        // The block is memory: write its first and last bytes.
        let p = k.page_address(page).unwrap().as_ptr();
        // SAFETY: a fresh max-order block, ours, in the direct map.
        unsafe {
            p.write(1);
            p.add((PAGE_SIZE << MAX_PAGE_ORDER) - 1).write(2);
        }
        held.push(page);
    }
    assert_eq!(k.totalram_pages(), full, "every deferred block joined");
    assert!(held.len() as u64 * (1 << MAX_PAGE_ORDER) > full / 2);
    for page in held {
        k.__free_pages(page, MAX_PAGE_ORDER).unwrap();
    }
    k.check_free_counts().unwrap();
}

#[test]
fn small_allocations_grow_a_zone_too() {
    let mut buf = vec![0u8; MEM];
    let k = boot(&mut buf, true);
    let at_boot = k.totalram_pages();
    let mut held = Vec::new();
    // More order-0 pages than boot freed.
    for _ in 0..at_boot + 1000 {
        held.push(k.alloc_pages(GFP_KERNEL, 0).unwrap());
    }
    assert!(k.totalram_pages() > at_boot);
    for page in held {
        k.__free_pages(page, 0).unwrap();
    }
    k.check_free_counts().unwrap();
}

/// The arena, recording [`Platform::memory_deferred`]'s calls.
struct Recording<'a> {
    arena: ArenaPlatform<'a>,
    calls: std::sync::Mutex<Vec<(u64, u64, bool)>>,
}

// SAFETY: every promise is the arena's, delegated unchanged;
// `memory_deferred` only records its arguments.
unsafe impl Platform for Recording<'_> {
    kmem::forward_platform!(p => &p.arena; nr_cpu_ids, smp_processor_id, local_enter,
        local_exit, local_enter_leaf, local_exit_leaf, set_per_cpu_offset, this_cpu_add,
        irq_save, irq_restore, in_atomic, in_interrupt, direct_map, memory_is_zeroed,
        vmap_range, map_kernel_range, unmap_kernel_range, flush_tlb_kernel_range,
        wait_event, wake_up, others_can_run, smp_call_function_single, on_each_cpu,
        page_reporting_notify, report, current, now_ns, random_u64, task_flags,
        set_task_flags, out_of_memory);
    fn memory_deferred(&self, start: u64, end: u64, joined: bool) {
        self.calls.lock().unwrap().push((start, end, joined));
    }
}

#[test]
fn the_platform_hears_what_is_held_back_and_what_joins() {
    let mut buf = vec![0u8; MEM];
    let arena = ArenaPlatform::new(&mut buf, 2);
    let (s, e) = arena.usable_range();
    let p = Recording {
        arena,
        calls: Default::default(),
    };
    let k = boot_on(p, s, e, true);
    let held: Vec<(u64, u64)> = k
        .platform()
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|&(s, e, joined)| {
            assert!(!joined, "nothing joins during boot");
            (s, e)
        })
        .collect();
    assert!(!held.is_empty());
    let held_bytes: u64 = held.iter().map(|(s, e)| e - s).sum();
    // Allocate everything: every held-back byte joins, each once, inside
    // a held-back range.
    let mut pages = Vec::new();
    while let Ok(page) = k.alloc_pages(GFP_KERNEL | kmem::gfp::__GFP_NOWARN, MAX_PAGE_ORDER) {
        pages.push(page);
    }
    let mut joined: Vec<(u64, u64)> = k.platform().calls.lock().unwrap()[held.len()..]
        .iter()
        .map(|&(s, e, j)| {
            assert!(j, "a range held back twice");
            (s, e)
        })
        .collect();
    joined.sort_unstable();
    assert!(
        joined.windows(2).all(|w| w[0].1 <= w[1].0),
        "a range joined twice"
    );
    assert!(joined
        .iter()
        .all(|&(s, e)| held.iter().any(|&(hs, he)| hs <= s && e <= he)));
    assert_eq!(joined.iter().map(|(s, e)| e - s).sum::<u64>(), held_bytes);
    for page in pages {
        k.__free_pages(page, MAX_PAGE_ORDER).unwrap();
    }
}

/// The descriptor of the page that holds `k`'s descriptor of `pfn`: a
/// page of the `struct page` array itself.
fn own_page<'k>(k: &'k Kmem<ArenaPlatform<'_>>, pfn: u64) -> &'k kmem::page::Page {
    let d = k.pfn_to_page(pfn).unwrap() as *const kmem::page::Page as *const u8;
    k.virt_to_page(d)
        .expect("the struct page array is in the direct map")
}

/// The pfns memblock keeps reserved whose descriptors boot left unwritten
/// (not `PG_reserved`).
fn unmarked_reserved_pfns(k: &Kmem<ArenaPlatform<'_>>) -> Vec<u64> {
    let mut out = Vec::new();
    for r in k.memblock().reserved().regions() {
        for pfn in r.base / PAGE_SIZE as u64..r.end().div_ceil(PAGE_SIZE as u64) {
            if k.pfn_to_page(pfn).is_some_and(|p| !p.is_reserved()) {
                out.push(pfn);
            }
        }
    }
    out
}

#[test]
fn the_struct_page_arrays_own_pages_stay_uninitialised_and_refuse_frees() {
    let mut buf = vec![0u8; MEM];
    let pfn = {
        let k = boot(&mut buf, false);
        let pfn = k.page_to_pfn(k.alloc_pages(GFP_KERNEL, 0).unwrap());
        // Without deferred init, boot marks them reserved as Linux does.
        let own = own_page(&k, pfn);
        assert!(
            own.is_reserved() && own.refcount() == 1,
            "{:#x}",
            own.flags()
        );
        assert_eq!(unmarked_reserved_pfns(&k), []);
        pfn
    };
    buf.fill(0);
    let k = boot(&mut buf, true);
    let own = own_page(&k, pfn);
    // Deferred: never written, like a deferred page not yet joined.
    assert_eq!((own.flags(), own.refcount()), (0, 0));
    // Exactly the array's pages: one run, as long as the array, holding
    // `own`; every other reserved page is marked.
    let unmarked = unmarked_reserved_pfns(&k);
    let array_pages =
        (k.mem_map().len() * core::mem::size_of::<kmem::page::Page>()).div_ceil(PAGE_SIZE) as u64;
    assert_eq!(unmarked.len() as u64, array_pages);
    assert!(unmarked.windows(2).all(|w| w[1] == w[0] + 1));
    let own_pfn = k.page_to_pfn(own);
    assert!(unmarked.contains(&own_pfn));
    // Freeing memory of the array is refused and reported, and changes
    // nothing.
    let free_before = k.nr_free_pages();
    let addr = k.page_address(own).unwrap().as_ptr();
    k.platform().clear_reports();
    // SAFETY: not a kmalloc object: kfree must refuse it untouched.
    assert!(unsafe { k.kfree(addr) }.is_err());
    assert!(
        k.platform()
            .reported("is neither a slab object nor a kmalloc_large page"),
        "kfree of the array's page was not reported"
    );
    assert_eq!(k.ksize(addr), 0);
    assert!(k.__free_pages(own, 0).is_err());
    assert_eq!((own.flags(), own.refcount()), (0, 0));
    assert_eq!(k.nr_free_pages(), free_before);
    k.check_free_counts().unwrap();
}
