//! Per-CPU vmap blocks for small `vm_map_ram()` mappings
//! (`mm/vmalloc.c`: `struct vmap_block`, `vb_alloc()`, `vb_free()`,
//! `_vm_unmap_aliases()`).
//!
//! A mapping of up to [`VMAP_MAX_ALLOC`] pages does not get its own
//! vmap_area: it is carved from a [`VMAP_BBMAP_BITS`]-page block that the
//! CPU keeps on its queue, so the busy tree and its lock see one area per
//! block instead of one per mapping. Space is handed out front to back in
//! power-of-two runs; a freed run is unmapped and counted *dirty* but not
//! reused (its TLB entries may live on). When every page of a block is
//! dirty the block's area is freed lazily like any other;
//! [`vm_unmap_aliases`](Kmem::vm_unmap_aliases) flushes the dirty ranges
//! of the rest and frees blocks that have no page in use.
//!
//! Locking: each CPU's queue has a lock (`vmap_block_queue.lock`), each
//! block one (`vb->lock`), taken queue first. A block records its CPU;
//! frees from any CPU find the block through the busy tree.

use super::tree::VmapArea;
use super::{VMAP_BLOCK, VMAP_RAM};
use crate::gfp::{self, Gfp};
use crate::page::Page;
use crate::platform::{Level, PgProt, Platform};
use crate::{report, Error, Kmem, Result, PAGE_SHIFT, PAGE_SIZE};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering::Relaxed};

/// `VMAP_MAX_ALLOC`: the largest `vm_map_ram()` (in pages) served from a
/// block (`BITS_PER_LONG`).
pub const VMAP_MAX_ALLOC: usize = 64;
/// `VMAP_BBMAP_BITS`: pages per block (its upper bound,
/// `VMAP_BBMAP_BITS_MAX`, which any vmalloc space of 64 GiB or more gets).
pub const VMAP_BBMAP_BITS: usize = 1024;
/// `VMAP_BLOCK_SIZE`: bytes per block (4 MiB).
pub const VMAP_BLOCK_SIZE: usize = VMAP_BBMAP_BITS * PAGE_SIZE;

/// The mutable part of a block, under `vb->lock`.
struct VbState {
    /// Pages not yet handed out (`free`), all at the block's end.
    free: usize,
    /// Pages handed out and freed since (`dirty`).
    dirty: usize,
    /// Lowest dirty page not yet flushed (`dirty_min`).
    dirty_min: usize,
    /// One past the highest (`dirty_max`).
    dirty_max: usize,
    /// Pages in use (`used_map`).
    used: [u64; VMAP_BBMAP_BITS / 64],
    /// Still on its CPU's queue (has free pages and is not being freed).
    queued: bool,
}

/// `struct vmap_block`, from kmalloc.
pub(crate) struct VmapBlock {
    /// Its vmap_area (busy, `VMAP_RAM | VMAP_BLOCK`).
    va: NonNull<VmapArea>,
    /// The CPU whose queue holds it.
    cpu: usize,
    /// Next block on the CPU's queue.
    next: *mut VmapBlock,
    /// `vb->lock` and what it protects.
    state: spin::Mutex<VbState>,
}

/// One CPU's queue of blocks with free pages (`vmap_block_queue`).
pub(crate) struct VbQueue {
    /// First block, linked through `VmapBlock::next`.
    head: *mut VmapBlock,
}

// SAFETY: the listed blocks are kmalloc objects reached only under the
// queue's lock.
unsafe impl Send for VbQueue {}

/// Every CPU's queue: an array of `nr_cpus` locks from kmalloc, set up by
/// `vmalloc_init()`.
pub(crate) struct VmapBlocks {
    /// `nr_cpus` queues, or null before boot finishes.
    queues: AtomicPtr<spin::Mutex<VbQueue>>,
}

impl VmapBlocks {
    /// No queues yet.
    pub(crate) const fn new() -> Self {
        VmapBlocks {
            queues: AtomicPtr::new(core::ptr::null_mut()),
        }
    }
}

fn pages_order(count: usize) -> u32 {
    count.next_power_of_two().trailing_zeros()
}

impl<P: Platform> Kmem<P> {
    /// Set up one block queue per CPU (`vmalloc_init()`'s part).
    pub(crate) fn vmap_blocks_init(&self) -> Result<()> {
        let n = self.nr_cpus;
        let bytes = n * core::mem::size_of::<spin::Mutex<VbQueue>>();
        let mem = self.kmalloc(bytes, gfp::GFP_KERNEL)?;
        let q = mem.as_ptr().cast::<spin::Mutex<VbQueue>>();
        for i in 0..n {
            // SAFETY: `mem` holds `n` queues, suitably aligned (kmalloc
            // aligns to the size's power of two, at least 8).
            unsafe {
                q.add(i).write(spin::Mutex::new(VbQueue {
                    head: core::ptr::null_mut(),
                }))
            };
        }
        self.vmalloc.vmap_blocks.queues.store(q, Relaxed);
        Ok(())
    }

