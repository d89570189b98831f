//! GFP ("get free pages") flags: how an allocation may be satisfied.
//!
//! Every allocation in kmem carries a [`Gfp`] value, exactly as every
//! allocation in Linux carries a `gfp_t`. The flags say which zones may be
//! used ([`gfp_zone`]), which pageblocks the page should be grouped with
//! ([`gfp_migratetype`]), whether the caller may sleep and reclaim
//! ([`Gfp::allows_blocking`]), whether emergency reserves may be touched, and
//! so on.
//!
//! # Where the facts come from
//!
//! The target is **Linux 6.18 on x86_64 with `CONFIG_MEMCG=y`** (which selects
//! `CONFIG_SLAB_OBJ_EXT`), **without `CONFIG_KASAN_HW_TAGS` and without
//! `CONFIG_LOCKDEP`**. Under that configuration:
//!
//! * The bit values follow the `___GFP_*_BIT` enum of
//!   `include/linux/gfp_types.h`. Bit 9 (`0x200`, `___GFP_UNUSED_BIT`, the old
//!   `__GFP_ATOMIC`) is unused. `__GFP_ZEROTAGS` is bit 23. The two KASAN bits
//!   (`__GFP_SKIP_ZERO`, `__GFP_SKIP_KASAN`) and `__GFP_NOLOCKDEP` have no bit
//!   (Linux defines them as `0`), so this module leaves them out rather than
//!   exporting zero-valued flags. `__GFP_NO_OBJ_EXT` therefore takes the next
//!   bit, 24 (`0x1000000`), and `__GFP_BITS_SHIFT` is 25.
//! * The composites (`GFP_KERNEL`, `GFP_NOWAIT`...) are those of the same
//!   file. Note that `GFP_NOWAIT` includes `__GFP_NOWARN` in 6.18, and that
//!   `GFP_HIGHUSER_MOVABLE` contains no `__GFP_SKIP_KASAN` bit here.
//! * [`gfp_zone`] follows `GFP_ZONE_TABLE`/`GFP_ZONE_BAD`, and
//!   [`gfp_migratetype`], [`Gfp::allows_blocking`], [`Gfp::allows_spinning`],
//!   [`Gfp::has_io_fs`] and [`Gfp::compaction_allowed`] follow the helpers of
//!   `include/linux/gfp.h`; [`GFP_RECLAIM_MASK`], [`GFP_BOOT_MASK`] and
//!   [`GFP_CONSTRAINT_MASK`] come from `mm/internal.h`; [`Gfp::with_nofs`] and
//!   [`Gfp::with_noio`] are the two narrowings of `current_gfp_context()` in
//!   `include/linux/sched/mm.h`.
//! * The text form ([`Display`](core::fmt::Display), [`Gfp::parse`]) is the
//!   one ftrace prints through `show_gfp_flags()`, driven by the
//!   `__def_gfpflag_names` table of `include/trace/events/mmflags.h`. The
//!   table is [`GFP_FLAG_NAMES`], in Linux's order.
//!
//! Older kernels had flags that no longer exist (`__GFP_WAIT`,
//! `__GFP_NO_KSWAPD`...). They are gathered, with the release that changed
//! each one, in [`LEGACY_FLAGS`]; the parser accepts them so that old traces
//! and old documentation can still be read.
//!
//! # Names
//!
//! The constants keep Linux's spelling, leading underscores included, as
//! Rust-for-Linux does (`kernel::alloc::flags::__GFP_ZERO`): a kernel developer
//! should find `__GFP_NORETRY` under that name.
//!
//! ```
//! use kmem::gfp::{Gfp, GFP_KERNEL, __GFP_FS, __GFP_IO, __GFP_RECLAIM, __GFP_ZERO};
//!
//! assert_eq!(GFP_KERNEL, __GFP_RECLAIM | __GFP_IO | __GFP_FS);
//! let flags: Gfp = "GFP_KERNEL|__GFP_ZERO".parse().unwrap();
//! assert_eq!(flags, GFP_KERNEL | __GFP_ZERO);
//! assert_eq!(flags.to_string(), "GFP_KERNEL|__GFP_ZERO");
//! ```

use core::fmt;
use core::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not};
use core::str::FromStr;

use crate::error::Error;
use crate::mmzone::{MigrateType, ZoneType};

/// A set of GFP flags (`gfp_t`).
///
/// A thin wrapper around the 32-bit mask Linux uses. The operators `|`, `&`
/// and `!` work as on `gfp_t` in C; [`Gfp::without`] is `flags & ~other`.
///
/// [`Display`](core::fmt::Display) prints the ftrace form and
/// [`Debug`](core::fmt::Debug) wraps it in `Gfp(...)`:
///
/// ```
/// use kmem::gfp::{GFP_KERNEL, __GFP_ZERO};
///
/// let flags = GFP_KERNEL | __GFP_ZERO;
/// assert_eq!(format!("{flags}"), "GFP_KERNEL|__GFP_ZERO");
/// assert_eq!(format!("{flags:?}"), "Gfp(GFP_KERNEL|__GFP_ZERO)");
/// assert_eq!(format!("{flags:#x}"), "0xdc0");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Gfp(u32);

impl Gfp {
    /// The empty set (what ftrace prints as `none`).
    pub const NONE: Gfp = Gfp(0);

