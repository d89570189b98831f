//! Fault injection: failslab and fail_page_alloc (`lib/fault-inject.c`,
//! `mm/failslab.c`, `mm/fail_page_alloc.c`,
//! `Documentation/fault-injection/fault-injection.rst`).
//!
//! Linux can make the slab allocator and the page allocator fail on purpose,
//! so that the error paths of their callers get exercised. Each of the two
//! has a `struct fault_attr` (the common knobs) plus a few knobs of its own,
//! set on the kernel command line (`failslab=`, `fail_page_alloc=`) or
//! through the debugfs files under `/sys/kernel/debug/failslab/` and
//! `/sys/kernel/debug/fail_page_alloc/`. kmem keeps the same two attributes
//! in each [`Kmem`] (no globals) and reaches them through
//! [`Kmem::failslab`], [`Kmem::fail_page_alloc`] and
//! [`Kmem::fault_inject_write`].
//!
//! # Where the hooks sit
//!
//! - `should_fail_alloc_page` is called by
//!   [`alloc_pages_node`](Kmem::alloc_pages_node) once the request is
//!   known to be valid and before the fast path, where Linux calls it from
//!   `prepare_alloc_pages()`. An injected failure returns
//!   [`Error::NoMemory`] at once, without the "page allocation failure"
//!   report (`warn_alloc()` is never reached, as in Linux). Every page
//!   allocation goes through it: `alloc_pages*`, `__get_free_pages`,
//!   `kmalloc_large` and the slab allocator's own slab pages.
//! - `should_failslab` is called at the top of the slab allocation path,
//!   where Linux calls it from `slab_pre_alloc_hook()`: it covers
//!   `kmem_cache_alloc*`, `kmem_cache_alloc_bulk` and every `kmalloc` that
//!   is served by a kmalloc cache.
//!
//! # The decision (`should_fail_ex()`)
//!
//! The per-kind filters run first, then the common attribute, in Linux's
//! order:
//!
//! 1. failslab: `__GFP_NOFAIL` never fails; with `ignore-gfp-wait`,
//!    requests that may block (`__GFP_DIRECT_RECLAIM`) pass; with
//!    `cache-filter`, only caches created with [`SLAB_FAILSLAB`](crate::slab::SLAB_FAILSLAB) can fail.
//!    fail_page_alloc: orders below `min-order` pass; `__GFP_NOFAIL` never
//!    fails; with `ignore-gfp-highmem`, `__GFP_HIGHMEM` requests pass; with
//!    `ignore-gfp-wait`, blocking requests pass.
//! 2. `probability` 0: pass (no other knob is looked at);
//! 3. `times` exhausted (0): pass;
//! 4. `space`: while more than the request's weight is left, subtract the
//!    weight and pass. The weight is what Linux passes: the cache's
//!    `object_size` in bytes for failslab, `1 << order` *pages* for
//!    fail_page_alloc;
//! 5. `interval` N > 1: count the call; pass unless the count is a
//!    multiple of N;
//! 6. `probability`: fail when a uniform draw from 0..100
//!    ([`Platform::random_u64`]) is below it;
//! 7. fail: print the message (unless `verbose` is 0 or the request has
//!    `__GFP_NOWARN`), take one from `times` unless it is -1, count the
//!    failure.
//!
//! # Knobs
//!
//! | knob | applies to | default | values | meaning |
//! |---|---|---|---|---|
//! | `probability` | both | 0 | 0..=100 | percent of the calls that reach the draw which fail; 0 switches the attribute off |
//! | `interval` | both | 1 | 0.. | only every Nth call that got past `space` may fail (0 and 1: every call) |
//! | `times` | both | 1 | -1.. | failures left; -1 is unlimited, 0 stops injecting |
//! | `space` | both | 0 | 0.. | weight let through before any call may fail (bytes for failslab, pages for fail_page_alloc) |
//! | `verbose` | both | 2 | 0, 1, 2 | 0 silent; 1 prints `FAULT_INJECTION: forcing a failure.` and the attribute line; 2 also the CPU and a call trace ending in the caller's `file:line:col` |
//! | `ignore-gfp-wait` | both | Y | Y/N | exempt requests with `__GFP_DIRECT_RECLAIM` (so GFP_KERNEL is exempt by default, as in Linux) |
//! | `cache-filter` | failslab | N | Y/N | only caches with `SLAB_FAILSLAB` may fail |
//! | `ignore-gfp-highmem` | fail_page_alloc | Y | Y/N | exempt `__GFP_HIGHMEM` requests |
//! | `min-order` | fail_page_alloc | 1 | 0..=u32::MAX | exempt orders below this |
//!
//! Boolean knobs take what `kstrtobool()` takes (`Y`/`N`, `1`/`0`,
//! `on`/`off`...) and read back as `Y`/`N`; numbers take what `kstrtoull()`
//! / `kstrtoll()` take with base 0 (decimal, `0x` hex, leading-`0` octal),
//! with an optional trailing newline, as `echo 10 > probability` sends.
//!
//! The boot form is Linux's `failslab=<interval>,<probability>,<space>,<times>`
//! (and `fail_page_alloc=` alike): [`BootParams::failslab`](crate::BootParams::failslab)
//! and [`BootParams::fail_page_alloc`](crate::BootParams::fail_page_alloc)
//! carry the text, and boot parses it before the first allocation, as
//! Linux's `__setup` handlers run before `mm_core_init()`.
//!
//! # Cost when off
//!
//! Each hook first loads, relaxed, a flag that is set exactly while
//! `probability` is not 0, and returns when it is clear: one load and one
//! predictable branch on the allocation fast paths, the job a static key
//! does in a kernel. Everything else is out of line (`#[cold]`).
//!
//! # Decisions where Linux was not the whole answer
//!
//! - Out-of-range writes are refused with a report and
//!   [`Error::InvalidArgument`] where Linux stores them: `probability` above
//!   100 (Linux then fails every call), `verbose` above 2, `times` below -1,
//!   a negative `space`, a `min-order` or `times`/`space` that does not fit
//!   the field (Linux truncates). A malformed boot string makes boot fail
//!   after Linux's `FAULT_INJECTION: failed to parse arguments` (Linux
//!   ignores the option and boots); kmem is also stricter than `sscanf`:
//!   exactly four comma-separated decimal numbers, nothing after them.
//! - `times` is taken with a compare-and-swap when a call fails, so two CPUs
//!   racing on the last one cannot both fail (Linux reads and decrements
//!   separately and may inject one failure too many). The message shows
//!   `times` before the decrement, as Linux's does.
//! - `kmem_cache_alloc_bulk` is a loop of single allocations in kmem, so
//!   failslab weighs and counts each object; Linux checks a bulk call once
//!   (with the weight of one object). Either way a failure fails the whole
//!   call and frees what it had taken.
//! - Knobs of Linux's attribute that kmem does not model are refused by
//!   name: `task-filter` and `fail_nth` (no per-task state), the stack
//!   trace filter (`stacktrace-depth`, `require-*`, `reject-*`) and the
//!   message rate limit (`verbose_ratelimit_*`, off by default in Linux
//!   too). The debugfs mode of a kernel with
//!   `CONFIG_FAULT_INJECTION_STACKTRACE_FILTER` is not there.
//! - Linux exempts its bootstrap `kmem_cache` cache; kmem's cache
//!   descriptors do not come from a slab cache, so there is nothing to
//!   exempt.
//! - kmem counts injected failures per attribute ([`Fault::injected`]);
//!   Linux has no such counter.
//!
//! ```
//! # let mut mem = vec![0u8; 16 << 20];
//! # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
//! use kmem::gfp::{GFP_ATOMIC, GFP_KERNEL};
//! let fs = k.failslab();
//! fs.set_probability(100).unwrap();
//! fs.set_times(-1).unwrap();
//! fs.set_verbose(0).unwrap();
//! // GFP_KERNEL may block: exempt while ignore-gfp-wait is Y (the default).
//! let p = k.kmalloc(64, GFP_KERNEL).unwrap();
//! assert!(k.kmalloc(64, GFP_ATOMIC).is_err());
//! k.fault_inject_write("failslab/ignore-gfp-wait=N").unwrap();
//! assert!(k.kmalloc(64, GFP_KERNEL).is_err());
//! assert_eq!(fs.injected(), 2);
//! fs.set_probability(0).unwrap();
//! // SAFETY: `p` is not used again.
//! unsafe { k.kfree(p.as_ptr()) }.unwrap();
//! ```

