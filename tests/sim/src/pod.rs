// SPDX-License-Identifier: BSD-2-Clause
//! Xen populate-on-demand (PoD) for a PVH domain built with memory <
//! maxmem. Sources, all xen-project/xen @c447b730 unless named:
//!
//! - libxl_create.c: PoD is on for every non-PV guest whose target is
//!   below its maximum (`pod_enabled`, line 1187).
//! - libxl_dom.c `libxl__build_hvm` (mem_size from max_memkb, target_pages
//!   from target_memkb, line 1121) and libxl_x86.c
//!   `domain_construct_memmap`: the memory map's RAM covers maxmem.
//! - xg_dom_x86.c `meminit_hvm` (line 1369-1470): nr_pages > target_pages
//!   adds XENMEMF_populate_on_demand, `xc_domain_set_pod_target` fills the
//!   PoD cache to the target first, then every RAM gfn is "populated" with
//!   that flag, i.e. marked PoD (memory.c populate_physmap line 281,
//!   `guest_physmap_mark_populate_on_demand`).
//! - xen/arch/x86/mm/p2m-pod.c: the accounting `tot_pages == P + pod.count`
//!   and `entry_count == B - P` (comment above `p2m_pod_set_mem_target`);
//!   `p2m_pod_demand_populate`: a guest access to a PoD gfn takes a page
//!   from the cache (zeroed when it entered the cache, `p2m_pod_cache_add`),
//!   with an emergency sweep for zero pages when the cache is empty, and
//!   `domain_crash` with "out of PoD memory!" when it stays empty;
//!   `decrease_reservation` (p2m_pod_decrease_reservation): a PoD gfn is
//!   dropped (entry_count--); a populated gfn is stolen into the cache
//!   while entry_count > count; afterwards a cache larger than the entries
//!   is trimmed to them (`out_entry_check`); `p2m_pod_set_mem_target`.
//! - xen/arch/x86/mm/p2m.c `p2m_add_page` (line 700-803): populate_physmap
//!   over a PoD gfn replaces the entry (entry_count -= pod_count).
//! - libxl_mem.c `libxl_set_memory_target`: after raising Xen's maximum,
//!   `xc_domain_set_pod_target((new_target + LIBXL_MAXMEM_CONSTANT) / 4)`
//!   for every non-PV domain; a failure aborts the transaction (the
//!   target is not written).

use crate::frames::FrameBits;
use crate::kernel::{dmesg_lock, Kernel};

/// POD_SWEEP_LIMIT (p2m-pod.c): gfns an emergency sweep looks at before
/// it stops once it found something.
const POD_SWEEP_LIMIT: usize = 1024;

/// The PoD state of a domain (`struct p2m_domain.pod`).
#[derive(Default)]
pub(crate) struct Pod {
    /// gfns whose p2m entry is p2m_populate_on_demand (entry_count is
    /// their number).
    pub entries: FrameBits,
    /// Pages in the PoD cache (pod.count); they count in tot_pages.
    pub count: u64,
    /// Counters the tests read.
    pub stats: PodStats,
}

/// What PoD did, for tests and the demo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodStats {
    /// Outstanding PoD entries.
    pub entries: u64,
    /// Pages in the PoD cache.
    pub cache: u64,
    /// gfns populated from the cache by a guest access.
    pub demand_populated: u64,
    /// Of those, populated by pmap_zero_page (a scrub of a frame that
    /// held nothing).
    pub populated_by_zeroing: u64,
    /// Zeroed pages the emergency sweep took back into the cache.
    pub swept: u64,
    /// PoD gfns handed back with decrease_reservation.
    pub entries_given: u64,
    /// Populated pages decrease_reservation stole into the cache.
    pub stolen: u64,
}

/// Why a frame is touched (for the crash message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Touch {
    Kernel,
    ZeroPage,
    PageAllocZero,
}

impl Touch {
    fn what(self) -> &'static str {
        match self {
            Touch::Kernel => "a kernel allocation",
            Touch::ZeroPage => "pmap_zero_page",
            Touch::PageAllocZero => "uvm_pagealloc(UVM_PGA_ZERO)",
        }
    }
}

/// Xen crashed the domain: reported like the simulator's other fatal
/// outcomes (a line on stderr, the process aborts, the test fails).
fn domain_crash(msg: &str) -> ! {
    {
        let mut d = dmesg_lock();
        d.lines.push(format!("(XEN) {msg}"));
        d.stamps.push(String::new());
    }
    eprintln!("\n*** SIMULATED DOMAIN CRASH: (XEN) {msg}");
    eprintln!("*** (Xen destroyed the domain: populate-on-demand ran out; aborting)\n");
    std::process::abort();
}

impl Kernel {
    /// Whether `gfn` is a PoD entry (usable by the guest, not populated).
    pub(crate) fn pod_entry(&self, gfn: u64) -> bool {
        self.pod.as_ref().is_some_and(|p| p.entries.contains(gfn))
    }

