//! Typed memory pools: [`Mempool`] and [`MempoolBox`].
//!
//! A [`Mempool<T>`](Mempool) is a slab pool
//! ([`Kmem::mempool_create_slab_pool`]) over a typed cache
//! ([`Kmem::kmem_cache`]): [`alloc`](Mempool::alloc) follows
//! `mempool_alloc()`'s sequence (so with a blocking mask it waits for an
//! element rather than fail) and hands out [`MempoolBox`]es, owned `T`s
//! that go back to the pool, refilling its reserve first, when dropped.
//!
//! The boxes borrow the pool, so the pool cannot be dropped while any is
//! alive: that is the compiler's version of `mempool_destroy`'s "elements
//! still in use". A box given up with [`core::mem::forget`] stays counted as
//! in use; dropping the pool then reports it and leaks the pool's reserve
//! rather than free memory someone still holds.

use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use super::{AllocError, Cache, Flags, SlabCache};
use crate::error::Result;
use crate::mempool::MempoolT;
use crate::platform::Platform;
use crate::Kmem;

/// A memory pool of `T`s: `min_nr` objects of a typed slab cache held in
/// reserve for allocations that must make progress.
///
/// ```
/// use kmem::alloc::{flags::{GFP_NOIO, GFP_NOWAIT}, Mempool};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// struct Bio { sector: u64, len: u32 }
///
/// let bios = k.kmem_cache::<Bio>("bio", kmem::slab::SlabFlags::NONE)?;
/// let pool = Mempool::new(&bios, 2)?;
/// let mut b = pool.alloc(Bio { sector: 8, len: 4096 }, GFP_NOIO)?;
/// b.sector += 8;
/// assert_eq!((b.sector, b.len), (16, 4096));
/// drop(b); // back to the pool (its reserve is full, so back to the cache)
/// assert_eq!(pool.curr_nr(), 2);
///
/// // Only the reserve, never the allocator:
/// let a = pool.alloc_preallocated(Bio { sector: 0, len: 0 })?;
/// assert_eq!(pool.curr_nr(), 1);
/// drop(a); // refills the reserve
/// assert_eq!(pool.curr_nr(), 2);
/// # let _ = GFP_NOWAIT;
/// # Ok::<(), kmem::Error>(())
/// ```
pub struct Mempool<'a, T, P: Platform> {
    k: &'a Kmem<P>,
    pool: MempoolT<'a, P>,
    // The pool holds memory for `T`s, not `T`s: the boxes own them.
    _type: PhantomData<fn() -> T>,
}

impl<'a, T, P: Platform> Mempool<'a, T, P> {
    /// A pool of `min_nr` reserved objects of `cache`
    /// (`mempool_create_slab_pool()`); `min_nr` 0 keeps one, as Linux's
    /// zero-minimum pools do.
    ///
    /// Fails as [`Kmem::mempool_create`] does: [`Error::NoMemory`] when the
    /// reserve cannot be filled.
    ///
    /// [`Error::NoMemory`]: crate::Error::NoMemory
    #[track_caller]
    pub fn new(cache: &Cache<T, SlabCache<'a, P>>, min_nr: usize) -> Result<Self> {
        let sc = *cache.inner();
        let k = sc.kmem();
        // INVARIANT: the pool's elements are objects of a cache that the
        // typed `Cache` checked can hold a `T`.
        let pool = k.mempool_create_slab_pool(min_nr, sc.cache())?;
        Ok(Mempool {
            k,
            pool,
            _type: PhantomData,
        })
    }