use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result};
use core::fmt;
use core::panic::Location;
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// The knobs of `/sys/kernel/debug/failslab/` that kmem has, in Linux's order.
pub const FAILSLAB_KNOBS: &[&str] = &[
    "probability",
    "interval",
    "times",
    "space",
    "verbose",
    "ignore-gfp-wait",
    "cache-filter",
];

/// The knobs of `/sys/kernel/debug/fail_page_alloc/` that kmem has, in Linux's order.
pub const FAIL_PAGE_ALLOC_KNOBS: &[&str] = &[
    "probability",
    "interval",
    "times",
    "space",
    "verbose",
    "ignore-gfp-wait",
    "ignore-gfp-highmem",
    "min-order",
];

/// Files of Linux's fault attribute that kmem does not model; writing one
/// is refused with a report that says so.
pub const UNMODELLED_KNOBS: &[&str] = &[
    "verbose_ratelimit_interval_ms",
    "verbose_ratelimit_burst",
    "task-filter",
    "stacktrace-depth",
    "require-start",
    "require-end",
    "reject-start",
    "reject-end",
];

/// Longest boot argument text kept by [`FaultBootArg`].
pub const FAULT_BOOT_ARG_LEN: usize = 80;

/// [`FaultAttr::active`]: failures are injected.
const ACTIVE: u8 = 1;
/// [`FaultAttr::active`]: the gate also guards `might_alloc`.
const SHARED: u8 = 2;

