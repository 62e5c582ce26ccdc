// SPDX-License-Identifier: BSD-2-Clause
//! The kernel-assisted flavour's growth interfaces (docs/kernel-growth.md
//! sections 3 to 5), exactly as that document specifies them and nothing
//! more. No NetBSD kernel has them: they are the proposal, modelled so
//! that the driver's use of them can be tested. The module never links
//! against them; `ksyms_getval` (ksync.rs) hands out these functions'
//! addresses for the names of section 6.
//!
//! What the model keeps per domain ([`GrowthState`]):
//! - PV: the end of the grown p2m, which is also the published
//!   `shared_info->arch.max_pfn` and `pmap_pa_end` (section 4). A stock
//!   kernel publishes the boot end and never moves it
//!   (hypervisor_machdep.c 1.39 `build_p2m_frame_list_list`,
//!   `update_p2m_frame_list_list`: `arch.max_pfn = xen_start_info.nr_pages`).
//! - PVH: `pmap_direct_end` (pmap.c 1.414 `pmap_init_directmap` maps to
//!   the end of boot memory, once) and the `iomem_ex` extent that
//!   `xenmem_alloc_pa` allocates from (xenmem.c 1.4).
//! - Both: which segments were hot-added, and the bytes of their vm_page
//!   arrays (section 3.1: one array per segment, freed by remove).

use std::collections::BTreeSet;
use std::os::raw::{c_int, c_ulong};

use crate::config::{Flavour, Mode};
use crate::kernel::{kernel_panic, physmem, uvmexp, with, Kernel, VmPage, PAGE_SHIFT, PG_MODULE};
use crate::stall::stall_point;

const EINVAL: c_int = 22;
const EEXIST: c_int = 17;
const ENOENT: c_int = 2;
const EBUSY: c_int = 16;
const ENOMEM: c_int = 12;
const ERANGE: c_int = 34;

/// One p2m leaf page holds 512 entries (kernel-growth.md 4.3: `arch.max_pfn`
/// is raised to a whole leaf).
pub(crate) const P2M_LEAF: u64 = 512;
/// The direct map is built of 2 MiB pages (pmap.c 1.414).
const DIRECT_MAP_PAGE: u64 = 512;
/// xenmem.c 1.4 `xenmem_alloc_pa`: `extent_alloc_subregion(iomem_ex,
/// 0x100000000UL, MAXIOMEM, ...)` on _LP64: ranges only above 4 GiB.
const XENMEM_FLOOR_PFN: u64 = 0x10_0000;
/// A grant-mapping range that a backend's `xen_shm_map` took from
/// `xenmem_alloc_pa` before the module loaded (xen_shm_machdep.c 1.18:
/// `nentries * PAGE_SIZE`, PAGE_SIZE aligned, on !XENPV); 8 pages here.
const GRANT_RANGE_PAGES: u64 = 8;

/// The growth state of the simulated kernel.
#[derive(Debug, Default)]
pub(crate) struct GrowthState {
    /// PV: the p2m end the kernel publishes as `arch.max_pfn` (and its
    /// `pmap_pa_end`), in the simulator's frame numbers.
    pub p2m_end: u64,
    /// PV: where the boot p2m ended (the builder's `nr_pages`, in the
    /// simulator's frame numbers: its layout keeps frames 0-255 out of
    /// UVM, so this is `nr_pages` + 256).
    pub boot_end: u64,
    /// PVH: `pmap_direct_end`, as a frame number.
    pub direct_end: u64,
    /// PVH: ranges taken in `iomem_ex` (frames, end exclusive): RAM, the
    /// grant-mapping range, and every `xenmem_alloc_pa` result not freed.
    pub iomem: BTreeSet<(u64, u64)>,
    /// The grant-mapping range (PVH).
    pub grant: Option<(u64, u64)>,
    /// Segments added with `uvm_physseg_hotplug_add` and not removed.
    pub hot: BTreeSet<(u64, u64)>,
    /// Bytes of the vm_page arrays of hot-added segments (freed by
    /// remove; a stock plug's slab is never freed: uvm.rs `Slab`).
    pub array_bytes: u64,
    /// Calls, for tests: p2m grows, direct-map grows, xenmem allocations
    /// and frees, adds, removes.
    pub calls: GrowthCalls,
}

/// How often each interface was called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrowthCalls {
    pub p2m_grow: u64,
    pub growdirectmap: u64,
    pub xenmem_alloc: u64,
    pub xenmem_free: u64,
    pub hotplug_add: u64,
    pub hotplug_remove: u64,
}

