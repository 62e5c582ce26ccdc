// SPDX-License-Identifier: BSD-2-Clause
//! Xen: memory reservation hypercalls, the PV p2m/m2p, xenstore and xenbus
//! watches (docs/kernel-interfaces.md §3-5; Xen public memory.h @946c9ff4).

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::thread::JoinHandle;

use crate::config::{fail_now, MemOp, Mode};
use crate::kernel::{
    adopt_thread, kernel_panic, lock, with, E820Entry, Kernel, CHANGED, INVALID_P2M_ENTRY,
    MAX_GPFN, PAGE_SHIFT, PG_MODULE, WATCHQ,
};
use crate::stall::stall_point;

const DOMID_SELF: u16 = 0x7FF0;
const XENMEM_INCREASE: c_uint = 0;
const XENMEM_DECREASE: c_uint = 1;
const XENMEM_CURRENT: c_uint = 3;
const XENMEM_MAXIMUM: c_uint = 4;
const XENMEM_POPULATE: c_uint = 6;
const XENMEM_MEMORY_MAP: c_uint = 9;
const EFAULT: c_int = 14;
const ESRCH: c_int = 3;
const ENOSYS: c_int = 38;
const ENOENT: c_int = 2;
const ERANGE: c_int = 34;
const EEXIST: c_int = 17;
/// CONFIG_DOMU_MAX_ORDER on x86 (PAGETABLE_ORDER; xen/arch/x86/include/
/// asm/config.h @c447b730): the largest extent_order a domU may use.
const DOMU_MAX_ORDER: c_uint = 9;

/// `struct xen_memory_reservation` (x86_64 offsets 0/8/16/20/24, size 32).
#[repr(C)]
struct XenMemoryReservation {
    extent_start: *mut u64,
    nr_extents: u64,
    extent_order: c_uint,
    mem_flags: c_uint,
    domid: u16,
}

impl Kernel {
    /// A fresh MFN from the host allocator (never reused), zero-filled.
    fn host_alloc(&mut self) -> u64 {
        let m = self.next_mfn;
        self.next_mfn += 1;
        self.host_free -= 1;
        self.tot_pages += 1;
        m
    }

    /// Backs the boot frames [pfn, pfn + n) (PV: MFNs + p2m + m2p; PVH:
    /// populated), holding data when `data`.
    pub(crate) fn boot_back(&mut self, pfn: u64, n: u64, data: bool) {
        let keys = match self.mode() {
            Mode::Pv => {
                let m = self.next_mfn;
                self.next_mfn += n;
                self.tot_pages += n;
                for i in 0..n {
                    self.owned.insert(m + i, pfn + i);
                    self.p2m_set(pfn + i, m + i);
                }
                m
            }
            Mode::Pvh => {
                self.tot_pages += n;
                self.populated.insert_range(pfn, pfn + n);
                pfn
            }
            Mode::NotXen => pfn,
        };
        if data {
            self.data.insert_range(keys, keys + n);
        }
    }

    /// Records a frame given back to Xen (its content kept under `key`);
    /// checks the guest owned its page.
    fn release(&mut self, pfn: Option<u64>, key: u64) {
        if self.data.remove(key) {
            self.dirty_given += 1;
        } else {
            self.clean_given += 1;
        }
        self.tot_pages -= 1;
        self.host_free += 1;
        if let Some(pfn) = pfn {
            if let Some(st) = self.page_state(pfn) {
                if st != PG_MODULE {
                    kernel_panic(&format!(
                        "frame {pfn:#x} given to Xen while {} in UVM (not owned by the driver)",
                        crate::uvm::state_name(st)
                    ));
                }
            }
        }
    }

    /// Extents a call may complete given max_pages, host memory and a limit.
    fn grow_room(&self, limit: Option<u64>) -> u64 {
        let room = self
            .max_pages
            .saturating_sub(self.tot_pages)
            .min(self.host_free);
        limit.map_or(room, |l| room.min(l))
    }

    /// A fresh run of `1 << order` contiguous MFNs, aligned to its size
    /// (Xen's buddy allocator: alloc_domheap_pages(d, order, ..) in
    /// xen/common/page_alloc.c @c447b730 hands out naturally aligned
    /// chunks). MFNs are never reused, so skipping to the alignment is
    /// free.
    fn host_alloc_extent(&mut self, order: u32) -> u64 {
        let n = 1u64 << order;
        self.next_mfn = self.next_mfn.next_multiple_of(n);
        let first = self.next_mfn;
        for _ in 0..n {
            self.host_alloc();
        }
        first
    }

