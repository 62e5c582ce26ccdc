//! balloon-sim: runs balloon.kmod in a simulated NetBSD/Xen domU.
//!
//! Boots a simulated domU (PV by default, `--pvh` for PVH; 1 GiB boot
//! memory, 4 GiB maximum), loads the real module (the C shim and the Rust
//! core, as built for the host), steers it the way dom0 would with
//! `xl mem-set`, and prints what the module did: the reservation, what
//! `hw.balloon` says, the kernel log, and a summary table. Nothing here
//! ran on NetBSD or under Xen: it is the simulated domU.

use std::time::{Duration, Instant};

use balloon_sim::{balloon_module, Domain, DomainConfig, Mode, SysctlValue};

const MIB: u64 = 256; // pages per MiB
const WAIT: Duration = Duration::from_secs(30);

fn sysctl(d: &Domain, name: &str) -> String {
    match d.sysctl_read(name) {
        Ok(SysctlValue::Quad(v)) => v.to_string(),
        Ok(SysctlValue::Int(v)) => v.to_string(),
        Ok(SysctlValue::Bool(v)) => v.to_string(),
        Ok(SysctlValue::String(s)) => s,
        Err(e) => format!("error {e}"),
    }
}

/// Waits until the worker is idle or has given up.
fn settle(d: &Domain) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = sysctl(d, "hw.balloon.state");
        if s == "idle" || s.starts_with("cancelled") || Instant::now() > deadline {
            return;
        }
        d.wait_until(|_| false, Duration::from_millis(2));
    }
}

fn main() {
    let mode = if std::env::args().any(|a| a == "--pvh") {
        Mode::Pvh
    } else {
        Mode::Pv
    };
    let d = Domain::boot(DomainConfig::default().mode(mode));
    println!("balloon-sim: a simulated NetBSD {mode:?} domU, 1 GiB booted, 4 GiB maximum");
    if let Err(e) = d.modload(balloon_module()) {
        eprintln!("modload balloon: error {e}");
        for line in d.dmesg() {
            eprintln!("  {line}");
        }
        std::process::exit(1);
    }
    d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT);
    println!("modload balloon: ok");
    for name in d.sysctl_list("hw.balloon.") {
        let desc = d.sysctl_describe(&name).unwrap_or_default();
        println!("  {name} = {:<12} {desc}", sysctl(&d, &name));
    }
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>9} {:>7}  state",
        "xl mem-set", "target", "current", "ballooned", "plugged", "time"
    );
    for (label, mib) in [
        ("512M  (down by half)", 512u64),
        ("1024M (back to boot)", 1024),
        ("2560M (above boot)", 2560),
        ("768M  (below boot)", 768),
        ("16M   (below the floor)", 16),
        ("8192M (above the maximum)", 8192),
        ("1024M (boot size)", 1024),
    ] {
        let start = Instant::now();
        let mut seen = 0;
        d.wait_until(
            |v| {
                seen = v.watch_events_delivered();
                true
            },
            WAIT,
        );
        d.xl_mem_set(mib * 1024);
        // The module has read the new target once the watch fired.
        d.wait_until(|v| v.watch_events_delivered() > seen, WAIT);
        settle(&d);
        println!(
            "{:<28} {:>7} KiB {:>6} KiB {:>6} KiB {:>5} KiB {:>5}ms  {}",
            label,
            sysctl(&d, "hw.balloon.target"),
            sysctl(&d, "hw.balloon.current"),
            sysctl(&d, "hw.balloon.ballooned"),
            sysctl(&d, "hw.balloon.plugged"),
            start.elapsed().as_millis(),
            sysctl(&d, "hw.balloon.state")
        );
    }
    if let Err(e) = d.check() {
        println!("consistency check FAILED: {e}");
        std::process::exit(1);
    }
    println!();
    println!("kernel log:");
    for line in d.dmesg() {
        println!("  {line}");
    }
    match d.modunload() {
        Ok(()) => println!("modunload balloon: ok"),
        Err(e) => println!("modunload balloon: error {e}"),
    }
    let (bytes, count) = d.kmem_outstanding();
    println!(
        "after unload: reservation {} MiB, kmem outstanding {bytes} bytes in {count} allocations, \
         dirty pages handed to Xen {}",
        d.reservation() / MIB,
        d.dirty_frames_given()
    );
}
