//! The simulated CPUs' per-CPU base register: x86-64's `%gs` base, as
//! Linux uses it.
//!
//! Linux x86-64 loads each CPU's `%gs` base with `per_cpu_offset(cpu)`, so
//! `this_cpu_add(var, v)` is one `add %gs:var, v`: it needs no preemption
//! or interrupt masking, because no interrupt can split one instruction and
//! the CPU it runs on is the one whose copy it adds to. A simulated CPU is
//! a host thread bound to it, and user space on x86-64 Linux leaves `%gs`
//! unused (glibc's thread pointer is `%fs`), so the simulator does the
//! same: a thread loads its `%gs` base with its CPU's offset
//! (`arch_prctl(ARCH_SET_GS)`, kept by the host across context switches and
//! signals) the first time it adds after binding, and adds with one
//! `%gs`-relative instruction.
//!
//! A thread's loaded base is current while its `gs_key` equals the
//! platform's `key`:
//!
//! ```text
//! LOCAL.gs_key == key  ⇒  %gs base == off[LOCAL.cpu] of this platform
//! ```
//!
//! Binding, switching CPU and unbinding clear `gs_key`; a new offset
//! changes `key`. Keys are never reused, so a key loaded for one machine
//! never matches another's. Like Linux's `%gs` add, the add is not an
//! interrupt point: a cross-CPU call posted to the CPU runs at its thread's
//! next section exit (a check here measurably slowed the add). Elsewhere (other architectures, or a host that
//! refuses `ARCH_SET_GS`, as Valgrind does) the add answers `false` and the
//! core takes its leaf section instead.

use crate::cpu::new_instance_id;
#[cfg(target_arch = "x86_64")]
use crate::cpu::LOCAL;
#[cfg(target_arch = "x86_64")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// `add %gs:[ptr], val` of one width, as x86's `percpu_add_op()`: `inc`
/// for 1 and `dec` for -1 (after inlining the test folds away), which
/// Intel cores forward from one increment to the next much faster than a
/// register `add` (measured: 0.6 against 1.7 ns per dependent increment).
#[cfg(target_arch = "x86_64")]
macro_rules! gs_op {
    ($w:literal, $ptr:ident, $val:ident, $t:ty, in($cls:ident) $(, $m:literal)?) => {{
        let v = $val as $t;
        if v == 1 {
            core::arch::asm!(concat!("inc ", $w, " ptr gs:[{p}]"), p = in(reg) $ptr, options(nostack))
        } else if v == <$t>::MAX {
            core::arch::asm!(concat!("dec ", $w, " ptr gs:[{p}]"), p = in(reg) $ptr, options(nostack))
        } else {
            core::arch::asm!(concat!("add ", $w, " ptr gs:[{p}], {v", $($m,)? "}"), p = in(reg) $ptr, v = in($cls) v, options(nostack))
        }
    }};
}

/// No offset given yet for a CPU.
const UNSET: usize = usize::MAX;

/// The host refused `ARCH_SET_GS` once: do not ask again.
#[cfg(target_arch = "x86_64")]
static GS_REFUSED: AtomicBool = AtomicBool::new(false);

/// Each simulated CPU's `per_cpu_offset`, and the key of the current set.
pub(crate) struct PercpuBase {
    /// `per_cpu_offset(cpu)`, [`UNSET`] until the machine gives it.
    off: Box<[AtomicUsize]>,
    /// Changes whenever an offset does; never 0, never reused.
    key: AtomicU64,
}

impl PercpuBase {
    /// `n` CPUs without offsets.
    pub(crate) fn new(n: usize) -> Self {
        PercpuBase {
            off: (0..n).map(|_| AtomicUsize::new(UNSET)).collect(),
            key: AtomicU64::new(new_instance_id()),
        }
    }

    /// `per_cpu_offset(cpu) = off`: every thread reloads its base.
    pub(crate) fn set(&self, cpu: usize, off: usize) {
        if let Some(o) = self.off.get(cpu) {
            o.store(off, Ordering::Relaxed);
            // Release: a thread that sees the new key sees the offset.
            self.key.store(new_instance_id(), Ordering::Release);
        }
    }

