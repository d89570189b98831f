//! What the allocator asks of the running task (`include/linux/sched/mm.h`,
//! `kernel/sched/core.c`): the memalloc scope API and `might_sleep()`.
//!
//! ## Scopes
//!
//! A filesystem that holds a lock its own reclaim path might need must not
//! let an allocation recurse into the filesystem; a block driver must not
//! let one start I/O. Rather than passing `GFP_NOFS`/`GFP_NOIO` down every
//! call chain, Linux marks the *task*: `memalloc_nofs_save()` sets
//! `PF_MEMALLOC_NOFS` in `current->flags` and every allocation inside the
//! scope behaves as if `__GFP_FS` were clear ([`Kmem::current_gfp_context`]);
//! `memalloc_noio_save()` clears `__GFP_IO` too. Scopes nest: `save`
//! returns the previous bits and `restore` puts them back. kmem keeps the
//! bits where Linux does, in the task, through
//! [`Platform::task_flags`]; as in Linux the
//! page allocator applies them on its slow path, which is where reclaim
//! (and so the restriction) happens. [`MemallocScope`] is the RAII form.
//!
//! `memalloc_noreclaim_save()` sets `PF_MEMALLOC`: reclaim itself runs so,
//! which lets it dig into the reserves and stops it from recursing into
//! reclaim when it allocates.
//!
//! ## might_sleep
//!
//! A blocking allocation (`__GFP_DIRECT_RECLAIM`) from atomic context (an
//! interrupt, a CPU-local section, a held spinlock) is a bug: it may sleep.
//! Linux's `might_alloc()` reports it with `CONFIG_DEBUG_ATOMIC_SLEEP` as
//! "BUG: sleeping function called from invalid context". kmem always checks
//! on the page allocator's slow path (the only place it would sleep), and on
//! every allocation when [`BootParams::debug_atomic_sleep`](crate::BootParams)
//! is set, as a debug kernel does on every call. Having reported, the
//! allocation proceeds *without blocking*: kmem drops the right to reclaim
//! and wait for that call rather than sleeping in atomic context.

use crate::gfp::{self, Gfp};
use crate::platform::{Level, Platform};
use crate::{report, Kmem};
use core::panic::Location;

/// `PF_MEMALLOC`: the task is reclaiming (or must not be stopped by the
/// watermarks): it may use the reserves and does not reclaim recursively.
pub const PF_MEMALLOC: u32 = 0x0000_0800;
/// `PF_KSWAPD`: the task is kswapd.
pub const PF_KSWAPD: u32 = 0x0002_0000;
/// `PF_MEMALLOC_NOFS`: every allocation behaves as `GFP_NOFS`.
pub const PF_MEMALLOC_NOFS: u32 = 0x0004_0000;
/// `PF_MEMALLOC_NOIO`: every allocation behaves as `GFP_NOIO`.
pub const PF_MEMALLOC_NOIO: u32 = 0x0008_0000;

/// A memalloc scope that restores the task's previous flags when dropped.
///
/// ```
/// # let mut mem = vec![0u8; 8 << 20];
/// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
/// use kmem::gfp::*;
/// {
///     let _nofs = k.memalloc_nofs_scope();
///     assert_eq!(k.current_gfp_context(GFP_KERNEL), GFP_NOFS);
/// }
/// assert_eq!(k.current_gfp_context(GFP_KERNEL), GFP_KERNEL);
/// ```
#[must_use = "the scope ends when this is dropped"]
pub struct MemallocScope<'a, P: Platform> {
    k: &'a Kmem<P>,
    bit: u32,
    saved: u32,
}

impl<P: Platform> Drop for MemallocScope<'_, P> {
    fn drop(&mut self) {
        self.k.memalloc_flags_restore(self.bit, self.saved);
    }
}

impl<P: Platform> Kmem<P> {
    pub(crate) fn memalloc_flags_save(&self, bit: u32) -> u32 {
        let old = self.p.task_flags();
        if !self.p.set_task_flags(old | bit) {
            report!(
                &self.p,
                Level::Warning,
                "WARNING: memalloc scope {:#x}: the platform keeps no task flags, the scope has no effect",
                bit
            );
        }
        old & bit
    }

    pub(crate) fn memalloc_flags_restore(&self, bit: u32, saved: u32) {
        let now = self.p.task_flags();
        self.p.set_task_flags((now & !bit) | (saved & bit));
    }

