//! Error values of the core, named after the errno a Linux caller would see.
//!
//! Every fallible call returns `Result<T, Error>`. Where Linux prints a warning
//! or a `BUG:` line, kmem prints the same words through
//! [`Platform::report`](crate::platform::Platform::report) *and* returns one of
//! these values, so a caller can both read the log and act on the failure.

use core::fmt;

/// A kmem error, mapped to the errno Linux would return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// `-ENOMEM`: no memory could be found under the rules the GFP flags allow.
    NoMemory,
    /// `-EINVAL`: an argument is out of range (order above `MAX_PAGE_ORDER`,
    /// a bad GFP zone combination, an unaligned size...).
    InvalidArgument,
    /// `-EFAULT`: the address does not belong to memory this allocator manages.
    BadAddress,
    /// `-EBUSY`: the region or object is in use (an overlapping memblock
    /// reservation, a page that is still referenced...).
    Busy,
    /// `-EEXIST`: the thing being added is already there.
    Exists,
    /// `-ENOSPC`: a fixed-size table (memblock regions, nodes) is full.
    NoSpace,
    /// `-ENODEV`: the platform does not offer this service (for example page
    /// mapping on the arena platform).
    NotSupported,
    /// The allocator found a page or object in a state that the call does not
    /// allow (double free, wrong order, corrupted metadata). Linux prints
    /// "BUG: Bad page state" and carries on; kmem reports, refuses the call
    /// and leaves the memory as it was.
    BadState,
}

impl Error {
    /// The negative errno Linux would return for this error.
    ///
    /// ```
    /// assert_eq!(kmem::Error::NoMemory.to_errno(), -12);
    /// ```
    pub const fn to_errno(self) -> i32 {
        match self {
            Error::NoMemory => -12,
            Error::InvalidArgument => -22,
            Error::BadAddress => -14,
            Error::Busy => -16,
            Error::Exists => -17,
            Error::NoSpace => -28,
            Error::NotSupported => -19,
            Error::BadState => -22,
        }
    }

    /// The errno's symbolic name (`"ENOMEM"`...).
    pub const fn name(self) -> &'static str {
        match self {
            Error::NoMemory => "ENOMEM",
            Error::InvalidArgument | Error::BadState => "EINVAL",
            Error::BadAddress => "EFAULT",
            Error::Busy => "EBUSY",
            Error::Exists => "EEXIST",
            Error::NoSpace => "ENOSPC",
            Error::NotSupported => "ENODEV",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Error::NoMemory => "out of memory",
            Error::InvalidArgument => "invalid argument",
            Error::BadAddress => "address not managed by this allocator",
            Error::Busy => "in use",
            Error::Exists => "already exists",
            Error::NoSpace => "table full",
            Error::NotSupported => "not supported by this platform",
            Error::BadState => "bad page or object state",
        };
        write!(f, "{what} ({})", self.name())
    }
}

impl core::error::Error for Error {}

/// Every error value, in [`Error::to_err_ptr`]'s order.
const ALL: [Error; 8] = [
    Error::NoMemory,
    Error::InvalidArgument,
    Error::BadAddress,
    Error::Busy,
    Error::Exists,
    Error::NoSpace,
    Error::NotSupported,
    Error::BadState,
];

impl Error {
    /// `ERR_PTR()`: the error as an address in the last page of the
    /// address space, where no object lies. The allocation fast paths pass
    /// "an object or an error" through one register this way, as Linux
    /// does, and turn it into a `Result` only at the public boundary.
    #[inline]
    pub(crate) const fn to_err_ptr(self) -> usize {
        usize::MAX - self as usize
    }

    /// `IS_ERR()` + `PTR_ERR()`: the error an address from
    /// [`to_err_ptr`](Self::to_err_ptr) carries, or `None` for an address.
    #[inline]
    pub(crate) fn from_err_ptr(x: usize) -> Option<Error> {
        let i = usize::MAX - x;
        if i < ALL.len() {
            Some(ALL[i])
        } else {
            None
        }
    }
}

/// Shorthand for `Result<T, kmem::Error>`.
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_ptr_round_trips_every_error_and_no_address() {
        for e in ALL {
            assert_eq!(Error::from_err_ptr(e.to_err_ptr()), Some(e));
        }
        // The first address below the error values, and ordinary ones, are
        // addresses.
        assert_eq!(Error::from_err_ptr(usize::MAX - ALL.len()), None);
        assert_eq!(Error::from_err_ptr(0x1000), None);
    }
}
