// SPDX-License-Identifier: BSD-2-Clause
//! Issue 11, "Locks", in the simulated domU: while the worker is held in
//! the middle of a step (a 128 MiB plug, an 8192-frame inflate), the
//! paths that must not wait for it still finish:
//!
//! - a watch event on memory/target, and the kernel's own control/shutdown
//!   watch queued behind it on the single xenwatch thread (xenbus_xs.c
//!   1.22 `xenwatch_thread`; shutdown_xenbus.c 1.5.8.3);
//! - a sysctl knob write, which holds `sysctl_treelock` as the writer
//!   while its handler runs (kern_sysctl.c 1.257 `sys___sysctl`), and a
//!   sysctl read queued behind it.
//!
//! Every wait is bounded; the worker is released only after the checks.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use balloon_sim::{balloon_module, stall, Domain, DomainConfig, Flavour, Mode, SysctlValue};

mod common;
use common::{quad, state, MIB};

/// Bounded waits for what must happen (the simulated clock runs fast).
const WAIT: Duration = Duration::from_secs(30);
/// How long a path that must not wait for the worker gets. Generous: on
/// the old driver these paths never finish while the worker is held.
const SHORT: Duration = Duration::from_secs(10);

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
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    d
}

/// What happened while the worker was held.
#[derive(Debug)]
struct Meanwhile {
    /// The new target's event and the shutdown request queued after it
    /// were both delivered.
    watches_delivered: bool,
    /// hw.balloon.target as read while held, if the read finished.
    target_read: Option<u64>,
    /// The knob write's result, if it finished.
    knob_written: Option<Result<(), i32>>,
    /// A thread was still held at the stall point afterwards.
    still_held: bool,
}

/// With the worker held at a stall point: xl sets `target_kib`, dom0
/// asks for a shutdown, an administrator writes a knob and reads the
/// target. Returns what finished within [`SHORT`]; releases the worker
/// before returning whatever happened.
fn meanwhile(d: &Domain, target_kib: u64) -> Meanwhile {
    let shutdowns = d.snapshot().shutdown_requests;
    let (wtx, wrx) = mpsc::channel();
    let (rtx, rrx) = mpsc::channel();
    thread::scope(|s| {
        // The write first: it takes sysctl_treelock as the writer, so the
        // read queues behind it if its handler waits for the worker.
        s.spawn(move || {
            let _ = wtx.send(d.sysctl_write("hw.balloon.scrub", SysctlValue::Bool(true)));
        });
        d.xl_mem_set(target_kib);
        d.xenstore_write("control/shutdown", "poweroff");
        let watches_delivered = d.wait_until(
            |v| v.shutdown_requests() > shutdowns && v.watches_quiet(),
            SHORT,
        );
        let knob_written = wrx.recv_timeout(SHORT).ok();
        s.spawn(move || {
            let _ = rtx.send(quad(d, "hw.balloon.target"));
        });
        let target_read = rrx.recv_timeout(SHORT).ok();
        let still_held = !stall::wait_stalled(Duration::ZERO).is_empty();
        // Whatever happened, let the worker (and anything waiting for
        // it) go on before the threads are joined.
        stall::release();
        Meanwhile {
            watches_delivered,
            target_read,
            knob_written,
            still_held,
        }
    })
}

fn assert_completed(m: &Meanwhile, target_kib: u64, what: &str) {
    assert!(
        m.watches_delivered,
        "{what}: the target event and control/shutdown were not delivered while the worker was held: {m:?}"
    );
    assert_eq!(
        m.knob_written,
        Some(Ok(())),
        "{what}: the knob write did not finish while the worker was held: {m:?}"
    );
    assert_eq!(
        m.target_read,
        Some(target_kib),
        "{what}: the sysctl read did not finish (or missed the new target) while the worker was held: {m:?}"
    );
    assert!(m.still_held, "{what}: the worker was let go early: {m:?}");
}

fn settle_at(d: &Domain, mib: u64) {
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    assert!(
        d.wait_until(|v| v.memory() == mib * MIB, WAIT),
        "memory {} pages, want {mib} MiB ({})",
        d.memory(),
        state(d)
    );
    // Memory can pass through the target mid-step (a segment being
    // backed): the check needs the worker at rest.
    assert!(wait_idle(d), "worker still busy: {}", state(d));
    d.check().unwrap();
}

fn wait_idle(d: &Domain) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if state(d) == "idle" {
            return true;
        }
        d.wait_until(|_| false, Duration::from_millis(2));
    }
    false
}

fn unload(d: &Domain) {
    d.xl_mem_set(256 * 1024);
    settle_at(d, 256);
    d.modunload().expect("modunload");
    let s = d.snapshot();
    assert_eq!((s.kmem_bytes, s.watches, s.kthreads), (0, 0, 0));
}

