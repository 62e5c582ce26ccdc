//! The `balloon_rs_*` entry points the C shim calls (netbsd-glue/glue.h).
//!
//! The core's state lives in a `Box<Core>` whose pointer the shim keeps
//! as an opaque `struct balloon_rs *`, in two halves under two different
//! exclusions (netbsd-glue/glue.h):
//!
//! - [`Control`], behind the shim's `sc_lock`: every entry point but
//!   `balloon_rs_step` and `balloon_rs_release` is called with it held;
//!   those two take it themselves, for short critical sections only,
//!   through `balloon_shim_core_lock`/`unlock` ([`Locked`]);
//! - [`Exec`], the step's own buffers: only `balloon_rs_step` and
//!   `balloon_rs_release` touch it, and the shim lets one thread at a
//!   time make those calls (the worker thread, or unload once the worker
//!   has stopped stepping), without `sc_lock`.
//!
//! Every argument from C is checked: a bad value is an errno, never a
//! panic.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::mem::MaybeUninit;

use balloon_sys as sys;
use cty::{c_char, c_int};

use crate::backoff::BackoffConfig;
use crate::driver::{Control, Driver, Exec, GuestMode, Shared, ShimFailure, StepStatus};
use crate::errno::Errno;
use crate::policy::{Refusal, Source};
use crate::segments::{PlugLimits, SegmentError};
use crate::units::{Kib, Millis, Pages, Pfn, PfnRange, Uptime};
use crate::worker::{Boot, Growth, InitError, Worker};

use super::platform::ShimPlatform;

/// Plugged segments start on 2 MiB boundaries (large-page friendly).
const PLUG_ALIGN: Pages = Pages(512);
/// The most frames plugged at once: 128 MiB, Linux's hotplug section.
const PLUG_MAX_SEGMENT: Pages = Pages(32768);
/// PVH: [0xfc000000, 4 GiB) is never RAM. libxl puts the ACPI tables at
/// 0xfc000000 (libxl_x86_acpi.c), the local APIC is at 0xfee00000
/// (libxl_arch.h) and the xenstore and console rings just below
/// 0xff000000 (xg_dom_x86.c); Xen's populate_physmap would replace them
/// without complaint (p2m.c p2m_add_page). No plug goes there.
const PVH_HOLE_START: Pfn = Pfn(0xfc000);
const PVH_HOLE_PAGES: Pages = Pages(0x100000 - 0xfc000);

/// The core's state behind `struct balloon_rs *`: the two halves, each
/// reached only under its own exclusion (see the module's text).
struct Core {
    control: UnsafeCell<Control>,
    exec: UnsafeCell<Exec>,
}

fn errno(e: Errno) -> c_int {
    e.0
}

/// The core behind an opaque pointer from the shim; only its cells are
/// ever borrowed mutably, never the `Core` itself.
///
/// # Safety
/// `rs` must be NULL or a pointer from `balloon_rs_attach` not yet given
/// to `balloon_rs_detach`.
unsafe fn core_ref<'a>(rs: *mut sys::balloon_rs) -> Option<&'a Core> {
    // SAFETY: per the function's contract, `rs` is NULL or a live
    // Box<Core> pointer; a shared reference to it lets the halves be
    // reached only through their UnsafeCells.
    unsafe { rs.cast::<Core>().cast_const().as_ref() }
}

/// The control half behind an opaque pointer from the shim.
///
/// # Safety
/// As for [`core_ref`], and the caller holds the shim's `sc_lock`, so no
/// other reference to the control half is live.
unsafe fn control_mut<'a>(rs: *mut sys::balloon_rs) -> Option<&'a mut Control> {
    // SAFETY: per this function's contract.
    let core = unsafe { core_ref(rs) }?;
    // SAFETY: sc_lock is held (contract): every other use of the control
    // half is under it too, so this is the only reference.
    Some(unsafe { &mut *core.control.get() })
}

/// The control half as a step reaches it: `sc_lock` taken around each
/// closure, through the shim.
struct Locked<'a>(&'a UnsafeCell<Control>);

/// Holds the shim's `sc_lock` while it lives.
struct ShimLock;

impl ShimLock {
    fn enter() -> ShimLock {
        let _shim = super::ShimCall::enter();
        // SAFETY: mutex_enter on the softc's lock, from thread context;
        // the caller (a step or release) does not hold it already.
        unsafe { sys::balloon_shim_core_lock() };
        ShimLock
    }
}

