//! Tiny allocators for the documentation examples (not part of the API).
//!
//! [`Heap`] is a bump allocator over a fixed 16 KiB buffer that never reuses
//! memory and counts live blocks; [`Objects`] is an [`ObjectCache`] of
//! fixed-size objects carved from a `Heap`.

use core::alloc::Layout;
use core::cell::{Cell, UnsafeCell};
use core::ptr::{self, NonNull};

use super::{dangling, AllocError, Allocator, Flags, NumaNode, ObjectCache};
use crate::gfp::__GFP_ZERO;

const HEAP_WORDS: usize = 2048;

/// A bump allocator over a 16 KiB buffer that counts live blocks.
///
/// The handle is `&Heap`: the buffer is inside the `Heap`, so a `Heap`
/// moved into a container would leave the container's block behind, and
/// [`Allocator`] is not implemented for it.
///
/// ```compile_fail
/// # use kmem::alloc::doc_alloc::Heap;
/// use kmem::alloc::{flags::GFP_KERNEL, KBox};
/// let b = KBox::new(1u64, Heap::new(), GFP_KERNEL);
/// ```
pub struct Heap {
    buf: UnsafeCell<[u64; HEAP_WORDS]>,
    next: Cell<usize>,
    live: Cell<usize>,
}

impl Heap {
    /// An empty heap.
    pub fn new() -> Self {
        Heap {
            buf: UnsafeCell::new([0; HEAP_WORDS]),
            next: Cell::new(0),
            live: Cell::new(0),
        }
    }

    /// Blocks allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.live.get()
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: the handle is a reference, so moving, copying or dropping it
// leaves `buf` where it is; blocks are carved from `buf` without overlap and
// never reused, so they stay valid as long as the heap, which the handle's
// lifetime bounds; `realloc` copies the preserved prefix and zeroes under
// `__GFP_ZERO`; zero-sized requests get a dangling pointer.
unsafe impl Allocator for &Heap {
    const MIN_ALIGN: usize = 1;

    unsafe fn realloc(
        &self,
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        _nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let old = ptr.filter(|_| old_layout.size() != 0);
        let new = if layout.size() == 0 {
            dangling(layout)
        } else {
            let base = self.buf.get().cast::<u8>();
            let off = self.next.get();
            let start = off + base.wrapping_add(off).align_offset(layout.align());
            let end = start.checked_add(layout.size()).ok_or(AllocError)?;
            if end > HEAP_WORDS * 8 {
                return Err(AllocError);
            }
            self.next.set(end);
            self.live.set(self.live.get() + 1);
            // SAFETY: `start..end` lies inside `buf`.
            let new = unsafe { NonNull::new_unchecked(base.add(start)) };
            if flags.contains(__GFP_ZERO) {
                // SAFETY: the new block is ours, `layout.size()` bytes.
                unsafe { ptr::write_bytes(new.as_ptr(), 0, layout.size()) };
            }
            if let Some(old) = old {
                let n = old_layout.size().min(layout.size());
                // SAFETY: the old block is valid for `old_layout.size()`
                // bytes, the new one for `layout.size()`, and they are
                // disjoint.
                unsafe { ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), n) };
            }
            new
        };
        if old.is_some() {
            self.live.set(self.live.get() - 1);
        }
        Ok(NonNull::slice_from_raw_parts(new, layout.size()))
    }
}

/// An object cache of `size`-byte, `align`-aligned objects from a [`Heap`].
pub struct Objects<'h> {
    heap: &'h Heap,
    layout: Layout,
}

impl<'h> Objects<'h> {
    /// A cache of `size`-byte objects aligned to `align` (a power of two).
    pub fn new(heap: &'h Heap, size: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(size.max(1), align).expect("bad object layout");
        Objects { heap, layout }
    }
}

// SAFETY: objects are `Heap` blocks of one fixed layout, aligned to it.
unsafe impl ObjectCache for Objects<'_> {
    fn object_size(&self) -> usize {
        self.layout.size()
    }

    fn align(&self) -> usize {
        self.layout.align()
    }

    fn alloc_obj(&self, flags: Flags) -> Result<NonNull<u8>, AllocError> {
        Ok(self
            .heap
            .alloc(self.layout, flags, NumaNode::NO_NODE)?
            .cast())
    }

    unsafe fn free_obj(&self, ptr: NonNull<u8>) {
        // SAFETY: the caller passes an object of this cache, i.e. a heap
        // block of `self.layout`.
        unsafe { self.heap.free(ptr, self.layout) }
    }
}
