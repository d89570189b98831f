//! The typed allocation API: [`Allocator`] with the machine's [`Kmalloc`],
//! [`Vmalloc`] and [`KVmalloc`], [`KBox`], [`KVec`] and their vmalloc
//! and kvmalloc aliases, typed slab caches ([`Cache`], [`CacheBox`]) and
//! typed memory pools ([`Mempool`], [`MempoolBox`]).
//!
//! This module follows the shape of Rust-for-Linux's `kernel::alloc`
//! (`rust/kernel/alloc.rs`, `alloc/kbox.rs`, `alloc/kvec.rs`): every
//! allocating call takes GFP [`Flags`] and is fallible, returning
//! [`AllocError`] instead of aborting, and buffers are described by
//! [`Layout`].
//!
//! # Differences from Rust-for-Linux
//!
//! kmem has no global singletons: a machine is a [`Kmem`](crate::Kmem)
//! value. So an [`Allocator`] here is a *handle* and its methods take
//! `&self`, where Rust-for-Linux's allocators are zero-sized types with
//! associated functions. Containers store their handle: [`KBox::new`] and
//! [`KVec::new`] take it as an argument. The handle is usually a `Copy`
//! reference-like type (`&'a Kmem<P>` wrapped in a `Kmalloc<'a, P>`, or a
//! plain `&A`, for which [`Allocator`] is implemented by a blanket impl), so
//! a box of a `Copy` handle costs one extra word.
//!
//! Because the allocator is an argument rather than a type, the generic
//! containers carry the `K` names themselves ([`KBox<T, A>`],
//! [`KVec<T, A>`]) instead of `Box<T, A>`/`Vec<T, A>` plus `KBox<T>` aliases.
//! The vmalloc and kvmalloc aliases exist, with the handle's lifetime and
//! the machine's platform as parameters: [`VBox<'a, T, P>`](VBox) is
//! `KBox<T, Vmalloc<'a, P>>`.
//!
//! | Rust-for-Linux | kmem | handle from |
//! |---|---|---|
//! | `Kmalloc` | [`Kmalloc<'a, P>`](Kmalloc) | [`Kmalloc::new(&k)`](Kmalloc::new) |
//! | `Vmalloc` | [`Vmalloc<'a, P>`](Vmalloc) | [`Vmalloc::new(&k)`](Vmalloc::new) |
//! | `KVmalloc` | [`KVmalloc<'a, P>`](KVmalloc) | [`KVmalloc::new(&k)`](KVmalloc::new) |
//! | `Box<T, A>` | [`KBox<T, A>`](KBox) | any [`Allocator`] |
//! | `KBox<T>` | `KBox<T, Kmalloc<'a, P>>` | |
//! | `VBox<T>` | [`VBox<'a, T, P>`](VBox) = `KBox<T, Vmalloc<'a, P>>` | |
//! | `KVBox<T>` | [`KVBox<'a, T, P>`](KVBox) = `KBox<T, KVmalloc<'a, P>>` | |
//! | `Vec<T, A>` | [`KVec<T, A>`](KVec) | any [`Allocator`] |
//! | `KVec<T>` | `KVec<T, Kmalloc<'a, P>>` | |
//! | `VVec<T>` | [`VVec<'a, T, P>`](VVec) = `KVec<T, Vmalloc<'a, P>>` | |
//! | `KVVec<T>` | [`KVVec<'a, T, P>`](KVVec) = `KVec<T, KVmalloc<'a, P>>` | |
//!
//! As in Rust-for-Linux, [`Vmalloc`] and [`KVmalloc`] honour alignments up
//! to [`PAGE_SIZE`](crate::PAGE_SIZE) and refuse larger ones with
//! [`AllocError`] (and a warning). vmalloc needs page tables, which the
//! arena platform does not have: there [`Vmalloc`] always fails and
//! [`KVmalloc`] serves only what kmalloc serves.
//!
//! `&dyn Allocator` is a valid handle too (the trait is dyn-compatible), for
//! code that does not want to be generic over the allocator.
//!
//! The examples of the containers use `Heap`, a toy bump allocator over a
//! fixed buffer that counts live blocks, kept out of the documented API.
//!
//! # Example
//!
//! ```
//! use core::alloc::Layout;
//! use core::ptr::NonNull;
//! use kmem::alloc::{flags::GFP_KERNEL, AllocError, Allocator, Flags, KBox, KVec};
//!
//! /// A toy bump allocator over a fixed buffer: it never frees.
//! struct Bump {
//!     buf: core::cell::UnsafeCell<[u64; 64]>,
//!     next: core::cell::Cell<usize>,
//! }
//!
//! // SAFETY: blocks are carved from `buf` without overlap, aligned to the
//! // layout, stay valid as long as `self`, and grown blocks keep their
//! // contents (realloc copies).
//! unsafe impl Allocator for Bump {
//!     unsafe fn realloc(
//!         &self,
//!         ptr: Option<NonNull<u8>>,
//!         layout: Layout,
//!         old_layout: Layout,
//!         _flags: Flags,
//!     ) -> Result<NonNull<[u8]>, AllocError> {
//!         if layout.size() == 0 {
//!             return Ok(NonNull::slice_from_raw_parts(kmem::alloc::dangling(layout), 0));
//!         }
//!         let base = self.buf.get().cast::<u8>();
//!         let off = self.next.get();
//!         let start = off + base.wrapping_add(off).align_offset(layout.align());
//!         let end = start.checked_add(layout.size()).ok_or(AllocError)?;
//!         if end > 64 * 8 {
//!             return Err(AllocError);
//!         }
//!         self.next.set(end);
//!         // SAFETY: `start..end` lies inside `buf`.
//!         let new = unsafe { NonNull::new_unchecked(base.add(start)) };
//!         if let Some(old) = ptr {
//!             let n = old_layout.size().min(layout.size());
//!             // SAFETY: both blocks are valid for `n` bytes and do not overlap.
//!             unsafe { core::ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), n) };
//!         }
//!         Ok(NonNull::slice_from_raw_parts(new, layout.size()))
//!     }
//! }
//!
//! let bump = Bump { buf: core::cell::UnsafeCell::new([0; 64]), next: core::cell::Cell::new(0) };
//! let b = KBox::new(42u32, &bump, GFP_KERNEL)?;
//! assert_eq!(*b, 42);
//!
//! let mut v = KVec::new(&bump);
//! v.extend_from_slice(&[1u16, 2, 3], GFP_KERNEL)?;
//! v.push(4, GFP_KERNEL)?;
//! assert_eq!(v, [1, 2, 3, 4]);
//! # Ok::<(), AllocError>(())
//! ```

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};

