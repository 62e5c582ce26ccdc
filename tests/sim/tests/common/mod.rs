// SPDX-License-Identifier: BSD-2-Clause
//! What the simulated-domU test files share: reading the module's sysctl
//! figures and waiting, bounded, for the worker to come to rest. Each
//! file keeps its own domain set-ups (they differ in mode, flavour and
//! sizes on purpose).
#![allow(dead_code)]

pub mod kernel;

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

/// `xl mem-set MIB`, then waits until the domain's memory (as xl counts
/// it) is the target and the worker has settled ([`settle`]).
pub fn mem_set(d: &Domain, mib: u64, wait: Duration) {
    d.xl_mem_set(mib * KIB_PER_MIB);
    assert!(
        d.wait_until(|v| v.memory() == mib * MIB, wait),
        "reservation {} pages, wanted {} ({})",
        d.memory(),
        mib * MIB,
        state(d)
    );
    settle(d, wait);
}

/// Runs each (case, message) of the file's `panic_child` test in a child
/// process of this test binary, with the case in the environment variable
/// `var`, and checks that the simulated kernel panicked saying `message`.
pub fn expect_kernel_panics(var: &str, cases: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("the test binary");
    for &(case, msg) in cases {
        let out = std::process::Command::new(&exe)
            .args(["panic_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(var, case)
            .output()
            .expect("the child test process");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: no panic\n{err}");
        assert!(
            err.contains("SIMULATED KERNEL PANIC") && err.contains(msg),
            "{case}: expected {msg:?}\n{err}"
        );
    }
}

/// With `real_zero`, after `mib` MiB were ballooned from the last boot
/// segment whose frames were memset to 0xa5: every frame given back reads
/// zero, a frame kept keeps its bytes, and no frame reached Xen unzeroed.
pub fn given_frames_read_zero(d: &Domain, mib: u64) {
    let (start, end) = *d.segments().last().expect("a boot segment");
    let gone: Vec<u64> = (start..end).filter(|&f| !d.frame_backed(f)).collect();
    assert_eq!(gone.len() as u64, mib * MIB, "{mib} MiB ballooned");
    for &f in &gone {
        assert_eq!(d.frame_memory_is(f, 0), Some(true), "frame {f:#x} zeroed");
    }
    let kept = (start..end)
        .find(|&f| d.frame_backed(f))
        .expect("a frame kept");
    assert_eq!(d.frame_memory_is(kept, 0xa5), Some(true));
    assert_eq!(d.dirty_frames_given(), 0);
}
