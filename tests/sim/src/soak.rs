// SPDX-License-Identifier: BSD-2-Clause
//! The soak: a seeded random walk of balloon.kmod in the simulated domU,
//! checked after every settle.
//!
//! Each seed picks its domain: PV or PVH, a stock kernel or one with the
//! growth interfaces (so that plugs and their faults happen), its sizes.
//! Each step carries out one to three random actions, drawn from: targets
//! from xenstore (`xenstore-write memory/target`, well-formed, out of
//! range or garbage, and `xl mem-set`) and from sysctl, knob writes
//! (batch, scrub, hotplug, unplug, retry_max, retry_delay_max, min), every
//! fault the simulator injects (short hypercalls, failing allocations,
//! plugs and unplugs, xenstore read errors, hypercalls returning an
//! errno, and at load: kthread_create, sysctl_createv and
//! register_xenbus_watch), host memory changes, kernel memory pressure,
//! module unload and load, and a hypercall stalled while a new target
//! arrives. Then `sim settle` and `sim invariants` (see
//! [`crate::control`]): the model's frame-by-frame check; `current` equal
//! to Xen's reservation; `frames_lost` 0; `ballooned` equal to the pages
//! the module holds; counters never going down; no page reaching Xen
//! unzeroed while scrubbing is on; no hypercall while idle.
//!
//! Every action is a console command, and the walk writes each one to a
//! log, in scenario form, before it runs it. `balloon-sim soak` runs the
//! walk in a child process (a simulated kernel panic aborts the process),
//! and when the child fails it prints the seed and shrinks the log to a
//! short scenario that still fails the same way, by running candidate
//! scenarios with `balloon-sim run`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::Console;
use crate::{Domain, DomainConfig, Flavour, Mode};

/// The hidden subcommand the parent runs the walk with.
pub const CHILD_COMMAND: &str = "soak-child";

/// Simulated time runs this much faster than real time in the soak, so
/// that back-offs (up to 32 simulated seconds) cost little real time.
const TIME_SCALE: u32 = 20_000;

/// splitmix64: small, seedable, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// The domain a seed runs in.
#[derive(Clone, Debug)]
pub struct Shape {
    pub mode: Mode,
    /// A kernel with the growth interfaces (plugs happen) or a stock one.
    pub assisted: bool,
    pub boot_mib: u64,
    pub max_mib: u64,
    pub host_free_mib: u64,
}

impl Shape {
    /// The domain for `seed` (PV or PVH, 128 to 512 MiB booted, a maximum
    /// of one to four times that), unless `mode` is forced.
    pub fn for_seed(seed: u64, mode: Option<Mode>) -> Shape {
        let mut r = Rng(seed ^ 0x5eed_5eed);
        let mode = mode.unwrap_or(if r.percent(50) { Mode::Pv } else { Mode::Pvh });
        let boot_mib = *r.pick(&[128, 192, 256, 512]);
        let max_mib = boot_mib * *r.pick(&[1, 2, 4]);
        let assisted = r.percent(60);
        Shape {
            mode,
            assisted,
            boot_mib,
            max_mib,
            host_free_mib: max_mib * 2,
        }
    }

    /// The `#:` line of the scenario.
    pub fn header(&self) -> String {
        format!(
            "#: {} --kernel {} --boot {}m --max {}m --host-free {}m --time-scale {TIME_SCALE} \
             --no-modload",
            if self.mode == Mode::Pv {
                "--pv"
            } else {
                "--pvh"
            },
            if self.assisted { "assisted" } else { "stock" },
            self.boot_mib,
            self.max_mib,
            self.host_free_mib
        )
    }

    fn config(&self) -> DomainConfig {
        DomainConfig::default()
            .mode(self.mode)
            .boot_mib(self.boot_mib)
            .max_mib(self.max_mib)
            .host_free_mib(self.host_free_mib)
            .time_scale(TIME_SCALE)
            .flavour(if self.assisted {
                Flavour::Assisted
            } else {
                Flavour::Stock
            })
    }
}

/// Picks the commands of the walk.
struct Walk {
    rng: Rng,
    shape: Shape,
    fault_commands: u64,
}

const FAULT_POINTS: &[&str] = &[
    "decrease_reservation",
    "increase_reservation",
    "populate_physmap",
    "physseg_plug",
    "physseg_unplug",
    "pagealloc",
    "pglistalloc",
    "zero_page",
    "xenbus_read",
];

