//! Driver tests over a small platform model: the order of p2m updates,
//! hypercalls and frees, and the undo of partial steps.

use super::*;
use crate::ffi::test_alloc::{allocations, failing, uncounted};
use crate::policy::Source;
use crate::segments::PlugLimits;
use crate::units::Kib;
use crate::worker::{Boot, State};
use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::string::String;
use std::vec::Vec;

/// UVM pages and Xen's view of the domain, for one guest mode.
struct Model {
    mode: GuestMode,
    /// UVM free pages.
    free: BTreeSet<u64>,
    /// Pages handed to the driver.
    owned: BTreeSet<u64>,
    /// PV: pfn -> mfn; PVH: populated gpfns map to themselves.
    p2m: BTreeMap<u64, u64>,
    /// Xen: frames the domain holds (MFNs for PV, GPFNs for PVH).
    xen: BTreeSet<u64>,
    next_mfn: u64,
    max_pages: u64,
    host_free: u64,
    decrease_limit: Option<usize>,
    increase_limit: Option<usize>,
    plug_fails: bool,
    plugged: Vec<PfnRange>,
    /// The range the kernel prepared (grow_reserve) and that is not yet
    /// plugged or given back (one at a time; no allocation, so that
    /// steps run under `failing`).
    reserved: Option<PfnRange>,
    dirty_given: u64,
    zeroed: BTreeSet<u64>,
    log: Vec<String>,
    /// The most frames any one reservation hypercall was given.
    max_extents: usize,
    /// A fault: the next allocation hands out this page first (one the
    /// bookkeeping does not think populated).
    stray: Option<u64>,
    /// The platform has 2 MiB extents (aligned runs, order-9 calls).
    extents: bool,
    /// Order-9 calls made.
    order9_calls: u64,
}

impl Model {
    fn new(mode: GuestMode, pages: u64) -> Model {
        let mut m = Model {
            mode,
            free: (0..pages).collect(),
            owned: BTreeSet::new(),
            p2m: BTreeMap::new(),
            xen: BTreeSet::new(),
            next_mfn: 1 << 30,
            max_pages: pages * 4,
            host_free: pages * 8,
            decrease_limit: None,
            increase_limit: None,
            plug_fails: false,
            reserved: None,
            plugged: Vec::new(),
            dirty_given: 0,
            zeroed: BTreeSet::new(),
            log: Vec::new(),
            max_extents: 0,
            stray: None,
            extents: false,
            order9_calls: 0,
        };
        for pfn in 0..pages {
            let f = m.new_frame(pfn);
            m.p2m.insert(pfn, f);
            m.xen.insert(f);
        }
        m
    }

    fn new_frame(&mut self, pfn: u64) -> u64 {
        match self.mode {
            GuestMode::Pv => {
                self.next_mfn += 1;
                self.next_mfn
            }
            GuestMode::Pvh => pfn,
        }
    }

    fn backed(&self, pfn: u64) -> bool {
        self.p2m.get(&pfn).is_some_and(|f| self.xen.contains(f))
    }
}

