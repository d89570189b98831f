//! vmalloc on a simulated machine: real mappings over the memfd, lazy
//! freeing and purges, `/proc/vmallocinfo`, and every bad-input case the
//! vmalloc issue names, each with Linux's wording, an error value and
//! nothing leaked.

use kmem::gfp::*;
use kmem::ioremap::IoMem;
use kmem::platform::PgProt;
use kmem::{BootParams, Error, Kmem, Platform, PAGE_SIZE};
use kmem_sim::{echo, pc_memory_map, DeviceConfig, SimConfig, SimPlatform, VmallocOopsGuard};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const MB: u64 = 1 << 20;

fn sim(cpus: usize, mem: u64) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(mem))).expect("machine")
}

fn boot(s: &SimPlatform) -> Kmem<&SimPlatform> {
    let _cpu = s.bind(0);
    Kmem::boot(s, s.memory_map(), &BootParams::default()).expect("boot")
}

fn vmallocinfo(k: &Kmem<&SimPlatform>) -> String {
    let mut s = String::new();
    kmem::proc::vmallocinfo(k, &mut s).unwrap();
    s
}

#[test]
fn vmalloc_is_virtually_contiguous_over_the_pages_it_maps() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    // Fragment the page allocator so the pages are scattered: take every
    // free page, give every other one back, so no free block is larger
    // than a page and vmalloc's attempts at larger blocks all fail.
    let mut hold = Vec::new();
    while let Ok(p) = k.alloc_page(GFP_ATOMIC | __GFP_MEMALLOC | __GFP_NOWARN) {
        hold.push(p);
    }
    hold.sort_by_key(|p| k.page_to_pfn(p));
    for p in hold.iter().step_by(2) {
        k.__free_pages(p, 0).unwrap();
    }
    let size = 40 * PAGE_SIZE;
    let a = k.vmalloc(size).unwrap();
    assert!(k.is_vmalloc_addr(a.as_ptr()));
    // SAFETY: `size` bytes mapped read/write.
    let buf = unsafe { std::slice::from_raw_parts_mut(a.as_ptr(), size) };
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    let mut pfns = Vec::new();
    for pg in 0..40 {
        // SAFETY: the access is inside a live mapping or allocation of this machine.
        let va = unsafe { a.as_ptr().add(pg * PAGE_SIZE) };
        let page = k.vmalloc_to_page(va).expect("a mapped page");
        pfns.push(k.vmalloc_to_pfn(va).unwrap());
        let direct = k.page_address(page).unwrap();
        // SAFETY: the page's direct-map alias, one page long.
        let d = unsafe { std::slice::from_raw_parts(direct.as_ptr(), PAGE_SIZE) };
        assert_eq!(d, &buf[pg * PAGE_SIZE..(pg + 1) * PAGE_SIZE], "page {pg}");
    }
    pfns.sort();
    assert!(
        pfns.windows(2).all(|w| w[1] != w[0] + 1),
        "pages are scattered: {pfns:x?}"
    );
    let vm = k.find_vm_area(a.as_ptr()).unwrap();
    assert_eq!(vm.size(), size + PAGE_SIZE, "one guard page");
    assert_eq!(vm.nr_pages(), 40);
    let info = vmallocinfo(&k);
    let line = info
        .lines()
        .find(|l| l.contains("kmem-sim/tests/vmalloc.rs"))
        .expect(&info);
    assert!(
        line.contains(&format!(
            "0x{:016x}-0x{:016x}  167936 ",
            a.as_ptr() as usize,
            a.as_ptr() as usize + size + PAGE_SIZE
        )),
        "{line}"
    );
    assert!(line.ends_with(" pages=40 vmalloc N0=40"), "{line}");
    let used = k.vmalloc_info().used_pages;
    assert_eq!(used, 40);
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(a.as_ptr()) }.unwrap();
    assert_eq!(k.vmalloc_info().used_pages, 0);
    assert!(vmallocinfo(&k).contains("unpurged vm_area"));
    assert_eq!(k.vmap_lazy_nr(), 41);
    let ev = k.purge_vmap_area_lazy();
    assert_eq!(ev.num_purged, 1);
    assert_eq!(k.vmap_lazy_nr(), 0);
    assert!(!vmallocinfo(&k).contains("unpurged"));
    // The failed attempts at larger blocks warned of nothing.
    assert!(
        s.reports()
            .iter()
            .all(|(_, m)| !m.contains("WARNING") && !m.contains("page allocation failure")),
        "{:?}",
        s.reports()
    );
}

