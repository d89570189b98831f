//! The zoned buddy page allocator (`mm/page_alloc.c`, `include/linux/mmzone.h`).
//!
//! Memory is split into nodes ([`PgData`], Linux's `pg_data_t`) and each
//! node into zones ([`Zone`]) by physical address: DMA below 16 MiB, DMA32
//! below 4 GiB, Normal above (or Normal up to a lowmem limit and HighMem
//! above it, on a 32-bit style machine), and Movable when `movablecore=` asks
//! for it. An allocation computes the highest zone its GFP flags allow
//! ([`gfp_zone`](crate::gfp::gfp_zone)) and walks its node's *zonelist*:
//! that zone and every lower one, on the local node first and then on the
//! others by distance (`__GFP_THISNODE` stops at the local node).
//!
//! In each zone it checks a *watermark*: the fast path requires free pages
//! above `low`; the slow path drops to `min`, and lets `__GFP_HIGH` dig to
//! half of `min` and non-blocking high-priority callers (GFP_ATOMIC) to 3/8
//! of it, `__GFP_MEMALLOC` ignore watermarks and `__GFP_NOMEMALLOC` forbid
//! that ([`AllocFlags`], `gfp_to_alloc_flags`). A zone also keeps back
//! `lowmem_reserve[j]` pages from allocations that could have used a higher
//! zone `j`, so that DMA memory is not eaten by GFP_KERNEL.
//!
//! Then it takes pages from the per-CPU lists ([`pcp`]) for orders up to
//! [`crate::PAGE_ALLOC_COSTLY_ORDER`] and for pageblock-order (THP) blocks,
//! or from the
//! buddy lists ([`buddy`]) under the zone lock.
//!
//! The fast paths are written for the code generator: popping from or
//! pushing onto a per-CPU list, the order-0 watermark test and
//! `prep_new_page()` are inlined, while list refills and spills
//! (`rmqueue_bulk`, `free_pcppages_bulk`), the high-order watermark tail,
//! buddy work and every report are out-of-line functions. `__free_pages`
//! checks an ordinary block (flags read once: not reserved, tail, buddy,
//! on a per-CPU list, slab or compound; the order it was allocated with; a
//! reference held) in one test, then drops the reference with an atomic
//! decrement as `put_page_testzero()` does; everything else, the bad-page
//! reports included, takes the slow path.
//!
//! When that fails, the slow path (`alloc_pages_slowpath`) follows Linux:
//! wake kswapd, relax the watermark, use the reserves where allowed, then
//! for a caller that may block reclaim directly ([`crate::vmscan`]), retry
//! by Linux's rules and finally call the OOM killer ([`crate::oom_kill`]).
//! What is not here: compaction and the high-atomic reserve.

pub mod buddy;
pub mod pcp;
pub mod sysctl;
pub mod watermark;

use crate::gfp::{self, Gfp};
use crate::mmzone::{
    MigrateType, PerCpuPages, PgData, Zone, ZoneType, Zonelist, MIGRATE_PCPTYPES, NR_CPUS,
    NR_PCP_LISTS, WMARK_HIGH, WMARK_LOW, WMARK_MIN, ZONELIST_FALLBACK, ZONELIST_NOFALLBACK,
};
use crate::page::{FlagNames, Page, PG_BUDDY, PG_HEAD, PG_PCP, PG_RESERVED, PG_SLAB, PG_TAIL};
use crate::platform::{Level, LocalGuard, Platform};
use crate::{
    report, Error, Kmem, Result, MAX_PAGE_ORDER, PAGE_ALLOC_COSTLY_ORDER, PAGE_SHIFT, PAGE_SIZE,
};
use buddy::{BuddyCx, PageblockFlags, RmqueueMode};
use core::ptr::NonNull;
use core::sync::atomic::Ordering::Relaxed;
use pcp::{order_to_pindex, pcp_allowed_order, pindex_to_order};

/// The internal allocation rules derived from GFP flags (`ALLOC_*` in
/// `mm/internal.h`, same values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocFlags(pub u32);

