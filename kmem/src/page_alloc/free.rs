//! The free path (`__free_pages()`, `free_unref_page()`,
//! `free_one_page()` in `mm/page_alloc.c`): the one-test check of an
//! ordinary block, the reference drop as `put_page_testzero()`, the
//! bad-page reports (`bad_page()`), and the hand-off to the per-CPU lists
//! or the buddy lists.

use super::pcp::pcp_allowed_order;
use super::BadPage;
use crate::mmzone::{MigrateType, Zone, MIGRATE_PCPTYPES};
use crate::page::{FlagNames, Page, PG_BUDDY, PG_HEAD, PG_PCP, PG_RESERVED, PG_SLAB, PG_TAIL};
use crate::platform::{Level, LocalGuard, Platform};
use crate::{report, Error, Kmem, Result, MAX_PAGE_ORDER};

impl<P: Platform> Kmem<P> {
    pub(super) fn bad_page(&self, page: &Page, why: BadPage) {
        let pfn = self.mem_map().page_to_pfn(page).unwrap_or(0);
        let task = self.p.current();
        report!(
            &self.p,
            Level::Alert,
            "BUG: Bad page state in process {}  pfn:{:05x}",
            task.comm(),
            pfn
        );
        report!(
            &self.p,
            Level::Alert,
            "page: refcount:{} mapcount:0 mapping:0000000000000000 index:0x0 pfn:{:#x}",
            page.refcount(),
            pfn
        );
        report!(
            &self.p,
            Level::Alert,
            "flags: {:#x}({})",
            page.raw_flags(),
            FlagNames(page.raw_flags())
        );
        match why {
            BadPage::Reserved | BadPage::Slab => report!(
                &self.p,
                Level::Alert,
                "page dumped because: PAGE_FLAGS_CHECK_AT_FREE flag(s) set"
            ),
            BadPage::Free => report!(
                &self.p,
                Level::Alert,
                "page dumped because: VM_BUG_ON_PAGE(page_ref_count(page) == 0)"
            ),
            BadPage::Tail => report!(
                &self.p,
                Level::Alert,
                "page dumped because: VM_BUG_ON_PAGE(PageTail(page))"
            ),
            BadPage::CompoundOrder => report!(
                &self.p,
                Level::Alert,
                "page dumped because: VM_BUG_ON_PAGE(compound && compound_order(page) != order)"
            ),
            BadPage::Order(o) => report!(
                &self.p,
                Level::Alert,
                "page dumped because: freed with order {} but allocated with order {}",
                o,
                page.order()
            ),
        }
    }

    /// The checks of `free_pages_prepare()`, reported the way Linux's
    /// `bad_page()` does; a refused free changes nothing.
    pub(super) fn free_check(&self, page: &Page, order: u32) -> Result<()> {
        let f = page.flags();
        let why = if f & PG_RESERVED != 0 {
            Some(BadPage::Reserved)
        } else if f & PG_TAIL != 0 {
            Some(BadPage::Tail)
        } else if f & (PG_BUDDY | PG_PCP) != 0 || page.refcount() <= 0 {
            Some(BadPage::Free)
        } else if f & PG_SLAB != 0 {
            Some(BadPage::Slab)
        } else if f & PG_HEAD != 0 && page.order() != order {
            Some(BadPage::CompoundOrder)
        } else if page.order() != order {
            Some(BadPage::Order(order))
        } else {
            None
        };
        match why {
            Some(w) => {
                self.bad_page(page, w);
                Err(Error::BadState)
            }
            None => Ok(()),
        }
    }

    /// `__free_pages()`: drop a reference to a block of `2^order` pages and
    /// free it when that was the last one.
    ///
    /// Double frees, frees with the wrong order, frees of tail, reserved or
    /// slab pages are reported as "BUG: Bad page state" and refused with
    /// [`Error::BadState`]; the page is left as it was.
    #[inline]
    pub fn __free_pages(&self, page: &Page, order: u32) -> Result<()> {
        let mm = self.mem_map();
        // The fast path: a descriptor of this machine, an allocated
        // non-compound block freed with its order, the last reference.
        // Anything else, the reports included, is `free_pages_slow`.
        if let Some(idx) = mm.index_of(page) {
            let f = page.raw_flags();
            const NOT_FAST: u32 = PG_RESERVED | PG_TAIL | PG_BUDDY | PG_PCP | PG_SLAB | PG_HEAD;
            if f & NOT_FAST == 0
                && page.order() == order
                && order <= MAX_PAGE_ORDER
                && page.refcount() > 0
            {
                // put_page_testzero(): an atomic decrement, so that two
                // racing frees of one page cannot both free it.
                match page.ref_dec() {
                    1 => {}
                    n if n > 1 => return Ok(()),
                    _ => return self.free_pages_race(page),
                }
                page.set_order(0);
                let zone = self.node(Page::nid_of(f)).zone(Page::zone_of(f));
                if pcp_allowed_order(order, self.pcp_thp) {
                    self.free_unref_page(zone, idx, order);
                } else {
                    self.free_one_page(zone, idx, order);
                }
                self.wake_free_page_waiters();
                return Ok(());
            }
        }
        self.free_pages_slow(page, order)
    }

