//! loom models of kmem's lock-free protocols, run by
//! `RUSTFLAGS="--cfg loom" cargo test -p kmem --release --test loom`.
//!
//! Each model repeats the atomic operations of the code it names, with the
//! same orderings and fences, in a few threads; loom runs it in every
//! interleaving and every ordering the C11 model allows (loom treats SeqCst
//! *accesses* as AcqRel, so the code's SeqCst *fences* are what carries the
//! Dekker-style handshakes below; loom supports those). Each protocol also
//! has a model with the essential fence or re-check removed, which loom must
//! catch (`#[should_panic]`): the models can fail.
//!
//! - The sheaf exchange with the barn (`slab/sheaf.rs`: `alloc_sheaf`,
//!   `slab_free_slow`): CPUs swap empty and full sheaves through their
//!   node's barn under its lock, taking empty ones from the cache's sheaf
//!   pool when the barn has none; objects are neither lost nor duplicated.
//! - The flush and drain request flags (`CpuCache::request_flush` /
//!   `take_flush` in `slab/sheaf.rs`, `PerCpuPages::request_drain` /
//!   `take_drain_request` in `page_alloc/pcp.rs`): a request is taken
//!   exactly once or stays pending, and the gate's node bits survive.
//! - The mempool's fences (`mempool/mod.rs`): a waiter and a refill never
//!   both miss each other (`mempool_alloc`'s wait, `mempool_free`'s
//!   `wq_has_sleeper()`), and a free of an element handed over without any
//!   barrier sees the allocation that produced it (the release fence after
//!   the removal, the acquire fence at the top of `mempool_free`).
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;

// ---------------------------------------------------------------------------
// Sheaves and the barn.

/// A sheaf: the objects it holds.
type Sheaf = Vec<u32>;

const CAP: usize = 2;
/// Full sheaves a barn holds at most (`BARN_SHEAVES`): 1 here, so that
/// the barn starts full and a free finds it full or emptied by an
/// allocation, depending on the interleaving (both branches are taken).
const BARN_FULL: usize = 1;

/// One CPU's sheaves: touched only by that CPU (its local section), so
/// plain values here; the barn is shared, behind the node's lock, and the
/// cache's pool of sheaves behind its own, taken inside the barn's.
struct Cpu {
    main: Sheaf,
    free: Sheaf,
}

struct Barn {
    full: Vec<Sheaf>,
    empty: Vec<Sheaf>,
}

impl Cpu {
    /// `slab_alloc_node()`'s sheaf part: pop main; an empty main is swapped
    /// with the free sheaf (on the fast path), and if that was empty too,
    /// exchanged under the barn's lock for a full sheaf. `split` is the
    /// broken variant: it picks the full sheaf in one critical section and
    /// takes it in another.
    fn alloc(&mut self, barn: &Mutex<Barn>, split: bool) -> Option<u32> {
        if self.main.is_empty() {
            std::mem::swap(&mut self.main, &mut self.free);
        }
        if self.main.is_empty() {
            if split {
                let full = barn.lock().unwrap().full.last().cloned()?;
                let mut b = barn.lock().unwrap();
                b.full.pop();
                let empty = std::mem::replace(&mut self.main, full);
                b.empty.push(empty);
            } else {
                let mut b = barn.lock().unwrap();
                let full = b.full.pop()?;
                let empty = std::mem::replace(&mut self.main, full);
                b.empty.push(empty);
            }
        }
        self.main.pop()
    }

    /// `slab_free()`'s sheaf part: push the free sheaf; a full one goes to
    /// an empty main, else is parked in the barn (if it has room) for an
    /// empty sheaf from the barn or the pool, else is flushed back to the
    /// slabs. Returns the objects flushed.
    fn free(&mut self, x: u32, barn: &Mutex<Barn>, pool: &Mutex<Vec<Sheaf>>) -> Vec<u32> {
        let mut flushed = Vec::new();
        if self.free.len() == CAP {
            if self.main.is_empty() {
                std::mem::swap(&mut self.main, &mut self.free);
            } else {
                let mut b = barn.lock().unwrap();
                let empty = if b.full.len() < BARN_FULL {
                    b.empty.pop().or_else(|| pool.lock().unwrap().pop())
                } else {
                    None
                };
                match empty {
                    Some(empty) => {
                        let full = std::mem::replace(&mut self.free, empty);
                        b.full.push(full);
                    }
                    None => flushed.append(&mut self.free),
                }
            }
        }
        self.free.push(x);
        flushed
    }
}

