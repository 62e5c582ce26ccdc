// SPDX-License-Identifier: BSD-2-Clause
//! UVM pages and physical segments (docs/kernel-interfaces.md §1-2).
//!
//! Free-page order: the free list is kept as an ordered set and the
//! allocator hands out the highest free frame first (deterministic, like a
//! LIFO free list after boot). uvm_pglistalloc takes the highest free
//! frames inside [low, high).

use std::alloc::{GlobalAlloc, System};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::config::{fail_now, Flavour, Mode};
use crate::kernel::{
    freeze_point, kernel_panic, lock, park_forever, physmem, thread_is_frozen, uvmexp, with,
    Kernel, PageArray, Seg, VmPage, CHANGED, PAGE_SHIFT, PAGE_SIZE, PG_FREE, PG_GONE, PG_KERNEL,
    PG_MODULE,
};
use crate::stall::stall_point;

const ENOMEM: c_int = 12;
const EINVAL: c_int = 22;
const UVM_PGA_ZERO: c_int = 0x0002;

extern "C" {
    fn sim_pglist_insert_tail(list: *mut PglistHead, pg: *mut VmPage);
}

/// Opaque `struct pglist` (TAILQ head); only touched by C helpers.
#[repr(C)]
pub(crate) struct PglistHead {
    _private: [u8; 0],
}

/// Bytes of kmem one slab entry (a `struct vm_page`) costs in the model.
/// An assumption for the figures only: the rules below count entries.
pub(crate) const VM_PAGE_BYTES: u64 = 128;

/// A vm_page slab hotplug allocated with kmem_zalloc (uvm_physseg.c 1.18,
/// `uvm_physseg_plug`): `entries` vm_pages, `room` of them not carved out
/// by a live segment, `segments` live segments carved from it. When the
/// last segment using it is unplugged whole, the real kernel
/// extent_destroy()s its extent but never kmem_free()s the slab: the model
/// marks it `destroyed` and keeps counting its memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slab {
    pub entries: u64,
    pub room: u64,
    pub segments: u64,
    pub destroyed: bool,
}

/// What `sim stat` shows about hotplug's vm_page slabs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabStats {
    /// Slabs allocated since boot (live or destroyed).
    pub slabs: u64,
    /// Their kmem in bytes (all still allocated: unplug never frees one).
    pub bytes: u64,
    /// Bytes of slabs whose extent was destroyed: unusable and never freed.
    pub leaked_bytes: u64,
    /// Plugs and unplugs made with no lock on the segment tree.
    pub unlocked_tree_changes: u64,
}

impl Kernel {
    pub(crate) fn slab_stats(&self) -> SlabStats {
        let bytes = |s: &Slab| s.entries * VM_PAGE_BYTES;
        SlabStats {
            slabs: self.slabs.len() as u64,
            bytes: self.slabs.iter().map(bytes).sum(),
            leaked_bytes: self.slabs.iter().filter(|s| s.destroyed).map(bytes).sum(),
            unlocked_tree_changes: self.physseg_unlocked_changes,
        }
    }

    /// Allocates a vm_page array for [start, start + n) and returns its
    /// first element. The array is zero-filled by the host allocator and
    /// left untouched, so it costs host memory only where C links a page
    /// (a large one is a fresh mapping of the host's zero page).
    pub(crate) fn new_page_array(&mut self, start: u64, n: u64) -> *mut VmPage {
        let len = n.max(1) as usize;
        // SAFETY: the layout has a non-zero size; an all-zero VmPage is
        // valid (two null pointers).
        let ptr = unsafe { std::alloc::alloc_zeroed(page_array_layout(len)) } as *mut VmPage;
        if ptr.is_null() {
            kernel_panic("simulator: the host has no memory for a vm_page array");
        }
        self.arrays.push(PageArray { ptr, len, start });
        ptr
    }

    pub(crate) fn insert_seg(&mut self, start: u64, end: u64, pgs: *mut VmPage) -> u64 {
        self.next_seg_id += 1;
        let id = self.next_seg_id;
        let i = self.segs.partition_point(|s| s.start < start);
        self.segs.insert(
            i,
            Seg {
                id,
                start,
                end,
                pgs,
            },
        );
        self.publish_page_map();
        id
    }

    /// Takes the highest free frame (optionally within [lo, hi)).
    fn take_free(&mut self, lo: u64, hi: u64) -> Option<u64> {
        let pfn = self.free.last_in(lo, hi)?;
        self.free.remove(pfn);
        Some(pfn)
    }

    /// Gives a frame just taken off the free list to `state` (the kernel
    /// or the module).
    fn alloc_frame(&mut self, pfn: u64, state: i32) {
        match state {
            PG_MODULE => self.module_pages += 1,
            PG_KERNEL => {
                self.kernel_pages.push(pfn);
            }
            _ => {}
        }
    }

    /// Puts a frame that was in state `old` back on the free list.
    pub(crate) fn free_frame(&mut self, pfn: u64, old: i32) {
        self.free.insert(pfn);
        match old {
            PG_MODULE => self.module_pages -= 1,
            PG_KERNEL => {
                self.kernel_pages.remove(pfn);
            }
            _ => {}
        }
    }

    /// Kernel workload: allocate up to n pages (dirtying them).
    pub(crate) fn kernel_alloc(&mut self, n: u64) -> u64 {
        let mut got = 0;
        while got < n {
            let Some(pfn) = self.take_free(0, u64::MAX) else {
                break;
            };
            self.alloc_frame(pfn, PG_KERNEL);
            self.pod_touch(pfn, crate::pod::Touch::Kernel);
            self.write_frame(pfn, true);
            got += 1;
        }
        self.sync_uvmexp(uvmexp.get().npages);
        got
    }

