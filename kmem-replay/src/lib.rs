//! # kmem-replay: real Linux allocation traces through kmem
//!
//! Kernel developers record what their kernel allocates with perf
//! (`perf record -e kmem:kmalloc,kmem:kfree,...` then `perf script -F
//! comm,tid,cpu,time,event,trace`). This crate takes that text as it is,
//! plain or xz-compressed, and replays it on a simulated machine running
//! kmem, then reports how it went: events per second, per-type counts,
//! failures and skips, the fidelity of kmem's sizes to Linux's, the memory
//! footprint over time and its peak, fragmentation, and the final
//! `/proc/slabinfo`, `/proc/buddyinfo` and `/proc/meminfo`.
//!
//! ## Pieces
//!
//! * [`input`]: a reader thread decompresses (liblzma) and cuts the trace
//!   into chunks of whole lines, sent through a bounded channel and
//!   recycled: constant memory whatever the trace length.
//! * [`parse`]: each line is parsed from its bytes, no regex, no allocation.
//! * [`ops`]: a parser thread turns lines into fixed-size owned operations
//!   (GFP flags parsed, names interned) in recycled batches, so parsing
//!   runs on a second core while the replay applies the previous batch.
//! * [`engine`]: the replay loop, the maps from the traced kernel's
//!   pointers and page frames to the target's, and every count. Its module
//!   docs list the replay's decisions (address reuse, unmatched frees,
//!   Linux's own slab pages, kmalloc_large).
//! * [`target`]: what the engine replays against: [`KmemTarget`] (kmem on a
//!   [`SimPlatform`], each event run as its CPU and task) or
//!   [`SystemTarget`] (the host's `malloc`/`free`, for comparison: same
//!   parser, same maps).
//! * [`vmap`]: what the vmalloc events' replay compares with Linux
//!   (`nr_lazy`, `nr_lazy_max`, purges), and how.
//! * [`percpu`]: how the percpu events are replayed and what is compared
//!   with Linux (the full size `bytes_alloc`, `is_atomic`, alignment).
//! * [`series`]: the bounded footprint time series.
//! * [`report`]: the text report, the JSON (`serde`) and the SVG plot.
//!
//! ## Driving a replay
//!
//! The engine runs against a booted `&Kmem<&SimPlatform>` on the calling
//! thread (it binds itself to the machine's CPUs, one at a time); other
//! threads may read the machine's `/proc` reports meanwhile (the core's
//! [`kmem::proc`] functions are safe to call concurrently) and follow the
//! replay through the progress callback, which may also stop it or slow it
//! down. That is how a live view such as `kmem slabtop` plugs in:
//!
//! ```no_run
//! use kmem_replay::{replay_kmem, Machine, ReplayOptions, TraceInput};
//!
//! let mut input = TraceInput::open("my.trace.xz").unwrap();
//! let machine = Machine::for_trace(&mut input, None, 24 << 30).unwrap(); // no events: Err
//! let sim = machine.platform().unwrap();
//! let k = machine.boot(&sim).unwrap();
//! std::thread::scope(|s| {
//!     let k = &k;
//!     let replay = s.spawn(move || {
//!         let mut every_chunk = |p: &kmem_replay::Progress| {
//!             eprintln!("{} events", p.events);
//!             true // false stops the replay
//!         };
//!         let mut opts = ReplayOptions { progress: Some(&mut every_chunk), ..Default::default() };
//!         replay_kmem(k, &mut input, &mut opts)
//!     });
//!     // Meanwhile, on this thread:
//!     let mut text = String::new();
//!     kmem::proc::slabinfo(k, &mut text).unwrap();
//!     let run = replay.join().unwrap();
//!     println!("{:.1} M events/s", run.outcome.events_per_sec() / 1e6);
//! });
//! ```
//!
//! ## Decisions a kernel developer should know
//!
//! * Events are replayed sequentially in trace order on one thread that
//!   takes each event's CPU identity ([`kmem_sim::CpuBinding::switch_to`])
//!   and thread name, so per-CPU sheaves, per-CPU page lists and remote
//!   frees behave as on the traced machine. The machine has as many CPUs as
//!   the trace's `perf script --header` or, without it, its first 8 MiB
//!   show ([`Machine::for_trace`]; `--cpus` overrides); an event on a CPU
//!   the machine lacks runs as CPU `cpu % cpus` and the report says so. By
//!   default the machine has the memory of the machine the bundled trace
//!   was recorded on (24 GiB, its `/proc/meminfo`).
//! * perf recorded only the workload's tasks, so many frees (RCU callbacks,
//!   kworkers) are missing from a trace: an address Linux hands out again
//!   is freed on kmem first (an *implicit free*), and what the trace never
//!   frees stays live on kmem too.
//! * `mm_page_alloc` events of Linux's own slab allocator are recognised by
//!   their GFP flags and left to kmem's slab (see
//!   [`engine::is_linux_slab_page`]). On the bundled trace, checked
//!   against the ground truth (the page frames Linux's slab objects lie
//!   in): all 803 pages the rule picks hold slab objects, and it misses one
//!   (a `GFP_NOWAIT` page that was freed where perf could not see it and
//!   then reused by the slab).
//! * Caches are created on first sight by name and object size, with flags
//!   inferred from Linux's slot size ([`engine::infer_cache_flags`]),
//!   `SLAB_RECLAIM_ACCOUNT` where Linux's slab pages for them carry
//!   `__GFP_RECLAIMABLE` or, without such evidence, where Linux creates
//!   them so ([`reclaim`]), and never merged.
//! * GFP flags are parsed with [`kmem::gfp`] and passed through unchanged;
//!   `kmalloc` with a node uses `kmalloc_node`.
//! * `vmalloc:*` events are replayed on kmem's vmap_area allocator:
//!   areas of the traced size and alignment (address ranges, no pages
//!   mapped), freed lazily as traced, purged where the trace shows Linux
//!   purging; the report compares `nr_lazy`, `nr_lazy_max` and
//!   `num_purged` with the trace's ([`vmap`]).
//! * `percpu:*` events are replayed on kmem's per-CPU allocator:
//!   allocations of the traced size, alignment and GFP flags (from the
//!   reserved chunk where the trace says so) keyed by the traced `ptr`,
//!   freed as traced; each one's full size (`pcpu_obj_full_size()`, memcg's
//!   overhead included) is compared with the trace's `bytes_alloc`, which
//!   matches when the machine has the traced machine's possible CPUs.
//!   Linux's failures and chunk events are counted ([`percpu`]).

