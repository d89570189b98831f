//! A platform over a plain byte buffer: one thread, no syscalls.
//!
//! The core's unit tests run on it, and because it performs no system calls
//! they also run under Miri, which checks every raw-pointer access the
//! allocator makes. The buffer plays physical memory starting at physical
//! address 0; CPUs are switched by hand with [`ArenaPlatform::set_cpu`];
//! reports are kept in a small ring for tests to read and, with the `std`
//! feature off, nowhere else.
//!
//! It offers no page mapping (so no high memory and no vmalloc) and cannot
//! block: an allocation that would wait fails instead. A cross-CPU call
//! ([`Platform::smp_call_function_single`]) switches to the target CPU,
//! runs the function there and switches back.

use crate::platform::{DirectMap, Level, LocalState, Platform};
use core::cell::{Cell, RefCell};
use core::fmt::{self, Write};
use core::marker::PhantomData;

/// Bytes kept per report line; longer lines are cut.
pub const REPORT_LINE: usize = 160;
/// Report lines kept (the newest overwrite the oldest).
pub const REPORT_LINES: usize = 64;

struct Line {
    level: Level,
    len: usize,
    buf: [u8; REPORT_LINE],
}

struct LineWriter<'a>(&'a mut Line);

impl Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.0.len < REPORT_LINE {
                self.0.buf[self.0.len] = b;
                self.0.len += 1;
            }
        }
        Ok(())
    }
}

/// Alignment of physical address 0's virtual address: a max-order block, so
/// that naturally aligned physical blocks are aligned virtually too.
const BASE_ALIGN: usize = crate::PAGE_SIZE << crate::MAX_PAGE_ORDER;

/// Physical memory in a caller's byte buffer.
pub struct ArenaPlatform<'a> {
    /// Virtual address of physical address 0 (at or below the buffer).
    base: usize,
    /// First usable physical address (the buffer's first whole page).
    first: usize,
    /// End of usable physical memory.
    len: usize,
    nr_cpus: usize,
    cpu: Cell<usize>,
    depth: Cell<usize>,
    irq: Cell<bool>,
    clock: Cell<u64>,
    rng: Cell<u64>,
    task_flags: Cell<u32>,
    lines: RefCell<([Option<Line>; REPORT_LINES], usize)>,
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> ArenaPlatform<'a> {
    /// Use `buf` as physical memory for a machine with `nr_cpus` CPUs.
    ///
    /// Physical address 0 sits at the 4 MiB boundary at or below `buf`, so
    /// the direct map is aligned like Linux's; the addresses between it and
    /// the buffer's first whole page are a hole, not memory
    /// ([`usable_range`](Self::usable_range) tells what is). The buffer must read as zero if the
    /// caller wants boot to skip zeroing metadata (see
    /// [`Platform::memory_is_zeroed`]); `new` does not assume so.
    ///
    /// ```
    /// let mut mem = vec![0u8; 1 << 20];
    /// let p = kmem::arena::ArenaPlatform::new(&mut mem, 2);
    /// let (start, end) = p.usable_range();
    /// assert!(end - start >= (1 << 20) - 4096);
    /// ```
    pub fn new(buf: &'a mut [u8], nr_cpus: usize) -> Self {
        let start = buf.as_mut_ptr() as usize;
        let base = start & !(BASE_ALIGN - 1);
        let first = (start - base).next_multiple_of(crate::PAGE_SIZE);
        let end = (start - base + buf.len()) & !(crate::PAGE_SIZE - 1);
        ArenaPlatform {
            base,
            first,
            len: end.max(first),
            nr_cpus: nr_cpus.max(1),
            cpu: Cell::new(0),
            depth: Cell::new(0),
            irq: Cell::new(false),
            clock: Cell::new(0),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
            task_flags: Cell::new(0),
            lines: RefCell::new((core::array::from_fn(|_| None), 0)),
            _buf: PhantomData,
        }
    }

    /// End of physical memory (whole pages), hole included.
    pub fn phys_size(&self) -> u64 {
        self.len as u64
    }

    /// Virtual address of physical address 0 (the direct map's base).
    pub fn direct_map_base(&self) -> usize {
        self.base
    }

    /// The usable physical range `[start, end)`: the buffer's whole pages.
    pub fn usable_range(&self) -> (u64, u64) {
        (self.first as u64, self.len as u64)
    }

    /// Run as CPU `cpu` from now on. Panics when called inside a CPU-local
    /// section, which would break the section's exclusivity.
    pub fn set_cpu(&self, cpu: usize) {
        assert_eq!(self.depth.get(), 0, "CPU switch inside a CPU-local section");
        assert!(cpu < self.nr_cpus, "no CPU {cpu}");
        self.cpu.set(cpu);
    }

    /// Run `f` as if in a hardware interrupt on the current CPU.
    pub fn in_irq<R>(&self, f: impl FnOnce() -> R) -> R {
        let was = self.irq.replace(true);
        let r = f();
        self.irq.set(was);
        r
    }

    /// Call `f` for each kept report line, oldest first.
    pub fn for_each_report(&self, mut f: impl FnMut(Level, &str)) {
        let lines = self.lines.borrow();
        let (ring, next) = &*lines;
        for i in 0..REPORT_LINES {
            if let Some(l) = &ring[(next + i) % REPORT_LINES] {
                f(
                    l.level,
                    core::str::from_utf8(&l.buf[..l.len]).unwrap_or("?"),
                );
            }
        }
    }

    /// Whether any kept report line contains `needle`.
    pub fn reported(&self, needle: &str) -> bool {
        let mut found = false;
        self.for_each_report(|_, l| found |= l.contains(needle));
        found
    }

    /// Forget all kept report lines.
    pub fn clear_reports(&self) {
        let mut lines = self.lines.borrow_mut();
        lines.0.iter_mut().for_each(|l| *l = None);
        lines.1 = 0;
    }
}

