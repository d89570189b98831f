//! The console: a 16550 UART at COM1 (I/O port `0x3f8`), as Linux's
//! `earlyprintk=serial` and `console=ttyS0` drive it, and `printk`'s
//! timestamps (`[    0.123456] `).
//!
//! One lock serialises lines from every CPU; it is taken with interrupts
//! off, so an interrupt handler that prints cannot deadlock against the
//! code it interrupted. Tests may capture what is printed
//! ([`capture_start`]) to check the kernel's reports.

use crate::arch::{inb, local_irq_restore, local_irq_save, outb};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// COM1.
const PORT: u16 = 0x3f8;

/// The console lock and the capture buffer it guards.
static CONSOLE: spin::Mutex<Capture> = spin::Mutex::new(Capture {
    on: false,
    len: 0,
    buf: [0; CAPTURE_SIZE],
});

/// Bytes a capture keeps (later output is not kept).
const CAPTURE_SIZE: usize = 16 << 10;

struct Capture {
    on: bool,
    len: usize,
    buf: [u8; CAPTURE_SIZE],
}

/// Whether timestamps can be printed yet (the clock is calibrated).
static CLOCK_READY: AtomicBool = AtomicBool::new(false);

/// Program the UART: 115200 baud, 8 bits, no parity, one stop bit, FIFOs
/// on, interrupts off (the console polls).
pub fn init() {
    // SAFETY: COM1's registers; QEMU's `-serial` gives the device.
    unsafe {
        outb(PORT + 1, 0x00); // IER: no interrupts
        outb(PORT + 3, 0x80); // LCR: DLAB
        outb(PORT, 0x01); // divisor 1: 115200 baud
        outb(PORT + 1, 0x00);
        outb(PORT + 3, 0x03); // 8N1
        outb(PORT + 2, 0xc7); // FIFO on, cleared, 14-byte threshold
        outb(PORT + 4, 0x03); // DTR, RTS
    }
}

/// The clock can stamp lines from now on.
pub fn clock_ready() {
    CLOCK_READY.store(true, Relaxed);
}

fn putb(b: u8) {
    // SAFETY: COM1's line status and data registers.
    unsafe {
        while inb(PORT + 5) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        outb(PORT, b);
    }
}

struct Line<'a>(&'a mut Capture);

impl Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                putb(b'\r');
            }
            putb(b);
        }
        let c = &mut *self.0;
        if c.on {
            let n = s.len().min(CAPTURE_SIZE - c.len);
            c.buf[c.len..c.len + n].copy_from_slice(&s.as_bytes()[..n]);
            c.len += n;
        }
        Ok(())
    }
}

/// Print one line, with `printk`'s timestamp when `stamp` is set.
pub fn print_line(stamp: bool, args: fmt::Arguments<'_>) {
    let flags = local_irq_save();
    {
        let mut c = CONSOLE.lock();
        let mut w = Line(&mut c);
        if stamp && CLOCK_READY.load(Relaxed) {
            let ns = crate::time::now_ns();
            let _ = write!(
                w,
                "[{:5}.{:06}] ",
                ns / 1_000_000_000,
                ns / 1000 % 1_000_000
            );
        }
        let _ = w.write_fmt(args);
        let _ = w.write_str("\n");
    }
    local_irq_restore(flags);
}

/// Start keeping what is printed (clearing what an earlier capture kept).
pub fn capture_start() {
    let flags = local_irq_save();
    {
        let mut c = CONSOLE.lock();
        c.on = true;
        c.len = 0;
    }
    local_irq_restore(flags);
}

/// Stop keeping output; `f` sees what was kept.
pub fn capture_end<R>(f: impl FnOnce(&str) -> R) -> R {
    let flags = local_irq_save();
    let r = {
        let mut c = CONSOLE.lock();
        c.on = false;
        f(core::str::from_utf8(&c.buf[..c.len]).unwrap_or(""))
    };
    local_irq_restore(flags);
    r
}

/// `printk`: a timestamped line on the console.
#[macro_export]
macro_rules! pr_info {
    ($($t:tt)*) => { $crate::serial::print_line(true, format_args!($($t)*)) };
}

/// A line without a timestamp (KTAP output and `/proc` files, which
/// parsers read as they are).
#[macro_export]
macro_rules! println {
    ($($t:tt)*) => { $crate::serial::print_line(false, format_args!($($t)*)) };
}
