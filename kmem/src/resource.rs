//! The iomem resource tree (`kernel/resource.c`), filled at boot from the
//! firmware memory map as x86's `e820__reserve_resources()` and
//! `e820__reserve_resources_late()` do (`arch/x86/kernel/e820.c`).
//!
//! Linux describes the physical address space as a tree of
//! `struct resource`. The root, `iomem_resource` ("PCI mem"), spans
//! `0..=u64::MAX`; under it sit the firmware's ranges ("System RAM",
//! "Reserved", "ACPI Tables"...) and, inside the ranges that are not busy,
//! the device registers drivers claim with `request_mem_region()`. A claim
//! that overlaps a busy range is refused, so two drivers never drive the
//! same registers and nobody maps RAM as a device. `/proc/iomem` prints the
//! tree ([`crate::proc::iomem`]); `region_intersects()` tells `memremap()`
//! and ioremap whether a range is RAM.
//!
//! # Design
//!
//! - A node is a [`Resource`] (start, inclusive end, name, flags, desc)
//!   with parent, sibling and child links: 64 bytes, as Linux's
//!   `struct resource`. The core has no heap: boot's nodes come from
//!   memblock, as Linux's `e820__reserve_resources()` takes them, and a
//!   request's from kmalloc-64, as Linux's `alloc_resource()` kzallocs
//!   one; released nodes go back to kmalloc, and boot's are leaked, as
//!   Linux's `free_resource()` leaks them. The root is a boot node too, so
//!   no link points into the [`Kmem`] value, which moves. A node's
//!   children are disjoint, sorted by address and inside it.
//! - One spin lock ([`Iomem`]) guards the tree where Linux has a rwlock.
//!   Nodes are allocated before it is taken and freed after it is dropped,
//!   so a request may reclaim in kmalloc (`GFP_KERNEL`, as Linux's
//!   `__request_region()`).
//! - Names are `&'static str`: kmem's requesters are Rust code whose names
//!   are fixed when it is built.
//! - Flags and descriptors are Linux's bit values, in `u32` fields (Linux's
//!   `unsigned long`, whose defined bits all fit in 32), which keeps a
//!   node at 64 bytes with a 16-byte `&str` name.
//!
//! # What boot puts in the tree
//!
//! [`Kmem::boot`] builds the tree once the memory map is in memblock and
//! the zones are sized, as x86's `setup_arch()` runs
//! `e820__reserve_resources()`: each firmware map entry becomes a resource named as `e820_type_to_string()` names it
//! ("System RAM", "Reserved", "ACPI Tables", "ACPI Non-volatile Storage",
//! "Unusable memory"), with `IORESOURCE_SYSTEM_RAM` for RAM and
//! `IORESOURCE_MEM` otherwise, and the descriptor
//! `e820_type_to_iores_desc()` gives. As `do_mark_busy()` decides, ranges
//! below 1 MiB (the legacy BIOS, ROM-shadow and VGA area) and every RAM,
//! ACPI and unusable range are busy and go in first; reserved ranges above
//! 1 MiB are device windows (the PCI hole, MMIO) that drivers may claim
//! inside, and go in afterwards without `IORESOURCE_BUSY`, as
//! `e820__reserve_resources_late()` inserts them. Then, as that function
//! does, the end of each RAM range is padded to a 64 KiB (first MiB), 1 MiB
//! (first 16 MiB) or 64 MiB boundary with busy "RAM buffer" resources in
//! whatever of the padding is free (`reserve_region_with_split()`), so that
//! no driver claims stolen RAM the firmware did not list. Linux 6.18 prints
//! `e820: reserve RAM buffer [mem 0x...-0x...]` at debug level for each
//! padding, once the slab allocator is up; kmem prints it at the same point
//! of boot, after `kmem_cache_init()`.
//!
//! Two departures, neither visible in the tree: Linux enters the e820
//! ranges with `insert_resource()`, which differs from `request_resource()`
//! only when the new range encloses resources already there (it adopts
//! them); boot's ranges are disjoint (the map is validated) and go into an
//! empty tree, so kmem requests them. And Linux kzallocs the RAM buffers'
//! nodes late, with `GFP_ATOMIC`; kmem takes them from memblock with the
//! rest, early, so that boot leaves every page it does not keep for
//! metadata free, and fault injection never fails boot.
//!
//! kmem loads no kernel image, so "System RAM" has no "Kernel code",
//! "Kernel data" or "Kernel bss" children; it probes no PCI bus, ACPI
//! tables or option ROMs, so there are no "PCI Bus", "Video ROM", "System
//! ROM", "Local APIC" or "HPET" entries unless a caller requests them; and
//! the firmware map has no persistent-memory type, so no "Persistent
//! Memory" ranges.
//!
//! # Requests and reports
//!
//! [`Kmem::request_mem_region`] follows `__request_region()`: the new
//! busy region goes under the root, or inside the non-busy range that
//! holds it (taking that range's type and descriptor); any busy range in
//! the way, or a non-busy one it only partly fits in, refuses it with
//! [`Error::Busy`]. Linux's `__request_region()` itself is silent and its
//! callers report; kmem prints the report Linux's
//! `devm_request_resource()` (`kernel/resource.c`) prints for a conflict,
//! with the requester's name where Linux has the device's:
//! `NAME: resource collision: [mem 0x...-0x...] conflicts with OTHER [mem
//! 0x...-0x...]` (the ranges in `%pR`'s form, see [`Resource`]'s
//! `Display`). [`Kmem::release_mem_region`] frees a busy region that
//! matches exactly, as `__release_region()` does, and otherwise prints that
//! function's warning, `resource: Trying to free nonexistent resource
//! <0x...-0x...>`, and fails with [`Error::InvalidArgument`].

