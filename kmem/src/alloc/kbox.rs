//! [`KBox`], an owned value in a block of an [`Allocator`].

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use core::ptr::{self, NonNull};

use super::{AllocError, Allocator, Flags, KVmalloc, NumaNode, Vmalloc};

/// An owned `T` in memory from the allocator `A`: the kernel's `Box`.
///
/// Like Rust-for-Linux's `Box<T, A>` (aliased `KBox<T>` there), allocation
/// takes GFP [`Flags`] and fails with [`AllocError`] rather than aborting.
/// Its `VBox<T>` and `KVBox<T>` are the aliases [`VBox`] and [`KVBox`] here
/// (`KBox<T, Vmalloc<'a, P>>`, `KBox<T, KVmalloc<'a, P>>`).
/// Unlike it, the box stores its allocator handle `alloc: A`, because a kmem
/// allocator is a handle to one machine rather than a global; `A` is
/// typically a `Copy` reference-like type.
///
/// Dropping the box drops the value and frees the block. Zero-sized values
/// (`KBox<()>`, `KBox<[T; 0]>`...) allocate nothing.
///
/// Unsized contents are supported for dropping and freeing: a `KBox<[T], A>`
/// comes from [`KBox::into_slice`], a `KBox<dyn Trait, A>` from
/// [`KBox::from_raw`] with an unsized raw pointer (there is no unsizing
/// coercion, `CoerceUnsized` being unstable).
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use kmem::alloc::{flags::GFP_KERNEL, KBox};
///
/// let heap = Heap::new();
/// let b = KBox::new([1u64, 2, 3], &heap, GFP_KERNEL)?;
/// assert_eq!(b[1], 2);
/// assert_eq!(heap.live(), 1);
/// drop(b);
/// assert_eq!(heap.live(), 0);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// # Invariants
///
/// `ptr` is aligned for `T` and points to an initialised `T`. If
/// `Layout::for_value(&*ptr)` has a non-zero size, the block was allocated
/// by `alloc` with exactly that layout and is owned by this box; otherwise
/// `ptr` is dangling and nothing is freed.
pub struct KBox<T: ?Sized, A: Allocator> {
    ptr: NonNull<T>,
    alloc: A,
    _owns: PhantomData<T>,
}

/// A [`KBox`] in vmalloc memory: Rust-for-Linux's `VBox<T>`
/// (`Box<T, Vmalloc>`), here with the [`Vmalloc`] handle's lifetime and
/// platform as parameters.
///
/// For large values: the block is virtually contiguous, takes whole pages
/// and needs a platform with page tables (on the arena every allocation
/// fails). A value that large should not pass through the stack: allocate
/// it with [`new_uninit`](KBox::new_uninit) and
/// [`__GFP_ZERO`](super::flags::__GFP_ZERO) and fill it in place.
///
/// ```
/// use kmem::alloc::{flags::{GFP_KERNEL, __GFP_ZERO}, AllocError, VBox, Vmalloc};
/// use kmem::{Kmem, Platform};
///
/// /// A zeroed 1 MiB buffer, built in place.
/// fn buffer<P: Platform>(k: &Kmem<P>) -> Result<VBox<'_, [u8; 1 << 20], P>, AllocError> {
///     let b = VBox::new_uninit(Vmalloc::new(k), GFP_KERNEL | __GFP_ZERO)?;
///     // SAFETY: `__GFP_ZERO` zeroed the block; all-zero is a valid `[u8; N]`.
///     Ok(unsafe { b.assume_init() })
/// }
///
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// assert_eq!(buffer(&k).err(), Some(AllocError)); // the arena has no vmalloc
/// ```
pub type VBox<'a, T, P> = KBox<T, Vmalloc<'a, P>>;

/// A [`KBox`] from kvmalloc: Rust-for-Linux's `KVBox<T>`
/// (`Box<T, KVmalloc>`): kmalloc memory when kmalloc can serve it, vmalloc
/// memory otherwise (see [`KVmalloc`]).
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, KVBox, KVmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let b: KVBox<'_, [u32; 4], _> = KVBox::new([1, 2, 3, 4], KVmalloc::new(&k), GFP_KERNEL).unwrap();
/// assert!(!k.is_vmalloc_addr((&*b as *const [u32; 4]).cast()));
/// assert_eq!(b[3], 4);
/// ```
pub type KVBox<'a, T, P> = KBox<T, KVmalloc<'a, P>>;

// SAFETY: the box owns its `T` exclusively (moving the box moves the value)
// and its allocator handle; sending both is sound when each may be sent.
unsafe impl<T: ?Sized + Send, A: Allocator + Send> Send for KBox<T, A> {}

// SAFETY: `&KBox` only gives `&T` and `&A`.
unsafe impl<T: ?Sized + Sync, A: Allocator + Sync> Sync for KBox<T, A> {}

