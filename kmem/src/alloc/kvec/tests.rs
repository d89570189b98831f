//! Unit tests of [`KVec`](super::KVec) on the counting test allocator of
//! `alloc/tests.rs` (no machine: they also run under Miri).

use core::cell::Cell;
use core::mem::MaybeUninit;

use crate::alloc::flags::{__GFP_ZERO, GFP_KERNEL};
use crate::alloc::tests::{counted, Counted, Counting};
use crate::alloc::*;
use crate::Error;

#[test]
fn kvec_growth_doubles_and_keeps_contents() {
    let a = Counting::new();
    let mut v = KVec::new(&a);
    assert_eq!((v.len(), v.capacity(), a.calls.get()), (0, 0, 0));
    let mut caps = std::vec::Vec::new();
    for i in 0..17u32 {
        v.push(i, GFP_KERNEL).unwrap();
        caps.push(v.capacity());
    }
    assert_eq!(&caps[..6], &[1, 2, 4, 4, 8, 8]);
    assert_eq!(v.capacity(), 32);
    assert!(v.iter().copied().eq(0..17));
    assert_eq!(a.live(), 1);
    // One allocation per doubling: 1, 2, 4, 8, 16, 32.
    assert_eq!(a.calls.get(), 6);
    drop(v);
    assert_eq!(a.live(), 0);
}

#[test]
fn kvec_reserve_takes_the_larger_of_double_and_needed() {
    let a = Counting::new();
    let mut v = KVec::<u8, _>::with_capacity(4, &a, GFP_KERNEL).unwrap();
    assert_eq!(v.capacity(), 4);
    v.extend_from_slice(&[1; 4], GFP_KERNEL).unwrap();
    v.reserve(20, GFP_KERNEL).unwrap();
    assert_eq!(v.capacity(), 24);
    v.reserve(1, GFP_KERNEL).unwrap();
    assert_eq!(v.capacity(), 24);
}

#[test]
fn kvec_capacity_overflow_is_an_error() {
    let a = Counting::new();
    assert_eq!(
        KVec::<u32, _>::with_capacity(usize::MAX, &a, GFP_KERNEL).err(),
        Some(AllocError)
    );
    // isize::MAX / 4 + 1 `u32`s exceed isize::MAX bytes.
    assert!(KVec::<u32, _>::with_capacity(isize::MAX as usize / 4 + 1, &a, GFP_KERNEL).is_err());
    let mut v = KVec::new(&a);
    v.extend_from_slice(&[1u64, 2, 3], GFP_KERNEL).unwrap();
    // `len + additional` overflows usize.
    assert_eq!(v.reserve(usize::MAX, GFP_KERNEL), Err(AllocError));
    assert_eq!(v.reserve(usize::MAX - 2, GFP_KERNEL), Err(AllocError));
    assert_eq!(v, [1, 2, 3]);
    assert_eq!(v.capacity(), 3);
    assert_eq!(a.live(), 1);
    drop(v);
    // Nothing was allocated by the failed requests (they never reach the
    // allocator).
    assert_eq!(a.live(), 0);
}

#[test]
fn kvec_first_push_failure_leaves_it_empty() {
    let a = Counting::new();
    a.limit.set(0);
    let mut v = KVec::<u8, _>::new(&a);
    assert!(v.push(1, GFP_KERNEL).is_err());
    assert_eq!((v.len(), v.capacity(), a.live()), (0, 0, 0));
}

#[test]
fn kvec_huge_push_fails_cleanly() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::new(&a);
    for i in 0..4 {
        v.push(counted(&drops, i), GFP_KERNEL).unwrap();
    }
    // The allocator refuses anything above the current buffer.
    a.limit
        .set(v.capacity() * core::mem::size_of::<Counted<'_>>());
    let err = v.push(counted(&drops, 99), GFP_KERNEL);
    assert_eq!(err, Err(AllocError));
    // The rejected value was dropped, the vector is intact.
    assert_eq!(drops.get(), 1);
    assert_eq!(v.len(), 4);
    assert!(v.iter().map(|c| c.id).eq(0..4));
    assert_eq!(
        v.push_within_capacity(counted(&drops, 4))
            .map_err(|e| e.0.id),
        Err(4)
    );
    assert_eq!(drops.get(), 2);
    drop(v);
    assert_eq!((drops.get(), a.live()), (6, 0));
}