use crate::gfp::GFP_KERNEL;
use crate::memory_map::{MemRegion, RegionKind};
use crate::platform::{Level, Platform};
use crate::{pfn_phys, report, Error, Kmem, Pfn, Result, PAGE_SHIFT};
use core::fmt;
use core::ops::ControlFlow;
use core::ptr::{addr_of_mut, null_mut, NonNull};

/// The resource type bits of the flags (`IORESOURCE_TYPE_BITS`).
pub const IORESOURCE_TYPE_BITS: u32 = 0x0000_1f00;
/// I/O ports (`IORESOURCE_IO`).
pub const IORESOURCE_IO: u32 = 0x0000_0100;
/// Memory-mapped addresses (`IORESOURCE_MEM`).
pub const IORESOURCE_MEM: u32 = 0x0000_0200;
/// The extended type bits (`IORESOURCE_EXT_TYPE_BITS`), inherited by a
/// request as the type bits are.
pub const IORESOURCE_EXT_TYPE_BITS: u32 = 0x0100_0000;
/// System RAM, a modifier of [`IORESOURCE_MEM`] (`IORESOURCE_SYSRAM`).
pub const IORESOURCE_SYSRAM: u32 = 0x0100_0000;
/// Userland may not map this range (`IORESOURCE_EXCLUSIVE`), set by
/// [`Kmem::request_mem_region_exclusive`].
pub const IORESOURCE_EXCLUSIVE: u32 = 0x0800_0000;
/// The range is claimed (`IORESOURCE_BUSY`): nothing may be requested
/// inside or across it.
pub const IORESOURCE_BUSY: u32 = 0x8000_0000;
/// `IORESOURCE_SYSTEM_RAM`: `IORESOURCE_MEM | IORESOURCE_SYSRAM`.
pub const IORESOURCE_SYSTEM_RAM: u32 = IORESOURCE_MEM | IORESOURCE_SYSRAM;

/// No particular descriptor (`IORES_DESC_NONE`); as a query, any.
pub const IORES_DESC_NONE: u32 = 0;
/// ACPI tables (`IORES_DESC_ACPI_TABLES`).
pub const IORES_DESC_ACPI_TABLES: u32 = 2;
/// ACPI non-volatile storage (`IORES_DESC_ACPI_NV_STORAGE`).
pub const IORES_DESC_ACPI_NV_STORAGE: u32 = 3;
/// A firmware-reserved range (`IORES_DESC_RESERVED`).
pub const IORES_DESC_RESERVED: u32 = 7;

/// The deepest indentation `/proc/iomem` shows (`MAX_IORES_LEVEL`):
/// resources nested deeper print at this depth.
pub const MAX_IORES_LEVEL: usize = 5;

/// What [`Kmem::region_intersects`] found (Linux's `REGION_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionIntersects {
    /// `REGION_INTERSECTS`: the range meets resources of the kind asked
    /// for and no others (holes do not count).
    Intersects = 0,
    /// `REGION_DISJOINT`: the range meets no resource of that kind.
    Disjoint = 1,
    /// `REGION_MIXED`: the range meets that kind and another.
    Mixed = 2,
}

/// A range of the physical address space: Linux's `struct resource`
/// without its tree links.
///
/// `Display` prints it as Linux's `%pR` does: `[mem 0x00100000-0xbfffffff]`
/// (the addresses at least 8 hex digits for memory, 4 for I/O ports, one
/// address when the range is one byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// First address.
    pub start: u64,
    /// Last address (inclusive, as Linux keeps it).
    pub end: u64,
    /// Who owns it ("System RAM", a driver's name...).
    pub name: &'static str,
    /// `IORESOURCE_*` flags.
    pub flags: u32,
    /// `IORES_DESC_*` descriptor.
    pub desc: u32,
}