#![warn(missing_docs)]

pub mod engine;
pub mod input;
pub mod ops;
pub mod parse;
pub mod percpu;
pub mod reclaim;
pub mod report;
pub mod scan;
pub mod series;
pub mod spread;
pub mod svg;
pub mod target;
pub mod vmap;

pub use engine::{Engine, Outcome, Progress, ReplayOptions};
pub use input::TraceInput;
pub use report::Report;
pub use target::{KmemTarget, SystemTarget, Target};

use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimError, SimPlatform};

/// Bytes of the trace read before the machine is built
/// ([`TraceInput::scan_head`]): its CPUs, whether it holds events at all,
/// and which caches' slab pages Linux took reclaimable.
pub const CPU_PEEK_BYTES: usize = 8 << 20;

/// The simulated machine a trace is replayed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    /// CPUs.
    pub cpus: usize,
    /// RAM in bytes (a PC memory map of this size, see
    /// [`kmem_sim::pc_memory_map`]).
    pub mem: u64,
}

impl Machine {
    /// The machine for `input`: `cpus` CPUs if given, else as many as the
    /// trace's `perf script --header` says (`# nrcpus avail`) or, without
    /// that header, as its first [`CPU_PEEK_BYTES`] show (at least 1, at
    /// most kmem's `NR_CPUS`); `mem` bytes of RAM. Events on CPUs the
    /// machine lacks are replayed on CPU `cpu % cpus` and reported (see
    /// [`engine`]).
    ///
    /// Fails, naming the trace, when those bytes hold no perf script event
    /// at all ([`scan::HeadScan::no_events`]) or could not be read.
    pub fn for_trace(
        input: &mut TraceInput,
        cpus: Option<usize>,
        mem: u64,
    ) -> Result<Machine, String> {
        let name = input.name().to_string();
        let head = input.scan_head(CPU_PEEK_BYTES);
        if let Some(e) = &head.error {
            return Err(format!("{name}: {e}: the trace could not be read"));
        }
        if let Some(e) = head.no_events(&name) {
            return Err(e);
        }
        let cpus = cpus.unwrap_or_else(|| head.machine_cpus());
        Ok(Machine { cpus, mem })
    }

