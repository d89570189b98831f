//! vmalloc: virtually contiguous memory over scattered pages
//! (`mm/vmalloc.c`, `include/linux/vmalloc.h`).
//!
//! The platform's vmap range ([`Platform::vmap_range`]) minus the kmap
//! window at its top is the vmalloc space, `VMALLOC_START..VMALLOC_END`.
//! Its addresses are handed out as `VmapArea` ranges,
//! each a node allocated from the `vmap_area` slab cache, as in Linux:
//!
//! - **Free areas** (`area.rs`) sit in an address-ordered tree augmented
//!   with the largest free size below each node; an allocation takes the
//!   lowest-address fit that honours the alignment
//!   (`find_vmap_lowest_match()`), clipping the free area it found (Linux's
//!   four fit types). A freed range merges with its free neighbours.
//! - **Busy areas** sit in a second tree by address, for
//!   [`find_vm_area`](Kmem::find_vm_area), [`vmalloc_to_page`](Kmem::vmalloc_to_page)
//!   and `/proc/vmallocinfo`. A vmalloc, vmap or ioremap area carries a
//!   [`VmStruct`] (`struct vm_struct`, from kmalloc) with its pages, size
//!   (one guard page included unless [`VM_NO_GUARD`]) and caller.
//! - **Lazy freeing.** A freed area is unmapped at once (an access faults),
//!   but its range goes on the purge list instead of back to the free tree:
//!   other CPUs may still hold TLB entries for it. Once the lazily freed
//!   pages pass [`lazy_max_pages`] (Linux's formula on the CPU count), one
//!   purge flushes the TLB once for the merged range of all of them and
//!   returns them to the free tree. Linux does the purge from a workqueue
//!   (`drain_vmap_work`); kmem's core has no workqueues, so the free that
//!   crosses the threshold purges, unless it runs in atomic context, in
//!   which case the next free that may sleep does (and an allocation that
//!   finds the space full purges in any case).
//! - **Mapping** goes through the platform's page-table door
//!   ([`Platform::map_kernel_range`]), one call per physically contiguous
//!   run of pages: vmalloc maps its pages in frame order, so an area takes
//!   as few calls as its pages allow (on the simulator each call is an
//!   `mmap`).
//!
//! Locking, as Linux's: `free` is `free_vmap_area_lock`, `busy` is
//! `vmap_area_lock`, `purge` is `purge_vmap_area_lock`; none is taken
//! inside another, and none is held across a page allocation or a
//! platform mapping call. `purge_mutex` serialises purges
//! (`vmap_purge_lock`).
//!
//! What one file here may call in another: `area.rs` owns the trees and the
//! purge list; `alloc.rs` and `free.rs` build and tear down areas through
//! `area.rs`'s functions only; `vmap_block.rs` (`vm_map_ram`) uses `area.rs`
//! for its blocks.

pub(crate) mod alloc;
pub(crate) mod area;
pub(crate) mod free;
pub(crate) mod tree;
pub(crate) mod vmap_block;

#[cfg(test)]
mod tests;

pub use alloc::{GFP_VMALLOC32, GFP_VMALLOC_SUPPORTED};
pub use area::LazyFree;
pub use vmap_block::{VMAP_BBMAP_BITS, VMAP_BLOCK_SIZE, VMAP_MAX_ALLOC};

use crate::page::Page;
use crate::platform::Platform;
use crate::{Kmem, PAGE_SHIFT, PAGE_SIZE};
use core::panic::Location;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};
use tree::{AreaTree, VmapArea};

/// The vmalloc space a platform without page tables numbers its areas in:
/// x86_64's `VMALLOC_START..VMALLOC_END` (32 TiB) on 64-bit hosts.
#[cfg(target_pointer_width = "64")]
pub const NUMBERED_VMALLOC_SPACE: (usize, usize) = (0xffff_c900_0000_0000, 0xffff_e900_0000_0000);
/// The vmalloc space a platform without page tables numbers its areas in
/// (the top GiB on 32-bit hosts).
#[cfg(not(target_pointer_width = "64"))]
pub const NUMBERED_VMALLOC_SPACE: (usize, usize) = (0xc000_0000, 0xfff0_0000);

