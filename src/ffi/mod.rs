//! The FFI layer: the only place `unsafe` is allowed.
//!
//! - [`entry`]: the `balloon_rs_*` functions the C shim calls
//!   (netbsd-glue/glue.h), which own the core's state behind an opaque
//!   pointer;
//! - [`platform`]: [`crate::driver::Platform`] over the shim's
//!   `balloon_shim_*` wrappers (bindings from the `balloon-sys` crate);
//! - kernel builds only: a global allocator over kmem(9) and a panic
//!   handler that calls panic(9). Host builds use std's panic handler;
//!   with the `sim-kmem` feature (balloon-sim) the core's own
//!   allocations go through the simulated kernel's kmem(9) as well
//!   ([`route_core_allocations_to_kmem`]).
//!
//! The same entry points and platform run in the kernel and, linked with
//! the shim and the simulated kernel, in the host tests.

pub mod entry;
pub mod platform;

#[cfg(target_os = "none")]
mod kernel_panic;
#[cfg(target_os = "none")]
mod kmem_alloc;

#[cfg(test)]
pub mod test_alloc;

#[cfg(all(feature = "sim-kmem", not(target_os = "none")))]
mod host_kmem;
#[cfg(all(feature = "sim-kmem", not(target_os = "none")))]
pub use host_kmem::{route_core_allocations_to_kmem, HostKmemAllocator, KmemAlloc, KmemFree};

/// Marks the calling thread as running the core while it lives (an entry
/// point): the core's allocations are then its own (see `host_kmem`).
/// Nothing to do in other builds.
#[cfg(all(feature = "sim-kmem", not(target_os = "none")))]
pub(crate) use host_kmem::CoreContext;
/// Marks a call from the core into the shim while it lives.
#[cfg(all(feature = "sim-kmem", not(target_os = "none")))]
pub(crate) use host_kmem::ShimCall;

#[cfg(not(all(feature = "sim-kmem", not(target_os = "none"))))]
pub(crate) struct CoreContext;
#[cfg(not(all(feature = "sim-kmem", not(target_os = "none"))))]
impl CoreContext {
    pub(crate) fn enter() -> CoreContext {
        CoreContext
    }
}
#[cfg(not(all(feature = "sim-kmem", not(target_os = "none"))))]
pub(crate) struct ShimCall;
#[cfg(not(all(feature = "sim-kmem", not(target_os = "none"))))]
impl ShimCall {
    pub(crate) fn enter() -> ShimCall {
        ShimCall
    }
}
