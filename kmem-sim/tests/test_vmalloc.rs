//! The scenarios of Linux's vmalloc stress module (`lib/test_vmalloc.c`),
//! re-expressed as tests on a simulated 2-CPU machine with both CPUs
//! running the scenario at once, as the module's worker threads do.
//!
//! Where the module only counts failures, these check the results: every
//! area is aligned as asked, its contents written through the mapping read
//! back (and, for some, through the direct map of the pages the area
//! records), `find_vm_area()` describes it, and no report is drawn unless
//! the scenario expects one. At the end of each test nothing has leaked:
//! no vmalloc page is in use, and once the lazily freed areas are purged
//! the free vmap space is one area again, as it was after boot.
//!
//! Left out: the two `kvfree_rcu` tests (kmem models no RCU grace
//! periods). The loop
//! counts are far below the module's million, to keep each test short;
//! they still cross `lazy_max_pages()` several times, so the lazy purges
//! run under both CPUs' feet.

use kmem::gfp::*;
use kmem::page::Page;
use kmem::platform::{Level, PgProt};
use kmem::vmalloc::{VMAP_BLOCK_SIZE, VMAP_MAX_ALLOC, VM_ALLOC};
use kmem::{BootParams, Kmem, Platform, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

type K<'a> = Kmem<&'a SimPlatform>;

/// A 2-CPU PC with 1 GiB of RAM: `full_fit` keeps 2 x 16384 one-page areas
/// busy at its peak (the memfd is sparse, so untouched RAM costs nothing).
fn machine() -> SimPlatform {
    SimPlatform::new(SimConfig::new(2, pc_memory_map(1 << 30))).expect("machine")
}

fn boot(s: &SimPlatform) -> K<'_> {
    let _cpu = s.bind(0);
    Kmem::boot(s, s.memory_map(), &BootParams::default()).expect("boot")
}

/// A small xorshift generator, seeded per CPU: the runs are reproducible.
struct Rng(u64);

impl Rng {
    fn new(cpu: usize) -> Rng {
        Rng(0x2545_f491_4f6c_dd1d ^ (cpu as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `lo..=hi` for a test.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// Where every CPU waits for the others between the phases of a scenario,
/// as the module's workers wait on its rwsem before they start. It sleeps
/// in the machine's wait queue, which gives the CPU up meanwhile, so a
/// cross-CPU call posted to a waiting CPU (a per-CPU list drain) still
/// runs. A CPU whose scenario panics breaks it, so the others stop waiting
/// and the panic reaches the test.
struct Rendezvous<'a> {
    s: &'a SimPlatform,
    arrived: AtomicUsize,
    broken: AtomicBool,
}

impl<'a> Rendezvous<'a> {
    fn new(s: &'a SimPlatform) -> Self {
        Rendezvous {
            s,
            arrived: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        }
    }

    fn chan(&self) -> usize {
        &self.arrived as *const AtomicUsize as usize
    }

    /// Wait until every CPU has called this `*round + 1` times.
    fn wait(&self, round: &mut usize) {
        *round += 1;
        let want = *round * self.s.nr_cpu_ids();
        if self.arrived.fetch_add(1, SeqCst) + 1 >= want {
            self.s.wake_up(self.chan());
        }
        self.s.wait_event(
            self.chan(),
            &mut || self.arrived.load(SeqCst) >= want || self.broken.load(SeqCst),
            None,
        );
        assert!(!self.broken.load(SeqCst), "another CPU panicked");
    }

    /// Run `f`, breaking the rendezvous if it panics.
    fn guard<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Breaker<'r, 'a>(&'r Rendezvous<'a>);
        impl Drop for Breaker<'_, '_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.broken.store(true, SeqCst);
                    self.0.s.wake_up(self.0.chan());
                }
            }
        }
        let _b = Breaker(self);
        f()
    }
}

/// The word written at the start and at the end of each page of an area:
/// who wrote it and which page, so that two areas mapped over the same page
/// or a page mapped at the wrong place cannot both read back right.
fn tag(owner: u64, page: usize) -> u64 {
    (owner << 20) ^ page as u64 ^ 0x5a5a_0000_0000_0000
}

