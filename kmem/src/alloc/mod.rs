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
//! `docs/rust-api.md` in the repository maps every item of Rust-for-Linux's
//! `kernel::alloc` to kmem's, with the reason for each difference.
//!
//! As in Rust-for-Linux, every allocator honours every alignment (above a
//! page, [`Vmalloc`] and [`KVmalloc`] place a vmalloc area at it, and move
//! the block when they reallocate it). vmalloc needs page tables, which the
//! arena platform does not have: there [`Vmalloc`] always fails and
//! [`KVmalloc`] serves only what kmalloc serves.
//!
//! `&dyn DynAllocator` is a valid handle too, for code that does not want
//! to be generic over the allocator ([`Allocator`] itself is not
//! dyn-compatible, having [`MIN_ALIGN`](Allocator::MIN_ALIGN)).
//!
//! The examples of the containers use `Heap`, a toy bump allocator over a
//! fixed buffer that counts live blocks, kept out of the documented API.
//!
//! # Example
//!
//! ```
//! use core::alloc::Layout;
//! use core::ptr::NonNull;
//! use kmem::alloc::{flags::GFP_KERNEL, AllocError, Allocator, Flags, KBox, KVec, NumaNode};
//!
//! /// A toy bump allocator over a fixed buffer: it never frees.
//! struct Bump {
//!     buf: core::cell::UnsafeCell<[u64; 64]>,
//!     next: core::cell::Cell<usize>,
//! }
//!
//! // SAFETY: the handle is a reference, so moving or dropping it leaves
//! // `buf` in place (a `Bump` by value could not be a handle: its blocks
//! // would move with it); blocks are carved from `buf` without overlap,
//! // aligned to the layout, stay valid as long as the `Bump`, which the
//! // handle's lifetime bounds, and grown blocks keep their contents
//! // (realloc copies).
//! unsafe impl Allocator for &Bump {
//!     const MIN_ALIGN: usize = 1;
//!
//!     unsafe fn realloc(
//!         &self,
//!         ptr: Option<NonNull<u8>>,
//!         layout: Layout,
//!         old_layout: Layout,
//!         _flags: Flags,
//!         _nid: NumaNode,
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
mod foreign;
pub mod init;
mod kbox;
pub mod kvec;
mod mempool;
mod pin_scope;
#[cfg(test)]
mod tests;

pub use allocator::{AsPageIter, KVmalloc, Kmalloc, SlabCache, Vmalloc, VmallocPageIter};
pub use cache::{Cache, CacheBox, ObjectCache};
pub use foreign::ForeignOwnable;
pub use init::InPlaceInit;
pub use kbox::{KBox, KVBox, VBox};
pub use kvec::{IntoIter, KVVec, KVec, PushError, RemoveError, VVec};
pub use mempool::{Mempool, MempoolBox};
pub use pin_scope::{pin_scope, Scoped};

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

/// A NUMA node to allocate on, or [`NumaNode::NO_NODE`] for "any, the local
/// one first": Rust-for-Linux's `NumaNode`.
///
/// Built with [`NumaNode::new`], which refuses a node that cannot exist
/// (negative, or not below [`MAX_NUMNODES`](crate::mmzone::MAX_NUMNODES)).
/// A node that can exist but has no memory is the allocator's business: as
/// in Linux, it falls back along the zonelist.
///
/// ```
/// use kmem::alloc::{NumaNode, NUMA_NO_NODE};
/// assert_eq!(NumaNode::new(0).unwrap().id(), 0);
/// assert_eq!(NumaNode::new(-1).err(), Some(kmem::Error::InvalidArgument));
/// assert_eq!(NumaNode::new(kmem::mmzone::MAX_NUMNODES as i32).err(), Some(kmem::Error::InvalidArgument));
/// assert_eq!(NumaNode::NO_NODE.id(), NUMA_NO_NODE);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NumaNode(i32);

impl NumaNode {
    /// No preference: the allocator picks (the local node first).
    pub const NO_NODE: NumaNode = NumaNode(NUMA_NO_NODE);

    /// Node `node`, if it can exist: `0 <= node < MAX_NUMNODES`, else
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (Linux's
    /// `-EINVAL`).
    pub fn new(node: i32) -> crate::Result<Self> {
        match usize::try_from(node) {
            Ok(n) if n < crate::mmzone::MAX_NUMNODES => Ok(NumaNode(node)),
            _ => Err(crate::Error::InvalidArgument),
        }
    }

    /// The node number as the core's `*_node` functions take it
    /// ([`NUMA_NO_NODE`] for [`NO_NODE`](NumaNode::NO_NODE)).
    pub const fn id(self) -> i32 {
        self.0
    }
}

/// The node number of "no node": Linux's `NUMA_NO_NODE` (`-1`).
pub use crate::memblock::NUMA_NO_NODE;

/// A memory allocator: allocates, resizes and frees buffers described by a
/// [`Layout`], honouring GFP [`Flags`] and a [`NumaNode`].
///
/// Unlike Rust-for-Linux's trait, whose implementors are zero-sized types
/// with associated functions, the methods take `&self`: an allocator is a
/// handle to one kmem machine (see the [module docs](self)). Only
/// [`realloc`](Allocator::realloc) and [`MIN_ALIGN`](Allocator::MIN_ALIGN)
/// must be provided; [`alloc`](Allocator::alloc) and
/// [`free`](Allocator::free) are expressed through `realloc`.
///
/// The associated constant makes the trait not dyn-compatible (as
/// Rust-for-Linux's); for a type-erased handle use `&dyn`
/// [`DynAllocator`], which every allocator is.
///
/// # Safety
///
/// Implementors guarantee that:
///
/// - a block returned by an allocator stays valid until it is passed to
///   [`free`](Allocator::free) or [`realloc`](Allocator::realloc) of the same
///   allocator, or of a handle to the same allocator (for example a copy of
///   this handle: containers store a handle and free through it), or until
///   a lifetime the handle's type carries ends (`'a` of
///   [`Kmalloc<'a, P>`](Kmalloc)), whichever comes first;
/// - in particular, moving, copying or dropping a handle does not
///   invalidate its blocks (a container moves its handle with it, and
///   [`KBox::into_raw`] and [`KBox::leak`] drop it): an allocator whose
///   memory is inside the handle value (a buffer field) must be used
///   through a reference, by implementing this trait for `&Self` only;
/// - a pointer to a valid block may be passed to any method of that
///   allocator;
/// - every non-zero-sized block is aligned to at least
///   [`MIN_ALIGN`](Allocator::MIN_ALIGN);
/// - every method keeps the promises of its `# Guarantees` section.
pub unsafe trait Allocator {
    /// The alignment every non-zero-sized block has at least, whatever the
    /// layout asked for (Rust-for-Linux's `MIN_ALIGN`): a foreign owner may
    /// use the low bits of such a pointer.
    const MIN_ALIGN: usize;

