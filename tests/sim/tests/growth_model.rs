// SPDX-License-Identifier: BSD-2-Clause
//! The simulated kernel-assisted interfaces (docs/kernel-growth.md
//! sections 3 to 5) and the save/restore model, called directly as a
//! driver would, without the module: each rule the simulator enforces,
//! and what a save does after a plug that did not keep the kernel in step.

use std::os::raw::{c_int, c_ulong};

use balloon_sim::{globals, Domain, DomainConfig, Faults};

mod common;

use common::kernel::{
    kpreempt_disable, kpreempt_enable, ksym, memop, pmap_zero_page, sim_vm_page_frame,
    uvm_pagealloc_strat, uvm_phys_to_vm_page, uvm_physseg_plug, xpq_flush_queue,
    xpq_queue_machphys_update, DOMID_SELF, INCREASE, POPULATE,
};

const EINVAL: c_int = 22;
const EEXIST: c_int = 17;
const ENOENT: c_int = 2;
const EBUSY: c_int = 16;
const ERANGE: c_int = 34;

/// The address ksyms gives for a growth interface ("netbsd", KSYMS_EXTERN).
fn sym(name: &std::ffi::CStr) -> usize {
    ksym(name).unwrap_or_else(|| panic!("{name:?} not resolved")) as usize
}

fn hotplug_add(pfn: u64, n: u64) -> c_int {
    // SAFETY: the address ksyms gave for this prototype (kernel-growth.md 3.1).
    let f: extern "C" fn(u64, u64) -> c_int =
        unsafe { std::mem::transmute(sym(c"uvm_physseg_hotplug_add")) };
    f(pfn, n)
}

fn hotplug_remove(pfn: u64, n: u64) -> c_int {
    // SAFETY: as above (3.2).
    let f: extern "C" fn(u64, u64) -> c_int =
        unsafe { std::mem::transmute(sym(c"uvm_physseg_hotplug_remove")) };
    f(pfn, n)
}

fn p2m_grow(end: u64) -> c_int {
    // SAFETY: as above (4.3).
    let f: extern "C" fn(u64) -> c_int = unsafe { std::mem::transmute(sym(c"xpmap_p2m_grow")) };
    f(end)
}

fn p2m_limit() -> u64 {
    // SAFETY: as above (4.2).
    let f: extern "C" fn() -> u64 = unsafe { std::mem::transmute(sym(c"xpmap_p2m_limit")) };
    f()
}

fn growdirectmap(pa_end: u64) -> c_int {
    // SAFETY: as above (5.1).
    let f: extern "C" fn(u64) -> c_int = unsafe { std::mem::transmute(sym(c"pmap_growdirectmap")) };
    f(pa_end)
}

fn xenmem_alloc(size: u64, align: u64) -> u64 {
    // SAFETY: as above (5.2).
    let f: extern "C" fn(c_ulong, c_ulong, bool) -> u64 =
        unsafe { std::mem::transmute(sym(c"xenmem_alloc_pa")) };
    f(size as c_ulong, align as c_ulong, false)
}

fn xenmem_free(pa: u64, size: u64) {
    // SAFETY: as above (5.2).
    let f: extern "C" fn(u64, c_ulong) = unsafe { std::mem::transmute(sym(c"xenmem_free_pa")) };
    f(pa, size as c_ulong)
}

/// PV: increase_reservation for `pfns`, p2m and m2p entries written and
/// flushed on one CPU (x86_xpmap.c 1.84.4.2).
fn pv_back(pfns: &[u64]) {
    let mut mfns = vec![0u64; pfns.len()];
    assert_eq!(
        memop(INCREASE, &mut mfns, DOMID_SELF, 0) as usize,
        pfns.len()
    );
    let p2m = globals::xpmap_phys_to_machine_mapping.get();
    // SAFETY: the p2m table covers these pfns (below xpmap_p2m_limit);
    // preemption is off around queue and flush.
    unsafe {
        kpreempt_disable();
        for (&pfn, &mfn) in pfns.iter().zip(&mfns) {
            p2m.add(pfn as usize).write_volatile(mfn);
            xpq_queue_machphys_update(mfn << 12, pfn << 12);
        }
        xpq_flush_queue();
        kpreempt_enable();
    }
}

