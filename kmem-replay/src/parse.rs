//! The trace's text, one line at a time, without copying.
//!
//! A line of `perf script -F comm,tid,cpu,time,event,trace` reads
//!
//! ```text
//!             bash 24576 [001]  1055.877198:                   kmem:kmalloc: call_site=perf_event_mmap+0x155 ptr=0xffff888106544000 bytes_req=4096 bytes_alloc=4096 gfp_flags=GFP_KERNEL node=-1 accounted=false
//! ```
//!
//! that is: the command (right-aligned in 16 columns, and it may contain
//! spaces), the thread id, the CPU in brackets, the timestamp in seconds
//! with a fraction and a colon, the event name with a colon, then the
//! event's fields as the kernel's `TP_printk` format prints them.
//!
//! [`parse_line`] reads that straight from the bytes: no regular
//! expression, no allocation, every slice borrowed from the line. The
//! header is found by its one unambiguous mark, `<space><digits> [<digits>]`
//! (the tid and the CPU), so a command name with spaces or brackets still
//! parses. Fields are `key=value` tokens separated by spaces; they are
//! looked up by key rather than by position, so fields that older kernels
//! print in another order, or not at all (`node=` and `accounted=` came in
//! 6.0-6.1), are handled: a missing optional field takes the value the
//! kernel would have meant (`node=-1`, `accounted=false`), a missing
//! required one is a [`ParseError`].
//!
//! The fields read per event (Linux 6.18's `include/trace/events/kmem.h`):
//!
//! | event | fields used |
//! |---|---|
//! | `kmem:kmalloc` | `ptr`, `bytes_req`, `bytes_alloc`, `gfp_flags`, `node` |
//! | `kmem:kfree` | `ptr` |
//! | `kmem:kmem_cache_alloc` | `ptr`, `name`, `bytes_req`, `bytes_alloc`, `gfp_flags`, `node`, `accounted` |
//! | `kmem:kmem_cache_free` | `ptr`, `name` |
//! | `kmem:mm_page_alloc` | `pfn`, `order`, `gfp_flags` |
//! | `kmem:mm_page_free`, `kmem:mm_page_free_batched` | `pfn`, `order` (batched: always 0) |
//! | `vmalloc:alloc_vmap_area` | `va_start:` (decimal, after a colon), `size`, `align`, `vstart`, `vend`, `failed` |
//! | `vmalloc:free_vmap_area_noflush` | `va_start` (hex), `nr_lazy`, `nr_lazy_max` |
//! | `vmalloc:purge_vmap_area_lazy` | `start`, `end`, `num_purged` |
//! | `percpu:percpu_alloc_percpu` | `reserved`, `is_atomic`, `size`, `align`, `ptr`, `bytes_alloc`, `gfp_flags` |
//! | `percpu:percpu_free_percpu` | `ptr` |
//! | `percpu:percpu_alloc_percpu_fail` | `reserved`, `is_atomic`, `size`, `align` |
//! | `percpu:percpu_create_chunk`, `percpu:percpu_destroy_chunk` | `base_addr` |
//!
//! The vmalloc events are Linux 6.18's `include/trace/events/vmalloc.h`.
//! `alloc_vmap_area` prints `va_start: %lu` (a colon and a decimal, unlike
//! every other field) and fires on every try, so a failed try (`failed=1`,
//! whose `va_start` is an error value) may be followed by a successful one
//! once Linux has purged; its `size` is what `alloc_vmap_area()` was asked
//! for, which for a vmalloc area already includes the guard page
//! (`__get_vm_area_node()` adds `PAGE_SIZE` unless `VM_NO_GUARD`): a 16 KiB
//! thread stack shows `size=20480 align=16384`. `free_vmap_area_noflush`
//! prints `vmap_lazy_nr` just after adding the area's pages (guard page
//! included) and `lazy_max_pages()`. `purge_vmap_area_lazy` prints the
//! range flushed and the areas purged; a purge that found nothing prints
//! `start=0xffffffffffffffff end=0x0 num_purged=0`.
//!
//! The percpu events are Linux 6.18's `include/trace/events/percpu.h`.
//! `percpu_alloc_percpu` fires once `pcpu_alloc()` has its area: `size` is
//! already rounded up to `PCPU_MIN_ALLOC_SIZE` (4), `gfp_flags` are the
//! caller's after `current_gfp_context()`, `ptr` is the per-CPU pointer
//! (the area's address `base_addr + off` as a `__percpu` pointer) that the
//! matching `percpu_free_percpu` prints again, and `bytes_alloc` is
//! `pcpu_obj_full_size(size)`. `bytes_alloc` and `gfp_flags` came with
//! Linux 6.0: without them the allocation's flags are what `is_atomic`
//! meant before (`GFP_KERNEL`, or `GFP_NOWAIT` when atomic) and there is
//! no full size to compare ([`Event::PercpuAlloc`]). A
//! `percpu_alloc_percpu_fail` is Linux's failure (any `do_warn=` and
//! `warn_limit=` a later kernel adds are ignored); the chunk events print
//! the chunk's base address only.
//!
//! Any other event name parses as [`Event::Unknown`]. A pointer printed as
//! `(nil)` reads as 0; a failed page allocation (`page=(nil)`, whose `pfn`
//! Linux prints as `-1`) reads as `pfn: None`.

use core::fmt;

/// The event types of the input format, in the order the report lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `kmem:kmalloc`.
    Kmalloc,
    /// `kmem:kfree`.
    Kfree,
    /// `kmem:kmem_cache_alloc`.
    KmemCacheAlloc,
    /// `kmem:kmem_cache_free`.
    KmemCacheFree,
    /// `kmem:mm_page_alloc`.
    PageAlloc,
    /// `kmem:mm_page_free`.
    PageFree,
    /// `kmem:mm_page_free_batched`.
    PageFreeBatched,
    /// `percpu:percpu_alloc_percpu`.
    PercpuAlloc,
    /// `percpu:percpu_free_percpu`.
    PercpuFree,
    /// `percpu:percpu_alloc_percpu_fail`.
    PercpuAllocFail,
    /// `percpu:percpu_create_chunk`.
    PercpuCreateChunk,
    /// `percpu:percpu_destroy_chunk`.
    PercpuDestroyChunk,
    /// `vmalloc:alloc_vmap_area`.
    VmapAlloc,
    /// `vmalloc:free_vmap_area_noflush`.
    VmapFree,
    /// `vmalloc:purge_vmap_area_lazy`.
    VmapPurge,
}

impl EventKind {
    /// Every kind, in report order.
    pub const ALL: [EventKind; 15] = [
        EventKind::Kmalloc,
        EventKind::Kfree,
        EventKind::KmemCacheAlloc,
        EventKind::KmemCacheFree,
        EventKind::PageAlloc,
        EventKind::PageFree,
        EventKind::PageFreeBatched,
        EventKind::PercpuAlloc,
        EventKind::PercpuFree,
        EventKind::PercpuAllocFail,
        EventKind::PercpuCreateChunk,
        EventKind::PercpuDestroyChunk,
        EventKind::VmapAlloc,
        EventKind::VmapFree,
        EventKind::VmapPurge,
    ];

