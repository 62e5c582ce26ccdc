// SPDX-License-Identifier: BSD-2-Clause
//! Populate-on-demand: a PVH domain built with memory < maxmem on a stock
//! GENERIC kernel (issue 14 item 1), in the simulated domU. The rules the
//! simulator follows are in tests/sim/src/pod.rs, with their sources.
//!
//! Before the driver knew PoD, it refused to load on such a domain
//! (EINVAL: the reservation is below its memory segments), so nothing gave
//! the difference back and the first kernel use past `memory` crashed the
//! domain ("out of PoD memory"). Every test here that loads the module
//! failed then.

use std::process::Command;
use std::time::{Duration, Instant};

use balloon_sim::{balloon_module, stall, Domain, DomainConfig, Faults, SysctlValue};

mod common;
use common::kernel::pmap_zero_page;
use common::{quad, state, MIB};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until the worker is idle, cancelled or clipped, with no watch
/// event pending.
fn settle(d: &Domain) {
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    let deadline = Instant::now() + WAIT;
    loop {
        let s = state(d);
        if (s == "idle" || s.starts_with("cancelled") || s.starts_with("clipped"))
            && d.pending_wakeups() == 0
            && d.kthreads_running() == 0
        {
            return;
        }
        assert!(Instant::now() < deadline, "not settled: {s}");
        d.wait_until(|_| false, Duration::from_millis(5));
    }
}

/// The PoD invariant a domain survives on: every PoD entry has a page in
/// the cache behind it (p2m-pod.c: a touch with the cache empty crashes
/// the domain).
fn covered(d: &Domain) -> bool {
    let p = d.pod_stats().expect("a PoD domain");
    p.entries <= p.cache
}

fn load(d: &Domain) {
    d.modload(balloon_module())
        .expect("modload on a PoD domain (EINVAL before the driver knew PoD)");
}

/// The demonstration: memory=512m maxmem=2g. modload returns
/// only once the difference is back with Xen (the PoD cache covers every
/// entry), the kernel may then use every free page, `xl mem-set 1536m` is
/// met by deflation within the memory map (no plug: stock GENERIC), and
/// 512m again by inflation.
#[test]
fn memory_512m_maxmem_2g_loads_balloons_down_and_follows_xl() {
    let d = Domain::boot(DomainConfig::pvh_pod(512, 2048));
    assert!(!covered(&d), "PoD owes 1.5 GiB at boot");
    load(&d);
    // No wait here: INIT waited for the balloon-down.
    assert!(
        covered(&d),
        "modload returned before the balloon-down: {:?}",
        d.pod_stats()
    );
    assert!(d
        .dmesg()
        .iter()
        .any(|l| l == "balloon0: populate-on-demand: initial balloon-down finished"));
    settle(&d);
    assert_eq!(d.memory(), 512 * MIB);
    assert_eq!(quad(&d, "hw.balloon.current"), 512 * 1024);
    // The kernel takes every free page: each is populated from the cache.
    let used = d.kernel_alloc(u64::MAX);
    assert!(used > 200 * MIB, "{used}");
    assert!(covered(&d));
    d.kernel_free(used);
    d.xl_mem_set(1536 * 1024);
    assert!(
        d.wait_until(|v| v.memory() == 1536 * MIB, WAIT),
        "{}",
        state(&d)
    );
    settle(&d);
    assert_eq!(d.plug_calls(), 0);
    let used = d.kernel_alloc(u64::MAX);
    assert!(used > 1200 * MIB, "{used}");
    d.kernel_free(used);
    d.xl_mem_set(512 * 1024);
    assert!(
        d.wait_until(|v| v.memory() == 512 * MIB, WAIT),
        "{}",
        state(&d)
    );
    settle(&d);
    assert!(covered(&d));
    let p = d.pod_stats().expect("PoD");
    assert_eq!(p.populated_by_zeroing, 0, "{p:?}");
    assert_eq!(d.dirty_frames_given(), 0);
    d.check().expect("consistent");
}

