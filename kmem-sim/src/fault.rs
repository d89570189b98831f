//! Page faults in the vmap area, reported as Linux's oops.
//!
//! Every [`SimPlatform`] reserves a host address range as its
//! vmalloc/ioremap/kmap area ([`Platform::vmap_range`](kmem::Platform::vmap_range)),
//! in which every page the core has not mapped is `PROT_NONE`. An access
//! there (a guard-page overrun, a use after `vfree`, a write through a
//! read-only mapping) really faults: the host sends the thread `SIGSEGV`.
//! This module catches that signal and prints what Linux prints for a
//! kernel page fault (`page_fault_oops()` in `arch/x86/mm/fault.c` and
//! `__die()`):
//!
//! ```text
//! BUG: unable to handle page fault for address: 00007f3a5c205000
//! #PF: supervisor write access in kernel mode
//! #PF: error_code(0x0002) - not-present page
//! vmalloc: address is in the guard page of area 0x...-0x... (the describer's text)
//! Oops: Oops: 0002 [#1] SMP
//! CPU: 0 UID: 0 PID: 1 Comm: cpu/0
//! RIP: 0010:0x55d0c0ffee00
//! CR2: 00007f3a5c205000
//! ---[ end trace 0000000000000000 ]---
//! kmem-sim: ending the process with SIGSEGV (...)
//! ```
//!
//! then ends the process.
//!
//! ## Design
//!
//! * **One handler per process.** The first [`SimPlatform::new`] installs
//!   a handler for `SIGSEGV` and `SIGBUS` with `sigaction(SA_SIGINFO |
//!   SA_ONSTACK)`, remembering the handlers it replaces. A fault whose
//!   address lies in no registered window, or that the kernel did not
//!   raise (`si_code <= 0`: someone called `kill`), goes to the previous
//!   handler unchanged: Rust's own stack-overflow handler, which std
//!   installs at start-up and which tells a guard-page hit from anything
//!   else, keeps working. A previous `SIG_DFL` or `SIG_IGN` becomes
//!   `SIG_DFL` again and the access is retried, so the process ends
//!   exactly as it would have without this module.
//! * **A registry of windows.** A fixed array of slots made of atomics
//!   (owner, window start and end, describer and its context word), so the
//!   handler finds the window without a lock or an allocation. Each slot
//!   is a sequence lock: writers (registration, [`SimPlatform::set_fault_describer`],
//!   unregistration) make the sequence odd while they write, and the
//!   handler retries until it reads an even, unchanged sequence, so it
//!   never pairs one platform's window with another's describer when a
//!   slot is reused. `SimPlatform::new` registers its window and the
//!   platform's drop unregisters it, before the window is unmapped.
//! * **Async-signal-safe output.** Every line is formatted with
//!   `core::fmt` into a fixed buffer on the handler's stack (truncated if
//!   too long) and written to fd 2 with `write(2)`; nothing allocates and
//!   nothing takes a lock that the faulting thread could hold. The CPU,
//!   pid and command name come from the thread's binding, a const-
//!   initialised thread-local of plain `Cell`s that needs no lazy set-up,
//!   so reading it in the handler is safe. The platform's report log
//!   ([`SimPlatform::reports`]) is a `Mutex<Vec<_>>`, neither of which a
//!   signal handler may touch: the oops goes to stderr only, whether or
//!   not the platform echoes its reports.
//! * **The stack.** No alternate signal stack is installed: a fault in the
//!   vmap area is an overrun of a vmalloc buffer, not of the thread's
//!   stack, so the handler (whose frame is about 2 KiB) runs on the normal
//!   stack. `SA_ONSTACK` still lets it use the alternate stack std gives
//!   every thread it starts, so a real stack overflow reaches Rust's
//!   handler through this one.
//! * **The end.** Linux kills the task; the simulator's tasks are host
//!   threads that cannot be unwound from a signal handler (the fault may
//!   sit inside a CPU-local section or under a lock), so after the oops it
//!   ends the process with `SIGSEGV` (or `SIGBUS`): it restores the
//!   default action and raises the signal, which the kernel delivers when
//!   the handler returns. A parent process sees a child killed by that
//!   signal, as for any crash.
//!
//! A fault inside the describer itself (the signal is blocked while the
//! handler runs) makes the kernel kill the process with `SIGSEGV` at once,
//! with the oops printed so far.

