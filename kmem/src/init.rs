//! (being written)
/// Boot parameters.
pub struct BootParams;
/// A machine.
pub struct Kmem;
