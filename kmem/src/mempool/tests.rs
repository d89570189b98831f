//! Unit tests of the mempool on the arena (Miri-friendly: small machines,
//! short loops).

use super::*;
use crate::arena::ArenaPlatform;
use crate::gfp::{__GFP_KSWAPD_RECLAIM, GFP_ATOMIC, GFP_KERNEL, GFP_NOIO, GFP_NOWAIT};
use crate::memory_map::MemRegion;
use crate::page::Page;

use crate::slab::SlabFlags;
use crate::BootParams;
use core::cell::{Cell, RefCell};
use std::vec::Vec;

const MEM: usize = 8 << 20;

/// The arena, recording every `wait_event` and `wake_up`.
struct Watch<'a> {
    arena: ArenaPlatform<'a>,
    /// (channel, timeout) of each wait.
    waits: RefCell<Vec<(usize, Option<u64>)>>,
    /// Channel of each wake-up.
    wakes: RefCell<Vec<usize>>,
}

// SAFETY: every promise is the arena's: all calls but the two recorded
// ones are delegated unchanged, and those two touch no memory of the core.
unsafe impl Platform for Watch<'_> {
    crate::forward_platform!(p => &p.arena;
        nr_cpu_ids, smp_processor_id, local_enter, local_exit,
        in_atomic, in_interrupt, direct_map, memory_is_zeroed,
        smp_call_function_single, report, current, now_ns,
        random_u64, task_flags, set_task_flags, out_of_memory
    );
    fn wait_event(
        &self,
        channel: usize,
        cond: &mut dyn FnMut() -> bool,
        timeout_ns: Option<u64>,
    ) -> bool {
        self.waits.borrow_mut().push((channel, timeout_ns));
        self.arena.wait_event(channel, cond, timeout_ns)
    }
    fn wake_up(&self, channel: usize) {
        self.wakes.borrow_mut().push(channel);
    }
}

type K<'a> = Kmem<Watch<'a>>;

fn boot(buf: &mut [u8]) -> K<'_> {
    let arena = ArenaPlatform::new(buf, 1);
    let (s, e) = arena.usable_range();
    let w = Watch {
        arena,
        waits: RefCell::new(Vec::new()),
        wakes: RefCell::new(Vec::new()),
    };
    let params = BootParams {
        reserve_low: 0,
        ..BootParams::default()
    };
    Kmem::boot(w, &[MemRegion::usable(s, e - s)], &params).expect("boot")
}

fn reported(k: &K<'_>, needle: &str) -> bool {
    k.platform().arena.reported(needle)
}

/// Free pages with the per-CPU lists drained.
fn free_pages(k: &K<'_>) -> u64 {
    k.drain_local_pages();
    k.check_free_counts().unwrap()
}

/// Take every page even `GFP_ATOMIC` may have, so that no mempool
/// allocation can succeed (mempool masks never carry `__GFP_MEMALLOC`).
fn exhaust<'k>(k: &'k K<'_>) -> Vec<(&'k Page, u32)> {
    let mut pages = Vec::new();
    // GFP_ATOMIC does not drain other CPUs' lists (only direct reclaim
    // does): drain them here, until nothing is left anywhere.
    loop {
        for order in (0..=crate::MAX_PAGE_ORDER).rev() {
            while let Ok(p) = k.alloc_pages(GFP_ATOMIC | __GFP_NOWARN, order) {
                pages.push((p, order));
            }
        }
        if k.drain_all_pages() == 0 {
            return pages;
        }
    }
}

fn give_back(k: &K<'_>, pages: Vec<(&Page, u32)>) {
    for (p, o) in pages {
        k.__free_pages(p, o).unwrap();
    }
}

/// An alloc_fn's script: fail the next `fail` calls and every call once
/// `budget` successes are spent; record every mask and count live elements.
struct Script {
    fail: Cell<usize>,
    budget: Cell<usize>,
    live: Cell<isize>,
    masks: RefCell<Vec<Gfp>>,
}

impl Script {
    fn new() -> Self {
        Script {
            fail: Cell::new(0),
            budget: Cell::new(usize::MAX),
            live: Cell::new(0),
            masks: RefCell::new(Vec::new()),
        }
    }