    /// `mempool_alloc()`, then moves `value` into the element.
    ///
    /// With a mask that may block (`GFP_KERNEL`, `GFP_NOIO`, `GFP_NOFS`)
    /// this waits for an element instead of failing; with `GFP_ATOMIC` or
    /// `GFP_NOWAIT` it fails when the allocator and the reserve are both
    /// empty. `__GFP_ZERO` is refused.
    #[track_caller]
    pub fn alloc(&self, value: T, flags: Flags) -> Result<MempoolBox<'_, T, P>, AllocError> {
        let e = self
            .k
            .mempool_alloc(&self.pool, flags)
            .map_err(|_| AllocError)?;
        Ok(self.boxed(e, value))
    }

    /// `mempool_alloc_preallocated()`, then moves `value` into the element:
    /// only the reserve is used, and an empty one fails at once.
    pub fn alloc_preallocated(&self, value: T) -> Result<MempoolBox<'_, T, P>, AllocError> {
        let e = self
            .k
            .mempool_alloc_preallocated(&self.pool)
            .map_err(|_| AllocError)?;
        Ok(self.boxed(e, value))
    }

    fn boxed(&self, e: NonNull<u8>, value: T) -> MempoolBox<'_, T, P> {
        let ptr = e.cast::<T>();
        debug_assert!(ptr.as_ptr().is_aligned());
        // SAFETY: by the invariant the element is an object that can hold
        // a `T` (size and alignment), and it is ours alone.
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: `ptr` is an element of `self.pool` holding a valid `T`.
        MempoolBox { ptr, pool: self }
    }

    /// `mempool_resize()`: keep `new_min_nr` elements in reserve from now
    /// on (at least 1).
    #[track_caller]
    pub fn resize(&self, new_min_nr: usize) -> Result<()> {
        self.k.mempool_resize(&self.pool, new_min_nr)
    }

    /// The reserve's target size (`min_nr`).
    pub fn min_nr(&self) -> usize {
        self.pool.min_nr()
    }

    /// Elements in reserve now (`curr_nr`).
    pub fn curr_nr(&self) -> usize {
        self.pool.curr_nr()
    }

    /// The untyped pool underneath.
    pub fn raw(&self) -> &MempoolT<'a, P> {
        &self.pool
    }
}

impl<T, P: Platform> Drop for Mempool<'_, T, P> {
    /// `mempool_destroy()`. No box can be alive (they borrow the pool);
    /// a forgotten one is reported by `mempool_destroy`, and the reserve
    /// is then leaked rather than freed under it.
    fn drop(&mut self) {
        let _ = self.k.mempool_destroy(&mut self.pool);
    }
}

impl<T, P: Platform> fmt::Debug for Mempool<'_, T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mempool")
            .field("type", &core::any::type_name::<T>())
            .field("pool", &self.pool)
            .finish()
    }
}

/// A `T` in an element of a [`Mempool`]; drops the `T` and returns the
/// element to the pool (`mempool_free()`) when dropped.
///
/// # Invariants
///
/// `ptr` is an element handed out by `pool.pool`, owned by this box, and
/// holds a valid `T`.
pub struct MempoolBox<'p, T, P: Platform> {
    ptr: NonNull<T>,
    pool: &'p Mempool<'p, T, P>,
}

// SAFETY: the box owns its `T`; returning the element from another thread
// goes through `&Kmem` and `&MempoolT`, which are `Sync` when the platform is.
unsafe impl<T: Send, P: Platform + Sync> Send for MempoolBox<'_, T, P> {}

// SAFETY: `&MempoolBox` only gives `&T`.
unsafe impl<T: Sync, P: Platform + Sync> Sync for MempoolBox<'_, T, P> {}

impl<'p, T, P: Platform> MempoolBox<'p, T, P> {
    /// Moves the value out and returns the element to the pool.
    pub fn into_inner(b: Self) -> T {
        let b = ManuallyDrop::new(b);
        // SAFETY: the element holds a valid `T` that we own; it is read
        // once, then the element is given back without dropping the `T`.
        unsafe {
            let value = b.ptr.as_ptr().read();
            b.give_back();
            value
        }
    }

    /// The pool this box returns to.
    pub fn pool(b: &Self) -> &'p Mempool<'p, T, P> {
        b.pool
    }

    /// Returns the element to the pool.
    ///
    /// # Safety
    ///
    /// Called once, after the `T` was dropped or moved out.
    unsafe fn give_back(&self) {
        let pool = self.pool;
        // SAFETY: by the invariant the element came from this pool and is
        // owned by us; the caller promises it is not touched again. Any
        // error is reported by mempool_free and cannot happen for an element
        // the pool handed out.
        let _ = unsafe { pool.k.mempool_free(self.ptr.as_ptr().cast(), &pool.pool) };
    }
}

impl<T, P: Platform> Deref for MempoolBox<'_, T, P> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: by the invariant `ptr` holds a valid `T` owned by `self`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T, P: Platform> DerefMut for MempoolBox<'_, T, P> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: by the invariant `ptr` holds a valid `T` owned, hence
        // uniquely reachable, through `self`.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T, P: Platform> Drop for MempoolBox<'_, T, P> {
    fn drop(&mut self) {
        // SAFETY: the `T` is valid and ours: drop it once, then give the
        // element back, never to touch it again.
        unsafe {
            ptr::drop_in_place(self.ptr.as_ptr());
            self.give_back();
        }
    }
}

