//! The vmalloc events: the bundled `vm-percpu` trace (a real Linux 6.18
//! trace of a fork- and netns-heavy workload on 2 CPUs) replayed with its
//! counts worked out here from the text, and hand-written traces for the
//! parser's lines, failed tries, empty purges, implicit frees, the CPU each
//! call runs on, and a purge kmem did not find due.

use kmem::gfp::Gfp;
use kmem::Platform;
use kmem_replay::parse::EventKind;
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

/// Replay `text` on a fresh machine of `cpus` CPUs: the run and its text
/// report.
fn replay(text: &str, cpus: usize) -> (KmemRun, String) {
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
    (run, out)
}

fn clone_run(run: &KmemRun) -> KmemRun {
    KmemRun {
        outcome: run.outcome.clone(),
        messages: run.messages.clone(),
        message_count: run.message_count,
        input_error: run.input_error.clone(),
    }
}

#[test]
fn the_vm_percpu_trace_replays_its_vmap_areas_as_linux_counted_them() {
    // Count from the text, independently of the crate's parser and engine.
    let xz = std::fs::read(VM_PERCPU).expect("the bundled vm-percpu trace");
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .unwrap();
    let mut per_type: HashMap<&str, u64> = HashMap::new();
    let mut live = HashSet::new();
    let (mut unmatched, mut purges_with_work, mut nr_lazy_max) = (0, 0, HashSet::new());
    for line in text.lines() {
        let ev = line
            .split_whitespace()
            .nth(4)
            .unwrap()
            .trim_end_matches(':');
        *per_type.entry(ev).or_default() += 1;
        match ev {
            "vmalloc:alloc_vmap_area" => {
                let va = line.split("va_start: ").nth(1).unwrap();
                assert_eq!(field(line, "failed"), Some("0"));
                assert_eq!(
                    field(line, "size"),
                    Some("20480"),
                    "a 16 KiB stack and its guard page"
                );
                assert_eq!(field(line, "align"), Some("16384"));
                live.insert(va.split(' ').next().unwrap().parse::<u64>().unwrap());
            }
            "vmalloc:free_vmap_area_noflush" => {
                let va = field(line, "va_start").unwrap().trim_start_matches("0x");
                if !live.remove(&u64::from_str_radix(va, 16).unwrap()) {
                    unmatched += 1;
                }
                nr_lazy_max.insert(field(line, "nr_lazy_max").unwrap());
            }
            "vmalloc:purge_vmap_area_lazy" => {
                purges_with_work += (field(line, "num_purged") != Some("0")) as u64;
            }
            _ => {}
        }
    }
    assert_eq!(per_type["vmalloc:alloc_vmap_area"], 3410);
    assert_eq!(per_type["vmalloc:free_vmap_area_noflush"], 3405);
    assert_eq!(per_type["vmalloc:purge_vmap_area_lazy"], 3);
    assert_eq!(per_type["percpu:percpu_alloc_percpu"], 22083);
    assert_eq!((unmatched, purges_with_work), (5, 2));
    assert_eq!(nr_lazy_max, HashSet::from(["16384"]));

    let mut inp = TraceInput::open(VM_PERCPU).unwrap();
    let machine = Machine::for_trace(&mut inp, None, 24 << 30).unwrap();
    assert_eq!(machine.cpus, 2, "the trace was recorded on 2 CPUs");
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let run = replay_kmem(&k, &mut inp, &mut ReplayOptions::default());
    let o = &run.outcome;
    assert_eq!(run.input_error, None);
    assert_eq!(o.events, 50_730);
    assert_eq!((o.malformed_lines, o.unknown_events), (0, 0));
    assert_eq!(o.failures(), 0, "{:?} {:?}", o.failed, run.messages);
    for k in EventKind::ALL {
        assert_eq!(
            o.stats(k).events,
            per_type.get(k.name()).copied().unwrap_or(0),
            "{k}"
        );
    }
    let alloc = o.stats(EventKind::VmapAlloc);
    assert_eq!((alloc.replayed, alloc.skipped), (3410, 0));
    let free = o.stats(EventKind::VmapFree);
    assert_eq!((free.replayed, free.unmatched_frees), (3400, unmatched));
    let purge = o.stats(EventKind::VmapPurge);
    assert_eq!((purge.replayed, purge.skipped), (2, 1));
    // percpu: replayed beside (tests/percpu.rs has the rest).
    let pcpu = o.stats(EventKind::PercpuAlloc);
    assert_eq!((pcpu.replayed, pcpu.skipped), (22083, 0));

    let v = &o.vmalloc;
    assert!(v.mismatches.is_empty(), "{:?}", v.mismatches);
    assert_eq!((v.aligned.compared, v.aligned.matched), (3410, 3410));
    // lazy_max_pages() on 2 CPUs is Linux's, on every free.
    assert_eq!(v.lazy_max_pages, 16384);
    assert_eq!(
        (v.nr_lazy_max.compared, v.nr_lazy_max.matched),
        (3405, 3405)
    );
    // Every replayed free raised Linux's nr_lazy by kmem's 5 pages, the
    // eleven pairs of frees the two CPUs' kworkers traced out of order
    // included; the first has nothing below it to rise from.
    assert_eq!(
        (v.nr_lazy_rise.compared, v.nr_lazy_rise.matched),
        (3399, 3399)
    );
    assert_eq!(v.nr_lazy_not_compared, 1);
    // Linux had 16290 pages lazily freed before the trace began (its
    // first free shows 16295), and the 5 unmatched frees' 25.
    assert_eq!(v.unseen_lazy_pages, 16290 + 25);
    assert_eq!((v.purges, v.empty_purges), (2, 1));
    // The second purge's 3279 areas are kmem's 3274 and the 5 unmatched
    // ones; the first's epoch began before the trace.
    assert_eq!((v.num_purged.compared, v.num_purged.matched), (1, 1));
    assert_eq!(v.num_purged_not_compared, 1);
    // kmem, with the pages it never held, was due before both purges; on
    // its own count it never was (25 pages short of Linux's in the second
    // epoch).
    assert_eq!((v.purges_due.compared, v.purges_due.matched), (2, 2));
    assert_eq!(v.purges_due_on_own_count, 0);
    assert_eq!(v.kmem_only_purges, 0);

    // kmem's own counters agree: the purges took 19 areas (the first
    // epoch's in the trace) and 3274; the last epoch's 107 wait. kmem's
    // per-CPU allocator took one area more, for the chunk the replayed
    // per-CPU allocations needed beside the first (never freed).
    let pcpu = o.percpu.kmem_at_end.unwrap();
    assert_eq!((pcpu.chunks, pcpu.max_chunks), (2, 2));
    let (allocs, failures, lazy_frees, purges, purged) = k.vmap_area_stats();
    assert_eq!((allocs, failures, lazy_frees), (3410 + 1, 0, 3400));
    assert_eq!((purges, purged), (2, 19 + 3274));
    assert_eq!(k.vmap_lazy_nr(), 107 * 5);

    let report = Report::new("vm-percpu", machine, &k, clone_run(&run), None);
    let mut out = String::new();
    report.write_text(&mut out).unwrap();
    for want in [
        "  alloc_vmap_area: 3410 replayed, 0 failed on kmem, 0 failed in Linux (failed=1, not replayed)",
        "  free_vmap_area_noflush: 3400 replayed, 5 unmatched (allocated before the trace began), 0 failed on kmem",
        "  purge_vmap_area_lazy: 2 that purged, replayed; 1 of nothing (num_purged=0), not replayed",
        "  nr_lazy_max equals lazy_max_pages() (16384):    3405/3405 = 100.00%",
        "  nr_lazy rises by kmem's pages for the area:     3399/3399 = 100.00% (1 not compared: no lower nr_lazy before)",
        "  Linux's purges kmem found due:                  2/2 = 100.00% (0 on kmem's count alone)",
        "  purges kmem would make that Linux did not:      0",
        "the 16315 pages Linux freed lazily that kmem never",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    assert!(
        out.contains(
            "percpu:percpu_alloc_percpu           22083     22083         0          0         0\n"
        ),
        "{out}"
    );
    let j: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(j["by_type"]["vmalloc:purge_vmap_area_lazy"], 3);
    assert_eq!(j["vmalloc"]["nr_lazy_rise"]["matched"], 3399);
    assert_eq!(j["vmalloc"]["num_purged"]["compared"], 1);
}

/// Addresses of the hand-written traces (`va_start: ` prints decimal).
const A1: u64 = 0xffffc90000200000;
const A2: u64 = 0xffffc90001300000;
const A3: u64 = 0xffffc90002400000;
const A4: u64 = 0xffffc90003500000;
const RANGE: &str = "vstart=0xffffc90000000000 vend=0xffffe8ffffffffff";

fn alloc(cpu: u32, va: u64, size: u64, align: u64) -> String {
    format!(
        "bash 1 [{cpu:03}] 1.0: vmalloc:alloc_vmap_area: va_start: {va} size={size} align={align} {RANGE} failed=0\n"
    )
}

fn free(cpu: u32, va: u64, nr_lazy: u64, max: u64) -> String {
    format!(
        "kworker/0:1 2 [{cpu:03}] 1.0: vmalloc:free_vmap_area_noflush: va_start={va:#x} nr_lazy={nr_lazy} nr_lazy_max={max}\n"
    )
}

fn purge(num: u64) -> String {
    if num == 0 {
        "kworker/0:1 2 [000] 1.0: vmalloc:purge_vmap_area_lazy: start=0xffffffffffffffff end=0x0 num_purged=0\n".into()
    } else {
        format!("kworker/0:1 2 [000] 1.0: vmalloc:purge_vmap_area_lazy: start=0xffffc90000200000 end=0xffffc90004000000 num_purged={num}\n")
    }
}

#[test]
fn a_hand_written_trace_counts_failed_tries_empty_purges_and_malformed_lines() {
    // One CPU: lazy_max_pages() is 8192. Areas of 16 MiB and a guard page
    // (4097 pages).
    const BIG: u64 = (16 << 20) + 4096;
    let text = [
        alloc(0, A1, BIG, 4096),
        alloc(0, A2, BIG, 4096),
        // A failed try: Linux purges and tries again (the next line).
        format!("bash 1 [000] 1.0: vmalloc:alloc_vmap_area: va_start: 18446744073709551582 size=20480 align=16384 {RANGE} failed=1\n"),
        alloc(0, A3, 20480, 16384),
        // Freed before the trace began: unmatched; Linux had 100 pages lazy.
        free(0, 0xffffc90000100000, 100, 8192),
        free(0, A1, 4197, 8192),
        free(0, A2, 8294, 8192), // past 8192: the drain work is scheduled
        purge(3),
        purge(0),
        free(0, A3, 5, 8192),
        // Malformed: the purge without its count, an alloc without va_start.
        "kworker/0:1 2 [000] 1.0: vmalloc:purge_vmap_area_lazy: start=0x1 end=0x2\n".into(),
        format!("bash 1 [000] 1.0: vmalloc:alloc_vmap_area: size=8192 align=4096 {RANGE} failed=0\n"),
        alloc(0, A4, 8192, 4096),
        // Linux reused A4 without a traced free: kmem frees it at once.
        alloc(0, A4, 8192, 4096),
        free(0, A4, 7, 8192),
        // A purge Linux made with little lazily freed (vm_unmap_aliases,
        // say): kmem had not found one due.
        purge(2),
    ]
    .concat();
    let (run, out) = replay(&text, 1);
    let o = &run.outcome;
    assert_eq!(o.malformed_lines, 2);
    assert_eq!(
        o.errors,
        [
            "line 11: missing field `num_purged=`: `kworker/0:1 2 [000] 1.0: vmalloc:purge_vmap_area_lazy: start=0x1 end=0x2`",
            "line 12: missing field `va_start:`: `bash 1 [000] 1.0: vmalloc:alloc_vmap_area: size=8192 align=4096 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0`",
        ]
    );
    assert_eq!(o.failures(), 0, "{:?}", o.failed);
    let a = o.stats(EventKind::VmapAlloc);
    assert_eq!((a.events, a.replayed, a.skipped), (6, 5, 1));
    assert_eq!(o.notes.linux_failed_allocs, 1);
    assert_eq!(o.notes.implicit_frees, 1);
    let f = o.stats(EventKind::VmapFree);
    assert_eq!((f.events, f.replayed, f.unmatched_frees), (5, 4, 1));
    let p = o.stats(EventKind::VmapPurge);
    assert_eq!((p.events, p.replayed, p.skipped), (3, 2, 1));
    let v = &o.vmalloc;
    assert_eq!(v.linux_failed_allocs, 1);
    assert_eq!(v.lazy_max_pages, 8192);
    assert_eq!((v.nr_lazy_max.compared, v.nr_lazy_max.matched), (5, 5));
    // A1 and A2 rose by 4097, A3 by 5 from the purge's 0, A4 by 2.
    assert_eq!((v.nr_lazy_rise.compared, v.nr_lazy_rise.matched), (4, 4));
    assert_eq!(v.nr_lazy_not_compared, 0);
    assert_eq!(v.unseen_lazy_pages, 100);
    assert_eq!((v.purges, v.empty_purges), (2, 1));
    // The first purge's epoch began before the trace; the second's two
    // areas are kmem's two.
    assert_eq!((v.num_purged.compared, v.num_purged.matched), (1, 1));
    assert_eq!(v.num_purged_not_compared, 1);
    // Due before the first purge (on kmem's count alone too: 8194 pages),
    // not before the second.
    assert_eq!((v.purges_due.compared, v.purges_due.matched), (2, 1));
    assert_eq!(v.purges_due_on_own_count, 1);
    assert_eq!(v.kmem_only_purges, 0);
    assert_eq!(
        v.mismatches,
        ["line 16: purge_vmap_area_lazy: Linux purged 2 areas, but kmem had not found a purge due \
          (vmap_lazy_nr with the pages it never held: 7 of lazy_max_pages 8192)"]
    );
    assert!(out.contains("  Linux's purges kmem found due:                  1/2 = 50.00% (1 on kmem's count alone)"), "{out}");
    assert!(out.contains("  first disagreements with Linux:\n    line 16: purge_vmap_area_lazy: Linux purged 2 areas"), "{out}");
}

#[test]
fn without_purge_events_kmem_counts_the_purge_it_would_make() {
    // Recorded without vmalloc:purge_vmap_area_lazy: Linux purged after
    // the second free (its count drops), kmem does not, and would have.
    const BIG: u64 = (16 << 20) + 4096;
    let mut text = String::new();
    for (va, nr_lazy) in [(A1, 4097), (A2, 8194), (A3, 4097)] {
        text += &alloc(0, va, BIG, 4096);
        text += &free(0, va, nr_lazy, 8192);
    }
    let (run, out) = replay(&text, 1);
    let v = &run.outcome.vmalloc;
    assert_eq!(v.kmem_only_purges, 1);
    assert_eq!(v.purges_due.compared, 0);
    // After the drop nothing lower is seen: not compared, not a mismatch.
    assert_eq!((v.nr_lazy_rise.compared, v.nr_lazy_rise.matched), (1, 1));
    assert_eq!(v.nr_lazy_not_compared, 2);
    assert_eq!(v.mismatches.len(), 1);
    assert!(
        v.mismatches[0].starts_with("line 4: free_vmap_area_noflush: kmem would purge here"),
        "{:?}",
        v.mismatches
    );
    assert!(out.contains("purges kmem would make that Linux did not:      1 (the trace has no vmalloc:purge_vmap_area_lazy event: record it, see docs/replay.md)"), "{out}");
}

/// KmemTarget, recording the CPU and task each vmap call ran as.
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
    fn has_vmap_areas(&self) -> bool {
        self.inner.has_vmap_areas()
    }
    fn alloc_vmap_area(&mut self, size: usize, align: usize) -> Result<usize, kmem::Error> {
        self.note("alloc");
        self.inner.alloc_vmap_area(size, align)
    }
    fn free_vmap_area_noflush(
        &mut self,
        addr: usize,
    ) -> Result<kmem::vmalloc::LazyFree, kmem::Error> {
        self.note("free");
        self.inner.free_vmap_area_noflush(addr)
    }
    fn purge_vmap_area_lazy(&mut self) -> kmem::vmalloc::PurgeEvent {
        self.note("purge");
        self.inner.purge_vmap_area_lazy()
    }
    fn vmap_lazy_nr(&self) -> usize {
        self.inner.vmap_lazy_nr()
    }
    fn lazy_max_pages(&self) -> usize {
        self.inner.lazy_max_pages()
    }
}

