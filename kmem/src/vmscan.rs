//! Reclaim: direct reclaim and kswapd (`mm/vmscan.c`).
//!
//! When an allocation's fast path finds every zone below its low
//! watermark, the page allocator's slow path ([`crate::page_alloc`]) wakes
//! the node's kswapd ([`Kmem::wakeup_kswapd`]) and, for a caller that may
//! block (`__GFP_DIRECT_RECLAIM`), reclaims on its own behalf
//! ([`Kmem::try_to_free_pages`]).
//!
//! ## What is reclaimed
//!
//! Linux reclaims from two kinds of source: the LRU lists of file and
//! anonymous pages, scanned by vmscan itself, and everything else through
//! shrinkers. kmem's core owns no page cache or anonymous memory, so every
//! reclaim target is a [shrinker](crate::shrinker): the simulator's page
//! cache and dentry cache (`kmem_sim`) register as shrinkers, and objects
//! freed from `SLAB_RECLAIM_ACCOUNT` caches give their slabs back to the
//! page allocator as SLUB does. Reclaim passes run at decreasing
//! *priority* (12 down to 0), each asking every shrinker for a larger share
//! of its objects, until enough pages came back (`SWAP_CLUSTER_MAX`, or
//! `2^order`). Pages reclaimed are counted by the page allocator's free
//! counter (`pgfree`) over the pass, so slab objects freed in bulk count
//! once their slabs are freed.
//!
//! Reclaim runs with `PF_MEMALLOC` set (it may use the reserves and does
//! not recurse into reclaim) and with the caller's GFP mask narrowed by its
//! memalloc scopes ([`crate::sched`]): a shrinker that needs `__GFP_FS` or
//! `__GFP_IO` is skipped under `GFP_NOFS` or `GFP_NOIO`.
//!
//! ## kswapd
//!
//! One per node, as Linux's `kswapd%d` thread. The core provides the thread
//! body ([`Kmem::kswapd`]): sleep until woken, then `balance_pgdat()`:
//! reclaim at falling priority until some eligible zone of the node is back
//! above its *high* watermark, then sleep again. The embedding starts it as
//! a thread (the simulator does, one per node); where nothing runs it, a
//! pending wake-up is served by [`Kmem::kswapd_run_once`]. As Linux, a node
//! on which kswapd failed [`MAX_RECLAIM_RETRIES`] times in a row is left
//! alone until direct reclaim makes progress again. kmem has no compaction,
//! so kswapd balances order-0 watermarks (Linux also falls back to order 0
//! once it has reclaimed the compaction gap).
//!
//! ## Waiting
//!
//! A blocking allocation that made no progress waits, before it retries, for
//! pages to be freed anywhere on the machine, up to [`RECLAIM_THROTTLE_NS`]
//! (Linux's `reclaim_throttle()` on no progress). Frees wake such waiters:
//! the free path pays one relaxed load when nobody waits.

use crate::gfp::{self, Gfp};
use crate::mmzone::{ZoneType, MAX_NUMNODES, WMARK_HIGH};
use crate::page_alloc::AllocFlags;
use crate::platform::Platform;
use crate::sched::{PF_KSWAPD, PF_MEMALLOC};
use crate::shrinker::ShrinkerTable;
use crate::Kmem;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};

/// `DEF_PRIORITY`: the first reclaim pass scans `1/2^12` of each list.
pub const DEF_PRIORITY: u32 = 12;
/// `SWAP_CLUSTER_MAX`: pages direct reclaim aims for in one call.
pub const SWAP_CLUSTER_MAX: u64 = 32;
/// `MAX_RECLAIM_RETRIES`: no-progress rounds before the OOM killer, and
/// kswapd failures before a node is left alone.
pub const MAX_RECLAIM_RETRIES: u32 = 16;
/// How long a blocking allocation that made no progress waits for a free
/// before it retries.
pub const RECLAIM_THROTTLE_NS: u64 = 10_000_000;

