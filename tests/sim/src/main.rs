//! balloon-sim: runs balloon.kmod in a simulated NetBSD/Xen domU.
//!
//! ```text
//! balloon-sim [options]                      a short demonstration
//! balloon-sim [options] run FILE|-           a scenario file (or stdin)
//! balloon-sim [options] daemon --socket PATH serve the control socket
//! balloon-sim ctl --socket PATH [--wait S] COMMAND [ARG...]
//!
//! options: --pv (default) | --pvh, --boot SIZE (1g), --max SIZE (4g),
//!          --host-free SIZE (8g), --no-hotplug, --no-modload
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

use balloon_sim::control::{parse_xl_size_kib, Console};
use balloon_sim::{balloon_module, daemon, Domain, DomainConfig, Mode, SysctlValue};

const MIB: u64 = 256; // pages per MiB
const WAIT: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: balloon-sim [--pv|--pvh] [--boot SIZE] [--max SIZE] [--host-free SIZE]
                   [--no-hotplug] [--no-modload] [run FILE|- | daemon --socket PATH]
       balloon-sim ctl --socket PATH [--wait SECONDS] COMMAND [ARG ...]";

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}

fn sysctl(d: &Domain, name: &str) -> String {
    match d.sysctl_read(name) {
        Ok(SysctlValue::Quad(v)) => v.to_string(),
        Ok(SysctlValue::Int(v)) => v.to_string(),
        Ok(SysctlValue::Bool(v)) => u8::from(v).to_string(),
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
        "balloon-sim: a simulated NetBSD {:?} domU, {} MiB booted, {} MiB maximum",
        cfg.mode,
        cfg.boot_pages() / MIB,
        cfg.max_pages() / MIB
    );
    let d = boot(&Opts {
        cfg: cfg.clone(),
        modload: true,
        action: Action::Demo,
    });
    println!("modload balloon: ok");
    for name in d.sysctl_list("hw.balloon.") {
        if d.sysctl_read(&name).is_err() {
            continue; // a node (hw.balloon.stats)
        }
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