pub mod allocator;
mod cache;
#[doc(hidden)]
pub mod doc_alloc;
mod kbox;
pub mod kvec;
mod mempool;
#[cfg(test)]
mod tests;

pub use allocator::{KVmalloc, Kmalloc, SlabCache, Vmalloc};
pub use cache::{Cache, CacheBox, ObjectCache};
pub use kbox::{KBox, KVBox, VBox};
pub use kvec::{IntoIter, KVVec, KVec, PushError, RemoveError, VVec};
pub use mempool::{Mempool, MempoolBox};

/// GFP flags, as taken by every allocating call of this module.
///
/// This is kmem's [`Gfp`](crate::gfp::Gfp) under Rust-for-Linux's name; the
/// usual combinations are in [`flags`].
pub use crate::gfp::Gfp as Flags;

/// The allocation flags Rust-for-Linux's `kernel::alloc::flags` exposes.
///
/// See [`crate::gfp`] for all the others.
pub mod flags {
    pub use crate::gfp::{
        __GFP_HIGHMEM, __GFP_NOWARN, __GFP_ZERO, GFP_ATOMIC, GFP_KERNEL, GFP_KERNEL_ACCOUNT,
        GFP_NOFS, GFP_NOIO, GFP_NOWAIT,
    };
}

/// An allocation failed.
///
/// Carries no detail, like Rust-for-Linux's `AllocError`: the reason (no
/// memory under the GFP rules, a size the allocator cannot serve, an
/// arithmetic overflow computing the size) is reported by the allocator
/// itself. It converts to [`Error::NoMemory`](crate::Error::NoMemory).
///
/// ```
/// use kmem::alloc::AllocError;
/// assert_eq!(kmem::Error::from(AllocError), kmem::Error::NoMemory);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocError;

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory allocation failed")
    }
}

impl core::error::Error for AllocError {}

impl From<AllocError> for crate::Error {
    fn from(_: AllocError) -> Self {
        crate::Error::NoMemory
    }
}