impl AllocFlags {
    /// Check against the min watermark.
    pub const WMARK_MIN: AllocFlags = AllocFlags(WMARK_MIN as u32);
    /// Check against the low watermark (the fast path).
    pub const WMARK_LOW: AllocFlags = AllocFlags(WMARK_LOW as u32);
    /// Check against the high watermark.
    pub const WMARK_HIGH: AllocFlags = AllocFlags(WMARK_HIGH as u32);
    /// Ignore watermarks entirely (`__GFP_MEMALLOC`).
    pub const NO_WATERMARKS: AllocFlags = AllocFlags(0x04);
    /// Mask of the watermark index.
    pub const WMARK_MASK: AllocFlags = AllocFlags(0x03);
    /// The OOM victim may dig deeper.
    pub const OOM: AllocFlags = AllocFlags(0x08);
    /// The caller cannot block: with `MIN_RESERVE`, go to 3/8 of min.
    pub const NON_BLOCK: AllocFlags = AllocFlags(0x10);
    /// `__GFP_HIGH`: go to 1/2 of min.
    pub const MIN_RESERVE: AllocFlags = AllocFlags(0x20);
    /// Check cpuset placement (always allowed here: no cpusets).
    pub const CPUSET: AllocFlags = AllocFlags(0x40);
    /// Avoid fragmenting pageblocks in the first pass over the zonelist.
    pub const NOFRAGMENT: AllocFlags = AllocFlags(0x100);
    /// May use the high-atomic reserve.
    pub const HIGHATOMIC: AllocFlags = AllocFlags(0x200);
    /// May wake kswapd.
    pub const KSWAPD: AllocFlags = AllocFlags(0x800);
    /// Any of the reserve-access flags.
    pub const RESERVES: AllocFlags = AllocFlags(0x10 | 0x20 | 0x200 | 0x08);

    /// Whether all bits of `o` are set.
    pub const fn contains(self, o: AllocFlags) -> bool {
        self.0 & o.0 == o.0
    }

    /// Whether any bit of `o` is set.
    pub const fn intersects(self, o: AllocFlags) -> bool {
        self.0 & o.0 != 0
    }

    /// Union.
    pub const fn with(self, o: AllocFlags) -> AllocFlags {
        AllocFlags(self.0 | o.0)
    }

    /// Difference.
    pub const fn without(self, o: AllocFlags) -> AllocFlags {
        AllocFlags(self.0 & !o.0)
    }

    /// `gfp_to_alloc_flags()`: the slow path's rules for `gfp` and `order`.
    ///
    /// ```
    /// use kmem::gfp::*;
    /// use kmem::page_alloc::AllocFlags;
    /// let a = AllocFlags::from_gfp(GFP_ATOMIC, 0);
    /// assert!(a.contains(AllocFlags::MIN_RESERVE.with(AllocFlags::NON_BLOCK)));
    /// let k = AllocFlags::from_gfp(GFP_KERNEL, 0);
    /// assert!(!k.intersects(AllocFlags::RESERVES));
    /// ```
    pub const fn from_gfp(gfp: Gfp, order: u32) -> AllocFlags {
        let mut af = WMARK_MIN as u32 | Self::CPUSET.0;
        // __GFP_HIGH and __GFP_KSWAPD_RECLAIM share their values with
        // ALLOC_MIN_RESERVE and ALLOC_KSWAPD.
        af |= gfp.bits() & (gfp::__GFP_HIGH.bits() | gfp::__GFP_KSWAPD_RECLAIM.bits());
        if !gfp.contains(gfp::__GFP_DIRECT_RECLAIM) {
            if !gfp.contains(gfp::__GFP_NOMEMALLOC) {
                af |= Self::NON_BLOCK.0;
                if order > 0 {
                    af |= Self::HIGHATOMIC.0;
                }
            }
            if af & Self::MIN_RESERVE.0 != 0 {
                af &= !Self::CPUSET.0;
            }
        }
        AllocFlags(af)
    }

    /// `__gfp_pfmemalloc_flags()`: `NO_WATERMARKS` for `__GFP_MEMALLOC`
    /// unless `__GFP_NOMEMALLOC` forbids it.
    pub const fn pfmemalloc(gfp: Gfp) -> AllocFlags {
        if gfp.contains(gfp::__GFP_NOMEMALLOC) {
            AllocFlags(0)
        } else if gfp.contains(gfp::__GFP_MEMALLOC) {
            Self::NO_WATERMARKS
        } else {
            AllocFlags(0)
        }
    }
}

