//! kmem-kernel: a bare-metal x86_64 kernel that boots kmem's core on the
//! machine QEMU (or real hardware) gives it and tests it there.
//!
//! A UEFI application: the firmware loads it, it reads the CPUs from ACPI
//! and the memory map from the firmware, leaves boot services, builds its
//! own page tables and descriptor tables, and boots kmem on the memory
//! map (memblock, `struct page`, zones, buddy, slab, kmalloc, vmalloc,
//! per-CPU areas). Then it maps the local APIC with `ioremap_uc()`, starts
//! the timer, brings up the other CPUs, runs its KUnit-style suite
//! ([`ktest`]) and prints `/proc` files, and tells QEMU to exit with the
//! result. `docs/kernel.md` walks through it for kernel writers.
//!
//! Boot sequence (each step's Linux counterpart in its module):
//! 1. [`efi_main`]: console, switch to the kernel's own stack
//!    ([`BOOT_STACK`]: the firmware's is boot-services memory, which kmem
//!    will be given).
//! 2. [`boot`]: ACPI MADT ([`acpi`]); page-table pool and the AP trampoline
//!    page from the firmware; `ExitBootServices`.
//! 3. Page tables ([`paging`]), PAT, GDT and IDT ([`idt`]), this CPU's
//!    record ([`smp::setup_cpu`]), the TSC ([`time`]).
//! 4. `Kmem::boot` on [`platform::BarePlatform`]; the kernel installs the
//!    machine in [`KMEM`] (the facade: [`kmem()`]).
//! 5. APIC, timer, `sti`; the other CPUs ([`smp::smp_init`]).
//! 6. On a vmalloc'd stack ([`run_suite`]): the tests, `/proc`, exit.

#![no_std]
#![no_main]

extern crate alloc;

mod acpi;
mod apic;
mod arch;
mod idt;
mod ktest;
mod paging;
mod pci;
mod platform;
mod serial;
mod smp;
mod time;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use kmem::alloc::{Allocator, Kmalloc, NumaNode};
use kmem::gfp::{GFP_ATOMIC, GFP_KERNEL};
use kmem::memory_map::{MemRegion, RegionKind};
use kmem::platform::Platform;
use kmem::{BootParams, Kmem};
use platform::BarePlatform;
use uefi::boot::{AllocateType, MemoryType};
use uefi::mem::memory_map::MemoryMap;
use uefi::Status;

/// QEMU exit value for success (QEMU exits with `(v << 1) | 1` = 33).
pub const EXIT_SUCCESS: u8 = 0x10;
/// QEMU exit value for failure (exit status 35).
pub const EXIT_FAILURE: u8 = 0x11;

/// The machine: one kmem instance, installed once at boot.
pub static KMEM: spin::Once<Kmem<BarePlatform>> = spin::Once::new();

/// The booted machine (panics before boot).
pub fn kmem() -> &'static Kmem<BarePlatform> {
    KMEM.get().expect("kmem used before boot")
}

/// The boot CPU's stack (1 MiB): in the kernel image, which the memory
/// map given to kmem keeps reserved.
#[repr(C, align(16))]
struct Stack(core::cell::UnsafeCell<[u8; 1 << 20]>);
// SAFETY: only the boot CPU uses it, as its stack.
unsafe impl Sync for Stack {}
static BOOT_STACK: Stack = Stack(core::cell::UnsafeCell::new([0; 1 << 20]));

/// `#[global_allocator]`: `alloc::boxed::Box` and `alloc::vec::Vec` over
/// kmalloc (`GFP_ATOMIC` in atomic context, else `GFP_KERNEL`), through
/// kmem's own `Kmalloc` allocator, which honours any alignment.
struct KernelHeap;

fn heap_gfp(k: &Kmem<BarePlatform>) -> kmem::Gfp {
    if k.platform().in_atomic() {
        GFP_ATOMIC
    } else {
        GFP_KERNEL
    }
}

