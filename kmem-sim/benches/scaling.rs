//! Multi-CPU scaling benches, side by side in one binary with the `mimalloc`
//! crate and buddy_system_allocator's `LockedFrameAllocator`, on a simulated
//! 2-CPU machine (each worker thread bound to its own simulated CPU).
//!
//! - `scaling/<allocator>/<threads>`: 1 and 2 threads each doing alloc+free
//!   pairs: kmem's kmalloc+kfree (64 B) and order-0 page pair
//!   (`alloc_page` + `__free_pages`), mimalloc's 64 B pair (through
//!   `GlobalAlloc`), and `LockedFrameAllocator`'s order-0 pair (one allocator
//!   shared by both threads, the same frames as kmem's buddy lists). One
//!   criterion iteration is one pair on *every* thread, run concurrently;
//!   the time is the wall time from the common start until the last thread
//!   has finished. The throughput line (elements/s) counts the pairs of all
//!   threads, so the two-thread/one-thread throughput ratio is read off it
//!   directly (it is 2 x time(1) / time(2)).
//! - `producer_consumer/<allocator>`: 64 B objects allocated on CPU 0 and
//!   sent, 64 pointers a batch, through a spinning single-producer ring to
//!   CPU 1, which frees them. One iteration is one object, allocated and
//!   freed; the time runs until the last one is freed.
//!   `producer_consumer/reference` passes counter values through the same
//!   ring, allocating nothing: the ring's own cost.
//!
//! `scaling/reference/<threads>` times register-only work the same way: its
//! ratio is how far the host lets two threads run at once, the ceiling for
//! the others.
//!
//! The worker threads are started once per benchmark and wait between
//! samples; after the criterion groups a summary of the medians of the
//! samples (warm-up included) and the ratios is printed.

use buddy_system_allocator::LockedFrameAllocator;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use kmem::gfp::GFP_KERNEL;
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::Scope;
use std::time::{Duration, Instant};

type K<'a> = Kmem<&'a SimPlatform>;
/// A worker's body, when workers run different code.
type Body<'a> = Box<dyn FnMut(u64) + 'a>;

/// Objects per producer/consumer batch.
const BATCH: usize = 64;
/// Batches in flight in the producer/consumer ring.
const RING: usize = 16;

/// The median time per iteration (ns) of every sample of each benchmark, for
/// the summary.
static RESULTS: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

fn result(id: &str) -> Option<f64> {
    let r = RESULTS.lock().unwrap();
    r.iter().find(|(n, _)| n == id).map(|&(_, t)| t)
}

fn machine() -> SimPlatform {
    SimPlatform::new(SimConfig::new(2, pc_memory_map(1 << 30))).expect("simulated machine")
}

fn boot(sim: &SimPlatform) -> K<'_> {
    // Booted on CPU 0, which is given up again at once for the workers.
    let _cpu = sim.bind(0);
    Kmem::boot(sim, sim.memory_map(), &BootParams::default()).expect("boot")
}

/// Pads its content to its own cache lines (two, for the adjacent-line
/// prefetcher).
#[repr(align(128))]
struct Padded<T>(T);

/// Set when a worker panics, so that the others stop waiting for it.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// A sample's start and end on one worker; `None` when the worker panicked.
type Done = Option<(Instant, Instant)>;

/// Raises [`PANICKED`] and tells the bench if its worker unwinds.
struct Alarm(mpsc::Sender<Done>);

impl Drop for Alarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            PANICKED.store(true, Ordering::SeqCst);
            let _ = self.0.send(None);
        }
    }
}

