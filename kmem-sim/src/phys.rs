//! Simulated physical memory and page tables.
//!
//! Physical memory is one memfd. It is mapped once, shared, as the direct
//! map: physical address `pa` lives at `base + pa`. Pages of the same memfd
//! mapped elsewhere with [`VmapArea::map`] are aliases of the direct
//! map, exactly as a vmalloc or kmap mapping aliases `__va(pa)` on Linux.
//!
//! Everything is `MAP_NORESERVE` and the memfd is sparse, so a machine costs
//! only the pages it touches.

use crate::SimError;
use core::ffi::c_void;
use core::ptr;
use kmem::PAGE_SIZE;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

/// Round `x` up to a whole number of pages.
pub(crate) fn page_align_up(x: u64) -> Option<u64> {
    let mask = PAGE_SIZE as u64 - 1;
    x.checked_add(mask).map(|v| v & !mask)
}

/// Alignment of the direct map's base address (1 GiB, as `PAGE_OFFSET`).
pub(crate) const DIRECT_MAP_ALIGN: usize = 1 << 30;

/// The memfd playing physical memory and its direct mapping.
pub(crate) struct PhysMem {
    fd: OwnedFd,
    /// Address of physical address 0 (exposed provenance).
    base: usize,
    /// Bytes of the memfd and of the mapping (whole pages).
    size: usize,
}

impl PhysMem {
    /// A zero-filled, sparse physical memory of `size` bytes (whole pages,
    /// non-zero), mapped read/write at a fresh address.
    pub(crate) fn new(size: u64) -> Result<Self, SimError> {
        debug_assert!(size > 0 && size % PAGE_SIZE as u64 == 0);
        let len = usize::try_from(size).map_err(|_| {
            SimError::Config(format!(
                "physical memory of {size:#x} bytes does not fit the address space"
            ))
        })?;
        let fd = memfd_create("kmem-sim-phys", MemfdFlags::CLOEXEC)
            .map_err(|e| SimError::os("memfd_create", e))?;
        ftruncate(&fd, size).map_err(|e| SimError::os("ftruncate", e))?;
        // Like Linux's PAGE_OFFSET, the direct map starts on a 1 GiB
        // boundary, so physically aligned blocks are virtually aligned too.
        // Reserve len + 1 GiB of address space, then map the memfd over the
        // aligned part and give the rest back.
        let span = len
            .checked_add(DIRECT_MAP_ALIGN)
            .ok_or_else(|| SimError::Config("physical memory too large".into()))?;
        // SAFETY: a null hint lets the kernel choose fresh addresses that no
        // Rust object uses; the reservation is owned here until trimmed.
        let r = unsafe {
            mmap_anonymous(
                ptr::null_mut(),
                span,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| SimError::os("mmap reserving the direct map", e))?;
        let start = r.expose_provenance();
        let base = start.next_multiple_of(DIRECT_MAP_ALIGN);
        // SAFETY: [base, base + len) lies inside the reservation just made,
        // which nothing else uses; MAP_FIXED replaces only that part.
        let p = unsafe {
            mmap(
                ptr::with_exposed_provenance_mut(base),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::NORESERVE | MapFlags::FIXED,
                &fd,
                0,
            )
        }
        .map_err(|e| SimError::os("mmap of physical memory", e))?;
        debug_assert_eq!(p.expose_provenance(), base);
        // SAFETY: the head and tail of the reservation are ours and unused.
        unsafe {
            if base > start {
                let _ = munmap(ptr::with_exposed_provenance_mut(start), base - start);
            }
            let tail = base + len;
            if start + span > tail {
                let _ = munmap(ptr::with_exposed_provenance_mut(tail), start + span - tail);
            }
        }
        Ok(PhysMem {
            fd,
            base,
            size: len,
        })
    }

    /// Virtual address of physical address 0.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// Bytes of physical memory.
    pub(crate) fn size(&self) -> u64 {
        self.size as u64
    }
}

impl Drop for PhysMem {
    fn drop(&mut self) {
        // SAFETY: `base..base+size` is the mapping made in `new`, owned by
        // this value; the platform that lent it out is being dropped, so the
        // direct-map promise (valid "for as long as the platform value
        // lives") ends here and no borrow of it can outlive this call.
        let _ = unsafe { munmap(ptr::with_exposed_provenance_mut(self.base), self.size) };
        // `fd` closes itself.
    }
}

/// A reserved range of virtual addresses where single pages of physical
/// memory can be mapped and unmapped (the vmalloc/kmap area).
pub(crate) struct VmapArea {
    start: usize,
    len: usize,
}

impl VmapArea {
    /// Reserve `len` bytes (whole pages) of address space, inaccessible.
    pub(crate) fn new(len: usize) -> Result<Self, SimError> {
        // SAFETY: a null hint: the kernel picks an address no mapping uses.
        let p = unsafe {
            mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| SimError::os("mmap of the vmap area", e))?;
        Ok(VmapArea {
            start: p.expose_provenance(),
            len,
        })
    }

