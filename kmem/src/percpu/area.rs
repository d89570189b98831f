//! The chunk area allocator of `mm/percpu.c` (Linux 4.14's bitmap allocator
//! with 5.1's scan hints, as in 6.18). Chunk offsets, the same in all units,
//! are bits of [`PCPU_MIN_ALLOC_SIZE`] (4) bytes in blocks of
//! [`PCPU_BITMAP_BLOCK_BITS`] (1,024), a block a page. A [`ChunkMap`] keeps,
//! in memory its caller owns ([`ChunkMapMem`]: memblock for the first chunk,
//! kmalloc or vmalloc later), `alloc_map` (a bit per allocated unit),
//! `bound_map` (`nr_bits + 1` bits, set at each area's start and end: how
//! `pcpu_free_area()` finds a size), a [`PcpuBlockMd`] of hints per block
//! and one for the chunk, and `populated` (a bit per backed page).
//!
//! Searches read the hints, scanning the bitmap only where they point; a
//! broken contig hint is rebuilt from the scan hint onwards. Linux keeps the
//! hints conservative, not exact: an allocation over the scan hint forgets
//! it, a smaller one found later may be promoted, and the chunk misses a
//! region an in-block free grows across a block edge. With `F` the free bits
//! of a block (the chunk's, for its hints), `free(s, n)` for `[s, s + n) ⊆
//! F` and `maxrun` its longest run, [`ChunkMap::check`] verifies:
//!
//! ```text
//! contig_hint ≤ maxrun     contig_hint > 0 ⇒ free(contig_hint_start, contig_hint)
//! scan_hint ≤ contig_hint  scan_hint > 0 ⇒ free(scan_hint_start, scan_hint)
//! first_free ≤ min F       block: contig_hint = 1024 ⇔ F is the whole block
//! block: free(0, left_free) and free(1024 − right_free, right_free)
//! free_bytes = 4·|F|       nr_populated = |populated|
//! nr_empty_pop_pages = |{p ∈ populated : block p entirely free}|
//! ```
//!
//! [`ChunkMap::find_block_fit`] walks blocks in address order from the
//! chunk's `first_free` (its scan hint's end, for larger requests) to the
//! first whose contig hint, aligned, or region across blocks holds the
//! request: not the lowest fit (a smaller aligned region before a misaligned
//! contig hint is passed over), nor always a fit if there is one (but in a
//! chunk with nothing allocated or hidden). [`ChunkMap::alloc_area`] is
//! first fit: the lowest aligned run at or after its start, ending within
//! `alloc_bits + 1024` bits of it; one is there from a `find_block_fit`
//! start, in populated pages if `pop_only` was asked (atomic allocations).
//!
//! Unlike Linux, the chunk's hints get a freed region's end in chunk bits
//! (`pcpu_block_update_hint_free()` passes block bits: a no-op beyond block
//! 0); `nr_empty_pop_pages` is exact (Linux's runs low from an allocation to
//! its pages' population); [`ChunkMap::free_area`] refuses offsets where no
//! live area starts (double frees) and hidden regions.
#![allow(dead_code)] // check() and a few accessors serve tests and debugging

use crate::error::{Error, Result};
use crate::PAGE_SIZE;
use core::cmp::min;

/// log2 of the allocation unit (`PCPU_MIN_ALLOC_SHIFT`).
pub const PCPU_MIN_ALLOC_SHIFT: u32 = 2;
/// The allocation unit in bytes, a bit of the maps (`PCPU_MIN_ALLOC_SIZE`).
pub const PCPU_MIN_ALLOC_SIZE: usize = 1 << PCPU_MIN_ALLOC_SHIFT;
/// Bytes a metadata block covers: a page (`PCPU_BITMAP_BLOCK_SIZE`).
pub const PCPU_BITMAP_BLOCK_SIZE: usize = PAGE_SIZE;
/// Bits per metadata block (`PCPU_BITMAP_BLOCK_BITS`): 1,024.
pub const PCPU_BITMAP_BLOCK_BITS: usize = PCPU_BITMAP_BLOCK_SIZE >> PCPU_MIN_ALLOC_SHIFT;
const BB: usize = PCPU_BITMAP_BLOCK_BITS;
const UNIT: usize = PCPU_MIN_ALLOC_SIZE;
const LONG: usize = usize::BITS as usize;

