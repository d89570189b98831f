//! The local APIC in xAPIC mode (`arch/x86/kernel/apic/apic.c`): enable,
//! EOI, IPIs, INIT/SIPI for bringing up CPUs, and the timer.
//!
//! Its registers are reached through the identity map (uncached) until
//! kmem has booted, then through an `ioremap_uc()` of them, as Linux maps
//! the APIC with `set_fixmap_nocache()`.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// `LOCAL_TIMER_VECTOR`.
pub const LOCAL_TIMER_VECTOR: u8 = 0xec;
/// `CALL_FUNCTION_SINGLE_VECTOR`: `smp_call_function_single()`.
pub const CALL_FUNCTION_SINGLE_VECTOR: u8 = 0xfb;
/// `CALL_FUNCTION_VECTOR`: here, TLB shootdowns.
pub const CALL_FUNCTION_VECTOR: u8 = 0xfc;
/// `RESCHEDULE_VECTOR`: wakes a CPU from `hlt` (`wake_up()`, new work).
pub const RESCHEDULE_VECTOR: u8 = 0xfd;
/// `SPURIOUS_APIC_VECTOR`.
pub const SPURIOUS_APIC_VECTOR: u8 = 0xff;

const APIC_ID: usize = 0x20;
const APIC_TASKPRI: usize = 0x80;
const APIC_EOI: usize = 0xb0;
const APIC_SPIV: usize = 0xf0;
const APIC_ICR: usize = 0x300;
const APIC_ICR2: usize = 0x310;
const APIC_LVTT: usize = 0x320;
const APIC_TMICT: usize = 0x380;
const APIC_TMCCT: usize = 0x390;
const APIC_TDCR: usize = 0x3e0;

/// Where the registers are mapped.
static BASE: AtomicUsize = AtomicUsize::new(0);

/// Use the registers at virtual address `va` (identity-mapped physical
/// address at first, the ioremap later).
pub fn set_base(va: usize) {
    BASE.store(va, Relaxed);
}

fn read(reg: usize) -> u32 {
    // SAFETY: BASE maps the 4 KiB of local APIC registers, uncached.
    unsafe { core::ptr::read_volatile((BASE.load(Relaxed) + reg) as *const u32) }
}

fn write(reg: usize, v: u32) {
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((BASE.load(Relaxed) + reg) as *mut u32, v) }
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    read(APIC_ID) >> 24
}

/// Software-enable this CPU's APIC, accept every priority.
pub fn enable() {
    write(APIC_TASKPRI, 0);
    write(APIC_SPIV, 0x100 | u32::from(SPURIOUS_APIC_VECTOR));
}

/// End of interrupt.
pub fn eoi() {
    write(APIC_EOI, 0);
}

fn wait_icr_idle() {
    while read(APIC_ICR) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

fn icr(dest: u32, low: u32) {
    let flags = crate::arch::local_irq_save();
    wait_icr_idle();
    write(APIC_ICR2, dest << 24);
    write(APIC_ICR, low);
    wait_icr_idle();
    crate::arch::local_irq_restore(flags);
}

/// A fixed IPI of `vector` to the CPU with APIC id `dest`.
pub fn send_ipi(dest: u32, vector: u8) {
    icr(dest, u32::from(vector) | (1 << 14));
}

/// A fixed IPI of `vector` to every CPU but this one.
pub fn send_ipi_allbutself(vector: u8) {
    icr(0, u32::from(vector) | (1 << 14) | (0b11 << 18));
}

/// INIT (asserted, then de-asserted), then two STARTUPs at the 4 KiB
/// page `page` (below 1 MiB), as `wakeup_secondary_cpu_via_init()` does,
/// with its delays.
pub fn init_sipi(dest: u32, page: u64) {
    icr(dest, 0x0000_c500); // INIT, level-triggered, assert
    crate::time::udelay(10_000);
    icr(dest, 0x0000_8500); // INIT, level-triggered, de-assert
    for _ in 0..2 {
        icr(dest, 0x0000_4600 | (page >> 12) as u32); // STARTUP
        crate::time::udelay(200);
    }
}

/// Measure the timer: counts per millisecond at divide-by-16.
pub fn calibrate_timer() -> u32 {
    write(APIC_TDCR, 0x3); // divide by 16
    write(APIC_LVTT, 1 << 16); // masked, one-shot
    write(APIC_TMICT, u32::MAX);
    crate::time::udelay(10_000);
    let used = u32::MAX - read(APIC_TMCCT);
    write(APIC_TMICT, 0);
    (used / 10).max(1)
}

/// Start the periodic timer: `HZ` interrupts a second on [`LOCAL_TIMER_VECTOR`].
pub fn start_timer(per_ms: u32, hz: u32) {
    write(APIC_TDCR, 0x3);
    write(APIC_LVTT, u32::from(LOCAL_TIMER_VECTOR) | (1 << 17));
    write(
        APIC_TMICT,
        (u64::from(per_ms) * 1000 / u64::from(hz)).max(1) as u32,
    );
}
