//! Conformance with a real kernel: Linux 6.18 on a 2-CPU x86_64 machine.
//!
//! The fixtures in `tests/fixtures/linux-6.18/` were read from `/proc` of
//! that machine. This test takes each zone's managed pages and the vm
//! sysctls from them, runs kmem's watermark, lowmem-reserve, per-CPU list
//! and vmstat-threshold code (the same functions boot uses), and requires
//! every number the kernel printed to come out identical.

use kmem::mmzone::ZoneType;
use kmem::page_alloc::watermark::{
    calculate_min_free_kbytes, lowmem_pages, pageset_high_and_batch, setup_per_zone_lowmem_reserve,
    thp_recommended_min_free_kbytes, vmstat_threshold, zone_wmarks, VmSysctl, ZoneInput,
};

const ZONEINFO: &str = include_str!("fixtures/linux-6.18/zoneinfo");
const SYSCTL: &str = include_str!("fixtures/linux-6.18/vm-sysctl");
const NR_CPUS: u64 = 2;

#[derive(Debug, Default)]
struct FixtureZone {
    name: String,
    min: u64,
    low: u64,
    high: u64,
    promo: u64,
    managed: u64,
    protection: Vec<u64>,
    batch: Vec<u64>,
    high_min: Vec<u64>,
    high_max: Vec<u64>,
    threshold: Vec<u64>,
}

fn parse_zoneinfo() -> Vec<FixtureZone> {
    let mut zones: Vec<FixtureZone> = Vec::new();
    for line in ZONEINFO.lines() {
        let t = line.trim();
        if let Some(rest) = line.strip_prefix("Node 0, zone") {
            zones.push(FixtureZone {
                name: rest.trim().to_string(),
                ..Default::default()
            });
            continue;
        }
        let z = zones.last_mut().expect("a zone header first");
        let mut it = t.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let num = || val.parse::<u64>().unwrap();
        match key {
            "min" => z.min = num(),
            "low" => z.low = num(),
            "high" => z.high = num(),
            "promo" => z.promo = num(),
            "managed" => z.managed = num(),
            "batch:" => z.batch.push(num()),
            "high_min:" => z.high_min.push(num()),
            "high_max:" => z.high_max.push(num()),
            "protection:" => {
                let inner = t.trim_start_matches("protection: (").trim_end_matches(')');
                z.protection = inner.split(", ").map(|x| x.parse().unwrap()).collect();
            }
            "vm" => z
                .threshold
                .push(t.rsplit(' ').next().unwrap().parse().unwrap()),
            _ => {}
        }
    }
    zones
}

fn sysctl() -> VmSysctl {
    let mut s = VmSysctl::linux_defaults();
    for line in SYSCTL.lines() {
        let (k, v) = line.split_once('=').unwrap();
        let nums: Vec<u64> = v.split_whitespace().map(|x| x.parse().unwrap()).collect();
        match k.trim() {
            "min_free_kbytes" => s.min_free_kbytes = nums[0],
            "watermark_scale_factor" => s.watermark_scale_factor = nums[0],
            "percpu_pagelist_high_fraction" => s.percpu_pagelist_high_fraction = nums[0],
            // x86_64's zones in order: DMA, DMA32, Normal, Movable, Device.
            "lowmem_reserve_ratio" => {
                let order = [
                    ZoneType::Dma,
                    ZoneType::Dma32,
                    ZoneType::Normal,
                    ZoneType::Movable,
                    ZoneType::Device,
                ];
                for (t, v) in order.iter().zip(nums) {
                    s.lowmem_reserve_ratio[*t as usize] = v;
                }
            }
            other => panic!("unexpected sysctl {other}"),
        }
    }
    s
}

/// The fixture's zones as the watermark formulas take them.
fn zone_inputs(fz: &[FixtureZone]) -> Vec<ZoneInput> {
    fz.iter()
        .map(|z| ZoneInput {
            ztype: ztype(&z.name),
            managed: z.managed,
        })
        .collect()
}

fn ztype(name: &str) -> ZoneType {
    *ZoneType::ALL
        .iter()
        .find(|t| t.name() == name)
        .expect("known zone")
}

#[test]
fn fixture_parses() {
    let z = parse_zoneinfo();
    assert_eq!(
        z.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(),
        ["DMA", "DMA32", "Normal", "Movable", "Device"]
    );
    assert_eq!(sysctl().min_free_kbytes, 67584);
}

#[test]
fn watermarks_match_linux() {
    let fz = parse_zoneinfo();
    let s = sysctl();
    let inputs = zone_inputs(&fz);
    let lp = lowmem_pages(&inputs);
    for (z, input) in fz.iter().zip(&inputs) {
        let w = zone_wmarks(*input, lp, &s);
        // ZONE_DEVICE is neither lowmem nor movable in Linux's formula but
        // has no managed pages, so every mark is 0 there.
        assert_eq!(
            (w.min, w.low, w.high, w.promo),
            (z.min, z.low, z.high, z.promo),
            "zone {}",
            z.name
        );
    }
}