impl Platform for Model {
    fn has_extents(&self) -> bool {
        self.extents
    }
    fn alloc_run(&mut self, len: Pages, align: Pages, within: PfnRange) -> Option<Pfn> {
        assert!(self.extents);
        let mut c = within.start().0.next_multiple_of(align.0);
        while c + len.0 <= within.end().0 {
            match (c..c + len.0).rev().find(|f| !self.free.contains(f)) {
                None => {
                    for f in c..c + len.0 {
                        self.free.remove(&f);
                        self.owned.insert(f);
                    }
                    return Some(Pfn(c));
                }
                Some(busy) => c = (busy + 1).next_multiple_of(align.0),
            }
        }
        None
    }
    fn reservation(&mut self, op: MemOp, frames: &mut [u64], order: u32) -> Result<usize, Errno> {
        if order == 0 {
            return match op {
                MemOp::Decrease => self.decrease_reservation(frames),
                MemOp::Increase => self.increase_reservation(frames),
                MemOp::Populate => self.populate_physmap(frames),
            };
        }
        assert!(self.extents && order == 9);
        self.order9_calls += 1;
        self.max_extents = self.max_extents.max(frames.len());
        let per = 1u64 << order;
        let mut done = 0;
        for slot in frames.iter_mut() {
            let f = *slot;
            match op {
                MemOp::Decrease => {
                    // As Xen: frame by frame, the extent counted only whole.
                    for j in 0..per {
                        if !self.xen.remove(&(f + j)) {
                            return Ok(done);
                        }
                        if self.mode == GuestMode::Pvh {
                            self.p2m.remove(&(f + j));
                            if !self.zeroed.contains(&(f + j)) {
                                self.dirty_given += 1;
                            }
                        }
                        self.host_free += 1;
                    }
                }
                MemOp::Increase | MemOp::Populate => {
                    if self.host_free < per || self.xen.len() as u64 + per > self.max_pages {
                        return Ok(done);
                    }
                    let base = if op == MemOp::Increase {
                        assert_eq!(self.mode, GuestMode::Pv);
                        self.next_mfn = (self.next_mfn + 1).next_multiple_of(per);
                        let b = self.next_mfn;
                        self.next_mfn += per - 1;
                        *slot = b;
                        b
                    } else {
                        assert_eq!(self.mode, GuestMode::Pvh);
                        assert_eq!(f % per, 0, "unaligned 2 MiB extent");
                        f
                    };
                    for j in 0..per {
                        assert!(self.xen.insert(base + j));
                        if op == MemOp::Populate {
                            self.p2m.insert(base + j, base + j);
                        }
                    }
                    self.host_free -= per;
                }
            }
            done += 1;
        }
        Ok(done)
    }
    fn alloc_pages(&mut self, out: &mut [u64], _prefer: Option<PfnRange>) -> usize {
        let mut n = 0;
        if let (Some(pg), Some(slot)) = (self.stray.take(), out.first_mut()) {
            self.free.remove(&pg);
            self.owned.insert(pg);
            *slot = pg;
            n = 1;
        }
        while n < out.len() {
            let Some(pg) = self.free.pop_last() else {
                break;
            };
            self.owned.insert(pg);
            out[n] = pg;
            n += 1;
        }
        n
    }
    fn free_pages(&mut self, pfns: &[u64]) {
        for &p in pfns {
            assert!(
                self.owned.remove(&p),
                "free of a page the driver does not own"
            );
            assert!(
                self.backed(p),
                "unbacked frame {p} freed onto the free list"
            );
            self.zeroed.remove(&p);
            self.free.insert(p);
        }
    }
    fn scrub(&mut self, pfn: Pfn) {
        assert!(self.owned.contains(&pfn.0));
        self.zeroed.insert(pfn.0);
    }
    fn p2m_lookup(&mut self, pfn: Pfn) -> Option<Mfn> {
        assert_eq!(self.mode, GuestMode::Pv, "PVH has no p2m");
        self.p2m.get(&pfn.0).copied().map(Mfn)
    }
    fn p2m_set_batch(&mut self, pfns: &[u64], mfns: &[u64]) {
        assert_eq!(pfns.len(), mfns.len());
        for (&pfn, &mfn) in pfns.iter().zip(mfns) {
            self.p2m.insert(pfn, mfn);
        }
    }
    fn p2m_clear(&mut self, pfn: Pfn) {
        self.p2m.remove(&pfn.0);
    }
    fn decrease_reservation(&mut self, frames: &mut [u64]) -> Result<usize, Errno> {
        self.max_extents = self.max_extents.max(frames.len());
        let limit = self.decrease_limit.unwrap_or(usize::MAX);
        let mut done = 0;
        for &f in frames.iter() {
            if done >= limit || !self.xen.remove(&f) {
                break;
            }
            let pfn = match self.mode {
                GuestMode::Pv => None,
                GuestMode::Pvh => Some(f),
            };
            if let Some(p) = pfn {
                self.p2m.remove(&p);
                if !self.zeroed.contains(&p) {
                    self.dirty_given += 1;
                }
            }
            self.host_free += 1;
            done += 1;
        }
        Ok(done)
    }
    fn increase_reservation(&mut self, mfns: &mut [u64]) -> Result<usize, Errno> {
        assert_eq!(self.mode, GuestMode::Pv);
        self.max_extents = self.max_extents.max(mfns.len());
        let limit = self.increase_limit.unwrap_or(usize::MAX);
        let mut done = 0;
        for slot in mfns.iter_mut() {
            if done >= limit || self.host_free == 0 || self.xen.len() as u64 >= self.max_pages {
                break;
            }
            let f = self.new_frame(0);
            self.xen.insert(f);
            self.host_free -= 1;
            *slot = f;
            done += 1;
        }
        Ok(done)
    }
    fn populate_physmap(&mut self, pfns: &mut [u64]) -> Result<usize, Errno> {
        assert_eq!(self.mode, GuestMode::Pvh);
        self.max_extents = self.max_extents.max(pfns.len());
        let limit = self.increase_limit.unwrap_or(usize::MAX);
        let mut done = 0;
        for &p in pfns.iter() {
            if done >= limit || self.host_free == 0 || self.xen.contains(&p) {
                break;
            }
            self.xen.insert(p);
            self.p2m.insert(p, p);
            self.host_free -= 1;
            done += 1;
        }
        Ok(done)
    }
    fn grow_reserve(&mut self, want: PfnRange) -> Result<PfnRange, Errno> {
        assert_eq!(self.reserved, None, "a second range prepared at once");
        self.reserved = Some(want);
        Ok(want)
    }
    fn grow_unreserve(&mut self, range: PfnRange) {
        assert_eq!(self.reserved, Some(range), "gave back a range not prepared");
        self.reserved = None;
    }
    fn plug(&mut self, range: PfnRange) -> Result<(), Errno> {
        assert_eq!(
            self.reserved,
            Some(range),
            "plug of a range the kernel did not prepare"
        );
        if self.plug_fails {
            // uvm_physseg_hotplug_add: on error nothing changed, the
            // range stays prepared (kernel-growth.md 3.1).
            return Err(Errno::ENOMEM);
        }
        self.reserved = None;
        for pfn in range.frames() {
            assert!(self.backed(pfn.0), "plug of an unbacked frame");
            self.free.insert(pfn.0);
        }
        self.plugged.push(range);
        Ok(())
    }
    fn unplug(&mut self, range: PfnRange) -> Result<(), Errno> {
        for pfn in range.frames() {
            assert!(
                self.owned.remove(&pfn.0),
                "unplug of a page the driver does not own"
            );
        }
        self.plugged.retain(|&r| r != range);
        Ok(())
    }
    fn meminfo(&mut self) -> MemInfo {
        MemInfo {
            free: Pages(self.free.len() as u64),
            freetarg: Pages(64),
            managed: Pages(PAGES + self.plugged.iter().map(|r| r.len().0).sum::<u64>()),
        }
    }
    fn log(&mut self, line: &str) {
        self.log.push(line.into());
    }
}

const PAGES: u64 = 65536; // 256 MiB

