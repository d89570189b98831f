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
pub use crate::platform::oom::{OomControl, OomMm};
use crate::platform::Platform;
use crate::Kmem;

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