    fn data(&self) -> PoolData<'static> {
        PoolData::Private((self as *const Script).expose_provenance())
    }

    fn masks(&self) -> Vec<Gfp> {
        self.masks.take()
    }
}

fn script<'d>(data: &'d PoolData<'_>) -> &'d Script {
    let PoolData::Private(addr) = *data else {
        panic!("not a script pool")
    };
    // SAFETY: every test keeps its Script alive (on its stack) for as long
    // as the pool it made with it, and only reads it through `&`.
    unsafe { &*core::ptr::with_exposed_provenance::<Script>(addr) }
}

/// alloc_fn of a scripted pool: 64-byte kmalloc objects, failing on demand.
fn scripted_alloc(k: &K<'_>, gfp: Gfp, data: &PoolData<'_>) -> Option<Element> {
    let s = script(data);
    s.masks.borrow_mut().push(gfp);
    if s.fail.get() > 0 {
        s.fail.set(s.fail.get() - 1);
        return None;
    }
    if s.budget.get() == 0 {
        return None;
    }
    let e = k.kmalloc(64, gfp).ok()?;
    s.budget.set(s.budget.get() - 1);
    s.live.set(s.live.get() + 1);
    Some(e)
}

/// free_fn of a scripted pool.
///
/// # Safety
///
/// As [`Kmem::mempool_kfree`].
unsafe fn scripted_free(k: &K<'_>, e: Element, data: &PoolData<'_>) {
    let s = script(data);
    s.live.set(s.live.get() - 1);
    // SAFETY: the caller's contract.
    unsafe { k.kfree(e.as_ptr()) }.unwrap();
}

/// Allocate and free kmalloc objects of the sizes the tests' element
/// arrays use, so that their slabs exist before free pages are counted.
fn warm(k: &K<'_>) {
    for size in [8, 16, 32, 64] {
        let p = k.kmalloc(size, GFP_KERNEL).unwrap();
        // SAFETY: freed once, not used again.
        unsafe { k.kfree(p.as_ptr()) }.unwrap();
    }
}

/// What mempool_alloc adds to every mask.
const POOL_BITS: Gfp = __GFP_NOMEMALLOC.union(__GFP_NORETRY).union(__GFP_NOWARN);

