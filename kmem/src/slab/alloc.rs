//! The allocation paths (`slab_alloc_node()` and its slow path in
//! `mm/slub.c`), and the checks both fast paths make.
//!
//! `kmalloc`/`kmem_cache_alloc` and `kfree`/`kmem_cache_free` each enter
//! a *leaf* CPU-local section once ([`Platform::local_enter_leaf`]: inside
//! it the fast path runs only its own straight-line code, so a platform
//! may make it cheaper than a full section, as the simulator does), pop the
//! main sheaf or push the free sheaf ([`super::sheaf`] says why two) and
//! leave; the fast paths are inlined into their
//! callers (`kmalloc` as Linux's `__always_inline` kmalloc, so that a
//! constant size picks its cache at compile time) and everything else lives
//! in `#[cold]` functions. When a fast path cannot finish, it hands its
//! *open* section to the slow path, which leaves it first thing: the call
//! is then a tail call and no argument has to survive the platform's
//! section exit (which may run cross-CPU calls), so the fast paths need no
//! register saves. [`Kmem::kmalloc_fastpath_in`] and
//! [`Kmem::kfree_fastpath_in`] are the fast paths alone (`slab_alloc_in`,
//! `slab_free_in`), run in a section the caller entered and answering
//! "not done" instead of going slow, for a caller that wants no call at
//! all on its own fast path and checks its own CPU (kmem-malloc's thread
//! slot). The slow paths return the object or the error in one
//! word, as Linux's `ERR_PTR`, which becomes a `Result` in the caller's
//! frame. The CPU's node and the "go slow" flags share one word
//! (`CpuCache::gate`), so a free tests both with one compare.
//!
//! Linux without `slab_debug` checks, on free, only what it needs to find
//! the cache (`virt_to_slab()`, and with `CONFIG_SLAB_FREELIST_HARDENED`
//! that the object belongs to the cache passed in). kmem keeps, always on,
//! the checks that cost a few instructions and stop bad input from
//! corrupting the allocator:
//! - the address lies in a slab (one range check and the `PG_slab` bit of
//!   the head page, whose address comes from the pfn, not from a division);
//! - for `kmem_cache_free`, the slab belongs to that cache;
//! - the address is an object start: one multiplication by the inverse
//!   of the size and one compare ([`ObjDivisor`](super::ObjDivisor));
//! - the object is not the one on top of the CPU's free sheaf (a double
//!   free in a row); a null guard slot below the sheaf's first object makes
//!   that one compare even for an empty sheaf;
//! - free pointers are checked as the freelist is followed on refill
//!   ("Freepointer corrupt").
//!
//! What stays debug-only, as in Linux: searching the slab's freelist for a
//! double free anywhere (`on_freelist`), red zones, poisoning and the
//! owner tracking (`SLAB_CONSISTENCY_CHECKS`, `SLAB_RED_ZONE`,
//! `SLAB_POISON`, `SLAB_STORE_USER`, or `slab_debug=` for all caches).
//!

use super::cache::*;
use super::sheaf::*;
use crate::gfp::{self, Gfp};
use crate::platform::{Level, LocalState, Platform};
use crate::{report, Error, Kmem, Result};
use core::panic::Location;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering::Relaxed;

impl<P: Platform> Kmem<P> {
    /// `kmem_cache_alloc()`.
    #[track_caller]
    #[inline(always)]
    pub fn kmem_cache_alloc(&self, s: &KmemCache, gfp: Gfp) -> Result<NonNull<u8>> {
        self.slab_alloc_node(s, gfp, -1, Location::caller())
    }

    /// `kmem_cache_zalloc()`.
    #[track_caller]
    pub fn kmem_cache_zalloc(&self, s: &KmemCache, gfp: Gfp) -> Result<NonNull<u8>> {
        self.slab_alloc_node(s, gfp | gfp::__GFP_ZERO, -1, Location::caller())
    }

    /// `kmem_cache_alloc_node()`.
    #[track_caller]
    pub fn kmem_cache_alloc_node(&self, s: &KmemCache, gfp: Gfp, node: i32) -> Result<NonNull<u8>> {
        self.slab_alloc_node(s, gfp, node, Location::caller())
    }