    /// Wraps a raw mask. Every bit is kept, even those Linux does not define,
    /// so that a value read from a trace survives unchanged.
    #[inline]
    pub const fn from_bits(bits: u32) -> Self {
        Gfp(bits)
    }

    /// The raw mask.
    #[inline]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True if every bit of `other` is set in `self` (Linux's
    /// `gfp_has_flags()`). An empty `other` is always contained.
    ///
    /// ```
    /// use kmem::gfp::{GFP_KERNEL, GFP_NOFS, __GFP_FS};
    ///
    /// assert!(GFP_KERNEL.contains(GFP_NOFS));
    /// assert!(!GFP_NOFS.contains(__GFP_FS));
    /// ```
    #[inline]
    pub const fn contains(self, other: Gfp) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if at least one bit of `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: Gfp) -> bool {
        self.0 & other.0 != 0
    }

    /// `self | other`, usable in `const` context.
    #[inline]
    pub const fn union(self, other: Gfp) -> Gfp {
        Gfp(self.0 | other.0)
    }

    /// `self & !other`: the flags of `self` with those of `other` cleared.
    #[inline]
    pub const fn without(self, other: Gfp) -> Gfp {
        Gfp(self.0 & !other.0)
    }

    /// True if no bit is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `gfpflags_allow_blocking()`: the caller may sleep, because it allows
    /// direct reclaim (`__GFP_DIRECT_RECLAIM`).
    ///
    /// ```
    /// use kmem::gfp::{GFP_ATOMIC, GFP_KERNEL, GFP_NOIO, GFP_NOWAIT};
    ///
    /// assert!(GFP_KERNEL.allows_blocking());
    /// assert!(GFP_NOIO.allows_blocking());
    /// assert!(!GFP_ATOMIC.allows_blocking());
    /// assert!(!GFP_NOWAIT.allows_blocking());
    /// ```
    #[inline]
    pub const fn allows_blocking(self) -> bool {
        self.intersects(__GFP_DIRECT_RECLAIM)
    }

    /// `gfpflags_allow_spinning()`: the caller may spin on locks, which every
    /// ordinary request does (each one carries at least one of the two reclaim
    /// bits). Only `alloc_pages_nolock()` passes neither bit and must be
    /// served with trylocks alone.
    #[inline]
    pub const fn allows_spinning(self) -> bool {
        self.intersects(__GFP_RECLAIM)
    }

    /// The allocation may wake kswapd when a zone falls below its low
    /// watermark (`__GFP_KSWAPD_RECLAIM`). Linux has no named helper for this;
    /// the page allocator tests the bit directly when it builds its
    /// `ALLOC_KSWAPD` allocation flag.
    #[inline]
    pub const fn allows_kswapd(self) -> bool {
        self.intersects(__GFP_KSWAPD_RECLAIM)
    }

    /// `gfp_has_io_fs()`: both `__GFP_IO` and `__GFP_FS` are set, so reclaim
    /// may start I/O and call into filesystems.
    #[inline]
    pub const fn has_io_fs(self) -> bool {
        self.contains(__GFP_IO.union(__GFP_FS))
    }

    /// `gfp_compaction_allowed()`: compaction may run for this request, which
    /// needs `__GFP_IO` because migrating a page may require I/O. Linux also
    /// requires `CONFIG_COMPACTION`, which x86_64 kernels have; kmem assumes
    /// it.
    #[inline]
    pub const fn compaction_allowed(self) -> bool {
        self.intersects(__GFP_IO)
    }

    /// The narrowing `current_gfp_context()` applies inside a
    /// `memalloc_nofs_save()` scope: `__GFP_FS` cleared.
    ///
    /// ```
    /// use kmem::gfp::{GFP_KERNEL, GFP_NOFS};
    ///
    /// assert_eq!(GFP_KERNEL.with_nofs(), GFP_NOFS);
    /// ```
    #[inline]
    pub const fn with_nofs(self) -> Gfp {
        self.without(__GFP_FS)
    }

    /// The narrowing `current_gfp_context()` applies inside a
    /// `memalloc_noio_save()` scope: `__GFP_IO` and `__GFP_FS` cleared.
    ///
    /// ```
    /// use kmem::gfp::{GFP_KERNEL, GFP_NOIO};
    ///
    /// assert_eq!(GFP_KERNEL.with_noio(), GFP_NOIO);
    /// ```
    #[inline]
    pub const fn with_noio(self) -> Gfp {
        self.without(__GFP_IO.union(__GFP_FS))
    }

