//! [`KBox`], an owned value in a block of an [`Allocator`].

use core::alloc::Layout;
use core::borrow::{Borrow, BorrowMut};
use core::fmt;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use core::ptr::{self, NonNull};

use super::init::{InPlaceInit, InPlaceWrite, Init, PinInit, Zeroable};
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
/// # On kmalloc
///
/// Rust-for-Linux's examples for `Box` and `KBox`, with kmem's mechanical
/// differences: a machine `k`, and its [`Kmalloc`](super::Kmalloc) handle
/// passed before the flags.
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, KBox, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let b = KBox::<u64, _>::new(24_u64, Kmalloc::new(&k), GFP_KERNEL)?;
/// assert_eq!(*b, 24_u64);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// A value above kmalloc's largest size cannot be a `KBox` (a
/// [`KVBox`] can):
///
/// ```
/// use kmem::alloc::{flags::{GFP_KERNEL, __GFP_NOWARN}, KBox, Kmalloc};
/// use kmem::kmalloc::KMALLOC_MAX_SIZE;
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// const SIZE: usize = KMALLOC_MAX_SIZE + 1;
/// struct Huge([u8; SIZE]);
///
/// assert!(KBox::<Huge, _>::new_uninit(Kmalloc::new(&k), GFP_KERNEL | __GFP_NOWARN).is_err());
/// ```
///
/// A trait object, through [`kbox_unsize!`](crate::kbox_unsize) where
/// Rust-for-Linux writes `as KBox<dyn FooTrait>`:
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, KBox, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// trait FooTrait {}
///
/// struct FooStruct;
/// impl FooTrait for FooStruct {}
///
/// let _ = kmem::kbox_unsize!(KBox::new(FooStruct, Kmalloc::new(&k), GFP_KERNEL)?, dyn FooTrait);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// To a raw pointer and back:
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, KBox, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let km = Kmalloc::new(&k);
/// let x = KBox::new(24, km, GFP_KERNEL)?;
/// let ptr = KBox::into_raw(x);
/// // SAFETY: `ptr` comes from `KBox::into_raw` of a box on `km`.
/// let x = unsafe { KBox::from_raw(ptr, km) };
/// assert_eq!(*x, 24);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// Uninitialised, then written; and zeroed:
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, KBox, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let km = Kmalloc::new(&k);
/// let b = KBox::<u64, _>::new_uninit(km, GFP_KERNEL)?;
/// let b = KBox::write(b, 24);
/// assert_eq!(*b, 24_u64);
///
/// let z = KBox::<[u8; 128], _>::zeroed(km, GFP_KERNEL)?;
/// assert_eq!(*z, [0; 128]);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// # Unsized contents
///
/// Rust-for-Linux's `Box` derives `CoercePointee`, so `b as KBox<dyn
/// Trait>` and `KBox<[T; N]>` to `KBox<[T]>` are coercions there. That
/// derive (and `CoerceUnsized`) is unstable; on stable Rust the
/// [`kbox_unsize!`](crate::kbox_unsize) macro does the same unsizing, through
/// a raw-pointer coercion, which only compiles for a real unsizing
/// (or an upcast between trait objects):
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use kmem::alloc::{flags::GFP_KERNEL, KBox};
/// use kmem::kbox_unsize;
///
/// trait Shape { fn area(&self) -> u32; }
/// struct Square(u32);
/// impl Shape for Square { fn area(&self) -> u32 { self.0 * self.0 } }
///
/// let heap = Heap::new();
/// // Rust-for-Linux: `KBox::new(Square(3), GFP_KERNEL)? as KBox<dyn Shape>`
/// let s: KBox<dyn Shape, _> = kbox_unsize!(KBox::new(Square(3), &heap, GFP_KERNEL)?, dyn Shape);
/// assert_eq!(s.area(), 9);
/// let a: KBox<[u8], _> = kbox_unsize!(KBox::new([1u8, 2, 3], &heap, GFP_KERNEL)?, [u8]);
/// assert_eq!(a.len(), 3);
/// drop((s, a));
/// assert_eq!(heap.live(), 0);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// # Pinning
///
/// [`pin`](KBox::pin), [`into_pin`](KBox::into_pin),
/// [`pin_slice`](KBox::pin_slice) and [`pin_init`](InPlaceInit::pin_init)
/// require `A: 'static`, as Rust-for-Linux's (and `std`'s `Box::pin_in`).
/// `Pin` promises that a pinned value's memory is not reused before its
/// destructor runs, even if the box is leaked with `mem::forget`; a box
/// that borrows its machine (`Kmalloc<'a, P>`) cannot keep that promise,
/// since once the leaked box's borrow ends the machine, and the memory under
/// it, may be dropped and reused while something (an intrusive list, say)
/// still points at the never-dropped value. A handle is `'static` when the
/// machine lives for the program (a `static`, or a leaked `Kmem`): that is
/// Rust-for-Linux's situation, where the allocator is a global. Any other
/// handle pins inside a [`pin_scope`](super::pin_scope()), which aborts
/// the program if a block of it outlives the scope.
///
/// The examples build a `'static` handle by leaking a toy heap:
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use core::marker::PhantomPinned;
/// use kmem::alloc::{flags::GFP_KERNEL, KBox};
///
/// struct Node { next: *const Node, _pin: PhantomPinned }
///
/// let heap: &'static Heap = Box::leak(Box::new(Heap::new()));
/// let n = KBox::pin(Node { next: core::ptr::null(), _pin: PhantomPinned }, heap, GFP_KERNEL)?;
/// assert!(n.next.is_null());
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
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
    /// Requires `A: 'static`, like Rust-for-Linux's and `std`'s
    /// `Box::pin_in`: see [Pinning](KBox#pinning).
    pub fn pin(x: T, alloc: A, flags: Flags) -> Result<Pin<Self>, AllocError>
    where
        A: 'static,
    {
        Ok(Self::into_pin(Self::new(x, alloc, flags)?))
    }

    /// Allocates a zeroed `T` (with [`__GFP_ZERO`](super::flags::__GFP_ZERO)),
    /// for a type valid at all-zeroes ([`Zeroable`]).
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KBox};
    /// let heap = Heap::new();
    /// let b = KBox::<[u8; 128], _>::zeroed(&heap, GFP_KERNEL)?;
    /// assert_eq!(*b, [0; 128]);
    /// # Ok::<(), kmem::alloc::AllocError>(())
    /// ```
    pub fn zeroed(alloc: A, flags: Flags) -> Result<Self, AllocError>
    where
        T: Zeroable,
    {
        let b = Self::new_uninit(alloc, flags | super::flags::__GFP_ZERO)?;
        // SAFETY: the allocator zeroed the block (`__GFP_ZERO`) and
        // `T: Zeroable` makes all-zeroes a valid `T`; a zero-sized `T` has
        // no bytes to zero.
        Ok(unsafe { b.assume_init() })
    }

    /// Allocates a slice of `len` values pinned in place, the `i`-th built by
    /// the initialiser `init(i)`, and returns it pinned.
    ///
    /// If an initialiser fails, the values already built are dropped, the
    /// block is freed and its error returned; a failed allocation is
    /// `E::from(AllocError)`. Requires `A: 'static` (see
    /// [Pinning](KBox#pinning)).
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use core::marker::PhantomPinned;
    /// use kmem::alloc::{flags::GFP_KERNEL, init::{pin_data, try_pin_init, PinInit}, AllocError, KBox};
    ///
    /// #[pin_data]
    /// struct Slot { id: usize, #[pin] _pin: PhantomPinned }
    ///
    /// impl Slot {
    ///     fn new(id: usize) -> impl PinInit<Self, AllocError> {
    ///         try_pin_init!(Self { id, _pin: PhantomPinned }? AllocError)
    ///     }
    /// }
    ///
    /// let heap: &'static Heap = Box::leak(Box::new(Heap::new()));
    /// let s = KBox::pin_slice(
    ///     |i| Slot::new(i * 10),
    ///     4,
    ///     heap,
    ///     GFP_KERNEL,
    /// )?;
    /// assert_eq!((s.len(), s[3].id), (4, 30));
    /// # Ok::<(), AllocError>(())
    /// ```
    ///
    /// Rust-for-Linux's example: a slice of structures that each hold a
    /// lock, every one built in place. kmem has no pin-initialised kernel
    /// `SpinLock`, so the `spin` crate's lock stands in for it:
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, init::{pin_data, try_pin_init, PinInit}, KBox};
    /// use spin::mutex::SpinMutex;
    ///
    /// struct Counters { hits: u32, misses: u32 }
    ///
    /// #[pin_data]
    /// struct Bucket { limit: u32, #[pin] stats: SpinMutex<Counters> }
    ///
    /// impl Bucket {
    ///     fn new() -> impl PinInit<Self, kmem::Error> {
    ///         try_pin_init!(Self {
    ///             limit: 10,
    ///             stats: SpinMutex::new(Counters { hits: 20, misses: 30 }),
    ///         }? kmem::Error)
    ///     }
    /// }
    ///
    /// let heap: &'static Heap = Box::leak(Box::new(Heap::new()));
    /// // Ten buckets in one block.
    /// let s = KBox::pin_slice(|_| Bucket::new(), 10, heap, GFP_KERNEL)?;
    /// assert_eq!(s[5].limit, 10);
    /// assert_eq!(s[3].stats.lock().hits, 20);
    /// # assert_eq!(s[3].stats.lock().misses, 30);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn pin_slice<Func, Item, E>(
        init: Func,
        len: usize,
        alloc: A,
        flags: Flags,
    ) -> Result<Pin<KBox<[T], A>>, E>
    where
        Func: FnMut(usize) -> Item,
        Item: PinInit<T, E>,
        E: From<AllocError>,
        A: 'static,
    {
        // SAFETY: the allocator cannot go away before the block is freed
        // (`A: 'static`).
        unsafe { Self::pin_slice_unchecked(init, len, alloc, flags) }
    }

    /// [`pin_slice`](KBox::pin_slice) for a handle that is not `'static`.
    ///
    /// # Safety
    ///
    /// As for [`into_pin_unchecked`](KBox::into_pin_unchecked).
    pub(super) unsafe fn pin_slice_unchecked<Func, Item, E>(
        mut init: Func,
        len: usize,
        alloc: A,
        flags: Flags,
    ) -> Result<Pin<KBox<[T], A>>, E>
    where
        Func: FnMut(usize) -> Item,
        Item: PinInit<T, E>,
        E: From<AllocError>,
    {
        /// The block and how many of its slots are built: dropping it drops
        /// those and frees the block (an initialiser failed or panicked).
        struct Partial<T, A: Allocator> {
            base: NonNull<T>,
            layout: Layout,
            done: usize,
            alloc: A,
        }

        impl<T, A: Allocator> Drop for Partial<T, A> {
            fn drop(&mut self) {
                // SAFETY: the block came from `alloc` with `layout` (or is
                // zero-sized) and is given up here: freed after the values,
                // also if one's destructor panics.
                let _block =
                    unsafe { super::FreeOnDrop::new(&self.alloc, self.base.cast(), self.layout) };
                let built = ptr::slice_from_raw_parts_mut(self.base.as_ptr(), self.done);
                // SAFETY: the first `done` slots hold values built in place
                // that nothing else owns; they are dropped once, here.
                unsafe { ptr::drop_in_place(built) };
            }
        }

        let layout = Layout::array::<T>(len).map_err(|_| AllocError)?;
        let base = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            alloc.alloc(layout, flags, NumaNode::NO_NODE)?.cast::<T>()
        };
        let mut part = Partial {
            base,
            layout,
            done: 0,
            alloc,
        };
        while part.done < len {
            // SAFETY: slot `done` lies in the block (`done < len`), is
            // uninitialised, is only freed (never read) if `init` fails,
            // and does not move once built: the block becomes the pinned box.
            unsafe { init(part.done).__pinned_init(part.base.as_ptr().add(part.done))? };
            part.done += 1;
        }
        let part = ManuallyDrop::new(part);
        // SAFETY: `part` is never used or dropped again; the handle is moved
        // out once.
        let alloc = unsafe { ptr::read(&part.alloc) };
        let slice = ptr::slice_from_raw_parts_mut(part.base.as_ptr(), len);
        // SAFETY: `len` values are built in a block of `Layout::array::<T>(len)`
        // (that is `Layout::for_value` of the slice) from `alloc`, or the
        // slice is zero-sized and dangling.
        let b = unsafe { KBox::from_raw(slice, alloc) };
        // SAFETY: the block is not reused before the box drops (the
        // caller's promise).
        Ok(unsafe { KBox::into_pin_unchecked(b) })
    }

    /// Keeps the block but forgets the value, without dropping it.
    fn forget_contents(b: Self) -> KBox<MaybeUninit<T>, A> {
        let (raw, alloc) = Self::into_raw_with_allocator(b);
        // SAFETY: `MaybeUninit<T>` has `T`'s layout, so the block (or the
        // dangling pointer) is one for it; any contents are a valid
        // `MaybeUninit<T>`.
        unsafe { KBox::from_raw(raw.cast(), alloc) }
    }

    /// Drops the value but keeps the block, for writing a new value into
    /// it.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KBox};
    /// let heap = Heap::new();
    /// let b = KBox::new([0u32; 32], &heap, GFP_KERNEL)?;
    /// let b = KBox::drop_contents(b);
    /// let b = KBox::write(b, [1; 32]); // the same block, reused
    /// assert_eq!((*b, heap.live()), ([1; 32], 1));
    /// # Ok::<(), kmem::alloc::AllocError>(())
    /// ```
    pub fn drop_contents(b: Self) -> KBox<MaybeUninit<T>, A> {
        // The box forgets the value before it is dropped: if its destructor
        // panics, unwinding frees the block without dropping it again.
        let mut b = Self::forget_contents(b);
        // SAFETY: the block holds the valid `T` the box held, which nothing
        // else owns; it is dropped once here and from now on only treated as
        // uninitialised memory.
        unsafe { ptr::drop_in_place(b.as_mut_ptr()) };
        b
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
    /// Otherwise `raw` may be dangling. A [`Scoped`](super::Scoped) handle
    /// is an allocator of its own: only blocks allocated through the same
    /// [`pin_scope`](super::pin_scope()) may be given to it.
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

    /// Pins the box's contents; `A: 'static`, see [Pinning](KBox#pinning).
    pub fn into_pin(b: Self) -> Pin<Self>
    where
        A: 'static,
    {
        // SAFETY: the allocator cannot go away before the block is freed
        // (`A: 'static`).
        unsafe { Self::into_pin_unchecked(b) }
    }

    /// Pins the box's contents, for a handle that is not `'static`.
    ///
    /// # Safety
    ///
    /// The block is not reused before the box's `Drop` has dropped the
    /// value, even if the box is leaked: the allocator and the memory under
    /// it outlive a leaked box (as a `'static` one does), or the program
    /// ends first (as a [`pin_scope`](super::pin_scope) does).
    pub(super) unsafe fn into_pin_unchecked(b: Self) -> Pin<Self> {
        // SAFETY: the value lives in its own block (or is zero-sized) and the
        // box never moves it; the block is only freed by `Drop`, after the
        // value is dropped, and it is not reused otherwise (the caller's
        // promise).
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
        // SAFETY: by the invariant a non-zero-sized value lives in a block
        // allocated by `alloc` with this layout; the guard frees it after
        // the value is dropped, also if its destructor panics, and the box
        // is gone then.
        let _block = unsafe {
            super::FreeOnDrop::new(&self.alloc, self.ptr.cast(), Layout::for_value::<T>(self))
        };
        // SAFETY: by the invariant `ptr` points to a valid `T` that we own;
        // it is not used again after being dropped.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr()) };
    }
}

