//! Per-CPU page lists (`struct per_cpu_pages`).
//!
//! Each CPU keeps, per zone, short lists of free pages of orders
//! `0..=PAGE_ALLOC_COSTLY_ORDER`, one per (order, migratetype), and, as
//! Linux 6.x with `CONFIG_TRANSPARENT_HUGEPAGE`, two lists of
//! pageblock-order (2 MiB, THP-sized) blocks: movable, and the rest. kmem
//! has the THP lists when the machine boots with
//! [`BootParams::transparent_hugepage`](crate::BootParams::transparent_hugepage)
//! (the default); without it, order-9 blocks go straight to the buddy
//! lists, as in a kernel built without THP. An
//! allocation of such an order pops from its CPU's list without taking the
//! zone lock; an empty list is refilled with `batch` blocks in one locked
//! trip (`rmqueue_bulk`); a free pushes onto the list and, once the list
//! holds `high` pages, gives `batch` back in one locked trip
//! (`free_pcppages_bulk`).
//!
//! The lists are touched only by their own CPU inside a CPU-local section,
//! which the [`Platform`] contract makes exclusive: this
//! is Linux's model before 6.0, where `local_irq_save()` protected the
//! lists. (Linux 6.x added a per-list spinlock so that other CPUs can drain
//! remotely; kmem keeps the fast path free of atomic read-modify-writes and
//! drains another CPU's lists by running the drain *on* that CPU through
//! `smp_call_function_single()`; where no such call can be made (atomic
//! context, a platform without it) it sets a flag the owner honours on its
//! next visit.)
//!
//! Two simplifications, by decision: `high` is fixed at `high_min` (Linux
//! tunes it between `high_min` and `high_max` as the CPU frees), and a bulk
//! free returns `batch` pages (Linux's minimum; it scales the amount up
//! after consecutive frees).

use super::buddy::RmqueueMode;
use super::AllocFlags;
use crate::mmzone::NR_LOWORDER_PCP_LISTS;
use crate::mmzone::{MigrateType, PerCpuPages, Zone, MIGRATE_PCPTYPES, NR_PCP_LISTS};
use crate::page::PageList;
use crate::page::PG_PCP;
use crate::platform::{LocalGuard, Platform};
use crate::PAGEBLOCK_ORDER;
use crate::{Kmem, PAGE_ALLOC_COSTLY_ORDER};
use core::cell::UnsafeCell;
use core::sync::atomic::Ordering::Relaxed;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

/// `order_to_pindex()`: `order` is at most `PAGE_ALLOC_COSTLY_ORDER` or
/// the pageblock order.
#[inline]
pub(crate) const fn order_to_pindex(mt: usize, order: u32) -> usize {
    if order > PAGE_ALLOC_COSTLY_ORDER {
        NR_LOWORDER_PCP_LISTS + (mt == MigrateType::Movable as usize) as usize
    } else {
        MIGRATE_PCPTYPES * order as usize + mt
    }
}

/// `pindex_to_order()`.
#[inline]
pub(crate) const fn pindex_to_order(pindex: usize) -> u32 {
    if pindex >= NR_LOWORDER_PCP_LISTS {
        PAGEBLOCK_ORDER
    } else {
        (pindex / MIGRATE_PCPTYPES) as u32
    }
}

/// `pcp_allowed_order()`: orders up to `PAGE_ALLOC_COSTLY_ORDER`, and the
/// pageblock order (THP) when the machine has the THP lists.
#[inline]
pub(crate) const fn pcp_allowed_order(order: u32, thp: bool) -> bool {
    order <= PAGE_ALLOC_COSTLY_ORDER || (thp && order == PAGEBLOCK_ORDER)
}

impl PerCpuPages {
    /// Empty lists with Linux's boot pageset values (`high` 0, `batch` 1).
    pub(crate) const fn new() -> Self {
        PerCpuPages {
            count: AtomicU32::new(0),
            high: AtomicU32::new(0),
            batch: AtomicU32::new(1),
            high_min: AtomicU32::new(0),
            high_max: AtomicU32::new(0),
            drain: AtomicBool::new(false),
            pgalloc: AtomicU64::new(0),
            pgfree: AtomicU64::new(0),
            lists: UnsafeCell::new([PageList::new(); NR_PCP_LISTS]),
        }
    }

    /// `pcp->count`.
    #[inline]
    pub fn count(&self) -> u32 {
        self.count.load(Relaxed)
    }

    #[inline]
    pub(crate) fn add_count(&self, delta: i64) {
        let c = i64::from(self.count.load(Relaxed)) + delta;
        self.count.store(c as u32, Relaxed);
    }

