//! The GDT, the IDT and the trap and interrupt entry code
//! (`arch/x86/entry/entry_64.S`, `arch/x86/kernel/traps.c`,
//! `arch/x86/mm/fault.c`).
//!
//! Every vector's stub saves all general registers into a [`Frame`] and
//! calls [`trap`]. A kernel page fault prints Linux's oops ("BUG: unable
//! to handle page fault for address: ...", the `#PF` lines, what kmem
//! knows of the address: the vmalloc area and whether it is its guard
//! page), then dies, unless the faulting instruction has an exception
//! table entry ([`probe_write`], as Linux's `copy_to_kernel_nofault()`),
//! which resumes at its fixup.

use crate::acpi::NR_CPUS;
use crate::apic;
use crate::smp;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Kernel code selector (`__KERNEL_CS`, GDT entry 2).
pub const KERNEL_CS: u16 = 0x10;
/// Kernel data selector (`__KERNEL_DS`, GDT entry 3).
pub const KERNEL_DS: u16 = 0x18;
/// The TSS selector (`GDT_ENTRY_TSS` = 8).
const TSS_SEL: u16 = 0x40;
/// GDT entries: Linux's x86_64 layout up to the TSS (entries 8 and 9).
const GDT_ENTRIES: usize = 10;

/// Each CPU's GDT (`gdt_page`, per CPU as in Linux: each holds its own
/// TSS, which `ltr` marks busy). Entry 1 is `__KERNEL32_CS`, 2
/// `__KERNEL_CS`, 3 `__KERNEL_DS`, with the accessed bit set as Linux sets
/// it, so the CPU never writes them; the user segments are absent.
static GDT: [[AtomicU64; GDT_ENTRIES]; NR_CPUS] =
    [const { [const { AtomicU64::new(0) }; GDT_ENTRIES] }; NR_CPUS];

#[repr(C, packed)]
struct DescPtr {
    limit: u16,
    base: u64,
}

/// The 64-bit TSS (`struct x86_hw_tss`): only IST1 is used, for double
/// faults.
#[repr(C, packed)]
struct Tss {
    _reserved0: u32,
    sp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    io_bitmap_base: u16,
}

/// Per-CPU TSSs, written by each CPU for itself before `ltr`.
struct Tsss([core::cell::UnsafeCell<Tss>; NR_CPUS]);
// SAFETY: CPU `c` writes only `TSS[c]`, once, before loading it; the CPU
// reads it from then on.
unsafe impl Sync for Tsss {}
static TSS: Tsss = Tsss(
    [const {
        core::cell::UnsafeCell::new(Tss {
            _reserved0: 0,
            sp: [0; 3],
            _reserved1: 0,
            ist: [0; 7],
            _reserved2: 0,
            _reserved3: 0,
            io_bitmap_base: 104,
        })
    }; NR_CPUS],
);

/// Each CPU's double-fault stack (IST1; Linux's `DF_STACK`).
#[repr(C, align(16))]
struct DfStacks([[u8; DF_STACK_SIZE]; NR_CPUS]);
const DF_STACK_SIZE: usize = 8192;
struct DfStacksCell(core::cell::UnsafeCell<DfStacks>);
// SAFETY: only the CPUs use them, each its own, as a stack.
unsafe impl Sync for DfStacksCell {}
static DF_STACKS: DfStacksCell = DfStacksCell(core::cell::UnsafeCell::new(DfStacks(
    [[0; DF_STACK_SIZE]; NR_CPUS],
)));

/// The IDT: 256 gates, filled once by the boot CPU.
static IDT: [AtomicU64; 512] = [const { AtomicU64::new(0) }; 512];

/// The registers a stub saves, in the order they sit on the stack.
#[repr(C)]
#[allow(missing_docs)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// One stub per vector, 0 to 255: those for which the CPU pushes no
// error code push a zero in its place, so every frame has the same shape.
// A vector nothing raises still has a stub (a stray one is reported, not
// a #NP that kills the machine).
global_asm!(
    ".irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255",
    "kmem_isr_\\v:",
    "push 0",
    "push \\v",
    "jmp kmem_isr_common",
    ".endr",
    ".irp v, 8,10,11,12,13,14,17,21,29,30",
    "kmem_isr_\\v:",
    "push \\v",
    "jmp kmem_isr_common",
    ".endr",
    ".section .rdata",
    ".balign 8",
    ".global kmem_isr_table",
    "kmem_isr_table:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255",
    ".quad kmem_isr_\\v",
    ".endr",
    ".text",
);

extern "C" {
    /// The stubs' addresses, vector by vector.
    static kmem_isr_table: [usize; 256];
}

// The common tail: save, call `trap` (System V ABI), restore, return.
global_asm!(
    "kmem_isr_common:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "cld",
    "call {trap}",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    trap = sym trap,
);

