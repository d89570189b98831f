//! Tests of the typed API over std's global allocator (Miri-clean).

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::{self, NonNull};
use std::alloc as sys;

use super::flags::{__GFP_ZERO, GFP_ATOMIC, GFP_KERNEL};
use super::*;
use crate::Error;

/// An allocator over std's global allocator that counts live blocks,
/// refuses blocks above `limit` bytes, and always moves on `realloc` (so
/// Miri catches any use of a stale pointer).
pub(crate) struct Counting {
    /// Blocks allocated and not yet freed.
    live: Cell<usize>,
    /// `realloc` calls, frees included.
    pub(crate) calls: Cell<usize>,
    /// The largest block size served; bigger requests fail.
    pub(crate) limit: Cell<usize>,
}

impl Default for Counting {
    fn default() -> Self {
        Self::new()
    }
}

impl Counting {
    pub(crate) fn new() -> Self {
        Counting {
            live: Cell::new(0),
            calls: Cell::new(0),
            limit: Cell::new(usize::MAX),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.get()
    }
}

// SAFETY: blocks come from std's allocator with the requested layout, are
// freed with the layout the caller passes (checked by std/Miri), and
// `realloc` copies the preserved prefix into a zeroed new block under
// `__GFP_ZERO`.
unsafe impl Allocator for Counting {
    const MIN_ALIGN: usize = 1;

    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        _nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        self.calls.set(self.calls.get() + 1);
        let old = ptr.filter(|_| old_layout.size() != 0);
        let new = if layout.size() == 0 {
            dangling(layout)
        } else {
            if layout.size() > self.limit.get() {
                return Err(AllocError);
            }
            // SAFETY: `layout` has a non-zero size.
            let p = unsafe {
                if flags.contains(__GFP_ZERO) {
                    sys::alloc_zeroed(layout)
                } else {
                    sys::alloc(layout)
                }
            };
            let p = NonNull::new(p).ok_or(AllocError)?;
            self.live.set(self.live.get() + 1);
            p
        };
        if let Some(old) = old {
            let n = old_layout.size().min(layout.size());
            // SAFETY: the caller guarantees `old` is a live block of
            // `old_layout` from us; the new block is fresh and disjoint.
            unsafe {
                ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), n);
                sys::dealloc(old.as_ptr(), old_layout);
            }
            self.live.set(self.live.get() - 1);
        }
        Ok(NonNull::slice_from_raw_parts(new, layout.size()))
    }
}

/// An object cache over std's allocator that counts live objects.
struct TestCache {
    layout: Layout,
    live: Cell<usize>,
}

impl TestCache {
    fn new(size: usize, align: usize) -> Self {
        TestCache {
            layout: Layout::from_size_align(size, align).unwrap(),
            live: Cell::new(0),
        }
    }
}

// SAFETY: objects are std blocks of `layout` (at least one byte).
unsafe impl ObjectCache for TestCache {
    fn object_size(&self) -> usize {
        self.layout.size()
    }

    fn align(&self) -> usize {
        self.layout.align()
    }

    fn alloc_obj(&self, flags: Flags) -> Result<NonNull<u8>, AllocError> {
        let layout = Layout::from_size_align(self.layout.size().max(1), self.layout.align())
            .map_err(|_| AllocError)?;
        // SAFETY: non-zero size.
        let p = unsafe {
            if flags.contains(__GFP_ZERO) {
                sys::alloc_zeroed(layout)
            } else {
                sys::alloc(layout)
            }
        };
        let p = NonNull::new(p).ok_or(AllocError)?;
        self.live.set(self.live.get() + 1);
        Ok(p)
    }

    unsafe fn free_obj(&self, ptr: NonNull<u8>) {
        let layout =
            Layout::from_size_align(self.layout.size().max(1), self.layout.align()).unwrap();
        // SAFETY: the caller passes a live object of ours.
        unsafe { sys::dealloc(ptr.as_ptr(), layout) };
        self.live.set(self.live.get() - 1);
    }
}

/// Counts its drops.
#[derive(Debug)]
pub(crate) struct Counted<'a> {
    drops: &'a Cell<usize>,
    pub(crate) id: u32,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

impl Clone for Counted<'_> {
    fn clone(&self) -> Self {
        Counted {
            drops: self.drops,
            id: self.id,
        }
    }
}

