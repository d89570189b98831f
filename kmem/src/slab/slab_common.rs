//! Cache creation, merging, shrinking and destruction, and the walk over
//! all caches (`mm/slab_common.c`).
//!
//! A new cache is merged into an existing one when Linux would merge it
//! (`find_mergeable()`: same size class, alignment and merge-relevant
//! flags, no constructor, nothing in `SLAB_NEVER_MERGE`, `slab_nomerge`
//! off); the name is then recorded as an alias.

use super::cache::*;
use super::geometry::{calculate_sizes, CacheArgs};
use super::sheaf::*;
use super::*;
use crate::gfp::{self};
use crate::page::PageList;
use crate::platform::IrqSpinGuard;
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result};
use core::cell::UnsafeCell;
use core::panic::Location;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Flags that make a cache unmergeable (`SLAB_NEVER_MERGE`).
pub(super) const SLAB_NEVER_MERGE: SlabFlags = SLAB_RED_ZONE
    .union(SLAB_POISON)
    .union(SLAB_STORE_USER)
    .union(SLAB_TRACE)
    .union(SLAB_TYPESAFE_BY_RCU)
    .union(SLAB_NOLEAKTRACE)
    .union(SLAB_CONSISTENCY_CHECKS)
    .union(SLAB_FAILSLAB)
    .union(SLAB_NO_MERGE);

/// Flags two caches must share to merge (`SLAB_MERGE_SAME`).
pub(super) const SLAB_MERGE_SAME: SlabFlags = SLAB_RECLAIM_ACCOUNT
    .union(SLAB_CACHE_DMA)
    .union(SLAB_CACHE_DMA32)
    .union(SLAB_ACCOUNT)
    .union(SLAB_NOLEAKTRACE);

impl<P: Platform> Kmem<P> {
    pub(super) fn slab_state(&self) -> &SlabState {
        &self.slab
    }

    /// Pages holding slab caches' own descriptors and sheaves (the 52
    /// kmalloc caches take some at boot).
    pub fn slab_meta_pages(&self) -> u64 {
        self.slab.meta_pages.load(Relaxed)
    }

    /// All caches, newest first.
    pub fn for_each_cache(&self, mut f: impl FnMut(&KmemCache)) {
        let head = self.slab_state().caches.lock();
        let mut c = *head;
        while !c.is_null() {
            // SAFETY: caches on the list are alive until destroy unlinks them
            // under the same lock we hold.
            let cr = unsafe { &*c };
            f(cr);
            c = cr.next.load(Relaxed);
        }
    }

    /// `kmem_cache_create()`.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// use kmem::gfp::GFP_KERNEL;
    /// use kmem::slab::SLAB_HWCACHE_ALIGN;
    /// let c = k.kmem_cache_create("my_obj", 100, 0, SLAB_HWCACHE_ALIGN, None).unwrap();
    /// let o = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
    /// // SAFETY: `o` is not used again.
    /// unsafe { k.kmem_cache_free(c, o.as_ptr()) }.unwrap();
    /// ```
    #[track_caller]
    pub fn kmem_cache_create(
        &self,
        name: &str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Ctor>,
    ) -> Result<&KmemCache> {
        self.kmem_cache_create_args(
            name,
            size,
            &KmemCacheArgs {
                align,
                freeptr_offset: None,
                ctor,
            },
            flags,
        )
    }

    /// `kmem_cache_create()` with an arguments struct (Linux 6.12's form).
    #[track_caller]
    pub fn kmem_cache_create_args(
        &self,
        name: &str,
        size: usize,
        args: &KmemCacheArgs,
        flags: SlabFlags,
    ) -> Result<&KmemCache> {
        let res = self.create_cache(name, size, args, flags, true);
        if let Err(e) = res {
            report!(
                &self.p,
                Level::Warning,
                "kmem_cache_create({}) failed with error {}",
                name,
                e.to_errno()
            );
            if flags.contains(SLAB_PANIC) {
                panic!(
                    "kmem_cache_create: Failed to create slab '{name}'. Error {}",
                    e.to_errno()
                );
            }
        }
        res
    }