fn driver(mode: GuestMode) -> (Model, Driver) {
    let m = Model::new(mode, PAGES);
    let seg = [PfnRange::new(Pfn(0), Pfn(PAGES)).unwrap()];
    let w = Worker::new(&Boot {
        segments: &seg,
        reservation: Pages(PAGES),
        max_reservation: Pages(PAGES * 4),
        freemin: Pages(64),
        growth: crate::worker::Growth::Available,
        plug: PlugLimits {
            align: Pages(512),
            max_segment: Pages(32768),
            frame_limit: Pfn(PAGES * 8),
            floor: Pfn(PAGES),
            hole: None,
        },
    })
    .unwrap();
    (m, Driver::new(w, mode).unwrap())
}

/// The model as a platform whose own work is not counted as the driver's
/// allocations.
struct Uncounted<'a>(&'a mut Model);

impl Platform for Uncounted<'_> {
    fn has_extents(&self) -> bool {
        self.0.has_extents()
    }
    fn alloc_run(&mut self, len: Pages, align: Pages, within: PfnRange) -> Option<Pfn> {
        uncounted(|| self.0.alloc_run(len, align, within))
    }
    fn free_run(&mut self, run: PfnRange) {
        uncounted(|| self.0.free_run(run))
    }
    fn reservation(&mut self, op: MemOp, frames: &mut [u64], order: u32) -> Result<usize, Errno> {
        uncounted(|| self.0.reservation(op, frames, order))
    }
    fn alloc_pages(&mut self, out: &mut [u64], prefer: Option<PfnRange>) -> usize {
        uncounted(|| self.0.alloc_pages(out, prefer))
    }
    fn free_pages(&mut self, pfns: &[u64]) {
        uncounted(|| self.0.free_pages(pfns))
    }
    fn scrub(&mut self, pfn: Pfn) {
        uncounted(|| self.0.scrub(pfn))
    }
    fn p2m_lookup(&mut self, pfn: Pfn) -> Option<Mfn> {
        uncounted(|| self.0.p2m_lookup(pfn))
    }
    fn p2m_set_batch(&mut self, pfns: &[u64], mfns: &[u64]) {
        uncounted(|| self.0.p2m_set_batch(pfns, mfns))
    }
    fn p2m_clear(&mut self, pfn: Pfn) {
        uncounted(|| self.0.p2m_clear(pfn))
    }
    fn decrease_reservation(&mut self, frames: &mut [u64]) -> Result<usize, Errno> {
        uncounted(|| self.0.decrease_reservation(frames))
    }
    fn increase_reservation(&mut self, mfns: &mut [u64]) -> Result<usize, Errno> {
        uncounted(|| self.0.increase_reservation(mfns))
    }
    fn populate_physmap(&mut self, pfns: &mut [u64]) -> Result<usize, Errno> {
        uncounted(|| self.0.populate_physmap(pfns))
    }
    fn grow_reserve(&mut self, want: PfnRange) -> Result<PfnRange, Errno> {
        uncounted(|| self.0.grow_reserve(want))
    }
    fn grow_unreserve(&mut self, range: PfnRange) {
        uncounted(|| self.0.grow_unreserve(range))
    }
    fn plug(&mut self, range: PfnRange) -> Result<(), Errno> {
        uncounted(|| self.0.plug(range))
    }
    fn unplug(&mut self, range: PfnRange) -> Result<(), Errno> {
        uncounted(|| self.0.unplug(range))
    }
    fn meminfo(&mut self) -> MemInfo {
        uncounted(|| self.0.meminfo())
    }
    fn log(&mut self, line: &str) {
        uncounted(|| self.0.log(line))
    }
}

/// One driver step; asserts it allocated nothing, but for the one
/// fallible growth of the bitmap when a step begins a plug (every other
/// step of a plug, a failed plug, its stranded frames going back and a
/// refused unplug included, allocates nothing).
fn step_counted(m: &mut Model, d: &mut Driver, now: Uptime) -> StepStatus {
    let bitmap_before = d.worker().frames().bookkeeping_bytes();
    let (status, n) = allocations(|| d.step(&mut Uncounted(m), now));
    let grew = d.worker().frames().bookkeeping_bytes() > bitmap_before;
    assert!(
        n <= u64::from(grew),
        "a step allocated {n} times: {:?}",
        d.worker().state()
    );
    status
}

fn settle(m: &mut Model, d: &mut Driver) {
    for _ in 0..100_000 {
        match step_counted(m, d, Uptime(0)) {
            StepStatus::Again => {}
            _ => return,
        }
    }
    panic!("did not settle");
}

fn check(m: &Model, d: &Driver) {
    d.worker().verify().unwrap();
    assert_eq!(
        m.xen.len() as u64,
        d.worker().current().0,
        "Xen and the core agree"
    );
    assert_eq!(m.owned.len() as u64, d.worker().frames().ballooned().0);
    for &p in &m.owned {
        assert!(!m.backed(p), "a ballooned frame {p} is still backed");
    }
}

#[test]
fn inflate_and_deflate_keep_xen_and_the_core_in_step() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        d.worker_mut()
            .set_target(Kib(PAGES * 2), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        check(&m, &d);
        assert_eq!(d.worker().current(), Pages(PAGES / 2));
        assert_eq!(m.dirty_given, 0, "every page was scrubbed");
        assert_eq!(d.stats().scrubbed, PAGES / 2);
        d.worker_mut()
            .set_target(Kib(PAGES * 4), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        check(&m, &d);
        assert_eq!(d.worker().current(), Pages(PAGES));
        assert!(
            m.log.iter().any(|l| l.starts_with("at target")),
            "{:?}",
            m.log
        );
        assert_eq!(
            m.log.iter().filter(|l| l.starts_with("at target")).count(),
            2,
            "one line per target reached, not one per batch: {:?}",
            m.log
        );
    }
}

