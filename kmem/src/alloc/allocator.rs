//! The concrete allocators of a machine: [`Kmalloc`], [`Vmalloc`] and
//! [`KVmalloc`] (Rust-for-Linux's `allocator::Kmalloc`, `Vmalloc` and
//! `KVmalloc`), and [`SlabCache`], a `kmem_cache` as an [`ObjectCache`]
//! for the typed [`Cache`].
//!
//! All are `Copy` handles borrowing one [`Kmem`]: kmem has no global
//! allocator, so a `KBox` or `KVec` carries its machine with it.
//!
//! ```
//! use kmem::alloc::{flags::GFP_KERNEL, KBox, KVec, Kmalloc};
//! # let mut mem = vec![0u8; 16 << 20];
//! # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
//! let km = Kmalloc::new(&k);
//! let b = KBox::new(42u64, km, GFP_KERNEL).unwrap();
//! let mut v = KVec::new(km);
//! v.push(*b, GFP_KERNEL).unwrap();
//! assert_eq!(v[0], 42);
//! ```
//!
//! # Alignment
//!
//! [`Kmalloc`] honours any alignment by asking for a power-of-two size,
//! which kmalloc aligns naturally. [`Vmalloc`] honours any alignment too
//! (a vmalloc area is placed at it), and so does [`KVmalloc`] (kmalloc's
//! power-of-two size, or a vmalloc area placed at it), as
//! Rust-for-Linux's do since vmalloc and kvmalloc take an alignment
//! (`vrealloc_node_align`, `kvrealloc_node_align`). A block aligned above
//! a page is moved, not grown in place, when reallocated.

use super::{dangling, AllocError, Allocator, Cache, Flags, KBox, KVec, NumaNode, ObjectCache};
use crate::gfp::__GFP_ZERO;
use crate::kmalloc::ARCH_KMALLOC_MINALIGN;
use crate::page::Page;
use crate::platform::Platform;
use crate::slab::{KmemCache, SlabFlags};
use crate::{Kmem, Result, PAGE_SIZE};
use core::alloc::Layout;
use core::ptr::NonNull;

/// kmalloc as an [`Allocator`].
pub struct Kmalloc<'a, P: Platform> {
    k: &'a Kmem<P>,
}

impl<P: Platform> Clone for Kmalloc<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Kmalloc<'_, P> {}

impl<'a, P: Platform> Kmalloc<'a, P> {
    /// The kmalloc allocator of machine `k`.
    pub fn new(k: &'a Kmem<P>) -> Self {
        Kmalloc { k }
    }
}

/// The size to ask kmalloc for so that `layout`'s alignment holds: kmalloc
/// aligns power-of-two sizes naturally and everything to at least
/// `ARCH_KMALLOC_MINALIGN` (as RfL's `Kmalloc::aligned_size`).
fn kmalloc_aligned_size(layout: Layout) -> usize {
    let l = layout.pad_to_align();
    if l.align() > ARCH_KMALLOC_MINALIGN {
        l.size().next_power_of_two()
    } else {
        l.size()
    }
}

/// Zeroes bytes `old_size..new_size` of the block at `q` under
/// [`__GFP_ZERO`]: RfL's contract is that a grown block's new bytes are
/// zero, whatever the block's history.
///
/// # Safety
///
/// `q` is valid for writes of `new_size` bytes.
unsafe fn zero_new_tail(q: NonNull<u8>, old_size: usize, new_size: usize, flags: Flags) {
    if flags.contains(__GFP_ZERO) && new_size > old_size {
        // SAFETY: bytes `old_size..new_size` of a block of `new_size`
        // bytes (the caller's promise).
        unsafe { q.as_ptr().add(old_size).write_bytes(0, new_size - old_size) };
    }
}

/// Whether `p` meets `layout`'s alignment.
fn is_aligned(p: NonNull<u8>, layout: Layout) -> bool {
    p.as_ptr().addr() & (layout.align() - 1) == 0
}

