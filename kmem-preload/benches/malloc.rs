//! kmem as malloc against glibc's, mimalloc and jemalloc, on whole
//! programs: `cargo bench -p kmem-preload --bench malloc`.
//!
//! Each workload is a process, run under each allocator through
//! `LD_PRELOAD` (glibc: none) and timed from spawn to exit; its peak RSS is
//! the child's `ru_maxrss` from `wait4`. The workloads (`benches/workloads`;
//! each C file's header says what it models):
//!
//! | name | what |
//! |---|---|
//! | `larson` | server threads that replace random blocks and hand their arrays on to fresh threads (Larson & Krishnan) |
//! | `xmalloc` | producer threads pass small objects through a queue to consumer threads that free them (xmalloc-test) |
//! | `cache-scratch` | each thread frees an object its neighbour's lies next to, then reuses its size and writes it hard (Hoard): false sharing |
//! | `churn`, `churn-2t` | log-uniform sizes 8 B..64 KiB randomly replaced, realloc'd and calloc'd, every page written; 1 and 2 threads |
//! | `loop` | `malloc(64)`/`free` pairs, then batches of 1000 allocated and freed: the fast path alone |
//! | `python` | Python 3 builds a dict of 200k entries and serialises it with json and pickle |
//! | `cc1` | gcc's compiler proper at `-O2` on a generated file of 3000 header-like declarations and 500 functions |
//!
//! Every (workload, allocator) runs `KMEM_BENCH_RUNS` times (3 under
//! `cargo bench`, 1 when run without `--bench`, as `cargo test --benches`
//! does), the allocators taking turns so that a slow spell of the machine
//! falls on all of them; the table keeps the median time and the median
//! peak RSS. `KMEM_BENCH_ONLY=larson,loop` runs a subset.
//!
//! Each workload prints a checksum of what it wrote into its blocks (`cc1`:
//! of the assembly it wrote), and checks the blocks as it frees them: a run
//! whose output differs from glibc's, or that does not exit 0, fails the
//! bench, after the table, saying how to run it again by hand. The figures
//! themselves never fail it.
//!
//! Reading the table: the `kmem/mi` and `kmem/glibc` columns are kmem's
//! time and peak RSS divided by mimalloc's and glibc's, below 1 is better
//! for kmem; the last row is their geometric means over the workloads,
//! which are checked against the targets (time at most 1.0 of mimalloc's
//! and 0.7 of glibc's, peak RSS at most 1.1 of mimalloc's). The machine's
//! load average is printed first: other work on its CPUs (the benchmark's
//! threads share them) makes the multi-threaded figures noisy. Peak RSS of
//! a small workload is mostly the program and its libraries, so its RSS
//! ratio says more about an allocator's fixed cost than its packing.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Debian's libmimalloc2.0 and libjemalloc2.
const MIMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2";
const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// A run this long has hung or is pathologically slow (each workload takes
/// 0.3..2 s under glibc): it is killed and fails the bench.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The C workloads, compiled once per bench run.
const C_WORKLOADS: [&str; 5] = ["larson", "xmalloc", "cache-scratch", "churn", "loop"];

#[path = "../tests/support/mod.rs"]
mod support;

fn workloads_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/workloads")
}

/// Compile `benches/workloads/<name>.c` into `dir`.
fn compile(name: &str, dir: &Path) -> PathBuf {
    let out = dir.join(name);
    let st = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(workloads_dir().join(format!("{name}.c")))
        .status()
        .unwrap_or_else(|e| panic!("cannot run cc: {e} (install gcc)"));
    assert!(st.success(), "cc {name}.c failed");
    out
}

