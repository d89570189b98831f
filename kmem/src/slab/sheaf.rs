//! The per-CPU sheaves and the per-node barn (`struct slab_sheaf`,
//! `struct node_barn` of `mm/slub.c`).
//!
//! Linux 6.x gives each CPU a *cpu slab*: a slab whose freelist the CPU pops
//! and pushes with a `cmpxchg_double` on (freelist, tid), so that an
//! interrupt or migration between reading and writing is detected. Linux
//! 6.18 added, and 7.x made the default, *sheaves*: each CPU has a small
//! array of object pointers (the main sheaf and a spare), and each node a
//! *barn* of full and empty sheaves to exchange with.
//!
//! kmem uses sheaves, because:
//! - the [`Platform`] contract already makes a CPU-local section exclusive
//!   (what `local_lock` gives Linux's sheaves), so a sheaf push or pop is a
//!   plain array operation: no double-word compare-and-swap, which also has
//!   no portable Rust equivalent;
//! - an object freed on another CPU than its slab's simply goes into that
//!   CPU's sheaf (if it belongs to the local node): remote frees need no
//!   separate lock-free path into the slab;
//! - the sheaves of a cache are allocated once, with the cache, so neither
//!   path ever allocates memory for bookkeeping.
//!
//! Where kmem departs from Linux: Linux's CPU pops and pushes its main
//! sheaf and keeps the spare for swapping; kmem gives the two sheaves fixed
//! roles, as mimalloc keeps a page's `free` and `local_free` lists apart.
//! Allocations pop the *main* sheaf, frees push the *free* sheaf, and an
//! allocation that finds main empty swaps the two (two pointers, on the
//! fast path). With one sheaf for both, the address a free stores to
//! depends on the object (object, page descriptor, cache, sheaf), and the
//! next allocation loads back what that store wrote: a `kmalloc`/`kfree`
//! pair is then one dependency chain of five loads, which costs Intel
//! cores twice mimalloc's time (AMD's Zen cores forward such stores almost
//! for free). With two sheaves the allocation never waits for the free.
//! The price is that a freed object is reused after the main sheaf's
//! objects, not at once.
//!
//! An empty main sheaf takes the free sheaf's objects, then a full sheaf
//! from the barn, and only then is refilled from slabs under the node's
//! `list_lock`; a full free sheaf goes to an empty main, then is parked in
//! the barn, and only then is flushed back into its slabs. Debug caches
//! (`SLAB_CONSISTENCY_CHECKS`, `SLAB_RED_ZONE`, `SLAB_POISON`,
//! `SLAB_STORE_USER`) bypass the sheaves, as Linux bypasses the cpu slab, so
//! every object is checked on its way in and out. Each node's barn holds
//! [`BARN_SHEAVES`] sheaves (Linux's `MAX_FULL_SHEAVES`). A sheaf's
//! capacity depends on the object size ([`sheaf_capacity`], the limits of
//! SLAB's per-CPU arrays): 120 objects up to 256 bytes, so that a burst of
//! a thousand small allocations and frees stays in the sheaves, down to 8
//! above a page, so that no CPU hoards megabytes of large free objects.
//!

use super::cache::*;
use crate::gfp::{self, Gfp};
use crate::platform::{LocalGuard, LocalState, Platform};
use crate::{Kmem, Result};
use core::cell::UnsafeCell;
use core::ptr::{self};
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// The most objects a sheaf holds: the capacity of caches of objects up to
/// 256 bytes. See [`sheaf_capacity`]. Under Miri, which interprets every
/// byte of the sheaves each test machine boots, 16.
pub const SHEAF_CAPACITY: usize = if cfg!(miri) { 16 } else { 120 };
/// Sheaves in each node's barn, full or empty. Linux caps a barn at
/// `MAX_FULL_SHEAVES` (10) full and `MAX_EMPTY_SHEAVES` (10) empty sheaves
/// and allocates sheaves as it goes; kmem allocates the barn's sheaves with
/// the cache, so the barn always holds exactly this many: with the main and
/// free sheaf a CPU keeps `(BARN_SHEAVES + 2) * capacity` free objects
/// (1440 of up to 256 bytes) before frees reach the slabs.
pub const BARN_SHEAVES: usize = 10;

