//! The platform a process gives the kmem core when kmem is its malloc.
//!
//! - **Physical memory** is one private anonymous mapping of the process
//!   (`MAP_NORESERVE`, so it costs nothing until touched), its start aligned
//!   to a max-order block so that buddy blocks are aligned virtually as they
//!   are physically. It is the direct map: physical address `pa` is at
//!   `base + pa`. Private, so a `fork()`ed child gets a copy, as it does of
//!   glibc's heap.
//! - **CPUs are slots, one per thread**, as mimalloc gives each thread a
//!   heap: a thread takes a free slot at its first allocation and gives it
//!   back when it exits (a `pthread` key destructor), so the core's per-CPU
//!   fast paths stay lockless: a slot has one thread, and a CPU-local
//!   section only counts its depth. The slots past the exclusive ones are
//!   shared: a thread that finds no free exclusive slot (more threads alive
//!   than slots) takes a shared one and holds its lock inside each section,
//!   which is what promise 1 of [`Platform`] asks. docs/malloc.md says why
//!   slots and not the real CPU with `rseq`.
//! - **Cross-CPU calls** run only on the caller's own slot or on a slot no
//!   thread holds (the caller borrows it for the call); a slot another
//!   thread holds cannot be interrupted, and the call answers
//!   `NotSupported`, so the core falls back as it does for a CPU that is
//!   offline.
//! - **Reports** go to standard error, one `write` per line, warnings and
//!   worse only unless `KMEM_MALLOC_VERBOSE=1`.
//! - **Waiting** is a futex per wait channel hash; the page allocator never
//!   sleeps for another thread's frees (`others_can_run` is false), so an
//!   allocation that finds no memory fails with `ENOMEM` at once, as
//!   glibc's malloc does.
//!
//! Nothing on the allocation paths calls `malloc`: system calls go through
//! rustix's raw Linux backend or libc functions that do not allocate
//! (`clock_gettime`, `prctl`, `sysconf`), and thread-local state is one
//! zero-initialised initial-exec TLS variable. The libc calls that may
//! allocate (`pthread_setspecific` for a key past the first 32) run only
//! once the machine is up.

use core::cell::Cell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use kmem::platform::{DirectMap, Level, LocalState, Platform, Task};
use kmem::Error;
use rustix::thread::futex;

/// The most slots a machine may have (the core's `NR_CPUS`).
pub const MAX_SLOTS: usize = kmem::mmzone::NR_CPUS;

/// No slot taken yet.
const NO_SLOT: u32 = u32::MAX;
/// The thread is exiting: it uses a shared slot from now on, so that an
/// allocation from a later destructor does not take an exclusive slot that
/// nobody would give back.
const EXITING: u32 = u32::MAX - 1;
/// Set in a thread's slot number when the slot is shared (locked).
const SHARED: u32 = 1 << 31;

/// The slot index of a thread's slot value: the [`SHARED`] bit masked off
/// with the bound the slot table has, so that indexing needs no check.
#[inline(always)]
const fn index(s: u32) -> usize {
    s as usize & (MAX_SLOTS - 1)
}

const _: () = assert!(MAX_SLOTS.is_power_of_two() && MAX_SLOTS <= SHARED as usize);

/// Slot states.
const FREE: u32 = 0;
const OWNED: u32 = 1;
const BORROWED: u32 = 2;

/// A thread's state. All of it is zero in a new thread, so that it can
/// live in `.tbss` (see [`thread`]).
struct ThreadState {
    /// This thread's slot, [`SHARED`] set when it is a shared one, stored
    /// complemented (zero is [`NO_SLOT`]).
    slot_not: Cell<u32>,
    /// Depth of CPU-local sections (full ones) this thread is in.
    depth: Cell<u32>,
    /// `current->flags` (the memalloc scope bits).
    flags: Cell<u32>,
    /// Depth of malloc calls (realloc calls malloc and free).
    calls: Cell<u32>,
    /// Calls that found a reporting round pending (see `report_tick`).
    tick: Cell<u32>,
    /// This thread is the one calling `fork()`: the gate lets it through.
    forker: Cell<bool>,
    /// The slot was taken during boot; its exit is not registered yet.
    key_pending: Cell<bool>,
}

impl ThreadState {
    #[inline(always)]
    fn slot(&self) -> u32 {
        !self.slot_not.get()
    }

    #[inline(always)]
    fn set_slot(&self, s: u32) {
        self.slot_not.set(!s)
    }
}

// The calling thread's state, in the initial-exec TLS model: one load of
// a GOT entry and an `%fs`-relative add, where Rust's `thread_local!` in a
// shared library calls `__tls_get_addr` for every access (a third of the
// instructions of a malloc+free pair, measured with callgrind). Stable
// Rust has no TLS model attribute, so the variable is declared here and
// reached with `asm!`, as mimalloc declares its own `initial-exec`. A
// library with initial-exec TLS is loaded at startup (`LD_PRELOAD`) or
// linked in; `dlopen` of it works while glibc's static TLS surplus lasts.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl kmem_malloc_thread_state",
    ".hidden kmem_malloc_thread_state",
    ".type kmem_malloc_thread_state, @object",
    ".size kmem_malloc_thread_state, 32",
    "kmem_malloc_thread_state:",
    ".zero 32",
    ".popsection",
);