/// An area of base pages first takes the largest blocks the buddy lists
/// have (split into base pages), so 40 pages are a block of 32 and one of
/// 8: at most two physically contiguous runs, mapped in frame order. Each
/// page is a base page of its own, and vfree gives every one back.
#[test]
fn vmalloc_takes_large_blocks_first_when_the_buddy_lists_have_them() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let pages = 40;
    // The first vmalloc makes the slabs of its own structures.
    let warm = k.vmalloc(pages * PAGE_SIZE).unwrap();
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(warm.as_ptr()) }.unwrap();
    k.purge_vmap_area_lazy();
    k.drain_local_pages();
    let free = k.nr_free_pages();
    // Scattered pages on the CPU's list, which base-page allocations
    // would take first.
    let hold: Vec<_> = (0..64).map(|_| k.alloc_page(GFP_KERNEL).unwrap()).collect();
    for p in hold.iter().step_by(2) {
        k.__free_pages(p, 0).unwrap();
    }
    let a = k.vmalloc(pages * PAGE_SIZE).unwrap();
    let pfns: Vec<u64> = (0..pages)
        .map(|i| {
            // SAFETY: inside the live area just vmalloc'ed.
            let va = unsafe { a.as_ptr().add(i * PAGE_SIZE) };
            k.vmalloc_to_pfn(va).unwrap()
        })
        .collect();
    let mut sorted = pfns.clone();
    sorted.sort();
    assert_eq!(pfns, sorted, "mapped in frame order");
    let runs = 1 + pfns.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert!(runs <= 2, "a block of 32 pages and one of 8: {pfns:x?}");
    for &pfn in &pfns {
        let page = k.pfn_to_page(pfn).unwrap();
        assert_eq!(page.refcount(), 1, "pfn {pfn:#x} is a base page of its own");
    }
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(a.as_ptr()) }.unwrap();
    k.purge_vmap_area_lazy();
    for p in hold.iter().skip(1).step_by(2) {
        k.__free_pages(p, 0).unwrap();
    }
    k.drain_local_pages();
    assert_eq!(k.nr_free_pages(), free, "every page given back");

    // A caller's __GFP_COMP does not reach the blocks: they are split into
    // base pages, without a "BUG: split_page" report.
    let c = k
        .__vmalloc_node(16 * PAGE_SIZE, 1, GFP_KERNEL | __GFP_COMP, -1)
        .unwrap();
    for i in 0..16 {
        // SAFETY: inside the live area just vmalloc'ed.
        let va = unsafe { c.as_ptr().add(i * PAGE_SIZE) };
        assert_eq!(k.vmalloc_to_page(va).unwrap().refcount(), 1);
    }
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(c.as_ptr()) }.unwrap();
    assert!(
        s.reports().iter().all(|(_, m)| !m.contains("BUG")),
        "{:?}",
        s.reports()
    );
}

fn warned(s: &SimPlatform, needle: &str) -> bool {
    s.reports().iter().any(|(_, m)| m.contains(needle))
}

#[test]
fn vfree_of_a_bad_address_is_refused_in_linux_words() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let a = k.vmalloc(3 * PAGE_SIZE).unwrap();
    // Not the start of an area.
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    let inner = unsafe { a.as_ptr().add(PAGE_SIZE) };
    // SAFETY: a bad address on purpose: the call refuses it before touching any memory.
    assert_eq!(unsafe { k.vfree(inner) }, Err(Error::BadAddress));
    assert!(warned(&s, "Trying to vfree() nonexistent vm area"));
    // Not page aligned.
    s.clear_reports();
    assert_eq!(
        // SAFETY: a bad address on purpose: the call refuses it before touching any memory.
        unsafe { k.vfree(a.as_ptr().add(8)) },
        Err(Error::BadAddress)
    );
    assert!(warned(&s, "Trying to vfree() bad address"));
    // Not vmalloc memory at all.
    s.clear_reports();
    let km = k.kmalloc(64, GFP_KERNEL).unwrap();
    // SAFETY: a bad address on purpose: the call refuses it before touching any memory.
    assert_eq!(unsafe { k.vfree(km.as_ptr()) }, Err(Error::BadAddress));
    assert!(warned(&s, "Trying to vfree() "));
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.kfree(km.as_ptr()) }.unwrap();
    // The area survived all of that; a double free is caught.
    assert_eq!(k.vmalloc_info().used_pages, 3);
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(a.as_ptr()) }.unwrap();
    s.clear_reports();
    // SAFETY: a bad address on purpose: the call refuses it before touching any memory.
    assert_eq!(unsafe { k.vfree(a.as_ptr()) }, Err(Error::BadAddress));
    assert!(warned(&s, "Trying to vfree() nonexistent vm area"));
    assert_eq!(k.vmalloc_info().used_pages, 0);
    // vfree(NULL) does nothing.
    // SAFETY: the address came from this machine and nothing uses it after this call.
    assert_eq!(unsafe { k.vfree(std::ptr::null_mut()) }, Ok(()));
}