/// Reclaim and OOM event counters (`/proc/vmstat` names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmEvents {
    /// Direct reclaim entries, all zones (the sum of `allocstall_zone`).
    pub allocstall: u64,
    /// `allocstall_<zone>`: direct reclaim entries by the highest zone the
    /// request may use (`sc->reclaim_idx`), indexed by zone type.
    pub allocstall_zone: [u64; crate::mmzone::MAX_NR_ZONE_TYPES],
    /// `pgsteal_direct`: pages reclaimed by direct reclaim.
    pub pgsteal_direct: u64,
    /// `pgsteal_kswapd`: pages reclaimed by kswapd.
    pub pgsteal_kswapd: u64,
    /// `pgscan_kswapd`: LRU pages kswapd scanned (those of
    /// [`SHRINKER_LRU`](crate::shrinker::SHRINKER_LRU) shrinkers).
    pub pgscan_kswapd: u64,
    /// `pgscan_direct`: LRU pages direct reclaim scanned.
    pub pgscan_direct: u64,
    /// `pageoutrun`: kswapd balancing runs.
    pub pageoutrun: u64,
    /// `slabs_scanned`: objects shrinkers were asked to scan.
    pub slabs_scanned: u64,
    /// `oom_kill`: OOM handler calls that freed memory.
    pub oom_kill: u64,
    /// kswapd wake-ups (the `mm_vmscan_wakeup_kswapd` tracepoint).
    pub kswapd_wakeups: u64,
    /// Times a blocking allocation slept waiting for frees.
    pub alloc_waits: u64,
}

#[derive(Default)]
pub(crate) struct Events {
    pub(crate) allocstall: [AtomicU64; crate::mmzone::MAX_NR_ZONE_TYPES],
    pub(crate) pgsteal_direct: AtomicU64,
    pub(crate) pgsteal_kswapd: AtomicU64,
    pub(crate) pgscan_kswapd: AtomicU64,
    pub(crate) pgscan_direct: AtomicU64,
    pub(crate) pageoutrun: AtomicU64,
    pub(crate) oom_kill: AtomicU64,
    pub(crate) kswapd_wakeups: AtomicU64,
    pub(crate) alloc_waits: AtomicU64,
}

#[derive(Default)]
struct KswapdNode {
    highest_zoneidx: AtomicU32,
    pending: AtomicBool,
    running: AtomicU32,
    failures: AtomicU32,
}

/// Per-machine reclaim state.
pub(crate) struct Reclaim {
    pub(crate) shrinkers: ShrinkerTable,
    kswapd: [KswapdNode; MAX_NUMNODES],
    waiters: AtomicU32,
    free_seq: AtomicU64,
    pub(crate) oom_lock: AtomicBool,
    pub(crate) events: Events,
}

impl Reclaim {
    pub(crate) fn new() -> Self {
        Reclaim {
            shrinkers: ShrinkerTable::new(),
            kswapd: core::array::from_fn(|_| KswapdNode::default()),
            waiters: AtomicU32::new(0),
            free_seq: AtomicU64::new(0),
            oom_lock: AtomicBool::new(false),
            events: Events::default(),
        }
    }
}

impl<P: Platform> Kmem<P> {
    /// Reclaim and OOM counters.
    pub fn vm_events(&self) -> VmEvents {
        let e = &self.reclaim.events;
        VmEvents {
            allocstall: e.allocstall.iter().map(|a| a.load(Relaxed)).sum(),
            allocstall_zone: core::array::from_fn(|i| e.allocstall[i].load(Relaxed)),
            pgsteal_direct: e.pgsteal_direct.load(Relaxed),
            pgsteal_kswapd: e.pgsteal_kswapd.load(Relaxed),
            pgscan_kswapd: e.pgscan_kswapd.load(Relaxed),
            pgscan_direct: e.pgscan_direct.load(Relaxed),
            pageoutrun: e.pageoutrun.load(Relaxed),
            slabs_scanned: self.reclaim.shrinkers.scanned.load(Relaxed),
            oom_kill: e.oom_kill.load(Relaxed),
            kswapd_wakeups: e.kswapd_wakeups.load(Relaxed),
            alloc_waits: e.alloc_waits.load(Relaxed),
        }
    }

    /// Pages freed so far on the whole machine (the `pgfree` counters).
    fn pgfree_total(&self) -> u64 {
        self.nodes()
            .flat_map(|n| n.zones())
            .map(|z| z.pgfree())
            .sum()
    }

