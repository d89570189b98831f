//! The per-CPU allocator on a simulated machine: the first chunk from
//! memblock with Linux's boot line, vmalloc chunks populated on demand,
//! atomic allocations and the balance step, static and dynamic per-CPU
//! variables with `this_cpu_*` on every CPU at once, `percpu_counter`,
//! Linux's `lib/percpu_test.c`, and every bad-input case the issue names.

use kmem::gfp::*;
use kmem::percpu::counter::PercpuCounter;
use kmem::percpu::{PcpuPtr, PerCpu};
use kmem::{BootParams, Error, Kmem, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

const MB: u64 = 1 << 20;

fn sim(cpus: usize) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(256 * MB))).expect("machine")
}

fn boot_with<'s>(s: &'s SimPlatform, params: &BootParams) -> Kmem<&'s SimPlatform> {
    let _cpu = s.bind(0);
    Kmem::boot(s, s.memory_map(), params).expect("boot")
}

fn boot(s: &SimPlatform) -> Kmem<&SimPlatform> {
    boot_with(s, &BootParams::default())
}

fn warned(s: &SimPlatform, needle: &str) -> bool {
    s.reports().iter().any(|(_, m)| m.contains(needle))
}

kmem::define_per_cpu! {
    /// A static per-CPU counter, as `DEFINE_PER_CPU(u64, ...)`.
    static HITS: AtomicU64;
}

#[test]
fn boot_embeds_the_first_chunk_as_linux_prints_it() {
    for (cpus, unit) in [(1, 2 << 20), (2, 1 << 20), (4, 512 << 10)] {
        let s = sim(cpus);
        let k = boot(&s);
        let line = format!("percpu: Embedded 13 pages/cpu s16384 r8192 d28672 u{unit}");
        assert!(warned(&s, &line), "{cpus} CPUs: {:?}", s.reports());
        let ai = k.pcpu_alloc_info();
        assert_eq!((ai.unit_size, ai.atom_size), (unit, 2 << 20));
        assert_eq!(k.pcpu_groups(), (1, false));
        // Percpu: the 13 pages in every CPU's unit.
        assert_eq!(k.pcpu_nr_pages(), 13 * cpus);
        let mut mi = String::new();
        kmem::proc::meminfo(&k, &mut mi).unwrap();
        assert!(
            mi.contains(&format!("Percpu:         {:>8} kB", 13 * 4 * cpus)),
            "{mi}"
        );
    }
}

#[test]
fn each_cpu_has_its_own_zeroed_copy() {
    let s = sim(2);
    let k = boot(&s);
    let _cpu = s.bind(0);
    // Boot's own per-CPU structures (the zones' page lists) are
    // allocations too.
    let g0 = k.pcpu_global_stats();
    let zones = k.populated_zones().count();
    assert_eq!(g0.nr_cur_alloc, zones as u64, "one per populated zone");
    let p = k.__alloc_percpu(64, 8).unwrap();
    let (a, b) = (k.per_cpu_ptr(p, 0).unwrap(), k.per_cpu_ptr(p, 1).unwrap());
    assert_ne!(a, b);
    assert_eq!(
        b.as_ptr() as usize - a.as_ptr() as usize,
        k.pcpu_alloc_info().unit_size
    );
    for c in [a, b] {
        // SAFETY: 64 bytes of a live per-CPU area in each unit.
        let bytes = unsafe { std::slice::from_raw_parts_mut(c.as_ptr(), 64) };
        assert!(bytes.iter().all(|x| *x == 0));
        bytes.fill(0xa5);
    }
    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
    unsafe { k.free_percpu(p) }.unwrap();
    // The area is zeroed again when handed out next.
    let q = k.__alloc_percpu(64, 8).unwrap();
    assert_eq!(q, p, "the same area comes back");
    assert!(
        // SAFETY: 64 bytes of a live per-CPU area in CPU 1's unit.
        unsafe { std::slice::from_raw_parts(k.per_cpu_ptr(q, 1).unwrap().as_ptr(), 64) }
            .iter()
            .all(|x| *x == 0)
    );
    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
    unsafe { k.free_percpu(q) }.unwrap();
    let g = k.pcpu_global_stats();
    assert_eq!(
        (g.nr_alloc, g.nr_dealloc, g.nr_cur_alloc),
        (g0.nr_alloc + 2, g0.nr_dealloc + 2, g0.nr_cur_alloc)
    );
}