/// Write the tags of `owner` into every page of `[p, p + len)`.
fn stamp(p: NonNull<u8>, len: usize, owner: u64) {
    for pg in 0..len.div_ceil(PAGE_SIZE) {
        let end = ((pg + 1) * PAGE_SIZE).min(len);
        // SAFETY: `[p, p + len)` is a live mapping the caller owns; both
        // words lie inside it (`len` is at least 8 bytes past the page's
        // start in every caller) and are 8-byte aligned (`p` is page
        // aligned and `end` a multiple of 8).
        unsafe {
            p.as_ptr()
                .add(pg * PAGE_SIZE)
                .cast::<u64>()
                .write(tag(owner, pg));
            p.as_ptr().add(end - 8).cast::<u64>().write(!tag(owner, pg));
        }
    }
}

/// Check what [`stamp`] wrote.
#[track_caller]
fn check_stamp(p: NonNull<u8>, len: usize, owner: u64) {
    for pg in 0..len.div_ceil(PAGE_SIZE) {
        let end = ((pg + 1) * PAGE_SIZE).min(len);
        // SAFETY: as in `stamp`.
        let (head, tail) = unsafe {
            (
                p.as_ptr().add(pg * PAGE_SIZE).cast::<u64>().read(),
                p.as_ptr().add(end - 8).cast::<u64>().read(),
            )
        };
        assert_eq!(head, tag(owner, pg), "{p:p}: page {pg} of {len} bytes");
        assert_eq!(tail, !tag(owner, pg), "{p:p}: end of page {pg}");
    }
}

/// Check through the direct map that page `pg` of the area at `p` is the
/// page the area records and holds what [`stamp`] wrote through the
/// mapping.
#[track_caller]
fn check_direct(k: &K<'_>, p: NonNull<u8>, pg: usize, owner: u64) {
    // SAFETY: page `pg` lies inside the caller's area.
    let va = unsafe { p.as_ptr().add(pg * PAGE_SIZE) };
    let page = k.vmalloc_to_page(va).expect("a mapped page");
    let direct = k.page_address(page).expect("lowmem");
    // SAFETY: the direct map of a page of the caller's live area.
    let word = unsafe { direct.as_ptr().cast::<u64>().read() };
    assert_eq!(
        word,
        tag(owner, pg),
        "{p:p}: page {pg} through the direct map"
    );
}

/// Check the `vm_struct` of a vmalloc area of `size` bytes at `p`.
#[track_caller]
fn check_area(k: &K<'_>, p: NonNull<u8>, size: usize) {
    let pages = size.div_ceil(PAGE_SIZE);
    let vm = k.find_vm_area(p.as_ptr()).expect("find_vm_area");
    assert_eq!(vm.addr(), p.as_ptr());
    assert_eq!(vm.usable_size(), pages * PAGE_SIZE, "{p:p}");
    assert_eq!(vm.size(), (pages + 1) * PAGE_SIZE, "one guard page");
    assert_eq!(vm.nr_pages(), pages);
    assert_ne!(vm.flags() & VM_ALLOC, 0);
    // Its last byte belongs to it too.
    // SAFETY: inside the area.
    let last = unsafe { p.as_ptr().add(size - 1) };
    assert_eq!(k.find_vm_area(last).map(|v| v.addr()), Some(p.as_ptr()));
}

/// Read `len` bytes at `p` and check that they are zero.
#[track_caller]
fn check_zero(p: NonNull<u8>, len: usize) {
    // SAFETY: `[p, p + len)` is a live mapping the caller owns.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr().cast::<u64>(), len / 8) };
    assert!(s.iter().all(|w| *w == 0), "{p:p}: not zeroed");
}

/// `vfree()`, for memory the test owns and no longer uses.
#[track_caller]
fn vfree(k: &K<'_>, p: NonNull<u8>) {
    // SAFETY: every caller passes a live vmalloc address of `k` it no
    // longer uses.
    unsafe { k.vfree(p.as_ptr()) }.expect("vfree");
}

/// An array of `n` addresses in vmalloc memory, as the module keeps its
/// pointer arrays: another area whose contents must survive the others.
struct PtrArray<'k, 'a> {
    k: &'k K<'a>,
    base: NonNull<usize>,
    n: usize,
}

impl<'k, 'a> PtrArray<'k, 'a> {
    fn new(k: &'k K<'a>, n: usize) -> Self {
        let base = k.vzalloc(n * 8).expect("vzalloc of the array").cast();
        PtrArray { k, base, n }
    }

