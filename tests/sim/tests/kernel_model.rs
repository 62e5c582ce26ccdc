// SPDX-License-Identifier: BSD-2-Clause
//! Tests of the simulated kernel and Xen model, through the C test module
//! (csrc/testmod.c) and direct calls of the kernel API. Paths that must
//! panic the simulated kernel run in a child process (see `panic_child`).

use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};
use std::time::{Duration, Instant};

use balloon_sim::{globals, test_module, Domain, DomainConfig, Faults, Mode, SysctlValue};

mod common;
use common::kernel::{
    kpreempt_disable, kpreempt_enable, ksyms_getval, memop, pmap_zero_page, sim_vm_page_frame,
    uvm_pagealloc_strat, uvm_phys_to_vm_page, uvm_physseg_plug, xpq_flush_queue,
    xpq_queue_machphys_update, HYPERVISOR_memory_op, VmPage, DECREASE, DOMID_SELF, INCREASE,
    POPULATE,
};

#[repr(C)]
struct Pglist {
    first: *mut VmPage,
    last: *mut *mut VmPage,
}

impl Pglist {
    fn new() -> Box<Pglist> {
        let mut l = Box::new(Pglist {
            first: std::ptr::null_mut(),
            last: std::ptr::null_mut(),
        });
        l.last = &mut l.first;
        l
    }
    fn pfns(&self) -> Vec<u64> {
        let mut v = Vec::new();
        let mut p = self.first;
        while !p.is_null() {
            // SAFETY: a TAILQ of live vm_pages built by uvm_pglistalloc.
            unsafe {
                v.push(sim_vm_page_frame(p));
                p = (*p).next;
            }
        }
        v
    }
}

#[repr(C)]
struct KObj {
    p: *mut c_void,
}

extern "C" {
    fn uvm_pagefree(pg: *mut VmPage);
    fn uvm_pglistalloc(
        size: u64,
        low: u64,
        high: u64,
        align: u64,
        boundary: u64,
        list: *mut Pglist,
        nsegs: c_int,
        waitok: c_int,
    ) -> c_int;
    fn uvm_pglistfree(list: *mut Pglist);
    fn uvm_vm_page_to_phys(pg: *const VmPage) -> u64;
    fn uvm_physseg_unplug(pfn: u64, n: usize) -> bool;
    fn simtest_walk_hotplug(s: *mut u64, e: *mut u64, max: c_int) -> c_int;
    fn simtest_walk_array(s: *mut u64, e: *mut u64, max: c_int) -> c_int;
    fn kmem_alloc(size: usize, flags: u32) -> *mut c_void;
    fn kmem_free(p: *mut c_void, size: usize);
    fn mutex_init(m: *mut KObj, t: c_int, ipl: c_int);
    fn mutex_enter(m: *mut KObj);
    fn mutex_exit(m: *mut KObj);
    fn mutex_destroy(m: *mut KObj);
    fn cv_init(c: *mut KObj, w: *const c_char);
    fn cv_destroy(c: *mut KObj);
    fn cv_timedwait(c: *mut KObj, m: *mut KObj, ticks: c_int) -> c_int;
}

const CURRENT: c_uint = 3;
const MAXIMUM: c_uint = 4;
const T: Duration = Duration::from_secs(5);

fn small() -> DomainConfig {
    DomainConfig::pv()
        .boot_mib(16)
        .max_mib(64)
        .host_free_mib(128)
}

fn query(cmd: c_uint, domid: u16) -> c_int {
    let mut d = domid;
    // SAFETY: a domid_t in memory.
    unsafe { HYPERVISOR_memory_op(cmd, &mut d as *mut u16 as *mut c_void) }
}

fn alloc(zero: bool) -> *mut VmPage {
    // SAFETY: plain kernel call.
    unsafe {
        uvm_pagealloc_strat(
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            if zero { 2 } else { 0 },
            0,
            0,
        )
    }
}

fn pfn_of(pg: *mut VmPage) -> u64 {
    // SAFETY: a live vm_page.
    unsafe { uvm_vm_page_to_phys(pg) >> 12 }
}

fn p2m_write(pfn: u64, v: u64) {
    let p = globals::xpmap_phys_to_machine_mapping.get();
    // SAFETY: pfn within the p2m capacity (or into the guard, on purpose).
    unsafe { p.add(pfn as usize).write_volatile(v) };
}

/// PV: give these owned pages to Xen as the shim would (unmap, decrease).
fn pv_balloon_out(d: &Domain, pgs: &[*mut VmPage]) -> c_int {
    let mut mfns: Vec<u64> = pgs.iter().map(|&p| d.p2m(pfn_of(p)).unwrap()).collect();
    for &p in pgs {
        p2m_write(pfn_of(p), !0);
    }
    memop(DECREASE, &mut mfns, DOMID_SELF, 0)
}

/// PV: back these frames with new MFNs (increase, p2m, m2p).
fn pv_back(pfns: &[u64]) -> usize {
    let mut mfns = vec![0u64; pfns.len()];
    let n = memop(INCREASE, &mut mfns, DOMID_SELF, 0) as usize;
    // SAFETY: plain kernel calls; preemption is disabled around the
    // queue and its flush, as x86_xpmap.c's per-CPU queue requires.
    unsafe { kpreempt_disable() };
    for (i, &pfn) in pfns.iter().enumerate().take(n) {
        p2m_write(pfn, mfns[i]);
        // SAFETY: plain kernel call with an owned MFN.
        unsafe { xpq_queue_machphys_update(mfns[i] << 12, pfn << 12) };
    }
    // SAFETY: as above.
    unsafe {
        xpq_flush_queue();
        kpreempt_enable();
    }
    n
}

