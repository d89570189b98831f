//! Per-CPU variables and their operations (`include/linux/percpu-defs.h`,
//! `include/linux/smp.h`): [`PcpuPtr`], [`define_per_cpu!`](crate::define_per_cpu),
//! `per_cpu_ptr`, `this_cpu_*`, `get_cpu`/`put_cpu`, and the typed
//! [`PerCpu<T>`].
//!
//! # Static per-CPU variables
//!
//! Linux places `DEFINE_PER_CPU` variables in the `.data..percpu` section,
//! copied into every unit at boot. kmem is an instance, not a global, and
//! has no linker script, so [`define_per_cpu!`](crate::define_per_cpu)
//! makes a [`StaticPerCpu`]: on first use it takes an offset in a layout
//! shared by the whole program (a bump allocator over
//! [`PERCPU_STATIC_SIZE`](super::PERCPU_STATIC_SIZE) bytes), and every
//! machine reserves that many bytes at the start of each unit of its first
//! chunk. So one static has a copy per CPU *per machine*, found as the
//! machine's `pcpu_base_addr` plus the offset plus the CPU's unit offset.
//! The section starts zeroed, so a static per-CPU variable's type must be
//! valid when all-zero ([`PcpuZeroable`]), as most of Linux's are.
//!
//! # Soundness
//!
//! A CPU's copy may be read by other CPUs (`per_cpu()`, a counter's sum)
//! while its CPU updates it, as in Linux, so the values `this_cpu_*` work
//! on are atomics ([`PcpuAtomic`]) used with relaxed loads and stores: the
//! update is not a locked read-modify-write (only the owning CPU writes,
//! inside a CPU-local section), and compiles to the plain instructions
//! Linux's `this_cpu_add()` uses. [`PerCpu<T>`] hands out `&T` only (to
//! the pinned CPU's copy, or to any copy when `T: Sync`), and `&mut T` to
//! every copy only through `&mut self`.

use super::PcpuState;
use crate::platform::{Level, LocalGuard, Platform};
use crate::{report, Error, Kmem, Result};
use core::marker::PhantomData;
use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::{self, AtomicUsize, Ordering::Relaxed};

/// A per-CPU pointer (`void __percpu *`): one address naming every CPU's
/// copy; `per_cpu_ptr()` adds the CPU's unit offset.
pub struct PcpuPtr<T> {
    addr: usize,
    _t: PhantomData<*const T>,
}

impl<T> Clone for PcpuPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PcpuPtr<T> {}
impl<T> PartialEq for PcpuPtr<T> {
    fn eq(&self, o: &Self) -> bool {
        self.addr == o.addr
    }
}
impl<T> Eq for PcpuPtr<T> {}
impl<T> core::fmt::Debug for PcpuPtr<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PcpuPtr({:#x})", self.addr)
    }
}
// SAFETY: a per-CPU pointer is an address, usable from any CPU; every
// access through it goes through the machine's checked operations.
unsafe impl<T> Send for PcpuPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for PcpuPtr<T> {}

impl<T> PcpuPtr<T> {
    /// The null per-CPU pointer (`free_percpu(NULL)` does nothing).
    pub const NULL: Self = PcpuPtr {
        addr: 0,
        _t: PhantomData,
    };

    pub(crate) const fn from_addr(addr: usize) -> Self {
        PcpuPtr {
            addr,
            _t: PhantomData,
        }
    }

    /// The per-CPU address (what the `percpu` trace events print as `ptr`).
    pub const fn addr(self) -> usize {
        self.addr
    }

    /// The same memory as another type.
    pub const fn cast<U>(self) -> PcpuPtr<U> {
        PcpuPtr::from_addr(self.addr)
    }

    /// `n` bytes further (pointer arithmetic on a `__percpu` pointer, as
    /// for a field of a per-CPU struct). Using the result is checked like
    /// any per-CPU pointer: it must name memory of a live allocation.
    pub const fn byte_add(self, n: usize) -> Self {
        PcpuPtr::from_addr(self.addr.wrapping_add(n))
    }
}

/// Types valid when all bytes are zero: per-CPU memory starts zeroed.
///
/// # Safety
///
/// The all-zero bit pattern is a valid value of the type.
pub unsafe trait PcpuZeroable {}

