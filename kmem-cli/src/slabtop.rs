//! `kmem slabtop`: a live view of a simulated machine's slab caches while a
//! workload runs on it, in the layout of procps-ng's `slabtop(1)`.
//!
//! # What it shows
//!
//! Every frame is built from [`kmem::proc::for_each_slabinfo`], the numbers
//! behind `/proc/slabinfo`, exactly as procps reads that file: a five-line
//! summary (`Active / Total Objects`, `Slabs`, `Caches`, `Size` and the
//! `Minimum / Average / Maximum Object`), a blank line, the column heading
//! and one row per cache, with procps' formats and arithmetic:
//!
//! - `USE` is `100 * active / total` in single precision, truncated (0 for
//!   an empty cache); `CACHE SIZE` is `slabs * pages per slab * 4 KiB`, the
//!   upper bound procps documents;
//! - a cache is *active* when it has at least one object; the average
//!   object is `sum(objects * size) / objects`, truncated; the minimum and
//!   maximum run over all caches, empty ones included.
//!
//! Where procps would divide by zero (a machine with no slab objects at
//! all) and print `nan`, kmem prints `0.0%`.
//!
//! # Sorting
//!
//! The keys are procps' ([`SortKey`]): `a` active objects, `b` objects per
//! slab, `c` cache size, `l` slabs, `v` active slabs, `n` name, `o` objects
//! (the default), `p` pages per slab, `s` object size, `u` utilisation.
//! Every order is descending except `n`, which is ascending by bytes (the
//! C locale's `strcoll`). Ties keep `/proc/slabinfo`'s order (newest cache
//! first); procps leaves them to `qsort`.
//!
//! # Running
//!
//! [`watch`] runs a *driver* (the workload, or a trace replay) on a
//! background thread and redraws every `--delay` seconds until the driver
//! ends or the user presses `q`, then prints one final frame. The driver
//! gets a [`Control`]: it polls [`Control::should_stop`] and calls
//! [`Control::hold`] when it has reached its end state and before it frees
//! what it holds, so the final frame shows that state rather than the
//! empty machine after teardown.
//!
//! On a terminal the view uses raw mode and the alternate screen (crossterm)
//! and reads keys as procps does: `q`/`Q` (or Ctrl-C) quits, a sort letter
//! (either case) re-sorts at once, and any other key returns to the default
//! sort, as procps' `set_sort_stuff()` does. The terminal is restored on
//! exit and on panic, and the final frame is printed on the normal screen.
//! When stdout is not a terminal, frames are printed as plain text one
//! after the other and no escape sequence is written; keys are not read.
//! `--once` (procps `-o`) prints only the final frame: for a workload, its
//! end state; for a trace replay, the state at the end of the trace.
//!
//! On a terminal, as in procps, only `rows - 8` caches fit; the plain and
//! final frames list every cache.

mod churn;

use clap::{Args, ValueEnum};
use crossterm::{cursor, event, execute, queue, style, terminal};
use kmem::{BootParams, Kmem, Platform};
use kmem_sim::{pc_memory_map, SimConfig, SimPlatform};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// Bytes per page, for `CACHE SIZE` (`getpagesize()` in procps).
const PAGE_SIZE: u64 = 4096;

/// Seconds between frames when `--delay` is not given (procps: 3).
const DEFAULT_DELAY: Duration = Duration::from_secs(3);

/// The heading, padded to 78 columns as procps prints it (`%-78s`).
const HEADING: &str = "  OBJS ACTIVE  USE OBJ SIZE  SLABS OBJ/SLAB CACHE SIZE NAME";

/// The sort criteria, for `--help`.
const SORT_HELP: &str = "\
The following are valid sort criteria (-s, or a key while running):
 a: sort by number of active objects
 b: sort by objects per slab
 c: sort by cache size
 l: sort by number of slabs
 v: sort by (non display) number of active slabs
 n: sort by name
 o: sort by number of objects (the default)
 p: sort by (non display) pages per slab
 s: sort by object size
 u: sort by cache utilization
While running, q or Q quits and any other key returns to the default sort.";

/// One cache, as a frame shows it: the fields of `/proc/slabinfo` that
/// procps reads, owned so a frame can be sorted after the cache list's
/// lock is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Cache name.
    pub name: String,
    /// Objects in use (`<active_objs>`).
    pub active_objs: u64,
    /// All objects (`<num_objs>`).
    pub num_objs: u64,
    /// Bytes per object slot (`<objsize>`).
    pub objsize: u64,
    /// Objects per slab.
    pub objperslab: u64,
    /// Pages per slab.
    pub pagesperslab: u64,
    /// Active slabs (all of them, under SLUB).
    pub active_slabs: u64,
    /// Slabs.
    pub num_slabs: u64,
}

