//! Real programs under `LD_PRELOAD` of `libkmem_preload.so`, each compared
//! with the same run under glibc's malloc: `sort`, Python, `git`, `xz -T2`,
//! a threaded C program, a C++ program, and the C functions' corners. Bad
//! frees are reported and abort; bad settings exit with a reason.
//!
//! The programs are Debian's (coreutils, python3, git, xz-utils, gcc,
//! g++); `.ci/run` installs them. A missing one fails its test, saying
//! which.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

/// `libkmem_preload.so`, brought up to date once for all the tests.
fn lib() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(support::build_so).clone()
}

/// A scratch directory of this test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kmem-preload-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// Run `cmd`, under kmem when `kmem`, with `env` added.
fn run(cmd: &mut Command, kmem: bool, env: &[(&str, &str)]) -> Output {
    if kmem {
        cmd.env("LD_PRELOAD", lib());
    } else {
        cmd.env_remove("LD_PRELOAD");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} (install it: see .ci/run)"))
}

/// Run the command both ways; their output and status must match.
fn same_under_kmem(mut make: impl FnMut() -> Command) -> Output {
    let glibc = run(&mut make(), false, &[]);
    let kmem = run(&mut make(), true, &[]);
    assert!(glibc.status.success(), "under glibc: {glibc:?}");
    assert_eq!(
        kmem.status.code(),
        glibc.status.code(),
        "status under kmem, stderr: {}",
        String::from_utf8_lossy(&kmem.stderr)
    );
    assert!(kmem.stdout == glibc.stdout, "output differs under kmem");
    kmem
}

/// Compile `src` from tests/programs with `compiler` into `dir`.
fn compile(compiler: &str, src: &str, dir: &Path) -> PathBuf {
    let out = dir.join(src.split('.').next().unwrap());
    let st = Command::new(compiler)
        .args(["-O2", "-pthread", "-Wno-free-nonheap-object", "-o"])
        .arg(&out)
        .arg(programs().join(src))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e} (install it: see .ci/run)"));
    assert!(st.success(), "{compiler} {src} failed");
    out
}

#[test]
fn sort_of_a_million_lines() {
    let d = scratch("sort");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut text = String::new();
    for _ in 0..1_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{:x} {}\n", x, x % 1000));
    }
    let f = d.join("lines.txt");
    std::fs::write(&f, text).unwrap();
    let out = same_under_kmem(|| {
        let mut c = Command::new("sort");
        c.arg(&f);
        c
    });
    assert_eq!(
        out.stdout.iter().filter(|&&b| b == b'\n').count(),
        1_000_000
    );
}

#[test]
fn python_builds_and_serialises_dicts_and_lists() {
    let out = same_under_kmem(|| {
        let mut c = Command::new("python3");
        c.arg(programs().join("dicts.py"));
        c
    });
    assert!(String::from_utf8_lossy(&out.stdout).contains("True"));
}

#[test]
fn git_on_a_scratch_repository() {
    let script = r#"
        set -e
        export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b
        export GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z'
        export GIT_CONFIG_NOSYSTEM=1 HOME="$PWD"
        git init -q -b main repo && cd repo
        for i in 1 2 3 4 5; do
            seq 1 $((i * 2000)) > f$i; seq $i 3 9000 >> f1
            git add -A && git commit -qm "commit $i"
        done
        git checkout -q -b side HEAD~2 && echo side > s && git add s && git commit -qm side
        git checkout -q main && git merge -q --no-edit side
        git gc -q && git fsck --strict 2>&1
        git log --format='%H %s' && git diff --stat HEAD~3 && git rev-list --count HEAD
    "#;
    let d = scratch("git");
    let mut n = 0;
    let out = same_under_kmem(|| {
        n += 1;
        let w = d.join(format!("run{n}"));
        std::fs::create_dir_all(&w).unwrap();
        let mut c = Command::new("sh");
        c.args(["-c", script]).current_dir(w);
        c
    });
    assert!(String::from_utf8_lossy(&out.stdout).contains("commit 5"));
}

