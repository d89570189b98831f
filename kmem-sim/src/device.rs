//! Simulated devices with memory-mapped registers, for `ioremap`.
//!
//! A device occupies a range of physical addresses, as a PCI device's BAR
//! does: [`SimConfig::devices`](crate::SimConfig::devices) lists them,
//! [`SimPlatform::new`](crate::SimPlatform::new) adds each range to the
//! memory map it exposes as a reserved range (unless reserved ranges
//! already cover it) and refuses one that overlaps usable RAM, and
//! [`Platform::map_kernel_range`](kmem::Platform::map_kernel_range) of an
//! address inside a device maps the device's memory instead of RAM.
//!
//! ## Design
//!
//! * **Device memory is a memfd of its own**, not part of the RAM memfd,
//!   so a device may sit anywhere in the physical address space (above
//!   the end of RAM, in the PCI hole). A driver reaches it only through a
//!   kernel mapping (`ioremap`); the direct map never covers it.
//! * **A device is a host thread** started with the platform and stopped
//!   and joined when it drops. It sees its registers through a mapping of
//!   its own of the same memfd, so what a driver writes through the vmap
//!   area the device reads, and the other way round. Until a driver first
//!   maps some of its range the thread sleeps (`park`), costing nothing;
//!   after that it polls its doorbell, spinning briefly, then yielding,
//!   then sleeping for longer and longer (up to 5 ms) while nothing
//!   happens, so an idle device does not keep a host CPU busy; a request
//!   after a long idle spell waits up to 5 ms for the device.
//! * **Registers are 32-bit words accessed as atomics** by the device (an
//!   Acquire load of the doorbell, a Release store when done), the
//!   analogue of `readl`/`writel` ordering; the data buffer is read and
//!   written with volatile byte accesses. A driver does the same: write
//!   the buffer, then ring the doorbell with a Release store (or
//!   `writel`), then wait for it with Acquire loads.
//!
//! One device model exists, [`DeviceKind::Echo`] (see [`echo`] for its
//! registers): a driver test writes bytes to its buffer and rings; the
//! device inverts them in place and reports a checksum.

use crate::machine::parse_size;
use crate::{lock, SimError};
use core::ffi::c_void;
use core::ptr;
use kmem::memory_map::{MemRegion, RegionKind};
use kmem::PAGE_SIZE;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a simulated device does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// `kmem-echo`: inverts the bytes of its buffer when its doorbell
    /// rings and reports their checksum ([`echo`]).
    Echo,
}

impl DeviceKind {
    /// The name used in `--device` and as the device's default name.
    pub const fn name(self) -> &'static str {
        match self {
            DeviceKind::Echo => "kmem-echo",
        }
    }

    /// The size of the device's range when none is given.
    pub const fn default_size(self) -> u64 {
        match self {
            DeviceKind::Echo => echo::SIZE,
        }
    }

    /// The smallest range the device works in.
    pub const fn min_size(self) -> u64 {
        match self {
            DeviceKind::Echo => echo::SIZE,
        }
    }
}

pub mod echo {
    //! The registers of the `kmem-echo` device ([`DeviceKind::Echo`](super::DeviceKind::Echo)).
    //!
    //! The first page holds 32-bit little-endian registers at the offsets
    //! below; the rest of the range, from [`BUF`], is the data buffer. A
    //! request:
    //!
    //! 1. the driver writes up to `size - BUF` bytes to the buffer and their
    //!    count to [`LENGTH`];
    //! 2. it writes [`RING`] to [`DOORBELL`] (after the buffer and length,
    //!    with Release ordering or a write barrier);
    //! 3. the device sets [`STATUS`] to [`STATUS_BUSY`], replaces every byte
    //!    `b` of the buffer's first `LENGTH` bytes with `b ^ 0xff`, stores
    //!    the [`checksum`] of the new bytes in [`CHECKSUM`], counts the
    //!    request in [`COMPLETED`], sets `STATUS` to [`STATUS_DONE`] (or
    //!    [`STATUS_ERROR`] when `LENGTH` is larger than the buffer, touching
    //!    nothing) and finally clears `DOORBELL` to 0 (Release);
    //! 4. the driver waits for `DOORBELL` to read 0 (Acquire), then reads
    //!    `STATUS`, `CHECKSUM` and the buffer.
    //!
    //! [`ID`] reads [`ID_VALUE`].

