//! # kmem-sim: a simulated machine for the kmem core
//!
//! [`SimPlatform`] implements [`kmem::Platform`] on a hosted Linux process,
//! so the allocator core runs on real (virtual) memory, on many threads at
//! once, at the sizes of real machines.
//!
//! ## Design
//!
//! * **Physical memory is a memfd.** Its size is the highest end of any
//!   usable range of the memory map. It is mapped once, `MAP_SHARED |
//!   MAP_NORESERVE`, as the direct map: physical address `pa` lives at
//!   `base + pa` ([`Platform::direct_map`]). The memfd is sparse and reads
//!   as zero, so a 64 GiB machine costs only the pages the core touches, and
//!   [`Platform::memory_is_zeroed`] is true. With
//!   [`SimConfig::lowmem_limit`] the direct map stops there; the memory
//!   above it is "high memory" that the core reaches through `kmap`.
//! * **Page tables are mmap calls.** A large `PROT_NONE` range is reserved
//!   at creation as the vmalloc/kmap area ([`Platform::vmap_range`]).
//!   [`Platform::map_kernel_range`] maps a physically contiguous run of the
//!   memfd there with `MAP_FIXED | MAP_SHARED | MAP_POPULATE`, an alias of
//!   the same physical pages with its page tables filled at once;
//!   [`Platform::unmap_kernel_range`] puts a `PROT_NONE` placeholder back so
//!   the area stays reserved and a stale access faults. The host's `mmap`
//!   is seen by every thread at once, so the TLB flush has nothing to do.
//!   A fault in the area (a guard-page overrun, a use after `vfree`) is
//!   caught and printed as Linux's page fault oops, with what the core's
//!   describer says of the address, and ends the process (`fault`
//!   module: [`SimPlatform::set_fault_describer`]).
//! * **Devices** ([`SimConfig::devices`], [`DeviceConfig`]) are reserved
//!   ranges of the memory map backed by a memfd each and served by a host
//!   thread; `map_kernel_range` of a device address maps its memory, so a
//!   driver test can `ioremap` a device's registers and talk to it.
//! * **CPUs are threads.** A thread becomes CPU `n` with
//!   [`SimPlatform::bind`]; at most one thread is bound to a CPU at a time,
//!   which is what makes a CPU-local section exclusive (promise 1 of the
//!   [`Platform`] contract). CPU-local section depth, interrupt and spinlock
//!   nesting live in a thread-local: the allocator's fast path
//!   (`local_enter`/`local_exit`) uses no atomics. [`SimPlatform::irq`] and
//!   [`SimPlatform::spin_locked`] simulate interrupt context and spinlocks
//!   for `in_interrupt()`/`in_atomic()`. [`SimPlatform::run_on_cpus`] and
//!   [`SimPlatform::on_cpu`] run code on bound scoped threads.
//! * **Wait queues** hash channels onto 64 Mutex + Condvar slots with a
//!   generation counter, so wake-ups are never lost. A bound thread gives
//!   its CPU up while it sleeps, as a sleeping task leaves its CPU to
//!   others, and takes it back before re-checking its condition.
//! * **IPIs** ([`Platform::smp_call_function_single`]): a call for a CPU no
//!   thread holds runs on a helper thread bound to it as its idle task
//!   (`swapper/N`); a call for a held CPU goes to that CPU's mailbox, which
//!   the holder runs when its CPU-local section depth returns to 0, while
//!   it waits for a call of its own, and before it sleeps or unbinds. The
//!   fast path pays one relaxed load when a section closes.
//! * **printk** stores every line for tests ([`SimPlatform::reports`]) and
//!   optionally echoes it to stderr.
//! * **Time and randomness**: a monotonic clock from creation; a splitmix64
//!   generator per CPU seeded from [`SimConfig::seed`], so runs are
//!   reproducible.
//!
//! Many platforms can live in one process (tests run in parallel): every
//! instance has a process-unique id, and the thread-local records which
//! instance a thread is bound to.
//!
//! ```
//! use kmem::Platform;
//! use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
//!
//! let p = SimPlatform::new(SimConfig::new(2, pc_memory_map(64 << 20))).unwrap();
//! let dm = p.direct_map();
//! p.run_on_cpus(|cpu| {
//!     let _section = kmem::platform::LocalGuard::new(&p);
//!     assert_eq!(p.smp_processor_id(), cpu);
//!     assert!(p.in_atomic());
//! });
//! assert!(dm.end >= 63 << 20);
//! ```

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("kmem-sim needs 64-bit Linux (memfd_create and a large address space)");

mod cpu;
mod dcache;
mod device;
mod fault;
mod kswapd;
mod machine;
mod oom;
mod pagecache;
mod percpu_base;
mod phys;
mod wait;

pub use cpu::CpuBinding;
pub use dcache::Dcache;
pub use device::{echo, DeviceConfig, DeviceKind, SimDevice, DEFAULT_DEVICE_BASE};
pub use fault::{FaultDescriber, VmallocOopsGuard};
pub use kswapd::with_kswapd;
pub use machine::{
    parse_memory_map, parse_size, pc_memory_map, pc_memory_map_numa, read_memory_map,
    MemoryMapText, NUMA_ALIGN, PC_EXT_START, PC_HIGH_START, PC_LOW_END, PC_PCI_HOLE,
};
pub use oom::SimTask;
pub use pagecache::PageCache;

