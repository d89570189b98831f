//! Simulated devices: a driver maps the `kmem-echo` device's registers and
//! buffer into the vmap area, as `ioremap` does, and talks to it.

use kmem::memory_map::{MemRegion, RegionKind};
use kmem::platform::PgProt;
use kmem::{Platform, PAGE_SHIFT, PAGE_SIZE};
use kmem_sim::{
    echo, pc_memory_map, DeviceConfig, DeviceKind, SimConfig, SimError, SimPlatform,
    DEFAULT_DEVICE_BASE,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn machine_with(map: Vec<MemRegion>, devices: Vec<DeviceConfig>) -> Result<SimPlatform, SimError> {
    let mut c = SimConfig::new(2, map);
    c.devices = devices;
    SimPlatform::new(c)
}

/// A driver's view of a `kmem-echo` device mapped at `regs` (register
/// page) and `buf` (its buffer).
struct Echo {
    regs: usize,
    buf: usize,
}

impl Echo {
    fn reg(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `regs` is the device's register page, mapped read/write
        // for as long as the test uses this value; registers are 4-byte
        // aligned words that the device accesses atomically too.
        unsafe { AtomicU32::from_ptr((self.regs + off) as *mut u32) }
    }

    fn write_buf(&self, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            // SAFETY: inside the mapped buffer; the device does not touch
            // it while the doorbell is clear.
            unsafe { ((self.buf + i) as *mut u8).write_volatile(b) };
        }
    }

    fn read_buf(&self, len: usize) -> Vec<u8> {
        (0..len)
            // SAFETY: as in `write_buf`.
            .map(|i| unsafe { ((self.buf + i) as *const u8).read_volatile() })
            .collect()
    }

    /// Ring the doorbell for `len` bytes and wait for the device; returns
    /// the status.
    fn request(&self, len: u32) -> u32 {
        self.reg(echo::LENGTH).store(len, Ordering::Relaxed);
        self.reg(echo::DOORBELL)
            .store(echo::RING, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.reg(echo::DOORBELL).load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "the device did not answer");
            std::thread::sleep(Duration::from_micros(50));
        }
        self.reg(echo::STATUS).load(Ordering::Relaxed)
    }
}

#[test]
fn a_driver_talks_to_the_echo_device_through_kernel_mappings() {
    let p = machine_with(pc_memory_map(64 * MIB), vec![DeviceConfig::default()]).unwrap();
    let dev = &p.devices()[0];
    assert_eq!(dev.config().name, "kmem-echo");
    assert_eq!(dev.config().kind, DeviceKind::Echo);
    assert_eq!(dev.completed(), 0);
    let (start, end) = p.vmap_range().unwrap();
    // The register page and the buffer, mapped apart as a driver could.
    let regs = start + 32 * PAGE_SIZE;
    let buf = end - 8 * PAGE_SIZE;
    p.map_kernel_range(
        regs,
        DEFAULT_DEVICE_BASE,
        PAGE_SIZE,
        PgProt::UncachedMinus,
        PAGE_SHIFT,
    )
    .unwrap();
    p.map_kernel_range(
        buf,
        DEFAULT_DEVICE_BASE + PAGE_SIZE as u64,
        PAGE_SIZE,
        PgProt::WriteCombine,
        PAGE_SHIFT,
    )
    .unwrap();
    let e = Echo { regs, buf };
    assert_eq!(e.reg(echo::ID).load(Ordering::Acquire), echo::ID_VALUE);
    assert_eq!(
        e.reg(echo::STATUS).load(Ordering::Relaxed),
        echo::STATUS_IDLE
    );

    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    e.write_buf(&data);
    assert_eq!(e.request(data.len() as u32), echo::STATUS_DONE);
    let want: Vec<u8> = data.iter().map(|b| b ^ 0xff).collect();
    assert_eq!(e.read_buf(data.len()), want);
    assert_eq!(
        e.reg(echo::CHECKSUM).load(Ordering::Relaxed),
        echo::checksum(&want)
    );
    // Bytes past the request are untouched (still zero).
    assert_eq!(e.read_buf(data.len() + 16)[data.len()..], [0; 16]);
    assert_eq!(e.reg(echo::COMPLETED).load(Ordering::Relaxed), 1);
    assert_eq!(dev.completed(), 1);

    // Back again: the inverse.
    assert_eq!(e.request(data.len() as u32), echo::STATUS_DONE);
    assert_eq!(e.read_buf(data.len()), data);
    assert_eq!(
        e.reg(echo::CHECKSUM).load(Ordering::Relaxed),
        echo::checksum(&data)
    );

    // Longer than the buffer: refused, buffer untouched.
    assert_eq!(e.request(PAGE_SIZE as u32 + 1), echo::STATUS_ERROR);
    assert_eq!(e.read_buf(data.len()), data);
    assert_eq!(e.reg(echo::COMPLETED).load(Ordering::Relaxed), 3);
    assert_eq!(dev.completed(), 3);

    // The same device seen through a second, read-only mapping of the
    // whole range.
    let ro = start + 100 * PAGE_SIZE;
    p.map_kernel_range(
        ro,
        DEFAULT_DEVICE_BASE,
        2 * PAGE_SIZE,
        PgProt::KernelRo,
        PAGE_SHIFT,
    )
    .unwrap();
    let view = Echo {
        regs: ro,
        buf: ro + echo::BUF,
    };
    assert_eq!(view.reg(echo::ID).load(Ordering::Relaxed), echo::ID_VALUE);
    assert_eq!(view.read_buf(data.len()), data);
    for va in [regs, buf] {
        p.unmap_kernel_range(va, PAGE_SIZE);
    }
    p.unmap_kernel_range(ro, 2 * PAGE_SIZE);
    assert!(p.reports().is_empty(), "{:?}", p.reports());
}

