// SPDX-License-Identifier: BSD-2-Clause
//! The user surface through balloon-sim's control interface, in the
//! simulated domU: every knob read and written, every refusal with its
//! errno and message, state and statistics against what happened, the
//! bad-input table, and the daemon and scenario front ends as processes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use balloon_sim::control::{Console, Reply};
use balloon_sim::{balloon_module, Domain, DomainConfig};

const WAIT: Duration = Duration::from_secs(30);
const MAX_KIB: u64 = 1024 * 1024;

fn console() -> Console {
    let d = Domain::boot(
        DomainConfig::pvh()
            .assisted()
            .boot_mib(256)
            .max_mib(1024)
            .host_free_mib(2048),
    );
    // libxl gives Xen a maximum of memory + 1 MiB; dom0 lets the domain
    // grow to its static-max, as `xl mem-max` does.
    d.xl_mem_max(MAX_KIB).expect("xl mem-max");
    d.modload(balloon_module()).expect("modload");
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
    Console::new(d, false)
}

fn run(c: &mut Console, line: &str) -> Reply {
    c.run_line(line)
}

fn ok(c: &mut Console, line: &str) -> String {
    let r = run(c, line);
    assert_eq!(r.status, 0, "`{line}`: {r:?}");
    r.out
}

fn value(c: &mut Console, name: &str) -> String {
    ok(c, &format!("sysctl -n {name}")).trim_end().to_string()
}

fn num(c: &mut Console, name: &str) -> u64 {
    let v = value(c, name);
    v.parse().unwrap_or_else(|_| panic!("{name} = {v:?}"))
}

fn settle(c: &mut Console) -> String {
    ok(c, "sim settle");
    value(c, "hw.balloon.state")
}

/// Writes memory/target and waits until the module has taken it in
/// (accepted or refused).
fn xenstore_target(c: &mut Console, text: &str) {
    let seen =
        num(c, "hw.balloon.stats.targets_accepted") + num(c, "hw.balloon.stats.targets_refused");
    c.domain().xenstore_write("memory/target", text);
    let mut now = seen;
    for _ in 0..3000 {
        now = num(c, "hw.balloon.stats.targets_accepted")
            + num(c, "hw.balloon.stats.targets_refused");
        if now > seen {
            break;
        }
        c.domain().wait_until(|_| false, Duration::from_millis(1));
    }
    assert!(
        now > seen,
        "memory/target {text:?} never reached the module"
    );
}

#[test]
fn every_knob_reads_writes_and_refuses_as_documented() {
    let mut c = console();
    // Every node has a description.
    let all = ok(&mut c, "sysctl hw.balloon");
    let names: Vec<&str> = all
        .lines()
        .map(|l| l.split(" = ").next().unwrap())
        .collect();
    assert_eq!(names.len(), 14 + 16, "{all}");
    for n in &names {
        let d = ok(&mut c, &format!("sysctl -d {n}"));
        assert!(
            d.starts_with(&format!("{n}: ")) && d.len() > n.len() + 10,
            "{d}"
        );
    }
    // Writable knobs: a write takes, reads back, and is undone.
    for (knob, new) in [
        ("batch", "64"),
        ("batch", "1"),
        ("batch", "8192"),
        ("retry_delay_max", "5000"),
        ("retry_max", "0"),
        ("scrub", "0"),
        ("hotplug", "0"),
        ("unplug", "0"),
        ("min", "300000"),
    ] {
        let name = format!("hw.balloon.{knob}");
        let old = value(&mut c, &name);
        assert_eq!(
            ok(&mut c, &format!("sysctl -w {name}={new}")),
            format!("{name}: {old} -> {new}\n")
        );
        assert_eq!(value(&mut c, &name), new);
        ok(&mut c, &format!("sysctl -w {name}={old}"));
        assert_eq!(value(&mut c, &name), old);
    }
    // Refusals: status 1, NetBSD's message, and nothing changes.
    let floor = num(&mut c, "hw.balloon.min");
    for (write, message) in [
        ("batch=0", "Operation not permitted"),
        ("batch=65537", "Operation not permitted"),
        (
            &format!("min={}", floor - 4) as &str,
            "Operation not permitted",
        ),
        ("min=0", "Operation not permitted"),
        ("current=1", "Operation not permitted"),
        ("max=1", "Operation not permitted"),
        ("ballooned=1", "Operation not permitted"),
        ("plugged=1", "Operation not permitted"),
        ("state=idle", "Operation not permitted"),
        ("stats.pages_inflated=0", "Operation not permitted"),
        ("batch=-1", "Invalid argument"),
        ("batch=ten", "not a number"),
    ] {
        let before = ok(&mut c, "sysctl hw.balloon");
        let (knob, value) = write.split_once('=').unwrap();
        let r = run(&mut c, &format!("sysctl -w hw.balloon.{write}"));
        assert_eq!(r.status, 1, "{write}: {r:?}");
        // sysctl(8) names the value in its own parse errors, the node in
        // the kernel's.
        let what = if message == "not a number" {
            value.to_string()
        } else {
            format!("hw.balloon.{knob}")
        };
        assert_eq!(r.err, format!("sysctl: {what}: {message}\n"), "{write}");
        assert_eq!(
            ok(&mut c, "sysctl hw.balloon"),
            before,
            "{write} changed something"
        );
    }
    // Unknown names and bad usage.
    let r = run(&mut c, "sysctl hw.balloon.nosuch");
    assert_eq!(
        (r.status, r.err.as_str()),
        (
            1,
            "sysctl: third level name 'nosuch' in 'hw.balloon.nosuch' is invalid\n"
        )
    );
    assert_eq!(run(&mut c, "sysctl -q hw.balloon").status, 2);
    assert_eq!(run(&mut c, "frobnicate").status, 127);
}

