// SPDX-License-Identifier: BSD-2-Clause
//! Time spent in the simulator's stand-ins, for the stack benchmark's
//! profile (perf is not available here). Off by default: then each timed
//! stand-in pays one relaxed atomic load. On, each call reads the clock
//! twice (tens of ns), so the benchmark times its runs with it off and
//! takes the profile in a run of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The stand-ins that are timed, as the profile names them.
#[derive(Clone, Copy, Debug)]
pub enum Point {
    PageAlloc,
    PageFree,
    ZeroPage,
    MemoryOp,
}

const NAMES: [&str; 4] = [
    "uvm_pagealloc",
    "uvm_pagefree",
    "zeroing (PVH: pmap_zero_page or direct-map memset; PV: MMUEXT_CLEAR_PAGE calls)",
    "HYPERVISOR_memory_op",
];

static ON: AtomicBool = AtomicBool::new(false);
static CALLS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static NANOS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Turns timing on or off and clears the figures.
pub fn enable(on: bool) {
    for i in 0..NAMES.len() {
        CALLS[i].store(0, Ordering::SeqCst);
        NANOS[i].store(0, Ordering::SeqCst);
    }
    ON.store(on, Ordering::SeqCst);
}

/// (stand-in, calls, total ns) since `enable`.
pub fn figures() -> Vec<(&'static str, u64, u64)> {
    (0..NAMES.len())
        .map(|i| {
            (
                NAMES[i],
                CALLS[i].load(Ordering::SeqCst),
                NANOS[i].load(Ordering::SeqCst),
            )
        })
        .collect()
}

/// Times one call of a stand-in while it lives (when timing is on).
pub(crate) struct Timer(Option<(Point, Instant)>);

impl Timer {
    pub(crate) fn start(p: Point) -> Timer {
        Timer(ON.load(Ordering::Relaxed).then(|| (p, Instant::now())))
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some((p, t)) = self.0 {
            let i = p as usize;
            CALLS[i].fetch_add(1, Ordering::Relaxed);
            NANOS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}
