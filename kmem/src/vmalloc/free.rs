//! Tearing down vmalloc, vmap and ioremap areas (`mm/vmalloc.c`:
//! `vfree()`, `vfree_atomic()`, `vunmap()`, `remove_vm_area()`,
//! `free_vm_area()`).
//!
//! Every path unlinks the busy area, unmaps its whole range at once (an
//! access after this faults), frees the range lazily
//! ([`lazy_free_node`](Kmem::lazy_free_node)), then gives back the pages,
//! the page array and the `vm_struct`. `vfree()` from interrupt context cannot do that
//! (it may sleep), so, as Linux does, it pushes the address on a lock-free
//! list threaded through the freed memory itself; the next `vfree()` or
//! vmalloc from a context that may sleep drains it.

use super::*;
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result};
use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::Ordering::{AcqRel, Relaxed, Release};

/// Whether tearing an area down gives its pages back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PagesToFree {
    /// Keep the pages (the caller's, for `vmap`, or none).
    None,
    /// Free the `nr_pages` pages the area allocated (vmalloc, or a `vmap`
    /// with `VM_MAP_PUT_PAGES`).
    Allocated,
}

impl<P: Platform> Kmem<P> {
    /// Unlink the busy area that starts at `addr` if it has a complete
    /// `vm_struct` (`remove_vm_area()`'s lookup).
    fn unlink_vm_area(&self, addr: usize) -> Option<(NonNull<VmStruct>, NonNull<tree::VmapArea>)> {
        let va = self.unlink_busy_area_if(addr, |v| {
            // SAFETY: `vm` is null or a live VmStruct owned by the busy area.
            NonNull::new(v.vm)
                .is_some_and(|vm| unsafe { vm.as_ref() }.flags & VM_UNINITIALIZED == 0)
        })?;
        // SAFETY: unlinked above, so ours; its `vm` was checked non-null.
        let vm = NonNull::new(unsafe { va.as_ref() }.vm)?;
        Some((vm, va))
    }

    /// The teardown shared by every path: `vm`'s busy area is already out
    /// of the busy tree (or, for `remove_and_free_vm`, about to be).
    fn free_unlinked_vm(
        &self,
        vm: NonNull<VmStruct>,
        va: NonNull<tree::VmapArea>,
        pages: PagesToFree,
    ) {
        // SAFETY: the area is unlinked, so the VmStruct, its page array and
        // the node are ours alone.
        unsafe {
            let (start, end) = (va.as_ref().va_start, va.as_ref().va_end);
            (*va.as_ptr()).vm = core::ptr::null_mut();
            self.p.unmap_kernel_range(start, end - start);
            let lf = self.lazy_free_node(va);
            let area = &mut *vm.as_ptr();
            if pages == PagesToFree::Allocated && !area.pages.is_null() {
                for i in (0..area.nr_pages).rev() {
                    let page = &**area.pages.add(i);
                    let r = self.__free_pages(page, 0);
                    debug_assert!(r.is_ok());
                }
                if area.flags & VM_ALLOC != 0 {
                    self.vmalloc
                        .nr_vmalloc_pages
                        .fetch_sub(area.nr_pages, Relaxed);
                }
            }
            if !area.pages.is_null() {
                let array = area.pages.cast::<u8>();
                if self.is_vmalloc_addr(array) {
                    let _ = self.vfree(array);
                } else {
                    let _ = self.kfree(array);
                }
            }
            let _ = self.kfree(vm.as_ptr().cast());
            self.purge_if_due(lf);
        }
    }

    /// Tear down an area whose setup failed (still `VM_UNINITIALIZED`).
    pub(crate) fn remove_and_free_vm(&self, vm: NonNull<VmStruct>, pages: PagesToFree) {
        // SAFETY: the caller owns the uninitialised area.
        let addr = unsafe { vm.as_ref().addr };
        let va = self
            .find_unlink_vmap_area(addr)
            .expect("an area being set up is busy");
        self.free_unlinked_vm(vm, va, pages);
    }

    /// Report a bad `vfree`/`vunmap` argument as Linux's `WARN()` does.
    fn warn_bad_free(&self, what: &str, why: &str, addr: *const u8, caller: &Location<'_>) {
        report!(
            &self.p,
            Level::Err,
            "WARNING: CPU: {} at {}: Trying to {}() {} ({:p})",
            self.p.smp_processor_id(),
            caller,
            what,
            why,
            addr
        );
    }

    /// `vfree()`: free memory from [`vmalloc`](Self::vmalloc) and friends
    /// (or a `vmap` with `VM_MAP_PUT_PAGES`). A null `addr` does nothing.
    /// From interrupt context the free is deferred
    /// ([`vfree_atomic`](Self::vfree_atomic)), as Linux defers it.
    ///
    /// An address that does not start a vmalloc area is Linux's "Trying to
    /// vfree() nonexistent vm area" (or "bad address" when not page
    /// aligned), answered with [`Error::BadAddress`]; nothing is freed.
    ///
    /// # Safety
    ///
    /// `addr` is null or was returned by this machine's vmalloc and not
    /// freed; nothing uses the memory afterwards.
    #[track_caller]
    pub unsafe fn vfree(&self, addr: *mut u8) -> Result<()> {
        if addr.is_null() {
            return Ok(());
        }
        let caller = Location::caller();
        if self.p.in_interrupt() || self.p.in_atomic() {
            if !self.p.in_interrupt() {
                // might_sleep(): vfree() may sleep outside interrupts.
                self.might_alloc(crate::gfp::GFP_KERNEL, caller);
            }
            // SAFETY: the caller's promise, passed on.
            return unsafe { self.vfree_atomic(addr) };
        }
        self.vfree_deferred_drain();
        self.vfree_now(addr, caller)
    }

