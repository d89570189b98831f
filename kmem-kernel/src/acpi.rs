//! The CPUs, from ACPI's MADT (`acpi_parse_madt()`, `acpi_parse_lapic()`):
//! the RSDP the firmware's configuration table names, its XSDT (or RSDT),
//! and the MADT's local APIC entries. Read while the firmware's identity
//! map is live; ACPI tables stay reserved for the kernel's life.

/// Most CPUs this kernel brings up (Linux's `NR_CPUS` is a build option too).
pub const NR_CPUS: usize = 64;

/// What the MADT says.
pub struct Madt {
    /// Physical address of the local APIC registers.
    pub lapic_phys: u64,
    /// APIC ids of the enabled CPUs; the first is the boot CPU's order in
    /// the table, not necessarily the boot CPU.
    pub apic_ids: [u32; NR_CPUS],
    /// How many of `apic_ids` are valid.
    pub nr: usize,
    /// Enabled CPUs not brought up: beyond [`NR_CPUS`], or with an APIC id
    /// xAPIC mode cannot address (0xff and above).
    pub ignored: usize,
}

/// Read `len` bytes at physical address `pa` (identity-mapped by firmware).
///
/// # Safety
///
/// `[pa, pa + len)` is mapped and readable.
unsafe fn bytes<'a>(pa: u64, len: usize) -> &'a [u8] {
    // SAFETY: the caller's promise.
    unsafe { core::slice::from_raw_parts(pa as *const u8, len) }
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) == 0
}

/// A whole SDT (header and body) at `pa`, if its checksum holds.
///
/// # Safety
///
/// `pa` is an ACPI table the firmware published.
unsafe fn sdt<'a>(pa: u64) -> Option<&'a [u8]> {
    // SAFETY: a published table has a 36-byte header whose length field
    // covers the whole table.
    let len = le32(unsafe { bytes(pa, 36) }, 4) as usize;
    if len < 36 {
        return None;
    }
    // SAFETY: as above.
    let t = unsafe { bytes(pa, len) };
    checksum_ok(t).then_some(t)
}

/// Find the MADT from the RSDP at `rsdp` and read its CPUs.
///
/// # Safety
///
/// `rsdp` is the RSDP of the firmware's configuration table, and its
/// tables are mapped.
pub unsafe fn parse(rsdp: u64) -> Result<Madt, &'static str> {
    // SAFETY: the RSDP is 20 bytes (ACPI 1.0), 36 from revision 2.
    let r = unsafe { bytes(rsdp, 36) };
    if &r[..8] != b"RSD PTR " || !checksum_ok(&r[..20]) {
        return Err("ACPI: RSDP signature or checksum is bad");
    }
    let (root, entry) = if r[15] >= 2 && le64(r, 24) != 0 {
        (le64(r, 24), 8)
    } else {
        (u64::from(le32(r, 16)), 4)
    };
    // SAFETY: the RSDP names the root table.
    let root = unsafe { sdt(root) }.ok_or("ACPI: XSDT/RSDT checksum is bad")?;
    let mut madt = None;
    for off in (36..root.len()).step_by(entry) {
        let pa = if entry == 8 {
            le64(root, off)
        } else {
            u64::from(le32(root, off))
        };
        // SAFETY: the root table names published tables.
        if unsafe { bytes(pa, 4) } == b"APIC" {
            // SAFETY: as above.
            madt = unsafe { sdt(pa) };
            break;
        }
    }
    let t = madt.ok_or("ACPI: no MADT (APIC table): cannot find the CPUs")?;
    let mut m = Madt {
        lapic_phys: u64::from(le32(t, 36)),
        apic_ids: [0; NR_CPUS],
        nr: 0,
        ignored: 0,
    };
    let mut off = 44;
    while off + 2 <= t.len() {
        let (ty, len) = (t[off], t[off + 1] as usize);
        if len < 2 || off + len > t.len() {
            break;
        }
        let e = &t[off..off + len];
        let cpu = match ty {
            // Processor Local APIC: enabled bit.
            0 if len >= 8 && le32(e, 4) & 1 != 0 => Some(u32::from(e[3])),
            // Processor Local x2APIC.
            9 if len >= 16 && le32(e, 8) & 1 != 0 => Some(le32(e, 4)),
            // Local APIC address override.
            5 if len >= 12 => {
                m.lapic_phys = le64(e, 4);
                None
            }
            _ => None,
        };
        if let Some(id) = cpu {
            if id >= 0xff {
                // xAPIC mode addresses 8-bit ids, and 0xff is its
                // broadcast: such a CPU cannot be brought up here.
                m.ignored += 1;
            } else if m.apic_ids[..m.nr].contains(&id) {
                // Listed twice (xAPIC and x2APIC entries): once.
            } else if m.nr < NR_CPUS {
                m.apic_ids[m.nr] = id;
                m.nr += 1;
            } else {
                m.ignored += 1;
            }
        }
        off += len;
    }
    if m.nr == 0 {
        return Err("ACPI: the MADT lists no enabled CPU");
    }
    Ok(m)
}
