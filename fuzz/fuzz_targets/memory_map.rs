//! The firmware memory-map parser: `kmem::memory_map::parse_line` on each
//! line, `kmem_sim::read_memory_map` on the whole text (what `kmem boot
//! --memmap FILE` reads), and `sanitize`/`validate` on what they accept.
//!
//! Checked: no panic; a parsed range prints in the dmesg form and parses
//! back to itself; a map `read_memory_map` accepts passes `validate` (what
//! boot runs); `sanitize` gives sorted, non-overlapping, non-empty ranges
//! within `2 * n` entries, is idempotent, and keeps at every boundary the
//! highest e820 type of the ranges covering it (Linux's
//! `e820__update_table()` rule).
#![no_main]

use kmem::arena::ArenaPlatform;
use kmem::memory_map::{parse_line, sanitize, validate, MemRegion};
use libfuzzer_sys::fuzz_target;

/// At most this many ranges go through `sanitize` (quadratic, as Linux's).
const MAX_RANGES: usize = 64;

fn sanitized(map: &[MemRegion]) -> Option<Vec<MemRegion>> {
    let mut out = vec![MemRegion::usable(0, 1); 2 * map.len()];
    let n = sanitize(map, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

/// The highest e820 type covering `a`, if any range does.
fn top_type(map: &[MemRegion], a: u64) -> Option<u32> {
    map.iter()
        .filter(|r| r.size != 0 && r.base <= a && a < r.end())
        .map(|r| r.kind.e820_type())
        .max()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parsed = Vec::new();
    for line in text.lines() {
        if let Ok(Some(r)) = parse_line(line) {
            assert!(r.size > 0 && r.base.checked_add(r.size).is_some(), "{r:?}");
            let shown = r.to_string();
            assert_eq!(
                parse_line(&shown),
                Ok(Some(r)),
                "{shown:?} does not read back"
            );
            parsed.push(r);
        }
    }
    let mut mem = vec![0u8; 64 << 10];
    let p = ArenaPlatform::new(&mut mem, 1);
    if let Ok(m) = kmem_sim::read_memory_map(&text) {
        assert!(
            validate(&p, &m.map).is_ok(),
            "read_memory_map gave a map boot refuses"
        );
    }
    parsed.truncate(MAX_RANGES);
    let Some(out) = sanitized(&parsed) else {
        return;
    };
    assert!(out.len() <= 2 * parsed.len());
    assert!(
        validate(&p, &out).is_ok(),
        "sanitize left an overlap: {out:?}"
    );
    for w in out.windows(2) {
        assert!(w[0].end() <= w[1].base, "not sorted: {w:?}");
    }
    for r in &out {
        assert_eq!(
            top_type(&parsed, r.base),
            Some(r.kind.e820_type()),
            "{r} in {parsed:?}"
        );
        assert_eq!(
            top_type(&parsed, r.end() - 1),
            Some(r.kind.e820_type()),
            "{r}"
        );
    }
    // Every start of an input range is covered by the output.
    for r in &parsed {
        assert!(
            out.iter().any(|o| o.base <= r.base && r.base < o.end()),
            "{r} lost"
        );
    }
    assert_eq!(
        sanitized(&out).as_ref(),
        Some(&out),
        "sanitize is not idempotent"
    );
});