/// A memory allocator: allocates, resizes and frees buffers described by a
/// [`Layout`], honouring GFP [`Flags`].
///
/// Unlike Rust-for-Linux's trait, whose implementors are zero-sized types
/// with associated functions, the methods take `&self`: an allocator is a
/// handle to one kmem machine (see the [module docs](self)). Only
/// [`realloc`](Allocator::realloc) must be implemented; [`alloc`](Allocator::alloc)
/// and [`free`](Allocator::free) are expressed through it.
///
/// # Safety
///
/// Implementors guarantee that:
///
/// - a block returned by an allocator stays valid until it is passed to
///   [`free`](Allocator::free) or [`realloc`](Allocator::realloc) of the same
///   allocator, or of a handle to the same allocator (for example a copy of
///   this handle: containers store a handle and free through it);
/// - a pointer to a valid block may be passed to any method of that
///   allocator;
/// - every method keeps the promises of its `# Guarantees` section.
pub unsafe trait Allocator {
    /// Allocates a block for `layout`.
    ///
    /// Equivalent to [`realloc`](Allocator::realloc) with `ptr == None`. A
    /// zero-sized `layout` returns a dangling, well-aligned pointer that
    /// needs no freeing.
    ///
    /// # Guarantees
    ///
    /// On `Ok(p)`, `p` is aligned to `layout.align()` and valid for reads and
    /// writes of `p.len() >= layout.size()` bytes until it is freed or
    /// reallocated. With [`__GFP_ZERO`](flags::__GFP_ZERO) those bytes are
    /// zero. The other flags are honoured as the GFP documentation says
    /// (may the call sleep, reclaim, dip into reserves...).
    fn alloc(&self, layout: Layout, flags: Flags) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `None` asks for a new block; `old_layout` is then ignored.
        unsafe { self.realloc(None, layout, Layout::new::<()>(), flags) }
    }

    /// Resizes the block at `ptr` to `layout`, or allocates a new one when
    /// `ptr` is `None`, or frees it when `layout.size()` is zero.
    ///
    /// A grown block may be moved; its first `old_layout.size()` bytes are
    /// preserved, and with [`__GFP_ZERO`](flags::__GFP_ZERO) the new tail is
    /// zeroed. A shrunk block may or may not give memory back. Freeing
    /// (zero `layout.size()`) returns a dangling pointer aligned to
    /// `layout.align()`.
    ///
    /// # Safety
    ///
    /// - If `ptr == Some(p)` and `old_layout.size() != 0`, `p` points to a
    ///   valid block allocated by this allocator with `old_layout`. If
    ///   `old_layout` is zero-sized, `p` may be any (dangling) pointer and is
    ///   treated as no block at all.
    /// - If `ptr` is `None`, `old_layout` is ignored.
    ///
    /// # Guarantees
    ///
    /// Those of [`alloc`](Allocator::alloc), plus: when `ptr == Some(p)`,
    /// the returned block holds the first `min(layout.size(),
    /// old_layout.size())` bytes `p` held, and on `Err(AllocError)` the
    /// block at `p` is untouched and still valid.
    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
    ) -> Result<NonNull<[u8]>, AllocError>;

    /// Frees the block at `ptr`, allocated with `layout`.
    ///
    /// # Safety
    ///
    /// - `ptr` points to a valid block allocated by this allocator with
    ///   `layout`, or `layout` is zero-sized (then nothing is freed).
    /// - The block is never accessed again.
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` is a block of `layout` from
        // this allocator; a zero-sized new layout with the smallest
        // alignment asks `realloc` to free it.
        let _ = unsafe { self.realloc(Some(ptr), Layout::new::<()>(), layout, Flags::NONE) };
    }
}

// SAFETY: forwards every call to `A`, so `A`'s guarantees carry over; all
// copies of the reference reach the same allocator.
unsafe impl<A: Allocator + ?Sized> Allocator for &A {
    #[inline]
    fn alloc(&self, layout: Layout, flags: Flags) -> Result<NonNull<[u8]>, AllocError> {
        (**self).alloc(layout, flags)
    }

    #[inline]
    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller upholds `realloc`'s contract, which is `A`'s.
        unsafe { (**self).realloc(ptr, layout, old_layout, flags) }
    }

    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller upholds `free`'s contract, which is `A`'s.
        unsafe { (**self).free(ptr, layout) }
    }
}

/// A dangling pointer aligned to `layout.align()`, for zero-sized blocks.
///
/// It carries no provenance and must never be dereferenced for more than
/// zero bytes; an [`Allocator`] returns it for zero-sized requests.
#[inline]
pub fn dangling(layout: Layout) -> NonNull<u8> {
    let p = ptr::without_provenance_mut::<u8>(layout.align());
    // SAFETY: a `Layout`'s alignment is a non-zero power of two.
    unsafe { NonNull::new_unchecked(p) }
}
