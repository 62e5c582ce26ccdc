// SPDX-License-Identifier: BSD-2-Clause
//! Host tests only: a global allocator that counts the allocations of the
//! calling thread and can be told to fail the next ones, so tests assert
//! that a step allocates nothing and that a failed allocation at attach
//! or at plug is handled (`try_reserve` sees it; nothing panics).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use std::alloc::System;

std::thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static FAIL: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn note() -> bool {
    // try_with: during thread teardown the slots may be gone.
    let _ = COUNT.try_with(|c| c.set(c.get().saturating_add(1)));
    FAIL.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to the system allocator unchanged, except that it
// returns NULL (an allowed answer) while the calling thread asked for
// failures.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if note() {
            return core::ptr::null_mut();
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if note() {
            return core::ptr::null_mut();
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if note() {
            return core::ptr::null_mut();
        }
        // SAFETY: ptr came from this allocator (System) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations (and reallocations) this thread made while running `f`.
pub fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = COUNT.with(Cell::get);
    let r = f();
    (r, COUNT.with(Cell::get).saturating_sub(before))
}

/// Runs `f` without counting its allocations (a model's own work).
pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    let before = COUNT.with(Cell::get);
    let r = f();
    COUNT.with(|c| c.set(before));
    r
}

/// Runs `f` with every allocation of this thread failing.
pub fn failing<R>(f: impl FnOnce() -> R) -> R {
    FAIL.with(|x| x.set(true));
    let r = f();
    FAIL.with(|x| x.set(false));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_fails_this_threads_allocations() {
        let (v, n) = allocations(|| std::vec::Vec::<u64>::with_capacity(4));
        assert_eq!((v.capacity(), n), (4, 1));
        let mut w: std::vec::Vec<u64> = std::vec::Vec::new();
        assert!(failing(|| w.try_reserve(8)).is_err());
        assert!(w.try_reserve(8).is_ok());
    }
}
