//! Tests of the area allocator's bitmap and hints: examples from Linux's
//! behaviour and proptests against a model.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::{format, vec, vec::Vec};

type TestResult = Result<(), TestCaseError>;
/// Operations per proptest case.
const OPS: usize = 200;
const INVAL: Option<Error> = Some(Error::InvalidArgument);

/// Caller-owned maps, full of garbage that `init` must clear.
struct Mem(Vec<usize>, Vec<usize>, Vec<PcpuBlockMd>, Vec<usize>);

impl Mem {
    fn new(pages: usize) -> Self {
        let a = vec![!0; ChunkMap::alloc_map_longs(pages)];
        let b = vec![!0; ChunkMap::bound_map_longs(pages)];
        let p = vec![!0; ChunkMap::populated_longs(pages)];
        Mem(a, b, vec![PcpuBlockMd::new(7); pages], p)
    }

    fn init(&mut self, pages: usize, start: usize, end: usize) -> Result<ChunkMap<'_>> {
        let Mem(alloc_map, bound_map, md_blocks, populated) = self;
        let mem = ChunkMapMem {
            alloc_map,
            bound_map,
            md_blocks,
            populated,
        };
        ChunkMap::init(mem, pages, start, end)
    }
}

/// Test steps, each followed by the hint check.
impl ChunkMap<'_> {
    /// `pcpu_alloc()`'s two steps; `pop_only` if `atomic`.
    fn alloc_pop(&mut self, bits: usize, align: usize, atomic: bool) -> Option<usize> {
        let start = self.find_block_fit(bits, align, atomic)?;
        let off = self.alloc_area(bits, align, start);
        assert!(off.is_some() && self.check().is_ok(), "fit, no area");
        off
    }

    fn alloc(&mut self, bits: usize, align: usize) -> Option<usize> {
        self.alloc_pop(bits, align, false)
    }

    fn atomic(&mut self, bits: usize) -> Option<usize> {
        self.alloc_pop(bits, 1, true)
    }

    /// Areas `(bits, at)` where first fit from `at` puts them.
    fn at(&mut self, areas: &[(usize, usize)]) {
        for &(bits, at) in areas {
            assert_eq!(self.alloc_area(bits, 1, at), Some(at));
        }
    }

    fn free(&mut self, off: usize) -> usize {
        let bytes = self.free_area(off).unwrap();
        self.check().map(|()| bytes).unwrap()
    }

    /// Block `block`'s contig and scan hints.
    fn hints(&self, block: usize) -> [usize; 4] {
        let b = &self.md_blocks()[block];
        let (cs, ss) = (b.contig_hint_start, b.scan_hint_start);
        [b.contig_hint, cs, b.scan_hint, ss]
    }
}

#[test]
fn bad_geometry_requests_and_frees_are_refused() {
    let mut mem = Mem::new(4);
    for (pages, start, end) in [(0, 0, 0), (4, 2, 0), (4, 8192, 8192), (5, 0, 0)] {
        assert_eq!(mem.init(pages, start, end).err(), INVAL);
    }
    let mut c = mem.init(4, 0, 0).unwrap();
    assert!(c.is_empty() && c.contig_hint_bytes() == 16384);
    for (bits, align) in [(0, 1), (1, 3), (1, 2048), (4097, 1)] {
        let refused = c.find_block_fit(bits, align, false).is_none();
        assert!(refused && c.alloc_area(bits, align, 0).is_none());
    }
    assert_eq!((c.alloc(10, 1), c.alloc(2000, 1)), (Some(0), Some(10)));
    let state = |c: &ChunkMap| (c.md_blocks().to_vec(), *c.chunk_md(), c.free_bytes());
    let before = state(&c);
    for bad in [5, 11, 2010, 4096, usize::MAX] {
        assert_eq!((c.free_area(bad).err(), state(&c)), (INVAL, before.clone()));
    }
    assert_eq!((c.free(10), c.free_area(10).err()), (8000, INVAL)); // twice
    assert_eq!(c.alloc(5, 1), Some(10));
    // 15 and 2010 keep bound bits of freed areas, over free units.
    assert_eq!([c.free_area(15).err(), c.free_area(2010).err()], [INVAL; 2]);
}

