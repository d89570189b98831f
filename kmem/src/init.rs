//! The machine instance and its boot sequence (`mm_core_init()` and friends).
//!
//! [`Kmem::boot`] takes a platform and a firmware memory map and does what
//! Linux does between `setup_arch()` and `mem_init()`:
//!
//! 1. print the memory map and feed its usable ranges (trimmed to whole
//!    pages) to memblock; reserve the first `reserve_low` bytes, as x86
//!    reserves the first 1 MiB;
//! 2. size the zones from the arch limits (16 MiB, 4 GiB or the lowmem
//!    limit) and `movablecore=`, and print "Zone ranges" and "Early memory
//!    node ranges";
//! 3. allocate from memblock the `struct page` array, the pageblock
//!    migratetype array, one `pg_data_t` per node (on that node) and each
//!    populated zone's per-CPU page lists; mark reserved pages `PG_reserved`;
//! 4. build the zonelists;
//! 5. `memblock_free_all()`: hand every unreserved range to the buddy
//!    allocator in max-order chunks; memblock retires;
//! 6. compute `min_free_kbytes` (and raise it as khugepaged does when
//!    transparent huge pages are on), the watermarks, `lowmem_reserve` and
//!    the per-CPU list sizes.
//!
//! Nothing is taken from a host heap: after boot the core's state lives in
//! the simulated physical memory, as in a kernel.

use crate::memblock::Memblock;
use crate::memory_map::{self, MemRegion, RegionKind};
use crate::mmzone::PerCpuPages;
use crate::mmzone::{
    PgData, ZoneType, MAX_NR_ZONE_TYPES, MAX_NUMNODES, NR_CPUS, ZONELIST_FALLBACK,
    ZONELIST_NOFALLBACK,
};
use crate::page::{MemMap, Page, PG_RESERVED};
use crate::page_alloc::buddy::PageblockFlags;
use crate::page_alloc::watermark::{self, VmSysctl, ZoneInput};
use crate::platform::{DirectMap, Level, Platform};
use crate::{report, Error, Result, MAX_PAGE_ORDER, PAGEBLOCK_ORDER, PAGE_SHIFT, PAGE_SIZE};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

/// Pages in a max-order block (`MAX_ORDER_NR_PAGES`).
pub const MAX_ORDER_NR_PAGES: u64 = 1 << MAX_PAGE_ORDER;
/// Slots in the kmap area (`LAST_PKMAP` on x86 PAE is 512; 1024 without).
pub const LAST_PKMAP: usize = 1024;

/// Boot-time choices (Linux's command line and Kconfig, where they matter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootParams {
    /// Physical addresses at and above this are high memory (a 32-bit style
    /// machine with zones DMA, Normal, HighMem). `None`: x86_64 layout with
    /// DMA, DMA32 and Normal.
    pub lowmem_limit: Option<u64>,
    /// Bytes reserved from physical address 0 (x86 reserves the first 1 MiB).
    pub reserve_low: u64,
    /// `movablecore=`: bytes at the top of memory that form ZONE_MOVABLE.
    pub movablecore: u64,
    /// `vm.min_free_kbytes` set by the user; `None` computes it as Linux does.
    pub min_free_kbytes: Option<u64>,
    /// Transparent huge pages enabled: khugepaged raises `min_free_kbytes`
    /// to keep pageblocks free (`set_recommended_min_free_kbytes`), and the
    /// per-CPU lists keep pageblock-order blocks too (`NR_PCP_THP`, which
    /// Linux has with `CONFIG_TRANSPARENT_HUGEPAGE`). On, as in distribution
    /// kernels (the reference machine shows its effect). Off models a
    /// kernel without THP: order-9 blocks go to and from the buddy lists.
    pub transparent_hugepage: bool,
    /// `vm.watermark_scale_factor`.
    pub watermark_scale_factor: u64,
    /// `vm.lowmem_reserve_ratio`, indexed by [`ZoneType`].
    pub lowmem_reserve_ratio: [u64; MAX_NR_ZONE_TYPES],
    /// `vm.percpu_pagelist_high_fraction`.
    pub percpu_pagelist_high_fraction: u64,
    /// Print the memblock tables (`memblock=debug`).
    pub memblock_debug: bool,
    /// Slab allocator options (`slab_nomerge`, `slab_debug=`, hardening).
    pub slab: crate::slab::SlabParams,
    /// `CONFIG_DEBUG_ATOMIC_SLEEP`: check every allocation that may block
    /// for atomic context ([`crate::sched`]), not only those that reach the
    /// page allocator's slow path. Off, as in production kernels.
    pub debug_atomic_sleep: bool,
    /// `failslab=<interval>,<probability>,<space>,<times>`: the text after
    /// the `=`, parsed (and reported when malformed) at the start of boot
    /// (see [`crate::fault_inject`]).
    pub failslab: Option<crate::fault_inject::FaultBootArg>,
    /// `fail_page_alloc=<interval>,<probability>,<space>,<times>`, as
    /// [`failslab`](Self::failslab).
    pub fail_page_alloc: Option<crate::fault_inject::FaultBootArg>,
}

