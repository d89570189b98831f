//! Nodes and zones (`include/linux/mmzone.h`): the vocabulary every layer
//! of the allocator shares.
//!
//! A machine's memory is split into nodes ([`PgData`], Linux's `pg_data_t`)
//! and each node into zones ([`Zone`]) by physical address ([`ZoneType`]);
//! free pages are grouped by mobility ([`MigrateType`]). As in Linux's
//! header, the data structures of a zone live here, with their free area
//! (`FreeArea`, whose buddy algorithm is `page_alloc::buddy`) and per-CPU
//! page lists ([`PerCpuPages`], whose protocol is `page_alloc::pcp`); the
//! algorithms that use them live in [`crate::page_alloc`].
//!
//! This module is a leaf: it imports only the page descriptor
//! ([`crate::page`]) and the crate's constants, so `gfp`, `page_alloc`,
//! `proc` and the rest can all name a zone without importing each other.

use crate::page::PageList;
use crate::percpu_defs::PerCpuRef;
use crate::{NR_PAGE_ORDERS, PAGE_ALLOC_COSTLY_ORDER};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

/// A zone type (`enum zone_type`), in Linux's order.
///
/// Which types a machine has depends on its layout: an x86_64-like machine
/// has DMA, DMA32, Normal, Movable and Device; a machine with a lowmem limit
/// (32-bit style) has DMA, Normal, HighMem, Movable and Device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneType {
    /// `ZONE_DMA`: below 16 MiB, for ISA-style DMA.
    Dma = 0,
    /// `ZONE_DMA32`: below 4 GiB, for 32-bit DMA.
    Dma32 = 1,
    /// `ZONE_NORMAL`: directly mapped memory.
    Normal = 2,
    /// `ZONE_HIGHMEM`: above the lowmem limit, reached through kmap.
    HighMem = 3,
    /// `ZONE_MOVABLE`: only movable allocations (`movablecore=`).
    Movable = 4,
    /// `ZONE_DEVICE`: device memory, always empty here.
    Device = 5,
}

/// Number of [`ZoneType`] values.
pub const MAX_NR_ZONE_TYPES: usize = 6;

impl ZoneType {
    /// All zone types in order.
    pub const ALL: [ZoneType; MAX_NR_ZONE_TYPES] = [
        ZoneType::Dma,
        ZoneType::Dma32,
        ZoneType::Normal,
        ZoneType::HighMem,
        ZoneType::Movable,
        ZoneType::Device,
    ];

    /// The name Linux prints (`"DMA"`, `"DMA32"`, `"Normal"`, `"HighMem"`,
    /// `"Movable"`, `"Device"`).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Dma32 => "DMA32",
            ZoneType::Normal => "Normal",
            ZoneType::HighMem => "HighMem",
            ZoneType::Movable => "Movable",
            ZoneType::Device => "Device",
        }
    }
}

/// A migratetype (`enum migratetype`): pageblocks are grouped by mobility so
/// that unmovable allocations do not pin down every large block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MigrateType {
    /// `MIGRATE_UNMOVABLE`
    Unmovable = 0,
    /// `MIGRATE_MOVABLE`
    Movable = 1,
    /// `MIGRATE_RECLAIMABLE`
    Reclaimable = 2,
    /// `MIGRATE_HIGHATOMIC` (shares the value `MIGRATE_PCPTYPES`)
    HighAtomic = 3,
    /// `MIGRATE_ISOLATE`
    Isolate = 4,
}

/// Migratetypes that have per-CPU lists (`MIGRATE_PCPTYPES`).
pub const MIGRATE_PCPTYPES: usize = 3;
/// Number of migratetypes (`MIGRATE_TYPES`, without CMA).
pub const MIGRATE_TYPES: usize = 5;

impl MigrateType {
    /// All migratetypes in order.
    pub const ALL: [MigrateType; MIGRATE_TYPES] = [
        MigrateType::Unmovable,
        MigrateType::Movable,
        MigrateType::Reclaimable,
        MigrateType::HighAtomic,
        MigrateType::Isolate,
    ];

