//! SLUB caches and kmalloc on the arena platform (also under Miri, smaller),
//! including the scenarios of Linux's lib/tests/slub_kunit.c and
//! lib/test_meminit.c that apply (re-expressed, not translated).

use kmem::arena::ArenaPlatform;
use kmem::gfp::*;
use kmem::kmalloc::{KMALLOC_MAX_CACHE_SIZE, ZERO_SIZE_PTR};
use kmem::memory_map::MemRegion;
use kmem::platform::Platform;
use kmem::slab::*;
use kmem::{BootParams, Error, Kmem, PAGE_SIZE};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Arena size. Under Miri the object counts are smaller too: Stacked
/// Borrows' per-location stacks grow with every reborrow of the same
/// sheaf, so long allocation loops slow down more than linearly there.
const MEM: usize = if cfg!(miri) { 12 << 20 } else { 32 << 20 };

fn boot_with(buf: &mut [u8], cpus: usize, slab: SlabParams) -> Kmem<ArenaPlatform<'_>> {
    let p = ArenaPlatform::new(buf, cpus);
    let (s, e) = p.usable_range();
    let params = BootParams {
        reserve_low: 0,
        slab,
        ..BootParams::default()
    };
    Kmem::boot(p, &[MemRegion::usable(s, e - s)], &params).expect("boot")
}

fn boot(buf: &mut [u8]) -> Kmem<ArenaPlatform<'_>> {
    boot_with(buf, 1, SlabParams::default())
}

/// Allocate from `c` (zeroed, so that `check` can look at every object)
/// until `want`, which was just freed, comes back (see [`come_back`]).
/// Returns `want` and the objects that came before it, which are freed
/// again.
fn reuse<P: kmem::platform::Platform>(
    k: &Kmem<P>,
    c: &KmemCache,
    want: std::ptr::NonNull<u8>,
    check: impl Fn(std::ptr::NonNull<u8>),
) -> (std::ptr::NonNull<u8>, Vec<std::ptr::NonNull<u8>>) {
    come_back(
        c.sheaf_capacity(),
        || k.kmem_cache_zalloc(c, GFP_KERNEL).unwrap(),
        // SAFETY: each object is allocated by `come_back` and freed once.
        |o| unsafe { k.kmem_cache_free(c, o.as_ptr()) }.unwrap(),
        want,
        check,
    )
}

/// Allocate with `alloc` until `want`, which was just freed, comes back.
/// Frees go to the CPU's free sheaf, which an empty main sheaf takes once
/// it is at least half full; so half a sheaf of other objects is freed on
/// top of `want` first, and `want` comes back after the main sheaf's
/// objects and those (or at once, if the free sheaf was taken already).
/// Returns `want` and the objects that came before it, freed again.
fn come_back(
    cap: usize,
    mut alloc: impl FnMut() -> std::ptr::NonNull<u8>,
    mut free: impl FnMut(std::ptr::NonNull<u8>),
    want: std::ptr::NonNull<u8>,
    check: impl Fn(std::ptr::NonNull<u8>),
) -> (std::ptr::NonNull<u8>, Vec<std::ptr::NonNull<u8>>) {
    let mut got = None;
    let mut pad = Vec::new();
    for _ in 0..cap / 2 {
        let x = alloc();
        check(x);
        if x == want {
            got = Some(x);
            break;
        }
        pad.push(x);
    }
    pad.iter().for_each(|&p| free(p));
    let mut others = Vec::new();
    for _ in 0..3 * cap + 1 {
        if got.is_some() {
            break;
        }
        let x = alloc();
        check(x);
        if x == want {
            got = Some(x);
        } else {
            others.push(x);
        }
    }
    others.iter().for_each(|&o| free(o));
    let got = got.expect("a freed object comes back within a few sheaves' worth of allocations");
    (got, others)
}

fn free_pages(k: &Kmem<ArenaPlatform<'_>>) -> u64 {
    k.drain_local_pages();
    k.check_free_counts().unwrap()
}

#[test]
fn cache_alloc_free_reuse_and_shrink() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let before = free_pages(&k);
    let c = k
        .kmem_cache_create("test_obj", 200, 0, SLAB_HWCACHE_ALIGN, None)
        .unwrap();
    assert_eq!(k.kmem_cache_size(c), 200);
    assert_eq!(c.geometry().size, 256, "HWCACHE_ALIGN rounds 200 to 256");
    let n = if cfg!(miri) { 50 } else { 500 };
    let objs: Vec<_> = (0..n)
        .map(|_| k.kmem_cache_alloc(c, GFP_KERNEL).unwrap())
        .collect();
    let mut sorted: Vec<usize> = objs.iter().map(|p| p.as_ptr() as usize).collect();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "no object handed out twice");
    assert!(sorted.iter().all(|a| a % 64 == 0));
    let (slabs, total, _) = k.slab_totals(c);
    assert!(slabs > 0 && total >= n as u64);
    for p in &objs {
        // SAFETY: each object is freed once and not used again.
        unsafe { k.kmem_cache_free(c, p.as_ptr()) }.unwrap();
    }
    // The most recently freed object comes back once the CPU's sheaves
    // get to it.
    let (again, _) = reuse(&k, c, *objs.last().unwrap(), |_| ());
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, again.as_ptr()) }.unwrap();
    let freed = k.kmem_cache_shrink(c);
    assert!(freed > 0);
    assert_eq!(k.slab_totals(c).0, 0, "shrink gives back every empty slab");
    // SAFETY: no object of `c` is live.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
    assert_eq!(free_pages(&k), before, "every page came back");
}

/// A free sheaf holding a few objects is not taken when the main sheaf
/// runs out: a CPU that frees an object another CPU allocated and then
/// allocates does not get that object straight back (passive false
/// sharing, Hoard's cache-scratch). Once the free sheaf is half full, it
/// is taken and its objects come back.
#[test]
fn a_nearly_empty_free_sheaf_does_not_hand_its_objects_straight_back() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("scratch", 16, 0, SlabFlags::NONE, None)
        .unwrap();
    let cap = c.sheaf_capacity();
    let x = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, x.as_ptr()) }.unwrap();
    // The main sheaf runs out within `cap` allocations; its next objects
    // come from the slabs, not from the one-object free sheaf.
    let held: Vec<_> = (0..2 * cap)
        .map(|_| k.kmem_cache_alloc(c, GFP_KERNEL).unwrap())
        .collect();
    assert!(
        !held.contains(&x),
        "the lone freed object stayed in the free sheaf"
    );
    for p in &held {
        // SAFETY: allocated above, freed once.
        unsafe { k.kmem_cache_free(c, p.as_ptr()) }.unwrap();
    }
    let (again, _) = reuse(&k, c, x, |_| ());
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, again.as_ptr()) }.unwrap();
    k.kmem_cache_shrink(c);
    // SAFETY: no object of `c` is live.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
}

static CTOR_CALLS: AtomicUsize = AtomicUsize::new(0);
fn ctor(p: *mut u8) {
    CTOR_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the allocator hands the constructor a whole object (64 bytes).
    unsafe { p.write_bytes(0x42, 64) };
}