#[test]
fn a_partial_decrease_puts_the_tail_back() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        m.decrease_limit = Some(100);
        d.worker_mut()
            .set_target(Kib(PAGES * 2), Source::Xenstore)
            .unwrap();
        assert_eq!(d.step(&mut m, Uptime(0)), StepStatus::Again);
        check(&m, &d);
        assert_eq!(d.worker().frames().ballooned(), Pages(100));
        assert_eq!(
            m.free.len() as u64,
            PAGES - 100,
            "the 412 not taken are free again"
        );
        assert!(matches!(d.step(&mut m, Uptime(0)), StepStatus::Sleep(1000)));
    }
}

#[test]
fn a_short_increase_frees_only_what_came_back() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        d.worker_mut()
            .set_target(Kib(PAGES * 2), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        m.increase_limit = Some(7);
        d.worker_mut()
            .set_target(Kib(PAGES * 3), Source::Xenstore)
            .unwrap();
        assert_eq!(d.step(&mut m, Uptime(0)), StepStatus::Again);
        check(&m, &d);
        assert_eq!(d.worker().current(), Pages(PAGES / 2 + 7));
    }
}

#[test]
fn growth_plugs_fully_backed_segments_and_a_failed_plug_gives_frames_back() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        m.increase_limit = Some(200);
        d.worker_mut()
            .set_target(Kib(PAGES * 4 + 8192), Source::Xenstore)
            .unwrap();
        // The first batch comes back short: nothing may be plugged and
        // the 200 frames must go back to Xen, then the back-off waits.
        let before = m.xen.len();
        assert_eq!(
            settle_at(&mut m, &mut d, Uptime(0)),
            StepStatus::Sleep(1000)
        );
        assert!(m.plugged.is_empty());
        assert_eq!(m.xen.len(), before, "backed frames were given back");
        assert_eq!(
            d.worker().state(),
            State::Waiting(crate::worker::WaitReason::PlugFailed)
        );
        check(&m, &d);
        m.increase_limit = None;
        m.plug_fails = true;
        d.worker_mut()
            .set_target(Kib(PAGES * 4 + 8196), Source::Xenstore)
            .unwrap();
        assert_eq!(
            settle_at(&mut m, &mut d, Uptime(0)),
            StepStatus::Sleep(1000)
        );
        assert_eq!(m.xen.len(), before, "a refused plug gives its frames back");
        check(&m, &d);
        m.plug_fails = false;
        d.worker_mut()
            .set_target(Kib(PAGES * 4 + 8200), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        check(&m, &d);
        assert_eq!(m.plugged.len(), 1);
        assert_eq!(m.plugged[0].start(), Pfn(PAGES));
        assert_eq!(d.worker().current(), Pages(PAGES + 2050));
        assert!(d.worker().frames().stranded().is_zero());
    }
}

#[test]
fn frames_of_a_failed_plug_xen_will_not_take_are_retried_never_lost() {
    // Issue 12, bug 1: the plug fails and Xen takes back only 100 frames
    // a call. The rest stay the driver's to give back, with the back-off;
    // unload is refused while any remain; no plug goes there meanwhile.
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        m.plug_fails = true;
        m.decrease_limit = Some(100);
        d.worker_mut()
            .set_target(Kib(PAGES * 4 + 8192), Source::Xenstore)
            .unwrap();
        let mut now = 0;
        let mut stranded = Vec::new();
        while let StepStatus::Sleep(ms) = settle_at(&mut m, &mut d, Uptime(now)) {
            now += ms;
            stranded.push(d.worker().frames().stranded().0);
            assert_eq!(d.worker().current().0, m.xen.len() as u64, "{mode:?}");
        }
        assert!(
            matches!(d.worker().state(), State::Cancelled(_)),
            "{:?}",
            d.worker().state()
        );
        // 2048 backed; 100 given back by each of the five tries.
        assert_eq!(stranded, [1948, 1848, 1748, 1648], "{mode:?}");
        assert_eq!(d.worker().frames().stranded(), Pages(2048 - 500));
        assert!(m.plugged.is_empty());
        assert_eq!(d.release(&mut m, Uptime(now)), Err(Errno::EBUSY));
        assert!(
            m.log.iter().any(|l| l.contains("failed plug")),
            "{:?}",
            m.log
        );
        // Xen takes them back; a new target re-arms: all back, then the
        // plug, at the same frames.
        m.plug_fails = false;
        m.decrease_limit = None;
        d.worker_mut()
            .set_target(Kib(PAGES * 4 + 4096), Source::Xenstore)
            .unwrap();
        assert_eq!(settle_at(&mut m, &mut d, Uptime(now)), StepStatus::Idle);
        check(&m, &d);
        assert!(d.worker().frames().stranded().is_zero());
        assert_eq!(m.plugged.len(), 1);
        assert_eq!(m.plugged[0].start(), Pfn(PAGES));
        assert_eq!(d.worker().current(), Pages(PAGES + 1024));
    }
}

