//! `BarePlatform`: kmem's `Platform` on x86_64 hardware.
//!
//! | `Platform` | here | Linux |
//! |---|---|---|
//! | `smp_processor_id` | `mov %gs:cpu_number` (`%fs:8` before the per-CPU areas exist) | `this_cpu_read(cpu_number)` |
//! | `local_enter`/`local_exit` | `pushf; cli` / `sti` if IF was set | `local_irq_save`/`restore` (no preemption here) |
//! | `irq_save`/`irq_restore` | the same, for kmem's `spin_lock_irqsave` locks | `local_irq_save`/`restore` |
//! | `in_atomic`, `in_interrupt` | IF clear or in an interrupt handler | `preemptible()` is false |
//! | `set_per_cpu_offset`, `this_cpu_add` | GS base, `add %gs:ptr` | `setup_per_cpu_areas()`, `this_cpu_add()` |
//! | `direct_map` | 2 MiB pages at `PAGE_OFFSET` | the same |
//! | `vmap_range`, `map_kernel_range` | 4 KiB PTEs in a preallocated window of `VMALLOC_START` | `vmap_range_noflush()` |
//! | `flush_tlb_kernel_range` | `invlpg` here, IPI shootdown elsewhere | the same |
//! | `wait_event`/`wake_up` | `sti; hlt` until an interrupt, IPI to wake | wait queues |
//! | `smp_call_function_single` | IPI on `CALL_FUNCTION_SINGLE_VECTOR` | the same |
//! | `report` | the 16550 console with `printk` timestamps | `printk` |
//! | `now_ns`, `random_u64` | TSC calibrated by the PIT; `RDRAND` | `sched_clock()`, `get_random_u64()` |
//!
//! Before the boot CPU takes interrupts (kmem's boot), nothing counts as
//! atomic although IF is clear, as Linux skips `might_sleep()` checks
//! while `system_state` is `SYSTEM_BOOTING`.

use crate::arch::{self, X86_EFLAGS_IF};
use crate::paging;
use crate::smp;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use kmem::platform::{DirectMap, Level, LocalState, PgProt, Platform, Task};

/// The platform value kmem boots on.
pub struct BarePlatform {
    /// First physical address above RAM (the direct map's end).
    ram_end: u64,
    /// A seed for when the CPU has no `RDRAND`.
    seed: AtomicU64,
}

/// The boot CPU takes interrupts: atomic context counts from now on.
pub static SCHEDULING: AtomicBool = AtomicBool::new(false);

impl BarePlatform {
    /// The platform of a machine whose RAM ends at `ram_end`.
    pub fn new(ram_end: u64) -> Self {
        BarePlatform {
            ram_end,
            seed: AtomicU64::new(arch::rdtsc() | 1),
        }
    }
}

// SAFETY: promise 1: sections disable interrupts and this kernel has no
// preemption, so nothing else runs on the CPU inside one. Promise 2: the
// direct map covers every RAM range with RAM, and the memory map kmem gets
// leaves out what the kernel image, its stacks and page tables use.
// Promise 3: CPU numbers are below `nr_possible()`. Promise 4: a call runs
// in the target's IPI handler, interrupts off, on that CPU. Promise 5:
// `paging::map` writes PTEs of the window that only kmem uses, and a torn
// down range faults once flushed. Promise 6: GS holds the offset kmem set
// for the CPU and `add %gs:` is one instruction.
unsafe impl Platform for BarePlatform {
    fn nr_cpu_ids(&self) -> usize {
        smp::nr_possible()
    }

    #[inline]
    fn smp_processor_id(&self) -> usize {
        smp::smp_processor_id()
    }

    #[inline]
    fn local_enter(&self) -> LocalState {
        let saved = arch::local_irq_save() as usize;
        LocalState {
            cpu: smp::smp_processor_id(),
            saved,
        }
    }

    #[inline]
    fn local_exit(&self, state: LocalState) {
        arch::local_irq_restore(state.saved as u64);
    }

    unsafe fn set_per_cpu_offset(&self, cpu: usize, offset: usize) {
        smp::set_per_cpu_offset(cpu, offset);
    }

