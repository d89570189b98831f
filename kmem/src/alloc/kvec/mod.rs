//! [`KVec`], a growable array in a block of an [`Allocator`], with its
//! aliases [`VVec`] and [`KVVec`], the [`kvec!`](crate::kvec) macro, its
//! by-value iterators ([`IntoIter`], [`DrainAll`]) and the errors of its
//! calls that do not allocate ([`PushError`], [`InsertError`],
//! [`RemoveError`]): Rust-for-Linux's `kernel::alloc::kvec`.
//!
//! # Differences from Rust-for-Linux
//!
//! Every difference comes from the allocator being a handle stored in the
//! vector rather than a type (see [the `alloc` module](super)):
//!
//! | Rust-for-Linux | kmem |
//! |---|---|
//! | `KVec::new()` | [`KVec::new(alloc)`](KVec::new) |
//! | `KVec::with_capacity(n, flags)` | [`KVec::with_capacity(n, alloc, flags)`](KVec::with_capacity) |
//! | `KVec::from_elem(x, n, flags)` | [`KVec::from_elem(x, n, alloc, flags)`](KVec::from_elem) |
//! | `KVec::from_raw_parts(ptr, len, cap)` | [`KVec::from_raw_parts(ptr, len, cap, alloc)`](KVec::from_raw_parts) |
//! | `v.into_raw_parts()` | [`v.into_raw_parts()`](KVec::into_raw_parts) (drops the handle), or [`into_raw_parts_with_alloc`](KVec::into_raw_parts_with_alloc) |
//! | `kvec![]`, `kvec![x; n]?`, `kvec![a, b]?` | [`kvec![in alloc]`](crate::kvec), `kvec![in alloc; x; n]?`, `kvec![in alloc; a, b]?` |
//! | `KVec<T>` | `KVec<T, A>` (the allocator is inferred: `KVec<u32, _>`) |
//! | `KVVec::shrink_to` | [`KVec::shrink_to`], for every allocator |
//! | `Default for Vec<T, A>` | `Default` where the handle `A: Default` |

use core::alloc::Layout;
use core::marker::PhantomData;
use core::mem::{self, ManuallyDrop, MaybeUninit};
use core::ptr::{self, NonNull};
use core::slice;

use pinned_init::Zeroable;

use super::flags::__GFP_ZERO;
use super::{AllocError, Allocator, Flags, KVmalloc, Vmalloc};

mod errors;
mod extend;
mod iter;
mod traits;

#[cfg(test)]
mod tests;

pub use errors::{InsertError, PushError, RemoveError};
pub use iter::{DrainAll, IntoIter};

/// Builds a [`KVec`] from its elements, allocating with
/// [`GFP_KERNEL`](crate::alloc::flags::GFP_KERNEL): Rust-for-Linux's
/// `kvec!`, with the allocator handle first.
///
/// | form | Rust-for-Linux | result |
/// |---|---|---|
/// | `kvec![in alloc]` | `kvec![]` | an empty `KVec` (allocates nothing) |
/// | `kvec![in alloc; x; n]` | `kvec![x; n]` | `Result<KVec, AllocError>` of `n` clones of `x` ([`KVec::from_elem`]) |
/// | `kvec![in alloc; a, b, c]` | `kvec![a, b, c]` | `Result<KVec, AllocError>` of exactly these elements |
///
/// The `in alloc;` prefix names the allocator handle, which kmem needs
/// where Rust-for-Linux's `KVec<T>` names `Kmalloc` by its type (the same
/// prefix as `bumpalo`'s `vec!`). `alloc` is evaluated once: in the list
/// form before the elements (the block is allocated first, as in
/// Rust-for-Linux), in the `x; n` form after `x` and `n` (the order of
/// [`KVec::from_elem`]'s arguments). The list form allocates a block for
/// exactly its elements, as Rust-for-Linux's does (through a [`KBox`](crate::alloc::KBox) of
/// the array).
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use kmem::alloc::flags::GFP_KERNEL;
///
/// # let heap = Heap::new();
/// let mut v = kmem::kvec![in &heap];
/// v.push(1, GFP_KERNEL)?;
/// assert_eq!(v, [1]);
///
/// let mut v = kmem::kvec![in &heap; 1; 3]?;
/// v.push(4, GFP_KERNEL)?;
/// assert_eq!(v, [1, 1, 1, 4]);
///
/// let mut v = kmem::kvec![in &heap; 1, 2, 3]?;
/// v.push(4, GFP_KERNEL)?;
/// assert_eq!(v, [1, 2, 3, 4]);
/// # Ok::<(), kmem::Error>(())
/// ```
#[macro_export]
macro_rules! kvec {
    (in $alloc:expr $(;)?) => {
        $crate::alloc::KVec::new($alloc)
    };
    (in $alloc:expr; $elem:expr; $n:expr) => {
        $crate::alloc::KVec::from_elem($elem, $n, $alloc, $crate::alloc::flags::GFP_KERNEL)
    };
    (in $alloc:expr; $($x:expr),+ $(,)?) => {
        match $crate::alloc::KBox::new_uninit($alloc, $crate::alloc::flags::GFP_KERNEL) {
            ::core::result::Result::Ok(b) => ::core::result::Result::Ok($crate::alloc::KVec::from(
                $crate::alloc::KBox::write(b, [$($x),+]),
            )),
            ::core::result::Result::Err(e) => ::core::result::Result::Err(e),
        }
    };
}

