//! The buddy free area of one zone (`struct free_area[NR_PAGE_ORDERS]`).
//!
//! Free memory is kept as naturally aligned blocks of `2^order` pages, one
//! list per order and migratetype. Freeing merges a block with its buddy
//! (the block whose pfn differs only in bit `order`) while the buddy is
//! free, in O(1) per order by pfn arithmetic; allocating takes the smallest
//! block that fits and splits off the unused halves (`expand`).
//!
//! When a migratetype's lists are empty, the allocator falls back to other
//! types in the order of Linux's fallback table, preferring to *claim* a
//! whole pageblock (changing its type, so later allocations of the same
//! kind cluster there) and otherwise *stealing* a single block, as
//! `__rmqueue_claim`/`__rmqueue_steal` do since Linux 6.15. The one
//! approximation: Linux also counts in-use movable pages (on the LRU) as
//! "alike" when deciding to claim a block; kmem has no LRU, so it claims a
//! block when at least half of it is free.
//!
//! Everything here runs under the zone lock.

use super::AllocFlags;
use crate::mmzone::{FreeArea, MigrateType, MIGRATE_PCPTYPES, MIGRATE_TYPES};
use crate::page::{MemMap, Page, PageList, PG_BUDDY, PG_REPORTED};
use crate::{MAX_PAGE_ORDER, NR_PAGE_ORDERS, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER};
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// The page heads a free block of this zone (`PageBuddy`, reported or not).
#[inline]
fn is_free_head(cx: &BuddyCx<'_>, pg: &Page) -> bool {
    pg.raw_flags() & !PG_REPORTED == cx.links | PG_BUDDY
}

/// Linux's migratetype fallback table (`fallbacks[]`).
pub const FALLBACKS: [[MigrateType; 2]; MIGRATE_PCPTYPES] = [
    [MigrateType::Reclaimable, MigrateType::Movable],
    [MigrateType::Reclaimable, MigrateType::Unmovable],
    [MigrateType::Unmovable, MigrateType::Movable],
];

/// The migratetype of every pageblock (`pageblock_flags`), one byte each.
#[derive(Clone, Copy)]
pub(crate) struct PageblockFlags<'a> {
    types: &'a [AtomicU8],
    /// First pfn covered (pageblock aligned).
    base_pfn: u64,
}

impl<'a> PageblockFlags<'a> {
    pub(crate) fn new(types: &'a [AtomicU8], base_pfn: u64) -> Self {
        PageblockFlags { types, base_pfn }
    }

    #[inline]
    fn slot(&self, pfn: u64) -> &AtomicU8 {
        &self.types[((pfn - self.base_pfn) >> PAGEBLOCK_ORDER) as usize]
    }

    /// `get_pfnblock_migratetype()`.
    #[inline]
    pub(crate) fn get(&self, pfn: u64) -> MigrateType {
        MigrateType::ALL[self.slot(pfn).load(Relaxed) as usize]
    }

    /// `set_pageblock_migratetype()`.
    #[inline]
    pub(crate) fn set(&self, pfn: u64, mt: MigrateType) {
        self.slot(pfn).store(mt as u8, Relaxed)
    }

    /// `change_pageblock_range()`: every pageblock of a block of `order`.
    pub(crate) fn set_range(&self, pfn: u64, order: u32, mt: MigrateType) {
        let n = (1u64 << order).max(PAGEBLOCK_NR_PAGES);
        let start = pfn & !(PAGEBLOCK_NR_PAGES - 1);
        let mut p = start;
        while p < start + n {
            self.set(p, mt);
            p += PAGEBLOCK_NR_PAGES;
        }
    }
}

/// What the buddy code needs to know about its zone.
#[derive(Clone, Copy)]
pub(crate) struct BuddyCx<'a> {
    pub(crate) mm: MemMap<'a>,
    pub(crate) pb: PageblockFlags<'a>,
    /// Zone and node bits every block head of this zone carries.
    pub(crate) links: u32,
    pub(crate) zone_start: u64,
    pub(crate) zone_end: u64,
}

