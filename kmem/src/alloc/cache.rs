//! Typed slab caches: [`ObjectCache`], [`Cache`] and [`CacheBox`].

use core::fmt;
use core::marker::PhantomData;
use core::mem::{self, ManuallyDrop};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use super::{AllocError, Flags};
use crate::error::{Error, Result};

/// What a typed cache needs from a slab cache (`struct kmem_cache`): fixed
/// size objects, allocated and freed one at a time.
///
/// `alloc_obj` is `kmem_cache_alloc()`, `free_obj` is `kmem_cache_free()`.
/// The slab allocator implements this for its cache handles; [`Cache`]
/// puts a type on top.
///
/// # Safety
///
/// Implementors guarantee that:
///
/// - [`object_size`](ObjectCache::object_size) and
///   [`align`](ObjectCache::align) never change for a given cache;
///   `align()` is non-zero;
/// - an object returned by [`alloc_obj`](ObjectCache::alloc_obj) is aligned
///   to `align()`, valid for reads and writes of `object_size()` bytes, does
///   not overlap any other live object, and stays valid until passed to
///   [`free_obj`](ObjectCache::free_obj) of the same cache (through any
///   handle to it); with [`__GFP_ZERO`](super::flags::__GFP_ZERO) it is
///   zeroed.
pub unsafe trait ObjectCache {
    /// The object size in bytes (`kmem_cache->object_size`).
    fn object_size(&self) -> usize;

    /// The alignment every object is guaranteed (`kmem_cache->align`).
    fn align(&self) -> usize;

    /// Allocates one object (`kmem_cache_alloc()`).
    fn alloc_obj(&self, flags: Flags) -> Result<NonNull<u8>, AllocError>;

    /// Frees one object (`kmem_cache_free()`).
    ///
    /// # Safety
    ///
    /// `ptr` was returned by `alloc_obj` of this cache, has not been freed
    /// since, and is never accessed again.
    unsafe fn free_obj(&self, ptr: NonNull<u8>);
}

// SAFETY: forwards every call to `C`, so `C`'s guarantees carry over.
unsafe impl<C: ObjectCache + ?Sized> ObjectCache for &C {
    #[inline]
    fn object_size(&self) -> usize {
        (**self).object_size()
    }

    #[inline]
    fn align(&self) -> usize {
        (**self).align()
    }

    #[inline]
    fn alloc_obj(&self, flags: Flags) -> Result<NonNull<u8>, AllocError> {
        (**self).alloc_obj(flags)
    }

    #[inline]
    unsafe fn free_obj(&self, ptr: NonNull<u8>) {
        // SAFETY: the caller upholds `free_obj`'s contract, which is `C`'s.
        unsafe { (**self).free_obj(ptr) }
    }
}

/// A slab cache of `T`s: a typed `kmem_cache`.
///
/// [`new`](Cache::new) checks once that the cache's objects can hold a `T`;
/// after that [`alloc`](Cache::alloc) hands out [`CacheBox`]es, owned `T`s
/// that go back to the cache when dropped.
///
/// ```
/// # use kmem::alloc::doc_alloc::{Heap, Objects};
/// use kmem::alloc::{flags::GFP_KERNEL, Cache};
///
/// struct Inode { ino: u64, nlink: u32 }
///
/// let heap = Heap::new();
/// let inodes = Cache::<Inode, _>::new(Objects::new(&heap, 16, 8))?;
/// let a = inodes.alloc(Inode { ino: 1, nlink: 1 }, GFP_KERNEL)?;
/// let b = inodes.alloc(Inode { ino: 2, nlink: 3 }, GFP_KERNEL)?;
/// assert_eq!(a.ino + b.ino, 3);
/// assert_eq!(heap.live(), 2);
/// drop((a, b));
/// assert_eq!(heap.live(), 0);
///
/// // A 16-byte object cannot hold 24 bytes.
/// assert_eq!(
///     Cache::<[u64; 3], _>::new(Objects::new(&heap, 16, 8)).err(),
///     Some(kmem::Error::InvalidArgument)
/// );
/// # Ok::<(), kmem::Error>(())
/// ```
///
/// # Invariants
///
/// `cache.object_size() >= size_of::<T>()` and `cache.align()` is a
/// non-zero multiple of `align_of::<T>()`, so every object of `cache` can
/// hold a `T`.
pub struct Cache<T, C: ObjectCache> {
    cache: C,
    // A cache of `T`s does not own any `T`: the boxes do.
    _type: PhantomData<fn() -> T>,
}

impl<T, C: ObjectCache> Cache<T, C> {
    /// Wraps `cache`, checking that its objects fit a `T`.
    ///
    /// Fails with [`Error::InvalidArgument`] if `size_of::<T>()` exceeds
    /// the object size, or if the cache's alignment is not a multiple of
    /// `align_of::<T>()`.
    pub fn new(cache: C) -> Result<Self> {
        let align = cache.align();
        if mem::size_of::<T>() > cache.object_size()
            || align == 0
            || align % mem::align_of::<T>() != 0
        {
            return Err(Error::InvalidArgument);
        }
        // INVARIANT: just checked.
        Ok(Cache {
            cache,
            _type: PhantomData,
        })
    }

