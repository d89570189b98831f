//! Machine descriptions: PC-like memory maps, memory map files, sizes.

use crate::SimError;
use kmem::memory_map::{parse_line, sanitize, MemRegion, RegionKind, SanitizeError};
use kmem::mmzone::MAX_NUMNODES;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// End of the usable conventional memory below 640 KiB on a PC (the EBDA
/// starts at `0x9fc00`).
pub const PC_LOW_END: u64 = 0x9fc00;
/// Start of extended memory (1 MiB).
pub const PC_EXT_START: u64 = 0x10_0000;
/// Start of the PCI hole (3 GiB).
pub const PC_PCI_HOLE: u64 = 3 * GIB;
/// End of the PCI hole (4 GiB), where the rest of the RAM is remapped.
pub const PC_HIGH_START: u64 = 4 * GIB;

/// Granularity of NUMA node boundaries in [`pc_memory_map_numa`]: a
/// `MAX_PAGE_ORDER` block (4 MiB), so no buddy block straddles two nodes.
pub const NUMA_ALIGN: u64 = 4 * MIB;

fn push(map: &mut Vec<MemRegion>, base: u64, end: u64, kind: RegionKind) {
    if end > base {
        map.push(MemRegion {
            base,
            size: end - base,
            kind,
            node: 0,
        });
    }
}

/// A PC-like e820 memory map for a machine with `ram` bytes of RAM.
///
/// As firmware reports it after Linux's own fix-up of page 0:
///
/// ```text
/// [mem 0x0000000000000000-0x0000000000000fff] reserved   page 0
/// [mem 0x0000000000001000-0x000000000009fbff] usable     conventional memory
/// [mem 0x000000000009fc00-0x00000000000fffff] reserved   EBDA, VGA, BIOS ROM
/// [mem 0x0000000000100000-...               ] usable     up to min(ram, 3 GiB)
/// [mem 0x00000000c0000000-0x00000000ffffffff] reserved   PCI hole (ram > 3 GiB)
/// [mem 0x0000000100000000-...               ] usable     the rest (ram > 3 GiB)
/// ```
///
/// The first usable range ends in the middle of a page, as on real PCs; the
/// core trims it to whole pages. `ram` counts from physical address 0, so the
/// usable total is slightly below `ram` (the holes below 1 MiB are lost, the
/// PCI hole is not). Ranges that would be empty on a tiny `ram` are left out.
///
/// ```
/// let map = kmem_sim::pc_memory_map(4 << 30);
/// assert_eq!(map.last().unwrap().to_string(),
///            "[mem 0x0000000100000000-0x000000013fffffff] usable");
/// ```
pub fn pc_memory_map(ram: u64) -> Vec<MemRegion> {
    let mut map = Vec::new();
    push(&mut map, 0, 0x1000, RegionKind::Reserved);
    push(&mut map, 0x1000, PC_LOW_END.min(ram), RegionKind::Usable);
    push(&mut map, PC_LOW_END, PC_EXT_START, RegionKind::Reserved);
    push(
        &mut map,
        PC_EXT_START,
        ram.min(PC_PCI_HOLE),
        RegionKind::Usable,
    );
    if ram > PC_PCI_HOLE {
        push(&mut map, PC_PCI_HOLE, PC_HIGH_START, RegionKind::Reserved);
        let high_end = PC_HIGH_START.saturating_add(ram - PC_PCI_HOLE);
        push(&mut map, PC_HIGH_START, high_end, RegionKind::Usable);
    }
    map
}

