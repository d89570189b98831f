//! CPUs: this kernel's own per-CPU record, bringing up the other CPUs
//! (`arch/x86/kernel/smpboot.c`, `arch/x86/realmode/rm/trampoline_64.S`),
//! and the cross-CPU services kmem's `Platform` needs: calls on another
//! CPU by IPI (`smp_call_function_single()`), TLB shootdowns
//! (`flush_tlb_kernel_range()`), wake-ups and work handed to every CPU.
//!
//! `GS` holds each CPU's `per_cpu_offset(cpu)` for kmem's per-CPU areas,
//! loaded when kmem sets the offsets, exactly as Linux uses it; the CPU
//! number is then one load, `mov %gs:cpu_number`, of a per-CPU variable
//! ([`smp_processor_id`]). The kernel's own per-CPU record ([`CpuLocal`]:
//! interrupt depth, IPI slots) must exist before kmem's areas do, so it
//! lives in the kernel image, reached through `FS`, which also gives the
//! CPU number until the areas exist.
//!
//! There is no scheduler: each CPU runs one flow of control (the boot CPU
//! the tests, the others an idle loop that runs the work it is given) plus
//! interrupts. Interrupts are the only other context on a CPU, so turning
//! them off makes a CPU-local section exclusive (promise 1).

use crate::acpi::NR_CPUS;
use crate::apic;
use crate::arch::{self, local_irq_restore, local_irq_save};
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// What this kernel keeps per CPU.
#[repr(C)]
pub struct CpuLocal {
    /// `%fs:0`: this record's own address.
    self_ptr: AtomicUsize,
    /// `%fs:8`: the CPU number (`smp_processor_id()` before kmem's
    /// per-CPU areas exist). Written once by the boot CPU before the CPU
    /// it describes starts.
    pub cpu: AtomicUsize,
    /// Interrupt nesting depth (`in_interrupt()` when non-zero).
    pub irq_depth: AtomicUsize,
    /// The local APIC id.
    pub apic_id: AtomicU32,
    /// Brought up and taking interrupts.
    pub online: AtomicBool,
    /// `GS` holds `per_cpu_offset(cpu)`.
    pub gs_ready: AtomicBool,
    /// Timer interrupts taken (this CPU's jiffies).
    pub ticks: AtomicU64,
    /// Functions run here by `CALL_FUNCTION_SINGLE_VECTOR`.
    pub calls: AtomicU64,
    /// TLB shootdowns this CPU has served.
    pub tlb_flushes: AtomicU64,
    /// The CPU's stack, `[stack_lo, stack_hi)`, for the double-fault
    /// report (`current->stack`).
    pub stack_lo: AtomicUsize,
    /// See `stack_lo`.
    pub stack_hi: AtomicUsize,
    /// The TLB shootdown generation this CPU has flushed up to.
    tlb_seen: AtomicU64,
    /// One caller at a time hands this CPU a function.
    call_lock: spin::Mutex<()>,
    /// The function (a `*mut dyn FnMut()` as its two words; 0: none).
    call_fn: [AtomicUsize; 2],
    /// The function has run.
    call_done: AtomicBool,
}

impl CpuLocal {
    const fn new() -> Self {
        CpuLocal {
            self_ptr: AtomicUsize::new(0),
            cpu: AtomicUsize::new(0),
            irq_depth: AtomicUsize::new(0),
            apic_id: AtomicU32::new(0),
            online: AtomicBool::new(false),
            gs_ready: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            tlb_flushes: AtomicU64::new(0),
            stack_lo: AtomicUsize::new(0),
            stack_hi: AtomicUsize::new(0),
            tlb_seen: AtomicU64::new(0),
            call_lock: spin::Mutex::new(()),
            call_fn: [AtomicUsize::new(0), AtomicUsize::new(0)],
            call_done: AtomicBool::new(false),
        }
    }
}

static CPUS: [CpuLocal; NR_CPUS] = [const { CpuLocal::new() }; NR_CPUS];

/// CPUs that may come up (`nr_cpu_ids`), set once at boot.
static NR_POSSIBLE: AtomicUsize = AtomicUsize::new(1);

/// CPU `cpu`'s record.
pub fn cpu_local(cpu: usize) -> &'static CpuLocal {
    &CPUS[cpu]
}

/// The calling CPU's record.
#[inline]
pub fn this_cpu() -> &'static CpuLocal {
    let p: usize;
    // SAFETY: FS's base is this CPU's record from `setup_cpu` on.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) p, options(nostack, readonly, preserves_flags))
    };
    // SAFETY: `self_ptr` is the address of a static record.
    unsafe { &*(p as *const CpuLocal) }
}