/// Reallocation onto a given node, which the core's `krealloc`,
/// `vrealloc` and `kvrealloc` do not take: a new block from `alloc` (on
/// the node), the preserved prefix copied, the new tail zeroed under
/// [`__GFP_ZERO`], the old block freed with `free`. Linux's
/// `*realloc_node_align` move a block that is not on the asked node too.
///
/// # Safety
///
/// `p` is a live block of `old_layout.size()` bytes that `free` frees; on
/// success it is freed and must not be used again, on failure it is
/// untouched.
unsafe fn move_to_node(
    p: NonNull<u8>,
    layout: Layout,
    old_layout: Layout,
    flags: Flags,
    alloc: impl FnOnce(Flags) -> Result<NonNull<u8>>,
    free: impl FnOnce(NonNull<u8>) -> Result<()>,
) -> core::result::Result<NonNull<u8>, AllocError> {
    let q = alloc(flags).map_err(|_| AllocError)?;
    let n = layout.size().min(old_layout.size());
    // SAFETY: `p` holds `old_layout.size()` bytes (the caller's promise),
    // `q` is a fresh block of at least `layout.size()`, so both hold `n`
    // and they do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(p.as_ptr(), q.as_ptr(), n) };
    // SAFETY: `q` has `layout.size()` bytes.
    unsafe { zero_new_tail(q, old_layout.size(), layout.size(), flags) };
    // A failed free was reported by the core; the copy is what the caller
    // keeps either way.
    let _ = free(p);
    Ok(q)
}

// SAFETY: blocks come from kmalloc with at least the layout's size and
// alignment (aligned_size; a block krealloc would keep short of a stricter
// alignment is moved instead), stay valid until freed through this handle's
// machine, and realloc keeps contents up to the smaller size (krealloc).
unsafe impl<P: Platform> Allocator for Kmalloc<'_, P> {
    /// kmalloc aligns every object to at least `ARCH_KMALLOC_MINALIGN`.
    const MIN_ALIGN: usize = ARCH_KMALLOC_MINALIGN;

    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        // A pointer with a zero-sized old layout is no block at all (it may
        // be a dangling pointer that kfree would take for an object).
        let ptr = ptr.filter(|_| old_layout.size() != 0);
        if layout.size() == 0 {
            if let Some(p) = ptr {
                // SAFETY: the caller gives back a live block of ours.
                unsafe { self.k.kfree(p.as_ptr()) }.map_err(|_| AllocError)?;
            }
            return Ok(NonNull::slice_from_raw_parts(dangling(layout), 0));
        }
        let size = kmalloc_aligned_size(layout);
        let q = match ptr {
            None => self
                .k
                .kmalloc_node(size, flags, nid.id())
                .map_err(|_| AllocError)?,
            // krealloc keeps an object that is big enough in place,
            // whatever its alignment (a kmalloc-96 object is only 32-byte
            // aligned): a block short of a stricter alignment moves, to an
            // object `size` aligns, as in Linux's `krealloc_node_align`.
            Some(p) if nid != NumaNode::NO_NODE || !is_aligned(p, layout) => {
                // SAFETY: the caller's live block of `old_layout`, freed by
                // `move_to_node` once copied.
                unsafe {
                    move_to_node(
                        p,
                        layout,
                        old_layout,
                        flags,
                        |f| self.k.kmalloc_node(size, f, nid.id()),
                        |old| self.k.kfree(old.as_ptr()),
                    )
                }?
            }
            Some(p) => {
                // SAFETY: the caller's block, replaced by the result.
                let q =
                    unsafe { self.k.krealloc(p.as_ptr(), size, flags) }.map_err(|_| AllocError)?;
                // SAFETY: the block at `q` has at least `layout.size()` bytes.
                unsafe { zero_new_tail(q, old_layout.size(), layout.size(), flags) };
                q
            }
        };
        Ok(NonNull::slice_from_raw_parts(q, layout.size()))
    }
}