const _: () = assert!(size_of::<ThreadState>() <= 32);

/// The calling thread's [`ThreadState`]. The reference never leaves the
/// thread (`ThreadState` is not `Sync`), and the thread's TLS block lives
/// as long as the thread.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn thread() -> &'static ThreadState {
    let p: *const ThreadState;
    // SAFETY: `kmem_malloc_thread_state` is a 32-byte, 8-aligned `.tbss`
    // object (above); its GOT entry holds its offset from the thread
    // pointer, and `%fs:0` holds the thread pointer itself (the x86_64
    // TLS ABI), so `p` is this thread's copy. The two words it reads (the
    // GOT entry and the thread pointer) never change while the thread
    // runs, which is why it may say `nomem` although it reads them: the
    // compiler may then compute the address once per function. The `add`
    // changes the flags, so it does not say `preserves_flags`.
    unsafe {
        core::arch::asm!(
            "movq kmem_malloc_thread_state@GOTTPOFF(%rip), {p}",
            "addq %fs:0, {p}",
            p = out(reg) p,
            options(att_syntax, pure, nomem, nostack)
        );
        // SAFETY: zero bytes are a valid `ThreadState` (Cells of integers
        // and a bool), and only this thread reaches its copy.
        &*p
    }
}

#[cfg(not(target_arch = "x86_64"))]
thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            slot_not: Cell::new(0),
            depth: Cell::new(0),
            flags: Cell::new(0),
            calls: Cell::new(0),
            tick: Cell::new(0),
            forker: Cell::new(false),
            key_pending: Cell::new(false),
        }
    };
}

/// The calling thread's [`ThreadState`] (see the x86_64 version).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn thread() -> &'static ThreadState {
    // SAFETY: the reference stays on this thread (`ThreadState` is not
    // `Sync`), whose thread-local lives as long as it runs.
    THREAD.with(|t| unsafe { &*(t as *const ThreadState) })
}

/// A malloc call entered on its fast path ([`MallocPlatform::fast_enter`]):
/// the thread's exclusive slot as a leaf section. Only `fast_enter` makes
/// one, and [`MallocPlatform::fast_exit`] or
/// [`MallocPlatform::fast_abandon`] consumes it, so the slot it names is
/// always the calling thread's own.
#[must_use = "a fast call holds the slot's fork mark until fast_exit or fast_abandon"]
pub struct FastCall(LocalState);

impl FastCall {
    /// The leaf section, for the core's fast paths
    /// (`Kmem::kmalloc_fastpath_in`, `kfree_fastpath_in`): open on this
    /// thread until the call is consumed.
    #[inline(always)]
    pub fn section(&self) -> &LocalState {
        &self.0
    }
}

/// Set or clear exclusive slot `i`'s mark. Only the slot's owner writes
/// it; clearing it releases the call's writes to the forker's acquire.
#[inline(always)]
fn set_mark(i: usize, on: bool) {
    SLOTS[i]
        .active
        .store(on as u32, if on { Relaxed } else { Release });
}

/// 1 while a `fork()` is between its prepare handler and its parent or
/// child handler: no malloc call may start (see [`MallocPlatform::call_enter`]).
static FORKING: AtomicU32 = AtomicU32::new(0);

/// One `fork()` at a time through the gate: glibc runs the prepare
/// handlers without a lock of its own, and two forkers would otherwise
/// share `FORKING` (the first to finish opening it under the second).
/// Taken in [`MallocPlatform::fork_prepare`], released in
/// [`MallocPlatform::fork_parent`], reset in the child, where its holder is
/// the only thread.
static FORK_LOCK: FutexLock = FutexLock::new();

/// A futex lock: 0 free, 1 held, 2 held with waiters (Drepper's "Futexes
/// Are Tricky", mutex 2), so an uncontended unlock makes no system call.
struct FutexLock(AtomicU32);

impl FutexLock {
    const fn new() -> Self {
        FutexLock(AtomicU32::new(0))
    }

    fn lock(&self) {
        if self.0.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            return;
        }
        while self.0.swap(2, Acquire) != 0 {
            // Woken by `unlock`, or EAGAIN when the lock moved meanwhile.
            let _ = futex::wait(&self.0, futex::Flags::PRIVATE, 2, None);
        }
    }

    fn unlock(&self) {
        if self.0.swap(0, Release) == 2 {
            let _ = futex::wake(&self.0, futex::Flags::PRIVATE, 1);
        }
    }

    /// After `fork()`, in the child: no thread that could hold it exists.
    fn reset(&self) {
        self.0.store(0, Relaxed);
    }
}