fn pv(cfg: DomainConfig) -> Domain {
    let d = Domain::boot(cfg.boot_mib(16).max_mib(64).host_free_mib(128));
    d.set_max_reservation(d.max_reservation() + 4096);
    d
}

/// kernel-growth.md 3.1, 3.2, 4.2, 4.3 as the simulator models them.
#[test]
fn pv_interfaces_keep_their_contract() {
    let d = pv(DomainConfig::pv().assisted());
    let top = d.segments().iter().map(|s| s.1).max().unwrap();
    let g0 = d.growth_stats();
    assert_eq!(g0.p2m_end, top, "the boot p2m ends with boot memory");
    let limit = p2m_limit();
    assert_eq!(p2m_grow(0), EINVAL);
    assert_eq!(p2m_grow(limit + 1), ERANGE);
    let (s, n) = (top.next_multiple_of(512), 1024);
    // Past the grown end: ERANGE, nothing changed.
    assert_eq!(hotplug_add(s, n), ERANGE);
    assert_eq!(p2m_grow(s + n - 100), 0);
    assert_eq!(d.growth_stats().p2m_end, s + n, "a whole leaf");
    assert_eq!(p2m_grow(10), 0, "never lowers");
    assert_eq!(d.growth_stats().p2m_end, s + n);
    let pfns: Vec<u64> = (s..s + n).collect();
    pv_back(&pfns);
    let physmem = d.physmem();
    assert_eq!(hotplug_add(0, 0), EINVAL);
    assert_eq!(hotplug_add(top - 8, 16), EEXIST);
    assert_eq!(hotplug_add(s, n), 0);
    assert_eq!(d.physmem(), physmem + n);
    assert!(d.growth_stats().array_bytes > 0);
    assert_eq!(hotplug_add(s, n), EEXIST);
    // Remove: exact bounds of a hot-added segment, every page the caller's.
    assert_eq!(hotplug_remove(s, n - 1), ENOENT);
    assert_eq!(hotplug_remove(256, 16), ENOENT, "never a boot segment");
    assert_eq!(hotplug_remove(s, n), EBUSY, "its pages are free");
    d.check().unwrap();
    assert_eq!(d.plug_calls(), 0);
}

/// PHYS_TO_VM_PAGE (uvm_page.c 1.246 `uvm_phys_to_vm_page`: the segment
/// from `uvm_physseg_find`, uvm_physseg.c 1.18, then an index) finds a
/// hot-added range's vm_pages and, once the range is removed, none: the
/// simulator's lock-free page map is republished by hotplug_add and
/// hotplug_remove. Two reader threads translate all the while, through
/// 20 add/remove cycles: each answer is NULL or the vm_page of the frame
/// asked for, never another frame's (a torn or stale map would show one).
/// Failed before hotplug_remove republished: the removed range still had
/// vm_pages.
#[test]
fn phys_to_vm_page_follows_hotplug_add_and_remove() {
    let d = pv(DomainConfig::pv().assisted());
    let top = d.segments().iter().map(|s| s.1).max().unwrap();
    let (s, n) = (top.next_multiple_of(512), 512u64);
    assert_eq!(p2m_grow(s + n), 0);
    let pfns: Vec<u64> = (s..s + n).collect();
    pv_back(&pfns);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let found = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|sc| {
        for t in 0..2u64 {
            let (stop, found) = (&stop, &found);
            sc.spawn(move || {
                let mut pfn = s + t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: a lock-free read stand-in; any address.
                    let pg = unsafe { uvm_phys_to_vm_page(pfn << 12) };
                    if !pg.is_null() {
                        // SAFETY: a lock-free read stand-in; any pointer.
                        let got = unsafe { sim_vm_page_frame(pg) };
                        assert_eq!(got, pfn, "PHYS_TO_VM_PAGE gave another frame's vm_page");
                        found.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    pfn = if pfn + 7 >= s + n {
                        s + (pfn + 7 - s) % n
                    } else {
                        pfn + 7
                    };
                }
            });
        }
        // Stops the readers however this thread leaves the scope (a failed
        // assertion too), so a failure cannot hang the scope.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        for cycle in 0..20 {
            assert_eq!(hotplug_add(s, n), 0, "cycle {cycle}");
            // SAFETY: a lock-free read stand-in.
            let pg = unsafe { uvm_phys_to_vm_page(s << 12) };
            assert!(!pg.is_null(), "cycle {cycle}: an added range has vm_pages");
            // SAFETY: as above.
            assert_eq!(unsafe { sim_vm_page_frame(pg) }, s);
            // The readers must have translated in this cycle before the
            // range goes (a bounded wait: they may not have run yet).
            let seen = found.load(std::sync::atomic::Ordering::Relaxed);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while found.load(std::sync::atomic::Ordering::Relaxed) == seen {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cycle {cycle}: no reader ran"
                );
                std::thread::yield_now();
            }
            // The highest free frames are the added range's: take them all.
            for _ in 0..n {
                // SAFETY: the stand-in takes any arguments.
                let pg = unsafe {
                    uvm_pagealloc_strat(std::ptr::null_mut(), 0, std::ptr::null_mut(), 0, 0, 0)
                };
                // SAFETY: a lock-free read stand-in; any pointer.
                let pfn = unsafe { sim_vm_page_frame(pg) };
                assert!((s..s + n).contains(&pfn), "{pfn:#x}");
            }
            assert_eq!(hotplug_remove(s, n), 0, "cycle {cycle}");
            // SAFETY: as above.
            let gone = unsafe { uvm_phys_to_vm_page(s << 12) };
            assert!(
                gone.is_null(),
                "cycle {cycle}: a removed range has no vm_page"
            );
            let pg = unsafe { uvm_phys_to_vm_page((s + n - 1) << 12) };
            assert!(pg.is_null(), "cycle {cycle}: nor its last frame");
        }
    });
    assert!(found.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // The backed frames go back on the free lists, for the domain's check.
    assert_eq!(hotplug_add(s, n), 0);
    d.check().unwrap();
}

