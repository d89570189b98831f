//! # SLUB: the slab allocator (`mm/slub.c`)
//!
//! Linux carves pages from the buddy allocator into *slabs* of equal-sized
//! objects, one `struct kmem_cache` per object type. Since 6.8 the only slab
//! allocator left in Linux is SLUB (SLOB went in 6.4, SLAB in 6.8), and this
//! module follows it: `mm/slub.c`, `mm/slab_common.c`, `mm/slab.h` and
//! `include/linux/slab.h`.
//!
//! The files follow SLUB's seams:
//!
//! | file | Linux | what |
//! |---|---|---|
//! | `mod.rs` | `include/linux/slab.h` | the cache flags ([`SlabFlags`]) and poison bytes |
//! | [`geometry`] | `calculate_sizes()`, `calculate_order()` | where the free pointer, red zones and tracking sit; pages and objects per slab |
//! | [`cache`] | `struct kmem_cache` | the cache, its per-node state, the boot options |
//! | `slab_common.rs` | `mm/slab_common.c` | create, merge, shrink, destroy, the walk over all caches |
//! | [`sheaf`] | sheaves and barns of `mm/slub.c` | the per-CPU fast-path arrays and their exchange |
//! | `partial.rs` | `struct slab`, partial lists | slabs from and back to the page allocator, freelists |
//! | `alloc.rs`, `free.rs` | `slab_alloc_node()`, `slab_free()` | the fast and slow paths |
//! | `debug.rs` | `slab_debug=` | red zones, poison, owner tracking, consistency checks |
//! | [`failslab`] | `mm/failslab.c` | injected allocation failures |
//!
//! The kmalloc size classes and their caches are in [`crate::kmalloc`].
//!
//! # Flag values
//!
//! Since Linux 6.9 the `SLAB_*` flags are no longer written by hand: the
//! `enum _slab_flag_bits` of `include/linux/slab.h` numbers them, and some
//! entries exist only under a config option, so **the bit values depend on
//! the configuration**. kmem targets Linux 6.18 on x86_64 with:
//!
//! | option | value | effect on the enum |
//! |---|---|---|
//! | `CONFIG_DEBUG_OBJECTS` | n | no `_SLAB_DEBUG_OBJECTS` bit; [`SLAB_DEBUG_OBJECTS`] is 0 |
//! | `CONFIG_FAILSLAB` | y | `_SLAB_FAILSLAB` has a bit (fault injection, [`crate::fault_inject`]) |
//! | `CONFIG_MEMCG` | y | `_SLAB_ACCOUNT` has a bit |
//! | `CONFIG_KASAN_GENERIC` | n | no `_SLAB_KASAN` bit; [`SLAB_KASAN`] is 0 |
//! | `CONFIG_KFENCE` | y | `_SLAB_SKIP_KFENCE` has a bit (as in distribution kernels) |
//! | `CONFIG_SLUB_TINY` | n | `_SLAB_RECLAIM_ACCOUNT` has a bit |
//! | `CONFIG_SLAB_OBJ_EXT` | y (selected by `CONFIG_MEMCG`) | `_SLAB_NO_OBJ_EXT` has a bit |
//!
//! Linux itself says the values are internal (the enum's introduction
//! "renumbers the flag values, which is OK as they are only used
//! internally"); what matters to a caller is the name. Flags that a disabled
//! option turns off are `SlabFlags(0)` here, as `__SLAB_FLAG_UNUSED` makes
//! them in Linux, so passing them is harmless.
//!
//! # Locking
//!
//! A node's lists (`list_lock`, with its barn) and a cache's sheaf pool
//! are taken with interrupts off, as Linux takes `n->list_lock` with
//! `spin_lock_irqsave()` ([`IrqSpinGuard`](crate::platform::IrqSpinGuard)):
//! `kfree()` and `kmalloc(GFP_ATOMIC)` run in interrupt handlers. The
//! per-CPU sheaves are touched only inside their CPU's section.
//!
//! # Poison bytes
//!
//! [`POISON_INUSE`], [`POISON_FREE`], [`POISON_END`] come from
//! `include/linux/poison.h`; [`SLUB_RED_INACTIVE`] and [`SLUB_RED_ACTIVE`]
//! from the same file (the SLUB red zone markers). They are only written when
//! `SLAB_POISON` / `SLAB_RED_ZONE` debugging is on for a cache.

