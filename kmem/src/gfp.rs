//! (being written)
/// GFP flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gfp(pub u32);
