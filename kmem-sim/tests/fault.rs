//! Faults in the vmap area end the process with Linux's page fault oops.
//!
//! A fault ends the process, so each test runs itself again as a child
//! (`--exact <test> --nocapture`) with `KMEM_SIM_FAULT_CHILD` naming the
//! test: the child makes the faulting access, the parent checks the
//! child's stderr and that it was killed by the right signal.

use kmem::platform::PgProt;
use kmem::{Platform, PAGE_SHIFT, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD: &str = "KMEM_SIM_FAULT_CHILD";
const SIGSEGV: i32 = 11;
const SIGABRT: i32 = 6;

/// What a child run of a test left: its stderr and the signal that
/// killed it.
struct Child {
    stderr: String,
    signal: Option<i32>,
}

impl Child {
    /// The address the child said it would touch ("fault address: ...").
    fn address(&self) -> &str {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("fault address: "))
            .unwrap_or_else(|| panic!("the child named no address:\n{}", self.stderr))
    }

    fn assert_has(&self, needle: &str) {
        assert!(
            self.stderr.contains(needle),
            "missing {needle:?} in the child's stderr:\n{}",
            self.stderr
        );
    }

    /// Index of the line that starts with `prefix`.
    fn line(&self, prefix: &str) -> usize {
        self.stderr
            .lines()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{}", self.stderr))
    }
}

/// In the parent: run test `name` as a child told to fault, and return
/// what it left. In that child: `None`, and the caller faults.
fn run_child(name: &str) -> Option<Child> {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        // No core file from the child's crash.
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the struct it is given.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
        return None;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .expect("running the test binary again");
    Some(Child {
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        signal: out.status.signal(),
    })
}

fn machine() -> SimPlatform {
    SimPlatform::new(SimConfig::new(2, pc_memory_map(16 << 20))).unwrap()
}

/// Map `pages` pages of RAM from 1 MiB at page `page` of the vmap area.
fn map(p: &SimPlatform, page: usize, pages: usize, prot: PgProt) -> usize {
    let va = p.vmap_range().unwrap().0 + page * PAGE_SIZE;
    p.map_kernel_range(va, 0x10_0000, pages * PAGE_SIZE, prot, PAGE_SHIFT)
        .unwrap();
    va
}

/// Tell the parent the address, then write a byte there.
fn write_at(addr: usize) -> ! {
    eprintln!("fault address: {addr:016x}");
    // SAFETY: the access under test: the address is in the vmap area,
    // where no Rust object lives and the page is unmapped or read-only, so
    // it changes nothing; it faults, and the fault ends the process.
    unsafe { (addr as *mut u8).write_volatile(0x5a) };
    unreachable!("the write to {addr:#x} did not fault");
}

/// Tell the parent the address, then read a byte there.
fn read_at(addr: usize) -> ! {
    eprintln!("fault address: {addr:016x}");
    // SAFETY: the access under test: the page is inaccessible (no Rust
    // object lives there), so the read faults and ends the process.
    let v = unsafe { (addr as *const u8).read_volatile() };
    unreachable!("the read of {addr:#x} did not fault (read {v})");
}

#[test]
fn a_write_one_byte_past_a_mapping_is_an_oops() {
    let Some(c) = run_child("a_write_one_byte_past_a_mapping_is_an_oops") else {
        let p = machine();
        let va = map(&p, 16, 2, PgProt::Kernel);
        // The two pages work.
        for off in [0, PAGE_SIZE, 2 * PAGE_SIZE - 1] {
            // SAFETY: inside the two pages just mapped read/write.
            unsafe { ((va + off) as *mut u8).write_volatile(1) };
        }
        let _cpu = p.bind(1);
        write_at(va + 2 * PAGE_SIZE);
    };
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    let addr = c.address();
    assert_eq!(addr.len(), 16);
    c.assert_has(&format!(
        "\nBUG: unable to handle page fault for address: {addr}\n"
    ));
    if cfg!(target_arch = "x86_64") {
        c.assert_has("\n#PF: supervisor write access in kernel mode\n");
        c.assert_has("\n#PF: error_code(0x0002) - not-present page\n");
        c.assert_has("\nOops: Oops: 0002 [#1] SMP\n");
        c.assert_has("\nRIP: 0010:0x");
    }
    c.assert_has("\nCPU: 1 UID: 0 PID: 2 Comm: cpu/1\n");
    c.assert_has(&format!("\nCR2: {addr}\n"));
    c.assert_has("\n---[ end trace 0000000000000000 ]---\n");
    c.assert_has("kmem-sim: the address is in the vmap area 0x");
    c.assert_has("kmem-sim: ending the process with SIGSEGV");
    // In Linux's order.
    let order = [
        "BUG: unable to handle page fault",
        "kmem-sim: the address is in the vmap area",
        "Oops: ",
        "CPU: 1",
        "CR2: ",
        "---[ end trace",
    ];
    let at: Vec<usize> = order.iter().map(|l| c.line(l)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}\n{}", c.stderr);
}

