// SPDX-License-Identifier: BSD-2-Clause
//! 2 MiB extents end to end in the simulated domU (issue 13 goal 3): the
//! real C shim and Rust core give and take memory as `extent_order` 9
//! extents where the guest has aligned free runs and the host has free
//! 2 MiB chunks, and fall back to single frames where not, always meeting
//! a target that single frames could meet. The Xen and UVM rules behind
//! it are in tests/sim/src/xen.rs (reservation_op) and uvm.rs
//! (uvm_pglistalloc), each with its source.

use std::time::Duration;

use balloon_sim::{balloon_module, Domain, DomainConfig, Mode};

mod common;
use common::{quad, MIB};

const GIB: u64 = 1024 * MIB;
const WAIT: Duration = Duration::from_secs(60);

fn loaded(mode: Mode, boot_mib: u64) -> Domain {
    let cfg = DomainConfig::default()
        .mode(mode)
        .boot_mib(boot_mib)
        .max_mib(boot_mib * 2)
        .host_free_mib(boot_mib * 2);
    let d = Domain::boot(cfg);
    d.modload(balloon_module()).expect("modload");
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
    d
}

/// `xl mem-set`, then waits until Xen's reservation is the target and the
/// worker is idle.
fn mem_set(d: &Domain, mib: u64) {
    common::mem_set(d, mib, WAIT);
    common::wait_for_state(d, WAIT, |s| s == "idle");
}

/// What one target change cost: the driver's reservation hypercalls,
/// uvm_pglistalloc calls and 2 MiB extents.
#[derive(Debug, Clone, Copy)]
struct Cost {
    hypercalls: u64,
    pglistalloc: u64,
    extents: u64,
}

fn cost(d: &Domain, f: impl FnOnce()) -> Cost {
    let (h0, s0) = (quad(d, "hw.balloon.stats.hypercalls"), d.snapshot());
    f();
    let (h1, s1) = (quad(d, "hw.balloon.stats.hypercalls"), d.snapshot());
    Cost {
        hypercalls: h1 - h0,
        pglistalloc: s1.pglistalloc_calls - s0.pglistalloc_calls,
        extents: s1.superpage_extents - s0.superpage_extents,
    }
}

fn unload_clean(d: &Domain) {
    d.faults_mut().superpage_fail_after = None;
    mem_set(d, d.config().boot_pages() / MIB);
    d.modunload().expect("modunload");
    assert_eq!(d.kmem_outstanding(), (0, 0), "kmem leaked");
    assert_eq!(d.pages_owned_by_module(), 0, "pages leaked");
    d.check().expect("kernel and Xen consistent after unload");
}

#[test]
fn a_gib_takes_at_most_4_hypercalls_and_4_pglistalloc_calls_each_way() {
    for mode in [Mode::Pv, Mode::Pvh] {
        let d = loaded(mode, 2048);
        let down = cost(&d, || mem_set(&d, 1024));
        println!("{mode:?} 1 GiB down: {down:?}");
        assert_eq!(
            down.extents,
            GIB / 512,
            "{mode:?}: all of it in 2 MiB extents"
        );
        assert!(down.hypercalls <= 4, "{mode:?}: {down:?}");
        assert!(down.pglistalloc <= 4, "{mode:?}: {down:?}");
        let up = cost(&d, || mem_set(&d, 2048));
        println!("{mode:?} 1 GiB up: {up:?}");
        assert_eq!(
            up.extents,
            GIB / 512,
            "{mode:?}: all of it in 2 MiB extents"
        );
        assert!(up.hypercalls <= 4, "{mode:?}: {up:?}");
        assert_eq!(up.pglistalloc, 0, "{mode:?}");
        assert_eq!(d.snapshot().unaligned_superpages, 0, "{mode:?}");
        d.check().expect("consistent");
        unload_clean(&d);
    }
}

#[test]
fn fragmented_guest_memory_falls_back_to_single_pages_and_meets_the_target() {
    for mode in [Mode::Pv, Mode::Pvh] {
        let d = loaded(mode, 512);
        // The kernel holds every 512th frame: no aligned 2 MiB run is free.
        assert!(d.kernel_fragment(512) > 0);
        let down = cost(&d, || mem_set(&d, 384));
        println!("{mode:?} 128 MiB down, fragmented: {down:?}");
        assert_eq!(down.extents, 0, "{mode:?}");
        // Single pages, one batch (512) a hypercall; a failed claim skips
        // the next 2, 4, ... 64 steps, so claims stay rare.
        assert!(down.hypercalls <= 128 * MIB / 512 + 1, "{mode:?}: {down:?}");
        assert!(down.pglistalloc <= 16, "{mode:?}: {down:?}");
        let up = cost(&d, || mem_set(&d, 512));
        assert_eq!(
            up.extents, 0,
            "{mode:?}: nothing ballooned is a whole extent"
        );
        // The kernel lets its pages go: aligned runs are free again, and
        // the next inflate uses them.
        d.kernel_free(u64::MAX);
        let again = cost(&d, || mem_set(&d, 384));
        println!("{mode:?} 128 MiB down, defragmented: {again:?}");
        // xl lowers Xen's maximum to the target + 1 MiB in the same breath
        // as it writes memory/target (libxl_mem.c @c447b730
        // libxl_set_memory_target; domain.rs xl_mem_set), but the guest
        // hears of the target only when xenwatch delivers the event. A
        // worker step that runs in between (more often on a loaded host)
        // goes down to Xen's maximum first; the last 992 KiB then come as
        // single frames in a step or two. Either way the freed aligned runs
        // carry the inflate. (This asserted exactly 64 extents in one
        // hypercall, and failed 7 runs in 30 on a loaded host.)
        assert!(again.extents >= 128 * MIB / 512 - 1, "{mode:?}: {again:?}");
        assert!(
            again.hypercalls
                <= if again.extents == 128 * MIB / 512 {
                    2
                } else {
                    3
                },
            "{mode:?}: {again:?}"
        );
        d.check().expect("consistent");
        unload_clean(&d);
    }
}

#[test]
fn a_host_without_free_2_mib_chunks_is_met_with_single_frames() {
    for mode in [Mode::Pv, Mode::Pvh] {
        let d = loaded(mode, 1024);
        let down = cost(&d, || mem_set(&d, 512));
        assert_eq!(down.extents, 512 * MIB / 512, "{mode:?}");
        // One more 2 MiB chunk, then none: the rest comes back 4 KiB at a
        // time, and the target is met.
        d.faults_mut().superpage_fail_after = Some(1);
        let up = cost(&d, || mem_set(&d, 1024));
        println!("{mode:?} 512 MiB up, host without 2 MiB chunks: {up:?}");
        assert_eq!(up.extents, 1, "{mode:?}");
        assert_eq!(quad(&d, "hw.balloon.stats.short_results"), 0, "{mode:?}");
        assert_eq!(d.snapshot().unaligned_superpages, 0, "{mode:?}");
        d.check().expect("consistent");
        unload_clean(&d);
    }
}
