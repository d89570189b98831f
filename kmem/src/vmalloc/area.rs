//! The vmap_area allocator (`mm/vmalloc.c`: `alloc_vmap_area()`,
//! `free_vmap_area_noflush()`, `__purge_vmap_area_lazy()`): ranges of the
//! vmalloc space, free, busy and lazily freed.
//!
//! This file owns the three structures of [`VmallocState`](super::VmallocState)
//! that hold nodes (the free tree, the busy tree, the purge list) and the
//! `vmap_area` cache the nodes come from; the rest of vmalloc reaches them
//! only through the functions here.
//!
//! Node ownership: a node is in exactly one of the free tree, the busy
//! tree, the purge list, the preload slot, or the hands of the one caller
//! that took it out of one of them.

use super::tree::{AreaTree, Path, VmapArea};
use super::{PurgeEvent, VmStruct, VM_UNINITIALIZED};
use crate::gfp::{self, Gfp};
use crate::platform::{Level, Platform};
use crate::slab::KmemCache;
use crate::{report, Error, Kmem, Result, PAGE_SHIFT, PAGE_SIZE};
use core::ptr::NonNull;
use core::sync::atomic::Ordering::{AcqRel, Relaxed};

/// What [`Kmem::free_vmap_area_noflush`] saw, as the
/// `vmalloc:free_vmap_area_noflush` event shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LazyFree {
    /// `vmap_lazy_nr` after adding the area's pages.
    pub nr_lazy: usize,
    /// `lazy_max_pages()`.
    pub nr_lazy_max: usize,
}

impl LazyFree {
    /// Whether Linux would now schedule the purge (`nr_lazy > nr_lazy_max`).
    pub fn purge_due(&self) -> bool {
        self.nr_lazy > self.nr_lazy_max
    }
}

impl<P: Platform> Kmem<P> {
    /// `vmap_area_cachep`.
    fn vmap_area_cache(&self) -> &KmemCache {
        let c = self.vmalloc.cache.load(Relaxed);
        // SAFETY: set once in vmalloc_init() (boot) to a cache that is never
        // destroyed; callers run after boot.
        unsafe { &*c }
    }

    /// A fresh node for `[start, end)` from the `vmap_area` cache.
    pub(crate) fn vmap_area_new(
        &self,
        gfp: Gfp,
        start: usize,
        end: usize,
    ) -> Result<NonNull<VmapArea>> {
        let obj = self.kmem_cache_alloc(self.vmap_area_cache(), gfp & gfp::GFP_RECLAIM_MASK)?;
        let va = obj.cast::<VmapArea>();
        // SAFETY: a new object of the vmap_area cache: sized and aligned for
        // a VmapArea and owned by us.
        unsafe { va.as_ptr().write(VmapArea::new(start, end)) };
        Ok(va)
    }

    /// Give a node back to the `vmap_area` cache.
    ///
    /// # Safety
    ///
    /// `va` came from [`vmap_area_new`](Self::vmap_area_new), is in no tree
    /// or list, and is not used again.
    pub(crate) unsafe fn vmap_area_drop(&self, va: NonNull<VmapArea>) {
        // SAFETY: the caller gives up the node, a live object of the cache.
        let r = unsafe { self.kmem_cache_free(self.vmap_area_cache(), va.as_ptr().cast()) };
        debug_assert!(r.is_ok());
    }

    /// A node for the split of a free area (`ne_fit_preload_node`), taken
    /// from the preload slot or the cache before the free tree's lock.
    fn preload_node(&self, gfp: Gfp) -> Option<NonNull<VmapArea>> {
        let p = self.vmalloc.preload.swap(core::ptr::null_mut(), AcqRel);
        NonNull::new(p).or_else(|| self.vmap_area_new(gfp, 0, 0).ok())
    }

    /// Put an unused preloaded node back in the slot (or the cache).
    fn preload_put(&self, va: NonNull<VmapArea>) {
        let old = self.vmalloc.preload.swap(va.as_ptr(), AcqRel);
        if let Some(old) = NonNull::new(old) {
            // SAFETY: the slot owned `old`; it is in no tree.
            unsafe { self.vmap_area_drop(old) };
        }
    }

