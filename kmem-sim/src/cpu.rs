//! CPUs as threads.
//!
//! A thread becomes "CPU n" of a platform by binding to it
//! ([`SimPlatform::bind`](crate::SimPlatform::bind)). The platform keeps one
//! slot per CPU saying whether some thread holds it; binding waits for the
//! slot to be free. Everything a CPU needs on the allocator's fast path
//! (which platform and CPU the thread is bound to, the CPU-local section
//! depth, the interrupt and spinlock nesting, the current task, the random
//! state) lives in one thread-local and is read and written without atomics.
//!
//! A bound thread can move to another CPU with
//! [`CpuBinding::switch_to`], as a task migrates: it gives its CPU up
//! exactly as unbinding does (pending calls first) and takes the new one
//! exactly as binding does, and only outside any CPU-local section,
//! interrupt or spinlock, so "one holder per CPU" and the mailbox rules
//! below hold across the switch.
//!
//! The thread-local names the platform by a process-unique instance id, so
//! any number of platforms can live in one process; a thread is bound to at
//! most one of them at a time.
//!
//! ## Cross-CPU calls (IPIs)
//!
//! Each CPU slot has a mailbox of functions other threads want run on that
//! CPU (`smp_call_function_single`). Posting takes the slot lock, so the
//! poster sees the CPU's state and queues its call in one step: a free CPU
//! is reserved for a helper thread of the poster's, a held CPU gets the call
//! queued and its "mail pending" flag set. The holder runs its mailbox, in a
//! CPU-local section of its CPU, whenever it could take an interrupt: when
//! its section depth returns to 0 (one relaxed load of the flag, reached
//! through a pointer the thread-local keeps), while it
//! waits for a cross-CPU call of its own, and before it gives the CPU up (to
//! sleep or to unbind). Giving up drains the mailbox and marks the CPU free
//! under the same lock a poster takes, so a call is never left behind in
//! the mailbox of a CPU nobody holds.

use crate::lock;
use core::cell::Cell;
use core::marker::PhantomData;
use kmem::platform::Task;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Source of instance ids; 0 means "not bound".
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh, never reused id (for platform instances and binding tokens).
pub(crate) fn new_instance_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Per-thread CPU state.
pub(crate) struct Local {
    /// Instance id of the platform this thread is bound to, 0 when unbound.
    pub(crate) id: Cell<u64>,
    /// The CPU it is bound to.
    pub(crate) cpu: Cell<usize>,
    /// Token of the binding (see [`CpuBinding`]).
    pub(crate) token: Cell<u64>,
    /// CPU-local section nesting depth.
    pub(crate) depth: Cell<usize>,
    /// Simulated interrupt nesting depth.
    pub(crate) irq: Cell<usize>,
    /// Simulated spinlocks held.
    pub(crate) spin: Cell<usize>,
    /// The running task.
    pub(crate) task: Cell<Task>,
    /// splitmix64 state of this CPU's random source.
    pub(crate) rng: Cell<u64>,
    /// `current->flags` of the task this thread is (memalloc scopes).
    pub(crate) pflags: Cell<u32>,
    /// The "mail pending" flag of the CPU it is bound to ([`Cpus::mail_flag`]),
    /// so closing a section reads it without going through the platform.
    /// Valid while the thread is bound (the binding borrows the `Cpus`);
    /// [`NO_MAIL`] while it is not, so the flag can always be read.
    pub(crate) mail: Cell<*const AtomicBool>,
    /// The CPUs of the machine it is bound to, null while unbound. Valid
    /// while bound, as `mail`: the IPI handler finds the mailbox this way.
    pub(crate) cpus: Cell<*const Cpus>,
    /// The `key` of the per-CPU offsets its `%gs` base holds, 0 for none
    /// ([`crate::percpu_base`]); cleared whenever its CPU changes.
    pub(crate) gs_key: Cell<u64>,
}

