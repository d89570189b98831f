//! kswapd threads for a simulated machine.
//!
//! Linux starts one `kswapd<nid>` kernel thread per node at boot. The core
//! provides the thread body ([`Kmem::kswapd`]); [`with_kswapd`] runs it on
//! one thread per node for the duration of a closure. Each thread binds, as
//! task `kswapd<nid>`, to the last CPU of its node, like a kernel thread
//! that runs on its node's CPUs. While it sleeps it gives the CPU up (see
//! [`Platform::wait_event`](kmem::Platform::wait_event)); when woken it
//! takes the CPU back, so it runs when that CPU's other thread sleeps or
//! leaves it, as a thread that has to be scheduled.

use crate::SimPlatform;
use kmem::platform::Task;
use kmem::{Kmem, Platform};
use std::sync::atomic::AtomicBool;

/// Run `f` with a kswapd thread per node of `k` (a machine on `sim`), and
/// stop them when `f` returns.
///
/// ```
/// use kmem::{BootParams, Kmem};
/// use kmem_sim::{pc_memory_map, with_kswapd, SimConfig, SimPlatform};
/// let s = SimPlatform::new(SimConfig::new(2, pc_memory_map(64 << 20))).unwrap();
/// let k = s.on_cpu(0, || Kmem::boot(&s, s.memory_map(), &BootParams::default())).unwrap();
/// with_kswapd(&s, &k, || {
///     while !k.kswapd_running(0) {
///         std::thread::yield_now();
///     }
/// });
/// assert!(!k.kswapd_running(0));
/// ```
pub fn with_kswapd<P: Platform + Sync, R>(
    sim: &SimPlatform,
    k: &Kmem<P>,
    f: impl FnOnce() -> R,
) -> R {
    let nodes = k.nr_nodes();
    let stops: Vec<AtomicBool> = (0..nodes).map(|_| AtomicBool::new(false)).collect();
    // The caller's CPU, given up while the kswapd threads end: one of them
    // may need it to see that it must stop (a one-CPU machine).
    let held = std::cell::Cell::new(None);
    let r = std::thread::scope(|sc| {
        for (nid, stop) in stops.iter().enumerate() {
            let cpu = (0..k.nr_cpus())
                .rev()
                .find(|&c| k.cpu_to_node(c) == nid)
                .unwrap_or(k.nr_cpus() - 1);
            // Counted before it starts, as run_on_cpus counts its threads.
            sim.count_starting_thread();
            sc.spawn(move || {
                let _b =
                    sim.bind_counted(cpu, Task::new(100 + nid as u32, &format!("kswapd{nid}")));
                k.kswapd(nid, stop);
            });
        }
        // Stop the threads however `f` ends, or the scope would wait forever.
        struct Stop<'a, P: Platform> {
            k: &'a Kmem<P>,
            stops: &'a [AtomicBool],
            sim: &'a SimPlatform,
            held: &'a std::cell::Cell<Option<(usize, u64)>>,
        }
        impl<P: Platform> Drop for Stop<'_, P> {
            fn drop(&mut self) {
                for (nid, stop) in self.stops.iter().enumerate() {
                    self.k.kswapd_stop(nid, stop);
                }
                self.held.set(self.sim.release_cpu());
            }
        }
        let _stop = Stop {
            k,
            stops: &stops,
            sim,
            held: &held,
        };
        f()
    });
    sim.reacquire_cpu(held.get());
    r
}
