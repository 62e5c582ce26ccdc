//! balloon-sim: runs balloon.kmod in a simulated NetBSD/Xen domU.
//!
//! ```text
//! balloon-sim [options]                      a short demonstration
//! balloon-sim [options] run FILE|-           a scenario file (or stdin)
//! balloon-sim [options] daemon --socket PATH serve the control socket
//! balloon-sim ctl --socket PATH [--wait S] COMMAND [ARG...]
//!
//! balloon-sim soak [--seed S] [--runs R] [--hypercalls N] [--pv|--pvh] ...
//!
//! options: --pv (default) | --pvh | --not-xen (a kernel that is no Xen
//!          guest), --boot SIZE (1g), --max SIZE (4g), --host-free SIZE
//!          (8g), --no-hotplug, --no-modload, --builtin-balloon (the
//!          kernel's own balloon0 is attached), --kernel stock|assisted
//!          (stock: no kernel growth interfaces, the default; assisted:
//!          those of docs/kernel-growth.md), --time-scale N (simulated
//!          time runs N times real time; 1000), --real-zero
//!          (pmap_zero_page writes 4 KiB of host memory per frame, as the
//!          kernel's does, instead of only clearing its content bit),
//!          --real-zero-window SIZE (the host memory those writes go to,
//!          frame f in slot f modulo the window; 1g)
//! ```
//!
//! A bad command line gets one line on standard error and status 2;
//! sizes the simulator cannot represent are refused before anything
//! boots, with the limit named.
//!
//! A scenario file holds one command per line (`#` comments; a leading
//! `!` for a command that must fail); `#: OPTIONS` lines at its top choose
//! the domain. Sizes use xl's syntax (a number with b, k, m, g or t; MiB without).
//! The demonstration boots a simulated domU, loads the real module (the C
//! shim and the Rust core, as built for the host), steers it the way dom0
//! would with `xl mem-set`, and prints what the module did. Commands are
//! those of [`balloon_sim::control`]. Nothing here ran on NetBSD or under
//! Xen: it is the simulated domU.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::exit;
use std::time::{Duration, Instant};

use balloon_sim::control::{parse_xl_size_kib, show, Console};
use balloon_sim::{balloon_module, daemon, soak, Domain, DomainConfig, Flavour, Mode};

const MIB: u64 = 256; // pages per MiB
const WAIT: Duration = Duration::from_secs(30);

const USAGE: &str =
    "usage: balloon-sim [--pv|--pvh|--not-xen] [--boot SIZE] [--max SIZE] [--host-free SIZE]
                   [--memory SIZE] [--touch-before-load SIZE]
                   [--no-hotplug] [--no-modload] [--builtin-balloon]
                   [--kernel stock|assisted] [--time-scale N] [--real-zero]
                   [--real-zero-window SIZE]
                   [run FILE|- | daemon --socket PATH]
       balloon-sim ctl --socket PATH [--wait SECONDS] COMMAND [ARG ...]
       balloon-sim soak [--seed S] [--runs R] [--hypercalls N] [--pv|--pvh]
                   [--shrink-time SECONDS] [--out DIR] [--quiet]";

/// A bad command line: one line on standard error, status 2.
fn bad(msg: impl std::fmt::Display) -> ! {
    eprintln!("balloon-sim: {msg}");
    exit(2)
}

fn sysctl(d: &Domain, name: &str) -> String {
    match d.sysctl_read(name) {
        Ok(v) => show(&v),
        Err(e) => format!("error {e}"),
    }
}

/// What the command line asked for.
struct Opts {
    cfg: DomainConfig,
    /// Pages the kernel uses and frees before the module loads.
    touch: u64,
    modload: bool,
    action: Action,
}

enum Action {
    Demo,
    Run(String),
    Daemon(PathBuf),
}

