//! Free page reporting (`mm/page_reporting.c`): telling the platform which
//! large free blocks it may take the memory of.
//!
//! A virtio-balloon driver registers with `page_reporting_register()`; from
//! then on, a free that leaves a buddy block of at least
//! `page_reporting_order` (pageblock order by default) calls
//! `page_reporting_notify_free()`, which schedules the reporting work
//! after a delay (`PAGE_REPORTING_DELAY`, 2 s) so that a burst of frees is
//! reported once. The work takes unreported blocks of that order and above
//! off the free lists (isolated, so nobody allocates them meanwhile), hands
//! them to the driver (the host discards their memory), and puts them back
//! marked `PageReported`, at the lists' tails; a block loses the mark when
//! it leaves the free lists. Reporting never touches the memory itself.
//!
//! kmem keeps the same split: [`Kmem::page_reporting_register`] turns it
//! on with an order, a free that crosses it calls
//! [`Platform::page_reporting_notify`] once until the next round (the
//! platform schedules the work, with its own delay), and
//! [`Kmem::page_reporting_process`] runs a round, calling back with each
//! block while its zone lock is not held. kmem-malloc's platform gives the
//! blocks back to the host with `madvise(MADV_DONTNEED)`, so a program's
//! resident memory falls after it frees.
//!
//! A round leaves a zone alone while its free pages are below the low
//! watermark plus one batch (`PAGE_REPORTING_CAPACITY` blocks of the
//! reporting order), as `page_reporting_process_zone()` does, so that the
//! blocks it holds off the lists never make an allocation fail. Linux also
//! bounds a round by a budget; kmem reports every unreported block.
//!
//! Locking: the isolate and putback steps run under the zone lock in a
//! CPU-local section, as every buddy list change does; the callback runs
//! with neither.

use crate::platform::{LocalGuard, Platform};
use crate::{Kmem, PAGEBLOCK_ORDER};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};

/// Blocks taken off the lists per round trip (`PAGE_REPORTING_CAPACITY`).
pub const PAGE_REPORTING_CAPACITY: usize = 32;

/// The reporting state of a machine.
pub(crate) struct PageReporting {
    /// `page_reporting_order`; `u32::MAX` until a driver registers.
    order: AtomicU32,
    /// A notification is out and its round has not started
    /// (`PAGE_REPORTING_REQUESTED`).
    requested: AtomicBool,
}

impl PageReporting {
    pub(crate) const fn new() -> Self {
        PageReporting {
            order: AtomicU32::new(u32::MAX),
            requested: AtomicBool::new(false),
        }
    }
}

impl<P: Platform> Kmem<P> {
    /// `page_reporting_register()`: report free blocks of `order` and
    /// above (`None`: pageblock order, Linux's default) from now on.
    /// Notifies at once, so that what is free already is reported too.
    pub fn page_reporting_register(&self, order: Option<u32>) {
        let order = order.unwrap_or(PAGEBLOCK_ORDER).min(crate::MAX_PAGE_ORDER);
        self.page_reporting.order.store(order, Relaxed);
        self.page_reporting.requested.store(true, Relaxed);
        self.p.page_reporting_notify();
    }

    /// `page_reporting_notify_free()`: a free left a block of `order`.
    #[inline]
    pub(crate) fn page_reporting_notify_free(&self, order: u32) {
        if order >= self.page_reporting.order.load(Relaxed)
            && !self.page_reporting.requested.swap(true, Relaxed)
        {
            self.p.page_reporting_notify();
        }
    }

    /// One reporting round (`page_reporting_process()`): every unreported
    /// free block of the registered order and above, in every zone, is
    /// taken off its list, handed to `report(pfn, order)` with no lock
    /// held, and put back marked reported. Returns the pages reported.
    /// Does nothing before [`page_reporting_register`](Self::page_reporting_register).
    ///
    /// ```
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// // Blocks of 32 pages and more (a small machine: the round keeps the
    /// // low watermark plus 32 such blocks free).
    /// k.page_reporting_register(Some(5));
    /// let mut blocks = 0;
    /// let pages = k.page_reporting_process(&mut |_pfn, _order| blocks += 1);
    /// assert!(blocks > 0 && pages >= 32 * blocks);
    /// // Nothing new is free: the next round reports nothing.
    /// assert_eq!(k.page_reporting_process(&mut |_, _| {}), 0);
    /// ```
    pub fn page_reporting_process(&self, report: &mut dyn FnMut(u64, u32)) -> u64 {
        let min_order = self.page_reporting.order.load(Relaxed);
        if min_order == u32::MAX {
            return 0;
        }
        // Frees from now on notify again.
        self.page_reporting.requested.store(false, Relaxed);
        let mut pages = 0;
        for zone in self.nodes().flat_map(|n| n.zones()) {
            let cx = self.buddy_cx(zone);
            loop {
                let mut batch = [(0u32, 0u32); PAGE_REPORTING_CAPACITY];
                let n = {
                    let _irq = LocalGuard::new(&self.p);
                    let mut area = zone.lock();
                    // Linux's guard: leave the low watermark plus a full
                    // batch free, so that allocations meanwhile do not fail
                    // for the blocks taken off the lists.
                    let reserve =
                        zone.low_wmark() + ((PAGE_REPORTING_CAPACITY as u64) << min_order);
                    if zone.free_pages() < reserve {
                        break;
                    }
                    let n = area.isolate_unreported(&cx, min_order, &mut batch);
                    let isolated: i64 = batch[..n].iter().map(|&(_, o)| 1i64 << o).sum();
                    zone.add_free_locked(-isolated);
                    n
                };
                if n == 0 {
                    break;
                }
                for &(idx, order) in &batch[..n] {
                    report(cx.mm.pfn_of(idx), order);
                    pages += 1u64 << order;
                }
                let _irq = LocalGuard::new(&self.p);
                let mut area = zone.lock();
                for &(idx, order) in &batch[..n] {
                    area.putback_reported(&cx, idx, order);
                    zone.add_free_locked(1 << order);
                }
                drop(area);
                if n < PAGE_REPORTING_CAPACITY {
                    break;
                }
            }
        }
        // The isolated blocks may have been what a waiter needed.
        self.wake_free_page_waiters();
        pages
    }
}