impl Resource {
    /// `resource_size()`: bytes in the range (0 for the root, whose 2^64
    /// bytes wrap, as in Linux).
    pub const fn size(&self) -> u64 {
        self.end.wrapping_sub(self.start).wrapping_add(1)
    }

    /// `resource_type()`: the type bits of the flags.
    pub const fn resource_type(&self) -> u32 {
        self.flags & IORESOURCE_TYPE_BITS
    }

    /// The range is claimed ([`IORESOURCE_BUSY`]).
    pub const fn is_busy(&self) -> bool {
        self.flags & IORESOURCE_BUSY != 0
    }

    fn holds(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.end
    }

    fn meets(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    fn is_kind(&self, flags: u32, desc: u32) -> bool {
        self.flags & flags == flags && (desc == IORES_DESC_NONE || desc == self.desc)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, w) = match self.resource_type() {
            IORESOURCE_IO => ("io  ", 6),
            IORESOURCE_MEM => ("mem ", 10),
            _ => ("??? ", 10),
        };
        write!(f, "[{kind}{:#0w$x}", self.start)?;
        if self.end != self.start {
            write!(f, "-{:#0w$x}", self.end)?;
        }
        f.write_str("]")
    }
}

/// A node of the tree: a resource and its links (null where there is none).
#[repr(C)]
struct Node {
    res: Resource,
    parent: *mut Node,
    sibling: *mut Node,
    child: *mut Node,
}

impl Node {
    const fn new(res: Resource) -> Self {
        Node {
            res,
            parent: null_mut(),
            sibling: null_mut(),
            child: null_mut(),
        }
    }
}

const NODE_SIZE: usize = core::mem::size_of::<Node>();

#[cfg(target_pointer_width = "64")]
const _: () = assert!(
    core::mem::size_of::<Node>() == 64,
    "struct resource is 64 bytes"
);

/// The tree behind the lock. Invariant: `root` is null (before boot builds
/// the tree) or a live node; every node reachable from it is a live node
/// (memblock memory from boot, or a kmalloc object) that only the tree
/// refers to, its links consistent, its children disjoint, in address
/// order and inside it.
struct Tree {
    root: *mut Node,
}

// SAFETY: the nodes are the machine's memory (memblock or kmalloc), reached
// only through the tree, which the spin lock guards; moving the tree to
// another thread moves that ownership with it.
unsafe impl Send for Tree {}

/// The iomem resource tree of a machine (Linux's `iomem_resource` and
/// `resource_lock`). [`Kmem`] holds one; the operations are `Kmem` methods
/// of this module.
pub struct Iomem {
    tree: spin::Mutex<Tree>,
}

impl Iomem {
    /// An empty tree, without its root until boot allocates it.
    pub(crate) const fn new() -> Self {
        Iomem {
            tree: spin::Mutex::new(Tree { root: null_mut() }),
        }
    }

    /// Boot (`e820__reserve_resources()`, the insertions of
    /// `e820__reserve_resources_late()`): the root and the resources of the
    /// memory map `map`, which boot validated (no overlaps), with nodes
    /// from `alloc` (memblock: `alloc(size)` returns `size` zeroed bytes
    /// aligned to 64): the busy system ranges, then the device windows,
    /// then the "RAM buffer" padding after each RAM range (see the module
    /// docs). Fails only when `alloc` does.
    pub(crate) fn e820_reserve_resources(
        &self,
        map: &[MemRegion],
        mut alloc: impl FnMut(u64) -> Result<NonNull<u8>>,
    ) -> Result<()> {
        let mut node = |res: Resource| -> Result<*mut Node> {
            let p = alloc(NODE_SIZE as u64)?.as_ptr().cast::<Node>();
            // SAFETY: `p` is fresh memory of the node's size, aligned to 64
            // bytes, and ours alone.
            unsafe { p.write(Node::new(res)) };
            Ok(p)
        };
        let mut t = self.tree.lock();
        t.root = node(Resource {
            start: 0,
            end: u64::MAX,
            name: "PCI mem",
            flags: IORESOURCE_MEM,
            desc: IORES_DESC_NONE,
        })?;
        for busy in [true, false] {
            for r in by_address(map).filter(|r| e820_busy(r) == busy) {
                let (flags, desc) = e820_flags_desc(r.kind);
                let n = node(Resource {
                    start: r.base,
                    end: r.end() - 1,
                    name: e820_type_to_string(r.kind),
                    flags: flags | if busy { IORESOURCE_BUSY } else { 0 },
                    desc,
                })?;
                // SAFETY: the lock is held, `t.root` is the tree's root and
                // `n` is fresh. Only an overlapping map could clash (boot
                // validated it); the node would stay out, as Linux leaves
                // a clashing e820 resource.
                let _ = unsafe { link_under(t.root, n) };
            }
        }
        // reserve_region_with_split(): busy "RAM buffer" resources over
        // the parts of each padding that no top-level resource covers.
        for (start, end) in by_address(map).filter_map(ram_buffer) {
            let mut from = start;
            // SAFETY: the lock is held and `t.root` is the tree's root.
            while let Some((s, e)) = unsafe { first_gap(t.root, from, end) } {
                let n = node(Resource {
                    start: s,
                    end: e,
                    name: "RAM buffer",
                    flags: IORESOURCE_MEM | IORESOURCE_BUSY,
                    desc: IORES_DESC_NONE,
                })?;
                // SAFETY: as above; `n` is fresh and fits the gap.
                let clash = unsafe { link_under(t.root, n) };
                debug_assert!(clash.is_none(), "a gap is free");
                if e == end {
                    break;
                }
                from = e + 1;
            }
        }
        Ok(())
    }
}