/// Code generic over [`Borrow`] takes a box like the value itself.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use core::borrow::Borrow;
/// use kmem::alloc::{flags::GFP_KERNEL, KBox};
///
/// struct Holder<B: Borrow<u32>>(B);
/// let heap = Heap::new();
/// let owned = Holder(1);
/// let boxed = Holder(KBox::new(1, &heap, GFP_KERNEL)?);
/// let i = 1;
/// let borrowed = Holder(&i);
/// assert_eq!((*owned.0.borrow(), *boxed.0.borrow(), *borrowed.0.borrow()), (1, 1, 1));
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
impl<T: ?Sized, A: Allocator> Borrow<T> for KBox<T, A> {
    fn borrow(&self) -> &T {
        self
    }
}

/// As [`Borrow`], mutably.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use core::borrow::BorrowMut;
/// use kmem::alloc::{flags::GFP_KERNEL, KBox};
///
/// struct Holder<B: BorrowMut<u32>>(B);
/// impl<B: BorrowMut<u32>> Holder<B> {
///     fn bump(&mut self) { *self.0.borrow_mut() += 1; }
/// }
/// let heap = Heap::new();
/// let mut boxed = Holder(KBox::new(1, &heap, GFP_KERNEL)?);
/// let mut i = 1;
/// let mut borrowed = Holder(&mut i);
/// boxed.bump();
/// borrowed.bump();
/// assert_eq!((*boxed.0, i), (2, 2));
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
impl<T: ?Sized, A: Allocator> BorrowMut<T> for KBox<T, A> {
    fn borrow_mut(&mut self) -> &mut T {
        self
    }
}

