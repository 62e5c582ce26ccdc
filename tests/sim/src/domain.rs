// SPDX-License-Identifier: BSD-2-Clause
//! `Domain`: boots, drives, inspects and tears down the simulated domU.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::frames::{FrameBits, FrameStack, FrameTable};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{DomainConfig, Faults, Mode};
use std::sync::atomic::Ordering;

use crate::kernel::{
    dmesg_lock, hz, lock, new_generation, physmem, uvmexp, vm_guest, with, xen_start_info,
    xpmap_phys_to_machine_mapping, E820Entry, Kernel, StartInfo, Uvmexp, CHANGED, E820_RAM,
    E820_RESERVED, FIRST_MFN, INVALID_P2M_ENTRY, LIVE_GEN, P2M_CANARY, P2M_GUARD, PAGE_SIZE,
    PARKED, PG_FREE, PG_KERNEL, WATCHQ,
};
use crate::sysctl::{self, SysctlTree, SysctlValue};

/// What the simulator's modload finds (`struct sim_modinfo`).
#[repr(C)]
pub struct SimModinfo {
    pub mi_name: *const c_char,
    pub mi_class: c_int,
    pub mi_required: *const c_char,
    pub mi_modcmd: Option<unsafe extern "C" fn(c_int, *mut c_void) -> c_int>,
}

// SAFETY: a modinfo is immutable static data.
unsafe impl Sync for SimModinfo {}

impl SimModinfo {
    pub fn name(&self) -> String {
        if self.mi_name.is_null() {
            return String::new();
        }
        // SAFETY: mi_name is a NUL-terminated static string.
        unsafe { CStr::from_ptr(self.mi_name) }
            .to_string_lossy()
            .into_owned()
    }

    fn cmd(&self, cmd: c_int) -> c_int {
        match self.mi_modcmd {
            // SAFETY: calling the module's modcmd with no simulator lock
            // held and a NULL argument, as modload/modunload do.
            Some(f) => unsafe { f(cmd, std::ptr::null_mut()) },
            None => ENOTTY,
        }
    }
}

/// LIBXL_MAXMEM_CONSTANT (1024 KiB, libxl_internal.h) in pages: what
/// libxl adds to `memory` (at creation) or to the target (`xl mem-set`) to
/// set Xen's maximum reservation (x86 `libxl__arch_extra_memory`).
pub const LIBXL_MAXMEM_PAGES: u64 = 256;
/// X86_HVM_END_SPECIAL_REGION and X86_HVM_NR_SPECIAL_PAGES
/// (xenctrl_dom.h / xg_dom_x86.c).
const SPECIAL_PFN_END: u64 = 0xff000;
const SPECIAL_PAGES: u64 = 8;

/// The PVH guest memory map below 4 GiB, as the toolstack builds it.
/// libxl_x86.c `libxl__arch_domain_construct_memmap` (index id 310481453)
/// gives XENMEM_memory_map (xc_domain_set_memory_map) one E820_RAM entry
/// for low memory, one E820_NVS entry per ACPI module (@c447b730) and E820_RAM from
/// 4 GiB up; nothing else below 4 GiB is RAM. libxl_x86_acpi.c (id
/// 325743651) puts the ACPI tables at ACPI_INFO_PHYSICAL_ADDRESS
/// 0xfc000000 (NUM_ACPI_PAGES 16); libxl_arch.h (id 936710) has the local
/// APIC at LAPIC_BASE_ADDRESS 0xfee00000; xg_dom_x86.c puts the special
/// pages just below 0xff000000. So [0xfc000000, 4 GiB) holds the guest's
/// firmware tables, rings and emulated devices, and no RAM may be
/// populated there.
pub const RESERVED_BELOW_4G: (u64, u64) = (0xfc000, 0x100000);
const ACPI_PFN: u64 = 0xfc000;
const ACPI_PAGES: u64 = 16;
const LAPIC_PFN: u64 = 0xfee00;

/// What a PVH gfn in the reserved range below 4 GiB holds, or None.
pub(crate) fn reserved_gfn(g: u64) -> Option<&'static str> {
    if !(RESERVED_BELOW_4G.0..RESERVED_BELOW_4G.1).contains(&g) {
        return None;
    }
    Some(if (ACPI_PFN..ACPI_PFN + ACPI_PAGES).contains(&g) {
        "ACPI tables"
    } else if g == LAPIC_PFN {
        "local APIC"
    } else if (SPECIAL_PFN_END - SPECIAL_PAGES..SPECIAL_PFN_END).contains(&g) {
        "special page (xenstore/console ring)"
    } else {
        "reserved (below 4 GiB, above the RAM hole)"
    })
}

/// The PVH memory map libxl hands Xen (`xc_domain_set_memory_map`) for
/// XENMEM_memory_map. libxl_x86.c @c447b730 `domain_construct_memmap`:
/// E820_RAM for low memory and for memory above 4 GiB, one E820_RESERVED
/// entry for the X86_HVM_NR_SPECIAL_PAGES special pages below
/// X86_HVM_END_SPECIAL_REGION (PVH only), one E820_RESERVED per reserved
/// device memory region (passthrough, not modelled) and one E820_NVS per
/// ACPI module. Xen populates the special pages (xg_dom_x86.c
/// `alloc_magic_pages_hvm`) and the ACPI modules (xg_dom_core.c
/// `populate_acpi_pages`), never an RDM region. Here RAM is the boot
/// segments (the simulator populates nothing below them), and no ACPI
/// tables are populated, so the map has no E820_NVS entry, as a domain
/// built with acpi=0. Xen returns the map as set at creation, whatever the
/// guest plugged since (mm.c `XENMEM_memory_map`).
fn memory_map(segs: &[(u64, u64)]) -> Vec<E820Entry> {
    let mut map: Vec<E820Entry> = segs
        .iter()
        .map(|&(start, len)| E820Entry {
            addr: start * PAGE_SIZE,
            size: len * PAGE_SIZE,
            kind: E820_RAM,
        })
        .collect();
    map.push(E820Entry {
        addr: (SPECIAL_PFN_END - SPECIAL_PAGES) * PAGE_SIZE,
        size: SPECIAL_PAGES * PAGE_SIZE,
        kind: E820_RESERVED,
    });
    map.sort_by_key(|e| e.addr);
    map
}

/// Why libxl refused an `xl mem-set` or `xl mem-max`: libxl's own log
/// line (libxl_mem.c @0241809b).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XlError(pub String);

const MODULE_CMD_INIT: c_int = 0;
const MODULE_CMD_FINI: c_int = 1;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTTY: i32 = 25;

extern "C" {
    static simtest_modinfo: SimModinfo;
    static sim_kernel_symbols: [*const c_void; 1];
    // The shim's kmem(9) wrappers (glue.h): the Rust core's heap goes
    // through them, as in the kernel.
    fn balloon_shim_kmem_alloc(size: usize) -> *mut c_void;
    fn balloon_shim_kmem_free(p: *mut c_void, size: usize);
}

/// The C test module (csrc/testmod.c).
pub fn test_module() -> &'static SimModinfo {
    // SAFETY: a static defined by csrc/testmod.c.
    unsafe { &simtest_modinfo }
}