    /// The name `/proc/pagetypeinfo` prints.
    pub const fn name(self) -> &'static str {
        match self {
            MigrateType::Unmovable => "Unmovable",
            MigrateType::Movable => "Movable",
            MigrateType::Reclaimable => "Reclaimable",
            MigrateType::HighAtomic => "HighAtomic",
            MigrateType::Isolate => "Isolate",
        }
    }
}

/// Highest node count (`MAX_NUMNODES`, `CONFIG_NODES_SHIFT=6`): the
/// per-node tables that are arrays are sized by it.
pub const MAX_NUMNODES: usize = 64;
/// Highest CPU count (`NR_CPUS`): a bound checked at boot, not a table
/// size. Every per-CPU table (`cpu_to_node`, the per-CPU page lists, the
/// slab caches' per-CPU sheaves) is sized at boot by the machine's CPU
/// count, `nr_cpu_ids`.
pub const NR_CPUS: usize = 1024;

/// Watermark indices (`enum zone_watermarks`).
pub const WMARK_MIN: usize = 0;
/// `WMARK_LOW`
pub const WMARK_LOW: usize = 1;
/// `WMARK_HIGH`
pub const WMARK_HIGH: usize = 2;
/// `WMARK_PROMO`
pub const WMARK_PROMO: usize = 3;

/// A zone (`struct zone`).
pub struct Zone {
    pub(crate) ztype: ZoneType,
    pub(crate) node: usize,
    /// The machine's layout has this zone type (it may still be empty).
    pub(crate) in_layout: bool,
    pub(crate) zone_start_pfn: u64,
    pub(crate) spanned_pages: u64,
    pub(crate) present_pages: u64,
    pub(crate) managed_pages: AtomicU64,
    pub(crate) wmark: [AtomicU64; 4],
    pub(crate) watermark_boost: AtomicU64,
    pub(crate) lowmem_reserve: [AtomicU64; MAX_NR_ZONE_TYPES],
    /// `NR_FREE_PAGES`: pages on the buddy lists (not on per-CPU lists).
    pub(crate) nr_free_pages: AtomicI64,
    pub(crate) stat_threshold: AtomicU64,
    pub(crate) pgalloc: AtomicU64,
    pub(crate) pgfree: AtomicU64,
    pub(crate) area: spin::Mutex<FreeArea>,
    /// The free area's non-empty-list mask as of the last unlock, for
    /// watermark checks that, like Linux's, do not take the lock.
    pub(crate) free_mask: AtomicU64,
    /// `per_cpu_pageset`: each CPU's lists, in per-CPU memory (its own
    /// unit, on its node). `None` is Linux's `boot_pageset`, which caches
    /// nothing: the zone runs on it until `setup_per_cpu_pageset()` at the
    /// end of boot, or for good if per-CPU memory could not be had.
    pcp: Option<PerCpuRef<PerCpuPages>>,
}

// A zone is shared by every CPU: its fields are atomics, the spin-locked
// free area and the per-CPU lists, so it is `Send` and `Sync` without an
// `unsafe impl`; this says so at compile time.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Zone>()
};

impl Zone {
    pub(crate) const fn new(ztype: ZoneType, node: usize) -> Self {
        Zone {
            ztype,
            node,
            in_layout: false,
            zone_start_pfn: 0,
            spanned_pages: 0,
            present_pages: 0,
            managed_pages: AtomicU64::new(0),
            wmark: [const { AtomicU64::new(0) }; 4],
            watermark_boost: AtomicU64::new(0),
            lowmem_reserve: [const { AtomicU64::new(0) }; MAX_NR_ZONE_TYPES],
            nr_free_pages: AtomicI64::new(0),
            stat_threshold: AtomicU64::new(0),
            pgalloc: AtomicU64::new(0),
            pgfree: AtomicU64::new(0),
            area: spin::Mutex::new(FreeArea::new()),
            free_mask: AtomicU64::new(0),
            pcp: None,
        }
    }

    /// Add `delta` to `NR_FREE_PAGES`. The caller holds the zone lock, which
    /// serialises every writer, so a plain store suffices; readers (the
    /// watermark checks) read it without the lock.
    #[inline]
    pub(crate) fn add_free_locked(&self, delta: i64) {
        self.nr_free_pages
            .store(self.nr_free_pages.load(Relaxed) + delta, Relaxed);
    }

