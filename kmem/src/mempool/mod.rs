//! # mempool: reserved elements for allocations that must make progress (`mm/mempool.c`)
//!
//! A memory pool keeps `min_nr` preallocated *elements* in reserve so that
//! code which must make forward progress under memory pressure (the block
//! layer's bios, device-mapper's I/O structures, writeback) always gets an
//! element eventually, even when the page allocator has nothing left: the
//! elements it hands out come back through [`Kmem::mempool_free`], which
//! refills the reserve first and wakes whoever waits for it. The pool never
//! depends on memory being freed by anybody but its own users.
//!
//! kmem follows Linux 6.18's `mm/mempool.c`:
//!
//! | Linux | kmem |
//! |---|---|
//! | `mempool_create(min_nr, alloc_fn, free_fn, pool_data)` | [`Kmem::mempool_create`] |
//! | `mempool_create_node(.., gfp_mask, node_id)` | [`Kmem::mempool_create_node`] |
//! | `mempool_create_slab_pool(min_nr, kc)` | [`Kmem::mempool_create_slab_pool`] |
//! | `mempool_create_kmalloc_pool(min_nr, size)` | [`Kmem::mempool_create_kmalloc_pool`] |
//! | `mempool_create_page_pool(min_nr, order)` | [`Kmem::mempool_create_page_pool`] |
//! | `mempool_alloc(pool, gfp_mask)` | [`Kmem::mempool_alloc`] |
//! | `mempool_alloc_preallocated(pool)` | [`Kmem::mempool_alloc_preallocated`] |
//! | `mempool_free(element, pool)` | [`Kmem::mempool_free`] |
//! | `mempool_resize(pool, new_min_nr)` | [`Kmem::mempool_resize`] |
//! | `mempool_destroy(pool)` / `mempool_exit(pool)` | [`Kmem::mempool_destroy`] |
//! | `mempool_initialized(pool)` | [`MempoolT::is_initialized`] |
//! | `mempool_alloc_slab`/`mempool_free_slab`, `mempool_kmalloc`/`mempool_kfree`, `mempool_alloc_pages`/`mempool_free_pages` | the methods of the same names on [`Kmem`] |
//!
//! The typed, safe API on top is [`crate::alloc::Mempool`].
//!
//! # Allocation: Linux's sequence
//!
//! [`Kmem::mempool_alloc`] first adds `__GFP_NOMEMALLOC | __GFP_NORETRY |
//! __GFP_NOWARN` to the caller's mask (a pool must not eat the emergency
//! reserves, loop in the page allocator, or warn: it has its own reserve),
//! then:
//!
//! 1. calls `alloc_fn` with that mask *without* `__GFP_DIRECT_RECLAIM` and
//!    `__GFP_IO`, so the first try neither reclaims nor starts I/O;
//! 2. failing that, takes an element from the reserve;
//! 3. if the reserve is empty, tries `alloc_fn` once more with the full mask;
//! 4. if that fails too and the reserve is still empty, a caller that cannot
//!    block (no `__GFP_DIRECT_RECLAIM`, such as `GFP_ATOMIC` and
//!    `GFP_NOWAIT`) gets [`Error::NoMemory`]; any other caller sleeps until
//!    an element comes back or [`MEMPOOL_WAIT_NS`] (Linux's
//!    `io_schedule_timeout(5*HZ)`) passes, and goes back to step 1 with the
//!    full mask.
//!
//! So a caller that may block never sees a failure. The wait is
//! [`Platform::wait_event`] on a channel made from the pool's address, with
//! the condition "the reserve holds an element"; [`Kmem::mempool_free`]
//! calls [`Platform::wake_up`] on that channel after a refill when someone
//! waits (Linux's `wq_has_sleeper()`: a wake-up costs a system call in the
//! simulator, and most refills have nobody to wake). A waiter counts itself
//! before it evaluates the condition and a refill checks the count after it
//! filled the reserve, with a full fence on both sides (Linux's `smp_mb()`
//! in `wq_has_sleeper()`), so either the refill sees the waiter or the
//! waiter's condition sees the element; the condition is evaluated by the
//! platform under its wait lock, so a wake-up between that and the sleep is
//! not lost either (Linux gets both from `prepare_to_wait` under the pool
//! lock).
//!
//! A caller in atomic context ([`Platform::in_atomic`]) that passes a
//! blocking mask cannot sleep either: [`Kmem::might_alloc`] reports "BUG:
//! sleeping function called from invalid context" and the call fails
//! instead of waiting (Linux's `might_alloc()` reports and then sleeps
//! anyway). As elsewhere in kmem the check is made where kmem would sleep,
//! and on every call with `BootParams::debug_atomic_sleep`. On a platform that
//! cannot block (the arena), `wait_event` returns at once. Where no other
//! context can run to free an element ([`Platform::others_can_run`]: the
//! arena, a simulated machine one thread drives) a blocking caller whose
//! pool stays empty fails with a report instead of waiting for ever, as a
//! Linux task would.
//!
//! `__GFP_ZERO` is refused with a report: elements from the reserve are not
//! zeroed, so the flag could not be honoured (Linux warns with
//! `VM_WARN_ON_ONCE` under `CONFIG_DEBUG_VM` and hands out dirty memory).
//!
//! # Free: refill first
//!
//! [`Kmem::mempool_free`] puts the element back into the reserve if the
//! reserve holds fewer than `min_nr` elements, and wakes the waiters;
//! otherwise it gives the element to `free_fn`. A pool with `min_nr` 0
//! keeps one element (Linux 6.17's fix for zero-minimum pools, whose
//! waiters were otherwise never woken): [`Kmem::mempool_create`]
//! preallocates `max(1, min_nr)` elements and a free refills an empty
//! reserve.
//!
//! The pool's lock (`pool->lock`) is taken with interrupts off, as Linux's
//! `spin_lock_irqsave()` ([`IrqSpinGuard`]):
//! drivers free elements from their interrupt handlers.
//!
//! The "is the reserve short?" test is made without the lock first, as
//! Linux does, so a free to a full pool costs no lock. Linux pairs an
//! `smp_wmb()` after taking an element from the reserve with an `smp_rmb()`
//! at the top of `mempool_free()`, so that a task that received the element
//! without any barrier of its own still reads a `curr_nr` from after that
//! allocation and cannot miss a refill the pool needs. kmem does the same
//! in the Rust memory model: a release fence after the removal (and before
//! the element is returned, hence before anyone can publish it) and an
//! acquire fence at the top of `mempool_free`. The same pair keeps kmem's
//! count of elements in use exact for such a hand-over, so it never
//! mistakes one for a double free. Fence-to-fence
//! synchronisation through whatever store published the element gives the
//! free a `curr_nr` at least as new as that removal. The test is repeated
//! under the lock before anything changes.
//!
//! # Element functions: `fn` pointers and [`PoolData`]
//!
//! The core has no heap, so the pool cannot own boxed closures. `alloc_fn`
//! and `free_fn` are plain function pointers ([`MempoolAllocFn`],
//! [`MempoolFreeFn`]); closures that capture nothing coerce to them. Their
//! context is [`PoolData`], Linux's `void *pool_data` made explicit: a slab
//! cache, a kmalloc size, a page order, or a private word. They receive
//! the machine as their first argument, since kmem has no global allocator.
//!
//! # The pool's own memory
//!
//! A [`MempoolT`] is a value owned by its creator, as a `mempool_t`
//! embedded with `mempool_init()` is in Linux (`struct bio_set` embeds
//! its pools that way); its element array is `kmalloc`ed from the machine,
//! as Linux's is. [`Kmem::mempool_destroy`] takes it by `&mut`, so nobody
//! can be using it meanwhile, and leaves it uninitialised (Linux's
//! `mempool_exit()` leaves `elements` NULL): every later call on it is
//! reported and refused. A pool dropped without being destroyed leaks its
//! reserve, as a `mempool_t` freed without `mempool_exit()` would. A pool
//! belongs to the machine that created it.
//!
//! # Bad input
//!
//! Each case is reported in the kernel's style and refused, with the pool
//! left as it was:
//!
//! - `mempool_create` without `alloc_fn` (with `min_nr` 0 the pool could
//!   never hand out anything; with more there is nothing to preallocate
//!   with), or over a slab cache with a constructor (reserved elements would
//!   not be constructed again; Linux's `VM_BUG_ON(mem->ctor)`):
//!   [`Error::InvalidArgument`];
//! - `mempool_free` of an element that is not the pool's: for a slab pool
//!   the object's page must be a slab of that cache and the pointer an
//!   object start; for a kmalloc pool a kmalloc object (slab or
//!   `kmalloc_large`) of at least the pool's size; for a page pool an
//!   allocated, non-slab page descriptor of the pool's order. Anything else
//!   is [`Error::BadAddress`]. A [`PoolData::Private`] pool is not checked
//!   (kmem cannot know what its elements are). A free when the pool has no
//!   element out, or of an element already in the reserve, is a double free:
//!   [`Error::BadState`]. A double free whose first free went to `free_fn`
//!   is left to the underlying allocator's own checks;
//! - `mempool_destroy` while elements are out (kmem counts the elements
//!   handed out and not yet returned, which Linux does not):
//!   "mempool_destroy: N elements still in use", [`Error::Busy`], the pool
//!   intact and usable;
//! - `mempool_resize` to 0 (Linux's `BUG_ON(new_min_nr <= 0)`):
//!   [`Error::InvalidArgument`];
//! - any call on a destroyed pool: [`Error::InvalidArgument`].
//!
//! `mempool_free` of NULL is a no-op, as in Linux. Element poisoning
//! (`CONFIG_SLUB_DEBUG_ON`'s `poison_element()`), KASAN hooks and the 6.19
//! bulk calls are not modelled.
//!
//! ```
//! use kmem::gfp::{GFP_KERNEL, GFP_NOIO};
//! # let mut mem = vec![0u8; 16 << 20];
//! # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
//! let mut pool = k.mempool_create_kmalloc_pool(4, 256)?; // 4 reserved 256-byte buffers
//! let buf = k.mempool_alloc(&pool, GFP_NOIO)?;
//! // SAFETY: `buf` came from `pool` and is not used again.
//! unsafe { k.mempool_free(buf.as_ptr(), &pool) }?;
//! assert_eq!(pool.curr_nr(), 4);
//! k.mempool_destroy(&mut pool)?;
//! # Ok::<(), kmem::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::gfp::{
    Gfp, __GFP_DIRECT_RECLAIM, __GFP_IO, __GFP_NOMEMALLOC, __GFP_NORETRY, __GFP_NOWARN, __GFP_ZERO,
    GFP_KERNEL,
};
use crate::kmalloc::{Owner, ZERO_SIZE_PTR};
use crate::platform::IrqSpinGuard;
use crate::platform::{Level, Platform};
use crate::slab::{KmemCache, SLAB_KMALLOC};
use crate::{report, Kmem, PAGE_SIZE};
use core::fmt;
use core::mem;
use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

