// SPDX-License-Identifier: BSD-2-Clause
//! balloon-sim: the simulated NetBSD/Xen domU that balloon.kmod's C shim
//! and Rust core run in on Linux.
//!
//! This crate defines every function and variable declared in
//! `tests/sim/include/balloon_host_kernel.h`, modelling the real rules of
//! the NetBSD kernel (UVM pages and physical segments, kmem, sysctl,
//! kthreads, mutex/condvar, clock, modules) and of Xen (reservation,
//! max_pages, host memory, MFNs, PV p2m/m2p, PVH gpfns, xenstore and
//! watches), as researched in docs/kernel-interfaces.md. A broken kernel
//! rule is a simulated kernel panic: the message goes to dmesg and stderr
//! and the process aborts.
//!
//! Tests boot a [`Domain`], load a module ([`Domain::modload`]), drive it
//! through xenstore and sysctl, inject [`Faults`], and check invariants
//! ([`Domain::check`]).

#![deny(unsafe_op_in_unsafe_fn)]

mod config;
pub mod control;
pub mod daemon;
mod domain;
mod kernel;
mod ksync;
mod sysctl;
mod uvm;
mod xen;

pub use config::{DomainConfig, Faults, Flavour, Mode};
pub use domain::balloon_module;
pub use domain::RESERVED_BELOW_4G;
pub use domain::{test_module, Domain, FaultsMut, SimModinfo, View, XlError, LIBXL_MAXMEM_PAGES};
pub use kernel::{KGlobal, StartInfo, Uvmexp};
pub use sysctl::SysctlValue;
pub use uvm::SlabStats;

/// The exported kernel globals (also reachable from C by these names).
pub mod globals {
    pub use crate::kernel::{
        hz, physmem, uvmexp, vm_guest, xen_start_info, xpmap_phys_to_machine_mapping,
    };
}