    /// `try_to_free_pages()`: direct reclaim for an allocation of `order`
    /// with `gfp` preferring node `nid`. Returns the pages reclaimed.
    ///
    /// Runs shrinkers at falling priority on every node (the preferred one
    /// first) until [`SWAP_CLUSTER_MAX`] (or `2^order`) pages came back.
    pub fn try_to_free_pages(&self, gfp: Gfp, order: u32, nid: usize) -> u64 {
        let gfp = self.current_gfp_context(gfp);
        // __count_zid_vm_events(ALLOCSTALL, sc->reclaim_idx, 1).
        let zone = self.gfp_zone_idx(gfp).unwrap_or(ZoneType::Normal as usize);
        self.reclaim.events.allocstall[zone].fetch_add(1, Relaxed);
        let saved = self.memalloc_noreclaim_save();
        let target = SWAP_CLUSTER_MAX.max(1 << order);
        let before = self.pgfree_total();
        let mut reclaimed = 0;
        for priority in (0..=DEF_PRIORITY).rev() {
            for i in 0..self.nr_nodes {
                self.shrink_node(
                    gfp,
                    (nid + i) % self.nr_nodes,
                    priority,
                    Some(&self.reclaim.events.pgscan_direct),
                );
            }
            reclaimed = self.pgfree_total().saturating_sub(before);
            if reclaimed >= target {
                break;
            }
        }
        self.memalloc_noreclaim_restore(saved);
        if reclaimed > 0 {
            // Reclaim works again: kswapd is worth waking (Linux resets
            // kswapd_failures when direct reclaim makes progress).
            for st in &self.reclaim.kswapd[..self.nr_nodes] {
                st.failures.store(0, Relaxed);
            }
        }
        self.reclaim
            .events
            .pgsteal_direct
            .fetch_add(reclaimed, Relaxed);
        reclaimed
    }

    /// `pgdat_balanced()`: some zone of node `nid` up to `highest_zoneidx`
    /// is above its high watermark for an allocation of `order`.
    pub fn pgdat_balanced(&self, nid: usize, order: u32, highest_zoneidx: usize) -> bool {
        let node = self.node(nid);
        let mut any = false;
        for zi in 0..=highest_zoneidx.min(ZoneType::Movable as usize) {
            let zone = node.zone(zi);
            if !zone.is_populated() {
                continue;
            }
            any = true;
            if self.zone_watermark_ok(zone, order, WMARK_HIGH, highest_zoneidx, AllocFlags(0)) {
                return true;
            }
        }
        // A node without eligible zones has nothing to balance.
        !any
    }

    /// `wakeup_kswapd()`: ask node `nid`'s kswapd to reclaim until a zone up
    /// to `highest_zoneidx` is above its high watermark.
    pub fn wakeup_kswapd(&self, nid: usize, gfp: Gfp, order: u32, highest_zoneidx: usize) {
        // kmem has no compaction, so kswapd balances order-0 watermarks
        // whatever the order and flags of the allocation that woke it.
        let _ = (gfp, order);
        let st = &self.reclaim.kswapd[nid];
        st.highest_zoneidx
            .fetch_max(highest_zoneidx as u32, Relaxed);
        if st.failures.load(Relaxed) >= MAX_RECLAIM_RETRIES {
            // Hopeless node: not woken until direct reclaim makes progress.
            return;
        }
        if self.pgdat_balanced(nid, 0, highest_zoneidx) {
            return;
        }
        if !st.pending.swap(true, AcqRel) {
            self.reclaim.events.kswapd_wakeups.fetch_add(1, Relaxed);
            self.p.wake_up(self.kswapd_channel(nid));
        }
    }

    /// `wake_all_kswapds()`: wake kswapd of every node in the allocation's
    /// zonelist (the local node first).
    pub(crate) fn wake_all_kswapds(&self, gfp: Gfp, order: u32, nid: usize, high: usize) {
        for i in 0..self.nr_nodes {
            self.wakeup_kswapd((nid + i) % self.nr_nodes, gfp, order, high);
        }
    }

    fn kswapd_channel(&self, nid: usize) -> usize {
        &self.reclaim.kswapd[nid] as *const KswapdNode as usize
    }

    /// Whether node `nid` has a wake-up kswapd has not served yet.
    pub fn kswapd_pending(&self, nid: usize) -> bool {
        self.reclaim.kswapd[nid].pending.load(Acquire)
    }

    /// Whether a kswapd thread runs for node `nid`.
    pub fn kswapd_running(&self, nid: usize) -> bool {
        self.reclaim.kswapd[nid].running.load(Acquire) != 0
    }

