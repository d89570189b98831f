//! CPUs as threads: binding, CPU-local sections, interrupts, spinlocks.

use kmem::platform::{LocalGuard, Task};
use kmem::Platform;
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn machine(cpus: usize) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(16 << 20))).unwrap()
}

#[test]
fn run_on_cpus_runs_every_cpu_in_parallel() {
    let p = machine(4);
    let seen = Mutex::new(Vec::new());
    let arrived = AtomicUsize::new(0);
    p.run_on_cpus(|cpu| {
        assert_eq!(p.smp_processor_id(), cpu);
        assert_eq!(p.current().comm(), format!("cpu/{cpu}"));
        assert_eq!(
            std::thread::current().name(),
            Some(format!("cpu/{cpu}").as_str())
        );
        seen.lock().unwrap().push(cpu);
        // Every CPU waits for all the others: this only ends if they run at once.
        arrived.fetch_add(1, Ordering::SeqCst);
        let t = Instant::now();
        while arrived.load(Ordering::SeqCst) < 4 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "CPUs do not run in parallel"
            );
            std::hint::spin_loop();
        }
    });
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3]);
}

#[test]
fn threads_binding_the_same_cpu_take_turns() {
    let p = machine(2);
    let inside = [AtomicBool::new(false), AtomicBool::new(false)];
    let overlaps = AtomicUsize::new(0);
    let sections = AtomicUsize::new(0);
    // Three threads per CPU, all binding that CPU over and over.
    std::thread::scope(|s| {
        for i in 0..6 {
            let cpu = i % 2;
            let (p, inside, overlaps, sections) = (&p, &inside, &overlaps, &sections);
            s.spawn(move || {
                for _ in 0..50 {
                    let _b = p.bind(cpu);
                    let g = LocalGuard::new(p);
                    assert_eq!(g.cpu(), cpu);
                    if inside[cpu].swap(true, Ordering::SeqCst) {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::yield_now();
                    inside[cpu].store(false, Ordering::SeqCst);
                    sections.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(sections.load(Ordering::SeqCst), 2 * 3 * 50);
}

#[test]
fn bind_waits_for_the_cpu_to_be_free() {
    let p = machine(1);
    let b = p.bind(0);
    let bound = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _b = p.bind(0);
            bound.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!bound.load(Ordering::SeqCst), "two threads bound to CPU 0");
        drop(b);
    });
    assert!(bound.load(Ordering::SeqCst));
}

#[test]
fn on_cpu_runs_on_that_cpu_and_returns() {
    let p = machine(3);
    assert_eq!(p.on_cpu(2, || p.smp_processor_id() * 10), 20);
    // From a bound thread, another CPU is fine.
    let _b = p.bind(0);
    assert_eq!(p.on_cpu(1, || p.smp_processor_id()), 1);
}

#[test]
#[should_panic(expected = "boom")]
fn on_cpu_propagates_panics() {
    let p = machine(1);
    p.on_cpu(0, || panic!("boom"));
}

#[test]
fn in_atomic_follows_sections_interrupts_and_spinlocks() {
    let p = machine(2);
    assert!(!p.in_atomic(), "unbound threads may sleep");
    let _b = p.bind(1);
    assert!(!p.in_atomic());
    assert!(!p.in_interrupt());
    {
        let _outer = LocalGuard::new(&p);
        assert!(p.in_atomic());
        {
            let _inner = LocalGuard::new(&p);
            assert!(p.in_atomic());
        }
        assert!(p.in_atomic(), "sections nest");
        assert!(!p.in_interrupt());
    }
    assert!(!p.in_atomic());
    p.irq(|| {
        assert!(p.in_interrupt());
        assert!(p.in_atomic());
        assert_eq!(p.smp_processor_id(), 1);
        p.irq(|| assert!(p.in_interrupt()));
        assert!(p.in_interrupt());
        // An interrupt handler may use CPU-local sections itself.
        let _g = LocalGuard::new(&p);
        assert!(p.in_atomic());
    });
    assert!(!p.in_interrupt());
    assert!(!p.in_atomic());
    p.spin_locked(|| {
        assert!(p.in_atomic());
        assert!(!p.in_interrupt());
        p.irq(|| assert!(p.in_interrupt()));
    });
    assert!(!p.in_atomic());
    // Another platform's state is separate.
    let q = machine(1);
    p.spin_locked(|| assert!(!q.in_atomic()));
}

#[test]
fn counters_are_restored_when_a_handler_panics() {
    let p = machine(1);
    let _b = p.bind(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.irq(|| p.spin_locked(|| panic!("handler failed")))
    }));
    assert!(r.is_err());
    assert!(!p.in_atomic());
    assert!(!p.in_interrupt());
}

#[test]
#[should_panic(expected = "interrupts are disabled inside a CPU-local section")]
fn no_interrupt_inside_a_section() {
    let p = machine(1);
    let _b = p.bind(0);
    let _g = LocalGuard::new(&p);
    p.irq(|| ());
}

#[test]
#[should_panic(expected = "not running on a simulated CPU: bind the thread with SimPlatform::bind")]
fn smp_processor_id_needs_a_binding() {
    let p = machine(1);
    p.smp_processor_id();
}

#[test]
#[should_panic(expected = "not running on a simulated CPU")]
fn local_enter_needs_a_binding() {
    let p = machine(1);
    let _g = LocalGuard::new(&p);
}

#[test]
#[should_panic(expected = "not running on a simulated CPU")]
fn a_binding_is_per_platform() {
    let p = machine(1);
    let q = machine(1);
    let _b = p.bind(0);
    q.smp_processor_id();
}

#[test]
#[should_panic(expected = "already bound to CPU 0 of this SimPlatform")]
fn binding_twice_panics() {
    let p = machine(2);
    let _a = p.bind(0);
    let _b = p.bind(1);
}

#[test]
#[should_panic(expected = "already bound to another SimPlatform")]
fn binding_two_platforms_panics() {
    let p = machine(1);
    let q = machine(1);
    let _a = p.bind(0);
    let _b = q.bind(0);
}

#[test]
#[should_panic(expected = "no CPU 2")]
fn binding_a_missing_cpu_panics() {
    let p = machine(2);
    let _a = p.bind(2);
}

#[test]
fn dropping_a_binding_inside_a_section_poisons_the_cpu() {
    let p = machine(1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let b = p.bind(0);
        std::mem::forget(LocalGuard::new(&p));
        drop(b);
    }));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("dropped inside a CPU-local section"), "{msg}");
    // The thread is unbound again and the CPU is never handed out.
    assert!(!p.in_atomic());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(p.bind(0))));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("simulated CPU 0 is unusable"), "{msg}");
}

