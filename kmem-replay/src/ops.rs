//! The parsing stage: lines in, owned fixed-size operations out, on a
//! thread of its own.
//!
//! A replay is a three-stage pipeline: the [reader](crate::input) thread
//! reads (and decompresses) the trace into chunks of whole lines, the
//! *parser* thread here turns each line into an [`Op`], and the replaying
//! thread applies the ops to its target in order. Parsing is independent
//! of the allocator's state, so it overlaps with the replay on a second
//! core; the replay itself stays sequential in trace order.
//!
//! An [`Op`] is plain data: the event's numbers, its GFP flags already
//! parsed with [`kmem::gfp`] (each distinct string once, then from a map),
//! and the cache name and command as ids of strings interned here. Ops go
//! to the replay in [`Batch`]es of up to [`BATCH_LINES`] lines through a
//! channel of [`BATCH_DEPTH`] batches; emptied batches come back for
//! reuse, so memory stays constant. Each batch also carries the strings
//! first interned in it and the messages of its malformed lines (the first
//! `max_errors` of the whole trace).
//!
//! Text from the trace that reaches a message, a cache name or a task name
//! has its control bytes escaped ([`printable`]): a trace's bytes never
//! drive the terminal the report is printed on.
//!
//! An event on a CPU the machine lacks (`cpu >= nr_cpus`, first seen after
//! the machine was sized, or `--cpus` gave fewer) runs as CPU
//! `cpu % nr_cpus`; [`Op::traced_cpu`] keeps the trace's CPU for the
//! report. A CPU id at or above kmem's `NR_CPUS` (1024) is a malformed line.

use crate::input::{Chunk, TraceInput, CHUNK_SIZE};
use crate::parse::{parse_line, printable, Event};
use kmem::gfp::Gfp;
use kmem::mmzone::NR_CPUS;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

/// Lines per batch.
pub const BATCH_LINES: usize = 4096;
/// Batches in flight between the parser and the replay.
pub const BATCH_DEPTH: usize = 4;

/// What an [`Op`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `kmem:kmalloc`: `a` ptr, `b` bytes_req, `c` bytes_alloc.
    Kmalloc,
    /// `kmem:kfree`: `a` ptr.
    Kfree,
    /// `kmem:kmem_cache_alloc`: `a` ptr, `b` bytes_req, `c` bytes_alloc,
    /// `name` the cache.
    CacheAlloc,
    /// `kmem:kmem_cache_free`: `a` ptr, `name` the cache.
    CacheFree,
    /// `kmem:mm_page_alloc`: `a` pfn (`u64::MAX`: Linux's allocation
    /// failed), `b` order.
    PageAlloc,
    /// `kmem:mm_page_free`: `a` pfn, `b` order.
    PageFree,
    /// `kmem:mm_page_free_batched`: `a` pfn, `b` order.
    PageFreeBatched,
    /// `vmalloc:alloc_vmap_area`: `a` va_start (0: Linux's try failed,
    /// `failed=1`), `b` size, `c` align.
    VmapAlloc,
    /// `vmalloc:free_vmap_area_noflush`: `a` va_start, `b` nr_lazy, `c`
    /// nr_lazy_max.
    VmapFree,
    /// `vmalloc:purge_vmap_area_lazy`: `a` start, `b` end, `c` num_purged.
    VmapPurge,
    /// `percpu:percpu_alloc_percpu`: `a` ptr, `b` size, `c` align, `d`
    /// bytes_alloc; `gfp` the flags (derived from `is_atomic` when the
    /// trace has none, before Linux 6.0).
    PercpuAlloc {
        /// `reserved=1`.
        reserved: bool,
        /// `is_atomic=1`.
        is_atomic: bool,
        /// The trace printed `gfp_flags` (else `gfp` was derived).
        gfp_traced: bool,
        /// The trace printed `bytes_alloc` (else `d` is 0).
        bytes_alloc_traced: bool,
    },
    /// `percpu:percpu_free_percpu`: `a` ptr.
    PercpuFree,
    /// `percpu:percpu_alloc_percpu_fail`: `b` size, `c` align.
    PercpuAllocFail {
        /// `reserved=1`.
        reserved: bool,
        /// `is_atomic=1`.
        is_atomic: bool,
    },
    /// `percpu:percpu_create_chunk` (`destroy: false`) or
    /// `percpu:percpu_destroy_chunk`: `a` base_addr.
    PercpuChunk {
        /// `percpu_destroy_chunk`.
        destroy: bool,
    },
    /// An event outside the input format: `name` its name.
    Unknown,
    /// A line that could not be replayed as written (its message, if kept,
    /// is in the batch).
    Malformed,
}