#[test]
fn state_and_statistics_agree_with_what_happened() {
    let mut c = console();
    ok(&mut c, "sysctl -w hw.balloon.target=131072");
    assert_eq!(settle(&mut c), "idle");
    ok(&mut c, "xl mem-set domU 512m");
    assert_eq!(settle(&mut c), "idle");
    // 128 MiB down, then 384 MiB up: 128 back from Xen, 256 plugged.
    assert_eq!(num(&mut c, "hw.balloon.current"), 512 * 1024);
    assert_eq!(num(&mut c, "hw.balloon.stats.pages_inflated"), 128 * 256);
    assert_eq!(num(&mut c, "hw.balloon.stats.pages_scrubbed"), 128 * 256);
    assert_eq!(num(&mut c, "hw.balloon.stats.pages_deflated"), 128 * 256);
    assert_eq!(num(&mut c, "hw.balloon.plugged"), 256 * 1024);
    assert!(num(&mut c, "hw.balloon.stats.segments_plugged") >= 1);
    // An inflate or deflate hypercall moves at most `batch` 2 MiB extents
    // (at most 128): 128 MiB goes in one hypercall each way.
    assert!(num(&mut c, "hw.balloon.stats.hypercalls") >= 2);
    // Loading read memory/target once; then two targets.
    assert_eq!(num(&mut c, "hw.balloon.stats.targets_accepted"), 3);
    assert_eq!(value(&mut c, "hw.balloon.stats.last_error"), "none");
    assert_eq!(num(&mut c, "hw.balloon.stats.short_results"), 0);

    // The host runs dry: short deflates, retries, then giving up.
    ok(&mut c, "sysctl -w hw.balloon.target=131072");
    assert_eq!(settle(&mut c), "idle");
    ok(&mut c, "sysctl -w hw.balloon.retry_max=2");
    ok(&mut c, "sim host-free 0");
    ok(&mut c, "xl mem-set domU 200m");
    assert_eq!(
        settle(&mut c),
        "cancelled: retries exhausted (host has no free memory)"
    );
    assert_eq!(num(&mut c, "hw.balloon.stats.short_results"), 3);
    assert_eq!(num(&mut c, "hw.balloon.stats.retries"), 2);
    assert_eq!(num(&mut c, "hw.balloon.stats.targets_given_up"), 1);
    assert_eq!(num(&mut c, "hw.balloon.stats.last_errno"), 12);
    assert_eq!(
        value(&mut c, "hw.balloon.stats.last_error"),
        "ENOMEM (12) in deflate"
    );
    assert_eq!(num(&mut c, "hw.balloon.current"), 128 * 1024);
    let dmesg = ok(&mut c, "dmesg");
    assert!(
        dmesg.contains("balloon0: giving up on target 204800 KiB at 131072 KiB: retries exhausted"),
        "{dmesg}"
    );
    ok(&mut c, "sim check");
    // With memory back on the host and Xen's maximum back above boot
    // memory (xl mem-set raised it), unload returns every page.
    ok(&mut c, "sim host-free 8g");
    ok(&mut c, "xl mem-set domU 256m");
    settle(&mut c);
    ok(&mut c, "modunload balloon");
    let stat = ok(&mut c, "sim stat");
    assert!(stat.contains("memory_kib 262144\n"), "{stat}");
    ok(&mut c, "sim check");
}

