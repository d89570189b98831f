//! The cache itself: `struct kmem_cache` and its per-node state, the
//! boot options and the per-machine slab state.

use super::geometry::CacheGeometry;
use super::sheaf::{CpuCache, SheafPool, SheafStack, CPUS_OFF};
use super::*;
use crate::mmzone::MAX_NUMNODES;
use crate::page::{Page, PageList};
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result, PAGE_SHIFT};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64};

/// Longest cache name kept (Linux allows any; `/proc/slabinfo` pads to 17).
pub const CACHE_NAME_LEN: usize = 32;
/// Aliases recorded per cache (merged `kmem_cache_create` calls).
pub const MAX_ALIASES: usize = 16;
/// `MIN_PARTIAL` and `MAX_PARTIAL`: bounds of `min_partial`.
pub(super) const MIN_PARTIAL: u64 = 5;
pub(super) const MAX_PARTIAL: u64 = 10;

/// A constructor, run once on each object when its slab is created.
pub type Ctor = fn(*mut u8);

pub(super) struct NodeLists {
    pub(super) partial: PageList,
    pub(super) nr_partial: u64,
    pub(super) full: PageList,
    pub(super) barn_full: SheafStack,
    pub(super) barn_empty: SheafStack,
}

/// A cache's per-node state (`struct kmem_cache_node`).
pub(crate) struct KmemCacheNode {
    pub(super) lists: spin::Mutex<NodeLists>,
    pub(super) nr_slabs: AtomicU64,
    pub(super) total_objects: AtomicU64,
    pub(super) nr_pages: AtomicU64,
}

/// A slab found from an address inside it: its head descriptor and the
/// direct-map address of its first byte.
#[derive(Clone, Copy)]
pub(crate) struct SlabRef<'a> {
    pub(crate) page: &'a Page,
    /// Address of the slab's first byte.
    pub(crate) base: usize,
    /// The slab's node (read with the flags that said "slab").
    pub(crate) nid: usize,
    /// The head's mem_map index (for the node's slab lists).
    pub(crate) idx: u32,
}

/// Exact division of an offset by the object size, for the one question
/// the free path asks of every pointer: is `off` a multiple `i * size` with
/// `i < objects`, and which `i`?
///
/// Linux's `obj_to_index()` multiplies by a reciprocal (`reciprocal_divide`)
/// and would then multiply back to check the remainder: two multiplications
/// in a row on the free path's dependency chain. kmem uses the
/// divisibility test by the modular inverse (Granlund and Montgomery 1994;
/// the form of Lemire, Kaser and Kurz 2019) instead, one multiplication and
/// a rotation. With `size = d << k`, `d` odd, and `inv * d ≡ 1 (mod 2^64)`:
///
/// `q = rotr(off * inv, k)` equals `off / size` when `size` divides `off`;
/// the map `off ↦ q` is a bijection of `u64` that sends the multiples
/// `0, size, 2·size, …` (there are `⌊(2^64 − 1) / size⌋ + 1` of them) onto
/// `0, 1, 2, …`, so every other offset lands above `⌊(2^64 − 1) / size⌋`,
/// which is at least `objects` (`objects * size` fits in a slab). Hence
/// `q < objects` ⇔ `off = q * size` with `q < objects`, exactly, for any
/// 64-bit `off`.
///
/// ```
/// # use kmem::slab::ObjDivisor;
/// let d = ObjDivisor::new(96);
/// assert_eq!(d.index(192, 42), Some(2));
/// assert_eq!(d.index(193, 42), None); // inside object 2
/// assert_eq!(d.index(96 * 42, 42), None); // past the last object
/// assert_eq!(d.index(0usize.wrapping_sub(96), 42), None); // before the first
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ObjDivisor {
    /// Inverse of the size's odd part modulo 2^64: `inv * (size >> shift) ≡ 1`.
    inv: u64,
    /// Trailing zero bits of the size: `size = odd << shift`.
    shift: u32,
}

