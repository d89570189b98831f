//! The firmware memory map: what RAM the machine has and where.
//!
//! Linux learns its memory from firmware (the e820 table on x86, the device
//! tree or UEFI elsewhere) and prints it at boot as
//! `BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable`. kmem takes
//! the same description: a list of ranges at physical addresses, each usable
//! or reserved, each on a NUMA node, with holes allowed. Boot feeds the usable
//! ranges to [`memblock`](crate::memblock) and derives zone boundaries from
//! the physical addresses, so zones land where Linux puts them.
//!
//! [`parse_line`] reads the dmesg form, so a user can paste the e820 lines of
//! their own machine into a file for `kmem boot --memmap FILE`; a trailing
//! `node N` assigns the range to NUMA node `N` (below
//! [`MAX_NUMNODES`]).
//!
//! Firmware maps may list overlapping ranges. [`validate`], which boot
//! runs, refuses them; [`sanitize`] first resolves them as Linux's
//! `e820__update_table()` does: where ranges overlap, the higher e820 type
//! wins, and touching ranges of the same type merge.

use crate::mmzone::MAX_NUMNODES;
use crate::platform::{Level, Platform};
use crate::{report, Error, Result};
use core::fmt;

/// The kind of a firmware memory range (e820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// RAM the kernel may use (`usable`).
    Usable,
    /// Not RAM for the kernel (`reserved`): firmware, MMIO, the PCI hole.
    Reserved,
    /// ACPI tables, reclaimable after boot (`ACPI data`); kmem treats it as reserved.
    AcpiData,
    /// ACPI non-volatile storage (`ACPI NVS`).
    AcpiNvs,
    /// Memory the firmware found faulty (`unusable`).
    Unusable,
}

impl RegionKind {
    /// The e820 name Linux prints.
    pub const fn name(self) -> &'static str {
        match self {
            RegionKind::Usable => "usable",
            RegionKind::Reserved => "reserved",
            RegionKind::AcpiData => "ACPI data",
            RegionKind::AcpiNvs => "ACPI NVS",
            RegionKind::Unusable => "unusable",
        }
    }

    /// The e820 type number (`E820_TYPE_RAM` is 1, `E820_TYPE_RESERVED`
    /// 2, ACPI data 3, ACPI NVS 4, `E820_TYPE_UNUSABLE` 5). Where ranges
    /// overlap, [`sanitize`] gives the overlap the highest.
    pub const fn e820_type(self) -> u32 {
        match self {
            RegionKind::Usable => 1,
            RegionKind::Reserved => 2,
            RegionKind::AcpiData => 3,
            RegionKind::AcpiNvs => 4,
            RegionKind::Unusable => 5,
        }
    }
}

/// One range of the firmware memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    /// First physical address.
    pub base: u64,
    /// Length in bytes (non-zero).
    pub size: u64,
    /// What the range is.
    pub kind: RegionKind,
    /// NUMA node the range belongs to.
    pub node: u8,
}

impl MemRegion {
    /// A usable range on node 0.
    pub const fn usable(base: u64, size: u64) -> Self {
        MemRegion {
            base,
            size,
            kind: RegionKind::Usable,
            node: 0,
        }
    }

    /// A reserved range.
    pub const fn reserved(base: u64, size: u64) -> Self {
        MemRegion {
            base,
            size,
            kind: RegionKind::Reserved,
            node: 0,
        }
    }

    /// The same range on node `node`.
    pub const fn on_node(mut self, node: u8) -> Self {
        self.node = node;
        self
    }

    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

impl fmt::Display for MemRegion {
    /// The dmesg form: `[mem 0x0000000000100000-0x00000000bfffffff] usable`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[mem {:#018x}-{:#018x}] {}",
            self.base,
            self.end() - 1,
            self.kind.name()
        )?;
        if self.node != 0 {
            write!(f, " node {}", self.node)?;
        }
        Ok(())
    }
}

