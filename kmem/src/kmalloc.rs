//! The kmalloc family (`include/linux/slab.h`, `mm/slab_common.c`,
//! `mm/slub.c`): `kmalloc`, `kzalloc`, `kcalloc`, `kmalloc_array`,
//! `krealloc`, `kfree`, `kfree_sensitive`, `ksize`, `kmemdup`, `kstrdup`,
//! `kmalloc_node`, over 52 slab caches created at boot, and the size
//! classes that choose among them.
//!
//! `kmalloc(0)` returns [`ZERO_SIZE_PTR`]; requests up to
//! [`KMALLOC_MAX_CACHE_SIZE`] come from a cache; larger ones are compound
//! pages from the page allocator (`kmalloc_large`), up to
//! [`KMALLOC_MAX_SIZE`], beyond which the page allocator's "order > MAX_PAGE_ORDER"
//! warning fires (unless `__GFP_NOWARN`) and the call fails. `kfree` finds
//! the cache, or the large allocation's order, from the address alone,
//! through the page descriptor.
//!
//! # The classes
//!
//! On x86_64 with SLUB (`KMALLOC_MIN_SIZE` 8, `KMALLOC_SHIFT_HIGH`
//! `PAGE_SHIFT + 1`), kmalloc has 13 caches per type: the powers of two
//! 8..8192 (indices 3..=13) plus 96 (index 1) and 192 (index 2). Requests
//! above [`KMALLOC_MAX_CACHE_SIZE`] (8 KiB) go to the page allocator, up to
//! [`KMALLOC_MAX_SIZE`] (4 MiB, order 10).
//!
//! # The types
//!
//! Each class exists in four variants ([`KmallocType`]), chosen from the GFP
//! flags by [`kmalloc_type`]: normal, reclaimable (`kmalloc-rcl-*`), DMA
//! (`dma-kmalloc-*`) and memcg-accounted (`kmalloc-cg-*`). The target
//! configuration is `CONFIG_ZONE_DMA=y`, `CONFIG_MEMCG=y`,
//! `CONFIG_SLUB_TINY=n` and `CONFIG_RANDOM_KMALLOC_CACHES=n` (the
//! `kmalloc-rnd-*` copies of the normal caches do not exist), which is what
//! the 6.18 `/proc/slabinfo` fixture shows.
//!
//! ```
//! use kmem::gfp::{GFP_KERNEL, GFP_KERNEL_ACCOUNT};
//! use kmem::kmalloc::{kmalloc_cache_name, kmalloc_index, kmalloc_type};
//!
//! let idx = kmalloc_index(100).unwrap();
//! assert_eq!(kmalloc_cache_name(kmalloc_type(GFP_KERNEL), idx), Some("kmalloc-128"));
//! let idx = kmalloc_index(1500).unwrap();
//! assert_eq!(kmalloc_cache_name(kmalloc_type(GFP_KERNEL_ACCOUNT), idx), Some("kmalloc-cg-2k"));
//! ```

use crate::error::{Error, Result};
use crate::gfp::{Gfp, __GFP_ACCOUNT, __GFP_COMP, __GFP_DMA, __GFP_RECLAIMABLE, __GFP_ZERO};
use crate::page_alloc::get_order;
use crate::platform::{Level, LocalState, Platform};
use crate::slab::cache::SlabRef;
use crate::slab::geometry::{cache_geometry, CacheGeometry};
use crate::slab::KmemCache;
use crate::slab::{
    SlabFlags, SLAB_ACCOUNT, SLAB_CACHE_DMA, SLAB_KMALLOC, SLAB_NO_MERGE, SLAB_RECLAIM_ACCOUNT,
};
use crate::{report, Kmem};
use crate::{MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE};
use core::panic::Location;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering::Relaxed};

/// log2 of the smallest class (`KMALLOC_SHIFT_LOW`).
pub const KMALLOC_SHIFT_LOW: u32 = 3;
/// log2 of the largest class (`KMALLOC_SHIFT_HIGH` = `PAGE_SHIFT + 1`).
pub const KMALLOC_SHIFT_HIGH: u32 = PAGE_SHIFT + 1;
/// log2 of the largest kmalloc (`KMALLOC_SHIFT_MAX` = `MAX_PAGE_ORDER +
/// PAGE_SHIFT`, capped at 25 by Linux).
pub const KMALLOC_SHIFT_MAX: u32 = MAX_PAGE_ORDER + PAGE_SHIFT;
/// The smallest class (`KMALLOC_MIN_SIZE`).
pub const KMALLOC_MIN_SIZE: usize = 1 << KMALLOC_SHIFT_LOW;
/// The largest request served by a kmalloc cache (`KMALLOC_MAX_CACHE_SIZE`).
pub const KMALLOC_MAX_CACHE_SIZE: usize = 1 << KMALLOC_SHIFT_HIGH;
/// The largest kmalloc request (`KMALLOC_MAX_SIZE`): 4 MiB.
pub const KMALLOC_MAX_SIZE: usize = 1 << KMALLOC_SHIFT_MAX;
/// The page order of [`KMALLOC_MAX_SIZE`] (`KMALLOC_MAX_ORDER`).
pub const KMALLOC_MAX_ORDER: u32 = KMALLOC_SHIFT_MAX - PAGE_SHIFT;
/// `ARCH_KMALLOC_MINALIGN` on x86_64: `__alignof__(unsigned long long)`.
pub const ARCH_KMALLOC_MINALIGN: usize = 8;
/// Number of kmalloc cache types ([`KmallocType`]; `NR_KMALLOC_TYPES`).
pub const NR_KMALLOC_TYPES: usize = 4;

