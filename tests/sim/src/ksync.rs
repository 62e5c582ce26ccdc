// SPDX-License-Identifier: BSD-2-Clause
//! Threads, locks, kmem, clock, printf/panic and small kernel services
//! (docs/kernel-interfaces.md §7-9).

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_ulong, c_void};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::config::{fail_now, Flavour, Mode};
use crate::kernel::{
    adopt_thread, dmesg_append, freeze_point, hz, kernel_panic, lock, park_forever,
    thread_is_frozen, with, CHANGED, LIVE_GEN,
};
use crate::xen::cstr;

const EAGAIN: c_int = 35;
const ENOENT: c_int = 2;
const KM_SLEEP: u32 = 1;
const KM_NOSLEEP: u32 = 2;
const KTHREAD_MUSTJOIN: c_int = 0x10;
const KSYMS_ANY: c_int = 0x0200;

// ---- printf / panic (called by the C variadic wrappers) ----

#[no_mangle]
unsafe extern "C" fn sim_rs_printf(s: *const c_char) {
    // SAFETY: the C wrapper passes a NUL-terminated string.
    let s = unsafe { cstr(s) };
    dmesg_append(&s);
    crate::kernel::notify_changed();
}

#[no_mangle]
unsafe extern "C" fn sim_rs_panic(s: *const c_char) -> ! {
    // SAFETY: the C wrapper passes a NUL-terminated string.
    let s = unsafe { cstr(s) };
    kernel_panic(s.trim_end());
}

// ---- getmicrouptime ----

#[repr(C)]
struct Timeval {
    tv_sec: i64,
    tv_usec: i64,
}

/// getmicrouptime(9): simulated uptime = real time since boot × time scale.
#[no_mangle]
unsafe extern "C" fn getmicrouptime(tv: *mut Timeval) {
    let ns = with(|k| k.uptime_ns());
    let us = ns / 1000;
    // SAFETY: tv points at the caller's struct timeval.
    unsafe {
        (*tv).tv_sec = (us / 1_000_000) as i64;
        (*tv).tv_usec = (us % 1_000_000) as i64;
    }
}

/// Real duration of `ticks` simulated clock ticks.
fn ticks_to_real(ticks: u64) -> Duration {
    let (scale, hzv) = with(|k| (u64::from(k.cfg.time_scale.max(1)), hz.get().max(1) as u64));
    let sim_ns = u128::from(ticks) * 1_000_000_000 / u128::from(hzv);
    Duration::from_nanos((sim_ns / u128::from(scale)) as u64)
}

// ---- kmem(9) ----

fn kmem_layout(size: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(size, 16).unwrap_or_else(|_| kernel_panic("kmem: bad size"))
}

