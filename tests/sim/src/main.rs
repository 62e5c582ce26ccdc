//! balloon-sim: runs balloon.kmod in a simulated NetBSD/Xen domU.
//!
//! ```text
//! balloon-sim [options]                      a short demonstration
//! balloon-sim [options] run FILE|-           a scenario file (or stdin)
//! balloon-sim [options] daemon --socket PATH serve the control socket
//! balloon-sim ctl --socket PATH [--wait S] COMMAND [ARG...]
//!
//! options: --pv (default) | --pvh, --boot SIZE (1g), --max SIZE (4g),
//!          --host-free SIZE (8g), --no-hotplug, --no-modload,
//!          --builtin-balloon (the kernel's own balloon0 is attached),
//!          --kernel stock|assisted (stock: no kernel growth interfaces,
//!          the default; assisted: those of docs/kernel-growth.md)
//! ```
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
use balloon_sim::{balloon_module, daemon, Domain, DomainConfig, Flavour, Mode};

const MIB: u64 = 256; // pages per MiB
const WAIT: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: balloon-sim [--pv|--pvh] [--boot SIZE] [--max SIZE] [--host-free SIZE]
                   [--no-hotplug] [--no-modload] [--builtin-balloon]
                   [--kernel stock|assisted]
                   [run FILE|- | daemon --socket PATH]
       balloon-sim ctl --socket PATH [--wait SECONDS] COMMAND [ARG ...]";

fn usage() -> ! {
    eprintln!("{USAGE}");
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
    modload: bool,
    action: Action,
}

enum Action {
    Demo,
    Run(String),
    Daemon(PathBuf),
}

fn size_mib(arg: Option<String>) -> u64 {
    match arg.as_deref().and_then(parse_xl_size_kib) {
        Some(kib) if kib >= 1024 => kib / 1024,
        _ => {
            eprintln!(
                "balloon-sim: a size is a number of MiB or has a b/k/m/g/t suffix, at least 1m"
            );
            exit(2)
        }
    }
}

fn parse_opts(mut args: impl Iterator<Item = String>) -> Opts {
    let mut o = Opts {
        cfg: DomainConfig::default(),
        modload: true,
        action: Action::Demo,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pv" => o.cfg = o.cfg.mode(Mode::Pv),
            "--pvh" => o.cfg = o.cfg.mode(Mode::Pvh),
            "--boot" => o.cfg = o.cfg.boot_mib(size_mib(args.next())),
            "--max" => o.cfg = o.cfg.max_mib(size_mib(args.next())),
            "--host-free" => o.cfg = o.cfg.host_free_mib(size_mib(args.next())),
            "--no-hotplug" => o.cfg = o.cfg.hotplug(false),
            "--kernel" => match args.next().as_deref() {
                Some("stock") => o.cfg = o.cfg.flavour(Flavour::Stock),
                Some("assisted") => o.cfg = o.cfg.flavour(Flavour::Assisted),
                _ => usage(),
            },
            "--builtin-balloon" => o.cfg = o.cfg.builtin_balloon(true),
            "--no-modload" => o.modload = false,
            "run" => match (args.next(), args.next()) {
                (Some(f), None) => o.action = Action::Run(f),
                _ => usage(),
            },
            "daemon" => match (args.next().as_deref(), args.next(), args.next()) {
                (Some("--socket"), Some(p), None) => o.action = Action::Daemon(p.into()),
                _ => usage(),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0)
            }
            _ => usage(),
        }
    }
    o
}

/// `balloon-sim ctl`: one command to a running daemon.
fn ctl(mut args: impl Iterator<Item = String>) -> ! {
    let mut socket = None;
    let mut wait = Duration::from_secs(10);
    let mut cmd = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" if cmd.is_empty() => socket = args.next().map(PathBuf::from),
            "--wait" if cmd.is_empty() => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) => wait = Duration::from_secs(s),
                None => usage(),
            },
            _ => cmd.push(a),
        }
    }
    let (Some(socket), false) = (socket, cmd.is_empty()) else {
        usage()
    };
    match daemon::request(&socket, &cmd, wait) {
        Ok(r) => {
            print!("{}", r.out);
            eprint!("{}", r.err);
            exit(r.status)
        }
        Err(e) => {
            eprintln!("balloon-sim ctl: {}: {e}", socket.display());
            exit(3)
        }
    }
}

fn boot(o: &Opts) -> Domain {
    let d = Domain::boot(o.cfg.clone());
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
    if args.peek().map(String::as_str) == Some("ctl") {
        args.next();
        ctl(args);
    }
    let args: Vec<String> = args.collect();
    let o = parse_opts(args.clone().into_iter());
    match &o.action {
        Action::Demo => demo(&o),
        Action::Run(file) => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(file)
            };
            let text = text.unwrap_or_else(|e| {
                eprintln!("balloon-sim: {file}: {e}");
                exit(2)
            });
            // `#: OPTIONS` lines at the top of a scenario choose its
            // domain; options on the command line come after and win.
            let from_file: Vec<String> = text
                .lines()
                .map_while(|l| l.strip_prefix("#:"))
                .flat_map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
                .collect();
            let o = parse_opts(from_file.into_iter().chain(args));
            let mut console = Console::new(boot(&o), std::io::stderr().is_terminal());
            match console.run_script(&text, &mut std::io::stdout()) {
                Ok(n) => println!("# {file}: {n} commands, all as expected"),
                Err(e) => {
                    eprintln!("balloon-sim: {file}: {e}");
                    exit(1)
                }
            }
        }
        Action::Daemon(path) => {
            let mut console = Console::new(boot(&o), false);
            if let Err(e) = daemon::serve(&mut console, path) {
                eprintln!("balloon-sim daemon: {}: {e}", path.display());
                exit(1)
            }
        }
    }
}

fn demo(o: &Opts) {
    let cfg = &o.cfg;
    println!(
        "balloon-sim: a simulated NetBSD {} domU, {} MiB booted, {} MiB maximum",
        if cfg.mode == Mode::Pvh { "PVH" } else { "PV" },
        cfg.boot_pages() / MIB,
        cfg.max_pages() / MIB
    );
    let d = boot(&Opts {
        cfg: cfg.clone(),
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
    let steps: &[(&str, &str)] = match cfg.mode {
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
    let mut console = Console::new(d, progress);
    let mut rows = Vec::new();
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
    println!(
        "  modunload balloon: {unload}; reservation {} MiB, kmem outstanding {bytes} bytes \
         in {count} allocations, pages handed to Xen unzeroed {}",
        d.reservation() / MIB,
        d.dirty_frames_given()
    );
}