    fn set(&self, i: usize, p: NonNull<u8>) {
        assert!(i < self.n);
        // SAFETY: the array has `n` slots and lives until `drop`.
        unsafe { self.base.as_ptr().add(i).write(p.as_ptr() as usize) };
    }

    fn get(&self, i: usize) -> NonNull<u8> {
        assert!(i < self.n);
        // SAFETY: as in `set`.
        let a = unsafe { self.base.as_ptr().add(i).read() };
        NonNull::new(a as *mut u8).expect("a slot that was set")
    }
}

impl Drop for PtrArray<'_, '_> {
    fn drop(&mut self) {
        vfree(self.k, self.base.cast());
    }
}

/// Report lines at warning level or above.
fn warnings(s: &SimPlatform) -> Vec<String> {
    s.reports()
        .into_iter()
        .filter(|(l, _)| *l <= Level::Warning)
        .map(|(_, m)| m)
        .collect()
}

/// What a test checks after its scenario: no vmalloc page in use, and after
/// `vm_unmap_aliases()` and a purge nothing lazily freed and the free vmap
/// space one area, as after boot.
fn check_nothing_leaked(s: &SimPlatform, k: &K<'_>, boot_free: (usize, usize)) {
    let _cpu = s.bind(0);
    assert_eq!(k.vmalloc_info().used_pages, 0, "vmalloc pages in use");
    k.vm_unmap_aliases();
    k.purge_vmap_area_lazy();
    assert_eq!(k.vmap_lazy_nr(), 0, "lazily freed pages left");
    assert_eq!(
        k.vmap_free_areas(),
        boot_free,
        "free vmap space (count, largest)"
    );
    let mut info = String::new();
    kmem::proc::vmallocinfo(k, &mut info).unwrap();
    assert!(!info.contains("test_vmalloc.rs"), "{info}");
}

/// Boot, note the free vmap space, run `scenario(k, cpu, rendezvous)` on
/// both CPUs at once, then check that nothing leaked and, unless
/// `reports_expected`, that nothing was reported.
fn run(scenario: impl Fn(&K<'_>, usize, &Rendezvous<'_>) + Sync, reports_expected: bool) {
    let s = machine();
    let k = boot(&s);
    let boot_free = k.vmap_free_areas();
    assert_eq!(boot_free.0, 1, "one free area after boot");
    let r = Rendezvous::new(&s);
    s.run_on_cpus(|cpu| r.guard(|| scenario(&k, cpu, &r)));
    if !reports_expected {
        assert_eq!(warnings(&s), Vec::<String>::new());
    }
    check_nothing_leaked(&s, &k, boot_free);
}

/// The owner tag of iteration `i` on `cpu`.
fn owner(cpu: usize, i: usize) -> u64 {
    ((cpu as u64) << 40) | i as u64
}

/// `fix_size_alloc_test`: one page, allocated, touched and freed in a loop.
/// Every area is checked through the direct map too, and the lazily freed
/// pages never pile up far beyond `lazy_max_pages()`: the free that
/// crosses it purges.
#[test]
fn fix_size_alloc() {
    const LOOPS: usize = 20_000;
    let purges = AtomicUsize::new(0);
    run(
        |k, cpu, _| {
            let limit = k.lazy_max_pages();
            for i in 0..LOOPS {
                let p = k.vmalloc(PAGE_SIZE).expect("vmalloc");
                stamp(p, PAGE_SIZE, owner(cpu, i));
                check_area(k, p, PAGE_SIZE);
                check_direct(k, p, 0, owner(cpu, i));
                vfree(k, p);
                // Each CPU adds at most one area (2 pages) past the limit
                // before its purge takes the list.
                assert!(
                    k.vmap_lazy_nr() <= limit + 4,
                    "{} lazy pages",
                    k.vmap_lazy_nr()
                );
            }
            purges.store(k.vmap_area_stats().3, SeqCst);
        },
        false,
    );
    // 2 x 20000 areas of 2 pages (guard included) are 80000 lazy pages: the
    // limit (16384 on 2 CPUs) was crossed four times at least.
    assert!(purges.load(SeqCst) >= 4, "{} purges", purges.load(SeqCst));
}