/// The common part of a fault attribute (`struct fault_attr`).
///
/// All fields are atomics: any CPU may hit the hook while another changes
/// a knob.
pub struct FaultAttr {
    /// The debugfs directory name (`attr->dname`).
    pub(crate) name: &'static str,
    /// The hooks' first and, when 0, only load (a static key's job):
    /// [`ACTIVE`] exactly while `probability` is not 0, and [`SHARED`]
    /// when another pre-allocation hook (`might_alloc` under
    /// `CONFIG_DEBUG_ATOMIC_SLEEP`) waits behind the same test.
    pub(crate) active: AtomicU8,
    pub(crate) probability: AtomicU64,
    pub(crate) interval: AtomicU64,
    pub(crate) times: AtomicI32,
    pub(crate) space: AtomicI32,
    pub(crate) verbose: AtomicU64,
    /// Calls that reached the interval check (`attr->count`).
    pub(crate) count: AtomicU64,
    /// Failures injected (kmem's own counter).
    pub(crate) injected: AtomicU64,
}

impl FaultAttr {
    /// `FAULT_ATTR_INITIALIZER`: probability 0, interval 1, times 1,
    /// space 0, verbose 2.
    pub(crate) const fn new(name: &'static str) -> Self {
        FaultAttr {
            name,
            active: AtomicU8::new(0),
            probability: AtomicU64::new(0),
            interval: AtomicU64::new(1),
            times: AtomicI32::new(1),
            space: AtomicI32::new(0),
            verbose: AtomicU64::new(2),
            count: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Whether this attribute injects failures.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Relaxed) & ACTIVE != 0
    }

    /// Whether the hooks behind this attribute's gate have anything to do:
    /// failures to inject or the shared `might_alloc` check.
    #[inline]
    pub(crate) fn gate(&self) -> bool {
        self.active.load(Relaxed) != 0
    }

    pub(crate) fn store_probability(&self, v: u64) {
        self.probability.store(v, Relaxed);
        if v != 0 {
            self.active.fetch_or(ACTIVE, Relaxed);
        } else {
            self.active.fetch_and(!ACTIVE, Relaxed);
        }
    }

