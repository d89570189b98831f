//! The replay loop: lines in, target calls out, everything counted.
//!
//! [`Engine`] takes the ops the parser thread makes of a [`TraceInput`]'s
//! lines ([`crate::ops`]), keeps the maps from the traced kernel's object
//! addresses and page frame numbers to the [`Target`]'s handles
//! (`hashbrown` maps with the `foldhash` hasher), and calls the target. The
//! decisions below are the replay's contract; the [crate docs](crate)
//! explain why.
//!
//! * **CPU and task.** Events run in trace order; before an event whose CPU
//!   (or thread) differs from the previous one the target switches
//!   ([`Target::set_cpu`], [`Target::set_task`]). An event on a CPU the
//!   machine does not have (one first seen after the machine was sized
//!   from the trace's head, or `--cpus` gave fewer) runs as CPU
//!   `cpu % nr_cpus`; [`Outcome::cpu_events`] counts the events of each of
//!   the trace's CPUs, so the report can say which ran elsewhere. A CPU id
//!   at or above kmem's `NR_CPUS` is a malformed line.
//! * **Address reuse.** An allocation at an address (or page frame) the map
//!   still holds means Linux freed the old object where the trace could not
//!   see it (an RCU callback, a kworker, another process: perf recorded only
//!   the workload's tasks). The old object is freed on the target first and
//!   counted as an *implicit free*.
//! * **Unmatched frees.** A free of an address the map does not hold was
//!   allocated before the trace began: counted per type, skipped.
//!   `kfree(NULL)` (`ptr=(nil)`) is a no-op, counted as such.
//! * **Failed Linux allocations** (`ptr=(nil)`, `page=(nil)`) are counted
//!   and not replayed.
//! * **Failed kmem allocations** (a machine too small for the trace, say)
//!   are counted per type, the first ones kept with their line, what was
//!   asked and kmem's error ([`Outcome::failed`]), and the replay goes on.
//!   The address stays mapped, as failed, so the trace's later free of it
//!   is counted as such (not as unmatched) and the trace's own live bytes
//!   ([`Outcome::peak_traced_live_bytes`]: what it asked for, whatever kmem
//!   managed) tell how much memory it needs.
//! * **Slab pages.** Linux's `mm_page_alloc` also reports the pages its own
//!   slab allocator takes; kmem's slab takes its own for the replayed object
//!   events, so replaying both would count slab memory twice. A page
//!   allocation is Linux's slab's when its GFP flags carry what
//!   `allocate_slab()` adds on its first try, `__GFP_COMP | __GFP_NOWARN |
//!   __GFP_NORETRY`, and it is not movable or highmem (page cache readahead
//!   and large folios have the same three flags but are always
//!   `__GFP_MOVABLE`): see [`is_linux_slab_page`]. Such allocations (and
//!   their frees) are counted and left to kmem's slab.
//! * **kmalloc_large.** A `kmalloc` above the largest kmalloc cache is
//!   reported by Linux as an `mm_page_alloc` immediately followed, on the
//!   same CPU and thread, by the `kmalloc`. The page allocation has already
//!   been replayed by then; it is undone, and kmem's own `kmalloc` takes its
//!   pages (counted as *folded into kmalloc*).
//! * **Batched page frees.** Linux 6.18 reports a page freed through
//!   `free_unref_folios()` twice: `mm_page_free` (from
//!   `free_pages_prepare()`) and then `mm_page_free_batched`, a few events
//!   later on the same CPU (on the bundled trace every one of the 15,315
//!   batched frees follows an `mm_page_free` of the same frame, at most 31
//!   lines before). A batched free of a frame the same CPU freed within
//!   its last [`RECENT_FREES`] page frees is that second report: counted as
//!   such and skipped. A batched free of a live frame (a kernel that
//!   reports it once) is replayed.
//! * **Caches** are created on first sight of a (name, object size) pair
//!   with the flags [`infer_cache_flags`] derives from the trace, and
//!   `SLAB_RECLAIM_ACCOUNT` as [`crate::reclaim`] decides from the Linux
//!   slab pages paired with the cache so far.
//! * **Wrong cache.** A `kmem_cache_free` naming another cache than the one
//!   the object was allocated from is what Linux's `cache_from_obj()` warns
//!   about: the replay records the warning in Linux's words
//!   ([`Outcome::warnings`]) and frees the object from its own cache, as
//!   Linux does (with `CONFIG_SLAB_FREELIST_HARDENED`, the distributions'
//!   setting). Checked for objects of the caches the replay created (a
//!   kmalloc object's cache is kmem's choice, not the trace's).
//! * **vmap areas.** `vmalloc:alloc_vmap_area` allocates an area of the
//!   traced size and alignment ([`Target::alloc_vmap_area`]) keyed by the
//!   traced `va_start`, `vmalloc:free_vmap_area_noflush` frees it lazily,
//!   and a `vmalloc:purge_vmap_area_lazy` that purged something purges
//!   kmem's lazily freed areas: kmem purges where Linux did. Failed tries
//!   (`failed=1`) and purges of nothing are counted, not replayed; an
//!   allocation at a `va_start` the map still holds frees the old area at
//!   once (an implicit free, as for objects). What is compared with Linux
//!   (`nr_lazy`, `nr_lazy_max`, `num_purged`, when a purge is due) and how
//!   is in [`crate::vmap`]; the counts are [`Outcome::vmalloc`].
//! * **Per-CPU allocations.** `percpu:percpu_alloc_percpu` allocates the
//!   traced size and alignment with the traced GFP flags
//!   ([`Target::alloc_percpu`]; from the reserved chunk for `reserved=1`)
//!   keyed by the traced `ptr`, and `percpu:percpu_free_percpu` frees it;
//!   unmatched frees, implicit frees and kmem's failures are handled as
//!   for objects. Linux's failures (`percpu_alloc_percpu_fail`) and chunk
//!   events are counted only. Each replayed allocation's full size is
//!   compared with the traced `bytes_alloc` ([`crate::percpu`]; the counts
//!   are [`Outcome::percpu`]). Per-CPU memory is reported in its own
//!   section, not in the footprint and live bytes above.

use crate::input::TraceInput;
use crate::ops::{Batch, Op, OpKind, Parser, BATCH_DEPTH};
use crate::parse::EventKind;
use crate::percpu::PercpuOutcome;
use crate::reclaim::{Evidence, ReclaimSource, SlabPageTracker};
use crate::series::{Point, Series};
use crate::target::{CacheSpec, MemSample, Target};
use crate::vmap::{Free, LazyCheck, VmallocOutcome};
use kmem::gfp::{
    Gfp, __GFP_ACCOUNT, __GFP_COMP, __GFP_DIRECT_RECLAIM, __GFP_HIGHMEM, __GFP_MOVABLE,
    __GFP_NORETRY, __GFP_NOWARN, __GFP_RECLAIMABLE, GFP_KERNEL,
};
use kmem::kmalloc::KMALLOC_MAX_CACHE_SIZE;
use kmem::slab::{
    SlabFlags, SLAB_ACCOUNT, SLAB_HWCACHE_ALIGN, SLAB_NO_MERGE, SLAB_RECLAIM_ACCOUNT,
};
use kmem::PAGE_SIZE;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

type Map<K, V> = hashbrown::HashMap<K, V>;

/// Counts for one event type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeStats {
    /// Lines of this type read.
    pub events: u64,
    /// Events executed on the target.
    pub replayed: u64,
    /// Events the target refused (allocation failure, refused free).
    pub failures: u64,
    /// Frees of something allocated before the trace began.
    pub unmatched_frees: u64,
    /// Events not executed for another reason (not modelled, Linux's own
    /// failure, `kfree(NULL)`, slab pages left to kmem's slab, ...).
    pub skipped: u64,
}

