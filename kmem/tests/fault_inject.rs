//! failslab and fail_page_alloc on the arena platform: each knob does what
//! `Documentation/fault-injection/fault-injection.rst` says, the hooks sit
//! where Linux has them, bad input is refused with a report, and injected
//! failures leak nothing.
//!
//! Under Miri only the leak test (allocation and free paths around
//! injected failures, bulk unwinding included) and the failing boots run:
//! fault injection itself has no unsafe code, and each booted arena costs
//! minutes under Stacked Borrows. Everything runs natively.

use kmem::arena::ArenaPlatform;
use kmem::fault_inject::{Fault, FaultBootArg, KnobValue, FAILSLAB_KNOBS, FAIL_PAGE_ALLOC_KNOBS};
use kmem::gfp::*;
use kmem::memory_map::MemRegion;
use kmem::platform::Level;
use kmem::slab::*;
use kmem::{BootParams, Error, Kmem, Result};

const MEM: usize = if cfg!(miri) { 12 << 20 } else { 16 << 20 };

type K<'a> = Kmem<ArenaPlatform<'a>>;

fn boot_params(buf: &mut [u8], params: BootParams) -> Result<K<'_>> {
    let p = ArenaPlatform::new(buf, 1);
    let (s, e) = p.usable_range();
    let params = BootParams {
        reserve_low: 0,
        ..params
    };
    Kmem::boot(p, &[MemRegion::usable(s, e - s)], &params)
}

fn boot(buf: &mut [u8]) -> K<'_> {
    let k = boot_params(buf, BootParams::default()).expect("boot");
    k.platform().clear_reports();
    k
}

/// Free pages after draining the per-CPU page lists.
fn free_pages(k: &K<'_>) -> u64 {
    k.drain_local_pages();
    k.check_free_counts().unwrap()
}

/// Fail every call, for ever, silently.
fn always(f: &Fault<'_, ArenaPlatform<'_>>) {
    f.set_probability(100).unwrap();
    f.set_times(-1).unwrap();
    f.set_verbose(0).unwrap();
}

/// Which of `n` calls of `f` failed (1-based), each success undone by `f`.
fn failures(n: usize, mut f: impl FnMut() -> bool) -> Vec<usize> {
    (1..=n).filter(|_| !f()).collect()
}

/// One order-`order` page allocation, freed at once; whether it succeeded.
fn page_ok(k: &K<'_>, gfp: Gfp, order: u32) -> bool {
    match k.alloc_pages(gfp, order) {
        Ok(p) => {
            k.__free_pages(p, order).unwrap();
            true
        }
        Err(e) => {
            assert_eq!(e, Error::NoMemory);
            false
        }
    }
}

/// One object from `c`, freed at once; whether it succeeded.
fn obj_ok(k: &K<'_>, c: &KmemCache, gfp: Gfp) -> bool {
    match k.kmem_cache_alloc(c, gfp) {
        Ok(p) => {
            // SAFETY: just allocated, freed once.
            unsafe { k.kmem_cache_free(c, p.as_ptr()) }.unwrap();
            true
        }
        Err(e) => {
            assert_eq!(e, Error::NoMemory);
            false
        }
    }
}

fn count_reports(k: &K<'_>, needle: &str) -> usize {
    let mut n = 0;
    k.platform()
        .for_each_report(|_, l| n += usize::from(l.contains(needle)));
    n
}

#[test]
#[cfg_attr(miri, ignore)]
fn defaults_are_linuxs() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fs = k.failslab();
    let fp = k.fail_page_alloc();
    for f in [&*fs, &*fp] {
        assert_eq!(
            (
                f.probability(),
                f.interval(),
                f.times(),
                f.space(),
                f.verbose()
            ),
            (0, 1, 1, 0, 2),
            "FAULT_ATTR_INITIALIZER"
        );
        assert_eq!(f.injected(), 0);
    }
    assert_eq!((fs.name(), fp.name()), ("failslab", "fail_page_alloc"));
    assert!(fs.ignore_gfp_wait() && !fs.cache_filter());
    assert!(fp.ignore_gfp_wait() && fp.ignore_gfp_highmem());
    assert_eq!(fp.min_order(), 1);
    // Off: nothing fails, even what would be failed when on.
    assert!(page_ok(&k, GFP_ATOMIC, 2));
    assert!(!k.should_fail_alloc_page(GFP_ATOMIC, 2));
    let p = k.kmalloc(64, GFP_ATOMIC).unwrap();
    // SAFETY: freed once.
    unsafe { k.kfree(p.as_ptr()) }.unwrap();
}