/// x86_xpmap.c 1.84.4.2: the m2p queue is curcpu()'s. Without
/// kpreempt_disable the thread may move between queue and flush; the
/// update then stays in the other CPU's queue and Xen's m2p is stale.
#[test]
fn an_m2p_update_queued_on_one_cpu_is_not_flushed_from_another() {
    let d = Domain::boot(small());
    let pg = alloc(true);
    assert_eq!(pv_balloon_out(&d, &[pg]), 1);
    let pfn = pfn_of(pg);
    let mut mfns = vec![0u64; 1];
    assert_eq!(memop(INCREASE, &mut mfns, DOMID_SELF, 0), 1);
    p2m_write(pfn, mfns[0]);
    // SAFETY: plain kernel calls with an owned MFN, preemption enabled:
    // each call is a preemption point that moves this thread.
    unsafe {
        xpq_queue_machphys_update(mfns[0] << 12, pfn << 12);
        xpq_flush_queue();
    }
    assert_eq!(d.m2p(mfns[0]), None, "the other CPU's queue was flushed");
    let e = d.check().expect_err("a stranded update must show");
    assert!(e.contains("unflushed"), "{e}");
    // The next flush runs back on the CPU that holds the update.
    // SAFETY: as above.
    unsafe { xpq_flush_queue() };
    assert_eq!(d.m2p(mfns[0]), Some(pfn));
    // SAFETY: the test's page, backed again.
    unsafe { uvm_pagefree(pg) };
    d.check().unwrap();
}

#[test]
fn boot_defaults() {
    let d = Domain::boot(DomainConfig::default());
    let boot = 262_144;
    assert_eq!(d.reservation(), boot);
    // libxl_dom.c @021cd1c4: Xen's maximum is memory + 1 MiB; maxmem is
    // only memory/static-max (KiB), beside memory/target.
    assert_eq!(d.max_reservation(), boot + 256);
    assert_eq!(
        d.xenstore_read("memory/static-max"),
        Some((16 * boot).to_string())
    );
    assert_eq!(
        d.xenstore_read("memory/target"),
        Some((4 * boot).to_string())
    );
    assert_eq!(d.segments(), vec![(256, 256 + boot)]);
    let u = d.uvmexp();
    assert_eq!(u.npages as u64, boot);
    assert_eq!(u.free as u64, boot - boot / 10);
    assert_eq!((u.freemin, u.freetarg), (256, 512));
    assert_eq!(d.physmem(), boot);
    assert_eq!(globals::xen_start_info.get().nr_pages, boot);
    assert_eq!(globals::vm_guest.get(), 2);
    assert_eq!(globals::hz.get(), 100);
    assert_eq!(d.xenstore_read("memory/target").unwrap(), "1048576");
    assert_eq!(d.xenstore_read("memory/static-max").unwrap(), "4194304");
    assert_eq!(query(CURRENT, DOMID_SELF), boot as c_int);
    assert_eq!(query(MAXIMUM, DOMID_SELF), (boot + 256) as c_int);
    assert_eq!(query(CURRENT, 3), -3);
    assert_eq!(query(99, DOMID_SELF), -38);
    d.check().unwrap();
}

#[test]
fn pv_balloon_cycle_scrub_and_p2m() {
    let d = Domain::boot(small());
    let res0 = d.reservation();
    // Highest free frame first.
    let top = d.segments()[0].1 - 1;
    let pgs: Vec<_> = (0..8).map(|i| alloc(i < 4)).collect();
    assert_eq!(pfn_of(pgs[0]), top);
    assert_eq!(d.pages_owned_by_module(), 8);
    assert_eq!(d.frame_content(pfn_of(pgs[0])), Some(0));
    assert_ne!(d.frame_content(pfn_of(pgs[7])), Some(0));
    // SAFETY: zeroing a page the test owns.
    unsafe { pmap_zero_page(pfn_of(pgs[5]) << 12) };
    let mfn = d.p2m(top).unwrap();
    assert_eq!(d.m2p(mfn), Some(top));
    assert_eq!(pv_balloon_out(&d, &pgs), 8);
    assert_eq!(d.reservation(), res0 - 8);
    assert_eq!(d.dirty_frames_given(), 3);
    assert_eq!(d.clean_frames_given(), 5);
    assert_eq!(d.m2p(mfn), None);
    d.check().unwrap();
    // Back the frames again and return them to UVM.
    let pfns: Vec<u64> = pgs.iter().map(|&p| pfn_of(p)).collect();
    assert_eq!(pv_back(&pfns), 8);
    assert_ne!(d.p2m(top), Some(mfn), "MFNs are never reused");
    assert_eq!(d.frame_content(top), Some(0), "new frames are zero");
    for &p in &pgs {
        // SAFETY: pages the test owns, backed again.
        unsafe { uvm_pagefree(p) };
    }
    assert_eq!(d.reservation(), res0);
    assert_eq!(d.pages_owned_by_module(), 0);
    d.check().unwrap();
}

#[test]
fn check_finds_broken_invariants() {
    let d = Domain::boot(small());
    // An MFN obtained but never mapped is a leaked reservation.
    let mut m = [0u64; 1];
    assert_eq!(memop(INCREASE, &mut m, DOMID_SELF, 0), 1);
    assert!(d.check().unwrap_err().contains("not in the p2m"));
    p2m_write(100, m[0]);
    let e = d.check().unwrap_err();
    assert!(e.contains("m2p"), "{e}");
    assert!(e.contains("no segment"), "{e}");
    p2m_write(100, !0);
    let mut m2 = m;
    assert_eq!(memop(DECREASE, &mut m2, DOMID_SELF, 0), 1);
    d.check().unwrap();
    // The guard zone past the p2m capacity.
    let cap = small().p2m_frames();
    p2m_write(cap + 3, 7);
    assert!(d.check().unwrap_err().contains("past its capacity"));
    p2m_write(cap + 3, 0x5ca1_ab1e_dead_f00d);
    d.check().unwrap();
}

#[test]
fn libxl_mem_set_and_mem_max_and_the_pvh_special_pages() {
    let d = Domain::boot(DomainConfig::pvh().boot_mib(64).max_mib(128));
    let boot = 64 * 256;
    // xg_dom_x86.c: 8 special pages below 0xff000, counted by Xen.
    assert_eq!(d.reservation(), boot + 8);
    assert_eq!(d.memory(), boot);
    d.check().unwrap();
    // libxl_set_memory_target: Xen's maximum first (target + 1 MiB, up or
    // down), then memory/target; above static-max nothing changes.
    d.try_xl_mem_set(100 * 1024).unwrap();
    assert_eq!(d.max_reservation(), 101 * 256);
    assert_eq!(d.xenstore_read("memory/target").as_deref(), Some("102400"));
    d.try_xl_mem_set(32 * 1024).unwrap();
    assert_eq!(
        d.max_reservation(),
        33 * 256,
        "below the reservation: Xen allows it"
    );
    d.check().unwrap();
    let e = d.try_xl_mem_set(129 * 1024).unwrap_err();
    assert!(e.0.contains("memory_dynamic_max"), "{e:?}");
    assert_eq!(d.xenstore_read("memory/target").as_deref(), Some("32768"));
    // libxl_domain_setmaxmem: not below the target; static-max untouched.
    assert!(d
        .xl_mem_max(16 * 1024)
        .unwrap_err()
        .0
        .contains("memory_static_max"));
    d.xl_mem_max(512 * 1024).unwrap();
    assert_eq!(d.max_reservation(), 513 * 256);
    assert_eq!(
        d.xenstore_read("memory/static-max").as_deref(),
        Some("131072")
    );
    // A resume drops what the guest wrote and keeps what the toolstack
    // wrote. (Not control/shutdown: the kernel's own watch there takes
    // the request and removes the node, shutdown_xenbus.c.)
    d.xenstore_write("data/from-dom0", "");
    d.resume();
    assert_eq!(d.xenstore_read("data/from-dom0").as_deref(), Some(""));
}

