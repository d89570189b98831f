//! `struct kmem_cache` and its allocation paths.
//!
//! # Per-CPU fast path: sheaves
//!
//! Linux 6.x gives each CPU a *cpu slab*: a slab whose freelist the CPU pops
//! and pushes with a `cmpxchg_double` on (freelist, tid), so that an
//! interrupt or migration between reading and writing is detected. Linux
//! 6.18 added, and 7.x made the default, *sheaves*: each CPU has a small
//! array of object pointers (the main sheaf and a spare), and each node a
//! *barn* of full and empty sheaves to exchange with.
//!
//! kmem uses sheaves, because:
//! - the [`Platform`] contract already makes a CPU-local section exclusive
//!   (what `local_lock` gives Linux's sheaves), so a sheaf push or pop is a
//!   plain array operation: no double-word compare-and-swap, which also has
//!   no portable Rust equivalent;
//! - an object freed on another CPU than its slab's simply goes into that
//!   CPU's sheaf (if it belongs to the local node): remote frees need no
//!   separate lock-free path into the slab;
//! - the sheaves of a cache are allocated once, with the cache, so neither
//!   path ever allocates memory for bookkeeping.
//!
//! An empty main sheaf is swapped with the spare, then exchanged with a full
//! sheaf from the barn, and only then refilled from slabs under the node's
//! `list_lock`; a full one is swapped with an empty spare, then parked in the
//! barn, and only then flushed back into its slabs. Debug caches
//! (`SLAB_CONSISTENCY_CHECKS`, `SLAB_RED_ZONE`, `SLAB_POISON`,
//! `SLAB_STORE_USER`) bypass the sheaves, as Linux bypasses the cpu slab, so
//! every object is checked on its way in and out. Each node's barn holds
//! [`BARN_SHEAVES`] sheaves (Linux's `MAX_FULL_SHEAVES`). A sheaf's
//! capacity depends on the object size ([`sheaf_capacity`], the limits of
//! SLAB's per-CPU arrays): 120 objects up to 256 bytes, so that a burst of
//! a thousand small allocations and frees stays in the sheaves, down to 8
//! above a page, so that no CPU hoards megabytes of large free objects.
//!
//! # The fast paths and what they check
//!
//! `kmalloc`/`kmem_cache_alloc` and `kfree`/`kmem_cache_free` each enter
//! a *leaf* CPU-local section once ([`Platform::local_enter_leaf`]: inside
//! it the fast path runs only its own straight-line code, so a platform
//! may make it cheaper than a full section, as the simulator does), pop or
//! push the main sheaf and leave; the fast paths are inlined into their
//! callers (`kmalloc` as Linux's `__always_inline` kmalloc, so that a
//! constant size picks its cache at compile time) and everything else lives
//! in `#[cold]` functions. When a fast path cannot finish, it hands its
//! *open* section to the slow path, which leaves it first thing: the call
//! is then a tail call and no argument has to survive the platform's
//! section exit (which may run cross-CPU calls), so the fast paths need no
//! register saves. The slow paths return the object or the error in one
//! word, as Linux's `ERR_PTR`, which becomes a `Result` in the caller's
//! frame. The CPU's node and the "go slow" flags share one word
//! (`CpuCache::gate`), so a free tests both with one compare.
//!
//! Linux without `slab_debug` checks, on free, only what it needs to find
//! the cache (`virt_to_slab()`, and with `CONFIG_SLAB_FREELIST_HARDENED`
//! that the object belongs to the cache passed in). kmem keeps, always on,
//! the checks that cost a few instructions and stop bad input from
//! corrupting the allocator:
//! - the address lies in a slab (one range check and the `PG_slab` bit of
//!   the head page, whose address comes from the pfn, not from a division);
//! - for `kmem_cache_free`, the slab belongs to that cache;
//! - the address is an object start: one multiplication by a precomputed
//!   reciprocal, as Linux's `obj_to_index()`, and two compares;
//! - the object is not the one on top of the CPU's main sheaf (a double
//!   free in a row); a null guard slot below the sheaf's first object makes
//!   that one compare even for an empty sheaf;
//! - free pointers are checked as the freelist is followed on refill
//!   ("Freepointer corrupt").
//!
//! What stays debug-only, as in Linux: searching the slab's freelist for a
//! double free anywhere (`on_freelist`), red zones, poisoning and the
//! owner tracking (`SLAB_CONSISTENCY_CHECKS`, `SLAB_RED_ZONE`,
//! `SLAB_POISON`, `SLAB_STORE_USER`, or `slab_debug=` for all caches).
//!
//! # Slabs
//!
//! A slab is a compound page block whose head descriptor carries the cache,
//! the freelist and the in-use/objects counters; free objects are chained
//! through a free pointer stored at `s->offset` in each, obfuscated as with
//! `CONFIG_SLAB_FREELIST_HARDENED` (`ptr ^ random ^ swab(&ptr)`) and, with
//! freelist randomisation, linked in a random order. Slabs with free objects
//! sit on their node's partial list; full ones on a full list (Linux keeps
//! that only for debugging; kmem keeps it to list leaks on destroy). An
//! empty slab goes back to the page allocator once the node has more than
//! `min_partial` partial slabs; `kmem_cache_shrink` gives back all of them.

use super::geometry::{calculate_sizes, CacheArgs, CacheGeometry};
use super::*;
use crate::gfp::{self, Gfp};
use crate::mmzone::MAX_NUMNODES;
use crate::page::{Page, PageList, PG_SLAB, PG_TAIL};
use crate::platform::{Level, LocalGuard, LocalState, Platform};
use crate::{report, Error, Kmem, Result, PAGE_SHIFT, PAGE_SIZE};
use core::cell::UnsafeCell;
use core::panic::Location;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering::Relaxed};

/// The most objects a sheaf holds: the capacity of caches of objects up to
/// 256 bytes. See [`sheaf_capacity`]. Under Miri, which interprets every
/// byte of the sheaves each test machine boots, 16.
pub const SHEAF_CAPACITY: usize = if cfg!(miri) { 16 } else { 120 };
/// Sheaves in each node's barn, full or empty. Linux caps a barn at
/// `MAX_FULL_SHEAVES` (10) full and `MAX_EMPTY_SHEAVES` (10) empty sheaves
/// and allocates sheaves as it goes; kmem allocates the barn's sheaves with
/// the cache, so the barn always holds exactly this many: with the main and
/// spare sheaf a CPU keeps `(BARN_SHEAVES + 2) * capacity` free objects
/// (1440 of up to 256 bytes) before frees reach the slabs.
pub const BARN_SHEAVES: usize = 10;

/// The sheaf capacity of a cache of `size`-byte objects: the per-CPU array
/// limits of Linux's SLAB allocator (`enable_cpucache()`: 120 objects up to
/// 256 bytes, 54 up to 1 KiB, 24 up to a page, 8 above), whose array caches
/// sheaves resemble. Small objects get deep sheaves, so that a burst of a
/// thousand allocations and frees stays in them; large ones shallow
/// sheaves, so that a CPU does not hoard megabytes of free objects.
///
/// ```
/// use kmem::slab::cache::sheaf_capacity;
/// assert_eq!(sheaf_capacity(64), 120);
/// assert_eq!(sheaf_capacity(8192), 8);
/// ```
pub const fn sheaf_capacity(size: usize) -> usize {
    let slab_limit = if size > crate::PAGE_SIZE {
        8
    } else if size > 1024 {
        24
    } else if size > 256 {
        54
    } else {
        120
    };
    if slab_limit < SHEAF_CAPACITY {
        slab_limit
    } else {
        SHEAF_CAPACITY
    }
}
/// Longest cache name kept (Linux allows any; `/proc/slabinfo` pads to 17).
pub const CACHE_NAME_LEN: usize = 32;
/// Aliases recorded per cache (merged `kmem_cache_create` calls).
pub const MAX_ALIASES: usize = 16;
/// `MIN_PARTIAL` and `MAX_PARTIAL`: bounds of `min_partial`.
const MIN_PARTIAL: u64 = 5;
const MAX_PARTIAL: u64 = 10;

/// A constructor, run once on each object when its slab is created.
pub type Ctor = fn(*mut u8);

/// An array of free objects (`struct slab_sheaf`).
///
/// The objects sit in `objects[1..=size]`, the newest at `objects[size]`;
/// `objects[0]` stays null. That guard slot lets the free fast path compare
/// the pointer being freed with the top of the sheaf (the double-free check)
/// without first testing for an empty sheaf.
#[repr(C)]
pub(crate) struct Sheaf {
    size: usize,
    next: *mut Sheaf,
    objects: [*mut u8; SHEAF_CAPACITY + 1],
}

impl Sheaf {
    /// The objects held, oldest first.
    #[inline]
    fn objects(&self) -> &[*mut u8] {
        &self.objects[1..=self.size]
    }

    /// The newest object, or null when the sheaf is empty.
    #[inline]
    fn top(&self) -> *mut u8 {
        self.objects[self.size]
    }

    /// Add `x`; the caller checked there is room.
    #[inline]
    fn push(&mut self, x: *mut u8) {
        self.size += 1;
        self.objects[self.size] = x;
    }

    /// Take the newest object; the caller checked there is one.
    #[inline]
    fn pop(&mut self) -> *mut u8 {
        let x = self.objects[self.size];
        self.size -= 1;
        x
    }
}

struct CpuSheaves {
    main: *mut Sheaf,
    spare: *mut Sheaf,
}

/// One CPU's sheaves of one cache.
#[repr(C, align(64))]
pub(crate) struct CpuCache {
    sheaves: UnsafeCell<CpuSheaves>,
    /// The fast paths' one test: the CPU's node in the low bits, and above
    /// them why the fast paths must not use the sheaves: [`CPU_FLUSH`]
    /// (another CPU asked this one to flush them) and [`CPU_DEBUG`] (a
    /// debug cache, which never uses them). A free compares it with the
    /// object's node, an allocation tests the flag bits, in one load.
    gate: AtomicU32,
    /// The cache's sheaf capacity ([`KmemCache::sheaf_capacity`]), copied
    /// beside the sheaves so that the free fast path reads no line of the
    /// cache itself.
    cap: u32,
}

