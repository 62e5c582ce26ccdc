//! The FFI layer: the only place `unsafe` is allowed.
//!
//! Kernel builds only (`target_os = "none"`): a global allocator over the
//! shim's kmem wrappers and a panic handler that hands the message to the
//! kernel's `panic(9)`. The entry points the shim calls join this module
//! with the C shim (see netbsd-glue/glue.h).

mod alloc;
mod panic;
