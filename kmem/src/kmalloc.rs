//! kmalloc size classes (`include/linux/slab.h`, `mm/slab_common.c`).
//!
//! **Only the size classes for now**: which cache a request of a given size
//! and GFP flags lands in, what that cache is called, and how it is laid
//! out. The allocation functions themselves (`kmalloc()`, `kfree()`,
//! `ksize()`, large allocations straight from the page allocator) come later,
//! on top of the slab caches of [`crate::slab`].
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

use crate::error::Result;
use crate::gfp::{Gfp, __GFP_ACCOUNT, __GFP_DMA, __GFP_RECLAIMABLE};
use crate::page_alloc::get_order;
use crate::slab::geometry::{cache_geometry, CacheGeometry};
use crate::slab::{
    SlabFlags, SLAB_ACCOUNT, SLAB_CACHE_DMA, SLAB_KMALLOC, SLAB_NO_MERGE, SLAB_RECLAIM_ACCOUNT,
};
use crate::{MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE};

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