impl GrowthState {
    /// The state at boot: p2m and direct map end with boot memory; PVH:
    /// `iomem_ex` holds the RAM (x86_machdep.c 1.105 `x86_parse_clusters`
    /// enters Memory entries) and, on the assisted kernel, one
    /// grant-mapping range a backend took before the module loaded.
    pub(crate) fn boot(k: &Kernel) -> GrowthState {
        let top = k.segs.iter().map(|s| s.end).max().unwrap_or(0);
        let mut g = GrowthState {
            p2m_end: top,
            boot_end: top,
            direct_end: top.div_ceil(DIRECT_MAP_PAGE) * DIRECT_MAP_PAGE,
            ..GrowthState::default()
        };
        if k.cfg.mode == Mode::Pvh {
            for s in &k.segs {
                g.iomem.insert((s.start, s.end));
            }
            if k.cfg.flavour != Flavour::Stock {
                if let Some(r) = g.first_fit(GRANT_RANGE_PAGES, 1) {
                    g.iomem.insert(r);
                    g.grant = Some(r);
                }
            }
        }
        g
    }

    /// extent_alloc_subregion(9) first fit above 4 GiB, `align` frames.
    fn first_fit(&self, n: u64, align: u64) -> Option<(u64, u64)> {
        let mut start = XENMEM_FLOOR_PFN.div_ceil(align) * align;
        for &(s, e) in &self.iomem {
            if e <= start {
                continue;
            }
            if start + n <= s {
                break;
            }
            start = e.div_ceil(align) * align;
        }
        (start + n <= crate::kernel::MAX_GPFN).then_some((start, start + n))
    }
}

/// Whether the model lets stock `uvm_physseg_plug`/`unplug` run after boot
/// (only with `DomainConfig::plain_plug_after_boot`, for tests that show
/// what it breaks); otherwise, on the assisted kernel, a call is the
/// contract violation of kernel-growth.md section 3 ("the two new calls
/// are the only way to change the segment set after uvm_page_init") and
/// a simulated panic.
pub(crate) fn check_plain_plug(k: &Kernel, what: &str) {
    if k.cfg.flavour != Flavour::Stock && !k.cfg.plain_plug_after_boot && k.booted {
        kernel_panic(&format!(
            "{what} after uvm_page_init on the kernel-assisted flavour: unlocked, \
             p2m/direct map not grown, physmem not kept (use uvm_physseg_hotplug_add/remove, \
             docs/kernel-growth.md section 3)"
        ));
    }
}

/// `xpmap_p2m_limit()` (kernel-growth.md 4.2): frames the reserved p2m
/// covers, here the model's p2m table capacity. Constant after boot.
pub(crate) extern "C" fn sim_xpmap_p2m_limit() -> u64 {
    with(|k| k.p2m_cap as u64)
}

/// `xpmap_p2m_grow(pfn_end)` (kernel-growth.md 4.3): EINVAL for 0, ERANGE
/// past the limit; raises the p2m end, `arch.max_pfn` and `pmap_pa_end`
/// to `pfn_end` rounded up to a whole leaf, never lowers them.
pub(crate) extern "C" fn sim_xpmap_p2m_grow(pfn_end: u64) -> c_int {
    stall_point("p2m_grow");
    with(|k| {
        k.growth.calls.p2m_grow += 1;
        if k.cfg.mode != Mode::Pv {
            kernel_panic("xpmap_p2m_grow in a domain that is not PV");
        }
        if pfn_end == 0 {
            return EINVAL;
        }
        if pfn_end > k.p2m_cap as u64 {
            return ERANGE;
        }
        let end = pfn_end.div_ceil(P2M_LEAF) * P2M_LEAF;
        k.growth.p2m_end = k.growth.p2m_end.max(end.min(k.p2m_cap as u64));
        0
    })
}

/// `pmap_growdirectmap(pa_end)` (kernel-growth.md 5.1): maps `[0, pa_end)`
/// rounded up to 2 MiB; ERANGE past the reserved slots (the model's 1 TiB
/// of guest-physical space); never shrinks.
pub(crate) extern "C" fn sim_pmap_growdirectmap(pa_end: u64) -> c_int {
    stall_point("growdirectmap");
    with(|k| {
        k.growth.calls.growdirectmap += 1;
        if k.cfg.mode != Mode::Pvh {
            kernel_panic("pmap_growdirectmap in a domain that is not PVH");
        }
        let end = (pa_end >> PAGE_SHIFT).div_ceil(DIRECT_MAP_PAGE) * DIRECT_MAP_PAGE;
        if end > crate::kernel::MAX_GPFN {
            return ERANGE;
        }
        k.growth.direct_end = k.growth.direct_end.max(end);
        crate::dmap::publish_end(k.growth.direct_end);
        0
    })
}

