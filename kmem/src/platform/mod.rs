//! The `Platform` trait: the only door between the core and its environment.
//!
//! Linux's allocators lean on a handful of architecture and scheduler
//! services: `smp_processor_id()`, `preempt_disable()`/`local_irq_save()`,
//! `in_atomic()`, wait queues, the direct map (`__va`/`__pa`), page-table
//! updates for vmalloc and kmap, `printk`, a clock and a random source. kmem
//! asks for exactly these through this trait and nothing else: the core never
//! calls an operating system.
//!
//! Two implementations exist: [`crate::arena::ArenaPlatform`] (a byte buffer,
//! one thread, no syscalls; the core's own tests run on it, under Miri too)
//! and `kmem_sim::SimPlatform` (a memfd as physical memory, threads as CPUs).
//! A real kernel implements it over its own primitives.

pub mod oom;

use core::fmt;

/// Kernel log levels, as `KERN_EMERG`..`KERN_DEBUG`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `KERN_EMERG`
    Emerg = 0,
    /// `KERN_ALERT`
    Alert = 1,
    /// `KERN_CRIT`
    Crit = 2,
    /// `KERN_ERR`
    Err = 3,
    /// `KERN_WARNING`
    Warning = 4,
    /// `KERN_NOTICE`
    Notice = 5,
    /// `KERN_INFO`
    Info = 6,
    /// `KERN_DEBUG`
    Debug = 7,
}

/// What [`Platform::local_enter`] returns: the CPU the section runs on and
/// what must be handed back to [`Platform::local_exit`] (the IRQ flags on
/// bare metal). Returning the CPU with the section saves a second lookup on
/// the allocator's fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalState {
    /// `smp_processor_id()` inside the section.
    pub cpu: usize,
    /// Platform-defined saved state.
    pub saved: usize,
}

/// How the direct map translates physical to virtual addresses.
///
/// Linux maps all low memory linearly at `PAGE_OFFSET`; `__va(pa)` is
/// `PAGE_OFFSET + pa`. Memory at or above `end` (high memory on a machine
/// with a lowmem limit) is not in the direct map and must be reached through
/// `kmap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectMap {
    /// Virtual address of physical address 0 (`PAGE_OFFSET`).
    pub base: usize,
    /// First physical address that is *not* direct-mapped.
    pub end: u64,
}

impl DirectMap {
    /// `__va()`: the virtual address of `pa`, or `None` when `pa` is not
    /// direct-mapped.
    #[inline]
    pub fn va(&self, pa: u64) -> Option<usize> {
        (pa < self.end).then(|| self.base + pa as usize)
    }

    /// `__pa()`: the physical address behind a direct-map address.
    #[inline]
    pub fn pa(&self, va: usize) -> Option<u64> {
        let off = va.checked_sub(self.base)? as u64;
        (off < self.end).then_some(off)
    }
}

/// Who is running, for reports ("kworker/0:1: page allocation failure").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// Process id (0 for the idle task or an interrupt).
    pub pid: u32,
    /// `current->comm`, up to 15 bytes.
    pub comm: [u8; 16],
}

impl Task {
    /// A task with the given pid and command name (truncated to 15 bytes).
    pub fn new(pid: u32, comm: &str) -> Self {
        let mut c = [0u8; 16];
        let n = comm.len().min(15);
        c[..n].copy_from_slice(&comm.as_bytes()[..n]);
        Task { pid, comm: c }
    }

    /// The command name as text.
    pub fn comm(&self) -> &str {
        let n = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        core::str::from_utf8(&self.comm[..n]).unwrap_or("?")
    }
}

/// The protection of a kernel mapping (`pgprot_t`), as
/// [`Platform::map_kernel_range`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PgProt {
    /// `PAGE_KERNEL`: cached, read/write (vmalloc, `ioremap_cache`).
    Kernel,
    /// `PAGE_KERNEL_RO`: cached, read-only.
    KernelRo,
    /// `pgprot_writecombine(PAGE_KERNEL)`: write-combining (`ioremap_wc`).
    WriteCombine,
    /// `PAGE_KERNEL_NOCACHE` with `_PAGE_CACHE_MODE_UC_MINUS` (`ioremap`).
    UncachedMinus,
    /// `_PAGE_CACHE_MODE_UC`: strongly uncached (`ioremap_uc`).
    Uncached,
}

impl PgProt {
    /// Whether the mapping may be written.
    pub const fn writable(self) -> bool {
        !matches!(self, PgProt::KernelRo)
    }
}

