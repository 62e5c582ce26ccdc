// SPDX-License-Identifier: BSD-2-Clause
//! What the simulator can now make happen, and how balloon.kmod takes it,
//! in the simulated domU: every error path of MODULE_CMD_INIT (each must
//! unwind with the right errno and leave nothing behind), hypercalls that
//! return an errno, a domain destroyed with the module still loaded,
//! unload, sysctl and xenstore events landing in the middle of a step
//! (stall points), real concurrency between user commands, and the Rust
//! core's heap seen by kmem accounting.
//!
//! Cases that could panic the simulated kernel run in a child process
//! (`child_case`), so a broken unwind fails its case instead of killing
//! the whole test program.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use balloon_sim::control::Console;
use balloon_sim::{
    balloon_module, stall, Domain, DomainConfig, Faults, Flavour, MemOp, Mode, SysctlValue,
};

mod common;
use common::{quad, state, MIB};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until the worker is at rest (watch events may still be queued).
fn settle(d: &Domain) {
    common::wait_for_state(d, WAIT, common::at_rest);
}

/// A domain whose kernel has the growth interfaces, so that targets
/// above boot memory are met by plugs (stock kernels clip them).
fn boot(mode: Mode) -> Domain {
    Domain::boot(
        DomainConfig::default()
            .mode(mode)
            .boot_mib(256)
            .max_mib(1024)
            .host_free_mib(2048)
            .flavour(Flavour::Assisted),
    )
}

fn loaded(mode: Mode) -> Domain {
    let d = boot(mode);
    d.modload(balloon_module()).expect("modload");
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
    d
}

/// `xl mem-set` and wait until the driver has taken the target and
/// settled.
fn mem_set(d: &Domain, kib: u64) {
    d.xl_mem_set(kib);
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    let deadline = Instant::now() + WAIT;
    while quad(d, "hw.balloon.target") != kib {
        assert!(Instant::now() < deadline, "target {kib} not taken");
        d.wait_until(|_| false, Duration::from_millis(2));
    }
    settle(d);
}

/// Unloads as an administrator does once dom0 gave the domain its boot
/// memory back: `xl mem-set` lowers Xen's maximum with every smaller
/// target (libxl), so memory still ballooned could not come back
/// otherwise. Then nothing of the module may be left.
fn unload(d: &Domain, what: &str) {
    d.xl_mem_set(d.config().boot_pages() * 4);
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    settle(d);
    if let Err(e) = d.modunload() {
        let log = d.dmesg();
        panic!(
            "{what}: modunload: {e} ({}); dmesg ends {:#?}",
            state(d),
            &log[log.len().saturating_sub(8)..]
        );
    }
    nothing_left(d, what);
}

/// Nothing of the module is left: kmem (the core's heap included),
/// threads, sysctl nodes, xenbus watches, pages; kernel and Xen agree.
fn nothing_left(d: &Domain, what: &str) {
    let s = d.snapshot();
    assert_eq!(
        (s.kmem_bytes, s.kmem_allocations),
        (0, 0),
        "{what}: kmem left"
    );
    assert_eq!(s.kthreads, 0, "{what}: threads left");
    assert_eq!(s.leaked_sysctl_nodes, 0, "{what}: sysctl nodes left");
    assert_eq!(s.watches, 0, "{what}: xenbus watches left");
    assert_eq!(s.module_pages, 0, "{what}: pages left");
    assert!(d.modstat().is_empty(), "{what}: still listed");
    d.check()
        .unwrap_or_else(|e| panic!("{what}: kernel and Xen disagree: {e}"));
}

// ---- every error path of MODULE_CMD_INIT ----

