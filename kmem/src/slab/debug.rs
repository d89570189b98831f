//! Slab debugging (`slab_debug=`, the `SLAB_*` debug flags in
//! `mm/slub.c`): red zones, poisoning, owner tracking, the consistency
//! checks on the way in and out, and the reports in Linux's words
//! ("Redzone overwritten", "Object already free", "Objects remaining on
//! kmem_cache_close()").

use super::cache::*;
use super::*;
use crate::gfp::Gfp;
use crate::page::{Page, PageList};
use crate::platform::IrqSpinGuard;
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result};
use core::panic::Location;
use core::ptr::{self};

/// Where an allocation or free came from, for `SLAB_STORE_USER`.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct Track {
    addr: usize,
    cpu: u32,
    pid: u32,
    when: u64,
    _pad: u64,
}

const _: () = assert!(core::mem::size_of::<Track>() == super::geometry::TRACK_SIZE);

/// Which bytes a debug check found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Damage {
    LeftRedzone,
    RightRedzone,
    Poison,
}

impl Damage {
    pub(super) fn what(self) -> &'static str {
        match self {
            Damage::LeftRedzone => "Left Redzone overwritten",
            Damage::RightRedzone => "Right Redzone overwritten",
            Damage::Poison => "Poison overwritten",
        }
    }
}

impl<P: Platform> Kmem<P> {
    /// The objects still in use in `s`, as `list_slab_objects()` prints them.
    pub(super) fn list_slab_objects(&self, s: &KmemCache) {
        report!(
            &self.p,
            Level::Err,
            "Objects remaining in {} on __kmem_cache_shutdown()",
            s.name()
        );
        let mm = self.mem_map();
        for nid in 0..s.nr_nodes {
            let l = IrqSpinGuard::lock(&self.p, &s.node(nid).lists);
            for idx in l.partial.iter(&mm).chain(l.full.iter(&mm)) {
                let page = mm.at(idx);
                let base = self.page_address(page).map_or(0, |a| a.as_ptr() as usize);
                let n = page.slab_objects() as usize;
                let mut free = [0u64; 512];
                let mut fl = page.slab_freelist();
                let mut guard = 0;
                while fl != 0 && guard <= n {
                    let obj = base + fl as usize - 1;
                    if let Some(i) = s.obj_index(base, n as u32, obj) {
                        if i < 512 * 64 {
                            free[i / 64] |= 1 << (i % 64);
                        }
                    }
                    let next = s.get_fp(obj);
                    fl = if next == 0 || s.obj_index(base, n as u32, next).is_none() {
                        0
                    } else {
                        (next - base + 1) as u32
                    };
                    guard += 1;
                }
                for i in 0..n.min(512 * 64) {
                    if free[i / 64] & (1 << (i % 64)) == 0 {
                        let obj = s.obj_addr(base, i);
                        report!(
                            &self.p,
                            Level::Err,
                            "Object 0x{:x} @offset={}",
                            obj,
                            obj - base
                        );
                        self.print_track(s, obj, false);
                    }
                }
            }
        }
    }

    pub(super) fn track(&self, s: &KmemCache, obj: usize, free: bool) -> Option<Track> {
        let off = s.geo.track_offset()?;
        let at = obj + off + if free { super::geometry::TRACK_SIZE } else { 0 };
        // SAFETY: the slot's metadata area holds two Track records.
        let t = unsafe { ptr::read_unaligned(at as *const Track) };
        (t.addr != 0).then_some(t)
    }