/// A C file like a preprocessed translation unit: many declarations and
/// inline functions from "headers", most unused, then the functions the
/// file defines. cc1 spends ~2 ms on each function it compiles at `-O2`
/// here, so those are fewer than the declarations.
fn cc1_input() -> String {
    const DECLS: usize = 3000;
    const FUNCTIONS: usize = 500;
    let mut s = String::from(
        "struct node { int key; long val; struct node *next; };\n\
         long g(struct node *, long);\n",
    );
    for i in 0..DECLS {
        let k = i % 7 + 1;
        writeln!(
            s,
            "struct rec{i} {{ int id; long v[{k}]; struct rec{i} *next; }};\n\
             extern int decl{i}(struct rec{i} *, const char *, unsigned long);\n\
             static inline long inl{i}(const struct rec{i} *r, long x)\n\
             {{\n    return r ? r->v[x % {k}] + r->id * {k} : x;\n}}"
        )
        .unwrap();
    }
    for i in 0..FUNCTIONS {
        let k = i % 7 + 1;
        let inl = i * 7 % DECLS;
        writeln!(
            s,
            "long f{i}(struct node *p, long x)\n{{\n\
             \x20   long r = x * {m} + {i};\n\
             \x20   if (p && p->key > x)\n        r += g(p->next, x - {k});\n\
             \x20   if (r & 1)\n        r += inl{inl}(0, r);\n\
             \x20   return r ^ (r >> {k});\n}}",
            m = 2 * k + 1
        )
        .unwrap();
    }
    s
}

/// One program to time.
struct Workload {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(&'static str, &'static str)>,
    /// A file the program writes, whose size and hash join its stdout
    /// in the comparison (cc1 prints nothing).
    output: Option<PathBuf>,
}

impl Workload {
    fn new(name: &'static str, program: impl Into<PathBuf>) -> Self {
        Workload {
            name,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            output: None,
        }
    }

    fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    fn args_from<const N: usize>(mut self, a: [&str; N]) -> Self {
        self.args.extend(a.iter().map(OsString::from));
        self
    }

    /// The command line, to run it again by hand.
    fn shell(&self, preload: Option<&Path>) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            write!(s, "{k}={v} ").unwrap();
        }
        if let Some(p) = preload {
            write!(s, "LD_PRELOAD={} ", p.display()).unwrap();
        }
        s.push_str(&self.program.to_string_lossy());
        for a in &self.args {
            write!(s, " {}", a.to_string_lossy()).unwrap();
        }
        s
    }
}

/// Every workload, its programs compiled or generated into `dir`.
fn workloads(dir: &Path, only: Option<&[String]>) -> Vec<Workload> {
    let wanted = |n: &str| only.is_none_or(|o| o.iter().any(|x| x == n));
    let mut bins = std::collections::HashMap::new();
    for c in C_WORKLOADS {
        let used = match c {
            "churn" => wanted("churn") || wanted("churn-2t"),
            _ => wanted(c),
        };
        if used {
            bins.insert(c, compile(c, dir));
        }
    }
    let bin = |n: &str| bins[n].clone();
    let mut all = Vec::new();
    if wanted("larson") {
        all.push(Workload::new("larson", bin("larson")).arg("2"));
    }
    if wanted("xmalloc") {
        all.push(Workload::new("xmalloc", bin("xmalloc")));
    }
    if wanted("cache-scratch") {
        all.push(Workload::new("cache-scratch", bin("cache-scratch")).arg("2"));
    }
    if wanted("churn") {
        all.push(Workload::new("churn", bin("churn")).arg("1"));
    }
    if wanted("churn-2t") {
        all.push(Workload::new("churn-2t", bin("churn")).arg("2"));
    }
    if wanted("loop") {
        all.push(Workload::new("loop", bin("loop")));
    }
    if wanted("python") {
        let mut w = Workload::new("python", "python3").arg(workloads_dir().join("python.py"));
        // The same string hashes every run: set and dict layouts alike.
        w.env.push(("PYTHONHASHSEED", "0"));
        all.push(w);
    }
    if wanted("cc1") {
        let out = Command::new("gcc")
            .arg("-print-prog-name=cc1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run gcc: {e} (install gcc)"));
        let cc1 = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(Path::new(&cc1).exists(), "no cc1 at {cc1:?} (install gcc)");
        let src = dir.join("unit.i");
        std::fs::write(&src, cc1_input()).unwrap();
        let asm = dir.join("unit.s");
        let mut w = Workload::new("cc1", cc1)
            .args_from(["-O2", "-quiet"])
            .arg(&src)
            .arg("-o")
            .arg(&asm);
        w.output = Some(asm);
        all.push(w);
    }
    all
}