    fn vb_queue(&self, cpu: usize) -> &spin::Mutex<VbQueue> {
        let q = self.vmalloc.vmap_blocks.queues.load(Relaxed);
        assert!(!q.is_null() && cpu < self.nr_cpus);
        // SAFETY: `nr_cpus` queues set up at boot, never freed.
        unsafe { &*q.add(cpu) }
    }

    /// `new_vmap_block()`: a block for this CPU with `1 << order` pages
    /// taken for the caller at its start. Returns the caller's address.
    fn new_vmap_block(&self, cpu: usize, order: u32, gfp: Gfp) -> Result<usize> {
        let (start, end) = (self.vmalloc.start, self.vmalloc.end);
        let mem = self.kmalloc(
            core::mem::size_of::<VmapBlock>(),
            gfp & gfp::GFP_RECLAIM_MASK,
        )?;
        let vb = mem.cast::<VmapBlock>();
        let va = match self.alloc_vmap_area_node(
            VMAP_BLOCK_SIZE,
            VMAP_BLOCK_SIZE,
            start,
            end,
            -1,
            gfp,
            VMAP_RAM | VMAP_BLOCK,
            None,
        ) {
            Ok(va) => va,
            Err(e) => {
                // SAFETY: never published.
                let _ = unsafe { self.kfree(mem.as_ptr()) };
                return Err(e);
            }
        };
        let taken = 1usize << order;
        let mut used = [0u64; VMAP_BBMAP_BITS / 64];
        for i in 0..taken {
            used[i / 64] |= 1 << (i % 64);
        }
        // SAFETY: `vb` is a fresh kmalloc object sized for a VmapBlock; the
        // busy node learns its block before the block is queued.
        unsafe {
            vb.as_ptr().write(VmapBlock {
                va,
                cpu,
                next: core::ptr::null_mut(),
                state: spin::Mutex::new(VbState {
                    free: VMAP_BBMAP_BITS - taken,
                    dirty: 0,
                    dirty_min: VMAP_BBMAP_BITS,
                    dirty_max: 0,
                    used,
                    queued: true,
                }),
            });
            let _busy = self.vmalloc.busy.lock();
            (*va.as_ptr()).vb = vb.as_ptr();
        }
        let mut q = self.vb_queue(cpu).lock();
        // SAFETY: the block is ours until queued here, under the queue lock.
        unsafe { (*vb.as_ptr()).next = q.head };
        q.head = vb.as_ptr();
        // SAFETY: the node is busy; its start does not change.
        Ok(unsafe { va.as_ref().va_start })
    }

    /// `vb_alloc()`: `count` pages (at most [`VMAP_MAX_ALLOC`]) of address
    /// space from this CPU's blocks.
    fn vb_alloc(&self, count: usize, gfp: Gfp) -> Result<usize> {
        let order = pages_order(count);
        let need = 1usize << order;
        let cpu = {
            let g = crate::platform::LocalGuard::new(&self.p);
            g.cpu()
        };
        {
            let q = self.vb_queue(cpu).lock();
            let mut p = q.head;
            while let Some(vb) = NonNull::new(p) {
                // SAFETY: queued blocks are live while on the queue, whose
                // lock we hold.
                let vb = unsafe { vb.as_ref() };
                let mut st = vb.state.lock();
                if st.queued && st.free >= need {
                    let off = VMAP_BBMAP_BITS - st.free;
                    st.free -= need;
                    for i in off..off + need {
                        st.used[i / 64] |= 1 << (i % 64);
                    }
                    // SAFETY: the block's node is busy while the block lives.
                    let base = unsafe { vb.va.as_ref().va_start };
                    return Ok(base + (off << PAGE_SHIFT));
                }
                p = vb.next;
            }
        }
        self.new_vmap_block(cpu, order, gfp)
    }

    /// Take `vb` off its CPU's queue.
    fn vb_dequeue(&self, vb: NonNull<VmapBlock>) {
        // SAFETY: the block is live; its CPU never changes.
        let cpu = unsafe { vb.as_ref().cpu };
        let mut q = self.vb_queue(cpu).lock();
        let mut link: *mut *mut VmapBlock = &mut q.head;
        // SAFETY: walking the queue's links under its lock.
        unsafe {
            while !(*link).is_null() {
                if *link == vb.as_ptr() {
                    *link = (*vb.as_ptr()).next;
                    return;
                }
                link = &mut (**link).next;
            }
        }
    }

