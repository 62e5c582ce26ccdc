//! The driver: carries out the worker's actions through a [`Platform`].
//!
//! The worker decides what to do; this module knows how a balloon step is
//! done with the kernel's and Xen's primitives, in the right order, and
//! how to undo the part of a step that did not happen:
//!
//! - **inflate**: allocate pages (from the preferred range first), scrub
//!   them, PV: look up and clear their p2m entries; give the frames to Xen
//!   with `decrease_reservation`; the frames Xen did not take (a partial
//!   result reports the leading entries done) get their p2m entries back
//!   and their pages are freed to UVM.
//! - **deflate**: PV: `increase_reservation` gives new MFNs, each mapped
//!   to the next ballooned frame; PVH: `populate_physmap` on the frames;
//!   only the frames that came back are freed to UVM.
//! - **back**: one batch of a segment being prepared for plugging: PV:
//!   `increase_reservation` gives new MFNs, each mapped at the next frame;
//!   PVH: `populate_physmap` on the frames.
//! - **reserve**: the kernel makes room for a new segment before any
//!   frame of it is backed (PV: `xpmap_p2m_grow`; PVH: `xenmem_alloc_pa`
//!   and `pmap_growdirectmap`); **unreserve** gives a PVH range back when
//!   its segment was abandoned.
//! - **plug**: `uvm_physseg_hotplug_add` of a fully backed segment, which
//!   puts every page on the free lists at once.
//! - **return**: give frames backed for a plug that did not happen back
//!   with `decrease_reservation` (PV: their p2m entries are cleared first
//!   and put back for the tail Xen did not take).
//! - **unplug**: `uvm_physseg_hotplug_remove`; the worker forgets the
//!   pages.
//!
//! All of it is safe Rust; the FFI layer implements [`Platform`] over the
//! shim, and tests implement it over a model.

use crate::logline::LogLine;
use alloc::vec::Vec;

use crate::errno::Errno;
use crate::policy::{
    self, MemInfo, Source, EXTENT, EXTENT_ORDER, MAX_SINGLE_STEP, MAX_STEP_EXTENTS,
};
use crate::ratelimit::{LogBudget, Verdict};
use crate::units::{Kib, Mfn, Pages, Pfn, PfnRange, Uptime};
use crate::worker::{Action, CancelReason, State, StepResult, WaitReason, Worker, WorkerError};

/// How the guest addresses its memory in hypercalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMode {
    /// Paravirtualised: the guest keeps the p2m; hypercalls take MFNs.
    Pv,
    /// Auto-translated (PVH, HVM): hypercalls take guest frame numbers.
    Pvh,
}

/// The kernel and hypervisor services a step uses, one per call. Counts
/// returned by the reservation calls are the leading entries done.
pub trait Platform {
    /// Allocates up to `out.len()` pages, from `prefer` first; stores
    /// their frames and returns how many it got.
    fn alloc_pages(&mut self, out: &mut [u64], prefer: Option<PfnRange>) -> usize;
    /// Frees pages the driver owns, whose frames are backed, to UVM.
    fn free_pages(&mut self, pfns: &[u64]);
    /// Zeroes a page the driver owns.
    fn scrub(&mut self, pfn: Pfn);
    /// Zeroes pages the driver owns, in one call where the kernel can
    /// batch it (a PV shim has Xen clear them with one MMUEXT_CLEAR_PAGE
    /// hypercall per few pages instead of one per page).
    fn scrub_batch(&mut self, pfns: &[u64]) {
        for &pfn in pfns {
            self.scrub(Pfn(pfn));
        }
    }
    /// PV: the machine frame behind `pfn`.
    fn p2m_lookup(&mut self, pfn: Pfn) -> Option<Mfn>;
    /// PV: maps `pfns[i]` to `mfns[i]` in the p2m and brings Xen's m2p
    /// up to date (one call per batch: the kernel's m2p queue is per CPU,
    /// so the shim queues and flushes with preemption disabled).
    fn p2m_set_batch(&mut self, pfns: &[u64], mfns: &[u64]);
    /// PV: unmaps `pfn`.
    fn p2m_clear(&mut self, pfn: Pfn);
    /// `XENMEM_decrease_reservation` on these frames (MFNs or GPFNs).
    fn decrease_reservation(&mut self, frames: &mut [u64]) -> Result<usize, Errno>;
    /// `XENMEM_increase_reservation`: fills in new MFNs.
    fn increase_reservation(&mut self, mfns: &mut [u64]) -> Result<usize, Errno>;
    /// `XENMEM_populate_physmap` on these guest frames.
    fn populate_physmap(&mut self, pfns: &mut [u64]) -> Result<usize, Errno>;
    /// Whether the platform has 2 MiB extents ([`Platform::alloc_run`]
    /// and [`Platform::reservation`] above order 0). Without them every
    /// step uses single frames.
    fn has_extents(&self) -> bool {
        false
    }
    /// Claims one run of `len` free pages whose first frame is a multiple
    /// of `align`, inside `within` (`uvm_pglistalloc` with that
    /// alignment: all or nothing, never sleeping). The first frame, or
    /// `None` when no such run is free. A platform without it claims
    /// nothing, and the driver uses single pages.
    fn alloc_run(&mut self, _len: Pages, _align: Pages, _within: PfnRange) -> Option<Pfn> {
        None
    }
    /// Frees the pages of `run`, which the driver owns and whose frames
    /// are backed, to UVM.
    fn free_run(&mut self, run: PfnRange) {
        for f in run.frames() {
            self.free_pages(&[f.0]);
        }
    }
    /// A reservation operation on extents of `2^order` frames each
    /// (`frames` holds each extent's first frame): the leading extents
    /// done. Order 0 is the plain call; a platform without larger
    /// extents does none of them.
    fn reservation(&mut self, op: MemOp, frames: &mut [u64], order: u32) -> Result<usize, Errno> {
        match (op, order) {
            (MemOp::Decrease, 0) => self.decrease_reservation(frames),
            (MemOp::Increase, 0) => self.increase_reservation(frames),
            (MemOp::Populate, 0) => self.populate_physmap(frames),
            _ => Ok(0),
        }
    }
    /// Prepares the kernel for a new segment of `want.len()` frames
    /// before any is backed (docs/kernel-growth.md section 7): PV:
    /// `xpmap_p2m_grow(want.end())`, and the range is `want`; PVH:
    /// `xenmem_alloc_pa` places it and `pmap_growdirectmap` maps it.
    /// ERANGE when the kernel has no room left.
    fn grow_reserve(&mut self, want: PfnRange) -> Result<PfnRange, Errno>;
    /// Gives back the placement of a segment that was never plugged
    /// (PVH: `xenmem_free_pa`; PV: nothing).
    fn grow_unreserve(&mut self, range: PfnRange);
    /// `uvm_physseg_hotplug_add` of a fully backed range.
    fn plug(&mut self, range: PfnRange) -> Result<(), Errno>;
    /// `uvm_physseg_hotplug_remove` of a range the driver owns (PVH: then
    /// `xenmem_free_pa`).
    fn unplug(&mut self, range: PfnRange) -> Result<(), Errno>;
    /// UVM's free memory now.
    fn meminfo(&mut self) -> MemInfo;
    /// One line for the kernel log.
    fn log(&mut self, line: &str);
}