/// The sheaf capacity of a cache of `size`-byte objects: the per-CPU array
/// limits of Linux's SLAB allocator (`enable_cpucache()`: 120 objects up to
/// 256 bytes, 54 up to 1 KiB, 24 up to a page, 8 above), whose array caches
/// sheaves resemble. Small objects get deep sheaves, so that a burst of a
/// thousand allocations and frees stays in them; large ones shallow
/// sheaves, so that a CPU does not hoard megabytes of free objects.
///
/// ```
/// use kmem::slab::sheaf::sheaf_capacity;
/// assert_eq!(sheaf_capacity(64), 120);
/// assert_eq!(sheaf_capacity(8192), 8);
/// ```
pub const fn sheaf_capacity(size: usize) -> usize {
    let slab_limit = if size > crate::PAGE_SIZE {
        8
    } else if size > 1024 {
        24
    } else if size > 256 {
        54
    } else {
        120
    };
    if slab_limit < SHEAF_CAPACITY {
        slab_limit
    } else {
        SHEAF_CAPACITY
    }
}

/// An array of free objects (`struct slab_sheaf`).
///
/// The objects sit in `objects[1..=size]`, the newest at `objects[size]`;
/// `objects[0]` stays null. That guard slot lets the free fast path compare
/// the pointer being freed with the top of the sheaf (the double-free check)
/// without first testing for an empty sheaf.
#[repr(C)]
pub(crate) struct Sheaf {
    pub(super) size: usize,
    pub(super) next: *mut Sheaf,
    pub(super) objects: [*mut u8; SHEAF_CAPACITY + 1],
}

impl Sheaf {
    /// The objects held, oldest first.
    #[inline]
    pub(super) fn objects(&self) -> &[*mut u8] {
        &self.objects[1..=self.size]
    }

    /// The newest object, or null when the sheaf is empty.
    #[inline]
    pub(super) fn top(&self) -> *mut u8 {
        self.objects[self.size]
    }

    /// Add `x`; the caller checked there is room.
    #[inline]
    pub(super) fn push(&mut self, x: *mut u8) {
        self.size += 1;
        self.objects[self.size] = x;
    }

    /// Take the newest object; the caller checked there is one.
    #[inline]
    pub(super) fn pop(&mut self) -> *mut u8 {
        let x = self.objects[self.size];
        self.size -= 1;
        x
    }
}

/// One CPU's two sheaves of one cache. Linux's `main` and `spare`, with
/// fixed roles: allocations pop `main`, frees push `free`, and an
/// allocation that finds `main` empty swaps the two (see the module doc).
pub(super) struct CpuSheaves {
    /// Allocations pop from it.
    pub(super) main: *mut Sheaf,
    /// Frees push onto it.
    pub(super) free: *mut Sheaf,
}

/// One CPU's sheaves of one cache.
#[repr(C, align(64))]
pub(crate) struct CpuCache {
    pub(super) sheaves: UnsafeCell<CpuSheaves>,
    /// The fast paths' one test: the CPU's node in the low bits, and above
    /// them why the fast paths must not use the sheaves: [`CPU_FLUSH`]
    /// (another CPU asked this one to flush them) and [`CPU_DEBUG`] (a
    /// debug cache, which never uses them). A free compares it with the
    /// object's node, an allocation tests the flag bits, in one load.
    pub(super) gate: AtomicU32,
    /// The cache's sheaf capacity ([`KmemCache::sheaf_capacity`]), copied
    /// beside the sheaves so that the free fast path reads no line of the
    /// cache itself.
    pub(super) cap: u32,
}

impl KmemCache {
    /// The running CPU's sheaves of this cache: the one place the sheaf
    /// slots are dereferenced. The open CPU-local section `st` is the
    /// proof of exclusivity: the slot is the one of `st`'s CPU, and Platform
    /// promise 1 makes a section exclusive on its CPU, so nothing else (no
    /// other thread, no interrupt, no cross-CPU call) reaches these sheaves
    /// until the section ends. `main` and `free` always point at valid,
    /// distinct sheaves of this cache (set at creation, exchanged only
    /// inside such sections).
    ///
    /// # Safety
    ///
    /// `st` is the state of a CPU-local section that is open on this thread
    /// (a `local_enter*` returned it and its `local_exit*` has not run), and
    /// the caller holds no other reference into these sheaves while it uses
    /// the one returned.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // the section, not `&self`, grants exclusivity
    pub(super) unsafe fn local_sheaves(&self, st: &LocalState) -> &mut CpuSheaves {
        // SAFETY: the caller's contract: `st` is open, so this CPU's slot is
        // ours alone until it ends.
        unsafe { &mut *self.cpu(st.cpu).sheaves.get() }
    }