    #[inline]
    unsafe fn this_cpu_add(&self, ptr: usize, val: u64, size: usize) -> bool {
        if !smp::this_cpu().gs_ready.load(Relaxed) {
            return false;
        }
        // SAFETY: GS holds this CPU's `per_cpu_offset` and `ptr` is one of
        // the machine's per-CPU pointers (the caller's promise): the
        // operand is this CPU's copy, and one `add` cannot be split by an
        // interrupt.
        unsafe {
            match size {
                1 => {
                    core::arch::asm!("add byte ptr gs:[{p}], {v}", p = in(reg) ptr, v = in(reg_byte) val as u8, options(nostack))
                }
                2 => {
                    core::arch::asm!("add word ptr gs:[{p}], {v:x}", p = in(reg) ptr, v = in(reg) val as u16, options(nostack))
                }
                4 => {
                    core::arch::asm!("add dword ptr gs:[{p}], {v:e}", p = in(reg) ptr, v = in(reg) val as u32, options(nostack))
                }
                8 => {
                    core::arch::asm!("add qword ptr gs:[{p}], {v}", p = in(reg) ptr, v = in(reg) val, options(nostack))
                }
                _ => return false,
            }
        }
        true
    }

    #[inline]
    fn irq_save(&self) -> usize {
        arch::local_irq_save() as usize
    }

    #[inline]
    fn irq_restore(&self, flags: usize) {
        arch::local_irq_restore(flags as u64);
    }

    fn in_atomic(&self) -> bool {
        let me = smp::this_cpu();
        me.irq_depth.load(Relaxed) != 0
            || (SCHEDULING.load(Relaxed) && arch::read_rflags() & X86_EFLAGS_IF == 0)
    }

    fn in_interrupt(&self) -> bool {
        smp::this_cpu().irq_depth.load(Relaxed) != 0
    }

    fn direct_map(&self) -> DirectMap {
        DirectMap {
            base: paging::PAGE_OFFSET,
            end: self.ram_end,
        }
    }

    fn vmap_range(&self) -> Option<(usize, usize)> {
        Some((
            paging::VMALLOC_START,
            paging::VMALLOC_START + paging::VMALLOC_SIZE,
        ))
    }

    fn map_kernel_range(
        &self,
        va: usize,
        pa: u64,
        size: usize,
        prot: PgProt,
        _page_shift: u32,
    ) -> kmem::Result<()> {
        paging::map(va, pa, size, prot)
    }

    fn unmap_kernel_range(&self, va: usize, size: usize) {
        paging::unmap(va, size);
    }

    fn flush_tlb_kernel_range(&self, start: usize, end: usize) {
        paging::flush_local(start, end);
        smp::flush_tlb_others();
    }

    fn wait_event(
        &self,
        _channel: usize,
        cond: &mut dyn FnMut() -> bool,
        timeout_ns: Option<u64>,
    ) -> bool {
        let deadline = timeout_ns.map(|t| crate::time::now_ns().saturating_add(t));
        loop {
            let flags = arch::local_irq_save();
            if cond() {
                arch::local_irq_restore(flags);
                return true;
            }
            if deadline.is_some_and(|d| crate::time::now_ns() >= d) {
                arch::local_irq_restore(flags);
                return false;
            }
            if flags & X86_EFLAGS_IF != 0 {
                // SAFETY: interrupts were on: the IDT is ready. `sti; hlt`
                // sleeps until the timer or a wake-up IPI, with no window
                // for a wake-up to slip in after `cond()`.
                unsafe { arch::safe_halt() };
            } else {
                // Interrupts off: serve TLB shootdowns by polling, so a
                // CPU flushing while this one waits is not left spinning.
                smp::poll_tlb();
                core::hint::spin_loop();
            }
        }
    }

    fn wake_up(&self, _channel: usize) {
        smp::wake_others();
    }

    fn smp_call_function_single(
        &self,
        cpu: usize,
        f: &mut (dyn FnMut() + Send),
    ) -> kmem::Result<()> {
        smp::call_single(cpu, f)
    }

    fn report(&self, level: Level, msg: fmt::Arguments<'_>) {
        // The console shows KERN_INFO and above, as Linux's default
        // console_loglevel (7) does.
        if level <= Level::Info {
            crate::serial::print_line(true, msg);
        }
    }

    fn current(&self) -> Task {
        let cpu = smp::smp_processor_id();
        let mut name = kmem::seq_buf::SeqBuf::<16>::new();
        let _ = fmt::Write::write_fmt(&mut name, format_args!("swapper/{cpu}"));
        Task::new(0, name.as_str())
    }

    fn now_ns(&self) -> u64 {
        crate::time::now_ns()
    }

    fn random_u64(&self) -> u64 {
        arch::rdrand().unwrap_or_else(|| {
            // splitmix64 on a TSC seed, for CPUs without RDRAND.
            let z = self.seed.fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed);
            let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }
}