/// Options from one source (a scenario's `#:` lines, or the command
/// line); the command line's win over the file's, option by option.
#[derive(Default)]
struct OptSet {
    mode: Option<(Mode, &'static str)>,
    boot: Option<u64>,
    max: Option<u64>,
    host_free: Option<u64>,
    hotplug: Option<bool>,
    builtin: Option<bool>,
    modload: Option<bool>,
    time_scale: Option<u32>,
    flavour: Option<Flavour>,
    memory: Option<u64>,
    touch: Option<u64>,
    real_zero: Option<bool>,
    real_zero_window: Option<u64>,
}

/// A size option's value in bytes: xl's syntax (b, k, m, g, t; none is
/// MiB), a whole number of MiB, at least 1 MiB.
fn size_arg(opt: &str, v: Option<String>) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{opt} needs a size (for example 512m or 2g)"))?;
    match parse_xl_size_kib(&v) {
        Some(kib) if kib >= 1024 && kib % 1024 == 0 => kib
            .checked_mul(1024)
            .ok_or_else(|| format!("{opt} {v}: too large")),
        Some(_) => Err(format!(
            "{opt} {v}: not a whole number of MiB (at least 1m)"
        )),
        None => Err(format!(
            "{opt} {v}: not a size (a number of MiB, or one with a b, k, m, g or t suffix)"
        )),
    }
}

/// Parses options, and with `actions` also `run FILE` / `daemon --socket
/// PATH` (the command line; a scenario file's `#:` lines hold options only).
fn parse_optset(args: Vec<String>, actions: bool) -> Result<(OptSet, Option<Action>), String> {
    let mut o = OptSet::default();
    let mut action = None;
    let mut args = args.into_iter();
    let set_mode = |o: &mut OptSet, m: Mode, name: &'static str| match o.mode {
        Some((_, prev)) if prev != name => Err(format!("{prev} and {name} conflict: choose one")),
        _ => {
            o.mode = Some((m, name));
            Ok(())
        }
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pv" => set_mode(&mut o, Mode::Pv, "--pv")?,
            "--pvh" => set_mode(&mut o, Mode::Pvh, "--pvh")?,
            "--not-xen" => set_mode(&mut o, Mode::NotXen, "--not-xen")?,
            "--boot" => o.boot = Some(size_arg("--boot", args.next())?),
            "--max" => o.max = Some(size_arg("--max", args.next())?),
            "--host-free" => o.host_free = Some(size_arg("--host-free", args.next())?),
            "--memory" => o.memory = Some(size_arg("--memory", args.next())?),
            "--touch-before-load" => o.touch = Some(size_arg("--touch-before-load", args.next())?),
            "--no-hotplug" => o.hotplug = Some(false),
            "--builtin-balloon" => o.builtin = Some(true),
            "--real-zero" => o.real_zero = Some(true),
            "--real-zero-window" => {
                o.real_zero_window = Some(size_arg("--real-zero-window", args.next())?)
            }
            "--no-modload" => o.modload = Some(false),
            "--kernel" => match args.next().as_deref() {
                Some("stock") => o.flavour = Some(Flavour::Stock),
                Some("assisted") => o.flavour = Some(Flavour::Assisted),
                Some(v) => return Err(format!("--kernel {v}: stock or assisted")),
                None => return Err("--kernel needs stock or assisted".into()),
            },
            "--time-scale" => {
                let v = args.next().ok_or("--time-scale needs a number")?;
                match v.parse::<u32>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => o.time_scale = Some(n),
                    _ => return Err(format!("--time-scale {v}: not a number from 1 to 1000000")),
                }
            }
            "run" if actions => match (args.next(), args.next()) {
                (Some(f), None) => action = Some(Action::Run(f)),
                (None, _) => {
                    return Err("run needs a scenario FILE (or - for standard input)".into())
                }
                (Some(_), Some(x)) => {
                    return Err(format!("run takes one FILE; {x:?} is one too many"))
                }
            },
            "daemon" if actions => match (args.next().as_deref(), args.next(), args.next()) {
                (Some("--socket"), Some(p), None) => action = Some(Action::Daemon(p.into())),
                (Some("--socket"), Some(_), Some(x)) => {
                    return Err(format!(
                        "daemon takes --socket PATH only; {x:?} is one too many"
                    ))
                }
                _ => return Err("daemon needs --socket PATH".into()),
            },
            "-h" | "--help" if actions => {
                println!("{USAGE}");
                exit(0)
            }
            s if s.starts_with('-') => {
                return Err(format!(
                    "unknown option {s} (balloon-sim --help lists them)"
                ))
            }
            s => return Err(format!("unexpected argument {s:?} (balloon-sim --help)")),
        }
    }
    Ok((o, action))
}

