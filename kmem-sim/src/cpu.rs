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
//! The thread-local names the platform by a process-unique instance id, so
//! any number of platforms can live in one process; a thread is bound to at
//! most one of them at a time.

use crate::lock;
use core::cell::Cell;
use core::marker::PhantomData;
use kmem::platform::Task;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

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
}

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
}

/// The CPU slots of one platform.
pub(crate) struct Cpus {
    slots: Mutex<Vec<Slot>>,
    freed: Condvar,
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
                }
            })
            .collect();
        Cpus {
            slots: Mutex::new(slots),
            freed: Condvar::new(),
        }
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
    pub(crate) fn release(&self, cpu: usize, token: u64, rng: u64, poison: bool) {
        let mut slots = lock(&self.slots);
        if slots[cpu].state != SlotState::Busy(token) {
            return;
        }
        slots[cpu].state = if poison {
            SlotState::Poisoned
        } else {
            SlotState::Free
        };
        slots[cpu].rng = rng;
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
}

impl Drop for CpuBinding<'_> {
    fn drop(&mut self) {
        let (rng, busy) = LOCAL.with(|l| {
            debug_assert_eq!(l.id.get(), self.id);
            let busy = l.depth.get() != 0 || l.irq.get() != 0 || l.spin.get() != 0;
            l.id.set(0);
            l.depth.set(0);
            l.irq.set(0);
            l.spin.set(0);
            (l.rng.get(), busy)
        });
        self.cpus.release(self.cpu, self.token, rng, busy);
        if busy && !std::thread::panicking() {
            panic!(
                "CpuBinding for CPU {} dropped inside a CPU-local section, interrupt or \
                 spinlock; the CPU is now unusable",
                self.cpu
            );
        }
    }
}