impl Row {
    /// `USE`: percent of objects in use, as procps computes it (single
    /// precision, truncated; 0 for an empty cache).
    pub fn use_pct(&self) -> u64 {
        if self.num_objs == 0 {
            0
        } else {
            (100.0f32 * (self.active_objs as f32 / self.num_objs as f32)) as u64
        }
    }

    /// `CACHE SIZE` in bytes: slabs times pages per slab times the page
    /// size.
    pub fn cache_size(&self) -> u64 {
        self.num_slabs * self.pagesperslab * PAGE_SIZE
    }
}

/// The rows of every cache of `k`, in `/proc/slabinfo` order.
pub fn snapshot<P: Platform>(k: &Kmem<P>) -> Vec<Row> {
    let mut rows = Vec::new();
    kmem::proc::for_each_slabinfo(k, |s| {
        rows.push(Row {
            name: s.name.to_string(),
            active_objs: s.active_objs,
            num_objs: s.num_objs,
            objsize: s.objsize,
            objperslab: s.objperslab,
            pagesperslab: s.pagesperslab,
            active_slabs: s.active_slabs,
            num_slabs: s.num_slabs,
        })
    });
    rows
}

/// A sort criterion: procps slabtop's `-s` letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// `a`: active objects.
    ActiveObjs,
    /// `b`: objects per slab.
    ObjsPerSlab,
    /// `c`: cache size.
    CacheSize,
    /// `l`: slabs.
    Slabs,
    /// `v`: active slabs.
    ActiveSlabs,
    /// `n`: name, ascending.
    Name,
    /// `o`: objects (the default).
    Objs,
    /// `p`: pages per slab.
    PagesPerSlab,
    /// `s`: object size.
    ObjSize,
    /// `u`: utilisation (`USE`).
    Use,
}

impl SortKey {
    /// procps' default: by number of objects.
    pub const DEFAULT: SortKey = SortKey::Objs;

    /// Every key, in procps' help order.
    pub const ALL: [SortKey; 10] = [
        SortKey::ActiveObjs,
        SortKey::ObjsPerSlab,
        SortKey::CacheSize,
        SortKey::Slabs,
        SortKey::ActiveSlabs,
        SortKey::Name,
        SortKey::Objs,
        SortKey::PagesPerSlab,
        SortKey::ObjSize,
        SortKey::Use,
    ];

    /// The key for a letter, either case (procps lowercases it).
    pub fn from_char(c: char) -> Option<SortKey> {
        SortKey::ALL
            .into_iter()
            .find(|k| k.letter() == c.to_ascii_lowercase())
    }

    /// The key's letter.
    pub fn letter(self) -> char {
        match self {
            SortKey::ActiveObjs => 'a',
            SortKey::ObjsPerSlab => 'b',
            SortKey::CacheSize => 'c',
            SortKey::Slabs => 'l',
            SortKey::ActiveSlabs => 'v',
            SortKey::Name => 'n',
            SortKey::Objs => 'o',
            SortKey::PagesPerSlab => 'p',
            SortKey::ObjSize => 's',
            SortKey::Use => 'u',
        }
    }

    /// The number a row is sorted by (not used for [`SortKey::Name`]).
    fn value(self, r: &Row) -> u64 {
        match self {
            SortKey::ActiveObjs => r.active_objs,
            SortKey::ObjsPerSlab => r.objperslab,
            SortKey::CacheSize => r.cache_size(),
            SortKey::Slabs => r.num_slabs,
            SortKey::ActiveSlabs => r.active_slabs,
            SortKey::Name => 0,
            SortKey::Objs => r.num_objs,
            SortKey::PagesPerSlab => r.pagesperslab,
            SortKey::ObjSize => r.objsize,
            SortKey::Use => r.use_pct(),
        }
    }

    /// Sort `rows` by this key: names ascending, numbers descending; the
    /// sort is stable, so ties keep their order.
    pub fn sort(self, rows: &mut [Row]) {
        match self {
            SortKey::Name => rows.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes())),
            _ => rows.sort_by_key(|r| std::cmp::Reverse(self.value(r))),
        }
    }
}

