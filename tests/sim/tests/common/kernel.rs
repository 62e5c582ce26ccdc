// SPDX-License-Identifier: BSD-2-Clause
//! The simulated kernel's C entry points that tests call directly, as a
//! driver would, declared once: the vm_page, the Xen reservation call and
//! the symbol lookup.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};

/// The simulated `struct vm_page`: its queue entry only (the model keeps
/// a frame's state elsewhere; `sim_vm_page_frame` gives its frame).
#[repr(C)]
pub struct VmPage {
    pub next: *mut VmPage,
    pub prev: *mut *mut VmPage,
}

/// `struct xen_memory_reservation` (memory.h; x86_64 offsets 0/8/16/20/24).
#[repr(C)]
struct Resv {
    ext: *mut u64,
    n: u64,
    order: c_uint,
    flags: c_uint,
    domid: u16,
}

pub const DOMID_SELF: u16 = 0x7ff0;
/// XENMEM_* commands.
pub const INCREASE: c_uint = 0;
pub const DECREASE: c_uint = 1;
pub const POPULATE: c_uint = 6;

extern "C" {
    pub fn HYPERVISOR_memory_op(cmd: c_uint, arg: *mut c_void) -> c_int;
    pub fn xpq_queue_machphys_update(ma: u64, pa: u64);
    pub fn xpq_flush_queue();
    pub fn kpreempt_disable();
    pub fn kpreempt_enable();
    pub fn uvm_physseg_plug(pfn: u64, n: usize, out: *mut c_void) -> bool;
    pub fn pmap_zero_page(pa: u64);
    pub fn uvm_phys_to_vm_page(pa: u64) -> *mut VmPage;
    pub fn sim_vm_page_frame(pg: *const VmPage) -> u64;
    pub fn uvm_pagealloc_strat(
        o: *mut c_void,
        off: i64,
        a: *mut c_void,
        flags: c_int,
        s: c_int,
        fl: c_int,
    ) -> *mut VmPage;
    pub fn ksyms_getval(m: *const c_char, s: *const c_char, v: *mut c_ulong, f: c_int) -> c_int;
}

/// A reservation call (`cmd` one of the XENMEM_* above) over `ext`.
pub fn memop(cmd: c_uint, ext: &mut [u64], domid: u16, order: c_uint) -> c_int {
    let mut r = Resv {
        ext: ext.as_mut_ptr(),
        n: ext.len() as u64,
        order,
        flags: 0,
        domid,
    };
    // SAFETY: a valid reservation struct and extent array.
    unsafe { HYPERVISOR_memory_op(cmd, &mut r as *mut Resv as *mut c_void) }
}

/// The address ksyms gives for a name of the kernel's table ("netbsd"),
/// if it has one.
pub fn ksym(name: &CStr) -> Option<c_ulong> {
    let mut v: c_ulong = 0;
    // SAFETY: NUL-terminated names and a writable out-parameter.
    let e = unsafe { ksyms_getval(c"netbsd".as_ptr(), name.as_ptr(), &mut v, 0) };
    (e == 0).then_some(v)
}