/// The hints of a block or of the whole chunk (`struct pcpu_block_md`), in
/// bits from the block's start (`usize` where Linux has `int`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcpuBlockMd {
    /// The largest free region known before the contig hint; 0 for none.
    pub scan_hint: usize,
    /// Where the scan hint starts.
    pub scan_hint_start: usize,
    /// The largest free region known.
    pub contig_hint: usize,
    /// Where the contig hint starts.
    pub contig_hint_start: usize,
    /// Free bits at the start (blocks only).
    pub left_free: usize,
    /// Free bits at the end (blocks only).
    pub right_free: usize,
    /// No bit before this one is free.
    pub first_free: usize,
    /// Bits covered.
    pub nr_bits: usize,
}

impl PcpuBlockMd {
    /// `n` free bits (`pcpu_init_md_block()`).
    pub fn new(n: usize) -> Self {
        let mut md = Self::default();
        (md.contig_hint, md.left_free, md.right_free, md.nr_bits) = (n, n, n, n);
        md
    }

    /// `pcpu_check_block_hint()`: the contig hint holds `bits` at `align`.
    fn fits(&self, bits: usize, align: usize) -> bool {
        let pad = align_up(self.contig_hint_start, align) - self.contig_hint_start;
        pad + bits <= self.contig_hint
    }

    /// `pcpu_next_hint()`: where to look for `bits`: past a too small scan hint.
    fn next_hint(&self, bits: usize) -> usize {
        let (ss, scan) = (self.scan_hint_start, self.scan_hint);
        if scan != 0 && self.contig_hint_start > ss && bits > scan {
            return ss + scan;
        }
        self.first_free
    }

    /// `pcpu_block_update()`: take in `[start, end)`, all of a free region.
    fn update(&mut self, start: usize, end: usize) {
        let (contig, cs, ss) = (end - start, self.contig_hint_start, self.scan_hint_start);
        self.first_free = min(self.first_free, start);
        let at_end = end == self.nr_bits;
        self.left_free = if start == 0 { contig } else { self.left_free };
        self.right_free = if at_end { contig } else { self.right_free };
        if contig > self.contig_hint {
            // The old contig hint becomes the scan hint if it lies before
            // and beats it; a scan hint that would lie after it goes.
            if start <= cs || (self.contig_hint <= self.scan_hint && start < ss) {
                self.scan_hint = 0;
            } else if self.contig_hint > self.scan_hint {
                (self.scan_hint_start, self.scan_hint) = (cs, self.contig_hint);
            }
            (self.contig_hint_start, self.contig_hint) = (start, contig);
        } else if contig == self.contig_hint {
            if cs != 0 && (start == 0 || start.trailing_zeros() > cs.trailing_zeros()) {
                // Better aligned: it becomes the contig hint.
                self.contig_hint_start = start;
                if start < ss && self.contig_hint > self.scan_hint {
                    self.scan_hint = 0;
                }
            } else if start > ss || self.contig_hint > self.scan_hint {
                (self.scan_hint_start, self.scan_hint) = (start, contig);
            }
        } else if start < cs && (contig > self.scan_hint || contig == self.scan_hint && start > ss)
        {
            (self.scan_hint_start, self.scan_hint) = (start, contig);
        }
    }
}

/// The memory of a [`ChunkMap`], owned by the caller: at least
/// [`ChunkMap::alloc_map_longs`] etc. and `nr_pages` blocks, not zeroed.
pub struct ChunkMapMem<'a> {
    /// `chunk->alloc_map`.
    pub alloc_map: &'a mut [usize],
    /// `chunk->bound_map`.
    pub bound_map: &'a mut [usize],
    /// `chunk->md_blocks`.
    pub md_blocks: &'a mut [PcpuBlockMd],
    /// `chunk->populated`.
    pub populated: &'a mut [usize],
}

/// What [`ChunkMap::check`] found wrong, and in which block (`None`: chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckError(pub &'static str, pub Option<usize>);

