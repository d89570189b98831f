//! [`ForeignOwnable`]: ownership handed to foreign code (C, a hardware
//! descriptor, a radix tree slot) as an untyped pointer, and taken back.

use core::ffi::c_void;
use core::pin::Pin;
use core::ptr;

use super::{Allocator, KBox};

/// An owning type that can be handed to foreign code as a `*mut c_void` and
/// rebuilt from it: Rust-for-Linux's `ForeignOwnable`, implemented for
/// [`KBox<T, A>`](KBox) and `Pin<KBox<T, A>>`.
///
/// # Difference from Rust-for-Linux
///
/// A kmem box stores its allocator handle, which a single pointer cannot
/// carry. [`into_foreign`](ForeignOwnable::into_foreign) drops the handle
/// and [`from_foreign`](ForeignOwnable::from_foreign) (and
/// [`try_from_foreign`](ForeignOwnable::try_from_foreign)) take one back:
/// `KBox::<T, _>::from_foreign(ptr, alloc)` where Rust-for-Linux writes
/// `KBox::<T>::from_foreign(ptr)`. The handle must reach the allocator the
/// box came from; that is part of `from_foreign`'s safety contract, like
/// the pointer itself, so no safe code can misuse it. Keeping the handle in
/// the allocation instead would change the box's layout (and
/// [`KBox::into_raw`]'s pointer) for every user; and a handle usually is a
/// reference the foreign side's owner holds anyway. Borrowing
/// ([`borrow`](ForeignOwnable::borrow),
/// [`borrow_mut`](ForeignOwnable::borrow_mut)) needs no handle.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use kmem::alloc::{flags::GFP_KERNEL, ForeignOwnable, KBox};
///
/// let heap = Heap::new();
/// let p = KBox::new(41u64, &heap, GFP_KERNEL)?.into_foreign();
/// assert_eq!(p as usize % <KBox<u64, &Heap> as ForeignOwnable>::FOREIGN_ALIGN, 0);
/// // SAFETY: `p` came from `into_foreign` of this type and is not
/// // reclaimed while the borrow lives.
/// *unsafe { <KBox<u64, &Heap>>::borrow_mut(p) } += 1;
/// // SAFETY: `p` came from `into_foreign` of a box on `&heap`, and is
/// // reclaimed once.
/// let b = unsafe { <KBox<u64, _>>::from_foreign(p, &heap) };
/// assert_eq!(*b, 42);
/// // SAFETY: null is "nothing" for `try_from_foreign`.
/// assert!(unsafe { <KBox<u64, _>>::try_from_foreign(core::ptr::null_mut(), &heap) }.is_none());
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// # Safety
///
/// Implementors guarantee that [`into_foreign`](ForeignOwnable::into_foreign)
/// returns a non-null pointer aligned to
/// [`FOREIGN_ALIGN`](ForeignOwnable::FOREIGN_ALIGN), which the other
/// methods accept as their contracts say.
pub unsafe trait ForeignOwnable: Sized {
    /// The alignment of every pointer [`into_foreign`](ForeignOwnable::into_foreign)
    /// returns: its low `log2(FOREIGN_ALIGN)` bits are zero, free for the
    /// foreign side's tags.
    const FOREIGN_ALIGN: usize;

    /// What [`from_foreign`](ForeignOwnable::from_foreign) needs besides
    /// the pointer: the allocator handle (kmem only).
    type Allocator;

    /// A shared borrow of the value behind a foreign pointer.
    type Borrowed<'a>
    where
        Self: 'a;

    /// An exclusive borrow of the value behind a foreign pointer.
    type BorrowedMut<'a>
    where
        Self: 'a;

    /// Gives up ownership to foreign code: the value is neither dropped nor
    /// freed until the pointer comes back through
    /// [`from_foreign`](ForeignOwnable::from_foreign). The allocator handle
    /// is dropped.
    fn into_foreign(self) -> *mut c_void;

    /// Takes back ownership of what `ptr` stands for.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`into_foreign`](ForeignOwnable::into_foreign) of
    /// this type and has not been reclaimed since (it is reclaimed once);
    /// `alloc` reaches the allocator the value was allocated from; no
    /// borrow from [`borrow`](ForeignOwnable::borrow) or
    /// [`borrow_mut`](ForeignOwnable::borrow_mut) is alive.
    unsafe fn from_foreign(ptr: *mut c_void, alloc: Self::Allocator) -> Self;

    /// As [`from_foreign`](ForeignOwnable::from_foreign), but a null `ptr`
    /// gives `None`.
    ///
    /// # Safety
    ///
    /// `ptr` is null or meets [`from_foreign`](ForeignOwnable::from_foreign)'s
    /// requirements.
    unsafe fn try_from_foreign(ptr: *mut c_void, alloc: Self::Allocator) -> Option<Self> {
        if ptr.is_null() {
            None
        } else {
            // SAFETY: non-null, so the caller's promise is `from_foreign`'s.
            Some(unsafe { Self::from_foreign(ptr, alloc) })
        }
    }