/// [`pc_memory_map`] with the usable RAM split into `nodes` NUMA nodes.
///
/// The usable bytes are cut, in address order, into `nodes` contiguous parts
/// of nearly equal size: node 0 gets the lowest addresses (all memory below
/// 1 MiB and the start of the rest), node `nodes - 1` the highest. Node
/// boundaries are aligned down to [`NUMA_ALIGN`]; a range crossing one is
/// split. Reserved ranges belong to the node of their first byte.
///
/// `nodes` is clamped to `1..=`[`MAX_NUMNODES`] (the most boot accepts)
/// and so that each node gets at least 8 MiB; a machine too small for that
/// gets fewer nodes. Callers that take `nodes` from a user say so when the
/// map's highest node is below `nodes - 1`.
pub fn pc_memory_map_numa(ram: u64, nodes: usize) -> Vec<MemRegion> {
    let map = pc_memory_map(ram);
    let usable: u64 = map
        .iter()
        .filter(|r| r.kind == RegionKind::Usable)
        .map(|r| r.size)
        .sum();
    let nodes = (nodes.clamp(1, MAX_NUMNODES) as u64).min((usable / (2 * NUMA_ALIGN)).max(1));
    // Physical address of the byte at usable offset `off`.
    let phys_of = |off: u64| {
        let mut left = off;
        for r in map.iter().filter(|r| r.kind == RegionKind::Usable) {
            if left < r.size {
                return r.base + left;
            }
            left -= r.size;
        }
        u64::MAX
    };
    let mut bounds: Vec<u64> = (1..nodes)
        .map(|k| {
            let off = (usable as u128 * k as u128 / nodes as u128) as u64;
            phys_of(off) / NUMA_ALIGN * NUMA_ALIGN
        })
        .collect();
    bounds.dedup();
    let node_of = |pa: u64| bounds.iter().take_while(|&&b| b <= pa).count() as u8;

    let mut out = Vec::new();
    for r in map {
        if r.kind != RegionKind::Usable {
            out.push(r.on_node(node_of(r.base)));
            continue;
        }
        let mut base = r.base;
        for &b in bounds.iter().filter(|&&b| b > r.base && b < r.end()) {
            out.push(MemRegion::usable(base, b - base).on_node(node_of(base)));
            base = b;
        }
        out.push(MemRegion::usable(base, r.end() - base).on_node(node_of(base)));
    }
    out
}

/// Read a memory map, one range per line, in the forms
/// [`kmem::memory_map::parse_line`] accepts (dmesg `BIOS-e820:` lines or
/// bare `START-END type [node N]`). Blank lines, `#` comments and the
/// `BIOS-provided physical RAM map:` header are skipped. The first bad line
/// is an error carrying its 1-based number and its text. Overlapping
/// ranges are sanitized as Linux does ([`read_memory_map`] also says what
/// that changed).
///
/// ```
/// let map = kmem_sim::parse_memory_map(
///     "# my machine\nBIOS-e820: [mem 0x0000000000100000-0x000000003fffffff] usable\n",
/// ).unwrap();
/// assert_eq!(map.len(), 1);
/// assert!(kmem_sim::parse_memory_map("0x0-0xfff usable\nnonsense\n")
///     .unwrap_err().to_string().starts_with("memory map line 2:"));
/// ```
pub fn parse_memory_map(text: &str) -> Result<Vec<MemRegion>, SimError> {
    read_memory_map(text).map(|m| m.map)
}

/// A memory map read by [`read_memory_map`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryMapText {
    /// The ranges to boot with: as written when no two overlap, otherwise
    /// sanitized (in address order, overlaps resolved, touching ranges of
    /// one type merged).
    pub map: Vec<MemRegion>,
    /// What sanitizing changed, one sentence per pair of overlapping lines
    /// and a last one with the entry counts; empty when no lines overlap.
    pub changes: Vec<String>,
}

