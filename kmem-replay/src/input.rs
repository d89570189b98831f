//! Reading a trace as a stream of whole lines, in constant memory.
//!
//! A [`TraceInput`] runs one reader thread. It reads the source (a file,
//! bytes in memory, any [`Read`]), decompresses it when it starts with the
//! xz magic bytes (liblzma), and hands the replay *chunks* of about
//! [`CHUNK_SIZE`] bytes that each end at a line boundary, through a channel
//! that holds at most [`CHANNEL_DEPTH`] chunks. Used chunks go back to the
//! reader through a second channel and are refilled, so a replay holds a
//! fixed handful of buffers whatever the trace length. Decompression and
//! the copy of the partial last line into the next chunk happen on the
//! reader thread; the replay only splits lines and parses them.
//!
//! A line longer than a chunk (a megabyte: no perf script line is) is not
//! held: the reader keeps its first [`LONG_LINE_KEEP`] bytes, skips the
//! rest up to the next newline, and hands on [`Chunk::LongLine`], which the
//! parser counts as one malformed line.
//!
//! Before the machine is built, [`TraceInput::scan_head`] reads the first
//! bytes of the trace (the chunks read are kept and replayed first) and
//! tells what they show ([`HeadScan`]): whether there are perf script
//! events at all, the CPUs, and which caches' slab pages Linux took
//! reclaimable.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::scan::HeadScan;

/// Bytes per chunk handed to the replay (plus the carried partial line).
pub const CHUNK_SIZE: usize = 1 << 20;
/// Chunks the channel holds ahead of the replay.
pub const CHANNEL_DEPTH: usize = 4;
/// The xz stream magic (`FD 37 7A 58 5A 00`).
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
/// Bytes kept of a line longer than a chunk (for its error message).
pub const LONG_LINE_KEEP: usize = 256;

/// What the reader thread hands on.
#[derive(Debug)]
pub enum Chunk {
    /// Whole lines, the last one ending in a newline unless the trace ends
    /// without one.
    Lines(Vec<u8>),
    /// One line longer than [`CHUNK_SIZE`]: its first bytes (at most
    /// [`LONG_LINE_KEEP`]) and its length without the newline. The rest
    /// was skipped.
    LongLine {
        /// The line's first bytes.
        start: Vec<u8>,
        /// The line's length in bytes.
        len: u64,
    },
}

impl Chunk {
    /// The buffer, to give back with [`TraceInput::recycle`].
    pub fn into_buf(self) -> Vec<u8> {
        match self {
            Chunk::Lines(b) | Chunk::LongLine { start: b, .. } => b,
        }
    }

    /// Call `f` on each line of the chunk (without its newline), and tell
    /// whether the chunk is one over-long line.
    fn for_each_line(&self, mut f: impl FnMut(&[u8])) {
        match self {
            Chunk::Lines(c) => {
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', c) {
                    f(&c[start..end]);
                    start = end + 1;
                }
                if start < c.len() {
                    f(&c[start..]);
                }
            }
            Chunk::LongLine { .. } => {}
        }
    }
}

/// A trace being read by its reader thread; see the [module docs](self).
pub struct TraceInput {
    name: String,
    compressed: bool,
    total: Option<u64>,
    consumed: Arc<AtomicU64>,
    rx: Option<Receiver<io::Result<Chunk>>>,
    recycle: Sender<Vec<u8>>,
    peeked: VecDeque<Chunk>,
    head: Option<HeadScan>,
    failed: Option<io::Error>,
    waited: Duration,
    thread: Option<JoinHandle<()>>,
}

/// Reads a [`TraceInput`]'s progress from any thread.
#[derive(Clone, Debug)]
pub struct ProgressHandle {
    consumed: Arc<AtomicU64>,
    total: Option<u64>,
}

impl ProgressHandle {
    /// Source bytes read so far and the source's length when known.
    pub fn get(&self) -> (u64, Option<u64>) {
        (self.consumed.load(Relaxed), self.total)
    }
}

/// Counts the bytes read from the source, for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

