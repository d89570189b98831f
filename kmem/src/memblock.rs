//! memblock, the early boot allocator (`mm/memblock.c`).
//!
//! Linux describes physical memory during early boot with two sorted arrays
//! of ranges: `memblock.memory` (all RAM the firmware reported) and
//! `memblock.reserved` (what is taken: the kernel image, firmware areas, and
//! every allocation made before the page allocator exists). Allocation finds
//! a range that is in `memory` but not in `reserved`, top-down by default
//! (bottom-up on request), and adds it to `reserved`. At the end of boot,
//! [`memblock_free_all`](crate::init) hands every unreserved range to the
//! buddy allocator in max-order chunks and memblock retires.
//!
//! memblock replaced the seeds' *bootmem* (a bitmap allocator removed in
//! Linux 4.20). The old names survive as thin aliases on
//! [`EarlyMem`](crate::init::EarlyMem), the handle early boot code gets from
//! [`Kmem::boot_with`](crate::Kmem::boot_with).
//!
//! Differences from Linux, by decision:
//! - The region arrays have a fixed capacity ([`INIT_MEMBLOCK_REGIONS`]);
//!   Linux doubles them from memblock itself. A full table is an error.
//! - Linux silently merges a reservation that overlaps an existing one; kmem
//!   reports it and refuses, because in a simulator an overlapping
//!   reservation is almost always a bug in the caller. A reservation must
//!   also lie inside the span of memory.

use crate::platform::{Level, Platform};
use crate::{report, Error, Result};
use core::fmt;

/// Capacity of each region table (Linux's `INIT_MEMBLOCK_REGIONS`).
pub const INIT_MEMBLOCK_REGIONS: usize = 128;
/// "No upper limit" for allocations (`MEMBLOCK_ALLOC_ANYWHERE`).
pub const MEMBLOCK_ALLOC_ANYWHERE: u64 = u64::MAX;
/// "Any node" (`NUMA_NO_NODE`).
pub const NUMA_NO_NODE: i32 = -1;

/// One range of a memblock table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemblockRegion {
    /// Physical base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// NUMA node.
    pub nid: u8,
}

impl MemblockRegion {
    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// A sorted, non-overlapping, merged table of ranges (`struct memblock_type`).
#[derive(Clone)]
pub struct MemblockType {
    name: &'static str,
    cnt: usize,
    total_size: u64,
    regions: [MemblockRegion; INIT_MEMBLOCK_REGIONS],
}

impl MemblockType {
    const fn new(name: &'static str) -> Self {
        MemblockType {
            name,
            cnt: 0,
            total_size: 0,
            regions: [MemblockRegion {
                base: 0,
                size: 0,
                nid: 0,
            }; INIT_MEMBLOCK_REGIONS],
        }
    }

    /// The regions, sorted by base address.
    pub fn regions(&self) -> &[MemblockRegion] {
        &self.regions[..self.cnt]
    }

    /// Sum of the region sizes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// The table's name (`"memory"` or `"reserved"`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn insert(&mut self, idx: usize, r: MemblockRegion) -> Result<()> {
        if self.cnt == INIT_MEMBLOCK_REGIONS {
            return Err(Error::NoSpace);
        }
        self.regions.copy_within(idx..self.cnt, idx + 1);
        self.regions[idx] = r;
        self.cnt += 1;
        self.total_size += r.size;
        Ok(())
    }

    fn remove_at(&mut self, idx: usize) {
        self.total_size -= self.regions[idx].size;
        self.regions.copy_within(idx + 1..self.cnt, idx);
        self.cnt -= 1;
    }

