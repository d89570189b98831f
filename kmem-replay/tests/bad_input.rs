//! What a replay does with bad or unusual input: an over-long line, input
//! without perf script events, CPUs the machine lacks, and the report's
//! own consistency (totals, n/a fidelity, refused caches, Linux's
//! wrong-cache warning).

use kmem_replay::{replay_kmem, KmemRun, Machine, ReplayOptions, Report, TraceInput};

fn input(bytes: Vec<u8>) -> TraceInput {
    let len = bytes.len() as u64;
    TraceInput::from_reader("t.trace", std::io::Cursor::new(bytes), Some(len)).unwrap()
}

/// Size the machine from the trace as `kmem replay` does, replay, report.
fn replay(bytes: Vec<u8>) -> (Machine, KmemRun, String, Report) {
    let mut inp = input(bytes);
    let machine = Machine::for_trace(&mut inp, None, 128 << 20).unwrap();
    let sim = machine.platform().unwrap();
    let k = machine.boot(&sim).unwrap();
    let run = replay_kmem(&k, &mut inp, &mut ReplayOptions::default());
    let copy = KmemRun {
        outcome: run.outcome.clone(),
        messages: run.messages.clone(),
        message_count: run.message_count,
        input_error: run.input_error.clone(),
    };
    let report = Report::new("t.trace", machine, &k, copy, None);
    let mut text = String::new();
    report.write_text(&mut text).unwrap();
    (machine, run, text, report)
}

const KMALLOC: &str = "a 1 [000] 1.000001: kmem:kmalloc: call_site=f ptr=0xffff888100001000 bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1 accounted=false\n";
const KFREE: &str = "a 1 [000] 1.000002: kmem:kfree: call_site=f ptr=0xffff888100001000\n";

#[test]
fn a_line_longer_than_the_read_buffer_is_one_malformed_line_and_its_bytes_are_escaped() {
    // 3 MiB of zeros and an escape sequence between two good lines.
    let mut bytes = KMALLOC.as_bytes().to_vec();
    bytes.extend_from_slice(b"\x1b[2J");
    bytes.resize(bytes.len() + (3 << 20), 0);
    bytes.push(b'\n');
    bytes.extend_from_slice(KFREE.as_bytes());
    let (_, run, text, _) = replay(bytes);
    let o = &run.outcome;
    assert_eq!((o.lines, o.malformed_lines), (3, 1));
    assert_eq!(o.errors.len(), 1);
    let e = &o.errors[0];
    assert!(
        e.starts_with(&format!(
            "line 2: a line of {} bytes, longer than the 1 MiB a line may have",
            4 + (3 << 20)
        )),
        "{e}"
    );
    assert!(e.contains(r"`\x1b[2J\x00\x00"), "{e}");
    assert!(e.len() < 400, "{} bytes", e.len());
    // The line after it is line 3 and replays.
    assert_eq!(o.stats(kmem_replay::parse::EventKind::Kfree).replayed, 1);
    assert_eq!(o.live_bytes, 0);
    // Nothing in the report drives a terminal.
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
}

#[test]
fn input_without_perf_script_events_is_refused_naming_it() {
    // Pseudo-random bytes (xorshift), zeros, nothing, comments only.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cases: [(&str, Vec<u8>); 4] = [
        ("random", random),
        ("zeros", vec![0; 2 << 20]),
        ("empty", Vec::new()),
        ("comments", b"# perf script\n\n   \n".to_vec()),
    ];
    for (what, bytes) in cases {
        let mut inp = input(bytes);
        let e = Machine::for_trace(&mut inp, None, 128 << 20).unwrap_err();
        assert!(
            e.starts_with("no perf script events found in t.trace: give a file of `perf script -F comm,tid,cpu,time,event,trace` output"),
            "{what}: {e}"
        );
    }
    // Events, but none of the input format's.
    let text = "a 1 [000] 1.0: sched:sched_switch: prev_comm=a\n".repeat(3);
    let (_, run, _, _) = replay(text.into_bytes());
    assert_eq!(
        run.outcome.no_events("t.trace").unwrap(),
        "no kmem, percpu or vmalloc events found in t.trace, only 3 others \
         (sched:sched_switch): record the events docs/replay.md lists"
    );
    let (_, run, _, _) = replay(KMALLOC.as_bytes().to_vec());
    assert_eq!(run.outcome.no_events("t.trace"), None);
}