    /// Pages this CPU handed out from its lists.
    #[inline]
    pub fn pgalloc(&self) -> u64 {
        self.pgalloc.load(Relaxed)
    }

    /// Pages this CPU took back onto its lists.
    #[inline]
    pub fn pgfree(&self) -> u64 {
        self.pgfree.load(Relaxed)
    }

    /// Owner only, inside its CPU-local section: a plain store suffices.
    #[inline]
    pub(crate) fn count_alloc(&self, n: u64) {
        self.pgalloc.store(self.pgalloc.load(Relaxed) + n, Relaxed);
    }

    /// Owner only, inside its CPU-local section.
    #[inline]
    pub(crate) fn count_free(&self, n: u64) {
        self.pgfree.store(self.pgfree.load(Relaxed) + n, Relaxed);
    }

    /// `pcp->high`.
    #[inline]
    pub fn high(&self) -> u32 {
        self.high.load(Relaxed)
    }

    /// `pcp->batch`.
    #[inline]
    pub fn batch(&self) -> u32 {
        self.batch.load(Relaxed)
    }

    /// `pcp->high_min`.
    #[inline]
    pub fn high_min(&self) -> u32 {
        self.high_min.load(Relaxed)
    }

    /// `pcp->high_max`.
    #[inline]
    pub fn high_max(&self) -> u32 {
        self.high_max.load(Relaxed)
    }

    /// `pageset_update()`.
    pub(crate) fn update(&self, batch: u64, high_min: u64, high_max: u64) {
        self.batch.store(batch as u32, Relaxed);
        self.high_min.store(high_min as u32, Relaxed);
        self.high_max.store(high_max as u32, Relaxed);
        self.high.store(high_min as u32, Relaxed);
    }

    /// Ask the owner to give all its pages back on its next visit.
    pub(crate) fn request_drain(&self) {
        self.drain.store(true, Relaxed);
    }

    /// Whether a drain was requested (the request stays pending).
    #[inline]
    pub(crate) fn drain_requested(&self) -> bool {
        self.drain.load(Relaxed)
    }

    /// Take a pending drain request.
    #[inline]
    pub(crate) fn take_drain_request(&self) -> bool {
        self.drain.load(Relaxed) && self.drain.swap(false, Relaxed)
    }

    /// The lists.
    ///
    /// # Safety
    ///
    /// The caller runs on this structure's CPU inside a CPU-local section
    /// that lasts as long as the returned borrow, and holds no other borrow
    /// from `lists_mut` of the same structure.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn lists_mut(&self) -> &mut [PageList; NR_PCP_LISTS] {
        // SAFETY: exclusivity is the caller's contract, backed by the
        // Platform's promise that CPU-local sections of one CPU never overlap.
        unsafe { &mut *self.lists.get() }
    }
}

impl<P: Platform> Kmem<P> {
    /// `rmqueue_pcplist()`: pop a block from this CPU's list, in a leaf
    /// section ([`Platform::local_enter_leaf`]) when nothing else is to do.
    /// A pending drain request or an empty list goes to
    /// [`rmqueue_pcplist_full`](Self::rmqueue_pcplist_full).
    #[inline]
    pub(super) fn rmqueue_pcplist(
        &self,
        zone: &Zone,
        order: u32,
        mt: MigrateType,
        af: AllocFlags,
    ) -> Option<u32> {
        if let Some(idx) = self.rmqueue_pcplist_leaf(zone, order, mt) {
            return Some(idx);
        }
        self.rmqueue_pcplist_full(zone, order, mt, af)
    }

    /// The leaf-section part of [`rmqueue_pcplist`](Self::rmqueue_pcplist):
    /// a block from a non-empty list with no drain pending, else `None`.
    #[inline(always)]
    pub(super) fn rmqueue_pcplist_leaf(
        &self,
        zone: &Zone,
        order: u32,
        mt: MigrateType,
    ) -> Option<u32> {
        let st = self.p.local_enter_leaf();
        let mut got = None;
        if let Some(pcp) = zone.pcp(st.cpu) {
            if !pcp.drain_requested() {
                // SAFETY: on pcp's CPU inside the leaf section `st`; the
                // borrow ends before the section does.
                let lists = unsafe { pcp.lists_mut() };
                got = self.pcp_take(pcp, lists, order, mt);
            }
        }
        self.p.local_exit_leaf(st);
        got
    }