    /// The body of `vfree()` in a context that may sleep.
    fn vfree_now(&self, addr: *mut u8, caller: &Location<'_>) -> Result<()> {
        if addr as usize % PAGE_SIZE != 0 {
            self.warn_bad_free("vfree", "bad address", addr, caller);
            return Err(Error::BadAddress);
        }
        let Some((vm, va)) = self.unlink_vm_area(addr as usize) else {
            self.warn_bad_free("vfree", "nonexistent vm area", addr, caller);
            return Err(Error::BadAddress);
        };
        // SAFETY: unlinked above, so the VmStruct is ours.
        let flags = unsafe { vm.as_ref().flags };
        let pages = if flags & (VM_ALLOC | VM_MAP_PUT_PAGES) != 0 {
            PagesToFree::Allocated
        } else {
            PagesToFree::None
        };
        self.free_unlinked_vm(vm, va, pages);
        Ok(())
    }

    /// `vfree_atomic()`: free `addr` later, from a context that may sleep
    /// (the next `vfree()` or vmalloc there, or
    /// [`vfree_deferred_drain`](Self::vfree_deferred_drain)). Safe in
    /// interrupt context: it only links the memory onto a lock-free list.
    ///
    /// # Safety
    ///
    /// As [`vfree`](Self::vfree): `addr` is a live vmalloc allocation the
    /// caller gives up (its first word is overwritten at once).
    pub unsafe fn vfree_atomic(&self, addr: *mut u8) -> Result<()> {
        if addr.is_null() {
            return Ok(());
        }
        if addr as usize % PAGE_SIZE != 0 || !self.is_vmalloc_addr(addr) {
            self.warn_bad_free("vfree", "bad address", addr, Location::caller());
            return Err(Error::BadAddress);
        }
        let node = addr.cast::<usize>();
        let mut head = self.vmalloc.deferred.load(Relaxed);
        loop {
            // SAFETY: the caller gives up `addr`, a mapped, page-aligned
            // vmalloc allocation of at least a page: its first word is ours.
            unsafe { node.write(head as usize) };
            match self
                .vmalloc
                .deferred
                .compare_exchange_weak(head, node, Release, Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(h) => head = h,
            }
        }
    }

    /// Free what `vfree_atomic()` deferred (Linux's `delayed_vfree_work`).
    /// Does nothing in atomic context.
    pub fn vfree_deferred_drain(&self) {
        if self.p.in_atomic() || self.vmalloc.deferred.load(Relaxed).is_null() {
            return;
        }
        let mut p = self.vmalloc.deferred.swap(core::ptr::null_mut(), AcqRel);
        while !p.is_null() {
            // SAFETY: each entry is a deferred vmalloc allocation whose first
            // word links the next; read it before the memory goes.
            let next = unsafe { p.read() } as *mut usize;
            let _ = self.vfree_now(p.cast(), Location::caller());
            p = next;
        }
    }

    /// `vunmap()`: undo a [`vmap`](Self::vmap) or
    /// [`vmap_pfn`](Self::vmap_pfn); the pages stay the caller's.
    ///
    /// # Safety
    ///
    /// `addr` is null or a live `vmap`/`vmap_pfn` address of this machine
    /// that nothing uses afterwards.
    #[track_caller]
    pub unsafe fn vunmap(&self, addr: *mut u8) -> Result<()> {
        if addr.is_null() {
            return Ok(());
        }
        let caller = Location::caller();
        if self.p.in_interrupt() {
            report!(
                &self.p,
                Level::Err,
                "kernel BUG at {}: vunmap() in interrupt context",
                caller
            );
            return Err(Error::InvalidArgument);
        }
        let Some((vm, va)) = self.unlink_vm_area(addr as usize) else {
            self.warn_bad_free("vunmap", "nonexistent vm area", addr, caller);
            return Err(Error::BadAddress);
        };
        self.free_unlinked_vm(vm, va, PagesToFree::None);
        Ok(())
    }

    /// `free_vm_area()`: give back an area from
    /// [`get_vm_area`](Self::get_vm_area) (whatever was mapped there is
    /// unmapped; no pages are freed).
    ///
    /// # Safety
    ///
    /// `area` came from this machine's `get_vm_area()`, is not freed yet,
    /// and neither it nor its addresses are used afterwards.
    #[track_caller]
    pub unsafe fn free_vm_area(&self, area: &VmStruct) -> Result<()> {
        let addr = area.addr;
        let Some((vm, va)) = self.unlink_vm_area(addr) else {
            self.warn_bad_free(
                "free_vm_area",
                "nonexistent vm area",
                addr as *const u8,
                Location::caller(),
            );
            return Err(Error::BadAddress);
        };
        self.free_unlinked_vm(vm, va, PagesToFree::None);
        Ok(())
    }
}
