//! Cache geometry: where everything sits in a SLUB object, and how big a slab is.
//!
//! This is the pure arithmetic SLUB does when a cache is created, before any
//! page is touched. Each step follows one Linux function:
//!
//! | step | Linux | here |
//! |---|---|---|
//! | alignment from `align`, `SLAB_HWCACHE_ALIGN`, the arch minimum | `calculate_alignment()`, `mm/slab_common.c` | [`calculate_alignment`] |
//! | object layout: free pointer, red zones, tracking, final size | `calculate_sizes()`, `mm/slub.c` | [`calculate_sizes`] |
//! | objects in a slab of a given order | `order_objects()`, `mm/slub.c` | [`order_objects`] |
//! | smallest order wasting at most 1/`fract` | `calc_slab_order()`, `mm/slub.c` | [`calc_slab_order`] |
//! | the slab order (min_objects, 1/16..1/2 fractions, fallbacks) | `calculate_order()`, `mm/slub.c` | [`calculate_order`] |
//! | argument checks of cache creation | `__kmem_cache_create_args()`, `kmem_cache_sanity_check()`, `mm/slab_common.c` | [`cache_geometry`], [`calculate_sizes`] |
//!
//! The configuration is the one of [`crate::slab`]: Linux 6.18, x86_64,
//! 4 KiB pages, `CONFIG_SLUB_DEBUG=y` (the debug layout is compiled in, and
//! used only when a cache has the debug flags), `CONFIG_STACKDEPOT=y` (which
//! `CONFIG_SLUB_DEBUG` selects; it makes `struct track` 32 bytes), no KASAN,
//! and the default boot parameters `slab_min_order=0`, `slab_max_order=3`,
//! `slab_min_objects=0` ([`SlubParams::default`]).
//!
//! # Object layout
//!
//! With every debug option on, one object slot of `size` bytes is laid out as
//! follows (offsets from the start of the slot; Linux hands out the address
//! `slot + red_left_pad`):
//!
//! ```text
//! | left red zone | object (object_size) | right red zone | free pointer | 2 x struct track | orig_size | padding |
//! 0         red_left_pad                               inuse
//! ```
//!
//! Without debug flags, a plain cache's slot is just the object rounded up to
//! the alignment, and the free pointer lives *inside* the free object, in its
//! middle (aligned down to a word) so that small overflows from a
//! neighbouring object do not hit it.

use crate::error::{Error, Result};
use crate::gfp::{Gfp, __GFP_COMP, __GFP_RECLAIMABLE, GFP_DMA, GFP_DMA32};
use crate::page_alloc::get_order;
use crate::slab::{
    SlabFlags, SLAB_CACHE_DMA, SLAB_CACHE_DMA32, SLAB_FLAG_MASK, SLAB_HWCACHE_ALIGN,
    SLAB_INTERNAL_FLAGS, SLAB_KMALLOC, SLAB_OBJECT_POISON, SLAB_POISON, SLAB_RECLAIM_ACCOUNT,
    SLAB_RED_ZONE, SLAB_STORE_USER, SLAB_TYPESAFE_BY_RCU,
};
use crate::{MAX_PAGE_ORDER, PAGE_ALLOC_COSTLY_ORDER, PAGE_SIZE};

/// `sizeof(void *)` on x86_64: the free pointer's size and the word the
/// layout is rounded to.
pub const POINTER_SIZE: usize = 8;
/// `cache_line_size()` on x86_64, used by `SLAB_HWCACHE_ALIGN`.
pub const CACHE_LINE_SIZE: usize = 64;
/// `ARCH_SLAB_MINALIGN`: `__alignof__(unsigned long long)` on x86_64.
pub const ARCH_SLAB_MINALIGN: usize = 8;
/// `sizeof(struct track)` with `CONFIG_STACKDEPOT`: `addr` (8), `handle`
/// (4), `cpu` (4), `pid` (4) and padding (4), `when` (8).
pub const TRACK_SIZE: usize = 32;
/// Bytes that store the original kmalloc request size of a
/// `SLAB_KMALLOC | SLAB_STORE_USER` cache: `sizeof(unsigned int)` in 6.18.
pub const ORIG_SIZE_SIZE: usize = 4;
/// `MAX_OBJS_PER_PAGE`: `slab->objects` is a 15-bit field.
pub const MAX_OBJS_PER_PAGE: usize = 32767;
/// Default `slab_min_order` (`slub_min_order`).
pub const SLUB_MIN_ORDER: u32 = 0;
/// Default `slab_max_order`: `PAGE_ALLOC_COSTLY_ORDER`.
pub const SLUB_MAX_ORDER: u32 = PAGE_ALLOC_COSTLY_ORDER;
/// Default `slab_min_objects`: 0, meaning "derive it from the CPU count".
pub const SLUB_MIN_OBJECTS: usize = 0;
/// The largest object a cache may hold (`KMALLOC_MAX_SIZE`, checked by
/// `kmem_cache_sanity_check()`): 4 MiB.
pub const MAX_OBJECT_SIZE: usize = PAGE_SIZE << MAX_PAGE_ORDER;