/// `__zone_watermark_ok()` on plain numbers: would a zone with `free_pages`
/// free pages pass watermark `mark` for an allocation of `order` whose
/// highest usable zone is `highest_zoneidx`?
///
/// `has_block(order)` answers whether a free block of at least `order`
/// exists on an ordinary list (the high-order tail of the check).
pub fn watermark_ok(
    free_pages: i64,
    order: u32,
    mark: u64,
    lowmem_reserve: u64,
    af: AllocFlags,
    has_block: impl FnOnce(u32, bool) -> bool,
) -> bool {
    let free_pages = free_pages - ((1i64 << order) - 1);
    let mut min = mark as i64;
    if af.intersects(AllocFlags::RESERVES) {
        if af.contains(AllocFlags::MIN_RESERVE) {
            min -= min / 2;
            if af.contains(AllocFlags::NON_BLOCK) {
                min -= min / 4;
            }
        }
        if af.contains(AllocFlags::OOM) {
            min -= min / 2;
        }
    }
    if free_pages <= min + lowmem_reserve as i64 {
        return false;
    }
    order == 0
        || has_block(
            order,
            af.intersects(AllocFlags::HIGHATOMIC.with(AllocFlags::OOM)),
        )
}

/// `get_order()`: the smallest order whose block holds `size` bytes
/// (`get_order(0)` is 0 here; Linux leaves it undefined).
///
/// ```
/// assert_eq!(kmem::page_alloc::get_order(4096), 0);
/// assert_eq!(kmem::page_alloc::get_order(4097), 1);
/// assert_eq!(kmem::page_alloc::get_order(4 << 20), 10);
/// ```
pub const fn get_order(size: usize) -> u32 {
    if size <= PAGE_SIZE {
        0
    } else {
        usize::BITS - ((size - 1) >> PAGE_SHIFT).leading_zeros()
    }
}

/// Why a free was refused (the `page dumped because:` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BadPage {
    Reserved,
    Slab,
    Free,
    Tail,
    CompoundOrder,
    Order(u32),
}

/// The flags of an allocation's first pass for a request that may use
/// ZONE_NORMAL, made on `node`: the low watermark, and no pageblock
/// fragmentation while DMA32 lies under Normal (`alloc_flags_nofragment()`).
#[inline]
fn first_pass_flags(node: &PgData) -> AllocFlags {
    if node.zone(ZoneType::Dma32 as usize).is_populated() {
        AllocFlags::WMARK_LOW.with(AllocFlags::NOFRAGMENT)
    } else {
        AllocFlags::WMARK_LOW
    }
}

impl<P: Platform> Kmem<P> {
    /// The zone a block head belongs to (`page_zone()`).
    #[inline]
    pub fn page_zone(&self, page: &Page) -> &Zone {
        self.node(page.nid()).zone(page.zone_idx())
    }

    /// `numa_node_id()`: the node of the running CPU.
    pub fn numa_node_id(&self) -> usize {
        let cpu = self.p.smp_processor_id();
        usize::from(self.cpu_to_node[cpu.min(NR_CPUS - 1)])
    }

    /// `cpu_to_node()`.
    pub fn cpu_to_node(&self, cpu: usize) -> usize {
        usize::from(self.cpu_to_node[cpu.min(NR_CPUS - 1)])
    }

    /// The zone type index an allocation with `gfp` may go up to, mapped
    /// onto this machine's layout (no DMA32 or HighMem: Normal).
    #[inline]
    pub fn gfp_zone_idx(&self, gfp: Gfp) -> Result<usize> {
        // No zone modifier (GFP_KERNEL and most others): ZONE_NORMAL.
        if gfp.bits() & gfp::GFP_ZONEMASK.bits() == 0 {
            return Ok(ZoneType::Normal as usize);
        }
        self.gfp_zone_idx_slow(gfp)
    }

