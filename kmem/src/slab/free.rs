//! The free paths (`slab_free()`, `kmem_cache_free()`,
//! `kmem_cache_free_bulk()` in `mm/slub.c`); what they check is described
//! in [`super::alloc`].

use super::cache::*;
use super::sheaf::BARN_SHEAVES;
use crate::platform::IrqSpinGuard;
use crate::platform::{Level, LocalGuard, LocalState, Platform};
use crate::{report, Error, Kmem, Result};
use core::panic::Location;
use core::sync::atomic::Ordering::Relaxed;

impl<P: Platform> Kmem<P> {
    /// `kmem_cache_free()`. Frees of objects of another cache, of addresses
    /// that are no object start, and (for debug caches) double frees and
    /// damaged red zones are reported and refused.
    ///
    /// # Safety
    ///
    /// `x` is not used after a successful free (the allocator checks what
    /// it can, but cannot know who else holds the pointer).
    #[track_caller]
    #[inline(always)]
    pub unsafe fn kmem_cache_free(&self, s: &KmemCache, x: *mut u8) -> Result<()> {
        if x.is_null() {
            return Ok(());
        }
        // cache_from_obj() + check_valid_pointer(); each refusal is a tail call.
        let Some(slab) = self.slab_of(x) else {
            return self.not_in_slab(s, x, "kmem_cache_free");
        };
        if slab.page.slab_cache_addr() != s as *const KmemCache as usize {
            return self.wrong_cache(s, slab.page, "kmem_cache_free");
        }
        if !s.is_obj_start(slab, x) {
            return self.invalid_pointer(s, x);
        }
        self.slab_free(s, slab, x, Location::caller())
    }

    /// The free fast path (`slab_free()`), for an object the caller has
    /// checked (`checked_slab()`): one CPU-local section, one push onto the
    /// CPU's free sheaf after comparing the object with the sheaf's top (a
    /// double free in a row). Everything else (a debug cache, an object of
    /// another node, a full free sheaf, a pending flush request, the double
    /// free itself) goes to [`slab_free_slow`](Self::slab_free_slow),
    /// inside the section, as in [`slab_alloc_node`](Self::slab_alloc_node).
    #[inline]
    pub(crate) fn slab_free(
        &self,
        s: &KmemCache,
        slab: SlabRef<'_>,
        x: *mut u8,
        caller: &'static Location<'static>,
    ) -> Result<()> {
        let st = self.p.local_enter_leaf();
        // SAFETY: `st` was just entered on this thread; it is left here or
        // by the slow path.
        if unsafe { self.slab_free_in(s, slab, x, &st) } {
            self.p.local_exit_leaf(st);
            return Ok(());
        }
        self.slab_free_slow(st, s, x, caller)
    }

    /// The sheaf push itself, in the section `st` (left to the caller):
    /// `x` onto the CPU's free sheaf, or `false` with nothing changed (a
    /// full sheaf, the object already on top, a slow CPU or node).
    ///
    /// # Safety
    ///
    /// As [`slab_alloc_in`](Self::slab_alloc_in), and `x` is an object of
    /// `s` in `slab` that the caller gives up.
    #[inline(always)]
    pub(crate) unsafe fn slab_free_in(
        &self,
        s: &KmemCache,
        slab: SlabRef<'_>,
        x: *mut u8,
        st: &LocalState,
    ) -> bool {
        let cc = s.cpu(st.cpu);
        if cc.gate.load(Relaxed) == slab.nid as u32 {
            // SAFETY: `st` is open on this thread and nothing else holds a
            // reference into the sheaves (the caller's contract).
            let sh = unsafe { s.local_sheaves(st) };
            let free = sh.free;
            // SAFETY: `free` points at a valid sheaf (local_sheaves): this
            // CPU's own, or, while `cap` is 0, the cache's shared empty
            // sheaf, which is read here and never written.
            let n = unsafe { (*free).size };
            // objects[n] is the top (the null guard when empty).
            if n < sh.cap as usize
                // SAFETY: n < cap <= SHEAF_CAPACITY, so n is within the
                // SHEAF_CAPACITY + 1 slots.
                && unsafe { *(*free).objects.get_unchecked(n) } != x
            {
                // SAFETY: cap > 0, so `free` is this CPU's own sheaf, which
                // nothing else reaches in the section; n + 1 <= cap <=
                // SHEAF_CAPACITY, within the slots.
                unsafe {
                    *(*free).objects.get_unchecked_mut(n + 1) = x;
                    (*free).size = n + 1;
                }
                return true;
            }
        }
        false
    }