/// A chunk's part of `struct pcpu_chunk` for areas; in bits unless bytes said.
pub struct ChunkMap<'a> {
    alloc_map: &'a mut [usize],
    bound_map: &'a mut [usize],
    md_blocks: &'a mut [PcpuBlockMd],
    populated: &'a mut [usize],
    chunk_md: PcpuBlockMd,
    nr_pages: usize,
    nr_bits: usize,
    free_bytes: usize,
    start_offset: usize,
    end_offset: usize,
    nr_populated: usize,
    nr_empty_pop_pages: usize,
}

/// Read-only accessors of `ChunkMap`'s counters.
macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        $($(#[$doc])* pub fn $name(&self) -> usize { self.$name })*
    };
}

impl<'a> ChunkMap<'a> {
    /// Words of `alloc_map` for `nr_pages` pages.
    pub const fn alloc_map_longs(nr_pages: usize) -> usize {
        nr_pages.saturating_mul(BB).div_ceil(LONG)
    }

    /// Words of `bound_map` (a bit more than `alloc_map`).
    pub const fn bound_map_longs(nr_pages: usize) -> usize {
        nr_pages.saturating_mul(BB).saturating_add(1).div_ceil(LONG)
    }

    /// Words of `populated`.
    pub const fn populated_longs(nr_pages: usize) -> usize {
        nr_pages.div_ceil(LONG)
    }

    /// `nr_pages` free, unpopulated pages, the first `start` and last `end`
    /// bytes hidden (allocated for good) as `pcpu_alloc_first_chunk()` hides
    /// the static area and the page tail; other chunks have neither. Then
    /// the first chunk calls [`ChunkMap::set_populated`]`(0, nr_pages)`.
    /// `InvalidArgument`: offsets not in units or leaving nothing, short maps.
    pub fn init(mem: ChunkMapMem<'a>, nr_pages: usize, start: usize, end: usize) -> Result<Self> {
        let a = Self::alloc_map_longs(nr_pages);
        let b = Self::bound_map_longs(nr_pages);
        let p = Self::populated_longs(nr_pages);
        let size = nr_pages.saturating_mul(PAGE_SIZE);
        let short = mem.alloc_map.len() < a || mem.bound_map.len() < b;
        let short = short || mem.md_blocks.len() < nr_pages || mem.populated.len() < p;
        if short || (start | end) % UNIT != 0 || start.saturating_add(end) >= size {
            return Err(Error::InvalidArgument);
        }
        let nr_bits = nr_pages * BB;
        let mut c = ChunkMap {
            alloc_map: &mut mem.alloc_map[..a],
            bound_map: &mut mem.bound_map[..b],
            md_blocks: &mut mem.md_blocks[..nr_pages],
            populated: &mut mem.populated[..p],
            chunk_md: PcpuBlockMd::new(nr_bits),
            nr_pages,
            nr_bits,
            free_bytes: size - start - end,
            start_offset: start,
            end_offset: end,
            nr_populated: 0,
            nr_empty_pop_pages: 0,
        };
        c.alloc_map.fill(0);
        c.bound_map.fill(0);
        c.populated.fill(0);
        c.md_blocks.fill(PcpuBlockMd::new(BB));
        c.chunk_md.first_free = start / UNIT;
        for (off, bits) in [(0, start / UNIT), (nr_bits - end / UNIT, end / UNIT)] {
            if bits != 0 {
                c.mark_allocated(off, bits);
                c.block_update_hint_alloc(off, bits);
            }
        }
        Ok(c)
    }

    getters! {
        /// Pages in the chunk (`chunk->nr_pages`).
        nr_pages,
        /// Bits in the maps (`pcpu_chunk_map_bits()`).
        nr_bits,
        /// Hidden bytes at the start (`chunk->start_offset`).
        start_offset,
        /// Hidden bytes at the end (`chunk->end_offset`).
        end_offset,
        /// Free bytes (`chunk->free_bytes`).
        free_bytes,
        /// Populated pages (`chunk->nr_populated`).
        nr_populated,
        /// Populated pages whose block is free (`chunk->nr_empty_pop_pages`).
        nr_empty_pop_pages,
    }

    /// The chunk's contig hint in bytes, for `pcpu_chunk_slot()`.
    pub fn contig_hint_bytes(&self) -> usize {
        self.chunk_md.contig_hint * UNIT
    }

