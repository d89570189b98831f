//! The allocation path (`__alloc_pages()` and what it calls in
//! `mm/page_alloc.c`): the inline fast path for the common request, the
//! zonelist walk with its watermark checks (`get_page_from_freelist()`),
//! the buddy and per-CPU list takes (`rmqueue()`), `prep_new_page()`, and
//! the slow path with kswapd, the reserves, direct reclaim, the retry rules
//! and the OOM killer (`__alloc_pages_slowpath()`).
//!
//! Calls out: the per-CPU list protocol ([`super::pcp`]), the buddy lists
//! ([`super::buddy`]), reclaim ([`crate::vmscan`]), the OOM hook
//! ([`crate::oom_kill`]), fault injection ([`crate::fault_inject`]) and
//! the Mem-Info report ([`crate::show_mem`]).

use super::buddy::RmqueueMode;
use super::pcp::pcp_allowed_order;
use super::{buddy, first_pass_flags, watermark_ok, AllocFlags};
use crate::gfp::{self, Gfp};
use crate::mmzone::{
    MigrateType, PgData, Zone, ZoneType, Zonelist, WMARK_LOW, ZONELIST_FALLBACK,
    ZONELIST_NOFALLBACK,
};
use crate::page::{Page, PG_HEAD, PG_TAIL};
use crate::platform::oom::OomMm;
use crate::platform::{Level, LocalGuard, Platform};
use crate::{
    report, Error, Kmem, Result, MAX_PAGE_ORDER, PAGE_ALLOC_COSTLY_ORDER, PAGE_SHIFT, PAGE_SIZE,
};
use core::sync::atomic::Ordering::Relaxed;

impl<P: Platform> Kmem<P> {
    /// `alloc_pages()`: `2^order` contiguous pages, on the running CPU's node.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 8 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// use kmem::gfp::GFP_KERNEL;
    /// let page = k.alloc_pages(GFP_KERNEL, 2).unwrap();
    /// assert_eq!(page.refcount(), 1);
    /// k.__free_pages(page, 2).unwrap();
    /// ```
    #[track_caller]
    pub fn alloc_pages(&self, gfp: Gfp, order: u32) -> Result<&Page> {
        self.alloc_pages_node(-1, gfp, order)
    }

    /// `alloc_page()`.
    #[track_caller]
    pub fn alloc_page(&self, gfp: Gfp) -> Result<&Page> {
        self.alloc_pages_node(-1, gfp, 0)
    }

    /// `alloc_pages_node()`: prefer node `nid` (`-1`, `NUMA_NO_NODE`: the
    /// running CPU's node).
    #[track_caller]
    #[inline]
    pub fn alloc_pages_node(&self, nid: i32, gfp: Gfp, order: u32) -> Result<&Page> {
        if let Some(page) = self.alloc_pages_fast(nid, gfp, order) {
            return Ok(page);
        }
        self.__alloc_pages(nid, gfp, order)
    }

    /// The common case of [`alloc_pages_node`](Self::alloc_pages_node),
    /// inline: the running CPU's node, no zone modifier, `__GFP_THISNODE`
    /// or `__GFP_NOFAIL`, no allocation hook armed, and the node's first
    /// zone above its low watermark with a block to give (`rmqueue()` with
    /// the first pass's flags: this CPU's list, refilled when empty, for
    /// the orders the lists hold, else the buddy lists). That is the first
    /// step of [`__alloc_pages`](Self::__alloc_pages) taken alone. Anything
    /// else returns `None` without having allocated, and `__alloc_pages`
    /// starts from the top (trying the first zone again does no harm: a
    /// failed refill leaves the lists as they were, save a drain that was
    /// due anyway).
    #[inline(always)]
    pub(super) fn alloc_pages_fast(&self, nid: i32, gfp: Gfp, order: u32) -> Option<&Page> {
        const SLOW: u32 =
            gfp::GFP_ZONEMASK.bits() | gfp::__GFP_THISNODE.bits() | gfp::__GFP_NOFAIL.bits();
        if nid >= 0 || gfp.bits() & SLOW != 0 || order > MAX_PAGE_ORDER || self.page_hooks_armed() {
            return None;
        }
        let mt = gfp::gfp_migratetype(gfp).ok()?;
        let node = self.node(self.numa_node_id());
        let zr = node.zonelist(ZONELIST_FALLBACK).entries().first()?;
        let high = ZoneType::Normal as usize;
        if usize::from(zr.zone) > high {
            return None;
        }
        let zone = self.node(usize::from(zr.node)).zone(usize::from(zr.zone));
        let af = AllocFlags::WMARK_LOW;
        if !self.zone_watermark_fast(zone, order, zone.wmark(WMARK_LOW), high, af) {
            return None;
        }
        let idx = if pcp_allowed_order(order, self.pcp_thp) {
            match self.rmqueue_pcplist_leaf(zone, order, mt) {
                Some(idx) => idx,
                None => self.rmqueue_fast_refill(node, zone, order, mt)?,
            }
        } else {
            self.rmqueue_buddy(zone, order, mt, first_pass_flags(node))?
        };
        Some(self.prep_new_page(zone, idx, order, gfp))
    }