fn sheaf_exchange(split: bool) {
    loom::model(move || {
        let barn = Arc::new(Mutex::new(Barn {
            full: vec![vec![10, 11]],
            empty: Vec::new(),
        }));
        let pool = Arc::new(Mutex::new(vec![Vec::new()]));
        let threads: Vec<_> = (0..3u32)
            .map(|cpu| {
                let (barn, pool) = (barn.clone(), pool.clone());
                thread::spawn(move || {
                    let mut c = Cpu {
                        main: Vec::new(),
                        free: Vec::new(),
                    };
                    let mut held = Vec::new();
                    if cpu < 2 {
                        // Allocates what the barn gives it.
                        if let Some(x) = c.alloc(&barn, split) {
                            held.push(x);
                        }
                    } else {
                        // Frees objects it owns: the third fills its free
                        // sheaf, which becomes main, fills it again, then
                        // parks a full one in the barn.
                        for x in [20, 21, 22, 23, 24] {
                            held.extend(c.free(x, &barn, &pool));
                        }
                    }
                    (held, c.main, c.free)
                })
            })
            .collect();
        let mut all: Vec<u32> = Vec::new();
        for t in threads {
            let (held, main, free) = t.join().unwrap();
            all.extend(held);
            all.extend(main);
            all.extend(free);
        }
        let b = barn.lock().unwrap();
        for s in b.full.iter().chain(b.empty.iter()) {
            all.extend(s);
        }
        for s in pool.lock().unwrap().iter() {
            all.extend(s);
        }
        all.sort();
        assert_eq!(
            all,
            [10, 11, 20, 21, 22, 23, 24],
            "no object lost or held twice"
        );
    });
}

#[test]
fn sheaf_exchange_with_the_barn_loses_and_duplicates_nothing() {
    sheaf_exchange(false);
}

#[test]
#[should_panic(expected = "no object lost or held twice")]
fn the_model_catches_a_full_sheaf_picked_and_taken_in_two_critical_sections() {
    sheaf_exchange(true);
}

// ---------------------------------------------------------------------------
// Request flags.

const CPU_NODE: u32 = 0xffff;
const CPU_FLUSH: u32 = 1 << 16;

/// `CpuCache::take_flush`: a cheap load first, then clear and test.
fn take_flush(gate: &AtomicU32, recheck: bool) -> bool {
    if !recheck {
        // Broken: the load decides, so two takers can both win.
        if gate.load(Relaxed) & CPU_FLUSH != 0 {
            gate.store(gate.load(Relaxed) & !CPU_FLUSH, Relaxed);
            return true;
        }
        return false;
    }
    gate.load(Relaxed) & CPU_FLUSH != 0 && gate.fetch_and(!CPU_FLUSH, Relaxed) & CPU_FLUSH != 0
}

