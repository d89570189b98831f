//! Deferred struct page init (`BootParams::deferred_struct_page_init`,
//! Linux's `CONFIG_DEFERRED_STRUCT_PAGE_INIT`): boot frees one section per
//! zone and the rest joins as allocations need it. Natively only: the
//! machine is bigger than Miri can walk.
#![cfg(not(miri))]

use kmem::arena::ArenaPlatform;
use kmem::gfp::GFP_KERNEL;
use kmem::memory_map::MemRegion;
use kmem::{BootParams, Kmem, MAX_PAGE_ORDER, PAGE_SIZE};

fn boot(buf: &mut [u8], deferred: bool) -> Kmem<ArenaPlatform<'_>> {
    let p = ArenaPlatform::new(buf, 2);
    let (s, e) = p.usable_range();
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
