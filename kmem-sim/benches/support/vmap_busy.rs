//! The vmap_area bench's machine state, shared by `benches/vmalloc.rs` and
//! `examples/hot_paths.rs` (included by `#[path]`): `busy` one-page areas
//! with a one-page hole between each two, and the pair it measures.

use kmem::gfp::GFP_KERNEL;
use kmem::platform::Platform;
use kmem::{Kmem, PAGE_SIZE};
use std::hint::black_box;

/// Allocate `busy` one-page areas side by side with one between each two,
/// then free those between (a hole at the top would merge with the free
/// space above); returns the busy areas' addresses, for
/// [`free_all`]. The free tree then holds `busy - 1` holes too small for
/// [`pair`]'s request, which its search must skip.
pub fn busy_with_holes<P: Platform>(k: &Kmem<P>, busy: usize) -> Vec<usize> {
    let (boot_free, _) = k.vmap_free_areas();
    let mut held = Vec::with_capacity(busy);
    let mut holes = Vec::with_capacity(busy);
    for i in 0..busy {
        held.push(k.alloc_vmap_area(PAGE_SIZE, PAGE_SIZE, GFP_KERNEL).unwrap());
        if i + 1 < busy {
            holes.push(k.alloc_vmap_area(PAGE_SIZE, PAGE_SIZE, GFP_KERNEL).unwrap());
        }
    }
    for h in holes {
        k.free_vmap_area(h).unwrap();
    }
    let (free, _) = k.vmap_free_areas();
    assert_eq!(
        free,
        boot_free + busy - 1,
        "a hole between each two busy areas"
    );
    held
}

/// What the bench measures: `alloc_vmap_area()` + `free_vmap_area()` of
/// one two-page area.
#[inline]
pub fn pair<P: Platform>(k: &Kmem<P>) {
    let a = k
        .alloc_vmap_area(2 * PAGE_SIZE, PAGE_SIZE, GFP_KERNEL)
        .unwrap();
    k.free_vmap_area(black_box(a)).unwrap();
}

/// Free what [`busy_with_holes`] left busy.
pub fn free_all<P: Platform>(k: &Kmem<P>, held: Vec<usize>) {
    for a in held {
        k.free_vmap_area(a).unwrap();
    }
}
