//! Rust-for-Linux's examples and KUnit tests for `VBox`, `KVBox`,
//! `Vmalloc` (`to_page`, page iteration), the allocators' alignment and
//! NUMA node argument, `ForeignOwnable` and in-place initialisation,
//! re-expressed for kmem on a simulated machine (vmalloc needs its page
//! tables). Each test names the example it stands for; the differences are
//! the mechanical ones: a booted machine, an allocator handle passed where
//! Rust-for-Linux names a type, kmem's `Page` where it has `BorrowedPage`.

use core::mem::MaybeUninit;
use core::ptr::NonNull;

use kmem::alloc::flags::{__GFP_NOWARN, GFP_KERNEL};
use kmem::alloc::init::{init_zeroed, InPlaceInit};
use kmem::alloc::{
    AllocError, Allocator, AsPageIter, ForeignOwnable, KBox, KVBox, KVVec, KVmalloc, Kmalloc,
    NumaNode, VBox, VVec, Vmalloc,
};
use kmem::kmalloc::KMALLOC_MAX_SIZE;
use kmem::{BootParams, Kmem, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};

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

/// No warning or error was reported.
fn assert_no_warnings(s: &SimPlatform) {
    let reports = s.reports();
    assert!(
        reports
            .iter()
            .all(|(_, m)| !m.contains("WARNING") && !m.contains("error")),
        "{reports:?}"
    );
}

/// The `VBox` alias example: a value in vmalloc memory.
#[test]
fn vbox_alias_example() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let b = VBox::new(24_u64, Vmalloc::new(&k), GFP_KERNEL).unwrap();
    assert_eq!(*b, 24_u64);
    assert!(k.is_vmalloc_addr((&*b as *const u64).cast()));
}

/// The `KVBox` alias example.
#[test]
fn kvbox_alias_example() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let b = KVBox::new(24_u64, KVmalloc::new(&k), GFP_KERNEL).unwrap();
    assert_eq!(*b, 24_u64);
}

const HUGE: usize = KMALLOC_MAX_SIZE + 1;

/// A type larger than kmalloc serves.
struct Huge(#[allow(dead_code)] [u8; HUGE]);

/// `Box`'s examples of a type above `KMALLOC_MAX_SIZE`: kmalloc refuses it,
/// kvmalloc serves it from vmalloc.
#[test]
fn huge_values_need_kvmalloc() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    assert!(KBox::<Huge, _>::new_uninit(Kmalloc::new(&k), GFP_KERNEL | __GFP_NOWARN).is_err());
    let used = vmalloc_used(&k);
    let b = KVBox::<Huge, _>::new_uninit(KVmalloc::new(&k), GFP_KERNEL).unwrap();
    assert!(k.is_vmalloc_addr(b.as_ptr().cast()));
    // At least its pages (kvmalloc may map huge pages, rounding up).
    assert!(vmalloc_used(&k) >= used + HUGE.div_ceil(PAGE_SIZE));
    drop(b);
    assert_eq!(vmalloc_used(&k), used);
}

/// Writes `len` bytes of `byte` at `offset` into the page through the
/// direct map (Rust-for-Linux's `BorrowedPage::fill_zero_raw` and kin).
fn fill_page(k: &Kmem<&SimPlatform>, page: &kmem::page::Page, offset: usize, len: usize, byte: u8) {
    assert!(offset + len <= PAGE_SIZE);
    let direct = k.page_address(page).expect("lowmem");
    // SAFETY: the page belongs to a live vmalloc block of the caller's,
    // which nothing else reads or writes meanwhile.
    unsafe { direct.as_ptr().add(offset).write_bytes(byte, len) };
}