/// kernel-growth.md 5.1, 5.2: xenmem places ranges above 4 GiB, clear of
/// RAM and of the grant-mapping range; a range past pmap_direct_end
/// cannot be added until the direct map covers it.
#[test]
fn pvh_interfaces_place_and_map_ranges() {
    let d = Domain::boot(
        DomainConfig::pvh()
            .assisted()
            .boot_mib(16)
            .max_mib(64)
            .host_free_mib(128),
    );
    d.set_max_reservation(d.max_reservation() + 4096);
    let g = d.growth_stats();
    let grant = g.grant.expect("a grant range");
    assert_eq!(grant.0, 0x10_0000, "the backend's range came first");
    let pa = xenmem_alloc(1024 << 12, 2 << 20);
    let s = pa >> 12;
    assert!(s >= grant.1 && s.is_multiple_of(512), "{s:#x}");
    let mut gfns: Vec<u64> = (s..s + 1024).collect();
    assert_eq!(memop(POPULATE, &mut gfns, DOMID_SELF, 0), 1024);
    assert_eq!(hotplug_add(s, 1024), ERANGE, "past pmap_direct_end");
    assert_eq!(growdirectmap(pa + (1024 << 12)), 0);
    assert!(d.growth_stats().direct_end >= s + 1024);
    assert_eq!(hotplug_add(s, 1024), 0);
    // A second range does not overlap the first.
    let pa2 = xenmem_alloc(512 << 12, 2 << 20);
    assert!(pa2 >> 12 >= s + 1024);
    xenmem_free(pa2, 512 << 12);
    d.check().unwrap();
}