/// The INIT fault cases: (name, faults, errno modload must return, a
/// dmesg line that says why).
fn init_cases() -> Vec<(&'static str, Faults, i32, &'static str)> {
    let mut v = Vec::new();
    let f = |m: &dyn Fn(&mut Faults)| {
        let mut f = Faults::default();
        m(&mut f);
        f
    };
    v.push((
        "current_reservation",
        f(&|f| {
            f.memory_op_errors.insert(MemOp::CurrentReservation, 14);
        }),
        5,
        "cannot read the reservation",
    ));
    v.push((
        "maximum_reservation",
        f(&|f| {
            f.memory_op_errors.insert(MemOp::MaximumReservation, 22);
        }),
        5,
        "cannot read the reservation",
    ));
    for n in [0, 1, 7, 13, 14, 20, 29] {
        v.push((
            match n {
                0 => "sysctl_createv hw.balloon",
                1 => "sysctl_createv first leaf",
                7 => "sysctl_createv a middle leaf",
                13 => "sysctl_createv last leaf",
                14 => "sysctl_createv hw.balloon.stats",
                20 => "sysctl_createv a counter",
                _ => "sysctl_createv last counter",
            },
            f(&|f| f.sysctl_create_fail_after = Some(n)),
            12,
            "cannot create hw.balloon: error 12",
        ));
    }
    // The shim's own boot information, then the core's allocations at
    // attach (its boot segment list, segment table, unplug flags, bitmap,
    // frame buffers, state): every one KM_NOSLEEP, each NULL an ENOMEM.
    v.push((
        "kmem_alloc KM_NOSLEEP: boot information",
        f(&|f| f.kmem_nosleep_fail_after = Some(0)),
        12,
        "no memory for the boot information",
    ));
    for n in 1..=8 {
        v.push((
            "kmem_alloc KM_NOSLEEP: the core's attach",
            f(&|f| f.kmem_nosleep_fail_after = Some(n)),
            12,
            "cannot set up the bookkeeping: error 12",
        ));
    }
    v.push((
        "kthread_create",
        f(&|f| f.kthread_create_error = Some(35)),
        35,
        "cannot start the worker: error 35",
    ));
    v.push((
        "register_xenbus_watch ENOSPC",
        f(&|f| f.watch_register_error = Some(28)),
        28,
        "cannot watch memory/target: error 28",
    ));
    v.push((
        "register_xenbus_watch EEXIST",
        f(&|f| f.watch_register_error = Some(17)),
        17,
        "cannot watch memory/target: error 17",
    ));
    v
}

/// One INIT fault case in this process: modload fails with the errno,
/// says why, and leaves nothing; with the fault cleared the module loads
/// and unloads cleanly in the same domain.
fn init_case(mode: Mode, case: usize) {
    let (name, faults, errno, line) = init_cases().swap_remove(case);
    let d = boot(mode);
    d.set_faults(faults);
    assert_eq!(d.modload(balloon_module()), Err(errno), "{name}");
    assert!(
        d.dmesg().iter().any(|l| l.contains(line)),
        "{name}: no {line:?} in {:#?}",
        d.dmesg()
    );
    assert!(
        d.snapshot().faults_fired > 0,
        "{name}: the fault never fired"
    );
    nothing_left(&d, name);
    assert_eq!(d.memory(), 256 * MIB, "{name}");
    d.set_faults(Faults::default());
    d.modload(balloon_module())
        .expect("modload once the fault is gone");
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
    d.modunload().expect("modunload");
    nothing_left(&d, name);
}

/// Runs a case in a child process (`child_case`) so that a simulated
/// kernel panic fails the case, with its message, rather than this test
/// program.
fn in_child(case: &str) -> Result<(), String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_case", "--exact", "--nocapture", "--test-threads=1"])
        .env("SIM_FAULT_CASE", case)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn child_case() {
    let Ok(case) = std::env::var("SIM_FAULT_CASE") else {
        return;
    };
    let (mode, n) = case.split_once(':').unwrap();
    let mode = if mode == "pv" { Mode::Pv } else { Mode::Pvh };
    init_case(mode, n.parse().unwrap());
}