pub(crate) fn counted(drops: &Cell<usize>, id: u32) -> Counted<'_> {
    Counted { drops, id }
}

// ---------------------------------------------------------------------------
// Allocator contract (exercised on the test allocator)
// ---------------------------------------------------------------------------

#[test]
fn errors_convert() {
    assert_eq!(Error::from(AllocError), Error::NoMemory);
    assert_eq!(Error::from(RemoveError), Error::InvalidArgument);
    assert_eq!(Error::from(PushError(3u8)), Error::InvalidArgument);
    assert_eq!(std::format!("{AllocError}"), "memory allocation failed");
}

#[test]
fn flags_reexports() {
    assert_eq!(flags::GFP_KERNEL, crate::gfp::GFP_KERNEL);
    assert!((GFP_KERNEL | __GFP_ZERO).contains(flags::__GFP_ZERO));
    let _: Flags = flags::GFP_NOWAIT | flags::GFP_NOIO | flags::GFP_NOFS | flags::__GFP_NOWARN;
}

#[test]
fn realloc_zero_size_frees_and_dangles() {
    let a = Counting::new();
    let layout = Layout::from_size_align(24, 8).unwrap();
    let p = a.alloc(layout, GFP_KERNEL, NumaNode::NO_NODE).unwrap();
    assert_eq!(a.live(), 1);
    let new = Layout::from_size_align(0, 16).unwrap();
    // SAFETY: `p` is a live block of `layout`.
    let d =
        unsafe { a.realloc(Some(p.cast()), new, layout, GFP_KERNEL, NumaNode::NO_NODE) }.unwrap();
    assert_eq!(a.live(), 0);
    assert_eq!(d.len(), 0);
    assert_eq!(d.cast::<u8>().as_ptr() as usize % 16, 0);
}

#[test]
fn realloc_shrink_and_grow_keep_contents_and_zero_tail() {
    let a = Counting::new();
    let l16 = Layout::from_size_align(16, 4).unwrap();
    let p = a
        .alloc(l16, GFP_KERNEL, NumaNode::NO_NODE)
        .unwrap()
        .cast::<u8>();
    // SAFETY: the block is 16 bytes.
    unsafe { ptr::copy_nonoverlapping([7u8; 16].as_ptr(), p.as_ptr(), 16) };

    let l4 = Layout::from_size_align(4, 4).unwrap();
    // SAFETY: `p` is a live block of `l16`.
    let p = unsafe { a.realloc(Some(p), l4, l16, GFP_KERNEL, NumaNode::NO_NODE) }.unwrap();
    assert_eq!(p.len(), 4);
    // SAFETY: 4 bytes, preserved from the old block.
    assert_eq!(unsafe { p.as_ref() }, &[7u8; 4]);

    let l32 = Layout::from_size_align(32, 4).unwrap();
    // SAFETY: `p` is a live block of `l4`.
    let p = unsafe {
        a.realloc(
            Some(p.cast()),
            l32,
            l4,
            GFP_KERNEL | __GFP_ZERO,
            NumaNode::NO_NODE,
        )
    }
    .unwrap();
    // SAFETY: 32 initialised bytes (4 kept, 28 zeroed).
    let bytes = unsafe { p.as_ref() };
    assert_eq!(&bytes[..4], &[7u8; 4]);
    assert!(bytes[4..].iter().all(|&b| b == 0));
    assert_eq!(a.live(), 1);
    // SAFETY: `p` is a live block of `l32`.
    unsafe { a.free(p.cast(), l32) };
    assert_eq!(a.live(), 0);
}

#[test]
fn realloc_failure_keeps_old_block() {
    let a = Counting::new();
    let l8 = Layout::new::<u64>();
    let p = a
        .alloc(l8, GFP_KERNEL, NumaNode::NO_NODE)
        .unwrap()
        .cast::<u64>();
    // SAFETY: a live, aligned `u64` block.
    unsafe { p.as_ptr().write(0xdead_beef) };
    a.limit.set(8);
    let l64 = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: `p` is a live block of `l8`.
    assert!(unsafe { a.realloc(Some(p.cast()), l64, l8, GFP_KERNEL, NumaNode::NO_NODE) }.is_err());
    // SAFETY: still live and untouched.
    assert_eq!(unsafe { p.as_ptr().read() }, 0xdead_beef);
    // SAFETY: `p` is a live block of `l8`.
    unsafe { a.free(p.cast(), l8) };
    assert_eq!(a.live(), 0);
}

