//! The fault-injection options of `kmem boot` (see `kmem::fault_inject`):
//! Linux's boot form `failslab=` / `fail_page_alloc=`, debugfs-style knob
//! writes after boot, and a report of the knobs and injected-failure counts
//! in the shape `grep . /sys/kernel/debug/<attr>/*` prints.
//!
//! Kept apart from `main.rs` so that other subcommands can flatten the
//! same options and print the same report.

use crate::Failure;
use clap::Args;
use kmem::fault_inject::{FaultBootArg, FaultSetup, FAILSLAB_KNOBS, FAIL_PAGE_ALLOC_KNOBS};
use kmem::{BootParams, Kmem, Platform};
use kmem_sim::SimPlatform;
use std::fmt::Write;

/// Fault injection (failslab, fail_page_alloc).
#[derive(Args, Clone, Debug, Default)]
pub struct FaultArgs {
    /// failslab=INTERVAL,PROBABILITY,SPACE,TIMES on the kernel command line, e.g. 1,10,0,-1 (every call may fail, 10%, no space,
    /// unlimited). Blocking requests stay exempt unless
    /// --fault failslab/ignore-gfp-wait=N.
    #[arg(long, value_name = "I,P,S,T")]
    pub failslab: Option<String>,
    /// fail_page_alloc=INTERVAL,PROBABILITY,SPACE,TIMES on the kernel
    /// command line (space counts pages).
    #[arg(long = "fail-page-alloc", value_name = "I,P,S,T")]
    pub fail_page_alloc: Option<String>,
    /// After boot, write a debugfs knob: ATTR/KNOB=VALUE, e.g.
    /// fail_page_alloc/min-order=2 or failslab/ignore-gfp-wait=N
    /// (repeatable, applied in order).
    #[arg(long = "fault", value_name = "ATTR/KNOB=VALUE")]
    pub fault: Vec<String>,
}

impl FaultArgs {
    /// Whether any fault-injection option was given.
    pub fn any(&self) -> bool {
        self.failslab.is_some() || self.fail_page_alloc.is_some() || !self.fault.is_empty()
    }

    /// Put the boot forms into `params`. A string that is not four
    /// comma-separated numbers, or whose numbers are out of Linux's ranges
    /// (probability 0..=100, space 0 and up, times -1 and up), is refused
    /// here with the option's name (boot would refuse them too, in the
    /// kernel's words).
    pub fn set_boot_params(&self, params: &mut BootParams) -> Result<(), Failure> {
        for (opt, val, slot) in [
            ("failslab", &self.failslab, &mut params.failslab),
            (
                "fail-page-alloc",
                &self.fail_page_alloc,
                &mut params.fail_page_alloc,
            ),
        ] {
            if let Some(s) = val {
                let Some(v) = FaultSetup::parse(s) else {
                    return Err(Failure::usage(format!(
                        "--{opt} {s}: expected <interval>,<probability>,<space>,<times> \
                         (for example 1,10,0,-1)"
                    )));
                };
                let bad = if v.probability > 100 {
                    Some(format!(
                        "probability {} is not a percentage; give 0 to 100",
                        v.probability
                    ))
                } else if v.space < 0 {
                    Some(format!("space {} is negative; give 0 or more", v.space))
                } else if v.times < -1 {
                    Some(format!(
                        "times {} is invalid; give -1 for unlimited, or 0 and up",
                        v.times
                    ))
                } else {
                    None
                };
                if let Some(why) = bad {
                    return Err(Failure::usage(format!("--{opt} {s}: {why}")));
                }
                *slot = Some(FaultBootArg::new(s));
            }
        }
        Ok(())
    }

    /// Apply the `--fault` knob writes to the booted machine, in order. A
    /// refused write is a bad option value; the error carries the
    /// machine's report.
    pub fn apply(&self, k: &Kmem<&SimPlatform>, sim: &SimPlatform) -> Result<(), Failure> {
        for spec in &self.fault {
            if let Err(e) = k.fault_inject_write(spec) {
                let why: Vec<String> = sim.take_reports().into_iter().map(|(_, l)| l).collect();
                return Err(Failure::usage(format!(
                    "--fault {spec}: {e}: {}",
                    why.join("; ")
                )));
            }
        }
        Ok(())
    }
}

/// The knobs of both attributes as `grep . /sys/kernel/debug/<attr>/*`
/// prints them, then the injected-failure counts.
pub fn report<P: Platform>(k: &Kmem<P>) -> String {
    let mut out = String::new();
    let fs = k.failslab();
    let fp = k.fail_page_alloc();
    for knob in FAILSLAB_KNOBS {
        if let Ok(v) = fs.read(knob) {
            let _ = writeln!(out, "/sys/kernel/debug/failslab/{knob}:{v}");
        }
    }
    for knob in FAIL_PAGE_ALLOC_KNOBS {
        if let Ok(v) = fp.read(knob) {
            let _ = writeln!(out, "/sys/kernel/debug/fail_page_alloc/{knob}:{v}");
        }
    }
    let _ = writeln!(
        out,
        "kmem: injected failures: failslab {}, fail_page_alloc {}",
        fs.injected(),
        fp.injected()
    );
    out
}
