//! Watermarks, lowmem reserves and per-CPU list sizes: Linux's formulas.
//!
//! These are pure functions of the zones' managed pages, the vm sysctls and
//! the CPU count, so the boot sequence and the conformance test against a
//! real kernel's `/proc/zoneinfo` run the very same code. Each function
//! names the Linux function whose arithmetic it follows (`mm/page_alloc.c`,
//! `mm/khugepaged.c`, `mm/vmstat.c`).

use crate::mmzone::{ZoneType, MAX_NR_ZONE_TYPES};
use crate::{PAGEBLOCK_NR_PAGES, PAGE_SHIFT};

/// `SWAP_CLUSTER_MAX`: the minimum min watermark of highmem/movable zones.
pub const SWAP_CLUSTER_MAX: u64 = 32;
/// `MIN_PERCPU_PAGELIST_HIGH_FRACTION`.
pub const MIN_PERCPU_PAGELIST_HIGH_FRACTION: u64 = 8;

/// The vm sysctls that shape the page allocator (`/proc/sys/vm/*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSysctl {
    /// `min_free_kbytes`.
    pub min_free_kbytes: u64,
    /// `watermark_scale_factor` (in 1/10000 of managed memory).
    pub watermark_scale_factor: u64,
    /// `lowmem_reserve_ratio`, indexed by [`ZoneType`].
    pub lowmem_reserve_ratio: [u64; MAX_NR_ZONE_TYPES],
    /// `percpu_pagelist_high_fraction` (0: derive from the low watermark).
    pub percpu_pagelist_high_fraction: u64,
}

impl VmSysctl {
    /// Linux's defaults, with `min_free_kbytes` still to be computed
    /// ([`calculate_min_free_kbytes`]).
    pub const fn linux_defaults() -> Self {
        VmSysctl {
            min_free_kbytes: 0,
            watermark_scale_factor: 10,
            // [DMA]=256, [DMA32]=256, [NORMAL]=32, [HIGHMEM]=0, [MOVABLE]=0
            lowmem_reserve_ratio: [256, 256, 32, 0, 0, 0],
            percpu_pagelist_high_fraction: 0,
        }
    }
}

/// One zone's inputs: its type and managed pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneInput {
    /// Zone type.
    pub ztype: ZoneType,
    /// `zone_managed_pages()`.
    pub managed: u64,
}

/// The watermarks of one zone (`zone->_watermark[]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermarks {
    /// `WMARK_MIN`
    pub min: u64,
    /// `WMARK_LOW`
    pub low: u64,
    /// `WMARK_HIGH`
    pub high: u64,
    /// `WMARK_PROMO`
    pub promo: u64,
}

fn is_lowmem(t: ZoneType) -> bool {
    !matches!(t, ZoneType::HighMem | ZoneType::Movable)
}

/// Integer square root (`int_sqrt`).
pub fn int_sqrt(x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    // Bitwise method (as lib/math/int_sqrt.c): no floating point in no_std.
    let mut m = 1u64 << ((63 - x.leading_zeros()) & !1);
    let (mut x, mut y) = (x, 0u64);
    while m != 0 {
        let b = y + m;
        y >>= 1;
        if x >= b {
            x -= b;
            y += m;
        }
        m >>= 2;
    }
    y
}

/// `nr_free_buffer_pages()`: managed pages above the high watermark in the
/// zones GFP_USER may use (everything up to Normal). At boot, before
/// watermarks exist, `high` is 0 for every zone.
pub fn nr_free_buffer_pages(zones: &[ZoneInput], high: &[u64]) -> u64 {
    zones
        .iter()
        .enumerate()
        .filter(|(_, z)| z.ztype <= ZoneType::Normal)
        .map(|(i, z)| z.managed.saturating_sub(high.get(i).copied().unwrap_or(0)))
        .sum()
}

/// `calculate_min_free_kbytes()`: `sqrt(lowmem_kbytes * 16)`, clamped to
/// 128..=262144.
pub fn calculate_min_free_kbytes(zones: &[ZoneInput]) -> u64 {
    min_free_kbytes_for(nr_free_buffer_pages(zones, &[]))
}