/// Parse `-s`: one letter of [`SortKey`], either case.
fn parse_sort(s: &str) -> Result<SortKey, String> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => SortKey::from_char(c),
        _ => None,
    }
    .ok_or_else(|| format!("invalid sort criterion '{s}': use one of a, b, c, l, v, n, o, p, s, u"))
}

/// Parse a positive number of seconds, fractions allowed (`what` names it
/// in the error: procps says "illegal delay").
fn parse_seconds(what: &str, s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("illegal {what}: '{s}'"))?;
    // NaN is not positive either.
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("{what} must be positive"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("illegal {what}: '{s}'"))
}

/// Parse `-d`/`--delay`.
fn parse_delay(s: &str) -> Result<Duration, String> {
    parse_seconds("delay", s)
}

/// Parse `--duration`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_seconds("duration", s)
}

/// What a key pressed while running does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// Stop the view (and ask the driver to stop).
    Quit,
    /// Redraw at once, sorted by this key.
    Sort(SortKey),
}

/// procps' key handling: `q`/`Q` quits; a sort letter, either case, sorts
/// by it; any other key returns to the default sort.
pub fn handle_key(c: char) -> KeyAction {
    match c {
        'q' | 'Q' => KeyAction::Quit,
        c => KeyAction::Sort(SortKey::from_char(c).unwrap_or(SortKey::DEFAULT)),
    }
}

/// The summary block's numbers (procps' `SLABS_*` items).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Objects in use, all caches.
    pub active_objs: u64,
    /// Objects, all caches.
    pub num_objs: u64,
    /// Active slabs, all caches.
    pub active_slabs: u64,
    /// Slabs, all caches.
    pub num_slabs: u64,
    /// Caches with at least one object.
    pub active_caches: u64,
    /// Caches.
    pub num_caches: u64,
    /// Bytes of the objects in use.
    pub active_size: u64,
    /// Bytes of all objects.
    pub total_size: u64,
    /// Smallest object size of any cache.
    pub min_obj: u64,
    /// `total_size / num_objs`, truncated.
    pub avg_obj: u64,
    /// Largest object size of any cache.
    pub max_obj: u64,
}

impl Summary {
    /// Add up `rows` as procps' `parse_slabinfo20()` does.
    pub fn of(rows: &[Row]) -> Summary {
        let mut s = Summary {
            min_obj: rows.iter().map(|r| r.objsize).min().unwrap_or(0),
            max_obj: rows.iter().map(|r| r.objsize).max().unwrap_or(0),
            num_caches: rows.len() as u64,
            ..Summary::default()
        };
        for r in rows {
            s.active_objs += r.active_objs;
            s.num_objs += r.num_objs;
            s.active_slabs += r.active_slabs;
            s.num_slabs += r.num_slabs;
            s.active_caches += u64::from(r.num_objs > 0);
            s.active_size += r.active_objs * r.objsize;
            s.total_size += r.num_objs * r.objsize;
        }
        s.avg_obj = s.total_size.checked_div(s.num_objs).unwrap_or(0);
        s
    }
}

/// `100 * part / whole` with one decimal; 0 where procps would print nan.
fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// One screenful: text lines, one of which is the column heading (drawn
/// in reverse video on a terminal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The lines, without newlines.
    pub lines: Vec<String>,
    /// Index of the heading line.
    pub heading: usize,
}

impl Frame {
    /// Lay out `rows` (already sorted) with their summary; at most `limit`
    /// rows when given.
    pub fn render(rows: &[Row], limit: Option<usize>) -> Frame {
        let s = Summary::of(rows);
        let mut lines = vec![
            format!(
                " {:<35}: {} / {} ({:.1}%)",
                "Active / Total Objects (% used)",
                s.active_objs,
                s.num_objs,
                pct(s.active_objs, s.num_objs)
            ),
            format!(
                " {:<35}: {} / {} ({:.1}%)",
                "Active / Total Slabs (% used)",
                s.active_slabs,
                s.num_slabs,
                pct(s.active_slabs, s.num_slabs)
            ),
            format!(
                " {:<35}: {} / {} ({:.1}%)",
                "Active / Total Caches (% used)",
                s.active_caches,
                s.num_caches,
                pct(s.active_caches, s.num_caches)
            ),
            format!(
                " {:<35}: {:.2}K / {:.2}K ({:.1}%)",
                "Active / Total Size (% used)",
                kib(s.active_size),
                kib(s.total_size),
                pct(s.active_size, s.total_size)
            ),
            format!(
                " {:<35}: {:.2}K / {:.2}K / {:.2}K",
                "Minimum / Average / Maximum Object",
                kib(s.min_obj),
                kib(s.avg_obj),
                kib(s.max_obj)
            ),
            String::new(),
            format!("{HEADING:<78}"),
        ];
        let heading = lines.len() - 1;
        for r in rows.iter().take(limit.unwrap_or(usize::MAX)) {
            lines.push(format!(
                "{:>6} {:>6} {:>3}% {:>7.2}K {:>6} {:>8} {:>9}K {:<23}",
                r.num_objs,
                r.active_objs,
                r.use_pct(),
                kib(r.objsize),
                r.num_slabs,
                r.objperslab,
                r.cache_size() / 1024,
                r.name
            ));
        }
        Frame { lines, heading }
    }

