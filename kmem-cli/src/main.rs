//! `kmem`: run kmem on a simulated machine and show what Linux would show.
//!
//! - `kmem` (no arguments): replay the bundled perf trace of a real Linux
//!   6.18 machine on a 2-CPU simulated machine, comparing with the system
//!   allocator, and print the report (`kmem replay --compare-system`).
//! - `kmem replay [FILE]`: the same for any trace ([`replay`]).
//! - `kmem boot`: boot a machine and print the boot log and `/proc` reports.
//! - `kmem qemu`: build the bare-metal kernel and run it under QEMU
//!   ([`qemu`]).

mod replay;

use clap::{Args, Parser, Subcommand};
use kmem::memory_map::{MemRegion, RegionKind};
use kmem::mmzone::{MAX_NUMNODES, NR_CPUS};
use kmem::page_alloc::sysctl::MIN_FREE_KBYTES_MAX;
use kmem::platform::Level;
use kmem::{BootParams, Error, Kmem};
use kmem_sim::{
    parse_size, pc_memory_map, pc_memory_map_numa, read_memory_map, SimConfig, SimError,
    SimPlatform,
};
use std::process::ExitCode;

mod fault;
mod pressure;
mod qemu;
mod slabtop;

/// kmem: the Linux kernel's memory allocators, in Rust, on a simulated machine.
///
/// Without a command, replays the bundled trace of a real Linux 6.18 machine
/// (`kmem replay --compare-system`).
#[derive(Parser)]
#[command(name = "kmem", version, about, long_about = None)]
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
    /// Build the bare-metal kernel (kmem-kernel) and boot it under QEMU with
    /// OVMF: kmem on real page tables, CPUs and interrupts, its KTAP suite
    /// and /proc files on the serial console. Exit status 0 when every case
    /// passed.
    Qemu(qemu::QemuArgs),
}

#[derive(Args, Clone)]
struct BootArgs {
    /// RAM size, as the kernel's memparse reads it (512M, 8G, 64G); at most
    /// 64T, Linux's limit on x86-64 with 4-level page tables, of which
    /// boot indexes 16T of page frames.
    #[arg(long, default_value = "4G", conflicts_with = "memmap")]
    mem: String,
    /// Number of CPUs, 1 to 1024 (NR_CPUS).
    #[arg(long, default_value_t = 2)]
    cpus: usize,
    /// NUMA nodes to split the PC memory map into, 1 to 64 (MAX_NUMNODES),
    /// with at least 8 MiB of RAM each.
    #[arg(long, default_value_t = 1, conflicts_with = "memmap")]
    nodes: usize,
    /// A firmware memory map file (dmesg's "BIOS-e820: [mem ...] usable"
    /// lines, optionally followed by "node N" below 64), instead of a PC-like
    /// map. Overlapping ranges are sanitized as Linux does (the higher e820
    /// type wins) and the changes printed on stderr.
    #[arg(long, value_name = "FILE")]
    memmap: Option<std::path::PathBuf>,
    /// Make memory above SIZE high memory (a 32-bit style machine with
    /// DMA, Normal and HighMem zones; 896M is the classic limit). At least
    /// 16M (ZONE_DMA stays low memory), a multiple of the 4K page size.
    #[arg(long, value_name = "SIZE")]
    highmem_above: Option<String>,
    /// movablecore=: this much memory at the top forms ZONE_MOVABLE.
    #[arg(long, value_name = "SIZE")]
    movablecore: Option<String>,
    /// vm.min_free_kbytes to use instead of the computed default (at most
    /// 2147483647, INT_MAX, as Linux's sysctl).
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
    /// buddyinfo, pagetypeinfo, zoneinfo, slabinfo, meminfo, vmallocinfo,
    /// iomem, percpu (/sys/kernel/debug/percpu_stats), fault_inject, all,
    /// none). fault_inject is also printed whenever a
    /// fault option is given.
    #[arg(long, default_value = "all")]
    show: String,
    /// After boot (and the reports), put the machine under memory pressure
    /// and show what Linux shows: kswapd waking, direct reclaim, a page
    /// allocation failure, an OOM kill, then /proc/vmstat and what moved.
    /// Sized to the machine's RAM; a small one (--mem 128M) reads best.
    #[arg(long)]
    pressure: bool,
    /// A simulated device with MMIO registers, as KIND@ADDRESS[,SIZE]
    /// (repeatable; KIND is echo). The firmware map reserves its range and
    /// a driver probes it after boot: request_mem_region() and ioremap(),
    /// which /proc/iomem and /proc/vmallocinfo then show.
    #[arg(long, value_name = "KIND@ADDRESS")]
    device: Vec<String>,
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
            pressure: false,
            device: Vec::new(),
            fault: fault::FaultArgs::default(),
        }
    }
}

