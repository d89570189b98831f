//! What the targets that boot an arena machine share.

use kmem::arena::ArenaPlatform;
use kmem::slab::KmemCache;
use kmem::Kmem;

/// Give everything cached back to the page allocator (every cache shrunk,
/// every CPU's page list drained), check the zones' counters against their
/// lists, and return the free pages: what `kmem/tests/properties.rs` calls
/// settling. Run right after boot and at the end of a sequence, the two
/// numbers must be equal when everything taken was given back.
pub fn settle(k: &Kmem<ArenaPlatform<'_>>) -> u64 {
    let mut caches: Vec<*const KmemCache> = Vec::new();
    k.for_each_cache(|s| caches.push(s));
    for s in caches {
        // SAFETY: a cache on the list stays alive until it is destroyed,
        // and nothing destroys one while this runs (one thread).
        k.kmem_cache_shrink(unsafe { &*s });
    }
    k.drain_all_pages();
    for cpu in 0..k.nr_cpus() {
        k.platform().set_cpu(cpu);
        k.drain_local_pages();
    }
    k.platform().set_cpu(0);
    let listed = k
        .check_free_counts()
        .expect("free counters match the lists");
    assert_eq!(listed, k.nr_free_pages());
    listed
}

/// The kept report lines, for a failed assertion's message.
pub fn reports(k: &Kmem<ArenaPlatform<'_>>) -> String {
    let mut s = String::new();
    k.platform().for_each_report(|_, l| {
        s.push_str(l);
        s.push('\n');
    });
    s
}