    /// The tracepoint's name as perf prints it (`kmem:kmalloc`).
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Kmalloc => "kmem:kmalloc",
            EventKind::Kfree => "kmem:kfree",
            EventKind::KmemCacheAlloc => "kmem:kmem_cache_alloc",
            EventKind::KmemCacheFree => "kmem:kmem_cache_free",
            EventKind::PageAlloc => "kmem:mm_page_alloc",
            EventKind::PageFree => "kmem:mm_page_free",
            EventKind::PageFreeBatched => "kmem:mm_page_free_batched",
            EventKind::PercpuAlloc => "percpu:percpu_alloc_percpu",
            EventKind::PercpuFree => "percpu:percpu_free_percpu",
            EventKind::PercpuAllocFail => "percpu:percpu_alloc_percpu_fail",
            EventKind::PercpuCreateChunk => "percpu:percpu_create_chunk",
            EventKind::PercpuDestroyChunk => "percpu:percpu_destroy_chunk",
            EventKind::VmapAlloc => "vmalloc:alloc_vmap_area",
            EventKind::VmapFree => "vmalloc:free_vmap_area_noflush",
            EventKind::VmapPurge => "vmalloc:purge_vmap_area_lazy",
        }
    }

    /// Index into [`EventKind::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The kind named `name`, if it is one of the input format's.
    pub fn from_name(name: &[u8]) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.name().as_bytes() == name)
    }

    /// Whether kmem replays this kind: every kind of the input format has
    /// its allocator in kmem now (a kind kmem has no allocator for would
    /// be counted and listed as not replayed). Some are counted rather
    /// than executed: see [`counted_only`](Self::counted_only).
    pub const fn is_replayed(self) -> bool {
        true
    }

    /// Why events of this kind are counted rather than executed on kmem,
    /// if they are: Linux's failures, and the chunks Linux's per-CPU
    /// allocator made and dropped (kmem's makes its own). The report lists
    /// these kinds only when a trace has them.
    pub const fn counted_only(self) -> Option<&'static str> {
        match self {
            EventKind::PercpuAllocFail => Some("counted: Linux's failures"),
            EventKind::PercpuCreateChunk | EventKind::PercpuDestroyChunk => {
                Some("counted: kmem's chunks are its own")
            }
            _ => None,
        }
    }
}

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who recorded an event: the part of the line before the event name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The command (`current->comm`), trimmed.
    pub comm: &'a [u8],
    /// The thread id.
    pub tid: u32,
    /// The CPU the event ran on.
    pub cpu: u32,
    /// The timestamp in nanoseconds.
    pub time_ns: u64,
}

/// One event's fields (see the [module docs](self) for the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `kmem:kmalloc`.
    Kmalloc {
        /// The object's address in the traced kernel (0 for a failure).
        ptr: u64,
        /// Bytes asked for.
        bytes_req: u64,
        /// Bytes Linux handed out (the kmalloc cache's size, or the pages').
        bytes_alloc: u64,
        /// `gfp_flags` as printed.
        gfp: &'a [u8],
        /// The node asked for, -1 for any.
        node: i32,
    },
    /// `kmem:kfree`.
    Kfree {
        /// The address freed (0 for `(nil)`).
        ptr: u64,
    },
    /// `kmem:kmem_cache_alloc`.
    KmemCacheAlloc {
        /// The object's address (0 for a failure).
        ptr: u64,
        /// The cache's name.
        name: &'a [u8],
        /// The cache's object size (`s->object_size`).
        bytes_req: u64,
        /// The cache's slot size (`s->size`).
        bytes_alloc: u64,
        /// `gfp_flags` as printed.
        gfp: &'a [u8],
        /// The node asked for, -1 for any.
        node: i32,
        /// Charged to a memory cgroup (`__GFP_ACCOUNT` or `SLAB_ACCOUNT`).
        accounted: bool,
    },
    /// `kmem:kmem_cache_free`.
    KmemCacheFree {
        /// The address freed.
        ptr: u64,
        /// The cache's name.
        name: &'a [u8],
    },
    /// `kmem:mm_page_alloc`.
    PageAlloc {
        /// The first page frame, `None` when the allocation failed.
        pfn: Option<u64>,
        /// The order.
        order: u32,
        /// `gfp_flags` as printed.
        gfp: &'a [u8],
    },
    /// `kmem:mm_page_free` and `kmem:mm_page_free_batched` (order 0).
    PageFree {
        /// The first page frame.
        pfn: u64,
        /// The order.
        order: u32,
        /// Whether it was `mm_page_free_batched`.
        batched: bool,
    },
    /// `vmalloc:alloc_vmap_area`: one try of `alloc_vmap_area()`.
    VmapAlloc {
        /// The area's first address (an error value when `failed`).
        va_start: u64,
        /// Bytes asked for, guard page included.
        size: u64,
        /// Alignment asked for.
        align: u64,
        /// The range the area had to lie in: first address...
        vstart: u64,
        /// ...and end (Linux prints `VMALLOC_END`, the last address).
        vend: u64,
        /// `failed=1`: no room (Linux purges and tries again).
        failed: bool,
    },
    /// `vmalloc:free_vmap_area_noflush`.
    VmapFree {
        /// The area's first address.
        va_start: u64,
        /// `vmap_lazy_nr` after adding the area's pages.
        nr_lazy: u64,
        /// `lazy_max_pages()`.
        nr_lazy_max: u64,
    },
    /// `vmalloc:purge_vmap_area_lazy`.
    VmapPurge {
        /// Lowest address flushed (`u64::MAX` when nothing was purged).
        start: u64,
        /// End of the range flushed (0 when nothing was purged).
        end: u64,
        /// Areas purged.
        num_purged: u64,
    },
    /// `percpu:percpu_alloc_percpu`: an allocation `pcpu_alloc()` made.
    PercpuAlloc {
        /// From the reserved chunk (`__alloc_reserved_percpu()`).
        reserved: bool,
        /// Linux took it as atomic (its GFP flags lack
        /// `__GFP_DIRECT_RECLAIM`): only populated pages could serve it.
        is_atomic: bool,
        /// Bytes per CPU, rounded up to `PCPU_MIN_ALLOC_SIZE`.
        size: u64,
        /// Alignment asked for.
        align: u64,
        /// The per-CPU pointer (`void __percpu *`) the caller got.
        ptr: u64,
        /// `pcpu_obj_full_size(size)`: every possible CPU's copy and memcg's
        /// `obj_cgroup` pointers (`None`: before Linux 6.0, not printed).
        bytes_alloc: Option<u64>,
        /// `gfp_flags` as printed (`None`: before Linux 6.0, not printed).
        gfp: Option<&'a [u8]>,
    },
    /// `percpu:percpu_free_percpu`.
    PercpuFree {
        /// The per-CPU pointer freed.
        ptr: u64,
    },
    /// `percpu:percpu_alloc_percpu_fail`: an allocation Linux failed.
    PercpuAllocFail {
        /// From the reserved chunk.
        reserved: bool,
        /// Atomic.
        is_atomic: bool,
        /// Bytes per CPU asked for.
        size: u64,
        /// Alignment asked for.
        align: u64,
    },
    /// `percpu:percpu_create_chunk` and `percpu:percpu_destroy_chunk`.
    PercpuChunk {
        /// The chunk's base address.
        base_addr: u64,
        /// Whether it was `percpu_destroy_chunk`.
        destroy: bool,
    },
    /// An event name outside the input format.
    Unknown(&'a [u8]),
}

