//! Worker tests against a small model of UVM and Xen.
//!
//! The model is deliberately independent of the code under test: UVM's
//! free pages are a plain `BTreeSet`, Xen's reservation a counter with a
//! maximum and a host pool. It follows the rules REFERENCE.md states
//! (partial hypercalls report leading entries; growth past max_pages or
//! the host's free memory falls short; unplug needs pages the driver
//! owns) and checks conservation after every step.

use super::*;
use crate::backoff::BackoffConfig;
use crate::ffi::test_alloc::allocations;
use crate::policy::Clamp;
use crate::units::Millis;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::string::ToString;
use std::vec::Vec;

const MIB: u64 = 256;

/// Faults the model can inject into the next steps.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Page allocation yields at most this many pages.
    alloc_limit: Option<u64>,
    /// decrease_reservation completes at most this many extents.
    decrease_limit: Option<u64>,
    /// uvm_physseg_plug fails.
    plug_fails: bool,
    /// The hypercalls backing a plug do nothing.
    back_fails: bool,
    /// uvm_physseg_hotplug_remove refuses.
    unplug_fails: bool,
    /// The kernel's growth reservation answers this (xpmap_p2m_grow or
    /// xenmem_alloc_pa/pmap_growdirectmap).
    reserve_error: Option<Errno>,
    /// The kernel places a reserved range this many frames above where
    /// the frame space asked (PVH: xenmem_alloc_pa picks the address).
    reserve_shift: u64,
}

struct Model {
    /// Pages on UVM's free lists.
    free: BTreeSet<u64>,
    /// Pages UVM has handed to the rest of the kernel (never ballooned).
    in_use: u64,
    /// Pages the driver holds (allocated, given to Xen).
    held: BTreeSet<u64>,
    /// Xen: the domain's reservation and maximum.
    reservation: u64,
    max_pages: u64,
    /// Xen: free pages on the host.
    host_free: u64,
    freetarg: u64,
    faults: Faults,
    now: Uptime,
    /// Frames that live in some UVM segment (to check plug never overlaps).
    present: BTreeSet<(u64, u64)>,
    /// Frames Xen backs outside every segment (a plug being prepared or
    /// one that failed).
    backed: u64,
    /// Allocations the worker made in the step being carried out.
    worker_allocs: u64,
    /// Steps checked to allocate nothing (Model::step).
    steps_checked: u64,
    /// The largest segment a plug takes (frames).
    max_segment: u64,
    /// Ranges the kernel reserved for segments not plugged yet.
    reserved: BTreeSet<(u64, u64)>,
    /// Ranges given back with an unreserve.
    unreserved: Vec<(u64, u64)>,
}

impl Model {
    fn new(boot_pages: u64, kernel_pages: u64, max_pages: u64, host_free: u64) -> Model {
        Model {
            free: (kernel_pages..boot_pages).collect(),
            in_use: kernel_pages,
            held: BTreeSet::new(),
            reservation: boot_pages + 100, // 100 pages outside UVM
            max_pages,
            host_free,
            freetarg: 128,
            faults: Faults::default(),
            now: Uptime(0),
            present: [(0, boot_pages)].into_iter().collect(),
            backed: 0,
            worker_allocs: 0,
            steps_checked: 0,
            max_segment: 32 * MIB,
            reserved: BTreeSet::new(),
            unreserved: Vec::new(),
        }
    }

    fn boot(&self, boot_pages: u64) -> Worker {
        self.boot_on(boot_pages, crate::worker::Growth::Available)
    }

    fn boot_on(&self, boot_pages: u64, growth: crate::worker::Growth) -> Worker {
        let seg = [PfnRange::new(Pfn(0), Pfn(boot_pages)).unwrap()];
        Worker::new(&Boot {
            segments: &seg,
            reservation: Pages(self.reservation),
            max_reservation: Pages(self.max_pages),
            freemin: Pages(64),
            growth,
            plug: PlugLimits {
                align: Pages(512),
                max_segment: Pages(self.max_segment),
                frame_limit: Pfn(4096 * MIB),
                floor: Pfn(0),
                hole: None,
            },
        })
        .unwrap()
    }

    fn mem(&self) -> MemInfo {
        MemInfo {
            free: Pages(self.free.len() as u64),
            freetarg: Pages(self.freetarg),
            managed: Pages(self.present.iter().map(|&(s, e)| e - s).sum()),
        }
    }

    /// Carries out one action; returns false when the worker is idle.
    fn step(&mut self, w: &mut Worker) -> bool {
        let mem = self.mem();
        let (action, n) = allocations(|| w.next_action(self.now, mem));
        let action = action.unwrap();
        self.worker_allocs = n;
        // Every step allocates nothing: inflate, deflate, sleep, idle,
        // backing and plugging a segment, giving stranded frames back,
        // unplugging (refused or not), and every result. The one
        // exception is the step that begins a plug (the kernel's
        // reservation taken): the bitmap may grow (once, fallibly) to
        // cover the new segment before it is backed.
        let begins_plug = matches!(action, Action::Reserve { .. });
        let more = self.step_action(w, action);
        let allowed = u64::from(begins_plug);
        assert!(
            self.worker_allocs <= allowed,
            "a step allocated {} times ({:?})",
            self.worker_allocs,
            w.state()
        );
        self.steps_checked += 1;
        more
    }