#[test]
fn release_gives_all_back() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        d.worker_mut()
            .set_target(Kib(PAGES * 5), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        d.worker_mut().set_unplug(false);
        d.worker_mut()
            .set_target(Kib(PAGES), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        check(&m, &d);
        d.release(&mut m, Uptime(0)).unwrap();
        check(&m, &d);
        assert!(m.owned.is_empty());
        assert!(
            m.plugged.is_empty(),
            "the emptied plugged segment was unplugged"
        );
        assert_eq!(d.worker().current(), Pages(PAGES));
        // With Xen out of memory the release is refused and work resumes.
        d.worker_mut()
            .set_target(Kib(PAGES * 2), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        m.host_free = 0;
        assert!(!d.worker().frames().ballooned().is_zero(), "{mode:?}");
        assert_eq!(d.release(&mut m, Uptime(0)), Err(Errno::EBUSY), "{mode:?}");
        assert!(m.log.iter().any(|l| l.contains("still ballooned")));
        assert_eq!(d.worker().target(), Pages(PAGES / 2));
    }
}

/// Steps until the driver asks to sleep or idles, at `now`.
fn settle_at(m: &mut Model, d: &mut Driver, now: Uptime) -> StepStatus {
    for _ in 0..100_000 {
        match step_counted(m, d, now) {
            StepStatus::Again => {}
            other => return other,
        }
    }
    panic!("did not settle");
}

#[test]
fn a_target_storm_is_rate_limited_and_its_last_outcome_is_printed_later() {
    use crate::ratelimit::{LOG_BURST, LOG_WINDOW};
    let (mut m, mut d) = driver(GuestMode::Pvh);
    // 40 targets 10 ms apart, each reached at once: 40 outcomes in 0.4 s.
    let mut last = Uptime(0);
    for i in 0..40u64 {
        let now = Uptime(1_000 + i * 10);
        let kib = if i % 2 == 0 {
            PAGES * 4 - 4096
        } else {
            PAGES * 4
        };
        d.worker_mut()
            .set_target(Kib(kib), Source::Xenstore)
            .unwrap();
        let st = settle_at(&mut m, &mut d, now);
        last = now;
        if i + 1 < LOG_BURST as u64 {
            assert_eq!(st, StepStatus::Idle, "within budget nothing is held");
        }
    }
    let printed = m.log.iter().filter(|l| l.starts_with("at target")).count();
    assert_eq!(printed, LOG_BURST as usize, "{:?}", m.log);
    // The newest outcome is held: the driver asks to be woken when the
    // window reopens instead of idling.
    let reopen = Uptime(1_000 + LOG_WINDOW.0);
    assert_eq!(
        settle_at(&mut m, &mut d, last),
        StepStatus::Sleep(reopen.0 - last.0)
    );
    assert_eq!(settle_at(&mut m, &mut d, reopen), StepStatus::Idle);
    let n = m.log.len();
    assert_eq!(
        m.log[n - 2],
        format!("{} earlier messages suppressed", 40 - LOG_BURST - 1)
    );
    assert_eq!(
        m.log[n - 1],
        format!("at target: {} KiB (0 KiB ballooned)", PAGES * 4),
        "the last outcome is the one printed"
    );
    // Only lines never printed count: the held one was printed.
    assert_eq!(d.stats().lines_suppressed, u64::from(40 - LOG_BURST - 1));
    // Nothing is held any more: idle, and no line repeats.
    assert_eq!(
        settle_at(&mut m, &mut d, Uptime(reopen.0 + 1)),
        StepStatus::Idle
    );
    assert_eq!(m.log.len(), n);
    check(&m, &d);
}

#[test]
fn unload_with_a_line_held_back_succeeds_and_prints_it() {
    use crate::ratelimit::LOG_BURST;
    let (mut m, mut d) = driver(GuestMode::Pvh);
    let now = Uptime(5_000);
    for i in 0..=u64::from(LOG_BURST) {
        let kib = if i % 2 == 0 {
            PAGES * 4 - 4096
        } else {
            PAGES * 4
        };
        d.worker_mut()
            .set_target(Kib(kib), Source::Xenstore)
            .unwrap();
        settle_at(&mut m, &mut d, now);
    }
    // One outcome over budget is held; the driver sleeps to print it.
    assert!(matches!(
        settle_at(&mut m, &mut d, now),
        StepStatus::Sleep(_)
    ));
    d.worker_mut()
        .set_target(Kib(PAGES * 2), Source::Xenstore)
        .unwrap();
    settle_at(&mut m, &mut d, now);
    assert!(d.worker().frames().ballooned() > Pages::ZERO);
    // That sleep is not Xen refusing memory: release gives all back.
    assert_eq!(d.release(&mut m, now), Ok(()));
    assert_eq!(d.worker().frames().ballooned(), Pages::ZERO);
    // The last line says what the release did, not "at target": the
    // target was half of that.
    assert_eq!(
        m.log.last().map(String::as_str),
        Some(format!("returned all ballooned memory: {} KiB", PAGES * 4).as_str()),
        "{:?}",
        m.log
    );
    check(&m, &d);
}

#[test]
fn an_unchanged_target_does_not_reset_the_back_off() {
    // Issue 12, bug 3: with the host out of memory, 500 writes of the
    // same target over 50 s cost what the back-off allows (1, 2, 4 and
    // 8 s apart, then giving up), not one hypercall each.
    let (mut m, mut d) = driver(GuestMode::Pvh);
    d.worker_mut()
        .set_target(Kib(PAGES * 2), Source::Xenstore)
        .unwrap();
    settle(&mut m, &mut d);
    m.host_free = 0;
    let before = d.stats().hypercalls;
    for i in 0..500u64 {
        d.worker_mut()
            .set_target(Kib(PAGES * 4), Source::Xenstore)
            .unwrap();
        settle_at(&mut m, &mut d, Uptime(i * 100));
    }
    assert_eq!(d.stats().hypercalls - before, 5);
    assert_eq!(d.worker().stats().gave_up, 1);
    check(&m, &d);
}

#[test]
fn plugs_back_their_frames_one_batch_a_step() {
    // Issue 12, bug 6: hw.balloon.batch bounds every hypercall of a plug
    // too, and each step makes at most one.
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        d.worker_mut().set_batch(Pages(64)).unwrap();
        d.worker_mut()
            .set_target(Kib((PAGES + 2048) * 4), Source::Xenstore)
            .unwrap();
        let mut steps = 0;
        loop {
            let before = d.stats().hypercalls;
            let st = d.step(&mut m, Uptime(0));
            assert!(d.stats().hypercalls - before <= 1, "{mode:?}");
            if st != StepStatus::Again {
                break;
            }
            steps += 1;
        }
        assert_eq!(m.max_extents, 64, "{mode:?}");
        assert_eq!(m.plugged.len(), 1, "{mode:?}");
        assert_eq!(
            steps,
            1 + 2048 / 64 + 1,
            "{mode:?}: the reserve, the backing steps and the plug"
        );
        check(&m, &d);
    }
}

