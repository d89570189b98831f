//! Per-CPU variable and per-CPU allocator benches, side by side in one binary
//! with what code uses without them, on a simulated 2-CPU machine (threads
//! bound to simulated CPUs with `SimPlatform::bind`).
//!
//! - `percpu_inc/<variant>`: one increment of a `u64` on the main thread,
//!   bound to CPU 0: `this_cpu_inc` of a `define_per_cpu!` static
//!   (`static_this_cpu_inc`) and of a `PerCpu<AtomicU64>`
//!   (`percpu_this_cpu_inc`), beside a thread-local `Cell<u64>` (the limit:
//!   a load, an add and a store) and an uncontended `AtomicU64::fetch_add`
//!   (a locked read-modify-write). Each iteration passes the counter through
//!   `black_box`, whose memory clobber makes every iteration load and store
//!   the counter and load everything it reaches it through (the machine's
//!   tables, the CPU binding) afresh, as a single call in real code would:
//!   nothing is hoisted out of the loop and no two increments are merged.
//!   `thread_local_cell_indexed` is the thread-local increment at an address
//!   formed from two loaded values (base + index), as a per-CPU address is:
//!   back-to-back increments of one counter wait for the previous store, and
//!   the CPU forwards it faster when the address register does not change.
//! - `percpu_counter/<variant>`: two worker threads, on CPUs 0 and 1, each
//!   adding 1 the same number of times: `PercpuCounter::add(1)` on one
//!   counter, and `AtomicU64::fetch_add(1)` on one shared atomic. Sampling is
//!   flat: every sample (round) runs the same number of iterations per
//!   thread, and its time is the wall time from the common start line until
//!   the last thread has finished, as in `scaling.rs`; the throughput line
//!   counts both threads' operations; `percpu_counter_add/1` is one thread,
//!   for scale. Two references on 1 and on 2 threads say whether the host
//!   really gave both threads a core of their own: register-only work
//!   (`reference`), and a thread-local increment (`reference_mem`, again at
//!   the end as `reference_mem_end`), which also notices two vCPUs sharing a
//!   core's load and store resources. A two-thread row counts only when both
//!   2-thread/1-thread throughput ratios are near 2 (if they are not, the
//!   shared atomic is not contended as across cores, and the comparison
//!   means little).
//! - `percpu_alloc/<size>`: `__alloc_percpu(size, 8)` (GFP_KERNEL) +
//!   `free_percpu`, per pair, for 8, 64 and 256 bytes, beside a kmalloc +
//!   kfree of the same size for scale (`kmalloc/<size>`).
//!
//! Each benchmark's own samples are kept; the summary at the end gives the
//! median of the measured samples (warm-up excluded), the ratios, the
//! targets, and the host CPU model (`/proc/cpuinfo`). The counters are
//! checked against the number of operations run.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use kmem::gfp::GFP_KERNEL;
use kmem::percpu::counter::PercpuCounter;
use kmem::percpu::PerCpu;
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

type K<'a> = Kmem<&'a SimPlatform>;

/// Criterion's samples per benchmark (its default): the last this many
/// calls of a benchmark's routine are the measured samples.
const SAMPLES: usize = 100;

/// The median time per iteration (ns) of each benchmark's measured samples.
static RESULTS: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

fn result(id: &str) -> Option<f64> {
    let r = RESULTS.lock().unwrap();
    r.iter().find(|(n, _)| n == id).map(|&(_, t)| t)
}

/// Record the median of the measured samples (the last [`SAMPLES`] of
/// `samples`, ns per iteration) as `id`'s result; nothing when the benchmark
/// was filtered out or run in test mode.
fn record(id: &str, samples: &[f64]) {
    if samples.len() < SAMPLES {
        return;
    }
    let mut s = samples[samples.len() - SAMPLES..].to_vec();
    s.sort_by(f64::total_cmp);
    let m = (s[SAMPLES / 2 - 1] + s[SAMPLES / 2]) / 2.0;
    RESULTS.lock().unwrap().push((id.to_string(), m));
}

/// Bench `group/id` as `iters` calls of `op`, timed by hand, and record it.
/// Answers how many times `op` ran, warm-up included.
fn bench_loop(
    g: &mut BenchmarkGroup<'_, WallTime>,
    group: &str,
    id: &str,
    mut op: impl FnMut(),
) -> u64 {
    let mut samples = Vec::new();
    let mut total = 0u64;
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                op();
            }
            let d = t0.elapsed();
            total += iters;
            samples.push(d.as_nanos() as f64 / iters as f64);
            d
        })
    });
    record(&format!("{group}/{id}"), &samples);
    total
}

fn machine() -> SimPlatform {
    SimPlatform::new(SimConfig::new(2, pc_memory_map(1 << 30))).expect("simulated machine")
}