    /// The chunk's hints (`chunk->chunk_md`).
    pub fn chunk_md(&self) -> &PcpuBlockMd {
        &self.chunk_md
    }

    /// The blocks' hints (`chunk->md_blocks`).
    pub fn md_blocks(&self) -> &[PcpuBlockMd] {
        self.md_blocks
    }

    /// Page `page` is populated.
    pub fn page_populated(&self, page: usize) -> bool {
        page < self.nr_pages && test_bit(self.populated, page)
    }

    /// Only the hidden regions are allocated.
    pub fn is_empty(&self) -> bool {
        self.free_bytes == self.nr_pages * PAGE_SIZE - self.start_offset - self.end_offset
    }

    /// The areas, `(bit_off, bits)`, hidden ones left out: for `chunk_map_stats()`.
    pub fn areas(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let end = self.nr_bits - self.end_offset / UNIT;
        let mut pos = self.start_offset / UNIT;
        core::iter::from_fn(move || {
            // `pos` ends an area (or the hidden start): the next allocated unit starts one.
            let start = find_next_bit(self.alloc_map, end, pos, false);
            pos = find_next_bit(self.bound_map, end, start + 1, false);
            (start < end).then_some((start, pos - start))
        })
    }

    /// A request `pcpu_alloc()` makes: fits the chunk, aligned to 2^n ≤ 1024.
    fn valid(&self, bits: usize, align: usize) -> bool {
        bits != 0 && bits <= self.nr_bits && align.is_power_of_two() && align <= BB
    }

    /// `pcpu_find_block_fit()`: where [`ChunkMap::alloc_area`] should look
    /// for `alloc_bits` bits at `align` (a power of two ≤ 1024); with
    /// `pop_only`, in populated pages. `None`: no fit known, or invalid.
    pub fn find_block_fit(&self, alloc_bits: usize, align: usize, pop_only: bool) -> Option<usize> {
        if !self.valid(alloc_bits, align) || !self.chunk_md.fits(alloc_bits, align) {
            return None;
        }
        let mut off = self.chunk_md.next_hint(alloc_bits);
        loop {
            let (bit_off, bits) = self.next_fit_region(alloc_bits, align, off);
            if bit_off >= self.nr_bits {
                return None;
            }
            // pcpu_is_populated(): else skip to a populated page after the hole.
            let (page, end) = (bit_off / BB, (bit_off + bits).div_ceil(BB));
            let hole = find_next_bit(self.populated, end, page, true);
            if !pop_only || hole >= end {
                return Some(bit_off);
            }
            off = find_next_bit(self.populated, end, hole + 1, false) * BB;
        }
    }

    /// `pcpu_next_fit_region()`: (scan start, span) of the next region the
    /// block hints say holds the request; `(nr_bits, 0)` if none.
    fn next_fit_region(&self, alloc_bits: usize, align: usize, off: usize) -> (usize, usize) {
        let (mut block_off, mut bit_off, mut bits) = (off % BB, off, 0);
        for (i, b) in self.md_blocks.iter().enumerate().skip(off / BB) {
            if bits != 0 {
                // A region carried over from the previous block's end.
                bits += b.left_free;
                if bits >= alloc_bits {
                    return (bit_off, bits);
                } else if b.left_free == BB {
                    continue;
                }
            }
            let (cs, pad) = (b.contig_hint_start, align_up(b.contig_hint_start, align));
            let pad = pad - cs;
            // block_off: a contig hint the carried region covered is done.
            if b.contig_hint != 0 && cs >= block_off && b.contig_hint >= pad + alloc_bits {
                let start = b.next_hint(alloc_bits);
                return (i * BB + start, pad + alloc_bits + cs - start);
            }
            let rs = align_up(BB - b.right_free, align);
            (block_off, bit_off, bits) = (0, i * BB + rs, BB - rs);
            if bits >= alloc_bits {
                return (bit_off, bits);
            }
        }
        (self.nr_bits, 0)
    }