impl Local {
    /// Outside any section, simulated interrupt or spinlock: where a
    /// pending cross-CPU call may run.
    #[inline]
    pub(crate) fn interruptible(&self) -> bool {
        self.depth.get() == 0 && self.irq.get() == 0 && self.spin.get() == 0
    }
}

/// The mail flag of an unbound thread: never set.
pub(crate) static NO_MAIL: AtomicBool = AtomicBool::new(false);

thread_local! {
    pub(crate) static LOCAL: Local = const {
        Local {
            id: Cell::new(0),
            cpu: Cell::new(0),
            token: Cell::new(0),
            depth: Cell::new(0),
            irq: Cell::new(0),
            spin: Cell::new(0),
            task: Cell::new(Task { pid: 0, comm: [0; 16] }),
            rng: Cell::new(0),
            pflags: Cell::new(0),
            mail: Cell::new(&NO_MAIL),
            cpus: Cell::new(core::ptr::null()),
            gs_key: Cell::new(0),
        }
    };
}

/// The message for CPU services used by a thread not bound to the platform.
pub(crate) const NOT_BOUND: &str =
    "not running on a simulated CPU: bind the thread with SimPlatform::bind";

/// State of one simulated CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// No thread holds it.
    Free,
    /// The binding with this token holds it.
    Busy(u64),
    /// A binding was dropped while still inside a CPU-local section (or an
    /// interrupt or spinlock): the section may be unfinished, so the CPU is
    /// never handed out again.
    Poisoned,
}

struct Slot {
    state: SlotState,
    /// The CPU's random state while no thread holds it.
    rng: u64,
    /// Cross-CPU calls waiting to run on this CPU.
    mailbox: VecDeque<Call>,
}

/// A cross-CPU call not yet run.
pub(crate) const CALL_PENDING: u8 = 0;
/// The call ran.
pub(crate) const CALL_DONE: u8 = 1;
/// The call ran and panicked.
pub(crate) const CALL_PANICKED: u8 = 2;
/// The call was dropped unrun: its CPU became unusable.
pub(crate) const CALL_REFUSED: u8 = 3;

