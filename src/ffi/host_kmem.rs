// SPDX-License-Identifier: BSD-2-Clause
//! Host builds with the `sim-kmem` feature (balloon-sim): the core's heap
//! goes through the simulated kernel's kmem(9), as it does in
//! balloon.kmod (see `kmem_alloc.rs`), so that the simulator's kmem
//! accounting and leak checks see the Rust core's allocations too.
//!
//! A global allocator is process-wide: in a host process it also serves
//! the test harness, the simulator and everything else. So it routes an
//! allocation to kmem only when it is made by the core itself: on a thread
//! inside a `balloon_rs_*` entry point ([`CoreContext`]) and not inside a
//! call out to the shim ([`ShimCall`]: the simulated kernel's own
//! allocations are its business). Everything else goes to the system
//! allocator. Every block carries a tag below it saying where it came
//! from, so it is freed where it was allocated whichever thread frees it.
//! Routing is switched on by the simulator while a domain is booted
//! ([`route_core_allocations_to_kmem`]), with the shim's
//! `balloon_shim_kmem_alloc` and `_free` as the way in. They are handed
//! over at run time rather than named here, so that host programs without
//! the simulated kernel (the core's own tests) still link.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};

use cty::c_void;
use std::alloc::System;

/// `balloon_shim_kmem_alloc`: a block of the size, 8-byte aligned.
pub type KmemAlloc = unsafe extern "C" fn(usize) -> *mut c_void;
/// `balloon_shim_kmem_free`: frees a block with the size it was given.
pub type KmemFree = unsafe extern "C" fn(*mut c_void, usize);

/// Bytes below every object: the raw block pointer, then the tag.
const HEADER: usize = 16;
const TAG_SYSTEM: usize = 0x5359_5354;
const TAG_KMEM: usize = 0x4b4d_454d;

/// The KmemAlloc in use, or 0: allocations go to the system.
static ALLOC_FN: AtomicUsize = AtomicUsize::new(0);
/// The KmemFree for blocks tagged kmem (kept once set).
static FREE_FN: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Depth of `balloon_rs_*` entry points on this thread.
    static IN_CORE: Cell<u32> = const { Cell::new(0) };
    /// Inside a call to the shim (or to kmem itself).
    static IN_SHIM: Cell<bool> = const { Cell::new(false) };
}

/// Routes the core's allocations through `hooks` (the shim's kmem
/// wrappers) or, with None, to the system allocator. Only allocations
/// made after the switch are affected; each block is freed where it came
/// from.
pub fn route_core_allocations_to_kmem(hooks: Option<(KmemAlloc, KmemFree)>) {
    match hooks {
        Some((a, f)) => {
            FREE_FN.store(f as usize, Ordering::SeqCst);
            ALLOC_FN.store(a as usize, Ordering::SeqCst);
        }
        None => ALLOC_FN.store(0, Ordering::SeqCst),
    }
}

/// Marks the calling thread as running the core (an entry point) while
/// the value lives.
pub(crate) struct CoreContext;

impl CoreContext {
    pub(crate) fn enter() -> CoreContext {
        let _ = IN_CORE.try_with(|c| c.set(c.get().saturating_add(1)));
        CoreContext
    }
}

