// SPDX-License-Identifier: BSD-2-Clause
//! The whole stack against memset (issue 13 goal 4): balloon.kmod (the C
//! shim and the Rust core) runs in the simulated domU, PV and PVH, with
//! scrubbing on and pmap_zero_page writing 4 KiB of real memory per frame
//! (`DomainConfig::real_zero`, in its window of `real_zero_window`
//! frames, 1 GiB: frame f writes slot f modulo the window). For each size
//! it inflates the domain by that much (`xl mem-set`), deflates it back,
//! and memsets the same number of frames over the same window, in the
//! same run, and prints medians of the repeated runs: ms per GiB and the
//! ratio to memset. Beside them, the simulator's resident memory per
//! simulated page (VmRSS after boot, VmHWM over the runs) and the host's
//! load average. A last run per mode is timed stand-in by stand-in
//! (`balloon_sim::prof`) for the profile; the timed runs have those
//! timers off.
//!
//! Run: cargo bench -p balloon-sim --bench stack [-- --sizes 256,1024
//! --runs 5 --modes pv,pvh --max-rss-mib N]  (sizes in MiB, at most
//! 1048576; --max-rss-mib skips a size whose predicted peak resident
//! memory is above N MiB)
//!
//! Everything here runs in the simulated domU on Linux; nothing runs on
//! NetBSD or under Xen, and the figures are this machine's.

use std::time::{Duration, Instant};

use balloon_sim::{balloon_module, prof, Domain, DomainConfig, Mode, SysctlValue};

const PAGES_PER_MIB: u64 = 256;
/// Memory the domain keeps beyond what is ballooned (MiB), so that every
/// size can be ballooned whole: the simulated kernel keeps 10% of boot
/// memory in use (DomainConfig::kernel_pages), UVM's free target stays
/// free, and the driver's safe floor (policy.rs piecewise_minimum: 296
/// MiB + 1/32 of the domain from 2 GiB up) is below the spare.
fn spare_mib(mib: u64) -> u64 {
    (384 + mib / 8).max(512)
}
/// How long one inflate or deflate may take: 300 s, or 2 s per GiB.
fn limit(pages: u64) -> Duration {
    Duration::from_secs(300.max(2 * pages / 262_144))
}
/// The largest size (MiB) the benchmark takes: 1 TiB.
const MAX_SIZE_MIB: u64 = 1 << 20;
/// Bytes of simulator state per page assumed before any size has been
/// measured (config.rs documents about 130 for PV).
const PRIOR_BYTES_PER_PAGE: f64 = 130.0;

struct Args {
    sizes: Vec<u64>,
    runs: usize,
    modes: Vec<Mode>,
    max_rss_mib: Option<u64>,
    /// Internal: run this one row in this process (the parent starts a
    /// process per row, so that each row's resident memory is its own).
    row: Option<(Mode, u64)>,
}

fn parse_args() -> Args {
    let mut a = Args {
        sizes: vec![256, 1024],
        runs: 5,
        modes: vec![Mode::Pv, Mode::Pvh],
        max_rss_mib: None,
        row: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {}
            "--sizes" => {
                let v = it.next().unwrap_or_default();
                a.sizes = v
                    .split(',')
                    .map(|s| match s.parse() {
                        Ok(n) if (1..=MAX_SIZE_MIB).contains(&n) => n,
                        _ => usage(&v),
                    })
                    .collect();
            }
            "--max-rss-mib" => {
                let v = it.next().unwrap_or_default();
                a.max_rss_mib = Some(v.parse().unwrap_or_else(|_| usage(&v)));
            }
            "--runs" => {
                let v = it.next().unwrap_or_default();
                a.runs = v.parse().unwrap_or_else(|_| usage(&v));
            }
            "--modes" => {
                let v = it.next().unwrap_or_default();
                a.modes = v.split(',').map(mode_arg).collect();
            }
            "--row" => {
                let (m, v) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
                a.row = Some((mode_arg(&m), v.parse().unwrap_or_else(|_| usage(&v))));
            }
            other => usage(other),
        }
    }
    a
}

fn mode_arg(m: &str) -> Mode {
    match m {
        "pv" => Mode::Pv,
        "pvh" => Mode::Pvh,
        _ => usage(m),
    }
}