mod elements;
#[cfg(test)]
mod tests;

/// How long [`Kmem::mempool_alloc`] sleeps for an element before trying
/// `alloc_fn` again: Linux's `io_schedule_timeout(5*HZ)`, 5 s.
pub const MEMPOOL_WAIT_NS: u64 = 5_000_000_000;

/// A pool element: Linux's `void *`. For a page pool it is the page
/// descriptor (`struct page *`); see [`Kmem::mempool_element_page`].
pub type Element = NonNull<u8>;

/// `mempool_alloc_t`: allocate one element with `gfp` for the pool whose
/// data is the third argument, or `None`.
///
/// Called without the pool lock, with the mask [`Kmem::mempool_alloc`]
/// chose (see the [module docs](self)). Any `fn` of this shape will do,
/// including a closure that captures nothing:
///
/// ```
/// use kmem::mempool::{MempoolAllocFn, PoolData};
/// let f: MempoolAllocFn<kmem::arena::ArenaPlatform<'_>> = |k, gfp, data| match data {
///     PoolData::Private(size) => k.kmalloc(*size, gfp).ok(),
///     _ => None,
/// };
/// # let _ = f;
/// ```
pub type MempoolAllocFn<P> = fn(&Kmem<P>, Gfp, &PoolData<'_>) -> Option<Element>;

/// `mempool_free_t`: free one element the paired [`MempoolAllocFn`]
/// allocated.
///
/// It is an `unsafe fn` because freeing memory is: the pool calls it only
/// with an element its `alloc_fn` returned, which is not used again.
pub type MempoolFreeFn<P> = unsafe fn(&Kmem<P>, Element, &PoolData<'_>);

/// What a pool's element functions work with: Linux's `void *pool_data`.
///
/// The three standard kinds also tell [`Kmem::mempool_free`] what the
/// pool's elements are, so it can refuse foreign ones.
#[derive(Clone, Copy)]
pub enum PoolData<'a> {
    /// Elements are objects of this slab cache
    /// ([`Kmem::mempool_create_slab_pool`]).
    Cache(&'a KmemCache),
    /// Elements are kmalloc objects of this many bytes
    /// ([`Kmem::mempool_create_kmalloc_pool`]).
    Kmalloc(usize),
    /// Elements are blocks of `2^order` pages, given as their page
    /// descriptor ([`Kmem::mempool_create_page_pool`]).
    Pages(u32),
    /// Anything else: a number or an address for the pool's own functions.
    /// kmem does not check the elements of such a pool.
    Private(usize),
}

impl fmt::Debug for PoolData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolData::Cache(c) => f.debug_tuple("Cache").field(&c.name()).finish(),
            PoolData::Kmalloc(n) => f.debug_tuple("Kmalloc").field(n).finish(),
            PoolData::Pages(o) => f.debug_tuple("Pages").field(o).finish(),
            PoolData::Private(x) => write!(f, "Private({x:#x})"),
        }
    }
}