    /// Kernel workload: free up to n of its pages (most recent first).
    pub(crate) fn kernel_free(&mut self, n: u64) -> u64 {
        let mut done = 0;
        while done < n {
            let Some(pfn) = self.kernel_pages.pop() else {
                break;
            };
            if !self.backed(pfn) {
                kernel_panic(&format!(
                    "kernel page {pfn:#x} lost its backing (given to Xen while in use)"
                ));
            }
            self.free_frame(pfn, PG_KERNEL);
            done += 1;
        }
        self.sync_uvmexp(uvmexp.get().npages);
        done
    }
}

impl Kernel {
    /// The contiguous path of uvm_pglistalloc (see there): the lowest run
    /// of `n` free frames in one segment, starting at a multiple of
    /// `align` inside [lo, hi).
    fn pglistalloc_contig(
        &mut self,
        n: u64,
        lo: u64,
        hi: u64,
        align: u64,
        list: *mut PglistHead,
    ) -> c_int {
        if !self.segs.iter().any(|s| s.start < hi && lo < s.end) {
            return EINVAL;
        }
        if fail_now(&mut self.faults.pglistalloc_fail_after) {
            self.faults_fired += 1;
            return ENOMEM;
        }
        let mut found = None;
        let mut segs: Vec<(u64, u64)> = self.segs.iter().map(|s| (s.start, s.end)).collect();
        segs.sort_unstable();
        'seg: for (start, end) in segs {
            let limit = end.min(hi);
            let mut cand = start.max(lo).next_multiple_of(align);
            while cand + n <= limit {
                // The highest frame of the candidate run that is not free.
                let busy = if self.free.count_in(cand, cand + n) == n {
                    None
                } else {
                    (cand..cand + n).rev().find(|&f| !self.free.contains(f))
                };
                match busy {
                    None => {
                        found = Some(cand);
                        break 'seg;
                    }
                    Some(busy) => {
                        // Skip past it: the next free frame, aligned up.
                        let next = self.free.first_in(busy + 1, limit);
                        let Some(next) = next else { break };
                        cand = next.next_multiple_of(align);
                    }
                }
            }
        }
        let Some(first) = found else {
            return ENOMEM;
        };
        let mut pages = Vec::with_capacity(n as usize);
        for pfn in first..first + n {
            self.free.remove(pfn);
            self.alloc_frame(pfn, PG_MODULE);
            pages.push(self.page_ptr(pfn).unwrap_or(std::ptr::null_mut()));
        }
        self.sync_uvmexp(uvmexp.get().npages);
        for pg in pages {
            // SAFETY: list is the caller's TAILQ head; pg a live vm_page
            // now owned by the caller and on no other list.
            unsafe { sim_pglist_insert_tail(list, pg) };
        }
        0
    }

    /// Kernel workload that fragments free memory: the kernel takes every
    /// free frame whose number is a multiple of `stride`, so that no free
    /// run longer than `stride` - 1 frames is left. Returns pages taken.
    pub(crate) fn kernel_fragment(&mut self, stride: u64) -> u64 {
        let picks: Vec<u64> = self
            .free
            .iter()
            .filter(|f| f % stride.max(1) == 0)
            .collect();
        for &pfn in &picks {
            self.free.remove(pfn);
            self.alloc_frame(pfn, PG_KERNEL);
            self.write_frame(pfn, true);
        }
        self.sync_uvmexp(uvmexp.get().npages);
        picks.len() as u64
    }
}

/// The layout of a vm_page array of `len` elements.
pub(crate) fn page_array_layout(len: usize) -> std::alloc::Layout {
    std::alloc::Layout::array::<VmPage>(len)
        .unwrap_or_else(|_| kernel_panic("simulator: vm_page array too large for the host"))
}

// ---- pages ----

/// uvm_pagealloc_strat(9): one free page or NULL. uvm_page.c 1.246: the
/// flag UVM_PGA_ZERO zeroes the page with pmap_zero_page; obj/anon/strat
/// are ignored (the shim passes NULL, 0, NULL). Fails only when no page is
/// free (the model keeps no pagedaemon reserve: kthreads get
/// UVM_PGA_USERESERVE implicitly anyway) or by fault injection.
#[no_mangle]
extern "C" fn uvm_pagealloc_strat(
    _obj: *mut std::ffi::c_void,
    _off: i64,
    _anon: *mut std::ffi::c_void,
    flags: c_int,
    _strat: c_int,
    _free_list: c_int,
) -> *mut VmPage {
    let _t = crate::prof::Timer::start(crate::prof::Point::PageAlloc);
    stall_point("pagealloc");
    with(|k| {
        if fail_now(&mut k.faults.pagealloc_fail_after) {
            k.faults_fired += 1;
            return std::ptr::null_mut();
        }
        let Some(pfn) = k.take_free(0, u64::MAX) else {
            return std::ptr::null_mut();
        };
        k.alloc_frame(pfn, PG_MODULE);
        if flags & UVM_PGA_ZERO != 0 {
            k.pod_touch(pfn, crate::pod::Touch::PageAllocZero);
            k.write_frame(pfn, false);
        }
        k.sync_uvmexp(uvmexp.get().npages);
        k.page_ptr(pfn).unwrap_or(std::ptr::null_mut())
    })
}