    /// The running CPU's free sheaf of this cache, which frees push onto
    /// (see [`local_sheaves`](Self::local_sheaves)).
    ///
    /// # Safety
    ///
    /// As for [`local_sheaves`](Self::local_sheaves).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // the section, not `&self`, grants exclusivity
    pub(super) unsafe fn local_free_sheaf(&self, st: &LocalState) -> &mut Sheaf {
        // SAFETY: the caller's contract; `free` always points at a valid
        // sheaf of this cache.
        unsafe { &mut *self.local_sheaves(st).free }
    }
}

/// [`CpuCache::gate`]: the node bits.
pub(super) const CPU_NODE: u32 = 0xffff;
/// [`CpuCache::gate`]: another CPU asked this one to flush its sheaves.
pub(super) const CPU_FLUSH: u32 = 1 << 16;
/// [`CpuCache::gate`]: the cache is a debug cache.
pub(super) const CPU_DEBUG: u32 = 1 << 17;
/// [`CpuCache::gate`]: the flag bits.
pub(super) const CPU_SLOW: u32 = !CPU_NODE;

impl CpuCache {
    /// The CPU's node, from the gate's node bits (which never change).
    #[inline]
    pub(super) fn nid(&self) -> usize {
        (self.gate.load(Relaxed) & CPU_NODE) as usize
    }

    /// Whether a flush was requested; clears the request.
    #[inline]
    pub(super) fn take_flush(&self) -> bool {
        self.gate.load(Relaxed) & CPU_FLUSH != 0
            && self.gate.fetch_and(!CPU_FLUSH, Relaxed) & CPU_FLUSH != 0
    }

    /// Ask this CPU to flush its sheaves at its next use of the cache.
    pub(super) fn request_flush(&self) {
        self.gate.fetch_or(CPU_FLUSH, Relaxed);
    }
}

/// Where a cache's per-CPU sheaf slots start in its metadata block, after
/// the cache itself.
pub(super) const CPUS_OFF: usize = core::mem::size_of::<KmemCache>().next_multiple_of(64);

/// A stack of sheaves linked through `next`.
#[derive(Clone, Copy)]
pub(super) struct SheafStack {
    pub(super) top: *mut Sheaf,
    pub(super) len: usize,
}

impl SheafStack {
    pub(super) const fn new() -> Self {
        SheafStack {
            top: ptr::null_mut(),
            len: 0,
        }
    }

    /// # Safety
    /// `sh` is a valid sheaf not on any stack.
    pub(super) unsafe fn push(&mut self, sh: *mut Sheaf) {
        // SAFETY: the caller hands over a valid, unlinked sheaf.
        unsafe { (*sh).next = self.top };
        self.top = sh;
        self.len += 1;
    }

    pub(super) fn pop(&mut self) -> Option<*mut Sheaf> {
        if self.top.is_null() {
            return None;
        }
        let sh = self.top;
        // SAFETY: every sheaf on the stack is valid (push's contract).
        self.top = unsafe { (*sh).next };
        self.len -= 1;
        Some(sh)
    }
}

impl<P: Platform> Kmem<P> {
    /// Honour a flush request for this CPU's sheaves. Called inside the
    /// CPU's local section with its sheaves borrowed.
    pub(super) fn flush_sheaves_locked(&self, s: &KmemCache, sh: &mut CpuSheaves, nid: usize) {
        for sheaf in [sh.main, sh.free] {
            // SAFETY: main and free are this CPU's sheaves, valid for the
            // cache's life and touched only inside this CPU's section.
            let sf = unsafe { &mut *sheaf };
            self.free_objects_to_slabs(s, nid, sf.objects());
            sf.size = 0;
        }
    }

