//! Cross-CPU calls (`smp_call_function_single`, `on_each_cpu`) on the
//! simulator: idle CPUs, busy CPUs (the mailbox), sleeping holders, the
//! caller's own CPU, atomic context, and CPUs calling each other.

use kmem::platform::{IrqSpinGuard, LocalGuard};
use kmem::{Error, Platform};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

fn machine(cpus: usize) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(16 << 20))).unwrap()
}

/// What a called function saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    cpu: usize,
    atomic: bool,
    comm: String,
    thread: ThreadId,
}

/// Call `cpu` and return what the function saw there.
fn call(p: &SimPlatform, cpu: usize) -> Result<Seen, Error> {
    let mut seen = None;
    p.smp_call_function_single(cpu, &mut || {
        seen = Some(Seen {
            cpu: p.smp_processor_id(),
            atomic: p.in_atomic(),
            comm: p.current().comm().to_string(),
            thread: std::thread::current().id(),
        })
    })?;
    Ok(seen.expect("Ok means the function ran"))
}

/// Spin until `flag` is set, failing after 10 s.
fn wait_for(flag: &AtomicBool) {
    let t = Instant::now();
    while !flag.load(SeqCst) {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out");
        std::thread::yield_now();
    }
}

#[test]
fn an_idle_cpu_runs_the_call_on_a_helper_as_its_idle_task() {
    let p = machine(3);
    let _cpu = p.bind(0);
    let s = call(&p, 2).unwrap();
    assert_eq!((s.cpu, s.atomic, s.comm.as_str()), (2, true, "swapper/2"));
    assert_ne!(s.thread, std::thread::current().id());
    // The helper gave CPU 2 back.
    assert_eq!(p.on_cpu(2, || p.smp_processor_id()), 2);
    // A thread bound to nothing may call too.
    std::thread::scope(|sc| {
        sc.spawn(|| assert_eq!(call(&p, 1).unwrap().cpu, 1));
    });
    assert_eq!(
        p.smp_call_function_single(3, &mut || {}),
        Err(Error::InvalidArgument)
    );
    assert!(p.reports().is_empty(), "{:?}", p.reports());
}

/// Run `busy` on a thread of its own, which binds a CPU (as "cpu/1"), ends
/// up holding `cpu`, calls `ready` and loops until `stop`; meanwhile call
/// `cpu` 100 times from CPU 0. Every call must have run on that thread, on
/// `cpu`, in atomic context: the busy thread took it from its mailbox.
fn calls_reach_the_busy_holder_of(
    p: &SimPlatform,
    cpu: usize,
    busy: impl FnOnce(&dyn Fn(), &AtomicBool) + Send,
) {
    let bound = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let holder = Mutex::new(None);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let ready = || {
                *holder.lock().unwrap() = Some(std::thread::current().id());
                bound.store(true, SeqCst);
            };
            busy(&ready, &stop);
        });
        wait_for(&bound);
        let _cpu = p.bind(0);
        let seen: Vec<_> = (0..100).map(|_| call(p, cpu)).collect();
        // Stop the busy thread before asserting, so a failure cannot hang.
        stop.store(true, SeqCst);
        let holder = holder.lock().unwrap().expect("the busy thread is ready");
        for s in seen {
            let s = s.unwrap();
            assert_eq!((s.cpu, s.atomic, s.comm.as_str()), (cpu, true, "cpu/1"));
            assert_eq!(s.thread, holder, "run by the holder");
        }
    });
}

#[test]
fn a_busy_cpu_runs_the_call_from_its_mailbox_when_a_section_ends() {
    let p = machine(2);
    let sections = AtomicUsize::new(0);
    calls_reach_the_busy_holder_of(&p, 1, |ready, stop| {
        let _cpu = p.bind(1);
        ready();
        while !stop.load(SeqCst) {
            let _g = LocalGuard::new(&p);
            sections.fetch_add(1, SeqCst);
        }
    });
    assert!(sections.load(SeqCst) > 0);
}