    /// The rest of `rmqueue()` for [`alloc_pages_fast`](Self::alloc_pages_fast)
    /// when this CPU's list is empty, out of line: refill it, else take
    /// from the buddy lists.
    #[inline(never)]
    pub(super) fn rmqueue_fast_refill(
        &self,
        node: &PgData,
        zone: &Zone,
        order: u32,
        mt: MigrateType,
    ) -> Option<u32> {
        let af = first_pass_flags(node);
        if let Some(idx) = self.rmqueue_pcplist_full(zone, order, mt, af) {
            return Some(idx);
        }
        self.rmqueue_buddy(zone, order, mt, af)
    }

    /// `__alloc_pages()`: every allocation the fast path does not take,
    /// and every report.
    #[track_caller]
    #[inline(never)]
    pub(super) fn __alloc_pages(&self, nid: i32, gfp: Gfp, order: u32) -> Result<&Page> {
        if order > MAX_PAGE_ORDER {
            if !gfp.contains(gfp::__GFP_NOWARN) {
                report!(
                    &self.p,
                    Level::Warning,
                    "WARNING: CPU: {} at {}: __alloc_pages: order {} > MAX_PAGE_ORDER ({})",
                    self.p.smp_processor_id(),
                    core::panic::Location::caller(),
                    order,
                    MAX_PAGE_ORDER
                );
            }
            return Err(Error::InvalidArgument);
        }
        let nid = if nid < 0 {
            self.numa_node_id()
        } else if (nid as usize) < self.nr_nodes {
            nid as usize
        } else {
            report!(
                &self.p,
                Level::Warning,
                "WARNING: alloc_pages_node: node {nid} is not online"
            );
            return Err(Error::InvalidArgument);
        };
        // prepare_alloc_pages()'s hooks, behind one test while all are off.
        let hooks = self.page_hooks_armed();
        if hooks && self.debug_atomic_sleep() {
            self.might_alloc(gfp, core::panic::Location::caller());
        }
        if order > 1 && gfp.contains(gfp::__GFP_NOFAIL) {
            // rmqueue(): callers must not ask for more than order 1 with
            // __GFP_NOFAIL; kmem warns, as Linux, and still honours it.
            report!(
                &self.p,
                Level::Warning,
                "WARNING: CPU: {} at {}: __GFP_NOFAIL allocation of order {} > 1: mode:{:#x}({})",
                self.p.smp_processor_id(),
                core::panic::Location::caller(),
                order,
                gfp.bits(),
                gfp
            );
        }
        let high = self.gfp_zone_idx(gfp)?;
        let mt = gfp::gfp_migratetype(gfp).inspect_err(|_| {
            report!(
                &self.p,
                Level::Warning,
                "WARNING: both __GFP_MOVABLE and __GFP_RECLAIMABLE: mode:{:#x}({})",
                gfp.bits(),
                gfp
            )
        })?;
        if hooks && self.should_fail_alloc_page(gfp, order) {
            return Err(Error::NoMemory);
        }
        let which = if gfp.contains(gfp::__GFP_THISNODE) {
            ZONELIST_NOFALLBACK
        } else {
            ZONELIST_FALLBACK
        };
        let zl = self.node(nid).zonelist(which);
        let af = if high >= ZoneType::Normal as usize {
            first_pass_flags(self.node(nid))
        } else {
            AllocFlags::WMARK_LOW
        };
        if let Some(p) = self.get_page_from_freelist(gfp, order, af, zl, high, mt) {
            return Ok(p);
        }
        self.alloc_pages_slowpath(gfp, order, nid, zl, high, mt)
    }