    /// `pcpu_next_md_free_region()`: the next free region the block hints
    /// show, `(bit_off, bits)`; `bit_off >= nr_bits` if none.
    fn next_md_free_region(&self, off: usize) -> (usize, usize) {
        let (mut block_off, mut bit_off, mut bits) = (off % BB, off, 0);
        for (i, b) in self.md_blocks.iter().enumerate().skip(off / BB) {
            if bits != 0 {
                bits += b.left_free;
                if b.left_free != BB {
                    return (bit_off, bits);
                }
                continue;
            }
            let (cs, contig) = (b.contig_hint_start, b.contig_hint);
            if contig != 0 && cs >= block_off && cs + contig < BB {
                return (i * BB + cs, contig);
            }
            (block_off, bit_off, bits) = (0, (i + 1) * BB - b.right_free, b.right_free);
        }
        (bit_off, bits)
    }

    /// `pcpu_alloc_area()`: `alloc_bits` bits at `align`, first fit from
    /// `start` (from `find_block_fit`) within `alloc_bits + 1024` bits.
    pub fn alloc_area(&mut self, alloc_bits: usize, align: usize, start: usize) -> Option<usize> {
        if !self.valid(alloc_bits, align) || start > self.nr_bits {
            return None;
        }
        let end = min(start + alloc_bits + BB, self.nr_bits);
        let (found, hole) = find_zero_area(self.alloc_map, end, start, alloc_bits, align - 1);
        let bit_off = found?;
        if let Some((off, bits)) = hole {
            self.block_update_scan(off, bits);
        }
        self.mark_allocated(bit_off, alloc_bits);
        self.free_bytes -= alloc_bits * UNIT;
        if bit_off == self.chunk_md.first_free {
            let next = find_next_bit(self.alloc_map, self.nr_bits, bit_off + alloc_bits, true);
            self.chunk_md.first_free = next;
        }
        self.block_update_hint_alloc(bit_off, alloc_bits);
        Some(bit_off)
    }

    /// The maps' bits for a new area.
    fn mark_allocated(&mut self, bit_off: usize, bits: usize) {
        bitmap_assign(self.alloc_map, bit_off, bits, true);
        bitmap_assign(self.bound_map, bit_off, bits, false);
        bitmap_assign(self.bound_map, bit_off, 1, true);
        bitmap_assign(self.bound_map, bit_off + bits, 1, true);
    }

    /// `pcpu_free_area()`: returns the bytes freed; `InvalidArgument`, and
    /// nothing changed, where no live area starts or for a hidden region.
    pub fn free_area(&mut self, bit_off: usize) -> Result<usize> {
        let range = self.start_offset / UNIT..self.nr_bits - self.end_offset / UNIT;
        let starts = |i| test_bit(self.bound_map, i) && test_bit(self.alloc_map, i);
        if !range.contains(&bit_off) || !starts(bit_off) {
            return Err(Error::InvalidArgument);
        }
        let bits = find_next_bit(self.bound_map, self.nr_bits, bit_off + 1, false) - bit_off;
        bitmap_assign(self.alloc_map, bit_off, bits, false);
        self.free_bytes += bits * UNIT;
        self.chunk_md.first_free = min(self.chunk_md.first_free, bit_off);
        self.block_update_hint_free(bit_off, bits);
        Ok(bits * UNIT)
    }

    /// `pcpu_block_update_scan()`: a hole alignment made may be a scan hint.
    fn block_update_scan(&mut self, bit_off: usize, bits: usize) {
        let (index, s_off) = (bit_off / BB, bit_off % BB);
        if s_off + bits <= BB {
            let last = last_set_before(self.alloc_map, index * BB, s_off);
            self.md_blocks[index].update(last.map_or(0, |l| l + 1), s_off + bits);
        }
    }

    /// `pcpu_chunk_refresh_hint()`: from the block hints; unless
    /// `full_scan`, promote the scan hint and look after it only.
    fn chunk_refresh_hint(&mut self, full_scan: bool) {
        let md = &mut self.chunk_md;
        let mut off = md.first_free;
        md.contig_hint = 0;
        if !full_scan && md.scan_hint != 0 {
            (md.contig_hint_start, md.contig_hint) = (md.scan_hint_start, md.scan_hint);
            (off, md.scan_hint) = (md.scan_hint_start + md.scan_hint, 0);
        }
        loop {
            let (start, bits) = self.next_md_free_region(off);
            if start >= self.nr_bits {
                return;
            }
            self.chunk_md.update(start, start + bits);
            off = start + bits + 1;
        }
    }

