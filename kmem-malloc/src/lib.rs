//! kmem as a user-space malloc: the kmem core, not a second allocator,
//! running on a machine made of the process's own address space.
//!
//! The first allocation boots a machine ([`machine`]): its physical memory
//! is one private anonymous mapping (`KMEM_MALLOC_MEM` bytes, by default
//! the host's memory and swap ([`default_mem`]), costing nothing until
//! touched), its CPUs are slots that threads take and give back
//! ([`platform`]). Then:
//!
//! | request | served by |
//! |---|---|
//! | up to `KMALLOC_MAX_CACHE_SIZE` (8 KiB) | SLUB, through `kmalloc()`'s size classes and the per-CPU sheaves |
//! | up to `KMALLOC_MAX_SIZE` (4 MiB) | `kmalloc_large()`: buddy pages through the per-CPU lists |
//! | above | a mapping of its own ([`large`]), as `kvmalloc()` falls back to vmalloc |
//!
//! Every size is at least 16 bytes, so every block is aligned for
//! `max_align_t` as glibc's are. An alignment up to 4 MiB comes from
//! kmalloc's guarantee that power-of-two sizes are naturally aligned.
//!
//! Frees are checked as kmem's `kfree()` checks them, always: a pointer
//! that is not the start of a live object (a double free at the head of
//! the CPU's sheaf, an interior pointer, a pointer kmem never handed out)
//! is reported in SLUB's words and the process aborts, as glibc's
//! `free(): invalid pointer` does. `KMEM_SLAB_DEBUG` takes Linux's
//! `slab_debug=` (letters `F`, `Z`, `P`, `U`, empty for all of them, for
//! every cache or, after a comma, for the caches named: `Z,kmalloc-64`)
//! for red zones, poisoning and caller tracking, which catch a double
//! free anywhere and overruns at free time. `KMEM_MALLOC_STATS=1`
//! prints `/proc/slabinfo` and meminfo at exit.
//!
//! The C functions (`malloc`, `free` ...) are exported by the
//! `kmem-preload` crate's shared library, for `LD_PRELOAD`; a Rust program
//! uses [`KmemMalloc`] as its `#[global_allocator]`:
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: kmem_malloc::KmemMalloc = kmem_malloc::KmemMalloc;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! ```
//!
//! docs/malloc.md has the design, the choices and what is not done.

pub mod large;
pub mod platform;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use kmem::gfp::{Gfp, __GFP_NOWARN, __GFP_ZERO, GFP_KERNEL};
use kmem::kmalloc::{KMALLOC_MAX_CACHE_SIZE, KMALLOC_MAX_SIZE};
use kmem::memory_map::MemRegion;
use kmem::{BootParams, Kmem};
use platform::{stderr_line, MallocPlatform, SetupError};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Once, OnceLock};

/// The machine malloc runs on.
pub type Machine = Kmem<MallocPlatform>;

/// The process's machine, booted by the first allocation.
pub(crate) static MACHINE: OnceLock<Machine> = OnceLock::new();

/// The page size (`valloc`, `pvalloc`).
pub use kmem::PAGE_SIZE;

/// Every block is at least this big and this aligned (`max_align_t`).
pub const MIN_ALIGN: usize = 16;

/// Free page reporting's delay when `KMEM_MALLOC_DECAY_MS` is not set:
/// Linux's `PAGE_REPORTING_DELAY` (2 s).
pub const DEFAULT_DECAY_MS: u64 = 2000;

/// The least physical memory a machine gets when `KMEM_MALLOC_MEM` is not
/// set (see [`default_mem`]).
pub const MIN_DEFAULT_MEM: u64 = 4 << 30;

/// The largest `KMEM_MALLOC_MEM`, and of the default: 8 TiB (the core
/// indexes under 16 TiB of page frames).
pub const MAX_MEM: u64 = 8 << 40;

/// The smallest `KMEM_MALLOC_MEM`.
pub const MIN_MEM: u64 = 64 << 20;

/// Physical memory when `KMEM_MALLOC_MEM` is not set: the host's memory
/// and swap (`sysinfo(2)`), what a program under glibc could touch before
/// the OOM killer came, rounded up to a GiB, at least
/// [`MIN_DEFAULT_MEM`] and at most [`MAX_MEM`]. The machine costs little
/// more than what the program touches (the mapping is `MAP_NORESERVE`, and
/// boot writes the free block heads of one section per zone, and none of
/// the struct page array's own descriptors), so it may be as large as the
/// host.
///
/// Under strict overcommit (`vm.overcommit_memory=2`) the kernel charges
/// the whole mapping to the commit limit, `MAP_NORESERVE` or not, and a
/// `fork()` charges it again: there the default stays
/// [`MIN_DEFAULT_MEM`].
pub fn default_mem() -> u64 {
    if strict_overcommit() {
        return MIN_DEFAULT_MEM;
    }
    // SAFETY: an all-zero `sysinfo` is valid; the call only writes it.
    let mut si: libc::sysinfo = unsafe { core::mem::zeroed() };
    // SAFETY: `si` is a valid out-pointer.
    let host = if unsafe { libc::sysinfo(&mut si) } == 0 {
        (si.totalram as u64)
            .saturating_add(si.totalswap as u64)
            .saturating_mul(u64::from(si.mem_unit.max(1)))
    } else {
        0
    };
    host.min(MAX_MEM)
        .next_multiple_of(1 << 30)
        .max(MIN_DEFAULT_MEM)
}

/// What malloc asks the core: it may block (it never waits for other
/// threads, see [`platform`]), and a failure is `NULL` with `ENOMEM`, not
/// a warning.
const GFP: Gfp = GFP_KERNEL.union(__GFP_NOWARN);

/// An environment variable as text, without allocating.
fn env(name: &core::ffi::CStr) -> Option<&'static str> {
    // SAFETY: `getenv` returns null or a NUL-terminated string that lives
    // as long as the environment is not changed; it is read at boot only.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null from getenv: a valid C string.
    unsafe { core::ffi::CStr::from_ptr(p) }.to_str().ok()
}

/// Whether `/proc/sys/vm/overcommit_memory` is 2 (read without allocating).
fn strict_overcommit() -> bool {
    let path = c"/proc/sys/vm/overcommit_memory";
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut b = [0u8; 1];
    // SAFETY: `b` is a valid buffer of one byte; `fd` is open.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
    // SAFETY: `fd` is ours, closed once.
    unsafe { libc::close(fd) };
    n == 1 && b[0] == b'2'
}

/// `4G`, `512M`, `65536`: a size with an optional K, M, G or T suffix.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = match s.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Refuse a bad setting: one line that says what to change, exit 2.
fn refuse(msg: core::fmt::Arguments<'_>) -> ! {
    stderr_line(msg);
    // SAFETY: `_exit` ends the process; nothing runs after it.
    unsafe { libc::_exit(2) }
}

/// The boot settings, from the environment.
struct Settings {
    /// `KMEM_MALLOC_MEM`, if given.
    mem: Option<u64>,
    /// Free page reporting delay (`u64::MAX`: off).
    decay_ns: u64,
    params: BootParams,
    verbose: bool,
    stats: bool,
}

fn settings() -> Settings {
    let mem = env(c"KMEM_MALLOC_MEM").map(|s| match parse_size(s) {
        Some(m) if (MIN_MEM..=MAX_MEM).contains(&m) => m & !(PAGE_SIZE as u64 - 1),
        _ => refuse(format_args!(
            "kmem-malloc: KMEM_MALLOC_MEM={s}: give a size from 64M to 8T, such as 4G"
        )),
    });
    let decay_ns = match env(c"KMEM_MALLOC_DECAY_MS") {
        None => DEFAULT_DECAY_MS * 1_000_000,
        Some("off") => u64::MAX,
        Some(s) => match s.parse::<u64>() {
            Ok(ms) if ms <= 3_600_000 => ms * 1_000_000,
            _ => refuse(format_args!(
                "kmem-malloc: KMEM_MALLOC_DECAY_MS={s}: give milliseconds from 0 to 3600000, or off"
            )),
        },
    };
    let mut params = BootParams {
        reserve_low: 0,
        // Boot frees one section per zone to the buddy lists; the rest of
        // memory joins as the program needs it.
        deferred_struct_page_init: true,
        ..BootParams::default()
    };
    if let Some(s) = env(c"KMEM_SLAB_DEBUG") {
        // Empty (bare `slab_debug`) turns on every check, as Linux's does.
        match kmem::slab::SlabDebug::parse(s) {
            Ok(d) => params.slab.debug = d,
            Err(_) => refuse(format_args!(
                "kmem-malloc: KMEM_SLAB_DEBUG={s}: give slab_debug= letters (F, Z, P, U, A, -), each optionally followed by ,cache,names (a trailing * matches a prefix), blocks separated by ; (at most {} bytes), such as FZPU or FZ,kmalloc-64;P,kmalloc-*",
                kmem::slab::SLAB_DEBUG_MAX
            )),
        }
    }
    Settings {
        mem,
        decay_ns,
        params,
        verbose: env(c"KMEM_MALLOC_VERBOSE") == Some("1"),
        stats: env(c"KMEM_MALLOC_STATS") == Some("1"),
    }
}

/// For a `mem` the address space a limit leaves (`ulimit -v`, `ulimit
/// -d`, strict overcommit's commit limit) has no room for: half of the
/// largest power-of-two share of it that fits, so that the program keeps
/// room for its own mappings (thread stacks, blocks above 4 MiB, files)
/// and a `fork()`; never below [`MIN_MEM`].
fn fitting(mem: u64) -> u64 {
    let mut m = mem;
    while m / 2 >= MIN_MEM && !platform::reservable(m) {
        m /= 2;
    }
    (m / 2).max(MIN_MEM)
}

