//! Building vmalloc, vmap and `vmap_pfn` areas (`mm/vmalloc.c`:
//! `__get_vm_area_node()`, `__vmalloc_node_range_noprof()`,
//! `__vmalloc_area_node()`, `vmap()`, `vmap_pfn()`, `vrealloc()`), and
//! the vmalloc family of entry points.
//!
//! GFP rules, as Linux 6.18's:
//! - `__vmalloc()` and `vmalloc_huge()` keep only `GFP_VMALLOC_SUPPORTED`
//!   and warn once about the rest ("Unexpected gfp: ... Fix your code!");
//!   the other entry points pass the mask on as given.
//! - The non-blocking masks (`GFP_ATOMIC`, `GFP_NOWAIT`) are served: the
//!   pages, the page array and the `vmap_area` node are taken without
//!   sleeping, and a full space is not purged.
//! - `GFP_NOFS`/`GFP_NOIO` reach the page-table allocations the platform
//!   may make through a memalloc scope around the mapping
//!   (`memalloc_apply_gfp_scope()`), since those always ask GFP_KERNEL.
//! - A mask that may sleep, in atomic context, is Linux's "sleeping
//!   function called from invalid context"; kmem reports it the same way
//!   and fails the call instead of sleeping.

use super::free::PagesToFree;
use super::*;
use crate::gfp::{self, Gfp};
use crate::platform::{Level, PgProt, Platform};
use crate::{report, Error, Kmem, Result};
use core::fmt;
use core::panic::Location;
use core::ptr::NonNull;

/// `GFP_VMALLOC_SUPPORTED` (Linux 6.18 with `__GFP_RETRY_MAYFAIL`): what
/// `__vmalloc()` and `vmalloc_huge()` accept.
pub const GFP_VMALLOC_SUPPORTED: Gfp = gfp::GFP_KERNEL
    .union(gfp::GFP_ATOMIC)
    .union(gfp::GFP_NOWAIT)
    .union(gfp::__GFP_NOFAIL)
    .union(gfp::__GFP_ZERO)
    .union(gfp::__GFP_NORETRY)
    .union(gfp::__GFP_RETRY_MAYFAIL)
    .union(gfp::GFP_NOFS)
    .union(gfp::GFP_NOIO)
    .union(gfp::GFP_KERNEL_ACCOUNT)
    .union(gfp::GFP_USER);

/// `GFP_VMALLOC32`: `vmalloc_32()`'s mask on x86_64 (pages below 4 GiB).
pub const GFP_VMALLOC32: Gfp = gfp::GFP_KERNEL.union(gfp::__GFP_DMA32);

/// `IOREMAP_MAX_ORDER`: the largest alignment an ioremap area gets
/// (`PUD_SHIFT` on x86_64, which has huge vmap).
const IOREMAP_MAX_ORDER: u32 = 30;

impl<P: Platform> Kmem<P> {
    /// `warn_alloc()` with vmalloc's message: "comm: vmalloc error: ...,
    /// mode:...(...), nodemask=(null)" and the memory report, unless
    /// `__GFP_NOWARN`.
    pub(crate) fn vmalloc_warn(&self, gfp: Gfp, msg: fmt::Arguments<'_>) {
        if gfp.contains(gfp::__GFP_NOWARN) {
            return;
        }
        let task = self.p.current();
        report!(
            &self.p,
            Level::Warning,
            "{}: {}, mode:{:#x}({}), nodemask=(null),cpuset=/,mems_allowed=0",
            task.comm(),
            msg,
            gfp.bits(),
            gfp
        );
        report!(
            &self.p,
            Level::Warning,
            "CPU: {} PID: {} Comm: {}",
            self.p.smp_processor_id(),
            task.pid,
            task.comm()
        );
        crate::show_mem::show_mem(self);
    }

