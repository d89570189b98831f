//! [`pin_scope`]: pinned boxes from an allocator handle that does not live
//! for `'static` (the design is in the function's documentation).

use core::alloc::Layout;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::pin::Pin;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::init::PinInit;
use super::{AllocError, Allocator, Flags, KBox, NumaNode};

/// The state a [`pin_scope`] call keeps on its stack.
struct PinScope<A> {
    /// The allocator the scope's handle allocates from.
    alloc: A,
    /// Blocks allocated through the scope's handle and not yet freed.
    live: AtomicUsize,
}

/// The allocator handle of a [`pin_scope`]: the scope's allocator, with
/// every block counted until it is freed.
///
/// Its pinning methods ([`pin`](Scoped::pin),
/// [`into_pin`](Scoped::into_pin), [`pin_init`](Scoped::pin_init),
/// [`try_pin_init`](Scoped::try_pin_init), [`pin_slice`](Scoped::pin_slice))
/// are [`KBox`]'s, without `'static`. It is an [`Allocator`] too, so a
/// [`KVec`](super::KVec) or an unpinned [`KBox`] can use it; their blocks
/// are counted as well.
///
/// It is an allocator of its own, not a handle to the scope's: a block
/// allocated through the scope's allocator directly (or through another
/// scope) must not be given to it (`KBox::from_raw`,
/// `KVec::from_raw_parts`, `realloc`), nor one of its blocks to that
/// allocator, since the count would not see it.
pub struct Scoped<'s, A> {
    scope: &'s PinScope<A>,
    /// Invariant in `'s`, as `std::thread::Scope` is: no method may ever
    /// take a shorter-lived value as if it lived for the scope.
    _invariant: PhantomData<&'s mut &'s ()>,
}

impl<A> Clone for Scoped<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for Scoped<'_, A> {}

