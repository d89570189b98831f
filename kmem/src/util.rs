//! kvmalloc: kmalloc first, vmalloc when that fails (`mm/util.c` until
//! Linux 6.15; `mm/slub.c`'s `__kvmalloc_node_noprof()` and
//! `kvrealloc_node_align_noprof()` since).
//!
//! A request above a page first tries kmalloc without disturbing the
//! system (`kmalloc_gfp_adjust()`: `__GFP_NOWARN`, no direct reclaim
//! unless `__GFP_RETRY_MAYFAIL`, no `__GFP_NOFAIL`, which the vmalloc
//! fallback implements), then falls back to vmalloc with
//! `VM_ALLOW_HUGE_VMAP`, since a kvmalloc caller can assume nothing about
//! the pointer. Requests of a page or less never fall back. Sizes above
//! `INT_MAX` are refused (with a warning unless `__GFP_NOWARN`). Linux
//! 6.18's vmalloc serves the non-blocking masks, so kvmalloc falls back for
//! them too.

use crate::gfp::{self, Gfp};
use crate::platform::{Level, Platform};
use crate::vmalloc::VM_ALLOW_HUGE_VMAP;
use crate::{report, Error, Kmem, Result, PAGE_SIZE};
use core::panic::Location;
use core::ptr::NonNull;

/// `kmalloc_gfp_adjust()`: the mask of kvmalloc's kmalloc attempt.
///
/// ```
/// use kmem::gfp::{GFP_KERNEL, __GFP_DIRECT_RECLAIM, __GFP_NOWARN, __GFP_RETRY_MAYFAIL};
/// let g = kmem::util::kmalloc_gfp_adjust(GFP_KERNEL, 8192);
/// assert!(g.contains(__GFP_NOWARN) && !g.contains(__GFP_DIRECT_RECLAIM));
/// assert_eq!(kmem::util::kmalloc_gfp_adjust(GFP_KERNEL, 4096), GFP_KERNEL);
/// let g = kmem::util::kmalloc_gfp_adjust(GFP_KERNEL | __GFP_RETRY_MAYFAIL, 8192);
/// assert!(g.contains(__GFP_DIRECT_RECLAIM));
/// ```
pub fn kmalloc_gfp_adjust(mut flags: Gfp, size: usize) -> Gfp {
    if size > PAGE_SIZE {
        flags |= gfp::__GFP_NOWARN;
        if !flags.contains(gfp::__GFP_RETRY_MAYFAIL) {
            flags = flags.without(gfp::__GFP_DIRECT_RECLAIM);
        }
        flags = flags.without(gfp::__GFP_NOFAIL);
    }
    flags
}

impl<P: Platform> Kmem<P> {
    /// `kvmalloc_node()`: `size` bytes from kmalloc or, above a page when
    /// kmalloc fails, from vmalloc. Free with [`kvfree`](Self::kvfree).
    #[track_caller]
    pub fn kvmalloc_node(&self, size: usize, gfp: Gfp, node: i32) -> Result<NonNull<u8>> {
        let caller = Location::caller();
        let r = self.kmalloc_node_caller(size, kmalloc_gfp_adjust(gfp, size), node, caller);
        if r.is_ok() || size <= PAGE_SIZE {
            return r;
        }
        if size > i32::MAX as usize {
            if !gfp.contains(gfp::__GFP_NOWARN) {
                report!(
                    &self.p,
                    Level::Warning,
                    "WARNING: CPU: {} at {}: __kvmalloc_node_noprof: size {} > INT_MAX",
                    self.p.smp_processor_id(),
                    caller,
                    size
                );
            }
            return Err(Error::NoMemory);
        }
        let (start, end) = self.vmalloc_range().ok_or(Error::NoMemory)?;
        // Huge mappings only for callers that may block, as 6.18 does.
        let huge = if gfp.contains(gfp::__GFP_DIRECT_RECLAIM) {
            VM_ALLOW_HUGE_VMAP
        } else {
            0
        };
        self.vmalloc_node_range(
            size,
            1,
            start,
            end,
            gfp,
            crate::platform::PgProt::Kernel,
            huge,
            node,
            caller,
        )
    }

