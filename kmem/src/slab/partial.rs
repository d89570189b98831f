//! The slab level (`struct slab` in `mm/slub.c`): a slab taken from the
//! page allocator and given back, its freelist, the node's partial and
//! full lists, and finding the slab of an address (`virt_to_slab()`).
//!
//! A slab is a compound page block whose head descriptor carries the cache,
//! the freelist and the in-use/objects counters; free objects are chained
//! through a free pointer stored at `s->offset` in each, obfuscated as with
//! `CONFIG_SLAB_FREELIST_HARDENED` (`ptr ^ random ^ swab(&ptr)`) and, with
//! freelist randomisation, linked in a random order. Slabs with free objects
//! sit on their node's partial list; full ones on a full list (Linux keeps
//! that only for debugging; kmem keeps it to list leaks on destroy). An
//! empty slab goes back to the page allocator once the node has more than
//! `min_partial` partial slabs; `kmem_cache_shrink` gives back all of them.

use super::cache::*;
use super::*;
use crate::gfp::{self, Gfp};
use crate::page::{Page, PageList, PG_SLAB, PG_TAIL};
use crate::platform::IrqSpinGuard;
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result, PAGE_SHIFT, PAGE_SIZE};
use core::ptr::{self};
use core::sync::atomic::Ordering::Relaxed;

impl<P: Platform> Kmem<P> {
    /// The slab page holding object address `x`, if any.
    pub(crate) fn virt_to_slab(&self, x: *const u8) -> Option<&Page> {
        self.slab_of(x).map(|sl| sl.page)
    }

