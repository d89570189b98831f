//! Memory pools on a simulated 2-CPU machine whose page allocator is
//! exhausted: the block layer's situation, where writeback must make
//! progress and the only memory that comes back is what completed I/O
//! returns to the pools.

use kmem::alloc::{Mempool, MempoolBox};
use kmem::gfp::*;
use kmem::mempool::{Element, MempoolT};
use kmem::page::Page;
use kmem::platform::Task;
use kmem::slab::SlabFlags;
use kmem::{BootParams, Error, Kmem, Platform, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;

/// The simulator, counting the waits and wake-ups on one channel (a
/// pool's: kswapd and others use their own).
struct Counted<'s> {
    sim: &'s SimPlatform,
    channel: AtomicUsize,
    waits: AtomicUsize,
    wakes: AtomicUsize,
}

impl Counted<'_> {
    /// Count from now on the waits and wake-ups for `pool`.
    fn watch<P: Platform>(&self, pool: &MempoolT<'_, P>) {
        self.channel
            .store(pool as *const MempoolT<'_, P> as usize, SeqCst);
    }
}

// SAFETY: every promise is the simulator's: all calls are delegated
// unchanged, the two counted ones after bumping a counter.
unsafe impl Platform for Counted<'_> {
    kmem::forward_platform!(p => &p.sim;
        nr_cpu_ids, smp_processor_id, local_enter, local_exit,
        in_atomic, in_interrupt, direct_map, memory_is_zeroed,
        vmap_range, map_kernel_range, unmap_kernel_range, flush_tlb_kernel_range, smp_call_function_single,
        report, current, now_ns, random_u64,
        task_flags, set_task_flags, out_of_memory
    );
    fn wait_event(
        &self,
        channel: usize,
        cond: &mut dyn FnMut() -> bool,
        timeout_ns: Option<u64>,
    ) -> bool {
        if channel == self.channel.load(SeqCst) {
            self.waits.fetch_add(1, SeqCst);
        }
        self.sim.wait_event(channel, cond, timeout_ns)
    }
    fn wake_up(&self, channel: usize) {
        if channel == self.channel.load(SeqCst) {
            self.wakes.fetch_add(1, SeqCst);
        }
        self.sim.wake_up(channel)
    }
}

type K<'s> = Kmem<Counted<'s>>;

fn sim() -> SimPlatform {
    SimPlatform::new(SimConfig::new(2, pc_memory_map(64 * MB))).expect("machine")
}

fn boot(s: &SimPlatform) -> K<'_> {
    let _cpu = s.bind(0);
    let p = Counted {
        sim: s,
        channel: AtomicUsize::new(0),
        waits: AtomicUsize::new(0),
        wakes: AtomicUsize::new(0),
    };
    Kmem::boot(p, s.memory_map(), &BootParams::default()).expect("boot")
}

/// Pages held by slab caches and their metadata.
fn slab_pages(k: &K<'_>) -> u64 {
    let mut n = k.slab_meta_pages() + k.kmalloc_large_pages();
    k.for_each_cache(|c| n += k.slab_totals(c).2);
    n
}

/// Free pages with every CPU's lists drained, and the pages slabs hold:
/// between them they account for all RAM.
fn settled(k: &K<'_>, s: &SimPlatform) -> (u64, u64) {
    s.run_on_cpus(|_| {
        k.drain_local_pages();
    });
    let _cpu = s.bind(0);
    let free = k.check_free_counts().expect("counters match lists");
    let slab = slab_pages(k);
    assert_eq!(
        free + slab,
        k.totalram_pages(),
        "every page is free or a slab's"
    );
    (free, slab)
}

/// Take every page even `GFP_ATOMIC` may have: mempool masks never carry
/// `__GFP_MEMALLOC`, so no pool allocation can get a page after this.
fn exhaust<'k>(k: &'k K<'_>) -> Vec<(&'k Page, u32)> {
    let mut pages = Vec::new();
    // GFP_ATOMIC does not drain other CPUs' lists (only direct reclaim
    // does): drain them here, until nothing is left anywhere.
    loop {
        for order in (0..=kmem::MAX_PAGE_ORDER).rev() {
            while let Ok(p) = k.alloc_pages(GFP_ATOMIC | __GFP_NOWARN, order) {
                pages.push((p, order));
            }
        }
        if k.drain_all_pages() == 0 {
            return pages;
        }
    }
}

/// A block I/O request: which writer wrote which sector, and the page
/// with its data.
struct Bio {
    writer: usize,
    seq: usize,
    page: usize,
}

/// A submitted bio waiting for its "I/O" to complete.
struct InFlight<'p, 's> {
    bio: MempoolBox<'p, Bio, Counted<'s>>,
    submitted: Instant,
}