// ---------------------------------------------------------------------------
// KBox
// ---------------------------------------------------------------------------

#[test]
fn kbox_new_deref_drop() {
    let a = Counting::new();
    let drops = Cell::new(0);
    {
        let mut b = KBox::new(counted(&drops, 1), &a, GFP_KERNEL).unwrap();
        assert_eq!(a.live(), 1);
        b.id = 2;
        assert_eq!(b.id, 2);
        assert_eq!(drops.get(), 0);
    }
    assert_eq!(drops.get(), 1);
    assert_eq!(a.live(), 0);
}

#[test]
fn kbox_zst_does_not_allocate() {
    use core::sync::atomic::{AtomicUsize, Ordering};
    static UNIT_DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Unit;
    impl Drop for Unit {
        fn drop(&mut self) {
            UNIT_DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    let a = Counting::new();
    let b = KBox::new((), &a, GFP_KERNEL).unwrap();
    let c = KBox::new([0u64; 0], &a, GFP_KERNEL).unwrap();
    assert_eq!(c.as_ptr() as usize % 8, 0);
    let u = KBox::new(Unit, &a, GFP_KERNEL).unwrap();
    drop((b, c, u));
    assert_eq!(UNIT_DROPS.load(Ordering::Relaxed), 1);
    // The allocator was never called.
    assert_eq!(a.calls.get(), 0);
}

#[test]
fn kbox_allocation_failure() {
    let a = Counting::new();
    a.limit.set(4);
    assert_eq!(KBox::new(1u64, &a, GFP_ATOMIC).err(), Some(AllocError));
    assert_eq!(a.live(), 0);
}

#[test]
fn kbox_new_uninit_zeroed() {
    let a = Counting::new();
    let b = KBox::<[u32; 8], _>::new_uninit(&a, GFP_KERNEL | __GFP_ZERO).unwrap();
    // SAFETY: `__GFP_ZERO` zeroed it; all-zero is a valid `[u32; 8]`.
    let b = unsafe { b.assume_init() };
    assert_eq!(*b, [0; 8]);
    let w = KBox::write(KBox::<u16, _>::new_uninit(&a, GFP_KERNEL).unwrap(), 9);
    assert_eq!(*w, 9);
    drop((b, w));
    assert_eq!(a.live(), 0);
}

#[test]
fn kbox_raw_round_trip_and_leak() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let raw = KBox::into_raw(KBox::new(counted(&drops, 5), &a, GFP_KERNEL).unwrap());
    assert_eq!(a.live(), 1);
    // SAFETY: `raw` came from `into_raw` of a box on `&a`.
    let b = unsafe { KBox::from_raw(raw, &a) };
    assert_eq!(b.id, 5);
    drop(b);
    assert_eq!((drops.get(), a.live()), (1, 0));

    let leaked: &mut Counted<'_> =
        KBox::leak(KBox::new(counted(&drops, 6), &a, GFP_KERNEL).unwrap());
    leaked.id = 7;
    assert_eq!(a.live(), 1);
    // Reclaim the leak so the test does not leak for real.
    // SAFETY: `leaked` is the value of a leaked box on `&a`, unused after.
    let b = unsafe { KBox::from_raw(leaked as *mut Counted<'_>, &a) };
    assert_eq!(b.id, 7);
    drop(b);
    assert_eq!((drops.get(), a.live()), (2, 0));
}

#[test]
fn kbox_into_inner_frees_without_dropping() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let v = KBox::into_inner(KBox::new(counted(&drops, 3), &a, GFP_KERNEL).unwrap());
    assert_eq!((drops.get(), a.live(), v.id), (0, 0, 3));
    drop(v);
    assert_eq!(drops.get(), 1);
    assert_eq!(KBox::into_inner(KBox::new((), &a, GFP_KERNEL).unwrap()), ());
}

#[test]
fn kbox_pin() {
    // `pin` needs a `'static` allocator handle.
    let a: &'static Counting = std::boxed::Box::leak(std::boxed::Box::new(Counting::new()));
    let p = KBox::pin(core::marker::PhantomPinned, a, GFP_KERNEL).unwrap();
    let q: core::pin::Pin<KBox<u8, _>> = KBox::new(1u8, a, GFP_KERNEL).unwrap().into();
    assert_eq!(*q, 1);
    drop((p, q));
    assert_eq!(a.live(), 0);
    // SAFETY: `a` came from `Box::leak` and nothing refers to it any more.
    drop(unsafe { std::boxed::Box::from_raw(a as *const Counting as *mut Counting) });
}

#[test]
fn a_destructor_that_panics_still_frees_the_block() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("boom");
        }
    }
    let a = Counting::new();
    let b = KBox::new(Bomb, &a, GFP_KERNEL).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(b)));
    assert!(r.is_err());
    assert_eq!(a.live(), 0, "KBox");
    let mut v = KVec::new(&a);
    v.push(Bomb, GFP_KERNEL).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(v)));
    assert!(r.is_err());
    assert_eq!(a.live(), 0, "KVec");
    // Inside a pin scope, such a panic is caught as anywhere else: the
    // block is freed, so the scope's end finds nothing left.
    pin_scope(&a, |s| {
        let p = s.pin(Bomb, GFP_KERNEL).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(p)));
        assert!(r.is_err());
        assert_eq!(s.live(), 0);
    });
    assert_eq!(a.live(), 0, "pinned");
}

