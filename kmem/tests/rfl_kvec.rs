//! Rust-for-Linux's KUnit test of `kernel::alloc::kvec` (`rust_kvec`) and
//! its `KVec` examples, re-expressed on kmem's kmalloc over the arena
//! platform: the same behaviour, with a machine booted and the `Kmalloc`
//! handle passed where Rust-for-Linux names the allocator by its type.

use kmem::alloc::flags::GFP_KERNEL;
use kmem::alloc::kvec::InsertError;
use kmem::alloc::{KVec, Kmalloc};
use kmem::arena::ArenaPlatform;
use kmem::Kmem;

const MEM: usize = 16 << 20;

fn with_machine(f: impl FnOnce(&Kmem<ArenaPlatform<'_>>)) {
    let mut mem = vec![0u8; MEM];
    let k = Kmem::boot_arena(&mut mem, 1).expect("boot");
    f(&k);
}

/// `test_kvec_retain`: `retain` against a reference filter, for every
/// predicate over up to nine elements (every bit pattern of every length
/// below ten, counted up as a binary number).
#[test]
fn kvec_retain_every_predicate_below_ten() {
    with_machine(|k| {
        let a = Kmalloc::new(k);
        let check = |keep: &[bool]| {
            let mut all: KVec<usize, _> = KVec::with_capacity(keep.len(), a, GFP_KERNEL).unwrap();
            let mut want: KVec<usize, _> = KVec::with_capacity(keep.len(), a, GFP_KERNEL).unwrap();
            for (i, &kept) in keep.iter().enumerate() {
                all.push_within_capacity(i).unwrap();
                if kept {
                    want.push_within_capacity(i).unwrap();
                }
            }
            all.retain(|i| keep[*i]);
            assert_eq!(all, want, "{keep:?}");
        };
        // Adds one to the little-endian binary number `bits`.
        let increment = |bits: &mut [bool]| {
            for b in bits {
                *b = !*b;
                if *b {
                    break;
                }
            }
        };
        let mut keep: KVec<bool, _> = KVec::with_capacity(10, a, GFP_KERNEL).unwrap();
        let mut checked = 0;
        for len in 0..10 {
            for _ in 0..1u32 << len {
                check(&keep);
                increment(&mut keep);
                checked += 1;
            }
            assert!(keep.iter().all(|b| !b), "wrapped around");
            keep.push_within_capacity(false).unwrap();
        }
        assert_eq!(checked, (1 << 10) - 1);
    });
}

/// The examples of Rust-for-Linux's `Vec` methods, on kmalloc.
#[test]
fn kvec_examples_on_kmalloc() -> Result<(), kmem::Error> {
    let mut mem = vec![0u8; MEM];
    let k = Kmem::boot_arena(&mut mem, 1).expect("boot");
    let a = Kmalloc::new(&k);

    // `kvec!`
    let mut v = kmem::kvec![in a];
    v.push(1, GFP_KERNEL)?;
    assert_eq!(v, [1]);
    let mut v = kmem::kvec![in a; 1; 3]?;
    v.push(4, GFP_KERNEL)?;
    assert_eq!(v, [1, 1, 1, 4]);
    let mut v = kmem::kvec![in a; 1, 2, 3]?;
    v.push(4, GFP_KERNEL)?;
    assert_eq!(v, [1, 2, 3, 4]);

    // `KVec<T>`, `push`, `is_empty`, `as_slice`, `pop`
    let mut v = KVec::new(a);
    assert!(v.is_empty());
    v.push(1, GFP_KERNEL)?;
    assert!(!v.is_empty());
    assert_eq!(&v, &[1]);
    v.push(2, GFP_KERNEL)?;
    assert_eq!(v.as_slice(), &[1, 2]);
    assert_eq!(v.pop(), Some(2));
    assert_eq!(v.pop(), Some(1));
    assert_eq!(v.pop(), None);

    // `push_within_capacity`, `insert_within_capacity`, `with_capacity`
    let mut v = KVec::with_capacity(10, a, GFP_KERNEL)?;
    for i in 0..10 {
        v.push_within_capacity(i)?;
    }
    assert!(v.push_within_capacity(10).is_err());
    let mut v = KVec::with_capacity(5, a, GFP_KERNEL)?;
    for i in 0..5 {
        v.insert_within_capacity(0, i)?;
    }
    assert!(matches!(
        v.insert_within_capacity(0, 5),
        Err(InsertError::OutOfCapacity(_))
    ));
    assert!(matches!(
        v.insert_within_capacity(1000, 5),
        Err(InsertError::IndexOutOfBounds(_))
    ));
    assert_eq!(v, [4, 3, 2, 1, 0]);
    let v = KVec::<u32, _>::with_capacity(20, a, GFP_KERNEL)?;
    assert!(v.capacity() >= 20);

    // `remove`, `truncate`, `clear`, `resize`, `retain`, `extend_from_slice`
    let mut v = kmem::kvec![in a; 1, 2, 3]?;
    assert_eq!(v.remove(1)?, 2);
    assert_eq!(v, [1, 3]);
    let mut v = kmem::kvec![in a; 1, 2, 3]?;
    v.truncate(1);
    assert_eq!((v.len(), &v[..]), (1, &[1][..]));
    v.clear();
    assert!(v.is_empty());
    let mut v = kmem::kvec![in a; 1, 2, 3]?;
    v.resize(1, 42, GFP_KERNEL)?;
    assert_eq!(&v, &[1]);
    v.resize(3, 42, GFP_KERNEL)?;
    assert_eq!(&v, &[1, 42, 42]);
    let mut v = kmem::kvec![in a; 1, 2, 3, 4]?;
    v.retain(|i| *i % 2 == 0);
    assert_eq!(v, [2, 4]);
    let mut v = KVec::new(a);
    v.push(1, GFP_KERNEL)?;
    v.extend_from_slice(&[20, 30, 40], GFP_KERNEL)?;
    assert_eq!(&v, &[1, 20, 30, 40]);
    v.extend_from_slice(&[50, 60], GFP_KERNEL)?;
    assert_eq!(&v, &[1, 20, 30, 40, 50, 60]);

    // `reserve`
    let mut v = KVec::new(a);
    v.push(1, GFP_KERNEL)?;
    v.reserve(10, GFP_KERNEL)?;
    let cap = v.capacity();
    assert!(cap >= 10);
    v.reserve(10, GFP_KERNEL)?;
    assert_eq!(v.capacity(), cap);

    // `into_raw_parts` and `from_raw_parts`
    let mut v = kmem::kvec![in a; 1, 2, 3]?;
    v.reserve(1, GFP_KERNEL)?;
    let (ptr, mut len, cap) = v.into_raw_parts();
    // SAFETY: `reserve` made room for a fourth element.
    unsafe { ptr.add(len).write(4) };
    len += 1;
    // SAFETY: the parts `into_raw_parts` gave, with one more element.
    let v = unsafe { KVec::from_raw_parts(ptr, len, cap, a) };
    assert_eq!(v, [1, 2, 3, 4]);

    // `drain_all`, `into_iter`, `IntoIter::collect`, `size_hint`
    let mut v = kmem::kvec![in a; 0, 1, 2, 3]?;
    for (i, j) in v.drain_all().enumerate() {
        assert_eq!(i, j);
    }
    assert!(v.capacity() >= 4);
    let v = kmem::kvec![in a; 1, 2]?;
    let mut v_iter = v.into_iter();
    let first_element: Option<u32> = v_iter.next();
    assert_eq!(first_element, Some(1));
    assert_eq!(v_iter.next(), Some(2));
    assert_eq!(v_iter.next(), None);
    let v = kmem::kvec![in a; 1, 2, 3]?;
    let mut it = v.into_iter();
    assert_eq!(it.next(), Some(1));
    let v = it.collect(GFP_KERNEL);
    assert_eq!(v, [2, 3]);
    let v: KVec<u32, _> = kmem::kvec![in a; 1, 2, 3]?;
    let mut iter = v.into_iter();
    let size = iter.size_hint().0;
    iter.next();
    assert_eq!(iter.size_hint().0, size - 1);

    // Nothing is left behind in kmalloc.
    drop(iter);
    Ok(())
}

/// `shrink_to` on kmalloc: `krealloc` keeps a block that is shrunk in
/// place, as Linux's does, so a buffer that would need fewer pages moves to
/// a smaller one instead; within the same pages it stays where it is.
#[test]
fn kvec_shrink_to_on_kmalloc() {
    with_machine(|k| {
        let a = Kmalloc::new(k);
        let mut v = KVec::<u64, _>::with_capacity(1024, a, GFP_KERNEL).unwrap();
        v.extend_from_slice(&[1, 2, 3], GFP_KERNEL).unwrap();
        assert_eq!(k.ksize(v.as_ptr().cast()), 8192);
        v.shrink_to(256, GFP_KERNEL).unwrap();
        assert_eq!(v.capacity(), 256);
        assert_eq!(k.ksize(v.as_ptr().cast()), 2048);
        let p = v.as_ptr();
        v.shrink_to(8, GFP_KERNEL).unwrap();
        assert_eq!(
            (v.capacity(), v.as_ptr()),
            (8, p),
            "same page: kept in place"
        );
        assert_eq!(v, [1, 2, 3]);
        v.clear();
        v.shrink_to(0, GFP_KERNEL).unwrap();
        assert_eq!(v.capacity(), 0);
    });
}

/// `Allocator::realloc` to a stricter alignment on kmalloc and kvmalloc:
/// `krealloc` keeps an object that is big enough where it is, whatever its
/// alignment (a kmalloc-96 object is only 32-byte aligned), so the
/// allocator must move a block that does not meet the new layout's
/// alignment, as Linux's `krealloc_node_align` does.
#[test]
fn realloc_to_a_stricter_alignment_moves_a_misaligned_block() {
    use core::alloc::Layout;
    use kmem::alloc::{Allocator, KVmalloc, NumaNode};

    fn check(a: impl Allocator) {
        let old = Layout::from_size_align(96, 8).unwrap();
        let new = Layout::from_size_align(64, 64).unwrap();
        // kmalloc-96 objects sit 96 bytes apart: among a few, one is not
        // 64-byte aligned.
        let mut blocks = Vec::new();
        let p = loop {
            let p = a
                .alloc(old, GFP_KERNEL, NumaNode::NO_NODE)
                .unwrap()
                .cast::<u8>();
            if p.as_ptr().addr() % 64 != 0 {
                break p;
            }
            blocks.push(p);
            assert!(blocks.len() < 8, "no misaligned kmalloc-96 object");
        };
        // SAFETY: `p` is a live block of 96 bytes.
        unsafe { p.as_ptr().write_bytes(0x5a, 96) };
        // SAFETY: `p` is a live block of `old` from `a`, replaced by the result.
        let q = unsafe { a.realloc(Some(p), new, old, GFP_KERNEL, NumaNode::NO_NODE) }.unwrap();
        let q = q.cast::<u8>();
        assert_eq!(q.as_ptr().addr() % 64, 0);
        // SAFETY: `q` is a live block of at least 64 bytes.
        assert!(unsafe { core::slice::from_raw_parts(q.as_ptr(), 64) }
            .iter()
            .all(|&b| b == 0x5a));
        // SAFETY: every block is live and of its layout.
        unsafe {
            a.free(q, new);
            for b in blocks {
                a.free(b, old);
            }
        }
    }

    with_machine(|k| {
        check(Kmalloc::new(k));
        check(KVmalloc::new(k));
    });
}