/// `VM_IOREMAP`: an ioremap area.
pub const VM_IOREMAP: u32 = 0x0000_0001;
/// `VM_ALLOC`: a vmalloc area (pages allocated by vmalloc).
pub const VM_ALLOC: u32 = 0x0000_0002;
/// `VM_MAP`: a vmap area (pages the caller gave).
pub const VM_MAP: u32 = 0x0000_0004;
/// `VM_USERMAP`: suitable for `remap_vmalloc_range` (`vmalloc_user`).
pub const VM_USERMAP: u32 = 0x0000_0008;
/// `VM_UNINITIALIZED`: the area is being set up; reports skip it.
pub const VM_UNINITIALIZED: u32 = 0x0000_0020;
/// `VM_NO_GUARD`: no guard page after the area.
pub const VM_NO_GUARD: u32 = 0x0000_0040;
/// `VM_MAP_PUT_PAGES`: `vfree` puts the pages a `vmap` was given.
pub const VM_MAP_PUT_PAGES: u32 = 0x0000_0200;
/// `VM_ALLOW_HUGE_VMAP`: the area may be mapped with PMD-size pages.
pub const VM_ALLOW_HUGE_VMAP: u32 = 0x0000_0400;

/// `VMAP_RAM`: a busy area made by `vm_map_ram()` without a `vm_struct`.
pub(crate) const VMAP_RAM: usize = 0x1;
/// `VMAP_BLOCK`: the area is a per-CPU vmap block.
pub(crate) const VMAP_BLOCK: usize = 0x2;
/// A busy area from the public [`Kmem::alloc_vmap_area`]: only
/// [`Kmem::free_vmap_area`] and [`Kmem::free_vmap_area_noflush`] may free it.
pub(crate) const VMAP_PLAIN: usize = 0x4;

/// `PMD_SHIFT` on x86_64: the huge page size vmalloc may map with.
pub const PMD_SHIFT: u32 = 21;
/// `PMD_SIZE`.
pub const PMD_SIZE: usize = 1 << PMD_SHIFT;

/// `lazy_max_pages()`: lazily freed pages allowed before a purge,
/// `fls(num_online_cpus()) * (32 MiB / PAGE_SIZE)` (16384 on 2 CPUs, as
/// the bundled trace's `nr_lazy_max` shows).
///
/// ```
/// assert_eq!(kmem::vmalloc::lazy_max_pages(2), 16384);
/// assert_eq!(kmem::vmalloc::lazy_max_pages(1), 8192);
/// assert_eq!(kmem::vmalloc::lazy_max_pages(64), 7 * 8192);
/// ```
pub const fn lazy_max_pages(nr_cpus: usize) -> usize {
    let fls = usize::BITS - nr_cpus.leading_zeros();
    fls as usize * ((32 << 20) / PAGE_SIZE)
}

/// `struct vm_struct`: a vmalloc, vmap or ioremap area.
///
/// Invariant: `addr` is page aligned; `size` counts the guard page unless
/// `flags & VM_NO_GUARD`; `pages[0..nr_pages]` are the mapped pages of a
/// `VM_ALLOC`/`VM_MAP` area (`pages` is null for ioremap and `vmap_pfn`).
pub struct VmStruct {
    /// First address (`addr`).
    pub(crate) addr: usize,
    /// Bytes of the area, guard page included (`size`).
    pub(crate) size: usize,
    /// `VM_*` flags.
    pub(crate) flags: u32,
    /// The page array (`struct page **pages`), from kmalloc, or from
    /// vmalloc when it is larger than a page (`vpages`).
    pub(crate) pages: *mut *const Page,
    /// Order of each entry of `pages` (`page_order`; 0 unless huge).
    pub(crate) page_order: u32,
    /// Entries in `pages`, counted in base pages (`nr_pages`).
    pub(crate) nr_pages: usize,
    /// First physical address of an ioremap area (`phys_addr`).
    pub(crate) phys_addr: u64,
    /// Who asked (`caller`).
    pub(crate) caller: &'static Location<'static>,
    /// Bytes the caller asked for (`requested_size`).
    pub(crate) requested_size: usize,
}

impl VmStruct {
    /// The area's first address.
    pub fn addr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// `get_vm_area_size()`: bytes without the guard page.
    pub fn usable_size(&self) -> usize {
        self.info().usable_size()
    }

    /// The area's figures (size, flags, pages, caller...), copied.
    pub fn info(&self) -> VmAreaInfo {
        VmAreaInfo {
            addr: self.addr,
            size: self.size,
            flags: self.flags,
            nr_pages: self.nr_pages,
            phys_addr: self.phys_addr,
            caller: self.caller,
            requested_size: self.requested_size,
        }
    }