/// Alternates the target between two sizes `n` times, 10 ms apart from
/// `start`, settling after each.
fn target_storm(m: &mut Model, d: &mut Driver, start: u64, n: u64) {
    for i in 0..n {
        let kib = if i % 2 == 0 {
            PAGES * 4 - 4096
        } else {
            PAGES * 4
        };
        d.worker_mut()
            .set_target(Kib(kib), Source::Xenstore)
            .unwrap();
        settle_at(m, d, Uptime(start + i * 10));
    }
}

#[test]
fn the_suppressed_count_line_is_within_the_budget() {
    // Issue 12, bug 11: "N earlier messages suppressed" is a line like
    // any other; no window prints more than the budget.
    use crate::ratelimit::{LOG_BURST, LOG_WINDOW};
    let (mut m, mut d) = driver(GuestMode::Pvh);
    target_storm(&mut m, &mut d, 1_000, 40);
    assert_eq!(m.log.len(), LOG_BURST as usize, "{:?}", m.log);
    let first = m.log.len();
    // The next window: the held line, the count and new outcomes.
    target_storm(&mut m, &mut d, 1_000 + LOG_WINDOW.0, 40);
    let second = &m.log[first..];
    assert!(
        second
            .iter()
            .any(|l| l.ends_with("earlier messages suppressed")),
        "{second:?}"
    );
    assert!(second.len() <= LOG_BURST as usize, "{second:?}");
}

/// UVM hands out a page the bookkeeping does not think populated (here:
/// a backed frame outside every segment). The record after the hypercall
/// would refuse it, so the driver checks before: nothing goes to Xen,
/// every page goes back to UVM once, the driver stops with the reason in
/// hw.balloon.state, and never retries (not on a new target, not on
/// unload). Before the check, the batch went to Xen unrecorded and the
/// next step inflated again: the test fails there.
#[test]
fn pages_the_bookkeeping_refuses_never_reach_xen_and_stop_the_driver() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let stray = PAGES * 2 + 3;
        let mut m = Model::new(mode, PAGES);
        let f = m.new_frame(stray);
        m.p2m.insert(stray, f);
        m.xen.insert(f);
        m.stray = Some(stray);
        let seg = [PfnRange::new(Pfn(0), Pfn(PAGES)).unwrap()];
        let w = Worker::new(&Boot {
            segments: &seg,
            reservation: Pages(PAGES + 1),
            max_reservation: Pages(PAGES * 4),
            freemin: Pages(64),
            growth: crate::worker::Growth::Available,
            plug: PlugLimits {
                align: Pages(512),
                max_segment: Pages(32768),
                frame_limit: Pfn(PAGES * 8),
                floor: Pfn(PAGES * 4),
                hole: None,
            },
        })
        .unwrap();
        let mut d = Driver::new(w, mode).unwrap();
        d.worker_mut()
            .set_target(Kib(PAGES * 2), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        let stopped = State::Cancelled(crate::worker::CancelReason::FramesRefused);
        assert_eq!(d.worker().state(), stopped, "{:?}", m.log);
        assert_eq!(m.xen.len() as u64, PAGES + 1, "nothing went to Xen");
        assert_eq!(d.stats().hypercalls, 0);
        assert!(m.owned.is_empty(), "every page went back to UVM");
        assert_eq!(m.free.len() as u64, PAGES + 1);
        assert_eq!(d.worker().frames().ballooned(), Pages(0));
        d.worker().verify().unwrap();
        assert!(
            m.log.iter().any(|l| l.contains("bookkeeping refused")),
            "{:?}",
            m.log
        );
        // Never retried: not on a new target, not by an unload.
        d.worker_mut()
            .set_target(Kib(PAGES * 3), Source::Sysctl)
            .unwrap();
        assert_eq!(d.step(&mut m, Uptime(0)), StepStatus::Idle);
        assert_eq!(d.worker().state(), stopped);
        assert_eq!(d.release(&mut m, Uptime(0)), Err(Errno::EBUSY));
        assert_eq!(m.xen.len() as u64, PAGES + 1);
        assert_eq!(d.stats().hypercalls, 0);
    }
}