    // Extents above order 0 (xen/common/memory.c @c447b730,
    // increase_reservation / populate_physmap / decrease_reservation):
    // - an order above max_order() is refused before anything is done
    //   (nr_done 0); a domU's max_order is domu_max_order,
    //   CONFIG_DOMU_MAX_ORDER = PAGETABLE_ORDER = 9 on x86
    //   (xen/arch/x86/include/asm/config.h), changed only by the
    //   `memop-max-order` boot option (docs/misc/xen-command-line.pandoc);
    // - nr_done counts extents: an extent either is done whole or stops
    //   the call;
    // - increase_reservation / populate_physmap allocate each extent with
    //   alloc_domheap_pages(d, order): naturally aligned contiguous MFNs,
    //   refused past max_pages counted in pages (assign_pages in
    //   page_alloc.c: "Over-allocation") or when the host has no free
    //   chunk of that order although it has the pages (fault
    //   `superpage_fail_after`);
    // - populate_physmap maps gfn..gfn+2^order (guest_physmap_add_page ->
    //   p2m_set_entry in xen/arch/x86/mm/p2m.c @c447b730 splits an
    //   unaligned gfn into 4 KiB entries instead of refusing it: the
    //   simulator accepts it too and counts it in `unaligned_superpages`,
    //   a superpage lost);
    // - decrease_reservation removes gmfn+j for j < 2^order one at a time
    //   (guest_remove_page); the first that fails ends the call with that
    //   extent NOT counted, although its leading pages are already gone
    //   (PV: gmfn is an MFN, so the extent must be 2^order contiguous
    //   MFNs the domain owns).
    fn reservation_op(&mut self, cmd: c_uint, r: &XenMemoryReservation) -> c_int {
        if r.domid != DOMID_SELF || r.extent_order > DOMU_MAX_ORDER || r.nr_extents == 0 {
            return 0;
        }
        let order = r.extent_order;
        let per = 1u64 << order;
        let n = r.nr_extents as usize;
        // SAFETY: the caller passes nr_extents xen_pfn_t in extent_start,
        // as the Xen ABI requires; a NULL handle is refused.
        if r.extent_start.is_null() {
            return 0;
        }
        // SAFETY: see above.
        let ext = unsafe { std::slice::from_raw_parts_mut(r.extent_start, n) };
        let mode = self.mode();
        let mut done = 0usize;
        let limit = match cmd {
            XENMEM_DECREASE => self.faults.decrease_limit,
            XENMEM_INCREASE => self.faults.increase_limit,
            XENMEM_POPULATE => self.faults.populate_limit,
            _ => None,
        };
        if limit.is_some_and(|l| (l as usize) < n) {
            self.faults_fired += 1;
        }
        // One chunk of this order from the host allocator, or none.
        let chunk_ok = |k: &mut Kernel| {
            if order == 0 {
                return true;
            }
            if fail_now(&mut k.faults.superpage_fail_after) {
                k.faults_fired += 1;
                return false;
            }
            true
        };
        match (cmd, mode) {
            (XENMEM_DECREASE, Mode::Pv) => {
                let limit = self.faults.decrease_limit.map_or(n, |l| l as usize);
                'ext: while done < n.min(limit) {
                    for j in 0..per {
                        let mfn = ext[done] + j;
                        let Some(m2p) = self.owned.remove(mfn) else {
                            break 'ext;
                        };
                        let pfn = (m2p != INVALID_P2M_ENTRY).then_some(m2p);
                        self.release(pfn, mfn);
                    }
                    self.count_extent(order);
                    done += 1;
                }
            }
            (XENMEM_DECREASE, Mode::Pvh) => {
                let limit = self.faults.decrease_limit.map_or(n, |l| l as usize);
                'ext: while done < n.min(limit) {
                    for j in 0..per {
                        let g = ext[done] + j;
                        // memory.c decrease_reservation: PoD first
                        // (p2m_pod_decrease_reservation, pod.rs); the gfn
                        // must still be the driver's page. An extent of
                        // any order is split there into aligned chunks
                        // (p2m-pod.c @c447b730 p2m_pod_decrease_reservation:
                        // chunk_order = ffsl(gfn | left) - 1), each walked
                        // entry by entry by its decrease_reservation: PoD
                        // entries become invalid, RAM is stolen for the
                        // cache while entry_count > count; memory.c then
                        // removes what is left with guest_remove_page, a
                        // gfn invalid before ending the call (-ENOENT with
                        // pod_done spent). So frame by frame here.
                        if self.pod_decrease(g).is_some() {
                            if let Some(st) = self.page_state(g).filter(|&s| s != PG_MODULE) {
                                kernel_panic(&format!(
                                    "frame {g:#x} given to Xen while {} in UVM (not owned by the driver)",
                                    crate::uvm::state_name(st)
                                ));
                            }
                            continue;
                        }
                        if !self.populated.remove(g) {
                            break 'ext;
                        }
                        self.release(Some(g), g);
                    }
                    self.count_extent(order);
                    done += 1;
                }
            }
            (XENMEM_INCREASE, Mode::Pv) => {
                let room =
                    (self.grow_room(self.faults.increase_limit.map(|l| l * per)) / per) as usize;
                while done < n.min(room) && chunk_ok(self) {
                    let m = self.host_alloc_extent(order);
                    for j in 0..per {
                        self.owned.insert(m + j, INVALID_P2M_ENTRY);
                    }
                    ext[done] = m;
                    self.count_extent(order);
                    done += 1;
                }
            }
            (XENMEM_POPULATE, Mode::Pvh) => {
                let room =
                    (self.grow_room(self.faults.populate_limit.map(|l| l * per)) / per) as usize;
                while done < n.min(room) {
                    let g0 = ext[done];
                    if g0.saturating_add(per) > MAX_GPFN || !chunk_ok(self) {
                        break;
                    }
                    if g0 % per != 0 {
                        self.unaligned_superpages += 1;
                    }
                    for g in g0..g0 + per {
                        // Xen does not check that the gfn is free:
                        // populate_physmap -> p2m_add_page
                        // (xen/arch/x86/mm/p2m.c, index id 311561836:
                        // "First, remove m->p mappings for existing p->m
                        // mappings") replaces what is mapped there. The old
                        // page stays the domain's and counted, but nothing
                        // maps it: a special page (xenstore or console
                        // ring) is lost, RAM content is lost.
                        if self.populated.contains(g) {
                            self.replaced_gfns.push(g);
                        }
                        // p2m.c p2m_add_page: a PoD entry there is replaced
                        // (entry_count -= pod_count); that is no loss.
                        self.pod_replaced(g);
                        if let Some(what) = crate::domain::reserved_gfn(g) {
                            self.reserved_hits.push((g, what));
                        }
                        self.host_alloc();
                        self.populated.insert(g);
                        // A fresh page from Xen's heap, scrubbed.
                        self.data.remove(g);
                    }
                    self.count_extent(order);
                    done += 1;
                }
            }
            // PV guests use increase, PVH guests populate_physmap; the other
            // combination does nothing here (the shim must pick the right one).
            _ => {}
        }
        done as c_int
    }

    fn count_extent(&mut self, order: u32) {
        if order > 0 {
            self.superpage_extents += 1;
        }
    }
}

