//! Shrinkers: caches outside the page allocator that give memory back under
//! pressure (`mm/shrinker.c`, `include/linux/shrinker.h`).
//!
//! A shrinker has two callbacks, as Linux's `struct shrinker`:
//! [`Shrinker::count_objects`] says how many objects could be freed, and
//! [`Shrinker::scan_objects`] frees up to [`ShrinkControl::nr_to_scan`] of
//! them and returns how many it freed (or [`SHRINK_STOP`]). Reclaim
//! ([`crate::vmscan`]) calls every registered shrinker with a share of its
//! objects that grows as the reclaim priority drops, in Linux's arithmetic
//! (`do_shrink_slab()`): `delta = (freeable >> priority) * 4 / seeks`, work
//! carried over in `nr_deferred`, scanned in batches of `batch`
//! ([`SHRINK_BATCH`] by default).
//!
//! ## What kmem adds
//!
//! * A shrinker *declares* whether it needs `__GFP_FS` or `__GFP_IO`
//!   ([`SHRINKER_NEEDS_FS`], [`SHRINKER_NEEDS_IO`]). In Linux each shrinker
//!   checks `sc->gfp_mask` itself (`super_cache_scan()` gives up without
//!   `__GFP_FS`); kmem skips such a shrinker for reclaim under `GFP_NOFS` /
//!   `GFP_NOIO` (or inside a `memalloc_nofs`/`noio` scope) without calling
//!   it, the effect of Linux's early `SHRINK_STOP`. The callbacks still see
//!   the mask and may check finer conditions.
//! * Registration is by value: [`Kmem::register_shrinker`] moves the
//!   shrinker into memory kmem allocates for it (Linux's `shrinker_alloc()`
//!   kzallocs the struct), so no caller-owned memory is referenced after the
//!   caller forgets it. It returns a [`ShrinkerId`]; unregistering an
//!   unknown or stale id is reported and refused. Unregistering waits for
//!   running scans of that shrinker to finish (Linux waits for an RCU grace
//!   period), then drops the shrinker.
//! * Bad callbacks are reported: a scan that claims to have freed more
//!   objects than its count said it had is reported once per call and
//!   clamped, so reclaim's accounting stays true.
//!
//! The table is fixed-size ([`MAX_SHRINKERS`]): the core has no heap.

use crate::gfp::{self, Gfp};
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result};
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

/// `SHRINK_STOP`: [`Shrinker::scan_objects`] can make no progress now.
pub const SHRINK_STOP: u64 = !0 - 1;
/// `SHRINK_EMPTY`: [`Shrinker::count_objects`] has nothing at all.
pub const SHRINK_EMPTY: u64 = !0 - 2;
/// `DEFAULT_SEEKS`: the cost of recreating an object, relative to a page.
pub const DEFAULT_SEEKS: u32 = 2;
/// `SHRINK_BATCH`: objects per `scan_objects` call by default.
pub const SHRINK_BATCH: u64 = 128;
/// How many shrinkers a machine can have registered at once.
pub const MAX_SHRINKERS: usize = 64;

/// The shrinker must not run when reclaim may not enter filesystems.
pub const SHRINKER_NEEDS_FS: u32 = 1 << 0;
/// The shrinker must not run when reclaim may not start I/O.
pub const SHRINKER_NEEDS_IO: u32 = 1 << 1;
/// Its objects are pages on an LRU list (a page cache), not slab objects:
/// what reclaim scans of them counts as `pgscan_kswapd`/`pgscan_direct`,
/// as Linux's `shrink_lruvec()` counts its scanning, not as
/// `slabs_scanned`.
pub const SHRINKER_LRU: u32 = 1 << 2;

/// `struct shrink_control`: what one callback is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkControl {
    /// The reclaim's GFP mask (narrowed by the task's scopes).
    pub gfp_mask: Gfp,
    /// The node being reclaimed.
    pub nid: usize,
    /// How many objects to scan in this call.
    pub nr_to_scan: u64,
    /// How many objects the callback looked at (preset to `nr_to_scan`; a
    /// callback may lower it).
    pub nr_scanned: u64,
}