/// One CPU slot, on its own cache line.
#[repr(align(64))]
struct Slot {
    /// [`FREE`], [`OWNED`] (by a live thread) or [`BORROWED`] (by a
    /// cross-CPU call). Exclusive slots only.
    state: AtomicU32,
    /// The lock of a shared slot.
    lock: FutexLock,
    /// Threads of this slot inside a malloc call now (0 or 1 on an
    /// exclusive slot): `fork()` waits for every slot's to be 0.
    active: AtomicU32,
}

impl Slot {
    fn lock(&self) {
        self.lock.lock()
    }

    fn unlock(&self) {
        self.lock.unlock()
    }
}

/// Wait channels are hashed onto this many futex words.
const WAIT_WORDS: usize = 64;

/// The only platform instance of the process (thread-local slots are
/// process-wide, so two would share them).
static INSTANCE: AtomicBool = AtomicBool::new(false);
/// The slots, static so that the platform stays small (the machine is
/// booted on whatever stack the first `malloc` runs on).
static SLOTS: [Slot; MAX_SLOTS] = [const {
    Slot {
        state: AtomicU32::new(FREE),
        lock: FutexLock::new(),
        active: AtomicU32::new(0),
    }
}; MAX_SLOTS];
/// The wait channels' futex words.
static WAIT: [AtomicU32; WAIT_WORDS] = [const { AtomicU32::new(0) }; WAIT_WORDS];

/// Physical memory in the process's own address space, threads as CPUs.
pub struct MallocPlatform {
    /// Virtual address of physical address 0.
    base: usize,
    /// Bytes of physical memory.
    mem: u64,
    /// Slots `0..exclusive` are taken by one thread each.
    exclusive: usize,
    /// `nr_cpu_ids`: exclusive slots plus shared ones.
    nr_cpus: usize,
    /// Futex words of the wait channels.
    wait: &'static [AtomicU32; WAIT_WORDS],
    /// Threads holding an exclusive slot now (for reports and tests).
    live: AtomicUsize,
    /// splitmix64 state for `get_random_u64()`, seeded from the kernel.
    rng: AtomicU64,
    /// Report info-level lines too.
    verbose: bool,
    /// `membarrier(PRIVATE_EXPEDITED)` is registered: the fork gate's
    /// callers need only a compiler fence, the forker pays the barrier.
    membarrier: bool,
    /// The `pthread` key whose destructor gives a thread's slot back.
    key: libc::pthread_key_t,
    /// Called with the slot of an exiting thread, inside a section of it,
    /// before the slot is given back (the machine drains its page lists).
    on_exit: AtomicUsize,
    /// Runs a free page reporting round (a `fn()` as `usize`, 0: none).
    on_report: AtomicUsize,
    /// Delay from a reporting notification to its round, in ns
    /// (`u64::MAX`: never report).
    decay_ns: u64,
    /// When the pending round is due (monotonic ns); 0: none pending.
    report_due: AtomicU64,
}

/// What [`MallocPlatform::new`] can fail on.
#[derive(Debug)]
pub enum SetupError {
    /// A second platform in the process.
    Twice,
    /// The address space reservation failed.
    Reserve(usize),
    /// `pthread_key_create` failed.
    Key,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Twice => write!(f, "kmem-malloc: a second machine in one process"),
            SetupError::Reserve(n) => write!(
                f,
                "kmem-malloc: cannot reserve {n} bytes of address space for physical memory: set KMEM_MALLOC_MEM to less"
            ),
            SetupError::Key => write!(f, "kmem-malloc: pthread_key_create failed"),
        }
    }
}

/// Alignment of physical address 0: a max-order block.
const BASE_ALIGN: usize = kmem::PAGE_SIZE << kmem::MAX_PAGE_ORDER;

/// Map `len` bytes of private anonymous memory, `MAP_NORESERVE`, where the
/// kernel picks: physical memory's mapping, or `None` when the address
/// space (or, under strict overcommit, the commit limit) has no room.
fn reserve(len: usize) -> Option<*mut core::ffi::c_void> {
    // SAFETY: a fresh private anonymous mapping at an address the kernel
    // picks aliases nothing.
    unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::NORESERVE,
        )
    }
    .ok()
}

/// Whether [`MallocPlatform::new`] could map `mem` bytes of physical memory
/// now (it maps and unmaps them).
pub fn reservable(mem: u64) -> bool {
    let len = mem as usize + BASE_ALIGN;
    match reserve(len) {
        Some(p) => {
            // SAFETY: the mapping just made, which nothing uses.
            let _ = unsafe { rustix::mm::munmap(p, len) };
            true
        }
        None => false,
    }
}

