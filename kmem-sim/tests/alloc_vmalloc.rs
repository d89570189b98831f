//! Rust-for-Linux's vmalloc-backed types on a simulated machine, which has
//! the page tables the arena lacks: `Vmalloc` and `KVmalloc` as
//! allocators, `VBox`/`VVec`/`KVBox`/`KVVec` on them. Each test checks
//! where the memory comes from (`is_vmalloc_addr`, `find_vm_area`), that
//! contents survive every reallocation, and that dropping gives every
//! vmalloc page back (`VmallocUsed` returns to where it started).

use core::alloc::Layout;
use kmem::alloc::flags::{__GFP_NOWARN, __GFP_ZERO, GFP_KERNEL};
use kmem::alloc::{AllocError, Allocator, KVBox, KVVec, KVmalloc, NumaNode, VBox, VVec, Vmalloc};
use kmem::kmalloc::KMALLOC_MAX_SIZE;
use kmem::vmalloc::VM_ALLOC;
use kmem::{BootParams, Kmem, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};

const MB: usize = 1 << 20;

fn sim(cpus: usize) -> SimPlatform {
    SimPlatform::new(SimConfig::new(cpus, pc_memory_map(64 << 20))).expect("machine")
}

fn boot(s: &SimPlatform) -> Kmem<&SimPlatform> {
    let _cpu = s.bind(0);
    Kmem::boot(s, s.memory_map(), &BootParams::default()).expect("boot")
}

/// Pages vmalloc holds (`VmallocUsed`).
fn vmalloc_used(k: &Kmem<&SimPlatform>) -> usize {
    k.vmalloc_info().used_pages
}

fn assert_no_warnings(s: &SimPlatform) {
    let reports = s.reports();
    assert!(
        reports
            .iter()
            .all(|(_, m)| !m.contains("WARNING") && !m.contains("error")),
        "{reports:?}"
    );
}

#[test]
fn vbox_of_a_large_array_is_vmalloc_memory_built_in_place() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let used = vmalloc_used(&k);
    // 1 MiB never passes through the stack: allocated zeroed, then used.
    let b = VBox::<[u8; MB], _>::new_uninit(Vmalloc::new(&k), GFP_KERNEL | __GFP_ZERO).unwrap();
    // SAFETY: `__GFP_ZERO` zeroed the block; all-zero is a valid `[u8; N]`.
    let mut b = unsafe { b.assume_init() };
    let p = b.as_ptr();
    assert!(k.is_vmalloc_addr(p));
    assert_eq!(p.addr() % PAGE_SIZE, 0);
    assert!(b.iter().all(|&x| x == 0));
    b[0] = 1;
    b[MB - 1] = 2;
    let vm = k.find_vm_area(p).expect("a vmalloc area");
    assert_eq!(vm.addr().cast_const(), p);
    assert_eq!((vm.requested_size(), vm.nr_pages()), (MB, MB / PAGE_SIZE));
    assert_eq!(vm.size(), MB + PAGE_SIZE, "one guard page");
    assert_ne!(vm.flags() & VM_ALLOC, 0);
    // The last byte, seen through its page's direct-map alias.
    // SAFETY: inside the 1 MiB block.
    let last = k.vmalloc_to_page(unsafe { p.add(MB - 1) }).unwrap();
    let direct = k.page_address(last).unwrap();
    // SAFETY: the page's direct-map alias is one page long.
    assert_eq!(unsafe { *direct.as_ptr().add(PAGE_SIZE - 1) }, 2);
    assert_eq!(vmalloc_used(&k), used + MB / PAGE_SIZE);
    // /proc/vmallocinfo names the allocator as the caller, as Linux names
    // the Rust allocator's function.
    let mut info = String::new();
    kmem::proc::vmallocinfo(&k, &mut info).unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with(&format!("0x{:016x}-", p.addr())))
        .expect(&info);
    assert!(line.contains("kmem/src/alloc/allocator.rs"), "{line}");
    assert!(line.contains(" pages=256 vmalloc"), "{line}");
    drop(b);
    assert_eq!(vmalloc_used(&k), used);
    assert!(k.find_vm_area(p).is_none());
    assert_no_warnings(&s);
}

