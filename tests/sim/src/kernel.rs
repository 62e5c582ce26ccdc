// SPDX-License-Identifier: BSD-2-Clause
//! The global state of the simulated domain: UVM, Xen, xenstore, sysctl,
//! kmem, threads. One domain per process at a time (see `Domain`).
//!
//! Locking: everything lives under one `std::sync::Mutex` (`STATE`). The
//! model never calls back into C (sysctl handlers, watch callbacks, kthread
//! functions, modcmd) while holding it. `CHANGED` is notified after every
//! state change so tests can wait for conditions without sleeping.

use std::cell::{Cell, UnsafeCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::frames::{FrameBits, FrameStack, FrameTable};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::{DomainConfig, Faults, Mode};
use crate::sysctl::SysctlTree;

pub(crate) const PAGE_SIZE: u64 = 4096;
pub(crate) const PAGE_SHIFT: u32 = 12;
pub(crate) const INVALID_P2M_ENTRY: u64 = !0;
/// p2m slots allocated past the capacity and filled with `P2M_CANARY`.
pub(crate) const P2M_GUARD: usize = 1024;
pub(crate) const P2M_CANARY: u64 = 0x5ca1_ab1e_dead_f00d;
/// `Kernel::content` of a frame holding data: this tag with the frame's
/// key in the low bits.
pub(crate) const DATA_TAG: u64 = 0xda7a << 48;
/// First MFN the host allocator hands out (distinct from any pfn in use).
pub(crate) const FIRST_MFN: u64 = 0x40_0000;
/// Largest PVH gpfn the model accepts (1 TiB of guest-physical space).
pub(crate) const MAX_GPFN: u64 = 1 << 30;

/// Page states (`Kernel::page_state`): kept in the frame sets, not in the
/// vm_page (which C owns).
pub(crate) const PG_FREE: i32 = 0;
pub(crate) const PG_KERNEL: i32 = 1;
pub(crate) const PG_MODULE: i32 = 2;
pub(crate) const PG_GONE: i32 = 3;

/// The C `struct vm_page` of balloon_host_kernel.h: only the queue entry
/// the shim links it by (pglist). Its frame follows from where it lies in
/// its array, its state from the frame sets, so an array costs host
/// memory only where C wrote a link (issue 13 goal 5).
#[repr(C)]
pub(crate) struct VmPage {
    pub next: *mut VmPage,
    pub prev: *mut *mut VmPage,
}

/// A kernel global shared with C: same layout as `T`, written by the model
/// only under the state lock, and read or written by C directly.
#[repr(transparent)]
pub struct KGlobal<T>(UnsafeCell<T>);

// SAFETY: these stand for kernel globals; the model serialises its own
// accesses under the state lock and C code accesses them as the real
// kernel's globals would be accessed (racy reads of counters are fine).
unsafe impl<T> Sync for KGlobal<T> {}

impl<T: Copy> KGlobal<T> {
    pub(crate) const fn new(v: T) -> Self {
        KGlobal(UnsafeCell::new(v))
    }
    /// Reads the current value.
    pub fn get(&self) -> T {
        // SAFETY: the pointer is valid for the whole program; volatile
        // because C may write it behind the compiler's back.
        unsafe { self.0.get().read_volatile() }
    }
    pub(crate) fn set(&self, v: T) {
        // SAFETY: as in `get`.
        unsafe { self.0.get().write_volatile(v) }
    }
}

/// `struct uvmexp` (the members the shim uses; uvm_extern.h 1.232: all int).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uvmexp {
    pub npages: i32,
    pub free: i32,
    pub freemin: i32,
    pub freetarg: i32,
}

/// `struct start_info` (only nr_pages).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StartInfo {
    pub nr_pages: u64,
}

