// SPDX-License-Identifier: BSD-2-Clause
//! What 2 MiB extents cost in the simulated domU: for PV and PVH, with
//! free memory contiguous, fragmented (the kernel holds every 512th
//! frame), and with a host that has no free 2 MiB chunk, a 3 GiB domain
//! is ballooned down by 2 GiB and back. Printed per GiB: the driver's
//! reservation hypercalls, uvm_pglistalloc calls (each pauses every
//! CPU's free-page cache), 2 MiB extents, and wall time in the
//! simulator. Run: `cargo bench -p balloon-sim --bench extents`.
//! The bounds are asserted in tests/sim/tests/extents.rs.

use std::time::{Duration, Instant};

use balloon_sim::{balloon_module, Domain, DomainConfig, Mode, SysctlValue};

const MIB: u64 = 256; // pages
const WAIT: Duration = Duration::from_secs(300);
const BOOT_MIB: u64 = 3072; // PVH RAM must end below the hole at 0xfc000000
const MOVE_MIB: u64 = 2048;

fn hypercalls(d: &Domain) -> u64 {
    match d.sysctl_read("hw.balloon.stats.hypercalls") {
        Ok(SysctlValue::Quad(v)) => v as u64,
        other => panic!("hypercalls: {other:?}"),
    }
}

fn idle(d: &Domain) -> bool {
    matches!(d.sysctl_read("hw.balloon.state"), Ok(SysctlValue::String(s)) if s == "idle")
}

/// Sets the target and returns (hypercalls, pglistalloc calls, extents,
/// seconds) per GiB moved.
fn move_to(d: &Domain, mib: u64) -> (f64, f64, f64, f64) {
    let (h0, s0) = (hypercalls(d), d.snapshot());
    let t = Instant::now();
    d.xl_mem_set(mib * 1024);
    assert!(
        d.wait_until(|v| v.memory() == mib * MIB, WAIT),
        "target not met"
    );
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    while !idle(d) {
        d.wait_until(|_| false, Duration::from_millis(2));
    }
    let secs = t.elapsed().as_secs_f64();
    let (h1, s1) = (hypercalls(d), d.snapshot());
    let gib = MOVE_MIB as f64 / 1024.0;
    (
        (h1 - h0) as f64 / gib,
        (s1.pglistalloc_calls - s0.pglistalloc_calls) as f64 / gib,
        (s1.superpage_extents - s0.superpage_extents) as f64 / gib,
        secs / gib,
    )
}

fn main() {
    println!(
        "2 MiB extents in the simulated domU: {BOOT_MIB} MiB domain, {MOVE_MIB} MiB down and back; \
         figures per GiB moved"
    );
    println!(
        "{:<4} {:<22} {:>4} {:>11} {:>12} {:>8} {:>9}",
        "mode", "memory", "way", "hypercalls", "pglistalloc", "extents", "s (sim)"
    );
    for mode in [Mode::Pv, Mode::Pvh] {
        for scenario in ["contiguous", "fragmented guest", "host without 2 MiB"] {
            let cfg = DomainConfig::default()
                .mode(mode)
                .boot_mib(BOOT_MIB)
                .max_mib(BOOT_MIB * 2)
                .host_free_mib(BOOT_MIB * 2);
            let d = Domain::boot(cfg);
            d.modload(balloon_module()).expect("modload");
            assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
            match scenario {
                "fragmented guest" => {
                    d.kernel_fragment(512);
                }
                "host without 2 MiB" => d.faults_mut().superpage_fail_after = Some(0),
                _ => {}
            }
            for (way, mib) in [("down", BOOT_MIB - MOVE_MIB), ("up", BOOT_MIB)] {
                let (h, p, e, s) = move_to(&d, mib);
                println!(
                    "{:<4} {:<22} {:>4} {:>11.1} {:>12.1} {:>8.1} {:>9.3}",
                    format!("{mode:?}"),
                    scenario,
                    way,
                    h,
                    p,
                    e,
                    s
                );
            }
            d.check().expect("consistent");
        }
    }
}
