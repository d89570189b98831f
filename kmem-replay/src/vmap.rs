//! The vmalloc events against kmem's vmap_area allocator: what is compared
//! with Linux, and how.
//!
//! The [engine](crate::engine) replays `vmalloc:alloc_vmap_area` as
//! [`Kmem::alloc_vmap_area`](kmem::Kmem::alloc_vmap_area) of the traced
//! `size` (guard page included, as Linux's `size` is) and `align`, keyed by
//! the traced `va_start`; `vmalloc:free_vmap_area_noflush` as
//! [`Kmem::free_vmap_area_noflush`](kmem::Kmem::free_vmap_area_noflush) of
//! that area; and a `vmalloc:purge_vmap_area_lazy` that purged something
//! (`num_purged > 0`) as
//! [`Kmem::purge_vmap_area_lazy`](kmem::Kmem::purge_vmap_area_lazy), so
//! kmem purges where Linux purged and nowhere else. Areas are address
//! ranges only: no pages are allocated or mapped for them. A failed try
//! (`failed=1`) and a purge of nothing are counted, not replayed.
//!
//! What the trace lets us check, and how ([`VmallocOutcome`] holds the
//! counts):
//!
//! * **Alignment**: kmem's area starts at a multiple of the traced `align`.
//! * **`nr_lazy_max`**: on every free, Linux's `lazy_max_pages()` equals
//!   kmem's (both `fls(CPUs) * 32 MiB / PAGE_SIZE`: 16384 on 2 CPUs).
//! * **`nr_lazy`, by its rises.** kmem cannot hold the pages Linux freed
//!   lazily before the trace began, nor those of areas allocated before it
//!   (their frees are *unmatched*), so kmem's count is lower by those
//!   pages and the absolute values are not comparable. Each free's rise
//!   is: its `nr_lazy` less the previous value of Linux's counter, and
//!   that must equal the pages kmem added for the same area (its size in
//!   pages, guard page included). The previous value is *not* simply the
//!   previous line's: two CPUs freeing at once may be traced in the other
//!   order than their atomic additions (on the bundled trace, eleven
//!   times: `nr_lazy=2110`, `2120`, `2115`, `2125`). Linux's counter only
//!   grows between purges, so the previous value is the next lower
//!   `nr_lazy` the trace shows in the same purge epoch: it is looked for
//!   among the [`REORDER_WINDOW`] frees on either side (the decision
//!   waits until that many frees have followed), and 0 counts as the
//!   value a traced purge left. A free with no lower value (the trace's
//!   first) is not compared.
//! * **Purges where Linux purged.** Between two traced purges (an
//!   *epoch*), the pages of areas kmem never held are known from the rises
//!   of their frees (and, in the trace's first epoch, from its first
//!   `nr_lazy`, which holds what Linux freed lazily before the trace).
//!   kmem's `vmap_lazy_nr` plus those pages, given to kmem's own rule
//!   ([`LazyFree::purge_due`]), must pass `lazy_max_pages()` before each
//!   traced purge; a free after which kmem would purge a second time in an
//!   epoch, or one the trace's end leaves without a purge, is a purge kmem
//!   would have made that Linux did not. kmem's count alone, without those
//!   pages, is reported beside it.
//! * **`num_purged`**: kmem purges the areas it freed lazily in the epoch,
//!   Linux also those kmem never held; so `num_purged` must equal kmem's
//!   count plus the epoch's frees kmem did not replay. In the trace's
//!   first epoch Linux also purges areas freed before the trace: not
//!   compared.

use crate::engine::Fidelity;
use kmem::vmalloc::LazyFree;
use serde::Serialize;
use std::collections::VecDeque;

/// Frees on either side of a free among which the next lower `nr_lazy`
/// is looked for (see the [module docs](self)).
pub const REORDER_WINDOW: usize = 64;