impl ObjDivisor {
    /// The divisor for objects of `size` bytes (not zero).
    pub const fn new(size: usize) -> Self {
        assert!(size != 0, "object size 0");
        let shift = size.trailing_zeros();
        let d = (size >> shift) as u64;
        // Newton's iteration doubles the correct low bits each step; `d` is
        // its own inverse modulo 8 (3 bits), so five steps give 96 > 64.
        let mut inv = d;
        let mut i = 0;
        while i < 5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(d.wrapping_mul(inv)));
            i += 1;
        }
        Self { inv, shift }
    }

    /// `Some(off / size)` if `off` is a multiple of the size below
    /// `objects * size`, else `None`.
    #[inline]
    pub const fn index(&self, off: usize, objects: u32) -> Option<usize> {
        let q = (off as u64).wrapping_mul(self.inv).rotate_right(self.shift);
        if q < objects as u64 {
            Some(q as usize)
        } else {
            None
        }
    }
}

/// A slab cache (`struct kmem_cache`).
pub struct KmemCache {
    pub(super) name: [u8; CACHE_NAME_LEN],
    pub(super) name_len: usize,
    pub(crate) geo: CacheGeometry,
    pub(super) ctor: Option<Ctor>,
    /// Object index by one multiplication (Linux's `obj_to_index()`
    /// divides by a reciprocal; see [`ObjDivisor`]).
    pub(super) divisor: ObjDivisor,
    pub(super) debug: bool,
    pub(super) min_partial: u64,
    /// Objects per sheaf ([`sheaf_capacity`](super::sheaf::sheaf_capacity)).
    pub(super) sheaf_cap: usize,
    /// Freelist pointer obfuscation key; 0 when hardening is off.
    pub(super) random: u64,
    pub(super) randomize: bool,
    pub(super) refcount: AtomicU32,
    pub(super) aliases: spin::Mutex<(
        [[u8; CACHE_NAME_LEN]; MAX_ALIASES],
        [usize; MAX_ALIASES],
        usize,
    )>,
    pub(crate) next: AtomicPtr<KmemCache>,
    /// Sheaves no CPU or barn holds, carved from pages as needed.
    pub(super) sheaf_pool: spin::Mutex<SheafPool>,
    /// The shared empty sheaf CPUs without sheaves point at: read by the
    /// fast paths, never written.
    pub(super) empty_sheaf: *mut super::sheaf::Sheaf,
    pub(super) nr_cpus: usize,
    pub(super) nr_nodes: usize,
    pub(super) cpus: NonNull<CpuCache>,
    pub(super) nodes: NonNull<KmemCacheNode>,
    pub(super) meta_pfn: u64,
    pub(super) meta_order: u32,
}

// SAFETY: the raw pointers lead to the cache's own metadata block, which
// lives until destroy; shared state there is atomic, spin-locked, or per-CPU
// sheaves reached only inside their CPU's local section.
unsafe impl Sync for KmemCache {}
// SAFETY: as above.
unsafe impl Send for KmemCache {}

pub(super) fn copy_name(name: &str) -> ([u8; CACHE_NAME_LEN], usize) {
    let mut b = [0u8; CACHE_NAME_LEN];
    let mut n = name.len().min(CACHE_NAME_LEN);
    while !name.is_char_boundary(n) {
        n -= 1;
    }
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    (b, n)
}

impl KmemCache {
    /// The cache's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// The geometry (object layout and slab size).
    pub fn geometry(&self) -> &CacheGeometry {
        &self.geo
    }

    /// The cache flags in force (including boot-time debug flags).
    pub fn flags(&self) -> SlabFlags {
        self.geo.flags
    }

    /// The constructor objects get when their slab is created, if any.
    pub fn ctor(&self) -> Option<Ctor> {
        self.ctor
    }

    /// `kmem_cache_size()`: the usable object size.
    pub fn object_size(&self) -> usize {
        self.geo.object_size
    }

    /// Objects per sheaf ([`sheaf_capacity`](super::sheaf::sheaf_capacity)).
    pub fn sheaf_capacity(&self) -> usize {
        self.sheaf_cap
    }