    /// `free_vmap_block()`: the block's area goes back lazily, the block
    /// to kmalloc. The block is off its queue and unused.
    fn free_vmap_block(&self, vb: NonNull<VmapBlock>) {
        // SAFETY: the caller took the block off its queue; its node is busy.
        let start = unsafe { vb.as_ref().va.as_ref().va_start };
        if let Some(va) = self.find_unlink_vmap_area(start) {
            // SAFETY: unlinked, so ours; its pages were unmapped run by run.
            unsafe { (*va.as_ptr()).vb = core::ptr::null_mut() };
            let lf = self.lazy_free_node(va);
            self.purge_if_due(lf);
        }
        // SAFETY: nothing reaches the block any more.
        let _ = unsafe { self.kfree(vb.as_ptr().cast()) };
    }

    /// `vb_free()`: give back `count` pages at `addr` from a block.
    fn vb_free(&self, addr: usize, count: usize) -> Result<()> {
        let need = 1usize << pages_order(count);
        let vb = {
            let busy = self.vmalloc.busy.lock();
            let va = busy.0.find(addr).ok_or(Error::BadAddress)?;
            // SAFETY: a busy node under the lock.
            let v = unsafe { va.as_ref() };
            if v.flags & VMAP_BLOCK == 0 {
                return Err(Error::BadAddress);
            }
            NonNull::new(v.vb).ok_or(Error::BadAddress)?
        };
        // SAFETY: a block lives while any page of it is in use, which the
        // caller's mapping is (checked against the used map below).
        let b = unsafe { vb.as_ref() };
        // SAFETY: as above.
        let base = unsafe { b.va.as_ref().va_start };
        let off = (addr - base) >> PAGE_SHIFT;
        let all_dirty = {
            let mut st = b.state.lock();
            let in_use = (off..off + need).all(|i| st.used[i / 64] & (1 << (i % 64)) != 0);
            if addr % PAGE_SIZE != 0 || off + need > VMAP_BBMAP_BITS - st.free || !in_use {
                return Err(Error::BadAddress);
            }
            for i in off..off + need {
                st.used[i / 64] &= !(1 << (i % 64));
            }
            self.p.unmap_kernel_range(addr, need << PAGE_SHIFT);
            st.dirty_min = st.dirty_min.min(off);
            st.dirty_max = st.dirty_max.max(off + need);
            st.dirty += need;
            // Whoever takes `queued` from true to false under the block's
            // lock frees the block: here, or vm_unmap_aliases() if it took
            // the block first.
            let mine = st.dirty == VMAP_BBMAP_BITS && st.queued;
            if mine {
                st.queued = false;
            }
            mine
        };
        if all_dirty {
            self.vb_dequeue(vb);
            self.free_vmap_block(vb);
        }
        Ok(())
    }

    /// `vm_map_ram()`: map `pages` virtually contiguously, fast: up to
    /// [`VMAP_MAX_ALLOC`] pages from a per-CPU block, more with an area of
    /// their own. Undo with [`vm_unmap_ram`](Self::vm_unmap_ram) and the
    /// same count.
    #[track_caller]
    pub fn vm_map_ram(&self, pages: &[&Page], node: i32) -> Result<NonNull<u8>> {
        let _ = node;
        let Some((start, end)) = self.vmalloc_range() else {
            report!(
                &self.p,
                Level::Err,
                "vm_map_ram: this platform has no page tables: no vmalloc space"
            );
            return Err(Error::NotSupported);
        };
        let count = pages.len();
        if count == 0 {
            return Err(Error::InvalidArgument);
        }
        let addr = if count <= VMAP_MAX_ALLOC {
            self.vb_alloc(count, gfp::GFP_KERNEL)?
        } else {
            let va = self.alloc_vmap_area_node(
                count << PAGE_SHIFT,
                PAGE_SIZE,
                start,
                end,
                -1,
                gfp::GFP_KERNEL,
                VMAP_RAM,
                None,
            )?;
            // SAFETY: busy; its start does not change.
            unsafe { va.as_ref().va_start }
        };
        // SAFETY: `&Page` and `*const Page` have the same layout, and every
        // reference is a valid pointer.
        let ptrs =
            unsafe { core::slice::from_raw_parts(pages.as_ptr().cast::<*const Page>(), count) };
        let mapped = self.vmap_pages_range(addr, ptrs, PgProt::Kernel, PAGE_SHIFT);
        if let Err(e) = mapped {
            // SAFETY: the mapping just made, never handed out.
            let _ = unsafe { self.vm_unmap_ram(addr as *mut u8, count) };
            return Err(e);
        }
        Ok(NonNull::new(addr as *mut u8).expect("vmalloc space is not at 0"))
    }