#[allow(non_upper_case_globals)]
#[no_mangle]
pub static uvmexp: KGlobal<Uvmexp> = KGlobal::new(Uvmexp {
    npages: 0,
    free: 0,
    freemin: 0,
    freetarg: 0,
});
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static physmem: KGlobal<u64> = KGlobal::new(0);
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static hz: KGlobal<i32> = KGlobal::new(100);
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static vm_guest: KGlobal<i32> = KGlobal::new(0);
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static xen_start_info: KGlobal<StartInfo> = KGlobal::new(StartInfo { nr_pages: 0 });
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static xpmap_phys_to_machine_mapping: KGlobal<*mut u64> = KGlobal::new(std::ptr::null_mut());

/// One UVM segment [start, end) (page frame numbers); `pgs` points at the
/// vm_page of `start` inside one of `Kernel::arrays`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg {
    pub id: u64,
    pub start: u64,
    pub end: u64,
    pub pgs: *mut VmPage,
}

/// Host memory the simulator's frame state holds (issue 13 goal 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelBytes {
    /// The frame sets and tables: free list, kernel pages, owned MFNs
    /// with their m2p, populated gfns, frames holding data, PoD entries.
    pub frame_sets: u64,
    /// The PV p2m table (the guest's own, read and written by C).
    pub p2m: u64,
    /// The vm_page arrays as allocated; the host backs only the parts C
    /// wrote (VmPage).
    pub vm_page_arrays: u64,
}

/// A vm_page array for the frames [start, start + len). Never freed before
/// teardown, so stale pointers into an unplugged range stay readable
/// (uvm_physseg.c 1.18 returns unplugged vm_pages to a slab extent and
/// never kmem_frees them either). Zero-filled by the host's allocator,
/// which maps it on first write.
pub(crate) struct PageArray {
    pub ptr: *mut VmPage,
    pub len: usize,
    pub start: u64,
}

/// One entry of a guest memory map, laid out as the BIOS's INT 15h E820
/// call gives it (xen/include/public/memory.h `struct xen_memory_map`:
/// 8-byte address, 8-byte size, 4-byte type, packed).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// E820 types (E820_RAM, E820_RESERVED).
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