#[test]
fn events_on_cpus_the_machine_lacks_run_on_its_cpus_and_are_reported() {
    // The head shows CPUs 0 and 1; CPUs 5 and 63 come after it.
    let mut text = String::new();
    text += KMALLOC;
    text += "b 2 [001] 1.000002: kmem:kfree: call_site=f ptr=0xffff888100001000\n";
    text += &"# padding past the head scan\n".repeat(2 * kmem_replay::CPU_PEEK_BYTES / 28);
    text += "c 3 [005] 2.000001: kmem:kmalloc: call_site=f ptr=0xffff888100002000 bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1 accounted=false\n";
    text += "c 3 [005] 2.000002: kmem:kfree: call_site=f ptr=0xffff888100002000\n";
    text += "d 4 [063] 2.000003: kmem:kfree: call_site=f ptr=(nil)\n";
    let (machine, run, text, _) = replay(text.into_bytes());
    assert_eq!(machine.cpus, 2);
    let o = &run.outcome;
    assert_eq!((o.malformed_lines, o.failures()), (0, 0));
    assert_eq!(o.stats(kmem_replay::parse::EventKind::Kmalloc).replayed, 2);
    assert_eq!(o.folded_cpus(), [(5, 2), (63, 1)]);
    assert!(
        text.contains(
            "they ran on the machine's CPUs: CPU 5 (2 events) as CPU 1, CPU 63 (1 events) as CPU 1; \
             replay with --cpus 64 to give each its own"
        ),
        "{text}"
    );

    // A CPU id beyond NR_CPUS in the head sizes nothing and aborts nothing.
    let mut text = String::from(KMALLOC);
    text += "z 9 [5000] 1.5: kmem:kfree: call_site=f ptr=0xffff888100001000\n";
    text += KFREE;
    let (machine, run, _, _) = replay(text.into_bytes());
    assert_eq!(machine.cpus, 1);
    assert_eq!(run.outcome.malformed_lines, 1);
    assert!(run.outcome.errors[0].contains("--cpus takes 1 to 1024"));
    assert_eq!(run.outcome.live_bytes, 0);

    // perf script --header's CPU count wins over the CPUs seen.
    let text = format!("# nrcpus online : 4\n# nrcpus avail : 4\n{KMALLOC}");
    let mut inp = input(text.into_bytes());
    assert_eq!(Machine::for_trace(&mut inp, None, 1 << 30).unwrap().cpus, 4);
}

#[test]
fn the_report_adds_up_says_na_lists_refused_caches_and_warns_of_the_wrong_cache() {
    let text = "\
a 1 [000] 1.000001: kmem:kmem_cache_alloc: call_site=d_alloc+0x1 ptr=0xffff888100000000 name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true
a 1 [000] 1.000002: kmem:kmem_cache_alloc: call_site=f+0x1 ptr=0xffff888100100000 name=filp bytes_req=184 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true
a 1 [000] 1.000003: kmem:kmem_cache_free: call_site=x+0x1 ptr=0xffff888100000000 name=filp
a 1 [000] 1.000004: sched:sched_switch: prev_comm=a prev_pid=1
a 1 [000] 1.000005: kmem:kmem_cache_alloc: call_site=f+0x1 ptr=0xffff888100200000 name=huge bytes_req=67108864 bytes_alloc=67108864 gfp_flags=GFP_KERNEL node=-1 accounted=false
";
    let (_, run, text, report) = replay(text.as_bytes().to_vec());
    let o = &run.outcome;
    // The header's events and the table's total agree.
    assert!(text.contains("\n5 events in "), "{text}");
    let total = text.lines().find(|l| l.starts_with("total ")).unwrap();
    assert_eq!(total.split_whitespace().nth(1), Some("5"), "{total}");
    assert!(text.contains("(other event types)                      1"));
    // Nothing to compare: n/a, and null in JSON.
    assert!(
        text.contains("kmalloc, allocated size equals bytes_alloc:     n/a (none replayed)"),
        "{text}"
    );
    assert!(text.contains("mm_page_alloc, order obtained equals traced:    n/a"));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert!(json["kmalloc_fidelity"].is_null());
    assert_eq!(json["kmem_cache_fidelity"], 1.0);
    // The refused cache is not counted as created.
    assert!(
        text.contains("caches created: 2 (0 with a slot size other than Linux's)"),
        "{text}"
    );
    assert!(text.contains("caches kmem refused to create: 1"), "{text}");
    assert!(text.contains("    huge: object 67108864 B: "), "{text}");
    assert_eq!(
        o.stats(kmem_replay::parse::EventKind::KmemCacheAlloc)
            .failures,
        1
    );
    // Linux's warning, in its words, and the object freed from its cache.
    assert_eq!(o.notes.wrong_cache_frees, 1);
    assert_eq!(
        o.warnings,
        ["line 3: cache_from_obj: Wrong slab cache. filp but object is from dentry"]
    );
    assert!(text.contains(
        "warnings Linux prints for these events: 1\n  line 3: cache_from_obj: Wrong slab cache. filp but object is from dentry\n"
    ));
    assert_eq!(
        o.stats(kmem_replay::parse::EventKind::KmemCacheFree)
            .replayed,
        1
    );
    assert_eq!(o.live_objects, 1);
}

