//! The clock: the TSC, calibrated at boot against the PIT's channel 2 (as
//! Linux's `pit_calibrate_tsc()` does when nothing better is known), and
//! `udelay`/`mdelay` on it.

use crate::arch::{inb, outb, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// TSC at boot (time zero).
static TSC0: AtomicU64 = AtomicU64::new(0);
/// TSC ticks per millisecond.
static TSC_KHZ: AtomicU64 = AtomicU64::new(1_000_000);

/// The PIT's input clock (`PIT_TICK_RATE`).
const PIT_TICK_RATE: u64 = 1_193_182;

/// Measure the TSC over 10 ms of PIT channel 2 (gate on, speaker off,
/// mode 0, count down to zero). Returns the TSC frequency in kHz.
pub fn calibrate() -> u64 {
    const MS: u64 = 10;
    let latch = (PIT_TICK_RATE * MS / 1000) as u16;
    // SAFETY: the PC's PIT and its gate in port 0x61; nothing else in
    // this kernel uses them.
    let (t0, t1) = unsafe {
        outb(0x61, (inb(0x61) & !0x02) | 0x01);
        outb(0x43, 0xb0);
        outb(0x42, latch as u8);
        outb(0x42, (latch >> 8) as u8);
        let t0 = rdtsc();
        while inb(0x61) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        (t0, rdtsc())
    };
    let khz = ((t1 - t0) / MS).max(1);
    TSC_KHZ.store(khz, Relaxed);
    TSC0.store(t0, Relaxed);
    khz
}

/// Nanoseconds since calibration.
pub fn now_ns() -> u64 {
    let d = rdtsc().wrapping_sub(TSC0.load(Relaxed));
    (u128::from(d) * 1_000_000 / u128::from(TSC_KHZ.load(Relaxed))) as u64
}

/// Busy-wait `us` microseconds.
pub fn udelay(us: u64) {
    let end = now_ns() + us * 1000;
    while now_ns() < end {
        core::hint::spin_loop();
    }
}
