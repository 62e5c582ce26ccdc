// SPDX-License-Identifier: BSD-2-Clause
//! PVH scrubbing through the amd64 direct map (issue 13 goal 4), in the
//! simulated domU. A GENERIC kernel's pmap_zero_page is a memset of one
//! page through the direct map (x86/pmap.c 1.414); with the direct map
//! found by name (`pmap_direct_base`, `pmap_direct_end`), the shim zeroes
//! each run of consecutive frames with one memset through it. The rules
//! the simulator follows are in tests/sim/src/dmap.rs, with their sources.
//!
//! Before the shim used the direct map, `direct_map_writes` stayed 0 and
//! every frame took a pmap_zero_page call: the tests that count direct-map
//! writes failed, and the end check test had nothing to check.

use std::os::raw::{c_int, c_ulong, c_void};
use std::time::Duration;

use balloon_sim::{balloon_module, Domain, DomainConfig, Mode};

mod common;
use common::kernel::{ksym, memop, uvm_physseg_plug, DOMID_SELF, POPULATE};
use common::{given_frames_read_zero, quad, MIB};

const WAIT: Duration = Duration::from_secs(30);

extern "C" {
    fn sim_kernel_memset(d: *mut c_void, c: c_int, n: usize) -> *mut c_void;
    fn balloon_shim_pages_scrub(pfns: *const u64, n: usize);
}

/// A `sim stat` figure.
fn stat(d: &Domain, key: &str) -> u64 {
    d.snapshot()
        .get(key)
        .unwrap_or_else(|| panic!("no {key}"))
        .parse()
        .expect("a number")
}

/// The kernel variable at `addr` (a vaddr_t).
fn read_var(addr: c_ulong) -> u64 {
    // SAFETY: ksyms handed out the address of a live u64 of the model.
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}

fn domain(cfg: DomainConfig) -> Domain {
    let d = Domain::boot(
        cfg.boot_mib(256)
            .max_mib(1024)
            .host_free_mib(2048)
            .real_zero(true),
    );
    let (start, end) = *d.segments().last().expect("a boot segment");
    assert_eq!(d.memset_frames(start, end - start, 0xa5), end - start);
    d
}

fn load(d: &Domain) {
    d.modload(balloon_module()).expect("modload");
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
}

/// ksyms has the two variables in PVH kernels with a direct map (stock
/// and assisted), pmap_direct_end is the map's end as a virtual address
/// (pmap.c 1.414: startva + lastpa), and neither exists in PV or in a
/// kernel without a direct map.
#[test]
fn ksyms_has_the_direct_map_only_where_the_kernel_has_one() {
    for cfg in [DomainConfig::pvh(), DomainConfig::pvh().assisted()] {
        let d = Domain::boot(cfg.boot_mib(64));
        let base = ksym(c"pmap_direct_base").expect("pmap_direct_base");
        let end = ksym(c"pmap_direct_end").expect("pmap_direct_end");
        let (b, e) = (read_var(base), read_var(end));
        assert_eq!(e - b, d.growth_stats().direct_end << 12);
        let top = d.segments().iter().map(|s| s.1).max().expect("a segment");
        assert!(e - b >= top << 12, "the map covers boot memory");
        drop(d);
    }
    for cfg in [DomainConfig::pv(), DomainConfig::pvh().no_direct_map(true)] {
        let _d = Domain::boot(cfg.boot_mib(64));
        assert_eq!(ksym(c"pmap_direct_base"), None);
        assert_eq!(ksym(c"pmap_direct_end"), None);
    }
}

/// A PVH inflate with scrubbing on writes its 2 MiB extents through the
/// direct map: no pmap_zero_page call, one memset per run of consecutive
/// frames (at most one per 2 MiB extent: runs of adjacent extents merge),
/// every frame given back zero. Failed before: 0 direct-map writes,
/// 16384 pmap_zero_page calls.
#[test]
fn pvh_inflate_zeroes_its_extents_through_the_direct_map() {
    for cfg in [DomainConfig::pvh(), DomainConfig::pvh().assisted()] {
        let d = domain(cfg);
        load(&d);
        common::mem_set(&d, 192, WAIT);
        let frames = 64 * MIB;
        assert_eq!(quad(&d, "hw.balloon.stats.pages_scrubbed"), frames);
        assert_eq!(stat(&d, "zero_page_calls"), 0);
        assert_eq!(stat(&d, "direct_map_frames"), frames);
        let writes = stat(&d, "direct_map_writes");
        assert!(
            writes >= 1 && writes <= frames / 512,
            "{writes} direct-map writes for {frames} frames"
        );
        assert_eq!(stat(&d, "superpage_extents"), frames / 512);
        given_frames_read_zero(&d, 64);
        d.check().unwrap();
        drop(d);
    }
}

/// Without a direct map (a KASAN kernel) the shim zeroes page by page
/// with the same result; PV has Xen clear the pages and never looks for
/// a direct map.
#[test]
fn without_a_direct_map_the_shim_zeroes_page_by_page() {
    for cfg in [DomainConfig::pvh().no_direct_map(true), DomainConfig::pv()] {
        let pv = cfg.mode == Mode::Pv;
        let d = domain(cfg);
        load(&d);
        common::mem_set(&d, 192, WAIT);
        assert_eq!(stat(&d, "direct_map_writes"), 0);
        assert_eq!(stat(&d, "direct_map_frames"), 0);
        assert_eq!(
            stat(&d, "zero_page_calls"),
            if pv { 0 } else { 64 * MIB },
            "PVH without a direct map: one pmap_zero_page per page"
        );
        given_frames_read_zero(&d, 64);
        d.check().unwrap();
        drop(d);
    }
}

