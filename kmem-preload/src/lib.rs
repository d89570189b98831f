//! `libkmem_preload.so`: the C allocation functions on kmem, for any
//! dynamically linked program (C++ included, whose `operator new` calls
//! `malloc`):
//!
//! ```sh
//! cargo build --release -p kmem-preload
//! LD_PRELOAD=target/release/libkmem_preload.so sort big.txt
//! ```
//!
//! Each function follows glibc's contract for it; the work is done by
//! `kmem-malloc`, whose docs say how.

use core::ffi::c_void;
use kmem_malloc as km;

/// `malloc(3)`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    km::malloc(size).cast()
}

/// `free(3)`.
///
/// # Safety
///
/// `p` is null or a live block of this allocator, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the caller's contract.
    unsafe { km::free(p.cast()) }
}

/// `calloc(3)`.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    km::calloc(n, size).cast()
}

/// `realloc(3)`.
///
/// # Safety
///
/// `p` is null or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract.
    unsafe { km::realloc(p.cast(), size) }.cast()
}

/// `reallocarray(3)`.
///
/// # Safety
///
/// `p` is null or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract.
    unsafe { km::reallocarray(p.cast(), n, size) }.cast()
}

/// `posix_memalign(3)`.
///
/// # Safety
///
/// `out` is valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    match km::posix_memalign(align, size) {
        Ok(p) => {
            // SAFETY: the caller's contract.
            unsafe { *out = p.cast() };
            0
        }
        Err(e) => e,
    }
}

/// `aligned_alloc(3)`.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    km::aligned_alloc(align, size).cast()
}

/// `memalign(3)`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    km::memalign(align, size).cast()
}

/// `valloc(3)`.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    km::aligned_alloc(kmem_malloc::PAGE_SIZE, size).cast()
}

/// `pvalloc(3)`.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    km::pvalloc(size).cast()
}

/// `malloc_usable_size(3)`.
///
/// # Safety
///
/// `p` is null or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    km::usable_size(p.cast())
}

/// `free_sized` (C23).
///
/// # Safety
///
/// As `free`; `size` is the size the block was asked with.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: the caller's contract.
    unsafe { km::free_sized(p.cast(), size) }
}

/// `free_aligned_sized` (C23).
///
/// # Safety
///
/// As `free`; `align` and `size` are those the block was asked with.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, size: usize) {
    // SAFETY: the caller's contract.
    unsafe { km::free_sized(p.cast(), size) }
}
