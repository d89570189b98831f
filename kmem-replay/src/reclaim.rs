//! Which replayed caches are `SLAB_RECLAIM_ACCOUNT`, from the trace's
//! evidence or, without it, from Linux's own flags.
//!
//! A `kmem_cache_alloc` event does not show its cache's flags, but Linux's
//! slab pages do: `allocate_slab()` adds the cache's `allocflags`, which
//! carry `__GFP_RECLAIMABLE` for a `SLAB_RECLAIM_ACCOUNT` cache, to the
//! `mm_page_alloc` of each new slab (recognised by
//! [`is_linux_slab_page`](crate::engine::is_linux_slab_page)). The event does
//! not name the cache either, but the allocation that needed the slab
//! follows it at once on the same CPU and thread:
//!
//! ```text
//! mm_page_alloc     ...|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP   the dentry slab
//! kmalloc           call_site=alloc_slab_obj_exts ...                            its memcg vector (accounted caches)
//! kmem_cache_alloc  name=dentry ...                                              the allocation that needed it
//! ```
//!
//! [`SlabPageTracker`] pairs them so: the first slab page allocation of a
//! run on a CPU and thread is the slab of the next `kmem_cache_alloc` on
//! them, when at most one `kmalloc` (the vector of memcg pointers
//! `alloc_slab_obj_exts()` takes for an accounted cache) and further slab
//! pages (that vector's own kmalloc slab) come between; anything else
//! breaks the pairing. On the bundled trace, checked against the page
//! frames the objects lie in, all 788 pairs it makes are right, and the 15
//! slab pages it leaves unpaired are kmalloc slabs taken for those vectors.
//!
//! [`reclaimable`] decides at a cache's creation: by the pages paired with
//! it so far (the [head scan](crate::input::TraceInput::scan_head) and the
//! events before), most of them reclaimable or not; with no page paired
//! yet, by [`LINUX_RECLAIMABLE_CACHES`]; else not reclaimable. Pages paired
//! after the creation are still counted, and the report lists a cache whose
//! later evidence disagrees with its flags.

use serde::Serialize;

/// Caches Linux 6.18 creates with `SLAB_RECLAIM_ACCOUNT` (`SLAB_TEMPORARY`
/// included), by name: the rule when the trace shows none of a cache's
/// slab pages. Each is Linux's `kmem_cache_create()` call's flags (for
/// example `fs/dcache.c`'s `dcache_init()`, `fs/inode.c`'s `inode_init()`,
/// `lib/radix-tree.c`'s `radix_tree_init()`, `fs/buffer.c`'s
/// `buffer_init()`, ext4's `init_inodecache()`, `ext4_init_es()`,
/// `ext4_init_mballoc()` and `ext4_init_pageio()`, `fs/proc/inode.c` and
/// `net/socket.c`).
pub const LINUX_RECLAIMABLE_CACHES: &[&str] = &[
    "buffer_head",
    "dentry",
    "ext4_allocation_context",
    "ext4_inode_cache",
    "ext4_io_end",
    "ext4_prealloc_space",
    "extent_status",
    "inode_cache",
    "proc_inode_cache",
    "radix_tree_node",
    "sock_inode_cache",
];

/// Linux slab pages paired with one cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Pages with `__GFP_RECLAIMABLE`.
    pub reclaimable: u64,
    /// Pages without.
    pub unreclaimable: u64,
}

impl Evidence {
    /// Count one page.
    pub fn add(&mut self, reclaimable: bool) {
        if reclaimable {
            self.reclaimable += 1;
        } else {
            self.unreclaimable += 1;
        }
    }

    /// Whether any page was paired.
    pub fn any(&self) -> bool {
        self.reclaimable + self.unreclaimable > 0
    }

    /// What the pages say: reclaimable when most of them are.
    pub fn says_reclaimable(&self) -> bool {
        self.reclaimable > self.unreclaimable
    }
}

/// Where a cache's `SLAB_RECLAIM_ACCOUNT` decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReclaimSource {
    /// Linux's slab pages of the cache, paired in the trace.
    Trace,
    /// [`LINUX_RECLAIMABLE_CACHES`].
    LinuxFlags,
    /// Neither: not reclaimable.
    Default,
}