/// A core lock taken `spin_lock_irqsave` ([`IrqSpinGuard`]) is a simulated
/// spinlock: atomic inside, calls wait for it, and the release takes them,
/// as `local_irq_restore` lets a pending IPI in.
#[test]
fn a_cpu_busy_with_irqsave_locks_runs_the_call_when_one_is_released() {
    let p = machine(2);
    let lock = spin::Mutex::new(0u64);
    let atomic_inside = AtomicBool::new(true);
    calls_reach_the_busy_holder_of(&p, 1, |ready, stop| {
        let _cpu = p.bind(1);
        ready();
        while !stop.load(SeqCst) {
            let mut g = IrqSpinGuard::lock(&p, &lock);
            *g += 1;
            if !p.in_atomic() {
                atomic_inside.store(false, SeqCst);
            }
        }
    });
    assert!(atomic_inside.load(SeqCst), "in_atomic inside the lock");
    assert!(*lock.lock() > 0);
    // A thread outside the machine (a /proc reader) takes it as a plain lock.
    let g = IrqSpinGuard::lock(&p, &lock);
    assert!(!p.in_atomic());
    drop(g);
}

#[test]
fn a_cpu_busy_in_leaf_sections_runs_the_call_when_one_ends() {
    // The slab fast paths run in leaf sections, which touch no counter;
    // their exits still take pending calls, as a full section's do.
    let p = machine(2);
    let pairs = AtomicUsize::new(0);
    calls_reach_the_busy_holder_of(&p, 1, |ready, stop| {
        let _cpu = p.bind(1);
        let k = kmem::Kmem::boot(&p, p.memory_map(), &kmem::BootParams::default()).unwrap();
        // Prime the sheaves, so the loop below stays on the fast paths.
        let x = k.kmalloc(64, kmem::gfp::GFP_KERNEL).unwrap();
        // SAFETY: allocated just above, freed once.
        unsafe { k.kfree(x.as_ptr()) }.unwrap();
        ready();
        while !stop.load(SeqCst) {
            let x = k.kmalloc(64, kmem::gfp::GFP_KERNEL).unwrap();
            // SAFETY: as above.
            unsafe { k.kfree(x.as_ptr()) }.unwrap();
            pairs.fetch_add(1, SeqCst);
        }
    });
    assert!(pairs.load(SeqCst) > 0);
}

#[test]
fn a_thread_that_switched_cpus_takes_the_new_cpus_calls() {
    let p = machine(3);
    calls_reach_the_busy_holder_of(&p, 2, |ready, stop| {
        let mut b = p.bind(1);
        b.switch_to(2);
        ready();
        while !stop.load(SeqCst) {
            let _g = LocalGuard::new(&p);
        }
    });
}

#[test]
fn a_holder_asleep_in_wait_event_leaves_its_cpu_to_the_call() {
    let p = machine(2);
    let asleep = AtomicBool::new(false);
    let wake = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let sleeper = sc.spawn(|| {
            let _cpu = p.bind(1);
            let ok = p.wait_event(
                0x51ee9,
                &mut || {
                    asleep.store(true, SeqCst);
                    wake.load(SeqCst)
                },
                None,
            );
            assert!(ok);
            // Back on its CPU, which the call left free.
            let _g = LocalGuard::new(&p);
            assert_eq!(p.smp_processor_id(), 1);
        });
        wait_for(&asleep);
        std::thread::sleep(Duration::from_millis(20));
        let _cpu = p.bind(0);
        for _ in 0..20 {
            let s = call(&p, 1).unwrap();
            assert_eq!(s.cpu, 1);
            // Usually a helper (the sleeper gave the CPU up); the sleeper
            // itself if the call came before it let go.
            assert!(s.comm == "swapper/1" || s.comm == "cpu/1", "{s:?}");
        }
        assert!(!sleeper.is_finished(), "the sleeper was not woken");
        wake.store(true, SeqCst);
        p.wake_up(0x51ee9);
        sleeper.join().unwrap();
    });
}

#[test]
fn a_call_for_the_own_cpu_runs_at_once() {
    let p = machine(2);
    let _cpu = p.bind(1);
    let s = call(&p, 1).unwrap();
    assert_eq!((s.cpu, s.atomic), (1, true));
    assert_eq!(s.thread, std::thread::current().id());
    assert!(!p.in_atomic(), "the section was closed");
    // Also from atomic context: no other CPU to wait for.
    let _g = LocalGuard::new(&p);
    assert_eq!(call(&p, 1).unwrap().cpu, 1);
}