#[test]
#[cfg_attr(miri, ignore)]
fn probability_100_fails_every_call_and_0_none() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("fi_prob", 64, 0, SlabFlags::NONE, None)
        .unwrap();
    always(&k.fail_page_alloc());
    always(&k.failslab());
    assert_eq!(failures(8, || page_ok(&k, GFP_ATOMIC, 1)).len(), 8);
    assert_eq!(failures(8, || obj_ok(&k, c, GFP_ATOMIC)).len(), 8);
    assert_eq!(k.fail_page_alloc().injected(), 8);
    assert_eq!(k.failslab().injected(), 8);
    k.fail_page_alloc().set_probability(0).unwrap();
    k.failslab().set_probability(0).unwrap();
    assert!(failures(8, || page_ok(&k, GFP_ATOMIC, 1)).is_empty());
    assert!(failures(8, || obj_ok(&k, c, GFP_ATOMIC)).is_empty());
    assert_eq!(k.fail_page_alloc().injected(), 8, "nothing more injected");
}

#[test]
#[cfg_attr(miri, ignore)]
fn probability_50_fails_about_half() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    always(&k.fail_page_alloc());
    k.fail_page_alloc().set_probability(50).unwrap();
    let n = if cfg!(miri) { 60 } else { 400 };
    let failed = failures(n, || page_ok(&k, GFP_ATOMIC, 1)).len();
    // The arena's random source is a fixed-seed splitmix64: the count is
    // reproducible, and a fair coin lands well inside these bounds.
    assert!(
        failed > n * 3 / 10 && failed < n * 7 / 10,
        "{failed} of {n} failed"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn interval_fails_every_nth_call() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fp = k.fail_page_alloc();
    always(&fp);
    fp.set_interval(3);
    assert_eq!(failures(9, || page_ok(&k, GFP_ATOMIC, 1)), [3, 6, 9]);
    let fs = k.failslab();
    always(&fs);
    fs.set_interval(4);
    let c = k
        .kmem_cache_create("fi_interval", 32, 0, SlabFlags::NONE, None)
        .unwrap();
    assert_eq!(failures(8, || obj_ok(&k, c, GFP_ATOMIC)), [4, 8]);
}

#[test]
#[cfg_attr(miri, ignore)]
fn times_stops_after_n_failures() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fp = k.fail_page_alloc();
    always(&fp);
    fp.set_times(3).unwrap();
    assert_eq!(failures(6, || page_ok(&k, GFP_ATOMIC, 1)), [1, 2, 3]);
    assert_eq!(fp.times(), 0, "used up");
    assert_eq!(fp.injected(), 3);
    // The default, times 1: a single failure.
    let fs = k.failslab();
    fs.set_probability(100).unwrap();
    fs.set_verbose(0).unwrap();
    let c = k
        .kmem_cache_create("fi_times", 32, 0, SlabFlags::NONE, None)
        .unwrap();
    assert_eq!(failures(4, || obj_ok(&k, c, GFP_ATOMIC)), [1]);
}

#[test]
#[cfg_attr(miri, ignore)]
fn space_lets_the_first_weight_through() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    // failslab weighs by object size: 192 bytes of a 64-byte cache let
    // two objects through (192 -> 128 -> 64), then 64 is not more than 64:
    // the third fails.
    let c = k
        .kmem_cache_create("fi_space", 64, 0, SlabFlags::NONE, None)
        .unwrap();
    let fs = k.failslab();
    always(&fs);
    fs.set_space(192).unwrap();
    assert_eq!(failures(5, || obj_ok(&k, c, GFP_ATOMIC)), [3, 4, 5]);
    assert_eq!(fs.space(), 64);
    // fail_page_alloc weighs by 1 << order pages: 5 pages let two
    // order-1 requests through (5 -> 3 -> 1), then 1 <= 2 fails.
    let fp = k.fail_page_alloc();
    always(&fp);
    fp.set_space(5).unwrap();
    assert_eq!(failures(4, || page_ok(&k, GFP_ATOMIC, 1)), [3, 4]);
    assert_eq!(fp.space(), 1);
    fp.set_space(4).unwrap();
    assert_eq!(
        failures(2, || page_ok(&k, GFP_ATOMIC, 1)),
        [2],
        "4 -> 2, then 2 fails"
    );
    // A bigger request with space left is weighed by its order too.
    fp.set_space(5).unwrap();
    assert!(!page_ok(&k, GFP_ATOMIC, 3), "8 pages > 5: fails at once");
}