    /// The frame as plain text, one `\n` after each line.
    pub fn write_plain(&self, w: &mut impl Write) -> io::Result<()> {
        for l in &self.lines {
            writeln!(w, "{l}")?;
        }
        Ok(())
    }
}

/// A sorted frame of `k` as it is now.
fn frame_of<P: Platform>(k: &Kmem<P>, sort: SortKey, limit: Option<usize>) -> Frame {
    let mut rows = snapshot(k);
    sort.sort(&mut rows);
    Frame::render(&rows, limit)
}

/// How [`watch`] shows the machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewOptions {
    /// Time between frames.
    pub delay: Duration,
    /// Print only the final frame (procps `-o`).
    pub once: bool,
    /// The sort at start.
    pub sort: SortKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// The driver is working.
    Running,
    /// The driver has reached its end state (it holds, or it returned).
    Ended,
    /// The final frame is taken; holders may tear down.
    Released,
}

/// What a driver and the viewer share: the viewer's request to stop, and
/// the driver's word that it has reached its end state.
pub struct Control {
    stop: AtomicBool,
    phase: Mutex<Phase>,
    changed: Condvar,
}

impl Control {
    fn new() -> Control {
        Control {
            stop: AtomicBool::new(false),
            phase: Mutex::new(Phase::Running),
            changed: Condvar::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // Phase changes are single stores: a panicking holder leaves it valid.
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, to: Phase) {
        let mut p = self.phase();
        if *p < to {
            *p = to;
        }
        self.changed.notify_all();
    }

    /// Whether the user asked to stop (the driver should wind down soon).
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Ask the driver to stop.
    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The driver is at its end state: let the viewer take the final frame,
    /// and wait until it has. Any number of the driver's threads may call
    /// it; all return once the frame is taken. A thread bound to a
    /// simulated CPU should unbind first, so cross-CPU calls to its CPU
    /// are not held up.
    pub fn hold(&self) {
        let mut p = self.phase();
        if *p == Phase::Running {
            *p = Phase::Ended;
            self.changed.notify_all();
        }
        while *p != Phase::Released {
            p = self.changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether the driver has reached its end state.
    fn ended(&self) -> bool {
        *self.phase() != Phase::Running
    }

    /// Wait until the driver reaches its end state, at most `timeout`;
    /// returns whether it has.
    fn wait_ended(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut p = self.phase();
        while *p == Phase::Running {
            match deadline {
                None => p = self.changed.wait(p).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    p = self
                        .changed
                        .wait_timeout(p, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }
}

/// Marks the end when the driver returns or panics.
struct DriverEnd<'a>(&'a Control);

impl Drop for DriverEnd<'_> {
    fn drop(&mut self) {
        self.0.set(Phase::Ended);
    }
}

/// Stops and releases the driver when the viewer leaves, also on error or
/// panic, so the scope's join cannot wait forever.
struct ViewerEnd<'a>(&'a Control);

impl Drop for ViewerEnd<'_> {
    fn drop(&mut self) {
        self.0.request_stop();
        self.0.set(Phase::Released);
    }
}

/// Whether this process has the terminal in raw mode on the alternate
/// screen (read by the panic hook).
static TERMINAL_TAKEN: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

/// Give the terminal back (idempotent).
fn restore_terminal() {
    if TERMINAL_TAKEN.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Raw mode and the alternate screen while it lives.
struct Screen;

impl Screen {
    fn take() -> io::Result<Screen> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // The message must land on the normal screen, readable.
                restore_terminal();
                previous(info)
            }));
        });
        terminal::enable_raw_mode()?;
        TERMINAL_TAKEN.store(true, Ordering::SeqCst);
        let screen = Screen;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }

    /// Draw `frame` from the top left, clipped to the terminal.
    fn draw(&self, frame: &Frame, cols: u16) -> io::Result<()> {
        let mut out = BufWriter::new(io::stdout().lock());
        for (i, line) in frame.lines.iter().enumerate() {
            let text: String = line.chars().take(cols as usize).collect();
            queue!(out, cursor::MoveTo(0, i as u16))?;
            if i == frame.heading {
                queue!(
                    out,
                    style::SetAttribute(style::Attribute::Reverse),
                    style::Print(text),
                    style::SetAttribute(style::Attribute::Reset)
                )?;
            } else {
                queue!(out, style::Print(text))?;
            }
            queue!(out, terminal::Clear(terminal::ClearType::UntilNewLine))?;
        }
        queue!(out, terminal::Clear(terminal::ClearType::FromCursorDown))?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// The terminal's size, or 80x24 when it reports 10 rows or fewer (as
/// procps' `term_resize()`).
fn screen_size() -> (u16, u16) {
    match terminal::size() {
        Ok((c, r)) if r > 10 => (c, r),
        _ => (80, 24),
    }
}

/// How often the terminal loop looks at the driver while it waits for a
/// key, so the end of the driver is noticed without waiting out the delay.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// Live view on a terminal; returns the sort in force at the end.
fn live_terminal<P: Platform>(
    k: &Kmem<P>,
    opts: &ViewOptions,
    ctl: &Control,
) -> io::Result<SortKey> {
    let screen = Screen::take()?;
    let mut sort = opts.sort;
    'frames: loop {
        let (cols, rows) = screen_size();
        screen.draw(
            &frame_of(k, sort, Some(usize::from(rows).saturating_sub(8))),
            cols,
        )?;
        let deadline = Instant::now() + opts.delay;
        loop {
            if ctl.ended() {
                break 'frames;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if !event::poll((deadline - now).min(POLL_SLICE))? {
                continue;
            }
            match event::read()? {
                event::Event::Key(key) if key.kind != event::KeyEventKind::Release => {
                    let event::KeyCode::Char(c) = key.code else {
                        continue;
                    };
                    let ctrl_c = c == 'c' && key.modifiers.contains(event::KeyModifiers::CONTROL);
                    match if ctrl_c {
                        KeyAction::Quit
                    } else {
                        handle_key(c)
                    } {
                        KeyAction::Quit => {
                            ctl.request_stop();
                            break 'frames;
                        }
                        KeyAction::Sort(s) => {
                            sort = s;
                            continue 'frames;
                        }
                    }
                }
                event::Event::Resize(..) => continue 'frames,
                _ => {}
            }
        }
    }
    Ok(sort)
}

