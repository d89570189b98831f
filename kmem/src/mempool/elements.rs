//! The standard element allocators of `mm/mempool.c`, which the
//! `mempool_create_*_pool()` helpers install: slab objects
//! (`mempool_alloc_slab()`), kmalloc blocks (`mempool_kmalloc()`) and page
//! blocks (`mempool_alloc_pages()`), with the checks that a pool's data
//! matches its element kind.

use super::*;
use crate::gfp::Gfp;
use crate::page::Page;
use crate::platform::{Level, Platform};
use crate::{report, Kmem};
use core::ptr::NonNull;

impl<P: Platform> Kmem<P> {
    /// `mempool_alloc_slab()`: `kmem_cache_alloc()` from the pool's cache.
    /// `None` (reported) if the pool data is not [`PoolData::Cache`].
    pub fn mempool_alloc_slab(&self, gfp: Gfp, data: &PoolData<'_>) -> Option<Element> {
        match data {
            PoolData::Cache(c) => self.kmem_cache_alloc(c, gfp).ok(),
            _ => {
                self.mempool_wrong_data("mempool_alloc_slab", data);
                None
            }
        }
    }

    /// `mempool_free_slab()`: `kmem_cache_free()` to the pool's cache.
    ///
    /// # Safety
    ///
    /// `element` is an object of that cache, not used again.
    pub unsafe fn mempool_free_slab(&self, element: Element, data: &PoolData<'_>) {
        match data {
            PoolData::Cache(c) => {
                // SAFETY: the caller's contract. Errors are reported by slab.
                let _ = unsafe { self.kmem_cache_free(c, element.as_ptr()) };
            }
            _ => self.mempool_wrong_data("mempool_free_slab", data),
        }
    }

    /// `mempool_kmalloc()`: `kmalloc()` of the pool's size. `None`
    /// (reported) if the pool data is not [`PoolData::Kmalloc`].
    pub fn mempool_kmalloc(&self, gfp: Gfp, data: &PoolData<'_>) -> Option<Element> {
        match data {
            PoolData::Kmalloc(size) => self.kmalloc(*size, gfp).ok(),
            _ => {
                self.mempool_wrong_data("mempool_kmalloc", data);
                None
            }
        }
    }

    /// `mempool_kfree()`: `kfree()`.
    ///
    /// # Safety
    ///
    /// `element` is a kmalloc object, not used again.
    pub unsafe fn mempool_kfree(&self, element: Element, _data: &PoolData<'_>) {
        // SAFETY: the caller's contract. Errors are reported by kfree.
        let _ = unsafe { self.kfree(element.as_ptr()) };
    }

    /// `mempool_alloc_pages()`: `alloc_pages()` of the pool's order; the
    /// element is the page descriptor. `None` (reported) if the pool data is
    /// not [`PoolData::Pages`].
    pub fn mempool_alloc_pages(&self, gfp: Gfp, data: &PoolData<'_>) -> Option<Element> {
        match data {
            PoolData::Pages(order) => self
                .alloc_pages(gfp, *order)
                .ok()
                .map(|page| NonNull::from(page).cast()),
            _ => {
                self.mempool_wrong_data("mempool_alloc_pages", data);
                None
            }
        }
    }

    /// `mempool_free_pages()`: `__free_pages()` of the pool's order.
    ///
    /// # Safety
    ///
    /// `element` is a page block of that order from
    /// [`mempool_alloc_pages`](Self::mempool_alloc_pages), not used again.
    pub unsafe fn mempool_free_pages(&self, element: Element, data: &PoolData<'_>) {
        match (data, self.mempool_element_page(element)) {
            (PoolData::Pages(order), Some(page)) => {
                // Errors (a bad page state) are reported by __free_pages.
                let _ = self.__free_pages(page, *order);
            }
            (PoolData::Pages(_), None) => report!(
                &self.p,
                Level::Err,
                "BUG: mempool_free_pages: {:p} is not a page descriptor",
                element
            ),
            _ => self.mempool_wrong_data("mempool_free_pages", data),
        }
    }

    #[cold]
    pub(super) fn mempool_wrong_data(&self, what: &str, data: &PoolData<'_>) {
        report!(
            &self.p,
            Level::Err,
            "BUG: {what}: pool data {:?} is not what this function needs",
            data
        );
    }

    /// The page descriptor a page pool's element is (Linux's
    /// `(struct page *)element` cast), checked: `None` unless `element`
    /// points at a descriptor of this machine's `mem_map`.
    ///
    /// ```
    /// use kmem::gfp::GFP_KERNEL;
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// let mut pool = k.mempool_create_page_pool(1, 0)?;
    /// let e = k.mempool_alloc(&pool, GFP_KERNEL)?;
    /// let page = k.mempool_element_page(e).unwrap();
    /// let data = k.page_address(page).unwrap(); // the page's bytes
    /// # let _ = data;
    /// // SAFETY: `e` is returned once and not used again.
    /// unsafe { k.mempool_free(e.as_ptr(), &pool) }?;
    /// k.mempool_destroy(&mut pool)?;
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn mempool_element_page(&self, element: Element) -> Option<&Page> {
        let mm = self.mem_map();
        mm.index_of_ptr(element.as_ptr().cast()).map(|i| mm.at(i))
    }
}