/// The reservation hypercalls that take extents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemOp {
    /// `XENMEM_decrease_reservation`: give the extents to Xen.
    Decrease,
    /// `XENMEM_increase_reservation`: new machine extents (PV).
    Increase,
    /// `XENMEM_populate_physmap`: back these guest extents (PVH).
    Populate,
}

/// What the worker thread does after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// A step was carried out; call again.
    Again,
    /// Nothing to do for this long unless woken.
    Sleep(u64),
    /// Nothing to do until woken.
    Idle,
}

/// A failure of the shim's own that the driver logs for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShimFailure {
    /// The worker thread could not be started again after a refused
    /// unload.
    WorkerRestart,
    /// The xenstore watch could not be registered again after a refused
    /// unload.
    WatchRestart,
    /// Unload was refused: the xenwatch thread did not deliver the
    /// barrier event in time, so a callback of the module may still be
    /// pending (see the shim's `balloon_watch_barrier`).
    WatchBarrier,
}

/// Counters only the driver sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Memory hypercalls made.
    pub hypercalls: u64,
    /// Pages zeroed before going to Xen.
    pub scrubbed: u64,
    /// Log lines dropped by the rate limit.
    pub lines_suppressed: u64,
    /// 2 MiB extents (`extent_order` 9) given to or backed by Xen.
    pub extents: u64,
    /// `uvm_pglistalloc` calls made to claim aligned 2 MiB runs.
    pub run_claims: u64,
}

/// What one step counted, published with its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StepCounts {
    hypercalls: u64,
    scrubbed: u64,
    extents: u64,
    run_claims: u64,
}

/// Steps taken with single frames after 2 MiB extents were not to be had
/// `misses` times in a row: 2, 4, ... 64, so that fragmented memory or a
/// host without free 2 MiB chunks costs few failed calls.
fn skip_after(misses: u32) -> u32 {
    1u32 << misses.clamp(1, 6)
}

/// The half of the driver that the watch callback, the sysctl handlers
/// and unload share with the step: targets, knobs, limits, the frame
/// bookkeeping the figures are read from, the state text, the log budget
/// and the counters. The shim keeps it behind `sc_lock`; each use is one
/// short critical section (no hypercall, scrub or plug inside).
#[derive(Debug)]
pub struct Control {
    worker: Worker,
    mode: GuestMode,
    stats: DriverStats,
    /// What was last reported to the log (state, target, memory held), so
    /// each outcome is said once.
    reported: Option<(State, Pages, Pages)>,
    /// Log lines allowed per window.
    budget: LogBudget,
    /// The newest line over budget, printed when the window reopens so
    /// the last outcome of a target storm is never lost.
    held: Option<LogLine>,
    /// Lines dropped since the last line printed.
    dropped: u64,
    /// The last value read from xenstore memory/target that was applied.
    xenstore_last: Option<Kib>,
}

/// The half only the thread carrying out a step touches (the worker
/// thread, or unload's release, never both at once): the frame buffers
/// of the step in flight. It is used without `sc_lock`; what a step
/// decides and what it did go through [`Shared`].
#[derive(Debug)]
pub struct Exec {
    mode: GuestMode,
    pfns: Vec<u64>,
    frames: Vec<u64>,
    /// The frames of an inflate as the bookkeeping takes them.
    given: Vec<Pfn>,
    /// What the step in flight counted (hypercalls, pages zeroed, 2 MiB
    /// extents, run claims), published with its result.
    counts: StepCounts,
    /// The aligned 2 MiB runs of an inflate's extents.
    runs: Vec<PfnRange>,
    /// The first frames of the extents a deflate or plug backs.
    starts: Vec<u64>,
    /// One extent's frames and machine frames (PV p2m updates).
    ext_pfns: Vec<u64>,
    ext_mfns: Vec<u64>,
    /// Where the frame span ends, read with the inflate's decision: runs
    /// are claimed below it.
    span_end: Pfn,
    /// Inflate steps left to take with single pages before claiming 2 MiB
    /// runs again, and how many claims in a row found none.
    claim_skip: u32,
    claim_misses: u32,
    /// The same for backing frames (deflate, plug) with 2 MiB extents.
    back_skip: u32,
    back_misses: u32,
}

/// The [`Control`] half as a step reaches it: one short critical section
/// per call (the shim's `sc_lock` held for the closure only).
pub trait Shared {
    /// Runs `f` on the control half under its lock.
    fn locked<R>(&mut self, f: impl FnOnce(&mut Control) -> R) -> R;
}

/// A control half owned outright needs no lock (tests, and one thread).
impl Shared for Control {
    fn locked<R>(&mut self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(self)
    }
}

/// Both halves in one value, for single-threaded use (the tests).
#[derive(Debug)]
pub struct Driver {
    control: Control,
    exec: Exec,
}

impl Driver {
    /// A driver for `worker` in `mode`. The frame buffers are allocated
    /// here, once, at their largest, and fallibly: ENOMEM when the kernel
    /// has no memory for them (the core's heap is KM_NOSLEEP, so a
    /// failure is a NULL, never a sleep or a panic).
    pub fn new(worker: Worker, mode: GuestMode) -> Result<Driver, Errno> {
        let batch = MAX_SINGLE_STEP.0 as usize;
        let steps = MAX_STEP_EXTENTS.0 as usize;
        let extent = EXTENT.0 as usize;
        let mut pfns = Vec::new();
        let mut frames = Vec::new();
        let mut given = Vec::new();
        let mut runs = Vec::new();
        let mut starts = Vec::new();
        let mut ext_pfns = Vec::new();
        let mut ext_mfns = Vec::new();
        pfns.try_reserve_exact(batch).map_err(|_| Errno::ENOMEM)?;
        frames.try_reserve_exact(batch).map_err(|_| Errno::ENOMEM)?;
        given.try_reserve_exact(batch).map_err(|_| Errno::ENOMEM)?;
        runs.try_reserve_exact(steps).map_err(|_| Errno::ENOMEM)?;
        starts.try_reserve_exact(steps).map_err(|_| Errno::ENOMEM)?;
        ext_pfns
            .try_reserve_exact(extent)
            .map_err(|_| Errno::ENOMEM)?;
        ext_mfns
            .try_reserve_exact(extent)
            .map_err(|_| Errno::ENOMEM)?;
        Ok(Driver {
            control: Control {
                worker,
                mode,
                stats: DriverStats::default(),
                reported: None,
                budget: LogBudget::default(),
                held: None,
                dropped: 0,
                xenstore_last: None,
            },
            exec: Exec {
                mode,
                pfns,
                frames,
                given,
                counts: StepCounts::default(),
                runs,
                starts,
                ext_pfns,
                ext_mfns,
                span_end: Pfn(0),
                claim_skip: 0,
                claim_misses: 0,
                back_skip: 0,
                back_misses: 0,
            },
        })
    }

