//! The FFI layer: the only place `unsafe` is allowed.
//!
//! - [`entry`]: the `balloon_rs_*` functions the C shim calls
//!   (netbsd-glue/glue.h), which own the core's state behind an opaque
//!   pointer;
//! - [`platform`]: [`crate::driver::Platform`] over the shim's
//!   `balloon_shim_*` wrappers (bindings from the `balloon-sys` crate);
//! - kernel builds only: a global allocator over kmem(9) and a panic
//!   handler that calls panic(9). Host builds use std's.
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