    /// `__alloc_pages_slowpath()`, in Linux's order: wake kswapd; retry
    /// with the slow path's watermark rules; the reserves where allowed;
    /// then, only for a caller that may block, direct reclaim and retry.
    /// `__GFP_NORETRY` stops after one reclaim round; costly orders stop
    /// unless `__GFP_RETRY_MAYFAIL`; the retry rule allows
    /// [`MAX_RECLAIM_RETRIES`](crate::vmscan::MAX_RECLAIM_RETRIES) rounds
    /// without progress (each sleeping until some page is freed, at most
    /// [`RECLAIM_THROTTLE_NS`](crate::vmscan::RECLAIM_THROTTLE_NS)); then
    /// the OOM killer for "too small to fail" requests; `__GFP_NOFAIL`
    /// never returns failure.
    #[track_caller]
    pub(super) fn alloc_pages_slowpath(
        &self,
        gfp: Gfp,
        order: u32,
        nid: usize,
        zl: &Zonelist,
        high: usize,
        mt: MigrateType,
    ) -> Result<&Page> {
        let caller = core::panic::Location::caller();
        let gfp = self.current_gfp_context(gfp);
        let pflags = self.p.task_flags();
        let mut can_direct_reclaim = gfp.contains(gfp::__GFP_DIRECT_RECLAIM);
        if can_direct_reclaim && !self.might_alloc(gfp, caller) {
            // Reported; go on without sleeping.
            can_direct_reclaim = false;
        }
        let eff = if can_direct_reclaim {
            gfp
        } else {
            gfp.without(gfp::__GFP_DIRECT_RECLAIM)
        };
        let costly = order > PAGE_ALLOC_COSTLY_ORDER;
        let nofail = gfp.contains(gfp::__GFP_NOFAIL);
        let mut af = AllocFlags::from_gfp(eff, order);
        if af.contains(AllocFlags::KSWAPD) {
            self.wake_all_kswapds(gfp, order, nid, high);
        }
        if let Some(p) = self.get_page_from_freelist(gfp, order, af, zl, high, mt) {
            return Ok(p);
        }
        let mut no_progress_loops = 0u32;
        // No other context can run to free memory (a one-thread machine):
        // waiting for frees would wait forever.
        let mut alone = false;
        loop {
            if af.contains(AllocFlags::KSWAPD) {
                self.wake_all_kswapds(gfp, order, nid, high);
            }
            // __gfp_pfmemalloc_flags(): __GFP_MEMALLOC, and tasks that are
            // reclaiming (PF_MEMALLOC) outside interrupts, ignore watermarks.
            let mut reserve = AllocFlags::pfmemalloc(gfp);
            if reserve.0 == 0
                && pflags & crate::sched::PF_MEMALLOC != 0
                && !gfp.contains(gfp::__GFP_NOMEMALLOC)
                && !self.p.in_interrupt()
            {
                reserve = AllocFlags::NO_WATERMARKS;
            }
            if reserve.0 != 0 {
                af = reserve.with(AllocFlags(af.0 & AllocFlags::KSWAPD.0));
            }
            if let Some(p) = self.get_page_from_freelist(gfp, order, af, zl, high, mt) {
                return Ok(p);
            }
            if !can_direct_reclaim {
                break;
            }
            // Reclaim must not recurse into reclaim.
            if pflags & crate::sched::PF_MEMALLOC != 0 {
                break;
            }
            // __alloc_pages_direct_reclaim(): reclaim, then retry; if that
            // fails, pages may sit on per-CPU lists: drain them and retry.
            let reclaimed = self.try_to_free_pages(gfp, order, nid);
            if let Some(p) = self.get_page_from_freelist(gfp, order, af, zl, high, mt) {
                return Ok(p);
            }
            if self.drain_all_pages() > 0 {
                if let Some(p) = self.get_page_from_freelist(gfp, order, af, zl, high, mt) {
                    return Ok(p);
                }
            }
            if gfp.contains(gfp::__GFP_NORETRY) && !nofail {
                break;
            }
            if costly && !gfp.contains(gfp::__GFP_RETRY_MAYFAIL) && !nofail {
                break;
            }
            // should_reclaim_retry(): progress resets the count; without it,
            // wait for frees and try again, up to MAX_RECLAIM_RETRIES times.
            if reclaimed > 0 && !costly {
                no_progress_loops = 0;
            } else {
                no_progress_loops += 1;
            }
            // (With nobody else to free, the wait returns at once: the
            // rounds still run, as Linux counts them.)
            if no_progress_loops <= crate::vmscan::MAX_RECLAIM_RETRIES {
                if reclaimed == 0 {
                    self.wait_for_free_pages(crate::vmscan::RECLAIM_THROTTLE_NS);
                }
                continue;
            }
            // Nothing reclaimed for MAX_RECLAIM_RETRIES rounds, and nobody
            // else to free: what Linux does when nothing is left to reclaim
            // (the OOM path, then failure), never a wait for frees that
            // cannot come.
            if !alone && !self.p.others_can_run() {
                alone = true;
                self.report_alone(gfp, order, caller);
            }
            // __alloc_pages_may_oom().
            let (page, progress) = self.alloc_pages_may_oom(gfp, order, zl, high, mt, alone);
            if let Some(p) = page {
                return Ok(p);
            }
            if progress {
                no_progress_loops = 0;
                // Give the victim's memory (or another CPU's frees) a moment.
                self.wait_for_free_pages(crate::vmscan::RECLAIM_THROTTLE_NS);
                continue;
            }
            if nofail {
                // Help a non-failing allocation with part of the reserve,
                // then keep waiting for memory.
                let af2 = AllocFlags::MIN_RESERVE.with(AllocFlags(af.0 & AllocFlags::KSWAPD.0));
                if let Some(p) = self.get_page_from_freelist(gfp, order, af2, zl, high, mt) {
                    return Ok(p);
                }
                if alone {
                    break;
                }
                self.wait_for_free_pages(crate::vmscan::RECLAIM_THROTTLE_NS);
                no_progress_loops = 0;
                continue;
            }
            break;
        }
        if nofail && alone {
            // Linux would wait forever; kmem fails it, said as the warning
            // Linux gives a __GFP_NOFAIL request it cannot honour.
            report!(
                &self.p,
                Level::Warning,
                "WARNING: CPU: {} at {}: __GFP_NOFAIL allocation would wait forever: no other context can free memory: mode:{:#x}({})",
                self.p.smp_processor_id(),
                caller,
                gfp.bits(),
                gfp
            );
        } else if nofail {
            // No direct reclaim (or reclaim recursion): Linux warns that a
            // __GFP_NOFAIL caller cannot sleep and fails it.
            report!(
                &self.p,
                Level::Warning,
                "WARNING: CPU: {} at {}: __GFP_NOFAIL allocation that cannot sleep: mode:{:#x}({})",
                self.p.smp_processor_id(),
                caller,
                gfp.bits(),
                gfp
            );
        }
        if !gfp.contains(gfp::__GFP_NOWARN) {
            self.warn_alloc(gfp, order);
        }
        Err(Error::NoMemory)
    }