/// `xenmem_alloc_pa(size, align, waitok)` (xenmem.c 1.4): first fit in
/// `iomem_ex` above 4 GiB; 0 and the kernel's line on failure. The model
/// refuses sizes that are not whole pages (the driver asks for segments).
pub(crate) extern "C" fn sim_xenmem_alloc_pa(size: c_ulong, align: c_ulong, _waitok: bool) -> u64 {
    let r = with(|k| {
        k.growth.calls.xenmem_alloc += 1;
        if k.cfg.mode != Mode::Pvh {
            kernel_panic("xenmem_alloc_pa on a PV domain (the driver uses it only on PVH)");
        }
        let n = size >> PAGE_SHIFT;
        let al = (align >> PAGE_SHIFT).max(1);
        if n == 0 || !size.is_multiple_of(1 << PAGE_SHIFT) {
            return None;
        }
        if k.faults.xenmem_fail {
            k.faults_fired += 1;
            return None;
        }
        let r = k.growth.first_fit(n, al)?;
        k.growth.iomem.insert(r);
        Some(r.0 << PAGE_SHIFT)
    });
    match r {
        Some(pa) => pa,
        None => {
            // xenmem.c 1.4 prints the extent(9) error.
            crate::kernel::dmesg_append("xenmem_alloc_pa: failed 12\n");
            0
        }
    }
}

/// `xenmem_free_pa(start, size)` (xenmem.c 1.4): returns the range to
/// `iomem_ex`. Freeing a range that was never allocated, or one a live
/// segment still uses, is a driver bug: panic.
pub(crate) extern "C" fn sim_xenmem_free_pa(start: u64, size: c_ulong) {
    with(|k| {
        k.growth.calls.xenmem_free += 1;
        let r = (start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT);
        if k.growth.hot.iter().any(|&(s, e)| s < r.1 && r.0 < e) {
            kernel_panic(&format!(
                "xenmem_free_pa: [{:#x}, {:#x}) is still a UVM segment",
                r.0, r.1
            ));
        }
        if let Some(f) = (r.0..r.1).find(|&f| k.populated.contains(f)) {
            kernel_panic(&format!(
                "xenmem_free_pa: frame {f:#x} of [{:#x}, {:#x}) is still populated",
                r.0, r.1
            ));
        }
        if !k.growth.iomem.remove(&r) {
            kernel_panic(&format!(
                "xenmem_free_pa: [{:#x}, {:#x}) was not allocated by xenmem_alloc_pa",
                r.0, r.1
            ));
        }
    })
}

/// `uvm_physseg_hotplug_add(pfn, npages)` (kernel-growth.md 3.1). EINVAL
/// (0 pages, overflow), EEXIST (overlaps a segment), ERANGE (PV: past the
/// grown p2m end; PVH: past `pmap_direct_end`), ENOMEM (fault injection:
/// the node or array). Every frame must be backed, because the call puts
/// every page on the free lists (a driver bug otherwise: panic); PVH: the
/// range must lie in what `xenmem_alloc_pa` handed out, never over RAM,
/// the grant range or the special pages (panic). Raises `physmem` and
/// `uvmexp.npages` by `npages`. The model's state lock stands for the
/// proposed writer lock and the readers' pserialize section (3.3).
pub(crate) extern "C" fn sim_uvm_physseg_hotplug_add(pfn: u64, npages: u64) -> c_int {
    stall_point("physseg_plug");
    with(|k| {
        k.growth.calls.hotplug_add += 1;
        let Some(end) = pfn.checked_add(npages).filter(|_| npages != 0) else {
            return EINVAL;
        };
        if k.segs.iter().any(|s| s.start < end && pfn < s.end) {
            return EEXIST;
        }
        let limit = match k.cfg.mode {
            Mode::Pv => k.growth.p2m_end,
            _ => k.growth.direct_end,
        };
        if end > limit {
            return ERANGE;
        }
        if k.faults.plug_fail {
            k.faults_fired += 1;
            return ENOMEM;
        }
        if k.cfg.mode == Mode::Pvh {
            let placed = k.growth.iomem.iter().any(|&(s, e)| s <= pfn && end <= e)
                && k.growth.grant.is_none_or(|(s, e)| end <= s || e <= pfn)
                && !k.special.iter().any(|&f| pfn <= f && f < end);
            if !placed {
                kernel_panic(&format!(
                    "uvm_physseg_hotplug_add: [{pfn:#x}, {end:#x}) was not placed by \
                     xenmem_alloc_pa (it may cover RAM, RESERVED, ACPI or grant frames)"
                ));
            }
        }
        if let Some(f) = (pfn..end).find(|&f| !k.backed(f)) {
            kernel_panic(&format!(
                "uvm_physseg_hotplug_add: unbacked frame {f:#x} of [{pfn:#x}, {end:#x}) \
                 would go on the free lists"
            ));
        }
        let pgs = k.new_page_array(pfn, npages);
        k.insert_seg(pfn, end, pgs);
        k.growth.hot.insert((pfn, end));
        k.growth.array_bytes += npages * std::mem::size_of::<VmPage>() as u64;
        k.free.insert_range(pfn, end);
        physmem.set(physmem.get() + npages);
        let np = uvmexp.get().npages + npages as i32;
        k.sync_uvmexp(np);
        0
    })
}