    /// Allocates an object and moves `value` into it.
    pub fn alloc(&self, value: T, flags: Flags) -> Result<CacheBox<'_, T, C>, AllocError> {
        let ptr = self.cache.alloc_obj(flags)?.cast::<T>();
        debug_assert!(ptr.as_ptr().is_aligned());
        // SAFETY: by `ObjectCache`'s guarantees and our invariant the object
        // is aligned for `T`, large enough and not shared with anything.
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: `ptr` is an object of `self.cache` holding a valid `T`.
        Ok(CacheBox {
            ptr,
            cache: self,
            _owns: PhantomData,
        })
    }

    /// The underlying slab cache.
    #[inline]
    pub fn inner(&self) -> &C {
        &self.cache
    }

    /// Unwraps the slab cache. No [`CacheBox`] can be alive: they borrow
    /// `self`.
    #[inline]
    pub fn into_inner(self) -> C {
        self.cache
    }
}

impl<T, C: ObjectCache + fmt::Debug> fmt::Debug for Cache<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("type", &core::any::type_name::<T>())
            .field("cache", &self.cache)
            .finish()
    }
}

/// A `T` in an object of a [`Cache`]; frees the object (after dropping the
/// `T`) when dropped.
///
/// # Invariants
///
/// `ptr` is an object allocated from `cache.cache`, owned by this box, and
/// holds a valid `T`.
pub struct CacheBox<'c, T, C: ObjectCache> {
    ptr: NonNull<T>,
    cache: &'c Cache<T, C>,
    _owns: PhantomData<T>,
}

// SAFETY: the box owns its `T`; freeing from another thread goes through
// `&Cache`, which needs the cache to be `Sync`.
unsafe impl<T: Send, C: ObjectCache + Sync> Send for CacheBox<'_, T, C> {}

// SAFETY: `&CacheBox` only gives `&T`.
unsafe impl<T: Sync, C: ObjectCache + Sync> Sync for CacheBox<'_, T, C> {}

impl<'c, T, C: ObjectCache> CacheBox<'c, T, C> {
    /// Gives up ownership: returns the object's pointer without dropping
    /// the `T` or freeing the object.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::{Heap, Objects};
    /// use kmem::alloc::{flags::GFP_KERNEL, Cache, CacheBox};
    ///
    /// let heap = Heap::new();
    /// let cache = Cache::<u32, _>::new(Objects::new(&heap, 4, 4))?;
    /// let raw = CacheBox::into_raw(cache.alloc(7, GFP_KERNEL)?);
    /// // SAFETY: `raw` came from `into_raw` of a box of `cache`.
    /// let b = unsafe { CacheBox::from_raw(&cache, raw) };
    /// assert_eq!(*b, 7);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn into_raw(b: Self) -> *mut T {
        ManuallyDrop::new(b).ptr.as_ptr()
    }

    /// Rebuilds a box from [`into_raw`](CacheBox::into_raw)'s pointer.
    ///
    /// # Safety
    ///
    /// `raw` must be an object allocated from `cache`'s slab cache, not yet
    /// freed, holding a valid `T` that the caller owns; ownership passes to
    /// the box.
    pub unsafe fn from_raw(cache: &'c Cache<T, C>, raw: *mut T) -> Self {
        // INVARIANT: guaranteed by the caller.
        CacheBox {
            // SAFETY: an object pointer is non-null.
            ptr: unsafe { NonNull::new_unchecked(raw) },
            cache,
            _owns: PhantomData,
        }
    }

    /// Moves the value out and frees the object.
    pub fn into_inner(b: Self) -> T {
        let b = ManuallyDrop::new(b);
        // SAFETY: the object holds a valid `T` that we own; it is read once
        // and the object is then freed without dropping it.
        unsafe {
            let value = b.ptr.as_ptr().read();
            b.cache.cache.free_obj(b.ptr.cast());
            value
        }
    }

    /// Leaks the box: the `T` stays in its object, never dropped or freed,
    /// for as long as the cache is borrowed.
    pub fn leak(b: Self) -> &'c mut T {
        // SAFETY: the object holds a valid `T` nobody else can reach, and
        // stays allocated at least while `'c` borrows the cache.
        unsafe { &mut *Self::into_raw(b) }
    }

    /// The cache this box frees to.
    #[inline]
    pub fn cache(b: &Self) -> &'c Cache<T, C> {
        b.cache
    }
}

impl<T, C: ObjectCache> Deref for CacheBox<'_, T, C> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: by the invariant `ptr` holds a valid `T` owned by `self`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T, C: ObjectCache> DerefMut for CacheBox<'_, T, C> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: by the invariant `ptr` holds a valid `T` owned, hence
        // uniquely reachable, through `self`.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T, C: ObjectCache> Drop for CacheBox<'_, T, C> {
    fn drop(&mut self) {
        // SAFETY: by the invariant the object holds a valid `T` we own and
        // came from this cache; the `T` is dropped once, then the object is
        // freed and never touched again.
        unsafe {
            ptr::drop_in_place(self.ptr.as_ptr());
            self.cache.cache.free_obj(self.ptr.cast());
        }
    }
}

impl<T: fmt::Debug, C: ObjectCache> fmt::Debug for CacheBox<'_, T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