    pub(crate) fn create_cache(
        &self,
        name: &str,
        size: usize,
        args: &KmemCacheArgs,
        flags: SlabFlags,
        allow_merge: bool,
    ) -> Result<&KmemCache> {
        if name.is_empty() || self.p.in_interrupt() {
            report!(
                &self.p,
                Level::Err,
                "kmem_cache_create: empty name or called from interrupt context"
            );
            return Err(Error::InvalidArgument);
        }
        let params = self.slab_state().params;
        // slab_debug= (its global flags, or a list that names this cache)
        // applies to kmalloc's caches as to any other.
        let flags = params
            .debug
            .kmem_cache_flags(flags.without(SLAB_PANIC), name);
        if allow_merge {
            if let Some(c) = self.find_mergeable(name, size, args, flags) {
                return Ok(c);
            }
        }
        if args.align != 0 && !args.align.is_power_of_two() {
            report!(
                &self.p,
                Level::Err,
                "kmem_cache_create({name}): alignment {} is not a power of two",
                args.align
            );
            return Err(Error::InvalidArgument);
        }
        let geo = calculate_sizes(
            &CacheArgs {
                object_size: size,
                align: super::geometry::calculate_alignment(flags, args.align, size),
                flags,
                has_ctor: args.ctor.is_some(),
                freeptr_offset: args.freeptr_offset,
            },
            self.nr_cpus,
        )?;
        let sheaf_cap = sheaf_capacity(geo.size);
        // The free fast path indexes sheaves unchecked below `cap`.
        assert!(sheaf_cap <= SHEAF_CAPACITY);
        // The metadata block: the cache, per-CPU sheaf slots, per-node state,
        // and the shared empty sheaf every CPU starts with. The sheaves
        // themselves (the CPUs' and the barns') come from the cache's pool
        // as they are needed (`init_cpu_sheaves`).
        let nr_cpus = self.nr_cpus;
        let nr_nodes = self.nr_nodes;
        let cpus_off = CPUS_OFF;
        let nodes_off = cpus_off + nr_cpus * core::mem::size_of::<CpuCache>();
        let nodes_off = nodes_off.next_multiple_of(64);
        let empty_off =
            (nodes_off + nr_nodes * core::mem::size_of::<KmemCacheNode>()).next_multiple_of(64);
        let total = empty_off + core::mem::size_of::<Sheaf>();
        let order = crate::page_alloc::get_order(total);
        let page = self.alloc_pages(gfp::GFP_KERNEL | gfp::__GFP_ZERO, order)?;
        let base = self.page_address(page).ok_or(Error::NoMemory)?.as_ptr() as usize;
        self.slab.meta_pages.fetch_add(1 << order, Relaxed);
        let (nb, nl) = copy_name(name);
        let debug = geo.flags.intersects(
            SLAB_CONSISTENCY_CHECKS
                .union(SLAB_RED_ZONE)
                .union(SLAB_POISON)
                .union(SLAB_STORE_USER),
        );
        // Zeroed: an empty sheaf with a null guard slot.
        let empty_sheaf = (base + empty_off) as *mut Sheaf;
        for i in 0..nr_cpus {
            // SAFETY: the block is ours, zeroed, and large enough for
            // `nr_cpus` CpuCache at `cpus_off` (64-byte aligned in a page).
            unsafe {
                ((base + cpus_off) as *mut CpuCache).add(i).write(CpuCache {
                    sheaves: UnsafeCell::new(CpuSheaves {
                        main: empty_sheaf,
                        free: empty_sheaf,
                        cap: 0,
                    }),
                    gate: AtomicU32::new(
                        self.cpu_to_node(i) as u32 | if debug { CPU_DEBUG } else { 0 },
                    ),
                })
            };
        }
        for n in 0..nr_nodes {
            // SAFETY: as above, at `nodes_off`.
            unsafe {
                ((base + nodes_off) as *mut KmemCacheNode)
                    .add(n)
                    .write(KmemCacheNode {
                        lists: spin::Mutex::new(NodeLists {
                            partial: PageList::new(),
                            nr_partial: 0,
                            full: PageList::new(),
                            barn_full: SheafStack::new(),
                            barn_empty: SheafStack::new(),
                        }),
                        nr_slabs: AtomicU64::new(0),
                        total_objects: AtomicU64::new(0),
                        nr_pages: AtomicU64::new(0),
                    })
            };
        }
        let ilog2 = usize::BITS - 1 - geo.size.leading_zeros();
        let min_partial = (u64::from(ilog2) / 2).clamp(MIN_PARTIAL, MAX_PARTIAL);
        let random = if params.freelist_hardened {
            self.p.random_u64() | 1
        } else {
            0
        };
        let cache = base as *mut KmemCache;
        // SAFETY: the start of our block, aligned, sized for a KmemCache.
        unsafe {
            cache.write(KmemCache {
                name: nb,
                name_len: nl,
                geo,
                ctor: args.ctor,
                divisor: ObjDivisor::new(geo.size),
                debug,
                min_partial,
                sheaf_cap,
                random,
                randomize: params.freelist_random,
                refcount: AtomicU32::new(1),
                aliases: spin::Mutex::new((
                    [[0; CACHE_NAME_LEN]; MAX_ALIASES],
                    [0; MAX_ALIASES],
                    0,
                )),
                next: AtomicPtr::new(ptr::null_mut()),
                sheaf_pool: spin::Mutex::new(SheafPool {
                    free: SheafStack::new(),
                    pages: 0,
                    nr_pages: 0,
                }),
                empty_sheaf,
                nr_cpus,
                nr_nodes,
                cpus: NonNull::new_unchecked((base + cpus_off) as *mut CpuCache),
                nodes: NonNull::new_unchecked((base + nodes_off) as *mut KmemCacheNode),
                meta_pfn: self.page_to_pfn(page),
                meta_order: order,
            })
        };
        let mut head = self.slab_state().caches.lock();
        // SAFETY: initialised above; published under the list lock.
        unsafe { (*cache).next.store(*head, Relaxed) };
        *head = cache;
        // SAFETY: the cache lives until kmem_cache_destroy, which the
        // caller may call only once nothing uses it (its safety contract).
        Ok(unsafe { &*cache })
    }

