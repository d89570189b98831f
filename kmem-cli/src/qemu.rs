//! `kmem qemu`: build the bare-metal kernel (`kmem-kernel`, a UEFI
//! application) and boot it under QEMU with OVMF, printing its serial
//! console: the boot log, the KTAP results of its suite and its `/proc`
//! files. The exit status is the suite's: 0 when every case passed.
//!
//! QEMU emulates the CPUs (TCG): KVM is not always usable where kmem is
//! developed, and TCG behaves the same everywhere. It is started with
//! `-serial stdio` and the `isa-debug-exit` device,
//! through which the kernel ends the run: it writes 0x10 (QEMU exits with
//! 33) when the suite passed, 0x11 (35) otherwise. An `ivshmem-plain`
//! device gives the ioremap case a BAR of real device memory. The
//! firmware's screen-control sequences are dropped from the output.

use crate::Failure;
use clap::Args;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kernel's `NR_CPUS`.
const MAX_SMP: usize = 64;

#[derive(Args, Clone)]
pub(crate) struct QemuArgs {
    /// CPUs to give the machine (QEMU's -smp), 1 to 64 (the kernel's NR_CPUS).
    #[arg(long, default_value_t = 2)]
    smp: usize,
    /// RAM (QEMU's -m), 256M to 64G.
    #[arg(long, default_value = "1G")]
    mem: String,
    /// Boot this EFI application instead of building kmem-kernel from the
    /// source tree kmem was built from.
    #[arg(long, value_name = "FILE.efi")]
    kernel: Option<PathBuf>,
    /// Seconds before QEMU is stopped and the run fails.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Only say whether QEMU, OVMF and the x86_64-unknown-uefi target are
    /// here (exit 0) or what is missing (exit 1).
    #[arg(long)]
    check: bool,
    /// One more argument for QEMU, after kmem's own (repeat it for more:
    /// `--qemu-arg=-s --qemu-arg=-S` to wait for gdb,
    /// `--qemu-arg=-machine --qemu-arg=acpi=off` for a machine without
    /// ACPI tables).
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    qemu_args: Vec<String>,
}

/// Where distributions put OVMF: (code, vars) pairs, the variables copied
/// for each run.
const OVMF: [(&str, &str); 4] = [
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
];

fn find_ovmf() -> Result<(PathBuf, PathBuf), String> {
    if let Ok(code) = std::env::var("KMEM_OVMF_CODE") {
        let vars = std::env::var("KMEM_OVMF_VARS")
            .map_err(|_| "KMEM_OVMF_CODE is set but KMEM_OVMF_VARS is not: set both".to_string())?;
        for f in [&code, &vars] {
            if !Path::new(f).is_file() {
                return Err(format!(
                    "{f} (from KMEM_OVMF_CODE/KMEM_OVMF_VARS) is not a file"
                ));
            }
        }
        return Ok((code.into(), vars.into()));
    }
    OVMF.iter()
        .find(|(c, v)| Path::new(c).exists() && Path::new(v).exists())
        .map(|(c, v)| (c.into(), v.into()))
        .ok_or_else(|| {
            "OVMF firmware not found: install it (Debian: apt install ovmf) or set KMEM_OVMF_CODE and KMEM_OVMF_VARS".into()
        })
}

fn qemu_binary() -> Result<String, String> {
    let q = "qemu-system-x86_64";
    match Command::new(q).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(q.into()),
        _ => Err(format!(
            "{q} not found: install QEMU (Debian: apt install qemu-system-x86)"
        )),
    }
}

/// The kmem-kernel sources next to this crate's.
fn kernel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kmem-kernel")
}

fn uefi_target_installed() -> Result<(), String> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustc not found ({e}): kmem qemu builds the kernel with cargo"))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib/x86_64-unknown-uefi")
        .exists()
    {
        Ok(())
    } else {
        Err("the x86_64-unknown-uefi target is not installed: rustup target add x86_64-unknown-uefi".into())
    }
}

/// Build kmem-kernel (release) and return its EFI application.
fn build_kernel() -> Result<PathBuf, Failure> {
    let dir = kernel_dir();
    if !dir.join("Cargo.toml").exists() {
        return Err(Failure::runtime(format!(
            "the kmem-kernel sources are not at {}: give a built kernel with --kernel FILE.efi",
            dir.display()
        )));
    }
    uefi_target_installed().map_err(Failure::runtime)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("kmem: building kmem-kernel (cargo build --release, x86_64-unknown-uefi)");
    let st = Command::new(cargo)
        .current_dir(&dir)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "x86_64-unknown-uefi",
        ])
        // The outer build's settings are for the host.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .map_err(|e| Failure::runtime(format!("cannot run cargo: {e}")))?;
    if !st.success() {
        return Err(Failure::runtime(
            "building kmem-kernel failed (its errors are above)",
        ));
    }
    Ok(dir.join("target/x86_64-unknown-uefi/release/kmem-kernel.efi"))
}

/// Drops the firmware's terminal control sequences (`ESC [ ... letter`)
/// and carriage returns from the console stream.
#[derive(Default)]
struct ConsoleFilter {
    state: u8,
}