    fn step_action(&mut self, w: &mut Worker, action: Action) -> bool {
        let before = w.current();
        match action {
            Action::Idle => return false,
            Action::Sleep { until } => {
                assert!(until > self.now, "sleep must be in the future");
                self.now = until;
            }
            Action::Inflate { count, prefer, .. } => {
                let mut want = count.0;
                if let Some(l) = self.faults.alloc_limit {
                    want = want.min(l);
                }
                // UVM hands out the preferred range first, then pages from
                // the top of the free list.
                let mut pages: Vec<u64> = Vec::new();
                if let Some(p) = prefer {
                    pages.extend(self.free.range(p.start().0..p.end().0).take(want as usize));
                }
                for pg in &pages {
                    self.free.remove(pg);
                }
                while (pages.len() as u64) < want {
                    match self.free.pop_last() {
                        Some(pg) => pages.push(pg),
                        None => break,
                    }
                }
                // What the driver does: check the whole batch before any
                // frame goes to Xen, record the part Xen took after.
                let all: Vec<Pfn> = pages.iter().map(|&p| Pfn(p)).collect();
                let (checked, n) = allocations(|| w.check_inflate(&all));
                self.worker_allocs += n;
                checked.unwrap();
                let done = self
                    .faults
                    .decrease_limit
                    .map_or(pages.len(), |l| pages.len().min(l as usize));
                // The tail Xen did not take goes back to UVM.
                for &pg in &pages[done..] {
                    self.free.insert(pg);
                }
                for &pg in &pages[..done] {
                    self.held.insert(pg);
                }
                self.reservation -= done as u64;
                self.host_free += done as u64;
                let (frames, rest) = all.split_at(done);
                let error = (done < pages.len()).then_some(Errno::EAGAIN);
                self.complete_counted(
                    w,
                    StepResult::Inflated {
                        frames,
                        rest,
                        error,
                    },
                    self.now,
                )
                .unwrap();
            }
            Action::Deflate { from, count } => {
                let asked = count.0;
                let room = self.max_pages.saturating_sub(self.reservation);
                let done = asked.min(room).min(self.host_free);
                let frames: Vec<Pfn> = w
                    .frames()
                    .ballooned_from(from)
                    .take(done as usize)
                    .collect();
                assert_eq!(
                    frames.len() as u64,
                    done,
                    "fewer ballooned frames than asked"
                );
                for pfn in frames {
                    assert!(self.held.remove(&pfn.0), "deflate of a frame not held");
                    self.free.insert(pfn.0);
                }
                self.reservation += done;
                self.host_free -= done;
                let error = (done < asked).then_some(Errno::ENOMEM);
                self.complete_counted(
                    w,
                    StepResult::Deflated {
                        done: Pages(done),
                        error,
                    },
                    self.now,
                )
                .unwrap();
            }
            Action::Reserve { want } => {
                let res = match self.faults.reserve_error {
                    Some(e) => Err(e),
                    None => {
                        let r = PfnRange::with_len(
                            Pfn(want.start().0 + self.faults.reserve_shift),
                            want.len(),
                        )
                        .unwrap();
                        self.reserved.insert((r.start().0, r.end().0));
                        Ok(r)
                    }
                };
                self.complete_counted(w, StepResult::Reserved(res), self.now)
                    .unwrap();
            }
            Action::Unreserve { range } => {
                let key = (range.start().0, range.end().0);
                assert!(
                    self.reserved.remove(&key),
                    "unreserve of a range not reserved"
                );
                self.unreserved.push(key);
                self.complete_counted(w, StepResult::Unreserved, self.now)
                    .unwrap();
            }
            Action::Back { frames } => {
                let (s, e) = (frames.start().0, frames.end().0);
                for &(ps, pe) in &self.present {
                    assert!(e <= ps || pe <= s, "backing frames of a live segment");
                }
                assert!(
                    self.reserved.iter().any(|&(rs, re)| rs <= s && e <= re),
                    "backing frames the kernel did not prepare"
                );
                let asked = frames.len().0;
                let room = self.max_pages.saturating_sub(self.reservation);
                let done = if self.faults.back_fails {
                    0
                } else {
                    asked.min(room).min(self.host_free)
                };
                self.reservation += done;
                self.host_free -= done;
                self.backed += done;
                let error = (done < asked).then_some(Errno::ENOMEM);
                self.complete_counted(
                    w,
                    StepResult::Backed {
                        done: Pages(done),
                        error,
                    },
                    self.now,
                )
                .unwrap();
            }
            Action::Plug { range } => {
                let (s, e) = (range.start().0, range.end().0);
                for &(ps, pe) in &self.present {
                    assert!(
                        e <= ps || pe <= s,
                        "plug overlaps a segment: a kernel panic"
                    );
                }
                assert_eq!(
                    self.backed,
                    range.len().0,
                    "plug of a segment not fully backed"
                );
                // uvm_physseg.c 1.18: no vm_page slab for more pages than
                // uvmexp.npages, so such a plug returns false.
                let too_big = range.len() > self.mem().managed;
                if self.faults.plug_fails || too_big {
                    self.complete_counted(w, StepResult::Plugged(Err(Errno::ENOMEM)), self.now)
                        .unwrap();
                } else {
                    assert!(
                        self.reserved.remove(&(s, e)),
                        "plug of a range not reserved"
                    );
                    self.backed = 0;
                    self.free.extend(s..e);
                    self.present.insert((s, e));
                    self.complete_counted(w, StepResult::Plugged(Ok(())), self.now)
                        .unwrap();
                }
            }
            Action::Return { frames } => {
                let asked: u64 = frames.len().0;
                assert!(asked <= self.backed, "return of frames not backed");
                let done = self.faults.decrease_limit.map_or(asked, |l| asked.min(l));
                self.reservation -= done;
                self.host_free += done;
                self.backed -= done;
                let error = (done < asked).then_some(Errno::EAGAIN);
                self.complete_counted(
                    w,
                    StepResult::Returned {
                        done: Pages(done),
                        error,
                    },
                    self.now,
                )
                .unwrap();
            }
            Action::Unplug { range } => {
                let (s, e) = (range.start().0, range.end().0);
                assert!(
                    self.present.contains(&(s, e)),
                    "unplug of an unknown segment"
                );
                for pfn in s..e {
                    assert!(
                        !self.free.contains(&pfn),
                        "unplug of a page on the free list"
                    );
                }
                if self.faults.unplug_fails {
                    self.complete_counted(w, StepResult::Unplugged(Err(Errno::EBUSY)), self.now)
                        .unwrap();
                } else {
                    self.present.remove(&(s, e));
                    for pfn in s..e {
                        assert!(
                            self.held.remove(&pfn),
                            "unplugged page not held by the driver"
                        );
                    }
                    self.complete_counted(w, StepResult::Unplugged(Ok(())), self.now)
                        .unwrap();
                }
            }
        }
        self.check(w, before);
        true
    }