impl Default for BootParams {
    fn default() -> Self {
        let d = VmSysctl::linux_defaults();
        BootParams {
            lowmem_limit: None,
            reserve_low: 1 << 20,
            movablecore: 0,
            min_free_kbytes: None,
            transparent_hugepage: true,
            watermark_scale_factor: d.watermark_scale_factor,
            lowmem_reserve_ratio: d.lowmem_reserve_ratio,
            percpu_pagelist_high_fraction: 0,
            memblock_debug: false,
            slab: crate::slab::SlabParams::default(),
            debug_atomic_sleep: false,
            failslab: None,
            fail_page_alloc: None,
        }
    }
}

struct Kmap {
    base: usize,
    slots: spin::Mutex<[u64; LAST_PKMAP / 64]>,
}

/// A booted machine: the page allocator and, in later issues, the slab,
/// vmalloc, mempool and per-CPU allocators, over one [`Platform`].
pub struct Kmem<P: Platform> {
    pub(crate) p: P,
    pub(crate) dm: DirectMap,
    mem_map: NonNull<Page>,
    mem_map_len: usize,
    mem_map_base_pfn: u64,
    /// The direct-map address of `mem_map`'s first page (wrapping): an
    /// address's descriptor index is `(addr - mem_map_va) >> PAGE_SHIFT`,
    /// one subtraction on the free path.
    pub(crate) mem_map_va: usize,
    pageblocks: NonNull<AtomicU8>,
    pageblocks_len: usize,
    nodes: [Option<NonNull<PgData>>; MAX_NUMNODES],
    pub(crate) nr_nodes: usize,
    pub(crate) nr_cpus: usize,
    pub(crate) cpu_to_node: [u8; NR_CPUS],
    /// Pageblock-order blocks have per-CPU lists (THP configured).
    pub(crate) pcp_thp: bool,
    layout: [bool; MAX_NR_ZONE_TYPES],
    sysctl: spin::Mutex<VmSysctl>,
    memblock: Memblock,
    kmap: Option<Kmap>,
    totalram_pages: AtomicU64,
    boot_ns: u64,
    pub(crate) slab: crate::slab::cache::SlabState,
    pub(crate) reclaim: crate::vmscan::Reclaim,
    pub(crate) debug_atomic_sleep: bool,
    pub(crate) fault: crate::fault_inject::FaultInject,
}

// SAFETY: the raw pointers lead to memblock memory owned by the platform for
// the machine's life; all shared state behind them is atomic, spin-locked,
// or per-CPU data governed by the Platform's CPU-local-section contract.
unsafe impl<P: Platform + Sync> Sync for Kmem<P> {}
// SAFETY: as above; moving the machine moves ownership of that memory with it.
unsafe impl<P: Platform + Send> Send for Kmem<P> {}