/// `fix_size_alloc_test` with `use_huge`: `vmalloc_huge()` of 2 MiB, which
/// gets a PMD-aligned area.
#[test]
fn fix_size_alloc_huge() {
    const LOOPS: usize = 64;
    run(
        |k, cpu, _| {
            let size = kmem::vmalloc::PMD_SIZE;
            for i in 0..LOOPS {
                let p = k.vmalloc_huge(size, GFP_KERNEL).expect("vmalloc_huge");
                assert_eq!(p.as_ptr() as usize % size, 0, "PMD aligned");
                stamp(p, size, owner(cpu, i));
                check_area(k, p, size);
                check_stamp(p, size, owner(cpu, i));
                check_direct(k, p, 511, owner(cpu, i));
                vfree(k, p);
            }
        },
        false,
    );
}

/// `full_fit_alloc_test`: fragment the space into one-page holes (allocate
/// pairs of one-page areas and free one of each pair), then allocate and
/// free one page in a loop: each allocation is a full fit of a hole, the
/// lowest one, below the busy areas' top.
///
/// The module makes `lazy_max_pages()` pairs per worker (16384 on 2 CPUs),
/// so that freeing the junk crosses the lazy limit and purges. Here each
/// mapped area is two mappings of the host process (its pages and the
/// guard page between it and the next), and a process has at most
/// `vm.max_map_count` (65530 by default) for all the machines of the tests
/// running at once; so each CPU makes an eighth of the pairs and one CPU
/// purges once the junk is freed, where Linux's drain work would have.
#[test]
fn full_fit_alloc() {
    const LOOPS: usize = 1_500;
    let holes = AtomicUsize::new(0);
    let pairs = AtomicUsize::new(0);
    // The highest busy area of both CPUs: the holes interleave between the
    // CPUs, and one CPU may take a hole above its own highest area.
    let top_all = AtomicUsize::new(0);
    run(
        |k, cpu, r| {
            let mut round = 0;
            let n = k.lazy_max_pages() / 8;
            pairs.store(n, SeqCst);
            let ptr = PtrArray::new(k, n);
            let junk = PtrArray::new(k, n);
            let mut top = 0;
            for i in 0..n {
                let p = k.vmalloc(PAGE_SIZE).expect("vmalloc");
                stamp(p, PAGE_SIZE, owner(cpu, i));
                ptr.set(i, p);
                top = top.max(p.as_ptr() as usize);
                junk.set(i, k.vmalloc(PAGE_SIZE).expect("vmalloc"));
            }
            for i in 0..n {
                vfree(k, junk.get(i));
            }
            top_all.fetch_max(top, SeqCst);
            r.wait(&mut round);
            if cpu == 0 {
                assert!(k.purge_vmap_area_lazy().num_purged >= 2 * n);
                holes.store(k.vmap_free_areas().0, SeqCst);
            }
            r.wait(&mut round);
            let top = top_all.load(SeqCst);
            // 2 x 1500 allocations fit in the 2 x 2048 holes: none reaches
            // the free space above the busy areas.
            for i in 0..LOOPS {
                let p = k.vmalloc(PAGE_SIZE).expect("vmalloc");
                assert!(
                    (p.as_ptr() as usize) < top,
                    "{p:p} is not in a hole below {top:#x}"
                );
                stamp(p, PAGE_SIZE, owner(cpu, n + i));
                check_area(k, p, PAGE_SIZE);
                vfree(k, p);
            }
            for i in 0..n {
                check_stamp(ptr.get(i), PAGE_SIZE, owner(cpu, i));
                vfree(k, ptr.get(i));
            }
        },
        false,
    );
    // At most two junk areas (one per CPU) sit side by side, since each CPU
    // alternates: at least one hole per pair of one CPU.
    let (holes, n) = (holes.load(SeqCst), pairs.load(SeqCst));
    assert!(holes >= n, "{holes} free areas for 2 x {n} holes");
}