/// Spin until `f` holds, yielding to the host now and then (the host may run
/// something else on the core the other side needs). Panics when another
/// worker has panicked.
fn spin_until(mut f: impl FnMut() -> bool) {
    let mut n = 0u32;
    while !f() {
        n = n.wrapping_add(1);
        if n % 1024 == 0 {
            assert!(!PANICKED.load(Ordering::Relaxed), "another worker panicked");
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Worker threads, each running its own body; [`run`](Crew::run) makes
/// every worker run `iters` iterations at the same time and returns the wall
/// time from the first start to the last finish.
struct Crew {
    go: Vec<mpsc::Sender<u64>>,
    done: mpsc::Receiver<Done>,
    /// Per-sample nanoseconds per iteration.
    samples: Vec<f64>,
}

impl Crew {
    /// Start `threads` workers on `s`. Worker `t` calls `make(t)` first, on
    /// its own thread (binding its CPU there), and then the body it returns
    /// once per sample with the sample's iteration count.
    fn start<'scope, 'env, M, B>(s: &'scope Scope<'scope, 'env>, threads: usize, make: M) -> Crew
    where
        M: Fn(usize) -> B + Send + Sync + 'env,
        B: FnMut(u64),
    {
        let make = std::sync::Arc::new(make);
        // A spinning start line, so that no worker's wake-up delay is timed
        // for the other: the count of workers that reached it, ever.
        let line = std::sync::Arc::new(Padded(AtomicUsize::new(0)));
        let (done_tx, done) = mpsc::channel();
        let mut go = Vec::new();
        for t in 0..threads {
            let (tx, rx) = mpsc::channel::<u64>();
            go.push(tx);
            let (make, line, done_tx) = (make.clone(), line.clone(), done_tx.clone());
            std::thread::Builder::new()
                .name(format!("worker/{t}"))
                .spawn_scoped(s, move || {
                    let _alarm = Alarm(done_tx.clone());
                    let mut body = make(t);
                    let mut round = 0;
                    while let Ok(iters) = rx.recv() {
                        round += 1;
                        line.0.fetch_add(1, Ordering::AcqRel);
                        spin_until(|| line.0.load(Ordering::Acquire) >= round * threads);
                        let t0 = Instant::now();
                        body(iters);
                        let t1 = Instant::now();
                        if done_tx.send(Some((t0, t1))).is_err() {
                            break;
                        }
                    }
                })
                .expect("cannot spawn a worker thread");
        }
        Crew {
            go,
            done,
            samples: Vec::new(),
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        for tx in &self.go {
            tx.send(iters).expect("worker alive");
        }
        let mut first = None::<Instant>;
        let mut last = None::<Instant>;
        for _ in 0..self.go.len() {
            let (t0, t1) = self
                .done
                .recv()
                .expect("worker alive")
                .expect("a worker panicked");
            first = Some(first.map_or(t0, |f| f.min(t0)));
            last = Some(last.map_or(t1, |l| l.max(t1)));
        }
        let d = last.unwrap() - first.unwrap();
        self.samples.push(d.as_nanos() as f64 / iters as f64);
        d
    }

    /// Record the median of the samples as `id`'s result; the workers stop
    /// (their channels close) and are joined at the end of their scope.
    fn finish(mut self, id: &str) {
        if self.samples.len() < 10 {
            return; // filtered out, or criterion's test mode (one sample)
        }
        self.samples.sort_by(f64::total_cmp);
        let m = self.samples[self.samples.len() / 2];
        RESULTS.lock().unwrap().push((id.to_string(), m));
    }
}

/// Bench `id` in `g` (`group/id` in the summary): `threads` workers made by
/// `make`, each running `iters` iterations per sample; criterion counts
/// `elements` elements per iteration.
fn bench_crew<M, B>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    group: &str,
    id: &str,
    threads: usize,
    elements: u64,
    make: M,
) where
    M: Fn(usize) -> B + Send + Sync,
    B: FnMut(u64),
{
    std::thread::scope(|s| {
        let mut crew = Crew::start(s, threads, make);
        g.throughput(Throughput::Elements(elements));
        g.bench_function(id, |b| b.iter_custom(|iters| crew.run(iters)));
        crew.finish(&format!("{group}/{id}"));
    });
}

/// [`bench_crew`] for `scaling/name/threads`, one pair per thread and
/// iteration.
fn bench_scaling<M, B>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, threads: usize, make: M)
where
    M: Fn(usize) -> B + Send + Sync,
    B: FnMut(u64),
{
    let id = format!("{name}/{threads}");
    bench_crew(g, "scaling", &id, threads, threads as u64, make);
}

fn scaling(c: &mut Criterion) {
    let sim = machine();
    let k = boot(&sim);
    let (sim, k) = (&sim, &k);
    let l64 = Layout::from_size_align(64, 8).unwrap();
    let mut g = c.benchmark_group("scaling");
    // The reference: a few nanoseconds of register-only work per iteration
    // (no memory shared, none touched), which scales as far as the host lets
    // two threads run at once.
    for threads in [1, 2] {
        bench_scaling(&mut g, "reference", threads, move |t| {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t as u64;
            move |iters| {
                for _ in 0..iters {
                    for _ in 0..4 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                    }
                    x = black_box(x);
                }
            }
        });
    }
    for threads in [1, 2] {
        bench_scaling(&mut g, "kmem_kmalloc", threads, move |cpu| {
            let cpu = sim.bind(cpu);
            move |iters| {
                let _bound = &cpu;
                for _ in 0..iters {
                    let p = k.kmalloc(64, GFP_KERNEL).unwrap();
                    // SAFETY: `p` was just kmalloc'ed on this machine; it is freed once, here,
                    // and not used afterwards.
                    unsafe { k.kfree(black_box(p.as_ptr())) }.unwrap();
                }
            }
        });
    }
    for threads in [1, 2] {
        bench_scaling(&mut g, "mimalloc", threads, move |_| {
            move |iters| {
                for _ in 0..iters {
                    // SAFETY: `l64` has a non-zero size; `p` is deallocated once, by the allocator
                    // that returned it and with the layout it was allocated with, and not used
                    // afterwards. The result is not checked for null: a 64-byte host allocation is
                    // assumed to succeed.
                    unsafe {
                        let p = MiMalloc.alloc(l64);
                        MiMalloc.dealloc(black_box(p), l64);
                    }
                }
            }
        });
    }
    for threads in [1, 2] {
        bench_scaling(&mut g, "kmem_page0", threads, move |cpu| {
            let cpu = sim.bind(cpu);
            move |iters| {
                let _bound = &cpu;
                for _ in 0..iters {
                    let p = k.alloc_page(GFP_KERNEL).unwrap();
                    k.__free_pages(black_box(p), 0).unwrap();
                }
            }
        });
    }
    // The same free frames kmem's buddy lists got, behind
    // buddy_system_allocator's spin lock, shared by the threads.
    let locked = LockedFrameAllocator::<33>::new();
    for r in k.memblock().memory().regions() {
        locked
            .lock()
            .add_frame((r.base >> 12) as usize, (r.end() >> 12) as usize);
    }
    let locked = &locked;
    for threads in [1, 2] {
        bench_scaling(&mut g, "locked_frame", threads, move |_| {
            move |iters| {
                for _ in 0..iters {
                    let f = locked.lock().alloc(1).unwrap();
                    locked.lock().dealloc(black_box(f), 1);
                }
            }
        });
    }
    g.finish();
}

/// A single-producer, single-consumer ring of batches of object addresses.
/// The counters only grow: the producer has filled `tail` batches, the
/// consumer emptied `head`.
struct Ring {
    head: Padded<AtomicUsize>,
    tail: Padded<AtomicUsize>,
    slots: Vec<Padded<[AtomicUsize; BATCH]>>,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
            slots: (0..RING)
                .map(|_| Padded(std::array::from_fn(|_| AtomicUsize::new(0))))
                .collect(),
        }
    }

    /// Produce `n` objects, `alloc` making each, in batches of at most
    /// [`BATCH`]; the consumer knows `n` too.
    fn produce(&self, n: u64, mut alloc: impl FnMut() -> usize) {
        let mut left = n;
        let mut tail = self.tail.0.load(Ordering::Relaxed);
        while left > 0 {
            spin_until(|| tail - self.head.0.load(Ordering::Acquire) < RING);
            let b = left.min(BATCH as u64) as usize;
            for s in &self.slots[tail % RING].0[..b] {
                s.store(alloc(), Ordering::Relaxed);
            }
            tail += 1;
            self.tail.0.store(tail, Ordering::Release);
            left -= b as u64;
        }
    }

    /// Consume the `n` objects [`produce`](Ring::produce) makes, `free`
    /// taking each.
    fn consume(&self, n: u64, mut free: impl FnMut(usize)) {
        let mut left = n;
        let mut head = self.head.0.load(Ordering::Relaxed);
        while left > 0 {
            spin_until(|| self.tail.0.load(Ordering::Acquire) != head);
            let b = left.min(BATCH as u64) as usize;
            for s in &self.slots[head % RING].0[..b] {
                free(s.load(Ordering::Relaxed));
            }
            head += 1;
            self.head.0.store(head, Ordering::Release);
            left -= b as u64;
        }
    }
}