/// uvm_pagefree(9): KASSERT not already free (uvm_page.c 1.246); the model
/// also refuses a frame without Xen backing (it would put memory the
/// domain no longer has on the free list).
#[no_mangle]
unsafe extern "C" fn uvm_pagefree(pg: *mut VmPage) {
    let _t = crate::prof::Timer::start(crate::prof::Point::PageFree);
    with(|k| {
        let (pfn, st) = k.check_page(pg, "uvm_pagefree");
        if st == PG_FREE {
            kernel_panic(&format!("uvm_pagefree: double free of frame {pfn:#x}"));
        }
        if !k.backed(pfn) {
            kernel_panic(&format!(
                "uvm_pagefree: unbacked frame {pfn:#x} freed onto the free list"
            ));
        }
        k.free_frame(pfn, st);
        k.sync_uvmexp(uvmexp.get().npages);
    })
}

/// uvm_pglistalloc(9), uvm_pglist.c 1.90 (NetBSD/src, read at index id
/// 1340450313). Byte addresses, high exclusive, low rounded up to the
/// alignment. Every call pauses and resumes every CPU's free-page cache
/// (uvm_pgflcache_pause, an xcall to all CPUs: uvm_pgflcache.c 1.6); the
/// model counts calls in `pglistalloc_calls`.
///
/// Simple path (nsegs >= npages, alignment <= PAGE_SIZE, boundary 0):
/// waitok == 0: all or nothing, ENOMEM on shortfall; waitok != 0: blocks
/// until enough pages are free, possibly forever (as the real simple path
/// does). Pages are appended through pageq.queue, highest frame first, and
/// are not zeroed.
///
/// Contiguous path (alignment > PAGE_SIZE or nsegs < npages;
/// uvm_pglistalloc_contig / uvm_pglistalloc_c_ps): one run of npages free
/// frames inside one segment, starting at a multiple of the alignment;
/// EINVAL when no segment meets [low, high); ENOMEM when no such run is
/// free. The real search starts at the segment's start hint and wraps;
/// the model takes the lowest run (the hint is not modelled). waitok != 0
/// there means the "aggressive" path (allocate page by page until a run
/// forms, uvm_pglistalloc_contig_aggressive), which the model does not
/// have: it returns EINVAL, and the shim never asks for it. A boundary
/// is not modelled either (EINVAL).
#[no_mangle]
unsafe extern "C" fn uvm_pglistalloc(
    size: u64,
    low: u64,
    high: u64,
    alignment: u64,
    boundary: u64,
    list: *mut PglistHead,
    nsegs: c_int,
    waitok: c_int,
) -> c_int {
    let npages = size.div_ceil(PAGE_SIZE);
    if npages == 0 || boundary != 0 || !alignment.is_power_of_two() {
        return EINVAL;
    }
    let contig = alignment > PAGE_SIZE || (nsegs as i64) < npages as i64;
    if contig && waitok != 0 {
        return EINVAL;
    }
    let align = (alignment >> PAGE_SHIFT).max(1);
    let lo = low.div_ceil(PAGE_SIZE).next_multiple_of(align);
    let hi = high >> PAGE_SHIFT;
    stall_point("pglistalloc");
    freeze_point();
    with(|k| k.pglistalloc_calls += 1);
    if contig {
        return with(|k| k.pglistalloc_contig(npages, lo, hi, align, list));
    }
    let mut g = lock();
    let got: Vec<*mut VmPage> = loop {
        let Some(k) = g.as_mut() else {
            drop(g);
            kernel_panic("uvm_pglistalloc with no simulated domain booted");
        };
        if !k.segs.iter().any(|s| s.start < hi && lo < s.end) {
            return EINVAL;
        }
        if fail_now(&mut k.faults.pglistalloc_fail_after) {
            k.faults_fired += 1;
            return ENOMEM;
        }
        let avail = k.free.count_in(lo, hi);
        if avail >= npages {
            let mut v = Vec::with_capacity(npages as usize);
            for _ in 0..npages {
                let pfn = k.take_free(lo, hi).expect("counted above");
                k.alloc_frame(pfn, PG_MODULE);
                v.push(k.page_ptr(pfn).expect("frame in a segment"));
            }
            k.sync_uvmexp(uvmexp.get().npages);
            break v;
        }
        if waitok == 0 {
            return ENOMEM;
        }
        g = CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
        if thread_is_frozen() {
            drop(g);
            park_forever();
        }
    };
    drop(g);
    CHANGED.notify_all();
    for pg in got {
        // SAFETY: list is the caller's TAILQ head; pg a live vm_page now
        // owned by the caller and on no other list.
        unsafe { sim_pglist_insert_tail(list, pg) };
    }
    0
}

/// VM_PAGE_TO_PHYS: uvm_page.h 1.93.2.1 makes it `uvm_vm_page_to_phys()`,
/// which is arithmetic on the vm_page alone (uvm_page.c 1.246:
/// `pg->phys_addr & ~(PAGE_SIZE - 1)`), with no lock. So is the stand-in:
/// it reads the published page map (no state lock, no wake-up; issue 13
/// goal 4), checks that `pg` is an element of a vm_page array and that
/// its range was not unplugged (the model's rules, as before), and returns
/// the frame's address.
#[no_mangle]
unsafe extern "C" fn uvm_vm_page_to_phys(pg: *const VmPage) -> u64 {
    freeze_point();
    let Some(map) = page_map() else {
        kernel_panic("VM_PAGE_TO_PHYS with no simulated domain booted");
    };
    map.check_page(pg, "VM_PAGE_TO_PHYS") << PAGE_SHIFT
}