impl<T, A: Allocator> KBox<T, A> {
    /// Allocates a block from `alloc` and moves `x` into it.
    ///
    /// Zero-sized `T` allocates nothing and cannot fail.
    pub fn new(x: T, alloc: A, flags: Flags) -> Result<Self, AllocError> {
        Ok(KBox::write(Self::new_uninit(alloc, flags)?, x))
    }

    /// Allocates an uninitialised block for a `T`.
    ///
    /// With [`__GFP_ZERO`](super::flags::__GFP_ZERO) the block is zeroed
    /// (by the allocator), which makes [`assume_init`](KBox::assume_init)
    /// sound for types valid at all-zeroes.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::{GFP_KERNEL, __GFP_ZERO}, KBox};
    ///
    /// let heap = Heap::new();
    /// let b = KBox::<[u32; 4], _>::new_uninit(&heap, GFP_KERNEL | __GFP_ZERO)?;
    /// // SAFETY: `__GFP_ZERO` zeroed the block and all-zero is a valid `[u32; 4]`.
    /// let b = unsafe { b.assume_init() };
    /// assert_eq!(*b, [0; 4]);
    /// # Ok::<(), kmem::alloc::AllocError>(())
    /// ```
    pub fn new_uninit(alloc: A, flags: Flags) -> Result<KBox<MaybeUninit<T>, A>, AllocError> {
        let layout = Layout::new::<T>();
        let ptr = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            let block = alloc.alloc(layout, flags, NumaNode::NO_NODE)?;
            debug_assert!(block.len() >= layout.size());
            block.cast::<MaybeUninit<T>>()
        };
        debug_assert!(ptr.as_ptr().is_aligned());
        // INVARIANT: `ptr` is dangling for a zero-sized `T`, else a block of
        // `Layout::new::<T>()` (which is `MaybeUninit<T>`'s) from `alloc`;
        // every bit pattern is an initialised `MaybeUninit<T>`.
        Ok(KBox {
            ptr,
            alloc,
            _owns: PhantomData,
        })
    }

    /// Allocates and pins `x`: it will not move until it is dropped.
    ///
    /// Requires `A: 'static` like `Box::pin_in` in `std`: with a borrowed
    /// allocator one could `mem::forget` the box and then destroy the
    /// allocator, reusing the memory without `x` being dropped, which
    /// `Pin` forbids.
    pub fn pin(x: T, alloc: A, flags: Flags) -> Result<Pin<Self>, AllocError>
    where
        A: 'static,
    {
        Ok(Self::into_pin(Self::new(x, alloc, flags)?))
    }

    /// Moves the value out and frees the block.
    pub fn into_inner(b: Self) -> T {
        let (raw, alloc) = Self::into_raw_with_allocator(b);
        // SAFETY: by the invariant `raw` points to an initialised `T`, which
        // we now own; it is read exactly once and the block is then freed
        // without dropping it.
        let value = unsafe { ptr::read(raw) };
        let layout = Layout::new::<T>();
        if layout.size() != 0 {
            // SAFETY: by the invariant the block came from `alloc` with this
            // layout; nothing refers to it any more.
            unsafe { alloc.free(NonNull::new_unchecked(raw).cast(), layout) };
        }
        value
    }
}

impl<T, A: Allocator> KBox<MaybeUninit<T>, A> {
    /// Writes `value` into the block and returns the initialised box.
    pub fn write(mut b: Self, value: T) -> KBox<T, A> {
        (*b).write(value);
        // SAFETY: the value has just been written.
        unsafe { b.assume_init() }
    }

    /// Converts to `KBox<T, A>`.
    ///
    /// # Safety
    ///
    /// The contents must be an initialised, valid `T`.
    pub unsafe fn assume_init(self) -> KBox<T, A> {
        let (raw, alloc) = Self::into_raw_with_allocator(self);
        // SAFETY: `MaybeUninit<T>` has `T`'s layout, so the block (or the
        // dangling pointer) fits a `T`, and the caller guarantees the
        // contents are a valid `T`.
        unsafe { KBox::from_raw(raw.cast::<T>(), alloc) }
    }
}

impl<T, A: Allocator, const N: usize> KBox<[T; N], A> {
    /// Turns a boxed array into a boxed slice, without moving or copying.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KBox};
    ///
    /// let heap = Heap::new();
    /// let s: KBox<[u8], _> = KBox::into_slice(KBox::new([7u8; 5], &heap, GFP_KERNEL)?);
    /// assert_eq!(s.len(), 5);
    /// # Ok::<(), kmem::alloc::AllocError>(())
    /// ```
    pub fn into_slice(b: Self) -> KBox<[T], A> {
        let (raw, alloc) = Self::into_raw_with_allocator(b);
        let slice = ptr::slice_from_raw_parts_mut(raw.cast::<T>(), N);
        // SAFETY: `[T]` of length `N` has the layout of `[T; N]`, so the
        // block and its layout are unchanged, and it holds `N` valid `T`s.
        unsafe { KBox::from_raw(slice, alloc) }
    }
}