/// Where `__rmqueue` found pages last time, so a bulk refill does not redo
/// a failed search (`enum rmqueue_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RmqueueMode {
    Normal,
    Steal,
}

#[inline]
const fn bit(order: u32, mt: MigrateType) -> u64 {
    1 << (order as usize * MIGRATE_TYPES + mt as usize)
}

/// Whether `mask` (from [`FreeArea::mask`]) shows a free block of at least
/// `order` on an ordinary list, or on the high-atomic list when
/// `highatomic` (the tail of `__zone_watermark_ok`).
#[inline]
pub(crate) fn mask_has_block(mask: u64, order: u32, highatomic: bool) -> bool {
    let per_order = if highatomic {
        ORDINARY_LISTS | bit(0, MigrateType::HighAtomic)
    } else {
        ORDINARY_LISTS
    };
    // The lists of `order` and above are the bits from `order`'s first up.
    let from_order = ALL_ORDERS.wrapping_shl(order * MIGRATE_TYPES as u32) & ALL_ORDERS;
    mask & from_order & per_order.wrapping_mul(ORDER_STRIDE) != 0
}

/// The bits of the ordinary (unmovable, movable, reclaimable) lists of order 0.
const ORDINARY_LISTS: u64 = bit(0, MigrateType::Unmovable)
    | bit(0, MigrateType::Movable)
    | bit(0, MigrateType::Reclaimable);
/// Bit 0 of every order's group: multiplying an order-0 pattern by it
/// repeats the pattern for every order.
const ORDER_STRIDE: u64 = {
    let mut m = 0u64;
    let mut o = 0;
    while o < NR_PAGE_ORDERS {
        m |= 1 << (o * MIGRATE_TYPES);
        o += 1;
    }
    m
};
/// Every bit a free-list mask can have.
const ALL_ORDERS: u64 = (1 << (NR_PAGE_ORDERS * MIGRATE_TYPES)) - 1;
const _: () = assert!(NR_PAGE_ORDERS * MIGRATE_TYPES <= 64);

impl FreeArea {
    pub(crate) const fn new() -> Self {
        FreeArea {
            lists: [[PageList::new(); MIGRATE_TYPES]; NR_PAGE_ORDERS],
            nr_free: [0; NR_PAGE_ORDERS],
            mask: 0,
            deferred: (0, 0),
        }
    }

    /// Which lists are non-empty (bit `order * MIGRATE_TYPES + mt`).
    #[inline]
    pub(crate) fn mask(&self) -> u64 {
        self.mask
    }

    #[inline]
    fn list_push(&mut self, cx: &BuddyCx<'_>, order: u32, mt: MigrateType, idx: u32, tail: bool) {
        let l = &mut self.lists[order as usize][mt as usize];
        if tail {
            l.push_tail(&cx.mm, idx);
        } else {
            l.push_head(&cx.mm, idx);
        }
        self.mask |= bit(order, mt);
    }

    #[inline]
    fn list_remove(&mut self, cx: &BuddyCx<'_>, order: u32, mt: MigrateType, idx: u32) {
        let l = &mut self.lists[order as usize][mt as usize];
        l.remove(&cx.mm, idx);
        if l.is_empty() {
            self.mask &= !bit(order, mt);
        }
    }

    /// Free blocks of `order` (`free_area[order].nr_free`).
    pub(crate) fn nr_free(&self, order: usize) -> u64 {
        self.nr_free[order]
    }

    /// Blocks on the list of (`order`, `mt`), counted by walking it.
    pub(crate) fn list_len(&self, cx: &BuddyCx<'_>, order: usize, mt: MigrateType) -> u64 {
        self.lists[order][mt as usize].iter(&cx.mm).count() as u64
    }

    /// Total free pages (for consistency checks).
    pub(crate) fn free_pages(&self) -> u64 {
        self.nr_free.iter().enumerate().map(|(o, n)| n << o).sum()
    }

    fn add(&mut self, cx: &BuddyCx<'_>, idx: u32, order: u32, mt: MigrateType, tail: bool) {
        let p = cx.mm.at(idx);
        p.set_raw_flags(cx.links | PG_BUDDY);
        p.set_order(order);
        self.list_push(cx, order, mt, idx, tail);
        self.nr_free[order as usize] += 1;
    }