impl Walk {
    /// A target in KiB: mostly between a quarter of boot memory and the
    /// maximum, sometimes at the edges or beyond.
    fn target_kib(&mut self) -> u64 {
        let boot = self.shape.boot_mib * 1024;
        let max = self.shape.max_mib * 1024;
        match self.rng.below(10) {
            0 => 0,
            1 => max + self.rng.range(1, 1 << 20),
            2 => boot,
            3 => max,
            _ => self.rng.range(boot / 4, max),
        }
    }

    fn xenstore_value(&mut self) -> String {
        match self.rng.below(12) {
            0 => self
                .rng
                .pick(&[
                    "lots",
                    "-1",
                    "12k",
                    "0x30d40",
                    "18446744073709551616",
                    "\\x20200000",
                ])
                .to_string(),
            1 => format!("{}\\x00junk", self.target_kib()),
            2 => "9".repeat(self.rng.range(20, 80) as usize),
            _ => self.target_kib().to_string(),
        }
    }

    fn fault(&mut self) -> String {
        self.fault_commands += 1;
        let n = |r: &mut Rng| {
            if r.percent(30) {
                "off".to_string()
            } else {
                r.pick(&[0u64, 1, 3, 50, 200, 1000]).to_string()
            }
        };
        let flag = |r: &mut Rng| (*r.pick(&["on", "off", "off"])).to_string();
        let errno = |r: &mut Rng| {
            if r.percent(40) {
                "off".to_string()
            } else {
                (*r.pick(&["EIO", "ENOMEM", "EINVAL", "EFAULT", "EAGAIN", "ENOSPC"])).to_string()
            }
        };
        let r = &mut self.rng;
        match r.below(16) {
            0 => format!("sim fault decrease_limit {}", n(r)),
            1 => format!("sim fault increase_limit {}", n(r)),
            2 => format!("sim fault populate_limit {}", n(r)),
            3 => format!("sim fault pagealloc_fail_after {}", n(r)),
            4 => format!("sim fault pglistalloc_fail_after {}", n(r)),
            5 => format!("sim fault plug_fail {}", flag(r)),
            6 => format!("sim fault unplug_fail {}", flag(r)),
            7 => format!("sim fault kmem_nosleep_fail {}", flag(r)),
            8 => format!("sim fault xenstore_read_error {}", errno(r)),
            9 => format!("sim fault kthread_create_error {}", errno(r)),
            10 => format!("sim fault sysctl_create_fail_after {}", n(r)),
            11 => format!("sim fault watch_register_error {}", errno(r)),
            12 | 13 => {
                let op = *r.pick(&[
                    "decrease_reservation",
                    "increase_reservation",
                    "populate_physmap",
                    "current_reservation",
                    "maximum_reservation",
                ]);
                format!("sim fault memory_op {op} {}", errno(r))
            }
            _ => "sim fault clear".to_string(),
        }
    }

    fn knob(&mut self) -> String {
        let r = &mut self.rng;
        let w = match r.below(7) {
            0 => format!(
                "hw.balloon.batch={}",
                r.pick(&[1u64, 7, 64, 512, 4096, 8192, 0, 9000])
            ),
            1 => format!("hw.balloon.scrub={}", r.below(2)),
            2 => format!("hw.balloon.hotplug={}", r.below(2)),
            3 => format!("hw.balloon.unplug={}", r.below(2)),
            4 => format!("hw.balloon.retry_max={}", r.range(1, 8)),
            5 => format!("hw.balloon.retry_delay_max={}", r.range(1000, 32000)),
            _ => {
                let boot = self.shape.boot_mib * 1024;
                format!("hw.balloon.min={}", self.rng.range(boot / 8, boot))
            }
        };
        format!("? sysctl -w {w}")
    }