/// The kernel has no memory for the bookkeeping at attach: attach fails
/// with an error (ENOMEM at the entry point), no panic.
#[test]
fn no_memory_at_attach_is_an_error_not_a_panic() {
    let seg = [PfnRange::new(Pfn(0), Pfn(PAGES)).unwrap()];
    let boot = Boot {
        segments: &seg,
        reservation: Pages(PAGES),
        max_reservation: Pages(PAGES * 4),
        freemin: Pages(64),
        growth: crate::worker::Growth::Available,
        plug: PlugLimits {
            align: Pages(512),
            max_segment: Pages(32768),
            frame_limit: Pfn(PAGES * 8),
            floor: Pfn(PAGES),
            hole: None,
        },
    };
    let r = failing(|| Worker::new(&boot).map(|_| ()));
    assert_eq!(
        r,
        Err(crate::worker::InitError::Segments(
            crate::segments::SegmentError::NoMemory
        ))
    );
    assert!(Worker::new(&boot).is_ok());
}

/// The kernel has no memory to grow the bookkeeping for a plug: the plug
/// fails before anything is backed (nothing to give back), is retried
/// with the back-off, and succeeds once memory is there.
#[test]
fn no_memory_at_plug_is_a_failed_plug_retried() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        d.worker_mut()
            .set_target(Kib(PAGES * 4 + 4096), Source::Xenstore)
            .unwrap();
        let xen_before = m.xen.len();
        // The reserve step: the kernel prepared the range, then the
        // bitmap could not grow to cover it.
        let status = failing(|| d.step(&mut m, Uptime(0)));
        assert_eq!(status, StepStatus::Again);
        assert_eq!(
            d.worker().state(),
            State::Waiting(crate::worker::WaitReason::PlugFailed)
        );
        // The range goes back to the kernel before anything else.
        assert!(m.reserved.is_some());
        assert_eq!(d.step(&mut m, Uptime(0)), StepStatus::Again);
        assert_eq!(m.reserved, None, "{mode:?}: the range was given back");
        assert_eq!(d.worker().frames().pending_segment(), None);
        assert_eq!(m.xen.len(), xen_before, "nothing was backed");
        assert_eq!(d.stats().hypercalls, 0);
        let last = d.worker().stats().last_error.expect("the plug's error");
        assert_eq!(last.errno, Errno::ENOMEM);
        settle_at(&mut m, &mut d, Uptime(60_000));
        check(&m, &d);
        assert_eq!(d.worker().current(), Pages(PAGES + 1024));
    }
}

/// A watch event, its read errors, sysctl-style knob changes and a
/// release allocate nothing (the driver and worker only; the model's own
/// work is not counted).
#[test]
fn watch_events_knobs_and_release_allocate_nothing() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        d.worker_mut()
            .set_target(Kib(PAGES * 2), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        let (_, n) = allocations(|| {
            let mut p = Uncounted(&mut m);
            let _ = d.xenstore_event(&mut p, Ok(b"200000"), false, Uptime(1));
            let _ = d.xenstore_event(&mut p, Ok(b"junk"), false, Uptime(2));
            let _ = d.xenstore_event(&mut p, Err(Errno::EIO), false, Uptime(3));
            let _ = d.xenstore_event(&mut p, Err(Errno::ERANGE), true, Uptime(4));
            let w = d.worker_mut();
            let _ = w.set_batch(Pages(256));
            let _ = w.set_floor(Kib(PAGES));
            let _ = w.set_hotplug(false);
            w.set_unplug(false);
            w.set_scrub(true);
        });
        assert_eq!(n, 0, "an entry point allocated");
        let (r, n) = allocations(|| d.release(&mut Uncounted(&mut m), Uptime(10)));
        assert_eq!(r, Ok(()));
        assert_eq!(n, 0, "release allocated");
        check(&m, &d);
    }
}

/// The control half behind a lock the test can see: counts critical
/// sections and says when one is open.
struct Watched {
    c: Control,
    held: std::rc::Rc<core::cell::Cell<bool>>,
    sections: u64,
}

impl Shared for Watched {
    fn locked<R>(&mut self, f: impl FnOnce(&mut Control) -> R) -> R {
        assert!(!self.held.get(), "critical sections nested");
        self.held.set(true);
        self.sections += 1;
        let r = f(&mut self.c);
        self.held.set(false);
        r
    }
}

/// The model, refusing every kernel or Xen call but the log while the
/// control lock is held.
struct Unlocked<'a> {
    m: &'a mut Model,
    held: std::rc::Rc<core::cell::Cell<bool>>,
}

impl Unlocked<'_> {
    fn check(&self, what: &str) {
        assert!(!self.held.get(), "{what} with the control lock held");
    }
}