    /// `vm_unmap_ram()`: undo [`vm_map_ram`](Self::vm_map_ram) of `count`
    /// pages at `mem`. An address that no `vm_map_ram()` of that many pages
    /// returned is refused with a warning, where it can be told.
    ///
    /// # Safety
    ///
    /// `mem` and `count` are a live `vm_map_ram()` mapping of this machine
    /// (a block's runs cannot all be told from a stray address), unmapped
    /// once, and not used afterwards.
    #[track_caller]
    pub unsafe fn vm_unmap_ram(&self, mem: *mut u8, count: usize) -> Result<()> {
        let addr = mem as usize;
        let r = if count == 0 || !self.is_vmalloc_addr(mem) {
            Err(Error::BadAddress)
        } else if count <= VMAP_MAX_ALLOC {
            self.vb_free(addr, count)
        } else {
            match self.unlink_vm_map_ram_area(addr, count) {
                Some(va) => {
                    // SAFETY: unlinked, so ours.
                    let (s, e) = unsafe { (va.as_ref().va_start, va.as_ref().va_end) };
                    self.p.unmap_kernel_range(s, e - s);
                    let lf = self.lazy_free_node(va);
                    self.purge_if_due(lf);
                    Ok(())
                }
                None => Err(Error::BadAddress),
            }
        };
        if r.is_err() {
            report!(
                &self.p,
                Level::Warning,
                "WARNING: CPU: {} at {}: vm_unmap_ram: no vm_map_ram mapping of {} pages at {:p}",
                self.p.smp_processor_id(),
                core::panic::Location::caller(),
                count,
                mem
            );
        }
        r
    }

    /// Unlink the busy area at `addr` if it is a `vm_map_ram()` area of its
    /// own (not a block, no `vm_struct`) of `count` pages.
    fn unlink_vm_map_ram_area(&self, addr: usize, count: usize) -> Option<NonNull<VmapArea>> {
        self.unlink_busy_area_if(addr, |v| {
            let own = v.flags & VMAP_RAM != 0 && v.flags & VMAP_BLOCK == 0 && v.vm.is_null();
            own && v.size() == count << PAGE_SHIFT
        })
    }

    /// `vm_unmap_aliases()`: flush every lazily kept translation: the dirty
    /// ranges of the vmap blocks and the lazily freed areas (purged), with
    /// one TLB flush for the merged range. Blocks with no page in use are
    /// freed (`purge_fragmented_blocks_allcpus()`).
    pub fn vm_unmap_aliases(&self) {
        let (mut start, mut end, mut flush) = (usize::MAX, 0usize, false);
        if self.vmalloc.vmap_blocks.queues.load(Relaxed).is_null() {
            return;
        }
        for cpu in 0..self.nr_cpus {
            let mut to_free: *mut VmapBlock = core::ptr::null_mut();
            {
                let mut q = self.vb_queue(cpu).lock();
                let mut link: *mut *mut VmapBlock = &mut q.head;
                // SAFETY: walking the queue under its lock; blocks are live.
                unsafe {
                    while let Some(vb) = NonNull::new(*link) {
                        let b = vb.as_ref();
                        let base = b.va.as_ref().va_start;
                        let mut st = b.state.lock();
                        if st.dirty > 0 && st.dirty_min < st.dirty_max {
                            start = start.min(base + (st.dirty_min << PAGE_SHIFT));
                            end = end.max(base + (st.dirty_max << PAGE_SHIFT));
                            st.dirty_min = VMAP_BBMAP_BITS;
                            st.dirty_max = 0;
                            flush = true;
                        }
                        let unused = st.used.iter().all(|w| *w == 0);
                        // purge_fragmented_block(): nothing in use, some dirty, and not
                        // all dirty (that block is vb_free()'s to free).
                        let fragmented = st.free + st.dirty == VMAP_BBMAP_BITS
                            && st.dirty > 0
                            && st.dirty != VMAP_BBMAP_BITS;
                        if st.queued && unused && fragmented {
                            st.queued = false;
                            drop(st);
                            *link = b.next;
                            (*vb.as_ptr()).next = to_free;
                            to_free = vb.as_ptr();
                            continue;
                        }
                        drop(st);
                        link = &mut (*vb.as_ptr()).next;
                    }
                }
            }
            while let Some(vb) = NonNull::new(to_free) {
                // SAFETY: taken off the queue above; ours.
                to_free = unsafe { vb.as_ref().next };
                self.free_vmap_block(vb);
            }
        }
        let ev = self.purge_range(start, end);
        if ev.num_purged == 0 && flush {
            self.p.flush_tlb_kernel_range(start, end);
        }
    }
}