    /// Build the simulated platform.
    pub fn platform(&self) -> Result<SimPlatform, SimError> {
        SimPlatform::new(SimConfig::new(self.cpus, pc_memory_map(self.mem)))
    }

    /// Boot kmem on `sim` with Linux's defaults (the calling thread is bound
    /// to CPU 0 for the boot and unbound after). The boot log is dropped;
    /// a failed boot gives one line: the kernel's first error message and
    /// what to change.
    pub fn boot<'s>(&self, sim: &'s SimPlatform) -> Result<Kmem<&'s SimPlatform>, String> {
        let _cpu = sim.bind(0);
        let k = Kmem::boot(sim, sim.memory_map(), &BootParams::default());
        let log = sim.take_reports();
        k.map_err(|e| {
            let why = log
                .iter()
                .find(|(l, _)| *l <= kmem::platform::Level::Err)
                .or_else(|| {
                    log.iter()
                        .find(|(l, _)| *l <= kmem::platform::Level::Warning)
                })
                .map(|(_, l)| format!(": {l}"))
                .unwrap_or_default();
            format!(
                "--mem {}: boot failed: {e}{why}; give a larger --mem",
                size_text(self.mem)
            )
        })
    }
}

/// A finished replay on kmem: the counts and the machine's messages.
#[derive(Debug)]
pub struct KmemRun {
    /// Everything counted.
    pub outcome: Outcome,
    /// The first kernel messages printed during the replay.
    pub messages: Vec<String>,
    /// How many there were.
    pub message_count: u64,
    /// The error that ended the input early (I/O, decompression), if any.
    pub input_error: Option<String>,
}

/// Replay `input` on the booted machine `k`, on the calling thread (which
/// must not be bound to `k`'s machine; it is bound to its CPUs in turn and
/// unbound at the end). Blocks until the trace ends or the progress
/// callback stops it.
pub fn replay_kmem(
    k: &Kmem<&SimPlatform>,
    input: &mut TraceInput,
    opts: &mut ReplayOptions<'_>,
) -> KmemRun {
    let target = KmemTarget::new(k, 0);
    let mut engine = Engine::new(target, k.nr_cpus() as u32, 0, opts);
    let input_error = engine.run(input, opts).err().map(|e| e.to_string());
    let (target, outcome) = engine.finish();
    let (messages, message_count) = target.into_messages();
    KmemRun {
        outcome,
        messages,
        message_count,
        input_error,
    }
}

/// Replay `input` against the system allocator with the same parser and
/// maps, for comparison (`nr_cpus` only bounds the CPU ids accepted, as on
/// kmem's machine). The I/O error that ended the input early, if any, is
/// returned beside the counts.
pub fn replay_system(
    input: &mut TraceInput,
    nr_cpus: usize,
    opts: &mut ReplayOptions<'_>,
) -> (Outcome, Option<String>) {
    let mut engine = Engine::new(SystemTarget::new(), nr_cpus as u32, 0, opts);
    let err = engine.run(input, opts).err().map(|e| e.to_string());
    // What the trace left live goes back to the host (outside the timing).
    let (_, outcome) = engine.finish_releasing_all();
    (outcome, err)
}

/// `bytes` as `--mem` would take it back: the largest unit that divides it.
fn size_text(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}