    /// [`rmqueue_pcplist`](Self::rmqueue_pcplist) with a drain request or
    /// a refill to do, in a full section.
    #[inline(never)]
    pub(super) fn rmqueue_pcplist_full(
        &self,
        zone: &Zone,
        order: u32,
        mt: MigrateType,
        af: AllocFlags,
    ) -> Option<u32> {
        let g = LocalGuard::new(&self.p);
        let pcp = zone.pcp(g.cpu())?;
        // SAFETY: we are on pcp's CPU inside the section `g`, which outlives
        // `lists`; no other borrow of these lists exists in this frame.
        let lists = unsafe { pcp.lists_mut() };
        if pcp.drain_requested() || lists[order_to_pindex(mt as usize, order)].is_empty() {
            self.rmqueue_pcplist_refill(zone, pcp, lists, order, mt, af);
        }
        self.pcp_take(pcp, lists, order, mt)
    }

    /// Pop a block of `order` and `mt` from this CPU's lists `lists` (of
    /// `pcp`), inside the owner's section, and count it.
    #[inline(always)]
    pub(super) fn pcp_take(
        &self,
        pcp: &PerCpuPages,
        lists: &mut [crate::page::PageList; NR_PCP_LISTS],
        order: u32,
        mt: MigrateType,
    ) -> Option<u32> {
        let mm = self.mem_map();
        let idx = lists[order_to_pindex(mt as usize, order)].pop_head(&mm)?;
        mm.at(idx).clear_flag_owned(PG_PCP);
        pcp.add_count(-(1i64 << order));
        pcp.count_alloc(1 << order);
        Some(idx)
    }

    /// Push block `idx` of `order` and `mt` on this CPU's lists `lists` (of
    /// `pcp`), inside the owner's section, and count it.
    #[inline(always)]
    pub(super) fn pcp_put(
        &self,
        pcp: &PerCpuPages,
        lists: &mut [crate::page::PageList; NR_PCP_LISTS],
        idx: u32,
        order: u32,
        mt: MigrateType,
    ) {
        let mm = self.mem_map();
        mm.at(idx).set_flag_owned(PG_PCP);
        lists[order_to_pindex(mt as usize, order)].push_head(&mm, idx);
        pcp.add_count(1 << order);
        pcp.count_free(1 << order);
    }

    /// Honour a drain request, then refill an empty list with `batch`
    /// pages' worth in one trip to the buddy lists (`rmqueue_bulk()`).
    /// Runs inside the owner's section.
    #[inline(never)]
    pub(super) fn rmqueue_pcplist_refill(
        &self,
        zone: &Zone,
        pcp: &PerCpuPages,
        lists: &mut [crate::page::PageList; NR_PCP_LISTS],
        order: u32,
        mt: MigrateType,
        af: AllocFlags,
    ) {
        let mm = self.mem_map();
        if pcp.take_drain_request() {
            self.free_pcppages_bulk(zone, pcp, lists, u32::MAX);
        }
        let pindex = order_to_pindex(mt as usize, order);
        if lists[pindex].is_empty() {
            let batch = pcp.batch().max(1);
            let count = if order == 0 {
                batch
            } else {
                (batch >> order).max(2)
            };
            let cx = self.buddy_cx(zone);
            let mut area = zone.lock();
            let mut mode = RmqueueMode::Normal;
            let mut got = 0u32;
            for _ in 0..count {
                let Some(i) = area.rmqueue(&cx, order, mt, af, &mut mode) else {
                    break;
                };
                mm.at(i).set_flag_owned(PG_PCP);
                lists[pindex].push_tail(&mm, i);
                got += 1;
            }
            zone.add_free_locked(-(i64::from(got) << order));
            drop(area);
            pcp.add_count(i64::from(got) << order);
        }
    }

    /// Honour a drain request, or give `batch` pages back from a list that
    /// reached `high`. Runs inside the owner's section.
    #[inline(never)]
    pub(super) fn free_unref_page_spill(
        &self,
        zone: &Zone,
        pcp: &PerCpuPages,
        lists: &mut [crate::page::PageList; NR_PCP_LISTS],
    ) {
        if pcp.take_drain_request() {
            self.free_pcppages_bulk(zone, pcp, lists, u32::MAX);
        } else if pcp.count() >= pcp.high() {
            let batch = pcp.batch();
            let high = pcp.high();
            // nr_pcp_free(): keep at least `batch` pages; free 1 while the
            // pageset is still the boot one (high < batch).
            let n = if high < batch { 1 } else { batch };
            self.free_pcppages_bulk(zone, pcp, lists, n);
        }
    }