#[test]
fn protection_matches_linux() {
    let fz = parse_zoneinfo();
    let s = sysctl();
    let inputs = zone_inputs(&fz);
    let prot = setup_per_zone_lowmem_reserve(&inputs, &s);
    for (i, z) in fz.iter().enumerate() {
        assert_eq!(&prot[i][..fz.len()], &z.protection[..], "zone {}", z.name);
    }
}

#[test]
fn pagesets_and_thresholds_match_linux() {
    let fz = parse_zoneinfo();
    let s = sysctl();
    let mut checked = 0;
    for z in fz.iter().filter(|z| !z.batch.is_empty()) {
        let sizes = pageset_high_and_batch(z.managed, z.low, NR_CPUS, &s);
        for cpu in 0..NR_CPUS as usize {
            assert_eq!(
                (sizes.batch, sizes.high_min, sizes.high_max),
                (z.batch[cpu], z.high_min[cpu], z.high_max[cpu]),
                "zone {} cpu {cpu}",
                z.name
            );
            assert_eq!(
                vmstat_threshold(z.managed, NR_CPUS),
                z.threshold[cpu],
                "zone {}",
                z.name
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 3, "DMA, DMA32 and Normal have pagesets");
}

#[test]
fn min_free_kbytes_is_khugepageds_recommendation() {
    // The kernel computed sqrt(lowmem_kbytes * 16), then khugepaged raised
    // it for transparent huge pages: the sysctl shows the raised value.
    let fz = parse_zoneinfo();
    let inputs = zone_inputs(&fz);
    let base = calculate_min_free_kbytes(&inputs);
    assert_eq!(base, 10002);
    // khugepaged runs after the first watermarks are set, from `base`.
    let first = VmSysctl {
        min_free_kbytes: base,
        ..sysctl()
    };
    let lp = lowmem_pages(&inputs);
    let high: Vec<u64> = inputs
        .iter()
        .map(|&z| zone_wmarks(z, lp, &first).high)
        .collect();
    assert_eq!(
        thp_recommended_min_free_kbytes(&inputs, &high, base),
        sysctl().min_free_kbytes
    );
}

// ---------------------------------------------------------------------------
// SLUB cache geometry against /proc/slabinfo of the same machine.
//
// Columns: name, active_objs, num_objs, objsize (s->size), objperslab,
// pagesperslab. The machine has 2 CPUs, so SLUB's default min_objects is
// 4 * (fls(2) + 1) = 12.

const SLABINFO: &str = include_str!("fixtures/linux-6.18/slabinfo");

#[derive(Debug)]
struct SlabRow {
    name: String,
    objsize: usize,
    objperslab: usize,
    pagesperslab: usize,
}

fn parse_slabinfo() -> Vec<SlabRow> {
    let mut lines = SLABINFO.lines();
    assert_eq!(lines.next(), Some("slabinfo - version: 2.1"));
    assert!(lines.next().unwrap().starts_with("# name"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6 && f[6] == ":", "bad slabinfo line {l:?}");
            SlabRow {
                name: f[0].to_string(),
                objsize: f[3].parse().unwrap(),
                objperslab: f[4].parse().unwrap(),
                pagesperslab: f[5].parse().unwrap(),
            }
        })
        .collect()
}

/// "96" -> 96, "1k" -> 1024, "8k" -> 8192: the short sizes of kmalloc_info[].
fn short_size(s: &str) -> Option<usize> {
    match s.strip_suffix('k') {
        Some(k) => k.parse::<usize>().ok().map(|k| k * 1024),
        None => s.parse().ok(),
    }
}

/// Splits a kmalloc cache name into the flags create_kmalloc_caches() uses
/// for its type and the class size written in the name.
fn kmalloc_row(name: &str) -> Option<(kmem::slab::SlabFlags, usize)> {
    use kmem::slab::*;
    let (type_flags, size) = if let Some(s) = name.strip_prefix("dma-kmalloc-") {
        (SLAB_CACHE_DMA, s)
    } else if let Some(s) = name.strip_prefix("kmalloc-rcl-") {
        (SLAB_RECLAIM_ACCOUNT, s)
    } else if let Some(s) = name.strip_prefix("kmalloc-cg-") {
        (SLAB_ACCOUNT, s)
    } else if let Some(s) = name.strip_prefix("kmalloc-") {
        // CONFIG_MEMCG: the normal caches are never merged.
        (SLAB_NO_MERGE, s)
    } else {
        return None;
    };
    Some((type_flags | SLAB_KMALLOC, short_size(size)?))
}

#[test]
fn kmalloc_caches_match_linux_slabinfo() {
    use kmem::kmalloc::{
        kmalloc_cache_align, kmalloc_cache_geometry, kmalloc_index, kmalloc_size,
        parse_kmalloc_cache_name,
    };
    use kmem::slab::geometry::cache_geometry;

    let rows = parse_slabinfo();
    let mut checked = 0;
    for row in &rows {
        let Some((flags, size)) = kmalloc_row(&row.name) else {
            continue;
        };
        // The name and kmem's class tables agree.
        let (ty, idx) = parse_kmalloc_cache_name(&row.name).expect("a kmalloc class name");
        assert_eq!(kmalloc_index(size), Some(idx), "{}", row.name);
        assert_eq!(kmalloc_size(idx), Some(size), "{}", row.name);
        assert_eq!(ty.cache_flags(), flags, "{}", row.name);

        // create_boot_cache(): align = max(ARCH_KMALLOC_MINALIGN, largest
        // power of two dividing the size).
        let g = cache_geometry(
            size,
            kmalloc_cache_align(size),
            flags,
            false,
            NR_CPUS as usize,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", row.name));
        assert_eq!(
            (g.size, g.objects, g.pages_per_slab()),
            (row.objsize, row.objperslab, row.pagesperslab),
            "{}",
            row.name
        );
        assert_eq!(kmalloc_cache_geometry(ty, idx, NR_CPUS as usize), Ok(g));
        checked += 1;
    }
    // 13 classes (8..8192 plus 96 and 192) in 4 types.
    assert_eq!(checked, 13 * 4, "every kmalloc, rcl, dma and cg cache");
}

#[test]
fn kmem_bucket_caches_match_linux_slabinfo() {
    // kmem_buckets_create() (msg_msg, memdup_user) makes one SLAB_NO_MERGE
    // cache per kmalloc class, named "<bucket>-<short size>". Their object
    // sizes are the class sizes, so their geometry is known exactly.
    use kmem::slab::{geometry::cache_geometry, SLAB_NO_MERGE};

    let mut checked = 0;
    for row in parse_slabinfo() {
        let Some((bucket, short)) = row.name.rsplit_once('-') else {
            continue;
        };
        if bucket != "msg_msg" && bucket != "memdup_user" {
            continue;
        }
        let size = short_size(short).expect("a class size");
        let g = cache_geometry(size, 0, SLAB_NO_MERGE, false, NR_CPUS as usize).unwrap();
        assert_eq!(
            (g.size, g.objects, g.pages_per_slab()),
            (row.objsize, row.objperslab, row.pagesperslab),
            "{}",
            row.name
        );
        checked += 1;
    }
    assert_eq!(checked, 2 * 13);
}

#[test]
fn every_slab_order_matches_linux_slabinfo() {
    // A cache's slab order and objects per slab depend only on s->size (the
    // objsize column) and the CPU count, whatever the object, flags or
    // constructor: calculate_order() sees nothing else. So every row of the
    // fixture checks calculate_order() and order_objects().
    use kmem::slab::geometry::{calculate_order, order_objects};

    let rows = parse_slabinfo();
    assert!(rows.len() > 200);
    for row in &rows {
        let order = calculate_order(row.objsize, NR_CPUS as usize)
            .unwrap_or_else(|e| panic!("{}: {e}", row.name));
        assert_eq!(
            (1usize << order, order_objects(order, row.objsize)),
            (row.pagesperslab, row.objperslab),
            "{} (size {})",
            row.name,
            row.objsize
        );
    }
}

#[test]
fn booted_kmalloc_caches_print_linuxs_slabinfo_rows() {
    // A 2-CPU machine's own /proc/slabinfo: every kmalloc row of the real
    // machine has the same objsize, objperslab and pagesperslab.
    const SLABINFO: &str = include_str!("fixtures/linux-6.18/slabinfo");
    let mut mem = vec![0u8; 16 << 20];
    let k = kmem::Kmem::boot_arena(&mut mem, 2).unwrap();
    let mut ours = String::new();
    kmem::proc::slabinfo(&k, &mut ours).unwrap();
    let geom = |text: &str, name: &str| -> Option<(u64, u64, u64)> {
        let l = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))?;
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(3)
            .take(3)
            .map(|x| x.parse().unwrap())
            .collect();
        Some((f[0], f[1], f[2]))
    };
    let mut n = 0;
    for line in SLABINFO.lines().skip(2) {
        let name = line.split_whitespace().next().unwrap();
        if kmem::kmalloc::parse_kmalloc_cache_name(name).is_none() {
            continue;
        }
        assert_eq!(geom(&ours, name), geom(SLABINFO, name), "{name}");
        n += 1;
    }
    assert_eq!(n, 52);
}