/// For tests: the frame of a vm_page, as the real one's `phys_addr`
/// holds it, with none of VM_PAGE_TO_PHYS's rules (a vm_page of a range
/// unplugged since still answers); !0 for a pointer into no vm_page array.
/// The simulator's vm_page keeps no frame of its own (kernel.rs VmPage).
#[no_mangle]
extern "C" fn sim_vm_page_frame(pg: *const VmPage) -> u64 {
    page_map().map_or(!0, |m| m.frame_of(pg).unwrap_or(!0))
}

/// PHYS_TO_VM_PAGE: uvm_page.c 1.246 `uvm_phys_to_vm_page` finds the
/// segment with `uvm_physseg_find` (uvm_physseg.c 1.18: an rbtree walk,
/// or a binary search of the array without UVM_HOTPLUG) and indexes its
/// vm_pages; no lock is taken. The stand-in does the same on the
/// published page map: a binary search and an index, no state lock.
#[no_mangle]
extern "C" fn uvm_phys_to_vm_page(pa: u64) -> *mut VmPage {
    freeze_point();
    page_map().map_or(std::ptr::null_mut(), |m| m.find(pa >> PAGE_SHIFT))
}

/// pmap_zero_page(9): zero-fill a frame (byte address). On PV the frame is
/// reached through the p2m, so an unbacked frame would fault: panic.
/// With `real_zero` the frame's 4 KiB of host memory are written too, as
/// x86 pmap.c's pmap_zero_page writes the page through the direct map
/// (or a temporary mapping); that write is done outside the state lock.
#[no_mangle]
extern "C" fn pmap_zero_page(pa: u64) {
    let _t = crate::prof::Timer::start(crate::prof::Point::ZeroPage);
    stall_point("zero_page");
    crate::dmap::ZERO_PAGE_CALLS.fetch_add(1, Ordering::Relaxed);
    let pfn = pa >> PAGE_SHIFT;
    with(|k| {
        k.zeroing_rules(pfn);
        if !k.write_frame(pfn, false) {
            kernel_panic(&format!("pmap_zero_page: frame {pfn:#x} is not backed"));
        }
    });
    frame_mem_fill(pfn, 1, 0);
}

impl Kernel {
    /// The rules every zeroing of frame `pfn` follows before it writes,
    /// `pmap_zero_page` (with or without `real_zero`) and the batched
    /// MMUEXT_CLEAR_PAGE alike: a write on a PoD domain populates a PoD
    /// gfn from the cache (p2m_pod_demand_populate, pod.rs), and on PVH a
    /// frame past `pmap_direct_end` faults (growth.rs check_direct_map).
    pub(crate) fn zeroing_rules(&mut self, pfn: u64) {
        self.pod_touch(pfn, crate::pod::Touch::ZeroPage);
        crate::growth::check_direct_map(self, pfn);
    }
}

// ---- the page map: what PHYS_TO_VM_PAGE and VM_PAGE_TO_PHYS read ----

/// A copy of the segment list and of the vm_page arrays, published with
/// every change of either, so that the two page-address translations run
/// without the state lock, as the kernel's do. Every change of the segment
/// set republishes it under the state lock: `insert_seg` (boot segments,
/// `uvm_physseg_plug`, `uvm_physseg_hotplug_add`), `uvm_physseg_unplug`
/// and `uvm_physseg_hotplug_remove` (growth.rs).
///
/// Why a reader on another thread is safe: it loads the pointer with
/// Acquire, which pairs with the AcqRel swap of the publisher, so it sees
/// a fully built map; a map is never changed after it is published, only
/// replaced; a replaced map is kept (a reader may still hold it) and freed
/// only at domain teardown, when no thread of the domain runs; and the
/// vm_page arrays it points into are freed only then too (a removed
/// range's vm_pages stay readable, marked "gone"). A reader racing with a
/// change therefore sees the set before or after it, never a torn one
/// (the real kernel's unlocked rbtree gives no such promise: §13 of
/// docs/kernel-interfaces.md).
pub(crate) struct PageMap {
    /// (start, end, first vm_page) per segment, ordered by start.
    segs: Vec<(u64, u64, *mut VmPage)>,
    /// (base address, elements, first frame) per vm_page array.
    arrays: Vec<(usize, usize, u64)>,
}

static PAGE_MAP: AtomicPtr<PageMap> = AtomicPtr::new(std::ptr::null_mut());
/// Maps replaced in this domain's life (addresses of leaked boxes).
static RETIRED_MAPS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn page_map<'a>() -> Option<&'a PageMap> {
    let p = PAGE_MAP.load(Ordering::Acquire);
    // SAFETY: a published map is a leaked Box, freed only at teardown.
    (!p.is_null()).then(|| unsafe { &*p })
}

impl PageMap {
    fn find(&self, pfn: u64) -> *mut VmPage {
        let i = self.segs.partition_point(|s| s.0 <= pfn);
        match i.checked_sub(1).and_then(|i| self.segs.get(i)) {
            // SAFETY: pfn lies in [start, end) of a segment whose vm_pages
            // are `end - start` elements of one live array.
            Some(&(start, end, pgs)) if pfn < end => unsafe { pgs.add((pfn - start) as usize) },
            _ => std::ptr::null_mut(),
        }
    }