#[test]
fn a_read_after_unmap_is_an_oops() {
    let Some(c) = run_child("a_read_after_unmap_is_an_oops") else {
        let p = machine();
        let va = map(&p, 3, 1, PgProt::Kernel);
        // SAFETY: the page is mapped read/write.
        unsafe { (va as *mut u8).write_volatile(7) };
        // SAFETY: as above.
        assert_eq!(unsafe { (va as *const u8).read_volatile() }, 7);
        p.unmap_kernel_range(va, PAGE_SIZE);
        p.flush_tlb_kernel_range(va, va + PAGE_SIZE);
        // From a thread bound to no CPU.
        read_at(va + 100);
    };
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    let addr = c.address();
    c.assert_has(&format!(
        "BUG: unable to handle page fault for address: {addr}\n"
    ));
    if cfg!(target_arch = "x86_64") {
        c.assert_has("\n#PF: supervisor read access in kernel mode\n");
        c.assert_has("\n#PF: error_code(0x0000) - not-present page\n");
        c.assert_has("\nOops: Oops: 0000 [#1] SMP\n");
    }
    c.assert_has("\nkmem-sim: the faulting thread is not bound to a CPU of this machine\n");
}

#[test]
fn a_write_to_a_read_only_mapping_is_a_permissions_violation() {
    let Some(c) = run_child("a_write_to_a_read_only_mapping_is_a_permissions_violation") else {
        let p = machine();
        let va = map(&p, 5, 1, PgProt::KernelRo);
        // SAFETY: the page is mapped read-only: reads work.
        let _ = unsafe { (va as *const u8).read_volatile() };
        let _cpu = p.bind(0);
        write_at(va + 8);
    };
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    c.assert_has(&format!(
        "BUG: unable to handle page fault for address: {}\n",
        c.address()
    ));
    if cfg!(target_arch = "x86_64") {
        c.assert_has("\n#PF: supervisor write access in kernel mode\n");
        c.assert_has("\n#PF: error_code(0x0003) - permissions violation\n");
        c.assert_has("\nOops: Oops: 0003 [#1] SMP\n");
    }
    c.assert_has("\nCPU: 0 UID: 0 PID: 1 Comm: cpu/0\n");
}

/// A describer as the core would install one: the area from `ctx`.
fn describe(ctx: usize, addr: usize, out: &mut dyn core::fmt::Write) {
    let start = ctx;
    let end = start + 5 * PAGE_SIZE;
    let _ = writeln!(
        out,
        "vmalloc: address {addr:#x} is in the guard page of area {start:#x}-{end:#x} size=20480 caller=test_driver_init"
    );
    let _ = write!(out, "vmalloc: second line without a newline");
}

#[test]
fn the_describer_says_what_the_address_hit() {
    let Some(c) = run_child("the_describer_says_what_the_address_hit") else {
        let p = machine();
        // A 4-page area with its guard page at pages 20..25.
        let va = map(&p, 20, 4, PgProt::Kernel);
        p.set_fault_describer(describe, va);
        let _cpu = p.bind(0);
        write_at(va + 4 * PAGE_SIZE + 16);
    };
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    let addr = u64::from_str_radix(c.address(), 16).unwrap();
    let start = addr - 4 * PAGE_SIZE as u64 - 16;
    let end = start + 5 * PAGE_SIZE as u64;
    c.assert_has(&format!(
        "\nvmalloc: address {addr:#x} is in the guard page of area {start:#x}-{end:#x} size=20480 caller=test_driver_init\n"
    ));
    c.assert_has("\nvmalloc: second line without a newline\n");
    assert!(!c
        .stderr
        .contains("kmem-sim: the address is in the vmap area"));
    // Where Linux prints the page-table walk: after the #PF lines, before
    // the Oops line.
    assert!(c.line("BUG: unable") < c.line("vmalloc: address"));
    assert!(c.line("vmalloc: second") < c.line("Oops: "));
}

#[test]
fn a_cleared_describer_is_not_called() {
    let Some(c) = run_child("a_cleared_describer_is_not_called") else {
        let p = machine();
        p.set_fault_describer(describe, 0);
        p.clear_fault_describer();
        let va = p.vmap_range().unwrap().0;
        write_at(va);
    };
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    assert!(!c.stderr.contains("vmalloc:"), "{}", c.stderr);
    c.assert_has("kmem-sim: the address is in the vmap area 0x");
}