/// `struct xen_memory_map` and the E820 entries it points at.
#[repr(C)]
struct MemoryMap {
    nr_entries: c_uint,
    buffer: *mut [u8; 20],
}

/// XENMEM_memory_map with room for `room` entries: the return value and
/// the (address, size, type) entries written.
fn memory_map(room: usize) -> (c_int, Vec<(u64, u64, u32)>) {
    let mut buf = vec![[0u8; 20]; room];
    let mut m = MemoryMap {
        nr_entries: room as c_uint,
        buffer: buf.as_mut_ptr(),
    };
    // SAFETY: a valid xen_memory_map with room for `room` entries.
    let rc = unsafe { HYPERVISOR_memory_op(9, &mut m as *mut MemoryMap as *mut c_void) };
    let entries = buf
        .iter()
        .take(m.nr_entries as usize)
        .map(|e| {
            let u = |r: std::ops::Range<usize>| {
                let mut b = [0u8; 8];
                b[..r.len()].copy_from_slice(&e[r]);
                u64::from_le_bytes(b)
            };
            (u(0..8), u(8..16), u(16..20) as u32)
        })
        .collect();
    (rc, entries)
}

/// XENMEM_memory_map (mm.c @c447b730): -ENOSYS when the toolstack set no
/// map (PV); for PVH the map libxl_x86.c `domain_construct_memmap` sets:
/// RAM, and the 8 special pages below 0xff000000 as E820_RESERVED; a
/// short buffer gets the first entries; plugs do not change it.
#[test]
fn xenmem_memory_map_is_the_map_libxl_set() {
    {
        let _d = Domain::boot(small());
        assert_eq!(memory_map(8).0, -38, "PV: no map set");
    }
    let d = Domain::boot(DomainConfig::pvh().boot_mib(64).max_mib(128));
    let (rc, map) = memory_map(8);
    assert_eq!(rc, 0);
    assert_eq!(
        map,
        vec![(0x100000, 64 << 20, 1), (0xfeff8000, 8 * 4096, 2),]
    );
    assert_eq!(memory_map(1), (0, vec![(0x100000, 64 << 20, 1)]));
    let special: u64 = map.iter().filter(|e| e.2 == 2).map(|e| e.1 / 4096).sum();
    assert_eq!(d.reservation() - d.memory(), special);
}

#[test]
fn dmesg_lines_carry_the_kernel_stamp() {
    let d = Domain::boot(small());
    let buf = d.dmesg_msgbuf();
    let plain = d.dmesg();
    assert_eq!(buf.len(), plain.len());
    for (raw, text) in buf.iter().zip(&plain) {
        // subr_prf.c 1.201 addtstamp: "[% 4jd.%.7ld] " before each line.
        let (stamp, rest) = raw.split_at(raw.find("] ").unwrap() + 2);
        assert_eq!(rest, text);
        assert!(stamp.starts_with('[') && stamp.len() >= 14, "{stamp:?}");
        let (sec, frac) = stamp[1..stamp.len() - 2].split_once('.').unwrap();
        assert!(
            sec.len() >= 4 && sec.trim_start().parse::<u64>().is_ok(),
            "{stamp:?}"
        );
        assert_eq!(frac.len(), 7, "{stamp:?}");
    }
}

#[test]
fn hypercall_partial_results() {
    let d = Domain::boot(small().max_mib(17).host_free_mib(1));
    let room = 256; // 17 MiB - 16 MiB
    assert_eq!(d.host_free(), 256);
    // Argument failures do nothing.
    let mut e = vec![0u64; 10];
    assert_eq!(memop(INCREASE, &mut e, 5, 0), 0);
    assert_eq!(
        memop(INCREASE, &mut e, DOMID_SELF, 10),
        0,
        "an order above domu_max_order (9)"
    );
    assert_eq!(
        memop(POPULATE, &mut e, DOMID_SELF, 0),
        0,
        "PV has no populate"
    );
    // Injected per-call limit.
    d.faults_mut().increase_limit = Some(3);
    assert_eq!(memop(INCREASE, &mut e, DOMID_SELF, 0), 3);
    d.set_faults(Faults::default());
    // Decrease stops at the first MFN the domain does not own.
    let mut back = vec![e[0], e[1], 12345, e[2]];
    assert_eq!(memop(DECREASE, &mut back, DOMID_SELF, 0), 2);
    let mut back = vec![e[2]];
    assert_eq!(memop(DECREASE, &mut back, DOMID_SELF, 0), 1);
    // max_pages stops growth.
    let mut big = vec![0u64; room + 10];
    assert_eq!(memop(INCREASE, &mut big, DOMID_SELF, 0), room as c_int);
    assert_eq!(memop(INCREASE, &mut e, DOMID_SELF, 0), 0);
    let mut all = big[..room].to_vec();
    d.faults_mut().decrease_limit = Some(5);
    assert_eq!(memop(DECREASE, &mut all, DOMID_SELF, 0), 5);
    d.set_faults(Faults::default());
    assert_eq!(
        memop(DECREASE, &mut all[5..], DOMID_SELF, 0),
        room as c_int - 5
    );
    // The host running dry stops growth too.
    d.set_host_free(2);
    assert_eq!(memop(INCREASE, &mut e, DOMID_SELF, 0), 2);
    assert_eq!(d.host_free(), 0);
    let mut two = e[..2].to_vec();
    assert_eq!(memop(DECREASE, &mut two, DOMID_SELF, 0), 2);
    d.check().unwrap();
}

