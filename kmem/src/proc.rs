//! `/proc` reports in Linux's exact text formats (`mm/vmstat.c`,
//! `fs/proc/meminfo.c`; the Mem-Info report is [`crate::show_mem`]).
//!
//! Each report writes into any [`core::fmt::Write`] sink, so a kernel can
//! serve it from a seq_file and the simulator can print it. The columns and
//! padding are Linux's, byte for byte; where kmem does not model a counter
//! (anonymous and file pages, NUMA hit statistics), the line is left out
//! rather than printed as a made-up value:
//!
//! - `/proc/buddyinfo` and `/proc/pagetypeinfo`: complete.
//! - `/proc/zoneinfo`: per zone `pages free`, `boost`, `min`, `low`, `high`,
//!   `promo`, `spanned`, `present`, `managed`, `cma`, `protection`,
//!   `nr_free_pages`, the per-CPU `pagesets` with `vm stats threshold`,
//!   `node_unreclaimable` and `start_pfn`; the per-node stats block and the
//!   other zone counters are left out.
//! - `/proc/meminfo`: `MemTotal`, `MemFree`, `MemAvailable`, `Slab`,
//!   `SReclaimable`, `SUnreclaim` (more lines as subsystems land).
//! - `/proc/slabinfo`: complete, version 2.1 as SLUB prints it; the same
//!   numbers as structs through [`for_each_slabinfo`] (one source for the
//!   text and for tools such as `kmem slabtop`).
//! - `/proc/vmstat`: the counters kmem keeps, in Linux's names and order
//!   (see [`vmstat`]).
//! - `/proc/iomem`: complete, as `r_show()` in `kernel/resource.c` prints
//!   the tree of [`crate::resource`] (see [`iomem`]).

use crate::mmzone::{MigrateType, Zone, ZoneType, MIGRATE_TYPES};
use crate::platform::{IrqSave, Platform};
use crate::{Kmem, NR_PAGE_ORDERS, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, PAGE_SHIFT};
use core::fmt::{self, Write};

fn kb(pages: u64) -> u64 {
    pages << (PAGE_SHIFT - 10)
}

/// The `Node N, zone %8s ` prefix of buddyinfo and pagetypeinfo lines.
fn zone_prefix(w: &mut impl Write, nid: usize, z: &Zone) -> fmt::Result {
    write!(w, "Node {}, zone {:>8} ", nid, z.zone_type().name())
}

/// `/proc/buddyinfo`: free blocks per order for each populated zone.
pub fn buddyinfo<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    for node in k.nodes() {
        for z in node.zones().filter(|z| z.is_populated()) {
            zone_prefix(w, node.node_id(), z)?;
            let blocks = {
                let _irq = IrqSave::new(k.platform());
                z.free_blocks()
            };
            for n in blocks {
                write!(w, "{n:>6} ")?;
            }
            w.write_char('\n')?;
        }
    }
    Ok(())
}

fn pageblock_counts<P: Platform>(k: &Kmem<P>, z: &Zone) -> [u64; MIGRATE_TYPES] {
    let mut c = [0u64; MIGRATE_TYPES];
    let pb = k.pageblocks();
    let mut pfn = z.zone_start_pfn();
    while pfn < z.zone_end_pfn() {
        c[pb.get(pfn) as usize] += 1;
        pfn += PAGEBLOCK_NR_PAGES;
    }
    c
}