#[test]
fn a_machine_too_small_counts_each_failure_and_says_what_mem_the_trace_needs() {
    // 40 live blocks of 4 MiB (GFP_NOWAIT: failures come at once, no
    // reclaim), then their frees.
    let mut text = String::new();
    for i in 0..40u64 {
        text += &format!(
            "a 1 [000] 1.{:06}: kmem:kmalloc: call_site=f ptr=0x{:x} bytes_req=4194304 bytes_alloc=4194304 gfp_flags=GFP_NOWAIT node=-1 accounted=false\n",
            i + 1,
            0xffff_8881_0000_0000u64 + (i << 22)
        );
    }
    for i in 0..40u64 {
        text += &format!(
            "a 1 [000] 2.{:06}: kmem:kfree: call_site=f ptr=0x{:x}\n",
            i + 1,
            0xffff_8881_0000_0000u64 + (i << 22)
        );
    }
    let run_on = |mem: u64| {
        let mut inp = input(text.clone().into_bytes());
        let machine = Machine::for_trace(&mut inp, None, mem).unwrap();
        let sim = machine.platform().unwrap();
        let k = machine.boot(&sim).unwrap();
        let run = replay_kmem(&k, &mut inp, &mut ReplayOptions::default());
        let report = Report::new("t.trace", machine, &k, run, None);
        let mut s = String::new();
        report.write_text(&mut s).unwrap();
        (report, s)
    };
    let (r, text_64m) = run_on(64 << 20);
    let kmalloc = &r.types[0].stats;
    let kfree = &r.types[1].stats;
    assert!(kmalloc.failures > 0 && kmalloc.replayed > 0, "{kmalloc:?}");
    assert_eq!(r.no_memory_failures, kmalloc.failures);
    // Each failure is kept with its line and what was asked.
    let first = kmalloc.replayed + 1;
    assert_eq!(
        r.failed[0],
        format!("line {first}: kmem:kmalloc of 4194304 B (GFP_NOWAIT): out of memory (ENOMEM)")
    );
    assert_eq!(r.failed.len(), 10);
    // Their frees are known, not unmatched.
    assert_eq!(
        (kfree.unmatched_frees, kfree.skipped),
        (0, kmalloc.failures)
    );
    assert_eq!(r.notes.frees_of_failed_allocs, kmalloc.failures);
    // What the trace needs, and the --mem that gives it.
    assert_eq!(r.peak_traced_live_bytes, 160 << 20);
    assert!(
        text_64m.contains("and the trace holds up to 160.0 MiB live (what it asked for)")
            && text_64m.contains("replay with a larger --mem, such as --mem 256M"),
        "{text_64m}"
    );
    // Which is enough.
    let (r, text_256m) = run_on(256 << 20);
    assert_eq!(r.failures, 0);
    assert_eq!(r.suggested_mem_bytes, None);
    assert!(!text_256m.contains("ran out of memory"));
}
