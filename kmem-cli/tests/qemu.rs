//! `kmem qemu`: the bare-metal kernel boots kmem under QEMU on 2 and 4
//! CPUs and every case of its in-kernel suite passes; bad options are
//! refused with one line.
//!
//! Without QEMU, OVMF or the x86_64-unknown-uefi target the boot test
//! cannot run: it says so on stderr ("SKIPPED: ...") and, when
//! `KMEM_REQUIRE_QEMU=1` (CI sets it), fails instead.

use std::io::Write;
use std::process::{Command, Output};

fn kmem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kmem"))
        .args(args)
        .output()
        .expect("run kmem")
}

/// What is missing for a boot, if anything (`kmem qemu --check`).
fn missing() -> Option<String> {
    let o = kmem(&["qemu", "--check"]);
    (!o.status.success()).then(|| String::from_utf8_lossy(&o.stderr).trim().to_string())
}

/// The in-kernel suite's cases, as the kernel prints them.
const CASES: [&str; 11] = [
    "kmalloc_storm",
    "atomic_allocations_in_interrupts",
    "page_orders_and_zones",
    "slab_cache_ctor_shrink_destroy",
    "mempool_irq_completion",
    "vmalloc_guard_page",
    "vfree_purge_tlb_shootdown",
    "ioremap_device",
    "percpu_gs",
    "slab_debug_reports",
    "global_allocator",
];

/// Whether a boot can run here; if not, says so (or fails under
/// `KMEM_REQUIRE_QEMU=1`).
fn can_boot(test: &str) -> bool {
    let Some(why) = missing() else { return true };
    if std::env::var("KMEM_REQUIRE_QEMU").as_deref() == Ok("1") {
        panic!("KMEM_REQUIRE_QEMU=1 but {why}");
    }
    // Straight to stderr, past the harness's capture of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: the kernel cannot boot here: {why}"
    );
    false
}

#[test]
fn the_kernel_boots_kmem_on_2_and_4_cpus_and_passes_its_suite() {
    if !can_boot("the_kernel_boots_kmem...") {
        return;
    }
    for smp in ["2", "4"] {
        let o = kmem(&["qemu", "--smp", smp, "--timeout", "240"]);
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "-smp {smp}: {err}\n{out}");
        let want = format!("smp: Brought up 1 node, {smp} CPUs");
        assert!(out.contains(&want), "-smp {smp}: no '{want}'\n{out}");
        for (i, case) in CASES.iter().enumerate() {
            let ok = format!("    ok {} {case}\n", i + 1);
            assert!(out.contains(&ok), "-smp {smp}: no '{}'\n{out}", ok.trim());
        }
        assert!(
            out.contains("# Totals: pass:11 fail:0 skip:0 total:11"),
            "{out}"
        );
        assert!(out.contains("\nok 1 kmem\n"), "{out}");
        // The oops for the guard page, in Linux's words, and survived.
        assert!(
            out.contains("BUG: unable to handle page fault for address: ffffc900"),
            "{out}"
        );
        assert!(
            out.contains("#PF: supervisor write access in kernel mode"),
            "{out}"
        );
        assert!(
            out.contains("is the guard page of the vmalloc area"),
            "{out}"
        );
        // The /proc files at the end.
        for f in ["buddyinfo", "slabinfo", "zoneinfo", "vmallocinfo"] {
            assert!(
                out.contains(&format!("# cat /proc/{f}\n")),
                "no /proc/{f}\n{out}"
            );
        }
        assert!(out.contains("Node 0, zone    DMA32"), "{out}");
        assert!(out.contains("slabinfo - version: 2.1"), "{out}");
        assert!(out.contains("phys=0x00000000fee00000 ioremap"), "{out}");
        // No terminal control sequences from the firmware.
        assert!(!out.contains('\x1b'), "escape sequences in the console");
    }
}

/// A machine without ACPI tables (QEMU's `acpi=off`, through
/// `--qemu-arg`): the kernel cannot find its CPUs, says so, and ends the
/// run with the failure status; `kmem qemu` quotes that line.
#[test]
fn a_machine_without_acpi_is_refused_with_the_kernels_reason() {
    if !can_boot("a_machine_without_acpi...") {
        return;
    }
    let o = kmem(&[
        "qemu",
        "--smp",
        "1",
        "--timeout",
        "240",
        "--qemu-arg=-machine",
        "--qemu-arg=acpi=off",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}\n{out}");
    assert!(out.contains("kmem-kernel: started by UEFI"), "{out}");
    assert!(!out.contains("# Totals"), "{out}");
    // The reason is one line, the last (a build progress line may come
    // first). Which of the kernel's two ACPI refusals it is depends on
    // whether the firmware still hands over a table without a MADT.
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "kmem: kmem-kernel failed (its suite, a panic, or a refusal to boot); its last line: "
        ),
        "{err}"
    );
    assert!(
        last.ends_with("ACPI: no MADT (APIC table): cannot find the CPUs")
            || last.contains("gives no ACPI tables"),
        "{err}"
    );
}

/// An argument QEMU refuses (`--qemu-arg` is passed on unchecked): QEMU
/// says why on its own stderr, and `kmem qemu` ends with one line and
/// exit status 1.
#[test]
fn a_bad_qemu_arg_ends_with_qemus_reason_and_one_line() {
    if !can_boot("a_bad_qemu_arg...") {
        return;
    }
    let o = kmem(&["qemu", "--smp", "1", "--qemu-arg=-no-such-option"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("-no-such-option"), "QEMU's own line: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kmem: QEMU exited with status 1 before the kernel reported"),
        "{err}"
    );
}

#[test]
fn bad_options_are_refused_with_one_line() {
    for (args, want) in [
        (&["qemu", "--smp", "0"][..], "--smp 0: give 1 to 64 CPUs"),
        (&["qemu", "--smp", "65"][..], "--smp 65: give 1 to 64 CPUs"),
        (
            &["qemu", "--mem", "128M"][..],
            "--mem 128M: give 256M to 64G",
        ),
        (&["qemu", "--mem", "lots"][..], "--mem lots:"),
        (
            &["qemu", "--timeout", "0"][..],
            "--timeout 0: give a number of seconds above 0",
        ),
    ] {
        let o = kmem(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with(&format!("kmem: {want}")), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    let o = kmem(&["qemu", "--kernel", "/nonexistent/kernel.efi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim(),
        "kmem: --kernel /nonexistent/kernel.efi: no such file"
    );
}