#[test]
fn kvec_zst() {
    let a = Counting::new();
    let mut v = KVec::new(&a);
    for _ in 0..1000 {
        v.push((), GFP_KERNEL).unwrap();
    }
    assert_eq!((v.len(), v.capacity()), (1000, usize::MAX));
    assert_eq!(v.reserve(usize::MAX, GFP_KERNEL), Err(AllocError));
    assert_eq!(v.pop(), Some(()));
    assert_eq!(v.remove(0), Ok(()));
    v.shrink_to_fit(GFP_KERNEL).unwrap();
    let n = v.into_iter().count();
    assert_eq!(n, 998);
    assert_eq!(a.calls.get(), 0);
}

#[test]
fn kvec_element_drops_exactly_once() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::new(&a);
    for i in 0..10 {
        v.push(counted(&drops, i), GFP_KERNEL).unwrap();
    }
    let last = v.pop().unwrap();
    assert_eq!((last.id, drops.get()), (9, 0));
    drop(last);
    assert_eq!(drops.get(), 1);

    let second = v.remove(1).unwrap();
    assert_eq!(second.id, 1);
    assert_eq!(v.remove(8).err(), Some(RemoveError));
    drop(second);
    assert_eq!(drops.get(), 2);
    assert!(v.iter().map(|c| c.id).eq([0, 2, 3, 4, 5, 6, 7, 8]));

    v.truncate(5);
    assert_eq!(drops.get(), 5);
    v.truncate(7);
    assert_eq!(drops.get(), 5);
    v.clear();
    assert_eq!(drops.get(), 10);
    assert!(v.is_empty());
    assert_eq!(a.live(), 1);
    drop(v);
    assert_eq!((drops.get(), a.live()), (10, 0));
}

#[test]
fn kvec_extend_resize_slices() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::new(&a);
    v.extend_from_slice(&[counted(&drops, 1), counted(&drops, 2)], GFP_KERNEL)
        .unwrap();
    // The two temporaries of the slice literal are gone.
    assert_eq!(drops.get(), 2);
    v.resize(5, counted(&drops, 7), GFP_KERNEL).unwrap();
    assert_eq!(drops.get(), 2);
    assert!(v.as_slice().iter().map(|c| c.id).eq([1, 2, 7, 7, 7]));
    v.as_mut_slice()[0].id = 0;
    v.resize(1, counted(&drops, 8), GFP_KERNEL).unwrap();
    assert_eq!(drops.get(), 2 + 4 + 1);
    assert_eq!(v[0].id, 0);
    drop(v);
    assert_eq!((drops.get(), a.live()), (8, 0));

    let mut w = KVec::new(&a);
    w.extend_with(3, 5u8, GFP_KERNEL).unwrap();
    w.extend_with(0, 6u8, GFP_KERNEL).unwrap();
    assert_eq!(w, [5, 5, 5]);
    assert_eq!(w, &[5u8, 5, 5][..]);
    assert_eq!(std::format!("{w:?}"), "[5, 5, 5]");
}

#[test]
fn kvec_shrink_to_fit_reallocates_smaller() {
    let a = Counting::new();
    let mut v = KVec::with_capacity(64, &a, GFP_KERNEL).unwrap();
    v.extend_from_slice(&[1u16, 2, 3], GFP_KERNEL).unwrap();
    v.shrink_to_fit(GFP_KERNEL).unwrap();
    assert_eq!(v.capacity(), 3);
    assert_eq!(v, [1, 2, 3]);
    v.clear();
    v.shrink_to_fit(GFP_KERNEL).unwrap();
    assert_eq!((v.capacity(), a.live()), (0, 0));
    v.push(4, GFP_KERNEL).unwrap();
    assert_eq!(v, [4]);
}

#[test]
fn kvec_spare_capacity_and_set_len() {
    let a = Counting::new();
    let mut v = KVec::<u32, _>::with_capacity(4, &a, GFP_KERNEL | __GFP_ZERO).unwrap();
    for (i, slot) in v.spare_capacity_mut().iter_mut().enumerate() {
        slot.write(i as u32 * 10);
    }
    // SAFETY: all four slots were just written.
    unsafe { v.set_len(4) };
    assert_eq!(v, [0, 10, 20, 30]);
    let _: &mut [MaybeUninit<u32>] = v.spare_capacity_mut();
}

#[test]
fn kvec_into_iter_drops_the_rest_and_frees() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::new(&a);
    for i in 0..6 {
        v.push(counted(&drops, i), GFP_KERNEL).unwrap();
    }
    let mut it = v.into_iter();
    assert_eq!(it.len(), 6);
    assert_eq!(it.next().map(|c| c.id), Some(0));
    assert_eq!(it.next_back().map(|c| c.id), Some(5));
    assert_eq!(drops.get(), 2);
    drop(it);
    assert_eq!((drops.get(), a.live()), (6, 0));

    let mut v = KVec::new(&a);
    v.extend_from_slice(&[1u8, 2, 3], GFP_KERNEL).unwrap();
    let mut sum = 0;
    for x in &mut v {
        *x += 1;
    }
    for x in &v {
        sum += *x;
    }
    assert_eq!(sum, 9);
    assert!(v.into_iter().eq([2, 3, 4]));
    assert_eq!(a.live(), 0);
}