/// pmap_direct_end is read at every use: on the assisted kernel the
/// driver grows the direct map (pmap_growdirectmap) before it plugs a
/// segment, and frames of plugged segments given back later are zeroed
/// through the grown map, none page by page.
#[test]
fn frames_of_plugged_segments_go_through_the_grown_direct_map() {
    let d = domain(DomainConfig::pvh().assisted());
    let end0 = d.growth_stats().direct_end;
    load(&d);
    // A first inflate, while the map ends at boot memory.
    common::mem_set(&d, 224, WAIT);
    assert_eq!(stat(&d, "zero_page_calls"), 0);
    common::mem_set(&d, 640, WAIT);
    let grown = d.growth_stats().direct_end;
    assert!(grown > end0, "the map grew");
    // The kernel uses the plugged frames (they hold data now) and frees
    // them, so the inflate below must scrub them.
    let used = d.kernel_alloc(384 * MIB);
    assert_eq!(d.kernel_free(used), used);
    let frames = stat(&d, "direct_map_frames");
    common::mem_set(&d, 192, WAIT);
    let scrubbed = quad(&d, "hw.balloon.stats.pages_scrubbed") - 32 * MIB;
    assert!(scrubbed > (256 - 192) * MIB, "{scrubbed} pages scrubbed");
    assert_eq!(stat(&d, "direct_map_frames") - frames, scrubbed);
    assert_eq!(stat(&d, "zero_page_calls"), 0);
    assert_eq!(d.dirty_frames_given(), 0);
    d.check().unwrap();
}

/// On a PoD domain a write through the direct map is a guest access like
/// pmap_zero_page's: each PoD gfn of the range is populated from the
/// cache first (p2m-pod.c `p2m_pod_demand_populate`, xen @c447b730), then
/// its 4 KiB are written.
#[test]
fn a_direct_map_write_populates_pod_gfns_as_pmap_zero_page_does() {
    let d = Domain::boot(DomainConfig::pvh_pod(128, 512).real_zero(true));
    let top = d.segments().iter().map(|s| s.1).max().expect("a segment");
    let gfn = top - 2;
    assert_eq!(d.memset_frames(gfn, 2, 0xa5), 2, "frame memory");
    let base = read_var(ksym(c"pmap_direct_base").expect("a direct map"));
    let before = d.pod_stats().expect("a PoD domain");
    // SAFETY: the stand-in of the module's memset, through the direct map.
    unsafe { sim_kernel_memset((base + (gfn << 12)) as *mut c_void, 0, 2 << 12) };
    let after = d.pod_stats().expect("a PoD domain");
    assert_eq!(after.demand_populated, before.demand_populated + 2);
    assert_eq!(after.populated_by_zeroing, before.populated_by_zeroing + 2);
    assert_eq!(after.entries, before.entries - 2);
    assert_eq!(after.cache, before.cache - 2);
    assert_eq!(d.frame_memory_is(gfn, 0), Some(true), "4 KiB written");
    assert_eq!(d.frame_memory_is(gfn + 1, 0), Some(true), "4 KiB written");
    assert_eq!(stat(&d, "direct_map_writes"), 1);
    d.check().unwrap();
}

/// A run of frames past pmap_direct_end: frames that a plain
/// uvm_physseg_plug put into UVM without growing the direct map (the
/// assisted kernel with `plain_plug_after_boot`, the test-only setting
/// for what such a plug leaves behind). The shim must not write them
/// through the direct map: it falls back to pmap_zero_page, which faults
/// on such a frame too (pmap.c 1.414: it writes through the same map), so
/// the domain panics in pmap_zero_page, not in a direct-map memset. A
/// shim without the end check panics in the memset.
fn scrub_past_direct_map_end() {
    let d = Domain::boot(
        DomainConfig::pvh()
            .assisted()
            .plain_plug_after_boot(true)
            .boot_mib(64)
            .max_mib(256)
            .host_free_mib(512),
    );
    load(&d);
    let end = d.growth_stats().direct_end;
    let mut g: Vec<u64> = (end..end + 512).collect();
    d.set_max_reservation(d.max_reservation() + 1024);
    assert_eq!(memop(POPULATE, &mut g, DOMID_SELF, 0), 512);
    // SAFETY: kernel calls on backed frames; the shim's scrub of frames
    // the test holds.
    unsafe {
        assert!(uvm_physseg_plug(end, 512, std::ptr::null_mut()));
        balloon_shim_pages_scrub(g.as_ptr(), g.len());
    }
}

#[test]
fn panic_child() {
    if let Ok(case) = std::env::var("SIM_DMAP_PANIC_CASE") {
        if case == "scrub_past_direct_map_end" {
            scrub_past_direct_map_end();
        }
        eprintln!("CASE RETURNED WITHOUT A KERNEL PANIC");
    }
}

/// A run not wholly below pmap_direct_end is never written through the
/// direct map (the shim's end check; a write past the end faults).
#[test]
fn a_run_past_the_direct_map_end_is_not_written_through_it() {
    common::expect_kernel_panics(
        "SIM_DMAP_PANIC_CASE",
        &[("scrub_past_direct_map_end", "pmap_zero_page: frame")],
    );
}