    /// The page array's address (for `vpages`).
    pub(crate) fn pages_ptr(&self) -> *const u8 {
        self.pages.cast()
    }

    /// The `i`-th page (`area->pages[i]`), for `i < nr_pages`.
    pub fn page(&self, i: usize) -> Option<&Page> {
        if self.pages.is_null() || i >= self.nr_pages {
            return None;
        }
        // SAFETY: `pages` holds `nr_pages` valid descriptor pointers for as
        // long as the area lives (set up by vmalloc/vmap before the area
        // left VM_UNINITIALIZED), and descriptors live as long as the
        // machine.
        Some(unsafe { &**self.pages.add(i) })
    }
}

/// A copy of an area's `vm_struct` ([`Kmem::find_vm_area`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmAreaInfo {
    addr: usize,
    size: usize,
    flags: u32,
    nr_pages: usize,
    phys_addr: u64,
    caller: &'static Location<'static>,
    requested_size: usize,
}

impl VmAreaInfo {
    /// The area's first address.
    pub fn addr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// Bytes of the area, guard page included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `get_vm_area_size()`: bytes without the guard page.
    pub fn usable_size(&self) -> usize {
        if self.flags & VM_NO_GUARD != 0 {
            self.size
        } else {
            self.size - PAGE_SIZE
        }
    }

    /// The `VM_*` flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Pages mapped.
    pub fn nr_pages(&self) -> usize {
        self.nr_pages
    }

    /// The physical address of an ioremap area (0 otherwise).
    pub fn phys_addr(&self) -> u64 {
        self.phys_addr
    }

    /// The caller that made the area.
    pub fn caller(&self) -> &'static Location<'static> {
        self.caller
    }

    /// Bytes the caller asked for.
    pub fn requested_size(&self) -> usize {
        self.requested_size
    }
}

/// A busy tree or free tree behind its spin lock.
pub(crate) struct Tree(pub(crate) AreaTree);

// SAFETY: the tree's nodes are slab objects of the machine, reached only
// through the tree while its lock is held; moving the tree between CPUs
// moves that ownership with it.
unsafe impl Send for Tree {}

/// The lazily freed areas (`purge_vmap_area_list`): a singly linked list
/// through `VmapArea::list_next`.
pub(crate) struct PurgeList {
    /// First area, or null.
    pub(crate) head: *mut VmapArea,
    /// Areas on the list.
    pub(crate) len: usize,
}

// SAFETY: as `Tree`: the listed nodes are owned by the list under its lock.
unsafe impl Send for PurgeList {}

/// Counters the reports and the trace replay read.
#[derive(Default)]
pub(crate) struct VmallocStats {
    /// `alloc_vmap_area` calls that succeeded.
    pub(crate) allocs: AtomicUsize,
    /// `alloc_vmap_area` calls that failed.
    pub(crate) alloc_failures: AtomicUsize,
    /// Areas freed lazily (`free_vmap_area_noflush`).
    pub(crate) lazy_frees: AtomicUsize,
    /// Purges that found work (`purge_vmap_area_lazy` with areas).
    pub(crate) purges: AtomicUsize,
    /// Areas returned to the free tree by purges.
    pub(crate) purged_areas: AtomicUsize,
}

/// A purge, as the `vmalloc:purge_vmap_area_lazy` event shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeEvent {
    /// Lowest address flushed (`usize::MAX` when nothing was purged).
    pub start: usize,
    /// End of the flushed range (0 when nothing was purged).
    pub end: usize,
    /// Areas returned to the free tree.
    pub num_purged: usize,
}

/// x86's page-fault error code (`enum x86_pf_error_code`) of a fault in
/// kernel mode, as an oops words it (`show_fault_oops()`): `Display`
/// gives Linux's two lines,
/// "#PF: supervisor write access in kernel mode" and "#PF:
/// error_code(0x0002) - not-present page". Fault handlers (the
/// simulator's, a kernel's) print it after "BUG: unable to handle page
/// fault for address: ...".
///
/// ```
/// let e = kmem::vmalloc::PfErrorCode(0x2);
/// assert_eq!(e.to_string(), "#PF: supervisor write access in kernel mode\n#PF: error_code(0x0002) - not-present page");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfErrorCode(pub u64);

