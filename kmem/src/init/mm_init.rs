//! The boot steps that build the memory model and the zones
//! (`mm/mm_init.c`, with the x86 firmware-map step of
//! `arch/x86/kernel/e820.c` and `memblock_free_all()` of `mm/memblock.c`).
//!
//! [`Kmem::boot_with`] calls them in Linux's order; each is named after the
//! Linux function that does the same work, and prints what Linux prints.

use super::{BootParams, Kmem};
use crate::memblock::Memblock;
use crate::memory_map::{MemRegion, RegionKind};
use crate::mmzone::{
    PgData, ZoneType, Zonelist, MAX_NR_ZONE_TYPES, MAX_NUMNODES, NR_CPUS, ZONELIST_FALLBACK,
    ZONELIST_NOFALLBACK,
};
use crate::page::{Page, PG_RESERVED};
use crate::platform::{DirectMap, Level, Platform};
use crate::{report, Error, Result, MAX_PAGE_ORDER, PAGEBLOCK_ORDER, PAGE_SHIFT, PAGE_SIZE};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Pages in a max-order block (`MAX_ORDER_NR_PAGES`).
pub const MAX_ORDER_NR_PAGES: u64 = 1 << MAX_PAGE_ORDER;

/// `PAGES_PER_SECTION` on x86_64 (`SECTION_SIZE_BITS` 27: 128 MiB), the
/// unit deferred struct page init keeps at boot and grows a zone by.
pub const PAGES_PER_SECTION: u64 = 1 << (27 - PAGE_SHIFT);

pub(super) fn zone_layout(params: &BootParams) -> [bool; MAX_NR_ZONE_TYPES] {
    let hm = params.lowmem_limit.is_some();
    [true, !hm, true, hm, true, true]
}

fn fmt_mem(f: &mut core::fmt::Formatter<'_>, s: u64, e: u64) -> core::fmt::Result {
    write!(f, "[mem {:#018x}-{:#018x}]", s, e - 1)
}

struct MemRange(u64, u64);
impl core::fmt::Display for MemRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        fmt_mem(f, self.0, self.1)
    }
}

/// The CPU count the platform reports, checked against `NR_CPUS`.
pub(super) fn check_nr_cpus<P: Platform>(p: &P) -> Result<usize> {
    let nr_cpus = p.nr_cpu_ids();
    if nr_cpus == 0 || nr_cpus > NR_CPUS {
        report!(p, Level::Err, "kmem: {nr_cpus} CPUs: must be 1..={NR_CPUS}");
        return Err(Error::InvalidArgument);
    }
    Ok(nr_cpus)
}

/// `e820__memblock_setup()`: print the firmware map and give its usable
/// ranges, trimmed to whole pages, to memblock on their nodes. Returns the
/// number of nodes.
pub(super) fn e820_memblock_setup<P: Platform>(
    p: &P,
    map: &[MemRegion],
    mb: &mut Memblock,
) -> Result<usize> {
    report!(p, Level::Info, "BIOS-provided physical RAM map:");
    let mut sorted = [None; 128];
    for (i, r) in map.iter().take(128).enumerate() {
        sorted[i] = Some(*r);
    }
    sorted[..map.len().min(128)].sort_unstable_by_key(|r| r.map(|r| r.base));
    for r in sorted.iter().flatten() {
        report!(p, Level::Info, "BIOS-e820: {}", r);
    }
    let mut max_node = 0usize;
    for r in map.iter().filter(|r| r.kind == RegionKind::Usable) {
        let s = r.base.next_multiple_of(PAGE_SIZE as u64);
        let e = r.end() & !(PAGE_SIZE as u64 - 1);
        if usize::from(r.node) >= MAX_NUMNODES {
            report!(
                p,
                Level::Err,
                "e820: {} is on node {} but MAX_NUMNODES is {}",
                r,
                r.node,
                MAX_NUMNODES
            );
            return Err(Error::InvalidArgument);
        }
        if e > s {
            mb.add_node(p, s, e - s, r.node)?;
            max_node = max_node.max(usize::from(r.node));
        }
    }
    if mb.phys_mem_size() == 0 {
        report!(p, Level::Err, "kmem: the memory map has no usable RAM");
        return Err(Error::NoMemory);
    }
    let nr_nodes = max_node + 1;
    for n in 0..nr_nodes {
        if !mb
            .memory()
            .regions()
            .iter()
            .any(|r| usize::from(r.nid) == n)
        {
            report!(
                p,
                Level::Err,
                "kmem: node {n} has no memory (memoryless nodes are not supported)"
            );
            return Err(Error::InvalidArgument);
        }
    }
    Ok(nr_nodes)
}