fn boot(sim: &SimPlatform) -> K<'_> {
    // Booted on CPU 0, which is given up again at once.
    let _cpu = sim.bind(0);
    Kmem::boot(sim, sim.memory_map(), &BootParams::default()).expect("boot")
}

kmem::define_per_cpu! {
    /// The static per-CPU counter of `percpu_inc/static_this_cpu_inc`.
    static EVENTS: AtomicU64;
}

thread_local! {
    /// The thread-local counter of `percpu_inc/thread_local_cell`.
    static TL_COUNT: Cell<u64> = const { Cell::new(0) };
    /// The counters of `percpu_inc/thread_local_cell_indexed` (the first).
    static TL_PAIR: [Cell<u64>; 2] = const { [Cell::new(0), Cell::new(0)] };
}

fn percpu_inc(c: &mut Criterion) {
    let sim = machine();
    let k = boot(&sim);
    let cpu = sim.bind(0);
    let mut g = c.benchmark_group("percpu_inc");
    let n = bench_loop(&mut g, "percpu_inc", "thread_local_cell", || {
        TL_COUNT.with(|c| {
            let c = black_box(c);
            c.set(c.get().wrapping_add(1));
        })
    });
    // The same, the address computed from two loaded values (base + index),
    // as a per-CPU address is: the limit for an access whose address is
    // known only at run time.
    // (Two cells, so that the bounds check does not prove the index 0 and
    // let the compiler fold the address back to the base.)
    let m = bench_loop(&mut g, "percpu_inc", "thread_local_cell_indexed", || {
        TL_PAIR.with(|cells| {
            let cells = black_box(cells);
            let i = black_box(0usize);
            cells[i].set(cells[i].get().wrapping_add(1));
        })
    });
    assert_eq!(TL_COUNT.with(Cell::get), n);
    assert_eq!(TL_PAIR.with(|c| c[0].get()), m);
    let shared = AtomicU64::new(0);
    let n = bench_loop(&mut g, "percpu_inc", "atomic_fetch_add", || {
        black_box(&shared).fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(shared.load(Ordering::Relaxed), n);
    let n = bench_loop(&mut g, "percpu_inc", "static_this_cpu_inc", || {
        k.this_cpu_inc(black_box(&EVENTS))
    });
    assert_eq!(k.per_cpu(&EVENTS, 0).unwrap().load(Ordering::Relaxed), n);
    let pc = PerCpu::<AtomicU64, _>::new(&k).expect("alloc_percpu");
    let n = bench_loop(&mut g, "percpu_inc", "percpu_this_cpu_inc", || {
        k.this_cpu_inc(black_box(&pc))
    });
    assert_eq!(pc.per_cpu(0).unwrap().load(Ordering::Relaxed), n);
    g.finish();
    drop(pc); // free_percpu, on the bound CPU
    drop(cpu);
}

/// Pads its content to its own cache lines (two, for the adjacent-line
/// prefetcher).
#[repr(align(128))]
struct Padded<T>(T);

/// Set when a worker panics, so that the others stop waiting for it.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// A round's start and end on one worker; `None` when the worker panicked.
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

/// Spin until `f` holds, yielding to the host now and then. Panics when
/// another worker has panicked.
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

/// Worker threads; [`run`](Crew::run) makes every worker run the same
/// number of iterations from a common start line and answers the wall time
/// from the first start to the last finish.
struct Crew {
    go: Vec<mpsc::Sender<u64>>,
    done: mpsc::Receiver<Done>,
    /// Per-round nanoseconds per iteration.
    samples: Vec<f64>,
    /// Iterations run by each worker, warm-up included.
    iters: u64,
}

impl Crew {
    /// Start `threads` workers on `s`. Worker `t` calls `make(t)` first, on
    /// its own thread (binding its CPU there), then the body it returns once
    /// per round with the round's iteration count.
    fn start<'scope, 'env, M, B>(s: &'scope Scope<'scope, 'env>, threads: usize, make: M) -> Crew
    where
        M: Fn(usize) -> B + Send + Sync + 'env,
        B: FnMut(u64),
    {
        let make = Arc::new(make);
        // The count of workers that reached the start line, ever.
        let line = Arc::new(Padded(AtomicUsize::new(0)));
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
            iters: 0,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        for tx in &self.go {
            tx.send(iters).expect("worker alive");
        }
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
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
        self.iters += iters;
        self.samples.push(d.as_nanos() as f64 / iters as f64);
        d
    }
}

/// Bench `percpu_counter/id`: `threads` workers made by `make`, each running
/// the round's iterations, one operation each. Answers the iterations each
/// worker ran, warm-up included.
fn bench_crew<M, B>(g: &mut BenchmarkGroup<'_, WallTime>, id: &str, threads: usize, make: M) -> u64
where
    M: Fn(usize) -> B + Send + Sync,
    B: FnMut(u64),
{
    std::thread::scope(|s| {
        let mut crew = Crew::start(s, threads, make);
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(id, |b| b.iter_custom(|iters| crew.run(iters)));
        record(&format!("percpu_counter/{id}"), &crew.samples);
        crew.iters
        // The workers' channels close here; the scope joins them.
    })
}

/// `iters` thread-local increments (the memory references' body).
fn reference_mem(iters: u64) {
    for _ in 0..iters {
        TL_COUNT.with(|c| {
            let c = black_box(c);
            c.set(c.get().wrapping_add(1));
        })
    }
}

fn percpu_counter(c: &mut Criterion) {
    let sim = machine();
    let k = boot(&sim);
    let (sim, k) = (&sim, &k);
    let counter = {
        let _cpu = sim.bind(0);
        PercpuCounter::new(k, 0, GFP_KERNEL).expect("percpu_counter_init")
    };
    let mut g = c.benchmark_group("percpu_counter");
    g.sampling_mode(SamplingMode::Flat);
    // Register-only work: scales as far as the host runs both threads at
    // once.
    for threads in [1, 2] {
        bench_crew(&mut g, &format!("reference/{threads}"), threads, |t| {
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
    // A thread-local increment on each thread: nothing shared, but memory
    // touched. Two vCPUs that share a host core's load/store resources (SMT
    // siblings) slow each other down here while the register-only reference
    // still scales.
    for threads in [1, 2] {
        bench_crew(&mut g, &format!("reference_mem/{threads}"), threads, |_| {
            reference_mem
        });
    }
    let shared = Padded(AtomicU64::new(0));
    let shared = &shared.0;
    let n = bench_crew(&mut g, "atomic_fetch_add/2", 2, |cpu| {
        let bound = sim.bind(cpu);
        move |iters| {
            let _bound = &bound;
            for _ in 0..iters {
                black_box(shared).fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    assert_eq!(shared.load(Ordering::Relaxed), 2 * n);
    let pcc = &counter;
    let n1 = bench_crew(&mut g, "percpu_counter_add/1", 1, |cpu| {
        let bound = sim.bind(cpu);
        move |iters| {
            let _bound = &bound;
            for _ in 0..iters {
                black_box(pcc).add(1);
            }
        }
    });
    let n = bench_crew(&mut g, "percpu_counter_add/2", 2, |cpu| {
        let bound = sim.bind(cpu);
        move |iters| {
            let _bound = &bound;
            for _ in 0..iters {
                black_box(pcc).add(1);
            }
        }
    });
    assert_eq!(counter.sum(), (n1 + 2 * n) as i64);
    // The memory reference again: the host's state after the measurements.
    bench_crew(&mut g, "reference_mem_end/2", 2, |_| reference_mem);
    g.finish();
    // percpu_counter_destroy (free_percpu) on a CPU.
    let _cpu = sim.bind(0);
    drop(counter);
}

fn percpu_alloc(c: &mut Criterion) {
    let sim = machine();
    let k = boot(&sim);
    let _cpu = sim.bind(0);
    // Boot's own per-CPU allocations (the zones' page lists) stay.
    let live_at_boot = k.pcpu_global_stats().nr_cur_alloc;
    let mut g = c.benchmark_group("percpu_alloc");
    for size in [8usize, 64, 256] {
        bench_loop(
            &mut g,
            "percpu_alloc",
            &format!("alloc_percpu/{size}"),
            || {
                let p = k.__alloc_percpu(black_box(size), 8).unwrap();
                // SAFETY: `p` was just allocated here and is freed once; nothing uses its
                // copies.
                let r = unsafe { k.free_percpu(black_box(p)) };
                r.unwrap();
            },
        );
        bench_loop(&mut g, "percpu_alloc", &format!("kmalloc/{size}"), || {
            let p = k.kmalloc(black_box(size), GFP_KERNEL).unwrap();
            // SAFETY: `p` was just kmalloc'ed on this machine; it is freed once, here, and not used
            // afterwards.
            unsafe { k.kfree(black_box(p.as_ptr())) }.unwrap();
        });
    }
    g.finish();
    let stats = k.pcpu_global_stats();
    assert_eq!(
        stats.nr_cur_alloc, live_at_boot,
        "every per-CPU area was freed"
    );
}

/// The host CPU's model name, from `/proc/cpuinfo`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

/// The medians, the ratios and the targets.
fn summary(_: &mut Criterion) {
    if RESULTS.lock().unwrap().is_empty() {
        return;
    }
    println!();
    println!(
        "percpu summary (median of each benchmark's {SAMPLES} measured samples); host CPU: {}",
        cpu_model()
    );
    if let Some(tl) = result("percpu_inc/thread_local_cell") {
        println!();
        println!("increment of a u64, one thread bound to simulated CPU 0");
        println!(
            "{:<34} {:>10} {:>16}   target",
            "", "ns/op", "x thread-local"
        );
        for (name, id, target) in [
            ("thread-local Cell<u64>", "thread_local_cell", None),
            (
                "the same, base + index address",
                "thread_local_cell_indexed",
                None,
            ),
            ("AtomicU64::fetch_add", "atomic_fetch_add", None),
            (
                "this_cpu_inc, define_per_cpu!",
                "static_this_cpu_inc",
                Some(2.0),
            ),
            (
                "this_cpu_inc, PerCpu<AtomicU64>",
                "percpu_this_cpu_inc",
                Some(2.0),
            ),
        ] {
            let Some(t) = result(&format!("percpu_inc/{id}")) else {
                continue;
            };
            let r = t / tl;
            let tgt = target.map_or(String::new(), |x| format!("<= {x:.1}: {}", verdict(r <= x)));
            println!("{name:<34} {t:>10.3} {r:>16.2}   {tgt}");
        }
    }
    let reference = (
        result("percpu_counter/reference/1"),
        result("percpu_counter/reference/2"),
    );
    let reference_mem = (
        result("percpu_counter/reference_mem/1"),
        result("percpu_counter/reference_mem/2"),
        result("percpu_counter/reference_mem_end/2"),
    );
    let atomic = result("percpu_counter/atomic_fetch_add/2");
    let pcc = result("percpu_counter/percpu_counter_add/2");
    if atomic.is_some() || pcc.is_some() {
        println!();
        println!("two threads on simulated CPUs 0 and 1, one shared counter, +1 per operation");
        println!(
            "{:<34} {:>10} {:>16} {:>10}   target",
            "", "ns/round", "M ops/s (both)", "x atomic"
        );
        for (name, t, target) in [
            ("shared AtomicU64::fetch_add(1)", atomic, None),
            ("PercpuCounter::add(1)", pcc, Some(5.0)),
        ] {
            let Some(t) = t else { continue };
            let ops = 2e3 / t;
            let (r, tgt) = match (atomic, target) {
                (Some(a), Some(x)) => {
                    let r = a / t;
                    (format!("{r:.1}"), format!(">= {x:.0}: {}", verdict(r >= x)))
                }
                (Some(a), None) => (format!("{:.1}", a / t), String::new()),
                _ => (String::new(), String::new()),
            };
            println!("{name:<34} {t:>10.2} {ops:>16.1} {r:>10}   {tgt}");
        }
        if let Some(t1) = result("percpu_counter/percpu_counter_add/1") {
            println!(
                "{:<34} {t1:>10.2} {:>16.1}   (one thread, for scale)",
                "PercpuCounter::add(1), 1 thread",
                1e3 / t1
            );
        }
        println!(
            "references, 2-thread/1-thread throughput (2.0: the threads do not slow each other):"
        );
        let (r1, r2) = reference;
        let (m1, m2, m_end) = reference_mem;
        for (name, t1, t2) in [
            ("registers only", r1, r2),
            ("thread-local increment", m1, m2),
            ("thread-local increment, at end", m1, m_end),
        ] {
            let (Some(t1), Some(t2)) = (t1, t2) else {
                continue;
            };
            let scale = 2.0 * t1 / t2;
            println!(
                "  {name:<32} {t1:>8.2} ns / {t2:>8.2} ns per round: {scale:.2}{}",
                if scale < 1.9 {
                    "  (below 1.9: the host did not give both threads a core of their own)"
                } else {
                    ""
                }
            );
        }
    }
    if result("percpu_alloc/alloc_percpu/8").is_some() {
        println!();
        println!("__alloc_percpu(size, 8) + free_percpu, one thread bound to CPU 0");
        println!(
            "{:<34} {:>10} {:>16} {:>10}",
            "size", "ns/pair", "kmalloc+kfree", "x kmalloc"
        );
        for size in [8, 64, 256] {
            let Some(t) = result(&format!("percpu_alloc/alloc_percpu/{size}")) else {
                continue;
            };
            let km = result(&format!("percpu_alloc/kmalloc/{size}"));
            println!(
                "{:<34} {t:>10.1} {:>16} {:>10}",
                format!("{size} B"),
                km.map_or(String::new(), |m| format!("{m:.2}")),
                km.map_or(String::new(), |m| format!("{:.1}", t / m))
            );
        }
    }
}

criterion_group!(benches, percpu_inc, percpu_counter, percpu_alloc, summary);
criterion_main!(benches);