/// The options of `file` first, then those of the command line.
fn merge(file: OptSet, cmd: OptSet) -> Result<(DomainConfig, u64, bool), String> {
    let mut cfg = DomainConfig::default();
    if let Some((m, _)) = cmd.mode.or(file.mode) {
        cfg = cfg.mode(m);
    }
    if let Some(b) = cmd.boot.or(file.boot) {
        cfg.boot_bytes = b;
    }
    if let Some(b) = cmd.max.or(file.max) {
        cfg.max_bytes = b;
    }
    if let Some(b) = cmd.host_free.or(file.host_free) {
        cfg.host_free_bytes = b;
    }
    if let Some(h) = cmd.hotplug.or(file.hotplug) {
        cfg = cfg.hotplug(h);
    }
    if let Some(b) = cmd.builtin.or(file.builtin) {
        cfg = cfg.builtin_balloon(b);
    }
    if let Some(t) = cmd.time_scale.or(file.time_scale) {
        cfg = cfg.time_scale(t);
    }
    if let Some(f) = cmd.flavour.or(file.flavour) {
        cfg = cfg.flavour(f);
    }
    if let Some(m) = cmd.memory.or(file.memory) {
        // xl: memory < maxmem on a PVH guest is populate-on-demand; the
        // memory map (boot memory) is maxmem (--max).
        cfg.boot_bytes = cfg.max_bytes;
        cfg.pod_memory_bytes = Some(m);
    }
    if let Some(z) = cmd.real_zero.or(file.real_zero) {
        cfg = cfg.real_zero(z);
    }
    if let Some(w) = cmd.real_zero_window.or(file.real_zero_window) {
        cfg = cfg.real_zero_window(w / 4096);
    }
    cfg.validate()?;
    let touch = cmd.touch.or(file.touch).unwrap_or(0) / 4096;
    Ok((cfg, touch, cmd.modload.or(file.modload).unwrap_or(true)))
}

fn parse_opts(file: Vec<String>, cmd: Vec<String>) -> Result<Opts, String> {
    let (fo, _) =
        parse_optset(file, false).map_err(|e| format!("in the scenario's #: options: {e}"))?;
    let (mut co, action) = parse_optset(cmd, true)?;
    // The PVH demonstration: xl's memory=512m maxmem=2g, which runs on
    // populate-on-demand, unless sizes were given.
    let pvh = matches!(co.mode.or(fo.mode), Some((Mode::Pvh, _)));
    if action.is_none() && pvh && co.boot.is_none() && co.max.is_none() && co.memory.is_none() {
        co.memory = Some(512 << 20);
        co.max = Some(2048 << 20);
    }
    let (cfg, touch, modload) = merge(fo, co)?;
    Ok(Opts {
        cfg,
        touch,
        modload,
        action: action.unwrap_or(Action::Demo),
    })
}

/// `balloon-sim ctl`: one command to a running daemon.
fn ctl(mut args: impl Iterator<Item = String>) -> ! {
    let mut socket = None;
    let mut wait = Duration::from_secs(10);
    let mut cmd = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" if cmd.is_empty() => match args.next() {
                Some(p) => socket = Some(PathBuf::from(p)),
                None => bad("ctl: --socket needs a path"),
            },
            "--wait" if cmd.is_empty() => match args.next().map(|s| s.parse::<u64>()) {
                Some(Ok(s)) => wait = Duration::from_secs(s),
                Some(Err(_)) => bad("ctl: --wait needs a number of seconds"),
                None => bad("ctl: --wait needs a number of seconds"),
            },
            _ => cmd.push(a),
        }
    }
    let Some(socket) = socket else {
        bad("ctl needs --socket PATH")
    };
    if cmd.is_empty() {
        bad("ctl needs a COMMAND to send")
    }
    match daemon::request(&socket, &cmd, wait) {
        Ok(r) => {
            print!("{}", r.out);
            eprint!("{}", r.err);
            exit(r.status)
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => bad(format!("ctl: {e}")),
        Err(e) => {
            eprintln!("balloon-sim ctl: {}: {e}", socket.display());
            exit(3)
        }
    }
}