    use kmem::PAGE_SIZE;

    /// Written with [`RING`] by the driver to start a request; cleared to
    /// 0 by the device when the request is finished.
    pub const DOORBELL: usize = 0x00;
    /// [`STATUS_IDLE`], [`STATUS_BUSY`], [`STATUS_DONE`] or
    /// [`STATUS_ERROR`].
    pub const STATUS: usize = 0x04;
    /// Bytes of the buffer the request covers.
    pub const LENGTH: usize = 0x08;
    /// The [`checksum`] of the transformed bytes.
    pub const CHECKSUM: usize = 0x0c;
    /// The device's identification, [`ID_VALUE`].
    pub const ID: usize = 0x10;
    /// Requests completed so far (wrapping).
    pub const COMPLETED: usize = 0x14;
    /// Offset of the data buffer: the second page.
    pub const BUF: usize = PAGE_SIZE;
    /// Default (and smallest) size of the device's range: the register
    /// page and one page of buffer.
    pub const SIZE: u64 = 2 * PAGE_SIZE as u64;

    /// The value that starts a request.
    pub const RING: u32 = 1;
    /// No request served yet.
    pub const STATUS_IDLE: u32 = 0;
    /// A request is being served.
    pub const STATUS_BUSY: u32 = 1;
    /// The last request was served.
    pub const STATUS_DONE: u32 = 2;
    /// The last request was refused: its length exceeds the buffer.
    pub const STATUS_ERROR: u32 = 3;
    /// What [`ID`] reads: "ECHO" in ASCII.
    pub const ID_VALUE: u32 = u32::from_be_bytes(*b"ECHO");

    /// The checksum the device reports: 32-bit FNV-1a of the bytes.
    pub fn checksum(bytes: &[u8]) -> u32 {
        bytes.iter().fold(0x811c_9dc5, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    }
}

/// Conventional base of the default device: in the PCI MMIO hole below
/// 4 GiB, where a PC's firmware places device BARs, inside the range
/// [`pc_memory_map`](crate::pc_memory_map) reserves (or leaves as a hole)
/// for every RAM size.
pub const DEFAULT_DEVICE_BASE: u64 = 0xfe00_0000;

/// A device of the simulated machine: its kind, name and physical range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Name in messages and of the device's host thread.
    pub name: String,
    /// What the device does.
    pub kind: DeviceKind,
    /// First physical address of its registers (page aligned).
    pub base: u64,
    /// Bytes of its range (a non-zero multiple of the page size, at least
    /// [`DeviceKind::min_size`]).
    pub size: u64,
}

impl Default for DeviceConfig {
    /// A `kmem-echo` device at [`DEFAULT_DEVICE_BASE`].
    fn default() -> Self {
        DeviceConfig::echo(DEFAULT_DEVICE_BASE)
    }
}

impl DeviceConfig {
    /// A `kmem-echo` device of [`echo::SIZE`] bytes at `base`.
    pub fn echo(base: u64) -> Self {
        DeviceConfig {
            name: DeviceKind::Echo.name().to_string(),
            kind: DeviceKind::Echo,
            base,
            size: echo::SIZE,
        }
    }

    /// One past the device's last byte (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// The device's range as a reserved memory map entry.
    pub fn region(&self) -> MemRegion {
        MemRegion::reserved(self.base, self.size)
    }