// SAFETY: blocks come from `Kmalloc`, whose `Allocator` contract gives at
// least the layout's size and alignment, valid until freed through it.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(k) = KMEM.get() else {
            return core::ptr::null_mut();
        };
        Kmalloc::new(k)
            .alloc(layout, heap_gfp(k), NumaNode::NO_NODE)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr() as *mut u8)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let (Some(k), Some(p)) = (KMEM.get(), NonNull::new(ptr)) {
            // SAFETY: `ptr` came from `alloc` with `layout` (GlobalAlloc's
            // contract).
            unsafe { Kmalloc::new(k).free(p, layout) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (Some(k), Some(p)) = (KMEM.get(), NonNull::new(ptr)) else {
            return core::ptr::null_mut();
        };
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: `ptr` is a live block of `layout` (GlobalAlloc's contract).
        unsafe { Kmalloc::new(k).realloc(Some(p), new, layout, heap_gfp(k), NumaNode::NO_NODE) }
            .map_or(core::ptr::null_mut(), |p| p.as_ptr() as *mut u8)
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    pr_info!("Kernel panic - not syncing: {info}");
    arch::qemu_exit(EXIT_FAILURE)
}

/// The firmware's entry: console, then the rest of boot on our own stack.
#[uefi::entry]
fn efi_main() -> Status {
    serial::init();
    println!("kmem-kernel: started by UEFI");
    let top = BOOT_STACK.0.get() as usize + (1 << 20);
    // SAFETY: the stack is ours and unused; `boot` never returns.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "call {boot}",
            top = in(reg) top,
            boot = sym boot,
            options(noreturn)
        )
    }
}

/// The UEFI memory types that are RAM of some kind (mapped in the
/// direct map, write-back).
fn is_ram(ty: MemoryType) -> bool {
    matches!(
        ty,
        MemoryType::CONVENTIONAL
            | MemoryType::LOADER_CODE
            | MemoryType::LOADER_DATA
            | MemoryType::BOOT_SERVICES_CODE
            | MemoryType::BOOT_SERVICES_DATA
            | MemoryType::RUNTIME_SERVICES_CODE
            | MemoryType::RUNTIME_SERVICES_DATA
            | MemoryType::ACPI_RECLAIM
            | MemoryType::ACPI_NON_VOLATILE
    )
}

/// What kmem makes of a UEFI memory type (Linux's `do_add_efi_memmap()`):
/// boot services memory is usable once they have exited. Unlike Linux,
/// which counts the loader's memory as RAM and reserves its own image
/// itself, this kernel keeps the loader's memory (its image, stacks, page
/// tables and the final map) out of kmem's hands: reserved.
fn region_kind(ty: MemoryType) -> RegionKind {
    match ty {
        MemoryType::CONVENTIONAL
        | MemoryType::BOOT_SERVICES_CODE
        | MemoryType::BOOT_SERVICES_DATA => RegionKind::Usable,
        MemoryType::ACPI_RECLAIM => RegionKind::AcpiData,
        MemoryType::ACPI_NON_VOLATILE => RegionKind::AcpiNvs,
        MemoryType::UNUSABLE => RegionKind::Unusable,
        _ => RegionKind::Reserved,
    }
}

/// Most memory map entries kept (after merging neighbours of one kind).
const MAX_REGIONS: usize = 128;