#[test]
fn pvh_populate_plug_pglist_unplug() {
    let d = Domain::boot(
        small()
            .mode(Mode::Pvh)
            .assisted()
            .plain_plug_after_boot(true),
    );
    assert_eq!(globals::vm_guest.get(), 3);
    assert!(globals::xpmap_phys_to_machine_mapping.get().is_null());
    // libxl's maximum is memory + 1 MiB: raise it as xl mem-max would.
    d.set_max_reservation(d.max_reservation() + 1024);
    let res0 = d.reservation();
    let (start, n) = (0x10000u64, 512u64);
    let mut g: Vec<u64> = (start..start + n).collect();
    assert_eq!(
        memop(INCREASE, &mut g, DOMID_SELF, 0),
        0,
        "PVH has no increase"
    );
    d.faults_mut().populate_limit = Some(100);
    assert_eq!(memop(POPULATE, &mut g, DOMID_SELF, 0), 100);
    d.set_faults(Faults::default());
    assert_eq!(memop(POPULATE, &mut g[100..], DOMID_SELF, 0), 412);
    let free0 = d.free_pages();
    // SAFETY: kernel calls on backed frames.
    assert!(unsafe { uvm_physseg_plug(start, n as usize, std::ptr::null_mut()) });
    assert_eq!(d.free_pages(), free0 + n);
    assert_eq!(d.physmem(), 4096 + n);
    assert_eq!(d.uvmexp().npages as u64, 4096 + n);
    d.check().unwrap();
    // Claim the whole new segment by range, give it back, unplug it.
    let mut l = Pglist::new();
    let (lo, hi) = (start << 12, (start + n) << 12);
    // SAFETY: kernel calls with a valid list head.
    let e = unsafe { uvm_pglistalloc(n << 12, lo, hi, 4096, 0, &mut *l, n as c_int, 0) };
    assert_eq!(e, 0);
    let pfns = l.pfns();
    assert_eq!(pfns.len() as u64, n);
    assert!(pfns.iter().all(|&p| (start..start + n).contains(&p)));
    let mut gp = pfns.clone();
    assert_eq!(memop(DECREASE, &mut gp, DOMID_SELF, 0), n as c_int);
    assert_eq!(d.reservation(), res0);
    // SAFETY: the test owns every page of the range.
    assert!(unsafe { uvm_physseg_unplug(start, n as usize) });
    assert_eq!(d.segments().len(), 1);
    assert_eq!(d.physmem(), 4096 + n, "unplug leaves physmem");
    assert_eq!(d.uvmexp().npages, 4096);
    assert_eq!(d.pages_owned_by_module(), 0);
    d.check().unwrap();
}

#[test]
fn plug_unplug_rules_and_segment_walk() {
    let d = Domain::boot(small().assisted().plain_plug_after_boot(true));
    // SAFETY (whole test): kernel calls with valid arguments.
    unsafe {
        assert!(!uvm_physseg_unplug(5, 1), "pfn in no segment");
        assert!(!uvm_physseg_unplug(256 + 4000, 200), "past the segment end");
        assert!(d.dmesg().iter().any(|l| l.contains("oversized")));
        // Back 64 frames at 0x2000 and plug them.
        let pfns: Vec<u64> = (0x2000..0x2040).collect();
        assert_eq!(pv_back(&pfns), 64);
        d.faults_mut().plug_fail = true;
        assert!(!uvm_physseg_plug(0x2000, 64, std::ptr::null_mut()));
        d.set_faults(Faults::default());
        assert!(
            !uvm_physseg_plug(0x2000, 5000, std::ptr::null_mut()),
            "slab rule"
        );
        let mut h: u64 = 0;
        assert!(uvm_physseg_plug(
            0x2000,
            64,
            &mut h as *mut u64 as *mut c_void
        ));
        assert_ne!(h, 0);
        d.check().unwrap();
        // Claim frames 0x2010..0x2020 and unplug that middle chunk.
        let mut l = Pglist::new();
        let e = uvm_pglistalloc(
            16 << 12,
            0x2010 << 12,
            0x2020 << 12,
            4096,
            0,
            &mut *l,
            16,
            0,
        );
        assert_eq!(e, 0);
        d.faults_mut().unplug_fail = true;
        assert!(!uvm_physseg_unplug(0x2010, 16));
        d.set_faults(Faults::default());
        let mut mfns: Vec<u64> = (0x2010..0x2020).map(|p| d.p2m(p).unwrap()).collect();
        for p in 0x2010..0x2020 {
            p2m_write(p, !0);
        }
        assert_eq!(memop(DECREASE, &mut mfns, DOMID_SELF, 0), 16);
        let stale = uvm_phys_to_vm_page(0x2010 << 12);
        assert!(uvm_physseg_unplug(0x2010, 16));
        assert!(uvm_phys_to_vm_page(0x2010 << 12).is_null());
        assert!(
            std::ptr::addr_of!((*stale).next).read_volatile().is_null(),
            "stale vm_page memory stays readable"
        );
        assert_eq!(sim_vm_page_frame(stale), 0x2010);
        assert_eq!(
            d.segments(),
            vec![(256, 256 + 4096), (0x2000, 0x2010), (0x2020, 0x2040)]
        );
        d.check().unwrap();
        let (mut s, mut e) = ([0u64; 8], [0u64; 8]);
        assert_eq!(simtest_walk_hotplug(s.as_mut_ptr(), e.as_mut_ptr(), 8), 3);
        assert_eq!(&s[..3], &[256, 0x2000, 0x2020]);
        assert_eq!(&e[..3], &[256 + 4096, 0x2010, 0x2040]);
    }
}

#[test]
fn array_kernel_walk_and_ksyms() {
    let d = Domain::boot(
        small()
            .hotplug(false)
            .boot_segments(vec![(16, 100), (256, 3000)]),
    );
    let (mut s, mut e) = ([0u64; 8], [0u64; 8]);
    // SAFETY: kernel calls with valid buffers.
    unsafe {
        assert_eq!(simtest_walk_array(s.as_mut_ptr(), e.as_mut_ptr(), 8), 2);
        let mut v: c_ulong = 0;
        let sym = c"uvm_physseg_graph".as_ptr();
        assert_eq!(ksyms_getval(std::ptr::null(), sym, &mut v, 0x200), 2);
    }
    assert_eq!((s[0], e[0], s[1], e[1]), (16, 116, 256, 3256));
    assert_eq!(d.reservation(), 3100);
    drop(d);
    let _d = Domain::boot(small());
    let mut v: c_ulong = 0;
    // SAFETY: as above.
    unsafe {
        let sym = c"uvm_physseg_graph".as_ptr();
        assert_eq!(ksyms_getval(std::ptr::null(), sym, &mut v, 0x200), 0);
        assert_eq!(ksyms_getval(std::ptr::null(), sym, &mut v, 0), 2);
    }
}