/// Why a command failed: the one-line reason `main` prints on stderr after
/// "kmem: ", and the exit status: 2 for a bad option value (as clap's own
/// usage errors), 1 for what went wrong at run time. Subcommands returning
/// a plain `String` fail with status 1 ([`From<String>`]).
pub(crate) struct Failure {
    code: u8,
    reason: String,
}

impl Failure {
    /// A bad option value: exit status 2.
    pub(crate) fn usage(reason: impl Into<String>) -> Self {
        Failure {
            code: 2,
            reason: reason.into(),
        }
    }

    /// A failure at run time: exit status 1.
    pub(crate) fn runtime(reason: impl Into<String>) -> Self {
        Failure {
            code: 1,
            reason: reason.into(),
        }
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure::runtime(reason)
    }
}

/// The most RAM `--mem` takes (64 TiB): Linux x86-64's `MAX_PHYSMEM_BITS`
/// of 46 with 4-level page tables. The simulator maps all of it.
pub(crate) const MAX_MEM: u64 = 1 << 46;
/// The smallest `--highmem-above`: low memory always holds ZONE_DMA.
const MIN_LOWMEM: u64 = 16 << 20;
/// RAM each NUMA node of a PC map needs ([`pc_memory_map_numa`]).
const NODE_MIN_RAM: u64 = 2 * kmem_sim::NUMA_ALIGN;

pub(crate) fn size_arg(what: &str, s: &str) -> Result<u64, Failure> {
    parse_size(s).map_err(|e| Failure::usage(format!("--{what} {s}: {e}")))
}

/// Human-readable binary size for messages (`64T`, `1536M`, `4K`).
fn size_text(bytes: u64) -> String {
    let units = [
        (60, "E"),
        (50, "P"),
        (40, "T"),
        (30, "G"),
        (20, "M"),
        (10, "K"),
    ];
    for (shift, u) in units {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{u}", bytes >> shift);
        }
    }
    format!("{bytes}")
}

/// The memory map to boot: from `--memmap`, or a PC map of `--mem` split
/// into `--nodes`. Every value is checked here, before anything runs.
fn memory_map(args: &BootArgs) -> Result<Vec<MemRegion>, Failure> {
    if let Some(path) = &args.memmap {
        let file = format!("--memmap {}", path.display());
        let text =
            std::fs::read_to_string(path).map_err(|e| Failure::runtime(format!("{file}: {e}")))?;
        let read = read_memory_map(&text).map_err(|e| Failure::runtime(format!("{file}: {e}")))?;
        for change in &read.changes {
            eprintln!("kmem: {file}: {change}");
        }
        let usable = read.map.iter().filter(|r| r.kind == RegionKind::Usable);
        match usable.map(|r| r.end()).max() {
            None => {
                return Err(Failure::runtime(format!(
                    "{file}: no usable range; add a line such as \
                     \"BIOS-e820: [mem 0x0000000000100000-0x000000003fffffff] usable\""
                )))
            }
            Some(top) if top > MAX_MEM => {
                return Err(Failure::runtime(format!(
                    "{file}: usable RAM ends at {top:#x}, above kmem's limit of {} \
                     (Linux x86-64's MAX_PHYSMEM_BITS, 46); end it at or below {:#x}",
                    size_text(MAX_MEM),
                    MAX_MEM
                )))
            }
            Some(_) => {}
        }
        return Ok(read.map);
    }
    let ram = size_arg("mem", &args.mem)?;
    if ram > MAX_MEM {
        return Err(Failure::usage(format!(
            "--mem {}: more than kmem's limit of {} (Linux x86-64's MAX_PHYSMEM_BITS, 46); \
             give at most {}",
            args.mem,
            size_text(MAX_MEM),
            size_text(MAX_MEM)
        )));
    }
    let map = pc_memory_map(ram);
    if !map.iter().any(|r| r.kind == RegionKind::Usable) {
        return Err(Failure::usage(format!(
            "--mem {}: a PC memory map that small has no usable RAM; give at least 2M",
            args.mem
        )));
    }
    if !(1..=MAX_NUMNODES).contains(&args.nodes) {
        return Err(Failure::usage(format!(
            "--nodes {}: a machine has 1 to {MAX_NUMNODES} nodes (MAX_NUMNODES); \
             give a number in that range",
            args.nodes
        )));
    }
    if args.nodes == 1 {
        return Ok(map);
    }
    let map = pc_memory_map_numa(ram, args.nodes);
    let got = map.iter().map(|r| usize::from(r.node)).max().unwrap_or(0) + 1;
    if got < args.nodes {
        return Err(Failure::usage(format!(
            "--nodes {}: --mem {} has room for {got} nodes (each needs {} of RAM); \
             give --nodes {got} or fewer, or a larger --mem",
            args.nodes,
            args.mem,
            size_text(NODE_MIN_RAM)
        )));
    }
    Ok(map)
}