    /// Parses the ftrace text form (see [`GFP_FLAG_NAMES`]).
    ///
    /// The input is a `|`-separated list of tokens (spaces around a token are
    /// ignored). A token is a composite name (`GFP_KERNEL`), a single flag
    /// name (`__GFP_ZERO`), `__GFP_RECLAIM`, a hexadecimal leftover
    /// (`0x200`), or a legacy name from [`LEGACY_FLAGS`]. The whole input may
    /// also be `none`, the empty set.
    ///
    /// Legacy names are applied after everything else: the bits they set are
    /// added, then the bits they clear are removed, wherever they stand in the
    /// list.
    ///
    /// ```
    /// use kmem::gfp::{Gfp, GFP_KERNEL, __GFP_KSWAPD_RECLAIM, ParseGfpErrorKind};
    ///
    /// assert_eq!(Gfp::parse("none"), Ok(Gfp::NONE));
    /// assert_eq!(
    ///     Gfp::parse("GFP_KERNEL|__GFP_NO_KSWAPD"),
    ///     Ok(GFP_KERNEL.without(__GFP_KSWAPD_RECLAIM))
    /// );
    /// let err = Gfp::parse("GFP_KERNEL|__GFP_BOGUS").unwrap_err();
    /// assert_eq!(err.kind(), ParseGfpErrorKind::UnknownName);
    /// assert_eq!(err.token(), "__GFP_BOGUS");
    /// ```
    pub fn parse(s: &str) -> Result<Gfp, ParseGfpError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseGfpError::new(ParseGfpErrorKind::Empty, s));
        }
        if s == "none" {
            return Ok(Gfp::NONE);
        }
        let mut sets = 0u32;
        let mut clears = 0u32;
        for raw in s.split('|') {
            let token = raw.trim();
            if token.is_empty() {
                return Err(ParseGfpError::new(ParseGfpErrorKind::EmptyToken, s));
            }
            if let Some(digits) = token
                .strip_prefix("0x")
                .or_else(|| token.strip_prefix("0X"))
            {
                match u32::from_str_radix(digits, 16) {
                    // `from_str_radix` accepts a leading `+`; a hex leftover
                    // never has one.
                    Ok(v) if !digits.starts_with('+') => sets |= v,
                    _ => return Err(ParseGfpError::new(ParseGfpErrorKind::BadHex, token)),
                }
            } else if let Some(&(_, flags)) = GFP_FLAG_NAMES.iter().find(|(n, _)| *n == token) {
                sets |= flags.0;
            } else if let Some(old) = legacy(token) {
                sets |= old.sets.0;
                clears |= old.clears.0;
            } else {
                return Err(ParseGfpError::new(ParseGfpErrorKind::UnknownName, token));
            }
        }
        Ok(Gfp(sets & !clears))
    }
}

impl BitOr for Gfp {
    type Output = Gfp;
    #[inline]
    fn bitor(self, rhs: Gfp) -> Gfp {
        Gfp(self.0 | rhs.0)
    }
}

impl BitAnd for Gfp {
    type Output = Gfp;
    #[inline]
    fn bitand(self, rhs: Gfp) -> Gfp {
        Gfp(self.0 & rhs.0)
    }
}

impl Not for Gfp {
    type Output = Gfp;
    #[inline]
    fn not(self) -> Gfp {
        Gfp(!self.0)
    }
}

impl BitOrAssign for Gfp {
    #[inline]
    fn bitor_assign(&mut self, rhs: Gfp) {
        self.0 |= rhs.0;
    }
}

impl BitAndAssign for Gfp {
    #[inline]
    fn bitand_assign(&mut self, rhs: Gfp) {
        self.0 &= rhs.0;
    }
}

/// The ftrace form, as `show_gfp_flags()` prints it: walk
/// [`GFP_FLAG_NAMES`] in order, print each entry whose bits are all present
/// and remove those bits, then print what is left as `0x...`; the empty set
/// prints as `none`.
impl fmt::Display for Gfp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let mut left = self.0;
        let mut first = true;
        for &(name, flags) in GFP_FLAG_NAMES {
            if left == 0 {
                break;
            }
            if left & flags.0 == flags.0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                left &= !flags.0;
            }
        }
        if left != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{left:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Gfp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gfp({self})")
    }
}

/// The raw mask in hex, as Linux prints `mode:%#x` next to `%pGg`.
impl fmt::LowerHex for Gfp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl fmt::UpperHex for Gfp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::UpperHex::fmt(&self.0, f)
    }
}

impl FromStr for Gfp {
    type Err = ParseGfpError;

    /// Same as [`Gfp::parse`].
    fn from_str(s: &str) -> Result<Gfp, ParseGfpError> {
        Gfp::parse(s)
    }
}

impl From<Gfp> for u32 {
    fn from(flags: Gfp) -> u32 {
        flags.0
    }
}

// ---------------------------------------------------------------------------
// Single flags (`___GFP_*_BIT` of include/linux/gfp_types.h).
// ---------------------------------------------------------------------------

const fn bit(n: u32) -> Gfp {
    Gfp(1 << n)
}