    /// The two halves, to be kept under different locks.
    pub fn split(self) -> (Control, Exec) {
        (self.control, self.exec)
    }

    /// See [`Exec::step`].
    pub fn step<P: Platform>(&mut self, p: &mut P, now: Uptime) -> StepStatus {
        self.exec.step(p, &mut self.control, now)
    }

    /// See [`Exec::release`].
    pub fn release<P: Platform>(&mut self, p: &mut P, now: Uptime) -> Result<(), Errno> {
        self.exec.release(p, &mut self.control, now)
    }
}

/// Everything but stepping and release is the control half's: a driver
/// reads and steers through its [`Control`] (worker, stats, mode, events).
impl core::ops::Deref for Driver {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl core::ops::DerefMut for Driver {
    fn deref_mut(&mut self) -> &mut Control {
        &mut self.control
    }
}

impl Control {
    /// The worker (policy, bookkeeping, stats).
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The worker, to set targets and knobs.
    pub fn worker_mut(&mut self) -> &mut Worker {
        &mut self.worker
    }

    /// Counters of the driver itself.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The guest mode.
    pub fn mode(&self) -> GuestMode {
        self.mode
    }

    /// The watch on memory/target fired at `now` and `xenbus_read` gave
    /// `read`: the bytes it wrote, or its error. A missing node is
    /// ignored; a value too long for the buffer (ERANGE), malformed
    /// (an embedded NUL included) or refused is counted in
    /// `targets_refused`; any other read error is logged within the
    /// budget. On `resync` (the event of a re-registration) a value equal
    /// to the one applied last is ignored, so that it does not replace a
    /// target set with sysctl since.
    pub fn xenstore_event<P: Platform>(
        &mut self,
        p: &mut P,
        read: Result<&[u8], Errno>,
        resync: bool,
        now: Uptime,
    ) -> Result<(), Errno> {
        let text = match read {
            Ok(text) => text,
            Err(Errno::ENOENT) => return Err(Errno::ENOENT),
            Err(Errno::ERANGE) => {
                self.worker.refuse_target();
                return Err(Errno::ERANGE);
            }
            Err(e) => {
                self.say(
                    p,
                    now,
                    LogLine::format(format_args!("cannot read memory/target: error {}", e.0)),
                );
                return Err(e);
            }
        };
        let kib = match policy::parse_kib(text) {
            Ok(kib) => kib,
            Err(r) => {
                self.worker.refuse_target();
                return Err(r.errno());
            }
        };
        if resync && self.xenstore_last == Some(kib) {
            return Ok(());
        }
        self.worker
            .set_target(kib, Source::Xenstore)
            .map_err(|r| r.errno())?;
        self.xenstore_last = Some(kib);
        Ok(())
    }

    /// Logs a failure of the shim's own, within the budget.
    pub fn shim_failed<P: Platform>(
        &mut self,
        p: &mut P,
        what: ShimFailure,
        error: Errno,
        now: Uptime,
    ) {
        let what = match what {
            ShimFailure::WorkerRestart => "cannot restart the worker",
            ShimFailure::WatchRestart => "cannot watch memory/target again",
            ShimFailure::WatchBarrier => {
                "unload refused: the xenwatch thread did not answer, a callback may be pending"
            }
        };
        self.say(
            p,
            now,
            LogLine::format(format_args!("{what}: error {}", error.0)),
        );
    }

    /// A step with nothing (more) to carry out ends with `status`: the
    /// outcome is reported, a held line gets its wake-up, and whether the
    /// worker is idle is said from the same critical section.
    fn finish<P: Platform>(
        &mut self,
        p: &mut P,
        now: Uptime,
        status: StepStatus,
    ) -> (StepStatus, bool) {
        self.report(p, now);
        let idle = self.worker.state() == State::Idle;
        // A held line needs a wake-up when the window reopens.
        let Some(at) = self.budget.reopens_at().filter(|_| self.held.is_some()) else {
            return (status, idle);
        };
        let wake = at.0.saturating_sub(now.0).max(1);
        let status = match status {
            StepStatus::Sleep(ms) => StepStatus::Sleep(ms.min(wake)),
            _ => StepStatus::Sleep(wake),
        };
        (status, idle)
    }

    /// A step's result could not be taken, or its pages were refused.
    /// Out of line: its line's buffer stays off the step's stack.
    #[inline(never)]
    fn step_failed<P: Platform>(&mut self, p: &mut P, now: Uptime, e: WorkerError) {
        let line = if self.worker.stopped() {
            LogLine::format(format_args!("stopped: {}: {e:?}", self.worker.state()))
        } else {
            LogLine::format(format_args!("internal error, step dropped: {e:?}"))
        };
        self.say(p, now, line);
    }

    /// Publishes what a step did: its counters and its result.
    fn publish<P: Platform>(
        &mut self,
        p: &mut P,
        counts: StepCounts,
        result: StepResult<'_>,
        now: Uptime,
    ) {
        let st = &mut self.stats;
        st.hypercalls = st.hypercalls.saturating_add(counts.hypercalls);
        st.scrubbed = st.scrubbed.saturating_add(counts.scrubbed);
        st.extents = st.extents.saturating_add(counts.extents);
        st.run_claims = st.run_claims.saturating_add(counts.run_claims);
        if let Err(e) = self.worker.complete(result, now) {
            self.step_failed(p, now, e);
        }
    }

    /// One line for the kernel log, within the budget. A line held
    /// earlier goes first if the budget allows; a line over budget is
    /// held in place of any line held before it, which is then dropped
    /// for good (and only then counted as suppressed).
    fn say<P: Platform>(&mut self, p: &mut P, now: Uptime, line: LogLine) {
        self.flush_held(p, now);
        if self.held.is_none() && self.print_within_budget(p, now, line.as_str()) {
            return;
        }
        if self.held.replace(line).is_some() {
            self.drop_one();
        }
    }

    /// Prints the held line if the budget allows it now.
    fn flush_held<P: Platform>(&mut self, p: &mut P, now: Uptime) {
        if let Some(line) = self.held.take() {
            if !self.print_within_budget(p, now, line.as_str()) {
                self.held = Some(line);
            }
        }
    }

    /// Prints `line`, after the count of dropped lines if there is one,
    /// each only if the budget has room for it: the count is a line like
    /// any other. False when `line` was not printed.
    fn print_within_budget<P: Platform>(&mut self, p: &mut P, now: Uptime, line: &str) -> bool {
        if self.dropped > 0 {
            if self.budget.admit(now) != Verdict::Print {
                return false;
            }
            self.print_dropped(p);
        }
        if self.budget.admit(now) != Verdict::Print {
            return false;
        }
        p.log(line);
        true
    }

    /// A line will never be printed.
    fn drop_one(&mut self) {
        self.dropped = self.dropped.saturating_add(1);
        self.stats.lines_suppressed = self.stats.lines_suppressed.saturating_add(1);
    }