#[test]
fn alloc_follows_linux_sequence() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    let s = Script::new();
    let mut pool = k
        .mempool_create(1, Some(scripted_alloc), scripted_free, s.data())
        .unwrap();
    assert_eq!(
        s.masks(),
        [GFP_KERNEL],
        "preallocated with GFP_KERNEL, as is"
    );
    let channel = &pool as *const MempoolT<'_, _> as usize;
    let temp = (GFP_NOIO | POOL_BITS).without(__GFP_DIRECT_RECLAIM);
    let full = GFP_NOIO | POOL_BITS;
    assert_eq!(temp, __GFP_KSWAPD_RECLAIM | POOL_BITS);

    // The allocator works: alloc_fn without direct reclaim or I/O, once.
    let a = k.mempool_alloc(&pool, GFP_NOIO).unwrap();
    assert_eq!(s.masks(), [temp]);
    assert_eq!((pool.curr_nr(), pool.in_use()), (1, 1));

    // It fails: the reserve is used, nothing retried.
    s.fail.set(1);
    let b = k.mempool_alloc(&pool, GFP_NOIO).unwrap();
    assert_eq!(s.masks(), [temp]);
    assert_eq!((pool.curr_nr(), pool.in_use()), (0, 2));

    // It fails and the reserve is empty: retried at once with the full mask.
    s.fail.set(1);
    let c = k.mempool_alloc(&pool, GFP_NOIO).unwrap();
    assert_eq!(s.masks(), [temp, full]);
    assert!(k.platform().waits.borrow().is_empty(), "no wait needed");

    // Both fail: the caller sleeps on the pool for 5 s, then tries again.
    s.fail.set(2);
    let d = k.mempool_alloc(&pool, GFP_NOIO).unwrap();
    assert_eq!(s.masks(), [temp, full, full]);
    assert_eq!(
        k.platform().waits.take(),
        [(channel, Some(MEMPOOL_WAIT_NS))],
        "one wait on the pool's channel, with Linux's 5*HZ timeout"
    );
    assert_eq!(MEMPOOL_WAIT_NS, 5_000_000_000);

    // A caller that cannot block gets NULL, without waiting.
    s.fail.set(usize::MAX);
    assert_eq!(k.mempool_alloc(&pool, GFP_NOWAIT), Err(Error::NoMemory));
    assert_eq!(
        s.masks(),
        [GFP_NOWAIT | POOL_BITS],
        "nothing to strip: one try"
    );
    assert_eq!(k.mempool_alloc(&pool, GFP_ATOMIC), Err(Error::NoMemory));
    assert_eq!(s.masks(), [GFP_ATOMIC | POOL_BITS]);
    // GFP_KERNEL in an interrupt cannot sleep either: reported, refused.
    let p = &k.platform().arena;
    assert_eq!(
        p.in_irq(|| k.mempool_alloc(&pool, GFP_KERNEL)),
        Err(Error::NoMemory)
    );
    let kfull = GFP_KERNEL | POOL_BITS;
    assert_eq!(
        s.masks(),
        [kfull.without(__GFP_DIRECT_RECLAIM | __GFP_IO), kfull]
    );
    assert!(reported(
        &k,
        "BUG: sleeping function called from invalid context"
    ));
    assert!(reported(&k, "in_atomic(): 1"));
    assert!(k.platform().waits.borrow().is_empty());
    s.fail.set(0);

    // The elements go back: the first refills the reserve, the others find
    // it full and go to free_fn. Nobody waits now, so nobody is woken.
    for e in [a, b, c, d] {
        // SAFETY: each element returned once.
        unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
    }
    assert!(k.platform().wakes.borrow().is_empty());
    assert_eq!((pool.curr_nr(), pool.in_use()), (1, 0));
    k.mempool_destroy(&mut pool).unwrap();
    assert!(!reported(&k, "mempool_free"));
}

#[test]
fn zero_gfp_is_refused() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    let s = Script::new();
    let mut pool = k
        .mempool_create(1, Some(scripted_alloc), scripted_free, s.data())
        .unwrap();
    let _ = s.masks();
    assert_eq!(
        k.mempool_alloc(&pool, GFP_KERNEL | __GFP_ZERO),
        Err(Error::InvalidArgument)
    );
    assert!(s.masks().is_empty(), "alloc_fn not called");
    assert!(reported(&k, "mempool_alloc: __GFP_ZERO is not supported"));
    k.mempool_destroy(&mut pool).unwrap();
}

#[test]
fn preallocated_takes_only_from_the_reserve() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    let s = Script::new();
    let mut pool = k
        .mempool_create(2, Some(scripted_alloc), scripted_free, s.data())
        .unwrap();
    let _ = s.masks();
    let a = k.mempool_alloc_preallocated(&pool).unwrap();
    let b = k.mempool_alloc_preallocated(&pool).unwrap();
    assert_eq!(k.mempool_alloc_preallocated(&pool), Err(Error::NoMemory));
    assert!(s.masks().is_empty(), "never calls alloc_fn");
    assert_eq!((pool.curr_nr(), pool.in_use()), (0, 2));
    for e in [a, b] {
        // SAFETY: each element returned once.
        unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
    }
    assert_eq!(pool.curr_nr(), 2);
    k.mempool_destroy(&mut pool).unwrap();
}

