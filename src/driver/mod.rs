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
use crate::policy::{self, MemInfo, Source, EXTENT, EXTENT_ORDER, MAX_BATCH, MAX_STEP_EXTENTS};
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
    /// `uvm_physseg_plug` of a fully backed range.
    fn plug(&mut self, range: PfnRange) -> Result<(), Errno>;
    /// `uvm_physseg_unplug` of a range the driver owns.
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

/// Steps taken with single frames after 2 MiB extents were not to be had
/// `misses` times in a row: 2, 4, ... 64, so that fragmented memory or a
/// host without free 2 MiB chunks costs few failed calls.
fn skip_after(misses: u32) -> u32 {
    1u32 << misses.clamp(1, 6)
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
    /// The runs of the 2 MiB extents of the step under way.
    runs: Vec<PfnRange>,
    /// The first frames of the extents to back in the step under way.
    starts: Vec<u64>,
    /// One extent's frames and machine frames (PV p2m updates).
    ext_pfns: Vec<u64>,
    ext_mfns: Vec<u64>,
    /// Inflate steps left to take with single pages before claiming 2 MiB
    /// runs again, and how many claims in a row found none.
    claim_skip: u32,
    claim_misses: u32,
    /// The same for backing frames (deflate, plug) with 2 MiB extents.
    back_skip: u32,
    back_misses: u32,
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
            runs: Vec::with_capacity(MAX_STEP_EXTENTS.0 as usize),
            starts: Vec::with_capacity(MAX_STEP_EXTENTS.0 as usize),
            ext_pfns: Vec::with_capacity(EXTENT.0 as usize),
            ext_mfns: Vec::with_capacity(EXTENT.0 as usize),
            claim_skip: 0,
            claim_misses: 0,
            back_skip: 0,
            back_misses: 0,
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
                // Whole aligned 2 MiB extents first, when the range starts
                // at one.
                self.starts.clear();
                if frames.start().0 % EXTENT.0 == 0 && self.back_skip == 0 && p.has_extents() {
                    let k = (frames.len().0 >> EXTENT_ORDER).min(MAX_STEP_EXTENTS.0);
                    let first = frames.start().0;
                    self.starts
                        .extend((0..k).map(|i| first + (i << EXTENT_ORDER)));
                }
                let (extents, mut error) = self.back_extents(p);
                let mut done = extents << EXTENT_ORDER;
                let batch = self.single_batch();
                if done < frames.len().0 as usize && (done == 0 || error.is_some()) {
                    // The rest of one batch with single frames.
                    let mut pfns = core::mem::take(&mut self.pfns);
                    pfns.clear();
                    pfns.extend(frames.frames().skip(done).map(|f| f.0).take(batch));
                    let (d0, e0) = self.back_frames(p, &pfns);
                    self.pfns = pfns;
                    done += d0;
                    error = e0;
                }
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
        if count >= EXTENT && p.has_extents() {
            if let Some(r) = self.inflate_extents(p, count, prefer, scrub, now) {
                return r;
            }
        }
        let n = self.single_batch().min(count.0 as usize);
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
            for &pfn in &self.pfns {
                p.scrub(Pfn(pfn));
            }
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
        // The leading ballooned frames as whole aligned 2 MiB extents,
        // as far as they go.
        self.starts.clear();
        if count >= EXTENT && self.back_skip == 0 && p.has_extents() {
            let space = self.worker.frames();
            let max = (count.0 >> EXTENT_ORDER).min(MAX_STEP_EXTENTS.0) as usize;
            let mut next = space.ballooned_from(from).next();
            while let Some(f) = next.filter(|_| self.starts.len() < max) {
                let whole = PfnRange::with_len(f, EXTENT)
                    .is_some_and(|r| f.0 % EXTENT.0 == 0 && space.ballooned_in(r) == EXTENT);
                if !whole {
                    break;
                }
                self.starts.push(f.0);
                next = f
                    .checked_add(EXTENT)
                    .and_then(|e| space.ballooned_from(e).next());
            }
        }
        let (ext_done, mut error) = self.back_extents(p);
        for &first in self.starts.get(..ext_done).unwrap_or(&[]) {
            if let Some(r) = PfnRange::with_len(Pfn(first), EXTENT) {
                p.free_run(r);
            }
        }
        let mut done = ext_done << EXTENT_ORDER;
        if self.starts.is_empty() || error.is_some() {
            // Single frames: the next ballooned frames, at most one
            // batch, stopping before an aligned 2 MiB extent that is
            // wholly ballooned (the next step takes it whole).
            let after = self.starts.get(ext_done).map_or(from, |&f| Pfn(f));
            let n = self
                .single_batch()
                .min(count.0.saturating_sub(done as u64) as usize);
            let extents = self.back_skip == 0 && p.has_extents();
            let mut pfns = core::mem::take(&mut self.pfns);
            pfns.clear();
            let space = self.worker.frames();
            for f in space.ballooned_from(after).take(n) {
                let whole = || {
                    PfnRange::with_len(f, EXTENT).is_some_and(|r| space.ballooned_in(r) == EXTENT)
                };
                if !pfns.is_empty() && f.0 % EXTENT.0 == 0 && extents && whole() {
                    break;
                }
                pfns.push(f.0);
            }
            if !pfns.is_empty() {
                let (d0, e0) = self.back_frames(p, &pfns);
                p.free_pages(pfns.get(..d0).unwrap_or(&[]));
                done += d0;
                error = e0;
            }
            self.pfns = pfns;
        }
        if done > 0 {
            // Pages went back to UVM: free 2 MiB runs may exist again.
            self.claim_skip = 0;
        }
        self.worker.complete(
            StepResult::Deflated {
                done: Pages(done as u64),
                error,
            },
            now,
        )
    }

    /// Frames one step takes when it uses single frames: one batch.
    fn single_batch(&self) -> usize {
        self.worker.policy().batch().min(MAX_BATCH).0 as usize
    }

    /// Has Xen back the 2 MiB extents whose first frames are in `starts`
    /// (PV: `increase_reservation` with `extent_order` 9, each new
    /// machine extent mapped frame by frame in the p2m; PVH:
    /// `populate_physmap` with order 9): how many leading extents are
    /// backed now, and the error that stopped it. A failure (the host has
    /// no free 2 MiB chunk) makes the next few steps use single frames.
    fn back_extents<P: Platform>(&mut self, p: &mut P) -> (usize, Option<Errno>) {
        if self.starts.is_empty() {
            self.back_skip = self.back_skip.saturating_sub(1);
            return (0, None);
        }
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
        self.stats.extents = self.stats.extents.saturating_add(done as u64);
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
    /// pages, gives them to Xen as 2 MiB extents and records them. `None`
    /// when no run was to be had (nothing changed: the caller uses
    /// single pages); a miss makes the next few steps skip the claim.
    fn inflate_extents<P: Platform>(
        &mut self,
        p: &mut P,
        count: Pages,
        prefer: Option<PfnRange>,
        scrub: bool,
        now: Uptime,
    ) -> Option<Result<(), WorkerError>> {
        if self.claim_skip > 0 {
            self.claim_skip -= 1;
            return None;
        }
        self.claim_runs(p, count, prefer);
        if let Err(e) = self.worker.check_inflate_runs(&self.runs) {
            self.free_runs_not_ballooned(p);
            self.worker.refuse_inflate();
            return Some(Err(e));
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
            return None;
        }
        self.claim_misses = 0;
        let scrubbed = scrub && !cfg!(feature = "test-break-scrub");
        self.frames.clear();
        for i in 0..self.runs.len() {
            let Some(&r) = self.runs.get(i) else { break };
            if scrubbed {
                for f in r.frames() {
                    p.scrub(f);
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
        // Xen stops at an extent it could not take whole, and counts
        // none of it: with every frame ours and its machine frames
        // consecutive, none of its frames was taken. The extents it did
        // not take go back to use.
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
            self.stats.scrubbed = self.stats.scrubbed.saturating_add(pages);
        }
        self.stats.extents = self.stats.extents.saturating_add(done as u64);
        Some(self.worker.complete(
            StepResult::InflatedRuns {
                runs: &self.runs,
                error,
            },
            now,
        ))
    }

    /// Claims up to `count` pages (whole extents, at most one step's) as
    /// free aligned 2 MiB runs, from `prefer` first: the largest run
    /// first, halving the size on each refusal, so that contiguous free
    /// memory costs one `uvm_pglistalloc` a step.
    fn claim_runs<P: Platform>(&mut self, p: &mut P, count: Pages, prefer: Option<PfnRange>) {
        self.runs.clear();
        let mut left = (count.0 >> EXTENT_ORDER).min(MAX_STEP_EXTENTS.0);
        let whole = PfnRange::new(Pfn(0), self.worker.frames().span_end());
        if self.claim_misses > 0 && left > 0 {
            // The last claim found no run: one 2 MiB probe first, so that
            // memory still fragmented costs one call, not a halving
            // series.
            let Some(area) = whole else { return };
            self.stats.run_claims = self.stats.run_claims.saturating_add(1);
            let Some(first) = p.alloc_run(EXTENT, EXTENT, area) else {
                return;
            };
            match PfnRange::with_len(first, EXTENT) {
                Some(r) if first.0 % EXTENT.0 == 0 => {
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
        for area in [prefer, whole].into_iter().flatten() {
            if prefer.is_some() && !self.runs.is_empty() {
                // Runs from the preferred (newest plugged) segment make
                // this step: it empties first, and the next step prefers
                // the next one.
                break;
            }
            let mut size = left;
            while left > 0 && size > 0 {
                self.stats.run_claims = self.stats.run_claims.saturating_add(1);
                let len = Pages(size << EXTENT_ORDER);
                let Some(first) = p.alloc_run(len, EXTENT, area) else {
                    size /= 2;
                    continue;
                };
                match PfnRange::with_len(first, len) {
                    Some(r) if first.0 % EXTENT.0 == 0 => {
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

    /// The bookkeeping refused the claimed runs: every page goes back to
    /// UVM except those it says are ballooned (freeing them could put a
    /// page on the free lists twice).
    fn free_runs_not_ballooned<P: Platform>(&mut self, p: &mut P) {
        for i in 0..self.runs.len() {
            let Some(&r) = self.runs.get(i) else { break };
            for f in r.frames() {
                if self.worker.frames().state(f) != crate::segments::FrameState::Ballooned {
                    p.free_pages(&[f.0]);
                }
            }
        }
        self.runs.clear();
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