#[test]
fn vmalloc_of_zero_or_absurd_sizes_fails_with_a_report() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    assert_eq!(k.vmalloc(0), Err(Error::InvalidArgument));
    assert!(warned(&s, "__vmalloc_node_range_noprof: vmalloc(0)"));
    s.clear_reports();
    assert_eq!(k.vmalloc(usize::MAX), Err(Error::NoMemory));
    assert!(warned(
        &s,
        "vmalloc error: size 18446744073709551615, exceeds total pages"
    ));
    assert_eq!(k.vmalloc_array(usize::MAX / 2, 4), Err(Error::NoMemory));
    assert_eq!(k.vcalloc(1 << 40, 1 << 40), Err(Error::NoMemory));
    assert_eq!(
        k.kvmalloc_array(usize::MAX, 2, GFP_KERNEL),
        Err(Error::NoMemory)
    );
    // Just below a page short of overflow: the guard page would overflow.
    s.clear_reports();
    assert!(k
        .__vmalloc_node(usize::MAX - 100, 1, GFP_KERNEL | __GFP_NOWARN, -1)
        .is_err());
    assert_eq!(k.vmalloc_info().used_pages, 0);
}

#[test]
fn vmalloc_that_may_sleep_in_atomic_context_is_refused() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let r = s.spin_locked(|| k.vmalloc(PAGE_SIZE));
    assert_eq!(r, Err(Error::InvalidArgument));
    assert!(warned(
        &s,
        "BUG: sleeping function called from invalid context"
    ));
    // GFP_ATOMIC is served there (Linux 6.18 supports non-blocking vmalloc).
    let a = s
        .spin_locked(|| k.__vmalloc(2 * PAGE_SIZE, GFP_ATOMIC))
        .unwrap();
    // vfree from an interrupt is deferred, then done by the next vfree.
    // SAFETY: the address came from this machine and nothing uses it after this call.
    s.irq(|| unsafe { k.vfree(a.as_ptr()) }).unwrap();
    assert_eq!(k.vmalloc_info().used_pages, 2, "deferred");
    k.vfree_deferred_drain();
    assert_eq!(k.vmalloc_info().used_pages, 0);
    assert_eq!(k.vmalloc_info().used_pages, 0);
}

#[test]
fn running_out_of_vmalloc_space_reports_and_leaks_nothing() {
    let mut cfg = SimConfig::new(1, pc_memory_map(64 * MB));
    // A small window: the kmap slots take 4 MiB at its top, vmalloc 4 MiB.
    cfg.vmap_size = 8 << 20;
    let s = SimPlatform::new(cfg).unwrap();
    let k = boot(&s);
    let _cpu = s.bind(0);
    let free0 = k.nr_free_pages();
    let a = k.vmalloc(3 << 20).unwrap();
    let r = k.vmalloc(2 << 20);
    assert_eq!(r, Err(Error::NoMemory));
    assert!(warned(
        &s,
        "vmap allocation for size 2101248 failed: use vmalloc=<size> to increase size"
    ));
    assert!(warned(
        &s,
        "vmalloc error: size 2097152, vm_struct allocation failed"
    ));
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(a.as_ptr()) }.unwrap();
    // The freed space is lazily held; a new allocation purges and succeeds.
    let b = k.vmalloc(3 << 20).unwrap();
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(b.as_ptr()) }.unwrap();
    k.purge_vmap_area_lazy();
    k.drain_all_pages();
    assert_eq!(k.vmap_free_areas().0, 1, "the space is one free area again");
    assert!(
        k.nr_free_pages() + 8 >= free0,
        "{} vs {free0}",
        k.nr_free_pages()
    );
}

#[test]
fn page_allocator_failing_midway_gives_everything_back() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    k.drain_all_pages();
    let free0 = k.nr_free_pages();
    let (areas0, _) = k.vmap_free_areas();
    // More than is free but less than RAM: pages run out midway.
    let size = (free0 as usize + 512) * PAGE_SIZE;
    let r = k.vmalloc(size);
    assert_eq!(r, Err(Error::NoMemory));
    assert!(warned(&s, "vmalloc error: size"), "{:?}", s.reports());
    assert_eq!(k.vmalloc_info().used_pages, 0);
    k.purge_vmap_area_lazy();
    k.drain_all_pages();
    assert_eq!(k.vmap_free_areas().0, areas0);
    assert!(
        k.nr_free_pages() + 4 >= free0,
        "{} vs {free0}",
        k.nr_free_pages()
    );
}

