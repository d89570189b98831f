//! What a trace is replayed against: kmem on a simulated machine, or the
//! host's system allocator for comparison.
//!
//! The [replay engine](crate::engine) parses the trace, keeps the maps from
//! the traced kernel's pointers and page frames to the target's own
//! handles, and counts; a [`Target`] only allocates and frees. Both targets
//! therefore run the very same parser and maps, and their times compare
//! the allocators.

use crate::percpu::PercpuUsage;
use kmem::gfp::{Gfp, __GFP_ZERO};
use kmem::percpu::PcpuPtr;
use kmem::slab::{KmemCache, KmemCacheArgs, SlabFlags};
use kmem::vmalloc::{LazyFree, PurgeEvent};
use kmem::{Error, Kmem, PAGE_SIZE};
use kmem_sim::{CpuBinding, SimPlatform};
use std::alloc::{GlobalAlloc, Layout, System};

/// A cache the trace names, as the engine asks a target to create it.
#[derive(Clone, Copy, Debug)]
pub struct CacheSpec<'a> {
    /// The cache's name.
    pub name: &'a str,
    /// The object size (`bytes_req` of `kmem:kmem_cache_alloc`).
    pub object_size: usize,
    /// Creation flags inferred from the trace.
    pub flags: SlabFlags,
    /// Whether to give the cache a constructor (inferred: Linux's layout
    /// shows one by its free pointer placed after the object).
    pub ctor: bool,
}

/// Memory use of a target at one moment, in pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemSample {
    /// Pages in slabs of all caches.
    pub slab_pages: u64,
    /// Pages of kmalloc allocations above the largest kmalloc cache.
    pub kmalloc_large_pages: u64,
    /// Free pages on the buddy lists (`MemFree`).
    pub free_pages: u64,
    /// Free pages cached on the per-CPU lists.
    pub pcp_pages: u64,
}

