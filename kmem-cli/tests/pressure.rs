//! `kmem boot --pressure` as a user runs it: on a small machine, in
//! seconds, the output shows kswapd waking, direct reclaim, a page
//! allocation failure warning and an OOM kill, in that order and in the
//! kernel's words, then `/proc/vmstat` with the reclaim and OOM counters
//! moved, and what moved. Also on a one-CPU machine, where kswapd shares
//! the CPU of the thread that drives the scenario.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `kmem` with `args`; fail if it has not ended within `limit`.
/// Returns (exit code, stdout, stderr).
fn kmem_within(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmem"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kmem");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for kmem") {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("kmem {args:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        reader.join().unwrap(),
        err_reader.join().unwrap(),
    )
}

/// The index of the first line containing `needle`, else fail.
fn line_of(lines: &[&str], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle:?}"))
}

/// The `/proc/vmstat` section: its `name value` lines.
fn vmstat(lines: &[&str]) -> Vec<(String, u64)> {
    let at = line_of(lines, "$ cat /proc/vmstat");
    lines[at + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (name, v) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("not `name value`: {l:?}"));
            let v = v
                .parse()
                .unwrap_or_else(|_| panic!("not `name value`: {l:?}"));
            (name.to_string(), v)
        })
        .collect()
}

fn value(vm: &[(String, u64)], name: &str) -> u64 {
    vm.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("/proc/vmstat has no {name}"))
        .1
}

/// The first number after `prefix` on the line that starts with it.
fn number_after(lines: &[&str], prefix: &str) -> u64 {
    let l = lines[line_of(lines, prefix)];
    let rest = &l[l.find(prefix).unwrap() + prefix.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {prefix:?} in {l:?}"))
}

/// Everything the scenario must show, in order, on the output of `args`.
fn shows_the_scenario(args: &[&str]) {
    let start = Instant::now();
    let (code, out, err) = kmem_within(args, Duration::from_secs(120));
    let took = start.elapsed();
    assert_eq!(code, Some(0), "{args:?}: {err}");
    assert_eq!(err, "", "{args:?}: nothing on stderr");
    let lines: Vec<&str> = out.lines().collect();

    // kswapd woke and reclaimed (kmem's line: the kernel prints none).
    let kswapd = line_of(&lines, "kmem: kswapd woke ");
    assert!(number_after(&lines, "kmem: kswapd woke ") > 0, "{out}");
    // Direct reclaim, by the task that allocates.
    let direct = line_of(&lines, "kmem: direct reclaim: memhog");
    // The kernel's page allocation failure warning, with Mem-Info.
    let failure = line_of(
        &lines,
        "memhog: page allocation failure: order:0, mode:0x820(GFP_ATOMIC), nodemask=(null)",
    );
    assert!(lines[failure..].contains(&"Mem-Info:"));
    // The OOM killer: its header, the task table, the kill and the reaper.
    let invoked = line_of(
        &lines,
        "memhog invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0",
    );
    let table = line_of(&lines, "Tasks state (memory values in pages):");
    let killed = line_of(&lines, "Out of memory: Killed process ");
    assert!(lines[killed].contains("(memhog)"), "{}", lines[killed]);
    let reaped = line_of(&lines, "oom_reaper: reaped process ");
    let cat = line_of(&lines, "$ cat /proc/vmstat");
    let moved = line_of(&lines, "# what moved during the scenario");
    let order = [
        kswapd, direct, failure, invoked, table, killed, reaped, cat, moved,
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?}\n{out}"
    );

    let vm = vmstat(&lines);
    assert_eq!(vm[0].0, "nr_free_pages");
    for name in [
        "pgsteal_kswapd",
        "pgscan_kswapd",
        "pageoutrun",
        "slabs_scanned",
        "pgfree",
    ] {
        assert!(value(&vm, name) > 0, "{name} did not move:\n{out}");
    }
    assert!(value(&vm, "oom_kill") >= 1, "{out}");
    let allocstall: u64 = vm
        .iter()
        .filter(|(n, _)| n.starts_with("allocstall_"))
        .map(|(_, v)| v)
        .sum();
    assert!(allocstall > 0, "no allocstall_* moved:\n{out}");
    let pgalloc: u64 = vm
        .iter()
        .filter(|(n, _)| n.starts_with("pgalloc_"))
        .map(|(_, v)| v)
        .sum();
    assert!(pgalloc > 0);
    // What moved: the counters of the scenario, with their change.
    for name in ["pgsteal_kswapd", "allocstall_", "oom_kill"] {
        let l = lines[moved..]
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} is not among what moved:\n{out}"));
        assert!(l.contains("(+"), "{l}");
    }
    assert!(took < Duration::from_secs(60), "{args:?} took {took:?}");
}

#[test]
fn pressure_shows_kswapd_direct_reclaim_a_failure_and_an_oom_kill_then_vmstat() {
    shows_the_scenario(&["boot", "--mem", "128M", "--pressure", "--show", "none"]);
}

#[test]
fn pressure_ends_on_one_cpu_where_kswapd_shares_the_cpu() {
    shows_the_scenario(&[
        "boot",
        "--mem",
        "64M",
        "--cpus",
        "1",
        "--pressure",
        "--show",
        "none",
    ]);
}