#[test]
// Fills the 8 MiB arena page by page: natively only; the pool's unsafe paths
// run under Miri in the other tests.
#[cfg_attr(miri, ignore)]
fn page_pool_carries_on_when_the_page_allocator_is_exhausted() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    warm(&k);
    let boot_free = free_pages(&k);
    let mut pool = k.mempool_create_page_pool(3, 1).unwrap();
    assert_eq!((pool.min_nr(), pool.curr_nr()), (3, 3));
    let pages = exhaust(&k);
    assert!(k.alloc_pages(GFP_KERNEL | __GFP_NOWARN, 0).is_err());

    // Only the reserve is left: GFP_NOIO gets it, three times.
    let mut out: Vec<Element> = (0..3)
        .map(|_| k.mempool_alloc(&pool, GFP_NOIO).unwrap())
        .collect();
    assert_eq!(pool.curr_nr(), 0);
    // The elements are order-1 page blocks, usable memory.
    for (i, &e) in out.iter().enumerate() {
        let page = k.mempool_element_page(e).unwrap();
        assert_eq!(page.order(), 1);
        let addr = k.page_address(page).unwrap();
        // SAFETY: the pool handed us these two pages.
        unsafe { addr.as_ptr().write_bytes(i as u8, 2 * PAGE_SIZE) };
    }
    // An empty reserve and no pages: atomic callers fail at once.
    assert_eq!(k.mempool_alloc(&pool, GFP_ATOMIC), Err(Error::NoMemory));
    assert_eq!(k.mempool_alloc(&pool, GFP_NOWAIT), Err(Error::NoMemory));
    let chan = &pool as *const MempoolT<'_, _> as usize;
    assert!(
        !k.platform().waits.borrow().iter().any(|w| w.0 == chan),
        "nobody waited: a caller that cannot block never does"
    );

    // "I/O completes": one element back makes the next allocation succeed.
    let e = out.pop().unwrap();
    // SAFETY: returned once.
    unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
    assert_eq!(pool.curr_nr(), 1);
    out.push(k.mempool_alloc(&pool, GFP_NOIO).unwrap());
    assert_eq!(
        free_pages(&k),
        boot_free - 6 - pages.iter().map(|(_, o)| 1u64 << o).sum::<u64>(),
        "no page moved between the pool and the allocator"
    );
    for e in out {
        // SAFETY: returned once.
        unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
    }
    assert_eq!((pool.curr_nr(), pool.in_use()), (3, 0));
    give_back(&k, pages);
    k.mempool_destroy(&mut pool).unwrap();
    assert!(!pool.is_initialized());
    assert_eq!(free_pages(&k), boot_free, "every page went back");
}

#[test]
fn slab_pool_refills_first_then_frees_to_the_cache() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    let c = k
        .kmem_cache_create("bio-0", 152, 0, SlabFlags::NONE, None)
        .unwrap();
    let mut pool = k.mempool_create_slab_pool(4, c).unwrap();
    assert!(k.slab_totals(c).1 > 0);
    // With memory around, elements come from the cache: the reserve stays.
    let objs: Vec<Element> = (0..6)
        .map(|_| k.mempool_alloc(&pool, GFP_NOIO).unwrap())
        .collect();
    assert_eq!((pool.curr_nr(), pool.in_use()), (4, 6));
    for &o in &objs {
        // SAFETY: returned once.
        unsafe { k.mempool_free(o.as_ptr(), &pool) }.unwrap();
    }
    assert_eq!(pool.curr_nr(), 4, "a full reserve stays full");
    // Take the reserve too: frees now refill it.
    let pages = exhaust(&k);
    let mut held = Vec::new();
    while let Ok(o) = k.kmem_cache_alloc(c, GFP_ATOMIC | __GFP_NOWARN) {
        held.push(o);
    }
    let r: Vec<Element> = (0..4)
        .map(|_| k.mempool_alloc(&pool, GFP_ATOMIC).unwrap())
        .collect();
    assert_eq!(pool.curr_nr(), 0);
    for &o in &r {
        // SAFETY: returned once.
        unsafe { k.mempool_free(o.as_ptr(), &pool) }.unwrap();
    }
    assert_eq!(pool.curr_nr(), 4);
    for o in held {
        // SAFETY: our own objects, freed once.
        unsafe { k.kmem_cache_free(c, o.as_ptr()) }.unwrap();
    }
    give_back(&k, pages);
    k.mempool_destroy(&mut pool).unwrap();
    k.kmem_cache_shrink(c);
    assert_eq!(k.slab_totals(c).0, 0, "no object lost or duplicated");
}

