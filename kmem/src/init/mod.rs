//! The machine instance and its boot sequence (`start_kernel()` up to
//! `mm_core_init()`).
//!
//! [`Kmem::boot`] takes a platform and a firmware memory map and runs, in
//! Linux's order, the steps of [`mm_init`] and of the subsystems, each
//! named after the Linux function that does the same work:
//!
//! 1. `e820__memblock_setup()`: print the memory map and feed its usable
//!    ranges (trimmed to whole pages) to memblock; reserve the first
//!    `reserve_low` bytes, as x86 reserves the first 1 MiB; run the
//!    caller's early allocations ([`EarlyMem`]);
//! 2. `zone_sizes_init()`: size the zones from the arch limits (16 MiB,
//!    4 GiB or the lowmem limit) and `movablecore=`, and print "Zone
//!    ranges" and "Early memory node ranges";
//! 3. `free_area_init()`: allocate from memblock the `struct page` array,
//!    the pageblock migratetype array and one `pg_data_t` per node (on
//!    that node); after it, `setup_per_cpu_areas()` builds the per-CPU
//!    allocator's first chunk from memblock;
//! 4. `build_all_zonelists()`;
//! 5. `reserve_bootmem_region()` marks what memblock kept `PG_reserved`,
//!    and `memblock_free_all()` hands the rest to the buddy allocator in
//!    max-order chunks; memblock retires;
//! 6. `init_per_zone_wmark_min()`: `min_free_kbytes` (raised as khugepaged
//!    does when transparent huge pages are on), the watermarks,
//!    `lowmem_reserve` and the per-CPU list sizes;
//! 7. `kmem_cache_init()`: the slab allocator and the kmalloc caches,
//!    then `vmalloc_init()` and `setup_per_cpu_pageset()`: the zones'
//!    per-CPU page lists, in per-CPU memory (until then the zones run on
//!    the boot pageset and cache nothing);
//! 8. `e820__reserve_resources_late()`'s report of the "RAM buffer"
//!    ranges: the memory map's ranges went into the iomem resource tree
//!    ([`crate::resource`]) after step 3, with nodes from memblock, as
//!    `setup_arch()` runs `e820__reserve_resources()`.
//!
//! Nothing is taken from a host heap: after boot the core's state lives in
//! the simulated physical memory, as in a kernel.
//!
//! [`Kmem`] is the composition root: its fields are each subsystem's state,
//! and each subsystem adds its operations in an `impl Kmem` block of its
//! own module (see the crate's module table).

mod early;
pub mod mm_init;

pub use early::{EarlyMem, ARCH_LOW_ADDRESS_LIMIT, SMP_CACHE_BYTES};
pub use mm_init::MAX_ORDER_NR_PAGES;

use crate::memblock::Memblock;
use crate::memory_map::{self, MemRegion};
use crate::memory_model::Kmap;
use crate::mmzone::{PgData, ZoneType, MAX_NR_ZONE_TYPES, MAX_NUMNODES};
use crate::page::Page;
use crate::page_alloc::watermark::VmSysctl;
use crate::platform::{DirectMap, Level, Platform};
use crate::{report, Result};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

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
    /// `CONFIG_DEBUG_PREEMPT`: `smp_processor_id()` and the `__this_cpu_*`
    /// operations from preemptible context are reported as Linux reports
    /// them (and the `__this_cpu_*` ones refused). Off, as in production
    /// kernels.
    pub debug_preempt: bool,
    /// `CONFIG_DEFERRED_STRUCT_PAGE_INIT`: boot hands each zone's first
    /// section (128 MiB) to the buddy allocator and leaves the rest of its
    /// largest free range for later, in max-order blocks added when the
    /// zone runs short (`deferred_grow_zone()`), so that boot touches the
    /// page descriptors of that much memory only. `MemTotal` grows as the
    /// blocks join. Off (the simulator's machines show all memory at
    /// boot); kmem-malloc turns it on.
    pub deferred_struct_page_init: bool,
    /// memcg kmem accounting on (Linux's default, `cgroup.memory=nokmem`
    /// turns it off): per-CPU objects cost an `obj_cgroup` pointer per 4
    /// bytes besides their copies ([`crate::percpu::pcpu_obj_full_size`]).
    /// kmem charges nothing to cgroups; this is size accounting only.
    pub memcg_kmem: bool,
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
            debug_preempt: false,
            deferred_struct_page_init: false,
            memcg_kmem: true,
        }
    }
}