/// The CPUs of the host, for the number of slots.
fn host_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (n.max(1) as usize).min(256)
}

fn boot() -> Machine {
    let s = settings();
    let cpus = host_cpus();
    // Four exclusive slots per host CPU (at least 8), one shared per CPU.
    let new = |mem| MallocPlatform::new(mem, (4 * cpus).max(8), cpus, s.verbose, s.decay_ns);
    let p = match s.mem {
        Some(mem) => new(mem),
        None => {
            let default = default_mem();
            match new(default) {
                Err(SetupError::Reserve(_)) => new(fitting(default)).map_err(|e| match e {
                    SetupError::Reserve(n) => refuse(format_args!(
                        "kmem-malloc: cannot reserve {n} bytes of address space for physical memory: raise the address-space limit (ulimit -v), or set KMEM_MALLOC_MEM to less"
                    )),
                    e => e,
                }),
                r => r,
            }
        }
    };
    let p = match p {
        Ok(p) => p,
        Err(e) => refuse(format_args!("{e}")),
    };
    let map = [MemRegion::usable(0, p.mem())];
    let k = match Kmem::boot(p, &map, &s.params) {
        Ok(k) => k,
        Err(e) => refuse(format_args!("kmem-malloc: boot failed: {e:?}")),
    };
    k.platform().set_on_exit(drain_exiting_thread);
    if s.decay_ns != u64::MAX {
        k.platform().set_on_report(report_free_pages);
        // Blocks of pageblock order (2 MiB) and above, Linux's default.
        k.page_reporting_register(None);
        // Memory nothing has touched yet is still the host's: a round that
        // gives nothing back marks every free block reported.
        k.page_reporting_process(&mut |_, _| {});
        k.platform().cancel_report();
    }
    STATS.store(s.stats, Relaxed);
    k
}