#[test]
fn a_full_first_chunk_grows_into_vmalloc_chunks_populated_on_demand() {
    let s = sim(2);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let pages0 = k.pcpu_nr_pages();
    let live0 = k.pcpu_global_stats().nr_cur_alloc;
    // 28 KiB of dynamic first chunk: 8 KiB areas soon need a new chunk.
    let v: Vec<PcpuPtr<u8>> = (0..20)
        .map(|_| k.__alloc_percpu(8192, 8).unwrap())
        .collect();
    assert!(k.pcpu_global_stats().nr_chunks >= 2);
    let mut info = String::new();
    kmem::proc::vmallocinfo(&k, &mut info).unwrap();
    assert!(
        info.lines()
            .any(|l| l.contains("kmem/src/percpu/") && l.ends_with(" vmalloc")),
        "{info}"
    );
    assert!(k.pcpu_nr_pages() > pages0);
    // Every CPU's copy of an area in a vmalloc chunk is real memory.
    for &p in &v {
        for cpu in 0..2 {
            let c = k.per_cpu_ptr(p, cpu).unwrap();
            // SAFETY: 8 KiB of a live, populated area in this unit.
            unsafe {
                c.as_ptr().write_bytes(cpu as u8 + 1, 8192);
                assert_eq!(*c.as_ptr().add(8191), cpu as u8 + 1);
            }
        }
    }
    for p in v {
        // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
        unsafe { k.free_percpu(p) }.unwrap();
    }
    // The balance step keeps one free chunk, and the pages it needs.
    k.pcpu_balance_workfn();
    let g = k.pcpu_global_stats();
    assert!(g.nr_chunks <= 2, "{g:?}");
    assert_eq!(g.nr_cur_alloc, live0);
    let mut stats = String::new();
    kmem::proc::percpu_stats(&k, &mut stats).unwrap();
    assert!(
        stats.starts_with("Percpu Memory Statistics\nAllocation Info:\n"),
        "{stats}"
    );
    assert!(stats.contains("Chunk: <- First Chunk\n"), "{stats}");
    assert!(
        stats.contains(&format!("  nr_alloc            : {:>12}\n", live0 + 20)),
        "{stats}"
    );
}

#[test]
fn atomic_allocations_take_only_populated_pages_and_the_balance_step_refills() {
    let s = sim(2);
    let k = boot(&s);
    let _cpu = s.bind(0);
    // In atomic context (the balance step cannot run there), use up every
    // populated page.
    let mut held = Vec::new();
    s.spin_locked(|| {
        while let Ok(p) = k.__alloc_percpu_gfp(4096, 8, GFP_ATOMIC) {
            held.push(p);
            assert!(held.len() < 64, "populated space never ran out");
        }
    });
    assert!(
        warned(&s, "percpu: allocation failed, size=4096 align=8 atomic=1, atomic alloc failed, no space left"),
        "{:?}",
        s.reports()
    );
    // The failure asked for the balance step; it runs at the next call that
    // may sleep (here, on demand), and populates pages for atomic callers.
    let chunks = k.pcpu_global_stats().nr_chunks;
    k.pcpu_balance_workfn();
    assert!(k.pcpu_global_stats().empty_pop_pages >= 4);
    assert!(
        k.pcpu_global_stats().nr_chunks > chunks,
        "a new chunk to populate"
    );
    let a = s
        .spin_locked(|| k.__alloc_percpu_gfp(4096, 8, GFP_ATOMIC))
        .expect("populated by the balance step");
    held.push(a);
    for p in held {
        // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
        unsafe { k.free_percpu(p) }.unwrap();
    }
}

