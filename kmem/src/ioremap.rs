//! ioremap: device memory mapped into the vmalloc space
//! (`arch/x86/mm/ioremap.c`, `include/asm-generic/io.h`).
//!
//! `ioremap*()` maps a physical range that is not RAM (a device's
//! registers or buffer, which the firmware map lists as reserved) with the
//! cache mode the variant names, in an area of its own (`VM_IOREMAP`,
//! aligned to its size up to `IOREMAP_MAX_ORDER`, shown as `ioremap` in
//! `/proc/vmallocinfo` with its `phys=`). As on x86:
//! - a range that is (partly) System RAM is refused with "ioremap on RAM
//!   at ..." (RAM is reached through the direct map, and a second,
//!   uncached alias of it would corrupt it);
//! - a range not page aligned maps the pages around it and the answer
//!   points at the first byte asked for;
//! - `iounmap()` of an address that no ioremap made is "iounmap: bad
//!   address"; direct-map addresses are ignored, as x86 ignores
//!   addresses below `high_memory`.
//!
//! kmem keeps no memory-type (PAT) table: the platform gets the cache
//! mode with each mapping ([`PgProt`]) and enforces what it can.
//!
//! The accessors (`readl()`, `writel()`, `memcpy_fromio()`...) are
//! volatile accesses of the width they name, ordered as Linux's are: a
//! write is preceded by a write barrier (`__io_bw()`, so a buffer filled
//! before a doorbell write is seen first) and a read followed by a read
//! barrier (`__io_ar()`); [`IoMem`] wraps a mapping with bounds-checked,
//! safe ones.

use crate::platform::{Level, PgProt, Platform};
use crate::vmalloc::VM_IOREMAP;
use crate::{report, Error, Kmem, Result, PAGE_SIZE};
use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering::Acquire, Ordering::Release};

impl<P: Platform> Kmem<P> {
    /// `__ioremap_caller()`.
    fn ioremap_caller(
        &self,
        phys_addr: u64,
        size: usize,
        prot: PgProt,
        caller: &'static Location<'static>,
    ) -> Result<NonNull<u8>> {
        // No zero size, no wrap-around.
        let last = (size as u64)
            .checked_sub(1)
            .and_then(|n| phys_addr.checked_add(n));
        let Some(last) = last else {
            return Err(Error::InvalidArgument);
        };
        if self
            .memblock
            .memory()
            .overlapping(phys_addr, last + 1)
            .is_some()
        {
            report!(
                &self.p,
                Level::Warning,
                "WARNING: CPU: {} at {}: ioremap on RAM at 0x{:016x} - 0x{:016x}",
                self.p.smp_processor_id(),
                caller,
                phys_addr,
                last
            );
            return Err(Error::InvalidArgument);
        }
        let (start, end) = self.vmalloc_range().ok_or_else(|| {
            report!(
                &self.p,
                Level::Err,
                "ioremap: this platform has no page tables"
            );
            Error::NotSupported
        })?;
        let offset = (phys_addr % PAGE_SIZE as u64) as usize;
        let base = phys_addr - offset as u64;
        let map_size = ((last + 1).next_multiple_of(PAGE_SIZE as u64) - base) as usize;
        let vm = self.get_vm_area_node(
            map_size,
            1,
            crate::PAGE_SHIFT,
            VM_IOREMAP | crate::vmalloc::VM_UNINITIALIZED,
            start,
            end,
            -1,
            crate::gfp::GFP_KERNEL,
            caller,
        )?;
        // SAFETY: the area is ours until VM_UNINITIALIZED is cleared.
        let area = unsafe { &mut *vm.as_ptr() };
        area.phys_addr = base;
        if let Err(e) = self
            .p
            .map_kernel_range(area.addr, base, map_size, prot, crate::PAGE_SHIFT)
        {
            self.remove_and_free_vm(vm, crate::vmalloc::free::PagesToFree::None);
            return Err(e);
        }
        {
            let _busy = self.vmalloc.busy.lock();
            area.flags &= !crate::vmalloc::VM_UNINITIALIZED;
        }
        Ok(NonNull::new((area.addr + offset) as *mut u8).expect("vmalloc space is not at 0"))
    }

    /// `ioremap()`: map `size` bytes of device memory at `phys_addr`,
    /// uncached (`_PAGE_CACHE_MODE_UC_MINUS`).
    #[track_caller]
    pub fn ioremap(&self, phys_addr: u64, size: usize) -> Result<NonNull<u8>> {
        self.ioremap_caller(phys_addr, size, PgProt::UncachedMinus, Location::caller())
    }

    /// `ioremap_uc()`: strongly uncached.
    #[track_caller]
    pub fn ioremap_uc(&self, phys_addr: u64, size: usize) -> Result<NonNull<u8>> {
        self.ioremap_caller(phys_addr, size, PgProt::Uncached, Location::caller())
    }