/// Why a memory map line could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// No `[mem START-END]` or `START-END` range on the line.
    NoRange,
    /// A number is not valid hexadecimal (with or without `0x`).
    BadNumber,
    /// END is below START.
    Inverted,
    /// The type word is not one of the e820 names.
    UnknownType,
    /// `node` is not followed by a number below [`MAX_NUMNODES`].
    BadNode,
    /// END is `0xffffffffffffffff`: the range would reach the top of the
    /// 64-bit address space, and its size (2^64 for `0-0xffffffffffffffff`)
    /// or its end does not fit 64 bits.
    TooHigh,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::NoRange => "expected a range like [mem 0x0-0x9fbff]",
            ParseError::BadNumber => "bad hexadecimal number",
            ParseError::Inverted => "range end is below its start",
            ParseError::UnknownType => {
                "unknown type (expected usable, reserved, ACPI data, ACPI NVS or unusable)"
            }
            ParseError::BadNode => {
                return write!(
                    f,
                    "node must be a number below {MAX_NUMNODES} (MAX_NUMNODES)"
                )
            }
            ParseError::TooHigh => {
                "the range ends at 0xffffffffffffffff, the last byte of the 64-bit \
                 address space; end it below that"
            }
        })
    }
}

fn parse_hex(s: &str) -> core::result::Result<u64, ParseError> {
    let s = s.trim();
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(digits, 16).map_err(|_| ParseError::BadNumber)
}

/// Parse one line of a memory map.
///
/// Accepts the dmesg form, with or without its prefixes
/// (`BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable`), or the
/// bare form `0x100000-0xbfffffff usable`, either followed by `node N`
/// (`N` below [`MAX_NUMNODES`]). The end address is inclusive, as Linux
/// prints it, and must be below `0xffffffffffffffff`. Blank lines, lines
/// starting with `#` and the header Linux prints above the table
/// (`BIOS-provided physical RAM map:`, or another `... physical RAM map:`)
/// give `Ok(None)`.
///
/// ```
/// use kmem::memory_map::{parse_line, RegionKind};
/// let r = parse_line("BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable")
///     .unwrap()
///     .unwrap();
/// assert_eq!((r.base, r.size, r.kind), (0x100000, 0xbff0_0000, RegionKind::Usable));
/// assert_eq!(parse_line("[    0.000000] BIOS-provided physical RAM map:"), Ok(None));
/// ```
pub fn parse_line(line: &str) -> core::result::Result<Option<MemRegion>, ParseError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line.ends_with("physical RAM map:") {
        return Ok(None);
    }
    // Drop a leading "[    0.000000] " timestamp and "BIOS-e820: " style prefixes.
    let (range, rest) = if let Some(i) = line.find("[mem ") {
        let after = &line[i + 5..];
        let close = after.find(']').ok_or(ParseError::NoRange)?;
        (&after[..close], &after[close + 1..])
    } else {
        let mut it = line.splitn(2, char::is_whitespace);
        let r = it.next().ok_or(ParseError::NoRange)?;
        (r, it.next().unwrap_or(""))
    };
    let (a, b) = range.split_once('-').ok_or(ParseError::NoRange)?;
    let start = parse_hex(a)?;
    let last = parse_hex(b)?;
    if last < start {
        return Err(ParseError::Inverted);
    }
    if last == u64::MAX {
        return Err(ParseError::TooHigh);
    }
    let mut rest = rest.trim();
    let mut node = 0u8;
    if let Some(i) = rest
        .rfind(" node ")
        .or_else(|| rest.starts_with("node ").then_some(0))
    {
        let num = rest[i..].trim().trim_start_matches("node").trim();
        let n: u8 = num.parse().map_err(|_| ParseError::BadNode)?;
        if usize::from(n) >= MAX_NUMNODES {
            return Err(ParseError::BadNode);
        }
        node = n;
        rest = rest[..i].trim();
    }
    let kind = match rest {
        "usable" | "System RAM" => RegionKind::Usable,
        "reserved" => RegionKind::Reserved,
        "ACPI data" => RegionKind::AcpiData,
        "ACPI NVS" => RegionKind::AcpiNvs,
        "unusable" => RegionKind::Unusable,
        _ => return Err(ParseError::UnknownType),
    };
    Ok(Some(MemRegion {
        base: start,
        size: last - start + 1,
        kind,
        node,
    }))
}