#[cfg(test)]
mod tests {
    use crate::arena::ArenaPlatform;
    use crate::gfp::GFP_KERNEL;
    use crate::page::PG_REPORTED;
    use crate::Kmem;
    use std::vec;
    use std::vec::Vec;

    /// The reporting order of these tests: on a 16 MiB arena, pageblock
    /// order's guard (the low watermark plus 32 blocks of 2 MiB) would
    /// leave nothing to report.
    const ORDER: u32 = 5;

    fn boot(mem: &mut [u8]) -> Kmem<ArenaPlatform<'_>> {
        Kmem::boot_arena(mem, 1).unwrap()
    }

    #[test]
    fn nothing_is_reported_before_a_driver_registers() {
        let mut mem = vec![0u8; 16 << 20];
        let k = boot(&mut mem);
        assert_eq!(k.page_reporting_process(&mut |_, _| panic!("reported")), 0);
    }

    #[test]
    fn free_blocks_are_reported_once_and_stay_allocatable() {
        let mut mem = vec![0u8; 16 << 20];
        let k = boot(&mut mem);
        k.page_reporting_register(Some(ORDER));
        let free0 = k.nr_free_pages();
        let mut seen = Vec::new();
        let pages = k.page_reporting_process(&mut |pfn, order| {
            assert!(order >= ORDER);
            assert_eq!(pfn % (1 << order), 0, "blocks are naturally aligned");
            seen.push((pfn, order));
        });
        assert_eq!(pages, seen.iter().map(|&(_, o)| 1u64 << o).sum::<u64>());
        // Every block came back, marked; the counters agree with the lists.
        assert_eq!(k.nr_free_pages(), free0);
        k.check_free_counts().unwrap();
        for &(pfn, _) in &seen {
            let page = k.pfn_to_page(pfn).unwrap();
            assert!(page.raw_flags() & PG_REPORTED != 0, "pfn {pfn:#x}");
        }
        assert_eq!(k.page_reporting_process(&mut |_, _| panic!("again")), 0);
        // A reported block is allocated like any other and loses the mark.
        let order = seen[0].1;
        let page = k.alloc_pages(GFP_KERNEL, order).unwrap();
        assert_eq!(page.raw_flags() & PG_REPORTED, 0);
        let pfn = k.page_to_pfn(page);
        k.__free_pages(page, order).unwrap();
        // Freed again, it is new to the reporter.
        let mut again = Vec::new();
        k.page_reporting_process(&mut |p, o| again.push((p, o)));
        assert!(again.iter().any(|&(p, o)| p <= pfn && pfn < p + (1 << o)));
        k.check_free_counts().unwrap();
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "thousands of page allocations, minutes under Miri; covered natively, and its unsafe paths run under Miri in the other tests"
    )]
    fn a_zone_near_its_low_watermark_is_left_alone() {
        let mut mem = vec![0u8; 16 << 20];
        let k = boot(&mut mem);
        k.page_reporting_register(Some(ORDER));
        k.page_reporting_process(&mut |_, _| {});
        // An unreported block, freed once memory is short.
        let block = k.alloc_pages(GFP_KERNEL, ORDER).unwrap();
        let below = |margin: u64| {
            k.nodes().flat_map(|n| n.zones()).all(|z| {
                z.free_pages() + margin
                    < z.low_wmark() + ((super::PAGE_REPORTING_CAPACITY as u64) << ORDER)
            })
        };
        let mut held = Vec::new();
        while !below(2 << ORDER) {
            held.push(k.alloc_pages(GFP_KERNEL, 0).unwrap());
        }
        k.__free_pages(block, ORDER).unwrap();
        assert!(below(0));
        assert_eq!(
            k.page_reporting_process(&mut |_, _| panic!("reported below the watermark")),
            0
        );
        // With the memory back, the same block is reported.
        for p in held {
            k.__free_pages(p, 0).unwrap();
        }
        assert!(k.page_reporting_process(&mut |_, _| {}) >= 1 << ORDER);
        k.check_free_counts().unwrap();
    }

    #[test]
    fn a_free_that_leaves_a_big_block_notifies_once() {
        let mut mem = vec![0u8; 16 << 20];
        let k = boot(&mut mem);
        // Below the order: no notification.
        let small = k.alloc_pages(GFP_KERNEL, 0).unwrap();
        k.__free_pages(small, 0).unwrap();
        assert!(!k
            .page_reporting
            .requested
            .load(core::sync::atomic::Ordering::Relaxed));
        k.page_reporting_register(Some(ORDER));
        k.page_reporting_process(&mut |_, _| {});
        assert!(!k
            .page_reporting
            .requested
            .load(core::sync::atomic::Ordering::Relaxed));
        // A max-order block bypasses the per-CPU lists.
        let big = k.alloc_pages(GFP_KERNEL, crate::MAX_PAGE_ORDER).unwrap();
        k.__free_pages(big, crate::MAX_PAGE_ORDER).unwrap();
        assert!(k
            .page_reporting
            .requested
            .load(core::sync::atomic::Ordering::Relaxed));
    }
}