    /// The frame of the vm_page `pg` points at, by its place in its
    /// array; None when it points into no array (or not at an element).
    fn frame_of(&self, pg: *const VmPage) -> Option<u64> {
        let a = pg as usize;
        let sz = std::mem::size_of::<VmPage>();
        self.arrays
            .iter()
            .find(|&&(base, len, _)| a >= base && a < base + len * sz)
            .filter(|&&(base, _, _)| (a - base).is_multiple_of(sz))
            .map(|&(base, _, start)| start + ((a - base) / sz) as u64)
    }

    /// The rules of `Kernel::check_page`, on the map: `pg` must be an
    /// element of a vm_page array whose range was not unplugged (the
    /// segment holding its frame points at this very vm_page).
    fn check_page(&self, pg: *const VmPage, what: &str) -> u64 {
        let a = pg as usize;
        let sz = std::mem::size_of::<VmPage>();
        for &(base, len, start) in &self.arrays {
            if a >= base && a < base + len * sz {
                if !(a - base).is_multiple_of(sz) {
                    kernel_panic(&format!("{what}: misaligned vm_page pointer {pg:p}"));
                }
                let pfn = start + ((a - base) / sz) as u64;
                if self.find(pfn) != pg.cast_mut() {
                    kernel_panic(&format!(
                        "{what}: vm_page of frame {pfn:#x} used after its range was unplugged"
                    ));
                }
                return pfn;
            }
        }
        kernel_panic(&format!("{what}: {pg:p} is not a vm_page"));
    }
}

impl Kernel {
    /// Publishes the segments and arrays as they are now (call under the
    /// state lock after changing either).
    pub(crate) fn publish_page_map(&self) {
        let map = Box::new(PageMap {
            segs: self.segs.iter().map(|s| (s.start, s.end, s.pgs)).collect(),
            arrays: self
                .arrays
                .iter()
                .map(|a| (a.ptr as usize, a.len, a.start))
                .collect(),
        });
        let old = PAGE_MAP.swap(Box::into_raw(map), Ordering::AcqRel);
        if !old.is_null() {
            RETIRED_MAPS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old as usize);
        }
    }
}

/// Unpublishes and frees every page map (domain teardown, once no thread
/// of the domain runs).
pub(crate) fn free_page_maps() {
    let cur = PAGE_MAP.swap(std::ptr::null_mut(), Ordering::AcqRel);
    let mut retired = RETIRED_MAPS.lock().unwrap_or_else(|e| e.into_inner());
    if !cur.is_null() {
        retired.push(cur as usize);
    }
    for p in retired.drain(..) {
        // SAFETY: each was leaked by publish_page_map and is no longer
        // reachable from PAGE_MAP; no thread of the domain runs.
        drop(unsafe { Box::from_raw(p as *mut PageMap) });
    }
}

// ---- real frame memory (DomainConfig::real_zero) ----

/// Host memory for the frames of boot memory, [0, FRAME_MEM_SPAN), in a
/// window of FRAME_MEM_SLOTS slots of 4 KiB (`DomainConfig::
/// real_zero_window`): frame f writes slot f % FRAME_MEM_SLOTS, so every
/// zeroing still writes 4 KiB of real memory while the host memory stays
/// bounded however large the domain is. Null without `real_zero`.
static FRAME_MEM: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// The allocation FRAME_MEM lies in (FRAME_MEM is its first 4 KiB
/// boundary), for the free.
static FRAME_MEM_BASE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static FRAME_MEM_SLOTS: AtomicU64 = AtomicU64::new(0);
static FRAME_MEM_SPAN: AtomicU64 = AtomicU64::new(0);

/// The slots and one page more, at the system allocator's usual
/// alignment: so that its `alloc_zeroed` is a calloc, which gets a large
/// block as fresh zero pages from the host without writing them. (With a
/// 4 KiB alignment the standard library writes the zeros itself, as the
/// global allocator, balloon's HostKmemAllocator, does for every
/// `alloc_zeroed`; either way the whole window was resident from boot.)
fn frame_mem_layout(slots: u64) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(((slots + 1) * PAGE_SIZE) as usize, 16)
        .unwrap_or_else(|_| kernel_panic("real_zero: frame memory too large for the host"))
}

/// Gives frames [0, span) host memory: a window of min(span, window)
/// slots, 4 KiB-aligned (zero-filled and untouched: the host maps it on
/// first write).
pub(crate) fn frame_mem_init(span: u64, window: u64) {
    frame_mem_free();
    let slots = span.min(window);
    if slots == 0 {
        return;
    }
    // SAFETY: the layout has a non-zero size.
    let base = unsafe { System.alloc_zeroed(frame_mem_layout(slots)) };
    if base.is_null() {
        kernel_panic("real_zero: the host has no memory for the frames");
    }
    let skip = (PAGE_SIZE as usize - base as usize % PAGE_SIZE as usize) % PAGE_SIZE as usize;
    // SAFETY: skip < 4 KiB, and the allocation has a page more than the
    // slots need.
    let p = unsafe { base.add(skip) };
    FRAME_MEM_BASE.store(base, Ordering::SeqCst);
    FRAME_MEM_SLOTS.store(slots, Ordering::SeqCst);
    FRAME_MEM_SPAN.store(span, Ordering::SeqCst);
    FRAME_MEM.store(p, Ordering::SeqCst);
}

/// Frees the frame memory (domain teardown).
pub(crate) fn frame_mem_free() {
    FRAME_MEM.store(std::ptr::null_mut(), Ordering::SeqCst);
    let base = FRAME_MEM_BASE.swap(std::ptr::null_mut(), Ordering::SeqCst);
    let slots = FRAME_MEM_SLOTS.swap(0, Ordering::SeqCst);
    FRAME_MEM_SPAN.store(0, Ordering::SeqCst);
    if !base.is_null() {
        // SAFETY: allocated from System by frame_mem_init with this layout.
        unsafe { System.dealloc(base, frame_mem_layout(slots)) };
    }
}

