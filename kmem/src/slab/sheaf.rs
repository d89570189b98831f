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
//! - sheaves are plain arrays allocated at a CPU's first use of the cache
//!   (from the cache's pool of sheaves, a page at a time), so neither fast
//!   path ever allocates memory for bookkeeping, and a machine of 1024
//!   CPUs pays for the CPUs a cache is used on.
//!
//! Where kmem departs from Linux: Linux's CPU pops and pushes its main
//! sheaf and keeps the spare for swapping; kmem gives the two sheaves fixed
//! roles, as mimalloc keeps a page's `free` and `local_free` lists apart.
//! Allocations pop the *main* sheaf, frees push the *free* sheaf, and an
//! allocation that finds main empty swaps the two (two pointers, on the
//! fast path) if the free sheaf is at least half full. With one sheaf for
//! both, the address a free stores to
//! depends on the object (object, page descriptor, cache, sheaf), and the
//! next allocation loads back what that store wrote: a `kmalloc`/`kfree`
//! pair is then one dependency chain of five loads, which costs Intel
//! cores twice mimalloc's time (AMD's Zen cores forward such stores almost
//! for free). With two sheaves the allocation never waits for the free.
//! The price is that a freed object is reused after the main sheaf's
//! objects, not at once.
//!
//! An empty main sheaf takes the free sheaf's objects if it is at least
//! half full (a nearly empty one would hand back at once what other CPUs
//! allocated and this one freed: see `CpuSheaves::free_is_worth_taking`),
//! then a full sheaf from the barn, and only then is refilled from slabs
//! under the node's `list_lock` (the free sheaf's few objects are the
//! last resort before failing); a full free sheaf goes to an empty main,
//! then is parked in the barn, and only then is flushed back into its
//! slabs. Debug caches
//! (`SLAB_CONSISTENCY_CHECKS`, `SLAB_RED_ZONE`, `SLAB_POISON`,
//! `SLAB_STORE_USER`) bypass the sheaves, as Linux bypasses the cpu slab, so
//! every object is checked on its way in and out. Each node's barn holds up to
//! [`BARN_SHEAVES`] full sheaves (Linux's `MAX_FULL_SHEAVES`). A sheaf's
//! capacity depends on the object size ([`sheaf_capacity`], the limits of
//! SLAB's per-CPU arrays): 120 objects up to 256 bytes, so that a burst of
//! a thousand small allocations and frees stays in the sheaves, down to 8
//! above a page, so that no CPU hoards megabytes of large free objects.
//!

use super::cache::*;
use crate::gfp::{self, Gfp};
use crate::platform::IrqSpinGuard;
use crate::platform::{LocalGuard, LocalState, Platform};
use crate::{Kmem, Result};
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::ptr::{self};
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// The most objects a sheaf holds: the capacity of caches of objects up to
/// 256 bytes. See [`sheaf_capacity`]. Under Miri, which interprets every
/// byte of the sheaves each test machine boots, 16.
pub const SHEAF_CAPACITY: usize = if cfg!(miri) { 16 } else { 120 };
/// Full sheaves each node's barn holds at most (Linux's
/// `MAX_FULL_SHEAVES`). A barn's sheaves come from the cache's sheaf pool
/// as they are needed, like the CPUs'; with its main and free sheaf a CPU
/// can keep up to `(BARN_SHEAVES + 2) * capacity` free objects (1440 of up
/// to 256 bytes) out of the slabs.
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
///
/// Cache-line aligned: two CPUs' sheaves may come from one page, and the
/// end of one must not share a line with the other's `size`, which its CPU
/// writes on every allocation and free.
#[repr(C, align(64))]
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
    /// The cache's sheaf capacity ([`KmemCache::sheaf_capacity`]) once the
    /// CPU has sheaves of its own, copied here so that the free fast path
    /// reads no line of the cache itself; 0 before, while `main` and `free`
    /// both point at the cache's shared empty sheaf (see
    /// [`init_cpu_sheaves`](Kmem::init_cpu_sheaves)).
    pub(super) cap: u32,
}