/// `VBox`'s `AsPageIter` example: a zero-sized box has no page; a page's
/// worth has one, which can be written through its descriptor.
#[test]
fn vbox_page_iter_example() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let vm = Vmalloc::new(&k);
    let mut vbox = VBox::new((), vm, GFP_KERNEL).unwrap();
    assert!(vbox.page_iter().next().is_none());

    let mut vbox = VBox::<[u8; PAGE_SIZE], _>::new_uninit(vm, GFP_KERNEL).unwrap();
    let page = vbox
        .page_iter()
        .next()
        .expect("At least one page should be available.");
    fill_page(&k, page, 0, PAGE_SIZE, 0);
    // SAFETY: every byte was just written (zero) through the page.
    let vbox = unsafe { vbox.assume_init() };
    assert!(vbox.iter().all(|&b| b == 0));
}

/// Page iteration in detail: every page of a three-page box, in address
/// order, is the one mapped there; a write through one shows in the box.
#[test]
fn vbox_pages_are_the_mapped_ones_in_order() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let vm = Vmalloc::new(&k);
    let mut b = VBox::<[u8; 3 * PAGE_SIZE], _>::new_uninit(vm, GFP_KERNEL).unwrap();
    let base = NonNull::new(b.as_mut_ptr().cast::<u8>()).unwrap();
    let it = b.page_iter();
    assert_eq!((it.size(), it.page_count()), (3 * PAGE_SIZE, 3));
    let pages: Vec<_> = it.collect();
    assert_eq!(pages.len(), 3);
    for (i, page) in pages.iter().enumerate() {
        let at = NonNull::new(base.as_ptr().wrapping_add(i * PAGE_SIZE)).unwrap();
        assert!(core::ptr::eq(*page, vm.to_page(at).unwrap()));
        fill_page(&k, page, 0, PAGE_SIZE, i as u8 + 1);
    }
    // SAFETY: all three pages were filled above.
    let b = unsafe { b.assume_init() };
    assert_eq!((b[0], b[PAGE_SIZE], b[3 * PAGE_SIZE - 1]), (1, 2, 3));
}

/// `VVec`'s `AsPageIter` example: no page while empty, one once a page is
/// reserved.
#[test]
fn vvec_page_iter_example() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let mut vec = VVec::<u8, _>::new(Vmalloc::new(&k));
    assert!(vec.page_iter().next().is_none());
    vec.reserve(PAGE_SIZE, GFP_KERNEL).unwrap();
    let page = vec
        .page_iter()
        .next()
        .expect("At least one page should be available.");
    fill_page(&k, page, 0, PAGE_SIZE, 0);
}

/// `Vmalloc::to_page`'s example: the page behind a vmalloc address, written
/// through its descriptor; an address outside every area has none.
#[test]
fn vmalloc_to_page_example() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let vm = Vmalloc::new(&k);
    let mut vbox = VBox::<[u8; PAGE_SIZE], _>::new_uninit(vm, GFP_KERNEL).unwrap();
    {
        let ptr = NonNull::new(vbox.as_mut_ptr().cast::<u8>()).unwrap();
        let page = vm.to_page(ptr).expect("a vmalloc address");
        fill_page(&k, page, 0, PAGE_SIZE, 0);
    }
    // SAFETY: the whole page was zeroed above.
    let vbox = unsafe { vbox.assume_init() };
    assert_eq!(*vbox, [0; PAGE_SIZE]);
    let kmalloced = KBox::new(1u64, Kmalloc::new(&k), GFP_KERNEL).unwrap();
    assert!(vm.to_page(NonNull::from(&*kmalloced).cast()).is_none());
}

const TEST_SIZE: usize = 1024;