/// vmalloc as an [`Allocator`]: Rust-for-Linux's `Vmalloc`.
///
/// Blocks are virtually contiguous over pages that need not be physically
/// contiguous: [`__vmalloc_node`](Kmem::__vmalloc_node) allocates,
/// [`vrealloc`](Kmem::vrealloc) resizes (in place while the area's pages
/// suffice, and always in place when shrinking), [`vfree`](Kmem::vfree)
/// frees. Every block takes at least a page (plus the guard page of its
/// virtual area), so this is for large buffers. Every alignment is
/// honoured; a block aligned above a page is moved (a new area at that
/// alignment, the contents copied) rather than resized in place.
///
/// vmalloc needs page tables: on a platform without them (the arena) every
/// allocation fails with [`AllocError`], after vmalloc's report. A
/// function generic over the platform works on any machine that has them
/// (`kmem-sim/tests/alloc_vmalloc.rs` runs these types on the simulator):
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, AllocError, VVec, Vmalloc};
/// use kmem::{Kmem, Platform};
///
/// /// A table of `n` zeroes, too big for kmalloc to be a good idea.
/// fn table<P: Platform>(k: &Kmem<P>, n: usize) -> Result<VVec<'_, u64, P>, AllocError> {
///     let mut v = VVec::new(Vmalloc::new(k));
///     v.resize(n, 0, GFP_KERNEL)?;
///     Ok(v)
/// }
///
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// // The arena has no page tables, hence no vmalloc space.
/// assert_eq!(table(&k, 1 << 20).err(), Some(AllocError));
/// ```
pub struct Vmalloc<'a, P: Platform> {
    k: &'a Kmem<P>,
}

impl<P: Platform> Clone for Vmalloc<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Vmalloc<'_, P> {}

impl<'a, P: Platform> Vmalloc<'a, P> {
    /// The vmalloc allocator of machine `k`.
    pub fn new(k: &'a Kmem<P>) -> Self {
        Vmalloc { k }
    }
}

// SAFETY: blocks come from vmalloc with at least the layout's size, page
// aligned and placed at the layout's alignment (vrealloc, which only
// page-aligns a block it moves, is not used above a page: the block is
// moved by hand), stay valid until freed through this handle's machine,
// and realloc keeps contents up to the smaller size (vrealloc and the
// move copy, and leave the block untouched when they fail).
unsafe impl<P: Platform> Allocator for Vmalloc<'_, P> {
    /// A vmalloc area starts on a page.
    const MIN_ALIGN: usize = PAGE_SIZE;

    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        // A pointer with a zero-sized old layout is no block at all.
        let old = ptr.filter(|_| old_layout.size() != 0);
        if layout.size() == 0 {
            if let Some(p) = old {
                // SAFETY: the caller gives back a live block of ours.
                unsafe { self.k.vfree(p.as_ptr()) }.map_err(|_| AllocError)?;
            }
            return Ok(NonNull::slice_from_raw_parts(dangling(layout), 0));
        }
        let q = match old {
            None => self
                .k
                .__vmalloc_node(layout.size(), layout.align(), flags, nid.id())
                .map_err(|_| AllocError)?,
            // vrealloc neither takes a node nor keeps an alignment above a
            // page when it moves the block.
            Some(p) if nid != NumaNode::NO_NODE || layout.align() > PAGE_SIZE => {
                // SAFETY: the caller's live block of `old_layout`, freed by
                // `move_to_node` once copied.
                unsafe {
                    move_to_node(
                        p,
                        layout,
                        old_layout,
                        flags,
                        |f| {
                            self.k
                                .__vmalloc_node(layout.size(), layout.align(), f, nid.id())
                        },
                        |old| self.k.vfree(old.as_ptr()),
                    )
                }?
            }
            Some(p) => {
                // SAFETY: the caller's live block, replaced by the result
                // (which for a non-zero size is always `Some`).
                let q = unsafe { self.k.vrealloc(Some(p), layout.size(), flags) }
                    .map_err(|_| AllocError)?
                    .ok_or(AllocError)?;
                // SAFETY: the block at `q` has at least `layout.size()` bytes.
                unsafe { zero_new_tail(q, old_layout.size(), layout.size(), flags) };
                q
            }
        };
        debug_assert_eq!(q.as_ptr().addr() & (layout.align() - 1), 0);
        Ok(NonNull::slice_from_raw_parts(q, layout.size()))
    }
}