/// The real balloon module (its modinfo is defined by the C shim, which the
/// `balloon` crate's build.rs compiles into host builds).
pub fn balloon_module() -> &'static SimModinfo {
    // Keep the `balloon` crate, and the shim bundled in it, in the link:
    // nothing in Rust names it otherwise.
    let _keep = std::hint::black_box(balloon::ffi::entry::balloon_rs_detach as *const () as usize);
    extern "C" {
        static balloon_modinfo: SimModinfo;
    }
    // SAFETY: a static defined by netbsd-glue (the shim).
    unsafe { &balloon_modinfo }
}

static DOMAIN_LOCK: Mutex<()> = Mutex::new(());
/// kern_module.c's kernconfig_lock: one modload or modunload at a time.
static MODULE_LOCK: Mutex<()> = Mutex::new(());

/// A booted simulated domain. Only one exists per process at a time:
/// `boot` waits for the previous one to be dropped (so parallel tests
/// serialise). Dropping it unloads loaded modules (FINI), waits for kernel
/// threads to end, stops xenwatch and frees everything.
pub struct Domain {
    xenwatch: Option<JoinHandle<()>>,
    _guard: MutexGuard<'static, ()>,
}

/// A read-only view of the model, for `Domain::wait_until` conditions
/// (taken under the state lock: do not call `Domain` methods from inside).
pub struct View<'a> {
    k: &'a Kernel,
}

impl View<'_> {
    pub fn reservation(&self) -> u64 {
        self.k.tot_pages
    }
    /// The reservation as xl counts the domain's memory: without the
    /// PVH special pages.
    pub fn memory(&self) -> u64 {
        self.k.tot_pages - self.k.special.len() as u64
    }
    pub fn max_reservation(&self) -> u64 {
        self.k.max_pages
    }
    pub fn host_free(&self) -> u64 {
        self.k.host_free
    }
    pub fn free_pages(&self) -> u64 {
        self.k.free.len()
    }
    pub fn module_pages(&self) -> u64 {
        self.k.module_pages
    }
    pub fn npages(&self) -> i32 {
        uvmexp.get().npages
    }
    pub fn segments(&self) -> Vec<(u64, u64)> {
        self.k.segs.iter().map(|s| (s.start, s.end)).collect()
    }
    pub fn xenstore(&self, path: &str) -> Option<String> {
        self.k
            .store
            .get(path)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    pub fn watch_events_delivered(&self) -> u64 {
        self.k.watch_fired
    }
    /// control/shutdown requests the kernel's own watch took so far
    /// (delivered by the same xenwatch thread as the module's events).
    pub fn shutdown_requests(&self) -> u64 {
        self.k.shutdown_requests.len() as u64
    }
    /// No xenstore watch event is queued or being delivered.
    pub fn watches_quiet(&self) -> bool {
        self.k.watch_queue.is_empty() && self.k.watch_running.is_none()
    }
    pub fn live_kthreads(&self) -> u64 {
        self.k.live_kthreads
    }
    pub fn kmem_outstanding(&self) -> (u64, u64) {
        (self.k.kmem_bytes, self.k.kmem.len() as u64)
    }
    pub fn dirty_frames_given(&self) -> u64 {
        self.k.dirty_given
    }
    /// Whether some complete dmesg line contains `s`.
    pub fn dmesg_contains(&self, s: &str) -> bool {
        dmesg_lock().lines.iter().any(|l| l.contains(s))
    }
    /// Kernel log lines starting with `prefix`.
    pub fn dmesg_count(&self, prefix: &str) -> usize {
        dmesg_lock()
            .lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
    /// The newest kernel log line of balloon0.
    pub fn dmesg_last_balloon_line(&self) -> Option<String> {
        dmesg_lock()
            .lines
            .iter()
            .rev()
            .find(|l| l.starts_with("balloon0: "))
            .cloned()
    }
    pub fn uptime(&self) -> Duration {
        Duration::from_nanos(self.k.uptime_ns() as u64)
    }
}

/// Everything `sim stat` reports, taken under the state lock at one
/// moment (sizes in pages unless named).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub reservation: u64,
    /// The reservation less the special pages Xen counts for a PVH guest
    /// (what xl list shows).
    pub memory: u64,
    pub max_reservation: u64,
    pub host_free: u64,
    pub uvm_npages: i32,
    pub uvm_free: i32,
    pub uvm_freemin: i32,
    pub uvm_freetarg: i32,
    pub physmem: u64,
    pub kernel_pages: u64,
    pub module_pages: u64,
    pub dirty_given: u64,
    pub clean_given: u64,
    pub kmem_bytes: u64,
    pub kmem_allocations: u64,
    /// Threads blocked in kmem_alloc(KM_SLEEP), memory short (ksync.rs).
    pub kmem_sleeping: u64,
    /// kmem_alloc(KM_NOSLEEP) NULLs for want of memory.
    pub kmem_nosleep_null: u64,
    pub kthreads: u64,
    pub watches: u64,
    pub watch_events_pending: u64,
    pub leaked_sysctl_nodes: u64,
    pub segments: u64,
    pub hypercalls: u64,
    /// Reservation extents above order 0 (2 MiB) done.
    pub superpage_extents: u64,
    /// PVH 2 MiB extents populated at an unaligned gfn.
    pub unaligned_superpages: u64,
    /// uvm_pglistalloc calls (each pauses every CPU's free-page cache).
    pub pglistalloc_calls: u64,
    pub faults_fired: u64,
    pub modules_loaded: u64,
    pub module_loads: u64,
    pub uptime_ms: u64,
    /// uvm_physseg's vm_page slabs (uvm_physseg.c 1.18): live, their kmem,
    /// what unplug left allocated, and unlocked segment-tree changes.
    pub physseg_slabs: u64,
    pub physseg_slab_kmem_bytes: u64,
    pub physseg_slab_leaked_bytes: u64,
    pub physseg_unlocked_changes: u64,
    /// control/shutdown requests the kernel's own watch handler took
    /// (shutdown_xenbus.c): it runs on the same xenwatch thread as the
    /// module's callback.
    pub shutdown_requests: u64,
    /// memsets through the direct map (dmap.rs), the frames they wrote,
    /// and pmap_zero_page calls: which zeroing path ran.
    pub direct_map_writes: u64,
    pub direct_map_frames: u64,
    pub zero_page_calls: u64,
}