/// Before the fix, the register_xenbus_watch ENOSPC case panicked: the
/// unwind unregistered a watch whose registration had failed.
#[test]
fn every_init_error_path_unwinds_with_its_errno_and_leaves_nothing() {
    let mut failed = Vec::new();
    for tag in ["pv", "pvh"] {
        for (i, (name, ..)) in init_cases().iter().enumerate() {
            if let Err(e) = in_child(&format!("{tag}:{i}")) {
                failed.push(format!("{tag} {name}:\n{e}"));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn a_xenstore_read_error_at_load_is_not_fatal() {
    let d = boot(Mode::Pvh);
    d.faults_mut().xenstore_read_error = Some(5);
    d.modload(balloon_module())
        .expect("loads without memory/static-max");
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
    assert!(d
        .dmesg()
        .iter()
        .any(|l| l.contains("(memory/static-max unknown)")));
    assert_eq!(
        quad(&d, "hw.balloon.target"),
        quad(&d, "hw.balloon.current"),
        "the target did not move"
    );
    d.set_faults(Faults::default());
    d.modunload().unwrap();
    nothing_left(&d, "xenstore read error at load");
}

#[test]
fn hypercalls_that_return_an_errno_are_errors_not_counts() {
    for mode in [Mode::Pv, Mode::Pvh] {
        let d = loaded(mode);
        d.faults_mut()
            .memory_op_errors
            .insert(MemOp::DecreaseReservation, 14);
        mem_set(&d, 200 * 1024);
        assert_eq!(d.memory(), 256 * MIB, "nothing was given");
        assert_eq!(
            d.sysctl_read("hw.balloon.stats.last_error"),
            Ok(SysctlValue::String("EFAULT (14) in inflate".into()))
        );
        assert_eq!(d.pages_owned_by_module(), 0, "the pages went back to UVM");
        d.check().unwrap();
        d.set_faults(Faults::default());
        mem_set(&d, 192 * 1024);
        assert_eq!(d.memory(), 192 * MIB);
        let grow = if mode == Mode::Pv {
            MemOp::IncreaseReservation
        } else {
            MemOp::PopulatePhysmap
        };
        d.faults_mut().memory_op_errors.insert(grow, 12);
        mem_set(&d, 256 * 1024);
        assert_eq!(d.memory(), 192 * MIB);
        assert_eq!(
            d.sysctl_read("hw.balloon.stats.last_error"),
            Ok(SysctlValue::String("ENOMEM (12) in deflate".into()))
        );
        d.check().unwrap();
        d.set_faults(Faults::default());
        mem_set(&d, 240 * 1024);
        assert_eq!(d.memory(), 240 * MIB);
        unload(&d, "memory_op errors");
    }
}

// ---- a domain destroyed with the module loaded (bug 12) ----

/// Before the fix the simulator called this a kernel panic ("domain
/// teardown: kernel threads still running") and aborted after 10 s. Now
/// the module's threads are frozen and a next domain in the same process
/// works normally.
#[test]
fn a_domain_destroyed_with_the_module_loaded_is_not_a_panic() {
    for mode in [Mode::Pv, Mode::Pvh] {
        let d = loaded(mode);
        d.xl_mem_set(128 * 1024);
        assert!(d.wait_until(|v| v.memory() == 128 * MIB, WAIT));
        settle(&d);
        // Xen gives nothing back, also when the teardown retries the
        // unload with its maximum and the host's memory raised.
        let grow = if mode == Mode::Pv {
            MemOp::IncreaseReservation
        } else {
            MemOp::PopulatePhysmap
        };
        d.faults_mut().memory_op_errors.insert(grow, 14);
        assert_eq!(d.modunload(), Err(16), "EBUSY: Xen cannot give it back");
        assert_eq!(d.modstat(), ["balloon"]);
        let start = Instant::now();
        drop(d);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "teardown took {:?}",
            start.elapsed()
        );
        // The frozen threads touch nothing of the next domain.
        let d = loaded(mode);
        d.xl_mem_set(200 * 1024);
        assert!(d.wait_until(|v| v.memory() == 200 * MIB, WAIT));
        settle(&d);
        d.check().unwrap();
        unload(&d, "after a destroyed domain");
    }
}

/// A refused unload keeps the worker thread running instead of stopping
/// it and starting a new one. Before, when kthread_create failed at that
/// moment, the module stayed loaded with no worker, its state stuck at
/// whatever it was doing, and never moved again (found by the soak,
/// seed 2).
#[test]
fn a_refused_unload_leaves_a_working_module_even_when_no_thread_can_be_made() {
    for mode in [Mode::Pv, Mode::Pvh] {
        let d = loaded(mode);
        mem_set(&d, 128 * 1024);
        d.set_host_free(0);
        d.faults_mut().kthread_create_error = Some(35);
        assert_eq!(d.modunload(), Err(16));
        d.set_host_free(2048 * MIB);
        mem_set(&d, 200 * 1024);
        assert_eq!(d.memory(), 200 * MIB, "the worker still works");
        d.set_faults(Faults::default());
        unload(&d, "refused unload");
    }
}

/// A sysctl target write re-reads Xen's maximum, and the new maximum may
/// move the target (the core clamps it) even when the write itself is
/// refused. Before the fix the worker was not woken: hw.balloon.state
/// said "deflating" and nothing moved again (found by the soak, seed 1).
#[test]
fn a_refused_target_that_moves_the_limit_wakes_the_worker() {
    let d = loaded(Mode::Pvh);
    mem_set(&d, 112 * 1024);
    d.xl_mem_max(256 * 1024).unwrap();
    d.set_host_free(MIB);
    d.sysctl_write("hw.balloon.target", SysctlValue::Quad(200_000))
        .unwrap();
    settle(&d);
    assert!(state(&d).starts_with("cancelled"), "{}", state(&d));
    d.set_host_free(2048 * MIB);
    d.xl_mem_max(120 * 1024).unwrap();
    assert_eq!(
        d.sysctl_write("hw.balloon.target", SysctlValue::Quad(250_000)),
        Err(1),
        "above Xen's maximum: EPERM"
    );
    let target = quad(&d, "hw.balloon.target");
    assert!(
        target < 200_000,
        "the new maximum clamped the target: {target}"
    );
    settle(&d);
    assert_eq!(d.memory() * 4, target, "the worker took the clamped target");
    unload(&d, "limit moved the target");
}

// ---- events in the middle of a step (stall points) ----

/// An unload that lands while the worker is inside a decrease_reservation
/// hypercall waits for that step, then gives everything back.
#[test]
fn an_unload_landing_mid_inflate_waits_for_the_step_and_gives_all_back() {
    let d = loaded(Mode::Pvh);
    // Steps of 8 2 MiB extents (16 MiB), so that 96 MiB takes six.
    d.sysctl_write("hw.balloon.batch", SysctlValue::Quad(8))
        .expect("batch");
    stall::arm("decrease_reservation", 2);
    // Straight into xenstore: xl would also lower Xen's maximum, and the
    // unload below must be able to take everything back.
    d.xenstore_write("memory/target", &(160 * 1024).to_string());
    let held = stall::wait_stalled(WAIT);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, "decrease_reservation");
    let before = d.memory();
    assert!(before < 256 * MIB && before > 160 * MIB, "two steps done");
    thread::scope(|s| {
        let unload = s.spawn(|| d.modunload());
        // The unload cannot finish while the worker is held mid-step.
        d.wait_until(|_| false, Duration::from_millis(50));
        assert!(!unload.is_finished(), "unload finished under a held step");
        stall::release();
        assert_eq!(unload.join().unwrap(), Ok(()));
    });
    assert_eq!(d.memory(), 256 * MIB, "everything given back");
    nothing_left(&d, "unload mid inflate");
}

/// A sysctl read and a new xenstore target that land while a plug is
/// held mid-step: the read does not wait for the step (sc_lock is not
/// held across it) and sees a consistent value, and the worker steers to
/// the new target once the step ends.
#[test]
fn sysctl_and_a_watch_event_landing_mid_plug_do_not_wait_for_the_step() {
    let d = loaded(Mode::Pvh);
    stall::arm("physseg_plug", 0);
    d.xl_mem_set(512 * 1024);
    assert_eq!(stall::wait_stalled(WAIT)[0].0, "physseg_plug");
    // The segment is backed, not yet plugged.
    let backed = d.memory();
    assert!(backed > 256 * MIB);
    thread::scope(|s| {
        let read = s.spawn(|| quad(&d, "hw.balloon.current"));
        d.xl_mem_set(300 * 1024);
        let deadline = Instant::now() + WAIT;
        while !read.is_finished() && Instant::now() < deadline {
            d.wait_until(|_| false, Duration::from_millis(2));
        }
        let finished = read.is_finished();
        let held = stall::wait_stalled(Duration::ZERO).len();
        stall::release();
        assert!(finished, "the read waited for the step");
        assert_eq!(held, 1, "the step was still held during the read");
        let current = read.join().unwrap();
        assert!(
            (256 * 1024..=512 * 1024).contains(&current),
            "current {current}"
        );
    });
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    assert!(d.wait_until(|v| v.memory() == 300 * MIB, WAIT));
    settle(&d);
    assert_eq!(quad(&d, "hw.balloon.target"), 300 * 1024);
    d.check().unwrap();
    unload(&d, "events mid plug");
}

/// A watch callback held inside its xenbus_read while the module unloads:
/// the unload waits for it (the barrier), and nothing runs afterwards.
#[test]
fn an_unload_waits_for_a_callback_held_in_xenbus_read() {
    let d = loaded(Mode::Pv);
    stall::arm("xenbus_read", 0);
    d.xenstore_write("memory/target", &(200 * 1024).to_string());
    assert_eq!(stall::wait_stalled(WAIT)[0].1, "xenwatch");
    thread::scope(|s| {
        let unload = s.spawn(|| d.modunload());
        d.wait_until(|_| false, Duration::from_millis(50));
        assert!(!unload.is_finished());
        stall::release();
        assert_eq!(unload.join().unwrap(), Ok(()));
    });
    nothing_left(&d, "unload with a callback held");
}

// ---- real concurrency between user commands ----

/// sysctl readers and a writer run while the module is unloaded and
/// loaded again, 20 times: every read either answers or fails with
/// ENOENT once the node is gone; nothing else happens.
#[test]
fn sysctl_during_modunload_and_modload() {
    let d = loaded(Mode::Pvh);
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    thread::scope(|s| {
        for name in [
            "hw.balloon.current",
            "hw.balloon.state",
            "hw.balloon.stats.hypercalls",
        ] {
            let (d, stop, reads) = (&d, &stop, &reads);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match d.sysctl_read(name) {
                        Ok(_) | Err(2) => reads.fetch_add(1, Ordering::SeqCst),
                        Err(e) => panic!("{name}: error {e}"),
                    };
                }
            });
        }
        let (d2, stop2) = (&d, &stop);
        s.spawn(move || {
            let mut i = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                i += 1;
                let v = SysctlValue::Quad(((200 + i % 40) * 1024) as i64);
                match d2.sysctl_write("hw.balloon.target", v) {
                    Ok(()) | Err(2) => {}
                    Err(e) => panic!("write: error {e}"),
                }
            }
        });
        // The threads stop even if an assertion below fails (a scope
        // waits for them before it passes the panic on).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = Stop(&stop);
        for _ in 0..20 {
            // EBUSY is a correct answer while the xenwatch thread has not
            // answered the barrier (balloon_watch_barrier): bounded retry.
            let mut tries = 0;
            while let Err(e) = d.modunload() {
                assert_eq!(e, 16, "modunload: error {e}");
                tries += 1;
                assert!(tries < 100, "modunload refused 100 times");
            }
            d.modload(balloon_module()).unwrap();
        }
    });
    assert!(reads.load(Ordering::SeqCst) > 0);
    settle(&d);
    d.check().unwrap();
    d.modunload().unwrap();
    nothing_left(&d, "sysctl during modunload");
}

