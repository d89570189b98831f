//! The percpu events: the bundled `vm-percpu` trace (a real Linux 6.18
//! trace of a fork- and netns-heavy workload on 2 CPUs) replayed with its
//! counts worked out here from the text and every allocation's full size
//! equal to Linux's `bytes_alloc`; hand-written traces for reserved and
//! atomic allocations, malformed lines, unknown and implicit frees,
//! Linux's failures and chunk events, kmem's failures, a machine of other
//! CPUs than the traced one, and the CPU and task each call runs as.

use kmem::gfp::Gfp;
use kmem::Platform;
use kmem_replay::parse::EventKind;
use kmem_replay::percpu::PercpuUsage;
use kmem_replay::target::{CacheSpec, MemSample};
use kmem_replay::{
    replay_kmem, Engine, KmemRun, KmemTarget, Machine, ReplayOptions, Report, Target, TraceInput,
};
use std::collections::{HashMap, HashSet};
use std::io::Read;

const VM_PERCPU: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../kmem-cli/traces/vm-percpu.trace.xz"
);

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

fn input(text: &str) -> TraceInput {
    let bytes = text.as_bytes().to_vec();
    let len = bytes.len() as u64;
    TraceInput::from_reader("test.trace", std::io::Cursor::new(bytes), Some(len)).unwrap()
}

fn clone_run(run: &KmemRun) -> KmemRun {
    KmemRun {
        outcome: run.outcome.clone(),
        messages: run.messages.clone(),
        message_count: run.message_count,
        input_error: run.input_error.clone(),
    }
}

/// Replay `text` on a fresh machine of `cpus` CPUs: the run, its text
/// report and its JSON.
fn replay(text: &str, cpus: usize) -> (KmemRun, String, serde_json::Value) {
    let machine = Machine {
        cpus,
        mem: 256 << 20,
    };
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let run = replay_kmem(&k, &mut input(text), &mut ReplayOptions::default());
    let report = Report::new("test", machine, &k, clone_run(&run), None);
    let mut out = String::new();
    report.write_text(&mut out).unwrap();
    let json = serde_json::from_str(&report.to_json()).unwrap();
    (run, out, json)
}

/// The percpu events of a trace's text, counted independently of the
/// crate's parser and engine.
#[derive(Debug, Default, PartialEq, Eq)]
struct TextCounts {
    allocs: u64,
    frees: u64,
    /// Frees of a ptr no earlier allocation holds.
    unmatched: u64,
    /// Allocations at a ptr an earlier allocation still holds.
    reused: u64,
    /// Allocations whose bytes_alloc is `size * cpus + size / 4 * 8`.
    full_size_2_cpus_memcg: u64,
    /// Allocations whose is_atomic is what their GFP flags say.
    atomic_agrees: u64,
    /// ptrs held at the end.
    live: u64,
    other_percpu_events: u64,
}

fn count_text(text: &str) -> TextCounts {
    let mut c = TextCounts::default();
    let mut live = HashSet::new();
    for line in text.lines() {
        let Some(ev) = line.split_whitespace().find(|t| t.starts_with("percpu:")) else {
            continue;
        };
        let ptr = field(line, "ptr");
        match ev.trim_end_matches(':') {
            "percpu:percpu_alloc_percpu" => {
                c.allocs += 1;
                if !live.insert(ptr.unwrap().to_string()) {
                    c.reused += 1;
                }
                let size: u64 = field(line, "size").unwrap().parse().unwrap();
                let bytes_alloc: u64 = field(line, "bytes_alloc").unwrap().parse().unwrap();
                c.full_size_2_cpus_memcg += u64::from(bytes_alloc == size * 2 + size / 4 * 8);
                // GFP_KERNEL and GFP_KERNEL_ACCOUNT may sleep; the traces
                // have no other flags.
                let gfp = field(line, "gfp_flags").unwrap();
                let sleeps = matches!(gfp, "GFP_KERNEL" | "GFP_KERNEL_ACCOUNT");
                c.atomic_agrees += u64::from((field(line, "is_atomic") == Some("1")) != sleeps);
            }
            "percpu:percpu_free_percpu" => {
                c.frees += 1;
                if !live.remove(ptr.unwrap()) {
                    c.unmatched += 1;
                }
            }
            _ => c.other_percpu_events += 1,
        }
    }
    c.live = live.len() as u64;
    c
}

