// SPDX-License-Identifier: BSD-2-Clause
//! The whole stack against memset (issue 13 goal 4): balloon.kmod (the C
//! shim and the Rust core) runs in the simulated domU, PV and PVH, with
//! scrubbing on and pmap_zero_page writing 4 KiB of real memory per frame
//! (`DomainConfig::real_zero`). For each size it inflates the domain by
//! that much (`xl mem-set`), deflates it back, and memsets the same number
//! of frames of the same memory, in the same run, and prints medians of
//! the repeated runs: ms per GiB and the ratio to memset. A last run per
//! mode is timed stand-in by stand-in (`balloon_sim::prof`) for the
//! profile; the timed runs have those timers off.
//!
//! Run: cargo bench -p balloon-sim --bench stack [-- --sizes 256,1024
//! --runs 5 --modes pv,pvh]  (sizes in MiB)
//!
//! Everything here runs in the simulated domU on Linux; nothing runs on
//! NetBSD or under Xen, and the figures are this machine's.

use std::time::{Duration, Instant};

use balloon_sim::{balloon_module, prof, Domain, DomainConfig, Mode, SysctlValue};

const PAGES_PER_MIB: u64 = 256;
/// Memory the domain keeps beyond what is ballooned: above the driver's
/// safe floor (policy.rs piecewise_minimum) for every size here.
const SPARE_MIB: u64 = 512;
const LIMIT: Duration = Duration::from_secs(300);

struct Args {
    sizes: Vec<u64>,
    runs: usize,
    modes: Vec<Mode>,
}

fn parse_args() -> Args {
    let mut a = Args {
        sizes: vec![256, 1024],
        runs: 5,
        modes: vec![Mode::Pv, Mode::Pvh],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {}
            "--sizes" => {
                let v = it.next().unwrap_or_default();
                a.sizes = v
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage(&v)))
                    .collect();
            }
            "--runs" => {
                let v = it.next().unwrap_or_default();
                a.runs = v.parse().unwrap_or_else(|_| usage(&v));
            }
            "--modes" => {
                let v = it.next().unwrap_or_default();
                a.modes = v
                    .split(',')
                    .map(|m| match m {
                        "pv" => Mode::Pv,
                        "pvh" => Mode::Pvh,
                        _ => usage(m),
                    })
                    .collect();
            }
            other => usage(other),
        }
    }
    a
}

fn usage(bad: &str) -> ! {
    eprintln!("stack: bad argument {bad:?}; use --sizes MIB,MIB --runs N --modes pv,pvh");
    std::process::exit(2)
}

