//! Wait queues: `wait_event` / `wake_up` over hashed Mutex + Condvar slots.
//!
//! Channels are hashed onto a fixed array of slots, like Linux's
//! `bit_wait_table`. Each slot holds a generation counter bumped by every
//! `wake_up`; a waiter checks its condition and records the generation under
//! the slot mutex, then sleeps until the generation moves. A wake-up that
//! races with the check therefore cannot be lost, and wake-ups for other
//! channels sharing the slot only cause a spurious re-check.

use crate::lock;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Number of wait slots.
pub(crate) const WAIT_SLOTS: usize = 64;

pub(crate) struct WaitSlot {
    pub(crate) generation: Mutex<u64>,
    pub(crate) cond: Condvar,
}

/// The wait slots of one platform.
pub(crate) struct WaitTable {
    slots: [WaitSlot; WAIT_SLOTS],
}

impl WaitTable {
    pub(crate) fn new() -> Self {
        WaitTable {
            slots: core::array::from_fn(|_| WaitSlot {
                generation: Mutex::new(0),
                cond: Condvar::new(),
            }),
        }
    }

    /// The slot `channel` hashes to.
    pub(crate) fn slot(&self, channel: usize) -> &WaitSlot {
        // Fibonacci hashing: channels are often addresses with low zero bits.
        let h = (channel as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58;
        &self.slots[h as usize % WAIT_SLOTS]
    }

    /// Bump the generation of `channel`'s slot and wake all its sleepers.
    pub(crate) fn wake_up(&self, channel: usize) {
        let slot = self.slot(channel);
        *lock(&slot.generation) += 1;
        slot.cond.notify_all();
    }
}

impl WaitSlot {
    /// Check `cond` under the slot mutex. Returns `Ok(())` when it holds,
    /// else `Err(generation)` to sleep on.
    pub(crate) fn check(&self, cond: &mut dyn FnMut() -> bool) -> Result<(), u64> {
        let g = lock(&self.generation);
        if cond() {
            Ok(())
        } else {
            Err(*g)
        }
    }

    /// Sleep until the generation differs from `seen` or `deadline` passes.
    pub(crate) fn sleep(&self, seen: u64, deadline: Option<Instant>) {
        let mut g = lock(&self.generation);
        while *g == seen {
            match deadline {
                None => g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return;
                    }
                    g = self
                        .cond
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}
