//! Chunks and their slots (`mm/percpu.c`: `pcpu_chunk_relocate()`,
//! `pcpu_find_block_fit()`'s caller loop; `mm/percpu-vm.c`:
//! `pcpu_create_chunk()`, `pcpu_populate_chunk()`,
//! `pcpu_depopulate_chunk()`, `pcpu_destroy_chunk()`).
//!
//! [`Chunks`] is what `pcpu_lock` protects: the slot lists (a chunk's slot
//! is its largest free run, `pcpu_chunk_slot()`; fully free chunks sit in
//! the free slot), the reserved and first chunks, and the global counters.
//! Chunk handles are raw pointers valid while the chunk is on a list or in
//! the hands of the balance step, which alone destroys chunks and does so
//! under `pcpu_alloc_mutex`.

use super::area::{ChunkMap, ChunkMapMem, PcpuBlockMd, PCPU_MIN_ALLOC_SIZE};
use crate::gfp::{self, Gfp};
use crate::page::Page;
use crate::platform::IrqSpinGuard;
use crate::platform::{PgProt, Platform};
use crate::{Error, Kmem, Result, PAGE_SHIFT, PAGE_SIZE};
use core::ptr::{self, NonNull};

/// `PCPU_SLOT_BASE_SHIFT`: slot 1 holds runs below 64 bytes.
const PCPU_SLOT_BASE_SHIFT: u32 = 5;
/// `PCPU_SLOT_FAIL_THRESHOLD`: a chunk in a slot below this that fails a
/// fit moves to slot 0 (it is nearly full anyway).
const PCPU_SLOT_FAIL_THRESHOLD: usize = 3;
/// Slot lists kept: enough for units up to 2^26 bytes.
const MAX_SLOTS: usize = 26;

/// `__pcpu_size_to_slot()`.
fn size_to_slot_raw(size: usize) -> usize {
    let fls = (usize::BITS - size.leading_zeros()) as usize;
    (fls + 2)
        .saturating_sub(PCPU_SLOT_BASE_SHIFT as usize)
        .max(1)
}

/// Which chunk this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `pcpu_reserved_chunk` (memblock, immutable).
    Reserved,
    /// `pcpu_first_chunk` (memblock, immutable).
    First,
    /// A vmalloc chunk, populated on demand.
    Vm,
}

/// `struct pcpu_chunk`.
pub(crate) struct PcpuChunk {
    /// The area allocator's state.
    pub(crate) map: ChunkMap<'static>,
    /// `base_addr`: offset 0 of the chunk, as a per-CPU address.
    pub(crate) base_addr: usize,
    /// Which chunk.
    pub(crate) kind: Kind,
    /// A vmalloc chunk's pages, `unit * nr_pages + page`, null where not
    /// populated (Linux finds them through the page tables).
    pages: *mut *const Page,
    /// The slot list it is on, `usize::MAX` when on none.
    slot: usize,
    /// Slot list links.
    prev: *mut PcpuChunk,
    next: *mut PcpuChunk,
    /// Live areas (`nr_alloc`).
    pub(crate) nr_alloc: usize,
    /// Largest area ever (`max_alloc_size`).
    pub(crate) max_alloc_size: usize,
    /// The allocation holding the maps (kvmalloc for a vmalloc chunk).
    maps_mem: *mut u8,
    /// Pages per unit, fixed at creation (read without the lock).
    nr_pages: usize,
}

/// A chunk's fields fixed at creation, `(base_addr, pages, nr_pages)`, read
/// through the raw pointer: populate and depopulate run without
/// `pcpu_lock`, while another CPU may hold the chunk's map mutably under
/// it, so no reference to the chunk may be made here.
fn fixed_fields(c: ChunkRef) -> (usize, *mut *const Page, usize) {
    let p = c.as_ptr();
    // SAFETY: `c` is a live chunk (every caller's contract); these fields
    // are written once at creation and never after, so reading them races
    // with nothing.
    unsafe {
        (
            ptr::addr_of!((*p).base_addr).read(),
            ptr::addr_of!((*p).pages).read(),
            ptr::addr_of!((*p).nr_pages).read(),
        )
    }
}