#[test]
fn vvec_grows_in_place_within_its_pages_and_moves_beyond() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let used = vmalloc_used(&k);
    let mut v: VVec<'_, u64, _> = VVec::new(Vmalloc::new(&k));
    let n = 5 * PAGE_SIZE / 8; // past five pages
    let (mut in_place, mut moved) = (0, 0);
    // The buffer and the bytes its area has (without the guard page).
    let mut area: Option<(*const u64, usize)> = None;
    for i in 0..n as u64 {
        let cap = v.capacity();
        v.push(i, GFP_KERNEL).unwrap();
        if v.capacity() == cap {
            continue;
        }
        let p = v.as_ptr();
        assert!(k.is_vmalloc_addr(p.cast()));
        let vm = k.find_vm_area(p.cast()).unwrap();
        assert_eq!(vm.requested_size(), v.capacity() * 8);
        if let Some((q, room)) = area {
            // vrealloc keeps the address while the area's pages suffice.
            let fits = v.capacity() * 8 <= room;
            assert_eq!(p == q, fits, "capacity {}", v.capacity());
            if fits {
                in_place += 1;
            } else {
                moved += 1;
            }
        }
        assert!(v.iter().enumerate().all(|(j, &x)| x == j as u64));
        area = Some((p, vm.usable_size()));
    }
    // Capacities 2..=512 fit the first page; 1024, 2048 and 4096
    // elements each need a bigger area.
    assert_eq!((in_place, moved), (9, 3));
    assert_eq!(v.len(), n);
    assert_eq!(vmalloc_used(&k), used + 4096 * 8 / PAGE_SIZE);
    drop(v);
    assert_eq!(vmalloc_used(&k), used);
    assert_no_warnings(&s);
}

#[test]
fn vrealloc_shrinks_in_place_and_grows_back_zeroed_and_vvec_gives_pages_back() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let used = vmalloc_used(&k);
    let vm = Vmalloc::new(&k);
    let no_node = NumaNode::NO_NODE;
    let big = Layout::array::<u8>(4 * PAGE_SIZE).unwrap();
    let small = Layout::array::<u8>(100).unwrap();
    let grown = Layout::array::<u8>(100 + 3 * PAGE_SIZE).unwrap();
    let p = vm.alloc(big, GFP_KERNEL, no_node).unwrap().cast::<u8>();
    // SAFETY: a fresh block of `big.size()` bytes.
    unsafe { p.as_ptr().write_bytes(0xab, big.size()) };
    // vrealloc shrinks in place and keeps the pages, as Linux's does.
    // SAFETY: `p` is the block of `big`.
    let q = unsafe { vm.realloc(Some(p), small, big, GFP_KERNEL, no_node) }.unwrap();
    assert_eq!(q.cast::<u8>(), p);
    let info = k.find_vm_area(p.as_ptr()).unwrap();
    assert_eq!((info.requested_size(), info.nr_pages()), (100, 4));
    assert_eq!(vmalloc_used(&k), used + 4);
    // Growing back within those pages keeps the address; the new bytes
    // are zero under __GFP_ZERO, not the 0xab they held.
    // SAFETY: `p` is now the block of `small`.
    let q = unsafe { vm.realloc(Some(p), grown, small, GFP_KERNEL | __GFP_ZERO, no_node) };
    assert_eq!(q.unwrap().cast::<u8>(), p);
    // SAFETY: the block has `grown.size()` initialised bytes.
    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), grown.size()) };
    assert!(bytes[..100].iter().all(|&x| x == 0xab));
    assert!(bytes[100..].iter().all(|&x| x == 0));
    // A growth vmalloc cannot serve fails and leaves the block as it was.
    let huge = Layout::array::<u8>(1 << 30).unwrap();
    // SAFETY: `p` is the block of `grown`; on failure it stays so.
    let r = unsafe { vm.realloc(Some(p), huge, grown, GFP_KERNEL | __GFP_NOWARN, no_node) };
    assert_eq!(r.err(), Some(AllocError));
    assert_eq!(k.find_vm_area(p.as_ptr()).unwrap().nr_pages(), 4);
    // SAFETY: `p` is the block of `grown`, not used again.
    unsafe { vm.free(p, grown) };
    assert_eq!(vmalloc_used(&k), used);
    // A VVec's shrink_to_fit moves to a smaller area when that gives pages
    // back (vrealloc alone would keep them).
    let mut v: VVec<'_, u8, _> = VVec::with_capacity(4 * PAGE_SIZE, vm, GFP_KERNEL).unwrap();
    v.resize(4 * PAGE_SIZE, 0xab, GFP_KERNEL).unwrap();
    v.truncate(100);
    v.shrink_to_fit(GFP_KERNEL).unwrap();
    assert_eq!(v.capacity(), 100);
    assert!(v.iter().all(|&x| x == 0xab));
    assert_eq!(vmalloc_used(&k), used + 1);
    // Shrinking an empty vector frees its buffer.
    let p = v.as_ptr();
    v.clear();
    v.shrink_to_fit(GFP_KERNEL).unwrap();
    assert_eq!(v.capacity(), 0);
    assert!(k.find_vm_area(p).is_none());
    assert_eq!(vmalloc_used(&k), used);
    assert_no_warnings(&s);
}