/// The zone boundaries of the machine (`arch_zone_{lowest,highest}_possible_pfn`
/// and `zone_movable_pfn`), as [`zone_sizes_init`] computes them.
pub(super) struct ZoneLimits {
    pub(super) layout: [bool; MAX_NR_ZONE_TYPES],
    zlow: [u64; MAX_NR_ZONE_TYPES],
    zhigh: [u64; MAX_NR_ZONE_TYPES],
    min_pfn: u64,
    max_pfn: u64,
    movable_pfn: [u64; MAX_NUMNODES],
}

/// `zone_sizes_init()` and `find_zone_movable_pfns_for_nodes()`: the zone
/// limits from the arch's (16 MiB, 4 GiB or the lowmem limit) and
/// `movablecore=`, printed as "Zone ranges", "Movable zone start for each
/// node" and "Early memory node ranges".
pub(super) fn zone_sizes_init<P: Platform>(
    p: &P,
    mb: &Memblock,
    params: &BootParams,
    nr_nodes: usize,
) -> ZoneLimits {
    // Zone limits (arch_zone_{lowest,highest}_possible_pfn).
    let layout = zone_layout(params);
    let min_pfn = mb.start_of_dram().div_ceil(PAGE_SIZE as u64);
    let max_pfn = mb.end_of_dram() >> PAGE_SHIFT;
    let mut zhigh = [0u64; MAX_NR_ZONE_TYPES];
    zhigh[ZoneType::Dma as usize] = (16u64 << 20 >> PAGE_SHIFT).min(max_pfn);
    zhigh[ZoneType::Dma32 as usize] = if layout[1] {
        (4u64 << 30 >> PAGE_SHIFT).min(max_pfn)
    } else {
        0
    };
    zhigh[ZoneType::Normal as usize] = match params.lowmem_limit {
        Some(l) => (l >> PAGE_SHIFT).min(max_pfn),
        None => max_pfn,
    };
    zhigh[ZoneType::HighMem as usize] = if layout[3] { max_pfn } else { 0 };
    let mut zlow = [0u64; MAX_NR_ZONE_TYPES];
    let mut prev = min_pfn;
    for t in [
        ZoneType::Dma,
        ZoneType::Dma32,
        ZoneType::Normal,
        ZoneType::HighMem,
    ] {
        let i = t as usize;
        if !layout[i] {
            continue;
        }
        zlow[i] = prev;
        zhigh[i] = zhigh[i].max(prev);
        prev = zhigh[i];
    }
    report!(p, Level::Info, "Zone ranges:");
    for t in [
        ZoneType::Dma,
        ZoneType::Dma32,
        ZoneType::Normal,
        ZoneType::HighMem,
        ZoneType::Device,
    ] {
        let i = t as usize;
        if !layout[i] {
            continue;
        }
        if zhigh[i] > zlow[i] {
            report!(
                p,
                Level::Info,
                "  {:<8} {}",
                t.name(),
                MemRange(zlow[i] << PAGE_SHIFT, zhigh[i] << PAGE_SHIFT)
            );
        } else {
            report!(p, Level::Info, "  {:<8} empty", t.name());
        }
    }

    // ZONE_MOVABLE (find_zone_movable_pfns_for_nodes()): the top
    // `movablecore` bytes, taken from the highest memory down (Linux
    // spreads kernelcore evenly over nodes; with one node the result is
    // the same), and only from the highest populated zone
    // (find_usable_zone_for_movable(), usable_startpfn): DMA and DMA32
    // below it never become movable. A request that covers all memory
    // leaves no kernelcore, and Linux then makes no movable zone at all.
    let mut movable_pfn = [0u64; MAX_NUMNODES];
    report!(p, Level::Info, "Movable zone start for each node");
    let total: u64 = mb
        .memory()
        .regions()
        .iter()
        .map(|r| (r.end() >> PAGE_SHIFT).saturating_sub(r.base.div_ceil(PAGE_SIZE as u64)))
        .sum();
    let required = (params.movablecore >> PAGE_SHIFT)
        .next_multiple_of(MAX_ORDER_NR_PAGES)
        .min(total);
    if required > 0 && required < total {
        let usable_start = [
            ZoneType::HighMem,
            ZoneType::Normal,
            ZoneType::Dma32,
            ZoneType::Dma,
        ]
        .into_iter()
        .map(|t| t as usize)
        .find(|&i| layout[i] && zhigh[i] > zlow[i])
        .map_or(min_pfn, |i| zlow[i]);
        let mut need = required;
        for r in mb.memory().regions().iter().rev() {
            if need == 0 {
                break;
            }
            let (s, e) = (
                (r.base >> PAGE_SHIFT).max(usable_start),
                r.end() >> PAGE_SHIFT,
            );
            if e <= s {
                break;
            }
            let take = need.min(e - s);
            // Linux rounds the movable start up to a max-order block and
            // drops a movable zone that would start at the node's end.
            let start = (e - take).next_multiple_of(MAX_ORDER_NR_PAGES);
            need -= need.min(e - s.max(e - take));
            if start < e {
                movable_pfn[usize::from(r.nid)] = start;
            }
        }
        for (n, &m) in movable_pfn.iter().enumerate().take(nr_nodes) {
            if m != 0 {
                report!(p, Level::Info, "  Node {}: {:#018x}", n, m << PAGE_SHIFT);
            }
        }
    }
    report!(p, Level::Info, "Early memory node ranges");
    for r in mb.memory().regions() {
        report!(
            p,
            Level::Info,
            "  node {:>3}: {}",
            r.nid,
            MemRange(r.base, r.end())
        );
    }
    ZoneLimits {
        layout,
        zlow,
        zhigh,
        min_pfn,
        max_pfn,
        movable_pfn,
    }
}