/// Runs `f` with a handle on `alloc` whose boxes may be pinned, and
/// returns what `f` returns.
///
/// `Pin` promises that a pinned value's memory is not reused before its
/// destructor runs, even when the box is leaked with `mem::forget`. A box
/// of a `'static` handle keeps that promise by itself, which is why
/// [`KBox::pin`] asks for one (see [Pinning](KBox#pinning)). A box that
/// borrows its machine (`Kmalloc<'a, P>`) cannot: once a leaked box's
/// borrow ends, the machine and its memory may be dropped and reused.
///
/// A pin scope keeps the promise the way `std::thread::scope` keeps
/// borrowed threads sound: the handle it lends ([`Scoped`]) is valid only
/// inside `f`, the machine stays borrowed for the whole call, and the scope
/// counts the blocks allocated through its handle. When `f` returns or
/// unwinds, every one of them must have been freed. One that was not (a
/// box leaked with `mem::forget` or in an `Rc` cycle) ends the program
/// there, before the machine can go away: an abort with a message saying
/// how many were left, not a panic, since unwinding would drop the machine
/// under the leaked value. Rust's own `pin!` macro has the same shape on
/// the stack: pinning without `'static` ties the value to a scope.
///
/// The cost is one atomic add when a block is allocated and one when it is
/// freed; a leak of anything allocated through the scope, pinned or not,
/// aborts.
///
/// ```
/// use core::marker::PhantomPinned;
/// use kmem::alloc::{flags::GFP_KERNEL, pin_scope, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
///
/// struct Node { next: *const Node, _pin: PhantomPinned }
///
/// // Rust-for-Linux: `KBox::pin(Node { .. }, GFP_KERNEL)?`.
/// let next = pin_scope(Kmalloc::new(&k), |s| {
///     let n = s.pin(Node { next: core::ptr::null(), _pin: PhantomPinned }, GFP_KERNEL)?;
///     Ok::<_, kmem::alloc::AllocError>(n.next)
/// })?;
/// assert!(next.is_null());
/// # Ok::<(), kmem::alloc::AllocError>(())
/// ```
///
/// In-place initialisation:
///
/// ```
/// use kmem::alloc::{flags::GFP_KERNEL, init::{pin_data, pin_init}, pin_scope, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
///
/// #[pin_data]
/// struct Counter { #[pin] hits: core::cell::Cell<u32> }
///
/// let hits = pin_scope(Kmalloc::new(&k), |s| {
///     let c = s.pin_init(pin_init!(Counter { hits: core::cell::Cell::new(1) }), GFP_KERNEL)?;
///     c.hits.set(c.hits.get() + 1);
///     Ok::<_, kmem::Error>(c.hits.get())
/// })?;
/// assert_eq!(hits, 2);
/// # Ok::<(), kmem::Error>(())
/// ```
///
/// Neither a box of the scope nor its handle can leave it: not as the
/// result,
///
/// ```compile_fail
/// use kmem::alloc::{flags::GFP_KERNEL, pin_scope, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let escaped = pin_scope(Kmalloc::new(&k), |s| s.pin(1u8, GFP_KERNEL));
/// ```
///
/// ```compile_fail
/// use kmem::alloc::{pin_scope, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let handle = pin_scope(Kmalloc::new(&k), |s| s);
/// ```
///
/// and not in state captured from outside (nor, for the same reason, on a
/// thread that may outlive the scope: `std::thread::spawn` wants
/// `'static`):
///
/// ```compile_fail
/// use kmem::alloc::{flags::GFP_KERNEL, pin_scope, Kmalloc};
/// # let mut mem = vec![0u8; 16 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// let mut outside = None;
/// pin_scope(Kmalloc::new(&k), |s| outside = Some(s.pin(1u8, GFP_KERNEL).unwrap()));
/// ```
///
/// (The same code with the box dropped or used inside the scope, as in the
/// examples above, compiles.)
pub fn pin_scope<A: Allocator, R>(alloc: A, f: impl for<'s> FnOnce(Scoped<'s, A>) -> R) -> R {
    /// Checks the count when the scope ends, returning or unwinding.
    struct End<'s, A>(&'s PinScope<A>);

    impl<A> Drop for End<'_, A> {
        fn drop(&mut self) {
            // A thread that freed one of the blocks was joined before the
            // closure returned (it could not hold a block otherwise), which
            // makes its decrement visible; Acquire and Release only say so.
            let live = self.0.live.load(Ordering::Acquire);
            if live != 0 {
                leaked(live);
            }
        }
    }

    let scope = PinScope {
        alloc,
        live: AtomicUsize::new(0),
    };
    let end = End(&scope);
    let r = f(Scoped {
        scope: &scope,
        _invariant: PhantomData,
    });
    drop(end);
    r
}

/// Ends the program: `live` blocks of a pin scope outlived it (or, with
/// `live == 0`, a block it never counted was freed through it).
///
/// A panic cannot unwind out of an `extern "C"` function (Rust 1.81 and
/// later, which the workspace requires): with `std` the process aborts
/// after the panic hook prints the message; in `no_std` the panic handler
/// is called again with "panic in a function that cannot unwind", and a
/// panic handler never returns. Either way nothing after this call runs.
#[cold]
extern "C" fn leaked(live: usize) -> ! {
    if live == 0 {
        panic!(
            "kmem: a block the pin scope never allocated was freed through its handle \
             (a Scoped handle is an allocator of its own); aborting, since its count of \
             pinned memory can no longer be trusted"
        )
    }
    panic!(
        "kmem: pin scope ended with {live} block(s) still allocated (a box leaked with \
         mem::forget or in a reference cycle?); aborting, since a pinned value's memory \
         must not be reused before it is dropped"
    )
}

impl<'s, A: Allocator> Scoped<'s, A> {
    /// Allocates and pins `x`: [`KBox::pin`] on this handle.
    pub fn pin<T>(self, x: T, flags: Flags) -> Result<Pin<KBox<T, Self>>, AllocError> {
        Ok(Self::into_pin(KBox::new(x, self, flags)?))
    }