use crate::cpu::LOCAL;
use crate::SimPlatform;
use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr;
use kmem::vmalloc::PfErrorCode;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// A function describing what a faulting address in the vmap area belongs
/// to, installed with [`SimPlatform::set_fault_describer`]: it gets the
/// context word given with it, the faulting address, and a writer to
/// stderr.
///
/// It runs inside a signal handler, on the thread that faulted, possibly
/// in the middle of any code of the core: it must be async-signal-safe.
/// It must not allocate, must take no lock that the faulting thread could
/// hold (a `try_lock` that gives up is fine) and must not block, and it
/// should keep its stack frame small: it may run on the thread's
/// alternate signal stack, which can be as small as 8 KiB. What it writes
/// is cut into lines at `\n`; a line longer than 511 bytes is truncated.
pub type FaultDescriber = fn(ctx: usize, addr: usize, out: &mut dyn fmt::Write);

/// How many platforms can have their windows registered at once. A
/// platform created while all slots are taken works, but its faults are
/// not reported as an oops (it says so on stderr when created).
const SLOTS: usize = 256;

/// One registered window.
struct Slot {
    /// Instance id of the platform that holds the slot; 0 when free.
    owner: AtomicU64,
    /// Sequence lock: odd while a writer changes the fields below.
    seq: AtomicU64,
    /// The window `[start, end)`; both 0 while the slot is free.
    start: AtomicUsize,
    end: AtomicUsize,
    /// The describer (a [`FaultDescriber`] as an address), 0 for none.
    describe: AtomicUsize,
    /// Its context word.
    ctx: AtomicUsize,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            owner: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            describe: AtomicUsize::new(0),
            ctx: AtomicUsize::new(0),
        }
    }

    /// Run `f` as the only writer of the fields, with the sequence odd.
    fn write(&self, f: impl FnOnce(&Self)) {
        loop {
            let s = self.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange_weak(s, s + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            std::hint::spin_loop();
        }
        // The field stores below must not become visible before the odd
        // sequence does.
        fence(Ordering::Release);
        f(self);
        self.seq.fetch_add(1, Ordering::Release);
    }

    /// A consistent copy of the fields, or `None` when the slot is free or
    /// writers kept changing it.
    fn read(&self) -> Option<Window> {
        for _ in 0..1000 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let w = Window {
                    id: self.owner.load(Ordering::Relaxed),
                    start: self.start.load(Ordering::Relaxed),
                    end: self.end.load(Ordering::Relaxed),
                    describe: self.describe.load(Ordering::Relaxed),
                    ctx: self.ctx.load(Ordering::Relaxed),
                };
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return (w.end > w.start).then_some(w);
                }
            }
            std::hint::spin_loop();
        }
        None
    }
}

/// What the handler read from a slot.
#[derive(Clone, Copy)]
struct Window {
    id: u64,
    start: usize,
    end: usize,
    describe: usize,
    ctx: usize,
}

static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// The window of `addr`, if a platform registered one containing it.
fn lookup(addr: usize) -> Option<Window> {
    REGISTRY
        .iter()
        .filter(|s| s.owner.load(Ordering::Relaxed) != 0)
        .filter_map(Slot::read)
        .find(|w| w.start <= addr && addr < w.end)
}

/// A platform's place in the registry; unregisters on drop.
pub(crate) struct Registration {
    slot: Option<&'static Slot>,
}