/// One parsed line, owned; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// What it does.
    pub kind: OpKind,
    /// 1-based line number.
    pub line: u64,
    /// Timestamp, nanoseconds.
    pub time_ns: u64,
    /// Pointer, page frame number, vmap area address, per-CPU pointer or
    /// chunk address (see [`OpKind`]).
    pub a: u64,
    /// bytes_req, order, or a vmalloc or percpu event's second number.
    pub b: u64,
    /// bytes_alloc, or a vmalloc or percpu event's third number.
    pub c: u64,
    /// A percpu allocation's bytes_alloc.
    pub d: u64,
    /// The CPU the event runs on: `traced_cpu`, or `traced_cpu % nr_cpus`
    /// when the machine lacks it.
    pub cpu: u32,
    /// The trace's CPU (below `NR_CPUS`), or with `--spread-threads` the
    /// CPU the spread gave the event's thread.
    pub traced_cpu: u16,
    /// Thread id.
    pub tid: u32,
    /// Interned command name.
    pub comm: u32,
    /// Interned cache or event name.
    pub name: u32,
    /// GFP flags.
    pub gfp: Gfp,
    /// NUMA node asked for (-1: any).
    pub node: i32,
    /// `accounted=true`.
    pub accounted: bool,
}

/// Ops of up to [`BATCH_LINES`] lines, and what came with them.
#[derive(Debug, Default)]
pub struct Batch {
    /// The ops, in trace order.
    pub ops: Vec<Op>,
    /// Lines the batch covers (blank and comment lines give no op).
    pub lines: u64,
    /// Strings interned first in this batch, in id order.
    pub strings: Vec<Box<str>>,
    /// Messages of malformed lines kept.
    pub errors: Vec<String>,
    /// The input failed here (I/O or decompression); the batch is the last.
    pub error: Option<String>,
    /// The parser's CPU time and its time waiting for the reader, in the
    /// last batch.
    pub parser_times: Option<(Duration, Duration)>,
}

/// The parser's state: GFP strings seen, interned strings, errors kept.
pub struct Parser {
    nr_cpus: u32,
    max_errors: usize,
    errors_kept: usize,
    line: u64,
    gfps: hashbrown::HashMap<Vec<u8>, Gfp>,
    strings: hashbrown::HashMap<Vec<u8>, u32>,
    /// `--spread-threads`: each thread on a CPU of its own.
    spread: Option<crate::spread::Spread>,
}

impl Parser {
    /// A parser for a machine of `nr_cpus` CPUs (events on others run as
    /// CPU `cpu % nr_cpus`; on CPUs at or above `NR_CPUS` they are
    /// malformed lines) keeping the first `max_errors` messages.
    pub fn new(nr_cpus: u32, max_errors: usize) -> Self {
        Parser {
            nr_cpus: nr_cpus.max(1),
            max_errors,
            errors_kept: 0,
            line: 0,
            gfps: hashbrown::HashMap::new(),
            strings: hashbrown::HashMap::new(),
            spread: None,
        }
    }

    /// Run the `k`-th thread of the trace on CPU `(nr_cpus - 1 - 7k) mod
    /// nr_cpus` instead of the CPU it was traced on (see
    /// [`crate::spread`]).
    pub fn spread_threads(mut self) -> Self {
        self.spread = Some(crate::spread::Spread::new(self.nr_cpus));
        self
    }