impl TraceInput {
    /// Open a trace file, plain text or xz-compressed (told by its first
    /// bytes, not its name).
    /// Every error names the path.
    pub fn open(path: impl AsRef<Path>) -> io::Result<TraceInput> {
        let path = path.as_ref();
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(named)?;
        let meta = file.metadata().map_err(named)?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!(
                    "{}: is a directory; give a trace file (perf script output, plain or .xz)",
                    path.display()
                ),
            ));
        }
        Self::from_reader(path.display().to_string(), file, Some(meta.len())).map_err(named)
    }

    /// A trace held in memory (the bundled one is `include_bytes!`ed).
    pub fn from_bytes(name: impl Into<String>, bytes: &'static [u8]) -> io::Result<TraceInput> {
        Self::from_reader(name.into(), bytes, Some(bytes.len() as u64))
    }

    /// A trace read from `reader`; `total` is its length in bytes when
    /// known (for progress).
    pub fn from_reader(
        name: impl Into<String>,
        reader: impl Read + Send + 'static,
        total: Option<u64>,
    ) -> io::Result<TraceInput> {
        let consumed = Arc::new(AtomicU64::new(0));
        let mut src = BufReader::with_capacity(
            64 << 10,
            Counting {
                inner: reader,
                count: Arc::clone(&consumed),
            },
        );
        let compressed = src.fill_buf()?.starts_with(XZ_MAGIC);
        let (tx, rx) = mpsc::sync_channel(CHANNEL_DEPTH);
        let (recycle, recycled) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("trace-reader".into())
            .spawn(move || {
                if compressed {
                    produce(liblzma::read::XzDecoder::new(src), &tx, &recycled)
                } else {
                    produce(src, &tx, &recycled)
                }
            })?;
        Ok(TraceInput {
            name: name.into(),
            compressed,
            total,
            consumed,
            rx: Some(rx),
            recycle,
            peeked: VecDeque::new(),
            head: None,
            failed: None,
            waited: Duration::ZERO,
            thread: Some(thread),
        })
    }

    /// The name given at creation (the file's path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the source is xz-compressed.
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Source bytes read so far (compressed bytes for xz) and the source's
    /// length when known.
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.consumed.load(Relaxed), self.total)
    }

    /// A handle reading [`progress`](Self::progress) from another thread.
    pub fn progress_handle(&self) -> ProgressHandle {
        ProgressHandle {
            consumed: Arc::clone(&self.consumed),
            total: self.total,
        }
    }

    /// Time spent waiting for the reader thread in [`next_chunk`](Self::next_chunk).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The next chunk of whole lines, `None` at the end. Give its buffer
    /// back with [`recycle`](Self::recycle) when done.
    pub fn next_chunk(&mut self) -> Option<io::Result<Chunk>> {
        if let Some(c) = self.peeked.pop_front() {
            return Some(Ok(c));
        }
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let t = Instant::now();
        let r = self.rx.as_ref()?.recv().ok();
        self.waited += t.elapsed();
        r
    }

    /// Return a chunk's buffer to the reader thread for reuse.
    pub fn recycle(&self, buf: Vec<u8>) {
        // The reader may have finished; then the buffer is simply dropped.
        let _ = self.recycle.send(buf);
    }

    /// Read the trace's first `limit` bytes (whole chunks: up to a chunk
    /// more) and tell what they show; see [`HeadScan`]. The chunks read are
    /// kept and replayed first, so at most `limit` bytes (plus a chunk) are
    /// held. Called again, it returns the first scan. An I/O or
    /// decompression error met here is kept for the replay to meet too.
    pub fn scan_head(&mut self, limit: usize) -> &HeadScan {
        if self.head.is_none() {
            let mut scan = HeadScan::default();
            let mut seen = 0usize;
            loop {
                if seen >= limit {
                    break;
                }
                let t = Instant::now();
                let next = self.rx.as_ref().and_then(|rx| rx.recv().ok());
                self.waited += t.elapsed();
                let chunk = match next {
                    None => {
                        scan.complete = true;
                        break;
                    }
                    Some(Err(e)) => {
                        scan.error = Some(e.to_string());
                        // Replayed as the same error at the same place.
                        self.failed = Some(e);
                        break;
                    }
                    Some(Ok(c)) => c,
                };
                seen += match &chunk {
                    Chunk::Lines(c) => c.len(),
                    Chunk::LongLine { len, .. } => *len as usize,
                };
                chunk.for_each_line(|l| scan.line(l));
                if let Chunk::LongLine { .. } = chunk {
                    scan.lines += 1;
                }
                self.peeked.push_back(chunk);
            }
            scan.bytes = seen as u64;
            scan.finish();
            self.head = Some(scan);
        }
        self.head.as_ref().expect("scanned above")
    }

    /// The scan [`scan_head`](Self::scan_head) made, if it was made.
    pub fn head_scan(&self) -> Option<&HeadScan> {
        self.head.as_ref()
    }
}