impl fmt::Display for PoolData<'_> {
    /// What the pool's elements are, for reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolData::Cache(c) => write!(f, "objects of cache {}", c.name()),
            PoolData::Kmalloc(n) => write!(f, "kmalloc objects of at least {n} bytes"),
            PoolData::Pages(o) => write!(f, "pages of order {o}"),
            PoolData::Private(x) => write!(f, "private ({x:#x})"),
        }
    }
}

/// The reserve: the `kmalloc`ed element array and its capacity. The
/// number of elements in it is [`MempoolT::curr_nr`], changed only under
/// the lock that guards this.
struct Reserve {
    /// `None` once the pool is destroyed (Linux's `elements == NULL`).
    elements: Option<NonNull<Element>>,
    /// Slots in `elements`: `max(1, min_nr)` at creation, grown by resize.
    cap: usize,
}

// SAFETY: the array is plain memory owned by the pool; it is reached only
// under the pool's lock.
unsafe impl Send for Reserve {}

/// A memory pool (`mempool_t`, `struct mempool`).
///
/// Made by [`Kmem::mempool_create`] and its variants; used through the
/// `mempool_*` methods of [`Kmem`]; shared between threads by reference.
/// See the [module docs](self).
pub struct MempoolT<'a, P: Platform> {
    /// `pool->lock` and `pool->elements`.
    reserve: spin::Mutex<Reserve>,
    /// `pool->curr_nr`: written under the lock, read without it by the
    /// free path's first test (see the module docs on ordering).
    curr_nr: AtomicUsize,
    /// `pool->min_nr`: written under the lock.
    min_nr: AtomicUsize,
    /// Elements handed out and not yet returned (kmem's own count).
    in_use: AtomicUsize,
    /// Tasks in `mempool_alloc`'s wait (what `wq_has_sleeper()` asks).
    waiters: AtomicUsize,
    /// Cleared by destroy.
    live: AtomicBool,
    alloc: MempoolAllocFn<P>,
    free: MempoolFreeFn<P>,
    pool_data: PoolData<'a>,
}