use core::cell::RefCell;
use core::fmt;
use core::marker::PhantomData;
use cpu::{
    new_instance_id, splitmix64, Call, Cpus, Posted, CALL_DONE, CALL_PANICKED, CALL_PENDING, LOCAL,
    NOT_BOUND,
};
use kmem::memory_map::{MemRegion, ParseError, RegionKind};
use kmem::platform::{DirectMap, Level, LocalState, PgProt, Platform, Task};
use kmem::PAGE_SIZE;
use phys::{page_align_up, PhysMem, VmapArea};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use wait::WaitTable;

/// Default size of the virtual range reserved for [`Platform::map_kernel_range`]
/// (64 GiB; see [`SimConfig::vmap_size`]).
pub const VMAP_SIZE: usize = 64 << 30;

/// Lock a mutex, ignoring poisoning: every structure guarded here stays
/// consistent across a panic (plain values updated in one step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything that describes a simulated machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Number of CPUs (`nr_cpu_ids`), at least 1.
    pub nr_cpus: usize,
    /// The firmware memory map. Physical memory extends to the highest end
    /// of its usable ranges.
    pub map: Vec<MemRegion>,
    /// First physical address that is not direct-mapped (page aligned), as
    /// a 32-bit kernel's ~896 MiB lowmem limit; `None`: all memory is.
    pub lowmem_limit: Option<u64>,
    /// Also print every report line to stderr.
    pub echo_reports: bool,
    /// Seed of the random sources, for reproducible runs.
    pub seed: u64,
    /// Bytes of address space reserved as the vmalloc/kmap area
    /// ([`VMAP_SIZE`] by default). Tools that limit the address space
    /// (valgrind refuses a 64 GiB reservation) need a smaller one; it is
    /// rounded up to whole pages.
    pub vmap_size: usize,
    /// Devices with memory-mapped registers ([`DeviceConfig`]); their
    /// ranges join the memory map as reserved ranges. None by default
    /// with [`SimConfig::new`].
    pub devices: Vec<DeviceConfig>,
}

impl SimConfig {
    /// `nr_cpus` CPUs and the memory map `map`; no lowmem limit, no echo,
    /// seed 0.
    pub fn new(nr_cpus: usize, map: Vec<MemRegion>) -> Self {
        SimConfig {
            nr_cpus,
            map,
            lowmem_limit: None,
            echo_reports: false,
            seed: 0,
            vmap_size: VMAP_SIZE,
            devices: Vec::new(),
        }
    }
}

impl Default for SimConfig {
    /// One CPU and a PC with 128 MiB of RAM ([`pc_memory_map`]) and a
    /// `kmem-echo` device at [`DEFAULT_DEVICE_BASE`].
    fn default() -> Self {
        let mut c = SimConfig::new(1, pc_memory_map(128 << 20));
        c.devices = vec![DeviceConfig::default()];
        c
    }
}

/// Why a simulated machine could not be set up, or its description read.
#[derive(Debug)]
pub enum SimError {
    /// The memory map was refused by [`kmem::memory_map::validate`]; the
    /// text is what it reported (e820 wording).
    InvalidMap(String),
    /// The configuration is unusable (no CPUs, no usable memory, ...).
    Config(String),
    /// A system call failed.
    Os {
        /// What was being done.
        what: &'static str,
        /// The error the kernel returned.
        err: std::io::Error,
    },
    /// A memory map line could not be read.
    MapLine {
        /// 1-based line number.
        line: usize,
        /// The line's text.
        text: String,
        /// What is wrong with it.
        reason: ParseError,
    },
    /// A size could not be read (see [`parse_size`]).
    BadSize {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A device could not be read (see [`DeviceConfig::parse`]).
    BadDevice {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
}

impl SimError {
    pub(crate) fn os(what: &'static str, err: rustix::io::Errno) -> Self {
        SimError::Os {
            what,
            err: err.into(),
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::InvalidMap(msg) => write!(f, "invalid memory map: {msg}"),
            SimError::Config(msg) => write!(f, "invalid machine configuration: {msg}"),
            SimError::Os { what, err } => write!(f, "{what} failed: {err}"),
            SimError::MapLine { line, text, reason } => {
                write!(f, "memory map line {line}: {reason}: `{text}`")
            }
            SimError::BadSize { text, why } => write!(f, "bad size `{text}`: {why}"),
            SimError::BadDevice { text, why } => write!(
                f,
                "bad device `{text}`: {why} (expected KIND@ADDRESS[,SIZE], such as echo@0xfe000000)"
            ),
        }
    }
}

impl std::error::Error for SimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SimError::Os { err, .. } => Some(err),
            _ => None,
        }
    }
}

/// A platform that only collects reports, for validating a memory map
/// before any memory exists.
struct MapChecker {
    lines: RefCell<Vec<String>>,
}