    /// `pcpu_block_refresh_hint()`: rescan after the promoted scan hint.
    fn block_refresh_hint(&mut self, index: usize) {
        let (map, base, b) = (&*self.alloc_map, index * BB, &mut self.md_blocks[index]);
        let mut start = b.first_free;
        (b.contig_hint, b.right_free) = (0, 0);
        if b.scan_hint != 0 {
            (b.contig_hint_start, b.contig_hint) = (b.scan_hint_start, b.scan_hint);
            (start, b.scan_hint) = (b.scan_hint_start + b.scan_hint, 0);
        }
        loop {
            let s = find_next_bit(map, base + BB, base + start, true);
            if s >= base + BB {
                return;
            }
            start = find_next_bit(map, base + BB, s + 1, false) - base;
            b.update(s - base, start);
        }
    }

    /// Populated pages in `first..=last` whose block is free (contig hint whole).
    fn empty_pop(&self, first: usize, last: usize) -> usize {
        let empty = |&i: &usize| self.md_blocks[i].contig_hint == BB;
        let pop = |&i: &usize| test_bit(self.populated, i);
        (first..=last).filter(empty).filter(pop).count()
    }

    /// `pcpu_block_update_hint_alloc()`: after an allocation.
    fn block_update_hint_alloc(&mut self, bit_off: usize, bits: usize) {
        let (s_index, s_off) = (bit_off / BB, bit_off % BB);
        let (e_index, e_off) = ((bit_off + bits - 1) / BB, (bit_off + bits - 1) % BB + 1);
        let emptied = self.empty_pop(s_index, e_index);
        let (map, base, s) = (&*self.alloc_map, s_index * BB, &mut self.md_blocks[s_index]);
        if s_off == s.first_free {
            let from = min(base + s_off + bits, base + BB);
            s.first_free = find_next_bit(map, base + BB, from, true) - base;
        }
        if overlap(s.scan_hint_start, s.scan_hint, s_off, bits) {
            s.scan_hint = 0;
        }
        if overlap(s.contig_hint_start, s.contig_hint, s_off, bits) {
            // The contig hint is broken: rescan. Linux resets left_free
            // only for an area at the block's start, and a rescan that
            // promotes a scan hint lying after the contig hint (a tie)
            // starts past it, so an area inside the old leading free run
            // left left_free claiming bits now in use. kmem keeps the
            // invariant exact instead: at most `s_off` bits lead free.
            s.left_free = min(s.left_free, s_off);
            self.block_refresh_hint(s_index);
        } else {
            s.left_free = min(s.left_free, s_off);
            let right = if s_index == e_index { BB - e_off } else { 0 };
            s.right_free = min(s.right_free, right);
        }
        if s_index != e_index {
            let (map, base, e) = (&*self.alloc_map, e_index * BB, &mut self.md_blocks[e_index]);
            e.first_free = find_next_bit(map, base + BB, base + e_off, true) - base;
            if e_off < BB {
                if e_off > e.scan_hint_start {
                    e.scan_hint = 0;
                }
                e.left_free = 0;
                if e_off > e.contig_hint_start {
                    self.block_refresh_hint(e_index);
                } else {
                    e.right_free = min(e.right_free, BB - e_off);
                }
            }
            // Blocks the area covers whole are full (first_free untouched).
            let full_end = e_index + usize::from(e_off == BB);
            for b in &mut self.md_blocks[s_index + 1..full_end] {
                (b.scan_hint, b.contig_hint, b.left_free, b.right_free) = (0, 0, 0, 0);
            }
        }
        self.nr_empty_pop_pages -= emptied;
        let md = &mut self.chunk_md;
        if overlap(md.scan_hint_start, md.scan_hint, bit_off, bits) {
            md.scan_hint = 0;
        }
        if overlap(md.contig_hint_start, md.contig_hint, bit_off, bits) {
            self.chunk_refresh_hint(false);
        }
    }

