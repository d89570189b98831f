//! [`KVec`]'s calls that clone elements (`T: Clone`): building from one
//! element repeated, appending a slice, resizing (Rust-for-Linux's
//! `Vec::from_elem`, `extend_from_slice`, `resize`).

use super::KVec;
use crate::alloc::{AllocError, Allocator, Flags};

impl<T: Clone, A: Allocator> KVec<T, A> {
    /// Appends clones of `other`'s elements.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::new(&heap);
    /// v.push(1, GFP_KERNEL)?;
    ///
    /// v.extend_from_slice(&[20, 30, 40], GFP_KERNEL)?;
    /// assert_eq!(&v, &[1, 20, 30, 40]);
    ///
    /// v.extend_from_slice(&[50, 60], GFP_KERNEL)?;
    /// assert_eq!(&v, &[1, 20, 30, 40, 50, 60]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
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

    /// A vector of `n` clones of `value` on `alloc`, with a buffer of
    /// exactly `n` elements: what [`kvec![in alloc; value; n]`](crate::kvec)
    /// builds.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let v = KVec::from_elem(7u8, 3, &heap, GFP_KERNEL)?;
    /// assert_eq!((v.capacity(), &v[..]), (3, &[7, 7, 7][..]));
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn from_elem(value: T, n: usize, alloc: A, flags: Flags) -> Result<Self, AllocError> {
        let mut v = Self::with_capacity(n, alloc, flags)?;
        v.extend_with(n, value, flags)?;
        Ok(v)
    }

    /// Truncates to `new_len`, or extends with clones of `value` up to it.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::flags::GFP_KERNEL;
    ///
    /// # let heap = Heap::new();
    /// let mut v = kmem::kvec![in &heap; 1, 2, 3]?;
    /// v.resize(1, 42, GFP_KERNEL)?;
    /// assert_eq!(&v, &[1]);
    ///
    /// v.resize(3, 42, GFP_KERNEL)?;
    /// assert_eq!(&v, &[1, 42, 42]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
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