#[test]
// Fills the 8 MiB arena page by page: natively only; the pool's unsafe paths
// run under Miri in the other tests.
#[cfg_attr(miri, ignore)]
fn resize_grows_shrinks_and_refills_later() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    warm(&k);
    let boot_free = free_pages(&k);
    let mut pool = k.mempool_create_page_pool(2, 0).unwrap();
    k.mempool_resize(&pool, 5).unwrap();
    assert_eq!((pool.min_nr(), pool.curr_nr()), (5, 5));
    k.mempool_resize(&pool, 1).unwrap();
    assert_eq!((pool.min_nr(), pool.curr_nr()), (1, 1));
    let before = free_pages(&k);

    // A new array that cannot be had leaves the pool as it was.
    assert_eq!(k.mempool_resize(&pool, 1 << 20), Err(Error::NoMemory));
    assert_eq!((pool.min_nr(), pool.curr_nr()), (1, 1));

    // Growing when no page can be had: the array grows (from kmalloc's
    // warm slab), the reserve does not yet; later frees refill it.
    let pages = exhaust(&k);
    let e = k.mempool_alloc(&pool, GFP_ATOMIC).unwrap();
    assert_eq!(k.mempool_alloc(&pool, GFP_ATOMIC), Err(Error::NoMemory));
    k.mempool_resize(&pool, 4).unwrap();
    assert_eq!((pool.min_nr(), pool.curr_nr()), (4, 0));
    give_back(&k, pages);
    // SAFETY: returned once.
    unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
    assert_eq!(pool.curr_nr(), 1, "the free refilled the grown reserve");
    let more: Vec<Element> = (0..3)
        .map(|_| k.mempool_alloc(&pool, GFP_KERNEL).unwrap())
        .collect();
    for e in more {
        // SAFETY: returned once.
        unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
    }
    assert_eq!(pool.curr_nr(), 4);
    k.mempool_resize(&pool, 1).unwrap();
    assert_eq!(free_pages(&k), before, "shrinking gave the pages back");

    assert_eq!(k.mempool_resize(&pool, 0), Err(Error::InvalidArgument));
    assert!(reported(&k, "mempool_resize: new_min_nr 0"));
    assert_eq!((pool.min_nr(), pool.curr_nr()), (1, 1));
    k.mempool_destroy(&mut pool).unwrap();
    assert_eq!(free_pages(&k), boot_free);
}

#[test]
fn zero_minimum_pool_keeps_one_element() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    let mut pool = k.mempool_create_kmalloc_pool(0, 100).unwrap();
    assert_eq!((pool.min_nr(), pool.curr_nr()), (0, 1));
    let a = k.mempool_alloc_preallocated(&pool).unwrap();
    let b = k.mempool_alloc(&pool, GFP_KERNEL).unwrap();
    assert_eq!(pool.curr_nr(), 0);
    // SAFETY: each returned once.
    unsafe {
        k.mempool_free(a.as_ptr(), &pool).unwrap();
        k.mempool_free(b.as_ptr(), &pool).unwrap();
    }
    assert_eq!(
        pool.curr_nr(),
        1,
        "the first refilled, the second was freed"
    );
    k.mempool_destroy(&mut pool).unwrap();
}

#[test]
fn create_without_alloc_fn_is_refused() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    warm(&k);
    let before = free_pages(&k);
    let free = Kmem::mempool_kfree;
    assert_eq!(
        k.mempool_create(0, None, free, PoolData::Kmalloc(64)).err(),
        Some(Error::InvalidArgument)
    );
    assert!(reported(&k, "mempool_create: min_nr 0 and no alloc_fn"));
    assert_eq!(
        k.mempool_create(3, None, free, PoolData::Kmalloc(64)).err(),
        Some(Error::InvalidArgument)
    );
    assert!(reported(&k, "mempool_create: no alloc_fn to preallocate 3"));
    fn ctor(_: *mut u8) {}
    let c = k
        .kmem_cache_create("with_ctor", 64, 0, SlabFlags::NONE, Some(ctor))
        .unwrap();
    assert_eq!(
        k.mempool_create_slab_pool(2, c).err(),
        Some(Error::InvalidArgument)
    );
    assert!(reported(&k, "cache with_ctor has a constructor"));
    // Nothing was allocated for the refused pools.
    // SAFETY: the cache has no objects.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
    assert_eq!(free_pages(&k), before);

    // A preallocation failure frees what it got: the first element is
    // made, the second is not.
    let s = Script::new();
    s.budget.set(1);
    let r = k.mempool_create(2, Some(scripted_alloc), scripted_free, s.data());
    assert_eq!(r.err(), Some(Error::NoMemory));
    assert_eq!(s.masks().len(), 2);
    assert_eq!(s.live.get(), 0, "the element made was freed");
}