#[test]
fn constructor_runs_when_objects_enter_a_slab_not_per_allocation() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("ctor_obj", 64, 0, SlabFlags::NONE, Some(ctor))
        .unwrap();
    let a = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    let per_slab = c.geometry().objects;
    assert_eq!(
        CTOR_CALLS.load(Ordering::Relaxed),
        per_slab,
        "once per object of the new slab"
    );
    // SAFETY: a fresh 64-byte object.
    assert!(unsafe { std::slice::from_raw_parts(a.as_ptr(), 64) }
        .iter()
        .all(|&b| b == 0x42));
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, a.as_ptr()) }.unwrap();
    let b = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    assert_eq!(
        CTOR_CALLS.load(Ordering::Relaxed),
        per_slab,
        "reuse does not construct again"
    );
    // With a constructor the free pointer lives outside the object.
    assert!(c.geometry().offset >= 64);
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, b.as_ptr()) }.unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a memory-sized bulk request: Stacked Borrows makes it quadratic"
)]
fn zalloc_bulk_and_node() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("bulk_obj", 96, 0, SlabFlags::NONE, None)
        .unwrap();
    let a = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: our object.
    unsafe { a.as_ptr().write_bytes(0xee, 96) };
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, a.as_ptr()) }.unwrap();
    let zeroed = |z: std::ptr::NonNull<u8>| {
        // SAFETY: our object, of 96 bytes.
        assert!(unsafe { std::slice::from_raw_parts(z.as_ptr(), 96) }
            .iter()
            .all(|&b| b == 0));
    };
    let (z, _) = reuse(&k, c, a, zeroed);
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, z.as_ptr()) }.unwrap();
    let mut v = vec![std::ptr::null_mut(); 100];
    assert_eq!(k.kmem_cache_alloc_bulk(c, GFP_KERNEL, &mut v), Ok(100));
    assert!(v.iter().all(|p| !p.is_null()));
    // SAFETY: each freed once.
    unsafe { k.kmem_cache_free_bulk(c, &v) }.unwrap();
    // All or nothing: a bulk request larger than memory fails and leaves nothing allocated.
    let big = k
        .kmem_cache_create("bulk_big", 4096, 0, SlabFlags::NONE, None)
        .unwrap();
    let before = free_pages(&k);
    let mut huge = vec![std::ptr::null_mut(); MEM / 4096 + 64];
    assert_eq!(
        k.kmem_cache_alloc_bulk(big, GFP_KERNEL | __GFP_NOWARN, &mut huge),
        Err(Error::NoMemory)
    );
    assert!(huge.iter().all(|p| p.is_null()));
    k.kmem_cache_shrink(big);
    assert_eq!(free_pages(&k), before);
    let n = k.kmem_cache_alloc_node(c, GFP_KERNEL, 0).unwrap();
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, n.as_ptr()) }.unwrap();
}

#[test]
fn destroy_with_objects_reports_them_and_keeps_the_cache() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("leaky", 128, 0, SLAB_STORE_USER, None)
        .unwrap();
    let a = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: testing the leak report; `c` stays alive on failure.
    assert_eq!(unsafe { k.kmem_cache_destroy(c) }, Err(Error::Busy));
    let p = k.platform();
    assert!(p.reported("kmem_cache_destroy leaky: Slab cache still has objects when called from"));
    assert!(p.reported("Objects remaining in leaky on __kmem_cache_shutdown()"));
    assert!(p.reported(&format!("Object 0x{:x} @offset=", a.as_ptr() as usize)));
    assert!(p.reported("Allocated in kmem/tests/slab.rs"));
    // SAFETY: `a` came from `c` and is still allocated (the destroy above was refused); it is freed
    // once, here, and not used afterwards.
    unsafe { k.kmem_cache_free(c, a.as_ptr()) }.unwrap();
    // SAFETY: `a`, the only object of `c`, was freed above, so nothing of `c` is live; `c` is not
    // used after this destroy.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "covered natively; its unsafe paths run under Miri in other tests"
)]
fn caches_merge_by_linux_rules_and_show_as_aliases() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let a = k
        .kmem_cache_create("merge_a", 100, 0, SlabFlags::NONE, None)
        .unwrap();
    let b = k
        .kmem_cache_create("merge_b", 100, 0, SlabFlags::NONE, None)
        .unwrap();
    assert!(std::ptr::eq(a, b), "same size and flags: merged");
    let c = k
        .kmem_cache_create("merge_c", 100, 0, SLAB_RECLAIM_ACCOUNT, None)
        .unwrap();
    assert!(!std::ptr::eq(a, c), "different SLAB_MERGE_SAME flags");
    let d = k
        .kmem_cache_create("merge_d", 100, 0, SLAB_POISON, None)
        .unwrap();
    assert!(
        !std::ptr::eq(a, d) && !std::ptr::eq(c, d),
        "debug caches never merge"
    );
    let e = k
        .kmem_cache_create("merge_e", 100, 0, SlabFlags::NONE, Some(ctor))
        .unwrap();
    assert!(!std::ptr::eq(a, e), "caches with a constructor never merge");
    let f = k
        .kmem_cache_create("merge_f", 100, 0, SLAB_NO_MERGE, None)
        .unwrap();
    assert!(!std::ptr::eq(a, f));
    let mut s = String::new();
    kmem::proc::slab_aliases(&k, &mut s).unwrap();
    assert!(s.contains("merge_b -> "), "{s}");
    // Destroying an alias only drops a reference.
    // SAFETY: merge_b's handle is not used again; merge_a stays alive.
    unsafe { k.kmem_cache_destroy(b) }.unwrap();
    let o = k.kmem_cache_alloc(a, GFP_KERNEL).unwrap();
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(a, o.as_ptr()) }.unwrap();

    let mut m2 = vec![0u8; MEM];
    let k2 = boot_with(
        &mut m2,
        1,
        SlabParams {
            nomerge: true,
            ..SlabParams::default()
        },
    );
    let a = k2
        .kmem_cache_create("nm_a", 100, 0, SlabFlags::NONE, None)
        .unwrap();
    let b = k2
        .kmem_cache_create("nm_b", 100, 0, SlabFlags::NONE, None)
        .unwrap();
    assert!(!std::ptr::eq(a, b), "slab_nomerge");
}

