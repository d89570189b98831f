//! The `Mem-Info:` report of an allocation failure or an OOM kill
//! (`mm/show_mem.c`: `show_mem()`, `__show_free_areas()`).
//!
//! The allocator calls it from its failure paths, so it reads only the zone
//! counters ([`crate::mmzone`]) and prints through the platform: it calls
//! no allocator.

use crate::platform::{IrqSave, Level, Platform};
use crate::seq_buf::SeqBuf;
use crate::{report, Kmem, PAGE_SHIFT};
use core::fmt::Write;

fn kb(pages: u64) -> u64 {
    pages << (PAGE_SHIFT - 10)
}

/// `show_mem()`/`__show_free_areas()`: the `Mem-Info:` block of an
/// allocation failure or OOM report, one zone summary, its lowmem reserves
/// and its free blocks per order.
pub fn show_mem<P: Platform>(k: &Kmem<P>) {
    let p = k.platform();
    report!(p, Level::Warning, "Mem-Info:");
    for node in k.nodes() {
        for z in node.zones().filter(|z| z.is_populated()) {
            report!(
                p,
                Level::Warning,
                "Node {} {} free:{}kB boost:{}kB min:{}kB low:{}kB high:{}kB reserved_highatomic:0KB free_highatomic:0KB present:{}kB managed:{}kB free_pcp:{}kB",
                node.node_id(),
                z.zone_type().name(),
                kb(z.free_pages()),
                kb(z.watermark_boost()),
                kb(z.min_wmark()),
                kb(z.low_wmark()),
                kb(z.high_wmark()),
                kb(z.present_pages()),
                kb(z.managed_pages()),
                kb(z.pcp_pages())
            );
            let mut line = SeqBuf::<160>::new();
            let _ = write!(line, "lowmem_reserve[]:");
            for upper in node.zones() {
                let _ = write!(line, " {}", z.lowmem_reserve(upper.zone_type() as usize));
            }
            report!(p, Level::Warning, "{}", line.as_str());
            let mut line = SeqBuf::<400>::new();
            let _ = write!(line, "Node {} {}:", node.node_id(), z.zone_type().name());
            let mut total = 0;
            let blocks = {
                let _irq = IrqSave::new(p);
                z.free_blocks()
            };
            for (o, n) in blocks.iter().enumerate() {
                let _ = write!(line, " {}*{}kB", n, kb(1 << o));
                total += n << o;
            }
            let _ = write!(line, " = {}kB", kb(total));
            report!(p, Level::Warning, "{}", line.as_str());
        }
    }
    report!(p, Level::Warning, "{} pages RAM", k.totalram_pages());
}