/// An allocator a trace can be replayed against.
///
/// Handles are the target's own addresses (or page frame numbers); the
/// engine maps the trace's to them and hands them back to free.
pub trait Target {
    /// Run the following events as CPU `cpu` (only called when it changes).
    fn set_cpu(&mut self, cpu: usize);
    /// Run the following events as thread `tid` named `comm` (only called
    /// when it changes).
    fn set_task(&mut self, _tid: u32, _comm: &[u8]) {}
    /// `kmalloc_node(size, gfp, node)`: the object's handle and the size it
    /// got (`ksize()`).
    fn kmalloc(&mut self, size: usize, gfp: Gfp, node: i32) -> Result<(usize, usize), Error>;
    /// `kfree()` of a handle [`kmalloc`](Self::kmalloc) returned for `size`
    /// bytes.
    fn kfree(&mut self, handle: usize, size: usize) -> Result<(), Error>;
    /// Create (or find) a cache; returns its id and its slot size
    /// (`s->size`).
    fn create_cache(&mut self, spec: &CacheSpec<'_>) -> Result<(u32, usize), Error>;
    /// `kmem_cache_alloc_node()` (node -1: any) with `gfp`.
    fn cache_alloc(&mut self, cache: u32, gfp: Gfp, node: i32) -> Result<usize, Error>;
    /// `kmem_cache_free()`.
    fn cache_free(&mut self, cache: u32, handle: usize) -> Result<(), Error>;
    /// `alloc_pages(gfp, order)`: the handle and the order obtained.
    fn alloc_pages(&mut self, gfp: Gfp, order: u32) -> Result<(usize, u32), Error>;
    /// `__free_pages()`.
    fn free_pages(&mut self, handle: usize, order: u32) -> Result<(), Error>;
    /// The target's memory use now, if it can tell. Called every few
    /// thousand events, so a target may also tidy up here.
    fn sample(&mut self) -> Option<MemSample>;

    /// Whether the target has a vmap_area allocator: the `vmalloc:*`
    /// events are replayed on it through the methods below, else counted
    /// and skipped (the default).
    fn has_vmap_areas(&self) -> bool {
        false
    }
    /// `alloc_vmap_area(size, align)` in the vmalloc space: the area's
    /// first address.
    fn alloc_vmap_area(&mut self, _size: usize, _align: usize) -> Result<usize, Error> {
        Err(Error::NotSupported)
    }
    /// `free_vmap_area()`: give an area back at once, without a lazy
    /// round (an area Linux freed where the trace could not see it).
    fn free_vmap_area(&mut self, _addr: usize) -> Result<(), Error> {
        Err(Error::NotSupported)
    }
    /// `free_vmap_area_noflush()`: free an area lazily; what
    /// `vmap_lazy_nr` and `lazy_max_pages()` are then.
    fn free_vmap_area_noflush(&mut self, _addr: usize) -> Result<LazyFree, Error> {
        Err(Error::NotSupported)
    }
    /// `purge_vmap_area_lazy()`: return every lazily freed area to the
    /// free space; what the `vmalloc:purge_vmap_area_lazy` event would
    /// show.
    fn purge_vmap_area_lazy(&mut self) -> PurgeEvent {
        PurgeEvent {
            start: usize::MAX,
            end: 0,
            num_purged: 0,
        }
    }
    /// `vmap_lazy_nr`: pages freed lazily and not yet purged.
    fn vmap_lazy_nr(&self) -> usize {
        0
    }
    /// `lazy_max_pages()`.
    fn lazy_max_pages(&self) -> usize {
        0
    }

    /// Whether the target has a per-CPU allocator: the `percpu:*` events
    /// are replayed on it through the methods below, else counted and
    /// skipped (the default).
    fn has_percpu(&self) -> bool {
        false
    }
    /// `__alloc_percpu_gfp(size, align, gfp)`, or
    /// `__alloc_reserved_percpu(size, align)` when `reserved` (which takes
    /// no GFP flags: Linux's passes `GFP_KERNEL`): the per-CPU pointer.
    fn alloc_percpu(
        &mut self,
        _size: usize,
        _align: usize,
        _reserved: bool,
        _gfp: Gfp,
    ) -> Result<usize, Error> {
        Err(Error::NotSupported)
    }
    /// `free_percpu()` of a pointer [`alloc_percpu`](Self::alloc_percpu)
    /// returned.
    fn free_percpu(&mut self, _ptr: usize) -> Result<(), Error> {
        Err(Error::NotSupported)
    }
    /// `pcpu_obj_full_size(size)` for a size the allocator took: what the
    /// object costs over every possible CPU, memcg's overhead included.
    fn pcpu_obj_full_size(&self, _size: usize) -> usize {
        0
    }
    /// The per-CPU allocator's chunks and pages now, if it can tell.
    fn percpu_usage(&self) -> Option<PercpuUsage> {
        None
    }
}

/// kmem on a simulated machine: each event runs on the replaying thread
/// bound as the event's CPU ([`CpuBinding::switch_to`]), and as its task.
///
/// The machine's kernel messages (allocation failure reports and the like)
/// are taken from the simulator as the replay goes, so they do not pile up:
/// the first [`KEPT_MESSAGES`] are kept, all are counted.
pub struct KmemTarget<'k, 's> {
    k: &'k Kmem<&'s SimPlatform>,
    sim: &'s SimPlatform,
    binding: CpuBinding<'s>,
    caches: Vec<&'k KmemCache>,
    messages: Vec<String>,
    message_count: u64,
}

/// Kernel message lines a [`KmemTarget`] keeps.
pub const KEPT_MESSAGES: usize = 40;

/// The no-op constructor given to caches whose Linux layout shows one: the
/// trace cannot tell what Linux's did, only that it existed.
fn inferred_ctor(_: *mut u8) {}

impl<'k, 's> KmemTarget<'k, 's> {
    /// Bind the calling thread to CPU `cpu` of `k`'s machine. Panics, as
    /// [`SimPlatform::bind`] does, when the thread is bound already.
    pub fn new(k: &'k Kmem<&'s SimPlatform>, cpu: usize) -> Self {
        let sim: &'s SimPlatform = k.platform();
        KmemTarget {
            k,
            sim,
            binding: sim.bind(cpu),
            caches: Vec::new(),
            messages: Vec::new(),
            message_count: 0,
        }
    }

    /// Move the machine's new kernel messages into the kept ones.
    fn take_messages(&mut self) {
        for (_, line) in self.sim.take_reports() {
            self.message_count += 1;
            if self.messages.len() < KEPT_MESSAGES {
                self.messages.push(line);
            }
        }
    }

    /// The kernel messages printed during the replay: the first ones and
    /// how many there were. Unbinds the thread.
    pub fn into_messages(mut self) -> (Vec<String>, u64) {
        self.take_messages();
        (self.messages, self.message_count)
    }

    /// The machine.
    pub fn kmem(&self) -> &'k Kmem<&'s SimPlatform> {
        self.k
    }
}

impl<'k> Target for KmemTarget<'k, '_> {
    #[inline]
    fn set_cpu(&mut self, cpu: usize) {
        self.binding.switch_to(cpu);
    }

    fn set_task(&mut self, tid: u32, comm: &[u8]) {
        let comm = String::from_utf8_lossy(comm);
        self.binding.set_task(kmem::platform::Task::new(tid, &comm));
    }

