//! Many CPUs at once: 8 and 16 simulated CPUs, each a thread, freeing
//! objects allocated on other CPUs (handed over through channels), racing
//! double frees of one object from two CPUs, and `kmem_cache_shrink` and
//! `kmem_cache_destroy` racing with allocations. Every object carries its
//! owner's tag, checked before it is freed, so an object handed to two
//! owners at once is caught; at the end every page is back.

use kmem::gfp::GFP_KERNEL;
use kmem::platform::LocalGuard;
use kmem::slab::{KmemCache, SlabFlags, SLAB_CONSISTENCY_CHECKS};
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::Mutex;

type K<'a> = Kmem<&'a SimPlatform>;

/// The tests of this file run one at a time: each already has more CPU
/// threads than the host has cores, and [`PANICKED`] is theirs alone.
static SERIAL: Mutex<()> = Mutex::new(());

fn machine(cpus: usize, mem: u64) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(mem))).unwrap()
}

fn boot(s: &SimPlatform) -> K<'_> {
    s.on_cpu(0, || Kmem::boot(s, s.memory_map(), &BootParams::default()))
        .unwrap()
}

/// Set when a CPU thread panics, so that the others stop waiting for it.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Raises [`PANICKED`] if its thread unwinds.
struct Alarm;

impl Drop for Alarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            PANICKED.store(true, SeqCst);
        }
    }
}

/// Wait on this CPU until `a` reaches `v`, taking the cross-CPU calls
/// (sheaf flushes of `kmem_cache_shrink`) that other CPUs post meanwhile:
/// a simulated CPU runs them when it leaves a CPU-local section.
fn spin_until(p: &SimPlatform, a: &AtomicUsize, v: usize) {
    while a.load(SeqCst) < v {
        assert!(!PANICKED.load(SeqCst), "another CPU panicked");
        drop(LocalGuard::new(p));
        // More CPU threads than host cores: let the one being waited for run.
        std::thread::yield_now();
    }
}