    fn del(&mut self, cx: &BuddyCx<'_>, idx: u32, order: u32, mt: MigrateType) {
        self.list_remove(cx, order, mt, idx);
        let p = cx.mm.at(idx);
        p.set_raw_flags(cx.links);
        p.set_order(0);
        self.nr_free[order as usize] -= 1;
    }

    /// `page_is_buddy()`: the block at `pfn` is a free block of exactly
    /// `order` in the same zone.
    #[inline]
    fn is_buddy(&self, cx: &BuddyCx<'_>, pfn: u64, order: u32) -> bool {
        if pfn < cx.zone_start || pfn >= cx.zone_end {
            return false;
        }
        match cx.mm.pfn_to_page(pfn) {
            Some(b) => is_free_head(cx, b) && b.order() == order,
            None => false,
        }
    }

    /// `__free_one_page()`: put the block `pfn`/`order` back, merging with
    /// free buddies. `mt` is the migratetype of the block's pageblock.
    /// Returns the order of the block it ends up in (for free page
    /// reporting).
    pub(crate) fn free_one(
        &mut self,
        cx: &BuddyCx<'_>,
        mut pfn: u64,
        mut order: u32,
        mt: MigrateType,
    ) -> u32 {
        while order < MAX_PAGE_ORDER {
            let buddy = pfn ^ (1 << order);
            if !self.is_buddy(cx, buddy, order) {
                break;
            }
            let buddy_mt = cx.pb.get(buddy);
            if order >= PAGEBLOCK_ORDER
                && buddy_mt != mt
                && (buddy_mt as usize >= MIGRATE_PCPTYPES || mt as usize >= MIGRATE_PCPTYPES)
            {
                // Isolated or high-atomic blocks never merge with ordinary ones.
                break;
            }
            self.del(cx, cx.mm.idx_of_pfn(buddy), order, buddy_mt);
            if buddy_mt != mt {
                // Match the buddy's type so that expand() later puts the
                // halves on the right lists.
                cx.pb.set_range(buddy, order, mt);
            }
            pfn &= buddy;
            order += 1;
        }
        // Like Linux's buddy_merge_likely(): if the next-larger buddy is
        // free, this block may merge soon; keep it at the tail so it is not
        // handed out first.
        let to_tail = order < MAX_PAGE_ORDER - 1 && {
            let higher = (pfn & !((2u64 << order) - 1)) ^ (2u64 << order);
            self.is_buddy(cx, higher, order + 1)
        };
        self.add(cx, cx.mm.idx_of_pfn(pfn), order, mt, to_tail);
        order
    }

    /// `page_reporting_cycle()`'s first half: take up to `out.len()`
    /// free blocks of at least `min_order` that are not reported yet off
    /// the lists (`__isolate_free_page`), largest first, skipping the
    /// isolate and high-atomic types as Linux does. Returns how many, each
    /// as (index, order).
    pub(crate) fn isolate_unreported(
        &mut self,
        cx: &BuddyCx<'_>,
        min_order: u32,
        out: &mut [(u32, u32)],
    ) -> usize {
        let mut n = 0;
        for order in (min_order..=MAX_PAGE_ORDER).rev() {
            for mt in &MigrateType::ALL[..MIGRATE_PCPTYPES] {
                // One walk of the list picks the blocks, then they come off.
                let first = n;
                for idx in self.lists[order as usize][*mt as usize].iter(&cx.mm) {
                    if n == out.len() {
                        break;
                    }
                    if cx.mm.at(idx).raw_flags() & PG_REPORTED == 0 {
                        out[n] = (idx, order);
                        n += 1;
                    }
                }
                for &(idx, _) in &out[first..n] {
                    self.del(cx, idx, order, *mt);
                }
            }
        }
        n
    }