impl Drop for ShimLock {
    fn drop(&mut self) {
        let _shim = super::ShimCall::enter();
        // SAFETY: this thread took the lock in ShimLock::enter.
        unsafe { sys::balloon_shim_core_unlock() };
    }
}

impl Shared for Locked<'_> {
    fn locked<R>(&mut self, f: impl FnOnce(&mut Control) -> R) -> R {
        let _lock = ShimLock::enter();
        // SAFETY: sc_lock is held until `_lock` drops, after `f` returns:
        // every other use of the control half holds it too, so this is
        // the only reference while `f` runs.
        f(unsafe { &mut *self.0.get() })
    }
}

/// Builds the core from what the shim found at load.
///
/// # Safety
/// `bi` must point to a valid `balloon_boot_info`, `rsp` to writable
/// storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_attach(
    bi: *const sys::balloon_boot_info,
    rsp: *mut *mut sys::balloon_rs,
) -> c_int {
    let _ctx = super::CoreContext::enter();
    // SAFETY: the shim passes a valid, initialised boot info or NULL.
    let Some(bi) = (unsafe { bi.as_ref() }) else {
        return errno(Errno::EINVAL);
    };
    if rsp.is_null() {
        return errno(Errno::EINVAL);
    }
    let mode = match bi.mode {
        sys::balloon_guest_mode_BALLOON_GUEST_PV => GuestMode::Pv,
        sys::balloon_guest_mode_BALLOON_GUEST_PVH => GuestMode::Pvh,
        _ => return errno(Errno::EINVAL),
    };
    let n = bi.nsegments.min(bi.segments.len());
    // Every allocation of attach is fallible: the core's heap is
    // KM_NOSLEEP (glue.h), and a NULL must be ENOMEM, never a panic
    // through handle_alloc_error.
    let mut segments = Vec::new();
    if segments.try_reserve_exact(n).is_err() {
        return errno(Errno::ENOMEM);
    }
    for s in bi.segments.get(..n).unwrap_or(&[]) {
        match PfnRange::new(Pfn(s.start_pfn), Pfn(s.end_pfn)) {
            Some(r) => segments.push(r),
            None => return errno(Errno::EINVAL),
        }
    }
    // Populate-on-demand: a PVH guest whose reservation is below the RAM
    // of its memory map (see `Worker::start_pod`).
    let map = segments
        .iter()
        .fold(Pages::ZERO, |a, r| a.saturating_add(r.len()));
    let reservation = Pages(bi.reservation_pages);
    let pod = mode == GuestMode::Pvh && reservation < map;
    let boot = Boot {
        segments: &segments,
        reservation: if pod { map } else { reservation },
        max_reservation: Pages(bi.max_reservation_pages),
        freemin: Pages(bi.freemin_pages),
        growth: match bi.growth {
            sys::balloon_growth_BALLOON_GROWTH_AVAILABLE => Growth::Available,
            sys::balloon_growth_BALLOON_GROWTH_PV_P2M => Growth::PvP2m,
            sys::balloon_growth_BALLOON_GROWTH_PVH_DIRECT_MAP => Growth::PvhDirectMap,
            _ => Growth::NoUvmHotplug,
        },
        plug: PlugLimits {
            align: PLUG_ALIGN,
            max_segment: PLUG_MAX_SEGMENT,
            frame_limit: Pfn(bi.frame_limit_pfn),
            floor: Pfn(bi.plug_floor_pfn),
            hole: match mode {
                GuestMode::Pvh => PfnRange::with_len(PVH_HOLE_START, PVH_HOLE_PAGES),
                GuestMode::Pv => None,
            },
        },
    };
    let mut worker = match Worker::new(&boot) {
        Ok(w) => w,
        Err(InitError::Segments(SegmentError::NoMemory)) => return errno(Errno::ENOMEM),
        Err(_) => return errno(Errno::EINVAL),
    };
    if pod {
        worker.start_pod(reservation, boot.freemin);
    }
    if mode == GuestMode::Pvh {
        worker.set_map_offset(Pages(bi.outside_ram_pages));
    }
    let core = match boxed_core(worker, mode) {
        Ok(c) => c,
        Err(e) => return errno(e),
    };
    // SAFETY: `rsp` is non-NULL and writable per the contract.
    unsafe { rsp.write(Box::into_raw(core).cast()) };
    0
}