/// The frames owed at load go back unscrubbed: zeroing a frame that was
/// never populated populates it from the cache, which is the access that
/// exhausts it. Frames given back later (xl mem-set down) are scrubbed,
/// and none of them is populated by the zeroing, since deflation
/// populated each of them.
#[test]
fn the_frames_owed_go_back_unscrubbed_and_nothing_is_populated_by_zeroing() {
    let d = Domain::boot(DomainConfig::pvh_pod(128, 512));
    load(&d);
    settle(&d);
    assert_eq!(
        d.sysctl_read("hw.balloon.scrub"),
        Ok(SysctlValue::Bool(true))
    );
    assert_eq!(quad(&d, "hw.balloon.stats.pages_scrubbed"), 0);
    assert_eq!(quad(&d, "hw.balloon.stats.pages_inflated"), 384 * MIB);
    d.xl_mem_set(384 * 1024);
    assert!(d.wait_until(|v| v.memory() == 384 * MIB, WAIT));
    settle(&d);
    d.xl_mem_set(192 * 1024);
    assert!(d.wait_until(|v| v.memory() == 192 * MIB, WAIT));
    settle(&d);
    assert_eq!(quad(&d, "hw.balloon.stats.pages_scrubbed"), 192 * MIB);
    let p = d.pod_stats().expect("PoD");
    assert_eq!(p.populated_by_zeroing, 0, "{p:?}");
    assert_eq!(d.dirty_frames_given(), 0);
    assert!(covered(&d));
    d.check().expect("consistent");
}

/// Pages the kernel used and freed before the module loaded are populated
/// and dirty. Given back while PoD entries are owed, Xen steals them into
/// the domain's cache (and zeroes them there); a PoD entry given back is
/// dropped. Either way nothing dirty leaves the domain and the cache
/// covers every entry. With 2 MiB extents the driver claims aligned free
/// runs (uvm_pglistalloc's lowest), here PoD entries the kernel never
/// touched; with single pages (the second domain, where uvm_pglistalloc
/// finds no run) UVM hands out the touched pages first and Xen steals
/// them.
#[test]
fn kernel_page_use_before_load_is_given_back_without_exhausting_the_cache() {
    let d = Domain::boot(DomainConfig::pvh_pod(256, 1024));
    let touched = d.kernel_touch(100 * MIB);
    assert_eq!(touched, 100 * MIB);
    load(&d);
    assert!(covered(&d));
    settle(&d);
    let p = d.pod_stats().expect("PoD");
    let given = quad(&d, "hw.balloon.stats.pages_inflated");
    assert_eq!(p.entries_given + p.stolen, given, "{p:?}");
    assert_eq!(d.memory(), 256 * MIB);
    assert_eq!(d.dirty_frames_given(), 0);
    let used = d.kernel_alloc(u64::MAX);
    assert!(used > 100 * MIB, "{used}");
    assert!(covered(&d));
    d.kernel_free(used);
    d.check().expect("consistent");
    // Single pages: the touched pages go first, and Xen steals them. (One
    // simulated domain at a time: the first goes first.)
    drop(d);
    let d = Domain::boot(DomainConfig::pvh_pod(256, 1024));
    assert_eq!(d.kernel_touch(100 * MIB), 100 * MIB);
    d.faults_mut().pglistalloc_fail_after = Some(0);
    load(&d);
    assert!(covered(&d));
    settle(&d);
    let p = d.pod_stats().expect("PoD");
    assert!(p.stolen >= 100 * MIB, "{p:?}");
    assert_eq!(d.memory(), 256 * MIB);
    assert_eq!(d.dirty_frames_given(), 0);
    d.faults_mut().pglistalloc_fail_after = None;
    d.check().expect("consistent");
}