/// One allocator: `preload` is `None` for glibc's own.
struct Allocator {
    name: &'static str,
    preload: Option<PathBuf>,
}

/// The allocators there are; a missing library is said and left out.
fn allocators(kmem: PathBuf) -> Vec<Allocator> {
    let mut all = vec![Allocator {
        name: "glibc",
        preload: None,
    }];
    for (name, path, package) in [
        ("mimalloc", MIMALLOC, "libmimalloc2.0"),
        ("jemalloc", JEMALLOC, "libjemalloc2"),
    ] {
        if Path::new(path).exists() {
            all.push(Allocator {
                name,
                preload: Some(path.into()),
            });
        } else {
            println!(
                "{name}: {path} is missing (apt-get install {package}); its column is left out"
            );
        }
    }
    all.push(Allocator {
        name: "kmem",
        preload: Some(kmem),
    });
    all
}

/// One run's measurements and what it printed.
struct Sample {
    secs: f64,
    rss_kib: u64,
    output: Vec<u8>,
}

/// FNV-1a: a fingerprint of an output file.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Run `w` once under `a`, its stdout and stderr into files in `dir`.
fn run_once(w: &Workload, a: &Allocator, dir: &Path) -> Result<Sample, String> {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let mut cmd = Command::new(&w.program);
    cmd.args(&w.args)
        .envs(w.env.iter().copied())
        .stdin(Stdio::null())
        // Files, not pipes: nothing to drain while the child runs.
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    match &a.preload {
        Some(p) => cmd.env("LD_PRELOAD", p),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    // A pre_exec hook makes Command fork rather than posix_spawn (vfork):
    // exec counts the old address space's peak in the child's ru_maxrss,
    // and a vfork child's old address space is this whole process, while
    // a forked one holds only copies of its anonymous pages (~1 MiB).
    // SAFETY: the hook does nothing, so it is async-signal-safe and
    // touches no lock or allocation in the forked child.
    unsafe { cmd.pre_exec(|| Ok(())) };
    let again = w.shell(a.preload.as_deref());
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("{}: cannot run `{again}`: {e}", w.name))?;
    let pid = child.id() as libc::pid_t;
    let (done, reaped) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if reaped.recv_timeout(TIMEOUT).is_err() {
            // SAFETY: kill() has no memory effects, and `pid` is still our
            // child: it is reaped only after this thread is joined.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    // Wait for the exit without reaping (WNOWAIT), so that the pid stays
    // the child's until the watchdog is gone.
    loop {
        // SAFETY: siginfo_t is plain data, for which all zeroes is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT;
        // SAFETY: `info` is valid for writes; `pid` is our child.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert!(e.kind() == std::io::ErrorKind::Interrupted, "waitid: {e}");
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = done.send(());
    watchdog.join().unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain integers, for which all zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our child, exited and not reaped (Child::wait
        // is never called, and Child does not reap on drop); `status` and
        // `ru` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert!(e.kind() == std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
    let stderr = std::fs::read(&err_path).unwrap_or_default();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let how = if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            if sig == libc::SIGKILL && secs >= TIMEOUT.as_secs_f64() {
                format!("was killed after {} s", TIMEOUT.as_secs())
            } else {
                format!("died of signal {sig}")
            }
        } else {
            format!("exited {}", libc::WEXITSTATUS(status))
        };
        return Err(format!(
            "{} under {}: {how}; stderr:\n{}\nrun again: {again}",
            w.name,
            a.name,
            tail(&stderr),
        ));
    }
    let mut output = std::fs::read(&out_path).unwrap();
    if let Some(f) = &w.output {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {}: {e}", w.name, f.display()))?;
        let line = format!(
            "{}: {} bytes, fnv1a {:016x}\n",
            f.display(),
            bytes.len(),
            fnv1a(&bytes)
        );
        output.extend_from_slice(line.as_bytes());
        let _ = std::fs::remove_file(f);
    }
    Ok(Sample {
        secs,
        rss_kib: ru.ru_maxrss as u64,
        output,
    })
}

/// The last lines of a program's stderr, for a failure's message.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One (workload, allocator) cell of the table.
#[derive(Clone, Copy)]
struct Cell {
    secs: f64,
    rss_mib: f64,
}

/// Run `w` `runs` times under every allocator, taking turns; `None` for an
/// allocator whose run failed or whose output differed from glibc's, with
/// the reason pushed on `failures`.
fn measure(
    w: &Workload,
    allocs: &[Allocator],
    runs: usize,
    dir: &Path,
    failures: &mut Vec<String>,
) -> Vec<Option<Cell>> {
    let mut samples: Vec<Vec<Sample>> = allocs.iter().map(|_| Vec::new()).collect();
    let mut failed = vec![false; allocs.len()];
    for r in 0..runs {
        // Each round starts with a different allocator.
        for i in (0..allocs.len()).map(|i| (i + r) % allocs.len()) {
            if failed[i] {
                continue;
            }
            match run_once(w, &allocs[i], dir) {
                Ok(s) => samples[i].push(s),
                Err(e) => {
                    failures.push(e);
                    failed[i] = true;
                }
            }
        }
    }
    // glibc's first run is the reference; its other runs are checked
    // against it too, so a workload that is not deterministic shows.
    let reference = samples[0].first().map(|s| s.output.clone());
    let mut cells = Vec::new();
    for (i, a) in allocs.iter().enumerate() {
        if failed[i] {
            cells.push(None);
            continue;
        }
        let Some(reference) = &reference else {
            cells.push(None);
            continue;
        };
        if let Some(s) = samples[i].iter().find(|s| s.output != *reference) {
            failures.push(format!(
                "{} under {}: the output differs from glibc's:\n--- glibc\n{}--- {}\n{}run again: {}",
                w.name,
                a.name,
                String::from_utf8_lossy(reference),
                a.name,
                String::from_utf8_lossy(&s.output),
                w.shell(a.preload.as_deref()),
            ));
            cells.push(None);
            continue;
        }
        cells.push(Some(Cell {
            secs: median(samples[i].iter().map(|s| s.secs).collect()),
            rss_mib: median(
                samples[i]
                    .iter()
                    .map(|s| s.rss_kib as f64 / 1024.0)
                    .collect(),
            ),
        }));
    }
    cells
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn geomean(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    Some((v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

fn main() {
    let started = Instant::now();
    let runs = match std::env::var("KMEM_BENCH_RUNS") {
        Ok(n) => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .expect("KMEM_BENCH_RUNS: give a count, 1 or more"),
        // `cargo test --benches` runs this without `--bench`: once is a
        // check that everything runs and agrees.
        Err(_) if std::env::args().any(|a| a == "--bench") => 3,
        Err(_) => 1,
    };
    let only: Option<Vec<String>> = std::env::var("KMEM_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let names = [
        "larson",
        "xmalloc",
        "cache-scratch",
        "churn",
        "churn-2t",
        "loop",
        "python",
        "cc1",
    ];
    if let Some(o) = &only {
        for x in o {
            assert!(
                names.contains(&x.as_str()),
                "KMEM_BENCH_ONLY: no workload {x:?}; there are {}",
                names.join(", ")
            );
        }
    }

    let so = support::build_so();
    let dir = std::env::temp_dir().join(format!("kmem-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ws = workloads(&dir, only.as_deref());
    let allocs = allocators(so);

    println!("CPU: {}", cpu_model());
    println!(
        "CPUs: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let floor = run_once(&Workload::new("true", "true"), &allocs[0], &dir)
        .map_or(0.0, |s| s.rss_kib as f64 / 1024.0);
    println!("peak RSS of `true` spawned the same way: {floor:.1} MiB, the least a run can show");
    println!(
        "{runs} run(s) of each workload under each of {}; medians",
        allocs.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
    );

    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for w in &ws {
        let t = Instant::now();
        let cells = measure(w, &allocs, runs, &dir, &mut failures);
        let fmt = |c: &Option<Cell>| c.map_or("failed".into(), |c| format!("{:.2} s", c.secs));
        let line: Vec<String> = allocs
            .iter()
            .zip(&cells)
            .map(|(a, c)| format!("{} {}", a.name, fmt(c)))
            .collect();
        eprintln!(
            "{}: {} ({:.0} s)",
            w.name,
            line.join(", "),
            t.elapsed().as_secs_f64()
        );
        rows.push((w.name, cells));
    }

    print_table(&allocs, &rows);

    println!("bench took {:.0} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        for f in &failures {
            println!("\nFAILED: {f}");
        }
        println!("\nthe programs and files are kept in {}", dir.display());
        std::process::exit(1);
    }
}

/// The markdown table, the geometric means and the targets.
fn print_table(allocs: &[Allocator], rows: &[(&str, Vec<Option<Cell>>)]) {
    let col = |n: &str| allocs.iter().position(|a| a.name == n);
    let (glibc, mi, kmem) = (col("glibc"), col("mimalloc"), col("kmem"));
    let mut head = String::from("| workload |");
    let mut rule = String::from("|---|");
    for unit in ["s", "MiB"] {
        for a in allocs {
            write!(head, " {} {unit} |", a.name).unwrap();
            rule.push_str("---:|");
        }
    }
    for r in [
        "kmem/mi time",
        "kmem/glibc time",
        "kmem/mi RSS",
        "kmem/glibc RSS",
    ] {
        write!(head, " {r} |").unwrap();
        rule.push_str("---:|");
    }
    println!("\n{head}\n{rule}");
    // The four ratio columns: (kmem/mi, kmem/glibc) x (time, RSS).
    let mut ratios: [Vec<f64>; 4] = Default::default();
    for (name, cells) in rows {
        let mut line = format!("| {name} |");
        for c in cells {
            match c {
                Some(c) => write!(line, " {:.3} |", c.secs).unwrap(),
                None => line.push_str(" failed |"),
            }
        }
        for c in cells {
            match c {
                Some(c) => write!(line, " {:.1} |", c.rss_mib).unwrap(),
                None => line.push_str(" failed |"),
            }
        }
        let k = kmem.and_then(|k| cells[k]);
        let pairs = [(mi, true), (glibc, true), (mi, false), (glibc, false)];
        for (j, (other, time)) in pairs.into_iter().enumerate() {
            let o = other.and_then(|o| cells[o]);
            match (k, o) {
                (Some(k), Some(o)) => {
                    let r = if time {
                        k.secs / o.secs
                    } else {
                        k.rss_mib / o.rss_mib
                    };
                    ratios[j].push(r);
                    write!(line, " {r:.2} |").unwrap();
                }
                _ => line.push_str(" - |"),
            }
        }
        println!("{line}");
    }
    let mut line = String::from("| geometric mean |");
    for _ in 0..2 * allocs.len() {
        line.push_str(" |");
    }
    let means: Vec<Option<f64>> = ratios.iter().map(|r| geomean(r)).collect();
    for m in &means {
        match m {
            Some(m) => write!(line, " **{m:.2}** |").unwrap(),
            None => line.push_str(" - |"),
        }
    }
    println!("{line}\n");
    let complete = rows.iter().all(|(_, c)| c.iter().all(Option::is_some));
    if !complete {
        println!("(the means leave out the workloads that failed)");
    }
    for (what, mean, target) in [
        ("time, kmem/mimalloc", means[0], 1.0),
        ("time, kmem/glibc", means[1], 0.7),
        ("peak RSS, kmem/mimalloc", means[2], 1.1),
    ] {
        match mean {
            Some(m) => println!(
                "target {what} <= {target:.1}: {m:.2}, {}",
                if m <= target { "met" } else { "NOT met" }
            ),
            None => println!("target {what} <= {target:.1}: not measured"),
        }
    }
}