fn usage(bad: &str) -> ! {
    eprintln!(
        "stack: bad argument {bad:?}; use --sizes MIB,MIB (1 to {MAX_SIZE_MIB}) --runs N \
         --modes pv,pvh --max-rss-mib N"
    );
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

/// A field of /proc/self/status in bytes (VmRSS, VmHWM; given in kB).
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Resets VmHWM to the current VmRSS (proc(5): writing 5 to
/// /proc/PID/clear_refs); false when the kernel refuses, and then VmHWM
/// is the peak since the process started.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The host's load averages over 1, 5 and 15 minutes (/proc/loadavg).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|_| "?".into())
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
    let limit = limit(d.memory().abs_diff(pages));
    let (wall, cpu, ()) = timed(|| {
        d.xl_mem_set(pages * 4);
        while d.memory() != pages {
            assert!(
                t.elapsed() < limit,
                "stuck at {} pages: {}",
                d.memory(),
                state(d)
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    while state(d) != "idle" {
        assert!(t.elapsed() < limit, "worker busy: {}", state(d));
        std::thread::sleep(Duration::from_micros(500));
    }
    (wall, cpu)
}

/// Medians in ms per GiB: CPU time, and wall time. Memory in bytes.
struct Row {
    memset: f64,
    /// The kernel's own per-page zeroing of the same frames, one at a
    /// time: PVH a 4 KiB memset each (pmap_zero_page through the direct
    /// map), PV Xen's clear_page_sse2 each (MMUEXT_CLEAR_PAGE: 8-byte
    /// MOVNTI stores, then SFENCE). The floor of a scrub page by page.
    floor: f64,
    inflate: f64,
    deflate: f64,
    wall: [f64; 3],
    hypercalls: f64,
    /// The domain's pages at boot.
    pages: u64,
    /// VmRSS before boot, after boot (and modload), and VmHWM from just
    /// before boot to the end of the runs.
    rss_pre: u64,
    rss_boot: u64,
    peak: u64,
    /// Host memory of the real-zero window (all touched by the runs).
    window: u64,
}

impl Row {
    /// Simulator state per page at the peak: VmHWM less what the process
    /// held before boot and less the real-zero window.
    fn sim_per_page(&self) -> f64 {
        self.peak.saturating_sub(self.rss_pre + self.window) as f64 / self.pages as f64
    }
}

fn per_gib(d: Duration, pages: u64) -> f64 {
    d.as_secs_f64() * 1e3 * (262_144.0 / pages as f64)
}

/// The domain for a size (a large PVH one gets its RAM above 4 GiB from
/// the simulator, as xl builds it: config.rs `segments`).
fn config(mode: Mode, mib: u64) -> DomainConfig {
    let boot_mib = mib + spare_mib(mib);
    DomainConfig::default()
        .mode(mode)
        .boot_mib(boot_mib)
        .max_mib(boot_mib)
        .host_free_mib(2 * mib + 1024)
        .real_zero(true)
}

/// Host memory of the real-zero window of a domain whose frames end at
/// `span`.
fn window_bytes(cfg: &DomainConfig, span: u64) -> u64 {
    span.min(cfg.real_zero_window) * 4096
}

fn run(cfg: DomainConfig, mib: u64, runs: usize) -> (Row, Vec<(&'static str, u64, u64)>, f64) {
    let window_frames = cfg.real_zero_window;
    if !reset_peak() {
        eprintln!("stack: /proc/self/clear_refs refused 5: VmHWM is the peak since start");
    }
    let rss_pre = status_bytes("VmRSS");
    let pv = cfg.mode == Mode::Pv;
    let d = Domain::boot(cfg);
    d.modload(balloon_module()).expect("modload");
    d.sysctl_write("hw.balloon.scrub", SysctlValue::Bool(true))
        .expect("scrub on");
    let rss_boot = status_bytes("VmRSS");
    let boot = d.memory();
    let n = mib * PAGES_PER_MIB;
    let (_, seg_end) = *d.segments().last().expect("a boot segment");
    assert!(seg_end >= n);
    // Fault the whole window in once (frames [0, slots) own one slot
    // each), so that neither side pays for it.
    let slots = seg_end.min(window_frames);
    assert_eq!(d.memset_frames(0, slots, 0x5a), slots);
    let mut v: [Vec<f64>; 8] = Default::default();
    for _ in 0..runs {
        // n frames' 4 KiB over the window, as the module's zeroing.
        let (w, c, _) = timed(|| d.memset_frames(seg_end - n, n, 0x5a));
        v[0].push(per_gib(c, n));
        v[3].push(per_gib(w, n));
        let (_, c, _) = timed(|| {
            for f in seg_end - n..seg_end {
                if pv {
                    d.clear_frame_like_xen(f);
                } else {
                    d.memset_frames(f, 1, 0);
                }
            }
        });
        v[7].push(per_gib(c, n));
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
    let peak = status_bytes("VmHWM");
    (
        Row {
            memset: median(&mut v[0]),
            floor: median(&mut v[7]),
            inflate: median(&mut v[1]),
            deflate: median(&mut v[2]),
            wall: [median(&mut v[3]), median(&mut v[4]), median(&mut v[5])],
            hypercalls: median(&mut v[6]),
            pages: boot,
            rss_pre,
            rss_boot,
            peak,
            window: slots * 4096,
        },
        fig,
        total,
    )
}

/// Runs one row in this process and prints it: the table row, the
/// profile line, and a last line `@ IN/MEMSET DE/MEMSET SIM-B/PG PRE`
/// for the parent.
fn row(mode: Mode, mib: u64, runs: usize) {
    let name = format!("{mode:?}").to_uppercase();
    let (r, fig, total) = run(config(mode, mib), mib, runs);
    let (ri, rd) = (r.inflate / r.memset, r.deflate / r.memset);
    let rf = r.inflate / r.floor;
    let pages = r.pages as f64;
    println!(
        "{:<4} {:>7} MiB {:>7.1} {:>7.1} {:>8.1} {:>8.1} {:>9.2} {:>9.2} {:>8.2} {:>10.2} \
         {:>10.2} {:>11.0} {:>7.0} {:>9.0} {:>9.0} {:>7.0} {:>8.0} {:>14}",
        name,
        mib,
        r.memset,
        r.floor,
        r.inflate,
        r.deflate,
        ri,
        rd,
        rf,
        r.wall[1] / r.wall[0],
        r.wall[2] / r.wall[0],
        r.hypercalls,
        r.rss_pre as f64 / (1u64 << 20) as f64,
        r.rss_boot as f64 / pages,
        r.peak as f64 / pages,
        r.window as f64 / (1u64 << 20) as f64,
        r.sim_per_page(),
        load()
    );
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
        "  {name} {mib} MiB: {}; the rest (core, shim, p2m, wake-ups) {rest:.0}%",
        parts.join(", ")
    );
    println!("@ {ri} {rd} {} {} {rf}", r.sim_per_page(), r.rss_pre);
}

/// What a row's process printed: the table row, the profile line, the
/// two ratios, the simulator's bytes per page and VmRSS before boot.
struct Child {
    row: String,
    profile: String,
    ratios: (f64, f64),
    /// Inflate over the per-page floor.
    over_floor: f64,
    sim_per_page: f64,
    pre: u64,
}

/// Runs one row in a process of its own (this program with `--row`).
fn child(mode: Mode, mib: u64, runs: usize) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let m = if mode == Mode::Pv { "pv" } else { "pvh" };
    let out = std::process::Command::new(exe)
        .args(["--row", m, &mib.to_string(), "--runs", &runs.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!("{} (its standard error is above)", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let parse = || -> Option<Child> {
        let [row, profile, last] = lines.as_slice() else {
            return None;
        };
        let f: Vec<&str> = last.strip_prefix("@ ")?.split(' ').collect();
        Some(Child {
            row: row.to_string(),
            profile: profile.to_string(),
            ratios: (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?),
            sim_per_page: f.get(2)?.parse().ok()?,
            pre: f.get(3)?.parse().ok()?,
            over_floor: f.get(4)?.parse().ok()?,
        })
    };
    parse().ok_or_else(|| format!("unexpected output: {text:?}"))
}

fn main() {
    let a = parse_args();
    if let Some((mode, mib)) = a.row {
        row(mode, mib, a.runs);
        return;
    }
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
         scrub on, pmap_zero_page writes 4 KiB (--real-zero, in a window of {} MiB); memset of \
         the same number of frames over the same window in the same run; floor: the kernel's \
         own zeroing of those frames one page at a time (PVH: a 4 KiB memset each, as \
         pmap_zero_page; PV: Xen's clear_page_sse2 each, as MMUEXT_CLEAR_PAGE), in/floor: \
         inflate over it; medians of {} runs; CPU ms per GiB (all threads), and wall-time \
         ratios; {cpu}, {} CPUs",
        DomainConfig::default().real_zero_window / PAGES_PER_MIB,
        a.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "memory: each row runs in a fresh process; resident bytes per simulated page (the \
         domain's boot pages): VmRSS after boot (boot), VmHWM over the runs (peak); pre: VmRSS \
         before boot; win: the real-zero window (in the peak); sim: (peak - pre - win) per \
         page; load: the host's load average (1/5/15 min) at the end of the row"
    );
    println!(
        "{:<4} {:>11} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9} {:>8} {:>10} {:>10} {:>11} {:>7} \
         {:>9} {:>9} {:>7} {:>8} {:>14}",
        "mode",
        "size",
        "memset",
        "floor",
        "inflate",
        "deflate",
        "in/memset",
        "de/memset",
        "in/floor",
        "wall in/ms",
        "wall de/ms",
        "hcalls/GiB",
        "pre MiB",
        "boot B/pg",
        "peak B/pg",
        "win MiB",
        "sim B/pg",
        "load"
    );
    let mut worst = (0.0f64, 0.0f64);
    let mut worst_floor = 0.0f64;
    let mut profiles = Vec::new();
    // (mode, size, simulator bytes per page, VmRSS before boot)
    let mut measured: Vec<(Mode, u64, f64, u64)> = Vec::new();
    for &mode in &a.modes {
        for &mib in &a.sizes {
            let name = format!("{mode:?}").to_uppercase();
            let cfg = config(mode, mib);
            if let Err(e) = cfg.validate() {
                println!("{name:<4} {mib:>7} MiB skipped: the simulator refuses it: {e}");
                continue;
            }
            if let Some(max) = a.max_rss_mib {
                // Bytes per page of the previous size of this mode, else
                // of the last size measured, else the documented prior.
                let last = measured.iter().rev().find(|m| m.0 == mode);
                let (bpp, pre, from) = last.or(measured.last()).map_or(
                    (PRIOR_BYTES_PER_PAGE, 0, "assumed".to_string()),
                    |m| {
                        let mode = format!("{:?}", m.0).to_uppercase();
                        (m.2, m.3, format!("as measured at {mode} {} MiB", m.1))
                    },
                );
                let span = cfg.segments().last().map_or(0, |s| s.0 + s.1);
                let predicted =
                    pre as f64 + window_bytes(&cfg, span) as f64 + bpp * cfg.boot_pages() as f64;
                let predicted_mib = predicted / (1u64 << 20) as f64;
                if predicted_mib > max as f64 {
                    println!(
                        "{name:<4} {mib:>7} MiB skipped: predicted peak {predicted_mib:.0} MiB \
                         > --max-rss-mib {max} ({bpp:.0} B per page, {from}, plus the window \
                         and the process's own)"
                    );
                    continue;
                }
            }
            match child(mode, mib, a.runs) {
                Ok(c) => {
                    println!("{}", c.row);
                    worst = (worst.0.max(c.ratios.0), worst.1.max(c.ratios.1));
                    worst_floor = worst_floor.max(c.over_floor);
                    measured.push((mode, mib, c.sim_per_page, c.pre));
                    profiles.push(c.profile);
                }
                Err(e) => println!("{name:<4} {mib:>7} MiB failed: {e}"),
            }
        }
    }
    println!("profile (one more inflate + deflate per row, timers on; wall ns per call, share of the wall time):");
    for p in profiles {
        println!("{p}");
    }
    println!(
        "ratios: worst inflate/memset {:.2}, worst deflate/memset {:.2} (goal: at most 1.5); \
         worst inflate over the per-page floor {:.2}",
        worst.0, worst.1, worst_floor
    );
}
