//! Spread a trace's threads over a larger machine's CPUs
//! (`kmem replay --spread-threads`).
//!
//! The bundled traces come from a 2-CPU machine; servers have hundreds of
//! CPUs. With a [`Spread`], the `k`-th thread to appear in the trace (by
//! tid) runs on CPU `(n - 1 - 7k) mod n` of an `n`-CPU machine, whatever
//! CPU the trace recorded: the first thread on the last CPU (so a 1024-CPU
//! spread always uses CPU 1023), the next ones 7 CPUs apart, every thread
//! on a CPU of its own while there are at most `n` of them (7 is odd, so
//! `k -> 7k mod n` is a bijection for every power-of-two `n`, and for any
//! `n` that 7 does not divide). A thread keeps its CPU, as a scheduler
//! keeps a thread where its cache is warm; what changes is that objects
//! one thread allocates and another frees cross CPUs, and that every
//! thread's CPU fills its own per-CPU caches, as on a big machine. Thread
//! 0 is not one thread: it is each CPU's idle task (`swapper/N`), whose
//! events are interrupts on that CPU, so each traced CPU's thread 0 counts
//! as a thread of its own.
//!
//! ```
//! use kmem_replay::spread::Spread;
//! let mut s = Spread::new(1024);
//! assert_eq!(s.cpu_of(24576, 1), 1023);
//! assert_eq!(s.cpu_of(24581, 0), 1016);
//! assert_eq!(s.cpu_of(24576, 0), 1023);
//! assert_eq!(s.cpu_of(0, 1), 1009);
//! assert_eq!(s.cpu_of(0, 0), 1002);
//! ```

/// Which CPU each thread seen so far runs on.
#[derive(Clone, Debug)]
pub struct Spread {
    nr_cpus: u32,
    /// (tid, traced CPU for tid 0, else 0) to CPU.
    threads: hashbrown::HashMap<(u32, u32), u32>,
}

impl Spread {
    /// Spread over `nr_cpus` CPUs (at least 1).
    pub fn new(nr_cpus: u32) -> Self {
        Spread {
            nr_cpus: nr_cpus.max(1),
            threads: hashbrown::HashMap::new(),
        }
    }

    /// The CPU of thread `tid`, traced on `traced_cpu`, given it one if it
    /// is new.
    pub fn cpu_of(&mut self, tid: u32, traced_cpu: u32) -> u32 {
        let n = u64::from(self.nr_cpus);
        let k = self.threads.len() as u64;
        let key = (tid, if tid == 0 { traced_cpu } else { 0 });
        *self
            .threads
            .entry(key)
            .or_insert_with(|| (n - 1 - (7 * k) % n) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_get_distinct_cpus_from_the_last_down() {
        let mut s = Spread::new(1024);
        let cpus: Vec<u32> = (0..1024).map(|t| s.cpu_of(1000 + t, t % 2)).collect();
        assert_eq!(cpus[0], 1023);
        assert_eq!(cpus[1], 1016);
        let mut sorted = cpus.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 1024, "a bijection for 1024 threads");
        // A thread keeps its CPU, wherever it was traced; the 1025th
        // thread shares one.
        assert_eq!(s.cpu_of(1001, 0), 1016);
        assert_eq!(s.cpu_of(5000, 0), 1023);
        // Thread 0 is each traced CPU's idle task: one thread per CPU.
        let mut s = Spread::new(8);
        assert_eq!((s.cpu_of(0, 0), s.cpu_of(0, 1), s.cpu_of(0, 0)), (7, 0, 7));
    }

    #[test]
    fn one_cpu_takes_every_thread() {
        let mut s = Spread::new(1);
        assert_eq!((s.cpu_of(1, 0), s.cpu_of(2, 1)), (0, 0));
    }
}