/// `/proc/pagetypeinfo`: free blocks per order and migratetype, and
/// pageblocks per migratetype.
pub fn pagetypeinfo<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    writeln!(w, "Page block order: {PAGEBLOCK_ORDER}")?;
    writeln!(w, "Pages per block:  {PAGEBLOCK_NR_PAGES}")?;
    w.write_char('\n')?;
    write!(w, "{:<43} ", "Free pages count per migrate type at order")?;
    for o in 0..NR_PAGE_ORDERS {
        write!(w, "{o:>6} ")?;
    }
    w.write_char('\n')?;
    for node in k.nodes() {
        for z in node.zones().filter(|z| z.is_populated()) {
            // Counted under the zone lock (interrupts off: a handler may
            // allocate), written after it: writing may allocate too.
            let cx = k.buddy_cx(z);
            let mut counts = [[0u64; NR_PAGE_ORDERS]; MIGRATE_TYPES];
            {
                let _irq = IrqSave::new(k.platform());
                let area = z.area.lock();
                for (mt, row) in MigrateType::ALL.iter().zip(counts.iter_mut()) {
                    for (o, n) in row.iter_mut().enumerate() {
                        *n = area.list_len(&cx, o, *mt);
                    }
                }
            }
            for (mt, row) in MigrateType::ALL.iter().zip(counts) {
                write!(
                    w,
                    "Node {:>4}, zone {:>8}, type {:>12} ",
                    node.node_id(),
                    z.zone_type().name(),
                    mt.name()
                )?;
                for n in row {
                    if n >= 100_000 {
                        write!(w, ">{:>6} ", 100_000)?;
                    } else {
                        write!(w, "{n:>6} ")?;
                    }
                }
                w.write_char('\n')?;
            }
        }
    }
    write!(w, "\n{:<23}", "Number of blocks type ")?;
    for mt in MigrateType::ALL {
        write!(w, "{:>12} ", mt.name())?;
    }
    w.write_char('\n')?;
    for node in k.nodes() {
        for z in node.zones().filter(|z| z.is_populated()) {
            zone_prefix(w, node.node_id(), z)?;
            for c in pageblock_counts(k, z) {
                write!(w, "{c:>12} ")?;
            }
            w.write_char('\n')?;
        }
    }
    Ok(())
}

/// `/proc/zoneinfo` (the lines listed in the module docs).
pub fn zoneinfo<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    for node in k.nodes() {
        for z in node.zones() {
            write!(
                w,
                "Node {}, zone {:>8}",
                node.node_id(),
                z.zone_type().name()
            )?;
            write!(
                w,
                "\n  pages free     {}\n        boost    {}\n        min      {}\n        low      {}\n        high     {}\n        promo    {}\n        spanned  {}\n        present  {}\n        managed  {}\n        cma      0",
                z.free_pages(),
                z.watermark_boost(),
                z.min_wmark(),
                z.low_wmark(),
                z.high_wmark(),
                z.promo_wmark(),
                z.spanned_pages(),
                z.present_pages(),
                z.managed_pages()
            )?;
            w.write_str("\n        protection: (")?;
            for (i, upper) in node.zones().enumerate() {
                if i > 0 {
                    w.write_str(", ")?;
                }
                write!(w, "{}", z.lowmem_reserve(upper.zone_type() as usize))?;
            }
            w.write_char(')')?;
            if !z.is_populated() {
                w.write_char('\n')?;
                continue;
            }
            write!(w, "\n      {:<12} {}", "nr_free_pages", z.free_pages())?;
            w.write_str("\n  pagesets")?;
            for cpu in 0..k.nr_cpus() {
                if let Some(pcp) = z.pcp(cpu) {
                    write!(
                        w,
                        "\n    cpu: {}\n              count:    {}\n              high:     {}\n              batch:    {}\n              high_min: {}\n              high_max: {}",
                        cpu,
                        pcp.count(),
                        pcp.high(),
                        pcp.batch(),
                        pcp.high_min(),
                        pcp.high_max()
                    )?;
                    write!(w, "\n  vm stats threshold: {}", z.stat_threshold())?;
                }
            }
            write!(
                w,
                "\n  node_unreclaimable:  0\n  start_pfn:           {}\n",
                z.zone_start_pfn()
            )?;
        }
    }
    Ok(())
}

/// `calculate_totalreserve_pages()`: per zone, the largest lowmem reserve
/// it keeps plus its high watermark, at most its managed pages.
pub fn totalreserve_pages<P: Platform>(k: &Kmem<P>) -> u64 {
    let mut total = 0;
    for node in k.nodes() {
        for z in node.zones() {
            let zi = z.zone_type() as usize;
            let max = (zi..crate::mmzone::MAX_NR_ZONE_TYPES)
                .map(|j| z.lowmem_reserve(j))
                .max()
                .unwrap_or(0);
            total += (max + z.high_wmark()).min(z.managed_pages());
        }
    }
    total
}

