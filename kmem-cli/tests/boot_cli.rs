//! `kmem boot` and `kmem --version` as a user runs them: every bad option
//! value ends with one line on stderr that names the option and its value
//! and says what to change, exit status 2 and nothing on stdout; a boot
//! that fails says why on stderr (exit status 1); memory map files are read
//! as dmesg prints them, overlaps sanitized as Linux does.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kmem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kmem"))
        .args(args)
        .output()
        .expect("run kmem")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A file under the test's own temporary directory.
fn file(name: &str, contents: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, contents).expect("write a memory map");
    path
}

/// `out` failed with `code`, printed nothing on stdout and exactly the
/// line `want` on stderr.
fn assert_refused(args: &[&str], out: &Output, code: i32, want: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(stdout, "", "{args:?}: nothing on stdout");
    assert_eq!(stderr, format!("kmem: {want}\n"), "{args:?}");
}

#[test]
fn version_names_the_binary() {
    let out = kmem(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("kmem {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_values_are_refused_before_boot_with_what_to_change() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--cpus", "100000"],
            "--cpus 100000: a machine has 1 to 1024 CPUs (NR_CPUS); give a number in that range",
        ),
        (
            &["--cpus", "0"],
            "--cpus 0: a machine has 1 to 1024 CPUs (NR_CPUS); give a number in that range",
        ),
        (
            &["--nodes", "65", "--mem", "64G"],
            "--nodes 65: a machine has 1 to 64 nodes (MAX_NUMNODES); give a number in that range",
        ),
        (
            &["--nodes", "64", "--mem", "64M"],
            "--nodes 64: --mem 64M has room for 7 nodes (each needs 8M of RAM); give --nodes 7 or \
             fewer, or a larger --mem",
        ),
        (
            &["--nodes", "0"],
            "--nodes 0: a machine has 1 to 64 nodes (MAX_NUMNODES); give a number in that range",
        ),
        (
            &["--nodes", "8", "--mem", "64M"],
            "--nodes 8: --mem 64M has room for 7 nodes (each needs 8M of RAM); \
             give --nodes 7 or fewer, or a larger --mem",
        ),
        (
            &["--failslab", "1,101,0,-1"],
            "--failslab 1,101,0,-1: probability 101 is not a percentage; give 0 to 100",
        ),
        (
            &["--fail-page-alloc", "1,10,-1,-1"],
            "--fail-page-alloc 1,10,-1,-1: space -1 is negative; give 0 or more",
        ),
        (
            &["--fail-page-alloc", "1,10,0,-2"],
            "--fail-page-alloc 1,10,0,-2: times -2 is invalid; give -1 for unlimited, or 0 and up",
        ),
        (
            &["--failslab", "1,10,0"],
            "--failslab 1,10,0: expected <interval>,<probability>,<space>,<times> \
             (for example 1,10,0,-1)",
        ),
        (
            &["--min-free-kbytes", "99999999999"],
            "--min-free-kbytes 99999999999: above INT_MAX (2147483647), which Linux's \
             vm.min_free_kbytes sysctl refuses; give at most 2147483647",
        ),
        (
            &["--mem", "2G", "--highmem-above", "0"],
            "--highmem-above 0: low memory holds ZONE_DMA, the first 16M, at least; \
             give 16M or more (896M is the classic 32-bit split)",
        ),
        (
            &["--mem", "2G", "--highmem-above", "16385K"],
            "--highmem-above 16385K: not a multiple of the 4K page size; \
             give a whole number of pages, such as 896M",
        ),
        (
            &["--mem", "1P"],
            "--mem 1P: more than kmem's limit of 64T (Linux x86-64's MAX_PHYSMEM_BITS, 46); \
             give at most 64T",
        ),
        (
            &["--mem", "0"],
            "--mem 0: a PC memory map that small has no usable RAM; give at least 2M",
        ),
        (
            &["--mem", "4Q"],
            "--mem 4Q: bad size `4Q`: unknown suffix (expected K, M, G, T, P or E)",
        ),
        (
            &["--show", "meminfo,slabs"],
            "--show meminfo,slabs: unknown report \"slabs\"; give a comma-separated list of \
             buddyinfo, slabinfo, pagetypeinfo, zoneinfo, meminfo, vmallocinfo, iomem, percpu, fault_inject, all, none",
        ),
        (
            &["--mem", "256M", "--fault", "failslab/colour=red"],
            "--fault failslab/colour=red: invalid argument (EINVAL): \
             FAULT_INJECTION: failslab has no knob \"colour\"",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["boot"];
        all.extend_from_slice(args);
        let out = kmem(&all);
        assert_refused(args, &out, 2, want);
    }
}