fn producer_consumer(c: &mut Criterion) {
    let sim = machine();
    let k = boot(&sim);
    let (sim, k) = (&sim, &k);
    let l64 = Layout::from_size_align(64, 8).unwrap();
    let mut g = c.benchmark_group("producer_consumer");
    let ring = Ring::new();
    let ring = &ring;
    // Two workers each (CPU 0 produces, CPU 1 consumes), one element per
    // iteration (one object). The reference passes counter values through
    // the ring and allocates nothing: the ring's own cost.
    bench_crew(&mut g, "producer_consumer", "reference", 2, 1, move |cpu| {
        let mut n = 0usize;
        if cpu == 0 {
            Box::new(move |iters| {
                ring.produce(iters, || {
                    n += 1;
                    black_box(n)
                })
            }) as Body<'_>
        } else {
            Box::new(move |iters| {
                ring.consume(iters, |p| {
                    black_box(p);
                })
            })
        }
    });
    bench_crew(&mut g, "producer_consumer", "kmem", 2, 1, move |cpu| {
        let bound = sim.bind(cpu);
        if cpu == 0 {
            Box::new(move |iters| {
                let _bound = &bound;
                ring.produce(iters, || {
                    k.kmalloc(64, GFP_KERNEL).unwrap().as_ptr() as usize
                })
            }) as Body<'_>
        } else {
            Box::new(move |iters| {
                let _bound = &bound;
                ring.consume(iters, |p| {
                    // SAFETY: `p` was kmalloc'ed on CPU 0 of this machine and handed over through
                    // the ring, which gives each object to the consumer once; it is freed once,
                    // here.
                    unsafe { k.kfree(p as *mut u8) }.unwrap()
                })
            })
        }
    });
    bench_crew(&mut g, "producer_consumer", "mimalloc", 2, 1, move |cpu| {
        if cpu == 0 {
            Box::new(move |iters| {
                // SAFETY: `l64` has a non-zero size. The result is not checked for null: a 64-byte
                // host allocation is assumed to succeed.
                ring.produce(iters, || unsafe { MiMalloc.alloc(l64) } as usize)
            }) as Body<'_>
        } else {
            Box::new(move |iters| {
                ring.consume(iters, |p| {
                    // SAFETY: `p` was allocated by `MiMalloc` with `l64` on the producer thread and
                    // handed over through the ring, which gives each object to the consumer once;
                    // it is deallocated once, here, with the same layout.
                    unsafe { MiMalloc.dealloc(p as *mut u8, l64) }
                })
            })
        }
    });
    g.finish();
}