/// The first of `parent`'s children that ends at or after `start` (null if
/// none), and the link that points at it.
///
/// # Safety
///
/// The tree is locked and `parent` is a node of it.
unsafe fn seek(parent: *mut Node, start: u64) -> (*mut *mut Node, *mut Node) {
    // SAFETY: every node followed is in the locked tree (the contract and
    // the tree invariant), so it is live and nobody else touches it.
    unsafe {
        let mut link = addr_of_mut!((*parent).child);
        while !(*link).is_null() && (**link).res.end < start {
            link = addr_of_mut!((**link).sibling);
        }
        (link, *link)
    }
}

/// `__request_resource()`: link `new` among `parent`'s children if it lies
/// inside `parent` and overlaps none of them; else return what is in the
/// way: `parent` itself, or the first child `new` overlaps.
///
/// # Safety
///
/// The tree is locked, `parent` is a node of it, and `new` is a live node
/// in no tree.
unsafe fn link_under(parent: *mut Node, new: *mut Node) -> Option<*mut Node> {
    // SAFETY: `parent` and the nodes `seek` returns are in the locked tree;
    // `new` is the caller's, in no tree, so writing its links is ours to do.
    unsafe {
        let (start, end) = ((*new).res.start, (*new).res.end);
        if end < start || !(*parent).res.holds(start, end) {
            return Some(parent);
        }
        let (link, next) = seek(parent, start);
        if !next.is_null() && (*next).res.start <= end {
            return Some(next);
        }
        (*new).parent = parent;
        (*new).sibling = next;
        *link = new;
        None
    }
}

/// `__request_region()` under the lock: link `new` as a busy region under
/// `root` or inside the non-busy range that holds it, taking its type and
/// descriptor. Returns the linked resource, or the one in the way.
///
/// # Safety
///
/// As [`link_under`], with `root` the tree's root.
unsafe fn claim(root: *mut Node, new: *mut Node, extra: u32) -> Result<Resource, Resource> {
    // SAFETY: as `link_under`'s contract; every conflict it returns is a
    // node of the locked tree.
    unsafe {
        let mut parent = root;
        loop {
            let (flags, desc) = ((*parent).res.flags, (*parent).res.desc);
            (*new).res.flags = (flags & (IORESOURCE_TYPE_BITS | IORESOURCE_EXT_TYPE_BITS))
                | IORESOURCE_BUSY
                | extra;
            (*new).res.desc = desc;
            match link_under(parent, new) {
                None => return Ok((*new).res),
                Some(c) if c != parent && !(*c).res.is_busy() => parent = c,
                Some(c) => return Err((*c).res),
            }
        }
    }
}

/// `__release_region()`'s search: unlink and return the busy node that is
/// exactly `start..=end`, looking inside the non-busy ranges that hold it;
/// null if there is none.
///
/// # Safety
///
/// The tree is locked and `root` is its root.
unsafe fn take_busy(root: *mut Node, start: u64, end: u64) -> *mut Node {
    // SAFETY: every node followed is in the locked tree; the one unlinked
    // leaves it, and its caller becomes its only owner.
    unsafe {
        let mut link = addr_of_mut!((*root).child);
        loop {
            let c = *link;
            if c.is_null() {
                return null_mut();
            }
            let r = (*c).res;
            if r.holds(start, end) {
                if !r.is_busy() {
                    link = addr_of_mut!((*c).child);
                    continue;
                }
                if r.start != start || r.end != end {
                    return null_mut();
                }
                // Busy ranges are leaves: requests never go inside them.
                debug_assert!((*c).child.is_null());
                *link = (*c).sibling;
                (*c).parent = null_mut();
                (*c).sibling = null_mut();
                return c;
            }
            link = addr_of_mut!((*c).sibling);
        }
    }
}