#[test]
fn kmalloc_sizes_types_and_large() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    assert_eq!(k.kmalloc(0, GFP_KERNEL).unwrap().as_ptr(), ZERO_SIZE_PTR);
    // SAFETY: NULL and ZERO_SIZE_PTR are no-ops.
    unsafe {
        k.kfree(std::ptr::null_mut()).unwrap();
        k.kfree(ZERO_SIZE_PTR).unwrap();
    }
    for (size, class) in [
        (1, 8),
        (8, 8),
        (9, 16),
        (65, 96),
        (96, 96),
        (97, 128),
        (150, 192),
        (193, 256),
        (4000, 4096),
        (8192, 8192),
    ] {
        let p = k.kmalloc(size, GFP_KERNEL).unwrap();
        assert_eq!(k.ksize(p.as_ptr()), class, "size {size}");
        assert_eq!(
            p.as_ptr() as usize
                % class
                    .min(4096)
                    .next_power_of_two()
                    .min(class & class.wrapping_neg()),
            0
        );
        // SAFETY: freed once.
        unsafe { k.kfree(p.as_ptr()) }.unwrap();
    }
    let before = free_pages(&k);
    let big = k.kmalloc(8193, GFP_KERNEL).unwrap();
    assert_eq!(k.ksize(big.as_ptr()), 16384, "order-2 compound page");
    assert_eq!(big.as_ptr() as usize % PAGE_SIZE, 0);
    assert_eq!(k.kmalloc_large_pages(), 4);
    // SAFETY: freed once.
    unsafe { k.kfree(big.as_ptr()) }.unwrap();
    assert_eq!(free_pages(&k), before);
    assert_eq!(
        k.kmalloc(5 << 20, GFP_KERNEL).err(),
        Some(Error::InvalidArgument)
    );
    assert!(k.platform().reported("MAX_PAGE_ORDER"));
    k.platform().clear_reports();
    assert!(k.kmalloc(5 << 20, GFP_KERNEL | __GFP_NOWARN).is_err());
    assert!(!k.platform().reported("MAX_PAGE_ORDER"));
    assert_eq!(
        k.kmalloc_array(usize::MAX / 2, 3, GFP_KERNEL).err(),
        Some(Error::NoMemory)
    );
    assert_eq!(
        k.kcalloc(1 << 40, 1 << 40, GFP_KERNEL).err(),
        Some(Error::NoMemory)
    );
    // Types by GFP, with Linux's priority.
    let name = |g: Gfp| k.kmalloc_slab(64, g).unwrap().name().to_string();
    assert_eq!(name(GFP_KERNEL), "kmalloc-64");
    assert_eq!(name(GFP_KERNEL_ACCOUNT), "kmalloc-cg-64");
    assert_eq!(
        name(GFP_KERNEL | __GFP_RECLAIMABLE | __GFP_ACCOUNT),
        "kmalloc-rcl-64"
    );
    assert_eq!(name(GFP_KERNEL_ACCOUNT | __GFP_DMA), "dma-kmalloc-64");
    let d = k.kmalloc(64, GFP_DMA).unwrap();
    assert!(
        d.as_ptr() as usize - k.platform().direct_map_base() < 16 << 20,
        "DMA objects live in ZONE_DMA"
    );
    // SAFETY: freed once.
    unsafe { k.kfree(d.as_ptr()) }.unwrap();
    // __GFP_HIGHMEM is a caller bug: fixed up with Linux's warning.
    let h = k.kmalloc(32, GFP_KERNEL | __GFP_HIGHMEM).unwrap();
    assert!(k.platform().reported(
        "Unexpected gfp: 0x2 (__GFP_HIGHMEM). Fixing up to gfp: 0xcc0 (GFP_KERNEL). Fix your code!"
    ));
    // SAFETY: freed once.
    unsafe { k.kfree(h.as_ptr()) }.unwrap();
}

#[test]
fn kzalloc_krealloc_kmemdup_kstrdup_kfree_sensitive() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let z = k.kzalloc(100, GFP_KERNEL).unwrap();
    // SAFETY: our 128-byte object (ksize).
    let s = unsafe { std::slice::from_raw_parts_mut(z.as_ptr(), 128) };
    assert!(s[..100].iter().all(|&b| b == 0));
    s[..100].fill(7);
    // In place: 100 -> 120 fits kmalloc-128.
    // SAFETY: `z` is ours; replaced by the result.
    let r = unsafe { k.krealloc(z.as_ptr(), 120, GFP_KERNEL | __GFP_ZERO) }.unwrap();
    assert_eq!(r, z);
    // Grow: moves, keeps contents, the new tail is zero.
    // SAFETY: as above.
    let g = unsafe { k.krealloc(r.as_ptr(), 1000, GFP_KERNEL | __GFP_ZERO) }.unwrap();
    assert_ne!(g, r);
    // SAFETY: our 1024-byte object.
    let gs = unsafe { std::slice::from_raw_parts(g.as_ptr(), 1000) };
    assert!(gs[..100].iter().all(|&b| b == 7) && gs[128..].iter().all(|&b| b == 0));
    // Size 0 frees.
    assert_eq!(
        // SAFETY: `g` is the live kmalloc object `krealloc` returned above; size 0 frees it, and
        // `g` is not used afterwards.
        unsafe { k.krealloc(g.as_ptr(), 0, GFP_KERNEL) }
            .unwrap()
            .as_ptr(),
        ZERO_SIZE_PTR
    );
    let d = k.kmemdup(b"hello", GFP_KERNEL).unwrap();
    assert_eq!(
        // SAFETY: `d` is a live kmalloc object holding `kmemdup`'s 5-byte copy of "hello": 5
        // initialised bytes, not written while the slice lives.
        unsafe { std::slice::from_raw_parts(d.as_ptr(), 5) },
        b"hello"
    );
    let t = k.kstrdup("kmem", GFP_KERNEL).unwrap();
    assert_eq!(
        // SAFETY: `t` is a live kmalloc object holding `kstrdup`'s copy of "kmem" and its NUL: 5
        // initialised bytes, not written while the slice lives.
        unsafe { std::slice::from_raw_parts(t.as_ptr(), 5) },
        b"kmem\0"
    );
    // SAFETY: freed once each.
    unsafe {
        k.kfree(d.as_ptr()).unwrap();
        k.kfree(t.as_ptr()).unwrap();
    }
    // kfree_sensitive clears the object: the same object comes back zeroed
    // (from kmalloc, which does not clear it), once the main sheaf's
    // objects are used up.
    let x = k.kmalloc(64, GFP_KERNEL).unwrap();
    // SAFETY: our object.
    unsafe { x.as_ptr().write_bytes(0xaa, 64) };
    // SAFETY: freed once.
    unsafe { k.kfree_sensitive(x.as_ptr()) }.unwrap();
    let (y, _) = come_back(
        k.kmalloc_slab(64, GFP_KERNEL).unwrap().sheaf_capacity(),
        || k.kmalloc(64, GFP_KERNEL).unwrap(),
        // SAFETY: each object is allocated by `come_back` and freed once.
        |o| unsafe { k.kfree(o.as_ptr()) }.unwrap(),
        x,
        |_| (),
    );
    // SAFETY: our object.
    assert!(unsafe { std::slice::from_raw_parts(y.as_ptr(), 64) }
        .iter()
        .all(|&b| b == 0));
    // kfree finds the cache of an object of a named cache too.
    let c = k
        .kmem_cache_create("kfree_me", 40, 0, SlabFlags::NONE, None)
        .unwrap();
    let o = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: freed once each.
    unsafe {
        k.kfree(o.as_ptr()).unwrap();
        k.kfree(y.as_ptr()).unwrap();
    }
}

