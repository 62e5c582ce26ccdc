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
mod dmap;
mod domain;
mod frames;
mod growth;
mod kernel;
mod ksync;
mod pod;
pub mod prof;
pub mod regex;
mod saverestore;
pub mod soak;
pub mod stall;
mod sysctl;
mod uvm;
mod xen;

/// The Rust core's own allocations go through the simulated kernel's
/// kmem(9), as in balloon.kmod, so that kmem accounting and leak checks
/// see them (balloon's `sim-kmem` feature; src/ffi/host_kmem.rs). Every
/// other allocation of a program linking the simulator goes to the
/// system allocator.
#[global_allocator]
static CORE_KMEM: balloon::ffi::HostKmemAllocator = balloon::ffi::HostKmemAllocator;

pub use config::{DomainConfig, Faults, Flavour, MemOp, Mode, MAX_BOOT_BYTES, MAX_MAX_BYTES};
pub use domain::balloon_module;
pub use domain::RESERVED_BELOW_4G;
pub use domain::{
    test_module, Domain, FaultsMut, SimModinfo, Snapshot, View, XlError, LIBXL_MAXMEM_PAGES,
};
pub use growth::{GrowthCalls, GrowthStats};
pub use kernel::{KGlobal, ModelBytes, StartInfo, Uvmexp};
pub use pod::PodStats;
pub use saverestore::SaveReport;
pub use sysctl::SysctlValue;
pub use uvm::SlabStats;

/// The exported kernel globals (also reachable from C by these names).
pub mod globals {
    pub use crate::kernel::{
        hz, physmem, uvmexp, vm_guest, xen_start_info, xpmap_phys_to_machine_mapping,
    };
}