/// The node after `p` in address (pre-)order among the descendants of
/// `top`, or null after the last.
///
/// # Safety
///
/// The tree is locked and `p` is a descendant of its node `top`.
unsafe fn next_under(top: *mut Node, mut p: *mut Node) -> *mut Node {
    // SAFETY: `p`, its children, siblings and ancestors up to `top` are in
    // the locked tree.
    unsafe {
        if !(*p).child.is_null() {
            return (*p).child;
        }
        while (*p).sibling.is_null() {
            p = (*p).parent;
            if p == top || p.is_null() {
                return null_mut();
            }
        }
        (*p).sibling
    }
}

/// The first free stretch of `from..=end` among `root`'s children, or
/// `None` when they cover the rest of it.
///
/// # Safety
///
/// The tree is locked and `root` is its root.
unsafe fn first_gap(root: *mut Node, from: u64, end: u64) -> Option<(u64, u64)> {
    // SAFETY: the children followed are in the locked tree.
    unsafe {
        let mut at = from;
        let (_, mut c) = seek(root, at);
        while !c.is_null() && (*c).res.start <= end {
            let r = (*c).res;
            if r.start > at {
                return Some((at, r.start - 1));
            }
            if r.end >= end {
                return None;
            }
            at = r.end + 1;
            c = (*c).sibling;
        }
        Some((at, end))
    }
}

/// The last address of `start..start + n`, if `n` is not zero and the
/// range does not wrap.
fn last_of(start: u64, n: u64) -> Option<u64> {
    n.checked_sub(1).and_then(|l| start.checked_add(l))
}

/// `e820_type_to_string()`: the name the resource of an e820 entry gets.
pub const fn e820_type_to_string(kind: RegionKind) -> &'static str {
    match kind {
        RegionKind::Usable => "System RAM",
        RegionKind::Reserved => "Reserved",
        RegionKind::AcpiData => "ACPI Tables",
        RegionKind::AcpiNvs => "ACPI Non-volatile Storage",
        RegionKind::Unusable => "Unusable memory",
    }
}

/// `e820_type_to_iomem_type()` and `e820_type_to_iores_desc()`: the flags
/// and descriptor of an e820 entry's resource, before
/// [`IORESOURCE_BUSY`].
const fn e820_flags_desc(kind: RegionKind) -> (u32, u32) {
    match kind {
        RegionKind::Usable => (IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE),
        RegionKind::Reserved => (IORESOURCE_MEM, IORES_DESC_RESERVED),
        RegionKind::AcpiData => (IORESOURCE_MEM, IORES_DESC_ACPI_TABLES),
        RegionKind::AcpiNvs => (IORESOURCE_MEM, IORES_DESC_ACPI_NV_STORAGE),
        RegionKind::Unusable => (IORESOURCE_MEM, IORES_DESC_NONE),
    }
}

/// `do_mark_busy()`: everything below 1 MiB, and all but reserved ranges
/// above it, are system ranges, busy from the start; reserved ranges above
/// 1 MiB are device windows that drivers claim inside.
const fn e820_busy(r: &MemRegion) -> bool {
    r.base < (1 << 20) || !matches!(r.kind, RegionKind::Reserved)
}

/// `ram_alignment()`: the boundary the end of a RAM range at `pos` is
/// padded to.
const fn ram_alignment(pos: u64) -> u64 {
    match pos >> 20 {
        0 => 64 << 10,
        1..=15 => 1 << 20,
        _ => 64 << 20,
    }
}

/// The "RAM buffer" padding after a RAM range (`e820__reserve_resources_late()`):
/// from its end up to the next [`ram_alignment`] boundary, if any.
fn ram_buffer(r: &MemRegion) -> Option<(u64, u64)> {
    if r.kind != RegionKind::Usable {
        return None;
    }
    let start = r.end();
    let end = start
        .checked_next_multiple_of(ram_alignment(start))
        .map_or(u64::MAX, |e| e - 1);
    (start < end).then_some((start, end))
}