    /// Conservation and safety after every step.
    fn check(&self, w: &Worker, before: Pages) {
        w.verify().unwrap();
        assert_eq!(
            w.current().0,
            self.reservation,
            "core and Xen disagree on the reservation"
        );
        assert_eq!(w.frames().ballooned().0, self.held.len() as u64);
        assert_eq!(
            w.frames().populated().0,
            self.free.len() as u64 + self.in_use,
            "populated frames are UVM's free plus in-use pages"
        );
        for &pg in self.held.iter().take(64) {
            assert!(
                !self.free.contains(&pg),
                "a ballooned frame is on a free list"
            );
        }
        let floor = w.policy().floor();
        assert!(
            w.current() >= floor.min(before),
            "went below the floor: {:?} < {:?}",
            w.current(),
            floor
        );
    }

    /// Steps until idle or cancelled; panics past `limit` steps.
    /// `w.complete`, its allocations counted in `worker_allocs`.
    fn complete_counted(
        &mut self,
        w: &mut Worker,
        r: StepResult<'_>,
        now: Uptime,
    ) -> Result<(), WorkerError> {
        let (res, n) = allocations(|| w.complete(r, now));
        self.worker_allocs += n;
        res
    }

    fn settle(&mut self, w: &mut Worker, limit: usize) -> usize {
        for n in 0..limit {
            if !self.step(w) {
                return n;
            }
        }
        panic!("did not settle in {limit} steps: state {:?}", w.state());
    }
}

fn domain() -> (Model, Worker) {
    let m = Model::new(256 * MIB, 20 * MIB, 1024 * MIB, 4096 * MIB);
    let w = m.boot(256 * MIB);
    (m, w)
}

fn kib(pages: u64) -> Kib {
    Kib(pages * 4)
}

#[test]
fn starts_idle_at_the_current_reservation() {
    let (mut m, mut w) = domain();
    assert_eq!(w.current(), Pages(256 * MIB + 100));
    assert_eq!(w.target(), w.current());
    assert_eq!(m.settle(&mut w, 10), 0);
    assert_eq!(w.state(), State::Idle);
}

#[test]
fn inflates_to_a_lower_target_one_step_at_a_time() {
    let (mut m, mut w) = domain();
    w.set_target(kib(200 * MIB), Source::Xenstore).unwrap();
    match w.next_action(m.now, m.mem()).unwrap() {
        Action::Inflate {
            count,
            scrub,
            prefer,
        } => {
            // A step may take up to `batch` 2 MiB extents (at most
            // policy::MAX_STEP_EXTENTS): here the whole need fits in one.
            assert_eq!(count, Pages(56 * MIB + 100));
            assert!(scrub);
            assert_eq!(prefer, None, "no plugged segment to prefer");
        }
        other => panic!("expected inflate, got {other:?}"),
    }
    assert_eq!(
        w.next_action(m.now, m.mem()),
        Err(WorkerError::StepInFlight)
    );
    let frames: Vec<Pfn> = (10_000..10_512).map(Pfn).collect();
    for &f in &frames {
        m.free.remove(&f.0);
        m.held.insert(f.0);
    }
    m.reservation -= 512;
    w.complete(
        StepResult::Inflated {
            frames: &frames,
            rest: &[],
            error: None,
        },
        m.now,
    )
    .unwrap();
    m.settle(&mut w, 1000);
    assert_eq!(w.current(), Pages(200 * MIB));
    assert_eq!(w.state(), State::Idle);
    assert_eq!(w.stats().pages_inflated, Pages(56 * MIB + 100));
}

#[test]
fn never_inflates_below_the_floor() {
    let (mut m, mut w) = domain();
    let t = w.set_target(Kib(0), Source::Xenstore).unwrap();
    assert_eq!(t.clamp, Some(Clamp::ToFloor));
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), w.policy().floor());
    assert_eq!(
        w.set_target(Kib(0), Source::Sysctl),
        Err(Refusal::BelowFloor(w.policy().floor().saturating_kib()))
    );
}

#[test]
fn grows_by_plugging_and_shrinks_by_unplugging() {
    let (mut m, mut w) = domain();
    // Off by default (uvm_physseg.c 1.18 hazards, balloonkmod.4 BUGS).
    w.set_unplug(true);
    let boot = w.current();
    w.set_target(kib(600 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), Pages(600 * MIB));
    let c = w.counts();
    assert!(c.plugged_segments >= 11, "{c:?}");
    assert_eq!(c.plugged, Pages(600 * MIB).saturating_sub(boot));
    // Back down to boot size: plugged memory is ballooned first and unplugged.
    w.set_target(kib(256 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), Pages(256 * MIB));
    let c = w.counts();
    assert!(
        c.plugged_segments <= 1,
        "emptied segments are unplugged: {c:?}"
    );
    assert!(w.stats().segments_unplugged >= 10);
    assert_eq!(m.present.len(), 1 + c.plugged_segments);
}

