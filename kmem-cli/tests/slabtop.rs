//! `kmem slabtop` end to end: the binary's output through a pipe (plain
//! frames) and through a pseudo-terminal (the live view and its keys).

use expectrl::process::unix::WaitStatus;
use expectrl::session::OsSession as Session;
use expectrl::{Eof, Expect};
use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

const KMEM: &str = env!("CARGO_BIN_EXE_kmem");

const SUMMARY_LABELS: [&str; 5] = [
    " Active / Total Objects (% used)    : ",
    " Active / Total Slabs (% used)      : ",
    " Active / Total Caches (% used)     : ",
    " Active / Total Size (% used)       : ",
    " Minimum / Average / Maximum Object : ",
];

/// The column heading, padded to 78 columns as procps prints it.
const HEADING: &str =
    "  OBJS ACTIVE  USE OBJ SIZE  SLABS OBJ/SLAB CACHE SIZE NAME                   ";

fn kmem(args: &[&str]) -> Output {
    Command::new(KMEM).args(args).output().expect("run kmem")
}

fn stdout_of(args: &[&str]) -> String {
    let out = kmem(args);
    assert!(
        out.status.success(),
        "kmem {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// One table row, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    objs: u64,
    active: u64,
    use_pct: u64,
    obj_size_k: f64,
    slabs: u64,
    per_slab: u64,
    cache_k: u64,
    name: String,
}

fn parse_row(line: &str) -> Row {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 8, "row {line:?}");
    let n = |i: usize, suffix: &str| -> u64 {
        f[i].strip_suffix(suffix)
            .unwrap_or_else(|| panic!("{line:?}: field {i}"))
            .parse()
            .unwrap_or_else(|_| panic!("{line:?}: field {i}"))
    };
    Row {
        objs: n(0, ""),
        active: n(1, ""),
        use_pct: n(2, "%"),
        obj_size_k: f[3].strip_suffix('K').unwrap().parse().unwrap(),
        slabs: n(4, ""),
        per_slab: n(5, ""),
        cache_k: n(6, "K"),
        name: f[7].to_string(),
    }
}

/// Check one frame's layout and return its rows.
fn parse_frame(lines: &[&str]) -> Vec<Row> {
    for (line, label) in lines.iter().zip(SUMMARY_LABELS) {
        assert!(
            line.starts_with(label),
            "{line:?} should start with {label:?}"
        );
    }
    assert_eq!(lines[5], "");
    assert_eq!(lines[6], HEADING);
    lines[7..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| parse_row(l))
        .collect()
}

/// The numbers of a summary line: `a / b (c%)` or `aK / bK / cK`.
fn summary_numbers(line: &str) -> Vec<f64> {
    line.split(':')
        .nth(1)
        .unwrap()
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn once_prints_the_summary_the_heading_and_every_cache() {
    let out = stdout_of(&["slabtop", "--once", "--duration", "0.3"]);
    assert!(!out.contains('\x1b'), "escape sequence in piped output");
    let lines: Vec<&str> = out.lines().collect();
    let rows = parse_frame(&lines);
    assert_eq!(lines.len(), 7 + rows.len(), "one frame only");
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    for size in [
        "8", "16", "32", "64", "96", "128", "192", "256", "512", "1k", "2k", "4k", "8k",
    ] {
        for prefix in ["kmalloc-", "kmalloc-cg-", "kmalloc-rcl-", "dma-kmalloc-"] {
            let name = format!("{prefix}{size}");
            assert!(names.contains(&name.as_str()), "no row for {name}");
        }
    }
    for name in [
        "churn_inode",
        "churn_dentry",
        "churn_buffer_head",
        "churn_skbuff",
    ] {
        let r = rows.iter().find(|r| r.name == name).expect(name);
        assert!(
            r.active > 0,
            "the workload's end state holds objects: {r:?}"
        );
    }
    // Each row is consistent in itself, and the summary adds the rows up.
    for r in &rows {
        assert_eq!(r.objs, r.slabs * r.per_slab, "{r:?}");
        assert!(r.active <= r.objs, "{r:?}");
        let use_pct = (r.active * 100).checked_div(r.objs).unwrap_or(0);
        assert!(r.use_pct.abs_diff(use_pct) <= 1, "{r:?}");
    }
    let sum = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>() as f64;
    let objects = summary_numbers(lines[0]);
    assert_eq!(&objects[..2], [sum(|r| r.active), sum(|r| r.objs)]);
    let slabs = summary_numbers(lines[1]);
    assert_eq!(&slabs[..2], [sum(|r| r.slabs), sum(|r| r.slabs)]);
    let caches = summary_numbers(lines[2]);
    let active_caches = rows.iter().filter(|r| r.objs > 0).count() as f64;
    assert_eq!(&caches[..2], [active_caches, rows.len() as f64]);
    let sizes = summary_numbers(lines[4]);
    assert_eq!(sizes[0], 0.01, "kmalloc-8 is the smallest object");
    assert_eq!(sizes[2], 8.0, "kmalloc-8k is the largest");
}

/// Pages per slab of every cache a freshly booted 2-CPU machine has, from
/// its /proc/slabinfo (the geometry does not change while it runs).
fn pages_per_slab() -> HashMap<String, u64> {
    let out = stdout_of(&["boot", "--show", "slabinfo"]);
    out.lines()
        .skip_while(|l| !l.starts_with("# name"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[5].parse().unwrap())
        })
        .collect()
}