    /// Everything [`slab_free`](Self::slab_free) does not do itself;
    /// entered inside the section `st`, which it leaves at once.
    #[cold]
    #[inline(never)]
    pub(super) fn slab_free_slow(
        &self,
        st: LocalState,
        s: &KmemCache,
        x: *mut u8,
        caller: &'static Location<'static>,
    ) -> Result<()> {
        self.p.local_exit_leaf(st);
        if s.is_debug() {
            return self.free_debug(s, x as usize, caller);
        }
        // Found again rather than passed: six arguments fit in registers.
        // A racing free of the same object may have emptied the slab and
        // given it back since the caller's checks: no `expect` here.
        let Some(slab) = self
            .slab_of(x)
            .filter(|sl| sl.page.slab_cache_addr() == s as *const KmemCache as usize)
        else {
            return self.freed_meanwhile(s, x as usize, caller);
        };
        let nid = slab.nid;
        let mut sheaves_tried = false;
        loop {
            let g = LocalGuard::new(&self.p);
            let cc = s.cpu(g.cpu());
            if nid != cc.nid() {
                // Objects of a remote node go straight back to their slab.
                drop(g);
                return self.free_to_slab(s, nid, x, caller);
            }
            // SAFETY: `g` is open on this thread; `sh` is the only reference
            // into the sheaves here.
            let sh = unsafe { s.local_sheaves(g.state()) };
            if cc.take_flush() {
                self.flush_sheaves_locked(s, sh, nid);
            }
            if sh.cap == 0 {
                // The CPU's first free into the cache (or its first since a
                // flush): its sheaves, then the free again, so that the object
                // lands on top of the new free sheaf, where a second free of it
                // is caught. Without memory for them (a free may come from
                // atomic context: no sleeping), straight back to its slab.
                drop(g);
                if !sheaves_tried && self.init_cpu_sheaves(s, crate::gfp::GFP_NOWAIT) {
                    sheaves_tried = true;
                    continue;
                }
                return self.free_to_slab(s, nid, x, caller);
            }
            // SAFETY: the free sheaf is a valid sheaf of this CPU.
            let free = unsafe { &mut *sh.free };
            if free.top() == x {
                drop(g);
                slab_bug(&self.p, s, format_args!("Object already free"));
                report!(
                    &self.p,
                    Level::Err,
                    "Object 0x{:x} freed twice in a row (double free) from {}",
                    x as usize,
                    caller
                );
                return Err(Error::BadState);
            }
            let mut grow = false;
            if free.size == s.sheaf_cap {
                // The free sheaf is full. An empty main sheaf takes its
                // objects (allocations use them next); otherwise it is parked
                // in the barn, which has at most BARN_SHEAVES full sheaves,
                // for an empty one; otherwise flushed into its slabs.
                // SAFETY: main is a valid sheaf of this CPU.
                if unsafe { (*sh.main).size } == 0 {
                    core::mem::swap(&mut sh.main, &mut sh.free);
                } else {
                    let mut l = IrqSpinGuard::lock(&self.p, &s.node(nid.min(s.nr_nodes - 1)).lists);
                    let room = l.barn_full.len < BARN_SHEAVES;
                    let empty = if room {
                        l.barn_empty
                            .pop()
                            .or_else(|| IrqSpinGuard::lock(&self.p, &s.sheaf_pool).free.pop())
                    } else {
                        None
                    };
                    if let Some(empty) = empty {
                        // SAFETY: the free sheaf is full and ours; it moves
                        // to the barn.
                        unsafe { l.barn_full.push(sh.free) };
                        sh.free = empty;
                    } else {
                        drop(l);
                        self.free_objects_to_slabs(s, nid, free.objects());
                        free.size = 0;
                        // The barn had room but the pool no sheaf: a page
                        // of them for the next time, below.
                        grow = room;
                    }
                }
            }
            // SAFETY: the free sheaf is a valid, non-full sheaf of this CPU.
            unsafe { (*sh.free).push(x) };
            drop(g);
            if grow {
                // Outside the section (a free may come from atomic context:
                // no sleeping).
                let _ = self.sheaf_pool_grow(s, crate::gfp::GFP_NOWAIT);
            }
            return Ok(());
        }
    }

    /// Free `x` straight into its slab, not through the sheaves (another
    /// node's object, or a CPU without sheaves).
    fn free_to_slab(
        &self,
        s: &KmemCache,
        nid: usize,
        x: *mut u8,
        caller: &'static Location<'static>,
    ) -> Result<()> {
        if self.free_objects_to_slabs(s, nid, &[x]) != 0 {
            return self.freed_meanwhile(s, x as usize, caller);
        }
        Ok(())
    }

    /// `kmem_cache_free_bulk()`.
    ///
    /// # Safety
    ///
    /// As [`kmem_cache_free`](Self::kmem_cache_free), for every object.
    #[track_caller]
    pub unsafe fn kmem_cache_free_bulk(&self, s: &KmemCache, objs: &[*mut u8]) -> Result<()> {
        let mut res = Ok(());
        for &o in objs {
            // SAFETY: the caller's contract, object by object.
            if let Err(e) = unsafe { self.kmem_cache_free(s, o) } {
                res = Err(e);
            }
        }
        res
    }
}
