//! The vmap_area trees (`mm/vmalloc.c`'s `free_vmap_area_root` and the busy
//! trees): an intrusive AVL tree of [`VmapArea`] nodes keyed by `va_start`,
//! augmented with `subtree_max_size` in the free tree.
//!
//! *Intrusive*: links, height and augment live in the node, which the caller
//! allocates from the `vmap_area` slab cache, so the tree never allocates.
//! Ranges in a tree never overlap, so one descent finds the area holding an
//! address ([`AreaTree::find`], Linux's `__find_vmap_area()`) or the last
//! one starting at or below it ([`AreaTree::find_le`]), and one descent
//! finds a freed range's neighbours for merging
//! ([`AreaTree::find_neighbours`], where Linux follows
//! `free_vmap_area_list`); [`AreaTree::next`] and [`AreaTree::prev`] walk
//! the areas in address order.
//!
//! *Augmented* as Linux's free tree is: each node caches the largest size in
//! its subtree, so [`AreaTree::find_lowest_match`] (Linux's
//! `find_vmap_lowest_match()`) skips subtrees too small for the request and
//! finds the lowest-address fit in O(log n); after an area is trimmed or
//! grown in place, [`AreaTree::update_augment`] (Linux's
//! `augment_tree_propagate_from()`) refreshes the cache towards the root.
//! Where the edit follows a descent (an allocation trims the node the
//! search found; a free grows a neighbour the same descent found), the
//! descent's [`Path`] gives the ancestors, so
//! [`AreaTree::update_augment_path`] walks up without loading parent links
//! one after another, and carries each new maximum in a register rather
//! than reading it back from the store just made; a merge, which only
//! grows a node, needs no sibling at all
//! ([`AreaTree::update_augment_path_grown`]). One descent gives both
//! neighbours of a freed range ([`AreaTree::find_neighbours`]), where
//! Linux follows the tree's links to the next area. Insertion and removal
//! rebalance back up their descent the same way ([`AreaTree::remove_at`]
//! takes the one [`AreaTree::find_path`] made to find the node), so no walk
//! up the tree waits on one parent link after another.
//! The busy trees answer lookups by address only and are not augmented.
//!
//! *AVL rather than red-black*: Linux's augmented rb-tree keeps the augment
//! through three callbacks (propagate, copy, rotate) run inside the generic
//! rebalancing. AVL has the same O(log n) lookup, insertion and removal, is
//! more tightly balanced (height under 1.45 log2 n, against 2 log2 n), and
//! rebalances in one bottom-up walk that recomputes each node's height and
//! `subtree_max_size` together from its children, rotations included: the
//! augment is right by construction, and [`AreaTree::check`] verifies it.
//!
//! *Safety*: [`AreaTree::insert`]'s caller promises the node stays valid and
//! is touched only through the tree until [`AreaTree::remove`]; given that,
//! the queries are safe. Nodes are accessed through raw pointers, never a
//! reference held across another node's update (Stacked Borrows-clean under
//! Miri). The tree has no lock: its owner serialises access, as
//! `free_vmap_area_lock` and `vn->busy.lock` do.

use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

/// `struct vmap_area`: one range of the vmalloc space, free or busy.
///
/// Invariants (while in a tree): `va_start < va_end`, both page aligned;
/// ranges in one tree never overlap; in an augmented tree
/// `subtree_max_size = max(va_end - va_start over the node and both subtrees)`.
#[repr(C)]
pub(crate) struct VmapArea {
    /// First address of the range.
    pub(crate) va_start: usize,
    /// One past the last address (the guard page, if any, is inside).
    pub(crate) va_end: usize,
    /// Left child (lower addresses), or null.
    pub(crate) left: *mut VmapArea,
    /// Right child (higher addresses), or null.
    pub(crate) right: *mut VmapArea,
    /// Parent, or null at the root.
    pub(crate) parent: *mut VmapArea,
    /// Height of the subtree rooted here (a leaf is 1).
    pub(crate) height: u32,
    /// Largest `va_end - va_start` in this subtree (augmented trees only).
    pub(crate) subtree_max_size: usize,
    /// Next node on a singly linked list (the lazily freed areas), or null.
    pub(crate) list_next: *mut VmapArea,
    /// The `vm_struct` of a busy vmalloc/ioremap area, or null (free areas,
    /// `vm_map_ram` areas).
    pub(crate) vm: *mut super::VmStruct,
    /// The `vmap_block` a busy `VMAP_BLOCK` area backs, or null (Linux
    /// finds it through its `vmap_blocks` xarray; the busy tree's lookup
    /// does that here).
    pub(crate) vb: *mut super::vmap_block::VmapBlock,
    /// `VMAP_RAM` and friends for busy areas.
    pub(crate) flags: usize,
}