/// A growable array in memory from the allocator `A`: the kernel's `Vec`.
///
/// Like Rust-for-Linux's `Vec<T, A>` (aliased `KVec<T>` there), every call
/// that may allocate takes GFP [`Flags`] and returns
/// `Result<_, AllocError>`; the vector is left unchanged when it fails.
/// Its `VVec<T>` and `KVVec<T>` are the aliases [`VVec`] and [`KVVec`] here
/// (`KVec<T, Vmalloc<'a, P>>`, `KVec<T, KVmalloc<'a, P>>`).
/// Unlike it, the vector stores its allocator handle (see
/// [the module docs](super)).
///
/// Growth doubles the capacity (or grows to exactly what is needed if that
/// is more); sizes are computed with checked arithmetic, so a request whose
/// byte size would exceed `isize::MAX` fails with [`AllocError`] instead of
/// wrapping. Zero-sized `T` never allocates and has capacity `usize::MAX`.
///
/// ```
/// # use kmem::alloc::doc_alloc::Heap;
/// use kmem::alloc::{flags::GFP_KERNEL, KVec};
///
/// let heap = Heap::new();
/// let mut v = KVec::with_capacity(2, &heap, GFP_KERNEL)?;
/// v.push(1u32, GFP_KERNEL)?;
/// v.extend_from_slice(&[2, 3, 4], GFP_KERNEL)?;
/// assert_eq!(v, [1, 2, 3, 4]);
/// assert_eq!(v.capacity(), 4);
/// assert_eq!(v.pop(), Some(4));
/// assert_eq!(v.remove(0), Ok(1));
/// assert_eq!(v.iter().sum::<u32>(), 5);
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// # Invariants
///
/// - `len <= capacity()` and the first `len` elements are initialised.
/// - If `T` is zero-sized, `cap == 0` and `ptr` is dangling.
/// - Otherwise, if `cap == 0`, `ptr` is dangling and nothing is allocated;
///   if `cap > 0`, `ptr` is a block allocated by `alloc` with
///   `Layout::array::<T>(cap)` (which is valid), owned by the vector.
pub struct KVec<T, A: Allocator> {
    ptr: NonNull<T>,
    cap: usize,
    len: usize,
    alloc: A,
    _owns: PhantomData<T>,
}

/// A [`KVec`] in vmalloc memory: Rust-for-Linux's `VVec<T>`
/// (`Vec<T, Vmalloc>`), here with the [`Vmalloc`] handle's lifetime and
/// platform as parameters.
///
/// For large arrays: the buffer is virtually contiguous and takes whole
/// pages, so growth within the pages it has keeps the buffer in place
/// ([`vrealloc`](crate::Kmem::vrealloc)); [`shrink_to`](KVec::shrink_to)
/// moves the elements to a smaller area when that frees pages. It needs a
/// platform with page tables: on the arena every allocation fails.
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, AllocError, VVec, Vmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let mut v: VVec<'_, u64, _> = VVec::new(Vmalloc::new(&k));
/// assert_eq!(v.push(1, GFP_KERNEL), Err(AllocError)); // the arena has no vmalloc
/// ```
pub type VVec<'a, T, P> = KVec<T, Vmalloc<'a, P>>;