#[test]
fn xz_with_two_threads() {
    let d = scratch("xz");
    let mut x = 1u64;
    let mut data = Vec::with_capacity(24 << 20);
    while data.len() < 24 << 20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Compressible, but not trivially.
        data.extend_from_slice(format!("{} ", x >> 52).as_bytes());
    }
    let f = d.join("data");
    std::fs::write(&f, &data).unwrap();
    let out = same_under_kmem(|| {
        let mut c = Command::new("xz");
        c.args(["-T2", "--block-size=4MiB", "-c"]).arg(&f);
        c
    });
    assert!(out.stdout.len() > 1000);
}

#[test]
fn threads_free_what_others_allocated() {
    let d = scratch("threads");
    let exe = compile("cc", "threads.c", &d);
    let out = same_under_kmem(|| Command::new(&exe));
    assert!(String::from_utf8_lossy(&out.stdout).contains("threads done"));
}

#[test]
fn cpp_maps_and_strings() {
    let d = scratch("cpp");
    let exe = compile("c++", "maps.cpp", &d);
    let out = same_under_kmem(|| Command::new(&exe));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("5000 keys"));
}

#[test]
fn the_c_functions_corners_and_fork() {
    let d = scratch("api");
    let exe = compile("cc", "api.c", &d);
    // With every slab_debug check on too: red zones move objects, and the
    // alignments must still hold.
    let debug = run(
        &mut Command::new(&exe),
        true,
        &[("KMEM_SLAB_DEBUG", "FZPU")],
    );
    let glibc = run(&mut Command::new(&exe), false, &[]);
    assert!(
        debug.status.success(),
        "{}",
        String::from_utf8_lossy(&debug.stderr)
    );
    assert!(
        debug.stdout == glibc.stdout,
        "output differs under slab_debug"
    );
    let out = same_under_kmem(|| Command::new(&exe));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "malloc(0): distinct non-null",
        "huge: null ENOMEM",
        "calloc overflow: null ENOMEM",
        "alignments up to 4 MiB: 1",
        "posix_memalign(3): EINVAL",
        "fork child: exited 0",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[test]
fn fork_while_other_threads_allocate() {
    let d = scratch("forks");
    let exe = compile("cc", "forks.c", &d);
    // Without the fork gate a child hangs on a lock its parent's other
    // threads held (two runs in three did): `timeout` ends such a run.
    let out = same_under_kmem(|| {
        let mut c = Command::new("timeout");
        c.arg("120").arg(&exe);
        c
    });
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 of 200 children exited 0\n"
    );
}

