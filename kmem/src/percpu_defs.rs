//! The per-CPU offset table and `per_cpu_ptr()`'s arithmetic
//! (`asm-generic/percpu.h`'s `__per_cpu_offset[]`,
//! `include/linux/percpu-defs.h`'s `per_cpu_ptr()`).
//!
//! A per-CPU pointer is one address; CPU `n`'s copy of what it points at
//! is that address plus `__per_cpu_offset[n]`, whatever chunk of the
//! per-CPU allocator ([`crate::percpu`]) the memory is in. This module is
//! that arithmetic alone, a leaf: the page allocator's per-CPU lists live
//! in per-CPU memory, as Linux's `zone->per_cpu_pageset` does, and the
//! page allocator sits below the per-CPU allocator (which allocates pages,
//! vmalloc space and kmalloc memory), so it reaches each CPU's copy
//! through these types without importing it.
//!
//! The table is built once at boot by `setup_per_cpu_areas()` (in
//! memblock memory, never written again) and shared by everything that
//! holds a [`PerCpuOffsets`]: one load finds a CPU's offset.

use core::marker::PhantomData;
use core::num::NonZeroUsize;
use core::ptr::NonNull;

/// `__per_cpu_offset[]`: for each possible CPU, what to add to a per-CPU
/// pointer to reach that CPU's copy. Invariant: `table` points at
/// `nr_cpus` offsets that are never written again and outlive the
/// machine's per-CPU memory.
#[derive(Clone, Copy, Debug)]
pub struct PerCpuOffsets {
    /// The offsets, one per possible CPU.
    table: NonNull<usize>,
    /// `nr_cpu_ids`: entries in `table`.
    nr_cpus: usize,
}

// SAFETY: the table is read-only after boot (the type's invariant).
unsafe impl Send for PerCpuOffsets {}
// SAFETY: as above.
unsafe impl Sync for PerCpuOffsets {}

impl PerCpuOffsets {
    /// The table at `table`.
    ///
    /// # Safety
    ///
    /// `table` points at `nr_cpus` initialised offsets that are never
    /// written again and live as long as every value made from this one.
    pub(crate) const unsafe fn new(table: NonNull<usize>, nr_cpus: usize) -> Self {
        PerCpuOffsets { table, nr_cpus }
    }

    /// Possible CPUs (`nr_cpu_ids`).
    #[inline]
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// `per_cpu_offset(cpu)`. Panics for a CPU that is not possible.
    #[inline]
    pub fn offset(&self, cpu: usize) -> usize {
        assert!(cpu < self.nr_cpus, "CPU {cpu} is not possible");
        // SAFETY: checked above; the type's invariant.
        unsafe { self.offset_unchecked(cpu) }
    }

    /// `per_cpu_offset(cpu)` without the check, for the fast paths, whose
    /// CPU id comes from the platform.
    ///
    /// # Safety
    ///
    /// `cpu < nr_cpus()` (Platform promise 3 gives it for the running CPU).
    #[inline(always)]
    pub(crate) unsafe fn offset_unchecked(&self, cpu: usize) -> usize {
        debug_assert!(cpu < self.nr_cpus);
        // SAFETY: the caller's `cpu` is in the table (the type's invariant).
        unsafe { *self.table.as_ptr().add(cpu) }
    }
}

/// A per-CPU pointer to one of kmem's own per-CPU structures, with the
/// offsets that find each CPU's copy (what `zone->per_cpu_pageset` and
/// `per_cpu_ptr()` are together in Linux). Invariant: for every possible
/// CPU, `ptr + offsets[cpu]` is an initialised, aligned `T` that lives as
/// long as this value.
pub struct PerCpuRef<T> {
    /// The per-CPU pointer (never 0: per-CPU memory is not at address 0).
    ptr: NonZeroUsize,
    /// The machine's `__per_cpu_offset[]`.
    offsets: PerCpuOffsets,
    _t: PhantomData<*const T>,
}

// SAFETY: it hands out `&T` to the copies, as a `&T` would.
unsafe impl<T: Sync> Send for PerCpuRef<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for PerCpuRef<T> {}

impl<T> PerCpuRef<T> {
    /// The structure at per-CPU pointer `ptr`.
    ///
    /// # Safety
    ///
    /// For every CPU below `offsets.nr_cpus()`, `ptr + offsets.offset(cpu)`
    /// is an initialised, aligned `T` that lives as long as the value made
    /// here, and nothing makes a `&mut` to it while that value lives.
    pub(crate) unsafe fn new(ptr: NonZeroUsize, offsets: PerCpuOffsets) -> Self {
        PerCpuRef {
            ptr,
            offsets,
            _t: PhantomData,
        }
    }

    /// Possible CPUs.
    #[inline]
    pub fn nr_cpus(&self) -> usize {
        self.offsets.nr_cpus
    }

    /// `per_cpu_ptr(ptr, cpu)`: CPU `cpu`'s copy, `None` for a CPU that is
    /// not possible.
    #[inline]
    pub fn get(&self, cpu: usize) -> Option<&T> {
        (cpu < self.offsets.nr_cpus).then(|| {
            // SAFETY: `cpu` is possible, so the sum is its live, initialised
            // copy (the type's invariant).
            unsafe { &*((self.ptr.get() + self.offsets.offset_unchecked(cpu)) as *const T) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpu_reaches_its_own_copy() {
        let copies = [10u32, 11, 12];
        let base = copies.as_ptr() as usize;
        let table = [0usize, 4, 8];
        // SAFETY: `table` lives to the end of the test and is not written.
        let offs = unsafe { PerCpuOffsets::new(NonNull::from(&table).cast(), 3) };
        assert_eq!(offs.offset(2), 8);
        // SAFETY: base + table[cpu] is `copies[cpu]` for each of the 3 CPUs.
        let r = unsafe { PerCpuRef::<u32>::new(NonZeroUsize::new(base).unwrap(), offs) };
        assert_eq!(
            (0..3)
                .map(|c| *r.get(c).unwrap())
                .collect::<std::vec::Vec<_>>(),
            [10, 11, 12]
        );
        assert!(r.get(3).is_none());
    }

    #[test]
    #[should_panic(expected = "CPU 3 is not possible")]
    fn an_impossible_cpu_is_refused() {
        let table = [0usize; 3];
        // SAFETY: as above.
        let offs = unsafe { PerCpuOffsets::new(NonNull::from(&table).cast(), 3) };
        offs.offset(3);
    }
}
