//! Machine descriptions: PC memory maps, memory map files, sizes.

use kmem::memory_map::{MemRegion, ParseError, RegionKind};
use kmem_sim::{parse_memory_map, parse_size, pc_memory_map, pc_memory_map_numa, SimError};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn parse_size_accepts_memparse_forms() {
    let cases = [
        ("4096", 4096),
        ("0", 0),
        ("64K", 64 << 10),
        ("64k", 64 << 10),
        ("512M", 512 * MIB),
        ("512m", 512 * MIB),
        ("8G", 8 * GIB),
        ("8g", 8 * GIB),
        ("1T", 1 << 40),
        ("2p", 2 << 50),
        ("1E", 1 << 60),
        ("0x1000", 0x1000),
        ("0X10M", 16 * MIB),
        (" 3G ", 3 * GIB),
        ("15E", 15 << 60),
        ("18446744073709551615", u64::MAX),
    ];
    for (text, want) in cases {
        assert_eq!(parse_size(text).unwrap(), want, "{text}");
    }
}

#[test]
fn parse_size_rejects_garbage_and_overflow() {
    for text in [
        "",
        " ",
        "G",
        "abc",
        "12Q",
        "8GB",
        "8 G",
        "1.5G",
        "-1",
        "+4",
        "0x",
        "0xG",
        "16E",
        "17179869184G",
        "18446744073709551616",
        "4M4",
    ] {
        let err = parse_size(text).unwrap_err();
        assert!(matches!(err, SimError::BadSize { .. }), "{text}: {err:?}");
        assert!(
            err.to_string().starts_with(&format!("bad size `{text}`")),
            "{err}"
        );
    }
}

#[test]
fn parse_memory_map_reads_dmesg_and_bare_lines() {
    let text = "\
# a PC
[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable

BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved
0x100000-0x3fffffff usable node 1
0x40000000-0x4fffffff ACPI NVS
";
    let map = parse_memory_map(text).unwrap();
    assert_eq!(
        map,
        vec![
            MemRegion::usable(0, 0x9fc00),
            MemRegion::reserved(0x9fc00, 0x60400),
            MemRegion::usable(0x100000, 0x3ff0_0000).on_node(1),
            MemRegion {
                base: 0x4000_0000,
                size: 0x1000_0000,
                kind: RegionKind::AcpiNvs,
                node: 0
            },
        ]
    );
    assert_eq!(parse_memory_map("").unwrap(), vec![]);
}

#[test]
fn parse_memory_map_errors_carry_line_numbers() {
    let cases = [
        (
            "0x0-0xfff usable\n\n0x1000-0x1fff bogus\n",
            3,
            "0x1000-0x1fff bogus",
            ParseError::UnknownType,
        ),
        (
            "# ok\n[mem 0x2000-0x1000] usable\n",
            2,
            "[mem 0x2000-0x1000] usable",
            ParseError::Inverted,
        ),
        ("nonsense", 1, "nonsense", ParseError::NoRange),
        (
            "0x0-0xfff usable\n0xzz-0xfff usable",
            2,
            "0xzz-0xfff usable",
            ParseError::BadNumber,
        ),
        (
            "0x0-0xfff usable node 99",
            1,
            "0x0-0xfff usable node 99",
            ParseError::BadNode,
        ),
    ];
    for (text, line, bad, reason) in cases {
        match parse_memory_map(text) {
            Err(SimError::MapLine {
                line: l,
                text: t,
                reason: r,
            }) => {
                assert_eq!((l, t.as_str(), r), (line, bad, reason), "{text:?}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
        let msg = parse_memory_map(text).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("memory map line {line}: ")),
            "{msg}"
        );
        assert!(msg.contains(bad), "{msg}");
    }
}

fn lines(map: &[MemRegion]) -> Vec<String> {
    map.iter().map(|r| r.to_string()).collect()
}

#[test]
fn pc_map_of_4_gib() {
    assert_eq!(
        lines(&pc_memory_map(4 * GIB)),
        [
            "[mem 0x0000000000000000-0x0000000000000fff] reserved",
            "[mem 0x0000000000001000-0x000000000009fbff] usable",
            "[mem 0x000000000009fc00-0x00000000000fffff] reserved",
            "[mem 0x0000000000100000-0x00000000bfffffff] usable",
            "[mem 0x00000000c0000000-0x00000000ffffffff] reserved",
            "[mem 0x0000000100000000-0x000000013fffffff] usable",
        ]
    );
}

#[test]
fn pc_map_of_small_machines_has_no_pci_hole() {
    assert_eq!(
        lines(&pc_memory_map(3 * GIB)),
        [
            "[mem 0x0000000000000000-0x0000000000000fff] reserved",
            "[mem 0x0000000000001000-0x000000000009fbff] usable",
            "[mem 0x000000000009fc00-0x00000000000fffff] reserved",
            "[mem 0x0000000000100000-0x00000000bfffffff] usable",
        ]
    );
    let map = pc_memory_map(128 * MIB);
    assert_eq!(map.len(), 4);
    assert_eq!(map[3], MemRegion::usable(0x100000, 127 * MIB));
    // Every map passes the core's own check.
    for ram in [64 * MIB, 3 * GIB, 4 * GIB, 64 * GIB] {
        let checker = kmem_sim::SimPlatform::new(kmem_sim::SimConfig::new(1, pc_memory_map(ram)));
        assert!(checker.is_ok(), "{ram:#x}");
    }
}

#[test]
fn pc_numa_map_splits_usable_ram_by_address() {
    let map = pc_memory_map_numa(8 * GIB, 2);
    let usable: Vec<_> = map
        .iter()
        .filter(|r| r.kind == RegionKind::Usable)
        .collect();
    let total: u64 = usable.iter().map(|r| r.size).sum();
    let node0: u64 = usable.iter().filter(|r| r.node == 0).map(|r| r.size).sum();
    assert_eq!(
        total,
        pc_memory_map(8 * GIB)
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(|r| r.size)
            .sum::<u64>()
    );
    assert!(
        node0.abs_diff(total / 2) <= 4 * MIB,
        "{node0:#x} of {total:#x}"
    );
    // Low memory is on node 0; addresses only move to higher nodes.
    assert!(
        map.iter().filter(|r| r.base < 4 * GIB).all(|r| r.node == 0),
        "{map:#?}"
    );
    assert!(map
        .windows(2)
        .all(|w| w[0].node <= w[1].node && w[0].end() <= w[1].base));
    assert_eq!(map.last().unwrap().node, 1);
    // A boundary inside a range splits it at a 4 MiB aligned address.
    let split = usable.iter().find(|r| r.node == 1).unwrap();
    assert_eq!(split.base % (4 * MIB), 0);
    // One node is the plain map.
    assert_eq!(pc_memory_map_numa(8 * GIB, 1), pc_memory_map(8 * GIB));
    // Too many nodes for a tiny machine are clamped.
    let tiny = pc_memory_map_numa(16 * MIB, 64);
    assert!(tiny.iter().all(|r| r.node < 2), "{tiny:#?}");
}