#[test]
fn lazy_frees_purge_once_past_lazy_max_pages() {
    let s = sim(2, 256 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    assert_eq!(k.lazy_max_pages(), 16384);
    // 16 KiB stacks with their guard page, as the bundled trace shows.
    let mut purges = 0;
    for i in 0..4000 {
        let a = k
            .__vmalloc_node(4 * PAGE_SIZE, 4 * PAGE_SIZE, GFP_KERNEL, -1)
            .unwrap();
        assert_eq!(a.as_ptr() as usize % (4 * PAGE_SIZE), 0);
        let before = k.vmap_area_stats().3;
        // SAFETY: the address came from this machine and nothing uses it after this call.
        unsafe { k.vfree(a.as_ptr()) }.unwrap();
        if k.vmap_area_stats().3 > before {
            purges += 1;
            // The free that pushed the count past the limit purged.
            assert_eq!(k.vmap_lazy_nr(), 0, "at free {i}");
        } else {
            assert!(k.vmap_lazy_nr() <= 16384);
        }
    }
    // 5 pages a free: a purge every 3277 frees (16385 / 5 rounded up).
    assert_eq!(purges, 1);
    let ev = k.last_vmap_purge().unwrap();
    assert_eq!(ev.num_purged, 3277);
    assert!(ev.end > ev.start);
}

#[test]
fn vmallocinfo_and_meminfo_show_each_kind() {
    let mut cfg = SimConfig::new(1, pc_memory_map(64 * MB));
    cfg.devices = vec![DeviceConfig::echo(kmem_sim::DEFAULT_DEVICE_BASE)];
    let s = SimPlatform::new(cfg).unwrap();
    let k = boot(&s);
    let _cpu = s.bind(0);
    let v = k.vzalloc(5000).unwrap();
    let u = k.vmalloc_user(PAGE_SIZE).unwrap();
    let pages: Vec<_> = (0..3).map(|_| k.alloc_page(GFP_KERNEL).unwrap()).collect();
    let refs: Vec<&kmem::page::Page> = pages.to_vec();
    let m = k.vmap(&refs, 0, PgProt::Kernel).unwrap();
    let io = k.ioremap(kmem_sim::DEFAULT_DEVICE_BASE + 0x10, 8).unwrap();
    let big = k.vmalloc(3 << 20).unwrap();
    let text = vmallocinfo(&k);
    let line = |addr: *mut u8| -> &str {
        let start = format!("0x{:016x}-", addr as usize & !(PAGE_SIZE - 1));
        text.lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("{start} in\n{text}"))
    };
    assert!(line(v.as_ptr()).ends_with("pages=2 vmalloc N0=2"), "{text}");
    assert!(
        line(u.as_ptr()).ends_with("pages=1 vmalloc user N0=1"),
        "{text}"
    );
    assert!(line(m.as_ptr()).ends_with(" vmap"), "{text}");
    assert!(line(m.as_ptr()).contains("   16384 "), "{text}");
    assert!(
        line(io.as_ptr()).ends_with("phys=0x00000000fe000000 ioremap"),
        "{text}"
    );
    assert!(
        line(big.as_ptr()).ends_with("pages=768 vmalloc vpages N0=768"),
        "{text}"
    );
    assert_eq!(io.as_ptr() as usize % PAGE_SIZE, 0x10, "the offset is kept");
    let mut mi = String::new();
    kmem::proc::meminfo(&k, &mut mi).unwrap();
    let (start, end) = k.vmalloc_range().unwrap();
    assert!(
        mi.contains(&format!("VmallocTotal:   {:>8} kB", (end - start) >> 10)),
        "{mi}"
    );
    assert!(
        mi.contains(&format!("VmallocUsed:    {:>8} kB", (2 + 1 + 768 + 2) * 4)),
        "{mi}"
    );
    assert!(mi.contains("VmallocChunk:          0 kB"), "{mi}");
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe {
        k.vfree(v.as_ptr()).unwrap();
        k.vfree(u.as_ptr()).unwrap();
        k.vunmap(m.as_ptr()).unwrap();
        k.iounmap(io.as_ptr()).unwrap();
        k.vfree(big.as_ptr()).unwrap();
    }
    for p in pages {
        k.__free_pages(p, 0).unwrap();
    }
    assert_eq!(k.vmalloc_info().used_pages, 0);
    assert!(vmallocinfo(&k)
        .lines()
        .all(|l| l.ends_with("unpurged vm_area")));
}