/// Whether a cache named `name` is `SLAB_RECLAIM_ACCOUNT`, given the pages
/// paired with it so far; see the [module docs](self).
///
/// ```
/// use kmem_replay::reclaim::{reclaimable, Evidence, ReclaimSource};
/// let none = Evidence::default();
/// assert_eq!(reclaimable("dentry", none), (true, ReclaimSource::LinuxFlags));
/// assert_eq!(reclaimable("filp", none), (false, ReclaimSource::Default));
/// let seen = Evidence { reclaimable: 3, unreclaimable: 0 };
/// assert_eq!(reclaimable("my_cache", seen), (true, ReclaimSource::Trace));
/// ```
pub fn reclaimable(name: &str, seen: Evidence) -> (bool, ReclaimSource) {
    if seen.any() {
        (seen.says_reclaimable(), ReclaimSource::Trace)
    } else if LINUX_RECLAIMABLE_CACHES.contains(&name) {
        (true, ReclaimSource::LinuxFlags)
    } else {
        (false, ReclaimSource::Default)
    }
}

/// A slab page waiting for the allocation that needed it.
#[derive(Clone, Copy, Debug)]
struct Pending {
    tid: u32,
    reclaimable: bool,
    kmallocs: u8,
}

/// Pairs Linux's slab page allocations with the `kmem_cache_alloc` that
/// needed them; see the [module docs](self). Feed it every event of a CPU
/// in trace order.
#[derive(Clone, Debug, Default)]
pub struct SlabPageTracker {
    /// Per CPU.
    pending: Vec<Option<Pending>>,
}

impl SlabPageTracker {
    fn slot(&mut self, cpu: u32) -> &mut Option<Pending> {
        let cpu = cpu as usize;
        if cpu >= self.pending.len() {
            self.pending.resize(cpu + 1, None);
        }
        &mut self.pending[cpu]
    }

    /// A Linux slab page allocation.
    pub fn slab_page(&mut self, cpu: u32, tid: u32, reclaimable: bool) {
        let p = self.slot(cpu);
        match p {
            // A later page of the same run: a nested allocation's slab.
            Some(q) if q.tid == tid => {}
            _ => {
                *p = Some(Pending {
                    tid,
                    reclaimable,
                    kmallocs: 0,
                })
            }
        }
    }

    /// A `kmalloc` event.
    pub fn kmalloc(&mut self, cpu: u32, tid: u32) {
        let p = self.slot(cpu);
        match p {
            Some(q) if q.tid == tid && q.kmallocs == 0 => q.kmallocs = 1,
            _ => *p = None,
        }
    }

    /// A `kmem_cache_alloc` event: whether the slab page it needed, if
    /// any, was reclaimable.
    pub fn cache_alloc(&mut self, cpu: u32, tid: u32) -> Option<bool> {
        match self.slot(cpu).take() {
            Some(q) if q.tid == tid => Some(q.reclaimable),
            _ => None,
        }
    }

    /// Any other event.
    #[inline]
    pub fn other(&mut self, cpu: u32) {
        if let Some(p) = self.pending.get_mut(cpu as usize) {
            *p = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_slab_page_of_a_run_goes_to_the_next_cache_allocation() {
        let mut t = SlabPageTracker::default();
        // The dentry slab, its memcg vector's kmalloc slab, the vector.
        t.slab_page(1, 7, true);
        t.slab_page(1, 7, false);
        t.kmalloc(1, 7);
        assert_eq!(t.cache_alloc(1, 7), Some(true));
        // Nothing pending any more.
        assert_eq!(t.cache_alloc(1, 7), None);
        // Another thread's event on the CPU, two kmallocs, any other
        // event: no pairing.
        t.slab_page(0, 7, true);
        t.kmalloc(0, 8);
        assert_eq!(t.cache_alloc(0, 7), None);
        t.slab_page(0, 7, true);
        t.kmalloc(0, 7);
        t.kmalloc(0, 7);
        assert_eq!(t.cache_alloc(0, 7), None);
        t.slab_page(0, 7, false);
        t.other(0);
        assert_eq!(t.cache_alloc(0, 7), None);
        // CPUs are independent.
        t.slab_page(0, 7, false);
        t.slab_page(1, 9, true);
        assert_eq!(t.cache_alloc(0, 7), Some(false));
        assert_eq!(t.cache_alloc(1, 9), Some(true));
    }

    #[test]
    fn evidence_wins_over_the_known_flags() {
        let no = Evidence {
            reclaimable: 0,
            unreclaimable: 2,
        };
        assert_eq!(reclaimable("dentry", no), (false, ReclaimSource::Trace));
        assert!(!Evidence::default().any());
    }
}