// `probe_write(addr, byte)`: one byte store with an exception table entry.
// Returns 0, or 1 when the store faulted (the page-fault handler resumed
// at the fixup). System V ABI: `addr` in rdi, `byte` in sil.
global_asm!(
    ".global kmem_probe_write",
    "kmem_probe_write:",
    "xor eax, eax",
    ".global kmem_probe_insn",
    "kmem_probe_insn:",
    "mov byte ptr [rdi], sil",
    "ret",
    ".global kmem_probe_fixup",
    "kmem_probe_fixup:",
    "mov eax, 1",
    "ret",
);

extern "sysv64" {
    fn kmem_probe_write(addr: usize, v: u8) -> u32;
}
extern "C" {
    static kmem_probe_insn: u8;
    static kmem_probe_fixup: u8;
}

/// Write `v` at `addr`, surviving a page fault (which is reported as an
/// oops would be, and counted). Returns whether the write faulted.
///
/// # Safety
///
/// If `addr` is mapped, writing a byte there is sound.
pub unsafe fn probe_write(addr: usize, v: u8) -> bool {
    // SAFETY: the caller's promise; a fault resumes at the fixup.
    unsafe { kmem_probe_write(addr, v) != 0 }
}

/// Page faults caught by an exception table entry so far.
pub static FIXED_FAULTS: AtomicUsize = AtomicUsize::new(0);
/// Oopses printed so far (`die_counter`).
static DIE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fill the IDT (boot CPU, once): an interrupt gate per vector, the
/// double fault's on IST1 (its own stack: a kernel stack overflow faults
/// while pushing the page fault's frame).
pub fn init() {
    for v in 0..256 {
        // SAFETY: the table the assembly above defines, 256 addresses.
        let h = unsafe { kmem_isr_table[v] } as u64;
        let ist = u64::from(v == 8);
        let lo = (h & 0xffff)
            | (u64::from(KERNEL_CS) << 16)
            | (ist << 32)
            | (0x8e << 40) // present, DPL 0, 64-bit interrupt gate
            | ((h >> 16) & 0xffff) << 48;
        IDT[2 * v].store(lo, Relaxed);
        IDT[2 * v + 1].store(h >> 32, Relaxed);
    }
}

/// Load CPU `cpu`'s GDT (its TSS with the double-fault stack), reload
/// every segment register from it, load the TSS and the IDT. FS and GS
/// get the null selector; their bases are set through MSRs afterwards.
pub fn load(cpu: usize) {
    let g = &GDT[cpu];
    g[1].store(0x00cf_9b00_0000_ffff, Relaxed);
    g[2].store(0x00af_9b00_0000_ffff, Relaxed);
    g[3].store(0x00cf_9300_0000_ffff, Relaxed);
    let tss = TSS.0[cpu].get();
    // SAFETY: this CPU's own TSS, not loaded yet; its IST1 is the top of
    // this CPU's double-fault stack.
    unsafe {
        let top = core::ptr::addr_of!((*DF_STACKS.0.get()).0[cpu]) as u64 + DF_STACK_SIZE as u64;
        core::ptr::addr_of_mut!((*tss).ist).write_unaligned([top, 0, 0, 0, 0, 0, 0]);
    }
    let base = tss as u64;
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    g[8].store(
        (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | 0x89 << 40 // present, 64-bit TSS (available)
            | ((base >> 24) & 0xff) << 56,
        Relaxed,
    );
    g[9].store(base >> 32, Relaxed);
    let gdt = DescPtr {
        limit: (core::mem::size_of_val(g) - 1) as u16,
        base: g.as_ptr() as u64,
    };
    let idt = DescPtr {
        limit: (core::mem::size_of_val(&IDT) - 1) as u16,
        base: IDT.as_ptr() as u64,
    };
    // SAFETY: both tables are static and well formed; the far return
    // reloads CS with the GDT's code segment, the data segments follow,
    // and the TSS descriptor is this CPU's and not busy.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdt}]",
            "push {cs}",
            "lea {t}, [rip + 2f]",
            "push {t}",
            "retfq",
            "2:",
            "mov {t:e}, {ds}",
            "mov ds, {t:e}",
            "mov es, {t:e}",
            "mov ss, {t:e}",
            "xor {t:e}, {t:e}",
            "mov fs, {t:e}",
            "mov gs, {t:e}",
            "mov {t:e}, {tr}",
            "ltr {t:x}",
            "lidt [{idt}]",
            gdt = in(reg) &gdt,
            idt = in(reg) &idt,
            cs = const KERNEL_CS as u64,
            ds = const KERNEL_DS as u32,
            tr = const TSS_SEL as u32,
            t = out(reg) _,
        )
    };
}

/// Linux's exception names (`arch/x86/kernel/traps.c`).
fn trap_name(v: u64) -> &'static str {
    match v {
        0 => "divide error",
        1 => "debug",
        2 => "nmi",
        3 => "int3",
        4 => "overflow",
        5 => "bounds",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack segment",
        13 => "general protection fault",
        16 => "coprocessor error",
        17 => "alignment check",
        18 => "machine check",
        19 => "simd exception",
        _ => "exception",
    }
}