// SAFETY: (1) there is one thread (the type is !Sync), and `set_cpu` refuses to
// switch CPU inside a section, so a section on CPU n is never entered twice at
// once. (2) `base+first..base+len`, the only usable range the arena describes
// (boot_arena's memory map), lies inside the buffer borrowed mutably for 'a,
// which outlives the platform, and nothing else can touch it meanwhile.
// (3) `cpu` is checked against `nr_cpus` in `set_cpu`.
// (4) `smp_call_function_single` switches CPU only outside any section or
// interrupt (the same rule as `set_cpu`), so the section it opens on the
// target is the only one there; it runs `f` on the calling thread.
unsafe impl Platform for ArenaPlatform<'_> {
    /// One thread and nothing else: nobody could free while it slept.
    fn others_can_run(&self) -> bool {
        false
    }

    fn nr_cpu_ids(&self) -> usize {
        self.nr_cpus
    }

    fn smp_processor_id(&self) -> usize {
        self.cpu.get()
    }

    fn local_enter(&self) -> LocalState {
        let d = self.depth.get();
        self.depth.set(d + 1);
        LocalState {
            cpu: self.cpu.get(),
            saved: d,
        }
    }

    fn local_exit(&self, state: LocalState) {
        self.depth.set(state.saved);
    }

    fn in_atomic(&self) -> bool {
        self.depth.get() > 0 || self.irq.get()
    }

    fn in_interrupt(&self) -> bool {
        self.irq.get()
    }

    fn smp_call_function_single(
        &self,
        cpu: usize,
        f: &mut (dyn FnMut() + Send),
    ) -> crate::Result<()> {
        if cpu >= self.nr_cpus {
            return Err(crate::Error::InvalidArgument);
        }
        let me = self.cpu.get();
        if cpu != me && self.in_atomic() {
            // A CPU switch here would break the open section's exclusivity.
            crate::report!(
                self,
                Level::Warning,
                "WARNING: CPU: {me} PID: 0 at kernel/smp.c smp_call_function_single: \
                 called with interrupts disabled (target CPU {cpu})"
            );
            return Err(crate::Error::Busy);
        }
        /// Puts the caller's CPU and section depth back, also on unwind.
        struct Restore<'p, 'a>(&'p ArenaPlatform<'a>, usize, usize);
        impl Drop for Restore<'_, '_> {
            fn drop(&mut self) {
                self.0.depth.set(self.2);
                self.0.cpu.set(self.1);
            }
        }
        let _restore = Restore(self, me, self.depth.get());
        self.cpu.set(cpu);
        let state = self.local_enter();
        f();
        self.local_exit(state);
        Ok(())
    }

    fn direct_map(&self) -> DirectMap {
        DirectMap {
            base: self.base,
            end: self.len as u64,
        }
    }

    fn report(&self, level: Level, msg: fmt::Arguments<'_>) {
        let mut line = Line {
            level,
            len: 0,
            buf: [0; REPORT_LINE],
        };
        let _ = LineWriter(&mut line).write_fmt(msg);
        let mut lines = self.lines.borrow_mut();
        let next = lines.1;
        lines.0[next] = Some(line);
        lines.1 = (next + 1) % REPORT_LINES;
    }

    fn now_ns(&self) -> u64 {
        let t = self.clock.get() + 1000;
        self.clock.set(t);
        t
    }

    fn task_flags(&self) -> u32 {
        self.task_flags.get()
    }

    fn set_task_flags(&self, flags: u32) -> bool {
        self.task_flags.set(flags);
        true
    }

    fn random_u64(&self) -> u64 {
        // splitmix64: deterministic, so arena tests are reproducible.
        let x = self.rng.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.rng.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::LocalGuard;
    use crate::Error;

    /// Lets the test look at the platform from inside the called function:
    /// the arena runs it on the calling thread (promise 4).
    struct OnThisThread<'r, 'a>(&'r ArenaPlatform<'a>);
    // SAFETY: only used with the arena, which calls `f` on this thread.
    unsafe impl Send for OnThisThread<'_, '_> {}
    impl<'a> OnThisThread<'_, 'a> {
        fn get(&self) -> &ArenaPlatform<'a> {
            self.0
        }
    }

    #[test]
    fn smp_call_function_single_switches_cpu_and_back() {
        let mut mem = [0u8; 3 * crate::PAGE_SIZE];
        let p = ArenaPlatform::new(&mut mem, 3);
        p.set_cpu(1);
        for cpu in 0..3 {
            let mut seen = None;
            let (out, pp) = (&mut seen, OnThisThread(&p));
            p.smp_call_function_single(cpu, &mut move || {
                let p = pp.get();
                *out = Some((p.smp_processor_id(), p.in_atomic()));
            })
            .unwrap();
            assert_eq!(seen, Some((cpu, true)), "ran on CPU {cpu} in a section");
            assert_eq!(p.smp_processor_id(), 1, "back on the caller's CPU");
            assert!(!p.in_atomic(), "the section was closed");
        }
        let mut cpus = [false; 3];
        let (out, pp) = (&mut cpus, OnThisThread(&p));
        p.on_each_cpu(&mut move |cpu| out[cpu] = pp.get().smp_processor_id() == cpu)
            .unwrap();
        assert_eq!(cpus, [true; 3]);
        assert_eq!(
            p.smp_call_function_single(3, &mut || {}),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn smp_call_function_single_refuses_to_switch_in_atomic_context() {
        let mut mem = [0u8; 3 * crate::PAGE_SIZE];
        let p = ArenaPlatform::new(&mut mem, 2);
        let mut ran = 0;
        {
            let _g = LocalGuard::new(&p);
            assert_eq!(
                p.smp_call_function_single(1, &mut || ran += 1),
                Err(Error::Busy)
            );
            // Its own CPU is fine: no switch needed.
            p.smp_call_function_single(0, &mut || ran += 10).unwrap();
        }
        assert_eq!(
            p.in_irq(|| p.smp_call_function_single(1, &mut || ran += 100)),
            Err(Error::Busy)
        );
        assert_eq!(ran, 10);
        assert!(p.reported("WARNING: CPU: 0 PID: 0 at kernel/smp.c smp_call_function_single"));
        assert_eq!(p.smp_processor_id(), 0);
        assert!(!p.in_atomic());
    }
}