    #[inline(never)]
    fn gfp_zone_idx_slow(&self, gfp: Gfp) -> Result<usize> {
        let t = gfp::gfp_zone(gfp).inspect_err(|_| {
            report!(
                &self.p,
                Level::Warning,
                "WARNING: invalid GFP zone modifiers: mode:{:#x}({})",
                gfp.bits(),
                gfp
            )
        })?;
        let t = match t {
            ZoneType::Dma32 if !self.has_zone(ZoneType::Dma32) => ZoneType::Normal,
            ZoneType::HighMem if !self.has_zone(ZoneType::HighMem) => ZoneType::Normal,
            t => t,
        };
        Ok(t as usize)
    }

    #[inline]
    pub(crate) fn buddy_cx(&self, zone: &Zone) -> BuddyCx<'_> {
        BuddyCx {
            mm: self.mem_map(),
            pb: self.pageblocks(),
            links: Page::links(zone.node, zone.ztype as usize),
            zone_start: zone.zone_start_pfn,
            zone_end: zone.zone_end_pfn(),
        }
    }

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
    fn alloc_pages_fast(&self, nid: i32, gfp: Gfp, order: u32) -> Option<&Page> {
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
    fn rmqueue_fast_refill(
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
    fn __alloc_pages(&self, nid: i32, gfp: Gfp, order: u32) -> Result<&Page> {
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
    fn alloc_pages_slowpath(
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
            if no_progress_loops <= crate::vmscan::MAX_RECLAIM_RETRIES {
                if reclaimed == 0 {
                    self.wait_for_free_pages(crate::vmscan::RECLAIM_THROTTLE_NS);
                }
                continue;
            }
            // __alloc_pages_may_oom().
            let (page, progress) = self.alloc_pages_may_oom(gfp, order, zl, high, mt);
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
                self.wait_for_free_pages(crate::vmscan::RECLAIM_THROTTLE_NS);
                no_progress_loops = 0;
                continue;
            }
            break;
        }
        if nofail {
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
    fn alloc_pages_may_oom(
        &self,
        gfp: Gfp,
        order: u32,
        zl: &Zonelist,
        high: usize,
        mt: MigrateType,
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
        // such allocations keep retrying while others free memory.
        if !gfp.contains(gfp::__GFP_FS) {
            return (None, true);
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
        crate::proc::show_mem(self);
    }

    fn get_page_from_freelist(
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
                if !af.contains(AllocFlags::NO_WATERMARKS) {
                    let mark = zone.wmark((af.0 & AllocFlags::WMARK_MASK.0) as usize);
                    if !self.zone_watermark_fast(zone, order, mark, high, af) {
                        continue;
                    }
                }
                if let Some(idx) = self.rmqueue(zone, order, mt, af) {
                    return Some(self.prep_new_page(zone, idx, order, gfp));
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
    fn zone_watermark_fast(
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
    fn zone_watermark_slow(
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
    fn rmqueue(&self, zone: &Zone, order: u32, mt: MigrateType, af: AllocFlags) -> Option<u32> {
        if pcp_allowed_order(order, self.pcp_thp) {
            if let Some(i) = self.rmqueue_pcplist(zone, order, mt, af) {
                return Some(i);
            }
        }
        self.rmqueue_buddy(zone, order, mt, af)
    }

    /// `rmqueue_buddy()`: one block from the buddy lists under the zone lock.
    #[inline(never)]
    fn rmqueue_buddy(
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

    /// `rmqueue_pcplist()`: pop a block from this CPU's list, in a leaf
    /// section ([`Platform::local_enter_leaf`]) when nothing else is to do.
    /// A pending drain request or an empty list goes to
    /// [`rmqueue_pcplist_full`](Self::rmqueue_pcplist_full).
    #[inline]
    fn rmqueue_pcplist(
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
    fn rmqueue_pcplist_leaf(&self, zone: &Zone, order: u32, mt: MigrateType) -> Option<u32> {
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
    fn rmqueue_pcplist_full(
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
    fn pcp_take(
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
    fn pcp_put(
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
    fn rmqueue_pcplist_refill(
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

    /// `prep_new_page()`: reference, order, compound metadata, zeroing.
    #[inline]
    fn prep_new_page(&self, zone: &Zone, idx: u32, order: u32, gfp: Gfp) -> &Page {
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
    fn prep_compound_zero(&self, idx: u32, links: u32, order: u32, gfp: Gfp) {
        let mm = self.mem_map();
        let page = mm.at(idx);
        if order > 0 && gfp.contains(gfp::__GFP_COMP) {
            page.set_flag(PG_HEAD);
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
    fn zero_pages(&self, pfn: u64, n: u64) {
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

    fn bad_page(&self, page: &Page, why: BadPage) {
        let pfn = self.mem_map().page_to_pfn(page).unwrap_or(0);
        let task = self.p.current();
        report!(
            &self.p,
            Level::Alert,
            "BUG: Bad page state in process {}  pfn:{:05x}",
            task.comm(),
            pfn
        );
        report!(
            &self.p,
            Level::Alert,
            "page: refcount:{} mapcount:0 mapping:0000000000000000 index:0x0 pfn:{:#x}",
            page.refcount(),
            pfn
        );
        report!(
            &self.p,
            Level::Alert,
            "flags: {:#x}({})",
            page.raw_flags(),
            FlagNames(page.raw_flags())
        );
        match why {
            BadPage::Reserved | BadPage::Slab => report!(
                &self.p,
                Level::Alert,
                "page dumped because: PAGE_FLAGS_CHECK_AT_FREE flag(s) set"
            ),
            BadPage::Free => report!(
                &self.p,
                Level::Alert,
                "page dumped because: VM_BUG_ON_PAGE(page_ref_count(page) == 0)"
            ),
            BadPage::Tail => report!(
                &self.p,
                Level::Alert,
                "page dumped because: VM_BUG_ON_PAGE(PageTail(page))"
            ),
            BadPage::CompoundOrder => report!(
                &self.p,
                Level::Alert,
                "page dumped because: VM_BUG_ON_PAGE(compound && compound_order(page) != order)"
            ),
            BadPage::Order(o) => report!(
                &self.p,
                Level::Alert,
                "page dumped because: freed with order {} but allocated with order {}",
                o,
                page.order()
            ),
        }
    }

    /// The checks of `free_pages_prepare()`, reported the way Linux's
    /// `bad_page()` does; a refused free changes nothing.
    fn free_check(&self, page: &Page, order: u32) -> Result<()> {
        let f = page.flags();
        let why = if f & PG_RESERVED != 0 {
            Some(BadPage::Reserved)
        } else if f & PG_TAIL != 0 {
            Some(BadPage::Tail)
        } else if f & (PG_BUDDY | PG_PCP) != 0 || page.refcount() <= 0 {
            Some(BadPage::Free)
        } else if f & PG_SLAB != 0 {
            Some(BadPage::Slab)
        } else if f & PG_HEAD != 0 && page.order() != order {
            Some(BadPage::CompoundOrder)
        } else if page.order() != order {
            Some(BadPage::Order(order))
        } else {
            None
        };
        match why {
            Some(w) => {
                self.bad_page(page, w);
                Err(Error::BadState)
            }
            None => Ok(()),
        }
    }

    /// `__free_pages()`: drop a reference to a block of `2^order` pages and
    /// free it when that was the last one.
    ///
    /// Double frees, frees with the wrong order, frees of tail, reserved or
    /// slab pages are reported as "BUG: Bad page state" and refused with
    /// [`Error::BadState`]; the page is left as it was.
    #[inline]
    pub fn __free_pages(&self, page: &Page, order: u32) -> Result<()> {
        let mm = self.mem_map();
        // The fast path: a descriptor of this machine, an allocated
        // non-compound block freed with its order, the last reference.
        // Anything else, the reports included, is `free_pages_slow`.
        if let Some(idx) = mm.index_of(page) {
            let f = page.raw_flags();
            const NOT_FAST: u32 = PG_RESERVED | PG_TAIL | PG_BUDDY | PG_PCP | PG_SLAB | PG_HEAD;
            if f & NOT_FAST == 0
                && page.order() == order
                && order <= MAX_PAGE_ORDER
                && page.refcount() > 0
            {
                // put_page_testzero(): an atomic decrement, so that two
                // racing frees of one page cannot both free it.
                match page.ref_dec() {
                    1 => {}
                    n if n > 1 => return Ok(()),
                    _ => return self.free_pages_race(page),
                }
                page.set_order(0);
                let zone = self.node(Page::nid_of(f)).zone(Page::zone_of(f));
                if pcp_allowed_order(order, self.pcp_thp) {
                    self.free_unref_page(zone, idx, order);
                } else {
                    self.free_one_page(zone, idx, order);
                }
                self.wake_free_page_waiters();
                return Ok(());
            }
        }
        self.free_pages_slow(page, order)
    }

    /// A free that lost the race with another free of the same page.
    #[cold]
    #[inline(never)]
    fn free_pages_race(&self, page: &Page) -> Result<()> {
        page.ref_inc();
        self.bad_page(page, BadPage::Free);
        Err(Error::BadState)
    }

    /// `__free_pages()` past its fast path: compound pages, descriptors of
    /// another machine, every bad-input report.
    #[cold]
    #[inline(never)]
    fn free_pages_slow(&self, page: &Page, order: u32) -> Result<()> {
        let mm = self.mem_map();
        let Some(idx) = mm.index_of(page) else {
            report!(
                &self.p,
                Level::Alert,
                "BUG: __free_pages: {:p} is not a page descriptor of this machine",
                page
            );
            return Err(Error::BadAddress);
        };
        if order > MAX_PAGE_ORDER {
            report!(
                &self.p,
                Level::Alert,
                "BUG: __free_pages: order {} > MAX_PAGE_ORDER",
                order
            );
            return Err(Error::InvalidArgument);
        }
        self.free_check(page, order)?;
        match page.ref_dec() {
            1 => {}
            n if n > 1 => return Ok(()),
            _ => {
                // Lost a race with another free of the same page.
                page.ref_inc();
                self.bad_page(page, BadPage::Free);
                return Err(Error::BadState);
            }
        }
        if page.is_head() {
            for t in 1..(1u32 << order) {
                let tail = mm.at(idx + t);
                tail.set_raw_flags(tail.raw_flags() & !PG_TAIL);
                tail.set_head_index(None);
            }
            page.clear_flag(PG_HEAD);
        }
        page.set_order(0);
        let zone = self.page_zone(page);
        if pcp_allowed_order(order, self.pcp_thp) {
            self.free_unref_page(zone, idx, order);
        } else {
            self.free_one_page(zone, idx, order);
        }
        self.wake_free_page_waiters();
        Ok(())
    }

    /// `free_one_page()`: straight back to the buddy lists.
    #[inline(never)]
    fn free_one_page(&self, zone: &Zone, idx: u32, order: u32) {
        let _irq = LocalGuard::new(&self.p);
        let cx = self.buddy_cx(zone);
        let pfn = cx.mm.pfn_of(idx);
        let mt = cx.pb.get(pfn);
        let mut area = zone.lock();
        area.free_one(&cx, pfn, order, mt);
        zone.add_free_locked(1 << order);
        Zone::count_locked(&zone.pgfree, 1 << order);
    }

    /// `free_unref_page()`: onto this CPU's list, spilling `batch` pages
    /// to the buddy lists when the list reaches `high`.
    #[inline]
    fn free_unref_page(&self, zone: &Zone, idx: u32, order: u32) {
        let mm = self.mem_map();
        let mut mt = self.pageblocks().get(mm.pfn_of(idx));
        if mt as usize >= MIGRATE_PCPTYPES {
            if mt == MigrateType::Isolate {
                return self.free_one_page(zone, idx, order);
            }
            mt = MigrateType::Movable;
        }
        // The common case in a leaf section: room on the list, no drain.
        let st = self.p.local_enter_leaf();
        if let Some(pcp) = zone.pcp(st.cpu) {
            if !pcp.drain_requested() && pcp.count() + (1 << order) < pcp.high() {
                // SAFETY: on pcp's CPU inside the leaf section `st`; the
                // borrow ends before the section does.
                let lists = unsafe { pcp.lists_mut() };
                self.pcp_put(pcp, lists, idx, order, mt);
                self.p.local_exit_leaf(st);
                return;
            }
        }
        self.p.local_exit_leaf(st);
        self.free_unref_page_full(zone, idx, order, mt);
    }

    /// [`free_unref_page`](Self::free_unref_page) when the list is to
    /// spill or drain, in a full section.
    #[inline(never)]
    fn free_unref_page_full(&self, zone: &Zone, idx: u32, order: u32, mt: MigrateType) {
        let g = LocalGuard::new(&self.p);
        let Some(pcp) = zone.pcp(g.cpu()) else {
            drop(g);
            return self.free_one_page(zone, idx, order);
        };
        // SAFETY: on pcp's CPU inside section `g`, which outlives `lists`.
        let lists = unsafe { pcp.lists_mut() };
        self.pcp_put(pcp, lists, idx, order, mt);
        if pcp.drain_requested() || pcp.count() >= pcp.high() {
            self.free_unref_page_spill(zone, pcp, lists);
        }
    }

    /// Honour a drain request, or give `batch` pages back from a list that
    /// reached `high`. Runs inside the owner's section.
    #[inline(never)]
    fn free_unref_page_spill(
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
    fn free_pcppages_bulk(
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
            area.free_one(&cx, pfn, order, cx.pb.get(pfn));
            freed += 1 << order;
        }
        zone.add_free_locked(freed as i64);
        drop(area);
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
    fn cpu_has_pcps(&self, cpu: usize) -> bool {
        self.nodes()
            .flat_map(|n| n.zones())
            .any(|z| z.pcp(cpu).is_some_and(|p| p.count() > 0))
    }

    /// Ask CPU `cpu` to drain its lists at its next page allocator call.
    fn request_drain_cpu(&self, cpu: usize) {
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

    /// `__get_free_pages()`: like [`alloc_pages`](Self::alloc_pages) but
    /// returns the direct-map address. `__GFP_HIGHMEM` is ignored, since
    /// high memory has no such address.
    #[track_caller]
    pub fn __get_free_pages(&self, gfp: Gfp, order: u32) -> Result<NonNull<u8>> {
        let page = self.alloc_pages(gfp.without(gfp::__GFP_HIGHMEM), order)?;
        self.page_address(page).ok_or(Error::NoMemory)
    }

    /// `__get_free_page()`.
    #[track_caller]
    pub fn __get_free_page(&self, gfp: Gfp) -> Result<NonNull<u8>> {
        self.__get_free_pages(gfp, 0)
    }

    /// `get_zeroed_page()`.
    #[track_caller]
    pub fn get_zeroed_page(&self, gfp: Gfp) -> Result<NonNull<u8>> {
        self.__get_free_pages(gfp.union(gfp::__GFP_ZERO), 0)
    }

    /// The descriptor behind a page-aligned direct-map address, or a report
    /// and an error naming what is wrong with `addr`.
    fn addr_to_page(&self, what: &str, addr: *const u8) -> Result<&Page> {
        let a = addr as usize;
        if a % PAGE_SIZE != 0 {
            report!(
                &self.p,
                Level::Alert,
                "BUG: {what}: address {a:#x} is not page aligned"
            );
            return Err(Error::InvalidArgument);
        }
        match self.virt_to_page(addr) {
            Some(p) => Ok(p),
            None => {
                report!(
                    &self.p,
                    Level::Alert,
                    "BUG: {what}: address {a:#x} is not memory this allocator manages"
                );
                Err(Error::BadAddress)
            }
        }
    }

    /// `free_pages()`: free by direct-map address; a null address is a no-op.
    #[inline]
    pub fn free_pages(&self, addr: *mut u8, order: u32) -> Result<()> {
        if addr.is_null() {
            return Ok(());
        }
        let page = self.addr_to_page("free_pages", addr)?;
        self.__free_pages(page, order)
    }

    /// `free_page()`.
    pub fn free_page(&self, addr: *mut u8) -> Result<()> {
        self.free_pages(addr, 0)
    }

    /// `split_page()`: turn a non-compound block of `order` into `2^order`
    /// independent order-0 pages, each with its own reference.
    pub fn split_page(&self, page: &Page, order: u32) -> Result<()> {
        let mm = self.mem_map();
        let idx = mm.index_of(page).ok_or(Error::BadAddress)?;
        if page.is_head() || page.refcount() <= 0 || page.order() != order || page.is_tail() {
            report!(
                &self.p,
                Level::Alert,
                "BUG: split_page: pfn {:#x} is not an allocated non-compound block of order {}",
                mm.pfn_of(idx),
                order
            );
            return Err(Error::BadState);
        }
        let links = page.raw_flags();
        for t in 0..(1u32 << order) {
            let p = mm.at(idx + t);
            p.set_raw_flags(links);
            p.set_order(0);
            p.set_refcount(1);
        }
        Ok(())
    }

    /// `alloc_pages_exact()`: `size` bytes of whole pages, the unused tail of
    /// the power-of-two block given back at once.
    #[track_caller]
    pub fn alloc_pages_exact(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        if size == 0 {
            return Err(Error::InvalidArgument);
        }
        let order = get_order(size);
        let addr = self.__get_free_pages(gfp.without(gfp::__GFP_COMP), order)?;
        let page = self.virt_to_page(addr.as_ptr()).ok_or(Error::BadAddress)?;
        self.split_page(page, order)?;
        let used = size.div_ceil(PAGE_SIZE);
        for i in used..(1usize << order) {
            self.free_pages(addr.as_ptr().wrapping_add(i * PAGE_SIZE), 0)?;
        }
        Ok(addr)
    }

    /// `free_pages_exact()`.
    pub fn free_pages_exact(&self, addr: *mut u8, size: usize) -> Result<()> {
        for i in 0..size.div_ceil(PAGE_SIZE) {
            self.free_pages(addr.wrapping_add(i * PAGE_SIZE), 0)?;
        }
        Ok(())
    }

    /// `get_page()`: take another reference to an allocated page.
    pub fn get_page(&self, page: &Page) {
        page.ref_inc();
    }

    /// `compound_head()`: the head of a compound page for a tail page, the
    /// page itself otherwise.
    pub fn compound_head<'a>(&'a self, page: &'a Page) -> &'a Page {
        match page.head_index() {
            Some(h) if page.is_tail() => self.mem_map().at(h),
            _ => page,
        }
    }

    /// `page_count()`.
    pub fn page_count(&self, page: &Page) -> i32 {
        page.refcount()
    }
}

impl<P: Platform> Kmem<P> {
    #[inline]
    pub(crate) fn pageblocks(&self) -> PageblockFlags<'_> {
        // SAFETY: boot initialised `pageblocks_len` AtomicU8 at `pageblocks`
        // in memblock memory that lives as long as `self`.
        PageblockFlags::new(
            unsafe { core::slice::from_raw_parts(self.pageblocks.as_ptr(), self.pageblocks_len) },
            self.mem_map_base_pfn,
        )
    }

    /// `get_pageblock_migratetype()` of the pageblock holding `pfn`.
    pub fn pageblock_migratetype(&self, pfn: u64) -> Option<crate::mmzone::MigrateType> {
        let mm = self.mem_map();
        (pfn >= mm.base_pfn() && pfn < mm.end_pfn()).then(|| self.pageblocks().get(pfn))
    }

    /// Free pages in all zones (buddy lists only).
    pub fn nr_free_pages(&self) -> u64 {
        self.nodes()
            .flat_map(|n| n.zones())
            .map(|z| z.free_pages())
            .sum()
    }

    /// Pages sitting on per-CPU lists in all zones.
    pub fn nr_pcp_pages(&self) -> u64 {
        self.nodes()
            .flat_map(|n| n.zones())
            .map(|z| z.pcp_pages())
            .sum()
    }

    /// Check that every zone's free-page counter matches its buddy lists.
    /// Returns the total of free pages the lists hold.
    pub fn check_free_counts(&self) -> Result<u64> {
        let mut total = 0;
        for z in self.nodes().flat_map(|n| n.zones()) {
            let listed = z.area.lock().free_pages();
            if listed != z.free_pages() {
                report!(
                    &self.p,
                    Level::Err,
                    "kmem: zone {} counts {} free pages but its lists hold {}",
                    z.zone_type().name(),
                    z.free_pages(),
                    listed
                );
                return Err(Error::BadState);
            }
            total += listed;
        }
        Ok(total)
    }
}