    /// Pins a box of this handle: [`KBox::into_pin`].
    ///
    /// ```
    /// use kmem::alloc::{flags::GFP_KERNEL, pin_scope, KBox, Kmalloc, Scoped};
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// pin_scope(Kmalloc::new(&k), |s| {
    ///     let b = KBox::new(7u32, s, GFP_KERNEL)?;
    ///     let p = Scoped::into_pin(b);
    ///     assert_eq!(*p, 7);
    ///     Ok::<(), kmem::alloc::AllocError>(())
    /// })?;
    /// # Ok::<(), kmem::alloc::AllocError>(())
    /// ```
    pub fn into_pin<T: ?Sized>(b: KBox<T, Self>) -> Pin<KBox<T, Self>> {
        // SAFETY: the block is counted by the scope until it is freed; the
        // scope ends before its allocator can go away (it is borrowed for
        // the whole `pin_scope` call) and aborts if the block is still
        // allocated then, so the block is never reused before the box's
        // `Drop` drops the value. A zero-sized value has no block.
        unsafe { KBox::into_pin_unchecked(b) }
    }

    /// Allocates and pin-initialises a `T`: [`InPlaceInit::try_pin_init`]
    /// on this handle.
    ///
    /// [`InPlaceInit::try_pin_init`]: super::InPlaceInit::try_pin_init
    pub fn try_pin_init<T, E>(
        self,
        init: impl PinInit<T, E>,
        flags: Flags,
    ) -> Result<Pin<KBox<T, Self>>, E>
    where
        E: From<AllocError>,
    {
        let b: KBox<MaybeUninit<T>, Self> = KBox::new_uninit(self, flags)?;
        // SAFETY: as in `into_pin`.
        unsafe { b.write_pin_init_unchecked(init) }
    }

    /// Allocates and pin-initialises a `T`, with kmem's
    /// [`Error`](crate::Error): [`InPlaceInit::pin_init`] on this handle.
    ///
    /// [`InPlaceInit::pin_init`]: super::InPlaceInit::pin_init
    pub fn pin_init<T, E>(
        self,
        init: impl PinInit<T, E>,
        flags: Flags,
    ) -> crate::Result<Pin<KBox<T, Self>>>
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
        self.try_pin_init(init, flags)
    }

    /// A slice of `len` values pinned in place, the `i`-th built by
    /// `init(i)`: [`KBox::pin_slice`] on this handle.
    pub fn pin_slice<T, Func, Item, E>(
        self,
        init: Func,
        len: usize,
        flags: Flags,
    ) -> Result<Pin<KBox<[T], Self>>, E>
    where
        Func: FnMut(usize) -> Item,
        Item: PinInit<T, E>,
        E: From<AllocError>,
    {
        // SAFETY: as in `into_pin`.
        unsafe { KBox::pin_slice_unchecked(init, len, self, flags) }
    }

    /// Blocks allocated through the scope and not yet freed.
    pub fn live(self) -> usize {
        self.scope.live.load(Ordering::Relaxed)
    }
}

// SAFETY: every call is the scope's allocator's, on blocks that came from it
// (a block of this handle was allocated through this scope from that
// allocator; the caller may give this handle no other, see `Scoped`), so its
// guarantees are this handle's; the count only observes the calls' outcomes.
unsafe impl<A: Allocator> Allocator for Scoped<'_, A> {
    const MIN_ALIGN: usize = A::MIN_ALIGN;

    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let had = ptr.is_some() && old_layout.size() != 0;
        let has = layout.size() != 0;
        // SAFETY: the caller's promises for this handle are promises for the
        // scope's allocator, which allocated its blocks.
        let r = unsafe {
            self.scope
                .alloc
                .realloc(ptr, layout, old_layout, flags, nid)
        };
        // Only a new block or a freed one changes the count.
        if r.is_ok() && had != has {
            if has {
                self.scope.live.fetch_add(1, Ordering::Relaxed);
            } else if self.scope.live.fetch_sub(1, Ordering::Release) == 0 {
                // A free of a block the scope never counted breaks
                // `Scoped`'s contract and could hide a leaked one: end the
                // program rather than let the count wrap.
                leaked(0);
            }
        }
        r
    }
}

#[cfg(test)]
#[path = "pin_scope_tests.rs"]
mod tests;
