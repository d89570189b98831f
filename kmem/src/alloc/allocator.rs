//! The concrete allocators of a machine: [`Kmalloc`] (Rust-for-Linux's
//! `allocator::Kmalloc`) and [`SlabCache`], a `kmem_cache` as an
//! [`ObjectCache`] for the typed [`Cache`].
//!
//! Both are `Copy` handles borrowing one [`Kmem`]: kmem has no global
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

use super::{dangling, AllocError, Allocator, Cache, Flags, ObjectCache};
use crate::gfp::__GFP_ZERO;
use crate::kmalloc::ARCH_KMALLOC_MINALIGN;
use crate::platform::Platform;
use crate::slab::{KmemCache, SlabFlags};
use crate::{Kmem, Result};
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

    /// The size to ask kmalloc for so that `layout`'s alignment holds:
    /// kmalloc aligns power-of-two sizes naturally and everything to at
    /// least `ARCH_KMALLOC_MINALIGN` (as RfL's `Kmalloc::aligned_size`).
    fn aligned_size(layout: Layout) -> usize {
        let l = layout.pad_to_align();
        if l.align() > ARCH_KMALLOC_MINALIGN {
            l.size().next_power_of_two()
        } else {
            l.size()
        }
    }
}

// SAFETY: blocks come from kmalloc with at least the layout's size and
// alignment (aligned_size), stay valid until freed through this handle's
// machine, and realloc keeps contents up to the smaller size (krealloc).
unsafe impl<P: Platform> Allocator for Kmalloc<'_, P> {
    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            if let Some(p) = ptr {
                // SAFETY: the caller gives back a live block of ours.
                unsafe { self.k.kfree(p.as_ptr()) }.map_err(|_| AllocError)?;
            }
            return Ok(NonNull::slice_from_raw_parts(dangling(layout), 0));
        }
        let size = Self::aligned_size(layout);
        let q = match ptr {
            None => self.k.kmalloc(size, flags).map_err(|_| AllocError)?,
            Some(p) => {
                // SAFETY: the caller's block, replaced by the result.
                let q =
                    unsafe { self.k.krealloc(p.as_ptr(), size, flags) }.map_err(|_| AllocError)?;
                if flags.contains(__GFP_ZERO) && layout.size() > old_layout.size() {
                    // RfL's contract: new bytes are zero, whatever the
                    // block's history.
                    // SAFETY: bytes old..new of the (re)allocated block.
                    unsafe {
                        q.as_ptr()
                            .add(old_layout.size())
                            .write_bytes(0, layout.size() - old_layout.size())
                    };
                }
                q
            }
        };
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
