//! The per-CPU allocator (`mm/percpu.c`, `mm/percpu-vm.c`,
//! `include/linux/percpu-defs.h`): memory with one copy per possible CPU.
//!
//! Every CPU has a *unit* in every *chunk*, at the same offset from the
//! chunk's base for all chunks (`pcpu_unit_offsets[cpu]`), so a per-CPU
//! pointer ([`PcpuPtr`]) is one address, and CPU `n`'s copy is that
//! address plus unit offset `n` (`per_cpu_ptr()`), whatever chunk it is in.
//!
//! - **The first chunk** is built at boot from memblock, before the slab
//!   allocator, as `pcpu_embed_first_chunk()` builds it (`first_chunk.rs`):
//!   per node (group) one allocation of whole units, atom-aligned (2 MiB),
//!   each unit holding the static section ([`PERCPU_STATIC_SIZE`]), the
//!   reserved area ([`PERCPU_MODULE_RESERVE`](alloc_info::PERCPU_MODULE_RESERVE),
//!   served to `__alloc_reserved_percpu()` by the *reserved chunk*) and the
//!   dynamic reserve (the *first chunk* proper); the unused tail of each
//!   unit goes back to memblock. Boot prints Linux's "percpu: Embedded N
//!   pages/cpu s.. r.. d.. u..". When the embed allocation fails (a tiny
//!   machine) or the groups lie further apart than three quarters of the
//!   vmalloc space, Linux falls back to its page first chunk; kmem falls
//!   back to the same layout with a page-sized atom, in one allocation
//!   (the units stay in the direct map), and says so.
//! - **Further chunks** (`chunk.rs`) are vmalloc areas spanning every unit,
//!   populated page by page on demand: a page of the chunk is a page per
//!   CPU, from that CPU's node, mapped at each unit.
//! - **The area allocator** in each chunk is Linux's bitmap allocator
//!   (`area.rs`); chunks sit in slots by their largest free run
//!   (`pcpu_chunk_slot()`), searched from the smallest that can fit.
//!   Atomic (non-blocking) allocations take only populated pages. A
//!   balance step (`pcpu_balance_workfn()`) keeps
//!   [`PCPU_EMPTY_POP_PAGES_LOW`]..[`PCPU_EMPTY_POP_PAGES_HIGH`] empty
//!   populated pages ready and frees all fully free chunks but one; Linux
//!   runs it from a workqueue, kmem at the end of the allocation or free
//!   that asked for it when that context may sleep, else at the next one
//!   that may ([`Kmem::pcpu_balance_workfn`] runs it on demand).
//!
//! Locking, as Linux's: `lock` is `pcpu_lock` (the slot lists and every
//! chunk's maps), taken with interrupts off as Linux's
//! `spin_lock_irqsave()` ([`IrqSpinGuard`]:
//! atomic allocations may come from interrupt handlers); `alloc_mutex` is
//! `pcpu_alloc_mutex` (a sleeping lock, so
//! a CPU waiting for it still takes cross-CPU calls), held by allocations
//! that may sleep and by the balance step while they populate or create
//! chunks. Neither is held across a call into another subsystem but page,
//! vmalloc and kmalloc allocations under `alloc_mutex`, as in Linux.
//!
//! Not modelled: `pcpu_reclaim_populated()` (depopulating the empty pages
//! of partly used chunks: the sidelined and to-depopulate slots), memcg
//! charging (only its size accounting, [`pcpu_obj_full_size`]), CPU hotplug.

pub mod alloc_info;
pub(crate) mod area;
mod chunk;
pub mod counter;
mod first_chunk;
pub mod ops;

#[cfg(test)]
mod tests;

pub use chunk::PcpuChunkInfo;
pub use ops::{PcpuAtomic, PcpuPtr, PcpuZeroable, PerCpu, StaticPerCpu};

use crate::gfp::{self, Gfp};
use crate::percpu_defs::PerCpuOffsets;
use crate::platform::IrqSpinGuard;
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result};
use area::PCPU_MIN_ALLOC_SIZE;
use chunk::Chunks;
use core::ptr::NonNull;
use core::sync::atomic::{
    AtomicBool, AtomicU8,
    Ordering::{Acquire, Relaxed, Release},
};

