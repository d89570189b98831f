//! x86_64 instructions the kernel needs, each a small wrapper around one
//! or two instructions (`arch/x86/include/asm/{io,msr,special_insns}.h`).
//!
//! These are `unsafe` where the instruction can break the machine (port
//! and MSR writes, control registers, interrupt flag), safe where it only
//! reads state.

use core::arch::asm;

/// `IA32_FS_BASE`: this kernel's own per-CPU record ([`crate::smp::CpuLocal`]).
pub const MSR_FS_BASE: u32 = 0xc000_0100;
/// `IA32_GS_BASE`: `per_cpu_offset(cpu)`, as Linux loads it.
pub const MSR_GS_BASE: u32 = 0xc000_0101;
/// `IA32_EFER`.
pub const MSR_EFER: u32 = 0xc000_0080;
/// `IA32_PAT`.
pub const MSR_PAT: u32 = 0x277;
/// `EFER.NXE`: the no-execute bit in page tables.
pub const EFER_NXE: u64 = 1 << 11;

/// Linux's PAT (`pat_bp_init()`): WB, WC, UC-, UC, WB, WP, UC-, WT. With it a
/// PTE's `PWT` alone selects write-combining, `PCD` alone UC-, both UC.
pub const LINUX_PAT: u64 = 0x0407_0506_0007_0106;

/// `outb`.
///
/// # Safety
///
/// Writing a port drives a device: the caller knows what is there.
#[inline]
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: the caller's promise; `out` touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// `inb`.
///
/// # Safety
///
/// Reading some ports has side effects on the device.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller's promise; `in` touches no memory.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// `outl`.
///
/// # Safety
///
/// As [`outb`].
#[inline]
pub unsafe fn outl(port: u16, v: u32) {
    // SAFETY: the caller's promise.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    };
}

/// `inl`.
///
/// # Safety
///
/// As [`inb`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: the caller's promise.
    unsafe {
        asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// `rdmsr`.
///
/// # Safety
///
/// `msr` exists on this CPU (else #GP).
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller's promise.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `wrmsr`.
///
/// # Safety
///
/// `msr` exists and the value keeps the machine sound (a base register
/// points at what the code reaching through it expects).
#[inline]
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// `cpuid(leaf, subleaf)` as `[eax, ebx, ecx, edx]`.
#[inline]
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// `rdtsc`.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// `RDRAND` (up to ten tries, as Linux's `rdrand_long()`), if the CPU has it.
pub fn rdrand() -> Option<u64> {
    if cpuid(1, 0)[2] & (1 << 30) == 0 {
        return None;
    }
    for _ in 0..10 {
        let v: u64;
        let ok: u8;
        // SAFETY: CPUID said RDRAND exists; it writes only its registers.
        unsafe {
            asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
        };
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

/// The `RFLAGS` register.
#[inline]
pub fn read_rflags() -> u64 {
    let f: u64;
    // SAFETY: pushfq/pop reads the flags through the stack only.
    unsafe { asm!("pushfq", "pop {}", out(reg) f, options(nomem, preserves_flags)) };
    f
}

/// `RFLAGS.IF`.
pub const X86_EFLAGS_IF: u64 = 1 << 9;

/// `local_irq_save()`: the flags, then `cli`.
#[inline]
pub fn local_irq_save() -> u64 {
    let f: u64;
    // SAFETY: disabling interrupts is always sound; it is what a CPU-local
    // section needs. No `nomem`: it orders memory accesses like a barrier.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) f) };
    f
}

/// `local_irq_restore(flags)`: interrupts back on if `flags` had them on.
#[inline]
pub fn local_irq_restore(flags: u64) {
    if flags & X86_EFLAGS_IF != 0 {
        // SAFETY: the section that turned them off ends here.
        unsafe { asm!("sti") };
    }
}

/// `local_irq_enable()`.
///
/// # Safety
///
/// The IDT and every handler it names are ready on this CPU.
#[inline]
pub unsafe fn local_irq_enable() {
    // SAFETY: the caller's promise.
    unsafe { asm!("sti") };
}

/// `safe_halt()`: `sti; hlt` as one step, so an interrupt that arrives
/// between the two still wakes the `hlt`.
///
/// # Safety
///
/// As [`local_irq_enable`].
#[inline]
pub unsafe fn safe_halt() {
    // SAFETY: the caller's promise.
    unsafe { asm!("sti", "hlt") };
}

/// `hlt` with interrupts off for good: the end of the machine.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: stopping this CPU is always sound.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// `CR2`: the faulting address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// `CR4.LA57`: 5-level paging.
pub const X86_CR4_LA57: u64 = 1 << 12;

/// `CR4`.
#[inline]
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// `CR3`.
#[inline]
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Load `CR3` (and so flush the non-global TLB entries).
///
/// # Safety
///
/// `pml4` is a page-table root that maps the running code, its stack and
/// everything it reaches next.
#[inline]
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: the caller's promise.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) };
}

/// `invlpg`: drop this CPU's translation of the page at `va`.
#[inline]
pub fn invlpg(va: usize) {
    // SAFETY: dropping a TLB entry is always sound.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// Write `val` to the I/O port QEMU's `isa-debug-exit` device listens on:
/// QEMU exits with status `(val << 1) | 1`.
pub fn qemu_exit(val: u8) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device the runner gives
    // QEMU; on other machines the write is ignored and the CPU halts.
    unsafe { outb(0xf4, val) };
    halt_forever()
}
