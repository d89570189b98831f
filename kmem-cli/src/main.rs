//! `kmem`: run kmem on a simulated machine and show what Linux would show.
//!
//! - `kmem` (no arguments): replay the bundled perf trace of a real Linux
//!   6.18 machine on a 2-CPU simulated machine, comparing with the system
//!   allocator, and print the report (`kmem replay --compare-system`).
//! - `kmem replay [FILE]`: the same for any trace ([`replay`]).
//! - `kmem boot`: boot a machine and print the boot log and `/proc` reports.

mod replay;

use clap::{Args, Parser, Subcommand};
use kmem::memory_map::MemRegion;
use kmem::{BootParams, Kmem};
use kmem_sim::{
    parse_memory_map, parse_size, pc_memory_map, pc_memory_map_numa, SimConfig, SimPlatform,
};
use std::process::ExitCode;

mod fault;
mod slabtop;

/// kmem: the Linux kernel's memory allocators, in Rust, on a simulated machine.
///
/// Without a command, replays the bundled trace of a real Linux 6.18 machine
/// (`kmem replay --compare-system`).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a simulated machine and print the boot log and /proc reports.
    Boot(BootArgs),
    /// Watch the slab caches live while a workload runs (procps slabtop).
    Slabtop(slabtop::SlabtopArgs),
    /// Replay a perf trace of kmem/percpu/vmalloc events on kmem and report
    /// events/s, counts, fidelity to Linux, footprint and /proc.
    Replay(replay::ReplayArgs),
}

#[derive(Args, Clone)]
struct BootArgs {
    /// RAM size, as the kernel's memparse reads it (512M, 8G, 64G).
    #[arg(long, default_value = "4G")]
    mem: String,
    /// Number of CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: usize,
    /// NUMA nodes to split the PC memory map into.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// A firmware memory map file (dmesg's "BIOS-e820: [mem ...] usable"
    /// lines, optionally followed by "node N"), instead of a PC-like map.
    #[arg(long, value_name = "FILE")]
    memmap: Option<std::path::PathBuf>,
    /// Make memory above SIZE high memory (a 32-bit style machine with
    /// DMA, Normal and HighMem zones; 896M is the classic limit).
    #[arg(long, value_name = "SIZE")]
    highmem_above: Option<String>,
    /// movablecore=: this much memory at the top forms ZONE_MOVABLE.
    #[arg(long, value_name = "SIZE")]
    movablecore: Option<String>,
    /// vm.min_free_kbytes to use instead of the computed default.
    #[arg(long)]
    min_free_kbytes: Option<u64>,
    /// No transparent huge pages: min_free_kbytes is not raised for them and
    /// 2 MiB blocks have no per-CPU lists.
    #[arg(long)]
    no_thp: bool,
    /// Print the memblock tables (memblock=debug).
    #[arg(long)]
    memblock_debug: bool,
    /// Which reports to print after the boot log (comma separated:
    /// buddyinfo, pagetypeinfo, zoneinfo, slabinfo, meminfo, fault_inject,
    /// all, none). fault_inject is also printed whenever a fault option is
    /// given.
    #[arg(long, default_value = "all")]
    show: String,
    #[command(flatten)]
    fault: fault::FaultArgs,
}

impl Default for BootArgs {
    fn default() -> Self {
        BootArgs {
            mem: "4G".into(),
            cpus: 2,
            nodes: 1,
            memmap: None,
            highmem_above: None,
            movablecore: None,
            min_free_kbytes: None,
            no_thp: false,
            memblock_debug: false,
            show: "all".into(),
            fault: fault::FaultArgs::default(),
        }
    }
}

fn size_arg(what: &str, s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| format!("--{what} {s}: {e}"))
}

fn boot(args: &BootArgs) -> Result<(), String> {
    let map: Vec<MemRegion> = match &args.memmap {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            parse_memory_map(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => {
            let ram = size_arg("mem", &args.mem)?;
            if args.nodes > 1 {
                pc_memory_map_numa(ram, args.nodes)
            } else {
                pc_memory_map(ram)
            }
        }
    };
    let lowmem = args
        .highmem_above
        .as_deref()
        .map(|s| size_arg("highmem-above", s))
        .transpose()?;
    let mut cfg = SimConfig::new(args.cpus, map.clone());
    cfg.lowmem_limit = lowmem;
    let sim = SimPlatform::new(cfg).map_err(|e| e.to_string())?;
    let mut params = BootParams {
        lowmem_limit: lowmem,
        movablecore: args
            .movablecore
            .as_deref()
            .map(|s| size_arg("movablecore", s))
            .transpose()?
            .unwrap_or(0),
        min_free_kbytes: args.min_free_kbytes,
        transparent_hugepage: !args.no_thp,
        memblock_debug: args.memblock_debug,
        ..BootParams::default()
    };
    args.fault.set_boot_params(&mut params)?;
    let shows: Vec<&str> = args.show.split(',').map(str::trim).collect();
    for s in &shows {
        if ![
            "buddyinfo",
            "slabinfo",
            "pagetypeinfo",
            "zoneinfo",
            "meminfo",
            "fault_inject",
            "all",
            "none",
        ]
        .contains(s)
        {
            return Err(format!("--show: unknown report {s:?}"));
        }
    }
    let want = |r: &str| shows.contains(&"all") || shows.contains(&r);
    let sim = std::sync::Arc::new(sim);
    let _cpu = sim.bind(0);
    let k = Kmem::boot(&*sim, &map, &params);
    for (_, line) in sim.take_reports() {
        println!("{line}");
    }
    let k = k.map_err(|e| format!("boot failed: {e}"))?;
    println!("kmem: booted in {:.3} ms", k.boot_time_ns() as f64 / 1e6);
    args.fault.apply(&k, &sim)?;
    let mut out = String::new();
    let mut section = |name: &str, f: &dyn Fn(&mut String) -> std::fmt::Result| {
        if want(name) {
            out.push_str(&format!("\n$ cat /proc/{name}\n"));
            f(&mut out).expect("formatting into a String");
        }
    };
    section("buddyinfo", &|o| kmem::proc::buddyinfo(&k, o));
    section("pagetypeinfo", &|o| kmem::proc::pagetypeinfo(&k, o));
    section("zoneinfo", &|o| kmem::proc::zoneinfo(&k, o));
    section("slabinfo", &|o| kmem::proc::slabinfo(&k, o));
    section("meminfo", &|o| kmem::proc::meminfo(&k, o));
    if args.fault.any() || want("fault_inject") {
        out.push_str(
            "\n# fault injection: the debugfs knobs kmem models, and the failures it injected\n",
        );
        out.push_str(&fault::report(&k));
    }
    print!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Boot(args)) => boot(&args),
        Some(Command::Slabtop(args)) => slabtop::run(&args),
        Some(Command::Replay(args)) => replay::run(&args),
        // With no command, kmem's main job: the bundled real trace, with the
        // system allocator's time beside kmem's.
        None => replay::run(&replay::ReplayArgs {
            compare_system: true,
            ..Default::default()
        }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmem: {e}");
            ExitCode::FAILURE
        }
    }
}