#[test]
fn rebinding_after_unbinding_works() {
    let p = machine(2);
    for cpu in [0, 1, 0] {
        let b = p.bind(cpu);
        assert_eq!(b.cpu(), cpu);
        assert_eq!(p.smp_processor_id(), cpu);
    }
}

#[test]
fn current_task() {
    let p = machine(2);
    assert_eq!(p.current().comm(), "swapper");
    {
        let _b = p.bind_as(1, Task::new(4242, "kswapd0"));
        assert_eq!(p.current(), Task::new(4242, "kswapd0"));
    }
    let _b = p.bind(0);
    assert_eq!(p.current().comm(), "cpu/0");
    assert_eq!(p.current().pid, 1);
}

#[test]
fn random_numbers_are_per_cpu_and_reproducible() {
    let draw = |seed: u64| {
        let mut cfg = SimConfig::new(2, pc_memory_map(16 << 20));
        cfg.seed = seed;
        let p = SimPlatform::new(cfg).unwrap();
        let a: Vec<u64> = p.on_cpu(0, || (0..4).map(|_| p.random_u64()).collect());
        // Rebinding continues the CPU's sequence rather than restarting it.
        let a2: Vec<u64> = p.on_cpu(0, || (0..4).map(|_| p.random_u64()).collect());
        let b: Vec<u64> = p.on_cpu(1, || (0..4).map(|_| p.random_u64()).collect());
        let unbound: Vec<u64> = (0..4).map(|_| p.random_u64()).collect();
        (a, a2, b, unbound)
    };
    let (a, a2, b, u) = draw(7);
    assert_eq!(draw(7), (a.clone(), a2.clone(), b.clone(), u.clone()));
    assert_ne!(a, a2);
    assert_ne!(a, b);
    assert_ne!(a, u);
    assert_ne!(draw(8).0, a);
    let mut all: Vec<u64> = a.iter().chain(&a2).chain(&b).chain(&u).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 16);
}