macro_rules! zeroable {
    ($($t:ty),*) => { $(
        // SAFETY: all-zero is 0 (or false, or an atomic holding 0).
        unsafe impl PcpuZeroable for $t {}
    )* };
}
zeroable!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool);
zeroable!(
    atomic::AtomicU8,
    atomic::AtomicU16,
    atomic::AtomicU32,
    atomic::AtomicU64,
    atomic::AtomicUsize,
    atomic::AtomicI8,
    atomic::AtomicI16,
    atomic::AtomicI32,
    atomic::AtomicI64,
    atomic::AtomicIsize,
    atomic::AtomicBool
);
// SAFETY: an array of zeroable values is zeroable.
unsafe impl<T: PcpuZeroable, const N: usize> PcpuZeroable for [T; N] {}

mod sealed {
    /// Only the integer atomics are [`super::PcpuAtomic`]: the platform's
    /// one-instruction add writes their bytes as an integer.
    pub trait Sealed {}

    /// Only kmem's own names of per-CPU memory are
    /// [`super::AsPcpuPtr`]: the operations write through what they give,
    /// so a forged pointer must not reach them.
    pub trait SealedPtr {}
}

/// The integer cells the `this_cpu_*` operations work on (the atomic
/// integers of `core`; sealed).
pub trait PcpuAtomic: PcpuZeroable + Sync + sealed::Sealed {
    /// The integer held.
    type Val: Copy + Eq + core::fmt::Debug;
    /// A relaxed load.
    fn get(&self) -> Self::Val;
    /// A relaxed store.
    fn set(&self, v: Self::Val);
    /// `a + b`, wrapping, as the kernel's per-CPU arithmetic does.
    fn wrapping_add(a: Self::Val, b: Self::Val) -> Self::Val;
    /// `a - b`, wrapping.
    fn wrapping_sub(a: Self::Val, b: Self::Val) -> Self::Val;
    /// One.
    fn one() -> Self::Val;
    /// `v`'s bits, sign-extended, for [`Platform::this_cpu_add`].
    fn to_bits(v: Self::Val) -> u64;
}

macro_rules! pcpu_atomic {
    ($($a:ty => $v:ty),*) => { $(
        impl sealed::Sealed for $a {}
        impl PcpuAtomic for $a {
            type Val = $v;
            #[inline(always)]
            fn get(&self) -> $v { self.load(Relaxed) }
            #[inline(always)]
            fn set(&self, v: $v) { self.store(v, Relaxed) }
            #[inline(always)]
            fn wrapping_add(a: $v, b: $v) -> $v { a.wrapping_add(b) }
            #[inline(always)]
            fn wrapping_sub(a: $v, b: $v) -> $v { a.wrapping_sub(b) }
            #[inline(always)]
            fn one() -> $v { 1 }
            #[inline(always)]
            fn to_bits(v: $v) -> u64 { v as u64 }
        }
    )* };
}
pcpu_atomic!(
    atomic::AtomicU8 => u8, atomic::AtomicU16 => u16, atomic::AtomicU32 => u32,
    atomic::AtomicU64 => u64, atomic::AtomicUsize => usize, atomic::AtomicI8 => i8,
    atomic::AtomicI16 => i16, atomic::AtomicI32 => i32, atomic::AtomicI64 => i64,
    atomic::AtomicIsize => isize
);

/// The next free offset of the program-wide static per-CPU layout.
static STATIC_NEXT: AtomicUsize = AtomicUsize::new(0);

/// A static per-CPU variable (`DEFINE_PER_CPU`), made by
/// [`define_per_cpu!`](crate::define_per_cpu).
pub struct StaticPerCpu<T> {
    /// Offset in the static section plus one; 0 before first use.
    off: AtomicUsize,
    _t: PhantomData<T>,
}

// SAFETY: the value holds only its offset (an atomic); the copies live in
// machines' per-CPU memory and are reached through the checked operations,
// which hand out `&T` across threads only for `T: Sync`.
unsafe impl<T> Sync for StaticPerCpu<T> {}