pub(crate) struct Kernel {
    pub cfg: DomainConfig,
    pub boot: Instant,
    pub faults: Faults,
    pub booted: bool,
    // UVM
    pub segs: Vec<Seg>,
    pub arrays: Vec<PageArray>,
    pub free: FrameBits,
    /// The kernel's pages, freed most recent first (`kernel_free`).
    pub kernel_pages: FrameStack,
    pub module_pages: u64,
    pub next_seg_id: u64,
    /// Calls of uvm_physseg_plug since boot, whatever they did.
    pub plug_calls: u64,
    // Xen
    pub tot_pages: u64,
    pub max_pages: u64,
    pub host_free: u64,
    pub next_mfn: u64,
    /// PV: the MFNs the domain owns, each with its m2p entry (the pfn
    /// Xen believes it backs, or INVALID_P2M_ENTRY).
    pub owned: FrameTable,
    /// PVH: the populated gfns.
    pub populated: FrameBits,
    /// The backed frames that hold data (not all zero), by `data_key`:
    /// PV the MFN, PVH the gfn, not Xen the pfn.
    pub data: FrameBits,
    pub p2m: Vec<u64>,
    pub p2m_cap: usize,
    pub dirty_given: u64,
    pub clean_given: u64,
    /// Per-CPU m2p update queues (x86_xpmap.c `xpq_queue_array[MAXCPUS]`):
    /// (mfn, pfn) pairs queued and not yet flushed.
    pub xpq: [Vec<(u64, u64)>; crate::xen::NCPU],
    /// vm_page slabs that hotplug allocated (uvm_physseg.c 1.18), and
    /// which slab each plugged segment's vm_pages come from.
    pub slabs: Vec<crate::uvm::Slab>,
    pub seg_slab: HashMap<u64, usize>,
    /// Segment-tree changes made with no lock while other CPUs may read
    /// the tree (PHYS_TO_VM_PAGE): every plug and unplug.
    pub physseg_unlocked_changes: u64,
    /// PVH gfns populate_physmap populated again (the old page orphaned).
    pub replaced_gfns: Vec<u64>,
    /// PVH gfns populated inside reserved parts of the guest memory map.
    pub reserved_hits: Vec<(u64, &'static str)>,
    // xenstore / xenbus
    /// xenstore values are byte strings (NUL included, xs_write takes a length).
    pub store: BTreeMap<String, Vec<u8>>,
    pub watches: Vec<(usize, String)>,
    pub watch_queue: VecDeque<(usize, String)>,
    pub watch_running: Option<usize>,
    pub watch_fired: u64,
    /// The kernel's own watches (control/shutdown), served by the same
    /// xenwatch thread, and their events delivered.
    pub kernel_watches: Vec<(usize, String)>,
    pub kernel_watch_fired: u64,
    /// control/shutdown requests the kernel's handler took, in order.
    pub shutdown_requests: Vec<String>,
    pub xenwatch_stop: bool,
    /// Nodes the guest wrote (xenbus_printf): xenstore loses them across
    /// a suspend and resume (`Domain::resume`).
    pub guest_written: BTreeSet<String>,
    /// PVH: gfns Xen populated outside the guest's RAM (special pages).
    pub special: Vec<u64>,
    /// The memory map the toolstack set (XENMEM_set_memory_map), as
    /// XENMEM_memory_map returns it: (address, size, E820 type) in bytes.
    /// Empty for PV, where libxl sets none (see domain.rs `memory_map`).
    pub memory_map: Vec<E820Entry>,
    /// PVH built with memory < maxmem: populate-on-demand (pod.rs).
    pub pod: Option<crate::pod::Pod>,
    // sysctl
    pub sysctl: SysctlTree,
    // kmem: address -> size
    pub kmem: HashMap<usize, usize>,
    pub kmem_bytes: u64,
    /// Threads blocked in kmem_alloc(KM_SLEEP) while memory is short.
    pub kmem_sleeping: u64,
    /// kmem_alloc(KM_NOSLEEP) calls that returned NULL, memory short.
    pub kmem_nosleep_null: u64,
    // threads and modules
    pub live_kthreads: u64,
    pub modules: Vec<&'static crate::SimModinfo>,
    // what the simulator counts for tests and the soak
    /// HYPERVISOR_memory_op calls made (every command).
    pub hypercalls: u64,
    /// Reservation extents above order 0 done (2 MiB extents).
    pub superpage_extents: u64,
    /// PVH extents above order 0 populated at an unaligned gfn (Xen maps
    /// them with 4 KiB entries: the superpage is lost).
    pub unaligned_superpages: u64,
    /// uvm_pglistalloc calls; each pauses every CPU's free-page cache
    /// (uvm_pgflcache.c 1.6 uvm_pgflcache_pause: an xcall to every CPU).
    pub pglistalloc_calls: u64,
    /// HYPERVISOR_mmuext_op calls made (MMUEXT_CLEAR_PAGE batches).
    pub mmuext_calls: u64,
    /// Times an injected fault changed an outcome.
    pub faults_fired: u64,
    /// Successful module loads since boot.
    pub module_loads: u64,
    /// The kernel-assisted growth interfaces' state (growth.rs).
    pub growth: crate::growth::GrowthState,
    /// Why the domain crashed (HYPERVISOR_crash during a save or
    /// restore, saverestore.rs); a crashed domain runs nothing more.
    pub crashed: Option<String>,
}

// SAFETY: the raw pointers in Kernel point into memory the Kernel owns
// (vm_page arrays) or that C owns; they are only dereferenced under the
// state lock, by whichever thread holds it.
unsafe impl Send for Kernel {}

pub(crate) static STATE: Mutex<Option<Kernel>> = Mutex::new(None);
/// Notified after every change of model state.
pub(crate) static CHANGED: Changed = Changed::new();

/// The condvar behind `CHANGED`, with a count of its waiters.
///
/// std's futex condvar makes a FUTEX_WAKE system call on every
/// `notify_all`, waiter or not; called after every stand-in, that made
/// each uvm_pagealloc, pmap_zero_page or uvm_pagefree of the module cost a
/// system call the real kernel's versions do not (issue 13 goal 4). So
/// `notify_all` wakes only when a waiter is counted. No wake-up is lost to
/// the count: a waiter counts itself while it holds STATE, before the wait
/// releases STATE, and every change a waiter waits for is made under STATE
/// (or, made elsewhere, is followed by taking STATE before the notify, as
/// `notify_changed` does); the notifier reads the count after that, so it
/// sees every waiter that could have missed the change.
///
/// This was tried before and reverted, because the soak's self-test then
/// replayed its walk without the failure 2 times in 3. That was no lost
/// wake-up: the walk wrote memory/target twice in a row, and the module's
/// watch callback reads the node when xenwatch runs it; in the replay
/// xenwatch ran after the second write, both callbacks read the second
/// (refused) value, nothing was inflated and nothing unzeroed reached Xen
/// (`targets_refused` 2 instead of 1). A futex system call after every
/// change only made the control thread slow enough for xenwatch to run
/// first most of the time. The soak now waits for watch delivery after
/// every action (`sim watches-delivered`).
pub(crate) struct Changed {
    cv: Condvar,
    waiters: AtomicU64,
}

impl Changed {
    const fn new() -> Self {
        Changed {
            cv: Condvar::new(),
            waiters: AtomicU64::new(0),
        }
    }

    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.cv.notify_all();
        }
    }

    /// `Condvar::wait` on STATE's guard, counted.
    pub(crate) fn wait<'a>(
        &self,
        g: MutexGuard<'a, Option<Kernel>>,
    ) -> std::sync::LockResult<MutexGuard<'a, Option<Kernel>>> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// `Condvar::wait_timeout` on STATE's guard, counted.
    pub(crate) fn wait_timeout<'a>(
        &self,
        g: MutexGuard<'a, Option<Kernel>>,
        d: std::time::Duration,
    ) -> std::sync::LockResult<(MutexGuard<'a, Option<Kernel>>, std::sync::WaitTimeoutResult)> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = self.cv.wait_timeout(g, d);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }
}
/// Wakes the xenwatch thread.
pub(crate) static WATCHQ: Condvar = Condvar::new();