impl Event<'_> {
    /// The event's kind (`None` for [`Event::Unknown`]).
    pub fn kind(&self) -> Option<EventKind> {
        Some(match self {
            Event::Kmalloc { .. } => EventKind::Kmalloc,
            Event::Kfree { .. } => EventKind::Kfree,
            Event::KmemCacheAlloc { .. } => EventKind::KmemCacheAlloc,
            Event::KmemCacheFree { .. } => EventKind::KmemCacheFree,
            Event::PageAlloc { .. } => EventKind::PageAlloc,
            Event::PageFree { batched: false, .. } => EventKind::PageFree,
            Event::PageFree { batched: true, .. } => EventKind::PageFreeBatched,
            Event::VmapAlloc { .. } => EventKind::VmapAlloc,
            Event::VmapFree { .. } => EventKind::VmapFree,
            Event::VmapPurge { .. } => EventKind::VmapPurge,
            Event::PercpuAlloc { .. } => EventKind::PercpuAlloc,
            Event::PercpuFree { .. } => EventKind::PercpuFree,
            Event::PercpuAllocFail { .. } => EventKind::PercpuAllocFail,
            Event::PercpuChunk { destroy: false, .. } => EventKind::PercpuCreateChunk,
            Event::PercpuChunk { destroy: true, .. } => EventKind::PercpuDestroyChunk,
            Event::Unknown(_) => return None,
        })
    }
}

/// A parsed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Command, thread, CPU and time.
    pub header: Header<'a>,
    /// The event.
    pub event: Event<'a>,
}

/// What is wrong with a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// No `<tid> [<cpu>]` in the line: not perf script's
    /// `comm,tid,cpu,time,event,trace` output.
    NoHeader,
    /// No `SECONDS.FRACTION:` timestamp after the CPU.
    NoTimestamp,
    /// No `system:event:` name after the timestamp.
    NoEventName,
    /// A field the event needs is not on the line. The key is given
    /// without its `=`; a key printed with a colon instead
    /// (`alloc_vmap_area`'s `va_start:`) is given with it.
    MissingField(&'static str),
    /// A field's value is not what the format prints (key as in
    /// [`MissingField`](Self::MissingField)).
    BadValue(&'static str),
}

/// `key=`, or `key:` as given for a key printed with a colon.
struct Key(&'static str);

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.ends_with(':') {
            write!(f, "`{}`", self.0)
        } else {
            write!(f, "`{}=`", self.0)
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NoHeader => f.write_str(
                "expected `COMM TID [CPU] SECS.USECS: EVENT: FIELDS` \
                 (perf script -F comm,tid,cpu,time,event,trace)",
            ),
            ParseError::NoTimestamp => {
                f.write_str("expected a timestamp `SECS.USECS:` after the CPU")
            }
            ParseError::NoEventName => {
                f.write_str("expected an event name `system:event:` after the timestamp")
            }
            ParseError::MissingField(k) => write!(f, "missing field {}", Key(k)),
            ParseError::BadValue(k) => write!(f, "bad value for {}", Key(k)),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parse one line (without its newline). Blank lines and `#` comment lines
/// (perf's header) give `Ok(None)`.
///
/// ```
/// use kmem_replay::parse::{parse_line, Event};
///
/// let line = b"  tar 24581 [001]  1056.135057:  kmem:kfree: call_site=f+0x1 ptr=0xffff888139c59100";
/// let r = parse_line(line).unwrap().unwrap();
/// assert_eq!((r.header.comm, r.header.tid, r.header.cpu), (&b"tar"[..], 24581, 1));
/// assert_eq!(r.header.time_ns, 1_056_135_057_000);
/// assert_eq!(r.event, Event::Kfree { ptr: 0xffff888139c59100 });
/// assert!(parse_line(b"tar 1 [0 oops").is_err());
/// ```
pub fn parse_line(line: &[u8]) -> Result<Option<Record<'_>>, ParseError> {
    let line = trim_end(line);
    let (header, rest) = match parse_header(line) {
        Ok(h) => h,
        Err(e) => {
            // Only now look for what is not an event line at all.
            return match line.iter().find(|&&b| b != b' ' && b != b'\t') {
                None | Some(b'#') => Ok(None),
                Some(_) => Err(e),
            };
        }
    };
    let (name, fields) = split_event(rest)?;
    let event = match fast_event(name, fields) {
        Some(ev) => ev,
        None => parse_event(name, fields)?,
    };
    Ok(Some(Record { header, event }))
}

/// Index of the first space in `s` at or after `from` (`s.len()` if none),
/// eight bytes at a time.
#[inline]
fn find_space(s: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i + 8 <= s.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        let x = u64::from_le_bytes(w) ^ (ONES * b' ' as u64);
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return i + (zero.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() && s[i] != b' ' {
        i += 1;
    }
    i
}

/// Index of the first byte that is not a space in `s` at or after `from`
/// (`s.len()` if none), eight bytes at a time: perf pads its columns.
#[inline]
fn skip_spaces(s: &[u8], from: usize) -> usize {
    const SPACES: u64 = 0x2020_2020_2020_2020;
    let mut i = from;
    while i + 8 <= s.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        let x = u64::from_le_bytes(w) ^ SPACES;
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    i
}

/// A cursor over the fields of a line in the kernel's own order: the fast
/// path. Any surprise (another order, a missing field) returns `None` and
/// the line goes through the general [`Fields`] parser instead.
struct Cur<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    /// The value of the next field if its key is `key`.
    #[inline]
    fn next<const N: usize>(&mut self, key: &[u8; N]) -> Option<&'a [u8]> {
        if !self.key(key) {
            return None;
        }
        let start = self.i;
        let end = find_space(self.s, start);
        self.i = end;
        Some(&self.s[start..end])
    }

    /// Step over `key=` if the next field has that key; `false` if not.
    #[inline]
    fn key<const N: usize>(&mut self, key: &[u8; N]) -> bool {
        self.i = skip_spaces(self.s, self.i);
        let Some(k) = self.s.get(self.i..self.i + N) else {
            return false;
        };
        let k: &[u8; N] = k.try_into().expect("N bytes");
        if k != key || self.s.get(self.i + N) != Some(&b'=') {
            return false;
        }
        self.i += N + 1;
        true
    }

    /// Whether the value just read ends the field (a space or the end).
    #[inline]
    fn at_end(&self) -> bool {
        self.s.get(self.i).is_none_or(|&b| b == b' ')
    }

    /// A `0x...` or `(nil)` value, read in the same pass that finds its end.
    #[inline]
    fn ptr<const N: usize>(&mut self, key: &[u8; N]) -> Option<u64> {
        if !self.key(key) {
            return None;
        }
        let rest = &self.s[self.i..];
        if rest.starts_with(b"(nil)") {
            self.i += 5;
            return self.at_end().then_some(0);
        }
        if !rest.starts_with(b"0x") {
            return None;
        }
        self.i += 2;
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&b) = self.s.get(self.i) {
            let d = HEX[b as usize];
            if d > 15 {
                break;
            }
            v = (v << 4) | d as u64;
            self.i += 1;
        }
        let n = self.i - start;
        (n > 0 && n <= 16 && self.at_end()).then_some(v)
    }

    /// A decimal value, read in the same pass that finds its end.
    #[inline]
    fn dec<const N: usize>(&mut self, key: &[u8; N]) -> Option<u64> {
        if !self.key(key) {
            return None;
        }
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&b) = self.s.get(self.i) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v.wrapping_mul(10).wrapping_add(d as u64);
            self.i += 1;
        }
        let n = self.i - start;
        // 19 digits cannot overflow; longer numbers take the general path.
        (n > 0 && n <= 19 && self.at_end()).then_some(v)
    }
}

