//! The percpu events against kmem's per-CPU allocator: what is replayed,
//! what is compared with Linux, and how.
//!
//! The [engine](crate::engine) replays `percpu:percpu_alloc_percpu` as
//! [`Kmem::__alloc_percpu_gfp`](kmem::Kmem::__alloc_percpu_gfp) of the
//! traced `size`, `align` and GFP flags, or, for `reserved=1`, as
//! [`Kmem::__alloc_reserved_percpu`](kmem::Kmem::__alloc_reserved_percpu)
//! (which takes no flags: Linux's passes `GFP_KERNEL`), keyed by the
//! traced `ptr`; `percpu:percpu_free_percpu` as
//! [`Kmem::free_percpu`](kmem::Kmem::free_percpu) of the allocation the
//! trace's `ptr` names. As for objects, a free of a `ptr` the trace never
//! allocated is *unmatched* (allocated before the trace began), and an
//! allocation at a `ptr` still live means Linux freed the old one where
//! perf did not record it: kmem frees it first (an *implicit free*). A
//! GFP mask without `__GFP_DIRECT_RECLAIM` makes the allocation atomic on
//! kmem as in Linux (`is_atomic`): it may only take populated pages, and
//! fails rather than create a chunk. An allocation kmem refuses is a
//! failure, counted and listed with its line; the trace's free of it is
//! counted apart from the unmatched ones.
//!
//! `percpu:percpu_alloc_percpu_fail` (an allocation Linux failed) and
//! `percpu:percpu_create_chunk`/`percpu_destroy_chunk` (the chunks Linux's
//! allocator made and dropped) are counted, not executed: kmem's allocator
//! makes and drops its own chunks as its own allocations need, and an
//! allocation Linux could not make leaves nothing to replay.
//!
//! What the trace lets us check ([`PercpuOutcome`] holds the counts):
//!
//! * **The full size.** `bytes_alloc` is Linux's `pcpu_obj_full_size(size)`:
//!   `size` in every possible CPU, plus, with memcg kmem accounting on
//!   (Linux's default), an `obj_cgroup` pointer per `PCPU_MIN_ALLOC_SIZE`
//!   (4) bytes, `size / 4 * 8`. For every replayed allocation it must equal
//!   [`Kmem::pcpu_obj_full_size`](kmem::Kmem::pcpu_obj_full_size) on the
//!   replay's machine: it holds when the machine has the traced machine's
//!   possible CPUs (`perf script --header`'s `nrcpus avail`, else the CPUs
//!   seen; `--cpus` to set them) and memcg on, as kmem boots by default. A
//!   16-byte allocation on the bundled traces' 2-CPU machines shows
//!   `bytes_alloc=64` = 16 × 2 + 16 / 4 × 8.
//! * **`is_atomic` against the GFP flags**: the trace's `is_atomic` must be
//!   what the traced mask says (no `__GFP_DIRECT_RECLAIM`), since both come
//!   from the same flags in Linux; kmem decides atomicity from the mask it
//!   is given, so a disagreement would mean kmem replays the allocation
//!   otherwise than Linux made it.
//! * **Alignment**: kmem's per-CPU pointer is a multiple of the traced
//!   `align`.

use crate::engine::Fidelity;
use serde::Serialize;

/// The per-CPU allocator's chunks and pages at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PercpuUsage {
    /// Chunks now, the first chunk included (`nr_chunks` of
    /// `/sys/kernel/debug/percpu_stats`).
    pub chunks: u64,
    /// Most chunks at once (`nr_max_chunks`).
    pub max_chunks: u64,
    /// Pages backing per-CPU memory, all units (`Percpu:` of
    /// `/proc/meminfo`, in pages).
    pub pages: u64,
}

/// What the replay of the percpu events counted and compared (see the
/// [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PercpuOutcome {
    /// kmem's possible CPUs (0 until an allocation was replayed).
    pub nr_possible_cpus: u64,
    /// Whether kmem's `pcpu_obj_full_size()` counts memcg's `obj_cgroup`
    /// pointers (known once an allocation was replayed).
    pub memcg: bool,
    /// Replayed allocations from the reserved chunk (`reserved=1`).
    pub reserved: u64,
    /// Replayed reserved allocations whose traced GFP flags are not the
    /// `GFP_KERNEL` that `__alloc_reserved_percpu()` passes (replayed with
    /// `GFP_KERNEL` all the same).
    pub reserved_other_gfp: u64,
    /// Replayed atomic allocations (GFP flags without
    /// `__GFP_DIRECT_RECLAIM`).
    pub atomic: u64,
    /// Allocations the trace has without `gfp_flags` (before Linux 6.0),
    /// replayed with `GFP_KERNEL`, or `GFP_NOWAIT` when `is_atomic=1`.
    pub gfp_not_traced: u64,
    /// `percpu_alloc_percpu_fail`: allocations Linux failed. Counted, not
    /// replayed.
    pub linux_failed_allocs: u64,
    /// `percpu_create_chunk` events: chunks Linux created.
    pub linux_chunks_created: u64,
    /// `percpu_destroy_chunk` events: chunks Linux destroyed.
    pub linux_chunks_destroyed: u64,
    /// Allocations at a `ptr` the trace still held: the old one was freed
    /// on kmem first.
    pub implicit_frees: u64,
    /// Replayed allocations: kmem's `pcpu_obj_full_size(size)` equals the
    /// traced `bytes_alloc`.
    pub full_size: Fidelity,
    /// Replayed allocations without `bytes_alloc` in the trace (before
    /// Linux 6.0): not compared.
    pub full_size_not_compared: u64,
    /// Allocations with traced GFP flags: the traced `is_atomic` is what
    /// the mask says.
    pub is_atomic: Fidelity,
    /// Replayed allocations: kmem's pointer is a multiple of the traced
    /// `align`.
    pub aligned: Fidelity,
    /// Allocations live on kmem at the end.
    pub live: u64,
    /// Most allocations live on kmem at once.
    pub peak_live: u64,
    /// Their full size (kmem's `pcpu_obj_full_size()`) at the end, bytes.
    pub live_bytes: u64,
    /// Most full-size bytes live at once.
    pub peak_live_bytes: u64,
    /// kmem's per-CPU allocator at the end (`None`: the target cannot
    /// tell).
    pub kmem_at_end: Option<PercpuUsage>,
    /// The first disagreements with Linux: `line N: event: what`.
    pub mismatches: Vec<String>,
}

impl PercpuOutcome {
    /// Keep a disagreement's message if fewer than `max` are kept.
    pub(crate) fn mismatch(&mut self, max: usize, msg: impl FnOnce() -> String) {
        if self.mismatches.len() < max {
            self.mismatches.push(msg());
        }
    }

    /// An allocation of `full` bytes became live on kmem.
    pub(crate) fn add_live(&mut self, full: u64) {
        self.live += 1;
        self.live_bytes += full;
        self.peak_live = self.peak_live.max(self.live);
        self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes);
    }

    /// An allocation of `full` bytes was freed on kmem.
    pub(crate) fn sub_live(&mut self, full: u64) {
        self.live -= 1;
        self.live_bytes -= full;
    }

    /// How kmem's full size is made up on its machine, for the report:
    /// `size × 2 + size / 4 × 8` (memcg on) or `size × 2`.
    pub fn full_size_formula(&self) -> String {
        if self.memcg {
            format!(
                "size × {} + size / 4 × {}",
                self.nr_possible_cpus,
                core::mem::size_of::<usize>()
            )
        } else {
            format!("size × {}", self.nr_possible_cpus)
        }
    }
}