#[test]
fn alignment_holes_scan_hints_and_block_choice() {
    let mut mem = Mem::new(2);
    let mut c = mem.init(2, 0, 0).unwrap();
    assert_eq!((c.alloc(1, 1), c.alloc(2, 4)), (Some(0), Some(4)));
    // The hole [1, 4) is the scan hint: a larger request goes after it.
    assert_eq!((c.hints(0), c.alloc(4, 1)), ([1018, 6, 3, 1], Some(6)));
    assert_eq!((c.alloc(16, 16), c.alloc(1, 1024)), (Some(16), Some(1024)));
    // Block 0: [8, 16) free (8-aligned 8 bits) and [17, 31) (14 bits, no
    // 8-aligned 8 in it). Its contig hint cannot hold 8 bits at 8: Linux
    // takes block 1, not the lowest fit.
    let mut c = mem.init(2, 0, 0).unwrap();
    c.at(&[(8, 0), (8, 8), (1, 16), (14, 17), (993, 31)]);
    let _ = (c.free(8), c.free(17));
    assert_eq!((c.hints(0), c.alloc(8, 8)), ([14, 17, 8, 8], Some(1024)));
    // 10 bits fit the contig hint; the search starts past the scan hint.
    let got = (c.find_block_fit(10, 1, false), c.alloc_area(8, 8, 0));
    assert_eq!((got, c.alloc(10, 1)), ((Some(16), Some(8)), Some(17)));
}

#[test]
fn areas_across_blocks_and_frees_merging_back() {
    let mut mem = Mem::new(4);
    let mut c = mem.init(4, 0, 0).unwrap();
    c.set_populated(0, 4).unwrap();
    assert_eq!((c.alloc(1000, 1), c.alloc(1500, 1)), (Some(0), Some(1000)));
    let md = c.md_blocks();
    let (b0, b1, b2) = (md[0], md[1], md[2]);
    let got = [b0.right_free, b1.contig_hint, b1.left_free, b2.left_free];
    assert_eq!(got, [0; 4]);
    let got = [b2.first_free, b2.contig_hint, c.nr_empty_pop_pages()];
    assert_eq!(got, [452, 572, 1]);
    assert!(c.areas().eq([(0, 1000), (1000, 1500)]) && c.contig_hint_bytes() == 6384);
    let got = [c.free(0), c.free(1000), c.nr_empty_pop_pages()];
    assert_eq!(got, [4000, 6000, 4]);
    assert!(c.is_empty() && c.md_blocks().iter().all(|b| b.contig_hint == BB));
    // In one block, frees merge with their free neighbours.
    c.at(&[(100, 0), (100, 100), (100, 200), (724, 300)]);
    assert_eq!((c.free(100), c.hints(0)), (400, [100, 100, 0, 0]));
    assert_eq!((c.free(0), c.hints(0)), (400, [200, 0, 0, 0]));
    assert_eq!((c.free(300), c.hints(0)), (2896, [724, 300, 200, 0]));
    let edges = (c.md_blocks()[0].left_free, c.md_blocks()[0].right_free);
    assert_eq!((edges, c.free(200)), ((200, 724), 400));
    assert!(c.is_empty() && c.md_blocks()[0] == PcpuBlockMd::new(BB));
}