kmem::define_per_cpu! {
    /// `cpu_number`: the CPU's number, in kmem's per-CPU area, read
    /// through `GS` as Linux reads it.
    static CPU_NUMBER: AtomicUsize;
}

/// The per-CPU pointer of [`CPU_NUMBER`] once every possible CPU's copy
/// holds its number (0 before: the CPU number comes from `FS`).
static CPU_NUMBER_PTR: AtomicUsize = AtomicUsize::new(0);

/// Fill every possible CPU's `cpu_number` and read the CPU number through
/// `GS` from now on (after kmem's boot, before the other CPUs start).
pub fn init_cpu_number(k: &kmem::Kmem<crate::platform::BarePlatform>) {
    for c in 0..nr_possible() {
        if let Ok(v) = k.per_cpu(&CPU_NUMBER, c) {
            v.store(c, Relaxed);
        }
    }
    // The per-CPU pointer: CPU 0's copy less CPU 0's offset (what `GS`
    // adds back).
    let off0 = PER_CPU_OFFSET[0].load(Acquire);
    if let (true, Ok(v)) = (this_cpu().gs_ready.load(Relaxed), k.per_cpu(&CPU_NUMBER, 0)) {
        let ptr = (v as *const AtomicUsize as usize).wrapping_sub(off0);
        CPU_NUMBER_PTR.store(ptr, Release);
    }
}

/// Whether [`smp_processor_id`] reads `cpu_number` through `GS`.
pub fn cpu_number_via_gs() -> bool {
    CPU_NUMBER_PTR.load(Relaxed) != 0
}

/// `smp_processor_id()`: `mov %gs:cpu_number` once the per-CPU areas
/// exist (every CPU's GS is loaded before it runs kernel code), this
/// kernel's own record (`%fs:8`) before.
#[inline]
pub fn smp_processor_id() -> usize {
    let p = CPU_NUMBER_PTR.load(Relaxed);
    let c: usize;
    if p != 0 {
        // SAFETY: GS holds this CPU's per_cpu_offset and `p` is the
        // per-CPU pointer of `cpu_number`, set for every possible CPU.
        unsafe {
            core::arch::asm!("mov {}, qword ptr gs:[{}]", out(reg) c, in(reg) p, options(nostack, readonly, preserves_flags))
        };
    } else {
        // SAFETY: FS's base is this CPU's record from `setup_cpu` on.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:[8]", out(reg) c, options(nostack, readonly, preserves_flags))
        };
    }
    c
}

/// Number CPU `cpu`'s record and give its stack (the boot CPU, for each
/// CPU before it starts).
pub fn number_cpu(cpu: usize, apic_id: u32, stack: core::ops::Range<usize>) {
    set_stack(cpu, stack);
    let r = cpu_local(cpu);
    r.cpu.store(cpu, Relaxed);
    r.self_ptr.store(r as *const CpuLocal as usize, Relaxed);
    r.apic_id.store(apic_id, Relaxed);
}

/// CPU `cpu` runs on `stack` from now on (for the double-fault report).
pub fn set_stack(cpu: usize, stack: core::ops::Range<usize>) {
    let r = cpu_local(cpu);
    r.stack_lo.store(stack.start, Relaxed);
    r.stack_hi.store(stack.end, Relaxed);
}

/// Point this CPU's FS base at record `cpu`, numbered by [`number_cpu`].
///
/// # Safety
///
/// Called by CPU `cpu` itself, once, before anything reads `%fs`.
pub unsafe fn setup_cpu(cpu: usize) {
    let r = cpu_local(cpu);
    // SAFETY: the record is static and numbered.
    unsafe { arch::wrmsr(arch::MSR_FS_BASE, r as *const CpuLocal as u64) };
}

/// `nr_cpu_ids`.
pub fn nr_possible() -> usize {
    NR_POSSIBLE.load(Relaxed)
}

/// Set `nr_cpu_ids` (boot, once).
pub fn set_nr_possible(n: usize) {
    NR_POSSIBLE.store(n, Relaxed);
}

/// `num_online_cpus()`.
pub fn num_online() -> usize {
    (0..nr_possible())
        .filter(|&c| cpu_local(c).online.load(Acquire))
        .count()
}

