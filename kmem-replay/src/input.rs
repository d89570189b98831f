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
//! A line longer than a chunk (a megabyte) is cut in two; both parts are
//! then malformed lines, counted as such.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes per chunk handed to the replay (plus the carried partial line).
pub const CHUNK_SIZE: usize = 1 << 20;
/// Chunks the channel holds ahead of the replay.
pub const CHANNEL_DEPTH: usize = 4;
/// The xz stream magic (`FD 37 7A 58 5A 00`).
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];

/// A trace being read by its reader thread; see the [module docs](self).
pub struct TraceInput {
    name: String,
    compressed: bool,
    total: Option<u64>,
    consumed: Arc<AtomicU64>,
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    recycle: Sender<Vec<u8>>,
    peeked: VecDeque<Vec<u8>>,
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
    pub fn open(path: impl AsRef<Path>) -> io::Result<TraceInput> {
        let path = path.as_ref();
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let total = file.metadata().ok().map(|m| m.len());
        Self::from_reader(path.display().to_string(), file, total)
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

    /// The next chunk of whole lines, `None` at the end. Give it back with
    /// [`recycle`](Self::recycle) when done.
    pub fn next_chunk(&mut self) -> Option<io::Result<Vec<u8>>> {
        if let Some(c) = self.peeked.pop_front() {
            return Some(Ok(c));
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

    /// The number of CPUs the trace's first `limit` bytes show (highest CPU
    /// id + 1; 0 when no line there has a CPU). The chunks read for this are
    /// kept and replayed first, so at most `limit` bytes (plus a chunk) are
    /// held.
    pub fn peek_cpus(&mut self, limit: usize) -> io::Result<u32> {
        let mut seen = 0usize;
        let mut max: Option<u32> = None;
        let mut i = 0;
        loop {
            if i == self.peeked.len() {
                if seen >= limit {
                    break;
                }
                let t = Instant::now();
                let next = self.rx.as_ref().and_then(|rx| rx.recv().ok());
                self.waited += t.elapsed();
                match next {
                    None => break,
                    Some(c) => self.peeked.push_back(c?),
                }
            }
            let chunk = &self.peeked[i];
            seen += chunk.len();
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', chunk) {
                if let Some(c) = crate::parse::line_cpu(&chunk[start..end]) {
                    max = Some(max.map_or(c, |m| m.max(c)));
                }
                start = end + 1;
            }
            i += 1;
        }
        Ok(max.map_or(0, |m| m + 1))
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
/// carry the rest into the next one.
fn produce(mut r: impl Read, tx: &SyncSender<io::Result<Vec<u8>>>, recycled: &Receiver<Vec<u8>>) {
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
        if !eof {
            if let Some(nl) = memchr::memrchr(b'\n', &buf) {
                carry.extend_from_slice(&buf[nl + 1..]);
                buf.truncate(nl + 1);
            }
        }
        if !buf.is_empty() && tx.send(Ok(buf)).is_err() {
            return;
        }
        if eof {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(mut t: TraceInput) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = t.next_chunk() {
            let c = c.unwrap();
            assert!(c.ends_with(b"\n") || !c.contains(&b'\n') || t.peeked.is_empty());
            out.extend(c.split(|&b| b == b'\n').map(|l| l.to_vec()));
            t.recycle(c);
        }
        out.retain(|l| !l.is_empty());
        out
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
        assert_eq!(t.peek_cpus(1 << 20).unwrap(), 4);
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