    /// Prints the count of dropped lines, then the held line, if any,
    /// whatever the budget says: the module is going away. Out of line:
    /// the held line's buffer stays off the release's stack.
    #[inline(never)]
    fn print_held<P: Platform>(&mut self, p: &mut P) {
        self.print_dropped(p);
        if let Some(line) = self.held.take() {
            p.log(line.as_str());
        }
    }

    /// Out of line: its line's buffer stays off the callers' stacks.
    #[inline(never)]
    fn print_dropped<P: Platform>(&mut self, p: &mut P) {
        if self.dropped > 0 {
            p.log(
                LogLine::format(format_args!("{} earlier messages suppressed", self.dropped))
                    .as_str(),
            );
            self.dropped = 0;
        }
    }

    /// The worker asked for something it cannot do (a bookkeeping bug).
    /// Out of line: its line's buffer stays off the step's stack.
    #[inline(never)]
    fn internal_error<P: Platform>(&mut self, p: &mut P, now: Uptime, e: WorkerError) {
        let line = LogLine::format(format_args!("internal error: {e:?}"));
        self.say(p, now, line);
    }

    /// Unload refused: the worker stopped for good. Out of line, as above.
    #[inline(never)]
    fn cannot_unload<P: Platform>(&mut self, p: &mut P, now: Uptime) {
        let line = LogLine::format(format_args!("cannot unload: {}", self.worker.state()));
        self.say(p, now, line);
    }

    /// Why a release stopped short, for the log. Out of line, as above.
    #[inline(never)]
    fn release_refused<P: Platform>(&mut self, p: &mut P, now: Uptime) {
        let line = self.release_refused_line();
        self.say(p, now, line);
    }

    /// Why a release stopped short: what the step that fell short was.
    fn release_refused_line(&self) -> LogLine {
        let kib = |x: Pages| x.saturating_kib().0;
        let frames = self.worker.frames();
        if !frames.stranded().is_zero() {
            return LogLine::format(format_args!(
                "cannot unload: {} KiB backed for a failed plug not yet given back: Xen took no more",
                kib(frames.stranded())
            ));
        }
        let left = kib(frames.ballooned());
        match self.worker.state() {
            State::Waiting(WaitReason::UnplugFailed) => LogLine::format(format_args!(
                "{left} KiB still ballooned: uvm_physseg_hotplug_remove refused to unplug a segment"
            )),
            State::Waiting(WaitReason::ShortDeflate) => LogLine::format(format_args!(
                "{left} KiB still ballooned: Xen gave no more back"
            )),
            other => LogLine::format(format_args!("{left} KiB still ballooned: {other}")),
        }
    }

    /// Release is done: the module goes away, so a held line is printed
    /// now, over budget or not.
    fn released<P: Platform>(&mut self, p: &mut P) -> Result<(), Errno> {
        self.worker.end_release();
        self.print_held(p);
        Ok(())
    }

    /// The bookkeeping refused the pages UVM gave for an inflate (`pfns`),
    /// before any went to Xen: each page goes back to UVM once, except
    /// those the bookkeeping says the driver holds already (ballooned),
    /// which are kept: freeing them could put one page on the free lists
    /// twice. `scratch` is the step's spare frame buffer.
    fn undo_refused_alloc<P: Platform>(&self, p: &mut P, pfns: &[u64], scratch: &mut Vec<u64>) {
        scratch.clear();
        scratch.extend_from_slice(pfns);
        crate::sort::sort(scratch);
        scratch.dedup();
        let space = self.worker.frames();
        scratch.retain(|&f| space.state(Pfn(f)) != crate::segments::FrameState::Ballooned);
        p.free_pages(scratch);
    }

    /// "giving up on target": the reason as hw.balloon.state gives it,
    /// with the last shortfall for "retries exhausted". Out of line: its
    /// two buffers stay off the stack of the line's printing.
    #[inline(never)]
    fn giving_up_line(&self, state: State, target: Pages) -> LogLine {
        let kib = |x: Pages| x.saturating_kib().0;
        let text = LogLine::format(format_args!("{state}"));
        let text = text.as_str();
        LogLine::format(format_args!(
            "giving up on target {} KiB at {} KiB: {}",
            kib(self.worker.as_toolstack(target)),
            kib(self.worker.as_toolstack(self.worker.current())),
            text.strip_prefix("cancelled: ").unwrap_or(text)
        ))
    }

    /// One log line when the worker reaches its target or gives up, not
    /// one per batch: called when the worker has nothing more to do.
    #[inline(never)]
    fn report<P: Platform>(&mut self, p: &mut P, now: Uptime) {
        let state = self.worker.state();
        let target = self.worker.target();
        // A request that changes nothing (the same target again, at it)
        // says nothing new.
        let key = (state, target, self.worker.current());
        if self.reported == Some(key) {
            return;
        }
        let kib = |x: Pages| x.saturating_kib().0;
        let line: Option<LogLine> = match state {
            // Unloading: the target no longer counts.
            State::Idle if self.worker.releasing() => Some(LogLine::format(format_args!(
                "returned all ballooned memory: {} KiB",
                kib(self.worker.as_toolstack(self.worker.current()))
            ))),
            // Sizes as the toolstack counts them (memory/target).
            State::Idle => Some(LogLine::format(format_args!(
                "at target: {} KiB ({} KiB ballooned)",
                kib(self.worker.as_toolstack(self.worker.current())),
                kib(self.worker.frames().ballooned())
            ))),
            // docs/kernel-growth.md section 8: one line with the reason.
            State::Cancelled(CancelReason::Clipped(g)) => Some(LogLine::format(format_args!(
                "target {} KiB clipped to {} KiB: {}",
                kib(self.worker.as_toolstack(target)),
                kib(self.worker.as_toolstack(self.worker.current())),
                g.refusal().unwrap_or("growth refused")
            ))),
            State::Cancelled(_) => Some(self.giving_up_line(state, target)),
            _ => None,
        };
        if let Some(line) = line {
            self.say(p, now, line);
            self.reported = Some(key);
        }
    }
}

impl Exec {
    /// Asks the worker for the next action at `now` and carries it out:
    /// the decision (a snapshot of target, knobs and bookkeeping) and the
    /// result each in one short critical section of `s`, the hypercalls,
    /// scrubbing, page allocation and plugging between them with no lock.
    pub fn step<P: Platform, S: Shared>(
        &mut self,
        p: &mut P,
        s: &mut S,
        now: Uptime,
    ) -> StepStatus {
        self.step_idle(p, s, now).0
    }