/// Everything the core needs from its environment.
///
/// # Safety
///
/// The core relies on these promises for memory safety:
///
/// 1. **CPU-local sections are exclusive.** Between `local_enter()` and the
///    matching `local_exit()` on CPU `n` (as told by `smp_processor_id()`,
///    which must not change inside the section), no other execution context
///    enters a CPU-local section on CPU `n`. This is what
///    `preempt_disable()` + `local_irq_save()` give on bare metal. Per-CPU
///    data (per-CPU page lists, the slab caches' sheaves) is touched only inside
///    such a section, by its own CPU, without further locking. A *leaf*
///    section ([`local_enter_leaf`](Self::local_enter_leaf) to
///    [`local_exit_leaf`](Self::local_exit_leaf)) is exclusive in the same
///    way while the core, inside it, runs only its own straight-line code.
/// 2. **Physical memory is stable.** For every physical address `pa` below
///    `direct_map().end` that lies in a usable range of the memory map given
///    at boot, `direct_map().base + pa` is valid for reads and writes for as
///    long as the platform value lives, and is not accessed by anything but
///    the core (and the owners of memory the core handed out).
/// 3. `smp_processor_id()` is always below `nr_cpu_ids()`.
/// 4. **Cross-CPU calls keep promise 1.**
///    [`smp_call_function_single(cpu, f)`](Self::smp_call_function_single)
///    runs `f` inside a CPU-local section of CPU `cpu` (where
///    `smp_processor_id()` says `cpu`) that no other context is in at the
///    same time, exactly as if `cpu` itself had entered it. It returns
///    `Ok(())` only after `f` has run once, and an error without having run
///    it. When the platform is not `Sync`, `f` runs on the calling thread
///    (the core may then hand it a closure that is `Send` only in name).
/// 5. **Kernel mappings alias what they map.** After
///    [`map_kernel_range(va, pa, size, ..)`](Self::map_kernel_range)
///    returns `Ok`, and until [`unmap_kernel_range`](Self::unmap_kernel_range)
///    removes them, the bytes `[va, va + size)` are valid for reads and
///    writes (reads only for [`PgProt::KernelRo`]) and are the same memory
///    as the direct map's `direct_map().base + pa ..` (for RAM) or the
///    device's registers (for MMIO). Nothing else maps into
///    [`vmap_range`](Self::vmap_range); an address there that the core has
///    not mapped never reaches memory (it faults).
/// 6. **The per-CPU base register adds in place.** When
///    [`this_cpu_add(ptr, val, size)`](Self::this_cpu_add) answers `true`,
///    it has added `val` to the `size`-byte integer at `ptr + offset`, where
///    `offset` is what [`set_per_cpu_offset`](Self::set_per_cpu_offset) last
///    gave for the CPU the caller ran on at that instant, as one step no
///    other context on that CPU could interleave with; it touched nothing
///    else. When it answers `false` it touched nothing.
pub unsafe trait Platform {
    /// Number of possible CPUs (`nr_cpu_ids`). Constant for the platform's life.
    fn nr_cpu_ids(&self) -> usize;

    /// The CPU the caller runs on. Stable only inside a CPU-local section.
    fn smp_processor_id(&self) -> usize;

    /// Enter a CPU-local section: `preempt_disable()` plus `local_irq_save()`.
    /// Sections nest. The returned state names the CPU.
    fn local_enter(&self) -> LocalState;

    /// Leave the section entered by the `local_enter()` that returned `state`.
    fn local_exit(&self, state: LocalState);

    /// Enter a *leaf* CPU-local section, one the core leaves with
    /// [`local_exit_leaf`](Self::local_exit_leaf) after straight-line work
    /// on its CPU's data: inside it the core calls nothing else (no
    /// report, no other section, nothing that may block or call back), and
    /// nothing in it asks [`in_atomic`](Self::in_atomic). The allocation
    /// and free fast paths run in one.
    ///
    /// On bare metal this is a full section (the default): an interrupt may
    /// arrive between any two instructions. A platform on which nothing
    /// else can run on the CPU between two instructions of such code unless
    /// the code itself lets it (the simulator, whose interrupts and
    /// cross-CPU calls arrive only at the points the code offers them) may
    /// make it cheaper, as Linux's `this_cpu_*` operations are single
    /// instructions on x86 instead of a preempt-count round trip.
    #[inline]
    fn local_enter_leaf(&self) -> LocalState {
        self.local_enter()
    }

    /// Leave a section entered by [`local_enter_leaf`](Self::local_enter_leaf)
    /// that returned `state`; a point where pending work for the CPU (a
    /// cross-CPU call) may run, as at `local_exit`.
    #[inline]
    fn local_exit_leaf(&self, state: LocalState) {
        self.local_exit(state)
    }