/// `struct xen_memory_map` (memory.h): entries the buffer holds on call,
/// entries written on return, and the buffer.
#[repr(C)]
struct XenMemoryMap {
    nr_entries: c_uint,
    buffer: *mut E820Entry,
}

impl Kernel {
    /// XENMEM_memory_map, as xen/arch/x86/mm.c @c447b730 `arch_memory_op`
    /// does it: -ENOSYS when the toolstack set no map (every PV domain
    /// libxl builds without e820_host), else the first `nr_entries`
    /// entries of the map set at creation, and `nr_entries` becomes the
    /// number written. The guest's later plugs do not change it.
    ///
    /// # Safety
    /// `m.buffer` must have room for `m.nr_entries` entries.
    unsafe fn memory_map_op(&mut self, m: &mut XenMemoryMap) -> c_int {
        if self.memory_map.is_empty() {
            return -ENOSYS;
        }
        let n = (m.nr_entries as usize).min(self.memory_map.len());
        if n > 0 && m.buffer.is_null() {
            return -EFAULT;
        }
        for (i, e) in self.memory_map.iter().take(n).enumerate() {
            // SAFETY: i < n <= the room the caller gave.
            unsafe { m.buffer.add(i).write_unaligned(*e) };
        }
        m.nr_entries = n as c_uint;
        0
    }
}