/// The window and the number of slots, when frame `pfn` has host memory.
fn frame_mem_window(pfn: u64) -> Option<(*mut u8, u64)> {
    let p = FRAME_MEM.load(Ordering::Acquire);
    let slots = FRAME_MEM_SLOTS.load(Ordering::Acquire);
    let span = FRAME_MEM_SPAN.load(Ordering::Acquire);
    (!p.is_null() && pfn < span).then_some((p, slots))
}

/// Fills frames [pfn, pfn + n) with `byte` where they have host memory
/// (their slots, wrapping around the window: n frames are n times 4 KiB
/// of writes); returns the frames written.
pub(crate) fn frame_mem_fill(pfn: u64, n: u64, byte: u8) -> u64 {
    let Some((p, slots)) = frame_mem_window(pfn) else {
        return 0;
    };
    let n = n.min(FRAME_MEM_SPAN.load(Ordering::Acquire) - pfn);
    let mut done = 0;
    while done < n {
        let slot = (pfn + done) % slots;
        let run = (n - done).min(slots - slot);
        // SAFETY: [slot, slot + run) lies inside the window; the slots
        // are written by one thread at a time: the module zeroes only on
        // its worker thread (pmap_zero_page and MMUEXT_CLEAR_PAGE from the
        // shim's scrub), and the benchmark and the tests call
        // `Domain::memset_frames` only while the module does not zero.
        unsafe {
            std::ptr::write_bytes(
                p.add((slot * PAGE_SIZE) as usize),
                byte,
                (run * PAGE_SIZE) as usize,
            )
        };
        done += run;
    }
    n
}

/// Clears frame `pfn`'s host memory, if it has any, the way Xen's
/// clear_page_sse2 does for MMUEXT_CLEAR_PAGE (xen/arch/x86/clear_page.S
/// @c39cf093: 8-byte MOVNTI non-temporal stores, then SFENCE): the lines
/// go to memory without being read first.
pub(crate) fn frame_mem_clear_nt(pfn: u64) {
    let Some((p, slots)) = frame_mem_window(pfn) else {
        return;
    };
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_sfence, _mm_stream_si64};
        // SAFETY: the slot lies inside the 4 KiB-aligned window and is
        // written by one thread at a time (as in frame_mem_fill); SSE2
        // (MOVNTI, SFENCE) is part of x86_64.
        unsafe {
            let f = p.add(((pfn % slots) * PAGE_SIZE) as usize) as *mut i64;
            for i in 0..(PAGE_SIZE / 8) as usize {
                _mm_stream_si64(f.add(i), 0);
            }
            _mm_sfence();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, slots);
        frame_mem_fill(pfn, 1, 0);
    }
}

/// Whether frame `pfn`'s host memory is all `byte`. None: it has none, or
/// its slot is shared with another frame of the span (a domain larger
/// than the window), so the slot does not tell what the frame holds.
pub(crate) fn frame_mem_is(pfn: u64, byte: u8) -> Option<bool> {
    let (p, slots) = frame_mem_window(pfn)?;
    let span = FRAME_MEM_SPAN.load(Ordering::Acquire);
    if pfn >= slots || pfn + slots < span {
        return None;
    }
    // SAFETY: pfn < slots: the slot lies inside the window.
    let f = unsafe {
        std::slice::from_raw_parts(p.add((pfn * PAGE_SIZE) as usize), PAGE_SIZE as usize)
    };
    Some(f.iter().all(|&b| b == byte))
}

/// uvm_availmem(9) (uvm_page.c 1.246): the free-page count.
#[no_mangle]
extern "C" fn uvm_availmem(_cached: bool) -> c_int {
    with(|k| k.free.len() as c_int)
}

// ---- physical segments (uvm_physseg.c 1.18) ----