    /// `per_cpu_offset(cpu) = offset`: the per-CPU allocator tells the
    /// platform, once its first chunk is set up, where CPU `cpu`'s unit
    /// lies: its copy of a per-CPU pointer `ptr` is at `ptr + offset`. A
    /// platform with a per-CPU base register (x86's `%gs` base, which
    /// `setup_per_cpu_areas()` loads with `per_cpu_offset(cpu)`; arm64's
    /// `TPIDR_EL1`) loads it, so that [`this_cpu_add`](Self::this_cpu_add)
    /// reaches the copy in one instruction. The default ignores it.
    ///
    /// # Safety
    ///
    /// `offset` is CPU `cpu`'s unit offset of the one machine that calls
    /// [`this_cpu_add`](Self::this_cpu_add) on this platform, so that its
    /// per-CPU pointers plus `offset` are its CPU's copies (boot calls it
    /// once per CPU; nothing else may).
    unsafe fn set_per_cpu_offset(&self, cpu: usize, offset: usize) {
        let _ = (cpu, offset);
    }

    /// `this_cpu_add(*ptr, val)` as x86 does it: one instruction
    /// (`add %gs:ptr, val`) on the calling CPU's copy, which no interrupt
    /// or preemption can split, so no section is entered. `val` is added to
    /// the `size`-byte integer (1, 2, 4 or 8, wrapping; `val`'s low bytes).
    /// Answers `false`, touching nothing, when the platform has no such
    /// register for the caller; the core then does the add in a leaf
    /// section, as Linux's generic `this_cpu_generic_to_op()` does with
    /// interrupts off. The default answers `false`. See promise 6.
    ///
    /// # Safety
    ///
    /// `ptr` is a per-CPU pointer of the machine that called
    /// [`set_per_cpu_offset`](Self::set_per_cpu_offset): for every CPU,
    /// `ptr + offset(cpu)` is valid for reads and writes of an aligned
    /// `size`-byte integer.
    #[inline]
    unsafe fn this_cpu_add(&self, ptr: usize, val: u64, size: usize) -> bool {
        let _ = (ptr, val, size);
        false
    }

    /// `local_irq_save()` alone: keep interrupts from arriving on this
    /// CPU until [`irq_restore`](Self::irq_restore), for spin locks that
    /// interrupt handlers also take ([`IrqSpinGuard`]). Unlike a
    /// CPU-local section it does not name or pin a CPU, so any thread may
    /// call it (a `/proc` reader that is on no CPU of the machine). The
    /// default does nothing: on a platform where no handler can run
    /// between two instructions of the caller (user space) a plain lock
    /// cannot be re-entered from an interrupt. The simulator counts it as
    /// a spinlock held (atomic context; cross-CPU calls wait for the
    /// restore). Returns what `irq_restore` takes back; calls nest.
    #[inline]
    fn irq_save(&self) -> usize {
        0
    }

    /// `local_irq_restore(flags)`: undo the [`irq_save`](Self::irq_save)
    /// that returned `flags`.
    #[inline]
    fn irq_restore(&self, flags: usize) {
        let _ = flags;
    }

    /// `in_atomic() || irqs_disabled()`: the caller may not sleep (inside a
    /// CPU-local section, a simulated interrupt, or under a spinlock).
    fn in_atomic(&self) -> bool;

    /// `in_interrupt()`: the caller runs in (simulated) interrupt context.
    fn in_interrupt(&self) -> bool {
        false
    }

    /// The direct map of low memory.
    fn direct_map(&self) -> DirectMap;

    /// Whether all physical memory reads as zero when the platform hands it
    /// to `boot`. When true, boot skips zeroing the page descriptor array, as
    /// Linux skips it for memory the firmware gives zeroed; a 64 GiB machine
    /// then boots without touching 1 GiB of `struct page`.
    fn memory_is_zeroed(&self) -> bool {
        false
    }

    /// The kernel virtual range the core maps pages into
    /// (`VMALLOC_START..VMALLOC_END`, with the kmap window at its top), if
    /// the platform has page tables. The core gives out addresses in it
    /// (vmalloc, vmap, ioremap, kmap) and maps them with
    /// [`map_kernel_range`](Self::map_kernel_range); nothing else may use it.
    fn vmap_range(&self) -> Option<(usize, usize)> {
        None
    }

    /// `vmap_range_noflush()`: map `size` bytes of physical memory from
    /// `pa` at `va` with protection `prot`. `va`, `pa` and `size` are page
    /// aligned and `[va, va + size)` lies inside
    /// [`vmap_range`](Self::vmap_range) and maps nothing. `page_shift` is
    /// the largest page the core allows (`PAGE_SHIFT`, or `PMD_SHIFT` when
    /// `va`, `pa` and `size` are all 2 MiB aligned); a platform may use
    /// smaller pages. `pa` is RAM of the memory map or a device's MMIO
    /// range. On failure nothing stays mapped.
    ///
    /// The default answers [`Error::NotSupported`](crate::Error::NotSupported):
    /// a platform without page tables (the arena) has no vmalloc.
    fn map_kernel_range(
        &self,
        va: usize,
        pa: u64,
        size: usize,
        prot: PgProt,
        page_shift: u32,
    ) -> crate::Result<()> {
        let _ = (va, pa, size, prot, page_shift);
        Err(crate::Error::NotSupported)
    }