/// The reports boot may print, each checked by name.
const REPORTS: [&str; 11] = [
    "buddyinfo",
    "slabinfo",
    "pagetypeinfo",
    "zoneinfo",
    "meminfo",
    "vmallocinfo",
    "iomem",
    "percpu",
    "fault_inject",
    "all",
    "none",
];

/// The line of a failed boot's log that says why: the first at error level
/// or worse, else the first warning (an allocation failure report).
fn failure_line(log: &[(Level, String)]) -> Option<usize> {
    log.iter()
        .position(|(l, _)| *l <= Level::Err)
        .or_else(|| log.iter().position(|(l, _)| *l == Level::Warning))
}

/// What to change when boot ran out of memory: the options that give it
/// more, those given first.
fn out_of_memory_hint(args: &BootArgs) -> String {
    let mut more = Vec::new();
    if args.movablecore.is_some() {
        more.push(format!(
            "a smaller --movablecore than {}",
            args.movablecore.as_deref().unwrap_or_default()
        ));
    }
    if let Some(v) = args.min_free_kbytes {
        more.push(format!("a smaller --min-free-kbytes than {v}"));
    }
    if let Some(h) = &args.highmem_above {
        more.push(format!("a larger --highmem-above than {h}"));
    }
    match &args.memmap {
        Some(p) => more.push(format!("more usable RAM in --memmap {}", p.display())),
        None => more.push(format!("a larger --mem than {}", args.mem)),
    }
    format!(
        "the machine is too small for boot; give {}",
        more.join(", or ")
    )
}

fn boot(args: &BootArgs) -> Result<(), Failure> {
    if !(1..=NR_CPUS).contains(&args.cpus) {
        return Err(Failure::usage(format!(
            "--cpus {}: a machine has 1 to {NR_CPUS} CPUs (NR_CPUS); give a number in that range",
            args.cpus
        )));
    }
    let shows: Vec<&str> = args.show.split(',').map(str::trim).collect();
    if let Some(bad) = shows.iter().find(|s| !REPORTS.contains(s)) {
        return Err(Failure::usage(format!(
            "--show {}: unknown report {bad:?}; give a comma-separated list of {}",
            args.show,
            REPORTS.join(", ")
        )));
    }
    let lowmem = match args.highmem_above.as_deref() {
        None => None,
        Some(s) => {
            let v = size_arg("highmem-above", s)?;
            if v < MIN_LOWMEM {
                return Err(Failure::usage(format!(
                    "--highmem-above {s}: low memory holds ZONE_DMA, the first {}, at least; \
                     give {} or more (896M is the classic 32-bit split)",
                    size_text(MIN_LOWMEM),
                    size_text(MIN_LOWMEM)
                )));
            }
            if v % kmem::PAGE_SIZE as u64 != 0 {
                return Err(Failure::usage(format!(
                    "--highmem-above {s}: not a multiple of the {} page size; \
                     give a whole number of pages, such as 896M",
                    size_text(kmem::PAGE_SIZE as u64)
                )));
            }
            Some(v)
        }
    };
    if let Some(v) = args.min_free_kbytes.filter(|&v| v > MIN_FREE_KBYTES_MAX) {
        return Err(Failure::usage(format!(
            "--min-free-kbytes {v}: above INT_MAX ({MIN_FREE_KBYTES_MAX}), which Linux's \
             vm.min_free_kbytes sysctl refuses; give at most {MIN_FREE_KBYTES_MAX}"
        )));
    }
    let movablecore = args
        .movablecore
        .as_deref()
        .map(|s| size_arg("movablecore", s))
        .transpose()?
        .unwrap_or(0);
    let mut params = BootParams {
        lowmem_limit: lowmem,
        movablecore,
        min_free_kbytes: args.min_free_kbytes,
        transparent_hugepage: !args.no_thp,
        memblock_debug: args.memblock_debug,
        ..BootParams::default()
    };
    args.fault.set_boot_params(&mut params)?;
    let map = memory_map(args)?;
    let mut cfg = SimConfig::new(args.cpus, map.clone());
    cfg.lowmem_limit = lowmem;
    for d in &args.device {
        let dev = kmem_sim::DeviceConfig::parse(d).map_err(|e| {
            Failure::usage(format!(
                "--device {d}: {e}; give KIND@ADDRESS[,SIZE], such as echo@0xfe000000"
            ))
        })?;
        cfg.devices.push(dev);
    }
    let source = match &args.memmap {
        Some(p) => format!("--memmap {}", p.display()),
        None => format!("--mem {}", args.mem),
    };
    let sim = SimPlatform::new(cfg).map_err(|e| match e {
        SimError::Os { .. } => Failure::runtime(format!(
            "{source}: the host could not map the machine's memory ({e}); give less memory"
        )),
        e => Failure::runtime(format!("{source}: {e}")),
    })?;
    let want = |r: &str| shows.contains(&"all") || shows.contains(&r);
    let sim = std::sync::Arc::new(sim);
    let cpu = sim.bind(0);
    // The platform's map has the devices' reserved ranges added.
    let map = sim.memory_map().to_vec();
    let k = Kmem::boot(&*sim, &map, &params);
    let mut log = sim.take_reports();
    let k = match k {
        Ok(k) => k,
        Err(e) => {
            // The log goes to stdout as the machine printed it, but for the
            // line that says why, which goes to stderr with what to change.
            let why = failure_line(&log).map(|i| log.remove(i).1);
            for (_, line) in &log {
                println!("{line}");
            }
            let mut reason = format!("boot failed: {e}");
            if let Some(why) = why {
                reason.push_str(&format!(": {why}"));
            }
            if e == Error::NoMemory {
                reason.push_str(&format!("; {}", out_of_memory_hint(args)));
            }
            return Err(Failure::runtime(reason));
        }
    };
    args.fault.apply(&k, &sim)?;
    for (_, line) in &log {
        println!("{line}");
    }
    let _mappings = probe_devices(&k, &sim)?;
    println!("kmem: booted in {:.3} ms", k.boot_time_ns() as f64 / 1e6);
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
    section("vmallocinfo", &|o| kmem::proc::vmallocinfo(&k, o));
    section("iomem", &|o| kmem::proc::iomem(&k, o));
    if want("percpu") {
        out.push_str("\n$ cat /sys/kernel/debug/percpu_stats\n");
        kmem::proc::percpu_stats(&k, &mut out).expect("formatting into a String");
    }
    if args.fault.any() || want("fault_inject") {
        out.push_str(
            "\n# fault injection: the debugfs knobs kmem models, and the failures it injected\n",
        );
        out.push_str(&fault::report(&k));
    }
    print!("{out}");
    if args.pressure {
        pressure::run(&sim, &k, cpu, args.fault.any())?;
        if args.fault.any() {
            println!("\n# fault injection during the scenario");
            print!("{}", fault::report(&k));
        }
    }
    Ok(())
}

