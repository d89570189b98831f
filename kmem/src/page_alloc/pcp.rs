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
//! which the [`Platform`](crate::Platform) contract makes exclusive: this
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

use crate::mmzone::{
    MigrateType, PerCpuPages, MIGRATE_PCPTYPES, NR_LOWORDER_PCP_LISTS, NR_PCP_LISTS,
};
use crate::page::PageList;
use crate::{PAGEBLOCK_ORDER, PAGE_ALLOC_COSTLY_ORDER};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

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