    /// `find_mergeable()`: an existing cache this one can be an alias of.
    pub(super) fn find_mergeable(
        &self,
        name: &str,
        size: usize,
        args: &KmemCacheArgs,
        flags: SlabFlags,
    ) -> Option<&KmemCache> {
        if self.slab_state().params.nomerge
            || flags.intersects(SLAB_NEVER_MERGE)
            || args.ctor.is_some()
            || args.freeptr_offset.is_some()
        {
            return None;
        }
        let align = super::geometry::calculate_alignment(flags, args.align, size);
        let size = size
            .next_multiple_of(core::mem::size_of::<usize>())
            .next_multiple_of(align);
        let mut found: *const KmemCache = ptr::null();
        self.for_each_cache(|s| {
            if !found.is_null()
                || s.geo.flags.intersects(SLAB_NEVER_MERGE)
                || s.ctor.is_some()
                || s.refcount.load(Relaxed) == 0
                || size > s.geo.size
                || (flags & SLAB_MERGE_SAME) != (s.geo.flags & SLAB_MERGE_SAME)
                || s.geo.size & (align - 1) != 0
                || s.geo.size - size >= core::mem::size_of::<usize>()
            {
                return;
            }
            found = s;
        });
        // SAFETY: found on the live cache list.
        let s = unsafe { found.as_ref() }?;
        s.refcount.fetch_add(1, Relaxed);
        let mut a = s.aliases.lock();
        if a.2 < MAX_ALIASES {
            let (nb, nl) = copy_name(name);
            let i = a.2;
            a.0[i] = nb;
            a.1[i] = nl;
            a.2 += 1;
        }
        Some(s)
    }

    /// `kmem_cache_size()`.
    pub fn kmem_cache_size(&self, s: &KmemCache) -> usize {
        s.geo.object_size
    }