    /// Read a device from the `--device` form `KIND@ADDRESS[,SIZE]` (or
    /// `KIND,ADDRESS[,SIZE]`), such as `echo@0xfe000000` or
    /// `kmem-echo,0xfe000000,16K`. `KIND` is `echo` (or `kmem-echo`);
    /// `ADDRESS` and `SIZE` are read as [`parse_size`] reads sizes
    /// (decimal, `0x` hexadecimal, `K`/`M`/`G`... suffixes). The size
    /// defaults to the kind's ([`DeviceKind::default_size`]).
    ///
    /// ```
    /// let d = kmem_sim::DeviceConfig::parse("echo@0xfe000000").unwrap();
    /// assert_eq!((d.base, d.size), (0xfe00_0000, 8192));
    /// assert!(kmem_sim::DeviceConfig::parse("echo@0xfe000001").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<DeviceConfig, SimError> {
        let bad = |why: String| SimError::BadDevice {
            text: text.to_string(),
            why,
        };
        let t = text.trim();
        let Some(split) = t.find(['@', ',']) else {
            return Err(bad("no address".into()));
        };
        let (kind, rest) = (t[..split].trim(), &t[split + 1..]);
        let kind = match kind {
            "echo" | "kmem-echo" => DeviceKind::Echo,
            "" => return Err(bad("no device kind".into())),
            k => return Err(bad(format!("unknown device kind `{k}` (known: echo)"))),
        };
        let (addr, size) = match rest.split_once(',') {
            Some((a, s)) => (a, Some(s)),
            None => (rest, None),
        };
        let number = |what: &str, s: &str| {
            parse_size(s).map_err(|e| match e {
                SimError::BadSize { why, .. } => bad(format!("{what} `{}`: {why}", s.trim())),
                e => bad(format!("{what}: {e}")),
            })
        };
        let base = number("address", addr)?;
        let size = match size {
            Some(s) => number("size", s)?,
            None => kind.default_size(),
        };
        let d = DeviceConfig {
            name: kind.name().to_string(),
            kind,
            base,
            size,
        };
        d.check().map_err(bad)?;
        Ok(d)
    }

    /// Whether the range is usable for the device: page aligned, large
    /// enough, below the top of the address space.
    fn check(&self) -> Result<(), String> {
        let page = PAGE_SIZE as u64;
        if self.base % page != 0 {
            return Err(format!(
                "address {:#x} is not a multiple of the page size ({page:#x})",
                self.base
            ));
        }
        if self.size == 0 || self.size % page != 0 {
            return Err(format!(
                "size {:#x} is not a non-zero multiple of the page size ({page:#x})",
                self.size
            ));
        }
        if self.size < self.kind.min_size() {
            return Err(format!(
                "size {:#x} is below the {:#x} bytes a {} device needs",
                self.size,
                self.kind.min_size(),
                self.kind.name()
            ));
        }
        if self.base.checked_add(self.size).is_none() {
            return Err(format!(
                "range {:#x}+{:#x} wraps around the address space",
                self.base, self.size
            ));
        }
        Ok(())
    }
}

/// Check `devices` against the memory map `map` and each other, and add
/// the parts of their ranges that no non-usable range covers to `map` as
/// reserved ranges (on the node of the range below them), keeping a map
/// sorted by address sorted.
pub(crate) fn add_to_map(
    map: &mut Vec<MemRegion>,
    devices: &[DeviceConfig],
) -> Result<(), SimError> {
    for (i, d) in devices.iter().enumerate() {
        d.check()
            .map_err(|why| SimError::Config(format!("device {}: {why}", d.name)))?;
        if let Some(o) = devices[..i]
            .iter()
            .find(|o| d.base < o.end() && o.base < d.end())
        {
            return Err(SimError::Config(format!(
                "device {} at {:#x}-{:#x} overlaps device {} at {:#x}-{:#x}",
                d.name,
                d.base,
                d.end() - 1,
                o.name,
                o.base,
                o.end() - 1
            )));
        }
        if let Some(r) = map
            .iter()
            .find(|r| r.kind == RegionKind::Usable && d.base < r.end() && r.base < d.end())
        {
            return Err(SimError::Config(format!(
                "device {} at {:#x}-{:#x} overlaps usable RAM {r}; \
                 give the device an address outside RAM (such as {:#x})",
                d.name,
                d.base,
                d.end() - 1,
                DEFAULT_DEVICE_BASE
            )));
        }
        // The uncovered gaps of [base, end), in address order.
        let mut covering: Vec<&MemRegion> = map
            .iter()
            .filter(|r| d.base < r.end() && r.base < d.end())
            .collect();
        covering.sort_by_key(|r| r.base);
        let mut gaps = Vec::new();
        let mut at = d.base;
        for r in covering {
            if r.base > at {
                gaps.push((at, r.base));
            }
            at = at.max(r.end());
        }
        if at < d.end() {
            gaps.push((at, d.end()));
        }
        for (base, end) in gaps {
            let node = map
                .iter()
                .filter(|r| r.base < base)
                .max_by_key(|r| r.base)
                .map_or(0, |r| r.node);
            let at = map.iter().position(|r| r.base > base).unwrap_or(map.len());
            map.insert(at, MemRegion::reserved(base, end - base).on_node(node));
        }
    }
    Ok(())
}