#[test]
#[cfg_attr(miri, ignore)]
fn verbose_0_is_silent_1_prints_the_message_2_the_call_site() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fp = k.fail_page_alloc();
    always(&fp);
    assert!(!page_ok(&k, GFP_ATOMIC, 1));
    assert!(!k.platform().reported("FAULT_INJECTION"), "verbose 0");

    fp.set_verbose(1).unwrap();
    fp.set_times(5).unwrap();
    assert!(!page_ok(&k, GFP_ATOMIC, 1));
    let mut lines = Vec::new();
    k.platform()
        .for_each_report(|lvl, l| lines.push((lvl, l.to_string())));
    assert_eq!(
        lines,
        [
            (Level::Notice, "FAULT_INJECTION: forcing a failure.".into()),
            (
                Level::Notice,
                "name fail_page_alloc, interval 1, probability 100, space 0, times 5".into()
            ),
        ],
        "verbose 1: the message, times before the decrement"
    );
    assert!(
        !k.platform().reported("page allocation failure"),
        "an injected failure skips warn_alloc"
    );

    k.platform().clear_reports();
    fp.set_verbose(2).unwrap();
    let line = line!() + 1;
    let r = k.alloc_pages(GFP_ATOMIC, 1);
    assert_eq!(r.err(), Some(Error::NoMemory));
    assert!(k.platform().reported("FAULT_INJECTION: forcing a failure."));
    assert!(k.platform().reported("Call Trace:"));
    assert!(k.platform().reported(" should_fail_alloc_page"));
    assert!(k.platform().reported("CPU: 0 PID: 0 Comm: swapper"));
    let site = format!("fault_inject.rs:{line}:");
    assert!(
        k.platform().reported(&site),
        "verbose 2 names the allocation's call site {site}"
    );

    // failslab: the call site of kmem_cache_alloc.
    k.platform().clear_reports();
    let fs = k.failslab();
    always(&fs);
    fs.set_verbose(2).unwrap();
    let c = k
        .kmem_cache_create("fi_verbose", 48, 0, SlabFlags::NONE, None)
        .unwrap();
    let line = line!() + 1;
    assert!(k.kmem_cache_alloc(c, GFP_ATOMIC).is_err());
    assert!(k.platform().reported("name failslab, interval 1"));
    assert!(k.platform().reported(" should_failslab"));
    assert!(k.platform().reported(&format!("fault_inject.rs:{line}:")));
    assert!(
        !k.platform().reported("SLUB: Unable to allocate"),
        "no slab failure report for an injected failure"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn nowarn_silences_the_message_but_still_fails() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fp = k.fail_page_alloc();
    always(&fp);
    fp.set_verbose(2).unwrap();
    assert!(!page_ok(&k, GFP_ATOMIC | __GFP_NOWARN, 1));
    // GFP_NOWAIT carries __GFP_NOWARN since 6.18.
    assert!(!page_ok(&k, GFP_NOWAIT, 1));
    let fs = k.failslab();
    always(&fs);
    fs.set_verbose(2).unwrap();
    assert!(k.kmalloc(16, GFP_ATOMIC | __GFP_NOWARN).is_err());
    k.platform().for_each_report(|_, l| panic!("reported: {l}"));
    assert_eq!((fp.injected(), fs.injected()), (2, 1));
}