impl<P: Platform> MempoolT<'_, P> {
    /// `pool->min_nr`: the elements the reserve is kept at.
    pub fn min_nr(&self) -> usize {
        self.min_nr.load(Ordering::Relaxed)
    }

    /// `pool->curr_nr`: the elements in the reserve now.
    pub fn curr_nr(&self) -> usize {
        self.curr_nr.load(Ordering::Relaxed)
    }

    /// Elements handed out by `mempool_alloc` and not yet given back with
    /// `mempool_free`.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The pool's data.
    pub fn pool_data(&self) -> &PoolData<'_> {
        &self.pool_data
    }

    /// `mempool_initialized()`: false once the pool is destroyed.
    pub fn is_initialized(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// The wait channel: the pool's address (`&pool->wait`).
    fn channel(&self) -> usize {
        self as *const Self as usize
    }

    /// The elements the reserve is filled to: `max(1, min_nr)`.
    fn target(&self) -> usize {
        self.min_nr().max(1)
    }

    /// `add_element()`. The caller holds the lock and checked that the
    /// reserve is short of its target (so a slot is free).
    fn add_element(&self, r: &mut Reserve, e: Element) {
        let n = self.curr_nr();
        let els = r.elements.expect("a live pool has its element array");
        assert!(n < r.cap, "mempool reserve overflow");
        // SAFETY: slot `n < cap` of the pool's array, guarded by the lock.
        unsafe { els.as_ptr().add(n).write(e) };
        self.curr_nr.store(n + 1, Ordering::Relaxed);
    }

    /// `remove_element()`. The caller holds the lock and saw `curr_nr > 0`.
    fn remove_element(&self, r: &mut Reserve) -> Element {
        let n = self.curr_nr() - 1;
        let els = r
            .elements
            .expect("a non-empty reserve has its element array");
        // SAFETY: slots below `curr_nr` hold elements, guarded by the lock.
        let e = unsafe { els.as_ptr().add(n).read() };
        self.curr_nr.store(n, Ordering::Relaxed);
        e
    }

    /// Whether `e` is in the reserve (lock held).
    fn holds(&self, r: &Reserve, e: Element) -> bool {
        let Some(els) = r.elements else { return false };
        // SAFETY: the first `curr_nr` slots hold elements, guarded by the lock.
        let held = unsafe { core::slice::from_raw_parts(els.as_ptr(), self.curr_nr()) };
        held.contains(&e)
    }
}