#[test]
fn kvvec_stays_in_kmalloc_while_kmalloc_serves_it_then_moves_to_vmalloc() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let used = vmalloc_used(&k);
    let mut v: KVVec<'_, u64, _> = KVVec::new(KVmalloc::new(&k));
    v.extend_from_slice(&[0, 1, 2], GFP_KERNEL).unwrap();
    assert!(!k.is_vmalloc_addr(v.as_ptr().cast()));
    assert_eq!(k.ksize(v.as_ptr().cast()), 32, "kmalloc-32");
    let n = KMALLOC_MAX_SIZE / 8 + 1; // one element past kmalloc's largest
    let mut first_vmalloc_cap = None;
    for i in 3..n as u64 {
        let cap = v.capacity();
        v.push(i, GFP_KERNEL).unwrap();
        if v.capacity() == cap {
            continue;
        }
        let vmalloc = k.is_vmalloc_addr(v.as_ptr().cast());
        if v.capacity() * 8 <= KMALLOC_MAX_SIZE {
            assert!(!vmalloc, "capacity {}: kmalloc serves it", v.capacity());
        } else {
            assert!(vmalloc, "capacity {}: beyond kmalloc", v.capacity());
            first_vmalloc_cap.get_or_insert(v.capacity());
        }
        assert!(v.iter().enumerate().all(|(j, &x)| x == j as u64));
    }
    // The first capacity beyond kmalloc's largest went to vmalloc.
    let cap = first_vmalloc_cap.expect("moved to vmalloc");
    assert!(cap * 8 > KMALLOC_MAX_SIZE && cap / 2 * 8 <= KMALLOC_MAX_SIZE);
    let vm = k.find_vm_area(v.as_ptr().cast()).unwrap();
    assert_eq!(vm.requested_size(), v.capacity() * 8);
    assert!(vmalloc_used(&k) >= used + v.capacity() * 8 / PAGE_SIZE);
    drop(v);
    assert_eq!(vmalloc_used(&k), used);
    assert_no_warnings(&s);
}

#[test]
fn kvbox_is_kmalloc_when_small_and_vmalloc_when_big() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let kv = KVmalloc::new(&k);
    let used = vmalloc_used(&k);
    let small = KVBox::new([7u64; 8], kv, GFP_KERNEL).unwrap();
    assert!(!k.is_vmalloc_addr(small.as_ptr().cast()));
    assert_eq!(k.ksize(small.as_ptr().cast()), 64);
    // 2 MiB: kmalloc's pages still.
    let mid = KVBox::<[u8; 2 * MB], _>::new_uninit(kv, GFP_KERNEL).unwrap();
    assert!(!k.is_vmalloc_addr(mid.as_ptr().cast()));
    // 8 MiB: beyond kmalloc, so vmalloc, zeroed.
    let big = KVBox::<[u8; 8 * MB], _>::new_uninit(kv, GFP_KERNEL | __GFP_ZERO).unwrap();
    // SAFETY: `__GFP_ZERO` zeroed the block; all-zero is a valid `[u8; N]`.
    let big = unsafe { big.assume_init() };
    assert!(k.is_vmalloc_addr(big.as_ptr()));
    assert!(big.iter().all(|&x| x == 0));
    assert!(vmalloc_used(&k) >= used + 8 * MB / PAGE_SIZE);
    assert_eq!(small.iter().sum::<u64>(), 56);
    drop((small, mid, big));
    assert_eq!(vmalloc_used(&k), used);
    assert_no_warnings(&s);
}

#[test]
fn a_vvec_filled_on_one_cpu_is_freed_on_another() {
    let s = sim(2);
    let k = boot(&s);
    let used = vmalloc_used(&k);
    let v = {
        let _cpu = s.bind(0);
        let mut v: VVec<'_, u32, _> = VVec::new(Vmalloc::new(&k));
        v.resize(3 * PAGE_SIZE, 9, GFP_KERNEL).unwrap();
        v
    };
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let _cpu = s.bind(1);
            assert!(v.iter().all(|&x| x == 9));
            drop(v);
        });
    });
    assert_eq!(vmalloc_used(&k), used);
    assert_no_warnings(&s);
}
