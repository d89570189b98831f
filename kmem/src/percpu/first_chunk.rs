//! The first chunk, set up at boot from memblock
//! (`pcpu_embed_first_chunk()`, `pcpu_setup_first_chunk()`,
//! `pcpu_alloc_first_chunk()`, x86's `setup_per_cpu_areas()`).
//!
//! Groups are the nodes with CPUs, in the order of their first CPU (x86's
//! `pcpu_cpu_distance()` puts CPUs of one node together). Each group's
//! units are one memblock allocation on its node, aligned to the atom
//! (`PMD_SIZE`); the part of each unit past `size_sum`, and every unit no
//! CPU uses, goes back to memblock at once. Unit offsets are measured from
//! the lowest group (`pcpu_base_addr`). The unit holds the static section,
//! then the reserved chunk, then the first chunk's dynamic area:
//!
//! ```text
//! | static (PERCPU_STATIC_SIZE) | reserved (8 KiB) | dynamic (dyn_size) | unused: freed |
//! 0                                                              size_sum      unit_size
//! ```

use super::alloc_info::{
    build_alloc_info, AllocInfo, PERCPU_DYNAMIC_RESERVE, PERCPU_MODULE_RESERVE,
};
use super::area::ChunkMap;
use super::chunk::{carve_maps, maps_bytes, Chunks, Kind, PcpuChunk};
use super::{Layout, PcpuState, PERCPU_STATIC_SIZE};
use crate::memblock::Memblock;
use crate::mmzone::MAX_NUMNODES;
use crate::platform::{DirectMap, Level, Platform};
use crate::{report, Error, Result, PAGE_SIZE};
use core::ptr::NonNull;

/// x86_64's atom: `PMD_SIZE`, so the first chunk can be mapped with huge
/// pages.
const ATOM_SIZE: usize = 2 << 20;

/// What boot knows that the first chunk needs.
pub(crate) struct FirstChunkInput<'a> {
    /// `nr_cpu_ids`.
    pub(crate) nr_cpus: usize,
    /// `cpu_to_node()`.
    pub(crate) cpu_to_node: &'a [u8],
    /// Bytes of the vmalloc space (`VMALLOC_TOTAL`).
    pub(crate) vmalloc_total: usize,
    /// memcg kmem accounting's size overhead.
    pub(crate) memcg: bool,
    /// `CONFIG_DEBUG_PREEMPT`.
    pub(crate) debug_preempt: bool,
}

/// Memblock memory for `n` values of `T`, zeroed, on `nid` if it can.
fn boot_zalloc<P: Platform, T>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    n: usize,
    align: usize,
) -> Result<NonNull<T>> {
    let size = (core::mem::size_of::<T>() * n).max(1);
    let pa = mb.phys_alloc_range(
        p,
        size as u64,
        align.max(core::mem::align_of::<T>()) as u64,
        0,
        dm.end,
    )?;
    let va = dm.va(pa).ok_or(Error::NoMemory)?;
    // SAFETY: memblock just reserved `size` bytes at `pa`, inside the
    // direct map; nobody else uses them.
    unsafe { core::ptr::write_bytes(va as *mut u8, 0, size) };
    Ok(NonNull::new(va as *mut T).expect("direct map address is not null"))
}

/// `pcpu_alloc_first_chunk()`: a chunk over `map_size` bytes at per-CPU
/// address `tmp_addr`, populated, never freed.
fn alloc_first_chunk<P: Platform>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    tmp_addr: usize,
    map_size: usize,
    kind: Kind,
) -> Result<NonNull<PcpuChunk>> {
    let aligned = tmp_addr & !(PAGE_SIZE - 1);
    let start_offset = tmp_addr - aligned;
    let region = (start_offset + map_size).next_multiple_of(PAGE_SIZE);
    let end_offset = region - start_offset - map_size;
    let nr_pages = region / PAGE_SIZE;
    let maps = boot_zalloc::<P, u64>(p, mb, dm, maps_bytes(nr_pages).div_ceil(8), 64)?;
    // SAFETY: fresh memblock memory of the size the maps need, owned by
    // the chunk for the machine's life.
    let mem = unsafe { carve_maps(maps.cast(), nr_pages) };
    let mut map = ChunkMap::init(mem, nr_pages, start_offset, end_offset)?;
    map.set_populated(0, nr_pages)?;
    let c = boot_zalloc::<P, PcpuChunk>(p, mb, dm, 1, 64)?;
    // SAFETY: fresh memblock memory for one chunk.
    unsafe {
        c.as_ptr().write(PcpuChunk::new(
            map,
            aligned,
            kind,
            core::ptr::null_mut(),
            maps.as_ptr().cast(),
        ))
    };
    Ok(c)
}