#[test]
fn a_driver_talks_to_the_echo_device_through_ioremap() {
    let mut cfg = SimConfig::new(1, pc_memory_map(64 * MB));
    cfg.devices = vec![DeviceConfig::echo(kmem_sim::DEFAULT_DEVICE_BASE)];
    let s = SimPlatform::new(cfg).unwrap();
    let k = boot(&s);
    let _cpu = s.bind(0);
    let base = kmem_sim::DEFAULT_DEVICE_BASE;
    let _region = k.request_mem_region(base, echo::SIZE, "kmem-echo").unwrap();
    // A second driver for the same registers is refused.
    assert_eq!(
        k.request_mem_region(base, 4096, "other").map(|_| ()),
        Err(Error::Busy)
    );
    let regs = k.ioremap(base, PAGE_SIZE).unwrap();
    let buf = k.ioremap_wc(base + PAGE_SIZE as u64, PAGE_SIZE).unwrap();
    // SAFETY: both are live ioremap mappings of one page each.
    let (r, b) = unsafe { (IoMem::new(regs, PAGE_SIZE), IoMem::new(buf, PAGE_SIZE)) };
    assert_eq!(r.readl(echo::ID).unwrap(), echo::ID_VALUE);
    let msg = b"hello, device";
    b.memcpy_toio(0, msg).unwrap();
    r.writel(msg.len() as u32, echo::LENGTH).unwrap();
    r.writel(echo::RING, echo::DOORBELL).unwrap();
    let t0 = std::time::Instant::now();
    while r.readl(echo::DOORBELL).unwrap() != 0 {
        assert!(t0.elapsed().as_secs() < 10, "the device never answered");
        std::thread::yield_now();
    }
    assert_eq!(r.readl(echo::STATUS).unwrap(), echo::STATUS_DONE);
    let mut out = [0u8; 13];
    b.memcpy_fromio(&mut out, 0).unwrap();
    let want: Vec<u8> = msg.iter().map(|c| c ^ 0xff).collect();
    assert_eq!(&out[..], &want[..]);
    assert_eq!(r.readl(echo::CHECKSUM).unwrap(), echo::checksum(&want));
    assert_eq!(
        r.readl(0x1000),
        Err(Error::InvalidArgument),
        "bounds are checked"
    );
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe {
        k.iounmap(regs.as_ptr()).unwrap();
        k.iounmap(buf.as_ptr()).unwrap();
    }
    k.release_mem_region(base, echo::SIZE).unwrap();
}

#[test]
fn ioremap_of_ram_and_iounmap_of_a_bad_address_are_refused() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    assert_eq!(k.ioremap(0x200000, PAGE_SIZE), Err(Error::InvalidArgument));
    assert!(warned(
        &s,
        "ioremap on RAM at 0x0000000000200000 - 0x0000000000200fff"
    ));
    assert_eq!(k.ioremap(0xfe00_0000, 0), Err(Error::InvalidArgument));
    let v = k.vmalloc(PAGE_SIZE).unwrap();
    // SAFETY: a bad address on purpose: the call refuses it before touching any memory.
    assert_eq!(unsafe { k.iounmap(v.as_ptr()) }, Err(Error::BadAddress));
    assert!(warned(&s, "iounmap: bad address"));
    let (start, _) = k.vmalloc_range().unwrap();
    assert_eq!(
        // SAFETY: a bad address on purpose: the call refuses it before touching any memory.
        unsafe { k.iounmap((start + (1 << 30)) as *mut u8) },
        Err(Error::BadAddress)
    );
    // A direct-map address is ignored, as x86 ignores low addresses.
    let km = k.kmalloc(64, GFP_KERNEL).unwrap();
    // SAFETY: a direct-map address, which iounmap ignores.
    assert_eq!(unsafe { k.iounmap(km.as_ptr()) }, Ok(()));
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe {
        k.kfree(km.as_ptr()).unwrap();
        k.vfree(v.as_ptr()).unwrap();
    }
    assert_eq!(k.vmalloc_info().used_pages, 0);
}

#[test]
fn kvmalloc_uses_kmalloc_first_and_vmalloc_beyond() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let small = k.kvmalloc(2048, GFP_KERNEL).unwrap();
    assert!(!k.is_vmalloc_addr(small.as_ptr()));
    let mid = k.kvzalloc(64 << 10, GFP_KERNEL).unwrap();
    assert!(
        !k.is_vmalloc_addr(mid.as_ptr()),
        "kmalloc_large serves 64 KiB"
    );
    // Above KMALLOC_MAX_SIZE kmalloc cannot serve it: vmalloc does.
    let big = k.kvzalloc(8 << 20, GFP_KERNEL).unwrap();
    assert!(k.is_vmalloc_addr(big.as_ptr()));
    // SAFETY: 8 MiB mapped and zeroed.
    let bytes = unsafe { std::slice::from_raw_parts_mut(big.as_ptr(), 8 << 20) };
    assert!(bytes.iter().all(|b| *b == 0));
    bytes[(8 << 20) - 1] = 7;
    // kvrealloc moves a kmalloc object to vmalloc when it has to.
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe { small.as_ptr().write_bytes(0xab, 2048) };
    // SAFETY: the address came from this machine and nothing uses it after this call.
    let grown = unsafe { k.kvrealloc(small.as_ptr(), 6 << 20, GFP_KERNEL) }.unwrap();
    assert!(k.is_vmalloc_addr(grown.as_ptr()));
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    assert_eq!(unsafe { *grown.as_ptr().add(2047) }, 0xab);
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe {
        k.kvfree_sensitive(mid.as_ptr(), 64 << 10).unwrap();
        k.kvfree(big.as_ptr()).unwrap();
        k.kvfree(grown.as_ptr()).unwrap();
        k.kvfree(std::ptr::null_mut()).unwrap();
    }
    assert_eq!(k.vmalloc_info().used_pages, 0);
}