#[test]
fn vmalloc_events_run_as_their_cpu_and_task() {
    let text = [alloc(1, A1, 20480, 16384), free(0, A1, 5, 16384), purge(1)].concat();
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
    assert_eq!(o.failures(), 0);
    assert_eq!(t.calls, [("alloc", 1, 1), ("free", 0, 2), ("purge", 0, 2)]);
    assert_eq!(o.cpu_events, [2, 1]);
    drop(t);
    sim.on_cpu(0, || ());
    sim.on_cpu(1, || ());
}

#[test]
fn absurd_sizes_alignments_and_counts_are_failures_and_mismatches_not_panics() {
    let text = [
        alloc(0, A1, 8192, 1 << 63),
        alloc(0, A2, u64::MAX - 4095, 4096),
        alloc(0, A3, 0, 0),
        alloc(0, A4, 4097, 3),
        free(0, 0x1000, u64::MAX, 0),
        free(0, 0x2000, u64::MAX, 0),
        purge(u64::MAX),
        alloc(0, A1, 8192, 4096), // A1's failed allocation is gone with it
        free(0, A1, u64::MAX, 0),
        purge(1),
    ]
    .concat();
    let (run, out) = replay(&text, 1);
    let o = &run.outcome;
    let a = o.stats(EventKind::VmapAlloc);
    assert_eq!((a.replayed, a.failures), (1, 4));
    assert_eq!(
        o.failed[..4],
        [
            "line 1: vmalloc:alloc_vmap_area of 8192 B aligned to 9223372036854775808: in use (EBUSY)",
            "line 2: vmalloc:alloc_vmap_area of 18446744073709547520 B aligned to 4096: in use (EBUSY)",
            "line 3: vmalloc:alloc_vmap_area of 0 B aligned to 0: invalid argument (EINVAL)",
            "line 4: vmalloc:alloc_vmap_area of 4097 B aligned to 3: invalid argument (EINVAL)",
        ]
    );
    assert_eq!(o.notes.implicit_frees, 1);
    let v = &o.vmalloc;
    assert_eq!((v.nr_lazy_max.compared, v.nr_lazy_max.matched), (3, 0));
    assert_eq!((v.nr_lazy_rise.compared, v.nr_lazy_rise.matched), (1, 0));
    assert_eq!(v.unseen_lazy_pages, u64::MAX);
    assert!(
        out.contains("  area aligned as traced:                         1/1 = 100.00%"),
        "{out}"
    );
}