fn boot(o: &Opts) -> Domain {
    let d = Domain::boot(o.cfg.clone());
    if o.touch > 0 {
        let got = d.kernel_touch(o.touch);
        eprintln!(
            "balloon-sim: the kernel used and freed {} MiB before the module loaded",
            got / MIB
        );
    }
    if o.modload {
        if let Err(e) = d.modload(balloon_module()) {
            eprintln!("modload balloon: error {e}");
            for line in d.dmesg() {
                eprintln!("  {line}");
            }
            exit(1);
        }
        // The module has read memory/target once its watch fired.
        d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT);
    }
    d
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("ctl") => {
            args.next();
            ctl(args);
        }
        Some("soak") => {
            args.next();
            exit(soak::main(args.collect()));
        }
        Some(soak::CHILD_COMMAND) => {
            args.next();
            exit(soak::child_main(args.collect()));
        }
        _ => {}
    }
    let args: Vec<String> = args.collect();
    let o = parse_opts(Vec::new(), args.clone()).unwrap_or_else(|e| bad(e));
    match &o.action {
        Action::Demo => demo(&o),
        Action::Run(file) => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(file)
            };
            let text = text.unwrap_or_else(|e| bad(format!("{file}: {e}")));
            // `#: OPTIONS` lines at the top of a scenario choose its
            // domain; options on the command line come after and win.
            let from_file: Vec<String> = text
                .lines()
                .map_while(|l| l.strip_prefix("#:"))
                .flat_map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
                .collect();
            let o = parse_opts(from_file, args).unwrap_or_else(|e| bad(format!("{file}: {e}")));
            let console = Console::new(boot(&o), std::io::stderr().is_terminal());
            match console.run_script(&text, &mut std::io::stdout()) {
                Ok(n) => println!("# {file}: {n} commands, all as expected"),
                Err(e) => {
                    eprintln!("balloon-sim: {file}: {e}");
                    exit(1)
                }
            }
        }
        Action::Daemon(path) => {
            let console = Console::new(boot(&o), false);
            if let Err(e) = daemon::serve(&console, path) {
                eprintln!("balloon-sim daemon: {}: {e}", path.display());
                exit(1)
            }
        }
    }
}