impl<T: PcpuZeroable> StaticPerCpu<T> {
    /// A variable with no offset yet.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        StaticPerCpu {
            off: AtomicUsize::new(0),
            _t: PhantomData,
        }
    }

    /// The variable's offset in the static section, taken on first use.
    /// Panics when the section is full, as an oversized `.data..percpu`
    /// fails the kernel's build.
    pub fn offset(&self) -> usize {
        let o = self.off.load(Relaxed);
        if o != 0 {
            return o - 1;
        }
        let (size, align) = (core::mem::size_of::<T>().max(1), core::mem::align_of::<T>());
        let mut cur = STATIC_NEXT.load(Relaxed);
        let mine = loop {
            let start = cur.next_multiple_of(align);
            assert!(
                start + size <= super::PERCPU_STATIC_SIZE,
                "percpu: the static per-CPU section ({} bytes) is full",
                super::PERCPU_STATIC_SIZE
            );
            match STATIC_NEXT.compare_exchange_weak(cur, start + size, Relaxed, Relaxed) {
                Ok(_) => break start,
                Err(c) => cur = c,
            }
        };
        // Another thread may have placed it meanwhile: the first wins (the
        // loser's bytes stay unused).
        match self.off.compare_exchange(0, mine + 1, Relaxed, Relaxed) {
            Ok(_) => mine,
            Err(o) => o - 1,
        }
    }
}