    /// `should_fail_ex()` after the per-kind filters: the common knobs in
    /// Linux's order. `size` is the request's weight.
    pub(crate) fn should_fail_ex<P: Platform>(
        &self,
        p: &P,
        size: u64,
        nowarn: bool,
        hook: &str,
        caller: &'static Location<'static>,
    ) -> bool {
        let probability = self.probability.load(Relaxed);
        if probability == 0 || self.times.load(Relaxed) == 0 {
            return false;
        }
        let weight = i32::try_from(size).unwrap_or(i32::MAX);
        if self
            .space
            .fetch_update(Relaxed, Relaxed, |s| (s > weight).then(|| s - weight))
            .is_ok()
        {
            return false;
        }
        let interval = self.interval.load(Relaxed);
        if interval > 1 {
            let n = self.count.fetch_add(1, Relaxed).wrapping_add(1);
            if n % interval != 0 {
                return false;
            }
        }
        // get_random_u32_below(100), by multiply-and-shift.
        let draw = (u64::from(p.random_u64() as u32) * 100) >> 32;
        if probability <= draw {
            return false;
        }
        // Take one of `times` (unless unlimited); a CPU that loses the race
        // for the last one does not fail.
        let Ok(times) = self.times.fetch_update(Relaxed, Relaxed, |t| match t {
            0 => None,
            -1 => Some(-1),
            t => Some(t - 1),
        }) else {
            return false;
        };
        self.injected.fetch_add(1, Relaxed);
        if !nowarn {
            self.fail_dump(p, times, hook, caller);
        }
        true
    }

    /// `fail_dump()`: the message, at `verbose` 1 and 2; a call trace at 2.
    pub(crate) fn fail_dump<P: Platform>(
        &self,
        p: &P,
        times: i32,
        hook: &str,
        caller: &'static Location<'static>,
    ) {
        let verbose = self.verbose.load(Relaxed);
        if verbose == 0 {
            return;
        }
        report!(p, Level::Notice, "FAULT_INJECTION: forcing a failure.");
        report!(
            p,
            Level::Notice,
            "name {}, interval {}, probability {}, space {}, times {}",
            self.name,
            self.interval.load(Relaxed),
            self.probability.load(Relaxed),
            self.space.load(Relaxed),
            times
        );
        if verbose > 1 {
            // dump_stack(), at the default log level; the caller's frame
            // is the #[track_caller] location of the allocation call.
            let task = p.current();
            report!(
                p,
                Level::Warning,
                "CPU: {} PID: {} Comm: {}",
                p.smp_processor_id(),
                task.pid,
                task.comm()
            );
            report!(p, Level::Warning, "Call Trace:");
            report!(p, Level::Warning, " <TASK>");
            report!(p, Level::Warning, " should_fail_ex");
            report!(p, Level::Warning, " {hook}");
            report!(p, Level::Warning, " {caller}");
            report!(p, Level::Warning, " </TASK>");
        }
    }
}

impl FaultAttr {
    /// Put the `might_alloc` check of `CONFIG_DEBUG_ATOMIC_SLEEP` behind
    /// this attribute's gate (at boot).
    pub(crate) fn share_gate(&self) {
        self.active.fetch_or(SHARED, Relaxed);
    }

    /// Apply this attribute's boot argument (`failslab=`,
    /// `fail_page_alloc=`: `setup_failslab()`, `setup_fail_page_alloc()`).
    pub(crate) fn setup_boot<P: Platform>(&self, p: &P, arg: Option<&FaultBootArg>) -> Result<()> {
        match arg {
            Some(a) if a.is_overlong() => {
                report!(
                    p,
                    Level::Warning,
                    "FAULT_INJECTION: failed to parse arguments"
                );
                report!(
                    p,
                    Level::Warning,
                    "FAULT_INJECTION: {}=: argument longer than {} bytes",
                    self.name,
                    FAULT_BOOT_ARG_LEN
                );
                Err(Error::InvalidArgument)
            }
            Some(a) => setup_fault_attr(p, self, a.as_str()),
            None => Ok(()),
        }
    }
}

/// The text of a `failslab=` or `fail_page_alloc=` boot argument (what
/// follows the `=`), kept in [`BootParams`](crate::BootParams) and parsed
/// by boot, which reports a malformed one.
///
/// ```
/// use kmem::fault_inject::FaultBootArg;
/// let a = FaultBootArg::new("1,10,0,-1");
/// assert_eq!(a.as_str(), "1,10,0,-1");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FaultBootArg {
    pub(crate) buf: [u8; FAULT_BOOT_ARG_LEN],
    pub(crate) len: u8,
    /// The text was longer than [`FAULT_BOOT_ARG_LEN`]: boot refuses it.
    pub(crate) overlong: bool,
}