impl VmapArea {
    /// A node for `[va_start, va_end)`, in no tree or list.
    pub(crate) const fn new(va_start: usize, va_end: usize) -> Self {
        VmapArea {
            va_start,
            va_end,
            left: core::ptr::null_mut(),
            right: core::ptr::null_mut(),
            parent: core::ptr::null_mut(),
            height: 0,
            subtree_max_size: 0,
            list_next: core::ptr::null_mut(),
            vm: core::ptr::null_mut(),
            vb: core::ptr::null_mut(),
            flags: 0,
        }
    }

    /// `va_size()`: bytes in the range.
    pub(crate) fn size(&self) -> usize {
        self.va_end - self.va_start
    }
}

/// An address-ordered tree of [`VmapArea`] nodes. When `augmented`, every
/// node's `subtree_max_size` is kept up to date (the free tree), so the
/// lowest-address fit is found in O(log n).
pub(crate) struct AreaTree {
    root: *mut VmapArea,
    augmented: bool,
    len: usize,
}

/// Levels a [`Path`] holds. An AVL tree of height `h` has at least
/// `fib(h + 2) - 1` nodes, so 64 levels need over 10^13 nodes: more areas
/// than the pages of a vmalloc space under 57-bit (5-level) addressing,
/// and far more than memory holds 96-byte nodes. 512 bytes of stack.
const MAX_HEIGHT: usize = 64;

/// The nodes a descent went through, from the root down to the node it
/// stopped at: the ancestors [`AreaTree::update_augment_path`] refreshes,
/// and those an insertion or removal rebalances, without chasing parent
/// links (Linux walks `rb_parent()` up; each step there is a load the next
/// one waits for, here the addresses are known).
pub(crate) struct Path {
    /// `nodes[0]` is the root, `nodes[i + 1]` a child of `nodes[i]`;
    /// `nodes[..len]` are written, the rest never read (left uninitialised,
    /// so that a path costs no 512-byte clearing).
    nodes: [MaybeUninit<*mut VmapArea>; MAX_HEIGHT],
    /// Nodes recorded.
    len: usize,
}

impl Path {
    /// An empty path.
    pub(crate) const fn new() -> Self {
        Path {
            nodes: [const { MaybeUninit::uninit() }; MAX_HEIGHT],
            len: 0,
        }
    }

    /// The recorded nodes, root first.
    pub(crate) fn nodes(&self) -> &[*mut VmapArea] {
        let written = &self.nodes[..self.len];
        // SAFETY: `nodes[..len]` are initialised (the field's invariant),
        // and `MaybeUninit<T>` has `T`'s layout.
        unsafe { &*(ptr::from_ref(written) as *const [*mut VmapArea]) }
    }

    /// Records `n` at depth `i`, keeping the nodes above it: the path then
    /// ends at `n`.
    fn set(&mut self, i: usize, n: *mut VmapArea) {
        // Slots up to `i` must be written before the length covers them.
        assert!(i <= self.len, "path depth {i} past its length {}", self.len);
        self.write(i, n);
        self.len = i + 1;
    }

    /// Writes slot `i` and leaves the length to the caller: a descent keeps
    /// it in a register (a store and a load back per level otherwise) and
    /// sets `len` on the way out, once every slot below it is written. Past
    /// `MAX_HEIGHT` the tree could not be an AVL tree.
    #[inline(always)]
    fn write(&mut self, i: usize, n: *mut VmapArea) {
        self.nodes[i] = MaybeUninit::new(n);
    }

