//! Per-CPU page lists (`struct per_cpu_pages`).
//!
//! Each CPU keeps, per zone, short lists of free pages of orders
//! `0..=PAGE_ALLOC_COSTLY_ORDER`, one per (order, migratetype). An
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

use super::MIGRATE_PCPTYPES;
use crate::page::PageList;
use crate::PAGE_ALLOC_COSTLY_ORDER;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Lists per CPU per zone (`NR_PCP_LISTS` without the THP list).
pub const NR_PCP_LISTS: usize = MIGRATE_PCPTYPES * (PAGE_ALLOC_COSTLY_ORDER as usize + 1);

/// `order_to_pindex()`.
#[inline]
pub(crate) const fn order_to_pindex(mt: usize, order: u32) -> usize {
    MIGRATE_PCPTYPES * order as usize + mt
}

/// `pindex_to_order()`.
#[inline]
pub(crate) const fn pindex_to_order(pindex: usize) -> u32 {
    (pindex / MIGRATE_PCPTYPES) as u32
}

/// One CPU's page lists for one zone.
#[repr(C, align(64))]
pub struct PerCpuPages {
    /// Pages (not blocks) on the lists. Written by the owner only; read by
    /// anyone for reports.
    count: AtomicU32,
    high: AtomicU32,
    batch: AtomicU32,
    high_min: AtomicU32,
    high_max: AtomicU32,
    drain: AtomicBool,
    /// Per-CPU vm event counters (Linux keeps `pgalloc`/`pgfree` per CPU
    /// too): written only by the owner, read by anyone.
    pgalloc: AtomicU64,
    pgfree: AtomicU64,
    lists: UnsafeCell<[PageList; NR_PCP_LISTS]>,
}

// SAFETY: the atomics are shareable; `lists` is reached only through
// `lists_mut`, whose contract (owner CPU, inside a CPU-local section) the
// Platform trait makes exclusive.
unsafe impl Sync for PerCpuPages {}

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