/// The rest of boot (see the crate docs).
extern "sysv64" fn boot() -> ! {
    // 2. What the firmware knows: ACPI, the memory map.
    let rsdp = uefi::system::with_config_table(|t| {
        t.iter()
            .find(|e| e.guid == uefi::table::cfg::ACPI2_GUID)
            .or_else(|| t.iter().find(|e| e.guid == uefi::table::cfg::ACPI_GUID))
            .map(|e| e.address as u64)
    });
    let Some(rsdp) = rsdp else {
        println!("kmem-kernel: the firmware gives no ACPI tables: cannot find the CPUs");
        arch::qemu_exit(EXIT_FAILURE);
    };
    // SAFETY: the RSDP of the firmware's configuration table, its tables
    // identity-mapped while boot services run.
    let madt = match unsafe { acpi::parse(rsdp) } {
        Ok(m) => m,
        Err(e) => {
            println!("{e}");
            arch::qemu_exit(EXIT_FAILURE);
        }
    };
    let ram_end = match uefi::boot::memory_map(MemoryType::LOADER_DATA) {
        Ok(m) => m
            .entries()
            .filter(|d| is_ram(d.ty))
            .map(|d| d.phys_start + d.page_count * 4096)
            .max()
            .unwrap_or(0),
        Err(e) => {
            println!("kmem-kernel: GetMemoryMap failed: {e:?}");
            arch::qemu_exit(EXIT_FAILURE);
        }
    };
    let pool_pages = paging::Pool::pages_needed(ram_end);
    let pool = uefi::boot::allocate_pages(
        AllocateType::MaxAddress(0xffff_ffff),
        MemoryType::LOADER_DATA,
        pool_pages as usize,
    );
    let tramp = uefi::boot::allocate_pages(
        AllocateType::MaxAddress(0x9_ffff),
        MemoryType::LOADER_DATA,
        1,
    );
    let (Ok(pool), Ok(tramp)) = (pool, tramp) else {
        println!("kmem-kernel: the firmware has no room for the page tables or the AP trampoline");
        arch::qemu_exit(EXIT_FAILURE);
    };
    let tramp = tramp.as_ptr() as u64;
    // SAFETY: nothing of boot services is used after this.
    let mmap = unsafe { uefi::boot::exit_boot_services(None) };
    // Interrupts stay off until this kernel's IDT and APIC are ready, and
    // the legacy 8259 PICs are masked for good (the APIC delivers).
    let _ = arch::local_irq_save();
    // SAFETY: the 8259s' interrupt mask registers; nothing else uses them.
    unsafe {
        arch::outb(0x21, 0xff);
        arch::outb(0xa1, 0xff);
    }
    // The tables built below are 4-level; firmware running 5-level paging
    // would have to be left first, which this kernel does not do.
    if arch::read_cr4() & arch::X86_CR4_LA57 != 0 {
        println!("kmem-kernel: the firmware runs 5-level paging (CR4.LA57); this kernel builds 4-level page tables only");
        arch::qemu_exit(EXIT_FAILURE);
    }

    // 3. Our own page tables and descriptor tables.
    let mut regions = [MemRegion::reserved(0, 1); MAX_REGIONS];
    let mut nr = 0;
    let mut ram_ranges = [(0u64, 0u64); MAX_REGIONS];
    let mut nr_ram = 0;
    let mut descs: [(u64, u64, MemoryType); MAX_REGIONS * 2] =
        [(0, 0, MemoryType::RESERVED); MAX_REGIONS * 2];
    let mut nd = 0;
    for d in mmap.entries() {
        if nd < descs.len() && d.page_count != 0 {
            descs[nd] = (d.phys_start, d.page_count * 4096, d.ty);
            nd += 1;
        }
    }
    descs[..nd].sort_unstable_by_key(|d| d.0);
    for &(base, size, ty) in &descs[..nd] {
        if is_ram(ty) {
            if nr_ram > 0 && ram_ranges[nr_ram - 1].1 == base {
                ram_ranges[nr_ram - 1].1 += size;
            } else if nr_ram < MAX_REGIONS {
                ram_ranges[nr_ram] = (base, base + size);
                nr_ram += 1;
            }
        }
        let kind = region_kind(ty);
        if nr > 0 && regions[nr - 1].kind == kind && regions[nr - 1].end() == base {
            regions[nr - 1].size += size;
        } else if nr < MAX_REGIONS {
            regions[nr] = MemRegion {
                base,
                size,
                kind,
                node: 0,
            };
            nr += 1;
        }
    }
    let ram = &ram_ranges[..nr_ram];
    let mut pool = paging::Pool::new(pool.as_ptr() as u64, pool_pages);
    let pml4 = paging::build(&mut pool, ram_end, |pa| {
        ram.iter().any(|&(s, e)| s < pa + (2 << 20) && pa < e)
    });
    // SAFETY: the new tables map the image (identity), its stack and the
    // firmware's memory as before; the PAT keeps WB at index 0, so memory
    // mapped write-back stays so.
    unsafe {
        arch::wrmsr(arch::MSR_PAT, arch::LINUX_PAT);
        arch::wrmsr(arch::MSR_EFER, arch::rdmsr(arch::MSR_EFER) | arch::EFER_NXE);
        arch::write_cr3(pml4);
    }
    idt::init();
    idt::load(0);
    apic::set_base(madt.lapic_phys as usize);
    let stack = BOOT_STACK.0.get() as usize;
    smp::number_cpu(0, apic::id(), stack..stack + (1 << 20));
    // SAFETY: first use of %fs, on the boot CPU before any other runs.
    unsafe { smp::setup_cpu(0) };
    let khz = time::calibrate();
    serial::clock_ready();
    pr_info!(
        "tsc: Detected {}.{:03} MHz processor",
        khz / 1000,
        khz % 1000
    );
    smp::set_nr_possible(madt.nr);
    if madt.ignored > 0 {
        pr_info!(
            "smp: {} CPUs ignored (beyond NR_CPUS={}, or an APIC id xAPIC cannot address)",
            madt.ignored,
            acpi::NR_CPUS
        );
    }

    // 4. kmem.
    let params = BootParams::default();
    match Kmem::boot(BarePlatform::new(ram_end), &regions[..nr], &params) {
        Ok(k) => {
            KMEM.call_once(|| k);
        }
        Err(e) => {
            pr_info!("kmem-kernel: kmem failed to boot: {e:?}");
            arch::qemu_exit(EXIT_FAILURE);
        }
    }
    let k = kmem();
    smp::init_cpu_number(k);

    // 5. Interrupts and the other CPUs. The APIC moves to an
    // `ioremap_uc()` mapping, as Linux maps it uncached.
    let _lapic_res = k.request_mem_region(madt.lapic_phys, 4096, "Local APIC");
    match k.ioremap_uc(madt.lapic_phys, 4096) {
        Ok(va) => apic::set_base(va.as_ptr() as usize),
        Err(e) => pr_info!(
            "kmem-kernel: ioremap of the local APIC failed ({e:?}); using the identity map"
        ),
    }
    smp::start_interrupts();
    platform::SCHEDULING.store(true, core::sync::atomic::Ordering::Relaxed);
    smp::smp_init(&madt, tramp);

    // 6. The suite, /proc, exit, on a vmalloc'd stack like the other
    // CPUs' (a guard page below it: an overflow is reported, not a
    // silent overwrite of the image).
    let lo = match k.vmalloc(smp::THREAD_SIZE) {
        Ok(p) => p.as_ptr() as usize,
        Err(e) => {
            pr_info!("kmem-kernel: no stack for the suite: {e:?}");
            arch::qemu_exit(EXIT_FAILURE);
        }
    };
    smp::set_stack(0, lo..lo + smp::THREAD_SIZE);
    // SAFETY: the new stack is ours, mapped and unused; `run_suite` never
    // returns, so nothing on the old stack is needed again.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "call {run}",
            top = in(reg) lo + smp::THREAD_SIZE,
            run = sym run_suite,
            options(noreturn)
        )
    }
}

/// The suite, `/proc`, and the exit (boot's last step, on its new stack).
extern "sysv64" fn run_suite() -> ! {
    let failed = ktest::run();
    ktest::print_proc();
    arch::qemu_exit(if failed == 0 {
        EXIT_SUCCESS
    } else {
        EXIT_FAILURE
    })
}