/// Counts that explain the skipped events and the replay's own actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Notes {
    /// `kfree(NULL)`: no-ops.
    pub kfree_null: u64,
    /// Allocations that failed in Linux (`ptr=(nil)`, `page=(nil)`).
    pub linux_failed_allocs: u64,
    /// Objects and pages freed because Linux reused their address (freed
    /// where the trace could not see it).
    pub implicit_frees: u64,
    /// `mm_page_alloc` events of Linux's slab allocator, left to kmem's.
    pub slab_page_allocs_left_to_slab: u64,
    /// Frees of those pages.
    pub slab_page_frees_left_to_slab: u64,
    /// `mm_page_alloc` events undone because the next event was the
    /// `kmalloc` (kmalloc_large) they belong to.
    pub page_allocs_folded_into_kmalloc: u64,
    /// Page frees whose order differs from the allocation's (freed with
    /// the allocation's order).
    pub page_free_order_mismatches: u64,
    /// `mm_page_free_batched` events that report again a free
    /// `mm_page_free` reported just before.
    pub batched_free_repeats: u64,
    /// `kmem_cache_free` events naming another cache than the object's
    /// (`cache_from_obj: Wrong slab cache`): freed from the object's cache.
    pub wrong_cache_frees: u64,
    /// Frees of objects and pages whose allocation kmem failed.
    pub frees_of_failed_allocs: u64,
}

/// Exact-size fidelity counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fidelity {
    /// Replayed allocations compared.
    pub compared: u64,
    /// Those where the target's size (or order) equals Linux's.
    pub matched: u64,
}

impl Fidelity {
    /// `matched / compared`; `None` when nothing was compared.
    pub fn ratio(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.matched as f64 / self.compared as f64)
    }

    pub(crate) fn count(&mut self, ok: bool) {
        self.compared += 1;
        self.matched += ok as u64;
    }
}

/// A cache the replay created, with Linux's and the target's slot sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CacheReport {
    /// The cache's name.
    pub name: String,
    /// Object size (`bytes_req`).
    pub object_size: usize,
    /// Linux's slot size (`bytes_alloc`, `s->size`) at first sight.
    pub linux_size: usize,
    /// The target's slot size (0 when creation failed).
    pub size: usize,
    /// The flags given, as `SlabFlags` prints them.
    pub flags: String,
    /// Whether a (no-op) constructor was given.
    pub ctor: bool,
    /// Whether it was made `SLAB_RECLAIM_ACCOUNT`.
    pub reclaimable: bool,
    /// Why ([`crate::reclaim`]).
    pub reclaim_source: ReclaimSource,
    /// Linux's slab pages paired with the cache over the whole trace
    /// (some perhaps after its creation).
    pub linux_slab_pages: Evidence,
    /// Why the target refused to create it, if it did.
    pub error: Option<String>,
}

impl CacheReport {
    /// Whether the cache exists on the target.
    pub fn created(&self) -> bool {
        self.error.is_none()
    }

    /// Whether Linux's slab pages paired after the creation say otherwise
    /// than the cache's `SLAB_RECLAIM_ACCOUNT`.
    pub fn reclaim_disagrees(&self) -> bool {
        self.linux_slab_pages.any() && self.linux_slab_pages.says_reclaimable() != self.reclaimable
    }
}

/// How a replay is run.
pub struct ReplayOptions<'a> {
    /// Called every [`progress_every`](Self::progress_every) lines and at
    /// the end; returning `false` stops the replay there (the report says
    /// so). A live view may sleep in it to slow the replay down.
    pub progress: Option<&'a mut dyn FnMut(&Progress) -> bool>,
    /// Lines between progress calls.
    pub progress_every: u64,
    /// Events between footprint samples.
    pub sample_every: u64,
    /// Points the footprint series keeps (it coarsens by 2 when full).
    pub series_points: usize,
    /// Malformed-line messages kept (all are counted).
    pub max_errors: usize,
    /// Run each thread of the trace on a CPU of its own instead of the CPU
    /// it was traced on ([`crate::spread`]; `kmem replay
    /// --spread-threads`).
    pub spread_threads: bool,
}

impl Default for ReplayOptions<'_> {
    fn default() -> Self {
        ReplayOptions {
            progress: None,
            progress_every: 1 << 16,
            sample_every: 1024,
            series_points: 1024,
            max_errors: 10,
            spread_threads: false,
        }
    }
}

/// Where a replay is.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Lines read.
    pub lines: u64,
    /// Event lines parsed.
    pub events: u64,
    /// Source bytes read (compressed bytes for xz).
    pub bytes_read: u64,
    /// The source's length, when known.
    pub bytes_total: Option<u64>,
    /// Time since the replay started.
    pub elapsed: Duration,
    /// Whether this is the final call.
    pub done: bool,
}

/// Everything a replay counted.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Lines read.
    pub lines: u64,
    /// Event lines (known and unknown types).
    pub events: u64,
    /// Lines that could not be parsed, or named a CPU at or above kmem's
    /// `NR_CPUS`.
    pub malformed_lines: u64,
    /// The first malformed lines: `line N: what: `text``.
    pub errors: Vec<String>,
    /// The first warnings Linux would print for the events, in its words
    /// (`line N: cache_from_obj: Wrong slab cache. ...`).
    pub warnings: Vec<String>,
    /// The first events kmem failed: `line N: event what was asked: error`.
    pub failed: Vec<String>,
    /// Allocations kmem failed for want of memory (`ENOMEM`).
    pub no_memory_failures: u64,
    /// Bytes the trace holds live at the end by its own account (objects'
    /// `bytes_req`, pages other than Linux's slab pages), whether or not
    /// kmem could allocate them.
    pub traced_live_bytes: u64,
    /// Peak of [`traced_live_bytes`](Self::traced_live_bytes): the least
    /// memory the trace needs.
    pub peak_traced_live_bytes: u64,
    /// The event at that peak.
    pub peak_traced_event: u64,
    /// The machine's CPUs.
    pub nr_cpus: usize,
    /// Events (replayed kinds) per CPU of the trace, indexed by the trace's
    /// CPU id (at most `NR_CPUS` entries); those at `nr_cpus` and above
    /// ran as CPU `cpu % nr_cpus`.
    pub cpu_events: Vec<u64>,
    /// Events with a name outside the input format.
    pub unknown_events: u64,
    /// Their names (at most 32 kept) and counts.
    pub unknown_names: BTreeMap<String, u64>,
    /// Per event type, in [`EventKind::ALL`] order.
    pub by_type: Vec<(EventKind, TypeStats)>,
    /// Explanations of the skipped events.
    pub notes: Notes,
    /// kmalloc: the target's allocated size equals `bytes_alloc`.
    pub kmalloc_fidelity: Fidelity,
    /// kmem_cache_alloc: the cache's slot size equals `bytes_alloc`.
    pub kmem_cache_fidelity: Fidelity,
    /// mm_page_alloc (replayed ones): the order obtained equals the trace's.
    pub page_fidelity: Fidelity,
    /// The caches created.
    pub caches: Vec<CacheReport>,
    /// The vmalloc events: what was compared with Linux ([`crate::vmap`]).
    pub vmalloc: VmallocOutcome,
    /// The percpu events: what was compared with Linux
    /// ([`crate::percpu`]).
    pub percpu: PercpuOutcome,
    /// Live requested bytes (objects' `bytes_req`, replayed pages) at the
    /// end and at their peak.
    pub live_bytes: u64,
    /// Peak of [`live_bytes`](Self::live_bytes).
    pub peak_live_bytes: u64,
    /// Live requested bytes of kmalloc and kmem_cache objects alone (no
    /// pages) at the end.
    pub live_object_bytes: u64,
    /// Peak of [`live_object_bytes`](Self::live_object_bytes).
    pub peak_live_object_bytes: u64,
    /// Largest slab + kmalloc_large bytes sampled: what the objects cost.
    pub peak_slab_bytes: u64,
    /// Objects and page blocks still live at the end.
    pub live_objects: u64,
    /// Largest footprint sampled (bytes): slab + kmalloc_large + replayed
    /// pages. 0 when the target cannot tell.
    pub peak_footprint_bytes: u64,
    /// Footprint over time (bounded).
    pub series: Vec<Point>,
    /// Wall time of the replay loop (parsing included).
    pub elapsed: Duration,
    /// Part of it the parser spent waiting for the reader thread
    /// (decompression, I/O), when the replay had nothing to do either.
    pub input_wait: Duration,
    /// CPU time the parser and replaying threads used (unlike the wall
    /// time, not inflated by other load on the host).
    pub cpu_time: Duration,
    /// The parser thread's part of it.
    pub parse_cpu_time: Duration,
    /// Whether the progress callback stopped the replay early.
    pub stopped: bool,
}