    /// A step, and whether the worker was idle when it ended (decided in
    /// the same critical section as the status).
    fn step_idle<P: Platform, S: Shared>(
        &mut self,
        p: &mut P,
        s: &mut S,
        now: Uptime,
    ) -> (StepStatus, bool) {
        let mem = p.meminfo();
        let extents = p.has_extents() && self.back_skip == 0;
        let (pfns, starts, span_end) = (&mut self.pfns, &mut self.starts, &mut self.span_end);
        let next = s.locked(|c| {
            c.flush_held(p, now);
            match c.worker.next_action(now, mem) {
                Ok(Action::Idle) => Err(c.finish(p, now, StepStatus::Idle)),
                Ok(Action::Sleep { until }) => {
                    let ms = until.0.saturating_sub(now.0).max(1);
                    Err(c.finish(p, now, StepStatus::Sleep(ms)))
                }
                Ok(action) => {
                    // A deflate's frames are read from the bookkeeping
                    // here, under the lock; only this thread changes them.
                    match action {
                        Action::Deflate { from, count } => {
                            let space = c.worker.frames();
                            choose_deflate(space, from, count, extents, starts, pfns);
                        }
                        Action::Inflate { .. } => *span_end = c.worker.frames().span_end(),
                        _ => {}
                    }
                    Ok(action)
                }
                Err(e) => {
                    c.internal_error(p, now, e);
                    Err(c.finish(p, now, StepStatus::Idle))
                }
            }
        });
        match next {
            Ok(action) => {
                self.carry_out(p, s, action, now);
                (StepStatus::Again, false)
            }
            Err(done) => done,
        }
    }

    /// Gives every ballooned frame back before unload, stepping until none
    /// is left (Ok) or a step falls short (Err(EBUSY)). Either way the
    /// worker then steers to its target again: after Ok the module
    /// unloads, after EBUSY it stays and goes on working. The caller holds
    /// the right to step (no worker step runs meanwhile); sysctl goes on.
    pub fn release<P: Platform, S: Shared>(
        &mut self,
        p: &mut P,
        s: &mut S,
        now: Uptime,
    ) -> Result<(), Errno> {
        let stopped = s.locked(|c| {
            if c.worker.stopped() {
                // The bookkeeping no longer knows which frames are whose:
                // a release could give pages to UVM twice or leave frames
                // in Xen unaccounted. The module stays.
                c.cannot_unload(p, now);
                return true;
            }
            c.worker.begin_release();
            false
        });
        if stopped {
            return Err(Errno::EBUSY);
        }
        loop {
            match self.step_idle(p, s, now) {
                (StepStatus::Again, _) => continue,
                // Idle, or asleep only to print a held log line later.
                (StepStatus::Idle, _) | (StepStatus::Sleep(_), true) => {
                    return s.locked(|c| c.released(p))
                }
                (StepStatus::Sleep(_), false) => {
                    return s.locked(|c| {
                        c.release_refused(p, now);
                        c.worker.end_release();
                        Err(Errno::EBUSY)
                    })
                }
            }
        }
    }

    /// The step's counters, taken for publishing.
    fn counts(&mut self) -> StepCounts {
        core::mem::take(&mut self.counts)
    }

    fn carry_out<P: Platform, S: Shared>(
        &mut self,
        p: &mut P,
        s: &mut S,
        action: Action,
        now: Uptime,
    ) {
        match action {
            Action::Inflate {
                count,
                prefer,
                scrub,
            } => self.inflate(p, s, count, prefer, scrub, now),
            Action::Deflate { .. } => self.deflate(p, s, now),
            Action::Back { frames } => {
                let extents = p.has_extents() && self.back_skip == 0;
                // Whole aligned 2 MiB extents when the range starts at
                // one, else single frames.
                self.starts.clear();
                if extents && frames.start().0.is_multiple_of(EXTENT.0) {
                    let k = (frames.len().0 >> EXTENT_ORDER).min(MAX_STEP_EXTENTS.0);
                    let first = frames.start().0;
                    self.starts
                        .extend((0..k).map(|i| first + (i << EXTENT_ORDER)));
                }
                // Single frames, at most one step's: all of them when no
                // extent is tried (up to the next 2 MiB boundary when an
                // extent could take the rest), the extents' own frames
                // when Xen backs none of those.
                let mut n = frames.len().min(MAX_SINGLE_STEP).0;
                let to_edge = (EXTENT.0 - frames.start().0 % EXTENT.0) % EXTENT.0;
                if extents && to_edge > 0 && frames.len().0 >= to_edge + EXTENT.0 {
                    n = n.min(to_edge);
                }
                // The scratch list is taken out for the call and put
                // back: no allocation.
                let mut pfns = core::mem::take(&mut self.pfns);
                pfns.clear();
                pfns.extend(frames.frames().map(|f| f.0).take(n as usize));
                let (done, error) = self.back_step(p, &pfns, false);
                self.pfns = pfns;
                let counts = self.counts();
                let result = StepResult::Backed {
                    done: Pages(done as u64),
                    error,
                };
                s.locked(|c| c.publish(p, counts, result, now));
            }
            Action::Reserve { want } => {
                let result = StepResult::Reserved(p.grow_reserve(want));
                let counts = self.counts();
                s.locked(|c| c.publish(p, counts, result, now));
            }
            Action::Unreserve { range } => {
                p.grow_unreserve(range);
                let counts = self.counts();
                s.locked(|c| c.publish(p, counts, StepResult::Unreserved, now));
            }
            Action::Plug { range } => {
                let result = StepResult::Plugged(p.plug(range));
                let counts = self.counts();
                s.locked(|c| c.publish(p, counts, result, now));
            }
            Action::Return { frames } => self.return_frames(p, s, frames, now),
            Action::Unplug { range } => {
                let result = StepResult::Unplugged(p.unplug(range));
                let counts = self.counts();
                s.locked(|c| c.publish(p, counts, result, now));
            }
            Action::Sleep { .. } | Action::Idle => {}
        }
    }

    fn hypercall(&mut self) {
        self.counts.hypercalls = self.counts.hypercalls.saturating_add(1);
    }