// SAFETY: the checker hands out no memory (its direct map is empty, so
// promise 2 holds vacuously), has one CPU and always says CPU 0 (promise 3),
// and is used by one thread only (it is !Sync through its RefCell), so no
// two contexts can be in a CPU-local section at once (promise 1).
unsafe impl Platform for MapChecker {
    fn nr_cpu_ids(&self) -> usize {
        1
    }
    fn smp_processor_id(&self) -> usize {
        0
    }
    fn local_enter(&self) -> LocalState {
        LocalState { cpu: 0, saved: 0 }
    }
    fn local_exit(&self, _: LocalState) {}
    fn in_atomic(&self) -> bool {
        false
    }
    fn direct_map(&self) -> DirectMap {
        DirectMap { base: 0, end: 0 }
    }
    fn report(&self, _: Level, msg: fmt::Arguments<'_>) {
        self.lines.borrow_mut().push(msg.to_string());
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn random_u64(&self) -> u64 {
        0
    }
}

/// A simulated machine: memfd-backed physical memory, threads as CPUs.
///
/// See the [crate documentation](crate) for the design. The value is `Send`
/// and `Sync`; share it by reference with the threads that bind its CPUs.
pub struct SimPlatform {
    id: u64,
    nr_cpus: usize,
    map: Vec<MemRegion>,
    phys: PhysMem,
    direct_end: u64,
    /// The vmap area's place in the fault handler's registry; dropped
    /// (unregistered) before `vmap` is unmapped.
    fault: fault::Registration,
    vmap: VmapArea,
    /// Devices, stopped before the vmap area that may map them goes.
    devices: Vec<SimDevice>,
    cpus: Cpus,
    /// The CPUs' per-CPU offsets, for the `%gs` base.
    percpu_base: percpu_base::PercpuBase,
    waits: WaitTable,
    reports: Mutex<Vec<(Level, String)>>,
    echo: bool,
    start: Instant,
    /// splitmix64 state for threads not bound to a CPU.
    rng: AtomicU64,
    /// Simulated tasks the OOM killer may choose from.
    tasks: oom::TaskList,
}

#[cold]
#[inline(never)]
fn mismatched_exit() -> ! {
    panic!("local_exit does not match the innermost local_enter of this thread")
}

/// The IPI handler: a section just closed with calls pending for this
/// thread's CPU. Runs them unless the thread is in a simulated interrupt or
/// spinlock, where they wait for the next chance. It finds the machine
/// through the thread's binding, so the section exits that call it need no
/// platform at hand.
#[cold]
#[inline(never)]
fn ipi_interrupt() {
    let (cpus, cpu) = LOCAL.with(|l| {
        let cpus = if l.interruptible() {
            l.cpus.get()
        } else {
            core::ptr::null()
        };
        (cpus, l.cpu.get())
    });
    // SAFETY: a bound thread's `cpus` points at its machine's CPUs, which
    // its binding borrows, so they are alive; null while unbound.
    if let Some(cpus) = unsafe { cpus.as_ref() } {
        cpus.service(cpu);
    }
}

#[cold]
#[inline(never)]
fn not_bound(bound_to: u64) -> ! {
    if bound_to == 0 {
        panic!("{NOT_BOUND}");
    }
    panic!("{NOT_BOUND} (this thread is bound to a CPU of another SimPlatform)");
}

/// Runs a closure when dropped (restores thread-local counters on unwind).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

impl SimPlatform {
    /// Build the machine `config` describes.
    ///
    /// The memory map is checked with [`kmem::memory_map::validate`] first;
    /// a refused map gives [`SimError::InvalidMap`] with the report text.
    /// There must be at least one CPU and one usable range, and a
    /// `lowmem_limit` must be page aligned. Each device's range must be
    /// page aligned and overlap neither usable RAM nor another device
    /// ([`SimError::Config`]); the parts not covered by the map's
    /// non-usable ranges are added to [`memory_map`](Self::memory_map) as
    /// reserved ranges.
    pub fn new(config: SimConfig) -> Result<SimPlatform, SimError> {
        let checker = MapChecker {
            lines: RefCell::new(Vec::new()),
        };
        if kmem::memory_map::validate(&checker, &config.map).is_err() {
            let lines = checker.lines.into_inner();
            if config.echo_reports {
                lines.iter().for_each(|l| eprintln!("{l}"));
            }
            return Err(SimError::InvalidMap(lines.join("; ")));
        }
        if config.nr_cpus == 0 {
            return Err(SimError::Config("a machine needs at least one CPU".into()));
        }
        let top = config
            .map
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(|r| r.end())
            .max()
            .ok_or_else(|| SimError::Config("the memory map has no usable range".into()))?;
        let size = page_align_up(top)
            .ok_or_else(|| SimError::Config(format!("usable memory ends too high ({top:#x})")))?;
        if let Some(l) = config.lowmem_limit {
            if l % PAGE_SIZE as u64 != 0 {
                return Err(SimError::Config(format!(
                    "lowmem limit {l:#x} is not page aligned"
                )));
            }
        }
        let phys = PhysMem::new(size)?;
        if config.vmap_size == 0 {
            return Err(SimError::Config(
                "the vmap area needs at least one page".into(),
            ));
        }
        let vmap = VmapArea::new(config.vmap_size.next_multiple_of(PAGE_SIZE))?;
        let direct_end = config.lowmem_limit.map_or(size, |l| l.min(size));
        let mut map = config.map;
        device::add_to_map(&mut map, &config.devices)?;
        let devices = config
            .devices
            .into_iter()
            .map(SimDevice::start)
            .collect::<Result<Vec<_>, _>>()?;
        let mut seed = config.seed;
        let unbound_seed = splitmix64(&mut seed);
        let id = new_instance_id();
        Ok(SimPlatform {
            id,
            nr_cpus: config.nr_cpus,
            map,
            phys,
            direct_end,
            fault: fault::register(id, vmap.range()),
            vmap,
            devices,
            cpus: Cpus::new(config.nr_cpus, config.seed),
            percpu_base: percpu_base::PercpuBase::new(config.nr_cpus),
            waits: WaitTable::new(),
            reports: Mutex::new(Vec::new()),
            echo: config.echo_reports,
            start: Instant::now(),
            rng: AtomicU64::new(unbound_seed),
            tasks: oom::TaskList::default(),
        })
    }