/// HYPERVISOR_memory_op (a static inline in the real kernel; amd64
/// hypercalls.h). current/maximum_reservation take `domid_t *` and return
/// pages or -ESRCH; the three reservation ops return the number of leading
/// extents done and stop at the first failure; argument failures return 0
/// (memory.c returns start_extent). Unknown commands: -ENOSYS. Not on Xen:
/// -ENOSYS for everything.
///
/// Fault injection: `memory_op_errors` makes a command return a negative
/// errno before doing anything, as do_memory_op does when it cannot copy
/// its argument (-EFAULT) or refuses it (-EINVAL, -EPERM; xen/common/
/// memory.c). Stall points: the three reservation ops.
#[no_mangle]
unsafe extern "C" fn HYPERVISOR_memory_op(cmd: c_uint, arg: *mut c_void) -> c_int {
    let _t = crate::prof::Timer::start(crate::prof::Point::MemoryOp);
    let op = match cmd {
        XENMEM_INCREASE => Some(MemOp::IncreaseReservation),
        XENMEM_DECREASE => Some(MemOp::DecreaseReservation),
        XENMEM_CURRENT => Some(MemOp::CurrentReservation),
        XENMEM_MAXIMUM => Some(MemOp::MaximumReservation),
        XENMEM_POPULATE => Some(MemOp::PopulatePhysmap),
        XENMEM_MEMORY_MAP => Some(MemOp::MemoryMap),
        _ => None,
    };
    match op {
        Some(MemOp::IncreaseReservation) => stall_point("increase_reservation"),
        Some(MemOp::DecreaseReservation) => stall_point("decrease_reservation"),
        Some(MemOp::PopulatePhysmap) => stall_point("populate_physmap"),
        _ => {}
    }
    with(|k| {
        if k.mode() == Mode::NotXen {
            return -ENOSYS;
        }
        k.hypercalls += 1;
        if let Some(e) = op.and_then(|o| k.faults.memory_op_errors.get(&o).copied()) {
            k.faults_fired += 1;
            return -e;
        }
        match cmd {
            XENMEM_CURRENT | XENMEM_MAXIMUM => {
                // SAFETY: the caller passes a domid_t * (Xen ABI).
                let dom = unsafe { (arg as *const u16).read_unaligned() };
                if dom != DOMID_SELF {
                    return -ESRCH;
                }
                let v = if cmd == XENMEM_CURRENT {
                    k.tot_pages
                } else {
                    k.max_pages
                };
                v as c_int
            }
            XENMEM_INCREASE | XENMEM_DECREASE | XENMEM_POPULATE => {
                if arg.is_null() {
                    return 0;
                }
                // SAFETY: the caller passes a struct xen_memory_reservation *.
                let r = unsafe { &*(arg as *const XenMemoryReservation) };
                k.reservation_op(cmd, r)
            }
            XENMEM_MEMORY_MAP => {
                if arg.is_null() {
                    return -EFAULT;
                }
                // SAFETY: the caller passes a struct xen_memory_map *.
                unsafe { k.memory_map_op(&mut *(arg as *mut XenMemoryMap)) }
            }
            _ => -ENOSYS,
        }
    })
}

/// `struct mmuext_op` (xen.h: cmd, then two 8-byte unions; size 24).
#[repr(C)]
struct MmuextOp {
    cmd: c_uint,
    arg1: u64,
    arg2: u64,
}

const MMUEXT_CLEAR_PAGE: c_uint = 16;
const EINVAL: c_int = 22;