impl<T: fmt::Debug, P: Platform> fmt::Debug for MempoolBox<'_, T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::flags::{GFP_ATOMIC, GFP_KERNEL, GFP_NOIO};
    use crate::arena::ArenaPlatform;
    use crate::slab::SlabFlags;
    use core::cell::Cell;
    use std::vec::Vec;

    const MEM: usize = 8 << 20;

    /// Counts its drops, to show every `T` is dropped exactly once.
    struct Req<'d> {
        id: u64,
        drops: &'d Cell<u32>,
    }

    impl Drop for Req<'_> {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    #[test]
    fn boxes_come_from_the_reserve_under_pressure_and_refill_it() {
        let mut mem = std::vec![0u8; MEM];
        let k = Kmem::boot_arena(&mut mem, 1).unwrap();
        let drops = Cell::new(0);
        let reqs = k.kmem_cache::<Req<'_>>("req", SlabFlags::NONE).unwrap();
        let pool = Mempool::new(&reqs, 3).unwrap();
        assert_eq!((pool.min_nr(), pool.curr_nr()), (3, 3));

        // Exhaust the page allocator, then the cache's free objects.
        let nowarn = crate::gfp::__GFP_NOWARN;
        let mut pages = Vec::new();
        for order in (0..=crate::MAX_PAGE_ORDER).rev() {
            while let Ok(p) = k.alloc_pages(GFP_ATOMIC | nowarn, order) {
                pages.push((p, order));
            }
        }
        let mut taken = Vec::new();
        while let Ok(o) = reqs.alloc(
            Req {
                id: 0,
                drops: &drops,
            },
            GFP_ATOMIC | nowarn,
        ) {
            taken.push(o);
        }
        let made = taken.len() + 1;
        // Only the reserve is left: three boxes, then failure for a caller
        // that cannot block.
        let a = pool
            .alloc(
                Req {
                    id: 1,
                    drops: &drops,
                },
                GFP_NOIO,
            )
            .unwrap();
        let b = pool
            .alloc(
                Req {
                    id: 2,
                    drops: &drops,
                },
                GFP_ATOMIC,
            )
            .unwrap();
        let c = pool
            .alloc_preallocated(Req {
                id: 3,
                drops: &drops,
            })
            .unwrap();
        assert_eq!(pool.curr_nr(), 0);
        assert_eq!(
            pool.alloc(
                Req {
                    id: 4,
                    drops: &drops
                },
                GFP_ATOMIC
            )
            .err(),
            Some(AllocError)
        );
        assert_eq!(
            pool.alloc_preallocated(Req {
                id: 5,
                drops: &drops
            })
            .err(),
            Some(AllocError)
        );
        assert_eq!(a.id + b.id + c.id, 6);
        assert_eq!(MempoolBox::into_inner(b).id, 2);
        assert_eq!(pool.curr_nr(), 1, "into_inner gave the element back");
        drop((a, c));
        assert_eq!(pool.curr_nr(), 3, "frees refill the reserve first");
        drop(taken);
        for (p, o) in pages {
            k.__free_pages(p, o).unwrap();
        }

        pool.resize(5).unwrap();
        assert_eq!((pool.min_nr(), pool.curr_nr()), (5, 5));
        pool.resize(1).unwrap();
        assert_eq!((pool.min_nr(), pool.curr_nr()), (1, 1));
        assert!(pool.resize(0).is_err());
        let d = pool
            .alloc(
                Req {
                    id: 6,
                    drops: &drops,
                },
                GFP_KERNEL,
            )
            .unwrap();
        assert_eq!(MempoolBox::pool(&d).min_nr(), 1);
        drop(d);
        // Every value was dropped once: those the failed calls handed back
        // (one of the cache's, two of the pool's) and every box's.
        assert_eq!(drops.get() as usize, made + 6);

        let cache = reqs.inner().cache();
        drop(pool);
        k.kmem_cache_shrink(cache);
        assert_eq!(k.slab_totals(cache).0, 0, "every object went back");
        assert!(k.platform().reported("mempool_resize: new_min_nr 0"));
        assert!(!k.platform().reported("BUG: mempool_free"));
    }

    #[test]
    fn a_forgotten_box_is_reported_when_the_pool_drops() {
        let mut mem = std::vec![0u8; MEM];
        let k = Kmem::<ArenaPlatform<'_>>::boot_arena(&mut mem, 1).unwrap();
        let cache = k.kmem_cache::<u64>("forgotten", SlabFlags::NONE).unwrap();
        let pool = Mempool::new(&cache, 1).unwrap();
        core::mem::forget(pool.alloc(7, GFP_KERNEL).unwrap());
        drop(pool);
        assert!(k
            .platform()
            .reported("mempool_destroy: 1 element still in use"));
    }
}