    /// Merge neighbours that touch and share a node (`memblock_merge_regions`).
    fn merge(&mut self) {
        let mut i = 0;
        while i + 1 < self.cnt {
            let (a, b) = (self.regions[i], self.regions[i + 1]);
            if a.end() == b.base && a.nid == b.nid {
                self.regions[i].size += b.size;
                self.regions.copy_within(i + 2..self.cnt, i + 1);
                self.cnt -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Add `[base, base+size)`, keeping what is already there for the
    /// overlapping parts (`memblock_add_range`).
    fn add_range(&mut self, base: u64, size: u64, nid: u8) -> Result<()> {
        let end = base + size;
        // Fill the gaps between existing regions, from low to high.
        let mut cur = base;
        let mut i = 0;
        while cur < end {
            while i < self.cnt && self.regions[i].end() <= cur {
                i += 1;
            }
            let gap_end = if i < self.cnt {
                self.regions[i].base.min(end)
            } else {
                end
            };
            if gap_end > cur {
                self.insert(
                    i,
                    MemblockRegion {
                        base: cur,
                        size: gap_end - cur,
                        nid,
                    },
                )?;
                i += 1;
            }
            cur = if i < self.cnt {
                self.regions[i].end().max(gap_end)
            } else {
                end
            };
        }
        self.merge();
        Ok(())
    }

    /// Split regions at `base` and `end` so that the range is covered by
    /// whole regions, and return their index range (`memblock_isolate_range`).
    fn isolate(&mut self, base: u64, end: u64) -> Result<(usize, usize)> {
        let mut i = 0;
        while i < self.cnt {
            let r = self.regions[i];
            if r.base < base && base < r.end() {
                self.regions[i].size = base - r.base;
                self.total_size -= r.end() - base;
                self.insert(
                    i + 1,
                    MemblockRegion {
                        base,
                        size: r.end() - base,
                        nid: r.nid,
                    },
                )?;
                continue;
            }
            if r.base < end && end < r.end() {
                self.regions[i].size = end - r.base;
                self.total_size -= r.end() - end;
                self.insert(
                    i + 1,
                    MemblockRegion {
                        base: end,
                        size: r.end() - end,
                        nid: r.nid,
                    },
                )?;
            }
            i += 1;
        }
        let start = self.regions().iter().position(|r| r.base >= base);
        let start = start.unwrap_or(self.cnt);
        let stop = self.regions()[start..]
            .iter()
            .position(|r| r.base >= end)
            .map_or(self.cnt, |p| start + p);
        Ok((start, stop))
    }

    fn remove_range(&mut self, base: u64, end: u64) -> Result<()> {
        let (s, e) = self.isolate(base, end)?;
        for idx in (s..e).rev() {
            self.remove_at(idx);
        }
        Ok(())
    }

    /// The first region overlapping `[base, end)`, if any.
    pub fn overlapping(&self, base: u64, end: u64) -> Option<MemblockRegion> {
        self.regions()
            .iter()
            .copied()
            .find(|r| r.base < end && base < r.end())
    }
}

/// Where the next allocation search goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the highest suitable address down (Linux's default).
    TopDown,
    /// From the lowest suitable address up (`memblock_set_bottom_up(true)`).
    BottomUp,
}

/// The early boot allocator (`struct memblock`).
#[derive(Clone)]
pub struct Memblock {
    direction: Direction,
    current_limit: u64,
    memory: MemblockType,
    reserved: MemblockType,
    retired: bool,
}

impl Default for Memblock {
    fn default() -> Self {
        Self::new()
    }
}

struct Mem(u64, u64);

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[mem {:#018x}-{:#018x}]", self.0, self.1.wrapping_sub(1))
    }
}

impl Memblock {
    /// An empty memblock: no memory, nothing reserved, top-down allocation.
    pub const fn new() -> Self {
        Memblock {
            direction: Direction::TopDown,
            current_limit: MEMBLOCK_ALLOC_ANYWHERE,
            memory: MemblockType::new("memory"),
            reserved: MemblockType::new("reserved"),
            retired: false,
        }
    }

    /// `memblock.memory`.
    pub fn memory(&self) -> &MemblockType {
        &self.memory
    }

    /// `memblock.reserved`.
    pub fn reserved(&self) -> &MemblockType {
        &self.reserved
    }

    /// `memblock_set_bottom_up()`.
    pub fn set_bottom_up(&mut self, enable: bool) {
        self.direction = if enable {
            Direction::BottomUp
        } else {
            Direction::TopDown
        };
    }

    /// `memblock_bottom_up()`.
    pub fn bottom_up(&self) -> bool {
        self.direction == Direction::BottomUp
    }

    /// `memblock_set_current_limit()`: allocations stay below `limit`.
    pub fn set_current_limit(&mut self, limit: u64) {
        self.current_limit = limit;
    }

    /// `memblock_get_current_limit()`.
    pub fn current_limit(&self) -> u64 {
        self.current_limit
    }

    /// `memblock_phys_mem_size()`.
    pub fn phys_mem_size(&self) -> u64 {
        self.memory.total_size
    }

    /// `memblock_reserved_size()`.
    pub fn reserved_size(&self) -> u64 {
        self.reserved.total_size
    }

    /// `memblock_start_of_DRAM()` (0 without memory).
    pub fn start_of_dram(&self) -> u64 {
        self.memory.regions().first().map_or(0, |r| r.base)
    }

    /// `memblock_end_of_DRAM()` (0 without memory).
    pub fn end_of_dram(&self) -> u64 {
        self.memory.regions().last().map_or(0, |r| r.end())
    }

    /// `memblock_is_region_memory()`: the whole range is RAM.
    pub fn is_region_memory(&self, base: u64, size: u64) -> bool {
        let end = base.saturating_add(size);
        self.memory
            .regions()
            .iter()
            .any(|r| r.base <= base && end <= r.end())
    }

    /// `memblock_is_region_reserved()`: some of the range is reserved.
    pub fn is_region_reserved(&self, base: u64, size: u64) -> bool {
        self.reserved
            .overlapping(base, base.saturating_add(size))
            .is_some()
    }

    /// Whether memblock has handed its memory to the page allocator.
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    pub(crate) fn retire(&mut self) {
        self.retired = true;
    }

    fn check_live<P: Platform + ?Sized>(&self, p: &P, what: &str) -> Result<()> {
        if self.retired {
            report!(
                p,
                Level::Warning,
                "WARNING: {what} called after memblock_free_all(): memblock has retired"
            );
            return Err(Error::Busy);
        }
        Ok(())
    }

    fn check_range<P: Platform + ?Sized>(p: &P, what: &str, base: u64, size: u64) -> Result<u64> {
        match base.checked_add(size) {
            Some(end) if size > 0 => Ok(end),
            _ => {
                report!(
                    p,
                    Level::Err,
                    "{what}: invalid range base {base:#018x} size {size:#x}"
                );
                Err(Error::InvalidArgument)
            }
        }
    }

    /// `memblock_add_node()`: register RAM on node `nid`.
    pub fn add_node<P: Platform + ?Sized>(
        &mut self,
        p: &P,
        base: u64,
        size: u64,
        nid: u8,
    ) -> Result<()> {
        self.check_live(p, "memblock_add")?;
        Self::check_range(p, "memblock_add", base, size)?;
        self.memory.add_range(base, size, nid).inspect_err(|_| {
            report!(
                p,
                Level::Err,
                "memblock: memory table full ({INIT_MEMBLOCK_REGIONS} regions)"
            )
        })
    }

    /// `memblock_add()`: register RAM on node 0.
    pub fn add<P: Platform + ?Sized>(&mut self, p: &P, base: u64, size: u64) -> Result<()> {
        self.add_node(p, base, size, 0)
    }

    /// `memblock_remove()`: forget RAM (for example a range `mem=` cut off).
    pub fn remove<P: Platform + ?Sized>(&mut self, p: &P, base: u64, size: u64) -> Result<()> {
        self.check_live(p, "memblock_remove")?;
        let end = Self::check_range(p, "memblock_remove", base, size)?;
        self.memory.remove_range(base, end)
    }

    /// `memblock_reserve()`: mark `[base, base+size)` as taken.
    ///
    /// A range reaching outside the span of memory, or overlapping an
    /// existing reservation, is reported and refused (see the module docs).
    pub fn reserve<P: Platform + ?Sized>(&mut self, p: &P, base: u64, size: u64) -> Result<()> {
        self.check_live(p, "memblock_reserve")?;
        let end = Self::check_range(p, "memblock_reserve", base, size)?;
        if end > self.end_of_dram() {
            report!(
                p,
                Level::Err,
                "memblock_reserve: {} is outside of memory {}",
                Mem(base, end),
                Mem(self.start_of_dram(), self.end_of_dram())
            );
            return Err(Error::InvalidArgument);
        }
        if let Some(o) = self.reserved.overlapping(base, end) {
            report!(
                p,
                Level::Err,
                "memblock_reserve: {} overlaps reserved {}",
                Mem(base, end),
                Mem(o.base, o.end())
            );
            return Err(Error::Busy);
        }
        let nid = self.memory.overlapping(base, end).map_or(0, |r| r.nid);
        self.reserved.add_range(base, size, nid).inspect_err(|_| {
            report!(
                p,
                Level::Err,
                "memblock: reserved table full ({INIT_MEMBLOCK_REGIONS} regions)"
            )
        })
    }

    /// `memblock_phys_free()`: give back a reserved range. Freeing a range
    /// that is not wholly reserved is reported and refused.
    pub fn phys_free<P: Platform + ?Sized>(&mut self, p: &P, base: u64, size: u64) -> Result<()> {
        self.check_live(p, "memblock_phys_free")?;
        let end = Self::check_range(p, "memblock_phys_free", base, size)?;
        let covered: u64 = self
            .reserved
            .regions()
            .iter()
            .map(|r| r.end().min(end).saturating_sub(r.base.max(base)))
            .sum();
        if covered != size {
            report!(
                p,
                Level::Err,
                "memblock_phys_free: {} is not reserved",
                Mem(base, end)
            );
            return Err(Error::InvalidArgument);
        }
        self.reserved.remove_range(base, end)
    }

    /// Call `f(start, end, nid)` for every free range (in `memory`, not in
    /// `reserved`) on node `nid` (`None`: all nodes), in ascending order
    /// (`for_each_free_mem_range`). Stops early when `f` returns `false`.
    pub fn for_each_free_range(&self, nid: Option<u8>, mut f: impl FnMut(u64, u64, u8) -> bool) {
        let res = self.reserved.regions();
        let mut ri = 0;
        for m in self.memory.regions() {
            if nid.is_some_and(|n| n != m.nid) {
                continue;
            }
            let mut cur = m.base;
            while ri < res.len() && res[ri].end() <= cur {
                ri += 1;
            }
            let mut j = ri;
            while cur < m.end() {
                let stop = if j < res.len() {
                    res[j].base.min(m.end())
                } else {
                    m.end()
                };
                if stop > cur && !f(cur, stop, m.nid) {
                    return;
                }
                if j < res.len() && res[j].base < m.end() {
                    cur = res[j].end().max(stop);
                    j += 1;
                } else {
                    cur = m.end();
                }
            }
        }
    }

    /// The same ranges as [`for_each_free_range`](Self::for_each_free_range),
    /// in descending order (`for_each_free_mem_range_reverse`).
    pub fn for_each_free_range_rev(
        &self,
        nid: Option<u8>,
        mut f: impl FnMut(u64, u64, u8) -> bool,
    ) {
        let res = self.reserved.regions();
        for m in self.memory.regions().iter().rev() {
            if nid.is_some_and(|n| n != m.nid) {
                continue;
            }
            let mut cur = m.end();
            // Reservations overlapping m, walked from the top.
            let mut j = res.partition_point(|r| r.base < m.end());
            while cur > m.base {
                let start = if j > 0 && res[j - 1].end() > m.base {
                    res[j - 1].end().min(cur)
                } else {
                    m.base
                };
                if cur > start && !f(start, cur, m.nid) {
                    return;
                }
                if j > 0 && res[j - 1].end() > m.base {
                    cur = res[j - 1].base.max(m.base).min(start);
                    j -= 1;
                } else {
                    cur = m.base;
                }
            }
        }
    }

    /// Find a free range without reserving it (`memblock_find_in_range_node`).
    pub fn find_in_range(
        &self,
        size: u64,
        align: u64,
        start: u64,
        end: u64,
        nid: Option<u8>,
    ) -> Option<u64> {
        let align = align.max(1);
        let end = end.min(self.current_limit);
        let mut found = None;
        match self.direction {
            Direction::TopDown => self.for_each_free_range_rev(nid, |s, e, _| {
                let (s, e) = (s.max(start), e.min(end));
                if e >= s + size && e >= size {
                    let cand = (e - size) & !(align - 1);
                    if cand >= s {
                        found = Some(cand);
                        return false;
                    }
                }
                true
            }),
            Direction::BottomUp => self.for_each_free_range(nid, |s, e, _| {
                let (s, e) = (s.max(start), e.min(end));
                let cand = s.next_multiple_of(align);
                if cand.checked_add(size).is_some_and(|c| c <= e) {
                    found = Some(cand);
                    return false;
                }
                true
            }),
        }
        found
    }

    /// `memblock_phys_alloc_range()`: allocate and reserve `size` bytes
    /// aligned to `align` (a power of two) inside `[start, end)`.
    pub fn phys_alloc_range<P: Platform + ?Sized>(
        &mut self,
        p: &P,
        size: u64,
        align: u64,
        start: u64,
        end: u64,
    ) -> Result<u64> {
        self.alloc_inner(p, size, align, start, end, None)
    }

    /// `memblock_phys_alloc_try_nid()`: allocate on node `nid` if it can,
    /// else anywhere.
    pub fn phys_alloc_try_nid<P: Platform + ?Sized>(
        &mut self,
        p: &P,
        size: u64,
        align: u64,
        nid: u8,
    ) -> Result<u64> {
        self.alloc_inner(p, size, align, 0, MEMBLOCK_ALLOC_ANYWHERE, Some(nid))
    }

    fn alloc_inner<P: Platform + ?Sized>(
        &mut self,
        p: &P,
        size: u64,
        align: u64,
        start: u64,
        end: u64,
        nid: Option<u8>,
    ) -> Result<u64> {
        self.check_live(p, "memblock_alloc")?;
        if size == 0 || (align != 0 && !align.is_power_of_two()) {
            report!(
                p,
                Level::Err,
                "memblock_alloc: invalid size {size:#x} or alignment {align:#x}"
            );
            return Err(Error::InvalidArgument);
        }
        let found = self
            .find_in_range(size, align, start, end, nid)
            .or_else(|| nid.and_then(|_| self.find_in_range(size, align, start, end, None)));
        match found {
            Some(base) => {
                let nid = self
                    .memory
                    .overlapping(base, base + size)
                    .map_or(0, |r| r.nid);
                self.reserved.add_range(base, size, nid).inspect_err(|_| {
                    report!(
                        p,
                        Level::Err,
                        "memblock: reserved table full ({INIT_MEMBLOCK_REGIONS} regions)"
                    )
                })?;
                Ok(base)
            }
            None => {
                report!(
                    p,
                    Level::Err,
                    "memblock_alloc: Failed to allocate {size} bytes align={align:#x} nid={} from={start:#x} max_addr={end:#x}",
                    nid.map_or(NUMA_NO_NODE, i32::from)
                );
                Err(Error::NoMemory)
            }
        }
    }

    /// Print the tables the way `memblock=debug` does (`memblock_dump_all`).
    pub fn dump<P: Platform + ?Sized>(&self, p: &P) {
        report!(p, Level::Debug, "MEMBLOCK configuration:");
        report!(
            p,
            Level::Debug,
            " memory size = {:#x} reserved size = {:#x}",
            self.memory.total_size,
            self.reserved.total_size
        );
        for t in [&self.memory, &self.reserved] {
            report!(p, Level::Debug, " {}.cnt  = {:#x}", t.name, t.cnt);
            for (i, r) in t.regions().iter().enumerate() {
                report!(
                    p,
                    Level::Debug,
                    " {}[{:#x}]\t[{:#018x}-{:#018x}], {:#018x} bytes on node {} flags: 0x0",
                    t.name,
                    i,
                    r.base,
                    r.end() - 1,
                    r.size,
                    r.nid
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::ArenaPlatform;
    use std::vec;
    use std::vec::Vec;

    fn with_p(f: impl FnOnce(&ArenaPlatform)) {
        let mut buf = vec![0u8; 8192];
        let p = ArenaPlatform::new(&mut buf, 1);
        f(&p);
    }

    fn free_ranges(m: &Memblock, rev: bool) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        let f = |s, e, _| {
            v.push((s, e));
            true
        };
        if rev {
            m.for_each_free_range_rev(None, f);
        } else {
            m.for_each_free_range(None, f);
        }
        v
    }

    #[test]
    fn add_merges_and_overlaps() {
        with_p(|p| {
            let mut m = Memblock::new();
            m.add(p, 0x1000, 0x1000).unwrap();
            m.add(p, 0x3000, 0x1000).unwrap();
            m.add(p, 0x2000, 0x1000).unwrap();
            assert_eq!(m.memory().regions().len(), 1);
            assert_eq!(m.phys_mem_size(), 0x3000);
            // Overlapping add keeps the union.
            m.add(p, 0x3800, 0x1000).unwrap();
            assert_eq!(
                m.memory().regions(),
                &[MemblockRegion {
                    base: 0x1000,
                    size: 0x3800,
                    nid: 0
                }]
            );
            // Different node does not merge.
            m.add_node(p, 0x10000, 0x1000, 1).unwrap();
            m.add_node(p, 0x11000, 0x1000, 0).unwrap();
            assert_eq!(m.memory().regions().len(), 3);
        });
    }

    #[test]
    fn remove_splits() {
        with_p(|p| {
            let mut m = Memblock::new();
            m.add(p, 0, 0x10000).unwrap();
            m.remove(p, 0x4000, 0x2000).unwrap();
            assert_eq!(
                m.memory().regions(),
                &[
                    MemblockRegion {
                        base: 0,
                        size: 0x4000,
                        nid: 0
                    },
                    MemblockRegion {
                        base: 0x6000,
                        size: 0xa000,
                        nid: 0
                    }
                ]
            );
            assert_eq!(m.phys_mem_size(), 0xe000);
        });
    }

    #[test]
    fn free_ranges_both_directions() {
        with_p(|p| {
            let mut m = Memblock::new();
            m.add(p, 0, 0x10000).unwrap();
            m.add(p, 0x20000, 0x10000).unwrap();
            m.reserve(p, 0, 0x1000).unwrap();
            m.reserve(p, 0x8000, 0x1000).unwrap();
            m.reserve(p, 0x2f000, 0x1000).unwrap();
            let fwd = free_ranges(&m, false);
            assert_eq!(
                fwd,
                [(0x1000, 0x8000), (0x9000, 0x10000), (0x20000, 0x2f000)]
            );
            let mut rev = free_ranges(&m, true);
            rev.reverse();
            assert_eq!(rev, fwd);
        });
    }

    #[test]
    fn top_down_and_bottom_up() {
        with_p(|p| {
            let mut m = Memblock::new();
            m.add(p, 0x1000, 0xf000).unwrap();
            let a = m
                .phys_alloc_range(p, 0x1000, 0x1000, 0, MEMBLOCK_ALLOC_ANYWHERE)
                .unwrap();
            assert_eq!(a, 0xf000);
            let b = m.phys_alloc_range(p, 0x100, 0x40, 0, 0x8000).unwrap();
            assert_eq!(b, 0x7f00);
            m.set_bottom_up(true);
            let c = m
                .phys_alloc_range(p, 0x800, 0x2000, 0, MEMBLOCK_ALLOC_ANYWHERE)
                .unwrap();
            assert_eq!(c, 0x2000);
            assert!(m.is_region_reserved(0x2000, 1));
            assert_eq!(m.reserved_size(), 0x1000 + 0x100 + 0x800);
            m.phys_free(p, c, 0x800).unwrap();
            assert!(!m.is_region_reserved(0x2000, 0x800));
        });
    }

    #[test]
    fn alloc_prefers_node_then_falls_back() {
        with_p(|p| {
            let mut m = Memblock::new();
            m.add_node(p, 0, 0x4000, 0).unwrap();
            m.add_node(p, 0x4000, 0x2000, 1).unwrap();
            let a = m.phys_alloc_try_nid(p, 0x1000, 0x1000, 0).unwrap();
            assert_eq!(a, 0x3000);
            let b = m.phys_alloc_try_nid(p, 0x2000, 0x1000, 1).unwrap();
            assert_eq!(b, 0x4000);
            // Node 1 is full now: falls back to node 0.
            let c = m.phys_alloc_try_nid(p, 0x1000, 0x1000, 1).unwrap();
            assert_eq!(c, 0x2000);
        });
    }

    #[test]
    fn limit_is_respected() {
        with_p(|p| {
            let mut m = Memblock::new();
            m.add(p, 0, 0x100000).unwrap();
            m.set_current_limit(0x10000);
            let a = m
                .phys_alloc_range(p, 0x1000, 0x1000, 0, MEMBLOCK_ALLOC_ANYWHERE)
                .unwrap();
            assert_eq!(a, 0xf000);
        });
    }

    #[test]
    fn bad_input_is_reported_and_refused() {
        with_p(|p| {
            let mut m = Memblock::new();
            m.add(p, 0x1000, 0x10000).unwrap();
            m.reserve(p, 0x2000, 0x2000).unwrap();
            let before = (m.reserved().regions().to_vec(), m.reserved_size());
            assert_eq!(m.reserve(p, 0x3000, 0x2000), Err(Error::Busy));
            assert!(p.reported("memblock_reserve: [mem 0x0000000000003000-0x0000000000004fff] overlaps reserved [mem 0x0000000000002000-0x0000000000003fff]"));
            assert_eq!(m.reserve(p, 0x10000, 0x2000), Err(Error::InvalidArgument));
            assert!(p.reported("is outside of memory"));
            assert_eq!(m.reserve(p, u64::MAX, 2), Err(Error::InvalidArgument));
            assert_eq!(m.phys_free(p, 0x8000, 0x1000), Err(Error::InvalidArgument));
            assert!(p.reported("is not reserved"));
            assert_eq!((m.reserved().regions().to_vec(), m.reserved_size()), before);
            assert_eq!(
                m.phys_alloc_range(p, 0x100000, 0x1000, 0, MEMBLOCK_ALLOC_ANYWHERE),
                Err(Error::NoMemory)
            );
            assert!(p.reported("Failed to allocate 1048576 bytes"));
            m.retire();
            assert_eq!(m.reserve(p, 0x8000, 0x1000), Err(Error::Busy));
            assert!(p.reported("after memblock_free_all"));
        });
    }

    #[test]
    fn table_full_is_an_error() {
        with_p(|p| {
            let mut m = Memblock::new();
            for i in 0..INIT_MEMBLOCK_REGIONS as u64 {
                m.add(p, i * 0x2000, 0x1000).unwrap();
            }
            assert_eq!(m.add(p, 0x10_0000_0000, 0x1000), Err(Error::NoSpace));
            assert_eq!(m.memory().regions().len(), INIT_MEMBLOCK_REGIONS);
        });
    }
}