fn rnd(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Every cache shrunk (the kmalloc caches too) and every CPU's page lists
/// drained: the free pages.
fn settled(k: &K<'_>, s: &SimPlatform) -> u64 {
    let mut caches: Vec<usize> = Vec::new();
    k.for_each_cache(|c| caches.push(c as *const KmemCache as usize));
    s.run_on_cpus(|_| {
        for &c in &caches {
            // SAFETY: no cache is destroyed while this runs; each is alive.
            k.kmem_cache_shrink(unsafe { &*(c as *const KmemCache) });
        }
        k.drain_local_pages();
    });
    assert_eq!(k.nr_pcp_pages(), 0);
    k.check_free_counts().expect("counters match lists")
}

/// An object's owner tag: who holds it, and which of its allocations.
fn tag(cpu: usize, seq: u64) -> u64 {
    ((cpu as u64) << 48) | seq
}

/// A kmem object handed between CPUs.
struct Obj(NonNull<u8>, u64);
// SAFETY: the pointer is a kmem object passed by value between CPU threads;
// exactly one thread holds it at a time and frees it once.
unsafe impl Send for Obj {}

fn put_tag(o: NonNull<u8>, t: u64) {
    // SAFETY: `o` is a live object of at least 64 bytes that the caller
    // owns; the tag is its first word.
    unsafe { (o.as_ptr() as *mut u64).write(t) }
}

fn get_tag(o: NonNull<u8>) -> u64 {
    // SAFETY: as in `put_tag`.
    unsafe { (o.as_ptr() as *const u64).read() }
}

/// Each CPU allocates kmalloc objects and cache objects, tags them, and
/// sends most of them to the next CPU, which checks the tag and frees them;
/// CPU 0 shrinks the cache now and then. No object may carry another
/// owner's tag when freed.
fn cross_cpu_frees(cpus: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    PANICKED.store(false, SeqCst);
    let s = machine(cpus, 256 << 20);
    let k = boot(&s);
    let cache = s.on_cpu(0, || {
        k.kmem_cache_create("smp_objs", 96, 0, SlabFlags::NONE, None)
            .unwrap()
    });
    let boot_free = settled(&k, &s);
    let chans: Vec<_> = (0..cpus).map(|_| mpsc::channel::<Obj>()).collect();
    let senders: Vec<_> = chans.iter().map(|(tx, _)| tx.clone()).collect();
    let receivers: Vec<_> = chans.into_iter().map(|(_, rx)| Mutex::new(rx)).collect();
    let bad = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    const ROUNDS: u64 = 20_000;
    s.run_on_cpus(|cpu| {
        let _alarm = Alarm;
        let rx = receivers[cpu].lock().unwrap();
        let tx = senders[(cpu + 1) % cpus].clone();
        let mut x = 0x9e37_79b9 ^ (cpu as u64 + 1);
        let mut mine: Vec<Obj> = Vec::new();
        let check_free = |o: Obj| {
            if get_tag(o.0) != o.1 {
                bad.fetch_add(1, SeqCst);
            }
            if o.1 & 1 == 0 {
                // SAFETY: a kmalloc object this thread now holds, freed once.
                unsafe { k.kfree(o.0.as_ptr()) }.unwrap();
            } else {
                // SAFETY: an object of `cache` this thread now holds.
                unsafe { k.kmem_cache_free(cache, o.0.as_ptr()) }.unwrap();
            }
        };
        for seq in 0..ROUNDS {
            let t = tag(cpu, seq);
            let p = if t & 1 == 0 {
                k.kmalloc(64 + (rnd(&mut x) % 512) as usize, GFP_KERNEL)
            } else {
                k.kmem_cache_alloc(cache, GFP_KERNEL)
            }
            .expect("memory is plentiful");
            put_tag(p, t);
            let o = Obj(p, t);
            if rnd(&mut x) % 4 == 0 {
                mine.push(o);
            } else {
                tx.send(o).unwrap();
            }
            while let Ok(o) = rx.try_recv() {
                check_free(o);
            }
            if mine.len() > 64 {
                for o in mine.drain(..) {
                    check_free(o);
                }
            }
            if cpu == 0 && seq % 1024 == 0 {
                k.kmem_cache_shrink(cache);
            }
        }
        for o in mine.drain(..) {
            check_free(o);
        }
        drop(tx);
        done.fetch_add(1, SeqCst);
        // Objects still in flight to this CPU arrive until every sender is done.
        while done.load(SeqCst) < cpus {
            assert!(!PANICKED.load(SeqCst), "another CPU panicked");
            while let Ok(o) = rx.try_recv() {
                check_free(o);
            }
            drop(LocalGuard::new(&s));
            std::thread::yield_now();
        }
        while let Ok(o) = rx.try_recv() {
            check_free(o);
        }
    });
    assert_eq!(bad.load(SeqCst), 0, "an object had two owners");
    assert_eq!(settled(&k, &s), boot_free, "every page is back");
}

#[test]
fn cross_cpu_frees_on_8_cpus() {
    cross_cpu_frees(8);
}

#[test]
fn cross_cpu_frees_on_16_cpus() {
    cross_cpu_frees(16);
}

/// CPUs 0 and 1 free the same object at the same moment, round after
/// round, on a `SLAB_CONSISTENCY_CHECKS` cache, while the other CPUs
/// allocate and free on a second debug cache, hand objects across CPUs and
/// shrink both caches, so that emptied slabs go back to the page allocator
/// and their pages are reused. Exactly one of the two frees may succeed and
/// the other must be reported, every time; no object of the other cache
/// may be corrupted or handed out twice.
fn racing_double_frees(cpus: usize, rounds: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    PANICKED.store(false, SeqCst);
    let s = machine(cpus, 256 << 20);
    let k = boot(&s);
    let (race, churn) = s.on_cpu(0, || {
        (
            k.kmem_cache_create("smp_race", 64, 0, SLAB_CONSISTENCY_CHECKS, None)
                .unwrap(),
            k.kmem_cache_create("smp_churn", 64, 0, SLAB_CONSISTENCY_CHECKS, None)
                .unwrap(),
        )
    });
    let boot_free = settled(&k, &s);
    s.take_reports();
    let target = AtomicU64::new(0);
    let go = AtomicUsize::new(0);
    let ready = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let ok = [AtomicBool::new(false), AtomicBool::new(false)];
    let both = AtomicUsize::new(0);
    let neither = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let bad = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Obj>();
    let rx = Mutex::new(rx);
    let tx = Mutex::new(tx);
    s.run_on_cpus(|cpu| {
        let _alarm = Alarm;
        if cpu < 2 {
            for r in 0..rounds {
                if cpu == 0 {
                    let p = k.kmem_cache_alloc(race, GFP_KERNEL).unwrap();
                    put_tag(p, tag(0, r as u64));
                    target.store(p.as_ptr() as u64, SeqCst);
                    go.store(2 * r + 1, SeqCst);
                } else {
                    spin_until(&s, &go, 2 * r + 1);
                }
                // Both CPUs arrive, then free at once.
                ready.fetch_add(1, SeqCst);
                spin_until(&s, &ready, 2 * (r + 1));
                let p = target.load(SeqCst) as *mut u8;
                // SAFETY: a deliberate double free racing with the other
                // CPU's free of the same object: kmem must let one through
                // and refuse the other; `p` is not dereferenced here.
                let r_ok = unsafe { k.kmem_cache_free(race, p) }.is_ok();
                ok[cpu].store(r_ok, SeqCst);
                finished.fetch_add(1, SeqCst);
                if cpu == 0 {
                    spin_until(&s, &finished, 2 * (r + 1));
                    match (ok[0].load(SeqCst), ok[1].load(SeqCst)) {
                        (true, true) => both.fetch_add(1, SeqCst),
                        (false, false) => neither.fetch_add(1, SeqCst),
                        _ => 0,
                    };
                    go.store(2 * r + 2, SeqCst);
                } else {
                    spin_until(&s, &go, 2 * r + 2);
                }
            }
            stop.store(true, SeqCst);
        } else {
            let mut x = 0x2545_f491 ^ cpu as u64;
            let mut mine: Vec<Obj> = Vec::new();
            let mut seq = 0;
            let free = |o: Obj| {
                if get_tag(o.0) != o.1 {
                    bad.fetch_add(1, SeqCst);
                }
                // SAFETY: an object of `churn` this thread holds, freed once.
                unsafe { k.kmem_cache_free(churn, o.0.as_ptr()) }.unwrap();
            };
            while !stop.load(SeqCst) && !PANICKED.load(SeqCst) {
                seq += 1;
                let p = k.kmem_cache_alloc(churn, GFP_KERNEL).unwrap();
                let t = tag(cpu, seq);
                put_tag(p, t);
                match rnd(&mut x) % 8 {
                    0 => {
                        k.kmem_cache_shrink(race);
                    }
                    1 => {
                        k.kmem_cache_shrink(churn);
                    }
                    _ => {}
                }
                if rnd(&mut x) % 4 == 0 {
                    tx.lock().unwrap().send(Obj(p, t)).unwrap();
                } else {
                    mine.push(Obj(p, t));
                }
                if mine.len() > 200 {
                    for o in mine.drain(..) {
                        free(o);
                    }
                }
                while let Ok(o) = rx.lock().unwrap().try_recv() {
                    free(o);
                }
            }
            for o in mine.drain(..) {
                free(o);
            }
            while let Ok(o) = rx.lock().unwrap().try_recv() {
                free(o);
            }
        }
    });
    assert_eq!(
        (both.load(SeqCst), neither.load(SeqCst)),
        (0, 0),
        "rounds where both frees (or neither) succeeded, of {rounds}"
    );
    assert_eq!(bad.load(SeqCst), 0, "an object had two owners");
    let reports = s.take_reports();
    let double = reports
        .iter()
        .filter(|(_, l)| {
            l.contains("Object already free")
                || l.contains("is not in a slab of smp_race")
                || l.contains("no longer in a slab of smp_race")
                || l.contains("Wrong slab cache. smp_race")
        })
        .count();
    assert!(double >= rounds, "each refused free is reported ({double})");
    assert_eq!(settled(&k, &s), boot_free, "every page is back");
}

#[test]
fn racing_double_frees_on_8_cpus() {
    racing_double_frees(8, 100_000);
}

#[test]
fn racing_double_frees_on_16_cpus() {
    racing_double_frees(16, 50_000);
}

/// `kmem_cache_shrink` and `kmem_cache_destroy` while other CPUs allocate
/// and free: each round every CPU allocates from a fresh cache, CPU 0
/// shrinks it meanwhile, then all free and CPU 0 destroys it; no report,
/// and every page back at the end.
fn shrink_and_destroy_race_with_allocations(cpus: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    PANICKED.store(false, SeqCst);
    let s = machine(cpus, 256 << 20);
    let k = boot(&s);
    let boot_free = settled(&k, &s);
    let cur = AtomicUsize::new(0);
    let phase = AtomicUsize::new(0);
    let arrived = AtomicUsize::new(0);
    const ROUNDS: usize = 40;
    s.run_on_cpus(|cpu| {
        let _alarm = Alarm;
        let mut x = 0x1234_5678 ^ cpu as u64;
        for r in 0..ROUNDS {
            if cpu == 0 {
                let name = if r % 2 == 0 {
                    "smp_round_a"
                } else {
                    "smp_round_b"
                };
                let c = k
                    .kmem_cache_create(name, 128, 0, SlabFlags::NONE, None)
                    .unwrap();
                cur.store(c as *const KmemCache as usize, SeqCst);
                phase.store(2 * r + 1, SeqCst);
            }
            spin_until(&s, &phase, 2 * r + 1);
            // SAFETY: the cache lives until every CPU has arrived below.
            let c = unsafe { &*(cur.load(SeqCst) as *const KmemCache) };
            let mut mine = Vec::new();
            for i in 0..500 {
                let p = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
                put_tag(p, tag(cpu, i));
                mine.push((p, tag(cpu, i)));
                if cpu == 0 && i % 50 == 0 {
                    k.kmem_cache_shrink(c);
                }
                if rnd(&mut x) % 3 == 0 {
                    let (p, t) = mine.swap_remove((rnd(&mut x) as usize) % mine.len());
                    assert_eq!(get_tag(p), t, "an object had two owners");
                    // SAFETY: this CPU's object of `c`, freed once.
                    unsafe { k.kmem_cache_free(c, p.as_ptr()) }.unwrap();
                }
            }
            for (p, t) in mine {
                assert_eq!(get_tag(p), t, "an object had two owners");
                // SAFETY: as above.
                unsafe { k.kmem_cache_free(c, p.as_ptr()) }.unwrap();
            }
            if arrived.fetch_add(1, SeqCst) + 1 == cpus * (r + 1) {
                // The last CPU to finish destroys the cache; the others
                // are already allocating from nothing until the next one.
                // SAFETY: every object of `c` was freed and no CPU uses it
                // again.
                unsafe { k.kmem_cache_destroy(c) }.unwrap();
                phase.store(2 * r + 2, SeqCst);
            }
            spin_until(&s, &phase, 2 * r + 2);
        }
    });
    let reports = s.take_reports();
    assert!(
        !reports.iter().any(|(_, l)| l.contains("BUG")),
        "no report: {reports:?}"
    );
    assert_eq!(settled(&k, &s), boot_free, "every page is back");
}

#[test]
fn shrink_and_destroy_race_with_allocations_on_8_cpus() {
    shrink_and_destroy_race_with_allocations(8);
}

#[test]
fn shrink_and_destroy_race_with_allocations_on_16_cpus() {
    shrink_and_destroy_race_with_allocations(16);
}