impl MallocPlatform {
    /// Reserve `mem` bytes of physical memory and `exclusive + shared`
    /// CPU slots. Fails when another platform exists in the process or the
    /// address space is not there. `decay_ns` is the delay from a free
    /// page reporting notification to its round (`u64::MAX`: never).
    pub fn new(
        mem: u64,
        exclusive: usize,
        shared: usize,
        verbose: bool,
        decay_ns: u64,
    ) -> Result<Self, SetupError> {
        if INSTANCE.swap(true, AcqRel) {
            return Err(SetupError::Twice);
        }
        let len = mem as usize + BASE_ALIGN;
        // It is never unmapped once the platform exists (promise 2:
        // physical memory lives as long as the platform, which lives as
        // long as the process).
        let Some(p) = reserve(len) else {
            // No platform after all: the caller may try a smaller one.
            INSTANCE.store(false, Release);
            return Err(SetupError::Reserve(len));
        };
        let base = (p as usize).next_multiple_of(BASE_ALIGN);
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; the destructor is an
        // `extern "C" fn(*mut c_void)`.
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
            // SAFETY: the mapping just made, which nothing uses yet.
            let _ = unsafe { rustix::mm::munmap(p, len) };
            INSTANCE.store(false, Release);
            return Err(SetupError::Key);
        }
        // At least one shared slot, for the threads past the exclusive ones.
        let shared = shared.clamp(1, MAX_SLOTS);
        let exclusive = exclusive.min(MAX_SLOTS - shared);
        let nr_cpus = exclusive + shared;
        let membarrier =
            rustix::thread::membarrier(rustix::thread::MembarrierCommand::RegisterPrivateExpedited)
                .is_ok();
        let mut seed = [0u8; 8];
        let _ = rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty());
        Ok(MallocPlatform {
            base,
            mem,
            exclusive,
            nr_cpus,
            wait: &WAIT,
            live: AtomicUsize::new(0),
            rng: AtomicU64::new(u64::from_ne_bytes(seed)),
            verbose,
            membarrier,
            key,
            on_exit: AtomicUsize::new(0),
            on_report: AtomicUsize::new(0),
            decay_ns,
            report_due: AtomicU64::new(0),
        })
    }

    /// Bytes of physical memory.
    pub fn mem(&self) -> u64 {
        self.mem
    }

    /// Whether `p` lies in physical memory's direct map.
    #[inline]
    pub fn in_direct_map(&self, p: usize) -> bool {
        p.wrapping_sub(self.base) < self.mem as usize
    }

    /// Threads that hold an exclusive slot now.
    pub fn live_threads(&self) -> usize {
        self.live.load(Relaxed)
    }

    /// Slots taken by one thread each; the rest are shared.
    pub fn exclusive_slots(&self) -> usize {
        self.exclusive
    }

    /// The slot of the calling thread, without taking one.
    pub fn current_slot(&self) -> Option<usize> {
        let s = thread().slot();
        (s != NO_SLOT && s != EXITING).then_some(index(s))
    }

    /// Forget a pending reporting round (boot runs its own first round).
    pub fn cancel_report(&self) {
        self.report_due.store(0, Relaxed);
    }

    /// Run `f` for each free page reporting round: the first malloc call to
    /// end `decay_ns` after a notification runs it, before it returns.
    pub fn set_on_report(&self, f: fn()) {
        self.on_report.store(f as usize, Release);
    }

    /// Call `f` (a `fn()` as `usize`) from an exiting thread's destructor,
    /// inside a section of its slot, before the slot is given back.
    pub fn set_on_exit(&self, f: fn()) {
        self.on_exit.store(f as usize, Release);
    }

    /// Enter a malloc call: mark the caller's slot active, unless a
    /// `fork()` is under way, in which case wait for it to end. Nests.
    ///
    /// With the marks, `fork()` ([`fork_prepare`](Self::fork_prepare))
    /// waits until no thread is inside the allocator, so the child never
    /// inherits a lock another thread held or a sheaf half pushed, as
    /// glibc's malloc takes its arena locks around `fork()`. The order is
    /// Dekker's: the caller stores its mark and then reads `FORKING`; the
    /// forker stores `FORKING` and then reads the marks. The forker's
    /// `membarrier()` puts a full barrier on every running thread between
    /// the two, so the caller's side needs only a compiler fence.
    #[inline(always)]
    pub fn call_enter(&self) {
        let d = thread().calls.get();
        thread().calls.set(d + 1);
        if d == 0 {
            self.gate_in();
        }
    }

    /// [`call_enter`](Self::call_enter), left when the guard drops.
    #[inline(always)]
    pub fn call(&self) -> Call<'_> {
        self.call_enter();
        Call(self)
    }

    /// Leave a malloc call entered with [`call_enter`](Self::call_enter).
    #[inline(always)]
    pub fn call_exit(&self) {
        let d = thread().calls.get() - 1;
        if d == 0 && self.report_tick() {
            self.run_report();
        }
        thread().calls.set(d);
        if d == 0 {
            self.mark(false);
        }
    }

    /// [`call_enter`](Self::call_enter) for the fast paths of `malloc` and
    /// `free`, or `None` with nothing changed: only an outermost call on
    /// an exclusive slot while no `fork()` is under way enters here. The
    /// caller then takes its slow path, which enters with `call_enter`.
    ///
    /// The answer holds the slot's leaf section, which an exclusive slot
    /// needs nothing more for (see [`local_enter_leaf`](Platform::local_enter_leaf)):
    /// the core's fast path runs in it (`Kmem::kmalloc_fastpath_in`), and
    /// [`fast_exit`](Self::fast_exit) or [`fast_abandon`](Self::fast_abandon)
    /// consumes it, so the slot is read and checked once a call. None of
    /// the three has a call in it but for a tail call: a fast path built on
    /// them saves no registers.
    #[inline(always)]
    pub fn fast_enter(&self) -> Option<FastCall> {
        let t = thread();
        let s = t.slot();
        if s & SHARED != 0 || t.calls.get() != 0 {
            return None;
        }
        // The depth first, as in `call_enter`: a call that begins in
        // between (a signal handler's) nests instead of marking the slot.
        t.calls.set(1);
        let call = FastCall(LocalState {
            cpu: index(s),
            saved: 0,
        });
        set_mark(call.0.cpu, true);
        self.caller_fence();
        if FORKING.load(Relaxed) != 0 {
            self.fast_abandon(call);
            return None;
        }
        Some(call)
    }

    /// Leave a call entered with [`fast_enter`](Self::fast_enter),
    /// returning `r`; a pending reporting round is left to a cold
    /// function, entered by a tail call.
    #[inline(always)]
    pub fn fast_exit<T>(&self, call: FastCall, r: T) -> T {
        if self.report_tick() {
            return self.fast_exit_report(call, r);
        }
        self.fast_abandon(call);
        r
    }

    /// Leave a call entered with [`fast_enter`](Self::fast_enter) that
    /// did nothing: the slow path, which follows, checks for a pending
    /// reporting round.
    #[inline(always)]
    pub fn fast_abandon(&self, call: FastCall) {
        thread().calls.set(0);
        set_mark(call.0.cpu, false);
    }

    /// The caller's side of Dekker's order with the forker, between its
    /// mark and its read of `FORKING`: the forker's `membarrier()` puts a
    /// full barrier on every running thread, so a compiler fence is enough
    /// here; without membarrier, a real fence.
    #[inline(always)]
    fn caller_fence(&self) {
        if self.membarrier {
            core::sync::atomic::compiler_fence(SeqCst);
        } else {
            core::sync::atomic::fence(SeqCst);
        }
    }

    /// [`fast_exit`](Self::fast_exit) when a reporting round may be due:
    /// run it if it is, inside the call, then leave.
    #[cold]
    #[inline(never)]
    fn fast_exit_report<T>(&self, call: FastCall, r: T) -> T {
        self.run_report();
        self.fast_abandon(call);
        r
    }

    /// Whether to look at a pending reporting round now: every 64th call
    /// of a thread while one is pending (the clock is read that often
    /// only), counted inline so that the other calls leave by their fast
    /// exit; never while none is pending (one load).
    #[inline(always)]
    fn report_tick(&self) -> bool {
        if self.report_due.load(Relaxed) == 0 {
            return false;
        }
        let t = thread().tick.get().wrapping_add(1);
        thread().tick.set(t);
        t % 64 == 0
    }

    /// Run the pending reporting round if it is due. It runs inside the
    /// call, so a `fork()` waits for it.
    #[cold]
    #[inline(never)]
    fn run_report(&self) {
        let due = self.report_due.load(Relaxed);
        if due == 0 || self.now_ns() < due {
            return;
        }
        if self
            .report_due
            .compare_exchange(due, 0, Relaxed, Relaxed)
            .is_ok()
        {
            let f = self.on_report.load(Acquire);
            if f != 0 {
                // SAFETY: `on_report` only ever holds a `fn()` (set_on_report).
                let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(f) };
                f();
            }
        }
    }

    #[inline(always)]
    fn mark(&self, on: bool) {
        let s = thread().slot();
        if s & SHARED == 0 {
            set_mark(index(s), on);
        } else {
            self.mark_shared(on);
        }
    }

    /// [`mark`](Self::mark) for a thread without an exclusive slot yet or
    /// on a shared one: several threads count on its mark.
    #[cold]
    #[inline(never)]
    fn mark_shared(&self, on: bool) {
        let s = self.slot();
        let a = &SLOTS[index(s)].active;
        if s & SHARED == 0 {
            set_mark(index(s), on);
        } else if on {
            a.fetch_add(1, Relaxed);
        } else {
            a.fetch_sub(1, Release);
        }
    }

    /// [`local_enter_leaf`](Platform::local_enter_leaf) for a thread
    /// without an exclusive slot yet or on a shared one.
    #[cold]
    #[inline(never)]
    fn enter_leaf_shared(&self) -> LocalState {
        let s = self.slot();
        let mut saved = 0;
        if s & SHARED != 0 && thread().depth.get() == 0 {
            SLOTS[index(s)].lock();
            saved = 1;
        }
        LocalState {
            cpu: index(s),
            saved,
        }
    }

    #[inline(always)]
    fn gate_in(&self) {
        loop {
            self.mark(true);
            self.caller_fence();
            if FORKING.load(Relaxed) == 0 || thread().forker.get() {
                return;
            }
            self.gate_wait();
        }
    }

    #[cold]
    #[inline(never)]
    fn gate_wait(&self) {
        self.mark(false);
        while FORKING.load(Acquire) != 0 {
            let _ = futex::wait(&FORKING, futex::Flags::PRIVATE, 1, None);
        }
    }

    /// The `pthread_atfork` prepare handler: take `FORK_LOCK`, close the
    /// gate and wait until no other thread is inside a malloc call.
    pub fn fork_prepare(&self) {
        FORK_LOCK.lock();
        thread().forker.set(true);
        FORKING.store(1, SeqCst);
        // Dekker's order on the forker's side: a barrier on every running
        // thread, or (without membarrier, when callers fence themselves)
        // one here.
        if !self.membarrier
            || rustix::thread::membarrier(rustix::thread::MembarrierCommand::PrivateExpedited)
                .is_err()
        {
            core::sync::atomic::fence(SeqCst);
        }
        let me = self.current_slot();
        let mine = thread().calls.get() != 0;
        for (i, s) in SLOTS[..self.nr_cpus].iter().enumerate() {
            // The forker's own mark, if it forks from inside a call (an
            // atfork handler that allocates), is one of them.
            let own = u32::from(mine && Some(i) == me);
            while s.active.load(Acquire) > own {
                rustix::thread::sched_yield();
            }
        }
    }

    /// The `pthread_atfork` parent handler: open the gate and release
    /// `FORK_LOCK`.
    pub fn fork_parent(&self) {
        thread().forker.set(false);
        FORKING.store(0, Release);
        let _ = futex::wake(&FORKING, futex::Flags::PRIVATE, i32::MAX as u32);
        FORK_LOCK.unlock();
    }

    /// After `fork()`, in the child: only the calling thread survived, so
    /// every other exclusive slot is free again (its sheaves and lists keep
    /// their objects for the next thread that takes it) and no shared lock
    /// is held by a thread that exists.
    ///
    /// # Safety
    ///
    /// Only from a `pthread_atfork` child handler, before the child runs
    /// anything else.
    pub unsafe fn after_fork_in_child(&self) {
        let mine = self.current_slot();
        let mut live = 0;
        for (i, s) in SLOTS[..self.nr_cpus].iter().enumerate() {
            s.lock.reset();
            s.active.store(
                u32::from(Some(i) == mine && thread().calls.get() != 0),
                Relaxed,
            );
            if Some(i) == mine && i < self.exclusive {
                s.state.store(OWNED, Relaxed);
                live += 1;
            } else {
                s.state.store(FREE, Relaxed);
            }
        }
        self.live.store(live, Relaxed);
        thread().depth.set(0);
        thread().forker.set(false);
        FORKING.store(0, Relaxed);
        FORK_LOCK.reset();
    }

    /// The calling thread's slot, taking one at its first call.
    #[inline(always)]
    fn slot(&self) -> u32 {
        let s = thread().slot();
        if s < EXITING {
            return s;
        }
        self.take_slot(s)
    }

    #[cold]
    #[inline(never)]
    fn take_slot(&self, s: u32) -> u32 {
        if s == NO_SLOT {
            for (i, slot) in SLOTS[..self.exclusive].iter().enumerate() {
                if slot.state.load(Relaxed) == FREE
                    && slot
                        .state
                        .compare_exchange(FREE, OWNED, Acquire, Relaxed)
                        .is_ok()
                {
                    self.live.fetch_add(1, Relaxed);
                    // The slot first: `pthread_setspecific` may call
                    // `calloc` (a key past glibc's first 32), which then
                    // runs on this slot instead of taking another.
                    thread().set_slot(i as u32);
                    if crate::MACHINE.get().is_some() {
                        self.register_exit();
                    } else {
                        // Booting: a nested malloc would wait for the boot
                        // it is part of. `machine()` registers it after.
                        thread().key_pending.set(true);
                    }
                    return i as u32;
                }
            }
        }
        // No exclusive slot free, or the thread is exiting: a shared slot,
        // picked by thread id so that threads spread over them.
        let shared = self.nr_cpus - self.exclusive;
        let i = self.exclusive + rustix::thread::gettid().as_raw_nonzero().get() as usize % shared;
        let v = i as u32 | SHARED;
        if s == NO_SLOT {
            thread().set_slot(v);
        }
        v
    }

    /// Arrange for the key destructor to run at this thread's exit (it
    /// runs only for a non-null value).
    pub(crate) fn register_exit(&self) {
        thread().key_pending.set(false);
        // SAFETY: the key was created by `new`; the value is never
        // dereferenced.
        unsafe { libc::pthread_setspecific(self.key, core::ptr::dangling::<libc::c_void>()) };
    }

    /// Whether the calling thread took its slot while booting and has not
    /// registered its exit yet.
    pub(crate) fn exit_pending(&self) -> bool {
        thread().key_pending.get()
    }

    /// Give the calling thread's exclusive slot back (thread exit).
    fn release_slot(&self) {
        let s = thread().slot();
        if s < EXITING && s & SHARED == 0 {
            let f = self.on_exit.load(Acquire);
            if f != 0 {
                // SAFETY: `on_exit` only ever holds a `fn()` (set_on_exit).
                let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(f) };
                // The thread's last work, on the slot it still owns, inside
                // a call so that a fork waits for it.
                let _call = self.call();
                f();
            }
            thread().set_slot(EXITING);
            self.live.fetch_sub(1, Relaxed);
            SLOTS[s as usize].state.store(FREE, Release);
        } else {
            thread().set_slot(EXITING);
        }
    }

    fn wait_word(&self, channel: usize) -> &AtomicU32 {
        &self.wait[(channel >> 4) % WAIT_WORDS]
    }
}

