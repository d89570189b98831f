//! `kmem boot` with the fault-injection options, run as a user would: the
//! options are accepted and show up in the report with the injected-failure
//! counts, and bad ones end with a clear error and a non-zero exit.

use std::process::{Command, Output};

fn kmem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kmem"))
        .args(["boot", "--mem", "256M", "--show", "none"])
        .args(args)
        .output()
        .expect("run kmem")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn fault_options_are_applied_and_reported() {
    let out = kmem(&[
        "--failslab",
        "1,10,0,-1",
        "--fail-page-alloc",
        "2,20,4096,5",
        "--fault",
        "fail_page_alloc/min-order=2",
        "--fault",
        "failslab/cache-filter=Y",
        "--fault",
        "failslab/verbose=0",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for line in [
        "/sys/kernel/debug/failslab/probability:10",
        "/sys/kernel/debug/failslab/interval:1",
        "/sys/kernel/debug/failslab/times:-1",
        "/sys/kernel/debug/failslab/cache-filter:Y",
        "/sys/kernel/debug/failslab/verbose:0",
        "/sys/kernel/debug/fail_page_alloc/probability:20",
        "/sys/kernel/debug/fail_page_alloc/interval:2",
        "/sys/kernel/debug/fail_page_alloc/space:4096",
        "/sys/kernel/debug/fail_page_alloc/times:5",
        "/sys/kernel/debug/fail_page_alloc/min-order:2",
        "kmem: injected failures: failslab 0, fail_page_alloc 0",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{stdout}"
        );
    }
}

#[test]
fn no_fault_options_no_fault_report_unless_asked() {
    let out = kmem(&[]);
    assert!(out.status.success());
    assert!(!text(&out.stdout).contains("injected failures"));
    let out = Command::new(env!("CARGO_BIN_EXE_kmem"))
        .args(["boot", "--mem", "256M", "--show", "fault_inject"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("/sys/kernel/debug/failslab/probability:0"));
    assert!(text(&out.stdout).contains("kmem: injected failures: failslab 0, fail_page_alloc 0"));
}

#[test]
fn bad_fault_options_fail_with_a_clear_error() {
    for (args, want) in [
        (
            &["--failslab", "1,10,0"][..],
            "--failslab 1,10,0: expected <interval>,<probability>,<space>,<times>",
        ),
        (
            &["--fault", "failslab/colour=red"][..],
            "--fault failslab/colour=red: invalid argument (EINVAL): FAULT_INJECTION: failslab has no knob \"colour\"",
        ),
        (
            &["--fault", "fail_page_alloc/probability=101"][..],
            "fail_page_alloc/probability: 101 is not a percentage",
        ),
        (&["--fault", "nonsense"][..], "is not <attr>/<knob>=<value>"),
    ] {
        let out = kmem(args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // A range error in the boot form is refused before boot, with the
    // option's name, as a usage error.
    let out = kmem(&["--fail-page-alloc", "1,101,0,-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "kmem: --fail-page-alloc 1,101,0,-1: probability 101 is not a percentage; give 0 to 100\n"
    );
}