#[test]
fn reserved_allocations_come_from_the_reserved_chunk() {
    let s = sim(2);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let r = k.__alloc_reserved_percpu(4096, 8).unwrap();
    let r2 = k.__alloc_reserved_percpu(4096, 8).unwrap();
    assert_eq!(
        k.__alloc_reserved_percpu(8, 8),
        Err(Error::NoMemory),
        "8 KiB reserved"
    );
    assert!(warned(&s, "alloc from reserved chunk failed"));
    let mut stats = String::new();
    kmem::proc::percpu_stats(&k, &mut stats).unwrap();
    let reserved = stats.split("Chunk: <- Reserved Chunk\n").nth(1).unwrap();
    assert!(
        reserved.starts_with("  nr_alloc            :            2\n"),
        "{stats}"
    );
    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
    unsafe { k.free_percpu(r) }.unwrap();
    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
    unsafe { k.free_percpu(r2) }.unwrap();
}

#[test]
fn bad_input_is_refused_in_linux_words_and_nothing_changes() {
    let s = sim(2);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let illegal = |size, align| {
        s.clear_reports();
        assert_eq!(
            k.__alloc_percpu(size, align),
            Err(Error::InvalidArgument),
            "{size} {align}"
        );
        assert!(warned(&s, "percpu: illegal size ("), "{:?}", s.reports());
    };
    illegal(0, 8);
    illegal(32 * 1024 + 1, 8);
    // Below 4 an alignment is raised to 4, as Linux does; 12 is refused.
    illegal(8, 12);
    illegal(8, 2 * PAGE_SIZE);
    assert!(warned(
        &s,
        &format!(
            "illegal size (8) or align ({}) for percpu allocation",
            2 * PAGE_SIZE
        )
    ));
    // __GFP_NOWARN keeps it quiet.
    s.clear_reports();
    assert_eq!(
        k.__alloc_percpu_gfp(0, 8, GFP_KERNEL | __GFP_NOWARN),
        Err(Error::InvalidArgument)
    );
    assert!(s.reports().is_empty());
    // free_percpu of something else, and twice.
    let p = k.__alloc_percpu(16, 8).unwrap();
    let before = k.pcpu_global_stats();
    // SAFETY: a bad pointer on purpose: refused before any memory is
    // touched (the contract is broken to test the check).
    assert_eq!(unsafe { k.free_percpu(PcpuPtr::<u8>::NULL) }, Ok(()));
    let km = k.kmalloc(16, GFP_KERNEL).unwrap();
    // A kmalloc address is no per-CPU pointer.
    let not_percpu = PcpuPtr::<u8>::NULL.byte_add(km.as_ptr() as usize);
    assert_eq!(
        // SAFETY: a bad pointer on purpose: refused before any memory is
        // touched (the contract is broken to test the check).
        unsafe { k.free_percpu(not_percpu) },
        Err(Error::InvalidArgument)
    );
    // An address inside an area, not its start.
    assert_eq!(
        // SAFETY: as above.
        unsafe { k.free_percpu(p.byte_add(4)) },
        Err(Error::InvalidArgument)
    );
    assert!(warned(&s, "is not a live per-CPU allocation"));
    assert_eq!(k.pcpu_global_stats(), before, "nothing changed");
    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
    unsafe { k.free_percpu(p) }.unwrap();
    s.clear_reports();
    // SAFETY: a bad pointer on purpose: refused before any memory is
    // touched (the contract is broken to test the check).
    assert_eq!(unsafe { k.free_percpu(p) }, Err(Error::InvalidArgument));
    assert!(warned(&s, "is not a live per-CPU allocation"));
    // SAFETY: a live kmalloc object.
    unsafe { k.kfree(km.as_ptr()) }.unwrap();
    // per_cpu_ptr with a CPU that is not possible.
    let q = k.__alloc_percpu(16, 8).unwrap();
    assert_eq!(k.per_cpu_ptr(q, 2), Err(Error::InvalidArgument));
    assert!(warned(
        &s,
        "per_cpu_ptr: CPU 2 is not possible (nr_cpu_ids 2)"
    ));
    let typed: PerCpu<'_, AtomicU64, _> = PerCpu::new(&k).unwrap();
    assert_eq!(typed.per_cpu(7).map(|_| ()), Err(Error::InvalidArgument));
    assert_eq!(k.per_cpu(&HITS, 2).map(|_| ()), Err(Error::InvalidArgument));
    drop(typed);
    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
    unsafe { k.free_percpu(q) }.unwrap();
    // A blocking allocation in atomic context.
    s.clear_reports();
    assert_eq!(
        s.spin_locked(|| k.__alloc_percpu(16, 8)),
        Err(Error::InvalidArgument)
    );
    assert!(warned(
        &s,
        "BUG: sleeping function called from invalid context"
    ));
}