    /// The allocation fast path (`slab_alloc_node()`): one CPU-local
    /// section, one pop from the CPU's main sheaf, after swapping in the
    /// free sheaf if main is empty. Everything else (an armed
    /// pre-allocation hook, a debug cache, another node, both sheaves
    /// empty or none yet, a pending flush request) goes to
    /// [`slab_alloc_slow`](Self::slab_alloc_slow).
    ///
    /// The object or the error travels as one word
    /// ([`Error::to_err_ptr`], Linux's `ERR_PTR`) and becomes a `Result`
    /// only here, in the caller's frame: a `Result` coming back from an out
    /// of line function would be returned through memory.
    #[inline(always)]
    pub(crate) fn slab_alloc_node(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> Result<NonNull<u8>> {
        let x = self.slab_alloc_raw(s, gfp, node, caller);
        match Error::from_err_ptr(x) {
            Some(e) => Err(e),
            // Not an error value, so an object.
            None => Ok(NonNull::new(x as *mut u8).expect("objects are not at address 0")),
        }
    }

    /// [`slab_alloc_node`](Self::slab_alloc_node) in `ERR_PTR` form.
    ///
    /// The section is entered and left by hand rather than with a
    /// [`LocalGuard`]: nothing in it can panic, and the way out is shaped
    /// for the code generator. The slow path is entered *inside* the
    /// section and leaves it first thing, so the call is a tail call and
    /// no argument has to survive the platform's `local_exit` (which may
    /// run pending cross-CPU calls); on the fast way out only the object
    /// does. That keeps the function free of register saves.
    #[inline(always)]
    pub(super) fn slab_alloc_raw(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> usize {
        // slab_pre_alloc_hook(): might_alloc() under CONFIG_DEBUG_ATOMIC_SLEEP
        // and failslab, one test for both while neither is on.
        if self.slab_hooks_armed() {
            return self.slab_alloc_hooked(s, gfp, node, caller);
        }
        let st = self.p.local_enter_leaf();
        // SAFETY: `st` was just entered on this thread; it is left here or
        // by the slow path.
        match unsafe { self.slab_alloc_in(s, node, &st) } {
            Some(x) => {
                self.p.local_exit_leaf(st);
                // `gfp` is usually a constant here (the function is inlined
                // into its caller), so the test costs nothing without
                // __GFP_ZERO.
                self.slab_post_alloc(s, x, gfp)
            }
            None => self.slab_alloc_slow(st, s, gfp, node, caller),
        }
    }

    /// The sheaf pop itself, in the section `st` (left to the caller): an
    /// object from the CPU's main sheaf, or from its free sheaf once that
    /// is worth taking, else `None` with nothing changed.
    ///
    /// # Safety
    ///
    /// `st` is a section of this machine's platform, open on the calling
    /// thread until this returns (so `st.cpu < nr_cpu_ids`), and the caller
    /// holds no other reference into that CPU's sheaves.
    #[inline(always)]
    pub(crate) unsafe fn slab_alloc_in(
        &self,
        s: &KmemCache,
        node: i32,
        st: &LocalState,
    ) -> Option<usize> {
        let cc = s.cpu(st.cpu);
        let gate = cc.gate.load(Relaxed);
        if (node < 0 && gate & CPU_SLOW == 0) || gate == node as u32 {
            // SAFETY: `st` is open on this thread and nothing else holds a
            // reference into the sheaves (the caller's contract).
            let sh = unsafe { s.local_sheaves(st) };
            // The sheaves are reached through raw pointers and written only
            // when they hold an object: a CPU without sheaves yet has both
            // pointing at the cache's shared empty sheaf.
            let mut main = sh.main;
            // SAFETY: `main` points at a valid sheaf (local_sheaves).
            let mut n = unsafe { (*main).size };
            if n == 0 && sh.free_is_worth_taking() {
                // The objects freed since the main sheaf was filled become
                // the main sheaf: two pointers swapped, no slow path.
                core::mem::swap(&mut sh.main, &mut sh.free);
                main = sh.main;
                // SAFETY: as above.
                n = unsafe { (*main).size };
            }
            // 1..=SHEAF_CAPACITY: a non-empty sheaf, so one of this CPU's
            // own (and no bounds check).
            if n.wrapping_sub(1) < SHEAF_CAPACITY {
                // SAFETY: `main` is this CPU's sheaf with `n` objects, in
                // `objects[1..=n]`; nothing else reaches it in the section.
                return Some(unsafe {
                    let x = (*main).objects[n];
                    (*main).size = n - 1;
                    x
                } as usize);
            }
        }
        None
    }

    /// The pre-allocation hooks, then the allocation, for when a hook is
    /// armed.
    #[cold]
    #[inline(never)]
    pub(super) fn slab_alloc_hooked(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> usize {
        if self.debug_atomic_sleep() {
            self.might_alloc(gfp, caller);
        }
        if let Err(e) = self.failslab_hook(s, gfp, caller) {
            return e.to_err_ptr();
        }
        let st = self.p.local_enter_leaf();
        self.slab_alloc_slow(st, s, gfp, node, caller)
    }

    /// `slab_post_alloc_hook()`: zero the object for `__GFP_ZERO`.
    #[inline]
    pub(crate) fn slab_post_alloc(&self, s: &KmemCache, x: usize, gfp: Gfp) -> usize {
        if gfp.contains(gfp::__GFP_ZERO) {
            // SAFETY: a freshly allocated object of at least object_size bytes.
            unsafe { ptr::write_bytes(x as *mut u8, 0, s.geo.object_size) };
        }
        x
    }

    /// Everything [`slab_alloc_raw`](Self::slab_alloc_raw) does not do
    /// itself; entered inside the section `st`, which it leaves at once.
    #[cold]
    #[inline(never)]
    pub(super) fn slab_alloc_slow(
        &self,
        st: LocalState,
        s: &KmemCache,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> usize {
        self.p.local_exit_leaf(st);
        let x = if s.is_debug() {
            let nid = if node < 0 {
                self.numa_node_id()
            } else {
                node as usize
            };
            self.alloc_debug(s, gfp, nid, caller)
        } else if node < 0 || node as usize == self.numa_node_id() {
            self.alloc_sheaf(s, gfp)
        } else {
            self.alloc_from_slabs(s, gfp, node as usize)
        };
        match x {
            Ok(x) => self.slab_post_alloc(s, x, gfp),
            Err(e) => e.to_err_ptr(),
        }
    }

    /// One object straight from the slabs of node `nid`, not through the
    /// sheaves (another node's object, or a CPU without sheaves).
    pub(super) fn alloc_from_slabs(&self, s: &KmemCache, gfp: Gfp, nid: usize) -> Result<usize> {
        let mut one = [0usize; 1];
        self.refill_from_slabs(s, gfp, nid, &mut one)
            .map(|_| one[0])
    }

    /// `slab_out_of_memory()`: silent for `__GFP_NOWARN`, as in Linux.
    #[cold]
    #[inline(never)]
    pub(super) fn slab_oom(&self, s: &KmemCache, gfp: Gfp, nid: usize) {
        if gfp.contains(gfp::__GFP_NOWARN) {
            return;
        }
        report!(
            &self.p,
            Level::Warning,
            "SLUB: Unable to allocate memory on CPU {} (of node {}) gfp={:#x}({})",
            self.p.smp_processor_id(),
            nid,
            gfp.bits(),
            gfp
        );
        report!(
            &self.p,
            Level::Warning,
            "  cache: {}, object size: {}, buffer size: {}, default order: {}, min order: {}",
            s.name(),
            s.geo.object_size,
            s.geo.size,
            s.geo.order,
            s.geo.min_order
        );
    }

    /// `kmem_cache_alloc_bulk()`: fill `out` entirely or not at all.
    #[track_caller]
    pub fn kmem_cache_alloc_bulk(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        out: &mut [*mut u8],
    ) -> Result<usize> {
        let caller = Location::caller();
        for i in 0..out.len() {
            match self.slab_alloc_node(s, gfp, -1, caller) {
                Ok(p) => out[i] = p.as_ptr(),
                Err(e) => {
                    for &o in &out[..i] {
                        // SAFETY: allocated just above, never handed out.
                        let _ = unsafe { self.kmem_cache_free(s, o) };
                    }
                    out[..i].iter_mut().for_each(|o| *o = ptr::null_mut());
                    return Err(e);
                }
            }
        }
        Ok(out.len())
    }
}