/// HYPERVISOR_mmuext_op (a static inline in the real kernel, amd64
/// hypercalls.h), MMUEXT_CLEAR_PAGE only: what a XENPV kernel's
/// pmap_zero_page does for one page (x86/pmap.c 1.414, xen_pagezero in
/// x86_xpmap.c), and what the shim batches. Rules (xen/arch/x86/mm.c
/// @009360ac, do_mmuext_op): PV guests only (PVH and HVM get -ENOSYS
/// here: Xen's hypercall table has it for HVM callers too,
/// xen/include/hypercall-defs.c @02b26c02, but the shim uses it only on
/// PV); the operations run in order;
/// MMUEXT_CLEAR_PAGE takes an MFN the domain owns as ordinary RAM
/// (get_page_from_gfn + get_page_type(PGT_writable_page)), else -EINVAL
/// and the run stops; every other command is -ENOSYS here (not modelled);
/// `*success_count` gets the operations done. A cleared frame reads as
/// zero; with `real_zero` its 4 KiB of host memory are written as Xen's
/// clear_page does (non-temporal stores; `frame_mem_clear_nt`), outside
/// the state lock. Before that, each frame goes through the rules
/// pmap_zero_page follows (`Kernel::zeroing_rules`: PoD's touch, PVH's
/// direct map), so neither form of zeroing can skip them. Stall point:
/// `zero_page`, as pmap_zero_page.
#[no_mangle]
unsafe extern "C" fn HYPERVISOR_mmuext_op(
    ops: *const MmuextOp,
    count: c_int,
    done_out: *mut c_int,
    domid: u16,
) -> c_int {
    let _t = crate::prof::Timer::start(crate::prof::Point::ZeroPage);
    stall_point("zero_page");
    let n = usize::try_from(count).unwrap_or(0);
    let mut cleared = Vec::with_capacity(n);
    let rc = with(|k| {
        if k.mode() != Mode::Pv {
            return -ENOSYS;
        }
        k.mmuext_calls += 1;
        if domid != DOMID_SELF {
            return -ESRCH;
        }
        for i in 0..n {
            // SAFETY: the caller passes `count` operations.
            let op = unsafe { &*ops.add(i) };
            if op.cmd != MMUEXT_CLEAR_PAGE {
                return -ENOSYS;
            }
            let Some(pfn) = k.owned.get(op.arg1) else {
                return -EINVAL;
            };
            // The rules pmap_zero_page follows (uvm.rs `zeroing_rules`;
            // PoD and the direct map are PVH's, so a PV domain passes).
            if pfn != INVALID_P2M_ENTRY {
                k.zeroing_rules(pfn);
            }
            k.data.remove(op.arg1);
            cleared.push(pfn);
        }
        0
    });
    for &pfn in &cleared {
        if pfn != INVALID_P2M_ENTRY {
            crate::uvm::frame_mem_clear_nt(pfn);
        }
    }
    if !done_out.is_null() {
        // SAFETY: the caller passes an int * or NULL.
        unsafe { done_out.write(cleared.len() as c_int) };
    }
    rc
}

// ---- CPUs, preemption and the per-CPU m2p queue ----
//
// Real behaviour (NetBSD x86_xpmap.c 1.84.4.2, netbsd-10):
// `xpq_queue_machphys_update` appends to `xpq_queue_array[curcpu()->ci_cpuid]`
// at `curcpu()->ci_xpq_idx` and `xpq_flush_queue` sends curcpu()'s queue with
// HYPERVISOR_mmu_update; neither takes a lock or disables preemption, and a
// full queue (XPQUEUE_SIZE 2048) flushes itself. A kernel thread can be
// preempted and resume on another CPU between two calls; only
// `kpreempt_disable()` (kern_synch.c: KPREEMPT_DISABLE(curlwp), declared in
// sys/lwp.h) keeps it on its CPU until `kpreempt_enable()`.
//
// Simulator rule: NCPU CPUs; each thread has a current CPU and a
// kpreempt_disable depth. Every entry into xpq_queue_machphys_update or
// xpq_flush_queue with preemption enabled is a preemption point at which
// the thread moves to the next CPU (the worst schedule, every time). An
// update queued on one CPU therefore stays queued when another CPU's queue
// is flushed, and `Domain::check` reports it (and the stale m2p).

/// Simulated CPUs.
pub(crate) const NCPU: usize = 2;
/// x86_xpmap.c 1.84.4.2 XPQUEUE_SIZE.
const XPQUEUE_SIZE: usize = 2048;

