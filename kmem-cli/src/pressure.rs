//! `kmem boot --pressure`: memory pressure on the booted machine, shown as
//! Linux shows it.
//!
//! With kswapd running (one thread per node, [`with_kswapd`]), a short
//! scenario sized to the machine's RAM:
//!
//! 1. `tar` reads one and a half times the machine's RAM into the page
//!    cache ([`PageCache`]) and looks up names that fill an eighth of it
//!    with dentries ([`Dcache`]); below the low watermark its allocations
//!    wake kswapd, which reclaims the oldest of both until a zone is back
//!    above its high watermark (`tar` waits for kswapd after each step, so
//!    kswapd also gets to run on a machine where it shares `tar`'s CPU).
//! 2. `memhog` allocates anonymous memory (`GFP_HIGHUSER_MOVABLE`) faster
//!    than kswapd reclaims: below the min watermark it reclaims on its own
//!    behalf (direct reclaim).
//! 3. At its first direct reclaim, an interrupt handler refills a network
//!    receive ring with `GFP_ATOMIC` pages, which may not reclaim, until one
//!    fails: the kernel's "page allocation failure" warning with Mem-Info.
//! 4. `memhog` goes on until nothing is left to reclaim and the OOM killer
//!    (the simulator's, [`SimPlatform::register_task`]) kills it, the task
//!    with the most pages, and the OOM reaper frees them.
//!
//! The kernel's own lines are printed as the machine reported them, in
//! order, between `kmem:` lines that say what the scenario did and what
//! the counters say (kmem prints no line when kswapd wakes or direct
//! reclaim starts; Linux has tracepoints there, `mm_vmscan_wakeup_kswapd`
//! and `mm_vmscan_direct_reclaim_begin`, and counters). Then
//! `/proc/vmstat` and what moved in it.
//!
//! It ends: every loop is bounded by the machine's size, an allocation
//! that finds nothing to reclaim waits at most
//! `MAX_RECLAIM_RETRIES` × `RECLAIM_THROTTLE_NS` for frees before the OOM
//! path, and the kswapd threads are stopped before `/proc/vmstat` is read.

use crate::Failure;
use kmem::gfp::{GFP_ATOMIC, GFP_HIGHUSER_MOVABLE, GFP_KERNEL};
use kmem::platform::Task;
use kmem::{Kmem, PAGE_SIZE};
use kmem_sim::{with_kswapd, CpuBinding, Dcache, PageCache, SimPlatform, SimTask};
use std::time::{Duration, Instant};

type Machine<'s> = Kmem<&'s SimPlatform>;

/// Failed allocations in a row after which `memhog` stops.
const GIVE_UP_AFTER: u32 = 16;

/// The thread driving the scenario, on CPU 0, running as one task or
/// another.
struct Driver<'s> {
    sim: &'s SimPlatform,
    binding: Option<CpuBinding<'s>>,
    task: Task,
}

impl<'s> Driver<'s> {
    /// Run as `t` from now on: reports name it.
    fn run_as(&mut self, t: &SimTask) {
        self.task = Task::new(t.pid(), t.comm());
        if let Some(b) = &self.binding {
            b.set_task(self.task);
        }
    }

    /// If some node's kswapd has a wake-up it has not taken yet, give CPU
    /// 0 up until it has (at most a second), as a task that blocks lets
    /// kswapd run; then take the CPU back.
    fn let_kswapd_run(&mut self, k: &Machine<'s>) {
        let pending = || (0..k.nr_nodes()).any(|n| k.kswapd_pending(n));
        if !pending() {
            return;
        }
        self.binding = None;
        let deadline = Instant::now() + Duration::from_secs(1);
        while pending() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        self.rebind();
    }

    /// Take CPU 0 (back), still running as the same task.
    fn rebind(&mut self) {
        self.binding = None;
        let b = self.sim.bind(0);
        b.set_task(self.task);
        self.binding = Some(b);
    }
}

/// Print the lines the machine reported since the last call, as the boot
/// log is printed.
fn print_reports(sim: &SimPlatform) {
    for (_, line) in sim.take_reports() {
        println!("{line}");
    }
}

