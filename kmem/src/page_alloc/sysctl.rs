//! The vm sysctls of the page allocator and what writing them recomputes
//! (`init_per_zone_wmark_min()`, `setup_per_zone_wmarks()`,
//! `setup_per_zone_lowmem_reserve()`, `zone_pcp_update()` and the
//! `/proc/sys/vm` handlers of `mm/page_alloc.c`). The formulas themselves
//! are in [`watermark`], on plain numbers.

use super::watermark::{self, VmSysctl, ZoneInput};
use crate::mmzone::{PgData, ZoneType, MAX_NR_ZONE_TYPES};
use crate::platform::{Level, Platform};
use crate::{report, Error, Kmem, Result};
use core::sync::atomic::Ordering::Relaxed;

impl<P: Platform> Kmem<P> {
    /// `init_per_zone_wmark_min()`: `min_free_kbytes` from the managed
    /// pages (or the user's value), raised as khugepaged's
    /// `set_recommended_min_free_kbytes()` does when transparent huge pages
    /// are on, then every zone's watermarks, reserves and per-CPU list sizes.
    ///
    /// A user value above `INT_MAX` is refused as the sysctl refuses it
    /// (reported, and the computed value kept).
    pub(crate) fn init_per_zone_wmark_min(&self, user: Option<u64>, thp: bool) {
        let user = user.filter(|&v| self.min_free_kbytes_fits(v));
        // Node by node, with no table of every zone: the formulas take sums
        // over the machine's zones (a 64-node machine has 384 zone slots,
        // too many for a kernel stack).
        let per_node = |f: &dyn Fn(&[ZoneInput], &[u64]) -> u64| -> u64 {
            self.nodes()
                .map(|n| {
                    let (zi, k) = zone_inputs(n);
                    let mut high = [0u64; MAX_NR_ZONE_TYPES];
                    for (h, z) in high.iter_mut().zip(n.zones()) {
                        *h = z.high_wmark();
                    }
                    f(&zi[..k], &high[..k])
                })
                .sum()
        };
        let mfk = user.unwrap_or_else(|| {
            watermark::min_free_kbytes_for(per_node(&|z, _| {
                watermark::nr_free_buffer_pages(z, &[])
            }))
        });
        self.sysctl.lock().min_free_kbytes = mfk;
        self.setup_per_zone();
        if user.is_none() && thp {
            // khugepaged's set_recommended_min_free_kbytes() is a later
            // initcall (subsys, after this postcore one): it sees the
            // watermarks just set, and its 5% cap of nr_free_buffer_pages()
            // leaves out each zone's high watermark.
            let raised = watermark::thp_recommended_for(
                per_node(&|z, _| watermark::thp_zones(z)),
                per_node(&watermark::nr_free_buffer_pages),
                mfk,
            );
            if raised > mfk {
                // Silent, as Linux is when no user set min_free_kbytes
                // (it prints "raising min_free_kbytes ..." only then).
                self.sysctl.lock().min_free_kbytes = raised;
                self.setup_per_zone();
            }
        }
    }

    /// `setup_per_zone_wmarks()`, `setup_per_zone_lowmem_reserve()`, the
    /// vmstat thresholds and `zone_pcp_update()` for every zone, from the
    /// current sysctls.
    pub(crate) fn setup_per_zone(&self) {
        let s = *self.sysctl.lock();
        // Watermarks share min_free_kbytes across all lowmem zones of all
        // nodes.
        let lowmem: u64 = self
            .nodes()
            .map(|n| {
                let (zi, k) = zone_inputs(n);
                watermark::lowmem_pages(&zi[..k])
            })
            .sum();
        for node in self.nodes() {
            let (zins, k) = zone_inputs(node);
            let prot = watermark::setup_per_zone_lowmem_reserve(&zins[..k], &s);
            for (zi, z) in node.zones().enumerate() {
                let wm = watermark::zone_wmarks(zins[zi], lowmem, &s);
                z.wmark[0].store(wm.min, Relaxed);
                z.wmark[1].store(wm.low, Relaxed);
                z.wmark[2].store(wm.high, Relaxed);
                z.wmark[3].store(wm.promo, Relaxed);
                // lowmem_reserve is indexed by zone type; the formula by
                // position in the layout.
                for (zj, upper) in node.zones().enumerate() {
                    z.lowmem_reserve[upper.zone_type() as usize].store(prot[zi][zj], Relaxed);
                }
                z.stat_threshold.store(
                    watermark::vmstat_threshold(z.managed_pages(), self.nr_cpus as u64),
                    Relaxed,
                );
                let sizes = watermark::pageset_high_and_batch(
                    z.managed_pages(),
                    wm.low,
                    node.nr_cpus() as u64,
                    &s,
                );
                for cpu in 0..self.nr_cpus {
                    if let Some(pcp) = z.pcp(cpu) {
                        pcp.update(sizes.batch, sizes.high_min, sizes.high_max);
                    }
                }
            }
        }
    }

    /// The vm sysctls in force.
    pub fn sysctl(&self) -> VmSysctl {
        *self.sysctl.lock()
    }