    /// `(start, end)` of the area.
    pub(crate) fn range(&self) -> (usize, usize) {
        (self.start, self.start + self.len)
    }

    /// Whether `[va, va + len)` is a non-empty run of whole pages inside
    /// the area.
    pub(crate) fn contains_range(&self, va: usize, len: usize) -> bool {
        va % PAGE_SIZE == 0
            && len % PAGE_SIZE == 0
            && len > 0
            && va >= self.start
            && va - self.start <= self.len
            && len <= self.len - (va - self.start)
    }

    /// Map `len` bytes of `phys` from physical address `pa` at `va`,
    /// replacing whatever was there, with every page table entry filled at
    /// once (`MAP_POPULATE`), as Linux fills a vmalloc area's page tables
    /// when it maps it rather than on first touch. The range must satisfy
    /// [`contains_range`](Self::contains_range) and lie inside `phys`
    /// (checked by the caller).
    pub(crate) fn map(
        &self,
        phys: &PhysMem,
        va: usize,
        pa: u64,
        len: usize,
        writable: bool,
    ) -> rustix::io::Result<()> {
        assert!(pa + len as u64 <= phys.size());
        self.map_file(phys.fd.as_fd(), pa, va, len, writable)
    }

    /// Map `len` bytes of the memory file `fd` (RAM or a device's
    /// memory) from offset `off` at `va`, as [`map`](Self::map) does. The
    /// range must satisfy [`contains_range`](Self::contains_range); the
    /// caller checks that the file is that long.
    pub(crate) fn map_file(
        &self,
        fd: BorrowedFd<'_>,
        off: u64,
        va: usize,
        len: usize,
        writable: bool,
    ) -> rustix::io::Result<()> {
        assert!(self.contains_range(va, len));
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: `[va, va + len)` is inside the range this value reserved
        // at creation; nothing but `map_file`/`unmap` ever maps there and
        // no Rust object lives there, so replacing those pages (MAP_FIXED)
        // cannot invalidate memory anything else in the process relies
        // on.
        unsafe {
            mmap(
                ptr::with_exposed_provenance_mut::<c_void>(va),
                len,
                prot,
                MapFlags::SHARED | MapFlags::FIXED | MapFlags::POPULATE,
                fd,
                off,
            )
        }
        .map(|_| ())
    }

    /// Put an inaccessible placeholder back over `[va, va + len)` (which
    /// must satisfy [`contains_range`](Self::contains_range)), keeping the
    /// area reserved: a later access faults.
    pub(crate) fn unmap(&self, va: usize, len: usize) -> rustix::io::Result<()> {
        assert!(self.contains_range(va, len));
        // SAFETY: as in `map_file`: the pages are inside our reservation
        // and only ever hold mappings made by `map_file`/`unmap`.
        unsafe {
            mmap_anonymous(
                ptr::with_exposed_provenance_mut::<c_void>(va),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE,
            )
        }
        .map(|_| ())
    }
}

impl Drop for VmapArea {
    fn drop(&mut self) {
        // SAFETY: the whole reservation (and every page mapped into it) is
        // owned by this value and its platform is being dropped.
        let _ = unsafe { munmap(ptr::with_exposed_provenance_mut(self.start), self.len) };
    }
}