/// A block wanting 128-byte alignment.
#[repr(align(128))]
struct Blob(#[allow(dead_code)] [u8; TEST_SIZE]);

/// A block wanting two pages' alignment.
#[repr(align(8192))]
struct LargeAlignBlob(#[allow(dead_code)] [u8; 4 * PAGE_SIZE]);

/// An uninitialised box of `T` from the allocator `A`.
struct TestAlign<T, A: Allocator>(KBox<MaybeUninit<T>, A>);

impl<T, A: Allocator> TestAlign<T, A> {
    fn new(alloc: A) -> Result<Self, AllocError> {
        Ok(Self(KBox::new_uninit(alloc, GFP_KERNEL)?))
    }

    fn is_aligned_to(&self, align: usize) -> bool {
        assert!(align.is_power_of_two());
        self.0.as_ptr().addr() & (align - 1) == 0
    }
}

/// The allocators' KUnit alignment test: every allocator honours 128
/// bytes and two pages.
#[test]
fn allocator_alignment_kunit_test() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let (km, vm, kv) = (Kmalloc::new(&k), Vmalloc::new(&k), KVmalloc::new(&k));

    assert!(TestAlign::<Blob, _>::new(km).unwrap().is_aligned_to(128));
    assert!(TestAlign::<LargeAlignBlob, _>::new(km)
        .unwrap()
        .is_aligned_to(8192));
    assert!(TestAlign::<Blob, _>::new(vm).unwrap().is_aligned_to(128));
    assert!(TestAlign::<LargeAlignBlob, _>::new(vm)
        .unwrap()
        .is_aligned_to(8192));
    assert!(TestAlign::<Blob, _>::new(kv).unwrap().is_aligned_to(128));
    assert!(TestAlign::<LargeAlignBlob, _>::new(kv)
        .unwrap()
        .is_aligned_to(8192));
}

/// Every allocator's blocks are aligned to its `MIN_ALIGN`, whatever the
/// layout asks; `FOREIGN_ALIGN` follows.
#[test]
fn min_align_and_foreign_align() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    assert_eq!(
        (
            Kmalloc::<&SimPlatform>::MIN_ALIGN,
            Vmalloc::<&SimPlatform>::MIN_ALIGN
        ),
        (kmem::kmalloc::ARCH_KMALLOC_MINALIGN, PAGE_SIZE)
    );
    assert_eq!(
        KVmalloc::<&SimPlatform>::MIN_ALIGN,
        kmem::kmalloc::ARCH_KMALLOC_MINALIGN
    );
    let v = VBox::new(1u8, Vmalloc::new(&k), GFP_KERNEL).unwrap();
    assert_eq!((&*v as *const u8).addr() % PAGE_SIZE, 0);
    assert_eq!(
        <VBox<'_, u8, &SimPlatform> as ForeignOwnable>::FOREIGN_ALIGN,
        PAGE_SIZE
    );
    let p = v.into_foreign();
    assert_eq!(p.addr() % PAGE_SIZE, 0);
    // SAFETY: `p` is a foreign `VBox<u8>` of this machine, reclaimed once.
    let v = unsafe { VBox::<u8, _>::from_foreign(p, Vmalloc::new(&k)) };
    assert_eq!(*v, 1);
    for _ in 0..16 {
        let b = KBox::new(1u8, Kmalloc::new(&k), GFP_KERNEL).unwrap();
        assert_eq!(
            (&*b as *const u8).addr() % kmem::kmalloc::ARCH_KMALLOC_MINALIGN,
            0
        );
    }
}

/// Allocation and reallocation on a given node keep the contents, and
/// give back what they replaced; a node that cannot exist is refused.
#[test]
fn numa_node_argument() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    assert!(NumaNode::new(kmem::mmzone::MAX_NUMNODES as i32).is_err());
    let node0 = NumaNode::new(0).unwrap();
    let used = vmalloc_used(&k);
    let small = core::alloc::Layout::from_size_align(64, 8).unwrap();
    let big = core::alloc::Layout::from_size_align(3 * PAGE_SIZE, 8).unwrap();
    let km = Kmalloc::new(&k);
    let vm = Vmalloc::new(&k);
    let kv = KVmalloc::new(&k);
    let allocators: [&dyn kmem::alloc::DynAllocator; 3] = [&km, &vm, &kv];
    for a in allocators {
        let p = a.alloc(small, GFP_KERNEL, node0).unwrap().cast::<u8>();
        // SAFETY: a fresh block of 64 bytes.
        unsafe { p.as_ptr().write_bytes(0x5a, 64) };
        // SAFETY: `p` is a live block of `small` from `a`, replaced.
        let q = unsafe { a.realloc(Some(p), big, small, GFP_KERNEL, node0) }.unwrap();
        let q = q.cast::<u8>();
        // SAFETY: the block holds at least 3 pages, the first 64 bytes kept.
        assert!((0..64).all(|i| unsafe { *q.as_ptr().add(i) } == 0x5a));
        // SAFETY: `q` is a live block of `big` from `a`.
        unsafe { a.free(q, big) };
    }
    assert_eq!(vmalloc_used(&k), used);
}