    /// `__alloc_pages_may_oom()`: a last try at the high watermark (someone
    /// may have freed memory), then the OOM killer where Linux would call
    /// it. Returns a page or whether to retry.
    pub(super) fn alloc_pages_may_oom(
        &self,
        gfp: Gfp,
        order: u32,
        zl: &Zonelist,
        high: usize,
        mt: MigrateType,
        alone: bool,
    ) -> (Option<&Page>, bool) {
        let last = AllocFlags::WMARK_HIGH.with(AllocFlags::CPUSET);
        if let Some(p) = self.get_page_from_freelist(gfp, order, last, zl, high, mt) {
            return (Some(p), true);
        }
        let nofail = gfp.contains(gfp::__GFP_NOFAIL);
        // The OOM killer does not help costly orders, nor allocations that
        // may fail or must stay on one node, nor lowmem-only ones.
        if !nofail
            && (order > PAGE_ALLOC_COSTLY_ORDER
                || gfp.intersects(gfp::__GFP_RETRY_MAYFAIL | gfp::__GFP_THISNODE)
                || high < ZoneType::Normal as usize)
        {
            return (None, false);
        }
        // out_of_memory() kills nothing for !__GFP_FS but reports progress:
        // such allocations keep retrying while others free memory (when
        // there are others to free it).
        if !gfp.contains(gfp::__GFP_FS) {
            return (None, !alone);
        }
        let progress = self.out_of_memory(gfp, order);
        if !progress && nofail {
            // Linux warns and lets __GFP_NOFAIL ignore watermarks.
            let p =
                self.get_page_from_freelist(gfp, order, AllocFlags::NO_WATERMARKS, zl, high, mt);
            return (p, p.is_some());
        }
        (None, progress)
    }

