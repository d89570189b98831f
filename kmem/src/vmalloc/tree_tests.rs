//! Tests of the vmap_area tree (`tree.rs`): hand cases and a proptest
//! against a naive model, small enough for Miri.
use super::*;
use proptest::prelude::*;
use proptest::{sample::Index, test_runner::Config};
use std::{boxed::Box, vec, vec::Vec};

const PAGE: usize = crate::PAGE_SIZE;
const BASE: usize = 0x10_0000;
const N: usize = if cfg!(miri) { 40 } else { 500 };

/// Heap nodes reached only through raw pointers (no `Box` retags for
/// Miri to object to), freed when the test ends.
struct Nodes(Vec<NonNull<VmapArea>>);

impl Nodes {
    fn alloc(&mut self, (start, end): (usize, usize)) -> NonNull<VmapArea> {
        let p = NonNull::new(Box::into_raw(Box::new(VmapArea::new(start, end)))).unwrap();
        self.0.push(p);
        p
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            // SAFETY: from `Box::into_raw` in `alloc`, freed once.
            drop(unsafe { Box::from_raw(p.as_ptr()) });
        }
    }
}

fn range(p: NonNull<VmapArea>) -> (usize, usize) {
    // SAFETY: test nodes live until `Nodes` drops.
    unsafe { ((*p.as_ptr()).va_start, (*p.as_ptr()).va_end) }
}

/// Edits a node's range in place (the caller then `update_augment`s).
fn set_range(p: NonNull<VmapArea>, (start, end): (usize, usize)) {
    // SAFETY: as in `range`.
    unsafe { ((*p.as_ptr()).va_start, (*p.as_ptr()).va_end) = (start, end) };
}

/// `find_lowest_match`, checking the path it records: the root, then each
/// node a child of the one before, down to the node found.
fn lowest_in(
    t: &AreaTree,
    size: usize,
    align: usize,
    vstart: usize,
    adjust: bool,
) -> Option<NonNull<VmapArea>> {
    let mut path = Path::new();
    let found = t.find_lowest_match(size, align, vstart, adjust, &mut path);
    if let Some(n) = found {
        check_path(t, &path, n);
    }
    found
}

/// `path` runs from `t`'s root down to `n` through parent links.
fn check_path(t: &AreaTree, path: &Path, n: NonNull<VmapArea>) {
    let nodes = path.nodes();
    assert_eq!(
        (nodes.first(), nodes.last()),
        (Some(&t.root), Some(&n.as_ptr()))
    );
    // SAFETY: the path's nodes are in `t`, which nothing modifies.
    assert!(nodes.windows(2).all(|w| unsafe { (*w[1]).parent } == w[0]));
}

/// The ranges in address order, by `first` and `next` or, backwards, by
/// `last` and `prev`.
fn walk(t: &AreaTree, backwards: bool) -> Vec<(usize, usize)> {
    let step = if backwards {
        AreaTree::prev
    } else {
        AreaTree::next
    };
    let (mut v, mut cur) = (Vec::new(), if backwards { t.last() } else { t.first() });
    while let Some(p) = cur {
        v.push(range(p));
        // SAFETY: `p` is in `t`, which nothing modifies meanwhile.
        cur = unsafe { step(p) };
    }
    if backwards {
        v.reverse();
    }
    v
}

/// Test area `i`: 1 to 3 pages in a 4-page slot, so none touch.
fn area(i: usize) -> (usize, usize) {
    let start = BASE + i * 4 * PAGE;
    (start, start + (1 + i % 3) * PAGE)
}

/// A tree of areas `0..N` inserted in a scrambled order (stride 37,
/// coprime with `N`), checked after each insert; and the nodes by index.
fn build(nodes: &mut Nodes, augmented: bool) -> (AreaTree, Vec<NonNull<VmapArea>>) {
    let mut t = AreaTree::new(augmented);
    let by: Vec<_> = (0..N).map(|i| nodes.alloc(area(i))).collect();
    for k in 0..N {
        // SAFETY: fresh nodes with disjoint ranges, owned by `t` now.
        unsafe { t.insert(by[(k * 37) % N]) };
        t.check().unwrap();
    }
    (t, by)
}