/// `kmalloc_size_index[]` of `mm/slab_common.c`: the class index of the
/// sizes up to 192, by `(size - 1) / 8`. This is where 96 and 192 come in:
/// 65..96 map to index 1, 129..192 to index 2.
pub const KMALLOC_SIZE_INDEX: [u8; 24] = [
    3, // 8
    4, // 16
    5, // 24
    5, // 32
    6, // 40
    6, // 48
    6, // 56
    6, // 64
    1, // 72
    1, // 80
    1, // 88
    1, // 96
    7, // 104
    7, // 112
    7, // 120
    7, // 128
    2, // 136
    2, // 144
    2, // 152
    2, // 160
    2, // 168
    2, // 176
    2, // 184
    2, // 192
];

/// The kmalloc class of a request (`kmalloc_index()` / the index rule of
/// `kmalloc_slab()`): the `KMALLOC_SIZE_INDEX` table for sizes up to 192,
/// `fls(size - 1)` above.
///
/// `None` for 0 (Linux returns `ZERO_SIZE_PTR` without touching a cache)
/// and for sizes above [`KMALLOC_MAX_CACHE_SIZE`] (served by the page
/// allocator).
///
/// ```
/// use kmem::kmalloc::kmalloc_index;
/// assert_eq!(kmalloc_index(8), Some(3));
/// assert_eq!(kmalloc_index(96), Some(1));
/// assert_eq!(kmalloc_index(192), Some(2));
/// assert_eq!(kmalloc_index(8192), Some(13));
/// assert_eq!(kmalloc_index(8193), None);
/// ```
pub const fn kmalloc_index(size: usize) -> Option<u32> {
    if size == 0 || size > KMALLOC_MAX_CACHE_SIZE {
        None
    } else if size <= 192 {
        Some(KMALLOC_SIZE_INDEX[(size - 1) / 8] as u32)
    } else {
        Some(usize::BITS - (size - 1).leading_zeros())
    }
}

/// The object size of kmalloc class `index` (`kmalloc_size()`): 96 for 1,
/// 192 for 2, `1 << index` for 3..=13; `None` otherwise.
pub const fn kmalloc_size(index: u32) -> Option<usize> {
    match index {
        1 => Some(96),
        2 => Some(192),
        KMALLOC_SHIFT_LOW..=KMALLOC_SHIFT_HIGH => Some(1 << index),
        _ => None,
    }
}

/// What `ksize()` would report for a `kmalloc(size)`
/// (`kmalloc_size_roundup()`): the class size up to
/// [`KMALLOC_MAX_CACHE_SIZE`], then whole pages rounded to a power-of-two
/// order up to [`KMALLOC_MAX_SIZE`]; 0 and larger sizes are returned as they
/// are (kmalloc returns `ZERO_SIZE_PTR` or fails for them).
///
/// ```
/// use kmem::kmalloc::kmalloc_size_roundup;
/// assert_eq!(kmalloc_size_roundup(0), 0);
/// assert_eq!(kmalloc_size_roundup(65), 96);
/// assert_eq!(kmalloc_size_roundup(8193), 16384);
/// assert_eq!(kmalloc_size_roundup(20000), 32768);
/// assert_eq!(kmalloc_size_roundup(5 << 20), 5 << 20);
/// ```
pub const fn kmalloc_size_roundup(size: usize) -> usize {
    if size == 0 {
        return 0;
    }
    if let Some(idx) = kmalloc_index(size) {
        if let Some(s) = kmalloc_size(idx) {
            return s;
        }
    }
    if size <= KMALLOC_MAX_SIZE {
        return PAGE_SIZE << get_order(size);
    }
    size
}

/// The four kmalloc cache families (`enum kmalloc_cache_type`), in Linux's
/// order for this configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KmallocType {
    /// `KMALLOC_NORMAL`: `kmalloc-*`.
    Normal,
    /// `KMALLOC_RECLAIM`: `kmalloc-rcl-*`, for `__GFP_RECLAIMABLE` requests.
    Reclaim,
    /// `KMALLOC_DMA`: `dma-kmalloc-*`, for `__GFP_DMA` requests.
    Dma,
    /// `KMALLOC_CGROUP`: `kmalloc-cg-*`, for `__GFP_ACCOUNT` requests.
    Cgroup,
}

impl KmallocType {
    /// All types, in `enum kmalloc_cache_type` order.
    pub const ALL: [KmallocType; NR_KMALLOC_TYPES] = [
        KmallocType::Normal,
        KmallocType::Reclaim,
        KmallocType::Dma,
        KmallocType::Cgroup,
    ];