#[test]
fn kvec_retain_keeps_order_and_drops_the_rest_once() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::new(&a);
    for i in 0..6 {
        v.push(counted(&drops, i), GFP_KERNEL).unwrap();
    }
    let cap = v.capacity();
    let mut seen = std::vec::Vec::new();
    v.retain(|c| {
        seen.push(c.id);
        c.id % 2 == 0
    });
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    assert!(v.iter().map(|c| c.id).eq([0, 2, 4]));
    assert_eq!((drops.get(), v.capacity()), (3, cap));
    v.retain(|_| false);
    assert_eq!((drops.get(), v.len()), (6, 0));
}

#[test]
fn kvec_retain_keeps_every_element_once_when_the_predicate_panics() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::new(&a);
    for i in 0..4 {
        v.push(counted(&drops, i), GFP_KERNEL).unwrap();
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.retain(|c| {
            assert!(c.id != 2, "predicate panics");
            c.id != 1
        })
    }));
    assert!(r.is_err());
    let mut ids: std::vec::Vec<u32> = v.iter().map(|c| c.id).collect();
    ids.sort();
    assert_eq!((ids, drops.get()), (std::vec![0, 1, 2, 3], 0));
    drop(v);
    assert_eq!((drops.get(), a.live()), (4, 0));
}

#[test]
fn kvec_drain_all_owns_the_elements_not_the_buffer() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::new(&a);
    for i in 0..5 {
        v.push(counted(&drops, i), GFP_KERNEL).unwrap();
    }
    let mut d = v.drain_all();
    assert_eq!(d.len(), 5);
    assert_eq!(d.next().map(|c| c.id), Some(0));
    assert_eq!(d.next_back().map(|c| c.id), Some(4));
    assert_eq!(drops.get(), 2);
    drop(d);
    assert_eq!(drops.get(), 5);
    assert!(v.is_empty() && v.capacity() >= 5 && a.live() == 1);
    // A leaked iterator leaks its elements; the vector stays empty.
    v.push(counted(&drops, 9), GFP_KERNEL).unwrap();
    core::mem::forget(v.drain_all());
    drop(v);
    assert_eq!((drops.get(), a.live()), (5, 0));
}

#[test]
fn kvec_into_iter_collect_reuses_the_buffer() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::with_capacity(5, &a, GFP_KERNEL).unwrap();
    for i in 0..5 {
        v.push(counted(&drops, i), GFP_KERNEL).unwrap();
    }
    let mut it = v.into_iter();
    drop(it.next());
    drop(it.next_back());
    let v = it.collect(GFP_KERNEL);
    // Advanced from the front: moved down and shrunk to fit.
    assert!(v.iter().map(|c| c.id).eq([1, 2, 3]));
    assert_eq!((v.capacity(), drops.get(), a.live()), (3, 2, 1));
    let mut it = v.into_iter();
    drop(it.next_back());
    let v = it.collect(GFP_KERNEL);
    // Only the back was taken: the buffer is kept as it is.
    assert!(v.iter().map(|c| c.id).eq([1, 2]));
    assert_eq!(v.capacity(), 3);
    let mut it = v.into_iter();
    drop((it.next(), it.next()));
    let v = it.collect(GFP_KERNEL);
    assert_eq!((v.len(), v.capacity(), a.live(), drops.get()), (0, 0, 0, 5));
    let z = KVec::from_elem((), 3, &a, GFP_KERNEL).unwrap().into_iter();
    assert_eq!(z.skip(1).collect::<std::vec::Vec<()>>().len(), 2);
}

#[test]
fn kvec_insert_within_capacity_hands_the_value_back() {
    let a = Counting::new();
    let drops = Cell::new(0);
    let mut v = KVec::with_capacity(2, &a, GFP_KERNEL).unwrap();
    v.insert_within_capacity(0, counted(&drops, 1)).unwrap();
    v.insert_within_capacity(1, counted(&drops, 2)).unwrap();
    let e = v.insert_within_capacity(3, counted(&drops, 3)).unwrap_err();
    assert!(matches!(&e, kvec::InsertError::IndexOutOfBounds(c) if c.id == 3));
    let e = v.insert_within_capacity(1, e.into_inner()).unwrap_err();
    assert!(matches!(&e, kvec::InsertError::OutOfCapacity(c) if c.id == 3));
    assert_eq!(drops.get(), 0);
    drop(e);
    assert_eq!(
        Error::from(kvec::InsertError::OutOfCapacity(())),
        Error::InvalidArgument
    );
    assert!(v.iter().map(|c| c.id).eq([1, 2]));
}