fn zone_layout(params: &BootParams) -> [bool; MAX_NR_ZONE_TYPES] {
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

/// Allocate `n` values of `T` from memblock on node `nid` inside the direct
/// map, write `init(i)` into each, and return the first.
fn boot_alloc<P: Platform, T>(
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

impl<P: Platform> Kmem<P> {
    /// Boot a machine on `platform` with the firmware memory map `map`.
    ///
    /// Prints the boot log through [`Platform::report`] at `Level::Info`
    /// (memory map, zone ranges, node ranges, the memblock handoff) and
    /// fails with a report on a bad map (overlapping ranges, no usable
    /// memory) or when metadata does not fit.
    pub fn boot(platform: P, map: &[MemRegion], params: &BootParams) -> Result<Self> {
        Self::boot_with(platform, map, params, |_| Ok(()))
    }

    /// [`boot`](Self::boot), running `early` while only memblock exists:
    /// after the memory map is registered and the low memory reserved,
    /// before the page allocator is built. This is where Linux's arch setup
    /// code makes its early allocations; what `early` allocates stays
    /// reserved for the machine's life. An error from `early` aborts boot.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 8 << 20];
    /// use kmem::{BootParams, Kmem, memory_map::MemRegion};
    /// let p = kmem::arena::ArenaPlatform::new(&mut mem, 1);
    /// let (start, end) = p.usable_range();
    /// let map = [MemRegion::usable(start, end - start)];
    /// let mut table = None;
    /// let params = BootParams { reserve_low: 0, ..BootParams::default() };
    /// let k = Kmem::boot_with(p, &map, &params, |early| {
    ///     table = Some(early.alloc_bootmem_pages(2 * 4096)?);
    ///     Ok(())
    /// })
    /// .unwrap();
    /// let page = k.virt_to_page(table.unwrap().as_ptr()).unwrap();
    /// assert!(page.is_reserved());
    /// ```
    pub fn boot_with(
        platform: P,
        map: &[MemRegion],
        params: &BootParams,
        early: impl FnOnce(&mut EarlyMem<'_, P>) -> Result<()>,
    ) -> Result<Self> {
        let p = &platform;
        let t0 = p.now_ns();
        // Command-line options take effect before the first allocation.
        let fault = crate::fault_inject::FaultInject::new();
        fault.setup_boot(p, params.failslab.as_ref(), params.fail_page_alloc.as_ref())?;
        if params.debug_atomic_sleep {
            fault.share_gates();
        }
        memory_map::validate(p, map)?;
        let nr_cpus = p.nr_cpu_ids();
        if nr_cpus == 0 || nr_cpus > NR_CPUS {
            report!(p, Level::Err, "kmem: {nr_cpus} CPUs: must be 1..={NR_CPUS}");
            return Err(Error::InvalidArgument);
        }
        let dm = p.direct_map();
        let mut mb = Memblock::new();

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
        let reserve_low = params.reserve_low.min(mb.end_of_dram());
        if reserve_low > 0 {
            mb.reserve(p, 0, reserve_low)?;
        }
        mb.set_current_limit(dm.end);
        early(&mut EarlyMem { p, mb: &mut mb, dm })?;

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

        // ZONE_MOVABLE: the top `movablecore` bytes, taken from the highest
        // memory down (Linux spreads kernelcore evenly over nodes; with one
        // node the result is the same).
        let mut movable_pfn = [0u64; MAX_NUMNODES];
        report!(p, Level::Info, "Movable zone start for each node");
        if params.movablecore > 0 {
            let mut need = (params.movablecore >> PAGE_SHIFT).next_multiple_of(MAX_ORDER_NR_PAGES);
            for r in mb.memory().regions().iter().rev() {
                if need == 0 {
                    break;
                }
                let (s, e) = (r.base >> PAGE_SHIFT, r.end() >> PAGE_SHIFT);
                let take = need.min(e - s);
                let start = (e - take) & !(MAX_ORDER_NR_PAGES - 1);
                let start = start.max(s);
                need -= need.min(e - start);
                movable_pfn[usize::from(r.nid)] = start;
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

        // The page descriptor array, covering whole max-order blocks so that
        // buddy pfn arithmetic never leaves it.
        let base_pfn = min_pfn & !(MAX_ORDER_NR_PAGES - 1);
        let end_pfn = max_pfn.next_multiple_of(MAX_ORDER_NR_PAGES);
        let nr_pages = (end_pfn - base_pfn) as usize;
        let zeroed = p.memory_is_zeroed();
        let mem_map = boot_alloc_raw::<P, Page>(p, &mut mb, &dm, nr_pages, zeroed)?;
        let nr_pb = ((end_pfn - base_pfn) >> PAGEBLOCK_ORDER) as usize;
        let pageblocks = boot_alloc(p, &mut mb, &dm, 0, nr_pb, |_| {
            AtomicU8::new(crate::mmzone::MigrateType::Movable as u8)
        })?;

        // Nodes and zones.
        let mut cpu_to_node = [0u8; NR_CPUS];
        for (cpu, slot) in cpu_to_node.iter_mut().enumerate().take(nr_cpus) {
            *slot = (cpu * nr_nodes / nr_cpus) as u8;
        }
        let mut nodes: [Option<NonNull<PgData>>; MAX_NUMNODES] = [None; MAX_NUMNODES];
        for (nid, slot) in nodes.iter_mut().enumerate().take(nr_nodes) {
            let mut pg = boot_alloc(p, &mut mb, &dm, nid as u8, 1, |_| PgData::new(nid))?;
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
            pgdat.nr_cpus = cpu_to_node[..nr_cpus]
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
            for i in 0..MAX_NR_ZONE_TYPES {
                if pgdat.zones[i].present_pages > 0 {
                    let pcp =
                        boot_alloc(p, &mut mb, &dm, nid as u8, nr_cpus, |_| PerCpuPages::new())?;
                    pgdat.zones[i].set_pcp(pcp, nr_cpus);
                }
            }
            *slot = Some(pg);
        }

        let mut kmem = Kmem {
            dm,
            mem_map,
            mem_map_len: nr_pages,
            mem_map_base_pfn: base_pfn,
            mem_map_va: dm.base.wrapping_add((base_pfn << PAGE_SHIFT) as usize),
            pageblocks,
            pageblocks_len: nr_pb,
            nodes,
            nr_nodes,
            nr_cpus,
            cpu_to_node,
            pcp_thp: params.transparent_hugepage,
            layout,
            sysctl: spin::Mutex::new(VmSysctl {
                min_free_kbytes: 0,
                watermark_scale_factor: params.watermark_scale_factor,
                lowmem_reserve_ratio: params.lowmem_reserve_ratio,
                percpu_pagelist_high_fraction: params.percpu_pagelist_high_fraction,
            }),
            memblock: Memblock::new(),
            kmap: p.vmap_range().and_then(|(s, e)| {
                (e - s >= LAST_PKMAP * PAGE_SIZE).then(|| Kmap {
                    base: s,
                    slots: spin::Mutex::new([0; LAST_PKMAP / 64]),
                })
            }),
            totalram_pages: AtomicU64::new(0),
            boot_ns: 0,
            slab: crate::slab::cache::SlabState::new(params.slab),
            reclaim: crate::vmscan::Reclaim::new(),
            debug_atomic_sleep: params.debug_atomic_sleep,
            fault,
            p: platform,
        };
        kmem.build_zonelists();
        if params.memblock_debug {
            mb.dump(&kmem.p);
        }

        // PG_reserved on every page memblock kept (partial pages included).
        let mm = kmem.mem_map();
        for r in mb.reserved().regions() {
            for pfn in (r.base >> PAGE_SHIFT)..r.end().div_ceil(PAGE_SIZE as u64) {
                if let Some(pg) = mm.pfn_to_page(pfn) {
                    pg.set_flag(PG_RESERVED);
                    pg.set_refcount(1);
                }
            }
        }

        // memblock_free_all().
        let mut freed = 0u64;
        mb.for_each_free_range(None, |s, e, nid| {
            let (s, e) = (s.div_ceil(PAGE_SIZE as u64), e >> PAGE_SHIFT);
            for z in kmem.node(usize::from(nid)).zones() {
                let (zs, ze) = (s.max(z.zone_start_pfn()), e.min(z.zone_end_pfn()));
                if zs < ze {
                    freed += kmem.free_range_to_zone(z, zs, ze);
                }
            }
            true
        });
        mb.retire();
        kmem.totalram_pages.store(freed, Relaxed);
        report!(
            &kmem.p,
            Level::Info,
            "memblock_free_all: released {} pages ({}K) to the buddy allocator",
            freed,
            freed << (PAGE_SHIFT - 10)
        );

        // Watermarks and friends (init_per_zone_wmark_min()).
        let inputs = zone_inputs(kmem.nodes());
        let mut mfk = watermark::calculate_min_free_kbytes(&inputs.0[..inputs.1]);
        if let Some(user) = params.min_free_kbytes {
            mfk = user;
        } else if params.transparent_hugepage {
            let raised = watermark::thp_recommended_min_free_kbytes(&inputs.0[..inputs.1], mfk);
            if raised > mfk {
                report!(&kmem.p, Level::Info, "raising min_free_kbytes from {} to {} to help transparent hugepage allocations", mfk, raised);
            }
            mfk = raised;
        }
        kmem.sysctl.lock().min_free_kbytes = mfk;
        kmem.setup_per_zone();

        let zonelists = kmem.nr_nodes;
        report!(
            &kmem.p,
            Level::Info,
            "Built {} zonelists, mobility grouping on.  Total pages: {}",
            zonelists,
            freed
        );
        let total_kb = mb.phys_mem_size() >> 10;
        report!(
            &kmem.p,
            Level::Info,
            "Memory: {}K/{}K available ({}K reserved, 0K cma-reserved)",
            freed << (PAGE_SHIFT - 10),
            total_kb,
            total_kb - (freed << (PAGE_SHIFT - 10))
        );
        kmem.memblock = mb;
        kmem.kmem_cache_init()?;
        kmem.boot_ns = kmem.p.now_ns().saturating_sub(t0);
        Ok(kmem)
    }

    /// `__free_pages_core()` over a pfn range of one zone, in naturally
    /// aligned chunks of up to `MAX_PAGE_ORDER`. Returns the pages freed.
    fn free_range_to_zone(&self, zone: &crate::mmzone::Zone, mut s: u64, e: u64) -> u64 {
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

    /// `build_all_zonelists()`: for each node, its zones highest first, then
    /// the other nodes' by distance (10 local, 20 remote: nearest is the
    /// next node id, wrapping).
    fn build_zonelists(&mut self) {
        for nid in 0..self.nr_nodes {
            let mut fb = crate::mmzone::Zonelist::new();
            let mut nf = crate::mmzone::Zonelist::new();
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

    /// `setup_per_zone_wmarks()`, `setup_per_zone_lowmem_reserve()`, the
    /// vmstat thresholds and `zone_pcp_update()` for every zone, from the
    /// current sysctls.
    pub(crate) fn setup_per_zone(&self) {
        let s = *self.sysctl.lock();
        let (all, n) = zone_inputs(self.nodes());
        // Watermarks share min_free_kbytes across all lowmem zones of all
        // nodes, in for_each_zone order.
        let mut w = [watermark::Watermarks::default(); MAX_NR_ZONE_TYPES * MAX_NUMNODES];
        watermark::setup_per_zone_wmarks(&all[..n], &s, &mut w[..n]);
        let mut k = 0;
        for node in self.nodes() {
            let zins = zone_inputs(core::iter::once(node));
            let prot = watermark::setup_per_zone_lowmem_reserve(&zins.0[..zins.1], &s);
            for (zi, z) in node.zones().enumerate() {
                let wm = w[k];
                k += 1;
                z.wmark[0].store(wm.min, Relaxed);
                z.wmark[1].store(wm.low, Relaxed);
                z.wmark[2].store(wm.high, Relaxed);
                z.wmark[3].store(wm.promo, Relaxed);
                // lowmem_reserve is indexed by zone type; the formula by
                // position in the layout.
                for (zj, upper) in node.zones().enumerate() {
                    z.lowmem_reserve[upper.zone_type() as usize].store(prot[zi][zj], Relaxed);
                }
                z.stat_threshold.store(
                    watermark::vmstat_threshold(z.managed_pages(), self.nr_cpus as u64),
                    Relaxed,
                );
                let sizes = watermark::pageset_high_and_batch(
                    z.managed_pages(),
                    wm.low,
                    node.nr_cpus() as u64,
                    &s,
                );
                for cpu in 0..self.nr_cpus {
                    if let Some(pcp) = z.pcp(cpu) {
                        pcp.update(sizes.batch, sizes.high_min, sizes.high_max);
                    }
                }
            }
        }
    }

    /// The vm sysctls in force.
    pub fn sysctl(&self) -> VmSysctl {
        *self.sysctl.lock()
    }

    /// Set `vm.min_free_kbytes` and recompute watermarks and per-CPU list
    /// sizes, as writing `/proc/sys/vm/min_free_kbytes` does.
    pub fn set_min_free_kbytes(&self, kbytes: u64) -> Result<()> {
        if kbytes == 0 {
            report!(&self.p, Level::Err, "min_free_kbytes: invalid value 0");
            return Err(Error::InvalidArgument);
        }
        self.sysctl.lock().min_free_kbytes = kbytes;
        self.setup_per_zone();
        Ok(())
    }

    /// Set `vm.watermark_scale_factor` (1..=3000, as Linux allows).
    pub fn set_watermark_scale_factor(&self, factor: u64) -> Result<()> {
        if !(1..=3000).contains(&factor) {
            report!(
                &self.p,
                Level::Err,
                "watermark_scale_factor: {factor} is outside 1..3000"
            );
            return Err(Error::InvalidArgument);
        }
        self.sysctl.lock().watermark_scale_factor = factor;
        self.setup_per_zone();
        Ok(())
    }

    /// Set `vm.lowmem_reserve_ratio` (indexed by [`ZoneType`]).
    pub fn set_lowmem_reserve_ratio(&self, ratio: [u64; MAX_NR_ZONE_TYPES]) {
        self.sysctl.lock().lowmem_reserve_ratio = ratio;
        self.setup_per_zone();
    }

    /// Set `vm.percpu_pagelist_high_fraction` (0, or at least 8).
    pub fn set_percpu_pagelist_high_fraction(&self, f: u64) -> Result<()> {
        if f != 0 && f < watermark::MIN_PERCPU_PAGELIST_HIGH_FRACTION {
            report!(
                &self.p,
                Level::Err,
                "percpu_pagelist_high_fraction: {f} is below 8"
            );
            return Err(Error::InvalidArgument);
        }
        self.sysctl.lock().percpu_pagelist_high_fraction = f;
        self.setup_per_zone();
        Ok(())
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.p
    }

    /// The (retired) memblock, kept for reports as with `ARCH_KEEP_MEMBLOCK`.
    pub fn memblock(&self) -> &Memblock {
        &self.memblock
    }

    /// How long boot took, by the platform's clock.
    pub fn boot_time_ns(&self) -> u64 {
        self.boot_ns
    }

    /// `totalram_pages()`: pages given to the buddy allocator.
    pub fn totalram_pages(&self) -> u64 {
        self.totalram_pages.load(Relaxed)
    }

    /// Number of CPUs.
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// Number of nodes.
    pub fn nr_nodes(&self) -> usize {
        self.nr_nodes
    }

    /// Whether this machine's layout has zone type `t`.
    pub fn has_zone(&self, t: ZoneType) -> bool {
        self.layout[t as usize]
    }

    /// Node `nid` (`NODE_DATA(nid)`). Panics for a node that does not exist.
    #[inline]
    pub fn node(&self, nid: usize) -> &PgData {
        let p = self.nodes[nid].expect("no such node");
        // SAFETY: set at boot to an initialised PgData in memblock memory
        // that lives as long as `self`; only shared references exist after boot.
        unsafe { p.as_ref() }
    }

    /// All nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &PgData> {
        (0..self.nr_nodes).map(|n| self.node(n))
    }

    /// The page descriptor array.
    #[inline]
    pub fn mem_map(&self) -> MemMap<'_> {
        // SAFETY: boot allocated `mem_map_len` descriptors at `mem_map` from
        // memblock and zeroed (or found zeroed) them; every field is atomic,
        // so shared references are sound for the machine's life.
        MemMap::new(
            unsafe { core::slice::from_raw_parts(self.mem_map.as_ptr(), self.mem_map_len) },
            self.mem_map_base_pfn,
        )
    }

    #[inline]
    pub(crate) fn pageblocks(&self) -> PageblockFlags<'_> {
        // SAFETY: boot initialised `pageblocks_len` AtomicU8 at `pageblocks`
        // in memblock memory that lives as long as `self`.
        PageblockFlags::new(
            unsafe { core::slice::from_raw_parts(self.pageblocks.as_ptr(), self.pageblocks_len) },
            self.mem_map_base_pfn,
        )
    }

    /// `pfn_to_page()`.
    pub fn pfn_to_page(&self, pfn: u64) -> Option<&Page> {
        self.mem_map().pfn_to_page(pfn)
    }

    /// `page_to_pfn()`. Panics for a descriptor of another machine.
    pub fn page_to_pfn(&self, page: &Page) -> u64 {
        self.mem_map()
            .page_to_pfn(page)
            .expect("page of another machine")
    }

    /// `pfn_valid()` in the strict sense: the pfn is RAM.
    pub fn pfn_is_ram(&self, pfn: u64) -> bool {
        self.memblock
            .is_region_memory(pfn << PAGE_SHIFT, PAGE_SIZE as u64)
    }

    /// `page_address()`: the direct-map address, `None` for high memory.
    pub fn page_address(&self, page: &Page) -> Option<NonNull<u8>> {
        let pa = self.mem_map().page_to_pfn(page)? << PAGE_SHIFT;
        NonNull::new(self.dm.va(pa)? as *mut u8)
    }

    /// `virt_to_page()`: the descriptor behind a direct-map address, if it
    /// is RAM this machine manages.
    pub fn virt_to_page(&self, addr: *const u8) -> Option<&Page> {
        let pfn = self.dm.pa(addr as usize)? >> PAGE_SHIFT;
        if !self.pfn_is_ram(pfn) {
            return None;
        }
        self.mem_map().pfn_to_page(pfn)
    }

    /// `get_pageblock_migratetype()` of the pageblock holding `pfn`.
    pub fn pageblock_migratetype(&self, pfn: u64) -> Option<crate::mmzone::MigrateType> {
        let mm = self.mem_map();
        (pfn >= mm.base_pfn() && pfn < mm.end_pfn()).then(|| self.pageblocks().get(pfn))
    }

    /// `PageHighMem()`.
    pub fn page_is_highmem(&self, page: &Page) -> bool {
        self.page_address(page).is_none()
    }

    /// `kmap()`: an address for any page; high memory is mapped into the
    /// kmap area (one slot per call, released by [`kunmap`](Self::kunmap)).
    pub fn kmap(&self, page: &Page) -> Result<NonNull<u8>> {
        if let Some(a) = self.page_address(page) {
            return Ok(a);
        }
        let pfn = self.mem_map().page_to_pfn(page).ok_or(Error::BadAddress)?;
        let km = self.kmap.as_ref().ok_or_else(|| {
            report!(&self.p, Level::Err, "kmap: this platform cannot map pages");
            Error::NotSupported
        })?;
        let slot = {
            let mut s = km.slots.lock();
            let mut found = None;
            for (w, word) in s.iter_mut().enumerate() {
                if *word != u64::MAX {
                    let b = (!*word).trailing_zeros() as usize;
                    *word |= 1 << b;
                    found = Some(w * 64 + b);
                    break;
                }
            }
            found
        };
        let Some(slot) = slot else {
            report!(
                &self.p,
                Level::Err,
                "kmap: all {LAST_PKMAP} slots are in use"
            );
            return Err(Error::Busy);
        };
        let va = km.base + slot * PAGE_SIZE;
        if let Err(e) = self.p.map_page(va, pfn) {
            km.slots.lock()[slot / 64] &= !(1 << (slot % 64));
            return Err(e);
        }
        Ok(NonNull::new(va as *mut u8).expect("kmap area is not at 0"))
    }

    /// `kunmap()`: release an address from [`kmap`](Self::kmap). Direct-map
    /// addresses need no release and are ignored.
    pub fn kunmap(&self, addr: *mut u8) {
        let Some(km) = self.kmap.as_ref() else { return };
        let a = addr as usize;
        if a < km.base || a >= km.base + LAST_PKMAP * PAGE_SIZE {
            return;
        }
        let slot = (a - km.base) / PAGE_SIZE;
        self.p.unmap_page(km.base + slot * PAGE_SIZE);
        km.slots.lock()[slot / 64] &= !(1 << (slot % 64));
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

/// The (type, managed pages) of every zone in the layout of `nodes`, in
/// `for_each_zone` order, as the watermark formulas take them.
fn zone_inputs<'a>(
    nodes: impl Iterator<Item = &'a PgData>,
) -> ([ZoneInput; MAX_NR_ZONE_TYPES * MAX_NUMNODES], usize) {
    let mut v = [ZoneInput {
        ztype: ZoneType::Dma,
        managed: 0,
    }; MAX_NR_ZONE_TYPES * MAX_NUMNODES];
    let mut n = 0;
    for z in nodes.flat_map(|node| node.zones()) {
        v[n] = ZoneInput {
            ztype: z.zone_type(),
            managed: z.managed_pages(),
        };
        n += 1;
    }
    (v, n)
}

/// Allocate `n` values of `T` from memblock without running an
/// initialiser, zeroing them unless the platform's memory is known to be
/// zero already. `T` must be valid when all-zero.
fn boot_alloc_raw<P: Platform, T>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    n: usize,
    zeroed: bool,
) -> Result<NonNull<T>> {
    let size = (core::mem::size_of::<T>() * n).next_multiple_of(PAGE_SIZE) as u64;
    let pa = mb.phys_alloc_range(p, size, PAGE_SIZE as u64, 0, dm.end)?;
    let va = dm.va(pa).ok_or(Error::NoMemory)? as *mut T;
    if !zeroed {
        // SAFETY: memblock just reserved `size` bytes at `pa` inside the
        // direct map; nobody else uses them.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, size as usize) };
    }
    Ok(NonNull::new(va).expect("direct map address is not null"))
}

impl<'a> Kmem<crate::arena::ArenaPlatform<'a>> {
    /// Boot a machine over a byte buffer (see [`crate::arena`]): all its
    /// whole pages usable RAM on node 0, nothing reserved at the bottom.
    ///
    /// ```
    /// let mut mem = vec![0u8; 4 << 20];
    /// let k = kmem::Kmem::boot_arena(&mut mem, 2).unwrap();
    /// assert!(k.nr_free_pages() > 0);
    /// ```
    pub fn boot_arena(buf: &'a mut [u8], nr_cpus: usize) -> Result<Self> {
        let p = crate::arena::ArenaPlatform::new(buf, nr_cpus);
        let (start, end) = p.usable_range();
        let map = [MemRegion::usable(start, end - start)];
        let params = BootParams {
            reserve_low: 0,
            ..BootParams::default()
        };
        Kmem::boot(p, &map, &params)
    }
}

/// `SMP_CACHE_BYTES`: the default alignment of early allocations.
pub const SMP_CACHE_BYTES: u64 = 64;
/// `ARCH_LOW_ADDRESS_LIMIT` on x86: "low" bootmem lies below 4 GiB.
pub const ARCH_LOW_ADDRESS_LIMIT: u64 = 0xffff_ffff;

/// Early boot memory: memblock before the page allocator exists (see
/// [`Kmem::boot_with`]).
///
/// The `memblock_*` calls are Linux's. The `*_bootmem*` calls are the names
/// the seed documents use, from the bootmem allocator memblock replaced
/// (removed in Linux 4.20); they are thin aliases:
///
/// | bootmem (old) | memblock (now) |
/// |---|---|
/// | `alloc_bootmem(size)` | `memblock_alloc(size, SMP_CACHE_BYTES)` |
/// | `alloc_bootmem_align(size, align)` | `memblock_alloc(size, align)` |
/// | `alloc_bootmem_pages(size)` | `memblock_alloc(size, PAGE_SIZE)` |
/// | `alloc_bootmem_low(size)` | `memblock_alloc_low(size, SMP_CACHE_BYTES)` |
/// | `alloc_bootmem_low_pages(size)` | `memblock_alloc_low(size, PAGE_SIZE)` |
/// | `alloc_bootmem_node(nid, size)` | `memblock_alloc_node(size, SMP_CACHE_BYTES, nid)` |
/// | `free_bootmem(addr, size)` | `memblock_free(ptr, size)` |
///
/// bootmem's allocators panicked on failure (`_nopanic` variants returned
/// NULL); here every call returns a `Result` and reports the failure.
pub struct EarlyMem<'a, P: Platform> {
    p: &'a P,
    mb: &'a mut Memblock,
    dm: DirectMap,
}

impl<P: Platform> EarlyMem<'_, P> {
    /// The memblock tables, read-only.
    pub fn memblock(&self) -> &Memblock {
        self.mb
    }

    /// `memblock_reserve()`.
    pub fn memblock_reserve(&mut self, base: u64, size: u64) -> Result<()> {
        self.mb.reserve(self.p, base, size)
    }

    /// `memblock_phys_free()`.
    pub fn memblock_phys_free(&mut self, base: u64, size: u64) -> Result<()> {
        self.mb.phys_free(self.p, base, size)
    }

    /// `memblock_phys_alloc_range()`.
    pub fn memblock_phys_alloc_range(
        &mut self,
        size: u64,
        align: u64,
        start: u64,
        end: u64,
    ) -> Result<u64> {
        self.mb.phys_alloc_range(self.p, size, align, start, end)
    }

    /// `memblock_set_bottom_up()`.
    pub fn memblock_set_bottom_up(&mut self, enable: bool) {
        self.mb.set_bottom_up(enable);
    }

    fn zeroed_va(&self, pa: u64, size: u64) -> Result<NonNull<u8>> {
        let va = self.dm.va(pa).ok_or(Error::NoMemory)? as *mut u8;
        // SAFETY: memblock just reserved [pa, pa + size), inside the direct
        // map (allocations stay below its end); nobody else uses it.
        unsafe { core::ptr::write_bytes(va, 0, size as usize) };
        Ok(NonNull::new(va).expect("direct map address is not null"))
    }

    fn alloc_in(
        &mut self,
        size: u64,
        align: u64,
        end: u64,
        nid: Option<u8>,
    ) -> Result<NonNull<u8>> {
        // The current limit keeps every allocation inside the direct map.
        let pa = match nid {
            Some(n) => self.mb.phys_alloc_try_nid(self.p, size, align, n)?,
            None => self.mb.phys_alloc_range(self.p, size, align, 0, end)?,
        };
        self.zeroed_va(pa, size)
    }

    /// `memblock_alloc()`: zeroed, direct-mapped memory.
    pub fn memblock_alloc(&mut self, size: u64, align: u64) -> Result<NonNull<u8>> {
        self.alloc_in(size, align, u64::MAX, None)
    }

    /// `memblock_alloc_low()`: below [`ARCH_LOW_ADDRESS_LIMIT`].
    pub fn memblock_alloc_low(&mut self, size: u64, align: u64) -> Result<NonNull<u8>> {
        self.alloc_in(size, align, ARCH_LOW_ADDRESS_LIMIT + 1, None)
    }

    /// `memblock_alloc_node()`: on node `nid` if it can, else anywhere.
    pub fn memblock_alloc_node(&mut self, size: u64, align: u64, nid: u8) -> Result<NonNull<u8>> {
        self.alloc_in(size, align, u64::MAX, Some(nid))
    }

    /// `memblock_free()`: give back memory from [`memblock_alloc`](Self::memblock_alloc).
    pub fn memblock_free(&mut self, ptr: NonNull<u8>, size: u64) -> Result<()> {
        let Some(pa) = self.dm.pa(ptr.as_ptr() as usize) else {
            report!(
                self.p,
                Level::Err,
                "memblock_free: {:p} is not a direct-map address",
                ptr
            );
            return Err(Error::BadAddress);
        };
        self.mb.phys_free(self.p, pa, size)
    }

    /// bootmem's `alloc_bootmem()`.
    pub fn alloc_bootmem(&mut self, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc(size, SMP_CACHE_BYTES)
    }

    /// bootmem's `alloc_bootmem_align()`.
    pub fn alloc_bootmem_align(&mut self, size: u64, align: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc(size, align)
    }

    /// bootmem's `alloc_bootmem_pages()`.
    pub fn alloc_bootmem_pages(&mut self, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc(size, PAGE_SIZE as u64)
    }

    /// bootmem's `alloc_bootmem_low()`.
    pub fn alloc_bootmem_low(&mut self, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc_low(size, SMP_CACHE_BYTES)
    }

    /// bootmem's `alloc_bootmem_low_pages()`.
    pub fn alloc_bootmem_low_pages(&mut self, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc_low(size, PAGE_SIZE as u64)
    }

    /// bootmem's `alloc_bootmem_node()`.
    pub fn alloc_bootmem_node(&mut self, nid: u8, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc_node(size, SMP_CACHE_BYTES, nid)
    }

    /// bootmem's `free_bootmem()`.
    pub fn free_bootmem(&mut self, addr: NonNull<u8>, size: u64) -> Result<()> {
        self.memblock_free(addr, size)
    }
}
