//! Tests of [`pin_scope`](super::pin_scope) over the counting test
//! allocator (Miri-clean); the aborts are in `kmem/tests/pin_scope.rs`,
//! where a child process can die of them.

use core::alloc::Layout;
use core::cell::Cell;

use super::super::flags::GFP_KERNEL;
use super::super::tests::{counted, Counted, Counting};
use super::super::{dangling, AllocError, Allocator, KBox, KVec, NumaNode};
use super::{pin_scope, Scoped};
use crate::Error;

#[test]
fn a_pin_scope_counts_every_realloc_case() {
    let a = Counting::new();
    a.limit.set(256);
    let l = |n: usize| Layout::from_size_align(n, 8).unwrap();
    pin_scope(&a, |s| {
        // SAFETY: each call passes a block of `s` with the layout it was
        // allocated or last resized with, or `None`/a zero-sized old layout.
        unsafe {
            let p = s
                .realloc(None, l(16), l(0), GFP_KERNEL, NumaNode::NO_NODE)
                .unwrap();
            assert_eq!(s.live(), 1, "a new block");
            // `Counting` moves every resize: grown and shrunk, one block.
            let p = s.realloc(Some(p.cast()), l(64), l(16), GFP_KERNEL, NumaNode::NO_NODE);
            let p = p.unwrap();
            assert_eq!(s.live(), 1, "grown");
            let p = s.realloc(Some(p.cast()), l(8), l(64), GFP_KERNEL, NumaNode::NO_NODE);
            let p = p.unwrap();
            assert_eq!(s.live(), 1, "shrunk");
            // A failed grow leaves the block, and the count, as they were.
            let e = s.realloc(Some(p.cast()), l(512), l(8), GFP_KERNEL, NumaNode::NO_NODE);
            assert_eq!((e.err(), s.live()), (Some(AllocError), 1));
            // A zero-sized old layout is no block: this allocates one.
            let q = s.realloc(
                Some(dangling(l(0))),
                l(8),
                l(0),
                GFP_KERNEL,
                NumaNode::NO_NODE,
            );
            let q = q.unwrap();
            assert_eq!(s.live(), 2);
            // Zero-sized new and old: nothing allocated, nothing freed.
            s.realloc(None, l(0), l(0), GFP_KERNEL, NumaNode::NO_NODE)
                .unwrap();
            assert_eq!(s.live(), 2);
            s.free(p.cast(), l(8));
            s.free(q.cast(), l(8));
            assert_eq!((s.live(), a.live()), (0, 0), "freed");
            // A failed allocation counts nothing.
            let e = s.realloc(None, l(1024), l(0), GFP_KERNEL, NumaNode::NO_NODE);
            assert_eq!((e.err(), s.live()), (Some(AllocError), 0));
        }
        // Through the containers: a vector's failed growth, and a slice whose
        // initialiser fails part-way, leave nothing counted.
        let mut v = KVec::new(s);
        v.push(1u64, GFP_KERNEL).unwrap();
        assert!(v.reserve(1000, GFP_KERNEL).is_err());
        assert_eq!(s.live(), 1);
        drop(v);
        let r = s.pin_slice::<u64, _, _, _>(
            |i| if i < 2 { Ok(i as u64) } else { Err(AllocError) },
            4,
            GFP_KERNEL,
        );
        assert_eq!((r.err(), s.live()), (Some(AllocError), 0));
    });
}

#[test]
fn a_pin_scope_pins_with_a_borrowed_handle_and_counts_its_blocks() {
    // `a` is a local: its handle `&a` is not `'static`.
    let a = Counting::new();
    let drops = Cell::new(0);
    let ids = pin_scope(&a, |s| {
        let p = s.pin(counted(&drops, 1), GFP_KERNEL).unwrap();
        let q = Scoped::into_pin(KBox::new(counted(&drops, 2), s, GFP_KERNEL).unwrap());
        let r = s
            .try_pin_init(
                // SAFETY: the initialiser writes the whole slot and succeeds.
                unsafe {
                    pinned_init::pin_init_from_closure(|slot: *mut Counted<'_>| {
                        slot.write(counted(&drops, 3));
                        Ok::<_, AllocError>(())
                    })
                },
                GFP_KERNEL,
            )
            .unwrap();
        let sl = s
            .pin_slice::<Counted<'_>, _, _, _>(
                |i| Ok::<_, AllocError>(counted(&drops, 10 + i as u32)),
                3,
                GFP_KERNEL,
            )
            .unwrap();
        // A vector through the scope is counted once, however it grows.
        let mut v = KVec::new(s);
        for i in 0..100u32 {
            v.push(i, GFP_KERNEL).unwrap();
        }
        assert_eq!((s.live(), a.live()), (5, 5));
        let ids = [p.id, q.id, r.id, sl[2].id];
        drop((p, q, r, sl, v));
        assert_eq!((s.live(), a.live(), drops.get()), (0, 0, 6));
        ids
    });
    assert_eq!(ids, [1, 2, 3, 12]);
}

#[test]
fn a_pin_scope_counts_nothing_for_failures_and_zero_sized_values() {
    let a = Counting::new();
    a.limit.set(64);
    pin_scope(&a, |s| {
        // A refused allocation and a failing initialiser leave nothing.
        assert_eq!(s.pin([0u8; 128], GFP_KERNEL).err(), Some(AllocError));
        let e = s.try_pin_init(
            // SAFETY: the initialiser fails without writing its slot.
            unsafe { pinned_init::pin_init_from_closure(|_: *mut u64| Err(AllocError)) },
            GFP_KERNEL,
        );
        assert_eq!(e.err(), Some(AllocError));
        assert_eq!(
            s.pin_init(
                // SAFETY: as above.
                unsafe {
                    pinned_init::pin_init_from_closure(|_: *mut u64| Err(Error::InvalidArgument))
                },
                GFP_KERNEL
            )
            .err(),
            Some(Error::InvalidArgument)
        );
        // A zero-sized value has no block to count.
        let z = s.pin(core::marker::PhantomPinned, GFP_KERNEL).unwrap();
        assert_eq!((s.live(), a.live()), (0, 0));
        drop(z);
    });
}

#[test]
fn a_pin_scope_checks_its_count_when_the_closure_unwinds() {
    let a = Counting::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pin_scope(&a, |s| {
            let _p = s.pin(5u64, GFP_KERNEL).unwrap();
            panic!("inside the scope");
        })
    }));
    // The box was dropped while unwinding, so the scope's end passed.
    assert!(r.is_err());
    assert_eq!(a.live(), 0);
}