    /// `virt_to_slab()` with the slab's address: the head descriptor of the
    /// slab holding `x` and the direct-map address of its first byte, if
    /// `x` lies in a slab. The address comes from the pfn, not from
    /// `page_address()`, which would divide to find the descriptor's index.
    #[inline]
    pub(crate) fn slab_of(&self, x: *const u8) -> Option<SlabRef<'_>> {
        // No memblock lookup: a page with PG_slab is RAM by construction.
        // One range check: an address below the direct map or below the
        // first pfn wraps around to an index past the end of mem_map. No
        // check against the direct map's end either: a page there is high
        // memory, and slabs are never taken from high memory.
        let mm = self.mem_map();
        // (x - base - base_pfn * PAGE_SIZE) / PAGE_SIZE is (x - base) /
        // PAGE_SIZE - base_pfn, an address below the map wrapping the same.
        let mut idx = (x as usize).wrapping_sub(self.mem_map_va) >> PAGE_SHIFT;
        let mut page = mm.get(idx)?;
        let mut flags = page.raw_flags();
        if flags & PG_SLAB == 0 {
            // PG_slab is on the head page only: a tail page of a
            // multi-page slab leads to it.
            if flags & PG_TAIL == 0 {
                return None;
            }
            idx = page.head_index()? as usize;
            page = mm.get(idx)?;
            flags = page.raw_flags();
            if flags & PG_SLAB == 0 {
                return None;
            }
        }
        Some(SlabRef {
            page,
            base: self.mem_map_va.wrapping_add(idx << PAGE_SHIFT),
            nid: Page::nid_of(flags),
            idx: idx as u32,
        })
    }

    /// A free found no slab of `s` at `x` any more, where the caller's
    /// checks had found one: a racing free of the same object (a double
    /// free) emptied the slab, and it was given back, in between.
    #[cold]
    #[inline(never)]
    pub(super) fn freed_meanwhile(
        &self,
        s: &KmemCache,
        x: usize,
        caller: &'static core::panic::Location<'static>,
    ) -> Result<()> {
        slab_bug(&self.p, s, format_args!("Object already free"));
        report!(
            &self.p,
            Level::Err,
            "Object 0x{:x} freed again from {}: its slab was emptied and given back meanwhile",
            x,
            caller
        );
        Err(Error::BadState)
    }

    #[cold]
    #[inline(never)]
    pub(super) fn not_in_slab(&self, s: &KmemCache, x: *const u8, what: &str) -> Result<()> {
        report!(
            &self.p,
            Level::Err,
            "{}: object {:p} is not in a slab of {}",
            what,
            x,
            s.name()
        );
        Err(Error::BadAddress)
    }

    /// The report of `cache_from_obj()` for an object of another cache.
    #[cold]
    #[inline(never)]
    pub(crate) fn wrong_cache(&self, s: &KmemCache, page: &Page, what: &str) -> Result<()> {
        let addr = page.slab_cache_addr();
        if addr == 0 {
            // The slab was given back since the caller looked.
            report!(
                &self.p,
                Level::Err,
                "{}: object is no longer in a slab of {}",
                what,
                s.name()
            );
            return Err(Error::BadAddress);
        }
        // SAFETY: a slab's cache field points at a live cache (a cache is
        // destroyed only with no objects, so none is freed into it then).
        let o = unsafe { &*(addr as *const KmemCache) };
        report!(
            &self.p,
            Level::Warning,
            "WARNING: {}: Wrong slab cache. {} but object is from {}",
            what,
            s.name(),
            o.name()
        );
        Err(Error::InvalidArgument)
    }

    /// `check_valid_pointer()` failed: report an address inside an object.
    #[cold]
    #[inline(never)]
    pub(crate) fn invalid_pointer(&self, s: &KmemCache, x: *const u8) -> Result<()> {
        // Found again rather than passed: the fast paths then keep the slab
        // in registers instead of spilling it for this call.
        let Some(slab) = self.slab_of(x) else {
            // A racing free emptied and gave back the slab since the caller looked.
            return self.not_in_slab(s, x, "kmem_cache_free");
        };
        let (x, base) = (x as usize, slab.base);
        let objects = slab.page.slab_objects() as usize;
        slab_bug(&self.p, s, format_args!("Invalid object pointer 0x{x:x}"));
        let first = base + s.geo.red_left_pad;
        let off = x.wrapping_sub(first);
        if x < first {
            report!(
                &self.p,
                Level::Err,
                "Pointer 0x{:x} is before the first object 0x{:x} of {} at @offset={}",
                x,
                first,
                s.name(),
                x - base
            );
        } else if off / s.geo.size >= objects {
            report!(
                &self.p,
                Level::Err,
                "Pointer 0x{:x} is past the last object of {} ({} objects) at @offset={}",
                x,
                s.name(),
                objects,
                x - base
            );
        } else {
            report!(
                &self.p,
                Level::Err,
                "Pointer 0x{:x} is in object 0x{:x} of {} at @offset={}",
                x,
                s.obj_addr(base, off / s.geo.size),
                s.name(),
                off % s.geo.size
            );
        }
        Err(Error::InvalidArgument)
    }

    /// `allocate_slab()`: a new slab for `s` near node `nid`, its objects
    /// linked (in random order with freelist randomisation), debug bytes
    /// laid out, constructors run.
    pub(super) fn allocate_slab(&self, s: &KmemCache, gfp: Gfp, nid: i32) -> Result<&Page> {
        let base_gfp = Gfp::from_bits(gfp.bits() & gfp::GFP_RECLAIM_MASK.bits()) | s.geo.allocflags;
        let first = if s.geo.order > s.geo.min_order {
            self.alloc_pages_node(
                nid,
                (base_gfp | gfp::__GFP_NOWARN | gfp::__GFP_NORETRY).without(gfp::__GFP_NOFAIL),
                s.geo.order,
            )
        } else {
            Err(Error::NoMemory)
        };
        let page = match first {
            Ok(p) => p,
            Err(_) => self.alloc_pages_node(nid, base_gfp, s.geo.min_order)?,
        };
        let order = page.order();
        let objects = if order == s.geo.order {
            s.geo.objects
        } else {
            s.geo.min_objects
        } as u32;
        let base = self.page_address(page).ok_or(Error::NoMemory)?.as_ptr() as usize;
        // PG_slab comes last, below: a racing (double) free that looks the
        // address up meanwhile finds no slab rather than a half-built one.
        page.set_slab_cache_addr(s as *const KmemCache as usize);
        page.set_slab_counters(0, objects);
        if s.is_debug() {
            // Leftover bytes at the end carry POISON_INUSE (slab_pad_check).
            let used = objects as usize * s.geo.size;
            // SAFETY: the slab's bytes are ours; the range is inside it.
            unsafe {
                ptr::write_bytes(
                    (base + used) as *mut u8,
                    POISON_INUSE,
                    (PAGE_SIZE << order) - used,
                )
            };
        }
        // Link the objects, in order or shuffled.
        let mut prev = 0usize;
        let mut first_obj = 0usize;
        let n = objects as usize;
        let mut perm_state = if s.randomize { self.p.random_u64() } else { 0 };
        // A random permutation without memory: walk i -> (a*i + b) mod n with
        // a coprime to n (a full cycle).
        let (a, b) = if s.randomize && n > 1 {
            let mut a = (perm_state as usize % n) | 1;
            while gcd(a, n) != 1 {
                a += 2;
            }
            perm_state >>= 32;
            (a % n, perm_state as usize % n)
        } else {
            (1, 0)
        };
        for k in 0..n {
            let i = (a * k + b) % n;
            let obj = s.obj_addr(base, i);
            self.init_object(s, obj, false);
            if let Some(ctor) = s.ctor {
                ctor(obj as *mut u8);
            }
            if prev == 0 {
                first_obj = obj;
            } else {
                s.set_fp(prev, obj);
            }
            prev = obj;
        }
        if prev != 0 {
            s.set_fp(prev, 0);
        }
        page.set_slab_freelist(if first_obj == 0 {
            0
        } else {
            (first_obj - base + 1) as u32
        });
        page.set_flag(PG_SLAB);
        Ok(page)
    }

    /// `discard_slab()`: give an empty slab back to the page allocator.
    pub(super) fn discard_slab(&self, s: &KmemCache, page: &Page) {
        let nid = page.nid();
        let n = s.node(nid.min(s.nr_nodes - 1));
        n.nr_slabs.fetch_sub(1, Relaxed);
        n.total_objects
            .fetch_sub(u64::from(page.slab_objects()), Relaxed);
        n.nr_pages.fetch_sub(1 << page.order(), Relaxed);
        page.clear_flag(PG_SLAB);
        page.set_slab_cache_addr(0);
        page.set_slab_counters(0, 0);
        page.set_slab_freelist(0);
        let order = page.order();
        if self.__free_pages(page, order).is_err() {
            report!(
                &self.p,
                Level::Err,
                "slab: could not free a slab of {}",
                s.name()
            );
        }
    }

    /// Take up to `out.len()` objects from slabs of node `nid`, allocating
    /// a slab when none has free objects. Returns how many it took.
    pub(super) fn refill_from_slabs(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        nid: usize,
        out: &mut [usize],
    ) -> Result<usize> {
        let mut node = nid.min(s.nr_nodes - 1);
        loop {
            let got = {
                let mut l = IrqSpinGuard::lock(&self.p, &s.node(node).lists);
                let mut got = 0;
                self.take_from_partial(s, &mut l, out.len(), |o| {
                    out[got] = o;
                    got += 1;
                });
                got
            };
            if got > 0 {
                return Ok(got);
            }
            node = self.new_slab(s, gfp, nid)?;
        }
    }

    /// Allocate a slab near node `nid` and put it on its node's partial
    /// list. Returns that node.
    pub(super) fn new_slab(&self, s: &KmemCache, gfp: Gfp, nid: usize) -> Result<usize> {
        let page = self.allocate_slab(s, gfp, nid as i32)?;
        let node = page.nid().min(s.nr_nodes - 1);
        let n = s.node(node);
        let mut l = IrqSpinGuard::lock(&self.p, &n.lists);
        let mm = self.mem_map();
        let idx = mm.index_of(page).expect("slab page of this machine");
        l.partial.push_head(&mm, idx);
        l.nr_partial += 1;
        n.nr_slabs.fetch_add(1, Relaxed);
        n.total_objects
            .fetch_add(u64::from(page.slab_objects()), Relaxed);
        n.nr_pages.fetch_add(1 << page.order(), Relaxed);
        Ok(node)
    }

    /// Take up to `want` objects from the partial slabs of a node whose
    /// list lock `l` is held, handing each to `put`; returns how many. A
    /// slab left without free objects moves to the full list. Free
    /// pointers are checked as they are followed: a corrupt one is
    /// reported ("Freepointer corrupt") and the rest of that chain isolated.
    #[inline]
    pub(super) fn take_from_partial(
        &self,
        s: &KmemCache,
        l: &mut NodeLists,
        want: usize,
        mut put: impl FnMut(usize),
    ) -> usize {
        let mm = self.mem_map();
        let mut got = 0;
        while got < want {
            let Some(idx) = l.partial.first() else { break };
            let page = mm.at(idx);
            let base = self.dm.base + (mm.pfn_of(idx) << PAGE_SHIFT) as usize;
            let objects = page.slab_objects();
            let mut inuse = page.slab_inuse();
            let mut fl = page.slab_freelist();
            while fl != 0 && got < want {
                let obj = base + fl as usize - 1;
                let next = s.get_fp(obj);
                fl = if next == 0 {
                    0
                } else if s.obj_index(base, objects, next).is_some() {
                    (next - base + 1) as u32
                } else {
                    self.freepointer_corrupt(s, base, obj, next);
                    inuse = objects - 1;
                    0
                };
                put(obj);
                got += 1;
                inuse += 1;
            }
            page.set_slab_freelist(fl);
            page.set_slab_counters(inuse, objects);
            if fl == 0 {
                l.partial.remove(&mm, idx);
                l.nr_partial -= 1;
                l.full.push_head(&mm, idx);
            }
        }
        got
    }

    #[cold]
    #[inline(never)]
    pub(super) fn freepointer_corrupt(&self, s: &KmemCache, base: usize, obj: usize, next: usize) {
        slab_bug(&self.p, s, format_args!("Freepointer corrupt"));
        report!(
            &self.p,
            Level::Err,
            "Object 0x{:x} @offset={} fp=0x{:x}",
            obj,
            obj - base,
            next
        );
        report!(
            &self.p,
            Level::Err,
            "FIX {}: Isolate corrupted freechain",
            s.name()
        );
    }

    /// Put object `x` of slab `page` back on the slab's freelist. The node's
    /// list lock is held; an emptied slab beyond `min_partial` is unlinked
    /// and pushed on `discard` for the caller to free after unlocking.
    /// Returns `false`, freeing nothing, when `x` is the freelist's head
    /// already: a double free, which `CONFIG_SLAB_FREELIST_HARDENED`'s
    /// `set_freepointer()` catches the same way (it would make the object
    /// point at itself).
    #[inline(always)]
    pub(super) fn free_to_slab_locked(
        &self,
        s: &KmemCache,
        l: &mut NodeLists,
        slab: SlabRef<'_>,
        x: usize,
        discard: &mut PageList,
    ) -> bool {
        let mm = self.mem_map();
        let (page, idx, base) = (slab.page, slab.idx, slab.base);
        let fl = page.slab_freelist();
        if fl != 0 && base + fl as usize - 1 == x {
            return false;
        }
        let was_full = fl == 0;
        s.set_fp(x, if fl == 0 { 0 } else { base + fl as usize - 1 });
        page.set_slab_freelist((x - base + 1) as u32);
        let inuse = page.slab_inuse() - 1;
        page.set_slab_counters(inuse, page.slab_objects());
        if was_full {
            l.full.remove(&mm, idx);
            l.partial.push_tail(&mm, idx);
            l.nr_partial += 1;
        }
        if inuse == 0 && l.nr_partial > s.min_partial {
            l.partial.remove(&mm, idx);
            l.nr_partial -= 1;
            retire_slab_locked(page);
            discard.push_head(&mm, idx);
        }
        true
    }

    pub(super) fn discard_all(&self, s: &KmemCache, mut discard: PageList) -> u64 {
        let mm = self.mem_map();
        let mut n = 0;
        while let Some(idx) = discard.pop_head(&mm) {
            self.discard_slab(s, mm.at(idx));
            n += 1;
        }
        n
    }

    /// Free objects straight into their slabs, each under its own node's
    /// `list_lock` (most are on node `nid`). Returns how many were refused:
    /// no longer in a slab of `s` (a racing double free gave their slab
    /// back since the caller's checks), or already at the head of their
    /// slab's freelist (a double free); they are left alone.
    pub(super) fn free_objects_to_slabs(
        &self,
        s: &KmemCache,
        nid: usize,
        objs: &[*mut u8],
    ) -> usize {
        let nid = nid.min(s.nr_nodes - 1);
        let mine = |x: *mut u8| {
            self.slab_of(x)
                .filter(|sl| sl.page.slab_cache_addr() == s as *const KmemCache as usize)
        };
        let mut discard = PageList::new();
        let (mut elsewhere, mut vanished) = (false, 0);
        {
            let mut l = IrqSpinGuard::lock(&self.p, &s.node(nid).lists);
            for &x in objs {
                match mine(x) {
                    Some(slab) if slab.nid.min(s.nr_nodes - 1) == nid => {
                        if !self.free_to_slab_locked(s, &mut l, slab, x as usize, &mut discard) {
                            vanished += 1;
                        }
                    }
                    Some(_) => elsewhere = true,
                    None => vanished += 1,
                }
            }
        }
        self.discard_all(s, discard);
        if elsewhere {
            // Objects of other nodes (a sheaf refilled from a remote node):
            // under their own node's lock, never this one's.
            for &x in objs {
                if let Some(sl) = mine(x).filter(|sl| sl.nid.min(s.nr_nodes - 1) != nid) {
                    vanished += self.free_objects_to_slabs(s, sl.nid, &[x]);
                }
            }
        }
        vanished
    }

    /// Free objects on partial slabs of `s` (for `/proc/slabinfo`'s active
    /// objects: `count_partial(n, count_free)`).
    pub(crate) fn slab_free_objects(&self, s: &KmemCache) -> u64 {
        let mm = self.mem_map();
        (0..s.nr_nodes)
            .map(|nid| {
                let l = IrqSpinGuard::lock(&self.p, &s.node(nid).lists);
                l.partial
                    .iter(&mm)
                    .map(|i| {
                        let p = mm.at(i);
                        u64::from(p.slab_objects() - p.slab_inuse())
                    })
                    .sum::<u64>()
            })
            .sum()
    }
}

/// Mark a slab that leaves its node's lists for the page allocator as no
/// slab any more, under the node's `list_lock`, before the lock is dropped:
/// a free that takes the lock afterwards (a racing double free of one of
/// its objects) then finds no slab there, instead of a slab being freed.
pub(super) fn retire_slab_locked(page: &Page) {
    page.clear_flag(PG_SLAB);
}
