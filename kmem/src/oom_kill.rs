//! The OOM hook (`mm/oom_kill.c`): what the page allocator does when a
//! "too small to fail" allocation finds nothing left to reclaim.
//!
//! Linux's `__alloc_pages_may_oom()` decides *whether* to call the OOM
//! killer: not for costly orders (above `PAGE_ALLOC_COSTLY_ORDER`), not for
//! `__GFP_RETRY_MAYFAIL` or `__GFP_THISNODE`, not for allocations confined
//! below `ZONE_NORMAL`; and for `GFP_NOFS`/`GFP_NOIO` it kills nothing but
//! reports progress, so the allocation keeps retrying (reclaim by others
//! or a later `GFP_KERNEL` OOM will free memory). Only one OOM runs at a
//! time (`oom_lock`); a second caller waits a moment and retries. kmem
//! follows that in the page allocator ([`crate::page_alloc`]) and hands the
//! choice of a victim to the embedding kernel through
//! [`Platform::out_of_memory`], with an [`OomControl`] that can print the
//! report header with Mem-Info ([`OomControl::dump_header`]) and free the
//! victim's pages ([`OomControl::free_pages`]).
//!
//! The simulator's handler (`kmem_sim`) keeps a list of simulated tasks and
//! the pages each owns, picks the largest (`oom_badness()` by pages), prints
//! the report in Linux's wording and frees the victim's pages, as the OOM
//! reaper does.

use crate::gfp::Gfp;
use crate::platform::{Level, Platform};
use crate::{report, Kmem, Result};
use core::fmt;

/// What the machine offers an OOM handler.
pub trait OomMm {
    /// Print Mem-Info (`show_mem()`).
    fn show_mem(&self);
    /// Print one line at `level` through the machine's report sink.
    fn report(&self, level: Level, msg: fmt::Arguments<'_>);
    /// Free the block of `2^order` pages at `pfn` (`__free_pages`), as the
    /// OOM reaper frees a victim's memory.
    fn free_pages(&self, pfn: u64, order: u32) -> Result<()>;
    /// `totalram_pages()`.
    fn totalram_pages(&self) -> u64;
}

/// `struct oom_control`: the allocation that ran out.
pub struct OomControl<'a> {
    /// The allocation's GFP mask.
    pub gfp_mask: Gfp,
    /// The allocation's order.
    pub order: u32,
    pub(crate) mm: &'a dyn OomMm,
    pub(crate) comm: [u8; 16],
    pub(crate) pid: u32,
    pub(crate) cpu: usize,
}

impl OomControl<'_> {
    /// The name of the task whose allocation invoked the OOM killer.
    pub fn comm(&self) -> &str {
        let n = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        core::str::from_utf8(&self.comm[..n]).unwrap_or("?")
    }

    /// Print one line through the machine's report sink.
    pub fn report(&self, level: Level, msg: fmt::Arguments<'_>) {
        self.mm.report(level, msg)
    }

    /// `dump_header()`: "… invoked oom-killer: gfp_mask=…, order=…", the
    /// CPU line and Mem-Info, in Linux's wording.
    pub fn dump_header(&self) {
        self.mm.report(
            Level::Warning,
            format_args!(
                "{} invoked oom-killer: gfp_mask={:#x}({}), order={}, oom_score_adj=0",
                self.comm(),
                self.gfp_mask.bits(),
                self.gfp_mask,
                self.order
            ),
        );
        self.mm.report(
            Level::Warning,
            format_args!("CPU: {} PID: {} Comm: {}", self.cpu, self.pid, self.comm()),
        );
        self.mm.show_mem();
    }

    /// Free a victim's block of `2^order` pages at `pfn`.
    pub fn free_pages(&self, pfn: u64, order: u32) -> Result<()> {
        self.mm.free_pages(pfn, order)
    }

    /// `totalram_pages()`, for `oom_badness()`-style scoring.
    pub fn totalram_pages(&self) -> u64 {
        self.mm.totalram_pages()
    }
}

impl<P: Platform> OomMm for Kmem<P> {
    fn show_mem(&self) {
        crate::proc::show_mem(self);
    }

    fn report(&self, level: Level, msg: fmt::Arguments<'_>) {
        self.p.report(level, msg);
    }

    fn free_pages(&self, pfn: u64, order: u32) -> Result<()> {
        match self.pfn_to_page(pfn) {
            Some(page) => self.__free_pages(page, order),
            None => {
                report!(
                    &self.p,
                    Level::Alert,
                    "BUG: oom reaper: pfn {:#x} is not memory of this machine",
                    pfn
                );
                Err(crate::Error::BadAddress)
            }
        }
    }

    fn totalram_pages(&self) -> u64 {
        Kmem::totalram_pages(self)
    }
}

impl<P: Platform> Kmem<P> {
    /// `out_of_memory()`: serialise on the OOM lock and ask the platform's
    /// handler for a victim. Returns whether memory was (or may soon be)
    /// freed, i.e. whether the allocation should retry.
    pub(crate) fn out_of_memory(&self, gfp: Gfp, order: u32) -> bool {
        if self
            .reclaim
            .oom_lock
            .swap(true, core::sync::atomic::Ordering::Acquire)
        {
            // Another OOM kill is in progress: it will free memory.
            return true;
        }
        let task = self.p.current();
        let oc = OomControl {
            gfp_mask: gfp,
            order,
            mm: self,
            comm: task.comm,
            pid: task.pid,
            cpu: self.p.smp_processor_id(),
        };
        let progress = self.p.out_of_memory(&oc);
        if progress {
            self.reclaim
                .events
                .oom_kill
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        self.reclaim
            .oom_lock
            .store(false, core::sync::atomic::Ordering::Release);
        progress
    }
}