/// One row of the bad-input table: what a value gets from each door.
struct Row {
    text: &'static str,
    /// memory/target: None = refused and ignored; Some(kib) = taken as
    /// this target (clamped when it differs from the text).
    xenstore: Option<u64>,
    /// `sysctl -w hw.balloon.target=`: Ok(kib) or the error text.
    sysctl: Result<u64, &'static str>,
}

#[test]
fn bad_input_table() {
    let mut c = console();
    let floor = num(&mut c, "hw.balloon.min");
    let rows = [
        Row {
            text: "",
            xenstore: None,
            sysctl: Err("not a number"),
        },
        Row {
            text: "lots",
            xenstore: None,
            sysctl: Err("not a number"),
        },
        Row {
            text: "-1",
            xenstore: None,
            sysctl: Err("Invalid argument"),
        },
        Row {
            text: "-0",
            xenstore: None,
            sysctl: Err("Operation not permitted"),
        },
        Row {
            text: "18446744073709551616",
            xenstore: None,
            sysctl: Err("Result too large"),
        },
        Row {
            text: "18446744073709551615",
            xenstore: Some(MAX_KIB),
            sysctl: Err("Invalid argument"),
        },
        Row {
            text: "0",
            xenstore: Some(floor),
            sysctl: Err("Operation not permitted"),
        },
        Row {
            text: "4096",
            xenstore: Some(floor),
            sysctl: Err("Operation not permitted"),
        },
        Row {
            text: "8388608",
            xenstore: Some(MAX_KIB),
            sysctl: Err("Operation not permitted"),
        },
        Row {
            text: " 200000",
            xenstore: None,
            sysctl: Ok(200000),
        },
        Row {
            text: "200000 ",
            xenstore: None,
            sysctl: Err("not a number"),
        },
        Row {
            text: "200 000",
            xenstore: None,
            sysctl: Err("not a number"),
        },
        Row {
            text: "512M",
            xenstore: None,
            sysctl: Err("not a number"),
        },
        Row {
            text: "200000K",
            xenstore: None,
            sysctl: Err("not a number"),
        },
        Row {
            text: "0x30d40",
            xenstore: None,
            sysctl: Ok(200000),
        },
        Row {
            text: "200000\n",
            xenstore: Some(200000),
            sysctl: Err("not a number"),
        },
        Row {
            // 64 bytes: too long for the shim's buffer (xenbus_read ERANGE).
            text: "1111111111111111111111111111111111111111111111111111111111111111",
            xenstore: None,
            sysctl: Err("Result too large"),
        },
        Row {
            text: "210000",
            xenstore: Some(210000),
            sysctl: Ok(210000),
        },
    ];
    println!(
        "{:<24} {:<28} sysctl -w hw.balloon.target=",
        "value", "xenstore memory/target"
    );
    for row in &rows {
        // Start each row from a known target.
        ok(&mut c, "sysctl -w hw.balloon.target=220000");
        settle(&mut c);

        let refused = num(&mut c, "hw.balloon.stats.targets_refused");
        let clamped = num(&mut c, "hw.balloon.stats.targets_clamped");
        xenstore_target(&mut c, row.text);
        let target = num(&mut c, "hw.balloon.target");
        let got = match row.xenstore {
            None => {
                assert_eq!(
                    num(&mut c, "hw.balloon.stats.targets_refused"),
                    refused + 1,
                    "{:?}",
                    row.text
                );
                assert_eq!(target, 220000, "{:?} changed the target", row.text);
                "ignored, counted refused".to_string()
            }
            Some(kib) => {
                assert_eq!(target, kib, "{:?}", row.text);
                let was_clamped = row.text.trim_end().parse::<u64>().ok() != Some(kib);
                assert_eq!(
                    num(&mut c, "hw.balloon.stats.targets_clamped"),
                    clamped + u64::from(was_clamped),
                    "{:?}",
                    row.text
                );
                if was_clamped {
                    format!("clamped to {kib}")
                } else {
                    format!("target {kib}")
                }
            }
        };
        settle(&mut c);

        ok(&mut c, "sysctl -w hw.balloon.target=220000");
        let refused = num(&mut c, "hw.balloon.stats.targets_refused");
        let r = c.run(&[
            "sysctl".into(),
            "-w".into(),
            format!("hw.balloon.target={}", row.text),
        ]);
        let target = num(&mut c, "hw.balloon.target");
        let said = match row.sysctl {
            Ok(kib) => {
                assert_eq!((r.status, target), (0, kib), "{:?}: {r:?}", row.text);
                format!("target {kib}")
            }
            Err(msg) => {
                assert_eq!(r.status, 1, "{:?}: {r:?}", row.text);
                let what = match msg {
                    "not a number" | "Result too large" => row.text.to_string(),
                    _ => "hw.balloon.target".to_string(),
                };
                assert_eq!(r.err, format!("sysctl: {what}: {msg}\n"), "{:?}", row.text);
                assert_eq!(target, 220000, "{:?} changed the target", row.text);
                // What reached the driver and was refused is counted;
                // what sysctl(8) itself could not parse never got there.
                let reached = matches!(msg, "Invalid argument" | "Operation not permitted");
                assert_eq!(
                    num(&mut c, "hw.balloon.stats.targets_refused"),
                    refused + u64::from(reached),
                    "{:?}",
                    row.text
                );
                msg.to_string()
            }
        };
        println!("{:<24} {got:<28} {said}", format!("{:?}", row.text));
    }
    // Wrong sizes and types through sysctl(3) itself. Each compares the
    // whole tree before and after, so the worker must be at rest first
    // (the last row's target may still be on its way).
    settle(&mut c);
    for (name, hex, errno) in [
        ("hw.balloon.target", "00000400", "Invalid argument"),
        ("hw.balloon.target", "01", "Invalid argument"),
        (
            "hw.balloon.target",
            "00000000000000000000000000000000",
            "Invalid argument",
        ),
        ("hw.balloon.target", "-", "Invalid argument"),
        ("hw.balloon.scrub", "0100000000000000", "Invalid argument"),
        (
            "hw.balloon.current",
            "0000000000000000",
            "Operation not permitted",
        ),
    ] {
        let before = ok(&mut c, "sysctl hw.balloon");
        let r = run(&mut c, &format!("sim sysctl-raw {name} {hex}"));
        assert_eq!(
            (r.status, r.err),
            (1, format!("sysctl: {name}: {errno}\n")),
            "{name} {hex}"
        );
        assert_eq!(
            ok(&mut c, "sysctl hw.balloon"),
            before,
            "{name} {hex} changed something"
        );
        println!("{name} <- {} bytes: {errno}", hex.len() / 2);
    }
    ok(&mut c, "sim check");
}