/// Install the handler (once per process) and register the window
/// `[start, end)` of platform `id`.
pub(crate) fn register(id: u64, (start, end): (usize, usize)) -> Registration {
    install();
    let slot = REGISTRY.iter().find(|s| {
        s.owner
            .compare_exchange(0, id, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    });
    match slot {
        Some(s) => s.write(|s| {
            s.describe.store(0, Ordering::Relaxed);
            s.ctx.store(0, Ordering::Relaxed);
            s.start.store(start, Ordering::Relaxed);
            s.end.store(end, Ordering::Relaxed);
        }),
        None => eprintln!(
            "kmem-sim: more than {SLOTS} machines alive at once: a fault in the vmap area \
             of this one is not reported as an oops"
        ),
    }
    Registration { slot }
}

impl Registration {
    fn set_describer(&self, describe: usize, ctx: usize) {
        if let Some(s) = self.slot {
            s.write(|s| {
                s.describe.store(describe, Ordering::Relaxed);
                s.ctx.store(ctx, Ordering::Relaxed);
            });
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            s.write(|s| {
                s.start.store(0, Ordering::Relaxed);
                s.end.store(0, Ordering::Relaxed);
                s.describe.store(0, Ordering::Relaxed);
                s.ctx.store(0, Ordering::Relaxed);
            });
            s.owner.store(0, Ordering::Release);
        }
    }
}

impl SimPlatform {
    /// Install `describe` as the function that tells, in an oops for a
    /// fault in this machine's vmap area, what the address belongs to
    /// (the vmalloc area and its guard page, say); `ctx` is handed back
    /// to it. It replaces any earlier describer. See [`FaultDescriber`]
    /// for what it may do.
    ///
    /// Whatever `ctx` points to must stay valid until the describer is
    /// replaced or cleared ([`clear_fault_describer`](Self::clear_fault_describer))
    /// or the platform drops: a machine booted on this platform that
    /// installs itself must clear it before it goes away.
    pub fn set_fault_describer(&self, describe: FaultDescriber, ctx: usize) {
        self.fault.set_describer(describe as usize, ctx);
    }

    /// Remove the describer: an oops then says only which machine's vmap
    /// area the address is in.
    pub fn clear_fault_describer(&self) {
        self.fault.set_describer(0, 0);
    }
}

/// The signals handled: a fault in the window is `SIGSEGV`; `SIGBUS` comes
/// from an access past the end of a mapped file.
const SIGNALS: [c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// The handlers replaced, in the order of [`SIGNALS`].
struct OldActions(UnsafeCell<[MaybeUninit<libc::sigaction>; 2]>);

// SAFETY: written only inside `INSTALL.call_once`, before `OLD_READY` is
// set (Release) and before the handler that reads them is installed; read
// only after an Acquire load of `OLD_READY` saw `true`.
unsafe impl Sync for OldActions {}

static OLD: OldActions = OldActions(UnsafeCell::new([MaybeUninit::zeroed(); 2]));
static OLD_READY: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Install the handler for [`SIGNALS`], once per process.
fn install() {
    INSTALL.call_once(|| {
        for (i, &sig) in SIGNALS.iter().enumerate() {
            let mut old = MaybeUninit::<libc::sigaction>::zeroed();
            // SAFETY: a null new action only reads the current one into
            // `old`, which is valid for writes.
            let r = unsafe { libc::sigaction(sig, ptr::null(), old.as_mut_ptr()) };
            if r != 0 {
                // Unknown: chain to the default action.
                old = MaybeUninit::zeroed();
            }
            // SAFETY: see `OldActions`: nothing reads OLD before
            // OLD_READY, and only this one-time closure writes it.
            unsafe { (*OLD.0.get())[i] = old };
        }
        OLD_READY.store(true, Ordering::Release);
        for sig in SIGNALS {
            // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no
            // flags, empty mask); the fields are then set to a handler of
            // the SA_SIGINFO signature.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                sa.sa_sigaction = handle_fault
                    as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)
                    as libc::sighandler_t;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, ptr::null_mut()) != 0 {
                    eprintln!(
                        "kmem-sim: cannot install the page fault handler: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
    });
}

/// x86's page fault error code bits (`X86_PF_*`).
const PF_USER: u64 = PfErrorCode::USER;

/// Oopses printed so far (`die_counter`).
static DIE_COUNTER: AtomicU32 = AtomicU32::new(0);
/// Held while an oops is printed, so two faulting threads do not mix
/// their lines (`die_lock`).
static DIE_LOCK: AtomicBool = AtomicBool::new(false);

extern "C" fn handle_fault(sig: c_int, info: *mut libc::siginfo_t, uctx: *mut c_void) {
    // SAFETY: for an SA_SIGINFO handler the kernel passes a valid siginfo;
    // si_addr is meaningful for the kernel-raised SIGSEGV/SIGBUS checked
    // below (si_code > 0) and harmless to read otherwise.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code > 0 {
        if let Some(w) = lookup(addr) {
            oops(sig, addr, &w, uctx);
            end_process(sig);
            return;
        }
    }
    chain(sig, info, uctx);
}

/// Pass a fault that is not ours to the handler it would have reached.
fn chain(sig: c_int, info: *mut libc::siginfo_t, uctx: *mut c_void) {
    let i = SIGNALS.iter().position(|&s| s == sig).unwrap_or(0);
    let old = if OLD_READY.load(Ordering::Acquire) {
        // SAFETY: OLD is complete once OLD_READY is set (see OldActions).
        Some(unsafe { (*OLD.0.get())[i].assume_init() })
    } else {
        None
    };
    let Some(old) = old else {
        default_action(sig);
        return;
    };
    let h = old.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // The kernel does not let a synchronous fault be ignored either:
        // the retried access takes the default action.
        default_action(sig);
    } else if old.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO action's handler has this signature; it
        // was installed to run for exactly this signal.
        let f = unsafe {
            core::mem::transmute::<
                libc::sighandler_t,
                extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void),
            >(h)
        };
        f(sig, info, uctx);
    } else {
        // SAFETY: a plain handler takes the signal number only.
        let f = unsafe { core::mem::transmute::<libc::sighandler_t, extern "C" fn(c_int)>(h) };
        f(sig);
    }
}