/// kmem_alloc(9) / kmem_zalloc(9) when memory is short.
///
/// Real kernel: kmem_intr_alloc serves requests from pool caches up to a
/// page and hands larger ones to uvm_km_kmem_alloc; either way a fresh
/// page comes from uvm_pagealloc. When none can be had, VM_SLEEP (from
/// KM_SLEEP) loops on uvm_wait("plpg") until one is freed, and VM_NOSLEEP
/// (from KM_NOSLEEP) returns ENOMEM, which kmem_alloc passes on as NULL;
/// kmem_alloc asserts that only KM_NOSLEEP ever returns NULL
/// (subr_kmem.c 1.77 kmem_intr_alloc/kmem_alloc; uvm_km.c 1.135
/// uvm_km_kmem_alloc).
///
/// Simulator rule: memory is short while UVM's free list is empty (the
/// model keeps no pagedaemon reserve, see uvm_pagealloc_strat). Then a
/// KM_SLEEP request blocks, counted in `kmem_sleeping`, until a page is
/// freed; a KM_NOSLEEP request returns NULL, counted in
/// `kmem_nosleep_null`. Pool caches are not modelled: every request is
/// taken to need a page, which is the pessimistic reading. kmem itself
/// takes no page from UVM in the model.
fn kmem_do_alloc(size: usize, flags: u32, zero: bool) -> *mut c_void {
    if size == 0 {
        kernel_panic("kmem_alloc: size 0");
    }
    if flags != KM_SLEEP && flags != KM_NOSLEEP {
        kernel_panic(&format!(
            "kmem_alloc: bad flags {flags:#x} (KM_SLEEP or KM_NOSLEEP)"
        ));
    }
    freeze_point();
    let mut g = lock();
    let mut sleeping = false;
    let p = loop {
        if thread_is_frozen() {
            drop(g);
            park_forever();
        }
        let Some(k) = g.as_mut() else {
            drop(g);
            kernel_panic("kernel service used with no simulated domain booted");
        };
        if flags == KM_NOSLEEP
            && (k.faults.kmem_nosleep_fail || fail_now(&mut k.faults.kmem_nosleep_fail_after))
        {
            k.faults_fired += 1;
            break std::ptr::null_mut();
        }
        if k.free.is_empty() {
            if flags == KM_NOSLEEP {
                k.kmem_nosleep_null += 1;
                break std::ptr::null_mut();
            }
            // uvm_wait("plpg"): until a page is freed.
            if !sleeping {
                sleeping = true;
                k.kmem_sleeping += 1;
                CHANGED.notify_all();
            }
            g = CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        if sleeping {
            k.kmem_sleeping -= 1;
        }
        let lay = kmem_layout(size);
        // SAFETY: the layout has a non-zero size.
        let p = unsafe {
            if zero {
                std::alloc::alloc_zeroed(lay)
            } else {
                std::alloc::alloc(lay)
            }
        };
        if p.is_null() {
            drop(g);
            kernel_panic("kmem_alloc: host out of memory");
        }
        if !zero {
            // Fresh kmem memory is not zeroed; make that visible.
            // SAFETY: p has `size` bytes.
            unsafe { std::ptr::write_bytes(p, 0xa5, size) };
        }
        k.kmem.insert(p as usize, size);
        k.kmem_bytes += size as u64;
        break p as *mut c_void;
    };
    drop(g);
    CHANGED.notify_all();
    p
}

#[no_mangle]
extern "C" fn kmem_alloc(size: usize, flags: u32) -> *mut c_void {
    kmem_do_alloc(size, flags, false)
}

#[no_mangle]
extern "C" fn kmem_zalloc(size: usize, flags: u32) -> *mut c_void {
    kmem_do_alloc(size, flags, true)
}

/// kmem_free(9): the size must equal the allocated size; NULL or an
/// unknown pointer is a panic.
#[no_mangle]
extern "C" fn kmem_free(p: *mut c_void, size: usize) {
    with(|k| match k.kmem.get(&(p as usize)).copied() {
        None => kernel_panic(&format!("kmem_free: {p:p} was not allocated by kmem")),
        Some(s) if s != size => kernel_panic(&format!(
            "kmem_free: {p:p} freed with size {size}, allocated with {s}"
        )),
        Some(s) => {
            k.kmem.remove(&(p as usize));
            k.kmem_bytes -= s as u64;
            // SAFETY: allocated above with the same layout.
            unsafe { std::alloc::dealloc(p as *mut u8, kmem_layout(s)) };
        }
    })
}

/// Frees every outstanding kmem allocation (domain teardown).
pub(crate) fn kmem_free_all(k: &mut crate::kernel::Kernel) {
    for (p, s) in k.kmem.drain() {
        // SAFETY: allocated by kmem_do_alloc with this layout.
        unsafe { std::alloc::dealloc(p as *mut u8, kmem_layout(s)) };
    }
    k.kmem_bytes = 0;
}

// ---- the mutexes and condvars that exist, so a domain being destroyed
// can wake every thread waiting on one (see kernel.rs, generations) ----

/// Addresses of live `KMutex` (false) and `KCond` (true) objects.
static SYNC_OBJS: Mutex<Vec<(bool, usize)>> = Mutex::new(Vec::new());

fn register_sync(cond: bool, p: usize) {
    plock(&SYNC_OBJS).push((cond, p));
}

fn unregister_sync(p: usize) {
    plock(&SYNC_OBJS).retain(|&(_, q)| q != p);
}

/// Wakes every thread waiting on a kernel mutex or condvar, so that the
/// threads of a destroyed domain reach their freeze point.
pub(crate) fn wake_all_waiters() {
    let objs = plock(&SYNC_OBJS);
    for &(cond, p) in objs.iter() {
        if cond {
            // SAFETY: registered by cv_init and removed by cv_destroy
            // (under SYNC_OBJS) before the Box is freed.
            let kc = unsafe { &*(p as *const KCond) };
            drop(plock(&kc.seq));
            kc.cv.notify_all();
        } else {
            // SAFETY: as above, for mutex_init / mutex_destroy.
            let km = unsafe { &*(p as *const KMutex) };
            drop(plock(&km.owner));
            km.cv.notify_all();
        }
    }
}

// ---- mutex(9) ----

#[repr(C)]
struct KmutexC {
    sim_impl: *mut c_void,
}

struct KMutex {
    owner: Mutex<Option<ThreadId>>,
    cv: Condvar,
    /// Threads waiting in mutex_enter.
    waiters: std::sync::atomic::AtomicU32,
}

fn plock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// # Safety
/// `m` points at a kmutex_t initialised by mutex_init.
unsafe fn kmutex<'a>(m: *const KmutexC, what: &str) -> &'a KMutex {
    // SAFETY: per the contract; a NULL impl means not initialised.
    let p = unsafe { (*m).sim_impl } as *const KMutex;
    if p.is_null() {
        kernel_panic(&format!("{what}: mutex not initialised"));
    }
    // SAFETY: set by mutex_init to a leaked Box<KMutex>.
    unsafe { &*p }
}

#[no_mangle]
unsafe extern "C" fn mutex_init(m: *mut KmutexC, _ty: c_int, ipl: c_int) {
    if ipl != 0 {
        kernel_panic("mutex_init: adaptive mutex with ipl != IPL_NONE");
    }
    freeze_point();
    let b = Box::into_raw(Box::new(KMutex {
        owner: Mutex::new(None),
        cv: Condvar::new(),
        waiters: std::sync::atomic::AtomicU32::new(0),
    }));
    register_sync(false, b as usize);
    // SAFETY: m is the caller's kmutex_t.
    unsafe { (*m).sim_impl = b as *mut c_void };
}

#[no_mangle]
unsafe extern "C" fn mutex_destroy(m: *mut KmutexC) {
    freeze_point();
    // SAFETY: m was initialised by mutex_init.
    let km = unsafe { kmutex(m, "mutex_destroy") };
    if plock(&km.owner).is_some() {
        kernel_panic("mutex_destroy: mutex is held");
    }
    // kern_mutex.c mutex_destroy asserts !MUTEX_HAS_WAITERS: a thread
    // still waiting for a mutex being destroyed would wake on freed memory.
    if km.waiters.load(std::sync::atomic::Ordering::SeqCst) != 0 {
        kernel_panic("mutex_destroy: a thread is waiting for the mutex");
    }
    unregister_sync(km as *const KMutex as usize);
    // SAFETY: reclaiming the Box leaked by mutex_init; cleared below.
    unsafe {
        drop(Box::from_raw((*m).sim_impl as *mut KMutex));
        (*m).sim_impl = std::ptr::null_mut();
    }
}

fn km_enter(km: &KMutex) {
    freeze_point();
    let me = std::thread::current().id();
    let mut o = plock(&km.owner);
    if *o == Some(me) {
        kernel_panic("mutex_enter: locking against myself");
    }
    if o.is_some() {
        km.waiters.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while o.is_some() {
            if thread_is_frozen() {
                drop(o);
                park_forever();
            }
            o = km.cv.wait(o).unwrap_or_else(|e| e.into_inner());
        }
        km.waiters.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
    *o = Some(me);
}

fn km_exit(km: &KMutex, what: &str) {
    freeze_point();
    let me = std::thread::current().id();
    let mut o = plock(&km.owner);
    if *o != Some(me) {
        kernel_panic(&format!("{what}: mutex not held by this thread"));
    }
    *o = None;
    // Wake only a counted waiter (km_enter counts itself under `owner`
    // before it waits): an uncontended mutex_exit makes no futex system
    // call, as NetBSD's goes to the turnstile only when the mutex has
    // waiters (kern_mutex.c 1.62 mutex_vector_exit, MUTEX_HAS_WAITERS).
    // Local to this stand-in (issue 13 goal 4).
    if km.waiters.load(std::sync::atomic::Ordering::SeqCst) != 0 {
        km.cv.notify_one();
    }
}

#[no_mangle]
unsafe extern "C" fn mutex_enter(m: *mut KmutexC) {
    // SAFETY: m was initialised by mutex_init.
    km_enter(unsafe { kmutex(m, "mutex_enter") });
}

#[no_mangle]
unsafe extern "C" fn mutex_exit(m: *mut KmutexC) {
    // SAFETY: m was initialised by mutex_init.
    km_exit(unsafe { kmutex(m, "mutex_exit") }, "mutex_exit");
}

#[no_mangle]
unsafe extern "C" fn mutex_owned(m: *const KmutexC) -> c_int {
    // SAFETY: m was initialised by mutex_init.
    let km = unsafe { kmutex(m, "mutex_owned") };
    c_int::from(*plock(&km.owner) == Some(std::thread::current().id()))
}

// ---- condvar(9) ----

#[repr(C)]
struct KcondC {
    sim_impl: *mut c_void,
}

struct KCond {
    seq: Mutex<CondState>,
    cv: Condvar,
}

/// A condvar's state under its own lock.
#[derive(Default)]
struct CondState {
    /// Bumped by every signal and broadcast.
    seq: u64,
    /// Threads inside cv_wait/cv_timedwait.
    waiting: u64,
    /// Of those, threads a signal has woken that have not yet taken the
    /// kernel mutex back: a wake-up still on its way (see
    /// `pending_wakeups`).
    unwoken: u64,
}

/// # Safety
/// `c` points at a kcondvar_t initialised by cv_init.
unsafe fn kcond<'a>(c: *const KcondC, what: &str) -> &'a KCond {
    // SAFETY: per the contract.
    let p = unsafe { (*c).sim_impl } as *const KCond;
    if p.is_null() {
        kernel_panic(&format!("{what}: condvar not initialised"));
    }
    // SAFETY: set by cv_init to a leaked Box<KCond>.
    unsafe { &*p }
}

#[no_mangle]
unsafe extern "C" fn cv_init(c: *mut KcondC, _wmesg: *const c_char) {
    freeze_point();
    let b = Box::into_raw(Box::new(KCond {
        seq: Mutex::new(CondState::default()),
        cv: Condvar::new(),
    }));
    register_sync(true, b as usize);
    // SAFETY: c is the caller's kcondvar_t.
    unsafe { (*c).sim_impl = b as *mut c_void };
}

#[no_mangle]
unsafe extern "C" fn cv_destroy(c: *mut KcondC) {
    freeze_point();
    // SAFETY: c was initialised by cv_init.
    unsafe {
        let kc = kcond(c, "cv_destroy");
        unregister_sync(kc as *const KCond as usize);
        drop(Box::from_raw((*c).sim_impl as *mut KCond));
        (*c).sim_impl = std::ptr::null_mut();
    }
}

/// Waits on `kc`, releasing and re-taking the kernel mutex. None = forever.
/// Returns true on timeout. The cv's own lock is taken before the kernel
/// mutex is released, so a signal sent after that is never lost.
fn cv_do_wait(kc: &KCond, km: &KMutex, timeout: Option<Duration>, what: &str) -> bool {
    let mut st = plock(&kc.seq);
    let start = st.seq;
    st.waiting += 1;
    km_exit(km, what);
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    while st.seq == start {
        if thread_is_frozen() {
            drop(st);
            park_forever();
        }
        match deadline {
            None => st = kc.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    timed_out = true;
                    break;
                }
                st = kc
                    .cv
                    .wait_timeout(st, d - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
    drop(st);
    km_enter(km);
    let mut st = plock(&kc.seq);
    st.waiting -= 1;
    if st.seq != start && st.unwoken > 0 {
        st.unwoken -= 1;
    }
    drop(st);
    crate::kernel::notify_changed();
    timed_out
}

/// A destroyed domain's threads are parked for good, some of them woken
/// but never back: forget their wake-ups (every condvar that exists now
/// is that domain's).
pub(crate) fn forget_wakeups() {
    let objs = plock(&SYNC_OBJS);
    for &(cond, p) in objs.iter() {
        if cond {
            // SAFETY: as in pending_wakeups.
            let kc = unsafe { &*(p as *const KCond) };
            let mut st = plock(&kc.seq);
            st.unwoken = 0;
            st.waiting = 0;
        }
    }
}

/// Threads waiting in cv_wait or cv_timedwait now.
pub(crate) fn threads_waiting() -> u64 {
    let objs = plock(&SYNC_OBJS);
    objs.iter()
        .filter(|&&(cond, _)| cond)
        .map(|&(_, p)| {
            // SAFETY: as in pending_wakeups.
            let kc = unsafe { &*(p as *const KCond) };
            plock(&kc.seq).waiting
        })
        .sum()
}

/// Kernel threads that a cv_signal or cv_broadcast has woken and that have
/// not yet got their mutex back: work handed to a thread (a kicked worker)
/// that it has not yet seen. `sim settle` waits for none.
pub(crate) fn pending_wakeups() -> u64 {
    let objs = plock(&SYNC_OBJS);
    objs.iter()
        .filter(|&&(cond, _)| cond)
        .map(|&(_, p)| {
            // SAFETY: registered by cv_init and removed by cv_destroy
            // (under SYNC_OBJS) before the Box is freed.
            let kc = unsafe { &*(p as *const KCond) };
            plock(&kc.seq).unwoken
        })
        .sum()
}

#[no_mangle]
unsafe extern "C" fn cv_wait(c: *mut KcondC, m: *mut KmutexC) {
    // SAFETY: both initialised by their init functions.
    let (kc, km) = unsafe { (kcond(c, "cv_wait"), kmutex(m, "cv_wait")) };
    cv_do_wait(kc, km, None, "cv_wait");
}

/// cv_timedwait(9): ticks == 0 waits forever (§8); EWOULDBLOCK on timeout,
/// 0 when woken. The wait lasts ticks/hz simulated seconds, i.e. that
/// divided by the time scale in real time. Negative ticks time out at once.
#[no_mangle]
unsafe extern "C" fn cv_timedwait(c: *mut KcondC, m: *mut KmutexC, ticks: c_int) -> c_int {
    // SAFETY: both initialised by their init functions.
    let (kc, km) = unsafe { (kcond(c, "cv_timedwait"), kmutex(m, "cv_timedwait")) };
    let timeout = match ticks {
        0 => None,
        t if t < 0 => Some(Duration::ZERO),
        t => Some(ticks_to_real(t as u64)),
    };
    if cv_do_wait(kc, km, timeout, "cv_timedwait") {
        EAGAIN
    } else {
        0
    }
}

#[no_mangle]
unsafe extern "C" fn cv_signal(c: *mut KcondC) {
    freeze_point();
    // SAFETY: initialised by cv_init.
    let kc = unsafe { kcond(c, "cv_signal") };
    let mut st = plock(&kc.seq);
    st.seq += 1;
    // Every waiter sees the new sequence number and wakes.
    st.unwoken = st.waiting;
    drop(st);
    kc.cv.notify_all();
}

#[no_mangle]
unsafe extern "C" fn cv_broadcast(c: *mut KcondC) {
    freeze_point();
    // SAFETY: initialised by cv_init.
    let kc = unsafe { kcond(c, "cv_broadcast") };
    let mut st = plock(&kc.seq);
    st.seq += 1;
    st.unwoken = st.waiting;
    drop(st);
    kc.cv.notify_all();
}

// ---- kthread(9) ----

extern "C" {
    fn sim_kthread_trampoline(func: unsafe extern "C" fn(*mut c_void), arg: *mut c_void) -> c_int;
}

/// The lwp_t the simulator hands out.
struct Lwp {
    name: String,
    mustjoin: bool,
    join: Option<JoinHandle<()>>,
}

struct SendPtr(*mut c_void);
// SAFETY: the kthread argument is handed to exactly one new thread, as the
// kernel does.
unsafe impl Send for SendPtr {}

/// The Rust half of kthread_create(9) (kern_kthread.c: it returns the
/// error of lwp_create, EAGAIN when no lwp can be had, 0 otherwise;
/// kthread.9 1.20). Fault injection: `kthread_create_error` makes it fail
/// with that errno and create nothing.
#[no_mangle]
unsafe extern "C" fn sim_rs_kthread_create(
    _pri: c_int,
    flags: c_int,
    func: Option<unsafe extern "C" fn(*mut c_void)>,
    arg: *mut c_void,
    newlp: *mut *mut c_void,
    name: *const c_char,
) -> c_int {
    let Some(func) = func else {
        kernel_panic("kthread_create: NULL function");
    };
    // SAFETY: the C wrapper passes a NUL-terminated name.
    let name = unsafe { cstr(name) };
    let a = SendPtr(arg);
    let injected = with(|k| {
        if let Some(e) = k.faults.kthread_create_error {
            k.faults_fired += 1;
            return Some(e);
        }
        k.live_kthreads += 1;
        None
    });
    if let Some(e) = injected {
        return e;
    }
    let gen = LIVE_GEN.load(std::sync::atomic::Ordering::SeqCst);
    let tname = name.clone();
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            adopt_thread(gen);
            let a = a;
            // SAFETY: runs the kthread function through the C trampoline that
            // catches kthread_exit's longjmp; only C frames lie in between.
            let code = unsafe { sim_kthread_trampoline(func, a.0) };
            if code == -1 {
                dmesg_append(&format!(
                    "kthread {tname}: returned without calling kthread_exit\n"
                ));
            } else if code != 0 {
                dmesg_append(&format!("kthread {tname}: exit code {code}\n"));
            }
            let mut g = lock();
            if let Some(k) = g.as_mut() {
                k.live_kthreads -= 1;
            }
            drop(g);
            CHANGED.notify_all();
        });
    let h = match spawned {
        Ok(h) => h,
        Err(_) => {
            with(|k| k.live_kthreads -= 1);
            return EAGAIN;
        }
    };
    let mustjoin = flags & KTHREAD_MUSTJOIN != 0;
    let lwp = Box::new(Lwp {
        name,
        mustjoin,
        join: Some(h),
    });
    let lp = Box::into_raw(lwp);
    if !newlp.is_null() {
        // SAFETY: newlp is the caller's lwp_t ** out-parameter.
        unsafe { *newlp = lp as *mut c_void };
    }
    if !mustjoin {
        // Not joinable: the lwp is gone once the thread exits (kern_kthread.c);
        // the model leaks the small handle rather than race on it.
        // SAFETY: lp is the Box just leaked; detach the thread.
        unsafe { (*lp).join.take() };
    }
    0
}

/// kthread_join(9): KASSERTs KTHREAD_MUSTJOIN; waits; always 0; the lwp
/// must not be touched afterwards.
#[no_mangle]
unsafe extern "C" fn kthread_join(l: *mut c_void) -> c_int {
    if l.is_null() {
        kernel_panic("kthread_join: NULL lwp");
    }
    // SAFETY: l came from sim_rs_kthread_create (a leaked Box<Lwp>).
    let mut lwp = unsafe { Box::from_raw(l as *mut Lwp) };
    if !lwp.mustjoin {
        kernel_panic(&format!(
            "kthread_join: {} was not created KTHREAD_MUSTJOIN",
            lwp.name
        ));
    }
    if let Some(h) = lwp.join.take() {
        if h.thread().id() == std::thread::current().id() {
            kernel_panic("kthread_join: a thread joining itself");
        }
        let _ = h.join();
    }
    0
}

// ---- autoconf, ksyms ----

static BALLOON0: u8 = 0;

/// device_find_by_xname(9): only "balloon0", attached iff the config says
/// the built-in driver is (§3).
#[no_mangle]
unsafe extern "C" fn device_find_by_xname(name: *const c_char) -> *mut c_void {
    // SAFETY: name is a NUL-terminated string.
    let n = unsafe { CStr::from_ptr(name) };
    let attached = with(|k| k.cfg.builtin_balloon);
    if attached && n.to_bytes() == b"balloon0" {
        &BALLOON0 as *const u8 as *mut c_void
    } else {
        std::ptr::null_mut()
    }
}

static PHYSSEG_GRAPH: u8 = 0;

/// The growth interfaces of docs/kernel-growth.md section 6, per mode.
const GROWTH_PV: [&str; 4] = [
    "uvm_physseg_hotplug_add",
    "uvm_physseg_hotplug_remove",
    "xpmap_p2m_limit",
    "xpmap_p2m_grow",
];
const GROWTH_PVH: [&str; 5] = [
    "uvm_physseg_hotplug_add",
    "uvm_physseg_hotplug_remove",
    "pmap_growdirectmap",
    "xenmem_alloc_pa",
    "xenmem_free_pa",
];

/// Calls of `ksyms_getval` for a growth interface name (whatever it
/// answered), for tests that check the module looked.
pub(crate) static GROWTH_LOOKUPS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// ksyms_getval (kern_ksyms.c): "uvm_physseg_graph" (a static, so only
/// with KSYMS_ANY) exists only in UVM_HOTPLUG kernels (§1, run-time
/// detection). The growth interfaces (kernel-growth.md section 6) exist
/// only in the assisted flavour built with UVM_HOTPLUG, as globals of the
/// kernel's own table "netbsd" (the name kern_ksyms.c registers for the
/// kernel), for the mode's set, minus the one `AssistedWithout` names.
/// `pmap_direct_base` and `pmap_direct_end` (globals of x86/pmap.c 1.414
/// under `__HAVE_DIRECT_MAP`) exist in every PVH kernel with a direct map,
/// stock or assisted (dmap.rs), never in PV (XENPV) or a KASAN kernel.
#[no_mangle]
unsafe extern "C" fn ksyms_getval(
    module: *const c_char,
    sym: *const c_char,
    val: *mut c_ulong,
    flags: c_int,
) -> c_int {
    // SAFETY: sym is a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(sym) };
    // SAFETY: module is NULL or a NUL-terminated string.
    let table = (!module.is_null()).then(|| unsafe { CStr::from_ptr(module) });
    let (hot, flavour, mode, dmap) = with(|k| {
        (
            k.cfg.hotplug,
            k.cfg.flavour,
            k.cfg.mode,
            crate::dmap::has_direct_map(k),
        )
    });
    let name = s.to_str().unwrap_or("");
    let netbsd = table.is_some_and(|t| t.to_bytes() == b"netbsd");
    let addr: Option<c_ulong> = if name == "pmap_direct_base" || name == "pmap_direct_end" {
        // Globals of x86/pmap.c 1.414 under __HAVE_DIRECT_MAP (PVH,
        // stock or assisted, without KASAN/KMSAN): dmap.rs.
        (dmap && (netbsd || table.is_none())).then(|| {
            let v = if name == "pmap_direct_base" {
                &crate::dmap::PMAP_DIRECT_BASE
            } else {
                &crate::dmap::PMAP_DIRECT_END
            };
            v.as_ptr() as c_ulong
        })
    } else if name == "uvm_physseg_graph" {
        (hot && flags & KSYMS_ANY != 0).then_some(&PHYSSEG_GRAPH as *const u8 as c_ulong)
    } else if GROWTH_PV.contains(&name) || GROWTH_PVH.contains(&name) {
        GROWTH_LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let in_set = match mode {
            Mode::Pv => GROWTH_PV.contains(&name),
            _ => GROWTH_PVH.contains(&name),
        };
        let present = hot
            && in_set
            && netbsd
            && match flavour {
                Flavour::Stock => false,
                Flavour::Assisted => true,
                Flavour::AssistedWithout(gone) => gone != name,
            };
        present.then(|| crate::growth::symbol(name)).flatten()
    } else {
        None
    };
    match addr {
        Some(a) => {
            if !val.is_null() {
                // SAFETY: val is the caller's out-parameter.
                unsafe { *val = a };
            }
            0
        }
        None => ENOENT,
    }
}