/// The device's own mapping of its memory.
struct DeviceMem {
    addr: usize,
    len: usize,
}

impl DeviceMem {
    /// The 32-bit register at byte offset `off`.
    fn reg(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= PAGE_SIZE);
        // SAFETY: `addr + off` is 4-aligned (the mapping is page aligned)
        // and inside the register page of the live mapping, which `self`
        // owns; every access to device memory from this process is either
        // such an atomic, a volatile byte access of the buffer, or a
        // driver's access through its own mapping.
        unsafe { AtomicU32::from_ptr(ptr::with_exposed_provenance_mut(self.addr + off)) }
    }

    /// Address of byte `off`.
    fn byte(&self, off: usize) -> *mut u8 {
        assert!(off < self.len);
        ptr::with_exposed_provenance_mut(self.addr + off)
    }
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `SimDevice::start`, owned by this
        // value, which the device thread owns and drops as it ends: no
        // register or buffer reference outlives it.
        let _ = unsafe { munmap(ptr::with_exposed_provenance_mut(self.addr), self.len) };
    }
}

/// State shared with the device thread.
struct Shared {
    /// Set to end the thread.
    stop: AtomicBool,
    /// A driver has mapped some of the device: poll the doorbell.
    active: AtomicBool,
    /// Requests served.
    completed: AtomicU64,
}