#[test]
fn kbox_slice_and_dyn_free_with_the_right_layout() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let arr = [counted(&drops, 0), counted(&drops, 1), counted(&drops, 2)];
    let s: KBox<[Counted<'_>], _> = KBox::into_slice(KBox::new(arr, &a, GFP_KERNEL).unwrap());
    assert_eq!(s.len(), 3);
    assert_eq!(s[2].id, 2);
    drop(s);
    assert_eq!((drops.get(), a.live()), (3, 0));

    let raw = KBox::into_raw(KBox::new(counted(&drops, 9), &a, GFP_KERNEL).unwrap());
    let raw: *mut dyn core::fmt::Debug = raw;
    // SAFETY: an unsizing cast of a box's own pointer: same block, same
    // layout (`Layout::for_value` reads it from the vtable).
    let d = unsafe { KBox::from_raw(raw, &a) };
    assert!(std::format!("{d:?}").contains("id: 9"));
    drop(d);
    assert_eq!((drops.get(), a.live()), (4, 0));
}

// ---------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------

#[test]
fn cache_rejects_types_that_do_not_fit() {
    assert_eq!(
        Cache::<[u64; 3], _>::new(TestCache::new(16, 8)).err(),
        Some(Error::InvalidArgument)
    );
    #[repr(align(32))]
    struct Aligned32(#[allow(dead_code)] u8);
    assert_eq!(
        Cache::<Aligned32, _>::new(TestCache::new(64, 16)).err(),
        Some(Error::InvalidArgument)
    );
    assert!(Cache::<[u64; 2], _>::new(TestCache::new(16, 8)).is_ok());
    assert!(Cache::<u8, _>::new(TestCache::new(1, 1)).is_ok());
    assert!(Cache::<(), _>::new(TestCache::new(0, 1)).is_ok());
}

#[test]
fn cache_box_drops_once_and_frees() {
    let tc = TestCache::new(32, 8);
    let drops = Cell::new(0);
    let cache = Cache::<Counted<'_>, _>::new(&tc).unwrap();
    let mut a = cache.alloc(counted(&drops, 1), GFP_KERNEL).unwrap();
    let b = cache.alloc(counted(&drops, 2), GFP_KERNEL).unwrap();
    a.id = 10;
    assert_eq!(a.id + b.id, 12);
    assert_eq!(tc.live.get(), 2);
    drop(a);
    assert_eq!((drops.get(), tc.live.get()), (1, 1));
    drop(b);
    assert_eq!((drops.get(), tc.live.get()), (2, 0));
    assert_eq!(cache.inner().object_size(), 32);
}

#[test]
fn cache_box_raw_inner_leak() {
    let tc = TestCache::new(16, 8);
    let drops = Cell::new(0);
    let cache = Cache::<Counted<'_>, _>::new(&tc).unwrap();

    let raw = CacheBox::into_raw(cache.alloc(counted(&drops, 3), GFP_KERNEL).unwrap());
    assert_eq!((drops.get(), tc.live.get()), (0, 1));
    // SAFETY: `raw` came from `into_raw` of a box of `cache`.
    let b = unsafe { CacheBox::from_raw(&cache, raw) };
    assert_eq!(b.id, 3);
    assert!(core::ptr::eq(CacheBox::cache(&b), &cache));
    drop(b);
    assert_eq!((drops.get(), tc.live.get()), (1, 0));

    let v = CacheBox::into_inner(cache.alloc(counted(&drops, 4), GFP_KERNEL).unwrap());
    assert_eq!((drops.get(), tc.live.get(), v.id), (1, 0, 4));
    drop(v);
    assert_eq!(drops.get(), 2);

    let l = CacheBox::leak(cache.alloc(counted(&drops, 5), GFP_KERNEL).unwrap());
    l.id = 6;
    // SAFETY: reclaim the leaked object so the test does not leak.
    drop(unsafe { CacheBox::from_raw(&cache, l as *mut Counted<'_>) });
    assert_eq!((drops.get(), tc.live.get()), (3, 0));
}

#[test]
fn cache_zst_and_failure() {
    let tc = TestCache::new(0, 1);
    let cache = Cache::<(), _>::new(&tc).unwrap();
    let u = cache.alloc((), GFP_KERNEL).unwrap();
    assert_eq!(*u, ());
    drop(u);
    assert_eq!(tc.live.get(), 0);

    struct Failing;
    // SAFETY: never hands out an object.
    unsafe impl ObjectCache for Failing {
        fn object_size(&self) -> usize {
            64
        }
        fn align(&self) -> usize {
            8
        }
        fn alloc_obj(&self, _: Flags) -> Result<NonNull<u8>, AllocError> {
            Err(AllocError)
        }
        unsafe fn free_obj(&self, _: NonNull<u8>) {
            unreachable!()
        }
    }
    let drops = Cell::new(0);
    let cache = Cache::<Counted<'_>, _>::new(Failing).unwrap();
    assert!(cache.alloc(counted(&drops, 0), GFP_ATOMIC).is_err());
    assert_eq!(drops.get(), 1);
}

#[test]
fn doc_heap_counts() {
    let heap = doc_alloc::Heap::new();
    let mut v = KVec::new(&heap);
    for i in 0..100u32 {
        v.push(i, GFP_KERNEL).unwrap();
    }
    assert_eq!(heap.live(), 1);
    drop(v);
    assert_eq!(heap.live(), 0);
}

#[test]
fn dyn_allocator_handle() {
    let a = Counting::new();
    let h: &dyn DynAllocator = &a;
    let mut v = KVec::new(h);
    v.extend_from_slice(b"kmem", GFP_KERNEL).unwrap();
    let b = KBox::new(7u32, h, GFP_KERNEL).unwrap();
    assert_eq!((v.as_slice(), *b, a.live()), (&b"kmem"[..], 7, 2));
    drop((v, b));
    assert_eq!(a.live(), 0);
}

// The machine's `Vmalloc` and `KVmalloc` on the arena, which has no page
// tables: vmalloc always fails, kvmalloc serves what kmalloc serves.
// (kmem-sim/tests/alloc_vmalloc.rs runs them on a machine with vmalloc.)

/// A value whose alignment is two pages.
#[repr(align(8192))]
struct TwoPageAligned(#[allow(dead_code)] u8);

/// A value aligned to a page, smaller than one.
#[repr(align(4096))]
struct PageAligned([u8; 100]);

#[test]
fn vmalloc_on_the_arena_fails_with_alloc_error() {
    let mut mem = std::vec![0u8; 16 << 20];
    let k = crate::Kmem::boot_arena(&mut mem, 1).unwrap();
    let vm = Vmalloc::new(&k);
    assert_eq!(VBox::new(1u64, vm, GFP_KERNEL).err(), Some(AllocError));
    assert!(k.platform().reported("no page tables"));
    let mut v: VVec<'_, u8, _> = VVec::new(vm);
    assert_eq!(v.push(1, GFP_KERNEL), Err(AllocError));
    assert_eq!((v.len(), v.capacity()), (0, 0));
    // Zero-sized values and freeing nothing need no vmalloc.
    let z = VBox::new((), vm, GFP_KERNEL).unwrap();
    drop(z);
    // SAFETY: a zero-sized old layout: the dangling pointer is no block.
    let r = unsafe {
        vm.realloc(
            Some(dangling(Layout::new::<u64>())),
            Layout::new::<()>(),
            Layout::new::<[u64; 0]>(),
            GFP_KERNEL,
            NumaNode::NO_NODE,
        )
    };
    assert!(r.is_ok());
}

#[test]
fn kvmalloc_honours_alignments_above_a_page_on_the_arena() {
    let mut mem = std::vec![0u8; 16 << 20];
    let k = crate::Kmem::boot_arena(&mut mem, 1).unwrap();
    let p = k.platform();
    // No vmalloc on the arena, whatever the alignment.
    assert!(VBox::new(TwoPageAligned(1), Vmalloc::new(&k), GFP_KERNEL).is_err());
    // kvmalloc's kmalloc path gives two pages' alignment (a power-of-two
    // size), and a page's.
    p.clear_reports();
    let a = KVBox::new(TwoPageAligned(1), KVmalloc::new(&k), GFP_KERNEL).unwrap();
    assert_eq!(
        (&*a as *const TwoPageAligned).addr() % (2 * crate::PAGE_SIZE),
        0
    );
    let b = KVBox::new(PageAligned([7; 100]), KVmalloc::new(&k), GFP_KERNEL).unwrap();
    assert_eq!((&*b as *const PageAligned).addr() % crate::PAGE_SIZE, 0);
    assert_eq!(b.0[99], 7);
    assert!(!p.reported("alignment"));
}

#[test]
fn kvmalloc_on_the_arena_serves_what_kmalloc_serves() {
    let mut mem = std::vec![0u8; 32 << 20];
    let k = crate::Kmem::boot_arena(&mut mem, 1).unwrap();
    let kv = KVmalloc::new(&k);
    let mut v: KVVec<'_, u32, _> = KVVec::new(kv);
    for i in 0..(64 << 10) / 4 {
        v.push(i, GFP_KERNEL).unwrap();
    }
    // 64 KiB: kmalloc's pages, not vmalloc.
    assert!(!k.is_vmalloc_addr(v.as_ptr().cast()));
    assert!(v.iter().enumerate().all(|(i, &x)| x as usize == i));
    let at = v.as_ptr();
    v.truncate(10);
    // krealloc shrinks in place, as Linux's does: no memory goes back...
    v.shrink_to(v.capacity() - 1, GFP_KERNEL).unwrap();
    assert_eq!((v.as_ptr(), k.ksize(at.cast())), (at, 64 << 10));
    // ...so a shrink that frees pages moves the elements to a smaller block.
    v.shrink_to_fit(GFP_KERNEL).unwrap();
    assert_eq!((v.capacity(), &v[..3]), (10, &[0, 1, 2][..]));
    assert_eq!(k.ksize(v.as_ptr().cast()), 64);
    // Beyond KMALLOC_MAX_SIZE only vmalloc could serve it.
    let big = KVBox::<[u8; crate::kmalloc::KMALLOC_MAX_SIZE + 1], _>::new_uninit(kv, GFP_KERNEL);
    assert_eq!(big.err(), Some(AllocError));
}

#[test]
fn kvmalloc_realloc_zeroes_the_new_tail_under_gfp_zero() {
    let mut mem = std::vec![0u8; 16 << 20];
    let k = crate::Kmem::boot_arena(&mut mem, 1).unwrap();
    let kv = KVmalloc::new(&k);
    let small = Layout::from_size_align(40, 8).unwrap();
    let grown = Layout::from_size_align(60, 8).unwrap();
    let p = kv
        .alloc(small, GFP_KERNEL, NumaNode::NO_NODE)
        .unwrap()
        .cast::<u8>();
    // SAFETY: a fresh block of 40 bytes, in kmalloc-64.
    unsafe { p.as_ptr().write_bytes(0xa5, 40) };
    // Dirty the slack kmalloc gave beyond the 40 bytes asked for.
    // SAFETY: kmalloc-64's object has 64 bytes.
    unsafe { p.as_ptr().add(40).write_bytes(0x5a, 24) };
    // SAFETY: `p` is the block of `small`, given up for the result.
    let q = unsafe {
        kv.realloc(
            Some(p),
            grown,
            small,
            GFP_KERNEL | __GFP_ZERO,
            NumaNode::NO_NODE,
        )
    }
    .unwrap();
    assert_eq!(q.cast::<u8>(), p, "grown in place within kmalloc-64");
    // SAFETY: the block has 60 bytes.
    let bytes = unsafe { core::slice::from_raw_parts(q.cast::<u8>().as_ptr(), 60) };
    assert!(bytes[..40].iter().all(|&b| b == 0xa5) && bytes[40..].iter().all(|&b| b == 0));
    // SAFETY: the block of `grown`.
    unsafe { kv.free(q.cast(), grown) };
}

#[test]
fn kmalloc_treats_a_pointer_with_a_zero_sized_old_layout_as_no_block() {
    let mut mem = std::vec![0u8; 16 << 20];
    let k = crate::Kmem::boot_arena(&mut mem, 1).unwrap();
    k.platform().clear_reports(); // the boot log
    let km = Kmalloc::new(&k);
    let zst = Layout::from_size_align(0, 4096).unwrap();
    // SAFETY: a zero-sized old layout: the dangling pointer is no block.
    let freed = unsafe {
        km.realloc(
            Some(dangling(zst)),
            Layout::new::<()>(),
            zst,
            GFP_KERNEL,
            NumaNode::NO_NODE,
        )
    };
    assert!(freed.is_ok());
    let l = Layout::new::<u64>();
    // SAFETY: as above; this allocates a new block.
    let b =
        unsafe { km.realloc(Some(dangling(zst)), l, zst, GFP_KERNEL, NumaNode::NO_NODE) }.unwrap();
    // SAFETY: the block just allocated with `l`.
    unsafe { km.free(b.cast(), l) };
    let mut bad = std::string::String::new();
    k.platform().for_each_report(|_, m| bad.push_str(m));
    assert!(bad.is_empty(), "{bad}");
}

// ---------------------------------------------------------------------------
// Rust-for-Linux parity: KBox extras, in-place init, ForeignOwnable
// ---------------------------------------------------------------------------

std::thread_local! {
    /// Blocks of `StdAlloc` live on this thread.
    static STD_LIVE: Cell<usize> = const { Cell::new(0) };
}

/// A zero-sized, hence `'static`, handle over std's allocator (as
/// Rust-for-Linux's allocators are), for the pinning APIs; every block is
/// aligned to at least 16 bytes, its `MIN_ALIGN`.
#[derive(Clone, Copy)]
struct StdAlloc;

impl StdAlloc {
    fn live() -> usize {
        STD_LIVE.with(Cell::get)
    }

    fn padded(l: Layout) -> Layout {
        l.align_to(Self::MIN_ALIGN).unwrap()
    }
}

// SAFETY: blocks come from std's allocator with the layout raised to
// `MIN_ALIGN`, and are freed with the same raised layout; `realloc` copies
// the preserved prefix.
unsafe impl Allocator for StdAlloc {
    const MIN_ALIGN: usize = 16;

    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        _nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let old = ptr.filter(|_| old_layout.size() != 0);
        let new = if layout.size() == 0 {
            dangling(layout)
        } else {
            let l = Self::padded(layout);
            // SAFETY: `l` has a non-zero size.
            let p = unsafe {
                if flags.contains(__GFP_ZERO) {
                    sys::alloc_zeroed(l)
                } else {
                    sys::alloc(l)
                }
            };
            STD_LIVE.with(|c| c.set(c.get() + 1));
            NonNull::new(p).ok_or(AllocError)?
        };
        if let Some(old) = old {
            let n = old_layout.size().min(layout.size());
            // SAFETY: `old` is a live block of `old_layout` from us (the
            // caller's promise); the new block is fresh and disjoint.
            unsafe {
                ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), n);
                sys::dealloc(old.as_ptr(), Self::padded(old_layout));
            }
            STD_LIVE.with(|c| c.set(c.get() - 1));
        }
        Ok(NonNull::slice_from_raw_parts(new, layout.size()))
    }
}

#[test]
fn pin_slice_drops_what_it_built_when_an_initialiser_fails() {
    let drops = Cell::new(0);
    let r = KBox::pin_slice(
        |i| {
            if i == 2 {
                Err(AllocError)
            } else {
                Ok(counted(&drops, i as u32))
            }
        },
        4,
        StdAlloc,
        GFP_KERNEL,
    );
    assert_eq!(r.err(), Some(AllocError));
    assert_eq!((drops.get(), StdAlloc::live()), (2, 0));
    let s = KBox::<Counted<'_>, _>::pin_slice(
        |i| Ok::<_, AllocError>(counted(&drops, i as u32)),
        3,
        StdAlloc,
        GFP_KERNEL,
    )
    .unwrap();
    assert_eq!((s[2].id, StdAlloc::live()), (2, 1));
    drop(s);
    assert_eq!((drops.get(), StdAlloc::live()), (5, 0));
}

#[test]
fn drop_contents_keeps_the_block_and_unsize_keeps_the_value() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let b = KBox::drop_contents(KBox::new(counted(&drops, 1), &a, GFP_KERNEL).unwrap());
    assert_eq!((drops.get(), a.live()), (1, 1));
    let b = KBox::write(b, counted(&drops, 2));
    let d: KBox<dyn core::any::Any, _> =
        crate::kbox_unsize!(KBox::new(5u8, &a, GFP_KERNEL).unwrap(), dyn core::any::Any);
    assert_eq!(d.downcast_ref::<u8>(), Some(&5));
    assert_eq!(a.live(), 2);
    drop((b, d));
    assert_eq!((drops.get(), a.live()), (2, 0));
}