/// The medians of the samples and the two-thread/one-thread ratios.
fn summary(_: &mut Criterion) {
    if RESULTS.lock().unwrap().is_empty() {
        return;
    }
    println!();
    println!("scaling summary (median of each benchmark's samples, warm-up included)");
    println!(
        "{:<14} {:>12} {:>14} {:>12} {:>14} {:>14}",
        "", "1 thread", "", "2 threads", "", "2T/1T thruput"
    );
    println!(
        "{:<14} {:>12} {:>14} {:>12} {:>14}",
        "allocator", "ns/pair", "M pairs/s", "ns/round", "M pairs/s"
    );
    for name in [
        "reference",
        "kmem_kmalloc",
        "mimalloc",
        "kmem_page0",
        "locked_frame",
    ] {
        let (Some(t1), Some(t2)) = (
            result(&format!("scaling/{name}/1")),
            result(&format!("scaling/{name}/2")),
        ) else {
            continue;
        };
        println!(
            "{:<14} {:>12.2} {:>14.1} {:>12.2} {:>14.1} {:>14.2}",
            name,
            t1,
            1e3 / t1,
            t2,
            2e3 / t2,
            2.0 * t1 / t2
        );
    }
    if let (Some(t1), Some(t2)) = (result("scaling/reference/1"), result("scaling/reference/2")) {
        if 2.0 * t1 / t2 < 1.9 {
            println!(
                "(the reference did not scale: the host did not run both threads at once all \
                 along, so the other ratios are not the allocators' own)"
            );
        }
    }
    let pc: Vec<_> = ["reference", "kmem", "mimalloc"]
        .into_iter()
        .filter_map(|n| result(&format!("producer_consumer/{n}")).map(|t| (n, t)))
        .collect();
    if !pc.is_empty() {
        println!();
        println!("producer/consumer (64 B, allocated on CPU 0, freed on CPU 1)");
        for (n, t) in &pc {
            println!("{n:<14} {t:>12.2} ns/object {:>10.1} M objects/s", 1e3 / t);
        }
    }
}

criterion_group!(benches, scaling, producer_consumer, summary);
criterion_main!(benches);