/// What the replay of the vmalloc events counted and compared (see the
/// [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VmallocOutcome {
    /// `alloc_vmap_area` tries that failed in Linux (`failed=1`): counted,
    /// not replayed.
    pub linux_failed_allocs: u64,
    /// Replayed allocations: kmem's area starts at a multiple of the
    /// traced `align`.
    pub aligned: Fidelity,
    /// kmem's `lazy_max_pages()` (0 until a free was replayed).
    pub lazy_max_pages: u64,
    /// Every free: the traced `nr_lazy_max` equals kmem's
    /// `lazy_max_pages()`.
    pub nr_lazy_max: Fidelity,
    /// Replayed frees: the rise of the traced `nr_lazy` equals the pages
    /// kmem added to its `vmap_lazy_nr`.
    pub nr_lazy_rise: Fidelity,
    /// Replayed frees whose rise could not be compared (no lower `nr_lazy`
    /// before them: the trace's first).
    pub nr_lazy_not_compared: u64,
    /// Pages Linux freed lazily that kmem never held (before the trace
    /// began, or areas allocated before it), over all epochs.
    pub unseen_lazy_pages: u64,
    /// Traced purges that purged something: replayed.
    pub purges: u64,
    /// Traced purges of nothing (`num_purged=0`): counted, skipped.
    pub empty_purges: u64,
    /// Replayed purges: `num_purged` equals the areas kmem purged plus
    /// those of the epoch kmem never held.
    pub num_purged: Fidelity,
    /// Replayed purges whose `num_purged` was not compared (the trace's
    /// first epoch, which began before the trace).
    pub num_purged_not_compared: u64,
    /// Traced purges (with work) before which kmem, counting the pages of
    /// the areas it never held, found a purge due.
    pub purges_due: Fidelity,
    /// Traced purges before which kmem's own count alone found a purge
    /// due.
    pub purges_due_on_own_count: u64,
    /// Purges kmem would have made that the trace does not show.
    pub kmem_only_purges: u64,
    /// The first disagreements with Linux: `line N: event: what`.
    pub mismatches: Vec<String>,
}

/// A traced free, as the engine hands it to [`LazyCheck::free`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Free {
    /// Its line.
    pub(crate) line: u64,
    /// The traced `nr_lazy`.
    pub(crate) nr_lazy: u64,
    /// The pages kmem added to `vmap_lazy_nr` for it, and whether kmem
    /// answered that a purge is due; `None` when kmem did not free the area
    /// (unmatched, or its allocation failed on kmem).
    pub(crate) kmem: Option<(u64, bool)>,
    /// kmem's `vmap_lazy_nr` after the event.
    pub(crate) kmem_lazy: u64,
    /// kmem's `lazy_max_pages()`.
    pub(crate) kmem_max: u64,
}

/// One purge epoch (from a traced purge, or the trace's start, to the next
/// traced purge).
#[derive(Default)]
struct Epoch {
    /// Began at a traced purge (else at the trace's start).
    from_purge: bool,
    /// Frees kmem did not replay.
    not_held: u64,
    /// Their pages (and, in the first epoch, those freed before the trace).
    unseen: u64,
    /// The adjusted count at kmem's last (would-be) purge in the epoch.
    purged_at: u64,
    /// Purges kmem would have made in the epoch.
    due: u64,
    /// The line of the first and of the second.
    due_lines: [Option<u64>; 2],
    /// kmem's own count alone found a purge due.
    own_due: bool,
    /// The last adjusted count and limit seen (for messages).
    last: (u64, u64),
}

/// The `nr_lazy` and purge comparisons (see the [module docs](self)).
pub(crate) struct LazyCheck {
    max_mismatches: usize,
    /// Frees waiting for [`REORDER_WINDOW`] more to follow.
    pending: VecDeque<Free>,
    /// The traced `nr_lazy` of the epoch's last `2 * REORDER_WINDOW + 1`
    /// frees.
    recent: VecDeque<u64>,
    /// Linux's count at the epoch's start: 0 after a traced purge, unknown
    /// at the trace's start.
    base: Option<u64>,
    epoch: Epoch,
    /// The counts.
    pub(crate) out: VmallocOutcome,
}

impl LazyCheck {
    /// A check keeping the first `max_mismatches` messages.
    pub(crate) fn new(max_mismatches: usize) -> Self {
        LazyCheck {
            max_mismatches,
            pending: VecDeque::with_capacity(REORDER_WINDOW + 1),
            recent: VecDeque::with_capacity(2 * REORDER_WINDOW + 1),
            base: None,
            epoch: Epoch::default(),
            out: VmallocOutcome::default(),
        }
    }

    /// Keep a disagreement's message if there is room.
    pub(crate) fn mismatch(&mut self, msg: impl FnOnce() -> String) {
        if self.out.mismatches.len() < self.max_mismatches {
            self.out.mismatches.push(msg());
        }
    }

    /// A traced free, in trace order.
    pub(crate) fn free(&mut self, f: Free) {
        self.pending.push_back(f);
        if self.recent.len() > 2 * REORDER_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(f.nr_lazy);
        if self.pending.len() > REORDER_WINDOW {
            if let Some(f) = self.pending.pop_front() {
                self.decide(f);
            }
        }
    }

    /// Decide every free still waiting.
    fn flush(&mut self) {
        while let Some(f) = self.pending.pop_front() {
            self.decide(f);
        }
    }