/// The fast path of [`parse_event`] for the kmem events in Linux 6.18's
/// field order. `None`: use the general parser (which also gives the error).
#[inline]
fn fast_event<'a>(name: &'a [u8], fields: &'a [u8]) -> Option<Event<'a>> {
    let mut c = Cur { s: fields, i: 0 };
    // The names' lengths differ, so the length picks the event and one
    // fixed-size comparison confirms it.
    fn is<const N: usize>(name: &[u8], want: &[u8; N]) -> bool {
        <&[u8; N]>::try_from(name).is_ok_and(|n| n == want)
    }
    let ev = match name.len() {
        21 if is(name, b"kmem:kmem_cache_alloc") => {
            c.next(b"call_site")?;
            let ptr = c.ptr(b"ptr")?;
            let name = c.next(b"name")?;
            let bytes_req = c.dec(b"bytes_req")?;
            let bytes_alloc = c.dec(b"bytes_alloc")?;
            let gfp = c.next(b"gfp_flags")?;
            let node = parse_signed(c.next(b"node")?).and_then(|n| i32::try_from(n).ok())?;
            let accounted = match c.next(b"accounted")? {
                b"true" => true,
                b"false" => false,
                _ => return None,
            };
            if gfp.is_empty() {
                return None;
            }
            Event::KmemCacheAlloc {
                ptr,
                name,
                bytes_req,
                bytes_alloc,
                gfp,
                node,
                accounted,
            }
        }
        20 if is(name, b"kmem:kmem_cache_free") => {
            c.next(b"call_site")?;
            Event::KmemCacheFree {
                ptr: c.ptr(b"ptr")?,
                name: c.next(b"name")?,
            }
        }
        12 if is(name, b"kmem:kmalloc") => {
            c.next(b"call_site")?;
            let ptr = c.ptr(b"ptr")?;
            let bytes_req = c.dec(b"bytes_req")?;
            let bytes_alloc = c.dec(b"bytes_alloc")?;
            let gfp = c.next(b"gfp_flags")?;
            let node = parse_signed(c.next(b"node")?).and_then(|n| i32::try_from(n).ok())?;
            if gfp.is_empty() {
                return None;
            }
            Event::Kmalloc {
                ptr,
                bytes_req,
                bytes_alloc,
                gfp,
                node,
            }
        }
        10 if is(name, b"kmem:kfree") => {
            c.next(b"call_site")?;
            Event::Kfree {
                ptr: c.ptr(b"ptr")?,
            }
        }
        18 if is(name, b"kmem:mm_page_alloc") => {
            if c.next(b"page")? == b"(nil)" {
                return None;
            }
            let pfn = c.ptr(b"pfn")?;
            let order = c.dec(b"order")?;
            c.next(b"migratetype")?;
            let gfp = c.next(b"gfp_flags")?;
            if order > 63 || gfp.is_empty() {
                return None;
            }
            Event::PageAlloc {
                pfn: Some(pfn),
                order: order as u32,
                gfp,
            }
        }
        17 | 25 if is(name, b"kmem:mm_page_free") || is(name, b"kmem:mm_page_free_batched") => {
            c.next(b"page")?;
            let pfn = c.ptr(b"pfn")?;
            let order = c.dec(b"order")?;
            if order > 63 {
                return None;
            }
            Event::PageFree {
                pfn,
                order: order as u32,
                batched: name.len() == 25,
            }
        }
        26 if is(name, b"percpu:percpu_alloc_percpu") => {
            c.next(b"call_site")?;
            let reserved = flag(c.next(b"reserved")?)?;
            let is_atomic = flag(c.next(b"is_atomic")?)?;
            let size = c.dec(b"size")?;
            let align = c.dec(b"align")?;
            c.next(b"base_addr")?;
            c.next(b"off")?;
            let ptr = c.ptr(b"ptr")?;
            let bytes_alloc = c.dec(b"bytes_alloc")?;
            let gfp = c.next(b"gfp_flags")?;
            if gfp.is_empty() {
                return None;
            }
            Event::PercpuAlloc {
                reserved,
                is_atomic,
                size,
                align,
                ptr,
                bytes_alloc: Some(bytes_alloc),
                gfp: Some(gfp),
            }
        }
        25 if is(name, b"percpu:percpu_free_percpu") => {
            c.next(b"base_addr")?;
            c.next(b"off")?;
            Event::PercpuFree {
                ptr: c.ptr(b"ptr")?,
            }
        }
        _ => return None,
    };
    Some(ev)
}

/// A `%d` of a `bool` field: `0` or `1`.
#[inline]
fn flag(v: &[u8]) -> Option<bool> {
    match v {
        b"0" => Some(false),
        b"1" => Some(true),
        _ => None,
    }
}