impl FaultBootArg {
    /// Keep `s` for boot to parse. Text longer than [`FAULT_BOOT_ARG_LEN`]
    /// bytes (no valid argument is) is kept marked as such, and boot
    /// refuses it with the same report as any other malformed argument.
    pub fn new(s: &str) -> Self {
        let mut buf = [0u8; FAULT_BOOT_ARG_LEN];
        let overlong = s.len() > FAULT_BOOT_ARG_LEN;
        let mut n = s.len().min(FAULT_BOOT_ARG_LEN);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        FaultBootArg {
            buf,
            len: n as u8,
            overlong,
        }
    }

    /// The text (cut at [`FAULT_BOOT_ARG_LEN`] bytes if it was longer).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether the text given to [`new`](Self::new) was too long to keep.
    pub fn is_overlong(&self) -> bool {
        self.overlong
    }
}

impl fmt::Debug for FaultBootArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultBootArg({:?}", self.as_str())?;
        if self.overlong {
            f.write_str(", overlong")?;
        }
        f.write_str(")")
    }
}

/// The four numbers of the boot form
/// `<interval>,<probability>,<space>,<times>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSetup {
    /// `interval`.
    pub interval: u64,
    /// `probability`, in percent.
    pub probability: u64,
    /// `space`.
    pub space: i32,
    /// `times` (-1: unlimited).
    pub times: i32,
}

impl FaultSetup {
    /// Parse the boot form. `None` when it is not exactly four
    /// comma-separated decimal numbers that fit their fields (the first two
    /// unsigned, the last two `int`). Ranges are checked by the setter.
    ///
    /// ```
    /// use kmem::fault_inject::FaultSetup;
    /// let s = FaultSetup::parse("1,10,0,-1").unwrap();
    /// assert_eq!((s.interval, s.probability, s.space, s.times), (1, 10, 0, -1));
    /// assert!(FaultSetup::parse("1,10,0").is_none());
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim_end_matches('\n').split(',');
        let interval = parse_dec_u64(it.next()?)?;
        let probability = parse_dec_u64(it.next()?)?;
        let space = parse_dec_i32(it.next()?)?;
        let times = parse_dec_i32(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        Some(FaultSetup {
            interval,
            probability,
            space,
            times,
        })
    }
}

pub(crate) fn parse_dec_u64(s: &str) -> Option<u64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(crate) fn parse_dec_i32(s: &str) -> Option<i32> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = i64::try_from(parse_dec_u64(digits)?).ok()?;
    i32::try_from(if neg { -v } else { v }).ok()
}

/// `kstrtoull(s, 0, ..)`: decimal, `0x` hex or leading-`0` octal, an
/// optional `+`, one optional trailing newline.
pub(crate) fn kstrtoull(s: &str) -> Option<u64> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let s = s.strip_prefix('+').unwrap_or(s);
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// `kstrtoll(s, 0, ..)`: [`kstrtoull`] with an optional `-`.
pub(crate) fn kstrtoll(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(rest) if !rest.starts_with(['+', '-']) => {
            let v = kstrtoull(rest)?;
            if v <= i64::MAX as u64 + 1 {
                Some((v as i64).wrapping_neg())
            } else {
                None
            }
        }
        Some(_) => None,
        None => i64::try_from(kstrtoull(s)?).ok(),
    }
}