    /// The enum value (the first index of `kmalloc_caches[][]`).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The cache name prefix: `"kmalloc-"`, `"kmalloc-rcl-"`,
    /// `"dma-kmalloc-"` or `"kmalloc-cg-"`.
    pub const fn prefix(self) -> &'static str {
        match self {
            KmallocType::Normal => "kmalloc-",
            KmallocType::Reclaim => "kmalloc-rcl-",
            KmallocType::Dma => "dma-kmalloc-",
            KmallocType::Cgroup => "kmalloc-cg-",
        }
    }

    /// The flags the caches of this type are created with:
    /// `new_kmalloc_cache()` adds `SLAB_RECLAIM_ACCOUNT`, `SLAB_ACCOUNT` or
    /// `SLAB_CACHE_DMA` by type and `SLAB_NO_MERGE` to the normal caches
    /// (with `CONFIG_MEMCG`), and `create_kmalloc_cache()` adds
    /// `SLAB_KMALLOC`.
    pub const fn cache_flags(self) -> SlabFlags {
        let f = match self {
            KmallocType::Normal => SLAB_NO_MERGE,
            KmallocType::Reclaim => SLAB_RECLAIM_ACCOUNT,
            KmallocType::Dma => SLAB_CACHE_DMA,
            KmallocType::Cgroup => SLAB_ACCOUNT,
        };
        f.union(SLAB_KMALLOC)
    }
}

/// The GFP bits that send a request away from the normal caches
/// (`KMALLOC_NOT_NORMAL_BITS`).
pub const KMALLOC_NOT_NORMAL_BITS: Gfp = __GFP_RECLAIMABLE.union(__GFP_DMA).union(__GFP_ACCOUNT);

/// The cache family for a request's GFP flags (`kmalloc_type()`).
///
/// Priorities, highest first: `__GFP_DMA`, then `__GFP_RECLAIMABLE`, then
/// `__GFP_ACCOUNT`. So a reclaimable accounted request lands in
/// `kmalloc-rcl-*` (the reclaimable caches take accounted objects too: only
/// `kmalloc-cg-*` and `kmalloc-*` are pure), and a DMA request is never
/// accounted through a `kmalloc-cg-*` cache.
///
/// ```
/// use kmem::gfp::{GFP_KERNEL, GFP_KERNEL_ACCOUNT, GFP_DMA, __GFP_RECLAIMABLE};
/// use kmem::kmalloc::{kmalloc_type, KmallocType};
/// assert_eq!(kmalloc_type(GFP_KERNEL), KmallocType::Normal);
/// assert_eq!(kmalloc_type(GFP_KERNEL_ACCOUNT), KmallocType::Cgroup);
/// assert_eq!(kmalloc_type(GFP_KERNEL_ACCOUNT | __GFP_RECLAIMABLE), KmallocType::Reclaim);
/// assert_eq!(kmalloc_type(GFP_KERNEL_ACCOUNT | GFP_DMA), KmallocType::Dma);
/// ```
pub const fn kmalloc_type(flags: Gfp) -> KmallocType {
    if !flags.intersects(KMALLOC_NOT_NORMAL_BITS) {
        KmallocType::Normal
    } else if flags.intersects(__GFP_DMA) {
        KmallocType::Dma
    } else if flags.intersects(__GFP_RECLAIMABLE) {
        KmallocType::Reclaim
    } else {
        KmallocType::Cgroup
    }
}

macro_rules! kmalloc_names {
    ($($short:literal),* $(,)?) => {
        [$([
            concat!("kmalloc-", $short),
            concat!("kmalloc-rcl-", $short),
            concat!("dma-kmalloc-", $short),
            concat!("kmalloc-cg-", $short),
        ]),*]
    };
}

/// Cache names by class index 1..=13 and [`KmallocType`] (`kmalloc_info[]`
/// of `mm/slab_common.c`, built from `INIT_KMALLOC_INFO(size, short)`):
/// sizes from 1024 up are written `1k`, `2k`, `4k`, `8k`.
const KMALLOC_NAMES: [[&str; NR_KMALLOC_TYPES]; 13] = kmalloc_names![
    "96", "192", "8", "16", "32", "64", "128", "256", "512", "1k", "2k", "4k", "8k",
];

/// The name Linux gives the kmalloc cache of `ty` and class `index`
/// (`"kmalloc-96"`, `"kmalloc-rcl-1k"`, `"dma-kmalloc-8k"`,
/// `"kmalloc-cg-192"`), or `None` for an index without a cache.
pub const fn kmalloc_cache_name(ty: KmallocType, index: u32) -> Option<&'static str> {
    if index >= 1 && index <= KMALLOC_SHIFT_HIGH {
        Some(KMALLOC_NAMES[index as usize - 1][ty.index()])
    } else {
        None
    }
}

/// Parses a kmalloc cache name back into its type and class index.
///
/// ```
/// use kmem::kmalloc::{parse_kmalloc_cache_name, KmallocType};
/// assert_eq!(parse_kmalloc_cache_name("kmalloc-rcl-1k"), Some((KmallocType::Reclaim, 10)));
/// assert_eq!(parse_kmalloc_cache_name("kmalloc-cg-96"), Some((KmallocType::Cgroup, 1)));
/// assert_eq!(parse_kmalloc_cache_name("kmalloc-100"), None);
/// ```
pub fn parse_kmalloc_cache_name(name: &str) -> Option<(KmallocType, u32)> {
    for (i, row) in KMALLOC_NAMES.iter().enumerate() {
        for ty in KmallocType::ALL {
            if row[ty.index()] == name {
                return Some((ty, i as u32 + 1));
            }
        }
    }
    None
}

