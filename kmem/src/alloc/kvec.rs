//! [`KVec`], a growable array in a block of an [`Allocator`].

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{self, ManuallyDrop, MaybeUninit};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};
use core::slice;

use super::{AllocError, Allocator, Flags, KVmalloc, Vmalloc};

/// A growable array in memory from the allocator `A`: the kernel's `Vec`.
///
/// Like Rust-for-Linux's `Vec<T, A>` (aliased `KVec<T>` there), every call
/// that may allocate takes GFP [`Flags`] and returns
/// `Result<_, AllocError>`; the vector is left unchanged when it fails.
/// Its `VVec<T>` and `KVVec<T>` are the aliases [`VVec`] and [`KVVec`] here
/// (`KVec<T, Vmalloc<'a, P>>`, `KVec<T, KVmalloc<'a, P>>`).
/// Unlike it, the vector stores its allocator handle (see
/// [the module docs](super)).
///
/// Growth doubles the capacity (or grows to exactly what is needed if that
/// is more); sizes are computed with checked arithmetic, so a request whose
/// byte size would exceed `isize::MAX` fails with [`AllocError`] instead of
/// wrapping. Zero-sized `T` never allocates and has capacity `usize::MAX`.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use kmem::alloc::{flags::GFP_KERNEL, KVec};
///
/// let heap = Heap::new();
/// let mut v = KVec::with_capacity(2, &heap, GFP_KERNEL)?;
/// v.push(1u32, GFP_KERNEL)?;
/// v.extend_from_slice(&[2, 3, 4], GFP_KERNEL)?;
/// assert_eq!(v, [1, 2, 3, 4]);
/// assert_eq!(v.capacity(), 4);
/// assert_eq!(v.pop(), Some(4));
/// assert_eq!(v.remove(0), Ok(1));
/// assert_eq!(v.iter().sum::<u32>(), 5);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// # Invariants
///
/// - `len <= capacity()` and the first `len` elements are initialised.
/// - If `T` is zero-sized, `cap == 0` and `ptr` is dangling.
/// - Otherwise, if `cap == 0`, `ptr` is dangling and nothing is allocated;
///   if `cap > 0`, `ptr` is a block allocated by `alloc` with
///   `Layout::array::<T>(cap)` (which is valid), owned by the vector.
pub struct KVec<T, A: Allocator> {
    ptr: NonNull<T>,
    cap: usize,
    len: usize,
    alloc: A,
    _owns: PhantomData<T>,
}

/// A [`KVec`] in vmalloc memory: Rust-for-Linux's `VVec<T>`
/// (`Vec<T, Vmalloc>`), here with the [`Vmalloc`] handle's lifetime and
/// platform as parameters.
///
/// For large arrays: the buffer is virtually contiguous and takes whole
/// pages, so growth within the pages it has keeps the buffer in place
/// ([`vrealloc`](crate::Kmem::vrealloc)), and shrinking always does. It
/// needs a platform with page tables: on the arena every allocation fails.
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, AllocError, VVec, Vmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let mut v: VVec<'_, u64, _> = VVec::new(Vmalloc::new(&k));
/// assert_eq!(v.push(1, GFP_KERNEL), Err(AllocError)); // the arena has no vmalloc
/// ```
pub type VVec<'a, T, P> = KVec<T, Vmalloc<'a, P>>;

/// A [`KVec`] from kvmalloc: Rust-for-Linux's `KVVec<T>`
/// (`Vec<T, KVmalloc>`). The buffer is kmalloc memory while kmalloc can
/// serve it and moves to vmalloc memory when it grows beyond (see
/// [`KVmalloc`]).
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, KVVec, KVmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let mut v: KVVec<'_, u16, _> = KVVec::new(KVmalloc::new(&k));
/// v.extend_from_slice(&[1, 2, 3], GFP_KERNEL).unwrap();
/// assert!(!k.is_vmalloc_addr(v.as_ptr().cast()));
/// assert_eq!(v, [1, 2, 3]);
/// ```
pub type KVVec<'a, T, P> = KVec<T, KVmalloc<'a, P>>;