#[test]
fn raw_this_cpu_ops_from_preemptible_context_are_reported_under_debug_preempt() {
    let s = sim(1);
    let params = BootParams {
        debug_preempt: true,
        ..BootParams::default()
    };
    let k = boot_with(&s, &params);
    let _cpu = s.bind(0);
    assert_eq!(k.__this_cpu_add(&HITS, 1), Err(Error::BadState));
    assert!(
        warned(
            &s,
            "BUG: using __this_cpu_add() in preemptible [00000000] code: "
        ),
        "{:?}",
        s.reports()
    );
    assert!(warned(&s, "caller is kmem-sim/tests/percpu.rs:"));
    assert_eq!(k.this_cpu_read(&HITS), 0, "nothing changed");
    let _ = k.smp_processor_id();
    assert!(warned(&s, "BUG: using smp_processor_id() in preemptible"));
    // Pinned, the same calls are fine.
    s.clear_reports();
    let g = k.get_cpu();
    assert_eq!(k.__this_cpu_add(&HITS, 5), Ok(()));
    assert_eq!(k.__this_cpu_read(&HITS), Ok(5));
    assert_eq!(k.smp_processor_id(), g.cpu());
    k.put_cpu(g);
    assert!(s.reports().is_empty(), "{:?}", s.reports());
    k.this_cpu_sub(&HITS, 5);
}

#[test]
fn every_cpu_adds_to_its_own_copy_and_the_sums_add_up() {
    let s = sim(4);
    let k = boot(&s);
    let dynamic: PerCpu<'_, AtomicU64, _> = {
        let _cpu = s.bind(0);
        PerCpu::new(&k).unwrap()
    };
    let counter = {
        let _cpu = s.bind(0);
        PercpuCounter::new(&k, 0, GFP_KERNEL).unwrap()
    };
    let exact = AtomicI64::new(0);
    let before: u64 = (0..4)
        .map(|c| k.per_cpu(&HITS, c).unwrap().load(Relaxed))
        .sum();
    s.run_on_cpus(|cpu| {
        for i in 0..10_000u64 {
            k.this_cpu_inc(&HITS);
            k.this_cpu_add(&dynamic, 2);
            let d = if i % 3 == 0 { -1 } else { 2 };
            counter.add(d);
            exact.fetch_add(d, Relaxed);
        }
        assert_eq!(
            k.this_cpu_read(&dynamic),
            20_000,
            "CPU {cpu} saw only its own adds"
        );
    });
    let after: u64 = (0..4)
        .map(|c| k.per_cpu(&HITS, c).unwrap().load(Relaxed))
        .sum();
    assert_eq!(after - before, 40_000);
    assert_eq!(
        dynamic.iter().map(|(_, v)| v.load(Relaxed)).sum::<u64>(),
        80_000
    );
    let _cpu = s.bind(0);
    assert_eq!(counter.sum(), exact.load(Relaxed));
    let slack = i64::from(kmem::percpu::counter::percpu_counter_batch(4)) * 4;
    assert!((counter.read() - exact.load(Relaxed)).abs() < slack);
    assert_eq!(
        counter.compare(exact.load(Relaxed)),
        std::cmp::Ordering::Equal
    );
    assert_eq!(
        counter.compare(exact.load(Relaxed) + 1),
        std::cmp::Ordering::Less
    );
    assert_eq!(counter.compare(-1_000_000), std::cmp::Ordering::Greater);
    counter.set(-7);
    assert_eq!(
        (
            counter.sum(),
            counter.read_positive(),
            counter.sum_positive()
        ),
        (-7, 0, 0)
    );
}