    #[allow(clippy::too_many_arguments)]
    fn inflate<P: Platform, S: Shared>(
        &mut self,
        p: &mut P,
        s: &mut S,
        count: Pages,
        prefer: Option<PfnRange>,
        scrub: bool,
        now: Uptime,
    ) {
        if count >= EXTENT && p.has_extents() {
            if self.claim_skip > 0 {
                self.claim_skip -= 1;
            } else if self.inflate_extents(p, s, count, prefer, scrub, now) {
                return;
            }
        }
        let n = count.min(MAX_SINGLE_STEP).0 as usize;
        self.pfns.clear();
        self.pfns.resize(n, 0);
        let got = p.alloc_pages(&mut self.pfns, prefer).min(n);
        self.pfns.truncate(got);
        // The point of no return is the hypercall: everything the record
        // after it could refuse is checked here, before anything moves.
        self.given.clear();
        self.given.extend(self.pfns.iter().map(|&f| Pfn(f)));
        let (given, pfns, scratch) = (&self.given, &self.pfns, &mut self.frames);
        let refused = s.locked(|c| match c.worker.check_inflate(given) {
            Ok(()) => false,
            Err(e) => {
                c.undo_refused_alloc(p, pfns, scratch);
                c.worker.refuse_inflate();
                c.step_failed(p, now, e);
                true
            }
        });
        if refused {
            return;
        }
        // The test-only broken build skips zeroing (see Cargo.toml).
        let scrubbed = scrub && !cfg!(feature = "test-break-scrub");
        if scrubbed {
            p.scrub_batch(&self.pfns);
        }
        self.frames.clear();
        if self.mode == GuestMode::Pv {
            // A page UVM handed out with no MFN behind it cannot be given
            // back; stop at it and keep it out of the batch.
            let mut keep = 0;
            for &pfn in &self.pfns {
                match p.p2m_lookup(Pfn(pfn)) {
                    Some(mfn) => {
                        self.frames.push(mfn.0);
                        keep += 1;
                    }
                    None => break,
                }
            }
            if let Some(unbacked) = self.pfns.get(keep..) {
                p.free_pages(unbacked);
            }
            self.pfns.truncate(keep);
            for &pfn in &self.pfns {
                p.p2m_clear(Pfn(pfn));
            }
        } else {
            self.frames.extend_from_slice(&self.pfns);
        }
        let (done, error) = if self.frames.is_empty() {
            (0, (got < n).then_some(Errno::ENOMEM))
        } else {
            self.hypercall();
            match p.decrease_reservation(&mut self.frames) {
                Ok(d) if d >= self.frames.len() => (self.frames.len(), None),
                Ok(d) => (d, Some(Errno::EAGAIN)),
                Err(e) => (0, Some(e)),
            }
        };
        // The tail Xen did not take goes back to use.
        if self.mode == GuestMode::Pv {
            let n = self.frames.len();
            p.p2m_set_batch(
                self.pfns.get(done..n).unwrap_or(&[]),
                self.frames.get(done..).unwrap_or(&[]),
            );
        }
        p.free_pages(self.pfns.get(done..).unwrap_or(&[]));
        // Counted as they reach Xen: pages Xen did not take were zeroed
        // too, but went back to UVM, not to Xen.
        if scrubbed {
            self.counts.scrubbed = self.counts.scrubbed.saturating_add(done as u64);
        }
        let error = error.or_else(|| (self.pfns.len() < n).then_some(Errno::ENOMEM));
        // The frames Xen took are the leading `done` of `pfns`, which are
        // the leading frames of `given` (the PV cut above only drops a
        // tail); the rest of the checked batch went back to UVM.
        let counts = self.counts();
        let (frames, rest) = self.given.split_at(done.min(self.given.len()));
        let result = StepResult::Inflated {
            frames,
            rest,
            error,
        };
        s.locked(|c| c.publish(p, counts, result, now));
    }

    /// Backs `pfns` with memory from Xen; returns how many leading frames
    /// are backed now, and the error that stopped it.
    fn back_frames<P: Platform>(&mut self, p: &mut P, pfns: &[u64]) -> (usize, Option<Errno>) {
        self.frames.clear();
        self.frames.resize(pfns.len(), 0);
        self.hypercall();
        let result = match self.mode {
            GuestMode::Pv => p.increase_reservation(&mut self.frames),
            GuestMode::Pvh => {
                self.frames.copy_from_slice(pfns);
                p.populate_physmap(&mut self.frames)
            }
        };
        let (done, error) = match result {
            Ok(d) if d >= pfns.len() => (pfns.len(), None),
            Ok(d) => (d, Some(Errno::ENOMEM)),
            Err(e) => (0, Some(e)),
        };
        if self.mode == GuestMode::Pv {
            p.p2m_set_batch(
                pfns.get(..done).unwrap_or(&[]),
                self.frames.get(..done).unwrap_or(&[]),
            );
        }
        (done, error)
    }

    /// The deflate's frames were read when it was decided: the first
    /// frames of whole 2 MiB extents into `starts` (if any), and the
    /// same leading frames one by one into `pfns` (see
    /// [`choose_deflate`]).
    fn deflate<P: Platform, S: Shared>(&mut self, p: &mut P, s: &mut S, now: Uptime) {
        let pfns = core::mem::take(&mut self.pfns);
        let (done, error) = self.back_step(p, &pfns, true);
        self.pfns = pfns;
        if done > 0 {
            // Pages went back to UVM: free 2 MiB runs may exist again.
            self.claim_skip = 0;
        }
        let counts = self.counts();
        let result = StepResult::Deflated {
            done: Pages(done as u64),
            error,
        };
        s.locked(|c| c.publish(p, counts, result, now));
    }