impl<T, A: Allocator + 'static> InPlaceWrite<T> for KBox<MaybeUninit<T>, A> {
    type Initialized = KBox<T, A>;

    fn write_init<E>(mut self, init: impl Init<T, E>) -> Result<KBox<T, A>, E> {
        let slot = self.as_mut_ptr();
        // SAFETY: `slot` is the box's uninitialised block (or a dangling
        // pointer for a zero-sized `T`); on failure it is only freed, as a
        // `MaybeUninit`, when `self` drops.
        unsafe { init.__init(slot)? };
        // SAFETY: the initialiser succeeded, so the value is built.
        Ok(unsafe { self.assume_init() })
    }

    fn write_pin_init<E>(self, init: impl PinInit<T, E>) -> Result<Pin<KBox<T, A>>, E> {
        // SAFETY: the allocator cannot go away before the block is freed
        // (`A: 'static`).
        unsafe { self.write_pin_init_unchecked(init) }
    }
}

impl<T, A: Allocator> KBox<MaybeUninit<T>, A> {
    /// [`InPlaceWrite::write_pin_init`] for a handle that is not `'static`.
    ///
    /// # Safety
    ///
    /// As for [`into_pin_unchecked`](KBox::into_pin_unchecked).
    pub(super) unsafe fn write_pin_init_unchecked<E>(
        mut self,
        init: impl PinInit<T, E>,
    ) -> Result<Pin<KBox<T, A>>, E> {
        let slot = self.as_mut_ptr();
        // SAFETY: as in `write_init`; the value is pinned right after, and
        // the block does not move before (only the box does).
        unsafe { init.__pinned_init(slot)? };
        // SAFETY: the initialiser succeeded, so the value is built.
        let b = unsafe { self.assume_init() };
        // SAFETY: the block is not reused before the box drops (the
        // caller's promise).
        Ok(unsafe { KBox::into_pin_unchecked(b) })
    }
}