#[test]
#[cfg_attr(miri, ignore)]
fn ignore_gfp_wait_exempts_blocking_allocations() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("fi_wait", 100, 0, SlabFlags::NONE, None)
        .unwrap();
    let fp = k.fail_page_alloc();
    let fs = k.failslab();
    always(&fp);
    always(&fs);
    // Y (the default): GFP_KERNEL may block, so it is left alone.
    assert!(page_ok(&k, GFP_KERNEL, 1));
    assert!(obj_ok(&k, c, GFP_KERNEL));
    assert!(!page_ok(&k, GFP_ATOMIC, 1));
    assert!(!obj_ok(&k, c, GFP_ATOMIC));
    fp.set_ignore_gfp_wait(false);
    fs.set_ignore_gfp_wait(false);
    assert!(!page_ok(&k, GFP_KERNEL, 1));
    assert!(!obj_ok(&k, c, GFP_KERNEL));
}

#[test]
#[cfg_attr(miri, ignore)]
fn ignore_gfp_highmem_exempts_highmem_requests() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fp = k.fail_page_alloc();
    always(&fp);
    // No HighMem zone on the arena: __GFP_HIGHMEM lands in Normal, but the
    // flag still decides the exemption.
    assert!(page_ok(&k, GFP_ATOMIC | __GFP_HIGHMEM, 1));
    fp.set_ignore_gfp_highmem(false);
    assert!(!page_ok(&k, GFP_ATOMIC | __GFP_HIGHMEM, 1));
}

#[test]
#[cfg_attr(miri, ignore)]
fn min_order_exempts_lower_orders() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fp = k.fail_page_alloc();
    always(&fp);
    assert!(page_ok(&k, GFP_ATOMIC, 0), "min-order 1: order 0 passes");
    assert!(!page_ok(&k, GFP_ATOMIC, 1));
    fp.set_min_order(3);
    assert!(page_ok(&k, GFP_ATOMIC, 2));
    assert!(!page_ok(&k, GFP_ATOMIC, 3));
    assert!(!page_ok(&k, GFP_ATOMIC, 10));
    fp.set_min_order(0);
    assert!(!page_ok(&k, GFP_ATOMIC, 0));
}

#[test]
#[cfg_attr(miri, ignore)]
fn cache_filter_limits_failslab_to_slab_failslab_caches() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let marked = k
        .kmem_cache_create("fi_marked", 96, 0, SLAB_FAILSLAB, None)
        .unwrap();
    let plain = k
        .kmem_cache_create("fi_plain", 96, 0, SlabFlags::NONE, None)
        .unwrap();
    assert!(
        !core::ptr::eq(marked, plain),
        "SLAB_FAILSLAB caches are never merged"
    );
    assert!(marked.flags().contains(SLAB_FAILSLAB));
    let fs = k.failslab();
    always(&fs);
    fs.set_cache_filter(true);
    assert!(!obj_ok(&k, marked, GFP_ATOMIC));
    assert!(obj_ok(&k, plain, GFP_ATOMIC));
    let p = k
        .kmalloc(96, GFP_ATOMIC)
        .expect("kmalloc caches are not marked");
    // SAFETY: freed once.
    unsafe { k.kfree(p.as_ptr()) }.unwrap();
    fs.set_cache_filter(false);
    assert!(!obj_ok(&k, plain, GFP_ATOMIC));
}