/// PVH, kernel-assisted: the worker is held inside uvm_physseg_plug of a
/// 128 MiB segment it has backed.
#[test]
fn watch_events_and_sysctl_finish_while_a_128_mib_plug_is_held() {
    let d = loaded(Mode::Pvh);
    stall::arm("physseg_plug", 0);
    d.xl_mem_set(512 * 1024);
    assert_eq!(stall::wait_stalled(WAIT)[0].0, "physseg_plug");
    assert_eq!(
        d.memory() - 256 * MIB,
        128 * MIB,
        "one 128 MiB segment backed"
    );
    let m = meanwhile(&d, 400 * 1024);
    assert_completed(&m, 400 * 1024, "mid plug");
    settle_at(&d, 400);
    unload(&d);
}

/// PV: the worker is held in the middle of an 8192-frame inflate, once
/// while it zeroes the batch's pages (in the MMUEXT_CLEAR_PAGE hypercall
/// for frames 4097-4112 of 8192: the shim clears 16 frames a call) and
/// once inside the decrease_reservation hypercall that gives them to Xen.
#[test]
fn watch_events_and_sysctl_finish_while_an_8192_frame_inflate_is_held() {
    for (point, skip) in [("zero_page", 256), ("decrease_reservation", 0)] {
        let d = loaded(Mode::Pv);
        d.sysctl_write("hw.balloon.batch", SysctlValue::Quad(8192))
            .expect("batch 8192");
        stall::arm(point, skip);
        d.xl_mem_set(160 * 1024);
        let held = stall::wait_stalled(WAIT);
        assert_eq!(held.first().map(|h| h.0), Some(point), "{held:?}");
        assert_eq!(d.memory(), 256 * MIB, "{point}: nothing given yet");
        let m = meanwhile(&d, 200 * 1024);
        assert_completed(&m, 200 * 1024, point);
        settle_at(&d, 200);
        assert!(
            d.dmesg().iter().any(|l| l.contains("at target")),
            "{point}: the worker reported its outcome"
        );
        unload(&d);
        drop(d);
    }
}

/// Issue 11's known gap: a PVH target written before the driver's first
/// read left the toolstack offset at 0, and the domain ended 32 KiB (its 8
/// special pages) short of xl's target. The single xenwatch thread is
/// held in the kernel's own control/shutdown handler while the module
/// loads and `xl mem-set` writes, so the module's first watch event
/// already carries the new target.
#[test]
fn a_target_written_before_the_first_read_still_gets_the_pvh_offset() {
    let d = Domain::boot(
        DomainConfig::default()
            .mode(Mode::Pvh)
            .boot_mib(256)
            .max_mib(1024)
            .host_free_mib(2048),
    );
    assert!(d.wait_until(|v| v.watches_quiet(), WAIT));
    stall::arm("shutdown_watch", 0);
    d.xenstore_write("control/shutdown", "poweroff");
    assert_eq!(stall::wait_stalled(WAIT)[0].0, "shutdown_watch");
    d.modload(balloon_module()).expect("modload");
    d.xl_mem_set(192 * 1024);
    stall::release();
    assert!(d.wait_until(|v| v.watch_events_delivered() >= 1, WAIT));
    settle_at(&d, 192);
    assert_eq!(quad(&d, "hw.balloon.toolstack_offset"), 32);
    assert_eq!(quad(&d, "hw.balloon.current"), 192 * 1024);
    assert_eq!(d.snapshot().shutdown_requests, 1);
}

/// Issue 11, xenwatch: FINI may return only once no callback of the
/// module can still run (xenbus_xs.c 1.22 `xenwatch_thread` calls
/// callbacks of events it has already taken, with no lock and no check
/// that the watch is still registered). While the single xenwatch thread
/// is held in the kernel's own control/shutdown handler, the barrier's
/// event cannot come: unload is refused with EBUSY and one line, the
/// driver stays loaded and working, and once xenwatch moves on, unload
/// succeeds and leaves nothing behind. Before the fix FINI gave up on the
/// barrier after 10 s, unloaded anyway, and destroyed the mutex the late
/// callback then waited on (the soak's "mutex_destroy: a thread is waiting
/// for the mutex").
#[test]
fn unload_is_refused_while_xenwatch_cannot_answer_the_barrier() {
    let d = loaded(Mode::Pv);
    stall::arm("shutdown_watch", 0);
    d.xenstore_write("control/shutdown", "poweroff");
    assert_eq!(stall::wait_stalled(WAIT)[0].0, "shutdown_watch");
    // A target queued behind the held handler: its callback has not run.
    d.xenstore_write("memory/target", &(200 * 1024).to_string());
    assert_eq!(d.modunload(), Err(16), "EBUSY while xenwatch is held");
    assert!(
        d.dmesg()
            .iter()
            .any(|l| l.contains("unload refused: the xenwatch thread did not answer")),
        "one line says why: {:?}",
        d.dmesg()
    );
    stall::release();
    // Still loaded and working: the queued target is met.
    settle_at(&d, 200);
    d.xenstore_write("memory/target", &(256 * 1024).to_string());
    settle_at(&d, 256);
    assert_eq!(d.modunload(), Ok(()));
    assert_eq!(d.snapshot().shutdown_requests, 1);
}
