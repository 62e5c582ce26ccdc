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
use crate::policy::{self, MemInfo, Source, MAX_BATCH};
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
    /// Hypercalls and pages zeroed by the step in flight, published with
    /// its result.
    hypercalls: u64,
    scrubbed: u64,
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
        let batch = MAX_BATCH.0 as usize;
        let mut pfns = Vec::new();
        let mut frames = Vec::new();
        let mut given = Vec::new();
        pfns.try_reserve_exact(batch).map_err(|_| Errno::ENOMEM)?;
        frames.try_reserve_exact(batch).map_err(|_| Errno::ENOMEM)?;
        given.try_reserve_exact(batch).map_err(|_| Errno::ENOMEM)?;
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
                hypercalls: 0,
                scrubbed: 0,
            },
        })
    }

    /// The two halves, to be kept under different locks.
    pub fn split(self) -> (Control, Exec) {
        (self.control, self.exec)
    }

    /// The worker (policy, bookkeeping, stats).
    pub fn worker(&self) -> &Worker {
        &self.control.worker
    }

    /// The worker, to set targets and knobs.
    pub fn worker_mut(&mut self) -> &mut Worker {
        &mut self.control.worker
    }

    /// Counters of the driver itself.
    pub fn stats(&self) -> DriverStats {
        self.control.stats
    }

    /// The guest mode.
    pub fn mode(&self) -> GuestMode {
        self.control.mode
    }

    /// See [`Control::xenstore_event`].
    pub fn xenstore_event<P: Platform>(
        &mut self,
        p: &mut P,
        read: Result<&[u8], Errno>,
        resync: bool,
        now: Uptime,
    ) -> Result<(), Errno> {
        self.control.xenstore_event(p, read, resync, now)
    }

    /// See [`Control::shim_failed`].
    pub fn shim_failed<P: Platform>(
        &mut self,
        p: &mut P,
        what: ShimFailure,
        error: Errno,
        now: Uptime,
    ) {
        self.control.shim_failed(p, what, error, now)
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
        (hypercalls, scrubbed): (u64, u64),
        result: StepResult<'_>,
        now: Uptime,
    ) {
        self.stats.hypercalls = self.stats.hypercalls.saturating_add(hypercalls);
        self.stats.scrubbed = self.stats.scrubbed.saturating_add(scrubbed);
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
        let pfns = &mut self.pfns;
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
                    if let Action::Deflate { from, count } = action {
                        pfns.clear();
                        let n = count.min(MAX_BATCH).0 as usize;
                        pfns.extend(c.worker.frames().ballooned_from(from).take(n).map(|f| f.0));
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
    fn counts(&mut self) -> (u64, u64) {
        (
            core::mem::take(&mut self.hypercalls),
            core::mem::take(&mut self.scrubbed),
        )
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
                // The scratch list is taken out for the call and put back:
                // no allocation.
                let mut pfns = core::mem::take(&mut self.pfns);
                pfns.clear();
                pfns.extend(frames.frames().map(|f| f.0).take(MAX_BATCH.0 as usize));
                let (done, error) = self.back_frames(p, &pfns);
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
        self.hypercalls = self.hypercalls.saturating_add(1);
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
        let n = count.min(MAX_BATCH).0 as usize;
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
            self.scrubbed = self.scrubbed.saturating_add(done as u64);
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

    /// The deflate's frames were read into `pfns` when it was decided.
    fn deflate<P: Platform, S: Shared>(&mut self, p: &mut P, s: &mut S, now: Uptime) {
        let pfns = core::mem::take(&mut self.pfns);
        let (done, error) = self.back_frames(p, &pfns);
        p.free_pages(pfns.get(..done).unwrap_or(&[]));
        self.pfns = pfns;
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
        self.pfns
            .extend(frames.frames().take(MAX_BATCH.0 as usize).map(|f| f.0));
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

#[cfg(test)]
mod tests;
