//! The `churn` workload: something for `kmem slabtop` to watch before a
//! trace replay is plugged in.
//!
//! One thread per CPU, each bound to its CPU, keeps populations of
//! objects of several *classes*:
//!
//! - kmalloc requests in every size class from 8 to 8192 bytes (the size
//!   drawn at random within the class), a few of them `GFP_KERNEL_ACCOUNT`
//!   (`kmalloc-cg-*`) and a few `__GFP_RECLAIMABLE` (`kmalloc-rcl-*`);
//! - four named caches made for the run, shaped like familiar ones:
//!   `churn_inode` (600 B) and `churn_dentry` (192 B), reclaimable and
//!   cache-line aligned; `churn_buffer_head` (104 B), reclaimable;
//!   `churn_skbuff` (232 B), cache-line aligned. They are created with
//!   `SLAB_NO_MERGE` so each keeps its own row instead of becoming an alias
//!   of a kmalloc cache.
//!
//! Each class's population follows its own slow wave over wall-clock time
//! (periods of 3 to 10 s, phases differing per class and CPU, between 10%
//! and 100% of a peak that keeps every class near 1 MiB per CPU), moving a
//! tenth of the peak per round. Every round also frees and re-allocates
//! about 1/64 of each population at random, which leaves holes in slabs as
//! long-running kernels do. `churn_skbuff` objects are freed by the next
//! CPU, as a network stack frees buffers on another CPU than the one that
//! allocated them. A round ends with a 2 ms sleep, so two CPUs' worth of
//! churn leaves the host responsive.
//!
//! The run ends after its duration or when the viewer asks to stop. Then
//! the threads give their CPUs up, [`Control::hold`] while the final frame
//! is taken, take their CPUs back, free everything, and the named caches
//! are destroyed. Allocation failures (a small `--mem`) are not errors:
//! the class simply stays below its target, and the kernel's report lands
//! in the log printed after the run.

use super::Control;
use kmem::gfp::{Gfp, __GFP_RECLAIMABLE, GFP_KERNEL, GFP_KERNEL_ACCOUNT};
use kmem::slab::{KmemCache, SlabFlags, SLAB_HWCACHE_ALIGN, SLAB_NO_MERGE, SLAB_RECLAIM_ACCOUNT};
use kmem::Kmem;
use kmem_sim::SimPlatform;
use std::ptr::NonNull;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The named caches: name, object size, flags (before `SLAB_NO_MERGE`).
fn named_caches() -> [(&'static str, usize, SlabFlags); 4] {
    [
        (
            "churn_inode",
            600,
            SLAB_RECLAIM_ACCOUNT | SLAB_HWCACHE_ALIGN,
        ),
        (
            "churn_dentry",
            192,
            SLAB_RECLAIM_ACCOUNT | SLAB_HWCACHE_ALIGN,
        ),
        ("churn_buffer_head", 104, SLAB_RECLAIM_ACCOUNT),
        ("churn_skbuff", 232, SLAB_HWCACHE_ALIGN),
    ]
}

/// Index of `churn_skbuff` in [`named_caches`]: its objects are freed
/// remotely.
const SKBUFF: usize = 3;

/// The kmalloc size classes of `kmalloc-8` .. `kmalloc-8k`.
const KMALLOC_SIZES: [usize; 13] = [
    8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192,
];

/// Bytes each class aims at, at the crest of its wave, per CPU.
const CLASS_BYTES: usize = 1 << 20;

/// Time between rounds.
const ROUND_SLEEP: Duration = Duration::from_millis(2);

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `kmalloc(size in min..=max, gfp)`.
    Kmalloc { min: usize, max: usize, gfp: Gfp },
    /// `kmem_cache_alloc` from named cache `i`.
    Cache(usize),
}

#[derive(Clone, Copy, Debug)]
struct Class {
    kind: Kind,
    /// Objects at the crest of the wave.
    peak: usize,
    /// Seconds per wave.
    period: f64,
    /// Phase offset (radians) of class 0 on CPU 0.
    phase: f64,
}