#[test]
fn vmap_vrealloc_vread_and_vm_map_ram() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    // vmap of the caller's pages: writes land in them.
    let pages: Vec<_> = (0..4)
        .map(|_| k.alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap())
        .collect();
    let refs: Vec<&kmem::page::Page> = pages.to_vec();
    let m = k.vmap(&refs, 0, PgProt::Kernel).unwrap();
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe { m.as_ptr().add(3 * PAGE_SIZE + 5).write(42) };
    let d = k.page_address(pages[3]).unwrap();
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    assert_eq!(unsafe { *d.as_ptr().add(5) }, 42);
    assert!(std::ptr::eq(
        // SAFETY: the access is inside a live mapping or allocation of this machine.
        k.vmalloc_to_page(unsafe { m.as_ptr().add(PAGE_SIZE) })
            .unwrap(),
        pages[1]
    ));
    // vread copies through the direct map and reads guard pages as zero.
    let mut buf = vec![0xffu8; 5 * PAGE_SIZE];
    assert_eq!(k.vread(&mut buf, m.as_ptr() as usize), 5 * PAGE_SIZE);
    assert_eq!(buf[3 * PAGE_SIZE + 5], 42);
    assert!(buf[4 * PAGE_SIZE..].iter().all(|b| *b == 0));
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vunmap(m.as_ptr()) }.unwrap();
    // SAFETY: a bad address on purpose: the call refuses it before touching any memory.
    assert_eq!(unsafe { k.vunmap(m.as_ptr()) }, Err(Error::BadAddress));
    assert!(warned(&s, "Trying to vunmap() nonexistent vm area"));
    // vm_map_ram: small maps share a per-CPU block.
    let a = k.vm_map_ram(&refs[..2], -1).unwrap();
    let b = k.vm_map_ram(&refs[2..], -1).unwrap();
    assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 2 * PAGE_SIZE);
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    assert_eq!(unsafe { *b.as_ptr().add(PAGE_SIZE + 5) }, 42);
    assert!(vmallocinfo(&k).contains(" 4194304 vm_map_ram"));
    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
    unsafe { k.vm_unmap_ram(a.as_ptr(), 2) }.unwrap();
    assert_eq!(
        // SAFETY: a second unmap on purpose: refused before any memory is
        // touched (the contract is broken to test the check).
        unsafe { k.vm_unmap_ram(a.as_ptr(), 2) },
        Err(Error::BadAddress)
    );
    // SAFETY: the mapping or allocation is this test's own, unmapped or freed once, and not used after.
    unsafe { k.vm_unmap_ram(b.as_ptr(), 2) }.unwrap();
    k.vm_unmap_aliases();
    assert!(
        !vmallocinfo(&k).contains("vm_map_ram"),
        "the unused block went back"
    );
    for p in pages {
        k.__free_pages(p, 0).unwrap();
    }
    // vrealloc: shrink and grow in place, then move.
    let v = k.vmalloc(3 * PAGE_SIZE).unwrap();
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe { v.as_ptr().write_bytes(9, 3 * PAGE_SIZE) };
    // SAFETY: a live vmalloc area of this machine; the old address is not used once another is returned.
    let v2 = unsafe { k.vrealloc(Some(v), 100, GFP_KERNEL) }
        .unwrap()
        .unwrap();
    assert_eq!(v2, v);
    assert_eq!(
        // SAFETY: the access is inside a live mapping or allocation of this machine.
        unsafe { *v.as_ptr().add(100) },
        0,
        "the shrunk tail is zeroed"
    );
    // SAFETY: a live vmalloc area of this machine; the old address is not used once another is returned.
    let v3 = unsafe { k.vrealloc(Some(v2), 3 * PAGE_SIZE, GFP_KERNEL) }
        .unwrap()
        .unwrap();
    assert_eq!(v3, v);
    // SAFETY: the address came from this machine and nothing uses it after this call.
    let v4 = unsafe { k.vrealloc(Some(v3), 10 * PAGE_SIZE, GFP_KERNEL) }
        .unwrap()
        .unwrap();
    assert_ne!(v4, v3);
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    assert_eq!(unsafe { *v4.as_ptr().add(99) }, 9);
    // SAFETY: the address came from this machine and nothing uses it after this call.
    assert_eq!(unsafe { k.vrealloc(Some(v4), 0, GFP_KERNEL) }, Ok(None));
    assert_eq!(k.vmalloc_info().used_pages, 0);
}