#[test]
fn a_failed_boot_says_why_on_stderr_and_what_to_change() {
    for (args, why, hint) in [
        (
            &["--mem", "1M"][..],
            "memblock_alloc: Failed to allocate",
            "; the machine is too small for boot; give a larger --mem than 1M\n",
        ),
        (
            &["--mem", "2G", "--highmem-above", "16M"][..],
            "memblock_alloc: Failed to allocate",
            "; the machine is too small for boot; give a larger --highmem-above than 16M, \
             or a larger --mem than 2G\n",
        ),
    ] {
        let mut all = vec!["boot", "--show", "none"];
        all.extend_from_slice(args);
        let out = kmem(&all);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("kmem: boot failed: out of memory (ENOMEM): {why}")),
            "{args:?}: {stderr}"
        );
        assert!(stderr.ends_with(hint), "{args:?}: {stderr}");
        // The boot log up to the failure is on stdout, the reason is not.
        assert!(stdout.starts_with("BIOS-provided physical RAM map:\n"));
        assert!(!stdout.contains(why), "{args:?}: {stdout}");
    }
}

#[test]
fn memory_past_the_page_index_is_refused_at_boot() {
    // 17T spans more page frames than a 32-bit descriptor index reaches:
    // refused before the memory map is allocated, not wrapped.
    let out = kmem(&["boot", "--mem", "17T", "--show", "none"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("kmem: boot failed: invalid argument (EINVAL): kmem: memory spans ")
            && stderr.ends_with("kmem indexes at most 4294967294 (16T): give less memory\n"),
        "{stderr}"
    );
}

#[test]
fn nodes_are_limited_by_max_numnodes_everywhere() {
    // Eight nodes, the limit, boot when each has its 8 MiB.
    let out = kmem(&["boot", "--mem", "1G", "--nodes", "8", "--show", "none"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Built 8 zonelists"));
    // A memory map file may not name node 64 either.
    let map = file(
        "node8.map",
        "BIOS-e820: [mem 0x0000000000100000-0x0000000003ffffff] usable\n\
         BIOS-e820: [mem 0x0000000004000000-0x0000000007ffffff] usable node 64\n",
    );
    let p = map.to_str().unwrap();
    let out = kmem(&["boot", "--memmap", p, "--show", "none"]);
    assert_refused(
        &[p],
        &out,
        1,
        &format!(
            "--memmap {p}: memory map line 2: node must be a number below 64 (MAX_NUMNODES): \
             `BIOS-e820: [mem 0x0000000004000000-0x0000000007ffffff] usable node 64`"
        ),
    );
    // --nodes and --mem describe a PC map: with --memmap they are refused,
    // not ignored.
    for opt in [["--nodes", "2"], ["--mem", "2G"]] {
        let out = kmem(&["boot", "--memmap", p, opt[0], opt[1]]);
        assert_eq!(out.status.code(), Some(2), "{opt:?}");
        assert!(
            text(&out.stderr).contains("cannot be used with"),
            "{opt:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn the_memory_map_kmem_prints_can_be_pasted_back() {
    let out = kmem(&["boot", "--mem", "64M", "--show", "none"]);
    assert!(out.status.success());
    let log = text(&out.stdout);
    // The header and the e820 lines, as a user copies them from the log.
    let table: String = log
        .lines()
        .take_while(|l| !l.starts_with("Zone ranges:"))
        .map(|l| format!("[    0.000000] {l}\n"))
        .collect();
    assert!(table.starts_with("[    0.000000] BIOS-provided physical RAM map:\n"));
    let map = file("pasted.map", &table);
    let out = kmem(&["boot", "--memmap", map.to_str().unwrap(), "--show", "none"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "nothing to say");
    let again = text(&out.stdout);
    let e820 = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("BIOS-e820:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(e820(&again), e820(&log));
    assert_eq!(e820(&log).len(), 4);
}

#[test]
fn overlapping_e820_entries_are_sanitized_and_the_changes_printed() {
    let map = file(
        "overlap.map",
        "BIOS-e820: [mem 0x0000000000000000-0x0000000000000fff] reserved\n\
         BIOS-e820: [mem 0x0000000000001000-0x000000003fffffff] usable\n\
         BIOS-e820: [mem 0x0000000030000000-0x000000003fffffff] reserved\n\
         BIOS-e820: [mem 0x0000000020000000-0x000000002fffffff] usable\n",
    );
    let p = map.to_str().unwrap();
    let out = kmem(&["boot", "--memmap", p, "--show", "none"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "kmem: --memmap {p}: lines 2 and 3 overlap at \
             [mem 0x0000000030000000-0x000000003fffffff]: reserved wins over usable\n\
             kmem: --memmap {p}: lines 2 and 4 overlap at \
             [mem 0x0000000020000000-0x000000002fffffff]: both usable, merged\n\
             kmem: --memmap {p}: 4 entries sanitized into 3 as Linux's e820__update_table() \
             does (where ranges overlap, the higher e820 type wins)\n"
        )
    );
    assert!(
        stdout.starts_with(
            "BIOS-provided physical RAM map:\n\
             BIOS-e820: [mem 0x0000000000000000-0x0000000000000fff] reserved\n\
             BIOS-e820: [mem 0x0000000000001000-0x000000002fffffff] usable\n\
             BIOS-e820: [mem 0x0000000030000000-0x000000003fffffff] reserved\n\
             Zone ranges:\n"
        ),
        "{stdout}"
    );
    // Usable on two nodes at once is not guessed.
    let map = file(
        "two-nodes.map",
        "0x100000-0x3fffffff usable\n0x20000000-0x5fffffff usable node 1\n",
    );
    let p = map.to_str().unwrap();
    let out = kmem(&["boot", "--memmap", p]);
    assert_refused(
        &[p],
        &out,
        1,
        &format!(
            "--memmap {p}: invalid memory map: lines 1 and 2 overlap at \
             [mem 0x0000000020000000-0x000000003fffffff] as usable on node 0 and node 1; \
             put them on one node or make them not overlap"
        ),
    );
}

#[test]
fn a_range_over_the_whole_address_space_is_refused_not_wrapped() {
    let map = file(
        "everything.map",
        "[mem 0x0000000000000000-0xffffffffffffffff] usable\n",
    );
    let p = map.to_str().unwrap();
    let out = kmem(&["boot", "--memmap", p]);
    assert_refused(
        &[p],
        &out,
        1,
        &format!(
            "--memmap {p}: memory map line 1: the range ends at 0xffffffffffffffff, the last \
             byte of the 64-bit address space; end it below that: \
             `[mem 0x0000000000000000-0xffffffffffffffff] usable`"
        ),
    );
    // Usable RAM beyond the 64T kmem maps is refused with the limit.
    let map = file("high.map", "0x100000-0x400000000000 usable\n");
    let p = map.to_str().unwrap();
    let out = kmem(&["boot", "--memmap", p]);
    assert_refused(
        &[p],
        &out,
        1,
        &format!(
            "--memmap {p}: usable RAM ends at 0x400000000001, above kmem's limit of 64T \
             (Linux x86-64's MAX_PHYSMEM_BITS, 46); end it at or below 0x400000000000"
        ),
    );
}

#[test]
fn a_machine_of_1024_cpus_and_64_nodes_boots() {
    let out = kmem(&[
        "boot", "--cpus", "1024", "--nodes", "64", "--mem", "64G", "--show", "none",
    ]);
    let log = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(log.contains("Built 64 zonelists"), "{log}");
    assert!(log.contains("Initmem setup node 63 "), "{log}");
}

#[test]
fn show_iomem_prints_the_resource_tree_as_proc_iomem() {
    // The default machine: a 4 GiB PC, whose map has RAM below 640 KiB,
    // the legacy area, RAM to 3 GiB, the PCI hole and RAM above 4 GiB.
    let out = kmem(&["boot", "--show", "iomem"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let (log, iomem) = stdout
        .split_once("\n$ cat /proc/iomem\n")
        .expect("an iomem section");
    // Reserved below 1 MiB is busy, so the padding of the first RAM range
    // to 64 KiB finds no room; the rest of the RAM ends on 64 MiB.
    assert!(
        log.lines()
            .any(|l| l == "e820: reserve RAM buffer [mem 0x0009fc00-0x0009ffff]"),
        "{log}"
    );
    assert_eq!(
        iomem,
        "00000000-00000fff : Reserved\n\
         00001000-0009fbff : System RAM\n\
         0009fc00-000fffff : Reserved\n\
         00100000-bfffffff : System RAM\n\
         c0000000-ffffffff : Reserved\n\
         100000000-13fffffff : System RAM\n"
    );
    // Only the report asked for.
    assert!(!stdout.contains("$ cat /proc/meminfo"));
}

#[test]
fn a_device_is_probed_and_shown_in_vmallocinfo_and_iomem() {
    let out = kmem(&[
        "boot",
        "--mem",
        "512M",
        "--device",
        "echo@0xfe000000",
        "--show",
        "meminfo,vmallocinfo,iomem",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("kmem-echo 0xfe000000: device id \"ECHO\""),
        "{stdout}"
    );
    let vmallocinfo = stdout
        .split_once("\n$ cat /proc/vmallocinfo\n")
        .unwrap()
        .1
        .split("\n\n")
        .next()
        .unwrap();
    let line = vmallocinfo.lines().next().expect("one area");
    // 0x<start>-0x<end>    8192 <caller> phys=0x00000000fe000000 ioremap
    let (range, rest) = line.split_once(' ').unwrap();
    let (a, b) = range.split_once('-').unwrap();
    let (a, b) = (
        u64::from_str_radix(&a[2..], 16).unwrap(),
        u64::from_str_radix(&b[2..], 16).unwrap(),
    );
    assert_eq!(b - a, 8192, "a page and its guard page: {line}");
    assert!(
        rest.trim_start().starts_with("8192 kmem-cli/src/main.rs:"),
        "{line}"
    );
    assert!(line.ends_with(" phys=0x00000000fe000000 ioremap"), "{line}");
    assert!(
        stdout.contains("fe000000-fe001fff : Reserved\n  fe000000-fe001fff : kmem-echo\n"),
        "{stdout}"
    );
    assert!(stdout.contains("VmallocTotal:"), "{stdout}");
}

#[test]
fn a_bad_device_is_refused_with_what_to_give() {
    let args = ["boot", "--device", "echo@0xfe000001"];
    let out = kmem(&args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kmem: --device echo@0xfe000001: "),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("give KIND@ADDRESS[,SIZE], such as echo@0xfe000000\n"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // A device over RAM is refused too.
    let out = kmem(&["boot", "--mem", "512M", "--device", "echo@0x1000000"]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

/// `kmem boot --show percpu` prints `/sys/kernel/debug/percpu_stats` in
/// Linux's format after Linux's boot line; the first chunk holds boot's
/// own per-CPU allocations, the zones' page lists (three zones on the
/// default 2-CPU, 4 GiB PC: DMA, DMA32 and Normal).
#[test]
fn show_percpu_prints_percpu_stats_with_the_zones_lists() {
    let out = kmem(&["boot", "--show", "percpu"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("percpu: Embedded 13 pages/cpu s16384 r8192 d28672 u1048576\n"),
        "{stdout}"
    );
    let stats = stdout
        .split("$ cat /sys/kernel/debug/percpu_stats\n")
        .nth(1)
        .expect("the percpu_stats section");
    assert!(
        stats.starts_with("Percpu Memory Statistics\nAllocation Info:\n"),
        "{stats}"
    );
    let first = stats
        .split("Chunk: <- First Chunk\n")
        .nth(1)
        .expect("the first chunk");
    let nr_alloc = first.lines().next().unwrap_or_default();
    assert_eq!(nr_alloc, "  nr_alloc            :            3", "{stats}");
}
