//! Just enough PCI (configuration mechanism #1, ports `0xcf8`/`0xcfc`) to
//! find a device on bus 0 and its memory BAR, as a driver's probe would
//! (`pci_enable_device_mem()`, `pci_resource_start()`/`_len()`).

use crate::arch::{inl, outl};

fn addr(dev: u8, off: u8) -> u32 {
    0x8000_0000 | (u32::from(dev) << 11) | u32::from(off & 0xfc)
}

fn read32(dev: u8, off: u8) -> u32 {
    // SAFETY: the PC's configuration ports; this kernel has no other user.
    unsafe {
        outl(0xcf8, addr(dev, off));
        inl(0xcfc)
    }
}

fn write32(dev: u8, off: u8, v: u32) {
    // SAFETY: as in `read32`; the caller writes a device's own registers.
    unsafe {
        outl(0xcf8, addr(dev, off));
        outl(0xcfc, v);
    }
}

/// A memory BAR: physical start and length.
pub struct Bar {
    /// Bus address (= physical on a PC).
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Find function 0 of `vendor:device` on bus 0, turn on its memory
/// decoding, and size its memory BAR `bar` (64-bit BARs take two slots).
pub fn find_bar(vendor: u16, device: u16, bar: u8) -> Option<Bar> {
    let dev = (0..32u8).find(|&d| read32(d, 0) == (u32::from(device) << 16 | u32::from(vendor)))?;
    let off = 0x10 + 4 * bar;
    let cmd = read32(dev, 0x04);
    // Decoding off while the BAR is sized, as `__pci_read_base()` does.
    write32(dev, 0x04, cmd & !0x3);
    let lo = read32(dev, off);
    let is64 = lo & 0x6 == 0x4;
    write32(dev, off, 0xffff_ffff);
    let mut mask = u64::from(read32(dev, off) & !0xf);
    write32(dev, off, lo);
    let mut start = u64::from(lo & !0xf);
    if is64 {
        let hi = read32(dev, off + 4);
        write32(dev, off + 4, 0xffff_ffff);
        mask |= u64::from(read32(dev, off + 4)) << 32;
        write32(dev, off + 4, hi);
        start |= u64::from(hi) << 32;
    } else {
        mask |= 0xffff_ffff_0000_0000;
    }
    write32(dev, 0x04, cmd | 0x2); // memory space on
    let len = (!mask).wrapping_add(1);
    (start != 0 && len != 0).then_some(Bar { start, len })
}