    fn intern(&mut self, s: &[u8], batch: &mut Batch) -> u32 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.insert(s.to_vec(), id);
        batch
            .strings
            .push(printable(s, usize::MAX).into_boxed_str());
        id
    }

    fn gfp(&mut self, s: &[u8]) -> Result<Gfp, String> {
        if let Some(&g) = self.gfps.get(s) {
            return Ok(g);
        }
        let text = std::str::from_utf8(s).map_err(|_| "gfp_flags is not text".to_string())?;
        let g = Gfp::parse(text).map_err(|e| format!("bad gfp_flags `{text}`: {e}"))?;
        self.gfps.insert(s.to_vec(), g);
        Ok(g)
    }

    fn malformed(&mut self, what: &dyn std::fmt::Display, line: &[u8], batch: &mut Batch) {
        if self.errors_kept < self.max_errors {
            self.errors_kept += 1;
            let text = printable(line.trim_ascii(), 200);
            batch.errors.push(printable(
                format!("line {}: {what}: `{text}`", self.line).as_bytes(),
                usize::MAX,
            ));
        }
        batch.ops.push(Op {
            kind: OpKind::Malformed,
            line: self.line,
            ..BLANK
        });
    }

    /// Parse the next line of the trace into `batch`.
    #[inline]
    pub fn line(&mut self, line: &[u8], batch: &mut Batch) {
        self.line += 1;
        batch.lines += 1;
        let rec = match parse_line(line) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => return self.malformed(&e, line, batch),
        };
        let h = rec.header;
        if h.cpu as usize >= NR_CPUS {
            let msg = format!(
                "CPU {} is beyond the {NR_CPUS} CPUs kmem can simulate (NR_CPUS; \
                 --cpus takes 1 to {NR_CPUS}): event skipped",
                h.cpu
            );
            return self.malformed(&msg, line, batch);
        }
        let comm = self.intern(h.comm, batch);
        let cpu = match &mut self.spread {
            Some(s) => s.cpu_of(h.tid, h.cpu),
            None => h.cpu,
        };
        let mut op = Op {
            line: self.line,
            time_ns: h.time_ns,
            cpu: cpu % self.nr_cpus,
            traced_cpu: cpu as u16,
            tid: h.tid,
            comm,
            ..BLANK
        };
        let gfp = match rec.event {
            Event::Kmalloc { gfp, .. }
            | Event::KmemCacheAlloc { gfp, .. }
            | Event::PageAlloc { gfp, .. }
            | Event::PercpuAlloc { gfp: Some(gfp), .. } => Some(gfp),
            _ => None,
        };
        if let Some(g) = gfp {
            match self.gfp(g) {
                Ok(g) => op.gfp = g,
                Err(msg) => return self.malformed(&msg, line, batch),
            }
        }
        match rec.event {
            Event::Kmalloc {
                ptr,
                bytes_req,
                bytes_alloc,
                node,
                ..
            } => {
                op.kind = OpKind::Kmalloc;
                (op.a, op.b, op.c, op.node) = (ptr, bytes_req, bytes_alloc, node);
            }
            Event::Kfree { ptr } => (op.kind, op.a) = (OpKind::Kfree, ptr),
            Event::KmemCacheAlloc {
                ptr,
                name,
                bytes_req,
                bytes_alloc,
                node,
                accounted,
                ..
            } => {
                op.kind = OpKind::CacheAlloc;
                (op.a, op.b, op.c, op.node) = (ptr, bytes_req, bytes_alloc, node);
                op.accounted = accounted;
                op.name = self.intern(name, batch);
            }
            Event::KmemCacheFree { ptr, name } => {
                (op.kind, op.a) = (OpKind::CacheFree, ptr);
                op.name = self.intern(name, batch);
            }
            Event::PageAlloc { pfn, order, .. } => {
                op.kind = OpKind::PageAlloc;
                (op.a, op.b) = (pfn.unwrap_or(u64::MAX), order as u64);
            }
            Event::PageFree {
                pfn,
                order,
                batched,
            } => {
                op.kind = if batched {
                    OpKind::PageFreeBatched
                } else {
                    OpKind::PageFree
                };
                (op.a, op.b) = (pfn, order as u64);
            }
            Event::VmapAlloc {
                va_start,
                size,
                align,
                failed,
                ..
            } => {
                op.kind = OpKind::VmapAlloc;
                (op.a, op.b, op.c) = (if failed { 0 } else { va_start }, size, align);
            }
            Event::VmapFree {
                va_start,
                nr_lazy,
                nr_lazy_max,
            } => {
                op.kind = OpKind::VmapFree;
                (op.a, op.b, op.c) = (va_start, nr_lazy, nr_lazy_max);
            }
            Event::VmapPurge {
                start,
                end,
                num_purged,
            } => {
                op.kind = OpKind::VmapPurge;
                (op.a, op.b, op.c) = (start, end, num_purged);
            }
            Event::PercpuAlloc {
                reserved,
                is_atomic,
                size,
                align,
                ptr,
                bytes_alloc,
                gfp,
            } => {
                op.kind = OpKind::PercpuAlloc {
                    reserved,
                    is_atomic,
                    gfp_traced: gfp.is_some(),
                    bytes_alloc_traced: bytes_alloc.is_some(),
                };
                (op.a, op.b, op.c, op.d) = (ptr, size, align, bytes_alloc.unwrap_or(0));
                if gfp.is_none() {
                    // What pcpu_alloc() was given before Linux 6.0 told
                    // atomic from not: GFP_KERNEL, or less.
                    op.gfp = if is_atomic {
                        kmem::gfp::GFP_NOWAIT
                    } else {
                        kmem::gfp::GFP_KERNEL
                    };
                }
            }
            Event::PercpuFree { ptr } => (op.kind, op.a) = (OpKind::PercpuFree, ptr),
            Event::PercpuAllocFail {
                reserved,
                is_atomic,
                size,
                align,
            } => {
                op.kind = OpKind::PercpuAllocFail {
                    reserved,
                    is_atomic,
                };
                (op.b, op.c) = (size, align);
            }
            Event::PercpuChunk { base_addr, destroy } => {
                (op.kind, op.a) = (OpKind::PercpuChunk { destroy }, base_addr);
            }
            Event::Unknown(name) => {
                op.kind = OpKind::Unknown;
                op.name = self.intern(name, batch);
            }
        }
        batch.ops.push(op);
    }

    /// A line longer than the reader holds: one malformed line.
    fn long_line(&mut self, start: &[u8], len: u64, batch: &mut Batch) {
        self.line += 1;
        batch.lines += 1;
        let msg = format!(
            "a line of {len} bytes, longer than the {} MiB a line may have (no perf script \
             line is): skipped",
            CHUNK_SIZE >> 20
        );
        self.malformed(&msg, start, batch);
    }

    /// Parse all of `input` into batches sent on `tx` (reusing the ones
    /// coming back on `back`), until the input ends, fails, or the replay
    /// stops listening.
    pub fn run(mut self, input: &mut TraceInput, tx: &SyncSender<Batch>, back: &Receiver<Batch>) {
        let cpu0 = crate::engine::thread_cpu_time();
        let wait0 = input.waited();
        let mut batch = Batch::default();
        let fresh = |back: &Receiver<Batch>| {
            let mut b = back.try_recv().unwrap_or_else(|_| Batch {
                ops: Vec::with_capacity(BATCH_LINES),
                ..Batch::default()
            });
            b.ops.clear();
            b.lines = 0;
            b.strings.clear();
            b.errors.clear();
            b.error = None;
            b.parser_times = None;
            b
        };
        while let Some(chunk) = input.next_chunk() {
            let chunk = match chunk {
                Ok(Chunk::Lines(c)) => c,
                Ok(Chunk::LongLine { start, len }) => {
                    self.long_line(&start, len, &mut batch);
                    input.recycle(start);
                    continue;
                }
                Err(e) => {
                    batch.error = Some(e.to_string());
                    break;
                }
            };
            let mut from = 0;
            let ends = memchr::memchr_iter(b'\n', &chunk).chain(
                // The last line of a trace may lack its newline.
                (chunk.last() != Some(&b'\n')).then_some(chunk.len()),
            );
            for end in ends {
                self.line(&chunk[from..end], &mut batch);
                from = end + 1;
                if batch.lines as usize >= BATCH_LINES {
                    let full = std::mem::replace(&mut batch, fresh(back));
                    if tx.send(full).is_err() {
                        input.recycle(chunk);
                        return;
                    }
                }
            }
            input.recycle(chunk);
        }
        batch.parser_times = Some((
            crate::engine::thread_cpu_time().saturating_sub(cpu0),
            input.waited() - wait0,
        ));
        let _ = tx.send(batch);
    }
}

