//! The `kmem` binary: `kmem replay` with `--json` and `--plot`, no progress
//! bar when stderr is not a terminal, errors, and `kmem` with no arguments
//! replaying the bundled trace.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/fs-build.trace.xz");

fn kmem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kmem"))
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kmem-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The first `n` lines of the bundled trace, as a plain file.
fn slice(dir: &std::path::Path, n: usize) -> PathBuf {
    let xz = std::fs::read(BUNDLED).unwrap();
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .unwrap();
    let s: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
    let path = dir.join("slice.trace");
    std::fs::write(&path, s).unwrap();
    path
}

#[test]
fn replay_writes_the_report_json_and_plot() {
    let dir = scratch("json");
    let trace = slice(&dir, 5000);
    let json = dir.join("r.json");
    let svg = dir.join("r.svg");
    let out = kmem()
        .arg("replay")
        .arg(&trace)
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("kmem replay of "), "{stdout}");
    assert!(stdout.contains("5000 events in "));
    assert!(stdout.contains("$ cat /proc/slabinfo"));
    assert!(stdout.contains("$ cat /proc/meminfo"));
    // Not a terminal: no progress bar.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
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
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["events"], 5000);
    assert_eq!(v["machine"]["cpus"], 2);
    assert_eq!(v["kmalloc_fidelity"], 1.0);

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"));
    assert!(plot.contains("<polyline"));
    assert!(plot.contains("live requested bytes"));
    assert!(plot.trim_end().ends_with("</svg>"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_trace_is_an_error() {
    let out = kmem()
        .args(["replay", "/nonexistent/x.trace"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/x.trace"), "{err}");
}

#[test]
fn boot_is_still_there() {
    let out = kmem()
        .args(["boot", "--mem", "256M", "--show", "buddyinfo"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("$ cat /proc/buddyinfo"));
}

#[test]
fn kmem_without_arguments_replays_the_bundled_trace() {
    // From another directory: the trace is inside the binary.
    let out = kmem().current_dir(std::env::temp_dir()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(
            "kmem replay of fs-build.trace.xz (bundled) on a simulated machine: 2 CPUs"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("350249 events in "));
    assert!(
        stdout.contains("kmalloc, allocated size equals bytes_alloc:     29053/29053 = 100.00%"),
        "{stdout}"
    );
    assert!(stdout.contains("system allocator (malloc/free"));
    // Its percpu events are replayed, every full size Linux's.
    assert!(!stdout.contains("not replayed: kmem has no"), "{stdout}");
    for want in [
        "percpu:percpu_alloc_percpu             144       144         0          0         0\n",
        "percpu:percpu_free_percpu               90        88         0          2         0\n",
        "  pcpu_obj_full_size() equals bytes_alloc:        144/144 = 100.00%",
    ] {
        assert!(stdout.contains(want), "{want}\n{stdout}");
    }
    let total = stdout.lines().find(|l| l.starts_with("total ")).unwrap();
    let failures: u64 = total.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(failures, 0, "{total}");
}

/// Run `kmem ARGS`: exit status, stdout, stderr.
fn run(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = kmem().args(args).output().unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_refused_with_one_line_naming_it_and_the_right_status() {
    let dir = scratch("bad");
    let trace = slice(&dir, 200);
    let os = |s: &str| std::ffi::OsString::from(s);
    let empty = dir.join("empty.trace");
    std::fs::write(&empty, "").unwrap();
    let garbage = dir.join("garbage.trace");
    std::fs::write(
        &garbage,
        (0..50_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let json_new = dir.join("new.json");
    let cases: Vec<(Vec<std::ffi::OsString>, i32, String)> = vec![
        // Usage errors (clap): exit status 2, the option named.
        (
            vec![os("replay"), os("--cpus"), os("0")],
            2,
            "'--cpus <CPUS>'".into(),
        ),
        (
            vec![os("replay"), os("--cpus"), os("1025")],
            2,
            "1 to 1024 CPUs".into(),
        ),
        (
            vec![os("replay"), os("--mem"), os("lots")],
            2,
            "'--mem <MEM>'".into(),
        ),
        // A spread needs a machine to spread over.
        (
            vec![os("replay"), os("--spread-threads")],
            1,
            "kmem: --spread-threads needs --cpus: give the machine's CPU count to spread the \
             threads over, e.g. --cpus 1024"
                .into(),
        ),
        // The trace: a directory, nothing, garbage.
        (
            vec![os("replay"), dir.clone().into()],
            1,
            format!("kmem: {}: is a directory; give a trace file", dir.display()),
        ),
        (
            vec![
                os("replay"),
                empty.clone().into(),
                os("--json"),
                json_new.clone().into(),
            ],
            1,
            format!("kmem: no perf script events found in {}: ", empty.display()),
        ),
        (
            vec![os("replay"), garbage.clone().into()],
            1,
            format!(
                "kmem: no perf script events found in {}: ",
                garbage.display()
            ),
        ),
        // Outputs that cannot be written: refused before the replay.
        (
            vec![
                os("replay"),
                trace.clone().into(),
                os("--json"),
                os("/nonexistent-dir/r.json"),
            ],
            1,
            "kmem: --json /nonexistent-dir/r.json: cannot write it: ".into(),
        ),
        (
            vec![
                os("replay"),
                trace.clone().into(),
                os("--plot"),
                dir.clone().into(),
            ],
            1,
            format!(
                "kmem: --plot {}: is a directory; give a file to write",
                dir.display()
            ),
        ),
    ];
    for (args, status, message) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, status, "kmem {args:?}: {stderr}");
        assert!(stderr.contains(&message), "kmem {args:?}: {stderr}");
        assert!(
            stdout.is_empty(),
            "kmem {args:?} printed a report: {stdout}"
        );
        if status == 1 {
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        }
    }
    // The check leaves no file behind.
    assert!(!json_new.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_truncated_trace_is_reported_as_far_as_it_went_then_refused() {
    let dir = scratch("truncated");
    let xz = std::fs::read(BUNDLED).unwrap();
    let cut = dir.join("cut.trace.xz");
    std::fs::write(&cut, &xz[..xz.len() / 4]).unwrap();
    let (code, stdout, stderr) = run(&[std::ffi::OsStr::new("replay"), cut.as_os_str()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.contains("input error, replay ended early: "),
        "{stdout}"
    );
    assert!(
        stderr.starts_with(&format!("kmem: {}: ", cut.display()))
            && stderr.contains("the trace could not be read to its end"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A replay on a machine too small for the trace ends on its own (it used
/// to sleep forever for frees that only its own thread could make),
/// counts the failures and says how much memory to give; slabtop's replay
/// workload ends the same way (#11 item 1).
#[test]
fn a_replay_on_a_too_small_machine_ends_and_names_mem() {
    let (status, out, _) = run(&["replay".as_ref(), "--mem".as_ref(), "64M".as_ref()]);
    assert_eq!(status, 0, "the replay itself worked: {out}");
    assert!(out.contains("failed on kmem"), "{out}");
    assert!(out.contains("replay with a larger --mem"), "{out}");
    let (status, out, err) = run(&[
        "slabtop".as_ref(),
        "--once".as_ref(),
        "--workload".as_ref(),
        "replay".as_ref(),
        "--mem".as_ref(),
        "64M".as_ref(),
    ]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("kmalloc-8"), "{out}");
}

/// `replay --mem 1M` says in one line why the machine did not boot and
/// what to change; `--mem 1P` is refused with kmem's limit; a one-CPU
/// machine is "1 CPU" (#11 items 9, 14).
#[test]
fn replay_mem_too_small_or_too_large_is_one_line_naming_mem() {
    let (status, out, err) = run(&["replay".as_ref(), "--mem".as_ref(), "1M".as_ref()]);
    assert_eq!(status, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--mem 1M") && err.contains("give a larger --mem"),
        "{err}"
    );
    let (status, _, err) = run(&["replay".as_ref(), "--mem".as_ref(), "1P".as_ref()]);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("64T"), "{err}");
    let dir = scratch("one_cpu");
    let trace = slice(&dir, 2000);
    let (status, out, err) = run(&[
        "replay".as_ref(),
        trace.as_os_str(),
        "--cpus".as_ref(),
        "1".as_ref(),
    ]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("simulated machine: 1 CPU,"), "{out}");
}

#[test]
fn replay_of_the_bundled_vm_percpu_trace_reports_its_vmalloc_fidelity() {
    let dir = scratch("vm-percpu");
    let json = dir.join("r.json");
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/vm-percpu.trace.xz");
    let out = kmem()
        .args(["replay", trace, "--no-progress", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for want in [
        "vmalloc:alloc_vmap_area               3410      3410         0          0         0",
        "vmalloc:free_vmap_area_noflush        3405      3400         0          5         0",
        "vmalloc:purge_vmap_area_lazy             3         2         0          0         1",
        "  nr_lazy rises by kmem's pages for the area:     3399/3399 = 100.00%",
        "  Linux's purges kmem found due:                  2/2 = 100.00%",
    ] {
        assert!(stdout.contains(want), "{want}\n{stdout}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["vmalloc"]["nr_lazy_max"]["matched"], 3405);
    assert_eq!(v["vmalloc"]["lazy_max_pages"], 16384);
    assert_eq!(v["vmalloc"]["mismatches"], serde_json::json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replay_of_the_bundled_vm_percpu_trace_reports_its_percpu_fidelity() {
    let dir = scratch("vm-percpu-pcpu");
    let json = dir.join("r.json");
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/vm-percpu.trace.xz");
    let out = kmem()
        .args(["replay", trace, "--no-progress", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for want in [
        "percpu:percpu_alloc_percpu           22083     22083         0          0         0\n",
        "percpu:percpu_free_percpu            21829     21824         0          5         0\n",
        "  percpu_alloc_percpu: 22083 replayed (0 reserved, 0 atomic), 0 failed on kmem, 0 failed in Linux",
        "  percpu_free_percpu: 21824 replayed, 5 unmatched (allocated before the trace began), 0 failed on kmem; 4 implicit frees",
        "  pcpu_obj_full_size() equals bytes_alloc:        22083/22083 = 100.00% (size × 2 + size / 4 × 8: 2 possible CPUs, memcg on)",
        "  is_atomic agrees with the GFP flags:            22083/22083 = 100.00%",
    ] {
        assert!(stdout.contains(want), "{want}\n{stdout}");
    }
    let total = stdout.lines().find(|l| l.starts_with("total ")).unwrap();
    let failures: u64 = total.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(failures, 0, "{total}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["not_replayed"], serde_json::json!([]));
    assert_eq!(v["percpu"]["full_size"]["compared"], 22083);
    assert_eq!(v["percpu"]["full_size"]["matched"], 22083);
    assert_eq!(v["percpu"]["implicit_frees"], 4);
    assert_eq!(v["percpu"]["live"], 255);
    assert_eq!(v["percpu"]["mismatches"], serde_json::json!([]));
    assert_eq!(v["by_type"]["percpu:percpu_free_percpu"], 21829);
    let _ = std::fs::remove_dir_all(&dir);
}
