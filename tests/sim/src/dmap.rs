// SPDX-License-Identifier: BSD-2-Clause
//! The amd64 direct map of a PVH domain, as the module sees it
//! (docs/kernel-interfaces.md §4).
//!
//! Real kernel: a GENERIC amd64 kernel (x86_64, not XENPV, KASAN or
//! KMSAN: amd64/types.h 1.71 `__HAVE_DIRECT_MAP`) maps all physical
//! memory at boot at `pmap_direct_base`, up to `pmap_direct_end`, both
//! globals of the kernel (x86/pmap.c 1.414 `pmap_init_directmap`:
//! `endva = startva + lastpa`, `pmap_direct_end = endva`, a virtual
//! address), and `PMAP_DIRECT_MAP(pa)` is `pmap_direct_base + pa`
//! (x86/pmap.h 1.134). Its `pmap_zero_page(pa)` is
//! `memset(PMAP_DIRECT_MAP(pa), 0, PAGE_SIZE)` (pmap.c 1.414). A write at
//! or past `pmap_direct_end` faults. A module is not built with
//! `_KERNEL_OPT`, so it never sees `__HAVE_DIRECT_MAP`; it finds the two
//! variables with `ksyms_getval` (ksync.rs), which answers for PVH
//! domains whose kernel has a direct map (stock GENERIC and the assisted
//! flavour alike; not `DomainConfig::no_direct_map`, a KASAN kernel) and
//! never for PV (XENPV has none).
//!
//! The model: the direct map is [`DMAP_BASE`, `DMAP_BASE` + 4 TiB), a
//! range of the kernel half of the address space, which a host process
//! never has mapped, so any access through it other than the module's
//! `memset` (which the simulator's header routes to
//! [`sim_kernel_memset`]) crashes the process. `pmap_direct_end` is
//! `DMAP_BASE` plus the model's direct-map end (growth.rs, grown by
//! `pmap_growdirectmap` on the assisted flavour), republished whenever it
//! changes. A memset through the map applies to every frame of the range
//! the rules every zeroing follows (`Kernel::zeroing_rules`: PoD populate,
//! the direct-map end; then the frame holds the bytes; a frame not backed
//! panics), all under one state lock, then writes the `real_zero` window
//! with one `frame_mem_fill` for the run.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Mode;
use crate::kernel::{kernel_panic, with, Kernel, MAX_GPFN, PAGE_SHIFT, PAGE_SIZE};

/// Where the model's direct map begins: in the kernel half of the
/// canonical address space, which no host process has mapped.
pub(crate) const DMAP_BASE: u64 = 0xffff_a000_0000_0000;
/// Bytes of virtual space the model's direct map can ever take.
const DMAP_SPAN: u64 = MAX_GPFN << PAGE_SHIFT;

/// The kernel's `pmap_direct_base` and `pmap_direct_end` (vaddr_t);
/// ksyms_getval hands out their addresses.
pub(crate) static PMAP_DIRECT_BASE: AtomicU64 = AtomicU64::new(DMAP_BASE);
pub(crate) static PMAP_DIRECT_END: AtomicU64 = AtomicU64::new(DMAP_BASE);

/// memsets through the direct map, and the frames they wrote.
static DMAP_WRITES: AtomicU64 = AtomicU64::new(0);
static DMAP_FRAMES: AtomicU64 = AtomicU64::new(0);
/// pmap_zero_page calls (uvm.rs).
pub(crate) static ZERO_PAGE_CALLS: AtomicU64 = AtomicU64::new(0);

/// Domain boot: clears the counts, publishes the boot end.
pub(crate) fn boot(direct_end: u64) {
    DMAP_WRITES.store(0, Ordering::SeqCst);
    DMAP_FRAMES.store(0, Ordering::SeqCst);
    ZERO_PAGE_CALLS.store(0, Ordering::SeqCst);
    publish_end(direct_end);
}

/// Publishes the model's direct-map end (a frame) as `pmap_direct_end`,
/// with the release store kernel-growth.md 5.1 asks of
/// `pmap_growdirectmap`.
pub(crate) fn publish_end(direct_end: u64) {
    PMAP_DIRECT_END.store(
        DMAP_BASE + direct_end.min(MAX_GPFN) * PAGE_SIZE,
        Ordering::Release,
    );
}

/// (memsets through the direct map, frames they wrote, pmap_zero_page
/// calls) for `sim stat`.
pub(crate) fn counts() -> (u64, u64, u64) {
    (
        DMAP_WRITES.load(Ordering::SeqCst),
        DMAP_FRAMES.load(Ordering::SeqCst),
        ZERO_PAGE_CALLS.load(Ordering::SeqCst),
    )
}

/// Whether ksyms has `pmap_direct_base` / `pmap_direct_end` for this
/// kernel: PVH with a direct map (amd64/types.h 1.71).
pub(crate) fn has_direct_map(k: &Kernel) -> bool {
    k.cfg.mode == Mode::Pvh && !k.cfg.no_direct_map
}

/// memset(9) as the module calls it (the simulator's header routes the
/// shim's memset here): a destination inside the direct map writes
/// guest frames, under the rules above; any other is the host's memset.
///
/// # Safety
/// As memset: outside the direct map, `d` points to `n` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn sim_kernel_memset(d: *mut c_void, c: c_int, n: usize) -> *mut c_void {
    let va = d as u64;
    if va >= DMAP_BASE && va - DMAP_BASE < DMAP_SPAN {
        direct_map_fill(va - DMAP_BASE, c as u8, n as u64);
    } else if n != 0 {
        // SAFETY: the caller's n writable bytes at d, as memset(3).
        unsafe { std::ptr::write_bytes(d as *mut u8, c as u8, n) };
    }
    d
}

/// A memset of `len` bytes at physical address `pa` through the direct
/// map.
fn direct_map_fill(pa: u64, byte: u8, len: u64) {
    if !pa.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        kernel_panic(&format!(
            "memset through the direct map at pa {pa:#x}, {len} bytes: the model \
             writes whole frames only"
        ));
    }
    let _t = crate::prof::Timer::start(crate::prof::Point::ZeroPage);
    let (pfn, n) = (pa >> PAGE_SHIFT, len >> PAGE_SHIFT);
    with(|k| {
        if !has_direct_map(k) {
            kernel_panic(&format!(
                "memset through the direct map at pa {pa:#x} in a kernel without one: \
                 fatal page fault"
            ));
        }
        let end = (PMAP_DIRECT_END.load(Ordering::Acquire) - DMAP_BASE) >> PAGE_SHIFT;
        if pfn + n > end {
            kernel_panic(&format!(
                "memset through the direct map of frames [{pfn:#x}, {:#x}) past \
                 pmap_direct_end (frame {end:#x}): fatal page fault",
                pfn + n
            ));
        }
        for f in pfn..pfn + n {
            k.zeroing_rules(f);
            if !k.write_frame(f, byte != 0) {
                kernel_panic(&format!(
                    "memset through the direct map: frame {f:#x} is not backed"
                ));
            }
        }
        DMAP_WRITES.fetch_add(1, Ordering::Relaxed);
        DMAP_FRAMES.fetch_add(n, Ordering::Relaxed);
    });
    crate::uvm::frame_mem_fill(pfn, n, byte);
}