    /// Gives frames backed for a plug that did not happen back to Xen:
    /// one `decrease_reservation`; the frames Xen did not take stay
    /// stranded (PV: their p2m entries are put back) and are retried.
    fn return_frames<P: Platform, S: Shared>(
        &mut self,
        p: &mut P,
        s: &mut S,
        frames: PfnRange,
        now: Uptime,
    ) {
        self.pfns.clear();
        // At most one batch (the worker's choice): within the capacity
        // allocated at attach, so no allocation.
        self.pfns.extend(
            frames
                .frames()
                .take(MAX_SINGLE_STEP.0 as usize)
                .map(|f| f.0),
        );
        self.frames.clear();
        match self.mode {
            GuestMode::Pv => {
                // A frame with no MFN behind it cannot be given back; stop
                // at it (the worker retries with the back-off).
                for &pfn in &self.pfns {
                    match p.p2m_lookup(Pfn(pfn)) {
                        Some(mfn) => self.frames.push(mfn.0),
                        None => break,
                    }
                }
                for &pfn in self.pfns.get(..self.frames.len()).unwrap_or(&[]) {
                    p.p2m_clear(Pfn(pfn));
                }
            }
            GuestMode::Pvh => self.frames.extend_from_slice(&self.pfns),
        }
        let (done, error) = if self.frames.is_empty() {
            (0, Some(Errno::EINVAL))
        } else {
            self.hypercall();
            match p.decrease_reservation(&mut self.frames) {
                Ok(d) if d >= self.frames.len() => (self.frames.len(), None),
                Ok(d) => (d, Some(Errno::EAGAIN)),
                Err(e) => (0, Some(e)),
            }
        };
        if self.mode == GuestMode::Pv {
            let n = self.frames.len();
            p.p2m_set_batch(
                self.pfns.get(done..n).unwrap_or(&[]),
                self.frames.get(done..).unwrap_or(&[]),
            );
        }
        let error =
            error.or_else(|| (self.frames.len() < self.pfns.len()).then_some(Errno::EINVAL));
        let counts = self.counts();
        let result = StepResult::Returned {
            done: Pages(done as u64),
            error,
        };
        s.locked(|c| c.publish(p, counts, result, now));
    }
}

/// The frames a deflate backs, read from the bookkeeping with its
/// decision (under the control lock): the leading ballooned frames from
/// `from` as whole aligned 2 MiB extents, as far as they go (their first
/// frames into `starts`, at most [`MAX_STEP_EXTENTS`]), and the leading
/// frames one by one (into `pfns`, at most [`MAX_SINGLE_STEP`]; without
/// extents they stop before an aligned extent that is wholly ballooned,
/// which the next step takes whole). Either way they are the first
/// ballooned frames from `from`, as the bookkeeping records a deflate.
fn choose_deflate(
    space: &crate::segments::FrameSpace,
    from: Pfn,
    count: Pages,
    extents: bool,
    starts: &mut Vec<u64>,
    pfns: &mut Vec<u64>,
) {
    starts.clear();
    pfns.clear();
    let whole = |f: Pfn| {
        f.0.is_multiple_of(EXTENT.0)
            && PfnRange::with_len(f, EXTENT).is_some_and(|r| space.ballooned_in(r) == EXTENT)
    };
    if extents && count >= EXTENT {
        let max = (count.0 >> EXTENT_ORDER).min(MAX_STEP_EXTENTS.0) as usize;
        let mut next = space.ballooned_from(from).next();
        while let Some(f) = next.filter(|&f| starts.len() < max && whole(f)) {
            starts.push(f.0);
            next = f
                .checked_add(EXTENT)
                .and_then(|e| space.ballooned_from(e).next());
        }
    }
    // The same leading frames one by one (used if Xen backs none of the
    // extents), or the step's single frames.
    let n = count.min(MAX_SINGLE_STEP).0 as usize;
    let stop = extents && starts.is_empty();
    for f in space.ballooned_from(from).take(n) {
        if stop && !pfns.is_empty() && whole(f) {
            break;
        }
        pfns.push(f.0);
    }
}

impl Control {
    /// The bookkeeping refused the runs claimed for an inflate, before any
    /// went to Xen: every page goes back to UVM except those it says are
    /// ballooned (freeing them could put a page on the free lists twice).
    fn undo_refused_runs<P: Platform>(&self, p: &mut P, runs: &[PfnRange]) {
        let space = self.worker.frames();
        for r in runs {
            for f in r.frames() {
                if space.state(f) != crate::segments::FrameState::Ballooned {
                    p.free_pages(&[f.0]);
                }
            }
        }
    }
}

impl Exec {
    /// One backing step (deflate or plug): the extents in `starts` if
    /// any, else the single frames `pfns`; when Xen backs none of the
    /// extents (no free 2 MiB chunk, or no memory), the same frames one
    /// by one in this step, so that a host without 2 MiB chunks costs no
    /// short step. `free` hands the backed pages to UVM (deflate). The
    /// frames backed (leading, in order) and the error that stopped it.
    /// After a miss, the next 2, 4, ... 64 steps that back anything use
    /// single frames; a step that backs nothing does not count, so a
    /// host out of memory is asked for single frames only.
    fn back_step<P: Platform>(
        &mut self,
        p: &mut P,
        pfns: &[u64],
        free: bool,
    ) -> (usize, Option<Errno>) {
        let tried = !self.starts.is_empty();
        let mut r = (0, None);
        if tried {
            let (k, e) = self.back_extents(p);
            if free {
                for &first in self.starts.get(..k).unwrap_or(&[]) {
                    if let Some(run) = PfnRange::with_len(Pfn(first), EXTENT) {
                        p.free_run(run);
                    }
                }
            }
            // Extents Xen backed are progress; the next step goes on
            // with single frames (the miss set the skip).
            r = (k << EXTENT_ORDER, if k > 0 { None } else { e });
        }
        if !tried || r.0 == 0 {
            r = self.back_frames(p, pfns);
            if free {
                p.free_pages(pfns.get(..r.0).unwrap_or(&[]));
            }
            if !tried && r.0 > 0 {
                self.back_skip = self.back_skip.saturating_sub(1);
            }
        }
        r
    }

    /// Has Xen back the 2 MiB extents whose first frames are in `starts`
    /// (PV: `increase_reservation` with `extent_order` 9, each new
    /// machine extent mapped frame by frame in the p2m; PVH:
    /// `populate_physmap` with order 9): how many leading extents are
    /// backed now, and the error that stopped it. One hypercall: a
    /// failure (the host has no free 2 MiB chunk, or no memory) is the
    /// step's result, and the next few backing steps use single frames.
    fn back_extents<P: Platform>(&mut self, p: &mut P) -> (usize, Option<Errno>) {
        let k = self.starts.len();
        self.frames.clear();
        match self.mode {
            GuestMode::Pv => self.frames.resize(k, 0),
            GuestMode::Pvh => self.frames.extend_from_slice(&self.starts),
        }
        self.hypercall();
        let op = match self.mode {
            GuestMode::Pv => MemOp::Increase,
            GuestMode::Pvh => MemOp::Populate,
        };
        let (done, error) = match p.reservation(op, &mut self.frames, EXTENT_ORDER) {
            Ok(d) if d >= k => (k, None),
            Ok(d) => (d, Some(Errno::ENOMEM)),
            Err(e) => (0, Some(e)),
        };
        if self.mode == GuestMode::Pv {
            for i in 0..done {
                let (Some(&first), Some(&mfn)) = (self.starts.get(i), self.frames.get(i)) else {
                    break;
                };
                self.map_extent(p, first, mfn);
            }
        }
        self.counts.extents = self.counts.extents.saturating_add(done as u64);
        if error.is_some() {
            self.back_misses = self.back_misses.saturating_add(1);
            self.back_skip = skip_after(self.back_misses);
        } else {
            self.back_misses = 0;
        }
        (done, error)
    }

    /// PV: maps the 512 frames from `first` to the machine frames from
    /// `mfn` (an extent Xen gave or kept: contiguous machine frames).
    fn map_extent<P: Platform>(&mut self, p: &mut P, first: u64, mfn: u64) {
        self.ext_pfns.clear();
        self.ext_mfns.clear();
        self.ext_pfns.extend((0..EXTENT.0).map(|j| first + j));
        self.ext_mfns.extend((0..EXTENT.0).map(|j| mfn + j));
        p.p2m_set_batch(&self.ext_pfns, &self.ext_mfns);
    }