/// The core for `worker`, on the heap. A function of its own, never
/// inlined: the driver built from the worker, its two halves and the
/// core are each some hundreds of bytes, and inlined they would sit in
/// `balloon_rs_attach`'s frame beside the copies `Worker::new` needs, on
/// the one chain the kernel stack budget counts (kobjcheck stack, 4 KiB
/// an entry point).
#[inline(never)]
fn boxed_core(worker: Worker, mode: GuestMode) -> Result<Box<Core>, Errno> {
    let (control, exec) = Driver::new(worker, mode)?.split();
    try_box(Core {
        control: UnsafeCell::new(control),
        exec: UnsafeCell::new(exec),
    })
    .ok_or(Errno::ENOMEM)
}

/// `Box::new` that answers None, instead of calling
/// `handle_alloc_error`, when the allocator returns NULL.
fn try_box(core: Core) -> Option<Box<Core>> {
    let layout = core::alloc::Layout::new::<Core>();
    // SAFETY: Core is not zero-sized (it holds Vecs), so the layout has a
    // non-zero size as `alloc` requires.
    let p = unsafe { alloc::alloc::alloc(layout) }.cast::<Core>();
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a fresh, non-NULL block with Core's layout from the
    // global allocator: writing a Core there and handing it to Box (which
    // frees it with the same allocator and layout) is sound.
    unsafe {
        p.write(core);
        Some(Box::from_raw(p))
    }
}

/// Frees the core.
///
/// # Safety
/// `rs` must be NULL or from `balloon_rs_attach`, and not used again.
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_detach(rs: *mut sys::balloon_rs) {
    let _ctx = super::CoreContext::enter();
    if !rs.is_null() {
        // SAFETY: `rs` came from Box::into_raw in attach and is dropped once.
        drop(unsafe { Box::from_raw(rs.cast::<Core>()) });
    }
}

/// Carries out at most one step, taking `sc_lock` only to decide it and
/// to publish its result.
///
/// # Safety
/// As for [`core_ref`]; the caller does NOT hold `sc_lock`, and no other
/// thread is in `balloon_rs_step` or `balloon_rs_release` for this core;
/// `wait_ms` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_step(
    rs: *mut sys::balloon_rs,
    now_ms: u64,
    wait_ms: *mut u64,
) -> sys::balloon_step_status {
    let _ctx = super::CoreContext::enter();
    // SAFETY: per this function's contract.
    let Some(core) = (unsafe { core_ref(rs) }) else {
        return sys::balloon_step_status_BALLOON_STEP_IDLE;
    };
    // SAFETY: only one thread steps (contract): this is the only
    // reference to the step's half.
    let exec = unsafe { &mut *core.exec.get() };
    let mut shared = Locked(&core.control);
    let (status, wait) = match exec.step(&mut ShimPlatform, &mut shared, Uptime(now_ms)) {
        StepStatus::Again => (sys::balloon_step_status_BALLOON_STEP_AGAIN, 0),
        StepStatus::Sleep(ms) => (sys::balloon_step_status_BALLOON_STEP_SLEEP, ms),
        StepStatus::Idle => (sys::balloon_step_status_BALLOON_STEP_IDLE, 0),
    };
    // SAFETY: NULL-checked by as_mut; otherwise writable per the contract.
    if let Some(w) = unsafe { wait_ms.as_mut() } {
        *w = wait;
    }
    status
}

/// The watch on memory/target fired: what `xenbus_read` gave.
///
/// # Safety
/// As for [`control_mut`]; `text` valid for `len` bytes (or NULL). Only the
/// first `BALLOON_XS_VALUE_LEN` bytes (the shim's buffer) are ever read.
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_xenstore_event(
    rs: *mut sys::balloon_rs,
    error: c_int,
    text: *const c_char,
    len: usize,
    resync: bool,
    now_ms: u64,
) -> c_int {
    let _ctx = super::CoreContext::enter();
    // SAFETY: per this function's contract.
    let Some(core) = (unsafe { control_mut(rs) }) else {
        return errno(Errno::EINVAL);
    };
    let read = if error != 0 {
        Err(Errno(error))
    } else if text.is_null() || len == 0 {
        Ok(&[][..])
    } else {
        let len = len.min(sys::BALLOON_XS_VALUE_LEN as usize);
        // SAFETY: `text` is valid for `len` bytes per the contract (cut
        // to the shim's buffer size) and not written while this slice
        // lives.
        Ok(unsafe { core::slice::from_raw_parts(text.cast::<u8>(), len) })
    };
    match core.xenstore_event(&mut ShimPlatform, read, resync, Uptime(now_ms)) {
        Ok(()) => 0,
        Err(e) => errno(e),
    }
}