    /// The sheaf allocation path past the fast path's main sheaf: the
    /// free sheaf, then a full sheaf from the barn, then a refill of the main
    /// sheaf from the node's partial slabs (`refill_sheaf()`), all in one
    /// CPU-local section; only when no partial slab has a free object is
    /// a new slab allocated, outside the section, and the whole tried again.
    pub(super) fn alloc_sheaf(&self, s: &KmemCache, gfp: Gfp) -> Result<usize> {
        // The node whose partial slabs refill the sheaf: ours, unless the
        // last new slab had to come from another node.
        let mut from = None;
        loop {
            let nid;
            {
                let g = LocalGuard::new(&self.p);
                let cc = s.cpu(g.cpu());
                nid = cc.nid();
                // SAFETY: `g` is open on this thread; `sh` is the only
                // reference into the sheaves here.
                let sh = unsafe { s.local_sheaves(g.state()) };
                if cc.take_flush() {
                    self.flush_sheaves_locked(s, sh, nid);
                }
                // SAFETY: sheaves are valid (see above); main != free.
                let main = unsafe { &mut *sh.main };
                if main.size > 0 {
                    return Ok(main.pop() as usize);
                }
                // SAFETY: as above.
                if unsafe { (*sh.free).size } > 0 {
                    core::mem::swap(&mut sh.main, &mut sh.free);
                    // SAFETY: as above.
                    return Ok(unsafe { (*sh.main).pop() } as usize);
                }
                let mut l = s.node(nid.min(s.nr_nodes - 1)).lists.lock();
                // A full sheaf from the barn, for our empty main.
                if let Some(full) = l.barn_full.pop() {
                    // SAFETY: main is a valid sheaf we own; it moves to the barn.
                    unsafe { l.barn_empty.push(sh.main) };
                    sh.main = full;
                    // SAFETY: a barn sheaf is valid; now ours.
                    return Ok(unsafe { (*sh.main).pop() } as usize);
                }
                // Refill the empty main sheaf straight from partial slabs.
                // SAFETY: as above.
                let main = unsafe { &mut *sh.main };
                let push = |o: usize| main.push(o as *mut u8);
                let got = match from {
                    Some(node) if node != nid => {
                        drop(l);
                        let mut l = s.node(node).lists.lock();
                        self.take_from_partial(s, &mut l, s.sheaf_cap, push)
                    }
                    _ => self.take_from_partial(s, &mut l, s.sheaf_cap, push),
                };
                if got > 0 {
                    return Ok(main.pop() as usize);
                }
            }
            // No free object on this node: a new slab, outside the section
            // (it allocates pages), then try again.
            match self.new_slab(s, gfp, nid) {
                Ok(node) => from = Some(node),
                Err(e) => {
                    if !gfp.contains(gfp::__GFP_NOWARN) {
                        self.slab_oom(s, gfp, nid);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Flush the running CPU's sheaves of `s`.
    pub(super) fn flush_cpu_sheaves(&self, s: &KmemCache) {
        let g = LocalGuard::new(&self.p);
        let cc = s.cpu(g.cpu());
        // SAFETY: `g` is open on this thread; `sh` is the only reference
        // into the sheaves here.
        let sh = unsafe { s.local_sheaves(g.state()) };
        cc.gate.fetch_and(!CPU_FLUSH, Relaxed);
        self.flush_sheaves_locked(s, sh, self.cpu_to_node(g.cpu()));
    }

    /// `flush_all()`: flush every CPU's sheaves of `s`, on each CPU through
    /// a cross-CPU call; a CPU that cannot be reached (or any, from atomic
    /// context) is asked to flush at its next use of the cache.
    pub(super) fn flush_all(&self, s: &KmemCache) {
        self.flush_cpu_sheaves(s);
        let me = {
            let g = LocalGuard::new(&self.p);
            g.cpu()
        };
        let can_wait = !self.p.in_atomic();
        for cpu in (0..s.nr_cpus).filter(|&c| c != me) {
            let done = can_wait
                && crate::platform::call_on_cpu(&self.p, cpu, || self.flush_cpu_sheaves(s)).is_ok();
            if !done {
                s.cpu(cpu).request_flush();
            }
        }
    }
}