    /// Claims free aligned 2 MiB runs for an inflate of up to `count`
    /// pages, gives them to Xen as 2 MiB extents (one hypercall) and
    /// publishes the result: true. False when no run was to be had
    /// (nothing changed, no hypercall: the caller takes single pages in
    /// this step); a miss makes the next few steps skip the claim.
    #[allow(clippy::too_many_arguments)]
    fn inflate_extents<P: Platform, S: Shared>(
        &mut self,
        p: &mut P,
        s: &mut S,
        count: Pages,
        prefer: Option<PfnRange>,
        scrub: bool,
        now: Uptime,
    ) -> bool {
        self.claim_runs(p, count, prefer);
        // The point of no return is the hypercall: the record after it is
        // checked here, before anything moves.
        let runs = &self.runs;
        let refused = s.locked(|c| match c.worker.check_inflate_runs(runs) {
            Ok(()) => false,
            Err(e) => {
                c.undo_refused_runs(p, runs);
                c.worker.refuse_inflate();
                c.step_failed(p, now, e);
                true
            }
        });
        if refused {
            self.runs.clear();
            return true;
        }
        if self.mode == GuestMode::Pv {
            // decrease_reservation takes an extent as its first machine
            // frame and the 511 after it (memory.c: gmfn + j): only
            // extents whose frames are backed by consecutive machine
            // frames can go whole.
            let keep = self.mfn_contiguous_extents(p);
            self.cut_runs(p, Pages(keep << EXTENT_ORDER));
        }
        if self.runs.is_empty() {
            self.claim_misses = self.claim_misses.saturating_add(1);
            self.claim_skip = skip_after(self.claim_misses);
            return false;
        }
        self.claim_misses = 0;
        let scrubbed = scrub && !cfg!(feature = "test-break-scrub");
        self.frames.clear();
        for i in 0..self.runs.len() {
            let Some(&r) = self.runs.get(i) else { break };
            if scrubbed {
                // An extent's pages in one call (PV: a few pages per
                // MMUEXT_CLEAR_PAGE hypercall, as single frames are).
                let mut e = r.start();
                while e < r.end() {
                    self.ext_pfns.clear();
                    self.ext_pfns.extend((0..EXTENT.0).map(|j| e.0 + j));
                    p.scrub_batch(&self.ext_pfns);
                    match e.checked_add(EXTENT) {
                        Some(n) => e = n,
                        None => break,
                    }
                }
            }
            let mut e = r.start();
            while e < r.end() {
                let first = match self.mode {
                    GuestMode::Pv => p.p2m_lookup(e).map_or(0, |m| m.0),
                    GuestMode::Pvh => e.0,
                };
                self.frames.push(first);
                match e.checked_add(EXTENT) {
                    Some(n) => e = n,
                    None => break,
                }
            }
            if self.mode == GuestMode::Pv {
                for f in r.frames() {
                    p.p2m_clear(f);
                }
            }
        }
        let k = self.frames.len();
        self.hypercall();
        let (done, error) = match p.reservation(MemOp::Decrease, &mut self.frames, EXTENT_ORDER) {
            Ok(d) if d >= k => (k, None),
            Ok(d) => (d, Some(Errno::EAGAIN)),
            Err(e) => (0, Some(e)),
        };
        // Xen stops at an extent it could not take whole (memory.c
        // decrease_reservation: nr_done counts whole extents). The
        // extents it did not take go back to use (PV: mapped again).
        if self.mode == GuestMode::Pv {
            let mut i = 0usize;
            for r in 0..self.runs.len() {
                let Some(&run) = self.runs.get(r) else { break };
                let mut e = run.start();
                while e < run.end() {
                    if i >= done {
                        if let Some(&mfn) = self.frames.get(i) {
                            self.map_extent(p, e.0, mfn);
                        }
                    }
                    i += 1;
                    match e.checked_add(EXTENT) {
                        Some(n) => e = n,
                        None => break,
                    }
                }
            }
        }
        self.cut_runs(p, Pages((done as u64) << EXTENT_ORDER));
        let pages = (done as u64) << EXTENT_ORDER;
        if scrubbed {
            self.counts.scrubbed = self.counts.scrubbed.saturating_add(pages);
        }
        self.counts.extents = self.counts.extents.saturating_add(done as u64);
        let counts = self.counts();
        let result = StepResult::InflatedRuns {
            runs: &self.runs,
            error,
        };
        s.locked(|c| c.publish(p, counts, result, now));
        true
    }

    /// Claims up to `count` pages (whole extents, at most one step's) as
    /// free aligned 2 MiB runs: from `prefer` (the newest plugged segment)
    /// only when there is one, else below the span's end; the largest run
    /// first, halving the size on each refusal, so that contiguous free
    /// memory costs one `uvm_pglistalloc` a step. Never from elsewhere
    /// while a plugged segment is preferred: frames ballooned in boot
    /// memory while a plugged segment still holds pages could come back
    /// only through Xen, whose maximum an `xl mem-set` has lowered by
    /// then, so unload was refused ("still ballooned: Xen gave no more
    /// back"). Single pages, which take the segment's last pages, follow
    /// when no run is free there.
    fn claim_runs<P: Platform>(&mut self, p: &mut P, count: Pages, prefer: Option<PfnRange>) {
        self.runs.clear();
        let mut left = (count.0 >> EXTENT_ORDER).min(MAX_STEP_EXTENTS.0);
        let Some(area) = prefer.or(PfnRange::new(Pfn(0), self.span_end)) else {
            return;
        };
        if self.claim_misses > 0 && left > 0 {
            // The last claim found no run: one 2 MiB probe first, so that
            // memory still fragmented costs one call, not a halving
            // series.
            self.counts.run_claims = self.counts.run_claims.saturating_add(1);
            let Some(first) = p.alloc_run(EXTENT, EXTENT, area) else {
                return;
            };
            match PfnRange::with_len(first, EXTENT) {
                Some(r) if first.0.is_multiple_of(EXTENT.0) => {
                    self.runs.push(r);
                    left -= 1;
                }
                Some(r) => {
                    p.free_run(r);
                    return;
                }
                None => return,
            }
        }
        let mut size = left;
        while left > 0 && size > 0 && self.runs.len() < self.runs.capacity() {
            self.counts.run_claims = self.counts.run_claims.saturating_add(1);
            let len = Pages(size << EXTENT_ORDER);
            let Some(first) = p.alloc_run(len, EXTENT, area) else {
                size /= 2;
                continue;
            };
            match PfnRange::with_len(first, len) {
                Some(r) if first.0.is_multiple_of(EXTENT.0) => {
                    self.runs.push(r);
                    left -= size;
                    size = size.min(left);
                }
                // Not what was asked for: given back, no more claims.
                Some(r) => {
                    p.free_run(r);
                    return;
                }
                None => return,
            }
        }
    }

    /// PV: how many leading extents of the claimed runs have their frames
    /// backed by consecutive machine frames.
    fn mfn_contiguous_extents<P: Platform>(&mut self, p: &mut P) -> u64 {
        let mut keep = 0u64;
        for &r in &self.runs {
            let mut e = r.start();
            while e < r.end() {
                let Some(base) = p.p2m_lookup(e) else {
                    return keep;
                };
                for j in 1..EXTENT.0 {
                    let next = Pfn(e.0 + j);
                    if p.p2m_lookup(next).map(|m| m.0) != Some(base.0 + j) {
                        return keep;
                    }
                }
                keep += 1;
                match e.checked_add(EXTENT) {
                    Some(n) => e = n,
                    None => break,
                }
            }
        }
        keep
    }

    /// Keeps the first `keep` frames of the claimed runs and frees the
    /// rest to UVM.
    fn cut_runs<P: Platform>(&mut self, p: &mut P, keep: Pages) {
        let mut left = keep;
        let mut kept = 0usize;
        for i in 0..self.runs.len() {
            let Some(&r) = self.runs.get(i) else { break };
            if left >= r.len() {
                left = left.saturating_sub(r.len());
                kept = i + 1;
                continue;
            }
            let cut = r.start().checked_add(left).unwrap_or(r.end());
            if let Some(tail) = PfnRange::new(cut, r.end()) {
                p.free_run(tail);
            }
            if !left.is_zero() {
                if let (Some(head), Some(slot)) =
                    (PfnRange::new(r.start(), cut), self.runs.get_mut(i))
                {
                    *slot = head;
                    kept = i + 1;
                }
            }
            left = Pages::ZERO;
        }
        self.runs.truncate(kept);
    }
}

#[cfg(test)]
mod tests;