#[test]
fn drop_contents_drops_once_when_the_destructor_panics() {
    struct Bomb<'a>(&'a Cell<usize>);
    impl Drop for Bomb<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
            // Only the first drop panics, so a second one is counted
            // rather than aborting the test.
            assert!(self.0.get() > 1, "boom");
        }
    }
    let (a, drops) = (Counting::new(), Cell::new(0));
    let b = KBox::new(Bomb(&drops), &a, GFP_KERNEL).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| KBox::drop_contents(b)));
    assert!(r.is_err());
    assert_eq!((drops.get(), a.live()), (1, 0));
}

#[test]
fn try_init_failure_frees_the_block() {
    use super::init::{init_zeroed, InPlaceInit};
    let fail = |_: *mut u64| Err(AllocError);
    // SAFETY: the closure writes nothing and fails.
    let bad = unsafe { pinned_init::init_from_closure(fail) };
    assert_eq!(
        KBox::try_init(bad, StdAlloc, GFP_KERNEL).err(),
        Some(AllocError)
    );
    assert_eq!(StdAlloc::live(), 0);
    let z: KBox<[u32; 4], _> = KBox::init(init_zeroed(), StdAlloc, GFP_KERNEL).unwrap();
    assert_eq!((*z, StdAlloc::live()), ([0; 4], 1));
}