#[test]
fn pagealloc_faults_pressure_and_pglist() {
    let d = Domain::boot(small());
    d.faults_mut().pagealloc_fail_after = Some(2);
    assert!(!alloc(false).is_null());
    assert!(!alloc(false).is_null());
    assert!(alloc(false).is_null());
    d.set_faults(Faults::default());
    let free = d.free_pages();
    assert_eq!(d.kernel_alloc(free + 10), free);
    assert!(alloc(false).is_null(), "nothing left");
    let mut l = Pglist::new();
    // SAFETY: kernel calls with a valid list head.
    unsafe {
        assert_eq!(
            uvm_pglistalloc(4 << 12, 0, 1 << 40, 4096, 0, &mut *l, 4, 0),
            12
        );
        assert_eq!(d.kernel_free(100), 100);
        assert_eq!(
            uvm_pglistalloc(4 << 12, 0, 1 << 20, 4096, 0, &mut *l, 4, 0),
            22,
            "no segment"
        );
        // An alignment above PAGE_SIZE takes the contiguous path
        // (uvm_pglist.c 1.90): one aligned run (was: not modelled, EINVAL).
        assert_eq!(
            uvm_pglistalloc(4 << 12, 0, 1 << 40, 8192, 0, &mut *l, 4, 0),
            0
        );
        let run = l.pfns();
        assert_eq!(run.len(), 4);
        assert_eq!(run[0] % 2, 0, "aligned to 8 KiB");
        assert!(run.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
        uvm_pglistfree(&mut *l);
        d.faults_mut().pglistalloc_fail_after = Some(0);
        assert_eq!(
            uvm_pglistalloc(4 << 12, 0, 1 << 40, 4096, 0, &mut *l, 4, 0),
            12
        );
        d.set_faults(Faults::default());
        assert_eq!(
            uvm_pglistalloc(4 << 12, 0, 1 << 40, 4096, 0, &mut *l, 4, 0),
            0
        );
        assert_eq!(l.pfns().len(), 4);
        assert_eq!(d.pages_owned_by_module(), 6);
        uvm_pglistfree(&mut *l);
    }
    assert!(l.first.is_null());
    assert_eq!(d.pages_owned_by_module(), 2);
    d.check().unwrap();
}

#[test]
fn kmem_accounting() {
    let d = Domain::boot(small());
    // SAFETY: kmem calls with matching sizes.
    unsafe {
        let a = kmem_alloc(100, 1);
        let b = kmem_alloc(28, 2);
        assert_eq!(d.kmem_outstanding(), (128, 2));
        d.faults_mut().kmem_nosleep_fail = true;
        assert!(kmem_alloc(8, 2).is_null());
        assert!(!kmem_alloc(8, 1).is_null() || panic!("KM_SLEEP never fails"));
        d.set_faults(Faults::default());
        kmem_free(a, 100);
        kmem_free(b, 28);
    }
    assert_eq!(d.kmem_outstanding(), (8, 1));
}

#[test]
fn cv_timedwait_time_scaling() {
    for (scale, ticks, min_real, max_real) in [
        (1000u32, 100, Duration::ZERO, Duration::from_millis(300)),
        (
            1,
            10,
            Duration::from_millis(95),
            Duration::from_millis(1000),
        ),
    ] {
        let d = Domain::boot(small().time_scale(scale));
        let (mut m, mut c) = (
            KObj {
                p: std::ptr::null_mut(),
            },
            KObj {
                p: std::ptr::null_mut(),
            },
        );
        let up0 = d.uptime();
        let t0 = Instant::now();
        // SAFETY: kernel calls on initialised objects.
        let r = unsafe {
            mutex_init(&mut m, 2, 0);
            cv_init(&mut c, c"test".as_ptr());
            mutex_enter(&mut m);
            let r = cv_timedwait(&mut c, &mut m, ticks);
            mutex_exit(&mut m);
            cv_destroy(&mut c);
            mutex_destroy(&mut m);
            r
        };
        let real = t0.elapsed();
        assert_eq!(r, 35, "EWOULDBLOCK");
        assert!(
            real >= min_real && real < max_real,
            "scale {scale}: {real:?}"
        );
        let sim = d.uptime() - up0;
        assert!(
            sim >= Duration::from_millis(ticks as u64 * 10),
            "scale {scale}: {sim:?}"
        );
    }
}

#[test]
fn testmod_sysctl_watch_thread_pages() {
    let d = Domain::boot(small());
    assert_eq!(d.modload(test_module()), Ok(()));
    assert_eq!(d.modload(test_module()), Err(17));
    assert_eq!(d.modstat(), vec!["simtest".to_string()]);
    let names = d.sysctl_list("hw.simtest");
    assert!(names.contains(&"hw.simtest.want".to_string()), "{names:?}");
    assert_eq!(names.len(), 9);
    assert_eq!(d.sysctl_describe("hw.simtest.held").unwrap(), "pages held");
    // The watch fires once at registration.
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, T));
    assert_eq!(
        d.sysctl_read("hw.simtest.target"),
        Ok(SysctlValue::Quad(16384))
    );
    d.xl_mem_set(12345);
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 2, T));
    assert_eq!(
        d.sysctl_read("hw.simtest.target"),
        Ok(SysctlValue::Quad(12345))
    );
    d.xenstore_write("memory/other", "1");
    d.xenstore_write("memory/target/sub", "1");
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 3, T));
    // Handler and plain sysctl_lookup nodes.
    assert_eq!(
        d.sysctl_write("hw.simtest.want", SysctlValue::Int(5000)),
        Err(22)
    );
    assert_eq!(d.sysctl_write_raw("hw.simtest.want", &[1, 0]), Err(22));
    assert_eq!(
        d.sysctl_write("hw.simtest.held", SysctlValue::Int(1)),
        Err(1)
    );
    assert_eq!(
        d.sysctl_write("hw.simtest.flag", SysctlValue::Bool(true)),
        Ok(())
    );
    assert_eq!(
        d.sysctl_read("hw.simtest.flag"),
        Ok(SysctlValue::Bool(true))
    );
    assert_eq!(d.sysctl_write_raw("hw.simtest.flag", &[2]), Err(22));
    let long = SysctlValue::String("x".repeat(16));
    assert_eq!(d.sysctl_write("hw.simtest.name", long), Err(22));
    let s = SysctlValue::String("renamed".into());
    assert_eq!(d.sysctl_write("hw.simtest.name", s.clone()), Ok(()));
    assert_eq!(d.sysctl_read("hw.simtest.name"), Ok(s));
    assert_eq!(d.sysctl_read("hw.nosuch"), Err(2));
    // The worker thread allocates and frees pages on request.
    assert_eq!(
        d.sysctl_write("hw.simtest.want", SysctlValue::Int(300)),
        Ok(())
    );
    assert!(d.wait_until(|v| v.module_pages() == 300, T));
    assert_eq!(
        d.sysctl_write("hw.simtest.want", SysctlValue::Int(100)),
        Ok(())
    );
    assert!(d.wait_until(|v| v.module_pages() == 100, T));
    assert_eq!(d.live_kthreads(), 1);
    d.check().unwrap();
    // FINI may refuse; then it unloads cleanly.
    assert_eq!(
        d.sysctl_write("hw.simtest.busy", SysctlValue::Int(1)),
        Ok(())
    );
    assert_eq!(d.modunload(), Err(16));
    assert_eq!(d.modstat().len(), 1);
    assert_eq!(
        d.sysctl_write("hw.simtest.busy", SysctlValue::Int(0)),
        Ok(())
    );
    assert_eq!(d.modunload(), Ok(()));
    assert_eq!(d.live_kthreads(), 0);
    assert_eq!(d.pages_owned_by_module(), 0);
    assert!(d.leaked_sysctl_nodes().is_empty());
    assert_eq!(d.kmem_outstanding(), (0, 0));
    assert!(d.dmesg().iter().any(|l| l == "simtest: unloaded"));
    d.check().unwrap();
    // A module that forgets its teardown is caught.
    assert_eq!(d.modload(test_module()), Ok(()));
    assert_eq!(
        d.sysctl_write("hw.simtest.leak", SysctlValue::Bool(true)),
        Ok(())
    );
    assert_eq!(d.modunload(), Ok(()));
    assert_eq!(d.leaked_sysctl_nodes().len(), 9);
    assert_eq!(d.kmem_outstanding(), (128, 1));
}