/// The groups: CPUs by node, in the order of each node's first CPU.
/// Returns the number of groups; `group_of[cpu]` and `group_cnt[g]` are
/// filled.
fn build_groups(
    cpu_to_node: &[u8],
    group_of: &mut [u8],
    group_cnt: &mut [usize; MAX_NUMNODES],
    node_of_group: &mut [u8; MAX_NUMNODES],
) -> usize {
    let mut group_of_node = [u8::MAX; MAX_NUMNODES];
    let mut nr = 0;
    for (cpu, &node) in cpu_to_node.iter().enumerate() {
        let g = &mut group_of_node[usize::from(node)];
        if *g == u8::MAX {
            *g = nr as u8;
            node_of_group[nr] = node;
            nr += 1;
        }
        group_of[cpu] = *g;
        group_cnt[usize::from(*g)] += 1;
    }
    nr
}

/// `setup_per_cpu_areas()`: the first chunk, the reserved chunk and the
/// layout every later chunk copies.
pub(crate) fn setup_per_cpu_areas<P: Platform>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    input: &FirstChunkInput<'_>,
) -> Result<PcpuState> {
    let nr_cpus = input.nr_cpus;
    let group_of = boot_zalloc::<P, u8>(p, mb, dm, nr_cpus, 8)?;
    // SAFETY: `nr_cpus` zeroed bytes just allocated, ours for the call.
    let group_of = unsafe { core::slice::from_raw_parts_mut(group_of.as_ptr(), nr_cpus) };
    let mut group_cnt = [0usize; MAX_NUMNODES];
    let mut node_of_group = [0u8; MAX_NUMNODES];
    let nr_groups = build_groups(
        input.cpu_to_node,
        group_of,
        &mut group_cnt,
        &mut node_of_group,
    );
    let unit_offsets = boot_zalloc::<P, usize>(p, mb, dm, nr_cpus, 64)?;
    let embed = build_alloc_info(
        PERCPU_STATIC_SIZE,
        PERCPU_MODULE_RESERVE,
        PERCPU_DYNAMIC_RESERVE,
        ATOM_SIZE,
        &group_cnt[..nr_groups],
        nr_cpus,
    );
    let zeroed = p.memory_is_zeroed();
    let (ai, base, span, nr_units, fallback) = match embed_units(
        p,
        mb,
        dm,
        &embed,
        input,
        group_of,
        &group_cnt[..nr_groups],
        &node_of_group,
        unit_offsets,
        zeroed,
    ) {
        Ok((base, span, nr_units)) => {
            report!(
                p,
                Level::Info,
                "percpu: Embedded {} pages/cpu s{} r{} d{} u{}",
                embed.size_sum() / PAGE_SIZE,
                embed.static_size,
                embed.reserved_size,
                embed.dyn_size,
                embed.unit_size
            );
            (embed, base, span, nr_units, false)
        }
        Err(e) => {
            report!(
                p,
                Level::Warning,
                "percpu: embed allocator failed ({}), falling back to page size",
                e.to_errno()
            );
            let ai = build_alloc_info(
                PERCPU_STATIC_SIZE,
                PERCPU_MODULE_RESERVE,
                PERCPU_DYNAMIC_RESERVE,
                PAGE_SIZE,
                &[nr_cpus],
                nr_cpus,
            );
            let (base, span) = page_units(p, mb, dm, &ai, nr_cpus, unit_offsets, zeroed)?;
            report!(
                p,
                Level::Info,
                "percpu: {} 4K pages/cpu s{} r{} d{}",
                ai.unit_size / PAGE_SIZE,
                ai.static_size,
                ai.reserved_size,
                ai.dyn_size
            );
            (ai, base, span, nr_cpus, true)
        }
    };
    report!(
        p,
        Level::Debug,
        "pcpu-alloc: s{} r{} d{} u{} alloc={}*{}",
        ai.static_size,
        ai.reserved_size,
        ai.dyn_size,
        ai.unit_size,
        ai.upa,
        ai.alloc_size / ai.upa.max(1)
    );
    let reserved = alloc_first_chunk(
        p,
        mb,
        dm,
        base + ai.static_size,
        ai.reserved_size,
        Kind::Reserved,
    )?;
    let first = alloc_first_chunk(
        p,
        mb,
        dm,
        base + ai.static_size + ai.reserved_size,
        ai.dyn_size,
        Kind::First,
    )?;
    // SAFETY: both chunks are memblock memory owned by the machine for good.
    let chunks = unsafe {
        Chunks::new(
            ai.unit_size,
            first,
            Some(reserved),
            ai.size_sum() / PAGE_SIZE,
        )
    };
    // `setup_per_cpu_areas()`: each CPU's offset for its base register.
    for cpu in 0..nr_cpus {
        // SAFETY: `nr_cpus` entries, every one written above; each is the
        // unit offset of this machine's CPU `cpu`, the machine that will
        // call `this_cpu_add` on this platform (boot is its only caller).
        unsafe { p.set_per_cpu_offset(cpu, *unit_offsets.as_ptr().add(cpu)) };
    }
    Ok(PcpuState {
        layout: Layout {
            ai,
            base,
            // SAFETY: `nr_cpus` entries, all written above, in memblock
            // memory the machine keeps; never written again.
            unit_offsets: unsafe { crate::percpu_defs::PerCpuOffsets::new(unit_offsets, nr_cpus) },
            span,
            nr_groups: if fallback { 1 } else { nr_groups },
            nr_units,
            page_fallback: fallback,
        },
        lock: spin::Mutex::new(chunks),
        alloc_mutex: super::SleepMutex::new(),
        atomic_alloc_failed: core::sync::atomic::AtomicBool::new(false),
        balance_pending: core::sync::atomic::AtomicBool::new(false),
        memcg: input.memcg,
        debug_preempt: input.debug_preempt,
    })
}