/// [`calculate_min_free_kbytes`] from the machine's
/// [`nr_free_buffer_pages`] (with no high watermarks), summed over nodes.
pub fn min_free_kbytes_for(free_buffer_pages: u64) -> u64 {
    let lowmem_kbytes = free_buffer_pages * ((1u64 << PAGE_SHIFT) >> 10);
    int_sqrt(lowmem_kbytes * 16).clamp(128, 262_144)
}

/// Zones [`thp_recommended_min_free_kbytes`] counts: populated, at most
/// Normal.
pub fn thp_zones(zones: &[ZoneInput]) -> u64 {
    zones
        .iter()
        .filter(|z| z.managed > 0 && z.ztype <= ZoneType::Normal)
        .count() as u64
}

/// khugepaged's `set_recommended_min_free_kbytes()`: with transparent huge
/// pages enabled, raise `min_free_kbytes` so that two pageblocks per zone,
/// plus enough for migratetype fallbacks, stay free (at most 5% of lowmem).
/// `high` holds each zone's high watermark when it runs (after
/// `init_per_zone_wmark_min()` set them from `current`), which the 5% cap
/// leaves out, as Linux's `nr_free_buffer_pages()` does. Returns the value
/// in force afterwards.
pub fn thp_recommended_min_free_kbytes(zones: &[ZoneInput], high: &[u64], current: u64) -> u64 {
    thp_recommended_for(thp_zones(zones), nr_free_buffer_pages(zones, high), current)
}

/// [`thp_recommended_min_free_kbytes`] from the machine's [`thp_zones`]
/// and [`nr_free_buffer_pages`], summed over nodes.
pub fn thp_recommended_for(nr_zones: u64, free_buffer_pages: u64, current: u64) -> u64 {
    let pcptypes = super::MIGRATE_PCPTYPES as u64;
    let mut recommended = PAGEBLOCK_NR_PAGES * nr_zones * 2;
    recommended += PAGEBLOCK_NR_PAGES * nr_zones * pcptypes * pcptypes;
    recommended = recommended.min(free_buffer_pages / 20);
    let kb = recommended << (PAGE_SHIFT - 10);
    kb.max(current)
}

/// Managed pages of the lowmem zones (neither HighMem nor Movable), the
/// denominator `__setup_per_zone_wmarks()` shares `min_free_kbytes` by.
pub fn lowmem_pages(zones: &[ZoneInput]) -> u64 {
    zones
        .iter()
        .filter(|z| is_lowmem(z.ztype))
        .map(|z| z.managed)
        .sum()
}

/// `__setup_per_zone_wmarks()` for one zone: min is `min_free_kbytes`
/// shared out by managed pages among lowmem zones (highmem and movable
/// zones get `managed/1024` clamped to 32..=128); low and high add
/// `max(min/4, managed * watermark_scale_factor / 10000)` each, and promo
/// one more step.
pub fn zone_wmarks(z: ZoneInput, lowmem_pages: u64, sysctl: &VmSysctl) -> Watermarks {
    let pages_min = sysctl.min_free_kbytes >> (PAGE_SHIFT - 10);
    let mut tmp = (pages_min * z.managed)
        .checked_div(lowmem_pages)
        .unwrap_or(0);
    let min = if is_lowmem(z.ztype) {
        tmp
    } else {
        (z.managed / 1024).clamp(SWAP_CLUSTER_MAX, 128)
    };
    tmp = (tmp >> 2).max(z.managed * sysctl.watermark_scale_factor / 10_000);
    Watermarks {
        min,
        low: min + tmp,
        high: min + 2 * tmp,
        promo: min + 3 * tmp,
    }
}

/// `setup_per_zone_lowmem_reserve()`: zone `i` keeps back, from an
/// allocation that could have used zone `j > i`, the managed pages of zones
/// `i+1..=j` divided by `lowmem_reserve_ratio[i]` (0 when the ratio is 0 or
/// the zone is empty). Returns `protection[i][j]`.
pub fn setup_per_zone_lowmem_reserve(
    zones: &[ZoneInput],
    sysctl: &VmSysctl,
) -> [[u64; MAX_NR_ZONE_TYPES]; MAX_NR_ZONE_TYPES] {
    let mut out = [[0u64; MAX_NR_ZONE_TYPES]; MAX_NR_ZONE_TYPES];
    for (i, z) in zones.iter().enumerate() {
        let ratio = sysctl.lowmem_reserve_ratio[z.ztype as usize];
        let clear = ratio == 0 || z.managed == 0;
        let mut upper = 0;
        for (j, u) in zones.iter().enumerate().skip(i + 1) {
            upper += u.managed;
            out[i][j] = if clear { 0 } else { upper / ratio };
        }
    }
    out
}