mod alloc;
pub mod cache;
mod debug;
pub mod failslab;
mod free;
pub mod geometry;
mod partial;
pub mod sheaf;
mod slab_common;

pub use cache::{
    parse_slab_debug, Ctor, KmemCache, KmemCacheArgs, ObjDivisor, SlabDebug, SlabParams,
    SLAB_DEBUG_MAX,
};

use core::fmt;
use core::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not};

/// Cache creation flags (`slab_flags_t`), as passed to `kmem_cache_create()`.
///
/// ```
/// use kmem::slab::{SlabFlags, SLAB_HWCACHE_ALIGN, SLAB_PANIC};
///
/// let f = SLAB_HWCACHE_ALIGN | SLAB_PANIC;
/// assert!(f.contains(SLAB_PANIC));
/// assert_eq!(f.without(SLAB_PANIC), SLAB_HWCACHE_ALIGN);
/// assert_eq!(format!("{:?}", f), "SlabFlags(HWCACHE_ALIGN|PANIC)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct SlabFlags(u32);

impl SlabFlags {
    /// No flags.
    pub const NONE: SlabFlags = SlabFlags(0);

    /// Builds a flag set from raw bits (no check; see [`SlabFlags::is_known`]).
    pub const fn from_bits(bits: u32) -> Self {
        SlabFlags(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// `true` if every flag of `other` is set in `self`.
    pub const fn contains(self, other: SlabFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `true` if any flag of `other` is set in `self`.
    pub const fn intersects(self, other: SlabFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// `self | other`, usable in `const` context.
    pub const fn union(self, other: SlabFlags) -> SlabFlags {
        SlabFlags(self.0 | other.0)
    }

    /// `self & !other`, usable in `const` context.
    pub const fn without(self, other: SlabFlags) -> SlabFlags {
        SlabFlags(self.0 & !other.0)
    }

    /// `true` if no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `true` if every set bit is one of the flags this module defines
    /// (`SLAB_FLAG_MASK` in Linux: all bits below `_SLAB_FLAGS_LAST_BIT`).
    pub const fn is_known(self) -> bool {
        self.0 & !SLAB_FLAG_MASK.0 == 0
    }
}

impl BitOr for SlabFlags {
    type Output = SlabFlags;
    fn bitor(self, rhs: SlabFlags) -> SlabFlags {
        self.union(rhs)
    }
}

impl BitAnd for SlabFlags {
    type Output = SlabFlags;
    fn bitand(self, rhs: SlabFlags) -> SlabFlags {
        SlabFlags(self.0 & rhs.0)
    }
}

impl Not for SlabFlags {
    type Output = SlabFlags;
    fn not(self) -> SlabFlags {
        SlabFlags(!self.0)
    }
}

impl BitOrAssign for SlabFlags {
    fn bitor_assign(&mut self, rhs: SlabFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAndAssign for SlabFlags {
    fn bitand_assign(&mut self, rhs: SlabFlags) {
        self.0 &= rhs.0;
    }
}

impl fmt::Debug for SlabFlags {
    /// Prints the flag names without the `SLAB_` prefix, in bit order, as
    /// `/sys/kernel/slab` and `%pGs` do; unknown bits are printed in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SlabFlags(")?;
        let mut rest = self.0;
        let mut first = true;
        for &(name, flag) in SLAB_FLAG_NAMES {
            if flag.0 != 0 && rest & flag.0 == flag.0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        } else if first {
            f.write_str("0")?;
        }
        f.write_str(")")
    }
}

// Bit numbers of `enum _slab_flag_bits` under the configuration in the
// module docs. Each `#ifdef`ed entry that is compiled in takes the next bit.
mod bit {
    pub const CONSISTENCY_CHECKS: u32 = 0;
    pub const RED_ZONE: u32 = 1;
    pub const POISON: u32 = 2;
    pub const KMALLOC: u32 = 3;
    pub const HWCACHE_ALIGN: u32 = 4;
    pub const CACHE_DMA: u32 = 5;
    pub const CACHE_DMA32: u32 = 6;
    pub const STORE_USER: u32 = 7;
    pub const PANIC: u32 = 8;
    pub const TYPESAFE_BY_RCU: u32 = 9;
    pub const TRACE: u32 = 10;
    // _SLAB_DEBUG_OBJECTS: CONFIG_DEBUG_OBJECTS=n
    pub const NOLEAKTRACE: u32 = 11;
    pub const NO_MERGE: u32 = 12;
    pub const FAILSLAB: u32 = 13; // CONFIG_FAILSLAB=y
    pub const ACCOUNT: u32 = 14; // CONFIG_MEMCG=y
                                 // _SLAB_KASAN: CONFIG_KASAN_GENERIC=n
    pub const NO_USER_FLAGS: u32 = 15;
    pub const SKIP_KFENCE: u32 = 16; // CONFIG_KFENCE=y
    pub const RECLAIM_ACCOUNT: u32 = 17; // CONFIG_SLUB_TINY=n
    pub const OBJECT_POISON: u32 = 18;
    pub const CMPXCHG_DOUBLE: u32 = 19;
    pub const NO_OBJ_EXT: u32 = 20; // CONFIG_SLAB_OBJ_EXT=y
    pub const LAST: u32 = 21;
}

const fn flag(nr: u32) -> SlabFlags {
    SlabFlags(1 << nr)
}

/// DEBUG: perform (expensive) consistency checks on alloc/free.
pub const SLAB_CONSISTENCY_CHECKS: SlabFlags = flag(bit::CONSISTENCY_CHECKS);
/// DEBUG: red zone objects (guard bytes before and after each object).
pub const SLAB_RED_ZONE: SlabFlags = flag(bit::RED_ZONE);
/// DEBUG: poison free objects with [`POISON_FREE`] / [`POISON_END`].
pub const SLAB_POISON: SlabFlags = flag(bit::POISON);
/// The cache is a kmalloc cache (set by `create_kmalloc_cache()`).
pub const SLAB_KMALLOC: SlabFlags = flag(bit::KMALLOC);
/// Align objects on cache lines (see [`geometry::calculate_alignment`]).
pub const SLAB_HWCACHE_ALIGN: SlabFlags = flag(bit::HWCACHE_ALIGN);
/// Take slab pages from `ZONE_DMA` (adds `GFP_DMA` to the slab's allocflags).
pub const SLAB_CACHE_DMA: SlabFlags = flag(bit::CACHE_DMA);
/// Take slab pages from `ZONE_DMA32` (adds `GFP_DMA32`).
pub const SLAB_CACHE_DMA32: SlabFlags = flag(bit::CACHE_DMA32);
/// DEBUG: store the last owner (alloc and free `struct track`) after each object.
pub const SLAB_STORE_USER: SlabFlags = flag(bit::STORE_USER);
/// Panic if the cache cannot be created.
pub const SLAB_PANIC: SlabFlags = flag(bit::PANIC);
/// Delay freeing the slab *pages* by an RCU grace period (not the objects):
/// an object may be reused at once, but its memory stays of this type.
pub const SLAB_TYPESAFE_BY_RCU: SlabFlags = flag(bit::TYPESAFE_BY_RCU);
/// DEBUG: trace allocations and frees.
pub const SLAB_TRACE: SlabFlags = flag(bit::TRACE);
/// Let debugobjects check freed objects: 0 here (`CONFIG_DEBUG_OBJECTS=n`).
pub const SLAB_DEBUG_OBJECTS: SlabFlags = SlabFlags(0);
/// Keep kmemleak from tracking the objects.
pub const SLAB_NOLEAKTRACE: SlabFlags = flag(bit::NOLEAKTRACE);
/// Never merge this cache with a compatible one.
pub const SLAB_NO_MERGE: SlabFlags = flag(bit::NO_MERGE);
/// Fault-injection mark: with failslab's `cache-filter` on, only caches
/// with this flag fail (see [`crate::fault_inject`]); `slab_debug=A` sets
/// it on every cache. Such a cache is never merged.
pub const SLAB_FAILSLAB: SlabFlags = flag(bit::FAILSLAB);
/// Account every object to the allocating task's memory cgroup.
pub const SLAB_ACCOUNT: SlabFlags = flag(bit::ACCOUNT);
/// KASAN metadata in the cache: 0 here (no `CONFIG_KASAN_GENERIC`).
pub const SLAB_KASAN: SlabFlags = SlabFlags(0);
/// Ignore user-specified debugging flags (the boot caches use it).
pub const SLAB_NO_USER_FLAGS: SlabFlags = flag(bit::NO_USER_FLAGS);
/// Never hand this cache's objects to KFENCE.
pub const SLAB_SKIP_KFENCE: SlabFlags = flag(bit::SKIP_KFENCE);
/// Objects are reclaimable (counted as `SReclaimable`; slab pages get
/// `__GFP_RECLAIMABLE`).
pub const SLAB_RECLAIM_ACCOUNT: SlabFlags = flag(bit::RECLAIM_ACCOUNT);
/// Objects are short-lived: an alias of [`SLAB_RECLAIM_ACCOUNT`].
pub const SLAB_TEMPORARY: SlabFlags = SLAB_RECLAIM_ACCOUNT;
/// Internal (`__OBJECT_POISON`): set by `calculate_sizes()` when the object
/// itself may be poisoned. Not accepted from callers.
pub const SLAB_OBJECT_POISON: SlabFlags = flag(bit::OBJECT_POISON);
/// Internal (`__CMPXCHG_DOUBLE`): the freelist may be updated with a
/// double-word cmpxchg. Not accepted from callers.
pub const SLAB_CMPXCHG_DOUBLE: SlabFlags = flag(bit::CMPXCHG_DOUBLE);
/// Do not allocate per-object extension vectors (`slabobj_ext`) for this
/// cache: used by the boot caches `kmem_cache` and `kmem_cache_node`.
pub const SLAB_NO_OBJ_EXT: SlabFlags = flag(bit::NO_OBJ_EXT);

/// Every flag bit defined here (`SLAB_FLAG_MASK`).
pub const SLAB_FLAG_MASK: SlabFlags = SlabFlags((1 << bit::LAST) - 1);

/// The debugging flags (`SLAB_DEBUG_FLAGS` of `mm/slab.h` under
/// `CONFIG_SLUB_DEBUG`): a cache with any of them leaves the fast paths.
pub const SLAB_DEBUG_FLAGS: SlabFlags = SLAB_RED_ZONE
    .union(SLAB_POISON)
    .union(SLAB_STORE_USER)
    .union(SLAB_TRACE)
    .union(SLAB_CONSISTENCY_CHECKS);

/// Flags only the allocator sets; [`geometry::calculate_sizes`] refuses them.
pub const SLAB_INTERNAL_FLAGS: SlabFlags = SLAB_OBJECT_POISON.union(SLAB_CMPXCHG_DOUBLE);

/// Flag names in bit order, without the `SLAB_` prefix (as `%pGs` prints them).
pub const SLAB_FLAG_NAMES: &[(&str, SlabFlags)] = &[
    ("CONSISTENCY_CHECKS", SLAB_CONSISTENCY_CHECKS),
    ("RED_ZONE", SLAB_RED_ZONE),
    ("POISON", SLAB_POISON),
    ("KMALLOC", SLAB_KMALLOC),
    ("HWCACHE_ALIGN", SLAB_HWCACHE_ALIGN),
    ("CACHE_DMA", SLAB_CACHE_DMA),
    ("CACHE_DMA32", SLAB_CACHE_DMA32),
    ("STORE_USER", SLAB_STORE_USER),
    ("PANIC", SLAB_PANIC),
    ("TYPESAFE_BY_RCU", SLAB_TYPESAFE_BY_RCU),
    ("TRACE", SLAB_TRACE),
    ("NOLEAKTRACE", SLAB_NOLEAKTRACE),
    ("NO_MERGE", SLAB_NO_MERGE),
    ("FAILSLAB", SLAB_FAILSLAB),
    ("ACCOUNT", SLAB_ACCOUNT),
    ("NO_USER_FLAGS", SLAB_NO_USER_FLAGS),
    ("SKIP_KFENCE", SLAB_SKIP_KFENCE),
    ("RECLAIM_ACCOUNT", SLAB_RECLAIM_ACCOUNT),
    ("OBJECT_POISON", SLAB_OBJECT_POISON),
    ("CMPXCHG_DOUBLE", SLAB_CMPXCHG_DOUBLE),
    ("NO_OBJ_EXT", SLAB_NO_OBJ_EXT),
];

// ---------------------------------------------------------------------------

/// A `SLAB_*` flag name from an older kernel and what became of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacySlabFlag {
    /// The old name (`"SLAB_NO_REAP"`).
    pub name: &'static str,
    /// The value it had in the old `include/linux/slab.h`.
    pub old_value: u32,
    /// What it means today: always [`SlabFlags::NONE`], the flags are accepted
    /// as no-ops.
    pub now: SlabFlags,
    /// What happened to it.
    pub note: &'static str,
}

/// The old cache flags the seed documents use.
///
/// | name | old value | what became of it | today |
/// |---|---|---|---|
/// | `SLAB_NO_REAP` | `0x1000` | removed in 2.6.x: the cache reaper already ignored it | no-op |
/// | `SLAB_CTOR_CONSTRUCTOR` | `0x001` | a *constructor* flag (passed to the ctor, not to `kmem_cache_create()`); removed in 2.6.x when constructors stopped taking flags | no-op |
/// | `SLAB_CTOR_ATOMIC` | `0x002` | constructor flag "may not sleep"; removed with the ctor flags argument in 2.6.x | no-op |
///
/// The exact 2.6 releases were not checked against public sources; the
/// flags do not exist in any kernel since 2.6.24's constructor signature
/// `void (*ctor)(void *)`.
///
/// [`SLAB_NO_REAP`], [`SLAB_CTOR_CONSTRUCTOR`] and [`SLAB_CTOR_ATOMIC`] are
/// exported as `SlabFlags(0)` so that code written against the old names
/// compiles and behaves as a modern kernel would.
pub const LEGACY_SLAB_FLAGS: &[LegacySlabFlag] = &[
    LegacySlabFlag {
        name: "SLAB_NO_REAP",
        old_value: 0x0000_1000,
        now: SlabFlags::NONE,
        note: "Asked the SLAB allocator's cache reaper to leave the cache alone. \
               Removed during 2.6.x after the reaper stopped honouring it; SLUB \
               never had a reaper. Accepted as a no-op.",
    },
    LegacySlabFlag {
        name: "SLAB_CTOR_CONSTRUCTOR",
        old_value: 0x001,
        now: SlabFlags::NONE,
        note: "Told a constructor it was called to construct (not to verify) \
               an object. Removed during 2.6.x together with the constructor's \
               flags argument. Accepted as a no-op.",
    },
    LegacySlabFlag {
        name: "SLAB_CTOR_ATOMIC",
        old_value: 0x002,
        now: SlabFlags::NONE,
        note: "Told a constructor it must not sleep. Removed during 2.6.x \
               together with the constructor's flags argument. Accepted as a \
               no-op.",
    },
];

/// Old flag, now a no-op (see [`LEGACY_SLAB_FLAGS`]).
pub const SLAB_NO_REAP: SlabFlags = SlabFlags::NONE;
/// Old constructor flag, now a no-op (see [`LEGACY_SLAB_FLAGS`]).
pub const SLAB_CTOR_CONSTRUCTOR: SlabFlags = SlabFlags::NONE;
/// Old constructor flag, now a no-op (see [`LEGACY_SLAB_FLAGS`]).
pub const SLAB_CTOR_ATOMIC: SlabFlags = SlabFlags::NONE;

// ---------------------------------------------------------------------------

/// Byte written over a whole new slab when `SLAB_POISON` is on (`POISON_INUSE`).
pub const POISON_INUSE: u8 = 0x5a;
/// Byte written over a free object when `SLAB_POISON` is on (`POISON_FREE`).
pub const POISON_FREE: u8 = 0x6b;
/// Last byte of a poisoned free object (`POISON_END`).
pub const POISON_END: u8 = 0xa5;
/// Red zone byte around a free object (`SLUB_RED_INACTIVE`).
pub const SLUB_RED_INACTIVE: u8 = 0xbb;
/// Red zone byte around an allocated object (`SLUB_RED_ACTIVE`).
pub const SLUB_RED_ACTIVE: u8 = 0xcc;

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn bit_values_follow_the_6_18_enum() {
        assert_eq!(SLAB_CONSISTENCY_CHECKS.bits(), 1 << 0);
        assert_eq!(SLAB_KMALLOC.bits(), 1 << 3);
        assert_eq!(SLAB_HWCACHE_ALIGN.bits(), 1 << 4);
        assert_eq!(SLAB_TYPESAFE_BY_RCU.bits(), 1 << 9);
        assert_eq!(SLAB_NO_MERGE.bits(), 1 << 12);
        assert_eq!(SLAB_FAILSLAB.bits(), 1 << 13);
        assert_eq!(SLAB_ACCOUNT.bits(), 1 << 14);
        assert_eq!(SLAB_RECLAIM_ACCOUNT.bits(), 1 << 17);
        assert_eq!(SLAB_NO_OBJ_EXT.bits(), 1 << 20);
        assert_eq!(SLAB_TEMPORARY, SLAB_RECLAIM_ACCOUNT);
    }

    #[test]
    fn names_cover_every_bit_once() {
        let mut all = 0u32;
        for &(_, f) in SLAB_FLAG_NAMES {
            assert_eq!(f.bits().count_ones(), 1);
            assert_eq!(all & f.bits(), 0);
            all |= f.bits();
        }
        assert_eq!(all, SLAB_FLAG_MASK.bits());
    }

    #[test]
    fn legacy_flags_are_no_ops() {
        let f = SLAB_HWCACHE_ALIGN | SLAB_NO_REAP | SLAB_CTOR_ATOMIC | SLAB_CTOR_CONSTRUCTOR;
        assert_eq!(f, SLAB_HWCACHE_ALIGN);
        assert!(LEGACY_SLAB_FLAGS.iter().all(|l| l.now.is_empty()));
    }

    #[test]
    fn debug_format() {
        assert_eq!(format!("{:?}", SlabFlags::NONE), "SlabFlags(0)");
        assert_eq!(
            format!("{:?}", SLAB_KMALLOC | SlabFlags::from_bits(1 << 30)),
            "SlabFlags(KMALLOC|0x40000000)"
        );
        assert!(!SlabFlags::from_bits(1 << 30).is_known());
    }
}