impl PfErrorCode {
    /// `X86_PF_PROT`: a protection fault (else the page was not present).
    pub const PROT: u64 = 1 << 0;
    /// `X86_PF_WRITE`.
    pub const WRITE: u64 = 1 << 1;
    /// `X86_PF_USER`: from user mode.
    pub const USER: u64 = 1 << 2;
    /// `X86_PF_RSVD`: a reserved bit was set in a page-table entry.
    pub const RSVD: u64 = 1 << 3;
    /// `X86_PF_INSTR`: an instruction fetch.
    pub const INSTR: u64 = 1 << 4;
    /// `X86_PF_PK`: a protection-keys violation.
    pub const PK: u64 = 1 << 5;
}

impl core::fmt::Display for PfErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let e = self.0;
        let access = if e & Self::INSTR != 0 {
            "instruction fetch"
        } else if e & Self::WRITE != 0 {
            "write access"
        } else {
            "read access"
        };
        let mode = if e & Self::USER != 0 {
            "user"
        } else {
            "kernel"
        };
        let kind = if e & Self::PROT == 0 {
            "not-present page"
        } else if e & Self::RSVD != 0 {
            "reserved bit violation"
        } else if e & Self::PK != 0 {
            "protection keys violation"
        } else {
            "permissions violation"
        };
        write!(
            f,
            "#PF: supervisor {access} in {mode} mode\n#PF: error_code(0x{e:04x}) - {kind}"
        )
    }
}

/// The vmalloc subsystem's state in a machine.
pub(crate) struct VmallocState {
    /// `VMALLOC_START` (0 when the platform has no vmap range).
    pub(crate) start: usize,
    /// `VMALLOC_END`.
    pub(crate) end: usize,
    /// Whether the platform can map pages there (else the space is only
    /// numbered, for the vmap_area allocator).
    pub(crate) mappable: bool,
    /// `vmap_area_cachep`.
    pub(crate) cache: AtomicPtr<crate::slab::KmemCache>,
    /// `free_vmap_area_root` under `free_vmap_area_lock` (augmented).
    pub(crate) free: spin::Mutex<Tree>,
    /// The busy areas under `vmap_area_lock`.
    pub(crate) busy: spin::Mutex<Tree>,
    /// `purge_vmap_area_list` under its lock.
    pub(crate) purge: spin::Mutex<PurgeList>,
    /// `vmap_purge_lock`: one purge at a time.
    pub(crate) purge_mutex: spin::Mutex<()>,
    /// `ne_fit_preload_node`: one spare node for splitting a free area,
    /// taken before the free tree's lock (null when empty).
    pub(crate) preload: AtomicPtr<VmapArea>,
    /// `vmap_lazy_nr`: pages on the purge list.
    pub(crate) lazy_nr: AtomicUsize,
    /// `nr_vmalloc_pages`: pages allocated by vmalloc (`VmallocUsed`).
    pub(crate) nr_vmalloc_pages: AtomicUsize,
    /// Addresses `vfree()`d from interrupt context, waiting for a context
    /// that may sleep (`vfree_deferred`): a list through the freed memory
    /// itself, as Linux's `llist` is.
    pub(crate) deferred: AtomicPtr<usize>,
    /// The counters.
    pub(crate) stats: VmallocStats,
    /// The last purge, for the replay's fidelity check.
    pub(crate) last_purge: spin::Mutex<Option<PurgeEvent>>,
    /// The per-CPU vmap blocks of `vm_map_ram` (see [`vmap_block`]).
    pub(crate) vmap_blocks: vmap_block::VmapBlocks,
}

impl VmallocState {
    /// The state for the vmalloc space `[start, end)`.
    pub(crate) fn new(start: usize, end: usize, mappable: bool) -> Self {
        VmallocState {
            start,
            end,
            mappable,
            cache: AtomicPtr::new(core::ptr::null_mut()),
            free: spin::Mutex::new(Tree(AreaTree::new(true))),
            busy: spin::Mutex::new(Tree(AreaTree::new(false))),
            purge: spin::Mutex::new(PurgeList {
                head: core::ptr::null_mut(),
                len: 0,
            }),
            purge_mutex: spin::Mutex::new(()),
            preload: AtomicPtr::new(core::ptr::null_mut()),
            lazy_nr: AtomicUsize::new(0),
            nr_vmalloc_pages: AtomicUsize::new(0),
            deferred: AtomicPtr::new(core::ptr::null_mut()),
            stats: VmallocStats::default(),
            last_purge: spin::Mutex::new(None),
            vmap_blocks: vmap_block::VmapBlocks::new(),
        }
    }
}