/// `long_busy_list_alloc_test`: one-page areas stay busy on each CPU while
/// 100-page and one-page areas come and go. The module keeps 15000 per
/// worker; 5000 per CPU here, for the host's `vm.max_map_count` (see
/// [`full_fit_alloc`]).
#[test]
fn long_busy_list_alloc() {
    const BUSY: usize = 5_000;
    const LOOPS: usize = 2_000;
    run(
        |k, cpu, r| {
            let mut round = 0;
            let ptr = PtrArray::new(k, BUSY);
            for i in 0..BUSY {
                let p = k.vmalloc(PAGE_SIZE).expect("vmalloc");
                stamp(p, PAGE_SIZE, owner(cpu, i));
                ptr.set(i, p);
            }
            r.wait(&mut round);
            for i in 0..LOOPS {
                let p1 = k.vmalloc(100 * PAGE_SIZE).expect("vmalloc 100 pages");
                let p2 = k.vmalloc(PAGE_SIZE).expect("vmalloc 1 page");
                stamp(p1, 100 * PAGE_SIZE, owner(cpu, BUSY + 2 * i));
                stamp(p2, PAGE_SIZE, owner(cpu, BUSY + 2 * i + 1));
                check_area(k, p1, 100 * PAGE_SIZE);
                check_area(k, p2, PAGE_SIZE);
                check_stamp(p1, 100 * PAGE_SIZE, owner(cpu, BUSY + 2 * i));
                vfree(k, p1);
                vfree(k, p2);
            }
            r.wait(&mut round);
            for i in 0..BUSY {
                check_stamp(ptr.get(i), PAGE_SIZE, owner(cpu, i));
                vfree(k, ptr.get(i));
            }
        },
        false,
    );
}

/// `random_size_alloc_test`: 1 to 100 pages at random, every page touched.
#[test]
fn random_size_alloc() {
    const LOOPS: usize = 3_000;
    run(
        |k, cpu, _| {
            let mut rng = Rng::new(cpu);
            for i in 0..LOOPS {
                let size = rng.range(1, 100) * PAGE_SIZE;
                let p = k.vmalloc(size).expect("vmalloc");
                stamp(p, size, owner(cpu, i));
                check_area(k, p, size);
                check_stamp(p, size, owner(cpu, i));
                vfree(k, p);
            }
        },
        false,
    );
}

/// `fix_align_alloc_test`: 5 zeroed pages aligned to twice x86_64's
/// `THREAD_ALIGN` (16 KiB without KASAN), from `__vmalloc_node()`.
#[test]
fn fix_align_alloc() {
    const LOOPS: usize = 5_000;
    const ALIGN: usize = 2 * 16 * 1024;
    run(
        |k, cpu, _| {
            for i in 0..LOOPS {
                let size = 5 * PAGE_SIZE;
                let p = k
                    .__vmalloc_node(size, ALIGN, GFP_KERNEL | __GFP_ZERO, 0)
                    .expect("__vmalloc_node");
                assert_eq!(p.as_ptr() as usize % ALIGN, 0, "{p:p}");
                check_zero(p, size);
                stamp(p, size, owner(cpu, i));
                check_area(k, p, size);
                vfree(k, p);
            }
        },
        false,
    );
}

/// `random_size_align_alloc_test`: 1 to 10 zeroed pages aligned to 1 B ..
/// 4 MiB at random. Every other allocation goes through
/// `__vmalloc_node_range()` into a 256 MiB window of the space instead of
/// `__vmalloc_node()`: the window fills up with lazily freed areas and
/// alignment gaps long before `lazy_max_pages()` is reached, so those
/// allocations also take the "space full: purge and retry" path, from both
/// CPUs at once.
#[test]
fn random_size_align_alloc() {
    const LOOPS: usize = 5_000;
    run(
        |k, cpu, _| {
            let mut rng = Rng::new(cpu);
            let (start, _) = k.vmalloc_range().expect("a vmalloc space");
            let window = (start + (1 << 30), start + (1 << 30) + (256 << 20));
            for i in 0..LOOPS {
                let rnd = rng.next() as u8 as usize;
                let align = 1usize << (rnd % 23);
                let size = (rnd % 10 + 1) * PAGE_SIZE;
                let gfp = GFP_KERNEL | __GFP_ZERO;
                let p = if i % 2 == 0 {
                    k.__vmalloc_node(size, align, gfp, 0)
                } else {
                    k.vmalloc_node_range(
                        size,
                        align,
                        window.0,
                        window.1,
                        gfp,
                        PgProt::Kernel,
                        0,
                        0,
                        Location::caller(),
                    )
                }
                .unwrap_or_else(|e| panic!("CPU {cpu}, {i}: {size} bytes aligned {align}: {e:?}"));
                let a = p.as_ptr() as usize;
                assert_eq!(a % align.max(PAGE_SIZE), 0, "{p:p} aligned to {align}");
                if i % 2 == 1 {
                    assert!(a >= window.0 && a + size + PAGE_SIZE <= window.1, "{p:p}");
                }
                check_zero(p, size);
                stamp(p, size, owner(cpu, i));
                check_area(k, p, size);
                vfree(k, p);
            }
        },
        false,
    );
}