/// A malloc call in progress (see [`MallocPlatform::call_enter`]).
pub struct Call<'a>(&'a MallocPlatform);

impl Drop for Call<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.call_exit();
    }
}

/// The `pthread` key destructor: the exiting thread gives its slot back.
extern "C" fn thread_exit(_: *mut libc::c_void) {
    if let Some(m) = crate::MACHINE.get() {
        m.platform().release_slot();
    }
}

/// The descriptor reports go to: standard error, or a copy of it taken at
/// boot for the exit statistics (programs such as coreutils close standard
/// error in their own exit handlers, which run first).
static REPORT_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(2);

/// Send reports to a copy of standard error from now on.
pub(crate) fn keep_stderr() {
    // SAFETY: `dup` has no memory-safety preconditions.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if fd >= 0 {
        REPORT_FD.store(fd, Relaxed);
    }
}

/// Write `msg` and a newline to standard error in one call, formatted
/// without allocating (into kmem's `seq_buf`).
pub(crate) fn stderr_line(msg: fmt::Arguments<'_>) {
    let mut line = kmem::seq_buf::SeqBuf::<511>::new();
    let _ = line.write_fmt(msg);
    // SAFETY: the descriptor is standard error or kmem's own copy of it,
    // open for as long as this call runs, or the write fails harmlessly.
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(REPORT_FD.load(Relaxed)) };
    let _ = rustix::io::writev(
        fd,
        &[
            rustix::io::IoSlice::new(line.as_str().as_bytes()),
            rustix::io::IoSlice::new(b"\n"),
        ],
    );
}