/// What [`free_area_init`] allocated from memblock.
pub(super) struct FreeAreaInit {
    pub(super) mem_map: NonNull<Page>,
    /// The pfns of the pages that hold `mem_map` itself.
    pub(super) mem_map_pfns: core::ops::Range<u64>,
    pub(super) nr_pages: usize,
    pub(super) base_pfn: u64,
    pub(super) pageblocks: NonNull<AtomicU8>,
    pub(super) nr_pageblocks: usize,
    pub(super) nodes: [Option<NonNull<PgData>>; MAX_NUMNODES],
    /// `cpu_to_node()`, `nr_cpus` entries (Linux's `x86_cpu_to_node_map`,
    /// sized at boot rather than by `NR_CPUS`).
    pub(super) cpu_to_node: NonNull<u8>,
}

/// `free_area_init()`: allocate from memblock the `struct page` array
/// (`alloc_node_mem_map()`), the pageblock migratetype array, one
/// `pg_data_t` per node on that node, and each populated zone's per-CPU
/// page lists; size every zone (`calculate_node_totalpages()`).
pub(super) fn free_area_init<P: Platform>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    zl: &ZoneLimits,
    nr_cpus: usize,
    nr_nodes: usize,
) -> Result<FreeAreaInit> {
    let ZoneLimits {
        layout,
        zlow,
        zhigh,
        min_pfn,
        max_pfn,
        movable_pfn,
    } = zl;
    let (layout, zlow, zhigh, min_pfn, max_pfn) = (*layout, *zlow, *zhigh, *min_pfn, *max_pfn);
    // buddy pfn arithmetic never leaves it.
    let base_pfn = min_pfn & !(MAX_ORDER_NR_PAGES - 1);
    let end_pfn = max_pfn.next_multiple_of(MAX_ORDER_NR_PAGES);
    let nr_pages = (end_pfn - base_pfn) as usize;
    // Page lists link descriptors by 32-bit index, `NIL` the end.
    if nr_pages >= crate::page::NIL as usize {
        report!(
            p,
            Level::Err,
            "kmem: memory spans {nr_pages} page frames; kmem indexes at most {} (16T): give less memory",
            crate::page::NIL - 1
        );
        return Err(Error::InvalidArgument);
    }
    let zeroed = p.memory_is_zeroed();
    let (mem_map, mem_map_pfns) = boot_alloc_raw::<P, Page>(p, mb, dm, nr_pages, zeroed)?;
    let nr_pb = ((end_pfn - base_pfn) >> PAGEBLOCK_ORDER) as usize;
    let pageblocks = boot_alloc(p, mb, dm, 0, nr_pb, |_| {
        AtomicU8::new(crate::mmzone::MigrateType::Movable as u8)
    })?;

    // Nodes and zones.
    // CPUs are spread over the nodes in blocks, as firmware numbers them.
    let cpu_to_node_ptr = boot_alloc(p, mb, dm, 0, nr_cpus, |cpu| {
        (cpu * nr_nodes / nr_cpus) as u8
    })?;
    // SAFETY: just allocated from memblock and initialised, `nr_cpus`
    // entries; memblock never gives the memory back.
    let cpu_to_node = unsafe { core::slice::from_raw_parts(cpu_to_node_ptr.as_ptr(), nr_cpus) };
    let mut nodes: [Option<NonNull<PgData>>; MAX_NUMNODES] = [None; MAX_NUMNODES];
    for (nid, slot) in nodes.iter_mut().enumerate().take(nr_nodes) {
        let mut pg = boot_alloc(p, mb, dm, nid as u8, 1, |_| PgData::new(nid))?;
        // SAFETY: just allocated and initialised; no other reference yet.
        let pgdat = unsafe { pg.as_mut() };
        let regions = mb
            .memory()
            .regions()
            .iter()
            .filter(|r| usize::from(r.nid) == nid);
        let (mut ns, mut ne) = (u64::MAX, 0);
        for r in regions.clone() {
            ns = ns.min(r.base.div_ceil(PAGE_SIZE as u64));
            ne = ne.max(r.end() >> PAGE_SHIFT);
        }
        pgdat.node_start_pfn = ns;
        pgdat.node_spanned_pages = ne - ns;
        pgdat.nr_cpus = cpu_to_node
            .iter()
            .filter(|&&c| usize::from(c) == nid)
            .count();
        report!(
            p,
            Level::Info,
            "Initmem setup node {} {}",
            nid,
            MemRange(ns << PAGE_SHIFT, ne << PAGE_SHIFT)
        );
        let mut top_zone = ZoneType::Normal as usize;
        for i in 0..MAX_NR_ZONE_TYPES {
            if layout[i]
                && i != ZoneType::Movable as usize
                && i != ZoneType::Device as usize
                && zhigh[i] > zlow[i]
                && ne > zlow[i]
                && ns < zhigh[i]
            {
                top_zone = i;
            }
        }
        for i in 0..MAX_NR_ZONE_TYPES {
            let z = &mut pgdat.zones[i];
            z.in_layout = layout[i];
            if !layout[i] || i == ZoneType::Device as usize {
                continue;
            }
            let (mut zs, mut ze) = if i == ZoneType::Movable as usize {
                (0, 0)
            } else {
                (ns.clamp(zlow[i], zhigh[i]), ne.clamp(zlow[i], zhigh[i]))
            };
            let m = movable_pfn[nid];
            if m != 0 {
                if i == ZoneType::Movable as usize {
                    zs = m;
                    ze = ne.min(zhigh[top_zone]);
                } else if zs < m && ze > m {
                    ze = m;
                } else if zs >= m {
                    zs = ze;
                }
            }
            if ze <= zs {
                continue;
            }
            z.zone_start_pfn = zs;
            z.spanned_pages = ze - zs;
            z.present_pages = regions
                .clone()
                .map(|r| {
                    (r.end() >> PAGE_SHIFT)
                        .min(ze)
                        .saturating_sub(r.base.div_ceil(PAGE_SIZE as u64).max(zs))
                })
                .sum();
            let holes = z.spanned_pages - z.present_pages;
            if holes > 0 {
                report!(
                    p,
                    Level::Info,
                    "On node {}, zone {}: {} pages in unavailable ranges",
                    nid,
                    ZoneType::ALL[i].name(),
                    holes
                );
            }
            pgdat.node_present_pages += z.present_pages;
        }
        *slot = Some(pg);
    }
    Ok(FreeAreaInit {
        mem_map_pfns,
        mem_map,
        nr_pages,
        base_pfn,
        pageblocks,
        nr_pageblocks: nr_pb,
        nodes,
        cpu_to_node: cpu_to_node_ptr,
    })
}