/// The callbacks of a shrinker.
///
/// Both run in process context outside any CPU-local section, from direct
/// reclaim or kswapd, possibly on two CPUs at once. They may allocate, but
/// reclaim will not recurse from inside them (the task has `PF_MEMALLOC`).
pub trait Shrinker<P: Platform>: Send + Sync {
    /// How many objects could be freed now (`count_objects`); 0 or
    /// [`SHRINK_EMPTY`] when none.
    fn count_objects(&self, k: &Kmem<P>, sc: &ShrinkControl) -> u64;

    /// Free up to `sc.nr_to_scan` objects (`scan_objects`); return how many
    /// were freed, or [`SHRINK_STOP`].
    fn scan_objects(&self, k: &Kmem<P>, sc: &mut ShrinkControl) -> u64;
}

/// How a shrinker is registered: its name and tuning (`shrinker_alloc()`
/// arguments plus the `seeks` and `batch` fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkerConfig {
    /// Name, as in `/sys/kernel/debug/shrinker/`.
    pub name: &'static str,
    /// `SHRINKER_NEEDS_*` bits.
    pub flags: u32,
    /// `seeks`; [`DEFAULT_SEEKS`] usually. 0 means "cheap to recreate":
    /// half of the objects each round.
    pub seeks: u32,
    /// `batch`; 0 means [`SHRINK_BATCH`].
    pub batch: u64,
}

impl ShrinkerConfig {
    /// A shrinker named `name` with `flags` and default seeks and batch.
    pub const fn new(name: &'static str, flags: u32) -> Self {
        ShrinkerConfig {
            name,
            flags,
            seeks: DEFAULT_SEEKS,
            batch: 0,
        }
    }
}

/// A registered shrinker, as [`Kmem::register_shrinker`] returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShrinkerId {
    slot: u16,
    gen: u32,
}

/// A registered shrinker with the machine's type erased, so that the table
/// (and so `Kmem<P>`) does not mention `P` and stays covariant in it.
trait Erased: Send + Sync {
    /// # Safety
    /// `k` points to the live `Kmem<P>` the shrinker was registered with.
    unsafe fn count(&self, k: *const (), sc: &ShrinkControl) -> u64;
    /// # Safety
    /// As [`count`](Self::count).
    unsafe fn scan(&self, k: *const (), sc: &mut ShrinkControl) -> u64;
}

struct Typed<P: Platform, T> {
    t: T,
    _machine: PhantomData<fn(&Kmem<P>)>,
}

impl<P: Platform, T: Shrinker<P>> Erased for Typed<P, T> {
    unsafe fn count(&self, k: *const (), sc: &ShrinkControl) -> u64 {
        // SAFETY: the caller passes the machine this shrinker belongs to.
        self.t.count_objects(unsafe { &*(k as *const Kmem<P>) }, sc)
    }
    unsafe fn scan(&self, k: *const (), sc: &mut ShrinkControl) -> u64 {
        // SAFETY: as above.
        self.t.scan_objects(unsafe { &*(k as *const Kmem<P>) }, sc)
    }
}

struct Slot {
    cfg: ShrinkerConfig,
    obj: Option<NonNull<dyn Erased>>,
    /// Bytes kmem allocated for `obj` (0 for a zero-sized shrinker).
    bytes: usize,
    gen: u32,
    /// Unregistering: no new scans start.
    dying: bool,
}

/// Per-machine shrinker state.
pub(crate) struct ShrinkerTable {
    slots: spin::Mutex<[Slot; MAX_SHRINKERS]>,
    users: [AtomicU32; MAX_SHRINKERS],
    deferred: [AtomicU64; MAX_SHRINKERS],
    gen: AtomicU32,
    /// Objects scanned by all shrinkers (`slabs_scanned`).
    pub(crate) scanned: AtomicU64,
}