/// [`CpuCache::gate`]: the node bits.
const CPU_NODE: u32 = 0xffff;
/// [`CpuCache::gate`]: another CPU asked this one to flush its sheaves.
const CPU_FLUSH: u32 = 1 << 16;
/// [`CpuCache::gate`]: the cache is a debug cache.
const CPU_DEBUG: u32 = 1 << 17;
/// [`CpuCache::gate`]: the flag bits.
const CPU_SLOW: u32 = !CPU_NODE;

impl CpuCache {
    /// The CPU's node, from the gate's node bits (which never change).
    #[inline]
    fn nid(&self) -> usize {
        (self.gate.load(Relaxed) & CPU_NODE) as usize
    }

    /// Whether a flush was requested; clears the request.
    #[inline]
    fn take_flush(&self) -> bool {
        self.gate.load(Relaxed) & CPU_FLUSH != 0
            && self.gate.fetch_and(!CPU_FLUSH, Relaxed) & CPU_FLUSH != 0
    }

    /// Ask this CPU to flush its sheaves at its next use of the cache.
    fn request_flush(&self) {
        self.gate.fetch_or(CPU_FLUSH, Relaxed);
    }
}

/// Where a cache's per-CPU sheaf slots start in its metadata block, after
/// the cache itself.
const CPUS_OFF: usize = core::mem::size_of::<KmemCache>().next_multiple_of(64);

/// A stack of sheaves linked through `next`.
#[derive(Clone, Copy)]
struct SheafStack {
    top: *mut Sheaf,
    len: usize,
}

impl SheafStack {
    const fn new() -> Self {
        SheafStack {
            top: ptr::null_mut(),
            len: 0,
        }
    }

    /// # Safety
    /// `sh` is a valid sheaf not on any stack.
    unsafe fn push(&mut self, sh: *mut Sheaf) {
        // SAFETY: the caller hands over a valid, unlinked sheaf.
        unsafe { (*sh).next = self.top };
        self.top = sh;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<*mut Sheaf> {
        if self.top.is_null() {
            return None;
        }
        let sh = self.top;
        // SAFETY: every sheaf on the stack is valid (push's contract).
        self.top = unsafe { (*sh).next };
        self.len -= 1;
        Some(sh)
    }
}

struct NodeLists {
    partial: PageList,
    nr_partial: u64,
    full: PageList,
    barn_full: SheafStack,
    barn_empty: SheafStack,
}

/// A cache's per-node state (`struct kmem_cache_node`).
pub(crate) struct KmemCacheNode {
    lists: spin::Mutex<NodeLists>,
    nr_slabs: AtomicU64,
    total_objects: AtomicU64,
    nr_pages: AtomicU64,
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

/// A slab cache (`struct kmem_cache`).
pub struct KmemCache {
    name: [u8; CACHE_NAME_LEN],
    name_len: usize,
    pub(crate) geo: CacheGeometry,
    ctor: Option<Ctor>,
    /// `ceil(2^52 / size)`: object index by multiplication
    /// (`reciprocal_divide`, as Linux's `obj_to_index`).
    reciprocal: u64,
    debug: bool,
    min_partial: u64,
    /// Objects per sheaf ([`sheaf_capacity`]).
    sheaf_cap: usize,
    /// Freelist pointer obfuscation key; 0 when hardening is off.
    random: u64,
    randomize: bool,
    refcount: AtomicU32,
    aliases: spin::Mutex<(
        [[u8; CACHE_NAME_LEN]; MAX_ALIASES],
        [usize; MAX_ALIASES],
        usize,
    )>,
    pub(crate) next: AtomicPtr<KmemCache>,
    nr_cpus: usize,
    nr_nodes: usize,
    cpus: NonNull<CpuCache>,
    nodes: NonNull<KmemCacheNode>,
    meta_pfn: u64,
    meta_order: u32,
}

// SAFETY: the raw pointers lead to the cache's own metadata block, which
// lives until destroy; shared state there is atomic, spin-locked, or per-CPU
// sheaves reached only inside their CPU's local section.
unsafe impl Sync for KmemCache {}
// SAFETY: as above.
unsafe impl Send for KmemCache {}

fn copy_name(name: &str) -> ([u8; CACHE_NAME_LEN], usize) {
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

    /// Objects per sheaf ([`sheaf_capacity`]).
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
    fn cpu(&self, cpu: usize) -> &CpuCache {
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
    fn node(&self, nid: usize) -> &KmemCacheNode {
        assert!(nid < self.nr_nodes);
        // SAFETY: as for `cpu`, with `nr_nodes` entries.
        unsafe { &*self.nodes.as_ptr().add(nid) }
    }

    /// The object at `x` in the slab whose first byte is `base`, if `x` is
    /// exactly an object start (`check_valid_pointer`).
    #[inline]
    fn obj_index(&self, base: usize, objects: u32, x: usize) -> Option<usize> {
        // An address below the first object wraps around to a huge offset,
        // whose quotient is far beyond `objects`: one test covers both ends.
        let off = x.wrapping_sub(base + self.geo.red_left_pad);
        // Exact for off < 2^30 (slabs are at most 4 MiB): off * (2^52/size
        // rounded up) / 2^52 is off / size rounded down.
        let i = ((off as u128 * u128::from(self.reciprocal)) >> 52) as usize;
        // i < objects (at most 2^16) keeps i * size from overflowing.
        (i < objects as usize && i * self.geo.size == off).then_some(i)
    }

    /// `check_valid_pointer()`, always on: whether `x` is an object start
    /// of `slab` (a slab of this cache). One multiplication by a
    /// precomputed reciprocal, as Linux's `obj_to_index()`, and compares.
    #[inline]
    pub(crate) fn is_obj_start(&self, slab: SlabRef<'_>, x: *const u8) -> bool {
        self.obj_index(slab.base, slab.page.slab_objects(), x as usize)
            .is_some()
    }

    #[inline]
    fn obj_addr(&self, base: usize, i: usize) -> usize {
        base + i * self.geo.size + self.geo.red_left_pad
    }

    /// Encode a free pointer stored at `at` (`freelist_ptr_encode`).
    #[inline]
    fn encode(&self, next: usize, at: usize) -> u64 {
        if self.random == 0 {
            next as u64
        } else {
            next as u64 ^ self.random ^ (at as u64).swap_bytes()
        }
    }

    /// Read the free pointer of free object `obj`.
    #[inline]
    fn get_fp(&self, obj: usize) -> usize {
        let at = obj + self.geo.offset;
        // SAFETY: `obj` is a free object of a slab of this cache, so the
        // word at `offset` holds its free pointer (the slot is ours).
        let raw = unsafe { ptr::read_unaligned(at as *const u64) };
        (raw ^ (self.encode(0, at))) as usize
    }

    /// Write the free pointer of free object `obj`.
    #[inline]
    fn set_fp(&self, obj: usize, next: usize) {
        let at = obj + self.geo.offset;
        // SAFETY: as in get_fp: the slot belongs to a free object of ours.
        unsafe { ptr::write_unaligned(at as *mut u64, self.encode(next, at)) };
    }
}

/// Where an allocation or free came from, for `SLAB_STORE_USER`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Track {
    addr: usize,
    cpu: u32,
    pid: u32,
    when: u64,
    _pad: u64,
}

const _: () = assert!(core::mem::size_of::<Track>() == super::geometry::TRACK_SIZE);

/// Which bytes a debug check found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    LeftRedzone,
    RightRedzone,
    Poison,
}

impl Damage {
    fn what(self) -> &'static str {
        match self {
            Damage::LeftRedzone => "Left Redzone overwritten",
            Damage::RightRedzone => "Right Redzone overwritten",
            Damage::Poison => "Poison overwritten",
        }
    }
}

/// Boot-time slab options (`slab_nomerge`, `slab_debug=`, hardening).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabParams {
    /// `slab_nomerge`: never merge caches.
    pub nomerge: bool,
    /// `slab_debug=`: debug flags for every cache.
    pub debug: SlabFlags,
    /// `CONFIG_SLAB_FREELIST_HARDENED`: obfuscate free pointers.
    pub freelist_hardened: bool,
    /// `CONFIG_SLAB_FREELIST_RANDOM`: link new slabs' objects in random order.
    pub freelist_random: bool,
}

impl Default for SlabParams {
    fn default() -> Self {
        SlabParams {
            nomerge: false,
            debug: SlabFlags::NONE,
            freelist_hardened: true,
            freelist_random: false,
        }
    }
}

/// Parse `slab_debug=` option letters (`F` consistency checks, `Z` red
/// zone, `P` poison, `U` store user, `A` failslab; `-` for none) as Linux does.
///
/// ```
/// use kmem::slab::{cache::parse_slab_debug, SLAB_POISON, SLAB_RED_ZONE};
/// assert_eq!(parse_slab_debug("ZP").unwrap(), SLAB_RED_ZONE | SLAB_POISON);
/// assert!(parse_slab_debug("Q").is_err());
/// ```
pub fn parse_slab_debug(s: &str) -> Result<SlabFlags> {
    let mut f = SlabFlags::NONE;
    for c in s.chars() {
        f |= match c.to_ascii_uppercase() {
            'F' => SLAB_CONSISTENCY_CHECKS,
            'Z' => SLAB_RED_ZONE,
            'P' => SLAB_POISON,
            'U' => SLAB_STORE_USER,
            'A' => SLAB_FAILSLAB,
            '-' => SlabFlags::NONE,
            _ => return Err(Error::InvalidArgument),
        };
    }
    Ok(f)
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
    pub(crate) kmalloc: [[AtomicPtr<KmemCache>; crate::kmalloc::KMALLOC_SHIFT_HIGH as usize + 1];
        crate::kmalloc::NR_KMALLOC_TYPES],
    pub(crate) params: SlabParams,
    /// Pages held by kmalloc allocations above `KMALLOC_MAX_CACHE_SIZE`.
    pub(crate) large_pages: AtomicU64,
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
            kmalloc: [const {
                [const { AtomicPtr::new(ptr::null_mut()) };
                    crate::kmalloc::KMALLOC_SHIFT_HIGH as usize + 1]
            }; crate::kmalloc::NR_KMALLOC_TYPES],
            params,
            large_pages: AtomicU64::new(0),
            meta_pages: AtomicU64::new(0),
        }
    }
}