/// The entries of `map` in address order (Linux's e820 table is sorted;
/// kmem's map need not be), without allocating.
fn by_address(map: &[MemRegion]) -> impl Iterator<Item = &MemRegion> {
    let mut last: Option<(u64, usize)> = None;
    core::iter::from_fn(move || {
        let (i, r) = map
            .iter()
            .enumerate()
            .filter(|&(i, r)| last.is_none_or(|l| (r.base, i) > l))
            .min_by_key(|&(i, r)| (r.base, i))?;
        last = Some((r.base, i));
        Some(r)
    })
}

impl<P: Platform> Kmem<P> {
    /// `alloc_resource()`: a zeroed node from kmalloc holding `res`, in no
    /// tree.
    fn alloc_resource(&self, res: Resource) -> Result<*mut Node> {
        let p = self.kzalloc(NODE_SIZE, GFP_KERNEL)?.as_ptr().cast::<Node>();
        // SAFETY: `p` is a fresh kmalloc object of at least the node's size,
        // aligned to kmalloc's 8 bytes or more, and ours alone.
        unsafe { p.write(Node::new(res)) };
        Ok(p)
    }

    /// `free_resource()`: give back a node that is in no tree. Nodes from
    /// kmalloc go back to it; boot's, from memblock, are leaked, as Linux
    /// leaks them (memblock memory cannot be given back a node at a time).
    fn free_resource(&self, n: *mut Node) {
        let from_slab = self
            .virt_to_page(n.cast_const().cast())
            .is_some_and(|pg| self.compound_head(pg).is_slab());
        if from_slab {
            // SAFETY: the node came from kmalloc (its page is a slab's) and
            // is in no tree, so no one else refers to it; it is not used
            // again.
            let r = unsafe { self.kfree(n.cast()) };
            debug_assert!(r.is_ok(), "kfree of a resource node: {r:?}");
        }
    }

    /// The end of boot's part (`e820__reserve_resources_late()`'s report):
    /// print, at debug level, the "RAM buffer" padding of each RAM range,
    /// as Linux prints it once the slab allocator is up. The tree got the
    /// buffers with the rest of the memory map (see the module docs).
    pub(crate) fn report_ram_buffers(&self, map: &[MemRegion]) {
        for (start, end) in by_address(map).filter_map(ram_buffer) {
            report!(
                &self.p,
                Level::Debug,
                "e820: reserve RAM buffer [mem {start:#010x}-{end:#010x}]"
            );
        }
    }

    /// `request_mem_region()`: claim the `n` bytes from `start` for `name`.
    ///
    /// The region becomes a busy resource under the root, or inside the
    /// non-busy range that holds it (a device window such as the PCI
    /// hole's "Reserved"), with that range's type and descriptor. A busy
    /// resource in the way (RAM, ACPI tables, another driver's region), or
    /// a non-busy one the region only partly fits in, refuses it with
    /// [`Error::Busy`] and the report the module docs give. `n == 0` or a
    /// range past the end of the address space is
    /// [`Error::InvalidArgument`]; a failed allocation of the node,
    /// [`Error::NoMemory`]. The node comes from kmalloc with `GFP_KERNEL`,
    /// so the call may sleep, as Linux's.
    ///
    /// ```
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// let r = k.request_mem_region(0xfed0_0000, 0x400, "HPET 0").unwrap();
    /// assert_eq!(r.to_string(), "[mem 0xfed00000-0xfed003ff]");
    /// assert_eq!(
    ///     k.request_mem_region(0xfed0_0000, 0x1000, "HPET 1"),
    ///     Err(kmem::Error::Busy)
    /// );
    /// k.release_mem_region(0xfed0_0000, 0x400).unwrap();
    /// ```
    pub fn request_mem_region(&self, start: u64, n: u64, name: &'static str) -> Result<Resource> {
        self.request_region(start, n, name, 0)
    }

    /// `request_mem_region_exclusive()`: [`request_mem_region`] with
    /// [`IORESOURCE_EXCLUSIVE`] set, for registers userland must not map.
    ///
    /// [`request_mem_region`]: Self::request_mem_region
    pub fn request_mem_region_exclusive(
        &self,
        start: u64,
        n: u64,
        name: &'static str,
    ) -> Result<Resource> {
        self.request_region(start, n, name, IORESOURCE_EXCLUSIVE)
    }