impl Drop for TraceInput {
    fn drop(&mut self) {
        // Dropping the receiver makes the reader's next send fail, and it
        // ends.
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader thread: fill chunks from `r`, cut each at its last newline,
/// carry the rest into the next one; a line longer than a chunk becomes a
/// [`Chunk::LongLine`].
fn produce(mut r: impl Read, tx: &SyncSender<io::Result<Chunk>>, recycled: &Receiver<Vec<u8>>) {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_SIZE + 4096));
        buf.clear();
        buf.extend_from_slice(&carry);
        carry.clear();
        // Append up to a chunk's worth; fewer bytes means the source ended.
        // (`read_to_end` fills the spare capacity without zeroing it first.)
        let eof = match (&mut r).take(CHUNK_SIZE as u64).read_to_end(&mut buf) {
            Ok(n) => n < CHUNK_SIZE,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let mut chunk = Chunk::Lines(buf);
        let mut ended = eof;
        if !eof {
            let Chunk::Lines(buf) = &mut chunk else {
                unreachable!()
            };
            if let Some(nl) = memchr::memrchr(b'\n', buf) {
                carry.extend_from_slice(&buf[nl + 1..]);
                buf.truncate(nl + 1);
            } else {
                // A whole chunk and no newline: a line too long to hold.
                let (rest, at_eof) = match skip_line(&mut r, &mut carry) {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let len = buf.len() as u64 + rest;
                buf.truncate(LONG_LINE_KEEP);
                let start = std::mem::take(buf);
                chunk = Chunk::LongLine { start, len };
                ended = at_eof && carry.is_empty();
            }
        }
        let empty = matches!(&chunk, Chunk::Lines(b) if b.is_empty());
        if !empty && tx.send(Ok(chunk)).is_err() {
            return;
        }
        if ended {
            return;
        }
    }
}

/// Read and drop the rest of a line up to its newline; what follows the
/// newline in the last block read goes into `carry`. Returns the bytes
/// dropped (the newline not counted) and whether the source ended.
fn skip_line(r: &mut impl Read, carry: &mut Vec<u8>) -> io::Result<(u64, bool)> {
    let mut block = vec![0u8; 64 << 10];
    let mut skipped = 0u64;
    loop {
        let n = match r.read(&mut block) {
            Ok(0) => return Ok((skipped, true)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(nl) = memchr::memchr(b'\n', &block[..n]) {
            carry.extend_from_slice(&block[nl + 1..n]);
            return Ok((skipped + nl as u64, false));
        }
        skipped += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line, an over-long one as `LONG <len> <first bytes>`.
    fn lines(mut t: TraceInput) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = t.next_chunk() {
            match c.unwrap() {
                Chunk::Lines(c) => {
                    assert!(c.ends_with(b"\n") || !c.contains(&b'\n') || t.peeked.is_empty());
                    out.extend(c.split(|&b| b == b'\n').map(|l| l.to_vec()));
                    t.recycle(c);
                }
                Chunk::LongLine { start, len } => {
                    assert!(start.len() <= LONG_LINE_KEEP);
                    let mut l = format!("LONG {len} ").into_bytes();
                    l.extend_from_slice(&start[..8]);
                    out.push(l);
                }
            }
        }
        out.retain(|l| !l.is_empty());
        out
    }

    /// A source of `n` zero bytes then `tail`, without holding the zeros.
    struct Zeros {
        left: u64,
        tail: std::io::Cursor<Vec<u8>>,
    }

    impl Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return self.tail.read(buf);
            }
            let n = buf.len().min(self.left as usize);
            buf[..n].fill(0);
            self.left -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn a_line_longer_than_a_chunk_is_one_piece_and_the_next_lines_follow() {
        // 5 MiB of zeros without a newline, then two ordinary lines.
        let src = Zeros {
            left: 5 << 20,
            tail: std::io::Cursor::new(b"\nsecond\nthird".to_vec()),
        };
        let got = lines(TraceInput::from_reader("z", src, None).unwrap());
        let want: [&[u8]; 3] = [b"LONG 5242880 \0\0\0\0\0\0\0\0", b"second", b"third"];
        assert_eq!(got, want);
        // The same at the very end of the trace, after a short line.
        let src = std::io::Cursor::new(b"first\n".to_vec()).chain(Zeros {
            left: 3 << 20,
            tail: std::io::Cursor::new(Vec::new()),
        });
        let got = lines(TraceInput::from_reader("z", src, None).unwrap());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], b"first");
        assert!(got[1].starts_with(b"LONG 3145728 "));
    }

    #[test]
    fn chunks_end_at_line_boundaries() {
        // Lines straddle many chunk boundaries.
        let text: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("line {i} {}\n", "x".repeat(i % 37)).into_bytes())
            .collect();
        let text: &'static [u8] = Box::leak(text.into_boxed_slice());
        let got = lines(TraceInput::from_bytes("t", text).unwrap());
        assert_eq!(got.len(), 200_000);
        assert_eq!(
            got[123_456],
            format!("line 123456 {}", "x".repeat(123_456 % 37)).into_bytes()
        );
    }

    #[test]
    fn xz_is_detected_and_decoded() {
        use std::io::Write;
        let text = b"a 1 [000] 1.0: kmem:kfree: ptr=(nil)\nb 2 [003] 1.0: kmem:kfree: ptr=(nil)\n";
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(text).unwrap();
        let xz: &'static [u8] = Box::leak(enc.finish().unwrap().into_boxed_slice());
        let mut t = TraceInput::from_bytes("t.xz", xz).unwrap();
        assert!(t.is_compressed());
        assert_eq!(t.scan_head(1 << 20).cpus, 4);
        assert_eq!(lines(t).len(), 2);
        let plain = TraceInput::from_bytes("t", text).unwrap();
        assert!(!plain.is_compressed());
    }

    #[test]
    fn a_corrupt_xz_stream_is_an_error() {
        let mut bad = XZ_MAGIC.to_vec();
        bad.extend_from_slice(&[0x55; 64]);
        let bad: &'static [u8] = Box::leak(bad.into_boxed_slice());
        let mut t = TraceInput::from_bytes("bad.xz", bad).unwrap();
        assert!(t.next_chunk().unwrap().is_err());
    }
}
