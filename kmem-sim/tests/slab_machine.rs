//! Slab caches on a simulated 2-CPU machine: objects allocated on one CPU
//! and freed on the other, in parallel.

use kmem::gfp::GFP_KERNEL;
use kmem::slab::SlabFlags;
use kmem::{BootParams, Kmem};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::sync::mpsc;

#[test]
fn objects_freed_on_another_cpu_in_parallel() {
    let s = SimPlatform::new(SimConfig::new(2, pc_memory_map(256 << 20))).unwrap();
    let k = {
        let _cpu = s.bind(0);
        Kmem::boot(&s, s.memory_map(), &BootParams::default()).unwrap()
    };
    let c = {
        let _cpu = s.bind(0);
        k.kmem_cache_create("xcpu", 72, 0, SlabFlags::NONE, None)
            .unwrap()
    };
    let rounds = 200_000usize;
    let (tx0, rx1) = mpsc::sync_channel::<usize>(4096);
    let (tx1, rx0) = mpsc::sync_channel::<usize>(4096);
    let chans = std::sync::Mutex::new((Some((tx0, rx0)), Some((tx1, rx1))));
    s.run_on_cpus(|cpu| {
        let (tx, rx) = {
            let mut g = chans.lock().unwrap();
            if cpu == 0 { g.0.take() } else { g.1.take() }.unwrap()
        };
        // Each CPU allocates, stamps, and sends to the other, which checks
        // the stamp and frees: every object is freed on the other CPU.
        for i in 0..rounds {
            let o = k.kmem_cache_alloc(c, GFP_KERNEL).unwrap();
            // SAFETY: a fresh 72-byte object.
            unsafe { (o.as_ptr() as *mut u64).write(i as u64 ^ cpu as u64) };
            tx.send(o.as_ptr() as usize).unwrap();
            while let Ok(p) = rx.try_recv() {
                // SAFETY: the other CPU's object, handed over to us once.
                unsafe { k.kmem_cache_free(c, p as *mut u8) }.unwrap();
            }
        }
        drop(tx);
        for p in rx {
            // SAFETY: as above.
            unsafe { k.kmem_cache_free(c, p as *mut u8) }.unwrap();
        }
    });
    // Every object is back: one shrink (which flushes CPU 1's sheaves
    // through a cross-CPU call) empties the cache.
    let _cpu = s.bind(0);
    k.kmem_cache_shrink(c);
    assert_eq!(
        k.slab_totals(c).0,
        0,
        "no slab left: no object lost or duplicated"
    );
    assert!(s.reports().iter().all(|(_, l)| !l.contains("BUG")));
    // SAFETY: nothing of `c` is live.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
}

#[test]
fn two_nodes_alloc_node_and_remote_frees() {
    let s = SimPlatform::new(SimConfig::new(2, kmem_sim::pc_memory_map_numa(1 << 30, 2))).unwrap();
    let _cpu = s.bind(0);
    let k = Kmem::boot(&s, s.memory_map(), &BootParams::default()).unwrap();
    let c = k
        .kmem_cache_create("numa_obj", 128, 0, SlabFlags::NONE, None)
        .unwrap();
    let node_of = |p: *mut u8| k.virt_to_page(p).map(|pg| pg.nid());
    let local: Vec<_> = (0..100)
        .map(|_| k.kmem_cache_alloc(c, GFP_KERNEL).unwrap().as_ptr())
        .collect();
    let remote: Vec<_> = (0..100)
        .map(|_| k.kmem_cache_alloc_node(c, GFP_KERNEL, 1).unwrap().as_ptr())
        .collect();
    assert!(local.iter().all(|&p| node_of(p) == Some(0)));
    assert!(
        remote.iter().all(|&p| node_of(p) == Some(1)),
        "alloc_node(1) gives node 1 objects"
    );
    for p in local.into_iter().chain(remote) {
        // SAFETY: each object freed once; node 1's go back to their slabs directly.
        unsafe { k.kmem_cache_free(c, p) }.unwrap();
    }
    k.kmem_cache_shrink(c);
    assert_eq!(k.slab_totals(c).0, 0);
    // SAFETY: nothing of `c` is live.
    unsafe { k.kmem_cache_destroy(c) }.unwrap();
}