/// `per_cpu_offset(cpu)`, as kmem gave it (`usize::MAX`: not given yet;
/// CPU 0's offset may well be 0).
static PER_CPU_OFFSET: [AtomicUsize; NR_CPUS] = [const { AtomicUsize::new(usize::MAX) }; NR_CPUS];

/// Record `per_cpu_offset(cpu)` and load GS if `cpu` is the caller.
pub fn set_per_cpu_offset(cpu: usize, off: usize) {
    PER_CPU_OFFSET[cpu].store(off, Release);
    if cpu == smp_processor_id() {
        load_gs();
    }
}

/// Load this CPU's `per_cpu_offset` into the GS base, if kmem gave one.
fn load_gs() {
    let me = this_cpu();
    let off = PER_CPU_OFFSET[me.cpu.load(Relaxed)].load(Acquire);
    if off != usize::MAX {
        // SAFETY: GS is used only by `this_cpu_add`, with per-CPU pointers
        // kmem gave; the offset is this CPU's.
        unsafe { arch::wrmsr(arch::MSR_GS_BASE, off as u64) };
        me.gs_ready.store(true, Release);
    }
}

/// A function every CPU runs (`on_each_cpu` in process context): the
/// two words of a `*const (dyn Fn(usize) + Sync)`.
static JOB: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static JOB_GEN: AtomicU64 = AtomicU64::new(0);
static JOB_DONE: AtomicUsize = AtomicUsize::new(0);

/// Run `f(cpu)` on every online CPU at the same time, the caller's own
/// included, with interrupts on; return when all have finished. Only the
/// boot CPU hands out work.
pub fn run_on_all_cpus(f: &(dyn Fn(usize) + Sync)) {
    let others = num_online() - 1;
    let raw: *const (dyn Fn(usize) + Sync) = f;
    // SAFETY: a fat pointer is two words; it is read back with the same
    // type while `f` lives (this function waits for every CPU).
    let words: [usize; 2] = unsafe { core::mem::transmute(raw) };
    JOB[0].store(words[0], Relaxed);
    JOB[1].store(words[1], Relaxed);
    JOB_DONE.store(0, Relaxed);
    JOB_GEN.fetch_add(1, Release);
    if others > 0 {
        apic::send_ipi_allbutself(apic::RESCHEDULE_VECTOR);
    }
    f(smp_processor_id());
    while JOB_DONE.load(Acquire) < others {
        poll_tlb();
        core::hint::spin_loop();
    }
}

/// An AP's life after bring-up: run the work it is given, else sleep.
fn idle_loop() -> ! {
    let mut seen = JOB_GEN.load(Acquire);
    loop {
        let flags = local_irq_save();
        let gen = JOB_GEN.load(Acquire);
        if gen != seen {
            local_irq_restore(flags);
            seen = gen;
            let words = [JOB[0].load(Relaxed), JOB[1].load(Relaxed)];
            // SAFETY: the words of the `&dyn Fn` the boot CPU published
            // before this generation; it waits until this CPU is done.
            let f: *const (dyn Fn(usize) + Sync) = unsafe { core::mem::transmute(words) };
            // SAFETY: as above, `f` lives until JOB_DONE counts this CPU.
            unsafe { (*f)(smp_processor_id()) };
            JOB_DONE.fetch_add(1, Release);
        } else {
            // SAFETY: this CPU's IDT is loaded; `sti; hlt` sleeps until the
            // next interrupt (the timer, or the IPI that brings work).
            unsafe { arch::safe_halt() };
        }
    }
}

/// `smp_call_function_single(cpu, f, wait = 1)` by IPI. Refuses from
/// atomic context ([`kmem::Error::Busy`]) where Linux warns, and a CPU
/// that is not online ([`kmem::Error::InvalidArgument`], Linux's `-ENXIO`).
pub fn call_single(cpu: usize, f: &mut (dyn FnMut() + Send)) -> kmem::Result<()> {
    let flags = local_irq_save();
    if cpu == smp_processor_id() {
        f();
        local_irq_restore(flags);
        return Ok(());
    }
    local_irq_restore(flags);
    if cpu >= nr_possible() || !cpu_local(cpu).online.load(Acquire) {
        return Err(kmem::Error::InvalidArgument);
    }
    let t = cpu_local(cpu);
    if flags & arch::X86_EFLAGS_IF == 0 || this_cpu().irq_depth.load(Relaxed) != 0 {
        return Err(kmem::Error::Busy);
    }
    let _g = t.call_lock.lock();
    let raw: *mut (dyn FnMut() + Send) = f;
    // SAFETY: a fat pointer's two words, read back as the same type by
    // the target while this caller waits (so `f` lives).
    let words: [usize; 2] = unsafe { core::mem::transmute(raw) };
    t.call_done.store(false, Relaxed);
    t.call_fn[1].store(words[1], Relaxed);
    t.call_fn[0].store(words[0], Release);
    apic::send_ipi(t.apic_id.load(Relaxed), apic::CALL_FUNCTION_SINGLE_VECTOR);
    while !t.call_done.load(Acquire) {
        core::hint::spin_loop();
    }
    Ok(())
}