#[test]
fn vmalloc_huge_maps_pmd_aligned_areas() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let h = k.vmalloc_huge(4 << 20, GFP_KERNEL).unwrap();
    assert_eq!(h.as_ptr() as usize % (2 << 20), 0);
    let vm = k.find_vm_area(h.as_ptr()).unwrap();
    assert_eq!(vm.nr_pages(), 1024);
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe { h.as_ptr().add((4 << 20) - 1).write(1) };
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(h.as_ptr()) }.unwrap();
    // Unknown flags are reported and dropped, as vmalloc_fix_flags() does.
    let v = k.__vmalloc(PAGE_SIZE, GFP_KERNEL | __GFP_COMP).unwrap();
    assert!(warned(&s, "Unexpected gfp: 0x40000 (__GFP_COMP). Fixing up to gfp: 0xcc0 (GFP_KERNEL). Fix your code!"), "{:?}", s.reports());
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vfree(v.as_ptr()) }.unwrap();
}

#[test]
fn two_cpus_vmalloc_and_vfree_in_parallel() {
    let s = sim(2, 256 * MB);
    let k = boot(&s);
    s.run_on_cpus(|cpu| {
        for i in 0..500 {
            let n = 1 + (i * 7 + cpu) % 9;
            let a = k.vmalloc(n * PAGE_SIZE).unwrap();
            // SAFETY: the access is inside a live mapping or allocation of this machine.
            unsafe { a.as_ptr().write_bytes(cpu as u8, n * PAGE_SIZE) };
            // SAFETY: the access is inside a live mapping or allocation of this machine.
            assert_eq!(unsafe { *a.as_ptr().add(n * PAGE_SIZE - 1) }, cpu as u8);
            // SAFETY: the address came from this machine and nothing uses it after this call.
            unsafe { k.vfree(a.as_ptr()) }.unwrap();
        }
    });
    let _cpu = s.bind(0);
    assert_eq!(k.vmalloc_info().used_pages, 0);
    k.purge_vmap_area_lazy();
    assert_eq!(k.vmap_free_areas().0, 1);
}

/// Run this test again as a child told to fault; `None` in the child.
fn child(name: &str) -> Option<(String, Option<i32>)> {
    const CHILD: &str = "KMEM_VMALLOC_FAULT_CHILD";
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return None;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .unwrap();
    Some((
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.signal(),
    ))
}

#[test]
fn a_guard_page_overrun_is_an_oops_naming_the_area() {
    let Some((err, sig)) = child("a_guard_page_overrun_is_an_oops_naming_the_area") else {
        let s = sim(1, 64 * MB);
        let k = boot(&s);
        let _oops = VmallocOopsGuard::new(&s, &k);
        let _cpu = s.bind(0);
        let a = k.vmalloc(2 * PAGE_SIZE).unwrap();
        eprintln!("area at {:#x}", a.as_ptr() as usize);
        // SAFETY: none: the write one past the end hits the guard page.
        unsafe { a.as_ptr().add(2 * PAGE_SIZE).write_volatile(1) };
        unreachable!("the guard page did not fault");
    };
    assert_eq!(sig, Some(11), "{err}");
    let area = err
        .lines()
        .find_map(|l| l.strip_prefix("area at 0x"))
        .expect(&err);
    let addr = usize::from_str_radix(area, 16).unwrap() + 2 * PAGE_SIZE;
    assert!(
        err.contains(&format!(
            "BUG: unable to handle page fault for address: {addr:016x}"
        )),
        "{err}"
    );
    assert!(
        err.contains("#PF: supervisor write access in kernel mode"),
        "{err}"
    );
    assert!(
        err.contains("is the guard page of the vmalloc area"),
        "{err}"
    );
    assert!(
        err.contains("kmem-sim/tests/vmalloc.rs"),
        "the caller is named: {err}"
    );
}