/// A host short of memory: the balloon-down needs none, and a later xl
/// mem-set up is met only as far as the host gives (the rest stays
/// ballooned, never a PoD entry), so the kernel can use all it sees.
#[test]
fn a_host_short_of_memory_never_exhausts_the_cache() {
    let d = Domain::boot(DomainConfig::pvh_pod(128, 512).host_free_mib(64));
    d.kernel_touch(32 * MIB);
    load(&d);
    settle(&d);
    assert_eq!(d.memory(), 128 * MIB);
    d.xl_mem_set(384 * 1024);
    assert!(
        d.wait_until(|v| v.host_free() == 0, WAIT),
        "the host's 64 MiB were not used"
    );
    settle(&d);
    assert_eq!(d.memory(), 192 * MIB);
    let used = d.kernel_alloc(u64::MAX);
    assert!(used > 64 * MIB, "{used}");
    assert!(covered(&d));
    d.kernel_free(used);
    d.set_host_free(1024 * MIB);
    d.xl_mem_set(320 * 1024);
    assert!(
        d.wait_until(|v| v.memory() == 320 * MIB, WAIT),
        "{}",
        state(&d)
    );
    d.check().expect("consistent");
}

/// An `xl mem-set` before the module loads moves the PoD target as libxl
/// does (target + 1 MiB, p2m_pod_set_mem_target fills the cache up to the
/// entries); the driver then owes less and still ends at the target.
#[test]
fn xl_mem_set_before_load_moves_the_pod_target() {
    let d = Domain::boot(DomainConfig::pvh_pod(128, 512));
    let before = d.pod_stats().expect("PoD").cache;
    d.xl_mem_set(256 * 1024);
    let after = d.pod_stats().expect("PoD").cache;
    // (target + 1 MiB) less what is populated (the kernel's pages and
    // the 8 special pages) is the new cache.
    assert_eq!(after, before + 128 * MIB + 256 - 8, "{before} -> {after}");
    load(&d);
    assert!(covered(&d));
    settle(&d);
    assert_eq!(d.memory(), 256 * MIB);
    assert!(d.kernel_alloc(u64::MAX) > 150 * MIB);
    assert!(covered(&d));
    d.check().expect("consistent");
}

// ---- the simulator's rules on their own (child processes: a crash aborts) ----

/// Runs one crash case when SIM_POD_CASE is set; nothing otherwise.
#[test]
fn pod_child() {
    if let Ok(case) = std::env::var("SIM_POD_CASE") {
        match case.as_str() {
            // No balloon driver: the kernel touches more than `memory`.
            "no_driver" => {
                let d = Domain::boot(DomainConfig::pvh_pod(64, 256));
                d.kernel_alloc(100 * MIB);
            }
            _ => panic!("unknown case {case}"),
        }
        eprintln!("CASE RETURNED WITHOUT A CRASH");
    }
}

