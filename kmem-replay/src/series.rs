//! A footprint time series of bounded size.
//!
//! The replay samples the machine every few thousand events, whatever the
//! trace length, so the series must not grow with it. [`Series`] keeps at
//! most `cap` points. Each point stands for a *bucket* of samples and is
//! the bucket's sample with the largest footprint, so peaks survive. When
//! the series is full, neighbouring buckets merge pairwise (the larger
//! footprint wins) and each bucket covers twice as many samples from then
//! on: the resolution halves, the memory stays the same.

use serde::Serialize;

/// One sample of the machine during a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// Events replayed when it was taken.
    pub event: u64,
    /// Trace time since the first event, in seconds.
    pub time_s: f64,
    /// Slab + kmalloc_large + replayed page-allocator bytes.
    pub footprint_bytes: u64,
    /// Bytes in slabs.
    pub slab_bytes: u64,
    /// Bytes of kmalloc_large allocations.
    pub kmalloc_large_bytes: u64,
    /// Bytes of the replayed `mm_page_alloc` events still allocated.
    pub page_bytes: u64,
    /// Free bytes (buddy lists and per-CPU lists).
    pub free_bytes: u64,
    /// Live requested bytes (objects' `bytes_req`, replayed pages).
    pub live_bytes: u64,
    /// The objects' part of it.
    pub live_object_bytes: u64,
}

/// A bounded series of [`Point`]s; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Series {
    cap: usize,
    /// Samples per bucket.
    stride: u64,
    points: Vec<Point>,
    /// The bucket being filled: its best point and how many samples it has.
    current: Option<Point>,
    in_current: u64,
}

impl Series {
    /// An empty series of at most `cap` points (at least 2).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(2);
        Series {
            cap,
            stride: 1,
            points: Vec::with_capacity(cap),
            current: None,
            in_current: 0,
        }
    }

    /// Samples each point stands for now.
    pub fn stride(&self) -> u64 {
        self.stride
    }

    /// Add a sample.
    pub fn push(&mut self, p: Point) {
        self.current = Some(match self.current {
            Some(c) if c.footprint_bytes >= p.footprint_bytes => c,
            _ => p,
        });
        self.in_current += 1;
        if self.in_current < self.stride {
            return;
        }
        if let Some(c) = self.current.take() {
            self.points.push(c);
        }
        self.in_current = 0;
        if self.points.len() == self.cap {
            self.points = self
                .points
                .chunks(2)
                .map(|w| {
                    if w.len() == 2 && w[1].footprint_bytes > w[0].footprint_bytes {
                        w[1]
                    } else {
                        w[0]
                    }
                })
                .collect();
            self.stride *= 2;
        }
    }

    /// The points, the bucket being filled included.
    pub fn points(&self) -> Vec<Point> {
        let mut v = self.points.clone();
        v.extend(self.current);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(i: u64, f: u64) -> Point {
        Point {
            event: i,
            footprint_bytes: f,
            ..Point::default()
        }
    }

    #[test]
    fn stays_bounded_and_keeps_the_peak() {
        let mut s = Series::new(16);
        let n = if cfg!(miri) { 500 } else { 100_000 };
        for i in 0..n {
            // One spike in the middle.
            s.push(pt(i, if i == n / 2 { 1_000_000 } else { i % 100 }));
            assert!(s.points().len() <= 17);
        }
        let pts = s.points();
        assert!(pts.len() >= 8, "{}", pts.len());
        assert!(pts.iter().any(|p| p.footprint_bytes == 1_000_000));
        assert!(pts.windows(2).all(|w| w[0].event < w[1].event));
        assert!(s.stride() > 1);
    }

    #[test]
    fn short_series_keep_every_sample() {
        let mut s = Series::new(8);
        for i in 0..5 {
            s.push(pt(i, i));
        }
        assert_eq!(s.points().len(), 5);
        assert_eq!(s.stride(), 1);
    }
}