/// The alignment `create_boot_cache()` requests for a kmalloc cache of
/// `size`: at least `ARCH_KMALLOC_MINALIGN`, and at least the largest power
/// of two dividing `size` (so power-of-two classes are naturally aligned,
/// 96 is 32-aligned and 192 is 64-aligned). 0 for `size` 0.
pub const fn kmalloc_cache_align(size: usize) -> usize {
    if size == 0 {
        return 0;
    }
    let natural = 1 << size.trailing_zeros();
    if natural > ARCH_KMALLOC_MINALIGN {
        natural
    } else {
        ARCH_KMALLOC_MINALIGN
    }
}

/// The geometry of the kmalloc cache of `ty` and class `index` on a machine
/// with `nr_cpus` CPUs, as `create_kmalloc_caches()` creates it: object size
/// [`kmalloc_size`], alignment [`kmalloc_cache_align`], flags
/// [`KmallocType::cache_flags`], no constructor.
///
/// Errors: [`crate::Error::InvalidArgument`] for an index without a cache
/// or `nr_cpus` 0.
pub fn kmalloc_cache_geometry(
    ty: KmallocType,
    index: u32,
    nr_cpus: usize,
) -> Result<CacheGeometry> {
    let size = kmalloc_size(index).ok_or(crate::Error::InvalidArgument)?;
    cache_geometry(
        size,
        kmalloc_cache_align(size),
        ty.cache_flags(),
        false,
        nr_cpus,
    )
}

/// What `kmalloc(0)` returns: not NULL, but never dereferenceable
/// (`ZERO_SIZE_PTR`).
pub const ZERO_SIZE_PTR: *mut u8 = 16 as *mut u8;

/// `ZERO_OR_NULL_PTR()`.
#[inline]
pub fn zero_or_null_ptr(p: *const u8) -> bool {
    (p as usize) <= ZERO_SIZE_PTR as usize
}

/// The kmalloc caches of a machine (`kmalloc_caches[type][index]` of
/// `mm/slab_common.c`) and the pages of large kmalloc allocations.
pub(crate) struct KmallocCaches {
    /// `kmalloc_caches[type][index]`: null until `kmem_cache_init()`
    /// creates the cache.
    pub(crate) caches: [[AtomicPtr<KmemCache>; KMALLOC_SHIFT_HIGH as usize + 1]; NR_KMALLOC_TYPES],
    /// Pages held by kmalloc allocations above `KMALLOC_MAX_CACHE_SIZE`.
    pub(crate) large_pages: AtomicU64,
}

impl KmallocCaches {
    pub(crate) const fn new() -> Self {
        KmallocCaches {
            caches: [const {
                [const { AtomicPtr::new(ptr::null_mut()) }; KMALLOC_SHIFT_HIGH as usize + 1]
            }; NR_KMALLOC_TYPES],
            large_pages: AtomicU64::new(0),
        }
    }
}

/// GFP bits kmalloc must not get (`GFP_SLAB_BUG_MASK`).
const GFP_SLAB_BUG_MASK: Gfp = crate::gfp::__GFP_DMA32.union(crate::gfp::__GFP_HIGHMEM);

impl<P: Platform> Kmem<P> {
    /// `kmem_cache_init()`/`create_kmalloc_caches()`: the 4 x 13 kmalloc caches.
    pub(crate) fn kmem_cache_init(&self) -> Result<()> {
        for ty in KmallocType::ALL {
            for index in 1..=KMALLOC_SHIFT_HIGH {
                let (Some(size), Some(name)) = (kmalloc_size(index), kmalloc_cache_name(ty, index))
                else {
                    continue;
                };
                let args = crate::slab::KmemCacheArgs {
                    align: kmalloc_cache_align(size),
                    ..Default::default()
                };
                let c = self.create_cache(name, size, &args, ty.cache_flags(), false)?;
                self.kmalloc.caches[ty.index()][index as usize]
                    .store(c as *const _ as *mut _, Relaxed);
            }
        }
        Ok(())
    }

    /// The kmalloc cache for `size` bytes (`<= KMALLOC_MAX_CACHE_SIZE`) and
    /// `gfp` (`kmalloc_slab()`).
    #[inline]
    pub fn kmalloc_slab(&self, size: usize, gfp: Gfp) -> Option<&KmemCache> {
        let index = kmalloc_index(size)?;
        let c = self.kmalloc.caches[kmalloc_type(gfp).index()][index as usize].load(Relaxed);
        // SAFETY: kmalloc caches are created at boot and never destroyed.
        unsafe { c.as_ref() }
    }