/// Check a memory map before boot: every range non-empty and no two ranges
/// overlapping. Overlaps are reported in the kernel's e820 wording and
/// refused with [`Error::InvalidArgument`]; nothing is guessed here (run
/// [`sanitize`] first to resolve them as Linux does).
pub fn validate<P: Platform + ?Sized>(p: &P, map: &[MemRegion]) -> Result<()> {
    for (i, r) in map.iter().enumerate() {
        if r.size == 0 || r.base.checked_add(r.size).is_none() {
            report!(
                p,
                Level::Err,
                "e820: empty or wrapping range at base {:#018x} size {:#x}",
                r.base,
                r.size
            );
            return Err(Error::InvalidArgument);
        }
        for o in &map[..i] {
            if r.base < o.end() && o.base < r.end() {
                report!(p, Level::Err, "e820: overlapping ranges {} and {}", o, r);
                return Err(Error::InvalidArgument);
            }
        }
    }
    Ok(())
}

/// Why [`sanitize`] could not resolve a memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanitizeError {
    /// Entry `index` wraps around the end of the 64-bit address space
    /// (Linux's `e820__update_table()` gives up on such a table too).
    Wraps {
        /// Its index in the map.
        index: usize,
    },
    /// Entries `first` and `second` (indexes in the map, `first` listed
    /// earlier) overlap, have the winning type there and sit on different
    /// NUMA nodes: which node the overlap belongs to is not said.
    NodeConflict {
        /// The earlier entry's index.
        first: usize,
        /// The later entry's index.
        second: usize,
    },
    /// The output has no room for the sanitized map (a map of `n` ranges
    /// needs at most `2 * n - 1` entries).
    NoRoom,
}

impl fmt::Display for SanitizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanitizeError::Wraps { index } => {
                write!(f, "entry {index} wraps around the 64-bit address space")
            }
            SanitizeError::NodeConflict { first, second } => write!(
                f,
                "entries {first} and {second} overlap with the same type on different nodes"
            ),
            SanitizeError::NoRoom => f.write_str("no room for the sanitized map"),
        }
    }
}