#[test]
fn every_sort_key_orders_the_rows_as_documented() {
    let geometry = pages_per_slab();
    let pages = |r: &Row| -> u64 {
        match geometry.get(&r.name) {
            Some(&p) => p,
            // A cache the workload made: from its cache size and slabs.
            None => {
                assert!(r.slabs > 0, "{r:?}");
                r.cache_k / 4 / r.slabs
            }
        }
    };
    for key in ["a", "b", "c", "l", "v", "n", "o", "p", "s", "u", "S"] {
        let out = stdout_of(&["slabtop", "-o", "-s", key, "--duration", "0.2"]);
        let lines: Vec<&str> = out.lines().collect();
        let rows = parse_frame(&lines);
        assert!(rows.len() > 50, "every cache is listed");
        let descending = |v: &dyn Fn(&Row) -> f64| {
            for w in rows.windows(2) {
                assert!(
                    v(&w[0]) >= v(&w[1]),
                    "-s {key}: {:?} before {:?}",
                    w[0],
                    w[1]
                );
            }
        };
        match key {
            "a" => descending(&|r| r.active as f64),
            "b" => descending(&|r| r.per_slab as f64),
            "c" => descending(&|r| r.cache_k as f64),
            // SLUB has no inactive slabs: active slabs are the slabs.
            "l" | "v" => descending(&|r| r.slabs as f64),
            "n" => {
                for w in rows.windows(2) {
                    assert!(
                        w[0].name < w[1].name,
                        "-s n: {} before {}",
                        w[0].name,
                        w[1].name
                    );
                }
            }
            "o" => descending(&|r| r.objs as f64),
            "p" => descending(&|r| pages(r) as f64),
            "s" | "S" => descending(&|r| r.obj_size_k),
            "u" => descending(&|r| r.use_pct as f64),
            _ => unreachable!(),
        }
    }
}