/// What `/proc/meminfo` shows of vmalloc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmallocInfo {
    /// `VmallocTotal`: bytes of the vmalloc space.
    pub total: usize,
    /// `VmallocUsed`: pages allocated by vmalloc.
    pub used_pages: usize,
    /// `VmallocChunk`: Linux has printed 0 since 4.20 (computing it meant
    /// walking every area); kmem does the same.
    pub chunk: usize,
}

impl<P: Platform> Kmem<P> {
    /// `vmalloc_init()`: the `vmap_area` cache and one free area covering
    /// the vmalloc space. Runs at the end of boot, after the slab
    /// allocator.
    pub(crate) fn vmalloc_init(&self) -> crate::Result<()> {
        let c = self.kmem_cache_create(
            "vmap_area",
            core::mem::size_of::<VmapArea>(),
            core::mem::align_of::<VmapArea>(),
            crate::slab::SlabFlags::NONE,
            None,
        )?;
        self.vmalloc
            .cache
            .store(c as *const _ as *mut crate::slab::KmemCache, Relaxed);
        let v = &self.vmalloc;
        if v.end > v.start {
            let node = self.vmap_area_new(crate::gfp::GFP_KERNEL, v.start, v.end)?;
            // SAFETY: a fresh node covering the whole space; the tree is
            // empty and nothing else runs during boot.
            unsafe { v.free.lock().0.insert(node) };
        }
        self.vmap_blocks_init()
    }

    /// `VMALLOC_START..VMALLOC_END`, or `None` when the platform has no
    /// page tables (the arena), where nothing can be mapped.
    pub fn vmalloc_range(&self) -> Option<(usize, usize)> {
        let v = &self.vmalloc;
        (v.mappable && v.end > v.start).then_some((v.start, v.end))
    }

    /// `is_vmalloc_addr()`: whether `addr` lies in the vmalloc space.
    pub fn is_vmalloc_addr(&self, addr: *const u8) -> bool {
        let a = addr as usize;
        a >= self.vmalloc.start && a < self.vmalloc.end
    }

    /// The `vm_struct` of the area holding `addr`, for callers that own
    /// the area (it must not be freed while the reference is used).
    pub(crate) fn find_vm_struct(&self, addr: *const u8) -> Option<&VmStruct> {
        let busy = self.vmalloc.busy.lock();
        let va = busy.0.find(addr as usize)?;
        // SAFETY: a node in the busy tree, read under its lock; `vm` is null
        // or a live VmStruct owned by the area, which the caller keeps alive.
        unsafe { va.as_ref().vm.as_ref() }
    }

    /// `find_vm_area()`: what the area that starts at or contains `addr`
    /// (vmalloc, vmap or ioremap) was when looked up, copied out under the
    /// lock, so it stays valid whatever another CPU frees meanwhile.
    pub fn find_vm_area(&self, addr: *const u8) -> Option<VmAreaInfo> {
        let busy = self.vmalloc.busy.lock();
        let va = busy.0.find(addr as usize)?;
        // SAFETY: as find_vm_struct, read under the busy lock.
        let vm = unsafe { va.as_ref().vm.as_ref() }?;
        Some(vm.info())
    }

    /// `vmalloc_to_page()`: the page mapped at `addr` in a vmalloc or vmap
    /// area (page descriptors live as long as the machine).
    pub fn vmalloc_to_page(&self, addr: *const u8) -> Option<&Page> {
        let busy = self.vmalloc.busy.lock();
        let va = busy.0.find(addr as usize)?;
        // SAFETY: a busy node and its VmStruct and page array, read under
        // the busy lock; the descriptor itself is permanent.
        let vm = unsafe { va.as_ref().vm.as_ref() }?;
        if vm.flags & VM_UNINITIALIZED != 0 {
            return None;
        }
        let page = vm.page((addr as usize - vm.addr) >> PAGE_SHIFT)?;
        // SAFETY: descriptors live in mem_map for the machine's life.
        Some(unsafe { &*(page as *const Page) })
    }

    /// `vmalloc_to_pfn()`.
    pub fn vmalloc_to_pfn(&self, addr: *const u8) -> Option<u64> {
        let page = self.vmalloc_to_page(addr)?;
        self.mem_map().page_to_pfn(page)
    }

    /// `/proc/meminfo`'s vmalloc lines.
    pub fn vmalloc_info(&self) -> VmallocInfo {
        VmallocInfo {
            total: self.vmalloc.end - self.vmalloc.start,
            used_pages: self.vmalloc.nr_vmalloc_pages.load(Relaxed),
            chunk: 0,
        }
    }

