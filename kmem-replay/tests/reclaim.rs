//! Replayed caches are `SLAB_RECLAIM_ACCOUNT` where Linux's are: from the
//! `__GFP_RECLAIMABLE` of the slab pages Linux took for them, else from
//! Linux's own flags for the cache; `/proc/meminfo`'s `SReclaimable` after
//! the replay shows it.

use kmem_replay::reclaim::ReclaimSource;
use kmem_replay::{replay_kmem, Machine, ReplayOptions, TraceInput, CPU_PEEK_BYTES};
use std::collections::HashMap;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/reclaim.trace");

/// A `/proc/meminfo` value in kB.
fn meminfo_kb(text: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// kB of slab pages per cache, from `/proc/slabinfo` (num_slabs *
/// pagesperslab * 4).
fn slab_kb(slabinfo: &str) -> HashMap<String, u64> {
    slabinfo
        .lines()
        .skip(2)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let pages: u64 = f[5].parse().unwrap();
            let slabs: u64 = f[f.len() - 2].parse().unwrap();
            (f[0].to_string(), slabs * pages * 4)
        })
        .collect()
}

fn proc(k: &kmem::Kmem<&kmem_sim::SimPlatform>) -> (String, String) {
    let (mut meminfo, mut slabinfo) = (String::new(), String::new());
    kmem::proc::meminfo(k, &mut meminfo).unwrap();
    kmem::proc::slabinfo(k, &mut slabinfo).unwrap();
    (meminfo, slabinfo)
}

fn check(head_scan: bool) {
    let mut input = TraceInput::open(FIXTURE).unwrap();
    let machine = if head_scan {
        Machine::for_trace(&mut input, None, 256 << 20).unwrap()
    } else {
        // Without the head scan, the engine pairs the pages itself.
        Machine {
            cpus: 2,
            mem: 256 << 20,
        }
    };
    assert_eq!(machine.cpus, 2);
    assert_eq!(input.head_scan().is_some(), head_scan);
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let (boot_meminfo, _) = proc(&k);
    let run = replay_kmem(&k, &mut input, &mut ReplayOptions::default());
    let o = &run.outcome;
    assert_eq!(o.failures(), 0);
    let by_name: HashMap<&str, _> = o.caches.iter().map(|c| (c.name.as_str(), c)).collect();
    let c = by_name["fixture_reclaimable"];
    assert!(
        c.reclaimable && c.flags.contains("RECLAIM_ACCOUNT"),
        "{c:?}"
    );
    assert_eq!(c.reclaim_source, ReclaimSource::Trace);
    assert_eq!(c.linux_slab_pages.reclaimable, 1);
    let c = by_name["fixture_plain"];
    assert!(
        !c.reclaimable && !c.flags.contains("RECLAIM_ACCOUNT"),
        "{c:?}"
    );
    assert_eq!(c.reclaim_source, ReclaimSource::Trace);
    let c = by_name["dentry"];
    assert!(c.reclaimable, "{c:?}");
    assert_eq!(c.reclaim_source, ReclaimSource::LinuxFlags);

    // SReclaimable grew by exactly the slabs of the two reclaimable caches;
    // SUnreclaim by those of the plain one (and the kmalloc).
    let (meminfo, slabinfo) = proc(&k);
    let kb = slab_kb(&slabinfo);
    let reclaimable = kb["fixture_reclaimable"] + kb["dentry"];
    assert!(reclaimable > 0 && kb["fixture_plain"] > 0, "{slabinfo}");
    assert_eq!(
        meminfo_kb(&meminfo, "SReclaimable") - meminfo_kb(&boot_meminfo, "SReclaimable"),
        reclaimable,
        "{meminfo}\n{slabinfo}"
    );
    assert!(
        meminfo_kb(&meminfo, "SUnreclaim") - meminfo_kb(&boot_meminfo, "SUnreclaim")
            >= kb["fixture_plain"]
    );
}

#[test]
fn reclaimable_caches_show_in_sreclaimable_by_the_trace_or_linux_flags() {
    check(true);
}

#[test]
fn the_engine_pairs_slab_pages_itself_without_the_head_scan() {
    check(false);
}

#[test]
fn evidence_after_a_cache_is_created_is_reported_when_it_disagrees() {
    // filp's first allocation came from a partial slab; its later slab
    // page was reclaimable (not what Linux does for filp: a trace from a
    // kernel that did would be reported, not silently followed).
    let head = "a 1 [000] 1.000001: kmem:kmem_cache_alloc: call_site=f ptr=0xffff888100000000 name=filp bytes_req=184 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true\n";
    let pad = "# padding past the head scan\n".repeat(2 * CPU_PEEK_BYTES / 28);
    let tail = "\
a 1 [000] 2.000001: kmem:mm_page_alloc: page=0x110000 pfn=0x110000 order=1 migratetype=2 gfp_flags=GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP
a 1 [000] 2.000002: kmem:kmem_cache_alloc: call_site=f ptr=0xffff888100001000 name=filp bytes_req=184 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true
";
    let text = format!("{head}{pad}{tail}");
    let len = text.len() as u64;
    let mut input =
        TraceInput::from_reader("t", std::io::Cursor::new(text.into_bytes()), Some(len)).unwrap();
    let machine = Machine::for_trace(&mut input, None, 256 << 20).unwrap();
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let run = replay_kmem(&k, &mut input, &mut ReplayOptions::default());
    let c = &run.outcome.caches[0];
    assert_eq!(c.name, "filp");
    assert!(!c.reclaimable);
    assert!(c.reclaim_disagrees());
    let report = kmem_replay::Report::new("t", machine, &k, run, None);
    let mut s = String::new();
    report.write_text(&mut s).unwrap();
    assert!(
        s.contains("    filp: without SLAB_RECLAIM_ACCOUNT, but 1 of the 1 Linux slab pages the trace pairs with it are reclaimable"),
        "{s}"
    );
}
