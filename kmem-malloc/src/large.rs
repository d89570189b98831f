//! Blocks above `KMALLOC_MAX_SIZE`: one anonymous mapping each, the way
//! `kvmalloc()` goes to vmalloc when kmalloc cannot serve a size.
//!
//! kmem's own vmalloc maps the machine's physical pages into a window of
//! kernel addresses; in a process that would need physical memory shared
//! with the mapping (a memfd), which a `fork()`ed child would then share
//! with its parent. So a large block is its own private mapping, and a
//! table of the live ones (its nodes are kmalloc objects) lets `free`
//! refuse a pointer that is not one, as `find_vm_area()` lets `vfree`.

use crate::Machine;
use core::ptr;
use kmem::gfp::GFP_KERNEL;
use kmem::PAGE_SIZE;
use rustix::mm::{self, MapFlags, MremapFlags, ProtFlags};
use std::sync::Mutex;

/// One live large block.
struct Node {
    /// Next node of the bucket.
    next: *mut Node,
    /// The address handed out, where its mapping starts (the alignment
    /// slack is unmapped at allocation).
    addr: usize,
    /// Bytes mapped.
    len: usize,
}

const BUCKETS: usize = 1024;

struct Table {
    buckets: [*mut Node; BUCKETS],
    /// Live blocks and their mapped bytes.
    count: usize,
    bytes: usize,
}

// SAFETY: the nodes are kmalloc objects reached only under the table's lock.
unsafe impl Send for Table {}

static TABLE: Mutex<Table> = Mutex::new(Table {
    buckets: [ptr::null_mut(); BUCKETS],
    count: 0,
    bytes: 0,
});

fn bucket(addr: usize) -> usize {
    ((addr >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) % BUCKETS
}

fn table() -> std::sync::MutexGuard<'static, Table> {
    // A panic never happens under the lock; recover the data anyway.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Live large blocks and the bytes they map.
pub fn stats() -> (usize, usize) {
    let t = table();
    (t.count, t.bytes)
}

/// Map a block of `size` bytes aligned to `align` (a power of two).
pub fn alloc(k: &Machine, size: usize, align: usize) -> Option<*mut u8> {
    let len = size.checked_next_multiple_of(PAGE_SIZE)?;
    let slack = align.saturating_sub(PAGE_SIZE);
    let total = len.checked_add(slack)?;
    if total > isize::MAX as usize {
        return None;
    }
    let node = k.kmalloc(size_of::<Node>(), GFP_KERNEL).ok()?.as_ptr() as *mut Node;
    // SAFETY: a fresh private anonymous mapping at an address the kernel
    // picks aliases nothing.
    let map = match unsafe {
        mm::mmap_anonymous(
            ptr::null_mut(),
            total,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    } {
        Ok(p) => p as usize,
        Err(_) => {
            // SAFETY: `node` was just kmalloc'ed and is not used again.
            let _ = unsafe { k.kfree(node.cast()) };
            return None;
        }
    };
    let addr = map.next_multiple_of(align.max(PAGE_SIZE));
    // Give back the slack around the aligned block.
    let (head, tail) = (addr - map, map + total - (addr + len));
    // SAFETY: both ranges are ours, inside the mapping just made, and
    // outside the block handed out.
    unsafe {
        if head != 0 {
            let _ = mm::munmap(map as *mut _, head);
        }
        if tail != 0 {
            let _ = mm::munmap((addr + len) as *mut _, tail);
        }
    }
    let mut t = table();
    let b = bucket(addr);
    // SAFETY: `node` is a kmalloc object big enough for a `Node`, ours.
    unsafe {
        node.write(Node {
            next: t.buckets[b],
            addr,
            len,
        })
    };
    t.buckets[b] = node;
    t.count += 1;
    t.bytes += len;
    Some(addr as *mut u8)
}

/// Find the live block at `addr` and, when `unlink`, take it out of the
/// table. Returns (its mapped length, the node).
fn find(t: &mut Table, addr: usize, unlink: bool) -> Option<(usize, *mut Node)> {
    let mut link: *mut *mut Node = &mut t.buckets[bucket(addr)];
    // SAFETY: every node in the table is a live kmalloc'ed `Node`, touched
    // only under the lock the caller holds.
    unsafe {
        while !(*link).is_null() {
            let n = *link;
            if (*n).addr == addr {
                if unlink {
                    *link = (*n).next;
                    t.count -= 1;
                    t.bytes -= (*n).len;
                }
                return Some(((*n).len, n));
            }
            link = &mut (*n).next;
        }
    }
    None
}

/// The usable size of the large block at `p`, if it is one.
pub fn usable_size(p: *const u8) -> Option<usize> {
    find(&mut table(), p as usize, false).map(|(len, _)| len)
}

/// Unmap the large block at `p`. `false`: it is not a live large block.
pub fn free(k: &Machine, p: *mut u8) -> bool {
    let Some((len, node)) = find(&mut table(), p as usize, true) else {
        return false;
    };
    // SAFETY: the block was mapped by `alloc` and is now out of the table,
    // so nothing hands it out again; the caller gave it up.
    unsafe {
        let _ = mm::munmap(p.cast(), len);
        let _ = k.kfree(node.cast());
    }
    true
}

/// Resize the large block at `p` to `size` bytes (page alignment), moving
/// it with `mremap` if it must grow. `None`: not a large block, or no
/// address space.
pub fn realloc(p: *mut u8, size: usize) -> Option<*mut u8> {
    let new_len = size.checked_next_multiple_of(PAGE_SIZE)?;
    let mut t = table();
    let (len, node) = find(&mut t, p as usize, true)?;
    // SAFETY: `[p, p + len)` is the block's own mapping; on failure it is
    // untouched.
    let r = unsafe { mm::mremap(p.cast(), len, new_len, MremapFlags::MAYMOVE) };
    let (addr, len) = match r {
        Ok(q) => (q as usize, new_len),
        Err(_) => (p as usize, len),
    };
    // SAFETY: `node` is the block's live node, out of the table under the
    // lock; it goes back in under the new address.
    unsafe {
        (*node).addr = addr;
        (*node).len = len;
        let b = bucket(addr);
        (*node).next = t.buckets[b];
        t.buckets[b] = node;
    }
    t.count += 1;
    t.bytes += len;
    r.ok().map(|_| addr as *mut u8)
}