    /// `min_partial`: empty slabs kept per node.
    pub fn min_partial(&self) -> u64 {
        self.min_partial
    }

    /// Names merged into this cache by `kmem_cache_create` (aliases).
    pub fn for_each_alias(&self, mut f: impl FnMut(&str)) {
        let a = self.aliases.lock();
        for i in 0..a.2 {
            f(core::str::from_utf8(&a.0[i][..a.1[i]]).unwrap_or("?"));
        }
    }

    /// Whether the debug paths are in use (no sheaves).
    #[inline]
    pub fn is_debug(&self) -> bool {
        self.debug
    }

    /// CPU `cpu`'s sheaves. `cpu` is a CPU id the platform gave (promise 3
    /// of [`Platform`]: below `nr_cpu_ids()`) or a loop index below it.
    #[inline]
    pub(super) fn cpu(&self, cpu: usize) -> &CpuCache {
        debug_assert!(cpu < self.nr_cpus);
        // SAFETY: `cpus` points at `nr_cpus` initialised CpuCache in the
        // cache's metadata block, which lives as long as the cache, and
        // `nr_cpus` is the platform's `nr_cpu_ids()`, constant for its
        // life, which every CPU id is below (the Platform contract). No
        // bounds check: this is on both fast paths.
        //
        // The address is computed from the cache's own, not loaded: the
        // sheaf slots follow the cache at CPUS_OFF in its block, so the
        // free path, which finds the cache through the page descriptor, has
        // one dependent load fewer. The pointer keeps the provenance of
        // `cpus`, which covers the block.
        unsafe {
            &*self
                .cpus
                .as_ptr()
                .with_addr(self as *const KmemCache as usize + CPUS_OFF)
                .add(cpu)
        }
    }

    #[inline]
    pub(super) fn node(&self, nid: usize) -> &KmemCacheNode {
        assert!(nid < self.nr_nodes);
        // SAFETY: as for `cpu`, with `nr_nodes` entries.
        unsafe { &*self.nodes.as_ptr().add(nid) }
    }

    /// The object at `x` in the slab whose first byte is `base`, if `x` is
    /// exactly an object start (`check_valid_pointer`).
    #[inline]
    pub(super) fn obj_index(&self, base: usize, objects: u32, x: usize) -> Option<usize> {
        // An address below the first object wraps around to a huge offset,
        // which is no multiple of the size below `objects` sizes: one test
        // covers both ends.
        let off = x.wrapping_sub(base + self.geo.red_left_pad);
        self.divisor.index(off, objects)
    }

    /// `check_valid_pointer()`, always on: whether `x` is an object start
    /// of `slab` (a slab of this cache). One multiplication by the size's
    /// inverse and one compare ([`ObjDivisor`]).
    #[inline]
    pub(crate) fn is_obj_start(&self, slab: SlabRef<'_>, x: *const u8) -> bool {
        self.obj_index(slab.base, slab.page.slab_objects(), x as usize)
            .is_some()
    }

    #[inline]
    pub(super) fn obj_addr(&self, base: usize, i: usize) -> usize {
        base + i * self.geo.size + self.geo.red_left_pad
    }

    /// Encode a free pointer stored at `at` (`freelist_ptr_encode`).
    #[inline]
    pub(super) fn encode(&self, next: usize, at: usize) -> u64 {
        if self.random == 0 {
            next as u64
        } else {
            next as u64 ^ self.random ^ (at as u64).swap_bytes()
        }
    }

    /// Read the free pointer of free object `obj`.
    #[inline]
    pub(super) fn get_fp(&self, obj: usize) -> usize {
        let at = obj + self.geo.offset;
        // SAFETY: `obj` is a free object of a slab of this cache, so the
        // word at `offset` holds its free pointer (the slot is ours).
        let raw = unsafe { ptr::read_unaligned(at as *const u64) };
        (raw ^ (self.encode(0, at))) as usize
    }

