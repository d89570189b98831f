//! The footprint plot: a small hand-written SVG, no dependency.
//!
//! [`plot`] draws, against trace time and in MiB, the footprint (slab +
//! kmalloc_large + replayed page-allocator pages) and the live requested
//! bytes, then the same two for the objects alone (slab + kmalloc_large
//! against the live objects' requested bytes), with labelled axes and a
//! legend.

use crate::series::Point;
use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// A curve: its legend, its colour and the value it plots.
type Curve = (&'static str, &'static str, fn(&Point) -> u64);

/// Escape text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step (1, 2 or 5 times a power of ten) for about `n` ticks up
/// to `max`.
fn tick_step(max: f64, n: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / n;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

/// An SVG document plotting `points` under `title`.
///
/// ```
/// use kmem_replay::series::Point;
/// let pts = [Point { time_s: 0.0, ..Default::default() },
///            Point { time_s: 1.0, footprint_bytes: 8 << 20, live_bytes: 4 << 20, ..Default::default() }];
/// let svg = kmem_replay::svg::plot(&pts, "demo");
/// assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("demo"));
/// ```
pub fn plot(points: &[Point], title: &str) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let tmax = points.iter().map(|p| p.time_s).fold(0.0, f64::max);
    let ymax_raw = points
        .iter()
        .map(|p| mib(p.footprint_bytes.max(p.live_bytes)))
        .fold(0.0, f64::max);
    let ystep = tick_step(ymax_raw, 6.0);
    let ymax = (ymax_raw / ystep).ceil().max(1.0) * ystep;
    let xstep = tick_step(tmax, 8.0);
    let xmax = if tmax > 0.0 {
        (tmax / xstep).ceil() * xstep
    } else {
        1.0
    };
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / xmax * pw;
    let y = |v: f64| TOP + ph - v / ymax * ph;

    let mut s = String::new();
    // Writing into a String cannot fail: the results are ignored below.
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Grid and ticks.
    let mut v = 0.0;
    while v <= ymax + ystep / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            fmt_num(v)
        );
        v += ystep;
    }
    let mut t = 0.0;
    while t <= xmax + xstep / 2.0 {
        let xx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            fmt_num(t)
        );
        t += xstep;
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">trace time (s)</text>"#,
        LEFT + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">MiB</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Curves.
    let series: [Curve; 4] = [
        ("footprint (slab + kmalloc_large + pages)", "#1f5fbf", |p| {
            p.footprint_bytes
        }),
        ("live requested bytes (objects + pages)", "#e07b00", |p| {
            p.live_bytes
        }),
        ("slab + kmalloc_large", "#2a9d3a", |p| {
            p.slab_bytes + p.kmalloc_large_bytes
        }),
        ("live requested object bytes", "#8e44ad", |p| {
            p.live_object_bytes
        }),
    ];
    for (i, (name, colour, f)) in series.iter().enumerate() {
        let pts: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.time_s), y(mib(f(p)))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = TOP + 16.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0, 5.0), 20.0);
        assert_eq!(tick_step(7.0, 8.0), 1.0);
        assert_eq!(tick_step(0.3, 6.0), 0.05);
        assert_eq!(fmt_num(0.05), "0.05");
        assert_eq!(fmt_num(20.0), "20");
    }

    #[test]
    fn empty_and_escaped() {
        let s = plot(&[], "a < b & c");
        assert!(s.contains("a &lt; b &amp; c"));
        assert!(s.ends_with("</svg>\n"));
    }
}