/// `si_mem_available()`: free pages above the reserves, plus the part of
/// reclaimable slab that reclaim could give back (half of it, or all but
/// the low watermarks' worth). Page cache joins when kmem has one.
pub fn mem_available<P: Platform>(k: &Kmem<P>) -> u64 {
    let wmark_low: u64 = k
        .nodes()
        .flat_map(|n| n.zones())
        .map(|z| z.low_wmark())
        .sum();
    let reclaimable = slab_pages(k).0;
    let avail = k.nr_free_pages() as i64 - totalreserve_pages(k) as i64 + reclaimable as i64
        - (reclaimable / 2).min(wmark_low) as i64;
    avail.max(0) as u64
}

fn meminfo_line(w: &mut impl Write, label: &str, kbytes: u64) -> fmt::Result {
    // show_val_kb(): the label with its colon padded to 16 columns, the
    // value right-aligned in 8.
    write!(w, "{label}:")?;
    for _ in label.len() + 1..16 {
        w.write_char(' ')?;
    }
    writeln!(w, "{kbytes:>8} kB")
}

/// Slab pages (reclaimable, unreclaimable): `NR_SLAB_RECLAIMABLE_B` and
/// `NR_SLAB_UNRECLAIMABLE_B`, which also count `kmalloc_large` pages as
/// unreclaimable, as Linux does.
pub fn slab_pages<P: Platform>(k: &Kmem<P>) -> (u64, u64) {
    let (mut rec, mut unrec) = (0, k.kmalloc_large_pages());
    k.for_each_cache(|s| {
        let pages = k.slab_totals(s).2;
        if s.flags().contains(crate::slab::SLAB_RECLAIM_ACCOUNT) {
            rec += pages;
        } else {
            unrec += pages;
        }
    });
    (rec, unrec)
}

/// `/proc/meminfo`.
pub fn meminfo<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    let (rec, unrec) = slab_pages(k);
    meminfo_line(w, "MemTotal", kb(k.totalram_pages()))?;
    meminfo_line(w, "MemFree", kb(k.nr_free_pages()))?;
    meminfo_line(w, "MemAvailable", kb(mem_available(k)))?;
    meminfo_line(w, "Slab", kb(rec + unrec))?;
    meminfo_line(w, "SReclaimable", kb(rec))?;
    meminfo_line(w, "SUnreclaim", kb(unrec))?;
    let v = k.vmalloc_info();
    meminfo_line(w, "VmallocTotal", (v.total >> 10) as u64)?;
    meminfo_line(w, "VmallocUsed", kb(v.used_pages as u64))?;
    meminfo_line(w, "VmallocChunk", (v.chunk >> 10) as u64)?;
    meminfo_line(w, "Percpu", kb(k.pcpu_nr_pages() as u64))
}

/// `/proc/iomem`: one line per resource of the iomem tree, in address
/// order with parents before their children, as `r_show()` prints them:
/// two spaces per level of nesting (at most
/// [`MAX_IORES_LEVEL`](crate::resource::MAX_IORES_LEVEL) levels), then
/// `%0*llx-%0*llx : name` with the width 4 when the root ends below
/// `0x10000` and 8 otherwise (always 8 for iomem, whose root ends at
/// `u64::MAX`; addresses above 4 GiB print all their digits). Addresses
/// are shown as to `root` (`CAP_SYS_ADMIN`), not zeroed.
///
/// ```
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let mut s = String::new();
/// kmem::proc::iomem(&k, &mut s).unwrap();
/// assert!(s.lines().any(|l| l.ends_with(" : System RAM")));
/// ```
pub fn iomem<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    let width = if k.iomem_resource().end < 0x10000 {
        4
    } else {
        8
    };
    k.walk_iomem(|depth, r| {
        let indent = 2 * depth.min(crate::resource::MAX_IORES_LEVEL);
        writeln!(
            w,
            "{:indent$}{:0width$x}-{:0width$x} : {}",
            "", r.start, r.end, r.name
        )
    })
}