#[test]
fn plugged_segments_are_aligned_and_sized() {
    let (mut m, mut w) = domain();
    w.set_target(kib(256 * MIB + 100 + 700), Source::Xenstore)
        .unwrap();
    // Backed one step (up to `batch` 2 MiB extents) at a time, in
    // order, then plugged: 700 frames fit in one step.
    let mut backed = Vec::new();
    let range = loop {
        match w.next_action(m.now, m.mem()).unwrap() {
            Action::Reserve { want } => {
                w.complete(StepResult::Reserved(Ok(want)), m.now).unwrap();
            }
            Action::Back { frames } => {
                backed.push(frames);
                m.reservation += frames.len().0;
                m.host_free -= frames.len().0;
                m.backed += frames.len().0;
                w.complete(
                    StepResult::Backed {
                        done: frames.len(),
                        error: None,
                    },
                    m.now,
                )
                .unwrap();
                w.verify().unwrap();
                assert_eq!(w.current().0, m.reservation);
            }
            Action::Plug { range } => break range,
            other => panic!("expected a plug, got {other:?}"),
        }
    };
    assert_eq!(range.start(), Pfn(256 * MIB));
    assert_eq!(range.len(), Pages(700), "exactly what the target needs");
    assert_eq!(
        backed,
        [PfnRange::with_len(Pfn(256 * MIB), Pages(700)).unwrap()]
    );
    m.free.extend(range.start().0..range.end().0);
    m.backed = 0;
    m.present.insert((range.start().0, range.end().0));
    w.complete(StepResult::Plugged(Ok(())), m.now).unwrap();
    assert_eq!(m.settle(&mut w, 10), 0);
    w.set_target(kib(256 * MIB + 100 + 701), Source::Xenstore)
        .unwrap();
    match w.next_action(m.now, m.mem()).unwrap() {
        Action::Reserve { want } => assert_eq!(want.start(), Pfn(256 * MIB + 1024)),
        other => panic!("expected a reserve, got {other:?}"),
    }
}

#[test]
fn a_small_domain_plugs_segments_no_larger_than_uvm_manages() {
    // Issue 12, bug 2: 16 MiB booted, 100 MiB wanted, segments of up to
    // 32 MiB. A 32 MiB segment would be refused at first (more pages
    // than uvmexp.npages); each plug is at most what UVM manages at the
    // time, and the domain gets there without a shortfall.
    let mut m = Model::new(16 * MIB, 2 * MIB, 1024 * MIB, 4096 * MIB);
    let mut w = m.boot(16 * MIB);
    w.set_target(kib(100 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), Pages(100 * MIB), "{:?}", w.state());
    assert_eq!(w.stats().short_steps, 0);
    // Boot memory, then 16 MiB (all UVM had), then 32 MiB segments.
    let sizes: Vec<u64> = m.present.iter().map(|&(s, e)| e - s).collect();
    let rest = 100 * MIB - 100 - 16 * MIB - 16 * MIB - 2 * 32 * MIB;
    assert_eq!(sizes, [16 * MIB, 16 * MIB, 32 * MIB, 32 * MIB, rest]);
}

/// The segment table's slots are reserved at attach: once every one is
/// taken the worker refuses the plug with a reason in the state (never
/// an allocation), keeps what it has, and no plug step allocates on the
/// way (Model::step asserts it). An unplug frees a slot.
#[test]
fn a_full_segment_table_refuses_the_plug_with_a_reason() {
    let mut m = Model::new(16 * MIB, 2 * MIB, 4096 * MIB, 8192 * MIB);
    m.max_segment = 2 * MIB;
    let mut w = m.boot(16 * MIB);
    let slots = crate::segments::PLUG_SLOTS as u64;
    w.set_target(
        kib(16 * MIB + 100 + (slots + 10) * 2 * MIB),
        Source::Xenstore,
    )
    .unwrap();
    m.settle(&mut w, 100_000);
    assert_eq!(w.state(), State::Cancelled(CancelReason::NoSegmentSlot));
    assert_eq!(
        w.state().to_string(),
        "cancelled: no segment slot left to plug into (256 plugged)"
    );
    assert_eq!(w.counts().plugged_segments as u64, slots);
    assert_eq!(w.current(), Pages(16 * MIB + 100 + slots * 2 * MIB));
    assert_eq!(w.frames().free_slots(), 0);
    w.verify().unwrap();
    // Shrink by one segment's worth and unplug it: its slot is free again.
    w.set_unplug(true);
    w.set_target(
        kib(16 * MIB + 100 + (slots - 1) * 2 * MIB),
        Source::Xenstore,
    )
    .unwrap();
    m.settle(&mut w, 100_000);
    assert_eq!(w.counts().plugged_segments as u64, slots - 1);
    assert_eq!(w.frames().free_slots(), 1);
}

/// docs/kernel-growth.md section 8: on a kernel that cannot grow, a
/// target above what deflation reaches is clipped (not given up on), and
/// no plug or back step is ever asked for.
#[test]
fn a_kernel_that_cannot_grow_clips_and_never_plugs() {
    use crate::worker::Growth;
    for g in [Growth::PvP2m, Growth::NoUvmHotplug, Growth::PvhDirectMap] {
        let mut m = Model::new(256 * MIB, 20 * MIB, 1024 * MIB, 4096 * MIB);
        let mut w = m.boot_on(256 * MIB, g);
        assert!(!w.policy().hotplug());
        assert!(w.set_hotplug(true).is_err());
        w.set_target(kib(128 * MIB), Source::Xenstore).unwrap();
        m.settle(&mut w, 10_000);
        w.set_target(kib(600 * MIB), Source::Xenstore).unwrap();
        m.settle(&mut w, 10_000);
        assert_eq!(w.state(), State::Cancelled(CancelReason::Clipped(g)));
        assert_eq!(
            w.state().to_string(),
            alloc::format!("clipped: {}", g.refusal().unwrap())
        );
        assert_eq!(w.current(), Pages(256 * MIB + 100));
        assert_eq!(w.counts().plugged_segments, 0);
        // Nothing was backed for a plug, and UVM has its boot segment only.
        assert_eq!(m.backed, 0, "{g:?}");
        assert_eq!(w.stats().segments_plugged, 0);
        assert_eq!(m.present.len(), 1);
        assert_eq!(w.stats().gave_up, 0);
    }
}

#[test]
fn hotplug_off_cancels_growth_with_a_reason() {
    let (mut m, mut w) = domain();
    w.set_hotplug(false).unwrap();
    w.set_target(kib(300 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10);
    assert_eq!(w.state(), State::Cancelled(CancelReason::HotplugOff));
    assert_eq!(w.stats().gave_up, 1);
    // Turning it on re-arms.
    w.set_hotplug(true).unwrap();
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), Pages(300 * MIB));
}