    /// The memory map the machine was built from, with its devices'
    /// ranges reserved.
    pub fn memory_map(&self) -> &[MemRegion] {
        &self.map
    }

    /// The machine's devices, in the order of [`SimConfig::devices`].
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// Bytes of physical memory (the memfd size: the highest end of a
    /// usable range, rounded up to a page).
    pub fn phys_size(&self) -> u64 {
        self.phys.size()
    }

    /// Bind the calling thread to CPU `cpu` as task `cpu/N` (pid `cpu + 1`),
    /// waiting until no other thread is bound to it. The thread is unbound
    /// when the returned guard drops.
    ///
    /// Panics when `cpu` is not below `nr_cpu_ids()`, when the thread is
    /// already bound (to this or another platform), or when the CPU was
    /// left unusable by a binding dropped inside a CPU-local section.
    pub fn bind(&self, cpu: usize) -> CpuBinding<'_> {
        self.bind_as(cpu, Task::new(cpu as u32 + 1, &format!("cpu/{cpu}")))
    }

    /// [`bind`](Self::bind), running as `task` ([`Platform::current`]).
    pub fn bind_as(&self, cpu: usize, task: Task) -> CpuBinding<'_> {
        assert!(
            cpu < self.nr_cpus,
            "SimPlatform::bind: no CPU {cpu} (the machine has {} CPU(s))",
            self.nr_cpus
        );
        LOCAL.with(|l| match l.id.get() {
            0 => {}
            id if id == self.id => panic!(
                "SimPlatform::bind: this thread is already bound to CPU {} of this SimPlatform",
                l.cpu.get()
            ),
            _ => panic!("SimPlatform::bind: this thread is already bound to another SimPlatform"),
        });
        // Counted from here: a thread waiting for a CPU can run once one
        // is free.
        self.cpus.attached.fetch_add(1, Ordering::SeqCst);
        self.bind_counted(cpu, task)
    }

    /// [`bind_as`](Self::bind_as) for a thread already counted in
    /// `attached` (its binding's drop uncounts it, and so does a panic
    /// before it is bound).
    pub(crate) fn bind_counted(&self, cpu: usize, task: Task) -> CpuBinding<'_> {
        /// Uncounts the thread if binding fails (a poisoned CPU panics).
        struct Uncount<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Uncount<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let uncount = Uncount(&self.cpus.attached);
        let token = new_instance_id();
        let rng = self.cpus.acquire(cpu, token);
        std::mem::forget(uncount);
        self.install(cpu, token, task, rng)
    }

    /// Count a thread about to be started as one that can run, before it
    /// binds: `others_can_run` must not miss it while it starts.
    pub(crate) fn count_starting_thread(&self) {
        self.cpus.attached.fetch_add(1, Ordering::SeqCst);
    }

    /// Record in the calling thread's locals that it holds `cpu` with
    /// `token`, running `task`, and hand out the binding.
    fn install(&self, cpu: usize, token: u64, task: Task, rng: u64) -> CpuBinding<'_> {
        LOCAL.with(|l| {
            l.id.set(self.id);
            l.cpu.set(cpu);
            l.gs_key.set(0);
            l.token.set(token);
            l.depth.set(0);
            l.irq.set(0);
            l.spin.set(0);
            l.task.set(task);
            l.rng.set(rng);
            l.mail.set(self.cpus.mail_flag(cpu));
            l.cpus.set(&self.cpus);
        });
        CpuBinding {
            cpus: &self.cpus,
            cpu,
            id: self.id,
            token,
            _not_send: PhantomData,
        }
    }

    /// Check that this thread is bound to this platform; panic otherwise.
    fn local_checked<R>(&self, f: impl FnOnce(&cpu::Local) -> R) -> R {
        LOCAL.with(|l| {
            if l.id.get() != self.id {
                not_bound(l.id.get());
            }
            f(l)
        })
    }

    /// Run `f` in simulated interrupt context on the current CPU:
    /// [`Platform::in_interrupt`] and [`Platform::in_atomic`] are true
    /// inside. Interrupts nest.
    ///
    /// Panics when the thread is not bound, or inside a CPU-local section,
    /// where interrupts are disabled (an interrupt there could enter a
    /// section on the same CPU and break its exclusivity).
    pub fn irq<R>(&self, f: impl FnOnce() -> R) -> R {
        self.local_checked(|l| {
            assert!(
                l.depth.get() == 0,
                "SimPlatform::irq: interrupts are disabled inside a CPU-local section"
            );
            l.irq.set(l.irq.get() + 1);
        });
        let _restore = OnDrop(|| LOCAL.with(|l| l.irq.set(l.irq.get().saturating_sub(1))));
        f()
    }

    /// Run `f` as if holding a spinlock on the current CPU:
    /// [`Platform::in_atomic`] is true inside. Panics when the thread is not
    /// bound.
    pub fn spin_locked<R>(&self, f: impl FnOnce() -> R) -> R {
        self.local_checked(|l| l.spin.set(l.spin.get() + 1));
        let _restore = OnDrop(|| LOCAL.with(|l| l.spin.set(l.spin.get().saturating_sub(1))));
        f()
    }

    /// Run `f(cpu)` on every CPU in parallel, each on a scoped thread
    /// (named `cpu/N`) bound to its CPU; returns when all have finished. A
    /// panic in any of them is propagated.
    ///
    /// Panics when called from a thread bound to this platform (it would
    /// wait for its own CPU).
    pub fn run_on_cpus(&self, f: impl Fn(usize) + Sync) {
        assert!(
            LOCAL.with(|l| l.id.get()) != self.id,
            "SimPlatform::run_on_cpus: called from a thread bound to this platform, \
             which would wait for its own CPU"
        );
        let f = &f;
        std::thread::scope(|s| {
            for cpu in 0..self.nr_cpus {
                // Counted as able to run from the start, so that a thread
                // that binds late is not taken for absent (`others_can_run`).
                self.count_starting_thread();
                std::thread::Builder::new()
                    .name(format!("cpu/{cpu}"))
                    .spawn_scoped(s, move || {
                        let _binding = self
                            .bind_counted(cpu, Task::new(cpu as u32 + 1, &format!("cpu/{cpu}")));
                        f(cpu)
                    })
                    .expect("SimPlatform::run_on_cpus: cannot spawn a thread");
            }
        });
    }

    /// Run `f` on a scoped thread bound to `cpu` and return its result (a
    /// panic in `f` is propagated).
    ///
    /// A calling thread bound to another CPU of this platform runs the
    /// cross-CPU calls posted to its CPU while it waits, so `f` may call its
    /// CPU ([`Platform::smp_call_function_single`]).
    ///
    /// Panics when the calling thread is itself bound to `cpu` of this
    /// platform (it would wait for its own CPU).
    pub fn on_cpu<R: Send>(&self, cpu: usize, f: impl FnOnce() -> R + Send) -> R {
        assert!(
            LOCAL.with(|l| l.id.get() != self.id || l.cpu.get() != cpu),
            "SimPlatform::on_cpu: the calling thread holds CPU {cpu} already"
        );
        let me = self.interruptible_cpu();
        let finished = AtomicU8::new(CALL_PENDING);
        std::thread::scope(|s| {
            let finished = &finished;
            let h = std::thread::Builder::new()
                .name(format!("cpu/{cpu}"))
                .spawn_scoped(s, move || {
                    // Dropped last, also on unwind: after the binding.
                    let _finish = OnDrop(|| self.cpus.finish(finished, CALL_DONE));
                    let _binding = self.bind(cpu);
                    f()
                })
                .expect("SimPlatform::on_cpu: cannot spawn a thread");
            if me.is_some() {
                self.cpus.wait_call(finished, me, Duration::MAX, |_| {});
            }
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Register a simulated task the OOM killer may choose as a victim
    /// (see [`SimTask`]).
    pub fn register_task(&self, comm: &str) -> std::sync::Arc<SimTask> {
        self.tasks.register(comm)
    }

    /// Forget a task (it exited); its tracked pages must have been freed.
    pub fn unregister_task(&self, task: &SimTask) {
        self.tasks.unregister(task.pid())
    }

    /// All report lines so far, oldest first.
    pub fn reports(&self) -> Vec<(Level, String)> {
        lock(&self.reports).clone()
    }

    /// All report lines so far, oldest first, forgetting them.
    pub fn take_reports(&self) -> Vec<(Level, String)> {
        core::mem::take(&mut *lock(&self.reports))
    }

    /// Whether any report line contains `needle`.
    pub fn reported(&self, needle: &str) -> bool {
        lock(&self.reports).iter().any(|(_, l)| l.contains(needle))
    }

    /// Forget all report lines.
    pub fn clear_reports(&self) {
        lock(&self.reports).clear();
    }

    /// Give the current thread's CPU up (it is about to sleep), returning
    /// what [`reacquire_cpu`](Self::reacquire_cpu) needs.
    fn release_cpu(&self) -> Option<(usize, u64)> {
        let (cpu, token) =
            LOCAL.with(|l| (l.id.get() == self.id).then(|| (l.cpu.get(), l.token.get())))?;
        self.cpus.release(cpu, token, false);
        Some((cpu, token))
    }

    /// Bind the calling thread to `cpu`, which [`Cpus::post`] reserved for
    /// it with `token`, as the CPU's idle task.
    fn adopt(&self, cpu: usize, token: u64, rng: u64) -> CpuBinding<'_> {
        self.cpus.attached.fetch_add(1, Ordering::SeqCst);
        debug_assert_eq!(LOCAL.with(|l| l.id.get()), 0, "a fresh helper thread");
        self.install(cpu, token, Task::new(0, &format!("swapper/{cpu}")), rng)
    }

    /// The CPU whose mailbox the calling thread may run while it waits: the
    /// one it holds, when it is outside any section, interrupt or spinlock.
    fn interruptible_cpu(&self) -> Option<usize> {
        LOCAL.with(|l| (l.id.get() == self.id && l.interruptible()).then(|| l.cpu.get()))
    }

    /// Wait for the call behind `state` to finish, running the calling
    /// thread's own mailbox meanwhile; after every 5 s report it as Linux's
    /// CSD lock debugging does.
    fn wait_call(&self, state: &AtomicU8, cpu: usize) {
        let me = self.interruptible_cpu();
        let mut reports = 0;
        self.cpus
            .wait_call(state, me, Duration::from_secs(5), |waited| {
                reports += 1;
                kmem::report!(
                    self,
                    Level::Alert,
                    "csd: {} non-responsive CSD lock (#1) on CPU#{}, waiting {} ns for CPU#{:02} \
                     (its thread neither leaves CPU-local sections nor sleeps in wait_event)",
                    if reports == 1 {
                        "Detected"
                    } else {
                        "Continued"
                    },
                    me.map_or(-1, |c| c as i64),
                    waited.as_nanos(),
                    cpu
                );
            });
    }

    /// Take back the CPU given up by [`release_cpu`](Self::release_cpu).
    fn reacquire_cpu(&self, held: Option<(usize, u64)>) {
        if let Some((cpu, token)) = held {
            let rng = self.cpus.acquire(cpu, token);
            LOCAL.with(|l| l.rng.set(rng));
        }
    }
}

impl fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPlatform")
            .field("id", &self.id)
            .field("nr_cpus", &self.nr_cpus)
            .field("phys_size", &self.phys.size())
            .field("direct_map", &self.direct_map())
            .field("vmap_range", &self.vmap.range())
            .finish_non_exhaustive()
    }
}