impl Platform for Unlocked<'_> {
    fn alloc_pages(&mut self, out: &mut [u64], prefer: Option<PfnRange>) -> usize {
        self.check("page allocation");
        self.m.alloc_pages(out, prefer)
    }
    fn free_pages(&mut self, pfns: &[u64]) {
        self.check("free_pages");
        self.m.free_pages(pfns)
    }
    fn scrub(&mut self, pfn: Pfn) {
        self.check("scrub");
        self.m.scrub(pfn)
    }
    fn p2m_lookup(&mut self, pfn: Pfn) -> Option<Mfn> {
        self.check("p2m_lookup");
        self.m.p2m_lookup(pfn)
    }
    fn p2m_set_batch(&mut self, pfns: &[u64], mfns: &[u64]) {
        self.check("p2m_set_batch");
        self.m.p2m_set_batch(pfns, mfns)
    }
    fn p2m_clear(&mut self, pfn: Pfn) {
        self.check("p2m_clear");
        self.m.p2m_clear(pfn)
    }
    fn decrease_reservation(&mut self, frames: &mut [u64]) -> Result<usize, Errno> {
        self.check("decrease_reservation");
        self.m.decrease_reservation(frames)
    }
    fn increase_reservation(&mut self, mfns: &mut [u64]) -> Result<usize, Errno> {
        self.check("increase_reservation");
        self.m.increase_reservation(mfns)
    }
    fn populate_physmap(&mut self, pfns: &mut [u64]) -> Result<usize, Errno> {
        self.check("populate_physmap");
        self.m.populate_physmap(pfns)
    }
    fn plug(&mut self, range: PfnRange) -> Result<(), Errno> {
        self.check("plug");
        self.m.plug(range)
    }
    fn unplug(&mut self, range: PfnRange) -> Result<(), Errno> {
        self.check("unplug");
        self.m.unplug(range)
    }
    fn grow_reserve(&mut self, want: PfnRange) -> Result<PfnRange, Errno> {
        self.check("grow_reserve");
        self.m.grow_reserve(want)
    }
    fn grow_unreserve(&mut self, range: PfnRange) {
        self.check("grow_unreserve");
        self.m.grow_unreserve(range)
    }
    fn has_extents(&self) -> bool {
        self.m.has_extents()
    }
    fn alloc_run(&mut self, len: Pages, align: Pages, within: PfnRange) -> Option<Pfn> {
        self.check("alloc_run");
        self.m.alloc_run(len, align, within)
    }
    fn free_run(&mut self, run: PfnRange) {
        self.check("free_run");
        self.m.free_run(run)
    }
    fn reservation(&mut self, op: MemOp, frames: &mut [u64], order: u32) -> Result<usize, Errno> {
        self.check("reservation");
        self.m.reservation(op, frames, order)
    }
    fn meminfo(&mut self) -> MemInfo {
        self.check("meminfo");
        self.m.meminfo()
    }
    fn log(&mut self, line: &str) {
        self.m.log(line)
    }
}

/// Issue 11, "Locks": a step holds the control lock only to decide, to
/// check an inflate's pages and to publish, never across a hypercall,
/// scrubbing, a page allocation or a plug; the same for unload's release.
#[test]
fn a_step_takes_the_control_lock_only_to_decide_and_to_publish() {
    // Single frames, and 2 MiB extents (run claims and order-9 calls).
    for (mode, extents) in [
        (GuestMode::Pv, false),
        (GuestMode::Pvh, false),
        (GuestMode::Pv, true),
        (GuestMode::Pvh, true),
    ] {
        let (mut m, d) = driver(mode);
        m.extents = extents;
        let (control, mut exec) = d.split();
        let held = std::rc::Rc::new(core::cell::Cell::new(false));
        let mut s = Watched {
            c: control,
            held: held.clone(),
            sections: 0,
        };
        let mut p = Unlocked {
            m: &mut m,
            held: held.clone(),
        };
        // Down (inflate, scrubbed), above boot (back, plug), back down.
        for kib in [PAGES * 2, PAGES * 4 * 2, PAGES * 4] {
            s.c.worker_mut()
                .set_target(Kib(kib), Source::Sysctl)
                .unwrap();
            let mut steps = 0u64;
            s.sections = 0;
            while exec.step(&mut p, &mut s, Uptime(0)) == StepStatus::Again {
                steps += 1;
                assert!(steps < 10_000, "{mode:?}: did not settle");
            }
            assert!(steps > 0, "{mode:?}: nothing done for {kib} KiB");
            // Decide and publish; an inflate also checks its pages
            // before they go; one more to find nothing left to do.
            assert!(
                (2 * steps + 1..=3 * steps + 1).contains(&s.sections),
                "{mode:?}: {} sections for {steps} steps",
                s.sections
            );
            assert_eq!(s.c.worker().current(), Pages(kib / 4), "{mode:?}");
        }
        // 16 extents or 8192 frames a step: the release starts mid-way.
        s.c.worker_mut().set_batch(Pages(8192)).unwrap();
        s.c.worker_mut()
            .set_target(Kib(PAGES * 2), Source::Sysctl)
            .unwrap();
        for _ in 0..3 {
            assert_eq!(exec.step(&mut p, &mut s, Uptime(0)), StepStatus::Again);
        }
        assert_eq!(exec.release(&mut p, &mut s, Uptime(0)), Ok(()));
        assert!(s.c.worker().frames().ballooned().is_zero(), "{mode:?}");
        assert!(!held.get());
    }
}

/// With 2 MiB extents, steps allocate nothing either, Xen and the core
/// agree, and half the domain goes and comes back in 128 MiB steps of
/// order-9 calls (at most `MAX_STEP_EXTENTS` extents a call).
#[test]
fn extent_steps_allocate_nothing_and_keep_xen_and_the_core_agreeing() {
    for mode in [GuestMode::Pv, GuestMode::Pvh] {
        let (mut m, mut d) = driver(mode);
        m.extents = true;
        d.worker_mut()
            .set_target(Kib(PAGES * 2), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        check(&m, &d);
        assert_eq!(d.worker().current(), Pages(PAGES / 2), "{mode:?}");
        assert_eq!(d.stats().extents, PAGES / 2 / 512, "{mode:?}");
        assert_eq!(m.dirty_given, 0, "{mode:?}: every page scrubbed");
        let calls = m.order9_calls;
        assert!(calls <= 2, "{mode:?}: {calls} order-9 calls for 128 MiB");
        d.worker_mut()
            .set_target(Kib(PAGES * 4), Source::Xenstore)
            .unwrap();
        settle(&mut m, &mut d);
        check(&m, &d);
        assert_eq!(d.worker().current(), Pages(PAGES), "{mode:?}");
        assert_eq!(d.stats().extents, PAGES / 512, "{mode:?}");
        assert!(m.order9_calls - calls <= 2, "{mode:?}");
        assert!(m.max_extents <= MAX_STEP_EXTENTS.0 as usize, "{mode:?}");
    }
}