/// A function posted to a CPU's mailbox.
pub(crate) struct Call {
    /// The poster's function, its lifetime erased.
    f: *mut (dyn FnMut() + Send + 'static),
    /// One of the `CALL_*` values; set under the slot lock.
    pub(crate) state: Arc<AtomicU8>,
}

impl Call {
    /// A call of `f` whose outcome is reported in `state`.
    ///
    /// # Safety
    ///
    /// `f` must stay valid, and not be used by the caller, until `state`
    /// leaves [`CALL_PENDING`].
    pub(crate) unsafe fn new(f: &mut (dyn FnMut() + Send + '_), state: Arc<AtomicU8>) -> Self {
        let f: *mut (dyn FnMut() + Send + '_) = f;
        // SAFETY: only the lifetime changes; the caller keeps `f` alive and
        // unused until the call is finished.
        let f = unsafe {
            core::mem::transmute::<
                *mut (dyn FnMut() + Send + '_),
                *mut (dyn FnMut() + Send + 'static),
            >(f)
        };
        Call { f, state }
    }
}

// SAFETY: the function behind `f` is `Send`, and the poster neither uses nor
// frees it until the call is finished (`Call::new`).
unsafe impl Send for Call {}

/// What [`Cpus::post`] did with a call.
pub(crate) enum Posted {
    /// The CPU is held: its holder will run the call.
    Queued,
    /// The CPU was free: it is now reserved for the poster's helper thread
    /// with this binding token and random state, and the call is queued.
    Reserved(u64, u64),
    /// The CPU is unusable; the call was not queued.
    Refused,
}

/// The CPU slots of one platform.
pub(crate) struct Cpus {
    slots: Mutex<Vec<Slot>>,
    freed: Condvar,
    /// Signalled when a call is posted or finished.
    ipi: Condvar,
    /// Per CPU: its mailbox is (probably) not empty. Written under the slot
    /// lock, read without it on the fast path.
    mail: Box<[AtomicBool]>,
    /// Threads bound to one of these CPUs, or waiting in `bind` for one:
    /// the contexts that can run and free memory.
    pub(crate) attached: AtomicUsize,
}

/// splitmix64 step: advance `state` and return the next output.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Cpus {
    /// `n` free CPUs whose random sources derive from `seed`.
    pub(crate) fn new(n: usize, seed: u64) -> Self {
        let slots = (0..n)
            .map(|cpu| {
                let mut s = seed ^ (cpu as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93);
                Slot {
                    state: SlotState::Free,
                    rng: splitmix64(&mut s),
                    mailbox: VecDeque::new(),
                }
            })
            .collect();
        Cpus {
            slots: Mutex::new(slots),
            freed: Condvar::new(),
            ipi: Condvar::new(),
            mail: (0..n).map(|_| AtomicBool::new(false)).collect(),
            attached: AtomicUsize::new(0),
        }
    }

    /// Number of CPUs.
    pub(crate) fn len(&self) -> usize {
        self.mail.len()
    }

    /// `cpu`'s "mail pending" flag, for the bound thread's locals.
    pub(crate) fn mail_flag(&self, cpu: usize) -> *const AtomicBool {
        &self.mail[cpu]
    }

    /// Queue `call` for `cpu`, reserving the CPU for the poster when no
    /// thread holds it (see [`Posted`]).
    pub(crate) fn post(&self, cpu: usize, call: Call) -> Posted {
        let mut slots = lock(&self.slots);
        let slot = &mut slots[cpu];
        let posted = match slot.state {
            SlotState::Poisoned => return Posted::Refused,
            SlotState::Busy(_) => Posted::Queued,
            SlotState::Free => {
                let token = new_instance_id();
                slot.state = SlotState::Busy(token);
                Posted::Reserved(token, slot.rng)
            }
        };
        slot.mailbox.push_back(call);
        self.mail[cpu].store(true, Ordering::Relaxed);
        drop(slots);
        self.ipi.notify_all();
        posted
    }

    /// Run every call in `cpu`'s mailbox, each in a CPU-local section, and
    /// return with the mailbox empty and the lock held.
    ///
    /// The calling thread must hold `cpu` and be outside any CPU-local
    /// section, interrupt or spinlock (where an interrupt could arrive).
    fn run_mailbox<'a>(
        &'a self,
        cpu: usize,
        mut slots: MutexGuard<'a, Vec<Slot>>,
    ) -> MutexGuard<'a, Vec<Slot>> {
        let mut ran = false;
        while let Some(call) = slots[cpu].mailbox.pop_front() {
            drop(slots);
            let ok = LOCAL.with(|l| {
                debug_assert!(l.cpu.get() == cpu && l.depth.get() == 0);
                l.depth.set(1);
                // SAFETY: the poster keeps `f` alive and untouched until the
                // call's state leaves CALL_PENDING, which happens below.
                let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*call.f)() }));
                l.depth.set(0);
                r.is_ok()
            });
            slots = lock(&self.slots);
            let outcome = if ok { CALL_DONE } else { CALL_PANICKED };
            call.state.store(outcome, Ordering::Relaxed);
            ran = true;
        }
        self.mail[cpu].store(false, Ordering::Relaxed);
        if ran {
            self.ipi.notify_all();
        }
        slots
    }

    /// Run `cpu`'s pending calls (the IPI handler). Same rules as
    /// [`run_mailbox`](Self::run_mailbox).
    pub(crate) fn service(&self, cpu: usize) {
        drop(self.run_mailbox(cpu, lock(&self.slots)));
    }

    /// Wait until `state` leaves [`CALL_PENDING`]. When `me` names the CPU
    /// the calling thread holds (outside any section), run the calls posted
    /// to it meanwhile, as a CPU spinning with interrupts enabled would.
    /// `stalled` is called every `stall` of waiting.
    pub(crate) fn wait_call(
        &self,
        state: &AtomicU8,
        me: Option<usize>,
        stall: std::time::Duration,
        mut stalled: impl FnMut(std::time::Duration),
    ) {
        let start = std::time::Instant::now();
        let mut slots = lock(&self.slots);
        let mut next = stall;
        loop {
            if state.load(Ordering::Relaxed) != CALL_PENDING {
                return;
            }
            if let Some(me) = me {
                if !slots[me].mailbox.is_empty() {
                    slots = self.run_mailbox(me, slots);
                    continue;
                }
            }
            let waited = start.elapsed();
            if waited >= next {
                drop(slots);
                stalled(waited);
                slots = lock(&self.slots);
                next += stall;
                continue;
            }
            slots = self
                .ipi
                .wait_timeout(slots, next - waited)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Finish a call the poster ran itself or gave up on.
    pub(crate) fn finish(&self, state: &AtomicU8, outcome: u8) {
        let slots = lock(&self.slots);
        state.store(outcome, Ordering::Relaxed);
        drop(slots);
        self.ipi.notify_all();
    }

    /// Wait until `cpu` is free, mark it held by the binding `token` and
    /// return its random state. Panics when the CPU is poisoned.
    pub(crate) fn acquire(&self, cpu: usize, token: u64) -> u64 {
        let mut slots = lock(&self.slots);
        loop {
            match slots[cpu].state {
                SlotState::Free => break,
                SlotState::Busy(_) => {
                    slots = self.freed.wait(slots).unwrap_or_else(|e| e.into_inner())
                }
                SlotState::Poisoned => panic!(
                    "simulated CPU {cpu} is unusable: a thread unbound from it while inside a \
                     CPU-local section, interrupt or spinlock"
                ),
            }
        }
        slots[cpu].state = SlotState::Busy(token);
        slots[cpu].rng
    }

    /// If the binding `token` holds `cpu`, mark it free again (or poisoned),
    /// keeping its random state. A CPU held by another binding, free or
    /// poisoned is left as it is.
    ///
    /// A CPU given up cleanly first runs its pending calls (the calling
    /// thread must still be bound to it, outside any section), and is marked
    /// free under the same lock hold that saw its mailbox empty: a call
    /// posted before that is run here, one posted after finds the CPU free.
    /// A poisoned CPU refuses its pending calls.
    ///
    /// The calling thread must be the holder; the CPU keeps the random state
    /// of its thread-local.
    pub(crate) fn release(&self, cpu: usize, token: u64, poison: bool) {
        let mut slots = lock(&self.slots);
        if slots[cpu].state != SlotState::Busy(token) {
            return;
        }
        if poison {
            slots[cpu].state = SlotState::Poisoned;
            for call in slots[cpu].mailbox.drain(..) {
                call.state.store(CALL_REFUSED, Ordering::Relaxed);
            }
            self.mail[cpu].store(false, Ordering::Relaxed);
            self.ipi.notify_all();
        } else {
            slots = self.run_mailbox(cpu, slots);
            slots[cpu].state = SlotState::Free;
        }
        // Read after the calls ran: they may have drawn from it.
        slots[cpu].rng = LOCAL.with(|l| l.rng.get());
        drop(slots);
        self.freed.notify_all();
    }
}

/// A thread's binding to a simulated CPU; unbinds when dropped.
///
/// Made by [`SimPlatform::bind`](crate::SimPlatform::bind) and
/// [`SimPlatform::bind_as`](crate::SimPlatform::bind_as). It belongs to the
/// thread that made it (it is neither `Send` nor `Sync`).
///
/// Dropping it inside a CPU-local section, a simulated interrupt or a
/// simulated spinlock panics and leaves the CPU unusable (binding it again
/// panics), since the section may be unfinished.
#[must_use = "the thread is unbound as soon as the binding is dropped"]
pub struct CpuBinding<'a> {
    pub(crate) cpus: &'a Cpus,
    pub(crate) cpu: usize,
    pub(crate) id: u64,
    /// Unique token of this binding, recorded in the CPU slot.
    pub(crate) token: u64,
    /// Tie the binding to its thread.
    pub(crate) _not_send: PhantomData<*const ()>,
}