impl<'a, P: Platform> Vmalloc<'a, P> {
    /// The page mapped at `ptr`, an address inside a vmalloc (or vmap)
    /// area of this machine: Rust-for-Linux's `Vmalloc::to_page`, the
    /// kernel's `vmalloc_to_page()`.
    ///
    /// Unlike Rust-for-Linux's, it is safe and returns `None` for an address
    /// that no live area maps: kmem looks the area up under its lock rather
    /// than trusting the caller. Page descriptors live as long as the
    /// machine; what the page holds belongs to the area's owner.
    pub fn to_page(&self, ptr: NonNull<u8>) -> Option<&'a Page> {
        self.k.vmalloc_to_page(ptr.as_ptr())
    }
}

/// An iterator over the pages of a vmalloc allocation, in the order they
/// are mapped: Rust-for-Linux's `VmallocPageIter`.
///
/// Got from [`AsPageIter::page_iter`] of a [`VBox`](super::VBox) or
/// [`VVec`](super::VVec), which borrows the container for as long as the
/// iterator lives. Items are kmem's page descriptors ([`Page`]), where
/// Rust-for-Linux yields `BorrowedPage`s; the machine gives their
/// direct-map address ([`Kmem::page_address`]), frame number and so on.
pub struct VmallocPageIter<'b, P: Platform> {
    k: &'b Kmem<P>,
    buf: NonNull<u8>,
    size: usize,
    index: usize,
}

impl<'b, P: Platform> VmallocPageIter<'b, P> {
    /// The pages of the `size` bytes at `buf`, the start of a vmalloc
    /// allocation of `vmalloc`'s machine.
    ///
    /// Safe, unlike Rust-for-Linux's: a page is looked up when it is
    /// reached, and iteration stops at the first address no area maps.
    pub fn new(vmalloc: Vmalloc<'b, P>, buf: NonNull<u8>, size: usize) -> Self {
        VmallocPageIter {
            k: vmalloc.k,
            buf,
            size,
            index: 0,
        }
    }

    /// The number of bytes the iterator covers.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of pages the iterator covers in all.
    pub fn page_count(&self) -> usize {
        self.size.div_ceil(PAGE_SIZE)
    }
}

impl<'b, P: Platform> Iterator for VmallocPageIter<'b, P> {
    type Item = &'b Page;

    fn next(&mut self) -> Option<&'b Page> {
        if self.index >= self.page_count() {
            return None;
        }
        let addr = self.buf.as_ptr().wrapping_add(self.index * PAGE_SIZE);
        self.index += 1;
        self.k.vmalloc_to_page(addr)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.page_count() - self.index))
    }
}

/// A container whose memory can be walked page by page: Rust-for-Linux's
/// `page::AsPageIter`, here for [`VBox`](super::VBox) and
/// [`VVec`](super::VVec).
pub trait AsPageIter {
    /// The iterator, which borrows the container.
    type Iter<'b>: Iterator<Item = &'b Page>
    where
        Self: 'b;

    /// The pages of the container's memory, in address order.
    fn page_iter(&mut self) -> Self::Iter<'_>;
}

/// A `VBox`'s pages: those of its block (none for a zero-sized value).
impl<'a, T: ?Sized, P: Platform> AsPageIter for KBox<T, Vmalloc<'a, P>> {
    type Iter<'b>
        = VmallocPageIter<'b, P>
    where
        Self: 'b;

    fn page_iter(&mut self) -> VmallocPageIter<'_, P> {
        let size = core::mem::size_of_val::<T>(self);
        let buf = NonNull::from(&mut **self).cast::<u8>();
        VmallocPageIter::new(*KBox::allocator(self), buf, size)
    }
}

/// A `VVec`'s pages: those of its whole buffer, capacity included.
impl<'a, T, P: Platform> AsPageIter for KVec<T, Vmalloc<'a, P>> {
    type Iter<'b>
        = VmallocPageIter<'b, P>
    where
        Self: 'b;