/// `align_shift_alloc_test` ("supposed to be failed"): one page aligned to
/// each power of two from 1 to 2^63. Alignments up to 1 GiB must succeed
/// (the space is 64 GiB); an alignment no address of the space satisfies
/// (with the page and its guard page after it) must fail, with Linux's two
/// warnings. Between the two either is right: the search asks for
/// `size + align - 1` bytes below the first area it tries, as Linux's
/// `find_vmap_lowest_match()` does, so a fit there can be missed, and the
/// other CPU's area may hold the one aligned address. What succeeds is
/// aligned, inside the space and usable.
#[test]
fn align_shift_alloc() {
    let failures = AtomicUsize::new(0);
    let s = machine();
    let k = boot(&s);
    let boot_free = k.vmap_free_areas();
    let (start, end) = k.vmalloc_range().expect("a vmalloc space");
    s.run_on_cpus(|cpu| {
        for shift in 0..usize::BITS {
            let align = 1usize << shift;
            let fits = start
                .checked_next_multiple_of(align)
                .is_some_and(|a| a.checked_add(2 * PAGE_SIZE).is_some_and(|e| e <= end));
            match k.__vmalloc_node(PAGE_SIZE, align, GFP_KERNEL | __GFP_ZERO, 0) {
                Ok(p) => {
                    assert!(fits, "2^{shift}: {p:p} outside the space");
                    assert_eq!(p.as_ptr() as usize % align.max(PAGE_SIZE), 0);
                    check_zero(p, PAGE_SIZE);
                    stamp(p, PAGE_SIZE, owner(cpu, shift as usize));
                    check_area(&k, p, PAGE_SIZE);
                    vfree(&k, p);
                }
                Err(e) => {
                    assert!(shift > 30, "CPU {cpu}: alignment 2^{shift} failed: {e:?}");
                    assert_eq!(e, kmem::Error::NoMemory);
                    failures.fetch_add(1, SeqCst);
                }
            }
        }
    });
    let failures = failures.load(SeqCst);
    // 2^63 never fits (nor, in a 64 GiB space, anything from 2^47 up).
    assert!(failures >= 2 * 17, "{failures} failures");
    let count = |needle: &str| {
        s.reports()
            .iter()
            .filter(|(_, m)| m.contains(needle))
            .count()
    };
    assert_eq!(
        count("vmap allocation for size 8192 failed: use vmalloc=<size> to increase size"),
        failures
    );
    assert_eq!(
        count("vmalloc error: size 4096, vm_struct allocation failed"),
        failures
    );
    let unexpected: Vec<_> = warnings(&s)
        .into_iter()
        .filter(|m| m.contains("WARNING") || m.contains("BUG"))
        .collect();
    assert_eq!(unexpected, Vec::<String>::new());
    check_nothing_leaked(&s, &k, boot_free);
}