#[test]
fn kvec_raw_parts_and_boxed_arrays_round_trip() {
    let a = Counting::new();
    let v = crate::kvec![in &a; 1u32, 2, 3].unwrap();
    assert_eq!((v.capacity(), a.live()), (3, 1));
    let (p, len, cap, h) = v.into_raw_parts_with_alloc();
    // SAFETY: the parts and handle `into_raw_parts_with_alloc` gave.
    let v = unsafe { KVec::from_raw_parts(p, len, cap, h) };
    assert_eq!(v, [1, 2, 3]);
    let z: KVec<(), _> = KVec::from(KBox::new([(); 4], &a, GFP_KERNEL).unwrap());
    assert_eq!((z.len(), z.capacity()), (4, usize::MAX));
    let (p, len, cap) = z.into_raw_parts();
    // SAFETY: as above; a zero-sized element needs no block.
    let z = unsafe { KVec::from_raw_parts(p, len, cap, &a) };
    assert_eq!(z.len(), 4);
    let e: KVec<u8, _> = KVec::from(KBox::new([], &a, GFP_KERNEL).unwrap());
    assert_eq!((e.capacity(), crate::kvec![in &a; 0u8; 0].unwrap()), (0, e));
    drop(v);
    assert_eq!(a.live(), 0);
}

#[test]
fn kvec_zeroed_is_one_zeroed_block() {
    let a = Counting::new();
    let v = KVec::<u32, _>::zeroed(5, &a, GFP_KERNEL).unwrap();
    assert_eq!((v.capacity(), &v[..], a.calls.get()), (5, &[0; 5][..], 1));
    let z = KVec::<(), _>::zeroed(7, &a, GFP_KERNEL).unwrap();
    assert_eq!((z.len(), a.calls.get()), (7, 1));
    assert!(KVec::<u8, _>::zeroed(0, &a, GFP_KERNEL).unwrap().is_empty());
}

#[test]
fn kvec_shrink_to_keeps_the_larger_of_len_and_min() {
    let a = Counting::new();
    let mut v = KVec::with_capacity(16, &a, GFP_KERNEL).unwrap();
    v.extend_from_slice(&[1u64, 2, 3], GFP_KERNEL).unwrap();
    let calls = a.calls.get();
    v.shrink_to(32, GFP_KERNEL).unwrap();
    assert_eq!((v.capacity(), a.calls.get()), (16, calls));
    v.shrink_to(5, GFP_KERNEL).unwrap();
    assert_eq!(v.capacity(), 5);
    v.shrink_to(1, GFP_KERNEL).unwrap();
    assert_eq!((v.capacity(), &v[..]), (3, &[1, 2, 3][..]));
    // Fewer pages: moved to a new buffer (one allocation, one free).
    let mut w = KVec::with_capacity(3 * crate::PAGE_SIZE, &a, GFP_KERNEL).unwrap();
    w.extend_from_slice(&[7u8; 10], GFP_KERNEL).unwrap();
    let calls = a.calls.get();
    w.shrink_to(0, GFP_KERNEL).unwrap();
    assert_eq!((w.capacity(), &w[..], a.live()), (10, &[7; 10][..], 2));
    assert_eq!(a.calls.get(), calls + 2);
}

#[test]
fn kvec_equalities_in_every_direction() {
    let a = Counting::new();
    let mut v = crate::kvec![in &a; 1u8, 2].unwrap();
    let w = crate::kvec![in &a; 1u8, 2].unwrap();
    let mut arr = [1u8, 2];
    // Each line uses one of the impls (`assert_eq!` compares `*l == *r`).
    assert_eq!(v, w);
    assert_eq!(v, arr);
    assert_eq!(v, &arr);
    assert_eq!(v, arr[..]);
    assert_eq!(v, &arr[..]);
    assert_eq!(v, &mut arr[..]);
    assert_eq!(arr[..], v);
    assert_eq!(&arr[..], v);
    assert_eq!(&mut arr[..], v);
    v[1] = 3;
    assert!(v != w && v[..1] == [1] && v != arr);
    let d: KVec<u8, Counting> = KVec::default();
    assert!(d.is_empty() && d.allocator().live() == 0);
}