#[test]
fn bad_frees_are_reported_and_refused() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let p = k.platform();
    let a = k
        .kmem_cache_create("bad_a", 64, 0, SLAB_NO_MERGE, None)
        .unwrap();
    let b = k
        .kmem_cache_create("bad_b", 64, 0, SLAB_NO_MERGE, None)
        .unwrap();
    let x = k.kmem_cache_alloc(a, GFP_KERNEL).unwrap();
    // Wrong cache.
    assert_eq!(
        // SAFETY: deliberate bad input: `x` is an object of `a` freed to cache `b`; kmem must
        // refuse it, and `x` stays allocated.
        unsafe { k.kmem_cache_free(b, x.as_ptr()) },
        Err(Error::InvalidArgument)
    );
    assert!(p.reported("Wrong slab cache. bad_b but object is from bad_a"));
    // The middle of an object.
    assert_eq!(
        // SAFETY: `add(8)` stays inside `x`'s 64-byte object; freeing the middle of an object is
        // deliberate bad input that kmem must refuse, so nothing is freed.
        unsafe { k.kfree(x.as_ptr().add(8)) },
        Err(Error::InvalidArgument)
    );
    assert!(p.reported("BUG bad_a (Not tainted): Invalid object pointer"));
    assert!(p.reported("@offset=8"));
    // Double free at the head of the CPU's sheaf.
    // SAFETY: `x` came from `a` and is still allocated (both frees above were refused); it is freed
    // once, here.
    unsafe { k.kmem_cache_free(a, x.as_ptr()) }.unwrap();
    assert_eq!(
        // SAFETY: a deliberate double free of `x`: kmem must detect and refuse it; the test does
        // not dereference `x`.
        unsafe { k.kmem_cache_free(a, x.as_ptr()) },
        Err(Error::BadState)
    );
    assert!(p.reported("BUG bad_a (Not tainted): Object already free"));
    // A page that is neither slab nor kmalloc_large.
    let pg = k.__get_free_page(GFP_KERNEL).unwrap();
    // SAFETY: deliberate bad input: `pg` is a plain page, neither a slab object nor a kmalloc_large
    // block; kfree must refuse it, and the page is freed properly below.
    assert_eq!(unsafe { k.kfree(pg.as_ptr()) }, Err(Error::InvalidArgument));
    assert!(p.reported("is neither a slab object nor a kmalloc_large page"));
    k.free_page(pg.as_ptr()).unwrap();
    // Memory the allocator does not manage.
    let local = [0u64; 4];
    assert_eq!(
        // SAFETY: deliberate bad input: a stack array the allocator does not manage; kfree must
        // refuse it after looking up its address, without dereferencing it.
        unsafe { k.kfree(local.as_ptr() as *mut u8) },
        Err(Error::BadAddress)
    );
    // ksize of garbage is 0 with a report.
    assert_eq!(k.ksize(local.as_ptr() as *const u8), 0);
    // The caches still work.
    let y = k.kmem_cache_alloc(a, GFP_KERNEL).unwrap();
    // SAFETY: `y` was just allocated from `a`; it is freed once, here, and not used afterwards.
    unsafe { k.kmem_cache_free(a, y.as_ptr()) }.unwrap();
}

#[test]
fn object_start_check_covers_the_slab_edges() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let p = k.platform();
    let slab_base = |o: *mut u8| {
        let head = k.compound_head(k.virt_to_page(o).unwrap());
        k.page_address(head).unwrap().as_ptr()
    };
    // The left red zone in front of the first object.
    let rz = k
        .kmem_cache_create("edge_rz", 64, 0, SLAB_RED_ZONE, None)
        .unwrap();
    assert!(rz.geometry().red_left_pad > 0);
    let o = k.kmem_cache_alloc(rz, GFP_KERNEL).unwrap();
    let base = slab_base(o.as_ptr());
    assert_eq!(
        // SAFETY: deliberate bad input: `base` is the start of the slab, in the left red zone
        // before its first object; kmem must refuse the free.
        unsafe { k.kmem_cache_free(rz, base) },
        Err(Error::InvalidArgument)
    );
    assert!(p.reported("BUG edge_rz (Not tainted): Invalid object pointer"));
    assert!(p.reported("is before the first object"));
    // SAFETY: `o` came from `rz` and is still allocated (the free above was refused); it is freed
    // once, here, and not used afterwards.
    unsafe { k.kmem_cache_free(rz, o.as_ptr()) }.unwrap();
    // The bytes after the last object of a slab.
    let c = k
        .kmem_cache_create("edge_96", 96, 0, SLAB_NO_MERGE, None)
        .unwrap();
    let g = *c.geometry();
    // 42 objects of 96 bytes leave 64 bytes: `past` is where a 43rd
    // object would start, so only the object count refuses it.
    assert!(g.leftover() > 0, "{g:?}");
    let o = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    let past = slab_base(o.as_ptr()).wrapping_add(g.objects * g.size);
    assert_eq!(
        // SAFETY: deliberate bad input: `past` points into the slab's leftover bytes after its last
        // object; kmem must refuse the free.
        unsafe { k.kmem_cache_free(c, past) },
        Err(Error::InvalidArgument)
    );
    assert!(p.reported("BUG edge_96 (Not tainted): Invalid object pointer"));
    assert!(p.reported("is past the last object of edge_96 (42 objects) at @offset=4032"));
    // SAFETY: `o` came from `c` and is still allocated (the free above was refused); it is freed
    // once, here, and not used afterwards.
    unsafe { k.kmem_cache_free(c, o.as_ptr()) }.unwrap();
    // Objects in the tail pages of a multi-page slab are found through the
    // head page; a pointer into one of them is still refused.
    let big: Vec<_> = (0..4)
        .map(|_| k.kmalloc(8192, GFP_KERNEL).unwrap())
        .collect();
    assert!(k.kmalloc_slab(8192, GFP_KERNEL).unwrap().geometry().order > 0);
    for o in &big {
        assert_eq!(
            // SAFETY: `add(PAGE_SIZE)` stays inside `o`'s 8192-byte kmalloc object (in a tail page
            // of its slab); freeing the middle of an object is deliberate bad input that kmem must
            // refuse.
            unsafe { k.kfree(o.as_ptr().add(PAGE_SIZE)) },
            Err(Error::InvalidArgument)
        );
    }
    for o in big {
        // SAFETY: `o` is a live kmalloc object (the frees above were refused); it is freed once,
        // here, and not used afterwards.
        unsafe { k.kfree(o.as_ptr()) }.unwrap();
    }
    // A double free is caught at the top of the sheaf, also when that
    // object emptied the sheaf before (the guard slot below it is null).
    let x = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: `x` was just allocated from `c`; it is freed once, here (the call below is a
    // deliberate double free).
    unsafe { k.kmem_cache_free(c, x.as_ptr()) }.unwrap();
    assert_eq!(
        // SAFETY: a deliberate double free of `x`: kmem must detect and refuse it; the test does
        // not dereference `x`.
        unsafe { k.kmem_cache_free(c, x.as_ptr()) },
        Err(Error::BadState)
    );
}

#[test]
fn consistency_checks_catch_every_double_free() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create(
            "dbl",
            64,
            0,
            SLAB_CONSISTENCY_CHECKS | SLAB_STORE_USER,
            None,
        )
        .unwrap();
    let a = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    let b = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: testing double-free detection; nothing is used after a free.
    unsafe {
        k.kmem_cache_free(c, a.as_ptr()).unwrap();
        k.kmem_cache_free(c, b.as_ptr()).unwrap();
        assert_eq!(
            k.kmem_cache_free(c, a.as_ptr()),
            Err(Error::BadState),
            "not at the head, still caught"
        );
    }
    assert!(k
        .platform()
        .reported("BUG dbl (Not tainted): Object already free"));
    assert!(k.platform().reported("Freed in kmem/tests/slab.rs"));
}