// SAFETY:
// 1. A CPU-local section on CPU n runs on a thread whose thread-local says
//    "bound to this instance, CPU n" (`local_enter` panics otherwise). Such a
//    thread holds CPU n's slot in `cpus`, and only one binding holds a slot at
//    a time. The thread gives the slot up only (a) when its binding drops,
//    which poisons the CPU for good if a section is still open, and (b) while
//    it sleeps in `wait_event`, which it enters only outside any section
//    (in_atomic() is false) and where it runs nothing but the wait itself; it
//    takes the slot back before running `cond` or returning, and (c) in
//    `CpuBinding::switch_to`, which refuses to run inside a section and
//    takes the new slot before returning. Simulated
//    interrupts run on the same thread and are refused inside a section. So
//    no other context enters a section on CPU n meanwhile, and the thread's
//    CPU cannot change inside a section (bind refuses a bound thread,
//    switch_to one inside a section).
//    Cross-CPU calls for CPU n run only on the thread holding n's slot (the
//    holder at section depth 0 outside interrupts and spinlocks, or a
//    helper thread holding the slot `post` reserved for it), in a section
//    of n that thread opens: the same rule.
// 2. The direct map is a shared mapping of the whole memfd, which covers
//    every usable range (its size is their highest end); it lives until this
//    value drops, and the platform itself never reads or writes it. The only
//    other views of it are the vmap aliases the core asks for.
// 3. `bind` refuses CPUs at or above `nr_cpus`, and `smp_processor_id`
//    answers only for bound threads.
// 4. `smp_call_function_single` runs `f` as said in 1 and returns `Ok` only
//    when the runner has marked the call done, under the slot lock, after
//    `f` returned; it waits for the call's end on every path (a panic in `f`
//    is caught by the runner and re-raised by the caller only then), so the
//    lifetime-erased pointer in the mailbox never outlives `f`. An unusable
//    CPU refuses the call without running it. SimPlatform is Sync.
// 5. `map_kernel_range` maps, inside the vmap area this value reserved,
//    the RAM memfd at offset `pa` or the memfd of the device whose range
//    holds `[pa, pa + size)` (shared, so the pages are those of the direct
//    map or the device's), read/write or read-only as `prot` says, and
//    nothing else is ever mapped there; unmapped pages are PROT_NONE.
unsafe impl Platform for SimPlatform {
    #[inline]
    fn nr_cpu_ids(&self) -> usize {
        self.nr_cpus
    }

