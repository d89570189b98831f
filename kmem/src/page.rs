//! `struct page`: one descriptor per physical page, in one array (`mem_map`).
//!
//! Linux keeps a `struct page` for every page frame and finds it from a pfn
//! by indexing (`pfn_to_page`) and back by pointer arithmetic
//! (`page_to_pfn`). kmem does the same with a flat `mem_map` (FLATMEM)
//! allocated from memblock at boot: one array from the lowest to the highest
//! pfn, holes included (Linux's SPARSEMEM would skip 128 MiB sections that
//! have no memory; a flat array keeps pfn arithmetic trivial).
//!
//! Every field is an atomic. The all-zero descriptor is a valid state ("a
//! page nobody owns yet"), so on a platform whose memory starts zeroed the
//! array needs no initialisation pass; boot writes only the descriptors
//! that become block heads (one in 1024 for a fresh machine) and those of
//! reserved ranges, which is how a 64 GiB machine boots in milliseconds.
//! With deferred struct page init it skips the reserved pages that hold
//! the array itself (see `reserve_bootmem_regions`), a hundredth of
//! memory whose descriptors would otherwise be most of what boot writes.
//! Atomics also mean that reading a neighbour's descriptor (the buddy check)
//! is never a data race, whatever its owner is doing; the *meaning* of each
//! field is still guarded as in Linux: buddy fields by the zone lock,
//! per-CPU list links by the owning CPU, an allocated page by its owner.
//!
//! Layout (40 bytes; Linux's is 64):
//!
//! | field | Linux | use |
//! |---|---|---|
//! | `flags` | `page->flags` | `PG_*` bits, zone and node in the top byte |
//! | `refcount` | `page->_refcount` | 1 when allocated, 0 when free |
//! | `private` | `page->private` / buddy order | buddy order while free; allocation order while allocated |
//! | `next`, `prev` | `page->lru` | free-list and per-CPU-list links, as mem_map indices |
//! | `compound_head` | `page->compound_head` | head index + 1 in tail pages |
//! | `freelist` | `slab->freelist` | slab head: offset + 1 of the first free object slot (0: none) |
//! | `counters` | `slab->inuse`, `slab->objects` | slab head: objects in use (low 16 bits) and per slab (high 16) |
//! | `slab_cache` | `slab->slab_cache` | slab head: the `kmem_cache` the slab belongs to |
//!
//! While a page is a slab (`PG_slab` on the head), `next`/`prev` link it
//! into its cache's per-node partial or full list, as `slab->slab_list`.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering::Relaxed};

/// Link value meaning "no page".
pub(crate) const NIL: u32 = u32::MAX;

/// `PG_reserved`: memblock-reserved or otherwise never given to the buddy allocator.
pub const PG_RESERVED: u32 = 1 << 0;
/// `PG_head`: first page of a compound page.
pub const PG_HEAD: u32 = 1 << 1;
/// Tail page of a compound page (Linux marks it with bit 0 of `compound_head`).
pub const PG_TAIL: u32 = 1 << 2;
/// `PageBuddy` (a page type in Linux): head of a free block on a buddy list.
pub const PG_BUDDY: u32 = 1 << 3;
/// `PageSlab`: the page belongs to a slab.
pub const PG_SLAB: u32 = 1 << 4;
/// On a per-CPU page list (kmem names the state Linux leaves implicit).
pub const PG_PCP: u32 = 1 << 5;
/// `PageReported`: a free buddy block already reported to the platform
/// ([`crate::page_alloc::page_reporting`]); cleared when it leaves the free
/// lists.
pub const PG_REPORTED: u32 = 1 << 6;

const ZONE_SHIFT: u32 = 24;
const NODE_SHIFT: u32 = 28;
const FLAG_MASK: u32 = (1 << ZONE_SHIFT) - 1;

/// Flag names in the order `%pGp` prints them.
const FLAG_NAMES: [(u32, &str); 7] = [
    (PG_RESERVED, "reserved"),
    (PG_HEAD, "head"),
    (PG_TAIL, "tail"),
    (PG_BUDDY, "buddy"),
    (PG_SLAB, "slab"),
    (PG_PCP, "pcp"),
    (PG_REPORTED, "reported"),
];

