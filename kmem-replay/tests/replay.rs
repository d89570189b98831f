//! Replaying traces on a simulated kmem machine: a slice of the bundled
//! real trace with its counts worked out here from the text, malformed and
//! unknown lines, unmatched and implicit frees, kmalloc_large folding, the
//! JSON report, and the whole bundled trace.

use kmem::gfp::Gfp;
use kmem::Platform;
use kmem_replay::engine::is_linux_slab_page;
use kmem_replay::parse::EventKind;
use kmem_replay::target::{CacheSpec, MemSample};
use kmem_replay::{
    replay_kmem, Engine, KmemRun, KmemTarget, Machine, ReplayOptions, Report, Target, TraceInput,
};
use std::collections::{HashMap, HashSet};
use std::io::Read;

const BUNDLED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../kmem-cli/traces/fs-build.trace.xz"
);

/// The bundled trace, decompressed here (not through the crate).
fn bundled_text() -> String {
    let xz = std::fs::read(BUNDLED).expect("the bundled trace");
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .expect("xz");
    text
}

fn input(text: &str) -> TraceInput {
    let bytes = text.as_bytes().to_vec();
    let len = bytes.len() as u64;
    TraceInput::from_reader("test.trace", std::io::Cursor::new(bytes), Some(len)).unwrap()
}