/// Xen's maximum reservation now and the text of `memory/static-max`,
/// read afresh whenever a target arrives.
///
/// # Safety
/// As for [`control_mut`]; `static_max` valid for `len` bytes (or NULL with 0).
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_set_limit(
    rs: *mut sys::balloon_rs,
    max_reservation_pages: u64,
    static_max: *const c_char,
    len: usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let Some(core) = (unsafe { control_mut(rs) }) else {
        return errno(Errno::EINVAL);
    };
    if max_reservation_pages == 0 {
        return errno(Errno::EINVAL);
    }
    let text: &[u8] = if static_max.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: `static_max` is valid for `len` bytes per the contract.
        unsafe { core::slice::from_raw_parts(static_max.cast::<u8>(), len) }
    };
    // An unreadable or malformed static-max bounds nothing.
    let smax = crate::policy::parse_kib(text).ok();
    let pvh = core.mode() == GuestMode::Pvh;
    core.worker_mut()
        .set_limit(Pages(max_reservation_pages), smax, pvh);
    0
}

/// `memory/target` as read at load, just after the reservation (KiB
/// text, NUL padding ends it): fixes the PVH toolstack offset when the
/// two agree (see `Worker::set_load_target`). An unreadable or malformed
/// value changes nothing.
///
/// # Safety
/// As for [`control_mut`]; `target` valid for `len` bytes (or NULL with 0).
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_load_target(
    rs: *mut sys::balloon_rs,
    target: *const c_char,
    len: usize,
) -> c_int {
    let _ctx = super::CoreContext::enter();
    // SAFETY: per this function's contract.
    let Some(core) = (unsafe { control_mut(rs) }) else {
        return errno(Errno::EINVAL);
    };
    let text: &[u8] = if target.is_null() || len == 0 {
        &[]
    } else {
        let len = len.min(sys::BALLOON_XS_VALUE_LEN as usize);
        // SAFETY: `target` is valid for `len` bytes per the contract (cut
        // to the shim's buffer size).
        unsafe { core::slice::from_raw_parts(target.cast::<u8>(), len) }
    };
    match crate::policy::parse_kib(text) {
        Ok(kib) => {
            core.worker_mut().set_load_target(kib);
            0
        }
        Err(r) => errno(r.errno()),
    }
}

/// A failure of the shim's own, for the log.
///
/// # Safety
/// As for [`control_mut`].
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_shim_failed(
    rs: *mut sys::balloon_rs,
    what: sys::balloon_shim_failure,
    error: c_int,
    now_ms: u64,
) {
    // SAFETY: per this function's contract.
    let Some(core) = (unsafe { control_mut(rs) }) else {
        return;
    };
    let what = match what {
        sys::balloon_shim_failure_BALLOON_FAIL_WORKER_RESTART => ShimFailure::WorkerRestart,
        sys::balloon_shim_failure_BALLOON_FAIL_WATCH_RESTART => ShimFailure::WatchRestart,
        sys::balloon_shim_failure_BALLOON_FAIL_WATCH_BARRIER => ShimFailure::WatchBarrier,
        _ => return,
    };
    core.shim_failed(&mut ShimPlatform, what, Errno(error), Uptime(now_ms));
}

/// Reads a value behind hw.balloon.
///
/// # Safety
/// As for [`control_mut`]; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_get(
    rs: *mut sys::balloon_rs,
    what: sys::balloon_value,
    out: *mut u64,
) -> c_int {
    let _ctx = super::CoreContext::enter();
    // SAFETY: per this function's contract.
    let Some(core) = (unsafe { control_mut(rs) }) else {
        return errno(Errno::EINVAL);
    };
    let Some(v) = value(core, what) else {
        return errno(Errno::EINVAL);
    };
    // SAFETY: NULL-checked by as_mut; otherwise writable per the contract.
    match unsafe { out.as_mut() } {
        Some(o) => {
            *o = v;
            0
        }
        None => errno(Errno::EINVAL),
    }
}