/// A [`KVec`] from kvmalloc: Rust-for-Linux's `KVVec<T>`
/// (`Vec<T, KVmalloc>`). The buffer is kmalloc memory while kmalloc can
/// serve it and moves to vmalloc memory when it grows beyond (see
/// [`KVmalloc`]).
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, KVVec, KVmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let mut v: KVVec<'_, u16, _> = KVVec::new(KVmalloc::new(&k));
/// v.extend_from_slice(&[1, 2, 3], GFP_KERNEL).unwrap();
/// assert!(!k.is_vmalloc_addr(v.as_ptr().cast()));
/// assert_eq!(v, [1, 2, 3]);
/// ```
pub type KVVec<'a, T, P> = KVec<T, KVmalloc<'a, P>>;

// SAFETY: the vector owns its elements and its allocator handle.
unsafe impl<T: Send, A: Allocator + Send> Send for KVec<T, A> {}

// SAFETY: `&KVec` only gives `&[T]` and `&A`.
unsafe impl<T: Sync, A: Allocator + Sync> Sync for KVec<T, A> {}

impl<T, A: Allocator> KVec<T, A> {
    const IS_ZST: bool = mem::size_of::<T>() == 0;

    /// An empty vector on `alloc`; allocates nothing.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::new(&heap);
    /// v.push(1, GFP_KERNEL)?;
    /// assert_eq!(&v, &[1]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    #[inline]
    pub const fn new(alloc: A) -> Self {
        // INVARIANT: empty, no block, dangling pointer.
        KVec {
            ptr: NonNull::dangling(),
            cap: 0,
            len: 0,
            alloc,
            _owns: PhantomData,
        }
    }