// SAFETY:
// 1. A CPU-local section of slot `n` is entered only by the thread holding
//    `n`: an exclusive slot has one owner (taken by compare-exchange,
//    given back at thread exit, or borrowed for a cross-CPU call only while
//    free), and a shared slot's sections hold its lock. A thread's slot
//    never changes inside a section (it changes only at the outermost
//    level of a borrowed call, or at thread exit, outside any section).
// 2. Physical memory is the private anonymous mapping made in `new`, never
//    unmapped or touched by this crate except through the core.
// 3. Slots are below `nr_cpus`.
// 4. Cross-CPU calls run `f` only in a section of a slot the caller then
//    holds (its own or a free one it borrowed), else return an error
//    without running it.
// 5. No page tables: `vmap_range` is `None`.
// 6. No per-CPU base register: `this_cpu_add` answers `false`.
unsafe impl Platform for MallocPlatform {
    fn nr_cpu_ids(&self) -> usize {
        self.nr_cpus
    }

    #[inline]
    fn smp_processor_id(&self) -> usize {
        index(self.slot())
    }

    #[inline]
    fn local_enter(&self) -> LocalState {
        let s = self.slot();
        let d = thread().depth.get();
        let mut saved = 0;
        if d == 0 && s & SHARED != 0 {
            SLOTS[index(s)].lock();
            saved = 1;
        }
        thread().depth.set(d + 1);
        LocalState {
            cpu: index(s),
            saved,
        }
    }