/// Zone modifier: allocate from `ZONE_DMA` (below 16 MiB on x86). Bit 0.
pub const __GFP_DMA: Gfp = bit(0);
/// Zone modifier: `ZONE_HIGHMEM` may be used. Bit 1.
pub const __GFP_HIGHMEM: Gfp = bit(1);
/// Zone modifier: allocate from `ZONE_DMA32` (below 4 GiB). Bit 2.
pub const __GFP_DMA32: Gfp = bit(2);
/// The page can be moved by migration or reclaimed: a zone modifier
/// (`ZONE_MOVABLE` allowed, together with `__GFP_HIGHMEM`) and a mobility
/// hint (`MIGRATE_MOVABLE`). Bit 3.
pub const __GFP_MOVABLE: Gfp = bit(3);
/// Mobility hint: slab pages that shrinkers can free
/// (`SLAB_RECLAIM_ACCOUNT`), grouped as `MIGRATE_RECLAIMABLE`. Bit 4.
pub const __GFP_RECLAIMABLE: Gfp = bit(4);
/// Watermark modifier: high priority, may dip below the min watermark
/// (`ALLOC_MIN_RESERVE`). Bit 5.
pub const __GFP_HIGH: Gfp = bit(5);
/// Reclaim may start physical I/O. Bit 6.
pub const __GFP_IO: Gfp = bit(6);
/// Reclaim may call into filesystems. Bit 7.
pub const __GFP_FS: Gfp = bit(7);
/// Return zeroed memory. Bit 8.
pub const __GFP_ZERO: Gfp = bit(8);
// Bit 9 (0x200) is ___GFP_UNUSED_BIT, formerly __GFP_ATOMIC.
/// The caller may enter direct reclaim (and therefore sleep). Bit 10.
pub const __GFP_DIRECT_RECLAIM: Gfp = bit(10);
/// Wake kswapd when the low watermark is reached. Bit 11.
pub const __GFP_KSWAPD_RECLAIM: Gfp = bit(11);
/// The caller intends to dirty the page (spread dirty pages across zones).
/// Bit 12.
pub const __GFP_WRITE: Gfp = bit(12);
/// Do not print an allocation failure report. Bit 13.
pub const __GFP_NOWARN: Gfp = bit(13);
/// Retry reclaim while there is progress, but fail rather than invoke the
/// OOM killer. Bit 14.
pub const __GFP_RETRY_MAYFAIL: Gfp = bit(14);
/// Never fail: retry forever. Bit 15.
pub const __GFP_NOFAIL: Gfp = bit(15);
/// Try only lightweight reclaim and fail early; never invoke the OOM killer.
/// Bit 16.
pub const __GFP_NORETRY: Gfp = bit(16);
/// Access all memory, ignoring watermarks (for callers that free memory).
/// Bit 17.
pub const __GFP_MEMALLOC: Gfp = bit(17);
/// Build compound-page metadata (a "folio"). Bit 18.
pub const __GFP_COMP: Gfp = bit(18);
/// Never use emergency reserves; wins over `__GFP_MEMALLOC`. Bit 19.
pub const __GFP_NOMEMALLOC: Gfp = bit(19);
/// Enforce the cpuset memory policy. Bit 20.
pub const __GFP_HARDWALL: Gfp = bit(20);
/// Allocate from the requested node only, with no fallback. Bit 21.
pub const __GFP_THISNODE: Gfp = bit(21);
/// Charge the allocation to the memory cgroup (kmemcg). Bit 22.
pub const __GFP_ACCOUNT: Gfp = bit(22);
/// Zero memory tags together with the memory (arm64 MTE; no effect on
/// x86_64, but the bit exists in every configuration). Bit 23.
pub const __GFP_ZEROTAGS: Gfp = bit(23);
/// Slab: do not allocate an object extension vector for this allocation
/// (prevents recursion in memcg/allocation-profiling bookkeeping). Its bit
/// exists because `CONFIG_MEMCG=y` selects `CONFIG_SLAB_OBJ_EXT`; with the
/// KASAN and lockdep bits absent it is bit 24.
pub const __GFP_NO_OBJ_EXT: Gfp = bit(24);

/// Number of GFP bits in this configuration (`__GFP_BITS_SHIFT`, which is
/// `___GFP_LAST_BIT`).
pub const __GFP_BITS_SHIFT: u32 = 25;
/// All defined GFP bits, the unused bit 9 included (`__GFP_BITS_MASK`).
pub const __GFP_BITS_MASK: Gfp = Gfp((1 << __GFP_BITS_SHIFT) - 1);

// ---------------------------------------------------------------------------
// Masks.
// ---------------------------------------------------------------------------

/// Both reclaim bits: direct reclaim and waking kswapd.
pub const __GFP_RECLAIM: Gfp = __GFP_DIRECT_RECLAIM.union(__GFP_KSWAPD_RECLAIM);
/// The four zone modifier bits, the index into [`gfp_zone`]'s table.
pub const GFP_ZONEMASK: Gfp = __GFP_DMA
    .union(__GFP_HIGHMEM)
    .union(__GFP_DMA32)
    .union(__GFP_MOVABLE);
/// The two mobility bits that select the migratetype (`include/linux/gfp.h`,
/// private to `gfp_migratetype()` there).
pub const GFP_MOVABLE_MASK: Gfp = __GFP_RECLAIMABLE.union(__GFP_MOVABLE);
/// Shift that turns [`GFP_MOVABLE_MASK`] bits into a migratetype number.
pub const GFP_MOVABLE_SHIFT: u32 = 3;
/// Flags that only affect watermark checks and reclaim behaviour, not
/// placement (`mm/internal.h`). Its `__GFP_NOLOCKDEP` member has no bit in
/// this configuration.
pub const GFP_RECLAIM_MASK: Gfp = __GFP_RECLAIM
    .union(__GFP_HIGH)
    .union(__GFP_IO)
    .union(__GFP_FS)
    .union(__GFP_NOWARN)
    .union(__GFP_RETRY_MAYFAIL)
    .union(__GFP_NOFAIL)
    .union(__GFP_NORETRY)
    .union(__GFP_MEMALLOC)
    .union(__GFP_NOMEMALLOC);