/// Every vector's handler.
extern "sysv64" fn trap(f: &mut Frame) {
    let v = f.vector;
    if v >= 32 {
        let me = smp::this_cpu();
        me.irq_depth.fetch_add(1, Relaxed);
        match v as u8 {
            apic::LOCAL_TIMER_VECTOR => smp::timer_interrupt(),
            apic::CALL_FUNCTION_SINGLE_VECTOR => smp::call_function_interrupt(),
            apic::CALL_FUNCTION_VECTOR => smp::flush_tlb_interrupt(),
            apic::RESCHEDULE_VECTOR | apic::SPURIOUS_APIC_VECTOR => {}
            // As Linux's `spurious_interrupt()` for a vector with no
            // handler: say so, acknowledge, go on.
            _ => crate::pr_info!(
                "spurious APIC interrupt through vector {v:02x} on CPU#{}",
                me.cpu.load(Relaxed)
            ),
        }
        me.irq_depth.fetch_sub(1, Relaxed);
        if v as u8 != apic::SPURIOUS_APIC_VECTOR {
            apic::eoi();
        }
        return;
    }
    if v == 14 {
        page_fault(f);
        return;
    }
    if v == 8 {
        // A page fault that could not push its frame: the stack ran into
        // the guard page below it (`handle_stack_overflow()`).
        let cr2 = crate::arch::read_cr2() as usize;
        let me = smp::this_cpu();
        let lo = me.stack_lo.load(Relaxed);
        if lo != 0 && cr2 < lo && cr2 >= lo - 4096 {
            crate::pr_info!(
                "BUG: stack guard page was hit at {cr2:#018x} (stack is {lo:#018x}..{:#018x})",
                me.stack_hi.load(Relaxed)
            );
        }
    }
    die(f, trap_name(v));
}

fn page_fault(f: &mut Frame) {
    let addr = crate::arch::read_cr2() as usize;
    let e = f.error;
    crate::pr_info!("BUG: unable to handle page fault for address: {addr:016x}");
    // Formatted without allocating: the fault may be inside the allocator.
    let mut pf = kmem::seq_buf::SeqBuf::<160>::new();
    let _ = core::fmt::Write::write_fmt(&mut pf, format_args!("{}", kmem::vmalloc::PfErrorCode(e)));
    for line in pf.as_str().lines() {
        crate::pr_info!("{line}");
    }
    if let Some(pte) = crate::paging::lookup(addr) {
        crate::pr_info!("PTE {pte:x}");
    }
    // What kmem knows of the address: its vmalloc area, a guard page.
    if let Some(k) = crate::KMEM.get() {
        let mut buf = kmem::seq_buf::SeqBuf::<1024>::new();
        let _ = k.describe_vmalloc_addr(addr, &mut buf);
        for line in buf.as_str().lines() {
            crate::pr_info!("{line}");
        }
    }
    let (insn, fixup) = (
        &raw const kmem_probe_insn as u64,
        &raw const kmem_probe_fixup as u64,
    );
    if f.rip == insn {
        // Linux's exception table: this instruction may fault; resume at
        // its fixup instead of dying.
        crate::pr_info!(
            "kmem-kernel: fault at {:#x} fixed up (exception table)",
            f.rip
        );
        FIXED_FAULTS.fetch_add(1, Relaxed);
        f.rip = fixup;
        return;
    }
    die(f, "Oops");
}

/// `die()`: the oops's header and registers, then the panic that ends the
/// machine (QEMU exits with a failure status).
fn die(f: &Frame, what: &str) -> ! {
    let n = DIE_COUNTER.fetch_add(1, Relaxed) + 1;
    let cpu = smp::this_cpu().cpu.load(Relaxed);
    crate::pr_info!("{what}: {:04x} [#{n}] SMP NOPTI", f.error);
    crate::pr_info!("CPU: {cpu} UID: 0 PID: 0 Comm: swapper/{cpu} Not tainted kmem-kernel");
    crate::pr_info!("RIP: {:04x}:{:#018x}", f.cs, f.rip);
    crate::pr_info!("RSP: {:04x}:{:016x} EFLAGS: {:08x}", f.ss, f.rsp, f.rflags);
    crate::pr_info!(
        "RAX: {:016x} RBX: {:016x} RCX: {:016x}",
        f.rax,
        f.rbx,
        f.rcx
    );
    crate::pr_info!(
        "RDX: {:016x} RSI: {:016x} RDI: {:016x}",
        f.rdx,
        f.rsi,
        f.rdi
    );
    crate::pr_info!("RBP: {:016x} R08: {:016x} R09: {:016x}", f.rbp, f.r8, f.r9);
    crate::pr_info!(
        "R10: {:016x} R11: {:016x} R12: {:016x}",
        f.r10,
        f.r11,
        f.r12
    );
    crate::pr_info!(
        "R13: {:016x} R14: {:016x} R15: {:016x}",
        f.r13,
        f.r14,
        f.r15
    );
    crate::pr_info!(
        "CR2: {:016x} CR3: {:016x}",
        crate::arch::read_cr2(),
        crate::arch::read_cr3()
    );
    crate::pr_info!("---[ end trace 0000000000000000 ]---");
    crate::pr_info!("Kernel panic - not syncing: Fatal exception");
    crate::arch::qemu_exit(crate::EXIT_FAILURE)
}