/// `pcpu_alloc_test`: 35000 per-CPU areas per CPU, of 1 B to a quarter
/// page, aligned to 2 B .. 2 KiB at random, all held, then freed (the
/// percpu allocator takes its chunks beyond the first from vmalloc). Each
/// CPU's copy of every area is aligned and keeps its own contents until the
/// end. At the end the balance step keeps one free chunk, as Linux's does:
/// the only vmalloc area left.
///
/// It found a core bug (fixed in 175709f): the balance step counted a
/// destroyed chunk's empty populated pages off the global count twice, so
/// the count wrapped.
#[test]
fn pcpu_alloc() {
    const N: usize = 35_000;
    let s = machine();
    let k = boot(&s);
    let boot_free = k.vmap_free_areas();
    // Boot's own per-CPU structures (the zones' page lists).
    let boot_live = k.pcpu_global_stats().nr_cur_alloc;
    let r = Rendezvous::new(&s);
    s.run_on_cpus(|cpu| {
        r.guard(|| {
            let mut rng = Rng::new(cpu);
            let mut held = Vec::with_capacity(N);
            for i in 0..N {
                let size = rng.range(1, PAGE_SIZE / 4);
                let align = 1usize << rng.range(1, 11);
                let p = k.__alloc_percpu(size, align).unwrap_or_else(|e| {
                    panic!("CPU {cpu}, {i}: {size} bytes aligned {align}: {e:?}")
                });
                for unit in 0..2 {
                    let c = k.per_cpu_ptr(p, unit).expect("per_cpu_ptr");
                    assert_eq!(c.as_ptr() as usize % align, 0, "{c:p} aligned to {align}");
                    // SAFETY: `size` bytes of this unit's copy of a live area
                    // this CPU owns; the first byte and the last.
                    unsafe {
                        c.as_ptr().write(i as u8 ^ unit as u8);
                        c.as_ptr().add(size - 1).write(!(i as u8));
                    }
                }
                held.push((p, size));
            }
            let mut round = 0;
            r.wait(&mut round);
            for (i, &(p, size)) in held.iter().enumerate() {
                for unit in 0..2 {
                    let c = k.per_cpu_ptr(p, unit).expect("per_cpu_ptr");
                    // SAFETY: as above.
                    let (first, last) =
                        unsafe { (c.as_ptr().read(), c.as_ptr().add(size - 1).read()) };
                    if size > 1 {
                        assert_eq!(
                            first,
                            i as u8 ^ unit as u8,
                            "CPU {cpu}, area {i}, unit {unit}"
                        );
                    }
                    assert_eq!(last, !(i as u8), "CPU {cpu}, area {i}, unit {unit}");
                }
            }
            for (p, _) in held {
                // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
                unsafe { k.free_percpu(p) }.expect("free_percpu");
            }
        })
    });
    assert_eq!(warnings(&s), Vec::<String>::new());
    let _cpu = s.bind(0);
    k.pcpu_balance_workfn();
    let g = k.pcpu_global_stats();
    assert_eq!(g.nr_cur_alloc, boot_live, "{g:?}");
    assert!(g.nr_max_chunks > 2, "vmalloc chunks were made: {g:?}");
    // Two chunks are left (the first and a spare): their empty populated
    // pages are few.
    assert!(g.empty_pop_pages < 4096, "{g:?}");
    assert_eq!(k.vmalloc_info().used_pages, 0);
    k.vm_unmap_aliases();
    k.purge_vmap_area_lazy();
    let mut info = String::new();
    kmem::proc::vmallocinfo(&k, &mut info).unwrap();
    let chunks: Vec<&str> = info.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        chunks.len() <= 1 && chunks.iter().all(|l| l.contains("kmem/src/percpu/")),
        "{info}"
    );
    // The spare chunk's area splits the free space at most in two.
    let (free, largest) = k.vmap_free_areas();
    assert!(free <= boot_free.0 + chunks.len(), "{free} free areas");
    if chunks.is_empty() {
        assert_eq!((free, largest), boot_free);
    }
}

/// Map `pages` with `vm_map_ram()`, write each page's tag through the
/// mapping and read it back through the direct map.
#[track_caller]
fn map_and_check(k: &K<'_>, pages: &[&Page], owner: u64) -> NonNull<u8> {
    let p = k.vm_map_ram(pages, -1).expect("vm_map_ram");
    assert!(k.is_vmalloc_addr(p.as_ptr()));
    assert_eq!(p.as_ptr() as usize % PAGE_SIZE, 0);
    // A vm_map_ram area has no vm_struct.
    assert!(k.find_vm_area(p.as_ptr()).is_none());
    stamp(p, pages.len() * PAGE_SIZE, owner);
    for (i, page) in pages.iter().enumerate() {
        let direct = k.page_address(page).expect("lowmem");
        // SAFETY: the direct map of a page the test owns.
        let word = unsafe { direct.as_ptr().cast::<u64>().read() };
        assert_eq!(
            word,
            tag(owner, i),
            "{p:p}: page {i} through the direct map"
        );
    }
    p
}