    /// A free that lost the race with another free of the same page.
    #[cold]
    #[inline(never)]
    pub(super) fn free_pages_race(&self, page: &Page) -> Result<()> {
        page.ref_inc();
        self.bad_page(page, BadPage::Free);
        Err(Error::BadState)
    }

    /// `__free_pages()` past its fast path: compound pages, descriptors of
    /// another machine, every bad-input report.
    #[cold]
    #[inline(never)]
    pub(super) fn free_pages_slow(&self, page: &Page, order: u32) -> Result<()> {
        let mm = self.mem_map();
        let Some(idx) = mm.index_of(page) else {
            report!(
                &self.p,
                Level::Alert,
                "BUG: __free_pages: {:p} is not a page descriptor of this machine",
                page
            );
            return Err(Error::BadAddress);
        };
        if order > MAX_PAGE_ORDER {
            report!(
                &self.p,
                Level::Alert,
                "BUG: __free_pages: order {} > MAX_PAGE_ORDER",
                order
            );
            return Err(Error::InvalidArgument);
        }
        self.free_check(page, order)?;
        match page.ref_dec() {
            1 => {}
            n if n > 1 => return Ok(()),
            _ => {
                // Lost a race with another free of the same page.
                page.ref_inc();
                self.bad_page(page, BadPage::Free);
                return Err(Error::BadState);
            }
        }
        if page.is_head() {
            for t in 1..(1u32 << order) {
                let tail = mm.at(idx + t);
                tail.set_raw_flags(tail.raw_flags() & !PG_TAIL);
                tail.set_head_index(None);
            }
            // The count reached zero: the block is ours alone, so a plain
            // store, as Linux's __ClearPageHead() (no locked operation).
            page.clear_flag_owned(PG_HEAD);
        }
        page.set_order(0);
        let zone = self.page_zone(page);
        if pcp_allowed_order(order, self.pcp_thp) {
            self.free_unref_page(zone, idx, order);
        } else {
            self.free_one_page(zone, idx, order);
        }
        self.wake_free_page_waiters();
        Ok(())
    }

    /// `free_one_page()`: straight back to the buddy lists.
    #[inline(never)]
    pub(super) fn free_one_page(&self, zone: &Zone, idx: u32, order: u32) {
        let _irq = LocalGuard::new(&self.p);
        let cx = self.buddy_cx(zone);
        let pfn = cx.mm.pfn_of(idx);
        let mt = cx.pb.get(pfn);
        let mut area = zone.lock();
        let merged = area.free_one(&cx, pfn, order, mt);
        zone.add_free_locked(1 << order);
        Zone::count_locked(&zone.pgfree, 1 << order);
        drop(area);
        self.page_reporting_notify_free(merged);
    }

    /// `free_unref_page()`: onto this CPU's list, spilling `batch` pages
    /// to the buddy lists when the list reaches `high`.
    #[inline]
    pub(super) fn free_unref_page(&self, zone: &Zone, idx: u32, order: u32) {
        let mm = self.mem_map();
        let mut mt = self.pageblocks().get(mm.pfn_of(idx));
        if mt as usize >= MIGRATE_PCPTYPES {
            if mt == MigrateType::Isolate {
                return self.free_one_page(zone, idx, order);
            }
            mt = MigrateType::Movable;
        }
        // The common case in a leaf section: room on the list, no drain.
        let st = self.p.local_enter_leaf();
        if let Some(pcp) = zone.pcp(st.cpu) {
            if !pcp.drain_requested() && pcp.count() + (1 << order) < pcp.high() {
                // SAFETY: on pcp's CPU inside the leaf section `st`; the
                // borrow ends before the section does.
                let lists = unsafe { pcp.lists_mut() };
                self.pcp_put(pcp, lists, idx, order, mt);
                self.p.local_exit_leaf(st);
                return;
            }
        }
        self.p.local_exit_leaf(st);
        self.free_unref_page_full(zone, idx, order, mt);
    }

    /// [`free_unref_page`](Self::free_unref_page) when the list is to
    /// spill or drain, in a full section.
    #[inline(never)]
    pub(super) fn free_unref_page_full(&self, zone: &Zone, idx: u32, order: u32, mt: MigrateType) {
        let g = LocalGuard::new(&self.p);
        let Some(pcp) = zone.pcp(g.cpu()) else {
            drop(g);
            return self.free_one_page(zone, idx, order);
        };
        // SAFETY: on pcp's CPU inside section `g`, which outlives `lists`.
        let lists = unsafe { pcp.lists_mut() };
        self.pcp_put(pcp, lists, idx, order, mt);
        if pcp.drain_requested() || pcp.count() >= pcp.high() {
            self.free_unref_page_spill(zone, pcp, lists);
        }
    }
}