fn demo(o: &Opts) {
    let cfg = &o.cfg;
    if cfg.mode == Mode::NotXen {
        bad("the demonstration needs a Xen guest (--pv or --pvh)");
    }
    match cfg.pod_memory_pages() {
        Some(m) => println!(
            "balloon-sim: a simulated NetBSD PVH domU, memory={}m maxmem={}m: \
             populate-on-demand, a memory map of {} MiB on a PoD cache of {} MiB",
            m / MIB,
            cfg.max_pages() / MIB,
            cfg.boot_pages() / MIB,
            m / MIB
        ),
        None => println!(
            "balloon-sim: a simulated NetBSD {} domU, {} MiB booted, {} MiB maximum",
            if cfg.mode == Mode::Pvh { "PVH" } else { "PV" },
            cfg.boot_pages() / MIB,
            cfg.max_pages() / MIB
        ),
    }
    let d = boot(&Opts {
        cfg: cfg.clone(),
        touch: o.touch,
        modload: true,
        action: Action::Demo,
    });
    println!("$ modload balloon");
    println!("$ sysctl -d hw.balloon (with values)");
    for name in d.sysctl_list("hw.balloon.") {
        if d.sysctl_read(&name).is_err() {
            continue; // a node (hw.balloon.stats)
        }
        let desc = d.sysctl_describe(&name).unwrap_or_default();
        let line = format!("{name} = {}", sysctl(&d, &name));
        println!("  {line:<46} {desc}");
    }
    let pod = cfg.pod_memory_pages().is_some();
    let steps: &[(&str, &str)] = match cfg.mode {
        Mode::Pvh if pod => &[
            ("1536m", "up within the memory map: deflation"),
            ("512m", "back to memory"),
        ],
        Mode::Pvh => &[
            ("512m", "down by half"),
            ("1g", "back to boot size"),
            (
                "2560m",
                if cfg.flavour == Flavour::Stock {
                    "above boot memory: clipped on a stock kernel"
                } else {
                    "above boot memory: hot-plugged segments"
                },
            ),
            (
                "768m",
                if cfg.flavour == Flavour::Stock {
                    "below boot memory"
                } else {
                    "below boot memory: segments unplugged"
                },
            ),
            ("16m", "below the safe floor: clamped"),
            ("8g", "above the maximum: xl refuses"),
            ("1g", "boot size"),
        ],
        _ => &[
            ("512m", "down by half"),
            ("1g", "back to boot size"),
            ("2560m", "above boot memory: PV cannot grow"),
            ("768m", "below boot memory"),
            ("16m", "below the safe floor: clamped"),
            ("8g", "above the maximum: xl refuses"),
            ("1g", "boot size"),
        ],
    };
    let progress = std::io::stderr().is_terminal();
    let console = Console::new(d, progress);
    let mut rows = Vec::new();
    if pod {
        let start = Instant::now();
        console.run_line("sim settle");
        let d = console.domain();
        rows.push(format!(
            "{:<6} {:<42} {:>9} {:>9} {:>9} {:>9} {:>6}ms  {}",
            "load",
            "modload: the PoD difference ballooned down",
            sysctl(d, "hw.balloon.target"),
            sysctl(d, "hw.balloon.current"),
            sysctl(d, "hw.balloon.ballooned"),
            sysctl(d, "hw.balloon.plugged"),
            start.elapsed().as_millis(),
            sysctl(d, "hw.balloon.state")
        ));
    }
    for (size, what) in steps {
        let start = Instant::now();
        let r = console.run_line(&format!("xl mem-set domU {size}"));
        let xl = if r.status == 0 {
            "ok".to_string()
        } else {
            format!("refused: {}", r.err.lines().last().unwrap_or_default())
        };
        console.run_line("sim settle");
        let d = console.domain();
        rows.push(format!(
            "{:<6} {:<42} {:>9} {:>9} {:>9} {:>9} {:>6}ms  {}",
            size,
            what,
            sysctl(d, "hw.balloon.target"),
            sysctl(d, "hw.balloon.current"),
            sysctl(d, "hw.balloon.ballooned"),
            sysctl(d, "hw.balloon.plugged"),
            start.elapsed().as_millis(),
            if r.status == 0 {
                sysctl(d, "hw.balloon.state")
            } else {
                xl
            }
        ));
    }
    let d = console.domain();
    if let Err(e) = d.check() {
        println!("consistency check FAILED: {e}");
        exit(1);
    }
    let stat = |n: &str| sysctl(d, &format!("hw.balloon.stats.{n}"));
    let counters: Vec<(&str, String)> = [
        "pages_inflated",
        "pages_deflated",
        "pages_scrubbed",
        "hypercalls",
        "segments_plugged",
        "segments_unplugged",
        "targets_accepted",
        "targets_clamped",
        "targets_given_up",
        "last_error",
    ]
    .iter()
    .map(|n| (*n, stat(n)))
    .collect();
    println!();
    println!("$ dmesg | grep balloon0");
    for line in d.dmesg().iter().filter(|l| l.starts_with("balloon0")) {
        println!("  {line}");
    }
    let unload = match d.modunload() {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error {e}"),
    };
    let (bytes, count) = d.kmem_outstanding();
    println!();
    println!("summary (KiB unless named; times are real time, the simulated clock runs 1000x)");
    println!(
        "{:<6} {:<42} {:>9} {:>9} {:>9} {:>9} {:>8}  state",
        "xl", "mem-set", "target", "current", "ballooned", "plugged", "time"
    );
    for row in rows {
        println!("{row}");
    }
    println!();
    for (name, v) in counters {
        println!("  hw.balloon.stats.{name:<20} {v}");
    }
    if let Some(p) = d.pod_stats() {
        println!(
            "  populate-on-demand: {} entries, cache {} pages; {} populated on access \
             ({} by zeroing), {} PoD entries and {} populated pages given back, {} swept",
            p.entries,
            p.cache,
            p.demand_populated,
            p.populated_by_zeroing,
            p.entries_given,
            p.stolen,
            p.swept
        );
    }
    println!(
        "  modunload balloon: {unload}; reservation {} MiB, kmem outstanding {bytes} bytes \
         in {count} allocations, pages handed to Xen unzeroed {}",
        d.reservation() / MIB,
        d.dirty_frames_given()
    );
}