    /// `page_reporting_drain()`: put a reported block back. It merges
    /// with a buddy freed meanwhile (the merged block is then unreported,
    /// as Linux's `__putback_isolated_page` leaves it); otherwise it goes
    /// to the list's tail marked reported, so that allocations prefer
    /// blocks whose memory is still there.
    pub(crate) fn putback_reported(&mut self, cx: &BuddyCx<'_>, idx: u32, order: u32) {
        let pfn = cx.mm.pfn_of(idx);
        let mt = cx.pb.get(pfn);
        if order < MAX_PAGE_ORDER && self.is_buddy(cx, pfn ^ (1 << order), order) {
            self.free_one(cx, pfn, order, mt);
        } else {
            self.add(cx, idx, order, mt, true);
            cx.mm
                .at(idx)
                .set_raw_flags(cx.links | PG_BUDDY | PG_REPORTED);
        }
    }

    /// `expand()`: split a block of `high` taken for an allocation of `low`,
    /// putting the upper halves back on the `mt` lists.
    fn expand(&mut self, cx: &BuddyCx<'_>, idx: u32, low: u32, mut high: u32, mt: MigrateType) {
        while high > low {
            high -= 1;
            self.add(cx, idx + (1u32 << high), high, mt, false);
        }
    }

    /// `__rmqueue_smallest()`: the smallest free block of type `mt` that fits.
    pub(crate) fn rmqueue_smallest(
        &mut self,
        cx: &BuddyCx<'_>,
        order: u32,
        mt: MigrateType,
    ) -> Option<u32> {
        for cur in order..=MAX_PAGE_ORDER {
            if let Some(idx) = self.lists[cur as usize][mt as usize].first() {
                self.del(cx, idx, cur, mt);
                self.expand(cx, idx, order, cur, mt);
                return Some(idx);
            }
        }
        None
    }

    fn should_try_claim_block(order: u32, start: MigrateType) -> bool {
        order >= PAGEBLOCK_ORDER / 2
            || matches!(start, MigrateType::Reclaimable | MigrateType::Unmovable)
    }

    fn suitable_fallback(&self, order: u32, start: MigrateType) -> Option<MigrateType> {
        FALLBACKS[start as usize]
            .into_iter()
            .find(|&f| !self.lists[order as usize][f as usize].is_empty())
    }

    /// Free pages inside the pageblock holding `pfn`, or `None` if the
    /// pageblock crosses the zone boundary (`prep_move_freepages_block`).
    fn pageblock_free_pages(&self, cx: &BuddyCx<'_>, pfn: u64) -> Option<u64> {
        let start = pfn & !(PAGEBLOCK_NR_PAGES - 1);
        let end = start + PAGEBLOCK_NR_PAGES;
        if start < cx.zone_start || end > cx.zone_end {
            return None;
        }
        let mut free = 0;
        let mut p = start;
        while p < end {
            match cx.mm.pfn_to_page(p) {
                Some(pg) if is_free_head(cx, pg) => {
                    free += 1u64 << pg.order();
                    p += 1u64 << pg.order();
                }
                _ => p += 1,
            }
        }
        Some(free)
    }

    /// `__move_freepages_block()`: move every free block of the pageblock
    /// from the `from` lists to the `to` lists and retype the pageblock.
    fn move_freepages_block(
        &mut self,
        cx: &BuddyCx<'_>,
        pfn: u64,
        from: MigrateType,
        to: MigrateType,
    ) {
        let start = pfn & !(PAGEBLOCK_NR_PAGES - 1);
        let mut p = start;
        while p < start + PAGEBLOCK_NR_PAGES {
            match cx.mm.pfn_to_page(p) {
                Some(pg) if is_free_head(cx, pg) => {
                    let o = pg.order();
                    let idx = cx.mm.idx_of_pfn(p);
                    self.list_remove(cx, o, from, idx);
                    self.list_push(cx, o, to, idx, true);
                    p += 1u64 << o;
                }
                _ => p += 1,
            }
        }
        cx.pb.set(start, to);
    }