/// One cache's numbers as `/proc/slabinfo` shows them (SLUB's
/// `get_slabinfo()` filling `struct slabinfo`), for tools that want the
/// values rather than the text, such as a `slabtop`.
///
/// [`slabinfo`] prints exactly these fields, so the text report and the
/// structured rows have one source. Counts cover all nodes.
///
/// ```
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let mut names = Vec::new();
/// kmem::proc::for_each_slabinfo(&k, |s| names.push(s.name.to_string()));
/// assert!(names.iter().any(|n| n == "kmalloc-64"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabInfo<'a> {
    /// The cache's name (`s->name`).
    pub name: &'a str,
    /// `<active_objs>`: all objects but the free ones on partial slabs
    /// (objects cached in per-CPU sheaves count as active, as objects in
    /// Linux's per-CPU slabs do).
    pub active_objs: u64,
    /// `<num_objs>`: objects in all of the cache's slabs.
    pub num_objs: u64,
    /// `<objsize>`: bytes per object slot (`s->size`, metadata included).
    pub objsize: u64,
    /// `<objperslab>`: objects in a slab of the cache's order.
    pub objperslab: u64,
    /// `<pagesperslab>`: pages in a slab of the cache's order.
    pub pagesperslab: u64,
    /// `<active_slabs>`: SLUB reports every slab as active.
    pub active_slabs: u64,
    /// `<num_slabs>`: slabs of the cache.
    pub num_slabs: u64,
}

/// Call `f` with the [`SlabInfo`] of every cache, newest first (the order
/// of `/proc/slabinfo`).
///
/// The cache list's lock is held across the calls, so `f` must not create
/// or destroy caches.
pub fn for_each_slabinfo<P: Platform>(k: &Kmem<P>, mut f: impl FnMut(&SlabInfo<'_>)) {
    k.for_each_cache(|s| {
        let (slabs, objs, _) = k.slab_totals(s);
        let g = s.geometry();
        f(&SlabInfo {
            name: s.name(),
            active_objs: objs - k.slab_free_objects(s),
            num_objs: objs,
            objsize: g.size as u64,
            objperslab: g.objects as u64,
            pagesperslab: g.pages_per_slab() as u64,
            active_slabs: slabs,
            num_slabs: slabs,
        });
    });
}

/// `/proc/slabinfo`, version 2.1 as SLUB prints it (`cache_show()`): no
/// tunables, active slabs equal to all slabs, active objects all objects
/// but the free ones on partial slabs. Caches are listed newest first.
pub fn slabinfo<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    writeln!(w, "slabinfo - version: 2.1")?;
    writeln!(
        w,
        "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>"
    )?;
    let mut res = Ok(());
    for_each_slabinfo(k, |s| {
        if res.is_ok() {
            res = writeln!(
                w,
                "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
                s.name,
                s.active_objs,
                s.num_objs,
                s.objsize,
                s.objperslab,
                s.pagesperslab,
                0,
                0,
                0,
                s.active_slabs,
                s.num_slabs,
                0
            );
        }
    });
    res
}

/// Merged caches (`slabinfo -a` style): `alias -> cache` per line.
pub fn slab_aliases<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    let mut res = Ok(());
    k.for_each_cache(|s| {
        s.for_each_alias(|a| {
            if res.is_ok() {
                res = writeln!(w, "{a} -> {}", s.name());
            }
        });
    });
    res
}

/// The suffix `/proc/vmstat` gives a zone's counters (`TEXTS_FOR_ZONES()`:
/// `pgalloc_dma`, `pgalloc_dma32`, `pgalloc_normal`, `pgalloc_high`,
/// `pgalloc_movable`, `pgalloc_device`).
fn vmstat_zone_suffix(t: ZoneType) -> &'static str {
    match t {
        ZoneType::Dma => "dma",
        ZoneType::Dma32 => "dma32",
        ZoneType::Normal => "normal",
        ZoneType::HighMem => "high",
        ZoneType::Movable => "movable",
        ZoneType::Device => "device",
    }
}