/// `uvm_physseg_hotplug_remove(pfn, npages)` (kernel-growth.md 3.2).
/// ENOENT (no hot-added segment with exactly these bounds), EBUSY (a page
/// free or not the caller's; nothing changed). Then the segment goes,
/// `physmem` and `uvmexp.npages` drop by `npages`, the array is freed
/// (its vm_pages become "gone": a later use panics).
pub(crate) extern "C" fn sim_uvm_physseg_hotplug_remove(pfn: u64, npages: u64) -> c_int {
    stall_point("physseg_unplug");
    with(|k| {
        k.growth.calls.hotplug_remove += 1;
        let end = pfn.saturating_add(npages);
        if !k.growth.hot.contains(&(pfn, end)) {
            return ENOENT;
        }
        if k.faults.unplug_fail {
            k.faults_fired += 1;
            return EBUSY;
        }
        if (pfn..end).any(|f| k.page_state(f) != Some(PG_MODULE)) {
            return EBUSY;
        }
        // The vm_pages are "gone" once no segment points at them
        // (Kernel::check_page).
        let Some(i) = k.seg_of(pfn) else {
            kernel_panic("uvm_physseg_hotplug_remove: hot-added segment vanished");
        };
        k.segs.remove(i);
        // PHYS_TO_VM_PAGE reads the published page map without the state
        // lock (uvm.rs PageMap): without a new one it would still find the
        // removed segment's vm_pages.
        k.publish_page_map();
        k.growth.hot.remove(&(pfn, end));
        k.growth.array_bytes -= npages * std::mem::size_of::<VmPage>() as u64;
        k.module_pages -= npages;
        physmem.set(physmem.get() - npages);
        let np = uvmexp.get().npages - npages as i32;
        k.sync_uvmexp(np);
        0
    })
}

/// PVH: `pmap_zero_page` of a frame past `pmap_direct_end` faults in the
/// real kernel (pmap.c 1.414: the direct map ends there): panic.
pub(crate) fn check_direct_map(k: &Kernel, pfn: u64) {
    if k.cfg.mode == Mode::Pvh && pfn >= k.growth.direct_end && k.booted {
        kernel_panic(&format!(
            "pmap_zero_page: frame {pfn:#x} past pmap_direct_end {:#x}: fatal page fault",
            k.growth.direct_end
        ));
    }
}

/// The address ksyms hands out for a growth interface name.
pub(crate) fn symbol(name: &str) -> Option<c_ulong> {
    let a = match name {
        "uvm_physseg_hotplug_add" => {
            sim_uvm_physseg_hotplug_add as extern "C" fn(u64, u64) -> c_int as usize
        }
        "uvm_physseg_hotplug_remove" => {
            sim_uvm_physseg_hotplug_remove as extern "C" fn(u64, u64) -> c_int as usize
        }
        "xpmap_p2m_limit" => sim_xpmap_p2m_limit as extern "C" fn() -> u64 as usize,
        "xpmap_p2m_grow" => sim_xpmap_p2m_grow as extern "C" fn(u64) -> c_int as usize,
        "pmap_growdirectmap" => sim_pmap_growdirectmap as extern "C" fn(u64) -> c_int as usize,
        "xenmem_alloc_pa" => {
            sim_xenmem_alloc_pa as extern "C" fn(c_ulong, c_ulong, bool) -> u64 as usize
        }
        "xenmem_free_pa" => sim_xenmem_free_pa as extern "C" fn(u64, c_ulong) as usize,
        _ => return None,
    };
    Some(a as c_ulong)
}

/// Figures for tests and `sim stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrowthStats {
    /// PV: the published p2m end (`arch.max_pfn`).
    pub p2m_end: u64,
    /// PVH: `pmap_direct_end` as a frame.
    pub direct_end: u64,
    /// Hot-added segments now.
    pub hot_segments: u64,
    /// Bytes of their vm_page arrays.
    pub array_bytes: u64,
    /// Calls of each interface.
    pub calls: GrowthCalls,
    /// PVH: the grant-mapping range, if any.
    pub grant: Option<(u64, u64)>,
}

pub(crate) fn stats(k: &Kernel) -> GrowthStats {
    GrowthStats {
        p2m_end: k.growth.p2m_end,
        direct_end: k.growth.direct_end,
        hot_segments: k.growth.hot.len() as u64,
        array_bytes: k.growth.array_bytes,
        calls: k.growth.calls,
        grant: k.growth.grant,
    }
}