    /// `balance_pgdat()`: reclaim on node `nid` at falling priority until
    /// it is balanced (a zone up to `highest_zoneidx` above its high
    /// watermark). Returns the pages reclaimed.
    pub fn balance_pgdat(&self, nid: usize, highest_zoneidx: usize) -> u64 {
        let st = &self.reclaim.kswapd[nid];
        self.reclaim.events.pageoutrun.fetch_add(1, Relaxed);
        let before = self.pgfree_total();
        let mut balanced = self.pgdat_balanced(nid, 0, highest_zoneidx);
        let mut priority = DEF_PRIORITY;
        while !balanced && priority >= 1 {
            let freed = self.shrink_node(
                gfp::GFP_KERNEL,
                nid,
                priority,
                Some(&self.reclaim.events.pgscan_kswapd),
            );
            balanced = self.pgdat_balanced(nid, 0, highest_zoneidx);
            if freed == 0 || !balanced {
                priority -= 1;
            }
        }
        let reclaimed = self.pgfree_total().saturating_sub(before);
        if balanced {
            st.failures.store(0, Relaxed);
        } else {
            st.failures.fetch_add(1, Relaxed);
        }
        self.reclaim
            .events
            .pgsteal_kswapd
            .fetch_add(reclaimed, Relaxed);
        reclaimed
    }

    /// Serve a pending kswapd wake-up of node `nid` on the calling thread,
    /// for embeddings that run no kswapd thread. Returns whether there was
    /// one.
    pub fn kswapd_run_once(&self, nid: usize) -> bool {
        let st = &self.reclaim.kswapd[nid];
        if !st.pending.swap(false, AcqRel) {
            return false;
        }
        let saved = self.memalloc_flags_save(PF_MEMALLOC | PF_KSWAPD);
        let high = st.highest_zoneidx.swap(0, Relaxed) as usize;
        self.balance_pgdat(nid, high);
        self.memalloc_flags_restore(PF_MEMALLOC | PF_KSWAPD, saved);
        true
    }

    /// The body of node `nid`'s kswapd thread (`kswapd()`): sleep until
    /// woken, balance the node, sleep again; return once `stop` is set (see
    /// [`kswapd_stop`](Self::kswapd_stop)). The caller runs it on a thread
    /// that the platform can put to sleep ([`Platform::wait_event`]).
    pub fn kswapd(&self, nid: usize, stop: &AtomicBool) {
        let st = &self.reclaim.kswapd[nid];
        st.running.fetch_add(1, AcqRel);
        let chan = self.kswapd_channel(nid);
        while !stop.load(Acquire) {
            self.p.wait_event(
                chan,
                &mut || st.pending.load(Acquire) || stop.load(Acquire),
                None,
            );
            if stop.load(Acquire) {
                break;
            }
            self.kswapd_run_once(nid);
        }
        st.running.fetch_sub(1, AcqRel);
    }

    /// Make node `nid`'s [`kswapd`](Self::kswapd) thread return: set `stop`
    /// and wake it.
    pub fn kswapd_stop(&self, nid: usize, stop: &AtomicBool) {
        stop.store(true, Release);
        self.p.wake_up(self.kswapd_channel(nid));
    }

    /// Sleep until some page is freed on the machine or `timeout_ns`
    /// passes. Returns whether a free happened.
    pub(crate) fn wait_for_free_pages(&self, timeout_ns: u64) -> bool {
        if !self.p.others_can_run() {
            // Nobody could free while we slept.
            return false;
        }
        let r = &self.reclaim;
        // Announce first, then sample: a free after the sample sees us.
        r.waiters.fetch_add(1, SeqCst);
        let seen = r.free_seq.load(SeqCst);
        r.events.alloc_waits.fetch_add(1, Relaxed);
        let chan = &r.free_seq as *const AtomicU64 as usize;
        let woke = self.p.wait_event(
            chan,
            &mut || r.free_seq.load(Acquire) != seen,
            Some(timeout_ns),
        );
        r.waiters.fetch_sub(1, SeqCst);
        woke
    }

    /// Called after pages were freed: wake allocations waiting for them.
    #[inline]
    pub(crate) fn wake_free_page_waiters(&self) {
        let r = &self.reclaim;
        if r.waiters.load(SeqCst) != 0 {
            r.free_seq.fetch_add(1, SeqCst);
            self.p.wake_up(&r.free_seq as *const AtomicU64 as usize);
        }
    }