/// `/proc/vmstat`: one `name value` line per counter kmem keeps, in the
/// order of Linux 6.18's `vmstat_text[]` (`mm/vmstat.c`); counters kmem
/// does not keep are left out rather than printed as 0:
///
/// - `nr_free_pages`; `nr_slab_reclaimable` and `nr_slab_unreclaimable` (in
///   pages, as [`slab_pages`] counts them for `/proc/meminfo`);
/// - `pgalloc_<zone>` for each zone type of the machine's layout (as Linux
///   prints one per configured zone, populated or not), summed over nodes;
/// - `allocstall_<zone>`: direct reclaim entries, by the highest zone the
///   request may use, one line per zone type of the layout (as Linux
///   since 4.8);
/// - `pgfree`, `pgsteal_kswapd`, `pgsteal_direct`, `pgscan_kswapd` and
///   `pgscan_direct` (the LRU pages reclaim scanned: kmem has no LRU of its
///   own, so these are the pages of the shrinkers that declare
///   [`SHRINKER_LRU`](crate::shrinker::SHRINKER_LRU), such as the
///   simulator's page cache; slab objects scanned are `slabs_scanned`),
///   `slabs_scanned`, `pageoutrun` and `oom_kill` ([`Kmem::vm_events`]).
///
/// Not kept, so not printed: `kswapd_low_wmark_hit_quickly`,
/// `kswapd_high_wmark_hit_quickly`, `pgskip_*`, and every counter of
/// anonymous and file pages, swap, NUMA, compaction and THP.
///
/// ```
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let mut s = String::new();
/// kmem::proc::vmstat(&k, &mut s).unwrap();
/// assert!(s.starts_with("nr_free_pages "));
/// assert!(s.contains("\noom_kill 0\n"));
/// ```
pub fn vmstat<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    let (rec, unrec) = slab_pages(k);
    writeln!(w, "nr_free_pages {}", k.nr_free_pages())?;
    writeln!(w, "nr_slab_reclaimable {rec}")?;
    writeln!(w, "nr_slab_unreclaimable {unrec}")?;
    let mut pgalloc = [None::<u64>; crate::mmzone::MAX_NR_ZONE_TYPES];
    let mut pgfree = 0;
    for node in k.nodes() {
        for z in node.zones() {
            *pgalloc[z.zone_type() as usize].get_or_insert(0) += z.pgalloc();
            pgfree += z.pgfree();
        }
    }
    for t in ZoneType::ALL {
        if let Some(n) = pgalloc[t as usize] {
            writeln!(w, "pgalloc_{} {n}", vmstat_zone_suffix(t))?;
        }
    }
    let ev = k.vm_events();
    for t in ZoneType::ALL {
        if pgalloc[t as usize].is_some() {
            writeln!(
                w,
                "allocstall_{} {}",
                vmstat_zone_suffix(t),
                ev.allocstall_zone[t as usize]
            )?;
        }
    }
    writeln!(w, "pgfree {pgfree}")?;
    writeln!(w, "pgsteal_kswapd {}", ev.pgsteal_kswapd)?;
    writeln!(w, "pgsteal_direct {}", ev.pgsteal_direct)?;
    writeln!(w, "pgscan_kswapd {}", ev.pgscan_kswapd)?;
    writeln!(w, "pgscan_direct {}", ev.pgscan_direct)?;
    writeln!(w, "slabs_scanned {}", ev.slabs_scanned)?;
    writeln!(w, "pageoutrun {}", ev.pageoutrun)?;
    writeln!(w, "oom_kill {}", ev.oom_kill)
}