    fn page_iter(&mut self) -> VmallocPageIter<'_, P> {
        let size = self.capacity() * core::mem::size_of::<T>();
        // SAFETY: a vector's buffer pointer is never null (dangling when
        // it has no buffer).
        let buf = unsafe { NonNull::new_unchecked(self.as_mut_ptr()) }.cast::<u8>();
        VmallocPageIter::new(*self.allocator(), buf, size)
    }
}

/// kvmalloc as an [`Allocator`]: Rust-for-Linux's `KVmalloc`.
///
/// Tries kmalloc first and falls back to vmalloc for sizes above a page
/// that kmalloc cannot serve ([`kvmalloc_node`](Kmem::kvmalloc_node));
/// resizes with [`kvrealloc`](Kmem::kvrealloc), which may move a kmalloc
/// block to vmalloc as it grows; frees with [`kvfree`](Kmem::kvfree).
/// Sizes are rounded as for [`Kmalloc`] so that the kmalloc path honours
/// the alignment; above a page, the vmalloc fallback places its area at
/// the alignment (Linux's `kvmalloc_node_align`), and reallocation moves
/// the block.
///
/// On a platform without page tables (the arena) only the kmalloc path
/// exists, so it serves what kmalloc serves:
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, KVBox, KVVec, KVmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let kv = KVmalloc::new(&k);
/// let b: KVBox<'_, u64, _> = KVBox::new(7, kv, GFP_KERNEL).unwrap();
/// let mut v: KVVec<'_, u8, _> = KVVec::new(kv);
/// v.resize(16 << 10, 1, GFP_KERNEL).unwrap(); // 16 KiB: kmalloc's pages
/// assert!(!k.is_vmalloc_addr(v.as_ptr()));
/// assert_eq!(*b + u64::from(v[0]), 8);
/// ```
pub struct KVmalloc<'a, P: Platform> {
    k: &'a Kmem<P>,
}

impl<P: Platform> Clone for KVmalloc<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for KVmalloc<'_, P> {}

impl<'a, P: Platform> KVmalloc<'a, P> {
    /// The kvmalloc allocator of machine `k`.
    pub fn new(k: &'a Kmem<P>) -> Self {
        KVmalloc { k }
    }

    /// A new block of `size` bytes (`layout`'s size rounded by
    /// [`kmalloc_aligned_size`]) aligned to `layout`: `kvmalloc_node_align`.
    /// The core's `kvmalloc_node` falls back to a page-aligned vmalloc
    /// area, so above a page this tries kmalloc (the power-of-two size is
    /// naturally aligned) and then vmalloc at the alignment.
    fn kvmalloc_aligned(
        &self,
        layout: Layout,
        size: usize,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<u8>> {
        if layout.align() <= PAGE_SIZE {
            return self.k.kvmalloc_node(size, flags, nid.id());
        }
        let kflags = crate::util::kmalloc_gfp_adjust(flags, size);
        if let Ok(p) = self.k.kmalloc_node(size, kflags, nid.id()) {
            return Ok(p);
        }
        self.k
            .__vmalloc_node(layout.size(), layout.align(), flags, nid.id())
    }
}

// SAFETY: blocks come from kmalloc with a size that makes it honour the
// alignment (as `Kmalloc`'s), or from vmalloc, page aligned and, above a
// page, placed at the alignment (`kvmalloc_aligned`; kvrealloc is not
// used then); they stay valid until freed through this handle's machine
// (kvfree tells the two apart by address), and kvrealloc and the move
// keep contents up to the smaller size and leave the block untouched
// when they fail.
unsafe impl<P: Platform> Allocator for KVmalloc<'_, P> {
    /// The kmalloc path's, the smaller of the two.
    const MIN_ALIGN: usize = ARCH_KMALLOC_MINALIGN;

    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        // A pointer with a zero-sized old layout is no block at all.
        let old = ptr.filter(|_| old_layout.size() != 0);
        if layout.size() == 0 {
            if let Some(p) = old {
                // SAFETY: the caller gives back a live block of ours.
                unsafe { self.k.kvfree(p.as_ptr()) }.map_err(|_| AllocError)?;
            }
            return Ok(NonNull::slice_from_raw_parts(dangling(layout), 0));
        }
        let size = kmalloc_aligned_size(layout);
        let q = match old {
            None => self
                .kvmalloc_aligned(layout, size, flags, nid)
                .map_err(|_| AllocError)?,
            // kvrealloc neither takes a node nor keeps an alignment above a
            // page when it moves the block to vmalloc, and its krealloc keeps
            // a big enough object in place, aligned or not (see `Kmalloc`).
            Some(p)
                if nid != NumaNode::NO_NODE
                    || layout.align() > PAGE_SIZE
                    || !is_aligned(p, layout) =>
            {
                // SAFETY: the caller's live block of `old_layout`, freed by
                // `move_to_node` once copied.
                unsafe {
                    move_to_node(
                        p,
                        layout,
                        old_layout,
                        flags,
                        |f| self.kvmalloc_aligned(layout, size, f, nid),
                        |old| self.k.kvfree(old.as_ptr()),
                    )
                }?
            }
            Some(p) => {
                // SAFETY: the caller's live block, replaced by the result.
                let q =
                    unsafe { self.k.kvrealloc(p.as_ptr(), size, flags) }.map_err(|_| AllocError)?;
                // SAFETY: the block at `q` has at least `layout.size()` bytes.
                unsafe { zero_new_tail(q, old_layout.size(), layout.size(), flags) };
                q
            }
        };
        debug_assert_eq!(q.as_ptr().addr() & (layout.align() - 1), 0);
        Ok(NonNull::slice_from_raw_parts(q, layout.size()))
    }
}