    /// Count an event under the zone lock (see [`Zone::add_free_locked`]).
    #[inline]
    pub(crate) fn count_locked(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed) + n, Relaxed);
    }

    /// Take the zone lock. The guard publishes the free-list mask when it
    /// is dropped.
    #[inline]
    pub(crate) fn lock(&self) -> AreaGuard<'_> {
        AreaGuard {
            zone: self,
            area: self.area.lock(),
        }
    }

    /// Give the zone its per-CPU lists (`setup_zone_pageset()`).
    pub(crate) fn set_pcp(&mut self, pcp: PerCpuRef<PerCpuPages>) {
        self.pcp = Some(pcp);
    }

    /// Possible CPUs with lists in this zone (0 on the boot pageset).
    #[inline]
    fn pcp_cpus(&self) -> usize {
        self.pcp.as_ref().map_or(0, PerCpuRef::nr_cpus)
    }

    /// The zone type.
    #[inline]
    pub fn zone_type(&self) -> ZoneType {
        self.ztype
    }

    /// The node.
    #[inline]
    pub fn node(&self) -> usize {
        self.node
    }

    /// `zone->zone_start_pfn`.
    #[inline]
    pub fn zone_start_pfn(&self) -> u64 {
        self.zone_start_pfn
    }

    /// One past the last pfn spanned (`zone_end_pfn()`).
    #[inline]
    pub fn zone_end_pfn(&self) -> u64 {
        self.zone_start_pfn + self.spanned_pages
    }

    /// `spanned_pages`: the pfn range, holes included.
    pub fn spanned_pages(&self) -> u64 {
        self.spanned_pages
    }

    /// `present_pages`: RAM inside the span.
    pub fn present_pages(&self) -> u64 {
        self.present_pages
    }

    /// `zone_managed_pages()`: pages the buddy allocator manages.
    #[inline]
    pub fn managed_pages(&self) -> u64 {
        self.managed_pages.load(Relaxed)
    }

    /// `populated_zone()`.
    #[inline]
    pub fn is_populated(&self) -> bool {
        self.present_pages > 0
    }

    /// Free pages on the buddy lists (`NR_FREE_PAGES`).
    #[inline]
    pub fn free_pages(&self) -> u64 {
        self.nr_free_pages.load(Relaxed).max(0) as u64
    }

    /// Watermark `which` (`WMARK_MIN`..`WMARK_PROMO`), boost included.
    #[inline]
    pub fn wmark(&self, which: usize) -> u64 {
        self.wmark[which].load(Relaxed) + self.watermark_boost.load(Relaxed)
    }

    /// `min_wmark_pages()`.
    pub fn min_wmark(&self) -> u64 {
        self.wmark(WMARK_MIN)
    }

    /// `low_wmark_pages()`.
    pub fn low_wmark(&self) -> u64 {
        self.wmark(WMARK_LOW)
    }

    /// `high_wmark_pages()`.
    pub fn high_wmark(&self) -> u64 {
        self.wmark(WMARK_HIGH)
    }

    /// `promo_wmark_pages()`.
    pub fn promo_wmark(&self) -> u64 {
        self.wmark(WMARK_PROMO)
    }

    /// `zone->watermark_boost`.
    pub fn watermark_boost(&self) -> u64 {
        self.watermark_boost.load(Relaxed)
    }

    /// `zone->lowmem_reserve[j]`.
    #[inline]
    pub fn lowmem_reserve(&self, j: usize) -> u64 {
        self.lowmem_reserve[j].load(Relaxed)
    }

    /// The vmstat threshold.
    pub fn stat_threshold(&self) -> u64 {
        self.stat_threshold.load(Relaxed)
    }

    /// Pages handed out from this zone so far (`pgalloc_*`): the zone's own
    /// count plus what each CPU counted on its lists.
    pub fn pgalloc(&self) -> u64 {
        self.pgalloc.load(Relaxed)
            + (0..self.pcp_cpus())
                .filter_map(|c| self.pcp(c))
                .map(|p| p.pgalloc())
                .sum::<u64>()
    }

    /// Pages freed to this zone so far (`pgfree`).
    pub fn pgfree(&self) -> u64 {
        self.pgfree.load(Relaxed)
            + (0..self.pcp_cpus())
                .filter_map(|c| self.pcp(c))
                .map(|p| p.pgfree())
                .sum::<u64>()
    }

    /// CPU `cpu`'s per-CPU lists, if the zone has them.
    #[inline]
    pub fn pcp(&self, cpu: usize) -> Option<&PerCpuPages> {
        self.pcp.as_ref()?.get(cpu)
    }

    /// Pages on all CPUs' lists.
    pub fn pcp_pages(&self) -> u64 {
        (0..self.pcp_cpus())
            .filter_map(|c| self.pcp(c))
            .map(|p| u64::from(p.count()))
            .sum()
    }

    /// Free blocks of each order (`/proc/buddyinfo`), taken under the lock.
    /// Interrupt handlers take the zone lock too: on a platform with
    /// interrupts, call it inside [`IrqSave`](crate::platform::IrqSave) or
    /// a CPU-local section, as kmem's own readers do.
    pub fn free_blocks(&self) -> [u64; crate::NR_PAGE_ORDERS] {
        let a = self.area.lock();
        core::array::from_fn(|o| a.nr_free(o))
    }
}