    #[inline]
    fn kmalloc(&mut self, size: usize, gfp: Gfp, node: i32) -> Result<(usize, usize), Error> {
        let p = if node >= 0 {
            self.k.kmalloc_node(size, gfp, node)?
        } else {
            self.k.kmalloc(size, gfp)?
        };
        Ok((p.as_ptr() as usize, self.k.ksize(p.as_ptr())))
    }

    #[inline]
    fn kfree(&mut self, handle: usize, _size: usize) -> Result<(), Error> {
        // SAFETY: `handle` came from `kmalloc` above; the engine removed it
        // from its map before calling, so it is freed once, and nothing here
        // reads or writes the object.
        unsafe { self.k.kfree(handle as *mut u8) }
    }

    fn create_cache(&mut self, spec: &CacheSpec<'_>) -> Result<(u32, usize), Error> {
        // A cache kmem has already (a kmalloc cache named in the trace, or
        // one created earlier under the same name and size) is used as is.
        let mut found = None;
        self.k.for_each_cache(|c| {
            if found.is_none() && c.name() == spec.name && c.object_size() == spec.object_size {
                found = Some(c as *const KmemCache);
            }
        });
        let cache: &'k KmemCache = match found {
            // SAFETY: kmem's caches live as long as the machine unless
            // destroyed, and nothing here destroys caches.
            Some(c) => unsafe { &*c },
            None => self.k.kmem_cache_create_args(
                spec.name,
                spec.object_size,
                &KmemCacheArgs {
                    ctor: spec.ctor.then_some(inferred_ctor as kmem::slab::Ctor),
                    ..Default::default()
                },
                spec.flags,
            )?,
        };
        self.caches.push(cache);
        Ok(((self.caches.len() - 1) as u32, cache.geometry().size))
    }

    #[inline]
    fn cache_alloc(&mut self, cache: u32, gfp: Gfp, node: i32) -> Result<usize, Error> {
        let s = self.caches[cache as usize];
        let p = if node >= 0 {
            self.k.kmem_cache_alloc_node(s, gfp, node)?
        } else {
            self.k.kmem_cache_alloc(s, gfp)?
        };
        Ok(p.as_ptr() as usize)
    }

    #[inline]
    fn cache_free(&mut self, cache: u32, handle: usize) -> Result<(), Error> {
        let s = self.caches[cache as usize];
        // SAFETY: as in `kfree`: an object of this cache from `cache_alloc`,
        // freed once, never touched here.
        unsafe { self.k.kmem_cache_free(s, handle as *mut u8) }
    }

    #[inline]
    fn alloc_pages(&mut self, gfp: Gfp, order: u32) -> Result<(usize, u32), Error> {
        let page = self.k.alloc_pages(gfp, order)?;
        Ok((self.k.page_to_pfn(page) as usize, page.order()))
    }

    #[inline]
    fn free_pages(&mut self, handle: usize, order: u32) -> Result<(), Error> {
        let page = self.k.pfn_to_page(handle as u64).ok_or(Error::BadAddress)?;
        self.k.__free_pages(page, order)
    }

    fn sample(&mut self) -> Option<MemSample> {
        self.take_messages();
        let (rec, unrec) = kmem::proc::slab_pages(self.k);
        let large = self.k.kmalloc_large_pages();
        Some(MemSample {
            slab_pages: rec + unrec - large,
            kmalloc_large_pages: large,
            free_pages: self.k.nr_free_pages(),
            pcp_pages: self.k.nr_pcp_pages(),
        })
    }

    fn has_vmap_areas(&self) -> bool {
        true
    }

    fn alloc_vmap_area(&mut self, size: usize, align: usize) -> Result<usize, Error> {
        // The event has no GFP flags. Only their reclaim bits matter here
        // (for the area's node), and GFP_KERNEL's are those of the usual
        // callers (a thread stack's are GFP_KERNEL_ACCOUNT's).
        self.k.alloc_vmap_area(size, align, kmem::gfp::GFP_KERNEL)
    }

    fn free_vmap_area(&mut self, addr: usize) -> Result<(), Error> {
        self.k.free_vmap_area(addr)
    }

    fn free_vmap_area_noflush(&mut self, addr: usize) -> Result<LazyFree, Error> {
        self.k.free_vmap_area_noflush(addr)
    }

    fn purge_vmap_area_lazy(&mut self) -> PurgeEvent {
        self.k.purge_vmap_area_lazy()
    }

    fn vmap_lazy_nr(&self) -> usize {
        self.k.vmap_lazy_nr()
    }

    fn lazy_max_pages(&self) -> usize {
        self.k.lazy_max_pages()
    }

    fn has_percpu(&self) -> bool {
        true
    }

    fn alloc_percpu(
        &mut self,
        size: usize,
        align: usize,
        reserved: bool,
        gfp: Gfp,
    ) -> Result<usize, Error> {
        let p = if reserved {
            self.k.__alloc_reserved_percpu(size, align)?
        } else {
            self.k.__alloc_percpu_gfp(size, align, gfp)?
        };
        Ok(p.addr())
    }

    fn free_percpu(&mut self, ptr: usize) -> Result<(), Error> {
        // The pointer `alloc_percpu` returned, rebuilt from its address
        // (kmem checks it names a live allocation).
        let p = PcpuPtr::<u8>::NULL.byte_add(ptr);
        // SAFETY: nothing here reads or writes per-CPU copies: the replay
        // only allocates and frees. The allocation came from
        // `__alloc_percpu_gfp`/`__alloc_reserved_percpu`, not a `PerCpu`,
        // and the engine removed it from its map before calling, so it is
        // freed once.
        unsafe { self.k.free_percpu(p) }
    }

    fn pcpu_obj_full_size(&self, size: usize) -> usize {
        self.k.pcpu_obj_full_size(size)
    }

    fn percpu_usage(&self) -> Option<PercpuUsage> {
        let s = self.k.pcpu_global_stats();
        Some(PercpuUsage {
            chunks: s.nr_chunks,
            max_chunks: s.nr_max_chunks,
            pages: self.k.pcpu_nr_pages() as u64,
        })
    }
}

