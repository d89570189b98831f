//! The replay report: text for people, JSON for scripts.
//!
//! [`Report`] gathers a kmem replay's [`Outcome`], the machine, the final
//! `/proc/slabinfo`, `/proc/buddyinfo` and `/proc/meminfo` (through
//! [`kmem::proc`]) and, optionally, the same trace's replay against the
//! system allocator. It serialises to JSON with `serde`; the top-level keys
//! `events`, `events_per_sec`, `by_type` (event counts per type),
//! `unmatched_frees`, `failures`, `kmalloc_fidelity` (0..1, `null` when no
//! kmalloc was replayed), `peak_footprint_bytes`, `peak_live_bytes` and
//! `fragmentation` are the stable interface; the rest is detail (the
//! vmalloc events' comparisons are under `vmalloc`, [`VmallocOutcome`];
//! the percpu events' under `percpu`, [`PercpuOutcome`]).
//! [`Report::write_text`] prints the human form; [`crate::svg::plot`]
//! draws the footprint series.

use crate::engine::{CacheReport, Fidelity, Notes, Outcome, TypeStats};
use crate::parse::EventKind;
use crate::percpu::PercpuOutcome;
use crate::reclaim::ReclaimSource;
use crate::series::Point;
use crate::vmap::{VmallocOutcome, REORDER_WINDOW};
use crate::{KmemRun, Machine};
use kmem::Kmem;
use kmem_sim::SimPlatform;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::time::Duration;

/// The machine a trace ran on.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MachineReport {
    /// CPUs.
    pub cpus: usize,
    /// RAM in bytes.
    pub mem_bytes: u64,
    /// Pages the allocator manages (`MemTotal`).
    pub totalram_pages: u64,
    /// The machine's boot, seconds: not part of the replay's time.
    pub boot_sec: f64,
}

/// One event type's line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct TypeReport {
    /// `kmem:kmalloc`...
    pub name: &'static str,
    /// Whether kmem replays this type.
    pub replayed_by_kmem: bool,
    /// The counts.
    #[serde(flatten)]
    pub stats: TypeStats,
}

/// Fidelity ratios and their counts.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FidelityReport {
    /// kmalloc: allocated size (`ksize`) equals `bytes_alloc`.
    pub kmalloc: Fidelity,
    /// kmem_cache_alloc: the cache's slot size equals `bytes_alloc`.
    pub kmem_cache: Fidelity,
    /// mm_page_alloc (replayed): order obtained equals the trace's.
    pub page_order: Fidelity,
}

/// The same trace replayed against the system allocator.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SystemReport {
    /// Events per second on `malloc`/`free`.
    pub events_per_sec: f64,
    /// Replay time (parsing included, input waits excluded), seconds.
    pub replay_sec: f64,
    /// kmem's replay time over the system allocator's (above 1: kmem is
    /// slower).
    pub kmem_time_over_system: f64,
    /// CPU time of the parser and replaying threads, seconds.
    pub replay_cpu_sec: f64,
    /// kmem's replay CPU time over the system allocator's.
    pub kmem_cpu_time_over_system: f64,
}

/// The final `/proc` reports.
#[derive(Clone, Debug, Serialize)]
pub struct ProcReport {
    /// `/proc/slabinfo`.
    pub slabinfo: String,
    /// `/proc/buddyinfo`.
    pub buddyinfo: String,
    /// `/proc/meminfo`.
    pub meminfo: String,
}

