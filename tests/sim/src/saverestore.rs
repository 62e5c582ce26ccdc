// SPDX-License-Identifier: BSD-2-Clause
//! Save and restore of the simulated domain (`xl save` followed by `xl
//! restore`, or a migration), for every mode and kernel flavour. The
//! module's own memory lives in this process and cannot be rolled back, so
//! the two run as one step under the state lock: the guest is frozen at
//! one instant between two kernel-service calls, saved, and restored.
//!
//! The rules, each from the source read:
//!
//! - **Suspend veto.** `xen_suspend_domain` calls
//!   `pmf_system_suspend(PMF_Q_NONE)` and on failure `HYPERVISOR_crash()`
//!   ("devices suspend failed"; xen_machdep.c 1.27.4.1, the same in
//!   1.13.2.1). A device that vetoes crashes the domain. balloon.kmod
//!   registers no pmf(9) handler, so it never vetoes; the veto is a fault
//!   ([`crate::Faults::suspend_veto`]) standing for another device's.
//! - **PV save keeps only frames below `arch.max_pfn`.** The save side
//!   reads `max_pfn = shared_info->arch.max_pfn - 1` and walks the p2m
//!   frame list up to it (xen-project/xen tools/libs/guest
//!   xg_sr_save_x86_pv.c `map_p2m`, after the "max_pfn setting in
//!   map_p2m()" fix; xg_sr_save.c saves only pfns below `p2m_size`, at
//!   c447b7308b13). A stock NetBSD publishes `arch.max_pfn =
//!   xen_start_info.nr_pages` at attach and resume (hypervisor_machdep.c
//!   1.39); the assisted kernel publishes its grown p2m end
//!   (docs/kernel-growth.md 4.3, 4.4). A frame mapped above it is not in
//!   the image: after restore its page has no memory behind it (the
//!   model leaves the p2m entry invalid, so `Domain::check` reports every
//!   such page in use or free). An MFN the domain owns but has not yet
//!   entered in the p2m is not saved either.
//! - **PV restore sets `nr_pages` to the saved `max_pfn`**
//!   (xg_sr_restore_x86_pv.c: `nr_pages = max_pfn + 1`), gives every
//!   saved frame a new MFN (p2m and m2p rewritten), and the guest resumes.
//!   Stock resume: `xen_prepare_resume` crashes the domain when
//!   `xen_start_info.nr_pages != physmem` (xen_machdep.c 1.27.4.1).
//!   Assisted resume compares with the end it published instead
//!   (kernel-growth.md 4.4).
//! - **PVH save is HVM-style**: every gfn up to the maximum gpfn is saved
//!   (xg_sr_save_x86_hvm.c: `p2m_size` is the number of gpfns), so
//!   nothing is lost; there is no `nr_pages` check on that path (the
//!   guest-side suspend of xen_machdep.c 1.27.4.1 is XENPV-only; the PVH
//!   guest side was not read, so the model resumes it as it was).
//! - After either, xenstore loses the guest's own nodes and every watch
//!   fires again ([`crate::Domain::resume`]).
//!
//! The simulator numbers frames from 256 upwards for UVM (frames 0-255
//! stand for the kernel image and are not backed), so its `nr_pages` is
//! the boot p2m end less 256; the model converts between the two.

use crate::config::{Flavour, Mode};
use crate::frames::FrameBits;
use crate::kernel::{physmem, xen_start_info, Kernel, INVALID_P2M_ENTRY};

/// What a save and restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveReport {
    /// Frames in the image.
    pub saved: u64,
    /// PV: frames mapped at or above `arch.max_pfn`, left out of the
    /// image (their pages have no memory behind them after restore).
    pub lost: Vec<u64>,
    /// PV: MFNs the domain owned but had not entered in the p2m (left
    /// out of the image too).
    pub unmapped: u64,
    /// PV: the `arch.max_pfn` the save read (simulator frame numbers).
    pub max_pfn: u64,
    /// PV: `xen_start_info.nr_pages` after restore.
    pub nr_pages: u64,
}