/// A booted machine: the memory model, the page allocator, the slab
/// allocator and kmalloc, reclaim and fault injection, over one
/// [`Platform`].
///
/// Each field is one subsystem's state; the subsystem's module says what it
/// may do with it.
pub struct Kmem<P: Platform> {
    /// The environment (the only door to it).
    pub(crate) p: P,
    /// The direct map: physical address `pa` is at `dm.base + pa`.
    pub(crate) dm: DirectMap,
    /// The `struct page` array (`mem_map`), `mem_map_len` descriptors from
    /// `mem_map_base_pfn` on (see [`crate::memory_model`]).
    pub(crate) mem_map: NonNull<Page>,
    /// Descriptors in `mem_map`.
    pub(crate) mem_map_len: usize,
    /// The pfn of `mem_map[0]` (max-order aligned).
    pub(crate) mem_map_base_pfn: u64,
    /// The direct-map address of `mem_map`'s first page (wrapping): an
    /// address's descriptor index is `(addr - mem_map_va) >> PAGE_SHIFT`,
    /// one subtraction on the free path.
    pub(crate) mem_map_va: usize,
    /// One migratetype byte per pageblock from `mem_map_base_pfn` on.
    pub(crate) pageblocks: NonNull<AtomicU8>,
    /// Bytes in `pageblocks`.
    pub(crate) pageblocks_len: usize,
    /// `NODE_DATA(nid)` for `nid < nr_nodes`.
    pub(crate) nodes: [Option<NonNull<PgData>>; MAX_NUMNODES],
    /// Nodes with memory.
    pub(crate) nr_nodes: usize,
    /// Possible CPUs (`nr_cpu_ids`).
    pub(crate) nr_cpus: usize,
    /// `cpu_to_node()`: `nr_cpus` entries from memblock.
    pub(crate) cpu_to_node: NonNull<u8>,
    /// Pageblock-order blocks have per-CPU lists (THP configured).
    pub(crate) pcp_thp: bool,
    /// Which zone types the machine's layout has.
    pub(crate) layout: [bool; MAX_NR_ZONE_TYPES],
    /// The vm sysctls (see `page_alloc::sysctl`).
    pub(crate) sysctl: spin::Mutex<VmSysctl>,
    /// The retired memblock, kept as with `ARCH_KEEP_MEMBLOCK`.
    pub(crate) memblock: Memblock,
    /// The kmap window, if the platform can map pages.
    pub(crate) kmap: Option<Kmap>,
    /// `totalram_pages()`.
    pub(crate) totalram_pages: AtomicU64,
    /// How long boot took.
    pub(crate) boot_ns: u64,
    /// Pages boot's own objects hold besides slab metadata (see
    /// [`Kmem::boot_pages`]).
    pub(crate) boot_pages: u64,
    /// Slab caches and kmalloc's tables ([`crate::slab`]).
    pub(crate) slab: crate::slab::cache::SlabState,
    /// The kmalloc caches and large allocations ([`crate::kmalloc`]).
    pub(crate) kmalloc: crate::kmalloc::KmallocCaches,
    /// Shrinkers, kswapd and reclaim counters ([`crate::vmscan`]).
    pub(crate) reclaim: crate::vmscan::Reclaim,
    /// `CONFIG_DEBUG_ATOMIC_SLEEP` ([`crate::sched`]).
    pub(crate) debug_atomic_sleep: bool,
    /// failslab's attribute and knobs ([`crate::slab::failslab`]).
    pub(crate) failslab_attr: crate::slab::failslab::FailSlabAttr,
    /// fail_page_alloc's ([`crate::page_alloc::fail_page_alloc`]).
    pub(crate) fail_page_alloc_attr: crate::page_alloc::fail_page_alloc::FailPageAllocAttr,
    /// The per-CPU allocator ([`crate::percpu`]).
    pub(crate) percpu: crate::percpu::PcpuState,
    /// vmalloc, vmap and ioremap ([`crate::vmalloc`]).
    pub(crate) vmalloc: crate::vmalloc::VmallocState,
    /// Boot deferred free memory (`BootParams::deferred_struct_page_init`).
    pub(crate) deferred_init: bool,
    /// Free page reporting (off until a driver registers).
    pub(crate) page_reporting: crate::page_alloc::page_reporting::PageReporting,
    /// The iomem resource tree ([`crate::resource`]).
    pub(crate) iomem: crate::resource::Iomem,
}