/// Flags allowed during early boot, before reclaim and I/O work
/// (`mm/internal.h`): everything but reclaim, I/O and FS.
pub const GFP_BOOT_MASK: Gfp =
    __GFP_BITS_MASK.without(__GFP_RECLAIM.union(__GFP_IO).union(__GFP_FS));
/// Cpuset and node placement constraints (`mm/internal.h`).
pub const GFP_CONSTRAINT_MASK: Gfp = __GFP_HARDWALL.union(__GFP_THISNODE);

// ---------------------------------------------------------------------------
// Composites (the "useful GFP flag combinations" of gfp_types.h).
// ---------------------------------------------------------------------------

/// Cannot sleep, must succeed if at all possible: high priority plus kswapd.
pub const GFP_ATOMIC: Gfp = __GFP_HIGH.union(__GFP_KSWAPD_RECLAIM);
/// The usual kernel allocation: may reclaim, start I/O and enter filesystems.
pub const GFP_KERNEL: Gfp = __GFP_RECLAIM.union(__GFP_IO).union(__GFP_FS);
/// [`GFP_KERNEL`] charged to the memory cgroup.
pub const GFP_KERNEL_ACCOUNT: Gfp = GFP_KERNEL.union(__GFP_ACCOUNT);
/// No direct reclaim, no I/O, no FS; wakes kswapd and, since Linux 6.18,
/// implies `__GFP_NOWARN` (failure is expected and not reported).
pub const GFP_NOWAIT: Gfp = __GFP_KSWAPD_RECLAIM.union(__GFP_NOWARN);
/// May reclaim but not start I/O.
pub const GFP_NOIO: Gfp = __GFP_RECLAIM;
/// May reclaim and start I/O but not enter filesystems.
pub const GFP_NOFS: Gfp = __GFP_RECLAIM.union(__GFP_IO);
/// Userspace allocations the kernel also accesses; cpuset enforced.
pub const GFP_USER: Gfp = __GFP_RECLAIM
    .union(__GFP_IO)
    .union(__GFP_FS)
    .union(__GFP_HARDWALL);
/// `ZONE_DMA` (historical; avoid).
pub const GFP_DMA: Gfp = __GFP_DMA;
/// `ZONE_DMA32`.
pub const GFP_DMA32: Gfp = __GFP_DMA32;
/// Userspace pages that may live in highmem but cannot move.
pub const GFP_HIGHUSER: Gfp = GFP_USER.union(__GFP_HIGHMEM);
/// Userspace pages that may live in highmem and can move (LRU pages). Linux
/// also ORs in `__GFP_SKIP_KASAN`, which has no bit in this configuration.
pub const GFP_HIGHUSER_MOVABLE: Gfp = GFP_HIGHUSER.union(__GFP_MOVABLE);
/// Transparent huge pages in the fault path: compound, no reserves, no
/// warning, and no reclaim at all.
pub const GFP_TRANSHUGE_LIGHT: Gfp = GFP_HIGHUSER_MOVABLE
    .union(__GFP_COMP)
    .union(__GFP_NOMEMALLOC)
    .union(__GFP_NOWARN)
    .without(__GFP_RECLAIM);
/// Transparent huge pages for khugepaged: [`GFP_TRANSHUGE_LIGHT`] plus
/// direct reclaim/compaction.
pub const GFP_TRANSHUGE: Gfp = GFP_TRANSHUGE_LIGHT.union(__GFP_DIRECT_RECLAIM);

/// The ftrace name table, `__def_gfpflag_names` of
/// `include/trace/events/mmflags.h`, in Linux's order: the composites (most
/// bits first), `__GFP_RECLAIM`, then every single flag that has a bit in this
/// configuration (`TRACE_GFP_FLAGS`: the general flags, no KASAN or lockdep
/// flags, then `__GFP_NO_OBJ_EXT` for `CONFIG_SLAB_OBJ_EXT`).
///
/// The order matters: [`Display`](core::fmt::Display) takes the first entry
/// whose bits are all present, so `GFP_KERNEL|__GFP_HARDWALL` is printed as
/// `GFP_USER`.
pub const GFP_FLAG_NAMES: &[(&str, Gfp)] = &[
    ("GFP_TRANSHUGE", GFP_TRANSHUGE),
    ("GFP_TRANSHUGE_LIGHT", GFP_TRANSHUGE_LIGHT),
    ("GFP_HIGHUSER_MOVABLE", GFP_HIGHUSER_MOVABLE),
    ("GFP_HIGHUSER", GFP_HIGHUSER),
    ("GFP_USER", GFP_USER),
    ("GFP_KERNEL_ACCOUNT", GFP_KERNEL_ACCOUNT),
    ("GFP_KERNEL", GFP_KERNEL),
    ("GFP_NOFS", GFP_NOFS),
    ("GFP_ATOMIC", GFP_ATOMIC),
    ("GFP_NOIO", GFP_NOIO),
    ("GFP_NOWAIT", GFP_NOWAIT),
    ("GFP_DMA", GFP_DMA),
    ("GFP_DMA32", GFP_DMA32),
    ("__GFP_RECLAIM", __GFP_RECLAIM),
    ("__GFP_DMA", __GFP_DMA),
    ("__GFP_HIGHMEM", __GFP_HIGHMEM),
    ("__GFP_DMA32", __GFP_DMA32),
    ("__GFP_MOVABLE", __GFP_MOVABLE),
    ("__GFP_RECLAIMABLE", __GFP_RECLAIMABLE),
    ("__GFP_HIGH", __GFP_HIGH),
    ("__GFP_IO", __GFP_IO),
    ("__GFP_FS", __GFP_FS),
    ("__GFP_ZERO", __GFP_ZERO),
    ("__GFP_DIRECT_RECLAIM", __GFP_DIRECT_RECLAIM),
    ("__GFP_KSWAPD_RECLAIM", __GFP_KSWAPD_RECLAIM),
    ("__GFP_WRITE", __GFP_WRITE),
    ("__GFP_NOWARN", __GFP_NOWARN),
    ("__GFP_RETRY_MAYFAIL", __GFP_RETRY_MAYFAIL),
    ("__GFP_NOFAIL", __GFP_NOFAIL),
    ("__GFP_NORETRY", __GFP_NORETRY),
    ("__GFP_MEMALLOC", __GFP_MEMALLOC),
    ("__GFP_COMP", __GFP_COMP),
    ("__GFP_NOMEMALLOC", __GFP_NOMEMALLOC),
    ("__GFP_HARDWALL", __GFP_HARDWALL),
    ("__GFP_THISNODE", __GFP_THISNODE),
    ("__GFP_ACCOUNT", __GFP_ACCOUNT),
    ("__GFP_ZEROTAGS", __GFP_ZEROTAGS),
    ("__GFP_NO_OBJ_EXT", __GFP_NO_OBJ_EXT),
];