    /// `try_to_claim_block()`.
    fn try_claim(
        &mut self,
        cx: &BuddyCx<'_>,
        idx: u32,
        cur: u32,
        order: u32,
        start: MigrateType,
        block: MigrateType,
    ) -> Option<u32> {
        let pfn = cx.mm.pfn_of(idx);
        if cur >= PAGEBLOCK_ORDER {
            self.del(cx, idx, cur, block);
            cx.pb.set_range(pfn, cur, start);
            self.expand(cx, idx, order, cur, start);
            return Some(idx);
        }
        let free = self.pageblock_free_pages(cx, pfn)?;
        if free >= PAGEBLOCK_NR_PAGES / 2 {
            self.move_freepages_block(cx, pfn, block, start);
            return self.rmqueue_smallest(cx, order, start);
        }
        None
    }

    /// `__rmqueue_claim()`: largest fallback block first, claiming its pageblock.
    fn rmqueue_claim(
        &mut self,
        cx: &BuddyCx<'_>,
        order: u32,
        start: MigrateType,
        af: AllocFlags,
    ) -> Option<u32> {
        let min_order = if order < PAGEBLOCK_ORDER && af.contains(AllocFlags::NOFRAGMENT) {
            PAGEBLOCK_ORDER
        } else {
            order
        };
        for cur in (min_order..=MAX_PAGE_ORDER).rev() {
            if !Self::should_try_claim_block(cur, start) {
                break;
            }
            let Some(fb) = self.suitable_fallback(cur, start) else {
                continue;
            };
            let idx = self.lists[cur as usize][fb as usize].first()?;
            if let Some(got) = self.try_claim(cx, idx, cur, order, start, fb) {
                return Some(got);
            }
        }
        None
    }

    /// `__rmqueue_steal()`: the smallest fallback block, without retyping.
    fn rmqueue_steal(&mut self, cx: &BuddyCx<'_>, order: u32, start: MigrateType) -> Option<u32> {
        for cur in order..=MAX_PAGE_ORDER {
            let Some(fb) = self.suitable_fallback(cur, start) else {
                continue;
            };
            let idx = self.lists[cur as usize][fb as usize].first()?;
            self.del(cx, idx, cur, fb);
            self.expand(cx, idx, order, cur, fb);
            return Some(idx);
        }
        None
    }

    /// `__rmqueue()`: own type first, then claim, then steal.
    pub(crate) fn rmqueue(
        &mut self,
        cx: &BuddyCx<'_>,
        order: u32,
        mt: MigrateType,
        af: AllocFlags,
        mode: &mut RmqueueMode,
    ) -> Option<u32> {
        if *mode == RmqueueMode::Normal {
            if let Some(i) = self.rmqueue_smallest(cx, order, mt) {
                return Some(i);
            }
        }
        if *mode == RmqueueMode::Normal && (mt as usize) < MIGRATE_PCPTYPES {
            if let Some(i) = self.rmqueue_claim(cx, order, mt, af) {
                *mode = RmqueueMode::Normal;
                return Some(i);
            }
        }
        if !af.contains(AllocFlags::NOFRAGMENT) && (mt as usize) < MIGRATE_PCPTYPES {
            if let Some(i) = self.rmqueue_steal(cx, order, mt) {
                *mode = RmqueueMode::Steal;
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop `mask_has_block` replaced, as the reference.
    fn has_block_by_loop(mask: u64, order: u32, highatomic: bool) -> bool {
        (order..=MAX_PAGE_ORDER).any(|o| {
            let mut want = bit(o, MigrateType::Unmovable)
                | bit(o, MigrateType::Movable)
                | bit(o, MigrateType::Reclaimable);
            if highatomic {
                want |= bit(o, MigrateType::HighAtomic);
            }
            mask & want != 0
        })
    }

    #[test]
    fn mask_has_block_matches_the_per_order_loop() {
        for order in 0..=MAX_PAGE_ORDER {
            for o in 0..=MAX_PAGE_ORDER {
                for mt in MigrateType::ALL {
                    let mask = bit(o, mt);
                    for ha in [false, true] {
                        assert_eq!(
                            mask_has_block(mask, order, ha),
                            has_block_by_loop(mask, order, ha),
                            "order {order}, list ({o}, {mt:?}), highatomic {ha}"
                        );
                    }
                }
            }
        }
        assert!(!mask_has_block(0, 0, true));
        assert!(mask_has_block(u64::MAX, MAX_PAGE_ORDER, false));
    }
}