    /// The report of an allocation that stops waiting for frees because no
    /// other context can run to make them (see
    /// [`Platform::others_can_run`]).
    #[cold]
    #[inline(never)]
    fn report_alone(&self, gfp: Gfp, order: u32, caller: &core::panic::Location<'_>) {
        let task = self.p.current();
        report!(
            &self.p,
            Level::Warning,
            "{}: page allocation stalls for frees no other context can make, order:{}, mode:{:#x}({}) at {}: no more retries",
            task.comm(),
            order,
            gfp.bits(),
            gfp,
            caller
        );
    }

    /// `warn_alloc()`: the "page allocation failure" report.
    pub(crate) fn warn_alloc(&self, gfp: Gfp, order: u32) {
        let task = self.p.current();
        report!(
            &self.p,
            Level::Warning,
            "{}: page allocation failure: order:{}, mode:{:#x}({}), nodemask=(null)",
            task.comm(),
            order,
            gfp.bits(),
            gfp
        );
        report!(
            &self.p,
            Level::Warning,
            "CPU: {} PID: {} Comm: {}",
            self.p.smp_processor_id(),
            task.pid,
            task.comm()
        );
        crate::show_mem::show_mem(self);
    }

    pub(super) fn get_page_from_freelist(
        &self,
        gfp: Gfp,
        order: u32,
        mut af: AllocFlags,
        zl: &Zonelist,
        high: usize,
        mt: MigrateType,
    ) -> Option<&Page> {
        loop {
            for zr in zl.entries() {
                if usize::from(zr.zone) > high {
                    continue;
                }
                let zone = self.node(usize::from(zr.node)).zone(usize::from(zr.zone));
                // With deferred struct page init, a zone that falls short
                // grows and is tried again, as Linux's does.
                loop {
                    if !af.contains(AllocFlags::NO_WATERMARKS) {
                        let mark = zone.wmark((af.0 & AllocFlags::WMARK_MASK.0) as usize);
                        if !self.zone_watermark_fast(zone, order, mark, high, af) {
                            if self.deferred_grow_zone(zone, order) {
                                continue;
                            }
                            break;
                        }
                    }
                    if let Some(idx) = self.rmqueue(zone, order, mt, af) {
                        return Some(self.prep_new_page(zone, idx, order, gfp));
                    }
                    if !self.deferred_grow_zone(zone, order) {
                        break;
                    }
                }
            }
            if !af.contains(AllocFlags::NOFRAGMENT) {
                return None;
            }
            af = af.without(AllocFlags::NOFRAGMENT);
        }
    }

    /// `zone_watermark_fast()`: the order-0 test inline, the rest
    /// ([`watermark_ok`]) out of line.
    #[inline]
    pub(super) fn zone_watermark_fast(
        &self,
        zone: &Zone,
        order: u32,
        mark: u64,
        high: usize,
        af: AllocFlags,
    ) -> bool {
        let free = zone.nr_free_pages.load(Relaxed);
        let reserve = zone.lowmem_reserve(high);
        if order == 0 && free > (mark + reserve) as i64 {
            return true;
        }
        Self::zone_watermark_slow(zone, free, order, mark, reserve, af)
    }

    #[inline(never)]
    pub(super) fn zone_watermark_slow(
        zone: &Zone,
        free: i64,
        order: u32,
        mark: u64,
        reserve: u64,
        af: AllocFlags,
    ) -> bool {
        watermark_ok(free, order, mark, reserve, af, |o, ha| {
            buddy::mask_has_block(zone.free_mask.load(Relaxed), o, ha)
        })
    }

    /// Whether `zone` passes watermark `which` for an allocation of `order`
    /// bound for zone index `high` (`zone_watermark_ok()`).
    pub fn zone_watermark_ok(
        &self,
        zone: &Zone,
        order: u32,
        which: usize,
        high: usize,
        af: AllocFlags,
    ) -> bool {
        watermark_ok(
            zone.nr_free_pages.load(Relaxed),
            order,
            zone.wmark(which),
            zone.lowmem_reserve(high),
            af,
            |o, ha| buddy::mask_has_block(zone.free_mask.load(Relaxed), o, ha),
        )
    }

    /// `rmqueue()`: per-CPU lists for small orders, else the buddy lists.
    #[inline]
    pub(super) fn rmqueue(
        &self,
        zone: &Zone,
        order: u32,
        mt: MigrateType,
        af: AllocFlags,
    ) -> Option<u32> {
        if pcp_allowed_order(order, self.pcp_thp) {
            if let Some(i) = self.rmqueue_pcplist(zone, order, mt, af) {
                return Some(i);
            }
        }
        self.rmqueue_buddy(zone, order, mt, af)
    }