impl ShrinkerTable {
    pub(crate) fn new() -> Self {
        ShrinkerTable {
            slots: spin::Mutex::new(core::array::from_fn(|_| Slot {
                cfg: ShrinkerConfig::new("", 0),
                obj: None,
                bytes: 0,
                gen: 0,
                dying: false,
            })),
            users: core::array::from_fn(|_| AtomicU32::new(0)),
            deferred: core::array::from_fn(|_| AtomicU64::new(0)),
            gen: AtomicU32::new(1),
            scanned: AtomicU64::new(0),
        }
    }
}

impl Drop for ShrinkerTable {
    fn drop(&mut self) {
        for s in self.slots.get_mut().iter_mut() {
            if let Some(o) = s.obj.take() {
                // SAFETY: the machine is going away: no scan runs (we have
                // `&mut`), and `o` was written by `register_shrinker` and not
                // dropped since. Its memory belongs to the machine and goes
                // with it, so only the value is dropped.
                unsafe { core::ptr::drop_in_place(o.as_ptr()) };
            }
        }
    }
}

/// Whether reclaim with `gfp` may call a shrinker with `flags`.
pub(crate) fn shrinker_allowed(flags: u32, gfp: Gfp) -> bool {
    (flags & SHRINKER_NEEDS_FS == 0 || gfp.contains(gfp::__GFP_FS))
        && (flags & SHRINKER_NEEDS_IO == 0 || gfp.contains(gfp::__GFP_IO))
}

impl<P: Platform> Kmem<P> {
    fn shrinkers(&self) -> &ShrinkerTable {
        &self.reclaim.shrinkers
    }