/// The zone lock held: the free area, and on release the published mask.
pub(crate) struct AreaGuard<'a> {
    zone: &'a Zone,
    area: spin::MutexGuard<'a, FreeArea>,
}

impl core::ops::Deref for AreaGuard<'_> {
    type Target = FreeArea;
    fn deref(&self) -> &FreeArea {
        &self.area
    }
}

impl core::ops::DerefMut for AreaGuard<'_> {
    fn deref_mut(&mut self) -> &mut FreeArea {
        &mut self.area
    }
}

impl Drop for AreaGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.zone.free_mask.store(self.area.mask(), Relaxed);
    }
}

/// An entry of a zonelist: a zone named by node and type index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneRef {
    /// Node.
    pub node: u8,
    /// Zone type index.
    pub zone: u8,
}

/// The zones an allocation may try, best first (`struct zonelist`).
#[derive(Clone, Copy, Debug)]
pub struct Zonelist {
    refs: [ZoneRef; MAX_NUMNODES * MAX_NR_ZONE_TYPES],
    len: usize,
}

impl Zonelist {
    pub(crate) const fn new() -> Self {
        Zonelist {
            refs: [ZoneRef { node: 0, zone: 0 }; MAX_NUMNODES * MAX_NR_ZONE_TYPES],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, node: usize, zone: usize) {
        self.refs[self.len] = ZoneRef {
            node: node as u8,
            zone: zone as u8,
        };
        self.len += 1;
    }

    /// The entries.
    #[inline]
    pub fn entries(&self) -> &[ZoneRef] {
        &self.refs[..self.len]
    }
}

/// `ZONELIST_FALLBACK`: all nodes by distance.
pub const ZONELIST_FALLBACK: usize = 0;
/// `ZONELIST_NOFALLBACK`: this node only (`__GFP_THISNODE`).
pub const ZONELIST_NOFALLBACK: usize = 1;

/// A node (`pg_data_t`).
pub struct PgData {
    pub(crate) node_id: usize,
    pub(crate) node_start_pfn: u64,
    pub(crate) node_spanned_pages: u64,
    pub(crate) node_present_pages: u64,
    pub(crate) nr_cpus: usize,
    pub(crate) zones: [Zone; MAX_NR_ZONE_TYPES],
    pub(crate) zonelists: [Zonelist; 2],
}

impl PgData {
    pub(crate) const fn new(node_id: usize) -> Self {
        PgData {
            node_id,
            node_start_pfn: 0,
            node_spanned_pages: 0,
            node_present_pages: 0,
            nr_cpus: 0,
            zones: [
                Zone::new(ZoneType::Dma, node_id),
                Zone::new(ZoneType::Dma32, node_id),
                Zone::new(ZoneType::Normal, node_id),
                Zone::new(ZoneType::HighMem, node_id),
                Zone::new(ZoneType::Movable, node_id),
                Zone::new(ZoneType::Device, node_id),
            ],
            zonelists: [Zonelist::new(), Zonelist::new()],
        }
    }