#[test]
fn red_zone_overwrites_are_caught_with_call_sites() {
    // slub_kunit's test_clobber_zone / test_clobber_redzone_free.
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("rz", 64, 0, SLAB_RED_ZONE | SLAB_STORE_USER, None)
        .unwrap();
    let a = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: deliberately writing one byte into the right red zone, which
    // lies inside the object's slot (memory the allocator owns).
    unsafe { *a.as_ptr().add(64) = 0x78 };
    assert_eq!(
        // SAFETY: deliberate bad input: `a`'s right red zone was overwritten above; kmem must
        // detect it and refuse the free, so `a` is not freed.
        unsafe { k.kmem_cache_free(c, a.as_ptr()) },
        Err(Error::BadState)
    );
    let p = k.platform();
    assert!(p.reported("BUG rz (Not tainted): Right Redzone overwritten"));
    assert!(p.reported("@offset=64. First byte 0x78 instead of 0xcc"));
    assert!(p.reported("Allocated in kmem/tests/slab.rs"));
    assert!(p.reported(&format!("Object 0x{:x} @offset=", a.as_ptr() as usize)));
    assert!(p.reported("FIX rz: Object at"));
    let b = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: one byte into the left red zone, inside the slot.
    unsafe { *b.as_ptr().sub(1) = 0x11 };
    assert_eq!(
        // SAFETY: deliberate bad input: `b`'s left red zone was overwritten above; kmem must detect
        // it and refuse the free, so `b` is not freed.
        unsafe { k.kmem_cache_free(c, b.as_ptr()) },
        Err(Error::BadState)
    );
    assert!(p.reported("Left Redzone overwritten"));
    // An intact object frees fine.
    let d = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, d.as_ptr()) }.unwrap();
}

#[test]
fn write_after_free_is_caught_by_poisoning() {
    // slub_kunit's test_first_word / test_clobber_50th_byte.
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("poison", 64, 0, SLAB_POISON | SLAB_STORE_USER, None)
        .unwrap();
    let a = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // Allocated objects still carry the free poison (uninitialised memory shows up).
    // SAFETY: our object.
    assert_eq!(unsafe { *a.as_ptr() }, POISON_FREE);
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, a.as_ptr()) }.unwrap();
    // SAFETY: deliberately writing into a freed object (memory the arena
    // still owns) to simulate a use after free.
    unsafe { *a.as_ptr().add(50) = 0x12 };
    // The next allocation meets the damaged object, reports it, takes its
    // slab out of use, and hands out a good object from elsewhere.
    let b = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    assert_ne!(a, b);
    let p = k.platform();
    assert!(p.reported("BUG poison (Not tainted): Poison overwritten"));
    assert!(p.reported("@offset=50. First byte 0x12 instead of 0x6b"));
    assert!(p.reported("Freed in kmem/tests/slab.rs"));
    assert!(p.reported("FIX poison: Marking all objects used"));
    // SAFETY: freed once.
    unsafe { k.kmem_cache_free(c, b.as_ptr()) }.unwrap();
}

#[test]
fn corrupted_free_pointer_is_isolated() {
    // slub_kunit's test_next_pointer.
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("fp", 64, 0, SLAB_CONSISTENCY_CHECKS, None)
        .unwrap();
    let a = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    let b = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    // SAFETY: freed once each.
    unsafe {
        k.kmem_cache_free(c, b.as_ptr()).unwrap();
        k.kmem_cache_free(c, a.as_ptr()).unwrap();
    }
    // `a` heads the freelist now; scribble over its free pointer.
    let off = c.geometry().offset;
    // SAFETY: deliberately corrupting a free object's metadata (memory the arena owns).
    unsafe { (a.as_ptr().add(off) as *mut u64).write_unaligned(0x1234_5678) };
    let x = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    assert_eq!(x, a);
    assert!(k
        .platform()
        .reported("BUG fp (Not tainted): Freepointer corrupt"));
    assert!(k.platform().reported("FIX fp: Isolate corrupted freechain"));
    // Allocation goes on from fresh memory.
    let y = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    assert_ne!(y, a);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "covered natively; its unsafe paths run under Miri in other tests"
)]
fn slab_debug_boot_option_applies_to_every_cache() {
    let mut m = vec![0u8; MEM];
    let dbg = parse_slab_debug("FZPU").unwrap();
    let k = boot_with(
        &mut m,
        1,
        SlabParams {
            debug: SlabDebug::all(dbg),
            ..SlabParams::default()
        },
    );
    let c = k
        .kmem_cache_create("plain", 64, 0, SlabFlags::NONE, None)
        .unwrap();
    assert!(c.flags().contains(dbg));
    assert!(k
        .kmalloc_slab(64, GFP_KERNEL)
        .unwrap()
        .flags()
        .contains(SLAB_RED_ZONE));
    kmalloc_64_overrun_is_caught(&k);
    assert_eq!(parse_slab_debug("X"), Err(Error::InvalidArgument));
}

/// A byte written past a kmalloc-64 object is found by its red zone: the
/// free is refused (the object stays allocated) and reported.
fn kmalloc_64_overrun_is_caught(k: &Kmem<ArenaPlatform<'_>>) {
    let a = k.kmalloc(64, GFP_KERNEL).unwrap();
    // SAFETY: one byte past the object, into its red zone.
    unsafe { *a.as_ptr().add(64) = 0 };
    // SAFETY: deliberate bad input: `a`'s right red zone was overwritten above; kfree must detect
    // it and refuse the free, so `a` is not freed.
    assert_eq!(unsafe { k.kfree(a.as_ptr()) }, Err(Error::BadState));
    assert!(k
        .platform()
        .reported("BUG kmalloc-64 (Not tainted): Right Redzone overwritten"));
}

/// `slab_debug=` with cache lists, as Linux 6.18 reads it: the first list
/// that names a cache gives its flags, a `*` ends a prefix, the global
/// block covers the rest, and kmalloc's caches are named like any other.
#[test]
#[cfg_attr(
    miri,
    ignore = "covered natively; its unsafe paths run under Miri in other tests"
)]
fn slab_debug_lists_name_the_caches_they_debug() {
    let mut m = vec![0u8; MEM];
    let debug = SlabDebug::parse("U;FZ,kmalloc-64,tagged;P,kmalloc-*,tag*;-,quiet").unwrap();
    let k = boot_with(
        &mut m,
        1,
        SlabParams {
            debug,
            ..SlabParams::default()
        },
    );
    let flags = |size| k.kmalloc_slab(size, GFP_KERNEL).unwrap().flags() & SLAB_DEBUG_FLAGS;
    assert_eq!(flags(64), SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE);
    assert_eq!(flags(128), SLAB_POISON, "kmalloc-* is a prefix");
    let cache = |name| {
        k.kmem_cache_create(name, 40, 0, SlabFlags::NONE, None)
            .unwrap()
            .flags()
            & SLAB_DEBUG_FLAGS
    };
    assert_eq!(
        cache("tagged"),
        SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE,
        "first list wins"
    );
    assert_eq!(cache("tagless"), SLAB_POISON);
    assert_eq!(cache("quiet"), SlabFlags::NONE);
    assert_eq!(cache("other"), SLAB_STORE_USER, "the global block");
    // SLAB_NOLEAKTRACE drops owner tracking from the global flags only.
    let noleak = |name| {
        k.kmem_cache_create(name, 40, 0, SLAB_NOLEAKTRACE, None)
            .unwrap()
            .flags()
            & SLAB_DEBUG_FLAGS
    };
    assert_eq!(noleak("leaky"), SlabFlags::NONE);
    assert_eq!(noleak("tagged_too"), SLAB_POISON, "tag* names it");
    let no_user = k
        .kmem_cache_create("plainer", 40, 0, SLAB_NO_USER_FLAGS, None)
        .unwrap();
    assert_eq!(no_user.flags() & SLAB_DEBUG_FLAGS, SlabFlags::NONE);

    // Only the named cache checks: a red zone overrun is caught in
    // kmalloc-64 and not in kmalloc-32 under lists without a global block.
    let mut m = vec![0u8; MEM];
    let k = boot_with(
        &mut m,
        1,
        SlabParams {
            debug: SlabDebug::parse("Z,kmalloc-64").unwrap(),
            ..SlabParams::default()
        },
    );
    assert_eq!(
        k.kmalloc_slab(32, GFP_KERNEL).unwrap().flags() & SLAB_DEBUG_FLAGS,
        SlabFlags::NONE
    );
    kmalloc_64_overrun_is_caught(&k);
}

