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
    assert!(stdout.contains("not replayed: kmem has no percpu yet"));
    let total = stdout.lines().find(|l| l.starts_with("total ")).unwrap();
    let failures: u64 = total.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(failures, 0, "{total}");
}
