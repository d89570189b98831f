//! A page cache for the simulated machine: file pages on an LRU list that
//! reclaim can take back.
//!
//! Linux keeps file pages on LRU lists that vmscan scans itself; kmem's
//! core reclaims only through shrinkers ([`kmem::shrinker`]), so this page
//! cache registers one. Its behaviour follows `shrink_folio_list()`:
//!
//! * pages are reclaimed from the cold end of the LRU (the oldest first);
//! * a clean page is simply freed;
//! * a dirty page must be written back first, which needs both `__GFP_IO`
//!   and `__GFP_FS` (the filesystem's writepage): reclaim under `GFP_NOFS`
//!   or `GFP_NOIO` moves it back to the hot end instead and counts it
//!   scanned, not freed. A write-back here is instant and counted
//!   ([`PageCache::writebacks`]).
//!
//! ```
//! use kmem::gfp::*;
//! use kmem::{BootParams, Kmem};
//! use kmem_sim::{pc_memory_map, PageCache, SimConfig, SimPlatform};
//! let s = SimPlatform::new(SimConfig::new(1, pc_memory_map(64 << 20))).unwrap();
//! let _cpu = s.bind(0);
//! let k = Kmem::boot(&s, s.memory_map(), &BootParams::default()).unwrap();
//! let pc = PageCache::new();
//! let id = pc.register(&k).unwrap();
//! pc.add_pages(&k, 100, GFP_HIGHUSER_MOVABLE, false).unwrap();
//! assert_eq!(pc.nr_pages(), 100);
//! k.shrink_slab(GFP_KERNEL, 0, 0); // the hardest pass frees them all
//! assert_eq!(pc.nr_pages(), 0);
//! k.unregister_shrinker(id).unwrap();
//! ```

use kmem::gfp::{self, Gfp};
use kmem::shrinker::{
    ShrinkControl, Shrinker, ShrinkerConfig, ShrinkerId, SHRINKER_LRU, SHRINK_EMPTY,
};
use kmem::{Kmem, Platform};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    /// Hot end at the front, cold end at the back: (pfn, dirty).
    lru: Mutex<VecDeque<(u64, bool)>>,
    writebacks: AtomicU64,
    reclaimed: AtomicU64,
}

/// A page cache: file pages on an LRU list, reclaimable through a shrinker.
#[derive(Clone, Default)]
pub struct PageCache {
    inner: Arc<Inner>,
}

impl PageCache {
    /// An empty page cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register the cache's shrinker ("pagecache") with `k`.
    pub fn register<P: Platform>(&self, k: &Kmem<P>) -> kmem::Result<ShrinkerId> {
        k.register_shrinker(
            ShrinkerConfig::new("pagecache", SHRINKER_LRU),
            PageCacheShrinker(self.inner.clone()),
        )
    }

    /// Read `n` file pages into the cache with `gfp` (dirty ones as if
    /// written since). Stops at the first failure and returns it; pages
    /// read before stay cached.
    #[track_caller]
    pub fn add_pages<P: Platform>(
        &self,
        k: &Kmem<P>,
        n: usize,
        gfp: Gfp,
        dirty: bool,
    ) -> kmem::Result<()> {
        for _ in 0..n {
            let page = k.alloc_pages(gfp, 0)?;
            let pfn = k.page_to_pfn(page);
            self.inner.lru.lock().unwrap().push_front((pfn, dirty));
        }
        Ok(())
    }

    /// Pages in the cache.
    pub fn nr_pages(&self) -> usize {
        self.inner.lru.lock().unwrap().len()
    }

    /// Dirty pages in the cache.
    pub fn nr_dirty(&self) -> usize {
        self.inner
            .lru
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.1)
            .count()
    }

    /// Dirty pages written back by reclaim so far.
    pub fn writebacks(&self) -> u64 {
        self.inner.writebacks.load(Relaxed)
    }

    /// Pages reclaim freed so far.
    pub fn reclaimed(&self) -> u64 {
        self.inner.reclaimed.load(Relaxed)
    }

    /// Drop every page (`truncate_inode_pages()`).
    pub fn truncate<P: Platform>(&self, k: &Kmem<P>) -> kmem::Result<()> {
        let pages = std::mem::take(&mut *self.inner.lru.lock().unwrap());
        for (pfn, _) in pages {
            free_pfn(k, pfn)?;
        }
        Ok(())
    }
}

fn free_pfn<P: Platform>(k: &Kmem<P>, pfn: u64) -> kmem::Result<()> {
    let page = k.pfn_to_page(pfn).ok_or(kmem::Error::BadAddress)?;
    k.__free_pages(page, 0)
}

struct PageCacheShrinker(Arc<Inner>);

impl<P: Platform> Shrinker<P> for PageCacheShrinker {
    fn count_objects(&self, _k: &Kmem<P>, _sc: &ShrinkControl) -> u64 {
        match self.0.lru.lock().unwrap().len() {
            0 => SHRINK_EMPTY,
            n => n as u64,
        }
    }

    fn scan_objects(&self, k: &Kmem<P>, sc: &mut ShrinkControl) -> u64 {
        let may_writeback = sc.gfp_mask.contains(gfp::__GFP_IO | gfp::__GFP_FS);
        let mut victims = Vec::new();
        let mut scanned = 0;
        {
            let mut lru = self.0.lru.lock().unwrap();
            while scanned < sc.nr_to_scan {
                let Some((pfn, dirty)) = lru.pop_back() else {
                    break;
                };
                scanned += 1;
                if dirty && !may_writeback {
                    // Cannot write it back in this context: rotate.
                    lru.push_front((pfn, dirty));
                    continue;
                }
                victims.push((pfn, dirty));
            }
        }
        sc.nr_scanned = scanned;
        let mut freed = 0;
        for (pfn, dirty) in victims {
            if dirty {
                self.0.writebacks.fetch_add(1, Relaxed);
            }
            if free_pfn(k, pfn).is_ok() {
                freed += 1;
            }
        }
        self.0.reclaimed.fetch_add(freed, Relaxed);
        freed
    }
}