fn value(core: &Control, what: sys::balloon_value) -> Option<u64> {
    let w = core.worker();
    let kib = |p: Pages| p.saturating_kib().0;
    let s = w.stats();
    let d = core.stats();
    let c = w.counts();
    Some(match what {
        // Sizes as the toolstack counts them (memory/target, xl list).
        sys::balloon_value_BALLOON_V_CURRENT_KIB => kib(w.as_toolstack(w.current())),
        sys::balloon_value_BALLOON_V_TARGET_KIB => kib(w.as_toolstack(w.target())),
        sys::balloon_value_BALLOON_V_MIN_KIB => kib(w.as_toolstack(w.policy().floor())),
        sys::balloon_value_BALLOON_V_MAX_KIB => kib(w.as_toolstack(w.policy().max())),
        sys::balloon_value_BALLOON_V_OFFSET_KIB => kib(w.toolstack_offset()),
        sys::balloon_value_BALLOON_V_POD_OWED_KIB => kib(w.pod_owed()),
        sys::balloon_value_BALLOON_V_BATCH => w.policy().batch().0,
        sys::balloon_value_BALLOON_V_SCRUB => u64::from(w.policy().scrub()),
        sys::balloon_value_BALLOON_V_HOTPLUG => u64::from(w.policy().hotplug()),
        sys::balloon_value_BALLOON_V_UNPLUG => u64::from(w.policy().unplug()),
        sys::balloon_value_BALLOON_V_RETRY_DELAY_MAX_MS => w.backoff_config().max_delay.0,
        sys::balloon_value_BALLOON_V_RETRY_MAX => u64::from(w.backoff_config().max_retries),
        sys::balloon_value_BALLOON_V_BALLOONED_KIB => kib(c.ballooned),
        sys::balloon_value_BALLOON_V_PLUGGED_KIB => kib(c.plugged),
        sys::balloon_value_BALLOON_V_SEGMENTS_PLUGGED => c.plugged_segments as u64,
        sys::balloon_value_BALLOON_V_STAT_INFLATED_PAGES => s.pages_inflated.0,
        sys::balloon_value_BALLOON_V_STAT_DEFLATED_PAGES => s.pages_deflated.0,
        sys::balloon_value_BALLOON_V_STAT_SCRUBBED_PAGES => d.scrubbed,
        sys::balloon_value_BALLOON_V_STAT_HYPERCALLS => d.hypercalls,
        sys::balloon_value_BALLOON_V_STAT_SHORT_RESULTS => s.short_steps,
        sys::balloon_value_BALLOON_V_STAT_RETRIES => s.retries,
        sys::balloon_value_BALLOON_V_STAT_TARGETS_ACCEPTED => s.targets_accepted,
        sys::balloon_value_BALLOON_V_STAT_TARGETS_CLAMPED => s.targets_clamped,
        sys::balloon_value_BALLOON_V_STAT_TARGETS_REFUSED => s.targets_refused,
        sys::balloon_value_BALLOON_V_STAT_TARGETS_GIVEN_UP => s.gave_up,
        sys::balloon_value_BALLOON_V_STAT_PLUGS => s.segments_plugged,
        sys::balloon_value_BALLOON_V_STAT_UNPLUGS => s.segments_unplugged,
        // Frames backed for a failed plug are given back with the
        // back-off until Xen takes them, and unload waits for them: none
        // is ever lost. The node stays for scripts that read it.
        sys::balloon_value_BALLOON_V_STAT_FRAMES_LOST => 0,
        sys::balloon_value_BALLOON_V_STAT_MESSAGES_SUPPRESSED => d.lines_suppressed,
        sys::balloon_value_BALLOON_V_STAT_LAST_ERRNO => s
            .last_error
            .map_or(0, |e| u64::from(e.errno.0.unsigned_abs())),
        _ => return None,
    })
}

/// Writes a knob behind hw.balloon.
///
/// # Safety
/// As for [`control_mut`].
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_set(
    rs: *mut sys::balloon_rs,
    what: sys::balloon_value,
    v: i64,
) -> c_int {
    let _ctx = super::CoreContext::enter();
    // SAFETY: per this function's contract.
    let Some(core) = (unsafe { control_mut(rs) }) else {
        return errno(Errno::EINVAL);
    };
    match set_value(core, what, v) {
        Ok(()) => 0,
        Err(r) => errno(r.errno()),
    }
}

fn flag(v: u64) -> Result<bool, Refusal> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Refusal::Malformed),
    }
}