impl CpuBinding<'_> {
    /// The CPU this thread is bound to.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// Move this thread's binding to CPU `cpu`, as a task migrating between
    /// CPUs: the current CPU is given up cleanly (its pending cross-CPU
    /// calls run first, as on unbinding), then `cpu` is taken, waiting until
    /// no other thread holds it. The running task and the binding stay the
    /// same; each CPU keeps its own random state. Switching to the CPU the
    /// thread already holds does nothing (no lock is taken).
    ///
    /// A trace replayer uses this to run each event as the CPU that
    /// recorded it, on one thread.
    ///
    /// Panics when `cpu` is not a CPU of the platform, when the thread is
    /// inside a CPU-local section, a simulated interrupt or a simulated
    /// spinlock (the CPU cannot change there, and nothing is given up), or
    /// when `cpu` was left unusable by a binding dropped inside a section.
    ///
    /// ```
    /// use kmem::Platform;
    /// use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
    ///
    /// let p = SimPlatform::new(SimConfig::new(2, pc_memory_map(16 << 20))).unwrap();
    /// let mut b = p.bind(0);
    /// b.switch_to(1);
    /// assert_eq!((b.cpu(), p.smp_processor_id()), (1, 1));
    /// // CPU 0 is free again: another thread can take it.
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert_eq!(p.bind(0).cpu(), 0));
    /// });
    /// ```
    pub fn switch_to(&mut self, cpu: usize) {
        if cpu == self.cpu {
            return;
        }
        assert!(
            cpu < self.cpus.len(),
            "CpuBinding::switch_to: no CPU {cpu} (the machine has {} CPU(s))",
            self.cpus.len()
        );
        let busy = LOCAL.with(|l| {
            debug_assert_eq!(l.id.get(), self.id);
            l.depth.get() != 0 || l.irq.get() != 0 || l.spin.get() != 0
        });
        assert!(
            !busy,
            "CpuBinding::switch_to: called inside a CPU-local section, interrupt or spinlock"
        );
        // Give the old CPU up as unbinding does (its mailbox runs first, under
        // the same lock that marks it free), then take the new one as bind
        // does. In between the thread holds no CPU, so waiting cannot
        // deadlock with a holder of `cpu` posting a call to the old one.
        self.cpus.release(self.cpu, self.token, false);
        let rng = self.cpus.acquire(cpu, self.token);
        LOCAL.with(|l| {
            l.cpu.set(cpu);
            l.gs_key.set(0);
            l.rng.set(rng);
            // The new CPU's IPIs are the ones to notice at section exits.
            l.mail.set(self.cpus.mail_flag(cpu));
        });
        self.cpu = cpu;
    }

    /// Run as `task` from now on ([`Platform::current`](kmem::Platform::current)):
    /// reports such as a page allocation failure name it.
    pub fn set_task(&self, task: Task) {
        LOCAL.with(|l| {
            debug_assert_eq!(l.id.get(), self.id);
            l.task.set(task);
        });
    }
}

impl Drop for CpuBinding<'_> {
    fn drop(&mut self) {
        let busy = LOCAL.with(|l| {
            debug_assert_eq!(l.id.get(), self.id);
            l.depth.get() != 0 || l.irq.get() != 0 || l.spin.get() != 0
        });
        // Still bound: a clean release runs the pending calls on this CPU.
        self.cpus.release(self.cpu, self.token, busy);
        self.cpus.attached.fetch_sub(1, Ordering::SeqCst);
        LOCAL.with(|l| {
            l.id.set(0);
            l.gs_key.set(0);
            l.mail.set(&NO_MAIL);
            l.cpus.set(core::ptr::null());
            l.depth.set(0);
            l.irq.set(0);
            l.spin.set(0);
        });
        if busy && !std::thread::panicking() {
            panic!(
                "CpuBinding for CPU {} dropped inside a CPU-local section, interrupt or \
                 spinlock; the CPU is now unusable",
                self.cpu
            );
        }
    }
}