    /// `memalloc_nofs_save()`: until the matching restore, allocations of
    /// this task do not recurse into filesystems. Returns the previous state
    /// for [`memalloc_nofs_restore`](Self::memalloc_nofs_restore).
    pub fn memalloc_nofs_save(&self) -> u32 {
        self.memalloc_flags_save(PF_MEMALLOC_NOFS)
    }

    /// `memalloc_nofs_restore()`.
    pub fn memalloc_nofs_restore(&self, flags: u32) {
        self.memalloc_flags_restore(PF_MEMALLOC_NOFS, flags)
    }

    /// `memalloc_noio_save()`: until the matching restore, allocations of
    /// this task start no I/O (and no filesystem work).
    pub fn memalloc_noio_save(&self) -> u32 {
        self.memalloc_flags_save(PF_MEMALLOC_NOIO)
    }

    /// `memalloc_noio_restore()`.
    pub fn memalloc_noio_restore(&self, flags: u32) {
        self.memalloc_flags_restore(PF_MEMALLOC_NOIO, flags)
    }

    /// `memalloc_noreclaim_save()`: the task reclaims (`PF_MEMALLOC`).
    pub fn memalloc_noreclaim_save(&self) -> u32 {
        self.memalloc_flags_save(PF_MEMALLOC)
    }

    /// `memalloc_noreclaim_restore()`.
    pub fn memalloc_noreclaim_restore(&self, flags: u32) {
        self.memalloc_flags_restore(PF_MEMALLOC, flags)
    }

    /// [`memalloc_nofs_save`](Self::memalloc_nofs_save) as a guard.
    pub fn memalloc_nofs_scope(&self) -> MemallocScope<'_, P> {
        MemallocScope {
            k: self,
            bit: PF_MEMALLOC_NOFS,
            saved: self.memalloc_nofs_save(),
        }
    }

    /// [`memalloc_noio_save`](Self::memalloc_noio_save) as a guard.
    pub fn memalloc_noio_scope(&self) -> MemallocScope<'_, P> {
        MemallocScope {
            k: self,
            bit: PF_MEMALLOC_NOIO,
            saved: self.memalloc_noio_save(),
        }
    }

    /// `current_gfp_context()`: `gfp` narrowed by the task's scopes
    /// (`PF_MEMALLOC_NOIO` clears `__GFP_IO | __GFP_FS`, `PF_MEMALLOC_NOFS`
    /// clears `__GFP_FS`).
    pub fn current_gfp_context(&self, gfp: Gfp) -> Gfp {
        let pf = self.p.task_flags();
        if pf & PF_MEMALLOC_NOIO != 0 {
            gfp.without(gfp::__GFP_IO | gfp::__GFP_FS)
        } else if pf & PF_MEMALLOC_NOFS != 0 {
            gfp.without(gfp::__GFP_FS)
        } else {
            gfp
        }
    }

    /// `might_alloc(gfp)`: when `gfp` may block and the caller is in atomic
    /// context, report "BUG: sleeping function called from invalid context"
    /// at `caller` and answer `false` (the caller must then not block).
    /// Answers whether blocking is allowed.
    pub fn might_alloc(&self, gfp: Gfp, caller: &Location<'_>) -> bool {
        if !gfp.contains(gfp::__GFP_DIRECT_RECLAIM) {
            return false;
        }
        if !self.p.in_atomic() {
            return true;
        }
        let task = self.p.current();
        report!(
            &self.p,
            Level::Err,
            "BUG: sleeping function called from invalid context at {}",
            caller
        );
        report!(
            &self.p,
            Level::Err,
            "in_atomic(): 1, irqs_disabled(): {}, non_block: 0, pid: {}, name: {}",
            u8::from(self.p.in_interrupt()),
            task.pid,
            task.comm()
        );
        report!(
            &self.p,
            Level::Err,
            "CPU: {} PID: {} Comm: {} gfp: {:#x}({})",
            self.p.smp_processor_id(),
            task.pid,
            task.comm(),
            gfp.bits(),
            gfp
        );
        false
    }

    /// Whether the allocator checks `might_alloc` on every allocation
    /// ([`BootParams::debug_atomic_sleep`](crate::BootParams)).
    #[inline]
    pub(crate) fn debug_atomic_sleep(&self) -> bool {
        self.debug_atomic_sleep
    }
}