#[test]
fn free_of_a_foreign_element_is_refused() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    let a = k.kmem_cache_create("pool_a", 96, 0, SlabFlags::NONE, None);
    // Not merged with pool_a, which would make its objects pool_a's.
    let b = k.kmem_cache_create("pool_b", 96, 0, crate::slab::SLAB_NO_MERGE, None);
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut slab_pool = k.mempool_create_slab_pool(2, a).unwrap();
    let mut kmalloc_pool = k.mempool_create_kmalloc_pool(2, 200).unwrap();
    let mut page_pool = k.mempool_create_page_pool(2, 1).unwrap();
    // One element of each out, so the double-free check does not fire first.
    let sa = k.mempool_alloc(&slab_pool, GFP_KERNEL).unwrap();
    let ka = k.mempool_alloc(&kmalloc_pool, GFP_KERNEL).unwrap();
    let pa = k.mempool_alloc(&page_pool, GFP_KERNEL).unwrap();

    let from_b = k.kmem_cache_alloc(b, GFP_KERNEL).unwrap();
    let small = k.kmalloc(100, GFP_KERNEL).unwrap();
    let order0 = k.alloc_pages(GFP_KERNEL, 0).unwrap();
    let order0_e: Element = NonNull::from(order0).cast();
    let on_stack = 0u64;
    let stack_ptr = &on_stack as *const u64 as *mut u8;
    let cases: [(&MempoolT<'_, _>, *mut u8, &str); 8] = [
        (&slab_pool, from_b.as_ptr(), "Wrong slab cache"),
        (
            &slab_pool,
            sa.as_ptr().wrapping_add(8),
            "Invalid object pointer",
        ),
        (&slab_pool, stack_ptr, "is not an element of mempool"),
        (
            &kmalloc_pool,
            small.as_ptr(),
            "kmalloc objects of at least 200",
        ),
        (
            &kmalloc_pool,
            from_b.as_ptr(),
            "kmalloc objects of at least 200",
        ),
        (&page_pool, order0_e.as_ptr(), "pages of order 1"),
        (&page_pool, ka.as_ptr(), "pages of order 1"),
        (&page_pool, stack_ptr, "pages of order 1"),
    ];
    for (pool, bad, why) in cases {
        let state = (pool.curr_nr(), pool.in_use());
        k.platform().arena.clear_reports();
        // SAFETY: refused, so nothing is freed.
        let r = unsafe { k.mempool_free(bad, pool) };
        assert_eq!(r, Err(Error::BadAddress), "{why}");
        assert!(reported(&k, "BUG: mempool_free"), "{why}");
        assert!(reported(&k, why), "{why}");
        assert_eq!((pool.curr_nr(), pool.in_use()), state, "{why}: untouched");
    }
    // The foreign memory is still its owners', intact.
    // SAFETY: each freed once by its owner.
    unsafe {
        k.kmem_cache_free(b, from_b.as_ptr()).unwrap();
        k.kfree(small.as_ptr()).unwrap();
    }
    k.__free_pages(order0, 0).unwrap();
    // NULL is a no-op.
    assert_eq!(
        // SAFETY: null is allowed by `mempool_free`'s contract and frees nothing.
        unsafe { k.mempool_free(core::ptr::null_mut(), &page_pool) },
        Ok(())
    );
    for (pool, e) in [(&slab_pool, sa), (&kmalloc_pool, ka), (&page_pool, pa)] {
        // SAFETY: returned once.
        unsafe { k.mempool_free(e.as_ptr(), pool) }.unwrap();
    }
    k.mempool_destroy(&mut slab_pool).unwrap();
    k.mempool_destroy(&mut kmalloc_pool).unwrap();
    k.mempool_destroy(&mut page_pool).unwrap();
}