/// Every class of the workload.
fn classes() -> Vec<Class> {
    let mut kinds = Vec::new();
    let mut prev = 0;
    for max in KMALLOC_SIZES {
        kinds.push((
            Kind::Kmalloc {
                min: prev + 1,
                max,
                gfp: GFP_KERNEL,
            },
            max,
        ));
        // Accounted and reclaimable requests in a few of the classes.
        if matches!(max, 64 | 192 | 1024) {
            let gfp = GFP_KERNEL_ACCOUNT;
            kinds.push((
                Kind::Kmalloc {
                    min: prev + 1,
                    max,
                    gfp,
                },
                max,
            ));
        }
        if matches!(max, 96 | 512) {
            let gfp = GFP_KERNEL | __GFP_RECLAIMABLE;
            kinds.push((
                Kind::Kmalloc {
                    min: prev + 1,
                    max,
                    gfp,
                },
                max,
            ));
        }
        prev = max;
    }
    for (i, (_, size, _)) in named_caches().into_iter().enumerate() {
        kinds.push((Kind::Cache(i), size));
    }
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, (kind, size))| Class {
            kind,
            peak: (CLASS_BYTES / size).clamp(64, 4000),
            period: 3.0 + (i % 5) as f64 * 1.75,
            phase: i as f64 * 0.9,
        })
        .collect()
}

/// splitmix64: a small, seedable generator for the workload's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The `churn` workload, for `duration` of wall-clock time.
pub struct Churn {
    /// How long the populations churn before the end state is held.
    pub duration: Duration,
}

/// What every CPU's thread shares.
struct Shared<'a> {
    k: &'a Kmem<&'a SimPlatform>,
    caches: &'a [&'a KmemCache],
    classes: &'a [Class],
    /// `churn_skbuff` objects each CPU is to free (addresses).
    remote: Vec<Mutex<Vec<usize>>>,
    start: Instant,
    duration: Duration,
    stopped: Stopped,
}

/// Counts the CPU threads that have stopped churning. A thread that panics
/// counts as stopped, so the others never wait for it.
struct Stopped {
    count: Mutex<usize>,
    all: Condvar,
    of: usize,
}

impl Stopped {
    fn arrive(&self) {
        *lock(&self.count) += 1;
        self.all.notify_all();
    }

    fn wait_all(&self) {
        let mut n = lock(&self.count);
        while *n < self.of {
            n = self.all.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Arrives at [`Stopped`] when dropped: at the end of the churn, or while
/// unwinding from a panic in it.
struct Arrival<'a>(&'a Stopped);

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.0.arrive();
    }
}

impl Churn {
    /// Run on every CPU of `sim` until the duration is over or `ctl` asks
    /// to stop, hold for the final frame, then free everything.
    pub fn run(&self, k: &Kmem<&SimPlatform>, sim: &SimPlatform, ctl: &Control) {
        let caches: Vec<&KmemCache> = sim.on_cpu(0, || {
            named_caches()
                .into_iter()
                .map(|(name, size, flags)| {
                    k.kmem_cache_create(name, size, 0, flags | SLAB_NO_MERGE, None)
                        .unwrap_or_else(|e| panic!("churn: cannot create {name}: {e}"))
                })
                .collect()
        });
        let classes = classes();
        let cpus = kmem::Platform::nr_cpu_ids(sim);
        let shared = Shared {
            k,
            caches: &caches,
            classes: &classes,
            remote: (0..cpus).map(|_| Mutex::new(Vec::new())).collect(),
            start: Instant::now(),
            duration: self.duration,
            stopped: Stopped {
                count: Mutex::new(0),
                all: Condvar::new(),
                of: cpus,
            },
        };
        std::thread::scope(|s| {
            for cpu in 0..cpus {
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("churn/{cpu}"))
                    .spawn_scoped(s, move || worker(shared, sim, ctl, cpu))
                    .expect("churn: cannot spawn a CPU thread");
            }
        });
        sim.on_cpu(0, || {
            for c in caches {
                // SAFETY: every object of the cache was freed by the workers,
                // and nothing uses the cache after this.
                unsafe { k.kmem_cache_destroy(c) }.expect("churn: destroying an empty cache");
            }
        });
    }
}

/// One live object.
type Obj = NonNull<u8>;