    /// Add `val`'s low `size` bytes to the integer at `ptr` plus the calling
    /// thread's CPU's offset, in one instruction; `false` (nothing touched)
    /// when the thread cannot: not bound to `platform_id`, no offset for
    /// its CPU yet, or no `%gs` on this host.
    ///
    /// # Safety
    ///
    /// For every CPU with an offset, `ptr + offset` is valid for reads and
    /// writes of an aligned `size`-byte integer.
    #[inline]
    pub(crate) unsafe fn add(&self, platform_id: u64, ptr: usize, val: u64, size: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let key = self.key.load(Ordering::Acquire);
            if LOCAL.with(|l| l.gs_key.get()) != key && !self.load(platform_id, key) {
                return false;
            }
            // SAFETY: `gs_key == key`, so `%gs` holds this platform's offset
            // for the thread's CPU (module invariant), and the caller
            // vouches that `ptr` plus it is an aligned integer of `size`
            // bytes. One instruction: the host may move the thread between
            // instructions, but the simulated CPU goes with the thread.
            unsafe {
                match size {
                    8 => gs_op!("qword", ptr, val, u64, in(reg)),
                    4 => gs_op!("dword", ptr, val, u32, in(reg), ":e"),
                    2 => gs_op!("word", ptr, val, u16, in(reg), ":x"),
                    1 => gs_op!("byte", ptr, val, u8, in(reg_byte)),
                    _ => return false,
                }
            }
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (platform_id, ptr, val, size);
            false
        }
    }

    /// Load the calling thread's `%gs` base with its CPU's offset, if it is
    /// bound to `platform_id` and the offset is known; record `key`.
    #[cfg(target_arch = "x86_64")]
    #[cold]
    #[inline(never)]
    fn load(&self, platform_id: u64, key: u64) -> bool {
        if GS_REFUSED.load(Ordering::Relaxed) {
            return false;
        }
        let Some(cpu) = LOCAL.with(|l| (l.id.get() == platform_id).then(|| l.cpu.get())) else {
            return false;
        };
        let off = self
            .off
            .get(cpu)
            .map_or(UNSET, |o| o.load(Ordering::Relaxed));
        if off == UNSET {
            return false;
        }
        const ARCH_SET_GS: libc::c_long = 0x1001;
        // SAFETY: arch_prctl(ARCH_SET_GS) sets only this thread's `%gs`
        // base, which nothing else in the process uses on x86-64 Linux.
        let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_SET_GS, off) };
        if r != 0 {
            GS_REFUSED.store(true, Ordering::Relaxed);
            return false;
        }
        LOCAL.with(|l| l.gs_key.set(key));
        true
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Bind this test thread, as `SimPlatform::install` would, to `cpu` of
    /// the platform `id` (only the fields the add reads).
    fn bind(id: u64, cpu: usize) {
        LOCAL.with(|l| {
            l.id.set(id);
            l.cpu.set(cpu);
            l.gs_key.set(0);
        });
    }

    #[test]
    fn an_add_follows_a_new_offset_and_refuses_another_platform() {
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let base = PercpuBase::new(2);
        let id = new_instance_id();
        bind(id, 1);
        let add = |base: &PercpuBase, id: u64, v: u64| {
            // SAFETY: the only offsets ever given are the addresses of `a`
            // and `b`, so `0 + offset` is an aligned, live u64.
            unsafe { base.add(id, 0, v, 8) }
        };
        assert!(!add(&base, id, 1), "no offset for CPU 1 yet");
        base.set(1, &a as *const AtomicU64 as usize);
        assert!(add(&base, id, 5));
        // A new offset while the thread stays bound: the next add reloads.
        base.set(1, &b as *const AtomicU64 as usize);
        assert!(add(&base, id, 1));
        assert!(add(&base, id, u64::MAX)); // dec
        assert!(add(&base, id, 7));
        // Another platform's add refuses, touching nothing: the thread is
        // bound to the first one.
        let other = PercpuBase::new(2);
        other.set(1, &a as *const AtomicU64 as usize);
        assert!(!add(&other, new_instance_id(), 100));
        // Bound again (to CPU 0, no offset): refused, not CPU 1's base.
        bind(id, 0);
        assert!(!add(&base, id, 100));
        bind(0, 0);
        assert_eq!(
            (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)),
            (5, 7)
        );
    }

    #[test]
    fn narrow_adds_stay_in_their_bytes() {
        let cell = AtomicU64::new(0x00ff_ff00_00ff);
        let base = PercpuBase::new(1);
        let id = new_instance_id();
        bind(id, 0);
        base.set(0, &cell as *const AtomicU64 as usize);
        // SAFETY: offsets 0..8 of `cell` hold aligned integers of each width
        // used (byte 0, word at 2, dword at 4).
        unsafe {
            assert!(base.add(id, 0, 1, 1)); // 0xff + 1 wraps in its byte
            assert!(base.add(id, 2, 0xffff, 2)); // word at 2: 0x00ff - 1
            assert!(base.add(id, 4, 3, 4)); // dword at 4: 0xff + 3
        }
        bind(0, 0);
        assert_eq!(cell.load(Ordering::Relaxed), 0x0102_feff_0000);
    }
}