/// [`parse_memory_map`], also saying what sanitizing changed.
///
/// Overlapping ranges are resolved as Linux's `e820__update_table()` does
/// ([`kmem::memory_map::sanitize`]): the higher e820 type wins (usable <
/// reserved < ACPI data < ACPI NVS < unusable). Two lines that overlap with
/// the winning type on different nodes are refused
/// ([`SimError::InvalidMap`]): which node the overlap is on is not said.
///
/// ```
/// let m = kmem_sim::read_memory_map(
///     "0x0-0x3fffffff usable\n0x30000000-0x3fffffff reserved\n",
/// ).unwrap();
/// assert_eq!(m.map.len(), 2);
/// assert_eq!(
///     m.changes[0],
///     "lines 1 and 2 overlap at [mem 0x0000000030000000-0x000000003fffffff]: \
///      reserved wins over usable"
/// );
/// ```
pub fn read_memory_map(text: &str) -> Result<MemoryMapText, SimError> {
    let mut map = Vec::new();
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(r)) => {
                map.push(r);
                lines.push(i + 1);
            }
            Ok(None) => {}
            Err(reason) => {
                return Err(SimError::MapLine {
                    line: i + 1,
                    text: line.trim().to_string(),
                    reason,
                })
            }
        }
    }
    let overlap = |a: &MemRegion, b: &MemRegion| {
        let (start, end) = (a.base.max(b.base), a.end().min(b.end()));
        (start < end).then(|| format!("[mem {start:#018x}-{:#018x}]", end - 1))
    };
    let mut changes = Vec::new();
    for (j, b) in map.iter().enumerate() {
        for (i, a) in map[..j].iter().enumerate() {
            let Some(range) = overlap(a, b) else { continue };
            let (hi, lo) = if a.kind.e820_type() >= b.kind.e820_type() {
                (a, b)
            } else {
                (b, a)
            };
            let what = if hi.kind == lo.kind && hi.node == lo.node {
                format!("both {}, merged", hi.kind.name())
            } else if hi.kind == lo.kind {
                format!(
                    "both {}, on node {} and node {}",
                    hi.kind.name(),
                    a.node,
                    b.node
                )
            } else {
                format!("{} wins over {}", hi.kind.name(), lo.kind.name())
            };
            changes.push(format!(
                "lines {} and {} overlap at {range}: {what}",
                lines[i], lines[j]
            ));
        }
    }
    if changes.is_empty() {
        return Ok(MemoryMapText { map, changes });
    }
    let mut out = vec![MemRegion::usable(0, 1); 2 * map.len()];
    let n = sanitize(&map, &mut out).map_err(|e| match e {
        SanitizeError::NodeConflict { first, second } => {
            let (a, b) = (&map[first], &map[second]);
            SimError::InvalidMap(format!(
                "lines {} and {} overlap at {} as {} on node {} and node {}; \
                 put them on one node or make them not overlap",
                lines[first],
                lines[second],
                overlap(a, b).unwrap_or_default(),
                a.kind.name(),
                a.node,
                b.node
            ))
        }
        other => SimError::InvalidMap(other.to_string()),
    })?;
    out.truncate(n);
    changes.push(format!(
        "{} entries sanitized into {} as Linux's e820__update_table() does \
         (where ranges overlap, the higher e820 type wins)",
        map.len(),
        n
    ));
    Ok(MemoryMapText { map: out, changes })
}