impl<P: Platform> Kmem<P> {
    /// `build_all_zonelists()`: for each node, its zones highest first, then
    /// the other nodes' by distance (10 local, 20 remote: nearest is the
    /// next node id, wrapping).
    pub(super) fn build_all_zonelists(&mut self) {
        for nid in 0..self.nr_nodes {
            let mut fb = Zonelist::new();
            let mut nf = Zonelist::new();
            for k in 0..self.nr_nodes {
                let other = (nid + k) % self.nr_nodes;
                for zi in (0..MAX_NR_ZONE_TYPES).rev() {
                    if self.node(other).zone(zi).is_populated() {
                        fb.push(other, zi);
                        if other == nid {
                            nf.push(other, zi);
                        }
                    }
                }
            }
            let mut pg = self.nodes[nid].expect("node allocated at boot");
            // SAFETY: boot holds the only reference to the machine (`&mut self`).
            let pgdat = unsafe { pg.as_mut() };
            pgdat.zonelists[ZONELIST_FALLBACK] = fb;
            pgdat.zonelists[ZONELIST_NOFALLBACK] = nf;
        }
    }

    /// `reserve_bootmem_region()`: `PG_reserved` on every page memblock
    /// kept (partial pages included), with a reference that is never
    /// dropped, and its zone and node links (`init_reserved_page()`), so
    /// that `page_zone()` of a reserved page (a node descriptor, a per-CPU
    /// unit) names its own node. The node is the memory region's, as
    /// `memmap_init_reserved_pages()` takes it (node spans may interleave);
    /// a page in no region (a hole) gets the first zone spanning it, as
    /// `init_unavailable_range()` gives holes their zone.
    ///
    /// Where kmem departs from Linux: with deferred struct page init, the
    /// pages that hold the `struct page` array itself are left as the
    /// deferred pages are, uninitialised (all zero: no flags, no
    /// reference), for good. They are a hundredth of memory, and their
    /// descriptors a hundredth of that, which boot would otherwise write
    /// in full: about 100 KiB and 40 µs a GiB, the whole cost of a large
    /// machine whose memory joins as it is needed (kmem-malloc sizes its
    /// machine by the host's memory). Nothing allocates or frees these
    /// pages, and a free of one is refused and reported as a free of any
    /// page not yet initialised is (the descriptor is neither a slab nor a
    /// compound head with a reference). `mem_map_pfns` are the pages that
    /// hold the array.
    pub(super) fn reserve_bootmem_regions(
        &self,
        mb: &Memblock,
        mem_map_pfns: core::ops::Range<u64>,
    ) {
        use crate::mmzone::Zone;
        let mm = self.mem_map();
        let own = if self.deferred_init {
            mem_map_pfns
        } else {
            0..0
        };
        let mut region: Option<crate::memblock::MemblockRegion> = None;
        let mut zone: Option<&Zone> = None;
        for r in mb.reserved().regions() {
            let (s, e) = (r.base >> PAGE_SHIFT, r.end().div_ceil(PAGE_SIZE as u64));
            // The region's pfns below and above the array's own.
            for pfn in (s..e.min(own.start)).chain(s.max(own.end)..e) {
                let Some(pg) = mm.pfn_to_page(pfn) else {
                    continue;
                };
                let pa = pfn << PAGE_SHIFT;
                if !region.is_some_and(|m| (m.base..m.end()).contains(&pa)) {
                    region = mb.memory().overlapping(pa, pa + 1);
                }
                let nid = region.map(|m| usize::from(m.nid));
                let spans = |z: &Zone| {
                    nid.is_none_or(|n| z.node() == n)
                        && z.is_populated()
                        && (z.zone_start_pfn()..z.zone_end_pfn()).contains(&pfn)
                };
                if !zone.is_some_and(spans) {
                    zone = self.nodes().flat_map(|n| n.zones()).find(|z| spans(z));
                }
                let links = zone.map_or(0, |z| Page::links(z.node(), z.zone_type() as usize));
                pg.set_raw_flags(pg.raw_flags() | links | PG_RESERVED);
                pg.set_refcount(1);
            }
        }
    }