#[test]
#[cfg_attr(miri, ignore)]
fn slab_debug_a_marks_every_cache() {
    assert_eq!(parse_slab_debug("A").unwrap(), SLAB_FAILSLAB);
    let mut m = vec![0u8; MEM];
    let params = BootParams {
        slab: SlabParams {
            debug: kmem::slab::SlabDebug::all(SLAB_FAILSLAB),
            ..SlabParams::default()
        },
        ..BootParams::default()
    };
    let k = boot_params(&mut m, params).unwrap();
    let fs = k.failslab();
    always(&fs);
    fs.set_cache_filter(true);
    assert!(
        k.kmalloc(64, GFP_ATOMIC).is_err(),
        "kmalloc-64 is marked too"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn nofail_is_never_failed() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let c = k
        .kmem_cache_create("fi_nofail", 40, 0, SlabFlags::NONE, None)
        .unwrap();
    let fp = k.fail_page_alloc();
    let fs = k.failslab();
    always(&fp);
    always(&fs);
    fp.set_ignore_gfp_wait(false);
    fs.set_ignore_gfp_wait(false);
    fp.set_min_order(0);
    assert!(page_ok(&k, GFP_KERNEL | __GFP_NOFAIL, 0));
    assert!(page_ok(&k, GFP_KERNEL | __GFP_NOFAIL, 2));
    assert!(obj_ok(&k, c, GFP_KERNEL | __GFP_NOFAIL));
    assert_eq!((fp.injected(), fs.injected()), (0, 0));
    assert!(
        !page_ok(&k, GFP_KERNEL, 0),
        "the same request without it fails"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn kmalloc_from_a_cache_meets_failslab_and_kmalloc_large_fail_page_alloc() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fs = k.failslab();
    let fp = k.fail_page_alloc();
    always(&fs);
    assert_eq!(k.kmalloc(64, GFP_ATOMIC).err(), Some(Error::NoMemory));
    assert_eq!(k.kzalloc(8192, GFP_ATOMIC).err(), Some(Error::NoMemory));
    // 64 KiB is above KMALLOC_MAX_CACHE_SIZE: pages, not failslab.
    let big = k.kmalloc(64 << 10, GFP_ATOMIC).unwrap();
    // SAFETY: freed once.
    unsafe { k.kfree(big.as_ptr()) }.unwrap();
    assert_eq!(fs.injected(), 2);

    fs.set_probability(0).unwrap();
    always(&fp);
    assert_eq!(k.kmalloc(64 << 10, GFP_ATOMIC).err(), Some(Error::NoMemory));
    assert_eq!(fp.injected(), 1);
    let small = k
        .kmalloc(64, GFP_ATOMIC)
        .expect("order-0 slab pages are exempt");
    // SAFETY: freed once.
    unsafe { k.kfree(small.as_ptr()) }.unwrap();
    assert!(!k.platform().reported("page allocation failure"));
}

#[test]
fn injected_failures_leak_nothing() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let before = free_pages(&k);
    let c = k
        .kmem_cache_create("fi_leak", 128, 0, SlabFlags::NONE, None)
        .unwrap();
    let fs = k.failslab();
    let fp = k.fail_page_alloc();
    always(&fs);
    always(&fp);
    fs.set_probability(30).unwrap();
    fp.set_probability(30).unwrap();
    fp.set_min_order(0);
    let rounds = if cfg!(miri) { 12 } else { 150 };
    let mut objs = Vec::new();
    let mut kmallocs = Vec::new();
    let mut pages = Vec::new();
    for i in 0..rounds {
        if let Ok(p) = k.kmem_cache_alloc(c, GFP_ATOMIC) {
            objs.push(p.as_ptr());
        }
        let size = [24, 700, 3000, 20000][i % 4];
        if let Ok(p) = k.kmalloc(size, GFP_ATOMIC) {
            kmallocs.push(p.as_ptr());
        }
        let order = (i % 4) as u32;
        if let Ok(p) = k.alloc_pages(GFP_ATOMIC, order) {
            pages.push((p, order));
        }
    }
    // A bulk allocation that fails half way gives back what it had taken.
    fs.set_probability(100).unwrap();
    fs.set_interval(5);
    let mut bulk = [core::ptr::null_mut(); 8];
    assert_eq!(
        k.kmem_cache_alloc_bulk(c, GFP_ATOMIC, &mut bulk).err(),
        Some(Error::NoMemory)
    );
    assert!(bulk.iter().all(|p| p.is_null()));
    assert!(fs.injected() > 0 && fp.injected() > 0);
    fs.set_probability(0).unwrap();
    fp.set_probability(0).unwrap();
    for p in objs {
        // SAFETY: each object freed once.
        unsafe { k.kmem_cache_free(c, p) }.unwrap();
    }
    for p in kmallocs {
        // SAFETY: each freed once.
        unsafe { k.kfree(p) }.unwrap();
    }
    for (p, o) in pages {
        k.__free_pages(p, o).unwrap();
    }
    // SAFETY: no object of `c` is live.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
    for size in [24, 700, 3000] {
        k.kmem_cache_shrink(k.kmalloc_slab(size, GFP_ATOMIC).unwrap());
    }
    assert_eq!(free_pages(&k), before, "every page came back");
    assert!(!k.platform().reported("BUG"));
}

#[test]
#[cfg_attr(miri, ignore)]
fn boot_parameters_set_the_attributes() {
    let mut m = vec![0u8; MEM];
    let params = BootParams {
        failslab: Some(FaultBootArg::new("1,10,0,-1")),
        fail_page_alloc: Some(FaultBootArg::new("100,50,4096,3")),
        ..BootParams::default()
    };
    let k = boot_params(&mut m, params).unwrap();
    let fs = k.failslab();
    assert_eq!(
        (fs.interval(), fs.probability(), fs.space(), fs.times()),
        (1, 10, 0, -1)
    );
    let fp = k.fail_page_alloc();
    assert_eq!(
        (fp.interval(), fp.probability(), fp.space(), fp.times()),
        (100, 50, 4096, 3)
    );
    // The same form at run time.
    fs.setup("3,100,0,2").unwrap();
    assert_eq!((fs.interval(), fs.probability(), fs.times()), (3, 100, 2));
}

#[test]
#[cfg_attr(miri, ignore)]
fn debugfs_knobs_read_back_as_written() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    for (spec, attr, knob, want) in [
        ("failslab/probability=10\n", "failslab", "probability", "10"),
        ("failslab/interval=0x10", "failslab", "interval", "16"),
        ("failslab/times=-1", "failslab", "times", "-1"),
        ("failslab/space=010", "failslab", "space", "8"),
        ("failslab/verbose=1", "failslab", "verbose", "1"),
        (
            "failslab/ignore-gfp-wait=N",
            "failslab",
            "ignore-gfp-wait",
            "N",
        ),
        ("failslab/cache-filter=1", "failslab", "cache-filter", "Y"),
        (
            "/sys/kernel/debug/fail_page_alloc/min-order=2",
            "fail_page_alloc",
            "min-order",
            "2",
        ),
        (
            "fail_page_alloc/ignore-gfp-highmem=off",
            "fail_page_alloc",
            "ignore-gfp-highmem",
            "N",
        ),
        (
            "fail_page_alloc/ignore-gfp-wait=n",
            "fail_page_alloc",
            "ignore-gfp-wait",
            "N",
        ),
        (
            "fail_page_alloc/probability=100",
            "fail_page_alloc",
            "probability",
            "100",
        ),
    ] {
        k.fault_inject_write(spec).unwrap();
        let v = if attr == "failslab" {
            k.failslab().read(knob)
        } else {
            k.fail_page_alloc().read(knob)
        };
        assert_eq!(v.unwrap().to_string(), want, "{spec}");
    }
    for knob in FAILSLAB_KNOBS {
        assert!(k.failslab().read(knob).is_ok(), "{knob}");
    }
    for knob in FAIL_PAGE_ALLOC_KNOBS {
        assert!(k.fail_page_alloc().read(knob).is_ok(), "{knob}");
    }
    assert_eq!(k.fail_page_alloc().read("times"), Ok(KnobValue::Signed(1)));
    assert_eq!(count_reports(&k, ""), 0, "good writes report nothing");
}