/// A replay's report; see the [module docs](self).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The trace's name (its path).
    pub trace: String,
    /// The machine.
    pub machine: MachineReport,
    /// Event lines read (all types, unknown ones included).
    pub events: u64,
    /// Replay throughput: events over the replay time (parsing included,
    /// time waiting for decompression or I/O excluded).
    pub events_per_sec: f64,
    /// Replay time, seconds (input waits excluded).
    pub replay_sec: f64,
    /// Time waiting for the reader thread, seconds.
    pub input_wait_sec: f64,
    /// CPU time of the parser and replaying threads, seconds.
    pub replay_cpu_sec: f64,
    /// The parser thread's part of it.
    pub parse_cpu_sec: f64,
    /// Events per second of that CPU time (independent of other load on
    /// the host).
    pub events_per_cpu_sec: f64,
    /// Lines read.
    pub lines: u64,
    /// Lines that could not be replayed as written.
    pub malformed_lines: u64,
    /// The first of them, with line numbers.
    pub errors: Vec<String>,
    /// The first warnings Linux would print for the events, in its words.
    pub warnings: Vec<String>,
    /// The first events kmem failed, with their line and what was asked.
    pub failed: Vec<String>,
    /// Allocations kmem failed for want of memory.
    pub no_memory_failures: u64,
    /// The most bytes the trace holds live by its own account (what it
    /// asked for, whether or not kmem could allocate it).
    pub peak_traced_live_bytes: u64,
    /// When there were `ENOMEM` failures: a `--mem` that fits the trace.
    pub suggested_mem_bytes: Option<u64>,
    /// Replayed events per CPU of the trace (index: the trace's CPU id).
    pub cpu_events: Vec<u64>,
    /// The trace's CPUs the machine lacks, with their events, which ran as
    /// CPU `cpu % cpus`.
    pub folded_cpus: Vec<(usize, u64)>,
    /// Events of types outside the input format.
    pub unknown_events: u64,
    /// Their names and counts.
    pub unknown_names: BTreeMap<String, u64>,
    /// Events per type.
    pub by_type: BTreeMap<&'static str, u64>,
    /// Per type: events, replayed, failures, unmatched frees, skipped.
    pub types: Vec<TypeReport>,
    /// Types counted but not replayed (no such allocator in kmem yet).
    pub not_replayed: Vec<&'static str>,
    /// Frees of objects or pages allocated before the trace began.
    pub unmatched_frees: u64,
    /// Events kmem refused (allocation failures, refused frees).
    pub failures: u64,
    /// What the skipped events were.
    pub notes: Notes,
    /// Share of kmalloc events whose allocated size equals `bytes_alloc`
    /// (`None`, JSON `null`: no kmalloc replayed).
    pub kmalloc_fidelity: Option<f64>,
    /// Share of kmem_cache_alloc events whose cache slot size equals
    /// `bytes_alloc` (`None`: none replayed).
    pub kmem_cache_fidelity: Option<f64>,
    /// Share of replayed mm_page_alloc events given the traced order
    /// (`None`: none replayed).
    pub page_order_fidelity: Option<f64>,
    /// The counts behind the fidelity ratios.
    pub fidelity: FidelityReport,
    /// Caches created for the trace.
    pub caches: Vec<CacheReport>,
    /// The vmalloc events: what was compared with Linux and how it went.
    pub vmalloc: VmallocOutcome,
    /// The percpu events: what was compared with Linux and how it went.
    pub percpu: PercpuOutcome,
    /// Peak footprint sampled: slab + kmalloc_large + replayed pages.
    pub peak_footprint_bytes: u64,
    /// Peak live requested bytes.
    pub peak_live_bytes: u64,
    /// `peak_footprint_bytes / peak_live_bytes`.
    pub fragmentation: f64,
    /// Peak slab + kmalloc_large bytes sampled.
    pub peak_slab_bytes: u64,
    /// Peak live requested bytes of kmalloc and kmem_cache objects.
    pub peak_live_object_bytes: u64,
    /// `peak_slab_bytes / peak_live_object_bytes`: the objects' own
    /// overhead (size classes, slot padding, partly used slabs, sheaves).
    pub slab_fragmentation: f64,
    /// Live requested bytes at the end.
    pub live_bytes_at_end: u64,
    /// Objects and page blocks live at the end.
    pub live_objects_at_end: u64,
    /// Footprint over time (bounded; each point the peak of its stretch).
    pub footprint: Vec<Point>,
    /// Kernel messages printed during the replay.
    pub kernel_messages: u64,
    /// The first of them.
    pub kernel_log: Vec<String>,
    /// The system allocator's run of the same trace, if made.
    pub system: Option<SystemReport>,
    /// Whether the replay was stopped before the end of the trace.
    pub stopped: bool,
    /// The input error that ended the replay early, if any.
    pub input_error: Option<String>,
    /// The final `/proc` reports.
    pub proc: ProcReport,
}

/// `matched/compared = ratio%`, or `n/a (none ...)`.
fn fid(f: &Fidelity, none: &str) -> String {
    match f.ratio() {
        Some(r) => format!("{}/{} = {:.2}%", f.matched, f.compared, r * 100.0),
        None => format!("n/a ({none})"),
    }
}