#[test]
fn the_first_chunk_hides_its_start_and_end() {
    let mut mem = Mem::new(3);
    let mut c = mem.init(3, 0x104, 0x800).unwrap(); // 65 and 512 bits
    c.set_populated(0, 3).unwrap();
    assert!(c.is_empty() && c.areas().next().is_none() && c.check().is_ok());
    assert_eq!((c.free_bytes(), c.chunk_md().first_free), (9980, 65));
    assert_eq!(c.nr_empty_pop_pages(), 1);
    for hidden in [0, 64, 3072 - 512, 3071] {
        assert_eq!(c.free_area(hidden).err(), INVAL);
    }
    assert_eq!((c.alloc(1, 1), c.alloc(2494, 1)), (Some(65), Some(66)));
    assert_eq!([c.free_bytes(), c.free(66), c.free(65)], [0, 9976, 4]);
    // The last free grew [66, 2560) across block 0's end from inside
    // block 0: the chunk's hint misses its unit (Linux's does too).
    assert!(c.is_empty() && c.contig_hint_bytes() == 9976);
}

#[test]
fn pop_only_fits_only_in_populated_pages() {
    let mut mem = Mem::new(3);
    let mut c = mem.init(3, 0, 0).unwrap();
    assert_eq!((c.atomic(10), c.set_populated(1, 2)), (None, Ok(())));
    assert_eq!((c.atomic(10), c.nr_empty_pop_pages()), (Some(1024), 0));
    assert_eq!((c.atomic(1014), c.atomic(1)), (Some(1034), None));
    c.free(1034);
    // 1,020 bits fit from 1034 on, across into page 2: not populated.
    let got = (c.atomic(1020), c.find_block_fit(1020, 1, false));
    assert_eq!(got, (None, Some(0)));
    c.set_populated(2, 3).unwrap();
    assert_eq!((c.atomic(1020), c.nr_populated()), (Some(1034), 2));
    let got = [c.set_populated(3, 4).err(), c.set_depopulated(2, 1).err()];
    assert_eq!((got, c.set_depopulated(1, 3)), ([INVAL; 2], Ok(())));
    let counts = (c.nr_populated(), c.nr_empty_pop_pages());
    assert_eq!((counts, c.check()), ((0, 0), Ok(())));
}

#[test]
fn linux_hints_can_lose_a_fit() {
    let mut mem = Mem::new(1);
    let mut c = mem.init(1, 0, 0).unwrap();
    c.at(&[(100, 0), (200, 100), (100, 300), (10, 400)]);
    c.at(&[(190, 410), (424, 600)]);
    let _ = (c.free(100), c.free(600));
    assert_eq!(c.hints(0), [424, 600, 200, 100]);
    // An area over the scan hint forgets it ([110, 300) is in no hint), a
    // smaller one is promoted when the contig hint breaks, rescan after.
    assert_eq!((c.alloc(10, 1), c.free(400)), (Some(100), 40));
    assert_eq!(c.hints(0), [424, 600, 10, 400]);
    assert_eq!((c.alloc(300, 1), c.hints(0)[0]), (Some(600), 124));
    // 190 bits are free at 110, yet pcpu_alloc() would take a new chunk.
    let got = (c.find_block_fit(150, 1, false), c.alloc_area(150, 1, 0));
    assert_eq!(got, (None, Some(110)));
}

/// The model: units (true: allocated), live areas, populated pages.
struct Model(Vec<bool>, BTreeMap<usize, usize>, Vec<bool>);

impl Model {
    /// First fit from `from`, as `alloc_area` should find it.
    fn fit(&self, from: usize, bits: usize, align: usize) -> Option<usize> {
        let to = min(from + bits + BB, self.0.len());
        let free = |o: usize| o + bits <= to && !self.0[o..o + bits].contains(&true);
        let mut starts = (align_up(from, align)..to).step_by(align);
        starts.find(|&o| free(o))
    }

    fn take(&mut self, off: usize, bits: usize) {
        self.0[off..off + bits].fill(true);
        self.1.insert(off, bits);
    }
}