impl Outcome {
    /// Why the replay shows nothing, if it does not: the input held no
    /// perf script event, or only events of other kinds than the input
    /// format's. `name` names the trace in the message.
    pub fn no_events(&self, name: &str) -> Option<String> {
        if self.stopped {
            return None;
        }
        if self.events == 0 {
            return Some(format!(
                "no perf script events found in {name}: give a file of \
                 `perf script -F comm,tid,cpu,time,event,trace` output, plain or .xz \
                 (docs/replay.md says how to record one)"
            ));
        }
        if self.events == self.unknown_events {
            let names: Vec<&str> = self.unknown_names.keys().map(|s| s.as_str()).collect();
            return Some(format!(
                "no kmem, percpu or vmalloc events found in {name}, only {} others ({}): \
                 record the events docs/replay.md lists",
                self.events,
                names.join(", ")
            ));
        }
        None
    }

    /// The trace's CPUs whose events ran on another CPU of the machine,
    /// with their event counts.
    pub fn folded_cpus(&self) -> Vec<(usize, u64)> {
        self.cpu_events
            .iter()
            .enumerate()
            .skip(self.nr_cpus)
            .filter(|&(_, &n)| n > 0)
            .map(|(c, &n)| (c, n))
            .collect()
    }

    /// Events per second of replay: events over the loop's time less the
    /// time spent waiting for input.
    pub fn events_per_sec(&self) -> f64 {
        let t = self.elapsed.saturating_sub(self.input_wait).as_secs_f64();
        if t > 0.0 {
            self.events as f64 / t
        } else {
            0.0
        }
    }

    /// Events per second of CPU time (parser and replay threads).
    pub fn events_per_cpu_sec(&self) -> f64 {
        let t = self.cpu_time.as_secs_f64();
        if t > 0.0 {
            self.events as f64 / t
        } else {
            0.0
        }
    }

    /// Sum of the per-type unmatched frees.
    pub fn unmatched_frees(&self) -> u64 {
        self.by_type.iter().map(|(_, s)| s.unmatched_frees).sum()
    }

    /// Sum of the per-type failures.
    pub fn failures(&self) -> u64 {
        self.by_type.iter().map(|(_, s)| s.failures).sum()
    }

    /// The counts of one type.
    pub fn stats(&self, kind: EventKind) -> TypeStats {
        self.by_type[kind.index()].1
    }

    /// The objects' part: peak slab + kmalloc_large bytes over peak live
    /// requested object bytes (0 when unknown).
    pub fn slab_fragmentation(&self) -> f64 {
        if self.peak_live_object_bytes == 0 {
            0.0
        } else {
            self.peak_slab_bytes as f64 / self.peak_live_object_bytes as f64
        }
    }

    /// Peak footprint over peak live requested bytes (0 when unknown).
    pub fn fragmentation(&self) -> f64 {
        if self.peak_live_bytes == 0 {
            0.0
        } else {
            self.peak_footprint_bytes as f64 / self.peak_live_bytes as f64
        }
    }
}

/// CPU time of the calling thread.
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Whether Linux's slab allocator made this `mm_page_alloc` (see the
/// [module docs](self)).
///
/// ```
/// use kmem::gfp::Gfp;
/// use kmem_replay::engine::is_linux_slab_page;
/// let g = |s: &str| s.parse::<Gfp>().unwrap();
/// assert!(is_linux_slab_page(g("GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP")));
/// assert!(is_linux_slab_page(g("GFP_NOWAIT|__GFP_NORETRY|__GFP_COMP"))); // GFP_NOWAIT has __GFP_NOWARN
/// // Page cache readahead: the same three flags, but movable.
/// assert!(!is_linux_slab_page(g("GFP_NOFS|__GFP_HIGHMEM|__GFP_MOVABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_HARDWALL")));
/// assert!(!is_linux_slab_page(g("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP"))); // a page table
/// ```
pub fn is_linux_slab_page(gfp: Gfp) -> bool {
    gfp.contains(__GFP_COMP.union(__GFP_NOWARN).union(__GFP_NORETRY))
        && !gfp.intersects(__GFP_MOVABLE.union(__GFP_HIGHMEM))
}

/// Cache flags and constructor that reproduce Linux's slot size.
///
/// Linux's `s->size` (`bytes_alloc`) shows the layout: equal to the object
/// size rounded to a word for a plain cache, rounded to a cache line with
/// `SLAB_HWCACHE_ALIGN`, a word larger when the free pointer sits after the
/// object (a constructor, or `SLAB_TYPESAFE_BY_RCU`; kmem models the
/// former). The candidates plain, aligned, constructor, aligned with
/// constructor are tried in that order through kmem's own
/// [`cache_geometry`](kmem::slab::geometry::cache_geometry); the first that
/// gives `bytes_alloc` wins, else the plain layout is used (and the
/// mismatch shows in the fidelity). `accounted=true` on an allocation
/// whose GFP flags lack `__GFP_ACCOUNT` means the cache is `SLAB_ACCOUNT`.
/// Every cache gets `SLAB_NO_MERGE`: the trace names the cache Linux really
/// used, so two names are two caches. `SLAB_RECLAIM_ACCOUNT` cannot be
/// seen in a `kmem_cache_alloc` event: the engine adds it from the slab
/// pages Linux took for the cache ([`crate::reclaim`]); it does not change
/// the layout.
///
/// ```
/// use kmem::slab::{SLAB_ACCOUNT, SLAB_HWCACHE_ALIGN, SLAB_NO_MERGE};
/// use kmem_replay::engine::infer_cache_flags;
/// let gfp = kmem::gfp::GFP_KERNEL;
/// // filp: 184 bytes in 192-byte slots, accounted by its cache.
/// assert_eq!(infer_cache_flags(184, 192, true, gfp, 2),
///            (SLAB_NO_MERGE | SLAB_HWCACHE_ALIGN | SLAB_ACCOUNT, false));
/// // ext4_inode_cache: 1120 -> 1128, the free pointer after the object.
/// assert_eq!(infer_cache_flags(1120, 1128, false, gfp, 2), (SLAB_NO_MERGE, true));
/// ```
pub fn infer_cache_flags(
    object_size: usize,
    bytes_alloc: usize,
    accounted: bool,
    gfp: Gfp,
    nr_cpus: usize,
) -> (SlabFlags, bool) {
    let mut base = SLAB_NO_MERGE;
    if accounted && !gfp.contains(__GFP_ACCOUNT) {
        base |= SLAB_ACCOUNT;
    }
    let candidates = [
        (SlabFlags::NONE, false),
        (SLAB_HWCACHE_ALIGN, false),
        (SlabFlags::NONE, true),
        (SLAB_HWCACHE_ALIGN, true),
    ];
    for (f, ctor) in candidates {
        let g = kmem::slab::geometry::cache_geometry(object_size, 0, base | f, ctor, nr_cpus);
        if g.is_ok_and(|g| g.size == bytes_alloc) {
            return (base | f, ctor);
        }
    }
    (base, false)
}

/// Page frees remembered per CPU to recognise `mm_page_free_batched`
/// repeating an `mm_page_free` (Linux batches at most 31 folios).
pub const RECENT_FREES: usize = 64;

