//! `seq_buf` (Linux's `lib/seq_buf.c`): a fixed-size text buffer for
//! formatting without a heap. A leaf: it imports nothing of the core.

/// A fixed-size text buffer for formatting without a heap: report lines,
/// and anything a fault or interrupt handler prints (where allocating
/// could deadlock). What does not fit is dropped, at a character boundary.
///
/// ```
/// use core::fmt::Write;
/// let mut l = kmem::seq_buf::SeqBuf::<8>::new();
/// write!(l, "{}-{}", 1234, "abcdef").unwrap();
/// assert_eq!(l.as_str(), "1234-abc");
/// ```
pub struct SeqBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> SeqBuf<N> {
    /// Empty.
    pub const fn new() -> Self {
        SeqBuf {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> Default for SeqBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for SeqBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut n = s.len().min(N - self.len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