    /// An empty vector with room for at least `capacity` elements.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let v = KVec::<u32, _>::with_capacity(20, &heap, GFP_KERNEL)?;
    /// assert!(v.capacity() >= 20);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn with_capacity(capacity: usize, alloc: A, flags: Flags) -> Result<Self, AllocError> {
        let mut v = Self::new(alloc);
        v.reserve(capacity, flags)?;
        Ok(v)
    }

    /// A vector of `len` zeroed elements on `alloc`, with a buffer of
    /// exactly `len` elements, zeroed by the allocator
    /// ([`__GFP_ZERO`] is added to
    /// `flags`) rather than written element by element: for types valid at
    /// all-zeroes ([`Zeroable`], the `pinned-init` trait Rust-for-Linux
    /// uses), as `KBox::zeroed` is for one value.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let v = KVec::<u64, _>::zeroed(100, &heap, GFP_KERNEL)?;
    /// assert_eq!((v.len(), v.capacity()), (100, 100));
    /// assert!(v.iter().all(|&x| x == 0));
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn zeroed(len: usize, alloc: A, flags: Flags) -> Result<Self, AllocError>
    where
        T: Zeroable,
    {
        let mut v = Self::with_capacity(len, alloc, flags | __GFP_ZERO)?;
        // SAFETY: an empty vector's `reserve(len)` allocates exactly `len`
        // elements (or none, for a zero-sized `T`) as one new block, which
        // `__GFP_ZERO` zeroed; all-zero is a valid `T` (`T: Zeroable`).
        unsafe { v.inc_len(len) };
        Ok(v)
    }

    /// Rebuilds a vector from its raw parts and its allocator handle, as
    /// [`into_raw_parts`](KVec::into_raw_parts) or
    /// [`into_raw_parts_with_alloc`](KVec::into_raw_parts_with_alloc) gave
    /// them (Rust-for-Linux's `from_raw_parts(ptr, length, capacity)`, plus
    /// the handle, which kmem cannot name by a type).
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = kmem::kvec![in &heap; 1, 2, 3]?;
    /// v.reserve(1, GFP_KERNEL)?;
    ///
    /// let (ptr, mut len, cap) = v.into_raw_parts();
    ///
    /// // SAFETY: `reserve` made room for a fourth element.
    /// unsafe { ptr.add(len).write(4) };
    /// len += 1;
    ///
    /// // SAFETY: the parts are those `into_raw_parts` gave, on the same
    /// // heap, but for one more element written at the end.
    /// let v = unsafe { KVec::from_raw_parts(ptr, len, cap, &heap) };
    /// assert_eq!(v, [1, 2, 3, 4]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    ///
    /// # Safety
    ///
    /// - `ptr` is non-null and aligned for `T`.
    /// - `length <= capacity`, and the first `length` elements at `ptr` are
    ///   initialised `T`s whose ownership passes to the vector.
    /// - If `T` is zero-sized or `capacity` is zero, `ptr` may be dangling
    ///   and nothing is freed.
    /// - Otherwise `ptr` is a block allocated by `alloc` (or by an allocator
    ///   `alloc` is a handle to) with exactly `Layout::array::<T>(capacity)`,
    ///   whose ownership passes to the vector. A
    ///   [`Scoped`](crate::alloc::Scoped) handle is an allocator of its own:
    ///   only blocks allocated through the same scope may be given to it.
    pub unsafe fn from_raw_parts(ptr: *mut T, length: usize, capacity: usize, alloc: A) -> Self {
        debug_assert!(length <= capacity || Self::IS_ZST);
        // INVARIANT: guaranteed by the caller; a zero-sized `T` keeps
        // `cap == 0`, as `capacity()` reports `usize::MAX` for it anyway.
        KVec {
            // SAFETY: the caller passes a non-null pointer.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            cap: if Self::IS_ZST { 0 } else { capacity },
            len: length,
            alloc,
            _owns: PhantomData,
        }
    }

    /// Gives up ownership of the buffer and elements: returns the pointer,
    /// the length and the capacity, and drops the allocator handle. Nothing
    /// is dropped or freed; [`from_raw_parts`](KVec::from_raw_parts) with a
    /// handle to the same allocator takes them back (see its example).
    ///
    /// For a zero-sized `T` the capacity is `usize::MAX`, as
    /// [`capacity`](KVec::capacity) says.
    pub fn into_raw_parts(self) -> (*mut T, usize, usize) {
        let (ptr, len, cap, _alloc) = self.into_raw_parts_with_alloc();
        (ptr, len, cap)
    }

    /// Like [`into_raw_parts`](KVec::into_raw_parts), but also returns the
    /// allocator handle (for handles that are not `Copy`).
    pub fn into_raw_parts_with_alloc(self) -> (*mut T, usize, usize, A) {
        let v = ManuallyDrop::new(self);
        // SAFETY: `v` is never used or dropped again, so the handle is moved
        // out exactly once.
        let alloc = unsafe { ptr::read(&v.alloc) };
        (v.ptr.as_ptr(), v.len, v.capacity(), alloc)
    }

    /// How many elements fit without reallocating (`usize::MAX` for
    /// zero-sized `T`).
    #[inline]
    pub const fn capacity(&self) -> usize {
        if Self::IS_ZST {
            usize::MAX
        } else {
            self.cap
        }
    }

    /// The number of elements.
    #[inline]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::new(&heap);
    /// assert!(v.is_empty());
    ///
    /// v.push(1, GFP_KERNEL)?;
    /// assert!(!v.is_empty());
    /// # Ok::<(), kmem::Error>(())
    /// ```
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `additional` to the length, taking ownership of elements the
    /// caller wrote into the spare capacity.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::<u8, _>::with_capacity(3, &heap, GFP_KERNEL)?;
    /// for (i, slot) in v.spare_capacity_mut().iter_mut().take(2).enumerate() {
    ///     slot.write(i as u8);
    /// }
    /// // SAFETY: the two slots after the (empty) elements were just written.
    /// unsafe { v.inc_len(2) };
    /// assert_eq!(v, [0, 1]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    ///
    /// # Safety
    ///
    /// - `additional <= capacity() - len()`.
    /// - The `additional` slots after the current elements are initialised.
    #[inline]
    pub const unsafe fn inc_len(&mut self, additional: usize) {
        debug_assert!(additional <= self.capacity() - self.len);
        // INVARIANT: guaranteed by the caller.
        self.len += additional;
    }

    /// The elements as a slice.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::new(&heap);
    /// v.push(1, GFP_KERNEL)?;
    /// v.push(2, GFP_KERNEL)?;
    /// assert_eq!(v.as_slice(), &[1, 2]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        self
    }

    /// The elements as a mutable slice.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self
    }

    /// A pointer to the buffer (dangling when nothing is allocated).
    #[inline]
    pub const fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    /// A mutable pointer to the buffer (dangling when nothing is allocated).
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// The allocator handle the vector allocates from.
    #[inline]
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// The unused capacity, to be initialised before an
    /// [`inc_len`](KVec::inc_len) or a [`set_len`](KVec::set_len).
    pub fn spare_capacity_mut(&mut self) -> &mut [MaybeUninit<T>] {
        // SAFETY: `len <= capacity()`, so `ptr + len` stays within the
        // block (or is dangling for a ZST or an empty buffer, with a
        // zero-length result), and the `capacity() - len` slots after it
        // belong to the vector; `MaybeUninit` needs no initialisation.
        unsafe {
            slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.len).cast::<MaybeUninit<T>>(),
                self.capacity() - self.len,
            )
        }
    }

    /// Sets the length without dropping or initialising anything.
    ///
    /// # Safety
    ///
    /// `new_len <= capacity()`, and the first `new_len` elements are
    /// initialised. Elements beyond `new_len` are forgotten.
    #[inline]
    pub unsafe fn set_len(&mut self, new_len: usize) {
        debug_assert!(new_len <= self.capacity());
        // INVARIANT: guaranteed by the caller.
        self.len = new_len;
    }

    /// Makes room for at least `additional` more elements.
    ///
    /// Grows to the larger of twice the capacity and `len + additional`
    /// (just the latter if twice the capacity would not fit in `isize::MAX`
    /// bytes). Fails without changing the vector if `len + additional`
    /// elements do not fit in `isize::MAX` bytes or the allocator refuses;
    /// the allocator is asked at most once.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::new(&heap);
    /// v.push(1, GFP_KERNEL)?;
    ///
    /// v.reserve(10, GFP_KERNEL)?;
    /// let cap = v.capacity();
    /// assert!(cap >= 10);
    ///
    /// v.reserve(10, GFP_KERNEL)?;
    /// let new_cap = v.capacity();
    /// assert_eq!(new_cap, cap);
    ///
    /// assert!(v.reserve(usize::MAX, GFP_KERNEL).is_err());
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn reserve(&mut self, additional: usize, flags: Flags) -> Result<(), AllocError> {
        if self.capacity() - self.len >= additional {
            return Ok(());
        }
        if Self::IS_ZST {
            // The capacity is already `usize::MAX`.
            return Err(AllocError);
        }
        let needed = self.len.checked_add(additional).ok_or(AllocError)?;
        // Double, unless doubling alone would exceed `isize::MAX` bytes while
        // `needed` does not. The allocator is asked once: retrying a smaller
        // size after it refused would repeat reclaim and failure reports.
        let doubled = self.cap.saturating_mul(2);
        let new_cap = if doubled > needed && Layout::array::<T>(doubled).is_ok() {
            doubled
        } else {
            needed
        };
        self.realloc_to(new_cap, flags)
    }

    /// Reallocates the buffer to exactly `new_cap` elements (`new_cap >=
    /// len`, `T` not zero-sized); frees it for `new_cap == 0`.
    fn realloc_to(&mut self, new_cap: usize, flags: Flags) -> Result<(), AllocError> {
        debug_assert!(!Self::IS_ZST && new_cap >= self.len);
        // SAFETY: by the invariant `ptr` is a block of `cap` elements from
        // `alloc` (or dangling with `cap == 0`), `T` is not zero-sized, and
        // `new_cap >= len`.
        let ptr = unsafe { Self::realloc_buffer(&self.alloc, self.ptr, self.cap, new_cap, flags)? };
        // INVARIANT: `ptr` is a block of `new_cap` elements from `alloc`
        // holding the first `len` elements, or dangling for `new_cap == 0`.
        self.ptr = ptr;
        self.cap = new_cap;
        Ok(())
    }

    /// The one place the vector (and its [`IntoIter`]) asks the allocator
    /// for a buffer: resizes the buffer of `cap` elements at `ptr` to
    /// `new_cap` elements, keeping the first `min(cap, new_cap)`; allocates
    /// when `cap == 0`, frees (returning a dangling pointer) when
    /// `new_cap == 0`. On failure the old buffer is untouched.
    ///
    /// # Safety
    ///
    /// `T` is not zero-sized, and `ptr` is a block allocated by `alloc` with
    /// `Layout::array::<T>(cap)`, or `cap == 0` (then `ptr` is ignored).
    unsafe fn realloc_buffer(
        alloc: &A,
        ptr: NonNull<T>,
        cap: usize,
        new_cap: usize,
        flags: Flags,
    ) -> Result<NonNull<T>, AllocError> {
        debug_assert!(!Self::IS_ZST);
        let layout = Layout::array::<T>(new_cap).map_err(|_| AllocError)?;
        let old = if cap == 0 {
            None
        } else {
            Some(ptr.cast::<u8>())
        };
        // SAFETY: `old` is `None` or a block from `alloc` with
        // `buffer_layout(cap)` (the caller guarantees it); `realloc` keeps
        // its prefix, and leaves it untouched on failure.
        let block = unsafe {
            alloc.realloc(
                old,
                layout,
                Self::buffer_layout(cap),
                flags,
                super::NumaNode::NO_NODE,
            )?
        };
        debug_assert!(block.len() >= layout.size());
        if new_cap == 0 {
            return Ok(NonNull::dangling());
        }
        let new = block.cast::<T>();
        debug_assert!(new.as_ptr().is_aligned());
        Ok(new)
    }

    /// The layout of a buffer of `cap` elements of this vector.
    fn buffer_layout(cap: usize) -> Layout {
        // SAFETY: `cap` is 0 or the capacity of a buffer that was allocated
        // with `Layout::array::<T>(cap)`, so `cap * size_of::<T>()` does not
        // overflow `isize::MAX`; `align_of` is a power of two.
        unsafe {
            Layout::from_size_align_unchecked(cap * mem::size_of::<T>(), mem::align_of::<T>())
        }
    }

    /// Shrinks the buffer to the length (frees it when empty): `shrink_to(0,
    /// flags)`. Fails, leaving the vector unchanged, if the allocator does.
    pub fn shrink_to_fit(&mut self, flags: Flags) -> Result<(), AllocError> {
        self.shrink_to(0, flags)
    }

    /// Shrinks the buffer to the larger of the length and `min_capacity`
    /// elements; does nothing if the capacity is not above that. Fails,
    /// leaving the vector unchanged, if the allocator does.
    ///
    /// When the smaller buffer needs fewer pages, the elements move to a
    /// new buffer and the old one is freed, because resizing in place gives
    /// no pages back (neither kmem's `vrealloc` nor its `krealloc` does, as
    /// in Linux); otherwise the allocator's `realloc` resizes it. This is
    /// what Rust-for-Linux's `KVVec::shrink_to` does for vmalloc memory;
    /// there it exists for `KVVec` only, here for every allocator.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::with_capacity(64, &heap, GFP_KERNEL)?;
    /// v.push(1u32, GFP_KERNEL)?;
    /// v.push(2, GFP_KERNEL)?;
    ///
    /// v.shrink_to(8, GFP_KERNEL)?;
    /// assert_eq!(v.capacity(), 8);
    /// v.shrink_to(0, GFP_KERNEL)?;
    /// assert_eq!(v.capacity(), 2);
    /// v.shrink_to(100, GFP_KERNEL)?; // never grows
    /// assert_eq!((v.capacity(), &v[..]), (2, &[1, 2][..]));
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn shrink_to(&mut self, min_capacity: usize, flags: Flags) -> Result<(), AllocError> {
        let target = self.len.max(min_capacity);
        if Self::IS_ZST || self.cap <= target {
            return Ok(());
        }
        // `cap * size_of::<T>()` fits in `isize::MAX` (the invariant), and
        // so does the product for the smaller `target`.
        let pages = |cap: usize| (cap * mem::size_of::<T>()).div_ceil(crate::PAGE_SIZE);
        if target == 0 || pages(target) == pages(self.cap) {
            return self.realloc_to(target, flags);
        }
        // SAFETY: `T` is not zero-sized, and `cap == 0` asks for a new
        // buffer (the current one is not touched).
        let new = unsafe { Self::realloc_buffer(&self.alloc, self.ptr, 0, target, flags)? };
        // SAFETY: the `len` elements are initialised, and the new buffer,
        // disjoint from the old, has room for `target >= len` of them.
        unsafe { ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len) };
        // SAFETY: by the invariant the old buffer (`cap > target > 0`) is a
        // block of `buffer_layout(cap)` from `alloc`; its elements were
        // moved out just above.
        unsafe {
            self.alloc
                .free(self.ptr.cast(), Self::buffer_layout(self.cap))
        };
        // INVARIANT: the new buffer holds the `len` elements.
        self.ptr = new;
        self.cap = target;
        Ok(())
    }

    /// Appends `x`, growing if needed. On failure `x` is dropped.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::new(&heap);
    /// v.push(1, GFP_KERNEL)?;
    /// assert_eq!(&v, &[1]);
    ///
    /// v.push(2, GFP_KERNEL)?;
    /// assert_eq!(&v, &[1, 2]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn push(&mut self, x: T, flags: Flags) -> Result<(), AllocError> {
        self.reserve(1, flags)?;
        // SAFETY: `reserve` made room for one more element.
        unsafe { self.push_unchecked(x) };
        Ok(())
    }

    /// Appends `x` if there is room, without allocating; otherwise hands it
    /// back in [`PushError`].
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::with_capacity(10, &heap, GFP_KERNEL)?;
    /// for i in 0..10 {
    ///     v.push_within_capacity(i)?;
    /// }
    ///
    /// assert!(v.push_within_capacity(10).is_err());
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn push_within_capacity(&mut self, x: T) -> Result<(), PushError<T>> {
        if self.len < self.capacity() {
            // SAFETY: there is room for one more element.
            unsafe { self.push_unchecked(x) };
            Ok(())
        } else {
            Err(PushError(x))
        }
    }

    /// # Safety
    ///
    /// `len < capacity()`.
    unsafe fn push_unchecked(&mut self, x: T) {
        // SAFETY: slot `len` is inside the buffer (the caller guarantees it)
        // and uninitialised.
        unsafe { self.ptr.as_ptr().add(self.len).write(x) };
        // INVARIANT: the new element is initialised.
        self.len += 1;
    }

    /// Inserts `element` at `index`, shifting the following elements up,
    /// without allocating.
    ///
    /// Fails, handing the element back, with
    /// [`InsertError::IndexOutOfBounds`] if `index > len()` (checked first)
    /// or [`InsertError::OutOfCapacity`] if the vector is full.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, kvec::InsertError, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::with_capacity(5, &heap, GFP_KERNEL)?;
    /// for i in 0..5 {
    ///     v.insert_within_capacity(0, i)?;
    /// }
    ///
    /// assert!(matches!(v.insert_within_capacity(0, 5), Err(InsertError::OutOfCapacity(_))));
    /// assert!(matches!(v.insert_within_capacity(1000, 5), Err(InsertError::IndexOutOfBounds(_))));
    /// assert_eq!(v, [4, 3, 2, 1, 0]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn insert_within_capacity(
        &mut self,
        index: usize,
        element: T,
    ) -> Result<(), InsertError<T>> {
        if index > self.len {
            return Err(InsertError::IndexOutOfBounds(element));
        }
        if self.len >= self.capacity() {
            return Err(InsertError::OutOfCapacity(element));
        }
        // SAFETY: `index <= len < capacity()`, so the `len - index` elements
        // from `index` move up by one within the buffer (`copy` allows the
        // overlap), and slot `index` is then free to be written.
        unsafe {
            let p = self.ptr.as_ptr().add(index);
            ptr::copy(p, p.add(1), self.len - index);
            p.write(element);
        }
        // INVARIANT: slots `0..=len` are initialised.
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last element.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// use kmem::alloc::{flags::GFP_KERNEL, KVec};
    ///
    /// # let heap = Heap::new();
    /// let mut v = KVec::new(&heap);
    /// v.push(1, GFP_KERNEL)?;
    /// v.push(2, GFP_KERNEL)?;
    /// assert_eq!(&v, &[1, 2]);
    ///
    /// assert_eq!(v.pop(), Some(2));
    /// assert_eq!(v.pop(), Some(1));
    /// assert_eq!(v.pop(), None);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        // INVARIANT: the last element's ownership moves to the caller.
        self.len -= 1;
        // SAFETY: slot `len` held an initialised element, now read once.
        Some(unsafe { self.ptr.as_ptr().add(self.len).read() })
    }

    /// Removes the element at `i`, shifting the following ones down;
    /// [`RemoveError`] if `i` is out of bounds.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// # let heap = Heap::new();
    /// let mut v = kmem::kvec![in &heap; 1, 2, 3]?;
    /// assert_eq!(v.remove(1)?, 2);
    /// assert_eq!(v, [1, 3]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn remove(&mut self, i: usize) -> Result<T, RemoveError> {
        if i >= self.len {
            return Err(RemoveError);
        }
        // SAFETY: `i < len`, so the element at `i` is initialised and read
        // once; the `len - i - 1` elements after it are moved down by one,
        // within the buffer.
        let value = unsafe {
            let p = self.ptr.as_ptr().add(i);
            let value = p.read();
            ptr::copy(p.add(1), p, self.len - i - 1);
            value
        };
        // INVARIANT: the first `len - 1` slots are initialised.
        self.len -= 1;
        Ok(value)
    }

    /// Drops the elements from `len` on; keeps the capacity.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// # let heap = Heap::new();
    /// let mut v = kmem::kvec![in &heap; 1, 2, 3]?;
    /// v.truncate(1);
    /// assert_eq!(v.len(), 1);
    /// assert_eq!(&v, &[1]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let tail = ptr::slice_from_raw_parts_mut(
            // SAFETY: `len < self.len`, so this is inside the buffer.
            unsafe { self.ptr.as_ptr().add(len) },
            self.len - len,
        );
        // INVARIANT: the tail leaves the vector before it is dropped, so a
        // panicking destructor cannot cause a double drop.
        self.len = len;
        // SAFETY: the tail held initialised elements no longer owned by the
        // vector; they are dropped once.
        unsafe { ptr::drop_in_place(tail) };
    }

    /// Drops all elements; keeps the capacity.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// # let heap = Heap::new();
    /// let mut v = kmem::kvec![in &heap; 1, 2, 3]?;
    /// v.clear();
    /// assert!(v.is_empty());
    /// # Ok::<(), kmem::Error>(())
    /// ```
    #[inline]
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Takes all the elements out, by value, and keeps the buffer: the
    /// vector is empty as soon as this returns, and elements the iterator
    /// does not yield are dropped with it.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// # let heap = Heap::new();
    /// let mut v = kmem::kvec![in &heap; 0, 1, 2, 3]?;
    ///
    /// for (i, j) in v.drain_all().enumerate() {
    ///     assert_eq!(i, j);
    /// }
    ///
    /// assert!(v.capacity() >= 4);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn drain_all(&mut self) -> DrainAll<'_, T> {
        let len = self.len;
        // INVARIANT: the elements leave the vector before the iterator
        // exists, so a leaked iterator leaks them instead of letting the
        // vector drop them twice.
        self.len = 0;
        // SAFETY: the first `len` slots hold initialised elements (the
        // vector no longer counts them), borrowed for as long as `self`.
        let elems = unsafe { slice::from_raw_parts_mut(self.ptr.as_ptr(), len) };
        // SAFETY: the vector gave up those elements: they are the
        // iterator's.
        unsafe { DrainAll::new(elems) }
    }

    /// Keeps only the elements for which `f` returns `true`, in their
    /// order, and drops the others; `f` sees each element once, in order,
    /// and may modify it.
    ///
    /// ```
    /// # use kmem::alloc::doc_alloc::Heap;
    /// # let heap = Heap::new();
    /// let mut v = kmem::kvec![in &heap; 1, 2, 3, 4]?;
    /// v.retain(|i| *i % 2 == 0);
    /// assert_eq!(v, [2, 4]);
    /// # Ok::<(), kmem::Error>(())
    /// ```
    pub fn retain(&mut self, mut f: impl FnMut(&mut T) -> bool) {
        // Kept elements are swapped down over the rejected ones, so every
        // slot stays initialised at every step: a panic in `f` leaves a
        // valid (permuted) vector, and the rejected elements, gathered at
        // the end, are dropped by `truncate`.
        let mut kept = 0;
        for i in 0..self.len {
            if f(&mut self[i]) {
                self.swap(kept, i);
                kept += 1;
            }
        }
        self.truncate(kept);
    }
}

impl<T, A: Allocator> Drop for KVec<T, A> {
    fn drop(&mut self) {
        let layout = if Self::IS_ZST || self.cap == 0 {
            Layout::new::<()>()
        } else {
            Self::buffer_layout(self.cap)
        };
        // SAFETY: by the invariant the buffer is a block from `alloc` with
        // this layout (none for zero-sized elements or no capacity), given
        // up here: freed after the elements, also if one's destructor
        // panics, and the vector is gone then.
        let _buffer =
            unsafe { crate::alloc::FreeOnDrop::new(&self.alloc, self.ptr.cast(), layout) };
        // SAFETY: the first `len` elements are initialised and owned.
        unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) };
    }
}