/// One CPU's thread.
fn worker(sh: &Shared<'_>, sim: &SimPlatform, ctl: &Control, cpu: usize) {
    let mut rng = Rng(0x5eed_0000 + cpu as u64);
    let mut live: Vec<Vec<Obj>> = vec![Vec::new(); sh.classes.len()];
    let arrival = Arrival(&sh.stopped);
    let binding = sim.bind(cpu);
    while sh.start.elapsed() < sh.duration && !ctl.should_stop() {
        let t = sh.start.elapsed().as_secs_f64();
        for (i, class) in sh.classes.iter().enumerate() {
            let wave =
                (std::f64::consts::TAU * t / class.period + class.phase + cpu as f64 * 1.3).sin();
            let target = (class.peak as f64 * (0.55 + 0.45 * wave)) as usize;
            let step = class.peak / 10 + 1;
            let objs = &mut live[i];
            // Turnover first, then move toward the target.
            let turnover = objs.len() / 64 + 1;
            for _ in 0..turnover.min(objs.len()) {
                let o = objs.swap_remove(rng.below(objs.len()));
                release(sh, class.kind, o, cpu, true);
            }
            let mut want = target.saturating_sub(objs.len()).min(step) + turnover;
            while want > 0 {
                match allocate(sh, class.kind, &mut rng) {
                    Some(o) => objs.push(o),
                    None => break,
                }
                want -= 1;
            }
            let extra = objs.len().saturating_sub(target).min(step);
            for _ in 0..extra {
                let o = objs.swap_remove(rng.below(objs.len()));
                release(sh, class.kind, o, cpu, true);
            }
        }
        drain_remote(sh, cpu);
        std::thread::sleep(ROUND_SLEEP);
    }
    // The end state: hold it unbound, so a cross-CPU call to this CPU runs
    // on its idle task instead of waiting for us.
    drop(binding);
    drop(arrival);
    // Every thread has stopped handing objects over before anyone holds
    // and tears down.
    sh.stopped.wait_all();
    ctl.hold();
    let _binding = sim.bind(cpu);
    for (i, objs) in live.into_iter().enumerate() {
        for o in objs {
            release(sh, sh.classes[i].kind, o, cpu, false);
        }
    }
    // Nobody hands objects over any more.
    drain_remote(sh, cpu);
}

/// Allocate one object of `kind`; `None` when the allocator refuses.
fn allocate(sh: &Shared<'_>, kind: Kind, rng: &mut Rng) -> Option<Obj> {
    match kind {
        Kind::Kmalloc { min, max, gfp } => sh.k.kmalloc(min + rng.below(max - min + 1), gfp),
        Kind::Cache(c) => sh.k.kmem_cache_alloc(sh.caches[c], GFP_KERNEL),
    }
    .ok()
}

/// Free `o`; a `churn_skbuff` object goes to the next CPU when `hand_over`.
fn release(sh: &Shared<'_>, kind: Kind, o: Obj, cpu: usize, hand_over: bool) {
    match kind {
        Kind::Cache(SKBUFF) if hand_over => {
            let next = (cpu + 1) % sh.remote.len();
            lock(&sh.remote[next]).push(o.as_ptr() as usize);
        }
        // SAFETY: `o` came from kmalloc and left the live list: freed once.
        Kind::Kmalloc { .. } => unsafe { sh.k.kfree(o.as_ptr()) }.expect("churn: kfree"),
        // SAFETY: `o` came from this cache and left the live list.
        Kind::Cache(c) => unsafe { sh.k.kmem_cache_free(sh.caches[c], o.as_ptr()) }
            .expect("churn: kmem_cache_free"),
    }
}

/// Free the `churn_skbuff` objects other CPUs handed to `cpu`.
fn drain_remote(sh: &Shared<'_>, cpu: usize) {
    let objs = std::mem::take(&mut *lock(&sh.remote[cpu]));
    for addr in objs {
        // SAFETY: each address was a live churn_skbuff object, handed over
        // once by the CPU that took it off its live list.
        unsafe { sh.k.kmem_cache_free(sh.caches[SKBUFF], addr as *mut u8) }
            .expect("churn: remote kmem_cache_free");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_kmalloc_size_and_cache() {
        let c = classes();
        let mut maxes: Vec<usize> = c
            .iter()
            .filter_map(|c| match c.kind {
                Kind::Kmalloc { max, gfp, .. } if gfp == GFP_KERNEL => Some(max),
                _ => None,
            })
            .collect();
        maxes.dedup();
        assert_eq!(maxes, KMALLOC_SIZES);
        let caches = c
            .iter()
            .filter(|c| matches!(c.kind, Kind::Cache(_)))
            .count();
        assert_eq!(caches, named_caches().len());
        assert!(c.iter().all(|c| (64..=4000).contains(&c.peak)));
    }
}
