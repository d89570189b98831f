//! failslab and fail_page_alloc hit from both CPUs of a simulated machine
//! at once: the counters are shared atomics, so `times`, `interval` and
//! `space` hold exactly across CPUs.

use kmem::gfp::{GFP_ATOMIC, GFP_KERNEL};
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const CALLS: usize = 20_000;

fn machine() -> SimPlatform {
    SimPlatform::new(SimConfig::new(2, pc_memory_map(256 << 20))).unwrap()
}

/// Run `CALLS` kmalloc(64, gfp) on each CPU in parallel; the number that failed.
fn kmalloc_failures(s: &SimPlatform, k: &Kmem<&SimPlatform>) -> usize {
    let failed = AtomicUsize::new(0);
    s.run_on_cpus(|_| {
        for _ in 0..CALLS {
            match k.kmalloc(64, GFP_ATOMIC) {
                // SAFETY: freed once, not used.
                Ok(p) => unsafe { k.kfree(p.as_ptr()) }.unwrap(),
                Err(_) => {
                    failed.fetch_add(1, Relaxed);
                }
            }
        }
    });
    failed.into_inner()
}

#[test]
fn times_is_exact_when_both_cpus_race_for_it() {
    let s = machine();
    let k = {
        let _cpu = s.bind(0);
        Kmem::boot(&s, s.memory_map(), &BootParams::default()).unwrap()
    };
    let fs = k.failslab();
    fs.set_verbose(0).unwrap();
    fs.set_times(1000).unwrap();
    fs.set_probability(100).unwrap();
    assert_eq!(kmalloc_failures(&s, &k), 1000);
    assert_eq!(fs.injected(), 1000);
    assert_eq!(fs.times(), 0);
}

#[test]
fn interval_and_space_count_every_cpus_calls() {
    let s = machine();
    let k = {
        let _cpu = s.bind(0);
        Kmem::boot(&s, s.memory_map(), &BootParams::default()).unwrap()
    };
    let fs = k.failslab();
    fs.set_verbose(0).unwrap();
    fs.set_times(-1).unwrap();
    fs.set_interval(4);
    fs.set_probability(100).unwrap();
    assert_eq!(
        kmalloc_failures(&s, &k),
        2 * CALLS / 4,
        "every 4th call overall"
    );

    // space: 100 objects of 64 bytes (and one byte) go through, then all fail.
    fs.set_interval(1);
    fs.set_space(64 * 100 + 1).unwrap();
    assert_eq!(kmalloc_failures(&s, &k), 2 * CALLS - 100);
    assert_eq!(fs.space(), 1);
}

#[test]
fn verbose_2_names_the_failing_cpu_and_kernel_allocations_stay_exempt() {
    let s = machine();
    let k = {
        let _cpu = s.bind(0);
        Kmem::boot(&s, s.memory_map(), &BootParams::default()).unwrap()
    };
    s.clear_reports();
    let fp = k.fail_page_alloc();
    fp.set_times(-1).unwrap();
    fp.set_probability(100).unwrap();
    s.on_cpu(1, || {
        let p = k.alloc_pages(GFP_KERNEL, 2).expect("GFP_KERNEL is exempt");
        k.__free_pages(p, 2).unwrap();
        assert!(k.alloc_pages(GFP_ATOMIC, 2).is_err());
    });
    assert!(s.reported("FAULT_INJECTION: forcing a failure."));
    assert!(s.reported("name fail_page_alloc, interval 1, probability 100, space 0, times -1"));
    assert!(s.reported("CPU: 1 PID:"));
    assert!(s.reported("fault_inject.rs:"));
    assert_eq!(fp.injected(), 1);
}