thread_local! {
    static CURCPU: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static NOPREEMPT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A preemption point: unless preemption is disabled, the thread resumes
/// on the next CPU. Returns the CPU it runs on afterwards.
fn preemption_point() -> usize {
    let disabled = NOPREEMPT.with(|n| n.get() != 0);
    CURCPU.with(|c| {
        if !disabled {
            c.set((c.get() + 1) % NCPU);
        }
        c.get()
    })
}

/// kpreempt_disable(): nests (l_nopreempt++).
#[no_mangle]
extern "C" fn kpreempt_disable() {
    NOPREEMPT.with(|n| n.set(n.get() + 1));
}

/// kpreempt_enable(): an enable without a disable is a kernel bug.
#[no_mangle]
extern "C" fn kpreempt_enable() {
    let ok = NOPREEMPT.with(|n| match n.get().checked_sub(1) {
        Some(v) => {
            n.set(v);
            true
        }
        None => false,
    });
    if !ok {
        kernel_panic("kpreempt_enable without kpreempt_disable");
    }
}

/// Applies and empties `cpu`'s queue (HYPERVISOR_mmu_update with
/// MMU_MACHPHYS_UPDATE entries). The MFN must be owned by the domain.
fn xpq_flush(k: &mut Kernel, cpu: usize) {
    let q = k.xpq.get_mut(cpu).map(std::mem::take).unwrap_or_default();
    for (mfn, pfn) in q {
        if !k.owned.set(mfn, pfn) {
            kernel_panic(&format!(
                "HYPERVISOR_mmu_update failed: MMU_MACHPHYS_UPDATE of MFN {mfn:#x}, \
                 which the domain does not own"
            ));
        }
    }
}

/// xpq_queue_machphys_update(ma, pa): queues on the current CPU.
#[no_mangle]
extern "C" fn xpq_queue_machphys_update(ma: u64, pa: u64) {
    let cpu = preemption_point();
    with(|k| {
        if k.mode() != Mode::Pv {
            kernel_panic("xpq_queue_machphys_update in a domain that is not PV");
        }
        let full = match k.xpq.get_mut(cpu) {
            Some(q) => {
                q.push((ma >> PAGE_SHIFT, pa >> PAGE_SHIFT));
                q.len() == XPQUEUE_SIZE
            }
            None => false,
        };
        if full {
            xpq_flush(k, cpu);
        }
    })
}

/// xpq_flush_queue(): flushes the current CPU's queue only.
#[no_mangle]
extern "C" fn xpq_flush_queue() {
    let cpu = preemption_point();
    with(|k| xpq_flush(k, cpu))
}

// ---- xenstore / xenbus ----

/// The C `struct xenbus_watch` (balloon_host_kernel.h).
#[repr(C)]
pub(crate) struct XenbusWatch {
    next: *mut XenbusWatch,
    node: *mut c_char,
    node_sz: usize,
    callback: Option<unsafe extern "C" fn(*mut XenbusWatch, *mut *const c_char, c_uint)>,
    dev: *mut c_void,
}

impl Kernel {
    /// Writes a xenstore node and queues events for matching watches.
    pub(crate) fn store_write(&mut self, path: &str, value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.store.insert(path.to_string(), v.to_vec());
            }
            None => {
                self.store.remove(path);
            }
        }
        self.queue_events(path);
    }

    fn queue_events(&mut self, path: &str) {
        let hits: Vec<usize> = self
            .watches
            .iter()
            .chain(self.kernel_watches.iter())
            .filter(|(_, node)| {
                path == node
                    || (path.starts_with(node.as_str()) && path[node.len()..].starts_with('/'))
            })
            .map(|(w, _)| *w)
            .collect();
        for w in hits {
            self.watch_queue.push_back((w, path.to_string()));
        }
        WATCHQ.notify_all();
    }
}

/// xenbus_read, netbsd-10 form: (t, dir, node, buf, bufsz), reading into
/// the caller's buffer and reporting no length. Only its callers could be
/// read (xenbus_probe.c 1.58.6.1, xbdback_xenbus.c 1.101.4.2, both on the
/// netbsd-10 branch); xenbus_xs.c and xenbus.h of that era are not in the
/// sources reachable here. Modelled: reads "dir/node" relative to the
/// domain's home, copies every byte of the value (a NUL inside included,
/// as xenstored's reply carries them) and a NUL after it; ENOENT if
/// missing, ERANGE if value and NUL do not fit in bufsz (what a netbsd-10
/// kernel returns then is not confirmed), or the injected error.
#[no_mangle]
unsafe extern "C" fn xenbus_read(
    _t: *mut c_void,
    dir: *const c_char,
    node: *const c_char,
    buf: *mut c_char,
    bufsz: usize,
) -> c_int {
    // SAFETY: dir/node are NUL-terminated strings (NULL dir = none).
    let path = unsafe { join_path(dir, node) };
    stall_point("xenbus_read");
    let res = with(|k| {
        if let Some(e) = k.faults.xenstore_read_error {
            k.faults_fired += 1;
            return Err(e);
        }
        k.store.get(&path).cloned().ok_or(ENOENT)
    });
    match res {
        Err(e) => e,
        Ok(v) => {
            if v.len() + 1 > bufsz {
                return ERANGE;
            }
            // SAFETY: buf has bufsz >= len + 1 bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(v.as_ptr() as *const c_char, buf, v.len());
                *buf.add(v.len()) = 0;
            }
            0
        }
    }
}