#[test]
fn insert_find_iterate_remove() {
    for augmented in [false, true] {
        let mut nodes = Nodes(Vec::new());
        let (mut t, by) = build(&mut nodes, augmented);
        let want: Vec<_> = (0..N).map(area).collect();
        assert!(walk(&t, false) == want && walk(&t, true) == want);
        assert_eq!(
            (t.len(), t.first(), t.last()),
            (N, Some(by[0]), Some(by[N - 1]))
        );
        for (i, &p) in by.iter().enumerate() {
            let (s, e) = area(i);
            assert_eq!((t.find(s), t.find(e - 1)), (Some(p), Some(p)));
            assert_eq!((t.find(e), t.find(s - 1)), (None, None), "gaps");
            assert_eq!((t.find_le(s), t.find_le(e)), (Some(p), Some(p)));
            assert_eq!(t.find_le(s - 1), i.checked_sub(1).map(|j| by[j]));
        }
        assert!(t.find(0).is_none() && t.find_le(0).is_none());
        // Removing the root each time takes the two-children path at
        // every depth; removed nodes come back with clear links.
        let mut removed = 0;
        while let Some(root) = NonNull::new(t.root) {
            // SAFETY: the root is in `t`.
            unsafe { t.remove(root) };
            t.check().unwrap();
            assert_eq!((t.len(), t.find(range(root).0)), (N - 1 - removed, None));
            // SAFETY: `root` is out of the tree, ours to read.
            let q = unsafe { &*root.as_ptr() };
            let links = [q.left, q.right, q.parent].map(|l| l.is_null());
            assert!(links == [true; 3] && q.height == 0 && q.subtree_max_size == 0);
            removed += 1;
        }
        assert!(t.is_empty() && t.first().is_none() && t.last().is_none());
    }
}

#[test]
fn update_augment_after_shrink_and_merge() {
    let mut nodes = Nodes(Vec::new());
    let (mut t, by) = build(&mut nodes, true);
    // Areas 0, 1 and 2 take 1, 2 and 3 pages. Grow area 1 (inside its
    // slot) to 3 pages, then shrink it from the left and from the right.
    let (p, s) = (by[1], area(1).0);
    for ((from, to), want) in [((0, 3), 1), ((1, 3), 2), ((1, 2), 2)] {
        set_range(p, (s + from * PAGE, s + to * PAGE));
        // SAFETY: `p` is in `t`, edited without crossing a neighbour.
        unsafe { t.update_augment(p) };
        t.check().unwrap();
        let fit = lowest_in(&t, 3 * PAGE, PAGE, 0, false);
        assert_eq!((fit, t.find(s + PAGE)), (Some(by[want]), Some(p)));
    }
    // Merge, as a free does: remove the upper neighbour, then grow the
    // lower area over the gap and the neighbour's range.
    let lo = by[N / 3];
    // SAFETY: `lo` is in `t`, unmodified meanwhile; then so is `hi`.
    let hi = unsafe { AreaTree::next(lo) }.unwrap();
    // SAFETY: `hi` is in `t`.
    unsafe { t.remove(hi) };
    let merged = (range(lo).0, range(hi).1);
    set_range(lo, merged);
    // SAFETY: `lo` is in `t` and grew over free space only.
    unsafe { t.update_augment(lo) };
    t.check().unwrap();
    let fit = lowest_in(&t, merged.1 - merged.0, PAGE, 0, false);
    assert_eq!((t.find(range(hi).0), fit), (Some(lo), Some(lo)));
    // `check` notices an augment left stale.
    set_range(lo, (merged.0 + PAGE, merged.1));
    assert_eq!(t.check(), Err("wrong subtree_max_size"));
}