pub(crate) fn lock() -> MutexGuard<'static, Option<Kernel>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the booted kernel under the state lock, then notifies
/// waiters. A kernel service used with no domain booted is a panic. A
/// thread of a destroyed domain stops here for good (see `freeze_point`).
pub(crate) fn with<R>(f: impl FnOnce(&mut Kernel) -> R) -> R {
    freeze_point();
    let mut g = lock();
    let Some(k) = g.as_mut() else {
        drop(g);
        kernel_panic("kernel service used with no simulated domain booted");
    };
    let r = f(k);
    drop(g);
    CHANGED.notify_all();
    r
}

/// Wakes `wait_until` callers after a change made outside `with`.
pub(crate) fn notify_changed() {
    drop(lock());
    CHANGED.notify_all();
}

// ---- domain generations: a domain destroyed with a module loaded ----
//
// Xen can destroy a domain whatever its kernel is doing: the guest's
// threads simply never run again. When the simulated domain is torn down
// while a module is still loaded (its MODULE_CMD_FINI refused, as it must
// while Xen cannot give memory back), the module's threads are frozen the
// same way: every kernel thread and the xenwatch thread carries the
// generation of the domain it was created in, and once that domain is no
// longer the live one, the thread parks for good at its next entry into
// the simulated kernel (a kernel service, a mutex or condvar wait). No
// thread of a destroyed domain can touch a later domain's state.