/// uvm_physseg_plug(9). Rules, in order: an array (non-UVM_HOTPLUG) kernel
/// panics after boot ("Tried to add RAM after uvm_page_init"); fault
/// injection and the slab rule return false; any overlap panics (the real
/// kernel panics or corrupts its rbtree); every frame must already be
/// backed by Xen (plug puts all pages on the free list at once). Success:
/// all pages free, physmem += n, uvmexp.npages += n.
///
/// The slab rule (uvm_physseg.c 1.18, 2023-04-09, read in raweden/netbsd
/// @294265af, the same in NetBSD/src 1.9 @496ac5a5): with no room left by
/// earlier unplugs, plug kmem_zallocs a vm_page slab trying sizes from
/// uvmexp.npages down to npages; when npages > uvmexp.npages no size is
/// tried and plug returns false. The model does not reuse unplugged slab
/// room, so it refuses every such plug (the real kernel might accept one
/// after an unplug; a driver must not count on it).
///
/// Slab memory (same source): plug first carves its vm_pages from a live
/// slab with room (the model counts room, not extent fragmentation), else
/// kmem_zallocs a new slab of uvmexp.npages entries. That kmem is never
/// freed (see `Slab`); `sim stat` shows it.
///
/// Concurrent readers (same source): plug and unplug change the segment
/// rbtree (`uvm_physseg_graph`) with no lock, while PHYS_TO_VM_PAGE
/// (`uvm_physseg_find`) walks it on every CPU: page faults, the
/// pagedaemon, pmap. The model runs them under its own lock, so it cannot
/// show a torn read; it counts each such change instead (`sim stat`
/// physseg_unlocked_changes), one per plug or unplug.
#[no_mangle]
unsafe extern "C" fn uvm_physseg_plug(pfn: u64, npages: usize, psp: *mut u64) -> bool {
    let n = npages as u64;
    stall_point("physseg_plug");
    with(|k| {
        k.plug_calls += 1;
        crate::growth::check_plain_plug(k, "uvm_physseg_plug");
        if !k.cfg.hotplug {
            kernel_panic("uvm_physseg_plug: Tried to add RAM after uvm_page_init");
        }
        // A stock kernel with UVM_HOTPLUG takes the plug, but the memory
        // past the boot map is unusable, and the model makes that fatal
        // at once (docs/kernel-growth.md section 1):
        // - PV: the p2m is the builder's mfn_list sized to nr_pages and
        //   xpmap_ptom_map has no bounds check (x86_xpmap.c 1.84.4.2,
        //   xenpmap.h 1.39.12.1), pmap_enter maps any pa at or above
        //   pmap_pa_end (= nr_pages) untranslated (xen_pmap.c 1.23), and
        //   xen_prepare_resume crashes the domain on nr_pages != physmem
        //   (xen_machdep.c 1.27.4.1);
        // - PVH: the direct map is built once to the end of boot memory
        //   (pmap.c 1.414 pmap_init_directmap), so pmap_zero_page of a
        //   plugged page past it faults.
        if k.cfg.flavour != Flavour::Stock {
            // kernel-assisted with `plain_plug_after_boot` (check_plain_plug
            // panics otherwise): the plug runs as UVM_HOTPLUG's does, and
            // what it skipped (p2m, max_pfn, physmem) shows at a save.
        } else if k.cfg.plain_plug_after_boot && k.cfg.mode == Mode::Pv {
            // Test only: a stock XEN3_DOMU with UVM_HOTPLUG takes the plug
            // (the model's p2m table has room); the next save and
            // restore shows the damage (saverestore.rs).
        } else if k.cfg.mode == Mode::Pv {
            kernel_panic(
                "uvm_physseg_plug on stock XEN3_DOMU: frames past the boot p2m \
                 (x86_xpmap.c, xen_pmap.c pmap_enter at or above pmap_pa_end)",
            );
        } else {
            kernel_panic(
                "uvm_physseg_plug on stock GENERIC: page past pmap_direct_end \
                 (pmap.c pmap_init_directmap), fatal page fault",
            );
        }
        if k.faults.plug_fail {
            k.faults_fired += 1;
            return false;
        }
        if n == 0 || n > uvmexp.get().npages as u64 {
            return false;
        }
        let end = pfn + n;
        if let Some(s) = k.segs.iter().find(|s| s.start < end && pfn < s.end) {
            kernel_panic(&format!(
                "uvm_physseg_plug: [{pfn:#x}, {end:#x}) overlaps segment [{:#x}, {:#x})",
                s.start, s.end
            ));
        }
        if let Some(f) = (pfn..end).find(|&f| !k.backed(f)) {
            kernel_panic(&format!(
                "uvm_physseg_plug: plugging unbacked frames (frame {f:#x} of [{pfn:#x}, {end:#x}))"
            ));
        }
        let slab = match k.slabs.iter().position(|s| !s.destroyed && s.room >= n) {
            Some(i) => i,
            None => {
                let entries = uvmexp.get().npages as u64;
                k.slabs.push(Slab {
                    entries,
                    room: entries,
                    segments: 0,
                    destroyed: false,
                });
                k.slabs.len() - 1
            }
        };
        if let Some(s) = k.slabs.get_mut(slab) {
            s.room -= n;
            s.segments += 1;
        }
        let pgs = k.new_page_array(pfn, n);
        let id = k.insert_seg(pfn, end, pgs);
        k.seg_slab.insert(id, slab);
        k.physseg_unlocked_changes += 1;
        k.free.insert_range(pfn, end);
        physmem.set(physmem.get() + n);
        let np = uvmexp.get().npages + n as i32;
        k.sync_uvmexp(np);
        if !psp.is_null() {
            if k.cfg.hotplug {
                // SAFETY: the caller passed a uvm_physseg_t * of pointer size.
                unsafe { psp.write_unaligned(id) };
            } else {
                let idx = k.segs.iter().position(|s| s.id == id).unwrap_or(0) as i32;
                // SAFETY: the caller passed a uvm_physseg_t * of int size.
                unsafe { (psp as *mut i32).write_unaligned(idx) };
            }
        }
        true
    })
}