/// Bytes of kmem's static per-CPU section, where [`define_per_cpu!`](crate::define_per_cpu)
/// variables live (Linux's is the kernel image's `.data..percpu`).
pub const PERCPU_STATIC_SIZE: usize = 16 << 10;
/// `PCPU_EMPTY_POP_PAGES_LOW`: below this many empty populated pages, the
/// balance step is asked for.
pub const PCPU_EMPTY_POP_PAGES_LOW: usize = 2;
/// `PCPU_EMPTY_POP_PAGES_HIGH`: the balance step populates up to this.
pub const PCPU_EMPTY_POP_PAGES_HIGH: usize = 4;

/// `pcpu_obj_full_size()`: what a per-CPU object of `size` bytes costs,
/// the size in every possible CPU plus, with memcg kmem accounting on
/// (Linux's default, `!mem_cgroup_kmem_disabled()`), one `obj_cgroup`
/// pointer per `PCPU_MIN_ALLOC_SIZE` bytes. The `bytes_alloc` of the
/// `percpu:percpu_alloc_percpu` event.
///
/// ```
/// // The bundled trace's machine: 2 possible CPUs, memcg on.
/// assert_eq!(kmem::percpu::pcpu_obj_full_size(16, 2, true), 64);
/// assert_eq!(kmem::percpu::pcpu_obj_full_size(16, 2, false), 32);
/// ```
pub const fn pcpu_obj_full_size(size: usize, nr_possible_cpus: usize, memcg: bool) -> usize {
    let extra = if memcg {
        size / PCPU_MIN_ALLOC_SIZE * core::mem::size_of::<usize>()
    } else {
        0
    };
    size * nr_possible_cpus + extra
}

/// `pcpu_alloc_mutex`: a lock whose waiters sleep through
/// [`Platform::wait_event`] (Linux's mutex), so a CPU waiting for it still
/// serves cross-CPU calls such as `drain_all_pages()`'s, which the holder
/// may be waiting for while it allocates pages.
///
/// Three states, as a futex mutex (Drepper, "Futexes Are Tricky"):
/// `UNLOCKED`, `LOCKED` (no one sleeps), `CONTENDED` (someone may sleep).
/// Only an unlock that finds `CONTENDED` wakes the channel, so the
/// uncontended pair costs two atomics and no call into the platform
/// (Linux's mutex fast path is one `cmpxchg` each way too).
pub(crate) struct SleepMutex {
    state: AtomicU8,
}

const UNLOCKED: u8 = 0;
const LOCKED: u8 = 1;
const CONTENDED: u8 = 2;

/// Holds a [`SleepMutex`] until dropped.
pub(crate) struct SleepGuard<'a, P: Platform> {
    m: &'a SleepMutex,
    p: &'a P,
}

impl SleepMutex {
    pub(crate) const fn new() -> Self {
        SleepMutex {
            state: AtomicU8::new(UNLOCKED),
        }
    }

    /// Take the lock, sleeping while another context holds it. Not for
    /// atomic context.
    pub(crate) fn lock<'a, P: Platform>(&'a self, p: &'a P) -> SleepGuard<'a, P> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
            .is_err()
        {
            self.lock_contended(p);
        }
        SleepGuard { m: self, p }
    }

    #[cold]
    fn lock_contended<P: Platform>(&self, p: &P) {
        let chan = self as *const SleepMutex as usize;
        // Mark the lock contended before sleeping, so its holder's unlock
        // wakes us; taking it this way leaves it marked, which costs at
        // most one spurious wake-up.
        while self.state.swap(CONTENDED, Acquire) != UNLOCKED {
            // The platform checks the condition under its wait-queue lock,
            // so an unlock between the swap and the sleep is not missed;
            // the timeout only bounds the cost if a platform's is.
            p.wait_event(
                chan,
                &mut || self.state.load(Relaxed) != CONTENDED,
                Some(1_000_000),
            );
        }
    }
}