impl Snapshot {
    /// `key value` lines, KiB where the key says so.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        vec![
            ("reservation_kib", (self.reservation * 4).to_string()),
            ("memory_kib", (self.memory * 4).to_string()),
            (
                "max_reservation_kib",
                (self.max_reservation * 4).to_string(),
            ),
            ("host_free_kib", (self.host_free * 4).to_string()),
            ("uvm_npages", self.uvm_npages.to_string()),
            ("uvm_free", self.uvm_free.to_string()),
            ("uvm_freemin", self.uvm_freemin.to_string()),
            ("uvm_freetarg", self.uvm_freetarg.to_string()),
            ("physmem", self.physmem.to_string()),
            ("kernel_pages", self.kernel_pages.to_string()),
            ("module_pages", self.module_pages.to_string()),
            ("dirty_pages_given", self.dirty_given.to_string()),
            ("clean_pages_given", self.clean_given.to_string()),
            ("kmem_bytes", self.kmem_bytes.to_string()),
            ("kmem_allocations", self.kmem_allocations.to_string()),
            ("kmem_sleeping", self.kmem_sleeping.to_string()),
            ("kmem_nosleep_null", self.kmem_nosleep_null.to_string()),
            ("kthreads", self.kthreads.to_string()),
            ("xenbus_watches", self.watches.to_string()),
            (
                "watch_events_pending",
                self.watch_events_pending.to_string(),
            ),
            ("leaked_sysctl_nodes", self.leaked_sysctl_nodes.to_string()),
            ("segments", self.segments.to_string()),
            ("hypercalls", self.hypercalls.to_string()),
            ("superpage_extents", self.superpage_extents.to_string()),
            (
                "unaligned_superpages",
                self.unaligned_superpages.to_string(),
            ),
            ("pglistalloc_calls", self.pglistalloc_calls.to_string()),
            ("faults_fired", self.faults_fired.to_string()),
            ("modules_loaded", self.modules_loaded.to_string()),
            ("module_loads", self.module_loads.to_string()),
            ("uptime_ms", self.uptime_ms.to_string()),
            ("physseg_slabs", self.physseg_slabs.to_string()),
            (
                "physseg_slab_kmem_bytes",
                self.physseg_slab_kmem_bytes.to_string(),
            ),
            (
                "physseg_slab_leaked_bytes",
                self.physseg_slab_leaked_bytes.to_string(),
            ),
            (
                "physseg_unlocked_changes",
                self.physseg_unlocked_changes.to_string(),
            ),
            ("shutdown_requests", self.shutdown_requests.to_string()),
            ("direct_map_writes", self.direct_map_writes.to_string()),
            ("direct_map_frames", self.direct_map_frames.to_string()),
            ("zero_page_calls", self.zero_page_calls.to_string()),
        ]
    }

    /// The value of one key as `sim stat` prints it.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lines()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// Writes the fault settings back when dropped (`d.faults_mut().x = ..`).
pub struct FaultsMut<'a> {
    _d: &'a Domain,
    f: Faults,
}

impl std::ops::Deref for FaultsMut<'_> {
    type Target = Faults;
    fn deref(&self) -> &Faults {
        &self.f
    }
}
impl std::ops::DerefMut for FaultsMut<'_> {
    fn deref_mut(&mut self) -> &mut Faults {
        &mut self.f
    }
}
impl Drop for FaultsMut<'_> {
    fn drop(&mut self) {
        let f = std::mem::take(&mut self.f);
        with(|k| k.faults = f);
    }
}

fn build_kernel(cfg: DomainConfig) -> Kernel {
    // A configuration the simulator cannot boot is a mistake of the
    // caller (balloon-sim checks its command line with the same rules).
    if let Err(e) = cfg.validate() {
        panic!("DomainConfig: {e}");
    }
    let segs = cfg.segments();
    let boot_pages = cfg.boot_pages();
    let cap = if cfg.mode == Mode::Pv {
        cfg.p2m_frames() as usize
    } else {
        0
    };
    let mut p2m = Vec::new();
    if cfg.mode == Mode::Pv {
        p2m = vec![INVALID_P2M_ENTRY; cap + P2M_GUARD];
        for e in &mut p2m[cap..] {
            *e = P2M_CANARY;
        }
    }
    let kernel_pages = cfg.kernel_pages.unwrap_or(boot_pages / 10).min(boot_pages);
    let mut k = Kernel {
        // libxl_dom.c @021cd1c4 libxl__build_pre: Xen's maximum is
        // `memory` + LIBXL_MAXMEM_CONSTANT (1 MiB), not `maxmem`; maxmem
        // only becomes memory/static-max (libxl__build_post, below).
        max_pages: boot_pages + LIBXL_MAXMEM_PAGES,
        host_free: cfg.host_free_pages(),
        boot: Instant::now(),
        faults: Faults::default(),
        booted: false,
        xpq: Default::default(),
        slabs: Vec::new(),
        seg_slab: HashMap::new(),
        physseg_unlocked_changes: 0,
        replaced_gfns: Vec::new(),
        reserved_hits: Vec::new(),
        segs: Vec::new(),
        arrays: Vec::new(),
        free: FrameBits::new(),
        kernel_pages: FrameStack::default(),
        module_pages: 0,
        next_seg_id: 0,
        plug_calls: 0,
        tot_pages: 0,
        next_mfn: FIRST_MFN,
        owned: FrameTable::new(),
        populated: FrameBits::new(),
        data: FrameBits::new(),
        p2m,
        p2m_cap: cap,
        dirty_given: 0,
        clean_given: 0,
        store: BTreeMap::new(),
        watches: Vec::new(),
        watch_queue: VecDeque::new(),
        watch_running: None,
        watch_fired: 0,
        kernel_watches: Vec::new(),
        kernel_watch_fired: 0,
        shutdown_requests: Vec::new(),
        xenwatch_stop: false,
        guest_written: BTreeSet::new(),
        special: Vec::new(),
        memory_map: Vec::new(),
        pod: None,
        sysctl: SysctlTree::boot(),
        kmem: HashMap::new(),
        kmem_bytes: 0,
        kmem_sleeping: 0,
        kmem_nosleep_null: 0,
        live_kthreads: 0,
        modules: Vec::new(),
        hypercalls: 0,
        superpage_extents: 0,
        unaligned_superpages: 0,
        pglistalloc_calls: 0,
        mmuext_calls: 0,
        faults_fired: 0,
        module_loads: 0,
        growth: Default::default(),
        crashed: None,
        cfg,
    };
    if k.cfg.mode != Mode::NotXen {
        k.sysctl.boot_xen(k.cfg.mode == Mode::Pv);
    }
    let mut left_kernel = kernel_pages;
    let pod_memory = k.cfg.pod_memory_pages().filter(|_| k.cfg.mode == Mode::Pvh);
    if let Some(m) = pod_memory {
        // libxl__build_pre: Xen's maximum is memory + 1 MiB, not maxmem.
        k.max_pages = m + LIBXL_MAXMEM_PAGES;
        // xg_dom_x86.c meminit_hvm (xen-project/xen @c447b730): the PoD
        // cache is filled to the target first, then every RAM gfn of the
        // map is marked PoD (XENMEMF_populate_on_demand); the kernel's
        // boot pages are populated from the cache as it touches them.
        k.pod = Some(crate::pod::Pod {
            count: m,
            ..Default::default()
        });
        k.tot_pages += m;
    }
    // Boot memory: every frame holds data (what the loader and firmware
    // left); the kernel's pages are the first `kernel_pages` frames.
    for &(start, n) in &segs {
        let pgs = k.new_page_array(start, n);
        k.insert_seg(start, start + n, pgs);
        let end = start + n;
        match k.pod.as_mut() {
            Some(p) => {
                p.entries.insert_range(start, end);
            }
            None => k.boot_back(start, n, true),
        }
        let kernel_end = start + left_kernel.min(n);
        left_kernel -= kernel_end - start;
        for pfn in start..kernel_end {
            if k.pod.is_some() {
                k.pod_touch(pfn, crate::pod::Touch::Kernel);
                k.write_frame(pfn, true);
            }
            k.kernel_pages.push(pfn);
        }
        k.free.insert_range(kernel_end, end);
    }
    if k.cfg.mode == Mode::Pvh {
        let (lo, hi) = RESERVED_BELOW_4G;
        assert!(
            k.segs.iter().all(|s| s.end <= lo || s.start >= hi),
            "DomainConfig: a PVH boot segment overlaps [{lo:#x}, {hi:#x}), which is not RAM"
        );
        // xg_dom_x86.c @1d896a0e alloc_magic_pages_hvm: the domain builder
        // populates X86_HVM_NR_SPECIAL_PAGES (8) special pages (xenstore
        // and console rings, ioreq, ...) at special_pfn(i) =
        // X86_HVM_END_SPECIAL_REGION (0xff000) - 8 + i, outside the RAM
        // the guest sees: Xen counts them in the reservation, xl's
        // memory/target does not.
        for pfn in SPECIAL_PFN_END - SPECIAL_PAGES..SPECIAL_PFN_END {
            assert!(
                k.seg_of(pfn).is_none(),
                "DomainConfig: a PVH boot segment covers the special page {pfn:#x}"
            );
            k.boot_back(pfn, 1, false);
            k.special.push(pfn);
        }
        k.memory_map = memory_map(&segs);
    }
    k.growth = crate::growth::GrowthState::boot(&k);
    crate::dmap::boot(k.growth.direct_end);
    if k.cfg.real_zero {
        crate::uvm::frame_mem_init(k.segs.last().map_or(0, |s| s.end), k.cfg.real_zero_window);
    }
    let freemin = k.cfg.freemin.unwrap_or(256.min((boot_pages / 16) as i32));
    let freetarg = k.cfg.freetarg.unwrap_or(512.min((boot_pages / 8) as i32));
    uvmexp.set(Uvmexp {
        npages: boot_pages as i32,
        free: k.free.len() as i32,
        freemin,
        freetarg,
    });
    physmem.set(boot_pages);
    hz.set(100);
    vm_guest.set(match k.cfg.mode {
        Mode::Pv => 2,
        Mode::Pvh => 3,
        Mode::NotXen => 0,
    });
    xen_start_info.set(StartInfo {
        nr_pages: boot_pages,
    });
    xpmap_phys_to_machine_mapping.set(if k.cfg.mode == Mode::Pv {
        k.p2m.as_mut_ptr()
    } else {
        std::ptr::null_mut()
    });
    if k.cfg.mode != Mode::NotXen {
        // libxl__build_post (libxl_dom.c @021cd1c4): memory/static-max is
        // maxmem, memory/target is memory less the target fudge (0 for PV
        // and PVH: only HVM subtracts video memory and 1 MiB).
        // PoD: memory/target is `memory`, below the map (maxmem).
        let target = (k.cfg.pod_memory_pages().unwrap_or(boot_pages) * 4).to_string();
        let max = (k.cfg.max_pages() * 4).to_string();
        k.store.insert("memory/target".into(), target.into_bytes());
        k.store.insert("memory/static-max".into(), max.into_bytes());
        // shutdown_xenbus_setup (shutdown_xenbus.c 1.5.8.3) at boot.
        k.watch_shutdown();
    }
    k.booted = true;
    k
}