/// `pcpu_embed_first_chunk()`'s allocations: one per group, on its node,
/// atom-aligned; the unit tails and unused units go back. Fills
/// `unit_offsets`; answers `(pcpu_base_addr, span, nr_units)`.
#[allow(clippy::too_many_arguments)]
fn embed_units<P: Platform>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    ai: &AllocInfo,
    input: &FirstChunkInput<'_>,
    group_of: &[u8],
    group_cnt: &[usize],
    node_of_group: &[u8; MAX_NUMNODES],
    unit_offsets: NonNull<usize>,
    zeroed: bool,
) -> Result<(usize, usize, usize)> {
    let nr_groups = group_cnt.len();
    let mut ptrs = [0u64; MAX_NUMNODES];
    let mut sizes = [0usize; MAX_NUMNODES];
    for g in 0..nr_groups {
        sizes[g] = group_cnt[g].next_multiple_of(ai.upa) * ai.unit_size;
        match mb.phys_alloc_try_nid(p, sizes[g] as u64, ai.atom_size as u64, node_of_group[g]) {
            Ok(pa) if dm.va(pa + sizes[g] as u64 - 1).is_some() => ptrs[g] = pa,
            Ok(pa) => {
                let _ = mb.phys_free(p, pa, sizes[g] as u64);
                undo(p, mb, &ptrs[..g], &sizes[..g]);
                return Err(Error::NoMemory);
            }
            Err(e) => {
                undo(p, mb, &ptrs[..g], &sizes[..g]);
                return Err(e);
            }
        }
    }
    let base = ptrs[..nr_groups].iter().copied().min().unwrap_or(0);
    let max_end = (0..nr_groups)
        .map(|g| (ptrs[g] - base) as usize + sizes[g])
        .max()
        .unwrap_or(0);
    if max_end > input.vmalloc_total / 4 * 3 {
        report!(
            p,
            Level::Warning,
            "percpu: max_distance={:#x} too large for vmalloc space {:#x}",
            max_end,
            input.vmalloc_total
        );
        undo(p, mb, &ptrs[..nr_groups], &sizes[..nr_groups]);
        return Err(Error::InvalidArgument);
    }
    // Units: the CPUs of each group in order, then unused ones.
    let mut next_unit = [0usize; MAX_NUMNODES];
    for (cpu, &g) in group_of.iter().enumerate() {
        let g = usize::from(g);
        let off = (ptrs[g] - base) as usize + next_unit[g] * ai.unit_size;
        next_unit[g] += 1;
        // SAFETY: `nr_cpus` slots allocated by the caller.
        unsafe { *unit_offsets.as_ptr().add(cpu) = off };
        if !zeroed {
            let va = dm.va(base + off as u64).ok_or(Error::NoMemory)?;
            // SAFETY: the unit's used part, reserved above, in the direct map.
            unsafe { core::ptr::write_bytes(va as *mut u8, 0, ai.size_sum()) };
        }
    }
    let mut nr_units = 0;
    // Each freed tail leaves the unit's used part a reserved island of its
    // own. Linux's memblock grows its tables; kmem's are fixed
    // (INIT_MEMBLOCK_REGIONS), so with more units than free table slots the
    // tails stay reserved (at most unit_size - size_sum bytes per CPU).
    let used = mb.reserved().regions().len();
    let room = crate::memblock::INIT_MEMBLOCK_REGIONS.saturating_sub(used + 8);
    let free_tails = nr_cpus_of(group_cnt) <= room;
    for g in 0..nr_groups {
        let units = sizes[g] / ai.unit_size;
        nr_units += units;
        for u in 0..units {
            let start = ptrs[g] + (u * ai.unit_size) as u64;
            // An unused unit goes back whole; a used one keeps size_sum.
            let keep = if u < group_cnt[g] {
                if free_tails {
                    ai.size_sum()
                } else {
                    ai.unit_size
                }
            } else {
                0
            };
            if ai.unit_size > keep {
                mb.phys_free(p, start + keep as u64, (ai.unit_size - keep) as u64)?;
            }
        }
    }
    let va = dm.va(base).ok_or(Error::NoMemory)?;
    let _ = input.nr_cpus;
    Ok((va, max_end, nr_units))
}