    /// Write the free pointer of free object `obj`.
    #[inline]
    pub(super) fn set_fp(&self, obj: usize, next: usize) {
        let at = obj + self.geo.offset;
        // SAFETY: as in get_fp: the slot belongs to a free object of ours.
        unsafe { ptr::write_unaligned(at as *mut u64, self.encode(next, at)) };
    }
}

/// Boot-time slab options (`slab_nomerge`, `slab_debug=`, hardening).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabParams {
    /// `slab_nomerge`: never merge caches.
    pub nomerge: bool,
    /// `slab_debug=`: debug flags for every cache or for named ones.
    pub debug: SlabDebug,
    /// `CONFIG_SLAB_FREELIST_HARDENED`: obfuscate free pointers.
    pub freelist_hardened: bool,
    /// `CONFIG_SLAB_FREELIST_RANDOM`: link new slabs' objects in random order.
    pub freelist_random: bool,
}

impl Default for SlabParams {
    fn default() -> Self {
        SlabParams {
            nomerge: false,
            debug: SlabDebug::NONE,
            freelist_hardened: true,
            freelist_random: false,
        }
    }
}

/// Parse `slab_debug=` option letters (`F` consistency checks, `Z` red
/// zone, `P` poison, `U` store user, `A` failslab; `-` turns off what came
/// before it) as Linux does.
///
/// ```
/// use kmem::slab::{cache::parse_slab_debug, SLAB_POISON, SLAB_RED_ZONE};
/// assert_eq!(parse_slab_debug("ZP").unwrap(), SLAB_RED_ZONE | SLAB_POISON);
/// assert!(parse_slab_debug("Q").is_err());
/// ```
pub fn parse_slab_debug(s: &str) -> Result<SlabFlags> {
    let mut f = SlabFlags::NONE;
    for c in s.chars() {
        f = match c.to_ascii_uppercase() {
            'F' => f | SLAB_CONSISTENCY_CHECKS,
            'Z' => f | SLAB_RED_ZONE,
            'P' => f | SLAB_POISON,
            'U' => f | SLAB_STORE_USER,
            'A' => f | SLAB_FAILSLAB,
            // Everything off, letters after it still count (`-Z`: Z only).
            '-' => SlabFlags::NONE,
            _ => return Err(Error::InvalidArgument),
        };
    }
    Ok(f)
}

/// The longest `slab_debug=` value kmem keeps (Linux keeps a pointer into
/// the command line; the core allocates nothing, so it keeps a copy).
pub const SLAB_DEBUG_MAX: usize = 256;

/// `slab_debug=` as Linux 6.18 reads it (`setup_slub_debug()`,
/// `kmem_cache_flags()`): blocks separated by `;`, each option letters
/// optionally followed by `,` and a list of cache names.
///
/// - A block without names sets the flags of every cache (the *global*
///   block; the last one wins). Without one, caches no list names get no
///   debugging.
/// - A block with names applies to the caches it names; a cache takes the
///   first such block that names it, instead of the global flags. A name
///   ending in `*` (more exactly: up to its first `*`) is a prefix:
///   `kmalloc-*`.
/// - Letters: `F` consistency checks, `Z` red zones, `P` poisoning, `U`
///   owner tracking, `A` failslab, `-` none. No letters before the names
///   (`,dentry`) means all of `FZPU`, as does an empty value (bare
///   `slab_debug`).
///
/// Where Linux skips what it does not know with an error line, kmem
/// refuses the whole value: a letter other than the above (Linux's `T` and
/// `O` are not implemented), an empty cache name, or more than
/// [`SLAB_DEBUG_MAX`] bytes.
///
/// ```
/// use kmem::slab::{SlabDebug, SLAB_CONSISTENCY_CHECKS, SLAB_POISON, SLAB_RED_ZONE};
/// let d = SlabDebug::parse("FZ;P,kmalloc-*;-,dentry").unwrap();
/// assert_eq!(d.flags_for("kmalloc-64"), SLAB_POISON);
/// assert_eq!(d.flags_for("dentry"), kmem::slab::SlabFlags::NONE);
/// assert_eq!(d.flags_for("inode_cache"), SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE);
/// assert!(SlabDebug::parse("Q").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SlabDebug {
    /// The flags of caches no list names (Linux's `slub_debug`).
    global: SlabFlags,
    /// The value's bytes (`slub_debug_string`), kept only when some block
    /// names caches: `text[..len]` is valid ASCII, checked by `parse`.
    text: [u8; SLAB_DEBUG_MAX],
    len: usize,
}