    /// Borrows the value behind `ptr` for `'a`.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`into_foreign`](ForeignOwnable::into_foreign) of
    /// this type, is not reclaimed during `'a`, and no
    /// [`borrow_mut`](ForeignOwnable::borrow_mut) of it is alive during
    /// `'a`.
    unsafe fn borrow<'a>(ptr: *mut c_void) -> Self::Borrowed<'a>;

    /// Borrows the value behind `ptr` exclusively for `'a`.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`into_foreign`](ForeignOwnable::into_foreign) of
    /// this type, is not reclaimed during `'a`, and no other borrow of it is
    /// alive during `'a`.
    unsafe fn borrow_mut<'a>(ptr: *mut c_void) -> Self::BorrowedMut<'a>;
}

/// The foreign pointer of a box: its block, or for a zero-sized `T` a
/// dangling pointer aligned to `align` (any aligned pointer is a valid
/// zero-sized `T`, and this one honours `FOREIGN_ALIGN`).
fn box_into_foreign<T, A: Allocator>(b: KBox<T, A>, align: usize) -> *mut c_void {
    let raw = KBox::into_raw(b);
    if size_of::<T>() == 0 {
        ptr::without_provenance_mut(align)
    } else {
        raw.cast()
    }
}

/// The larger of `T`'s alignment and the allocator's minimum.
const fn foreign_align<T, A: Allocator>() -> usize {
    if align_of::<T>() < A::MIN_ALIGN {
        A::MIN_ALIGN
    } else {
        align_of::<T>()
    }
}

// SAFETY: `into_foreign` returns the box's block, which is aligned to `T`
// and to the allocator's `MIN_ALIGN` (an `Allocator` promise for blocks of
// non-zero size), or a non-null dangling pointer aligned to both.
unsafe impl<T, A: Allocator> ForeignOwnable for KBox<T, A> {
    const FOREIGN_ALIGN: usize = foreign_align::<T, A>();

    type Allocator = A;
    type Borrowed<'a>
        = &'a T
    where
        Self: 'a;
    type BorrowedMut<'a>
        = &'a mut T
    where
        Self: 'a;

    fn into_foreign(self) -> *mut c_void {
        box_into_foreign(self, Self::FOREIGN_ALIGN)
    }

    unsafe fn from_foreign(ptr: *mut c_void, alloc: A) -> Self {
        // SAFETY: `ptr` is the block (or an aligned dangling pointer for a
        // zero-sized `T`) of a box on the allocator `alloc` reaches, given
        // back once (the caller's promise).
        unsafe { KBox::from_raw(ptr.cast(), alloc) }
    }

    unsafe fn borrow<'a>(ptr: *mut c_void) -> &'a T {
        // SAFETY: a live, aligned `T` not mutably borrowed during `'a`.
        unsafe { &*ptr.cast::<T>() }
    }

    unsafe fn borrow_mut<'a>(ptr: *mut c_void) -> &'a mut T {
        // SAFETY: a live, aligned `T` not otherwise borrowed during `'a`.
        unsafe { &mut *ptr.cast::<T>() }
    }
}

// SAFETY: as for `KBox<T, A>`; the value stays pinned: it is never moved
// while foreign, and only handed out as `Pin<&T>`/`Pin<&mut T>`.
unsafe impl<T, A: Allocator + 'static> ForeignOwnable for Pin<KBox<T, A>> {
    const FOREIGN_ALIGN: usize = foreign_align::<T, A>();

    type Allocator = A;
    type Borrowed<'a>
        = Pin<&'a T>
    where
        Self: 'a;
    type BorrowedMut<'a>
        = Pin<&'a mut T>
    where
        Self: 'a;

    fn into_foreign(self) -> *mut c_void {
        // SAFETY: the box is only turned into a pointer; the value is not
        // moved, and is rebuilt pinned by `from_foreign`.
        let b = unsafe { Pin::into_inner_unchecked(self) };
        box_into_foreign(b, Self::FOREIGN_ALIGN)
    }

    unsafe fn from_foreign(ptr: *mut c_void, alloc: A) -> Self {
        // SAFETY: as for `KBox<T, A>`; the value was pinned before it went
        // foreign and has not moved since.
        unsafe { Pin::new_unchecked(KBox::from_raw(ptr.cast(), alloc)) }
    }

    unsafe fn borrow<'a>(ptr: *mut c_void) -> Pin<&'a T> {
        // SAFETY: a live, aligned, pinned `T` not mutably borrowed during
        // `'a`.
        unsafe { Pin::new_unchecked(&*ptr.cast::<T>()) }
    }

    unsafe fn borrow_mut<'a>(ptr: *mut c_void) -> Pin<&'a mut T> {
        // SAFETY: a live, aligned, pinned `T` not otherwise borrowed during
        // `'a`.
        unsafe { Pin::new_unchecked(&mut *ptr.cast::<T>()) }
    }
}