/// `/proc/vmallocinfo` (`vmalloc_info_show()`): one line per busy area in
/// address order, `0x<start>-0x<end> <size> <caller> pages=N phys=...
/// <kind> N<node>=<pages>`, where kind is `ioremap`, `vmalloc`, `vmap`,
/// `user`, `vpages` (the page array came from vmalloc); `vm_map_ram`
/// areas and blocks; then the lazily freed areas as `unpurged vm_area`.
/// The caller is the Rust source location that asked (Linux prints the
/// calling function's symbol).
pub fn vmallocinfo<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    use crate::vmalloc::{VM_ALLOC, VM_IOREMAP, VM_MAP, VM_MAP_PUT_PAGES, VM_USERMAP};
    let mut res = Ok(());
    k.for_each_busy_area(|start, end, va_flags, vm| {
        if res.is_err() {
            return;
        }
        res = (|| {
            let Some(vm) = vm else {
                if va_flags & crate::vmalloc::VMAP_RAM != 0 {
                    writeln!(
                        w,
                        "0x{start:016x}-0x{end:016x} {:>7} vm_map_ram",
                        end - start
                    )?;
                }
                return Ok(());
            };
            let info = vm.info();
            let addr = info.addr() as usize;
            write!(
                w,
                "0x{addr:016x}-0x{:016x} {:>7} {}",
                addr + info.size(),
                info.size(),
                info.caller()
            )?;
            let flags = info.flags();
            let has_pages = flags & VM_ALLOC != 0 || flags & VM_MAP_PUT_PAGES != 0;
            if has_pages && info.nr_pages() > 0 {
                write!(w, " pages={}", info.nr_pages())?;
            }
            if info.phys_addr() != 0 {
                write!(w, " phys=0x{:016x}", info.phys_addr())?;
            }
            for (bit, name) in [
                (VM_IOREMAP, " ioremap"),
                (VM_ALLOC, " vmalloc"),
                (VM_MAP, " vmap"),
                (VM_USERMAP, " user"),
            ] {
                if flags & bit != 0 {
                    w.write_str(name)?;
                }
            }
            if has_pages && k.is_vmalloc_addr(vm.pages_ptr()) {
                w.write_str(" vpages")?;
            }
            if has_pages {
                let mut per_node = [0usize; crate::mmzone::MAX_NUMNODES];
                for i in 0..info.nr_pages() {
                    if let Some(p) = vm.page(i) {
                        per_node[p.nid()] += 1;
                    }
                }
                for (nid, n) in per_node.iter().enumerate().take(k.nr_nodes()) {
                    if *n > 0 {
                        write!(w, " N{nid}={n}")?;
                    }
                }
            }
            writeln!(w)
        })();
    });
    res?;
    let mut res = Ok(());
    k.for_each_lazy_area(|start, end| {
        if res.is_ok() {
            res = writeln!(
                w,
                "0x{start:016x}-0x{end:016x} {:>7} unpurged vm_area",
                end - start
            );
        }
    });
    res
}