impl<T, A: Allocator + 'static> InPlaceInit<T> for KBox<T, A> {
    type Allocator = A;
    type PinnedSelf = Pin<Self>;

    fn try_pin_init<E>(init: impl PinInit<T, E>, alloc: A, flags: Flags) -> Result<Pin<Self>, E>
    where
        E: From<AllocError>,
    {
        KBox::new_uninit(alloc, flags)?.write_pin_init(init)
    }

    fn try_init<E>(init: impl Init<T, E>, alloc: A, flags: Flags) -> Result<Self, E>
    where
        E: From<AllocError>,
    {
        KBox::new_uninit(alloc, flags)?.write_init(init)
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

/// Unsizes a [`KBox`]: `kbox_unsize!(b, dyn Trait)` turns a `KBox<T, A>`
/// into a `KBox<dyn Trait, A>`, `kbox_unsize!(b, [T])` a `KBox<[T; N], A>`
/// into a `KBox<[T], A>`, without moving the value.
///
/// kmem's stable-Rust stand-in for the coercion Rust-for-Linux's
/// `CoercePointee` derive gives (`b as KBox<dyn Trait>`), which is
/// unstable. The target is written as a type because the conversion is a
/// raw-pointer coercion to it: only an unsizing (or a trait-object upcast)
/// compiles, never a cast between unrelated types. See [`KBox`].
#[macro_export]
macro_rules! kbox_unsize {
    ($b:expr, $t:ty $(,)?) => {{
        let (raw, alloc) = $crate::alloc::KBox::into_raw_with_allocator($b);
        let raw: *mut $t = raw;
        // SAFETY: `raw` comes from `into_raw_with_allocator` and was only
        // coerced: same address, same value, hence the same
        // `Layout::for_value`, in the block of the same allocator.
        unsafe { $crate::alloc::KBox::from_raw(raw, alloc) }
    }};
}