impl Drop for CoreContext {
    fn drop(&mut self) {
        let _ = IN_CORE.try_with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Marks a call out of the core into the shim (the kernel) while the
/// value lives: allocations made there are not the core's.
pub(crate) struct ShimCall(bool);

impl ShimCall {
    pub(crate) fn enter() -> ShimCall {
        ShimCall(IN_SHIM.try_with(|s| s.replace(true)).unwrap_or(true))
    }
}

impl Drop for ShimCall {
    fn drop(&mut self) {
        let before = self.0;
        let _ = IN_SHIM.try_with(|s| s.set(before));
    }
}

/// The kmem allocator to use for this allocation, if it is the core's.
fn core_allocator() -> Option<KmemAlloc> {
    let a = ALLOC_FN.load(Ordering::SeqCst);
    if a == 0
        || !IN_CORE.try_with(|c| c.get() > 0).unwrap_or(false)
        || IN_SHIM.try_with(|s| s.get()).unwrap_or(true)
    {
        return None;
    }
    // SAFETY: a non-zero ALLOC_FN was stored from a KmemAlloc.
    Some(unsafe { core::mem::transmute::<usize, KmemAlloc>(a) })
}

/// The allocator: the program that wants the routing (balloon-sim)
/// installs it with `#[global_allocator]`; this crate does not, so that
/// programs with an allocator of their own (the bookkeeping bench) still
/// build when the feature is on.
pub struct HostKmemAllocator;

/// The alignment of an object and of the space below it.
fn align_of(layout: Layout) -> usize {
    layout.align().max(HEADER)
}

/// The system block behind an object: the object sits `align` bytes in.
fn system_layout(layout: Layout) -> Option<Layout> {
    let align = align_of(layout);
    Layout::from_size_align(layout.size().checked_add(align)?, align).ok()
}

/// Bytes asked of kmem (8-byte aligned) so that an aligned object with
/// its header fits.
fn kmem_size(layout: Layout) -> Option<usize> {
    layout
        .size()
        .checked_add(align_of(layout))?
        .checked_add(HEADER)
}

/// Writes the header below `obj`.
///
/// # Safety
/// `obj - HEADER .. obj` lies inside the block starting at `raw`, and
/// `obj` is at least 16-aligned.
unsafe fn write_header(obj: *mut u8, raw: *mut u8, tag: usize) {
    // SAFETY: per the contract; both words are 8-aligned.
    unsafe {
        obj.sub(HEADER).cast::<usize>().write(raw as usize);
        obj.sub(HEADER / 2).cast::<usize>().write(tag);
    }
}

/// An object of `layout` in a block from the system allocator (zero-filled
/// by it when `zeroed`), its header below it; NULL when there is none.
fn system_object(layout: Layout, zeroed: bool) -> *mut u8 {
    let Some(sys) = system_layout(layout) else {
        return core::ptr::null_mut();
    };
    // SAFETY: sys has a non-zero size.
    let raw = unsafe {
        if zeroed {
            System.alloc_zeroed(sys)
        } else {
            System.alloc(sys)
        }
    };
    if raw.is_null() {
        return raw;
    }
    let obj = raw.wrapping_add(align_of(layout));
    // SAFETY: the block has `align >= HEADER` bytes below obj and `size`
    // bytes from it; obj is aligned to `align`. The header lies below the
    // object, so a zeroed object stays zero.
    unsafe { write_header(obj, raw, TAG_SYSTEM) };
    obj
}

// SAFETY: every pointer returned is NULL or an object of at least
// `layout.size()` bytes aligned to `layout.align()`, inside a block from
// the system allocator or from kmem; `dealloc` reads the header `alloc`
// wrote and frees that block with the size it was allocated with.
unsafe impl GlobalAlloc for HostKmemAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let align = align_of(layout);
        if let Some(kmem_alloc) = core_allocator() {
            let Some(total) = kmem_size(layout) else {
                return core::ptr::null_mut();
            };
            let guard = ShimCall::enter();
            // SAFETY: total is non-zero; the shim returns NULL (KM_NOSLEEP
            // with memory short) or an 8-aligned block of `total` bytes.
            let raw = unsafe { kmem_alloc(total) }.cast::<u8>();
            drop(guard);
            if raw.is_null() {
                return raw;
            }
            let first = raw as usize + HEADER;
            let obj_addr = (first + align - 1) & !(align - 1);
            let obj = raw.wrapping_add(obj_addr - raw as usize);
            // SAFETY: obj - HEADER >= raw, obj + size <= raw + total, and
            // obj is aligned to at least 16.
            unsafe { write_header(obj, raw, TAG_KMEM) };
            return obj;
        }
        system_object(layout, false)
    }

    /// As `alloc`, zero-filled. A system block comes from the system's
    /// own zeroing allocation (calloc), which leaves a large block to
    /// the host's zero pages instead of writing it: the simulator's
    /// vm_page arrays cost host memory only where they are written.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if core_allocator().is_some() {
            // SAFETY: the caller's layout, passed on.
            let obj = unsafe { self.alloc(layout) };
            if !obj.is_null() {
                // SAFETY: `alloc` returned `layout.size()` writable bytes.
                unsafe { core::ptr::write_bytes(obj, 0, layout.size()) };
            }
            return obj;
        }
        system_object(layout, true)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `alloc` wrote the header below every object it returned.
        let (raw, tag) = unsafe {
            (
                ptr.sub(HEADER).cast::<usize>().read() as *mut u8,
                ptr.sub(HEADER / 2).cast::<usize>().read(),
            )
        };
        if tag == TAG_KMEM {
            let f = FREE_FN.load(Ordering::SeqCst);
            let Some(total) = kmem_size(layout).filter(|_| f != 0) else {
                return;
            };
            // SAFETY: FREE_FN was stored from a KmemFree before any block
            // was tagged kmem, and is never cleared.
            let kmem_free = unsafe { core::mem::transmute::<usize, KmemFree>(f) };
            let _guard = ShimCall::enter();
            // SAFETY: raw is the kmem block `alloc` got with `total` bytes.
            unsafe { kmem_free(raw.cast::<c_void>(), total) };
            return;
        }
        if let Some(sys) = system_layout(layout) {
            // SAFETY: raw is the system block `alloc` got with `sys`.
            unsafe { System.dealloc(raw, sys) };
        }
    }
}
