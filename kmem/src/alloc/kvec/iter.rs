//! The by-value iterators of [`KVec`]: [`IntoIter`] (owns the buffer) and
//! [`DrainAll`] (borrows it).

use core::marker::PhantomData;
use core::mem::{self, ManuallyDrop};
use core::ptr::{self, NonNull};
use core::slice;

use super::KVec;
use crate::alloc::{Allocator, Flags};

impl<T, A: Allocator> IntoIterator for KVec<T, A> {
    type Item = T;
    type IntoIter = IntoIter<T, A>;

    /// Consumes the vector, yielding its elements by value from first to
    /// last; the buffer is freed when the iterator is dropped (with any
    /// elements not yet taken).
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// # let heap = Heap::new();
    /// let v = kmem::kvec![in &heap; 1, 2]?;
    /// let mut v_iter = v.into_iter();
    ///
    /// let first_element: Option<u32> = v_iter.next();
    /// assert_eq!(first_element, Some(1));
    /// assert_eq!(v_iter.next(), Some(2));
    /// assert_eq!(v_iter.next(), None);
    ///
    /// let v = kmem::kvec![in &heap];
    /// let mut v_iter = v.into_iter();
    /// let first_element: Option<u32> = v_iter.next();
    /// assert_eq!(first_element, None);
    /// # Ok::<(), kmem::Error>(())
    /// ```
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

/// The by-value iterator of a [`KVec`], from [`KVec::into_iter`]: it owns
/// the vector's buffer and allocator handle.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// # let heap = Heap::new();
/// let v = kmem::kvec![in &heap; 0, 1, 2]?;
/// let iter = v.into_iter();
/// # drop(iter);
/// # Ok::<(), kmem::Error>(())
/// ```
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

// SAFETY: `&IntoIter` gives access to nothing but its length and handle.
unsafe impl<T: Sync, A: Allocator + Sync> Sync for IntoIter<T, A> {}

impl<T, A: Allocator> IntoIter<T, A> {
    /// Turns the elements not yet taken back into a [`KVec`], reusing the
    /// buffer: `Iterator::collect`, which cannot report an allocation
    /// failure nor take [`Flags`], specialised for this iterator.
    ///
    /// It never fails. If elements were taken from the front, the rest are
    /// moved to the start of the buffer and the buffer is shrunk to fit them
    /// with `flags`; if the allocator refuses to shrink, the vector keeps the
    /// whole buffer.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::flags::GFP_KERNEL;
    ///
    /// # let heap = Heap::new();
    /// let v = kmem::kvec![in &heap; 1, 2, 3]?;
    /// let mut it = v.into_iter();
    ///
    /// assert_eq!(it.next(), Some(1));
    ///
    /// let v = it.collect(GFP_KERNEL);
    /// assert_eq!(v, [2, 3]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn collect(self, flags: Flags) -> KVec<T, A> {
        let it = ManuallyDrop::new(self);
        // SAFETY: `it` is never used or dropped again, so the handle is
        // moved out exactly once.
        let alloc = unsafe { ptr::read(&it.alloc) };
        let (buf, mut cap, start, len) = (it.buf, it.cap, it.start, it.end - it.start);
        let mut ptr = buf;
        if start != 0 {
            // SAFETY: slots `start..end` are initialised and owned, and
            // `0..len` lies inside the same buffer; `copy` allows the
            // overlap. Afterwards `0..len` holds the elements.
            unsafe { ptr::copy(buf.as_ptr().add(start), buf.as_ptr(), len) };
            if mem::size_of::<T>() != 0 {
                // SAFETY: by the invariant `buf` is a block of `cap`
                // elements from `alloc` (`cap > 0`: an element was taken),
                // and `T` is not zero-sized; the first `len <= cap`
                // elements are preserved.
                if let Ok(p) = unsafe { KVec::<T, A>::realloc_buffer(&alloc, buf, cap, len, flags) }
                {
                    (ptr, cap) = (p, len);
                }
            }
        }
        // SAFETY: `ptr` is a buffer of `cap` elements from `alloc` (or
        // dangling with `cap == 0`, always so for a zero-sized `T`) whose
        // first `len` are initialised and owned by nothing else.
        unsafe { KVec::from_raw_parts(ptr.as_ptr(), len, cap, alloc) }
    }
}

impl<T, A: Allocator> Iterator for IntoIter<T, A> {
    type Item = T;

    /// The next element from the front.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// # let heap = Heap::new();
    /// let v = kmem::kvec![in &heap; 1, 2, 3]?;
    /// let mut it = v.into_iter();
    ///
    /// assert_eq!(it.next(), Some(1));
    /// assert_eq!(it.next(), Some(2));
    /// assert_eq!(it.next(), Some(3));
    /// assert_eq!(it.next(), None);
    /// # Ok::<(), kmem::Error>(())
    /// ```
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

    /// Exactly the number of elements left.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::KVec;
    ///
    /// # let heap = Heap::new();
    /// let v: KVec<u32, _> = kmem::kvec![in &heap; 1, 2, 3]?;
    /// let mut iter = v.into_iter();
    /// let size = iter.size_hint().0;
    ///
    /// iter.next();
    /// assert_eq!(iter.size_hint().0, size - 1);
    /// iter.next();
    /// assert_eq!(iter.size_hint().0, size - 2);
    /// iter.next();
    /// assert_eq!(iter.size_hint().0, size - 3);
    /// # Ok::<(), kmem::Error>(())
    /// ```
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
        // dropped once (`self` is going away).
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

/// The iterator of [`KVec::drain_all`]: it owns the elements the vector
/// held, but not the buffer, which stays with the (now empty) vector.
///
/// Elements not taken are dropped with the iterator. If the iterator is
/// leaked instead, so are they; the vector stays empty and valid.
///
/// # Invariants
///
/// Every element `rest` reaches is initialised and owned by the iterator
/// (the vector no longer counts it), and is taken at most once.
pub struct DrainAll<'a, T> {
    rest: slice::IterMut<'a, T>,
}

impl<'a, T> DrainAll<'a, T> {
    /// # Safety
    ///
    /// The elements of `elems` are initialised and ownership of them passes
    /// to the iterator (their owner will neither drop nor read them).
    pub(super) unsafe fn new(elems: &'a mut [T]) -> Self {
        // INVARIANT: guaranteed by the caller.
        DrainAll {
            rest: elems.iter_mut(),
        }
    }
}

impl<T> Iterator for DrainAll<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let x: *mut T = self.rest.next()?;
        // SAFETY: by the invariant the element is ours and, having left
        // `rest`, is read exactly once.
        Some(unsafe { x.read() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rest.size_hint()
    }
}

impl<T> DoubleEndedIterator for DrainAll<'_, T> {
    fn next_back(&mut self) -> Option<T> {
        let x: *mut T = self.rest.next_back()?;
        // SAFETY: as in `next`.
        Some(unsafe { x.read() })
    }
}

impl<T> ExactSizeIterator for DrainAll<'_, T> {}

impl<T> Drop for DrainAll<'_, T> {
    fn drop(&mut self) {
        let rest: *mut [T] = mem::take(&mut self.rest).into_slice();
        // SAFETY: by the invariant the elements not taken are ours; they
        // leave `rest` (now empty) and are dropped once.
        unsafe { ptr::drop_in_place(rest) };
    }
}