#[test]
fn switch_to_moves_the_thread_and_frees_the_old_cpu() {
    let p = machine(3);
    let mut b = p.bind_as(0, Task::new(42, "replay"));
    let rng0 = p.random_u64();
    b.switch_to(2);
    assert_eq!(b.cpu(), 2);
    assert_eq!(p.smp_processor_id(), 2);
    {
        let g = LocalGuard::new(&p);
        assert_eq!(g.cpu(), 2);
    }
    // The task and the binding stay; the random source is CPU 2's own.
    assert_eq!(p.current().comm(), "replay");
    assert_eq!(p.current().pid, 42);
    let rng2 = p.random_u64();
    assert_ne!(rng0, rng2);
    // CPU 0 is free: another thread binds it at once. CPU 2 is ours.
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(p.bind(0).cpu(), 0)).join().unwrap();
    });
    // Switching to the CPU held already is a no-op.
    b.switch_to(2);
    assert_eq!(p.smp_processor_id(), 2);
    b.set_task(Task::new(7, "tar"));
    assert_eq!(p.current().comm(), "tar");
    drop(b);
    // Every CPU is free again after the binding drops.
    for cpu in 0..3 {
        let _b = p.bind(cpu);
    }
}

#[test]
fn switch_to_waits_for_a_held_cpu() {
    let p = machine(2);
    let held = AtomicBool::new(false);
    let release = AtomicBool::new(false);
    let switched = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _b = p.bind(1);
            held.store(true, Ordering::SeqCst);
            while !release.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            // The other thread cannot have CPU 1 while this one holds it.
            assert!(!switched.load(Ordering::SeqCst));
        });
        while !held.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        s.spawn(|| {
            let mut b = p.bind(0);
            release.store(true, Ordering::SeqCst);
            b.switch_to(1);
            switched.store(true, Ordering::SeqCst);
            assert_eq!(p.smp_processor_id(), 1);
        });
    });
    assert!(switched.load(Ordering::SeqCst));
}

#[test]
fn a_call_posted_to_the_old_cpu_runs_after_a_switch() {
    let p = machine(2);
    let mut b = p.bind(0);
    b.switch_to(1);
    // CPU 0 has no holder now: the call runs on a helper thread bound to it.
    let mut ran_on = None;
    p.smp_call_function_single(0, &mut || ran_on = Some(p.smp_processor_id()))
        .unwrap();
    assert_eq!(ran_on, Some(0));
    assert_eq!(p.smp_processor_id(), 1);
}

#[test]
#[should_panic(expected = "inside a CPU-local section")]
fn switch_to_inside_a_section_panics() {
    let p = machine(2);
    let mut b = p.bind(0);
    let _g = LocalGuard::new(&p);
    b.switch_to(1);
}

#[test]
#[should_panic(expected = "no CPU 5")]
fn switch_to_a_missing_cpu_panics() {
    let p = machine(2);
    let mut b = p.bind(0);
    b.switch_to(5);
}