    /// `memblock_free_all()`: hand every range memblock did not reserve to
    /// the buddy allocator, zone by zone, in max-order chunks; memblock
    /// retires. Returns the pages released (`totalram_pages`).
    pub(super) fn memblock_free_all(&self, mb: &mut Memblock) -> u64 {
        let mut freed = 0u64;
        mb.for_each_free_range(None, |s, e, nid| {
            let (s, e) = (s.div_ceil(PAGE_SIZE as u64), e >> PAGE_SHIFT);
            for z in self.node(usize::from(nid)).zones() {
                let (zs, ze) = (s.max(z.zone_start_pfn()), e.min(z.zone_end_pfn()));
                if zs < ze {
                    freed += self.free_range_to_zone(z, zs, ze);
                }
            }
            true
        });
        mb.retire();
        self.totalram_pages.store(freed, Relaxed);
        report!(
            &self.p,
            Level::Info,
            "memblock_free_all: released {} pages ({}K) to the buddy allocator",
            freed,
            freed << (PAGE_SHIFT - 10)
        );
        freed
    }

    /// `__free_pages_core()` over a pfn range of one zone, in naturally
    /// aligned chunks of up to `MAX_PAGE_ORDER`. Returns the pages freed.
    /// With deferred struct page init, the zone's first range of more than
    /// two sections keeps one section and defers the max-order blocks
    /// after it (`defer_init()`).
    fn free_range_to_zone(&self, zone: &crate::mmzone::Zone, s: u64, e: u64) -> u64 {
        const BLOCK: u64 = 1 << MAX_PAGE_ORDER;
        if self.deferred_init && e - s > 2 * PAGES_PER_SECTION && zone.lock().deferred.1 == 0 {
            let mid = (s + PAGES_PER_SECTION).next_multiple_of(BLOCK);
            let tail = e & !(BLOCK - 1);
            if mid < tail {
                zone.lock().deferred = (mid, tail);
                self.p
                    .memory_deferred(mid << PAGE_SHIFT, tail << PAGE_SHIFT, false);
                return self.free_pfns_to_zone(zone, s, mid)
                    + self.free_pfns_to_zone(zone, tail, e);
            }
        }
        self.free_pfns_to_zone(zone, s, e)
    }