#[test]
fn builtin_balloon_and_xenstore_errors() {
    let d = Domain::boot(small().builtin_balloon(true));
    assert_eq!(d.modload(test_module()), Err(17));
    drop(d);
    let d = Domain::boot(small());
    d.faults_mut().xenstore_read_error = Some(5);
    assert_eq!(d.modload(test_module()), Ok(()));
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, T));
    assert_eq!(
        d.sysctl_read("hw.simtest.target"),
        Ok(SysctlValue::Quad(-1))
    );
    d.set_faults(Faults::default());
    d.xl_mem_set(999);
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 2, T));
    assert_eq!(
        d.sysctl_read("hw.simtest.target"),
        Ok(SysctlValue::Quad(999))
    );
    // Dropping the domain unloads the module.
}

#[test]
fn not_xen_has_no_hypercalls() {
    let d = Domain::boot(DomainConfig::not_xen().boot_mib(16));
    assert_eq!(globals::vm_guest.get(), 0);
    assert_eq!(query(CURRENT, DOMID_SELF), -38);
    assert!(d.xenstore_read("memory/target").is_none());
    d.check().unwrap();
}

// ---- kernel panics, each in a child process ----

fn run_case(case: &str) {
    // The kernel-assisted flavour, where a plug is allowed; the stock
    // cases boot their own.
    let d = Domain::boot(small().assisted().plain_plug_after_boot(true));
    // SAFETY: these calls break kernel rules on purpose; each must panic.
    unsafe {
        match case {
            "double_free" => {
                let p = alloc(false);
                uvm_pagefree(p);
                uvm_pagefree(p);
            }
            "free_unbacked" => {
                let p = alloc(false);
                p2m_write(pfn_of(p), !0);
                uvm_pagefree(p);
            }
            "plug_unbacked" => {
                uvm_physseg_plug(0x3000, 8, std::ptr::null_mut());
            }
            "plug_overlap" => {
                uvm_physseg_plug(300, 8, std::ptr::null_mut());
            }
            "plug_array_kernel" => {
                drop(d);
                let _d = Domain::boot(small().hotplug(false));
                uvm_physseg_plug(0x3000, 8, std::ptr::null_mut());
            }
            "plug_stock_pv" => {
                drop(d);
                let _d = Domain::boot(small());
                let pfns: Vec<u64> = (0x3000..0x3008).collect();
                pv_back(&pfns);
                uvm_physseg_plug(0x3000, 8, std::ptr::null_mut());
            }
            "plug_stock_pvh" => {
                drop(d);
                let _d = Domain::boot(small().mode(Mode::Pvh));
                uvm_physseg_plug(0x3000, 8, std::ptr::null_mut());
            }
            "unplug_free_pages" => {
                uvm_physseg_unplug(256 + 4000, 8);
            }
            "unplug_last_segment" => {
                let mut l = Pglist::new();
                uvm_pglistalloc(4096 << 12, 0, 1 << 40, 4096, 0, &mut *l, 4096, 0);
                d.kernel_alloc(1 << 20);
                uvm_physseg_unplug(256, 4096);
            }
            "gone_page" => {
                let pfns: Vec<u64> = (0x2000..0x2004).collect();
                pv_back(&pfns);
                uvm_physseg_plug(0x2000, 4, std::ptr::null_mut());
                let mut l = Pglist::new();
                uvm_pglistalloc(4 << 12, 0x2000 << 12, 0x2004 << 12, 4096, 0, &mut *l, 4, 0);
                let p = l.first;
                uvm_physseg_unplug(0x2000, 4);
                uvm_pagefree(p);
            }
            "give_kernel_page" => {
                let mut m = [d.p2m(256).unwrap()];
                memop(DECREASE, &mut m, DOMID_SELF, 0);
            }
            "mutex_recursion" => {
                let mut m = KObj {
                    p: std::ptr::null_mut(),
                };
                mutex_init(&mut m, 2, 0);
                mutex_enter(&mut m);
                mutex_enter(&mut m);
            }
            "kmem_wrong_size" => {
                let p = kmem_alloc(64, 1);
                kmem_free(p, 32);
            }
            _ => panic!("unknown case {case}"),
        }
    }
}