    #[inline]
    fn local_exit(&self, state: LocalState) {
        thread().depth.set(thread().depth.get() - 1);
        if state.saved != 0 {
            SLOTS[state.cpu].unlock();
        }
    }

    /// A leaf section on an exclusive slot is a load of the thread's slot:
    /// nothing else runs on it, and nothing inside asks `in_atomic`. On a
    /// shared slot outside any section it takes the slot's lock.
    #[inline(always)]
    fn local_enter_leaf(&self) -> LocalState {
        // One test for the common case: [`NO_SLOT`] and [`EXITING`] have
        // the [`SHARED`] bit too, so an exclusive slot is the only value
        // without it.
        let s = thread().slot();
        if s & SHARED == 0 {
            return LocalState {
                cpu: index(s),
                saved: 0,
            };
        }
        self.enter_leaf_shared()
    }

    #[inline(always)]
    fn local_exit_leaf(&self, state: LocalState) {
        if state.saved != 0 {
            SLOTS[state.cpu].unlock();
        }
    }

    fn in_atomic(&self) -> bool {
        thread().depth.get() != 0
    }

    fn direct_map(&self) -> DirectMap {
        DirectMap {
            base: self.base,
            end: self.mem,
        }
    }

    fn memory_is_zeroed(&self) -> bool {
        true
    }