    fn request_region(
        &self,
        start: u64,
        n: u64,
        name: &'static str,
        extra: u32,
    ) -> Result<Resource> {
        let end = last_of(start, n).ok_or(Error::InvalidArgument)?;
        let want = Resource {
            start,
            end,
            name,
            flags: IORESOURCE_MEM | IORESOURCE_BUSY | extra,
            desc: IORES_DESC_NONE,
        };
        let node = self.alloc_resource(want)?;
        let outcome = {
            let t = self.iomem.tree.lock();
            if t.root.is_null() {
                None
            } else {
                // SAFETY: the lock is held, `t.root` is the tree's root and
                // `node` is fresh.
                Some(unsafe { claim(t.root, node, extra) })
            }
        };
        match outcome {
            Some(Ok(r)) => Ok(r),
            Some(Err(c)) => {
                self.free_resource(node);
                report!(
                    &self.p,
                    Level::Err,
                    "{name}: resource collision: {want} conflicts with {} {c}",
                    c.name
                );
                Err(Error::Busy)
            }
            None => {
                self.free_resource(node);
                Err(Error::BadState)
            }
        }
    }

    /// `release_mem_region()`: give back the busy region of exactly `n`
    /// bytes from `start`. When no busy region matches (never requested,
    /// released already, or another size), prints Linux's warning
    /// `resource: Trying to free nonexistent resource <0x...-0x...>` and
    /// fails with [`Error::InvalidArgument`].
    pub fn release_mem_region(&self, start: u64, n: u64) -> Result<()> {
        let end = start.wrapping_add(n).wrapping_sub(1);
        let node = {
            let t = self.iomem.tree.lock();
            if t.root.is_null() {
                null_mut()
            } else {
                // SAFETY: the lock is held and `t.root` is the tree's root.
                unsafe { take_busy(t.root, start, end) }
            }
        };
        if node.is_null() {
            report!(
                &self.p,
                Level::Warning,
                "resource: Trying to free nonexistent resource <{start:#018x}-{end:#018x}>"
            );
            return Err(Error::InvalidArgument);
        }
        self.free_resource(node);
        Ok(())
    }

    /// `region_intersects()`: whether the `size` bytes from `start` meet
    /// resources with all of `flags` (and descriptor `desc`, unless
    /// [`IORES_DESC_NONE`]), others, or both.
    ///
    /// Each top-level resource the range meets counts once: as the kind
    /// asked for if it is one, else as another kind unless resources of
    /// the kind asked for, nested inside it, cover the whole of it that
    /// the range meets (Linux 6.12 on, for RAM inside a CXL window).
    /// Holes count as nothing, so a range over RAM and a hole is
    /// [`RegionIntersects::Intersects`]. `memremap()` uses it with
    /// [`IORESOURCE_SYSTEM_RAM`] to tell RAM from device memory. An empty
    /// or wrapping range is [`RegionIntersects::Disjoint`].
    pub fn region_intersects(
        &self,
        start: u64,
        size: u64,
        flags: u32,
        desc: u32,
    ) -> RegionIntersects {
        let Some(end) = last_of(start, size) else {
            return RegionIntersects::Disjoint;
        };
        let (mut kind, mut other) = (0usize, 0usize);
        let t = self.iomem.tree.lock();
        if t.root.is_null() {
            return RegionIntersects::Disjoint;
        }
        // SAFETY: the lock is held; every node followed is in the tree.
        unsafe {
            let mut p = (*t.root).child;
            while !p.is_null() {
                let r = (*p).res;
                if r.meets(start, end) {
                    if r.is_kind(flags, desc) {
                        kind += 1;
                    } else {
                        // The part of `r` in the range that nested
                        // resources of the kind have not covered yet.
                        let (mut lo, hi) = (r.start.max(start), r.end.min(end));
                        let mut covered = false;
                        let mut d = (*p).child;
                        while !d.is_null() {
                            let dr = (*d).res;
                            if dr.meets(start, end) && dr.is_kind(flags, desc) {
                                kind += 1;
                                if dr.start > lo {
                                    break;
                                }
                                if dr.end >= hi {
                                    covered = true;
                                    break;
                                }
                                lo = lo.max(dr.end + 1);
                            }
                            d = next_under(p, d);
                        }
                        if !covered {
                            other += 1;
                        }
                    }
                }
                p = (*p).sibling;
            }
        }
        match (kind, other) {
            (0, _) => RegionIntersects::Disjoint,
            (_, 0) => RegionIntersects::Intersects,
            _ => RegionIntersects::Mixed,
        }
    }

    /// `find_next_iomem_res()`: the first resource in address order, at
    /// any depth, that meets `start..=end` and has `flags` and `desc`,
    /// clipped to the range.
    fn find_next_iomem_res(&self, start: u64, end: u64, flags: u32, desc: u32) -> Option<Resource> {
        let t = self.iomem.tree.lock();
        if t.root.is_null() {
            return None;
        }
        // SAFETY: the lock is held; every node followed is in the tree.
        unsafe {
            let mut p = (*t.root).child;
            while !p.is_null() {
                let r = (*p).res;
                if r.start > end {
                    return None;
                }
                if r.end >= start && r.is_kind(flags, desc) {
                    return Some(Resource {
                        start: r.start.max(start),
                        end: r.end.min(end),
                        ..r
                    });
                }
                p = next_under(t.root, p);
            }
        }
        None
    }