#[test]
fn a_bigger_echo_device_has_a_bigger_buffer() {
    let d = DeviceConfig::parse("echo@0xfd000000,16K").unwrap();
    let p = machine_with(pc_memory_map(32 * MIB), vec![d]).unwrap();
    let va = p.vmap_range().unwrap().0;
    p.map_kernel_range(
        va,
        0xfd00_0000,
        4 * PAGE_SIZE,
        PgProt::UncachedMinus,
        PAGE_SHIFT,
    )
    .unwrap();
    let e = Echo {
        regs: va,
        buf: va + echo::BUF,
    };
    let data = vec![0x0fu8; 3 * PAGE_SIZE];
    e.write_buf(&data);
    assert_eq!(e.request(data.len() as u32), echo::STATUS_DONE);
    assert_eq!(e.read_buf(data.len()), vec![0xf0u8; 3 * PAGE_SIZE]);
    assert_eq!(e.request(3 * PAGE_SIZE as u32 + 1), echo::STATUS_ERROR);
}

#[test]
fn two_machines_have_separate_devices() {
    let a = machine_with(pc_memory_map(16 * MIB), vec![DeviceConfig::default()]).unwrap();
    let b = machine_with(pc_memory_map(16 * MIB), vec![DeviceConfig::default()]).unwrap();
    let map = |p: &SimPlatform| {
        let va = p.vmap_range().unwrap().0;
        p.map_kernel_range(
            va,
            DEFAULT_DEVICE_BASE,
            2 * PAGE_SIZE,
            PgProt::UncachedMinus,
            PAGE_SHIFT,
        )
        .unwrap();
        Echo {
            regs: va,
            buf: va + echo::BUF,
        }
    };
    let (ea, eb) = (map(&a), map(&b));
    ea.write_buf(b"machine a");
    eb.write_buf(b"machine b");
    assert_eq!(ea.request(9), echo::STATUS_DONE);
    assert_eq!(eb.read_buf(9), b"machine b", "b's device memory is its own");
    assert_eq!(
        (a.devices()[0].completed(), b.devices()[0].completed()),
        (1, 0)
    );
}

#[test]
fn the_device_range_joins_the_memory_map_as_reserved() {
    // A 64 MiB PC has no hole reserved at 0xfe000000: the device's range
    // is added, in address order.
    let p = machine_with(pc_memory_map(64 * MIB), vec![DeviceConfig::default()]).unwrap();
    let map = p.memory_map();
    assert_eq!(map.len(), pc_memory_map(64 * MIB).len() + 1);
    assert_eq!(
        map.last(),
        Some(&MemRegion::reserved(DEFAULT_DEVICE_BASE, echo::SIZE))
    );
    assert!(map.windows(2).all(|w| w[0].base < w[1].base), "{map:?}");
    // An 8 GiB PC reserves the PCI hole, which covers it: nothing added.
    let p = machine_with(pc_memory_map(8 * GIB), vec![DeviceConfig::default()]).unwrap();
    assert_eq!(p.memory_map(), pc_memory_map(8 * GIB));
    // Partly covered: only the rest is added.
    let map = vec![
        MemRegion::usable(0x10_0000, 16 * MIB),
        MemRegion::reserved(0xfe00_0000, 0x1000).on_node(0),
    ];
    let p = machine_with(map, vec![DeviceConfig::default()]).unwrap();
    assert_eq!(p.memory_map()[2], MemRegion::reserved(0xfe00_1000, 0x1000));
    // The default configuration is a PC with one echo device.
    let c = SimConfig::default();
    assert_eq!(c.devices, vec![DeviceConfig::echo(DEFAULT_DEVICE_BASE)]);
    let p = SimPlatform::new(c).unwrap();
    assert!(p
        .memory_map()
        .iter()
        .any(|r| r.kind == RegionKind::Reserved && r.base == DEFAULT_DEVICE_BASE));
    // No devices: the map as given.
    let p = machine_with(pc_memory_map(64 * MIB), vec![]).unwrap();
    assert_eq!(p.memory_map(), pc_memory_map(64 * MIB));
    assert!(p.devices().is_empty());
}