fn flush_request(recheck: bool) {
    loom::model(move || {
        let gate = Arc::new(AtomicU32::new(3)); // node 3
        let taken = Arc::new(AtomicUsize::new(0));
        let req = {
            let gate = gate.clone();
            // CpuCache::request_flush.
            thread::spawn(move || {
                gate.fetch_or(CPU_FLUSH, Relaxed);
            })
        };
        // The owner and a flush_all() visit take it concurrently.
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let (gate, taken) = (gate.clone(), taken.clone());
                thread::spawn(move || {
                    if take_flush(&gate, recheck) {
                        taken.fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        req.join().unwrap();
        for t in takers {
            t.join().unwrap();
        }
        let g = gate.load(Relaxed);
        assert_eq!(g & CPU_NODE, 3, "the node bits survive");
        let pending = usize::from(g & CPU_FLUSH != 0);
        assert_eq!(
            taken.load(Relaxed) + pending,
            1,
            "the request is taken once or still pending"
        );
    });
}

#[test]
fn a_flush_request_is_taken_once_or_stays_pending() {
    flush_request(true);
}

#[test]
#[should_panic(expected = "the request is taken once or still pending")]
fn the_model_catches_a_flush_taken_by_its_load_alone() {
    flush_request(false);
}

#[test]
fn a_drain_request_is_taken_once_or_stays_pending() {
    loom::model(|| {
        // PerCpuPages::request_drain / take_drain_request.
        let drain = Arc::new(AtomicBool::new(false));
        let taken = Arc::new(AtomicUsize::new(0));
        let d = drain.clone();
        let req = thread::spawn(move || d.store(true, Relaxed));
        let (d, t) = (drain.clone(), taken.clone());
        let owner = thread::spawn(move || {
            for _ in 0..2 {
                if d.load(Relaxed) && d.swap(false, Relaxed) {
                    t.fetch_add(1, Relaxed);
                }
            }
        });
        req.join().unwrap();
        owner.join().unwrap();
        let pending = usize::from(drain.load(Relaxed));
        assert_eq!(taken.load(Relaxed) + pending, 1);
    });
}

// ---------------------------------------------------------------------------
// The mempool's fences.

fn waiter_and_refill(fences: bool) {
    loom::model(move || {
        let curr_nr = Arc::new(AtomicUsize::new(0));
        let waiters = Arc::new(AtomicUsize::new(0));
        let reserve = Arc::new(Mutex::new(()));
        // mempool_alloc: count itself a waiter, fence, test the condition
        // (the platform evaluates it before sleeping).
        let (c, w) = (curr_nr.clone(), waiters.clone());
        let waiter = thread::spawn(move || {
            w.fetch_add(1, Relaxed);
            if fences {
                fence(SeqCst);
            }
            c.load(Relaxed) > 0
        });
        // mempool_free: refill under the reserve lock, fence, look for
        // sleepers (wq_has_sleeper).
        let (c, w, r) = (curr_nr.clone(), waiters.clone(), reserve.clone());
        let refill = thread::spawn(move || {
            {
                let _g = r.lock().unwrap();
                c.store(c.load(Relaxed) + 1, Relaxed);
            }
            if fences {
                fence(SeqCst);
            }
            w.load(Relaxed) != 0
        });
        let saw_element = waiter.join().unwrap();
        let saw_waiter = refill.join().unwrap();
        assert!(
            saw_element || saw_waiter,
            "the waiter would sleep and nobody would wake it"
        );
    });
}

#[test]
fn a_mempool_waiter_and_a_refill_never_both_miss() {
    waiter_and_refill(true);
}

#[test]
#[should_panic(expected = "the waiter would sleep and nobody would wake it")]
fn the_model_catches_the_waiter_handshake_without_fences() {
    waiter_and_refill(false);
}

fn handover(fences: bool) {
    loom::model(move || {
        let curr_nr = Arc::new(AtomicUsize::new(1));
        let in_use = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(AtomicUsize::new(0));
        // mempool_take_reserved, then a hand-over with no barrier of its own.
        let (c, u, s) = (curr_nr.clone(), in_use.clone(), slot.clone());
        let alloc = thread::spawn(move || {
            c.store(c.load(Relaxed) - 1, Relaxed); // under the reserve lock
            u.fetch_add(1, Relaxed);
            if fences {
                fence(Release);
            }
            s.store(0x1000, Relaxed);
        });
        // mempool_free of the element, once it has it.
        let (c, u, s) = (curr_nr.clone(), in_use.clone(), slot.clone());
        let free = thread::spawn(move || {
            if s.load(Relaxed) == 0 {
                return;
            }
            if fences {
                fence(Acquire);
            }
            assert_eq!(
                u.load(Relaxed),
                1,
                "the free sees the element counted in use"
            );
            assert_eq!(c.load(Relaxed), 0, "and the reserve it left short");
        });
        alloc.join().unwrap();
        free.join().unwrap();
    });
}

#[test]
fn a_free_after_a_handover_sees_the_allocation() {
    handover(true);
}

#[test]
#[should_panic(expected = "the free sees")]
fn the_model_catches_a_handover_without_the_fence_pair() {
    handover(false);
}