    /// `rmqueue_buddy()`: one block from the buddy lists under the zone lock.
    #[inline(never)]
    pub(super) fn rmqueue_buddy(
        &self,
        zone: &Zone,
        order: u32,
        mt: MigrateType,
        af: AllocFlags,
    ) -> Option<u32> {
        let _irq = LocalGuard::new(&self.p);
        let cx = self.buddy_cx(zone);
        let mut area = zone.lock();
        let mut mode = RmqueueMode::Normal;
        let idx = area.rmqueue(&cx, order, mt, af, &mut mode)?;
        zone.add_free_locked(-(1i64 << order));
        Zone::count_locked(&zone.pgalloc, 1 << order);
        Some(idx)
    }

    /// `prep_new_page()`: reference, order, compound metadata, zeroing.
    #[inline]
    pub(super) fn prep_new_page(&self, zone: &Zone, idx: u32, order: u32, gfp: Gfp) -> &Page {
        let mm = self.mem_map();
        let page = mm.at(idx);
        let links = Page::links(zone.node, zone.ztype as usize);
        page.set_raw_flags(links);
        page.set_order(order);
        page.set_refcount(1);
        if (order > 0 && gfp.contains(gfp::__GFP_COMP)) || gfp.contains(gfp::__GFP_ZERO) {
            self.prep_compound_zero(idx, links, order, gfp);
        }
        page
    }

    /// The parts of `prep_new_page()` only some allocations need: tail
    /// pages of a compound page, `__GFP_ZERO`.
    #[inline(never)]
    pub(super) fn prep_compound_zero(&self, idx: u32, links: u32, order: u32, gfp: Gfp) {
        let mm = self.mem_map();
        let page = mm.at(idx);
        if order > 0 && gfp.contains(gfp::__GFP_COMP) {
            // Just taken off a free list: ours alone, so a plain store, as
            // Linux's __SetPageHead().
            page.set_flag_owned(PG_HEAD);
            for t in 1..(1u32 << order) {
                let tail = mm.at(idx + t);
                tail.set_raw_flags(links | PG_TAIL);
                tail.set_head_index(Some(idx));
                tail.set_refcount(0);
            }
        }
        if gfp.contains(gfp::__GFP_ZERO) {
            self.zero_pages(mm.pfn_of(idx), 1 << order);
        }
    }

    /// Zero `n` pages from `pfn`, through the direct map or kmap.
    pub(super) fn zero_pages(&self, pfn: u64, n: u64) {
        for p in pfn..pfn + n {
            match self.dm.va(p << PAGE_SHIFT) {
                // SAFETY: the page was just taken off a free list, so nobody
                // else uses it, and the Platform promises its direct-map
                // address is valid for PAGE_SIZE writes.
                Some(va) => unsafe { core::ptr::write_bytes(va as *mut u8, 0, PAGE_SIZE) },
                None => {
                    // High memory: map it for the duration of the clear.
                    let page = self.mem_map().pfn_to_page(p).expect("pfn in mem_map");
                    match self.kmap(page) {
                        Ok(va) => {
                            // SAFETY: kmap mapped the (unused) page at `va` for PAGE_SIZE bytes.
                            unsafe { core::ptr::write_bytes(va.as_ptr(), 0, PAGE_SIZE) };
                            self.kunmap(va.as_ptr());
                        }
                        Err(_) => report!(
                            &self.p,
                            Level::Err,
                            "kmem: cannot kmap pfn {p:#x} to clear it for __GFP_ZERO"
                        ),
                    }
                }
            }
        }
    }
}

/// The page allocator's side of the OOM hook: what the handler that
/// `Kmem::out_of_memory` calls may do with the machine.
impl<P: Platform> OomMm for Kmem<P> {
    fn show_mem(&self) {
        crate::show_mem::show_mem(self);
    }

    fn report(&self, level: Level, msg: core::fmt::Arguments<'_>) {
        self.p.report(level, msg);
    }

    fn free_pages(&self, pfn: u64, order: u32) -> Result<()> {
        match self.pfn_to_page(pfn) {
            Some(page) => self.__free_pages(page, order),
            None => {
                report!(
                    &self.p,
                    Level::Alert,
                    "BUG: oom reaper: pfn {:#x} is not memory of this machine",
                    pfn
                );
                Err(crate::Error::BadAddress)
            }
        }
    }

    fn totalram_pages(&self) -> u64 {
        Kmem::totalram_pages(self)
    }
}
