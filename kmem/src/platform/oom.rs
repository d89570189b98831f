//! The OOM hook's types (`struct oom_control` of `include/linux/oom.h`):
//! what [`Platform::out_of_memory`](super::Platform::out_of_memory) is
//! given. They live with the platform door, which names them, so that the
//! door depends on nothing above it; the policy that decides when to call
//! the hook is [`crate::oom_kill`].

use super::Level;
use crate::gfp::Gfp;
use crate::Result;
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