/// A `--mem` for a trace that holds `peak` bytes live on a machine of
/// `mem` bytes that ran out: the peak with a quarter more for slab
/// overhead and 32 MiB for the machine's own use and reserves, rounded up
/// to a power of two, and more than `mem`.
fn suggest_mem(peak: u64, mem: u64) -> u64 {
    let need = peak + peak / 4 + (32 << 20);
    need.next_power_of_two().max((mem + 1).next_power_of_two())
}

/// `bytes` as `--mem` takes it (`256M`, `4G`).
fn size_arg(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes.div_ceil(1 << 20))
    }
}

fn proc_text(f: impl FnOnce(&mut String) -> fmt::Result) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = f(&mut s);
    s
}

impl Report {
    /// Gather the report of `run` on `k` (the machine `machine` describes),
    /// with the system allocator's run of the same trace if made.
    pub fn new(
        trace: &str,
        machine: Machine,
        k: &Kmem<&SimPlatform>,
        run: KmemRun,
        system: Option<&Outcome>,
    ) -> Report {
        let o = run.outcome;
        let kmem_sec = o.elapsed.saturating_sub(o.input_wait).as_secs_f64();
        let system = system.map(|s| {
            let sys_sec = s.elapsed.saturating_sub(s.input_wait).as_secs_f64();
            SystemReport {
                events_per_sec: s.events_per_sec(),
                replay_sec: sys_sec,
                kmem_time_over_system: if sys_sec > 0.0 {
                    kmem_sec / sys_sec
                } else {
                    0.0
                },
                replay_cpu_sec: s.cpu_time.as_secs_f64(),
                kmem_cpu_time_over_system: if s.cpu_time > Duration::ZERO {
                    o.cpu_time.as_secs_f64() / s.cpu_time.as_secs_f64()
                } else {
                    0.0
                },
            }
        });
        Report {
            trace: trace.to_string(),
            machine: MachineReport {
                cpus: machine.cpus,
                mem_bytes: machine.mem,
                totalram_pages: k.totalram_pages(),
                boot_sec: k.boot_time_ns() as f64 / 1e9,
            },
            events: o.events,
            events_per_sec: o.events_per_sec(),
            replay_sec: kmem_sec,
            input_wait_sec: o.input_wait.as_secs_f64(),
            replay_cpu_sec: o.cpu_time.as_secs_f64(),
            parse_cpu_sec: o.parse_cpu_time.as_secs_f64(),
            events_per_cpu_sec: o.events_per_cpu_sec(),
            lines: o.lines,
            malformed_lines: o.malformed_lines,
            errors: o.errors.clone(),
            warnings: o.warnings.clone(),
            failed: o.failed.clone(),
            no_memory_failures: o.no_memory_failures,
            peak_traced_live_bytes: o.peak_traced_live_bytes,
            suggested_mem_bytes: (o.no_memory_failures > 0)
                .then(|| suggest_mem(o.peak_traced_live_bytes, machine.mem)),
            cpu_events: o.cpu_events.clone(),
            folded_cpus: o.folded_cpus(),
            unknown_events: o.unknown_events,
            unknown_names: o.unknown_names.clone(),
            by_type: o
                .by_type
                .iter()
                .map(|(k, s)| (k.name(), s.events))
                .collect(),
            types: o
                .by_type
                .iter()
                .map(|&(k, stats)| TypeReport {
                    name: k.name(),
                    replayed_by_kmem: k.is_replayed(),
                    stats,
                })
                .collect(),
            not_replayed: EventKind::ALL
                .iter()
                .filter(|k| !k.is_replayed())
                .map(|k| k.name())
                .collect(),
            unmatched_frees: o.unmatched_frees(),
            failures: o.failures(),
            notes: o.notes,
            kmalloc_fidelity: o.kmalloc_fidelity.ratio(),
            kmem_cache_fidelity: o.kmem_cache_fidelity.ratio(),
            page_order_fidelity: o.page_fidelity.ratio(),
            fidelity: FidelityReport {
                kmalloc: o.kmalloc_fidelity,
                kmem_cache: o.kmem_cache_fidelity,
                page_order: o.page_fidelity,
            },
            caches: o.caches.clone(),
            vmalloc: o.vmalloc.clone(),
            percpu: o.percpu.clone(),
            peak_footprint_bytes: o.peak_footprint_bytes,
            peak_live_bytes: o.peak_live_bytes,
            fragmentation: o.fragmentation(),
            peak_slab_bytes: o.peak_slab_bytes,
            peak_live_object_bytes: o.peak_live_object_bytes,
            slab_fragmentation: o.slab_fragmentation(),
            live_bytes_at_end: o.live_bytes,
            live_objects_at_end: o.live_objects,
            footprint: o.series.clone(),
            kernel_messages: run.message_count,
            kernel_log: run.messages,
            system,
            stopped: o.stopped,
            input_error: run.input_error,
            proc: ProcReport {
                slabinfo: proc_text(|s| kmem::proc::slabinfo(k, s)),
                buddyinfo: proc_text(|s| kmem::proc::buddyinfo(k, s)),
                meminfo: proc_text(|s| kmem::proc::meminfo(k, s)),
            },
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    /// The vmalloc section of the text report (nothing when the trace has
    /// no vmalloc event).
    fn write_vmalloc<W: Write>(&self, w: &mut W) -> fmt::Result {
        let stats = |k: EventKind| {
            self.types
                .iter()
                .find(|t| t.name == k.name())
                .map(|t| t.stats)
                .unwrap_or_default()
        };
        let (alloc, free, purge) = (
            stats(EventKind::VmapAlloc),
            stats(EventKind::VmapFree),
            stats(EventKind::VmapPurge),
        );
        if alloc.events + free.events + purge.events == 0 {
            return Ok(());
        }
        let v = &self.vmalloc;
        writeln!(w)?;
        writeln!(
            w,
            "vmalloc (kmem's vmap_area allocator; areas are address ranges, no pages are mapped):"
        )?;
        writeln!(
            w,
            "  alloc_vmap_area: {} replayed, {} failed on kmem, {} failed in Linux (failed=1, not replayed)",
            alloc.replayed, alloc.failures, v.linux_failed_allocs
        )?;
        if free.events > 0 {
            writeln!(
                w,
                "  free_vmap_area_noflush: {} replayed, {} unmatched (allocated before the trace began), \
                 {} failed on kmem",
                free.replayed, free.unmatched_frees, free.failures
            )?;
        }
        if purge.events > 0 {
            writeln!(
                w,
                "  purge_vmap_area_lazy: {} that purged, replayed; {} of nothing (num_purged=0), not replayed",
                v.purges, v.empty_purges
            )?;
        }
        writeln!(w, "fidelity of vmalloc to Linux:")?;
        let row = |w: &mut W, label: &str, value: String| writeln!(w, "  {label:<48}{value}");
        row(
            w,
            "area aligned as traced:",
            fid(&v.aligned, "none replayed"),
        )?;
        if free.events + purge.events == 0 {
            return Ok(());
        }
        row(
            w,
            &format!(
                "nr_lazy_max equals lazy_max_pages() ({}):",
                v.lazy_max_pages
            ),
            fid(&v.nr_lazy_max, "no free"),
        )?;
        let mut rise = fid(&v.nr_lazy_rise, "none compared");
        if v.nr_lazy_not_compared > 0 {
            rise += &format!(
                " ({} not compared: no lower nr_lazy before)",
                v.nr_lazy_not_compared
            );
        }
        row(w, "nr_lazy rises by kmem's pages for the area:", rise)?;
        let mut purged = fid(&v.num_purged, "none compared");
        if v.num_purged_not_compared > 0 {
            purged += &format!(
                " ({} not compared: the trace's first purge also purges areas freed before it)",
                v.num_purged_not_compared
            );
        }
        row(w, "num_purged equals kmem's (+ areas not kmem's):", purged)?;
        let mut due = fid(&v.purges_due, "no purge traced");
        if v.purges_due.compared > 0 {
            due += &format!(" ({} on kmem's count alone)", v.purges_due_on_own_count);
        }
        row(w, "Linux's purges kmem found due:", due)?;
        let hint = if v.kmem_only_purges > 0 && purge.events == 0 {
            " (the trace has no vmalloc:purge_vmap_area_lazy event: record it, see docs/replay.md)"
        } else {
            ""
        };
        row(
            w,
            "purges kmem would make that Linux did not:",
            format!("{}{hint}", v.kmem_only_purges),
        )?;
        writeln!(
            w,
            "  how: a free's rise is over the next lower nr_lazy of its purge epoch within {REORDER_WINDOW} frees\n  \
             (two CPUs' frees may be traced out of order); the {} pages Linux freed lazily that kmem never\n  \
             held (before the trace, or of areas allocated before it) count toward a purge due, their areas\n  \
             toward num_purged",
            v.unseen_lazy_pages
        )?;
        if !v.mismatches.is_empty() {
            writeln!(w, "  first disagreements with Linux:")?;
            for m in &v.mismatches {
                writeln!(w, "    {m}")?;
            }
        }
        Ok(())
    }

    /// The percpu section of the text report (nothing when the trace has
    /// no percpu event).
    fn write_percpu<W: Write>(&self, w: &mut W) -> fmt::Result {
        let stats = |k: EventKind| {
            self.types
                .iter()
                .find(|t| t.name == k.name())
                .map(|t| t.stats)
                .unwrap_or_default()
        };
        let (alloc, free, fail, create, destroy) = (
            stats(EventKind::PercpuAlloc),
            stats(EventKind::PercpuFree),
            stats(EventKind::PercpuAllocFail),
            stats(EventKind::PercpuCreateChunk),
            stats(EventKind::PercpuDestroyChunk),
        );
        if alloc.events + free.events + fail.events + create.events + destroy.events == 0 {
            return Ok(());
        }
        let p = &self.percpu;
        let kib = |b: u64| b as f64 / 1024.0;
        writeln!(w)?;
        writeln!(
            w,
            "percpu (kmem's per-CPU allocator; memcg's overhead is in the full size, nothing is charged):"
        )?;
        let mut kinds = format!("{} reserved, {} atomic", p.reserved, p.atomic);
        if p.reserved_other_gfp > 0 {
            kinds += &format!(
                "; {} reserved with other GFP flags than GFP_KERNEL, replayed with it",
                p.reserved_other_gfp
            );
        }
        writeln!(
            w,
            "  percpu_alloc_percpu: {} replayed ({kinds}), {} failed on kmem, {} failed in Linux \
             (percpu_alloc_percpu_fail, not replayed)",
            alloc.replayed, alloc.failures, p.linux_failed_allocs
        )?;
        if p.gfp_not_traced > 0 {
            writeln!(
                w,
                "    {} without gfp_flags (a kernel before 6.0): replayed with GFP_KERNEL, or GFP_NOWAIT when is_atomic=1",
                p.gfp_not_traced
            )?;
        }
        writeln!(
            w,
            "  percpu_free_percpu: {} replayed, {} unmatched (allocated before the trace began), \
             {} failed on kmem; {} implicit frees (Linux reused the ptr unseen)",
            free.replayed, free.unmatched_frees, free.failures, p.implicit_frees
        )?;
        if let Some(u) = p.kmem_at_end {
            writeln!(
                w,
                "  kmem's chunks: {} at the end, {} at most; its per-CPU memory at the end: {} pages \
                 (Percpu: {} kB in /proc/meminfo)",
                u.chunks,
                u.max_chunks,
                u.pages,
                u.pages * kmem::PAGE_SIZE as u64 / 1024
            )?;
        }
        if create.events + destroy.events > 0 {
            writeln!(
                w,
                "  Linux's chunks: {} created, {} destroyed (percpu_create_chunk, \
                 percpu_destroy_chunk: counted, not replayed)",
                p.linux_chunks_created, p.linux_chunks_destroyed
            )?;
        }
        writeln!(
            w,
            "  live on kmem: {} allocations at the end ({:.1} KiB full size), {} at most ({:.1} KiB at most)",
            p.live,
            kib(p.live_bytes),
            p.peak_live,
            kib(p.peak_live_bytes)
        )?;
        writeln!(w, "fidelity of percpu to Linux:")?;
        let row = |w: &mut W, label: &str, value: String| writeln!(w, "  {label:<48}{value}");
        let mut full = fid(&p.full_size, "none compared");
        if p.full_size.compared > 0 {
            full += &format!(
                " ({}: {} possible CPUs, memcg {})",
                p.full_size_formula(),
                p.nr_possible_cpus,
                if p.memcg { "on" } else { "off" }
            );
        }
        if p.full_size_not_compared > 0 {
            full += &format!(
                " ({} not compared: no bytes_alloc in the trace, a kernel before 6.0)",
                p.full_size_not_compared
            );
        }
        row(w, "pcpu_obj_full_size() equals bytes_alloc:", full)?;
        row(
            w,
            "is_atomic agrees with the GFP flags:",
            fid(&p.is_atomic, "no gfp_flags traced"),
        )?;
        row(
            w,
            "area aligned as traced:",
            fid(&p.aligned, "none replayed"),
        )?;
        if !p.mismatches.is_empty() {
            writeln!(w, "  first disagreements with Linux:")?;
            for m in &p.mismatches {
                writeln!(w, "    {m}")?;
            }
        }
        Ok(())
    }

    /// The human-readable report.
    pub fn write_text(&self, w: &mut impl Write) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        writeln!(
            w,
            "kmem replay of {} on a simulated machine: {} CPU{}, {:.1} GiB (booted in {:.1} ms, not counted below)",
            self.trace,
            self.machine.cpus,
            if self.machine.cpus == 1 { "" } else { "s" },
            self.machine.mem_bytes as f64 / (1u64 << 30) as f64,
            self.machine.boot_sec * 1e3
        )?;
        writeln!(
            w,
            "{} events in {:.3} s: {:.2} M events/s (parsing included; {:.3} s waiting for input not counted)",
            self.events,
            self.replay_sec,
            self.events_per_sec / 1e6,
            self.input_wait_sec
        )?;
        writeln!(
            w,
            "CPU time {:.3} s (parser thread {:.3} s, replay thread {:.3} s): {:.2} M events per CPU second",
            self.replay_cpu_sec,
            self.parse_cpu_sec,
            self.replay_cpu_sec - self.parse_cpu_sec,
            self.events_per_cpu_sec / 1e6
        )?;
        if let Some(s) = &self.system {
            writeln!(
                w,
                "system allocator (malloc/free of the traced sizes, same parser and maps): {:.3} s, {:.2} M events/s, CPU time {:.3} s; kmem takes {:.2}x its time ({:.2}x its CPU time)",
                s.replay_sec,
                s.events_per_sec / 1e6,
                s.replay_cpu_sec,
                s.kmem_time_over_system,
                s.kmem_cpu_time_over_system
            )?;
        }
        if self.stopped {
            writeln!(w, "stopped before the end of the trace")?;
        }
        if let Some(e) = &self.input_error {
            writeln!(w, "input error, replay ended early: {e}")?;
        }
        if !self.folded_cpus.is_empty() {
            let list: Vec<String> = self
                .folded_cpus
                .iter()
                .map(|&(c, n)| format!("CPU {c} ({n} events) as CPU {}", c % self.machine.cpus))
                .collect();
            let need = self.cpu_events.len();
            writeln!(
                w,
                "the trace has events on CPUs the machine lacks (first seen after the machine \
                 was sized, or more than --cpus gave): they ran on the machine's CPUs: {}; \
                 replay with --cpus {need} to give each its own",
                list.join(", ")
            )?;
        }

        writeln!(w)?;
        writeln!(
            w,
            "{:<32} {:>9} {:>9} {:>9} {:>10} {:>9}",
            "event", "events", "replayed", "failures", "unmatched", "skipped"
        )?;
        let mut total = TypeStats::default();
        for t in &self.types {
            let s = t.stats;
            let counted_only =
                EventKind::from_name(t.name.as_bytes()).and_then(|k| k.counted_only());
            if counted_only.is_some() && s.events == 0 {
                // Rare kinds: listed when the trace has them.
                continue;
            }
            write!(
                w,
                "{:<32} {:>9} {:>9} {:>9} {:>10} {:>9}",
                t.name, s.events, s.replayed, s.failures, s.unmatched_frees, s.skipped
            )?;
            if let Some(why) = counted_only {
                write!(w, "  {why}")?;
            } else if !t.replayed_by_kmem {
                write!(
                    w,
                    "  not replayed: kmem has no {} yet",
                    t.name.split(':').next().unwrap_or("")
                )?;
            }
            writeln!(w)?;
            total.events += s.events;
            total.replayed += s.replayed;
            total.failures += s.failures;
            total.unmatched_frees += s.unmatched_frees;
            total.skipped += s.skipped;
        }
        if self.unknown_events > 0 {
            // Counted in the header's events: listed, so the total agrees.
            writeln!(
                w,
                "{:<32} {:>9} {:>9} {:>9} {:>10} {:>9}  not replayed: not allocator events",
                "(other event types)", self.unknown_events, 0, 0, 0, self.unknown_events
            )?;
            total.events += self.unknown_events;
            total.skipped += self.unknown_events;
        }
        writeln!(
            w,
            "{:<32} {:>9} {:>9} {:>9} {:>10} {:>9}",
            "total",
            total.events,
            total.replayed,
            total.failures,
            total.unmatched_frees,
            total.skipped
        )?;
        writeln!(
            w,
            "malformed lines: {}; unknown events: {}{}",
            self.malformed_lines,
            self.unknown_events,
            if self.unknown_names.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.unknown_names
                        .iter()
                        .map(|(n, c)| format!("{n}: {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )?;
        for e in &self.errors {
            writeln!(w, "  {e}")?;
        }
        if !self.failed.is_empty() {
            writeln!(w, "failed on kmem (the first {}):", self.failed.len())?;
            for l in &self.failed {
                writeln!(w, "  {l}")?;
            }
        }
        if let Some(m) = self.suggested_mem_bytes {
            writeln!(
                w,
                "kmem ran out of memory {} times: the machine has {:.1} MiB (MemTotal), and the trace \
                 holds up to {:.1} MiB live (what it asked for), slabs and the machine's reserves \
                 taking more: replay with a larger --mem, such as --mem {}",
                self.no_memory_failures,
                (self.machine.totalram_pages * kmem::PAGE_SIZE as u64) as f64 / (1u64 << 20) as f64,
                self.peak_traced_live_bytes as f64 / (1u64 << 20) as f64,
                size_arg(m)
            )?;
        }
        if self.notes.wrong_cache_frees > 0 {
            writeln!(
                w,
                "warnings Linux prints for these events: {}",
                self.notes.wrong_cache_frees
            )?;
            for l in &self.warnings {
                writeln!(w, "  {l}")?;
            }
        }
        let n = &self.notes;
        writeln!(w, "skipped and implied events:")?;
        writeln!(
            w,
            "  kfree(NULL), a no-op:                         {}",
            n.kfree_null
        )?;
        writeln!(
            w,
            "  Linux's slab pages, left to kmem's slab:      {} allocations, {} frees",
            n.slab_page_allocs_left_to_slab, n.slab_page_frees_left_to_slab
        )?;
        writeln!(
            w,
            "  mm_page_free_batched repeating mm_page_free:  {}",
            n.batched_free_repeats
        )?;
        writeln!(
            w,
            "  page allocations folded into kmalloc_large:   {}",
            n.page_allocs_folded_into_kmalloc
        )?;
        writeln!(
            w,
            "  allocations that failed in Linux:             {}",
            n.linux_failed_allocs
        )?;
        writeln!(
            w,
            "  implicit frees (Linux reused the address):    {}",
            n.implicit_frees
        )?;
        writeln!(
            w,
            "  page frees with another order than allocated: {}",
            n.page_free_order_mismatches
        )?;
        writeln!(
            w,
            "  kmem_cache_free of another cache's object:    {} (freed from the object's cache, as Linux does)",
            n.wrong_cache_frees
        )?;
        writeln!(
            w,
            "  frees of allocations kmem failed:             {}",
            n.frees_of_failed_allocs
        )?;

        writeln!(w)?;
        writeln!(w, "fidelity to Linux:")?;
        let fid = |f: &Fidelity| fid(f, "none replayed");
        writeln!(
            w,
            "  kmalloc, allocated size equals bytes_alloc:     {}",
            fid(&self.fidelity.kmalloc)
        )?;
        writeln!(
            w,
            "  kmem_cache, slot size equals bytes_alloc:       {}",
            fid(&self.fidelity.kmem_cache)
        )?;
        writeln!(
            w,
            "  mm_page_alloc, order obtained equals traced:    {}",
            fid(&self.fidelity.page_order)
        )?;
        let created: Vec<&CacheReport> = self.caches.iter().filter(|c| c.created()).collect();
        let off: Vec<&&CacheReport> = created.iter().filter(|c| c.size != c.linux_size).collect();
        writeln!(
            w,
            "  caches created: {} ({} with a slot size other than Linux's)",
            created.len(),
            off.len()
        )?;
        for c in off {
            writeln!(
                w,
                "    {}: object {} B, Linux {} B, kmem {} B",
                c.name, c.object_size, c.linux_size, c.size
            )?;
        }
        let failed: Vec<&CacheReport> = self.caches.iter().filter(|c| !c.created()).collect();
        if !failed.is_empty() {
            writeln!(
                w,
                "  caches kmem refused to create: {} (their allocations are failures)",
                failed.len()
            )?;
            for c in failed {
                writeln!(
                    w,
                    "    {}: object {} B: {}",
                    c.name,
                    c.object_size,
                    c.error.as_deref().unwrap_or("")
                )?;
            }
        }
        let rcl: Vec<&&CacheReport> = created.iter().filter(|c| c.reclaimable).collect();
        let from_trace = rcl
            .iter()
            .filter(|c| c.reclaim_source == ReclaimSource::Trace)
            .count();
        writeln!(
            w,
            "  SLAB_RECLAIM_ACCOUNT: {} ({} by Linux's slab pages in the trace, {} by Linux's flags for the cache)",
            rcl.len(),
            from_trace,
            rcl.len() - from_trace
        )?;
        for c in created.iter().filter(|c| c.reclaim_disagrees()) {
            writeln!(
                w,
                "    {}: {} SLAB_RECLAIM_ACCOUNT, but {} of the {} Linux slab pages the trace pairs with it are reclaimable",
                c.name,
                if c.reclaimable { "with" } else { "without" },
                c.linux_slab_pages.reclaimable,
                c.linux_slab_pages.reclaimable + c.linux_slab_pages.unreclaimable
            )?;
        }

        self.write_vmalloc(w)?;
        self.write_percpu(w)?;

        writeln!(w)?;
        writeln!(
            w,
            "memory (slab + kmalloc_large + replayed page-allocator pages):"
        )?;
        let peak = self
            .footprint
            .iter()
            .max_by_key(|p| p.footprint_bytes)
            .copied()
            .unwrap_or_default();
        writeln!(
            w,
            "  peak footprint {:.1} MiB (slab {:.1}, kmalloc_large {:.1}, pages {:.1}) at event {} (t = {:.2} s)",
            mib(self.peak_footprint_bytes),
            mib(peak.slab_bytes),
            mib(peak.kmalloc_large_bytes),
            mib(peak.page_bytes),
            peak.event,
            peak.time_s
        )?;
        writeln!(
            w,
            "  peak live requested {:.1} MiB",
            mib(self.peak_live_bytes)
        )?;
        writeln!(
            w,
            "  fragmentation (peak footprint / peak live requested): {:.3}",
            self.fragmentation
        )?;
        writeln!(
            w,
            "  objects alone: peak slab + kmalloc_large {:.1} MiB for a peak of {:.1} MiB requested: {:.3}",
            mib(self.peak_slab_bytes),
            mib(self.peak_live_object_bytes),
            self.slab_fragmentation
        )?;
        writeln!(
            w,
            "  at the end: {:.1} MiB requested live in {} objects and page blocks",
            mib(self.live_bytes_at_end),
            self.live_objects_at_end
        )?;
        if !self.footprint.is_empty() {
            writeln!(
                w,
                "  {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                "t (s)", "event", "footprint", "slab", "pages", "live", "free MiB"
            )?;
            let rows = 10.min(self.footprint.len());
            for i in 0..rows {
                let p = &self.footprint[(i * (self.footprint.len() - 1)) / (rows - 1).max(1)];
                writeln!(
                    w,
                    "  {:>9.2} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                    p.time_s,
                    p.event,
                    mib(p.footprint_bytes),
                    mib(p.slab_bytes),
                    mib(p.page_bytes),
                    mib(p.live_bytes),
                    mib(p.free_bytes)
                )?;
            }
        }
        if self.kernel_messages > 0 {
            writeln!(w)?;
            writeln!(
                w,
                "kernel messages during the replay: {}",
                self.kernel_messages
            )?;
            for l in &self.kernel_log {
                writeln!(w, "  {l}")?;
            }
        }
        writeln!(w)?;
        writeln!(w, "$ cat /proc/slabinfo")?;
        w.write_str(&self.proc.slabinfo)?;
        writeln!(w)?;
        writeln!(w, "$ cat /proc/buddyinfo")?;
        w.write_str(&self.proc.buddyinfo)?;
        writeln!(w)?;
        writeln!(w, "$ cat /proc/meminfo")?;
        w.write_str(&self.proc.meminfo)
    }
}