/// What a driver does at probe time for each simulated device: claim its
/// registers (`request_mem_region()`), map them (`ioremap()`) and read the
/// device's id register, printing what it found as a driver's `dev_info()`
/// line. The mappings stay for the machine's life, as a bound driver's do.
fn probe_devices(
    k: &Kmem<&SimPlatform>,
    sim: &SimPlatform,
) -> Result<Vec<std::ptr::NonNull<u8>>, Failure> {
    let mut maps = Vec::new();
    for dev in sim.devices() {
        let c = dev.config();
        let name: &'static str = match c.kind {
            kmem_sim::DeviceKind::Echo => "kmem-echo",
        };
        let fail = |what: &str, e: Error| {
            Failure::runtime(format!(
                "{name} {:#x}: {what} failed: {e}; give the device a range of its own with --device",
                c.base
            ))
        };
        k.request_mem_region(c.base, c.size, name)
            .map_err(|e| fail("request_mem_region", e))?;
        let regs = k
            .ioremap(c.base, kmem::PAGE_SIZE)
            .map_err(|e| fail("ioremap", e))?;
        // SAFETY: a live ioremap of the device's first page.
        let id = unsafe { kmem::ioremap::readl(regs.as_ptr().add(kmem_sim::echo::ID)) };
        println!(
            "{name} {:#x}: device id {:?}, registers mapped at {:p}",
            c.base,
            String::from_utf8_lossy(&id.to_be_bytes()),
            regs
        );
        maps.push(regs);
    }
    Ok(maps)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Boot(args)) => boot(&args),
        Some(Command::Slabtop(args)) => slabtop::run(&args).map_err(Failure::from),
        Some(Command::Replay(args)) => replay::run(&args).map_err(Failure::from),
        Some(Command::Qemu(args)) => qemu::run(&args),
        // With no command, kmem's main job: the bundled real trace, with the
        // system allocator's time beside kmem's.
        None => replay::run(&replay::ReplayArgs {
            compare_system: true,
            ..Default::default()
        })
        .map_err(Failure::from),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("kmem: {}", f.reason);
            ExitCode::from(f.code)
        }
    }
}