impl<T: ?Sized, A: Allocator> KBox<T, A> {
    /// Rebuilds a box from [`into_raw`](KBox::into_raw)'s pointer.
    ///
    /// # Safety
    ///
    /// `raw` must be aligned and point to a valid `T` that the caller owns.
    /// If `Layout::for_value(&*raw)` is non-zero-sized, `raw` must be a block
    /// allocated by `alloc` (or an allocator `alloc` is a handle to) with
    /// exactly that layout, and ownership of the block passes to the box.
    /// Otherwise `raw` may be dangling.
    pub unsafe fn from_raw(raw: *mut T, alloc: A) -> Self {
        // INVARIANT: guaranteed by the caller.
        KBox {
            // SAFETY: the caller passes an aligned, hence non-null, pointer.
            ptr: unsafe { NonNull::new_unchecked(raw) },
            alloc,
            _owns: PhantomData,
        }
    }

    /// Gives up ownership: returns the pointer without dropping the value or
    /// freeing the block; the allocator handle is dropped.
    ///
    /// Use [`from_raw`](KBox::from_raw) with a handle to the same allocator
    /// to get the box back.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KBox};
    ///
    /// let heap = Heap::new();
    /// let raw = KBox::into_raw(KBox::new(5u16, &heap, GFP_KERNEL)?);
    /// // SAFETY: `raw` came from `into_raw` of a box on `&heap`.
    /// let b = unsafe { KBox::from_raw(raw, &heap) };
    /// assert_eq!(*b, 5);
    /// # Ok::<(), kmem::alloc::AllocError>(())
    /// ```
    pub fn into_raw(b: Self) -> *mut T {
        Self::into_raw_with_allocator(b).0
    }

    /// Like [`into_raw`](KBox::into_raw), but also returns the allocator
    /// handle.
    pub fn into_raw_with_allocator(b: Self) -> (*mut T, A) {
        let b = ManuallyDrop::new(b);
        // SAFETY: `b` is never used or dropped again, so the handle is moved
        // out exactly once.
        let alloc = unsafe { ptr::read(&b.alloc) };
        (b.ptr.as_ptr(), alloc)
    }

    /// Leaks the box: the value is never dropped and the block never freed.
    ///
    /// The reference may live as long as the allocator handle's type allows
    /// (`A: 'a`), since the block belongs to that allocator.
    pub fn leak<'a>(b: Self) -> &'a mut T
    where
        A: 'a,
    {
        // SAFETY: the pointer is aligned and points to a valid `T` that
        // nobody else can reach, in a block that is never freed while the
        // allocator (which outlives `'a`) lives.
        unsafe { &mut *Self::into_raw(b) }
    }

    /// Pins the box's contents (see [`pin`](KBox::pin) for `A: 'static`).
    pub fn into_pin(b: Self) -> Pin<Self>
    where
        A: 'static,
    {
        // SAFETY: the value lives in its own block (or is zero-sized) and the
        // box never moves it; the block is only freed by `Drop`, after the
        // value is dropped, and the allocator cannot go away first
        // (`A: 'static`).
        unsafe { Pin::new_unchecked(b) }
    }

    /// The allocator handle this box frees to.
    pub fn allocator(b: &Self) -> &A {
        &b.alloc
    }
}

impl<T: ?Sized, A: Allocator + 'static> From<KBox<T, A>> for Pin<KBox<T, A>> {
    fn from(b: KBox<T, A>) -> Self {
        KBox::into_pin(b)
    }
}

impl<T: ?Sized, A: Allocator> Deref for KBox<T, A> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: by the invariant `ptr` points to a valid `T` owned by `self`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized, A: Allocator> DerefMut for KBox<T, A> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: by the invariant `ptr` points to a valid `T` owned, hence
        // uniquely reachable, through `self`.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized, A: Allocator> Drop for KBox<T, A> {
    fn drop(&mut self) {
        let layout = Layout::for_value::<T>(self);
        // SAFETY: by the invariant `ptr` points to a valid `T` that we own;
        // it is not used again after being dropped.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() != 0 {
            // SAFETY: by the invariant a non-zero-sized value lives in a block
            // allocated by `alloc` with `layout`; the value is gone.
            unsafe { self.alloc.free(self.ptr.cast(), layout) };
        }
    }
}

impl<T: ?Sized + fmt::Debug, A: Allocator> fmt::Debug for KBox<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display, A: Allocator> fmt::Display for KBox<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized + PartialEq, A: Allocator> PartialEq for KBox<T, A> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: ?Sized + Eq, A: Allocator> Eq for KBox<T, A> {}
