// SPDX-License-Identifier: BSD-2-Clause
//! Stall points: a kernel service can be made to block its caller until
//! a test releases it, so that unload, sysctl and xenstore events land in
//! the middle of a step (a plug, an inflate, a deflate) rather than only
//! between steps.
//!
//! `arm("decrease_reservation", 0)` makes the next call of that service
//! block before it does anything; `wait_stalled` waits (bounded) until a
//! thread is held; `release` lets every held thread go on and disarms
//! every point. A held thread holds no simulator lock, only whatever
//! locks its own code took (a driver that held its softc lock across a
//! hypercall or a plug would keep every sysctl handler and watch callback
//! that wants that lock waiting until the release, as a slow hypercall
//! would on a real kernel; tests/sim/tests/locks.rs checks balloon.kmod
//! does not).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kernel::{park_forever, thread_is_frozen, CHANGED};

/// The services that can be stalled, as `sim stall` names them.
pub const POINTS: &[&str] = &[
    "decrease_reservation",
    "increase_reservation",
    "populate_physmap",
    "physseg_plug",
    "physseg_unplug",
    "p2m_grow",
    "growdirectmap",
    "pagealloc",
    "pglistalloc",
    "zero_page",
    "xenbus_read",
    // The kernel's control/shutdown handler, on the xenwatch thread: holds
    // every watch event queued after it (xenbus_xs.c xenwatch_thread).
    "shutdown_watch",
    // register_xenbus_watch, on entry: whoever registers (INIT) waits.
    "watch_register",
];

#[derive(Default)]
struct Stalls {
    /// Armed points: calls still to let through before blocking one.
    armed: BTreeMap<&'static str, u64>,
    /// Threads held now: (point, thread name).
    held: Vec<(&'static str, String)>,
    /// Bumped by `release`.
    epoch: u64,
}

static ANY_ARMED: AtomicBool = AtomicBool::new(false);
static STALLS: Mutex<Stalls> = Mutex::new(Stalls {
    armed: BTreeMap::new(),
    held: Vec::new(),
    epoch: 0,
});
static STALL_CV: Condvar = Condvar::new();

fn stalls() -> MutexGuard<'static, Stalls> {
    STALLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The canonical name of a point, if it is one.
pub fn point(name: &str) -> Option<&'static str> {
    POINTS.iter().copied().find(|p| *p == name)
}

/// Arms `name` (one of [`POINTS`]): `skip` calls go through, the next
/// one blocks until [`release`].
pub fn arm(name: &'static str, skip: u64) {
    let mut s = stalls();
    s.armed.insert(name, skip);
    ANY_ARMED.store(true, Ordering::SeqCst);
}

/// Lets every held thread go on and disarms every point.
pub fn release() {
    let mut s = stalls();
    s.armed.clear();
    s.epoch += 1;
    ANY_ARMED.store(false, Ordering::SeqCst);
    drop(s);
    STALL_CV.notify_all();
}

/// Points armed and threads held, for `sim stall`.
pub fn describe() -> String {
    let s = stalls();
    let mut out = String::new();
    for (p, skip) in &s.armed {
        out += &format!("armed {p} (after {skip} more calls)\n");
    }
    for (p, t) in &s.held {
        out += &format!("held {p}: thread {t}\n");
    }
    if out.is_empty() {
        out = "no stall points armed\n".into();
    }
    out
}

/// Waits at most `limit` until some thread is held; returns the held
/// threads as (point, thread name).
pub fn wait_stalled(limit: Duration) -> Vec<(&'static str, String)> {
    let deadline = Instant::now() + limit;
    let mut s = stalls();
    loop {
        if !s.held.is_empty() || Instant::now() >= deadline {
            return s.held.clone();
        }
        let step = deadline.saturating_duration_since(Instant::now());
        s = STALL_CV
            .wait_timeout(s, step)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Called on entry to a stallable service (before it takes the state
/// lock): blocks the caller here when `name` is armed and its turn has
/// come.
pub(crate) fn stall_point(name: &'static str) {
    if !ANY_ARMED.load(Ordering::SeqCst) {
        return;
    }
    let mut s = stalls();
    match s.armed.get_mut(name) {
        None => return,
        Some(skip) if *skip > 0 => {
            *skip -= 1;
            return;
        }
        Some(_) => {}
    }
    s.armed.remove(name);
    if s.armed.is_empty() {
        ANY_ARMED.store(false, Ordering::SeqCst);
    }
    let me = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string();
    s.held.push((name, me.clone()));
    let epoch = s.epoch;
    STALL_CV.notify_all();
    CHANGED.notify_all();
    while s.epoch == epoch {
        if thread_is_frozen() {
            drop(s);
            park_forever();
        }
        s = STALL_CV
            .wait_timeout(s, Duration::from_millis(50))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    if let Some(i) = s.held.iter().position(|(p, t)| *p == name && *t == me) {
        s.held.remove(i);
    }
}