#[test]
fn fork_while_threads_hold_stdio_locks() {
    let d = scratch("stdiofork");
    let exe = compile("cc", "stdiofork.c", &d);
    // One thread reallocates under a stream's lock (getline), another
    // holds stdio's list lock waiting for it (fflush(NULL)): before the
    // prepare handler took the list lock first, every run deadlocked, at
    // 300 forks as at 500 (the program's alarm ends it with status 3).
    let out = same_under_kmem(|| {
        let mut c = Command::new(&exe);
        c.arg("1000");
        c
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn memory_not_joined_yet_stays_out_of_core_dumps() {
    let d = scratch("dontdump");
    let exe = compile("cc", "dontdump.c", &d);
    let out = run(
        &mut default_machine(Command::new(&exe)),
        true,
        &[("KMEM_MALLOC_VERBOSE", "1")],
    );
    assert!(out.status.success(), "{out:?}");
    let machine = machine_bytes(&out) >> 20;
    if machine < 2048 {
        eprintln!("a machine of {machine} MiB (a limit halved it): not tried");
        return;
    }
    let (before, after) = rss_figures(&out);
    // Most of the machine is held back by deferred struct page init and
    // marked MADV_DONTDUMP; a GiB of blocks joins at least 768 MiB of it
    // (boot's own sections may serve the rest), which is dumped again.
    assert!(
        before >= machine / 2,
        "{before} MiB of {machine} left out of a dump"
    );
    assert!(after + 512 <= before, "{before} then {after} MiB");
}

/// Two figures from a program's line: (peak, after) from rss.c's,
/// (before, after) from dontdump.c's.
fn rss_figures(out: &Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{text}");
    (nums[0], nums[1])
}

#[test]
fn resident_memory_falls_after_frees() {
    let d = scratch("rss");
    let exe = compile("cc", "rss.c", &d);
    // Free page reporting gives the freed blocks back to the host.
    let out = run(
        &mut Command::new(&exe),
        true,
        &[("KMEM_MALLOC_DECAY_MS", "100")],
    );
    assert!(out.status.success());
    let (peak, after) = rss_figures(&out);
    assert!(peak >= 256, "peak {peak} MiB");
    assert!(after < peak / 4, "still {after} of {peak} MiB");
    // Without it the memory stays: reporting is what gave it back.
    let out = run(
        Command::new(&exe).arg("0.5"),
        true,
        &[("KMEM_MALLOC_DECAY_MS", "off")],
    );
    let (peak, after) = rss_figures(&out);
    assert!(
        after > peak * 3 / 4,
        "{after} of {peak} MiB without reporting"
    );
}

/// The machine's physical memory, from the last boot log's `Memory:` line
/// (`KMEM_MALLOC_VERBOSE=1`), in bytes.
fn machine_bytes(out: &Output) -> u64 {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .rfind(|l| l.starts_with("Memory: "))
        .unwrap_or_else(|| panic!("no Memory: line in\n{err}"));
    let total = line.split('/').nth(1).and_then(|t| t.split('K').next());
    total.and_then(|t| t.parse::<u64>().ok()).expect(line) << 10
}

/// Host memory and swap, in bytes, as kmem-malloc reads them (`sysinfo`).
fn host_bytes() -> u64 {
    // SAFETY: all-zero is a valid `sysinfo`; the call only writes it.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::sysinfo(&mut si) }, 0);
    (si.totalram as u64 + si.totalswap as u64) * u64::from(si.mem_unit.max(1))
}

/// `vm.overcommit_memory` is 2: kmem-malloc's default is then 4 GiB.
fn strict_overcommit() -> bool {
    std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|s| s.trim() == "2")
}

/// `cmd` without a `KMEM_MALLOC_MEM` the test runner may have set.
fn default_machine(mut cmd: Command) -> Command {
    cmd.env_remove("KMEM_MALLOC_MEM");
    cmd
}

#[test]
fn the_machine_is_as_large_as_the_host_and_shrinks_to_fit_a_limit() {
    const GIB: u64 = 1 << 30;
    let verbose = [("KMEM_MALLOC_VERBOSE", "1")];
    // `sort` allocates, so kmem boots.
    let out = run(&mut default_machine(Command::new("sort")), true, &verbose);
    assert!(out.status.success());
    let host = host_bytes();
    let want = if strict_overcommit() {
        4 * GIB
    } else {
        host.min(8 << 40).next_multiple_of(GIB).max(4 * GIB)
    };
    assert_eq!(
        machine_bytes(&out),
        want,
        "the default machine is the host's memory and swap, rounded up to a GiB"
    );
    // Under an address-space limit of 3 GiB the default takes half of
    // what fits, and the program runs. (The shell, which sets the limit,
    // boots its own machine first: the last boot is `sort`'s.)
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) }, 0);
    if lim.rlim_max >= 3 * GIB {
        let limited = |mem: Option<&str>| {
            let mut c = default_machine(Command::new("sh"));
            c.args(["-c", "ulimit -v 3145728 && exec sort"]);
            let mut env = verbose.to_vec();
            env.extend(mem.map(|m| ("KMEM_MALLOC_MEM", m)));
            run(&mut c, true, &env)
        };
        let out = limited(None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mem = machine_bytes(&out);
        assert!(
            (64 << 20..=3 * GIB / 2).contains(&mem),
            "{mem} bytes under a 3 GiB limit: at most half of it"
        );
        // A size given that does not fit is refused, not shrunk.
        let out = limited(Some("8G"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("set KMEM_MALLOC_MEM to less"), "{err}");
    } else {
        eprintln!("hard RLIMIT_AS below 3 GiB: the limited runs not tried");
    }
    // More than the old fixed 4 GiB, in blocks the machine serves, where
    // the host has it (each block is touched once, and its 1024 page
    // descriptors written: about 55 MiB resident).
    let d = scratch("big");
    let exe = compile("cc", "big.c", &d);
    if want >= 6 * GIB {
        let out = run(default_machine(Command::new(&exe)).arg("5"), true, &[]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("a default machine of {want} bytes: 5 GiB of blocks not tried");
    }
    // With the machine set smaller, the same program gets NULL, as it
    // would from a kernel out of memory.
    let out = run(
        Command::new(&exe).arg("5"),
        true,
        &[("KMEM_MALLOC_MEM", "1G")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NULL after"));
}

/// Run `api bad <case>` under kmem with `env`: it must abort with
/// `expect` on standard error.
fn bad_free(exe: &Path, case: &str, env: &[(&str, &str)], expect: &[&str]) {
    let out = run(Command::new(exe).args(["bad", case]), true, env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc_sigabrt()), "{case}: {err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    for e in expect {
        assert!(err.contains(e), "{case}: {e:?} not in\n{err}");
    }
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn bad_frees_are_reported_and_abort() {
    let d = scratch("bad");
    let exe = compile("cc", "api.c", &d);
    bad_free(
        &exe,
        "double",
        &[],
        &[
            "BUG kmalloc-128 (Not tainted): Object already free",
            "refused: aborting",
        ],
    );
    bad_free(
        &exe,
        "interior",
        &[],
        &[
            "Invalid object pointer",
            "is in object",
            "refused: aborting",
        ],
    );
    bad_free(&exe, "foreign", &[], &["free(): invalid pointer"]);
    bad_free(&exe, "large-double", &[], &["free(): invalid pointer"]);
    bad_free(&exe, "sized", &[], &["free_sized(): size 4096 is larger"]);
    // A double free that is not at the sheaf's head needs slab_debug, as
    // in Linux; so does an overrun.
    let debug = [("KMEM_SLAB_DEBUG", "FZPU")];
    bad_free(
        &exe,
        "double-later",
        &debug,
        &["Object already free", "freed again"],
    );
    bad_free(
        &exe,
        "overrun",
        &debug,
        &["Right Redzone overwritten", "Allocated in"],
    );
    // Linux's per-cache lists: red zones on kmalloc-128 alone catch it.
    bad_free(
        &exe,
        "overrun",
        &[("KMEM_SLAB_DEBUG", "-;Z,kmalloc-1*")],
        &["BUG kmalloc-128 (Not tainted): Right Redzone overwritten"],
    );
}

#[test]
fn stats_at_exit_and_bad_settings() {
    // `sort` allocates (`true` would not, and would not boot kmem).
    let out = run(
        &mut Command::new("sort"),
        true,
        &[("KMEM_MALLOC_STATS", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    for e in [
        "slabinfo - version: 2.1",
        "kmalloc-64",
        "MemTotal:",
        "Large blocks:",
    ] {
        assert!(err.contains(e), "{e:?} not in\n{err}");
    }
    for (var, val) in [
        ("KMEM_MALLOC_DECAY_MS", "soon"),
        ("KMEM_MALLOC_MEM", "lots"),
        ("KMEM_MALLOC_MEM", "1M"),
        // Past the 8T the core can index with room to spare.
        ("KMEM_MALLOC_MEM", "16T"),
        ("KMEM_SLAB_DEBUG", "FZQ"),
        ("KMEM_SLAB_DEBUG", "FZ,,kmalloc-64"),
    ] {
        let out = run(&mut Command::new("sort"), true, &[(var, val)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={val}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(&format!("{var}={val}: give")), "{err}");
    }
}