/// A page descriptor (`struct page`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Page {
    flags: AtomicU32,
    refcount: AtomicI32,
    private: AtomicU32,
    pub(crate) next: AtomicU32,
    pub(crate) prev: AtomicU32,
    compound_head: AtomicU32,
    freelist: AtomicU32,
    counters: AtomicU32,
    slab_cache: AtomicUsize,
}

const _: () = assert!(core::mem::size_of::<Page>() == 40);

impl Page {
    /// The `PG_*` bits (without zone and node).
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags.load(Relaxed) & FLAG_MASK
    }

    #[inline]
    pub(crate) fn raw_flags(&self) -> u32 {
        self.flags.load(Relaxed)
    }

    #[inline]
    pub(crate) fn set_raw_flags(&self, v: u32) {
        self.flags.store(v, Relaxed)
    }

    #[inline]
    pub(crate) fn set_flag(&self, f: u32) {
        self.flags.fetch_or(f, Relaxed);
    }

    #[inline]
    pub(crate) fn clear_flag(&self, f: u32) {
        self.flags.fetch_and(!f, Relaxed);
    }

    /// Set `f` on a page the caller owns exclusively (a plain store: no
    /// other context writes this descriptor meanwhile).
    #[inline]
    pub(crate) fn set_flag_owned(&self, f: u32) {
        self.flags.store(self.flags.load(Relaxed) | f, Relaxed);
    }

    /// Clear `f` on a page the caller owns exclusively.
    #[inline]
    pub(crate) fn clear_flag_owned(&self, f: u32) {
        self.flags.store(self.flags.load(Relaxed) & !f, Relaxed);
    }

    /// Whether all of `f` is set.
    #[inline]
    pub fn test(&self, f: u32) -> bool {
        self.flags.load(Relaxed) & f == f
    }

    /// `PageReserved()`.
    #[inline]
    pub fn is_reserved(&self) -> bool {
        self.test(PG_RESERVED)
    }

    /// `PageBuddy()`: a free block head on a buddy list.
    #[inline]
    pub fn is_buddy(&self) -> bool {
        self.test(PG_BUDDY)
    }

    /// `PageHead()`.
    #[inline]
    pub fn is_head(&self) -> bool {
        self.test(PG_HEAD)
    }

    /// `PageTail()`.
    #[inline]
    pub fn is_tail(&self) -> bool {
        self.test(PG_TAIL)
    }

    /// `PageSlab()`.
    #[inline]
    pub fn is_slab(&self) -> bool {
        self.test(PG_SLAB)
    }

    /// Zone index recorded in the flags (`page_zonenum`), valid for block heads.
    #[inline]
    pub(crate) fn zone_idx(&self) -> usize {
        Self::zone_of(self.flags.load(Relaxed))
    }

    /// The zone index in raw flags read once with [`raw_flags`](Self::raw_flags).
    #[inline]
    pub(crate) const fn zone_of(raw_flags: u32) -> usize {
        ((raw_flags >> ZONE_SHIFT) & 0xf) as usize
    }

    /// Node recorded in the flags (`page_to_nid`), valid for block heads.
    #[inline]
    pub fn nid(&self) -> usize {
        Self::nid_of(self.flags.load(Relaxed))
    }

    /// The node in raw flags read once with [`raw_flags`](Self::raw_flags).
    #[inline]
    pub(crate) const fn nid_of(raw_flags: u32) -> usize {
        (raw_flags >> NODE_SHIFT) as usize
    }

    /// Zone and node bits for `set_page_links`.
    #[inline]
    pub(crate) const fn links(nid: usize, zone: usize) -> u32 {
        ((nid as u32) << NODE_SHIFT) | ((zone as u32) << ZONE_SHIFT)
    }

    /// `page_ref_count()`.
    #[inline]
    pub fn refcount(&self) -> i32 {
        self.refcount.load(Relaxed)
    }

    #[inline]
    pub(crate) fn set_refcount(&self, v: i32) {
        self.refcount.store(v, Relaxed)
    }

    /// `page_ref_inc()`.
    #[inline]
    pub(crate) fn ref_inc(&self) {
        self.refcount.fetch_add(1, Relaxed);
    }

    /// Take a reference unless the count is zero or less
    /// (`page_ref_add_unless(page, 1, 0)`); whether it was taken.
    #[inline]
    pub(crate) fn ref_inc_not_zero(&self) -> bool {
        self.refcount
            .fetch_update(Relaxed, Relaxed, |c| (c > 0).then(|| c.wrapping_add(1)))
            .is_ok()
    }

    /// Drop one reference; returns the count before the decrement.
    #[inline]
    pub(crate) fn ref_dec(&self) -> i32 {
        self.refcount
            .fetch_sub(1, core::sync::atomic::Ordering::AcqRel)
    }

    /// Buddy order of a free block, or allocation order of an allocated head.
    #[inline]
    pub fn order(&self) -> u32 {
        self.private.load(Relaxed)
    }

    #[inline]
    pub(crate) fn set_order(&self, o: u32) {
        self.private.store(o, Relaxed)
    }

    /// Slab head: offset + 1 of the first free slot (0: the freelist is empty).
    #[inline]
    pub(crate) fn slab_freelist(&self) -> u32 {
        self.freelist.load(Relaxed)
    }

    #[inline]
    pub(crate) fn set_slab_freelist(&self, v: u32) {
        self.freelist.store(v, Relaxed)
    }

    /// Slab head: objects in use.
    #[inline]
    pub fn slab_inuse(&self) -> u32 {
        self.counters.load(Relaxed) & 0xffff
    }

    /// Slab head: objects in the slab.
    #[inline]
    pub fn slab_objects(&self) -> u32 {
        self.counters.load(Relaxed) >> 16
    }

    #[inline]
    pub(crate) fn set_slab_counters(&self, inuse: u32, objects: u32) {
        self.counters.store((objects << 16) | inuse, Relaxed)
    }

    /// Slab head: address of its `kmem_cache` (0 for a page that is no slab).
    #[inline]
    pub(crate) fn slab_cache_addr(&self) -> usize {
        self.slab_cache.load(Relaxed)
    }

    #[inline]
    pub(crate) fn set_slab_cache_addr(&self, v: usize) {
        self.slab_cache.store(v, Relaxed)
    }

    /// mem_map index of the head of a tail page.
    #[inline]
    pub(crate) fn head_index(&self) -> Option<u32> {
        match self.compound_head.load(Relaxed) {
            0 => None,
            h => Some(h - 1),
        }
    }

    #[inline]
    pub(crate) fn set_head_index(&self, head: Option<u32>) {
        self.compound_head.store(head.map_or(0, |h| h + 1), Relaxed)
    }
}