/// Every malformed `slab_debug=` value is refused whole.
#[test]
fn slab_debug_refuses_what_it_cannot_read() {
    for bad in [
        "Q",
        "FZ,",
        "FZ,,dentry",
        "T",
        "F,a;Z,b,",
        &"F,x".repeat(100),
    ] {
        assert_eq!(
            SlabDebug::parse(bad),
            Err(Error::InvalidArgument),
            "{bad:?}"
        );
    }
    let all = SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER;
    assert_eq!(
        SlabDebug::parse("").unwrap().flags_for("any"),
        all,
        "bare slab_debug"
    );
    assert_eq!(
        SlabDebug::parse(",dentry").unwrap().flags_for("dentry"),
        all
    );
    assert_eq!(
        SlabDebug::parse("FZ-P").unwrap().flags_for("any"),
        SLAB_POISON
    );
    assert_eq!(
        SlabDebug::parse(";;F;;").unwrap().flags_for("any"),
        SLAB_CONSISTENCY_CHECKS
    );
    // A `*` inside a name ends the prefix there, as in Linux.
    let d = SlabDebug::parse("Z,kma*-64").unwrap();
    assert_eq!(d.flags_for("kmalloc-8"), SLAB_RED_ZONE);
    assert_eq!(d.flags_for("dentry"), SlabFlags::NONE);
}

#[test]
fn freelist_pointers_are_obfuscated_and_randomised() {
    let mut m = vec![0u8; MEM];
    let k = boot_with(
        &mut m,
        1,
        SlabParams {
            freelist_random: true,
            ..SlabParams::default()
        },
    );
    let c = k
        .kmem_cache_create("hard", 64, 0, SLAB_CONSISTENCY_CHECKS, None)
        .unwrap();
    let objs: Vec<usize> = (0..8)
        .map(|_| k.kmem_cache_alloc(c, GFP_KERNEL).unwrap().as_ptr() as usize)
        .collect();
    let mut sorted = objs.clone();
    sorted.sort_unstable();
    assert_ne!(
        objs, sorted,
        "a fresh slab hands out objects in random order"
    );
    // SAFETY: freed once each.
    unsafe {
        k.kmem_cache_free(c, objs[0] as *mut u8).unwrap();
        k.kmem_cache_free(c, objs[1] as *mut u8).unwrap();
    }
    // objs[1] heads the freelist and points to objs[0], but not in clear.
    // SAFETY: reading the free pointer word of a free object (arena memory).
    let raw = unsafe { ((objs[1] + c.geometry().offset) as *const u64).read_unaligned() };
    assert_ne!(raw as usize, objs[0], "CONFIG_SLAB_FREELIST_HARDENED");
    assert_eq!(
        k.kmem_cache_alloc(c, GFP_KERNEL).unwrap().as_ptr() as usize,
        objs[1]
    );
    assert_eq!(
        k.kmem_cache_alloc(c, GFP_KERNEL).unwrap().as_ptr() as usize,
        objs[0]
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "covered natively; its unsafe paths run under Miri in other tests"
)]
fn meminit_objects_and_pages_are_zeroed_when_asked() {
    // test_meminit.c: __GFP_ZERO on pages, kmalloc and caches (with and
    // without constructors) always gives zeroed memory.
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    for order in 0..3 {
        let p = k.__get_free_pages(GFP_KERNEL, order).unwrap();
        // SAFETY: our pages.
        unsafe { p.as_ptr().write_bytes(0xff, PAGE_SIZE << order) };
        k.free_pages(p.as_ptr(), order).unwrap();
        let q = k.__get_free_pages(GFP_KERNEL | __GFP_ZERO, order).unwrap();
        assert!(
            // SAFETY: `q` is the start of 2^order pages from `__get_free_pages`, zeroed by
            // __GFP_ZERO (so initialised) and only read here, before they are freed below.
            unsafe { std::slice::from_raw_parts(q.as_ptr(), PAGE_SIZE << order) }
                .iter()
                .all(|&b| b == 0)
        );
        k.free_pages(q.as_ptr(), order).unwrap();
    }
    for size in [1, 7, 64, 100, 1000, 4096, 8192, 20000] {
        let p = k.kmalloc(size, GFP_KERNEL).unwrap();
        // SAFETY: our object.
        unsafe { p.as_ptr().write_bytes(0xff, size) };
        // SAFETY: freed once.
        unsafe { k.kfree(p.as_ptr()) }.unwrap();
        let q = k.kzalloc(size, GFP_KERNEL).unwrap();
        assert!(
            // SAFETY: `q` is a live kzalloc object of at least `size` bytes, zeroed (so
            // initialised) and only read here, before the kfree below.
            unsafe { std::slice::from_raw_parts(q.as_ptr(), size) }
                .iter()
                .all(|&b| b == 0),
            "size {size}"
        );
        // SAFETY: freed once.
        unsafe { k.kfree(q.as_ptr()) }.unwrap();
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "covered natively; its unsafe paths run under Miri in other tests"
)]
fn slabinfo_and_meminfo_account_slab_pages() {
    let mut m = vec![0u8; MEM];
    // Two CPUs, as the geometry depends on the CPU count.
    let k = boot_with(&mut m, 2, SlabParams::default());
    let c = k
        .kmem_cache_create("acct", 512, 0, SLAB_RECLAIM_ACCOUNT | SLAB_NO_MERGE, None)
        .unwrap();
    let objs: Vec<_> = (0..40)
        .map(|_| k.kmem_cache_alloc(c, GFP_KERNEL).unwrap())
        .collect();
    let mut s = String::new();
    kmem::proc::slabinfo(&k, &mut s).unwrap();
    assert!(s.starts_with("slabinfo - version: 2.1\n# name            <active_objs>"));
    let line = s.lines().find(|l| l.starts_with("acct ")).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    let (active, total): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    assert!(active >= 40 && total >= active, "{line}");
    assert_eq!(&f[3..6], ["512", "16", "2"]);
    let mut mi = String::new();
    kmem::proc::meminfo(&k, &mut mi).unwrap();
    let kb = |name: &str| -> u64 {
        mi.lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(kb("SReclaimable:") >= 40 * 512 / 1024);
    assert_eq!(kb("Slab:"), kb("SReclaimable:") + kb("SUnreclaim:"));
    for o in objs {
        // SAFETY: freed once.
        unsafe { k.kmem_cache_free(c, o.as_ptr()) }.unwrap();
    }
}

#[test]
fn kbox_kvec_and_typed_caches_on_a_real_machine() {
    use kmem::alloc::{KBox, KVec, Kmalloc};
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let km = Kmalloc::new(&k);
    let b = KBox::new([7u8; 100], km, GFP_KERNEL).unwrap();
    assert_eq!(k.ksize(&*b as *const [u8; 100] as *const u8), 128);
    drop(b);
    let n = if cfg!(miri) { 1200 } else { 20_000 };
    let mut v = KVec::new(km);
    for i in 0..n {
        v.push(i as u64, GFP_KERNEL).unwrap();
    }
    assert_eq!(v.iter().sum::<u64>(), (n as u64 - 1) * n as u64 / 2);
    assert!(
        k.kmalloc_large_pages() > 0,
        "a big vector lives in kmalloc_large pages"
    );
    drop(v);
    assert_eq!(k.kmalloc_large_pages(), 0);
    let z = KBox::new_uninit(km, GFP_KERNEL | __GFP_ZERO).unwrap();
    assert_eq!(
        // SAFETY: `z` was allocated with __GFP_ZERO, so its block is zeroed, and all-zero bytes are
        // a valid `u64` (0).
        *unsafe { KBox::<core::mem::MaybeUninit<u64>, _>::assume_init(z) },
        0
    );

    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Node {
        key: u64,
        _pad: [u8; 40],
    }
    impl Drop for Node {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    let cache = k
        .kmem_cache::<Node>("node_cache", SLAB_HWCACHE_ALIGN)
        .unwrap();
    let objs: Vec<_> = (0..50)
        .map(|i| {
            cache
                .alloc(
                    Node {
                        key: i,
                        _pad: [0; 40],
                    },
                    GFP_KERNEL,
                )
                .unwrap()
        })
        .collect();
    assert_eq!(objs.iter().map(|o| o.key).sum::<u64>(), 49 * 50 / 2);
    drop(objs);
    assert_eq!(DROPS.load(Ordering::Relaxed), 50);
    let s = cache.inner().cache();
    k.kmem_cache_shrink(s);
    assert_eq!(k.slab_totals(s).0, 0, "every object went back to its slab");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of objects: Stacked Borrows makes it quadratic"
)]
fn empty_slabs_beyond_min_partial_go_back_without_a_shrink() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("partial", 256, 0, SLAB_NO_MERGE, None)
        .unwrap();
    let n = if cfg!(miri) { 600 } else { 5000 };
    let objs: Vec<_> = (0..n)
        .map(|_| k.kmem_cache_alloc(c, GFP_KERNEL).unwrap())
        .collect();
    let peak = k.slab_totals(c).0;
    for o in objs {
        // SAFETY: freed once.
        unsafe { k.kmem_cache_free(c, o.as_ptr()) }.unwrap();
    }
    let left = k.slab_totals(c).0;
    // What stays: min_partial empty slabs plus those holding objects parked
    // in this CPU's two sheaves and the barn's.
    use kmem::slab::sheaf::BARN_SHEAVES;
    let parked = ((2 + BARN_SHEAVES) * c.sheaf_capacity()) as u64 / c.geometry().objects as u64 + 1;
    assert!(
        left <= c.min_partial() + parked + 1,
        "{left} of {peak} slabs left"
    );
    assert!(peak > 3 * left);
}

