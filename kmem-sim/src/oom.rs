//! Simulated tasks and the simulator's OOM killer.
//!
//! kmem's page allocator calls [`Platform::out_of_memory`](kmem::Platform)
//! when a "too small to fail" allocation finds nothing to reclaim. The
//! simulator answers as Linux's OOM killer does (`mm/oom_kill.c`): it
//! prints the header with Mem-Info, the task table ("Tasks state (memory
//! values in pages)"), picks the task with the most pages (`oom_badness()`:
//! resident pages, adjusted by `oom_score_adj` in thousandths of RAM; -1000
//! is never chosen), reports "Out of memory: Killed process …", and frees
//! the victim's pages as the OOM reaper does ("oom_reaper: reaped process
//! …"). A killed task is marked ([`SimTask::is_killed`]) so the code
//! driving it can stop, as a task that got SIGKILL exits.
//!
//! Tasks are registered with [`SimPlatform::register_task`](crate::SimPlatform::register_task)
//! and own the pages they allocate through [`SimTask::alloc_pages`].

use kmem::gfp::Gfp;
use kmem::oom_kill::OomControl;
use kmem::platform::Level;
use kmem::{Error, Kmem, Platform};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering::*};
use std::sync::{Arc, Mutex};

/// A simulated user task: a pid, a name and the pages it owns.
#[derive(Debug)]
pub struct SimTask {
    pid: u32,
    comm: String,
    pages: Mutex<Vec<(u64, u32)>>,
    killed: AtomicBool,
    oom_score_adj: AtomicI32,
}

impl SimTask {
    /// The task's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The task's name.
    pub fn comm(&self) -> &str {
        &self.comm
    }

    /// Whether the OOM killer chose this task (its pages are gone).
    pub fn is_killed(&self) -> bool {
        self.killed.load(Acquire)
    }

    /// `/proc/<pid>/oom_score_adj`: -1000 (never kill) ..= 1000.
    pub fn set_oom_score_adj(&self, adj: i32) {
        self.oom_score_adj.store(adj.clamp(-1000, 1000), Relaxed);
    }

    /// Resident pages.
    pub fn rss_pages(&self) -> u64 {
        self.pages
            .lock()
            .unwrap()
            .iter()
            .map(|&(_, o)| 1u64 << o)
            .sum()
    }

    /// Allocate `2^order` pages for this task (its "anonymous memory").
    /// Returns the first pfn.
    #[track_caller]
    pub fn alloc_pages<P: Platform>(&self, k: &Kmem<P>, gfp: Gfp, order: u32) -> kmem::Result<u64> {
        let page = k.alloc_pages(gfp, order)?;
        let pfn = k.page_to_pfn(page);
        self.pages.lock().unwrap().push((pfn, order));
        Ok(pfn)
    }

    /// Free one block this task allocated. A pfn it does not own (never
    /// did, or the OOM reaper took it) is refused with
    /// [`Error::BadAddress`].
    pub fn free_pages<P: Platform>(&self, k: &Kmem<P>, pfn: u64) -> kmem::Result<()> {
        let order = {
            let mut pages = self.pages.lock().unwrap();
            let Some(i) = pages.iter().position(|&(p, _)| p == pfn) else {
                return Err(Error::BadAddress);
            };
            pages.swap_remove(i).1
        };
        let page = k.pfn_to_page(pfn).ok_or(Error::BadAddress)?;
        k.__free_pages(page, order)
    }

    /// Free everything the task owns (it exits).
    pub fn exit<P: Platform>(&self, k: &Kmem<P>) -> kmem::Result<()> {
        let pages = std::mem::take(&mut *self.pages.lock().unwrap());
        for (pfn, order) in pages {
            let page = k.pfn_to_page(pfn).ok_or(Error::BadAddress)?;
            k.__free_pages(page, order)?;
        }
        Ok(())
    }
}

/// The platform's task list.
#[derive(Default)]
pub(crate) struct TaskList {
    tasks: Mutex<Vec<Arc<SimTask>>>,
    next_pid: AtomicU32,
}

impl TaskList {
    pub(crate) fn register(&self, comm: &str) -> Arc<SimTask> {
        let pid = 1000 + self.next_pid.fetch_add(1, Relaxed);
        let t = Arc::new(SimTask {
            pid,
            comm: comm.chars().take(15).collect(),
            pages: Mutex::new(Vec::new()),
            killed: AtomicBool::new(false),
            oom_score_adj: AtomicI32::new(0),
        });
        self.tasks.lock().unwrap().push(t.clone());
        t
    }

    pub(crate) fn unregister(&self, pid: u32) {
        self.tasks.lock().unwrap().retain(|t| t.pid != pid);
    }

    /// The simulator's OOM killer.
    pub(crate) fn out_of_memory(&self, oc: &OomControl<'_>) -> bool {
        let tasks: Vec<Arc<SimTask>> = self.tasks.lock().unwrap().clone();
        let total = oc.totalram_pages().max(1) as i64;
        // oom_badness(): pages, plus oom_score_adj thousandths of RAM.
        let badness = |t: &SimTask| -> Option<i64> {
            let adj = t.oom_score_adj.load(Relaxed);
            let rss = t.rss_pages() as i64;
            if adj == -1000 || t.is_killed() || rss == 0 {
                return None;
            }
            Some((rss + i64::from(adj) * total / 1000).max(1))
        };
        oc.dump_header();
        let victim = tasks
            .iter()
            .filter_map(|t| badness(t).map(|b| (b, t)))
            .max_by_key(|&(b, _)| b)
            .map(|(_, t)| t.clone());
        let Some(v) = victim else {
            oc.report(
                Level::Emerg,
                format_args!("Out of memory and no killable processes..."),
            );
            return false;
        };
        oc.report(
            Level::Info,
            format_args!("Tasks state (memory values in pages):"),
        );
        oc.report(
            Level::Info,
            format_args!(
                "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name"
            ),
        );
        for t in &tasks {
            let rss = t.rss_pages();
            oc.report(
                Level::Info,
                format_args!(
                    "[{:>7}] {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>14} {:>8} {:>13} {}",
                    t.pid,
                    0,
                    t.pid,
                    rss,
                    rss,
                    rss,
                    0,
                    0,
                    0,
                    0,
                    t.oom_score_adj.load(Relaxed),
                    t.comm
                ),
            );
        }
        oc.report(
            Level::Info,
            format_args!(
                "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task={},pid={},uid=0",
                v.comm, v.pid
            ),
        );
        let rss_kb = v.rss_pages() * 4;
        oc.report(
            Level::Err,
            format_args!(
                "Out of memory: Killed process {} ({}) total-vm:{}kB, anon-rss:{}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:0kB oom_score_adj:{}",
                v.pid,
                v.comm,
                rss_kb,
                rss_kb,
                v.oom_score_adj.load(Relaxed)
            ),
        );
        v.killed.store(true, Release);
        // The OOM reaper: take the victim's pages and free them.
        let pages = std::mem::take(&mut *v.pages.lock().unwrap());
        let mut freed = 0u64;
        for (pfn, order) in pages {
            if oc.free_pages(pfn, order).is_ok() {
                freed += 1 << order;
            }
        }
        oc.report(
            Level::Info,
            format_args!(
                "oom_reaper: reaped process {} ({}), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
                v.pid, v.comm
            ),
        );
        freed > 0
    }
}