impl Domain {
    /// Boots a domain (waits while another one is alive in this process).
    /// Panics if `cfg` does not validate ([`DomainConfig::validate`]).
    pub fn boot(cfg: DomainConfig) -> Domain {
        let guard = DOMAIN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Pull the C half (and through it every kernel symbol) into links.
        // SAFETY: reading the first entry of a static C array.
        let _ = unsafe { std::ptr::read_volatile(sim_kernel_symbols.as_ptr()) };
        {
            let mut d = dmesg_lock();
            d.lines.clear();
            d.stamps.clear();
            d.partial.clear();
            d.partial_stamp = None;
        }
        let k = build_kernel(cfg);
        dmesg_lock().clock = Some((k.boot, k.cfg.time_scale));
        *lock() = Some(k);
        let gen = new_generation();
        LIVE_GEN.store(gen, Ordering::SeqCst);
        // The Rust core's heap goes through this kernel's kmem(9), as in
        // balloon.kmod, so kmem accounting sees it.
        balloon::ffi::route_core_allocations_to_kmem(Some((
            balloon_shim_kmem_alloc,
            balloon_shim_kmem_free,
        )));
        let xenwatch = Some(crate::xen::start_xenwatch(gen));
        crate::kernel::dmesg_append("NetBSD (simulated) booted\n");
        Domain {
            xenwatch,
            _guard: guard,
        }
    }

    pub fn config(&self) -> DomainConfig {
        with(|k| k.cfg.clone())
    }

    // ---- modules ----

    /// modload: MODULE_CMD_INIT on the calling thread; EEXIST if a module
    /// of that name is loaded. Loads and unloads are serialised, as
    /// kern_module.c does under kernconfig_lock.
    pub fn modload(&self, mi: &'static SimModinfo) -> Result<(), i32> {
        let _m = MODULE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let name = mi.name();
        if with(|k| k.modules.iter().any(|m| m.name() == name)) {
            return Err(EEXIST);
        }
        match mi.cmd(MODULE_CMD_INIT) {
            0 => {
                with(|k| {
                    k.modules.push(mi);
                    k.module_loads += 1;
                });
                Ok(())
            }
            e => Err(e),
        }
    }