/// Flags that make a cache unmergeable (`SLAB_NEVER_MERGE`).
const SLAB_NEVER_MERGE: SlabFlags = SLAB_RED_ZONE
    .union(SLAB_POISON)
    .union(SLAB_STORE_USER)
    .union(SLAB_TRACE)
    .union(SLAB_TYPESAFE_BY_RCU)
    .union(SLAB_NOLEAKTRACE)
    .union(SLAB_CONSISTENCY_CHECKS)
    .union(SLAB_FAILSLAB)
    .union(SLAB_NO_MERGE);

/// Flags two caches must share to merge (`SLAB_MERGE_SAME`).
const SLAB_MERGE_SAME: SlabFlags = SLAB_RECLAIM_ACCOUNT
    .union(SLAB_CACHE_DMA)
    .union(SLAB_CACHE_DMA32)
    .union(SLAB_ACCOUNT)
    .union(SLAB_NOLEAKTRACE);

/// A report header in `slab_bug()`'s shape.
fn slab_bug<P: Platform>(p: &P, s: &KmemCache, what: core::fmt::Arguments<'_>) {
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
    fn slab_state(&self) -> &SlabState {
        &self.slab
    }

    /// Pages holding slab caches' own descriptors and sheaves (the 52
    /// kmalloc caches take some at boot).
    pub fn slab_meta_pages(&self) -> u64 {
        self.slab.meta_pages.load(Relaxed)
    }

    /// All caches, newest first.
    pub fn for_each_cache(&self, mut f: impl FnMut(&KmemCache)) {
        let head = self.slab_state().caches.lock();
        let mut c = *head;
        while !c.is_null() {
            // SAFETY: caches on the list are alive until destroy unlinks them
            // under the same lock we hold.
            let cr = unsafe { &*c };
            f(cr);
            c = cr.next.load(Relaxed);
        }
    }

    /// `kmem_cache_create()`.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// use kmem::gfp::GFP_KERNEL;
    /// use kmem::slab::SLAB_HWCACHE_ALIGN;
    /// let c = k.kmem_cache_create("my_obj", 100, 0, SLAB_HWCACHE_ALIGN, None).unwrap();
    /// let o = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    /// // SAFETY: `o` is not used again.
    /// unsafe { k.kmem_cache_free(c, o.as_ptr()) }.unwrap();
    /// ```
    #[track_caller]
    pub fn kmem_cache_create(
        &self,
        name: &str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Ctor>,
    ) -> Result<&KmemCache> {
        self.kmem_cache_create_args(
            name,
            size,
            &KmemCacheArgs {
                align,
                freeptr_offset: None,
                ctor,
            },
            flags,
        )
    }

    /// `kmem_cache_create()` with an arguments struct (Linux 6.12's form).
    #[track_caller]
    pub fn kmem_cache_create_args(
        &self,
        name: &str,
        size: usize,
        args: &KmemCacheArgs,
        flags: SlabFlags,
    ) -> Result<&KmemCache> {
        let res = self.create_cache(name, size, args, flags, true);
        if let Err(e) = res {
            report!(
                &self.p,
                Level::Warning,
                "kmem_cache_create({}) failed with error {}",
                name,
                e.to_errno()
            );
            if flags.contains(SLAB_PANIC) {
                panic!(
                    "kmem_cache_create: Failed to create slab '{name}'. Error {}",
                    e.to_errno()
                );
            }
        }
        res
    }

    pub(crate) fn create_cache(
        &self,
        name: &str,
        size: usize,
        args: &KmemCacheArgs,
        flags: SlabFlags,
        allow_merge: bool,
    ) -> Result<&KmemCache> {
        if name.is_empty() || self.p.in_interrupt() {
            report!(
                &self.p,
                Level::Err,
                "kmem_cache_create: empty name or called from interrupt context"
            );
            return Err(Error::InvalidArgument);
        }
        let params = self.slab_state().params;
        // slab_debug= applies to every cache, kmalloc's included.
        let flags = flags.without(SLAB_PANIC) | params.debug;
        if allow_merge {
            if let Some(c) = self.find_mergeable(name, size, args, flags) {
                return Ok(c);
            }
        }
        if args.align != 0 && !args.align.is_power_of_two() {
            report!(
                &self.p,
                Level::Err,
                "kmem_cache_create({name}): alignment {} is not a power of two",
                args.align
            );
            return Err(Error::InvalidArgument);
        }
        let geo = calculate_sizes(
            &CacheArgs {
                object_size: size,
                align: super::geometry::calculate_alignment(flags, args.align, size),
                flags,
                has_ctor: args.ctor.is_some(),
                freeptr_offset: args.freeptr_offset,
            },
            self.nr_cpus,
        )?;
        let sheaf_cap = sheaf_capacity(geo.size);
        // The free fast path indexes sheaves unchecked below `cap`.
        assert!(sheaf_cap <= SHEAF_CAPACITY);
        // The metadata block: the cache, per-CPU sheaf slots, per-node state,
        // and the sheaves (main + spare per CPU, BARN_SHEAVES for the barn
        // of each node that has CPUs).
        let nr_cpus = self.nr_cpus;
        let nr_nodes = self.nr_nodes;
        let has_cpus = |n: usize| (0..nr_cpus).any(|c| self.cpu_to_node(c) == n);
        let nr_barns = (0..nr_nodes).filter(|&n| has_cpus(n)).count();
        let nr_sheaves = 2 * nr_cpus + BARN_SHEAVES * nr_barns;
        let cpus_off = CPUS_OFF;
        let nodes_off = cpus_off + nr_cpus * core::mem::size_of::<CpuCache>();
        let nodes_off = nodes_off.next_multiple_of(64);
        let sheaves_off =
            (nodes_off + nr_nodes * core::mem::size_of::<KmemCacheNode>()).next_multiple_of(64);
        let total = sheaves_off + nr_sheaves * core::mem::size_of::<Sheaf>();
        let order = crate::page_alloc::get_order(total);
        let page = self.alloc_pages(gfp::GFP_KERNEL | gfp::__GFP_ZERO, order)?;
        let base = self.page_address(page).ok_or(Error::NoMemory)?.as_ptr() as usize;
        self.slab.meta_pages.fetch_add(1 << order, Relaxed);
        let (nb, nl) = copy_name(name);
        let debug = geo.flags.intersects(
            SLAB_CONSISTENCY_CHECKS
                .union(SLAB_RED_ZONE)
                .union(SLAB_POISON)
                .union(SLAB_STORE_USER),
        );
        let sheaf =
            |i: usize| (base + sheaves_off + i * core::mem::size_of::<Sheaf>()) as *mut Sheaf;
        for i in 0..nr_cpus {
            // SAFETY: the block is ours, zeroed, and large enough for
            // `nr_cpus` CpuCache at `cpus_off` (64-byte aligned in a page).
            unsafe {
                ((base + cpus_off) as *mut CpuCache).add(i).write(CpuCache {
                    sheaves: UnsafeCell::new(CpuSheaves {
                        main: sheaf(2 * i),
                        spare: sheaf(2 * i + 1),
                    }),
                    gate: AtomicU32::new(
                        self.cpu_to_node(i) as u32 | if debug { CPU_DEBUG } else { 0 },
                    ),
                    cap: sheaf_cap as u32,
                })
            };
        }
        let mut next_sheaf = 2 * nr_cpus;
        for n in 0..nr_nodes {
            // The barn of a node with CPUs starts with BARN_SHEAVES empty
            // sheaves; a node without CPUs never uses its barn.
            let mut empty = SheafStack::new();
            if has_cpus(n) {
                for i in next_sheaf..next_sheaf + BARN_SHEAVES {
                    // SAFETY: each sheaf lies in our zeroed block, unlinked.
                    unsafe { empty.push(sheaf(i)) };
                }
                next_sheaf += BARN_SHEAVES;
            }
            // SAFETY: as above, at `nodes_off`.
            unsafe {
                ((base + nodes_off) as *mut KmemCacheNode)
                    .add(n)
                    .write(KmemCacheNode {
                        lists: spin::Mutex::new(NodeLists {
                            partial: PageList::new(),
                            nr_partial: 0,
                            full: PageList::new(),
                            barn_full: SheafStack::new(),
                            barn_empty: empty,
                        }),
                        nr_slabs: AtomicU64::new(0),
                        total_objects: AtomicU64::new(0),
                        nr_pages: AtomicU64::new(0),
                    })
            };
        }
        let ilog2 = usize::BITS - 1 - geo.size.leading_zeros();
        let min_partial = (u64::from(ilog2) / 2).clamp(MIN_PARTIAL, MAX_PARTIAL);
        let random = if params.freelist_hardened {
            self.p.random_u64() | 1
        } else {
            0
        };
        let cache = base as *mut KmemCache;
        // SAFETY: the start of our block, aligned, sized for a KmemCache.
        unsafe {
            cache.write(KmemCache {
                name: nb,
                name_len: nl,
                geo,
                ctor: args.ctor,
                reciprocal: (1u64 << 52).div_ceil(geo.size as u64),
                debug,
                min_partial,
                sheaf_cap,
                random,
                randomize: params.freelist_random,
                refcount: AtomicU32::new(1),
                aliases: spin::Mutex::new((
                    [[0; CACHE_NAME_LEN]; MAX_ALIASES],
                    [0; MAX_ALIASES],
                    0,
                )),
                next: AtomicPtr::new(ptr::null_mut()),
                nr_cpus,
                nr_nodes,
                cpus: NonNull::new_unchecked((base + cpus_off) as *mut CpuCache),
                nodes: NonNull::new_unchecked((base + nodes_off) as *mut KmemCacheNode),
                meta_pfn: self.page_to_pfn(page),
                meta_order: order,
            })
        };
        let mut head = self.slab_state().caches.lock();
        // SAFETY: initialised above; published under the list lock.
        unsafe { (*cache).next.store(*head, Relaxed) };
        *head = cache;
        // SAFETY: the cache lives until kmem_cache_destroy, which the
        // caller may call only once nothing uses it (its safety contract).
        Ok(unsafe { &*cache })
    }

    /// `find_mergeable()`: an existing cache this one can be an alias of.
    fn find_mergeable(
        &self,
        name: &str,
        size: usize,
        args: &KmemCacheArgs,
        flags: SlabFlags,
    ) -> Option<&KmemCache> {
        if self.slab_state().params.nomerge
            || flags.intersects(SLAB_NEVER_MERGE)
            || args.ctor.is_some()
            || args.freeptr_offset.is_some()
        {
            return None;
        }
        let align = super::geometry::calculate_alignment(flags, args.align, size);
        let size = size
            .next_multiple_of(core::mem::size_of::<usize>())
            .next_multiple_of(align);
        let mut found: *const KmemCache = ptr::null();
        self.for_each_cache(|s| {
            if !found.is_null()
                || s.geo.flags.intersects(SLAB_NEVER_MERGE)
                || s.ctor.is_some()
                || s.refcount.load(Relaxed) == 0
                || size > s.geo.size
                || (flags & SLAB_MERGE_SAME) != (s.geo.flags & SLAB_MERGE_SAME)
                || s.geo.size & (align - 1) != 0
                || s.geo.size - size >= core::mem::size_of::<usize>()
            {
                return;
            }
            found = s;
        });
        // SAFETY: found on the live cache list.
        let s = unsafe { found.as_ref() }?;
        s.refcount.fetch_add(1, Relaxed);
        let mut a = s.aliases.lock();
        if a.2 < MAX_ALIASES {
            let (nb, nl) = copy_name(name);
            let i = a.2;
            a.0[i] = nb;
            a.1[i] = nl;
            a.2 += 1;
        }
        Some(s)
    }

    /// The slab page holding object address `x`, if any.
    pub(crate) fn virt_to_slab(&self, x: *const u8) -> Option<&Page> {
        self.slab_of(x).map(|sl| sl.page)
    }

    /// `virt_to_slab()` with the slab's address: the head descriptor of the
    /// slab holding `x` and the direct-map address of its first byte, if
    /// `x` lies in a slab. The address comes from the pfn, not from
    /// `page_address()`, which would divide to find the descriptor's index.
    #[inline]
    pub(crate) fn slab_of(&self, x: *const u8) -> Option<SlabRef<'_>> {
        // No memblock lookup: a page with PG_slab is RAM by construction.
        // One range check: an address below the direct map or below the
        // first pfn wraps around to an index past the end of mem_map. No
        // check against the direct map's end either: a page there is high
        // memory, and slabs are never taken from high memory.
        let mm = self.mem_map();
        // (x - base - base_pfn * PAGE_SIZE) / PAGE_SIZE is (x - base) /
        // PAGE_SIZE - base_pfn, an address below the map wrapping the same.
        let mut idx = (x as usize).wrapping_sub(self.mem_map_va) >> PAGE_SHIFT;
        let mut page = mm.get(idx)?;
        let mut flags = page.raw_flags();
        if flags & PG_SLAB == 0 {
            // PG_slab is on the head page only: a tail page of a
            // multi-page slab leads to it.
            if flags & PG_TAIL == 0 {
                return None;
            }
            idx = page.head_index()? as usize;
            page = mm.get(idx)?;
            flags = page.raw_flags();
            if flags & PG_SLAB == 0 {
                return None;
            }
        }
        Some(SlabRef {
            page,
            base: self.mem_map_va.wrapping_add(idx << PAGE_SHIFT),
            nid: Page::nid_of(flags),
            idx: idx as u32,
        })
    }

    #[cold]
    #[inline(never)]
    fn not_in_slab(&self, s: &KmemCache, x: *const u8, what: &str) -> Result<()> {
        report!(
            &self.p,
            Level::Err,
            "{}: object {:p} is not in a slab of {}",
            what,
            x,
            s.name()
        );
        Err(Error::BadAddress)
    }

    /// The report of `cache_from_obj()` for an object of another cache.
    #[cold]
    #[inline(never)]
    pub(crate) fn wrong_cache(&self, s: &KmemCache, page: &Page, what: &str) -> Result<()> {
        // SAFETY: a slab's cache field points at a live cache.
        let o = unsafe { &*(page.slab_cache_addr() as *const KmemCache) };
        report!(
            &self.p,
            Level::Warning,
            "WARNING: {}: Wrong slab cache. {} but object is from {}",
            what,
            s.name(),
            o.name()
        );
        Err(Error::InvalidArgument)
    }

    /// `check_valid_pointer()` failed: report an address inside an object.
    #[cold]
    #[inline(never)]
    pub(crate) fn invalid_pointer(&self, s: &KmemCache, x: *const u8) -> Result<()> {
        // Found again rather than passed: the fast paths then keep the slab
        // in registers instead of spilling it for this call.
        let slab = self.slab_of(x).expect("a pointer into a slab");
        let (x, base) = (x as usize, slab.base);
        let objects = slab.page.slab_objects() as usize;
        slab_bug(&self.p, s, format_args!("Invalid object pointer 0x{x:x}"));
        let first = base + s.geo.red_left_pad;
        let off = x.wrapping_sub(first);
        if x < first {
            report!(
                &self.p,
                Level::Err,
                "Pointer 0x{:x} is before the first object 0x{:x} of {} at @offset={}",
                x,
                first,
                s.name(),
                x - base
            );
        } else if off / s.geo.size >= objects {
            report!(
                &self.p,
                Level::Err,
                "Pointer 0x{:x} is past the last object of {} ({} objects) at @offset={}",
                x,
                s.name(),
                objects,
                x - base
            );
        } else {
            report!(
                &self.p,
                Level::Err,
                "Pointer 0x{:x} is in object 0x{:x} of {} at @offset={}",
                x,
                s.obj_addr(base, off / s.geo.size),
                s.name(),
                off % s.geo.size
            );
        }
        Err(Error::InvalidArgument)
    }

    /// `allocate_slab()`: a new slab for `s` near node `nid`, its objects
    /// linked (in random order with freelist randomisation), debug bytes
    /// laid out, constructors run.
    fn allocate_slab(&self, s: &KmemCache, gfp: Gfp, nid: i32) -> Result<&Page> {
        let base_gfp = Gfp::from_bits(gfp.bits() & gfp::GFP_RECLAIM_MASK.bits()) | s.geo.allocflags;
        let first = if s.geo.order > s.geo.min_order {
            self.alloc_pages_node(
                nid,
                (base_gfp | gfp::__GFP_NOWARN | gfp::__GFP_NORETRY).without(gfp::__GFP_NOFAIL),
                s.geo.order,
            )
        } else {
            Err(Error::NoMemory)
        };
        let page = match first {
            Ok(p) => p,
            Err(_) => self.alloc_pages_node(nid, base_gfp, s.geo.min_order)?,
        };
        let order = page.order();
        let objects = if order == s.geo.order {
            s.geo.objects
        } else {
            s.geo.min_objects
        } as u32;
        let base = self.page_address(page).ok_or(Error::NoMemory)?.as_ptr() as usize;
        page.set_flag(PG_SLAB);
        page.set_slab_cache_addr(s as *const KmemCache as usize);
        page.set_slab_counters(0, objects);
        if s.is_debug() {
            // Leftover bytes at the end carry POISON_INUSE (slab_pad_check).
            let used = objects as usize * s.geo.size;
            // SAFETY: the slab's bytes are ours; the range is inside it.
            unsafe {
                ptr::write_bytes(
                    (base + used) as *mut u8,
                    POISON_INUSE,
                    (PAGE_SIZE << order) - used,
                )
            };
        }
        // Link the objects, in order or shuffled.
        let mut prev = 0usize;
        let mut first_obj = 0usize;
        let n = objects as usize;
        let mut perm_state = if s.randomize { self.p.random_u64() } else { 0 };
        // A random permutation without memory: walk i -> (a*i + b) mod n with
        // a coprime to n (a full cycle).
        let (a, b) = if s.randomize && n > 1 {
            let mut a = (perm_state as usize % n) | 1;
            while gcd(a, n) != 1 {
                a += 2;
            }
            perm_state >>= 32;
            (a % n, perm_state as usize % n)
        } else {
            (1, 0)
        };
        for k in 0..n {
            let i = (a * k + b) % n;
            let obj = s.obj_addr(base, i);
            self.init_object(s, obj, false);
            if let Some(ctor) = s.ctor {
                ctor(obj as *mut u8);
            }
            if prev == 0 {
                first_obj = obj;
            } else {
                s.set_fp(prev, obj);
            }
            prev = obj;
        }
        if prev != 0 {
            s.set_fp(prev, 0);
        }
        page.set_slab_freelist(if first_obj == 0 {
            0
        } else {
            (first_obj - base + 1) as u32
        });
        Ok(page)
    }

    /// `discard_slab()`: give an empty slab back to the page allocator.
    fn discard_slab(&self, s: &KmemCache, page: &Page) {
        let nid = page.nid();
        let n = s.node(nid.min(s.nr_nodes - 1));
        n.nr_slabs.fetch_sub(1, Relaxed);
        n.total_objects
            .fetch_sub(u64::from(page.slab_objects()), Relaxed);
        n.nr_pages.fetch_sub(1 << page.order(), Relaxed);
        page.clear_flag(PG_SLAB);
        page.set_slab_cache_addr(0);
        page.set_slab_counters(0, 0);
        page.set_slab_freelist(0);
        let order = page.order();
        if self.__free_pages(page, order).is_err() {
            report!(
                &self.p,
                Level::Err,
                "slab: could not free a slab of {}",
                s.name()
            );
        }
    }

    /// Take up to `out.len()` objects from slabs of node `nid`, allocating
    /// a slab when none has free objects. Returns how many it took.
    fn refill_from_slabs(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        nid: usize,
        out: &mut [usize],
    ) -> Result<usize> {
        let mut node = nid.min(s.nr_nodes - 1);
        loop {
            let got = {
                let mut l = s.node(node).lists.lock();
                let mut got = 0;
                self.take_from_partial(s, &mut l, out.len(), |o| {
                    out[got] = o;
                    got += 1;
                });
                got
            };
            if got > 0 {
                return Ok(got);
            }
            node = self.new_slab(s, gfp, nid)?;
        }
    }

    /// Allocate a slab near node `nid` and put it on its node's partial
    /// list. Returns that node.
    fn new_slab(&self, s: &KmemCache, gfp: Gfp, nid: usize) -> Result<usize> {
        let page = self.allocate_slab(s, gfp, nid as i32)?;
        let node = page.nid().min(s.nr_nodes - 1);
        let n = s.node(node);
        let mut l = n.lists.lock();
        let mm = self.mem_map();
        let idx = mm.index_of(page).expect("slab page of this machine");
        l.partial.push_head(&mm, idx);
        l.nr_partial += 1;
        n.nr_slabs.fetch_add(1, Relaxed);
        n.total_objects
            .fetch_add(u64::from(page.slab_objects()), Relaxed);
        n.nr_pages.fetch_add(1 << page.order(), Relaxed);
        Ok(node)
    }

    /// Take up to `want` objects from the partial slabs of a node whose
    /// list lock `l` is held, handing each to `put`; returns how many. A
    /// slab left without free objects moves to the full list. Free
    /// pointers are checked as they are followed: a corrupt one is
    /// reported ("Freepointer corrupt") and the rest of that chain isolated.
    #[inline]
    fn take_from_partial(
        &self,
        s: &KmemCache,
        l: &mut NodeLists,
        want: usize,
        mut put: impl FnMut(usize),
    ) -> usize {
        let mm = self.mem_map();
        let mut got = 0;
        while got < want {
            let Some(idx) = l.partial.first() else { break };
            let page = mm.at(idx);
            let base = self.dm.base + (mm.pfn_of(idx) << PAGE_SHIFT) as usize;
            let objects = page.slab_objects();
            let mut inuse = page.slab_inuse();
            let mut fl = page.slab_freelist();
            while fl != 0 && got < want {
                let obj = base + fl as usize - 1;
                let next = s.get_fp(obj);
                fl = if next == 0 {
                    0
                } else if s.obj_index(base, objects, next).is_some() {
                    (next - base + 1) as u32
                } else {
                    self.freepointer_corrupt(s, base, obj, next);
                    inuse = objects - 1;
                    0
                };
                put(obj);
                got += 1;
                inuse += 1;
            }
            page.set_slab_freelist(fl);
            page.set_slab_counters(inuse, objects);
            if fl == 0 {
                l.partial.remove(&mm, idx);
                l.nr_partial -= 1;
                l.full.push_head(&mm, idx);
            }
        }
        got
    }

    #[cold]
    #[inline(never)]
    fn freepointer_corrupt(&self, s: &KmemCache, base: usize, obj: usize, next: usize) {
        slab_bug(&self.p, s, format_args!("Freepointer corrupt"));
        report!(
            &self.p,
            Level::Err,
            "Object 0x{:x} @offset={} fp=0x{:x}",
            obj,
            obj - base,
            next
        );
        report!(
            &self.p,
            Level::Err,
            "FIX {}: Isolate corrupted freechain",
            s.name()
        );
    }

    /// Put object `x` of slab `page` back on the slab's freelist. The node's
    /// list lock is held; an emptied slab beyond `min_partial` is unlinked
    /// and pushed on `discard` for the caller to free after unlocking.
    #[inline(always)]
    fn free_to_slab_locked(
        &self,
        s: &KmemCache,
        l: &mut NodeLists,
        slab: SlabRef<'_>,
        x: usize,
        discard: &mut PageList,
    ) {
        let mm = self.mem_map();
        let (page, idx, base) = (slab.page, slab.idx, slab.base);
        let fl = page.slab_freelist();
        let was_full = fl == 0;
        s.set_fp(x, if fl == 0 { 0 } else { base + fl as usize - 1 });
        page.set_slab_freelist((x - base + 1) as u32);
        let inuse = page.slab_inuse() - 1;
        page.set_slab_counters(inuse, page.slab_objects());
        if was_full {
            l.full.remove(&mm, idx);
            l.partial.push_tail(&mm, idx);
            l.nr_partial += 1;
        }
        if inuse == 0 && l.nr_partial > s.min_partial {
            l.partial.remove(&mm, idx);
            l.nr_partial -= 1;
            discard.push_head(&mm, idx);
        }
    }

    fn discard_all(&self, s: &KmemCache, mut discard: PageList) -> u64 {
        let mm = self.mem_map();
        let mut n = 0;
        while let Some(idx) = discard.pop_head(&mm) {
            self.discard_slab(s, mm.at(idx));
            n += 1;
        }
        n
    }

    /// Free objects straight into their slabs (all on node `nid`).
    fn free_objects_to_slabs(&self, s: &KmemCache, nid: usize, objs: &[*mut u8]) {
        let mut discard = PageList::new();
        {
            let mut l = s.node(nid.min(s.nr_nodes - 1)).lists.lock();
            for &x in objs {
                if let Some(slab) = self.slab_of(x) {
                    self.free_to_slab_locked(s, &mut l, slab, x as usize, &mut discard);
                }
            }
        }
        self.discard_all(s, discard);
    }

    /// `kmem_cache_alloc()`.
    #[track_caller]
    #[inline(always)]
    pub fn kmem_cache_alloc(&self, s: &KmemCache, gfp: Gfp) -> Result<NonNull<u8>> {
        self.slab_alloc_node(s, gfp, -1, Location::caller())
    }

    /// `kmem_cache_zalloc()`.
    #[track_caller]
    pub fn kmem_cache_zalloc(&self, s: &KmemCache, gfp: Gfp) -> Result<NonNull<u8>> {
        self.slab_alloc_node(s, gfp | gfp::__GFP_ZERO, -1, Location::caller())
    }

    /// `kmem_cache_alloc_node()`.
    #[track_caller]
    pub fn kmem_cache_alloc_node(&self, s: &KmemCache, gfp: Gfp, node: i32) -> Result<NonNull<u8>> {
        self.slab_alloc_node(s, gfp, node, Location::caller())
    }

    /// The allocation fast path (`slab_alloc_node()`): one CPU-local
    /// section, one pop from the CPU's main sheaf. Everything else (an
    /// armed pre-allocation hook, a debug cache, another node, an empty
    /// main sheaf, a pending flush request) goes to
    /// [`slab_alloc_slow`](Self::slab_alloc_slow).
    ///
    /// The object or the error travels as one word
    /// ([`Error::to_err_ptr`], Linux's `ERR_PTR`) and becomes a `Result`
    /// only here, in the caller's frame: a `Result` coming back from an out
    /// of line function would be returned through memory.
    #[inline(always)]
    pub(crate) fn slab_alloc_node(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> Result<NonNull<u8>> {
        let x = self.slab_alloc_raw(s, gfp, node, caller);
        match Error::from_err_ptr(x) {
            Some(e) => Err(e),
            // Not an error value, so an object.
            None => Ok(NonNull::new(x as *mut u8).expect("objects are not at address 0")),
        }
    }

    /// [`slab_alloc_node`](Self::slab_alloc_node) in `ERR_PTR` form.
    ///
    /// The section is entered and left by hand rather than with a
    /// [`LocalGuard`]: nothing in it can panic, and the way out is shaped
    /// for the code generator. The slow path is entered *inside* the
    /// section and leaves it first thing, so the call is a tail call and
    /// no argument has to survive the platform's `local_exit` (which may
    /// run pending cross-CPU calls); on the fast way out only the object
    /// does. That keeps the function free of register saves.
    #[inline(always)]
    fn slab_alloc_raw(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> usize {
        // slab_pre_alloc_hook(): might_alloc() under CONFIG_DEBUG_ATOMIC_SLEEP
        // and failslab, one test for both while neither is on.
        if self.slab_hooks_armed() {
            return self.slab_alloc_hooked(s, gfp, node, caller);
        }
        let st = self.p.local_enter_leaf();
        let cc = s.cpu(st.cpu);
        let gate = cc.gate.load(Relaxed);
        if (node < 0 && gate & CPU_SLOW == 0) || gate == node as u32 {
            // SAFETY: this CPU's sheaves, inside its local section `st`;
            // main is a valid sheaf of this CPU.
            let main = unsafe { &mut *(*cc.sheaves.get()).main };
            let n = main.size;
            // 1..=SHEAF_CAPACITY: a non-empty sheaf (and no bounds check).
            if n.wrapping_sub(1) < SHEAF_CAPACITY {
                let x = main.objects[n];
                main.size = n - 1;
                self.p.local_exit_leaf(st);
                // `gfp` is usually a constant here (the function is inlined
                // into its caller), so the test costs nothing without
                // __GFP_ZERO.
                return self.slab_post_alloc(s, x as usize, gfp);
            }
        }
        self.slab_alloc_slow(st, s, gfp, node, caller)
    }

    /// The pre-allocation hooks, then the allocation, for when a hook is
    /// armed.
    #[cold]
    #[inline(never)]
    fn slab_alloc_hooked(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> usize {
        if self.debug_atomic_sleep() {
            self.might_alloc(gfp, caller);
        }
        if let Err(e) = self.failslab_hook(s, gfp, caller) {
            return e.to_err_ptr();
        }
        let st = self.p.local_enter_leaf();
        self.slab_alloc_slow(st, s, gfp, node, caller)
    }

    /// `slab_post_alloc_hook()`: zero the object for `__GFP_ZERO`.
    #[inline]
    fn slab_post_alloc(&self, s: &KmemCache, x: usize, gfp: Gfp) -> usize {
        if gfp.contains(gfp::__GFP_ZERO) {
            // SAFETY: a freshly allocated object of at least object_size bytes.
            unsafe { ptr::write_bytes(x as *mut u8, 0, s.geo.object_size) };
        }
        x
    }

    /// Everything [`slab_alloc_raw`](Self::slab_alloc_raw) does not do
    /// itself; entered inside the section `st`, which it leaves at once.
    #[cold]
    #[inline(never)]
    fn slab_alloc_slow(
        &self,
        st: LocalState,
        s: &KmemCache,
        gfp: Gfp,
        node: i32,
        caller: &'static Location<'static>,
    ) -> usize {
        self.p.local_exit_leaf(st);
        let x = if s.is_debug() {
            let nid = if node < 0 {
                self.numa_node_id()
            } else {
                node as usize
            };
            self.alloc_debug(s, gfp, nid, caller)
        } else if node < 0 || node as usize == self.numa_node_id() {
            self.alloc_sheaf(s, gfp)
        } else {
            let mut one = [0usize; 1];
            self.refill_from_slabs(s, gfp, node as usize, &mut one)
                .map(|_| one[0])
        };
        match x {
            Ok(x) => self.slab_post_alloc(s, x, gfp),
            Err(e) => e.to_err_ptr(),
        }
    }

    /// Honour a flush request for this CPU's sheaves. Called inside the
    /// CPU's local section with its sheaves borrowed.
    fn flush_sheaves_locked(&self, s: &KmemCache, sh: &mut CpuSheaves, nid: usize) {
        for sheaf in [sh.main, sh.spare] {
            // SAFETY: main and spare are this CPU's sheaves, valid for the
            // cache's life and touched only inside this CPU's section.
            let sf = unsafe { &mut *sheaf };
            self.free_objects_to_slabs(s, nid, sf.objects());
            sf.size = 0;
        }
    }

    /// The sheaf allocation path past the fast path's main sheaf: the
    /// spare, then a full sheaf from the barn, then a refill of the main
    /// sheaf from the node's partial slabs (`refill_sheaf()`), all in one
    /// CPU-local section; only when no partial slab has a free object is
    /// a new slab allocated, outside the section, and the whole tried again.
    fn alloc_sheaf(&self, s: &KmemCache, gfp: Gfp) -> Result<usize> {
        // The node whose partial slabs refill the sheaf: ours, unless the
        // last new slab had to come from another node.
        let mut from = None;
        loop {
            let nid;
            {
                let g = LocalGuard::new(&self.p);
                let cc = s.cpu(g.cpu());
                nid = cc.nid();
                // SAFETY: this CPU's sheaves, inside its local section `g`.
                let sh = unsafe { &mut *cc.sheaves.get() };
                if cc.take_flush() {
                    self.flush_sheaves_locked(s, sh, nid);
                }
                // SAFETY: sheaves are valid (see above); main != spare.
                let main = unsafe { &mut *sh.main };
                if main.size > 0 {
                    return Ok(main.pop() as usize);
                }
                // SAFETY: as above.
                if unsafe { (*sh.spare).size } > 0 {
                    core::mem::swap(&mut sh.main, &mut sh.spare);
                    // SAFETY: as above.
                    return Ok(unsafe { (*sh.main).pop() } as usize);
                }
                let mut l = s.node(nid.min(s.nr_nodes - 1)).lists.lock();
                // A full sheaf from the barn, for our empty main.
                if let Some(full) = l.barn_full.pop() {
                    // SAFETY: main is a valid sheaf we own; it moves to the barn.
                    unsafe { l.barn_empty.push(sh.main) };
                    sh.main = full;
                    // SAFETY: a barn sheaf is valid; now ours.
                    return Ok(unsafe { (*sh.main).pop() } as usize);
                }
                // Refill the empty main sheaf straight from partial slabs.
                // SAFETY: as above.
                let main = unsafe { &mut *sh.main };
                let push = |o: usize| main.push(o as *mut u8);
                let got = match from {
                    Some(node) if node != nid => {
                        drop(l);
                        let mut l = s.node(node).lists.lock();
                        self.take_from_partial(s, &mut l, s.sheaf_cap, push)
                    }
                    _ => self.take_from_partial(s, &mut l, s.sheaf_cap, push),
                };
                if got > 0 {
                    return Ok(main.pop() as usize);
                }
            }
            // No free object on this node: a new slab, outside the section
            // (it allocates pages), then try again.
            match self.new_slab(s, gfp, nid) {
                Ok(node) => from = Some(node),
                Err(e) => {
                    if !gfp.contains(gfp::__GFP_NOWARN) {
                        self.slab_oom(s, gfp, nid);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// `slab_out_of_memory()`.
    #[cold]
    #[inline(never)]
    fn slab_oom(&self, s: &KmemCache, gfp: Gfp, nid: usize) {
        report!(
            &self.p,
            Level::Warning,
            "SLUB: Unable to allocate memory on CPU {} (of node {}) gfp={:#x}({})",
            self.p.smp_processor_id(),
            nid,
            gfp.bits(),
            gfp
        );
        report!(
            &self.p,
            Level::Warning,
            "  cache: {}, object size: {}, buffer size: {}, default order: {}, min order: {}",
            s.name(),
            s.geo.object_size,
            s.geo.size,
            s.geo.order,
            s.geo.min_order
        );
    }

    /// `kmem_cache_free()`. Frees of objects of another cache, of addresses
    /// that are no object start, and (for debug caches) double frees and
    /// damaged red zones are reported and refused.
    ///
    /// # Safety
    ///
    /// `x` is not used after a successful free (the allocator checks what
    /// it can, but cannot know who else holds the pointer).
    #[track_caller]
    #[inline(always)]
    pub unsafe fn kmem_cache_free(&self, s: &KmemCache, x: *mut u8) -> Result<()> {
        if x.is_null() {
            return Ok(());
        }
        // cache_from_obj() + check_valid_pointer(); each refusal is a tail call.
        let Some(slab) = self.slab_of(x) else {
            return self.not_in_slab(s, x, "kmem_cache_free");
        };
        if slab.page.slab_cache_addr() != s as *const KmemCache as usize {
            return self.wrong_cache(s, slab.page, "kmem_cache_free");
        }
        if !s.is_obj_start(slab, x) {
            return self.invalid_pointer(s, x);
        }
        self.slab_free(s, slab, x, Location::caller())
    }

    /// The free fast path (`slab_free()`), for an object the caller has
    /// checked (`checked_slab()`): one CPU-local section, one push onto the
    /// CPU's main sheaf after comparing the object with the sheaf's top (a
    /// double free in a row). Everything else (a debug cache, an object of
    /// another node, a full main sheaf, a pending flush request, the double
    /// free itself) goes to [`slab_free_slow`](Self::slab_free_slow),
    /// inside the section, as in [`slab_alloc_node`](Self::slab_alloc_node).
    #[inline]
    pub(crate) fn slab_free(
        &self,
        s: &KmemCache,
        slab: SlabRef<'_>,
        x: *mut u8,
        caller: &'static Location<'static>,
    ) -> Result<()> {
        let st = self.p.local_enter_leaf();
        let cc = s.cpu(st.cpu);
        if cc.gate.load(Relaxed) == slab.nid as u32 {
            // SAFETY: this CPU's sheaves, inside its local section `st`;
            // main is a valid sheaf of this CPU.
            let main = unsafe { &mut *(*cc.sheaves.get()).main };
            let n = main.size;
            // objects[n] is the top (the null guard when empty).
            // SAFETY (both indexings): n < cap <= SHEAF_CAPACITY, so n and
            // n + 1 are within the SHEAF_CAPACITY + 1 slots.
            if n < cc.cap as usize && unsafe { *main.objects.get_unchecked(n) } != x {
                unsafe { *main.objects.get_unchecked_mut(n + 1) = x };
                main.size = n + 1;
                self.p.local_exit_leaf(st);
                return Ok(());
            }
        }
        self.slab_free_slow(st, s, x, caller)
    }

    /// Everything [`slab_free`](Self::slab_free) does not do itself;
    /// entered inside the section `st`, which it leaves at once.
    #[cold]
    #[inline(never)]
    fn slab_free_slow(
        &self,
        st: LocalState,
        s: &KmemCache,
        x: *mut u8,
        caller: &'static Location<'static>,
    ) -> Result<()> {
        self.p.local_exit_leaf(st);
        // Found again rather than passed: six arguments fit in registers.
        let slab = self.slab_of(x).expect("the fast path found the slab");
        if s.is_debug() {
            return self.free_debug(s, slab.page, x as usize, caller);
        }
        let nid = slab.nid;
        let g = LocalGuard::new(&self.p);
        let cc = s.cpu(g.cpu());
        if nid != cc.nid() {
            // Objects of a remote node go straight back to their slab.
            drop(g);
            self.free_objects_to_slabs(s, nid, &[x]);
            return Ok(());
        }
        // SAFETY: this CPU's sheaves, inside its local section `g`.
        let sh = unsafe { &mut *cc.sheaves.get() };
        if cc.take_flush() {
            self.flush_sheaves_locked(s, sh, nid);
        }
        // SAFETY: main is a valid sheaf of this CPU.
        let main = unsafe { &mut *sh.main };
        if main.top() == x {
            drop(g);
            slab_bug(&self.p, s, format_args!("Object already free"));
            report!(
                &self.p,
                Level::Err,
                "Object 0x{:x} freed twice in a row (double free) from {}",
                x as usize,
                caller
            );
            return Err(Error::BadState);
        }
        if main.size < s.sheaf_cap {
            main.push(x);
            return Ok(());
        }
        // SAFETY: spare is a valid sheaf of this CPU.
        if unsafe { (*sh.spare).size } == 0 {
            core::mem::swap(&mut sh.main, &mut sh.spare);
        } else {
            let mut l = s.node(nid.min(s.nr_nodes - 1)).lists.lock();
            if let Some(empty) = l.barn_empty.pop() {
                // SAFETY: main is full and ours; it moves to the barn.
                unsafe { l.barn_full.push(sh.main) };
                sh.main = empty;
            } else {
                drop(l);
                // No room anywhere: flush the main sheaf into its slabs.
                // SAFETY: as above.
                let m = unsafe { &mut *sh.main };
                self.free_objects_to_slabs(s, nid, m.objects());
                m.size = 0;
            }
        }
        // SAFETY: main is a valid, now non-full sheaf of this CPU.
        unsafe { (*sh.main).push(x) };
        Ok(())
    }

    /// `kmem_cache_alloc_bulk()`: fill `out` entirely or not at all.
    #[track_caller]
    pub fn kmem_cache_alloc_bulk(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        out: &mut [*mut u8],
    ) -> Result<usize> {
        let caller = Location::caller();
        for i in 0..out.len() {
            match self.slab_alloc_node(s, gfp, -1, caller) {
                Ok(p) => out[i] = p.as_ptr(),
                Err(e) => {
                    for &o in &out[..i] {
                        // SAFETY: allocated just above, never handed out.
                        let _ = unsafe { self.kmem_cache_free(s, o) };
                    }
                    out[..i].iter_mut().for_each(|o| *o = ptr::null_mut());
                    return Err(e);
                }
            }
        }
        Ok(out.len())
    }

    /// `kmem_cache_free_bulk()`.
    ///
    /// # Safety
    ///
    /// As [`kmem_cache_free`](Self::kmem_cache_free), for every object.
    #[track_caller]
    pub unsafe fn kmem_cache_free_bulk(&self, s: &KmemCache, objs: &[*mut u8]) -> Result<()> {
        let mut res = Ok(());
        for &o in objs {
            // SAFETY: the caller's contract, object by object.
            if let Err(e) = unsafe { self.kmem_cache_free(s, o) } {
                res = Err(e);
            }
        }
        res
    }

    /// `kmem_cache_size()`.
    pub fn kmem_cache_size(&self, s: &KmemCache) -> usize {
        s.geo.object_size
    }

    /// Flush the running CPU's sheaves of `s`.
    fn flush_cpu_sheaves(&self, s: &KmemCache) {
        let g = LocalGuard::new(&self.p);
        let cc = s.cpu(g.cpu());
        // SAFETY: this CPU's sheaves inside section `g`.
        let sh = unsafe { &mut *cc.sheaves.get() };
        cc.gate.fetch_and(!CPU_FLUSH, Relaxed);
        self.flush_sheaves_locked(s, sh, self.cpu_to_node(g.cpu()));
    }

    /// `flush_all()`: flush every CPU's sheaves of `s`, on each CPU through
    /// a cross-CPU call; a CPU that cannot be reached (or any, from atomic
    /// context) is asked to flush at its next use of the cache.
    fn flush_all(&self, s: &KmemCache) {
        self.flush_cpu_sheaves(s);
        let me = {
            let g = LocalGuard::new(&self.p);
            g.cpu()
        };
        let can_wait = !self.p.in_atomic();
        for cpu in (0..s.nr_cpus).filter(|&c| c != me) {
            let done = can_wait
                && crate::platform::call_on_cpu(&self.p, cpu, || self.flush_cpu_sheaves(s)).is_ok();
            if !done {
                s.cpu(cpu).request_flush();
            }
        }
    }

    /// `kmem_cache_shrink()`: flush sheaves and the barns, then give every
    /// empty slab back to the page allocator. Returns the slabs freed.
    pub fn kmem_cache_shrink(&self, s: &KmemCache) -> u64 {
        self.flush_all(s);
        let mut freed = 0;
        for nid in 0..s.nr_nodes {
            // Barn sheaves back into slabs.
            loop {
                let full = s.node(nid).lists.lock().barn_full.pop();
                let Some(sh) = full else { break };
                // SAFETY: a barn sheaf, now exclusively ours.
                let sf = unsafe { &mut *sh };
                self.free_objects_to_slabs(s, nid, sf.objects());
                sf.size = 0;
                // SAFETY: valid, unlinked.
                unsafe { s.node(nid).lists.lock().barn_empty.push(sh) };
            }
            let mut discard = PageList::new();
            {
                let mut l = s.node(nid).lists.lock();
                let mm = self.mem_map();
                let empties: [u32; 64] = {
                    let mut e = [0u32; 64];
                    let mut n = 0;
                    for idx in l.partial.iter(&mm) {
                        if n < 64 && mm.at(idx).slab_inuse() == 0 {
                            e[n] = idx + 1;
                            n += 1;
                        }
                    }
                    e
                };
                for e in empties.iter().take_while(|&&e| e != 0) {
                    l.partial.remove(&mm, e - 1);
                    l.nr_partial -= 1;
                    discard.push_head(&mm, e - 1);
                }
            }
            let n = self.discard_all(s, discard);
            freed += n;
            if n == 64 {
                freed += self.kmem_cache_shrink(s);
            }
        }
        freed
    }

    /// `kmem_cache_destroy()`.
    ///
    /// A cache with objects still allocated is not destroyed: Linux's
    /// "still has objects" report lists them, and the cache stays usable.
    ///
    /// # Safety
    ///
    /// Nothing may use `s` (or an object of it) after a successful destroy,
    /// and no other CPU may be using it while it runs.
    #[track_caller]
    pub unsafe fn kmem_cache_destroy(&self, s: &KmemCache) -> Result<()> {
        let caller = Location::caller();
        if s.refcount.fetch_sub(1, Relaxed) > 1 {
            return Ok(());
        }
        self.kmem_cache_shrink(s);
        let left: u64 = (0..s.nr_nodes)
            .map(|n| s.node(n).nr_slabs.load(Relaxed))
            .sum();
        if left > 0 {
            s.refcount.fetch_add(1, Relaxed);
            report!(
                &self.p,
                Level::Err,
                "kmem_cache_destroy {}: Slab cache still has objects when called from {}",
                s.name(),
                caller
            );
            self.list_slab_objects(s);
            return Err(Error::Busy);
        }
        {
            let mut head = self.slab_state().caches.lock();
            let me = s as *const KmemCache as *mut KmemCache;
            if *head == me {
                *head = s.next.load(Relaxed);
            } else {
                let mut c = *head;
                while !c.is_null() {
                    // SAFETY: live caches on the list, under its lock.
                    let cr = unsafe { &*c };
                    if cr.next.load(Relaxed) == me {
                        cr.next.store(s.next.load(Relaxed), Relaxed);
                        break;
                    }
                    c = cr.next.load(Relaxed);
                }
            }
        }
        let (pfn, order) = (s.meta_pfn, s.meta_order);
        let page = self.pfn_to_page(pfn).ok_or(Error::BadAddress)?;
        self.__free_pages(page, order)?;
        self.slab.meta_pages.fetch_sub(1 << order, Relaxed);
        Ok(())
    }

    /// The objects still in use in `s`, as `list_slab_objects()` prints them.
    fn list_slab_objects(&self, s: &KmemCache) {
        report!(
            &self.p,
            Level::Err,
            "Objects remaining in {} on __kmem_cache_shutdown()",
            s.name()
        );
        let mm = self.mem_map();
        for nid in 0..s.nr_nodes {
            let l = s.node(nid).lists.lock();
            for idx in l.partial.iter(&mm).chain(l.full.iter(&mm)) {
                let page = mm.at(idx);
                let base = self.page_address(page).map_or(0, |a| a.as_ptr() as usize);
                let n = page.slab_objects() as usize;
                let mut free = [0u64; 512];
                let mut fl = page.slab_freelist();
                let mut guard = 0;
                while fl != 0 && guard <= n {
                    let obj = base + fl as usize - 1;
                    if let Some(i) = s.obj_index(base, n as u32, obj) {
                        if i < 512 * 64 {
                            free[i / 64] |= 1 << (i % 64);
                        }
                    }
                    let next = s.get_fp(obj);
                    fl = if next == 0 || s.obj_index(base, n as u32, next).is_none() {
                        0
                    } else {
                        (next - base + 1) as u32
                    };
                    guard += 1;
                }
                for i in 0..n.min(512 * 64) {
                    if free[i / 64] & (1 << (i % 64)) == 0 {
                        let obj = s.obj_addr(base, i);
                        report!(
                            &self.p,
                            Level::Err,
                            "Object 0x{:x} @offset={}",
                            obj,
                            obj - base
                        );
                        self.print_track(s, obj, false);
                    }
                }
            }
        }
    }

    // ---- debug ----

    fn track(&self, s: &KmemCache, obj: usize, free: bool) -> Option<Track> {
        let off = s.geo.track_offset()?;
        let at = obj + off + if free { super::geometry::TRACK_SIZE } else { 0 };
        // SAFETY: the slot's metadata area holds two Track records.
        let t = unsafe { ptr::read_unaligned(at as *const Track) };
        (t.addr != 0).then_some(t)
    }

    /// `print_track()`: "Allocated in <site> age=.. cpu=.. pid=.." (or
    /// "Freed in"), when `SLAB_STORE_USER` recorded one.
    fn print_track(&self, s: &KmemCache, obj: usize, free: bool) {
        if let Some(t) = self.track(s, obj, free) {
            // SAFETY: set_track stores a &'static Location in `addr`.
            let loc = unsafe { &*(t.addr as *const Location<'static>) };
            report!(
                &self.p,
                Level::Err,
                "{} in {} age={} cpu={} pid={}",
                if free { "Freed" } else { "Allocated" },
                loc,
                self.p.now_ns().saturating_sub(t.when) / 1_000_000,
                t.cpu,
                t.pid
            );
        }
    }

    fn set_track(&self, s: &KmemCache, obj: usize, free: bool, caller: &'static Location<'static>) {
        let Some(off) = s.geo.track_offset() else {
            return;
        };
        let at = obj + off + if free { super::geometry::TRACK_SIZE } else { 0 };
        let t = Track {
            addr: caller as *const Location<'static> as usize,
            cpu: self.p.smp_processor_id() as u32,
            pid: self.p.current().pid,
            when: self.p.now_ns(),
            _pad: 0,
        };
        // SAFETY: as in `track`.
        unsafe { ptr::write_unaligned(at as *mut Track, t) };
    }

    /// `init_object()`: red zones to `active`/inactive, free objects poisoned.
    fn init_object(&self, s: &KmemCache, obj: usize, active: bool) {
        let f = s.geo.flags;
        let val = if active {
            SLUB_RED_ACTIVE
        } else {
            SLUB_RED_INACTIVE
        };
        // SAFETY (all three writes): the slot of `obj` belongs to the cache
        // and is not handed out while we lay out its debug bytes.
        if f.contains(SLAB_RED_ZONE) {
            unsafe {
                ptr::write_bytes(
                    (obj - s.geo.red_left_pad) as *mut u8,
                    val,
                    s.geo.red_left_pad,
                )
            };
        }
        if s.geo.object_poison() && !active {
            unsafe {
                ptr::write_bytes(obj as *mut u8, POISON_FREE, s.geo.object_size - 1);
                *((obj + s.geo.object_size - 1) as *mut u8) = POISON_END;
            }
        }
        if f.contains(SLAB_RED_ZONE) {
            unsafe {
                ptr::write_bytes(
                    (obj + s.geo.object_size) as *mut u8,
                    val,
                    s.geo.inuse - s.geo.object_size,
                )
            };
        }
    }

    /// `check_object()`: the first damaged range of `obj`, if any, as
    /// (what, first bad byte address, its value, expected value).
    fn check_object(
        &self,
        s: &KmemCache,
        obj: usize,
        active: bool,
    ) -> Option<(Damage, usize, u8, u8)> {
        let f = s.geo.flags;
        let val = if active {
            SLUB_RED_ACTIVE
        } else {
            SLUB_RED_INACTIVE
        };
        let scan = |start: usize, len: usize, want: u8| -> Option<(usize, u8)> {
            (start..start + len).find_map(|a| {
                // SAFETY: inside the object's slot, which is ours.
                let b = unsafe { *(a as *const u8) };
                (b != want).then_some((a, b))
            })
        };
        if f.contains(SLAB_RED_ZONE) {
            if let Some((a, b)) = scan(obj - s.geo.red_left_pad, s.geo.red_left_pad, val) {
                return Some((Damage::LeftRedzone, a, b, val));
            }
            if let Some((a, b)) = scan(
                obj + s.geo.object_size,
                s.geo.inuse - s.geo.object_size,
                val,
            ) {
                return Some((Damage::RightRedzone, a, b, val));
            }
        }
        if s.geo.object_poison() && !active {
            if let Some((a, b)) = scan(obj, s.geo.object_size - 1, POISON_FREE) {
                return Some((Damage::Poison, a, b, POISON_FREE));
            }
            if let Some((a, b)) = scan(obj + s.geo.object_size - 1, 1, POISON_END) {
                return Some((Damage::Poison, a, b, POISON_END));
            }
        }
        None
    }

    fn report_damage(&self, s: &KmemCache, page: &Page, obj: usize, d: (Damage, usize, u8, u8)) {
        let base = self.page_address(page).map_or(0, |a| a.as_ptr() as usize);
        let (what, at, got, want) = d;
        slab_bug(&self.p, s, format_args!("{}", what.what()));
        report!(
            &self.p,
            Level::Err,
            "0x{:x} @offset={}. First byte 0x{:x} instead of 0x{:x}",
            at,
            at.wrapping_sub(obj) as isize,
            got,
            want
        );
        for free in [false, true] {
            self.print_track(s, obj, free);
        }
        report!(
            &self.p,
            Level::Err,
            "Slab 0x{:x} objects={} used={} fp=0x{:x} flags={:#x}",
            self.page_to_pfn(page),
            page.slab_objects(),
            page.slab_inuse(),
            page.slab_freelist(),
            page.flags()
        );
        report!(
            &self.p,
            Level::Err,
            "Object 0x{:x} @offset={}",
            obj,
            obj - base
        );
    }

    /// `alloc_debug_processing()`: check the object is intact, then lay out
    /// active red zones and record the caller. A damaged free object is
    /// reported and its slab taken out of use ("Marking all objects used").
    fn alloc_debug(
        &self,
        s: &KmemCache,
        gfp: Gfp,
        nid: usize,
        caller: &'static Location<'static>,
    ) -> Result<usize> {
        loop {
            let mut one = [0usize; 1];
            self.refill_from_slabs(s, gfp, nid, &mut one)?;
            let obj = one[0];
            let page = self
                .virt_to_slab(obj as *const u8)
                .expect("object of a slab");
            if let Some(d) = self.check_object(s, obj, false) {
                self.report_damage(s, page, obj, d);
                report!(
                    &self.p,
                    Level::Err,
                    "FIX {}: Marking all objects used",
                    s.name()
                );
                page.set_slab_freelist(0);
                page.set_slab_counters(page.slab_objects(), page.slab_objects());
                let mut l = s.node(page.nid().min(s.nr_nodes - 1)).lists.lock();
                let mm = self.mem_map();
                let idx = mm.index_of(page).expect("slab page");
                if l.partial.iter(&mm).any(|i| i == idx) {
                    l.partial.remove(&mm, idx);
                    l.nr_partial -= 1;
                    l.full.push_head(&mm, idx);
                }
                continue;
            }
            self.init_object(s, obj, true);
            self.set_track(s, obj, false, caller);
            return Ok(obj);
        }
    }

    /// Whether `obj` is on its slab's freelist (`on_freelist()`).
    fn on_freelist(&self, s: &KmemCache, page: &Page, obj: usize) -> bool {
        let base = self.page_address(page).map_or(0, |a| a.as_ptr() as usize);
        let n = page.slab_objects();
        let mut fl = page.slab_freelist();
        let mut steps = 0;
        while fl != 0 && steps <= n {
            let o = base + fl as usize - 1;
            if o == obj {
                return true;
            }
            let next = s.get_fp(o);
            fl = if next == 0 || s.obj_index(base, n, next).is_none() {
                0
            } else {
                (next - base + 1) as u32
            };
            steps += 1;
        }
        false
    }

    /// `free_debug_processing()`: refuse double frees and objects whose red
    /// zones were overwritten, record the caller, poison, and free.
    fn free_debug(
        &self,
        s: &KmemCache,
        page: &Page,
        obj: usize,
        caller: &'static Location<'static>,
    ) -> Result<()> {
        let nid = page.nid().min(s.nr_nodes - 1);
        let mut discard = PageList::new();
        {
            let mut l = s.node(nid).lists.lock();
            if self.on_freelist(s, page, obj) {
                drop(l);
                let base = self.page_address(page).map_or(0, |a| a.as_ptr() as usize);
                slab_bug(&self.p, s, format_args!("Object already free"));
                report!(
                    &self.p,
                    Level::Err,
                    "Object 0x{:x} @offset={} freed again from {}",
                    obj,
                    obj - base,
                    caller
                );
                self.print_track(s, obj, true);
                return Err(Error::BadState);
            }
            if let Some(d) = self.check_object(s, obj, true) {
                drop(l);
                self.report_damage(s, page, obj, d);
                report!(
                    &self.p,
                    Level::Err,
                    "FIX {}: Object at 0x{:x} not freed",
                    s.name(),
                    obj
                );
                return Err(Error::BadState);
            }
            self.set_track(s, obj, true, caller);
            self.init_object(s, obj, false);
            let slab = self
                .slab_of(obj as *const u8)
                .expect("checked by the caller");
            self.free_to_slab_locked(s, &mut l, slab, obj, &mut discard);
        }
        self.discard_all(s, discard);
        Ok(())
    }

    /// Free objects on partial slabs of `s` (for `/proc/slabinfo`'s active
    /// objects: `count_partial(n, count_free)`).
    pub(crate) fn slab_free_objects(&self, s: &KmemCache) -> u64 {
        let mm = self.mem_map();
        (0..s.nr_nodes)
            .map(|nid| {
                let l = s.node(nid).lists.lock();
                l.partial
                    .iter(&mm)
                    .map(|i| {
                        let p = mm.at(i);
                        u64::from(p.slab_objects() - p.slab_inuse())
                    })
                    .sum::<u64>()
            })
            .sum()
    }

    /// Slabs, objects and pages of `s` over all nodes.
    pub fn slab_totals(&self, s: &KmemCache) -> (u64, u64, u64) {
        (0..s.nr_nodes).fold((0, 0, 0), |(a, b, c), nid| {
            let n = s.node(nid);
            (
                a + n.nr_slabs.load(Relaxed),
                b + n.total_objects.load(Relaxed),
                c + n.nr_pages.load(Relaxed),
            )
        })
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

const _: () = assert!(MAX_NUMNODES <= 64);
const _: () = assert!(PAGE_SHIFT == 12);
