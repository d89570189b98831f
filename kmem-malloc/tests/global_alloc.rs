//! kmem as this test program's own `#[global_allocator]`: the test
//! harness, std's collections and threads all allocate from it.

use kmem_malloc::KmemMalloc;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: KmemMalloc = KmemMalloc;

#[test]
fn collections_run_on_kmem() {
    let mut m: HashMap<String, Vec<u64>> = HashMap::new();
    for i in 0..50_000u64 {
        m.entry(format!("k{}", i % 997)).or_default().push(i);
    }
    let total: u64 = m.values().flatten().sum();
    assert_eq!(total, (0..50_000u64).sum::<u64>());
    let b: BTreeMap<u64, String> = (0..10_000).map(|i| (i, i.to_string())).collect();
    assert_eq!(b[&9999], "9999");
    // The machine that served them is kmem's.
    let k = kmem_malloc::machine();
    assert!(k.platform().current_slot().is_some());
    let v = vec![7u8; 10 << 20];
    assert!(v.iter().all(|&b| b == 7));
    let p = v.as_ptr();
    assert!(
        !k.platform().in_direct_map(p as usize),
        "10 MiB is a large block"
    );
    let s = String::from("small");
    assert!(k.platform().in_direct_map(s.as_ptr() as usize));
}

#[test]
fn over_aligned_layouts() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    #[repr(align(64))]
    struct Line([u8; 24]);
    let pages: Vec<Box<Page>> = (0..64).map(|_| Box::new(Page([1; 4096]))).collect();
    assert!(pages
        .iter()
        .all(|p| p.as_ref() as *const Page as usize % 4096 == 0));
    assert!(pages.iter().all(|p| p.0[4095] == 1));
    let lines: Vec<Box<Line>> = (0..1000).map(|_| Box::new(Line([2; 24]))).collect();
    assert!(lines
        .iter()
        .all(|l| l.as_ref() as *const Line as usize % 64 == 0));
    let mut grow: Vec<Line> = Vec::new();
    for _ in 0..5000 {
        grow.push(Line([3; 24]));
    }
    assert_eq!(grow.as_ptr() as usize % 64, 0);
    assert!(grow.iter().all(|l| l.0 == [3; 24]));
}

#[test]
fn objects_freed_on_another_thread() {
    let (tx, rx) = mpsc::sync_channel::<Vec<u32>>(64);
    let producer = std::thread::spawn(move || {
        for i in 0..20_000u32 {
            tx.send(vec![i; 1 + (i as usize % 300)]).unwrap();
        }
    });
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        for v in rx {
            assert!(v.iter().all(|&x| x == v[0]));
            sum += v[0] as u64;
        }
        sum
    });
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), (0..20_000u64).sum::<u64>());
}

/// The two slot tests do not run at once: the second takes every slot.
static SLOTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn exiting_threads_give_their_slots_back() {
    let _one = SLOTS.lock().unwrap();
    let k = kmem_malloc::machine();
    // Far more threads, one after another, than there are slots: each takes
    // an exclusive slot and gives it back at exit, so the next finds one.
    for i in 0..(k.nr_cpus() * 4) {
        let exclusive = std::thread::spawn(move || {
            let v: Vec<usize> = (0..100 + i).collect();
            assert_eq!(v.len(), 100 + i);
            let p = kmem_malloc::machine().platform();
            p.current_slot().unwrap() < p.exclusive_slots()
        })
        .join()
        .unwrap();
        assert!(exclusive, "thread {i} found no exclusive slot");
    }
}

#[test]
fn more_threads_than_slots_share_the_rest() {
    let _one = SLOTS.lock().unwrap();
    let k = kmem_malloc::machine();
    let n = k.platform().exclusive_slots() + 8;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                let mut keep = Vec::new();
                b.wait();
                for j in 0..2000 {
                    keep.push(vec![i as u8; 1 + (j % 700)]);
                    if keep.len() > 50 {
                        keep.swap_remove(j % 50);
                    }
                }
                let p = kmem_malloc::machine().platform();
                let shared = p.current_slot().unwrap() >= p.exclusive_slots();
                (keep.iter().all(|v| v.iter().all(|&x| x == i as u8)), shared)
            })
        })
        .collect();
    let results: Vec<(bool, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        results.iter().all(|r| r.0),
        "every thread read its own bytes"
    );
    assert!(
        results.iter().any(|r| r.1),
        "some threads used shared slots"
    );
}