/// Called by xenbus_printf (csrc/sim_kernel.c): writes "dir/node" as
/// xenbus_write does (xenbus_xs.c 1.9.2.1) and fires watches on it. The
/// node is the guest's own: a resume loses it (`Domain::resume`).
#[no_mangle]
unsafe extern "C" fn sim_rs_xenbus_write(
    dir: *const c_char,
    node: *const c_char,
    value: *const c_char,
) -> c_int {
    // SAFETY: NUL-terminated strings from the C caller (NULL dir = none).
    let (path, v) = unsafe { (join_path(dir, node), cstr(value)) };
    with(|k| {
        k.guest_written.insert(path.clone());
        k.store_write(&path, Some(v.as_bytes()));
    });
    0
}

/// xenbus_rm (xenbus_xs.c 1.9.2.1, XS_RM): removes "dir/node"; ENOENT
/// when it does not exist (xenstored's answer, mapped by get_error).
#[no_mangle]
unsafe extern "C" fn xenbus_rm(_t: *mut c_void, dir: *const c_char, node: *const c_char) -> c_int {
    // SAFETY: NUL-terminated strings from the C caller (NULL dir = none).
    let path = unsafe { join_path(dir, node) };
    with(|k| {
        k.guest_written.remove(&path);
        if k.store.contains_key(&path) {
            k.store_write(&path, None);
            0
        } else {
            ENOENT
        }
    })
}