#[test]
fn percpu_test_c() {
    // lib/percpu_test.c: this_cpu and __this_cpu operations on long and
    // unsigned long, checked against the values they must give.
    kmem::define_per_cpu! {
        static LONG_COUNTER: std::sync::atomic::AtomicI64;
        static ULONG_COUNTER: AtomicU64;
    }
    let s = sim(2);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let g = k.get_cpu();
    let check = |what: &str, got: i64, want: i64| assert_eq!(got, want, "{what}");
    let l = || k.__this_cpu_read(&LONG_COUNTER).unwrap();
    let ul = || k.__this_cpu_read(&ULONG_COUNTER).unwrap();
    k.__this_cpu_write(&LONG_COUNTER, 0).unwrap();
    k.__this_cpu_write(&ULONG_COUNTER, 0).unwrap();
    k.this_cpu_add(&LONG_COUNTER, -1);
    check("long -1", l(), -1);
    k.this_cpu_add(&ULONG_COUNTER, u64::MAX);
    assert_eq!(ul(), u64::MAX);
    k.this_cpu_inc(&ULONG_COUNTER);
    assert_eq!(ul(), 0);
    k.__this_cpu_dec(&ULONG_COUNTER).unwrap();
    assert_eq!(ul(), u64::MAX);
    k.__this_cpu_write(&ULONG_COUNTER, 0).unwrap();
    k.__this_cpu_sub(&ULONG_COUNTER, 1).unwrap();
    assert_eq!(ul(), u64::MAX);
    k.__this_cpu_add(&ULONG_COUNTER, 2).unwrap();
    assert_eq!(ul(), 1);
    k.this_cpu_sub(&LONG_COUNTER, -1);
    check("long 0", l(), 0);
    assert_eq!(k.this_cpu_add_return(&LONG_COUNTER, 10), 10);
    assert_eq!(k.__this_cpu_add_return(&LONG_COUNTER, -3), Ok(7));
    assert_eq!(k.this_cpu_xchg(&LONG_COUNTER, 100), 7);
    assert_eq!(k.this_cpu_cmpxchg(&LONG_COUNTER, 99, 1), 100, "no swap");
    assert_eq!(k.this_cpu_cmpxchg(&LONG_COUNTER, 100, 1), 100);
    check("after cmpxchg", l(), 1);
    assert_eq!(k.__this_cpu_xchg(&LONG_COUNTER, 0), Ok(1));
    assert_eq!(k.__this_cpu_cmpxchg(&LONG_COUNTER, 0, 5), Ok(0));
    k.this_cpu_dec(&LONG_COUNTER);
    k.__this_cpu_inc(&LONG_COUNTER).unwrap();
    check("long 5", l(), 5);
    // The other CPU's copies were never touched.
    let other = 1 - g.cpu();
    assert_eq!(k.per_cpu(&LONG_COUNTER, other).unwrap().load(Relaxed), 0);
    assert_eq!(k.per_cpu(&ULONG_COUNTER, other).unwrap().load(Relaxed), 0);
    assert!(std::ptr::eq(
        k.this_cpu_ptr(&g, &LONG_COUNTER),
        k.per_cpu(&LONG_COUNTER, g.cpu()).unwrap()
    ));
    assert_eq!(
        k.raw_cpu_ptr(&LONG_COUNTER).as_ptr() as *const _,
        k.per_cpu(&LONG_COUNTER, g.cpu()).unwrap() as *const _
    );
    k.put_cpu(g);
}

#[test]
fn a_typed_per_cpu_value_is_built_iterated_and_dropped() {
    struct Stats {
        hits: AtomicUsize,
        name: String,
    }
    let s = sim(2);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let used = k.pcpu_global_stats().nr_cur_alloc;
    let mut v: PerCpu<'_, Stats, _> = PerCpu::new_with(&k, |cpu| Stats {
        hits: AtomicUsize::new(cpu),
        name: format!("cpu{cpu}"),
    })
    .unwrap();
    {
        let mine = v.get_cpu();
        mine.hits.fetch_add(10, Relaxed);
        assert_eq!(mine.name, format!("cpu{}", mine.cpu()));
    }
    for (cpu, st) in v.iter_mut() {
        st.name.push('!');
        assert!(st.name.starts_with(&format!("cpu{cpu}")));
    }
    let total: usize = v.iter().map(|(_, st)| st.hits.load(Relaxed)).sum();
    assert_eq!(total, 1 + 10, "CPU 1's 1, the pinned CPU's 10");
    assert_eq!(v.per_cpu(1).unwrap().name, "cpu1!");
    drop(v);
    assert_eq!(k.pcpu_global_stats().nr_cur_alloc, used, "freed on drop");
}

