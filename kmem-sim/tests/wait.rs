//! wait_event / wake_up across threads.

use kmem::platform::LocalGuard;
use kmem::Platform;
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn machine(cpus: usize) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(16 << 20))).unwrap()
}

#[test]
fn wake_up_wakes_a_waiter_on_another_cpu() {
    let p = machine(2);
    let flag = AtomicBool::new(false);
    let woke = AtomicBool::new(false);
    p.run_on_cpus(|cpu| {
        if cpu == 0 {
            let ok = p.wait_event(0x1000, &mut || flag.load(Ordering::SeqCst), None);
            assert!(ok);
            woke.store(true, Ordering::SeqCst);
        } else {
            std::thread::sleep(Duration::from_millis(30));
            assert!(
                !woke.load(Ordering::SeqCst),
                "waiter returned before the condition held"
            );
            flag.store(true, Ordering::SeqCst);
            p.wake_up(0x1000);
        }
    });
    assert!(woke.load(Ordering::SeqCst));
}

#[test]
fn a_true_condition_returns_at_once() {
    let p = machine(1);
    let calls = AtomicUsize::new(0);
    let t = Instant::now();
    assert!(p.wait_event(
        1,
        &mut || {
            calls.fetch_add(1, Ordering::SeqCst);
            true
        },
        None
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn timeout_returns_false() {
    let p = machine(1);
    let t = Instant::now();
    let ok = p.wait_event(7, &mut || false, Some(50_000_000));
    let waited = t.elapsed();
    assert!(!ok);
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn wake_ups_on_other_channels_only_recheck() {
    let p = machine(1);
    let checks = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                for ch in 0..256 {
                    p.wake_up(ch);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let ok = p.wait_event(
            12345,
            &mut || {
                checks.fetch_add(1, Ordering::SeqCst);
                false
            },
            Some(30_000_000),
        );
        stop.store(true, Ordering::SeqCst);
        assert!(!ok);
    });
    assert!(checks.load(Ordering::SeqCst) >= 2);
}

#[test]
fn no_lost_wake_ups() {
    // Many rounds of a ping-pong between two CPUs: a lost wake-up hangs a
    // round until its timeout (5 s, generous), which the test counts as failure.
    let p = machine(2);
    let turn = AtomicUsize::new(0);
    let rounds = 500;
    p.run_on_cpus(|cpu| {
        for i in 0..rounds {
            let mine = 2 * i + cpu;
            let ok = p.wait_event(
                42,
                &mut || turn.load(Ordering::SeqCst) == mine,
                Some(5_000_000_000),
            );
            assert!(ok, "CPU {cpu} missed its turn {mine}");
            turn.store(mine + 1, Ordering::SeqCst);
            p.wake_up(42);
        }
    });
    assert_eq!(turn.load(Ordering::SeqCst), 2 * rounds);
}

#[test]
fn a_sleeping_thread_lends_its_cpu() {
    // One CPU: the waiter holds CPU 0 while it waits, and the waker needs
    // CPU 0 to make the condition true.
    let p = machine(1);
    let flag = AtomicBool::new(false);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let _b = p.bind(0);
            let ok = p.wait_event(5, &mut || flag.load(Ordering::SeqCst), Some(10_000_000_000));
            // The CPU is ours again.
            let _g = LocalGuard::new(&p);
            assert_eq!(p.smp_processor_id(), 0);
            ok
        });
        std::thread::sleep(Duration::from_millis(20));
        p.on_cpu(0, || {
            flag.store(true, Ordering::SeqCst);
            p.wake_up(5);
        });
        assert!(waiter.join().unwrap());
    });
}

#[test]
fn sleeping_in_atomic_context_is_a_bug_report() {
    let p = machine(1);
    let _b = p.bind(0);
    let t = Instant::now();
    let ok = {
        let _g = LocalGuard::new(&p);
        p.wait_event(3, &mut || false, None)
    };
    assert!(!ok);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(p.reported("BUG: sleeping function called from invalid context"));
    assert!(p.reported("in_atomic(): 1, irqs_disabled(): 1, non_block: 0, pid: 1, name: cpu/0"));
}