/// Restore the default action of `sig`: the faulting access, retried when
/// the handler returns, then ends the process.
fn default_action(sig: c_int) {
    // SAFETY: `sigaction` is async-signal-safe; an all-zero sigaction is
    // SIG_DFL with no flags and an empty mask.
    unsafe {
        let sa: libc::sigaction = core::mem::zeroed();
        libc::sigaction(sig, &sa, ptr::null_mut());
    }
}

/// End the process with `sig` once the handler returns.
fn end_process(sig: c_int) {
    default_action(sig);
    // SAFETY: `raise` is async-signal-safe. The signal is blocked while
    // its handler runs, so it stays pending and kills the process with the
    // default action as soon as the handler returns (even if the access
    // would now succeed).
    unsafe {
        libc::raise(sig);
    }
}

/// A line buffer on the stack that writes to stderr: text is cut at `\n`
/// and each line written with one `write(2)`; what does not fit in a line
/// is dropped.
struct Stderr {
    buf: [u8; 512],
    len: usize,
}

impl Stderr {
    fn new() -> Self {
        Stderr {
            buf: [0; 512],
            len: 0,
        }
    }

    /// Write the pending line, if any, with its newline.
    fn end_line(&mut self) {
        if self.len == 0 {
            return;
        }
        let n = self.len.min(self.buf.len() - 1);
        self.buf[n] = b'\n';
        write_all(&self.buf[..=n]);
        self.len = 0;
    }
}

impl fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                if self.len == 0 {
                    write_all(b"\n");
                } else {
                    self.end_line();
                }
            } else if self.len < self.buf.len() - 1 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// `write(2)` all of `bytes` to fd 2, giving up on an error.
fn write_all(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length; write(2) is
        // async-signal-safe.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return;
        }
    }
}

/// Print one line.
macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        let _ = fmt::Write::write_fmt($out, format_args!($($arg)*));
        $out.end_line();
    }};
}

/// The page fault error code and instruction pointer the host's kernel
/// gave, as a kernel-mode fault (the user bit cleared); `None` for the
/// error code where the host does not say.
#[cfg(target_arch = "x86_64")]
fn fault_regs(uctx: *mut c_void) -> (Option<u64>, Option<u64>) {
    if uctx.is_null() {
        return (None, None);
    }
    // SAFETY: the third argument of an SA_SIGINFO handler is the
    // interrupted context, a valid ucontext_t; on x86-64 Linux gregs holds
    // the page fault error code at REG_ERR and the instruction pointer at
    // REG_RIP.
    let (err, rip) = unsafe {
        let uc = &*(uctx as *const libc::ucontext_t);
        (
            uc.uc_mcontext.gregs[libc::REG_ERR as usize] as u64,
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64,
        )
    };
    (Some(err & !PF_USER), Some(rip))
}