/// Two administrators and dom0 set targets at once: every write is taken
/// (counted), the driver ends at the last target it accepted, and the
/// kernel and Xen agree.
#[test]
fn two_writers_and_dom0_at_once() {
    let d = loaded(Mode::Pvh);
    // Room for the administrators' targets above boot memory: Xen's
    // maximum starts at boot memory + 1 MiB, and dom0's xl mem-set below
    // keeps it at 281 MiB or more.
    d.xl_mem_max(1024 * 1024).unwrap();
    let accepted0 = quad(&d, "hw.balloon.stats.targets_accepted");
    const N: u64 = 150;
    thread::scope(|s| {
        for w in 0..2u64 {
            let d = &d;
            s.spawn(move || {
                for i in 0..N {
                    let kib = (160 + w * 60 + i % 50) * 1024;
                    d.sysctl_write("hw.balloon.target", SysctlValue::Quad(kib as i64))
                        .unwrap();
                }
            });
        }
        let d = &d;
        s.spawn(move || {
            for i in 0..N {
                d.xl_mem_set((280 + i % 50) * 1024);
            }
        });
    });
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    settle(&d);
    let target = quad(&d, "hw.balloon.target");
    assert_eq!(d.memory() * 4, target, "ended at its target");
    let accepted = quad(&d, "hw.balloon.stats.targets_accepted") - accepted0;
    assert!(accepted >= 2 * N, "{accepted} accepted");
    d.check().unwrap();
    unload(&d, "two writers");
}