/// `bytes` as text that is safe to print on a terminal: UTF-8 as it is,
/// except control characters (C0, DEL and C1) written as `\xNN` (their
/// code point) and bytes that are not UTF-8 as `\xNN`; once the text has
/// `max_chars` bytes, the rest is shown as `...`.
///
/// ```
/// use kmem_replay::parse::printable;
/// assert_eq!(printable(b"ok \x1b[2J\xff\0", 100), r"ok \x1b[2J\xff\x00");
/// assert_eq!(printable("é\u{9b}".as_bytes(), 100), r"é\x9b");
/// assert_eq!(printable(b"abcdef", 3), "abc...");
/// ```
pub fn printable(bytes: &[u8], max_chars: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len().min(max_chars.saturating_add(8)));
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if out.len() >= max_chars {
                out.push_str("...");
                return out;
            }
            if c.is_control() {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            if out.len() >= max_chars {
                out.push_str("...");
                return out;
            }
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Only the CPU of a line, if it has a well-formed header (a cheap scan used
/// to size the machine before the replay).
pub fn line_cpu(line: &[u8]) -> Option<u32> {
    find_cpu(line).map(|(_, cpu, _)| cpu)
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_end(s);
    let i = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    &s[i..]
}

/// Find `<space><digit>... [<digits>]`: returns (index of `[`, cpu, index
/// after `]`).
#[inline]
fn find_cpu(line: &[u8]) -> Option<(usize, u32, usize)> {
    // The bracket is a couple of dozen bytes in: a plain scan beats a
    // vectorised search's setup.
    let mut from = 0;
    while let Some(off) = line[from..].iter().position(|&b| b == b'[') {
        let i = from + off;
        from = i + 1;
        if i < 2 || line[i - 1] != b' ' || !line[i - 2].is_ascii_digit() {
            continue;
        }
        let mut j = i + 1;
        let mut cpu: u32 = 0;
        while j < line.len() && line[j].is_ascii_digit() {
            cpu = match cpu
                .checked_mul(10)
                .and_then(|c| c.checked_add((line[j] - b'0') as u32))
            {
                Some(c) => c,
                None => break,
            };
            j += 1;
        }
        if j > i + 1 && j < line.len() && line[j] == b']' {
            return Some((i, cpu, j + 1));
        }
    }
    None
}

fn parse_header(line: &[u8]) -> Result<(Header<'_>, &[u8]), ParseError> {
    let (bracket, cpu, after) = find_cpu(line).ok_or(ParseError::NoHeader)?;
    // `comm tid ` before the bracket: the tid is the last token.
    let before = trim_end(&line[..bracket]);
    let tid_start = before
        .iter()
        .rposition(|&b| !b.is_ascii_digit())
        .map_or(0, |p| p + 1);
    let tid = parse_dec(&before[tid_start..]).ok_or(ParseError::NoHeader)?;
    let tid = u32::try_from(tid).map_err(|_| ParseError::NoHeader)?;
    let comm = trim(&before[..tid_start]);
    // ` SECS.FRAC:`
    let rest = &line[skip_spaces(line, after)..];
    if rest.is_empty() {
        return Err(ParseError::NoTimestamp);
    }
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or(ParseError::NoTimestamp)?;
    let time_ns = parse_time(&rest[..colon]).ok_or(ParseError::NoTimestamp)?;
    Ok((
        Header {
            comm,
            tid,
            cpu,
            time_ns,
        },
        &rest[colon + 1..],
    ))
}

/// `SECS.FRAC` (any number of fraction digits up to 9) in nanoseconds.
fn parse_time(s: &[u8]) -> Option<u64> {
    let dot = s.iter().position(|&b| b == b'.')?;
    let secs = parse_dec(&s[..dot])?;
    let frac = &s[dot + 1..];
    if frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let mut ns = parse_dec(frac)?;
    for _ in frac.len()..9 {
        ns *= 10;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

/// The event name (without its colon) and the fields after it.
fn split_event(rest: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
    let rest = &rest[skip_spaces(rest, 0)..];
    if rest.is_empty() {
        return Err(ParseError::NoEventName);
    }
    let end = find_space(rest, 0);
    let name = &rest[..end];
    let name = match name {
        [n @ .., b':'] if n.contains(&b':') => n,
        _ => return Err(ParseError::NoEventName),
    };
    Ok((name, &rest[end..]))
}

/// Up to this many `key=value` fields are looked at per line.
const MAX_FIELDS: usize = 16;

/// The `key=value` tokens of a line.
struct Fields<'a> {
    n: usize,
    kv: [(&'a [u8], &'a [u8]); MAX_FIELDS],
}

impl<'a> Fields<'a> {
    #[inline]
    fn new(s: &'a [u8]) -> Self {
        let mut f = Fields {
            n: 0,
            kv: [(&[][..], &[][..]); MAX_FIELDS],
        };
        let mut i = 0;
        while i < s.len() && f.n < MAX_FIELDS {
            if s[i] == b' ' {
                i += 1;
                continue;
            }
            // The token ends at the next space (values can be long: find it
            // with memchr); its key ends at the first `=`, a few bytes in.
            let end = memchr::memchr(b' ', &s[i..]).map_or(s.len(), |e| i + e);
            let tok = &s[i..end];
            if let Some(eq) = tok.iter().position(|&b| b == b'=') {
                f.kv[f.n] = (&tok[..eq], &tok[eq + 1..]);
                f.n += 1;
            }
            i = end;
        }
        f
    }

    #[inline]
    fn get(&self, key: &'static str) -> Option<&'a [u8]> {
        self.kv[..self.n]
            .iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|&(_, v)| v)
    }

    fn need(&self, key: &'static str) -> Result<&'a [u8], ParseError> {
        self.get(key).ok_or(ParseError::MissingField(key))
    }

    /// A pointer: `0x...` hex or `(nil)`.
    fn ptr(&self, key: &'static str) -> Result<u64, ParseError> {
        let v = self.need(key)?;
        if v == b"(nil)" {
            return Ok(0);
        }
        parse_hex(v).ok_or(ParseError::BadValue(key))
    }

    fn dec(&self, key: &'static str) -> Result<u64, ParseError> {
        parse_dec(self.need(key)?).ok_or(ParseError::BadValue(key))
    }

    fn node(&self) -> Result<i32, ParseError> {
        match self.get("node") {
            None => Ok(-1),
            Some(v) => parse_signed(v)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or(ParseError::BadValue("node")),
        }
    }

    fn order(&self) -> Result<u32, ParseError> {
        let o = self.dec("order")?;
        // MAX_PAGE_ORDER is 10 on x86; anything far above is not an order.
        if o > 63 {
            return Err(ParseError::BadValue("order"));
        }
        Ok(o as u32)
    }

    /// A `bool` printed with `%d`.
    fn flag(&self, key: &'static str) -> Result<bool, ParseError> {
        flag(self.need(key)?).ok_or(ParseError::BadValue(key))
    }

    fn gfp(&self) -> Result<&'a [u8], ParseError> {
        let g = self.need("gfp_flags")?;
        if g.is_empty() {
            return Err(ParseError::BadValue("gfp_flags"));
        }
        Ok(g)
    }
}

fn parse_event<'a>(name: &'a [u8], fields: &'a [u8]) -> Result<Event<'a>, ParseError> {
    // The kmem events first: they are nearly all of a trace.
    let ev = match name {
        b"kmem:kmem_cache_alloc" => {
            let f = Fields::new(fields);
            let name = f.need("name")?;
            Event::KmemCacheAlloc {
                ptr: f.ptr("ptr")?,
                name,
                bytes_req: f.dec("bytes_req")?,
                bytes_alloc: f.dec("bytes_alloc")?,
                gfp: f.gfp()?,
                node: f.node()?,
                accounted: match f.get("accounted") {
                    None | Some(b"false") => false,
                    Some(b"true") => true,
                    Some(_) => return Err(ParseError::BadValue("accounted")),
                },
            }
        }
        b"kmem:kmem_cache_free" => {
            let f = Fields::new(fields);
            Event::KmemCacheFree {
                ptr: f.ptr("ptr")?,
                name: f.need("name")?,
            }
        }
        b"kmem:kmalloc" => {
            let f = Fields::new(fields);
            Event::Kmalloc {
                ptr: f.ptr("ptr")?,
                bytes_req: f.dec("bytes_req")?,
                bytes_alloc: f.dec("bytes_alloc")?,
                gfp: f.gfp()?,
                node: f.node()?,
            }
        }
        b"kmem:kfree" => Event::Kfree {
            ptr: Fields::new(fields).ptr("ptr")?,
        },
        b"kmem:mm_page_alloc" => {
            let f = Fields::new(fields);
            let failed = f.get("page") == Some(b"(nil)");
            let pfn = if failed { None } else { Some(f.ptr("pfn")?) };
            Event::PageAlloc {
                pfn,
                order: f.order()?,
                gfp: f.gfp()?,
            }
        }
        b"kmem:mm_page_free" | b"kmem:mm_page_free_batched" => {
            let f = Fields::new(fields);
            let batched = name.len() > b"kmem:mm_page_free".len();
            Event::PageFree {
                pfn: f.ptr("pfn")?,
                order: if batched && f.get("order").is_none() {
                    0
                } else {
                    f.order()?
                },
                batched,
            }
        }
        b"vmalloc:alloc_vmap_area" => {
            let f = Fields::new(fields);
            let failed = match f.need("failed")? {
                b"0" => false,
                b"1" => true,
                _ => return Err(ParseError::BadValue("failed")),
            };
            Event::VmapAlloc {
                va_start: colon_dec(fields, "va_start:")?,
                size: f.dec("size")?,
                align: f.dec("align")?,
                vstart: f.ptr("vstart")?,
                vend: f.ptr("vend")?,
                failed,
            }
        }
        b"vmalloc:free_vmap_area_noflush" => {
            let f = Fields::new(fields);
            Event::VmapFree {
                va_start: f.ptr("va_start")?,
                nr_lazy: f.dec("nr_lazy")?,
                nr_lazy_max: f.dec("nr_lazy_max")?,
            }
        }
        b"vmalloc:purge_vmap_area_lazy" => {
            let f = Fields::new(fields);
            Event::VmapPurge {
                start: f.ptr("start")?,
                end: f.ptr("end")?,
                num_purged: f.dec("num_purged")?,
            }
        }
        b"percpu:percpu_alloc_percpu" => {
            let f = Fields::new(fields);
            Event::PercpuAlloc {
                reserved: f.flag("reserved")?,
                is_atomic: f.flag("is_atomic")?,
                size: f.dec("size")?,
                align: f.dec("align")?,
                ptr: f.ptr("ptr")?,
                // Both came with Linux 6.0.
                bytes_alloc: match f.get("bytes_alloc") {
                    None => None,
                    Some(_) => Some(f.dec("bytes_alloc")?),
                },
                gfp: match f.get("gfp_flags") {
                    None => None,
                    Some(_) => Some(f.gfp()?),
                },
            }
        }
        b"percpu:percpu_free_percpu" => Event::PercpuFree {
            ptr: Fields::new(fields).ptr("ptr")?,
        },
        b"percpu:percpu_alloc_percpu_fail" => {
            let f = Fields::new(fields);
            Event::PercpuAllocFail {
                reserved: f.flag("reserved")?,
                is_atomic: f.flag("is_atomic")?,
                size: f.dec("size")?,
                align: f.dec("align")?,
            }
        }
        b"percpu:percpu_create_chunk" | b"percpu:percpu_destroy_chunk" => Event::PercpuChunk {
            base_addr: Fields::new(fields).ptr("base_addr")?,
            destroy: name == b"percpu:percpu_destroy_chunk",
        },
        _ => Event::Unknown(name),
    };
    Ok(ev)
}

/// The decimal value after `key` (which ends with a colon), printed as
/// `key value` rather than `key=value`: `alloc_vmap_area`'s `va_start: %lu`.
fn colon_dec(fields: &[u8], key: &'static str) -> Result<u64, ParseError> {
    let mut tokens = fields.split(|&b| b == b' ').filter(|t| !t.is_empty());
    while let Some(t) = tokens.next() {
        if t == key.as_bytes() {
            return tokens
                .next()
                .and_then(parse_dec)
                .ok_or(ParseError::BadValue(key));
        }
    }
    Err(ParseError::MissingField(key))
}

#[inline]
fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    if s.len() < 20 {
        // 19 digits cannot overflow: no checks in the loop.
        for &b in s {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + d as u64;
        }
        return Some(v);
    }
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(v)
}

fn parse_signed(s: &[u8]) -> Option<i64> {
    match s {
        [b'-', rest @ ..] => parse_dec(rest)
            .and_then(|v| i64::try_from(v).ok())
            .map(|v| -v),
        _ => parse_dec(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Hex digit values, 0xff for other bytes: one load per digit.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[inline]
fn parse_hex(s: &[u8]) -> Option<u64> {
    let s = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X"))?;
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    let mut bad = 0u8;
    for &b in s {
        let d = HEX[b as usize];
        bad |= d;
        v = (v << 4) | (d & 0xf) as u64;
    }
    // Any invalid byte set the high bits.
    (bad & 0xf0 == 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KMALLOC: &[u8] = b"            bash 24576 [001]  1055.877198:                   kmem:kmalloc: call_site=perf_event_mmap+0x155 ptr=0xffff888106544000 bytes_req=4096 bytes_alloc=4096 gfp_flags=GFP_KERNEL node=-1 accounted=false";

    #[test]
    fn kmalloc_line() {
        let r = parse_line(KMALLOC).unwrap().unwrap();
        assert_eq!(r.header.comm, b"bash");
        assert_eq!(r.header.tid, 24576);
        assert_eq!(r.header.cpu, 1);
        assert_eq!(r.header.time_ns, 1_055_877_198_000);
        assert_eq!(
            r.event,
            Event::Kmalloc {
                ptr: 0xffff888106544000,
                bytes_req: 4096,
                bytes_alloc: 4096,
                gfp: b"GFP_KERNEL",
                node: -1
            }
        );
    }

    #[test]
    fn cache_and_page_lines() {
        let l = b"  rm 1 [000] 1.5: kmem:kmem_cache_alloc: call_site=x+0x1 ptr=0xffff88813171f300 name=maple_node bytes_req=256 bytes_alloc=256 gfp_flags=GFP_KERNEL node=0 accounted=true";
        let r = parse_line(l).unwrap().unwrap();
        assert_eq!(r.header.time_ns, 1_500_000_000);
        assert_eq!(
            r.event,
            Event::KmemCacheAlloc {
                ptr: 0xffff88813171f300,
                name: b"maple_node",
                bytes_req: 256,
                bytes_alloc: 256,
                gfp: b"GFP_KERNEL",
                node: 0,
                accounted: true
            }
        );
        let l = b"bash 2 [001] 1.000001: kmem:mm_page_alloc: page=0x138f5a pfn=0x138f5a order=2 migratetype=0 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO";
        let r = parse_line(l).unwrap().unwrap();
        assert_eq!(
            r.event,
            Event::PageAlloc {
                pfn: Some(0x138f5a),
                order: 2,
                gfp: b"GFP_KERNEL_ACCOUNT|__GFP_ZERO"
            }
        );
        let l = b"bash 2 [001] 1.000001: kmem:mm_page_alloc: page=(nil) pfn=0xffffffffffffffff order=0 migratetype=0 gfp_flags=GFP_KERNEL";
        assert!(matches!(
            parse_line(l).unwrap().unwrap().event,
            Event::PageAlloc { pfn: None, .. }
        ));
        let l =
            b"bash 2 [001] 1.000001: kmem:mm_page_free_batched: page=0x157bf4 pfn=0x157bf4 order=0";
        assert_eq!(
            parse_line(l).unwrap().unwrap().event,
            Event::PageFree {
                pfn: 0x157bf4,
                order: 0,
                batched: true
            }
        );
    }

    #[test]
    fn fields_in_another_order_take_the_general_path() {
        let canonical = parse_line(KMALLOC).unwrap().unwrap();
        let reordered = b"            bash 24576 [001]  1055.877198: kmem:kmalloc: ptr=0xffff888106544000 call_site=perf_event_mmap+0x155 gfp_flags=GFP_KERNEL bytes_alloc=4096 bytes_req=4096";
        let (_, rest) = parse_header(reordered).unwrap();
        let (name, fields) = split_event(rest).unwrap();
        assert_eq!(fast_event(name, fields), None);
        assert_eq!(
            parse_line(reordered).unwrap().unwrap().event,
            canonical.event
        );
        // Every kmem event of the canonical form takes the fast path.
        let (_, rest) = parse_header(KMALLOC).unwrap();
        let (name, fields) = split_event(rest).unwrap();
        assert_eq!(fast_event(name, fields), Some(canonical.event));
    }

    #[test]
    fn spaces_are_found_eight_bytes_at_a_time() {
        let s = b"abcdefghijklmnopqrstuvw xyz";
        for from in 0..s.len() {
            let want = s[from..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(s.len(), |p| from + p);
            assert_eq!(find_space(s, from), want);
        }
        assert_eq!(find_space(b"", 0), 0);
    }

    #[test]
    fn comm_with_spaces_and_brackets() {
        let l = b"Web Content [x] 77 [003] 10.25: kmem:kfree: call_site=a ptr=(nil)";
        let r = parse_line(l).unwrap().unwrap();
        assert_eq!(r.header.comm, b"Web Content [x]");
        assert_eq!((r.header.tid, r.header.cpu), (77, 3));
        assert_eq!(r.event, Event::Kfree { ptr: 0 });
    }

    #[test]
    fn vmalloc_lines() {
        let l = b"            bash  6318 [000]  3679.842964:        vmalloc:alloc_vmap_area: va_start: 18446683600716513280 size=20480 align=16384 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0";
        let r = parse_line(l).unwrap().unwrap();
        assert_eq!((r.header.tid, r.header.cpu), (6318, 0));
        assert_eq!(
            r.event,
            Event::VmapAlloc {
                va_start: 0xffffc90008bb4000,
                size: 20480,
                align: 16384,
                vstart: 0xffffc90000000000,
                vend: 0xffffe8ffffffffff,
                failed: false
            }
        );
        assert_eq!(r.event.kind(), Some(EventKind::VmapAlloc));
        let l = b" kworker/1:1-eve  3546 [001]  3679.877564: vmalloc:free_vmap_area_noflush: va_start=0xffffc90008b6c000 nr_lazy=16295 nr_lazy_max=16384";
        let r = parse_line(l).unwrap().unwrap();
        assert_eq!(r.header.comm, b"kworker/1:1-eve");
        assert_eq!(
            r.event,
            Event::VmapFree {
                va_start: 0xffffc90008b6c000,
                nr_lazy: 16295,
                nr_lazy_max: 16384
            }
        );
        let l = b" kworker/1:1-eve  3546 [001]  3679.902145:   vmalloc:purge_vmap_area_lazy: start=0xffffc90000158000 end=0xffffc9000bdb1000 num_purged=3277";
        assert_eq!(
            parse_line(l).unwrap().unwrap().event,
            Event::VmapPurge {
                start: 0xffffc90000158000,
                end: 0xffffc9000bdb1000,
                num_purged: 3277
            }
        );
        // A purge that found nothing.
        let l = b" kworker/1:1-eve  3546 [001]  3686.598425:   vmalloc:purge_vmap_area_lazy: start=0xffffffffffffffff end=0x0 num_purged=0";
        assert_eq!(
            parse_line(l).unwrap().unwrap().event,
            Event::VmapPurge {
                start: u64::MAX,
                end: 0,
                num_purged: 0
            }
        );
        // A failed try: va_start is an error value (-ERANGE here).
        let l = b"bash 1 [000] 1.0: vmalloc:alloc_vmap_area: va_start: 18446744073709551582 size=8192 align=4096 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=1";
        assert!(matches!(
            parse_line(l).unwrap().unwrap().event,
            Event::VmapAlloc {
                failed: true,
                va_start: 18446744073709551582,
                ..
            }
        ));
    }

    #[test]
    fn malformed_vmalloc_lines() {
        let alloc = |fields: &str| {
            let l = format!("bash 1 [000] 1.0: vmalloc:alloc_vmap_area: {fields}");
            parse_line(l.as_bytes()).map(|r| r.map(|r| r.event.kind()))
        };
        const GOOD: &str = "va_start: 4096 size=8192 align=4096 vstart=0x0 vend=0xffff failed=0";
        assert_eq!(alloc(GOOD), Ok(Some(Some(EventKind::VmapAlloc))));
        let e = alloc("size=8192 align=4096 vstart=0x0 vend=0xffff failed=0").unwrap_err();
        assert_eq!(e, ParseError::MissingField("va_start:"));
        assert_eq!(e.to_string(), "missing field `va_start:`");
        let e = alloc("va_start: x size=8192 align=4096 vstart=0x0 vend=0xffff failed=0");
        assert_eq!(e, Err(ParseError::BadValue("va_start:")));
        let e = alloc("va_start: 4096 size=8192 align=4096 vstart=0x0 vend=0xffff failed=2");
        assert_eq!(e, Err(ParseError::BadValue("failed")));
        let e = alloc("va_start: 4096 size=8192 vstart=0x0 vend=0xffff failed=0").unwrap_err();
        assert_eq!(e.to_string(), "missing field `align=`");
        assert_eq!(
            parse_line(b"k 1 [001] 1.0: vmalloc:free_vmap_area_noflush: va_start=0x1000 nr_lazy=5"),
            Err(ParseError::MissingField("nr_lazy_max"))
        );
        assert_eq!(
            parse_line(b"k 1 [001] 1.0: vmalloc:purge_vmap_area_lazy: start=0x1000 end=0x2000 num_purged=-1"),
            Err(ParseError::BadValue("num_purged"))
        );
    }

    const PCPU_ALLOC: &[u8] = b"       perf-exec  6318 [000]  3679.839357:     percpu:percpu_alloc_percpu: call_site=mm_init+0x2e7 reserved=0 is_atomic=0 size=16 align=8 base_addr=0xffffe8ffffc00000 off=35952 ptr=0x60795baffc70 bytes_alloc=64 gfp_flags=GFP_KERNEL";

    #[test]
    fn percpu_lines() {
        let r = parse_line(PCPU_ALLOC).unwrap().unwrap();
        assert_eq!(
            (r.header.comm, r.header.tid, r.header.cpu),
            (&b"perf-exec"[..], 6318, 0)
        );
        let want = Event::PercpuAlloc {
            reserved: false,
            is_atomic: false,
            size: 16,
            align: 8,
            ptr: 0x60795baffc70,
            bytes_alloc: Some(64),
            gfp: Some(b"GFP_KERNEL"),
        };
        assert_eq!(r.event, want);
        assert_eq!(r.event.kind(), Some(EventKind::PercpuAlloc));
        // Linux's field order takes the fast path; the general one agrees.
        let (_, rest) = parse_header(PCPU_ALLOC).unwrap();
        let (name, fields) = split_event(rest).unwrap();
        assert_eq!(fast_event(name, fields), Some(want));
        assert_eq!(parse_event(name, fields), Ok(want));
        let l = b"bash 24576 [001]  1055.879237:  percpu:percpu_free_percpu: base_addr=0xffffe8ffffc00000 off=29928 ptr=0x60795bafe4e8";
        assert_eq!(
            parse_line(l).unwrap().unwrap().event,
            Event::PercpuFree {
                ptr: 0x60795bafe4e8
            }
        );
        let (_, rest) = parse_header(l).unwrap();
        let (name, fields) = split_event(rest).unwrap();
        assert!(fast_event(name, fields).is_some());
        // Reserved, atomic, GFP_NOWAIT.
        let l = b"insmod 7 [001] 2.0: percpu:percpu_alloc_percpu: call_site=load_module+0x1 reserved=1 is_atomic=1 size=4096 align=4096 base_addr=0xffff888100000000 off=0 ptr=0x1000 bytes_alloc=16384 gfp_flags=GFP_NOWAIT";
        assert!(matches!(
            parse_line(l).unwrap().unwrap().event,
            Event::PercpuAlloc {
                reserved: true,
                is_atomic: true,
                size: 4096,
                align: 4096,
                gfp: Some(b"GFP_NOWAIT"),
                ..
            }
        ));
        // Before Linux 6.0: no call_site, bytes_alloc, gfp_flags.
        let l = b"bash 1 [000] 1.0: percpu:percpu_alloc_percpu: reserved=0 is_atomic=1 size=8 align=8 base_addr=0xffff888100000000 off=8 ptr=0x8";
        assert!(matches!(
            parse_line(l).unwrap().unwrap().event,
            Event::PercpuAlloc {
                is_atomic: true,
                bytes_alloc: None,
                gfp: None,
                ptr: 8,
                ..
            }
        ));
        let l = b"bash 1 [000] 1.0: percpu:percpu_alloc_percpu_fail: reserved=0 is_atomic=1 size=32 align=8";
        assert_eq!(
            parse_line(l).unwrap().unwrap().event,
            Event::PercpuAllocFail {
                reserved: false,
                is_atomic: true,
                size: 32,
                align: 8
            }
        );
        for (name, destroy, kind) in [
            ("create", false, EventKind::PercpuCreateChunk),
            ("destroy", true, EventKind::PercpuDestroyChunk),
        ] {
            let l = format!(
                "kworker/0:1 9 [000] 1.0: percpu:percpu_{name}_chunk: base_addr=0xffffc8ffffe00000"
            );
            let ev = parse_line(l.as_bytes()).unwrap().unwrap().event;
            assert_eq!(
                ev,
                Event::PercpuChunk {
                    base_addr: 0xffffc8ffffe00000,
                    destroy
                }
            );
            assert_eq!(ev.kind(), Some(kind));
        }
    }

    #[test]
    fn malformed_percpu_lines() {
        let alloc = |fields: &str| {
            let l = format!("bash 1 [000] 1.0: percpu:percpu_alloc_percpu: {fields}");
            parse_line(l.as_bytes()).map(|r| r.map(|r| r.event.kind()))
        };
        const GOOD: &str = "call_site=f reserved=0 is_atomic=0 size=16 align=8 base_addr=0x0 off=0 ptr=0x10 bytes_alloc=64 gfp_flags=GFP_KERNEL";
        assert_eq!(alloc(GOOD), Ok(Some(Some(EventKind::PercpuAlloc))));
        for (bad, err) in [
            (
                GOOD.replace("reserved=0", "reserved=2"),
                ParseError::BadValue("reserved"),
            ),
            (
                GOOD.replace("is_atomic=0 ", ""),
                ParseError::MissingField("is_atomic"),
            ),
            (
                GOOD.replace("size=16", "size=-16"),
                ParseError::BadValue("size"),
            ),
            (
                GOOD.replace("ptr=0x10", "ptr=16"),
                ParseError::BadValue("ptr"),
            ),
            (
                GOOD.replace("bytes_alloc=64", "bytes_alloc=lots"),
                ParseError::BadValue("bytes_alloc"),
            ),
            (
                GOOD.replace("gfp_flags=GFP_KERNEL", "gfp_flags="),
                ParseError::BadValue("gfp_flags"),
            ),
        ] {
            assert_eq!(alloc(&bad), Err(err), "{bad}");
        }
        assert_eq!(
            parse_line(b"k 1 [001] 1.0: percpu:percpu_free_percpu: base_addr=0x1000 off=0"),
            Err(ParseError::MissingField("ptr"))
        );
        assert_eq!(
            parse_line(
                b"k 1 [001] 1.0: percpu:percpu_alloc_percpu_fail: reserved=0 is_atomic=0 size=8"
            ),
            Err(ParseError::MissingField("align"))
        );
        assert_eq!(
            parse_line(b"k 1 [001] 1.0: percpu:percpu_create_chunk: base_addr=nowhere"),
            Err(ParseError::BadValue("base_addr"))
        );
    }

    #[test]
    fn other_events() {
        let l = b"bash 24576 [001]  1055.879237: sched:sched_switch: prev_comm=bash";
        assert_eq!(
            parse_line(l).unwrap().unwrap().event,
            Event::Unknown(b"sched:sched_switch")
        );
    }

    #[test]
    fn blank_and_comment_lines() {
        assert_eq!(parse_line(b""), Ok(None));
        assert_eq!(parse_line(b"   \r"), Ok(None));
        assert_eq!(parse_line(b"# ========"), Ok(None));
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(parse_line(b"hello world"), Err(ParseError::NoHeader));
        assert_eq!(
            parse_line(b"bash 1 [001] soon: kmem:kfree: ptr=(nil)"),
            Err(ParseError::NoTimestamp)
        );
        assert_eq!(
            parse_line(b"bash 1 [001] 1.0: kfree ptr=(nil)"),
            Err(ParseError::NoEventName)
        );
        assert_eq!(
            parse_line(b"bash 1 [001] 1.0: kmem:kfree: call_site=x"),
            Err(ParseError::MissingField("ptr"))
        );
        assert_eq!(
            parse_line(b"bash 1 [001] 1.0: kmem:kfree: ptr=0xzz"),
            Err(ParseError::BadValue("ptr"))
        );
        let cut =
            &KMALLOC[..KMALLOC.len() - b" gfp_flags=GFP_KERNEL node=-1 accounted=false".len()];
        assert_eq!(parse_line(cut), Err(ParseError::MissingField("gfp_flags")));
        assert_eq!(
            parse_line(b"bash 1 [001] 1.0: kmem:mm_page_free: pfn=0x1 order=99"),
            Err(ParseError::BadValue("order"))
        );
        assert!(ParseError::MissingField("ptr")
            .to_string()
            .contains("`ptr=`"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_hex(b"0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex(b"0x1ffffffffffffffff"), None);
        assert_eq!(parse_hex(b"12"), None);
        assert_eq!(parse_dec(b"18446744073709551616"), None);
        assert_eq!(parse_signed(b"-1"), Some(-1));
        assert_eq!(parse_time(b"12.345678901"), Some(12_345_678_901));
        assert_eq!(parse_time(b"12"), None);
        assert_eq!(line_cpu(KMALLOC), Some(1));
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(k.name().as_bytes()), Some(k));
            assert_eq!(EventKind::ALL[k.index()], k);
        }
    }
}