/// p2m_pod_demand_populate: with the cache empty and nothing zeroed to
/// sweep, Xen crashes the domain.
#[test]
fn without_a_balloon_driver_touching_more_than_memory_crashes_the_domain() {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["pod_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("SIM_POD_CASE", "no_driver")
        .output()
        .expect("child");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no crash\n{err}");
    assert!(
        err.contains("SIMULATED DOMAIN CRASH") && err.contains("out of PoD memory"),
        "{err}"
    );
}

/// The emergency sweep: zeroed populated pages go back to the cache
/// before Xen gives up, so touching past the cache works while zeroed
/// pages remain.
#[test]
fn xen_sweeps_zeroed_pages_back_before_it_gives_up() {
    // The kernel's boot pages fill the whole cache; it frees them all
    // zeroed (as a page zeroed for reuse would be).
    let d = Domain::boot(DomainConfig::pvh_pod(64, 256).kernel_pages(64 * MIB));
    assert_eq!(d.pod_stats().expect("PoD").cache, 0);
    assert_eq!(d.kernel_free(64 * MIB), 64 * MIB);
    assert_eq!(d.kernel_zero_free(64 * MIB), 64 * MIB);
    let more = d.kernel_alloc(16 * MIB);
    assert_eq!(more, 16 * MIB);
    assert!(d.pod_stats().expect("PoD").swept >= 16 * MIB);
}

/// `--real-zero` keeps PoD's rule: pmap_zero_page is a write, so on a PoD
/// gfn it first populates the gfn from the cache (p2m-pod.c
/// `p2m_pod_demand_populate`, xen @c447b730), then writes the 4 KiB the
/// kernel's pmap_zero_page writes (x86/pmap.c 1.414). Failed on the
/// i13-stack branch's real-zero stand-in, which zeroed without the touch.
#[test]
fn real_zero_on_a_pod_gfn_populates_it_then_writes_its_page() {
    let d = Domain::boot(DomainConfig::pvh_pod(128, 512).real_zero(true));
    let top = d.segments().iter().map(|s| s.1).max().expect("a segment");
    let gfn = top - 1;
    assert_eq!(d.memset_frames(gfn, 1, 0xa5), 1, "frame memory");
    let before = d.pod_stats().expect("a PoD domain");
    // SAFETY: the stand-in takes any frame address.
    unsafe { pmap_zero_page(gfn << 12) };
    let after = d.pod_stats().expect("a PoD domain");
    assert_eq!(after.demand_populated, before.demand_populated + 1);
    assert_eq!(after.populated_by_zeroing, before.populated_by_zeroing + 1);
    assert_eq!(after.entries, before.entries - 1);
    assert_eq!(after.cache, before.cache - 1);
    assert_eq!(d.frame_memory_is(gfn, 0), Some(true), "4 KiB written");
    d.check().unwrap();
}

/// An INIT failure leaves no page behind although a PoD domain gives work
/// to the worker at once (the debt): registering the watch fails. Before
/// the fix the worker started before the watch was registered, was in the
/// middle of giving the debt back when INIT gave up, and the frames it
/// held stayed the module's after detach (pages leaked, and on a real
/// kernel vm_pages never returned). The worker is held in
/// decrease_reservation, if it gets there, until INIT has failed.
#[test]
fn an_init_failure_with_the_debt_waiting_leaves_no_page_behind() {
    let d = Domain::boot(DomainConfig::pvh_pod(512, 1024));
    d.set_faults(Faults {
        watch_register_error: Some(28),
        ..Faults::default()
    });
    // INIT is held on entry to register_xenbus_watch; a worker already
    // running (the old order) is held in its first decrease_reservation,
    // mid-step with the frames it took. Then both go on: the watch fails.
    stall::arm("watch_register", 0);
    stall::arm("decrease_reservation", 0);
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| d.modload(balloon_module()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while stall::wait_stalled(Duration::from_millis(20))
            .iter()
            .all(|(p, _)| *p != "watch_register")
        {
            assert!(Instant::now() < deadline, "INIT never registered its watch");
        }
        // A worker started before the watch has its step under way within
        // this bounded wait; with the watch registered first there is none.
        let until = Instant::now() + Duration::from_secs(2);
        while stall::wait_stalled(Duration::from_millis(20)).len() < 2 && Instant::now() < until {}
        stall::release();
        h.join().expect("modload thread")
    });
    stall::release();
    assert_eq!(r, Err(28));
    let s = d.snapshot();
    assert_eq!(s.module_pages, 0, "pages left after a failed INIT");
    assert_eq!((s.kmem_bytes, s.kthreads, s.watches), (0, 0, 0));
    assert_eq!(
        d.pod_stats().expect("PoD").entries_given,
        0,
        "nothing given"
    );
    d.check().expect("consistent");
    d.set_faults(Faults::default());
    load(&d);
    assert!(covered(&d), "the debt went back once the module loaded");
}