    /// `kmalloc()`.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// use kmem::gfp::GFP_KERNEL;
    /// let p = k.kmalloc(100, GFP_KERNEL).unwrap();
    /// assert_eq!(k.ksize(p.as_ptr()), 128);
    /// // SAFETY: `p` is not used again.
    /// unsafe { k.kfree(p.as_ptr()) }.unwrap();
    /// ```
    #[track_caller]
    #[inline(always)]
    pub fn kmalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        self.kmalloc_node_caller(size, gfp, -1, Location::caller())
    }

    /// `kmalloc_node()`.
    #[track_caller]
    pub fn kmalloc_node(&self, size: usize, gfp: Gfp, node: i32) -> Result<NonNull<u8>> {
        self.kmalloc_node_caller(size, gfp, node, Location::caller())
    }

    /// `kzalloc()`.
    #[track_caller]
    pub fn kzalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        self.kmalloc_node_caller(size, gfp | __GFP_ZERO, -1, Location::caller())
    }

    /// `kmalloc_array()`: `n * size` bytes; an overflowing product fails
    /// with `ENOMEM` and never wraps.
    #[track_caller]
    pub fn kmalloc_array(&self, n: usize, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        let bytes = n.checked_mul(size).ok_or(Error::NoMemory)?;
        self.kmalloc_node_caller(bytes, gfp, -1, Location::caller())
    }

    /// `kcalloc()`: zeroed [`kmalloc_array`](Self::kmalloc_array).
    #[track_caller]
    pub fn kcalloc(&self, n: usize, size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        let bytes = n.checked_mul(size).ok_or(Error::NoMemory)?;
        self.kmalloc_node_caller(bytes, gfp | __GFP_ZERO, -1, Location::caller())
    }

    /// `__kmalloc_node()`: the fast path picks the cache and goes to the
    /// slab fast path; everything else is in
    /// [`kmalloc_slow`](Self::kmalloc_slow).
    #[inline(always)]
    #[track_caller]
    pub(crate) fn kmalloc_node_caller(
        &self,
        size: usize,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> Result<NonNull<u8>> {
        // 1..=KMALLOC_MAX_CACHE_SIZE and no zone bits kmalloc refuses.
        if size.wrapping_sub(1) < KMALLOC_MAX_CACHE_SIZE && !gfp.intersects(GFP_SLAB_BUG_MASK) {
            if let Some(s) = self.kmalloc_slab(size, gfp) {
                return self.slab_alloc_node(s, gfp, node, caller);
            }
        }
        self.kmalloc_slow(size, gfp, node, caller)
    }

    /// Size 0, bad GFP bits (fixed up with Linux's warning) and
    /// `kmalloc_large`.
    #[cold]
    #[inline(never)]
    fn kmalloc_slow(
        &self,
        size: usize,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> Result<NonNull<u8>> {
        let mut gfp = gfp;
        if gfp.intersects(GFP_SLAB_BUG_MASK) {
            let fixed = gfp.without(GFP_SLAB_BUG_MASK);
            report!(
                &self.p,
                Level::Warning,
                "Unexpected gfp: {:#x} ({}). Fixing up to gfp: {:#x} ({}). Fix your code!",
                gfp.without(fixed).bits(),
                gfp.without(fixed),
                fixed.bits(),
                fixed
            );
            gfp = fixed;
        }
        if size == 0 {
            return Ok(NonNull::new(ZERO_SIZE_PTR).expect("non-null"));
        }
        if size <= KMALLOC_MAX_CACHE_SIZE {
            let s = self.kmalloc_slab(size, gfp).ok_or(Error::NoMemory)?;
            return self.slab_alloc_node(s, gfp, node, caller);
        }
        // kmalloc_large: a compound page block straight from the buddy allocator.
        let order = get_order(size);
        let page = self.alloc_pages_node(node, gfp | __GFP_COMP, order)?;
        self.kmalloc.large_pages.fetch_add(1 << order, Relaxed);
        self.page_address(page).ok_or(Error::NoMemory)
    }

    /// What kind of kmalloc memory `p` is, or a report and an error.
    pub(crate) fn kmalloc_owner(&self, what: &str, p: *const u8) -> Result<Owner<'_>> {
        // The fast case: an object of a slab.
        if let Some(slab) = self.slab_of(p) {
            let addr = slab.page.slab_cache_addr();
            if addr == 0 {
                // Given back by a racing free since the lookup.
                report!(&self.p, Level::Err, "{what}: {p:p} is no longer in a slab");
                return Err(Error::BadAddress);
            }
            // SAFETY: a slab's cache field points at its live cache.
            let s = unsafe { &*(addr as *const KmemCache) };
            if !s.is_obj_start(slab, p) {
                self.invalid_pointer(s, p)?;
            }
            return Ok(Owner::Slab(s, slab));
        }
        let Some(page) = self.virt_to_page(p) else {
            report!(
                &self.p,
                Level::Err,
                "BUG: {what}: {p:p} is not memory this allocator manages"
            );
            return Err(Error::BadAddress);
        };
        let head = self.compound_head(page);
        let addr = self.page_address(head).map(|a| a.as_ptr() as *const u8);
        if head.is_head() && head.refcount() > 0 && addr == Some(p) {
            return Ok(Owner::Large(head));
        }
        report!(
            &self.p,
            Level::Err,
            "BUG: {}: pointer {:p} is neither a slab object nor a kmalloc_large page (pfn {:#x})",
            what,
            p,
            self.page_to_pfn(page)
        );
        Err(Error::InvalidArgument)
    }

    /// `kfree()`: free memory from the kmalloc family. `NULL` and
    /// [`ZERO_SIZE_PTR`] are no-ops; a pointer into the middle of an
    /// object, into a page that is neither slab nor `kmalloc_large`, a
    /// double free on a debug cache or at the head of this CPU's sheaf, are
    /// reported and refused.
    ///
    /// # Safety
    ///
    /// `p` is not used after a successful free.
    #[track_caller]
    #[inline(always)]
    pub unsafe fn kfree(&self, p: *mut u8) -> Result<()> {
        // The fast path: an object of a slab, found from the address.
        if !zero_or_null_ptr(p) {
            if let Some((s, slab)) = self.slab_and_cache_of(p) {
                if !s.is_obj_start(slab, p) {
                    return self.invalid_pointer(s, p);
                }
                return self.slab_free(s, slab, p, Location::caller());
            }
        }
        self.kfree_slow(p, Location::caller())
    }

    /// The slab `p` lies in and its cache, from the address alone
    /// (`virt_to_slab()`, `slab->slab_cache`): `None` for an address in no
    /// slab, or in one a racing free gave back since the lookup (its cache
    /// field is 0), which the slow paths report.
    #[inline(always)]
    fn slab_and_cache_of(&self, p: *const u8) -> Option<(&KmemCache, SlabRef<'_>)> {
        let slab = self.slab_of(p)?;
        let addr = slab.page.slab_cache_addr();
        if addr == 0 {
            return None;
        }
        // SAFETY: a slab's cache field points at its live cache.
        Some((unsafe { &*(addr as *const KmemCache) }, slab))
    }

    /// [`kfree`](Self::kfree)'s fast path alone, inside a leaf section the
    /// caller holds, for a layer above that enters its own and wants no
    /// call on its fast path (kmem-malloc's `free`, whose slot check is the
    /// section): `true` when `p`, a slab object, went onto this CPU's free
    /// sheaf; `false` with nothing done and nothing reported otherwise (not
    /// a slab object, not an object start, a full sheaf, a debug cache),
    /// when `kfree` does the whole work.
    ///
    /// # Safety
    ///
    /// As [`kfree`](Self::kfree), and `st` is a CPU-local section of this
    /// machine's platform (so `st.cpu < nr_cpu_ids`), as
    /// [`Platform::local_enter_leaf`] gives one, open on the calling thread
    /// until this returns; nothing else on the thread holds a reference
    /// into that CPU's sheaves meanwhile.
    #[inline(always)]
    pub unsafe fn kfree_fastpath_in(&self, st: &LocalState, p: *mut u8) -> bool {
        match self.slab_and_cache_of(p) {
            // SAFETY: the caller's contract; `p` is an object start of `s`.
            Some((s, slab)) if s.is_obj_start(slab, p) => unsafe {
                self.slab_free_in(s, slab, p, st)
            },
            _ => false,
        }
    }

    /// [`kmalloc`](Self::kmalloc)'s fast path alone, the counterpart of
    /// [`kfree_fastpath_in`](Self::kfree_fastpath_in): an object from this
    /// CPU's sheaf of the size's cache, or `None` with nothing done (a size
    /// above [`KMALLOC_MAX_CACHE_SIZE`], an empty sheaf, a debug cache, an
    /// armed hook), when `kmalloc` does the whole work. Under `__GFP_ZERO`
    /// the object is zeroed before this returns, inside the caller's
    /// section.
    ///
    /// # Safety
    ///
    /// As for [`kfree_fastpath_in`](Self::kfree_fastpath_in): `st` is a
    /// section of this machine's platform, open on the calling thread until
    /// this returns, and nothing else on the thread holds a reference into
    /// that CPU's sheaves meanwhile.
    #[inline(always)]
    pub unsafe fn kmalloc_fastpath_in(
        &self,
        st: &LocalState,
        size: usize,
        gfp: Gfp,
    ) -> Option<NonNull<u8>> {
        if size.wrapping_sub(1) >= KMALLOC_MAX_CACHE_SIZE
            || gfp.intersects(GFP_SLAB_BUG_MASK)
            || self.slab_hooks_armed()
        {
            return None;
        }
        let s = self.kmalloc_slab(size, gfp)?;
        // SAFETY: the caller's contract.
        let x = unsafe { self.slab_alloc_in(s, -1, st) }?;
        NonNull::new(self.slab_post_alloc(s, x, gfp) as *mut u8)
    }

    /// `kfree()` of NULL, `ZERO_SIZE_PTR`, a `kmalloc_large` block or
    /// something that is not kmalloc memory.
    #[cold]
    #[inline(never)]
    fn kfree_slow(&self, p: *mut u8, caller: &'static Location<'static>) -> Result<()> {
        if zero_or_null_ptr(p) {
            return Ok(());
        }
        match self.kmalloc_owner("kfree", p)? {
            Owner::Slab(s, slab) => self.slab_free(s, slab, p, caller),
            Owner::Large(head) => {
                let order = head.order();
                self.__free_pages(head, order)?;
                self.kmalloc.large_pages.fetch_sub(1 << order, Relaxed);
                Ok(())
            }
        }
    }

    /// `kfree_sensitive()`: clear the whole object (`ksize` bytes), then free.
    ///
    /// # Safety
    ///
    /// As [`kfree`](Self::kfree).
    #[track_caller]
    pub unsafe fn kfree_sensitive(&self, p: *mut u8) -> Result<()> {
        if zero_or_null_ptr(p) {
            return Ok(());
        }
        let ks = self.ksize(p);
        // SAFETY: `p` is a kmalloc object of `ks` usable bytes (ksize
        // checked it), owned by the caller.
        unsafe { ptr::write_bytes(p, 0, ks) };
        // SAFETY: the caller's contract.
        unsafe { self.kfree(p) }
    }

    /// `ksize()`: the usable size of a kmalloc object (0, with a report,
    /// for anything else).
    pub fn ksize(&self, p: *const u8) -> usize {
        if zero_or_null_ptr(p) {
            return 0;
        }
        match self.kmalloc_owner("ksize", p) {
            Ok(Owner::Slab(s, _)) => s.geo.ksize(),
            Ok(Owner::Large(head)) => PAGE_SIZE << head.order(),
            Err(_) => 0,
        }
    }

    /// `krealloc()`: resize in place when the object is big enough, else
    /// allocate, copy and free. `new_size` 0 frees and returns
    /// [`ZERO_SIZE_PTR`]. With `__GFP_ZERO`, the spare bytes of a shrunk
    /// object are cleared and a moved object's new tail is zero, so an
    /// object always allocated with `__GFP_ZERO` grows with a zeroed tail
    /// (Linux's contract).
    ///
    /// # Safety
    ///
    /// `p` is null or a live kmalloc object the caller owns; on success the
    /// old pointer must not be used unless it is the one returned.
    #[track_caller]
    pub unsafe fn krealloc(&self, p: *mut u8, new_size: usize, gfp: Gfp) -> Result<NonNull<u8>> {
        let caller = Location::caller();
        if new_size == 0 {
            // SAFETY: the caller's contract.
            unsafe { self.kfree(p) }?;
            return Ok(NonNull::new(ZERO_SIZE_PTR).expect("non-null"));
        }
        if zero_or_null_ptr(p) {
            return self.kmalloc_node_caller(new_size, gfp, -1, caller);
        }
        let ks = self.ksize(p);
        if ks == 0 {
            return Err(Error::InvalidArgument);
        }
        if new_size <= ks {
            if gfp.contains(__GFP_ZERO) {
                // SAFETY: bytes new_size..ks of the caller's object.
                unsafe { ptr::write_bytes(p.add(new_size), 0, ks - new_size) };
            }
            return Ok(NonNull::new(p).expect("non-null"));
        }
        let q = self.kmalloc_node_caller(new_size, gfp, -1, caller)?;
        // SAFETY: both are live, distinct objects of at least `ks` bytes.
        unsafe { ptr::copy_nonoverlapping(p, q.as_ptr(), ks) };
        // SAFETY: the caller's contract: `p` is replaced by `q`.
        if let Err(e) = unsafe { self.kfree(p) } {
            // `p` was refused (reported: a double free, say): the caller
            // keeps what it had, and the copy goes back.
            // SAFETY: `q` was allocated above and never handed out.
            let _ = unsafe { self.kfree(q.as_ptr()) };
            return Err(e);
        }
        Ok(q)
    }

    /// `kmemdup()`: a kmalloc copy of `src`.
    #[track_caller]
    pub fn kmemdup(&self, src: &[u8], gfp: Gfp) -> Result<NonNull<u8>> {
        let p = self.kmalloc_node_caller(src.len(), gfp, -1, Location::caller())?;
        if !src.is_empty() {
            // SAFETY: a fresh object of at least src.len() bytes.
            unsafe { ptr::copy_nonoverlapping(src.as_ptr(), p.as_ptr(), src.len()) };
        }
        Ok(p)
    }

    /// `kstrdup()`: a NUL-terminated kmalloc copy of `s`.
    #[track_caller]
    pub fn kstrdup(&self, s: &str, gfp: Gfp) -> Result<NonNull<u8>> {
        let p = self.kmalloc_node_caller(s.len() + 1, gfp, -1, Location::caller())?;
        // SAFETY: a fresh object of at least len + 1 bytes.
        unsafe {
            ptr::copy_nonoverlapping(s.as_ptr(), p.as_ptr(), s.len());
            *p.as_ptr().add(s.len()) = 0;
        }
        Ok(p)
    }

    /// Pages held by `kmalloc_large` allocations.
    pub fn kmalloc_large_pages(&self) -> u64 {
        self.kmalloc.large_pages.load(Relaxed)
    }
}