    /// modunload of the most recently loaded module: MODULE_CMD_FINI; a
    /// non-zero answer keeps it loaded (kern_module.c module_do_unload).
    pub fn modunload(&self) -> Result<(), i32> {
        let _m = MODULE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mi) = with(|k| k.modules.last().copied()) else {
            return Err(ENOENT);
        };
        match mi.cmd(MODULE_CMD_FINI) {
            0 => {
                with(|k| k.modules.retain(|m| !std::ptr::eq(*m, mi)));
                Ok(())
            }
            e => {
                crate::kernel::dmesg_append(&format!(
                    "WARNING: module error: cannot unload module `{}' error={e}\n",
                    mi.name()
                ));
                Err(e)
            }
        }
    }

    /// Names of the loaded modules.
    pub fn modstat(&self) -> Vec<String> {
        with(|k| k.modules.iter().map(|m| m.name()).collect())
    }

    // ---- figures ----

    /// Every figure of `sim stat` at one moment.
    pub fn snapshot(&self) -> Snapshot {
        with(|k| {
            let u = uvmexp.get();
            let slabs = k.slab_stats();
            Snapshot {
                reservation: k.tot_pages,
                memory: k.tot_pages - k.special.len() as u64,
                max_reservation: k.max_pages,
                host_free: k.host_free,
                uvm_npages: u.npages,
                uvm_free: u.free,
                uvm_freemin: u.freemin,
                uvm_freetarg: u.freetarg,
                physmem: physmem.get(),
                kernel_pages: k.kernel_pages.len(),
                module_pages: k.module_pages,
                dirty_given: k.dirty_given,
                clean_given: k.clean_given,
                kmem_bytes: k.kmem_bytes,
                kmem_allocations: k.kmem.len() as u64,
                kmem_sleeping: k.kmem_sleeping,
                kmem_nosleep_null: k.kmem_nosleep_null,
                kthreads: k.live_kthreads,
                watches: k.watches.len() as u64,
                watch_events_pending: k.watch_queue.len() as u64
                    + u64::from(k.watch_running.is_some()),
                leaked_sysctl_nodes: k.sysctl.leaked().len() as u64,
                segments: k.segs.len() as u64,
                hypercalls: k.hypercalls,
                superpage_extents: k.superpage_extents,
                unaligned_superpages: k.unaligned_superpages,
                pglistalloc_calls: k.pglistalloc_calls,
                faults_fired: k.faults_fired,
                modules_loaded: k.modules.len() as u64,
                module_loads: k.module_loads,
                uptime_ms: (k.uptime_ns() / 1_000_000) as u64,
                physseg_slabs: slabs.slabs,
                physseg_slab_kmem_bytes: slabs.bytes,
                physseg_slab_leaked_bytes: slabs.leaked_bytes,
                physseg_unlocked_changes: slabs.unlocked_tree_changes,
                shutdown_requests: k.shutdown_requests.len() as u64,
                direct_map_writes: crate::dmap::counts().0,
                direct_map_frames: crate::dmap::counts().1,
                zero_page_calls: crate::dmap::counts().2,
            }
        })
    }

    pub fn reservation(&self) -> u64 {
        with(|k| k.tot_pages)
    }
    /// The reservation as xl counts the domain's memory: without the PVH
    /// special pages Xen populated outside RAM.
    pub fn memory(&self) -> u64 {
        with(|k| k.tot_pages - k.special.len() as u64)
    }
    pub fn max_reservation(&self) -> u64 {
        with(|k| k.max_pages)
    }
    /// Changes Xen's max_pages for the domain (as `xl mem-max` would).
    pub fn set_max_reservation(&self, pages: u64) {
        with(|k| k.max_pages = pages)
    }
    pub fn host_free(&self) -> u64 {
        with(|k| k.host_free)
    }
    pub fn set_host_free(&self, pages: u64) {
        with(|k| k.host_free = pages)
    }
    /// Frames given to Xen whose content was not zero.
    pub fn dirty_frames_given(&self) -> u64 {
        with(|k| k.dirty_given)
    }
    /// Frames given to Xen that were zero-filled.
    pub fn clean_frames_given(&self) -> u64 {
        with(|k| k.clean_given)
    }
    /// (bytes, allocations) of kmem not yet freed.
    pub fn kmem_outstanding(&self) -> (u64, u64) {
        with(|k| (k.kmem_bytes, k.kmem.len() as u64))
    }
    /// Pages handed out by uvm_pagealloc/uvm_pglistalloc and not freed.
    pub fn pages_owned_by_module(&self) -> u64 {
        with(|k| k.module_pages)
    }
    pub fn free_pages(&self) -> u64 {
        with(|k| k.free.len())
    }
    pub fn uvmexp(&self) -> Uvmexp {
        uvmexp.get()
    }
    /// Calls of uvm_physseg_plug since boot (stock kernels: must stay 0).
    pub fn plug_calls(&self) -> u64 {
        with(|k| k.plug_calls)
    }
    /// HYPERVISOR_mmuext_op calls since boot (PV page clearing).
    pub fn mmuext_calls(&self) -> u64 {
        with(|k| k.mmuext_calls)
    }
    pub fn physmem(&self) -> u64 {
        physmem.get()
    }
    /// UVM segments as [start, end) frame numbers, in order.
    /// Host memory the simulator's frame state holds.
    pub fn model_bytes(&self) -> crate::kernel::ModelBytes {
        with(|k| k.model_bytes())
    }
    /// Hotplug's vm_page slabs: kmem allocated by plugs and never freed
    /// (uvm_physseg.c 1.18), and the unlocked segment-tree changes.
    pub fn slab_stats(&self) -> crate::uvm::SlabStats {
        with(|k| k.slab_stats())
    }

    pub fn segments(&self) -> Vec<(u64, u64)> {
        with(|k| k.segs.iter().map(|s| (s.start, s.end)).collect())
    }
    /// "free", "kernel", "module", or None outside every segment.
    pub fn page_state(&self, pfn: u64) -> Option<&'static str> {
        with(|k| k.page_state(pfn).map(crate::uvm::state_name))
    }
    /// PV p2m entry (None when invalid or out of range).
    pub fn p2m(&self, pfn: u64) -> Option<u64> {
        with(|k| Some(k.p2m_get(pfn)).filter(|&m| m != INVALID_P2M_ENTRY))
    }
    /// m2p entry of an owned MFN (None if not owned or unset).
    pub fn m2p(&self, mfn: u64) -> Option<u64> {
        with(|k| k.owned.get(mfn).filter(|&p| p != INVALID_P2M_ENTRY))
    }
    pub fn frame_backed(&self, pfn: u64) -> bool {
        with(|k| k.backed(pfn))
    }
    /// What a backed frame holds: 0 when all zero, else a tag naming its
    /// page (`Kernel::content`).
    pub fn frame_content(&self, pfn: u64) -> Option<u64> {
        with(|k| if k.backed(pfn) { k.content(pfn) } else { None })
    }
    /// With `real_zero`: fills frames [pfn, pfn + n) of host memory with
    /// `byte` (in their slots of `real_zero_window`, wrapping) and returns
    /// how many it wrote (0 without `real_zero`). The
    /// stack benchmark's memset baseline; call it while the module does
    /// not touch those frames.
    pub fn memset_frames(&self, pfn: u64, n: u64, byte: u8) -> u64 {
        crate::uvm::frame_mem_fill(pfn, n, byte)
    }
    /// With `real_zero`: clears frame `pfn`'s 4 KiB of host memory as
    /// Xen's MMUEXT_CLEAR_PAGE does (non-temporal stores, then a fence),
    /// and nothing else: the stack benchmark's floor for a PV scrub.
    pub fn clear_frame_like_xen(&self, pfn: u64) {
        crate::uvm::frame_mem_clear_nt(pfn);
    }
    /// With `real_zero`: whether frame `pfn`'s 4 KiB of host memory are
    /// all `byte` (None without `real_zero`, past boot memory, or when
    /// the frame shares its slot of `real_zero_window` with another).
    pub fn frame_memory_is(&self, pfn: u64, byte: u8) -> Option<bool> {
        crate::uvm::frame_mem_is(pfn, byte)
    }
    /// Simulated uptime.
    pub fn uptime(&self) -> Duration {
        with(|k| Duration::from_nanos(k.uptime_ns() as u64))
    }
    pub fn live_kthreads(&self) -> u64 {
        with(|k| k.live_kthreads)
    }
    /// Kernel threads woken by a cv_signal or cv_broadcast that have not yet
    /// taken their mutex back: work handed over and not yet seen (a worker
    /// kicked by a sysctl write that has not yet asked the core).
    pub fn pending_wakeups(&self) -> u64 {
        crate::ksync::pending_wakeups()
    }
    /// Kernel threads not waiting on a condvar: running, or about to (a
    /// worker just created has not yet reached its first wait).
    pub fn kthreads_running(&self) -> u64 {
        let live = self.live_kthreads();
        live.saturating_sub(crate::ksync::threads_waiting())
    }
    /// Dynamic sysctl nodes still present (after unload: leaks).
    pub fn leaked_sysctl_nodes(&self) -> Vec<String> {
        with(|k| k.sysctl.leaked())
    }

    // ---- dmesg ----

    /// The kernel's message lines, without their time stamps.
    pub fn dmesg(&self) -> Vec<String> {
        dmesg_lock().lines.clone()
    }

    /// The kernel message buffer as the kernel wrote it: every line with
    /// the stamp subr_prf.c puts in front of it.
    pub fn dmesg_msgbuf(&self) -> Vec<String> {
        let d = dmesg_lock();
        d.stamps
            .iter()
            .zip(&d.lines)
            .map(|(s, l)| format!("{s}{l}"))
            .collect()
    }

    // ---- faults ----

    pub fn faults(&self) -> Faults {
        with(|k| k.faults.clone())
    }
    pub fn set_faults(&self, f: Faults) {
        with(|k| k.faults = f)
    }
    /// A copy of the faults that is written back when dropped. Counters
    /// the model consumes meanwhile (fail_after) are overwritten then, so
    /// keep the guard short-lived.
    pub fn faults_mut(&self) -> FaultsMut<'_> {
        FaultsMut {
            _d: self,
            f: self.faults(),
        }
    }

    // ---- workload ----

    /// The kernel allocates up to n more pages (memory pressure); returns
    /// how many it got.
    pub fn kernel_alloc(&self, n: u64) -> u64 {
        with(|k| k.kernel_alloc(n))
    }
    /// The kernel takes every free frame that is a multiple of `stride`
    /// (no free run of `stride` frames is left); returns pages taken.
    pub fn kernel_fragment(&self, stride: u64) -> u64 {
        with(|k| k.kernel_fragment(stride))
    }
    /// The kernel frees up to n of its pages (most recently allocated first).
    pub fn kernel_free(&self, n: u64) -> u64 {
        with(|k| k.kernel_free(n))
    }
    /// The kernel uses up to n free pages (writing them) and frees them
    /// again, as the buffer cache and early boot do before a module is
    /// loaded; returns how many. On a PoD domain each write populates the
    /// frame from the PoD cache.
    pub fn kernel_touch(&self, n: u64) -> u64 {
        with(|k| {
            let got = k.kernel_alloc(n);
            k.kernel_free(got);
            got
        })
    }
    /// The kernel zeroes up to n free pages that hold data (as a page
    /// zeroed for reuse would be); returns how many.
    pub fn kernel_zero_free(&self, n: u64) -> u64 {
        with(|k| {
            let dirty: Vec<u64> = k
                .free
                .iter()
                .filter(|&pfn| k.content(pfn).is_some_and(|c| c != 0))
                .take(usize::try_from(n).unwrap_or(usize::MAX))
                .collect();
            for &pfn in &dirty {
                k.write_frame(pfn, false);
            }
            dirty.len() as u64
        })
    }
    /// Populate-on-demand figures, None when the domain has no PoD.
    pub fn pod_stats(&self) -> Option<crate::pod::PodStats> {
        with(|k| k.pod_stats())
    }

    // ---- xenstore ----

    /// Writes a node (path relative to the domain home) and fires watches.
    pub fn xenstore_write(&self, path: &str, value: &str) {
        self.xenstore_write_bytes(path, value.as_bytes())
    }
    /// Writes a value of any bytes (xs_write takes a length).
    pub fn xenstore_write_bytes(&self, path: &str, value: &[u8]) {
        with(|k| k.store_write(path, Some(value)))
    }
    pub fn xenstore_read(&self, path: &str) -> Option<String> {
        self.xenstore_read_bytes(path)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
    pub fn xenstore_read_bytes(&self, path: &str) -> Option<Vec<u8>> {
        with(|k| k.store.get(path).cloned())
    }
    pub fn xenstore_rm(&self, path: &str) {
        with(|k| k.store_write(path, None))
    }
    /// `xl mem-set` as `libxl_set_memory_target(.., relative 0, enforce
    /// 1)` does it (libxl_mem.c @0241809b), in one xenstore transaction:
    /// reads memory/target and memory/static-max (refusing when either is
    /// missing or not a number), subtracts memory/videoram, refuses a
    /// target above static-max, raises (or lowers) Xen's maximum to the
    /// target + 1 MiB (xc_domain_setmaxmem), and only then writes
    /// memory/target. (It also sets the PoD target of a non-PV guest;
    /// populate-on-demand is not modelled.)
    pub fn try_xl_mem_set(&self, kib: u64) -> Result<(), XlError> {
        with(|k| {
            let num = |k: &Kernel, node: &str| -> Result<u64, XlError> {
                let v = k.store.get(node).ok_or_else(|| {
                    XlError(format!(
                        "Cannot get memory info from /local/domain/1/{node}"
                    ))
                })?;
                let v = String::from_utf8_lossy(v);
                v.parse::<u64>()
                    .map_err(|_| XlError(format!("Invalid memory {v} from /local/domain/1/{node}")))
            };
            num(k, "memory/target")?;
            let static_max = num(k, "memory/static-max")?;
            let videoram = k
                .store
                .get("memory/videoram")
                .and_then(|v| String::from_utf8_lossy(v).parse::<u64>().ok())
                .unwrap_or(0);
            let new = kib.saturating_sub(videoram);
            if new > static_max {
                return Err(XlError(
                    "memory_dynamic_max must be less than or equal to memory_static_max".into(),
                ));
            }
            // Xen's XEN_DOMCTL_max_mem takes KiB and keeps pages.
            k.max_pages = (new + videoram + 4 * LIBXL_MAXMEM_PAGES) / 4;
            // libxl_mem.c (xen-project/xen @c447b730, line 309): every
            // non-PV domain's PoD target moves to the new target + 1 MiB;
            // a failure aborts the transaction, memory/target unwritten.
            if k.mode() == Mode::Pvh {
                let memkb = new + 4 * LIBXL_MAXMEM_PAGES;
                if let Err(e) = k.pod_set_mem_target(memkb / 4) {
                    return Err(XlError(format!(
                        "xc_domain_set_pod_target memkb={memkb} failed rc=-{e}"
                    )));
                }
            }
            k.store_write("memory/target", Some(new.to_string().as_bytes()));
            Ok(())
        })
    }

    /// `xl mem-set` that must succeed (a refusal is a test's own mistake).
    pub fn xl_mem_set(&self, kib: u64) {
        if let Err(e) = self.try_xl_mem_set(kib) {
            panic!("xl mem-set {kib}k refused: {}", e.0);
        }
    }

    /// `xl mem-max` as `libxl_domain_setmaxmem` does it (libxl_mem.c
    /// @0241809b): refuses a maximum below memory/target, then sets Xen's
    /// maximum to it + 1 MiB. memory/static-max is not changed.
    pub fn xl_mem_max(&self, kib: u64) -> Result<(), XlError> {
        with(|k| {
            let target = k
                .store
                .get("memory/target")
                .and_then(|v| String::from_utf8_lossy(v).parse::<u64>().ok())
                .ok_or_else(|| {
                    XlError("Cannot get memory info from /local/domain/1/memory/target".into())
                })?;
            if kib < target {
                // The doubled "or" is libxl's.
                return Err(XlError(
                    "memory_static_max must be greater than or or equal to memory_dynamic_max"
                        .into(),
                ));
            }
            k.max_pages = (kib + 4 * LIBXL_MAXMEM_PAGES) / 4;
            Ok(())
        })
    }

    /// `xl save` then `xl restore` (or a migration) of the domain, as one
    /// step (saverestore.rs): PV keeps only frames below the published
    /// `arch.max_pfn`; stock resume crashes on `nr_pages != physmem`; a
    /// suspend veto crashes. On success xenstore resumes as
    /// [`Domain::resume`] says. `Err` is the crash's reason.
    pub fn save_restore(&self) -> Result<crate::SaveReport, String> {
        let r = with(crate::saverestore::save_restore)?;
        self.resume();
        Ok(r)
    }

    /// Why the domain crashed, if it did.
    pub fn crashed(&self) -> Option<String> {
        with(|k| k.crashed.clone())
    }

    /// The kernel-assisted growth interfaces' figures (growth.rs).
    pub fn growth_stats(&self) -> crate::GrowthStats {
        with(|k| crate::growth::stats(k))
    }

    /// The domain is suspended and resumed (xl save/restore, migration).
    /// xenstore keeps what the toolstack wrote but loses every node the
    /// guest wrote itself; the guest's xs_resume() registers each watch
    /// again (xenbus_xs.c 1.9.2.1), and xenstored fires a watch when it is
    /// registered, so every registered watch fires once.
    pub fn resume(&self) {
        with(|k| {
            for path in std::mem::take(&mut k.guest_written) {
                k.store.remove(&path);
            }
            let all: Vec<(usize, String)> = k
                .watches
                .iter()
                .chain(k.kernel_watches.iter())
                .cloned()
                .collect();
            k.watch_queue.extend(all);
            WATCHQ.notify_all();
        })
    }

    // ---- sysctl ----

    pub fn sysctl_read(&self, name: &str) -> Result<SysctlValue, i32> {
        sysctl::read(name)
    }
    pub fn sysctl_write(&self, name: &str, v: SysctlValue) -> Result<(), i32> {
        sysctl::write(name, &v)
    }
    pub fn sysctl_write_raw(&self, name: &str, bytes: &[u8]) -> Result<(), i32> {
        sysctl::write_raw(name, bytes)
    }
    pub fn sysctl_describe(&self, name: &str) -> Option<String> {
        with(|k| k.sysctl.describe(name))
    }
    /// Full names of the nodes whose name starts with `prefix`, sorted.
    pub fn sysctl_list(&self, prefix: &str) -> Vec<String> {
        with(|k| k.sysctl.list(prefix))
    }

    // ---- waiting ----

    /// Waits (bounded) until `cond` holds; the model signals every change.
    /// The closure runs under the state lock: use only the view.
    pub fn wait_until(&self, mut cond: impl FnMut(&View<'_>) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = lock();
        loop {
            let Some(k) = g.as_ref() else { return false };
            if cond(&View { k }) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let step = (deadline - now).min(Duration::from_millis(50));
            g = CHANGED
                .wait_timeout(g, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    // ---- invariants ----

    /// Verifies the model's invariants (call when the driver is quiescent):
    /// Xen reservation == frames the domain has backed; every free page is
    /// backed; uvmexp.free == free pages; every unbacked frame of a
    /// segment is owned by the module; p2m canary intact; PV: every valid
    /// p2m entry is an owned MFN whose m2p points back, used once, inside a
    /// segment, and every owned MFN is mapped; PVH: populated gpfns lie in
    /// segments.
    pub fn check(&self) -> Result<(), String> {
        with(|k| check_kernel(k, false))
    }

    /// [`Domain::check`], except that frames backed in no segment are
    /// allowed: a driver may hold frames it backed for a plug that failed
    /// until Xen takes them back (the soak's check; it compares the
    /// driver's count with Xen's reservation separately, so frames the
    /// driver forgot are still found).
    pub fn check_allowing_unplugged_backed_frames(&self) -> Result<(), String> {
        with(|k| check_kernel(k, true))
    }
}

fn check_kernel(k: &mut Kernel, allow_outside: bool) -> Result<(), String> {
    let mut errs = Vec::new();
    if let Some(why) = &k.crashed {
        errs.push(format!("the domain crashed: {why}"));
    }
    // x86_xpmap.c 1.84.4.2: an update left in a CPU's queue has not reached
    // Xen's m2p (see xen.rs, the per-CPU m2p queue).
    for (cpu, q) in k.xpq.iter().enumerate() {
        if !q.is_empty() {
            errs.push(format!(
                "cpu{cpu}'s m2p queue holds {} unflushed updates (first: MFN {:#x})",
                q.len(),
                q[0].0
            ));
        }
    }
    let u = uvmexp.get();
    if u.free as u64 != k.free.len() {
        errs.push(format!(
            "uvmexp.free {} != {} free pages",
            u.free,
            k.free.len()
        ));
    }
    let seg_pages: u64 = k.segs.iter().map(|s| s.end - s.start).sum();
    if u.npages as u64 != seg_pages {
        errs.push(format!(
            "uvmexp.npages {} != {} pages in segments",
            u.npages, seg_pages
        ));
    }
    // Page states are the frame sets (Kernel::page_state): a frame is
    // free, the kernel's, or the module's. Both sets must lie inside the
    // segments, and what is not the module's must be backed.
    let (mut nfree, mut nkernel) = (0u64, 0u64);
    for s in &k.segs {
        nfree += k.free.count_in(s.start, s.end);
        nkernel += k.kernel_pages.count_in(s.start, s.end);
    }
    let nmod = seg_pages - nfree - nkernel;
    if nfree != k.free.len() {
        errs.push(format!(
            "{} free pages in segments, free list has {}",
            nfree,
            k.free.len()
        ));
    }
    if nkernel != k.kernel_pages.len() {
        errs.push(format!(
            "{} kernel pages in segments, the kernel has {}",
            nkernel,
            k.kernel_pages.len()
        ));
    }
    let unbacked = k
        .free
        .iter()
        .map(|f| (f, PG_FREE))
        .chain(k.kernel_pages.iter().map(|f| (f, PG_KERNEL)))
        .filter(|&(f, _)| !k.backed(f));
    for (pfn, st) in unbacked.take(8) {
        errs.push(format!(
            "unbacked frame {pfn:#x} is {} in UVM",
            crate::uvm::state_name(st)
        ));
    }
    if nmod != k.module_pages {
        errs.push(format!(
            "{nmod} module pages, counter says {}",
            k.module_pages
        ));
    }
    if k.mode() != Mode::NotXen && k.tot_pages != k.backed_frames() {
        errs.push(format!(
            "Xen reservation {} != {} frames the domain holds",
            k.tot_pages,
            k.backed_frames()
        ));
    }
    // No check that tot_pages <= max_pages: XEN_DOMCTL_max_mem may set
    // the maximum below the reservation, which then "ratchets" down as
    // the guest gives memory back (xen/common/domctl.c); Xen only refuses
    // new allocations meanwhile (`grow_room`).
    match k.mode() {
        Mode::Pv => {
            let cap = k.p2m_cap;
            if k.p2m[cap..].iter().any(|&e| e != P2M_CANARY) {
                errs.push("p2m written past its capacity (guard canary damaged)".into());
            }
            let mut seen = FrameBits::new();
            for pfn in 0..cap as u64 {
                let m = k.p2m_get(pfn);
                if m == INVALID_P2M_ENTRY {
                    continue;
                }
                match k.owned.get(m) {
                    None => errs.push(format!(
                        "p2m[{pfn:#x}] = MFN {m:#x} the domain does not own"
                    )),
                    Some(m2p) if m2p != pfn => {
                        errs.push(format!("m2p[{m:#x}] = {m2p:#x}, but p2m[{pfn:#x}] maps it"))
                    }
                    _ => {}
                }
                if k.owned.contains(m) && !seen.insert(m) {
                    errs.push(format!(
                        "MFN {m:#x} mapped by two pfns (the second {pfn:#x})"
                    ));
                }
                if k.seg_of(pfn).is_none() && !allow_outside {
                    errs.push(format!(
                        "backed frame {pfn:#x} lies in no segment (reservation leak)"
                    ));
                }
            }
            if seen.len() != k.owned.len() {
                errs.push(format!(
                    "{} owned MFNs are not in the p2m (leaked reservation)",
                    k.owned.len() - seen.len().min(k.owned.len())
                ));
            }
        }
        Mode::Pvh => {
            if let Some(g) = k.replaced_gfns.first() {
                errs.push(format!(
                    "populate_physmap replaced {} populated gfns (first {g:#x}, {}): \
                     their pages are orphaned",
                    k.replaced_gfns.len(),
                    reserved_gfn(*g).unwrap_or("RAM")
                ));
            }
            if let Some((g, what)) = k.reserved_hits.first() {
                errs.push(format!(
                    "{} gfns populated in the reserved range below 4 GiB (first {g:#x}: {what})",
                    k.reserved_hits.len()
                ));
            }
            let out: Vec<u64> = k
                .populated
                .iter()
                .filter(|&g| k.seg_of(g).is_none() && !k.special.contains(&g))
                .collect();
            if let Some(g) = out.first().filter(|_| !allow_outside) {
                errs.push(format!(
                    "{} populated gpfns lie in no segment (first {g:#x}; reservation leak)",
                    out.len()
                ));
            }
        }
        Mode::NotXen => {}
    }
    errs.truncate(20);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

impl Drop for Domain {
    /// Tears the domain down. Loaded modules are asked to unload (FINI),
    /// newest first, and once more with Xen's maximum and the host's memory
    /// raised if they refuse. One that still refuses (EBUSY while Xen
    /// cannot give its memory back, as it must) stays loaded: the domain is
    /// then destroyed
    /// the way Xen destroys one, its kernel threads stopped wherever they
    /// are (see kernel.rs, generations). That is not a driver bug. What
    /// is: a module that unloaded but left a kernel thread running.
    fn drop(&mut self) {
        crate::stall::release();
        let mut refused = Vec::new();
        {
            let _m = MODULE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(mi) = with(|k| k.modules.last().copied()) {
                let mut e = mi.cmd(MODULE_CMD_FINI);
                if e != 0 {
                    // Most often Xen's maximum (the last xl mem-set target +
                    // 1 MiB) keeps the ballooned memory from coming back: let
                    // it, as dom0 would before tearing the domain down.
                    with(|k| {
                        k.max_pages = u64::MAX / 4;
                        k.host_free = k.host_free.max(1 << 28);
                    });
                    e = mi.cmd(MODULE_CMD_FINI);
                }
                with(|k| k.modules.pop());
                if e != 0 {
                    refused.push(format!("{} (error {e})", mi.name()));
                }
            }
        }
        if refused.is_empty() {
            if !self.wait_until(|v| v.live_kthreads() == 0, Duration::from_secs(10)) {
                crate::kernel::kernel_panic(
                    "domain teardown: kernel threads still running after every module unloaded",
                );
            }
            with(|k| k.xenwatch_stop = true);
            WATCHQ.notify_all();
            if let Some(h) = self.xenwatch.take() {
                let _ = h.join();
            }
            LIVE_GEN.store(0, Ordering::SeqCst);
        } else {
            eprintln!(
                "balloon-sim: domain destroyed with module {} still loaded; \
                 its kernel threads are stopped where they stand",
                refused.join(", ")
            );
            self.freeze();
        }
        let k = lock().take();
        if let Some(mut k) = k {
            crate::ksync::kmem_free_all(&mut k);
            k.sysctl.free_all();
            xpmap_phys_to_machine_mapping.set(std::ptr::null_mut());
            crate::uvm::free_page_maps();
            crate::uvm::frame_mem_free();
            for a in k.arrays.drain(..) {
                // SAFETY: allocated by new_page_array with this layout.
                // No thread of this domain runs any more: every one has
                // exited or is parked for good.
                unsafe { std::alloc::dealloc(a.ptr.cast(), crate::uvm::page_array_layout(a.len)) };
            }
        }
        balloon::ffi::route_core_allocations_to_kmem(None);
        uvmexp.set(Uvmexp::default());
        physmem.set(0);
        CHANGED.notify_all();
    }
}

impl Domain {
    /// Stops every thread of this domain for good: the domain is no longer
    /// live, so each of its kernel threads parks at its next entry into the
    /// simulated kernel; threads waiting on a kernel mutex or condvar are
    /// woken to get there. Waits (bounded) until all have parked, so that
    /// none can touch what is freed next or a later domain.
    fn freeze(&mut self) {
        PARKED.store(0, Ordering::SeqCst);
        LIVE_GEN.store(0, Ordering::SeqCst);
        with(|k| k.xenwatch_stop = true);
        WATCHQ.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            crate::ksync::wake_all_waiters();
            CHANGED.notify_all();
            let xenwatch_running = self.xenwatch.as_ref().is_some_and(|h| !h.is_finished());
            let want = with(|k| k.live_kthreads) + u64::from(xenwatch_running);
            if PARKED.load(Ordering::SeqCst) >= want {
                break;
            }
            if Instant::now() >= deadline {
                crate::kernel::kernel_panic(&format!(
                    "domain teardown: {} of {want} threads of the destroyed domain did not stop",
                    want - PARKED.load(Ordering::SeqCst).min(want)
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(h) = self.xenwatch.take() {
            if h.is_finished() {
                let _ = h.join();
            }
        }
        crate::ksync::forget_wakeups();
    }
}