// ---------------------------------------------------------------------------
// Zone and migratetype.
// ---------------------------------------------------------------------------

/// `gfp_zone()`: the highest zone an allocation with these flags may use.
///
/// Only the four zone bits ([`GFP_ZONEMASK`]) matter, as in Linux's
/// `GFP_ZONE_TABLE`:
///
/// | zone bits | zone |
/// |---|---|
/// | none | `Normal` |
/// | `__GFP_DMA` | `Dma` |
/// | `__GFP_HIGHMEM` | `HighMem` |
/// | `__GFP_DMA32` | `Dma32` |
/// | `__GFP_MOVABLE` | `Normal` |
/// | `__GFP_MOVABLE\|__GFP_DMA` | `Dma` |
/// | `__GFP_MOVABLE\|__GFP_HIGHMEM` | `Movable` |
/// | `__GFP_MOVABLE\|__GFP_DMA32` | `Dma32` |
///
/// Any two of `__GFP_DMA`, `__GFP_HIGHMEM` and `__GFP_DMA32` together (with
/// or without `__GFP_MOVABLE`) are the `GFP_ZONE_BAD` combinations: Linux hits
/// `VM_BUG_ON`, kmem returns [`Error::InvalidArgument`].
///
/// The result is the *logical* zone type. Linux compiles the machine's
/// missing zones into the table (`OPT_ZONE_HIGHMEM` is `ZONE_NORMAL` without
/// `CONFIG_HIGHMEM`, `OPT_ZONE_DMA32` is `ZONE_NORMAL` without
/// `CONFIG_ZONE_DMA32`); kmem decides the machine layout at boot, so here a
/// machine without a HighMem zone treats `HighMem` as `Normal` and one
/// without DMA32 treats `Dma32` as `Normal`. That mapping is done by the page
/// allocator, not by this function.
///
/// ```
/// use kmem::gfp::{gfp_zone, GFP_HIGHUSER_MOVABLE, GFP_KERNEL, __GFP_DMA, __GFP_DMA32};
/// use kmem::mmzone::ZoneType;
///
/// assert_eq!(gfp_zone(GFP_KERNEL), Ok(ZoneType::Normal));
/// assert_eq!(gfp_zone(GFP_HIGHUSER_MOVABLE), Ok(ZoneType::Movable));
/// assert_eq!(gfp_zone(__GFP_DMA | __GFP_DMA32), Err(kmem::Error::InvalidArgument));
/// ```
pub const fn gfp_zone(flags: Gfp) -> Result<ZoneType, Error> {
    const DMA: u32 = __GFP_DMA.0;
    const HIGHMEM: u32 = __GFP_HIGHMEM.0;
    const DMA32: u32 = __GFP_DMA32.0;
    const MOVABLE: u32 = __GFP_MOVABLE.0;
    match flags.0 & GFP_ZONEMASK.0 {
        0 => Ok(ZoneType::Normal),
        DMA => Ok(ZoneType::Dma),
        HIGHMEM => Ok(ZoneType::HighMem),
        DMA32 => Ok(ZoneType::Dma32),
        MOVABLE => Ok(ZoneType::Normal),
        x if x == MOVABLE | DMA => Ok(ZoneType::Dma),
        x if x == MOVABLE | HIGHMEM => Ok(ZoneType::Movable),
        x if x == MOVABLE | DMA32 => Ok(ZoneType::Dma32),
        _ => Err(Error::InvalidArgument),
    }
}