/// The flag names `%pGp` would print for `flags`, joined by `|`.
pub struct FlagNames(pub u32);

impl core::fmt::Display for FlagNames {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for (bit, name) in FLAG_NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let node = self.0 >> NODE_SHIFT;
        let zone = (self.0 >> ZONE_SHIFT) & 0xf;
        if !first {
            f.write_str("|")?;
        }
        write!(f, "node={node}|zone={zone}")
    }
}

/// The page descriptor array (`mem_map`) over `[base_pfn, base_pfn + len)`.
///
/// It keeps a pointer and a length, not a `&[Page]`: a descriptor is
/// reached by pointer arithmetic, as Linux's `pfn_to_page()`, and only the
/// one descriptor becomes a reference. (A slice reference would be
/// retagged whole by Miri's aliasing model every time a `MemMap` is made
/// or passed, which made a machine's boot quadratic in its pages there.)
#[derive(Clone, Copy)]
pub struct MemMap<'a> {
    /// The first descriptor; `len` descriptors follow, valid for `'a`.
    pages: NonNull<Page>,
    len: usize,
    base_pfn: u64,
    _life: PhantomData<&'a [Page]>,
}

// SAFETY: a `MemMap` is a shared view of `&'a [Page]` (its invariant);
// `Page`'s fields are atomics, so the view may cross and be shared between
// threads as the slice reference it replaces could.
unsafe impl Send for MemMap<'_> {}
// SAFETY: as above.
unsafe impl Sync for MemMap<'_> {}