    /// `free_pcppages_bulk()`: give at least `count` pages back, coldest
    /// first, round-robin over the lists. Runs inside the owner's section.
    pub(super) fn free_pcppages_bulk(
        &self,
        zone: &Zone,
        pcp: &PerCpuPages,
        lists: &mut [crate::page::PageList; NR_PCP_LISTS],
        count: u32,
    ) -> u64 {
        let mm = self.mem_map();
        let cx = self.buddy_cx(zone);
        let mut area = zone.lock();
        let mut freed = 0u64;
        let mut merged = 0;
        let mut pindex = NR_PCP_LISTS - 1;
        let mut empty_rounds = 0;
        while freed < u64::from(count) && empty_rounds < NR_PCP_LISTS {
            pindex = (pindex + 1) % NR_PCP_LISTS;
            let Some(i) = lists[pindex].pop_tail(&mm) else {
                empty_rounds += 1;
                continue;
            };
            empty_rounds = 0;
            let order = pindex_to_order(pindex);
            mm.at(i).clear_flag_owned(PG_PCP);
            let pfn = mm.pfn_of(i);
            merged = merged.max(area.free_one(&cx, pfn, order, cx.pb.get(pfn)));
            freed += 1 << order;
        }
        zone.add_free_locked(freed as i64);
        drop(area);
        self.page_reporting_notify_free(merged);
        pcp.add_count(-(freed as i64));
        freed
    }

    /// `drain_local_pages()`: give every page on this CPU's lists back to
    /// the buddy allocator. Returns the number of pages given back.
    pub fn drain_local_pages(&self) -> u64 {
        let mut n = 0;
        for node in self.nodes() {
            for zone in node.zones() {
                let g = LocalGuard::new(&self.p);
                if let Some(pcp) = zone.pcp(g.cpu()) {
                    // SAFETY: on pcp's CPU inside section `g`.
                    let lists = unsafe { pcp.lists_mut() };
                    // Whatever was asked of this CPU is done now.
                    pcp.take_drain_request();
                    n += self.free_pcppages_bulk(zone, pcp, lists, u32::MAX);
                }
            }
        }
        n
    }

    /// Whether CPU `cpu` has pages on any of its lists (`has_pcps`).
    pub(super) fn cpu_has_pcps(&self, cpu: usize) -> bool {
        self.nodes()
            .flat_map(|n| n.zones())
            .any(|z| z.pcp(cpu).is_some_and(|p| p.count() > 0))
    }

    /// Ask CPU `cpu` to drain its lists at its next page allocator call.
    pub(super) fn request_drain_cpu(&self, cpu: usize) {
        for zone in self.nodes().flat_map(|n| n.zones()) {
            if let Some(pcp) = zone.pcp(cpu) {
                if pcp.count() > 0 {
                    pcp.request_drain();
                }
            }
        }
    }

    /// `drain_all_pages()`: give every CPU's per-CPU pages back to the buddy
    /// allocator before returning. Returns the pages given back.
    ///
    /// As Linux (`__drain_all_pages()`), only CPUs with pages on their lists
    /// are visited; this CPU drains itself, every other one runs
    /// `drain_local_pages()` through
    /// [`Platform::smp_call_function_single`] (Linux queues the same work
    /// on each CPU and flushes it). A CPU the platform cannot reach, and
    /// every other CPU when the caller is in atomic context (it may not wait
    /// for another CPU), is instead asked to drain at its next page
    /// allocator call; its pages are not counted.
    pub fn drain_all_pages(&self) -> u64 {
        let me = {
            let g = LocalGuard::new(&self.p);
            g.cpu()
        };
        let mut n = self.drain_local_pages();
        let can_wait = !self.p.in_atomic();
        for cpu in (0..self.nr_cpus).filter(|&c| c != me) {
            if !self.cpu_has_pcps(cpu) {
                continue;
            }
            let mut drained = 0;
            let done = can_wait
                && crate::platform::call_on_cpu(&self.p, cpu, || {
                    debug_assert_eq!(self.p.smp_processor_id(), cpu);
                    drained = self.drain_local_pages();
                })
                .is_ok();
            if done {
                n += drained;
            } else {
                self.request_drain_cpu(cpu);
            }
        }
        n
    }

    /// `zone_pcp_disable()`: set every CPU's lists of `zone` to the boot
    /// pageset (`high` 0, `batch` 1) and drain this CPU's, so that each
    /// order-0 free goes straight back to the buddy lists (Linux does this
    /// while offlining memory). Other CPUs drain at their next visit.
    pub fn zone_pcp_disable(&self, zone: &Zone) {
        for cpu in 0..self.nr_cpus {
            if let Some(pcp) = zone.pcp(cpu) {
                pcp.update(1, 0, 0);
                pcp.request_drain();
            }
        }
        self.drain_local_pages();
    }