/// The same through the control socket: commands from several clients
/// at once, one of them a modunload.
#[test]
fn the_console_takes_commands_from_several_threads() {
    let c = Console::new(loaded(Mode::Pv), false);
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..50 {
                    // Before the unload, a value; after, the node is gone
                    // (named by level, or ENOENT when it went away
                    // between finding the node and reading it).
                    let r = c.run_line("sysctl -n hw.balloon.current");
                    assert!(
                        r.status == 0
                            || r.err.contains("invalid")
                            || r.err.contains("No such file or directory"),
                        "{r:?}"
                    );
                }
            });
        }
        s.spawn(|| {
            assert_eq!(c.run_line("xenstore-write memory/target 204800").status, 0);
            assert_eq!(c.run_line("modunload balloon").status, 0);
        });
    });
    assert_eq!(c.run_line("sim invariants").status, 0);
}

// ---- kmem accounting sees the Rust core ----

fn text(d: &Domain, name: &str) -> String {
    match d.sysctl_read(name) {
        Ok(SysctlValue::String(s)) => s,
        other => panic!("{name}: {other:?}"),
    }
}

/// The kernel has no memory for the bookkeeping of a plug (every
/// KM_NOSLEEP kmem_alloc returns NULL): the plug fails before anything is
/// backed, the driver says so (state, last_error), retries once memory is
/// back, and unload leaves no kmem behind.
#[test]
fn no_kmem_at_plug_is_reported_retried_and_leaks_nothing() {
    let d = loaded(Mode::Pvh);
    let kmem_at_load = d.snapshot().kmem_bytes;
    d.faults_mut().kmem_nosleep_fail = true;
    d.xl_mem_set(384 * 1024);
    let deadline = Instant::now() + WAIT;
    while !text(&d, "hw.balloon.stats.last_error").contains("ENOMEM") {
        assert!(Instant::now() < deadline, "no ENOMEM reported");
        d.wait_until(|_| false, Duration::from_millis(2));
    }
    assert_eq!(
        text(&d, "hw.balloon.stats.last_error"),
        "ENOMEM (12) in plug"
    );
    assert_eq!(d.memory(), 256 * MIB, "nothing was backed");
    assert_eq!(d.snapshot().kmem_bytes, kmem_at_load, "nothing allocated");
    d.set_faults(Faults::default());
    assert!(
        d.wait_until(|v| v.memory() == 384 * MIB, WAIT),
        "the plug is retried once memory is back: {}",
        state(&d)
    );
    settle(&d);
    unload(&d, "no kmem at plug");
}