/// CPU time of every thread of this process so far, in ns (the first
/// field of each /proc/self/task/*/schedstat). The machine is shared, so
/// wall time includes time other programs ran; the ratios are taken on
/// CPU time, and the wall-time ratios are printed beside them.
fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// Wall and CPU time of `f`, and its result.
fn timed<R>(f: impl FnOnce() -> R) -> (Duration, Duration, R) {
    let (w, c) = (Instant::now(), cpu_ns());
    let r = f();
    let cpu = Duration::from_nanos(cpu_ns().saturating_sub(c));
    (w.elapsed(), cpu, r)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn quad(d: &Domain, name: &str) -> u64 {
    match d.sysctl_read(name) {
        Ok(SysctlValue::Quad(v)) => v as u64,
        other => panic!("{name}: {other:?}"),
    }
}

fn state(d: &Domain) -> String {
    match d.sysctl_read("hw.balloon.state") {
        Ok(SysctlValue::String(s)) => s,
        other => panic!("hw.balloon.state: {other:?}"),
    }
}

/// Sets the target and polls (no wait on the model: a waiter would make
/// every stand-in wake it) until the reservation is there and the worker
/// is idle; returns the wall and CPU time from the write to the
/// reservation.
fn mem_set(d: &Domain, pages: u64) -> (Duration, Duration) {
    let t = Instant::now();
    let (wall, cpu, ()) = timed(|| {
        d.xl_mem_set(pages * 4);
        while d.memory() != pages {
            assert!(
                t.elapsed() < LIMIT,
                "stuck at {} pages: {}",
                d.memory(),
                state(d)
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    while state(d) != "idle" {
        assert!(t.elapsed() < LIMIT, "worker busy: {}", state(d));
        std::thread::sleep(Duration::from_micros(500));
    }
    (wall, cpu)
}

/// Medians in ms per GiB: CPU time, and wall time.
struct Row {
    memset: f64,
    inflate: f64,
    deflate: f64,
    wall: [f64; 3],
    hypercalls: f64,
}

fn per_gib(d: Duration, pages: u64) -> f64 {
    d.as_secs_f64() * 1e3 * (262_144.0 / pages as f64)
}

fn run(mode: Mode, mib: u64, runs: usize) -> (Row, Vec<(&'static str, u64, u64)>, f64) {
    let boot_mib = mib + SPARE_MIB;
    let cfg = DomainConfig::default()
        .mode(mode)
        .boot_mib(boot_mib)
        .max_mib(boot_mib)
        .host_free_mib(2 * mib + 1024)
        .real_zero(true);
    let d = Domain::boot(cfg);
    d.modload(balloon_module()).expect("modload");
    d.sysctl_write("hw.balloon.scrub", SysctlValue::Bool(true))
        .expect("scrub on");
    let boot = d.memory();
    let n = mib * PAGES_PER_MIB;
    let (seg_start, seg_end) = *d.segments().last().expect("a boot segment");
    assert!(seg_end - seg_start >= n);
    // Fault the frame memory in once, so that neither side pays for it.
    assert_eq!(d.memset_frames(seg_end - n, n, 0x5a), n);
    let mut v: [Vec<f64>; 7] = Default::default();
    for _ in 0..runs {
        let (w, c, _) = timed(|| d.memset_frames(seg_end - n, n, 0x5a));
        v[0].push(per_gib(c, n));
        v[3].push(per_gib(w, n));
        let h0 = quad(&d, "hw.balloon.stats.hypercalls");
        let (w, c) = mem_set(&d, boot - n);
        v[1].push(per_gib(c, n));
        v[4].push(per_gib(w, n));
        let (w, c) = mem_set(&d, boot);
        v[2].push(per_gib(c, n));
        v[5].push(per_gib(w, n));
        let h1 = quad(&d, "hw.balloon.stats.hypercalls");
        v[6].push((h1 - h0) as f64 * 262_144.0 / n as f64);
    }
    // The profile: one more inflate and deflate, timed per stand-in.
    prof::enable(true);
    let t = Instant::now();
    mem_set(&d, boot - n);
    mem_set(&d, boot);
    let total = t.elapsed().as_nanos() as f64;
    let fig = prof::figures();
    prof::enable(false);
    d.modunload().expect("modunload");
    (
        Row {
            memset: median(&mut v[0]),
            inflate: median(&mut v[1]),
            deflate: median(&mut v[2]),
            wall: [median(&mut v[3]), median(&mut v[4]), median(&mut v[5])],
            hypercalls: median(&mut v[6]),
        },
        fig,
        total,
    )
}

fn main() {
    let a = parse_args();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "whole stack in the simulated domU: balloon.kmod inflates by SIZE and deflates back, \
         scrub on, pmap_zero_page writes 4 KiB (--real-zero); memset of the same frames in the \
         same run; medians of {} runs; CPU ms per GiB (all threads), and wall-time ratios; \
         {cpu}, {} CPUs",
        a.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<4} {:>9} {:>7} {:>8} {:>8} {:>9} {:>9} {:>10} {:>10} {:>11}",
        "mode",
        "size",
        "memset",
        "inflate",
        "deflate",
        "in/memset",
        "de/memset",
        "wall in/ms",
        "wall de/ms",
        "hcalls/GiB"
    );
    let mut worst = (0.0f64, 0.0f64);
    let mut profiles = Vec::new();
    for &mode in &a.modes {
        for &mib in &a.sizes {
            let (r, fig, total) = run(mode, mib, a.runs);
            let (ri, rd) = (r.inflate / r.memset, r.deflate / r.memset);
            worst = (worst.0.max(ri), worst.1.max(rd));
            println!(
                "{:<4} {:>5} MiB {:>7.1} {:>8.1} {:>8.1} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>11.0}",
                format!("{mode:?}").to_uppercase(),
                mib,
                r.memset,
                r.inflate,
                r.deflate,
                ri,
                rd,
                r.wall[1] / r.wall[0],
                r.wall[2] / r.wall[0],
                r.hypercalls
            );
            profiles.push((mode, mib, fig, total));
        }
    }
    println!("profile (one more inflate + deflate per row, timers on; wall ns per call, share of the wall time):");
    for (mode, mib, fig, total) in profiles {
        let parts: Vec<String> = fig
            .iter()
            .filter(|f| f.1 > 0)
            .map(|(name, calls, ns)| {
                format!(
                    "{name} {:.0} ns x {} = {:.0}%",
                    *ns as f64 / *calls as f64,
                    calls,
                    100.0 * *ns as f64 / total
                )
            })
            .collect();
        let rest = 100.0 - fig.iter().map(|f| f.2 as f64).sum::<f64>() * 100.0 / total;
        println!(
            "  {} {mib} MiB: {}; the rest (core, shim, p2m, wake-ups) {rest:.0}%",
            format!("{mode:?}").to_uppercase(),
            parts.join(", ")
        );
    }
    println!(
        "ratios: worst inflate/memset {:.2}, worst deflate/memset {:.2} (goal: at most 1.5)",
        worst.0, worst.1
    );
}