/// Defines static per-CPU variables (`DEFINE_PER_CPU(type, name)`): a
/// [`StaticPerCpu`] whose copies live in every machine's static per-CPU
/// section, zeroed at boot.
///
/// ```
/// use core::sync::atomic::AtomicU64;
/// kmem::define_per_cpu! {
///     /// Events on this CPU.
///     static EVENTS: AtomicU64;
/// }
/// # let mut mem = vec![0u8; 8 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 2).unwrap();
/// k.this_cpu_inc(&EVENTS);
/// k.this_cpu_add(&EVENTS, 2);
/// let total: u64 = k.for_each_possible_cpu().map(|c| k.per_cpu(&EVENTS, c).unwrap().load(core::sync::atomic::Ordering::Relaxed)).sum();
/// assert_eq!(total, 3);
/// ```
#[macro_export]
macro_rules! define_per_cpu {
    ($($(#[$m:meta])* $vis:vis static $name:ident : $ty:ty;)*) => {$(
        $(#[$m])*
        $vis static $name: $crate::percpu::StaticPerCpu<$ty> = $crate::percpu::StaticPerCpu::new();
    )*};
}

/// Declares a static per-CPU variable defined elsewhere
/// (`DECLARE_PER_CPU`): in Rust, a `use` of its path.
///
/// ```
/// mod stats {
///     kmem::define_per_cpu! { pub static HITS: core::sync::atomic::AtomicU32; }
/// }
/// kmem::declare_per_cpu!(stats::HITS);
/// let _ = &HITS;
/// ```
#[macro_export]
macro_rules! declare_per_cpu {
    ($($path:tt)+) => {
        use $($path)+;
    };
}

/// What names live per-CPU memory of a known type: a [`StaticPerCpu`] or a
/// [`PerCpu`] (a bare [`PcpuPtr`] is reached only through
/// [`Kmem::per_cpu_ptr`] and raw pointers). Sealed: the safe operations
/// write through the pointer it gives.
pub trait AsPcpuPtr<T>: sealed::SealedPtr {
    /// The per-CPU pointer on machine `k`; panics when the value belongs
    /// to another machine.
    fn pcpu_ptr<P: Platform>(&self, k: &Kmem<P>) -> PcpuPtr<T>;
}

/// A raw per-CPU pointer the core itself vouches for (a counter's own
/// allocation): the safe operations never take a bare [`PcpuPtr`], which
/// anyone can forge or keep past `free_percpu()`.
pub(crate) struct Owned<T>(pub(crate) PcpuPtr<T>);

impl<T> sealed::SealedPtr for Owned<T> {}
impl<T> AsPcpuPtr<T> for Owned<T> {
    fn pcpu_ptr<P: Platform>(&self, _: &Kmem<P>) -> PcpuPtr<T> {
        self.0
    }
}

impl<T> sealed::SealedPtr for StaticPerCpu<T> {}
// Every machine has the static section: the offset is valid on any.
impl<T: PcpuZeroable> AsPcpuPtr<T> for StaticPerCpu<T> {
    fn pcpu_ptr<P: Platform>(&self, k: &Kmem<P>) -> PcpuPtr<T> {
        PcpuPtr::from_addr(k.percpu.layout.base + self.offset())
    }
}

/// A pinned CPU (`get_cpu()`): preemption and interrupts are off until it
/// drops (`put_cpu()`).
pub type CpuGuard<'a, P> = LocalGuard<'a, P>;

impl<P: Platform> Kmem<P> {
    fn pcpu_state(&self) -> &PcpuState {
        &self.percpu
    }

    /// Report a per-CPU operation from preemptible context, in Linux's
    /// words (`check_preemption_disabled()`), when `CONFIG_DEBUG_PREEMPT`
    /// is on. Answers whether it was reported.
    fn preemptible_bug(&self, what: &str, caller: &Location<'_>) -> bool {
        if !self.pcpu_state().debug_preempt || self.p.in_atomic() {
            return false;
        }
        let t = self.p.current();
        report!(
            &self.p,
            Level::Err,
            "BUG: using {}() in preemptible [00000000] code: {}/{}",
            what,
            t.comm(),
            t.pid
        );
        report!(&self.p, Level::Err, "caller is {}", caller);
        true
    }

    /// `smp_processor_id()`: the CPU the caller runs on. With
    /// `CONFIG_DEBUG_PREEMPT` ([`BootParams::debug_preempt`](crate::BootParams)),
    /// a call from preemptible context is reported as Linux reports it (the
    /// answer may be stale the moment it is read).
    #[track_caller]
    pub fn smp_processor_id(&self) -> usize {
        self.preemptible_bug("smp_processor_id", Location::caller());
        self.p.smp_processor_id()
    }

    /// `raw_smp_processor_id()`: no check.
    pub fn raw_smp_processor_id(&self) -> usize {
        self.p.smp_processor_id()
    }

    /// `get_cpu()`: pin the caller to its CPU; `put_cpu()` is dropping the
    /// guard. [`LocalGuard::cpu`] says which CPU.
    pub fn get_cpu(&self) -> CpuGuard<'_, P> {
        LocalGuard::new(&self.p)
    }

    /// `put_cpu()`.
    pub fn put_cpu(&self, guard: CpuGuard<'_, P>) {
        drop(guard)
    }

    /// `per_cpu(var, cpu)`: CPU `cpu`'s copy. A CPU that is not possible
    /// is reported and refused.
    #[track_caller]
    pub fn per_cpu<'a, T: Sync>(&'a self, var: &'a impl AsPcpuPtr<T>, cpu: usize) -> Result<&'a T> {
        let p = self.per_cpu_ptr(var.pcpu_ptr(self), cpu)?;
        // SAFETY: a live per-CPU allocation or static (the caller holds it
        // for at least this borrow), and T: Sync allows shared access from
        // any CPU.
        Ok(unsafe { p.as_ref() })
    }

    /// `this_cpu_ptr(var)` for the pinned CPU of `guard`.
    pub fn this_cpu_ptr<'g, T>(
        &self,
        guard: &'g CpuGuard<'_, P>,
        var: &'g impl AsPcpuPtr<T>,
    ) -> &'g T {
        let a = self.pcpu_addr(var.pcpu_ptr(self).addr(), guard.cpu());
        // SAFETY: the pinned CPU's copy of live per-CPU memory; only shared
        // access is given, and the CPU cannot change while `guard` lives.
        unsafe { &*(a as *const T) }
    }

    /// `raw_cpu_ptr(var)`: the current CPU's copy, without pinning (the
    /// caller must not rely on staying there).
    pub fn raw_cpu_ptr<T>(&self, var: &impl AsPcpuPtr<T>) -> NonNull<T> {
        let a = self.pcpu_addr(var.pcpu_ptr(self).addr(), self.p.smp_processor_id());
        NonNull::new(a as *mut T).expect("per-CPU memory is not at 0")
    }

    /// `get_cpu_var(var)`: pin the CPU and hand its copy; dropping the
    /// guard is `put_cpu_var()`.
    pub fn get_cpu_var<'a, T>(&'a self, var: &'a impl AsPcpuPtr<T>) -> CpuVar<'a, T, P> {
        let guard = self.get_cpu();
        let a = self.pcpu_addr(var.pcpu_ptr(self).addr(), guard.cpu());
        CpuVar {
            _guard: guard,
            ptr: a as *const T,
        }
    }

    /// `put_cpu_var(var)`: unpin (dropping the guard does the same).
    pub fn put_cpu_var<T>(&self, var: CpuVar<'_, T, P>) {
        drop(var)
    }

    /// `put_cpu_ptr(var)`: unpin (dropping the guard does the same).
    pub fn put_cpu_ptr<T>(&self, var: CpuVar<'_, T, P>) {
        drop(var)
    }

    /// `get_cpu_ptr(var)`: as [`get_cpu_var`](Self::get_cpu_var).
    pub fn get_cpu_ptr<'a, T>(&'a self, var: &'a impl AsPcpuPtr<T>) -> CpuVar<'a, T, P> {
        self.get_cpu_var(var)
    }

    #[inline(always)]
    pub(crate) fn this_cpu_op<A: PcpuAtomic, R>(
        &self,
        var: &impl AsPcpuPtr<A>,
        op: impl FnOnce(&A) -> R,
    ) -> R {
        let ptr = var.pcpu_ptr(self).addr();
        let st = self.p.local_enter_leaf();
        // SAFETY: this CPU's copy of live per-CPU memory; inside the
        // section no other context runs on this CPU, so the relaxed
        // load-and-store below is not interleaved with another update of
        // this copy (only its CPU updates it).
        let r = op(unsafe { &*(self.pcpu_addr(ptr, st.cpu) as *const A) });
        self.p.local_exit_leaf(st);
        r
    }

    /// `this_cpu_read(var)`.
    pub fn this_cpu_read<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>) -> A::Val {
        self.this_cpu_op(var, |a| a.get())
    }

    /// `this_cpu_write(var, v)`.
    pub fn this_cpu_write<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>, v: A::Val) {
        self.this_cpu_op(var, |a| a.set(v))
    }

    /// `this_cpu_add(var, v)`: one instruction where the platform has a
    /// per-CPU base register ([`Platform::this_cpu_add`]), else a leaf
    /// section.
    #[inline]
    pub fn this_cpu_add<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>, v: A::Val) {
        let ptr = var.pcpu_ptr(self).addr();
        // SAFETY: `var` (sealed: a static, a live `PerCpu` checked to be
        // this machine's, or a counter's own allocation) gives a live
        // per-CPU pointer of this machine, whose copy on every CPU is an
        // aligned `A`, an atomic integer of `size_of::<A>()` bytes (sealed);
        // the platform's offsets are this machine's, given at boot, the only
        // caller of the unsafe `set_per_cpu_offset` (promise 6).
        if unsafe {
            self.p
                .this_cpu_add(ptr, A::to_bits(v), core::mem::size_of::<A>())
        } {
            return;
        }
        self.this_cpu_op(var, |a| a.set(A::wrapping_add(a.get(), v)))
    }

    /// `this_cpu_sub(var, v)`: `this_cpu_add` of `-v`.
    #[inline]
    pub fn this_cpu_sub<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>, v: A::Val) {
        self.this_cpu_add(var, A::wrapping_sub(A::wrapping_sub(v, v), v))
    }

    /// `this_cpu_inc(var)`.
    pub fn this_cpu_inc<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>) {
        self.this_cpu_add(var, A::one())
    }

    /// `this_cpu_dec(var)`.
    pub fn this_cpu_dec<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>) {
        self.this_cpu_sub(var, A::one())
    }

    /// `this_cpu_add_return(var, v)`: the new value.
    pub fn this_cpu_add_return<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>, v: A::Val) -> A::Val {
        self.this_cpu_op(var, |a| {
            let n = A::wrapping_add(a.get(), v);
            a.set(n);
            n
        })
    }

    /// `this_cpu_xchg(var, v)`: the old value.
    pub fn this_cpu_xchg<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>, v: A::Val) -> A::Val {
        self.this_cpu_op(var, |a| {
            let old = a.get();
            a.set(v);
            old
        })
    }

    /// `this_cpu_cmpxchg(var, old, new)`: the value found; stored `new`
    /// when it was `old`.
    pub fn this_cpu_cmpxchg<A: PcpuAtomic>(
        &self,
        var: &impl AsPcpuPtr<A>,
        old: A::Val,
        new: A::Val,
    ) -> A::Val {
        self.this_cpu_op(var, |a| {
            let cur = a.get();
            if cur == old {
                a.set(new);
            }
            cur
        })
    }

    /// The `__this_cpu_*` forms: the caller has pinned the CPU. Under
    /// `CONFIG_DEBUG_PREEMPT`, a call from preemptible context is Linux's
    /// "BUG: using __this_cpu_add() in preemptible ..." and is refused
    /// ([`Error::BadState`]) without touching any copy.
    #[track_caller]
    fn raw_this_cpu_op<A: PcpuAtomic, R>(
        &self,
        what: &str,
        var: &impl AsPcpuPtr<A>,
        op: impl FnOnce(&A) -> R,
    ) -> Result<R> {
        if self.preemptible_bug(what, Location::caller()) {
            return Err(Error::BadState);
        }
        Ok(self.this_cpu_op(var, op))
    }

    /// `__this_cpu_read(var)`.
    #[track_caller]
    pub fn __this_cpu_read<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>) -> Result<A::Val> {
        self.raw_this_cpu_op("__this_cpu_read", var, |a| a.get())
    }

    /// `__this_cpu_write(var, v)`.
    #[track_caller]
    pub fn __this_cpu_write<A: PcpuAtomic>(
        &self,
        var: &impl AsPcpuPtr<A>,
        v: A::Val,
    ) -> Result<()> {
        self.raw_this_cpu_op("__this_cpu_write", var, |a| a.set(v))
    }

    /// `__this_cpu_add(var, v)`.
    #[track_caller]
    pub fn __this_cpu_add<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>, v: A::Val) -> Result<()> {
        self.raw_this_cpu_op("__this_cpu_add", var, |a| {
            a.set(A::wrapping_add(a.get(), v))
        })
    }

    /// `__this_cpu_sub(var, v)`.
    #[track_caller]
    pub fn __this_cpu_sub<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>, v: A::Val) -> Result<()> {
        self.raw_this_cpu_op("__this_cpu_sub", var, |a| {
            a.set(A::wrapping_sub(a.get(), v))
        })
    }

    /// `__this_cpu_inc(var)`.
    #[track_caller]
    pub fn __this_cpu_inc<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>) -> Result<()> {
        self.raw_this_cpu_op("__this_cpu_inc", var, |a| {
            a.set(A::wrapping_add(a.get(), A::one()))
        })
    }

    /// `__this_cpu_dec(var)`.
    #[track_caller]
    pub fn __this_cpu_dec<A: PcpuAtomic>(&self, var: &impl AsPcpuPtr<A>) -> Result<()> {
        self.raw_this_cpu_op("__this_cpu_dec", var, |a| {
            a.set(A::wrapping_sub(a.get(), A::one()))
        })
    }

    /// `__this_cpu_add_return(var, v)`.
    #[track_caller]
    pub fn __this_cpu_add_return<A: PcpuAtomic>(
        &self,
        var: &impl AsPcpuPtr<A>,
        v: A::Val,
    ) -> Result<A::Val> {
        self.raw_this_cpu_op("__this_cpu_add_return", var, |a| {
            let n = A::wrapping_add(a.get(), v);
            a.set(n);
            n
        })
    }

    /// `__this_cpu_xchg(var, v)`.
    #[track_caller]
    pub fn __this_cpu_xchg<A: PcpuAtomic>(
        &self,
        var: &impl AsPcpuPtr<A>,
        v: A::Val,
    ) -> Result<A::Val> {
        self.raw_this_cpu_op("__this_cpu_xchg", var, |a| {
            let old = a.get();
            a.set(v);
            old
        })
    }

    /// `__this_cpu_cmpxchg(var, old, new)`.
    #[track_caller]
    pub fn __this_cpu_cmpxchg<A: PcpuAtomic>(
        &self,
        var: &impl AsPcpuPtr<A>,
        old: A::Val,
        new: A::Val,
    ) -> Result<A::Val> {
        self.raw_this_cpu_op("__this_cpu_cmpxchg", var, |a| {
            let cur = a.get();
            if cur == old {
                a.set(new);
            }
            cur
        })
    }
}