/// Issue 14 item 4, the test of the save model itself: a plug that does
/// not keep the kernel in step (stock uvm_physseg_plug, allowed here by
/// `plain_plug_after_boot`) leaves a domain that a save corrupts. On a
/// stock XEN3_DOMU the resume crashes (xen_prepare_resume: nr_pages !=
/// physmem); on the assisted kernel without xpmap_p2m_grow the plugged
/// frames are above arch.max_pfn and are not in the image. The same
/// growth done through the interfaces survives.
#[test]
fn a_save_after_a_plug_out_of_step_corrupts_and_one_in_step_survives() {
    for (cfg, crashes) in [
        (DomainConfig::pv().hotplug(true), true),
        (DomainConfig::pv().assisted(), false),
    ] {
        let d = pv(cfg.plain_plug_after_boot(true));
        let top = d.segments().iter().map(|s| s.1).max().unwrap();
        let s = top.next_multiple_of(512);
        let pfns: Vec<u64> = (s..s + 512).collect();
        pv_back(&pfns);
        // SAFETY: a plain kernel call on backed frames.
        assert!(unsafe { uvm_physseg_plug(s, 512, std::ptr::null_mut()) });
        d.check().expect("consistent before the save");
        match d.save_restore() {
            Err(e) => {
                assert!(crashes, "{e}");
                assert!(e.contains("nr_pages") && e.contains("physmem"), "{e}");
            }
            Ok(r) => {
                assert!(!crashes, "{r:?}");
                assert_eq!(r.lost.len(), 512, "{r:?}");
                let e = d.check().expect_err("frames lost in the save must show");
                assert!(!e.is_empty());
            }
        }
        drop(d);
    }
    // In step: the p2m grown first, the segment added with the interface.
    let d = pv(DomainConfig::pv().assisted());
    let top = d.segments().iter().map(|s| s.1).max().unwrap();
    let s = top.next_multiple_of(512);
    assert_eq!(p2m_grow(s + 512), 0);
    let pfns: Vec<u64> = (s..s + 512).collect();
    pv_back(&pfns);
    assert_eq!(hotplug_add(s, 512), 0);
    let r = d.save_restore().expect("no crash");
    assert!(r.lost.is_empty(), "{r:?}");
    d.check().unwrap();
}

/// PVH save keeps every gfn (HVM-style), so nothing is lost there.
#[test]
fn a_pvh_save_keeps_every_gfn() {
    let d = Domain::boot(
        DomainConfig::pvh()
            .assisted()
            .boot_mib(16)
            .max_mib(64)
            .host_free_mib(128),
    );
    let before = d.reservation();
    let r = d.save_restore().expect("no crash");
    assert!(r.lost.is_empty());
    assert_eq!(d.reservation(), before);
    d.check().unwrap();
    d.set_faults(Faults {
        suspend_veto: true,
        ..Faults::default()
    });
    assert!(d.save_restore().is_err());
    assert!(d.crashed().is_some());
}

// ---- kernel panics, each in a child process ----

fn run_case(case: &str) {
    match case {
        "plain_plug_on_assisted" => {
            let _d = pv(DomainConfig::pv().assisted());
            // SAFETY: breaks the assisted kernel's contract on purpose.
            unsafe { uvm_physseg_plug(0x3000, 8, std::ptr::null_mut()) };
        }
        "hotplug_add_unbacked" => {
            let d = pv(DomainConfig::pv().assisted());
            let top = d.segments().iter().map(|s| s.1).max().unwrap();
            let s = top.next_multiple_of(512);
            assert_eq!(p2m_grow(s + 512), 0);
            hotplug_add(s, 512);
        }
        "hotplug_add_not_placed" => {
            let _d = Domain::boot(
                DomainConfig::pvh()
                    .assisted()
                    .boot_mib(16)
                    .max_mib(64)
                    .host_free_mib(128),
            );
            let mut g = vec![0x10_0000u64];
            memop(POPULATE, &mut g, DOMID_SELF, 0);
            growdirectmap(0x10_1000 << 12);
            hotplug_add(0x10_0000, 1);
        }
        "zero_page_past_direct_map" => {
            let _d = Domain::boot(
                DomainConfig::pvh()
                    .assisted()
                    .boot_mib(16)
                    .max_mib(64)
                    .host_free_mib(128),
            );
            let mut g = vec![0x20_0000u64];
            memop(POPULATE, &mut g, DOMID_SELF, 0);
            // SAFETY: breaks the direct-map rule on purpose.
            unsafe { pmap_zero_page(0x20_0000 << 12) };
        }
        _ => {}
    }
}

#[test]
fn panic_child() {
    if let Ok(case) = std::env::var("SIM_GROWTH_PANIC_CASE") {
        run_case(&case);
        eprintln!("CASE RETURNED WITHOUT A KERNEL PANIC");
    }
}

#[test]
fn growth_kernel_panics() {
    common::expect_kernel_panics(
        "SIM_GROWTH_PANIC_CASE",
        &[
            (
                "plain_plug_on_assisted",
                "uvm_physseg_plug after uvm_page_init",
            ),
            ("hotplug_add_unbacked", "unbacked frame"),
            (
                "hotplug_add_not_placed",
                "was not placed by xenmem_alloc_pa",
            ),
            ("zero_page_past_direct_map", "past pmap_direct_end"),
        ],
    );
}
