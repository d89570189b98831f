//! The kernel's page tables: 4-level x86_64 paging at Linux's addresses
//! (`Documentation/arch/x86/x86_64/mm.rst`).
//!
//! | range | what | pages |
//! |---|---|---|
//! | `0 .. max(4 GiB, end of RAM)` | identity map (the UEFI image runs where the firmware loaded it; the AP trampoline) | 2 MiB; UC where no RAM is |
//! | `0xffff888000000000 ..` (`PAGE_OFFSET`) | the direct map of every RAM range | 2 MiB, NX |
//! | `0xffffc90000000000 ..` (`VMALLOC_START`) | the vmalloc/ioremap space kmem maps into | 4 KiB |
//!
//! Linux's vmalloc space is 32 TiB and its page tables are allocated from
//! the page allocator as mappings need them. Here the platform sits
//! *below* the allocator (kmem calls it to map while holding its own
//! locks), so the page tables of a [`VMALLOC_SIZE`] window are allocated
//! once, before kmem boots, and mapping never allocates: 2 MiB of PTE
//! pages per GiB of window. Every CPU shares these tables; the kernel
//! half never changes above the PTE level after boot.
//!
//! The PAT is programmed as Linux's ([`crate::arch::LINUX_PAT`]), so a
//! PTE's PWT/PCD bits select WC, UC- and UC as `pgprot_writecombine()`,
//! `PAGE_KERNEL_NOCACHE` and `_PAGE_CACHE_MODE_UC` do.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use kmem::platform::PgProt;

/// `PAGE_OFFSET` with 4-level paging and no KASLR.
pub const PAGE_OFFSET: usize = 0xffff_8880_0000_0000;
/// `VMALLOC_START` with 4-level paging and no KASLR.
pub const VMALLOC_START: usize = 0xffff_c900_0000_0000;
/// The part of Linux's vmalloc space this kernel has page tables for.
pub const VMALLOC_SIZE: usize = 1 << 30;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
/// Accessed and dirty, set up front as `PAGE_KERNEL` has them (the CPU
/// need not write the entry back on first use).
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Physical address of the root (`init_top_pgt`).
static PML4: AtomicU64 = AtomicU64::new(0);
/// Physical address of the first of the vmalloc window's PTE pages; the
/// window's PTE pages are contiguous, one per 2 MiB.
static VMALLOC_PTES: AtomicU64 = AtomicU64::new(0);

/// Pages for page tables, given by the firmware below 4 GiB (the AP
/// trampoline loads `CR3` in 32-bit mode) and identity-mapped.
pub struct Pool {
    next: u64,
    end: u64,
}

impl Pool {
    /// A pool of the `pages` pages at physical `base`.
    pub fn new(base: u64, pages: u64) -> Self {
        Pool {
            next: base,
            end: base + pages * 4096,
        }
    }

    /// Pages a machine whose RAM ends at `end` needs.
    pub fn pages_needed(end: u64) -> u64 {
        let gib = end.max(4 << 30).div_ceil(1 << 30);
        // Root, two PDPTs and a PD per GiB for the identity and direct
        // maps, the vmalloc PDPT and PD, and the window's PTE pages.
        1 + 2 + 2 * gib + 2 + (VMALLOC_SIZE >> 21) as u64
    }

    fn page(&mut self) -> u64 {
        assert!(self.next < self.end, "page-table pool exhausted");
        let pa = self.next;
        self.next += 4096;
        // SAFETY: a pool page, identity-mapped, owned by the page tables.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, 4096) };
        pa
    }
}

/// The 512 entries of the table at physical `pa` (identity-mapped).
fn table(pa: u64) -> &'static [AtomicU64; 512] {
    // SAFETY: `pa` is a page-table page of the pool, identity-mapped and
    // only ever accessed as atomics.
    unsafe { &*(pa as *const [AtomicU64; 512]) }
}

/// The table an entry points to, made if absent.
fn next_level(pool: &mut Pool, e: &AtomicU64) -> u64 {
    let v = e.load(Relaxed);
    if v & P != 0 {
        return v & ADDR;
    }
    let pa = pool.page();
    e.store(pa | P | RW, Relaxed);
    pa
}

/// Map `[va, va + size)` to `[pa, ..)` with 2 MiB pages (both aligned).
fn map_2m(pool: &mut Pool, pml4: u64, va: usize, pa: u64, size: u64, flags: u64) {
    let mut off = 0;
    while off < size {
        let v = va + off as usize;
        let pdpt = next_level(pool, &table(pml4)[(v >> 39) & 511]);
        let pd = next_level(pool, &table(pdpt)[(v >> 30) & 511]);
        table(pd)[(v >> 21) & 511].store((pa + off) | P | RW | A | D | PS | flags, Relaxed);
        off += 2 << 20;
    }
}