/// A running device of a [`SimPlatform`](crate::SimPlatform)
/// ([`SimPlatform::devices`](crate::SimPlatform::devices)).
pub struct SimDevice {
    config: DeviceConfig,
    fd: OwnedFd,
    shared: Arc<Shared>,
    /// The device's thread, until it is joined. (In a mutex, which keeps
    /// the platform `RefUnwindSafe`: a bare `JoinHandle` is not.)
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SimDevice {
    /// Create the device's memory and start its thread (asleep until the
    /// device is first mapped).
    pub(crate) fn start(config: DeviceConfig) -> Result<SimDevice, SimError> {
        let len = usize::try_from(config.size)
            .map_err(|_| SimError::Config(format!("device {}: too large", config.name)))?;
        let fd = memfd_create("kmem-sim-device", MemfdFlags::CLOEXEC)
            .map_err(|e| SimError::os("memfd_create for a device", e))?;
        ftruncate(&fd, config.size).map_err(|e| SimError::os("ftruncate of a device", e))?;
        // SAFETY: a null hint: the kernel picks fresh addresses that no
        // Rust object uses; the mapping is owned by the DeviceMem below.
        let p = unsafe {
            mmap(
                ptr::null_mut::<c_void>(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| SimError::os("mmap of a device", e))?;
        let mem = DeviceMem {
            addr: p.expose_provenance(),
            len,
        };
        match config.kind {
            DeviceKind::Echo => mem.reg(echo::ID).store(echo::ID_VALUE, Ordering::Release),
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            active: AtomicBool::new(false),
            completed: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let kind = config.kind;
        let thread = std::thread::Builder::new()
            .name(config.name.clone())
            .stack_size(64 << 10)
            .spawn(move || match kind {
                DeviceKind::Echo => run_echo(&mem, &s),
            })
            .map_err(|err| SimError::Os {
                what: "spawning a device thread",
                err,
            })?;
        Ok(SimDevice {
            config,
            fd,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// What the device is and where.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Requests the device has served (done or refused).
    pub fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::Acquire)
    }

    /// The device's memory, for mapping.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A driver mapped some of the device: wake its thread.
    pub(crate) fn activate(&self) {
        if !self.shared.active.swap(true, Ordering::AcqRel) {
            if let Some(t) = &*lock(&self.thread) {
                t.thread().unpark();
            }
        }
    }
}

impl core::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimDevice")
            .field("config", &self.config)
            .field("completed", &self.completed())
            .finish_non_exhaustive()
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = lock(&self.thread).take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Where physical range `[pa, pa + size)` lies among `devices`: `Ok(Some)`
/// inside one (with the offset in it), `Ok(None)` in none, `Err` across
/// a device's edge.
pub(crate) fn find(
    devices: &[SimDevice],
    pa: u64,
    size: u64,
) -> Result<Option<(&SimDevice, u64)>, ()> {
    let end = pa.checked_add(size).ok_or(())?;
    match devices
        .iter()
        .find(|d| pa < d.config.end() && d.config.base < end)
    {
        None => Ok(None),
        Some(d) if d.config.base <= pa && end <= d.config.end() => {
            Ok(Some((d, pa - d.config.base)))
        }
        Some(_) => Err(()),
    }
}

/// How long an idle device waits before looking again, after `idle`
/// fruitless looks: spin, then yield, then sleep from 10 µs doubling up
/// to 5 ms (an idle device then costs about 0.5% of a host CPU).
fn back_off(idle: u32) {
    if idle < 64 {
        std::hint::spin_loop();
    } else if idle < 128 {
        std::thread::yield_now();
    } else {
        let shift = ((idle - 128) / 8).min(9);
        let wait = Duration::from_micros(10 << shift).min(Duration::from_millis(5));
        std::thread::park_timeout(wait);
    }
}

/// The `kmem-echo` device's thread.
fn run_echo(mem: &DeviceMem, shared: &Shared) {
    let doorbell = mem.reg(echo::DOORBELL);
    let mut idle = 0u32;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        if !shared.active.load(Ordering::Acquire) {
            std::thread::park();
            continue;
        }
        if doorbell.load(Ordering::Acquire) == 0 {
            idle = idle.saturating_add(1);
            back_off(idle);
            continue;
        }
        idle = 0;
        serve_echo(mem);
        shared.completed.fetch_add(1, Ordering::Release);
        doorbell.store(0, Ordering::Release);
    }
}

/// Serve one request (the doorbell rang).
fn serve_echo(mem: &DeviceMem) {
    let status = mem.reg(echo::STATUS);
    status.store(echo::STATUS_BUSY, Ordering::Relaxed);
    let len = mem.reg(echo::LENGTH).load(Ordering::Relaxed) as usize;
    if len > mem.len - echo::BUF {
        status.store(echo::STATUS_ERROR, Ordering::Relaxed);
    } else {
        let mut sum = echo::checksum(&[]);
        for i in 0..len {
            let p = mem.byte(echo::BUF + i);
            // SAFETY: `p` is inside the device's mapping (checked by
            // `byte` and the length test above); device memory is only
            // ever accessed with volatile or atomic operations.
            let b = unsafe { p.read_volatile() } ^ 0xff;
            // SAFETY: as above.
            unsafe { p.write_volatile(b) };
            sum = (sum ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        mem.reg(echo::CHECKSUM).store(sum, Ordering::Relaxed);
        status.store(echo::STATUS_DONE, Ordering::Relaxed);
    }
    let done = mem.reg(echo::COMPLETED);
    done.store(
        done.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}
