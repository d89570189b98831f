//! The first chunk's layout (`mm/percpu.c`: `pcpu_build_alloc_info()`),
//! pure arithmetic with no machine, as `slab/geometry.rs` is for slabs.
//!
//! Each possible CPU gets a *unit*: the static per-CPU section, the
//! reserved area (`PERCPU_MODULE_RESERVE`) and the dynamic reserve,
//! `size_sum` bytes rounded to pages, inside a unit of `unit_size` bytes.
//! CPUs of one node form a *group*, whose units are allocated together in
//! blocks of `alloc_size` bytes, a multiple of the atom (`PMD_SIZE` on
//! x86_64, so the first chunk can be mapped with huge pages). Units per
//! allocation (`upa`) is the largest that wastes at most a third of the
//! CPUs' worth of units and does not take more allocations than a smaller
//! one:
//!
//! ```text
//! size_sum      = PFN_ALIGN(static + reserved + max(dyn, PERCPU_DYNAMIC_EARLY_SIZE))
//! min_unit_size = max(size_sum, PCPU_MIN_UNIT_SIZE)
//! alloc_size    = roundup(min_unit_size, atom_size)
//! unit_size     = alloc_size / upa,  a whole number of pages
//! ```
//!
//! | machine | static | reserved | dyn | atom | unit_size |
//! |---|---|---|---|---|---|
//! | 2 CPUs, 1 node | 16 KiB | 8 KiB | 28 KiB | 2 MiB | 1 MiB |
//! | 4 CPUs, 1 node | 16 KiB | 8 KiB | 28 KiB | 2 MiB | 512 KiB |
//! | 64 CPUs, 1 node | 16 KiB | 8 KiB | 28 KiB | 2 MiB | 64 KiB |

use crate::PAGE_SIZE;

/// `PCPU_MIN_UNIT_SIZE`: the smallest unit (32 KiB).
pub const PCPU_MIN_UNIT_SIZE: usize = 32 << 10;
/// `PERCPU_DYNAMIC_EARLY_SIZE`: dynamic space the first chunk always has.
pub const PERCPU_DYNAMIC_EARLY_SIZE: usize = 20 << 10;
/// `PERCPU_DYNAMIC_RESERVE` on 64-bit: the dynamic space asked for.
pub const PERCPU_DYNAMIC_RESERVE: usize = 28 << 10;
/// `PERCPU_MODULE_RESERVE`: the reserved area (modules' static per-CPU
/// data, `__alloc_reserved_percpu()`).
pub const PERCPU_MODULE_RESERVE: usize = 8 << 10;

/// The first chunk's layout (`struct pcpu_alloc_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocInfo {
    /// Bytes of the static section (`static_size`).
    pub static_size: usize,
    /// Bytes of the reserved area (`reserved_size`).
    pub reserved_size: usize,
    /// Bytes of the dynamic area, grown to fill `size_sum`'s last page
    /// (`dyn_size`).
    pub dyn_size: usize,
    /// Bytes per unit (`unit_size`).
    pub unit_size: usize,
    /// The atom (`atom_size`).
    pub atom_size: usize,
    /// Bytes per allocation of units (`alloc_size`).
    pub alloc_size: usize,
    /// Units per allocation (`upa`).
    pub upa: usize,
}

impl AllocInfo {
    /// `size_sum`: bytes of a unit in use (static + reserved + dynamic).
    pub const fn size_sum(&self) -> usize {
        self.static_size + self.reserved_size + self.dyn_size
    }
}

