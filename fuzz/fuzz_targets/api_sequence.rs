//! Sequences of allocator calls on an arena machine, read from the input
//! bytes: kmalloc, kfree, krealloc, alloc_pages, __free_pages and the
//! kmem_cache calls, good and deliberately bad ones, on one or two CPUs,
//! with `slab_debug=FZPU` or without.
//!
//! Checked:
//! - a good call succeeds while memory is plentiful (the memory the
//!   sequence holds is under 1/16 of the machine and a quarter of it is
//!   free), and what it returns is aligned, does not overlap anything the
//!   sequence holds, and keeps the bytes written into it;
//! - a bad call returns an error, never panics, and leaves what the
//!   sequence holds as it was; good calls draw no `BUG` report;
//! - at the end, with everything freed, every cache shrunk and every CPU's
//!   page list drained, the free page count is the one right after boot
//!   (settled the same way).
//!
//! The bad calls are the ones kmem promises to catch (see
//! `kmem/src/slab/alloc.rs` and `__free_pages`): a free of an address that
//! is no object start (an interior pointer), of another cache's object, of
//! a page block with the wrong order or at a tail page, of a slab page as
//! pages and of plain pages with `kfree`; `krealloc` of a freed object;
//! `kmem_cache_destroy` of a cache
//! with objects; orders and sizes beyond the largest; and double frees:
//! of pages any time before the next allocation, and of slab objects
//! before the next allocation under `slab_debug` (which searches the
//! freelist) but only "in a row" (same CPU, no call between) without it,
//! which is all the always-on check covers, as in Linux.
#![no_main]

#[path = "common.rs"]
mod common;

use kmem::arena::ArenaPlatform;
use kmem::gfp::*;
use kmem::memory_map::MemRegion;
use kmem::page::Page;
use kmem::slab::*;
use kmem::{BootParams, Kmem, MAX_PAGE_ORDER, PAGE_SIZE};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const ARENA: usize = 16 << 20;
const MAX_OPS: usize = 512;
const MAX_CACHES: usize = 4;

const GFPS: [Gfp; 6] = [
    GFP_KERNEL,
    GFP_ATOMIC,
    GFP_NOWAIT,
    GFP_KERNEL.union(__GFP_ZERO),
    GFP_KERNEL.union(__GFP_DMA32),
    GFP_KERNEL.union(__GFP_DMA),
];

/// kmalloc sizes: every cache, both sides of its edges, and kmalloc_large.
const SIZES: [usize; 24] = [
    0, 1, 8, 9, 16, 24, 32, 63, 64, 96, 100, 128, 192, 256, 300, 512, 1000, 1024, 2048, 4096, 4097,
    8192, 8193, 16384,
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
}

#[derive(Clone, Copy)]
enum Owner {
    Kmalloc,
    Cache(usize),
}

/// An object the sequence holds: where, how many bytes it asked for and
/// wrote (a fill byte), the usable size, whose.
struct Obj {
    p: *mut u8,
    size: usize,
    ksize: usize,
    fill: u8,
    owner: Owner,
}

struct Block<'k> {
    page: &'k Page,
    addr: *mut u8,
    order: u32,
    comp: bool,
    fill: u8,
}

/// Something freed since the last allocation, which a double free may
/// name. `op` and `cpu` say when and where it was freed.
enum Stale<'k> {
    Obj {
        p: *mut u8,
        ksize: usize,
        owner: Owner,
        op: usize,
        cpu: usize,
    },
    Block {
        page: &'k Page,
        order: u32,
    },
}

struct Cache<'k> {
    s: &'k KmemCache,
    size: usize,
    no_merge: bool,
    live: usize,
}

struct World<'k, 'a> {
    k: &'k Kmem<ArenaPlatform<'a>>,
    debug: bool,
    boot: u64,
    objs: Vec<Obj>,
    blocks: Vec<Block<'k>>,
    stale: Vec<Stale<'k>>,
    caches: Vec<Option<Cache<'k>>>,
    ranges: BTreeMap<usize, usize>,
    held_bytes: usize,
    fill: u8,
    op: usize,
    cpu: usize,
    /// The index of the last call that was not a double free.
    last_call: usize,
}