/// A chunk as `/sys/kernel/debug/percpu_stats` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpuChunkInfo {
    /// "Reserved Chunk", "First Chunk" or "" (a vmalloc chunk).
    pub label: &'static str,
    /// `nr_alloc`.
    pub nr_alloc: usize,
    /// `max_alloc_size`.
    pub max_alloc_size: usize,
    /// `empty_pop_pages`.
    pub empty_pop_pages: usize,
    /// `first_bit`.
    pub first_bit: usize,
    /// `free_bytes`.
    pub free_bytes: usize,
    /// `contig_bytes`.
    pub contig_bytes: usize,
    /// `sum_frag`: free bytes in holes between areas.
    pub sum_frag: usize,
    /// `max_frag`: the largest such hole.
    pub max_frag: usize,
    /// `cur_min_alloc`, `cur_med_alloc`, `cur_max_alloc` (bytes; 0 when
    /// the chunk has no area).
    pub cur_alloc: (usize, usize, usize),
    /// Pages of the chunk.
    pub nr_pages: usize,
    /// Pages populated.
    pub nr_populated: usize,
}

impl PcpuChunk {
    /// A chunk on no list.
    pub(crate) fn new(
        map: ChunkMap<'static>,
        base_addr: usize,
        kind: Kind,
        pages: *mut *const Page,
        maps_mem: *mut u8,
    ) -> Self {
        let nr_pages = map.nr_pages();
        PcpuChunk {
            map,
            base_addr,
            kind,
            pages,
            slot: usize::MAX,
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
            nr_alloc: 0,
            max_alloc_size: 0,
            maps_mem,
            nr_pages,
        }
    }

    /// Statistics as `chunk_map_stats()` computes them.
    pub(crate) fn info(&self, _unit_size: usize) -> PcpuChunkInfo {
        let mut sizes = [0usize; 3];
        let (mut n, mut min, mut max) = (0usize, usize::MAX, 0usize);
        let (mut sum_frag, mut max_frag) = (0usize, 0usize);
        let mut last_end = self.map.start_offset() / PCPU_MIN_ALLOC_SIZE;
        // A median over a stream needs every size; two passes keep this
        // heap-free: count, then find the middle one.
        for (off, bits) in self.map.areas() {
            let bytes = bits * PCPU_MIN_ALLOC_SIZE;
            n += 1;
            min = min.min(bytes);
            max = max.max(bytes);
            let gap = (off - last_end) * PCPU_MIN_ALLOC_SIZE;
            if gap > 0 {
                sum_frag += gap;
                max_frag = max_frag.max(gap);
            }
            last_end = off + bits;
        }
        if n > 0 {
            let want = n / 2;
            // The median: the smallest size with more than `want` areas at
            // or below it.
            let mut lo = min;
            let mut hi = max;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let below = self
                    .map
                    .areas()
                    .filter(|&(_, b)| b * PCPU_MIN_ALLOC_SIZE <= mid)
                    .count();
                if below > want {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            sizes = [min, lo, max];
        }
        let label = match self.kind {
            Kind::Reserved => "Reserved Chunk",
            Kind::First => "First Chunk",
            Kind::Vm => "",
        };
        PcpuChunkInfo {
            label,
            nr_alloc: self.nr_alloc,
            max_alloc_size: self.max_alloc_size,
            empty_pop_pages: self.map.nr_empty_pop_pages(),
            first_bit: self.map.chunk_md().first_free,
            free_bytes: self.map.free_bytes(),
            contig_bytes: self.map.contig_hint_bytes(),
            sum_frag,
            max_frag,
            cur_alloc: (sizes[0], sizes[1], sizes[2]),
            nr_pages: self.map.nr_pages(),
            nr_populated: self.map.nr_populated(),
        }
    }
}

/// The global counters of `mm/percpu-stats.c` (`struct percpu_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcpuGlobalStats {
    /// Allocations ever (`nr_alloc`).
    pub nr_alloc: u64,
    /// Frees ever (`nr_dealloc`).
    pub nr_dealloc: u64,
    /// Live allocations (`nr_cur_alloc`).
    pub nr_cur_alloc: u64,
    /// Most live at once (`nr_max_alloc`).
    pub nr_max_alloc: u64,
    /// Chunks now, first chunk included (`nr_chunks`).
    pub nr_chunks: u64,
    /// Most chunks at once (`nr_max_chunks`).
    pub nr_max_chunks: u64,
    /// Smallest allocation (`min_alloc_size`).
    pub min_alloc_size: u64,
    /// Largest allocation (`max_alloc_size`).
    pub max_alloc_size: u64,
    /// `pcpu_nr_empty_pop_pages`.
    pub empty_pop_pages: u64,
}