/// The SLUB boot parameters that shape slabs (`slab_min_order=`,
/// `slab_max_order=`, `slab_min_objects=`; the `slub_*` spellings are
/// accepted by Linux too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlubParams {
    /// Smallest slab order (`slub_min_order`).
    pub min_order: u32,
    /// Largest order `calculate_order()` tries before its fallback
    /// (`slub_max_order`).
    pub max_order: u32,
    /// Objects a slab should hold at least; 0 derives it from the CPU count
    /// (`slub_min_objects`).
    pub min_objects: usize,
}

impl Default for SlubParams {
    fn default() -> Self {
        SlubParams {
            min_order: SLUB_MIN_ORDER,
            max_order: SLUB_MAX_ORDER,
            min_objects: SLUB_MIN_OBJECTS,
        }
    }
}

impl SlubParams {
    /// Parameters as the boot options set them: like `setup_slub_min_order()`
    /// and `setup_slub_max_order()`, a `min_order` above `max_order` raises
    /// `max_order`, and `max_order` is capped at `MAX_PAGE_ORDER`.
    pub fn new(min_order: u32, max_order: u32, min_objects: usize) -> Result<SlubParams> {
        if min_order > MAX_PAGE_ORDER {
            return Err(Error::InvalidArgument);
        }
        let max_order = max_order.min(MAX_PAGE_ORDER).max(min_order);
        Ok(SlubParams {
            min_order,
            max_order,
            min_objects,
        })
    }

    fn check(&self) -> Result<()> {
        if self.max_order > MAX_PAGE_ORDER || self.min_order > self.max_order {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }
}

/// The arguments of cache creation that shape the layout (the geometric part
/// of `struct kmem_cache_args` plus the flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheArgs {
    /// The object size the cache was asked for (`object_size`).
    pub object_size: usize,
    /// The cache's alignment *after* [`calculate_alignment`] (`s->align`).
    pub align: usize,
    /// The cache flags.
    pub flags: SlabFlags,
    /// The cache has a constructor (`s->ctor != NULL`).
    pub has_ctor: bool,
    /// `args->freeptr_offset` with `args->use_freeptr_offset`: where a
    /// `SLAB_TYPESAFE_BY_RCU` cache keeps its free pointer inside the object
    /// (a field the user promises not to rely on across free). `None` for
    /// every other cache.
    pub freeptr_offset: Option<usize>,
}

/// The layout of a cache's objects and slabs (the geometric fields of
/// `struct kmem_cache`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheGeometry {
    /// The size the user asked for (`s->object_size`).
    pub object_size: usize,
    /// The size of one object slot including metadata and padding
    /// (`s->size`; the `<objsize>` column of `/proc/slabinfo`).
    pub size: usize,
    /// Object alignment (`s->align`).
    pub align: usize,
    /// Offset of the free pointer from the object start (`s->offset`).
    pub offset: usize,
    /// Offset of the metadata: the object plus the right red zone, rounded to
    /// a word (`s->inuse`).
    pub inuse: usize,
    /// Left red zone size, 0 without `SLAB_RED_ZONE` (`s->red_left_pad`).
    pub red_left_pad: usize,
    /// Page order of a slab (`oo_order(s->oo)`).
    pub order: u32,
    /// Objects per slab (`oo_objects(s->oo)`; `<objperslab>`).
    pub objects: usize,
    /// Order of the fallback slab used when the preferred order cannot be
    /// allocated (`oo_order(s->min)`).
    pub min_order: u32,
    /// Objects in a fallback slab (`oo_objects(s->min)`).
    pub min_objects: usize,
    /// The cache flags after `calculate_sizes()`: the caller's flags plus
    /// [`SLAB_OBJECT_POISON`] when the object itself is poisoned.
    pub flags: SlabFlags,
    /// GFP flags added to every slab page allocation (`s->allocflags`):
    /// `__GFP_COMP`, plus `GFP_DMA`, `GFP_DMA32` or `__GFP_RECLAIMABLE` as the
    /// cache flags ask.
    pub allocflags: Gfp,
}

impl CacheGeometry {
    /// Pages per slab (`<pagesperslab>` of `/proc/slabinfo`).
    pub const fn pages_per_slab(&self) -> usize {
        1 << self.order
    }

