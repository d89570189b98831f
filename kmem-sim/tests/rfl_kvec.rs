//! Rust-for-Linux's examples of `VVec` and `KVVec` (`rust/kernel/alloc/
//! kvec.rs`), re-expressed on a simulated machine, which has the page
//! tables vmalloc needs: the same steps, with the machine booted and the
//! `Vmalloc`/`KVmalloc` handle passed where Rust-for-Linux names the
//! allocator by its type. Each test also checks where the memory is and
//! that dropping gives every vmalloc page back.

use kmem::alloc::flags::GFP_KERNEL;
use kmem::alloc::{KVVec, KVmalloc, VVec, Vmalloc};
use kmem::kmalloc::KMALLOC_MAX_SIZE;
use kmem::{BootParams, Kmem, PAGE_SIZE};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};

fn sim() -> SimPlatform {
    SimPlatform::new(SimConfig::new(1, pc_memory_map(64 << 20))).expect("machine")
}

fn boot(s: &SimPlatform) -> Kmem<&SimPlatform> {
    let _cpu = s.bind(0);
    Kmem::boot(s, s.memory_map(), &BootParams::default()).expect("boot")
}

/// Pages vmalloc holds (`VmallocUsed`).
fn vmalloc_used(k: &Kmem<&SimPlatform>) -> usize {
    k.vmalloc_info().used_pages
}

/// The `VVec<T>` alias example: a vector in vmalloc memory.
#[test]
fn vvec_alias_example() -> Result<(), kmem::Error> {
    let s = sim();
    let k = boot(&s);
    let _cpu = s.bind(0);
    let used = vmalloc_used(&k);

    let mut v = VVec::new(Vmalloc::new(&k));
    v.push(1, GFP_KERNEL)?;
    assert_eq!(&v, &[1]);

    assert!(k.is_vmalloc_addr(v.as_ptr().cast()));
    assert_eq!(vmalloc_used(&k), used + 1);
    drop(v);
    assert_eq!(vmalloc_used(&k), used);
    Ok(())
}

/// The `KVVec<T>` alias example: small, so kmalloc serves it.
#[test]
fn kvvec_alias_example() -> Result<(), kmem::Error> {
    let s = sim();
    let k = boot(&s);
    let _cpu = s.bind(0);

    let mut v = KVVec::new(KVmalloc::new(&k));
    v.push(1, GFP_KERNEL)?;
    assert_eq!(&v, &[1]);

    assert!(!k.is_vmalloc_addr(v.as_ptr().cast()));
    Ok(())
}

/// The `KVVec::shrink_to` example: a buffer of several pages shrunk to
/// what two elements need.
#[test]
fn kvvec_shrink_to_example() -> Result<(), kmem::Error> {
    let s = sim();
    let k = boot(&s);
    let _cpu = s.bind(0);

    // Enough capacity to span several pages.
    let elements_per_page = PAGE_SIZE / core::mem::size_of::<u32>();
    let mut v = KVVec::with_capacity(elements_per_page * 4, KVmalloc::new(&k), GFP_KERNEL)?;
    v.push(1, GFP_KERNEL)?;
    v.push(2, GFP_KERNEL)?;

    v.shrink_to(0, GFP_KERNEL)?;

    assert_eq!((v.capacity(), &v[..]), (2, &[1, 2][..]));
    Ok(())
}

/// `shrink_to` on a `KVVec` whose buffer kmalloc could not serve, so it is
/// vmalloc memory: once fewer pages suffice the elements move (to kmalloc
/// memory here, small enough for it) and every vmalloc page is freed;
/// while the same pages are needed the buffer stays.
#[test]
fn kvvec_shrink_to_gives_vmalloc_pages_back() -> Result<(), kmem::Error> {
    let s = sim();
    let k = boot(&s);
    let _cpu = s.bind(0);
    let used = vmalloc_used(&k);

    let cap = KMALLOC_MAX_SIZE / 4 + PAGE_SIZE;
    let mut v: KVVec<'_, u32, _> = KVVec::with_capacity(cap, KVmalloc::new(&k), GFP_KERNEL)?;
    v.extend_from_slice(&[1, 2, 3], GFP_KERNEL)?;
    assert!(k.is_vmalloc_addr(v.as_ptr().cast()));
    // kvmalloc allows huge mappings, as Linux's does: the area is rounded
    // up to whole 2 MiB blocks.
    let vm = k.find_vm_area(v.as_ptr().cast()).expect("a vmalloc area");
    assert!(vm.nr_pages() >= (cap * 4).div_ceil(PAGE_SIZE));
    let held = vmalloc_used(&k);
    assert!(held >= used + vm.nr_pages());

    // One element less than the pages hold: nothing to give back.
    let p = v.as_ptr();
    v.shrink_to(cap - 1, GFP_KERNEL)?;
    assert_eq!((v.as_ptr(), vmalloc_used(&k)), (p, held));

    v.shrink_to(0, GFP_KERNEL)?;
    assert_eq!((v.capacity(), &v[..]), (3, &[1, 2, 3][..]));
    assert!(!k.is_vmalloc_addr(v.as_ptr().cast()));
    assert_eq!(vmalloc_used(&k), used);
    Ok(())
}

/// The other `Vec` examples, on a `VVec`: the vector's behaviour does not
/// depend on where its buffer is.
#[test]
fn vvec_method_examples() -> Result<(), kmem::Error> {
    let s = sim();
    let k = boot(&s);
    let _cpu = s.bind(0);
    let a = Vmalloc::new(&k);
    let used = vmalloc_used(&k);
    {
        let mut v = kmem::kvec![in a; 1, 2, 3]?;
        v.reserve(1, GFP_KERNEL)?;
        let (ptr, mut len, cap) = v.into_raw_parts();
        // SAFETY: `reserve` made room for a fourth element.
        unsafe { ptr.add(len).write(4) };
        len += 1;
        // SAFETY: the parts `into_raw_parts` gave, with one more element.
        let v = unsafe { VVec::from_raw_parts(ptr, len, cap, a) };
        assert_eq!(v, [1, 2, 3, 4]);

        let mut v = kmem::kvec![in a; 0, 1, 2, 3]?;
        for (i, j) in v.drain_all().enumerate() {
            assert_eq!(i, j);
        }
        assert!(v.capacity() >= 4);

        let v = kmem::kvec![in a; 1, 2, 3]?;
        let mut it = v.into_iter();
        assert_eq!(it.next(), Some(1));
        let v = it.collect(GFP_KERNEL);
        assert_eq!(v, [2, 3]);
        assert!(k.is_vmalloc_addr(v.as_ptr().cast()));

        let mut v = kmem::kvec![in a; 1, 2, 3, 4]?;
        v.retain(|i| *i % 2 == 0);
        assert_eq!(v, [2, 4]);

        let v = VVec::from_elem(0u8, 3 * PAGE_SIZE, a, GFP_KERNEL)?;
        assert!(v.iter().all(|&b| b == 0) && v.len() == 3 * PAGE_SIZE);
    }
    assert_eq!(vmalloc_used(&k), used);
    Ok(())
}