    /// `pcpu_block_update_hint_free()`: after a free, merged with neighbours.
    fn block_update_hint_free(&mut self, bit_off: usize, bits: usize) {
        let (s_index, s_off) = (bit_off / BB, bit_off % BB);
        let (e_index, e_off) = ((bit_off + bits - 1) / BB, (bit_off + bits - 1) % BB + 1);
        let (map, s_base, e_base) = (&*self.alloc_map, s_index * BB, e_index * BB);
        let (s, e) = (self.md_blocks[s_index], self.md_blocks[e_index]);
        // The merged region: from the contig hint if it ends or starts right
        // there, else from the bitmap.
        let mut start = s.contig_hint_start;
        if s_off != s.contig_hint_start + s.contig_hint {
            start = last_set_before(map, s_base, s_off).map_or(0, |l| l + 1);
        }
        let mut end = e.contig_hint_start + e.contig_hint;
        if e_off != e.contig_hint_start {
            end = find_next_bit(map, e_base + BB, e_base + e_off, false) - e_base;
        }
        let before = self.empty_pop(s_index, e_index);
        if s_index == e_index {
            self.md_blocks[s_index].update(start, end);
        } else {
            self.md_blocks[s_index].update(start, BB);
            self.md_blocks[e_index].update(0, end);
            self.md_blocks[s_index + 1..e_index].fill(PcpuBlockMd::new(BB));
        }
        self.nr_empty_pop_pages += self.empty_pop(s_index, e_index) - before;
        if s_index != e_index || end - start >= BB {
            self.chunk_refresh_hint(true);
        } else {
            self.chunk_md.update(s_base + start, s_base + end);
        }
    }

    /// `pcpu_chunk_populated()`: pages `[page_start, page_end)` are backed.
    pub fn set_populated(&mut self, page_start: usize, page_end: usize) -> Result<()> {
        self.set_population(page_start, page_end, true)
    }

    /// `pcpu_chunk_depopulated()`: pages `[page_start, page_end)` are not.
    pub fn set_depopulated(&mut self, page_start: usize, page_end: usize) -> Result<()> {
        self.set_population(page_start, page_end, false)
    }

    /// Both of the above; (de)populating a page twice counts once.
    fn set_population(&mut self, page_start: usize, page_end: usize, on: bool) -> Result<()> {
        if page_start > page_end || page_end > self.nr_pages {
            return Err(Error::InvalidArgument);
        }
        for page in page_start..page_end {
            let (was, empty) = (test_bit(self.populated, page), self.empty_pop(page, page));
            bitmap_assign(self.populated, page, 1, on);
            self.nr_populated = self.nr_populated + usize::from(on) - usize::from(was);
            self.nr_empty_pop_pages += self.empty_pop(page, page);
            self.nr_empty_pop_pages -= empty;
        }
        Ok(())
    }

    /// The module docs' invariants, checked bit by bit (tests, debugging).
    pub fn check(&self) -> core::result::Result<(), CheckError> {
        let used = |i: usize| test_bit(self.alloc_map, i);
        let free = |s: usize, n: usize| (s..s + n).all(|i| !used(i));
        let run = |(run, max): (usize, usize), i| match used(i) {
            true => (0, max),
            false => (run + 1, max.max(run + 1)),
        };
        // Chunk-wide: every edge of an allocated run is an area boundary...
        let edge = |i: usize| (i > 0 && used(i - 1)) != (i < self.nr_bits && used(i));
        let bounds = (0..=self.nr_bits).all(|i| !edge(i) || test_bit(self.bound_map, i));
        let free_units = (0..self.nr_bits).filter(|&i| !used(i)).count();
        let pop = || (0..self.nr_pages).filter(|&p| test_bit(self.populated, p));
        let empty = pop().filter(|&p| free(p * BB, BB)).count();
        let blocks = self.md_blocks.iter().enumerate();
        let blocks = blocks.map(|(i, b)| (Some(i), b, i * BB, BB));
        let chunk = (None, &self.chunk_md, 0, self.nr_bits);
        for (blk, b, base, span) in blocks.chain([chunk]) {
            // A hint region [start, start + len) is within the span and free.
            let ok = |start, len| len == 0 || start + len <= span && free(base + start, len);
            let max = (base..base + span).fold((0, 0), run).1;
            let first = (base..base + span).position(|i| !used(i));
            let whole = blk.is_none() || (b.contig_hint == BB) == (max == BB);
            let right = span.checked_sub(b.right_free);
            let right = right.is_some_and(|r| ok(r, b.right_free));
            let edges = blk.is_none() || ok(0, b.left_free) && right;
            let scan = ok(b.scan_hint_start, b.scan_hint) && b.scan_hint <= b.contig_hint;
            let (c, counts) = (blk.is_none(), (self.nr_populated, self.nr_empty_pop_pages));
            let bad = [
                (b.nr_bits != span, "nr_bits"),
                (b.contig_hint > max || !whole, "contig_hint"),
                (!ok(b.contig_hint_start, b.contig_hint), "contig_hint_start"),
                (!scan, "scan_hint"),
                (!edges, "left_free or right_free"),
                (b.first_free > first.unwrap_or(span), "first_free"),
                // ... and the counters are right.
                (c && self.free_bytes != free_units * UNIT, "free_bytes"),
                (c && !bounds, "bound_map"),
                (c && counts != (pop().count(), empty), "populated counts"),
            ];
            if let Some((_, what)) = bad.into_iter().find(|x| x.0) {
                return Err(CheckError(what, blk));
            }
        }
        Ok(())
    }
}

