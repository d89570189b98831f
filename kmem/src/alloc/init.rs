//! In-place initialisation, as Rust-for-Linux does it: values built
//! directly in their final (possibly pinned) memory by an initialiser
//! ([`PinInit`], [`Init`]) rather than moved there from the stack.
//!
//! The initialisers and their macros are those of the `pinned-init` crate,
//! the library Rust-for-Linux's `kernel::init` is built on, re-exported
//! here: [`pin_init!`], [`try_pin_init!`], [`init!`], [`try_init!`],
//! [`#[pin_data]`](pin_data), [`#[pinned_drop]`](pinned_drop),
//! [`Zeroable`], [`init_zeroed`]... [`InPlaceInit`] is kmem's: it allocates
//! the memory an initialiser fills, and like every allocating call here
//! takes the allocator handle besides the GFP flags
//! (`KBox::pin_init(init, alloc, GFP_KERNEL)` where Rust-for-Linux writes
//! `KBox::pin_init(init, GFP_KERNEL)`).
//!
//! The attributes [`#[pin_data]`](pin_data) and
//! [`#[pinned_drop]`](pinned_drop) expand to paths under `::pinned_init`,
//! so a crate that uses them depends on `pinned-init` itself (the macros
//! `pin_init!` and friends need no such dependency).
//!
//! ```
//! # use kmem::alloc::doc_alloc::Heap;
//! use core::marker::PhantomPinned;
//! use kmem::alloc::init::{pin_data, pin_init, try_pin_init, InPlaceInit, PinInit};
//! use kmem::alloc::{flags::GFP_KERNEL, AllocError, KBox};
//!
//! /// A counter that must not move: something keeps its address.
//! #[pin_data]
//! struct Counter {
//!     value: u64,
//!     #[pin]
//!     _pin: PhantomPinned,
//! }
//!
//! impl Counter {
//!     fn new(start: u64) -> impl PinInit<Self> {
//!         pin_init!(Counter { value: start, _pin: PhantomPinned })
//!     }
//!
//!     /// An initialiser that can fail, here on odd starts.
//!     fn even(start: u64) -> impl PinInit<Self, AllocError> {
//!         try_pin_init!(Counter {
//!             value: if start % 2 == 0 { start } else { return Err(AllocError) },
//!             _pin: PhantomPinned,
//!         }? AllocError)
//!     }
//! }
//!
//! // Pinning needs a handle that lives for 'static (see `KBox`'s docs).
//! let heap: &'static Heap = Box::leak(Box::new(Heap::new()));
//! let c = KBox::pin_init(Counter::new(7), heap, GFP_KERNEL)?;
//! assert_eq!(c.value, 7);
//! let e = KBox::try_pin_init(Counter::even(4), heap, GFP_KERNEL)?;
//! assert_eq!(e.value, 4);
//! assert!(KBox::try_pin_init(Counter::even(3), heap, GFP_KERNEL).is_err());
//! assert_eq!(heap.live(), 2); // the failed one's block was freed
//! # Ok::<(), kmem::Error>(())
//! ```

use core::convert::Infallible;

use super::{AllocError, Flags};

pub use pinned_init::{
    init, init_zeroed, pin_data, pin_init, pinned_drop, stack_pin_init, stack_try_pin_init,
    try_init, try_pin_init, zeroed, InPlaceWrite, Init, PinInit, PinnedDrop, Zeroable,
    ZeroableOption,
};

/// A smart pointer that can allocate its memory and build a `T` in it in
/// place: Rust-for-Linux's `InPlaceInit`, implemented for
/// [`KBox`](super::KBox).
///
/// Every method takes the allocator handle
/// ([`Self::Allocator`](InPlaceInit::Allocator)) before the GFP flags, where
/// Rust-for-Linux's take only the flags (its allocators are types).
pub trait InPlaceInit<T>: Sized {
    /// The allocator handle the pointer is allocated with and stores.
    type Allocator;

    /// What the pinned methods return (`Pin<Self>` for a box).
    type PinnedSelf;

    /// Allocates and pin-initialises a `T` with `init`, which may fail with
    /// `E`; a failed allocation is `E::from(AllocError)`.
    fn try_pin_init<E>(
        init: impl PinInit<T, E>,
        alloc: Self::Allocator,
        flags: Flags,
    ) -> Result<Self::PinnedSelf, E>
    where
        E: From<AllocError>;

    /// Allocates and pin-initialises a `T` with `init`, with kmem's
    /// [`Error`](crate::Error) as the error.
    fn pin_init<E>(
        init: impl PinInit<T, E>,
        alloc: Self::Allocator,
        flags: Flags,
    ) -> crate::Result<Self::PinnedSelf>
    where
        crate::Error: From<E>,
    {
        // SAFETY: forwards to `init`'s own initialisation of `slot` under
        // the same contract, only converting its error.
        let init = unsafe {
            pinned_init::pin_init_from_closure(|slot| {
                init.__pinned_init(slot).map_err(crate::Error::from)
            })
        };
        Self::try_pin_init(init, alloc, flags)
    }

    /// Allocates and initialises a `T` with `init`, which may fail with
    /// `E`; a failed allocation is `E::from(AllocError)`.
    fn try_init<E>(init: impl Init<T, E>, alloc: Self::Allocator, flags: Flags) -> Result<Self, E>
    where
        E: From<AllocError>;

    /// Allocates and initialises a `T` with `init`, with kmem's
    /// [`Error`](crate::Error) as the error.
    fn init<E>(init: impl Init<T, E>, alloc: Self::Allocator, flags: Flags) -> crate::Result<Self>
    where
        crate::Error: From<E>,
    {
        // SAFETY: forwards to `init`'s own initialisation of `slot` under
        // the same contract, only converting its error.
        let init = unsafe {
            pinned_init::init_from_closure(|slot| init.__init(slot).map_err(crate::Error::from))
        };
        Self::try_init(init, alloc, flags)
    }
}

/// An initialiser that cannot fail converts to any error, as in
/// Rust-for-Linux, so [`InPlaceInit::pin_init`] takes `pin_init!`'s
/// initialisers.
impl From<Infallible> for crate::Error {
    fn from(e: Infallible) -> Self {
        match e {}
    }
}