    /// Pages in the PoD cache (0 without PoD).
    pub(crate) fn pod_cache(&self) -> u64 {
        self.pod.as_ref().map_or(0, |p| p.count)
    }

    /// A guest write to `gfn` (p2m_pod_demand_populate). No-op unless
    /// `gfn` is a PoD entry.
    pub(crate) fn pod_touch(&mut self, gfn: u64, why: Touch) {
        if !self.pod_entry(gfn) {
            return;
        }
        if self.pod_cache() == 0 {
            self.pod_emergency_sweep();
        }
        let tot = self.tot_pages;
        let Some(p) = self.pod.as_mut() else { return };
        if p.count == 0 {
            let ents = p.entries.len();
            domain_crash(&format!(
                "p2m_pod_demand_populate: Dom1 out of PoD memory! (tot={tot} ents={ents} dom1) \
                 on {} of gfn {gfn:#x}; domain_crash",
                why.what()
            ));
        }
        p.count -= 1;
        p.entries.remove(gfn);
        p.stats.demand_populated += 1;
        if why == Touch::ZeroPage {
            p.stats.populated_by_zeroing += 1;
        }
        // The page left the cache zeroed (p2m_pod_cache_add clears it).
        self.populated.insert(gfn);
        self.data.remove(gfn);
    }

    /// p2m_pod_emergency_sweep / p2m_pod_zero_check: populated RAM pages
    /// that are all zero become PoD entries again and their pages go to
    /// the cache, from the highest gfn down, until POD_SWEEP_LIMIT pages
    /// were looked at and something was found. Special pages are skipped.
    fn pod_emergency_sweep(&mut self) {
        let zero: Vec<u64> = self
            .populated
            .iter_rev()
            .filter(|g| !self.data.contains(*g) && !self.special.contains(g))
            .take(POD_SWEEP_LIMIT)
            .collect();
        let Some(p) = self.pod.as_mut() else { return };
        for g in zero {
            self.populated.remove(g);
            p.entries.insert(g);
            p.count += 1;
            p.stats.swept += 1;
        }
    }

    /// decrease_reservation of one gfn as p2m_pod_decrease_reservation
    /// handles it. None: PoD leaves it to guest_remove_page. Some(()):
    /// handled (the PoD entry dropped, or the page stolen into the cache).
    pub(crate) fn pod_decrease(&mut self, gfn: u64) -> Option<()> {
        let p = self.pod.as_mut()?;
        if p.entries.is_empty() {
            return None;
        }
        let steal = p.entries.len() > p.count;
        if p.entries.remove(gfn) {
            p.stats.entries_given += 1;
        } else if steal && self.populated.contains(gfn) && !self.special.contains(&gfn) {
            self.populated.remove(gfn);
            self.data.remove(gfn);
            p.count += 1;
            p.stats.stolen += 1;
        } else {
            return None;
        }
        self.pod_trim();
        Some(())
    }

    /// out_entry_check: a cache larger than the outstanding entries is
    /// cut to them (p2m_pod_set_cache_target), its pages back to Xen.
    fn pod_trim(&mut self) {
        let Some(p) = self.pod.as_mut() else { return };
        let ents = p.entries.len();
        if ents < p.count {
            let extra = p.count - ents;
            p.count = ents;
            self.tot_pages -= extra;
            self.host_free += extra;
        }
    }

    /// populate_physmap over a PoD gfn (p2m_add_page): the entry goes.
    pub(crate) fn pod_replaced(&mut self, gfn: u64) -> bool {
        self.pod.as_mut().is_some_and(|p| p.entries.remove(gfn))
    }

    /// XENMEM_set_pod_target (p2m_pod_set_mem_target). Err: the cache
    /// could not grow (p2m_pod_set_cache_target: -ENOMEM).
    pub(crate) fn pod_set_mem_target(&mut self, target: u64) -> Result<(), i32> {
        let tot = self.tot_pages;
        // alloc_domheap_pages(d, ..) cannot take the domain past
        // max_pages, nor the host past its free memory.
        let room = self.host_free.min(self.max_pages.saturating_sub(tot));
        let Some(p) = self.pod.as_mut() else {
            return Ok(());
        };
        let populated = tot - p.count;
        let ents = p.entries.len();
        if populated > 0 && ents == 0 {
            return Ok(());
        }
        if target < tot {
            return Ok(());
        }
        let mut pod_target = target - populated;
        if populated > 0 && pod_target > ents {
            pod_target = ents;
        }
        if pod_target <= p.count {
            return Ok(());
        }
        let want = pod_target - p.count;
        let got = want.min(room);
        p.count += got;
        self.tot_pages += got;
        self.host_free -= got;
        if got < want {
            return Err(12);
        }
        Ok(())
    }

    pub(crate) fn pod_stats(&self) -> Option<PodStats> {
        self.pod.as_ref().map(|p| PodStats {
            entries: p.entries.len(),
            cache: p.count,
            ..p.stats
        })
    }
}