    /// One to three actions (each one or more command lines).
    fn actions(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..self.rng.range(1, 3) {
            match self.rng.below(100) {
                0..=19 => lines.push(format!(
                    "? xenstore-write memory/target {}",
                    self.xenstore_value()
                )),
                20..=27 => {
                    let mib = self.rng.range(self.shape.boot_mib / 4, self.shape.max_mib);
                    lines.push(format!("? xl mem-set domU {mib}m"));
                }
                28..=39 => lines.push(format!(
                    "? sysctl -w hw.balloon.target={}",
                    self.target_kib()
                )),
                40..=49 => lines.push(self.knob()),
                50..=69 => lines.push(self.fault()),
                70..=75 => {
                    let mib = *self.rng.pick(&[0u64, 1, 64, 512, 65536]);
                    lines.push(format!("sim host-free {mib}m"));
                }
                76..=81 => {
                    let mib = self.rng.range(1, self.shape.boot_mib / 4);
                    let what = if self.rng.percent(50) {
                        "alloc"
                    } else {
                        "free"
                    };
                    lines.push(format!("sim kernel-{what} {mib}m"));
                }
                82..=88 => {
                    let what = if self.rng.percent(50) {
                        "modunload"
                    } else {
                        "modload"
                    };
                    lines.push(format!("? {what} balloon"));
                }
                _ => {
                    // A hypercall or page allocation stalled mid-step
                    // while dom0 writes a new target: only commands that
                    // cannot wait for the worker run before the release.
                    let point = *self.rng.pick(FAULT_POINTS);
                    lines.push(format!("sim stall {point} {}", self.rng.below(3)));
                    lines.push(format!(
                        "? xenstore-write memory/target {}",
                        self.target_kib()
                    ));
                    lines.push("? sim stalled 50ms".to_string());
                    lines.push("sim release".to_string());
                }
            }
            // Every watch event of this action (a xenstore write, xl
            // mem-set, a load's registration) is delivered before the next
            // action runs: the callback reads memory/target when it runs,
            // so without this a second write could land before the first
            // callback's read in the walk but not in its replay (the
            // soak's self-test replayed a walk without its failure: both
            // callbacks read the second, refused value there). Draws no
            // random number, so every seed walks as before.
            lines.push("? sim watches-delivered".to_string());
        }
        lines
    }
}

/// What a walk did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub steps: u64,
    pub hypercalls: u64,
    pub faults_fired: u64,
    pub fault_commands: u64,
    pub elapsed: Duration,
    /// The failing line and why, when the walk failed.
    pub failure: Option<String>,
}

/// Runs the walk for `seed` in this process until the model has seen
/// `hypercalls` hypercalls (or `max_steps` steps), writing every command
/// to `log` (a scenario file) before running it. Progress goes to
/// standard error every few seconds unless `quiet`.
pub fn walk(
    seed: u64,
    mode: Option<Mode>,
    hypercalls: u64,
    max_steps: Option<u64>,
    log: &mut dyn Write,
    quiet: bool,
) -> Outcome {
    let shape = Shape::for_seed(seed, mode);
    let start = Instant::now();
    let _ = writeln!(log, "{}", shape.header());
    let _ = writeln!(log, "# balloon-sim soak --seed {seed}");
    let console = Console::new(Domain::boot(shape.config()), false);
    let mut w = Walk {
        rng: Rng(seed),
        shape,
        fault_commands: 0,
    };
    let mut out = Outcome::default();
    let mut sink = std::io::sink();
    let mut run = |line: &str, log: &mut dyn Write| -> Result<(), String> {
        let _ = writeln!(log, "{line}");
        let _ = log.flush();
        console.run_script(line, &mut sink).map(|_| ())
    };
    let mut last_report = Instant::now();
    let mut result = run("modload balloon", log);
    while result.is_ok() {
        let snap = console.domain().snapshot();
        out.hypercalls = snap.hypercalls;
        out.faults_fired = snap.faults_fired;
        if snap.hypercalls >= hypercalls || max_steps.is_some_and(|m| out.steps >= m) {
            break;
        }
        if !quiet && last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "soak: seed {seed}: {} steps, {} hypercalls, {} faults fired",
                out.steps, out.hypercalls, out.faults_fired
            );
        }
        let mut lines = w.actions();
        lines.push("? sim settle".into());
        lines.push("sim invariants".into());
        for l in &lines {
            result = run(l, log);
            if result.is_err() {
                break;
            }
        }
        out.steps += 1;
    }
    out.fault_commands = w.fault_commands;
    out.elapsed = start.elapsed();
    let step = out.steps;
    out.failure = result
        .err()
        .map(|e| format!("step {step}: {}", e.trim_start_matches("line 1: ")));
    out
}