    /// Allocations sleeping in the page allocator, waiting for frees.
    pub fn nr_alloc_waiters(&self) -> u32 {
        self.reclaim.waiters.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use crate::gfp::*;
    use crate::mmzone::ZoneType;
    use crate::shrinker::{ShrinkControl, Shrinker, ShrinkerConfig, SHRINK_EMPTY};
    use crate::{Kmem, Platform};
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;

    /// Owns pages and frees them on demand.
    struct Holder(Arc<Mutex<Vec<u64>>>);

    impl<P: Platform> Shrinker<P> for Holder {
        fn count_objects(&self, _: &Kmem<P>, _: &ShrinkControl) -> u64 {
            match self.0.lock().unwrap().len() {
                0 => SHRINK_EMPTY,
                n => n as u64,
            }
        }
        fn scan_objects(&self, k: &Kmem<P>, sc: &mut ShrinkControl) -> u64 {
            let mut freed = 0;
            let mut v = self.0.lock().unwrap();
            while freed < sc.nr_to_scan {
                let Some(pfn) = v.pop() else { break };
                k.__free_pages(k.pfn_to_page(pfn).unwrap(), 0).unwrap();
                freed += 1;
            }
            freed
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // fills 8 MiB page by page; shrinker unsafe is covered below
    fn a_pending_kswapd_wakeup_reclaims_to_the_high_watermark() {
        let mut mem = std::vec![0u8; 8 << 20];
        let k = Kmem::boot_arena(&mut mem, 1).unwrap();
        let pages = Arc::new(Mutex::new(Vec::new()));
        let id = k
            .register_shrinker(ShrinkerConfig::new("holder", 0), Holder(pages.clone()))
            .unwrap();
        // Fill to the min watermark without waking anyone.
        while let Ok(p) = k.alloc_pages(__GFP_NOWARN, 0) {
            let pfn = k.page_to_pfn(p);
            pages.lock().unwrap().push(pfn);
        }
        let held = pages.lock().unwrap().len();
        let high = ZoneType::Normal as usize;
        assert!(!k.kswapd_pending(0));
        // No thread runs kswapd here: the wake-up waits to be served.
        let p = k.alloc_pages(GFP_ATOMIC, 0).unwrap();
        assert!(k.kswapd_pending(0));
        assert!(!k.pgdat_balanced(0, 0, high));
        assert!(k.kswapd_run_once(0));
        assert!(!k.kswapd_pending(0));
        assert!(k.pgdat_balanced(0, 0, high));
        let ev = k.vm_events();
        assert_eq!(ev.pageoutrun, 1);
        assert_eq!(ev.allocstall, 0);
        assert!(ev.pgsteal_kswapd > 0);
        assert!(pages.lock().unwrap().len() < held);
        // Served: nothing more to do.
        assert!(!k.kswapd_run_once(0));
        k.__free_pages(p, 0).unwrap();
        k.unregister_shrinker(id).unwrap();
        for pfn in pages.lock().unwrap().drain(..) {
            k.__free_pages(k.pfn_to_page(pfn).unwrap(), 0).unwrap();
        }
    }

    #[test]
    fn memalloc_scopes_nest_and_narrow_gfp() {
        let mut mem = std::vec![0u8; 4 << 20];
        let k = Kmem::boot_arena(&mut mem, 1).unwrap();
        let a = k.memalloc_nofs_save();
        assert_eq!(k.current_gfp_context(GFP_KERNEL), GFP_NOFS);
        let b = k.memalloc_noio_save();
        assert_eq!(k.current_gfp_context(GFP_KERNEL), GFP_NOIO);
        let c = k.memalloc_nofs_save();
        k.memalloc_nofs_restore(c);
        assert_eq!(k.current_gfp_context(GFP_KERNEL), GFP_NOIO);
        k.memalloc_noio_restore(b);
        assert_eq!(k.current_gfp_context(GFP_KERNEL), GFP_NOFS);
        k.memalloc_nofs_restore(a);
        assert_eq!(k.current_gfp_context(GFP_KERNEL), GFP_KERNEL);
        assert_eq!(k.current_gfp_context(GFP_ATOMIC), GFP_ATOMIC);
    }
}