/// No cache: a kmalloc object.
const KMALLOC: u32 = u32::MAX;
/// The handle of an object or page block kmem failed to allocate.
const FAILED: usize = 0;

#[derive(Clone, Copy)]
struct Obj {
    handle: usize,
    size: u32,
    cache: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PageKind {
    Replayed,
    LinuxSlab,
    KmallocLarge,
    /// kmem failed the allocation.
    Failed,
}

#[derive(Clone, Copy)]
struct PageRec {
    handle: usize,
    order: u8,
    kind: PageKind,
}

struct CacheRec {
    /// Target cache id and slot size; `None` when creation failed.
    id: Option<(u32, usize)>,
}

/// A per-CPU allocation of the trace on the target.
#[derive(Clone, Copy)]
struct PcpuRec {
    /// The target's per-CPU pointer ([`FAILED`] when it failed the
    /// allocation).
    handle: usize,
    /// Its full size on the target (`pcpu_obj_full_size()`).
    full: u64,
}

/// The last event, when it was a replayed page allocation (for folding a
/// kmalloc_large).
#[derive(Clone, Copy)]
struct LastPageAlloc {
    cpu: u32,
    tid: u32,
    pfn: u64,
    order: u32,
}

/// The replay loop over one [`Target`]; see the [module docs](self).
pub struct Engine<T: Target> {
    target: T,
    nr_cpus: u32,
    cpu: u32,
    tid: u32,
    objs: Map<u64, Obj>,
    pages: Map<u64, PageRec>,
    /// vmap areas by the traced `va_start`: the target's address
    /// ([`FAILED`] when the target failed the allocation).
    vmaps: Map<u64, usize>,
    /// The `nr_lazy` and purge comparisons.
    lazy: LazyCheck,
    /// Per-CPU allocations by the traced `ptr`.
    pcpus: Map<u64, PcpuRec>,
    /// The parser's interned strings, by id.
    strings: Vec<Box<str>>,
    /// Caches by (name id, object size).
    caches: Map<(u32, u64), CacheRec>,
    /// Name ids of the caches the target created, by target id.
    target_caches: Map<u32, u32>,
    /// Pairs Linux's slab pages with the caches that needed them.
    tracker: SlabPageTracker,
    /// Linux slab pages paired per cache name id.
    slab_pages: Map<u32, Evidence>,
    /// What the input's head scan paired, by name.
    head_slab_pages: BTreeMap<String, Evidence>,
    max_warnings: usize,
    /// The name id of each entry of [`Outcome::caches`].
    report_names: Vec<u32>,
    last_page: Option<LastPageAlloc>,
    /// Per CPU: the frames of its last `RECENT_FREES` `mm_page_free`s.
    recent_frees: Vec<([u64; RECENT_FREES], usize)>,
    out: Outcome,
    pages_live: u64,
    series: Series,
    first_time_ns: Option<u64>,
    last_time_ns: u64,
    next_sample: u64,
    lines_done: u64,
}

impl<T: Target> Engine<T> {
    /// An engine replaying on `target`, a machine of `nr_cpus` CPUs whose
    /// thread is bound to CPU `first_cpu`.
    pub fn new(target: T, nr_cpus: u32, first_cpu: u32, opts: &ReplayOptions<'_>) -> Self {
        Engine {
            target,
            nr_cpus,
            cpu: first_cpu,
            tid: u32::MAX,
            objs: Map::new(),
            pages: Map::new(),
            vmaps: Map::new(),
            lazy: LazyCheck::new(opts.max_errors),
            pcpus: Map::new(),
            strings: Vec::new(),
            caches: Map::new(),
            target_caches: Map::new(),
            tracker: SlabPageTracker::default(),
            slab_pages: Map::new(),
            head_slab_pages: BTreeMap::new(),
            max_warnings: opts.max_errors,
            report_names: Vec::new(),
            last_page: None,
            recent_frees: vec![([u64::MAX; RECENT_FREES], 0); nr_cpus as usize],
            out: Outcome {
                lines: 0,
                events: 0,
                malformed_lines: 0,
                errors: Vec::new(),
                warnings: Vec::new(),
                failed: Vec::new(),
                no_memory_failures: 0,
                traced_live_bytes: 0,
                peak_traced_live_bytes: 0,
                peak_traced_event: 0,
                nr_cpus: nr_cpus as usize,
                cpu_events: Vec::new(),
                unknown_events: 0,
                unknown_names: BTreeMap::new(),
                by_type: EventKind::ALL
                    .iter()
                    .map(|&k| (k, TypeStats::default()))
                    .collect(),
                notes: Notes::default(),
                kmalloc_fidelity: Fidelity::default(),
                kmem_cache_fidelity: Fidelity::default(),
                page_fidelity: Fidelity::default(),
                caches: Vec::new(),
                vmalloc: VmallocOutcome::default(),
                percpu: PercpuOutcome::default(),
                live_bytes: 0,
                peak_live_bytes: 0,
                live_object_bytes: 0,
                peak_live_object_bytes: 0,
                peak_slab_bytes: 0,
                live_objects: 0,
                peak_footprint_bytes: 0,
                series: Vec::new(),
                elapsed: Duration::ZERO,
                input_wait: Duration::ZERO,
                cpu_time: Duration::ZERO,
                parse_cpu_time: Duration::ZERO,
                stopped: false,
            },
            pages_live: 0,
            series: Series::new(opts.series_points.max(2)),
            first_time_ns: None,
            last_time_ns: 0,
            next_sample: opts.sample_every.max(1),
            lines_done: 0,
        }
    }