impl CpuSheaves {
    /// Whether an allocation that found `main` empty takes the free sheaf
    /// for its new main: only when it is at least half full. A nearly
    /// empty free sheaf holds the objects this CPU freed last, which on a
    /// CPU that has just started with the cache are often objects other
    /// CPUs allocated; handed straight back, they put this CPU's writes in
    /// the cache lines the others are writing (passive false sharing,
    /// Hoard's cache-scratch: kmem-malloc took 3 to 12 times mimalloc's
    /// time on it). A full sheaf from the barn or from the slabs serves
    /// instead, and the few freed objects wait their turn.
    #[inline(always)]
    pub(super) fn free_is_worth_taking(&self) -> bool {
        // SAFETY: `free` points at a valid sheaf: this CPU's own, or, while
        // `cap` is 0, the cache's shared empty one (read only).
        let f = unsafe { (*self.free).size };
        f > 0 && 2 * f >= self.cap as usize
    }
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
}

impl KmemCache {
    /// The running CPU's sheaves of this cache: the one place the sheaf
    /// slots are dereferenced. The open CPU-local section `st` is the
    /// proof of exclusivity: the slot is the one of `st`'s CPU, and Platform
    /// promise 1 makes a section exclusive on its CPU, so nothing else (no
    /// other thread, no interrupt, no cross-CPU call) reaches these sheaves
    /// until the section ends. Once `cap` is non-zero, `main` and `free`
    /// point at valid, distinct sheaves this CPU holds (exchanged only inside
    /// such sections); before, both point at the cache's shared empty sheaf,
    /// which may be read but never written.
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

/// Bytes at the start of a sheaf pool page before its sheaves: the link
/// to the pool's next page.
const SHEAF_PAGE_HEADER: usize = 64;
/// Sheaves carved from one pool page.
pub(super) const SHEAVES_PER_PAGE: usize =
    (crate::PAGE_SIZE - SHEAF_PAGE_HEADER) / size_of::<Sheaf>();
const _: () = assert!(SHEAVES_PER_PAGE >= 2);

/// The sheaves no CPU holds yet, and the pages they were carved from
/// (each page's first word links the next; 0 ends the list).
pub(super) struct SheafPool {
    /// Sheaves no CPU or barn holds.
    pub(super) free: SheafStack,
    /// The first page (its address; 0: none).
    pub(super) pages: usize,
    /// Pages in the list: every sheaf is in the pool when
    /// `free.len == nr_pages * SHEAVES_PER_PAGE`.
    pub(super) nr_pages: usize,
}

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
    /// Flush this CPU's sheaves (a flush request, `flush_all()`): their
    /// objects go back to their slabs and the two sheaves to the cache's
    /// pool, so that a shrink can give their pages back; the CPU takes
    /// sheaves again at its next use of the cache. Called inside the CPU's
    /// local section with its sheaves borrowed.
    pub(super) fn flush_sheaves_locked(&self, s: &KmemCache, sh: &mut CpuSheaves, nid: usize) {
        if sh.cap == 0 {
            // No sheaves: nothing to flush (and the shared empty sheaf is
            // never written).
            return;
        }
        for sheaf in [sh.main, sh.free] {
            // SAFETY: main and free are this CPU's sheaves (cap != 0),
            // touched only inside this CPU's section.
            let sf = unsafe { &mut *sheaf };
            self.free_objects_to_slabs(s, nid, sf.objects());
            sf.size = 0;
        }
        let mut pool = IrqSpinGuard::lock(&self.p, &s.sheaf_pool);
        // SAFETY: both sheaves are empty and leave the CPU here: unlinked.
        unsafe {
            pool.free.push(sh.main);
            pool.free.push(sh.free);
        }
        sh.main = s.empty_sheaf;
        sh.free = s.empty_sheaf;
        sh.cap = 0;
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
        // Set when no new slab could be had: one more pass, in which the
        // free sheaf's few objects serve before the allocation fails
        // (without asking for a slab again, which may have reclaimed).
        let mut failed = None;
        loop {
            let last_resort = failed.is_some();
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
                if sh.cap == 0 {
                    // The CPU's first allocation from the cache: its
                    // sheaves, then try again; without memory for them, one
                    // object straight from the slabs.
                    drop(g);
                    if self.init_cpu_sheaves(s, gfp) {
                        continue;
                    }
                    return self
                        .alloc_from_slabs(s, gfp, nid)
                        .inspect_err(|_| self.slab_oom(s, gfp, nid));
                }
                // SAFETY: sheaves are valid (see above); main != free.
                let main = unsafe { &mut *sh.main };
                if main.size > 0 {
                    return Ok(main.pop() as usize);
                }
                // SAFETY: as above.
                if sh.free_is_worth_taking() || (last_resort && unsafe { (*sh.free).size } > 0) {
                    core::mem::swap(&mut sh.main, &mut sh.free);
                    // SAFETY: as above.
                    return Ok(unsafe { (*sh.main).pop() } as usize);
                }
                let mut l = IrqSpinGuard::lock(&self.p, &s.node(nid.min(s.nr_nodes - 1)).lists);
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
                        let mut l = IrqSpinGuard::lock(&self.p, &s.node(node).lists);
                        self.take_from_partial(s, &mut l, s.sheaf_cap, push)
                    }
                    _ => self.take_from_partial(s, &mut l, s.sheaf_cap, push),
                };
                if got > 0 {
                    return Ok(main.pop() as usize);
                }
            }
            if let Some(e) = failed {
                self.slab_oom(s, gfp, nid);
                return Err(e);
            }
            // No free object on this node: a new slab, outside the section
            // (it allocates pages), then try again.
            match self.new_slab(s, gfp, nid) {
                Ok(node) => from = Some(node),
                Err(e) => failed = Some(e),
            }
        }
    }

    /// Give the running CPU its two sheaves of `s`, if it has none yet.
    ///
    /// A CPU's sheaves are allocated at its first allocation or free in
    /// the cache, as Linux allocates sheaves on demand
    /// (`alloc_empty_sheaf()`), not for every possible CPU when the cache
    /// is created: a 1024-CPU machine whose workload runs on a few of them
    /// pays for those few. Until then both of the CPU's sheaf pointers lead
    /// to the cache's shared empty sheaf, which the fast paths only read
    /// (an empty main sheaf; a free sheaf of capacity 0), so they need no
    /// extra test. Returns `false` when no memory could be had for them;
    /// the caller then goes to the slabs directly.
    pub(super) fn init_cpu_sheaves(&self, s: &KmemCache, gfp: Gfp) -> bool {
        let Some((a, b)) = self.sheaf_pool_take(s, gfp) else {
            return false;
        };
        let g = LocalGuard::new(&self.p);
        // SAFETY: `g` is open on this thread; `sh` is the only reference
        // into the sheaves here.
        let sh = unsafe { s.local_sheaves(g.state()) };
        if sh.cap == 0 {
            sh.main = a;
            sh.free = b;
            sh.cap = s.sheaf_cap as u32;
            return true;
        }
        // This thread moved to a CPU that has its sheaves already.
        drop(g);
        let mut pool = IrqSpinGuard::lock(&self.p, &s.sheaf_pool);
        // SAFETY: the two sheaves are empty, unlinked and ours.
        unsafe {
            pool.free.push(a);
            pool.free.push(b);
        }
        true
    }

    /// Two empty sheaves from the cache's pool, which grows a page at a
    /// time ([`SHEAVES_PER_PAGE`] sheaves each); `None` without memory.
    fn sheaf_pool_take(&self, s: &KmemCache, gfp: Gfp) -> Option<(*mut Sheaf, *mut Sheaf)> {
        loop {
            {
                let mut pool = IrqSpinGuard::lock(&self.p, &s.sheaf_pool);
                if pool.free.len >= 2 {
                    return Some((pool.free.pop()?, pool.free.pop()?));
                }
            }
            self.sheaf_pool_grow(s, gfp)?;
        }
    }

    /// Add a page of sheaves to the cache's pool. The page is taken as the
    /// allocation that needs it may take memory, with its reclaim bits
    /// (`gfp & GFP_RECLAIM_MASK`, as Linux's `alloc_empty_sheaf()` passes
    /// the caller's flags on): a `GFP_NOFS` request does not recurse into
    /// the filesystem for it, a non-blocking one does not sleep (a free
    /// passes `GFP_NOWAIT`), a `__GFP_NOFAIL` one does not fail.
    pub(super) fn sheaf_pool_grow(&self, s: &KmemCache, gfp: Gfp) -> Option<()> {
        let flags = (gfp & gfp::GFP_RECLAIM_MASK) | gfp::__GFP_NOWARN | gfp::__GFP_ZERO;
        let page = self.alloc_pages(flags, 0).ok()?;
        let Some(base) = self.page_address(page) else {
            let _ = self.__free_pages(page, 0);
            return None;
        };
        let base = base.as_ptr() as usize;
        self.slab.meta_pages.fetch_add(1, Relaxed);
        let mut pool = IrqSpinGuard::lock(&self.p, &s.sheaf_pool);
        // SAFETY: the page is ours, zeroed and PAGE_SIZE bytes: its
        // first word links it into the pool's pages, and the sheaves
        // after the header fit in it (SHEAVES_PER_PAGE's definition);
        // zeroed memory is a valid, unlinked, empty sheaf.
        unsafe {
            (base as *mut usize).write(pool.pages);
            for i in 0..SHEAVES_PER_PAGE {
                pool.free
                    .push((base + SHEAF_PAGE_HEADER + i * size_of::<Sheaf>()) as *mut Sheaf);
            }
        }
        pool.pages = base;
        pool.nr_pages += 1;
        Some(())
    }

    /// Give the pool's pages back if no CPU and no barn holds one of its
    /// sheaves (after a shrink has flushed them all).
    pub(super) fn sheaf_pool_trim(&self, s: &KmemCache) {
        self.sheaf_pool_release(s, false);
    }

    /// Give the pool's pages back (`kmem_cache_destroy()`, once no CPU
    /// uses the cache).
    pub(super) fn sheaf_pool_free(&self, s: &KmemCache) {
        self.sheaf_pool_release(s, true);
    }

    fn sheaf_pool_release(&self, s: &KmemCache, always: bool) {
        let mut at = {
            let mut pool = IrqSpinGuard::lock(&self.p, &s.sheaf_pool);
            if !always && pool.free.len != pool.nr_pages * SHEAVES_PER_PAGE {
                return;
            }
            pool.free = SheafStack::new();
            pool.nr_pages = 0;
            core::mem::replace(&mut pool.pages, 0)
        };
        while at != 0 {
            // SAFETY: `at` is a pool page, unlinked from the pool above and
            // so ours; its first word links the next.
            let next = unsafe { *(at as *const usize) };
            if let Some(page) = self.virt_to_page(at as *const u8) {
                if self.__free_pages(page, 0).is_ok() {
                    self.slab.meta_pages.fetch_sub(1, Relaxed);
                }
            }
            at = next;
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

    /// What `slub_cpu_dead()` does for a CPU going offline, done by the
    /// running CPU itself before it goes: flush its sheaves of every cache,
    /// so that their objects go back to their slabs. A platform whose CPUs
    /// come and go (kmem-malloc's threads) calls it when one leaves.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// use kmem::gfp::GFP_KERNEL;
    /// let p = k.kmalloc(64, GFP_KERNEL).unwrap();
    /// // SAFETY: `p` is not used again.
    /// unsafe { k.kfree(p.as_ptr()) }.unwrap();
    /// k.flush_cpu_slabs();
    /// ```
    pub fn flush_cpu_slabs(&self) {
        self.for_each_cache(|s| self.flush_cpu_sheaves(s));
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