/// Build the page tables. `ram` says whether a 2 MiB-aligned physical
/// range holds RAM (of any firmware type) and `end` is where RAM ends.
/// Returns the root's physical address.
pub fn build(pool: &mut Pool, end: u64, ram: impl Fn(u64) -> bool) -> u64 {
    let pml4 = pool.page();
    let top = end.max(4 << 30).next_multiple_of(2 << 20);
    let mut pa = 0;
    while pa < top {
        let is_ram = ram(pa);
        // Identity: write-back where RAM is, uncached over device memory.
        map_2m(
            pool,
            pml4,
            pa as usize,
            pa,
            2 << 20,
            if is_ram { 0 } else { PCD | PWT },
        );
        if is_ram {
            map_2m(pool, pml4, PAGE_OFFSET + pa as usize, pa, 2 << 20, NX | G);
        }
        pa += 2 << 20;
    }
    // The vmalloc window: a PD whose entries name contiguous PTE pages.
    let pdpt = next_level(pool, &table(pml4)[(VMALLOC_START >> 39) & 511]);
    let pd = next_level(pool, &table(pdpt)[(VMALLOC_START >> 30) & 511]);
    let n = VMALLOC_SIZE >> 21;
    let first = pool.page();
    for i in 1..n {
        let pte = pool.page();
        assert_eq!(pte, first + i as u64 * 4096, "PTE pages not contiguous");
    }
    for i in 0..n {
        table(pd)[((VMALLOC_START >> 21) + i) & 511]
            .store((first + i as u64 * 4096) | P | RW, Relaxed);
    }
    VMALLOC_PTES.store(first, Relaxed);
    PML4.store(pml4, Relaxed);
    pml4
}

/// The root, for `CR3` (the APs load it in the trampoline).
pub fn root() -> u64 {
    PML4.load(Relaxed)
}

/// The PTE for the vmalloc-window address `va`.
fn pte(va: usize) -> &'static AtomicU64 {
    let off = va - VMALLOC_START;
    let pt = VMALLOC_PTES.load(Relaxed) + (off >> 21) as u64 * 4096;
    &table(pt)[(off >> 12) & 511]
}

fn prot_bits(prot: PgProt) -> u64 {
    match prot {
        PgProt::Kernel => RW,
        PgProt::KernelRo => 0,
        PgProt::WriteCombine => RW | PWT,
        PgProt::UncachedMinus => RW | PCD,
        PgProt::Uncached => RW | PCD | PWT,
    }
}

/// Whether `[va, va + size)` lies in the window.
pub fn in_window(va: usize, size: usize) -> bool {
    va >= VMALLOC_START && size <= VMALLOC_SIZE && va - VMALLOC_START <= VMALLOC_SIZE - size
}

/// Map 4 KiB pages. Refuses (mapping nothing) a range outside the window
/// or one that maps something already.
pub fn map(va: usize, pa: u64, size: usize, prot: PgProt) -> Result<(), kmem::Error> {
    if !in_window(va, size) {
        return Err(kmem::Error::InvalidArgument);
    }
    let n = size >> 12;
    if (0..n).any(|i| pte(va + (i << 12)).load(Relaxed) & P != 0) {
        return Err(kmem::Error::Busy);
    }
    let bits = P | A | D | G | NX | prot_bits(prot);
    for i in 0..n {
        pte(va + (i << 12)).store((pa + ((i as u64) << 12)) | bits, Relaxed);
    }
    Ok(())
}

/// Clear the PTEs of `[va, va + size)` and this CPU's TLB entries for them.
pub fn unmap(va: usize, size: usize) {
    if !in_window(va, size) {
        return;
    }
    for i in 0..size >> 12 {
        pte(va + (i << 12)).store(0, Relaxed);
        crate::arch::invlpg(va + (i << 12));
    }
}

/// Drop this CPU's translations of `[start, end)`: `invlpg` page by page
/// up to 64 pages, else the whole TLB (Linux's `tlb_single_page_flush_ceiling`
/// is 33).
pub fn flush_local(start: usize, end: usize) {
    let pages = (end - start) >> 12;
    if pages <= 64 {
        for i in 0..pages {
            crate::arch::invlpg(start + (i << 12));
        }
    } else {
        // Global entries survive a CR3 reload: toggle CR4.PGE, as Linux's
        // `__flush_tlb_global()` does.
        // SAFETY: clearing and setting PGE flushes the TLB; nothing else
        // changes.
        unsafe {
            core::arch::asm!(
                "mov {t}, cr4",
                "xor {t}, 0x80",
                "mov cr4, {t}",
                "xor {t}, 0x80",
                "mov cr4, {t}",
                t = out(reg) _,
                options(nostack)
            )
        };
    }
}

/// The physical address `va` maps to in the vmalloc window, if mapped
/// (for the page-fault oops's page-table walk).
pub fn lookup(va: usize) -> Option<u64> {
    in_window(va & !0xfff, 4096).then(|| pte(va & !0xfff).load(Relaxed))
}