#[test]
fn a_device_overlapping_ram_or_another_device_is_refused() {
    let err =
        machine_with(pc_memory_map(64 * MIB), vec![DeviceConfig::echo(0x20_0000)]).unwrap_err();
    assert!(matches!(err, SimError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(
            "device kmem-echo at 0x200000-0x201fff overlaps usable RAM \
             [mem 0x0000000000100000-0x0000000003ffffff] usable"
        ),
        "{text}"
    );
    // High RAM above 4 GiB too.
    let err = machine_with(pc_memory_map(8 * GIB), vec![DeviceConfig::echo(5 * GIB)]).unwrap_err();
    assert!(err.to_string().contains("overlaps usable RAM"), "{err}");
    // Two devices on one range.
    let err = machine_with(
        pc_memory_map(64 * MIB),
        vec![
            DeviceConfig::echo(DEFAULT_DEVICE_BASE),
            DeviceConfig::echo(DEFAULT_DEVICE_BASE + PAGE_SIZE as u64),
        ],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("overlaps device kmem-echo at 0xfe000000-0xfe001fff"),
        "{err}"
    );
    // A bad range given directly.
    let mut d = DeviceConfig::default();
    d.base += 1;
    let err = machine_with(pc_memory_map(64 * MIB), vec![d]).unwrap_err();
    assert!(
        err.to_string().contains("not a multiple of the page size"),
        "{err}"
    );
}

#[test]
fn mappings_across_a_device_edge_are_refused() {
    let p = machine_with(pc_memory_map(16 * MIB), vec![DeviceConfig::default()]).unwrap();
    let va = p.vmap_range().unwrap().0;
    // Past its end, and starting below it.
    for pa in [
        DEFAULT_DEVICE_BASE + PAGE_SIZE as u64,
        DEFAULT_DEVICE_BASE - PAGE_SIZE as u64,
    ] {
        let r = p.map_kernel_range(va, pa, 2 * PAGE_SIZE, PgProt::UncachedMinus, PAGE_SHIFT);
        assert_eq!(r, Err(kmem::Error::InvalidArgument), "{pa:#x}");
    }
    // Not a device and not RAM.
    let r = p.map_kernel_range(
        va,
        0xfd00_0000,
        PAGE_SIZE,
        PgProt::UncachedMinus,
        PAGE_SHIFT,
    );
    assert_eq!(r, Err(kmem::Error::InvalidArgument));
    assert!(
        p.reported("kmem-sim: map_kernel_range("),
        "{:?}",
        p.reports()
    );
}

#[test]
fn device_strings_are_read() {
    let ok = [
        ("echo@0xfe000000", DEFAULT_DEVICE_BASE, echo::SIZE),
        ("kmem-echo,0xfe000000", DEFAULT_DEVICE_BASE, echo::SIZE),
        (" echo@4064M ", DEFAULT_DEVICE_BASE, echo::SIZE),
        ("echo@0xfd000000,16K", 0xfd00_0000, 16 << 10),
        ("echo,0x100000000,0x3000", 4 * GIB, 0x3000),
    ];
    for (text, base, size) in ok {
        let d = DeviceConfig::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            d,
            DeviceConfig {
                name: "kmem-echo".into(),
                kind: DeviceKind::Echo,
                base,
                size
            },
            "{text}"
        );
    }
}

#[test]
fn bad_device_strings_are_refused_with_the_reason() {
    let bad = [
        ("", "no address"),
        ("echo", "no address"),
        ("@0xfe000000", "no device kind"),
        ("uart@0x3f8000", "unknown device kind `uart` (known: echo)"),
        ("echo@", "address ``: expected a number"),
        ("echo@0xzz", "address `0xzz`: expected a number"),
        ("echo@12Q", "address `12Q`: unknown suffix"),
        (
            "echo@0xfe000001",
            "address 0xfe000001 is not a multiple of the page size",
        ),
        (
            "echo@0xfe000000,5000",
            "size 0x1388 is not a non-zero multiple of the page size",
        ),
        ("echo@0xfe000000,0", "size 0x0 is not a non-zero multiple"),
        (
            "echo@0xfe000000,4K",
            "below the 0x2000 bytes a kmem-echo device needs",
        ),
        (
            "echo@0xffffffffffffe000,16K",
            "wraps around the address space",
        ),
        ("echo@0xfe000000,junk", "size `junk`: expected a number"),
    ];
    for (text, why) in bad {
        let err = DeviceConfig::parse(text).unwrap_err();
        assert!(matches!(err, SimError::BadDevice { .. }), "{text}: {err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("bad device `{text}`: ")), "{msg}");
        assert!(msg.contains(why), "{text}: {msg}");
        assert!(
            msg.ends_with("(expected KIND@ADDRESS[,SIZE], such as echo@0xfe000000)"),
            "{msg}"
        );
    }
}