    /// `__alloc_vmap_area()`: take `size` bytes aligned to `align` from the
    /// lowest free area inside `[vstart, vend)`; `spare` is consumed when
    /// the fit splits a free area in two.
    fn alloc_from_free_tree(
        &self,
        size: usize,
        align: usize,
        vstart: usize,
        vend: usize,
        spare: &mut Option<NonNull<VmapArea>>,
    ) -> Option<usize> {
        // Search with `size + align - 1` so any area found fits whatever its
        // alignment, except where that cannot help: every area is page
        // aligned, and a range exactly `size` long has one placement.
        let adjust = !(align <= PAGE_SIZE || vend - vstart == size);
        let mut free = self.vmalloc.free.lock();
        let mut path = Path::new();
        let fva = free
            .0
            .find_lowest_match(size, align, vstart, adjust, &mut path)?;
        // SAFETY: `fva` is in the free tree, whose lock we hold.
        let (fs, fe) = unsafe { ((*fva.as_ptr()).va_start, (*fva.as_ptr()).va_end) };
        let nva_start = super::tree::fit_start((fs, fe), size, align, vstart)?;
        let nva_end = nva_start + size;
        if nva_end > vend {
            return None;
        }
        // adjust_va_to_fit_type(): the four ways the block sits in `fva`.
        // In each, `fva` is a node of the free tree under its lock;
        // shrinking it from one end keeps its place in the address order,
        // and update_augment_path() restores subtree_max_size along the
        // descent that found it: `path`, valid while the tree keeps its
        // shape (so NE_FIT updates before its insert).
        match (nva_start == fs, nva_end == fe) {
            // FL_FIT_TYPE: the whole free area.
            // SAFETY: as above, and `path` ends at `fva`, so the removal
            // walks back up it; once removed, `fva` is ours to drop.
            (true, true) => unsafe {
                free.0.remove_at(&mut path);
                drop(free);
                self.vmap_area_drop(fva);
            },
            // LE_FIT_TYPE: from its left edge.
            // SAFETY: as above.
            (true, false) => unsafe {
                (*fva.as_ptr()).va_start = nva_end;
                free.0.update_augment_path(&path);
            },
            // RE_FIT_TYPE: up to its right edge.
            // SAFETY: as above.
            (false, true) => unsafe {
                (*fva.as_ptr()).va_end = nva_start;
                free.0.update_augment_path(&path);
            },
            // NE_FIT_TYPE: in the middle, splitting it in two.
            (false, false) => {
                let lva = spare.take()?;
                // SAFETY: `lva` is the caller's spare node, in no tree;
                // `[fs, nva_start)` and the shrunk `fva` do not overlap.
                unsafe {
                    (*fva.as_ptr()).va_start = nva_end;
                    free.0.update_augment_path(&path);
                    lva.as_ptr().write(VmapArea::new(fs, nva_start));
                    free.0.insert(lva);
                }
            }
        }
        Some(nva_start)
    }