/// Runs one panic case when SIM_PANIC_CASE is set (in a child process);
/// does nothing otherwise.
#[test]
fn panic_child() {
    if let Ok(case) = std::env::var("SIM_PANIC_CASE") {
        run_case(&case);
        eprintln!("CASE RETURNED WITHOUT A KERNEL PANIC");
    }
}

#[test]
fn kernel_panics() {
    common::expect_kernel_panics(
        "SIM_PANIC_CASE",
        &[
            ("double_free", "double free"),
            ("free_unbacked", "unbacked frame"),
            ("plug_unbacked", "plugging unbacked frames"),
            ("plug_overlap", "overlaps segment"),
            ("plug_array_kernel", "Tried to add RAM after uvm_page_init"),
            ("plug_stock_pv", "uvm_physseg_plug on stock XEN3_DOMU"),
            ("plug_stock_pvh", "uvm_physseg_plug on stock GENERIC"),
            ("unplug_free_pages", "unplug of pages on the free list"),
            ("unplug_last_segment", "out of memory"),
            ("gone_page", "unplugged"),
            ("give_kernel_page", "given to Xen while kernel"),
            ("mutex_recursion", "locking against myself"),
            ("kmem_wrong_size", "freed with size 32"),
        ],
    );
}

/// Xen's populate_physmap does not check that a gfn is free (p2m.c
/// p2m_add_page replaces the mapping), and [0xfc000000, 4 GiB) of a PVH
/// guest holds ACPI tables, the local APIC and the special pages
/// (libxl_x86.c, libxl_x86_acpi.c, xg_dom_x86.c): populating there
/// succeeds and `check` reports what was hit.
#[test]
fn populate_physmap_replaces_special_pages_without_complaint() {
    let d = Domain::boot(small().mode(Mode::Pvh));
    d.set_max_reservation(d.max_reservation() + 1024);
    let mut g = vec![0xfeffe_u64];
    assert_eq!(
        memop(POPULATE, &mut g, DOMID_SELF, 0),
        1,
        "Xen does not refuse"
    );
    let e = d.check().expect_err("a replaced special page must show");
    assert!(e.contains("replaced 1 populated gfns"), "{e}");
    assert!(e.contains("special page"), "{e}");
    drop(d); // one domain per process at a time
    let d = Domain::boot(small().mode(Mode::Pvh));
    d.set_max_reservation(d.max_reservation() + 1024);
    let mut g = vec![0xfee00_u64];
    assert_eq!(memop(POPULATE, &mut g, DOMID_SELF, 0), 1);
    let e = d.check().expect_err("RAM over the local APIC must show");
    assert!(e.contains("local APIC"), "{e}");
}

// Xen's rules for extent_order > 0 (xen/common/memory.c @c447b730; see
// tests/sim/src/xen.rs reservation_op) and uvm_pglistalloc's contiguous
// path (uvm_pglist.c 1.90).

#[test]
fn pv_extents_of_order_9_follow_xen() {
    let d = Domain::boot(small());
    // libxl starts max_pages at memory + 1 MiB: raise it as xl mem-set
    // would.
    d.set_max_reservation(64 * 256);
    let res0 = d.reservation();
    let mut e = vec![0u64; 3];
    assert_eq!(
        memop(INCREASE, &mut e, DOMID_SELF, 9),
        3,
        "nr_done in extents"
    );
    assert!(e.iter().all(|m| m % 512 == 0), "aligned chunks: {e:x?}");
    assert_eq!(d.reservation(), res0 + 3 * 512);
    assert_eq!(d.snapshot().superpage_extents, 3);
    // max_pages counts pages: only whole extents below it are done.
    let fit = (64 * 256 - d.reservation()) / 512;
    let mut many = vec![0u64; 40];
    assert_eq!(memop(INCREASE, &mut many, DOMID_SELF, 9), fit as c_int);
    let mut back: Vec<u64> = many[..fit as usize].to_vec();
    assert_eq!(memop(DECREASE, &mut back, DOMID_SELF, 9), fit as c_int);
    // The host has no free 2 MiB chunk after one more.
    d.faults_mut().superpage_fail_after = Some(1);
    let mut two = vec![0u64; 2];
    assert_eq!(memop(INCREASE, &mut two, DOMID_SELF, 9), 1);
    assert_eq!(memop(INCREASE, &mut two, DOMID_SELF, 9), 0);
    assert_eq!(
        memop(INCREASE, &mut two, DOMID_SELF, 0),
        2,
        "order 0 still works"
    );
    d.faults_mut().superpage_fail_after = None;
    // A whole extent goes back in one.
    let mut one = vec![e[0]];
    let r = d.reservation();
    assert_eq!(memop(DECREASE, &mut one, DOMID_SELF, 9), 1);
    assert_eq!(d.reservation(), r - 512);
    // An extent whose 101st frame the domain does not own: Xen removes
    // the first 100 and counts no extent (memory.c decrease_reservation).
    let mut hole = vec![e[1] + 100];
    assert_eq!(memop(DECREASE, &mut hole, DOMID_SELF, 0), 1);
    let r = d.reservation();
    let mut broken = vec![e[1]];
    assert_eq!(memop(DECREASE, &mut broken, DOMID_SELF, 9), 0);
    assert_eq!(d.reservation(), r - 100, "the leading frames are gone");
}

#[test]
fn pvh_populate_of_order_9_counts_unaligned_gfns() {
    let d = Domain::boot(small().mode(Mode::Pvh));
    d.set_max_reservation(64 * 256);
    let top = 64 * 256;
    let mut aligned = vec![top as u64];
    assert_eq!(memop(POPULATE, &mut aligned, DOMID_SELF, 9), 1);
    assert_eq!(d.snapshot().unaligned_superpages, 0);
    // Xen maps an unaligned gfn with 4 KiB entries (p2m_set_entry) and
    // does not refuse it: the superpage is lost, which the model counts.
    let mut unaligned = vec![top as u64 + 512 + 8];
    assert_eq!(memop(POPULATE, &mut unaligned, DOMID_SELF, 9), 1);
    assert_eq!(d.snapshot().unaligned_superpages, 1);
    assert_eq!(d.snapshot().superpage_extents, 2);
    let mut both = vec![top as u64, top as u64 + 512 + 8];
    assert_eq!(memop(DECREASE, &mut both, DOMID_SELF, 9), 2);
}