    /// `min_free_kbytes` is an `int`: `proc_dointvec_minmax()` refuses a
    /// write above `INT_MAX` with `EINVAL`, which `sysctl` reports.
    fn min_free_kbytes_fits(&self, kbytes: u64) -> bool {
        if kbytes > MIN_FREE_KBYTES_MAX {
            report!(
                &self.p,
                Level::Err,
                "sysctl: setting key \"vm.min_free_kbytes\": Invalid argument ({kbytes} is above INT_MAX, {MIN_FREE_KBYTES_MAX})"
            );
        }
        kbytes <= MIN_FREE_KBYTES_MAX
    }

    /// Set `vm.min_free_kbytes` and recompute watermarks and per-CPU list
    /// sizes, as writing `/proc/sys/vm/min_free_kbytes` does. 0 and values
    /// above `INT_MAX` are refused with [`Error::InvalidArgument`].
    pub fn set_min_free_kbytes(&self, kbytes: u64) -> Result<()> {
        if kbytes == 0 {
            report!(&self.p, Level::Err, "min_free_kbytes: invalid value 0");
            return Err(Error::InvalidArgument);
        }
        if !self.min_free_kbytes_fits(kbytes) {
            return Err(Error::InvalidArgument);
        }
        self.sysctl.lock().min_free_kbytes = kbytes;
        self.setup_per_zone();
        Ok(())
    }

    /// Set `vm.watermark_scale_factor` (1..=3000, as Linux allows).
    pub fn set_watermark_scale_factor(&self, factor: u64) -> Result<()> {
        if !(1..=3000).contains(&factor) {
            report!(
                &self.p,
                Level::Err,
                "watermark_scale_factor: {factor} is outside 1..3000"
            );
            return Err(Error::InvalidArgument);
        }
        self.sysctl.lock().watermark_scale_factor = factor;
        self.setup_per_zone();
        Ok(())
    }

    /// Set `vm.lowmem_reserve_ratio` (indexed by [`ZoneType`]).
    pub fn set_lowmem_reserve_ratio(&self, ratio: [u64; MAX_NR_ZONE_TYPES]) {
        self.sysctl.lock().lowmem_reserve_ratio = ratio;
        self.setup_per_zone();
    }

    /// Set `vm.percpu_pagelist_high_fraction` (0, or at least 8).
    pub fn set_percpu_pagelist_high_fraction(&self, f: u64) -> Result<()> {
        if f != 0 && f < watermark::MIN_PERCPU_PAGELIST_HIGH_FRACTION {
            report!(
                &self.p,
                Level::Err,
                "percpu_pagelist_high_fraction: {f} is below 8"
            );
            return Err(Error::InvalidArgument);
        }
        self.sysctl.lock().percpu_pagelist_high_fraction = f;
        self.setup_per_zone();
        Ok(())
    }
}

/// The largest `vm.min_free_kbytes` (`INT_MAX`: the sysctl is an `int`).
pub const MIN_FREE_KBYTES_MAX: u64 = i32::MAX as u64;

/// The (type, managed pages) of every zone in the layout of `node`, in
/// `for_each_zone` order, as the watermark formulas take them.
fn zone_inputs(node: &PgData) -> ([ZoneInput; MAX_NR_ZONE_TYPES], usize) {
    let mut v = [ZoneInput {
        ztype: ZoneType::Dma,
        managed: 0,
    }; MAX_NR_ZONE_TYPES];
    let mut n = 0;
    for z in node.zones() {
        v[n] = ZoneInput {
            ztype: z.zone_type(),
            managed: z.managed_pages(),
        };
        n += 1;
    }
    (v, n)
}

#[cfg(test)]
mod tests {
    use super::MIN_FREE_KBYTES_MAX;
    use crate::arena::ArenaPlatform;
    use crate::memory_map::MemRegion;
    use crate::{BootParams, Error, Kmem};

    fn boot(mem: &mut [u8], min_free_kbytes: Option<u64>) -> Kmem<ArenaPlatform<'_>> {
        let p = ArenaPlatform::new(mem, 1);
        let (start, end) = p.usable_range();
        let params = BootParams {
            reserve_low: 0,
            min_free_kbytes,
            ..BootParams::default()
        };
        Kmem::boot(p, &[MemRegion::usable(start, end - start)], &params).unwrap()
    }

    #[test]
    fn min_free_kbytes_above_int_max_is_refused() {
        let mut mem = std::vec![0u8; 8 << 20];
        let k = boot(&mut mem, None);
        let computed = k.sysctl().min_free_kbytes;
        assert_eq!(
            k.set_min_free_kbytes(MIN_FREE_KBYTES_MAX + 1),
            Err(Error::InvalidArgument)
        );
        assert!(k.platform().reported(
            "sysctl: setting key \"vm.min_free_kbytes\": Invalid argument (2147483648 is above INT_MAX, 2147483647)"
        ));
        assert_eq!(k.sysctl().min_free_kbytes, computed, "unchanged");
        drop(k);

        // At boot: refused the same way, and the computed value is kept.
        let k = boot(&mut mem, Some(99_999_999_999));
        assert!(k
            .platform()
            .reported("(99999999999 is above INT_MAX, 2147483647)"));
        assert_eq!(k.sysctl().min_free_kbytes, computed);
        drop(k);
        let k = boot(&mut mem, Some(computed + 1));
        assert_eq!(k.sysctl().min_free_kbytes, computed + 1);
    }
}