/// A pinned CPU's copy of a per-CPU variable (`get_cpu_var()`); dropping
/// it is `put_cpu_var()`.
pub struct CpuVar<'a, T, P: Platform> {
    _guard: CpuGuard<'a, P>,
    ptr: *const T,
}

impl<T, P: Platform> CpuVar<'_, T, P> {
    /// The pinned CPU.
    pub fn cpu(&self) -> usize {
        self._guard.cpu()
    }
}

impl<T, P: Platform> core::ops::Deref for CpuVar<'_, T, P> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the pinned CPU's copy of live per-CPU memory, shared only.
        unsafe { &*self.ptr }
    }
}

/// A typed per-CPU allocation owned by the value (`alloc_percpu(T)` ..
/// `free_percpu()`), with a `T` per possible CPU.
///
/// The pinned CPU's copy is reached through [`PerCpu::get_cpu`]; any CPU's
/// through [`PerCpu::per_cpu`] when `T: Sync`; all copies mutably through
/// `&mut self` ([`PerCpu::iter_mut`]), when nothing else can reach them.
pub struct PerCpu<'k, T, P: Platform> {
    k: &'k Kmem<P>,
    ptr: PcpuPtr<T>,
}

// SAFETY: the copies are `T`s that may be used from any CPU's thread.
unsafe impl<T: Send, P: Platform + Sync> Send for PerCpu<'_, T, P> {}
// SAFETY: shared access hands out `&T` on any thread: needs `T: Sync`.
unsafe impl<T: Sync, P: Platform + Sync> Sync for PerCpu<'_, T, P> {}