/// `gfp_migratetype()`: the pageblock type the page is grouped with.
///
/// `__GFP_MOVABLE` gives `Movable`, `__GFP_RECLAIMABLE` gives `Reclaimable`,
/// neither gives `Unmovable`. Both at once is a caller bug (Linux warns with
/// `VM_WARN_ON` and would compute `MIGRATE_HIGHATOMIC`); kmem returns
/// [`Error::InvalidArgument`].
///
/// Linux returns `MIGRATE_UNMOVABLE` for everything while
/// `page_group_by_mobility_disabled` is set (very small machines); that is a
/// property of the machine, left to the page allocator.
///
/// ```
/// use kmem::gfp::{gfp_migratetype, GFP_HIGHUSER_MOVABLE, GFP_KERNEL};
/// use kmem::mmzone::MigrateType;
///
/// assert_eq!(gfp_migratetype(GFP_KERNEL), Ok(MigrateType::Unmovable));
/// assert_eq!(gfp_migratetype(GFP_HIGHUSER_MOVABLE), Ok(MigrateType::Movable));
/// ```
pub const fn gfp_migratetype(flags: Gfp) -> Result<MigrateType, Error> {
    match (flags.0 & GFP_MOVABLE_MASK.0) >> GFP_MOVABLE_SHIFT {
        0 => Ok(MigrateType::Unmovable),
        1 => Ok(MigrateType::Movable),
        2 => Ok(MigrateType::Reclaimable),
        _ => Err(Error::InvalidArgument),
    }
}

// ---------------------------------------------------------------------------
// Legacy flags.
// ---------------------------------------------------------------------------

/// A GFP flag name from an older kernel, and what it means in today's flags.
///
/// Reading it: a request written with `name` corresponds today to the
/// request with `sets` added and then `clears` removed. A flag that was
/// removed without replacement has both empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyFlag {
    /// The old name, as it appeared in code and traces (`"__GFP_WAIT"`).
    pub name: &'static str,
    /// Modern flags the old name stands for.
    pub sets: Gfp,
    /// Modern flags the old name turned off (for "negative" flags such as
    /// `__GFP_NO_KSWAPD`).
    pub clears: Gfp,
    /// The Linux release in which the flag was renamed or removed.
    pub linux: &'static str,
    /// What happened, and how sure the `linux` version is.
    pub note: &'static str,
}

/// The older GFP names the seed documents use, with their modern meaning.
///
/// | name | sets | clears | changed in |
/// |---|---|---|---|
/// | `__GFP_WAIT` | `__GFP_RECLAIM` | | 4.4 |
/// | `__GFP_NO_KSWAPD` | | `__GFP_KSWAPD_RECLAIM` | 4.4 |
/// | `__GFP_OTHER_NODE` | | | 4.10 |
/// | `__GFP_REPEAT` | `__GFP_RETRY_MAYFAIL` | | 4.13 |
/// | `__GFP_COLD` | | | 4.15 |
/// | `__GFP_NOTRACK` | | | 4.15 |
/// | `__GFP_ATOMIC` | | `__GFP_DIRECT_RECLAIM` | 6.3 |
///
/// Each entry's `note` says which versions were checked against public
/// sources and which are believed.
pub const LEGACY_FLAGS: &[LegacyFlag] = &[
    LegacyFlag {
        name: "__GFP_WAIT",
        sets: __GFP_RECLAIM,
        clears: Gfp::NONE,
        linux: "4.4",
        note: "The caller may sleep (old bit 0x10). Linux 4.4 split it into \
               __GFP_DIRECT_RECLAIM and __GFP_KSWAPD_RECLAIM (commit d0164adc89f6) \
               and renamed what was left to __GFP_RECLAIM (commit 71baba4b92dc). \
               Checked: both commit messages; the release is the 4.4 merge window.",
    },
    LegacyFlag {
        name: "__GFP_NO_KSWAPD",
        sets: Gfp::NONE,
        clears: __GFP_KSWAPD_RECLAIM,
        linux: "4.4",
        note: "Do not wake kswapd (old bit 0x400000, used for THP). Removed by \
               commit d0164adc89f6 in Linux 4.4: callers now clear \
               __GFP_KSWAPD_RECLAIM instead, which is what this entry does. \
               Checked against the commit message.",
    },
    LegacyFlag {
        name: "__GFP_OTHER_NODE",
        sets: Gfp::NONE,
        clears: Gfp::NONE,
        linux: "4.10",
        note: "Account the allocation as done on behalf of another node (NUMA \
               statistics only, used by khugepaged). Removed by 'mm: get rid of \
               __GFP_OTHER_NODE', posted 2 January 2017 after a fix that made it \
               unnecessary. Believed merged during the 4.10-rc cycle; the posting \
               date was checked, the release tag was not. No effect today.",
    },
    LegacyFlag {
        name: "__GFP_REPEAT",
        sets: __GFP_RETRY_MAYFAIL,
        clears: Gfp::NONE,
        linux: "4.13",
        note: "Try hard for costly orders, may fail. Replaced tree-wide by \
               __GFP_RETRY_MAYFAIL, which gives that meaning to every order. The \
               series was posted in June 2017 against linux-next for the next merge \
               window, hence 4.13 (believed, not checked against a tag).",
    },
    LegacyFlag {
        name: "__GFP_COLD",
        sets: Gfp::NONE,
        clears: Gfp::NONE,
        linux: "4.15",
        note: "Prefer a cache-cold page from the tail of the per-CPU list. Removed \
               by 'mm: remove __GFP_COLD' (Mel Gorman) because the distinction no \
               longer paid off; 4.15 is believed, not checked. No effect today.",
    },
    LegacyFlag {
        name: "__GFP_NOTRACK",
        sets: Gfp::NONE,
        clears: Gfp::NONE,
        linux: "4.15",
        note: "Do not track the page with kmemcheck. Removed together with \
               kmemcheck; 4.15 is believed, not checked. No effect today.",
    },
    LegacyFlag {
        name: "__GFP_ATOMIC",
        sets: Gfp::NONE,
        clears: __GFP_DIRECT_RECLAIM,
        linux: "6.3",
        note: "The caller cannot sleep and may use the atomic reserves (bit 0x200, \
               now unused). Removed by 'mm: discard __GFP_ATOMIC' (Mel Gorman, \
               January 2023; LWN 'GFP flags and the end of __GFP_ATOMIC'): the \
               allocator now infers it from a missing __GFP_DIRECT_RECLAIM, so this \
               entry clears that bit; GFP_ATOMIC became __GFP_HIGH|__GFP_KSWAPD_RECLAIM. \
               The mm/internal.h change was checked; 6.3 is believed.",
    },
];

