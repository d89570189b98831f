//! The address-based helpers of `mm/page_alloc.c`: `__get_free_pages()`,
//! `get_zeroed_page()`, `free_pages()`, `alloc_pages_exact()`,
//! `split_page()`, and the reference-count accessors (`get_page()`,
//! `compound_head()`, `page_count()`).

use super::get_order;
use crate::gfp::{self, Gfp};
use crate::page::Page;
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result, PAGE_SIZE};
use core::ptr::NonNull;

impl<P: Platform> Kmem<P> {
    /// `__get_free_pages()`: like [`alloc_pages`](Self::alloc_pages) but
    /// returns the direct-map address. `__GFP_HIGHMEM` is ignored, since
    /// high memory has no such address.
    #[track_caller]
    pub fn __get_free_pages(&self, gfp: Gfp, order: u32) -> Result<NonNull<u8>> {
        let page = self.alloc_pages(gfp.without(gfp::__GFP_HIGHMEM), order)?;
        self.page_address(page).ok_or(Error::NoMemory)
    }

    /// `__get_free_page()`.
    #[track_caller]
    pub fn __get_free_page(&self, gfp: Gfp) -> Result<NonNull<u8>> {
        self.__get_free_pages(gfp, 0)
    }

    /// `get_zeroed_page()`.
    #[track_caller]
    pub fn get_zeroed_page(&self, gfp: Gfp) -> Result<NonNull<u8>> {
        self.__get_free_pages(gfp.union(gfp::__GFP_ZERO), 0)
    }

    /// The descriptor behind a page-aligned direct-map address, or a report
    /// and an error naming what is wrong with `addr`.
    pub(super) fn addr_to_page(&self, what: &str, addr: *const u8) -> Result<&Page> {
        let a = addr as usize;
        if a % PAGE_SIZE != 0 {
            report!(
                &self.p,
                Level::Alert,
                "BUG: {what}: address {a:#x} is not page aligned"
            );
            return Err(Error::InvalidArgument);
        }
        match self.virt_to_page(addr) {
            Some(p) => Ok(p),
            None => {
                report!(
                    &self.p,
                    Level::Alert,
                    "BUG: {what}: address {a:#x} is not memory this allocator manages"
                );
                Err(Error::BadAddress)
            }
        }
    }

    /// `free_pages()`: free by direct-map address; a null address is a no-op.
    #[inline]
    pub fn free_pages(&self, addr: *mut u8, order: u32) -> Result<()> {
        if addr.is_null() {
            return Ok(());
        }
        let page = self.addr_to_page("free_pages", addr)?;
        self.__free_pages(page, order)
    }

    /// `free_page()`.
    pub fn free_page(&self, addr: *mut u8) -> Result<()> {
        self.free_pages(addr, 0)
    }

    /// `split_page()`: turn a non-compound block of `order` into `2^order`
    /// independent order-0 pages, each with its own reference.
    pub fn split_page(&self, page: &Page, order: u32) -> Result<()> {
        let mm = self.mem_map();
        let idx = mm.index_of(page).ok_or(Error::BadAddress)?;
        if page.is_head() || page.refcount() <= 0 || page.order() != order || page.is_tail() {
            report!(
                &self.p,
                Level::Alert,
                "BUG: split_page: pfn {:#x} is not an allocated non-compound block of order {}",
                mm.pfn_of(idx),
                order
            );
            return Err(Error::BadState);
        }
        let links = page.raw_flags();
        for t in 0..(1u32 << order) {
            let p = mm.at(idx + t);
            p.set_raw_flags(links);
            p.set_order(0);
            p.set_refcount(1);
        }
        Ok(())
    }

    /// `alloc_pages_exact()`: `size` bytes of whole pages, the unused tail of
    /// the power-of-two block given back at once.
    #[track_caller]
    pub fn alloc_pages_exact(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        if size == 0 {
            return Err(Error::InvalidArgument);
        }
        let order = get_order(size);
        let addr = self.__get_free_pages(gfp.without(gfp::__GFP_COMP), order)?;
        let page = self.virt_to_page(addr.as_ptr()).ok_or(Error::BadAddress)?;
        self.split_page(page, order)?;
        let used = size.div_ceil(PAGE_SIZE);
        for i in used..(1usize << order) {
            self.free_pages(addr.as_ptr().wrapping_add(i * PAGE_SIZE), 0)?;
        }
        Ok(addr)
    }

    /// `free_pages_exact()`.
    pub fn free_pages_exact(&self, addr: *mut u8, size: usize) -> Result<()> {
        for i in 0..size.div_ceil(PAGE_SIZE) {
            self.free_pages(addr.wrapping_add(i * PAGE_SIZE), 0)?;
        }
        Ok(())
    }

    /// `get_page()`: take another reference to an allocated page. A page
    /// without a reference (free, or never initialised) is refused and
    /// reported, where Linux's `folio_get()` has a `VM_BUG_ON`: the
    /// reference would let `__free_pages` put a page it does not own on
    /// the free lists.
    pub fn get_page(&self, page: &Page) -> Result<()> {
        let Some(pfn) = self.mem_map().page_to_pfn(page) else {
            report!(
                &self.p,
                Level::Err,
                "BUG: get_page: {:p} is not a page descriptor of this machine",
                page
            );
            return Err(Error::InvalidArgument);
        };
        if page.ref_inc_not_zero() {
            return Ok(());
        }
        report!(
            &self.p,
            Level::Err,
            "BUG: get_page: page {pfn:#x} has no reference (page_ref_count {}): it is not allocated",
            page.refcount()
        );
        Err(Error::InvalidArgument)
    }

    /// `compound_head()`: the head of a compound page for a tail page, the
    /// page itself otherwise.
    pub fn compound_head<'a>(&'a self, page: &'a Page) -> &'a Page {
        match page.head_index() {
            Some(h) if page.is_tail() => self.mem_map().at(h),
            _ => page,
        }
    }

    /// `page_count()`.
    pub fn page_count(&self, page: &Page) -> i32 {
        page.refcount()
    }
}