    /// Keeps the first `len` nodes: the path down to `nodes[len - 1]`.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Height of the subtree at `n` (0 if empty).
///
/// # Safety
/// `n` is null or a valid node.
unsafe fn height(n: *mut VmapArea) -> u32 {
    // SAFETY: `n` is null or valid (the caller's contract).
    unsafe { n.as_ref() }.map_or(0, |n| n.height)
}

/// `get_subtree_max_size()`: the cached largest size in the subtree at `n`
/// (0 if empty).
///
/// # Safety
/// `n` is null or a valid node.
unsafe fn max_size(n: *mut VmapArea) -> usize {
    // SAFETY: as in `height`.
    unsafe { n.as_ref() }.map_or(0, |n| n.subtree_max_size)
}

/// `compute_subtree_max_size()`: the largest size in the subtree at `n`,
/// from its own size and its children's cached values.
///
/// # Safety
/// `n` and its non-null children are valid nodes.
unsafe fn compute_max(n: *mut VmapArea) -> usize {
    // SAFETY: `n` and its children are valid (the caller's contract).
    let (own, l, r) = unsafe { ((*n).va_end - (*n).va_start, (*n).left, (*n).right) };
    // SAFETY: as above.
    own.max(unsafe { max_size(l).max(max_size(r)) })
}

/// Recomputes `n`'s height and, if `augmented`, its `subtree_max_size` from
/// its children, which must be up to date.
///
/// # Safety
/// `n` and its non-null children are valid nodes, `n` ours to write.
unsafe fn fix(n: *mut VmapArea, augmented: bool) {
    // SAFETY: the caller's contract.
    unsafe {
        (*n).height = 1 + height((*n).left).max(height((*n).right));
        if augmented {
            (*n).subtree_max_size = compute_max(n);
        }
    }
}

/// The lowest (`left`) or highest node of the non-empty subtree at `n`.
///
/// # Safety
/// `n` is a valid node of a well-formed tree.
unsafe fn extreme(mut n: *mut VmapArea, left: bool) -> *mut VmapArea {
    loop {
        // SAFETY: the links of a well-formed tree are null or valid nodes.
        let (l, r) = unsafe { ((*n).left, (*n).right) };
        let c = if left { l } else { r };
        if c.is_null() {
            return n;
        }
        n = c;
    }
}

/// Where an `align`-aligned block of `size` bytes at or above `vstart` would
/// start inside the range `(s, e)`, if it fits: Linux's `is_within_this_va()`,
/// with checked arithmetic where Linux tests for wrap-around. `align` is a
/// power of two, so rounding up is a mask (Linux's `ALIGN()`), not the
/// division `next_multiple_of` makes: this runs at every level of a search.
pub(crate) fn fit_start(
    (s, e): (usize, usize),
    size: usize,
    align: usize,
    vstart: usize,
) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    let mask = align - 1;
    let nva_start = s.max(vstart).checked_add(mask)? & !mask;
    (nva_start.checked_add(size)? <= e).then_some(nva_start)
}

/// Whether the request fits in node `n` (see [`fit_start`]).
///
/// # Safety
/// `n` is a valid node.
unsafe fn fits(n: *mut VmapArea, size: usize, align: usize, vstart: usize) -> bool {
    // SAFETY: the caller's contract.
    let range = unsafe { ((*n).va_start, (*n).va_end) };
    // A range shorter than `size` cannot hold it wherever it starts: one
    // subtraction rejects most of the nodes a search passes, before the
    // rounding and overflow checks of `fit_start`.
    range.1 - range.0 >= size && fit_start(range, size, align, vstart).is_some()
}

impl AreaTree {
    /// An empty tree; `augmented` for the free tree (`subtree_max_size`).
    pub(crate) const fn new(augmented: bool) -> Self {
        AreaTree {
            root: ptr::null_mut(),
            augmented,
            len: 0,
        }
    }