/// The host's system allocator (`malloc`/`free` through
/// [`std::alloc::System`]): objects of the traced requested size, pages as
/// page-aligned blocks of the traced order, zeroed (`calloc`) when the
/// trace's GFP flags have `__GFP_ZERO`. CPU identity means nothing to it.
#[derive(Default)]
pub struct SystemTarget {
    cache_sizes: Vec<usize>,
}

impl SystemTarget {
    /// A target with no caches yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn layout(size: usize, align: usize) -> Result<Layout, Error> {
        Layout::from_size_align(size.max(1), align).map_err(|_| Error::InvalidArgument)
    }

    fn alloc(layout: Layout, gfp: Gfp) -> Result<usize, Error> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe {
            if gfp.contains(__GFP_ZERO) {
                System.alloc_zeroed(layout)
            } else {
                System.alloc(layout)
            }
        };
        if p.is_null() {
            Err(Error::NoMemory)
        } else {
            Ok(p as usize)
        }
    }

    fn free(handle: usize, layout: Layout) {
        // SAFETY: `handle` came from `alloc` with this layout (the engine
        // passes back the size it was allocated with) and is freed once.
        unsafe { System.dealloc(handle as *mut u8, layout) }
    }
}

/// Alignment of the system allocator's objects (kmalloc's minimum).
const OBJ_ALIGN: usize = 8;

impl Target for SystemTarget {
    fn set_cpu(&mut self, _cpu: usize) {}

    #[inline]
    fn kmalloc(&mut self, size: usize, gfp: Gfp, _node: i32) -> Result<(usize, usize), Error> {
        Ok((Self::alloc(Self::layout(size, OBJ_ALIGN)?, gfp)?, size))
    }

    #[inline]
    fn kfree(&mut self, handle: usize, size: usize) -> Result<(), Error> {
        Self::free(handle, Self::layout(size, OBJ_ALIGN)?);
        Ok(())
    }

    fn create_cache(&mut self, spec: &CacheSpec<'_>) -> Result<(u32, usize), Error> {
        self.cache_sizes.push(spec.object_size);
        Ok(((self.cache_sizes.len() - 1) as u32, spec.object_size))
    }

    #[inline]
    fn cache_alloc(&mut self, cache: u32, gfp: Gfp, _node: i32) -> Result<usize, Error> {
        Self::alloc(
            Self::layout(self.cache_sizes[cache as usize], OBJ_ALIGN)?,
            gfp,
        )
    }

    #[inline]
    fn cache_free(&mut self, cache: u32, handle: usize) -> Result<(), Error> {
        Self::free(
            handle,
            Self::layout(self.cache_sizes[cache as usize], OBJ_ALIGN)?,
        );
        Ok(())
    }

    #[inline]
    fn alloc_pages(&mut self, gfp: Gfp, order: u32) -> Result<(usize, u32), Error> {
        let layout = Self::layout(PAGE_SIZE << order, PAGE_SIZE)?;
        Ok((Self::alloc(layout, gfp)?, order))
    }

    #[inline]
    fn free_pages(&mut self, handle: usize, order: u32) -> Result<(), Error> {
        Self::free(handle, Self::layout(PAGE_SIZE << order, PAGE_SIZE)?);
        Ok(())
    }

    fn sample(&mut self) -> Option<MemSample> {
        None
    }
}