    /// Node id.
    pub fn node_id(&self) -> usize {
        self.node_id
    }

    /// `node_start_pfn`.
    pub fn node_start_pfn(&self) -> u64 {
        self.node_start_pfn
    }

    /// `node_spanned_pages`.
    pub fn node_spanned_pages(&self) -> u64 {
        self.node_spanned_pages
    }

    /// `node_present_pages`.
    pub fn node_present_pages(&self) -> u64 {
        self.node_present_pages
    }

    /// CPUs on this node.
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// The zone of type index `idx`.
    #[inline]
    pub fn zone(&self, idx: usize) -> &Zone {
        &self.zones[idx]
    }

    /// The zones that exist in the machine's layout, in order.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.iter().filter(|z| z.in_layout)
    }

    /// `ZONELIST_FALLBACK` or `ZONELIST_NOFALLBACK`.
    #[inline]
    pub fn zonelist(&self, which: usize) -> &Zonelist {
        &self.zonelists[which]
    }
}

/// Free lists and counts of one zone (`struct free_area[NR_PAGE_ORDERS]`),
/// used under the zone lock by the buddy algorithm in `page_alloc::buddy`.
pub(crate) struct FreeArea {
    pub(crate) lists: [[PageList; MIGRATE_TYPES]; NR_PAGE_ORDERS],
    pub(crate) nr_free: [u64; NR_PAGE_ORDERS],
    /// Bit `order * MIGRATE_TYPES + mt` is set while that list is not
    /// empty; published for lock-free watermark checks (see `FreeArea::mask`).
    pub(crate) mask: u64,
    /// `[start, end)` pfns of free memory whose page descriptors boot has
    /// not touched yet (deferred struct page init): max-order blocks that
    /// join the lists when the zone runs short (`deferred_grow_zone()`).
    pub(crate) deferred: (u64, u64),
}

/// Lists for orders `0..=PAGE_ALLOC_COSTLY_ORDER`, one per migratetype
/// (`NR_LOWORDER_PCP_LISTS`).
pub const NR_LOWORDER_PCP_LISTS: usize = MIGRATE_PCPTYPES * (PAGE_ALLOC_COSTLY_ORDER as usize + 1);
/// Lists for pageblock-order (THP-sized) blocks (`NR_PCP_THP` with
/// `CONFIG_TRANSPARENT_HUGEPAGE`): one for movable blocks, one shared by
/// unmovable and reclaimable ones, as in Linux 6.18.
pub const NR_PCP_THP: usize = 2;
/// Lists per CPU per zone (`NR_PCP_LISTS`).
pub const NR_PCP_LISTS: usize = NR_LOWORDER_PCP_LISTS + NR_PCP_THP;

/// One CPU's page lists for one zone (`struct per_cpu_pages`); the
/// protocol that touches them is `page_alloc::pcp`.
#[repr(C, align(64))]
pub struct PerCpuPages {
    /// Pages (not blocks) on the lists. Written by the owner only; read by
    /// anyone for reports.
    pub(crate) count: AtomicU32,
    pub(crate) high: AtomicU32,
    pub(crate) batch: AtomicU32,
    pub(crate) high_min: AtomicU32,
    pub(crate) high_max: AtomicU32,
    pub(crate) drain: AtomicBool,
    /// Per-CPU vm event counters (Linux keeps `pgalloc`/`pgfree` per CPU
    /// too): written only by the owner, read by anyone.
    pub(crate) pgalloc: AtomicU64,
    pub(crate) pgfree: AtomicU64,
    pub(crate) lists: UnsafeCell<[PageList; NR_PCP_LISTS]>,
}

// SAFETY: the atomics are shareable; `lists` is reached only through
// `PerCpuPages::lists_mut`, whose contract (owner CPU, inside a CPU-local section) the
// Platform trait makes exclusive.
unsafe impl Sync for PerCpuPages {}