#[test]
fn lowest_match_alignment_and_vstart() {
    let (mut nodes, mut t) = (Nodes(Vec::new()), AreaTree::new(true));
    // A 16-page root with a 2-page, 8 KiB-aligned left child.
    let big = nodes.alloc((0x10000, 0x20000));
    let small = nodes.alloc((0x2000, 0x4000));
    // SAFETY: fresh nodes, disjoint ranges.
    unsafe { (t.insert(big), t.insert(small)) };
    t.check().unwrap();
    let lowest = |size, align, vstart, adjust| lowest_in(&t, size, align, vstart, adjust);
    // Linux's subtlety: with the search length adjusted to size + align
    // - 1, the left subtree (largest 0x2000) is pruned although the small
    // area fits exactly; the exact search finds it. Page alignment is no
    // different, which is why Linux adjusts only for align > PAGE_SIZE.
    for align in [PAGE, 0x2000] {
        assert_eq!(lowest(0x2000, align, 0, true), Some(big));
        assert_eq!(lowest(0x2000, align, 0, false), Some(small));
    }
    // The area stood on is tried whatever its size: the root fits.
    assert_eq!(lowest(0x10000, 0x10000, 0, true), Some(big));
    // vstart: too little left of the small area, enough for a page; at
    // the big area's middle, its upper half and no more.
    assert_eq!(lowest(0x2000, PAGE, 0x3000, false), Some(big));
    assert_eq!(lowest(0x1000, PAGE, 0x3000, false), Some(small));
    assert_eq!(lowest(0x8000, PAGE, 0x18000, false), Some(big));
    assert_eq!(lowest(0x8000, PAGE, 0x18001, false), None);
    assert_eq!(lowest(0x8000, 0x10000, 0x11000, false), None);
    // Overflow in the size, the alignment or vstart fails cleanly.
    let top = 1 << (usize::BITS - 1);
    for adjust in [false, true] {
        assert_eq!(lowest(usize::MAX, PAGE, 0, adjust), None);
        assert_eq!(lowest(usize::MAX - PAGE, top, 0, adjust), None);
        assert_eq!(lowest(PAGE, top, 0x11000, adjust), None);
        assert_eq!(lowest(PAGE, PAGE, usize::MAX, adjust), None);
    }
}

/// Linux's loop shape, written from its behaviour for comparison: it
/// climbs every parent and moves `vstart` just past an ancestor before
/// entering that ancestor's right subtree.
fn linux_shape(t: &AreaTree, q: (usize, usize, usize), adjust: bool) -> Option<NonNull<VmapArea>> {
    let (size, align, mut vstart) = q;
    let (length, mut n) = (if adjust { size + align - 1 } else { size }, t.root);
    // SAFETY: the tree's nodes are valid; nothing modifies them.
    unsafe {
        'descend: while !n.is_null() {
            if max_size((*n).left) >= length && vstart < (*n).va_start {
                n = (*n).left;
            } else if fits(n, size, align, vstart) {
                return NonNull::new(n);
            } else if max_size((*n).right) >= length {
                n = (*n).right;
            } else {
                loop {
                    n = (*n).parent;
                    if n.is_null() {
                        return None;
                    } else if fits(n, size, align, vstart) {
                        return NonNull::new(n);
                    } else if max_size((*n).right) >= length && vstart <= (*n).va_start {
                        (vstart, n) = ((*n).va_start + 1, (*n).right);
                        continue 'descend;
                    }
                }
            }
        }
    }
    None
}

/// Checks `t`, then every lookup against a naive scan of `ranges`
/// (sorted) and `find_lowest_match` against `linux_shape` too.
fn compare(t: &AreaTree, ranges: &[(usize, usize)], qs: &[(usize, u32, usize)]) {
    t.check().unwrap();
    assert!(walk(t, false) == ranges && walk(t, true) == ranges);
    // The lowest fit among areas of at least `min` bytes.
    let naive = |size, align, vstart, min| {
        let ok =
            |r: &(usize, usize)| r.1 - r.0 >= min && fit_start(*r, size, align, vstart).is_some();
        ranges.iter().copied().find(ok)
    };
    for &(pages, shift, vstart) in qs {
        let (size, align) = (pages * PAGE, 1usize << shift);
        // The exact search gives the lowest fit.
        let exact = lowest_in(t, size, align, vstart, false);
        assert_eq!(exact.map(range), naive(size, align, vstart, 0));
        assert_eq!(exact, linux_shape(t, (size, align, vstart), false));
        // The adjusted one gives Linux's node: a real fit, and the
        // lowest among areas of at least `length` bytes.
        let adjusted = lowest_in(t, size, align, vstart, true);
        assert_eq!(adjusted, linux_shape(t, (size, align, vstart), true));
        let big = naive(size, align, vstart, size + align - 1);
        match adjusted.map(range) {
            Some(r) => {
                assert!(fit_start(r, size, align, vstart).is_some());
                assert!(big.is_none_or(|b| b >= r) && exact.is_some_and(|x| range(x) <= r));
            }
            None => assert_eq!(big, None),
        }
        for addr in [vstart, vstart.wrapping_sub(1), vstart | (PAGE - 1)] {
            let want = ranges.iter().copied().find(|&(s, e)| s <= addr && addr < e);
            let le = ranges.iter().copied().rfind(|&(s, _)| s <= addr);
            assert!(t.find(addr).map(range) == want && t.find_le(addr).map(range) == le);
            // Both neighbours from one descent, as find_le and next give them.
            let mut path = Path::new();
            let (lo, hi) = t.find_neighbours(addr, &mut path);
            let at = |i: Option<usize>| i.and_then(|i| AreaTree::path_node(&path, i));
            let gt = ranges.iter().copied().find(|&(s, _)| s > addr);
            assert_eq!((at(lo).map(range), at(hi).map(range)), (le, gt));
            for n in [at(lo), at(hi)].into_iter().flatten() {
                let depth = [lo, hi]
                    .into_iter()
                    .flatten()
                    .find(|&i| at(Some(i)) == Some(n));
                let mut prefix = Path::new();
                prefix.nodes = path.nodes;
                prefix.len = depth.unwrap() + 1;
                check_path(t, &prefix, n);
            }
        }
    }
}

