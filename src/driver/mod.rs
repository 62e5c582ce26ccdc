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
//! - **plug**: `uvm_physseg_plug` of a fully backed segment, which puts
//!   every page on the free lists at once.
//! - **return**: give frames backed for a plug that did not happen back
//!   with `decrease_reservation` (PV: their p2m entries are cleared first
//!   and put back for the tail Xen did not take).
//! - **unplug**: `uvm_physseg_unplug`; the worker forgets the pages.
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
    /// `uvm_physseg_plug` of a fully backed range.
    fn plug(&mut self, range: PfnRange) -> Result<(), Errno>;
    /// `uvm_physseg_unplug` of a range the driver owns.
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

/// The worker plus the buffers and mode a step needs.
#[derive(Debug)]
pub struct Driver {
    worker: Worker,
    mode: GuestMode,
    pfns: Vec<u64>,
    frames: Vec<u64>,
    /// The frames of an inflate as the bookkeeping takes them.
    given: Vec<Pfn>,
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

impl Driver {
    /// A driver for `worker` in `mode`. The frame buffers are allocated
    /// here, once, at their largest.
    pub fn new(worker: Worker, mode: GuestMode) -> Driver {
        Driver {
            worker,
            mode,
            pfns: Vec::with_capacity(MAX_BATCH.0 as usize),
            frames: Vec::with_capacity(MAX_BATCH.0 as usize),
            given: Vec::with_capacity(MAX_BATCH.0 as usize),
            stats: DriverStats::default(),
            reported: None,
            budget: LogBudget::default(),
            held: None,
            dropped: 0,
            xenstore_last: None,
        }
    }

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
        };
        self.say(
            p,
            now,
            LogLine::format(format_args!("{what}: error {}", error.0)),
        );
    }

    /// Asks the worker for the next action at `now` and carries it out.
    pub fn step<P: Platform>(&mut self, p: &mut P, now: Uptime) -> StepStatus {
        self.flush_held(p, now);
        let mem = p.meminfo();
        let status = match self.worker.next_action(now, mem) {
            Ok(Action::Idle) => StepStatus::Idle,
            Ok(Action::Sleep { until }) => StepStatus::Sleep(until.0.saturating_sub(now.0).max(1)),
            Ok(action) => {
                if let Err(e) = self.carry_out(p, action, now) {
                    let line = if self.worker.stopped() {
                        LogLine::format(format_args!("stopped: {}: {e:?}", self.worker.state()))
                    } else {
                        LogLine::format(format_args!("internal error, step dropped: {e:?}"))
                    };
                    self.say(p, now, line);
                }
                StepStatus::Again
            }
            Err(e) => {
                self.say(
                    p,
                    now,
                    LogLine::format(format_args!("internal error: {e:?}")),
                );
                StepStatus::Idle
            }
        };
        if status == StepStatus::Again {
            return status;
        }
        self.report(p, now);
        // A held line needs a wake-up when the window reopens.
        let Some(at) = self.budget.reopens_at().filter(|_| self.held.is_some()) else {
            return status;
        };
        let wake = at.0.saturating_sub(now.0).max(1);
        match status {
            StepStatus::Sleep(ms) => StepStatus::Sleep(ms.min(wake)),
            _ => StepStatus::Sleep(wake),
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
    /// whatever the budget says: the module is going away.
    fn print_held<P: Platform>(&mut self, p: &mut P) {
        self.print_dropped(p);
        if let Some(line) = self.held.take() {
            p.log(line.as_str());
        }
    }

    fn print_dropped<P: Platform>(&mut self, p: &mut P) {
        if self.dropped > 0 {
            p.log(
                LogLine::format(format_args!("{} earlier messages suppressed", self.dropped))
                    .as_str(),
            );
            self.dropped = 0;
        }
    }

    /// Gives every ballooned frame back before unload, stepping until none
    /// is left (Ok) or a step falls short (Err(EBUSY)). Either way the
    /// worker then steers to its target again: after Ok the module
    /// unloads, after EBUSY it stays and goes on working.
    pub fn release<P: Platform>(&mut self, p: &mut P, now: Uptime) -> Result<(), Errno> {
        if self.worker.stopped() {
            // The bookkeeping no longer knows which frames are whose: a
            // release could give pages to UVM twice or leave frames in
            // Xen unaccounted. The module stays.
            let line = LogLine::format(format_args!("cannot unload: {}", self.worker.state()));
            self.say(p, now, line);
            return Err(Errno::EBUSY);
        }
        self.worker.begin_release();
        loop {
            match self.step(p, now) {
                StepStatus::Again => continue,
                // Idle, or asleep only to print a held log line later.
                StepStatus::Idle => return self.released(p),
                StepStatus::Sleep(_) if self.worker.state() == State::Idle => {
                    return self.released(p)
                }
                StepStatus::Sleep(_) => {
                    let line = self.release_refused();
                    self.say(p, now, line);
                    self.worker.end_release();
                    return Err(Errno::EBUSY);
                }
            }
        }
    }

    /// Why a release stopped short, for the log: what the step that fell
    /// short was.
    fn release_refused(&self) -> LogLine {
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
                "{left} KiB still ballooned: uvm_physseg_unplug refused a plugged segment"
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

    fn carry_out<P: Platform>(
        &mut self,
        p: &mut P,
        action: Action,
        now: Uptime,
    ) -> Result<(), WorkerError> {
        match action {
            Action::Inflate {
                count,
                prefer,
                scrub,
            } => self.inflate(p, count, prefer, scrub, now),
            Action::Deflate { from, count } => self.deflate(p, from, count, now),
            Action::Back { frames } => {
                // The scratch list is taken out for the call and put back:
                // no allocation.
                let mut pfns = core::mem::take(&mut self.pfns);
                pfns.clear();
                pfns.extend(frames.frames().map(|f| f.0).take(MAX_BATCH.0 as usize));
                let (done, error) = self.back_frames(p, &pfns);
                self.pfns = pfns;
                self.worker.complete(
                    StepResult::Backed {
                        done: Pages(done as u64),
                        error,
                    },
                    now,
                )
            }
            Action::Plug { range } => {
                let result = p.plug(range);
                self.worker.complete(StepResult::Plugged(result), now)
            }
            Action::Return { runs } => self.return_frames(p, &runs, now),
            Action::Unplug { range } => {
                let result = p.unplug(range);
                self.worker.complete(StepResult::Unplugged(result), now)
            }
            Action::Sleep { .. } | Action::Idle => Ok(()),
        }
    }

    fn hypercall(&mut self) {
        self.stats.hypercalls = self.stats.hypercalls.saturating_add(1);
    }

    fn inflate<P: Platform>(
        &mut self,
        p: &mut P,
        count: Pages,
        prefer: Option<PfnRange>,
        scrub: bool,
        now: Uptime,
    ) -> Result<(), WorkerError> {
        let n = count.min(MAX_BATCH).0 as usize;
        self.pfns.clear();
        self.pfns.resize(n, 0);
        let got = p.alloc_pages(&mut self.pfns, prefer).min(n);
        self.pfns.truncate(got);
        // The point of no return is the hypercall: everything the record
        // after it could refuse is checked here, before anything moves.
        self.given.clear();
        self.given.extend(self.pfns.iter().map(|&f| Pfn(f)));
        if let Err(e) = self.worker.check_inflate(&self.given) {
            self.undo_refused_alloc(p);
            self.worker.refuse_inflate();
            return Err(e);
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
        p.free_pages(&self.pfns[done..]);
        // Counted as they reach Xen: pages Xen did not take were zeroed
        // too, but went back to UVM, not to Xen.
        if scrubbed {
            self.stats.scrubbed = self.stats.scrubbed.saturating_add(done as u64);
        }
        let error = error.or_else(|| (self.pfns.len() < n).then_some(Errno::ENOMEM));
        // The frames Xen took are the leading `done` of `pfns`, which are
        // the leading frames of `given` (the PV cut above only drops a tail).
        self.given.truncate(done);
        self.worker.complete(
            StepResult::Inflated {
                frames: &self.given,
                error,
            },
            now,
        )
    }

    /// The bookkeeping refused the pages UVM gave for an inflate, before
    /// any went to Xen: each page goes back to UVM once, except those
    /// the bookkeeping says the driver holds already (ballooned), which
    /// are kept: freeing them could put one page on the free lists twice.
    fn undo_refused_alloc<P: Platform>(&mut self, p: &mut P) {
        self.frames.clear();
        self.frames.extend_from_slice(&self.pfns);
        crate::sort::sort(&mut self.frames);
        self.frames.dedup();
        let space = self.worker.frames();
        self.frames
            .retain(|&f| space.state(Pfn(f)) != crate::segments::FrameState::Ballooned);
        p.free_pages(&self.frames);
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

    fn deflate<P: Platform>(
        &mut self,
        p: &mut P,
        from: Pfn,
        count: Pages,
        now: Uptime,
    ) -> Result<(), WorkerError> {
        let mut pfns = core::mem::take(&mut self.pfns);
        pfns.clear();
        let n = count.min(MAX_BATCH).0 as usize;
        pfns.extend(
            self.worker
                .frames()
                .ballooned_from(from)
                .take(n)
                .map(|f| f.0),
        );
        let (done, error) = self.back_frames(p, &pfns);
        p.free_pages(pfns.get(..done).unwrap_or(&[]));
        self.pfns = pfns;
        self.worker.complete(
            StepResult::Deflated {
                done: Pages(done as u64),
                error,
            },
            now,
        )
    }

    /// Gives frames backed for a plug that did not happen back to Xen:
    /// one `decrease_reservation`; the frames Xen did not take stay
    /// stranded (PV: their p2m entries are put back) and are retried.
    fn return_frames<P: Platform>(
        &mut self,
        p: &mut P,
        runs: &[PfnRange],
        now: Uptime,
    ) -> Result<(), WorkerError> {
        self.pfns.clear();
        self.pfns
            .extend(runs.iter().flat_map(|r| r.frames()).map(|f| f.0));
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
                for &pfn in &self.pfns[..self.frames.len()] {
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
        self.worker.complete(
            StepResult::Returned {
                done: Pages(done as u64),
                error,
            },
            now,
        )
    }

    /// One log line when the worker reaches its target or gives up, not
    /// one per batch: called when the worker has nothing more to do.
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
            // The reason as hw.balloon.state gives it, with the last
            // shortfall for "retries exhausted".
            State::Cancelled(_) => {
                let text = LogLine::format(format_args!("{state}"));
                let text = text.as_str();
                Some(LogLine::format(format_args!(
                    "giving up on target {} KiB at {} KiB: {}",
                    kib(self.worker.as_toolstack(target)),
                    kib(self.worker.as_toolstack(self.worker.current())),
                    text.strip_prefix("cancelled: ").unwrap_or(text)
                )))
            }
            _ => None,
        };
        if let Some(line) = line {
            self.say(p, now, line);
            self.reported = Some(key);
        }
    }
}

#[cfg(test)]
mod tests;