    /// `vmap_lazy_nr`: pages freed lazily and not yet purged.
    pub fn vmap_lazy_nr(&self) -> usize {
        self.vmalloc.lazy_nr.load(Relaxed)
    }

    /// [`lazy_max_pages`] for this machine's CPUs.
    pub fn lazy_max_pages(&self) -> usize {
        lazy_max_pages(self.nr_cpus)
    }

    /// Counters: (areas allocated, allocations failed, lazy frees, purges
    /// with work, areas purged).
    pub fn vmap_area_stats(&self) -> (usize, usize, usize, usize, usize) {
        let s = &self.vmalloc.stats;
        (
            s.allocs.load(Relaxed),
            s.alloc_failures.load(Relaxed),
            s.lazy_frees.load(Relaxed),
            s.purges.load(Relaxed),
            s.purged_areas.load(Relaxed),
        )
    }

    /// The last purge (`vmalloc:purge_vmap_area_lazy`), if any ran.
    pub fn last_vmap_purge(&self) -> Option<PurgeEvent> {
        *self.vmalloc.last_purge.lock()
    }

    /// What a faulting access at `addr` hit, for a page-fault oops: the
    /// vmalloc area (its range, size, kind and caller) and whether the
    /// address is its guard page, a lazily freed area, or free space.
    /// Takes locks only with `try_lock` and writes through `out` only, so
    /// a fault handler may call it (the simulator's SIGSEGV handler does).
    pub fn describe_vmalloc_addr(
        &self,
        addr: usize,
        out: &mut dyn core::fmt::Write,
    ) -> core::fmt::Result {
        let v = &self.vmalloc;
        if addr < v.start || addr >= v.end {
            return writeln!(
                out,
                "vmalloc: {addr:#x} is outside the vmalloc space {:#x}-{:#x}",
                v.start, v.end
            );
        }
        let Some(busy) = v.busy.try_lock() else {
            return writeln!(
                out,
                "vmalloc: {addr:#x}: the busy areas are locked; no details"
            );
        };
        if let Some(va) = busy.0.find(addr) {
            // SAFETY: a busy node under its lock; `vm` is null or live.
            let (s, e, flags, vm) = unsafe {
                let n = va.as_ref();
                (n.va_start, n.va_end, n.flags, n.vm.as_ref())
            };
            return match vm {
                Some(vm) => {
                    let kind = if vm.flags & VM_IOREMAP != 0 {
                        "ioremap"
                    } else if vm.flags & VM_MAP != 0 {
                        "vmap"
                    } else {
                        "vmalloc"
                    };
                    let place = if addr >= vm.addr + vm.usable_size() {
                        "the guard page of"
                    } else {
                        "inside"
                    };
                    writeln!(
                        out,
                        "vmalloc: {addr:#x} is {place} the {kind} area {s:#x}-{e:#x} ({} bytes, {} usable) allocated at {}",
                        vm.size,
                        vm.usable_size(),
                        vm.caller
                    )
                }
                None if flags & VMAP_BLOCK != 0 => writeln!(
                    out,
                    "vmalloc: {addr:#x} is in the vm_map_ram block {s:#x}-{e:#x}, at a page not mapped now"
                ),
                None => writeln!(out, "vmalloc: {addr:#x} is in the vmap area {s:#x}-{e:#x}"),
            };
        }
        // SAFETY: a busy node read under the lock.
        let below = busy.0.find_le(addr).map(|b| unsafe { b.as_ref().va_start });
        drop(busy);
        if let Some(purge) = v.purge.try_lock() {
            let mut p = purge.head;
            while let Some(va) = core::ptr::NonNull::new(p) {
                // SAFETY: listed nodes under the list's lock.
                let n = unsafe { va.as_ref() };
                if addr >= n.va_start && addr < n.va_end {
                    return writeln!(
                        out,
                        "vmalloc: {addr:#x} is in the area {:#x}-{:#x}, freed (vfree()d or unmapped) and not yet purged: a use after free",
                        n.va_start, n.va_end
                    );
                }
                p = n.list_next;
            }
        }
        match below {
            Some(b) => writeln!(
                out,
                "vmalloc: {addr:#x} is in free vmalloc space, above the area starting at {b:#x}"
            ),
            None => writeln!(out, "vmalloc: {addr:#x} is in free vmalloc space"),
        }
    }
}