/// Stamp `(writer, seq)` at both ends of a page.
fn stamp(k: &K<'_>, page: &Page, writer: usize, seq: usize) {
    let a = k.page_address(page).expect("low memory").as_ptr() as *mut u64;
    let v = ((writer as u64) << 32) | seq as u64;
    // SAFETY: the pool handed this page to the caller alone.
    unsafe {
        a.write(v);
        a.add(PAGE_SIZE / 8 - 1).write(!v);
    }
}

fn stamped(k: &K<'_>, page: &Page) -> (usize, usize) {
    let a = k.page_address(page).expect("low memory").as_ptr() as *const u64;
    // SAFETY: the bio owns the page until it completes.
    let (v, w) = unsafe { (a.read(), a.add(PAGE_SIZE / 8 - 1).read()) };
    assert_eq!(v, !w, "page torn: two bios shared it");
    ((v >> 32) as usize, v as u32 as usize)
}

#[test]
fn writers_make_progress_through_pools_while_memory_is_exhausted() {
    const BIOS: usize = 1500;
    const MIN_NR: usize = 4;
    const IO_TIME: Duration = Duration::from_micros(50);
    let s = sim();
    let k = boot(&s);
    let (boot_free, boot_slab) = settled(&k, &s);

    let cpu0 = s.bind(0);
    // A bio_set: a slab pool of bios and a page pool for their data.
    let bio_slab = k.kmem_cache::<Bio>("bio-0", SlabFlags::NONE).unwrap();
    let bio_pool = Mempool::new(&bio_slab, MIN_NR).unwrap();
    let mut page_pool = k.mempool_create_page_pool(MIN_NR, 0).unwrap();
    k.platform().watch(&page_pool);
    let pages = exhaust(&k);
    assert!(k.alloc_page(GFP_ATOMIC | __GFP_NOWARN).is_err());
    drop(cpu0);
    let waits_before = k.platform().waits.load(SeqCst);

    let queue = Mutex::new(VecDeque::<InFlight<'_, '_>>::new());
    let queued = Condvar::new();
    let completed = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let still_exhausted = AtomicBool::new(true);
    let max_pages_out = AtomicUsize::new(0);
    let page_pool_ref: &MempoolT<'_, _> = &page_pool;
    std::thread::scope(|sc| {
        // The disk: completes bios in submission order, IO_TIME after each
        // was submitted, in (simulated) hard-interrupt context on alternate
        // CPUs, as bio_endio() runs from the driver's interrupt handler.
        sc.spawn(|| {
            for n in 0..2 * BIOS {
                let io = {
                    let mut q = queue.lock().unwrap();
                    loop {
                        if let Some(io) = q.pop_front() {
                            break io;
                        }
                        q = queued.wait(q).unwrap();
                    }
                };
                std::thread::sleep(IO_TIME.saturating_sub(io.submitted.elapsed()));
                let _cpu = s.bind_as(n % 2, Task::new(100, "irq/disk"));
                s.irq(|| {
                    let bio = io.bio;
                    let page = k
                        .mempool_element_page(Element::new(bio.page as *mut u8).unwrap())
                        .unwrap();
                    assert_eq!(stamped(&k, page), (bio.writer, bio.seq));
                    completed[bio.writer].fetch_add(1, SeqCst);
                    // SAFETY: the bio's page, returned once.
                    unsafe { k.mempool_free(bio.page as *mut u8, page_pool_ref) }.unwrap();
                    drop(bio); // back to the bio pool
                });
            }
        });
        // Two writers submit BIOS bios each with GFP_NOIO: each may sleep
        // for an element, none may fail.
        s.run_on_cpus(|cpu| {
            for seq in 0..BIOS {
                let e = k.mempool_alloc(page_pool_ref, GFP_NOIO).unwrap();
                max_pages_out.fetch_max(page_pool_ref.in_use(), SeqCst);
                let page = k.mempool_element_page(e).unwrap();
                stamp(&k, page, cpu, seq);
                let bio = Bio {
                    writer: cpu,
                    seq,
                    page: e.as_ptr() as usize,
                };
                let bio = bio_pool.alloc(bio, GFP_NOIO).unwrap();
                queue.lock().unwrap().push_back(InFlight {
                    bio,
                    submitted: Instant::now(),
                });
                queued.notify_one();
                if seq % 300 == 0 && k.alloc_page(GFP_ATOMIC | __GFP_NOWARN).is_ok() {
                    still_exhausted.store(false, SeqCst);
                }
            }
        });
    });

    drop(queue);
    assert_eq!(completed[0].load(SeqCst), BIOS, "writer 0 finished");
    assert_eq!(completed[1].load(SeqCst), BIOS, "writer 1 finished");
    assert!(
        still_exhausted.load(SeqCst),
        "the page allocator had nothing all along"
    );
    assert!(
        max_pages_out.load(SeqCst) <= MIN_NR,
        "only the reserve's pages circulated"
    );
    assert!(
        k.platform().waits.load(SeqCst) > waits_before,
        "writers slept for elements and were woken by completions"
    );
    assert!(k.platform().wakes.load(SeqCst) > 0, "the frees woke them");
    // Every element is back in reserve.
    assert_eq!((page_pool.curr_nr(), page_pool.in_use()), (MIN_NR, 0));
    assert_eq!(bio_pool.curr_nr(), MIN_NR);
    assert!(!s.reported("BUG"), "{:?}", s.reports());

    {
        let _cpu = s.bind(0);
        assert!(k.alloc_page(GFP_ATOMIC | __GFP_NOWARN).is_err());
        for (p, o) in pages {
            k.__free_pages(p, o).unwrap();
        }
        k.mempool_destroy(&mut page_pool).unwrap();
        let c = bio_slab.inner().cache();
        drop(bio_pool);
        k.kmem_cache_shrink(c);
        assert_eq!(k.slab_totals(c).0, 0, "no bio lost or duplicated");
        // SAFETY: no object of the cache is live.
        unsafe { k.kmem_cache_destroy(c) }.unwrap();
    }
    let (free, slab) = settled(&k, &s);
    assert_eq!(
        free,
        boot_free - (slab - boot_slab),
        "every page is back but those kmalloc's slabs kept"
    );
}