/// krealloc of an object already freed: the free of the old object is
/// refused (reported), and the object krealloc allocated for the move goes
/// back instead of leaking (found by the api_sequence fuzz target).
#[test]
#[cfg_attr(miri, ignore)] // no unsafe path of its own; natively only
fn krealloc_of_a_freed_object_is_refused_and_keeps_no_copy() {
    let mut mem = vec![0u8; 16 << 20];
    let k = boot_with(
        &mut mem,
        1,
        SlabParams {
            debug: kmem::slab::SlabDebug::all(kmem::slab::SLAB_CONSISTENCY_CHECKS),
            ..SlabParams::default()
        },
    );
    let active = |name: &str| {
        let mut n = None;
        kmem::proc::for_each_slabinfo(&k, |i| {
            if i.name == name {
                n = Some(i.active_objs);
            }
        });
        n.unwrap()
    };
    let p = k.kmalloc(100, GFP_KERNEL).unwrap();
    // SAFETY: a live object, freed once here.
    unsafe { k.kfree(p.as_ptr()) }.unwrap();
    let before = active("kmalloc-256");
    // SAFETY: a deliberate use after free: krealloc must refuse it.
    assert!(unsafe { k.krealloc(p.as_ptr(), 200, GFP_KERNEL) }.is_err());
    assert_eq!(active("kmalloc-256"), before, "no copy left behind");
}

#[test]
fn sheaves_come_at_first_use_and_go_back_on_shrink() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let booted = k.slab_meta_pages();
    let c = k
        .kmem_cache_create("lazy_sheaves", 64, 0, SlabFlags::NONE, None)
        .unwrap();
    // The cache's metadata has no sheaves: they come with the first use.
    let created = k.slab_meta_pages();
    let x = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    assert_eq!(k.slab_meta_pages(), created + 1, "a page of sheaves");
    // A shrink flushes the CPU's sheaves back to the pool and gives the
    // pool's pages back once no CPU or barn holds one.
    k.kmem_cache_shrink(c);
    assert_eq!(k.slab_meta_pages(), created);
    // The first free after that takes sheaves again and lands on the free
    // sheaf's top: a second free of the object is caught there.
    // SAFETY: `x` is live; it is freed once here.
    unsafe { k.kmem_cache_free(c, x.as_ptr()) }.unwrap();
    assert_eq!(k.slab_meta_pages(), created + 1);
    // SAFETY: a deliberate double free, which must be refused.
    let again = unsafe { k.kmem_cache_free(c, x.as_ptr()) };
    assert_eq!(again, Err(Error::BadState));
    assert!(k.platform().reported("freed twice in a row"));
    // SAFETY: no object of `c` is live.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
    assert_eq!(k.slab_meta_pages(), booted, "the sheaves' page went too");
}

/// fail_page_alloc armed to fail every page allocation, quietly, whatever
/// its order and flags; disarm with `set_probability(0)`.
fn fail_every_page_allocation<'a>(
    k: &'a Kmem<ArenaPlatform<'_>>,
) -> kmem::page_alloc::fail_page_alloc::FailPageAlloc<'a, ArenaPlatform<'a>> {
    let fp = k.fail_page_alloc();
    fp.set_probability(100).unwrap();
    fp.set_times(-1).unwrap();
    fp.set_verbose(0).unwrap();
    fp.set_ignore_gfp_wait(false);
    fp.set_min_order(0);
    fp
}