/// `kstrtobool()`: `y`/`Y`/`t`/`T`/`1`/`on` true, `n`/`N`/`f`/`F`/`0`/`off`
/// false (only the first one or two characters count).
pub(crate) fn kstrtobool(s: &str) -> Option<bool> {
    let b = s.as_bytes();
    match b.first()? {
        b'y' | b'Y' | b't' | b'T' | b'1' => Some(true),
        b'n' | b'N' | b'f' | b'F' | b'0' => Some(false),
        b'o' | b'O' => match b.get(1)? {
            b'n' | b'N' => Some(true),
            b'f' | b'F' => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `setup_fault_attr()`: the boot form, range-checked.
pub(crate) fn setup_fault_attr<P: Platform>(p: &P, attr: &FaultAttr, s: &str) -> Result<()> {
    let Some(v) = FaultSetup::parse(s) else {
        report!(
            p,
            Level::Warning,
            "FAULT_INJECTION: failed to parse arguments"
        );
        report!(
            p,
            Level::Warning,
            "FAULT_INJECTION: {}={:?}: expected <interval>,<probability>,<space>,<times>",
            attr.name,
            s
        );
        return Err(Error::InvalidArgument);
    };
    check_probability(p, attr, v.probability)?;
    check_space(p, attr, v.space)?;
    check_times(p, attr, v.times)?;
    attr.interval.store(v.interval, Relaxed);
    attr.times.store(v.times, Relaxed);
    attr.space.store(v.space, Relaxed);
    attr.store_probability(v.probability);
    Ok(())
}

pub(crate) fn check_probability<P: Platform>(p: &P, attr: &FaultAttr, v: u64) -> Result<()> {
    if v > 100 {
        report!(
            p,
            Level::Warning,
            "FAULT_INJECTION: {}/probability: {} is not a percentage (0..100)",
            attr.name,
            v
        );
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

pub(crate) fn check_times<P: Platform>(p: &P, attr: &FaultAttr, v: i32) -> Result<()> {
    if v < -1 {
        report!(
            p,
            Level::Warning,
            "FAULT_INJECTION: {}/times: {} is invalid (-1 for unlimited, or 0 and up)",
            attr.name,
            v
        );
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

pub(crate) fn check_space<P: Platform>(p: &P, attr: &FaultAttr, v: i32) -> Result<()> {
    if v < 0 {
        report!(
            p,
            Level::Warning,
            "FAULT_INJECTION: {}/space: {} is negative",
            attr.name,
            v
        );
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

/// A knob's value as its debugfs file reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnobValue {
    /// An `unsigned long` or `u32` file (`probability`, `interval`,
    /// `verbose`, `min-order`).
    Unsigned(u64),
    /// An `atomic_t` file (`times`, `space`).
    Signed(i64),
    /// A `bool` file (`ignore-gfp-wait`, `cache-filter`,
    /// `ignore-gfp-highmem`).
    Bool(bool),
}

impl fmt::Display for KnobValue {
    /// As `cat` shows the file: a number, or `Y`/`N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnobValue::Unsigned(v) => write!(f, "{v}"),
            KnobValue::Signed(v) => write!(f, "{v}"),
            KnobValue::Bool(b) => f.write_str(if *b { "Y" } else { "N" }),
        }
    }
}

/// The common knobs of one attribute of a machine: what
/// [`FailSlab`](crate::slab::failslab::FailSlab) and
/// [`FailPageAlloc`](crate::page_alloc::fail_page_alloc::FailPageAlloc) dereference to.
pub struct Fault<'a, P: Platform> {
    pub(crate) p: &'a P,
    pub(crate) attr: &'a FaultAttr,
}

impl<P: Platform> Fault<'_, P> {
    /// The debugfs directory name: `"failslab"` or `"fail_page_alloc"`.
    pub fn name(&self) -> &'static str {
        self.attr.name
    }

    /// `probability`, in percent.
    pub fn probability(&self) -> u64 {
        self.attr.probability.load(Relaxed)
    }

    /// Set `probability` (0..=100); 0 switches the attribute off. Above
    /// 100 is refused with a report and [`Error::InvalidArgument`].
    pub fn set_probability(&self, percent: u64) -> Result<()> {
        check_probability(self.p, self.attr, percent)?;
        self.attr.store_probability(percent);
        Ok(())
    }

    /// `interval`.
    pub fn interval(&self) -> u64 {
        self.attr.interval.load(Relaxed)
    }

    /// Set `interval`: only every Nth call (past `space`) may fail; 0 and 1
    /// mean every call.
    pub fn set_interval(&self, n: u64) {
        self.attr.interval.store(n, Relaxed);
    }

    /// `times`: failures left, -1 for unlimited.
    pub fn times(&self) -> i32 {
        self.attr.times.load(Relaxed)
    }

    /// Set `times` (-1 or more); below -1 is refused with a report and
    /// [`Error::InvalidArgument`].
    pub fn set_times(&self, n: i32) -> Result<()> {
        check_times(self.p, self.attr, n)?;
        self.attr.times.store(n, Relaxed);
        Ok(())
    }

    /// `space`: weight still let through before calls may fail.
    pub fn space(&self) -> i32 {
        self.attr.space.load(Relaxed)
    }

    /// Set `space` (0 or more); negative is refused with a report and
    /// [`Error::InvalidArgument`].
    pub fn set_space(&self, n: i32) -> Result<()> {
        check_space(self.p, self.attr, n)?;
        self.attr.space.store(n, Relaxed);
        Ok(())
    }

    /// `verbose`: 0, 1 or 2.
    pub fn verbose(&self) -> u64 {
        self.attr.verbose.load(Relaxed)
    }

    /// Set `verbose` (0, 1 or 2); above 2 is refused with a report and
    /// [`Error::InvalidArgument`].
    pub fn set_verbose(&self, level: u64) -> Result<()> {
        if level > 2 {
            report!(
                self.p,
                Level::Warning,
                "FAULT_INJECTION: {}/verbose: {} is not 0, 1 or 2",
                self.attr.name,
                level
            );
            return Err(Error::InvalidArgument);
        }
        self.attr.verbose.store(level, Relaxed);
        Ok(())
    }

    /// Failures injected so far (kmem's counter; Linux has none).
    pub fn injected(&self) -> u64 {
        self.attr.injected.load(Relaxed)
    }

    /// Apply the boot form `<interval>,<probability>,<space>,<times>`
    /// (`setup_fault_attr()`) at run time. A malformed string is reported
    /// with Linux's `FAULT_INJECTION: failed to parse arguments` and
    /// refused with [`Error::InvalidArgument`], as are out-of-range values;
    /// nothing is changed then.
    pub fn setup(&self, s: &str) -> Result<()> {
        setup_fault_attr(self.p, self.attr, s)
    }

    /// Read a common knob.
    pub(crate) fn read_common(&self, knob: &str) -> Option<KnobValue> {
        Some(match knob {
            "probability" => KnobValue::Unsigned(self.probability()),
            "interval" => KnobValue::Unsigned(self.interval()),
            "times" => KnobValue::Signed(i64::from(self.times())),
            "space" => KnobValue::Signed(i64::from(self.space())),
            "verbose" => KnobValue::Unsigned(self.verbose()),
            _ => return None,
        })
    }

    /// Write a common knob; `None` when `knob` is not one.
    pub(crate) fn write_common(&self, knob: &str, value: &str) -> Option<Result<()>> {
        Some(match knob {
            "probability" => self
                .unsigned(knob, value)
                .and_then(|v| self.set_probability(v)),
            "interval" => self.unsigned(knob, value).map(|v| self.set_interval(v)),
            "times" => self.int(knob, value).and_then(|v| self.set_times(v)),
            "space" => self.int(knob, value).and_then(|v| self.set_space(v)),
            "verbose" => self.unsigned(knob, value).and_then(|v| self.set_verbose(v)),
            _ => return None,
        })
    }

    pub(crate) fn bad_value(&self, knob: &str, value: &str, what: &str) -> Error {
        report!(
            self.p,
            Level::Warning,
            "FAULT_INJECTION: {}/{}: {:?} is not {}",
            self.attr.name,
            knob,
            value,
            what
        );
        Error::InvalidArgument
    }

    pub(crate) fn unsigned(&self, knob: &str, value: &str) -> Result<u64> {
        kstrtoull(value).ok_or_else(|| self.bad_value(knob, value, "an unsigned number"))
    }

    pub(crate) fn int(&self, knob: &str, value: &str) -> Result<i32> {
        kstrtoll(value)
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| self.bad_value(knob, value, "an int"))
    }

    pub(crate) fn boolean(&self, knob: &str, value: &str) -> Result<bool> {
        kstrtobool(value).ok_or_else(|| self.bad_value(knob, value, "a boolean (Y/N)"))
    }

    /// Report a knob this attribute does not have.
    pub(crate) fn no_knob(&self, knob: &str) -> Error {
        if UNMODELLED_KNOBS.contains(&knob) {
            report!(
                self.p,
                Level::Warning,
                "FAULT_INJECTION: {}/{} is not modelled by kmem",
                self.attr.name,
                knob
            );
        } else {
            report!(
                self.p,
                Level::Warning,
                "FAULT_INJECTION: {} has no knob {:?}",
                self.attr.name,
                knob
            );
        }
        Error::InvalidArgument
    }
}

impl<P: Platform> Kmem<P> {
    /// Apply one debugfs-style assignment `<attr>/<knob>=<value>`, for
    /// example `fail_page_alloc/min-order=2` or `failslab/ignore-gfp-wait=N`
    /// (a leading `/sys/kernel/debug/` is accepted too). A malformed
    /// assignment, an unknown attribute or knob and a bad value are
    /// reported and refused with [`Error::InvalidArgument`].
    ///
    /// ```
    /// # let mut mem = vec![0u8; 16 << 20];
    /// # let k = kmem::Kmem::boot_arena(&mut mem, 1).unwrap();
    /// k.fault_inject_write("fail_page_alloc/min-order=2").unwrap();
    /// assert_eq!(k.fail_page_alloc().min_order(), 2);
    /// assert!(k.fault_inject_write("fail_page_alloc/colour=blue").is_err());
    /// ```
    pub fn fault_inject_write(&self, spec: &str) -> Result<()> {
        let path = spec.strip_prefix("/sys/kernel/debug/").unwrap_or(spec);
        let parsed = path
            .split_once('=')
            .and_then(|(file, value)| file.split_once('/').map(|(dir, knob)| (dir, knob, value)));
        let Some((dir, knob, value)) = parsed else {
            report!(
                &self.p,
                Level::Warning,
                "FAULT_INJECTION: {:?} is not <attr>/<knob>=<value>",
                spec
            );
            return Err(Error::InvalidArgument);
        };
        match dir {
            "failslab" => self.failslab().write(knob, value),
            "fail_page_alloc" => self.fail_page_alloc().write(knob, value),
            _ => {
                report!(
                    &self.p,
                    Level::Warning,
                    "FAULT_INJECTION: no fault attribute {:?} (kmem has failslab and fail_page_alloc)",
                    dir
                );
                Err(Error::InvalidArgument)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn boot_form_parses_like_setup_fault_attr() {
        assert_eq!(
            FaultSetup::parse("100,10,4096,-1"),
            Some(FaultSetup {
                interval: 100,
                probability: 10,
                space: 4096,
                times: -1
            })
        );
        assert_eq!(FaultSetup::parse("1,2,3,4\n").map(|s| s.times), Some(4));
        for bad in [
            "",
            "1,2,3",
            "1,2,3,4,5",
            "a,2,3,4",
            "-1,2,3,4",
            "1,2,3,4x",
            "1,,3,4",
            "1,2,3,99999999999",
        ] {
            assert_eq!(FaultSetup::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    pub(crate) fn kstrto_helpers_follow_the_kernel() {
        assert_eq!(kstrtoull("10\n"), Some(10));
        assert_eq!(kstrtoull("0x10"), Some(16));
        assert_eq!(kstrtoull("010"), Some(8));
        assert_eq!(kstrtoull("0"), Some(0));
        assert_eq!(kstrtoull("+7"), Some(7));
        assert_eq!(kstrtoull("-1"), None);
        assert_eq!(kstrtoull("08"), None);
        assert_eq!(kstrtoull("1 "), None);
        assert_eq!(kstrtoll("-1\n"), Some(-1));
        assert_eq!(kstrtoll("-0x10"), Some(-16));
        assert_eq!(kstrtoll("--1"), None);
        for (s, v) in [
            ("Y", true),
            ("y\n", true),
            ("1", true),
            ("on", true),
            ("true", true),
            ("N", false),
            ("0", false),
            ("off", false),
            ("false", false),
        ] {
            assert_eq!(kstrtobool(s), Some(v), "{s:?}");
        }
        assert_eq!(kstrtobool("maybe"), None);
        assert_eq!(kstrtobool("o"), None);
        assert_eq!(kstrtobool(""), None);
    }

    #[test]
    pub(crate) fn boot_arg_keeps_text_and_marks_overlong() {
        let a = FaultBootArg::new("1,100,0,-1");
        assert_eq!(a.as_str(), "1,100,0,-1");
        assert!(!a.is_overlong());
        let long = "1".repeat(FAULT_BOOT_ARG_LEN + 1);
        let b = FaultBootArg::new(&long);
        assert!(b.is_overlong());
        assert_eq!(b.as_str().len(), FAULT_BOOT_ARG_LEN);
    }

    #[test]
    pub(crate) fn knob_values_print_like_debugfs() {
        use std::format;
        assert_eq!(format!("{}", KnobValue::Bool(true)), "Y");
        assert_eq!(format!("{}", KnobValue::Bool(false)), "N");
        assert_eq!(format!("{}", KnobValue::Signed(-1)), "-1");
        assert_eq!(format!("{}", KnobValue::Unsigned(10)), "10");
    }
}