    #[inline]
    fn smp_processor_id(&self) -> usize {
        LOCAL.with(|l| {
            if l.id.get() != self.id {
                not_bound(l.id.get());
            }
            l.cpu.get()
        })
    }

    #[inline]
    fn local_enter(&self) -> LocalState {
        LOCAL.with(|l| {
            if l.id.get() != self.id {
                not_bound(l.id.get());
            }
            let d = l.depth.get();
            l.depth.set(d + 1);
            LocalState {
                cpu: l.cpu.get(),
                saved: d,
            }
        })
    }

    #[inline]
    fn local_exit(&self, state: LocalState) {
        let mail = LOCAL.with(|l| {
            // The depth check alone catches an exit without its enter: an
            // unbound thread's depth is 0, and `local_enter` checked the
            // binding. (Checking the instance id again would cost a load
            // through the platform on every section.)
            if l.depth.get() != state.saved + 1 {
                mismatched_exit();
            }
            l.depth.set(state.saved);
            l.mail.get()
        });
        // Interrupts are enabled again: take a pending IPI.
        // SAFETY: `mail` points at the flag of the CPU this thread is bound
        // to (set by `install`), inside the `Cpus` the binding borrows, so it
        // is valid while the thread is bound; the depth check above proved a
        // section was open, so it is.
        if state.saved == 0 && unsafe { (*mail).load(Ordering::Relaxed) } {
            ipi_interrupt();
        }
    }

    /// A leaf section touches no thread-local counter: nothing can run on
    /// this simulated CPU between two instructions of the straight-line code
    /// inside (interrupts and cross-CPU calls arrive only where a thread
    /// offers them, which that code does not), so the binding check alone
    /// makes it exclusive.
    #[inline]
    fn local_enter_leaf(&self) -> LocalState {
        LOCAL.with(|l| {
            if l.id.get() != self.id {
                not_bound(l.id.get());
            }
            LocalState {
                cpu: l.cpu.get(),
                saved: 0,
            }
        })
    }