/// `/sys/kernel/debug/percpu_stats` (`mm/percpu-stats.c`): the first
/// chunk's layout, the global counters, then each chunk (the reserved
/// chunk first, then by slot) with its figures as `chunk_map_stats()`
/// computes them.
pub fn percpu_stats<P: Platform>(k: &Kmem<P>, w: &mut impl Write) -> fmt::Result {
    fn line(w: &mut impl Write, name: &str, v: u64) -> fmt::Result {
        writeln!(w, "  {name:<20}: {v:>12}")
    }
    let ai = k.pcpu_alloc_info();
    w.write_str(
        "Percpu Memory Statistics\nAllocation Info:\n----------------------------------------\n",
    )?;
    for (n, v) in [
        ("unit_size", ai.unit_size),
        ("static_size", ai.static_size),
        ("reserved_size", ai.reserved_size),
        ("dyn_size", ai.dyn_size),
        ("atom_size", ai.atom_size),
        ("alloc_size", ai.alloc_size),
    ] {
        line(w, n, v as u64)?;
    }
    let g = k.pcpu_global_stats();
    w.write_str("\nGlobal Stats:\n----------------------------------------\n")?;
    for (n, v) in [
        ("nr_alloc", g.nr_alloc),
        ("nr_dealloc", g.nr_dealloc),
        ("nr_cur_alloc", g.nr_cur_alloc),
        ("nr_max_alloc", g.nr_max_alloc),
        ("nr_chunks", g.nr_chunks),
        ("nr_max_chunks", g.nr_max_chunks),
        ("min_alloc_size", g.min_alloc_size),
        ("max_alloc_size", g.max_alloc_size),
        ("empty_pop_pages", g.empty_pop_pages),
    ] {
        line(w, n, v)?;
    }
    w.write_str("\nPer Chunk Stats:\n----------------------------------------\n")?;
    let mut res = Ok(());
    k.pcpu_chunks(|c| {
        if res.is_err() {
            return;
        }
        res = (|| {
            match c.label {
                "" => w.write_str("Chunk:\n")?,
                l => writeln!(w, "Chunk: <- {l}")?,
            }
            for (n, v) in [
                ("nr_alloc", c.nr_alloc),
                ("max_alloc_size", c.max_alloc_size),
                ("empty_pop_pages", c.empty_pop_pages),
                ("first_bit", c.first_bit),
                ("free_bytes", c.free_bytes),
                ("contig_bytes", c.contig_bytes),
                ("sum_frag", c.sum_frag),
                ("max_frag", c.max_frag),
                ("cur_min_alloc", c.cur_alloc.0),
                ("cur_med_alloc", c.cur_alloc.1),
                ("cur_max_alloc", c.cur_alloc.2),
            ] {
                line(w, n, v as u64)?;
            }
            w.write_char('\n')
        })();
    });
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gfp::GFP_KERNEL;
    use crate::slab::SLAB_NO_MERGE;
    use std::format;
    use std::string::{String, ToString};
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn slabinfo_rows_match_the_text_report() {
        let mut mem = vec![0u8; 16 << 20];
        let k = Kmem::boot_arena(&mut mem, 1).unwrap();
        let c = k
            .kmem_cache_create("rows_test", 200, 0, SLAB_NO_MERGE, None)
            .unwrap();
        let objs: Vec<_> = (0..5)
            .map(|_| k.kmem_cache_alloc(c, GFP_KERNEL).unwrap())
            .collect();
        let mut rows = Vec::new();
        for_each_slabinfo(&k, |s| {
            rows.push((s.name.to_string(), SlabInfo { name: "", ..*s }))
        });
        // Newest first: the cache just made leads, as in the text.
        assert_eq!(rows[0].0, "rows_test");
        let r = rows[0].1;
        assert_eq!(r.objsize, 200);
        assert!(r.active_objs >= 5 && r.num_objs >= r.active_objs);
        assert_eq!(r.num_slabs, r.active_slabs);
        assert_eq!(r.num_objs, r.num_slabs * r.objperslab);
        let mut text = String::new();
        slabinfo(&k, &mut text).unwrap();
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(lines.len(), rows.len());
        for (line, (name, r)) in lines.iter().zip(&rows) {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[0], name);
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            assert_eq!(
                [n(1), n(2), n(3), n(4), n(5), n(13), n(14)],
                [
                    r.active_objs,
                    r.num_objs,
                    r.objsize,
                    r.objperslab,
                    r.pagesperslab,
                    r.active_slabs,
                    r.num_slabs
                ]
            );
        }
        for o in objs {
            // SAFETY: each object is freed once and not used again.
            unsafe { k.kmem_cache_free(c, o.as_ptr()) }.unwrap();
        }
    }

    /// Linux 6.18's `vmstat_text[]` (`mm/vmstat.c`, x86-64) around every
    /// line kmem prints, in Linux's order (`pgalloc_high` and
    /// `allocstall_high` are there on a `CONFIG_HIGHMEM` kernel).
    const LINUX_VMSTAT_ORDER: &[&str] = &[
        "nr_free_pages",
        "nr_inactive_anon",
        "nr_active_anon",
        "nr_inactive_file",
        "nr_active_file",
        "nr_unevictable",
        "nr_slab_reclaimable",
        "nr_slab_unreclaimable",
        "nr_isolated_anon",
        "pgpgin",
        "pgpgout",
        "pswpin",
        "pswpout",
        "pgalloc_dma",
        "pgalloc_dma32",
        "pgalloc_normal",
        "pgalloc_high",
        "pgalloc_movable",
        "pgalloc_device",
        "allocstall_dma",
        "allocstall_dma32",
        "allocstall_normal",
        "allocstall_high",
        "allocstall_movable",
        "allocstall_device",
        "pgskip_dma",
        "pgfree",
        "pgactivate",
        "pgdeactivate",
        "pglazyfree",
        "pgfault",
        "pgmajfault",
        "pglazyfreed",
        "pgrefill",
        "pgreuse",
        "pgsteal_kswapd",
        "pgsteal_direct",
        "pgsteal_khugepaged",
        "pgsteal_proactive",
        "pgscan_kswapd",
        "pgscan_direct",
        "pginodesteal",
        "slabs_scanned",
        "kswapd_inodesteal",
        "kswapd_low_wmark_hit_quickly",
        "kswapd_high_wmark_hit_quickly",
        "pageoutrun",
        "pgrotated",
        "drop_pagecache",
        "drop_slab",
        "oom_kill",
    ];

    fn vmstat_lines<P: Platform>(k: &Kmem<P>) -> Vec<(String, u64)> {
        let mut s = String::new();
        vmstat(k, &mut s).unwrap();
        assert!(s.ends_with('\n'));
        s.lines()
            .map(|l| {
                let (name, v) = l.split_once(' ').unwrap();
                (name.to_string(), v.parse().unwrap())
            })
            .collect()
    }

    fn value(lines: &[(String, u64)], name: &str) -> u64 {
        lines.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn vmstat_prints_the_counters_kmem_keeps_in_linux_order() {
        let mut mem = vec![0u8; 16 << 20];
        let k = Kmem::boot_arena(&mut mem, 1).unwrap();
        let before = vmstat_lines(&k);
        // Names: Linux's, in Linux's order.
        let mut at = 0;
        for (name, _) in &before {
            let linux = name.as_str();
            let pos = LINUX_VMSTAT_ORDER[at..]
                .iter()
                .position(|n| *n == linux)
                .unwrap_or_else(|| panic!("{name} is not in Linux's order after {at}"));
            at += pos + 1;
        }
        // One pgalloc line per zone type of the layout, in zone order.
        let zones: Vec<String> = k
            .node(0)
            .zones()
            .map(|z| format!("pgalloc_{}", vmstat_zone_suffix(z.zone_type())))
            .collect();
        let pgalloc: Vec<String> = before
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| n.starts_with("pgalloc_"))
            .collect();
        assert_eq!(pgalloc, zones);
        for name in [
            "nr_slab_reclaimable",
            "nr_slab_unreclaimable",
            "allocstall_normal",
            "pgfree",
            "pgsteal_kswapd",
            "pgsteal_direct",
            "pgscan_kswapd",
            "pgscan_direct",
            "slabs_scanned",
            "pageoutrun",
            "oom_kill",
        ] {
            assert!(before.iter().any(|(n, _)| n == name), "{name}");
        }
        assert_eq!(value(&before, "nr_free_pages"), k.nr_free_pages());
        assert_eq!(value(&before, "allocstall_normal"), 0);
        assert_eq!(value(&before, "oom_kill"), 0);

        // Pages allocated and freed move pgalloc_* and pgfree by as many.
        let sum_pgalloc = |l: &[(String, u64)]| -> u64 {
            l.iter()
                .filter(|(n, _)| n.starts_with("pgalloc_"))
                .map(|(_, v)| v)
                .sum()
        };
        let pages: Vec<_> = (0..10)
            .map(|_| k.alloc_pages(GFP_KERNEL, 0).unwrap())
            .collect();
        let mid = vmstat_lines(&k);
        assert_eq!(sum_pgalloc(&mid), sum_pgalloc(&before) + 10);
        assert_eq!(value(&mid, "nr_free_pages"), k.nr_free_pages());
        for p in pages {
            k.__free_pages(p, 0).unwrap();
        }
        // A direct reclaim entry is counted under the request's highest
        // zone: GFP_KERNEL's is Normal, GFP_DMA's DMA.
        k.try_to_free_pages(GFP_KERNEL, 0, 0);
        k.try_to_free_pages(GFP_KERNEL | crate::gfp::__GFP_DMA, 0, 0);
        let after = vmstat_lines(&k);
        assert_eq!(value(&after, "pgfree"), value(&mid, "pgfree") + 10);
        assert_eq!(value(&after, "allocstall_normal"), 1);
        assert_eq!(value(&after, "allocstall_dma"), 1);
        let ev = k.vm_events();
        assert_eq!(value(&after, "pgsteal_direct"), ev.pgsteal_direct);
        assert_eq!(value(&after, "slabs_scanned"), ev.slabs_scanned);
    }
}