impl<P: Platform> Drop for SleepGuard<'_, P> {
    fn drop(&mut self) {
        if self.m.state.swap(UNLOCKED, Release) == CONTENDED {
            self.p.wake_up(self.m as *const SleepMutex as usize);
        }
    }
}

/// The first chunk's layout, fixed at boot (`pcpu_setup_first_chunk()`'s
/// globals).
pub(crate) struct Layout {
    /// The sizes ([`alloc_info::AllocInfo`]).
    pub(crate) ai: alloc_info::AllocInfo,
    /// `pcpu_base_addr`: the lowest unit's address (direct map).
    pub(crate) base: usize,
    /// `pcpu_unit_offsets[cpu]`, from `base`, which are also the
    /// `__per_cpu_offset[]` a per-CPU pointer is added to (kmem's per-CPU
    /// pointers are addresses in a unit at `base`'s offset 0).
    pub(crate) unit_offsets: PerCpuOffsets,
    /// Bytes from the lowest to past the highest unit: a vmalloc chunk's span.
    pub(crate) span: usize,
    /// Groups (nodes with CPUs).
    pub(crate) nr_groups: usize,
    /// Units, unused ones included.
    pub(crate) nr_units: usize,
    /// The embed allocation failed or was too spread: the page fallback.
    pub(crate) page_fallback: bool,
}

/// The per-CPU allocator's state in a machine.
pub(crate) struct PcpuState {
    /// The first chunk's layout.
    pub(crate) layout: Layout,
    /// `pcpu_lock`: the slot lists and the chunks' maps.
    pub(crate) lock: spin::Mutex<Chunks>,
    /// `pcpu_alloc_mutex`.
    pub(crate) alloc_mutex: SleepMutex,
    /// `pcpu_atomic_alloc_failed`.
    pub(crate) atomic_alloc_failed: AtomicBool,
    /// `pcpu_schedule_balance_work()` was asked for.
    pub(crate) balance_pending: AtomicBool,
    /// memcg kmem accounting's size overhead ([`pcpu_obj_full_size`]).
    pub(crate) memcg: bool,
    /// `CONFIG_DEBUG_PREEMPT`: `__this_cpu_*` and `smp_processor_id()`
    /// from preemptible context are reported and refused.
    pub(crate) debug_preempt: bool,
}

// SAFETY: the layout's table is memblock memory, read-only after boot;
// chunks are reached only under `lock` or `alloc_mutex` as documented.
unsafe impl Send for PcpuState {}
// SAFETY: as above.
unsafe impl Sync for PcpuState {}

impl<P: Platform> Kmem<P> {
    /// `pcpu_unit_offsets[cpu]` (from the lowest unit).
    #[inline]
    pub(crate) fn pcpu_unit_offset(&self, cpu: usize) -> usize {
        debug_assert!(cpu < self.nr_cpus);
        // SAFETY: every caller passes a CPU the platform gave (promise 3)
        // or one checked against `nr_cpus`; the `this_cpu_*` paths keep
        // this free of a release-mode check.
        unsafe { self.percpu.layout.unit_offsets.offset_unchecked(cpu) }
    }

    /// `__per_cpu_offset[]`: what the page allocator finds the zones'
    /// per-CPU lists with.
    #[inline(always)]
    pub(crate) fn per_cpu_offsets(&self) -> PerCpuOffsets {
        self.percpu.layout.unit_offsets
    }

    /// `per_cpu_ptr(ptr, cpu)` without the check: the address of `cpu`'s
    /// copy.
    #[inline]
    pub(crate) fn pcpu_addr(&self, ptr: usize, cpu: usize) -> usize {
        ptr.wrapping_add(self.pcpu_unit_offset(cpu))
    }

    /// `pcpu_obj_full_size()` on this machine.
    pub fn pcpu_obj_full_size(&self, size: usize) -> usize {
        pcpu_obj_full_size(size, self.nr_cpus, self.percpu.memcg)
    }

