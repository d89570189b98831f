//! A dentry-like cache for the simulated machine: slab objects on an LRU
//! list that reclaim can take back.
//!
//! Linux's dentry and inode caches are slab caches created with
//! `SLAB_RECLAIM_ACCOUNT` (their pages count as `SReclaimable`); unused
//! entries sit on an LRU and the superblock's shrinker
//! (`super_cache_scan()`) frees them from the cold end, but only when
//! reclaim may enter filesystems (`__GFP_FS`). This cache does the same:
//! its objects come from a `dentry` cache of 192-byte objects with
//! `SLAB_RECLAIM_ACCOUNT`, its shrinker declares
//! [`SHRINKER_NEEDS_FS`](kmem::shrinker::SHRINKER_NEEDS_FS), and entries
//! that are in use ([`Dcache::pin`]) are not reclaimable until unpinned.
//! Slabs emptied by the shrinker go back to the page allocator as SLUB
//! frees them (beyond the cache's `min_partial`).

use kmem::gfp::Gfp;
use kmem::shrinker::{
    ShrinkControl, Shrinker, ShrinkerConfig, ShrinkerId, SHRINKER_NEEDS_FS, SHRINK_EMPTY,
};
use kmem::slab::{KmemCache, SLAB_RECLAIM_ACCOUNT};
use kmem::{Kmem, Platform};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Size of a simulated dentry (Linux 6.x's `struct dentry` is 192 bytes).
pub const DENTRY_SIZE: usize = 192;

#[derive(Default)]
struct Inner {
    /// Unused entries: hot end at the front, cold at the back.
    lru: Mutex<VecDeque<usize>>,
    reclaimed: AtomicU64,
}

/// A dentry-like cache over a `SLAB_RECLAIM_ACCOUNT` slab cache.
pub struct Dcache<'k> {
    cache: &'k KmemCache,
    inner: Arc<Inner>,
}

impl<'k> Dcache<'k> {
    /// Create the `dentry` slab cache on `k`.
    pub fn new<P: Platform>(k: &'k Kmem<P>) -> kmem::Result<Self> {
        let cache = k.kmem_cache_create("dentry", DENTRY_SIZE, 8, SLAB_RECLAIM_ACCOUNT, None)?;
        Ok(Dcache {
            cache,
            inner: Arc::default(),
        })
    }

    /// The slab cache the entries come from.
    pub fn cache(&self) -> &'k KmemCache {
        self.cache
    }

    /// Register the shrinker ("dcache", needs `__GFP_FS`).
    pub fn register<P: Platform>(&self, k: &Kmem<P>) -> kmem::Result<ShrinkerId> {
        k.register_shrinker(
            ShrinkerConfig::new("dcache", SHRINKER_NEEDS_FS),
            DcacheShrinker {
                inner: self.inner.clone(),
                cache: self.cache as *const KmemCache as usize,
            },
        )
    }

    /// Look up `n` new names: allocate `n` entries with `gfp` and leave
    /// them unused on the LRU. Stops at the first failure.
    #[track_caller]
    pub fn lookup<P: Platform>(&self, k: &Kmem<P>, n: usize, gfp: Gfp) -> kmem::Result<()> {
        for _ in 0..n {
            let d = k.kmem_cache_alloc(self.cache, gfp)?;
            self.inner
                .lru
                .lock()
                .unwrap()
                .push_front(d.as_ptr() as usize);
        }
        Ok(())
    }

    /// Take the hottest unused entry off the LRU (it is in use now, as after
    /// `dget()`); `None` when the LRU is empty.
    pub fn pin(&self) -> Option<usize> {
        self.inner.lru.lock().unwrap().pop_front()
    }

    /// Put an entry from [`pin`](Self::pin) back on the LRU (`dput()`).
    pub fn unpin(&self, d: usize) {
        self.inner.lru.lock().unwrap().push_front(d);
    }

    /// Unused entries.
    pub fn nr_unused(&self) -> usize {
        self.inner.lru.lock().unwrap().len()
    }

    /// Entries reclaim freed so far.
    pub fn reclaimed(&self) -> u64 {
        self.inner.reclaimed.load(Relaxed)
    }

    /// Free every unused entry (`shrink_dcache_sb()`).
    pub fn prune<P: Platform>(&self, k: &Kmem<P>) -> kmem::Result<()> {
        let all = std::mem::take(&mut *self.inner.lru.lock().unwrap());
        for d in all {
            // SAFETY: every LRU entry is a live object of `self.cache` that
            // only this cache references; it is off the list now.
            unsafe { k.kmem_cache_free(self.cache, d as *mut u8) }?;
        }
        Ok(())
    }
}

struct DcacheShrinker {
    inner: Arc<Inner>,
    /// Address of the `dentry` KmemCache, looked up in the machine's cache
    /// list on use (so a destroyed cache is never touched).
    cache: usize,
}

impl<P: Platform> Shrinker<P> for DcacheShrinker {
    fn count_objects(&self, _k: &Kmem<P>, _sc: &ShrinkControl) -> u64 {
        match self.inner.lru.lock().unwrap().len() {
            0 => SHRINK_EMPTY,
            n => n as u64,
        }
    }

    fn scan_objects(&self, k: &Kmem<P>, sc: &mut ShrinkControl) -> u64 {
        let mut cache: Option<*const KmemCache> = None;
        k.for_each_cache(|c| {
            if c as *const KmemCache as usize == self.cache {
                cache = Some(c);
            }
        });
        let Some(c) = cache else {
            return kmem::shrinker::SHRINK_STOP;
        };
        // SAFETY: the cache is on the machine's list, so alive; it cannot be
        // destroyed while it has objects, and the objects on our LRU are
        // its objects: until they are freed below, it stays alive.
        let c = unsafe { &*c };
        let mut victims = Vec::new();
        {
            let mut lru = self.inner.lru.lock().unwrap();
            while (victims.len() as u64) < sc.nr_to_scan {
                match lru.pop_back() {
                    Some(d) => victims.push(d),
                    None => break,
                }
            }
        }
        sc.nr_scanned = victims.len() as u64;
        let mut freed = 0;
        for d in victims {
            // SAFETY: `d` was a live object of this cache on our LRU, which
            // we took it off; nothing else references it.
            if unsafe { k.kmem_cache_free(c, d as *mut u8) }.is_ok() {
                freed += 1;
            }
        }
        self.inner.reclaimed.fetch_add(freed, Relaxed);
        freed
    }
}