/// Resolve overlapping ranges as Linux's `e820__update_table()` does,
/// writing the result to `out` in address order and returning how many
/// entries it has.
///
/// Every address keeps the highest [`e820_type`](RegionKind::e820_type)
/// of the ranges that cover it (usable < reserved < ACPI data < ACPI NVS <
/// unusable), so firmware's reservations always win over RAM. Ranges of
/// the same type and node that touch or overlap become one; empty ranges
/// are dropped; holes stay holes. A map without overlaps keeps its
/// ranges, sorted and with touching ones merged, as Linux's does. The NUMA
/// node, which Linux's table does not carry, comes with the winning
/// range; two winning ranges on different nodes are refused
/// ([`SanitizeError::NodeConflict`]). `out` needs room for
/// `2 * map.len()` entries at most.
///
/// Heap-free and quadratic in the number of ranges, which firmware keeps
/// small (Linux's table holds 128 plus 3 per node).
///
/// ```
/// use kmem::memory_map::{sanitize, MemRegion};
/// let map = [MemRegion::usable(0, 0x4000), MemRegion::reserved(0x2000, 0x1000)];
/// let mut out = [MemRegion::usable(0, 1); 4];
/// let n = sanitize(&map, &mut out).unwrap();
/// assert_eq!(
///     &out[..n],
///     [
///         MemRegion::usable(0, 0x2000),
///         MemRegion::reserved(0x2000, 0x1000),
///         MemRegion::usable(0x3000, 0x1000),
///     ]
/// );
/// ```
pub fn sanitize(
    map: &[MemRegion],
    out: &mut [MemRegion],
) -> core::result::Result<usize, SanitizeError> {
    if let Some(index) = map
        .iter()
        .position(|r| r.base.checked_add(r.size).is_none())
    {
        return Err(SanitizeError::Wraps { index });
    }
    let live = || map.iter().enumerate().filter(|(_, r)| r.size != 0);
    // The next change point above `at`: the nearest start or end.
    let next_point = |at: u64| {
        live()
            .flat_map(|(_, r)| [r.base, r.end()])
            .filter(|&a| a > at)
            .min()
    };
    let mut n = 0usize;
    let Some(mut at) = live().map(|(_, r)| r.base).min() else {
        return Ok(0);
    };
    while let Some(next) = next_point(at) {
        // The ranges covering [at, next): the highest type wins, and all
        // ranges of that type must agree on the node.
        let covering = || live().filter(|(_, r)| r.base <= at && at < r.end());
        let top = covering().map(|(_, r)| r.kind.e820_type()).max();
        let mut win: Option<(usize, &MemRegion)> = None;
        for (i, r) in covering().filter(|(_, r)| Some(r.kind.e820_type()) == top) {
            match win {
                Some((first, w)) if w.node != r.node => {
                    return Err(SanitizeError::NodeConflict { first, second: i })
                }
                Some(_) => {}
                None => win = Some((i, r)),
            }
        }
        if let Some((_, w)) = win {
            match n.checked_sub(1).map(|l| &mut out[l]) {
                Some(last) if last.end() == at && last.kind == w.kind && last.node == w.node => {
                    last.size += next - at;
                }
                _ => {
                    let slot = out.get_mut(n).ok_or(SanitizeError::NoRoom)?;
                    *slot = MemRegion {
                        base: at,
                        size: next - at,
                        kind: w.kind,
                        node: w.node,
                    };
                    n += 1;
                }
            }
        }
        at = next;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn sanitized(map: &[MemRegion]) -> core::result::Result<Vec<MemRegion>, SanitizeError> {
        let mut out = std::vec![MemRegion::usable(0, 1); 2 * map.len()];
        let n = sanitize(map, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    #[test]
    fn a_range_up_to_the_top_of_the_address_space_is_refused() {
        for line in [
            "[mem 0x0000000000000000-0xffffffffffffffff] usable",
            "BIOS-e820: [mem 0x0000000100000000-0xffffffffffffffff] reserved",
            "0x0-0xffffffffffffffff usable",
        ] {
            assert_eq!(parse_line(line), Err(ParseError::TooHigh), "{line}");
        }
        let top = parse_line("0x1000-0xfffffffffffffffe usable")
            .unwrap()
            .unwrap();
        assert_eq!((top.size, top.end()), (u64::MAX - 0x1000, u64::MAX));
    }

    #[test]
    fn node_numbers_stop_at_max_numnodes() {
        let last = std::format!("0x0-0xfff usable node {}", MAX_NUMNODES - 1);
        assert_eq!(
            parse_line(&last).unwrap().unwrap().node as usize,
            MAX_NUMNODES - 1
        );
        let over = std::format!("0x0-0xfff usable node {MAX_NUMNODES}");
        assert_eq!(parse_line(&over), Err(ParseError::BadNode));
        assert_eq!(
            std::format!("{}", ParseError::BadNode),
            std::format!("node must be a number below {MAX_NUMNODES} (MAX_NUMNODES)")
        );
    }

    #[test]
    fn the_table_header_linux_prints_is_skipped() {
        for line in [
            "BIOS-provided physical RAM map:",
            "[    0.000000] BIOS-provided physical RAM map:",
            "[    0.000000] e820: BIOS-provided physical RAM map:",
            "[    0.004000] modified physical RAM map:",
        ] {
            assert_eq!(parse_line(line), Ok(None), "{line}");
        }
        assert!(parse_line("BIOS-provided map").is_err());
    }

    #[test]
    fn sanitize_lets_the_higher_type_win() {
        let nvs = |base, size| MemRegion {
            base,
            size,
            kind: RegionKind::AcpiNvs,
            node: 0,
        };
        // RAM with a reservation inside, an NVS range over its end and
        // reserved space below an overlapping, higher ACPI NVS range.
        let map = [
            MemRegion::usable(0x1000, 0x9000),
            MemRegion::reserved(0x4000, 0x1000),
            nvs(0x9000, 0x2000),
            MemRegion::reserved(0x10000, 0x4000),
            nvs(0x12000, 0x1000),
        ];
        assert_eq!(
            sanitized(&map).unwrap(),
            [
                MemRegion::usable(0x1000, 0x3000),
                MemRegion::reserved(0x4000, 0x1000),
                MemRegion::usable(0x5000, 0x4000),
                nvs(0x9000, 0x2000),
                MemRegion::reserved(0x10000, 0x2000),
                nvs(0x12000, 0x1000),
                MemRegion::reserved(0x13000, 0x1000),
            ]
        );
        // The order of the entries does not matter.
        let mut rev = map;
        rev.reverse();
        assert_eq!(sanitized(&rev), sanitized(&map));
        // Overlapping and touching ranges of one type merge; holes stay.
        let map = [
            MemRegion::usable(0x3000, 0x1000),
            MemRegion::usable(0, 0x2000),
            MemRegion::usable(0x1000, 0x2000),
            MemRegion::usable(0x8000, 0x1000),
            MemRegion::usable(0x9000, 0),
        ];
        assert_eq!(
            sanitized(&map).unwrap(),
            [
                MemRegion::usable(0, 0x4000),
                MemRegion::usable(0x8000, 0x1000)
            ]
        );
        // An empty map stays empty.
        assert_eq!(sanitized(&[]).unwrap(), []);
    }

    #[test]
    fn sanitize_keeps_nodes_and_refuses_a_contested_one() {
        let map = [
            MemRegion::usable(0, 0x4000),
            MemRegion::usable(0x4000, 0x4000).on_node(1),
            MemRegion::reserved(0x3000, 0x2000).on_node(1),
        ];
        assert_eq!(
            sanitized(&map).unwrap(),
            [
                MemRegion::usable(0, 0x3000),
                MemRegion::reserved(0x3000, 0x2000).on_node(1),
                MemRegion::usable(0x5000, 0x3000).on_node(1),
            ]
        );
        // Usable on node 0 and node 1 at once: refused, not guessed. A
        // higher type over the contested bytes settles it.
        let contested = [
            MemRegion::usable(0, 0x4000),
            MemRegion::usable(0x2000, 0x4000).on_node(1),
        ];
        assert_eq!(
            sanitized(&contested),
            Err(SanitizeError::NodeConflict {
                first: 0,
                second: 1
            })
        );
        let settled = [
            contested[0],
            contested[1],
            MemRegion::reserved(0x2000, 0x2000),
        ];
        assert_eq!(
            sanitized(&settled).unwrap(),
            [
                MemRegion::usable(0, 0x2000),
                MemRegion::reserved(0x2000, 0x2000),
                MemRegion::usable(0x4000, 0x2000).on_node(1),
            ]
        );
    }

    #[test]
    fn sanitize_refuses_a_wrapping_range_and_a_short_output() {
        let map = [MemRegion::usable(0, 0x1000), MemRegion::usable(2, u64::MAX)];
        assert_eq!(sanitized(&map), Err(SanitizeError::Wraps { index: 1 }));
        let map = [
            MemRegion::usable(0, 0x3000),
            MemRegion::reserved(0x1000, 0x1000),
        ];
        let mut out = [MemRegion::usable(0, 1); 2];
        assert_eq!(sanitize(&map, &mut out), Err(SanitizeError::NoRoom));
    }
}
