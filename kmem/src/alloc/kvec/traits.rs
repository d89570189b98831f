//! [`KVec`]'s standard traits: conversion from a boxed array, `Default`,
//! `Deref` to a slice, `Borrow`, indexing, `Debug`, and equality with
//! vectors, slices and arrays in every direction Rust-for-Linux's `Vec`
//! has.

use core::borrow::{Borrow, BorrowMut};
use core::fmt;
use core::ops::{Deref, DerefMut, Index, IndexMut};
use core::slice::{self, SliceIndex};

use super::KVec;
use crate::alloc::{Allocator, KBox};

impl<T, A: Allocator, const N: usize> From<KBox<[T; N], A>> for KVec<T, A> {
    /// Takes over the box's block as the vector's buffer, without copying:
    /// length and capacity `N`.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KBox, KVec};
    ///
    /// # let heap = Heap::new();
    /// let b = KBox::new([1u16, 2, 3], &heap, GFP_KERNEL)?;
    /// let v = KVec::from(b);
    /// assert_eq!((v.len(), v.capacity()), (3, 3));
    /// assert_eq!(v, [1, 2, 3]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    fn from(b: KBox<[T; N], A>) -> Self {
        let (raw, alloc) = KBox::into_raw_with_allocator(b);
        // SAFETY: the box owned `N` initialised `T`s at `raw`, aligned for
        // `[T; N]` hence for `T`; its block, if any, was allocated by `alloc`
        // with `Layout::new::<[T; N]>()`, which is `Layout::array::<T>(N)`;
        // for a zero-sized array it is dangling, which `from_raw_parts`
        // accepts for a zero-sized `T` or `N == 0`.
        unsafe { KVec::from_raw_parts(raw.cast::<T>(), N, N, alloc) }
    }
}

impl<T, A: Allocator + Default> Default for KVec<T, A> {
    /// An empty vector on the default handle of `A` (for handles that have
    /// one; Rust-for-Linux's allocators all do, being types).
    fn default() -> Self {
        Self::new(A::default())
    }
}

impl<T, A: Allocator> Deref for KVec<T, A> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is aligned and non-null, and the first `len`
        // elements are initialised.
        unsafe { slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T, A: Allocator> DerefMut for KVec<T, A> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A vector can stand where a borrowed slice is expected.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use core::borrow::Borrow;
/// use kmem::alloc::{flags::GFP_KERNEL, KVec};
///
/// struct Foo<B: Borrow<[u32]>>(B);
///
/// # let heap = Heap::new();
/// // An owned array.
/// let owned_array = Foo([1, 2, 3]);
/// // An owned vector.
/// let owned_vec = Foo(KVec::from_elem(0, 3, &heap, GFP_KERNEL)?);
/// // A slice borrowed from an array.
/// let arr = [1, 2, 3];
/// let borrowed_slice = Foo(&arr[..]);
/// # let s: &[u32] = owned_vec.0.borrow();
/// # assert_eq!(s, &[0, 0, 0]);
/// # let _ = (owned_array, borrowed_slice);
/// # Ok::<(), kmem::Error>(())
/// ```
impl<T, A: Allocator> Borrow<[T]> for KVec<T, A> {
    fn borrow(&self) -> &[T] {
        self
    }
}

/// A vector can stand where a mutably borrowed slice is expected.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use core::borrow::BorrowMut;
/// use kmem::alloc::{flags::GFP_KERNEL, KVec};
///
/// struct Foo<B: BorrowMut<[u32]>>(B);
///
/// # let heap = Heap::new();
/// // An owned array.
/// let owned_array = Foo([1, 2, 3]);
/// // An owned vector.
/// let mut owned_vec = Foo(KVec::from_elem(0, 3, &heap, GFP_KERNEL)?);
/// // A slice mutably borrowed from an array.
/// let mut arr = [1, 2, 3];
/// let borrowed_slice = Foo(&mut arr[..]);
/// # let s: &mut [u32] = owned_vec.0.borrow_mut();
/// # s[1] = 5;
/// # assert_eq!(owned_vec.0, [0, 5, 0]);
/// # let _ = (owned_array, borrowed_slice);
/// # Ok::<(), kmem::Error>(())
/// ```
impl<T, A: Allocator> BorrowMut<[T]> for KVec<T, A> {
    fn borrow_mut(&mut self) -> &mut [T] {
        self
    }
}

impl<T, I: SliceIndex<[T]>, A: Allocator> Index<I> for KVec<T, A> {
    type Output = I::Output;

    #[inline]
    fn index(&self, index: I) -> &I::Output {
        Index::index(&**self, index)
    }
}

impl<T, I: SliceIndex<[T]>, A: Allocator> IndexMut<I> for KVec<T, A> {
    #[inline]
    fn index_mut(&mut self, index: I) -> &mut I::Output {
        IndexMut::index_mut(&mut **self, index)
    }
}

impl<T: fmt::Debug, A: Allocator> fmt::Debug for KVec<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Eq, A: Allocator> Eq for KVec<T, A> {}

/// `PartialEq` between a vector and a vector, slice or array, in the
/// directions Rust-for-Linux's `Vec` (and std's) have: the elements are
/// compared in order.
macro_rules! slice_eq {
    ($([$($g:tt)*] $lhs:ty => $rhs:ty;)*) => {$(
        impl<T: PartialEq<U>, U, $($g)*> PartialEq<$rhs> for $lhs {
            #[inline]
            fn eq(&self, other: &$rhs) -> bool {
                self[..] == other[..]
            }
        }
    )*};
}

slice_eq! {
    [A: Allocator, B: Allocator] KVec<T, A> => KVec<U, B>;
    [A: Allocator] KVec<T, A> => [U];
    [A: Allocator] KVec<T, A> => &[U];
    [A: Allocator] KVec<T, A> => &mut [U];
    [A: Allocator] [T] => KVec<U, A>;
    [A: Allocator] &[T] => KVec<U, A>;
    [A: Allocator] &mut [T] => KVec<U, A>;
    [A: Allocator, const N: usize] KVec<T, A> => [U; N];
    [A: Allocator, const N: usize] KVec<T, A> => &[U; N];
}

impl<'a, T, A: Allocator> IntoIterator for &'a KVec<T, A> {
    type Item = &'a T;
    type IntoIter = slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T, A: Allocator> IntoIterator for &'a mut KVec<T, A> {
    type Item = &'a mut T;
    type IntoIter = slice::IterMut<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}
