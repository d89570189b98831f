//! The GFP text form both ways: whatever `Gfp::parse` accepts prints
//! (`show_gfp_flags()` order) as text that parses back to the same flags
//! and prints the same again; any 32-bit mask prints as text that parses
//! back to it. Nothing panics on any input.
#![no_main]

use kmem::gfp::Gfp;
use libfuzzer_sys::fuzz_target;

fn round_trip(g: Gfp) {
    let text = g.to_string();
    let again = Gfp::parse(&text)
        .unwrap_or_else(|e| panic!("{g:?} prints as {text:?}, which does not parse: {e}"));
    assert_eq!(again, g, "{text:?} parses to other flags");
    assert_eq!(again.to_string(), text, "printing is not canonical");
}

fuzz_target!(|data: &[u8]| {
    // Any mask, from the first four bytes.
    if let Some(b) = data.get(..4) {
        round_trip(Gfp::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    }
    // The whole input as text (invalid UTF-8 replaced), and its `|` tokens
    // one at a time.
    let text = String::from_utf8_lossy(data);
    if let Ok(g) = Gfp::parse(&text) {
        round_trip(g);
        // `FromStr` is the same parser.
        assert_eq!(text.parse::<Gfp>(), Ok(g));
    }
    for token in text.split('|') {
        if let Ok(g) = Gfp::parse(token) {
            round_trip(g);
        }
    }
});