/// Generation of the booted domain; 0 while none is (or while the one
/// being torn down freezes its threads).
pub(crate) static LIVE_GEN: AtomicU64 = AtomicU64::new(0);
static NEXT_GEN: AtomicU64 = AtomicU64::new(1);
/// Threads of the domain being destroyed that have parked.
pub(crate) static PARKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The generation of the domain this thread belongs to (0: not a
    /// thread of the simulated kernel: a test, a console, a client).
    static MY_GEN: Cell<u64> = const { Cell::new(0) };
}

/// A new generation for a domain being booted.
pub(crate) fn new_generation() -> u64 {
    NEXT_GEN.fetch_add(1, Ordering::SeqCst)
}

/// Marks the calling thread as a kernel thread of domain `gen`.
pub(crate) fn adopt_thread(gen: u64) {
    MY_GEN.with(|g| g.set(gen));
}

/// Whether the calling thread belongs to a domain that is no longer live.
pub(crate) fn thread_is_frozen() -> bool {
    let me = MY_GEN.with(|g| g.get());
    me != 0 && me != LIVE_GEN.load(Ordering::SeqCst)
}

/// Parks the calling thread for good if its domain was destroyed.
pub(crate) fn freeze_point() {
    if thread_is_frozen() {
        park_forever();
    }
}

/// Stops the calling thread of a destroyed domain for good. It holds no
/// simulator lock when it gets here.
pub(crate) fn park_forever() -> ! {
    PARKED.fetch_add(1, Ordering::SeqCst);
    CHANGED.notify_all();
    loop {
        std::thread::park();
    }
}

// ---- dmesg and panic ----

/// The kernel message buffer. `lines` hold the text of each line;
/// `stamps` the time stamp the kernel put in front of it.
pub(crate) struct Dmesg {
    pub lines: Vec<String>,
    pub stamps: Vec<String>,
    pub partial: String,
    /// The stamp of the line being written (taken at its first character).
    pub partial_stamp: Option<String>,
    /// The simulated clock: boot instant and time scale.
    pub clock: Option<(Instant, u32)>,
}

pub(crate) static DMESG: Mutex<Dmesg> = Mutex::new(Dmesg {
    lines: Vec::new(),
    stamps: Vec::new(),
    partial: String::new(),
    partial_stamp: None,
    clock: None,
});

/// NetBSD's default precision of the stamp: `log_ts_prec` = 7 fractional
/// digits (subr_prf.c 1.201).
const LOG_TS_PREC: u32 = 7;

/// The stamp the kernel prints in front of every message line, as
/// subr_prf.c 1.201 `addtstamp` formats it (raweden/netbsd @0b31dd71; the
/// netbsd-10 revision was not readable): getnanouptime(9), the
/// nanoseconds cut to `log_ts_prec` (7) digits with the last one
/// rounded, then `"[% 4jd.%.*ld] "`.
pub(crate) fn klog_stamp(uptime_ns: u128) -> String {
    let sec = uptime_ns / 1_000_000_000;
    let mut fsec = uptime_ns % 1_000_000_000;
    let mut n = LOG_TS_PREC;
    while n < 8 {
        fsec /= 10;
        n += 1;
    }
    fsec = fsec / 10 + u128::from(fsec % 10 >= 5);
    format!(
        "[{:>4}.{:0width$}] ",
        format!(" {sec}"),
        fsec,
        width = LOG_TS_PREC as usize
    )
}

impl Dmesg {
    fn stamp_now(&self) -> String {
        let ns = self.clock.map_or(0, |(boot, scale)| {
            boot.elapsed().as_nanos() * u128::from(scale.max(1))
        });
        klog_stamp(ns)
    }
}

pub(crate) fn dmesg_lock() -> MutexGuard<'static, Dmesg> {
    DMESG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Appends kernel printf output; complete lines become dmesg lines.
