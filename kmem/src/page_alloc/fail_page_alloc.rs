//! fail_page_alloc (`mm/fail_page_alloc.c`): injected page allocation
//! failures, on the common fault attribute of [`crate::fault_inject`],
//! with fail_page_alloc's own knobs (`ignore-gfp-wait`,
//! `ignore-gfp-highmem`, `min-order`) and the hook the page allocator calls
//! (`should_fail_alloc_page()`).

use crate::fault_inject::{Fault, FaultAttr, KnobValue};
use crate::gfp::{self, Gfp};
use crate::platform::Platform;
use crate::{Kmem, Result};
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

/// fail_page_alloc's attribute and its own knobs (`mm/fail_page_alloc.c`).
pub(crate) struct FailPageAllocAttr {
    pub(crate) attr: FaultAttr,
    pub(crate) ignore_gfp_wait: AtomicBool,
    pub(crate) ignore_gfp_highmem: AtomicBool,
    pub(crate) min_order: AtomicU32,
}

impl FailPageAllocAttr {
    /// Linux's initial values: off, `ignore-gfp-wait` and
    /// `ignore-gfp-highmem` on, `min-order` 1.
    pub(crate) const fn new() -> Self {
        FailPageAllocAttr {
            attr: FaultAttr::new("fail_page_alloc"),
            ignore_gfp_wait: AtomicBool::new(true),
            ignore_gfp_highmem: AtomicBool::new(true),
            min_order: AtomicU32::new(1),
        }
    }
}

/// fail_page_alloc's knobs on one machine ([`Kmem::fail_page_alloc`]).
/// The common ones come through [`Fault`], which this dereferences to.
pub struct FailPageAlloc<'a, P: Platform> {
    common: Fault<'a, P>,
    a: &'a FailPageAllocAttr,
}

impl<'a, P: Platform> core::ops::Deref for FailPageAlloc<'a, P> {
    type Target = Fault<'a, P>;
    fn deref(&self) -> &Fault<'a, P> {
        &self.common
    }
}

impl<P: Platform> FailPageAlloc<'_, P> {
    /// `ignore-gfp-wait`: exempt requests that may block (default on).
    pub fn ignore_gfp_wait(&self) -> bool {
        self.a.ignore_gfp_wait.load(Relaxed)
    }

    /// Set `ignore-gfp-wait`.
    pub fn set_ignore_gfp_wait(&self, on: bool) {
        self.a.ignore_gfp_wait.store(on, Relaxed);
    }

    /// `ignore-gfp-highmem`: exempt `__GFP_HIGHMEM` requests (default on).
    pub fn ignore_gfp_highmem(&self) -> bool {
        self.a.ignore_gfp_highmem.load(Relaxed)
    }

    /// Set `ignore-gfp-highmem`.
    pub fn set_ignore_gfp_highmem(&self, on: bool) {
        self.a.ignore_gfp_highmem.store(on, Relaxed);
    }

    /// `min-order`: orders below it are exempt (default 1).
    pub fn min_order(&self) -> u32 {
        self.a.min_order.load(Relaxed)
    }

    /// Set `min-order`.
    pub fn set_min_order(&self, order: u32) {
        self.a.min_order.store(order, Relaxed);
    }

    /// Read a knob as `cat /sys/kernel/debug/fail_page_alloc/<knob>` would;
    /// one of [`FAIL_PAGE_ALLOC_KNOBS`](crate::fault_inject::FAIL_PAGE_ALLOC_KNOBS), else a report and
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub fn read(&self, knob: &str) -> Result<KnobValue> {
        if let Some(v) = self.read_common(knob) {
            return Ok(v);
        }
        match knob {
            "ignore-gfp-wait" => Ok(KnobValue::Bool(self.ignore_gfp_wait())),
            "ignore-gfp-highmem" => Ok(KnobValue::Bool(self.ignore_gfp_highmem())),
            "min-order" => Ok(KnobValue::Unsigned(u64::from(self.min_order()))),
            _ => Err(self.no_knob(knob)),
        }
    }

    /// Write a knob as `echo <value> > /sys/kernel/debug/fail_page_alloc/<knob>`
    /// would. An unknown knob, a value that does not parse or is out of
    /// range is reported and refused with [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub fn write(&self, knob: &str, value: &str) -> Result<()> {
        if let Some(r) = self.write_common(knob, value) {
            return r;
        }
        match knob {
            "ignore-gfp-wait" => self
                .boolean(knob, value)
                .map(|b| self.set_ignore_gfp_wait(b)),
            "ignore-gfp-highmem" => self
                .boolean(knob, value)
                .map(|b| self.set_ignore_gfp_highmem(b)),
            "min-order" => self.unsigned(knob, value).and_then(|v| {
                u32::try_from(v)
                    .map(|o| self.set_min_order(o))
                    .map_err(|_| self.bad_value(knob, value, "a u32"))
            }),
            _ => Err(self.no_knob(knob)),
        }
    }
}

impl<P: Platform> Kmem<P> {
    /// fail_page_alloc's knobs (`/sys/kernel/debug/fail_page_alloc/`).
    pub fn fail_page_alloc(&self) -> FailPageAlloc<'_, P> {
        let a = &self.fail_page_alloc_attr;
        FailPageAlloc {
            common: Fault {
                p: &self.p,
                attr: &a.attr,
            },
            a,
        }
    }

    /// As [`slab_hooks_armed`](Self::slab_hooks_armed), for the page
    /// allocator's hooks (`might_alloc`, fail_page_alloc).
    #[inline(always)]
    pub(crate) fn page_hooks_armed(&self) -> bool {
        self.fail_page_alloc_attr.attr.gate()
    }

    /// `should_fail_alloc_page()`: whether fail_page_alloc fails this
    /// request. The page allocator asks before its fast path and returns
    /// [`Error::NoMemory`](crate::Error::NoMemory) when this says yes; a kernel's own code may ask
    /// too. With the attribute off this is one relaxed load.
    #[inline]
    #[track_caller]
    pub fn should_fail_alloc_page(&self, gfp: Gfp, order: u32) -> bool {
        if !self.fail_page_alloc_attr.attr.is_active() {
            return false;
        }
        self.should_fail_alloc_page_slow(gfp, order, Location::caller())
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn should_fail_alloc_page_slow(
        &self,
        gfp: Gfp,
        order: u32,
        caller: &'static Location<'static>,
    ) -> bool {
        let a = &self.fail_page_alloc_attr;
        if order < a.min_order.load(Relaxed)
            || gfp.contains(gfp::__GFP_NOFAIL)
            || (a.ignore_gfp_highmem.load(Relaxed) && gfp.contains(gfp::__GFP_HIGHMEM))
            || (a.ignore_gfp_wait.load(Relaxed) && gfp.contains(gfp::__GFP_DIRECT_RECLAIM))
        {
            return false;
        }
        a.attr.should_fail_ex(
            &self.p,
            1u64 << order.min(63),
            gfp.contains(gfp::__GFP_NOWARN),
            "should_fail_alloc_page",
            caller,
        )
    }
}