    /// `alloc_vmap_area()`: a busy area of `size` bytes (page multiple,
    /// guard page included by the caller) aligned to `align` (a power of
    /// two) inside `[vstart, vend)`, for `vm` if given. The node comes from
    /// the `vmap_area` cache with `gfp`'s reclaim bits.
    ///
    /// When the space is full it purges the lazily freed areas once (if
    /// `gfp` may block) and retries; then it reports Linux's "vmap
    /// allocation for size N failed: use vmalloc=<size> to increase size"
    /// (unless `__GFP_NOWARN`) and fails with [`Error::Busy`], as Linux
    /// returns `-EBUSY`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn alloc_vmap_area_node(
        &self,
        size: usize,
        align: usize,
        vstart: usize,
        vend: usize,
        node: i32,
        gfp: Gfp,
        va_flags: usize,
        vm: Option<NonNull<VmStruct>>,
    ) -> Result<NonNull<VmapArea>> {
        if size == 0 || size % PAGE_SIZE != 0 || !align.is_power_of_two() || vstart >= vend {
            return Err(Error::InvalidArgument);
        }
        if self.vmalloc.cache.load(Relaxed).is_null() {
            return Err(Error::Busy);
        }
        let may_block = gfp.contains(gfp::__GFP_DIRECT_RECLAIM) && !self.p.in_atomic();
        if may_block {
            self.vfree_deferred_drain();
        }
        let _ = node;
        let va = self.vmap_area_new(gfp, 0, 0)?;
        let mut purged = false;
        let addr = loop {
            let mut spare = self.preload_node(gfp);
            let addr = self.alloc_from_free_tree(size, align, vstart, vend, &mut spare);
            if let Some(s) = spare {
                self.preload_put(s);
            }
            if let Some(a) = addr {
                break a;
            }
            // overflow: purge the lazily freed areas once and retry, as
            // reclaim_and_purge_vmap_areas() does. The retry does not depend
            // on this purge finding areas: it waits behind a purge running
            // on another CPU (the purge mutex), whose areas are back by then.
            if !purged && may_block {
                purged = true;
                self.purge_vmap_area_lazy();
                continue;
            }
            self.vmalloc.stats.alloc_failures.fetch_add(1, Relaxed);
            if !gfp.contains(gfp::__GFP_NOWARN) {
                report!(
                    &self.p,
                    Level::Warning,
                    "vmap allocation for size {} failed: use vmalloc=<size> to increase size",
                    size
                );
            }
            // SAFETY: `va` is ours and in no tree.
            unsafe { self.vmap_area_drop(va) };
            return Err(Error::Busy);
        };
        // SAFETY: `va` is ours until it enters the busy tree below; `vm` is
        // the caller's VmStruct, not yet visible to anyone.
        unsafe {
            let v = &mut *va.as_ptr();
            v.va_start = addr;
            v.va_end = addr + size;
            v.flags = va_flags;
            if let Some(vm) = vm {
                let vm = &mut *vm.as_ptr();
                vm.addr = addr;
                vm.size = size;
                v.vm = vm;
            }
            self.vmalloc.busy.lock().0.insert(va);
        }
        self.vmalloc.stats.allocs.fetch_add(1, Relaxed);
        Ok(va)
    }

    /// `alloc_vmap_area()` for a caller that maps the range itself (and the
    /// trace replay): a busy area of `size` bytes (a page multiple)
    /// aligned to `align` in the vmalloc space, shown in no report. Returns
    /// its first address; give it back with
    /// [`free_vmap_area`](Self::free_vmap_area) or
    /// [`free_vmap_area_noflush`](Self::free_vmap_area_noflush).
    ///
    /// ```
    /// # let mut mem = vec![0u8; 8 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 2).unwrap();
    /// use kmem::gfp::GFP_KERNEL;
    /// // The arena has no page tables, but its vmalloc space is numbered.
    /// let a = k.alloc_vmap_area(5 * 4096, 4 * 4096, GFP_KERNEL).unwrap();
    /// assert_eq!(a % (4 * 4096), 0);
    /// k.free_vmap_area(a).unwrap();
    /// ```
    pub fn alloc_vmap_area(&self, size: usize, align: usize, gfp: Gfp) -> Result<usize> {
        let (start, end) = (self.vmalloc.start, self.vmalloc.end);
        let va =
            self.alloc_vmap_area_node(size, align, start, end, -1, gfp, super::VMAP_PLAIN, None)?;
        // SAFETY: `va` is in the busy tree; its range does not change while busy.
        Ok(unsafe { va.as_ref().va_start })
    }

    /// `find_unlink_vmap_area()`: take the busy area that starts at
    /// `addr` out of the busy tree.
    pub(crate) fn find_unlink_vmap_area(&self, addr: usize) -> Option<NonNull<VmapArea>> {
        self.unlink_busy_area_if(addr, |_| true)
    }

    /// [`find_unlink_vmap_area`](Self::find_unlink_vmap_area) of an area
    /// `accept` agrees to (its owner's kind, size...), looked at under the
    /// busy tree's lock; the area stays busy when it does not. One descent
    /// finds it and the removal walks back up that path.
    pub(crate) fn unlink_busy_area_if(
        &self,
        addr: usize,
        accept: impl FnOnce(&VmapArea) -> bool,
    ) -> Option<NonNull<VmapArea>> {
        let mut busy = self.vmalloc.busy.lock();
        let mut path = Path::new();
        let va = busy.0.find_path(addr, &mut path)?;
        // SAFETY: a node of the busy tree under its lock, `path` the descent
        // to it; removed, it is ours.
        unsafe {
            let v = va.as_ref();
            if v.va_start != addr || !accept(v) {
                return None;
            }
            busy.0.remove_at(&mut path);
        }
        Some(va)
    }

    /// Unlink the busy area at `addr` if [`alloc_vmap_area`](Self::alloc_vmap_area)
    /// made it: the public frees must not take a vmalloc, ioremap, per-CPU
    /// chunk or `vm_map_ram` area from its owner.
    fn unlink_plain_area(&self, addr: usize) -> Option<NonNull<VmapArea>> {
        self.unlink_busy_area_if(addr, |v| v.flags & super::VMAP_PLAIN != 0)
    }

    /// `merge_or_add_vmap_area_augment()`: return `va`'s range to the free
    /// tree, merging it with the free areas on either side.
    ///
    /// # Safety
    ///
    /// `va` is a node in no tree or list, whose range is unmapped and
    /// flushed from every TLB.
    pub(crate) unsafe fn merge_or_add_vmap_area(&self, va: NonNull<VmapArea>) {
        let mut free = self.vmalloc.free.lock();
        // SAFETY: we own `va`; the neighbours are nodes of the free tree
        // under its lock, and each change below keeps the address order
        // (ranges only grow into the gap `va` fills). `path` is the
        // descent to them, valid until the tree changes shape: the
        // one-neighbour cases update along it; the two-neighbour case
        // removes a node first and so walks parent links instead.
        unsafe {
            let (s, e) = ((*va.as_ptr()).va_start, (*va.as_ptr()).va_end);
            // One descent finds both neighbours (Linux: find_va_links(),
            // then the sorted list's siblings) and the path down to them.
            let mut path = Path::new();
            let (le, gt) = free.0.find_neighbours(s, &mut path);
            let at = |i: Option<usize>| i.and_then(|i| AreaTree::path_node(&path, i));
            let prev = at(le).filter(|p| (*p.as_ptr()).va_end == s);
            let next = at(gt).filter(|n| (*n.as_ptr()).va_start == e);
            match (prev, next) {
                (Some(p), Some(n)) => {
                    let ne = (*n.as_ptr()).va_end;
                    free.0.remove(n);
                    (*p.as_ptr()).va_end = ne;
                    free.0.update_augment(p);
                    drop(free);
                    self.vmap_area_drop(n);
                    self.vmap_area_drop(va);
                }
                (Some(p), None) => {
                    (*p.as_ptr()).va_end = e;
                    path.truncate(le.map_or(0, |i| i + 1));
                    free.0.update_augment_path_grown(&path);
                    drop(free);
                    self.vmap_area_drop(va);
                }
                (None, Some(n)) => {
                    (*n.as_ptr()).va_start = s;
                    path.truncate(gt.map_or(0, |i| i + 1));
                    free.0.update_augment_path_grown(&path);
                    drop(free);
                    self.vmap_area_drop(va);
                }
                (None, None) => {
                    let v = &mut *va.as_ptr();
                    v.vm = core::ptr::null_mut();
                    v.flags = 0;
                    free.0.insert(va);
                }
            }
        }
    }

    /// `free_vmap_area()`: give back at once a busy area that was never
    /// mapped (or whose mapping was never used), merging it into the free
    /// tree without a lazy round.
    pub fn free_vmap_area(&self, addr: usize) -> Result<()> {
        let va = self.unlink_plain_area(addr).ok_or(Error::BadAddress)?;
        // SAFETY: unlinked above, so ours; the caller promises nothing maps it.
        unsafe { self.merge_or_add_vmap_area(va) };
        Ok(())
    }

    /// `free_vmap_area_noflush()` for a node already out of the busy tree:
    /// put it on the purge list and count its pages lazily freed.
    pub(crate) fn lazy_free_node(&self, va: NonNull<VmapArea>) -> LazyFree {
        // SAFETY: the caller unlinked `va`; we own it until it is listed.
        let pages = unsafe { va.as_ref().size() } >> PAGE_SHIFT;
        {
            let mut purge = self.vmalloc.purge.lock();
            // SAFETY: as above; the list's lock is held.
            unsafe { (*va.as_ptr()).list_next = purge.head };
            purge.head = va.as_ptr();
            purge.len += 1;
        }
        let nr_lazy = self.vmalloc.lazy_nr.fetch_add(pages, Relaxed) + pages;
        self.vmalloc.stats.lazy_frees.fetch_add(1, Relaxed);
        LazyFree {
            nr_lazy,
            nr_lazy_max: self.lazy_max_pages(),
        }
    }

    /// `free_vmap_area_noflush()`: free the busy area at `addr` lazily. Its
    /// range is not reused until a purge has flushed the TLB for it. The
    /// caller has unmapped it. Unlike `vfree()`, this does not purge when
    /// the lazy pages pass [`lazy_max_pages`](super::lazy_max_pages): the
    /// answer says whether Linux would now schedule the purge, so the
    /// trace replay can purge where Linux did.
    pub fn free_vmap_area_noflush(&self, addr: usize) -> Result<LazyFree> {
        let va = self.unlink_plain_area(addr).ok_or(Error::BadAddress)?;
        Ok(self.lazy_free_node(va))
    }

    /// `drain_vmap_area_work()`/`__purge_vmap_area_lazy(ULONG_MAX, 0)`:
    /// flush the TLB once for the merged range of every lazily freed area
    /// and return them to the free tree. Answers what the
    /// `vmalloc:purge_vmap_area_lazy` event would show.
    pub fn purge_vmap_area_lazy(&self) -> PurgeEvent {
        self.purge_range(usize::MAX, 0)
    }

    /// `__purge_vmap_area_lazy(start, end)`: the purge, with the flushed
    /// range widened to `[start, end)` (as `vm_unmap_aliases()` asks).
    pub(crate) fn purge_range(&self, mut start: usize, mut end: usize) -> PurgeEvent {
        let _serial = self.vmalloc.purge_mutex.lock();
        let mut head = {
            let mut purge = self.vmalloc.purge.lock();
            purge.len = 0;
            core::mem::replace(&mut purge.head, core::ptr::null_mut())
        };
        let mut p = head;
        while let Some(va) = NonNull::new(p) {
            // SAFETY: the list was taken whole under its lock: its nodes are ours.
            let v = unsafe { va.as_ref() };
            start = start.min(v.va_start);
            end = end.max(v.va_end);
            p = v.list_next;
        }
        let mut num_purged = 0;
        if !head.is_null() {
            self.p.flush_tlb_kernel_range(start, end);
            while let Some(va) = NonNull::new(head) {
                // SAFETY: as above: each node is ours, unmapped, and flushed now.
                unsafe {
                    head = (*va.as_ptr()).list_next;
                    (*va.as_ptr()).list_next = core::ptr::null_mut();
                    let pages = va.as_ref().size() >> PAGE_SHIFT;
                    self.vmalloc.lazy_nr.fetch_sub(pages, Relaxed);
                    self.merge_or_add_vmap_area(va);
                }
                num_purged += 1;
            }
            self.vmalloc.stats.purges.fetch_add(1, Relaxed);
            self.vmalloc
                .stats
                .purged_areas
                .fetch_add(num_purged, Relaxed);
        }
        let ev = PurgeEvent {
            start,
            end,
            num_purged,
        };
        *self.vmalloc.last_purge.lock() = Some(ev);
        ev
    }

    /// Purge if the lazily freed pages passed the limit and the caller may
    /// sleep (`free_vmap_area_noflush()`'s `schedule_work()`, done here).
    pub(crate) fn purge_if_due(&self, lf: LazyFree) {
        if lf.purge_due() && !self.p.in_atomic() {
            self.purge_vmap_area_lazy();
        }
    }

    /// Busy areas, in address order: `f(start, end, flags, vm)`, under the
    /// busy tree's lock (so `f` must not allocate or free vmalloc areas).
    /// Areas still being set up (`VM_UNINITIALIZED`) are skipped.
    pub(crate) fn for_each_busy_area(
        &self,
        mut f: impl FnMut(usize, usize, usize, Option<&VmStruct>),
    ) {
        let busy = self.vmalloc.busy.lock();
        let mut cur = busy.0.first();
        while let Some(va) = cur {
            // SAFETY: nodes of the busy tree under its lock; `vm` is null or
            // a live VmStruct owned by the area.
            unsafe {
                let v = va.as_ref();
                let vm = v.vm.as_ref();
                if vm.is_none_or(|vm| vm.flags & VM_UNINITIALIZED == 0) {
                    f(v.va_start, v.va_end, v.flags, vm);
                }
                cur = super::tree::AreaTree::next(va);
            }
        }
    }

    /// Lazily freed areas not yet purged: `f(start, end)`.
    pub(crate) fn for_each_lazy_area(&self, mut f: impl FnMut(usize, usize)) {
        let purge = self.vmalloc.purge.lock();
        let mut p = purge.head;
        while let Some(va) = NonNull::new(p) {
            // SAFETY: listed nodes under the list's lock.
            let v = unsafe { va.as_ref() };
            f(v.va_start, v.va_end);
            p = v.list_next;
        }
    }

    /// The free areas' count and largest size (for tests and reports).
    pub fn vmap_free_areas(&self) -> (usize, usize) {
        let free = self.vmalloc.free.lock();
        let mut largest = 0;
        let mut cur = free.0.first();
        while let Some(va) = cur {
            // SAFETY: nodes of the free tree under its lock.
            unsafe {
                largest = largest.max(va.as_ref().size());
                cur = super::tree::AreaTree::next(va);
            }
        }
        (free.0.len(), largest)
    }
}
