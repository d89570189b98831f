//! `kmem replay`: run a perf trace through kmem and print the report.
//!
//! The engine is the `kmem-replay` crate; this module only reads the
//! arguments, shows a progress bar when stderr is a terminal, and writes
//! the text report to stdout, the JSON and the SVG plot to files.
//!
//! Bad input is refused with a one-line reason on stderr: a bad option
//! value (`--cpus 0`, `--mem lots`) by clap, exit status 2; a trace that
//! cannot be read or holds no perf script event, or a `--json`/`--plot`
//! file that cannot be written (checked before the replay starts), exit
//! status 1. A trace that fails part-way (a truncated .xz) is reported as
//! far as it went, then refused with exit status 1.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kmem::mmzone::NR_CPUS;
use kmem_replay::{
    replay_kmem, replay_system, Machine, Progress, ReplayOptions, Report, TraceInput,
};
use kmem_sim::parse_size;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The bundled trace: 350,249 events recorded on Linux 6.18, 2 CPUs (tar,
/// find, grep, gcc, cp, rm), xz-compressed.
pub static BUNDLED_TRACE: &[u8] = include_bytes!("../traces/fs-build.trace.xz");
/// Its name in reports.
pub const BUNDLED_NAME: &str = "fs-build.trace.xz (bundled)";

/// Options of `kmem replay`.
#[derive(Args, Clone, Debug)]
pub struct ReplayArgs {
    /// The trace: text from `perf script -F comm,tid,cpu,time,event,trace`,
    /// plain or xz-compressed. Without it, the bundled fs-build trace.
    pub file: Option<PathBuf>,
    /// CPUs of the simulated machine, 1 to 1024 (default: as many as the
    /// trace shows; events on CPUs the machine lacks run on CPU
    /// `cpu % CPUS`).
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<usize>,
    /// RAM of the simulated machine, as memparse reads it (default: 24G,
    /// the machine the bundled trace was recorded on).
    #[arg(long, default_value = "24G", value_parser = parse_mem)]
    pub mem: u64,
    /// Run each thread of the trace on a CPU of its own, the k-th thread to
    /// appear on CPU CPUS-1-7k (mod CPUS), instead of the CPU it was traced
    /// on: a trace from a small machine as a big machine's scheduler would
    /// spread it. Needs --cpus.
    #[arg(long)]
    pub spread_threads: bool,
    /// Also replay the trace against the system allocator (malloc/free of
    /// the traced sizes, same parser and maps) and print the time ratio.
    #[arg(long)]
    pub compare_system: bool,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw footprint and live bytes over time into FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl Default for ReplayArgs {
    /// The bundled trace on the default machine, as `kmem replay` without
    /// options.
    fn default() -> Self {
        ReplayArgs {
            file: None,
            cpus: None,
            mem: 24 << 30,
            spread_threads: false,
            compare_system: false,
            json: None,
            plot: None,
            no_progress: false,
        }
    }
}

/// Parse `--cpus`: 1 to kmem's `NR_CPUS`.
pub fn parse_cpus(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=NR_CPUS).contains(&n) => Ok(n),
        Ok(_) => Err(format!(
            "a machine has 1 to {NR_CPUS} CPUs (kmem's NR_CPUS)"
        )),
        Err(_) => Err(format!("not a number of CPUs (1 to {NR_CPUS})")),
    }
}

/// Parse `--mem` as the kernel's memparse reads it.
pub fn parse_mem(s: &str) -> Result<u64, String> {
    let mem = parse_size(s).map_err(|e| format!("{e} (give a size such as 512M, 4G or 24G)"))?;
    if mem > crate::MAX_MEM {
        return Err(format!(
            "more than kmem's limit of {}T (Linux x86-64's MAX_PHYSMEM_BITS, 46); give at most 64T",
            crate::MAX_MEM >> 40
        ));
    }
    Ok(mem)
}

/// Fail now, naming the option, if `path` cannot be written: the replay
/// may take a while, and its report should not be lost at the end. A file
/// that did not exist is not left behind.
fn check_writable(option: &str, path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!(
            "--{option} {}: is a directory; give a file to write",
            path.display()
        ));
    }
    let existed = path.exists();
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => Err(format!(
            "--{option} {}: cannot write it: {e}",
            path.display()
        )),
    }
}

fn open(args: &ReplayArgs) -> Result<TraceInput, String> {
    match &args.file {
        Some(p) => TraceInput::open(p).map_err(|e| e.to_string()),
        None => TraceInput::from_bytes(BUNDLED_NAME, BUNDLED_TRACE).map_err(|e| e.to_string()),
    }
}

/// A progress bar over the source bytes, or nothing when stderr is not a
/// terminal.
fn progress_bar(args: &ReplayArgs, input: &TraceInput, what: &str) -> Option<ProgressBar> {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(input.progress().1.unwrap_or(0));
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {percent:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    Some(pb)
}

fn tick(pb: &Option<ProgressBar>) -> impl FnMut(&Progress) -> bool + '_ {
    move |p: &Progress| {
        if let Some(pb) = pb {
            pb.set_position(p.bytes_read);
            pb.set_message(format!("{} events", p.events));
            if p.done {
                pb.finish_and_clear();
            }
        }
        true
    }
}

/// Run `kmem replay` with `args`.
pub fn run(args: &ReplayArgs) -> Result<(), String> {
    if args.spread_threads && args.cpus.is_none() {
        return Err(
            "--spread-threads needs --cpus: give the machine's CPU count to spread the threads \
             over, e.g. --cpus 1024"
                .into(),
        );
    }
    if let Some(p) = &args.json {
        check_writable("json", p)?;
    }
    if let Some(p) = &args.plot {
        check_writable("plot", p)?;
    }
    let mut input = open(args)?;
    let name = input.name().to_string();
    let machine = Machine::for_trace(&mut input, args.cpus, args.mem)?;
    let sim = machine.platform().map_err(|e| e.to_string())?;
    let k = machine.boot(&sim)?;

    let pb = progress_bar(args, &input, "replaying on kmem");
    let mut cb = tick(&pb);
    let mut opts = ReplayOptions {
        progress: Some(&mut cb),
        spread_threads: args.spread_threads,
        ..Default::default()
    };
    let run = replay_kmem(&k, &mut input, &mut opts);
    drop(input);
    let failed_input = run.input_error.clone();
    if failed_input.is_none() {
        if let Some(e) = run.outcome.no_events(&name) {
            return Err(e);
        }
    }

    let system = if args.compare_system && failed_input.is_none() {
        let mut input = open(args)?;
        let pb = progress_bar(args, &input, "replaying on malloc");
        let mut cb = tick(&pb);
        let mut opts = ReplayOptions {
            progress: Some(&mut cb),
            spread_threads: args.spread_threads,
            ..Default::default()
        };
        let (outcome, err) = replay_system(&mut input, machine.cpus, &mut opts);
        if let Some(e) = err {
            return Err(format!("{name}: {e}"));
        }
        Some(outcome)
    } else {
        None
    };

    let report = Report::new(&name, machine, &k, run, system.as_ref());
    let mut text = String::new();
    report
        .write_text(&mut text)
        .expect("formatting into a String");
    print!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = format!("kmem replay of {name}: memory over time");
        std::fs::write(path, kmem_replay::svg::plot(&report.footprint, &title))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    match failed_input {
        Some(e) => Err(format!(
            "{name}: {e}: the trace could not be read to its end; the report covers what was read"
        )),
        None => Ok(()),
    }
}