/// The `%gs` path of `this_cpu_add` ([`kmem::Platform::this_cpu_add`])
/// follows the thread: to another CPU, to a machine rebooted on the same
/// platform, to another platform; every width, and `dec`/`sub` as adds of
/// the negation.
#[test]
fn this_cpu_add_follows_the_cpu_the_machine_and_the_width() {
    use std::sync::atomic::{AtomicI8, AtomicU16, AtomicU32};
    let s = sim(2);
    let k = boot(&s);
    let mut cpu = s.bind(0);
    let (b, h, w, q) = (
        PerCpu::<AtomicI8, _>::new(&k).unwrap(),
        PerCpu::<AtomicU16, _>::new(&k).unwrap(),
        PerCpu::<AtomicU32, _>::new(&k).unwrap(),
        PerCpu::<AtomicU64, _>::new(&k).unwrap(),
    );
    k.this_cpu_add(&b, 100);
    k.this_cpu_add(&b, 100); // wraps, as an i8 add does
    k.this_cpu_dec(&h); // 0 - 1
    k.this_cpu_add(&w, 7);
    k.this_cpu_sub(&w, 2);
    k.this_cpu_inc(&q);
    // On x86-64 the platform itself did it, with `%gs`.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `q` is a live per-CPU u64 of this machine.
    assert!(unsafe { kmem::Platform::this_cpu_add(&s, q.ptr().addr(), 1, 8) });
    cpu.switch_to(1);
    k.this_cpu_add(&q, 10);
    k.this_cpu_inc(&HITS);
    assert_eq!(b.per_cpu(0).unwrap().load(Relaxed), -56);
    assert_eq!(h.per_cpu(0).unwrap().load(Relaxed), u16::MAX);
    assert_eq!(w.per_cpu(0).unwrap().load(Relaxed), 5);
    let q_on = |c| q.per_cpu(c).unwrap().load(Relaxed);
    assert_eq!(
        (q_on(0), q_on(1)),
        (1 + cfg!(target_arch = "x86_64") as u64, 10),
        "the add after switch_to went to CPU 1"
    );
    // Nothing else in either unit moved.
    assert_eq!(b.per_cpu(1).unwrap().load(Relaxed), 0);
    assert_eq!(w.per_cpu(1).unwrap().load(Relaxed), 0);
    drop((b, h, w, q));
    drop(cpu);
    // A machine booted again on the same platform: its adds reach the new
    // machine's copies (percpu_base.rs's unit test changes an offset under
    // a thread that stays bound).
    drop(k);
    let cpu = s.bind(1);
    let k = Kmem::boot(&s, s.memory_map(), &BootParams::default()).expect("boot");
    let q = PerCpu::<AtomicU64, _>::new(&k).unwrap();
    k.this_cpu_add(&q, 3);
    assert_eq!(
        (
            q.per_cpu(0).unwrap().load(Relaxed),
            q.per_cpu(1).unwrap().load(Relaxed)
        ),
        (0, 3)
    );
    drop(q);
    drop(cpu);
    // Another platform on the same thread.
    let s2 = sim(2);
    let k2 = boot(&s2);
    let _cpu = s2.bind(1);
    let q2 = PerCpu::<AtomicU64, _>::new(&k2).unwrap();
    k2.this_cpu_inc(&q2);
    assert_eq!(q2.per_cpu(1).unwrap().load(Relaxed), 1);
}