#[test]
fn pglistalloc_with_2_mib_alignment_needs_an_aligned_free_run() {
    let d = Domain::boot(small());
    let calls = d.snapshot().pglistalloc_calls;
    let mut l = Pglist::new();
    let top = 16u64 << 20;
    // SAFETY: kernel calls with a valid list head.
    let e = unsafe { uvm_pglistalloc(2 << 20, 0, top, 2 << 20, 0, &mut *l, 1, 0) };
    assert_eq!(e, 0);
    let pfns = l.pfns();
    assert_eq!(pfns.len(), 512);
    assert_eq!(pfns[0] % 512, 0, "aligned");
    assert!(pfns.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
    assert_eq!(d.snapshot().pglistalloc_calls, calls + 1);
    // SAFETY: the pages are the test's.
    unsafe { uvm_pglistfree(&mut *l) };
    // No free aligned 2 MiB run once every 512th frame is taken.
    assert!(d.kernel_fragment(512) > 0);
    let mut l = Pglist::new();
    // SAFETY: as above.
    let e = unsafe { uvm_pglistalloc(2 << 20, 0, top, 2 << 20, 0, &mut *l, 1, 0) };
    assert_eq!(e, 12, "ENOMEM");
    // The simple path still finds 512 scattered pages.
    let mut l = Pglist::new();
    // SAFETY: as above.
    let e = unsafe { uvm_pglistalloc(2 << 20, 0, top, 4096, 0, &mut *l, 512, 0) };
    assert_eq!(e, 0);
    // SAFETY: as above.
    unsafe { uvm_pglistfree(&mut *l) };
    assert_eq!(d.snapshot().pglistalloc_calls, calls + 3);
}

/// An order-9 decrease on a PoD domain: Xen's p2m_pod_decrease_reservation
/// (xen/arch/x86/mm/p2m-pod.c @c447b730) takes any extent, split into
/// aligned chunks, entry by entry: PoD entries become invalid
/// (entry_count--), RAM is stolen into the cache while entry_count >
/// count; memory.c decrease_reservation then removes what is left with
/// guest_remove_page, and counts the extent. So 512 PoD entries, or 511
/// and one populated page, are one extent done.
#[test]
fn pod_entries_go_back_in_2_mib_extents() {
    let d = Domain::boot(DomainConfig::pvh_pod(64, 256));
    let before = d.pod_stats().expect("PoD");
    // Two aligned 2 MiB runs high in the map, which nothing touched:
    // PoD entries. uvm_pglistalloc does not write to the pages.
    let (lo, hi) = (192u64 << 20, 256u64 << 20);
    let mut l = Pglist::new();
    // SAFETY: kernel calls with a valid list head.
    let e = unsafe { uvm_pglistalloc(4 << 20, lo, hi, 2 << 20, 0, &mut *l, 1, 0) };
    assert_eq!(e, 0);
    let pfns = l.pfns();
    let (a, b) = (pfns[0], pfns[512]);
    assert_eq!(a % 512, 0);
    let mut one = vec![a];
    assert_eq!(memop(DECREASE, &mut one, DOMID_SELF, 9), 1, "all PoD");
    let mid = d.pod_stats().expect("PoD");
    assert_eq!(mid.entries_given, before.entries_given + 512, "{mid:?}");
    assert_eq!(mid.entries, before.entries - 512, "{mid:?}");
    // One frame of the second run populated (the PoD entry replaced):
    // 511 entries and one page, still one extent.
    let mut g = vec![b + 7];
    assert_eq!(memop(POPULATE, &mut g, DOMID_SELF, 0), 1);
    let mut two = vec![b];
    assert_eq!(memop(DECREASE, &mut two, DOMID_SELF, 9), 1, "mixed");
    let after = d.pod_stats().expect("PoD");
    assert_eq!(after.entries_given, mid.entries_given + 511, "{after:?}");
    assert_eq!(after.entries, mid.entries - 512, "{after:?}");
}

/// libxl_dom.c @c447b730 `libxl__build_hvm`: without a device model a PVH
/// domain's low RAM stops at the lowest of the special pages, the local
/// APIC and the ACPI tables (0xfc000000), and the rest lies above 4 GiB.
/// Before, a PVH domain of more than about 4 GiB did not boot (its one
/// segment ran into the reserved range).
#[test]
fn a_pvh_domain_past_the_mmio_hole_has_ram_above_4_gib() {
    let d = Domain::boot(DomainConfig::pvh().boot_mib(8192).max_mib(8192));
    let low = 0xfc000 - 256;
    assert_eq!(
        d.segments(),
        vec![(256, 0xfc000), (0x100000, 0x100000 + 2_097_152 - low)]
    );
    let (rc, map) = memory_map(8);
    assert_eq!(rc, 0);
    let ram: Vec<(u64, u64)> = map
        .iter()
        .filter(|e| e.2 == 1)
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(
        ram,
        vec![(0x100000, low << 12), (1 << 32, (2_097_152 - low) << 12)]
    );
    assert_eq!(d.memory(), 2_097_152);
    d.check().unwrap();
}

/// The simulator keeps frame state in bit sets (frames.rs), not an entry
/// per frame: at boot a 64 GiB PVH domain's free list, populated gfns,
/// contents and kernel pages take at most 4 bits per frame, and a 16 GiB
/// PV domain adds 8 bytes per owned MFN (its m2p entry) and no more. The
/// hash maps and B-tree sets before took about 110 bytes per page.
#[test]
fn frame_state_costs_bits_per_frame() {
    {
        let d = Domain::boot(DomainConfig::pvh().boot_mib(65536).max_mib(65536));
        let pages = d.memory();
        let b = d.model_bytes();
        assert!(b.frame_sets <= pages / 2, "{b:?} for {pages} pages");
        assert_eq!(b.p2m, 0);
    }
    let d = Domain::boot(DomainConfig::pv().boot_mib(16384).max_mib(16384));
    let pages = d.memory();
    let b = d.model_bytes();
    assert!(
        b.frame_sets <= pages * 8 + pages / 2,
        "{b:?} for {pages} pages"
    );
    assert!(
        b.p2m >= pages * 8,
        "{b:?}: the p2m is the guest's own table"
    );
}