    /// `print_track()`: "Allocated in <site> age=.. cpu=.. pid=.." (or
    /// "Freed in"), when `SLAB_STORE_USER` recorded one.
    pub(super) fn print_track(&self, s: &KmemCache, obj: usize, free: bool) {
        if let Some(t) = self.track(s, obj, free) {
            // SAFETY: set_track stores a &'static Location in `addr`.
            let loc = unsafe { &*(t.addr as *const Location<'static>) };
            report!(
                &self.p,
                Level::Err,
                "{} in {} age={} cpu={} pid={}",
                if free { "Freed" } else { "Allocated" },
                loc,
                self.p.now_ns().saturating_sub(t.when) / 1_000_000,
                t.cpu,
                t.pid
            );
        }
    }

    pub(super) fn set_track(
        &self,
        s: &KmemCache,
        obj: usize,
        free: bool,
        caller: &'static Location<'static>,
    ) {
        let Some(off) = s.geo.track_offset() else {
            return;
        };
        let at = obj + off + if free { super::geometry::TRACK_SIZE } else { 0 };
        let t = Track {
            addr: caller as *const Location<'static> as usize,
            cpu: self.p.smp_processor_id() as u32,
            pid: self.p.current().pid,
            when: self.p.now_ns(),
            _pad: 0,
        };
        // SAFETY: as in `track`.
        unsafe { ptr::write_unaligned(at as *mut Track, t) };
    }

    /// `init_object()`: red zones to `active`/inactive, free objects poisoned.
    pub(super) fn init_object(&self, s: &KmemCache, obj: usize, active: bool) {
        let f = s.geo.flags;
        let val = if active {
            SLUB_RED_ACTIVE
        } else {
            SLUB_RED_INACTIVE
        };
        // The slot of `obj` belongs to the cache and is not handed out while
        // its debug bytes are laid out (the SAFETY of the three writes).
        if f.contains(SLAB_RED_ZONE) {
            // SAFETY: the red zone before the object, inside the slot.
            unsafe {
                ptr::write_bytes(
                    (obj - s.geo.red_left_pad) as *mut u8,
                    val,
                    s.geo.red_left_pad,
                )
            };
        }
        if s.geo.object_poison() && !active {
            // SAFETY: the object's own bytes, inside the slot.
            unsafe {
                ptr::write_bytes(obj as *mut u8, POISON_FREE, s.geo.object_size - 1);
                *((obj + s.geo.object_size - 1) as *mut u8) = POISON_END;
            }
        }
        if f.contains(SLAB_RED_ZONE) {
            // SAFETY: the red zone after the object, inside the slot.
            unsafe {
                ptr::write_bytes(
                    (obj + s.geo.object_size) as *mut u8,
                    val,
                    s.geo.inuse - s.geo.object_size,
                )
            };
        }
    }

    /// `check_object()`: the first damaged range of `obj`, if any, as
    /// (what, first bad byte address, its value, expected value).
    pub(super) fn check_object(
        &self,
        s: &KmemCache,
        obj: usize,
        active: bool,
    ) -> Option<(Damage, usize, u8, u8)> {
        let f = s.geo.flags;
        let val = if active {
            SLUB_RED_ACTIVE
        } else {
            SLUB_RED_INACTIVE
        };
        let scan = |start: usize, len: usize, want: u8| -> Option<(usize, u8)> {
            (start..start + len).find_map(|a| {
                // SAFETY: inside the object's slot, which is ours.
                let b = unsafe { *(a as *const u8) };
                (b != want).then_some((a, b))
            })
        };
        if f.contains(SLAB_RED_ZONE) {
            if let Some((a, b)) = scan(obj - s.geo.red_left_pad, s.geo.red_left_pad, val) {
                return Some((Damage::LeftRedzone, a, b, val));
            }
            if let Some((a, b)) = scan(
                obj + s.geo.object_size,
                s.geo.inuse - s.geo.object_size,
                val,
            ) {
                return Some((Damage::RightRedzone, a, b, val));
            }
        }
        if s.geo.object_poison() && !active {
            if let Some((a, b)) = scan(obj, s.geo.object_size - 1, POISON_FREE) {
                return Some((Damage::Poison, a, b, POISON_FREE));
            }
            if let Some((a, b)) = scan(obj + s.geo.object_size - 1, 1, POISON_END) {
                return Some((Damage::Poison, a, b, POISON_END));
            }
        }
        None
    }

    pub(super) fn report_damage(
        &self,
        s: &KmemCache,
        page: &Page,
        obj: usize,
        d: (Damage, usize, u8, u8),
    ) {
        let base = self.page_address(page).map_or(0, |a| a.as_ptr() as usize);
        let (what, at, got, want) = d;
        slab_bug(&self.p, s, format_args!("{}", what.what()));
        report!(
            &self.p,
            Level::Err,
            "0x{:x} @offset={}. First byte 0x{:x} instead of 0x{:x}",
            at,
            at.wrapping_sub(obj) as isize,
            got,
            want
        );
        for free in [false, true] {
            self.print_track(s, obj, free);
        }
        report!(
            &self.p,
            Level::Err,
            "Slab 0x{:x} objects={} used={} fp=0x{:x} flags={:#x}",
            self.page_to_pfn(page),
            page.slab_objects(),
            page.slab_inuse(),
            page.slab_freelist(),
            page.flags()
        );
        report!(
            &self.p,
            Level::Err,
            "Object 0x{:x} @offset={}",
            obj,
            obj - base
        );
    }

    /// `alloc_debug_processing()`: check the object is intact, then lay out
    /// active red zones and record the caller. A damaged free object is
    /// reported and its slab taken out of use ("Marking all objects used").
    pub(super) fn alloc_debug(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        nid: usize,
        caller: &'static Location<'static>,
    ) -> Result<usize> {
        loop {
            let mut one = [0usize; 1];
            self.refill_from_slabs(s, gfp, nid, &mut one)?;
            let obj = one[0];
            // The object is ours, but a racing (double) free of it by
            // someone else may have emptied its slab and given it back
            // already: then it is not ours any more; take another.
            let Some(page) = self.virt_to_slab(obj as *const u8) else {
                continue;
            };
            if let Some(d) = self.check_object(s, obj, false) {
                self.report_damage(s, page, obj, d);
                report!(
                    &self.p,
                    Level::Err,
                    "FIX {}: Marking all objects used",
                    s.name()
                );
                let mut l =
                    IrqSpinGuard::lock(&self.p, &s.node(page.nid().min(s.nr_nodes - 1)).lists);
                page.set_slab_freelist(0);
                page.set_slab_counters(page.slab_objects(), page.slab_objects());
                let mm = self.mem_map();
                let Some(idx) = mm.index_of(page) else {
                    continue;
                };
                if l.partial.iter(&mm).any(|i| i == idx) {
                    l.partial.remove(&mm, idx);
                    l.nr_partial -= 1;
                    l.full.push_head(&mm, idx);
                }
                continue;
            }
            self.init_object(s, obj, true);
            self.set_track(s, obj, false, caller);
            return Ok(obj);
        }
    }

    /// Whether `obj` is on its slab's freelist (`on_freelist()`).
    pub(super) fn on_freelist(&self, s: &KmemCache, page: &Page, obj: usize) -> bool {
        let base = self.page_address(page).map_or(0, |a| a.as_ptr() as usize);
        let n = page.slab_objects();
        let mut fl = page.slab_freelist();
        let mut steps = 0;
        while fl != 0 && steps <= n {
            let o = base + fl as usize - 1;
            if o == obj {
                return true;
            }
            let next = s.get_fp(o);
            fl = if next == 0 || s.obj_index(base, n, next).is_none() {
                0
            } else {
                (next - base + 1) as u32
            };
            steps += 1;
        }
        false
    }

    /// `free_debug_processing()`: refuse double frees and objects whose red
    /// zones were overwritten, record the caller, poison, and free.
    ///
    /// Everything about the slab is read under the node's `list_lock`: the
    /// caller's lookup ran before it, and a racing free of the same object
    /// (a double free from another CPU) may have emptied the slab, which
    /// was then given back and perhaps reused, in between. The node is the
    /// one of the object's page frame, which never changes.
    pub(super) fn free_debug(
        &self,
        s: &KmemCache,
        obj: usize,
        caller: &'static Location<'static>,
    ) -> Result<()> {
        let nid = self
            .dm
            .pa(obj)
            .and_then(|pa| self.pfn_to_nid(pa >> crate::PAGE_SHIFT))
            .unwrap_or(0)
            .min(s.nr_nodes - 1);
        let mut discard = PageList::new();
        {
            let mut l = IrqSpinGuard::lock(&self.p, &s.node(nid).lists);
            let Some(slab) = self.slab_of(obj as *const u8).filter(|sl| {
                sl.page.slab_cache_addr() == s as *const KmemCache as usize
                    && sl.nid.min(s.nr_nodes - 1) == nid
                    && s.is_obj_start(*sl, obj as *const u8)
            }) else {
                drop(l);
                return self.freed_meanwhile(s, obj, caller);
            };
            let page = slab.page;
            if self.on_freelist(s, page, obj) {
                drop(l);
                let base = self.page_address(page).map_or(0, |a| a.as_ptr() as usize);
                slab_bug(&self.p, s, format_args!("Object already free"));
                report!(
                    &self.p,
                    Level::Err,
                    "Object 0x{:x} @offset={} freed again from {}",
                    obj,
                    obj - base,
                    caller
                );
                self.print_track(s, obj, true);
                return Err(Error::BadState);
            }
            if let Some(d) = self.check_object(s, obj, true) {
                drop(l);
                self.report_damage(s, page, obj, d);
                report!(
                    &self.p,
                    Level::Err,
                    "FIX {}: Object at 0x{:x} not freed",
                    s.name(),
                    obj
                );
                return Err(Error::BadState);
            }
            self.set_track(s, obj, true, caller);
            self.init_object(s, obj, false);
            let freed = self.free_to_slab_locked(s, &mut l, slab, obj, &mut discard);
            debug_assert!(freed, "the checks above found the object on no freelist");
        }
        self.discard_all(s, discard);
        Ok(())
    }
}