/// `vm_map_ram_test`, per CPU: first one page at a time, which the CPU's
/// own vmap blocks serve front to back (so both CPUs mapping at once never
/// interleave their addresses), then mixed counts up to and past
/// `VMAP_MAX_ALLOC` (which gets an area of its own) with eight mappings
/// kept alive in a ring, so blocks are freed with pages in use elsewhere.
#[test]
fn vm_map_ram_alloc() {
    const LOOPS: usize = 5_000;
    const COUNTS: [usize; 8] = [1, 2, 3, 4, 7, 16, VMAP_MAX_ALLOC, VMAP_MAX_ALLOC + 1];
    run(
        |k, cpu, _| {
            let pages: Vec<&Page> = (0..VMAP_MAX_ALLOC + 1)
                .map(|_| k.alloc_page(GFP_KERNEL).expect("alloc_page"))
                .collect();
            let mut prev: Option<usize> = None;
            for i in 0..LOOPS {
                let p = map_and_check(k, &pages[..1], owner(cpu, i));
                let a = p.as_ptr() as usize;
                if let Some(b) = prev {
                    assert!(
                        a == b + PAGE_SIZE || a % VMAP_BLOCK_SIZE == 0,
                        "CPU {cpu}: {a:#x} after {b:#x}: neither the next page nor a new block"
                    );
                }
                prev = Some(a);
                // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
                unsafe { k.vm_unmap_ram(p.as_ptr(), 1) }.expect("vm_unmap_ram");
            }
            let mut ring: [Option<(NonNull<u8>, usize)>; 8] = [None; 8];
            for i in 0..LOOPS {
                let slot = i % ring.len();
                if let Some((p, n)) = ring[slot].take() {
                    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
                    unsafe { k.vm_unmap_ram(p.as_ptr(), n) }.expect("vm_unmap_ram");
                }
                let n = COUNTS[i % COUNTS.len()];
                let p = map_and_check(k, &pages[..n], owner(cpu, LOOPS + i));
                if n <= VMAP_MAX_ALLOC {
                    // Inside one block.
                    let a = p.as_ptr() as usize;
                    let need = n.next_power_of_two() * PAGE_SIZE;
                    assert_eq!(a / VMAP_BLOCK_SIZE, (a + need - 1) / VMAP_BLOCK_SIZE);
                }
                ring[slot] = Some((p, n));
            }
            for (p, n) in ring.into_iter().flatten() {
                // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
                unsafe { k.vm_unmap_ram(p.as_ptr(), n) }.expect("vm_unmap_ram");
            }
            for page in pages {
                k.__free_pages(page, 0).expect("__free_pages");
            }
        },
        false,
    );
}

/// A race these tests found (fixed in 6a5e90f): `vm_unmap_aliases()` freed
/// every block with no page in use and `free + dirty == VMAP_BBMAP_BITS`,
/// fully dirty ones included, while `vb_free()` of a block's last page
/// frees a fully dirty block itself, after dropping the block's lock and
/// before taking it off its CPU's queue. When `vm_unmap_aliases()` took the
/// block in that gap both freed it: under `slab_debug=F` "BUG kmalloc-256:
/// Object already free" from `free_vmap_block()` (a few times in a run of
/// this length), silently without it. As Linux's `purge_fragmented_block()`,
/// `vm_unmap_aliases()` now leaves fully dirty blocks to `vb_free()`.
#[test]
fn vm_unmap_aliases_races_the_last_vm_unmap_ram_of_a_block() {
    let s = machine();
    let mut params = BootParams::default();
    params.slab.debug = kmem::slab::SlabDebug::parse("F").expect("slab_debug");
    let k = {
        let _cpu = s.bind(0);
        Kmem::boot(&s, s.memory_map(), &params).expect("boot")
    };
    let boot_free = k.vmap_free_areas();
    let done = AtomicBool::new(false);
    s.run_on_cpus(|cpu| {
        if cpu == 0 {
            // One page mapped again and again, the previous mapping
            // unmapped after the next is made: a block always has a page
            // in use until its last page is unmapped, which makes it fully
            // dirty and frees it in vb_free().
            let page = k.alloc_page(GFP_KERNEL).expect("alloc_page");
            let mut prev = k.vm_map_ram(&[page], -1).expect("vm_map_ram");
            for _ in 0..64 * 1024 {
                let p = k.vm_map_ram(&[page], -1).expect("vm_map_ram");
                // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
                unsafe { k.vm_unmap_ram(prev.as_ptr(), 1) }.expect("vm_unmap_ram");
                prev = p;
            }
            // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
            unsafe { k.vm_unmap_ram(prev.as_ptr(), 1) }.expect("vm_unmap_ram");
            k.__free_pages(page, 0).expect("__free_pages");
            done.store(true, SeqCst);
        } else {
            while !done.load(SeqCst) {
                k.vm_unmap_aliases();
            }
        }
    });
    assert_eq!(warnings(&s), Vec::<String>::new());
    check_nothing_leaked(&s, &k, boot_free);
}