#[cfg(not(target_arch = "x86_64"))]
fn fault_regs(_uctx: *mut c_void) -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// Print the oops for a fault at `addr` in window `w`.
fn oops(sig: c_int, addr: usize, w: &Window, uctx: *mut c_void) {
    while DIE_LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // Another thread is printing its oops; it does not wait for us.
        std::hint::spin_loop();
    }
    let n = DIE_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    let (err, rip) = fault_regs(uctx);
    let out = &mut Stderr::new();
    line!(
        out,
        "BUG: unable to handle page fault for address: {addr:016x}"
    );
    match err {
        // Linux's two "#PF:" lines, formatted without allocating.
        Some(e) => line!(out, "{}", PfErrorCode(e)),
        None => line!(
            out,
            "kmem-sim: this host does not say whether the access was a read or a write"
        ),
    }
    // Where Linux walks the page tables: what the address belongs to.
    if w.describe != 0 {
        // SAFETY: a non-zero `describe` was stored from a `FaultDescriber`
        // by `set_fault_describer`, read together with its context word
        // under the slot's sequence lock.
        let f = unsafe { core::mem::transmute::<usize, FaultDescriber>(w.describe) };
        f(w.ctx, addr, out);
        out.end_line();
    } else {
        line!(
            out,
            "kmem-sim: the address is in the vmap area {:#x}-{:#x} of SimPlatform #{}",
            w.start,
            w.end,
            w.id
        );
    }
    line!(
        out,
        "Oops: Oops: {:04x} [#{n}] SMP",
        err.unwrap_or(0) & 0xffff
    );
    let me = LOCAL.try_with(|l| (l.id.get(), l.cpu.get(), l.task.get()));
    match me {
        Ok((id, cpu, task)) if id == w.id => line!(
            out,
            "CPU: {cpu} UID: 0 PID: {} Comm: {}",
            task.pid,
            task.comm()
        ),
        _ => line!(
            out,
            "kmem-sim: the faulting thread is not bound to a CPU of this machine"
        ),
    }
    if let Some(ip) = rip {
        line!(out, "RIP: 0010:{ip:#x}");
    }
    line!(out, "CR2: {addr:016x}");
    line!(out, "---[ end trace 0000000000000000 ]---");
    line!(
        out,
        "kmem-sim: ending the process with {} (Linux would kill the task; a simulated \
         task is a host thread, which cannot be unwound from a signal handler)",
        if sig == libc::SIGBUS {
            "SIGBUS"
        } else {
            "SIGSEGV"
        }
    );
    DIE_LOCK.store(false, Ordering::Release);
}

/// Installs a booted machine's [`Kmem::describe_vmalloc_addr`] as the
/// platform's fault describer, so an oops names the vmalloc area it hit
/// and its caller; removes it when dropped (before the machine goes).
///
/// [`Kmem::describe_vmalloc_addr`]: kmem::Kmem::describe_vmalloc_addr
pub struct VmallocOopsGuard<'a> {
    sim: &'a SimPlatform,
}

impl<'a> VmallocOopsGuard<'a> {
    /// Describe faults in `sim`'s vmap area with `k`'s vmalloc areas for as
    /// long as the guard lives. `k` must be booted on `sim`.
    pub fn new<P: kmem::Platform>(sim: &'a SimPlatform, k: &'a kmem::Kmem<P>) -> Self {
        fn describe<P: kmem::Platform>(ctx: usize, addr: usize, out: &mut dyn core::fmt::Write) {
            // SAFETY: `ctx` is the `&Kmem<P>` the guard was made with; the
            // guard borrows it and clears the describer before the borrow
            // ends, so the machine is alive whenever this runs.
            let k = unsafe { &*(ctx as *const kmem::Kmem<P>) };
            let _ = k.describe_vmalloc_addr(addr, out);
        }
        sim.set_fault_describer(describe::<P>, k as *const kmem::Kmem<P> as usize);
        VmallocOopsGuard { sim }
    }
}

impl Drop for VmallocOopsGuard<'_> {
    fn drop(&mut self) {
        self.sim.clear_fault_describer();
    }
}