impl<'a> MemMap<'a> {
    /// Wrap a descriptor slice whose first entry describes `base_pfn`.
    pub fn new(pages: &'a [Page], base_pfn: u64) -> Self {
        MemMap {
            pages: NonNull::from(pages).cast(),
            len: pages.len(),
            base_pfn,
            _life: PhantomData,
        }
    }

    /// Wrap the `len` descriptors at `pages`, the first describing `base_pfn`.
    ///
    /// # Safety
    ///
    /// `[pages, pages + len)` are initialised descriptors, valid for reads
    /// (their fields are atomics) and not mutably borrowed for `'a`.
    pub(crate) unsafe fn from_raw(pages: NonNull<Page>, len: usize, base_pfn: u64) -> Self {
        MemMap {
            pages,
            len,
            base_pfn,
            _life: PhantomData,
        }
    }

    /// First pfn described.
    pub fn base_pfn(&self) -> u64 {
        self.base_pfn
    }

    /// One past the last pfn described.
    pub fn end_pfn(&self) -> u64 {
        self.base_pfn + self.len as u64
    }

    /// `pfn_to_page()`, or `None` outside the array.
    #[inline]
    pub fn pfn_to_page(&self, pfn: u64) -> Option<&'a Page> {
        let idx = pfn.checked_sub(self.base_pfn)?;
        self.get(usize::try_from(idx).ok()?)
    }

    /// The descriptor at mem_map index `idx`, if there is one.
    #[inline]
    pub(crate) fn get(&self, idx: usize) -> Option<&'a Page> {
        // SAFETY: `idx < len`: a descriptor of the array (the type's invariant).
        (idx < self.len).then(|| unsafe { self.pages.add(idx).as_ref() })
    }

    /// The descriptor at mem_map index `idx`.
    #[inline]
    pub(crate) fn at(&self, idx: u32) -> &'a Page {
        let i = idx as usize;
        assert!(i < self.len, "mem_map index {i} out of {}", self.len);
        // SAFETY: `i < len`: a descriptor of the array (the type's invariant).
        unsafe { self.pages.add(i).as_ref() }
    }

    /// mem_map index of `page`, if it lies in this array.
    #[inline]
    pub fn index_of(&self, page: &Page) -> Option<u32> {
        self.index_of_ptr(page)
    }

    /// mem_map index of the descriptor `page` points at, if it is one of
    /// this array's; any pointer may be asked about (nothing is read).
    #[inline]
    pub fn index_of_ptr(&self, page: *const Page) -> Option<u32> {
        let start = self.pages.as_ptr() as usize;
        let off = (page as usize).checked_sub(start)?;
        let idx = off / core::mem::size_of::<Page>();
        (idx < self.len && off % core::mem::size_of::<Page>() == 0).then_some(idx as u32)
    }

    /// `page_to_pfn()`, if `page` lies in this array.
    #[inline]
    pub fn page_to_pfn(&self, page: &Page) -> Option<u64> {
        self.index_of(page).map(|i| self.base_pfn + u64::from(i))
    }

    /// pfn of mem_map index `idx`.
    #[inline]
    pub(crate) fn pfn_of(&self, idx: u32) -> u64 {
        self.base_pfn + u64::from(idx)
    }

    /// mem_map index of `pfn` (caller checked the range).
    #[inline]
    pub(crate) fn idx_of_pfn(&self, pfn: u64) -> u32 {
        (pfn - self.base_pfn) as u32
    }

    /// Number of descriptors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A doubly linked list of pages threaded through `Page::next`/`prev`
/// (Linux's `list_head`, with mem_map indices instead of pointers).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageList {
    head: u32,
    tail: u32,
}

impl Default for PageList {
    fn default() -> Self {
        Self::new()
    }
}