/// `ALIGN(x, a)` for a power of two `a`.
const fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

/// `pcpu_region_overlap()` of a hint `[a, a + a_len)` and an area.
fn overlap(a: usize, a_len: usize, x: usize, x_len: usize) -> bool {
    a < x + x_len && x < a + a_len
}

/// `test_bit()`.
fn test_bit(map: &[usize], i: usize) -> bool {
    map[i / LONG] & (1 << (i % LONG)) != 0
}

/// `bitmap_set()` (`bitmap_clear()` unless `value`) of `[start, start + n)`.
fn bitmap_assign(map: &mut [usize], start: usize, n: usize, value: bool) {
    let mut i = start;
    while i < start + n {
        let len = min(LONG - i % LONG, start + n - i);
        let mask = (usize::MAX >> (LONG - len)) << (i % LONG);
        map[i / LONG] = (map[i / LONG] & !mask) | (mask * usize::from(value));
        i += len;
    }
}

/// `find_next_bit()` (`_zero_bit()` if `zero`) in `[start, size)`, or `size`.
fn find_next_bit(map: &[usize], size: usize, start: usize, zero: bool) -> usize {
    let (flip, mut i) = (usize::MAX * usize::from(zero), start);
    while i < size {
        let word = (map[i / LONG] ^ flip) >> (i % LONG);
        if word != 0 {
            return min(i + word.trailing_zeros() as usize, size);
        }
        i += LONG - i % LONG;
    }
    size
}

/// `find_last_bit()` of the `off` bits from `base`, from `base`.
fn last_set_before(map: &[usize], base: usize, off: usize) -> Option<usize> {
    let mut end = base + off;
    while end > base {
        let bits = (end - 1) % LONG + 1; // of the last word, below `end`
        let word = map[(end - 1) / LONG] & (usize::MAX >> (LONG - bits));
        if word != 0 {
            let at = end - bits + (LONG - 1 - word.leading_zeros() as usize);
            return at.checked_sub(base);
        }
        end -= bits;
    }
    None
}

/// Where `find_zero_area` found a run, and the hole it passed.
type Found = (Option<usize>, Option<(usize, usize)>);

/// `pcpu_find_zero_area()`: the first `nr` clear bits in `[start, size)`
/// at a multiple of `mask + 1`, and the largest (best aligned) hole passed.
fn find_zero_area(map: &[usize], size: usize, start: usize, nr: usize, mask: usize) -> Found {
    let (mut start, align_mask) = (start, mask);
    let mut hole: Option<(usize, usize)> = None;
    loop {
        let index = (find_next_bit(map, size, start, true) + align_mask) & !align_mask;
        if index + nr > size {
            return (None, hole);
        }
        let i = find_next_bit(map, index + nr, index, false);
        if i >= index + nr {
            return (Some(index), hole);
        }
        let (off, bits) = hole.unwrap_or((0, 0));
        let aligned = index == 0 || index.trailing_zeros() > off.trailing_zeros();
        if i - index > bits || i - index == bits && off != 0 && aligned {
            hole = Some((index, i - index));
        }
        start = i + 1;
    }
}

// No `unsafe` here, so Miri would only repeat the native run (slowly).
#[cfg(all(test, not(miri)))]
mod tests;
