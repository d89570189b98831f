//! The fault-injection knob parsers: the boot form
//! (`failslab=`/`fail_page_alloc=`, [`FaultSetup::parse`] and boot with a
//! [`FaultBootArg`]), the run-time boot form ([`Fault::setup`]) and the
//! debugfs assignments ([`Kmem::fault_inject_write`]), then allocations
//! under whatever the knobs say.
//!
//! Checked: no panic; a bad value is refused with `InvalidArgument` and
//! boot either works or fails with an error; a knob that was written reads
//! back as a value that writes back to itself; a boot form that parses
//! prints and parses to the same numbers; allocations under injection
//! either succeed or fail with `NoMemory`; once injection is off and
//! everything is freed, the free page count is the boot value.
//!
//! [`Fault::setup`]: kmem::fault_inject::Fault::setup
#![no_main]

#[path = "common.rs"]
mod common;

use kmem::arena::ArenaPlatform;
use kmem::fault_inject::{FaultBootArg, FaultSetup};
use kmem::gfp::*;
use kmem::memory_map::MemRegion;
use kmem::{BootParams, Error, Kmem};
use libfuzzer_sys::fuzz_target;

const ARENA: usize = 4 << 20;

fn check_setup_form(s: &str) {
    if let Some(v) = FaultSetup::parse(s) {
        let text = format!("{},{},{},{}", v.interval, v.probability, v.space, v.times);
        assert_eq!(FaultSetup::parse(&text), Some(v), "{s:?} -> {text:?}");
    }
}

/// Apply one line; check a knob that took its value reads back stably.
fn apply(k: &Kmem<ArenaPlatform<'_>>, line: &str) {
    check_setup_form(line);
    if let Some(rest) = line.strip_prefix("failslab=") {
        let r = k.failslab().setup(rest);
        assert!(matches!(r, Ok(()) | Err(Error::InvalidArgument)), "{r:?}");
        return;
    }
    if let Some(rest) = line.strip_prefix("fail_page_alloc=") {
        let r = k.fail_page_alloc().setup(rest);
        assert!(matches!(r, Ok(()) | Err(Error::InvalidArgument)), "{r:?}");
        return;
    }
    let r = k.fault_inject_write(line);
    assert!(
        matches!(r, Ok(()) | Err(Error::InvalidArgument)),
        "{line:?}: {r:?}"
    );
    if r.is_err() {
        return;
    }
    // It worked, so it was `[/sys/kernel/debug/]<attr>/<knob>=<value>`.
    let path = line.strip_prefix("/sys/kernel/debug/").unwrap_or(line);
    let (file, _) = path.split_once('=').expect("an assignment");
    let (dir, knob) = file.split_once('/').expect("attr/knob");
    let read = |k: &Kmem<ArenaPlatform<'_>>| match dir {
        "failslab" => k.failslab().read(knob),
        _ => k.fail_page_alloc().read(knob),
    };
    let v = read(k).unwrap_or_else(|e| panic!("{line:?} written but {knob} unreadable: {e:?}"));
    let again = format!("{dir}/{knob}={v}");
    assert_eq!(k.fault_inject_write(&again), Ok(()), "{again:?} refused");
    assert_eq!(read(k), Ok(v), "{knob} does not read back after {again:?}");
}

const GFPS: [Gfp; 4] = [
    GFP_ATOMIC,
    GFP_NOWAIT,
    GFP_KERNEL,
    GFP_KERNEL.union(__GFP_HIGHMEM),
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.lines();
    let mut params = BootParams {
        reserve_low: 0,
        ..BootParams::default()
    };
    // Mode bits 0 and 1: the first line is a boot argument.
    if mode & 3 != 0 {
        let arg = lines.next().unwrap_or("");
        check_setup_form(arg);
        let a = Some(FaultBootArg::new(arg));
        if mode & 1 != 0 {
            params.failslab = a;
        }
        if mode & 2 != 0 {
            params.fail_page_alloc = a;
        }
    }
    let mut mem = vec![0u8; ARENA];
    let p = ArenaPlatform::new(&mut mem, 1);
    let (start, end) = p.usable_range();
    let k = match Kmem::boot(p, &[MemRegion::usable(start, end - start)], &params) {
        Ok(k) => k,
        Err(e) => {
            // Only a bad argument may stop boot here.
            assert_eq!(e, Error::InvalidArgument, "boot failed");
            assert!(params.failslab.is_some() || params.fail_page_alloc.is_some());
            return;
        }
    };
    // The injected failures the boot arguments allow may hit the
    // settling's own allocations: none are made there (shrink and drain
    // only free).
    let boot = common::settle(&k);
    for line in lines.by_ref().take(32) {
        apply(&k, line);
    }
    // Allocations under the knobs: each works or is refused for memory.
    let mut held_pages = Vec::new();
    let mut held_objs = Vec::new();
    for (i, &b) in rest.iter().take(64).enumerate() {
        let gfp = GFPS[usize::from(b & 3)] | __GFP_NOWARN;
        if b & 4 == 0 {
            let size = 8usize << (b >> 4);
            match k.kmalloc(size, gfp) {
                Ok(p) => held_objs.push(p.as_ptr()),
                Err(e) => assert_eq!(e, Error::NoMemory, "kmalloc({size}) #{i}"),
            }
        } else {
            let order = u32::from(b >> 6);
            match k.alloc_pages(gfp, order) {
                Ok(pg) => held_pages.push((pg, order)),
                Err(e) => assert_eq!(e, Error::NoMemory, "alloc_pages order {order} #{i}"),
            }
        }
    }
    for p in held_objs {
        // SAFETY: ours, not used again.
        assert_eq!(unsafe { k.kfree(p) }, Ok(()));
    }
    for (pg, order) in held_pages {
        assert_eq!(k.__free_pages(pg, order), Ok(()));
    }
    k.failslab().set_probability(0).expect("0 is a probability");
    k.fail_page_alloc()
        .set_probability(0)
        .expect("0 is a probability");
    let end = common::settle(&k);
    assert_eq!(end, boot, "pages lost or gained:\n{}", common::reports(&k));
});