/// A chunk handle: valid while the chunk is on a list (under `pcpu_lock`)
/// or held by the balance step (under `pcpu_alloc_mutex`).
pub(crate) type ChunkRef = NonNull<PcpuChunk>;

/// What `pcpu_lock` protects.
pub(crate) struct Chunks {
    /// `pcpu_chunk_lists`: the head of each slot's list.
    slots: [*mut PcpuChunk; MAX_SLOTS],
    /// `pcpu_free_slot`: fully free chunks.
    free_slot: usize,
    /// `pcpu_unit_size`.
    unit_size: usize,
    /// `pcpu_reserved_chunk`.
    reserved: *mut PcpuChunk,
    /// `pcpu_first_chunk`.
    first: *mut PcpuChunk,
    /// `pcpu_nr_empty_pop_pages` (the reserved chunk's left out).
    pub(crate) nr_empty_pop_pages: usize,
    /// `pcpu_nr_populated`: populated pages per unit.
    pub(crate) nr_populated: usize,
    /// The statistics.
    stats: PcpuGlobalStats,
}

// SAFETY: the chunks are machine memory reached only under the lock that
// owns this value.
unsafe impl Send for Chunks {}

impl Chunks {
    /// The lists for `unit_size` with the boot chunks in them.
    ///
    /// # Safety
    ///
    /// `first` (and `reserved`, if given) are live chunks owned by the
    /// machine for good.
    pub(crate) unsafe fn new(
        unit_size: usize,
        first: ChunkRef,
        reserved: Option<ChunkRef>,
        size_sum_pages: usize,
    ) -> Self {
        let free_slot = size_to_slot_raw(unit_size) + 2;
        assert!(
            free_slot < MAX_SLOTS,
            "percpu: unit size {unit_size} too large for the slot table"
        );
        let mut c = Chunks {
            slots: [ptr::null_mut(); MAX_SLOTS],
            free_slot,
            unit_size,
            reserved: reserved.map_or(ptr::null_mut(), |r| r.as_ptr()),
            first: first.as_ptr(),
            nr_empty_pop_pages: 0,
            nr_populated: size_sum_pages,
            stats: PcpuGlobalStats {
                nr_chunks: 1,
                nr_max_chunks: 1,
                min_alloc_size: u64::MAX,
                ..Default::default()
            },
        };
        c.nr_empty_pop_pages = c.chunk(first).map.nr_empty_pop_pages();
        c.insert(first);
        c
    }

    /// The chunk behind a handle.
    pub(crate) fn chunk(&self, c: ChunkRef) -> &PcpuChunk {
        // SAFETY: handles are valid under the lock (see the type's doc).
        unsafe { c.as_ref() }
    }

    fn chunk_mut(&mut self, c: ChunkRef) -> &mut PcpuChunk {
        // SAFETY: as `chunk`, and `&mut self` is the lock's exclusivity.
        unsafe { &mut *c.as_ptr() }
    }

    /// The raw handle, for use after the lock is dropped.
    pub(crate) fn chunk_ptr(&self, c: ChunkRef) -> ChunkRef {
        c
    }

    /// The reserved chunk, if any.
    pub(crate) fn reserved(&self) -> Option<ChunkRef> {
        NonNull::new(self.reserved)
    }

    /// `pcpu_size_to_slot()`.
    fn size_to_slot(&self, size: usize) -> usize {
        if size == self.unit_size {
            self.free_slot
        } else {
            size_to_slot_raw(size).min(self.free_slot - 1)
        }
    }

    /// `pcpu_chunk_slot()`.
    fn slot_of(&self, c: ChunkRef) -> usize {
        let m = &self.chunk(c).map;
        if m.free_bytes() < PCPU_MIN_ALLOC_SIZE || m.contig_hint_bytes() == 0 {
            0
        } else if self.chunk(c).kind == Kind::Vm && m.is_empty() {
            self.free_slot
        } else {
            self.size_to_slot(m.contig_hint_bytes())
        }
    }