/// `native` cases, or `miri` under Miri, where the file system proptest
/// saves failures in is isolated.
fn cases(miri: u32, native: u32) -> Config {
    if cfg!(miri) {
        Config {
            failure_persistence: None,
            ..Config::with_cases(miri)
        }
    } else {
        Config::with_cases(native)
    }
}

proptest! {
    #![proptest_config(cases(4, 256))]

    /// Random page-aligned free areas (gap, length in pages) inserted in
    /// a random order, then random edits: remove, shrink from the left or
    /// the right, merge with the next area, reinsert a removed area where
    /// still free; the tree is checked and queried after each.
    #[test]
    fn lowest_match_and_find_against_naive(
        layout in prop::collection::vec(
            (0..6usize, 1..24usize), 1..if cfg!(miri) { 40 } else { 160 }),
        base_pages in 0..64usize,
        keys in prop::collection::vec(any::<u32>(), 160),
        ops in prop::collection::vec(
            (0..7u8, any::<Index>(), 1..4usize), 0..if cfg!(miri) { 10 } else { 40 }),
        qs in prop::collection::vec((1..20usize, 12..21u32, 0..BASE + 0x40_0000), 1..8),
    ) {
        let (mut nodes, mut t) = (Nodes(Vec::new()), AreaTree::new(true));
        let mut addr = BASE + base_pages * PAGE;
        for &(gap, len) in &layout {
            nodes.alloc((addr + gap * PAGE, addr + (gap + len) * PAGE));
            addr += (gap + len) * PAGE;
        }
        let all = nodes.0.clone();
        let mut present = vec![false; all.len()];
        // Insert in a random order: by random keys.
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        for i in order {
            // SAFETY: fresh nodes with disjoint ranges.
            unsafe { t.insert(all[i]) };
            present[i] = true;
            t.check().unwrap();
        }
        // In address order: after a merge and a shrink from the left, a
        // reinserted node may lie below one made before it.
        let ranges = |present: &[bool]| -> Vec<(usize, usize)> {
            let mut v: Vec<_> =
                (0..all.len()).filter(|&i| present[i]).map(|i| range(all[i])).collect();
            v.sort_unstable();
            v
        };
        compare(&t, &ranges(&present), &qs);
        for (kind, i, k) in ops {
            let (on, off): (Vec<usize>, Vec<usize>) = (0..all.len()).partition(|&j| present[j]);
            let pick = |v: &[usize]| (!v.is_empty()).then(|| v[i.index(v.len())]);
            match (kind, pick(&on), pick(&off)) {
                (0, Some(j), _) => {
                    if k % 2 == 0 {
                        // SAFETY: present nodes are in `t`.
                        unsafe { t.remove(all[j]) };
                    } else {
                        // Along the descent that finds it, as the busy
                        // tree's frees do.
                        let mut path = Path::new();
                        let found = t.find_path(range(all[j]).0, &mut path);
                        assert_eq!(found, Some(all[j]));
                        check_path(&t, &path, all[j]);
                        // SAFETY: `path` leads from the root to the node.
                        unsafe { t.remove_at(&mut path) };
                    }
                    present[j] = false;
                }
                (1 | 2, Some(j), _) if range(all[j]).1 - range(all[j]).0 > k * PAGE => {
                    let (s, e) = range(all[j]);
                    let r = if kind == 1 { (s + k * PAGE, e) } else { (s, e - k * PAGE) };
                    // A shrink from the left refreshes along the descent to
                    // the node (as an allocation does), one from the right
                    // through the parent links.
                    let mut path = Path::new();
                    let (le, _) = t.find_neighbours(s, &mut path);
                    path.truncate(le.unwrap() + 1);
                    set_range(all[j], r);
                    // SAFETY: `all[j]` is in `t`; shrinking keeps its place;
                    // the path leads to it and the tree's shape is unchanged.
                    unsafe {
                        if kind == 1 {
                            t.update_augment_path(&path);
                        } else {
                            t.update_augment(all[j]);
                        }
                    }
                }
                (3, Some(j), _) => {
                    // SAFETY: `all[j]` is in `t`, unmodified meanwhile.
                    if let Some(q) = unsafe { AreaTree::next(all[j]) } {
                        // SAFETY: `q` is in `t`.
                        unsafe { t.remove(q) };
                        present[all.iter().position(|&a| a == q).unwrap()] = false;
                        set_range(all[j], (range(all[j]).0, range(q).1));
                        // SAFETY: `all[j]` is in `t` and grew over free space.
                        unsafe { t.update_augment(all[j]) };
                    }
                }
                (5, Some(j), _) => {
                    // Grow an area down over the free space below it, as a
                    // free merges into its upper neighbour: the neighbour
                    // found by one descent and refreshed along it.
                    let (a, b) = range(all[j]);
                    let floor = on
                        .iter()
                        .map(|&l| range(all[l]).1)
                        .filter(|&end| end <= a)
                        .max()
                        .unwrap_or(BASE);
                    if a >= floor + k * PAGE {
                        let s = a - k * PAGE;
                        let mut path = Path::new();
                        let (_, gt) = t.find_neighbours(s, &mut path);
                        let gt = gt.unwrap();
                        assert_eq!(AreaTree::path_node(&path, gt), Some(all[j]));
                        path.truncate(gt + 1);
                        set_range(all[j], (s, b));
                        // SAFETY: `all[j]` is in `t` and only grew, over
                        // free space; the path leads to it, the shape
                        // unchanged.
                        unsafe { t.update_augment_path_grown(&path) };
                    }
                }
                (6, Some(j), _) => {
                    // Grow an area up over the free space above it, as a
                    // free merges into its lower neighbour: the neighbour
                    // found by one descent and refreshed along it.
                    let (a, b) = range(all[j]);
                    let ceiling = on
                        .iter()
                        .map(|&l| range(all[l]).0)
                        .filter(|&start| start >= b)
                        .min()
                        .unwrap_or(usize::MAX);
                    if ceiling >= b + k * PAGE {
                        let mut path = Path::new();
                        let (le, _) = t.find_neighbours(b, &mut path);
                        let le = le.unwrap();
                        assert_eq!(AreaTree::path_node(&path, le), Some(all[j]));
                        path.truncate(le + 1);
                        set_range(all[j], (a, b + k * PAGE));
                        // SAFETY: `all[j]` is in `t` and only grew, over
                        // free space; the path leads to it, the shape
                        // unchanged.
                        unsafe { t.update_augment_path_grown(&path) };
                    }
                }
                (4, _, Some(j)) => {
                    let (s, e) = range(all[j]);
                    if on.iter().all(|&l| e <= range(all[l]).0 || s >= range(all[l]).1) {
                        // SAFETY: a removed node whose range is free.
                        unsafe { t.insert(all[j]) };
                        present[j] = true;
                    }
                }
                _ => {}
            }
            compare(&t, &ranges(&present), &qs);
        }
    }
}

proptest! {
    #![proptest_config(cases(16, 2048))]

    /// `fit_start` rounds with a mask; a division (`next_multiple_of`)
    /// gives the same start, and the same refusals on overflow, for every
    /// power-of-two alignment, near zero and near the top of the space.
    #[test]
    fn fit_start_agrees_with_a_division(
        s in prop_oneof![0..1usize << 40, usize::MAX - (1 << 20)..=usize::MAX],
        len in 0..1usize << 40,
        size in prop_oneof![0..1usize << 30, usize::MAX - (1 << 20)..=usize::MAX],
        shift in 0..usize::BITS,
        vstart in prop_oneof![0..1usize << 40, usize::MAX - (1 << 20)..=usize::MAX],
    ) {
        let align = 1usize << shift;
        let e = s.saturating_add(len);
        let by_division = s
            .max(vstart)
            .checked_next_multiple_of(align)
            .and_then(|n| (n.checked_add(size)? <= e).then_some(n));
        prop_assert_eq!(fit_start((s, e), size, align, vstart), by_division);
    }
}