/// What [`Kmem::kmalloc_owner`] found: a slab object (its cache and slab)
/// or a `kmalloc_large` block (its head page).
pub(crate) enum Owner<'a> {
    Slab(&'a KmemCache, crate::slab::cache::SlabRef<'a>),
    Large(&'a crate::page::Page),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gfp::{__GFP_ZERO, GFP_ATOMIC, GFP_DMA, GFP_KERNEL, GFP_KERNEL_ACCOUNT, GFP_NOWAIT};

    #[test]
    fn index_boundaries() {
        let cases = [
            (1, Some(3)),
            (8, Some(3)),
            (9, Some(4)),
            (16, Some(4)),
            (17, Some(5)),
            (24, Some(5)),
            (32, Some(5)),
            (33, Some(6)),
            (64, Some(6)),
            (65, Some(1)),
            (96, Some(1)),
            (97, Some(7)),
            (128, Some(7)),
            (129, Some(2)),
            (192, Some(2)),
            (193, Some(8)),
            (256, Some(8)),
            (257, Some(9)),
            (4096, Some(12)),
            (4097, Some(13)),
            (8192, Some(13)),
            (8193, None),
            (0, None),
            (usize::MAX, None),
        ];
        for (size, idx) in cases {
            assert_eq!(kmalloc_index(size), idx, "size {size}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "an 8192-size sweep of pure arithmetic; runs natively")]
    fn every_size_fits_its_class() {
        for size in 1..=KMALLOC_MAX_CACHE_SIZE {
            let idx = kmalloc_index(size).unwrap();
            let class = kmalloc_size(idx).unwrap();
            assert!(class >= size, "size {size} -> {class}");
            assert_eq!(kmalloc_size_roundup(size), class);
            // No smaller class would have done.
            for smaller in (1..=KMALLOC_SHIFT_HIGH).filter_map(kmalloc_size) {
                assert!(smaller >= class || smaller < size);
            }
        }
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(kmalloc_size(0), None);
        assert_eq!(kmalloc_size(1), Some(96));
        assert_eq!(kmalloc_size(2), Some(192));
        assert_eq!(kmalloc_size(3), Some(8));
        assert_eq!(kmalloc_size(13), Some(8192));
        assert_eq!(kmalloc_size(14), None);
        assert_eq!(
            kmalloc_cache_name(KmallocType::Normal, 1),
            Some("kmalloc-96")
        );
        assert_eq!(
            kmalloc_cache_name(KmallocType::Reclaim, 10),
            Some("kmalloc-rcl-1k")
        );
        assert_eq!(
            kmalloc_cache_name(KmallocType::Dma, 13),
            Some("dma-kmalloc-8k")
        );
        assert_eq!(
            kmalloc_cache_name(KmallocType::Cgroup, 2),
            Some("kmalloc-cg-192")
        );
        assert_eq!(
            kmalloc_cache_name(KmallocType::Normal, 9),
            Some("kmalloc-512")
        );
        assert_eq!(kmalloc_cache_name(KmallocType::Normal, 0), None);
        assert_eq!(kmalloc_cache_name(KmallocType::Normal, 14), None);
        for ty in KmallocType::ALL {
            for idx in 1..=KMALLOC_SHIFT_HIGH {
                let name = kmalloc_cache_name(ty, idx).unwrap();
                assert!(name.starts_with(ty.prefix()));
                assert_eq!(parse_kmalloc_cache_name(name), Some((ty, idx)));
            }
        }
    }

    #[test]
    fn roundup_beyond_the_caches() {
        assert_eq!(kmalloc_size_roundup(8192), 8192);
        assert_eq!(kmalloc_size_roundup(8193), 16384);
        assert_eq!(kmalloc_size_roundup(KMALLOC_MAX_SIZE), KMALLOC_MAX_SIZE);
        assert_eq!(kmalloc_size_roundup(KMALLOC_MAX_SIZE - 1), KMALLOC_MAX_SIZE);
        assert_eq!(
            kmalloc_size_roundup(KMALLOC_MAX_SIZE + 1),
            KMALLOC_MAX_SIZE + 1
        );
        assert_eq!(kmalloc_size_roundup(usize::MAX), usize::MAX);
        assert_eq!(KMALLOC_MAX_ORDER, 10);
    }

    #[test]
    fn type_priorities() {
        use KmallocType::*;
        assert_eq!(kmalloc_type(Gfp::NONE), Normal);
        assert_eq!(kmalloc_type(GFP_KERNEL), Normal);
        assert_eq!(kmalloc_type(GFP_ATOMIC | __GFP_ZERO), Normal);
        assert_eq!(kmalloc_type(GFP_NOWAIT), Normal);
        assert_eq!(kmalloc_type(GFP_KERNEL_ACCOUNT), Cgroup);
        assert_eq!(kmalloc_type(__GFP_ACCOUNT), Cgroup);
        assert_eq!(kmalloc_type(GFP_KERNEL | __GFP_RECLAIMABLE), Reclaim);
        assert_eq!(
            kmalloc_type(GFP_KERNEL_ACCOUNT | __GFP_RECLAIMABLE),
            Reclaim
        );
        assert_eq!(kmalloc_type(GFP_KERNEL | GFP_DMA), Dma);
        assert_eq!(kmalloc_type(GFP_DMA | __GFP_RECLAIMABLE), Dma);
        assert_eq!(kmalloc_type(GFP_DMA | __GFP_ACCOUNT), Dma);
        assert_eq!(
            kmalloc_type(GFP_DMA | __GFP_RECLAIMABLE | __GFP_ACCOUNT),
            Dma
        );
    }

    #[test]
    fn cache_flags_and_alignment() {
        assert_eq!(
            KmallocType::Normal.cache_flags(),
            SLAB_KMALLOC | SLAB_NO_MERGE
        );
        assert_eq!(
            KmallocType::Dma.cache_flags(),
            SLAB_KMALLOC | SLAB_CACHE_DMA
        );
        assert_eq!(kmalloc_cache_align(8), 8);
        assert_eq!(kmalloc_cache_align(96), 32);
        assert_eq!(kmalloc_cache_align(192), 64);
        assert_eq!(kmalloc_cache_align(4096), 4096);
        assert_eq!(kmalloc_cache_align(24), 8);
        assert_eq!(kmalloc_cache_align(0), 0);
    }

    #[test]
    fn class_geometry_on_two_cpus() {
        let g = kmalloc_cache_geometry(KmallocType::Normal, 1, 2).unwrap();
        assert_eq!((g.size, g.align, g.objects, g.order), (96, 32, 42, 0));
        let g = kmalloc_cache_geometry(KmallocType::Cgroup, 13, 2).unwrap();
        assert_eq!((g.size, g.objects, g.order), (8192, 4, 3));
        assert!(kmalloc_cache_geometry(KmallocType::Normal, 0, 2).is_err());
        assert!(kmalloc_cache_geometry(KmallocType::Normal, 3, 0).is_err());
    }
}