    /// `vunmap_range_noflush()`: remove every mapping in `[va, va + size)`
    /// (page aligned, inside [`vmap_range`](Self::vmap_range)). After it
    /// returns, an access to the range faults on this CPU; other CPUs may
    /// still reach the old pages through stale TLB entries until
    /// [`flush_tlb_kernel_range`](Self::flush_tlb_kernel_range) covers it,
    /// which is why the core does not reuse the addresses before that.
    fn unmap_kernel_range(&self, va: usize, size: usize) {
        let _ = (va, size);
    }

    /// `flush_tlb_kernel_range()`: drop every CPU's cached translations for
    /// `[start, end)` (`invlpg` here and a shootdown IPI to the others on
    /// x86). A platform whose unmaps are seen by every CPU at once (the
    /// simulator's `mmap` is) does nothing.
    fn flush_tlb_kernel_range(&self, start: usize, end: usize) {
        let _ = (start, end);
    }

    /// Block until `cond()` holds or `timeout_ns` passes (`None`: no
    /// timeout), waking on [`wake_up`](Self::wake_up) for the same `channel`.
    /// Returns the last value of `cond()`. A platform that cannot block
    /// returns `cond()` at once.
    fn wait_event(
        &self,
        channel: usize,
        cond: &mut dyn FnMut() -> bool,
        timeout_ns: Option<u64>,
    ) -> bool {
        let _ = (channel, timeout_ns);
        cond()
    }

    /// Whether any execution context other than the calling one can run
    /// while it sleeps, and so could free memory: another CPU's task,
    /// kswapd, an interrupt. The page allocator asks before it sleeps for
    /// frees; where the answer is no, it goes on as Linux does when nothing
    /// is left to reclaim (the OOM path, then failure) instead of waiting
    /// forever. A kernel always has others (the default); a platform with
    /// one thread and nothing else, such as a one-threaded simulated
    /// machine or the arena, has none.
    fn others_can_run(&self) -> bool {
        true
    }

    /// Wake every waiter on `channel`.
    fn wake_up(&self, channel: usize) {
        let _ = channel;
    }

    /// `smp_call_function_single(cpu, func, info, wait = 1)`: run `f` on
    /// CPU `cpu`, inside a CPU-local section of that CPU (so it may touch
    /// that CPU's per-CPU data), and return once it has run.
    ///
    /// `f` runs in atomic context: it must not sleep or wait for another
    /// CPU. Calling this from atomic context for another CPU can deadlock
    /// (the target may be waiting for the caller); Linux warns, a platform
    /// refuses with [`Error::Busy`](crate::Error::Busy). A call for the
    /// caller's own CPU runs `f` at once.
    ///
    /// The default runs `f` when `cpu` is the caller's CPU and otherwise
    /// answers [`Error::NotSupported`](crate::Error::NotSupported); callers
    /// then fall back to asking that CPU to do the work itself later.
    fn smp_call_function_single(
        &self,
        cpu: usize,
        f: &mut (dyn FnMut() + Send),
    ) -> crate::Result<()> {
        let state = self.local_enter();
        if state.cpu != cpu {
            self.local_exit(state);
            return Err(crate::Error::NotSupported);
        }
        f();
        self.local_exit(state);
        Ok(())
    }