#[test]
fn a_use_after_vfree_is_an_oops() {
    let Some((err, sig)) = child("a_use_after_vfree_is_an_oops") else {
        let s = sim(1, 64 * MB);
        let k = boot(&s);
        let _oops = VmallocOopsGuard::new(&s, &k);
        let _cpu = s.bind(0);
        let a = k.vmalloc(PAGE_SIZE).unwrap();
        // SAFETY: the address came from this machine and nothing uses it after this call.
        unsafe { k.vfree(a.as_ptr()) }.unwrap();
        // SAFETY: none: the area is unmapped, so this read faults.
        let v = unsafe { a.as_ptr().read_volatile() };
        unreachable!("read {v} after vfree");
    };
    assert_eq!(sig, Some(11), "{err}");
    assert!(
        err.contains("#PF: supervisor read access in kernel mode"),
        "{err}"
    );
    assert!(
        err.contains("freed (vfree()d or unmapped) and not yet purged: a use after free"),
        "{err}"
    );
}

/// A simulator that records `current->flags` each time the core maps
/// pages: what the platform's page-table allocations would run under.
struct ScopeSeen<'a> {
    sim: &'a SimPlatform,
    seen: std::sync::Mutex<Vec<u32>>,
}

// SAFETY: every promise is the simulator's: all calls are delegated
// unchanged, `map_kernel_range` after recording the task's flags.
unsafe impl Platform for ScopeSeen<'_> {
    kmem::forward_platform!(p => p.sim;
        nr_cpu_ids, smp_processor_id, local_enter, local_exit, local_enter_leaf, local_exit_leaf,
        in_atomic, in_interrupt, direct_map, memory_is_zeroed,
        vmap_range, unmap_kernel_range, flush_tlb_kernel_range, wait_event, wake_up,
        others_can_run, smp_call_function_single, on_each_cpu,
        report, current, now_ns, random_u64, task_flags, set_task_flags, out_of_memory
    );
    fn map_kernel_range(
        &self,
        va: usize,
        pa: u64,
        size: usize,
        prot: PgProt,
        shift: u32,
    ) -> kmem::Result<()> {
        self.seen.lock().unwrap().push(self.sim.task_flags());
        self.sim.map_kernel_range(va, pa, size, prot, shift)
    }
}

#[test]
fn gfp_nofs_and_noio_reach_the_page_tables_through_memalloc_scopes() {
    use kmem::sched::{PF_MEMALLOC, PF_MEMALLOC_NOFS, PF_MEMALLOC_NOIO};
    let s = sim(1, 64 * MB);
    let p = ScopeSeen {
        sim: &s,
        seen: Default::default(),
    };
    let k = {
        let _cpu = s.bind(0);
        Kmem::boot(p, s.memory_map(), &BootParams::default()).unwrap()
    };
    let _cpu = s.bind(0);
    let last = |gfp| {
        let a = k.__vmalloc(PAGE_SIZE, gfp).unwrap();
        // SAFETY: the address came from this machine and nothing uses it after this call.
        unsafe { k.vfree(a.as_ptr()) }.unwrap();
        let f = *k.platform().seen.lock().unwrap().last().unwrap();
        assert_eq!(k.platform().task_flags(), 0, "the scope ends after mapping");
        f
    };
    assert_eq!(last(GFP_KERNEL), 0);
    assert_eq!(last(GFP_NOFS), PF_MEMALLOC_NOFS);
    assert_eq!(last(GFP_NOIO), PF_MEMALLOC_NOIO);
    assert_eq!(last(GFP_NOWAIT), PF_MEMALLOC);
    assert_eq!(last(GFP_KERNEL | __GFP_NORETRY), PF_MEMALLOC);
}

#[test]
fn vmap_pfn_maps_raw_frames_as_ioremap() {
    let s = sim(1, 64 * MB);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let pages: Vec<_> = (0..2)
        .map(|_| k.alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap())
        .collect();
    let pfns: Vec<u64> = pages
        .iter()
        .map(|p| k.mem_map().page_to_pfn(p).unwrap())
        .collect();
    let a = k.vmap_pfn(&[pfns[1], pfns[0]], PgProt::Kernel).unwrap();
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    unsafe { a.as_ptr().write(5) };
    // SAFETY: the access is inside a live mapping or allocation of this machine.
    assert_eq!(unsafe { *k.page_address(pages[1]).unwrap().as_ptr() }, 5);
    let line = vmallocinfo(&k);
    assert!(
        line.lines()
            .any(|l| l.contains(" 12288 ") && l.ends_with(" ioremap")),
        "{line}"
    );
    assert!(
        k.vmalloc_to_page(a.as_ptr()).is_none(),
        "no struct page array"
    );
    // SAFETY: the address came from this machine and nothing uses it after this call.
    unsafe { k.vunmap(a.as_ptr()) }.unwrap();
    for p in pages {
        k.__free_pages(p, 0).unwrap();
    }
}