    /// `pcpu_alloc()`: `size` bytes aligned to `align` in every possible
    /// CPU, zeroed; from the reserved chunk when `reserved`. `gfp` without
    /// `__GFP_DIRECT_RECLAIM` is an atomic allocation: served only from
    /// populated pages, never creating a chunk.
    #[track_caller]
    pub(crate) fn pcpu_alloc(
        &self,
        size: usize,
        align: usize,
        reserved: bool,
        gfp: Gfp,
    ) -> Result<PcpuPtr<u8>> {
        let gfp = self.current_gfp_context(gfp);
        let pcpu_gfp = gfp & (gfp::GFP_KERNEL | gfp::__GFP_NORETRY | gfp::__GFP_NOWARN);
        let is_atomic = !gfp.contains(gfp::__GFP_DIRECT_RECLAIM);
        let do_warn = !gfp.contains(gfp::__GFP_NOWARN);
        let align = align.max(PCPU_MIN_ALLOC_SIZE);
        let size = size.next_multiple_of(PCPU_MIN_ALLOC_SIZE);
        if size == 0
            || size > alloc_info::PCPU_MIN_UNIT_SIZE
            || align > crate::PAGE_SIZE
            || !align.is_power_of_two()
        {
            if do_warn {
                report!(
                    &self.p,
                    Level::Warning,
                    "WARNING: CPU: {} at {}: percpu: illegal size ({}) or align ({}) for percpu allocation",
                    self.p.smp_processor_id(),
                    core::panic::Location::caller(),
                    size,
                    align
                );
            }
            return Err(Error::InvalidArgument);
        }
        if !is_atomic && self.p.in_atomic() {
            self.might_alloc(gfp, core::panic::Location::caller());
            return Err(Error::InvalidArgument);
        }
        let r = self.pcpu_alloc_inner(size, align, reserved, is_atomic, pcpu_gfp);
        match r {
            Ok(ptr) => {
                for cpu in 0..self.nr_cpus {
                    // SAFETY: the area is `size` bytes at `ptr` in every
                    // unit, populated, and ours until returned.
                    unsafe { core::ptr::write_bytes(self.pcpu_addr(ptr, cpu) as *mut u8, 0, size) };
                }
                self.pcpu_maybe_balance();
                Ok(PcpuPtr::from_addr(ptr))
            }
            Err(why) => {
                if do_warn {
                    report!(
                        &self.p,
                        Level::Warning,
                        "percpu: allocation failed, size={} align={} atomic={}, {}",
                        size,
                        align,
                        u8::from(is_atomic),
                        why
                    );
                }
                if is_atomic {
                    self.percpu.atomic_alloc_failed.store(true, Relaxed);
                    self.percpu.balance_pending.store(true, Relaxed);
                }
                self.pcpu_maybe_balance();
                Err(Error::NoMemory)
            }
        }
    }