/// `zone_batchsize()`: about a quarter of 0.1% of the zone, at most 1 MiB
/// worth, rounded to `2^n - 1`; at least 1 (`max(1, ...)` as the caller does).
pub fn zone_batchsize(managed: u64) -> u64 {
    let mut batch = (managed >> 10).min((1 << 20) >> PAGE_SHIFT);
    batch /= 4;
    if batch < 1 {
        batch = 1;
    }
    let x = batch + batch / 2;
    let pow = 1u64 << (63 - x.leading_zeros());
    (pow - 1).max(1)
}

/// `zone_highsize()`: the per-CPU list high mark, the zone's low watermark
/// (or `managed / high_fraction`) split across the CPUs of the zone's node,
/// at least `4 * batch`.
pub fn zone_highsize(
    managed: u64,
    low_wmark: u64,
    batch: u64,
    cpus_on_node: u64,
    high_fraction: u64,
) -> u64 {
    // A fraction of 0 means "derive from the low watermark".
    let total = managed.checked_div(high_fraction).unwrap_or(low_wmark);
    let split = cpus_on_node.max(1);
    (total / split).max(batch << 2)
}

/// Per-CPU list sizes of one zone (`zone_set_pageset_high_and_batch()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcpSizes {
    /// `pcp->batch`
    pub batch: u64,
    /// `pcp->high_min`
    pub high_min: u64,
    /// `pcp->high_max`
    pub high_max: u64,
}

/// `zone_set_pageset_high_and_batch()`.
pub fn pageset_high_and_batch(
    managed: u64,
    low_wmark: u64,
    cpus_on_node: u64,
    sysctl: &VmSysctl,
) -> PcpSizes {
    let batch = zone_batchsize(managed);
    let f = sysctl.percpu_pagelist_high_fraction;
    let (high_min, high_max) = if f != 0 {
        let h = zone_highsize(managed, low_wmark, batch, cpus_on_node, f);
        (h, h)
    } else {
        (
            zone_highsize(managed, low_wmark, batch, cpus_on_node, 0),
            zone_highsize(
                managed,
                low_wmark,
                batch,
                cpus_on_node,
                MIN_PERCPU_PAGELIST_HIGH_FRACTION,
            ),
        )
    };
    PcpSizes {
        batch,
        high_min,
        high_max,
    }
}

/// `calculate_normal_threshold()`: the per-CPU vmstat drift threshold
/// (`vm stats threshold` in `/proc/zoneinfo`).
pub fn vmstat_threshold(managed: u64, online_cpus: u64) -> u64 {
    fn fls(x: u64) -> u64 {
        64 - u64::from(x.leading_zeros())
    }
    let mem = managed >> (27 - PAGE_SHIFT);
    (2 * fls(online_cpus) * (1 + fls(mem))).min(125)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_rounds_to_pow2_minus_1() {
        assert_eq!(zone_batchsize(3840), 1);
        assert_eq!(zone_batchsize(772_919), 63);
        assert_eq!(zone_batchsize(1 << 30), 63);
        assert_eq!(zone_batchsize(40_000), 7);
    }

    #[test]
    fn sqrt() {
        for x in [0u64, 1, 2, 3, 4, 15, 16, 17, 100_044_224, u32::MAX as u64] {
            let r = int_sqrt(x);
            assert!(r * r <= x && (r + 1) * (r + 1) > x, "{x}");
        }
    }

    #[test]
    fn highmem_min_is_clamped() {
        let zones = [
            ZoneInput {
                ztype: ZoneType::Normal,
                managed: 200_000,
            },
            ZoneInput {
                ztype: ZoneType::HighMem,
                managed: 1000,
            },
        ];
        let s = VmSysctl {
            min_free_kbytes: 4096,
            ..VmSysctl::linux_defaults()
        };
        let lp = lowmem_pages(&zones);
        let w = zones.map(|z| zone_wmarks(z, lp, &s));
        assert_eq!(w[1].min, 32);
        assert_eq!(w[0].min, 1024);
    }
}
