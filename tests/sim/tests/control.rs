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
        ("batch=8193", "Operation not permitted"),
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
    // An inflate or deflate hypercall moves at most a batch (512).
    assert!(num(&mut c, "hw.balloon.stats.hypercalls") >= 2 * 128 * 256 / 512);
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
    // Wrong sizes and types through sysctl(3) itself.
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