    /// `deferred_grow_zone()`: an allocation of `order` found `zone`
    /// short; add a section's worth (at least the order) of its deferred
    /// max-order blocks to the lists. Returns whether any were added.
    pub(crate) fn deferred_grow_zone(&self, zone: &crate::mmzone::Zone, order: u32) -> bool {
        if !self.deferred_init {
            return false;
        }
        let (s, e) = {
            let _irq = crate::platform::LocalGuard::new(&self.p);
            let mut area = zone.lock();
            let (s, e) = area.deferred;
            if s >= e {
                return false;
            }
            let n = PAGES_PER_SECTION.max(1 << order).min(e - s);
            area.deferred.0 = s + n;
            (s, s + n)
        };
        // The range is ours now (taken off `deferred` above): tell the
        // platform before its pages can be allocated and written.
        self.p
            .memory_deferred(s << PAGE_SHIFT, e << PAGE_SHIFT, true);
        let _irq = crate::platform::LocalGuard::new(&self.p);
        let n = self.free_pfns_to_zone(zone, s, e);
        self.totalram_pages.fetch_add(n, Relaxed);
        true
    }

    /// Free the pfns `[s, e)` of `zone` to its lists and count them.
    fn free_pfns_to_zone(&self, zone: &crate::mmzone::Zone, mut s: u64, e: u64) -> u64 {
        if s >= e {
            return 0;
        }
        let n = e - s;
        let cx_mm = self.mem_map();
        let pb = self.pageblocks();
        let links = Page::links(zone.node(), zone.zone_type() as usize);
        let cx = crate::page_alloc::buddy::BuddyCx {
            mm: cx_mm,
            pb,
            links,
            zone_start: zone.zone_start_pfn(),
            zone_end: zone.zone_end_pfn(),
        };
        let mut area = zone.lock();
        while s < e {
            let mut order = (s.trailing_zeros()).min(MAX_PAGE_ORDER);
            while s + (1u64 << order) > e {
                order -= 1;
            }
            area.free_one(&cx, s, order, pb.get(s));
            s += 1u64 << order;
        }
        zone.add_free_locked(n as i64);
        drop(area);
        zone.managed_pages.fetch_add(n, Relaxed);
        n
    }
}