/// `DEBUG_DEFAULT_FLAGS`: what bare `slab_debug` and an empty letter list
/// before names turn on.
const DEBUG_DEFAULT_FLAGS: SlabFlags = SLAB_CONSISTENCY_CHECKS
    .union(SLAB_RED_ZONE)
    .union(SLAB_POISON)
    .union(SLAB_STORE_USER);

/// One block of a `slab_debug=` value: its flags and its name list, if it
/// has one.
fn slab_debug_blocks(s: &str) -> impl Iterator<Item = Result<(SlabFlags, Option<&str>)>> {
    s.split(';').filter(|b| !b.is_empty()).map(|b| {
        let (letters, names) = match b.split_once(',') {
            Some((l, n)) => (l, Some(n)),
            None => (b, None),
        };
        let flags = if letters.is_empty() && names.is_some() {
            DEBUG_DEFAULT_FLAGS
        } else {
            parse_slab_debug(letters)?
        };
        if names.is_some_and(|n| n.split(',').any(str::is_empty)) {
            return Err(Error::InvalidArgument);
        }
        Ok((flags, names))
    })
}

impl SlabDebug {
    /// No debugging (no `slab_debug=`).
    pub const NONE: SlabDebug = SlabDebug::all(SlabFlags::NONE);

    /// `flags` for every cache.
    pub const fn all(flags: SlabFlags) -> SlabDebug {
        SlabDebug {
            global: flags,
            text: [0; SLAB_DEBUG_MAX],
            len: 0,
        }
    }

    /// Parse the value of `slab_debug=` (see the type's docs).
    pub fn parse(s: &str) -> Result<SlabDebug> {
        if s.is_empty() {
            return Ok(SlabDebug::all(DEBUG_DEFAULT_FLAGS));
        }
        if s.len() > SLAB_DEBUG_MAX || !s.is_ascii() {
            return Err(Error::InvalidArgument);
        }
        let mut global = None;
        let mut lists = false;
        for block in slab_debug_blocks(s) {
            match block? {
                (f, None) => global = Some(f),
                (_, Some(_)) => lists = true,
            }
        }
        let mut d = SlabDebug::all(global.unwrap_or(SlabFlags::NONE));
        if lists {
            d.text[..s.len()].copy_from_slice(s.as_bytes());
            d.len = s.len();
        }
        Ok(d)
    }

    /// The debug flags of the cache called `name`: those of the first
    /// block whose list names it, else the global ones.
    pub fn flags_for(&self, name: &str) -> SlabFlags {
        self.listed_flags(name).unwrap_or(self.global)
    }

    /// `kmem_cache_flags()`: `flags` of a cache being created as `name`,
    /// with what `slab_debug=` adds. A cache created with
    /// `SLAB_NO_USER_FLAGS` takes nothing; one with `SLAB_NOLEAKTRACE` no
    /// owner tracking from the global flags (a list that names it still
    /// gives it).
    pub fn kmem_cache_flags(&self, flags: SlabFlags, name: &str) -> SlabFlags {
        if flags.contains(SLAB_NO_USER_FLAGS) {
            return flags;
        }
        match self.listed_flags(name) {
            Some(f) => flags | f,
            None if flags.contains(SLAB_NOLEAKTRACE) => {
                flags | self.global.without(SLAB_STORE_USER)
            }
            None => flags | self.global,
        }
    }