    /// Whether a vmalloc call with `gfp` may go on here: a mask that may
    /// sleep in atomic context is reported (`might_alloc()`) and refused.
    fn vmalloc_context_ok(&self, gfp: Gfp, caller: &Location<'_>) -> Result<()> {
        if gfp.contains(gfp::__GFP_DIRECT_RECLAIM) && self.p.in_atomic() {
            self.might_alloc(gfp, caller);
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    /// The platform's vmalloc space, or a report that there is none.
    fn vmalloc_space(&self, what: &str) -> Result<(usize, usize)> {
        self.vmalloc_range().ok_or_else(|| {
            report!(
                &self.p,
                Level::Err,
                "{}: this platform has no page tables: no vmalloc space",
                what
            );
            Error::NotSupported
        })
    }

    /// `__get_vm_area_node()`: a `vm_struct` (kmalloc) and its busy area.
    /// `size` is page aligned here and a guard page added unless
    /// `VM_NO_GUARD`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn get_vm_area_node(
        &self,
        size: usize,
        mut align: usize,
        shift: u32,
        flags: u32,
        start: usize,
        end: usize,
        node: i32,
        gfp: Gfp,
        caller: &'static Location<'static>,
    ) -> Result<NonNull<VmStruct>> {
        let requested_size = size;
        let mut size = size
            .checked_next_multiple_of(1 << shift)
            .ok_or(Error::NoMemory)?;
        if size == 0 {
            return Err(Error::InvalidArgument);
        }
        if flags & VM_IOREMAP != 0 {
            // get_count_order_long(size): the order of the next power of two.
            let order = usize::BITS - (size - 1).leading_zeros();
            align = 1 << order.clamp(PAGE_SHIFT, IOREMAP_MAX_ORDER);
        }
        if flags & VM_NO_GUARD == 0 {
            size = size.checked_add(PAGE_SIZE).ok_or(Error::NoMemory)?;
        }
        let mem = self.kmalloc_node(
            core::mem::size_of::<VmStruct>(),
            (gfp & gfp::GFP_RECLAIM_MASK) | gfp::__GFP_ZERO,
            node,
        )?;
        let vm = mem.cast::<VmStruct>();
        // SAFETY: a fresh kmalloc object, sized and aligned for a VmStruct
        // (kmalloc aligns to at least 8 bytes).
        unsafe {
            vm.as_ptr().write(VmStruct {
                addr: 0,
                size: 0,
                flags,
                pages: core::ptr::null_mut(),
                page_order: 0,
                nr_pages: 0,
                phys_addr: 0,
                caller,
                requested_size,
            })
        };
        match self.alloc_vmap_area_node(size, align, start, end, node, gfp, 0, Some(vm)) {
            Ok(_) => Ok(vm),
            Err(e) => {
                // SAFETY: the VmStruct was never published.
                let _ = unsafe { self.kfree(vm.as_ptr().cast()) };
                Err(e)
            }
        }
    }

    /// `get_vm_area_caller()`: reserve `size` bytes of vmalloc space (plus
    /// the guard page) with `flags`, mapping nothing. Give it back with
    /// [`free_vm_area`](Self::free_vm_area).
    #[track_caller]
    pub fn get_vm_area(&self, size: usize, flags: u32) -> Result<&VmStruct> {
        let (start, end) = self.vmalloc_space("get_vm_area")?;
        // Flags that say what the area holds are vmalloc's to set.
        let flags = flags & (VM_IOREMAP | VM_USERMAP | VM_NO_GUARD);
        let vm = self.get_vm_area_node(
            size,
            1,
            PAGE_SHIFT,
            flags,
            start,
            end,
            -1,
            gfp::GFP_KERNEL,
            Location::caller(),
        )?;
        // SAFETY: the area lives until free_vm_area().
        Ok(unsafe { vm.as_ref() })
    }

    /// Map `pages` at `addr` (`vmap_pages_range()`): one platform call per
    /// physically contiguous run, with PMD-size pages where `page_shift`
    /// allows and the run is aligned. On failure nothing stays mapped.
    pub(crate) fn vmap_pages_range(
        &self,
        addr: usize,
        pages: &[*const Page],
        prot: PgProt,
        page_shift: u32,
    ) -> Result<()> {
        let mm = self.mem_map();
        let mut i = 0;
        while i < pages.len() {
            // SAFETY: the caller's array holds live descriptors.
            let Some(pfn) = mm.page_to_pfn(unsafe { &*pages[i] }) else {
                if i > 0 {
                    self.p.unmap_kernel_range(addr, i << PAGE_SHIFT);
                }
                return Err(Error::BadAddress);
            };
            let mut n = 1;
            while i + n < pages.len()
                // SAFETY: as above.
                && mm.page_to_pfn(unsafe { &*pages[i + n] }) == Some(pfn + n as u64)
            {
                n += 1;
            }
            let va = addr + (i << PAGE_SHIFT);
            let pa = crate::pfn_phys(pfn);
            let len = n << PAGE_SHIFT;
            let huge = page_shift >= PMD_SHIFT
                && va % PMD_SIZE == 0
                && pa % PMD_SIZE as u64 == 0
                && len % PMD_SIZE == 0;
            let shift = if huge { PMD_SHIFT } else { PAGE_SHIFT };
            if let Err(e) = self.p.map_kernel_range(va, pa, len, prot, shift) {
                if i > 0 {
                    self.p.unmap_kernel_range(addr, i << PAGE_SHIFT);
                }
                return Err(e);
            }
            i += n;
        }
        Ok(())
    }

    /// `memalloc_apply_gfp_scope()`: the scope that carries `gfp`'s limits
    /// to the platform's page-table allocations. Returns what to restore.
    fn apply_gfp_scope(&self, gfp: Gfp) -> Option<(u32, u32)> {
        let bit = if !gfp.contains(gfp::__GFP_DIRECT_RECLAIM)
            || gfp.intersects(gfp::__GFP_NORETRY | gfp::__GFP_RETRY_MAYFAIL)
        {
            crate::sched::PF_MEMALLOC
        } else if gfp.contains(gfp::__GFP_IO) && !gfp.contains(gfp::__GFP_FS) {
            crate::sched::PF_MEMALLOC_NOFS
        } else if !gfp.intersects(gfp::__GFP_IO | gfp::__GFP_FS) {
            crate::sched::PF_MEMALLOC_NOIO
        } else {
            return None;
        };
        Some((bit, self.memalloc_flags_save(bit)))
    }

    /// `vm_area_alloc_pages()`: up to `pages.len()` base pages into
    /// `pages`, as blocks of `1 << order` split into base pages. Returns
    /// how many.
    ///
    /// An area of base pages (`order` 0) first takes the largest blocks
    /// the buddy lists have without trying hard, then base pages for the
    /// rest: see [`vm_area_alloc_large`](Self::vm_area_alloc_large).
    fn vm_area_alloc_pages(
        &self,
        gfp: Gfp,
        node: i32,
        order: u32,
        pages: &mut [*const Page],
    ) -> usize {
        let mut done = 0;
        if order == 0 && pages.len() > 1 {
            done = self.vm_area_alloc_large(gfp, node, pages);
        }
        done + self.vm_area_alloc_blocks(gfp, node, order, &mut pages[done..])
    }

    /// The opportunistic first step of an area of base pages, a kmem
    /// decision after a 2025 proposal for Linux ("mm/vmalloc: request
    /// large order pages from buddy allocator"; Linux 6.18 takes base
    /// pages, in bulk from the per-CPU lists): blocks of the largest order
    /// that fits the pages still needed (at most `pageblock_order`), split
    /// into base pages, each order tried until it fails once and then the
    /// next lower one. The attempts neither reclaim directly, insist, dip
    /// into a reserve, make compound pages nor warn: `__GFP_NORETRY |
    /// __GFP_NOWARN | __GFP_NOMEMALLOC`, without `__GFP_DIRECT_RECLAIM`,
    /// `__GFP_NOFAIL`, `__GFP_RETRY_MAYFAIL`, `__GFP_HIGH` and
    /// `__GFP_COMP` (kswapd is woken below the low watermark, as for the
    /// base pages that would follow). A block the buddy lists do not have
    /// at once is not worth any effort: base pages do as well.
    ///
    /// Why: one page-allocator call per block instead of per page; the
    /// area is physically contiguous in long runs, which the simulator maps
    /// with one host `mmap` each and a kernel with fewer TLB misses on
    /// huge-page direct maps; and an unmovable area of many pages fills
    /// whole blocks instead of scattering unmovable pages over pageblocks
    /// that the per-CPU lists took them from.
    fn vm_area_alloc_large(&self, gfp: Gfp, node: i32, pages: &mut [*const Page]) -> usize {
        let no = gfp::__GFP_DIRECT_RECLAIM
            | gfp::__GFP_NOFAIL
            | gfp::__GFP_RETRY_MAYFAIL
            | gfp::__GFP_HIGH
            | gfp::__GFP_COMP;
        let try_gfp = (gfp & !no) | gfp::__GFP_NORETRY | gfp::__GFP_NOWARN | gfp::__GFP_NOMEMALLOC;
        let mut done = 0;
        let mut order = crate::PAGEBLOCK_ORDER;
        while pages.len() - done >= 2 {
            order = order.min((pages.len() - done).ilog2());
            done += self.vm_area_alloc_blocks(try_gfp, node, order, &mut pages[done..]);
            // It stops when the pages left no longer fill a block (the
            // `min` above lowers the order) or when an allocation fails:
            // this order is then done with.
            if pages.len() - done >= 1 << order {
                if order == 1 {
                    break;
                }
                order -= 1;
            }
        }
        done
    }

    /// Blocks of `1 << order` split into base pages, into `pages` until it
    /// is full or an allocation fails. Returns the base pages allocated.
    fn vm_area_alloc_blocks(
        &self,
        gfp: Gfp,
        node: i32,
        order: u32,
        pages: &mut [*const Page],
    ) -> usize {
        let step = 1usize << order;
        let mut done = 0;
        while done + step <= pages.len() {
            let Ok(page) = self.alloc_pages_node(node, gfp, order) else {
                break;
            };
            if order > 0 && self.split_page(page, order).is_err() {
                let _ = self.__free_pages(page, order);
                break;
            }
            let mm = self.mem_map();
            let pfn = mm
                .page_to_pfn(page)
                .expect("an allocated page is in mem_map");
            for (k, slot) in pages[done..done + step].iter_mut().enumerate() {
                let p = mm
                    .pfn_to_page(pfn + k as u64)
                    .expect("a block's pages are in mem_map");
                *slot = p as *const Page;
            }
            done += step;
        }
        done
    }

    /// A page array of `bytes`: kmalloc up to a page, vmalloc beyond, as
    /// `__vmalloc_area_node()` does (the recursion ends: each level's array
    /// is 512 times smaller). `/proc/vmallocinfo` shows `vpages` for an
    /// area whose array came from vmalloc.
    fn alloc_page_array(
        &self,
        bytes: usize,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> Result<NonNull<u8>> {
        if bytes > PAGE_SIZE {
            self.vmalloc_node_range(
                bytes,
                1,
                self.vmalloc.start,
                self.vmalloc.end,
                gfp,
                PgProt::Kernel,
                0,
                node,
                caller,
            )
        } else {
            self.kmalloc_node(bytes, gfp, node)
        }
    }

    /// `__vmalloc_area_node()`: allocate the page array and the pages, and
    /// map them. On failure the area and every page are given back.
    fn vmalloc_area_node(
        &self,
        vm: NonNull<VmStruct>,
        mut gfp: Gfp,
        prot: PgProt,
        page_shift: u32,
        node: i32,
    ) -> Result<()> {
        // SAFETY: the area is ours until VM_UNINITIALIZED is cleared.
        let area = unsafe { &mut *vm.as_ptr() };
        let nested_gfp = (gfp & gfp::GFP_RECLAIM_MASK) | gfp::__GFP_ZERO;
        let size = area.usable_size();
        let nr_small_pages = size >> PAGE_SHIFT;
        let array_size = nr_small_pages * core::mem::size_of::<*const Page>();
        if !gfp.intersects(gfp::__GFP_DMA | gfp::__GFP_DMA32) {
            gfp |= gfp::__GFP_HIGHMEM;
        }
        let array = self.alloc_page_array(array_size, nested_gfp, node, area.caller);
        let Ok(array) = array else {
            self.vmalloc_warn(
                gfp,
                format_args!(
                    "vmalloc error: size {}, failed to allocated page array size {}",
                    size, array_size
                ),
            );
            self.remove_and_free_vm(vm, PagesToFree::None);
            return Err(Error::NoMemory);
        };
        area.pages = array.as_ptr().cast();
        area.page_order = page_shift - PAGE_SHIFT;
        // SAFETY: the array holds `nr_small_pages` pointers (zeroed) and is
        // ours.
        let pages = unsafe { core::slice::from_raw_parts_mut(area.pages, nr_small_pages) };
        let page_gfp = if area.page_order > 0 {
            gfp | gfp::__GFP_NOWARN
        } else {
            gfp
        };
        area.nr_pages = self.vm_area_alloc_pages(page_gfp, node, area.page_order, pages);
        self.vmalloc
            .nr_vmalloc_pages
            .fetch_add(area.nr_pages, core::sync::atomic::Ordering::Relaxed);
        if area.nr_pages != nr_small_pages {
            if area.page_order == 0 {
                self.vmalloc_warn(
                    gfp,
                    format_args!(
                        "vmalloc error: size {}, failed to allocate pages",
                        area.nr_pages * PAGE_SIZE
                    ),
                );
            }
            self.remove_and_free_vm(vm, PagesToFree::Allocated);
            return Err(Error::NoMemory);
        }
        // In frame order, the area is as few physically contiguous runs as
        // its pages allow, and the platform maps each run in one call (the
        // per-CPU lists hand pages out in no useful order). Which page backs
        // which address is free for vmalloc to choose; Linux maps them in
        // allocation order, page by page.
        let mm = self.mem_map();
        pages.sort_unstable_by_key(|&p| mm.index_of_ptr(p));
        let scope = self.apply_gfp_scope(gfp);
        let mapped = self.vmap_pages_range(area.addr, pages, prot, page_shift);
        if let Some((bit, saved)) = scope {
            self.memalloc_flags_restore(bit, saved);
        }
        if mapped.is_err() {
            self.vmalloc_warn(
                gfp,
                format_args!(
                    "vmalloc error: size {}, failed to map pages",
                    area.nr_pages * PAGE_SIZE
                ),
            );
            self.remove_and_free_vm(vm, PagesToFree::Allocated);
            return Err(Error::NoMemory);
        }
        Ok(())
    }

    /// `__vmalloc_node_range()`: `size` bytes of virtually contiguous
    /// memory in `[start, end)` aligned to `align`, from pages of `gfp` on
    /// `node` (-1: any), mapped with `prot`; `vm_flags` adds `VM_*` flags
    /// (`VM_ALLOW_HUGE_VMAP` for PMD-size mappings when the size allows,
    /// `VM_NO_GUARD`, `VM_USERMAP`). `caller` is what
    /// `/proc/vmallocinfo` shows.
    #[allow(clippy::too_many_arguments)]
    pub fn vmalloc_node_range(
        &self,
        size: usize,
        align: usize,
        start: usize,
        end: usize,
        gfp: Gfp,
        prot: PgProt,
        vm_flags: u32,
        node: i32,
        caller: &'static Location<'static>,
    ) -> Result<NonNull<u8>> {
        self.vmalloc_space("vmalloc")?;
        if start >= end {
            return Err(Error::InvalidArgument);
        }
        if size == 0 {
            report!(
                &self.p,
                Level::Warning,
                "WARNING: CPU: {} at {}: __vmalloc_node_range_noprof: vmalloc(0)",
                self.p.smp_processor_id(),
                caller
            );
            return Err(Error::InvalidArgument);
        }
        self.vmalloc_context_ok(gfp, caller)?;
        if (size >> PAGE_SHIFT) as u64 > self.totalram_pages() {
            self.vmalloc_warn(
                gfp,
                format_args!("vmalloc error: size {}, exceeds total pages", size),
            );
            return Err(Error::NoMemory);
        }
        let mut shift = PAGE_SHIFT;
        if vm_flags & VM_ALLOW_HUGE_VMAP != 0 && size >= PMD_SIZE {
            shift = PMD_SHIFT;
        }
        loop {
            let align = if shift > PAGE_SHIFT {
                align.max(1 << shift)
            } else {
                align
            };
            let flags = VM_ALLOC | VM_UNINITIALIZED | vm_flags;
            let vm = match self
                .get_vm_area_node(size, align, shift, flags, start, end, node, gfp, caller)
            {
                Ok(vm) => vm,
                Err(e) => {
                    self.vmalloc_warn(
                        gfp,
                        format_args!("vmalloc error: size {}, vm_struct allocation failed", size),
                    );
                    return Err(if e == Error::InvalidArgument {
                        e
                    } else {
                        Error::NoMemory
                    });
                }
            };
            match self.vmalloc_area_node(vm, gfp, prot, shift, node) {
                Ok(()) => {
                    // clear_vm_uninitialized_flag(): the area is complete.
                    let _busy = self.vmalloc.busy.lock();
                    // SAFETY: the area is ours until this flag is cleared,
                    // under the busy lock that reports read it under.
                    let area = unsafe { &mut *vm.as_ptr() };
                    area.flags &= !VM_UNINITIALIZED;
                    return Ok(
                        NonNull::new(area.addr as *mut u8).expect("vmalloc space is not at 0")
                    );
                }
                // Huge pages failed: fall back to base pages, as Linux does.
                Err(_) if shift > PAGE_SHIFT => shift = PAGE_SHIFT,
                Err(e) => return Err(e),
            }
        }
    }

    /// `__vmalloc_node()`: `size` bytes aligned to `align`, pages of `gfp`
    /// from `node`.
    #[track_caller]
    pub fn __vmalloc_node(
        &self,
        size: usize,
        align: usize,
        gfp: Gfp,
        node: i32,
    ) -> Result<NonNull<u8>> {
        let (start, end) = self.vmalloc_space("vmalloc")?;
        self.vmalloc_node_range(
            size,
            align,
            start,
            end,
            gfp,
            PgProt::Kernel,
            0,
            node,
            Location::caller(),
        )
    }

    /// `vmalloc_fix_flags()`: keep `GFP_VMALLOC_SUPPORTED`, warn about the rest.
    fn vmalloc_fix_flags(&self, gfp: Gfp, caller: &Location<'_>) -> Gfp {
        let invalid = gfp.without(GFP_VMALLOC_SUPPORTED);
        if invalid.is_empty() {
            return gfp;
        }
        let fixed = gfp & GFP_VMALLOC_SUPPORTED;
        report!(
            &self.p,
            Level::Warning,
            "WARNING: CPU: {} at {}: Unexpected gfp: {:#x} ({}). Fixing up to gfp: {:#x} ({}). Fix your code!",
            self.p.smp_processor_id(),
            caller,
            invalid.bits(),
            invalid,
            fixed.bits(),
            fixed
        );
        fixed
    }

    /// `__vmalloc()`: `size` bytes with `gfp` (only `GFP_VMALLOC_SUPPORTED`
    /// bits; others are reported and dropped).
    ///
    /// ```
    /// # let mut mem = vec![0u8; 8 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// // The arena has no page tables: vmalloc is refused with a report.
    /// assert_eq!(k.__vmalloc(4096, kmem::gfp::GFP_KERNEL), Err(kmem::Error::NotSupported));
    /// ```
    #[track_caller]
    pub fn __vmalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        let gfp = self.vmalloc_fix_flags(gfp, Location::caller());
        self.__vmalloc_node(size, 1, gfp, -1)
    }

    /// `vmalloc()`: `size` bytes of virtually contiguous memory
    /// (`GFP_KERNEL`; may sleep; not in atomic context).
    #[track_caller]
    pub fn vmalloc(&self, size: usize) -> Result<NonNull<u8>> {
        self.__vmalloc_node(size, 1, gfp::GFP_KERNEL, -1)
    }

    /// `vzalloc()`: [`vmalloc`](Self::vmalloc), zeroed.
    #[track_caller]
    pub fn vzalloc(&self, size: usize) -> Result<NonNull<u8>> {
        self.__vmalloc_node(size, 1, gfp::GFP_KERNEL | gfp::__GFP_ZERO, -1)
    }

    /// `vmalloc_node()`: pages from node `node`.
    #[track_caller]
    pub fn vmalloc_node(&self, size: usize, node: i32) -> Result<NonNull<u8>> {
        self.__vmalloc_node(size, 1, gfp::GFP_KERNEL, node)
    }

    /// `vzalloc_node()`.
    #[track_caller]
    pub fn vzalloc_node(&self, size: usize, node: i32) -> Result<NonNull<u8>> {
        self.__vmalloc_node(size, 1, gfp::GFP_KERNEL | gfp::__GFP_ZERO, node)
    }

    /// `vmalloc_user()`: zeroed memory for mapping to user space
    /// (`VM_USERMAP`, `SHMLBA` aligned).
    #[track_caller]
    pub fn vmalloc_user(&self, size: usize) -> Result<NonNull<u8>> {
        let (start, end) = self.vmalloc_space("vmalloc_user")?;
        self.vmalloc_node_range(
            size,
            PAGE_SIZE,
            start,
            end,
            gfp::GFP_KERNEL | gfp::__GFP_ZERO,
            PgProt::Kernel,
            VM_USERMAP,
            -1,
            Location::caller(),
        )
    }

    /// `vmalloc_32()`: pages addressable with 32 bits (`GFP_VMALLOC32`).
    #[track_caller]
    pub fn vmalloc_32(&self, size: usize) -> Result<NonNull<u8>> {
        self.__vmalloc_node(size, 1, GFP_VMALLOC32, -1)
    }

    /// `vmalloc_huge()`: mapped with PMD-size pages when `size` allows
    /// (`VM_ALLOW_HUGE_VMAP`), else as `__vmalloc()`.
    #[track_caller]
    pub fn vmalloc_huge(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        let caller = Location::caller();
        let gfp = self.vmalloc_fix_flags(gfp, caller);
        let (start, end) = self.vmalloc_space("vmalloc_huge")?;
        self.vmalloc_node_range(
            size,
            1,
            start,
            end,
            gfp,
            PgProt::Kernel,
            VM_ALLOW_HUGE_VMAP,
            -1,
            caller,
        )
    }

    /// `vmalloc_array()`: `n * size` bytes, refusing an overflow.
    #[track_caller]
    pub fn vmalloc_array(&self, n: usize, size: usize) -> Result<NonNull<u8>> {
        let bytes = n.checked_mul(size).ok_or(Error::NoMemory)?;
        self.__vmalloc_node(bytes, 1, gfp::GFP_KERNEL, -1)
    }

    /// `vcalloc()`: [`vmalloc_array`](Self::vmalloc_array), zeroed.
    #[track_caller]
    pub fn vcalloc(&self, n: usize, size: usize) -> Result<NonNull<u8>> {
        let bytes = n.checked_mul(size).ok_or(Error::NoMemory)?;
        self.__vmalloc_node(bytes, 1, gfp::GFP_KERNEL | gfp::__GFP_ZERO, -1)
    }

    /// `vmap()`: map `pages` (live page descriptors of this machine)
    /// virtually contiguously. With `VM_MAP_PUT_PAGES` in `flags`, `vfree`
    /// puts (frees) them; [`vunmap`](Self::vunmap) never does. kmem keeps a
    /// copy of the page array for [`vmalloc_to_page`](Self::vmalloc_to_page),
    /// where Linux walks the page tables.
    #[track_caller]
    pub fn vmap(&self, pages: &[&Page], flags: u32, prot: PgProt) -> Result<NonNull<u8>> {
        let caller = Location::caller();
        let (start, end) = self.vmalloc_space("vmap")?;
        self.vmalloc_context_ok(gfp::GFP_KERNEL, caller)?;
        if flags & VM_NO_GUARD != 0
            || pages.is_empty()
            || pages.len() as u64 > self.totalram_pages()
        {
            return Err(Error::InvalidArgument);
        }
        let flags = flags & (VM_MAP_PUT_PAGES | VM_USERMAP);
        let count = pages.len();
        let size = count.checked_mul(PAGE_SIZE).ok_or(Error::NoMemory)?;
        let vm = self.get_vm_area_node(
            size,
            1,
            PAGE_SHIFT,
            flags | VM_MAP | VM_UNINITIALIZED,
            start,
            end,
            -1,
            gfp::GFP_KERNEL,
            caller,
        )?;
        let bytes = count * core::mem::size_of::<*const Page>();
        let array = match self.alloc_page_array(bytes, gfp::GFP_KERNEL, -1, caller) {
            Ok(a) => a.cast::<*const Page>(),
            Err(e) => {
                self.remove_and_free_vm(vm, PagesToFree::None);
                return Err(e);
            }
        };
        // SAFETY: `array` holds `count` slots, ours; `vm` is ours until the
        // flag is cleared.
        let area = unsafe {
            for (i, p) in pages.iter().enumerate() {
                array.as_ptr().add(i).write(*p as *const Page);
            }
            let area = &mut *vm.as_ptr();
            area.pages = array.as_ptr();
            area.nr_pages = count;
            area
        };
        // SAFETY: as above.
        let slice = unsafe { core::slice::from_raw_parts(area.pages, count) };
        if let Err(e) = self.vmap_pages_range(area.addr, slice, prot, PAGE_SHIFT) {
            // The caller keeps its pages on failure.
            area.flags &= !VM_MAP_PUT_PAGES;
            self.remove_and_free_vm(vm, PagesToFree::None);
            return Err(e);
        }
        let _busy = self.vmalloc.busy.lock();
        area.flags &= !VM_UNINITIALIZED;
        Ok(NonNull::new(area.addr as *mut u8).expect("vmalloc space is not at 0"))
    }

    /// `vmap_pfn()`: map raw page frames (which need no `struct page`,
    /// such as device memory) virtually contiguously; shown as `ioremap`.
    #[track_caller]
    pub fn vmap_pfn(&self, pfns: &[u64], prot: PgProt) -> Result<NonNull<u8>> {
        let caller = Location::caller();
        let (start, end) = self.vmalloc_space("vmap_pfn")?;
        if pfns.is_empty() {
            return Err(Error::InvalidArgument);
        }
        let size = pfns.len().checked_mul(PAGE_SIZE).ok_or(Error::NoMemory)?;
        let vm = self.get_vm_area_node(
            size,
            1,
            PAGE_SHIFT,
            VM_IOREMAP | VM_UNINITIALIZED,
            start,
            end,
            -1,
            gfp::GFP_KERNEL,
            caller,
        )?;
        // SAFETY: ours until the flag is cleared.
        let area = unsafe { &mut *vm.as_ptr() };
        for (i, &pfn) in pfns.iter().enumerate() {
            let va = area.addr + i * PAGE_SIZE;
            if let Err(e) =
                self.p
                    .map_kernel_range(va, crate::pfn_phys(pfn), PAGE_SIZE, prot, PAGE_SHIFT)
            {
                if i > 0 {
                    self.p.unmap_kernel_range(area.addr, i * PAGE_SIZE);
                }
                self.remove_and_free_vm(vm, PagesToFree::None);
                return Err(e);
            }
        }
        let _busy = self.vmalloc.busy.lock();
        area.flags &= !VM_UNINITIALIZED;
        Ok(NonNull::new(area.addr as *mut u8).expect("vmalloc space is not at 0"))
    }

    /// `vrealloc()`: resize a vmalloc allocation to `size` bytes. Shrinking
    /// or growing within the pages the area already has keeps the address
    /// (the freed tail is zeroed, as Linux zeroes it for a later grow);
    /// growing beyond allocates anew, copies and frees the old area.
    /// `p == None` allocates; `size == 0` frees and answers `Ok(None)`.
    ///
    /// # Safety
    ///
    /// `p` is `None` or a live allocation of this machine's vmalloc that
    /// the caller gives up when the answer is a different address (or
    /// `None`).
    #[track_caller]
    pub unsafe fn vrealloc(
        &self,
        p: Option<NonNull<u8>>,
        size: usize,
        gfp: Gfp,
    ) -> Result<Option<NonNull<u8>>> {
        let caller = Location::caller();
        if size == 0 {
            if let Some(p) = p {
                // SAFETY: the caller gives `p` up.
                unsafe { self.vfree(p.as_ptr()) }?;
            }
            return Ok(None);
        }
        let mut old_size = 0;
        if let Some(p) = p {
            let Some(vm) = self.find_vm_struct(p.as_ptr()) else {
                report!(
                    &self.p,
                    Level::Warning,
                    "WARNING: CPU: {} at {}: Trying to vrealloc() nonexistent vm area ({:p})",
                    self.p.smp_processor_id(),
                    caller,
                    p
                );
                return Err(Error::BadAddress);
            };
            if vm.addr != p.as_ptr() as usize || vm.flags & VM_ALLOC == 0 {
                report!(
                    &self.p,
                    Level::Warning,
                    "WARNING: CPU: {} at {}: Trying to vrealloc() nonexistent vm area ({:p})",
                    self.p.smp_processor_id(),
                    caller,
                    p
                );
                return Err(Error::BadAddress);
            }
            let alloced = vm.usable_size();
            old_size = vm.requested_size;
            let vm = vm as *const VmStruct as *mut VmStruct;
            if size <= alloced {
                if size < old_size {
                    // SAFETY: `[p + size, p + old_size)` is inside the
                    // caller's live area.
                    unsafe { core::ptr::write_bytes(p.as_ptr().add(size), 0, old_size - size) };
                }
                let _busy = self.vmalloc.busy.lock();
                // SAFETY: the caller owns the area; readers copy this field
                // under the busy lock, held here too.
                unsafe { (*vm).requested_size = size };
                return Ok(Some(p));
            }
        }
        let n = self.vmalloc_node_range(
            size,
            1,
            self.vmalloc.start,
            self.vmalloc.end,
            gfp,
            PgProt::Kernel,
            0,
            -1,
            caller,
        )?;
        if let Some(p) = p {
            // SAFETY: both areas are live and at least `old_size` long; they
            // are distinct areas, so they do not overlap. If the old area is
            // refused, the caller keeps it and the new one goes back.
            unsafe {
                core::ptr::copy_nonoverlapping(p.as_ptr(), n.as_ptr(), old_size);
                if let Err(e) = self.vfree(p.as_ptr()) {
                    let _ = self.vfree(n.as_ptr());
                    return Err(e);
                }
            }
        }
        Ok(Some(n))
    }

    /// `vread_iter()`: copy `buf.len()` bytes of the vmalloc space from
    /// `addr` into `buf`, through the direct map of each page, so a
    /// concurrent `vfree` cannot fault the reader. Bytes in no vmalloc or
    /// vmap page (guard pages, holes, ioremap areas) read as zero, as
    /// Linux fills them; so do `vm_map_ram` areas, which Linux reads
    /// through its page tables and kmem cannot (it keeps no page array
    /// for them, and the platform has no page-table walk). Returns the bytes copied (all of
    /// `buf`, or fewer when `addr + len` leaves the space).
    pub fn vread(&self, buf: &mut [u8], addr: usize) -> usize {
        let (start, end) = (self.vmalloc.start, self.vmalloc.end);
        if addr < start || addr >= end {
            return 0;
        }
        let len = buf.len().min(end - addr);
        let mut done = 0;
        while done < len {
            let a = addr + done;
            let in_page = (PAGE_SIZE - a % PAGE_SIZE).min(len - done);
            let out = &mut buf[done..done + in_page];
            let copied = {
                let busy = self.vmalloc.busy.lock();
                busy.0.find(a).and_then(|va| {
                    // SAFETY: a busy node under the lock; its VmStruct and
                    // page array live while it is in the tree.
                    let vm = unsafe { va.as_ref().vm.as_ref() }?;
                    if vm.flags & (VM_ALLOC | VM_MAP) == 0 || vm.flags & VM_UNINITIALIZED != 0 {
                        return None;
                    }
                    let page = vm.page((a - vm.addr) >> PAGE_SHIFT)?;
                    let src = self.page_address(page)?;
                    // SAFETY: `src` is the page's direct-map address; the
                    // page stays allocated while its area is busy, which the
                    // lock guarantees for the copy.
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            src.as_ptr().add(a % PAGE_SIZE),
                            out.as_mut_ptr(),
                            in_page,
                        )
                    };
                    Some(())
                })
            };
            if copied.is_none() {
                out.fill(0);
            }
            done += in_page;
        }
        len
    }
}