/// Live view as plain text (stdout is not a terminal): a frame every
/// delay, a blank line between frames.
fn live_plain<P: Platform>(k: &Kmem<P>, opts: &ViewOptions, ctl: &Control) -> io::Result<()> {
    let mut out = io::stdout().lock();
    loop {
        frame_of(k, opts.sort, None).write_plain(&mut out)?;
        writeln!(out)?;
        out.flush()?;
        if ctl.wait_ended(Some(opts.delay)) {
            return Ok(());
        }
    }
}

/// Show `k` while `driver` runs on a background thread, as the module docs
/// describe, and return what the driver returned.
///
/// The driver is asked to stop ([`Control::should_stop`]) when the user
/// quits or the view fails; it is released from [`Control::hold`] once the
/// final frame is printed (or the view has failed). A panic in the driver
/// is resumed here after the terminal is restored.
pub fn watch<P, R, D>(k: &Kmem<P>, opts: &ViewOptions, driver: D) -> io::Result<R>
where
    P: Platform,
    Kmem<P>: Sync,
    R: Send,
    D: FnOnce(&Control) -> R + Send,
{
    let ctl = Control::new();
    let tty = !opts.once && io::stdout().is_terminal();
    std::thread::scope(|s| {
        let ctl = &ctl;
        let driver = std::thread::Builder::new()
            .name("driver".into())
            .spawn_scoped(s, move || {
                let _end = DriverEnd(ctl);
                driver(ctl)
            })?;
        let viewer_end = ViewerEnd(ctl);
        let shown = if opts.once {
            Ok(opts.sort)
        } else if tty {
            live_terminal(k, opts, ctl)
        } else {
            live_plain(k, opts, ctl).map(|()| opts.sort)
        };
        let res = shown.and_then(|sort| {
            ctl.wait_ended(None);
            let mut out = io::stdout().lock();
            frame_of(k, sort, None).write_plain(&mut out)?;
            out.flush()
        });
        drop(viewer_end);
        match driver.join() {
            Ok(r) => res.map(|()| r),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// What `kmem slabtop` watches.
///
/// A new source is a variant here and an arm in [`run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// Threads on every CPU allocate and free kmalloc objects of every
    /// size class (plain, -cg and -rcl) and objects of four named caches,
    /// their populations growing and shrinking in waves, with turnover and
    /// cross-CPU frees.
    Churn,
    /// A perf trace replayed through kmem (`--trace FILE`, else the bundled
    /// one), paced at `--rate` events per second so it can be watched.
    Replay,
}

/// `kmem slabtop`: options.
#[derive(Args, Clone, Debug)]
#[command(after_help = SORT_HELP)]
pub struct SlabtopArgs {
    /// Seconds between updates, fractions allowed [default: 3]
    #[arg(short, long, value_name = "SECS", value_parser = parse_delay, allow_negative_numbers = true)]
    delay: Option<Duration>,
    /// Only display once (the state when the workload ends), then exit
    #[arg(short, long)]
    once: bool,
    /// Sort criterion, one letter (see below)
    #[arg(short, long, value_name = "CHAR", default_value = "o", value_parser = parse_sort)]
    sort: SortKey,
    /// What the machine runs while it is watched
    #[arg(long, value_enum, default_value_t = WorkloadKind::Churn)]
    workload: WorkloadKind,
    /// How long the workload runs, in seconds (fractions allowed)
    #[arg(
        long,
        value_name = "SECS",
        default_value = "10",
        value_parser = parse_duration,
        allow_negative_numbers = true
    )]
    duration: Duration,
    /// RAM size of the simulated PC, as memparse reads it
    #[arg(long, default_value = "4G", value_parser = crate::replay::parse_mem)]
    mem: u64,
    /// Number of CPUs, 1 to 1024 (the workload runs a thread on each; a
    /// replay uses as many as the trace has)
    #[arg(long, default_value_t = 2, value_parser = crate::replay::parse_cpus)]
    cpus: usize,
    /// The trace `--workload replay` replays (perf script text, plain or
    /// .xz) [default: the bundled fs-build trace]
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    /// Events per second for `--workload replay` (0: as fast as it goes;
    /// `--once` never waits)
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    rate: u64,
}

/// Why `kmem slabtop` did not run or ended badly: a usage error (exit
/// status 2) or a failure at run time (1).
pub struct Refused(crate::Failure);

impl From<String> for Refused {
    fn from(reason: String) -> Self {
        Refused(crate::Failure::runtime(reason))
    }
}

impl From<Refused> for crate::Failure {
    fn from(r: Refused) -> Self {
        r.0
    }
}

/// Run `kmem slabtop`: boot the machine, watch the workload, then print
/// the kernel messages the run produced (allocation failures, slab
/// reports) to stderr. A closed stdout (`| head`) ends it quietly.
///
/// A trace that cannot be replayed (unreadable, no perf script events,
/// failing part-way such as a truncated .xz) is an error, as in `kmem
/// replay`: before the view when the head of the trace shows it, else
/// after the final frame.
pub fn run(args: &SlabtopArgs) -> Result<(), Refused> {
    if args.once && args.delay.is_some() {
        // procps' words; a usage error, exit status 2.
        return Err(Refused(crate::Failure::usage(
            "Cannot combine -d and -o options: drop -d (--delay) or -o (--once)",
        )));
    }
    let opts = ViewOptions {
        delay: args.delay.unwrap_or(DEFAULT_DELAY),
        once: args.once,
        sort: args.sort,
    };
    let ram = args.mem;
    let map = pc_memory_map(ram);
    let mut trace = None;
    let mut cpus = args.cpus;
    if args.workload == WorkloadKind::Replay {
        let mut input = match &args.trace {
            Some(path) => kmem_replay::TraceInput::open(path),
            None => kmem_replay::TraceInput::from_bytes(
                crate::replay::BUNDLED_NAME,
                crate::replay::BUNDLED_TRACE,
            ),
        }
        .map_err(|e| format!("slabtop: {e}"))?;
        cpus = kmem_replay::Machine::for_trace(&mut input, None, ram)
            .map_err(|e| format!("slabtop: {e}"))?
            .cpus;
        trace = Some(input);
    }
    let sim = SimPlatform::new(SimConfig::new(cpus, map.clone())).map_err(|e| e.to_string())?;
    let k = {
        let _cpu = sim.bind(0);
        Kmem::boot(&sim, &map, &BootParams::default())
    };
    let boot_log = sim.take_reports();
    let k = k.map_err(|e| {
        let log: Vec<String> = boot_log.into_iter().map(|(_, l)| l).collect();
        format!("boot failed: {e}\n{}", log.join("\n"))
    })?;
    let shown = match args.workload {
        WorkloadKind::Churn => {
            let churn = churn::Churn {
                duration: args.duration,
            };
            watch(&k, &opts, |ctl| {
                churn.run(&k, &sim, ctl);
                Ok(())
            })
        }
        WorkloadKind::Replay => {
            let mut input = trace.expect("opened above");
            let name = input.name().to_string();
            let rate = if args.once { 0 } else { args.rate };
            watch(&k, &opts, |ctl| {
                // Pace the replay, and stop it when the viewer quits.
                let mut progress = |p: &kmem_replay::Progress| {
                    if rate > 0 && !p.done {
                        let due = Duration::from_secs_f64(p.events as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(p.elapsed) {
                            std::thread::sleep(wait.min(Duration::from_millis(200)));
                        }
                    }
                    !ctl.should_stop()
                };
                let mut ropts = kmem_replay::ReplayOptions {
                    progress: Some(&mut progress),
                    progress_every: 2048,
                    ..Default::default()
                };
                let run = kmem_replay::replay_kmem(&k, &mut input, &mut ropts);
                ctl.hold();
                // What made the replay end short, in `kmem replay`'s words.
                match run.input_error {
                    Some(e) => Err(format!(
                        "slabtop: {name}: {e}: the trace could not be read to its end; \
                         the view shows it up to there"
                    )),
                    None => run
                        .outcome
                        .no_events(&name)
                        .map_or(Ok(()), |e| Err(format!("slabtop: {e}"))),
                }
            })
        }
    };
    for (_, line) in sim.take_reports() {
        eprintln!("{line}");
    }
    match shown {
        Ok(r) => r.map_err(Refused::from),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("slabtop: {e}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, active: u64, objs: u64, size: u64, per: u64, pages: u64) -> Row {
        let slabs = objs.div_ceil(per);
        Row {
            name: name.into(),
            active_objs: active,
            num_objs: slabs * per,
            objsize: size,
            objperslab: per,
            pagesperslab: pages,
            active_slabs: slabs,
            num_slabs: slabs,
        }
    }

    /// Three caches whose columns each put them in a different order.
    fn rows() -> Vec<Row> {
        vec![
            row("kmalloc-64", 500, 640, 64, 64, 1),
            row("dentry", 3000, 3150, 192, 21, 1),
            row("inode_cache", 100, 261, 600, 27, 4),
        ]
    }

    fn names(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn row_arithmetic_is_procps() {
        let r = row("x", 1, 3, 8, 3, 1);
        // 100 * (1/3) in single precision, truncated.
        assert_eq!(r.use_pct(), 33);
        assert_eq!(row("x", 0, 0, 8, 3, 1).use_pct(), 0);
        assert_eq!(row("x", 29, 29, 8, 29, 2).use_pct(), 100);
        assert_eq!(row("x", 1, 300, 8, 27, 4).cache_size(), 12 * 4 * 4096);
    }

    #[test]
    fn every_key_sorts_as_documented() {
        let cases: [(char, [&str; 3]); 10] = [
            ('a', ["dentry", "kmalloc-64", "inode_cache"]),
            ('b', ["kmalloc-64", "inode_cache", "dentry"]),
            // 150 slabs of 1 page (600K), 10 of 4 (160K), 10 of 1 (40K).
            ('c', ["dentry", "inode_cache", "kmalloc-64"]),
            ('l', ["dentry", "kmalloc-64", "inode_cache"]),
            ('v', ["dentry", "kmalloc-64", "inode_cache"]),
            ('n', ["dentry", "inode_cache", "kmalloc-64"]),
            ('o', ["dentry", "kmalloc-64", "inode_cache"]),
            ('p', ["inode_cache", "kmalloc-64", "dentry"]),
            ('s', ["inode_cache", "dentry", "kmalloc-64"]),
            ('u', ["dentry", "kmalloc-64", "inode_cache"]),
        ];
        for (c, want) in cases {
            let mut r = rows();
            let key = SortKey::from_char(c).unwrap();
            assert_eq!(key.letter(), c);
            key.sort(&mut r);
            assert_eq!(names(&r), want, "sort key {c}");
        }
    }

    #[test]
    fn ties_keep_slabinfo_order() {
        let mut r = vec![
            row("b", 0, 0, 8, 512, 1),
            row("c", 0, 0, 16, 256, 1),
            row("a", 0, 0, 32, 128, 1),
        ];
        SortKey::Objs.sort(&mut r);
        assert_eq!(names(&r), ["b", "c", "a"]);
    }

    #[test]
    fn sort_letters_parse_in_either_case_and_bad_ones_are_refused() {
        assert_eq!(parse_sort("o"), Ok(SortKey::Objs));
        assert_eq!(parse_sort("C"), Ok(SortKey::CacheSize));
        for bad in ["x", "", "oo", "é"] {
            let e = parse_sort(bad).unwrap_err();
            assert!(e.contains("invalid sort criterion"), "{e}");
        }
    }

    #[test]
    fn delays_take_fractions_and_refuse_the_rest() {
        assert_eq!(parse_delay("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_delay("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_delay("abc"), Err("illegal delay: 'abc'".into()));
        assert_eq!(parse_delay("0"), Err("delay must be positive".into()));
        assert_eq!(parse_delay("-1"), Err("delay must be positive".into()));
        assert_eq!(parse_delay("NaN"), Err("delay must be positive".into()));
        assert_eq!(parse_delay("inf"), Err("illegal delay: 'inf'".into()));
        assert_eq!(parse_duration("0"), Err("duration must be positive".into()));
    }

    #[test]
    fn keys_quit_sort_or_return_to_the_default() {
        assert_eq!(handle_key('q'), KeyAction::Quit);
        assert_eq!(handle_key('Q'), KeyAction::Quit);
        assert_eq!(handle_key('s'), KeyAction::Sort(SortKey::ObjSize));
        assert_eq!(handle_key('N'), KeyAction::Sort(SortKey::Name));
        assert_eq!(handle_key('x'), KeyAction::Sort(SortKey::Objs));
        assert_eq!(handle_key(' '), KeyAction::Sort(SortKey::Objs));
    }

    #[test]
    fn frame_is_laid_out_as_procps() {
        let mut r = rows();
        r.push(row("empty", 0, 0, 8, 512, 1));
        SortKey::Objs.sort(&mut r);
        let f = Frame::render(&r, None);
        let want = [
            " Active / Total Objects (% used)    : 3600 / 4060 (88.7%)",
            " Active / Total Slabs (% used)      : 170 / 170 (100.0%)",
            " Active / Total Caches (% used)     : 3 / 4 (75.0%)",
            " Active / Total Size (% used)       : 652.34K / 788.83K (82.7%)",
            " Minimum / Average / Maximum Object : 0.01K / 0.19K / 0.59K",
            "",
            "  OBJS ACTIVE  USE OBJ SIZE  SLABS OBJ/SLAB CACHE SIZE NAME                   ",
            "  3150   3000  95%    0.19K    150       21       600K dentry                 ",
            "   640    500  78%    0.06K     10       64        40K kmalloc-64             ",
            "   270    100  37%    0.59K     10       27       160K inode_cache            ",
            "     0      0   0%    0.01K      0      512         0K empty                  ",
        ];
        assert_eq!(f.lines, want);
        assert_eq!(f.heading, 6);
        assert_eq!(f.lines[6].len(), 78);
        let limited = Frame::render(&r, Some(1));
        assert_eq!(limited.lines.len(), 8);
        let mut text = Vec::new();
        limited.write_plain(&mut text).unwrap();
        assert!(String::from_utf8(text)
            .unwrap()
            .ends_with("dentry                 \n"));
    }

    #[test]
    fn an_empty_machine_shows_zero_percent_not_nan() {
        let f = Frame::render(&[row("a", 0, 0, 8, 512, 1)], None);
        assert_eq!(
            f.lines[0],
            " Active / Total Objects (% used)    : 0 / 0 (0.0%)"
        );
        assert!(f.lines[3].ends_with("(0.0%)"));
    }

    #[test]
    fn control_hold_waits_for_the_release() {
        let ctl = Control::new();
        assert!(!ctl.ended());
        assert!(!ctl.wait_ended(Some(Duration::from_millis(1))));
        std::thread::scope(|s| {
            let h = s.spawn(|| ctl.hold());
            assert!(ctl.wait_ended(None));
            assert!(!h.is_finished() || *ctl.phase() == Phase::Released);
            ctl.set(Phase::Released);
            h.join().unwrap();
        });
        // A late holder is not kept.
        ctl.hold();
        ctl.request_stop();
        assert!(ctl.should_stop());
    }
}