    /// The flags of the first block whose list names `name`.
    fn listed_flags(&self, name: &str) -> Option<SlabFlags> {
        // `parse` checked the text: ASCII, every block well formed.
        let text = core::str::from_utf8(&self.text[..self.len]).unwrap_or("");
        slab_debug_blocks(text)
            .flatten()
            .find_map(|(flags, names)| {
                names?
                    .split(',')
                    .any(|pat| match pat.split_once('*') {
                        Some((prefix, _)) => name.starts_with(prefix),
                        None => pat == name,
                    })
                    .then_some(flags)
            })
    }
}

impl core::fmt::Debug for SlabDebug {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SlabDebug")
            .field("global", &self.global)
            .field(
                "lists",
                &core::str::from_utf8(&self.text[..self.len]).unwrap_or(""),
            )
            .finish()
    }
}

/// Arguments of [`Kmem::kmem_cache_create_args`] (`struct kmem_cache_args`).
#[derive(Clone, Copy, Debug, Default)]
pub struct KmemCacheArgs {
    /// Required alignment (0: the default).
    pub align: usize,
    /// Where a `SLAB_TYPESAFE_BY_RCU` cache keeps its free pointer.
    pub freeptr_offset: Option<usize>,
    /// The constructor.
    pub ctor: Option<Ctor>,
}

/// The slab allocator's per-machine state.
pub(crate) struct SlabState {
    pub(crate) caches: spin::Mutex<*mut KmemCache>,
    pub(crate) params: SlabParams,
    /// Pages holding the caches' own metadata (`struct kmem_cache` & co).
    pub(crate) meta_pages: AtomicU64,
}

// SAFETY: the cache list is behind a spin lock; the pointers lead to caches
// that are Sync.
unsafe impl Sync for SlabState {}
// SAFETY: as above.
unsafe impl Send for SlabState {}

impl SlabState {
    pub(crate) const fn new(params: SlabParams) -> Self {
        SlabState {
            caches: spin::Mutex::new(ptr::null_mut()),
            params,
            meta_pages: AtomicU64::new(0),
        }
    }
}

/// A report header in `slab_bug()`'s shape.
pub(super) fn slab_bug<P: Platform>(p: &P, s: &KmemCache, what: core::fmt::Arguments<'_>) {
    report!(
        p,
        Level::Err,
        "============================================================================="
    );
    report!(p, Level::Err, "BUG {} (Not tainted): {}", s.name(), what);
    report!(
        p,
        Level::Err,
        "-----------------------------------------------------------------------------"
    );
    report!(p, Level::Err, "");
}

impl<P: Platform> Kmem<P> {
    // ---- debug ----
}

pub(super) fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

const _: () = assert!(MAX_NUMNODES <= 64);
const _: () = assert!(PAGE_SHIFT == 12);

#[cfg(test)]
mod tests {
    use super::ObjDivisor;

    /// Against plain division, for every kmalloc size and odd sizes, over
    /// offsets around every object and wrapped offsets below the first.
    #[test]
    #[cfg_attr(miri, ignore = "arithmetic only, no unsafe code: runs natively")]
    fn obj_divisor_is_exact_division() {
        let sizes = [
            8,
            16,
            24,
            32,
            40,
            56,
            64,
            96,
            104,
            128,
            192,
            200,
            256,
            328,
            512,
            1000,
            1024,
            2048,
            3000,
            4096,
            8192,
            12345,
            1 << 20,
        ];
        for size in sizes {
            let d = ObjDivisor::new(size);
            let objects = ((4usize << 20) / size).min(32767) as u32;
            let check = |off: usize| {
                let want = (off % size == 0 && off / size < objects as usize).then(|| off / size);
                assert_eq!(d.index(off, objects), want, "size {size}, offset {off}");
            };
            for i in (0..=objects as usize + 1).step_by(1 + objects as usize / 500) {
                for delta in [0, 1, 2, 7, 8, size / 2, size - 1] {
                    check((i * size).wrapping_add(delta));
                    check((i * size).wrapping_sub(delta));
                }
            }
            for off in [usize::MAX, usize::MAX - size + 1, 1 << 63, (1 << 63) + size] {
                check(off);
            }
        }
    }
}