/// `f` is refused with `InvalidArgument` and a report containing `needle`.
fn refused(k: &K<'_>, needle: &str, f: impl FnOnce() -> Result<()>) {
    k.platform().clear_reports();
    assert_eq!(f(), Err(Error::InvalidArgument), "{needle}");
    assert!(k.platform().reported(needle), "no report with {needle:?}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn bad_knob_values_are_refused_with_a_report() {
    let mut m = vec![0u8; MEM];
    let k = boot(&mut m);
    let fs = k.failslab();
    let fp = k.fail_page_alloc();
    refused(&k, "failslab/probability: 101 is not a percentage", || {
        fs.set_probability(101)
    });
    refused(&k, "fail_page_alloc/probability: 150", || {
        k.fault_inject_write("fail_page_alloc/probability=150")
    });
    refused(&k, "failslab/times: -2 is invalid", || fs.set_times(-2));
    refused(&k, "fail_page_alloc/space: -1 is negative", || {
        fp.set_space(-1)
    });
    refused(&k, "failslab/verbose: 3 is not 0, 1 or 2", || {
        fs.set_verbose(3)
    });
    refused(
        &k,
        "failslab/interval: \"ten\" is not an unsigned number",
        || fs.write("interval", "ten"),
    );
    refused(&k, "failslab/interval: \"-1\"", || {
        fs.write("interval", "-1")
    });
    refused(
        &k,
        "fail_page_alloc/times: \"4294967296\" is not an int",
        || fp.write("times", "4294967296"),
    );
    refused(
        &k,
        "fail_page_alloc/min-order: \"4294967296\" is not a u32",
        || fp.write("min-order", "4294967296"),
    );
    refused(
        &k,
        "failslab/cache-filter: \"maybe\" is not a boolean",
        || fs.write("cache-filter", "maybe"),
    );
    refused(&k, "failslab has no knob \"min-order\"", || {
        k.fault_inject_write("failslab/min-order=1")
    });
    refused(&k, "fail_page_alloc has no knob \"colour\"", || {
        fp.read("colour").map(|_| ())
    });
    refused(
        &k,
        "fail_page_alloc/task-filter is not modelled by kmem",
        || k.fault_inject_write("fail_page_alloc/task-filter=Y"),
    );
    refused(&k, "no fault attribute \"fail_futex\"", || {
        k.fault_inject_write("fail_futex/probability=1")
    });
    refused(&k, "is not <attr>/<knob>=<value>", || {
        k.fault_inject_write("failslab/probability")
    });
    refused(&k, "is not <attr>/<knob>=<value>", || {
        k.fault_inject_write("probability=1")
    });
    refused(&k, "FAULT_INJECTION: failed to parse arguments", || {
        fs.setup("1,10,0")
    });
    refused(&k, "failslab/probability: 200", || fs.setup("1,200,0,-1"));
    // Nothing was changed by any of them.
    for f in [&*fs, &*fp] {
        assert_eq!(
            (
                f.probability(),
                f.interval(),
                f.times(),
                f.space(),
                f.verbose()
            ),
            (0, 1, 1, 0, 2)
        );
    }
    assert!(!fs.cache_filter());
    assert_eq!(fp.min_order(), 1);
}

#[test]
fn malformed_boot_parameters_fail_boot_with_linuxs_report() {
    for (fs, fp, needle) in [
        (Some("1,10,0"), None, "failslab=\"1,10,0\": expected"),
        (None, Some("x"), "fail_page_alloc=\"x\": expected"),
        (Some("1,10,0,-1,5"), None, "expected <interval>"),
        (None, Some("1,101,0,-1"), "fail_page_alloc/probability: 101"),
        (Some("1,10,-5,-1"), None, "failslab/space: -5 is negative"),
        (Some("1,10,0,-3"), None, "failslab/times: -3 is invalid"),
    ] {
        let mut m = vec![0u8; MEM];
        let p = ArenaPlatform::new(&mut m, 1);
        let (s, e) = p.usable_range();
        let params = BootParams {
            reserve_low: 0,
            failslab: fs.map(FaultBootArg::new),
            fail_page_alloc: fp.map(FaultBootArg::new),
            ..BootParams::default()
        };
        // Boot by reference so the reports can be read after it fails.
        let r = Kmem::boot(&p, &[MemRegion::usable(s, e - s)], &params);
        assert_eq!(r.err(), Some(Error::InvalidArgument), "{needle}");
        assert!(p.reported(needle), "{needle}");
        if needle.contains("expected") {
            assert!(p.reported("FAULT_INJECTION: failed to parse arguments"));
        }
    }
    let mut m = vec![0u8; MEM];
    let p = ArenaPlatform::new(&mut m, 1);
    let (s, e) = p.usable_range();
    let long = format!("1,10,0,-1{}", " ".repeat(100));
    let params = BootParams {
        reserve_low: 0,
        failslab: Some(FaultBootArg::new(&long)),
        ..BootParams::default()
    };
    let r = Kmem::boot(&p, &[MemRegion::usable(s, e - s)], &params);
    assert_eq!(r.err(), Some(Error::InvalidArgument));
    assert!(p.reported("FAULT_INJECTION: failed to parse arguments"));
    assert!(p.reported("longer than 80 bytes"));
}