    /// Allocates a block for `layout`, from node `nid` if it is not
    /// [`NumaNode::NO_NODE`].
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
    fn alloc(
        &self,
        layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `None` asks for a new block; `old_layout` is then ignored.
        unsafe { self.realloc(None, layout, Layout::new::<()>(), flags, nid) }
    }

    /// Resizes the block at `ptr` to `layout`, or allocates a new one when
    /// `ptr` is `None`, or frees it when `layout.size()` is zero; a new or
    /// moved block comes from node `nid` unless it is
    /// [`NumaNode::NO_NODE`].
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
        nid: NumaNode,
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
        let _ = unsafe {
            self.realloc(
                Some(ptr),
                Layout::new::<()>(),
                layout,
                Flags::NONE,
                NumaNode::NO_NODE,
            )
        };
    }
}

// SAFETY: forwards every call to `A`, so `A`'s guarantees carry over; all
// copies of the reference reach the same allocator.
unsafe impl<A: Allocator + ?Sized> Allocator for &A {
    const MIN_ALIGN: usize = A::MIN_ALIGN;

    #[inline]
    fn alloc(
        &self,
        layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        (**self).alloc(layout, flags, nid)
    }

    #[inline]
    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller upholds `realloc`'s contract, which is `A`'s.
        unsafe { (**self).realloc(ptr, layout, old_layout, flags, nid) }
    }

    #[inline]
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller upholds `free`'s contract, which is `A`'s.
        unsafe { (**self).free(ptr, layout) }
    }
}

/// The dyn-compatible face of an [`Allocator`]: `&dyn DynAllocator` is an
/// allocator handle for code that does not want to be generic over the
/// allocator (kmem only; Rust-for-Linux's allocators are types).
///
/// Every [`Allocator`] is one; its [`MIN_ALIGN`](Allocator::MIN_ALIGN)
/// becomes 1, the only bound true of every allocator behind it.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use kmem::alloc::{flags::GFP_KERNEL, DynAllocator, KBox, KVec};
///
/// let heap = Heap::new();
/// let h: &dyn DynAllocator = &&heap; // `&Heap` is the allocator
/// let b = KBox::new(7u32, h, GFP_KERNEL)?;
/// let mut v = KVec::new(h);
/// v.push(*b, GFP_KERNEL)?;
/// assert_eq!(heap.live(), 2);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// # Safety
///
/// As [`Allocator`]'s, for [`realloc_dyn`](DynAllocator::realloc_dyn)
/// standing for [`realloc`](Allocator::realloc).
pub unsafe trait DynAllocator {
    /// [`Allocator::realloc`] of the allocator behind.
    ///
    /// # Safety
    ///
    /// As [`Allocator::realloc`].
    unsafe fn realloc_dyn(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError>;
}

// SAFETY: forwards to `A`'s `realloc`, whose guarantees are the same.
unsafe impl<A: Allocator> DynAllocator for A {
    unsafe fn realloc_dyn(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { self.realloc(ptr, layout, old_layout, flags, nid) }
    }
}

// SAFETY: forwards to the allocator behind, whose blocks are aligned to at
// least 1 and which keeps every other promise of `Allocator`.
unsafe impl Allocator for dyn DynAllocator + '_ {
    const MIN_ALIGN: usize = 1;

    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { self.realloc_dyn(ptr, layout, old_layout, flags, nid) }
    }
}

/// Frees a block when dropped: a container's `Drop` builds one before
/// dropping its contents, so that a destructor that panics does not leak
/// the block (as std's `Box` and `Vec` free theirs while unwinding).
pub(crate) struct FreeOnDrop<'a, A: Allocator> {
    /// The allocator the block came from.
    alloc: &'a A,
    /// The block.
    ptr: NonNull<u8>,
    /// Its layout; zero-sized: no block, nothing to free.
    layout: Layout,
}

impl<'a, A: Allocator> FreeOnDrop<'a, A> {
    /// A guard that frees the block at `ptr` when dropped.
    ///
    /// # Safety
    ///
    /// `ptr` is a block of `layout` from `alloc` (or `layout` is
    /// zero-sized), owned by the caller, who gives it up to the guard: it
    /// is not used once the guard drops.
    pub(crate) unsafe fn new(alloc: &'a A, ptr: NonNull<u8>, layout: Layout) -> Self {
        FreeOnDrop { alloc, ptr, layout }
    }
}

impl<A: Allocator> Drop for FreeOnDrop<'_, A> {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: `new`'s caller gave up a block of `layout` from
            // `alloc` at `ptr` to the guard.
            unsafe { self.alloc.free(self.ptr, self.layout) };
        }
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