// SAFETY: the vector owns its elements and its allocator handle.
unsafe impl<T: Send, A: Allocator + Send> Send for KVec<T, A> {}

// SAFETY: `&KVec` only gives `&[T]` and `&A`.
unsafe impl<T: Sync, A: Allocator + Sync> Sync for KVec<T, A> {}

/// Error of [`KVec::push_within_capacity`]: the vector is full; the value
/// is handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PushError<T>(pub T);

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushError(not enough capacity)")
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not enough capacity")
    }
}

impl<T> From<PushError<T>> for crate::Error {
    /// `EINVAL`, as in Rust-for-Linux: the system is not out of memory, the
    /// caller asked not to grow.
    fn from(_: PushError<T>) -> Self {
        crate::Error::InvalidArgument
    }
}

/// Error of [`KVec::remove`]: the index is out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveError;

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("index out of bounds")
    }
}

impl From<RemoveError> for crate::Error {
    /// `EINVAL`.
    fn from(_: RemoveError) -> Self {
        crate::Error::InvalidArgument
    }
}

impl<T, A: Allocator> KVec<T, A> {
    const IS_ZST: bool = mem::size_of::<T>() == 0;

    /// An empty vector on `alloc`; allocates nothing.
    #[inline]
    pub const fn new(alloc: A) -> Self {
        // INVARIANT: empty, no block, dangling pointer.
        KVec {
            ptr: NonNull::dangling(),
            cap: 0,
            len: 0,
            alloc,
            _owns: PhantomData,
        }
    }

    /// An empty vector with room for at least `capacity` elements.
    pub fn with_capacity(capacity: usize, alloc: A, flags: Flags) -> Result<Self, AllocError> {
        let mut v = Self::new(alloc);
        v.reserve(capacity, flags)?;
        Ok(v)
    }

    /// How many elements fit without reallocating (`usize::MAX` for
    /// zero-sized `T`).
    #[inline]
    pub fn capacity(&self) -> usize {
        if Self::IS_ZST {
            usize::MAX
        } else {
            self.cap
        }
    }

