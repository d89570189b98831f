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
//!
//! The files, by verb, as `mm/page_alloc.c` reads (the zone and node
//! structures themselves are in [`crate::mmzone`]):
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | `ALLOC_*` flags, the watermark test on numbers, zone lookup, counters |
//! | `alloc.rs` | `alloc_pages()`, the fast path, `__alloc_pages()` and its slow path |
//! | `free.rs` | `__free_pages()`, the free checks and bad-page reports |
//! | [`pcp`] | the per-CPU lists: take, put, refill, spill, drain |
//! | [`buddy`] | the buddy free area: merge, split, fallback |
//! | `get_free_pages.rs` | the address-based helpers (`__get_free_pages()`...) |
//! | [`sysctl`], [`watermark`] | the vm sysctls and the formulas they feed |

mod alloc;
pub mod buddy;
pub mod fail_page_alloc;
mod free;
mod get_free_pages;
pub mod page_reporting;
pub mod pcp;
pub mod sysctl;
pub mod watermark;

use crate::gfp::{self, Gfp};
use crate::mmzone::{PgData, Zone, ZoneType, MIGRATE_PCPTYPES, WMARK_HIGH, WMARK_LOW, WMARK_MIN};
use crate::page::Page;
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result, PAGE_SHIFT, PAGE_SIZE};
use buddy::{BuddyCx, PageblockFlags};

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
        self.cpu_to_node(self.p.smp_processor_id())
    }

    /// `cpu_to_node()`.
    pub fn cpu_to_node(&self, cpu: usize) -> usize {
        // SAFETY: the table has `nr_cpus` (>= 1) entries, allocated from
        // memblock at boot and never freed; the index is clamped below it.
        usize::from(unsafe { *self.cpu_to_node.as_ptr().add(cpu.min(self.nr_cpus - 1)) })
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
            let listed = {
                let _irq = crate::platform::IrqSave::new(&self.p);
                z.area.lock().free_pages()
            };
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