impl PageList {
    pub(crate) const fn new() -> Self {
        PageList {
            head: NIL,
            tail: NIL,
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head == NIL
    }

    #[inline]
    pub(crate) fn first(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    #[inline]
    pub(crate) fn last(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// `list_add()`: insert at the head.
    #[inline]
    pub(crate) fn push_head(&mut self, mm: &MemMap<'_>, idx: u32) {
        let p = mm.at(idx);
        p.prev.store(NIL, Relaxed);
        p.next.store(self.head, Relaxed);
        if self.head != NIL {
            mm.at(self.head).prev.store(idx, Relaxed);
        } else {
            self.tail = idx;
        }
        self.head = idx;
    }

    /// `list_add_tail()`.
    #[inline]
    pub(crate) fn push_tail(&mut self, mm: &MemMap<'_>, idx: u32) {
        let p = mm.at(idx);
        p.next.store(NIL, Relaxed);
        p.prev.store(self.tail, Relaxed);
        if self.tail != NIL {
            mm.at(self.tail).next.store(idx, Relaxed);
        } else {
            self.head = idx;
        }
        self.tail = idx;
    }

    /// `list_del()` of a page known to be on this list.
    #[inline]
    pub(crate) fn remove(&mut self, mm: &MemMap<'_>, idx: u32) {
        let p = mm.at(idx);
        let (n, pr) = (p.next.load(Relaxed), p.prev.load(Relaxed));
        if pr != NIL {
            mm.at(pr).next.store(n, Relaxed);
        } else {
            self.head = n;
        }
        if n != NIL {
            mm.at(n).prev.store(pr, Relaxed);
        } else {
            self.tail = pr;
        }
        p.next.store(NIL, Relaxed);
        p.prev.store(NIL, Relaxed);
    }

    /// Remove and return the first page: [`remove`](Self::remove) knowing
    /// that the page has no predecessor (the per-CPU lists' pop).
    #[inline]
    pub(crate) fn pop_head(&mut self, mm: &MemMap<'_>) -> Option<u32> {
        let h = self.first()?;
        let p = mm.at(h);
        let n = p.next.load(Relaxed);
        self.head = n;
        if n != NIL {
            mm.at(n).prev.store(NIL, Relaxed);
        } else {
            self.tail = NIL;
        }
        p.next.store(NIL, Relaxed);
        Some(h)
    }

    /// Remove and return the last page.
    #[inline]
    pub(crate) fn pop_tail(&mut self, mm: &MemMap<'_>) -> Option<u32> {
        let t = self.last()?;
        self.remove(mm, t);
        Some(t)
    }

    /// Iterate over the indices, head to tail.
    pub(crate) fn iter<'m>(&self, mm: &'m MemMap<'m>) -> impl Iterator<Item = u32> + 'm {
        let mut cur = self.head;
        core::iter::from_fn(move || {
            (cur != NIL).then(|| {
                let i = cur;
                cur = mm.at(i).next.load(Relaxed);
                i
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn list_ops() {
        let pages: Vec<Page> = (0..8).map(|_| Page::default()).collect();
        let mm = MemMap::new(&pages, 100);
        let mut l = PageList::new();
        l.push_head(&mm, 1);
        l.push_tail(&mm, 2);
        l.push_head(&mm, 3);
        assert_eq!(l.iter(&mm).collect::<Vec<_>>(), [3, 1, 2]);
        l.remove(&mm, 1);
        assert_eq!(l.iter(&mm).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(l.pop_tail(&mm), Some(2));
        assert_eq!(l.pop_head(&mm), Some(3));
        assert!(l.is_empty());
        assert_eq!(mm.page_to_pfn(&pages[5]), Some(105));
        assert_eq!(
            mm.pfn_to_page(107).map(|p| p as *const _),
            Some(&pages[7] as *const _)
        );
        assert!(mm.pfn_to_page(108).is_none() && mm.pfn_to_page(99).is_none());
    }

    #[test]
    fn flags_and_links() {
        let p = Page::default();
        p.set_raw_flags(Page::links(3, 2) | PG_HEAD);
        assert_eq!((p.nid(), p.zone_idx(), p.flags()), (3, 2, PG_HEAD));
        assert!(p.is_head() && !p.is_buddy());
        assert_eq!(
            std::format!("{}", FlagNames(p.raw_flags())),
            "head|node=3|zone=2"
        );
    }
}