    /// `walk_iomem_res_desc()`: call `f` with each resource, at any depth,
    /// that meets `start..=end` and has all of `flags` (and descriptor
    /// `desc`, unless [`IORES_DESC_NONE`]), clipped to the range, in
    /// address order, until `f` breaks; returns how many calls were made.
    /// As in Linux, a range of one byte (`start == end`) finds nothing.
    /// `f` runs without the tree's lock held, so it may request and
    /// release regions. `walk_mem_res()` is this walk with
    /// `IORESOURCE_MEM | IORESOURCE_BUSY`.
    pub fn walk_iomem_res_desc(
        &self,
        desc: u32,
        flags: u32,
        start: u64,
        end: u64,
        mut f: impl FnMut(&Resource) -> ControlFlow<()>,
    ) -> usize {
        let (mut at, mut calls) = (start, 0);
        while at < end {
            let Some(r) = self.find_next_iomem_res(at, end, flags, desc) else {
                break;
            };
            calls += 1;
            if f(&r).is_break() {
                break;
            }
            match r.end.checked_add(1) {
                Some(next) => at = next,
                None => break,
            }
        }
        calls
    }

    /// `walk_system_ram_range()`: call `f(pfn, nr_pages)` for each run of
    /// whole pages of busy System RAM among the `nr_pages` from
    /// `start_pfn`, until `f` breaks; returns how many calls were made.
    pub fn walk_system_ram_range(
        &self,
        start_pfn: Pfn,
        nr_pages: u64,
        mut f: impl FnMut(Pfn, u64) -> ControlFlow<()>,
    ) -> usize {
        let start = pfn_phys(start_pfn);
        let end = start_pfn
            .checked_add(nr_pages)
            .and_then(|e| e.checked_mul(1 << PAGE_SHIFT))
            .map_or(u64::MAX, |e| e - 1);
        let mut calls = 0;
        self.walk_iomem_res_desc(
            IORES_DESC_NONE,
            IORESOURCE_SYSTEM_RAM | IORESOURCE_BUSY,
            start,
            end,
            |r| {
                let pfn = r.start.div_ceil(1 << PAGE_SHIFT);
                let end_pfn = r.end.wrapping_add(1) >> PAGE_SHIFT;
                if end_pfn > pfn {
                    calls += 1;
                    return f(pfn, end_pfn - pfn);
                }
                ControlFlow::Continue(())
            },
        );
        calls
    }

    /// `page_is_ram()`: the whole page `pfn` is busy System RAM in the tree.
    pub fn page_is_ram(&self, pfn: Pfn) -> bool {
        self.walk_system_ram_range(pfn, 1, |_, _| ControlFlow::Break(())) > 0
    }

    /// The root, `iomem_resource` ("PCI mem", `0..=u64::MAX`).
    pub fn iomem_resource(&self) -> Resource {
        let t = self.iomem.tree.lock();
        if t.root.is_null() {
            return Resource {
                start: 0,
                end: u64::MAX,
                name: "PCI mem",
                flags: IORESOURCE_MEM,
                desc: IORES_DESC_NONE,
            };
        }
        // SAFETY: the lock is held and the root is live.
        unsafe { (*t.root).res }
    }

    /// Call `f(depth, resource)` for every resource below the root in
    /// address order, parents before their children, depth 0 for the
    /// root's children (the order and depth `/proc/iomem` prints), until
    /// `f` fails. The tree's lock is held throughout: `f` must not call
    /// back into it (request, release, query), or it spins forever.
    pub fn walk_iomem<E>(
        &self,
        mut f: impl FnMut(usize, &Resource) -> core::result::Result<(), E>,
    ) -> core::result::Result<(), E> {
        let t = self.iomem.tree.lock();
        if t.root.is_null() {
            return Ok(());
        }
        // SAFETY: the lock is held; every node followed is in the tree.
        unsafe {
            let (mut p, mut depth) = ((*t.root).child, 0);
            while !p.is_null() {
                f(depth, &(*p).res)?;
                if !(*p).child.is_null() {
                    p = (*p).child;
                    depth += 1;
                    continue;
                }
                while (*p).sibling.is_null() && (*p).parent != t.root {
                    p = (*p).parent;
                    depth -= 1;
                }
                p = (*p).sibling;
            }
        }
        Ok(())
    }
}