    /// `on_each_cpu(func, info, wait = 1)`: run `f(cpu)` on every CPU in
    /// turn through [`smp_call_function_single`](Self::smp_call_function_single).
    ///
    /// A CPU that refuses does not stop the others: `f` runs on every CPU
    /// that accepts, and the first error is returned.
    fn on_each_cpu(&self, f: &mut (dyn FnMut(usize) + Send)) -> crate::Result<()> {
        let mut first = Ok(());
        for cpu in 0..self.nr_cpu_ids() {
            let r = self.smp_call_function_single(cpu, &mut || f(cpu));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Free page reporting asks for a round
    /// ([`Kmem::page_reporting_process`](crate::Kmem::page_reporting_process)):
    /// a free left a block of the registered order. Called from free paths,
    /// possibly in a CPU-local section: the platform only schedules the
    /// round (Linux queues delayed work), it must not run it here. Once per
    /// round. The default does nothing.
    fn page_reporting_notify(&self) {}

    /// Deferred struct page init held the physical range `start..end`
    /// back at boot (`joined` false), or gave it to the page allocator
    /// (`joined` true; each held-back range joins in parts, none twice).
    /// Memory held back is not used at all until it joins, so a platform
    /// may, say, leave it out of a core dump. A joining range is announced
    /// before its pages reach the free lists. Called from boot, and from
    /// allocation paths, possibly in atomic context (the caller may hold a
    /// spinlock): the platform must not allocate or wait for anything of
    /// the machine's here (a system call that does neither is fine). The
    /// default does nothing.
    fn memory_deferred(&self, start: u64, end: u64, joined: bool) {
        let _ = (start, end, joined);
    }

    /// `printk`: one message at `level`, in the kernel's wording. The
    /// message carries no trailing newline; multi-line reports arrive as
    /// several calls.
    fn report(&self, level: Level, msg: fmt::Arguments<'_>);

    /// The running task, for reports.
    fn current(&self) -> Task {
        Task::new(0, "swapper")
    }

    /// Monotonic nanoseconds.
    fn now_ns(&self) -> u64;

    /// A random 64-bit value (`get_random_u64()`).
    fn random_u64(&self) -> u64;

    /// `current->flags`: the running task's `PF_*` bits. The core keeps the
    /// memalloc scope bits there ([`crate::sched::PF_MEMALLOC_NOFS`] and
    /// friends). The default keeps no per-task state: every task reads 0.
    fn task_flags(&self) -> u32 {
        0
    }

    /// Set `current->flags`. Returns `false` when the platform keeps no
    /// per-task flags (the core then reports that the scope had no effect).
    fn set_task_flags(&self, flags: u32) -> bool {
        let _ = flags;
        false
    }

    /// The OOM killer: called by the page allocator when a "too small to
    /// fail" allocation finds nothing left to reclaim
    /// (`out_of_memory()`, `mm/oom_kill.c`). The embedding kernel picks a
    /// victim and frees its memory, and returns `true` when it made progress
    /// (the allocator then retries). The default prints Linux's OOM header
    /// with Mem-Info, says there is no killable process and returns `false`
    /// (where Linux would panic, kmem fails the allocation).
    fn out_of_memory(&self, oc: &oom::OomControl<'_>) -> bool {
        oc.dump_header();
        oc.report(
            Level::Emerg,
            format_args!("Out of memory and no killable processes..."),
        );
        false
    }
}

/// A CPU-local section held for as long as the guard lives.
pub struct LocalGuard<'a, P: Platform + ?Sized> {
    platform: &'a P,
    state: LocalState,
    cpu: usize,
    /// A section belongs to the thread that entered it: the guard is
    /// neither `Send` nor `Sync`.
    _thread: core::marker::PhantomData<*const ()>,
}

impl<'a, P: Platform + ?Sized> LocalGuard<'a, P> {
    /// Enter a CPU-local section on `platform`.
    #[inline(always)]
    pub fn new(platform: &'a P) -> Self {
        let state = platform.local_enter();
        LocalGuard {
            platform,
            state,
            cpu: state.cpu,
            _thread: core::marker::PhantomData,
        }
    }

    /// The CPU this section runs on.
    #[inline]
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The section's state: the proof, for as long as the guard lives, that
    /// the section is open.
    #[inline]
    pub fn state(&self) -> &LocalState {
        &self.state
    }
}

impl<P: Platform + ?Sized> Drop for LocalGuard<'_, P> {
    #[inline(always)]
    fn drop(&mut self) {
        self.platform.local_exit(self.state);
    }
}

/// A spin lock held with interrupts off: `spin_lock_irqsave()`.
///
/// Every lock that code running in interrupt context may take (a slab
/// node's `list_lock` and sheaf pool, a mempool's reserve, the per-CPU
/// allocator's lock, a percpu counter's) is taken this way, as Linux
/// takes them with `spin_lock_irqsave()`: on bare metal an interrupt
/// handler that allocates cannot then spin on a lock the code it
/// interrupted holds on the same CPU. On the simulator it counts as a
/// spinlock held; in user space it is a plain lock (see
/// [`Platform::irq_save`]). The lock is released before interrupts are
/// restored.
pub struct IrqSpinGuard<'a, T, P: Platform + ?Sized> {
    /// Dropped first (fields drop in declaration order): unlock, then
    /// restore interrupts.
    guard: spin::MutexGuard<'a, T>,
    _irq: IrqSave<'a, P>,
}

/// Interrupts off on this CPU ([`Platform::irq_save`]) for as long as the
/// guard lives: `local_irq_save()`/`local_irq_restore()`. Readers take it
/// around a lock that interrupt handlers also take (a zone's, for
/// `/proc/buddyinfo`). It belongs to the CPU that made it: neither `Send`
/// nor `Sync`.
pub struct IrqSave<'a, P: Platform + ?Sized> {
    p: &'a P,
    flags: usize,
    _cpu: core::marker::PhantomData<*const ()>,
}