    /// `shrinker_alloc()` + `shrinker_register()`: make `shrinker` a reclaim
    /// target. kmem moves it into memory of its own (allocated with
    /// `GFP_KERNEL`); it lives until
    /// [`unregister_shrinker`](Self::unregister_shrinker) or the machine's end.
    ///
    /// Fails with [`Error::NoSpace`] when [`MAX_SHRINKERS`] are registered,
    /// [`Error::NoMemory`] when its memory cannot be allocated.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 8 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// use kmem::shrinker::*;
    /// use kmem::{Kmem, Platform};
    /// struct Nothing;
    /// impl<P: Platform> Shrinker<P> for Nothing {
    ///     fn count_objects(&self, _: &Kmem<P>, _: &ShrinkControl) -> u64 { 0 }
    ///     fn scan_objects(&self, _: &Kmem<P>, _: &mut ShrinkControl) -> u64 { SHRINK_STOP }
    /// }
    /// let id = k.register_shrinker(ShrinkerConfig::new("nothing", 0), Nothing).unwrap();
    /// k.unregister_shrinker(id).unwrap();
    /// assert!(k.unregister_shrinker(id).is_err()); // reported: unknown shrinker
    /// ```
    pub fn register_shrinker<T: Shrinker<P> + 'static>(
        &self,
        cfg: ShrinkerConfig,
        shrinker: T,
    ) -> Result<ShrinkerId> {
        let size = core::mem::size_of::<Typed<P, T>>();
        let align = core::mem::align_of::<Typed<P, T>>();
        // kmalloc objects of a power-of-two size are aligned to it.
        let bytes = if size == 0 {
            0
        } else if align > 8 {
            size.max(align).next_power_of_two()
        } else {
            size
        };
        let mem: NonNull<Typed<P, T>> = if bytes == 0 {
            NonNull::dangling()
        } else {
            self.kmalloc(bytes, gfp::GFP_KERNEL)?.cast()
        };
        // SAFETY: `mem` is fresh, at least `size` bytes and aligned for T
        // (or dangling and aligned for a zero-sized T).
        unsafe {
            mem.as_ptr().write(Typed {
                t: shrinker,
                _machine: PhantomData,
            })
        };
        let obj: NonNull<dyn Erased + '_> = mem;
        // SAFETY: only the bound of the trait object changes. The value
        // borrows nothing (T: 'static); it names `P` only as a type, and is
        // called only with this machine, which owns the table it sits in.
        let obj: NonNull<dyn Erased> = unsafe { core::mem::transmute(obj) };
        let mut slots = self.shrinkers().slots.lock();
        let Some(i) = slots.iter().position(|s| s.obj.is_none()) else {
            drop(slots);
            // SAFETY: written above, never shared.
            unsafe { core::ptr::drop_in_place(obj.as_ptr()) };
            if bytes != 0 {
                // SAFETY: our own kmalloc object, unused from now on.
                let _ = unsafe { self.kfree(mem.as_ptr().cast()) };
            }
            report!(
                &self.p,
                Level::Err,
                "shrinker {}: cannot register, all {} shrinker slots are in use",
                cfg.name,
                MAX_SHRINKERS
            );
            return Err(Error::NoSpace);
        };
        let gen = self.shrinkers().gen.fetch_add(1, Relaxed);
        slots[i] = Slot {
            cfg: ShrinkerConfig {
                batch: if cfg.batch == 0 {
                    SHRINK_BATCH
                } else {
                    cfg.batch
                },
                ..cfg
            },
            obj: Some(obj),
            bytes,
            gen,
            dying: false,
        };
        self.shrinkers().deferred[i].store(0, Relaxed);
        Ok(ShrinkerId {
            slot: i as u16,
            gen,
        })
    }

    /// `shrinker_free()`: stop calling the shrinker, wait for scans of it
    /// that are running, drop it and free its memory.
    ///
    /// An id that is not registered (never was, or already unregistered) is
    /// reported and refused with [`Error::InvalidArgument`].
    pub fn unregister_shrinker(&self, id: ShrinkerId) -> Result<()> {
        let t = self.shrinkers();
        let i = usize::from(id.slot);
        {
            let mut slots = t.slots.lock();
            match slots.get_mut(i) {
                Some(s) if s.obj.is_some() && s.gen == id.gen && !s.dying => {
                    s.dying = true;
                }
                _ => {
                    drop(slots);
                    report!(
                        &self.p,
                        Level::Warning,
                        "WARNING: unregister_shrinker: unknown shrinker (slot {}, generation {})",
                        id.slot,
                        id.gen
                    );
                    return Err(Error::InvalidArgument);
                }
            }
        }
        // Wait for running scans (they hold a use count taken under the
        // lock before `dying` was set).
        let chan = &t.users[i] as *const AtomicU32 as usize;
        while t.users[i].load(Acquire) != 0 {
            self.p
                .wait_event(chan, &mut || t.users[i].load(Acquire) == 0, Some(1_000_000));
            core::hint::spin_loop();
        }
        let (obj, bytes) = {
            let mut slots = t.slots.lock();
            let s = &mut slots[i];
            s.dying = false;
            (s.obj.take(), core::mem::replace(&mut s.bytes, 0))
        };
        if let Some(o) = obj {
            // SAFETY: no scan uses it (users is 0 and none can start), it was
            // written by register_shrinker and is dropped once, here.
            unsafe { core::ptr::drop_in_place(o.as_ptr()) };
            if bytes != 0 {
                // SAFETY: kmem's own kmalloc object holding the shrinker,
                // dropped above and unused from now on.
                let _ = unsafe { self.kfree(o.as_ptr() as *mut u8) };
            }
        }
        Ok(())
    }

    /// Number of registered shrinkers.
    pub fn nr_shrinkers(&self) -> usize {
        self.shrinkers()
            .slots
            .lock()
            .iter()
            .filter(|s| s.obj.is_some() && !s.dying)
            .count()
    }

    /// Sum of `count_objects` over the shrinkers reclaim with `gfp` may
    /// call on node `nid`.
    pub fn shrinker_count(&self, gfp: Gfp, nid: usize) -> u64 {
        let mut total = 0u64;
        self.for_each_shrinker(gfp, |_, _, s| {
            let sc = ShrinkControl {
                gfp_mask: gfp,
                nid,
                nr_to_scan: 0,
                nr_scanned: 0,
            };
            // SAFETY: `self` is the machine the shrinker was registered with.
            let n = unsafe { s.count(self as *const Self as *const (), &sc) };
            if n != SHRINK_EMPTY {
                total = total.saturating_add(n);
            }
        });
        total
    }

    /// Call `f` for every live shrinker reclaim with `gfp` may use, with
    /// its slot, config and callbacks, holding a use count, not the lock.
    fn for_each_shrinker(&self, gfp: Gfp, mut f: impl FnMut(usize, &ShrinkerConfig, &dyn Erased)) {
        let t = self.shrinkers();
        for i in 0..MAX_SHRINKERS {
            let (cfg, obj) = {
                let slots = t.slots.lock();
                let s = &slots[i];
                match s.obj {
                    Some(o) if !s.dying && shrinker_allowed(s.cfg.flags, gfp) => {
                        t.users[i].fetch_add(1, Acquire);
                        (s.cfg, o)
                    }
                    _ => continue,
                }
            };
            // SAFETY: the use count taken under the lock keeps `obj` alive:
            // unregister waits for it to drop to 0 before dropping `obj`.
            f(i, &cfg, unsafe { obj.as_ref() });
            if t.users[i].fetch_sub(1, Release) == 1 {
                self.p.wake_up(&t.users[i] as *const AtomicU32 as usize);
            }
        }
    }

    /// `shrink_slab()`: run every shrinker that reclaim with `gfp` may use
    /// at `priority` (12 gentlest .. 0 hardest) for node `nid`. Returns the
    /// objects freed. Shrinkers that need `__GFP_FS`/`__GFP_IO` which `gfp`
    /// lacks are skipped.
    pub fn shrink_slab(&self, gfp: Gfp, nid: usize, priority: u32) -> u64 {
        self.shrink_node(gfp, nid, priority, None)
    }

    /// [`shrink_slab`](Self::shrink_slab) for reclaim: what
    /// [`SHRINKER_LRU`] shrinkers scan is added to `pgscan` (kswapd's or
    /// direct reclaim's counter) instead of `slabs_scanned`.
    pub(crate) fn shrink_node(
        &self,
        gfp: Gfp,
        nid: usize,
        priority: u32,
        pgscan: Option<&AtomicU64>,
    ) -> u64 {
        let mut freed = 0u64;
        self.for_each_shrinker(gfp, |i, cfg, s| {
            let sc = ShrinkControl {
                gfp_mask: gfp,
                nid,
                nr_to_scan: 0,
                nr_scanned: 0,
            };
            freed += self.do_shrink_slab(i, cfg, s, sc, priority, pgscan);
        });
        freed
    }

    /// `do_shrink_slab()`: one shrinker's share at `priority`.
    fn do_shrink_slab(
        &self,
        i: usize,
        cfg: &ShrinkerConfig,
        s: &dyn Erased,
        mut sc: ShrinkControl,
        priority: u32,
        pgscan: Option<&AtomicU64>,
    ) -> u64 {
        let t = self.shrinkers();
        let me = self as *const Self as *const ();
        // SAFETY: `self` is the machine the shrinker was registered with.
        let freeable = unsafe { s.count(me, &sc) };
        if freeable == 0 || freeable == SHRINK_EMPTY {
            return 0;
        }
        let nr = t.deferred[i].swap(0, Relaxed);
        let delta = if cfg.seeks == 0 {
            freeable / 2
        } else {
            ((freeable >> priority.min(63)) * 4) / u64::from(cfg.seeks)
        };
        let mut total_scan = nr.saturating_add(delta).min(freeable.saturating_mul(2));
        let batch = cfg.batch;
        let mut freed = 0u64;
        let mut scanned = 0u64;
        while total_scan >= batch || total_scan >= freeable {
            let n = batch.min(total_scan);
            sc.nr_to_scan = n;
            sc.nr_scanned = n;
            // SAFETY: as above.
            let ret = unsafe { s.scan(me, &mut sc) };
            if ret == SHRINK_STOP {
                break;
            }
            let ret = if ret > freeable {
                report!(
                    &self.p,
                    Level::Warning,
                    "WARNING: shrinker {}: scan_objects freed {} objects, more than the {} count_objects reported; counting {}",
                    cfg.name,
                    ret,
                    freeable,
                    freeable.min(n)
                );
                freeable.min(n)
            } else {
                ret
            };
            freed += ret;
            let step = sc.nr_scanned.clamp(1, n);
            total_scan -= step;
            scanned += step;
            if total_scan == 0 {
                break;
            }
        }
        // Linux carries what was not scanned over to the next round.
        let next = total_scan.min(freeable);
        if next > 0 {
            t.deferred[i].fetch_add(next, Relaxed);
        }
        match pgscan {
            Some(c) if cfg.flags & SHRINKER_LRU != 0 => c.fetch_add(scanned, Relaxed),
            _ => t.scanned.fetch_add(scanned, Relaxed),
        };
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::ArenaPlatform;
    use core::sync::atomic::AtomicU64;

    struct Liar<'a> {
        scans: &'a AtomicU64,
    }

    /// Claims to free 1000 objects of the 10 it has.
    impl<P: Platform> Shrinker<P> for Liar<'static> {
        fn count_objects(&self, _: &Kmem<P>, _: &ShrinkControl) -> u64 {
            10
        }
        fn scan_objects(&self, _: &Kmem<P>, _: &mut ShrinkControl) -> u64 {
            self.scans.fetch_add(1, Relaxed);
            1000
        }
    }

    static SCANS: AtomicU64 = AtomicU64::new(0);

    #[test]
    fn a_shrinker_that_claims_more_than_it_had_is_reported_and_clamped() {
        let mut mem = alloc_mem();
        let k = Kmem::boot_arena(&mut mem, 1).unwrap();
        let p: &ArenaPlatform<'_> = k.platform();
        let id = k
            .register_shrinker(ShrinkerConfig::new("liar", 0), Liar { scans: &SCANS })
            .unwrap();
        let freed = k.shrink_slab(gfp::GFP_KERNEL, 0, 0);
        assert!(SCANS.load(Relaxed) > 0);
        assert!(freed <= 10 * 2, "clamped to what it had: {freed}");
        assert!(p.reported(
            "WARNING: shrinker liar: scan_objects freed 1000 objects, more than the 10 count_objects reported"
        ));
        k.unregister_shrinker(id).unwrap();
    }

    #[test]
    fn unregistering_an_unknown_shrinker_is_refused() {
        let mut mem = alloc_mem();
        let k = Kmem::boot_arena(&mut mem, 1).unwrap();
        let p: &ArenaPlatform<'_> = k.platform();
        let id = k
            .register_shrinker(ShrinkerConfig::new("liar", 0), Liar { scans: &SCANS })
            .unwrap();
        assert_eq!(k.nr_shrinkers(), 1);
        k.unregister_shrinker(id).unwrap();
        assert_eq!(k.nr_shrinkers(), 0);
        assert_eq!(k.unregister_shrinker(id), Err(Error::InvalidArgument));
        assert!(p.reported("WARNING: unregister_shrinker: unknown shrinker"));
        // A stale id does not unregister a newer shrinker in the same slot.
        let id2 = k
            .register_shrinker(ShrinkerConfig::new("liar2", 0), Liar { scans: &SCANS })
            .unwrap();
        assert_eq!(k.unregister_shrinker(id), Err(Error::InvalidArgument));
        assert_eq!(k.nr_shrinkers(), 1);
        k.unregister_shrinker(id2).unwrap();
    }

    #[test]
    fn shrinkers_needing_fs_or_io_are_skipped_without_them() {
        assert!(shrinker_allowed(SHRINKER_NEEDS_FS, gfp::GFP_KERNEL));
        assert!(!shrinker_allowed(SHRINKER_NEEDS_FS, gfp::GFP_NOFS));
        assert!(shrinker_allowed(SHRINKER_NEEDS_IO, gfp::GFP_NOFS));
        assert!(!shrinker_allowed(SHRINKER_NEEDS_IO, gfp::GFP_NOIO));
        assert!(shrinker_allowed(0, gfp::GFP_NOIO));
    }

    fn alloc_mem() -> std::vec::Vec<u8> {
        std::vec![0u8; 8 << 20]
    }
}