/// In-place initialisation into vmalloc memory: a zeroed page-sized table
/// built in its box (`KBox::init` with `init_zeroed`), never on the stack.
/// Pinning needs a `'static` handle, so the machine is leaked.
#[test]
fn in_place_initialisation_into_vmalloc() {
    let s: &'static SimPlatform = Box::leak(Box::new(sim(1)));
    let k: &'static Kmem<&'static SimPlatform> = Box::leak(Box::new(boot(s)));
    let _cpu = s.bind(0);
    let vm = Vmalloc::new(k);
    let t = VBox::<[u64; 2 * PAGE_SIZE], _>::init(init_zeroed(), vm, GFP_KERNEL).unwrap();
    assert!(t.iter().all(|&x| x == 0));
    let p = VBox::<[u64; 512], _>::pin_init(init_zeroed(), vm, GFP_KERNEL).unwrap();
    assert_eq!(p[511], 0);
    assert!(k.is_vmalloc_addr((&*p as *const [u64; 512]).cast()));
}

/// Two pages' alignment: more than a page-aligned vmalloc area gives.
#[repr(align(8192))]
#[derive(Clone, Copy, PartialEq, Debug)]
struct TwoPageAligned([u8; 64]);

/// One page's alignment.
#[repr(align(4096))]
struct PageAligned([u8; 64]);

#[test]
fn alignments_above_a_page_are_honoured_and_kept_when_growing() {
    let s = sim(1);
    let k = boot(&s);
    let _cpu = s.bind(0);
    let (vm, kv) = (Vmalloc::new(&k), KVmalloc::new(&k));
    let used = vmalloc_used(&k);
    let a = VBox::new(TwoPageAligned([1; 64]), vm, GFP_KERNEL).unwrap();
    let b = KVBox::new(TwoPageAligned([2; 64]), kv, GFP_KERNEL).unwrap();
    for p in [&*a as *const TwoPageAligned, &*b as *const TwoPageAligned] {
        assert_eq!(p.addr() % (2 * PAGE_SIZE), 0);
    }
    assert!(k.is_vmalloc_addr((&*a as *const TwoPageAligned).cast()));
    assert_eq!((a.0[63], b.0[63]), (1, 2));
    // Growing moves the block and keeps both the contents and the
    // alignment, for vmalloc and kvmalloc alike.
    let mut v: VVec<'_, TwoPageAligned, _> = VVec::new(vm);
    let mut w: KVVec<'_, TwoPageAligned, _> = KVVec::new(kv);
    for i in 0..8u8 {
        v.push(TwoPageAligned([i; 64]), GFP_KERNEL).unwrap();
        w.push(TwoPageAligned([i; 64]), GFP_KERNEL).unwrap();
        assert_eq!(v.as_ptr().addr() % (2 * PAGE_SIZE), 0);
        assert_eq!(w.as_ptr().addr() % (2 * PAGE_SIZE), 0);
    }
    assert!(v
        .iter()
        .chain(w.iter())
        .enumerate()
        .all(|(i, x)| x.0 == [(i % 8) as u8; 64]));
    // A page's alignment holds, from either allocator.
    let c = VBox::new(PageAligned([3; 64]), vm, GFP_KERNEL).unwrap();
    let d = KVBox::new(PageAligned([4; 64]), kv, GFP_KERNEL).unwrap();
    for p in [&*c as *const PageAligned, &*d as *const PageAligned] {
        assert_eq!(p.addr() % PAGE_SIZE, 0);
    }
    assert_eq!((c.0[63], d.0[63]), (3, 4));
    drop((a, b, c, d, v, w));
    assert_eq!(vmalloc_used(&k), used);
    assert_no_warnings(&s);
}