impl<P: Platform> fmt::Debug for MempoolT<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MempoolT")
            .field("min_nr", &self.min_nr())
            .field("curr_nr", &self.curr_nr())
            .field("in_use", &self.in_use())
            .field("pool_data", &self.pool_data)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Kmem<P> {
    /// `mempool_create()`: a pool of `min_nr` preallocated elements made
    /// by `alloc_fn` and freed by `free_fn`, with `GFP_KERNEL` on the
    /// running CPU's node.
    ///
    /// `min_nr` 0 is allowed and keeps one element (see the module docs).
    /// Fails with [`Error::InvalidArgument`] (reported) without `alloc_fn`
    /// or over a slab cache with a constructor, and with
    /// [`Error::NoMemory`] when the array or an element cannot be
    /// allocated (everything allocated so far is freed).
    ///
    /// ```
    /// use kmem::gfp::GFP_KERNEL;
    /// use kmem::mempool::PoolData;
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// // A kmalloc pool written out by hand: mempool_create_kmalloc_pool(2, 64).
    /// let pool = k.mempool_create(2, Some(kmem::Kmem::mempool_kmalloc), kmem::Kmem::mempool_kfree, PoolData::Kmalloc(64))?;
    /// assert_eq!((pool.min_nr(), pool.curr_nr()), (2, 2));
    /// assert_eq!(k.mempool_create(0, None, kmem::Kmem::mempool_kfree, PoolData::Kmalloc(64)).err(),
    ///            Some(kmem::Error::InvalidArgument));
    /// # Ok::<(), kmem::Error>(())
    /// ```
    #[track_caller]
    pub fn mempool_create<'a>(
        &self,
        min_nr: usize,
        alloc_fn: Option<MempoolAllocFn<P>>,
        free_fn: MempoolFreeFn<P>,
        pool_data: PoolData<'a>,
    ) -> Result<MempoolT<'a, P>> {
        self.mempool_create_node(min_nr, alloc_fn, free_fn, pool_data, GFP_KERNEL, -1)
    }

    /// `mempool_create_node()`: [`mempool_create`](Self::mempool_create)
    /// with the mask for the array and the preallocated elements, and the
    /// node for the array (`-1`: the running CPU's).
    #[track_caller]
    pub fn mempool_create_node<'a>(
        &self,
        min_nr: usize,
        alloc_fn: Option<MempoolAllocFn<P>>,
        free_fn: MempoolFreeFn<P>,
        pool_data: PoolData<'a>,
        gfp: Gfp,
        node: i32,
    ) -> Result<MempoolT<'a, P>> {
        let caller = Location::caller();
        let Some(alloc) = alloc_fn else {
            if min_nr == 0 {
                report!(
                    &self.p,
                    Level::Err,
                    "mempool_create: min_nr 0 and no alloc_fn: the pool could never hand out \
                     an element"
                );
            } else {
                report!(
                    &self.p,
                    Level::Err,
                    "mempool_create: no alloc_fn to preallocate {min_nr} elements with"
                );
            }
            report!(&self.p, Level::Err, "mempool_create called from {caller}");
            return Err(Error::InvalidArgument);
        };
        if let PoolData::Cache(c) = pool_data {
            if c.ctor().is_some() {
                report!(
                    &self.p,
                    Level::Err,
                    "mempool_create: cache {} has a constructor; reserved elements would not \
                     be constructed again (called from {caller})",
                    c.name()
                );
                return Err(Error::InvalidArgument);
            }
        }
        // Room for one element even when min_nr is 0 (Linux 6.17).
        let cap = min_nr.max(1);
        let bytes = cap
            .checked_mul(mem::size_of::<Element>())
            .ok_or(Error::NoMemory)?;
        let elements = self
            .kmalloc_node(bytes, gfp, node)
            .map_err(|_| Error::NoMemory)?
            .cast::<Element>();
        let pool = MempoolT {
            reserve: spin::Mutex::new(Reserve {
                elements: Some(elements),
                cap,
            }),
            curr_nr: AtomicUsize::new(0),
            min_nr: AtomicUsize::new(min_nr),
            in_use: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            live: AtomicBool::new(true),
            alloc,
            free: free_fn,
            pool_data,
        };
        // First preallocate the guaranteed number of elements.
        while pool.curr_nr() < cap {
            let Some(e) = alloc(self, gfp, &pool.pool_data) else {
                self.mempool_exit(&pool)?;
                return Err(Error::NoMemory);
            };
            pool.add_element(&mut IrqSpinGuard::lock(&self.p, &pool.reserve), e);
        }
        Ok(pool)
    }

    /// `mempool_create_slab_pool()`: a pool of `min_nr` objects of `cache`
    /// ([`mempool_alloc_slab`](Self::mempool_alloc_slab) /
    /// [`mempool_free_slab`](Self::mempool_free_slab)).
    ///
    /// ```
    /// use kmem::gfp::GFP_NOIO;
    /// use kmem::slab::SlabFlags;
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// let bio_slab = k.kmem_cache_create("bio-0", 152, 0, SlabFlags::NONE, None)?;
    /// let mut bio_pool = k.mempool_create_slab_pool(2, bio_slab)?; // BIO_POOL_SIZE
    /// let bio = k.mempool_alloc(&bio_pool, GFP_NOIO)?;
    /// // SAFETY: `bio` is returned once and not used again.
    /// unsafe { k.mempool_free(bio.as_ptr(), &bio_pool) }?;
    /// k.mempool_destroy(&mut bio_pool)?;
    /// # Ok::<(), kmem::Error>(())
    /// ```
    #[track_caller]
    pub fn mempool_create_slab_pool<'a>(
        &self,
        min_nr: usize,
        cache: &'a KmemCache,
    ) -> Result<MempoolT<'a, P>> {
        self.mempool_create(
            min_nr,
            Some(Self::mempool_alloc_slab),
            Self::mempool_free_slab,
            PoolData::Cache(cache),
        )
    }

    /// `mempool_create_kmalloc_pool()`: a pool of `min_nr` kmalloc objects
    /// of `size` bytes ([`mempool_kmalloc`](Self::mempool_kmalloc) /
    /// [`mempool_kfree`](Self::mempool_kfree)).
    #[track_caller]
    pub fn mempool_create_kmalloc_pool(
        &self,
        min_nr: usize,
        size: usize,
    ) -> Result<MempoolT<'static, P>> {
        self.mempool_create(
            min_nr,
            Some(Self::mempool_kmalloc),
            Self::mempool_kfree,
            PoolData::Kmalloc(size),
        )
    }

    /// `mempool_create_page_pool()`: a pool of `min_nr` blocks of
    /// `2^order` pages ([`mempool_alloc_pages`](Self::mempool_alloc_pages) /
    /// [`mempool_free_pages`](Self::mempool_free_pages)). Its elements are
    /// page descriptors: see [`mempool_element_page`](Self::mempool_element_page).
    #[track_caller]
    pub fn mempool_create_page_pool(
        &self,
        min_nr: usize,
        order: u32,
    ) -> Result<MempoolT<'static, P>> {
        self.mempool_create(
            min_nr,
            Some(Self::mempool_alloc_pages),
            Self::mempool_free_pages,
            PoolData::Pages(order),
        )
    }

    /// Report and refuse a call on a destroyed pool.
    #[cold]
    fn mempool_dead(&self, what: &str, pool: &MempoolT<'_, P>) -> Error {
        report!(
            &self.p,
            Level::Err,
            "BUG: {what}: mempool {:p} is not initialized (destroyed)",
            pool
        );
        Error::InvalidArgument
    }

    /// `mempool_alloc()`: an element from `pool`, following Linux's
    /// sequence (see the [module docs](self)): `alloc_fn` without direct
    /// reclaim and I/O, the reserve, `alloc_fn` with the full mask, then, for
    /// a caller that may block, sleep until an element comes back (at most
    /// [`MEMPOOL_WAIT_NS`] at a time) and start over.
    ///
    /// Fails with [`Error::NoMemory`] only for a caller that cannot block
    /// (`GFP_ATOMIC`, `GFP_NOWAIT`, or any mask in atomic context, the last
    /// reported as sleeping in atomic context), and with
    /// [`Error::InvalidArgument`] (reported) for `__GFP_ZERO` or a destroyed
    /// pool.
    #[track_caller]
    pub fn mempool_alloc(&self, pool: &MempoolT<'_, P>, gfp: Gfp) -> Result<Element> {
        let caller = Location::caller();
        if !pool.is_initialized() {
            return Err(self.mempool_dead("mempool_alloc", pool));
        }
        if gfp.contains(__GFP_ZERO) {
            report!(
                &self.p,
                Level::Warning,
                "WARNING: mempool_alloc: __GFP_ZERO is not supported (reserved elements are not \
                 zeroed); called from {caller}"
            );
            return Err(Error::InvalidArgument);
        }
        // A debug kernel's might_alloc() on every call; else it is asked
        // where the pool would sleep.
        let may_block = self
            .debug_atomic_sleep()
            .then(|| self.might_alloc(gfp, caller));
        // Don't dip into the emergency reserves, don't loop in the page
        // allocator, don't warn: the pool's own reserve is the fallback.
        let gfp_mask = gfp | __GFP_NOMEMALLOC | __GFP_NORETRY | __GFP_NOWARN;
        // The first round neither reclaims nor starts I/O.
        let mut gfp_temp = gfp_mask.without(__GFP_DIRECT_RECLAIM | __GFP_IO);
        loop {
            if let Some(e) = (pool.alloc)(self, gfp_temp, &pool.pool_data) {
                pool.in_use.fetch_add(1, Ordering::Relaxed);
                // As after a removal from the reserve (below): whoever
                // frees `e` sees it counted.
                fence(Ordering::Release);
                return Ok(e);
            }
            if let Some(e) = self.mempool_take_reserved(pool) {
                return Ok(e);
            }
            // The reserve is empty: retry at once with the full mask.
            if gfp_temp != gfp_mask {
                gfp_temp = gfp_mask;
                continue;
            }
            // We must not sleep without __GFP_DIRECT_RECLAIM, nor in atomic
            // context (might_alloc reports that one).
            if !may_block.unwrap_or_else(|| self.might_alloc(gfp_mask, caller)) {
                return Err(Error::NoMemory);
            }
            // Nobody else could return an element while we slept (a
            // one-thread machine): fail, said, instead of waiting forever.
            if !self.p.others_can_run() {
                report!(
                    &self.p,
                    Level::Warning,
                    "mempool_alloc: {}: mempool {:p} is empty and no other context can free an element: failing instead of waiting forever",
                    self.p.current().comm(),
                    pool
                );
                return Err(Error::NoMemory);
            }
            // Wait for someone to return an element, but wake up now and
            // then: memory pressure may have eased so that alloc_fn succeeds.
            pool.waiters.fetch_add(1, Ordering::Relaxed);
            // Paired with the fence in mempool_free: the free sees this
            // waiter, or the condition below sees the free's element.
            fence(Ordering::SeqCst);
            self.p.wait_event(
                pool.channel(),
                &mut || pool.curr_nr.load(Ordering::Relaxed) > 0,
                Some(MEMPOOL_WAIT_NS),
            );
            pool.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The reserve part of `mempool_alloc()`: an element from the reserve,
    /// if it holds one.
    fn mempool_take_reserved(&self, pool: &MempoolT<'_, P>) -> Option<Element> {
        let e = {
            let mut r = IrqSpinGuard::lock(&self.p, &pool.reserve);
            if pool.curr_nr() == 0 {
                return None;
            }
            pool.remove_element(&mut r)
        };
        pool.in_use.fetch_add(1, Ordering::Relaxed);
        // Linux's smp_wmb(), paired with the acquire fence in mempool_free:
        // whoever frees `e`, however it got it, reads a curr_nr from after
        // this removal (and an in_use that counts `e`).
        fence(Ordering::Release);
        Some(e)
    }

    /// `mempool_alloc_preallocated()`: an element from the reserve only,
    /// or [`Error::NoMemory`] at once when it is empty. Never calls
    /// `alloc_fn` and never sleeps.
    pub fn mempool_alloc_preallocated(&self, pool: &MempoolT<'_, P>) -> Result<Element> {
        if !pool.is_initialized() {
            return Err(self.mempool_dead("mempool_alloc_preallocated", pool));
        }
        self.mempool_take_reserved(pool).ok_or(Error::NoMemory)
    }

    /// `mempool_free()`: return `element` to `pool`. It refills the
    /// reserve (and wakes the waiters) when the reserve is short, and goes
    /// to `free_fn` otherwise. NULL is a no-op.
    ///
    /// Foreign elements ([`Error::BadAddress`]), double frees kmem can see
    /// ([`Error::BadState`]) and destroyed pools ([`Error::InvalidArgument`])
    /// are reported and refused (see the [module docs](self)).
    ///
    /// # Safety
    ///
    /// `element` is null or an element `mempool_alloc` of this pool
    /// returned; it is not used after a successful free. (kmem checks what
    /// it can, but cannot know who else holds the pointer.)
    #[track_caller]
    pub unsafe fn mempool_free(&self, element: *mut u8, pool: &MempoolT<'_, P>) -> Result<()> {
        let Some(e) = NonNull::new(element) else {
            return Ok(());
        };
        // Linux's smp_rmb(), paired with the release fence after an
        // allocation: the curr_nr and in_use read below are from after the
        // allocation of `element`, so a reserve that allocation left short
        // is seen as short.
        fence(Ordering::Acquire);
        if !pool.is_initialized() {
            return Err(self.mempool_dead("mempool_free", pool));
        }
        let caller = Location::caller();
        if !self.mempool_is_element(pool, e) {
            report!(
                &self.p,
                Level::Err,
                "BUG: mempool_free: {:p} is not an element of mempool {:p}",
                element,
                pool
            );
            report!(
                &self.p,
                Level::Err,
                "its elements are {}; called from {}",
                pool.pool_data,
                caller
            );
            return Err(Error::BadAddress);
        }
        if pool
            .in_use
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(self.mempool_double_free(pool, element, caller));
        }
        if pool.curr_nr() < pool.target() {
            let mut r = IrqSpinGuard::lock(&self.p, &pool.reserve);
            if pool.curr_nr() < pool.target() {
                if pool.holds(&r, e) {
                    drop(r);
                    pool.in_use.fetch_add(1, Ordering::Relaxed);
                    return Err(self.mempool_double_free(pool, element, caller));
                }
                pool.add_element(&mut r, e);
                drop(r);
                // wq_has_sleeper(): paired with the fence before a wait.
                fence(Ordering::SeqCst);
                if pool.waiters.load(Ordering::Relaxed) != 0 {
                    self.p.wake_up(pool.channel());
                }
                return Ok(());
            }
        }
        // SAFETY: `e` passed the pool's element checks and the caller gives
        // it up; free_fn pairs with the alloc_fn that made it.
        unsafe { (pool.free)(self, e, &pool.pool_data) };
        Ok(())
    }

    #[cold]
    fn mempool_double_free(
        &self,
        pool: &MempoolT<'_, P>,
        element: *mut u8,
        caller: &Location<'_>,
    ) -> Error {
        report!(
            &self.p,
            Level::Err,
            "BUG: mempool_free: double free of {:p} to mempool {:p} ({} in use, {} reserved)",
            element,
            pool,
            pool.in_use(),
            pool.curr_nr()
        );
        report!(&self.p, Level::Err, "mempool_free called from {caller}");
        Error::BadState
    }

    /// Whether `e` can be an element of `pool`, by its pool data.
    fn mempool_is_element(&self, pool: &MempoolT<'_, P>, e: Element) -> bool {
        let x = e.as_ptr();
        match pool.pool_data {
            // SLUB's own reports for an object of another cache or a
            // pointer inside an object.
            PoolData::Cache(s) => match self.slab_of(x) {
                Some(slab) if slab.page.slab_cache_addr() != s as *const KmemCache as usize => {
                    let _ = self.wrong_cache(s, slab.page, "mempool_free");
                    false
                }
                Some(slab) if !s.is_obj_start(slab, x) => {
                    let _ = self.invalid_pointer(s, x);
                    false
                }
                Some(_) => true,
                None => false,
            },
            PoolData::Kmalloc(0) => x == ZERO_SIZE_PTR,
            PoolData::Kmalloc(size) => match self.kmalloc_owner("mempool_free", x) {
                Ok(Owner::Slab(s, _)) => {
                    s.flags().contains(SLAB_KMALLOC) && s.geometry().ksize() >= size
                }
                Ok(Owner::Large(head)) => PAGE_SIZE << head.order() >= size,
                Err(_) => false,
            },
            PoolData::Pages(order) => self.mempool_element_page(e).is_some_and(|p| {
                p.refcount() > 0
                    && !p.is_tail()
                    && !p.is_slab()
                    && !p.is_buddy()
                    && !p.is_reserved()
                    && p.order() == order
            }),
            PoolData::Private(_) => true,
        }
    }

    /// `mempool_resize()`: make `new_min_nr` the pool's minimum. Shrinking
    /// frees reserved elements above it at once; growing replaces the
    /// element array (`GFP_KERNEL`) and refills with `alloc_fn(GFP_KERNEL)`
    /// as far as it succeeds: a pool that could not be filled is refilled
    /// by later frees, and the call still succeeds, as in Linux.
    ///
    /// Fails with [`Error::InvalidArgument`] (reported) for `new_min_nr` 0
    /// or a destroyed pool, and with [`Error::NoMemory`] when the new array
    /// cannot be allocated (the pool is then unchanged). May sleep.
    #[track_caller]
    pub fn mempool_resize(&self, pool: &MempoolT<'_, P>, new_min_nr: usize) -> Result<()> {
        if !pool.is_initialized() {
            return Err(self.mempool_dead("mempool_resize", pool));
        }
        if new_min_nr == 0 {
            report!(
                &self.p,
                Level::Err,
                "kernel BUG at mm/mempool.c: mempool_resize: new_min_nr 0 (called from {})",
                Location::caller()
            );
            return Err(Error::InvalidArgument);
        }
        let mut r = IrqSpinGuard::lock(&self.p, &pool.reserve);
        if new_min_nr <= pool.min_nr() {
            while new_min_nr < pool.curr_nr() {
                let e = pool.remove_element(&mut r);
                drop(r);
                // SAFETY: a reserved element, owned by the pool alone.
                unsafe { (pool.free)(self, e, &pool.pool_data) };
                r = IrqSpinGuard::lock(&self.p, &pool.reserve);
            }
            pool.min_nr.store(new_min_nr, Ordering::Relaxed);
            return Ok(());
        }
        drop(r);

        // Grow the pool.
        let bytes = new_min_nr
            .checked_mul(mem::size_of::<Element>())
            .ok_or(Error::NoMemory)?;
        let new = self
            .kmalloc(bytes, GFP_KERNEL)
            .map_err(|_| Error::NoMemory)?
            .cast::<Element>();
        let mut r = IrqSpinGuard::lock(&self.p, &pool.reserve);
        if new_min_nr <= pool.min_nr() {
            // Raced: another resize did our work.
            drop(r);
            // SAFETY: our own array, never shared.
            return unsafe { self.kfree(new.as_ptr().cast()) };
        }
        let old = r.elements.replace(new).expect("a live pool has its array");
        // SAFETY: both arrays hold at least curr_nr slots and do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), pool.curr_nr()) };
        r.cap = new_min_nr;
        pool.min_nr.store(new_min_nr, Ordering::Relaxed);
        drop(r);
        // SAFETY: the old array is no longer reachable from the pool.
        unsafe { self.kfree(old.as_ptr().cast()) }?;

        while pool.curr_nr() < pool.min_nr() {
            let Some(e) = (pool.alloc)(self, GFP_KERNEL, &pool.pool_data) else {
                return Ok(());
            };
            let mut r = IrqSpinGuard::lock(&self.p, &pool.reserve);
            if pool.curr_nr() < pool.min_nr() {
                pool.add_element(&mut r, e);
            } else {
                // Raced: frees filled the reserve meanwhile.
                drop(r);
                // SAFETY: a fresh element nobody else has seen.
                unsafe { (pool.free)(self, e, &pool.pool_data) };
                return Ok(());
            }
        }
        Ok(())
    }

    /// `mempool_destroy()`/`mempool_exit()`: free the reserved elements and
    /// the element array. The pool is left uninitialised
    /// ([`MempoolT::is_initialized`] is false) and refuses further calls.
    ///
    /// With elements still handed out, reports "mempool_destroy: N elements
    /// still in use" and fails with [`Error::Busy`], leaving the pool as it
    /// was (Linux would free the pool under them). Destroying a destroyed
    /// pool does nothing.
    #[track_caller]
    pub fn mempool_destroy(&self, pool: &mut MempoolT<'_, P>) -> Result<()> {
        if !pool.is_initialized() {
            return Ok(());
        }
        let out = pool.in_use();
        if out != 0 {
            report!(
                &self.p,
                Level::Err,
                "mempool_destroy: {} element{} still in use ({} of {} reserved) when called from {}",
                out,
                if out == 1 { "" } else { "s" },
                pool.curr_nr(),
                pool.min_nr(),
                Location::caller()
            );
            return Err(Error::Busy);
        }
        self.mempool_exit(pool)
    }

    /// `mempool_exit()`: free the reserve and the array, mark the pool dead.
    /// Nobody else may be using the pool.
    fn mempool_exit(&self, pool: &MempoolT<'_, P>) -> Result<()> {
        loop {
            let e = {
                let mut r = IrqSpinGuard::lock(&self.p, &pool.reserve);
                if pool.curr_nr() == 0 {
                    break;
                }
                pool.remove_element(&mut r)
            };
            // SAFETY: a reserved element, owned by the pool alone.
            unsafe { (pool.free)(self, e, &pool.pool_data) };
        }
        let els = {
            let mut r = IrqSpinGuard::lock(&self.p, &pool.reserve);
            r.cap = 0;
            pool.live.store(false, Ordering::Relaxed);
            pool.min_nr.store(0, Ordering::Relaxed);
            r.elements.take()
        };
        match els {
            // SAFETY: the array was kmalloc'ed at creation or by resize and
            // is no longer reachable from the pool.
            Some(a) => unsafe { self.kfree(a.as_ptr().cast()) },
            None => Ok(()),
        }
    }
}