    /// Number of nodes in the tree.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree has no nodes.
    #[allow(dead_code)] // The tree's API; vmalloc has no caller yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_null()
    }

    /// Inserts `node` keyed by its `va_start` and rebalances; sets the
    /// node's links, height and `subtree_max_size`.
    ///
    /// # Safety
    /// `node` is a valid `VmapArea` with `va_start < va_end`, in no tree,
    /// and from now until [`remove`](Self::remove) is accessed only through
    /// this tree (apart from the edits [`update_augment`](Self::update_augment)
    /// allows). Its range overlaps none in the tree (debug builds check the
    /// nodes on the search path, which include both neighbours).
    pub(crate) unsafe fn insert(&mut self, node: NonNull<VmapArea>) {
        let n = node.as_ptr();
        // SAFETY: `n` is valid and ours (the caller's contract), the tree's
        // nodes are valid (their inserts' contract) and ours under `&mut self`.
        unsafe {
            let (start, end) = ((*n).va_start, (*n).va_end);
            debug_assert!(start < end, "empty vmap_area {start:#x}..{end:#x}");
            debug_assert!((*n).left.is_null() && (*n).right.is_null() && (*n).parent.is_null());
            // The descent is recorded: the rebalancing walks back up it.
            let mut path = Path::new();
            let (mut cur, mut go_left, mut len) = (self.root, false, 0);
            while !cur.is_null() {
                // As in Linux's find_va_links(), the new range must lie
                // wholly on one side of every node on the path.
                let (s, e) = ((*cur).va_start, (*cur).va_end);
                debug_assert!(
                    end <= s || start >= e,
                    "{start:#x}..{end:#x} overlaps {s:#x}..{e:#x}"
                );
                path.write(len, cur);
                len += 1;
                go_left = start < s;
                cur = if go_left { (*cur).left } else { (*cur).right };
            }
            path.len = len;
            let parent = path.nodes().last().copied().unwrap_or(ptr::null_mut());
            ((*n).left, (*n).right, (*n).parent) = (ptr::null_mut(), ptr::null_mut(), parent);
            if parent.is_null() {
                self.root = n;
            } else if go_left {
                (*parent).left = n;
            } else {
                (*parent).right = n;
            }
            self.len += 1;
            // The node's own height and augment, then its ancestors'.
            fix(n, self.augmented);
            self.rebalance_path(&path, ptr::null_mut());
        }
    }

    /// Unlinks `node` and rebalances; afterwards the node's links, height
    /// and `subtree_max_size` are cleared and the caller owns it again.
    ///
    /// The path to it comes from its parent links; a caller that has just
    /// found it by a descent passes that descent to
    /// [`remove_at`](Self::remove_at) instead.
    ///
    /// # Safety
    /// `node` is in this tree.
    pub(crate) unsafe fn remove(&mut self, node: NonNull<VmapArea>) {
        let n = node.as_ptr();
        let mut path = Path::new();
        // SAFETY: `n` is in this tree (the caller's contract), so its
        // ancestors are valid nodes; the path gets every depth 0..=`depth`
        // written before its length covers them.
        unsafe {
            debug_assert!(self.holds(n), "vmap_area is not in this tree");
            let mut depth = 0;
            let mut a = n;
            while !(*a).parent.is_null() {
                (a, depth) = ((*a).parent, depth + 1);
            }
            a = n;
            for i in (0..=depth).rev() {
                path.write(i, a);
                a = (*a).parent;
            }
            path.len = depth + 1;
            self.remove_at(&mut path);
        }
    }

    /// [`remove`](Self::remove) of the last node of `path`, a descent of
    /// this tree from its root: the rebalancing walks back up the path
    /// rather than loading parent links one after another. The path is
    /// used up.
    ///
    /// # Safety
    /// `path` is a descent of this tree from its root, the tree unchanged
    /// in shape since, and its last node is the one to remove.
    pub(crate) unsafe fn remove_at(&mut self, path: &mut Path) {
        let idx = path.len - 1;
        let n = path.nodes()[idx];
        // SAFETY: `n` is in this tree (the caller's contract), so it and the
        // nodes linked to it are valid and, under `&mut self`, ours to write.
        unsafe {
            debug_assert!(path.nodes()[0] == self.root);
            debug_assert!(path.nodes().windows(2).all(|w| (*w[1]).parent == w[0]));
            let (l, r, p) = ((*n).left, (*n).right, (*n).parent);
            // The path ends at the lowest node whose subtree changed, where
            // rebalancing starts; a successor moved into `n`'s place has
            // stale fields, so the walk may not stop early below it.
            let mut stale = ptr::null_mut();
            if l.is_null() || r.is_null() {
                self.replace_child(p, n, if l.is_null() { r } else { l });
                path.truncate(idx);
            } else {
                // Two children: the successor `s` (leftmost on the right, so
                // without a left child) takes `n`'s place, relinked rather
                // than swapped in content since callers hold node pointers.
                // The path goes on down to it.
                let mut s = r;
                path.set(idx + 1, r);
                while !(*s).left.is_null() {
                    s = (*s).left;
                    path.set(path.len, s);
                }
                stale = s;
                if s != r {
                    let from = (*s).parent;
                    let sr = (*s).right;
                    (*from).left = sr;
                    if !sr.is_null() {
                        (*sr).parent = from;
                    }
                    ((*s).right, (*r).parent) = (r, s);
                }
                ((*s).left, (*l).parent) = (l, s);
                self.replace_child(p, n, s);
                // `s` stands where `n` stood; the walk starts at its old
                // parent (`s` itself when that was `n`).
                path.write(idx, s);
                path.truncate(path.len - 1);
            }
            self.len -= 1;
            ((*n).left, (*n).right, (*n).parent) =
                (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
            ((*n).height, (*n).subtree_max_size) = (0, 0);
            self.rebalance_path(path, stale);
        }
    }

    /// `__find_vmap_area()`: the node with `va_start <= addr < va_end`.
    pub(crate) fn find(&self, addr: usize) -> Option<NonNull<VmapArea>> {
        let mut cur = self.root;
        // SAFETY: the nodes reachable from the root are valid (insert's
        // contract) and `&self` excludes changes through the tree.
        unsafe {
            while !cur.is_null() {
                if addr < (*cur).va_start {
                    cur = (*cur).left;
                } else if addr >= (*cur).va_end {
                    cur = (*cur).right;
                } else {
                    return NonNull::new(cur);
                }
            }
        }
        None
    }

    /// [`find`](Self::find), recording the descent in `path`, which then
    /// ends at the node found: what [`remove_at`](Self::remove_at) takes.
    pub(crate) fn find_path(&self, addr: usize, path: &mut Path) -> Option<NonNull<VmapArea>> {
        let (mut cur, mut len) = (self.root, 0);
        // SAFETY: as in `find`.
        unsafe {
            while !cur.is_null() {
                path.write(len, cur);
                len += 1;
                if addr < (*cur).va_start {
                    cur = (*cur).left;
                } else if addr >= (*cur).va_end {
                    cur = (*cur).right;
                } else {
                    path.len = len;
                    return NonNull::new(cur);
                }
            }
        }
        path.len = len;
        None
    }

    /// The node with the largest `va_start <= addr` (the busy area an
    /// address may lie in or past, for reports).
    pub(crate) fn find_le(&self, addr: usize) -> Option<NonNull<VmapArea>> {
        let (mut cur, mut best) = (self.root, ptr::null_mut());
        // SAFETY: as in `find`.
        unsafe {
            while !cur.is_null() {
                let le = (*cur).va_start <= addr;
                best = if le { cur } else { best };
                cur = if le { (*cur).right } else { (*cur).left };
            }
        }
        NonNull::new(best)
    }

    /// One descent for both neighbours of a range starting at `addr`: the
    /// node with the largest `va_start <= addr` and the one with the
    /// smallest `va_start > addr` (what [`find_le`](Self::find_le) and
    /// [`next`](Self::next) give, without the second walk). Both lie on the
    /// descent, which `path` records; the answer is their depths in it.
    pub(crate) fn find_neighbours(
        &self,
        addr: usize,
        path: &mut Path,
    ) -> (Option<usize>, Option<usize>) {
        let (mut cur, mut le, mut gt) = (self.root, None, None);
        let mut len = 0;
        // SAFETY: as in `find`.
        unsafe {
            while !cur.is_null() {
                path.write(len, cur);
                if (*cur).va_start <= addr {
                    le = Some(len);
                    cur = (*cur).right;
                } else {
                    gt = Some(len);
                    cur = (*cur).left;
                }
                len += 1;
            }
        }
        path.len = len;
        (le, gt)
    }

    /// The node at depth `i` of `path` (as [`find_neighbours`](Self::find_neighbours)
    /// answers), if the path is that long.
    pub(crate) fn path_node(path: &Path, i: usize) -> Option<NonNull<VmapArea>> {
        path.nodes().get(i).and_then(|&n| NonNull::new(n))
    }

    /// The lowest-address node, if any.
    pub(crate) fn first(&self) -> Option<NonNull<VmapArea>> {
        // SAFETY: a non-null root is a valid node of this well-formed tree.
        NonNull::new(self.root).and_then(|r| NonNull::new(unsafe { extreme(r.as_ptr(), true) }))
    }

    /// The highest-address node, if any.
    #[allow(dead_code)] // As `is_empty`.
    pub(crate) fn last(&self) -> Option<NonNull<VmapArea>> {
        // SAFETY: as in `first`.
        NonNull::new(self.root).and_then(|r| NonNull::new(unsafe { extreme(r.as_ptr(), false) }))
    }

    /// `rb_next()`: the in-order successor of `node`, found through its links
    /// alone (hence an associated function, usable while walking).
    ///
    /// # Safety
    /// `node` is in a tree that nothing modifies during the call.
    pub(crate) unsafe fn next(node: NonNull<VmapArea>) -> Option<NonNull<VmapArea>> {
        // SAFETY: the caller's contract.
        unsafe { Self::step(node.as_ptr(), true) }
    }

    /// `rb_prev()`: the in-order predecessor of `node`.
    ///
    /// # Safety
    /// `node` is in a tree that nothing modifies during the call.
    pub(crate) unsafe fn prev(node: NonNull<VmapArea>) -> Option<NonNull<VmapArea>> {
        // SAFETY: the caller's contract.
        unsafe { Self::step(node.as_ptr(), false) }
    }

    /// The in-order successor (`forward`) or predecessor of `n`.
    ///
    /// # Safety
    /// `n` is in a tree that nothing modifies during the call.
    unsafe fn step(n: *mut VmapArea, forward: bool) -> Option<NonNull<VmapArea>> {
        // SAFETY: the links of a node in a well-formed tree are null or
        // valid nodes, and nothing changes them meanwhile.
        unsafe {
            let down = if forward { (*n).right } else { (*n).left };
            if !down.is_null() {
                return NonNull::new(extreme(down, forward));
            }
            // Climb while coming up from the `down` side: the first ancestor
            // reached from the other side is the answer.
            let (mut c, mut p) = (n, (*n).parent);
            while !p.is_null() && c == if forward { (*p).right } else { (*p).left } {
                (c, p) = (p, (*p).parent);
            }
            NonNull::new(p)
        }
    }

    /// `augment_tree_propagate_from()`: refreshes `subtree_max_size` from
    /// `node` up after its range was edited in place without changing its
    /// place in the address order (shrunk from either end by an allocation,
    /// or grown over a removed neighbour's range by a merge); no-op unless
    /// augmented. As in Linux, the walk stops at the first unchanged value.
    ///
    /// # Safety
    /// `node` is in this tree, and every other node's `subtree_max_size`
    /// agrees with its children (call this after each node edit).
    pub(crate) unsafe fn update_augment(&mut self, node: NonNull<VmapArea>) {
        if !self.augmented {
            return;
        }
        let mut n = node.as_ptr();
        // SAFETY: `n` is in this tree (the caller's contract), so it, its
        // ancestors and their children are valid and ours under `&mut self`.
        unsafe {
            debug_assert!(self.holds(n), "vmap_area is not in this tree");
            let (s, e) = ((*n).va_start, (*n).va_end);
            debug_assert!(
                s < e
                    && Self::prev(node).is_none_or(|p| (*p.as_ptr()).va_end <= s)
                    && Self::next(node).is_none_or(|q| e <= (*q.as_ptr()).va_start),
                "vmap_area {s:#x}..{e:#x} emptied or edited across a neighbour"
            );
            let mut m = compute_max(n);
            while (*n).subtree_max_size != m {
                (*n).subtree_max_size = m;
                let p = (*n).parent;
                if p.is_null() {
                    break;
                }
                m = Self::parent_max(p, n, m);
                n = p;
            }
        }
    }

    /// [`update_augment`](Self::update_augment) for the last node of
    /// `path`, whose ancestors the path lists: the same stores, without
    /// chasing parent links.
    ///
    /// # Safety
    /// As for `update_augment`, and `path` is a descent of this tree from
    /// its root to the edited node, the tree unchanged in shape since.
    pub(crate) unsafe fn update_augment_path(&mut self, path: &Path) {
        if !self.augmented || path.len == 0 {
            return;
        }
        let nodes = path.nodes();
        // SAFETY: the path's nodes are in this tree (the caller's contract),
        // so they and their children are valid and ours under `&mut self`.
        unsafe {
            debug_assert!(nodes[0] == self.root);
            debug_assert!(nodes.windows(2).all(|w| (*w[1]).parent == w[0]));
            let mut i = nodes.len() - 1;
            let mut m = compute_max(nodes[i]);
            while (*nodes[i]).subtree_max_size != m {
                (*nodes[i]).subtree_max_size = m;
                if i == 0 {
                    break;
                }
                m = Self::parent_max(nodes[i - 1], nodes[i], m);
                i -= 1;
            }
        }
    }

    /// [`update_augment_path`](Self::update_augment_path) for a node that
    /// only grew (a merge): a subtree's largest size can then only rise,
    /// to the node's new size, so each ancestor's new value is
    /// `max(old, m)` and the walk needs neither sibling nor own size: it
    /// stops at the first ancestor already holding `m` or more.
    ///
    /// # Safety
    /// As for `update_augment_path`, and the last node's range only grew
    /// since its `subtree_max_size` was last right.
    pub(crate) unsafe fn update_augment_path_grown(&mut self, path: &Path) {
        if !self.augmented || path.len == 0 {
            return;
        }
        let nodes = path.nodes();
        // SAFETY: as in `update_augment_path`.
        unsafe {
            debug_assert!(nodes[0] == self.root);
            let last = nodes[nodes.len() - 1];
            let m = (*last).va_end - (*last).va_start;
            for &n in nodes.iter().rev() {
                if (*n).subtree_max_size >= m {
                    break;
                }
                (*n).subtree_max_size = m;
            }
            debug_assert!(nodes
                .iter()
                .all(|&n| (*n).subtree_max_size == compute_max(n)));
        }
    }

    /// `compute_subtree_max_size()` of `p` when its child `c` has just
    /// taken the value `m`: `m` comes from a register, not back from the
    /// store just made, so the walk up is not one store-to-load after
    /// another.
    ///
    /// # Safety
    /// `p` is a valid node with child `c`, its other child null or valid.
    unsafe fn parent_max(p: *mut VmapArea, c: *mut VmapArea, m: usize) -> usize {
        // SAFETY: the caller's contract.
        unsafe {
            let (l, r) = ((*p).left, (*p).right);
            let other = if l == c { r } else { l };
            ((*p).va_end - (*p).va_start).max(max_size(other)).max(m)
        }
    }

    /// `find_vmap_lowest_match()`: the lowest-address node holding an
    /// `align`-aligned block of `size` bytes at or above `vstart`.
    ///
    /// A node fits when `nva_start = max(va_start, vstart)` rounded up to
    /// `align` (a power of two) has `nva_start + size <= va_end`. The search
    /// goes left while the left subtree can hold the request and is not
    /// wholly below `vstart`, tries each node it stands on, goes right when
    /// the right subtree can hold it, and otherwise climbs to the next
    /// ancestor in address order, tries it and its right subtree: a pruned
    /// in-order walk, O(log n) when the first subtree entered has the fit.
    ///
    /// "Can hold" compares `subtree_max_size` with `length`: `size`, plus
    /// the worst-case alignment overhead `align - 1` if `adjust_search_size`.
    /// Linux's `__alloc_vmap_area()` adjusts unless `align <= PAGE_SIZE`
    /// (areas are page aligned, so there is no overhead, and adjusting would
    /// skip exact-size areas) or `[vstart, vend)` is exactly `size` long.
    ///
    /// The result is a real fit: without `adjust_search_size`, the lowest;
    /// with it, the lowest among areas of at least `length` bytes, since a
    /// smaller area that fits anyway (its start already aligned) is skipped
    /// when it sits in a pruned subtree, exactly as in Linux. Either way it
    /// is the node Linux's function returns on the same tree shape.
    ///
    /// `path` records the nodes from the root down to the one found, for
    /// [`update_augment_path`](Self::update_augment_path) after the caller
    /// trims it.
    pub(crate) fn find_lowest_match(
        &self,
        size: usize,
        align: usize,
        vstart: usize,
        adjust_search_size: bool,
        path: &mut Path,
    ) -> Option<NonNull<VmapArea>> {
        debug_assert!(self.augmented && align.is_power_of_two());
        // Linux wraps on overflow; saturating keeps "no subtree can hold it".
        let length = size.saturating_add(if adjust_search_size { align - 1 } else { 0 });
        // Whether the subtree at `c` can hold it (null matters for length 0).
        // SAFETY: `c` is null or a node of this tree, valid (insert's contract).
        let can_hold = |c: *mut VmapArea| !c.is_null() && unsafe { max_size(c) } >= length;
        let mut n = self.root;
        // The path's length in a register (see `Path::write`).
        let mut len = 0;
        // SAFETY: the nodes reachable from the root are valid (insert's
        // contract) and `&self` excludes changes through the tree; the
        // path's slots below `len` were written by this descent.
        unsafe {
            while !n.is_null() {
                // Descend to the lowest subtree that can hold it; the left
                // one ends by `va_start`, useless unless `vstart` is below.
                loop {
                    path.write(len, n);
                    len += 1;
                    if vstart < (*n).va_start && can_hold((*n).left) {
                        n = (*n).left;
                    } else if fits(n, size, align, vstart) {
                        path.len = len;
                        return NonNull::new(n);
                    } else if can_hold((*n).right) {
                        n = (*n).right;
                    } else {
                        break;
                    }
                }
                // No fit below: climb to the first ancestor reached from its
                // left (the next node in address order), try it, then its
                // right subtree. (Linux climbs every parent, bumping `vstart`
                // past one before entering its right subtree; same result.)
                // The path's last node is `n`; climbing pops it.
                loop {
                    let child = n;
                    len -= 1;
                    if len == 0 {
                        path.len = 0;
                        return None;
                    }
                    n = path.nodes[len - 1].assume_init();
                    if (*n).left != child {
                        continue;
                    } else if fits(n, size, align, vstart) {
                        path.len = len;
                        return NonNull::new(n);
                    } else if can_hold((*n).right) {
                        n = (*n).right;
                        break;
                    }
                }
            }
        }
        path.len = len;
        None
    }

    /// Full invariant check, for tests and debug assertions: BST order
    /// without overlap, parent links, AVL heights and balance,
    /// `subtree_max_size` (if augmented) and the node count.
    #[allow(dead_code)] // For tests and debugging sessions.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let mut count = 0;
        // SAFETY: the nodes reachable from the root are valid (insert's
        // contract) and `&self` excludes changes through the tree.
        unsafe { self.check_subtree(self.root, ptr::null_mut(), (0, usize::MAX), &mut count)? };
        (count == self.len)
            .then_some(())
            .ok_or("len differs from the node count")
    }

    /// Checks the subtree at `n`, whose parent must be `parent` and ranges
    /// lie in `lo..=hi`; returns its height and largest size.
    ///
    /// # Safety
    /// `n` is null or the root of a subtree of valid nodes.
    unsafe fn check_subtree(
        &self,
        n: *mut VmapArea,
        parent: *mut VmapArea,
        (lo, hi): (usize, usize),
        count: &mut usize,
    ) -> Result<(u32, usize), &'static str> {
        // SAFETY: `n` is null or valid (the caller's contract), and the tree
        // is only read while the reference lives.
        let Some(v) = (unsafe { n.as_ref() }) else {
            return Ok((0, 0));
        };
        let (s, e) = (v.va_start, v.va_end);
        *count += 1;
        if *count > self.len {
            return Err("more nodes than len, or a cycle");
        } else if v.parent != parent {
            return Err("wrong parent link");
        } else if s >= e || s < lo || e > hi {
            return Err("empty, overlapping or misordered range");
        }
        // SAFETY: the children of a valid node are null or valid nodes.
        let (hl, ml) = unsafe { self.check_subtree(v.left, n, (lo, s), count)? };
        // SAFETY: as above.
        let (hr, mr) = unsafe { self.check_subtree(v.right, n, (e, hi), count)? };
        let max = v.size().max(ml).max(mr);
        if v.height != 1 + hl.max(hr) || hl.abs_diff(hr) > 1 {
            Err("wrong height or AVL balance")
        } else if self.augmented && v.subtree_max_size != max {
            Err("wrong subtree_max_size")
        } else {
            Ok((v.height, max))
        }
    }

    /// Whether `n` is in this tree (its ancestors lead to our root).
    ///
    /// # Safety
    /// `n` is a valid node of some well-formed tree.
    unsafe fn holds(&self, mut n: *mut VmapArea) -> bool {
        // SAFETY: the parent links of a well-formed tree are null or valid.
        while let Some(p) = NonNull::new(unsafe { (*n).parent }) {
            n = p.as_ptr();
        }
        n == self.root
    }

    /// Points `parent`'s link to `old` (the root if `parent` is null) at
    /// `new`, and `new`'s parent link at `parent`.
    ///
    /// # Safety
    /// `parent` is null or a node of this tree with child `old`; `new` is
    /// null or a valid node owned by this tree.
    unsafe fn replace_child(
        &mut self,
        parent: *mut VmapArea,
        old: *mut VmapArea,
        new: *mut VmapArea,
    ) {
        // SAFETY: the caller's contract; `&mut self` makes the nodes ours.
        unsafe {
            if parent.is_null() {
                self.root = new;
            } else if (*parent).left == old {
                (*parent).left = new;
            } else {
                (*parent).right = new;
            }
            if !new.is_null() {
                (*new).parent = parent;
            }
        }
    }

    /// Rotates the subtree at `x` left (its right child `y` rises) or right
    /// (its left child rises) and fixes both nodes.
    ///
    /// # Safety
    /// `x` is a node of this tree with a child on the side that rises.
    unsafe fn rotate(&mut self, x: *mut VmapArea, left: bool) {
        // SAFETY: `x`, the child `y` and their links are valid nodes of this
        // tree (the caller's contract), ours under `&mut self`.
        unsafe {
            let y = if left { (*x).right } else { (*x).left };
            let inner = if left { (*y).left } else { (*y).right };
            if left {
                ((*x).right, (*y).left) = (inner, x);
            } else {
                ((*x).left, (*y).right) = (inner, x);
            }
            if !inner.is_null() {
                (*inner).parent = x;
            }
            self.replace_child((*x).parent, x, y);
            (*x).parent = y;
            // `x` is now below `y`: fix it first.
            fix(x, self.augmented);
            fix(y, self.augmented);
        }
    }

    /// Walks up `path` from its last node to the root, restoring AVL
    /// balance by rotations and each node's height and augment from its
    /// children; it stops at a balanced node whose height and augment did
    /// not move, once past `stale` (a node with stale fields, or null).
    /// A rotation leaves the path above it valid: the node that rises
    /// takes the rotated one's place under the same parent.
    ///
    /// # Safety
    /// `path` is a descent of this tree from its root (possibly empty), and
    /// the subtrees off it are well-formed.
    unsafe fn rebalance_path(&mut self, path: &Path, mut stale: *mut VmapArea) {
        // Loaded once: the node stores below could alias `self` for all
        // the compiler knows.
        let augmented = self.augmented;
        // SAFETY: the nodes on the path and their children are valid nodes
        // of this tree, ours under `&mut self`; the heights guarantee each
        // rotation a child on the side that rises.
        unsafe {
            for &on_path in path.nodes().iter().rev() {
                // A rotation here lifts a child into `n`'s place under the
                // same parent: the next node up the path is still above it.
                let n = on_path;
                let (l, r) = ((*n).left, (*n).right);
                let (hl, hr) = (height(l), height(r));
                if hl > hr + 1 {
                    // Left-right case: make it left-left first.
                    if height((*l).left) < height((*l).right) {
                        self.rotate(l, true);
                    }
                    self.rotate(n, false);
                } else if hr > hl + 1 {
                    if height((*r).right) < height((*r).left) {
                        self.rotate(r, false);
                    }
                    self.rotate(n, true);
                } else {
                    // Balanced here: if neither its height nor its augment
                    // moved, nothing above it can (AVL's early stop), once
                    // no stale node is left above. `fix`, from the heights
                    // just loaded.
                    let h = 1 + hl.max(hr);
                    let mut same = (*n).height == h;
                    (*n).height = h;
                    if augmented {
                        let m = compute_max(n);
                        same &= (*n).subtree_max_size == m;
                        (*n).subtree_max_size = m;
                    }
                    if same && stale.is_null() {
                        break;
                    }
                }
                // Past the stale node (fixed in place, or by the rotation
                // that moved it down): the walk may stop early again.
                if on_path == stale {
                    stale = ptr::null_mut();
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