#[test]
fn without_memory_for_sheaves_objects_come_straight_from_the_slabs() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("no_sheaves", 64, 0, SlabFlags::NONE, None)
        .unwrap();
    // A slab with free objects, and no sheaves (the shrink gave them back;
    // the live object keeps the slab).
    let keep = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    k.kmem_cache_shrink(c);
    let meta = k.slab_meta_pages();
    // Every page allocation fails from here on.
    let fp = fail_every_page_allocation(&k);
    let y = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    assert_ne!(y, keep);
    assert_eq!(k.slab_meta_pages(), meta, "no page of sheaves was had");
    assert!(fp.injected() > 0);
    // Freed straight back to its slab, too; a double free of it is caught
    // at the slab's freelist head.
    // SAFETY: `y` is live; freed once here.
    unsafe { k.kmem_cache_free(c, y.as_ptr()) }.unwrap();
    // SAFETY: a deliberate double free, which must be refused.
    assert!(unsafe { k.kmem_cache_free(c, y.as_ptr()) }.is_err());
    assert!(k.platform().reported("Object already free"));
    fp.set_probability(0).unwrap();
    // SAFETY: `keep` is live; freed once.
    unsafe { k.kmem_cache_free(c, keep.as_ptr()) }.unwrap();
    // SAFETY: no object of `c` is live.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
}

/// Out of memory for a new slab, an allocation takes the free sheaf however
/// few objects it holds (the last pass of the sheaf allocation path), and
/// fails only once they are gone too.
#[test]
fn without_a_new_slab_the_free_sheafs_few_objects_serve_before_failing() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("last_pass", 64, 0, SlabFlags::NONE, None)
        .unwrap();
    let few = (c.sheaf_capacity() / 4).max(1);
    // The CPU's sheaves and a first slab; then no page allocation succeeds.
    let mut held = vec![k.kmem_cache_alloc(c, GFP_KERNEL).unwrap()];
    let fp = fail_every_page_allocation(&k);
    let gfp = GFP_KERNEL | __GFP_NOWARN;
    // Everything the sheaves and the slab hold.
    while let Ok(p) = k.kmem_cache_alloc(c, gfp) {
        held.push(p);
    }
    assert!(held.len() > few && fp.injected() > 0);
    // A few objects back, into the free sheaf: under half full, so an
    // allocation with memory to spare would take a new slab instead.
    let mut back = held.split_off(held.len() - few);
    for p in &back {
        // SAFETY: allocated above, freed once.
        unsafe { k.kmem_cache_free(c, p.as_ptr()) }.unwrap();
    }
    let mut again: Vec<_> = (0..few)
        .map(|_| {
            k.kmem_cache_alloc(c, gfp)
                .expect("the free sheaf's objects serve")
        })
        .collect();
    assert_eq!(k.kmem_cache_alloc(c, gfp), Err(Error::NoMemory));
    back.sort();
    again.sort();
    assert_eq!(again, back);
    fp.set_probability(0).unwrap();
    for p in held.iter().chain(&again) {
        // SAFETY: each is live and freed once.
        unsafe { k.kmem_cache_free(c, p.as_ptr()) }.unwrap();
    }
    // SAFETY: no object of `c` is live.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
}

/// kmalloc's and kfree's fast paths alone, in a section the caller
/// entered (what kmem-malloc's `malloc` and `free` run): objects from the
/// CPU's sheaves, zeroed under `__GFP_ZERO` even where the memory was
/// dirty; "not done", with nothing changed and nothing reported, for a
/// size past the caches, a pointer inside an object, a second free of the
/// object on top of the free sheaf, and an armed failslab.
#[test]
fn the_fast_paths_alone_run_in_the_callers_section() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let p = k.platform();
    // Dirty objects of kmalloc-64, freed: a sheaf's worth and more.
    let dirty: Vec<_> = (0..300)
        .map(|_| k.kmalloc(64, GFP_KERNEL).unwrap())
        .collect();
    for x in &dirty {
        // SAFETY: a live 64-byte object, written then freed once.
        unsafe {
            x.as_ptr().write_bytes(0xab, 64);
            k.kfree(x.as_ptr()).unwrap();
        }
    }
    p.clear_reports();
    let st = p.local_enter_leaf();
    // SAFETY: `st` is this thread's section of this machine, open until
    // local_exit_leaf below.
    let alloc = |size, gfp| unsafe { k.kmalloc_fastpath_in(&st, size, gfp) };
    // SAFETY: as above; `x` is a live object given up, or one the fast path
    // refuses without touching it (an interior pointer, a double free).
    let free = |x: *mut u8| unsafe { k.kfree_fastpath_in(&st, x) };
    let mut got = Vec::new();
    while let Some(x) = alloc(64, GFP_KERNEL | __GFP_ZERO) {
        // SAFETY: a live 64-byte object.
        assert!(unsafe { std::slice::from_raw_parts(x.as_ptr(), 64) }
            .iter()
            .all(|&b| b == 0));
        got.push(x);
        if got.len() == 50 {
            break;
        }
    }
    assert!(
        got.iter().any(|x| dirty.contains(x)),
        "the fast path handed out a dirtied object, zeroed"
    );
    assert_eq!(alloc(KMALLOC_MAX_CACHE_SIZE + 1, GFP_KERNEL), None);
    let x = got.pop().unwrap();
    assert!(!free(x.as_ptr().wrapping_add(8)));
    assert!(free(x.as_ptr()));
    assert!(!free(x.as_ptr()), "a double free on top");
    // An armed hook sends every allocation to kmalloc, which asks it.
    let fs = k.failslab();
    fs.set_probability(100).unwrap();
    fs.set_times(-1).unwrap();
    fs.set_verbose(0).unwrap();
    assert_eq!(alloc(64, GFP_KERNEL), None);
    fs.set_probability(0).unwrap();
    p.local_exit_leaf(st);
    assert!(!p.reported(""), "the fast paths report nothing");
    for x in got {
        // SAFETY: live objects, freed once.
        unsafe { k.kfree(x.as_ptr()) }.unwrap();
    }
}

/// `active_objs` of cache `name` in /proc/slabinfo.
fn active_objs<P: kmem::platform::Platform>(k: &Kmem<P>, name: &str) -> u64 {
    let mut s = String::new();
    kmem::proc::slabinfo(k, &mut s).unwrap();
    let line = s
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in slabinfo"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A CPU going offline (`slub_cpu_dead()`, done by the CPU itself with
/// `flush_cpu_slabs`) gives back the objects its sheaves held: they count
/// as in use until then, as in Linux's slabinfo.
#[test]
fn flush_cpu_slabs_returns_a_cpus_cached_objects() {
    let mut mem = vec![0u8; MEM];
    let k = boot_with(&mut mem, 2, SlabParams::default());
    k.platform().set_cpu(1);
    let before = active_objs(&k, "kmalloc-96");
    // Fewer than a sheaf holds, so that no full sheaf goes to the barn
    // (whose objects stay in use until the barn is flushed too).
    let cap = k.kmalloc_slab(96, GFP_KERNEL).unwrap().sheaf_capacity();
    let objs: Vec<_> = (0..cap / 2)
        .map(|_| k.kmalloc(96, GFP_KERNEL).unwrap())
        .collect();
    for o in objs {
        // SAFETY: not used again.
        unsafe { k.kfree(o.as_ptr()) }.unwrap();
    }
    let cached = active_objs(&k, "kmalloc-96");
    assert!(
        cached > before,
        "the sheaves hold objects: {cached} vs {before}"
    );
    // Another CPU's flush leaves CPU 1's sheaves alone.
    k.platform().set_cpu(0);
    k.flush_cpu_slabs();
    assert_eq!(active_objs(&k, "kmalloc-96"), cached);
    k.platform().set_cpu(1);
    k.flush_cpu_slabs();
    assert_eq!(active_objs(&k, "kmalloc-96"), before);
}