impl<'a, P: Platform + ?Sized> IrqSave<'a, P> {
    /// `local_irq_save()` on `p`.
    #[inline]
    pub fn new(p: &'a P) -> Self {
        IrqSave {
            p,
            flags: p.irq_save(),
            _cpu: core::marker::PhantomData,
        }
    }
}

impl<P: Platform + ?Sized> Drop for IrqSave<'_, P> {
    #[inline]
    fn drop(&mut self) {
        self.p.irq_restore(self.flags);
    }
}

impl<'a, T, P: Platform + ?Sized> IrqSpinGuard<'a, T, P> {
    /// `spin_lock_irqsave(lock)`: interrupts off on `p`, then lock.
    #[inline]
    pub fn lock(p: &'a P, lock: &'a spin::Mutex<T>) -> Self {
        let irq = IrqSave::new(p);
        IrqSpinGuard {
            guard: lock.lock(),
            _irq: irq,
        }
    }
}

impl<T, P: Platform + ?Sized> core::ops::Deref for IrqSpinGuard<'_, T, P> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T, P: Platform + ?Sized> core::ops::DerefMut for IrqSpinGuard<'_, T, P> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// `pr_*`-style helper: `report!(platform, Level::Warning, "fmt", args..)`.
#[macro_export]
macro_rules! report {
    ($p:expr, $lvl:expr, $($arg:tt)*) => {
        $crate::platform::Platform::report($p, $lvl, format_args!($($arg)*))
    };
}