/// `CALL_FUNCTION_SINGLE_VECTOR`: run the function handed to this CPU.
/// Interrupts are off: the call runs in a CPU-local section of this CPU.
pub fn call_function_interrupt() {
    let me = this_cpu();
    let w0 = me.call_fn[0].swap(0, Acquire);
    if w0 == 0 {
        return;
    }
    let words = [w0, me.call_fn[1].load(Relaxed)];
    // SAFETY: the words `call_single` stored; its caller waits for
    // `call_done`, so the closure lives.
    let f: *mut (dyn FnMut() + Send) = unsafe { core::mem::transmute(words) };
    // SAFETY: as above; nothing else calls it.
    unsafe { (*f)() };
    me.calls.fetch_add(1, Relaxed);
    me.call_done.store(true, Release);
}

/// The TLB shootdown generation.
static TLB_GEN: AtomicU64 = AtomicU64::new(0);

/// Flush this CPU's TLB if a shootdown asked for it since it last did.
/// The acknowledgement only moves forward (`fetch_max`): a shootdown
/// interrupt between the load and the store acknowledges a later
/// generation, which an older store must not take back.
pub fn poll_tlb() {
    let me = this_cpu();
    let g = TLB_GEN.load(Acquire);
    if me.tlb_seen.load(Relaxed) < g {
        crate::paging::flush_local(0, usize::MAX & !0xfff);
        me.tlb_flushes.fetch_add(1, Relaxed);
        me.tlb_seen.fetch_max(g, Release);
    }
}

/// `CALL_FUNCTION_VECTOR`: a TLB shootdown.
pub fn flush_tlb_interrupt() {
    poll_tlb();
}

/// Make every other online CPU drop its kernel translations and wait
/// until each has. While waiting this CPU serves shootdowns aimed at it,
/// so two CPUs flushing at once (even with interrupts off) cannot
/// deadlock.
pub fn flush_tlb_others() {
    let me = smp_processor_id();
    let others: usize = num_online() - usize::from(cpu_local(me).online.load(Acquire));
    if others == 0 {
        return;
    }
    let gen = TLB_GEN.fetch_add(1, AcqRel) + 1;
    apic::send_ipi_allbutself(apic::CALL_FUNCTION_VECTOR);
    for c in 0..nr_possible() {
        let r = cpu_local(c);
        if c == me || !r.online.load(Acquire) {
            continue;
        }
        while r.tlb_seen.load(Acquire) < gen {
            poll_tlb();
            core::hint::spin_loop();
        }
    }
}

/// Wake every other CPU from `hlt` (`wake_up()` of a waiter elsewhere).
pub fn wake_others() {
    if num_online() > 1 {
        apic::send_ipi_allbutself(apic::RESCHEDULE_VECTOR);
    }
}

/// Called on every timer interrupt, on the CPU it arrives on, if set: a
/// device's completion handler for the tests (`fn(cpu)`).
static TIMER_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Install (or with `None` remove) the timer hook.
pub fn set_timer_hook(f: Option<fn(usize)>) {
    TIMER_HOOK.store(f.map_or(0, |f| f as usize), Release);
}

/// Wait until no other CPU is inside an interrupt handler that started
/// before this call (Linux's `synchronize_irq()` in spirit): an empty
/// call by IPI to each. Interrupt gates do not nest, so each call runs
/// after the handler it found has returned.
pub fn sync_interrupts() {
    let me = smp_processor_id();
    for c in 0..nr_possible() {
        if c != me && cpu_local(c).online.load(Acquire) {
            let _ = call_single(c, &mut || {});
        }
    }
}

/// `LOCAL_TIMER_VECTOR`.
pub fn timer_interrupt() {
    let me = this_cpu();
    me.ticks.fetch_add(1, Relaxed);
    let h = TIMER_HOOK.load(Acquire);
    if h != 0 {
        // SAFETY: only `set_timer_hook` stores here, from a `fn(usize)`.
        let f: fn(usize) = unsafe { core::mem::transmute(h) };
        f(me.cpu.load(Relaxed));
    }
}

