//! What the first bytes of a trace show, read before the machine is built
//! ([`TraceInput::scan_head`](crate::input::TraceInput::scan_head)).

use crate::engine::is_linux_slab_page;
use crate::parse::{parse_line, Event};
use crate::reclaim::{Evidence, SlabPageTracker};
use kmem::gfp::{Gfp, __GFP_RECLAIMABLE};
use kmem::mmzone::NR_CPUS;
use std::collections::BTreeMap;

/// What a trace's head shows; see [`TraceInput::scan_head`](crate::input::TraceInput::scan_head).
#[derive(Clone, Debug, Default)]
pub struct HeadScan {
    /// Bytes scanned.
    pub bytes: u64,
    /// Whether the scan reached the end of the trace.
    pub complete: bool,
    /// The I/O or decompression error that ended the scan, if any.
    pub error: Option<String>,
    /// Lines scanned.
    pub lines: u64,
    /// Lines that are perf script events (any event name).
    pub event_lines: u64,
    /// Highest CPU id below kmem's `NR_CPUS` on an event line, plus one (0
    /// when none).
    pub cpus: u32,
    /// The highest CPU id at or above `NR_CPUS`, if any line has one.
    pub cpu_beyond_nr_cpus: Option<u32>,
    /// The traced machine's CPUs as `perf script --header` prints them
    /// (`# nrcpus avail : N`), if the trace has that header.
    pub header_cpus: Option<u32>,
    /// Per cache name: Linux slab pages paired with it
    /// ([`crate::reclaim`]).
    pub slab_pages: BTreeMap<String, Evidence>,
    tracker: SlabPageTracker,
}

impl HeadScan {
    /// Take in one line.
    pub(crate) fn line(&mut self, line: &[u8]) {
        self.lines += 1;
        if let Some(rest) = line.strip_prefix(b"# nrcpus avail :") {
            self.header_cpus = std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return;
        }
        let Ok(Some(rec)) = parse_line(line) else {
            return;
        };
        self.event_lines += 1;
        let (cpu, tid) = (rec.header.cpu, rec.header.tid);
        if cpu as usize >= NR_CPUS {
            self.cpu_beyond_nr_cpus = Some(self.cpu_beyond_nr_cpus.map_or(cpu, |c| c.max(cpu)));
            return;
        }
        self.cpus = self.cpus.max(cpu + 1);
        let gfp = |g: &[u8]| std::str::from_utf8(g).ok().and_then(|s| Gfp::parse(s).ok());
        match rec.event {
            Event::PageAlloc {
                pfn: Some(_),
                gfp: g,
                ..
            } => match gfp(g) {
                Some(g) if is_linux_slab_page(g) => {
                    self.tracker
                        .slab_page(cpu, tid, g.contains(__GFP_RECLAIMABLE))
                }
                _ => self.tracker.other(cpu),
            },
            Event::Kmalloc { .. } => self.tracker.kmalloc(cpu, tid),
            Event::KmemCacheAlloc { name, .. } => {
                if let Some(r) = self.tracker.cache_alloc(cpu, tid) {
                    let name = String::from_utf8_lossy(name);
                    match self.slab_pages.get_mut(name.as_ref()) {
                        Some(e) => e.add(r),
                        None => {
                            let mut e = Evidence::default();
                            e.add(r);
                            self.slab_pages.insert(name.into_owned(), e);
                        }
                    }
                }
            }
            _ => self.tracker.other(cpu),
        }
    }

    /// Called at the end of the scan.
    pub(crate) fn finish(&mut self) {
        self.tracker = SlabPageTracker::default();
    }

    /// The CPUs a machine for this trace needs: the header's count if the
    /// trace has one, else the CPUs seen, at least 1 and at most
    /// `NR_CPUS`.
    pub fn machine_cpus(&self) -> usize {
        let seen = self.cpus.max(self.header_cpus.unwrap_or(0)).max(1) as usize;
        seen.min(NR_CPUS)
    }

    /// Why the trace cannot be replayed, if the scan shows that: it holds
    /// no perf script event at all (an empty file, random bytes), as far
    /// as the scan read. `name` names the trace in the message.
    pub fn no_events(&self, name: &str) -> Option<String> {
        if self.event_lines > 0 || self.error.is_some() {
            return None;
        }
        let where_ = if self.complete {
            String::new()
        } else {
            format!(" (in its first {} MiB)", self.bytes >> 20)
        };
        Some(format!(
            "no perf script events found in {name}{where_}: give a file of \
             `perf script -F comm,tid,cpu,time,event,trace` output, plain or .xz \
             (docs/replay.md says how to record one)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> HeadScan {
        let mut s = HeadScan::default();
        for l in text.lines() {
            s.line(l.as_bytes());
        }
        s.finish();
        s
    }

    #[test]
    fn cpus_header_events_and_slab_pages() {
        let s = scan(
            "# nrcpus avail : 8\n\
             a 1 [003] 1.0: kmem:mm_page_alloc: page=0x10 pfn=0x10 order=0 migratetype=1 gfp_flags=GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP\n\
             a 1 [003] 1.0: kmem:kmem_cache_alloc: call_site=f ptr=0xffff888000010000 name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true\n\
             junk\n\
             a 1 [5000] 1.0: kmem:kfree: call_site=f ptr=(nil)\n",
        );
        assert_eq!((s.lines, s.event_lines), (5, 3));
        assert_eq!(
            (s.cpus, s.cpu_beyond_nr_cpus, s.header_cpus),
            (4, Some(5000), Some(8))
        );
        assert_eq!(s.machine_cpus(), 8);
        assert_eq!(
            s.slab_pages["dentry"],
            Evidence {
                reclaimable: 1,
                unreclaimable: 0
            }
        );
        assert_eq!(s.no_events("t"), None);
    }

    #[test]
    fn no_events_is_said_with_the_name() {
        let mut s = scan("garbage\n\n# a comment\n");
        s.complete = true;
        let e = s.no_events("x.trace").unwrap();
        assert!(
            e.starts_with("no perf script events found in x.trace: "),
            "{e}"
        );
        s.complete = false;
        s.bytes = 8 << 20;
        assert!(s
            .no_events("x.trace")
            .unwrap()
            .starts_with("no perf script events found in x.trace (in its first 8 MiB): "));
    }
}