    /// The number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements as a slice.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        self
    }

    /// The elements as a mutable slice.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self
    }

    /// A pointer to the buffer (dangling when nothing is allocated).
    #[inline]
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    /// A mutable pointer to the buffer (dangling when nothing is allocated).
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// The allocator handle the vector allocates from.
    #[inline]
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// The unused capacity, to be initialised before a [`set_len`](KVec::set_len).
    pub fn spare_capacity_mut(&mut self) -> &mut [MaybeUninit<T>] {
        // SAFETY: `len <= capacity()`, so `ptr + len` stays within the
        // block (or is dangling for a ZST or an empty buffer, with a
        // zero-length result), and the `capacity() - len` slots after it
        // belong to the vector; `MaybeUninit` needs no initialisation.
        unsafe {
            slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.len).cast::<MaybeUninit<T>>(),
                self.capacity() - self.len,
            )
        }
    }

    /// Sets the length without dropping or initialising anything.
    ///
    /// # Safety
    ///
    /// `new_len <= capacity()`, and the first `new_len` elements are
    /// initialised. Elements beyond `new_len` are forgotten.
    #[inline]
    pub unsafe fn set_len(&mut self, new_len: usize) {
        debug_assert!(new_len <= self.capacity());
        // INVARIANT: guaranteed by the caller.
        self.len = new_len;
    }

    /// Makes room for at least `additional` more elements.
    ///
    /// Grows to the larger of twice the capacity and `len + additional`
    /// (just the latter if twice the capacity would not fit in `isize::MAX`
    /// bytes). Fails without changing the vector if `len + additional`
    /// elements do not fit in `isize::MAX` bytes or the allocator refuses;
    /// the allocator is asked at most once.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// let heap = Heap::new();
    /// let mut v = KVec::<u64, _>::new(&heap);
    /// v.reserve(10, GFP_KERNEL)?;
    /// assert!(v.capacity() >= 10);
    /// assert!(v.reserve(usize::MAX, GFP_KERNEL).is_err());
    /// # Ok::<(), kmem::alloc::AllocError>(())
    /// ```
    pub fn reserve(&mut self, additional: usize, flags: Flags) -> Result<(), AllocError> {
        if self.capacity() - self.len >= additional {
            return Ok(());
        }
        if Self::IS_ZST {
            // The capacity is already `usize::MAX`.
            return Err(AllocError);
        }
        let needed = self.len.checked_add(additional).ok_or(AllocError)?;
        // Double, unless doubling alone would exceed `isize::MAX` bytes while
        // `needed` does not. The allocator is asked once: retrying a smaller
        // size after it refused would repeat reclaim and failure reports.
        let doubled = self.cap.saturating_mul(2);
        let new_cap = if doubled > needed && Layout::array::<T>(doubled).is_ok() {
            doubled
        } else {
            needed
        };
        self.grow_to(new_cap, flags)
    }

    /// Reallocates the buffer to exactly `new_cap` elements (`new_cap >=
    /// len`, `T` not zero-sized); frees it for `new_cap == 0`.
    fn grow_to(&mut self, new_cap: usize, flags: Flags) -> Result<(), AllocError> {
        debug_assert!(!Self::IS_ZST && new_cap >= self.len);
        let layout = Layout::array::<T>(new_cap).map_err(|_| AllocError)?;
        let old_layout = Self::buffer_layout(self.cap);
        let old = if self.cap == 0 {
            None
        } else {
            Some(self.ptr.cast::<u8>())
        };
        // SAFETY: by the invariant `old` is `None` or a block from `alloc`
        // with `old_layout`. The first `len` elements are preserved by
        // `realloc`'s guarantee; on failure the old block is untouched.
        let block = unsafe {
            self.alloc
                .realloc(old, layout, old_layout, flags, super::NumaNode::NO_NODE)?
        };
        // INVARIANT: `block` is a block of `layout` (or dangling when
        // `new_cap == 0`), aligned for `T`, holding the first `len`
        // elements.
        debug_assert!(block.len() >= layout.size());
        self.ptr = if new_cap == 0 {
            NonNull::dangling()
        } else {
            block.cast::<T>()
        };
        debug_assert!(self.ptr.as_ptr().is_aligned());
        self.cap = new_cap;
        Ok(())
    }

    /// The layout of a buffer of `cap` elements of this vector.
    fn buffer_layout(cap: usize) -> Layout {
        // SAFETY: `cap` is 0 or the capacity of a buffer that was allocated
        // with `Layout::array::<T>(cap)`, so `cap * size_of::<T>()` does not
        // overflow `isize::MAX`; `align_of` is a power of two.
        unsafe {
            Layout::from_size_align_unchecked(cap * mem::size_of::<T>(), mem::align_of::<T>())
        }
    }

    /// Shrinks the buffer to the length (frees it when empty). Fails, leaving
    /// the vector unchanged, if the allocator does.
    pub fn shrink_to_fit(&mut self, flags: Flags) -> Result<(), AllocError> {
        if Self::IS_ZST || self.cap == self.len {
            return Ok(());
        }
        self.grow_to(self.len, flags)
    }

    /// Appends `x`, growing if needed. On failure `x` is dropped.
    pub fn push(&mut self, x: T, flags: Flags) -> Result<(), AllocError> {
        self.reserve(1, flags)?;
        // SAFETY: `reserve` made room for one more element.
        unsafe { self.push_unchecked(x) };
        Ok(())
    }

    /// Appends `x` if there is room, without allocating.
    pub fn push_within_capacity(&mut self, x: T) -> Result<(), PushError<T>> {
        if self.len < self.capacity() {
            // SAFETY: there is room for one more element.
            unsafe { self.push_unchecked(x) };
            Ok(())
        } else {
            Err(PushError(x))
        }
    }

    /// # Safety
    ///
    /// `len < capacity()`.
    unsafe fn push_unchecked(&mut self, x: T) {
        // SAFETY: slot `len` is inside the buffer (the caller guarantees it)
        // and uninitialised.
        unsafe { self.ptr.as_ptr().add(self.len).write(x) };
        // INVARIANT: the new element is initialised.
        self.len += 1;
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        // INVARIANT: the last element's ownership moves to the caller.
        self.len -= 1;
        // SAFETY: slot `len` held an initialised element, now read once.
        Some(unsafe { self.ptr.as_ptr().add(self.len).read() })
    }

    /// Removes the element at `i`, shifting the following ones down.
    pub fn remove(&mut self, i: usize) -> Result<T, RemoveError> {
        if i >= self.len {
            return Err(RemoveError);
        }
        // SAFETY: `i < len`, so the element at `i` is initialised and read
        // once; the `len - i - 1` elements after it are moved down by one,
        // within the buffer.
        let value = unsafe {
            let p = self.ptr.as_ptr().add(i);
            let value = p.read();
            ptr::copy(p.add(1), p, self.len - i - 1);
            value
        };
        // INVARIANT: the first `len - 1` slots are initialised.
        self.len -= 1;
        Ok(value)
    }

    /// Drops the elements from `len` on; keeps the capacity.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let tail = ptr::slice_from_raw_parts_mut(
            // SAFETY: `len < self.len`, so this is inside the buffer.
            unsafe { self.ptr.as_ptr().add(len) },
            self.len - len,
        );
        // INVARIANT: the tail leaves the vector before it is dropped, so a
        // panicking destructor cannot cause a double drop.
        self.len = len;
        // SAFETY: the tail held initialised elements no longer owned by the
        // vector; they are dropped once.
        unsafe { ptr::drop_in_place(tail) };
    }

    /// Drops all elements; keeps the capacity.
    #[inline]
    pub fn clear(&mut self) {
        self.truncate(0);
    }
}

