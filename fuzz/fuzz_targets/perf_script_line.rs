//! The perf-script line parser (`kmem_replay::parse`) and the parser
//! thread's line-to-operation step (`kmem_replay::ops::Parser::line`, which
//! also parses each event's `gfp_flags` with the core's GFP parser) on
//! arbitrary lines: no panic; a parsed line's CPU is the one the head scan
//! sees (`line_cpu`); the escaped form of any line (`printable`) is
//! bounded and holds no control character.
#![no_main]

use kmem_replay::ops::{Batch, Parser};
use kmem_replay::parse::{line_cpu, parse_line, printable, Event};
use libfuzzer_sys::fuzz_target;

const MAX_CHARS: usize = 200;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the machine's CPU count (events on other CPUs
    // run as cpu % cpus, or are malformed at and beyond NR_CPUS).
    let (cpus, text) = match data.split_first() {
        Some((&c, rest)) => (u32::from(c % 8) + 1, rest),
        None => (1, data),
    };
    let mut parser = Parser::new(cpus, 4);
    let mut batch = Batch::default();
    for line in text.split(|&b| b == b'\n') {
        match parse_line(line) {
            Ok(Some(rec)) => {
                assert_eq!(line_cpu(line), Some(rec.header.cpu), "head scan disagrees");
                // Every event but an unknown one has its kind.
                assert_eq!(
                    rec.event.kind().is_none(),
                    matches!(rec.event, Event::Unknown(_))
                );
            }
            Ok(None) => {}
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let shown = printable(line, MAX_CHARS);
        // One character (at most a 4-byte escape) past the limit, then "...".
        assert!(
            shown.len() <= MAX_CHARS + 4 + 3,
            "printable() too long: {}",
            shown.len()
        );
        assert!(
            !shown.chars().any(char::is_control),
            "a control character escaped unescaped"
        );
        parser.line(line, &mut batch);
    }
    assert_eq!(batch.lines as usize, text.split(|&b| b == b'\n').count());
    assert!(batch.errors.len() <= 4, "more errors kept than asked");
    for op in &batch.ops {
        assert!(
            op.cpu < cpus,
            "op on CPU {} of a {cpus}-CPU machine",
            op.cpu
        );
    }
});