    /// `kvmalloc()`.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 8 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// let p = k.kvmalloc(2048, kmem::gfp::GFP_KERNEL).unwrap();
    /// assert!(!k.is_vmalloc_addr(p.as_ptr()));
    /// // SAFETY: `p` is not used again.
    /// unsafe { k.kvfree(p.as_ptr()) }.unwrap();
    /// ```
    #[track_caller]
    pub fn kvmalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        self.kvmalloc_node(size, gfp, -1)
    }

    /// `kvzalloc()`: zeroed.
    #[track_caller]
    pub fn kvzalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        self.kvmalloc_node(size, gfp | gfp::__GFP_ZERO, -1)
    }

    /// `kvzalloc_node()`.
    #[track_caller]
    pub fn kvzalloc_node(&self, size: usize, gfp: Gfp, node: i32) -> Result<NonNull<u8>> {
        self.kvmalloc_node(size, gfp | gfp::__GFP_ZERO, node)
    }

    /// `kvmalloc_array()`: `n * size` bytes; an overflow fails with
    /// [`Error::NoMemory`] (Linux returns NULL).
    #[track_caller]
    pub fn kvmalloc_array(&self, n: usize, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        let bytes = n.checked_mul(size).ok_or(Error::NoMemory)?;
        self.kvmalloc_node(bytes, gfp, -1)
    }

    /// `kvcalloc()`: [`kvmalloc_array`](Self::kvmalloc_array), zeroed.
    #[track_caller]
    pub fn kvcalloc(&self, n: usize, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        let bytes = n.checked_mul(size).ok_or(Error::NoMemory)?;
        self.kvmalloc_node(bytes, gfp | gfp::__GFP_ZERO, -1)
    }

    /// `kvfree()`: free memory from kvmalloc (vmalloc or kmalloc, told
    /// apart by the address). A null pointer does nothing.
    ///
    /// # Safety
    ///
    /// `p` is null or a live allocation of this machine's kvmalloc,
    /// kmalloc or vmalloc that nothing uses afterwards.
    #[track_caller]
    pub unsafe fn kvfree(&self, p: *mut u8) -> Result<()> {
        if self.is_vmalloc_addr(p) {
            // SAFETY: the caller's promise.
            unsafe { self.vfree(p) }
        } else {
            // SAFETY: the caller's promise.
            unsafe { self.kfree(p) }
        }
    }

    /// `kvfree_sensitive()`: zero the first `len` bytes, then free.
    ///
    /// # Safety
    ///
    /// As [`kvfree`](Self::kvfree), and `p` has at least `len` bytes.
    #[track_caller]
    pub unsafe fn kvfree_sensitive(&self, p: *mut u8, len: usize) -> Result<()> {
        if !p.is_null() && len > 0 {
            // SAFETY: the caller's allocation has `len` bytes; volatile so
            // the clearing is not elided before the free (memzero_explicit).
            unsafe {
                for i in 0..len {
                    p.add(i).write_volatile(0);
                }
            }
        }
        // SAFETY: the caller's promise.
        unsafe { self.kvfree(p) }
    }

    /// `kvrealloc()`: resize a kvmalloc allocation to `size` bytes: vrealloc
    /// for a vmalloc address; otherwise krealloc with kvmalloc's mask, and
    /// when that fails a fresh kvmalloc, a copy of the old object and a
    /// kfree.
    ///
    /// # Safety
    ///
    /// `p` is null or a live kvmalloc allocation the caller gives up when
    /// the answer differs from it.
    #[track_caller]
    pub unsafe fn kvrealloc(&self, p: *mut u8, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        if self.is_vmalloc_addr(p) {
            // SAFETY: the caller's promise.
            let r = unsafe { self.vrealloc(NonNull::new(p), size, gfp) }?;
            return Ok(r.unwrap_or(NonNull::new(crate::kmalloc::ZERO_SIZE_PTR).expect("non-null")));
        }
        // SAFETY: the caller's promise.
        if let Ok(n) = unsafe { self.krealloc(p, size, kmalloc_gfp_adjust(gfp, size)) } {
            return Ok(n);
        }
        let n = self.kvmalloc_node(size, gfp, -1)?;
        if !crate::kmalloc::zero_or_null_ptr(p) {
            let old = self.ksize(p).min(size);
            // SAFETY: `p` is the caller's live object of at least `old`
            // bytes and `n` a fresh, distinct allocation of `size`.
            unsafe {
                core::ptr::copy_nonoverlapping(p, n.as_ptr(), old);
                if let Err(e) = self.kfree(p) {
                    // The caller keeps `p`; the copy goes back.
                    let _ = self.kvfree(n.as_ptr());
                    return Err(e);
                }
            }
        }
        Ok(n)
    }
}
