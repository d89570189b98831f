//! The evidence behind kmem-malloc's choice of a slot per thread over the
//! real CPU with restartable sequences (docs/malloc.md, "CPUs: a slot per
//! thread, not the real CPU"): a prototype of each, doing what kmem's fast
//! paths do to a per-CPU sheaf (pop the top object; push one back, checked
//! against the top as kmem's double-free check does), timed side by side.
//!
//! - `slot`: the thread's slot from a thread-local; plain loads and stores
//!   (kmem-malloc's exclusive slot).
//! - `rseq`: the running CPU from glibc's registered `struct rseq`; the
//!   pop and the push are each a restartable sequence, whose last store
//!   commits it (tcmalloc's per-CPU cache).
//! - `locked`: a slot shared by several threads behind a lock, the futex
//!   mutex kmem-malloc's shared slots take (what a kmem-malloc thread gets
//!   when more threads than slots are alive).
//!
//! Each runs with 1 thread, one thread per CPU (pinned), and 4 threads per
//! CPU (unpinned: preemption and migration abort sequences, which the
//! table counts). After each run every sheaf is checked: the objects are
//! the ones put in, none lost or doubled, which shows the prototype
//! correct when its sequences were aborted and restarted.
//!
//! `cargo bench -p kmem-malloc --bench cpu_choice` (x86_64 Linux with
//! glibc 2.35 or later, which registers `rseq` for every thread).

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
fn main() {
    x86::main();
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
fn main() {
    eprintln!("cpu_choice: the rseq prototype is written for x86_64 Linux with glibc");
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod x86 {
    use rustix::thread::futex;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::*};
    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    /// Object slots in a sheaf (kmem's sheaves hold 120).
    const CAP: usize = 127;
    /// Objects each sheaf starts with: half full, so neither a pop nor a
    /// push fails in the steady state.
    const FILL: usize = 64;
    /// Pairs (pop, then push the object back) per thread and run.
    const PAIRS: usize = 20_000_000;
    /// Runs of each case; the table shows the median.
    const RUNS: usize = 9;

    /// One CPU's (or slot's) sheaf: a count and a stack of objects,
    /// `objs[0..size]`, the top at `objs[size - 1]`. 2 KiB with its
    /// alignment, so that the rseq sequences find CPU `c`'s at
    /// `base + (c << 11)`.
    #[repr(C, align(2048))]
    struct Sheaf {
        size: Cell<usize>,
        objs: [Cell<usize>; CAP],
        /// The lock of the `locked` variant: 0 free, 1 held, 2 held with
        /// waiters (kmem-malloc's `Slot::lock`).
        lock: AtomicU32,
    }

    // SAFETY: each variant below gives a sheaf one user at a time: its
    // slot's thread, the sequence on its CPU, or the lock holder.
    unsafe impl Sync for Sheaf {}

    impl Sheaf {
        fn new(first: usize) -> Self {
            let s = Sheaf {
                size: Cell::new(FILL),
                objs: std::array::from_fn(|_| Cell::new(0)),
                lock: AtomicU32::new(0),
            };
            for i in 0..FILL {
                s.objs[i].set(first + i + 1);
            }
            s
        }
    }

    // The sequences address sheaves by `cpu << 11`.
    const _: () = assert!(std::mem::size_of::<Sheaf>() == 2048);

    /// glibc's registration of `struct rseq` for each thread (2.35+): the
    /// area is at the thread pointer plus `__rseq_offset`, and
    /// `__rseq_size` is 0 when glibc did not register it. Looked up at run
    /// time, so that an older glibc reports instead of failing to link.
    fn rseq_offset() -> Option<isize> {
        // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names; glibc's
        // variables, when present, are an isize and a u32 fixed at startup.
        unsafe {
            let off = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
            let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
            if off.is_null() || size.is_null() || *size.cast::<u32>() == 0 {
                return None;
            }
            Some(*off.cast::<isize>())
        }
    }

    /// This thread's `struct rseq` (`cpu_id` at +4, `rseq_cs` at +8).
    fn rseq_area(offset: isize) -> usize {
        let tp: usize;
        // SAFETY: on x86_64 Linux `%fs:0` holds the thread pointer itself.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly))
        };
        tp.wrapping_add_signed(offset)
    }

    /// One restartable sequence on the running CPU's sheaf, `{c}` its
    /// address: `$body` runs from the sequence's start (`2:`) and ends with
    /// its commit store at `3:`, then jumps to `8:` (done); a refusal jumps
    /// to `8:` without committing. Around it: the descriptor's registration
    /// in `rseq->rseq_cs` (`7:`), the abort handler after its signature
    /// (`6:`: counts the abort in `{ab}` and starts again at `7:`, since
    /// the kernel cleared `rseq_cs`), and the descriptor in `__rseq_cs`.
    /// The macro binds the operands every sequence has: `{rseq}` (the
    /// thread's area), `{base}` (the sheaves), `{ab}` (the abort count) and
    /// the scratch registers `{t}`, `{c}` and `{n}`; a sequence adds its
    /// own after the `;`.
    macro_rules! rseq_sequence {
        ($rseq:expr, $base:expr, $aborts:expr; $($body:literal,)*; $($operands:tt)*) => {
            std::arch::asm!(
                "7:",
                "lea {t}, [rip + 5f]",
                "mov qword ptr [{rseq} + 8], {t}",
                "2:",
                "mov {c:e}, dword ptr [{rseq} + 4]",
                "shl {c}, 11",
                "add {c}, {base}",
                $($body,)*
                // RSEQ_SIG before the abort handler, as a ud1 instruction.
                ".byte 0x0f, 0xb9, 0x3d",
                ".long 0x53053053",
                "6:",
                "inc {ab}",
                "jmp 7b",
                ".pushsection __rseq_cs, \"aw\"",
                ".balign 32",
                "5:",
                ".long 0, 0",
                ".quad 2b, 3b - 2b, 6b",
                ".popsection",
                "8:",
                rseq = in(reg) $rseq,
                base = in(reg) $base,
                ab = inout(reg) $aborts,
                t = out(reg) _,
                c = out(reg) _,
                n = out(reg) _,
                $($operands)*
            )
        };
    }

    /// Pop the top object of the running CPU's sheaf in one restartable
    /// sequence; 0 if it is empty. Each abort adds 1 to `aborts`.
    ///
    /// # Safety
    /// `rseq` is this thread's area; `base` holds a sheaf for every CPU
    /// number the kernel may report.
    #[inline(always)]
    unsafe fn rseq_pop(rseq: usize, base: *const Sheaf, aborts: &mut usize) -> usize {
        let obj: usize;
        // SAFETY: the caller's contract. A preempted, migrated or
        // signalled thread inside [2:, 3:) restarts (`rseq_sequence!`);
        // the store of the count at 3: commits.
        unsafe {
            rseq_sequence!(rseq, base, *aborts;
                "mov {n}, qword ptr [{c}]",
                "test {n}, {n}",
                "jz 4f",
                "mov {obj}, qword ptr [{c} + {n}*8]",
                "dec {n}",
                "mov qword ptr [{c}], {n}",
                "3:",
                "jmp 8f",
                "4:",
                "xor {obj:e}, {obj:e}",
                "jmp 8f",
                ;
                obj = out(reg) obj,
                options(nostack),
            );
        }
        obj
    }

    /// Push `obj` onto the running CPU's sheaf in one restartable
    /// sequence, refusing it if the sheaf is full or `obj` is its top
    /// object (kmem's double-free check); whether it went on. Each abort
    /// adds 1 to `aborts`.
    ///
    /// # Safety
    /// As [`rseq_pop`].
    #[inline(always)]
    unsafe fn rseq_push(rseq: usize, base: *const Sheaf, obj: usize, aborts: &mut usize) -> bool {
        let ok: usize;
        // SAFETY: as in `rseq_pop`; the object is written above the count
        // first, so an aborted sequence leaves nothing behind.
        unsafe {
            rseq_sequence!(rseq, base, *aborts;
                "mov {n}, qword ptr [{c}]",
                "cmp {n}, {cap}",
                "jae 4f",
                "cmp qword ptr [{c} + {n}*8], {obj}",
                "je 4f",
                "mov qword ptr [{c} + {n}*8 + 8], {obj}",
                "inc {n}",
                "mov qword ptr [{c}], {n}",
                "3:",
                "mov {ok:e}, 1",
                "jmp 8f",
                "4:",
                "xor {ok:e}, {ok:e}",
                "jmp 8f",
                ;
                obj = in(reg) obj,
                cap = const CAP,
                ok = out(reg) ok,
                options(nostack),
            );
        }
        ok != 0
    }

    thread_local! {
        /// The `slot` and `locked` variants' slot number.
        static SLOT: Cell<usize> = const { Cell::new(0) };
    }

    /// The top object of `s`, popped; 0 if empty.
    #[inline(always)]
    fn pop(s: &Sheaf) -> usize {
        let n = s.size.get();
        if n == 0 {
            return 0;
        }
        s.size.set(n - 1);
        s.objs[n - 1].get()
    }

    /// `obj` pushed onto `s` unless full or already its top.
    #[inline(always)]
    fn push(s: &Sheaf, obj: usize) -> bool {
        let n = s.size.get();
        if n >= CAP || (n > 0 && s.objs[n - 1].get() == obj) {
            return false;
        }
        s.objs[n].set(obj);
        s.size.set(n + 1);
        true
    }

    /// kmem-malloc's shared-slot lock (a futex mutex, Drepper's).
    fn lock(l: &AtomicU32) {
        if l.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            return;
        }
        while l.swap(2, Acquire) != 0 {
            let _ = futex::wait(l, futex::Flags::PRIVATE, 2, None);
        }
    }

    fn unlock(l: &AtomicU32) {
        if l.swap(0, Release) == 2 {
            let _ = futex::wake(l, futex::Flags::PRIVATE, 1);
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Variant {
        Slot,
        Rseq,
        Locked,
    }

    impl Variant {
        fn name(self) -> &'static str {
            match self {
                Variant::Slot => "slot",
                Variant::Rseq => "rseq",
                Variant::Locked => "locked",
            }
        }
    }

    /// Pin the calling thread to `cpu`; whether the host allowed it.
    fn pin(cpu: usize) -> bool {
        // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read
        // and write it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0
        }
    }

    /// What runs saw besides their times.
    #[derive(Default)]
    struct Seen {
        /// Pops that found the sheaf empty (rseq's sheaves drift: a thread
        /// moved between its pop and its push gives the object to another
        /// CPU's sheaf).
        empty: usize,
        /// rseq sequences aborted and restarted.
        aborts: usize,
        /// Threads the host did not let pin.
        unpinned: usize,
    }

    /// One run: `threads` threads doing `PAIRS` pairs each on `v`'s
    /// sheaves; ns per pair (wall time over each thread's pairs), after
    /// checking that every sheaf holds exactly the objects put in.
    fn run(v: Variant, threads: usize, cpus: usize, pinned: bool, offset: isize) -> (f64, Seen) {
        // The sheaves: one per possible CPU number for rseq (the sequences
        // index them by `cpu_id`), one per thread for slots, one per CPU
        // shared by its threads for locked.
        let n = match v {
            Variant::Slot => threads,
            Variant::Rseq => possible_cpus(),
            Variant::Locked => cpus,
        };
        let sheaves: Arc<Vec<Sheaf>> = Arc::new((0..n).map(|i| Sheaf::new(i * FILL)).collect());
        let barrier = Arc::new(Barrier::new(threads + 1));
        let empty = Arc::new(AtomicUsize::new(0));
        let aborts = Arc::new(AtomicUsize::new(0));
        let unpinned = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (sheaves, barrier) = (sheaves.clone(), barrier.clone());
                let (empty, aborts, unpinned) = (empty.clone(), aborts.clone(), unpinned.clone());
                std::thread::spawn(move || {
                    if pinned && !pin(t % cpus) {
                        unpinned.fetch_add(1, Relaxed);
                    }
                    SLOT.with(|s| s.set(t % n));
                    let base = sheaves.as_ptr();
                    let rseq = rseq_area(offset);
                    let (mut bad, mut ab) = (0, 0);
                    barrier.wait();
                    // A first tenth untimed (the other threads are warming
                    // up too), then the timed pairs.
                    for i in 0..PAIRS + PAIRS / 10 {
                        if i == PAIRS / 10 {
                            barrier.wait();
                        }
                        let ok = match v {
                            Variant::Slot => {
                                let s = &sheaves[SLOT.with(Cell::get)];
                                let o = pop(s);
                                o != 0 && push(s, std::hint::black_box(o))
                            }
                            Variant::Rseq => {
                                // SAFETY: this thread's area; a sheaf per
                                // possible CPU number.
                                let o = unsafe { rseq_pop(rseq, base, &mut ab) };
                                // A full sheaf (drift, see `Seen`) refuses
                                // the push: try again, on whatever CPU.
                                while o != 0
                                    // SAFETY: as above.
                                    && !unsafe { rseq_push(rseq, base, std::hint::black_box(o), &mut ab) }
                                {
                                    std::thread::yield_now();
                                }
                                o != 0
                            }
                            Variant::Locked => {
                                let s = &sheaves[SLOT.with(Cell::get)];
                                lock(&s.lock);
                                let o = pop(s);
                                let ok = o != 0 && push(s, std::hint::black_box(o));
                                unlock(&s.lock);
                                ok
                            }
                        };
                        bad += usize::from(!ok);
                    }
                    empty.fetch_add(bad, Relaxed);
                    aborts.fetch_add(ab, Relaxed);
                    barrier.wait();
                })
            })
            .collect();
        barrier.wait();
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        let ns = t0.elapsed().as_nanos() as f64 / PAIRS as f64;
        handles.into_iter().for_each(|h| h.join().unwrap());
        let seen = Seen {
            empty: empty.load(Relaxed),
            aborts: aborts.load(Relaxed),
            unpinned: unpinned.load(Relaxed),
        };
        assert!(
            v == Variant::Rseq || seen.empty == 0,
            "{}: a pop or push was refused",
            v.name()
        );
        // Every object is back, once: pops and pushes neither lost nor
        // doubled one, aborted and restarted or not.
        let mut all: Vec<usize> = sheaves
            .iter()
            .flat_map(|s| (0..s.size.get()).map(|i| s.objs[i].get()))
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=n * FILL).collect::<Vec<_>>(),
            "{}: objects lost or doubled",
            v.name()
        );
        (ns, seen)
    }

    /// One more than the highest CPU number the kernel may report
    /// (`/sys/devices/system/cpu/possible`, such as "0-3,8-11"): the
    /// sequences index the sheaves by `cpu_id` without a bound.
    fn possible_cpus() -> usize {
        let list = std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .expect("/sys/devices/system/cpu/possible");
        let last = list
            .trim()
            .split([',', '-'])
            .filter_map(|n| n.parse::<usize>().ok())
            .max();
        last.expect("a CPU number in /sys/devices/system/cpu/possible") + 1
    }

    pub fn main() {
        let Some(offset) = rseq_offset() else {
            eprintln!(
                "cpu_choice: glibc did not register rseq (glibc < 2.35, or GLIBC_TUNABLES=glibc.pthread.rseq=0)"
            );
            std::process::exit(1);
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                let line = c.lines().find(|l| l.starts_with("model name"))?;
                Some(line.split(':').nth(1)?.trim().to_string())
            })
            .unwrap_or_default();
        println!(
            "CPU: {model}, {cpus} CPUs; {PAIRS} pop+push pairs per thread, median of {RUNS} runs"
        );
        println!(
            "{:<8} {:>14} {:>22} {:>24}",
            "variant",
            "1 thread",
            format!("{cpus} threads, pinned"),
            format!("{} threads, unpinned", 4 * cpus)
        );
        for v in [Variant::Slot, Variant::Rseq, Variant::Locked] {
            let mut row = Vec::new();
            let mut all = Seen::default();
            for (threads, pinned) in [(1, true), (cpus, true), (4 * cpus, false)] {
                let mut t: Vec<f64> = (0..RUNS)
                    .map(|_| {
                        let (ns, seen) = run(v, threads, cpus, pinned, offset);
                        all.empty += seen.empty;
                        all.aborts += seen.aborts;
                        all.unpinned += seen.unpinned;
                        ns
                    })
                    .collect();
                t.sort_by(f64::total_cmp);
                row.push(t[RUNS / 2]);
            }
            println!(
                "{:<8} {:>11.2} ns {:>19.2} ns {:>21.2} ns   (aborted sequences {}, empty pops {}, threads not pinned {})",
                v.name(),
                row[0],
                row[1],
                row[2],
                all.aborts,
                all.empty,
                all.unpinned
            );
        }
        println!("(ns per pair: wall time over one thread's pairs; all threads run at once)");
    }
}