// SAFETY: the raw pointers lead to memblock memory owned by the platform for
// the machine's life; all shared state behind them is atomic, spin-locked,
// or per-CPU data governed by the Platform's CPU-local-section contract.
unsafe impl<P: Platform + Sync> Sync for Kmem<P> {}
// SAFETY: as above; moving the machine moves ownership of that memory with it.
unsafe impl<P: Platform + Send> Send for Kmem<P> {}

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
        let failslab_attr = crate::slab::failslab::FailSlabAttr::new();
        let fail_page_alloc_attr = crate::page_alloc::fail_page_alloc::FailPageAllocAttr::new();
        failslab_attr.attr.setup_boot(p, params.failslab.as_ref())?;
        fail_page_alloc_attr
            .attr
            .setup_boot(p, params.fail_page_alloc.as_ref())?;
        if params.debug_atomic_sleep {
            failslab_attr.attr.share_gate();
            fail_page_alloc_attr.attr.share_gate();
        }
        memory_map::validate(p, map)?;
        let nr_cpus = mm_init::check_nr_cpus(p)?;
        let dm = p.direct_map();
        let mut mb = Memblock::new();
        let nr_nodes = mm_init::e820_memblock_setup(p, map, &mut mb)?;
        let reserve_low = params.reserve_low.min(mb.end_of_dram());
        if reserve_low > 0 {
            mb.reserve(p, 0, reserve_low)?;
        }
        mb.set_current_limit(dm.end);
        early(&mut EarlyMem { p, mb: &mut mb, dm })?;

        let limits = mm_init::zone_sizes_init(p, &mb, params, nr_nodes);
        let fa = mm_init::free_area_init(p, &mut mb, &dm, &limits, nr_cpus, nr_nodes)?;
        // The vmap range: kmap's window at its top, the vmalloc space
        // below. A platform without page tables (the arena) still gets
        // x86_64's vmalloc space as numbers, so the vmap_area allocator
        // runs there; vmalloc itself is refused.
        let kmap = p.vmap_range().and_then(|(s, e)| Kmap::new(s, e));
        let (vmalloc_start, vmalloc_end) = match (p.vmap_range(), &kmap) {
            (Some((s, _)), Some(km)) => (s, km.base),
            (Some((s, e)), None) => (s, e),
            (None, _) => crate::vmalloc::NUMBERED_VMALLOC_SPACE,
        };
        // setup_per_cpu_areas(): the first chunk, from memblock.
        // SAFETY: free_area_init() wrote `nr_cpus` entries there, never freed.
        let cpu_to_node = unsafe { core::slice::from_raw_parts(fa.cpu_to_node.as_ptr(), nr_cpus) };
        let percpu = crate::percpu::setup_per_cpu_areas(
            p,
            &mut mb,
            &dm,
            nr_cpus,
            cpu_to_node,
            vmalloc_end - vmalloc_start,
            params.memcg_kmem,
            params.debug_preempt,
        )?;
        let iomem = crate::resource::Iomem::new();
        iomem.e820_reserve_resources(map, |size| {
            EarlyMem { p, mb: &mut mb, dm }.memblock_alloc(size, SMP_CACHE_BYTES)
        })?;
        let mut kmem = Kmem {
            dm,
            mem_map: fa.mem_map,
            mem_map_len: fa.nr_pages,
            mem_map_base_pfn: fa.base_pfn,
            mem_map_va: dm
                .base
                .wrapping_add((fa.base_pfn << crate::PAGE_SHIFT) as usize),
            pageblocks: fa.pageblocks,
            pageblocks_len: fa.nr_pageblocks,
            nodes: fa.nodes,
            nr_nodes,
            nr_cpus,
            cpu_to_node: fa.cpu_to_node,
            pcp_thp: params.transparent_hugepage,
            layout: limits.layout,
            sysctl: spin::Mutex::new(VmSysctl {
                min_free_kbytes: 0,
                watermark_scale_factor: params.watermark_scale_factor,
                lowmem_reserve_ratio: params.lowmem_reserve_ratio,
                percpu_pagelist_high_fraction: params.percpu_pagelist_high_fraction,
            }),
            memblock: Memblock::new(),
            kmap,
            totalram_pages: AtomicU64::new(0),
            boot_ns: 0,
            boot_pages: 0,
            slab: crate::slab::cache::SlabState::new(params.slab),
            kmalloc: crate::kmalloc::KmallocCaches::new(),
            reclaim: crate::vmscan::Reclaim::new(),
            debug_atomic_sleep: params.debug_atomic_sleep,
            failslab_attr,
            fail_page_alloc_attr,
            iomem,
            percpu,
            vmalloc: crate::vmalloc::VmallocState::new(
                vmalloc_start,
                vmalloc_end,
                p.vmap_range().is_some(),
            ),
            page_reporting: crate::page_alloc::page_reporting::PageReporting::new(),
            deferred_init: params.deferred_struct_page_init,
            p: platform,
        };
        kmem.build_all_zonelists();
        if params.memblock_debug {
            mb.dump(&kmem.p);
        }
        kmem.reserve_bootmem_regions(&mb, fa.mem_map_pfns);
        let freed = kmem.memblock_free_all(&mut mb);
        kmem.init_per_zone_wmark_min(params.min_free_kbytes, params.transparent_hugepage);
        kmem.mem_init_print_info(&mb, freed);
        kmem.memblock = mb;
        kmem.kmem_cache_init()?;
        kmem.vmalloc_init()?;
        kmem.setup_per_cpu_pageset();
        kmem.boot_pages = kmem.totalram_pages()
            - kmem.nr_free_pages()
            - kmem.nr_pcp_pages()
            - kmem.slab_meta_pages();
        kmem.report_ram_buffers(map);
        kmem.boot_ns = kmem.p.now_ns().saturating_sub(t0);
        Ok(kmem)
    }

    /// `mem_init_print_info()` and the zonelist line of
    /// `build_all_zonelists()`, printed once the totals are known.
    fn mem_init_print_info(&self, mb: &Memblock, freed: u64) {
        let shift = crate::PAGE_SHIFT - 10;
        report!(
            &self.p,
            Level::Info,
            "Built {} zonelists, mobility grouping on.  Total pages: {}",
            self.nr_nodes,
            freed
        );
        let total_kb = mb.phys_mem_size() >> 10;
        report!(
            &self.p,
            Level::Info,
            "Memory: {}K/{}K available ({}K reserved, 0K cma-reserved)",
            freed << shift,
            total_kb,
            total_kb - (freed << shift)
        );
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

    /// Pages that boot's own objects hold once it is done, besides the
    /// slab caches' metadata ([`slab_meta_pages`](Self::slab_meta_pages)):
    /// the first slabs of the caches vmalloc allocates from at
    /// `vmalloc_init()` (its `vmap_area` cache and the per-CPU block
    /// queues), and, on a machine whose zones' per-CPU lists outgrow the
    /// per-CPU first chunk, the vmalloc chunks that hold them. With them,
    /// every other page of RAM is free after boot:
    /// `nr_free_pages() + nr_pcp_pages() == totalram_pages() -
    /// slab_meta_pages() - boot_pages()`.
    pub fn boot_pages(&self) -> u64 {
        self.boot_pages
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

    /// `for_each_populated_zone()`: every zone with pages, node by node.
    pub fn populated_zones(&self) -> impl Iterator<Item = &crate::mmzone::Zone> {
        self.nodes()
            .flat_map(|n| n.zones())
            .filter(|z| z.is_populated())
    }
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