/// Issue 15: the host and the guest are both out of memory (no free
/// page in UVM, none on the host) when a target arrives that needs a
/// plug. The worker's allocation for it must not sleep with the softc
/// lock held: a memory/target watch event and a sysctl read still
/// complete, and the driver says what it could not do. Before the fix the
/// core's heap was KM_SLEEP: the worker slept in kmem_alloc (ksync.rs
/// models uvm_wait), and the sysctl read waited behind it for good.
#[test]
fn a_watch_and_a_sysctl_read_complete_with_host_and_guest_out_of_memory() {
    let d = loaded(Mode::Pvh);
    d.set_host_free(0);
    let taken = d.kernel_alloc(u64::MAX);
    assert_eq!(d.snapshot().uvm_free, 0, "the guest is out of memory");
    d.xl_mem_set(384 * 1024);
    // The watch event (and a second one) complete, and a sysctl read
    // answers, each within a bounded wait; a reader blocked behind the
    // worker is let go by freeing memory, and the test fails.
    let (tx, rx) = std::sync::mpsc::channel();
    let blocked = thread::scope(|s| {
        s.spawn(|| {
            let quiet = d.wait_until(|v| v.watches_quiet(), WAIT);
            let _ = tx.send((quiet, d.sysctl_read("hw.balloon.state")));
        });
        let got = rx.recv_timeout(WAIT);
        if got.is_err() {
            d.kernel_free(taken);
        }
        got
    });
    let (quiet, first) = blocked.expect("a sysctl read blocked with memory short");
    assert!(quiet, "the watch event did not complete");
    assert!(first.is_ok(), "{first:?}");
    let snap = d.snapshot();
    assert_eq!(snap.kmem_sleeping, 0, "a thread sleeps in kmem_alloc");
    // A second target is taken while memory is still short.
    d.xl_mem_set(320 * 1024);
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    let deadline = Instant::now() + WAIT;
    while quad(&d, "hw.balloon.target") != 320 * 1024 {
        assert!(Instant::now() < deadline, "second target not taken");
        d.wait_until(|_| false, Duration::from_millis(2));
    }
    // The driver says what it could not do.
    while !text(&d, "hw.balloon.stats.last_error").contains("ENOMEM") {
        assert!(Instant::now() < deadline, "no ENOMEM reported");
        d.wait_until(|_| false, Duration::from_millis(2));
    }
    assert_eq!(
        text(&d, "hw.balloon.stats.last_error"),
        "ENOMEM (12) in plug"
    );
    // The new target re-armed the worker (its state says where it is
    // going at once); its next plug fails the same way.
    while !state(&d).contains("segment could not be plugged") {
        assert!(Instant::now() < deadline, "state: {}", state(&d));
        d.wait_until(|_| false, Duration::from_millis(2));
    }
    assert!(d.snapshot().kmem_nosleep_null > 0);
    assert_eq!(d.memory(), 256 * MIB);
    d.kernel_free(taken);
    d.set_host_free(2048 * MIB);
    unload(&d, "out of memory");
}

/// The core's heap goes through the simulated kmem(9): while the module
/// is loaded kmem holds the core's state (before, kmem saw only the
/// shim's own allocations, all freed by the end of INIT: 0 bytes), it
/// follows what the core keeps as it balloons, and unload frees it all.
#[test]
fn kmem_accounting_sees_the_core() {
    let d = loaded(Mode::Pvh);
    let at_load = d.snapshot();
    assert!(
        at_load.kmem_bytes > 0 && at_load.kmem_allocations > 0,
        "the core's state is in kmem: {at_load:?}"
    );
    d.xl_mem_set(160 * 1024);
    assert!(d.wait_until(|v| v.memory() == 160 * MIB, WAIT));
    settle(&d);
    assert!(d.snapshot().kmem_bytes > 0);
    unload(&d, "kmem accounting");
}