impl<T: Clone, A: Allocator> KVec<T, A> {
    /// Appends clones of `other`'s elements.
    pub fn extend_from_slice(&mut self, other: &[T], flags: Flags) -> Result<(), AllocError> {
        self.reserve(other.len(), flags)?;
        for x in other {
            // SAFETY: `reserve` made room for all of `other`.
            unsafe { self.push_unchecked(x.clone()) };
        }
        Ok(())
    }

    /// Appends `n` clones of `value`.
    pub fn extend_with(&mut self, n: usize, value: T, flags: Flags) -> Result<(), AllocError> {
        self.reserve(n, flags)?;
        for _ in 1..n {
            // SAFETY: `reserve` made room for `n` elements.
            unsafe { self.push_unchecked(value.clone()) };
        }
        if n > 0 {
            // SAFETY: as above, the last of the `n`.
            unsafe { self.push_unchecked(value) };
        }
        Ok(())
    }

    /// Truncates to `new_len`, or extends with clones of `value` up to it.
    pub fn resize(&mut self, new_len: usize, value: T, flags: Flags) -> Result<(), AllocError> {
        match new_len.checked_sub(self.len) {
            Some(n) => self.extend_with(n, value, flags),
            None => {
                self.truncate(new_len);
                Ok(())
            }
        }
    }
}

impl<T, A: Allocator> Drop for KVec<T, A> {
    fn drop(&mut self) {
        // SAFETY: the first `len` elements are initialised and owned.
        unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) };
        if !Self::IS_ZST && self.cap != 0 {
            // SAFETY: by the invariant the buffer is a block from `alloc`
            // with this layout; its elements are gone.
            unsafe {
                self.alloc
                    .free(self.ptr.cast(), Self::buffer_layout(self.cap))
            };
        }
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

