//! failslab (`mm/failslab.c`): injected slab allocation failures, on the
//! common fault attribute of [`crate::fault_inject`], with failslab's own
//! knobs (`ignore-gfp-wait`, `cache-filter`) and the hook the slab
//! allocation path calls (`should_failslab()`).

use super::{KmemCache, SLAB_FAILSLAB};
use crate::fault_inject::{Fault, FaultAttr, KnobValue};
use crate::gfp::{self, Gfp};
use crate::platform::Platform;
use crate::{Error, Kmem, Result};
use core::panic::Location;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// failslab's attribute and its own knobs (`mm/failslab.c`).
pub(crate) struct FailSlabAttr {
    pub(crate) attr: FaultAttr,
    pub(crate) ignore_gfp_wait: AtomicBool,
    pub(crate) cache_filter: AtomicBool,
}

impl FailSlabAttr {
    /// Linux's initial values: off, `ignore-gfp-wait` on.
    pub(crate) const fn new() -> Self {
        FailSlabAttr {
            attr: FaultAttr::new("failslab"),
            ignore_gfp_wait: AtomicBool::new(true),
            cache_filter: AtomicBool::new(false),
        }
    }
}

/// failslab's knobs on one machine ([`Kmem::failslab`]). The common ones
/// come through [`Fault`], which this dereferences to.
pub struct FailSlab<'a, P: Platform> {
    common: Fault<'a, P>,
    a: &'a FailSlabAttr,
}

impl<'a, P: Platform> core::ops::Deref for FailSlab<'a, P> {
    type Target = Fault<'a, P>;
    fn deref(&self) -> &Fault<'a, P> {
        &self.common
    }
}

impl<P: Platform> FailSlab<'_, P> {
    /// `ignore-gfp-wait`: exempt requests that may block (default on).
    pub fn ignore_gfp_wait(&self) -> bool {
        self.a.ignore_gfp_wait.load(Relaxed)
    }

    /// Set `ignore-gfp-wait`.
    pub fn set_ignore_gfp_wait(&self, on: bool) {
        self.a.ignore_gfp_wait.store(on, Relaxed);
    }

    /// `cache-filter`: only caches with `SLAB_FAILSLAB` may fail (default off).
    pub fn cache_filter(&self) -> bool {
        self.a.cache_filter.load(Relaxed)
    }

    /// Set `cache-filter`.
    pub fn set_cache_filter(&self, on: bool) {
        self.a.cache_filter.store(on, Relaxed);
    }

    /// Read a knob as `cat /sys/kernel/debug/failslab/<knob>` would; one of
    /// [`FAILSLAB_KNOBS`](crate::fault_inject::FAILSLAB_KNOBS), else a report and [`Error::InvalidArgument`].
    pub fn read(&self, knob: &str) -> Result<KnobValue> {
        if let Some(v) = self.read_common(knob) {
            return Ok(v);
        }
        match knob {
            "ignore-gfp-wait" => Ok(KnobValue::Bool(self.ignore_gfp_wait())),
            "cache-filter" => Ok(KnobValue::Bool(self.cache_filter())),
            _ => Err(self.no_knob(knob)),
        }
    }

    /// Write a knob as `echo <value> > /sys/kernel/debug/failslab/<knob>`
    /// would. An unknown knob, a value that does not parse or is out of
    /// range is reported and refused with [`Error::InvalidArgument`].
    ///
    /// ```
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// k.failslab().write("cache-filter", "Y\n").unwrap();
    /// assert!(k.failslab().cache_filter());
    /// assert!(k.failslab().write("probability", "101").is_err());
    /// ```
    pub fn write(&self, knob: &str, value: &str) -> Result<()> {
        if let Some(r) = self.write_common(knob, value) {
            return r;
        }
        match knob {
            "ignore-gfp-wait" => self
                .boolean(knob, value)
                .map(|b| self.set_ignore_gfp_wait(b)),
            "cache-filter" => self.boolean(knob, value).map(|b| self.set_cache_filter(b)),
            _ => Err(self.no_knob(knob)),
        }
    }
}

impl<P: Platform> Kmem<P> {
    /// failslab's knobs (`/sys/kernel/debug/failslab/`).
    pub fn failslab(&self) -> FailSlab<'_, P> {
        let a = &self.failslab_attr;
        FailSlab {
            common: Fault {
                p: &self.p,
                attr: &a.attr,
            },
            a,
        }
    }

    /// Whether the slab allocator's pre-allocation hooks (`might_alloc`
    /// under `CONFIG_DEBUG_ATOMIC_SLEEP`, failslab) have anything to do:
    /// one load on the fast path.
    #[inline(always)]
    pub(crate) fn slab_hooks_armed(&self) -> bool {
        self.failslab_attr.attr.gate()
    }

    /// `should_failslab()`: whether failslab fails an allocation from `s`.
    /// The slab allocator asks first on every allocation and fails it with
    /// [`Error::NoMemory`] when this says yes. With the attribute off this
    /// is one relaxed load.
    #[inline]
    #[track_caller]
    pub fn should_failslab(&self, s: &KmemCache, gfp: Gfp) -> bool {
        self.failslab_hook(s, gfp, Location::caller()).is_err()
    }

    /// The slab allocator's hook: `Err(NoMemory)` when failslab fails this
    /// allocation, for the allocation at `caller`.
    #[inline]
    pub(crate) fn failslab_hook(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        caller: &'static Location<'static>,
    ) -> Result<()> {
        if self.failslab_attr.attr.is_active() && self.should_failslab_slow(s, gfp, caller) {
            return Err(Error::NoMemory);
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn should_failslab_slow(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        caller: &'static Location<'static>,
    ) -> bool {
        let a = &self.failslab_attr;
        if gfp.contains(gfp::__GFP_NOFAIL)
            || (a.ignore_gfp_wait.load(Relaxed) && gfp.contains(gfp::__GFP_DIRECT_RECLAIM))
            || (a.cache_filter.load(Relaxed) && !s.flags().contains(SLAB_FAILSLAB))
        {
            return false;
        }
        a.attr.should_fail_ex(
            &self.p,
            s.object_size() as u64,
            gfp.contains(gfp::__GFP_NOWARN),
            "should_failslab",
            caller,
        )
    }
}