    fn decide(&mut self, f: Free) {
        let pred = self
            .recent
            .iter()
            .copied()
            .chain(self.base)
            .filter(|&v| v < f.nr_lazy)
            .max();
        match (f.kmem, pred) {
            (Some((pages, _)), Some(p)) => {
                let rise = f.nr_lazy - p;
                self.out.nr_lazy_rise.count(rise == pages);
                if rise != pages {
                    self.mismatch(|| {
                        format!(
                            "line {}: free_vmap_area_noflush: nr_lazy={} rose by {rise} pages \
                             (from {p}), kmem's vmap_lazy_nr by {pages}",
                            f.line, f.nr_lazy
                        )
                    });
                }
            }
            // The trace's first free: what Linux had before it is unseen.
            (Some((pages, _)), None) => {
                self.out.nr_lazy_not_compared += 1;
                self.epoch.unseen = self
                    .epoch
                    .unseen
                    .saturating_add(f.nr_lazy.saturating_sub(pages));
            }
            (None, Some(p)) => self.epoch.unseen = self.epoch.unseen.saturating_add(f.nr_lazy - p),
            (None, None) => self.epoch.unseen = self.epoch.unseen.saturating_add(f.nr_lazy),
        }
        if f.kmem.is_none() {
            self.epoch.not_held += 1;
        }
        let e = &mut self.epoch;
        let adjusted = f.kmem_lazy.saturating_add(e.unseen);
        let lf = LazyFree {
            nr_lazy: (adjusted - e.purged_at.min(adjusted)) as usize,
            nr_lazy_max: f.kmem_max as usize,
        };
        e.last = (lf.nr_lazy as u64, f.kmem_max);
        if lf.purge_due() {
            if let Some(slot) = e.due_lines.get_mut(e.due as usize) {
                *slot = Some(f.line);
            }
            e.due += 1;
            e.purged_at = adjusted;
        }
        if f.kmem.is_some_and(|(_, due)| due) {
            e.own_due = true;
        }
    }