/// Allocate `n` values of `T` from memblock on node `nid` inside the direct
/// map, write `init(i)` into each, and return the first.
pub(super) fn boot_alloc<P: Platform, T>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    nid: u8,
    n: usize,
    mut init: impl FnMut(usize) -> T,
) -> Result<NonNull<T>> {
    let size = (core::mem::size_of::<T>() * n).max(1) as u64;
    let align = core::mem::align_of::<T>().max(64) as u64;
    let pa = mb.phys_alloc_try_nid(p, size, align, nid)?;
    let va = dm.va(pa).ok_or(Error::NoMemory)? as *mut T;
    for i in 0..n {
        // SAFETY: memblock just reserved `size` bytes at `pa`, aligned for
        // T, inside the direct map (current limit), so `va..va+size` is
        // valid, unused memory owned by the machine from now on.
        unsafe { va.add(i).write(init(i)) };
    }
    Ok(NonNull::new(va).expect("direct map address is not null"))
}

/// Allocate `n` values of `T` from memblock without running an
/// initialiser, zeroing them unless the platform's memory is known to be
/// zero already. `T` must be valid when all-zero. Whole pages, so that the
/// answer's second half, the pfns of those pages, hold nothing else.
fn boot_alloc_raw<P: Platform, T>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    n: usize,
    zeroed: bool,
) -> Result<(NonNull<T>, core::ops::Range<u64>)> {
    let size = (core::mem::size_of::<T>() * n).next_multiple_of(PAGE_SIZE) as u64;
    let pa = mb.phys_alloc_range(p, size, PAGE_SIZE as u64, 0, dm.end)?;
    let va = dm.va(pa).ok_or(Error::NoMemory)? as *mut T;
    if !zeroed {
        // SAFETY: memblock just reserved `size` bytes at `pa` inside the
        // direct map; nobody else uses them.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, size as usize) };
    }
    let pfns = (pa >> PAGE_SHIFT)..((pa + size) >> PAGE_SHIFT);
    Ok((
        NonNull::new(va).expect("direct map address is not null"),
        pfns,
    ))
}