/// Parse a size like the kernel's `memparse()`: a number with an optional
/// binary suffix `K`, `M`, `G`, `T`, `P` or `E` (case-insensitive).
///
/// The number is decimal, or hexadecimal with a `0x` prefix. Unlike
/// `memparse()`, a leading `0` does not mean octal (`010M` is ten
/// mebibytes), and nothing may follow the suffix. Garbage, an empty string
/// and values that overflow 64 bits are errors.
///
/// ```
/// assert_eq!(kmem_sim::parse_size("512M").unwrap(), 512 << 20);
/// assert_eq!(kmem_sim::parse_size("8g").unwrap(), 8 << 30);
/// assert!(kmem_sim::parse_size("12Q").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<u64, SimError> {
    let bad = |why: &'static str| SimError::BadSize {
        text: s.to_string(),
        why,
    };
    let t = s.trim();
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (t, 10),
    };
    let n = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    let (num, suffix) = digits.split_at(n);
    if num.is_empty() {
        return Err(bad("expected a number"));
    }
    let value = u64::from_str_radix(num, radix).map_err(|_| bad("number too large"))?;
    let shift = match suffix {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return Err(bad("unknown suffix (expected K, M, G, T, P or E)")),
    };
    if shift > 0 && value.leading_zeros() < shift {
        return Err(bad("number too large"));
    }
    Ok(value << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_nodes_cover_usable_ram() {
        let ram = 16 * GIB;
        let plain: u64 = pc_memory_map(ram)
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(|r| r.size)
            .sum();
        let map = pc_memory_map_numa(ram, 4);
        let mut per_node = [0u64; 4];
        for r in map.iter().filter(|r| r.kind == RegionKind::Usable) {
            per_node[r.node as usize] += r.size;
        }
        assert_eq!(per_node.iter().sum::<u64>(), plain);
        for &n in &per_node {
            assert!(n.abs_diff(plain / 4) <= NUMA_ALIGN, "{per_node:?}");
        }
        // Nodes increase with addresses.
        assert!(map.windows(2).all(|w| w[0].node <= w[1].node));
        assert_eq!(map[0].node, 0);
    }

    #[test]
    fn numa_maps_have_at_most_max_numnodes_nodes() {
        for asked in [MAX_NUMNODES, MAX_NUMNODES + 1, 1000, usize::MAX] {
            let map = pc_memory_map_numa(64 * GIB, asked);
            let top = map.iter().map(|r| usize::from(r.node)).max().unwrap();
            assert_eq!(top, MAX_NUMNODES - 1, "{asked} nodes asked");
        }
        // A small machine gets fewer: 8 MiB of RAM per node at least.
        let map = pc_memory_map_numa(64 * MIB, MAX_NUMNODES);
        assert_eq!(map.iter().map(|r| r.node).max(), Some(6));
    }

    /// The top of what `kmem boot` prints: pasting it back must work.
    const KMEM_BOOT_LOG: &str = "\
BIOS-provided physical RAM map:
BIOS-e820: [mem 0x0000000000000000-0x0000000000000fff] reserved
BIOS-e820: [mem 0x0000000000001000-0x000000000009fbff] usable
BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved
BIOS-e820: [mem 0x0000000000100000-0x0000000003ffffff] usable
";

    #[test]
    fn the_boot_log_header_is_accepted() {
        let m = read_memory_map(KMEM_BOOT_LOG).unwrap();
        assert_eq!(m.map, pc_memory_map(64 * MIB));
        assert!(m.changes.is_empty(), "{:?}", m.changes);
        let dmesg = "[    0.000000] BIOS-provided physical RAM map:\n\
                     [    0.000000] BIOS-e820: [mem 0x0000000000100000-0x0000000003ffffff] usable\n";
        assert_eq!(
            parse_memory_map(dmesg).unwrap(),
            [MemRegion::usable(0x100000, 63 * MIB)]
        );
    }

    #[test]
    fn overlapping_lines_are_sanitized_and_the_changes_said() {
        let text = "\
# usable RAM with the PCI hole and an ACPI table over it
0x0-0x13fffffff usable
0xc0000000-0xffffffff reserved
0xbff00000-0xbfffffff ACPI NVS
0x100000000-0x10fffffff usable
";
        let m = read_memory_map(text).unwrap();
        let nvs = MemRegion {
            base: 0xbff0_0000,
            size: MIB,
            kind: RegionKind::AcpiNvs,
            node: 0,
        };
        assert_eq!(
            m.map,
            [
                MemRegion::usable(0, 0xbff0_0000),
                nvs,
                MemRegion::reserved(3 * GIB, GIB),
                MemRegion::usable(4 * GIB, GIB),
            ]
        );
        assert_eq!(
            m.changes,
            [
                "lines 2 and 3 overlap at [mem 0x00000000c0000000-0x00000000ffffffff]: \
                 reserved wins over usable",
                "lines 2 and 4 overlap at [mem 0x00000000bff00000-0x00000000bfffffff]: \
                 ACPI NVS wins over usable",
                "lines 2 and 5 overlap at [mem 0x0000000100000000-0x000000010fffffff]: \
                 both usable, merged",
                "4 entries sanitized into 4 as Linux's e820__update_table() does \
                 (where ranges overlap, the higher e820 type wins)",
            ]
        );
        assert_eq!(parse_memory_map(text).unwrap(), m.map);
    }

    #[test]
    fn an_overlap_on_two_nodes_is_refused_with_its_lines() {
        let text = "0x0-0x3fffffff usable\n\n0x20000000-0x5fffffff usable node 1\n";
        let e = read_memory_map(text).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid memory map: lines 1 and 3 overlap at \
             [mem 0x0000000020000000-0x000000003fffffff] as usable on node 0 and node 1; \
             put them on one node or make them not overlap"
        );
    }

    #[test]
    fn bad_nodes_and_the_top_of_the_address_space_are_refused() {
        let e = parse_memory_map("0x0-0xfff reserved\n0x1000-0x3fffffff usable node 64\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "memory map line 2: node must be a number below 64 (MAX_NUMNODES): \
             `0x1000-0x3fffffff usable node 64`"
        );
        let e = parse_memory_map("[mem 0x0000000000000000-0xffffffffffffffff] usable")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("memory map line 1: the range ends at 0xffffffffffffffff"),
            "{e}"
        );
    }
}