/// Forwards [`Platform`] methods to another platform, for wrappers that
/// change a few calls and delegate the rest (the one forwarding mechanism
/// of the workspace: `&T`, and the tests' recording wrappers, use it).
///
/// Inside an `unsafe impl Platform for W` block, `forward_platform!(self =>
/// EXPR; m1, m2, ...)` defines the methods named as `EXPR.m(args)`, where
/// `EXPR` (written with `self`) yields a reference to the platform that
/// does the work; `all` names every method. Methods not named keep the
/// trait's defaults or are written by hand beside the macro. Forward
/// `set_per_cpu_offset` and `this_cpu_add` together or not at all: the add
/// uses the offsets the same platform was given.
///
/// ```
/// use kmem::arena::ArenaPlatform;
/// use kmem::platform::{Level, Platform};
/// use std::cell::Cell;
///
/// /// The arena, counting reports.
/// struct Counting<'a> {
///     arena: ArenaPlatform<'a>,
///     reports: Cell<usize>,
/// }
///
/// // SAFETY: every promise is the arena's: all calls are delegated
/// // unchanged, `report` after bumping a counter.
/// unsafe impl Platform for Counting<'_> {
///     kmem::forward_platform!(p => &p.arena; nr_cpu_ids, smp_processor_id,
///         local_enter, local_exit, in_atomic, direct_map, now_ns, random_u64);
///     fn report(&self, level: Level, msg: std::fmt::Arguments<'_>) {
///         self.reports.set(self.reports.get() + 1);
///         self.arena.report(level, msg)
///     }
/// }
///
/// let mut mem = vec![0u8; 1 << 20];
/// let c = Counting { arena: ArenaPlatform::new(&mut mem, 1), reports: Cell::new(0) };
/// kmem::report!(&c, Level::Info, "hello");
/// assert_eq!(c.reports.get(), 1);
/// ```
#[macro_export]
macro_rules! forward_platform {
    ($s:ident => $to:expr; all) => {
        $crate::forward_platform!($s => $to; nr_cpu_ids, smp_processor_id, local_enter, local_exit, local_enter_leaf, local_exit_leaf, set_per_cpu_offset, this_cpu_add, irq_save, irq_restore, in_atomic, in_interrupt, direct_map, memory_is_zeroed, vmap_range, map_kernel_range, unmap_kernel_range, flush_tlb_kernel_range, wait_event, wake_up, others_can_run, smp_call_function_single, on_each_cpu, page_reporting_notify, memory_deferred, report, current, now_ns, random_u64, task_flags, set_task_flags, out_of_memory);
    };
    ($s:ident => $to:expr; $($m:ident),+ $(,)?) => {
        $( $crate::forward_platform!(@one $s => $to; $m); )+
    };
    (@one $s:ident => $to:expr; nr_cpu_ids) => {
        #[inline]
        fn nr_cpu_ids(&self) -> usize {
            let $s = self;
            $crate::platform::Platform::nr_cpu_ids($to)
        }
    };
    (@one $s:ident => $to:expr; smp_processor_id) => {
        #[inline]
        fn smp_processor_id(&self) -> usize {
            let $s = self;
            $crate::platform::Platform::smp_processor_id($to)
        }
    };
    (@one $s:ident => $to:expr; local_enter) => {
        #[inline]
        fn local_enter(&self) -> $crate::platform::LocalState {
            let $s = self;
            $crate::platform::Platform::local_enter($to)
        }
    };
    (@one $s:ident => $to:expr; local_exit) => {
        #[inline]
        fn local_exit(&self, state: $crate::platform::LocalState) -> () {
            let $s = self;
            $crate::platform::Platform::local_exit($to, state)
        }
    };
    (@one $s:ident => $to:expr; local_enter_leaf) => {
        #[inline]
        fn local_enter_leaf(&self) -> $crate::platform::LocalState {
            let $s = self;
            $crate::platform::Platform::local_enter_leaf($to)
        }
    };
    (@one $s:ident => $to:expr; local_exit_leaf) => {
        #[inline]
        fn local_exit_leaf(&self, state: $crate::platform::LocalState) -> () {
            let $s = self;
            $crate::platform::Platform::local_exit_leaf($to, state)
        }
    };
    (@one $s:ident => $to:expr; set_per_cpu_offset) => {
        #[inline]
        unsafe fn set_per_cpu_offset(&self, cpu: usize, offset: usize) -> () {
            let $s = self;
            // SAFETY: the caller's guarantee, passed on unchanged.
            unsafe { $crate::platform::Platform::set_per_cpu_offset($to, cpu, offset) }
        }
    };
    (@one $s:ident => $to:expr; this_cpu_add) => {
        #[inline]
        unsafe fn this_cpu_add(&self, ptr: usize, val: u64, size: usize) -> bool {
            let $s = self;
            // SAFETY: the caller's guarantee, passed on unchanged.
            unsafe { $crate::platform::Platform::this_cpu_add($to, ptr, val, size) }
        }
    };
    (@one $s:ident => $to:expr; irq_save) => {
        #[inline]
        fn irq_save(&self) -> usize {
            let $s = self;
            $crate::platform::Platform::irq_save($to)
        }
    };
    (@one $s:ident => $to:expr; irq_restore) => {
        #[inline]
        fn irq_restore(&self, flags: usize) -> () {
            let $s = self;
            $crate::platform::Platform::irq_restore($to, flags)
        }
    };
    (@one $s:ident => $to:expr; in_atomic) => {
        #[inline]
        fn in_atomic(&self) -> bool {
            let $s = self;
            $crate::platform::Platform::in_atomic($to)
        }
    };
    (@one $s:ident => $to:expr; in_interrupt) => {
        #[inline]
        fn in_interrupt(&self) -> bool {
            let $s = self;
            $crate::platform::Platform::in_interrupt($to)
        }
    };
    (@one $s:ident => $to:expr; direct_map) => {
        #[inline]
        fn direct_map(&self) -> $crate::platform::DirectMap {
            let $s = self;
            $crate::platform::Platform::direct_map($to)
        }
    };
    (@one $s:ident => $to:expr; memory_is_zeroed) => {
        #[inline]
        fn memory_is_zeroed(&self) -> bool {
            let $s = self;
            $crate::platform::Platform::memory_is_zeroed($to)
        }
    };
    (@one $s:ident => $to:expr; vmap_range) => {
        #[inline]
        fn vmap_range(&self) -> ::core::option::Option<(usize, usize)> {
            let $s = self;
            $crate::platform::Platform::vmap_range($to)
        }
    };
    (@one $s:ident => $to:expr; map_kernel_range) => {
        #[inline]
        fn map_kernel_range(&self, va: usize, pa: u64, size: usize, prot: $crate::platform::PgProt, page_shift: u32) -> $crate::Result<()> {
            let $s = self;
            $crate::platform::Platform::map_kernel_range($to, va, pa, size, prot, page_shift)
        }
    };
    (@one $s:ident => $to:expr; unmap_kernel_range) => {
        #[inline]
        fn unmap_kernel_range(&self, va: usize, size: usize) -> () {
            let $s = self;
            $crate::platform::Platform::unmap_kernel_range($to, va, size)
        }
    };
    (@one $s:ident => $to:expr; flush_tlb_kernel_range) => {
        #[inline]
        fn flush_tlb_kernel_range(&self, start: usize, end: usize) -> () {
            let $s = self;
            $crate::platform::Platform::flush_tlb_kernel_range($to, start, end)
        }
    };
    (@one $s:ident => $to:expr; wait_event) => {
        #[inline]
        fn wait_event(&self, channel: usize, cond: &mut dyn FnMut() -> bool, timeout_ns: ::core::option::Option<u64>) -> bool {
            let $s = self;
            $crate::platform::Platform::wait_event($to, channel, cond, timeout_ns)
        }
    };
    (@one $s:ident => $to:expr; others_can_run) => {
        #[inline]
        fn others_can_run(&self) -> bool {
            let $s = self;
            $crate::platform::Platform::others_can_run($to)
        }
    };
    (@one $s:ident => $to:expr; wake_up) => {
        #[inline]
        fn wake_up(&self, channel: usize) -> () {
            let $s = self;
            $crate::platform::Platform::wake_up($to, channel)
        }
    };
    (@one $s:ident => $to:expr; smp_call_function_single) => {
        #[inline]
        fn smp_call_function_single(&self, cpu: usize, f: &mut (dyn FnMut() + Send)) -> $crate::Result<()> {
            let $s = self;
            $crate::platform::Platform::smp_call_function_single($to, cpu, f)
        }
    };
    (@one $s:ident => $to:expr; on_each_cpu) => {
        #[inline]
        fn on_each_cpu(&self, f: &mut (dyn FnMut(usize) + Send)) -> $crate::Result<()> {
            let $s = self;
            $crate::platform::Platform::on_each_cpu($to, f)
        }
    };
    (@one $s:ident => $to:expr; page_reporting_notify) => {
        #[inline]
        fn page_reporting_notify(&self) -> () {
            let $s = self;
            $crate::platform::Platform::page_reporting_notify($to)
        }
    };
    (@one $s:ident => $to:expr; memory_deferred) => {
        #[inline]
        fn memory_deferred(&self, start: u64, end: u64, joined: bool) -> () {
            let $s = self;
            $crate::platform::Platform::memory_deferred($to, start, end, joined)
        }
    };
    (@one $s:ident => $to:expr; report) => {
        #[inline]
        fn report(&self, level: $crate::platform::Level, msg: ::core::fmt::Arguments<'_>) -> () {
            let $s = self;
            $crate::platform::Platform::report($to, level, msg)
        }
    };
    (@one $s:ident => $to:expr; current) => {
        #[inline]
        fn current(&self) -> $crate::platform::Task {
            let $s = self;
            $crate::platform::Platform::current($to)
        }
    };
    (@one $s:ident => $to:expr; now_ns) => {
        #[inline]
        fn now_ns(&self) -> u64 {
            let $s = self;
            $crate::platform::Platform::now_ns($to)
        }
    };
    (@one $s:ident => $to:expr; random_u64) => {
        #[inline]
        fn random_u64(&self) -> u64 {
            let $s = self;
            $crate::platform::Platform::random_u64($to)
        }
    };
    (@one $s:ident => $to:expr; task_flags) => {
        #[inline]
        fn task_flags(&self) -> u32 {
            let $s = self;
            $crate::platform::Platform::task_flags($to)
        }
    };
    (@one $s:ident => $to:expr; set_task_flags) => {
        #[inline]
        fn set_task_flags(&self, flags: u32) -> bool {
            let $s = self;
            $crate::platform::Platform::set_task_flags($to, flags)
        }
    };
    (@one $s:ident => $to:expr; out_of_memory) => {
        #[inline]
        fn out_of_memory(&self, oc: &$crate::platform::oom::OomControl<'_>) -> bool {
            let $s = self;
            $crate::platform::Platform::out_of_memory($to, oc)
        }
    };
}