/// Replay `text` on a fresh machine of `cpus` CPUs; also returns the
/// report (which reads the machine's /proc files).
fn replay(text: &str, cpus: usize, mem: u64) -> (KmemRun, Report) {
    let mut inp = input(text);
    let machine = Machine { cpus, mem };
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let run = replay_kmem(&k, &mut inp, &mut ReplayOptions::default());
    let report = Report::new(
        "test",
        machine,
        &k,
        KmemRun {
            outcome: run.outcome.clone(),
            messages: run.messages.clone(),
            message_count: run.message_count,
            input_error: run.input_error.clone(),
        },
        None,
    );
    (run, report)
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

#[test]
fn a_slice_of_the_real_trace_replays_with_the_counts_of_its_text() {
    let text = bundled_text();
    let slice: String = text
        .lines()
        .take(30_000)
        .map(|l| format!("{l}\n"))
        .collect();

    // Count from the text, independently of the crate's parser and engine.
    let mut per_type: HashMap<&str, u64> = HashMap::new();
    let mut nil_kfrees = 0;
    let mut live_objs = HashSet::new();
    let mut unmatched_obj_frees = [0u64; 2]; // kfree, kmem_cache_free
    let mut live_pfns = HashSet::new();
    let mut slab_pfns = HashSet::new();
    let mut freed_pfns = HashSet::new();
    let mut unmatched_page_frees = 0;
    let mut page_allocs_replayed = 0;
    for line in slice.lines() {
        let ev = line
            .split_whitespace()
            .nth(4)
            .unwrap()
            .trim_end_matches(':');
        *per_type.entry(ev).or_default() += 1;
        match ev {
            "kmem:kmalloc" | "kmem:kmem_cache_alloc" => {
                live_objs.insert(field(line, "ptr").unwrap());
            }
            "kmem:kfree" | "kmem:kmem_cache_free" => {
                let ptr = field(line, "ptr").unwrap();
                if ptr == "(nil)" {
                    nil_kfrees += 1;
                } else if !live_objs.remove(ptr) {
                    unmatched_obj_frees[(ev == "kmem:kmem_cache_free") as usize] += 1;
                }
            }
            "kmem:mm_page_alloc" => {
                let pfn = field(line, "pfn").unwrap();
                let gfp = field(line, "gfp_flags").unwrap();
                freed_pfns.remove(pfn);
                // Linux's slab pages: what allocate_slab() adds, not movable.
                let slab = ["__GFP_COMP", "__GFP_NORETRY"]
                    .iter()
                    .all(|f| gfp.contains(f))
                    && (gfp.contains("__GFP_NOWARN") || gfp.contains("GFP_NOWAIT"))
                    && !gfp.contains("MOVABLE")
                    && !gfp.contains("HIGHMEM");
                if slab {
                    slab_pfns.insert(pfn);
                } else {
                    live_pfns.insert(pfn);
                    page_allocs_replayed += 1;
                }
            }
            "kmem:mm_page_free" => {
                let pfn = field(line, "pfn").unwrap();
                if !live_pfns.remove(pfn) && !slab_pfns.remove(pfn) {
                    unmatched_page_frees += 1;
                }
                freed_pfns.insert(pfn);
            }
            "kmem:mm_page_free_batched" => {
                let pfn = field(line, "pfn").unwrap();
                assert!(
                    freed_pfns.contains(pfn),
                    "every batched free repeats a free"
                );
            }
            _ => {}
        }
    }

    let (run, report) = replay(&slice, 2, 24 << 30);
    let o = &run.outcome;
    assert_eq!(o.lines, 30_000);
    assert_eq!(o.events, 30_000);
    assert_eq!(o.malformed_lines, 0);
    for k in EventKind::ALL {
        let want = per_type.get(k.name()).copied().unwrap_or(0);
        assert_eq!(o.stats(k).events, want, "{k}");
        assert_eq!(report.by_type[k.name()], want, "{k}");
    }
    assert_eq!(o.notes.kfree_null, nil_kfrees);
    assert_eq!(
        o.stats(EventKind::Kfree).unmatched_frees,
        unmatched_obj_frees[0]
    );
    assert_eq!(
        o.stats(EventKind::KmemCacheFree).unmatched_frees,
        unmatched_obj_frees[1]
    );
    assert_eq!(
        o.stats(EventKind::PageFree).unmatched_frees,
        unmatched_page_frees
    );
    assert_eq!(o.stats(EventKind::PageAlloc).replayed, page_allocs_replayed);
    assert_eq!(
        o.notes.batched_free_repeats,
        per_type
            .get("kmem:mm_page_free_batched")
            .copied()
            .unwrap_or(0)
    );
    // Every allocation replayed, at Linux's sizes.
    assert_eq!(o.failures(), 0);
    assert_eq!(
        o.stats(EventKind::Kmalloc).replayed,
        per_type["kmem:kmalloc"]
    );
    assert_eq!(
        o.stats(EventKind::KmemCacheAlloc).replayed,
        per_type["kmem:kmem_cache_alloc"]
    );
    assert_eq!(o.kmalloc_fidelity.ratio(), Some(1.0));
    assert_eq!(o.kmem_cache_fidelity.ratio(), Some(1.0));
    assert!(o.peak_footprint_bytes > 0 && o.peak_live_bytes > 0);
    assert!(report.fragmentation >= 1.0, "{}", report.fragmentation);
    // The final /proc files are the machine's.
    assert!(report.proc.slabinfo.contains("maple_node"));
    assert!(report.proc.meminfo.starts_with("MemTotal:"));
    assert!(report.proc.buddyinfo.contains("zone   Normal"));
}

#[test]
fn the_slab_page_rule_agrees_with_where_linux_slab_objects_lie() {
    // Ground truth: a page allocated in the trace is Linux's slab's if a
    // kmalloc or kmem_cache object (direct-map address
    // 0xffff888000000000 + pfn * 4096 on this unrandomised x86_64) lies in
    // it while it is allocated.
    const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
    let text = bundled_text();
    let mut allocs: Vec<(bool, bool)> = Vec::new(); // (rule says slab, holds objects)
    let mut live: HashMap<u64, usize> = HashMap::new();
    for line in text.lines() {
        let ev = line.split_whitespace().nth(4).unwrap();
        let pfn = || {
            u64::from_str_radix(field(line, "pfn").unwrap().trim_start_matches("0x"), 16).unwrap()
        };
        match ev {
            "kmem:mm_page_alloc:" => {
                let order: u32 = field(line, "order").unwrap().parse().unwrap();
                let gfp = field(line, "gfp_flags").unwrap().parse().unwrap();
                allocs.push((is_linux_slab_page(gfp), false));
                for i in 0..1u64 << order {
                    live.insert(pfn() + i, allocs.len() - 1);
                }
            }
            "kmem:mm_page_free:" => {
                let order: u32 = field(line, "order").unwrap().parse().unwrap();
                for i in 0..1u64 << order {
                    live.remove(&(pfn() + i));
                }
            }
            "kmem:kmalloc:" | "kmem:kmem_cache_alloc:" => {
                let ptr = field(line, "ptr").unwrap().trim_start_matches("0x");
                if let Ok(p) = u64::from_str_radix(ptr, 16) {
                    if let Some(&i) = live.get(&((p - PAGE_OFFSET) >> 12)) {
                        allocs[i].1 = true;
                    }
                }
            }
            _ => {}
        }
    }
    let slab_by_rule = allocs.iter().filter(|a| a.0).count();
    let rule_but_no_objects = allocs.iter().filter(|a| a.0 && !a.1).count();
    let objects_but_not_rule = allocs.iter().filter(|a| !a.0 && a.1).count();
    assert!(slab_by_rule > 500, "{slab_by_rule}");
    // Every page the rule calls slab holds slab objects ...
    assert_eq!(rule_but_no_objects, 0);
    // ... and nearly every page holding slab objects is caught (a page
    // freed where perf could not see it and reused by the slab escapes:
    // one GFP_NOWAIT page in the bundled trace).
    assert!(
        objects_but_not_rule * 100 <= slab_by_rule,
        "{objects_but_not_rule}"
    );
}

const GOOD: &str = "\
            bash 100 [000]  10.000001:                   kmem:kmalloc: call_site=f+0x1 ptr=0xffff888100001000 bytes_req=100 bytes_alloc=128 gfp_flags=GFP_KERNEL node=-1 accounted=false
";

#[test]
fn malformed_lines_are_reported_with_their_number_and_text_and_the_replay_goes_on() {
    let text = format!(
        "{GOOD}\
this is not a perf line
            bash 100 [000]  10.000002:                   kmem:kmalloc: call_site=f+0x1 ptr=0xffff888100002000 bytes_req=100 gfp_flags=GFP_KERNEL
            bash 100 [000]  10.000003:                   kmem:kmalloc: call_site=f+0x1 ptr=0xffff888100003000 bytes_req=8 bytes_alloc=8 gfp_flags=GFP_BOGUS node=-1 accounted=false
            bash 100 [5000] 10.000004:                     kmem:kfree: call_site=f+0x1 ptr=0xffff888100001000

            bash 100 [000]  10.000005:             sched:sched_switch: prev_comm=bash prev_pid=100
            bash 100 [001]  10.000006:                     kmem:kfree: call_site=f+0x1 ptr=0xffff888100001000
"
    );
    let (run, report) = replay(&text, 2, 64 << 20);
    let o = &run.outcome;
    assert_eq!(o.lines, 8);
    assert_eq!(o.malformed_lines, 4);
    assert_eq!(o.errors.len(), 4);
    assert!(
        o.errors[0].starts_with("line 2: expected `COMM TID [CPU]"),
        "{}",
        o.errors[0]
    );
    assert!(
        o.errors[0].ends_with("`this is not a perf line`"),
        "{}",
        o.errors[0]
    );
    assert!(
        o.errors[1].starts_with("line 3: missing field `bytes_alloc=`"),
        "{}",
        o.errors[1]
    );
    assert!(
        o.errors[2].starts_with("line 4: bad gfp_flags `GFP_BOGUS`"),
        "{}",
        o.errors[2]
    );
    assert!(
        o.errors[3].starts_with("line 5: CPU 5000 is beyond the 1024 CPUs kmem can simulate (NR_CPUS; --cpus takes 1 to 1024)"),
        "{}",
        o.errors[3]
    );
    // The unknown event is counted, not fatal; the good lines replayed.
    assert_eq!(o.unknown_events, 1);
    assert_eq!(o.unknown_names["sched:sched_switch"], 1);
    assert_eq!(o.stats(EventKind::Kmalloc).replayed, 1);
    assert_eq!(o.stats(EventKind::Kfree).replayed, 1);
    assert_eq!(o.live_bytes, 0);
    // The report says so.
    let mut s = String::new();
    report.write_text(&mut s).unwrap();
    assert!(
        s.contains("malformed lines: 4; unknown events: 1 (sched:sched_switch: 1)"),
        "{s}"
    );
    assert!(s.contains("line 5: CPU 5000 is beyond the 1024 CPUs kmem can simulate"));
}

#[test]
fn only_the_first_errors_are_kept_but_all_are_counted() {
    let text = "garbage\n".repeat(50);
    let (run, _) = replay(&text, 1, 64 << 20);
    assert_eq!(run.outcome.malformed_lines, 50);
    assert_eq!(
        run.outcome.errors.len(),
        ReplayOptions::default().max_errors
    );
    assert!(run.outcome.errors[9].starts_with("line 10: "));
}

#[test]
fn unmatched_implicit_and_null_frees() {
    let text = "\
a 1 [000] 1.000001: kmem:kfree: call_site=f ptr=0xffff888100000040
a 1 [000] 1.000002: kmem:kmem_cache_free: call_site=f ptr=0xffff888100000080 name=dentry
a 1 [000] 1.000003: kmem:mm_page_free: page=0x1234 pfn=0x1234 order=0
a 1 [000] 1.000004: kmem:mm_page_free_batched: page=0x1235 pfn=0x1235 order=0
a 1 [000] 1.000005: kmem:kfree: call_site=f ptr=(nil)
a 1 [000] 1.000006: kmem:kmem_cache_alloc: call_site=f ptr=0xffff888100000100 name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true
a 1 [000] 1.000007: kmem:kmem_cache_alloc: call_site=f ptr=0xffff888100000100 name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true
a 1 [000] 1.000008: kmem:mm_page_alloc: page=0x2000 pfn=0x2000 order=1 migratetype=0 gfp_flags=GFP_KERNEL
a 1 [000] 1.000009: kmem:mm_page_alloc: page=0x2000 pfn=0x2000 order=0 migratetype=0 gfp_flags=GFP_KERNEL
a 1 [000] 1.000010: kmem:mm_page_free: page=0x2000 pfn=0x2000 order=0
a 1 [000] 1.000011: kmem:mm_page_free_batched: page=0x2000 pfn=0x2000 order=0
a 1 [000] 1.000012: kmem:kmem_cache_free: call_site=f ptr=0xffff888100000100 name=dentry
a 1 [000] 1.000013: kmem:mm_page_alloc: page=0x3000 pfn=0x3000 order=0 migratetype=0 gfp_flags=GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP
a 1 [000] 1.000014: kmem:mm_page_free: page=0x3000 pfn=0x3000 order=0
";
    let (run, report) = replay(text, 1, 64 << 20);
    let o = &run.outcome;
    assert_eq!(o.malformed_lines, 0, "{:?}", o.errors);
    assert_eq!(o.stats(EventKind::Kfree).unmatched_frees, 1);
    assert_eq!(o.stats(EventKind::KmemCacheFree).unmatched_frees, 1);
    assert_eq!(o.stats(EventKind::PageFree).unmatched_frees, 1);
    assert_eq!(o.stats(EventKind::PageFreeBatched).unmatched_frees, 1);
    assert_eq!(report.unmatched_frees, 4);
    assert_eq!(o.notes.kfree_null, 1);
    // The dentry at 0x...100 was allocated twice: Linux freed the first
    // unseen; so was the order-1 block at pfn 0x2000.
    assert_eq!(o.notes.implicit_frees, 2);
    assert_eq!(o.stats(EventKind::KmemCacheFree).replayed, 1);
    assert_eq!(o.stats(EventKind::PageFree).replayed, 1);
    assert_eq!(o.notes.batched_free_repeats, 1);
    // The slab page is left to kmem's slab, and so is its free.
    assert_eq!(o.notes.slab_page_allocs_left_to_slab, 1);
    assert_eq!(o.notes.slab_page_frees_left_to_slab, 1);
    assert_eq!(o.stats(EventKind::PageAlloc).replayed, 2);
    assert_eq!(o.failures(), 0);
    assert_eq!(o.live_bytes, 0);
    assert_eq!(o.live_objects, 0);
    // One cache, with SLAB_ACCOUNT inferred (accounted without __GFP_ACCOUNT).
    assert_eq!(o.caches.len(), 1);
    assert!(
        o.caches[0].flags.contains("ACCOUNT"),
        "{}",
        o.caches[0].flags
    );
}

#[test]
fn a_kmalloc_large_takes_over_the_page_allocation_linux_reported_for_it() {
    let text = "\
a 1 [000] 1.000001: kmem:mm_page_alloc: page=0x5000 pfn=0x5000 order=2 migratetype=0 gfp_flags=GFP_KERNEL|__GFP_COMP
a 1 [000] 1.000002: kmem:kmalloc: call_site=f ptr=0xffff888105000000 bytes_req=12000 bytes_alloc=16384 gfp_flags=GFP_KERNEL|__GFP_COMP node=-1 accounted=false
";
    let mut inp = input(text);
    let machine = Machine {
        cpus: 1,
        mem: 64 << 20,
    };
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let run = replay_kmem(&k, &mut inp, &mut ReplayOptions::default());
    let o = &run.outcome;
    assert_eq!(o.notes.page_allocs_folded_into_kmalloc, 1);
    assert_eq!(o.stats(EventKind::PageAlloc).replayed, 0);
    assert_eq!(o.stats(EventKind::PageAlloc).skipped, 1);
    assert_eq!(o.kmalloc_fidelity.matched, 1);
    // Only kmalloc's own pages are held: 4, not 8.
    assert_eq!(k.kmalloc_large_pages(), 4);
    assert_eq!(o.live_bytes, 12000);
    assert_eq!(o.series.last().unwrap().page_bytes, 0);

    // The same kmalloc after a page allocation of another thread is not
    // folded.
    let text = "\
a 1 [000] 1.000001: kmem:mm_page_alloc: page=0x5000 pfn=0x5000 order=2 migratetype=0 gfp_flags=GFP_KERNEL|__GFP_COMP
b 2 [000] 1.000002: kmem:kmalloc: call_site=f ptr=0xffff888105000000 bytes_req=12000 bytes_alloc=16384 gfp_flags=GFP_KERNEL|__GFP_COMP node=-1 accounted=false
";
    let (run, _) = replay(text, 1, 64 << 20);
    assert_eq!(run.outcome.notes.page_allocs_folded_into_kmalloc, 0);
    assert_eq!(run.outcome.stats(EventKind::PageAlloc).replayed, 1);
}

#[test]
fn the_json_report_has_the_issue_keys() {
    let text = format!(
        "{GOOD}            bash 100 [001]  10.000004:                     kmem:kfree: call_site=f+0x1 ptr=0xffff888100001000\n"
    );
    let (_, report) = replay(&text, 2, 64 << 20);
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    for key in [
        "events",
        "events_per_sec",
        "by_type",
        "unmatched_frees",
        "failures",
        "kmalloc_fidelity",
        "peak_footprint_bytes",
        "peak_live_bytes",
        "fragmentation",
    ] {
        assert!(v.get(key).is_some(), "missing key {key}");
    }
    assert_eq!(v["events"], 2);
    assert_eq!(v["by_type"]["kmem:kmalloc"], 1);
    assert_eq!(v["by_type"]["kmem:kfree"], 1);
    assert_eq!(v["by_type"]["percpu:percpu_alloc_percpu"], 0);
    assert_eq!(v["unmatched_frees"], 0);
    assert_eq!(v["failures"], 0);
    assert_eq!(v["kmalloc_fidelity"], 1.0);
    assert!(v["events_per_sec"].as_f64().unwrap() > 0.0);
    // The machine's boot is reported beside the replay, not inside its time.
    assert!(v["machine"]["boot_sec"].as_f64().unwrap() > 0.0);
    let mut out = String::new();
    report.write_text(&mut out).unwrap();
    assert!(
        out.lines()
            .next()
            .unwrap()
            .ends_with("ms, not counted below)"),
        "{out}"
    );
    assert_eq!(v["peak_live_bytes"], 100);
    let frag = v["fragmentation"].as_f64().unwrap();
    assert!(frag >= 1.0, "{frag}");
    // Every kind of the input format is replayed now.
    assert_eq!(v["not_replayed"], serde_json::json!([]));
    assert!(v["proc"]["slabinfo"]
        .as_str()
        .unwrap()
        .starts_with("slabinfo - version: 2.1"));
}

/// KmemTarget, recording on which CPU each call ran.
struct Recording<'k, 's> {
    inner: KmemTarget<'k, 's>,
    sim: &'s kmem_sim::SimPlatform,
    switches: Vec<usize>,
    calls: Vec<(&'static str, usize, usize)>,
}

impl Target for Recording<'_, '_> {
    fn set_cpu(&mut self, cpu: usize) {
        self.switches.push(cpu);
        self.inner.set_cpu(cpu)
    }
    fn kmalloc(&mut self, size: usize, gfp: Gfp, node: i32) -> Result<(usize, usize), kmem::Error> {
        let r = self.inner.kmalloc(size, gfp, node)?;
        self.calls
            .push(("kmalloc", self.sim.smp_processor_id(), r.0));
        Ok(r)
    }
    fn kfree(&mut self, handle: usize, size: usize) -> Result<(), kmem::Error> {
        self.calls
            .push(("kfree", self.sim.smp_processor_id(), handle));
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
}

#[test]
fn every_event_runs_as_its_cpu_and_the_cpu_switches_only_when_it_changes() {
    // CPU 0 allocates; CPU 1 frees it (a remote free, into CPU 1's free
    // sheaf) and allocates twice: neither gets that object back, since a
    // nearly empty free sheaf is not taken (no passive false sharing);
    // CPU 0 frees CPU 1's first.
    let text = "\
a 1 [000] 1.000001: kmem:kmalloc: call_site=f ptr=0xffff888100001000 bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1 accounted=false
b 2 [001] 1.000002: kmem:kfree: call_site=f ptr=0xffff888100001000
b 2 [001] 1.000003: kmem:kmalloc: call_site=f ptr=0xffff888100002000 bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1 accounted=false
b 2 [001] 1.000004: kmem:kmalloc: call_site=f ptr=0xffff888100003000 bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1 accounted=false
a 1 [000] 1.000005: kmem:kfree: call_site=f ptr=0xffff888100002000
";
    let machine = Machine {
        cpus: 2,
        mem: 64 << 20,
    };
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let mut inp = input(text);
    let mut opts = ReplayOptions::default();
    let target = Recording {
        inner: KmemTarget::new(&k, 0),
        sim: &sim,
        switches: Vec::new(),
        calls: Vec::new(),
    };
    let mut engine = Engine::new(target, 2, 0, &opts);
    engine.run(&mut inp, &mut opts).unwrap();
    let (t, o) = engine.finish();
    assert_eq!(o.failures(), 0);
    assert_eq!(t.switches, [1, 0]);
    let c = &t.calls;
    assert_eq!((c[0].0, c[0].1), ("kmalloc", 0));
    assert_eq!((c[1].0, c[1].1, c[1].2), ("kfree", 1, c[0].2));
    assert_eq!((c[2].0, c[2].1), ("kmalloc", 1));
    assert_eq!((c[3].0, c[3].1), ("kmalloc", 1));
    assert!(c[2].2 != c[0].2 && c[3].2 != c[0].2 && c[3].2 != c[2].2);
    assert_eq!((c[4].0, c[4].1, c[4].2), ("kfree", 0, c[2].2));
    drop(t);
    // The replaying thread let both CPUs go.
    sim.on_cpu(0, || ());
    sim.on_cpu(1, || ());
}

#[test]
fn progress_is_reported_and_can_stop_the_replay() {
    let text = GOOD.repeat(1000);
    let machine = Machine {
        cpus: 1,
        mem: 64 << 20,
    };
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let mut inp = input(&text);
    let mut calls = Vec::new();
    let mut cb = |p: &kmem_replay::Progress| {
        calls.push((p.lines, p.done));
        p.lines < 300
    };
    let mut opts = ReplayOptions {
        progress: Some(&mut cb),
        progress_every: 100,
        ..Default::default()
    };
    let run = replay_kmem(&k, &mut inp, &mut opts);
    assert!(run.outcome.stopped);
    assert_eq!(run.outcome.lines, 300);
    assert_eq!(
        calls,
        [(100, false), (200, false), (300, false), (300, true)]
    );
}

#[test]
fn the_bundled_trace_replays_with_full_kmalloc_fidelity_and_no_failures() {
    let mut inp = TraceInput::open(BUNDLED).unwrap();
    assert!(inp.is_compressed());
    let machine = Machine::for_trace(&mut inp, None, 24 << 30).unwrap();
    assert_eq!(machine.cpus, 2, "the trace was recorded on 2 CPUs");
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let run = replay_kmem(&k, &mut inp, &mut ReplayOptions::default());
    let o = &run.outcome;
    assert_eq!(run.input_error, None);
    assert_eq!(o.events, 350_249);
    assert_eq!(o.malformed_lines, 0);
    assert_eq!(o.unknown_events, 0);
    assert_eq!(o.failures(), 0, "{:?}", run.messages);
    assert_eq!(
        o.kmalloc_fidelity.compared,
        o.stats(EventKind::Kmalloc).events
    );
    assert_eq!(o.kmalloc_fidelity.ratio(), Some(1.0));
    assert_eq!(o.kmem_cache_fidelity.ratio(), Some(1.0));
    assert_eq!(o.page_fidelity.ratio(), Some(1.0));
    assert!(o.caches.iter().all(|c| c.size == c.linux_size));
    assert_eq!(run.message_count, 0, "{:?}", run.messages);
    // Its percpu events (mm_init's per-CPU counters for each new process),
    // counted from the text: Linux reused 54 pointers whose frees perf did
    // not record (RCU callbacks free a dead mm's counters).
    let text = bundled_text();
    let (mut allocs, mut frees, mut unmatched, mut reused, mut live) = (0, 0, 0, 0, HashSet::new());
    let mut full_size = 0;
    for l in text.lines().filter(|l| l.contains(" percpu:percpu_")) {
        let ptr = field(l, "ptr").unwrap();
        if l.contains("percpu:percpu_alloc_percpu:") {
            allocs += 1;
            reused += u64::from(!live.insert(ptr));
            let size: u64 = field(l, "size").unwrap().parse().unwrap();
            let bytes_alloc: u64 = field(l, "bytes_alloc").unwrap().parse().unwrap();
            // 2 possible CPUs, memcg on.
            full_size += u64::from(bytes_alloc == size * 2 + size / 4 * 8);
        } else {
            frees += 1;
            unmatched += u64::from(!live.remove(ptr));
        }
    }
    assert_eq!(
        (allocs, frees, unmatched, reused, full_size),
        (144, 90, 2, 54, 144)
    );
    let a = o.stats(EventKind::PercpuAlloc);
    assert_eq!((a.events, a.replayed, a.failures), (144, 144, 0));
    let f = o.stats(EventKind::PercpuFree);
    assert_eq!((f.events, f.replayed, f.unmatched_frees), (90, 88, 2));
    let p = &o.percpu;
    assert_eq!((p.full_size.compared, p.full_size.matched), (144, 144));
    assert_eq!((p.is_atomic.compared, p.is_atomic.matched), (144, 144));
    assert_eq!((p.aligned.compared, p.aligned.matched), (144, 144));
    assert_eq!(p.implicit_frees, reused);
    assert_eq!(p.live, live.len() as u64);
    assert!(p.mismatches.is_empty(), "{:?}", p.mismatches);
    // Its nine vmap areas (thread stacks; perf recorded no frees of them)
    // are replayed.
    let s = o.stats(EventKind::VmapAlloc);
    assert_eq!((s.events, s.replayed), (9, 9));
    assert_eq!(
        (o.vmalloc.aligned.compared, o.vmalloc.aligned.matched),
        (9, 9)
    );
    assert!(o.series.len() > 100 && o.series.len() <= 1025);
    assert!(o.fragmentation() >= 1.0);
    // SLAB_RECLAIM_ACCOUNT where Linux's slab pages say so: every cache
    // whose slab pages the trace shows agrees with them, and the caches
    // holding most of the slab memory are reclaimable.
    for c in &o.caches {
        assert!(!c.reclaim_disagrees(), "{c:?}");
    }
    let reclaimable: Vec<&str> = o
        .caches
        .iter()
        .filter(|c| c.reclaimable)
        .map(|c| c.name.as_str())
        .collect();
    for name in [
        "dentry",
        "ext4_inode_cache",
        "radix_tree_node",
        "buffer_head",
        "extent_status",
    ] {
        assert!(reclaimable.contains(&name), "{name}: {reclaimable:?}");
        let c = o.caches.iter().find(|c| c.name == name).unwrap();
        assert!(c.linux_slab_pages.reclaimable > 0, "{c:?}");
    }
    for name in ["filp", "vm_area_struct", "maple_node", "lsm_inode_cache"] {
        assert!(!reclaimable.contains(&name), "{name}");
    }
    // The CPUs: both the trace's, none folded.
    assert_eq!(o.cpu_events.len(), 2);
    assert!(o.folded_cpus().is_empty());
}

#[test]
#[cfg_attr(miri, ignore = "a 1024-CPU machine and the whole trace")]
fn the_bundled_trace_spread_over_1024_cpus_replays_on_a_1024_cpu_machine() {
    let mut inp = TraceInput::open(BUNDLED).unwrap();
    let machine = Machine::for_trace(&mut inp, Some(1024), 24 << 30).unwrap();
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    assert_eq!(k.nr_cpus(), 1024);
    let mut opts = ReplayOptions {
        spread_threads: true,
        ..Default::default()
    };
    let run = replay_kmem(&k, &mut inp, &mut opts);
    let o = &run.outcome;
    assert_eq!(run.input_error, None);
    assert_eq!(o.events, 350_249);
    assert_eq!(o.malformed_lines, 0);
    assert_eq!(o.failures(), 0, "{:?}", run.messages);
    assert_eq!(run.message_count, 0, "{:?}", run.messages);
    // The first thread ran on CPU 1023; every thread on a CPU of its own,
    // none folded onto another.
    assert_eq!(o.cpu_events.len(), 1024);
    assert!(o.cpu_events[1023] > 0);
    let used = o.cpu_events.iter().filter(|&&n| n > 0).count();
    assert!(
        used > 40,
        "{used} CPUs used (the trace has 49 threads with replayed events)"
    );
    assert!(o.folded_cpus().is_empty());
    // The objects freed on other CPUs than they were allocated on were
    // freed as the 2-CPU replay frees them: the same fidelity.
    assert_eq!(o.kmalloc_fidelity.ratio(), Some(1.0));
    assert_eq!(o.page_fidelity.ratio(), Some(1.0));
    // A per-CPU object costs its size in each of 1024 CPUs here, not 2:
    // replayed all the same, but no full size is Linux's.
    let p = &o.percpu;
    assert_eq!(o.stats(EventKind::PercpuAlloc).replayed, 144);
    assert_eq!((p.full_size.compared, p.full_size.matched), (144, 0));
    assert_eq!(p.nr_possible_cpus, 1024);
}

#[test]
fn proc_reports_can_be_read_while_a_replay_runs() {
    // What a live view (`kmem slabtop`) does: replay on one thread, read
    // the machine's /proc on another.
    let text = bundled_text();
    let slice: String = text
        .lines()
        .take(20_000)
        .map(|l| format!("{l}\n"))
        .collect();
    let machine = Machine {
        cpus: 2,
        mem: 1 << 30,
    };
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut reads = 0;
    std::thread::scope(|s| {
        let (k, done, slice) = (&k, &done, &slice);
        let replay = s.spawn(move || {
            let mut inp = input(slice);
            let mut slow = |_: &kmem_replay::Progress| {
                // Give the reader a chance to look mid-replay.
                std::thread::sleep(std::time::Duration::from_millis(2));
                true
            };
            let mut opts = ReplayOptions {
                progress: Some(&mut slow),
                progress_every: 1000,
                ..Default::default()
            };
            let run = replay_kmem(k, &mut inp, &mut opts);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            run
        });
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let mut t = String::new();
            kmem::proc::slabinfo(k, &mut t).unwrap();
            kmem::proc::meminfo(k, &mut t).unwrap();
            kmem::proc::buddyinfo(k, &mut t).unwrap();
            assert!(t.starts_with("slabinfo - version: 2.1"));
            reads += 1;
            // A live view refreshes now and then, not in a tight loop.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let run = replay.join().unwrap();
        assert_eq!(run.outcome.events, 20_000);
        assert_eq!(run.outcome.failures(), 0);
    });
    assert!(reads > 0);
}