    fn unlink(&mut self, c: ChunkRef) {
        let (slot, prev, next) = {
            let ch = self.chunk(c);
            (ch.slot, ch.prev, ch.next)
        };
        if slot == usize::MAX {
            return;
        }
        // SAFETY: linked chunks are live under the lock.
        unsafe {
            if prev.is_null() {
                self.slots[slot] = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
        let ch = self.chunk_mut(c);
        ch.slot = usize::MAX;
        ch.prev = ptr::null_mut();
        ch.next = ptr::null_mut();
    }

    /// `__pcpu_chunk_move()`: to the head of `slot` when it moves up
    /// (`pcpu_chunk_relocate()`'s `oslot < nslot`) or is new, to the tail
    /// when it moves down (fuller chunks are found last in their slot).
    fn move_to(&mut self, c: ChunkRef, slot: usize, front: bool) {
        self.unlink(c);
        let head = self.slots[slot];
        if !front && !head.is_null() {
            // Append at the tail.
            let mut t = head;
            // SAFETY: linked chunks are live under the lock.
            unsafe {
                while !(*t).next.is_null() {
                    t = (*t).next;
                }
                (*t).next = c.as_ptr();
            }
            let ch = self.chunk_mut(c);
            ch.prev = t;
            ch.slot = slot;
            return;
        }
        let ch = self.chunk_mut(c);
        ch.next = head;
        ch.slot = slot;
        if !head.is_null() {
            // SAFETY: as above.
            unsafe { (*head).prev = c.as_ptr() };
        }
        self.slots[slot] = c.as_ptr();
    }

    /// `pcpu_chunk_relocate()`: put the chunk on the list its largest free
    /// run says (never the reserved chunk).
    fn relocate(&mut self, c: ChunkRef) {
        if c.as_ptr() == self.reserved {
            return;
        }
        let slot = self.slot_of(c);
        if self.chunk(c).slot != slot {
            let old = self.chunk(c).slot;
            self.move_to(c, slot, old < slot);
        }
    }

    /// Add a new chunk (`pcpu_chunk_relocate(chunk, -1)`).
    pub(crate) fn insert(&mut self, c: ChunkRef) {
        if c.as_ptr() != self.first && c.as_ptr() != self.reserved {
            self.stats.nr_chunks += 1;
            self.stats.nr_max_chunks = self.stats.nr_max_chunks.max(self.stats.nr_chunks);
            let empties = self.chunk(c).map.nr_empty_pop_pages();
            self.nr_empty_pop_pages += empties;
        }
        self.move_to(c, self.slot_of(c), true);
    }

    /// Run `op` on a chunk's map, keeping the global empty page count.
    fn with_map<R>(&mut self, c: ChunkRef, op: impl FnOnce(&mut ChunkMap<'static>) -> R) -> R {
        let counted = c.as_ptr() != self.reserved;
        let before = self.chunk(c).map.nr_empty_pop_pages();
        let r = op(&mut self.chunk_mut(c).map);
        let after = self.chunk(c).map.nr_empty_pop_pages();
        if counted {
            self.nr_empty_pop_pages = self.nr_empty_pop_pages + after - before;
        }
        r
    }

    fn count_alloc(&mut self, c: ChunkRef, bytes: usize) {
        let s = &mut self.stats;
        s.nr_alloc += 1;
        s.nr_cur_alloc += 1;
        s.nr_max_alloc = s.nr_max_alloc.max(s.nr_cur_alloc);
        s.min_alloc_size = s.min_alloc_size.min(bytes as u64);
        s.max_alloc_size = s.max_alloc_size.max(bytes as u64);
        let ch = self.chunk_mut(c);
        ch.nr_alloc += 1;
        ch.max_alloc_size = ch.max_alloc_size.max(bytes);
    }

    /// Allocate in one chunk (the reserved chunk's path). Returns the
    /// area's byte offset.
    pub(crate) fn alloc_in(
        &mut self,
        c: ChunkRef,
        bits: usize,
        align: usize,
        atomic: bool,
    ) -> Option<usize> {
        let start = self.chunk(c).map.find_block_fit(bits, align, atomic)?;
        let off = self.with_map(c, |m| m.alloc_area(bits, align, start))?;
        self.count_alloc(c, bits * PCPU_MIN_ALLOC_SIZE);
        self.relocate(c);
        Some(off * PCPU_MIN_ALLOC_SIZE)
    }

    /// The search of `pcpu_alloc()` over the slots from the smallest that
    /// can hold `size`. Returns the chunk and the area's byte offset.
    pub(crate) fn find_and_alloc(
        &mut self,
        size: usize,
        bits: usize,
        align: usize,
        atomic: bool,
    ) -> Option<(ChunkRef, usize)> {
        for slot in self.size_to_slot(size)..=self.free_slot {
            let mut p = self.slots[slot];
            while let Some(c) = NonNull::new(p) {
                p = self.chunk(c).next;
                let Some(start) = self.chunk(c).map.find_block_fit(bits, align, atomic) else {
                    if slot < PCPU_SLOT_FAIL_THRESHOLD {
                        self.move_to(c, 0, true);
                    }
                    continue;
                };
                if let Some(off) = self.with_map(c, |m| m.alloc_area(bits, align, start)) {
                    self.count_alloc(c, bits * PCPU_MIN_ALLOC_SIZE);
                    self.relocate(c);
                    return Some((c, off * PCPU_MIN_ALLOC_SIZE));
                }
            }
        }
        None
    }

    /// `pcpu_free_area()` and the slot move. Returns the bytes freed, or
    /// `None` when no live area starts at `bit_off`.
    pub(crate) fn free_in(&mut self, c: ChunkRef, bit_off: usize) -> Option<usize> {
        let bytes = self.with_map(c, |m| m.free_area(bit_off)).ok()?;
        self.stats.nr_dealloc += 1;
        self.stats.nr_cur_alloc -= 1;
        self.chunk_mut(c).nr_alloc -= 1;
        self.relocate(c);
        Some(bytes)
    }

    /// Pages `[rs, re)` of a chunk were populated.
    pub(crate) fn populated(&mut self, c: ChunkRef, rs: usize, re: usize) {
        let r = self.with_map(c, |m| m.set_populated(rs, re));
        debug_assert!(r.is_ok());
        self.nr_populated += re - rs;
    }

    /// Pages `[rs, re)` of a chunk were depopulated.
    pub(crate) fn depopulated(&mut self, c: ChunkRef, rs: usize, re: usize) {
        let r = self.with_map(c, |m| m.set_depopulated(rs, re));
        debug_assert!(r.is_ok());
        self.nr_populated -= re - rs;
    }

    /// Whether a fully free chunk is waiting.
    pub(crate) fn has_free_chunk(&self) -> bool {
        !self.slots[self.free_slot].is_null()
    }

    /// `free_percpu()`'s test: the chunk became fully free and another
    /// fully free chunk exists, so the balance step should free one.
    pub(crate) fn should_balance_after_free(&self, c: ChunkRef) -> bool {
        let ch = self.chunk(c);
        ch.kind == Kind::Vm && ch.map.is_empty() && {
            let mut p = self.slots[self.free_slot];
            let mut other = false;
            while let Some(o) = NonNull::new(p) {
                other |= o != c;
                p = self.chunk(o).next;
            }
            other
        }
    }

    /// `pcpu_balance_free()`'s pick: a fully free chunk other than the
    /// first on the free list (with `empty_only`, one with no empty
    /// populated page), taken off the lists.
    pub(crate) fn take_spare_free_chunk(&mut self, empty_only: bool) -> Option<ChunkRef> {
        let head = NonNull::new(self.slots[self.free_slot])?;
        let mut p = self.chunk(head).next;
        while let Some(c) = NonNull::new(p) {
            p = self.chunk(c).next;
            if !empty_only || self.chunk(c).map.nr_empty_pop_pages() == 0 {
                // Its empty pages leave the global count as the destroy
                // step depopulates them (`depopulated()`).
                self.unlink(c);
                self.stats.nr_chunks -= 1;
                return Some(c);
            }
        }
        None
    }

    /// `pcpu_balance_populated()`'s pick: the first chunk, from the slot
    /// that can hold a page up, with unpopulated pages, and its first run
    /// of them, at most `max` long.
    pub(crate) fn unpopulated_run(&self, max: usize) -> Option<(ChunkRef, usize, usize)> {
        for slot in self.size_to_slot(PAGE_SIZE)..=self.free_slot {
            let mut p = self.slots[slot];
            while let Some(c) = NonNull::new(p) {
                let m = &self.chunk(c).map;
                p = self.chunk(c).next;
                if m.nr_populated() == m.nr_pages() {
                    continue;
                }
                let rs = (0..m.nr_pages()).find(|&i| !m.page_populated(i))?;
                let mut re = rs + 1;
                while re < m.nr_pages() && re - rs < max && !m.page_populated(re) {
                    re += 1;
                }
                return Some((c, rs, re));
            }
        }
        None
    }

    /// `pcpu_chunk_addr_search()`: the chunk holding per-CPU address `addr`.
    pub(crate) fn chunk_of(&self, addr: usize) -> Option<ChunkRef> {
        let inside = |c: ChunkRef| {
            let ch = self.chunk(c);
            addr >= ch.base_addr && addr - ch.base_addr < ch.map.nr_pages() * PAGE_SIZE
        };
        if let Some(r) = self.reserved().filter(|&r| inside(r)) {
            return Some(r);
        }
        for slot in 0..=self.free_slot {
            let mut p = self.slots[slot];
            while let Some(c) = NonNull::new(p) {
                if inside(c) {
                    return Some(c);
                }
                p = self.chunk(c).next;
            }
        }
        None
    }

    /// Every chunk: the reserved one, then the slot lists in order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&PcpuChunk)) {
        if let Some(r) = self.reserved() {
            f(self.chunk(r));
        }
        for slot in 0..=self.free_slot {
            let mut p = self.slots[slot];
            while let Some(c) = NonNull::new(p) {
                f(self.chunk(c));
                p = self.chunk(c).next;
            }
        }
    }

    /// The global statistics now.
    pub(crate) fn stats_snapshot(&self) -> PcpuGlobalStats {
        let mut s = self.stats;
        if s.min_alloc_size == u64::MAX {
            s.min_alloc_size = 0;
        }
        s.empty_pop_pages = self.nr_empty_pop_pages as u64;
        s
    }
}

/// Bytes of one allocation holding a chunk's maps for `nr_pages` pages.
fn maps_layout(nr_pages: usize) -> (usize, usize, usize, usize, usize) {
    let w = core::mem::size_of::<usize>();
    let a = ChunkMap::alloc_map_longs(nr_pages) * w;
    let b = ChunkMap::bound_map_longs(nr_pages) * w;
    let p = ChunkMap::populated_longs(nr_pages) * w;
    let md_off = (a + b + p).next_multiple_of(core::mem::align_of::<PcpuBlockMd>());
    let total = md_off + nr_pages * core::mem::size_of::<PcpuBlockMd>();
    (a, b, p, md_off, total)
}

/// Carve a chunk's maps out of `mem` (`maps_layout(nr_pages).4` bytes,
/// aligned for `PcpuBlockMd`).
///
/// # Safety
///
/// `mem` is valid for that many bytes, owned by the chunk for as long as
/// the returned maps live, and used by nothing else.
pub(crate) unsafe fn carve_maps(mem: NonNull<u8>, nr_pages: usize) -> ChunkMapMem<'static> {
    let (a, b, p, md_off, _) = maps_layout(nr_pages);
    let w = core::mem::size_of::<usize>();
    let base = mem.as_ptr();
    // SAFETY: the caller's promise; the four ranges are disjoint and
    // aligned (usize words from an aligned start, then the blocks at an
    // aligned offset).
    unsafe {
        ChunkMapMem {
            alloc_map: core::slice::from_raw_parts_mut(base.cast(), a / w),
            bound_map: core::slice::from_raw_parts_mut(base.add(a).cast(), b / w),
            populated: core::slice::from_raw_parts_mut(base.add(a + b).cast(), p / w),
            md_blocks: core::slice::from_raw_parts_mut(base.add(md_off).cast(), nr_pages),
        }
    }
}

/// Bytes [`carve_maps`] needs.
pub(crate) fn maps_bytes(nr_pages: usize) -> usize {
    maps_layout(nr_pages).4
}

impl<P: Platform> Kmem<P> {
    /// `pcpu_create_chunk()`: a vmalloc area spanning every unit, and the
    /// chunk's maps and page table (kvzalloc), nothing populated.
    pub(crate) fn pcpu_create_chunk(&self, gfp: Gfp) -> Result<ChunkRef> {
        let lay = &self.percpu.layout;
        let nr_pages = lay.ai.unit_size >> PAGE_SHIFT;
        let (start, end) = self.vmalloc_range().ok_or(Error::NoMemory)?;
        let gfp = gfp & (gfp::GFP_KERNEL | gfp::__GFP_NORETRY | gfp::__GFP_NOWARN);
        let vm = self.get_vm_area_node(
            lay.span,
            lay.ai.atom_size.max(PAGE_SIZE),
            PAGE_SHIFT,
            crate::vmalloc::VM_ALLOC | crate::vmalloc::VM_NO_GUARD,
            start,
            end,
            -1,
            gfp,
            core::panic::Location::caller(),
        )?;
        // SAFETY: the area was just made, and is ours.
        let base_addr = unsafe { vm.as_ref().addr() } as usize;
        let cleanup_vm = |k: &Self| {
            // SAFETY: the area is ours and maps nothing.
            let _ = unsafe { k.free_vm_area(vm.as_ref()) };
        };
        let maps = match self.kvzalloc(maps_bytes(nr_pages), gfp) {
            Ok(m) => m,
            Err(e) => {
                cleanup_vm(self);
                return Err(e);
            }
        };
        let pages_bytes = lay.nr_units * nr_pages * core::mem::size_of::<*const Page>();
        let pages = match self.kvzalloc(pages_bytes, gfp) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: allocated above, never published.
                let _ = unsafe { self.kvfree(maps.as_ptr()) };
                cleanup_vm(self);
                return Err(e);
            }
        };
        let chunk_mem = match self.kzalloc(core::mem::size_of::<PcpuChunk>(), gfp) {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: allocated above, never published.
                unsafe {
                    let _ = self.kvfree(pages.as_ptr());
                    let _ = self.kvfree(maps.as_ptr());
                }
                cleanup_vm(self);
                return Err(e);
            }
        };
        // SAFETY: `maps` is a fresh allocation of the size carve_maps needs,
        // owned by the chunk from now on.
        let mem = unsafe { carve_maps(maps, nr_pages) };
        let map = ChunkMap::init(mem, nr_pages, 0, 0).expect("a vmalloc chunk's maps fit");
        let c = chunk_mem.cast::<PcpuChunk>();
        // SAFETY: a fresh kmalloc object sized and aligned for the chunk.
        unsafe {
            c.as_ptr().write(PcpuChunk::new(
                map,
                base_addr,
                Kind::Vm,
                pages.as_ptr().cast(),
                maps.as_ptr(),
            ))
        };
        Ok(c)
    }

    /// `pcpu_populate_chunk()`: back pages `[rs, re)` of a vmalloc chunk in
    /// every unit with a page from that CPU's node, and map them.
    ///
    /// # Safety
    ///
    /// `c` is a live vmalloc chunk that nothing else populates or destroys
    /// meanwhile (the caller holds `pcpu_alloc_mutex`), and `[rs, re)` is
    /// unpopulated.
    pub(crate) unsafe fn pcpu_populate_chunk(
        &self,
        c: ChunkRef,
        rs: usize,
        re: usize,
        gfp: Gfp,
    ) -> Result<()> {
        let (base, pages, nr_pages) = fixed_fields(c);
        let gfp = gfp | gfp::__GFP_HIGHMEM;
        // Every CPU's pages first, then the mappings, as Linux's
        // pcpu_populate_chunk() does: a failed allocation has mapped nothing.
        for cpu in 0..self.nr_cpus {
            let row = cpu * nr_pages;
            for page in rs..re {
                let p = match self.alloc_pages_node(self.cpu_to_node(cpu) as i32, gfp, 0) {
                    Ok(p) => p,
                    Err(e) => {
                        // SAFETY: undo this call's work: the pages it put
                        // in, none of them mapped yet.
                        unsafe { self.pcpu_free_pages(c, rs, re, cpu, page) };
                        return Err(e);
                    }
                };
                // SAFETY: the table has nr_units * nr_pages slots; these are
                // ours (the caller holds pcpu_alloc_mutex).
                unsafe { *pages.add(row + page) = p as *const Page };
            }
        }
        for cpu in 0..self.nr_cpus {
            let row = cpu * nr_pages;
            let va = base + self.pcpu_unit_offset(cpu) + (rs << PAGE_SHIFT);
            // SAFETY: the slots filled above.
            let run = unsafe { core::slice::from_raw_parts(pages.add(row + rs), re - rs) };
            if let Err(e) = self.vmap_pages_range(va, run, PgProt::Kernel, PAGE_SHIFT) {
                // vmap_pages_range() undid its own part; unmap the units
                // mapped before, flush, then free every page.
                for done in 0..cpu {
                    let va = base + self.pcpu_unit_offset(done) + (rs << PAGE_SHIFT);
                    self.p.unmap_kernel_range(va, (re - rs) << PAGE_SHIFT);
                }
                self.p
                    .flush_tlb_kernel_range(base, base + self.percpu.layout.span);
                // SAFETY: nothing maps the pages any more.
                unsafe { self.pcpu_free_pages(c, rs, re, self.nr_cpus, 0) };
                return Err(e);
            }
        }
        Ok(())
    }

    /// Free the pages of `[rs, re)` for CPUs below `cpus`, and for CPU
    /// `cpus` those below `upto` (an unwinding populate), clearing slots.
    ///
    /// # Safety
    ///
    /// As [`pcpu_populate_chunk`](Self::pcpu_populate_chunk); the pages are
    /// unmapped or were never mapped.
    unsafe fn pcpu_free_pages(&self, c: ChunkRef, rs: usize, re: usize, cpus: usize, upto: usize) {
        let (_, pages, nr_pages) = fixed_fields(c);
        for cpu in 0..=cpus.min(self.nr_cpus - 1) {
            let end = if cpu == cpus { upto } else { re };
            for page in rs..end.max(rs) {
                // SAFETY: a slot of the table; its page is ours to free.
                unsafe {
                    let slot = pages.add(cpu * nr_pages + page);
                    if let Some(p) = (*slot).as_ref() {
                        let _ = self.__free_pages(p, 0);
                    }
                    *slot = ptr::null();
                }
            }
        }
    }

    /// `pcpu_depopulate_chunk()`: unmap pages `[rs, re)` in every unit,
    /// flush once, free the pages.
    ///
    /// # Safety
    ///
    /// As [`pcpu_populate_chunk`](Self::pcpu_populate_chunk), with the
    /// range populated and holding no live area.
    pub(crate) unsafe fn pcpu_depopulate_chunk(&self, c: ChunkRef, rs: usize, re: usize) {
        let (base, _, _) = fixed_fields(c);
        for cpu in 0..self.nr_cpus {
            let va = base + self.pcpu_unit_offset(cpu) + (rs << PAGE_SHIFT);
            self.p.unmap_kernel_range(va, (re - rs) << PAGE_SHIFT);
        }
        self.p
            .flush_tlb_kernel_range(base, base + self.percpu.layout.span);
        // SAFETY: unmapped above; every CPU's pages of the range go.
        unsafe { self.pcpu_free_pages(c, rs, re, self.nr_cpus, 0) };
    }

    /// `pcpu_destroy_chunk()`: depopulate, then give back the area, the maps
    /// and the chunk.
    ///
    /// # Safety
    ///
    /// `c` is a vmalloc chunk taken off every list, with no live area, that
    /// nothing else reaches.
    pub(crate) unsafe fn pcpu_destroy_chunk(&self, c: ChunkRef) {
        // SAFETY: the caller's promise.
        let nr_pages = unsafe { c.as_ref().map.nr_pages() };
        let mut page = 0;
        while page < nr_pages {
            // SAFETY: as above.
            let populated = |i: usize| unsafe { c.as_ref().map.page_populated(i) };
            if !populated(page) {
                page += 1;
                continue;
            }
            let mut end = page + 1;
            while end < nr_pages && populated(end) {
                end += 1;
            }
            // SAFETY: a populated run of a chunk with no live area.
            unsafe { self.pcpu_depopulate_chunk(c, page, end) };
            IrqSpinGuard::lock(&self.p, &self.percpu.lock).depopulated(c, page, end);
            page = end;
        }
        // SAFETY: nothing reaches the chunk any more; its memory goes back
        // where it came from.
        unsafe {
            let base = c.as_ref().base_addr;
            if let Some(vm) = self.find_vm_struct(base as *const u8) {
                let _ = self.free_vm_area(vm);
            }
            let _ = self.kvfree(c.as_ref().pages.cast());
            let _ = self.kvfree(c.as_ref().maps_mem);
            let _ = self.kfree(c.as_ptr().cast());
        }
    }
}