    /// The target.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// Replay every line of `input`: a parser thread turns lines into ops
    /// ([`crate::ops`]) while this thread applies them. An I/O or
    /// decompression error ends the replay with that error; what was
    /// replayed stays counted.
    pub fn run(&mut self, input: &mut TraceInput, opts: &mut ReplayOptions<'_>) -> io::Result<()> {
        let start = Instant::now();
        let cpu0 = thread_cpu_time();
        let every = opts.progress_every.max(1);
        let mut next_progress = every;
        let mut res = Ok(());
        if let Some(h) = input.head_scan() {
            self.head_slab_pages = h.slab_pages.clone();
        }
        let mut parser = Parser::new(self.nr_cpus, opts.max_errors);
        if opts.spread_threads {
            parser = parser.spread_threads();
        }
        let progress_of = input.progress_handle();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(BATCH_DEPTH);
            let (back_tx, back_rx) = std::sync::mpsc::channel::<Batch>();
            let spawned = std::thread::Builder::new()
                .name("trace-parser".into())
                .spawn_scoped(s, move || parser.run(input, &tx, &back_rx));
            if let Err(e) = spawned {
                res = Err(e);
                return;
            }
            'batches: for batch in rx.iter() {
                self.strings.extend(batch.strings.iter().cloned());
                self.out.errors.extend(batch.errors.iter().cloned());
                for op in &batch.ops {
                    self.op(op);
                    if self.out.events >= self.next_sample {
                        self.next_sample += opts.sample_every.max(1);
                        self.sample();
                    }
                    if op.line >= next_progress {
                        next_progress = op.line - op.line % every + every;
                        self.out.lines = op.line;
                        if !self.progress(&progress_of, opts, start, false) {
                            self.out.stopped = true;
                            break 'batches;
                        }
                    }
                }
                self.out.lines = self.lines_done + batch.lines;
                self.lines_done = self.out.lines;
                if let Some(e) = &batch.error {
                    res = Err(io::Error::other(e.clone()));
                }
                if let Some((cpu, wait)) = batch.parser_times {
                    self.out.cpu_time += cpu;
                    self.out.parse_cpu_time += cpu;
                    self.out.input_wait += wait;
                }
                let _ = back_tx.send(batch);
            }
            // A parser still running after a stop ends when its next send
            // finds the receiver gone.
            drop(rx);
        });
        self.sample();
        self.out.elapsed += start.elapsed();
        self.out.cpu_time += thread_cpu_time().saturating_sub(cpu0);
        self.progress(&progress_of, opts, start, true);
        res
    }

    fn progress(
        &self,
        input: &crate::input::ProgressHandle,
        opts: &mut ReplayOptions<'_>,
        start: Instant,
        done: bool,
    ) -> bool {
        let Some(cb) = opts.progress.as_mut() else {
            return true;
        };
        let (bytes_read, bytes_total) = input.get();
        cb(&Progress {
            lines: self.out.lines,
            events: self.out.events,
            bytes_read,
            bytes_total,
            elapsed: start.elapsed(),
            done,
        })
    }

    /// Finish: the target back, and everything counted.
    pub fn finish(mut self) -> (T, Outcome) {
        for (c, name) in self.out.caches.iter_mut().zip(&self.report_names) {
            c.linux_slab_pages = self.slab_pages.get(name).copied().unwrap_or_default();
        }
        self.out.live_objects = (self.objs.values().filter(|o| o.handle != FAILED).count()
            + self
                .pages
                .values()
                .filter(|p| p.kind == PageKind::Replayed)
                .count()) as u64;
        self.out.series = self.series.points();
        self.out.vmalloc = self.lazy.finish();
        if self.target.has_percpu() {
            self.out.percpu.kmem_at_end = self.target.percpu_usage();
        }
        (self.target, self.out)
    }

    /// [`finish`](Self::finish), after freeing on the target everything
    /// the trace left live (the counts keep the state before).
    pub fn finish_releasing_all(self) -> (T, Outcome) {
        let objs: Vec<Obj> = self.objs.values().copied().collect();
        let pages: Vec<PageRec> = self.pages.values().copied().collect();
        let pcpus: Vec<PcpuRec> = self.pcpus.values().copied().collect();
        let (mut t, out) = self.finish();
        for p in pcpus.into_iter().filter(|p| p.handle != FAILED) {
            let _ = t.free_percpu(p.handle);
        }
        for o in objs.into_iter().filter(|o| o.handle != FAILED) {
            let _ = if o.cache == KMALLOC {
                t.kfree(o.handle, o.size as usize)
            } else {
                t.cache_free(o.cache, o.handle)
            };
        }
        for p in pages.into_iter().filter(|p| p.kind == PageKind::Replayed) {
            let _ = t.free_pages(p.handle, p.order as u32);
        }
        (t, out)
    }

    #[inline]
    fn op(&mut self, op: &Op) {
        let kind = match op.kind {
            OpKind::Malformed => {
                self.out.malformed_lines += 1;
                return;
            }
            OpKind::Unknown => {
                self.out.events += 1;
                self.unknown(op.name);
                return;
            }
            OpKind::Kmalloc => EventKind::Kmalloc,
            OpKind::Kfree => EventKind::Kfree,
            OpKind::CacheAlloc => EventKind::KmemCacheAlloc,
            OpKind::CacheFree => EventKind::KmemCacheFree,
            OpKind::PageAlloc => EventKind::PageAlloc,
            OpKind::PageFree => EventKind::PageFree,
            OpKind::PageFreeBatched => EventKind::PageFreeBatched,
            OpKind::VmapAlloc => EventKind::VmapAlloc,
            OpKind::VmapFree => EventKind::VmapFree,
            OpKind::VmapPurge => EventKind::VmapPurge,
            OpKind::PercpuAlloc { .. } => EventKind::PercpuAlloc,
            OpKind::PercpuFree => EventKind::PercpuFree,
            OpKind::PercpuAllocFail { .. } => EventKind::PercpuAllocFail,
            OpKind::PercpuChunk { destroy: false } => EventKind::PercpuCreateChunk,
            OpKind::PercpuChunk { destroy: true } => EventKind::PercpuDestroyChunk,
        };
        self.out.events += 1;
        self.last_time_ns = op.time_ns;
        if self.first_time_ns.is_none() {
            self.first_time_ns = Some(op.time_ns);
        }
        let last_page = self.last_page.take();
        self.out.by_type[kind.index()].1.events += 1;
        if !kind.is_replayed() {
            self.out.by_type[kind.index()].1.skipped += 1;
            return;
        }
        let traced = op.traced_cpu as usize;
        if traced >= self.out.cpu_events.len() {
            self.out.cpu_events.resize(traced + 1, 0);
        }
        self.out.cpu_events[traced] += 1;
        if op.cpu != self.cpu {
            self.cpu = op.cpu;
            self.target.set_cpu(op.cpu as usize);
        }
        if op.tid != self.tid {
            self.tid = op.tid;
            let comm = self.strings.get(op.comm as usize).map_or("", |s| s);
            self.target.set_task(op.tid, comm.as_bytes());
        }
        match op.kind {
            OpKind::Kmalloc => {
                self.tracker.kmalloc(op.cpu, op.tid);
                self.kmalloc(op, last_page)
            }
            OpKind::Kfree => {
                self.tracker.other(op.cpu);
                self.free(EventKind::Kfree, op, None)
            }
            OpKind::CacheAlloc => self.cache_alloc(op),
            OpKind::CacheFree => {
                self.tracker.other(op.cpu);
                self.free(EventKind::KmemCacheFree, op, Some(op.name))
            }
            OpKind::PageAlloc => self.page_alloc(op),
            OpKind::PageFree | OpKind::PageFreeBatched => {
                self.tracker.other(op.cpu);
                self.page_free(
                    op.cpu,
                    op.a,
                    op.b as u32,
                    op.kind == OpKind::PageFreeBatched,
                )
            }
            OpKind::VmapAlloc => self.vmap_alloc(op),
            OpKind::VmapFree => self.vmap_free(op),
            OpKind::VmapPurge => self.vmap_purge(op),
            OpKind::PercpuAlloc {
                reserved,
                is_atomic,
                gfp_traced,
                bytes_alloc_traced,
            } => self.percpu_alloc(op, reserved, is_atomic, gfp_traced, bytes_alloc_traced),
            OpKind::PercpuFree => self.percpu_free(op),
            OpKind::PercpuAllocFail { .. } => {
                // Linux failed it: nothing to replay.
                self.out.notes.linux_failed_allocs += 1;
                self.out.percpu.linux_failed_allocs += 1;
                self.stats(kind).skipped += 1;
            }
            OpKind::PercpuChunk { destroy } => {
                // kmem's allocator makes and drops its own chunks.
                if destroy {
                    self.out.percpu.linux_chunks_destroyed += 1;
                } else {
                    self.out.percpu.linux_chunks_created += 1;
                }
                self.stats(kind).skipped += 1;
            }
            OpKind::Unknown | OpKind::Malformed => {}
        }
    }

    /// `percpu:percpu_alloc_percpu` (see [`crate::percpu`]).
    #[cold]
    fn percpu_alloc(
        &mut self,
        op: &Op,
        reserved: bool,
        is_atomic: bool,
        gfp_traced: bool,
        bytes_alloc_traced: bool,
    ) {
        const K: EventKind = EventKind::PercpuAlloc;
        let (ptr, size, align, bytes_alloc, gfp) = (op.a, op.b, op.c, op.d, op.gfp);
        if !self.target.has_percpu() {
            self.stats(K).skipped += 1;
            return;
        }
        if ptr == 0 {
            // Not a pointer pcpu_alloc() returns.
            self.out.notes.linux_failed_allocs += 1;
            self.stats(K).skipped += 1;
            return;
        }
        let max = self.max_warnings;
        let out = &mut self.out.percpu;
        if gfp_traced {
            let atomic_by_gfp = !gfp.contains(__GFP_DIRECT_RECLAIM);
            out.is_atomic.count(atomic_by_gfp == is_atomic);
            if atomic_by_gfp != is_atomic {
                out.mismatch(max, || {
                    format!(
                        "line {}: percpu_alloc_percpu: is_atomic={}, but gfp_flags={gfp} {} \
                         __GFP_DIRECT_RECLAIM",
                        op.line,
                        u8::from(is_atomic),
                        if atomic_by_gfp { "lack" } else { "have" }
                    )
                });
            }
        } else {
            out.gfp_not_traced += 1;
        }
        let rec = match self
            .target
            .alloc_percpu(size as usize, align as usize, reserved, gfp)
        {
            Ok(handle) => {
                self.stats(K).replayed += 1;
                let full = self.target.pcpu_obj_full_size(size as usize) as u64;
                let out = &mut self.out.percpu;
                if out.nr_possible_cpus == 0 {
                    out.nr_possible_cpus = self.nr_cpus as u64;
                    out.memcg = self.target.pcpu_obj_full_size(4) > 4 * self.nr_cpus as usize;
                }
                if reserved {
                    out.reserved += 1;
                    out.reserved_other_gfp += u64::from(gfp != GFP_KERNEL);
                }
                out.atomic += u64::from(!gfp.contains(__GFP_DIRECT_RECLAIM));
                out.aligned.count(align != 0 && handle as u64 % align == 0);
                if bytes_alloc_traced {
                    out.full_size.count(full == bytes_alloc);
                    if full != bytes_alloc {
                        let formula = out.full_size_formula();
                        out.mismatch(max, || {
                            format!(
                                "line {}: percpu_alloc_percpu: size={size} bytes_alloc={bytes_alloc}, \
                                 kmem's pcpu_obj_full_size() is {full} ({formula})",
                                op.line
                            )
                        });
                    }
                } else {
                    out.full_size_not_compared += 1;
                }
                out.add_live(full);
                PcpuRec { handle, full }
            }
            Err(e) => {
                let what = if reserved {
                    format_args!("of {size} B aligned to {align} from the reserved chunk")
                } else {
                    format_args!("of {size} B aligned to {align} ({gfp})")
                };
                self.failed(op, K, what, e);
                PcpuRec {
                    handle: FAILED,
                    full: 0,
                }
            }
        };
        if let Some(old) = self.pcpus.insert(ptr, rec) {
            // Linux freed it where the trace could not see it.
            self.out.notes.implicit_frees += 1;
            self.out.percpu.implicit_frees += 1;
            if old.handle != FAILED {
                self.out.percpu.sub_live(old.full);
                if self.target.free_percpu(old.handle).is_err() {
                    self.stats(K).failures += 1;
                }
            }
        }
    }

    /// `percpu:percpu_free_percpu`.
    #[cold]
    fn percpu_free(&mut self, op: &Op) {
        const K: EventKind = EventKind::PercpuFree;
        if !self.target.has_percpu() {
            self.stats(K).skipped += 1;
            return;
        }
        match self.pcpus.remove(&op.a) {
            None => self.stats(K).unmatched_frees += 1,
            Some(PcpuRec { handle: FAILED, .. }) => {
                self.out.notes.frees_of_failed_allocs += 1;
                self.stats(K).skipped += 1;
            }
            Some(rec) => {
                self.out.percpu.sub_live(rec.full);
                match self.target.free_percpu(rec.handle) {
                    Ok(()) => self.stats(K).replayed += 1,
                    Err(_) => self.stats(K).failures += 1,
                }
            }
        }
    }

    /// `vmalloc:alloc_vmap_area` (see [`crate::vmap`]).
    #[cold]
    fn vmap_alloc(&mut self, op: &Op) {
        const K: EventKind = EventKind::VmapAlloc;
        let (va_start, size, align) = (op.a, op.b, op.c);
        if !self.target.has_vmap_areas() {
            self.stats(K).skipped += 1;
            return;
        }
        if va_start == 0 {
            // failed=1: Linux purges and tries again (another event).
            self.out.notes.linux_failed_allocs += 1;
            self.lazy.out.linux_failed_allocs += 1;
            self.stats(K).skipped += 1;
            return;
        }
        let addr = match self.target.alloc_vmap_area(size as usize, align as usize) {
            Ok(addr) => {
                self.stats(K).replayed += 1;
                self.lazy
                    .out
                    .aligned
                    .count(align != 0 && addr as u64 % align == 0);
                addr
            }
            Err(e) => {
                self.failed(op, K, format_args!("of {size} B aligned to {align}"), e);
                FAILED
            }
        };
        if let Some(old) = self.vmaps.insert(va_start, addr) {
            // Linux freed it where the trace could not see it.
            self.out.notes.implicit_frees += 1;
            if old != FAILED && self.target.free_vmap_area(old).is_err() {
                self.stats(K).failures += 1;
            }
        }
    }

    /// `vmalloc:free_vmap_area_noflush`: free lazily and compare the
    /// counts with Linux's (see [`crate::vmap`]).
    #[cold]
    fn vmap_free(&mut self, op: &Op) {
        const K: EventKind = EventKind::VmapFree;
        let (va_start, nr_lazy, nr_lazy_max) = (op.a, op.b, op.c);
        if !self.target.has_vmap_areas() {
            self.stats(K).skipped += 1;
            return;
        }
        let kmem_max = self.target.lazy_max_pages() as u64;
        self.lazy.out.lazy_max_pages = kmem_max;
        self.lazy.out.nr_lazy_max.count(nr_lazy_max == kmem_max);
        if nr_lazy_max != kmem_max {
            self.lazy.mismatch(|| {
                format!(
                    "line {}: free_vmap_area_noflush: nr_lazy_max={nr_lazy_max}, kmem's \
                     lazy_max_pages() is {kmem_max}",
                    op.line
                )
            });
        }
        let kmem = match self.vmaps.remove(&va_start) {
            None => {
                self.stats(K).unmatched_frees += 1;
                None
            }
            Some(FAILED) => {
                self.out.notes.frees_of_failed_allocs += 1;
                self.stats(K).skipped += 1;
                None
            }
            Some(addr) => {
                let before = self.target.vmap_lazy_nr();
                match self.target.free_vmap_area_noflush(addr) {
                    Ok(lf) => {
                        self.stats(K).replayed += 1;
                        let pages = lf.nr_lazy.saturating_sub(before) as u64;
                        Some((pages, lf.purge_due()))
                    }
                    Err(_) => {
                        self.stats(K).failures += 1;
                        None
                    }
                }
            }
        };
        self.lazy.free(Free {
            line: op.line,
            nr_lazy,
            kmem,
            kmem_lazy: self.target.vmap_lazy_nr() as u64,
            kmem_max,
        });
    }

    /// `vmalloc:purge_vmap_area_lazy`: purge where Linux purged something
    /// (see [`crate::vmap`]).
    #[cold]
    fn vmap_purge(&mut self, op: &Op) {
        const K: EventKind = EventKind::VmapPurge;
        let num_purged = op.c;
        if !self.target.has_vmap_areas() {
            self.stats(K).skipped += 1;
            return;
        }
        if num_purged == 0 {
            self.lazy.out.empty_purges += 1;
            self.stats(K).skipped += 1;
            return;
        }
        let ev = self.target.purge_vmap_area_lazy();
        self.stats(K).replayed += 1;
        self.lazy.purge(op.line, num_purged, ev.num_purged as u64);
    }

    fn unknown(&mut self, name: u32) {
        self.out.unknown_events += 1;
        let name = self.strings.get(name as usize).map_or("?", |s| s);
        if let Some(n) = self.out.unknown_names.get_mut(name) {
            *n += 1;
        } else if self.out.unknown_names.len() < 32 {
            self.out.unknown_names.insert(name.to_string(), 1);
        }
    }

    fn stats(&mut self, kind: EventKind) -> &mut TypeStats {
        &mut self.out.by_type[kind.index()].1
    }

    fn add_live(&mut self, bytes: u64) {
        self.out.live_bytes += bytes;
        self.out.peak_live_bytes = self.out.peak_live_bytes.max(self.out.live_bytes);
    }

    /// The trace's own live bytes grow (replayed or failed on kmem).
    fn add_traced(&mut self, bytes: u64) {
        self.out.traced_live_bytes += bytes;
        if self.out.traced_live_bytes > self.out.peak_traced_live_bytes {
            self.out.peak_traced_live_bytes = self.out.traced_live_bytes;
            self.out.peak_traced_event = self.out.events;
        }
    }

    /// kmem failed an event: count it and keep the first ones.
    #[cold]
    fn failed(&mut self, op: &Op, kind: EventKind, what: std::fmt::Arguments<'_>, e: kmem::Error) {
        self.stats(kind).failures += 1;
        if e == kmem::Error::NoMemory {
            self.out.no_memory_failures += 1;
        }
        if self.out.failed.len() < self.max_warnings {
            self.out
                .failed
                .push(format!("line {}: {kind} {what}: {e}", op.line));
        }
    }

    /// Free an object on the target (its kind decides how).
    fn release_obj(&mut self, o: Obj) -> Result<(), kmem::Error> {
        self.out.traced_live_bytes -= o.size as u64;
        if o.handle == FAILED {
            return Ok(());
        }
        self.out.live_bytes -= o.size as u64;
        self.out.live_object_bytes -= o.size as u64;
        if o.cache == KMALLOC {
            self.target.kfree(o.handle, o.size as usize)
        } else {
            self.target.cache_free(o.cache, o.handle)
        }
    }

    /// Record a new object at `ptr`, first freeing one Linux must have
    /// freed unseen.
    fn insert_obj(&mut self, ptr: u64, o: Obj, kind: EventKind) {
        self.add_traced(o.size as u64);
        if o.handle != FAILED {
            self.add_live(o.size as u64);
            self.out.live_object_bytes += o.size as u64;
            self.out.peak_live_object_bytes = self
                .out
                .peak_live_object_bytes
                .max(self.out.live_object_bytes);
        }
        if let Some(old) = self.objs.insert(ptr, o) {
            self.out.notes.implicit_frees += 1;
            if self.release_obj(old).is_err() {
                self.stats(kind).failures += 1;
            }
        }
    }

    fn kmalloc(&mut self, op: &Op, last_page: Option<LastPageAlloc>) {
        let (ptr, bytes_req, bytes_alloc, gfp, node) = (op.a, op.b, op.c, op.gfp, op.node);
        const K: EventKind = EventKind::Kmalloc;
        if ptr == 0 {
            self.out.notes.linux_failed_allocs += 1;
            self.stats(K).skipped += 1;
            return;
        }
        if bytes_alloc > KMALLOC_MAX_CACHE_SIZE as u64 {
            self.fold_large(op, bytes_alloc, last_page);
        }
        match self.target.kmalloc(bytes_req as usize, gfp, node) {
            Ok((handle, got)) => {
                self.stats(K).replayed += 1;
                self.out.kmalloc_fidelity.count(got as u64 == bytes_alloc);
                let o = Obj {
                    handle,
                    size: bytes_req as u32,
                    cache: KMALLOC,
                };
                self.insert_obj(ptr, o, K);
            }
            Err(e) => {
                self.failed(op, K, format_args!("of {bytes_req} B ({gfp})"), e);
                self.insert_failed(ptr, bytes_req, K);
            }
        }
    }

    /// An allocation failed on the target: map `ptr` as failed (an object
    /// Linux had there before is gone all the same: Linux reused the
    /// address), so its free is recognised.
    fn insert_failed(&mut self, ptr: u64, bytes_req: u64, kind: EventKind) {
        let o = Obj {
            handle: FAILED,
            size: bytes_req as u32,
            cache: KMALLOC,
        };
        self.insert_obj(ptr, o, kind);
    }

    /// Undo the page allocation just replayed if it is this kmalloc's
    /// (kmalloc_large): kmem's kmalloc takes its own pages.
    fn fold_large(&mut self, h: &Op, bytes_alloc: u64, last: Option<LastPageAlloc>) {
        let Some(last) = last else { return };
        let order = kmem::page_alloc::get_order(bytes_alloc as usize);
        if last.cpu != h.cpu || last.tid != h.tid || last.order != order {
            return;
        }
        let Some(rec) = self.pages.get_mut(&last.pfn) else {
            return;
        };
        if rec.kind != PageKind::Replayed {
            return;
        }
        rec.kind = PageKind::KmallocLarge;
        let (handle, order) = (rec.handle, rec.order as u32);
        self.pages_live -= 1 << order;
        self.out.live_bytes -= (PAGE_SIZE as u64) << order;
        self.out.traced_live_bytes -= (PAGE_SIZE as u64) << order;
        self.out.notes.page_allocs_folded_into_kmalloc += 1;
        let s = self.stats(EventKind::PageAlloc);
        s.replayed -= 1;
        s.skipped += 1;
        if self.target.free_pages(handle, order).is_err() {
            self.stats(EventKind::PageAlloc).failures += 1;
        }
    }

    /// A free of `op.a`; `cache` is the cache a `kmem_cache_free` names.
    fn free(&mut self, kind: EventKind, op: &Op, cache: Option<u32>) {
        let ptr = op.a;
        if ptr == 0 {
            if kind == EventKind::Kfree {
                self.out.notes.kfree_null += 1;
            }
            self.stats(kind).skipped += 1;
            return;
        }
        match self.objs.remove(&ptr) {
            None => self.stats(kind).unmatched_frees += 1,
            Some(o) if o.handle == FAILED => {
                let _ = self.release_obj(o);
                self.out.notes.frees_of_failed_allocs += 1;
                self.stats(kind).skipped += 1;
            }
            Some(o) => {
                if let Some(named) = cache {
                    self.check_cache(op.line, named, o.cache);
                }
                match self.release_obj(o) {
                    Ok(()) => self.stats(kind).replayed += 1,
                    Err(_) => self.stats(kind).failures += 1,
                }
            }
        }
    }

    /// `cache_from_obj()`: warn, in Linux's words, when a free names
    /// another cache than the object's (the object is then freed from its
    /// own cache, as Linux does).
    #[inline]
    fn check_cache(&mut self, line: u64, named: u32, target_cache: u32) {
        let Some(&own) = self.target_caches.get(&target_cache) else {
            // A kmalloc object: its cache is kmem's choice.
            return;
        };
        if own != named {
            self.wrong_cache(line, named, own);
        }
    }

    #[cold]
    fn wrong_cache(&mut self, line: u64, named: u32, own: u32) {
        self.out.notes.wrong_cache_frees += 1;
        if self.out.warnings.len() < self.max_warnings {
            let name = |id: u32| self.strings.get(id as usize).map_or("?", |s| s);
            let w = format!(
                "line {line}: cache_from_obj: Wrong slab cache. {} but object is from {}",
                name(named),
                name(own)
            );
            self.out.warnings.push(w);
        }
    }

    fn cache_alloc(&mut self, op: &Op) {
        let (ptr, bytes_req, bytes_alloc, gfp, node) = (op.a, op.b, op.c, op.gfp, op.node);
        const K: EventKind = EventKind::KmemCacheAlloc;
        if let Some(reclaimable) = self.tracker.cache_alloc(op.cpu, op.tid) {
            self.slab_pages.entry(op.name).or_default().add(reclaimable);
        }
        if ptr == 0 {
            self.out.notes.linux_failed_allocs += 1;
            self.stats(K).skipped += 1;
            return;
        }
        let id = match self.caches.get(&(op.name, bytes_req)) {
            Some(c) => c.id,
            None => self.create_cache(op.name, bytes_req, bytes_alloc, gfp, op.accounted),
        };
        let Some((cache, size)) = id else {
            let name = self
                .strings
                .get(op.name as usize)
                .map_or("?", |s| s)
                .to_string();
            self.failed(
                op,
                K,
                format_args!("from {name} ({bytes_req} B, {gfp}), a cache kmem refused to create"),
                kmem::Error::InvalidArgument,
            );
            self.insert_failed(ptr, bytes_req, K);
            return;
        };
        match self.target.cache_alloc(cache, gfp, node) {
            Ok(handle) => {
                self.stats(K).replayed += 1;
                self.out
                    .kmem_cache_fidelity
                    .count(size as u64 == bytes_alloc);
                let o = Obj {
                    handle,
                    size: bytes_req as u32,
                    cache,
                };
                self.insert_obj(ptr, o, K);
            }
            Err(e) => {
                let name = self
                    .strings
                    .get(op.name as usize)
                    .map_or("?", |s| s)
                    .to_string();
                self.failed(op, K, format_args!("from {name} ({bytes_req} B, {gfp})"), e);
                self.insert_failed(ptr, bytes_req, K);
            }
        }
    }

    #[cold]
    fn create_cache(
        &mut self,
        name: u32,
        bytes_req: u64,
        bytes_alloc: u64,
        gfp: Gfp,
        accounted: bool,
    ) -> Option<(u32, usize)> {
        let text = self
            .strings
            .get(name as usize)
            .map_or("?", |s| s)
            .to_string();
        let (mut flags, ctor) = infer_cache_flags(
            bytes_req as usize,
            bytes_alloc as usize,
            accounted,
            gfp,
            self.nr_cpus as usize,
        );
        let seen = match self.head_slab_pages.get(&text) {
            Some(e) => *e,
            None => self.slab_pages.get(&name).copied().unwrap_or_default(),
        };
        let (reclaimable, reclaim_source) = crate::reclaim::reclaimable(&text, seen);
        if reclaimable {
            flags |= SLAB_RECLAIM_ACCOUNT;
        }
        let spec = CacheSpec {
            name: &text,
            object_size: bytes_req as usize,
            flags,
            ctor,
        };
        let made = self.target.create_cache(&spec);
        let id = made.as_ref().ok().copied();
        if let Some((tid, _)) = id {
            self.target_caches.insert(tid, name);
        }
        self.out.caches.push(CacheReport {
            name: text,
            object_size: bytes_req as usize,
            linux_size: bytes_alloc as usize,
            size: id.map_or(0, |(_, s)| s),
            flags: format!("{flags:?}"),
            ctor,
            reclaimable,
            reclaim_source,
            linux_slab_pages: Evidence::default(),
            error: made.err().map(|e| e.to_string()),
        });
        self.report_names.push(name);
        self.caches.insert((name, bytes_req), CacheRec { id });
        id
    }

    /// Free a page block on the target as its record says.
    fn release_pages(&mut self, rec: PageRec) -> Result<(), kmem::Error> {
        let order = rec.order as u32;
        match rec.kind {
            PageKind::Replayed => {}
            PageKind::Failed => {
                self.out.traced_live_bytes -= (PAGE_SIZE as u64) << order;
                return Ok(());
            }
            PageKind::LinuxSlab | PageKind::KmallocLarge => return Ok(()),
        }
        self.out.traced_live_bytes -= (PAGE_SIZE as u64) << order;
        self.pages_live -= 1 << order;
        self.out.live_bytes -= (PAGE_SIZE as u64) << order;
        self.target.free_pages(rec.handle, order)
    }

    fn page_alloc(&mut self, h: &Op) {
        const K: EventKind = EventKind::PageAlloc;
        let (order, gfp) = (h.b as u32, h.gfp);
        let Some(pfn) = (h.a != u64::MAX).then_some(h.a) else {
            self.tracker.other(h.cpu);
            self.out.notes.linux_failed_allocs += 1;
            self.stats(K).skipped += 1;
            return;
        };
        let slab_page = is_linux_slab_page(gfp);
        if slab_page {
            self.tracker
                .slab_page(h.cpu, h.tid, gfp.contains(__GFP_RECLAIMABLE));
        } else {
            self.tracker.other(h.cpu);
        }
        let rec = if slab_page {
            self.out.notes.slab_page_allocs_left_to_slab += 1;
            self.stats(K).skipped += 1;
            PageRec {
                handle: 0,
                order: order as u8,
                kind: PageKind::LinuxSlab,
            }
        } else {
            match self.target.alloc_pages(gfp, order) {
                Ok((handle, got)) => {
                    self.stats(K).replayed += 1;
                    self.out.page_fidelity.count(got == order);
                    self.pages_live += 1 << order;
                    self.add_live((PAGE_SIZE as u64) << order);
                    self.add_traced((PAGE_SIZE as u64) << order);
                    self.last_page = Some(LastPageAlloc {
                        cpu: h.cpu,
                        tid: h.tid,
                        pfn,
                        order,
                    });
                    PageRec {
                        handle,
                        order: order as u8,
                        kind: PageKind::Replayed,
                    }
                }
                Err(e) => {
                    self.failed(h, K, format_args!("of order {order} ({gfp})"), e);
                    self.add_traced((PAGE_SIZE as u64) << order);
                    PageRec {
                        handle: FAILED,
                        order: order as u8,
                        kind: PageKind::Failed,
                    }
                }
            }
        };
        let old = self.pages.insert(pfn, rec);
        if let Some(old) = old {
            self.out.notes.implicit_frees += 1;
            if self.release_pages(old).is_err() {
                self.stats(K).failures += 1;
            }
        }
    }

    fn page_free(&mut self, cpu: u32, pfn: u64, order: u32, batched: bool) {
        let kind = if batched {
            EventKind::PageFreeBatched
        } else {
            let (ring, next) = &mut self.recent_frees[cpu as usize];
            ring[*next] = pfn;
            *next = (*next + 1) % RECENT_FREES;
            EventKind::PageFree
        };
        let Some(rec) = self.pages.remove(&pfn) else {
            if batched && self.recent_frees[cpu as usize].0.contains(&pfn) {
                self.out.notes.batched_free_repeats += 1;
                self.stats(kind).skipped += 1;
            } else {
                self.stats(kind).unmatched_frees += 1;
            }
            return;
        };
        match rec.kind {
            PageKind::Replayed => {
                if rec.order as u32 != order {
                    self.out.notes.page_free_order_mismatches += 1;
                }
                match self.release_pages(rec) {
                    Ok(()) => self.stats(kind).replayed += 1,
                    Err(_) => self.stats(kind).failures += 1,
                }
            }
            PageKind::LinuxSlab => {
                self.out.notes.slab_page_frees_left_to_slab += 1;
                self.stats(kind).skipped += 1;
            }
            // Its kfree freed kmem's pages already.
            PageKind::KmallocLarge => self.stats(kind).skipped += 1,
            PageKind::Failed => {
                let _ = self.release_pages(rec);
                self.out.notes.frees_of_failed_allocs += 1;
                self.stats(kind).skipped += 1;
            }
        }
    }

    fn sample(&mut self) {
        let Some(s) = self.target.sample() else {
            return;
        };
        let page = PAGE_SIZE as u64;
        let MemSample {
            slab_pages,
            kmalloc_large_pages,
            free_pages,
            pcp_pages,
        } = s;
        let p = Point {
            event: self.out.events,
            time_s: self
                .first_time_ns
                .map_or(0.0, |t0| (self.last_time_ns - t0) as f64 / 1e9),
            footprint_bytes: (slab_pages + kmalloc_large_pages + self.pages_live) * page,
            slab_bytes: slab_pages * page,
            kmalloc_large_bytes: kmalloc_large_pages * page,
            page_bytes: self.pages_live * page,
            free_bytes: (free_pages + pcp_pages) * page,
            live_bytes: self.out.live_bytes,
            live_object_bytes: self.out.live_object_bytes,
        };
        self.out.peak_footprint_bytes = self.out.peak_footprint_bytes.max(p.footprint_bytes);
        self.out.peak_slab_bytes = self
            .out
            .peak_slab_bytes
            .max(p.slab_bytes + p.kmalloc_large_bytes);
        self.series.push(p);
    }
}