impl<'k, T, P: Platform> PerCpu<'k, T, P> {
    /// A zeroed `T` per CPU.
    #[track_caller]
    pub fn new(k: &'k Kmem<P>) -> Result<Self>
    where
        T: PcpuZeroable,
    {
        let ptr = k.alloc_percpu::<T>()?;
        Ok(PerCpu { k, ptr })
    }

    /// `f(cpu)` for each possible CPU's copy.
    #[track_caller]
    pub fn new_with(k: &'k Kmem<P>, mut f: impl FnMut(usize) -> T) -> Result<Self> {
        let ptr = k
            .pcpu_alloc(
                core::mem::size_of::<T>().max(1),
                core::mem::align_of::<T>(),
                false,
                crate::gfp::GFP_KERNEL,
            )?
            .cast::<T>();
        for cpu in 0..k.nr_cpus {
            // SAFETY: fresh per-CPU memory, sized and aligned for T in
            // every unit, not yet shared.
            unsafe { (k.pcpu_addr(ptr.addr(), cpu) as *mut T).write(f(cpu)) };
        }
        Ok(PerCpu { k, ptr })
    }

    /// The per-CPU pointer.
    pub fn ptr(&self) -> PcpuPtr<T> {
        self.ptr
    }

    /// Pin the CPU and borrow its copy (`get_cpu_ptr()`).
    pub fn get_cpu(&self) -> CpuVar<'_, T, P> {
        self.k.get_cpu_var(self)
    }