#[test]
fn foreign_pointers_round_trip_and_are_aligned() {
    let p = KBox::new(7u8, StdAlloc, GFP_KERNEL).unwrap().into_foreign();
    assert_eq!(<KBox<u8, StdAlloc> as ForeignOwnable>::FOREIGN_ALIGN, 16);
    assert_eq!(p.addr() % 16, 0);
    // SAFETY: `p` is a live foreign `KBox<u8, StdAlloc>`, reclaimed once.
    let b = unsafe { <KBox<u8, _>>::from_foreign(p, StdAlloc) };
    assert_eq!(*b, 7);
    drop(b);
    // A zero-sized value still gets a pointer aligned to FOREIGN_ALIGN.
    let z = KBox::pin((), StdAlloc, GFP_KERNEL).unwrap().into_foreign();
    assert_eq!(z.addr() % 16, 0);
    // SAFETY: `z` is a live foreign pinned box, borrowed then reclaimed.
    unsafe {
        let _: core::pin::Pin<&()> = <core::pin::Pin<KBox<(), StdAlloc>>>::borrow(z);
        drop(<core::pin::Pin<KBox<(), StdAlloc>>>::from_foreign(
            z, StdAlloc,
        ));
    }
    assert_eq!(StdAlloc::live(), 0);
}