    /// `kmem_cache_shrink()`: flush sheaves and the barns, then give every
    /// empty slab back to the page allocator. Returns the slabs freed.
    pub fn kmem_cache_shrink(&self, s: &KmemCache) -> u64 {
        self.flush_all(s);
        let mut freed = 0;
        for nid in 0..s.nr_nodes {
            // The barn's sheaves back to the pool, the full ones' objects
            // into their slabs first.
            let (mut full, mut empty) = {
                let mut l = IrqSpinGuard::lock(&self.p, &s.node(nid).lists);
                let full = core::mem::replace(&mut l.barn_full, SheafStack::new());
                (
                    full,
                    core::mem::replace(&mut l.barn_empty, SheafStack::new()),
                )
            };
            while let Some(sh) = full.pop() {
                // SAFETY: a barn sheaf, unlinked above, now exclusively ours.
                let sf = unsafe { &mut *sh };
                self.free_objects_to_slabs(s, nid, sf.objects());
                sf.size = 0;
                // SAFETY: empty, unlinked.
                unsafe { empty.push(sh) };
            }
            {
                let mut pool = IrqSpinGuard::lock(&self.p, &s.sheaf_pool);
                while let Some(sh) = empty.pop() {
                    // SAFETY: an empty sheaf, unlinked, now ours.
                    unsafe { pool.free.push(sh) };
                }
            }
            let mut discard = PageList::new();
            {
                let mut l = IrqSpinGuard::lock(&self.p, &s.node(nid).lists);
                let mm = self.mem_map();
                let empties: [u32; 64] = {
                    let mut e = [0u32; 64];
                    let mut n = 0;
                    for idx in l.partial.iter(&mm) {
                        if n < 64 && mm.at(idx).slab_inuse() == 0 {
                            e[n] = idx + 1;
                            n += 1;
                        }
                    }
                    e
                };
                for e in empties.iter().take_while(|&&e| e != 0) {
                    l.partial.remove(&mm, e - 1);
                    l.nr_partial -= 1;
                    super::partial::retire_slab_locked(mm.at(e - 1));
                    discard.push_head(&mm, e - 1);
                }
            }
            let n = self.discard_all(s, discard);
            freed += n;
            if n == 64 {
                freed += self.kmem_cache_shrink(s);
            }
        }
        self.sheaf_pool_trim(s);
        freed
    }

    /// `kmem_cache_destroy()`.
    ///
    /// A cache with objects still allocated is not destroyed: Linux's
    /// "still has objects" report lists them, and the cache stays usable.
    ///
    /// # Safety
    ///
    /// Nothing may use `s` (or an object of it) after a successful destroy,
    /// and no other CPU may be using it while it runs.
    #[track_caller]
    pub unsafe fn kmem_cache_destroy(&self, s: &KmemCache) -> Result<()> {
        let caller = Location::caller();
        if s.refcount.fetch_sub(1, Relaxed) > 1 {
            return Ok(());
        }
        self.kmem_cache_shrink(s);
        let left: u64 = (0..s.nr_nodes)
            .map(|n| s.node(n).nr_slabs.load(Relaxed))
            .sum();
        if left > 0 {
            s.refcount.fetch_add(1, Relaxed);
            report!(
                &self.p,
                Level::Err,
                "kmem_cache_destroy {}: Slab cache still has objects when called from {}",
                s.name(),
                caller
            );
            self.list_slab_objects(s);
            return Err(Error::Busy);
        }
        {
            let mut head = self.slab_state().caches.lock();
            let me = s as *const KmemCache as *mut KmemCache;
            if *head == me {
                *head = s.next.load(Relaxed);
            } else {
                let mut c = *head;
                while !c.is_null() {
                    // SAFETY: live caches on the list, under its lock.
                    let cr = unsafe { &*c };
                    if cr.next.load(Relaxed) == me {
                        cr.next.store(s.next.load(Relaxed), Relaxed);
                        break;
                    }
                    c = cr.next.load(Relaxed);
                }
            }
        }
        self.sheaf_pool_free(s);
        let (pfn, order) = (s.meta_pfn, s.meta_order);
        let page = self.pfn_to_page(pfn).ok_or(Error::BadAddress)?;
        self.__free_pages(page, order)?;
        self.slab.meta_pages.fetch_sub(1 << order, Relaxed);
        Ok(())
    }

    /// Slabs, objects and pages of `s` over all nodes.
    pub fn slab_totals(&self, s: &KmemCache) -> (u64, u64, u64) {
        (0..s.nr_nodes).fold((0, 0, 0), |(a, b, c), nid| {
            let n = s.node(nid);
            (
                a + n.nr_slabs.load(Relaxed),
                b + n.total_objects.load(Relaxed),
                c + n.nr_pages.load(Relaxed),
            )
        })
    }
}