#[test]
fn bad_options_are_refused_with_a_clear_message() {
    let cases: [(&[&str], &str); 7] = [
        (&["-s", "x"], "invalid sort criterion 'x'"),
        (&["--sort", "objs"], "invalid sort criterion 'objs'"),
        (&["-d", "abc"], "illegal delay: 'abc'"),
        (&["-d", "0"], "delay must be positive"),
        (&["--delay", "-1.5"], "delay must be positive"),
        (&["-o", "-d", "1"], "Cannot combine -d and -o options"),
        (&["--duration", "soon"], "illegal duration: 'soon'"),
    ];
    for (args, message) in cases {
        let mut all = vec!["slabtop"];
        all.extend_from_slice(args);
        let out = kmem(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Usage errors, all of them: clap's exit status.
        assert_eq!(out.status.code(), Some(2), "kmem {all:?}: {stderr}");
        assert!(stderr.contains(message), "kmem {all:?}: {stderr}");
        assert!(out.stdout.is_empty(), "kmem {all:?} printed a frame");
    }
}

#[test]
fn a_trace_that_cannot_be_replayed_is_an_error_as_in_kmem_replay() {
    let dir = std::env::temp_dir().join(format!("kmem-slabtop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundled = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/traces/fs-build.trace.xz"
    ))
    .unwrap();
    // Cut early: the head of the trace already fails; cut later: the
    // replay fails part-way, after which the final frame is printed.
    let early = dir.join("early.xz");
    std::fs::write(&early, &bundled[..1000]).unwrap();
    let late = dir.join("late.xz");
    std::fs::write(&late, &bundled[..bundled.len() / 4]).unwrap();
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, vec![0x5a; 100_000]).unwrap();
    for (path, frame, message) in [
        (&early, false, "the trace could not be read"),
        (&late, true, "the trace could not be read to its end"),
        (&garbage, false, "no perf script events found in "),
    ] {
        let p = path.to_str().unwrap();
        let out = kmem(&["slabtop", "--workload", "replay", "--trace", p, "--once"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{p}: {stderr}");
        assert!(
            stderr.contains(p) && stderr.contains(message),
            "{p}: {stderr}"
        );
        assert_eq!(!out.stdout.is_empty(), frame, "{p}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn frames_through_a_pipe_are_plain_text() {
    let out = stdout_of(&["slabtop", "-d", "0.1", "--duration", "0.6"]);
    assert!(!out.contains('\x1b'), "escape sequence in piped output");
    // The first frame comes at once and the final one at the end; each is
    // complete.
    let lines: Vec<&str> = out.lines().collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(SUMMARY_LABELS[0]))
        .collect();
    assert!(starts.len() >= 2, "several frames: {out}");
    for i in starts {
        assert!(parse_frame(&lines[i..]).len() > 50);
    }
}

/// Start `kmem slabtop ARGS` on a pseudo-terminal of 100x30 and wait for
/// its first frame.
fn on_terminal(args: &[&str]) -> Session {
    let mut cmd = Command::new(KMEM);
    cmd.arg("slabtop").args(args);
    let mut s = Session::spawn(cmd).expect("spawn on a pty");
    s.get_process_mut().set_window_size(100, 30).unwrap();
    // A deadline against hanging, not a speed requirement.
    s.set_expect_timeout(Some(Duration::from_secs(120)));
    s.expect("\x1b[?1049h")
        .expect("enters the alternate screen");
    s.expect("OBJS ACTIVE").expect("draws a frame");
    s
}

/// Everything the program prints until it exits, and its exit status.
fn until_exit(mut s: Session) -> (String, WaitStatus) {
    let rest = s.expect(Eof).expect("exits");
    // Eof matches everything left, so the text is the match.
    let text: String = rest
        .matches()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    (text, s.get_process().wait().unwrap())
}

/// The plain final frame printed after the alternate screen is left.
fn final_frame(text: &str) -> Vec<Row> {
    let (_, after) = text
        .rsplit_once("\x1b[?1049l")
        .unwrap_or_else(|| panic!("leaves the alternate screen: {text:?}"));
    assert!(!after.contains('\x1b'), "final frame is plain: {after:?}");
    let lines: Vec<&str> = after.lines().map(|l| l.trim_end_matches('\r')).collect();
    parse_frame(&lines)
}

#[test]
fn q_on_a_terminal_quits_and_leaves_the_final_frame() {
    // The workload would run for ten minutes: only q ends it.
    let mut s = on_terminal(&["-d", "0.2", "--duration", "600"]);
    s.send("q").unwrap();
    let (text, status) = until_exit(s);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    let rows = final_frame(&text);
    assert!(rows.len() > 50, "the final frame lists every cache");
}

#[test]
fn keys_on_a_terminal_change_the_sort() {
    let mut s = on_terminal(&["-d", "0.2", "--duration", "600"]);
    s.send("n").unwrap();
    s.send("Q").unwrap();
    let (text, status) = until_exit(s);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    let rows = final_frame(&text);
    for w in rows.windows(2) {
        assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
    }

    // Any other key returns to the default sort, by objects.
    let mut s = on_terminal(&["-d", "0.2", "-s", "n", "--duration", "600"]);
    s.send("x").unwrap();
    s.send("q").unwrap();
    let (text, _) = until_exit(s);
    let rows = final_frame(&text);
    for w in rows.windows(2) {
        assert!(w[0].objs >= w[1].objs, "{:?} before {:?}", w[0], w[1]);
    }
}

#[test]
fn the_terminal_view_ends_with_the_workload() {
    let s = on_terminal(&["-d", "0.2", "--duration", "0.5"]);
    let (text, status) = until_exit(s);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    assert!(final_frame(&text).len() > 50);
}

#[test]
fn a_replayed_trace_can_be_watched() {
    // The bundled trace's end state: the caches Linux's workload used.
    let text = stdout_of(&["slabtop", "--workload", "replay", "--once", "-s", "n"]);
    let lines: Vec<&str> = text.lines().collect();
    let rows = parse_frame(&lines);
    for name in ["dentry", "ext4_inode_cache", "maple_node", "vm_area_struct"] {
        let r = rows
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} row"));
        assert!(
            r.active > 0,
            "{name} has live objects at the end of the trace"
        );
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    // A trace that is not there is an error, not an empty view.
    let out = kmem(&[
        "slabtop",
        "--workload",
        "replay",
        "--trace",
        "/no/such.trace",
        "--once",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such.trace"));
}
