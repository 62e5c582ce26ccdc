//! The Rust core of balloon.kmod, the Xen memory balloon driver for
//! NetBSD domUs.
//!
//! Everything here decides; nothing here does I/O. The C shim in
//! `netbsd-glue/` (or the simulated domU in `tests/`) carries out the
//! [`worker::Action`]s this crate returns and reports what happened. The
//! core is `no_std` + `alloc` so the same code links into `balloon.kmod`
//! and runs in host tests.
//!
//! Module map, one concept each:
//! - [`units`]: pages, KiB, bytes, frame numbers and frame ranges.
//! - [`frameset`]: the frame stores: a bitmap for ballooned frames, a
//!   fixed list of runs for frames a failed plug left backed.
//! - [`segments`]: the domain's frame space, segment by segment, and the
//!   state of every frame in it.
//! - [`policy`]: targets, floor, maximum, batch size, low-memory guard.
//! - [`backoff`]: when to retry after a short or failed step.
//! - [`worker`]: the state machine that turns events into actions.
//! - [`driver`]: carries actions out through a `Platform` (the kernel
//!   in balloon.kmod, a model in tests), undoing what did not happen.
//! - [`ratelimit`]: a budget for kernel log lines.
//! - [`stats`]: counters the driver reports.
//! - [`errno`]: the error numbers shared with the kernel.
//! - [`sort`]: an in-place sort with a bounded stack (no recursion).
//!
//! `unsafe` is forbidden here except in the FFI layer ([`ffi`]).

#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

// Host builds (tests, the simulated domU, the host staticlib) link std
// for its allocator and panic handler only; no module names `std`, and
// the `x86_64-unknown-none` build in CI proves no std use leaked in.
#[cfg(not(target_os = "none"))]
extern crate std;

pub mod backoff;
pub mod driver;
pub mod errno;
pub mod frameset;
pub mod logline;
pub mod policy;
pub mod ratelimit;
pub mod segments;
pub mod sort;
pub mod stats;
pub mod units;
pub mod worker;

#[allow(unsafe_code)]
pub mod ffi;