/// `KMEM_MALLOC_STATS=1` was given.
static STATS: AtomicBool = AtomicBool::new(false);

/// What boot leaves to the first call after it: calls that may allocate
/// (`atexit`, `pthread_atfork` and `pthread_setspecific` may call
/// `malloc`), which inside boot would wait for the boot they are part of.
#[cold]
#[inline(never)]
fn after_boot(k: &'static Machine) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if STATS.load(Relaxed) {
            platform::keep_stderr();
            // SAFETY: `print_stats` is an `extern "C" fn()`.
            unsafe { libc::atexit(print_stats) };
        }
        STDIO_LIST.find();
        // SAFETY: the handlers are `extern "C" fn()`s.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    });
    if k.platform().exit_pending() {
        k.platform().register_exit();
    }
}

/// The process's machine, booting it at the first call.
#[inline]
pub fn machine() -> &'static Machine {
    match MACHINE.get() {
        Some(k) => k,
        None => boot_now(),
    }
}

#[cold]
#[inline(never)]
fn boot_now() -> &'static Machine {
    let k = MACHINE.get_or_init(boot);
    after_boot(k);
    k
}

/// Pages given back to the host by free page reporting so far.
static REPORTED: AtomicU64 = AtomicU64::new(0);

/// A free page reporting round: every free block of 2 MiB and more that
/// was not given back yet goes back to the host (`MADV_DONTNEED`: the
/// process's resident memory falls; the next touch maps a zeroed page).
fn report_free_pages() {
    let Some(k) = MACHINE.get() else { return };
    let base = kmem::platform::Platform::direct_map(k.platform()).base;
    let pages = k.page_reporting_process(&mut |pfn, order| {
        let addr = base + ((pfn as usize) << kmem::PAGE_SHIFT);
        // SAFETY: the block is free and isolated from the free lists for
        // the length of this call, so no one else reads or writes it; its
        // contents are not needed.
        let _ = unsafe {
            rustix::mm::madvise(
                addr as *mut _,
                PAGE_SIZE << order,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
    });
    REPORTED.fetch_add(pages, Relaxed);
}

/// Pages free page reporting has given back to the host.
pub fn reported_pages() -> u64 {
    REPORTED.load(Relaxed)
}

/// Thread exit, as a CPU going offline: its slot's sheaves go back to
/// their slabs (`slub_cpu_dead()`) and its page lists to the buddy
/// allocator (`page_alloc_cpu_dead()`), so that nothing the thread cached
/// waits for the next thread to take the slot.
fn drain_exiting_thread() {
    if let Some(k) = MACHINE.get() {
        k.flush_cpu_slabs();
        k.drain_local_pages();
    }
}

/// glibc's stdio list lock, which its `fork()` takes after the atfork
/// prepare handlers (in a process with threads): `_IO_list_lock`,
/// `_IO_list_unlock` and `_IO_list_resetlock` (exported by glibc; found at
/// run time, so another C library without them still links). A thread can
/// hold it and wait for a stream's lock (`fflush(NULL)`), whose holder
/// allocates (`getline` reallocates under it): if the gate closed first,
/// that allocation would wait at the gate, and `fork()` for the list lock,
/// for good. The prepare handler therefore takes the list lock before
/// closing the gate, and holds it through the fork, as glibc orders its
/// own malloc lock last. The lock is recursive, so glibc's own taking of
/// it nests. Only when kmem is the C library's `malloc` (the preload
/// library; as a Rust global allocator stdio's allocations are glibc's,
/// which the gate does not stop) and, as glibc does, only in a process
/// with threads (`__libc_single_threaded`), so that a single-threaded
/// program forking from a signal handler cannot wait for itself.
struct StdioListLock {
    /// The three functions' addresses, 0 until found (or when not used).
    lock: AtomicUsize,
    unlock: AtomicUsize,
    reset: AtomicUsize,
    /// `&__libc_single_threaded`, 0 when the C library has none.
    single: AtomicUsize,
    /// This fork's prepare handler took the list lock (written only by
    /// the list lock's holder).
    held: AtomicBool,
}

static STDIO_LIST: StdioListLock = StdioListLock {
    lock: AtomicUsize::new(0),
    unlock: AtomicUsize::new(0),
    reset: AtomicUsize::new(0),
    single: AtomicUsize::new(0),
    held: AtomicBool::new(false),
};

impl StdioListLock {
    /// Look the functions up, once, after boot (`dlsym` may allocate).
    fn find(&self) {
        let sym = |name: &core::ffi::CStr| {
            // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the
            // global scope.
            unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
        };
        let object_of = |addr: usize| {
            // SAFETY: an all-zero `Dl_info` is valid; `dladdr` only writes
            // it.
            let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
            // SAFETY: `info` is a valid out-pointer; `addr` is only looked up.
            let found = unsafe { libc::dladdr(addr as *const _, &mut info) } != 0;
            found.then_some(info.dli_fbase as usize)
        };
        let ours = object_of(Self::find as fn(&Self) as usize);
        if ours.is_none() || object_of(sym(c"malloc")) != ours {
            return;
        }
        let (l, u, r) = (
            sym(c"_IO_list_lock"),
            sym(c"_IO_list_unlock"),
            sym(c"_IO_list_resetlock"),
        );
        // All three or none.
        if l != 0 && u != 0 && r != 0 {
            self.single.store(sym(c"__libc_single_threaded"), Relaxed);
            self.lock.store(l, Relaxed);
            self.unlock.store(u, Relaxed);
            self.reset.store(r, Relaxed);
        }
    }

    /// Call the `void (void)` function at `f`, if found.
    fn call(f: &AtomicUsize) {
        let f = f.load(Relaxed);
        if f != 0 {
            // SAFETY: `f` is the address of a `void (void)` function of the
            // C library, found by `find`.
            let f = unsafe { core::mem::transmute::<usize, extern "C" fn()>(f) };
            f();
        }
    }

    /// The prepare handler's part: take the list lock if it is used and
    /// the process has threads.
    fn take(&self) {
        let single = self.single.load(Relaxed);
        // SAFETY: `single` is the address of glibc's
        // `__libc_single_threaded`, a `char` it keeps for the process.
        if single != 0 && unsafe { core::ptr::read_volatile(single as *const u8) } != 0 {
            return;
        }
        if self.lock.load(Relaxed) != 0 {
            Self::call(&self.lock);
            self.held.store(true, Relaxed);
        }
    }

    /// The parent's (`unlock`) or the child's (`reset`) part.
    fn give_back(&self, f: &AtomicUsize) {
        if self.held.swap(false, Relaxed) {
            Self::call(f);
        }
    }
}

extern "C" fn fork_prepare() {
    STDIO_LIST.take();
    if let Some(k) = MACHINE.get() {
        k.platform().fork_prepare();
    }
}

extern "C" fn fork_parent() {
    if let Some(k) = MACHINE.get() {
        k.platform().fork_parent();
    }
    STDIO_LIST.give_back(&STDIO_LIST.unlock);
}

extern "C" fn fork_child() {
    if let Some(k) = MACHINE.get() {
        // SAFETY: called as the atfork child handler only.
        unsafe { k.platform().after_fork_in_child() };
    }
    // The prepare handler's hold (glibc's child path has reset the lock
    // already when the parent had threads; a second reset is harmless).
    STDIO_LIST.give_back(&STDIO_LIST.reset);
}

extern "C" fn print_stats() {
    if let Some(k) = MACHINE.get() {
        // Inside a call, so that a fork waits for it.
        let _call = k.platform().call();
        print_report(k);
    }
}

/// Writes a report to standard error line by line.
struct Lines {
    buf: [u8; 256],
    len: usize,
}

impl core::fmt::Write for Lines {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' || self.len == self.buf.len() {
                let line = core::str::from_utf8(&self.buf[..self.len]).unwrap_or("");
                stderr_line(format_args!("{line}"));
                self.len = 0;
                if b == b'\n' {
                    continue;
                }
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// `/proc/slabinfo`, meminfo and the large blocks, on standard error.
pub fn print_report(k: &Machine) {
    let mut w = Lines {
        buf: [0; 256],
        len: 0,
    };
    let _ = kmem::proc::slabinfo(k, &mut w);
    let _ = kmem::proc::meminfo(k, &mut w);
    let (n, bytes) = large::stats();
    let _ = core::fmt::Write::write_fmt(
        &mut w,
        format_args!(
            "Large blocks:   {n} mapping(s), {} kB\nReported:       {} kB\n",
            bytes / 1024,
            reported_pages() * (PAGE_SIZE as u64 / 1024)
        ),
    );
}

fn set_errno(e: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// Report a bad free or size query and abort, as glibc does.
#[cold]
fn abort_bad(what: &str, p: *const u8) -> ! {
    let in_map = MACHINE
        .get()
        .is_some_and(|k| k.platform().in_direct_map(p as usize));
    if in_map {
        // The core's report (SLUB's words) came first.
        stderr_line(format_args!(
            "kmem-malloc: {what}(): {p:p} refused: aborting"
        ));
    } else {
        stderr_line(format_args!(
            "kmem-malloc: {what}(): invalid pointer {p:p} (not a block kmem handed out, or one freed already): aborting"
        ));
    }
    // SAFETY: `abort` ends the process.
    unsafe { libc::abort() }
}

/// `malloc(size)`: null with `ENOMEM` when there is no memory.
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    // The fast path: an object from this slot's sheaf, on an exclusive
    // slot, no fork under way. Anything else is the slow path's, which
    // starts again from nothing. Neither path holds a call but for tail
    // calls, so `malloc` saves no registers.
    if let Some(k) = MACHINE.get() {
        if size <= KMALLOC_MAX_CACHE_SIZE {
            if let Some(call) = k.platform().fast_enter() {
                // SAFETY: the call's section is this thread's, on its
                // exclusive slot of this machine, open until the call is
                // consumed below; nothing else here reaches the sheaves.
                let p = unsafe { k.kmalloc_fastpath_in(call.section(), size.max(MIN_ALIGN), GFP) };
                if let Some(p) = p {
                    return k.platform().fast_exit(call, p.as_ptr());
                }
                k.platform().fast_abandon(call);
            }
        }
    }
    malloc_slow(size)
}

#[inline(never)]
fn malloc_slow(size: usize) -> *mut u8 {
    alloc_gfp(size, GFP)
}

#[inline]
fn alloc_gfp(size: usize, gfp: Gfp) -> *mut u8 {
    let k = machine();
    let _call = k.platform().call();
    if size > KMALLOC_MAX_CACHE_SIZE && size <= KMALLOC_MAX_SIZE && gfp.contains(__GFP_ZERO) {
        // calloc of a page block: zero the bytes asked for, not the whole
        // power-of-two block __GFP_ZERO would (on average a third more).
        if let Ok(p) = k.kmalloc(size, gfp & !__GFP_ZERO) {
            // SAFETY: a fresh block of at least `size` bytes, ours.
            unsafe { ptr::write_bytes(p.as_ptr(), 0, size) };
            return p.as_ptr();
        }
    } else if size <= KMALLOC_MAX_SIZE {
        if let Ok(p) = k.kmalloc(size.max(MIN_ALIGN), gfp) {
            return p.as_ptr();
        }
    } else if let Some(p) = large::alloc(k, size, PAGE_SIZE) {
        // A fresh mapping reads as zero: __GFP_ZERO holds.
        return p;
    }
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// `calloc(n, size)`: zeroed; an overflowing product is `ENOMEM`.
pub fn calloc(n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        Some(bytes) => alloc_gfp(bytes, GFP | __GFP_ZERO),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `free(p)`. A pointer kmem did not hand out, or one already freed that
/// kmem can tell, is reported and the process aborts.
///
/// # Safety
///
/// `p` is null or a live block of this allocator, not used afterwards.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    // The fast path: a slab object onto this slot's sheaf, on an
    // exclusive slot, no fork under way. Anything else (a bad pointer
    // included, which the slow path reports) is the slow path's.
    if let Some(k) = MACHINE.get() {
        if let Some(call) = k.platform().fast_enter() {
            // SAFETY: the caller gives the block up; the call's section is
            // as in `malloc`.
            if unsafe { k.kfree_fastpath_in(call.section(), p) } {
                return k.platform().fast_exit(call, ());
            }
            k.platform().fast_abandon(call);
        }
    }
    // SAFETY: the caller's contract.
    unsafe { free_slow(p) }
}

/// [`free`] on any slot, of any block.
///
/// # Safety
///
/// As [`free`].
#[inline(never)]
unsafe fn free_slow(p: *mut u8) {
    if p.is_null() {
        return;
    }
    let Some(k) = MACHINE.get() else {
        abort_bad("free", p)
    };
    let _call = k.platform().call();
    if k.platform().in_direct_map(p as usize) {
        // SAFETY: the caller gives the block up.
        if unsafe { k.kfree(p) }.is_err() {
            abort_bad("free", p);
        }
    } else if !large::free(k, p) {
        abort_bad("free", p);
    }
}

/// `free_sized(p, size)` (C23): `size` must be the size asked for, which
/// cannot exceed the block's usable size; a larger one is reported.
///
/// # Safety
///
/// As [`free`].
pub unsafe fn free_sized(p: *mut u8, size: usize) {
    if !p.is_null() && size > usable_size(p) {
        stderr_line(format_args!(
            "kmem-malloc: free_sized(): size {size} is larger than the block at {p:p}"
        ));
        abort_bad("free_sized", p);
    }
    // SAFETY: the caller's contract.
    unsafe { free(p) }
}

/// `malloc_usable_size(p)`: the bytes the block really has (0 for null).
/// A pointer kmem did not hand out is reported and the process aborts.
pub fn usable_size(p: *const u8) -> usize {
    if p.is_null() {
        return 0;
    }
    let Some(k) = MACHINE.get() else {
        abort_bad("malloc_usable_size", p)
    };
    let _call = k.platform().call();
    if k.platform().in_direct_map(p as usize) {
        match k.ksize(p) {
            0 => abort_bad("malloc_usable_size", p),
            n => n,
        }
    } else {
        large::usable_size(p).unwrap_or_else(|| abort_bad("malloc_usable_size", p))
    }
}

/// `realloc(p, size)`: glibc's rules (null `p` is malloc, size 0 frees and
/// returns null); in place while the new size fits and uses at least half
/// the block; large blocks move with `mremap`.
///
/// # Safety
///
/// `p` is null or a live block of this allocator; on success only the
/// returned pointer may be used.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: the caller's contract.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    let k = machine();
    let _call = k.platform().call();
    let old = usable_size(p);
    if size <= old && size.max(MIN_ALIGN) >= old / 2 {
        return p;
    }
    if !k.platform().in_direct_map(p as usize) && size > KMALLOC_MAX_SIZE {
        if let Some(q) = large::realloc(p, size) {
            return q;
        }
    }
    let q = malloc(size);
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; `old` and `size`
        // bound their usable bytes.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old.min(size));
            free(p);
        }
    }
    q
}

/// `aligned_alloc(align, size)`: `align` a power of two (anything else is
/// `EINVAL` and null).
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    if align <= MIN_ALIGN {
        return malloc(size);
    }
    let k = machine();
    let _call = k.platform().call();
    let want = size.max(align);
    if want <= KMALLOC_MAX_SIZE {
        // A size that is a multiple of the alignment usually lands in a
        // class whose objects are aligned (kmalloc-96 for 32); else the
        // power of two, which kmalloc aligns naturally.
        let round = want.next_multiple_of(align);
        for size in [round, round.next_power_of_two()] {
            if let Ok(p) = k.kmalloc(size, GFP) {
                if p.as_ptr() as usize % align == 0 {
                    return p.as_ptr();
                }
                // SAFETY: just allocated, not handed out.
                let _ = unsafe { k.kfree(p.as_ptr()) };
            }
        }
    }
    match large::alloc(k, want, align) {
        Some(p) => p,
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `posix_memalign(&p, align, size)`: `EINVAL` unless `align` is a power
/// of two multiple of `sizeof(void *)`, `ENOMEM` without memory; `errno`
/// is left alone, as POSIX asks.
pub fn posix_memalign(align: usize, size: usize) -> Result<*mut u8, i32> {
    if !align.is_power_of_two() || align % size_of::<usize>() != 0 {
        return Err(libc::EINVAL);
    }
    // SAFETY: `__errno_location` returns the calling thread's errno.
    let saved = unsafe { *libc::__errno_location() };
    let p = aligned_alloc(align, size);
    set_errno(saved);
    if p.is_null() {
        Err(libc::ENOMEM)
    } else {
        Ok(p)
    }
}

/// `memalign(align, size)`: as glibc, an alignment that is not a power of
/// two is rounded up to one.
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    match align.checked_next_power_of_two() {
        Some(a) => aligned_alloc(a, size),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// `pvalloc(size)`: page aligned, rounded up to whole pages (one at least).
pub fn pvalloc(size: usize) -> *mut u8 {
    match size.max(1).checked_next_multiple_of(PAGE_SIZE) {
        Some(s) => aligned_alloc(PAGE_SIZE, s),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `reallocarray(p, n, size)`: an overflowing product is `ENOMEM` and
/// leaves `p` alone.
///
/// # Safety
///
/// As [`realloc`].
pub unsafe fn reallocarray(p: *mut u8, n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        // SAFETY: the caller's contract.
        Some(bytes) => unsafe { realloc(p, bytes) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// kmem as a Rust program's `#[global_allocator]`.
pub struct KmemMalloc;

// SAFETY: blocks come from the kmem machine, are at least `layout.size()`
// bytes with `layout.align()` alignment (aligned_alloc for anything above
// MIN_ALIGN), and are freed once through the same machine.
unsafe impl GlobalAlloc for KmemMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            malloc(layout.size())
        } else {
            aligned_alloc(layout.align(), layout.size())
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` is a live block of ours.
        unsafe { free(ptr) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            calloc(1, layout.size())
        } else {
            let p = aligned_alloc(layout.align(), layout.size());
            if !p.is_null() {
                // SAFETY: `p` has `layout.size()` bytes, ours.
                unsafe { ptr::write_bytes(p, 0, layout.size()) };
            }
            p
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            // SAFETY: GlobalAlloc's contract; `new_size` is non-zero.
            unsafe { realloc(p, new_size) }
        } else {
            let q = aligned_alloc(layout.align(), new_size);
            if !q.is_null() {
                // SAFETY: both live, distinct; the old block has
                // `layout.size()` bytes.
                unsafe {
                    ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                    free(p);
                }
            }
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alignments the C functions refuse or round, called directly (this
    /// test binary's own allocator stays the system's).
    #[test]
    fn bad_alignments_are_einval_or_rounded_as_glibc_does() {
        let errno = || {
            // SAFETY: `__errno_location` returns the calling thread's errno.
            unsafe { *libc::__errno_location() }
        };
        set_errno(0);
        assert!(aligned_alloc(48, 8).is_null());
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(posix_memalign(3, 8), Err(libc::EINVAL));
        assert_eq!(
            posix_memalign(4, 8),
            Err(libc::EINVAL),
            "not a multiple of void *"
        );
        let p = memalign(48, 8);
        assert!(!p.is_null() && p as usize % 64 == 0, "rounded up to 64");
        // SAFETY: just allocated, not used again.
        unsafe { free(p) };
        let p = posix_memalign(4096, 100).unwrap();
        assert_eq!(p as usize % 4096, 0);
        // SAFETY: just allocated, not used again.
        unsafe { free(p) };
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("x1"), None);
        assert_eq!(parse_size("99999999999999T"), None);
    }
}