/// A fold holds the counter's lock only while its CPU is pinned: a
/// cross-CPU call that adds to the same counter, run when the fold unpins,
/// finds the lock free (it would spin forever on its own thread's lock
/// otherwise). Every add here folds (`amount == batch`).
#[test]
fn a_cross_cpu_call_may_fold_into_the_counter_a_fold_just_left() {
    use kmem::Platform;
    use std::sync::atomic::AtomicBool;
    let s = sim(2);
    let k = boot(&s);
    let counter = {
        let _cpu = s.bind(0);
        PercpuCounter::new(&k, 0, GFP_KERNEL).unwrap()
    };
    let (done, calls_done) = (AtomicBool::new(false), AtomicBool::new(false));
    let folds = AtomicUsize::new(0);
    std::thread::scope(|t| {
        t.spawn(|| {
            // A watchdog: a deadlock would hang the test run (a panic here
            // would wait for the deadlocked threads).
            let start = std::time::Instant::now();
            while !done.load(Relaxed) {
                if start.elapsed().as_secs() >= 120 {
                    eprintln!("deadlock: a fold still holds the counter's lock");
                    std::process::abort();
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        let _cpu0 = s.bind(0);
        let caller = t.spawn(|| {
            let _cpu = s.bind(1);
            for _ in 0..2_000 {
                s.smp_call_function_single(0, &mut || counter.add_batch(8, 8))
                    .unwrap();
            }
            calls_done.store(true, Relaxed);
        });
        // CPU 0 folds until every call has run on it, between folds or
        // as a fold unpins.
        while !calls_done.load(Relaxed) {
            counter.add_batch(8, 8);
            folds.fetch_add(1, Relaxed);
        }
        caller.join().unwrap();
        done.store(true, Relaxed);
    });
    let _cpu = s.bind(0);
    assert_eq!(counter.sum(), 8 * (2_000 + folds.load(Relaxed) as i64));
}

#[test]
#[should_panic(expected = "a PerCpu used with a machine other than its own")]
fn a_per_cpu_value_of_one_machine_is_refused_by_another() {
    let (s1, s2) = (sim(2), sim(1));
    let (k1, k2) = (boot(&s1), boot(&s2));
    let v = {
        let _cpu = s1.bind(0);
        PerCpu::<AtomicU64, _>::new(&k1).unwrap()
    };
    let _cpu = s2.bind(0);
    // k2's offsets would place CPU 0's copy where k1 keeps nothing of v.
    k2.this_cpu_inc(&v);
}

/// The zones' per-CPU page lists are per-CPU memory, as Linux's
/// `zone->per_cpu_pageset` (`setup_zone_pageset()`): each CPU's lists of
/// every zone, its own node's and the other's, sit in that CPU's unit, on
/// the CPU's node, a unit apart; and they work (a page freed on a CPU is
/// the next one that CPU allocates).
#[test]
fn each_cpus_page_lists_are_in_its_own_unit_on_its_node() {
    let s = SimPlatform::new(SimConfig::new(2, kmem_sim::pc_memory_map_numa(1 << 30, 2)))
        .expect("machine");
    let k = boot(&s);
    assert_eq!(k.nr_nodes(), 2);
    // Where CPU 1's unit lies from CPU 0's: any per-CPU area shows it.
    let probe = {
        let _cpu = s.bind(0);
        k.__alloc_percpu(8, 8).unwrap()
    };
    let unit_1 = (k.per_cpu_ptr(probe, 1).unwrap().as_ptr() as usize)
        .wrapping_sub(k.per_cpu_ptr(probe, 0).unwrap().as_ptr() as usize);
    let mut zones = 0;
    for node in k.nodes() {
        for z in node.zones().filter(|z| z.is_populated()) {
            zones += 1;
            let at = |cpu: usize| z.pcp(cpu).expect("per-CPU lists") as *const _ as usize;
            for cpu in 0..2 {
                let page = k
                    .virt_to_page(at(cpu) as *const u8)
                    .expect("in the direct map");
                assert_eq!(
                    k.page_zone(page).node(),
                    k.cpu_to_node(cpu),
                    "node {} zone {}: CPU {cpu}'s lists",
                    z.node(),
                    z.zone_type().name()
                );
            }
            assert_eq!(at(1).wrapping_sub(at(0)), unit_1, "a unit apart");
        }
    }
    assert!(zones >= 2);
    let _cpu = s.bind(1);
    let p = k.alloc_page(GFP_KERNEL).unwrap();
    let pfn = k.page_to_pfn(p);
    k.__free_pages(p, 0).unwrap();
    let q = k.alloc_page(GFP_KERNEL).unwrap();
    assert_eq!(
        k.page_to_pfn(q),
        pfn,
        "the page came back from CPU 1's list"
    );
    assert!(k
        .node(1)
        .zones()
        .any(|z| z.pcp(1).is_some_and(|l| l.pgalloc() > 0)));
    k.__free_pages(q, 0).unwrap();
    // SAFETY: the probe is this test's own, freed once and not used after.
    unsafe { k.free_percpu(probe) }.unwrap();
}