impl ConsoleFilter {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            match (self.state, b) {
                (0, 0x1b) => self.state = 1,
                (0, b'\r') => {}
                (0, _) => out.push(b),
                (1, b'[') => self.state = 2,
                (1, _) => self.state = 0,
                // Parameters and intermediates until a final byte.
                (_, 0x20..=0x3f) => {}
                _ => self.state = 0,
            }
        }
    }
}

pub(crate) fn run(args: &QemuArgs) -> Result<(), Failure> {
    if !(1..=MAX_SMP).contains(&args.smp) {
        return Err(Failure::usage(format!(
            "--smp {}: give 1 to {MAX_SMP} CPUs (the kernel's NR_CPUS)",
            args.smp
        )));
    }
    let mem = crate::size_arg("mem", &args.mem)?;
    if !(256 << 20..=64 << 30).contains(&mem) {
        return Err(Failure::usage(format!(
            "--mem {}: give 256M to 64G",
            args.mem
        )));
    }
    if args.timeout == 0 {
        return Err(Failure::usage(
            "--timeout 0: give a number of seconds above 0",
        ));
    }
    if let Some(k) = args.kernel.as_ref().filter(|k| !k.is_file()) {
        return Err(Failure::usage(format!(
            "--kernel {}: no such file",
            k.display()
        )));
    }
    if args.check {
        let missing: Vec<String> = [
            qemu_binary().err(),
            find_ovmf().err(),
            if args.kernel.is_some() {
                None
            } else {
                uefi_target_installed().err()
            },
        ]
        .into_iter()
        .flatten()
        .collect();
        if missing.is_empty() {
            println!("kmem qemu: QEMU, OVMF and the kernel's build target are here");
            return Ok(());
        }
        return Err(Failure::runtime(missing.join("; ")));
    }
    let qemu = qemu_binary().map_err(Failure::runtime)?;
    let (code, vars) = find_ovmf().map_err(Failure::runtime)?;
    let efi = match &args.kernel {
        Some(k) => k.clone(),
        None => build_kernel()?,
    };
    // A FAT directory QEMU presents as the boot disk, and a private copy of
    // the firmware's variables.
    let tmp = std::env::temp_dir().join(format!("kmem-qemu-{}", std::process::id()));
    let boot = tmp.join("esp/EFI/BOOT");
    std::fs::create_dir_all(&boot)
        .and_then(|()| std::fs::copy(&efi, boot.join("BOOTX64.EFI")))
        .and_then(|_| std::fs::copy(&vars, tmp.join("vars.fd")))
        .map_err(|e| Failure::runtime(format!("cannot prepare {}: {e}", tmp.display())))?;
    let res = boot_qemu(&qemu, &code, &tmp, args, mem);
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

fn boot_qemu(
    qemu: &str,
    code: &Path,
    tmp: &Path,
    args: &QemuArgs,
    mem: u64,
) -> Result<(), Failure> {
    let mut child = Command::new(qemu)
        .args(["-machine", "q35,accel=tcg", "-cpu", "max"])
        .args(["-m", &format!("{}M", mem >> 20)])
        .args(["-smp", &args.smp.to_string()])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,file={}",
            tmp.join("vars.fd").display()
        ))
        .arg("-drive")
        .arg(format!(
            "format=raw,file=fat:rw:{}",
            tmp.join("esp").display()
        ))
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-object", "memory-backend-ram,id=shm,size=1M"])
        .args(["-device", "ivshmem-plain,memdev=shm"])
        .args(&args.qemu_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::runtime(format!("cannot start {qemu}: {e}")))?;
    let mut pipe = child.stdout.take().expect("piped stdout");
    // The console, filtered, as it comes; the last line is kept for the
    // failure report.
    let copier = std::thread::spawn(move || {
        let mut f = ConsoleFilter::default();
        let mut buf = [0u8; 4096];
        let mut out = Vec::new();
        let mut line = Vec::new();
        let mut last = String::new();
        let stdout = std::io::stdout();
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.clear();
            f.push(&buf[..n], &mut out);
            for &b in &out {
                if b == b'\n' {
                    let l = String::from_utf8_lossy(&line);
                    if !l.trim().is_empty() {
                        last = l.trim().to_string();
                    }
                    line.clear();
                } else {
                    line.push(b);
                }
            }
            let mut o = stdout.lock();
            let _ = o.write_all(&out);
            let _ = o.flush();
        }
        // A last line without its newline (a panic cut short) counts too.
        let l = String::from_utf8_lossy(&line);
        if !l.trim().is_empty() {
            last = l.trim().to_string();
        }
        last
    });
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let last = copier.join().unwrap_or_default();
                return Err(Failure::runtime(format!(
                    "QEMU did not finish within {} s: raise --timeout, or see where the console stops (its last line: {last})",
                    args.timeout
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(Failure::runtime(format!("waiting for QEMU: {e}"))),
        }
    };
    let last = copier.join().unwrap_or_default();
    match status.and_then(|s| s.code()) {
        Some(33) => Ok(()),
        Some(35) => Err(Failure::runtime(format!(
            "kmem-kernel failed (its suite, a panic, or a refusal to boot); its last line: {last}"
        ))),
        None => Err(Failure::runtime(
            "QEMU was killed by a signal before the kernel reported",
        )),
        Some(c) => Err(Failure::runtime(format!(
            "QEMU exited with status {c} before the kernel reported (it could not start, or the machine reset); the console's last line: {last}"
        ))),
    }
}
