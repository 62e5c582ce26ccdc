// SPDX-License-Identifier: BSD-2-Clause
//! What the simulated-domU test files share: reading the module's sysctl
//! figures and waiting, bounded, for the worker to come to rest. Each
//! file keeps its own domain set-ups (they differ in mode, flavour and
//! sizes on purpose).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use balloon_sim::{Domain, SysctlValue};

/// Pages per MiB.
pub const MIB: u64 = 256;
/// KiB per MiB (what `xl mem-set` and `hw.balloon.*` count in).
pub const KIB_PER_MIB: u64 = 1024;

/// A quad sysctl of the module; panics on anything else.
pub fn quad(d: &Domain, name: &str) -> u64 {
    match d.sysctl_read(name) {
        Ok(SysctlValue::Quad(v)) => u64::try_from(v).expect("non-negative"),
        other => panic!("{name}: {other:?}"),
    }
}

/// `hw.balloon.state`.
pub fn state(d: &Domain) -> String {
    match d.sysctl_read("hw.balloon.state") {
        Ok(SysctlValue::String(s)) => s,
        other => panic!("hw.balloon.state: {other:?}"),
    }
}

/// Whether a state is one the worker rests in.
pub fn at_rest(s: &str) -> bool {
    s == "idle" || s.starts_with("cancelled") || s.starts_with("clipped")
}

/// Waits, at most `wait`, until `done` holds for the state; panics with
/// the last state otherwise.
pub fn wait_for_state(d: &Domain, wait: Duration, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + wait;
    loop {
        let s = state(d);
        if done(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "worker still busy: {s}");
        d.wait_until(|_| false, Duration::from_millis(2));
    }
}

/// Waits until every watch event written so far was delivered and the
/// worker is at rest.
pub fn settle(d: &Domain, wait: Duration) {
    assert!(d.wait_until(|v| v.watches_quiet(), wait));
    wait_for_state(d, wait, at_rest);
}
