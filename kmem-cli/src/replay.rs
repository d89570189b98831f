//! `kmem replay`: run a perf trace through kmem and print the report.
//!
//! The engine is the `kmem-replay` crate; this module only reads the
//! arguments, shows a progress bar when stderr is a terminal, and writes
//! the text report to stdout, the JSON and the SVG plot to files.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kmem_replay::{
    replay_kmem, replay_system, Machine, Progress, ReplayOptions, Report, TraceInput,
};
use kmem_sim::parse_size;
use std::io::IsTerminal;
use std::path::PathBuf;

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
    /// CPUs of the simulated machine (default: as many as the trace shows).
    #[arg(long)]
    pub cpus: Option<usize>,
    /// RAM of the simulated machine (default: 24G, the machine the bundled
    /// trace was recorded on).
    #[arg(long, default_value = "24G")]
    pub mem: String,
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
            mem: "24G".into(),
            compare_system: false,
            json: None,
            plot: None,
            no_progress: false,
        }
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
    let mem = parse_size(&args.mem).map_err(|e| format!("--mem {}: {e}", args.mem))?;
    let mut input = open(args)?;
    let name = input.name().to_string();
    let machine =
        Machine::for_trace(&mut input, args.cpus, mem).map_err(|e| format!("{name}: {e}"))?;
    if machine.cpus == 0 {
        return Err("--cpus: a machine needs at least one CPU".into());
    }
    let sim = machine.platform().map_err(|e| e.to_string())?;
    let k = machine.boot(&sim)?;

    let pb = progress_bar(args, &input, "replaying on kmem");
    let mut cb = tick(&pb);
    let mut opts = ReplayOptions {
        progress: Some(&mut cb),
        ..Default::default()
    };
    let run = replay_kmem(&k, &mut input, &mut opts);
    drop(input);
    let failed_input = run.input_error.clone();

    let system = if args.compare_system && failed_input.is_none() {
        let mut input = open(args)?;
        let pb = progress_bar(args, &input, "replaying on malloc");
        let mut cb = tick(&pb);
        let mut opts = ReplayOptions {
            progress: Some(&mut cb),
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
        Some(e) => Err(format!("{name}: {e}")),
        None => Ok(()),
    }
}