    /// Take a pending IPI, as `local_exit` does; the handler itself runs
    /// nothing while an enclosing section, interrupt or spinlock is open.
    #[inline]
    fn local_exit_leaf(&self, _: LocalState) {
        let mail = LOCAL.with(|l| l.mail.get());
        // SAFETY: a bound thread's `mail` points at its CPU's flag in the
        // `Cpus` its binding borrows, valid while it is bound; an unbound
        // thread's at the static NO_MAIL.
        if unsafe { (*mail).load(Ordering::Relaxed) } {
            ipi_interrupt();
        }
    }

    unsafe fn set_per_cpu_offset(&self, cpu: usize, offset: usize) {
        self.percpu_base.set(cpu, offset);
    }

    #[inline]
    unsafe fn this_cpu_add(&self, ptr: usize, val: u64, size: usize) -> bool {
        // SAFETY: the caller's guarantee is `PercpuBase::add`'s; the offsets
        // are the ones this machine gave (promise 6).
        unsafe { self.percpu_base.add(self.id, ptr, val, size) }
    }

    /// A core lock taken `spin_lock_irqsave` counts as a simulated
    /// spinlock on a thread bound to this machine: atomic context, and
    /// cross-CPU calls wait until it is released, as interrupts do on bare
    /// metal. A thread outside the machine (a `/proc` reader) takes it as
    /// a plain lock.
    #[inline]
    fn irq_save(&self) -> usize {
        LOCAL.with(|l| {
            if l.id.get() == self.id {
                l.spin.set(l.spin.get() + 1);
                1
            } else {
                0
            }
        })
    }

    #[inline]
    fn irq_restore(&self, flags: usize) {
        if flags == 0 {
            return;
        }
        let mail = LOCAL.with(|l| {
            l.spin.set(l.spin.get() - 1);
            l.interruptible().then(|| l.mail.get())
        });
        // Interrupts are on again: take a pending IPI, as `local_exit` does.
        // SAFETY: `mail` points at the flag of the CPU this bound thread
        // holds (set by `install`), valid while it is bound, which it is:
        // `irq_save` counted it as this machine's.
        if mail.is_some_and(|m| unsafe { (*m).load(Ordering::Relaxed) }) {
            ipi_interrupt();
        }
    }

    #[inline]
    fn in_atomic(&self) -> bool {
        LOCAL.with(|l| {
            l.id.get() == self.id && (l.depth.get() != 0 || l.irq.get() != 0 || l.spin.get() != 0)
        })
    }

    #[inline]
    fn in_interrupt(&self) -> bool {
        LOCAL.with(|l| l.id.get() == self.id && l.irq.get() != 0)
    }

    #[inline]
    fn direct_map(&self) -> DirectMap {
        DirectMap {
            base: self.phys.base(),
            end: self.direct_end,
        }
    }

    fn memory_is_zeroed(&self) -> bool {
        true
    }

    fn vmap_range(&self) -> Option<(usize, usize)> {
        Some(self.vmap.range())
    }

    fn map_kernel_range(
        &self,
        va: usize,
        pa: u64,
        size: usize,
        prot: PgProt,
        _page_shift: u32,
    ) -> kmem::Result<()> {
        let device = device::find(&self.devices, pa, size as u64);
        let pages_ok = matches!(device, Ok(Some(_)))
            || (device.is_ok()
                && pa
                    .checked_add(size as u64)
                    .is_some_and(|end| end <= self.phys.size()));
        if !self.vmap.contains_range(va, size) || !pages_ok || pa % PAGE_SIZE as u64 != 0 {
            kmem::report!(
                self,
                Level::Err,
                "kmem-sim: map_kernel_range({va:#x}, {pa:#x}, {size:#x}: outside the vmap area, physical memory or a device"
            );
            return Err(kmem::Error::InvalidArgument);
        }
        match device {
            Ok(Some((d, off))) => self
                .vmap
                .map_file(d.fd(), off, va, size, prot.writable())
                .map(|()| d.activate()),
            _ => self.vmap.map(&self.phys, va, pa, size, prot.writable()),
        }
        .map_err(|e| {
            kmem::report!(
                self,
                Level::Err,
                "kmem-sim: map_kernel_range({va:#x}, {pa:#x}, {size:#x}): {e}"
            );
            kmem::Error::NoMemory
        })
    }

    fn unmap_kernel_range(&self, va: usize, size: usize) {
        if !self.vmap.contains_range(va, size) {
            kmem::report!(
                self,
                Level::Err,
                "kmem-sim: unmap_kernel_range({va:#x}, {size:#x}): not inside the vmap area"
            );
            return;
        }
        if let Err(e) = self.vmap.unmap(va, size) {
            kmem::report!(
                self,
                Level::Err,
                "kmem-sim: unmap_kernel_range({va:#x}, {size:#x}): {e}"
            );
        }
    }