    /// `ioremap_wc()`: write-combining (frame buffers).
    #[track_caller]
    pub fn ioremap_wc(&self, phys_addr: u64, size: usize) -> Result<NonNull<u8>> {
        self.ioremap_caller(phys_addr, size, PgProt::WriteCombine, Location::caller())
    }

    /// `ioremap_cache()`: cached (write-back).
    #[track_caller]
    pub fn ioremap_cache(&self, phys_addr: u64, size: usize) -> Result<NonNull<u8>> {
        self.ioremap_caller(phys_addr, size, PgProt::Kernel, Location::caller())
    }

    /// `ioremap_prot()`: with the protection given.
    #[track_caller]
    pub fn ioremap_prot(&self, phys_addr: u64, size: usize, prot: PgProt) -> Result<NonNull<u8>> {
        self.ioremap_caller(phys_addr, size, prot, Location::caller())
    }

    /// `iounmap()`: undo an `ioremap*()` (any address inside its first
    /// page works, as the offset of an unaligned mapping is dropped). A
    /// direct-map address is ignored; any other address that no ioremap
    /// made is "iounmap: bad address" and [`Error::BadAddress`].
    ///
    /// # Safety
    ///
    /// Nothing uses the mapping afterwards.
    #[track_caller]
    pub unsafe fn iounmap(&self, addr: *mut u8) -> Result<()> {
        if addr.is_null() || self.dm.pa(addr as usize).is_some() {
            return Ok(());
        }
        let page = (addr as usize) & !(PAGE_SIZE - 1);
        let is_ioremap = self
            .find_vm_area(page as *const u8)
            .is_some_and(|vm| vm.addr() as usize == page && vm.flags() & VM_IOREMAP != 0);
        if !is_ioremap {
            report!(&self.p, Level::Err, "iounmap: bad address {:p}", addr);
            report!(
                &self.p,
                Level::Err,
                "CPU: {} PID: {} Comm: {} at {}",
                self.p.smp_processor_id(),
                self.p.current().pid,
                self.p.current().comm(),
                Location::caller()
            );
            return Err(Error::BadAddress);
        }
        // SAFETY: an ioremap area (checked above) the caller gives up.
        unsafe { self.vunmap(page as *mut u8) }
    }
}

/// `readb()`: an 8-bit MMIO read.
///
/// # Safety
///
/// `addr` is inside a live `ioremap` mapping (or other valid memory).
pub unsafe fn readb(addr: *const u8) -> u8 {
    // SAFETY: the caller's promise.
    let v = unsafe { addr.read_volatile() };
    fence(Acquire);
    v
}

/// `readw()`: a 16-bit MMIO read (little-endian device order on x86).
///
/// # Safety
///
/// As [`readb`], and `addr` is 2-byte aligned.
pub unsafe fn readw(addr: *const u8) -> u16 {
    // SAFETY: the caller's promise.
    let v = u16::from_le(unsafe { addr.cast::<u16>().read_volatile() });
    fence(Acquire);
    v
}

/// `readl()`: a 32-bit MMIO read.
///
/// # Safety
///
/// As [`readb`], and `addr` is 4-byte aligned.
pub unsafe fn readl(addr: *const u8) -> u32 {
    // SAFETY: the caller's promise.
    let v = u32::from_le(unsafe { addr.cast::<u32>().read_volatile() });
    fence(Acquire);
    v
}

/// `readq()`: a 64-bit MMIO read.
///
/// # Safety
///
/// As [`readb`], and `addr` is 8-byte aligned.
pub unsafe fn readq(addr: *const u8) -> u64 {
    // SAFETY: the caller's promise.
    let v = u64::from_le(unsafe { addr.cast::<u64>().read_volatile() });
    fence(Acquire);
    v
}

/// `writeb()`.
///
/// # Safety
///
/// As [`readb`], for writing.
pub unsafe fn writeb(v: u8, addr: *mut u8) {
    fence(Release);
    // SAFETY: the caller's promise.
    unsafe { addr.write_volatile(v) }
}

/// `writew()`.
///
/// # Safety
///
/// As [`readw`], for writing.
pub unsafe fn writew(v: u16, addr: *mut u8) {
    fence(Release);
    // SAFETY: the caller's promise.
    unsafe { addr.cast::<u16>().write_volatile(v.to_le()) }
}

/// `writel()`.
///
/// # Safety
///
/// As [`readl`], for writing.
pub unsafe fn writel(v: u32, addr: *mut u8) {
    fence(Release);
    // SAFETY: the caller's promise.
    unsafe { addr.cast::<u32>().write_volatile(v.to_le()) }
}

/// `writeq()`.
///
/// # Safety
///
/// As [`readq`], for writing.
pub unsafe fn writeq(v: u64, addr: *mut u8) {
    fence(Release);
    // SAFETY: the caller's promise.
    unsafe { addr.cast::<u64>().write_volatile(v.to_le()) }
}