/// Runs a save and a restore; `Err` with the reason when the domain
/// crashed (it stays crashed: [`Kernel::crashed`]).
pub(crate) fn save_restore(k: &mut Kernel) -> Result<SaveReport, String> {
    if let Some(why) = &k.crashed {
        return Err(format!("domain already crashed: {why}"));
    }
    if k.faults.suspend_veto {
        k.faults_fired += 1;
        return Err(crash(
            k,
            "xen_suspend_domain: devices suspend failed (pmf_system_suspend vetoed)",
        ));
    }
    let report = match k.cfg.mode {
        Mode::Pv => save_restore_pv(k),
        _ => SaveReport {
            saved: k.backed_frames(),
            ..SaveReport::default()
        },
    };
    if k.cfg.mode == Mode::Pv {
        // The simulator's nr_pages is the p2m end less its 256 unbacked
        // low frames (module docs).
        let offset = k.growth.boot_end.saturating_sub(xen_boot_nr_pages(k));
        let nr_pages = report.max_pfn.saturating_sub(offset);
        xen_start_info.set(crate::kernel::StartInfo { nr_pages });
        let assisted = k.cfg.flavour != Flavour::Stock;
        if assisted {
            if report.max_pfn != k.growth.p2m_end {
                return Err(crash(
                    k,
                    "xen_prepare_resume: nr_pages differs from the p2m end the kernel published",
                ));
            }
        } else if nr_pages != physmem.get() {
            let msg = format!(
                "xen_prepare_resume: xen_start_info.nr_pages {nr_pages} != physmem {}",
                physmem.get()
            );
            return Err(crash(k, &msg));
        }
        return Ok(SaveReport { nr_pages, ..report });
    }
    Ok(report)
}

/// The boot `nr_pages` the model set (physmem at boot).
fn xen_boot_nr_pages(k: &Kernel) -> u64 {
    k.cfg.boot_pages()
}

fn crash(k: &mut Kernel, why: &str) -> String {
    crate::kernel::dmesg_append(&format!("{why}: HYPERVISOR_crash\n"));
    k.crashed = Some(why.to_string());
    why.to_string()
}

/// PV: keep the frames below the published `arch.max_pfn`, with new MFNs;
/// drop every other frame the domain held.
fn save_restore_pv(k: &mut Kernel) -> SaveReport {
    let max_pfn = k.growth.p2m_end;
    let mut mapped = FrameBits::new();
    let mut keep = Vec::new();
    let mut lost = Vec::new();
    for pfn in 0..k.p2m_cap as u64 {
        let m = k.p2m_get(pfn);
        if !k.owned.contains(m) {
            continue;
        }
        mapped.insert(m);
        if pfn < max_pfn {
            keep.push((pfn, m));
        } else {
            lost.push(pfn);
        }
    }
    let unmapped = k.owned.keys().filter(|&m| !mapped.contains(m)).count();
    // The image: which kept frames hold data, read before the old domain
    // goes away.
    let image: Vec<(u64, bool)> = keep
        .iter()
        .map(|&(pfn, m)| (pfn, k.data.contains(m)))
        .collect();
    // The old domain is destroyed: every MFN goes back to the host.
    let old = k.owned.len();
    k.owned.clear();
    k.data.clear();
    k.host_free += old;
    k.tot_pages -= old;
    for &pfn in &lost {
        k.p2m_set(pfn, INVALID_P2M_ENTRY);
    }
    for &(pfn, data) in &image {
        let m = k.next_mfn;
        k.next_mfn += 1;
        k.owned.insert(m, pfn);
        if data {
            k.data.insert(m);
        }
        k.p2m_set(pfn, m);
        k.host_free -= 1;
        k.tot_pages += 1;
    }
    SaveReport {
        saved: image.len() as u64,
        lost,
        unmapped: unmapped as u64,
        max_pfn,
        nr_pages: 0,
    }
}