/// A describer naming which machine it belongs to.
fn which(ctx: usize, _addr: usize, out: &mut dyn core::fmt::Write) {
    let _ = write!(out, "describer of machine {ctx}");
}

#[test]
fn each_machine_reports_its_own_window() {
    let Some(c) = run_child("each_machine_reports_its_own_window") else {
        let p1 = machine();
        let p2 = machine();
        let p3 = machine();
        p1.set_fault_describer(which, 1);
        p2.set_fault_describer(which, 2);
        p3.set_fault_describer(which, 3);
        drop(p1);
        // Likely in p1's old slot: it must not inherit p1's describer.
        let p4 = machine();
        p4.set_fault_describer(which, 4);
        let _cpu = p2.bind(1);
        let _ = (&p3, &p4);
        write_at(p2.vmap_range().unwrap().0 + 7 * PAGE_SIZE);
    };
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    c.assert_has("\ndescriber of machine 2\n");
    for other in ["machine 1\n", "machine 3\n", "machine 4\n"] {
        assert!(!c.stderr.contains(other), "{}", c.stderr);
    }
    c.assert_has("\nCPU: 1 UID: 0 PID: 2 Comm: cpu/1\n");
}

#[test]
fn a_reused_slot_reports_the_new_machine() {
    let Some(c) = run_child("a_reused_slot_reports_the_new_machine") else {
        let p1 = machine();
        p1.set_fault_describer(which, 1);
        let p2 = machine();
        drop(p1);
        let p3 = machine();
        p3.set_fault_describer(which, 3);
        let _ = &p2;
        // A thread bound to p2 faults in p3's window: not its machine.
        let _cpu = p2.bind(0);
        write_at(p3.vmap_range().unwrap().1 - 1);
    };
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    c.assert_has("\ndescriber of machine 3\n");
    assert!(!c.stderr.contains("machine 1\n"), "{}", c.stderr);
    c.assert_has("\nkmem-sim: the faulting thread is not bound to a CPU of this machine\n");
}

#[test]
fn a_fault_outside_every_window_is_not_a_kmem_oops() {
    let Some(c) = run_child("a_fault_outside_every_window_is_not_a_kmem_oops") else {
        let _p = machine();
        // SAFETY: a fresh anonymous inaccessible page at an address the
        // kernel picks; nothing else uses it.
        let page = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        read_at(page as usize);
    };
    // The default action, as without the handler.
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    c.address();
    assert!(!c.stderr.contains("BUG: unable to handle"), "{}", c.stderr);
    assert!(!c.stderr.contains("Oops"), "{}", c.stderr);
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 64]);
    if buf[0] == u64::MAX {
        return 0;
    }
    recurse(n + 1) + std::hint::black_box(buf[1])
}

#[test]
fn rusts_stack_overflow_report_still_works() {
    let Some(c) = run_child("rusts_stack_overflow_report_still_works") else {
        let _p = machine();
        let t = std::thread::Builder::new()
            .name("deep".into())
            .stack_size(256 << 10)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = t.join();
        unreachable!("the recursion ended");
    };
    // Rust's handler got the fault: its message and its abort.
    c.assert_has("thread 'deep'");
    c.assert_has("has overflowed its stack");
    assert_eq!(c.signal, Some(SIGABRT), "{}", c.stderr);
    assert!(!c.stderr.contains("BUG: unable to handle"), "{}", c.stderr);
}

#[test]
fn a_write_to_a_read_only_device_mapping_faults() {
    let Some(c) = run_child("a_write_to_a_read_only_device_mapping_faults") else {
        let mut cfg = SimConfig::new(1, pc_memory_map(16 << 20));
        cfg.devices = vec![kmem_sim::DeviceConfig::default()];
        let p = SimPlatform::new(cfg).unwrap();
        let va = p.vmap_range().unwrap().0 + 9 * PAGE_SIZE;
        p.map_kernel_range(
            va,
            kmem_sim::DEFAULT_DEVICE_BASE,
            PAGE_SIZE,
            PgProt::KernelRo,
            PAGE_SHIFT,
        )
        .unwrap();
        // SAFETY: the register page is mapped read-only: reads work.
        let id = unsafe { ((va + kmem_sim::echo::ID) as *const u32).read_volatile() };
        assert_eq!(id, kmem_sim::echo::ID_VALUE);
        let _cpu = p.bind(0);
        write_at(va + kmem_sim::echo::DOORBELL);
    };
    assert_eq!(c.signal, Some(SIGSEGV), "{}", c.stderr);
    c.assert_has(&format!(
        "BUG: unable to handle page fault for address: {}\n",
        c.address()
    ));
    if cfg!(target_arch = "x86_64") {
        c.assert_has("\n#PF: error_code(0x0003) - permissions violation\n");
    }
}
