//! per-CPU allocator (mm/percpu.c); being written.

pub(crate) mod area;
