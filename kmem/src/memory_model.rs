//! The memory model (`include/asm-generic/memory_model.h` and the
//! `mm.h`/`highmem.h` helpers): how a page frame number, its `struct page`
//! and its kernel virtual address find each other.
//!
//! kmem uses FLATMEM: one descriptor array ([`MemMap`]) covers the pfns
//! from the lowest RAM (rounded down to a max-order block) to the highest,
//! so `pfn_to_page()` is an index and `page_to_pfn()` a subtraction. The
//! direct map ([`DirectMap`](crate::platform::DirectMap)) maps all low
//! memory at a fixed offset: `page_address()` adds it, `virt_to_page()`
//! subtracts it. High memory (on a 32-bit style machine) has no direct-map
//! address: `kmap()` maps such a page into a small window of the
//! platform's (`LAST_PKMAP` slots) until `kunmap()`.
//!
//! This sits below the allocators: it reads the descriptor array and the
//! direct map, and calls nothing but the platform.

use crate::page::{MemMap, Page};
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result, PAGE_SHIFT, PAGE_SIZE};
use core::ptr::NonNull;

/// Slots in the kmap area (`LAST_PKMAP` on x86 PAE is 512; 1024 without).
pub const LAST_PKMAP: usize = 1024;

/// The kmap window: its base address and a bitmap of the slots in use.
pub(crate) struct Kmap {
    /// First address of the window (`PKMAP_BASE`).
    pub(crate) base: usize,
    /// Bit `i` is set while slot `i` maps a page.
    pub(crate) slots: spin::Mutex<[u64; LAST_PKMAP / 64]>,
}

impl Kmap {
    /// The window at the top of the platform's vmap range `[start, end)`
    /// (as `PKMAP_BASE` sits above `VMALLOC_END` on 32-bit x86), if the
    /// range holds `LAST_PKMAP` pages.
    pub(crate) fn new(start: usize, end: usize) -> Option<Kmap> {
        (end - start >= LAST_PKMAP * PAGE_SIZE).then(|| Kmap {
            base: end - LAST_PKMAP * PAGE_SIZE,
            slots: spin::Mutex::new([0; LAST_PKMAP / 64]),
        })
    }
}

impl<P: Platform> Kmem<P> {
    /// The page descriptor array.
    #[inline]
    pub fn mem_map(&self) -> MemMap<'_> {
        // SAFETY: boot allocated `mem_map_len` descriptors at `mem_map` from
        // memblock and zeroed (or found zeroed) them; every field is atomic,
        // so shared references are sound for the machine's life.
        unsafe { MemMap::from_raw(self.mem_map, self.mem_map_len, self.mem_map_base_pfn) }
    }

    /// `pfn_to_page()`.
    pub fn pfn_to_page(&self, pfn: u64) -> Option<&Page> {
        self.mem_map().pfn_to_page(pfn)
    }

    /// `page_to_pfn()`. Panics for a descriptor of another machine.
    pub fn page_to_pfn(&self, page: &Page) -> u64 {
        self.mem_map()
            .page_to_pfn(page)
            .expect("page of another machine")
    }

    /// `pfn_valid()` in the strict sense: the pfn is RAM.
    pub fn pfn_is_ram(&self, pfn: u64) -> bool {
        self.memblock
            .is_region_memory(pfn << PAGE_SHIFT, PAGE_SIZE as u64)
    }

    /// `pfn_to_nid()`: the node of the memory range that holds `pfn`, as
    /// the firmware map gave it (node spans may interleave; the ranges do
    /// not). `None` for a pfn that is not RAM.
    pub fn pfn_to_nid(&self, pfn: u64) -> Option<usize> {
        let pa = pfn << PAGE_SHIFT;
        self.memblock
            .memory()
            .regions()
            .iter()
            .find(|r| pa >= r.base && pa < r.end())
            .map(|r| usize::from(r.nid))
    }

    /// `page_address()`: the direct-map address, `None` for high memory.
    pub fn page_address(&self, page: &Page) -> Option<NonNull<u8>> {
        let pa = self.mem_map().page_to_pfn(page)? << PAGE_SHIFT;
        NonNull::new(self.dm.va(pa)? as *mut u8)
    }

    /// `virt_to_page()`: the descriptor behind a direct-map address, if it
    /// is RAM this machine manages.
    pub fn virt_to_page(&self, addr: *const u8) -> Option<&Page> {
        let pfn = self.dm.pa(addr as usize)? >> PAGE_SHIFT;
        if !self.pfn_is_ram(pfn) {
            return None;
        }
        self.mem_map().pfn_to_page(pfn)
    }

    /// `PageHighMem()`.
    pub fn page_is_highmem(&self, page: &Page) -> bool {
        self.page_address(page).is_none()
    }

    /// `kmap()`: an address for any page; high memory is mapped into the
    /// kmap area (one slot per call, released by [`kunmap`](Self::kunmap)).
    pub fn kmap(&self, page: &Page) -> Result<NonNull<u8>> {
        if let Some(a) = self.page_address(page) {
            return Ok(a);
        }
        let pfn = self.mem_map().page_to_pfn(page).ok_or(Error::BadAddress)?;
        let km = self.kmap.as_ref().ok_or_else(|| {
            report!(&self.p, Level::Err, "kmap: this platform cannot map pages");
            Error::NotSupported
        })?;
        let slot = {
            let mut s = km.slots.lock();
            let mut found = None;
            for (w, word) in s.iter_mut().enumerate() {
                if *word != u64::MAX {
                    let b = (!*word).trailing_zeros() as usize;
                    *word |= 1 << b;
                    found = Some(w * 64 + b);
                    break;
                }
            }
            found
        };
        let Some(slot) = slot else {
            report!(
                &self.p,
                Level::Err,
                "kmap: all {LAST_PKMAP} slots are in use"
            );
            return Err(Error::Busy);
        };
        let va = km.base + slot * PAGE_SIZE;
        let mapped = self.p.map_kernel_range(
            va,
            crate::pfn_phys(pfn),
            PAGE_SIZE,
            crate::platform::PgProt::Kernel,
            PAGE_SHIFT,
        );
        if let Err(e) = mapped {
            km.slots.lock()[slot / 64] &= !(1 << (slot % 64));
            return Err(e);
        }
        Ok(NonNull::new(va as *mut u8).expect("kmap area is not at 0"))
    }

    /// `kunmap()`: release an address from [`kmap`](Self::kmap). Direct-map
    /// addresses need no release and are ignored.
    pub fn kunmap(&self, addr: *mut u8) {
        let Some(km) = self.kmap.as_ref() else { return };
        let a = addr as usize;
        if a < km.base || a >= km.base + LAST_PKMAP * PAGE_SIZE {
            return;
        }
        let slot = (a - km.base) / PAGE_SIZE;
        let va = km.base + slot * PAGE_SIZE;
        self.p.unmap_kernel_range(va, PAGE_SIZE);
        // The slot is reused at once, so no CPU may keep the old translation.
        self.p.flush_tlb_kernel_range(va, va + PAGE_SIZE);
        km.slots.lock()[slot / 64] &= !(1 << (slot % 64));
    }
}