#[test]
fn the_vm_percpu_trace_replays_every_allocation_at_linuxs_full_size() {
    let xz = std::fs::read(VM_PERCPU).expect("the bundled vm-percpu trace");
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .unwrap();
    let c = count_text(&text);
    assert_eq!(
        c,
        TextCounts {
            allocs: 22083,
            frees: 21829,
            unmatched: 5,
            reused: 4,
            full_size_2_cpus_memcg: 22083,
            atomic_agrees: 22083,
            live: 255,
            other_percpu_events: 0,
        }
    );
    let flags: HashSet<(&str, &str, &str)> = text
        .lines()
        .filter(|l| l.contains("percpu_alloc_percpu:"))
        .map(|l| {
            (
                field(l, "reserved").unwrap(),
                field(l, "is_atomic").unwrap(),
                field(l, "gfp_flags").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        HashSet::from([("0", "0", "GFP_KERNEL"), ("0", "0", "GFP_KERNEL_ACCOUNT")])
    );

    let mut inp = TraceInput::open(VM_PERCPU).unwrap();
    let machine = Machine::for_trace(&mut inp, None, 24 << 30).unwrap();
    assert_eq!(machine.cpus, 2, "the trace was recorded on 2 CPUs");
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let live_at_boot = k.pcpu_global_stats().nr_cur_alloc;
    let run = replay_kmem(&k, &mut inp, &mut ReplayOptions::default());
    let o = &run.outcome;
    assert_eq!(run.input_error, None);
    assert_eq!((o.malformed_lines, o.unknown_events), (0, 0));
    assert_eq!(o.failures(), 0, "{:?} {:?}", o.failed, run.messages);
    assert_eq!(run.message_count, 0, "{:?}", run.messages);
    let a = o.stats(EventKind::PercpuAlloc);
    assert_eq!(
        (a.events, a.replayed, a.failures, a.skipped),
        (22083, 22083, 0, 0)
    );
    let f = o.stats(EventKind::PercpuFree);
    assert_eq!(
        (
            f.events,
            f.replayed,
            f.unmatched_frees,
            f.failures,
            f.skipped
        ),
        (21829, 21824, 5, 0, 0)
    );
    let p = &o.percpu;
    assert!(p.mismatches.is_empty(), "{:?}", p.mismatches);
    // Every allocation's full size is Linux's bytes_alloc.
    assert_eq!((p.full_size.compared, p.full_size.matched), (22083, 22083));
    assert_eq!(p.full_size_not_compared, 0);
    assert_eq!((p.nr_possible_cpus, p.memcg), (2, true));
    assert_eq!((p.is_atomic.compared, p.is_atomic.matched), (22083, 22083));
    assert_eq!((p.aligned.compared, p.aligned.matched), (22083, 22083));
    assert_eq!((p.reserved, p.atomic, p.reserved_other_gfp), (0, 0, 0));
    assert_eq!(p.implicit_frees, 4);
    assert_eq!(o.notes.implicit_frees, 4);
    assert_eq!(
        (
            p.linux_failed_allocs,
            p.linux_chunks_created,
            p.linux_chunks_destroyed
        ),
        (0, 0, 0)
    );
    // What the trace leaves live is live on kmem, by kmem's own count.
    assert_eq!(p.live, 255);
    assert_eq!(k.pcpu_global_stats().nr_cur_alloc - live_at_boot, 255);
    assert!(p.peak_live >= 255 && p.peak_live_bytes >= p.live_bytes);
    let at_end = p.kmem_at_end.unwrap();
    assert_eq!(at_end.pages, k.pcpu_nr_pages() as u64);
    assert!(at_end.chunks >= 1 && at_end.max_chunks >= at_end.chunks);
    // The vmalloc events are untouched by the percpu ones.
    assert_eq!(o.vmalloc.nr_lazy_rise.matched, 3399);
    assert!(o.vmalloc.mismatches.is_empty());

    let report = Report::new("vm-percpu", machine, &k, clone_run(&run), None);
    let mut out = String::new();
    report.write_text(&mut out).unwrap();
    for want in [
        "percpu:percpu_alloc_percpu           22083     22083         0          0         0\n",
        "percpu:percpu_free_percpu            21829     21824         0          5         0\n",
        "  percpu_alloc_percpu: 22083 replayed (0 reserved, 0 atomic), 0 failed on kmem, 0 failed in Linux (percpu_alloc_percpu_fail, not replayed)",
        "  percpu_free_percpu: 21824 replayed, 5 unmatched (allocated before the trace began), 0 failed on kmem; 4 implicit frees (Linux reused the ptr unseen)",
        "  live on kmem: 255 allocations at the end",
        "  pcpu_obj_full_size() equals bytes_alloc:        22083/22083 = 100.00% (size × 2 + size / 4 × 8: 2 possible CPUs, memcg on)",
        "  is_atomic agrees with the GFP flags:            22083/22083 = 100.00%",
        "  area aligned as traced:                         22083/22083 = 100.00%",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    // Nothing is left "not replayed"; the rare percpu kinds are not listed
    // when the trace has none.
    assert!(!out.contains("not replayed: kmem has no"), "{out}");
    assert!(!out.contains("percpu:percpu_alloc_percpu_fail"), "{out}");
    assert!(!out.contains("Linux's chunks"), "{out}");
    let meminfo_kb = at_end.pages * 4;
    assert!(
        out.contains(&format!(
            "  kmem's chunks: 2 at the end, 2 at most; its per-CPU memory at the end: {} pages (Percpu: {meminfo_kb} kB in /proc/meminfo)",
            at_end.pages
        )),
        "{out}"
    );
    let percpu_line = format!("Percpu:         {meminfo_kb:>8} kB");
    assert!(out.contains(&percpu_line), "{percpu_line}\n{out}");
    let j: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(j["not_replayed"], serde_json::json!([]));
    assert_eq!(j["by_type"]["percpu:percpu_alloc_percpu"], 22083);
    assert_eq!(j["by_type"]["percpu:percpu_alloc_percpu_fail"], 0);
    assert_eq!(j["percpu"]["full_size"]["matched"], 22083);
    assert_eq!(j["percpu"]["mismatches"], serde_json::json!([]));
}

/// A `percpu_alloc_percpu` line; `flags` are `reserved` and `is_atomic`.
fn alloc(
    cpu: u32,
    (reserved, atomic): (u8, u8),
    size: u64,
    align: u64,
    ptr: u64,
    bytes_alloc: u64,
    gfp: &str,
) -> String {
    format!(
        "bash 1 [{cpu:03}] 1.0: percpu:percpu_alloc_percpu: call_site=f+0x1 reserved={reserved} \
         is_atomic={atomic} size={size} align={align} base_addr=0xffffe8ffffc00000 off=0 \
         ptr={ptr:#x} bytes_alloc={bytes_alloc} gfp_flags={gfp}\n"
    )
}

fn free(cpu: u32, ptr: u64) -> String {
    format!(
        "bash 1 [{cpu:03}] 1.0: percpu:percpu_free_percpu: base_addr=0xffffe8ffffc00000 off=0 ptr={ptr:#x}\n"
    )
}

#[test]
fn a_hand_written_trace_of_reserved_atomic_failed_and_unknown_allocations() {
    // 2 CPUs, memcg on: bytes_alloc = size * 2 + size / 4 * 8.
    let text = [
        alloc(0, (0, 0), 16, 8, 0x1000, 64, "GFP_KERNEL"),
        alloc(1, (1, 0), 64, 8, 0x2000, 256, "GFP_KERNEL"),
        alloc(0, (0, 1), 8, 8, 0x3000, 32, "GFP_NOWAIT"),
        // Allocated before the trace began.
        free(0, 0x9000),
        // Malformed: no ptr.
        "bash 1 [000] 1.0: percpu:percpu_alloc_percpu: call_site=f reserved=0 is_atomic=0 size=16 align=8 bytes_alloc=64 gfp_flags=GFP_KERNEL\n".into(),
        // is_atomic=0, but the flags may not sleep: kmem goes by the flags.
        alloc(1, (0, 0), 4, 4, 0x4000, 16, "GFP_NOWAIT"),
        // A bytes_alloc kmem's full size does not give.
        alloc(0, (0, 0), 32, 8, 0x5000, 100, "GFP_KERNEL_ACCOUNT"),
        "bash 1 [000] 1.0: percpu:percpu_alloc_percpu_fail: reserved=0 is_atomic=1 size=32 align=8\n".into(),
        "kworker/0:1 2 [000] 1.0: percpu:percpu_create_chunk: base_addr=0xffffc8ffffe00000\n".into(),
        // Linux reused 0x1000 without a traced free.
        alloc(0, (0, 0), 16, 8, 0x1000, 64, "GFP_KERNEL"),
        // More than a unit holds: kmem refuses it (so would Linux).
        alloc(0, (0, 0), 65536, 8, 0x6000, 65536 * 2 + 65536 / 4 * 8, "GFP_KERNEL"),
        free(0, 0x6000),
        free(1, 0x1000),
        free(0, 0x2000),
        free(0, 0x3000),
        "kworker/0:1 2 [000] 1.0: percpu:percpu_destroy_chunk: base_addr=0xffffc8ffffe00000\n".into(),
    ]
    .concat();
    let (run, out, json) = replay(&text, 2);
    let o = &run.outcome;
    assert_eq!(o.malformed_lines, 1);
    assert_eq!(
        o.errors,
        ["line 5: missing field `ptr=`: `bash 1 [000] 1.0: percpu:percpu_alloc_percpu: call_site=f reserved=0 is_atomic=0 size=16 align=8 bytes_alloc=64 gfp_flags=GFP_KERNEL`"]
    );
    let a = o.stats(EventKind::PercpuAlloc);
    assert_eq!((a.events, a.replayed, a.failures, a.skipped), (7, 6, 1, 0));
    assert_eq!(
        o.failed,
        ["line 11: percpu:percpu_alloc_percpu of 65536 B aligned to 8 (GFP_KERNEL): invalid argument (EINVAL)"]
    );
    let f = o.stats(EventKind::PercpuFree);
    assert_eq!(
        (f.events, f.replayed, f.unmatched_frees, f.skipped),
        (5, 3, 1, 1)
    );
    assert_eq!(o.notes.frees_of_failed_allocs, 1);
    let fail = o.stats(EventKind::PercpuAllocFail);
    assert_eq!((fail.events, fail.replayed, fail.skipped), (1, 0, 1));
    assert_eq!(o.notes.linux_failed_allocs, 1);
    for k in [EventKind::PercpuCreateChunk, EventKind::PercpuDestroyChunk] {
        let s = o.stats(k);
        assert_eq!((s.events, s.skipped), (1, 1), "{k}");
    }
    let p = &o.percpu;
    assert_eq!((p.reserved, p.atomic, p.reserved_other_gfp), (1, 2, 0));
    assert_eq!(p.linux_failed_allocs, 1);
    assert_eq!((p.linux_chunks_created, p.linux_chunks_destroyed), (1, 1));
    assert_eq!(p.implicit_frees, 1);
    assert_eq!((p.full_size.compared, p.full_size.matched), (6, 5));
    assert_eq!((p.is_atomic.compared, p.is_atomic.matched), (7, 6));
    assert_eq!((p.aligned.compared, p.aligned.matched), (6, 6));
    // 0x4000 and 0x5000 stay.
    assert_eq!((p.live, p.live_bytes), (2, 16 + 128));
    assert_eq!(
        p.mismatches,
        [
            "line 6: percpu_alloc_percpu: is_atomic=0, but gfp_flags=GFP_NOWAIT lack __GFP_DIRECT_RECLAIM",
            "line 7: percpu_alloc_percpu: size=32 bytes_alloc=100, kmem's pcpu_obj_full_size() is 128 (size × 2 + size / 4 × 8)",
        ]
    );
    for want in [
        "percpu:percpu_alloc_percpu               7         6         1          0         0\n",
        "percpu:percpu_free_percpu                5         3         0          1         1\n",
        "percpu:percpu_alloc_percpu_fail          1         0         0          0         1  counted: Linux's failures\n",
        "percpu:percpu_create_chunk               1         0         0          0         1  counted: kmem's chunks are its own\n",
        "percpu:percpu_destroy_chunk              1         0         0          0         1  counted: kmem's chunks are its own\n",
        "  percpu_alloc_percpu: 6 replayed (1 reserved, 2 atomic), 1 failed on kmem, 1 failed in Linux (percpu_alloc_percpu_fail, not replayed)",
        "  percpu_free_percpu: 3 replayed, 1 unmatched (allocated before the trace began), 0 failed on kmem; 1 implicit frees",
        "  Linux's chunks: 1 created, 1 destroyed (percpu_create_chunk, percpu_destroy_chunk: counted, not replayed)",
        "  pcpu_obj_full_size() equals bytes_alloc:        5/6 = 83.33% (size × 2 + size / 4 × 8: 2 possible CPUs, memcg on)",
        "  is_atomic agrees with the GFP flags:            6/7 = 85.71%",
        "  first disagreements with Linux:\n    line 6: percpu_alloc_percpu: is_atomic=0",
        "failed on kmem (the first 1):\n  line 11: percpu:percpu_alloc_percpu of 65536 B",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    assert_eq!(json["percpu"]["full_size"]["compared"], 6);
    assert_eq!(json["percpu"]["linux_failed_allocs"], 1);
    assert_eq!(json["by_type"]["percpu:percpu_create_chunk"], 1);
    // kmem's illegal-size warning, in Linux's words.
    assert!(
        run.messages
            .iter()
            .any(|m| m.contains("percpu: illegal size (65536) or align (8) for percpu allocation")),
        "{:?}",
        run.messages
    );
}

#[test]
fn a_reserved_allocation_with_other_flags_and_a_trace_before_linux_6_0() {
    let text = [
        alloc(0, (1, 0), 8, 8, 0x100, 32, "GFP_NOFS"),
        // Linux 5.x: no call_site, bytes_alloc, gfp_flags.
        "bash 1 [000] 1.0: percpu:percpu_alloc_percpu: reserved=0 is_atomic=1 size=8 align=8 base_addr=0xffffe8ffffc00000 off=8 ptr=0x108\n".into(),
        "bash 1 [000] 1.0: percpu:percpu_alloc_percpu: reserved=0 is_atomic=0 size=8 align=8 base_addr=0xffffe8ffffc00000 off=16 ptr=0x110\n".into(),
    ]
    .concat();
    let (run, out, _) = replay(&text, 2);
    let o = &run.outcome;
    assert_eq!(o.failures(), 0, "{:?}", o.failed);
    let p = &o.percpu;
    assert_eq!((p.reserved, p.reserved_other_gfp, p.atomic), (1, 1, 1));
    assert_eq!(p.gfp_not_traced, 2);
    assert_eq!((p.full_size.compared, p.full_size.matched), (1, 1));
    assert_eq!(p.full_size_not_compared, 2);
    assert_eq!((p.is_atomic.compared, p.is_atomic.matched), (1, 1));
    for want in [
        "(1 reserved, 1 atomic; 1 reserved with other GFP flags than GFP_KERNEL, replayed with it)",
        "    2 without gfp_flags (a kernel before 6.0): replayed with GFP_KERNEL, or GFP_NOWAIT when is_atomic=1",
        "1/1 = 100.00% (size × 2 + size / 4 × 8: 2 possible CPUs, memcg on) (2 not compared: no bytes_alloc in the trace, a kernel before 6.0)",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
}

#[test]
fn on_a_machine_of_other_cpus_the_full_size_differs_and_says_how() {
    // The traced machine had 2 possible CPUs; this one has 4.
    let text = [
        alloc(0, (0, 0), 16, 8, 0x1000, 64, "GFP_KERNEL"),
        alloc(3, (0, 0), 4, 4, 0x1010, 16, "GFP_KERNEL"),
    ]
    .concat();
    let (run, out, _) = replay(&text, 4);
    let p = &run.outcome.percpu;
    assert_eq!(run.outcome.failures(), 0);
    assert_eq!((p.full_size.compared, p.full_size.matched), (2, 0));
    assert_eq!(
        p.mismatches[0],
        "line 1: percpu_alloc_percpu: size=16 bytes_alloc=64, kmem's pcpu_obj_full_size() is 96 (size × 4 + size / 4 × 8)"
    );
    assert!(
        out.contains("0/2 = 0.00% (size × 4 + size / 4 × 8: 4 possible CPUs, memcg on)"),
        "{out}"
    );
}

/// KmemTarget, recording the CPU and task each percpu call ran as.
struct Recording<'k, 's> {
    inner: KmemTarget<'k, 's>,
    sim: &'s kmem_sim::SimPlatform,
    calls: Vec<(&'static str, usize, u32)>,
}

impl Recording<'_, '_> {
    fn note(&mut self, what: &'static str) {
        let tid = self.sim.current().pid;
        self.calls.push((what, self.sim.smp_processor_id(), tid));
    }
}

impl Target for Recording<'_, '_> {
    fn set_cpu(&mut self, cpu: usize) {
        self.inner.set_cpu(cpu)
    }
    fn set_task(&mut self, tid: u32, comm: &[u8]) {
        self.inner.set_task(tid, comm)
    }
    fn kmalloc(&mut self, size: usize, gfp: Gfp, node: i32) -> Result<(usize, usize), kmem::Error> {
        self.inner.kmalloc(size, gfp, node)
    }
    fn kfree(&mut self, handle: usize, size: usize) -> Result<(), kmem::Error> {
        self.inner.kfree(handle, size)
    }
    fn create_cache(&mut self, spec: &CacheSpec<'_>) -> Result<(u32, usize), kmem::Error> {
        self.inner.create_cache(spec)
    }
    fn cache_alloc(&mut self, cache: u32, gfp: Gfp, node: i32) -> Result<usize, kmem::Error> {
        self.inner.cache_alloc(cache, gfp, node)
    }
    fn cache_free(&mut self, cache: u32, handle: usize) -> Result<(), kmem::Error> {
        self.inner.cache_free(cache, handle)
    }
    fn alloc_pages(&mut self, gfp: Gfp, order: u32) -> Result<(usize, u32), kmem::Error> {
        self.inner.alloc_pages(gfp, order)
    }
    fn free_pages(&mut self, handle: usize, order: u32) -> Result<(), kmem::Error> {
        self.inner.free_pages(handle, order)
    }
    fn sample(&mut self) -> Option<MemSample> {
        self.inner.sample()
    }
    fn has_percpu(&self) -> bool {
        self.inner.has_percpu()
    }
    fn alloc_percpu(
        &mut self,
        size: usize,
        align: usize,
        reserved: bool,
        gfp: Gfp,
    ) -> Result<usize, kmem::Error> {
        self.note(if reserved { "alloc reserved" } else { "alloc" });
        self.inner.alloc_percpu(size, align, reserved, gfp)
    }
    fn free_percpu(&mut self, ptr: usize) -> Result<(), kmem::Error> {
        self.note("free");
        self.inner.free_percpu(ptr)
    }
    fn pcpu_obj_full_size(&self, size: usize) -> usize {
        self.inner.pcpu_obj_full_size(size)
    }
    fn percpu_usage(&self) -> Option<PercpuUsage> {
        self.inner.percpu_usage()
    }
}

#[test]
fn percpu_events_run_as_their_cpu_and_task() {
    let text = [
        alloc(1, (0, 0), 16, 8, 0x1000, 64, "GFP_KERNEL"),
        alloc(1, (1, 0), 16, 8, 0x2000, 64, "GFP_KERNEL"),
        free(0, 0x1000).replace("bash 1 ", "kworker/0:2 7 "),
        free(1, 0x2000),
    ]
    .concat();
    let machine = Machine {
        cpus: 2,
        mem: 64 << 20,
    };
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let mut opts = ReplayOptions::default();
    let target = Recording {
        inner: KmemTarget::new(&k, 0),
        sim: &sim,
        calls: Vec::new(),
    };
    let mut engine = Engine::new(target, 2, 0, &opts);
    engine.run(&mut input(&text), &mut opts).unwrap();
    let (t, o) = engine.finish();
    assert_eq!(o.failures(), 0, "{:?}", o.failed);
    assert_eq!(
        t.calls,
        [
            ("alloc", 1, 1),
            ("alloc reserved", 1, 1),
            ("free", 0, 7),
            ("free", 1, 1)
        ]
    );
    assert_eq!(o.cpu_events, [1, 3]);
    assert_eq!(o.percpu.live, 0);
    drop(t);
    sim.on_cpu(0, || ());
    sim.on_cpu(1, || ());
}

#[test]
fn the_system_allocator_counts_percpu_events_without_replaying_them() {
    let text = [
        alloc(0, (0, 0), 16, 8, 0x1000, 64, "GFP_KERNEL"),
        free(0, 0x1000),
    ]
    .concat();
    let (o, err) = kmem_replay::replay_system(&mut input(&text), 2, &mut ReplayOptions::default());
    assert_eq!(err, None);
    let by: HashMap<EventKind, (u64, u64)> = o
        .by_type
        .iter()
        .map(|(k, s)| (*k, (s.replayed, s.skipped)))
        .collect();
    assert_eq!(by[&EventKind::PercpuAlloc], (0, 1));
    assert_eq!(by[&EventKind::PercpuFree], (0, 1));
    assert_eq!(o.percpu.full_size.compared, 0);
    assert_eq!(o.percpu.kmem_at_end, None);
}
