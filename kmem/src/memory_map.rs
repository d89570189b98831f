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
//! `node N` assigns the range to NUMA node `N`.

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
    /// `node` is not followed by a number below 64.
    BadNode,
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
            ParseError::BadNode => "node must be a number below 64",
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
/// bare form `0x100000-0xbfffffff usable`, either followed by `node N`. The
/// end address is inclusive, as Linux prints it. Blank lines and lines
/// starting with `#` give `Ok(None)`.
///
/// ```
/// use kmem::memory_map::{parse_line, RegionKind};
/// let r = parse_line("BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable")
///     .unwrap()
///     .unwrap();
/// assert_eq!((r.base, r.size, r.kind), (0x100000, 0xbff0_0000, RegionKind::Usable));
/// ```
pub fn parse_line(line: &str) -> core::result::Result<Option<MemRegion>, ParseError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
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
    let mut rest = rest.trim();
    let mut node = 0u8;
    if let Some(i) = rest
        .rfind(" node ")
        .or_else(|| rest.starts_with("node ").then_some(0))
    {
        let num = rest[i..].trim().trim_start_matches("node").trim();
        let n: u8 = num.parse().map_err(|_| ParseError::BadNode)?;
        if n >= 64 {
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
/// refused with [`Error::InvalidArgument`]; nothing is guessed.
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