/// A failure's kind, for telling whether a shrunk scenario still fails
/// the same way: the panic message or the first broken invariant, with
/// numbers left out.
pub fn signature(stderr: &str) -> String {
    let strip = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
            .trim()
            .to_string()
    };
    if let Some(p) = stderr
        .lines()
        .find_map(|l| l.split("SIMULATED KERNEL PANIC: ").nth(1))
    {
        return format!("panic: {}", strip(p));
    }
    if let Some(i) = stderr
        .lines()
        .find_map(|l| l.split("sim invariants: ").nth(1))
    {
        return format!("invariant: {}", strip(i.split(';').next().unwrap_or(i)));
    }
    if let Some(l) = stderr.lines().find(|l| l.contains("panicked at")) {
        return format!("rust panic: {}", strip(l));
    }
    match stderr.lines().find(|l| l.contains("` failed with status")) {
        Some(l) => format!("failed: {}", strip(l.split(": ").nth(1).unwrap_or(l))),
        None => "failed".into(),
    }
}

/// Runs a scenario with `balloon-sim run`; Some(stderr) when it fails.
fn replay(exe: &Path, file: &Path, limit: Duration) -> Option<String> {
    let mut child = Command::new(exe)
        .arg("run")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let stderr = reader.join().unwrap_or_default();
    match status {
        Some(st) if st.success() => None,
        Some(_) => Some(stderr),
        None => Some(format!(
            "{stderr}\nsim: timed out after {} s",
            limit.as_secs()
        )),
    }
}

/// Shrinks the failing scenario in `log` (header lines, then commands;
/// the last command failed) to a short one that fails the same way, within
/// `budget` of real time. Returns the scenario text and whether it still
/// fails as the original did.
pub fn shrink(exe: &Path, log_text: &str, dir: &Path, budget: Duration) -> (String, bool) {
    let start = Instant::now();
    let header: Vec<&str> = log_text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect();
    let body: Vec<&str> = log_text
        .lines()
        .skip(header.len())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let Some((&last, rest)) = body.split_last() else {
        return (log_text.to_string(), false);
    };
    // The first line loads the module; keep it.
    let (first, middle) = match rest.split_first() {
        Some((f, m)) if f.trim() == "modload balloon" => (vec![*f], m.to_vec()),
        _ => (Vec::new(), rest.to_vec()),
    };
    let text_of = |keep: &[&str]| -> String {
        let mut t = header.join("\n");
        t.push('\n');
        for l in first
            .iter()
            .chain(keep.iter())
            .chain(std::iter::once(&last))
        {
            t.push_str(l);
            t.push('\n');
        }
        t
    };
    let file = dir.join("soak-candidate.sim");
    let per_run = Duration::from_secs(120);
    let fails_like = |keep: &[&str], want: &str| -> Option<bool> {
        if start.elapsed() >= budget {
            return None;
        }
        std::fs::write(&file, text_of(keep)).ok()?;
        Some(replay(exe, &file, per_run).is_some_and(|e| signature(&e) == want))
    };
    // What the whole log fails with when replayed.
    let _ = std::fs::write(&file, text_of(&middle));
    let Some(original) = replay(exe, &file, per_run).map(|e| signature(&e)) else {
        let _ = std::fs::remove_file(&file);
        return (text_of(&middle), false);
    };
    // The shortest suffix that still fails.
    let mut keep = middle.clone();
    let mut n = 0usize;
    while n < middle.len() {
        let cand = &middle[middle.len() - n..];
        match fails_like(cand, &original) {
            Some(true) => {
                keep = cand.to_vec();
                break;
            }
            Some(false) => n = if n == 0 { 1 } else { n * 2 },
            None => break,
        }
    }
    // Then drop chunks, halving their size down to single lines.
    let mut chunk = keep.len().div_ceil(2).max(1);
    'outer: while chunk >= 1 && !keep.is_empty() {
        let mut i = 0;
        while i < keep.len() {
            let mut cand = keep.clone();
            cand.drain(i..(i + chunk).min(cand.len()));
            match fails_like(&cand, &original) {
                Some(true) => keep = cand,
                Some(false) => i += chunk,
                None => break 'outer,
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    let _ = std::fs::remove_file(&file);
    (text_of(&keep), true)
}

/// `balloon-sim soak-child`: the walk of one seed (internal).
pub fn child_main(args: Vec<String>) -> i32 {
    let mut seed = 1;
    let mut hypercalls = 100_000;
    let mut mode = None;
    let mut log_path = None;
    let mut quiet = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => seed = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--hypercalls" => hypercalls = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--pv" => mode = Some(Mode::Pv),
            "--pvh" => mode = Some(Mode::Pvh),
            "--log" => log_path = it.next().map(PathBuf::from),
            "--quiet" => quiet = true,
            _ => {
                eprintln!("balloon-sim: {CHILD_COMMAND}: unexpected argument {a:?}");
                return 2;
            }
        }
    }
    let mut log: Box<dyn Write> = match log_path.map(File::create) {
        Some(Ok(f)) => Box::new(f),
        Some(Err(e)) => {
            eprintln!("balloon-sim: {CHILD_COMMAND}: log: {e}");
            return 2;
        }
        None => Box::new(std::io::sink()),
    };
    let o = walk(seed, mode, hypercalls, None, &mut *log, quiet);
    println!(
        "soak-result seed={seed} steps={} hypercalls={} faults_fired={} fault_commands={} elapsed_ms={}",
        o.steps,
        o.hypercalls,
        o.faults_fired,
        o.fault_commands,
        o.elapsed.as_millis()
    );
    match o.failure {
        None => 0,
        Some(f) => {
            eprintln!("balloon-sim: soak: {f}");
            1
        }
    }
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("balloon-sim: soak: {msg}");
    2
}