fn write_fill(p: *mut u8, n: usize, fill: u8) {
    // SAFETY: the `n` bytes the sequence asked for, of memory it holds.
    unsafe { p.write_bytes(fill, n) };
}

fn check_fill(p: *const u8, n: usize, fill: u8, what: &str) {
    // SAFETY: as in `write_fill`.
    let bytes = unsafe { std::slice::from_raw_parts(p, n) };
    if let Some(i) = bytes.iter().position(|&b| b != fill) {
        panic!(
            "{what} {p:p}: byte {i} of {n} is {:#x}, not {fill:#x}",
            bytes[i]
        );
    }
}

impl<'k> World<'k, '_> {
    fn plentiful(&self, bytes: usize) -> bool {
        let total = self.boot as usize * PAGE_SIZE;
        let free = (self.k.nr_free_pages() + self.k.nr_pcp_pages()) as usize * PAGE_SIZE;
        self.held_bytes + bytes <= total / 16 && free >= total / 4
    }

    fn next_fill(&mut self) -> u8 {
        self.fill = self.fill.wrapping_add(1) | 1;
        self.fill
    }

    fn place(&mut self, a: usize, n: usize, what: &str) {
        if n == 0 {
            return;
        }
        if let Some((&s, &e)) = self.ranges.range(..a + n).next_back() {
            assert!(
                e <= a,
                "{what}: [{a:#x}, {:#x}) overlaps [{s:#x}, {e:#x}) held",
                a + n
            );
        }
        self.ranges.insert(a, a + n);
    }

    fn unplace(&mut self, a: usize) {
        self.ranges.remove(&a);
    }

    fn good<T>(&self, r: kmem::Result<T>, what: impl FnOnce() -> String) -> T {
        match r {
            Ok(v) => {
                let p = self.k.platform();
                assert!(
                    !p.reported("BUG"),
                    "{}: a BUG report on good input:\n{}",
                    what(),
                    common::reports(self.k)
                );
                v
            }
            Err(e) => panic!("{}: {e:?}\n{}", what(), common::reports(self.k)),
        }
    }

    fn no_bug(&self, what: &dyn Fn() -> String) {
        let p = self.k.platform();
        assert!(
            !p.reported("BUG"),
            "{}: a BUG report on good input:\n{}",
            what(),
            common::reports(self.k)
        );
    }

    fn bad<T: std::fmt::Debug>(&self, r: kmem::Result<T>, what: impl FnOnce() -> String) {
        assert!(
            r.is_err(),
            "{}: accepted ({:?})\n{}",
            what(),
            r,
            common::reports(self.k)
        );
        self.k.platform().clear_reports();
    }

    /// An allocation is about to be made: freed memory may be reused.
    fn allocating(&mut self) {
        self.stale.clear();
    }

    fn add_obj(&mut self, p: *mut u8, size: usize, owner: Owner, zeroed: bool, fresh: bool) {
        let ksize = match owner {
            Owner::Kmalloc => self.k.ksize(p),
            Owner::Cache(c) => self.caches[c].as_ref().expect("live cache").size,
        };
        assert!(ksize >= size, "ksize {ksize} < {size}");
        if size > 0 {
            // kmalloc's alignment: 8 bytes, and a power-of-two size to its
            // size; krealloc keeps an object that is big enough where it
            // is, so only the 8 bytes hold for what it returns (as Linux).
            let align = if fresh && size.is_power_of_two() {
                size.min(PAGE_SIZE)
            } else {
                8
            };
            if let Owner::Kmalloc = owner {
                assert_eq!(p as usize % align, 0, "kmalloc({size}) at {p:p}");
            }
            if zeroed {
                check_fill(p, size, 0, "__GFP_ZERO object");
            }
        }
        self.place(p as usize, size, "object");
        let fill = self.next_fill();
        write_fill(p, size, fill);
        self.held_bytes += ksize.max(8);
        self.objs.push(Obj {
            p,
            size,
            ksize,
            fill,
            owner,
        });
    }

    fn take_obj(&mut self, i: usize) -> Obj {
        let o = self.objs.swap_remove(i);
        check_fill(o.p, o.size, o.fill, "object");
        self.unplace(o.p as usize);
        self.held_bytes -= o.ksize.max(8);
        if let Owner::Cache(c) = o.owner {
            self.caches[c].as_mut().expect("live cache").live -= 1;
        }
        o
    }

    fn free_obj(&mut self, i: usize, via_kfree: bool) {
        let o = self.take_obj(i);
        let r = match (o.owner, via_kfree) {
            // SAFETY: the sequence's object, not used again.
            (Owner::Cache(c), false) => unsafe {
                self.k
                    .kmem_cache_free(self.caches[c].as_ref().expect("live").s, o.p)
            },
            // SAFETY: as above (kfree takes any slab object).
            _ => unsafe { self.k.kfree(o.p) },
        };
        self.good(r, || format!("free of {:p}", o.p));
        if o.size > 0 {
            self.stale.push(Stale::Obj {
                p: o.p,
                ksize: o.ksize,
                owner: o.owner,
                op: self.op,
                cpu: self.cpu,
            });
        }
    }

    fn alloc_block(&mut self, gfp: Gfp, order: u32, comp: bool) {
        let bytes = PAGE_SIZE << order;
        let must = order <= 3 && self.plentiful(bytes);
        let gfp = if comp { gfp | __GFP_COMP } else { gfp } | __GFP_NOWARN;
        self.allocating();
        match self.k.alloc_pages(gfp, order) {
            Ok(page) => {
                self.no_bug(&|| format!("alloc_pages({gfp}, {order})"));
                let pfn = self.k.page_to_pfn(page);
                assert_eq!(pfn % (1 << order), 0, "order {order} block not aligned");
                let addr = self.k.page_address(page).expect("direct-mapped").as_ptr();
                if gfp.contains(__GFP_ZERO) {
                    check_fill(addr, bytes, 0, "__GFP_ZERO block");
                }
                self.place(addr as usize, bytes, "page block");
                let fill = self.next_fill();
                write_fill(addr, bytes, fill);
                self.held_bytes += bytes;
                self.blocks.push(Block {
                    page,
                    addr,
                    order,
                    comp,
                    fill,
                });
            }
            Err(e) => {
                assert!(
                    !must,
                    "alloc_pages({gfp}, {order}) failed with memory plentiful: {e:?}\n{}",
                    common::reports(self.k)
                );
                assert_eq!(e, kmem::Error::NoMemory);
                self.k.platform().clear_reports();
            }
        }
    }

    fn take_block(&mut self, i: usize) -> Block<'k> {
        let b = self.blocks.swap_remove(i);
        check_fill(b.addr, PAGE_SIZE << b.order, b.fill, "page block");
        self.unplace(b.addr as usize);
        self.held_bytes -= PAGE_SIZE << b.order;
        b
    }

    fn free_block(&mut self, i: usize, via_addr: bool) {
        let b = self.take_block(i);
        let r = if via_addr {
            self.k.free_pages(b.addr, b.order)
        } else {
            self.k.__free_pages(b.page, b.order)
        };
        self.good(r, || {
            format!("free of the order {} block at {:p}", b.order, b.addr)
        });
        self.stale.push(Stale::Block {
            page: b.page,
            order: b.order,
        });
    }

    fn kmalloc(&mut self, size: usize, gfp: Gfp) {
        let must = self.plentiful(size.next_power_of_two());
        self.allocating();
        match self.k.kmalloc(size, gfp) {
            Ok(p) => {
                self.no_bug(&|| format!("kmalloc({size}, {gfp})"));
                self.add_obj(
                    p.as_ptr(),
                    size,
                    Owner::Kmalloc,
                    gfp.contains(__GFP_ZERO),
                    true,
                );
            }
            Err(e) => {
                assert!(
                    !must,
                    "kmalloc({size}, {gfp}) failed with memory plentiful: {e:?}\n{}",
                    common::reports(self.k)
                );
                self.k.platform().clear_reports();
            }
        }
    }

    fn krealloc(&mut self, i: usize, size: usize, gfp: Gfp) {
        if !matches!(self.objs[i].owner, Owner::Kmalloc) {
            return;
        }
        let must = self.plentiful(size.next_power_of_two());
        let old = self.take_obj(i);
        self.allocating();
        // SAFETY: the sequence's object; only the returned pointer is used
        // after a success.
        let r = unsafe { self.k.krealloc(old.p, size, gfp) };
        match r {
            Ok(p) => {
                self.no_bug(&|| format!("krealloc({:p}, {size}, {gfp})", old.p));
                let p = p.as_ptr();
                if size == 0 {
                    return; // freed; ZERO_SIZE_PTR needs no free
                }
                let kept = old.size.min(size);
                check_fill(p, kept, old.fill, "krealloc'd object");
                // A moved object's tail beyond the old usable size is zero
                // under __GFP_ZERO (what lies between the old size and
                // ksize is copied as it was).
                if gfp.contains(__GFP_ZERO) && p != old.p && size > old.ksize {
                    check_fill(
                        p.wrapping_add(old.ksize),
                        size - old.ksize,
                        0,
                        "krealloc's new tail",
                    );
                }
                self.add_obj(p, size, Owner::Kmalloc, false, false);
            }
            Err(e) => {
                assert!(
                    !must,
                    "krealloc to {size} failed with memory plentiful: {e:?}\n{}",
                    common::reports(self.k)
                );
                // The old object is still the sequence's.
                self.k.platform().clear_reports();
                self.place(old.p as usize, old.size, "object kept by a failed krealloc");
                self.held_bytes += old.ksize.max(8);
                self.objs.push(old);
            }
        }
    }

    fn cache_create(&mut self, slot: usize, size: usize, align: usize, flags: SlabFlags) {
        if self.caches[slot].is_some() {
            return;
        }
        // The cache's descriptor and sheaves take a few pages.
        let must = self.plentiful(16 * PAGE_SIZE);
        self.allocating();
        let name = format!("fuzz_cache_{slot}");
        let r = self.k.kmem_cache_create(&name, size, align, flags, None);
        if r.is_err() && !must {
            assert_eq!(r.err(), Some(kmem::Error::NoMemory));
            self.k.platform().clear_reports();
            return;
        }
        let s = self.good(r, || {
            format!("kmem_cache_create({name}, {size}, {align}, {flags:?})")
        });
        let no_merge = flags.contains(SLAB_NO_MERGE) || flags.intersects(SLAB_DEBUG_FLAGS);
        self.caches[slot] = Some(Cache {
            s,
            size,
            no_merge,
            live: 0,
        });
    }

    fn cache_alloc(&mut self, slot: usize, gfp: Gfp) {
        let Some(c) = &self.caches[slot] else { return };
        let (s, size) = (c.s, c.size);
        let must = self.plentiful(size);
        // kmem_cache caches take no zone modifiers other than their own.
        let gfp = gfp.without(__GFP_DMA | __GFP_DMA32);
        self.allocating();
        match self.k.kmem_cache_alloc(s, gfp) {
            Ok(p) => {
                self.no_bug(&|| format!("kmem_cache_alloc({})", s.name()));
                self.caches[slot].as_mut().expect("live").live += 1;
                self.add_obj(
                    p.as_ptr(),
                    size,
                    Owner::Cache(slot),
                    gfp.contains(__GFP_ZERO),
                    true,
                );
            }
            Err(e) => {
                assert!(
                    !must,
                    "kmem_cache_alloc({}) failed with memory plentiful: {e:?}\n{}",
                    s.name(),
                    common::reports(self.k)
                );
                self.k.platform().clear_reports();
            }
        }
    }

    fn cache_destroy(&mut self, slot: usize) {
        let Some(c) = &self.caches[slot] else { return };
        let s = c.s;
        if c.live > 0 {
            // Bad, where kmem can tell: a merged cache only drops a
            // reference, as Linux's does.
            if c.no_merge {
                // SAFETY: the destroy must fail; the cache stays usable.
                let r = unsafe { self.k.kmem_cache_destroy(s) };
                self.bad(r, || {
                    format!("kmem_cache_destroy of {} with objects", s.name())
                });
            }
            return;
        }
        self.stale.clear();
        // SAFETY: no object of it is held, and it is not used again.
        let r = unsafe { self.k.kmem_cache_destroy(s) };
        self.good(r, || format!("kmem_cache_destroy({})", s.name()));
        self.caches[slot] = None;
    }

    /// A bad call chosen by `b`, on something the sequence holds or freed.
    fn bad_call(&mut self, b: u8, arg: u16) {
        let k = self.k;
        match b % 12 {
            // Double free of something freed since the last allocation.
            0 | 1 => {
                if self.stale.is_empty() {
                    return;
                }
                let i = usize::from(arg) % self.stale.len();
                match self.stale[i] {
                    Stale::Block { page, order } => {
                        let r = k.__free_pages(page, order);
                        self.bad(r, || format!("double __free_pages, order {order}"));
                    }
                    Stale::Obj {
                        p,
                        ksize,
                        owner,
                        op,
                        cpu,
                    } => {
                        if !self.debug && (op != self.last_call || cpu != self.cpu) {
                            return; // not "in a row": not promised to be caught
                        }
                        if b == 1 && matches!(owner, Owner::Kmalloc) {
                            // krealloc of a freed object to more than its
                            // usable size (in place, nothing is freed and
                            // nothing can tell, as in Linux): freeing it
                            // must fail, and what was allocated for the
                            // move must not be kept (the page count at the
                            // end says so).
                            let size = ksize + 1 + usize::from(arg >> 8) * 64;
                            self.allocating();
                            // SAFETY: a double free, which must be refused.
                            let r = unsafe { k.krealloc(p, size, GFP_KERNEL) };
                            self.bad(r, || format!("krealloc({p:p}, {size}) of a freed object"));
                            return;
                        }
                        let r = match owner {
                            Owner::Cache(c) if b & 1 == 0 => match &self.caches[c] {
                                // SAFETY: a double free, which must be refused.
                                Some(c) => unsafe { k.kmem_cache_free(c.s, p) },
                                None => return,
                            },
                            // SAFETY: a double free, which must be refused.
                            _ => unsafe { k.kfree(p) },
                        };
                        self.bad(r, || format!("double free of {p:p}"));
                    }
                }
            }
            // An interior pointer to kfree, kmem_cache_free, krealloc.
            2..=4 => {
                if self.objs.is_empty() {
                    return;
                }
                let o = &self.objs[usize::from(arg) % self.objs.len()];
                if o.size < 2 {
                    return;
                }
                let off = 1 + usize::from(arg >> 8) % (o.size - 1);
                let q = o.p.wrapping_add(off);
                let r = match (b % 12, o.owner) {
                    // SAFETY: refused: not an object start.
                    (2, _) => unsafe { k.kfree(q) },
                    (3, Owner::Cache(c)) => {
                        let s = self.caches[c].as_ref().expect("live").s;
                        // SAFETY: refused: not an object start.
                        unsafe { k.kmem_cache_free(s, q) }
                    }
                    // SAFETY: refused: not an object start (ksize is 0).
                    _ => unsafe { k.krealloc(q, o.size * 2, GFP_KERNEL) }.map(|_| ()),
                };
                self.bad(r, || format!("free of {q:p}, {off} bytes into {:p}", o.p));
            }
            // An object freed to another cache than its own.
            5 => {
                if self.objs.is_empty() {
                    return;
                }
                let o = &self.objs[usize::from(arg) % self.objs.len()];
                let Some(Some(c)) = self.caches.get(usize::from(arg >> 8) % MAX_CACHES) else {
                    return;
                };
                if o.size == 0 {
                    return;
                }
                let own: *const KmemCache = match o.owner {
                    Owner::Cache(i) => self.caches[i].as_ref().expect("live").s,
                    Owner::Kmalloc => match k.kmalloc_slab(o.size, GFP_KERNEL) {
                        Some(s) if o.ksize <= kmem::kmalloc::KMALLOC_MAX_CACHE_SIZE => s,
                        _ => std::ptr::null(),
                    },
                };
                if std::ptr::eq(own, c.s) {
                    return;
                }
                // SAFETY: refused: not an object of `c`.
                let r = unsafe { k.kmem_cache_free(c.s, o.p) };
                self.bad(r, || {
                    format!(
                        "kmem_cache_free({}, {:p}) of another's object",
                        c.s.name(),
                        o.p
                    )
                });
            }
            // A page block freed with the wrong order.
            6 => {
                if self.blocks.is_empty() {
                    return;
                }
                let bl = &self.blocks[usize::from(arg) % self.blocks.len()];
                let wrong = u32::from(arg >> 8) % (MAX_PAGE_ORDER + 4);
                if wrong == bl.order {
                    return;
                }
                let r = k.__free_pages(bl.page, wrong);
                self.bad(r, || {
                    format!("order {} block freed as order {wrong}", bl.order)
                });
            }
            // A tail page of a block freed on its own.
            7 => {
                let Some(bl) = self.blocks.iter().find(|bl| bl.order > 0) else {
                    return;
                };
                let pfn = k.page_to_pfn(bl.page) + 1 + u64::from(arg) % ((1 << bl.order) - 1);
                let tail = k.pfn_to_page(pfn).expect("inside the block");
                let order = u32::from(arg >> 8) % (bl.order + 1);
                let r = k.__free_pages(tail, order);
                self.bad(r, || {
                    format!(
                        "tail page {pfn:#x} of an order {} block freed as order {order}",
                        bl.order
                    )
                });
            }
            // Pages to kfree (not compound: no kmalloc_large), a slab
            // object's page to __free_pages.
            8 => {
                if let Some(bl) = self.blocks.iter().find(|bl| !bl.comp) {
                    // SAFETY: refused: not kmalloc memory.
                    let r = unsafe { k.kfree(bl.addr) };
                    self.bad(r, || format!("kfree of page block {:p}", bl.addr));
                }
                if let Some(o) = self
                    .objs
                    .iter()
                    .find(|o| o.size > 0 && o.ksize <= kmem::kmalloc::KMALLOC_MAX_CACHE_SIZE)
                {
                    let page = k.virt_to_page(o.p).expect("direct-mapped");
                    let r = k.__free_pages(page, 0);
                    self.bad(r, || format!("__free_pages of the slab page of {:p}", o.p));
                }
            }
            // A page block to kmem_cache_free.
            9 => {
                let Some(bl) = self.blocks.first() else {
                    return;
                };
                let Some(Some(c)) = self.caches.get(usize::from(arg) % MAX_CACHES) else {
                    return;
                };
                // SAFETY: refused: not a slab object.
                let r = unsafe { k.kmem_cache_free(c.s, bl.addr) };
                self.bad(r, || format!("kmem_cache_free of page block {:p}", bl.addr));
            }
            // Beyond the largest order and size; an overflowing array.
            10 => {
                let order = MAX_PAGE_ORDER + 1 + u32::from(arg) % 64;
                self.allocating();
                self.bad(
                    k.alloc_pages(GFP_KERNEL | __GFP_NOWARN, order).map(|_| ()),
                    || format!("alloc_pages order {order}"),
                );
                let size = (kmem::kmalloc::KMALLOC_MAX_SIZE + 1) << (arg % 16);
                self.bad(
                    k.kmalloc(size, GFP_KERNEL | __GFP_NOWARN).map(|_| ()),
                    || format!("kmalloc({size})"),
                );
                let n = usize::MAX / 2 + usize::from(arg);
                self.bad(k.kmalloc_array(n, 4, GFP_KERNEL).map(|_| ()), || {
                    format!("kmalloc_array({n}, 4)")
                });
            }
            // kmem_cache_destroy of a cache that still has objects.
            _ => {
                let slot = usize::from(arg) % MAX_CACHES;
                if self.caches[slot].as_ref().is_some_and(|c| c.live > 0) {
                    self.cache_destroy(slot);
                }
            }
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) -> Option<()> {
        let op = inp.byte()?;
        let arg = inp.u16()?;
        if trace() {
            eprintln!(
                "#{} cpu {} op {} arg {arg:#06x} ({} objects, {} blocks, {} stale)",
                self.op,
                self.cpu,
                op % 16,
                self.objs.len(),
                self.blocks.len(),
                self.stale.len()
            );
        }
        let a = usize::from(arg);
        let gfp = GFPS[usize::from(op >> 4) % GFPS.len()];
        let is_double_free = op % 16 == 15 && arg % 12 < 2;
        match op % 16 {
            0 | 1 => self.kmalloc(SIZES[a % SIZES.len()], gfp),
            2 | 3 => {
                if !self.objs.is_empty() {
                    let i = a % self.objs.len();
                    self.free_obj(i, op & 16 != 0);
                }
            }
            4 => {
                if !self.objs.is_empty() {
                    let i = a % self.objs.len();
                    self.krealloc(i, SIZES[(a >> 8) % SIZES.len()], gfp);
                }
            }
            5 | 6 => {
                let order = if arg & 0x8000 != 0 {
                    (arg >> 8) as u32 % (MAX_PAGE_ORDER + 1)
                } else {
                    (arg >> 8) as u32 % 4
                };
                self.alloc_block(gfp, order, arg & 1 != 0);
            }
            7 => {
                if !self.blocks.is_empty() {
                    let i = a % self.blocks.len();
                    self.free_block(i, arg & 0x8000 != 0);
                }
            }
            8 => {
                let size = 1 + (a >> 2) % 4096;
                let align = [0, 8, 16, 64][a & 3];
                let f = inp.byte()?;
                let mut flags = SlabFlags::NONE;
                for (bit, fl) in [
                    SLAB_HWCACHE_ALIGN,
                    SLAB_NO_MERGE,
                    SLAB_CONSISTENCY_CHECKS,
                    SLAB_RED_ZONE,
                    SLAB_POISON,
                    SLAB_STORE_USER,
                    SLAB_RECLAIM_ACCOUNT,
                ]
                .into_iter()
                .enumerate()
                {
                    if f & (1 << bit) != 0 {
                        flags |= fl;
                    }
                }
                self.cache_create(usize::from(f >> 7) + 2 * (a % 2), size, align, flags);
            }
            9 | 10 => self.cache_alloc(a % MAX_CACHES, gfp),
            11 => {
                let slot = a % MAX_CACHES;
                let held: Vec<usize> = (0..self.objs.len())
                    .filter(|&i| matches!(self.objs[i].owner, Owner::Cache(c) if c == slot))
                    .collect();
                if !held.is_empty() {
                    self.free_obj(held[(a >> 4) % held.len()], op & 16 != 0);
                }
            }
            12 => self.cache_destroy(a % MAX_CACHES),
            13 => {
                let cpu = a % self.k.nr_cpus();
                self.k.platform().set_cpu(cpu);
                self.cpu = cpu;
            }
            14 => match a % 3 {
                0 => {
                    self.k.drain_all_pages();
                }
                1 => {
                    self.k.drain_local_pages();
                }
                _ => {
                    if let Some(Some(c)) = self.caches.get((a >> 2) % MAX_CACHES) {
                        self.k.kmem_cache_shrink(c.s);
                    }
                }
            },
            _ => self.bad_call((arg % 12) as u8, arg >> 4 | u16::from(op) << 12),
        }
        if !is_double_free {
            self.last_call = self.op;
        }
        self.op += 1;
        Some(())
    }

    fn finish(mut self) {
        while !self.objs.is_empty() {
            self.free_obj(self.objs.len() - 1, false);
        }
        while !self.blocks.is_empty() {
            self.free_block(self.blocks.len() - 1, false);
        }
        for slot in 0..MAX_CACHES {
            self.cache_destroy(slot);
        }
        let end = common::settle(self.k);
        assert_eq!(
            end,
            self.boot,
            "free pages: {end} at the end, {} after boot\n{}",
            self.boot,
            common::reports(self.k)
        );
    }
}

