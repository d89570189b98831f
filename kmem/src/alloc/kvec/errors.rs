//! The errors of [`KVec`](super::KVec)'s non-allocating calls.
//!
//! None of them means the system is out of memory, so each converts to
//! [`Error::InvalidArgument`](crate::Error::InvalidArgument) (`EINVAL`), as
//! in Rust-for-Linux. Their `Debug` output never shows the value they hand
//! back, so they can be `unwrap`ped or `?`-propagated whatever `T` is.

use core::fmt;

/// Error of [`KVec::push_within_capacity`](super::KVec::push_within_capacity):
/// the vector is full; the value is handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PushError<T>(pub T);

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushError(not enough capacity)")
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not enough capacity")
    }
}

impl<T> core::error::Error for PushError<T> {}

impl<T> From<PushError<T>> for crate::Error {
    /// `EINVAL`, as in Rust-for-Linux: the system is not out of memory, the
    /// caller asked not to grow.
    fn from(_: PushError<T>) -> Self {
        crate::Error::InvalidArgument
    }
}

/// Error of [`KVec::remove`](super::KVec::remove): the index is out of
/// bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveError;

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("index out of bounds")
    }
}

impl core::error::Error for RemoveError {}

impl From<RemoveError> for crate::Error {
    /// `EINVAL`.
    fn from(_: RemoveError) -> Self {
        crate::Error::InvalidArgument
    }
}

/// Error of [`KVec::insert_within_capacity`](super::KVec::insert_within_capacity):
/// why the value was not inserted; the value is handed back either way.
///
/// ```
/// use kmem::alloc::kvec::InsertError;
///
/// let e = InsertError::OutOfCapacity(String::from("x"));
/// assert_eq!(format!("{e:?}"), "OutOfCapacity(not enough capacity)");
/// assert_eq!(e.into_inner(), "x");
/// assert_eq!(kmem::Error::from(InsertError::IndexOutOfBounds(1)), kmem::Error::InvalidArgument);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum InsertError<T> {
    /// The index is past the length.
    IndexOutOfBounds(T),
    /// The vector is full (the index was valid).
    OutOfCapacity(T),
}

impl<T> InsertError<T> {
    /// The value that was not inserted.
    pub fn into_inner(self) -> T {
        match self {
            InsertError::IndexOutOfBounds(x) | InsertError::OutOfCapacity(x) => x,
        }
    }
}

impl<T> fmt::Debug for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::IndexOutOfBounds(_) => {
                f.write_str("IndexOutOfBounds(index out of bounds)")
            }
            InsertError::OutOfCapacity(_) => f.write_str("OutOfCapacity(not enough capacity)"),
        }
    }
}

impl<T> fmt::Display for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::IndexOutOfBounds(_) => f.write_str("index out of bounds"),
            InsertError::OutOfCapacity(_) => f.write_str("not enough capacity"),
        }
    }
}

impl<T> core::error::Error for InsertError<T> {}

impl<T> From<InsertError<T>> for crate::Error {
    /// `EINVAL`, for both causes.
    fn from(_: InsertError<T>) -> Self {
        crate::Error::InvalidArgument
    }
}