    fn wait_event(
        &self,
        channel: usize,
        cond: &mut dyn FnMut() -> bool,
        timeout_ns: Option<u64>,
    ) -> bool {
        let w = self.wait_word(channel);
        let deadline = timeout_ns.map(|t| self.now_ns().saturating_add(t));
        loop {
            let seq = w.load(Acquire);
            if cond() {
                return true;
            }
            let left = match deadline {
                Some(d) => {
                    let now = self.now_ns();
                    if now >= d {
                        return cond();
                    }
                    Some(d - now)
                }
                None => None,
            };
            let ts = left.map(|ns| rustix::time::Timespec {
                tv_sec: (ns / 1_000_000_000) as i64,
                tv_nsec: (ns % 1_000_000_000) as i64,
            });
            let _ = futex::wait(w, futex::Flags::PRIVATE, seq, ts.as_ref());
        }
    }

    fn others_can_run(&self) -> bool {
        false
    }

    fn wake_up(&self, channel: usize) {
        let w = self.wait_word(channel);
        w.fetch_add(1, Release);
        let _ = futex::wake(w, futex::Flags::PRIVATE, i32::MAX as u32);
    }

    fn smp_call_function_single(
        &self,
        cpu: usize,
        f: &mut (dyn FnMut() + Send),
    ) -> kmem::Result<()> {
        if cpu >= self.nr_cpus {
            return Err(Error::InvalidArgument);
        }
        let mine = self.slot();
        if index(mine) == cpu {
            let st = self.local_enter();
            f();
            self.local_exit(st);
            return Ok(());
        }
        if thread().depth.get() != 0 {
            // Borrowing changes the thread's slot, which a section forbids.
            return Err(Error::Busy);
        }
        let target = if cpu < self.exclusive {
            if SLOTS[cpu]
                .state
                .compare_exchange(FREE, BORROWED, Acquire, Relaxed)
                .is_err()
            {
                // A live thread holds it: it cannot be interrupted.
                return Err(Error::NotSupported);
            }
            cpu as u32
        } else {
            cpu as u32 | SHARED
        };
        thread().set_slot(target);
        let st = self.local_enter();
        f();
        self.local_exit(st);
        thread().set_slot(mine);
        if cpu < self.exclusive {
            SLOTS[cpu].state.store(FREE, Release);
        }
        Ok(())
    }

    /// Schedule the round `decay_ns` from now, as Linux schedules its
    /// reporting work `PAGE_REPORTING_DELAY` after the first free.
    fn page_reporting_notify(&self) {
        if self.decay_ns != u64::MAX {
            let due = self.now_ns().saturating_add(self.decay_ns).max(1);
            let _ = self.report_due.compare_exchange(0, due, Relaxed, Relaxed);
        }
    }

    /// Memory deferred struct page init holds back has never been used:
    /// leave it out of core dumps (`MADV_DONTDUMP`) until it joins. A
    /// crash then dumps what the program used, not the whole machine (a
    /// core of a 24 GiB machine was 24 GiB long, sparse in a file, zeros
    /// all the way through a pipe to `systemd-coredump`).
    fn memory_deferred(&self, start: u64, end: u64, joined: bool) {
        let advice = if joined {
            rustix::mm::Advice::LinuxDoDump
        } else {
            rustix::mm::Advice::LinuxDontDump
        };
        if end > self.mem {
            return;
        }
        let advise = |start: usize, len: usize| {
            // SAFETY: a range of physical memory's own mapping; the advice
            // changes only what a core dump includes.
            unsafe { rustix::mm::madvise((self.base + start) as *mut _, len, advice) }
        };
        if advise(start as usize, (end - start) as usize).is_err() && joined {
            // Splitting the mapping failed (`vm.max_map_count`, say): dump
            // all of it rather than leave memory in use out.
            let _ = advise(0, self.mem as usize);
        }
    }

    fn report(&self, level: Level, msg: fmt::Arguments<'_>) {
        if level <= Level::Warning || self.verbose {
            stderr_line(msg);
        }
    }

    fn current(&self) -> Task {
        let mut comm = [0u8; 16];
        // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into
        // the buffer it is given.
        unsafe { libc::prctl(libc::PR_GET_NAME, comm.as_mut_ptr()) };
        let n = comm.iter().position(|&b| b == 0).unwrap_or(15);
        Task::new(
            rustix::thread::gettid().as_raw_nonzero().get() as u32,
            core::str::from_utf8(&comm[..n]).unwrap_or("?"),
        )
    }

    /// libc's `clock_gettime` (rustix's parses the vDSO itself, which
    /// valgrind's does not survive).
    fn now_ns(&self) -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid out-pointer; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    fn random_u64(&self) -> u64 {
        // splitmix64.
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn task_flags(&self) -> u32 {
        thread().flags.get()
    }

    fn set_task_flags(&self, flags: u32) -> bool {
        thread().flags.set(flags);
        true
    }

    /// No process to kill: the allocation fails and malloc returns `NULL`
    /// with `ENOMEM`, quietly, as glibc's does.
    fn out_of_memory(&self, _: &kmem::platform::oom::OomControl<'_>) -> bool {
        false
    }
}