    /// A traced purge that purged `traced` areas, replayed on kmem, which
    /// purged `kmem`: the frees before it are decided, and its epoch ends.
    pub(crate) fn purge(&mut self, line: u64, traced: u64, kmem: u64) {
        self.flush();
        let e = std::mem::take(&mut self.epoch);
        self.out.purges += 1;
        if e.from_purge {
            let expected = traced.saturating_sub(e.not_held);
            self.out.num_purged.count(kmem == expected);
            if kmem != expected {
                self.mismatch(|| {
                    let why = if e.not_held > 0 {
                        format!(
                            " (expected {expected}: {} of the areas were never kmem's)",
                            e.not_held
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "line {line}: purge_vmap_area_lazy: num_purged={traced}, kmem purged \
                         {kmem}{why}"
                    )
                });
            }
        } else {
            self.out.num_purged_not_compared += 1;
        }
        self.out.purges_due.count(e.due > 0);
        if e.due == 0 {
            self.mismatch(|| {
                format!(
                    "line {line}: purge_vmap_area_lazy: Linux purged {traced} area{}, but kmem \
                     had not found a purge due (vmap_lazy_nr with the pages it never held: {} of \
                     lazy_max_pages {})",
                    if traced == 1 { "" } else { "s" },
                    e.last.0,
                    e.last.1
                )
            });
        }
        if let (true, Some(l)) = (e.due > 1, e.due_lines[1]) {
            self.mismatch(|| {
                format!(
                    "line {l}: free_vmap_area_noflush: kmem would purge a second time before \
                     Linux's purge at line {line}"
                )
            });
        }
        self.out.kmem_only_purges += e.due.saturating_sub(1);
        self.out.purges_due_on_own_count += e.own_due as u64;
        self.out.unseen_lazy_pages = self.out.unseen_lazy_pages.saturating_add(e.unseen);
        self.epoch.from_purge = true;
        self.recent.clear();
        self.base = Some(0);
    }

    /// The trace ended: decide what waits, and count a purge kmem found
    /// due that no traced purge followed.
    pub(crate) fn finish(&mut self) -> VmallocOutcome {
        self.flush();
        let e = std::mem::take(&mut self.epoch);
        if let (true, Some(l)) = (e.due > 0, e.due_lines[0]) {
            self.mismatch(|| {
                format!(
                    "line {l}: free_vmap_area_noflush: kmem would purge here (vmap_lazy_nr with \
                     the pages it never held passed lazy_max_pages); the trace shows no purge \
                     after it"
                )
            });
        }
        self.out.kmem_only_purges += e.due;
        self.out.unseen_lazy_pages = self.out.unseen_lazy_pages.saturating_add(e.unseen);
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A free kmem replayed: 5 pages (a 16 KiB stack and its guard page).
    fn ours(line: u64, nr_lazy: u64, kmem_lazy: u64) -> Free {
        Free {
            line,
            nr_lazy,
            kmem: Some((5, kmem_lazy > 16384)),
            kmem_lazy,
            kmem_max: 16384,
        }
    }

    fn theirs(line: u64, nr_lazy: u64, kmem_lazy: u64) -> Free {
        Free {
            kmem: None,
            ..ours(line, nr_lazy, kmem_lazy)
        }
    }

    #[test]
    fn frees_of_two_cpus_traced_out_of_order_still_rise_by_their_pages() {
        let mut c = LazyCheck::new(10);
        // 2110 and 2115 were added in that order, but 2120 was traced between.
        for (i, v) in [2105, 2110, 2120, 2115, 2125, 2130].into_iter().enumerate() {
            c.free(ours(i as u64 + 1, v, 5 * (i as u64 + 1)));
        }
        let o = c.finish();
        assert_eq!((o.nr_lazy_rise.compared, o.nr_lazy_rise.matched), (5, 5));
        assert_eq!(o.nr_lazy_not_compared, 1);
        assert_eq!(o.unseen_lazy_pages, 2100);
        assert!(o.mismatches.is_empty(), "{:?}", o.mismatches);
    }

    #[test]
    fn a_wrong_rise_is_a_mismatch_with_its_line() {
        let mut c = LazyCheck::new(10);
        c.free(ours(1, 100, 5));
        c.free(ours(2, 108, 10));
        let o = c.finish();
        assert_eq!((o.nr_lazy_rise.compared, o.nr_lazy_rise.matched), (1, 0));
        assert_eq!(
            o.mismatches,
            ["line 2: free_vmap_area_noflush: nr_lazy=108 rose by 8 pages (from 100), kmem's vmap_lazy_nr by 5"]
        );
    }

    #[test]
    fn purges_compare_num_purged_less_the_areas_kmem_never_held_and_when_due() {
        let mut c = LazyCheck::new(10);
        // First epoch: Linux had 16370 pages before the trace; kmem's 3
        // frees bring it past 16384 with them.
        let mut kmem = 0;
        for (line, v) in [(1, 16375), (2, 16380), (3, 16385)] {
            kmem += 5;
            c.free(ours(line, v, kmem));
        }
        c.purge(4, 3277, 3);
        // Second epoch: 3277 frees, one of them unmatched.
        let mut kmem = 0;
        for i in 1..=3277u64 {
            if i == 100 {
                c.free(theirs(10 + i, 5 * i, kmem));
            } else {
                kmem += 5;
                c.free(ours(10 + i, 5 * i, kmem));
            }
        }
        c.purge(5000, 3277, 3276);
        // Third epoch: a few frees, then the trace ends.
        c.free(ours(5001, 5, 5));
        let o = c.finish();
        assert_eq!(o.purges, 2);
        assert_eq!((o.num_purged.compared, o.num_purged.matched), (1, 1));
        assert_eq!(o.num_purged_not_compared, 1);
        assert_eq!((o.purges_due.compared, o.purges_due.matched), (2, 2));
        assert_eq!(o.purges_due_on_own_count, 0);
        assert_eq!(o.kmem_only_purges, 0);
        assert_eq!(o.unseen_lazy_pages, 16370 + 5);
        assert_eq!(o.nr_lazy_rise.matched, 2 + 3276 + 1);
        assert!(o.mismatches.is_empty(), "{:?}", o.mismatches);
    }

    #[test]
    fn a_purge_kmem_finds_due_that_linux_never_makes_is_counted() {
        let mut c = LazyCheck::new(10);
        // Linux's purge was not recorded: kmem keeps counting past the limit.
        let mut kmem = 0;
        for i in 1..=4000u64 {
            kmem += 5;
            c.free(ours(i, 5 * i, kmem));
        }
        let o = c.finish();
        assert_eq!(o.kmem_only_purges, 1);
        assert_eq!(o.purges, 0);
        assert!(
            o.mismatches[0].starts_with("line 3277: free_vmap_area_noflush: kmem would purge here"),
            "{:?}",
            o.mismatches
        );
    }

    #[test]
    fn a_purge_kmem_did_not_find_due_is_a_mismatch() {
        let mut c = LazyCheck::new(10);
        c.purge(1, 1, 0);
        c.free(ours(2, 5, 5));
        c.purge(3, 1, 1);
        let o = c.finish();
        assert_eq!((o.purges_due.compared, o.purges_due.matched), (2, 0));
        assert_eq!((o.num_purged.compared, o.num_purged.matched), (1, 1));
        assert!(
            o.mismatches[1].contains("kmem had not found a purge due (vmap_lazy_nr with the pages it never held: 5 of lazy_max_pages 16384)"),
            "{:?}",
            o.mismatches
        );
    }
}