    /// The search of `pcpu_alloc()`; answers the area's per-CPU address or
    /// Linux's reason for failing.
    fn pcpu_alloc_inner(
        &self,
        size: usize,
        align: usize,
        reserved: bool,
        is_atomic: bool,
        gfp: Gfp,
    ) -> core::result::Result<usize, &'static str> {
        let bits = size / PCPU_MIN_ALLOC_SIZE;
        let bit_align = align / PCPU_MIN_ALLOC_SIZE;
        let _mutex = (!is_atomic).then(|| self.percpu.alloc_mutex.lock(&self.p));
        let mut chunks = IrqSpinGuard::lock(&self.p, &self.percpu.lock);
        if reserved {
            let Some(c) = chunks.reserved() else {
                return Err("alloc from reserved chunk failed");
            };
            return chunks
                .alloc_in(c, bits, bit_align, is_atomic)
                .map(|off| chunks.chunk(c).base_addr + off)
                .ok_or("alloc from reserved chunk failed");
        }
        loop {
            if let Some((c, off)) = chunks.find_and_alloc(size, bits, bit_align, is_atomic) {
                let base = chunks.chunk(c).base_addr;
                if chunks.nr_empty_pop_pages < PCPU_EMPTY_POP_PAGES_LOW {
                    self.percpu.balance_pending.store(true, Relaxed);
                }
                if is_atomic {
                    return Ok(base + off);
                }
                // Populate the pages the area covers that are not yet.
                let (rs, re) = (
                    off / crate::PAGE_SIZE,
                    (off + size).div_ceil(crate::PAGE_SIZE),
                );
                let mut page = rs;
                while page < re {
                    if chunks.chunk(c).map.page_populated(page) {
                        page += 1;
                        continue;
                    }
                    let mut end = page + 1;
                    while end < re && !chunks.chunk(c).map.page_populated(end) {
                        end += 1;
                    }
                    let chunk_ptr = chunks.chunk_ptr(c);
                    drop(chunks);
                    // SAFETY: the chunk cannot go away while alloc_mutex is
                    // held (only the balance step, under it, destroys).
                    let ok = unsafe { self.pcpu_populate_chunk(chunk_ptr, page, end, gfp) };
                    chunks = IrqSpinGuard::lock(&self.p, &self.percpu.lock);
                    if ok.is_err() {
                        chunks.free_in(c, off / PCPU_MIN_ALLOC_SIZE);
                        return Err("failed to populate");
                    }
                    chunks.populated(c, page, end);
                    page = end;
                }
                return Ok(base + off);
            }
            if is_atomic {
                return Err("atomic alloc failed, no space left");
            }
            // No space left: a new chunk, unless a free one is waiting.
            if !chunks.has_free_chunk() {
                drop(chunks);
                let c = self
                    .pcpu_create_chunk(gfp)
                    .map_err(|_| "failed to allocate new chunk")?;
                chunks = IrqSpinGuard::lock(&self.p, &self.percpu.lock);
                chunks.insert(c);
            }
        }
    }

    /// Run the balance step if one was asked for and this context may
    /// sleep.
    fn pcpu_maybe_balance(&self) {
        if self.percpu.balance_pending.load(Relaxed) && !self.p.in_atomic() {
            self.pcpu_balance_workfn();
        }
    }

    /// `__alloc_percpu_gfp()`: `size` bytes aligned to `align` for every
    /// possible CPU, zeroed. Free with [`free_percpu`](Self::free_percpu).
    ///
    /// ```
    /// # let mut mem = vec![0u8; 8 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 2).unwrap();
    /// use kmem::gfp::GFP_KERNEL;
    /// let p = k.__alloc_percpu_gfp(16, 8, GFP_KERNEL).unwrap();
    /// assert_ne!(k.per_cpu_ptr(p, 0).unwrap(), k.per_cpu_ptr(p, 1).unwrap());
    /// // SAFETY: `p` is ours and not used after.
    /// unsafe { k.free_percpu(p) }.unwrap();
    /// ```
    #[track_caller]
    pub fn __alloc_percpu_gfp(&self, size: usize, align: usize, gfp: Gfp) -> Result<PcpuPtr<u8>> {
        self.pcpu_alloc(size, align, false, gfp)
    }

    /// `__alloc_percpu()`: [`__alloc_percpu_gfp`](Self::__alloc_percpu_gfp)
    /// with `GFP_KERNEL`.
    #[track_caller]
    pub fn __alloc_percpu(&self, size: usize, align: usize) -> Result<PcpuPtr<u8>> {
        self.pcpu_alloc(size, align, false, gfp::GFP_KERNEL)
    }

    /// `__alloc_reserved_percpu()`: from the reserved chunk (modules'
    /// static per-CPU data in Linux).
    #[track_caller]
    pub fn __alloc_reserved_percpu(&self, size: usize, align: usize) -> Result<PcpuPtr<u8>> {
        self.pcpu_alloc(size, align, true, gfp::GFP_KERNEL)
    }

    /// `alloc_percpu(type)`: one zeroed `T` per CPU.
    #[track_caller]
    pub fn alloc_percpu<T: PcpuZeroable>(&self) -> Result<PcpuPtr<T>> {
        self.alloc_percpu_gfp::<T>(gfp::GFP_KERNEL)
    }

    /// `alloc_percpu_gfp(type, gfp)`.
    #[track_caller]
    pub fn alloc_percpu_gfp<T: PcpuZeroable>(&self, gfp: Gfp) -> Result<PcpuPtr<T>> {
        let p = self.pcpu_alloc(
            core::mem::size_of::<T>().max(1),
            core::mem::align_of::<T>(),
            false,
            gfp,
        )?;
        Ok(p.cast())
    }

    /// `free_percpu()`: give back a per-CPU allocation. Safe from atomic
    /// context. Something that is not a live per-CPU allocation (or a
    /// second free) is reported and refused with [`Error::InvalidArgument`];
    /// nothing changes.
    ///
    /// # Safety
    ///
    /// Nothing uses the copies afterwards, and the allocation is not owned
    /// by a [`PerCpu`] (which frees it itself).
    #[track_caller]
    pub unsafe fn free_percpu<T>(&self, ptr: PcpuPtr<T>) -> Result<()> {
        let addr = ptr.addr();
        if addr == 0 {
            return Ok(());
        }
        let mut chunks = IrqSpinGuard::lock(&self.p, &self.percpu.lock);
        let freed = chunks.chunk_of(addr).and_then(|c| {
            let bit = (addr - chunks.chunk(c).base_addr) / PCPU_MIN_ALLOC_SIZE;
            chunks.free_in(c, bit).map(|n| (c, n))
        });
        let Some((c, _)) = freed.filter(|_| addr % PCPU_MIN_ALLOC_SIZE == 0) else {
            drop(chunks);
            report!(
                &self.p,
                Level::Err,
                "WARNING: CPU: {} at {}: free_percpu: {:#x} is not a live per-CPU allocation",
                self.p.smp_processor_id(),
                core::panic::Location::caller(),
                addr
            );
            return Err(Error::InvalidArgument);
        };
        if chunks.should_balance_after_free(c) {
            // Linux schedules the balance work; kmem runs it at the next
            // allocation that may sleep (never from here, where the caller
            // may hold locks an allocation would need).
            self.percpu.balance_pending.store(true, Relaxed);
        }
        drop(chunks);
        Ok(())
    }

    /// `per_cpu_ptr(ptr, cpu)`: the address of `cpu`'s copy. A CPU that is
    /// not possible is reported and refused.
    #[track_caller]
    pub fn per_cpu_ptr<T>(&self, ptr: PcpuPtr<T>, cpu: usize) -> Result<NonNull<T>> {
        if cpu >= self.nr_cpus {
            report!(
                &self.p,
                Level::Err,
                "WARNING: CPU: {} at {}: per_cpu_ptr: CPU {} is not possible (nr_cpu_ids {})",
                self.p.smp_processor_id(),
                core::panic::Location::caller(),
                cpu,
                self.nr_cpus
            );
            return Err(Error::InvalidArgument);
        }
        NonNull::new(self.pcpu_addr(ptr.addr(), cpu) as *mut T).ok_or(Error::BadAddress)
    }

    /// `for_each_possible_cpu()`: every possible CPU.
    pub fn for_each_possible_cpu(&self) -> core::ops::Range<usize> {
        0..self.nr_cpus
    }

    /// `pcpu_nr_pages()`: pages backing per-CPU memory (`Percpu:` in
    /// `/proc/meminfo`): populated pages of every chunk, in every unit.
    pub fn pcpu_nr_pages(&self) -> usize {
        IrqSpinGuard::lock(&self.p, &self.percpu.lock).nr_populated * self.percpu.layout.nr_units
    }

    /// Groups (nodes with CPUs) of the first chunk, and whether boot fell
    /// back from the embed layout to page-sized units.
    pub fn pcpu_groups(&self) -> (usize, bool) {
        (
            self.percpu.layout.nr_groups,
            self.percpu.layout.page_fallback,
        )
    }

    /// The first chunk's sizes, as the boot line prints them.
    pub fn pcpu_alloc_info(&self) -> alloc_info::AllocInfo {
        self.percpu.layout.ai
    }

    /// `pcpu_balance_workfn()`: free all fully free chunks but one, then
    /// populate until [`PCPU_EMPTY_POP_PAGES_HIGH`] empty populated pages
    /// are ready (creating a chunk if none has room), then free fully free
    /// chunks with no populated pages. Runs with `GFP_NOIO` semantics, as
    /// Linux's does. Does nothing in atomic context.
    pub fn pcpu_balance_workfn(&self) {
        if self.p.in_atomic() {
            return;
        }
        self.percpu.balance_pending.store(false, Relaxed);
        let _noio = self.memalloc_noio_scope();
        let _mutex = self.percpu.alloc_mutex.lock(&self.p);
        self.pcpu_balance_free(false);
        self.pcpu_balance_populated();
        self.pcpu_balance_free(true);
    }

    /// `pcpu_balance_free()`.
    fn pcpu_balance_free(&self, empty_only: bool) {
        loop {
            let victim =
                IrqSpinGuard::lock(&self.p, &self.percpu.lock).take_spare_free_chunk(empty_only);
            let Some(c) = victim else { break };
            // SAFETY: taken off every list under the lock; alloc_mutex
            // keeps allocations from reaching it.
            unsafe { self.pcpu_destroy_chunk(c) };
        }
    }

    /// `pcpu_balance_populated()`.
    fn pcpu_balance_populated(&self) {
        let gfp = gfp::GFP_KERNEL | gfp::__GFP_NORETRY | gfp::__GFP_NOWARN;
        loop {
            let mut chunks = IrqSpinGuard::lock(&self.p, &self.percpu.lock);
            let mut nr_to_pop = if self.percpu.atomic_alloc_failed.swap(false, Relaxed) {
                PCPU_EMPTY_POP_PAGES_HIGH
            } else {
                PCPU_EMPTY_POP_PAGES_HIGH.saturating_sub(chunks.nr_empty_pop_pages)
            };
            while nr_to_pop > 0 {
                let Some((c, rs, re)) = chunks.unpopulated_run(nr_to_pop) else {
                    break;
                };
                let chunk_ptr = chunks.chunk_ptr(c);
                drop(chunks);
                // SAFETY: alloc_mutex is held: the chunk stays.
                let ok = unsafe { self.pcpu_populate_chunk(chunk_ptr, rs, re, gfp) };
                chunks = IrqSpinGuard::lock(&self.p, &self.percpu.lock);
                if ok.is_err() {
                    return;
                }
                chunks.populated(c, rs, re);
                nr_to_pop -= re - rs;
            }
            if nr_to_pop == 0 {
                return;
            }
            // Ran out of chunks to populate: a new one, then again.
            drop(chunks);
            let Ok(c) = self.pcpu_create_chunk(gfp) else {
                return;
            };
            IrqSpinGuard::lock(&self.p, &self.percpu.lock).insert(c);
        }
    }

    /// Per-chunk figures for `/sys/kernel/debug/percpu_stats`, reserved
    /// chunk first, then the first chunk, then the others by slot.
    pub fn pcpu_chunks(&self, mut f: impl FnMut(&PcpuChunkInfo)) {
        let chunks = IrqSpinGuard::lock(&self.p, &self.percpu.lock);
        chunks.for_each(|c| f(&c.info(self.percpu.layout.ai.unit_size)));
    }

    /// Global figures for `/sys/kernel/debug/percpu_stats`.
    pub fn pcpu_global_stats(&self) -> chunk::PcpuGlobalStats {
        let chunks = IrqSpinGuard::lock(&self.p, &self.percpu.lock);
        chunks.stats_snapshot()
    }
}

/// `setup_per_cpu_areas()`, run by boot after the page descriptors and
/// before the buddy allocator takes memblock's memory.
#[allow(clippy::too_many_arguments)]
pub(crate) fn setup_per_cpu_areas<P: Platform>(
    p: &P,
    mb: &mut crate::memblock::Memblock,
    dm: &crate::platform::DirectMap,
    nr_cpus: usize,
    cpu_to_node: &[u8],
    vmalloc_total: usize,
    memcg: bool,
    debug_preempt: bool,
) -> Result<PcpuState> {
    first_chunk::setup_per_cpu_areas(
        p,
        mb,
        dm,
        &first_chunk::FirstChunkInput {
            nr_cpus,
            cpu_to_node,
            vmalloc_total,
            memcg,
            debug_preempt,
        },
    )
}