    /// Bytes per slab (`slab_size()`).
    pub const fn slab_bytes(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// Bytes at the end of a slab that hold no object.
    pub const fn leftover(&self) -> usize {
        self.slab_bytes() - self.objects * self.size
    }

    /// `freeptr_outside_object()`: the free pointer sits after the object, so
    /// freeing does not overwrite any of the object's bytes.
    pub const fn freeptr_outside_object(&self) -> bool {
        self.offset >= self.inuse
    }

    /// `get_info_end()`: where the tracking data (if any) starts.
    pub const fn info_end(&self) -> usize {
        if self.freeptr_outside_object() {
            self.inuse + POINTER_SIZE
        } else {
            self.inuse
        }
    }

    /// Offset of the two `struct track` records, if `SLAB_STORE_USER`.
    pub const fn track_offset(&self) -> Option<usize> {
        if self.flags.contains(SLAB_STORE_USER) {
            Some(self.info_end())
        } else {
            None
        }
    }

    /// Offset of the saved kmalloc request size, if the cache is a
    /// `SLAB_KMALLOC` cache with `SLAB_STORE_USER` (`get_orig_size()`).
    pub const fn orig_size_offset(&self) -> Option<usize> {
        if self.flags.contains(SLAB_STORE_USER) && self.flags.contains(SLAB_KMALLOC) {
            Some(self.info_end() + 2 * TRACK_SIZE)
        } else {
            None
        }
    }

    /// `true` if free objects are filled with poison (`__OBJECT_POISON`).
    pub const fn object_poison(&self) -> bool {
        self.flags.contains(SLAB_OBJECT_POISON)
    }

    /// Bytes of an object the user may use (`slab_ksize()`): only
    /// `object_size` under red zoning or poisoning, up to the metadata for
    /// `SLAB_TYPESAFE_BY_RCU` and `SLAB_STORE_USER`, else the whole slot.
    pub const fn ksize(&self) -> usize {
        if self.flags.intersects(SLAB_RED_ZONE.union(SLAB_POISON)) {
            self.object_size
        } else if self
            .flags
            .intersects(SLAB_TYPESAFE_BY_RCU.union(SLAB_STORE_USER))
        {
            self.inuse
        } else {
            self.size
        }
    }
}

const fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

const fn align_down(x: usize, a: usize) -> usize {
    x & !(a - 1)
}

/// `fls()`: the 1-based index of the highest set bit, 0 for 0.
const fn fls(x: usize) -> u32 {
    usize::BITS - x.leading_zeros()
}

/// `calculate_alignment()` of `mm/slab_common.c`.
///
/// With `SLAB_HWCACHE_ALIGN`, the cache line size (64) is halved while the
/// object fits twice in it, and the result raises `align`. The alignment is
/// then at least `ARCH_SLAB_MINALIGN` and rounded up to a word. `align` 0
/// means "no requirement". `align` must be 0 or a power of two (the caller
/// checks; [`cache_geometry`] does).
///
/// ```
/// use kmem::slab::{geometry::calculate_alignment, SlabFlags, SLAB_HWCACHE_ALIGN};
///
/// assert_eq!(calculate_alignment(SlabFlags::NONE, 0, 20), 8);
/// assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 20), 32);
/// assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 100), 64);
/// assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 128, 100), 128);
/// ```
pub const fn calculate_alignment(flags: SlabFlags, align: usize, size: usize) -> usize {
    let mut align = align;
    if flags.contains(SLAB_HWCACHE_ALIGN) {
        let mut ralign = CACHE_LINE_SIZE;
        while size <= ralign / 2 {
            ralign /= 2;
        }
        if ralign > align {
            align = ralign;
        }
    }
    if ARCH_SLAB_MINALIGN > align {
        align = ARCH_SLAB_MINALIGN;
    }
    align_up(align, POINTER_SIZE)
}

/// `order_objects()`: how many `size`-byte slots fit in a slab of `order`.
/// Returns 0 for `size` 0 or an order above `MAX_PAGE_ORDER`.
pub const fn order_objects(order: u32, size: usize) -> usize {
    if size == 0 || order > MAX_PAGE_ORDER {
        return 0;
    }
    (PAGE_SIZE << order) / size
}

/// `calc_slab_order()`: the smallest order in `min_order..=max_order` whose
/// slab leaves at most `1/fract_leftover` of itself unused; `max_order + 1`
/// (or `min_order` if that is larger) when none does.
///
/// Returns `u32::MAX` for `size` 0 or `fract_leftover` 0 instead of
/// dividing by zero.
pub const fn calc_slab_order(
    size: usize,
    min_order: u32,
    max_order: u32,
    fract_leftover: usize,
) -> u32 {
    if size == 0 || fract_leftover == 0 {
        return u32::MAX;
    }
    let mut order = min_order;
    while order <= max_order && order <= MAX_PAGE_ORDER {
        let slab_size = PAGE_SIZE << order;
        if slab_size % size <= slab_size / fract_leftover {
            return order;
        }
        order += 1;
    }
    order
}

/// The default `slub_min_objects` for a machine: `4 * (fls(nr_cpus) + 1)`.
///
/// Linux uses `num_present_cpus()`, or `nr_cpu_ids` when that is 1 or less
/// (some architectures only count CPUs as present once they are online);
/// pass the number that rule yields.
///
/// ```
/// use kmem::slab::geometry::default_min_objects;
/// assert_eq!(default_min_objects(1), 8);
/// assert_eq!(default_min_objects(2), 12);
/// assert_eq!(default_min_objects(8), 20);
/// ```
pub const fn default_min_objects(nr_cpus: usize) -> usize {
    4 * (fls(nr_cpus) as usize + 1)
}

/// `calculate_order()` with the default boot parameters: the page order of
/// a slab of `size`-byte slots on a machine with `nr_cpus` CPUs.
///
/// ```
/// use kmem::slab::geometry::calculate_order;
/// assert_eq!(calculate_order(96, 2), Ok(0));
/// assert_eq!(calculate_order(1024, 2), Ok(2));
/// assert_eq!(calculate_order(8192, 2), Ok(3));
/// assert_eq!(calculate_order(51456, 2), Ok(4)); // above slab_max_order: get_order()
/// ```
pub fn calculate_order(size: usize, nr_cpus: usize) -> Result<u32> {
    calculate_order_with(size, nr_cpus, &SlubParams::default())
}

/// `calculate_order()` of `mm/slub.c` with explicit boot parameters.
///
/// 1. `min_objects` is `params.min_objects`, or [`default_min_objects`].
/// 2. It is capped at what a `max_order` slab holds (at least 1), and
///    `min_order` becomes the order that fits that many objects (at least
///    `params.min_order`).
/// 3. If even `min_order` holds more than `MAX_OBJS_PER_PAGE` objects, the
///    order is `get_order(size * MAX_OBJS_PER_PAGE) - 1`.
/// 4. Otherwise [`calc_slab_order`] is tried from `min_order` to `max_order`
///    accepting 1/16, then 1/8, 1/4 and 1/2 of the slab as waste; the
///    first order found wins.
/// 5. Failing that (an object larger than a `max_order` slab), the order is
///    `get_order(size)` if that is at most `MAX_PAGE_ORDER`.
///
/// Errors: [`Error::InvalidArgument`] for `size` 0, `nr_cpus` 0 (when
/// `min_objects` is derived), bad parameters, or a size that needs more than
/// a `MAX_PAGE_ORDER` block (where Linux returns `-ENOSYS` and cache
/// creation fails).
pub fn calculate_order_with(size: usize, nr_cpus: usize, params: &SlubParams) -> Result<u32> {
    params.check()?;
    // A size that needs more than a MAX_PAGE_ORDER block ends in Linux's
    // -ENOSYS fallback anyway; refusing it first also keeps every product
    // below far from overflow.
    if size == 0 || get_order(size) > MAX_PAGE_ORDER {
        return Err(Error::InvalidArgument);
    }
    let mut min_objects = params.min_objects;
    if min_objects == 0 {
        if nr_cpus == 0 {
            return Err(Error::InvalidArgument);
        }
        min_objects = default_min_objects(nr_cpus);
    }
    let max_objects = order_objects(params.max_order, size).max(1);
    let min_objects = min_objects.min(max_objects);

    let min_order = params.min_order.max(get_order(min_objects * size));
    if order_objects(min_order, size) > MAX_OBJS_PER_PAGE {
        return Ok(get_order(size * MAX_OBJS_PER_PAGE).saturating_sub(1));
    }

    let mut fraction = 16;
    while fraction > 1 {
        let order = calc_slab_order(size, min_order, params.max_order, fraction);
        if order <= params.max_order {
            return Ok(order);
        }
        fraction /= 2;
    }

    let order = get_order(size);
    if order <= MAX_PAGE_ORDER {
        Ok(order)
    } else {
        Err(Error::InvalidArgument)
    }
}

/// `calculate_sizes()` of `mm/slub.c` (with the default boot parameters):
/// lays out one object and sizes the slab.
///
/// `args.align` is the final alignment (`s->align`), as Linux passes it in;
/// [`cache_geometry`] computes it from a requested alignment first.
///
/// Steps, in Linux's order:
///
/// 1. `size` = `object_size` rounded up to a word.
/// 2. `SLAB_POISON` without `SLAB_TYPESAFE_BY_RCU` and without a
///    constructor poisons the object itself ([`SLAB_OBJECT_POISON`]).
/// 3. `SLAB_RED_ZONE` with no slack between object and word boundary adds a
///    word of right red zone. `inuse` = `size`.
/// 4. The free pointer goes *after* the object (`offset = inuse`, one more
///    word) for RCU caches without `freeptr_offset`, `SLAB_POISON`, a
///    constructor, or `SLAB_RED_ZONE` when the object is smaller than a word
///    or the cache keeps the kmalloc request size (`slub_debug_orig_size()`).
///    An RCU cache with `freeptr_offset` keeps it there. Otherwise it goes in
///    the middle of the object: `ALIGN_DOWN(object_size / 2, 8)`.
/// 5. `SLAB_STORE_USER` adds two `struct track` ([`TRACK_SIZE`] each), and
///    for a kmalloc cache the 4-byte original request size.
/// 6. `SLAB_RED_ZONE` adds a trailing word and a left red zone of one word
///    rounded up to the alignment (`red_left_pad`).
/// 7. `size` is rounded up to the alignment; [`calculate_order`] picks the
///    order; `oo` and `min` are derived (`oo_make()`).
///
/// Errors ([`Error::InvalidArgument`]): an object size of 0 or above
/// [`MAX_OBJECT_SIZE`], an alignment that is not a power of two or above
/// [`MAX_OBJECT_SIZE`], unknown or internal flags, a `freeptr_offset`
/// without `SLAB_TYPESAFE_BY_RCU` or not word-aligned inside the object,
/// `nr_cpus` 0, or a layout too large for a `MAX_PAGE_ORDER` block.
pub fn calculate_sizes(args: &CacheArgs, nr_cpus: usize) -> Result<CacheGeometry> {
    calculate_sizes_with(args, nr_cpus, &SlubParams::default())
}

/// [`calculate_sizes`] with explicit boot parameters.
pub fn calculate_sizes_with(
    args: &CacheArgs,
    nr_cpus: usize,
    params: &SlubParams,
) -> Result<CacheGeometry> {
    let object_size = args.object_size;
    let flags = args.flags;
    let align = args.align;
    if object_size == 0 || object_size > MAX_OBJECT_SIZE {
        return Err(Error::InvalidArgument);
    }
    if !align.is_power_of_two() || align > MAX_OBJECT_SIZE {
        return Err(Error::InvalidArgument);
    }
    if flags.without(SLAB_FLAG_MASK).bits() != 0 || flags.intersects(SLAB_INTERNAL_FLAGS) {
        return Err(Error::InvalidArgument);
    }
    let rcu = flags.contains(SLAB_TYPESAFE_BY_RCU);
    if let Some(fo) = args.freeptr_offset {
        // __kmem_cache_create_args(): only for RCU caches, inside the object,
        // aligned to sizeof(freeptr_t).
        if !rcu || fo >= object_size || fo % POINTER_SIZE != 0 {
            return Err(Error::InvalidArgument);
        }
    }
    if nr_cpus == 0 {
        return Err(Error::InvalidArgument);
    }

    // 1. Word-align: the free pointer can only sit on a word boundary.
    let mut size = align_up(object_size, POINTER_SIZE);

    // 2. Poison the object itself only if nobody touches it while free.
    let mut out_flags = flags;
    if flags.contains(SLAB_POISON) && !rcu && !args.has_ctor {
        out_flags |= SLAB_OBJECT_POISON;
    }

    // 3. Right red zone: need at least one byte between object and metadata.
    let red_zone = flags.contains(SLAB_RED_ZONE);
    if red_zone && size == object_size {
        size += POINTER_SIZE;
    }
    let inuse = size;

    // 4. Free pointer.
    let orig_size = flags.contains(SLAB_STORE_USER) && flags.contains(SLAB_KMALLOC);
    let offset = if (rcu && args.freeptr_offset.is_none())
        || flags.contains(SLAB_POISON)
        || args.has_ctor
        || (red_zone && (object_size < POINTER_SIZE || orig_size))
    {
        let off = size;
        size += POINTER_SIZE;
        off
    } else if let Some(fo) = args.freeptr_offset {
        // Only RCU caches get here (checked above).
        fo
    } else {
        align_down(object_size / 2, POINTER_SIZE)
    };

    // 5. Alloc/free tracking and the original kmalloc size.
    if flags.contains(SLAB_STORE_USER) {
        size += 2 * TRACK_SIZE;
        if flags.contains(SLAB_KMALLOC) {
            size += ORIG_SIZE_SIZE;
        }
    }

    // 6. Trailing padding word and the left red zone.
    let mut red_left_pad = 0;
    if red_zone {
        size += POINTER_SIZE;
        red_left_pad = align_up(POINTER_SIZE, align);
        size += red_left_pad;
    }

    // 7. Slot size, order, objects.
    let size = align_up(size, align);
    let order = calculate_order_with(size, nr_cpus, params)?;
    let objects = order_objects(order, size);
    if objects == 0 {
        return Err(Error::InvalidArgument);
    }
    let min_order = get_order(size);
    let min_objects = order_objects(min_order, size);

    let mut allocflags = __GFP_COMP;
    if flags.contains(SLAB_CACHE_DMA) {
        allocflags |= GFP_DMA;
    }
    if flags.contains(SLAB_CACHE_DMA32) {
        allocflags |= GFP_DMA32;
    }
    if flags.contains(SLAB_RECLAIM_ACCOUNT) {
        allocflags |= __GFP_RECLAIMABLE;
    }

    Ok(CacheGeometry {
        object_size,
        size,
        align,
        offset,
        inuse,
        red_left_pad,
        order,
        objects,
        min_order,
        min_objects,
        flags: out_flags,
        allocflags,
    })
}

/// The geometry of a cache created with `kmem_cache_create(name,
/// object_size, align, flags, ctor)` on a machine with `nr_cpus` CPUs.
///
/// The alignment is first passed through [`calculate_alignment`], as
/// `__kmem_cache_create_args()` does, then [`calculate_sizes`] lays the
/// object out. `align` 0 means no requirement.
///
/// ```
/// use kmem::slab::{geometry::cache_geometry, SlabFlags, SLAB_HWCACHE_ALIGN};
///
/// // A plain 100-byte cache: 8-byte aligned, 104-byte slots, free pointer
/// // inside the object at 48, 39 objects in one page.
/// let g = cache_geometry(100, 0, SlabFlags::NONE, false, 2).unwrap();
/// assert_eq!((g.size, g.offset, g.order, g.objects), (104, 48, 0, 39));
///
/// // The same with a constructor: the free pointer moves after the object.
/// let g = cache_geometry(100, 0, SlabFlags::NONE, true, 2).unwrap();
/// assert_eq!((g.size, g.offset, g.inuse), (112, 104, 104));
///
/// // Cache-line aligned.
/// let g = cache_geometry(100, 0, SLAB_HWCACHE_ALIGN, false, 2).unwrap();
/// assert_eq!((g.size, g.align, g.objects), (128, 64, 32));
///
/// assert!(cache_geometry(0, 0, SlabFlags::NONE, false, 2).is_err());
/// ```
pub fn cache_geometry(
    object_size: usize,
    align: usize,
    flags: SlabFlags,
    has_ctor: bool,
    nr_cpus: usize,
) -> Result<CacheGeometry> {
    if align != 0 && (!align.is_power_of_two() || align > MAX_OBJECT_SIZE) {
        return Err(Error::InvalidArgument);
    }
    if object_size == 0 || object_size > MAX_OBJECT_SIZE {
        return Err(Error::InvalidArgument);
    }
    let align = calculate_alignment(flags, align, object_size);
    calculate_sizes(
        &CacheArgs {
            object_size,
            align,
            flags,
            has_ctor,
            freeptr_offset: None,
        },
        nr_cpus,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slab::{
        SLAB_ACCOUNT, SLAB_CMPXCHG_DOUBLE, SLAB_CONSISTENCY_CHECKS, SLAB_NO_MERGE, SLAB_PANIC,
    };

    fn plain(size: usize) -> CacheGeometry {
        cache_geometry(size, 0, SlabFlags::NONE, false, 2).unwrap()
    }

    #[test]
    fn free_pointer_in_the_middle_of_plain_objects() {
        let g = plain(64);
        assert_eq!((g.size, g.inuse, g.offset), (64, 64, 32));
        assert!(!g.freeptr_outside_object());
        // object_size / 2 aligned *down* to a word.
        assert_eq!(plain(24).offset, 8);
        assert_eq!(plain(8).offset, 0);
        assert_eq!(plain(100).offset, 48);
        assert_eq!(plain(1).offset, 0);
        assert_eq!(plain(1).size, 8);
        assert_eq!(plain(4096).offset, 2048);
        // Flags that do not touch the layout leave it alone.
        let f = SLAB_PANIC | SLAB_NO_MERGE | SLAB_ACCOUNT | SLAB_CONSISTENCY_CHECKS;
        let g = cache_geometry(64, 0, f, false, 2).unwrap();
        assert_eq!((g.size, g.offset, g.objects), (64, 32, 64));
    }

    #[test]
    fn free_pointer_after_object_for_ctor_rcu_poison() {
        for (flags, ctor) in [
            (SlabFlags::NONE, true),
            (SLAB_TYPESAFE_BY_RCU, false),
            (SLAB_POISON, false),
        ] {
            let g = cache_geometry(64, 0, flags, ctor, 2).unwrap();
            assert_eq!(
                (g.inuse, g.offset, g.size),
                (64, 64, 72),
                "{flags:?} ctor={ctor}"
            );
            assert!(g.freeptr_outside_object());
            assert_eq!(g.info_end(), 72);
            assert_eq!(g.objects, 4096 / 72);
        }
        // An odd size: the word-rounded object, then the pointer.
        let g = cache_geometry(20, 0, SlabFlags::NONE, true, 2).unwrap();
        assert_eq!((g.inuse, g.offset, g.size), (24, 24, 32));
    }

    #[test]
    fn object_poison_only_when_nobody_touches_free_objects() {
        assert!(cache_geometry(64, 0, SLAB_POISON, false, 2)
            .unwrap()
            .object_poison());
        assert!(!cache_geometry(64, 0, SLAB_POISON, true, 2)
            .unwrap()
            .object_poison());
        let rcu = SLAB_POISON | SLAB_TYPESAFE_BY_RCU;
        assert!(!cache_geometry(64, 0, rcu, false, 2)
            .unwrap()
            .object_poison());
        assert!(!plain(64).object_poison());
    }

    #[test]
    fn rcu_freeptr_offset_keeps_the_pointer_inside() {
        let args = CacheArgs {
            object_size: 64,
            align: 8,
            flags: SLAB_TYPESAFE_BY_RCU,
            has_ctor: false,
            freeptr_offset: Some(16),
        };
        let g = calculate_sizes(&args, 2).unwrap();
        assert_eq!((g.offset, g.inuse, g.size), (16, 64, 64));
        // Without RCU, out of the object, or misaligned: refused.
        for bad in [
            CacheArgs {
                flags: SlabFlags::NONE,
                ..args
            },
            CacheArgs {
                freeptr_offset: Some(64),
                ..args
            },
            CacheArgs {
                freeptr_offset: Some(12),
                ..args
            },
        ] {
            assert_eq!(calculate_sizes(&bad, 2), Err(Error::InvalidArgument));
        }
    }

    #[test]
    fn red_zone_layout() {
        // 64 bytes, no slack: one word of right red zone, pointer in the
        // middle, trailing word, left pad of one word.
        let g = cache_geometry(64, 0, SLAB_RED_ZONE, false, 2).unwrap();
        assert_eq!(g.inuse, 72);
        assert_eq!(g.offset, 32);
        assert_eq!(g.red_left_pad, 8);
        assert_eq!(g.size, 72 + 8 + 8);
        assert_eq!(g.ksize(), 64);

        // 60 bytes: the 4 bytes of slack are the right red zone.
        let g = cache_geometry(60, 0, SLAB_RED_ZONE, false, 2).unwrap();
        assert_eq!((g.inuse, g.size), (64, 80));

        // Objects smaller than a word move the pointer out.
        let g = cache_geometry(4, 0, SLAB_RED_ZONE, false, 2).unwrap();
        assert_eq!((g.inuse, g.offset), (8, 8));
        assert_eq!(g.size, 8 + 8 + 8 + 8);

        // The left red zone is rounded to the alignment.
        let g = cache_geometry(64, 64, SLAB_RED_ZONE, false, 2).unwrap();
        assert_eq!(g.red_left_pad, 64);
        assert_eq!(g.size, 192); // 72 + 8 + 64 = 144 -> 192
    }

    #[test]
    fn store_user_and_full_debug_layout() {
        let g = cache_geometry(64, 0, SLAB_STORE_USER, false, 2).unwrap();
        assert_eq!(g.size, 64 + 2 * TRACK_SIZE);
        assert_eq!(g.track_offset(), Some(64));
        assert_eq!(g.orig_size_offset(), None);
        assert_eq!(g.ksize(), 64);

        // kmalloc-64 with slub_debug=FZPU: Z and U with SLAB_KMALLOC move the
        // pointer out, orig_size follows the tracks.
        let f = SLAB_KMALLOC | SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER;
        let g = cache_geometry(64, 64, f | SLAB_CONSISTENCY_CHECKS, false, 2).unwrap();
        assert_eq!(g.inuse, 72);
        assert_eq!(g.offset, 72);
        assert_eq!(g.track_offset(), Some(80));
        assert_eq!(g.orig_size_offset(), Some(80 + 64));
        assert_eq!(g.red_left_pad, 64);
        // 72 + 8 + 64 + 4 + 8 + 64 = 220 -> 256
        assert_eq!(g.size, 256);
        assert!(g.object_poison());
    }

    #[test]
    fn alignment() {
        assert_eq!(calculate_alignment(SlabFlags::NONE, 0, 1), 8);
        assert_eq!(calculate_alignment(SlabFlags::NONE, 4, 1), 8);
        assert_eq!(calculate_alignment(SlabFlags::NONE, 256, 1), 256);
        assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 8), 8);
        assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 9), 16);
        assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 32), 32);
        assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 33), 64);
        let g = cache_geometry(1, 0, SLAB_HWCACHE_ALIGN, false, 2).unwrap();
        assert_eq!((g.align, g.size), (8, 8));
    }

    #[test]
    fn order_selection() {
        assert_eq!(default_min_objects(0), 4);
        assert_eq!(default_min_objects(4), 16);
        // 2 CPUs: min_objects 12.
        assert_eq!(calculate_order(8, 2), Ok(0));
        assert_eq!(calculate_order(512, 2), Ok(1));
        assert_eq!(calculate_order(2048, 2), Ok(3));
        assert_eq!(calculate_order(4096, 2), Ok(3));
        // 1232 bytes: 12 objects need order 2, which wastes 368 <= 16384 / 16.
        assert_eq!(calculate_order(1232, 2), Ok(2));
        // Above slab_max_order: get_order(size), up to MAX_PAGE_ORDER.
        assert_eq!(calculate_order(40000, 2), Ok(4));
        assert_eq!(calculate_order(MAX_OBJECT_SIZE, 2), Ok(10));
        assert_eq!(
            calculate_order(MAX_OBJECT_SIZE + 1, 2),
            Err(Error::InvalidArgument)
        );
        assert_eq!(calculate_order(usize::MAX, 2), Err(Error::InvalidArgument));
        assert_eq!(calculate_order(0, 2), Err(Error::InvalidArgument));
        assert_eq!(calculate_order(64, 0), Err(Error::InvalidArgument));
        // More CPUs, bigger slabs.
        assert_eq!(calculate_order(256, 1), Ok(0));
        assert_eq!(calculate_order(256, 64), Ok(1)); // 4 * (7 + 1) = 32 objects: 8 KiB
    }

    #[test]
    fn order_with_boot_parameters() {
        let p = SlubParams::new(2, 0, 0).unwrap();
        assert_eq!(p.max_order, 2);
        assert_eq!(calculate_order_with(64, 2, &p), Ok(2));
        let p = SlubParams::new(0, 3, 1).unwrap();
        assert_eq!(calculate_order_with(1024, 2, &p), Ok(0));
        // Too many tiny objects for slab->objects: order backs off.
        let p = SlubParams::new(10, 10, 0).unwrap();
        assert_eq!(calculate_order_with(8, 2, &p), Ok(5)); // get_order(8 * 32767) - 1
        assert!(SlubParams::new(11, 11, 0).is_err());
        let bad = SlubParams {
            min_order: 3,
            max_order: 1,
            min_objects: 0,
        };
        assert_eq!(
            calculate_order_with(64, 2, &bad),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn calc_slab_order_edges() {
        assert_eq!(calc_slab_order(0, 0, 3, 16), u32::MAX);
        assert_eq!(calc_slab_order(64, 0, 3, 0), u32::MAX);
        assert_eq!(calc_slab_order(64, 5, 3, 16), 5);
        // 3000 bytes: 1096 left of 4096 (> 256), 2192 of 8192 (> 512),
        // 1384 of 16384 (> 1024), 2768 of 32768 (> 2048): none at 1/16.
        assert_eq!(calc_slab_order(3000, 0, 3, 16), 4);
        assert_eq!(calc_slab_order(3000, 0, 3, 2), 0);
    }

    #[test]
    fn invalid_arguments_never_panic() {
        let e = Err(Error::InvalidArgument);
        assert_eq!(cache_geometry(0, 0, SlabFlags::NONE, false, 2), e);
        assert_eq!(
            cache_geometry(MAX_OBJECT_SIZE + 1, 0, SlabFlags::NONE, false, 2),
            e
        );
        assert_eq!(cache_geometry(usize::MAX, 0, SlabFlags::NONE, false, 2), e);
        assert_eq!(cache_geometry(64, 3, SlabFlags::NONE, false, 2), e);
        assert_eq!(cache_geometry(64, usize::MAX, SlabFlags::NONE, false, 2), e);
        assert_eq!(cache_geometry(64, 1 << 40, SlabFlags::NONE, false, 2), e);
        assert_eq!(cache_geometry(64, 0, SlabFlags::NONE, false, 0), e);
        assert_eq!(cache_geometry(64, 0, SLAB_OBJECT_POISON, false, 2), e);
        assert_eq!(cache_geometry(64, 0, SLAB_CMPXCHG_DOUBLE, false, 2), e);
        assert_eq!(
            cache_geometry(64, 0, SlabFlags::from_bits(1 << 31), false, 2),
            e
        );
        // The largest object fits an order-10 block; one word more does not.
        let g = cache_geometry(MAX_OBJECT_SIZE, 0, SlabFlags::NONE, false, 2).unwrap();
        assert_eq!((g.order, g.objects), (10, 1));
        assert_eq!(
            cache_geometry(MAX_OBJECT_SIZE, 0, SlabFlags::NONE, true, 2),
            e
        );
        assert_eq!(
            cache_geometry(MAX_OBJECT_SIZE, 0, SLAB_RED_ZONE, false, 2),
            e
        );
        let args = CacheArgs {
            object_size: 64,
            align: 0,
            flags: SlabFlags::NONE,
            has_ctor: false,
            freeptr_offset: None,
        };
        assert_eq!(calculate_sizes(&args, 2), e);
    }

    #[test]
    fn allocflags_follow_cache_flags() {
        use crate::gfp::{__GFP_COMP, __GFP_RECLAIMABLE, GFP_DMA, GFP_DMA32};
        assert_eq!(plain(64).allocflags, __GFP_COMP);
        let g = cache_geometry(64, 0, SLAB_CACHE_DMA, false, 2).unwrap();
        assert_eq!(g.allocflags, __GFP_COMP | GFP_DMA);
        let g = cache_geometry(64, 0, SLAB_CACHE_DMA32, false, 2).unwrap();
        assert_eq!(g.allocflags, __GFP_COMP | GFP_DMA32);
        let g = cache_geometry(64, 0, SLAB_RECLAIM_ACCOUNT, false, 2).unwrap();
        assert_eq!(g.allocflags, __GFP_COMP | __GFP_RECLAIMABLE);
    }

    #[test]
    fn min_fallback_and_leftover() {
        let g = plain(1024);
        assert_eq!((g.order, g.objects), (2, 16));
        assert_eq!((g.min_order, g.min_objects), (0, 4));
        assert_eq!(g.pages_per_slab(), 4);
        assert_eq!(g.leftover(), 0);
        let g = plain(100);
        assert_eq!(g.leftover(), 4096 - 39 * 104);
    }
}