pub(crate) fn dmesg_append(s: &str) {
    freeze_point();
    let echo = std::env::var_os("SIM_DMESG").is_some();
    let mut d = dmesg_lock();
    for ch in s.chars() {
        if ch == '\n' {
            let line = std::mem::take(&mut d.partial);
            let stamp = match d.partial_stamp.take() {
                Some(s) => s,
                None => d.stamp_now(),
            };
            if echo {
                eprintln!("[dmesg] {stamp}{line}");
            }
            d.lines.push(line);
            d.stamps.push(stamp);
        } else {
            // subr_prf.c putchar: the stamp goes in front of the first
            // character of each line.
            if d.partial_stamp.is_none() {
                let stamp = d.stamp_now();
                d.partial_stamp = Some(stamp);
            }
            d.partial.push(ch);
        }
    }
}

/// A simulated kernel panic: the driver broke a kernel rule. Records the
/// message in dmesg, prints it loudly and aborts the process.
pub(crate) fn kernel_panic(msg: &str) -> ! {
    {
        let mut d = dmesg_lock();
        let line = format!("panic: {msg}");
        let stamp = d.stamp_now();
        d.lines.push(line);
        d.stamps.push(stamp);
    }
    eprintln!("\n*** SIMULATED KERNEL PANIC: {msg}");
    eprintln!("*** (the code under test broke a NetBSD/Xen kernel rule; aborting)\n");
    std::process::abort();
}

impl Kernel {
    pub(crate) fn mode(&self) -> Mode {
        self.cfg.mode
    }

