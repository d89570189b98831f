//! `percpu_counter` (`lib/percpu_counter.c`): a count kept as a central
//! value plus a small per-CPU delta, so adding touches only the CPU's own
//! cache line until the delta reaches the batch.
//!
//! ```text
//! true value = count + Σ over CPUs of counters[cpu]
//! |counters[cpu]| < batch            (after every add on that CPU)
//! |read() - true value| < batch · nr_cpus
//! ```

use super::ops::{Owned, PcpuPtr};
use crate::gfp::Gfp;
use crate::platform::IrqSpinGuard;
use crate::platform::Platform;
use crate::{Kmem, Result};
use core::cmp::Ordering;
use core::sync::atomic::{AtomicI32, AtomicI64, Ordering::Relaxed};

/// `percpu_counter_batch` for `nr_cpus` CPUs: `max(32, 2 · nr_cpus)`
/// (`compute_batch_value()`).
///
/// ```
/// assert_eq!(kmem::percpu::counter::percpu_counter_batch(2), 32);
/// assert_eq!(kmem::percpu::counter::percpu_counter_batch(64), 128);
/// ```
pub const fn percpu_counter_batch(nr_cpus: usize) -> i32 {
    let b = 2 * nr_cpus;
    if b > 32 {
        b as i32
    } else {
        32
    }
}

/// `struct percpu_counter`.
pub struct PercpuCounter<'k, P: Platform> {
    /// The machine (read by every add).
    k: &'k Kmem<P>,
    /// `fbc->counters`: each CPU's delta (read by every add).
    counters: PcpuPtr<AtomicI32>,
    /// `fbc->lock` and `fbc->count`, written by every fold.
    central: Central,
}

/// What folds write, on a cache line of its own: were it beside `k` and
/// `counters`, which every add on every CPU reads, each fold would take
/// that line away from the other CPUs and adds would stop scaling.
#[repr(align(64))]
struct Central {
    /// `fbc->lock`: serialises folding deltas into `count` and sums.
    lock: spin::Mutex<()>,
    /// `fbc->count`.
    count: AtomicI64,
}

impl<'k, P: Platform> PercpuCounter<'k, P> {
    /// `percpu_counter_init(fbc, amount, gfp)`.
    #[track_caller]
    pub fn new(k: &'k Kmem<P>, amount: i64, gfp: Gfp) -> Result<Self> {
        let counters = k.alloc_percpu_gfp::<AtomicI32>(gfp)?;
        Ok(PercpuCounter {
            k,
            counters,
            central: Central {
                lock: spin::Mutex::new(()),
                count: AtomicI64::new(amount),
            },
        })
    }

    /// `percpu_counter_add_batch(fbc, amount, batch)`: add to this CPU's
    /// delta; fold it into the count once it reaches `batch`.
    ///
    /// The common case is one `this_cpu` read-modify-write of the delta,
    /// inside the platform's leaf section (Linux: `this_cpu_try_cmpxchg`);
    /// only a fold pins the CPU and takes the lock.
    pub fn add_batch(&self, amount: i64, batch: i32) {
        let counters = Owned(self.counters);
        let added = self.k.this_cpu_op(&counters, |mine| {
            let count = i64::from(mine.load(Relaxed)) + amount;
            let fits = count.abs() < i64::from(batch);
            if fits {
                mine.store(count as i32, Relaxed);
            }
            fits
        });
        if added {
            return;
        }
        let g = self.k.get_cpu();
        let mine = self.k.this_cpu_ptr(&g, &counters);
        let _l = IrqSpinGuard::lock(&self.k.p, &self.central.lock);
        // The CPU is pinned now, maybe another than the one above: fold
        // its delta with the amount, as Linux does after taking the lock.
        let count = i64::from(mine.load(Relaxed));
        self.central.count.fetch_add(count + amount, Relaxed);
        mine.store(0, Relaxed);
        // Unlock before unpinning, as Linux's unlock precedes its
        // irqrestore: the unpin may run this CPU's pending cross-CPU
        // calls, and one of them may add to this counter.
        drop(_l);
        drop(g);
    }

    /// `percpu_counter_add(fbc, amount)`, with `percpu_counter_batch`.
    pub fn add(&self, amount: i64) {
        self.add_batch(amount, percpu_counter_batch(self.k.nr_cpus()))
    }

    /// `percpu_counter_inc()`.
    pub fn inc(&self) {
        self.add(1)
    }

    /// `percpu_counter_dec()`.
    pub fn dec(&self) {
        self.add(-1)
    }

    /// `percpu_counter_read()`: the central count, off by less than
    /// `batch · nr_cpus`.
    pub fn read(&self) -> i64 {
        self.central.count.load(Relaxed)
    }

    /// `percpu_counter_read_positive()`: `read()`, or 0 when negative.
    pub fn read_positive(&self) -> i64 {
        self.read().max(0)
    }

    /// `percpu_counter_sum()`: the count plus every CPU's delta, exact when
    /// no add runs meanwhile.
    pub fn sum(&self) -> i64 {
        let _l = IrqSpinGuard::lock(&self.k.p, &self.central.lock);
        let mut ret = self.central.count.load(Relaxed);
        let counters = Owned(self.counters);
        for cpu in self.k.for_each_possible_cpu() {
            if let Ok(d) = self.k.per_cpu(&counters, cpu) {
                ret += i64::from(d.load(Relaxed));
            }
        }
        ret
    }

    /// `percpu_counter_sum_positive()`.
    pub fn sum_positive(&self) -> i64 {
        self.sum().max(0)
    }

    /// `percpu_counter_set(fbc, amount)`: every delta to 0, the count to
    /// `amount`.
    pub fn set(&self, amount: i64) {
        let _l = IrqSpinGuard::lock(&self.k.p, &self.central.lock);
        let counters = Owned(self.counters);
        for cpu in self.k.for_each_possible_cpu() {
            if let Ok(d) = self.k.per_cpu(&counters, cpu) {
                d.store(0, Relaxed);
            }
        }
        self.central.count.store(amount, Relaxed);
    }

    /// `__percpu_counter_compare(fbc, rhs, batch)`: the rough count when it
    /// is far enough from `rhs` to decide, else the exact sum.
    pub fn compare_batch(&self, rhs: i64, batch: i32) -> Ordering {
        let count = self.read();
        let slack = i64::from(batch) * self.k.nr_cpus() as i64;
        if (count - rhs).abs() > slack {
            return count.cmp(&rhs);
        }
        self.sum().cmp(&rhs)
    }

    /// `percpu_counter_compare(fbc, rhs)`.
    pub fn compare(&self, rhs: i64) -> Ordering {
        self.compare_batch(rhs, percpu_counter_batch(self.k.nr_cpus()))
    }
}

impl<P: Platform> Drop for PercpuCounter<'_, P> {
    /// `percpu_counter_destroy()`.
    fn drop(&mut self) {
        // SAFETY: the counter owns its deltas; nothing uses them after.
        let r = unsafe { self.k.free_percpu(self.counters) };
        debug_assert!(r.is_ok());
    }
}