    /// `zone_pcp_enable()`: restore the computed list sizes of every zone.
    pub fn zone_pcp_enable(&self) {
        self.setup_per_zone();
    }

    /// `setup_per_cpu_pageset()`: give every populated zone its per-CPU
    /// lists in per-CPU memory (`setup_zone_pageset()`'s `alloc_percpu()`),
    /// each CPU's copy in its own unit, then size them
    /// (`zone_set_pageset_high_and_batch()`). Until this runs, at the end
    /// of boot once the per-CPU allocator, slab and vmalloc are up, zones
    /// run on the boot pageset, which caches nothing. A zone whose lists
    /// cannot be had (the first chunk full on a platform without vmalloc
    /// for more chunks) stays on it, with a warning.
    ///
    /// Boot only: `&mut self` is the machine before anything else can
    /// reach it.
    pub(crate) fn setup_per_cpu_pageset(&mut self) {
        let offsets = self.per_cpu_offsets();
        for nid in 0..self.nr_nodes {
            let Some(node) = self.nodes[nid] else {
                continue;
            };
            for zi in 0..crate::mmzone::MAX_NR_ZONE_TYPES {
                let zone = &self.node(nid).zones[zi];
                if !zone.is_populated() {
                    continue;
                }
                let name = zone.zone_type().name();
                // May run the page allocator and kmalloc (a vmalloc chunk
                // once the first chunk is full): only shared references
                // into the node descriptors live across it.
                let ptr = match self.__alloc_percpu_gfp(
                    size_of::<PerCpuPages>(),
                    align_of::<PerCpuPages>(),
                    crate::gfp::GFP_KERNEL | crate::gfp::__GFP_NOWARN,
                ) {
                    Ok(ptr) => ptr.addr(),
                    Err(_) => {
                        crate::report!(
                            &self.p,
                            crate::platform::Level::Warning,
                            "setup_zone_pageset: no per-CPU memory for node {} zone {}: its pages are not cached per CPU",
                            nid,
                            name
                        );
                        continue;
                    }
                };
                for cpu in 0..offsets.nr_cpus() {
                    // SAFETY: the allocation is `PerCpuPages`-sized and
                    // aligned in every CPU's unit, and ours.
                    unsafe {
                        ((ptr + offsets.offset(cpu)) as *mut PerCpuPages).write(PerCpuPages::new())
                    };
                }
                let nz = core::num::NonZeroUsize::new(ptr).expect("per-CPU memory is not at 0");
                // SAFETY: every CPU's copy was written above; the allocation
                // is never freed (zones live as long as the machine), and
                // PerCpuPages hands out no `&mut` to itself.
                let pcp = unsafe { crate::percpu_defs::PerCpuRef::new(nz, offsets) };
                // SAFETY: boot holds the machine alone (`&mut self`), and no
                // reference into its node descriptors lives past this
                // statement, so this `&mut` is the only one while it lasts.
                unsafe { (*node.as_ptr()).zones[zi].set_pcp(pcp) };
            }
        }
        self.setup_per_zone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pindex_round_trips_for_every_pcp_order() {
        for order in (0..=PAGE_ALLOC_COSTLY_ORDER).chain([PAGEBLOCK_ORDER]) {
            for mt in 0..MIGRATE_PCPTYPES {
                let i = order_to_pindex(mt, order);
                assert!(i < NR_PCP_LISTS);
                assert_eq!(pindex_to_order(i), order);
            }
        }
        // The THP lists: movable, and unmovable with reclaimable.
        let u = order_to_pindex(MigrateType::Unmovable as usize, PAGEBLOCK_ORDER);
        let r = order_to_pindex(MigrateType::Reclaimable as usize, PAGEBLOCK_ORDER);
        let m = order_to_pindex(MigrateType::Movable as usize, PAGEBLOCK_ORDER);
        assert_eq!(
            (u, r, m),
            (
                NR_LOWORDER_PCP_LISTS,
                NR_LOWORDER_PCP_LISTS,
                NR_LOWORDER_PCP_LISTS + 1
            )
        );
        assert!(pcp_allowed_order(PAGEBLOCK_ORDER, true));
        assert!(!pcp_allowed_order(PAGEBLOCK_ORDER, false));
        assert!(!pcp_allowed_order(PAGE_ALLOC_COSTLY_ORDER + 1, true));
    }
}