/// CPUs over all groups.
fn nr_cpus_of(group_cnt: &[usize]) -> usize {
    group_cnt.iter().sum()
}

/// Give back the group allocations made so far.
fn undo<P: Platform>(p: &P, mb: &mut Memblock, ptrs: &[u64], sizes: &[usize]) {
    for (pa, size) in ptrs.iter().zip(sizes) {
        let _ = mb.phys_free(p, *pa, *size as u64);
    }
}

/// The page fallback: every unit, `unit_size` bytes apart, in one
/// page-aligned allocation (kmem keeps them in the direct map where Linux
/// maps pages into the vmalloc space). Answers `(base, span)`.
fn page_units<P: Platform>(
    p: &P,
    mb: &mut Memblock,
    dm: &DirectMap,
    ai: &AllocInfo,
    nr_cpus: usize,
    unit_offsets: NonNull<usize>,
    zeroed: bool,
) -> Result<(usize, usize)> {
    let span = ai.unit_size * nr_cpus;
    let pa = mb.phys_alloc_range(p, span as u64, PAGE_SIZE as u64, 0, dm.end)?;
    let base = dm.va(pa).ok_or(Error::NoMemory)?;
    if !zeroed {
        // SAFETY: just reserved, inside the direct map.
        unsafe { core::ptr::write_bytes(base as *mut u8, 0, span) };
    }
    for cpu in 0..nr_cpus {
        // SAFETY: `nr_cpus` slots allocated by the caller.
        unsafe { *unit_offsets.as_ptr().add(cpu) = cpu * ai.unit_size };
    }
    Ok((base, span))
}