/// uvm_physseg_unplug(9). pfn in no segment or a range past its segment's
/// end: false (with the real kernel's message); fault injection: false;
/// unplugging the whole last segment panics ("out of memory!"); without
/// UVM_HOTPLUG a middle chunk panics. Unplug does not look at page state
/// in the real kernel, but the caller must own every page: the model
/// panics if one is free or not owned by the module. physmem stays,
/// uvmexp.npages -= n, and the vm_pages become "gone".
#[no_mangle]
extern "C" fn uvm_physseg_unplug(pfn: u64, npages: usize) -> bool {
    let n = npages as u64;
    stall_point("physseg_unplug");
    let msg = with(|k| {
        crate::growth::check_plain_plug(k, "uvm_physseg_unplug");
        let Some(i) = k.seg_of(pfn) else {
            return Some("uvm_physseg_unplug: Tried to unplug from unknown offset\n".to_string());
        };
        let s = k.segs[i];
        let end = pfn + n;
        if n == 0 || end > s.end {
            return Some("uvm_physseg_unplug: Tried to unplug oversized span\n".to_string());
        }
        if k.faults.unplug_fail {
            k.faults_fired += 1;
            return None;
        }
        let whole = pfn == s.start && end == s.end;
        if whole && k.segs.len() == 1 {
            kernel_panic("uvm_physseg_unplug: out of memory! (unplugging the last segment)");
        }
        let middle = pfn > s.start && end < s.end;
        if middle && !k.cfg.hotplug {
            kernel_panic(
                "uvm_physseg_unplug: can't unplug() from the middle of a segment without UVM_HOTPLUG",
            );
        }
        for f in pfn..end {
            match k.page_state(f) {
                Some(PG_MODULE) => {}
                Some(PG_FREE) => kernel_panic(&format!(
                    "uvm_physseg_unplug: unplug of pages on the free list (frame {f:#x})"
                )),
                Some(st) => kernel_panic(&format!(
                    "uvm_physseg_unplug: frame {f:#x} is not owned by the caller (state {st})"
                )),
                None => kernel_panic("uvm_physseg_unplug: frame vanished"),
            }
        }
        // Their vm_pages are "gone" from here on: no segment points at
        // them any more (`check_page`).
        k.module_pages -= n;
        k.physseg_unlocked_changes += 1;
        // The vm_pages go back to their slab's extent; a whole segment
        // drops its use of the slab, and a slab no segment uses has its
        // extent destroyed, its kmem never freed (uvm_physseg.c 1.18).
        let slab = k.seg_slab.get(&s.id).copied();
        if let Some(sl) = slab.and_then(|x| k.slabs.get_mut(x)) {
            sl.room += n;
            if whole {
                sl.segments = sl.segments.saturating_sub(1);
                if sl.segments == 0 {
                    sl.destroyed = true;
                }
            }
        }
        if whole {
            k.seg_slab.remove(&s.id);
            k.segs.remove(i);
        } else if pfn == s.start {
            k.segs[i].start = end;
            // SAFETY: the segment keeps pointing into the same array.
            k.segs[i].pgs = unsafe { s.pgs.add(n as usize) };
        } else if end == s.end {
            k.segs[i].end = pfn;
        } else {
            k.segs[i].end = pfn;
            // SAFETY: the tail starts inside the same array.
            let tail = unsafe { s.pgs.add((end - s.start) as usize) };
            let tid = k.insert_seg(end, s.end, tail);
            if let Some(x) = slab {
                k.seg_slab.insert(tid, x);
                if let Some(sl) = k.slabs.get_mut(x) {
                    sl.segments += 1;
                }
            }
        }
        k.publish_page_map();
        let np = uvmexp.get().npages - n as i32;
        k.sync_uvmexp(np);
        Some(String::new())
    });
    match msg {
        Some(m) if m.is_empty() => true,
        Some(m) => {
            crate::kernel::dmesg_append(&m);
            false
        }
        None => false,
    }
}

/// Handles: in a UVM_HOTPLUG kernel `uvm_physseg_t` is a pointer: the
/// model hands out the segment's id (stable across other plugs/unplugs),
/// invalid = 0 (NULL). In an array kernel it is an int index into the
/// start-ordered array, invalid = -1; an int argument only sets the low 32
/// bits of the register, so it is truncated.
fn handle_to_index(k: &Kernel, h: u64) -> Option<usize> {
    if k.cfg.hotplug {
        if h == 0 {
            return None;
        }
        k.segs.iter().position(|s| s.id == h)
    } else {
        let i = h as u32 as i32;
        (i >= 0 && (i as usize) < k.segs.len()).then_some(i as usize)
    }
}

fn index_to_handle(k: &Kernel, i: Option<usize>) -> u64 {
    match (k.cfg.hotplug, i) {
        (true, Some(i)) => k.segs[i].id,
        (true, None) => 0,
        (false, Some(i)) => i as u64,
        (false, None) => -1i64 as u64,
    }
}

#[no_mangle]
extern "C" fn uvm_physseg_valid_p(h: u64) -> bool {
    with(|k| handle_to_index(k, h).is_some())
}

#[no_mangle]
extern "C" fn uvm_physseg_get_first() -> u64 {
    with(|k| index_to_handle(k, (!k.segs.is_empty()).then_some(0)))
}

#[no_mangle]
extern "C" fn uvm_physseg_get_next(h: u64) -> u64 {
    with(|k| {
        let next = handle_to_index(k, h)
            .map(|i| i + 1)
            .filter(|&i| i < k.segs.len());
        index_to_handle(k, next)
    })
}

/// Frame numbers, end exclusive; an invalid handle gives (paddr_t)-1.
#[no_mangle]
extern "C" fn uvm_physseg_get_start(h: u64) -> u64 {
    with(|k| handle_to_index(k, h).map_or(u64::MAX, |i| k.segs[i].start))
}

#[no_mangle]
extern "C" fn uvm_physseg_get_end(h: u64) -> u64 {
    with(|k| handle_to_index(k, h).map_or(u64::MAX, |i| k.segs[i].end))
}

/// Page states for tests.
pub(crate) fn state_name(st: i32) -> &'static str {
    match st {
        PG_FREE => "free",
        PG_KERNEL => "kernel",
        PG_MODULE => "module",
        PG_GONE => "gone",
        _ => "?",
    }
}