fn sim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_balloon-sim"))
}

fn ctl(sock: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(sim_bin())
        .arg("ctl")
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("balloon-sim ctl")
}

#[test]
fn the_daemon_serves_ctl_clients_and_shuts_down_clean() {
    let dir = std::env::temp_dir().join(format!("balloon-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("sim.sock");
    let mut daemon = Command::new(sim_bin())
        .args([
            "--pvh", "--boot", "256m", "--max", "1g", "daemon", "--socket",
        ])
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon");
    let out = ctl(&sock, &["sysctl", "hw.balloon.current"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hw.balloon.current = 262144\n"
    );
    assert!(out.status.success());
    let out = ctl(&sock, &["sysctl", "-w", "hw.balloon.batch=0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sysctl: hw.balloon.batch: Operation not permitted\n"
    );
    assert!(ctl(&sock, &["xl", "mem-set", "domU", "128m"])
        .status
        .success());
    assert!(ctl(&sock, &["sim", "settle"]).status.success());
    let out = ctl(&sock, &["xl", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("domU                                         1   128"));
    // Xen's maximum is now 129 MiB (libxl): unload needs the memory back.
    assert!(ctl(&sock, &["xl", "mem-set", "domU", "256m"])
        .status
        .success());
    assert!(ctl(&sock, &["sim", "settle"]).status.success());
    assert!(ctl(&sock, &["modunload", "balloon"]).status.success());
    let out = ctl(&sock, &["sim", "stat"]);
    let stat = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        // 256 MiB and the 8 special pages (32 KiB) of a PVH domain.
        "reservation_kib 262176",
        "kmem_bytes 0",
        "kthreads 0",
        "leaked_sysctl_nodes 0",
        "dirty_pages_given 0",
    ] {
        assert!(stat.lines().any(|l| l == line), "{line} in {stat}");
    }
    assert!(ctl(&sock, &["sim", "shutdown"]).status.success());
    let status = daemon.wait().unwrap();
    assert!(status.success());
    assert!(!sock.exists(), "the daemon removes its socket");
    // Nobody listens now: ctl says so within its bounded wait.
    let out = ctl(&sock, &["--wait", "0", "sim", "ping"]);
    assert_eq!(out.status.code(), Some(3));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scenario_files_run_and_a_wrong_expectation_fails() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sim") {
            continue;
        }
        let out = Command::new(sim_bin())
            .arg("run")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 2, "scenario files in {}", dir.display());
    // A scenario whose expectation is wrong stops there, with its line.
    let mut child = Command::new(sim_bin())
        .args(["run", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sysctl hw.balloon.state\n! sysctl -w hw.balloon.batch=64\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("line 2: `sysctl -w hw.balloon.batch=64` succeeded but must fail"));
}

#[test]
fn the_manual_page_documents_every_node() {
    let page = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../modules/balloon/balloonkmod.4"),
    )
    .expect("modules/balloon/balloonkmod.4");
    let mut c = console();
    let all = ok(&mut c, "sysctl hw.balloon");
    let mut n = 0;
    for line in all.lines() {
        let name = line.split(" = ").next().unwrap();
        let short = name.strip_prefix("hw.balloon.").unwrap();
        let entry = match short.strip_prefix("stats.") {
            Some(_) => format!(".It Va {short}\n"),
            None => format!(".It Va {name} "),
        };
        assert!(page.contains(&entry), "balloonkmod.4 lacks {entry:?}");
        n += 1;
    }
    assert_eq!(n, 30);
}

#[test]
fn toolstack_commands_speak_as_xl_and_dmesg_as_netbsd() {
    let mut c = console();
    // dmesg(8): the kernel's stamp re-printed with six digits; -t drops it.
    let stamped = ok(&mut c, "dmesg");
    let plain = ok(&mut c, "dmesg -t");
    assert_eq!(stamped.lines().count(), plain.lines().count());
    for (s, p) in stamped.lines().zip(plain.lines()) {
        let (stamp, text) = s.split_at(s.find("] ").expect(s) + 2);
        assert_eq!(text, p);
        let inner = stamp.trim_start_matches('[').trim_end_matches("] ");
        let (sec, frac) = inner.split_once('.').expect(s);
        assert!(
            sec.len() >= 5 && sec.trim_start().parse::<u64>().is_ok(),
            "{s}"
        );
        assert!(frac.len() == 6 && frac.parse::<u64>().is_ok(), "{s}");
    }
    assert!(plain
        .lines()
        .any(|l| l.starts_with("balloon0: PVH guest, ")));
    let r = run(&mut c, "dmesg -x");
    assert_eq!(
        (r.status, r.err.as_str()),
        (1, "Usage: dmesg [-dTt] [-M core] [-N system]\n")
    );
    // xl mem-set above static-max: libxl's line, then xl's (xl_mem.c).
    let r = run(&mut c, "xl mem-set domU 2g");
    assert_eq!(r.status, 1);
    assert_eq!(
        r.err,
        "libxl: error: libxl_mem.c: libxl_set_memory_target: Domain 1:\
         memory_dynamic_max must be less than or equal to memory_static_max\n\
         cannot set domid 1 dynamic max memory to : 2g\n"
    );
    let r = run(&mut c, "xl mem-max domU 100m");
    assert_eq!(r.status, 1);
    assert!(
        r.err
            .ends_with("cannot set domid 1 static max memory to : 100m\n"),
        "{r:?}"
    );
    ok(&mut c, "xl mem-set domU 200m");
    ok(&mut c, "sim settle");
    assert_eq!(value(&mut c, "hw.balloon.current"), "204800");
    assert!(ok(&mut c, "sim stat").contains("max_reservation_kib 205824\n"));
    // A resume loses control/feature-balloon; the driver writes it back.
    assert_eq!(ok(&mut c, "xenstore-read control/feature-balloon"), "1\n");
    ok(&mut c, "sim resume");
    assert!(c.domain().wait_until(
        |v| v.watches_quiet() && v.xenstore("control/feature-balloon").as_deref() == Some("1"),
        WAIT
    ));
    ok(&mut c, "xl mem-set domU 256m");
    ok(&mut c, "sim settle");
    ok(&mut c, "modunload balloon");
    assert_eq!(
        run(&mut c, "xenstore-read control/feature-balloon").status,
        1,
        "removed at unload"
    );
}

// ---- balloon-sim's own command line (bug 13) ----

fn sim_with(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(sim_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Every bad option gets one line on standard error and status 2, before
/// anything boots. Before the fix `--boot 8g --max 4g` was a Rust panic
/// (status 101), `--boot 64t --max 64t` an abort on a failed 137 GB
/// allocation, and `--pv --pvh` silently took the last one.
#[test]
fn the_command_line_refuses_bad_options_in_one_line() {
    for (args, says) in [
        (
            &["--boot", "8g", "--max", "4g"][..],
            "boot memory (8192 MiB) exceeds the maximum reservation (4096 MiB)",
        ),
        (
            &["--boot", "64t", "--max", "64t"],
            "more than the simulator can represent (2097152 MiB at most",
        ),
        (
            &["--max", "5t"],
            "more than the simulator can represent (4194304 MiB at most",
        ),
        (&["--pv", "--pvh"], "--pv and --pvh conflict"),
        (&["--pvh", "--not-xen"], "--pvh and --not-xen conflict"),
        (&["--boot"], "--boot needs a size"),
        (&["--boot", "12x"], "--boot 12x: not a size"),
        (&["--max", "1500k"], "not a whole number of MiB"),
        (&["--host-free", "99999999999999999999t"], "not a size"),
        (&["--time-scale", "0"], "--time-scale 0: not a number"),
        (&["--frobnicate"], "unknown option --frobnicate"),
        (&["stray"], "unexpected argument \"stray\""),
        (&["run"], "run needs a scenario FILE"),
        (&["run", "a", "b"], "one too many"),
        (&["daemon"], "daemon needs --socket PATH"),
        (&["daemon", "--socket"], "daemon needs --socket PATH"),
        (&["ctl", "sim", "ping"], "ctl needs --socket PATH"),
        (&["ctl", "--socket", "/nonexistent"], "ctl needs a COMMAND"),
        (&["soak", "--seed"], "--seed needs a number"),
        (&["soak", "--pv", "--pvh"], "--pv and --pvh conflict"),
    ] {
        let out = sim_with(args, "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("balloon-sim: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }
    // A scenario's #: options are checked the same way, and the command
    // line's win over them option by option.
    let out = sim_with(&["run", "-"], "#: --pv --pvh\nsim ping\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("#: options: --pv and --pvh conflict"));
    let out = sim_with(
        &["--pvh", "run", "-"],
        "#: --pv --boot 256m --max 1g\nexpect dmesg ~ ^balloon0: PVH guest, [0-9]+ KiB\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--not-xen`: a kernel that is no Xen guest; the module refuses it.
#[test]
fn a_kernel_that_is_not_a_xen_guest() {
    let out = sim_with(
        &["--not-xen", "--no-modload", "run", "-"],
        "! modload balloon\nexpect dmesg ~ ^balloon0: not a Xen PV or PVH guest, not loading$\n\
         expect stat.kmem_bytes == 0\n! sysctl hw.balloon\n",
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("modload: balloon: Operation not supported by device"));
}

/// Bug 12 through the front end: a scenario that ends with the module
/// still loaded, its unload refused as it must be, exits 0 at once.
/// Before the fix: "SIMULATED KERNEL PANIC: domain teardown: kernel
/// threads still running" and status 134 after 10 s.
#[test]
fn a_scenario_may_end_with_the_module_loaded() {
    let start = std::time::Instant::now();
    let out = sim_with(
        &["--pvh", "--boot", "256m", "--max", "1g", "run", "-"],
        "xl mem-set domU 128m\nsim settle\nsim fault memory_op populate_physmap EFAULT\n\
         ! modunload balloon\nmodstat balloon\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("PANIC"), "{err}");
    assert!(
        err.contains("domain destroyed with module balloon (error 16) still loaded"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}

// ---- scenario assertions, time, snapshots ----

/// `expect` holds or fails the scenario with the line and the value.
#[test]
fn expect_asserts_values_with_clear_failures() {
    let mut c = console();
    for line in [
        "expect hw.balloon.current == 262144",
        "expect hw.balloon.current >= 262144",
        "expect hw.balloon.current < 262145",
        "expect hw.balloon.current != 1",
        "expect hw.balloon.state == idle",
        "expect hw.balloon.state ~ ^(idle|cancelled)",
        "expect hw.balloon.state !~ inflating",
        "expect stat.kmem_bytes > 0",
        "expect stat.xenbus_watches == 1",
        "expect dmesg ~ ^balloon0: PVH guest, [0-9]+ KiB of [0-9]+ KiB maximum",
        "expect dmesg !~ panic",
    ] {
        ok(&mut c, line);
    }
    for (line, says) in [
        (
            "expect hw.balloon.current == 1",
            "expect: hw.balloon.current is 262144, expected == 1",
        ),
        (
            "expect hw.balloon.state == inflating",
            "expect: hw.balloon.state is idle, expected == inflating",
        ),
        (
            "expect dmesg ~ ^never",
            "expect: no dmesg line matches /^never/",
        ),
        (
            "expect dmesg !~ balloon0",
            "expect: a dmesg line matches /balloon0/",
        ),
        (
            "expect hw.balloon.nosuch == 1",
            "expect: hw.balloon.nosuch: No such file or directory",
        ),
        (
            "expect stat.nosuch == 1",
            "expect: sim stat has no key nosuch",
        ),
        ("expect dmesg ~ (", "bad regular expression"),
        ("expect hw.balloon.state < 3", "compares numbers"),
    ] {
        let r = run(&mut c, line);
        assert_eq!(r.status, 1, "{line}: {r:?}");
        assert!(r.err.contains(says), "{line}: {}", r.err);
    }
    assert_eq!(run(&mut c, "expect hw.balloon.current").status, 2);
    // In a scenario file: the failing line, the command and the value.
    let out = sim_with(
        &["--pvh", "--boot", "256m", "--max", "1g", "run", "-"],
        "expect hw.balloon.current == 262144\nexpect hw.balloon.current == 4\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: `expect hw.balloon.current == 4` failed with status 1: expect: hw.balloon.current is 262144, expected == 4"),
        "{err}"
    );
}

/// `sim sleep` waits simulated time; `sim stat` is one snapshot that
/// includes UVM's figures, and its figures add up even while the driver
/// moves pages.
#[test]
fn sim_sleep_and_an_atomic_stat() {
    let mut c = console();
    let t0 = c.domain().uptime();
    ok(&mut c, "sim sleep 30s");
    assert!(c.domain().uptime() - t0 >= Duration::from_secs(30));
    ok(&mut c, "sim sleep 250ms");
    assert_eq!(run(&mut c, "sim sleep 3x").status, 2);
    let stat = ok(&mut c, "sim stat");
    for key in [
        "uvm_npages",
        "uvm_free",
        "uvm_freemin",
        "uvm_freetarg",
        "physmem",
        "kernel_pages",
        "module_pages",
        "hypercalls",
        "faults_fired",
        "xenbus_watches",
        "host_rss_kib",
    ] {
        assert!(
            stat.lines().any(|l| l.starts_with(&format!("{key} "))),
            "{key}: {stat}"
        );
    }
    // Pages in segments are free, the kernel's or the module's: at every
    // snapshot, while targets keep the worker busy.
    let d = c.domain();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        s.spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                d.xl_mem_set(if i.is_multiple_of(2) { 160 } else { 250 } * 1024);
                d.wait_until(|_| false, Duration::from_millis(3));
            }
        });
        for _ in 0..300 {
            let s = d.snapshot();
            assert_eq!(
                s.uvm_free as u64 + s.kernel_pages + s.module_pages,
                s.uvm_npages as u64,
                "{s:?}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}

// ---- the socket: NUL bytes, oversized requests; xenstore values ----

/// xenstore-write reads escapes as the real tool does (xs_lib.c
/// unsanitise_value), so a value can hold a NUL; xenstore-read prints it
/// escaped; values beyond xenstore's 4096-byte payload are refused.
#[test]
fn xenstore_values_take_escapes_like_the_real_tools() {
    let mut c = console();
    ok(&mut c, "xenstore-write data/x '300000\\x00junk\\t\\101'");
    assert_eq!(
        c.domain().xenstore_read_bytes("data/x").unwrap(),
        b"300000\0junk\tA"
    );
    assert_eq!(ok(&mut c, "xenstore-read data/x"), "300000\\000junk\\tA\n");
    let big = "9".repeat(4096);
    let r = run(&mut c, &format!("xenstore-write data/x {big}"));
    assert_eq!(
        (r.status, r.err.as_str()),
        (1, "xenstore-write: could not write path data/x\n")
    );
    let r = run(&mut c, "xenstore-write 'data/a b' 1");
    assert_eq!(r.status, 1);
}

/// Requests with NUL bytes in an argument go length-prefixed and reach
/// the command whole; one over 64 KiB, or one that does not decode, gets
/// one line and status 2; the daemon goes on.
#[test]
fn the_socket_takes_nul_bytes_and_refuses_oversized_requests() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let dir = std::env::temp_dir().join(format!("balloon-sim-nul-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let mut daemon = Command::new(sim_bin())
        .args([
            "--pvh", "--boot", "256m", "--max", "1g", "daemon", "--socket",
        ])
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let req = |args: &[&str]| {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        balloon_sim::daemon::request(&sock, &v, Duration::from_secs(10)).unwrap()
    };
    assert_eq!(req(&["sim", "ping"]).out, "pong\n");
    let r = req(&["xenstore-write", "data/nul", "300000\0junk"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(req(&["xenstore-read", "data/nul"]).out, "300000\\000junk\n");
    let r = req(&["sysctl", "hw.balloon\0.current"]);
    assert_eq!(r.status, 1, "{r:?}");
    // Raw requests: too long, not UTF-8, a bad length.
    for (bytes, says) in [
        (vec![b'a'; 100 * 1024], "refused: the limit is 65536"),
        (b"sysctl\0\xff\0".to_vec(), "not UTF-8"),
        (b"BSIM/2\n9\nsim".to_vec(), "cut short"),
    ] {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(&bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        let r = balloon_sim::daemon::decode_reply(&reply).unwrap();
        assert_eq!(r.status, 2, "{r:?}");
        assert_eq!(r.err.lines().count(), 1);
        assert!(r.err.contains(says), "{}", r.err);
    }
    // ctl refuses an argument that cannot fit before it connects.
    let long = "x".repeat(70 * 1024);
    let out = ctl(&sock, &["xenstore-write", "data/long", &long]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused: the limit is 65536"));
    assert_eq!(req(&["sim", "ping"]).out, "pong\n");
    assert!(ctl(&sock, &["sim", "shutdown"]).status.success());
    assert!(daemon.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