// SAFETY: every promise is the referent's, delegated unchanged (`&T` is `Sync`
// exactly when `T` is, so promise 4's rule for non-`Sync` platforms carries over).
unsafe impl<T: Platform + ?Sized> Platform for &T {
    forward_platform!(p => *p; all);
}

/// Run `f` on CPU `cpu` through [`Platform::smp_call_function_single`],
/// for a closure that borrows the machine (and so is `Send` only when the
/// platform is `Sync`).
pub(crate) fn call_on_cpu<P: Platform + ?Sized>(
    p: &P,
    cpu: usize,
    f: impl FnMut(),
) -> crate::Result<()> {
    /// Lets the closure through the `Send` bound.
    struct AssertSend<F>(F);
    // SAFETY: when `P` is `Sync` the borrowed machine is `Sync` and the
    // closure is `Send` in truth; when it is not, the platform runs the
    // closure on the calling thread (promise 4 of the `Platform` contract),
    // so it never crosses a thread.
    unsafe impl<F> Send for AssertSend<F> {}
    impl<F: FnMut()> AssertSend<F> {
        // A method, so the closure below captures the wrapper, not its field.
        fn call(&mut self) {
            (self.0)()
        }
    }
    let mut work = AssertSend(f);
    p.smp_call_function_single(cpu, &mut || work.call())
}