    /// CPU `cpu`'s copy (`per_cpu_ptr()`).
    #[track_caller]
    pub fn per_cpu(&self, cpu: usize) -> Result<&T>
    where
        T: Sync,
    {
        self.k.per_cpu(self, cpu)
    }

    /// Every CPU's copy with its CPU.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)>
    where
        T: Sync,
    {
        (0..self.k.nr_cpus).map(move |cpu| {
            // SAFETY: a live copy; T: Sync allows shared access anywhere.
            (cpu, unsafe {
                &*(self.k.pcpu_addr(self.ptr.addr(), cpu) as *const T)
            })
        })
    }

    /// Every CPU's copy, mutably: `&mut self` proves nothing else reaches
    /// them.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        let (k, ptr) = (self.k, self.ptr);
        (0..k.nr_cpus).map(move |cpu| {
            // SAFETY: distinct copies (units do not overlap), exclusively
            // borrowed through `&mut self` for the iterator's life.
            (cpu, unsafe {
                &mut *(k.pcpu_addr(ptr.addr(), cpu) as *mut T)
            })
        })
    }
}

impl<T, P: Platform> sealed::SealedPtr for PerCpu<'_, T, P> {}
impl<T, P: Platform> AsPcpuPtr<T> for PerCpu<'_, T, P> {
    #[inline]
    fn pcpu_ptr<Q: Platform>(&self, k: &Kmem<Q>) -> PcpuPtr<T> {
        // Another machine's units lie elsewhere (and it may have other
        // CPUs): its offsets would reach memory this value does not own.
        assert!(
            core::ptr::addr_eq(self.k as *const Kmem<P>, k as *const Kmem<Q>),
            "percpu: a PerCpu used with a machine other than its own"
        );
        self.ptr
    }
}

impl<T, P: Platform> Drop for PerCpu<'_, T, P> {
    fn drop(&mut self) {
        for (_, v) in self.iter_mut() {
            // SAFETY: each copy is a live T, dropped once, then freed.
            unsafe { core::ptr::drop_in_place(v) };
        }
        // SAFETY: the value owned the allocation; nothing uses it after.
        let r = unsafe { self.k.free_percpu(self.ptr) };
        debug_assert!(r.is_ok());
    }
}