/// An op with every field empty.
const BLANK: Op = Op {
    kind: OpKind::Malformed,
    line: 0,
    time_ns: 0,
    a: 0,
    b: 0,
    c: 0,
    d: 0,
    cpu: 0,
    traced_cpu: 0,
    tid: 0,
    comm: 0,
    name: 0,
    gfp: Gfp::from_bits(0),
    node: -1,
    accounted: false,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_ops_with_interned_strings() {
        let mut p = Parser::new(2, 1);
        let mut b = Batch::default();
        p.line(b"tar 5 [001] 1.5: kmem:kmem_cache_alloc: call_site=f ptr=0x10 name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true", &mut b);
        p.line(b"", &mut b);
        p.line(
            b"tar 5 [001] 1.6: kmem:kmem_cache_free: call_site=f ptr=0x10 name=dentry",
            &mut b,
        );
        p.line(b"tar 5 [009] 1.6: kmem:kfree: call_site=f ptr=0x10", &mut b);
        p.line(b"junk", &mut b);
        assert_eq!(b.lines, 5);
        assert_eq!(b.ops.len(), 4);
        let o = b.ops[0];
        assert_eq!(
            (o.kind, o.line, o.cpu, o.tid, o.a, o.b, o.c),
            (OpKind::CacheAlloc, 1, 1, 5, 0x10, 192, 192)
        );
        assert_eq!(o.gfp, kmem::gfp::GFP_KERNEL);
        assert!(o.accounted);
        assert_eq!(&*b.strings[o.comm as usize], "tar");
        assert_eq!(&*b.strings[o.name as usize], "dentry");
        assert_eq!(b.strings.len(), 2);
        assert_eq!((b.ops[1].kind, b.ops[1].line), (OpKind::CacheFree, 3));
        assert_eq!(b.ops[1].name, o.name);
        // CPU 9 of a 2-CPU machine runs as CPU 1.
        assert_eq!(
            (
                b.ops[2].kind,
                b.ops[2].line,
                b.ops[2].cpu,
                b.ops[2].traced_cpu
            ),
            (OpKind::Kfree, 4, 1, 9)
        );
        assert_eq!((b.ops[3].kind, b.ops[3].line), (OpKind::Malformed, 5));
        // Only the first message is kept.
        assert_eq!(b.errors.len(), 1);
        assert!(b.errors[0].starts_with("line 5: expected `COMM TID [CPU]"));
    }

    #[test]
    fn percpu_lines_become_ops_with_their_flags() {
        let mut p = Parser::new(2, 10);
        let mut b = Batch::default();
        p.line(b"bash 7 [001] 1.0: percpu:percpu_alloc_percpu: call_site=f reserved=0 is_atomic=1 size=16 align=8 base_addr=0xffffe8ffffc00000 off=8 ptr=0x60795baffc70 bytes_alloc=64 gfp_flags=GFP_NOWAIT", &mut b);
        // Before Linux 6.0: no gfp_flags, no bytes_alloc.
        p.line(b"bash 7 [001] 1.0: percpu:percpu_alloc_percpu: reserved=1 is_atomic=0 size=8 align=8 base_addr=0x0 off=8 ptr=0x10", &mut b);
        p.line(
            b"bash 7 [000] 1.0: percpu:percpu_free_percpu: base_addr=0x0 off=8 ptr=0x10",
            &mut b,
        );
        p.line(b"bash 7 [000] 1.0: percpu:percpu_alloc_percpu_fail: reserved=0 is_atomic=1 size=32 align=16", &mut b);
        p.line(
            b"kworker/0:1 9 [000] 1.0: percpu:percpu_destroy_chunk: base_addr=0xffffc8ffffe00000",
            &mut b,
        );
        p.line(b"bash 7 [000] 1.0: percpu:percpu_alloc_percpu: call_site=f reserved=0 is_atomic=0 size=16 align=8 base_addr=0x0 off=8 ptr=0x10 bytes_alloc=64 gfp_flags=GFP_BOGUS", &mut b);
        let o = b.ops[0];
        assert_eq!(
            o.kind,
            OpKind::PercpuAlloc {
                reserved: false,
                is_atomic: true,
                gfp_traced: true,
                bytes_alloc_traced: true
            }
        );
        assert_eq!((o.a, o.b, o.c, o.d, o.cpu), (0x60795baffc70, 16, 8, 64, 1));
        assert_eq!(o.gfp, kmem::gfp::GFP_NOWAIT);
        let o = b.ops[1];
        assert_eq!(
            o.kind,
            OpKind::PercpuAlloc {
                reserved: true,
                is_atomic: false,
                gfp_traced: false,
                bytes_alloc_traced: false
            }
        );
        assert_eq!((o.a, o.b, o.c, o.d), (0x10, 8, 8, 0));
        assert_eq!(o.gfp, kmem::gfp::GFP_KERNEL);
        assert_eq!((b.ops[2].kind, b.ops[2].a), (OpKind::PercpuFree, 0x10));
        let o = b.ops[3];
        assert_eq!(
            (o.kind, o.b, o.c),
            (
                OpKind::PercpuAllocFail {
                    reserved: false,
                    is_atomic: true
                },
                32,
                16
            )
        );
        assert_eq!(
            (b.ops[4].kind, b.ops[4].a),
            (OpKind::PercpuChunk { destroy: true }, 0xffffc8ffffe00000)
        );
        // GFP flags are parsed as for the kmem events: bad ones are a
        // malformed line.
        assert_eq!(b.ops[5].kind, OpKind::Malformed);
        assert!(
            b.errors[0].starts_with("line 6: bad gfp_flags `GFP_BOGUS`"),
            "{:?}",
            b.errors
        );
    }

    #[test]
    fn a_cpu_beyond_nr_cpus_is_a_malformed_line_naming_cpus() {
        let mut p = Parser::new(2, 10);
        let mut b = Batch::default();
        p.line(
            b"tar 5 [5000] 1.6: kmem:kfree: call_site=f ptr=0x10",
            &mut b,
        );
        p.line(b"tar 5 [063] 1.6: kmem:kfree: call_site=f ptr=0x10", &mut b);
        assert_eq!(b.ops[0].kind, OpKind::Malformed);
        assert!(
            b.errors[0].starts_with(
                "line 1: CPU 5000 is beyond the 1024 CPUs kmem can simulate (NR_CPUS; --cpus takes 1 to 1024)"
            ),
            "{}",
            b.errors[0]
        );
        assert_eq!((b.ops[1].cpu, b.ops[1].traced_cpu), (1, 63));
    }

    #[test]
    fn control_bytes_never_reach_messages_or_names() {
        let mut p = Parser::new(1, 10);
        let mut b = Batch::default();
        p.line(b"\x1b[2J\x07 junk \xff\x9b", &mut b);
        p.line(
            b"t\x1b]0;x\x07 5 [000] 1.5: kmem:kmem_cache_alloc: call_site=f ptr=0x10 name=evil\x1b[31m bytes_req=8 bytes_alloc=8 gfp_flags=GFP_KERNEL node=-1 accounted=false",
            &mut b,
        );
        assert_eq!(
            b.errors[0],
            r"line 1: expected `COMM TID [CPU] SECS.USECS: EVENT: FIELDS` (perf script -F comm,tid,cpu,time,event,trace): `\x1b[2J\x07 junk \xff\x9b`"
        );
        let names: Vec<&str> = b.strings.iter().map(|s| &**s).collect();
        assert_eq!(names, [r"t\x1b]0;x\x07", r"evil\x1b[31m"]);
        for s in b.errors.iter().map(|s| s.as_str()).chain(names) {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
    }
}