impl<T: fmt::Debug, A: Allocator> fmt::Debug for KVec<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: PartialEq<U>, U, A: Allocator, B: Allocator> PartialEq<KVec<U, B>> for KVec<T, A> {
    fn eq(&self, other: &KVec<U, B>) -> bool {
        self[..] == other[..]
    }
}

impl<T: Eq, A: Allocator> Eq for KVec<T, A> {}

impl<T: PartialEq<U>, U, A: Allocator> PartialEq<[U]> for KVec<T, A> {
    fn eq(&self, other: &[U]) -> bool {
        self[..] == other[..]
    }
}

impl<T: PartialEq<U>, U, A: Allocator> PartialEq<&[U]> for KVec<T, A> {
    fn eq(&self, other: &&[U]) -> bool {
        self[..] == other[..]
    }
}

impl<T: PartialEq<U>, U, A: Allocator, const N: usize> PartialEq<[U; N]> for KVec<T, A> {
    fn eq(&self, other: &[U; N]) -> bool {
        self[..] == other[..]
    }
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

impl<T, A: Allocator> IntoIterator for KVec<T, A> {
    type Item = T;
    type IntoIter = IntoIter<T, A>;

    /// Consumes the vector, yielding its elements by value; the buffer is
    /// freed when the iterator is dropped (with any elements not yet taken).
    fn into_iter(self) -> IntoIter<T, A> {
        let v = ManuallyDrop::new(self);
        // SAFETY: `v` is never used or dropped again, so the handle is moved
        // out exactly once.
        let alloc = unsafe { ptr::read(&v.alloc) };
        // INVARIANT: the buffer, its capacity and its `len` elements move to
        // the iterator.
        IntoIter {
            buf: v.ptr,
            cap: v.cap,
            start: 0,
            end: v.len,
            alloc,
            _owns: PhantomData,
        }
    }
}

/// The by-value iterator of a [`KVec`].
///
/// # Invariants
///
/// `buf` and `cap` are a [`KVec`]'s buffer (same rules); slots
/// `start..end` hold initialised elements owned by the iterator.
pub struct IntoIter<T, A: Allocator> {
    buf: NonNull<T>,
    cap: usize,
    start: usize,
    end: usize,
    alloc: A,
    _owns: PhantomData<T>,
}

// SAFETY: as for `KVec`.
unsafe impl<T: Send, A: Allocator + Send> Send for IntoIter<T, A> {}

// SAFETY: `&IntoIter` gives access to nothing but its length.
unsafe impl<T: Sync, A: Allocator + Sync> Sync for IntoIter<T, A> {}

impl<T, A: Allocator> Iterator for IntoIter<T, A> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.start == self.end {
            return None;
        }
        // SAFETY: slot `start` is initialised and owned; after the read it
        // leaves the owned range.
        let x = unsafe { self.buf.as_ptr().add(self.start).read() };
        self.start += 1;
        Some(x)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.start;
        (n, Some(n))
    }
}

impl<T, A: Allocator> DoubleEndedIterator for IntoIter<T, A> {
    fn next_back(&mut self) -> Option<T> {
        if self.start == self.end {
            return None;
        }
        self.end -= 1;
        // SAFETY: slot `end` was initialised and owned, and has just left
        // the owned range.
        Some(unsafe { self.buf.as_ptr().add(self.end).read() })
    }
}

impl<T, A: Allocator> ExactSizeIterator for IntoIter<T, A> {}

impl<T, A: Allocator> Drop for IntoIter<T, A> {
    fn drop(&mut self) {
        // SAFETY: slots `start..end` are initialised and owned; they are
        // dropped once (`start == end` afterwards would not matter: `self`
        // is going away).
        unsafe {
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(
                self.buf.as_ptr().add(self.start),
                self.end - self.start,
            ))
        };
        if mem::size_of::<T>() != 0 && self.cap != 0 {
            // SAFETY: by the invariant the buffer is a block from `alloc`
            // with this layout; no element is left in it.
            unsafe {
                self.alloc
                    .free(self.buf.cast(), KVec::<T, A>::buffer_layout(self.cap))
            };
        }
    }
}