/// `/proc/vmstat` as text and as (name, value) pairs.
fn vmstat(k: &Machine<'_>) -> (String, Vec<(String, u64)>) {
    let mut text = String::new();
    kmem::proc::vmstat(k, &mut text).expect("formatting into a String");
    let values = text
        .lines()
        .filter_map(|l| {
            let (name, v) = l.split_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect();
    (text, values)
}

/// `n` `unit`s: "1 time", "2 times".
fn count(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn times(n: u64) -> String {
    count(n, "time")
}

fn mib(pages: u64) -> String {
    let bytes = pages * PAGE_SIZE as u64;
    if bytes >= 10 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Run the scenario on `k`, booted on `sim`, from the thread bound to CPU
/// 0 by `cpu`; `injecting` says whether fault injection options were
/// given (which may fail the scenario's setup).
pub(crate) fn run<'s>(
    sim: &'s SimPlatform,
    k: &Machine<'s>,
    cpu: CpuBinding<'s>,
    injecting: bool,
) -> Result<(), Failure> {
    let start = Instant::now();
    let total = k.totalram_pages();
    let (_, before) = vmstat(k);
    let ev0 = k.vm_events();
    let mut d = Driver {
        sim,
        binding: Some(cpu),
        task: Task::new(1, "cpu/0"),
    };
    let fail = |what: &str, e: kmem::Error| {
        let hint = if injecting {
            "the fault injection options may have failed it; try without them"
        } else {
            "give a larger --mem"
        };
        Failure::runtime(format!("--pressure: {what}: {e}; {hint}"))
    };

    let pc = PageCache::new();
    let pc_id = pc
        .register(k)
        .map_err(|e| fail("registering the page cache's shrinker", e))?;
    let dc = Dcache::new(k).map_err(|e| fail("creating the dentry cache", e))?;
    let dc_id = dc
        .register(k)
        .map_err(|e| fail("registering the dentry cache's shrinker", e))?;
    let tar = sim.register_task("tar");
    let hog = sim.register_task("memhog");
    let kswapds: Vec<String> = (0..k.nr_nodes()).map(|n| format!("kswapd{n}")).collect();

    println!(
        "\n# memory pressure on this machine's {} ({total} pages), with {} running",
        mib(total),
        kswapds.join(", ")
    );
    let files = total * 3 / 2;
    let per_page = (PAGE_SIZE / dc.cache().object_size().max(1)) as u64;
    let names = total / 8 * per_page;
    println!(
        "# 1. tar reads {} of files ({files} pages) into the page cache and looks up {names} \
         names ({} of dentries)",
        mib(files),
        mib(total / 8)
    );
    let mut hog_pages = 0u64;
    let mut killed = false;
    with_kswapd(sim, k, || {
        d.run_as(&tar);
        // tar's own anonymous memory: a small task the OOM killer passes by.
        for _ in 0..(total / 256).clamp(1, 256) {
            let _ = tar.alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0);
        }
        const STEPS: u64 = 64;
        for _ in 0..STEPS {
            // Failures (injected ones, say) are reported by the kernel.
            let _ = pc.add_pages(k, (files / STEPS) as usize, GFP_HIGHUSER_MOVABLE, false);
            let _ = dc.lookup(k, (names / STEPS) as usize, GFP_KERNEL);
            d.let_kswapd_run(k);
        }
        print_reports(sim);
        let ev1 = k.vm_events();
        println!(
            "kmem: kswapd woke {} (mm_vmscan_wakeup_kswapd) and reclaimed {} pages in {} \
             (pgsteal_kswapd, pageoutrun); tar entered direct reclaim {} (allocstall); \
             the page cache holds {} pages, the dentry cache {} unused entries",
            times(ev1.kswapd_wakeups - ev0.kswapd_wakeups),
            ev1.pgsteal_kswapd - ev0.pgsteal_kswapd,
            count(ev1.pageoutrun - ev0.pageoutrun, "run"),
            times(ev1.allocstall - ev0.allocstall),
            pc.nr_pages(),
            dc.nr_unused()
        );

        println!(
            "# 2. memhog allocates anonymous memory (GFP_HIGHUSER_MOVABLE) until the OOM killer \
             kills it"
        );
        d.run_as(&hog);
        let stalls = ev1.allocstall;
        let mut burst = false;
        // Each page memhog gets is one fewer for it to get: the loop ends
        // at the kill, or after twice the machine's pages at most.
        // A task whose allocations keep failing (injected failures, say)
        // gives up, as a program would, after a few in a row.
        let mut failed_in_a_row = 0;
        for _ in 0..2 * total + 4096 {
            if hog.alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0).is_ok() {
                hog_pages += 1;
                failed_in_a_row = 0;
            } else {
                failed_in_a_row += 1;
            }
            if hog.is_killed() {
                killed = true;
                break;
            }
            if failed_in_a_row == GIVE_UP_AFTER {
                break;
            }
            if !burst && k.vm_events().allocstall > stalls {
                burst = true;
                print_reports(sim);
                let ev = k.vm_events();
                println!(
                    "kmem: direct reclaim: memhog, at {} free pages, reclaims on its own behalf \
                     (allocstall {}, pgsteal_direct {} so far)",
                    k.nr_free_pages(),
                    ev.allocstall - ev0.allocstall,
                    ev.pgsteal_direct - ev0.pgsteal_direct
                );
                println!(
                    "# 3. meanwhile an interrupt handler refills a network receive ring with \
                     GFP_ATOMIC pages, which may not reclaim, until one fails"
                );
                let mut ring = Vec::new();
                sim.irq(|| {
                    for _ in 0..total {
                        match k.alloc_pages(GFP_ATOMIC, 0) {
                            Ok(p) => ring.push(p),
                            Err(_) => break,
                        }
                    }
                });
                print_reports(sim);
                println!(
                    "kmem: the handler got {} pages before the failure; it drops the ring, \
                     freeing them",
                    ring.len()
                );
                for p in ring {
                    let _ = k.__free_pages(p, 0);
                }
                println!("# 4. memhog goes on");
            }
        }
        print_reports(sim);
        let ev = k.vm_events();
        println!(
            "kmem: memhog got {hog_pages} pages ({}){}; direct reclaim {} in all, \
             {} pages (allocstall, pgsteal_direct); kswapd woke {}, reclaimed {} pages",
            mib(hog_pages),
            if killed {
                " before the OOM killer killed it".to_string()
            } else if failed_in_a_row == GIVE_UP_AFTER {
                format!(", then {GIVE_UP_AFTER} failures in a row: it gives up, not killed")
            } else {
                " and was not killed".to_string()
            },
            times(ev.allocstall - ev0.allocstall),
            ev.pgsteal_direct - ev0.pgsteal_direct,
            times(ev.kswapd_wakeups - ev0.kswapd_wakeups),
            ev.pgsteal_kswapd - ev0.pgsteal_kswapd,
        );
        // The killed task exits: what it got after the kill goes too.
        let _ = hog.exit(k);
        // A stopped kswapd takes its CPU back to see that it must stop:
        // when it shares CPU 0, hold it no longer (with_kswapd waits for
        // the threads to return).
        d.binding = None;
    });
    d.rebind();
    print_reports(sim);

    let (text, after) = vmstat(k);
    println!("\n$ cat /proc/vmstat\n{text}");
    println!(
        "# what moved during the scenario ({:.2} s)",
        start.elapsed().as_secs_f64()
    );
    for (name, new) in &after {
        let old = before
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v);
        if old != *new {
            let delta = *new as i128 - old as i128;
            println!("{name:<24} {old:>10} -> {new:>10}  ({delta:+})");
        }
    }
    let ev = k.vm_events();
    println!(
        "# not in /proc/vmstat: kswapd wake-ups {} (Linux's mm_vmscan_wakeup_kswapd tracepoint), \
         sleeps waiting for frees {}",
        ev.kswapd_wakeups - ev0.kswapd_wakeups,
        ev.alloc_waits - ev0.alloc_waits
    );

    // Give everything back, as the machine was before the scenario.
    let teardown = || -> kmem::Result<()> {
        tar.exit(k)?;
        sim.unregister_task(&tar);
        sim.unregister_task(&hog);
        pc.truncate(k)?;
        dc.prune(k)?;
        k.unregister_shrinker(pc_id)?;
        k.unregister_shrinker(dc_id)
    };
    teardown().map_err(|e| {
        Failure::runtime(format!(
            "--pressure: giving the scenario's memory back: {e}"
        ))
    })?;
    print_reports(sim);
    drop(d);
    Ok(())
}