fn set_value(core: &mut Control, what: sys::balloon_value, v: i64) -> Result<(), Refusal> {
    let w = core.worker_mut();
    let Ok(v) = u64::try_from(v) else {
        if what == sys::balloon_value_BALLOON_V_TARGET_KIB {
            w.refuse_target();
        }
        return Err(Refusal::Malformed);
    };
    match what {
        sys::balloon_value_BALLOON_V_TARGET_KIB => w.set_target(Kib(v), Source::Sysctl).map(|_| ()),
        sys::balloon_value_BALLOON_V_MIN_KIB => w.set_floor(Kib(v)),
        sys::balloon_value_BALLOON_V_BATCH => w.set_batch(Pages(v)),
        sys::balloon_value_BALLOON_V_SCRUB => flag(v).map(|on| w.set_scrub(on)),
        sys::balloon_value_BALLOON_V_HOTPLUG => w.set_hotplug(flag(v)?),
        sys::balloon_value_BALLOON_V_UNPLUG => flag(v).map(|on| w.set_unplug(on)),
        sys::balloon_value_BALLOON_V_RETRY_DELAY_MAX_MS => {
            let cfg = w.backoff_config();
            let initial = Millis(BackoffConfig::default().initial.0.min(v));
            w.set_backoff(BackoffConfig {
                initial,
                max_delay: Millis(v),
                ..cfg
            })
        }
        sys::balloon_value_BALLOON_V_RETRY_MAX => {
            let n = u32::try_from(v).map_err(|_| Refusal::OutOfRange)?;
            let cfg = w.backoff_config();
            w.set_backoff(BackoffConfig {
                max_retries: n,
                ..cfg
            })
        }
        // Everything else is read-only or unknown.
        _ => Err(Refusal::OutOfRange),
    }
}

/// A `Write` into a C buffer that always leaves room for the NUL. The
/// buffer may be uninitialised (the shim's stack array): it is only ever
/// written, through `MaybeUninit`, never read or made a `&mut [u8]`.
struct CBuf<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    len: usize,
}

impl Write for CBuf<'_> {
    /// Copies what fits before the last byte; nothing here can panic.
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.buf.len().saturating_sub(1);
        let free = self.buf.get_mut(self.len..end).unwrap_or_default();
        let n = free.len().min(s.len());
        for (d, &b) in free.iter_mut().zip(s.as_bytes()) {
            d.write(b);
        }
        self.len = self.len.saturating_add(n);
        Ok(())
    }
}

/// A text value: the worker's state or the last error, NUL-terminated
/// and cut to fit `len` bytes; returns its length without the NUL.
///
/// # Safety
/// As for [`control_mut`]; `buf` writable for `len` bytes (initialised or
/// not).
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_text(
    rs: *mut sys::balloon_rs,
    what: sys::balloon_text,
    buf: *mut c_char,
    len: usize,
) -> usize {
    let _ctx = super::CoreContext::enter();
    if buf.is_null() || len == 0 {
        return 0;
    }
    // SAFETY: `buf` is writable for `len` bytes per the contract; a slice
    // of MaybeUninit<u8> may cover uninitialised bytes (u8 and
    // MaybeUninit<u8> have the same layout).
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<MaybeUninit<u8>>(), len) };
    let mut w = CBuf { buf: out, len: 0 };
    // SAFETY: per this function's contract.
    if let Some(core) = unsafe { control_mut(rs) } {
        let worker = core.worker();
        // CBuf never fails; a long text is cut short.
        let _ = match what {
            sys::balloon_text_BALLOON_T_STATE => write!(w, "{}", worker.state()),
            sys::balloon_text_BALLOON_T_LAST_ERROR => match worker.stats().last_error {
                Some(e) => write!(w, "{e}"),
                None => w.write_str("none"),
            },
            _ => Ok(()),
        };
    }
    let n = w.len;
    if let Some(nul) = w.buf.get_mut(n) {
        nul.write(0);
    }
    n
}

/// Gives every ballooned frame back before unload, taking `sc_lock` for
/// short critical sections only (sysctl goes on meanwhile).
///
/// # Safety
/// As for [`balloon_rs_step`]: `sc_lock` not held, and no worker step
/// runs meanwhile.
#[no_mangle]
pub unsafe extern "C" fn balloon_rs_release(rs: *mut sys::balloon_rs, now_ms: u64) -> c_int {
    let _ctx = super::CoreContext::enter();
    // SAFETY: per this function's contract.
    let Some(core) = (unsafe { core_ref(rs) }) else {
        return errno(Errno::EINVAL);
    };
    // SAFETY: no other thread steps (contract): the only reference.
    let exec = unsafe { &mut *core.exec.get() };
    let mut shared = Locked(&core.control);
    match exec.release(&mut ShimPlatform, &mut shared, Uptime(now_ms)) {
        Ok(()) => 0,
        Err(e) => errno(e),
    }
}

#[cfg(test)]
mod tests;