#[test]
fn double_free_is_refused() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    let mut pool = k.mempool_create_kmalloc_pool(2, 64).unwrap();
    let a = k.mempool_alloc_preallocated(&pool).unwrap();
    let b = k.mempool_alloc_preallocated(&pool).unwrap();
    // SAFETY: returned once; the second call is refused.
    unsafe {
        k.mempool_free(a.as_ptr(), &pool).unwrap();
        assert_eq!(k.mempool_free(a.as_ptr(), &pool), Err(Error::BadState));
    }
    assert!(reported(&k, "BUG: mempool_free: double free of"));
    assert_eq!((pool.curr_nr(), pool.in_use()), (1, 1), "nothing changed");
    // SAFETY: returned once; then nothing is out.
    unsafe {
        k.mempool_free(b.as_ptr(), &pool).unwrap();
        assert_eq!(k.mempool_free(b.as_ptr(), &pool), Err(Error::BadState));
    }
    assert_eq!((pool.curr_nr(), pool.in_use()), (2, 0));
    // The reserve holds two distinct elements.
    let x = k.mempool_alloc_preallocated(&pool).unwrap();
    let y = k.mempool_alloc_preallocated(&pool).unwrap();
    assert_ne!(x, y);
    // SAFETY: returned once.
    unsafe {
        k.mempool_free(x.as_ptr(), &pool).unwrap();
        k.mempool_free(y.as_ptr(), &pool).unwrap();
    }
    k.mempool_destroy(&mut pool).unwrap();
}

#[test]
fn destroy_with_elements_out_is_refused_and_the_pool_kept() {
    let mut mem = std::vec![0u8; MEM];
    let k = boot(&mut mem);
    warm(&k);
    let boot_free = free_pages(&k);
    let mut pool = k.mempool_create_page_pool(2, 0).unwrap();
    let a = k.mempool_alloc(&pool, GFP_KERNEL).unwrap();
    let b = k.mempool_alloc_preallocated(&pool).unwrap();
    assert_eq!(k.mempool_destroy(&mut pool), Err(Error::Busy));
    assert!(reported(
        &k,
        "mempool_destroy: 2 elements still in use (1 of 2 reserved)"
    ));
    // Intact and usable.
    assert!(pool.is_initialized());
    let c = k.mempool_alloc_preallocated(&pool).unwrap();
    for e in [a, b, c] {
        // SAFETY: returned once.
        unsafe { k.mempool_free(e.as_ptr(), &pool) }.unwrap();
    }
    assert_eq!((pool.curr_nr(), pool.in_use()), (2, 0));
    k.mempool_destroy(&mut pool).unwrap();
    assert_eq!(free_pages(&k), boot_free);

    // A destroyed pool refuses everything, and destroying it again is a no-op.
    assert_eq!(
        k.mempool_alloc(&pool, GFP_KERNEL),
        Err(Error::InvalidArgument)
    );
    assert!(reported(&k, "BUG: mempool_alloc: mempool"));
    assert!(reported(&k, "is not initialized (destroyed)"));
    assert_eq!(
        k.mempool_alloc_preallocated(&pool),
        Err(Error::InvalidArgument)
    );
    assert_eq!(k.mempool_resize(&pool, 3), Err(Error::InvalidArgument));
    let stray = k.alloc_pages(GFP_KERNEL, 0).unwrap();
    // SAFETY: refused, nothing freed.
    let r = unsafe { k.mempool_free(NonNull::from(stray).cast::<u8>().as_ptr(), &pool) };
    assert_eq!(r, Err(Error::InvalidArgument));
    k.__free_pages(stray, 0).unwrap();
    assert_eq!(k.mempool_destroy(&mut pool), Ok(()));
    assert_eq!(free_pages(&k), boot_free);
}