#[test]
fn short_deflate_backs_off_doubling_then_gives_up() {
    let (mut m, mut w) = domain();
    w.set_target(kib(200 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    m.host_free = 0; // the host has no memory to give back
    w.set_target(kib(250 * MIB), Source::Xenstore).unwrap();
    let mut sleeps = Vec::new();
    loop {
        let start = m.now;
        match w.next_action(m.now, m.mem()).unwrap() {
            Action::Idle => break,
            Action::Sleep { until } => {
                sleeps.push(until.0 - start.0);
                m.now = until;
            }
            Action::Deflate { .. } => {
                w.complete(
                    StepResult::Deflated {
                        done: Pages(0),
                        error: Some(Errno::ENOMEM),
                    },
                    m.now,
                )
                .unwrap();
                assert!(matches!(
                    w.state(),
                    State::Waiting(WaitReason::ShortDeflate) | State::Cancelled(_)
                ));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sleeps, [1000, 2000, 4000, 8000]);
    assert_eq!(
        w.state(),
        State::Cancelled(CancelReason::RetriesExhausted(WaitReason::ShortDeflate))
    );
    let last = w.stats().last_error.expect("a short deflate with an error");
    assert_eq!(last.errno, Errno::ENOMEM);
    assert_eq!(last.to_string(), "ENOMEM (12) in deflate");
    // Stays idle (no spinning) until the target changes.
    assert_eq!(w.next_action(m.now, m.mem()), Ok(Action::Idle));
    m.host_free = 1 << 30;
    w.set_target(kib(251 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), Pages(251 * MIB));
}

#[test]
fn low_memory_waits_instead_of_taking_pages() {
    let (mut m, mut w) = domain();
    // Leave only freetarg + one batch free.
    let keep = m.freetarg + 512;
    let taken: Vec<u64> = m.free.iter().copied().skip(keep as usize).collect();
    for p in taken {
        m.free.remove(&p);
        m.in_use += 1;
    }
    w.set_target(kib(200 * MIB), Source::Xenstore).unwrap();
    match w.next_action(m.now, m.mem()).unwrap() {
        Action::Sleep { until } => assert_eq!(until, Uptime(1000)),
        other => panic!("expected a wait, got {other:?}"),
    }
    assert_eq!(w.state(), State::Waiting(WaitReason::LowMemory));
}

#[test]
fn partial_inflate_records_exactly_the_leading_frames() {
    let (mut m, mut w) = domain();
    m.faults.decrease_limit = Some(100);
    w.set_target(kib(250 * MIB), Source::Xenstore).unwrap();
    assert!(m.step(&mut w));
    assert_eq!(w.frames().ballooned(), Pages(100));
    assert_eq!(w.stats().short_steps, 1);
    assert!(matches!(
        w.state(),
        State::Waiting(WaitReason::ShortInflate)
    ));
    m.faults.decrease_limit = None;
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), Pages(250 * MIB));
}

#[test]
fn results_must_match_the_step() {
    let (m, mut w) = domain();
    assert_eq!(
        w.complete(StepResult::Plugged(Ok(())), m.now),
        Err(WorkerError::NothingInFlight)
    );
    // No step was in flight: nothing took effect, nothing stops.
    assert!(!w.stopped());
    // The inflate asks for the whole need (6 MiB and 100 frames).
    let too_many: Vec<Pfn> = (20 * MIB..27 * MIB).map(Pfn).collect();
    let absent = [Pfn(1 << 40)];
    let cases = [
        (
            StepResult::Deflated {
                done: Pages(0),
                error: None,
            },
            WorkerError::Mismatch,
        ),
        (
            StepResult::Inflated {
                frames: &too_many,
                rest: &[],
                error: None,
            },
            WorkerError::MoreThanAsked,
        ),
        // A frame the core never thought populated (absent).
        (
            StepResult::Inflated {
                frames: &absent,
                rest: &[],
                error: None,
            },
            WorkerError::Bookkeeping(SegmentError::WrongState(
                Pfn(1 << 40),
                crate::segments::FrameState::Absent,
            )),
        ),
    ];
    for (bad, expect) in cases {
        let (mut m, mut w) = domain();
        w.set_target(kib(250 * MIB), Source::Xenstore).unwrap();
        let _ = w.next_action(m.now, m.mem()).unwrap();
        assert_eq!(w.complete(bad, m.now), Err(expect));
        assert_refused_step_stops_for_good(&mut m, &mut w);
    }
}

/// A result refused after its step took effect stops the worker for
/// good: the reason is in the state, no target or knob re-arms it, and
/// no step is ever tried again.
fn assert_refused_step_stops_for_good(m: &mut Model, w: &mut Worker) {
    let stopped = State::Cancelled(CancelReason::ResultRefused);
    assert_eq!(w.state(), stopped);
    assert!(w.stopped());
    assert!(w.state().to_string().contains("bookkeeping refused"));
    w.verify().unwrap();
    assert_eq!(m.settle(w, 10), 0, "no step after a refusal");
    w.set_target(kib(200 * MIB), Source::Sysctl).unwrap();
    w.set_batch(Pages(64)).unwrap();
    assert_eq!(w.state(), stopped, "a new target does not re-arm");
    assert_eq!(m.settle(w, 10), 0, "no step after a new target");
    w.begin_release();
    assert_eq!(m.settle(w, 10), 0, "no step while releasing");
    assert_eq!(w.state(), stopped);
}

#[test]
fn a_refused_deflate_result_stops_for_good() {
    let (mut m, mut w) = domain();
    w.set_target(kib(250 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    w.set_target(kib(256 * MIB), Source::Xenstore).unwrap();
    let Action::Deflate { count: asked, .. } = w.next_action(m.now, m.mem()).unwrap() else {
        panic!("expected a deflate");
    };
    let before = w.frames().ballooned();
    // Pages went back to UVM; a result claiming more than asked is refused
    // and nothing is retried (a retry would free pages twice).
    assert_eq!(
        w.complete(
            StepResult::Deflated {
                done: asked.saturating_add(Pages(1)),
                error: None
            },
            m.now
        ),
        Err(WorkerError::MoreThanAsked)
    );
    assert_eq!(w.frames().ballooned(), before);
    assert_refused_step_stops_for_good(&mut m, &mut w);
}

#[test]
fn unplug_refusal_is_not_retried_until_something_changes() {
    let (mut m, mut w) = domain();
    // Off by default (uvm_physseg.c 1.18 hazards, balloonkmod.4 BUGS).
    w.set_unplug(true);
    w.set_target(kib(300 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    m.faults.unplug_fails = true;
    w.set_target(kib(256 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), Pages(256 * MIB));
    assert!(w.counts().plugged_segments >= 1);
    assert_eq!(w.stats().segments_unplugged, 0);
    m.faults.unplug_fails = false;
    // Writing the value it has changes nothing: still not retried.
    w.set_unplug(true);
    assert_eq!(m.settle(&mut w, 10), 0);
    assert_eq!(w.stats().segments_unplugged, 0);
    w.set_unplug(false);
    w.set_unplug(true);
    // The pending unplug shows at once: never "idle" with work to do.
    assert_eq!(w.state(), State::Unplugging);
    m.settle(&mut w, 10_000);
    assert_eq!(w.counts().plugged_segments, 0);
    assert_eq!(w.state(), State::Idle);
}

#[test]
fn knobs_refuse_bad_values_and_change_nothing() {
    let (_, mut w) = domain();
    let floor = w.policy().floor();
    assert_eq!(
        w.set_floor(Kib(4)),
        Err(Refusal::BelowSafeFloor(floor.saturating_kib()))
    );
    assert_eq!(w.policy().floor(), floor);
    assert_eq!(w.set_batch(Pages(0)), Err(Refusal::OutOfRange));
    let bad = BackoffConfig {
        initial: Millis(0),
        ..BackoffConfig::default()
    };
    assert_eq!(w.set_backoff(bad), Err(Refusal::OutOfRange));
    assert_eq!(w.backoff_config(), BackoffConfig::default());
    assert_eq!(
        w.set_target_text(b"12 GiB", Source::Xenstore),
        Err(Refusal::Malformed)
    );
    assert_eq!(w.stats().targets_refused, 1);
    let before = w.target();
    assert_eq!(
        w.set_target_text(b"-1", Source::Sysctl),
        Err(Refusal::Malformed)
    );
    assert_eq!(w.target(), before);
}

#[test]
fn raising_the_floor_deflates_to_it() {
    let (mut m, mut w) = domain();
    w.set_target(Kib(0), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    let raised = w.policy().floor().saturating_add(Pages(5000));
    w.set_floor(raised.saturating_kib()).unwrap();
    m.settle(&mut w, 10_000);
    assert_eq!(w.current(), raised);
}

/// Re-arms a worker that may have given up, the way an administrator
/// would: a knob that really changes (writing a value it already has does
/// not re-arm). Leaves hotplug and unplug on.
fn rearm(w: &mut Worker) {
    w.set_hotplug(false).unwrap();
    w.set_hotplug(true).unwrap();
    w.set_unplug(true);
}

/// One random step of the property test.
#[derive(Clone, Debug)]
enum Op {
    Target(u64, bool),
    Faults(Faults),
    Batch(u64),
    Hotplug(bool),
    Unplug(bool),
    Step(u8),
    HostFree(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u64..1200 * MIB * 4, any::<bool>()).prop_map(|(k, x)| Op::Target(k, x)),
        1 => (
            proptest::option::weighted(0.3, 0u64..600),
            proptest::option::weighted(0.3, 0u64..600),
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(a, d, p, u, b)| Op::Faults(Faults {
                alloc_limit: a,
                decrease_limit: d,
                plug_fails: p,
                unplug_fails: u,
                back_fails: b,
                ..Faults::default()
            })),
        1 => (1u64..2048).prop_map(Op::Batch),
        1 => any::<bool>().prop_map(Op::Hotplug),
        1 => any::<bool>().prop_map(Op::Unplug),
        1 => (0u64..2048 * MIB).prop_map(Op::HostFree),
        12 => (1u8..40).prop_map(Op::Step),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random targets, knobs, partial results and failures: the
    /// invariants hold after every step (checked inside `Model::step`),
    /// and once faults clear the worker converges to any reachable target.
    #[test]
    fn random_steps_keep_invariants_and_converge(ops in proptest::collection::vec(op(), 40..120)) {
        let (mut m, mut w) = domain();
        let mut steps = 0u64;
        for op in ops {
            match op {
                Op::Target(k, sysctl) => {
                    let src = if sysctl { Source::Sysctl } else { Source::Xenstore };
                    let _ = w.set_target(Kib(k), src);
                }
                Op::Faults(f) => m.faults = f,
                Op::Batch(b) => { let _ = w.set_batch(Pages(b)); }
                Op::Hotplug(on) => { let _ = w.set_hotplug(on); }
                Op::Unplug(on) => w.set_unplug(on),
                Op::HostFree(n) => m.host_free = n,
                Op::Step(n) => {
                    for _ in 0..n {
                        steps += 1;
                        if !m.step(&mut w) { break; }
                    }
                }
            }
        }
        // Clear every fault, give the host memory, re-arm: it converges.
        m.faults = Faults::default();
        m.host_free = 1 << 30;
        rearm(&mut w);
        w.set_batch(Pages(2048)).unwrap();
        let goal = w.target();
        steps += m.settle(&mut w, 20_000) as u64;
        prop_assert_eq!(w.current(), goal, "state {:?}", w.state());
        prop_assert_eq!(w.state(), State::Idle);
        prop_assert!(steps > 0);
    }
}

/// A small deterministic generator (xorshift64*), so the long walk below
/// is the same on every run and a failure names its step.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// At least 100,000 random steps of targets, partial results and
/// failures in one domain, checking every invariant after each step and,
/// every few hundred steps, that the worker converges once faults clear.
#[test]
fn a_hundred_thousand_random_steps() {
    let (mut m, mut w) = domain();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut steps = 0u64;
    let mut convergences = 0u32;
    while steps < 100_000 {
        match rng.below(20) {
            0..=2 => {
                let src = if rng.below(2) == 0 {
                    Source::Sysctl
                } else {
                    Source::Xenstore
                };
                let _ = w.set_target(Kib(rng.below(1200 * MIB * 4)), src);
            }
            3 => {
                let pick = |r: &mut Rng| (r.below(3) == 0).then(|| r.below(600));
                m.faults = Faults {
                    alloc_limit: pick(&mut rng),
                    decrease_limit: pick(&mut rng),
                    plug_fails: rng.below(5) == 0,
                    unplug_fails: rng.below(5) == 0,
                    back_fails: rng.below(8) == 0,
                    ..Faults::default()
                };
            }
            4 => {
                let _ = w.set_batch(Pages(1 + rng.below(2048)));
            }
            5 => m.host_free = rng.below(2048 * MIB),
            6 => {
                let _ = w.set_hotplug(rng.below(2) == 0);
                w.set_unplug(rng.below(3) != 0);
            }
            7 => {
                m.faults = Faults::default();
                m.host_free = 1 << 30;
                rearm(&mut w);
                let goal = w.target();
                steps += m.settle(&mut w, 50_000) as u64;
                assert_eq!(w.current(), goal, "no convergence at step {steps}");
                convergences += 1;
            }
            _ => {
                for _ in 0..rng.below(60) {
                    steps += 1;
                    if !m.step(&mut w) {
                        break;
                    }
                }
            }
        }
    }
    assert!(
        convergences > 10,
        "the walk checked convergence only {convergences} times"
    );
    // Every step was checked to allocate nothing, but for the one
    // fallible bitmap growth of a step that begins a plug (Model::step).
    assert!(
        m.steps_checked > 40_000,
        "only {} steps checked for allocations",
        m.steps_checked
    );
}

#[test]
fn release_gives_everything_back_and_unplugs_empty_segments() {
    let (mut m, mut w) = domain();
    w.set_target(kib(300 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    w.set_unplug(false);
    w.set_target(kib(200 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    let plugged = w.counts().plugged_segments;
    assert!(plugged > 0 && !w.frames().ballooned().is_zero());
    w.begin_release();
    m.settle(&mut w, 10_000);
    assert!(w.frames().ballooned().is_zero());
    assert_eq!(
        w.counts().plugged_segments,
        0,
        "fully ballooned segments were unplugged"
    );
    assert_eq!(
        w.current(),
        Pages(256 * MIB + 100),
        "boot memory is all back"
    );
}

#[test]
fn release_stops_with_a_wait_when_xen_has_no_memory() {
    let (mut m, mut w) = domain();
    w.set_target(kib(200 * MIB), Source::Xenstore).unwrap();
    m.settle(&mut w, 10_000);
    m.host_free = 0;
    w.begin_release();
    assert!(m.step(&mut w), "one deflate attempt");
    assert!(matches!(
        w.next_action(m.now, m.mem()),
        Ok(Action::Sleep { .. })
    ));
    w.end_release();
    assert_eq!(w.target(), Pages(200 * MIB), "the target is untouched");
}

/// Populate-on-demand (`Worker::start_pod`): a map of 2 GiB on a
/// reservation of 512 MiB + 8 pages. The target drops to the reservation
/// less the slack at once; the first xenstore target bounds what is owed
/// by the map less it; the owed frames go back unscrubbed, one batch
/// never straddling the end of the debt; later inflation scrubs.
#[test]
fn pod_debt_goes_back_first_and_unscrubbed() {
    let map = 2048 * MIB;
    let seg = [PfnRange::new(Pfn(0), Pfn(map)).unwrap()];
    let mut w = Worker::new(&Boot {
        segments: &seg,
        reservation: Pages(map),
        max_reservation: Pages(513 * MIB),
        freemin: Pages(64),
        growth: Growth::NoUvmHotplug,
        plug: PlugLimits {
            align: Pages(512),
            max_segment: Pages(32 * MIB),
            frame_limit: Pfn(map),
            floor: Pfn(map),
            hole: None,
        },
    })
    .unwrap();
    assert!(!w.pod());
    w.start_pod(Pages(512 * MIB + 8), Pages(64));
    assert!(w.pod());
    assert_eq!(w.target(), Pages(512 * MIB + 8 - 256));
    assert_eq!(w.pod_owed(), Pages(map - 512 * MIB - 8 + 256));
    w.set_target(kib(512 * MIB), Source::Xenstore).unwrap();
    assert_eq!(
        w.toolstack_offset(),
        Pages::ZERO,
        "the map is what xl counts"
    );
    assert_eq!(w.pod_owed(), Pages(map - 512 * MIB));
    let mem = MemInfo {
        free: Pages(map),
        freetarg: Pages(128),
        managed: Pages(map),
    };
    let mut next = map;
    let mut given = 0;
    while given < map - 512 * MIB {
        let Action::Inflate { count, scrub, .. } = w.next_action(Uptime(0), mem).unwrap() else {
            panic!("inflate expected");
        };
        assert!(!scrub, "a frame owed to PoD was to be scrubbed");
        assert!(
            given + count.0 <= map - 512 * MIB,
            "a batch straddles the debt"
        );
        let frames: Vec<Pfn> = (next - count.0..next).map(Pfn).collect();
        next -= count.0;
        given += count.0;
        w.complete(
            StepResult::Inflated {
                frames: &frames,
                rest: &[],
                error: None,
            },
            Uptime(0),
        )
        .unwrap();
    }
    assert_eq!(w.pod_owed(), Pages::ZERO);
    assert!(matches!(w.next_action(Uptime(0), mem), Ok(Action::Idle)));
    w.set_target(kib(256 * MIB), Source::Xenstore).unwrap();
    let Action::Inflate { scrub, .. } = w.next_action(Uptime(0), mem).unwrap() else {
        panic!("inflate expected");
    };
    assert!(scrub, "past the debt, frames are scrubbed again");
}

/// docs/kernel-growth.md section 7: the kernel makes room for a segment
/// (PV: xpmap_p2m_grow; PVH: xenmem_alloc_pa and pmap_growdirectmap)
/// before any frame of it is backed, and the segment is plugged where the
/// kernel placed it, not where the frame space first asked.
#[test]
fn growth_reserves_before_backing_and_plugs_where_the_kernel_placed_it() {
    let (mut m, mut w) = domain();
    m.faults.reserve_shift = 4096 * MIB;
    w.set_target(kib(256 * MIB + 100 + 700), Source::Xenstore)
        .unwrap();
    m.settle(&mut w, 20);
    assert_eq!(w.state(), State::Idle);
    assert!(m.reserved.is_empty(), "every reserved range was plugged");
    assert!(m
        .present
        .contains(&(4096 * MIB + 256 * MIB, 4096 * MIB + 256 * MIB + 700)));
    assert_eq!(w.current().0, m.reservation);
}

/// docs/kernel-growth.md section 8: when the kernel has no room left the
/// target is clipped with the real reason, not "no frame space left".
#[test]
fn a_full_kernel_reservation_clips_with_the_modes_reason() {
    for (pvh, why) in [
        (false, "clipped: PV: the p2m reservation is full"),
        (true, "clipped: PVH: no physical range left to plug"),
    ] {
        let (mut m, mut w) = domain();
        w.set_limit(Pages(m.max_pages), None, pvh);
        m.faults.reserve_error = Some(Errno::ERANGE);
        w.set_target(kib(256 * MIB + 100 + 700), Source::Xenstore)
            .unwrap();
        m.settle(&mut w, 20);
        assert_eq!(w.state().to_string(), why);
        assert_eq!(w.current().0, m.reservation);
        // PV: no room below xpmap_p2m_limit() at all: the same reason
        // (PVH asks xenmem for a size, so it has no such limit).
        if pvh {
            continue;
        }
        let (mut m, mut w) = domain();
        w.set_limit(Pages(m.max_pages), None, pvh);
        let mut w2 = {
            let seg = [PfnRange::new(Pfn(0), Pfn(256 * MIB)).unwrap()];
            Worker::new(&Boot {
                segments: &seg,
                reservation: Pages(m.reservation),
                max_reservation: Pages(m.max_pages),
                freemin: Pages(64),
                growth: Growth::Available,
                plug: PlugLimits {
                    align: Pages(512),
                    max_segment: Pages(32 * MIB),
                    frame_limit: Pfn(256 * MIB),
                    floor: Pfn(0),
                    hole: None,
                },
            })
            .unwrap()
        };
        w2.set_limit(Pages(m.max_pages), None, pvh);
        w2.set_target(kib(256 * MIB + 100 + 700), Source::Xenstore)
            .unwrap();
        m.settle(&mut w2, 20);
        assert_eq!(w2.state().to_string(), why);
        w.verify().unwrap();
    }
}

/// A segment abandoned before its plug gives its placement back (PVH:
/// xenmem_free_pa) once its frames are back with Xen, and only then.
#[test]
fn an_abandoned_segment_gives_its_placement_back() {
    let (mut m, mut w) = domain();
    m.faults.plug_fails = true;
    w.set_target(kib(256 * MIB + 100 + 700), Source::Xenstore)
        .unwrap();
    for _ in 0..200 {
        if !m.step(&mut w) {
            break;
        }
        if !m.unreserved.is_empty() {
            break;
        }
    }
    assert_eq!(m.unreserved.len(), 1, "one placement given back");
    assert_eq!(m.backed, 0, "its frames went back to Xen first");
    assert!(m.reserved.is_empty());
    m.faults.plug_fails = false;
    m.now = Uptime(m.now.0 + 3_600_000);
    w.set_target(kib(256 * MIB + 100 + 701), Source::Xenstore)
        .unwrap();
    m.settle(&mut w, 40);
    assert_eq!(w.state(), State::Idle);
    assert!(m.reserved.is_empty());
}

/// The memory map's count of pages outside RAM fixes a PVH offset
/// whatever the targets say (a target written while the module was not
/// loaded is neither what the reservation was built from nor within the
/// slack of it); none, or more than Xen's slack allows, leaves the other
/// witnesses in charge; populate-on-demand counts from the map's RAM and
/// ignores it.
#[test]
fn the_memory_map_fixes_the_pvh_offset() {
    let (m, mut w) = domain();
    w.set_map_offset(Pages(8));
    w.set_limit(Pages(m.max_pages), Some(kib(4096 * MIB)), true);
    w.set_target(kib(m.reservation / 2), Source::Xenstore)
        .unwrap();
    assert_eq!(w.toolstack_offset(), Pages(8));
    assert_eq!(w.target(), Pages(m.reservation / 2 + 8));
    for ignored in [Pages::ZERO, Pages(policy::TOOLSTACK_SLACK.0 + 1)] {
        let (m, mut w) = domain();
        w.set_map_offset(ignored);
        w.set_limit(Pages(m.max_pages), Some(kib(4096 * MIB)), true);
        w.set_target(kib(m.reservation - 8), Source::Xenstore)
            .unwrap();
        assert_eq!(w.toolstack_offset(), Pages(8), "the first target's");
    }
    let (_, mut w) = domain();
    w.start_pod(Pages(64 * MIB), Pages(64));
    w.set_map_offset(Pages(8));
    assert_eq!(w.toolstack_offset(), Pages::ZERO);
}