#[test]
fn only_callers_that_may_block_wait_for_an_element() {
    let s = sim();
    let k = boot(&s);
    let (boot_free, boot_slab) = settled(&k, &s);
    let cpu0 = s.bind(0);
    let mut pool = k.mempool_create_page_pool(2, 0).unwrap();
    k.platform().watch(&pool);
    let pages = exhaust(&k);
    let a = k.mempool_alloc_preallocated(&pool).unwrap();
    let b = k.mempool_alloc(&pool, GFP_NOIO).unwrap();
    assert_eq!(pool.curr_nr(), 0);

    // Empty reserve, no pages: atomic callers get an error at once.
    let waits = k.platform().waits.load(SeqCst);
    assert_eq!(k.mempool_alloc(&pool, GFP_ATOMIC), Err(Error::NoMemory));
    assert_eq!(k.mempool_alloc(&pool, GFP_NOWAIT), Err(Error::NoMemory));
    assert_eq!(
        s.irq(|| k.mempool_alloc(&pool, GFP_ATOMIC)),
        Err(Error::NoMemory)
    );
    assert_eq!(k.mempool_alloc_preallocated(&pool), Err(Error::NoMemory));
    // A blocking mask under a spinlock cannot sleep either: reported.
    assert_eq!(
        s.spin_locked(|| k.mempool_alloc(&pool, GFP_NOIO)),
        Err(Error::NoMemory)
    );
    assert!(s.reported("BUG: sleeping function called from invalid context"));
    assert_eq!(k.platform().waits.load(SeqCst), waits, "nobody waited");
    s.clear_reports();
    drop(cpu0);

    // GFP_NOIO on CPU 0 sleeps until CPU 1 returns an element.
    let a_addr = a.as_ptr() as usize;
    let pool_ref = &pool;
    std::thread::scope(|sc| {
        let waiter = sc.spawn(|| {
            let _cpu = s.bind(0);
            k.mempool_alloc(pool_ref, GFP_NOIO).unwrap().as_ptr() as usize
        });
        // Unbound while spinning, so CPU 1 stays free for the waiter's
        // cross-CPU calls (its page allocator drains every CPU's lists).
        while k.platform().waits.load(SeqCst) == waits {
            std::thread::yield_now();
        }
        let _cpu = s.bind(1);
        assert!(!waiter.is_finished(), "the waiter sleeps");
        // SAFETY: returned once.
        unsafe { k.mempool_free(a_addr as *mut u8, pool_ref) }.unwrap();
        let c = waiter.join().unwrap();
        assert_eq!(c, a_addr, "it got the returned element");
        // SAFETY: returned once each.
        unsafe {
            k.mempool_free(c as *mut u8, pool_ref).unwrap();
            k.mempool_free(b.as_ptr(), pool_ref).unwrap();
        }
    });
    let _cpu = s.bind(0);
    assert_eq!((pool.curr_nr(), pool.in_use()), (2, 0));
    for (p, o) in pages {
        k.__free_pages(p, o).unwrap();
    }
    k.mempool_destroy(&mut pool).unwrap();
    drop(_cpu);
    let (free, slab) = settled(&k, &s);
    assert_eq!(free, boot_free - (slab - boot_slab));
    assert!(!s.reported("BUG"), "{:?}", s.reports());
}
