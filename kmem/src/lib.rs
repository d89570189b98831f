//! # kmem: the Linux kernel's memory allocators as a `no_std` Rust core
//!
//! The modules follow Linux's `mm/` so a kernel developer finds each concept
//! under its own name:
//!
//! | module | Linux | what |
//! |---|---|---|
//! | [`platform`] | arch + sched | the [`Platform`] trait, the only door to the environment, and the OOM hook's types |
//! | [`arena`] | | a [`Platform`] over a byte buffer (tests, Miri) |
//! | [`error`] | `-ENOMEM`, `-EINVAL`... | the error values |
//! | [`page`] | `include/linux/mm_types.h`, `page-flags.h` | `struct page` and its flags |
//! | [`percpu_defs`] | `asm-generic/percpu.h`, `percpu-defs.h` | `__per_cpu_offset[]` and `per_cpu_ptr()`: how kmem's own per-CPU structures find each CPU's copy |
//! | [`mmzone`] | `include/linux/mmzone.h` | nodes, zones, zonelists, migratetypes, the free area and per-CPU list structures |
//! | [`gfp`] | `include/linux/gfp_types.h`, `gfp.h` | GFP flags, `gfp_zone()`, migratetype, their text form |
//! | [`memory_map`] | `arch/x86/kernel/e820.c` | the firmware memory map |
//! | [`memblock`] | `mm/memblock.c` | the early boot allocator (bootmem's successor) |
//! | [`memory_model`] | `asm-generic/memory_model.h`, `highmem.h` | `pfn_to_page`, `page_address`, `virt_to_page`, `kmap` |
//! | [`page_alloc`] | `mm/page_alloc.c` | the buddy allocator: allocation and free paths, per-CPU lists, watermarks, sysctls, fail_page_alloc |
//! | [`show_mem`] | `mm/show_mem.c` | the `Mem-Info:` report |
//! | [`sched`] | `include/linux/sched/mm.h` | memalloc scopes, `might_sleep()` |
//! | [`seq_buf`] | `lib/seq_buf.c` | a heap-free text buffer for report lines and fault handlers |
//! | [`shrinker`] | `mm/shrinker.c` | shrinkers |
//! | [`vmscan`] | `mm/vmscan.c` | direct reclaim and kswapd |
//! | [`oom_kill`] | `mm/oom_kill.c` | when the allocator calls the OOM hook |
//! | [`slab`] | `mm/slub.c`, `mm/slab_common.c`, `include/linux/slab.h` | SLUB: caches, sheaves, slabs, debugging, failslab |
//! | [`kmalloc`] | `include/linux/slab.h`, `mm/slab_common.c` | kmalloc, kfree, krealloc, ksize; the kmalloc caches |
//! | [`vmalloc`] | `mm/vmalloc.c` | vmalloc, vmap, `vm_map_ram`: the vmap_area allocator, lazy freeing, the vmalloc family |
//! | [`util`] | `mm/util.c` (`mm/slub.c` since 6.16) | kvmalloc: kmalloc, then vmalloc |
//! | [`ioremap`] | `arch/x86/mm/ioremap.c`, `asm-generic/io.h` | device memory mapped into the vmalloc space; `readl`/`writel` |
//! | [`mempool`] | `mm/mempool.c` | memory pools: reserved elements for allocations that must make progress |
//! | [`fault_inject`] | `lib/fault-inject.c` | the fault attribute that failslab and fail_page_alloc share |
//! | [`resource`] | `kernel/resource.c` | the iomem resource tree, `request_mem_region`, `/proc/iomem` |
//! | [`proc`] | `mm/vmstat.c`, `fs/proc/meminfo.c`, `mm/slab_common.c` | `/proc` reports in Linux's text formats |
//! | [`init`] | `init/main.c`, `mm/mm_init.c` | the machine and its boot sequence |
//! | [`alloc`] | Rust-for-Linux `rust/kernel/alloc*` | the typed API: `Allocator` (`Kmalloc`, `Vmalloc`, `KVmalloc`), `KBox`, `KVec` (and `VBox`, `KVBox`, `VVec`, `KVVec`), typed slab caches, typed mempools |
//!
//! The table goes from the bottom layer up: a module imports only from
//! those above it in the table, except that `page_alloc` and `vmscan` call
//! each other (direct reclaim), as in Linux; `kmem/tests/layering.rs`
//! checks it. [`Kmem`] is the composition root: its fields are the
//! subsystems' states, and each subsystem adds its operations in an `impl
//! Kmem` block of its own module.
//!
//! There are no global singletons: a machine is a [`Kmem`] value built by
//! [`Kmem::boot`]. A kernel that wants free functions installs one instance
//! behind a facade of its own.
//!
//! The core uses no heap. The structures the allocator needs at run time
//! (`struct page` array, node and zone descriptors, pageblock flags, the
//! per-CPU allocator's first chunk) are allocated from memblock at boot,
//! as Linux does; the zones' per-CPU page lists are per-CPU memory (the
//! first chunk, or vmalloc chunks of buddy pages on a machine with many
//! zones).
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(test)]
extern crate std;

pub mod alloc;
pub mod arena;
pub mod error;
pub mod fault_inject;
pub mod gfp;
pub mod init;
pub mod ioremap;
pub mod kmalloc;
pub mod memblock;
pub mod memory_map;
pub mod memory_model;
pub mod mempool;
pub mod mmzone;
pub mod oom_kill;
pub mod page;
pub mod page_alloc;
pub mod percpu;
pub mod percpu_defs;
pub mod platform;
pub mod proc;
pub mod resource;
pub mod sched;
pub mod seq_buf;
pub mod show_mem;
pub mod shrinker;
pub mod slab;
pub mod util;
pub mod vmalloc;
pub mod vmscan;

pub use error::{Error, Result};
pub use gfp::Gfp;
pub use init::{BootParams, EarlyMem, Kmem};
pub use platform::Platform;

/// log2 of the page size (`PAGE_SHIFT`): kmem uses 4 KiB pages, like x86_64.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes per page (`PAGE_SIZE`).
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// The largest buddy order (`MAX_PAGE_ORDER`, formerly `MAX_ORDER - 1`): 4 MiB blocks.
pub const MAX_PAGE_ORDER: u32 = 10;
/// Number of buddy orders (`NR_PAGE_ORDERS`).
pub const NR_PAGE_ORDERS: usize = MAX_PAGE_ORDER as usize + 1;
/// Orders above this are "costly" (`PAGE_ALLOC_COSTLY_ORDER`); per-CPU lists
/// hold orders `0..=PAGE_ALLOC_COSTLY_ORDER`.
pub const PAGE_ALLOC_COSTLY_ORDER: u32 = 3;
/// Order of a pageblock, the unit of migratetype grouping (`pageblock_order`,
/// the huge page order on x86_64).
pub const PAGEBLOCK_ORDER: u32 = 9;
/// Pages per pageblock (`pageblock_nr_pages`).
pub const PAGEBLOCK_NR_PAGES: u64 = 1 << PAGEBLOCK_ORDER;

/// A page frame number: a physical address shifted right by [`PAGE_SHIFT`].
pub type Pfn = u64;

/// `PFN_PHYS()`.
#[inline]
pub const fn pfn_phys(pfn: Pfn) -> u64 {
    pfn << PAGE_SHIFT
}

/// `PHYS_PFN()`.
#[inline]
pub const fn phys_pfn(pa: u64) -> Pfn {
    pa >> PAGE_SHIFT
}