/// # Safety
/// `dir` may be NULL; otherwise both are NUL-terminated strings.
unsafe fn join_path(dir: *const c_char, node: *const c_char) -> String {
    // SAFETY: per the contract above.
    let n = unsafe { cstr(node) };
    if dir.is_null() {
        return n;
    }
    // SAFETY: per the contract above.
    let d = unsafe { cstr(dir) };
    if d.is_empty() {
        n
    } else if n.is_empty() {
        d
    } else {
        format!("{d}/{n}")
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
pub(crate) unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per the contract above.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// register_xenbus_watch (xenbus_xs.c 1.22, the newest revision in the
/// index; netbsd-10's was not readable): the watch goes on the list, then
/// XS_WATCH goes to xenstored; on an error other than EEXIST it comes off
/// the list again, and the error is returned. With EEXIST ("multiple
/// registration") it stays registered and EEXIST is returned. xenstore
/// fires a new watch once at registration, then on every write to the
/// node or below. Callbacks run on the "xenwatch" thread, one at a time,
/// with no simulator lock held, as callback(w, {path, token}, 2).
/// Registering the same watch twice trips KASSERT(find_watch(token) == 0):
/// panic. Fault injection: `watch_register_error` is xenstored's answer.
#[no_mangle]
unsafe extern "C" fn register_xenbus_watch(w: *mut XenbusWatch) -> c_int {
    stall_point("watch_register");
    // SAFETY: w is the caller's watch; node a NUL-terminated string.
    let node = unsafe { cstr((*w).node) };
    // SAFETY: as above.
    if unsafe { (*w).callback.is_none() } {
        kernel_panic("register_xenbus_watch: watch without a callback");
    }
    with(|k| {
        if k.watches.iter().any(|(x, _)| *x == w as usize) {
            kernel_panic("register_xenbus_watch: watch registered twice");
        }
        let answer = k.faults.watch_register_error;
        if answer.is_some() {
            k.faults_fired += 1;
        }
        match answer {
            Some(e) if e != EEXIST => return e,
            _ => {}
        }
        k.watches.push((w as usize, node.clone()));
        if answer.is_none() {
            k.watch_queue.push_back((w as usize, node));
            WATCHQ.notify_all();
        }
        answer.unwrap_or(0)
    })
}

/// unregister_xenbus_watch (xenbus_xs.c 1.22): KASSERT(find_watch(token))
/// then SLIST_REMOVE. A watch that is not registered (never was, or its
/// registration failed and took it off the list) trips the KASSERT on a
/// DIAGNOSTIC kernel, and on any other SLIST_REMOVE walks off the end of
/// the list into a NULL pointer: a panic either way (REFERENCE.md §8).
/// Queued events for the watch are dropped. Like that code it does NOT
/// wait for a callback that is already running: the module must
/// synchronise with its own callback.
#[no_mangle]
extern "C" fn unregister_xenbus_watch(w: *mut XenbusWatch) {
    with(|k| {
        let before = k.watches.len();
        k.watches.retain(|(x, _)| *x != w as usize);
        if k.watches.len() == before {
            kernel_panic(&format!(
                "unregister_xenbus_watch: watch {w:p} is not registered \
                 (KASSERT(find_watch(token)) in xenbus_xs.c)"
            ));
        }
        k.watch_queue.retain(|(x, _)| *x != w as usize);
    })
}

/// The kernel's own watch on control/shutdown (shutdown_xenbus.c
/// 1.5.8.3, `xenbus_shutdown_watch`, registered by
/// `shutdown_xenbus_setup` at boot), standing for every watch of the
/// kernel's that the same xenwatch thread serves (device back- and
/// frontends too). Its id is no module's watch address.
pub(crate) const SHUTDOWN_WATCH: usize = 1;
const SHUTDOWN_NODE: &str = "control/shutdown";

impl Kernel {
    /// Registers the kernel's control/shutdown watch at boot; xenstore
    /// fires it once, as it fires every new watch.
    pub(crate) fn watch_shutdown(&mut self) {
        self.kernel_watches
            .push((SHUTDOWN_WATCH, SHUTDOWN_NODE.to_string()));
        self.watch_queue
            .push_back((SHUTDOWN_WATCH, SHUTDOWN_NODE.to_string()));
        WATCHQ.notify_all();
    }
}

/// `xenbus_shutdown_handler` (shutdown_xenbus.c 1.5.8.3): reads
/// control/shutdown; when there is a request, removes the node (which
/// fires the watch again; that event finds nothing) and acts on it. Here
/// acting is recording the request, so that a test sees when the single
/// xenwatch thread got round to it.
fn shutdown_handler() {
    stall_point("shutdown_watch");
    with(|k| {
        if let Some(v) = k.store.get(SHUTDOWN_NODE).cloned() {
            k.store_write(SHUTDOWN_NODE, None);
            k.shutdown_requests
                .push(String::from_utf8_lossy(&v).into_owned());
        }
    });
}

/// What the xenwatch thread calls for one event.
enum Callback {
    Module(Option<unsafe extern "C" fn(*mut XenbusWatch, *mut *const c_char, c_uint)>),
    Shutdown,
}

/// The xenwatch thread body: the one thread that delivers every watch
/// event, the module's and the kernel's, one at a time, in order
/// (xenbus_xs.c 1.22 `xenwatch_thread`). A callback that blocks holds up
/// every event queued after it, control/shutdown included.
pub(crate) fn start_xenwatch(gen: u64) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("xenwatch".into())
        .spawn(move || loop {
            adopt_thread(gen);
            let mut g = lock();
            let ev = loop {
                let Some(k) = g.as_mut() else { return };
                if k.xenwatch_stop {
                    return;
                }
                if let Some(ev) = k.watch_queue.pop_front() {
                    if ev.0 == SHUTDOWN_WATCH && k.kernel_watches.iter().any(|(x, _)| *x == ev.0) {
                        k.watch_running = Some(ev.0);
                        break (ev, Callback::Shutdown);
                    }
                    if k.watches.iter().any(|(x, _)| *x == ev.0) {
                        k.watch_running = Some(ev.0);
                        // SAFETY: the watch is registered, so it is the
                        // module's live watch struct; read its callback
                        // before the lock goes.
                        let cb = unsafe { (*(ev.0 as *mut XenbusWatch)).callback };
                        break (ev, Callback::Module(cb));
                    }
                    continue;
                }
                g = WATCHQ.wait(g).unwrap_or_else(|e| e.into_inner());
            };
            drop(g);
            let ((w, path), cb) = ev;
            let cpath = CString::new(path).unwrap_or_default();
            let token = CString::new(format!("{w:X}")).unwrap_or_default();
            let mut vec = [cpath.as_ptr(), token.as_ptr()];
            let wp = w as *mut XenbusWatch;
            let module = match cb {
                Callback::Module(Some(cb)) => {
                    // SAFETY: calling the module's callback with a valid
                    // watch and a two-element vector, no simulator lock
                    // held.
                    unsafe { cb(wp, vec.as_mut_ptr(), 2) };
                    true
                }
                Callback::Module(None) => true,
                Callback::Shutdown => {
                    shutdown_handler();
                    false
                }
            };
            let mut g = lock();
            if let Some(k) = g.as_mut() {
                k.watch_running = None;
                if module {
                    k.watch_fired += 1;
                } else {
                    k.kernel_watch_fired += 1;
                }
            }
            drop(g);
            CHANGED.notify_all();
        })
        .expect("spawn xenwatch")
}