/// `pcpu_build_alloc_info()` for `group_cnt[g]` CPUs in group `g` (the
/// CPUs of node `g`, as x86's `pcpu_cpu_distance()` groups them) and
/// `nr_cpus` possible CPUs. Returns the layout; each group then takes
/// `roundup(group_cnt[g], upa)` units.
///
/// ```
/// use kmem::percpu::alloc_info::*;
/// let ai = build_alloc_info(16 << 10, PERCPU_MODULE_RESERVE, PERCPU_DYNAMIC_RESERVE, 2 << 20, &[2], 2);
/// assert_eq!((ai.unit_size, ai.upa, ai.dyn_size), (1 << 20, 2, 28 << 10));
/// ```
pub fn build_alloc_info(
    static_size: usize,
    reserved_size: usize,
    dyn_size: usize,
    atom_size: usize,
    group_cnt: &[usize],
    nr_cpus: usize,
) -> AllocInfo {
    let size_sum = (static_size + reserved_size + dyn_size.max(PERCPU_DYNAMIC_EARLY_SIZE))
        .next_multiple_of(PAGE_SIZE);
    let dyn_size = size_sum - static_size - reserved_size;
    let min_unit_size = size_sum.max(PCPU_MIN_UNIT_SIZE);
    let alloc_size = min_unit_size.next_multiple_of(atom_size);
    let fits = |upa: usize| alloc_size % upa == 0 && (alloc_size / upa) % PAGE_SIZE == 0;
    let mut max_upa = alloc_size / min_unit_size;
    while !fits(max_upa) {
        max_upa -= 1;
    }
    let (mut last_allocs, mut best_upa) = (usize::MAX, 0);
    for upa in (1..=max_upa).rev() {
        if !fits(upa) {
            continue;
        }
        let (mut allocs, mut wasted) = (0, 0);
        for &n in group_cnt {
            let this = n.div_ceil(upa);
            allocs += this;
            wasted += this * upa - n;
        }
        // At most a third wasted; upa == 1 wastes nothing, so always passes.
        if wasted > nr_cpus / 3 {
            continue;
        }
        // And no more memory than a larger upa.
        if allocs > last_allocs {
            break;
        }
        last_allocs = allocs;
        best_upa = upa;
    }
    AllocInfo {
        static_size,
        reserved_size,
        dyn_size,
        unit_size: alloc_size / best_upa,
        atom_size,
        alloc_size,
        upa: best_upa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: usize = 16 << 10;
    const M: usize = 2 << 20;

    #[test]
    fn unit_sizes_as_linux_picks_them() {
        let b = |cpus: &[usize]| {
            let n = cpus.iter().sum();
            build_alloc_info(S, PERCPU_MODULE_RESERVE, PERCPU_DYNAMIC_RESERVE, M, cpus, n)
        };
        // size_sum 52 KiB: up to 39 units in 2 MiB, 32 of a whole-page size.
        assert_eq!(b(&[1]).unit_size, 2 << 20);
        assert_eq!(b(&[2]).unit_size, 1 << 20);
        assert_eq!(b(&[4]).unit_size, 512 << 10);
        assert_eq!(b(&[64]).unit_size, 64 << 10);
        // Two nodes of 3 CPUs: 4 units per allocation waste 2, which is not
        // more than 6 / 3; 8 would waste 10.
        assert_eq!(b(&[3, 3]).upa, 4);
        // One node of 5 CPUs (a third is 1): 8 and 4 waste 3; 2 wastes 1
        // in 3 allocations; 1 would take 5.
        assert_eq!(b(&[5]).upa, 2);
        assert_eq!(b(&[2]).size_sum(), 52 << 10);
    }

    #[test]
    fn a_page_atom_packs_units_to_size_sum() {
        let ai = build_alloc_info(
            S,
            PERCPU_MODULE_RESERVE,
            PERCPU_DYNAMIC_RESERVE,
            PAGE_SIZE,
            &[2],
            2,
        );
        assert_eq!(ai.unit_size, 52 << 10);
        assert_eq!(ai.upa, 1);
        // A small dynamic request is raised to the early size, then to a page.
        let ai = build_alloc_info(1000, 0, 0, PAGE_SIZE, &[1], 1);
        assert_eq!(ai.dyn_size, (24 << 10) - 1000);
        assert_eq!(ai.unit_size, PCPU_MIN_UNIT_SIZE);
    }
}