/// `balloon-sim soak`: runs the walk of each seed in a child process,
/// prints what it did, and on a failure the seed and a shrunk scenario.
/// Returns the exit status: 0 with no failure, 1 with one, 2 for a bad
/// command line.
pub fn main(args: Vec<String>) -> i32 {
    let mut seed: Option<u64> = None;
    let mut runs = 1u64;
    let mut hypercalls = 100_000u64;
    let mut mode: Option<&str> = None;
    let mut shrink_time = Duration::from_secs(120);
    let mut out_dir = PathBuf::from(".");
    let mut quiet = false;
    let mut it = args.into_iter();
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.as_deref()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("{what} needs a number"))
    };
    while let Some(a) = it.next() {
        let r = match a.as_str() {
            "--seed" => num(it.next(), "--seed").map(|v| seed = Some(v)),
            "--runs" => num(it.next(), "--runs").map(|v| runs = v.max(1)),
            "--hypercalls" => num(it.next(), "--hypercalls").map(|v| hypercalls = v),
            "--shrink-time" => {
                num(it.next(), "--shrink-time").map(|v| shrink_time = Duration::from_secs(v))
            }
            "--out" => match it.next() {
                Some(d) => {
                    out_dir = PathBuf::from(d);
                    Ok(())
                }
                None => Err("--out needs a directory".into()),
            },
            "--pv" | "--pvh" => match mode {
                Some(m) if m != a => Err(format!("{m} and {a} conflict: choose one")),
                _ => {
                    mode = Some(if a == "--pv" { "--pv" } else { "--pvh" });
                    Ok(())
                }
            },
            "--quiet" => {
                quiet = true;
                Ok(())
            }
            s => Err(format!(
                "unknown option {s} (balloon-sim --help lists them)"
            )),
        };
        if let Err(e) = r {
            return usage_error(&e);
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return usage_error(&format!("cannot find my own program: {e}")),
    };
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        return usage_error(&format!("{}: {e}", out_dir.display()));
    }
    let per_run = hypercalls.div_ceil(runs);
    let start = Instant::now();
    let mut total = Outcome::default();
    let mut failures = 0u64;
    for i in 0..runs {
        let s = seed + i;
        let log_path = out_dir.join(format!("soak-{s}.log"));
        let mut cmd = Command::new(&exe);
        cmd.arg(CHILD_COMMAND)
            .args([
                "--seed",
                &s.to_string(),
                "--hypercalls",
                &per_run.to_string(),
            ])
            .arg("--log")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(m) = mode {
            cmd.arg(m);
        }
        if quiet {
            cmd.arg("--quiet");
        }
        let shape = Shape::for_seed(
            s,
            mode.map(|m| if m == "--pv" { Mode::Pv } else { Mode::Pvh }),
        );
        if !quiet {
            eprintln!(
                "soak: seed {s}: {}",
                shape.header().trim_start_matches("#: ")
            );
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return usage_error(&format!("cannot start the walk: {e}")),
        };
        // Progress lines pass through; the last lines are kept for the report.
        let err = child.stderr.take();
        let tail = std::thread::spawn(move || {
            let mut tail: Vec<String> = Vec::new();
            if let Some(e) = err {
                for line in BufReader::new(e).lines().map_while(Result::ok) {
                    if line.starts_with("soak: ") && !quiet {
                        eprintln!("{line}");
                    }
                    tail.push(line);
                    if tail.len() > 40 {
                        tail.remove(0);
                    }
                }
            }
            tail
        });
        let mut stdout = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut stdout);
        }
        let status = child.wait();
        let tail = tail.join().unwrap_or_default();
        let field = |k: &str| -> u64 {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        total.steps += field("steps");
        total.hypercalls += field("hypercalls");
        total.faults_fired += field("faults_fired");
        total.fault_commands += field("fault_commands");
        if status.as_ref().is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_file(&log_path);
            continue;
        }
        failures += 1;
        println!("soak: seed {s} FAILED (balloon-sim soak --seed {s} reproduces the walk):");
        for l in tail.iter().filter(|l| !l.starts_with("soak: seed")) {
            println!("  {l}");
        }
        let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
        println!(
            "soak: the whole walk is in {} ({} commands); shrinking it (at most {} s)",
            log_path.display(),
            log_text.lines().filter(|l| !l.starts_with('#')).count(),
            shrink_time.as_secs()
        );
        let (text, same) = shrink(&exe, &log_text, &out_dir, shrink_time);
        let sim = out_dir.join(format!("soak-{s}.sim"));
        let _ = std::fs::write(&sim, &text);
        if same {
            println!(
                "soak: a short scenario that fails the same way, {}:",
                sim.display()
            );
        } else {
            println!(
                "soak: replaying the walk did not fail again (timing); its scenario is {}:",
                sim.display()
            );
        }
        for l in text.lines().take(60) {
            println!("  {l}");
        }
        println!("soak: run it with: balloon-sim run {}", sim.display());
        break;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "soak: {runs} run(s) from seed {seed}: {} steps, {:.0} steps/s, {} hypercalls, \
         {} faults injected ({} fault commands), {failures} failures, {secs:.1} s",
        total.steps,
        total.steps as f64 / secs.max(1e-3),
        total.hypercalls,
        total.faults_fired,
        total.fault_commands
    );
    i32::from(failures > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pick_the_same_walk_every_time() {
        let a = Shape::for_seed(7, None);
        let b = Shape::for_seed(7, None);
        assert_eq!(a.header(), b.header());
        let mut w1 = Walk {
            rng: Rng(7),
            shape: a,
            fault_commands: 0,
        };
        let mut w2 = Walk {
            rng: Rng(7),
            shape: b,
            fault_commands: 0,
        };
        for _ in 0..200 {
            assert_eq!(w1.actions(), w2.actions());
        }
    }

    /// A callback reads memory/target when xenwatch runs it, so a walk
    /// replays the same way only if no command of the next action can run
    /// before this action's watch events are delivered. Failed before
    /// the walk waited: the soak's self-test replayed its walk without
    /// the failure (see kernel.rs `Changed`).
    #[test]
    fn every_action_waits_for_its_watch_events() {
        for seed in 1..40 {
            let mut w = Walk {
                rng: Rng(seed),
                shape: Shape::for_seed(seed, None),
                fault_commands: 0,
            };
            for _ in 0..50 {
                let lines = w.actions();
                let mut pending = false;
                for l in &lines {
                    let cmd = l.trim_start_matches("? ");
                    if cmd == "sim watches-delivered" {
                        pending = false;
                    } else if pending && !cmd.starts_with("sim stalled") && cmd != "sim release" {
                        panic!("seed {seed}: {cmd:?} may run before a watch event is delivered: {lines:?}");
                    } else if cmd.starts_with("xenstore-write")
                        || cmd.starts_with("xl mem-set")
                        || cmd.starts_with("modload")
                    {
                        pending = true;
                    }
                }
                assert!(
                    !pending,
                    "seed {seed}: the step ends undelivered: {lines:?}"
                );
            }
        }
    }

    #[test]
    fn signatures_ignore_numbers() {
        assert_eq!(
            signature("x\nballoon-sim: f: line 9: `sim invariants` failed with status 1: sim invariants: hw.balloon.stats.frames_lost is 11064; other\n"),
            "invariant: hw.balloon.stats.frames_lost is"
        );
        assert_eq!(
            signature("*** SIMULATED KERNEL PANIC: uvm_pagefree: double free of frame 0x123\n"),
            signature("*** SIMULATED KERNEL PANIC: uvm_pagefree: double free of frame 0x456\n")
        );
    }
}