#[test]
fn atomic_context_may_not_wait_for_another_cpu() {
    let p = machine(2);
    let _cpu = p.bind(0);
    let mut ran = 0;
    {
        let _g = LocalGuard::new(&p);
        assert_eq!(
            p.smp_call_function_single(1, &mut || ran += 1),
            Err(Error::Busy)
        );
    }
    assert_eq!(
        p.irq(|| p.smp_call_function_single(1, &mut || ran += 1)),
        Err(Error::Busy)
    );
    assert_eq!(
        p.spin_locked(|| p.smp_call_function_single(1, &mut || ran += 1)),
        Err(Error::Busy)
    );
    assert_eq!(ran, 0);
    let r = p.reports();
    assert_eq!(
        r.iter()
            .filter(|(_, l)| l.starts_with(
                "WARNING: CPU: 0 PID: 1 at kernel/smp.c smp_call_function_single: \
                 called with interrupts disabled (target CPU 1)"
            ))
            .count(),
        3,
        "{r:?}"
    );
    assert!(p.reported("in_atomic(): 1, in_interrupt(): 1, pid: 1, name: cpu/0"));
    // Outside, it works.
    assert_eq!(call(&p, 1).unwrap().cpu, 1);
}

#[test]
fn cpus_calling_each_other_do_not_deadlock() {
    let p = machine(4);
    let rounds = 300;
    let ran: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
    p.run_on_cpus(|cpu| {
        // Each CPU calls the next one, which is itself waiting on its
        // neighbour: the waits form a ring and end only if waiters serve
        // their own mailbox.
        for i in 0..rounds {
            let target = (cpu + 1 + i % 3) % 4;
            p.smp_call_function_single(target, &mut || {
                assert_eq!(p.smp_processor_id(), target);
                ran[target].fetch_add(1, SeqCst);
            })
            .unwrap();
        }
    });
    let total: usize = ran.iter().map(|r| r.load(SeqCst)).sum();
    assert_eq!(total, 4 * rounds);
}

#[test]
fn two_cpus_calling_each_other_both_complete() {
    let p = machine(2);
    let done = AtomicUsize::new(0);
    p.run_on_cpus(|cpu| {
        for _ in 0..500 {
            let s = call(&p, 1 - cpu).unwrap();
            assert_eq!(s.cpu, 1 - cpu);
        }
        done.fetch_add(1, SeqCst);
    });
    assert_eq!(done.load(SeqCst), 2);
}

#[test]
fn on_each_cpu_reaches_every_cpu_whatever_its_state() {
    let p = machine(4);
    let bound = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        // CPU 3 busy, CPUs 1 and 2 idle, CPU 0 the caller.
        sc.spawn(|| {
            let _cpu = p.bind(3);
            bound.store(true, SeqCst);
            while !stop.load(SeqCst) {
                drop(LocalGuard::new(&p));
            }
        });
        wait_for(&bound);
        let _cpu = p.bind(0);
        let seen = Mutex::new(Vec::new());
        p.on_each_cpu(&mut |cpu| {
            assert_eq!(p.smp_processor_id(), cpu);
            seen.lock()
                .unwrap()
                .push((cpu, p.current().comm().to_string()));
        })
        .unwrap();
        stop.store(true, SeqCst);
        assert_eq!(
            seen.into_inner().unwrap(),
            [
                (0, "cpu/0".to_string()),
                (1, "swapper/1".to_string()),
                (2, "swapper/2".to_string()),
                (3, "cpu/3".to_string())
            ]
        );
    });
}

#[test]
fn on_cpu_serves_calls_for_the_waiting_cpu() {
    let p = machine(2);
    let _cpu = p.bind(0);
    let s = p.on_cpu(1, || call(&p, 0).unwrap());
    assert_eq!(s.cpu, 0);
    assert_eq!(
        s.thread,
        std::thread::current().id(),
        "run by CPU 0's holder"
    );
}

#[test]
fn a_panic_in_the_function_reaches_the_caller_only() {
    let p = machine(2);
    let bound = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let _cpu = p.bind(1);
            bound.store(true, SeqCst);
            while !stop.load(SeqCst) {
                drop(LocalGuard::new(&p));
            }
        });
        wait_for(&bound);
        let r = std::panic::catch_unwind(|| p.smp_call_function_single(1, &mut || panic!("boom")));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("panicked on CPU 1"), "{msg}");
        // The holder lives on and still answers.
        assert_eq!(call(&p, 1).unwrap().cpu, 1);
        stop.store(true, SeqCst);
    });
}
