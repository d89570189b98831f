//! Early boot memory: memblock's allocation interface before the page
//! allocator exists (`memblock_alloc()` and friends, with the old bootmem
//! names as aliases), handed to the `early` callback of
//! [`Kmem::boot_with`](crate::Kmem::boot_with).

use crate::memblock::Memblock;
use crate::platform::{DirectMap, Level, Platform};
use crate::{report, Error, Result, PAGE_SIZE};
use core::ptr::NonNull;

/// `SMP_CACHE_BYTES`: the default alignment of early allocations.
pub const SMP_CACHE_BYTES: u64 = 64;
/// `ARCH_LOW_ADDRESS_LIMIT` on x86: "low" bootmem lies below 4 GiB.
pub const ARCH_LOW_ADDRESS_LIMIT: u64 = 0xffff_ffff;

/// Early boot memory: memblock before the page allocator exists (see
/// [`Kmem::boot_with`](crate::Kmem::boot_with)).
///
/// The `memblock_*` calls are Linux's. The `*_bootmem*` calls are the names
/// the seed documents use, from the bootmem allocator memblock replaced
/// (removed in Linux 4.20); they are thin aliases:
///
/// | bootmem (old) | memblock (now) |
/// |---|---|
/// | `alloc_bootmem(size)` | `memblock_alloc(size, SMP_CACHE_BYTES)` |
/// | `alloc_bootmem_align(size, align)` | `memblock_alloc(size, align)` |
/// | `alloc_bootmem_pages(size)` | `memblock_alloc(size, PAGE_SIZE)` |
/// | `alloc_bootmem_low(size)` | `memblock_alloc_low(size, SMP_CACHE_BYTES)` |
/// | `alloc_bootmem_low_pages(size)` | `memblock_alloc_low(size, PAGE_SIZE)` |
/// | `alloc_bootmem_node(nid, size)` | `memblock_alloc_node(size, SMP_CACHE_BYTES, nid)` |
/// | `free_bootmem(addr, size)` | `memblock_free(ptr, size)` |
///
/// bootmem's allocators panicked on failure (`_nopanic` variants returned
/// NULL); here every call returns a `Result` and reports the failure.
pub struct EarlyMem<'a, P: Platform> {
    pub(super) p: &'a P,
    pub(super) mb: &'a mut Memblock,
    pub(super) dm: DirectMap,
}

impl<P: Platform> EarlyMem<'_, P> {
    /// The memblock tables, read-only.
    pub fn memblock(&self) -> &Memblock {
        self.mb
    }

    /// `memblock_reserve()`.
    pub fn memblock_reserve(&mut self, base: u64, size: u64) -> Result<()> {
        self.mb.reserve(self.p, base, size)
    }

    /// `memblock_phys_free()`.
    pub fn memblock_phys_free(&mut self, base: u64, size: u64) -> Result<()> {
        self.mb.phys_free(self.p, base, size)
    }

    /// `memblock_phys_alloc_range()`.
    pub fn memblock_phys_alloc_range(
        &mut self,
        size: u64,
        align: u64,
        start: u64,
        end: u64,
    ) -> Result<u64> {
        self.mb.phys_alloc_range(self.p, size, align, start, end)
    }

    /// `memblock_set_bottom_up()`.
    pub fn memblock_set_bottom_up(&mut self, enable: bool) {
        self.mb.set_bottom_up(enable);
    }

    fn zeroed_va(&self, pa: u64, size: u64) -> Result<NonNull<u8>> {
        let va = self.dm.va(pa).ok_or(Error::NoMemory)? as *mut u8;
        // SAFETY: memblock just reserved [pa, pa + size), inside the direct
        // map (allocations stay below its end); nobody else uses it.
        unsafe { core::ptr::write_bytes(va, 0, size as usize) };
        Ok(NonNull::new(va).expect("direct map address is not null"))
    }

    fn alloc_in(
        &mut self,
        size: u64,
        align: u64,
        end: u64,
        nid: Option<u8>,
    ) -> Result<NonNull<u8>> {
        // The current limit keeps every allocation inside the direct map.
        let pa = match nid {
            Some(n) => self.mb.phys_alloc_try_nid(self.p, size, align, n)?,
            None => self.mb.phys_alloc_range(self.p, size, align, 0, end)?,
        };
        self.zeroed_va(pa, size)
    }

    /// `memblock_alloc()`: zeroed, direct-mapped memory.
    pub fn memblock_alloc(&mut self, size: u64, align: u64) -> Result<NonNull<u8>> {
        self.alloc_in(size, align, u64::MAX, None)
    }

    /// `memblock_alloc_low()`: below [`ARCH_LOW_ADDRESS_LIMIT`].
    pub fn memblock_alloc_low(&mut self, size: u64, align: u64) -> Result<NonNull<u8>> {
        self.alloc_in(size, align, ARCH_LOW_ADDRESS_LIMIT + 1, None)
    }

    /// `memblock_alloc_node()`: on node `nid` if it can, else anywhere.
    pub fn memblock_alloc_node(&mut self, size: u64, align: u64, nid: u8) -> Result<NonNull<u8>> {
        self.alloc_in(size, align, u64::MAX, Some(nid))
    }

    /// `memblock_free()`: give back memory from [`memblock_alloc`](Self::memblock_alloc).
    pub fn memblock_free(&mut self, ptr: NonNull<u8>, size: u64) -> Result<()> {
        let Some(pa) = self.dm.pa(ptr.as_ptr() as usize) else {
            report!(
                self.p,
                Level::Err,
                "memblock_free: {:p} is not a direct-map address",
                ptr
            );
            return Err(Error::BadAddress);
        };
        self.mb.phys_free(self.p, pa, size)
    }

    /// bootmem's `alloc_bootmem()`.
    pub fn alloc_bootmem(&mut self, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc(size, SMP_CACHE_BYTES)
    }

    /// bootmem's `alloc_bootmem_align()`.
    pub fn alloc_bootmem_align(&mut self, size: u64, align: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc(size, align)
    }

    /// bootmem's `alloc_bootmem_pages()`.
    pub fn alloc_bootmem_pages(&mut self, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc(size, PAGE_SIZE as u64)
    }

    /// bootmem's `alloc_bootmem_low()`.
    pub fn alloc_bootmem_low(&mut self, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc_low(size, SMP_CACHE_BYTES)
    }

    /// bootmem's `alloc_bootmem_low_pages()`.
    pub fn alloc_bootmem_low_pages(&mut self, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc_low(size, PAGE_SIZE as u64)
    }

    /// bootmem's `alloc_bootmem_node()`.
    pub fn alloc_bootmem_node(&mut self, nid: u8, size: u64) -> Result<NonNull<u8>> {
        self.memblock_alloc_node(size, SMP_CACHE_BYTES, nid)
    }

    /// bootmem's `free_bootmem()`.
    pub fn free_bootmem(&mut self, addr: NonNull<u8>, size: u64) -> Result<()> {
        self.memblock_free(addr, size)
    }
}
