//! A pin scope ends the program when a block allocated through it outlives
//! it: the leaked box's memory must not be reused while the pinned value in
//! it was never dropped. The abort runs in a child process (this test
//! binary again), which the parent watches.
#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use kmem::alloc::{flags::GFP_KERNEL, pin_scope, KBox, KVec, Kmalloc};

/// Set in the child: the name of the test that should abort.
const CHILD: &str = "KMEM_PIN_SCOPE_CHILD";

/// In the child: `true`, and the caller leaks. In the parent: runs the test
/// `name` as a child and returns its stderr and the signal that ended it.
fn in_child(name: &str) -> Result<(), (String, Option<i32>)> {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return Ok(());
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .expect("running the test binary again");
    Err((
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.signal(),
    ))
}

fn assert_aborted(r: Result<(), (String, Option<i32>)>, blocks: usize) {
    assert_aborted_with(
        r,
        &format!("kmem: pin scope ended with {blocks} block(s) still allocated"),
    );
}

fn assert_aborted_with(r: Result<(), (String, Option<i32>)>, message: &str) {
    let (stderr, signal) = r.expect_err("the parent's side");
    assert_eq!(signal, Some(SIGABRT), "stderr: {stderr}");
    assert!(stderr.contains(message), "stderr: {stderr}");
}

/// SIGABRT, the same on every Linux architecture.
const SIGABRT: i32 = 6;

#[test]
fn a_pinned_box_leaked_in_a_scope_aborts_at_its_end() {
    let r = in_child("a_pinned_box_leaked_in_a_scope_aborts_at_its_end");
    if r.is_ok() {
        let mut mem = vec![0u8; 16 << 20];
        let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
        pin_scope(Kmalloc::new(&k), |s| {
            let p = s.pin([7u64; 4], GFP_KERNEL).unwrap();
            core::mem::forget(p);
        });
        unreachable!("the scope ended with a leaked pinned box");
    }
    assert_aborted(r, 1);
}

#[test]
fn any_block_of_the_scope_leaked_aborts_even_while_unwinding() {
    let r = in_child("any_block_of_the_scope_leaked_aborts_even_while_unwinding");
    if r.is_ok() {
        let mut mem = vec![0u8; 16 << 20];
        let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pin_scope(Kmalloc::new(&k), |s| {
                let mut v = KVec::new(s);
                v.push(1u32, GFP_KERNEL).unwrap();
                core::mem::forget(v);
                core::mem::forget(KBox::new(2u8, s, GFP_KERNEL).unwrap());
                panic!("leaving the scope by unwinding");
            })
        }));
        unreachable!("the scope ended with leaked blocks");
    }
    assert_aborted(r, 2);
}

#[test]
fn a_scope_whose_boxes_all_dropped_ends_normally() {
    let mut mem = vec![0u8; 16 << 20];
    let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    let sum = pin_scope(Kmalloc::new(&k), |s| {
        let boxes: Vec<_> = (0..64u64).map(|i| s.pin(i, GFP_KERNEL).unwrap()).collect();
        assert_eq!(s.live(), 64);
        boxes.iter().map(|b| **b).sum::<u64>()
    });
    assert_eq!(sum, 63 * 64 / 2);
}

#[test]
fn a_free_through_the_scope_of_a_block_it_never_counted_aborts() {
    let r = in_child("a_free_through_the_scope_of_a_block_it_never_counted_aborts");
    if r.is_ok() {
        let mut mem = vec![0u8; 16 << 20];
        let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
        let km = Kmalloc::new(&k);
        let raw = KBox::into_raw(KBox::new(5u64, km, GFP_KERNEL).unwrap());
        pin_scope(km, |s| {
            // Against `Scoped`'s contract: a block of `km` itself. The count
            // would hide a leaked pinned box behind it; the scope stops.
            // SAFETY: the block is a live `u64` of the allocator the scope
            // wraps, so freeing it frees memory correctly; only the count
            // is misled, which is what is under test.
            drop(unsafe { KBox::from_raw(raw, s) });
        });
        unreachable!("the free of an uncounted block went through");
    }
    assert_aborted_with(r, "kmem: a block the pin scope never allocated was freed");
}