/// The APIC timer's counts per millisecond (measured on the boot CPU).
static TIMER_PER_MS: AtomicU32 = AtomicU32::new(0);
/// Timer interrupts a second (`CONFIG_HZ`).
pub const HZ: u32 = 250;

/// Run this CPU's timer at `hz` interrupts a second (tests raise it to
/// make interrupts land inside the allocator more often).
pub fn set_timer_hz(hz: u32) {
    apic::start_timer(TIMER_PER_MS.load(Relaxed), hz);
}

/// Bring this CPU's interrupts up: APIC on, timer running, `sti`.
pub fn start_interrupts() {
    apic::enable();
    let mut per_ms = TIMER_PER_MS.load(Relaxed);
    if per_ms == 0 {
        per_ms = apic::calibrate_timer();
        TIMER_PER_MS.store(per_ms, Relaxed);
    }
    apic::start_timer(per_ms, HZ);
    let me = this_cpu();
    me.tlb_seen.store(TLB_GEN.load(Acquire), Relaxed);
    // SAFETY: the IDT is loaded on this CPU and every vector the APIC can
    // raise has a stub.
    unsafe { arch::local_irq_enable() };
    me.online.store(true, Release);
}

// The AP trampoline (`trampoline_64.S`'s job): copied to a page below
// 1 MiB; a STARTUP IPI starts the CPU there in real mode with CS = the
// page's segment. It loads a GDT of its own, enters protected mode, turns
// on PAE, loads the kernel's CR3, sets EFER.LME/NXE, turns on paging and
// jumps into 64-bit code, which loads the stack and calls `ap_entry(arg)`.
// The boot CPU patches the addresses marked below before each start.
global_asm!(
    r#"
.text
.global kmem_trampoline_start
kmem_trampoline_start:
.code16
    cli
    cld
    mov %cs, %bx
    movzwl %bx, %ebx
    shl $4, %ebx
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (kmem_tramp_gdtr - kmem_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    .byte 0x66, 0xea
.global kmem_tramp_pm_target
kmem_tramp_pm_target:
    .long 0
    .word 0x08
.code32
.global kmem_tramp_pm
kmem_tramp_pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    mov (kmem_tramp_cr3 - kmem_trampoline_start)(%ebx), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    and $0x9ffffffb, %eax
    or $0x80010023, %eax
    mov %eax, %cr0
    .byte 0xea
.global kmem_tramp_lm_target
kmem_tramp_lm_target:
    .long 0
    .word 0x18
.code64
.global kmem_tramp_lm
kmem_tramp_lm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ebx, %ebx
    mov (kmem_tramp_stack - kmem_trampoline_start)(%rbx), %rsp
    mov (kmem_tramp_arg - kmem_trampoline_start)(%rbx), %rdi
    mov (kmem_tramp_entry - kmem_trampoline_start)(%rbx), %rax
    jmp *%rax
.balign 8
.global kmem_tramp_gdt
kmem_tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
kmem_tramp_gdtr:
    .word 31
.global kmem_tramp_gdt_base
kmem_tramp_gdt_base:
    .long 0
.balign 8
.global kmem_tramp_cr3
kmem_tramp_cr3:
    .quad 0
.global kmem_tramp_stack
kmem_tramp_stack:
    .quad 0
.global kmem_tramp_arg
kmem_tramp_arg:
    .quad 0
.global kmem_tramp_entry
kmem_tramp_entry:
    .quad 0
.global kmem_trampoline_end
kmem_trampoline_end:
"#,
    options(att_syntax)
);

extern "C" {
    static kmem_trampoline_start: u8;
    static kmem_trampoline_end: u8;
    static kmem_tramp_pm_target: u8;
    static kmem_tramp_pm: u8;
    static kmem_tramp_lm_target: u8;
    static kmem_tramp_lm: u8;
    static kmem_tramp_gdt: u8;
    static kmem_tramp_gdt_base: u8;
    static kmem_tramp_cr3: u8;
    static kmem_tramp_stack: u8;
    static kmem_tramp_arg: u8;
    static kmem_tramp_entry: u8;
}

/// Offset of a trampoline label from its start.
fn off(label: *const u8) -> usize {
    label as usize - (&raw const kmem_trampoline_start) as usize
}

/// Write `v` at offset `o` of the trampoline copy at `page`.
///
/// # Safety
///
/// `page` is the trampoline's page, identity-mapped, and no CPU runs it.
unsafe fn patch<T>(page: u64, o: usize, v: T) {
    // SAFETY: the caller's promise; offsets are inside the copy.
    unsafe { core::ptr::write_unaligned((page as usize + o) as *mut T, v) };
}

/// The 64-bit entry of an AP: `arg` is its CPU number.
extern "sysv64" fn ap_entry(cpu: usize) -> ! {
    crate::idt::load(cpu);
    // SAFETY: this AP's own set-up, before it reads %fs.
    unsafe {
        setup_cpu(cpu);
        arch::wrmsr(arch::MSR_PAT, arch::LINUX_PAT);
    }
    load_gs();
    start_interrupts();
    idle_loop()
}

/// An AP's stack (Linux's `THREAD_SIZE` is 16 KiB; the suite's formatting
/// wants more).
pub const THREAD_SIZE: usize = 64 << 10;

/// Bring up every CPU the MADT lists but the boot CPU
/// (`native_smp_prepare_cpus()` / `do_boot_cpu()`), one at a time through
/// the trampoline at `page`, each with a 64 KiB stack from vmalloc (a
/// guard page below it, as Linux's `VMAP_STACK`: an overflow faults, and
/// the double fault runs on its own stack). Prints Linux's lines. An AP
/// that does not come up within a second ends the bring-up: it may still
/// start later, and must not find the trampoline patched for another.
/// Returns the CPUs online.
pub fn smp_init(madt: &crate::acpi::Madt, page: u64) -> usize {
    let k = crate::kmem();
    let bsp_apic = apic::id();
    crate::pr_info!("smp: Bringing up secondary CPUs ...");
    crate::pr_info!("x86: Booting SMP configuration:");
    let mut line = kmem::seq_buf::SeqBuf::<256>::new();
    let _ = core::fmt::Write::write_str(&mut line, ".... node  #0, CPUs:    ");
    let (start, end) = (
        &raw const kmem_trampoline_start,
        &raw const kmem_trampoline_end,
    );
    let len = end as usize - start as usize;
    let mut cpu = 1;
    for &id in &madt.apic_ids[..madt.nr] {
        if id == bsp_apic {
            continue;
        }
        let lo = match k.vmalloc(THREAD_SIZE) {
            Ok(p) => p.as_ptr() as usize,
            Err(e) => {
                crate::pr_info!("smp: no stack for CPU {cpu}: {e:?}");
                break;
            }
        };
        let stack = (lo + THREAD_SIZE) as u64;
        number_cpu(cpu, id, lo..lo + THREAD_SIZE);
        // SAFETY: the trampoline page is ours (firmware-allocated, below
        // 1 MiB, identity-mapped) and no AP runs it now: each AP has left
        // it (it is online) before the next is started.
        unsafe {
            core::ptr::copy_nonoverlapping(start, page as *mut u8, len);
            patch(
                page,
                off(&raw const kmem_tramp_pm_target),
                (page as usize + off(&raw const kmem_tramp_pm)) as u32,
            );
            patch(
                page,
                off(&raw const kmem_tramp_lm_target),
                (page as usize + off(&raw const kmem_tramp_lm)) as u32,
            );
            patch(
                page,
                off(&raw const kmem_tramp_gdt_base),
                (page as usize + off(&raw const kmem_tramp_gdt)) as u32,
            );
            patch(page, off(&raw const kmem_tramp_cr3), crate::paging::root());
            patch(page, off(&raw const kmem_tramp_stack), stack - 8);
            patch(page, off(&raw const kmem_tramp_arg), cpu as u64);
            patch(
                page,
                off(&raw const kmem_tramp_entry),
                ap_entry as *const () as u64,
            );
        }
        apic::init_sipi(id, page);
        let t0 = crate::time::now_ns();
        while !cpu_local(cpu).online.load(Acquire) && crate::time::now_ns() - t0 < 1_000_000_000 {
            core::hint::spin_loop();
        }
        if cpu_local(cpu).online.load(Acquire) {
            let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" #{cpu}"));
        } else {
            crate::pr_info!("smpboot: do_boot_cpu failed(-1) to wakeup CPU#{cpu}");
            break;
        }
        cpu += 1;
    }
    crate::pr_info!("{}", line.as_str());
    let n = num_online();
    crate::pr_info!(
        "smp: Brought up 1 node, {n} CPU{}",
        if n == 1 { "" } else { "s" }
    );
    n
}