    /// Index of the segment holding `pfn`.
    pub(crate) fn seg_of(&self, pfn: u64) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.start <= pfn);
        if i == 0 {
            return None;
        }
        (pfn < self.segs[i - 1].end).then_some(i - 1)
    }

    pub(crate) fn page_ptr(&self, pfn: u64) -> Option<*mut VmPage> {
        let s = self.segs[self.seg_of(pfn)?];
        // SAFETY: pfn lies in [start, end) of a live segment whose pgs
        // points at `end - start` vm_pages of one array.
        Some(unsafe { s.pgs.add((pfn - s.start) as usize) })
    }

    /// The state of a frame inside a segment: on the free list, the
    /// kernel's, or else the module's. None outside every segment.
    pub(crate) fn page_state(&self, pfn: u64) -> Option<i32> {
        self.seg_of(pfn)?;
        Some(if self.free.contains(pfn) {
            PG_FREE
        } else if self.kernel_pages.contains(pfn) {
            PG_KERNEL
        } else {
            PG_MODULE
        })
    }

    /// Validates a vm_page pointer handed in by C: it must point at an
    /// element of one of our arrays, of a range still plugged (the
    /// segment holding its frame points at this very vm_page). Returns
    /// its pfn and state.
    pub(crate) fn check_page(&self, pg: *const VmPage, what: &str) -> (u64, i32) {
        let a = pg as usize;
        let sz = std::mem::size_of::<VmPage>();
        for arr in &self.arrays {
            let base = arr.ptr as usize;
            if a >= base && a < base + arr.len * sz {
                if !(a - base).is_multiple_of(sz) {
                    kernel_panic(&format!("{what}: misaligned vm_page pointer {pg:p}"));
                }
                let pfn = arr.start + ((a - base) / sz) as u64;
                if self.page_ptr(pfn) != Some(pg.cast_mut()) {
                    kernel_panic(&format!(
                        "{what}: vm_page of frame {pfn:#x} used after its range was unplugged"
                    ));
                }
                return (pfn, self.page_state(pfn).unwrap_or(PG_GONE));
            }
        }
        kernel_panic(&format!("{what}: {pg:p} is not a vm_page"));
    }

    pub(crate) fn p2m_get(&self, pfn: u64) -> u64 {
        if (pfn as usize) < self.p2m_cap {
            // SAFETY: index within the allocation; volatile because C
            // writes the table directly (xpmap_ptom_map / _unmap).
            unsafe { self.p2m.as_ptr().add(pfn as usize).read_volatile() }
        } else {
            INVALID_P2M_ENTRY
        }
    }

    pub(crate) fn p2m_set(&mut self, pfn: u64, mfn: u64) {
        if (pfn as usize) < self.p2m_cap {
            // SAFETY: index within the allocation.
            unsafe { self.p2m.as_mut_ptr().add(pfn as usize).write_volatile(mfn) }
        }
    }

    /// Whether `pfn` is backed by memory the domain owns: PV: a valid p2m
    /// entry holding an MFN the domain owns; PVH: a populated gpfn; not
    /// Xen: always.
    pub(crate) fn backed(&self, pfn: u64) -> bool {
        match self.mode() {
            Mode::Pv => {
                let m = self.p2m_get(pfn);
                self.owned.contains(m)
            }
            // A PoD entry is memory the guest may use: Xen populates it
            // on first access (pod.rs).
            Mode::Pvh => self.populated.contains(pfn) || self.pod_entry(pfn),
            Mode::NotXen => true,
        }
    }

    /// The key a backed frame's content is kept under (`data`): PV the
    /// MFN the p2m maps it to, PVH the populated gfn, not Xen the pfn.
    /// None when the frame is not backed (a PoD entry has no page yet).
    fn data_key(&self, pfn: u64) -> Option<u64> {
        match self.mode() {
            Mode::Pv => {
                let m = self.p2m_get(pfn);
                self.owned.contains(m).then_some(m)
            }
            Mode::Pvh => self.populated.contains(pfn).then_some(pfn),
            Mode::NotXen => Some(pfn),
        }
    }

    /// What a backed frame holds: 0 when it is all zero, otherwise a tag
    /// naming its page (the model keeps one bit of content per page).
    pub(crate) fn content(&self, pfn: u64) -> Option<u64> {
        let key = self.data_key(pfn)?;
        Some(if self.data.contains(key) {
            DATA_TAG | key
        } else {
            0
        })
    }

    /// Writes data (or zeros) over a backed frame; false if it is not
    /// backed.
    pub(crate) fn write_frame(&mut self, pfn: u64, data: bool) -> bool {
        let Some(key) = self.data_key(pfn) else {
            return false;
        };
        if data {
            self.data.insert(key);
        } else {
            self.data.remove(key);
        }
        true
    }

    /// Frames the domain has backed (what Xen's reservation must equal).
    pub(crate) fn backed_frames(&self) -> u64 {
        match self.mode() {
            Mode::Pv => self.owned.len(),
            // p2m-pod.c: tot_pages == populated + pod.count.
            Mode::Pvh => self.populated.len() + self.pod_cache(),
            Mode::NotXen => 0,
        }
    }

    /// Host memory the model's frame state holds (`ModelBytes`).
    pub(crate) fn model_bytes(&self) -> ModelBytes {
        let sets = [&self.free, &self.populated, &self.data]
            .iter()
            .map(|s| s.heap_bytes())
            .sum::<u64>()
            + self.kernel_pages.heap_bytes()
            + self.owned.heap_bytes()
            + self.pod.as_ref().map_or(0, |p| p.entries.heap_bytes());
        ModelBytes {
            frame_sets: sets,
            p2m: (self.p2m.capacity() * 8) as u64,
            vm_page_arrays: self
                .arrays
                .iter()
                .map(|a| (a.len * std::mem::size_of::<VmPage>()) as u64)
                .sum(),
        }
    }

    pub(crate) fn sync_uvmexp(&self, npages: i32) {
        let mut u = uvmexp.get();
        u.npages = npages;
        u.free = self.free.len() as i32;
        uvmexp.set(u);
    }

    pub(crate) fn uptime_ns(&self) -> u128 {
        self.boot.elapsed().as_nanos() * u128::from(self.cfg.time_scale.max(1))
    }
}