/// Looks up an old flag name in [`LEGACY_FLAGS`].
///
/// ```
/// use kmem::gfp::{legacy, __GFP_RECLAIM};
///
/// assert_eq!(legacy("__GFP_WAIT").unwrap().sets, __GFP_RECLAIM);
/// assert!(legacy("__GFP_ZERO").is_none());
/// ```
pub fn legacy(name: &str) -> Option<&'static LegacyFlag> {
    LEGACY_FLAGS.iter().find(|l| l.name == name)
}

/// Deprecated name of [`__GFP_RECLAIM`].
#[deprecated(
    note = "__GFP_WAIT was split in Linux 4.4; use __GFP_RECLAIM (or __GFP_DIRECT_RECLAIM)"
)]
pub const __GFP_WAIT: Gfp = __GFP_RECLAIM;
/// Deprecated name of [`__GFP_RETRY_MAYFAIL`].
#[deprecated(note = "__GFP_REPEAT became __GFP_RETRY_MAYFAIL in Linux 4.13")]
pub const __GFP_REPEAT: Gfp = __GFP_RETRY_MAYFAIL;

// ---------------------------------------------------------------------------
// Parse errors.
// ---------------------------------------------------------------------------

/// What was wrong with a GFP string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseGfpErrorKind {
    /// The input was empty (or only spaces).
    Empty,
    /// Two `|` in a row, or a `|` at either end.
    EmptyToken,
    /// A name that is neither a current nor a legacy GFP name.
    UnknownName,
    /// A `0x` token whose digits are not hexadecimal or do not fit in 32 bits.
    BadHex,
}

/// Longest token kept in a [`ParseGfpError`]; longer ones are cut.
const TOKEN_CAP: usize = 48;

/// An error from [`Gfp::parse`], naming the offending token.
///
/// The token is copied into the error (up to 48 bytes, cut at a character
/// boundary) so the error does not borrow the input and needs no heap.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParseGfpError {
    kind: ParseGfpErrorKind,
    buf: [u8; TOKEN_CAP],
    len: u8,
    truncated: bool,
}

impl ParseGfpError {
    fn new(kind: ParseGfpErrorKind, token: &str) -> Self {
        let mut len = token.len().min(TOKEN_CAP);
        while !token.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0u8; TOKEN_CAP];
        buf[..len].copy_from_slice(&token.as_bytes()[..len]);
        ParseGfpError {
            kind,
            buf,
            len: len as u8,
            truncated: len < token.len(),
        }
    }

    /// What kind of error this is.
    pub const fn kind(&self) -> ParseGfpErrorKind {
        self.kind
    }

    /// The offending token (for [`ParseGfpErrorKind::EmptyToken`], the whole
    /// input), possibly cut; see [`ParseGfpError::is_truncated`].
    pub fn token(&self) -> &str {
        // `new` cuts at a character boundary, so this cannot fail.
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }

    /// True if [`ParseGfpError::token`] was cut to fit.
    pub const fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Debug for ParseGfpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParseGfpError")
            .field("kind", &self.kind)
            .field("token", &self.token())
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl fmt::Display for ParseGfpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let more = if self.truncated { "..." } else { "" };
        match self.kind {
            ParseGfpErrorKind::Empty => f.write_str("empty GFP flags string"),
            ParseGfpErrorKind::EmptyToken => {
                write!(f, "empty GFP flag name in \"{}{more}\"", self.token())
            }
            ParseGfpErrorKind::UnknownName => {
                write!(f, "unknown GFP flag \"{}{more}\"", self.token())
            }
            ParseGfpErrorKind::BadHex => {
                write!(f, "bad hexadecimal GFP value \"{}{more}\"", self.token())
            }
        }
    }
}

impl core::error::Error for ParseGfpError {}

impl From<ParseGfpError> for Error {
    /// A malformed flags string is an invalid argument (`-EINVAL`).
    fn from(_: ParseGfpError) -> Error {
        Error::InvalidArgument
    }
}

#[cfg(test)]
mod tests;