    fn wait_event(
        &self,
        channel: usize,
        cond: &mut dyn FnMut() -> bool,
        timeout_ns: Option<u64>,
    ) -> bool {
        if self.in_atomic() {
            let task = self.current();
            kmem::report!(
                self,
                Level::Err,
                "BUG: sleeping function called from invalid context"
            );
            kmem::report!(
                self,
                Level::Err,
                "in_atomic(): 1, irqs_disabled(): {}, non_block: 0, pid: {}, name: {}",
                LOCAL.with(|l| (l.depth.get() != 0 || l.irq.get() != 0) as u8),
                task.pid,
                task.comm()
            );
            return cond();
        }
        let deadline = timeout_ns.and_then(|t| Instant::now().checked_add(Duration::from_nanos(t)));
        let slot = self.waits.slot(channel);
        loop {
            let seen = match slot.check(cond) {
                Ok(()) => return true,
                Err(generation) => generation,
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            let held = self.release_cpu();
            slot.sleep(seen, deadline);
            self.reacquire_cpu(held);
        }
    }

    /// Another thread is bound to one of this machine's CPUs (or waiting
    /// for one): it may free memory while the caller sleeps. A machine
    /// driven by one thread, as `kmem replay` drives it, has nobody else.
    fn others_can_run(&self) -> bool {
        let me = LOCAL.with(|l| l.id.get() == self.id) as usize;
        self.cpus.attached.load(Ordering::SeqCst) > me
    }

    fn wake_up(&self, channel: usize) {
        self.waits.wake_up(channel);
    }

    /// Runs `f` at once when `cpu` is the caller's. For another CPU: if no
    /// thread holds it, on a helper thread bound to it as its idle task;
    /// else its holder runs `f` at its next chance (leaving a CPU-local
    /// section, waiting for a cross-CPU call of its own, going to sleep in
    /// `wait_event`, unbinding). Meanwhile a bound caller runs calls posted
    /// to its own CPU. A thread not bound to this platform may call it.
    ///
    /// From atomic context, for another CPU, it reports Linux's warning and
    /// returns [`kmem::Error::Busy`]. A CPU left unusable by a binding
    /// dropped inside a section gives `Busy` too. A panic in `f` is
    /// propagated to the caller.
    fn smp_call_function_single(
        &self,
        cpu: usize,
        f: &mut (dyn FnMut() + Send),
    ) -> kmem::Result<()> {
        if cpu >= self.nr_cpus {
            return Err(kmem::Error::InvalidArgument);
        }
        let (bound, me) = LOCAL.with(|l| (l.id.get() == self.id, l.cpu.get()));
        if bound && me == cpu {
            let state = self.local_enter();
            f();
            self.local_exit(state);
            return Ok(());
        }
        if self.in_atomic() {
            let task = self.current();
            kmem::report!(
                self,
                Level::Warning,
                "WARNING: CPU: {me} PID: {} at kernel/smp.c smp_call_function_single: \
                 called with interrupts disabled (target CPU {cpu})",
                task.pid
            );
            kmem::report!(
                self,
                Level::Warning,
                "in_atomic(): 1, in_interrupt(): {}, pid: {}, name: {}",
                self.in_interrupt() as u8,
                task.pid,
                task.comm()
            );
            return Err(kmem::Error::Busy);
        }
        let state = Arc::new(AtomicU8::new(CALL_PENDING));
        // SAFETY: `f` is not used again until `state` leaves CALL_PENDING:
        // every path below waits for that before returning, and nothing in
        // between unwinds (calls run for others catch their panics).
        let call = unsafe { Call::new(f, Arc::clone(&state)) };
        match self.cpus.post(cpu, call) {
            Posted::Refused => return Err(kmem::Error::Busy),
            Posted::Queued => self.wait_call(&state, cpu),
            Posted::Reserved(token, rng) => std::thread::scope(|s| {
                let helper = std::thread::Builder::new()
                    .name(format!("swapper/{cpu}"))
                    .spawn_scoped(s, move || {
                        let _binding = self.adopt(cpu, token, rng);
                        self.cpus.service(cpu);
                    });
                if helper.is_err() {
                    // The call sits in a reserved mailbox nobody will run,
                    // pointing into this frame: there is no safe way on.
                    eprintln!("kmem-sim: cannot spawn a thread for a cross-CPU call");
                    std::process::abort();
                }
                self.wait_call(&state, cpu);
            }),
        }
        match state.load(Ordering::Relaxed) {
            CALL_DONE => Ok(()),
            CALL_PANICKED => panic!("smp_call_function_single: the function panicked on CPU {cpu}"),
            _ => Err(kmem::Error::Busy),
        }
    }

    fn report(&self, level: Level, msg: fmt::Arguments<'_>) {
        let text = msg.to_string();
        if self.echo {
            eprintln!("{text}");
        }
        lock(&self.reports).push((level, text));
    }

    fn task_flags(&self) -> u32 {
        LOCAL.with(|l| l.pflags.get())
    }

    fn set_task_flags(&self, flags: u32) -> bool {
        LOCAL.with(|l| l.pflags.set(flags));
        true
    }

    fn out_of_memory(&self, oc: &kmem::oom_kill::OomControl<'_>) -> bool {
        self.tasks.out_of_memory(oc)
    }

    fn current(&self) -> Task {
        LOCAL.with(|l| {
            if l.id.get() == self.id {
                l.task.get()
            } else {
                Task::new(0, "swapper")
            }
        })
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn random_u64(&self) -> u64 {
        LOCAL.with(|l| {
            if l.id.get() == self.id {
                let mut s = l.rng.get();
                let v = splitmix64(&mut s);
                l.rng.set(s);
                v
            } else {
                let mut s = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
                splitmix64(&mut s)
            }
        })
    }
}