/// `(kind, x, y)` operations on a chunk, checked against the model:
/// allocations (0: `pcpu_alloc()`, 1: atomic, 2: `alloc_area()` from
/// anywhere), frees (3: a live area, 4: anywhere), (de)population (5).
fn run(pages: usize, start: usize, end: usize, ops: &[(u8, usize, usize)]) -> TestResult {
    let end = if start + end < pages * BB { end } else { 0 };
    let mut mem = Mem::new(pages);
    let mut c = mem.init(pages, start * UNIT, end * UNIT).unwrap();
    let n = c.nr_bits();
    let mut m = Model(vec![false; n], BTreeMap::new(), vec![false; pages]);
    m.0[..start].fill(true);
    m.0[n - end..].fill(true);
    for &(kind, x, y) in ops {
        let bits = 1 + x % [16, 300, 2600][y % 3];
        let align = 1 << [0, y / 3 % 5, y / 3 % 11][y / 99 % 3];
        match kind {
            0..=2 => {
                let fit = c.find_block_fit(bits, align, kind == 1);
                let empty = c.is_empty() && start + end == 0 && kind != 1 && bits <= n;
                prop_assert!(fit.is_some() || !empty, "an empty chunk refused");
                let from = (kind == 2).then_some(x / 7 % (n + 1)).or(fit);
                // First fit from the start; a fit's start always leads to one.
                let got = from.and_then(|from| c.alloc_area(bits, align, from));
                prop_assert_eq!(got, from.and_then(|from| m.fit(from, bits, align)));
                prop_assert!(got.is_some() || from.is_none() || kind == 2, "no area");
                if let Some(off) = got {
                    let pop = m.2[off / BB..(off + bits).div_ceil(BB)].iter().all(|&p| p);
                    prop_assert!(pop || kind != 1, "an atomic area is not populated");
                    m.take(off, bits);
                }
            }
            3 | 4 => {
                let live = m.1.keys().nth(x % m.1.len().max(1)).filter(|_| kind == 3);
                let off = live.copied().unwrap_or(x % (n + 2));
                let bits = m.1.remove(&off);
                prop_assert_eq!(c.free_area(off).ok(), bits.map(|b| b * UNIT));
                m.0[off.min(n)..off.min(n) + bits.unwrap_or(0)].fill(false);
            }
            _ => {
                let (a, b, on) = (x % (pages + 1), y % (pages + 1), x / 8 % 2 == 1);
                let (lo, hi) = (a.min(b), a.max(b));
                let (pop, depop) = (ChunkMap::set_populated, ChunkMap::set_depopulated);
                let set = [depop, pop][usize::from(on)];
                prop_assert!(set(&mut c, lo, hi).is_ok());
                m.2[lo..hi].fill(on);
            }
        }
        let fail = |e| TestCaseError::fail(format!("{e:?} after {:?}", (kind, x, y)));
        c.check().map_err(fail)?;
        prop_assert_eq!(c.free_bytes(), m.0.iter().filter(|&&u| !u).count() * UNIT);
        prop_assert!(c.areas().eq(m.1.iter().map(|(&o, &b)| (o, b))));
        prop_assert_eq!(c.nr_populated(), m.2.iter().filter(|&&p| p).count());
    }
    Ok(())
}

/// The case proptest found: two free runs of equal length tie (the
/// scan hint lies after the contig hint); an area inside the first
/// breaks the contig hint, and left_free must shrink to the area's
/// offset although the rescan starts after the promoted scan hint.
#[test]
fn an_area_inside_a_tied_leading_run_shrinks_left_free() {
    let ops = [
        (2, 17_808_653_655_464_164_285, 10_267_880_043_941_276_878),
        (4, 0, 0),
        (2, 13_686_983_289_501_039_294, 455_380_591_038_526_182),
    ];
    run(4, 0, 0, &ops).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random operations against the model; every hint checked after each.
    #[test]
    fn random_operations_keep_the_hints_and_match_the_model(
        pages in 1..=5usize,
        start in prop_oneof![Just(0usize), 0..1024usize],
        end in prop_oneof![Just(0usize), 0..1024usize],
        ops in prop::collection::vec((0..6u8, any::<usize>(), any::<usize>()), 1..OPS),
    ) {
        run(pages, start, end, &ops)?;
    }
}
