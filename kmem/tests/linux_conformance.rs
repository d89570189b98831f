//! Conformance with a real kernel: Linux 6.18 on a 2-CPU x86_64 machine.
//!
//! The fixtures in `tests/fixtures/linux-6.18/` were read from `/proc` of
//! that machine. This test takes each zone's managed pages and the vm
//! sysctls from them, runs kmem's watermark, lowmem-reserve, per-CPU list
//! and vmstat-threshold code (the same functions boot uses), and requires
//! every number the kernel printed to come out identical.

use kmem::page_alloc::watermark::{
    calculate_min_free_kbytes, lowmem_pages, pageset_high_and_batch, setup_per_zone_lowmem_reserve,
    thp_recommended_min_free_kbytes, vmstat_threshold, zone_wmarks, VmSysctl, ZoneInput,
};
use kmem::page_alloc::ZoneType;

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
    let inputs: Vec<ZoneInput> = fz
        .iter()
        .map(|z| ZoneInput {
            ztype: ztype(&z.name),
            managed: z.managed,
        })
        .collect();
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
    let inputs: Vec<ZoneInput> = fz
        .iter()
        .map(|z| ZoneInput {
            ztype: ztype(&z.name),
            managed: z.managed,
        })
        .collect();
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
    let inputs: Vec<ZoneInput> = fz
        .iter()
        .map(|z| ZoneInput {
            ztype: ztype(&z.name),
            managed: z.managed,
        })
        .collect();
    let base = calculate_min_free_kbytes(&inputs);
    assert_eq!(base, 10002);
    assert_eq!(
        thp_recommended_min_free_kbytes(&inputs, base),
        sysctl().min_free_kbytes
    );
}