/// `KMEM_FUZZ_TRACE=1` prints each call (to read a crash's sequence).
fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KMEM_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let Some(mode) = inp.byte() else { return };
    let debug = mode & 1 != 0;
    let nr_cpus = 1 + usize::from(mode >> 1 & 1);
    let mut mem = vec![0u8; ARENA];
    let p = ArenaPlatform::new(&mut mem, nr_cpus);
    let (start, end) = p.usable_range();
    let mut params = BootParams {
        reserve_low: 0,
        ..BootParams::default()
    };
    if debug {
        params.slab.debug = SlabDebug::parse("FZPU").expect("slab_debug");
        params.slab.freelist_random = true;
    }
    let k = Kmem::boot(p, &[MemRegion::usable(start, end - start)], &params).expect("boot");
    let boot = common::settle(&k);
    let mut w = World {
        k: &k,
        debug,
        boot,
        objs: Vec::new(),
        blocks: Vec::new(),
        stale: Vec::new(),
        caches: (0..MAX_CACHES).map(|_| None).collect(),
        ranges: BTreeMap::new(),
        held_bytes: 0,
        fill: 0,
        op: 0,
        cpu: 0,
        last_call: usize::MAX,
    };
    for _ in 0..MAX_OPS {
        if w.step(&mut inp).is_none() {
            break;
        }
    }
    w.finish();
});