/// A `kmem_cache` of one machine as an [`ObjectCache`].
pub struct SlabCache<'a, P: Platform> {
    k: &'a Kmem<P>,
    s: &'a KmemCache,
}

impl<P: Platform> Clone for SlabCache<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for SlabCache<'_, P> {}

impl<'a, P: Platform> SlabCache<'a, P> {
    /// Cache `s` of machine `k`.
    pub fn new(k: &'a Kmem<P>, s: &'a KmemCache) -> Self {
        SlabCache { k, s }
    }

    /// The underlying cache.
    pub fn cache(&self) -> &'a KmemCache {
        self.s
    }

    /// The machine the cache belongs to.
    pub fn kmem(&self) -> &'a Kmem<P> {
        self.k
    }
}

// SAFETY: objects come from the cache with its object size and alignment
// and stay valid until freed to the same cache.
unsafe impl<P: Platform> ObjectCache for SlabCache<'_, P> {
    fn object_size(&self) -> usize {
        self.s.object_size()
    }

    fn align(&self) -> usize {
        self.s.geometry().align
    }

    fn alloc_obj(&self, flags: Flags) -> core::result::Result<NonNull<u8>, AllocError> {
        self.k
            .kmem_cache_alloc(self.s, flags)
            .map_err(|_| AllocError)
    }

    unsafe fn free_obj(&self, ptr: NonNull<u8>) {
        // SAFETY: the caller gives back an object of this cache, once.
        let _ = unsafe { self.k.kmem_cache_free(self.s, ptr.as_ptr()) };
    }
}

impl<P: Platform> Kmem<P> {
    /// A typed cache for values of `T` (`KMEM_CACHE()`): a `kmem_cache`
    /// named `name` sized and aligned for `T`, wrapped in a [`Cache`] whose
    /// handles free on drop.
    ///
    /// ```
    /// use kmem::alloc::flags::GFP_KERNEL;
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// struct Inode { ino: u64, nlink: u32 }
    /// let cache = k.kmem_cache::<Inode>("inode_cache", kmem::slab::SlabFlags::NONE).unwrap();
    /// let i = cache.alloc(Inode { ino: 7, nlink: 1 }, GFP_KERNEL).unwrap();
    /// assert_eq!(i.ino, 7);
    /// ```
    pub fn kmem_cache<T>(
        &self,
        name: &str,
        flags: SlabFlags,
    ) -> Result<Cache<T, SlabCache<'_, P>>> {
        let size = core::mem::size_of::<T>().max(1);
        let s = self.kmem_cache_create(name, size, core::mem::align_of::<T>(), flags, None)?;
        Cache::new(SlabCache::new(self, s))
    }
}