/// `memcpy_fromio()`: copy `dst.len()` bytes from device memory, byte by
/// byte with volatile reads (devices may not take wider or merged reads).
///
/// # Safety
///
/// `src` starts `dst.len()` readable bytes of a live mapping.
pub unsafe fn memcpy_fromio(dst: &mut [u8], src: *const u8) {
    for (i, d) in dst.iter_mut().enumerate() {
        // SAFETY: the caller's promise.
        *d = unsafe { src.add(i).read_volatile() };
    }
}

/// `memcpy_toio()`: copy `src` into device memory.
///
/// # Safety
///
/// `dst` starts `src.len()` writable bytes of a live mapping.
pub unsafe fn memcpy_toio(dst: *mut u8, src: &[u8]) {
    for (i, s) in src.iter().enumerate() {
        // SAFETY: the caller's promise.
        unsafe { dst.add(i).write_volatile(*s) };
    }
}

/// `memset_io()`: fill `len` bytes of device memory with `v`.
///
/// # Safety
///
/// `dst` starts `len` writable bytes of a live mapping.
pub unsafe fn memset_io(dst: *mut u8, v: u8, len: usize) {
    for i in 0..len {
        // SAFETY: the caller's promise.
        unsafe { dst.add(i).write_volatile(v) };
    }
}

/// A mapping of `len` bytes of device memory with safe, bounds-checked
/// accessors (the role of Rust-for-Linux's `IoMem`). Out-of-range or
/// misaligned offsets answer [`Error::InvalidArgument`].
pub struct IoMem {
    addr: NonNull<u8>,
    len: usize,
}

impl IoMem {
    /// Wrap `len` bytes at `addr`.
    ///
    /// # Safety
    ///
    /// `[addr, addr + len)` is a live `ioremap` mapping (or other memory
    /// valid for volatile reads and writes) for as long as the value is
    /// used.
    pub unsafe fn new(addr: NonNull<u8>, len: usize) -> Self {
        IoMem { addr, len }
    }

    /// The mapping's address.
    pub fn addr(&self) -> NonNull<u8> {
        self.addr
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, off: usize, width: usize) -> Result<*mut u8> {
        // The address, not only the offset, must be aligned: an unaligned
        // ioremap returns base + offset.
        let misaligned = (self.addr.as_ptr() as usize).wrapping_add(off) % width != 0;
        if misaligned || off.checked_add(width).is_none_or(|e| e > self.len) {
            return Err(Error::InvalidArgument);
        }
        // SAFETY: inside the mapping (checked above).
        Ok(unsafe { self.addr.as_ptr().add(off) })
    }

    /// `readl(base + off)`.
    pub fn readl(&self, off: usize) -> Result<u32> {
        let a = self.at(off, 4)?;
        // SAFETY: an aligned offset inside the mapping.
        Ok(unsafe { readl(a) })
    }

    /// `writel(v, base + off)`.
    pub fn writel(&self, v: u32, off: usize) -> Result<()> {
        let a = self.at(off, 4)?;
        // SAFETY: an aligned offset inside the mapping.
        unsafe { writel(v, a) };
        Ok(())
    }

    /// `readq(base + off)`.
    pub fn readq(&self, off: usize) -> Result<u64> {
        let a = self.at(off, 8)?;
        // SAFETY: an aligned offset inside the mapping.
        Ok(unsafe { readq(a) })
    }

    /// `writeq(v, base + off)`.
    pub fn writeq(&self, v: u64, off: usize) -> Result<()> {
        let a = self.at(off, 8)?;
        // SAFETY: an aligned offset inside the mapping.
        unsafe { writeq(v, a) };
        Ok(())
    }

    /// `memcpy_fromio(dst, base + off, dst.len())`.
    pub fn memcpy_fromio(&self, dst: &mut [u8], off: usize) -> Result<()> {
        if off.checked_add(dst.len()).is_none_or(|e| e > self.len) {
            return Err(Error::InvalidArgument);
        }
        // SAFETY: inside the mapping (checked above).
        unsafe { memcpy_fromio(dst, self.addr.as_ptr().add(off)) };
        Ok(())
    }

    /// `memcpy_toio(base + off, src, src.len())`.
    pub fn memcpy_toio(&self, off: usize, src: &[u8]) -> Result<()> {
        if off.checked_add(src.len()).is_none_or(|e| e > self.len) {
            return Err(Error::InvalidArgument);
        }
        // SAFETY: inside the mapping (checked above).
        unsafe { memcpy_toio(self.addr.as_ptr().add(off), src) };
        Ok(())
    }

    /// `memset_io(base + off, v, len)`.
    pub fn memset_io(&self, off: usize, v: u8, len: usize) -> Result<()> {
        if off.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(Error::InvalidArgument);
        }
        // SAFETY: inside the mapping (checked above).
        unsafe { memset_io(self.addr.as_ptr().add(off), v, len) };
        Ok(())
    }
}
