//! The worker's state machine: from the driver's state, a target and the
//! time, the next thing to do; from what that step did, the new state.
//!
//! The shim's worker thread runs a loop of "ask for an action, carry it
//! out, report the result" ([`Worker::next_action`], [`Worker::complete`]).
//! New targets and knob changes arrive in between from other threads
//! (under the shim's lock). The machine is pure and deterministic: the
//! clock and UVM's memory figures are inputs, and the same inputs give
//! the same actions, so every path can be tested on the host.
//!
//! Order of work, each step at most one batch (one hypercall):
//! 1. if a back-off wait is running, sleep until it ends;
//! 2. frames Xen backs for a plug that did not happen (stranded) go back
//!    to Xen first, before anything else;
//! 3. above the target: give frames to Xen (inflate), preferring the
//!    newest plugged segment, no faster than the low-memory guard allows;
//!    at or above the target with a fully ballooned plugged segment:
//!    unplug it;
//! 4. below the target: take ballooned frames back (deflate), boot memory
//!    first; with none left and hotplug on, plug a new segment above the
//!    highest frame: back it one batch a step, then `uvm_physseg_plug`
//!    it. A segment no longer wanted (target lowered, hotplug off,
//!    unload), or one that could not be backed or plugged, is abandoned
//!    and its backed frames are stranded (step 2);
//! 5. otherwise idle.
//!
//! Only steps that move towards the target (a full inflate or deflate, a
//! plug, an unplug) reset the back-off. Backing a segment and giving
//! stranded frames back do not: a plug that keeps failing is retried
//! `max_retries` times, its frames given back each time, then given up.
//! The failure of a plug counts once its frames are back with Xen.

use crate::backoff::{Backoff, BackoffConfig, Retry};
use crate::errno::Errno;
use crate::policy::{self, MemInfo, Policy, Refusal, Source, Target};
use crate::segments::{FrameCounts, FrameSpace, PlugLimits, SegmentError};
use crate::stats::{bump, LastError, Stats, StepKind};
use crate::units::{Kib, Pages, Pfn, PfnRange, Uptime};

/// What the driver knows at load.
#[derive(Clone, Debug)]
pub struct Boot<'a> {
    /// UVM's segments at load, all populated.
    pub segments: &'a [PfnRange],
    /// `XENMEM_current_reservation` at load.
    pub reservation: Pages,
    /// `XENMEM_maximum_reservation`.
    pub max_reservation: Pages,
    /// `uvmexp.freemin`.
    pub freemin: Pages,
    /// Whether the kernel lets the domain grow past its boot memory.
    pub growth: Growth,
    /// Where plugged segments may go.
    pub plug: PlugLimits,
}

/// Whether the kernel lets the domain grow by plugging segments, and if
/// not, why (docs/kernel-growth.md sections 6 and 8: plug is used only
/// with `options UVM_HOTPLUG` and the whole growth interface set of the
/// mode; no stock kernel has both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Growth {
    /// UVM_HOTPLUG and every growth interface of the mode are there.
    Available,
    /// PV without the PV growth set (every stock XEN3_DOMU).
    PvP2m,
    /// PVH on a kernel without `options UVM_HOTPLUG` (stock GENERIC).
    NoUvmHotplug,
    /// PVH with UVM_HOTPLUG but without the PVH growth set.
    PvhDirectMap,
    /// Kernel-assisted PV: the reserved p2m is full (`xpmap_p2m_grow`
    /// answered ERANGE, or no segment fits below `xpmap_p2m_limit()`).
    PvP2mFull,
    /// Kernel-assisted PVH: `xenmem_alloc_pa` found no range, or
    /// `pmap_growdirectmap` answered ERANGE for the one it found.
    PvhNoRange,
}

impl Growth {
    /// The reason growth is refused, as `hw.balloon.state` and dmesg give
    /// it; `None` when growth is available.
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            Growth::Available => None,
            Growth::PvP2m => Some("PV: the p2m ends at boot memory"),
            Growth::NoUvmHotplug => Some("kernel lacks options UVM_HOTPLUG"),
            Growth::PvhDirectMap => {
                Some("PVH: the direct map ends at boot memory (x86/pmap.c pmap_init_directmap)")
            }
            Growth::PvP2mFull => Some("PV: the p2m reservation is full"),
            Growth::PvhNoRange => Some("PVH: no physical range left to plug"),
        }
    }
}

/// Why the driver could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The boot segments are not a valid frame space.
    Segments(SegmentError),
    /// Xen says the domain has fewer pages than UVM's segments hold.
    ReservationBelowSegments,
}

/// What the shim should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Allocate up to `count` pages (from `prefer` first when given, by
    /// `uvm_pglistalloc` on that range), scrub them if scrubbing is on,
    /// and give them to Xen with `decrease_reservation`.
    Inflate {
        /// Pages to give.
        count: Pages,
        /// A frame range to claim from first.
        prefer: Option<PfnRange>,
        /// Zero each page before it goes.
        scrub: bool,
    },
    /// Have Xen back ballooned frames again and free their `vm_page`s to
    /// UVM: the first `count` ballooned frames at or after `from`, lowest
    /// first ([`FrameSpace::ballooned_from`]). A cursor and a count, so
    /// that a step allocates nothing.
    Deflate {
        /// The lowest ballooned frame.
        from: Pfn,
        /// Frames to take back; at most one batch.
        count: Pages,
    },
    /// Prepare the kernel for a new segment of `want.len()` frames
    /// (docs/kernel-growth.md section 7): PV: `xpmap_p2m_grow` to
    /// `want.end()`, the range stays `want`; PVH: `xenmem_alloc_pa` places
    /// it and `pmap_growdirectmap` maps it. Nothing is backed yet.
    Reserve {
        /// The range the frame space has room for.
        want: PfnRange,
    },
    /// Give back the placement of a segment that was abandoned before it
    /// was plugged, once its frames are back with Xen (PVH:
    /// `xenmem_free_pa`; PV: nothing, the p2m never shrinks).
    Unreserve {
        /// The range [`Action::Reserve`] returned.
        range: PfnRange,
    },
    /// Back these frames of the segment being prepared (PV:
    /// increase_reservation and p2m; PVH: populate_physmap): at most one
    /// batch, in order, after the frames backed before.
    Back {
        /// The frames.
        frames: PfnRange,
    },
    /// `uvm_physseg_plug` the segment being prepared; every frame of it
    /// is backed.
    Plug {
        /// The new segment.
        range: PfnRange,
    },
    /// Give these stranded frames (backed for a plug that did not happen,
    /// in no segment) back to Xen with `decrease_reservation`.
    Return {
        /// The lowest stranded frames; at most one batch.
        frames: PfnRange,
    },
    /// `uvm_physseg_unplug` this fully ballooned segment and forget its
    /// pages.
    Unplug {
        /// The segment.
        range: PfnRange,
    },
    /// Nothing to do before `until` unless a target or knob changes.
    Sleep {
        /// When to ask again.
        until: Uptime,
    },
    /// Nothing to do until a target or knob changes.
    Idle,
}

/// What a step did: exact counts, partial success included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepResult<'a> {
    /// The frames Xen accepted (the leading entries
    /// `decrease_reservation` reported done), and the error that cut the
    /// step short, if any.
    Inflated {
        /// Frames now ballooned.
        frames: &'a [Pfn],
        /// The frames of the batch passed to [`Worker::check_inflate`]
        /// that did not go to Xen (they went back to UVM): with `frames`,
        /// the whole checked batch. Empty when Xen took every frame or
        /// no batch was checked.
        rest: &'a [Pfn],
        /// What stopped the step early.
        error: Option<Errno>,
    },
    /// The runs Xen accepted as 2 MiB extents (the leading extents
    /// `decrease_reservation` reported done), and the error that cut the
    /// step short, if any.
    InflatedRuns {
        /// Runs now ballooned.
        runs: &'a [PfnRange],
        /// What stopped the step early.
        error: Option<Errno>,
    },
    /// How many leading frames of the deflate's runs are back in UVM.
    Deflated {
        /// Frames repopulated and freed to UVM.
        done: Pages,
        /// What stopped the step early.
        error: Option<Errno>,
    },
    /// How many leading frames of a [`Action::Back`] Xen backs now.
    Backed {
        /// Frames backed.
        done: Pages,
        /// What stopped the step early.
        error: Option<Errno>,
    },
    /// The range the kernel prepared for a new segment, or why not.
    Reserved(Result<PfnRange, Errno>),
    /// The placement of an abandoned segment was given back.
    Unreserved,
    /// Whether the segment was plugged.
    Plugged(Result<(), Errno>),
    /// How many leading frames of a [`Action::Return`] Xen took back.
    Returned {
        /// Frames given back.
        done: Pages,
        /// What stopped the step early.
        error: Option<Errno>,
    },
    /// Whether the segment was unplugged.
    Unplugged(Result<(), Errno>),
}

/// A result the worker could not accept; the in-flight step is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerError {
    /// A result came with no step in flight.
    NothingInFlight,
    /// A step is in flight and its result was never reported.
    StepInFlight,
    /// The result is for another kind of step.
    Mismatch,
    /// The result claims more than the step asked for.
    MoreThanAsked,
    /// The bookkeeping refused the result.
    Bookkeeping(SegmentError),
}

/// Why the worker waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// UVM free memory is at or under its target plus a batch.
    LowMemory,
    /// An inflate step gave fewer pages than asked.
    ShortInflate,
    /// A deflate step got fewer frames back than asked (host memory).
    ShortDeflate,
    /// A segment could not be backed or plugged.
    PlugFailed,
    /// Xen took back fewer stranded frames than asked.
    ReturnShort,
    /// A segment could not be unplugged.
    UnplugFailed,
}

/// Why the worker stopped working towards the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// Too many shortfalls in a row; the last one's reason.
    RetriesExhausted(WaitReason),
    /// The target is above what the segments hold and hotplug is off.
    HotplugOff,
    /// Every segment slot reserved at attach is taken
    /// ([`crate::segments::PLUG_SLOTS`] plugged segments).
    NoSegmentSlot,
    /// The target is above what the domain can reach without growing,
    /// and the kernel cannot grow it: the target is clipped.
    Clipped(Growth),
    /// The bookkeeping refused frames UVM handed out for an inflate;
    /// they went back to UVM and nothing went to Xen. Stopped for good:
    /// UVM and the bookkeeping disagree about which pages are whose.
    FramesRefused,
    /// The bookkeeping refused the result of a step that had already
    /// taken effect (frames given to Xen or back to UVM). Stopped for
    /// good: a retry could lose frames or free pages twice.
    ResultRefused,
}

/// What the worker is doing, for `hw.balloon.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// At the target.
    Idle,
    /// Giving memory to Xen.
    Inflating,
    /// Taking memory back.
    Deflating,
    /// Growing by a new segment.
    Plugging,
    /// Releasing an empty segment.
    Unplugging,
    /// Giving Xen back the frames of a plug that did not happen.
    Returning,
    /// Waiting to retry.
    Waiting(WaitReason),
    /// Stopped until the target or a knob changes.
    Cancelled(CancelReason),
}

impl WaitReason {
    /// The kind of step whose shortfall this is.
    pub fn step(self) -> StepKind {
        match self {
            WaitReason::LowMemory | WaitReason::ShortInflate => StepKind::Inflate,
            WaitReason::ShortDeflate => StepKind::Deflate,
            WaitReason::PlugFailed | WaitReason::ReturnShort => StepKind::Plug,
            WaitReason::UnplugFailed => StepKind::Unplug,
        }
    }

    /// A short phrase for `hw.balloon.state` and dmesg.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::LowMemory => "low memory",
            WaitReason::ShortInflate => "page allocation or decrease_reservation fell short",
            WaitReason::ShortDeflate => "host has no free memory",
            WaitReason::PlugFailed => "segment could not be plugged",
            WaitReason::ReturnShort => "Xen took back fewer frames of a failed plug than asked",
            WaitReason::UnplugFailed => "segment could not be unplugged",
        }
    }
}

// The text of CancelReason::NoSegmentSlot names the slot count.
const _: () = assert!(crate::segments::PLUG_SLOTS == 256);

impl CancelReason {
    /// A short phrase for `hw.balloon.state` and dmesg.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::RetriesExhausted(_) => "retries exhausted",
            CancelReason::HotplugOff => "target above boot memory and hotplug off",
            CancelReason::NoSegmentSlot => "no segment slot left to plug into (256 plugged)",
            CancelReason::Clipped(g) => g.refusal().unwrap_or("growth refused"),
            CancelReason::FramesRefused => {
                "bookkeeping refused the pages UVM gave; stopped until reload"
            }
            CancelReason::ResultRefused => {
                "bookkeeping refused a step that took effect; stopped until reload"
            }
        }
    }
}

impl core::fmt::Display for State {
    /// The text of `hw.balloon.state`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            State::Idle => f.write_str("idle"),
            State::Inflating => f.write_str("inflating"),
            State::Deflating => f.write_str("deflating"),
            State::Plugging => f.write_str("plugging"),
            State::Unplugging => f.write_str("unplugging"),
            State::Returning => f.write_str("returning the frames of a failed plug"),
            State::Waiting(why) => write!(f, "waiting: {}", why.as_str()),
            State::Cancelled(CancelReason::RetriesExhausted(why)) => {
                write!(f, "cancelled: retries exhausted ({})", why.as_str())
            }
            State::Cancelled(CancelReason::Clipped(g)) => {
                write!(f, "clipped: {}", g.refusal().unwrap_or("growth refused"))
            }
            State::Cancelled(why) => write!(f, "cancelled: {}", why.as_str()),
        }
    }
}

/// The step in flight and what it asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum InFlight {
    Inflate(Pages),
    Deflate(Pfn, Pages),
    Back(PfnRange),
    Plug(PfnRange),
    Return(PfnRange),
    Unplug(PfnRange),
    Reserve(PfnRange),
    Unreserve(PfnRange),
}

/// What a completed step means for the back-off.
enum Outcome {
    /// A step towards the target did all it asked: reset the back-off.
    Progress,
    /// Backing a segment or giving frames back: no change.
    Neutral,
    /// The step fell short.
    Short(WaitReason, Option<Errno>),
}

/// The driver's brain: bookkeeping, policy, back-off, target and stats.
#[derive(Debug)]
pub struct Worker {
    space: FrameSpace,
    policy: Policy,
    backoff: Backoff,
    plug_limits: PlugLimits,
    /// Pages the domain holds outside UVM's segments (kernel image,
    /// page tables, holes Xen still backs): constant after load.
    outside: Pages,
    target: Pages,
    in_flight: Option<InFlight>,
    state: State,
    stats: Stats,
    /// Giving everything back before unload: the target no longer counts.
    releasing: bool,
    /// A plug failed with this error; it counts as a shortfall once the
    /// frames backed for it are back with Xen.
    failed_plug: Option<Errno>,
    /// Whether the kernel can take a plug (fixed at load).
    growth: Growth,
    /// The placement of a segment abandoned before its plug, given back
    /// ([`Action::Unreserve`]) once no frame of it is stranded.
    unreserve: Option<PfnRange>,
    /// The bookkeeping refused a step ([`CancelReason::FramesRefused`],
    /// [`CancelReason::ResultRefused`]): nothing more is done, whatever
    /// the target or knobs say, and an unload is refused.
    stopped: bool,
    /// `XENMEM_current_reservation` at load.
    load_reservation: Pages,
    /// Pages Xen counts that `memory/target` does not
    /// ([`policy::toolstack_offset`]); fixed by the first xenstore target.
    offset: Option<Pages>,
    /// The same pages as the memory map counts them
    /// ([`Worker::set_map_offset`]); when known, it is the offset.
    map_offset: Option<Pages>,
    /// What the last [`Worker::set_limit`] read.
    limit: Limit,
    /// Populate-on-demand: what the domain owes Xen's PoD cache.
    pod: Option<PodDebt>,
}

/// A PVH domain built with `memory` < `maxmem` runs on populate-on-demand
/// (libxl_create.c `pod_enabled`, xen-project/xen @c447b730): its memory
/// map reaches maxmem, but Xen backs only `memory` (the PoD cache). Xen
/// crashes the domain when the guest touches more frames than the cache
/// holds (p2m-pod.c `p2m_pod_demand_populate`), so the difference goes
/// back at once, before anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PodDebt {
    /// Frames of the memory map at load.
    map: Pages,
    /// Frames to give back, at most: the map less the reservation at
    /// load (less [`policy::TOOLSTACK_SLACK`], for the pages Xen counts
    /// outside the map), and once `memory/target` is known, never more
    /// than the map less it.
    owed: Pages,
    /// Frames given back since load.
    given: Pages,
}

/// The figures the limit on targets comes from.
#[derive(Clone, Copy, Debug)]
struct Limit {
    xen_max: Pages,
    static_max: Option<Kib>,
    pvh: bool,
}

impl Worker {
    /// Whether the kernel lets the domain grow, or why not.
    pub fn growth(&self) -> Growth {
        self.growth
    }

    /// The worker for a domain that booted as `boot` says. The target
    /// starts at the current reservation: nothing moves until asked.
    pub fn new(boot: &Boot<'_>) -> Result<Worker, InitError> {
        let space = FrameSpace::new(boot.segments).map_err(InitError::Segments)?;
        let outside = boot
            .reservation
            .checked_sub(space.populated())
            .ok_or(InitError::ReservationBelowSegments)?;
        let floor = policy::safe_floor(space.populated(), boot.freemin, policy::DEFAULT_BALLAST);
        let policy = Policy::new(
            floor,
            boot.max_reservation,
            boot.growth == Growth::Available,
        );
        Ok(Worker {
            space,
            policy,
            backoff: Backoff::new(BackoffConfig::default()),
            plug_limits: boot.plug,
            outside,
            target: policy.effective(boot.reservation),
            in_flight: None,
            state: State::Idle,
            stats: Stats::default(),
            releasing: false,
            failed_plug: None,
            growth: boot.growth,
            unreserve: None,
            stopped: false,
            load_reservation: boot.reservation,
            offset: None,
            map_offset: None,
            limit: Limit {
                xen_max: boot.max_reservation,
                static_max: None,
                pvh: false,
            },
            pod: None,
        })
    }

    /// The domain runs on populate-on-demand: `Boot::reservation` was the
    /// memory map (every frame of it usable: Xen populates on first
    /// access, as Linux counts `get_num_physpages()` for HVM/PVH in
    /// drivers/xen/balloon.c `balloon_init`, torvalds/linux @965c0aaa),
    /// and `reservation` is what `XENMEM_current_reservation` says Xen
    /// holds (`domain_tot_pages`: populated pages plus the PoD cache,
    /// xen/common/memory.c, p2m-pod.c). The target becomes the
    /// reservation less the slack at once, so that the difference goes
    /// back before the first xenstore target arrives, and the frames owed
    /// go back unscrubbed ([`Worker::next_action`]).
    pub fn start_pod(&mut self, reservation: Pages, freemin: Pages) {
        let map = self.held();
        let floor = reservation.saturating_sub(policy::TOOLSTACK_SLACK);
        // The safe floor of the memory Xen backs, never above it: a floor
        // reckoned from the whole map could keep frames the cache cannot
        // back.
        let safe = policy::safe_floor(floor, freemin, policy::DEFAULT_BALLAST).min(floor);
        self.policy = Policy::new(safe, self.policy.max(), self.policy.hotplug_supported());
        self.pod = Some(PodDebt {
            map,
            owed: map.saturating_sub(floor),
            given: Pages::ZERO,
        });
        self.target = self.policy.effective(floor);
        self.rearm();
    }

    /// Frames still owed to populate-on-demand (0 without PoD): what the
    /// first balloon-down has left to give back for the present target.
    pub fn pod_owed(&self) -> Pages {
        match self.pod {
            Some(p) => p
                .owed
                .saturating_sub(p.given)
                .min(self.current().saturating_sub(self.target)),
            None => Pages::ZERO,
        }
    }

    /// Frames that may still go back unscrubbed: while the domain owes
    /// PoD entries, a frame given back is a PoD entry (nothing in it) or
    /// a populated page Xen steals into the domain's own PoD cache and
    /// zeroes there (p2m-pod.c `p2m_pod_decrease_reservation` while
    /// entry_count > count, `p2m_pod_cache_add`); zeroing it here would
    /// populate a never-touched frame from the cache, the very access
    /// that can exhaust it.
    fn pod_unscrubbed(&self) -> Pages {
        self.pod
            .map_or(Pages::ZERO, |p| p.owed.saturating_sub(p.given))
    }

    /// Whether the domain runs on populate-on-demand.
    pub fn pod(&self) -> bool {
        self.pod.is_some()
    }

    /// The pages Xen's reservation holds beyond what the toolstack calls
    /// the domain's memory (0 until the first xenstore target fixed it).
    pub fn toolstack_offset(&self) -> Pages {
        self.map_offset.or(self.offset).unwrap_or(Pages::ZERO)
    }

    /// The pages of a PVH guest's memory map that Xen populated outside
    /// RAM (the special pages and ACPI tables, as the shim counted them
    /// from XENMEM_memory_map at load). They are exactly what the
    /// reservation counts and `memory/target` does not, whenever the
    /// target was written, so they fix the offset for this load; the
    /// other witnesses ([`policy::toolstack_offset`]) only stand in when
    /// the map is missing (0) or says more than Xen's slack allows. On
    /// populate-on-demand ([`Worker::start_pod`]) the driver's figures
    /// start from the map's RAM, not from the reservation, so no page
    /// outside RAM is in them and there is nothing to offset.
    pub fn set_map_offset(&mut self, outside_ram: Pages) {
        if self.pod.is_some() || outside_ram.is_zero() || outside_ram > policy::TOOLSTACK_SLACK {
            return;
        }
        self.map_offset = Some(outside_ram);
        self.apply_limit();
    }

    /// A figure of the reservation as `xl` and `memory/target` count it.
    pub fn as_toolstack(&self, p: Pages) -> Pages {
        p.saturating_sub(self.toolstack_offset())
    }

    /// A size in KiB as the toolstack counts it, as the reservation counts it.
    fn to_reservation(&self, kib: Kib) -> Kib {
        Kib(kib
            .0
            .saturating_add(self.toolstack_offset().saturating_kib().0))
    }

    /// The limit targets are clamped to, read afresh whenever a target
    /// arrives: Xen's maximum reservation now (which `xl mem-set` raises to
    /// the target plus 1 MiB before it writes `memory/target`,
    /// libxl_mem.c @0241809b), and never above `memory/static-max` (KiB,
    /// when readable). `pvh`: an auto-translated guest. Re-arms only when
    /// the limit changed.
    pub fn set_limit(&mut self, xen_max: Pages, static_max: Option<Kib>, pvh: bool) {
        self.limit = Limit {
            xen_max,
            static_max,
            pvh,
        };
        // Built with memory = maxmem: static-max alone fixes the offset
        // (before the first target, so that nothing reports without it).
        if let (None, Some(s)) = (self.offset, static_max) {
            let off = policy::toolstack_offset(pvh, self.load_reservation, Some(s), Kib(0));
            if !off.is_zero() || !pvh {
                self.offset = Some(off);
            }
        }
        self.apply_limit();
    }

    /// `memory/target` as the shim read it at load, just after the
    /// reservation. Linux fixes `target_diff` at its first watch event
    /// (drivers/xen/xen-balloon.c @06236046 `watch_target`), which for a
    /// driver built into the kernel comes at boot, while the domain is
    /// still at the target it was built with. A module's first event may
    /// come later, after a newer target (xl mem-set just after modload):
    /// then that target says nothing about the reservation read at load.
    /// So a PVH offset is fixed here, from the two figures read together,
    /// when they agree within the slack; otherwise the first watch event
    /// tries, as before.
    pub fn set_load_target(&mut self, target: Kib) {
        if self.offset.is_some() || !self.limit.pvh {
            return;
        }
        let off = policy::toolstack_offset(true, self.load_reservation, None, target);
        if !off.is_zero() {
            self.offset = Some(off);
            self.apply_limit();
        }
    }

    fn apply_limit(&mut self) {
        let Limit {
            xen_max,
            static_max,
            pvh,
        } = self.limit;
        let off = self.toolstack_offset();
        if let (true, Some(s)) = (pvh, static_max) {
            // PVH: plugged frames may reach as far as static-max lets the
            // domain grow, whatever Xen's maximum was at load.
            let reach = Pfn(self.plug_limits.floor.0.saturating_add(s.pages_floor().0));
            if reach > self.plug_limits.frame_limit {
                self.plug_limits.frame_limit = reach;
            }
        }
        let max = match static_max {
            Some(s) => xen_max.min(s.pages_floor().saturating_add(off)),
            None => xen_max,
        };
        if max != self.policy.max() {
            self.set_max(max);
        }
    }

    /// Starts giving every ballooned frame back, whatever the target, as
    /// the module must before it unloads: fully ballooned plugged
    /// segments are unplugged (their frames were never the domain's at
    /// boot), every other ballooned frame is deflated. [`Worker::next_action`]
    /// answers `Idle` once nothing is ballooned, and `Sleep` when a step
    /// fell short (Xen had no memory to give back).
    pub fn begin_release(&mut self) {
        self.releasing = true;
        self.rearm();
    }

    /// Goes back to steering to the target (an unload was refused).
    pub fn end_release(&mut self) {
        self.releasing = false;
        self.rearm();
    }

    /// True while giving everything back before unload.
    pub fn releasing(&self) -> bool {
        self.releasing
    }

    /// The release's next step, once stranded frames are back.
    fn release_action(&mut self) -> Action {
        if let Some(unplug) = self.start_unplug() {
            return unplug;
        }
        if self.space.ballooned().is_zero() {
            self.state = State::Idle;
            return Action::Idle;
        }
        self.start_deflate(self.policy.batch())
    }

    /// Starts unplugging a fully ballooned plugged segment, if there is
    /// one whose unplug has not been refused.
    fn start_unplug(&mut self) -> Option<Action> {
        // Segments whose unplug failed are not tried again until the
        // target changes, so a refusing kernel cannot make the worker
        // spin (a flag in the frame space; no allocation).
        let range = self.space.unplug_untried().next()?;
        self.in_flight = Some(InFlight::Unplug(range));
        self.state = State::Unplugging;
        Some(Action::Unplug { range })
    }

    /// Starts giving up to one batch of stranded frames back.
    fn start_return(&mut self) -> Action {
        // At most one step of single frames (a return is never made of
        // 2 MiB extents).
        let most = self.policy.batch().min(policy::MAX_SINGLE_STEP);
        let Some(frames) = self.space.choose_return(most) else {
            self.state = State::Idle;
            return Action::Idle;
        };
        self.in_flight = Some(InFlight::Return(frames));
        self.state = State::Returning;
        Action::Return { frames }
    }

    /// The next step of the segment being prepared: back one more batch
    /// of it, or plug it once fully backed.
    fn continue_plug(&mut self, range: PfnRange) -> Action {
        self.state = State::Plugging;
        match self.space.next_backing(self.policy.batch()) {
            Some(frames) => {
                self.in_flight = Some(InFlight::Back(frames));
                Action::Back { frames }
            }
            None => {
                self.in_flight = Some(InFlight::Plug(range));
                Action::Plug { range }
            }
        }
    }

    /// Abandons the segment being prepared when it is no longer wanted:
    /// unloading, hotplug turned off, or no growth needed any more. Its
    /// backed frames are stranded and go back to Xen next.
    fn drop_unwanted_plug(&mut self) -> Result<(), WorkerError> {
        let Some(seg) = self.space.pending() else {
            return Ok(());
        };
        if !self.releasing && self.policy.hotplug() && self.target() > self.held() {
            return Ok(());
        }
        self.abandon_pending(seg.range)
            .map_err(WorkerError::Bookkeeping)?;
        Ok(())
    }

    /// Abandons the segment being prepared; its placement is given back
    /// once its frames are.
    fn abandon_pending(&mut self, range: PfnRange) -> Result<(), SegmentError> {
        self.space.abandon_plug(range)?;
        self.unreserve = Some(range);
        Ok(())
    }

    /// Starts taking up to `max` ballooned frames back.
    fn start_deflate(&mut self, max: Pages) -> Action {
        let Some((from, count)) = self.space.deflate_cursor(max) else {
            self.state = State::Idle;
            return Action::Idle;
        };
        self.in_flight = Some(InFlight::Deflate(from, count));
        self.state = State::Deflating;
        Action::Deflate { from, count }
    }

    /// Pages the domain holds now, as Xen counts its reservation: UVM's,
    /// those outside UVM at load, and those backed outside every live
    /// segment (a plug being prepared, or stranded).
    pub fn current(&self) -> Pages {
        self.held().saturating_add(self.space.backed_outside())
    }

    /// Pages the domain holds that UVM can use (or that were outside UVM
    /// at load): what growth and shrinking are decided on.
    fn held(&self) -> Pages {
        self.space.populated().saturating_add(self.outside)
    }

    /// The target being steered to (already clamped into the policy's range).
    pub fn target(&self) -> Pages {
        self.policy.effective(self.target)
    }

    /// The policy and its knobs.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The back-off knobs.
    pub fn backoff_config(&self) -> BackoffConfig {
        self.backoff.config()
    }

    /// The frame space.
    pub fn frames(&self) -> &FrameSpace {
        &self.space
    }

    /// Frame counts by state.
    pub fn counts(&self) -> FrameCounts {
        self.space.counts()
    }

    /// What the worker is doing.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters since load.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True while a step's result is awaited.
    pub fn step_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Something changed that may make an abandoned target reachable.
    /// The state says at once which way the worker is about to go, so a
    /// reader never sees "idle" while work is pending.
    fn rearm(&mut self) {
        self.backoff.reset();
        self.space.clear_unplug_refused();
        self.failed_plug = None;
        if self.in_flight.is_none() && !self.stopped {
            let (current, target) = (self.held(), self.target());
            self.state = if !self.space.stranded().is_zero() {
                State::Returning
            } else if self.space.pending().is_some() && target > current {
                State::Plugging
            } else if current > target {
                State::Inflating
            } else if current < target {
                State::Deflating
            } else if self.policy.unplug() && self.space.unplug_candidates().next().is_some() {
                State::Unplugging
            } else {
                State::Idle
            };
        }
    }

    /// A new target in KiB from `source`, as the toolstack counts memory
    /// (the toolstack offset, fixed by the first xenstore target, is
    /// added). Accepted targets replace the old one; one that differs from
    /// it re-arms a worker that had given up (and resets the back-off), an
    /// unchanged one does not. Refused ones change nothing but the refusal
    /// count.
    pub fn set_target(&mut self, kib: Kib, source: Source) -> Result<Target, Refusal> {
        if self.offset.is_none() && source == Source::Xenstore {
            // PoD: the cache was sized for this target (xg_dom_x86.c
            // meminit_hvm, or libxl_mem.c's target + 1 MiB), so no more
            // than the map less it is owed.
            if let Some(p) = self.pod.as_mut() {
                p.owed = p.owed.min(p.map.saturating_sub(kib.pages_floor()));
            }
            let l = self.limit;
            self.offset = Some(policy::toolstack_offset(
                l.pvh,
                self.load_reservation,
                l.static_max,
                kib,
            ));
            self.apply_limit();
        }
        match self.policy.accept_target(self.to_reservation(kib), source) {
            Ok(t) => {
                bump(&mut self.stats.targets_accepted);
                if t.clamp.is_some() {
                    bump(&mut self.stats.targets_clamped);
                }
                let changed = t.pages != self.target;
                self.target = t.pages;
                if changed {
                    self.rearm();
                }
                Ok(t)
            }
            Err(e) => {
                self.refuse_target();
                Err(e)
            }
        }
    }

    /// Counts a refused target: one the policy refused, one that did not
    /// parse, or one that could not even be read as a size (a negative
    /// sysctl value).
    pub fn refuse_target(&mut self) {
        bump(&mut self.stats.targets_refused);
    }

    /// A target given as the raw bytes of a xenstore or sysctl string.
    pub fn set_target_text(&mut self, text: &[u8], source: Source) -> Result<Target, Refusal> {
        match policy::parse_kib(text) {
            Ok(kib) => self.set_target(kib, source),
            Err(e) => {
                self.refuse_target();
                Err(e)
            }
        }
    }

    /// Runs a knob change on the policy; one that changed the policy
    /// re-arms, one that left it as it was does not.
    fn knob(&mut self, f: impl FnOnce(&mut Policy) -> Result<(), Refusal>) -> Result<(), Refusal> {
        let before = self.policy;
        f(&mut self.policy)?;
        if self.policy != before {
            self.rearm();
        }
        Ok(())
    }

    /// `hw.balloon.min` (KiB as the toolstack counts): raise (or lower, not
    /// under the safe floor) the floor.
    pub fn set_floor(&mut self, min: Kib) -> Result<(), Refusal> {
        let min = self.to_reservation(min);
        self.knob(|p| p.set_floor(min))
    }

    /// `hw.balloon.batch`: frames per hypercall.
    pub fn set_batch(&mut self, batch: Pages) -> Result<(), Refusal> {
        self.knob(|p| p.set_batch(batch))
    }

    /// `hw.balloon.hotplug`.
    pub fn set_hotplug(&mut self, on: bool) -> Result<(), Refusal> {
        self.knob(|p| p.set_hotplug(on))
    }

    /// `hw.balloon.unplug`.
    pub fn set_unplug(&mut self, on: bool) {
        let _ = self.knob(|p| {
            p.set_unplug(on);
            Ok(())
        });
    }

    /// `hw.balloon.scrub`: how pages go, not whether a target is
    /// reachable, so it never re-arms.
    pub fn set_scrub(&mut self, on: bool) {
        self.policy.set_scrub(on);
    }

    /// Xen's maximum reservation changed (`xl mem-max`).
    pub fn set_max(&mut self, max: Pages) {
        let _ = self.knob(|p| {
            p.set_max(max);
            Ok(())
        });
    }

    /// The retry knobs; refused when they do not make sense together. A
    /// change re-arms.
    pub fn set_backoff(&mut self, config: BackoffConfig) -> Result<(), Refusal> {
        if !config.is_valid() {
            return Err(Refusal::OutOfRange);
        }
        if config != self.backoff.config() {
            self.backoff.set_config(config);
            self.rearm();
        }
        Ok(())
    }

    /// The next thing to do at `now`, given UVM's free memory.
    pub fn next_action(&mut self, now: Uptime, mem: MemInfo) -> Result<Action, WorkerError> {
        if self.in_flight.is_some() {
            return Err(WorkerError::StepInFlight);
        }
        if self.stopped {
            return Ok(Action::Idle);
        }
        self.drop_unwanted_plug()?;
        // A placement goes back once no frame of it is backed, whatever
        // the back-off or state: it costs no hypercall.
        if let (Some(range), true) = (self.unreserve, self.space.stranded().is_zero()) {
            self.in_flight = Some(InFlight::Unreserve(range));
            return Ok(Action::Unreserve { range });
        }
        if !self.releasing {
            if let State::Cancelled(_) = self.state {
                return Ok(Action::Idle);
            }
        }
        if let Some(until) = self.backoff.waiting_until(now) {
            return Ok(Action::Sleep { until });
        }
        if !self.space.stranded().is_zero() {
            return Ok(self.start_return());
        }
        if self.releasing {
            return Ok(self.release_action());
        }
        if let Some(seg) = self.space.pending() {
            return Ok(self.continue_plug(seg.range));
        }
        let current = self.current();
        let target = self.target();
        let batch = self.policy.batch();
        if current > target {
            let allowed = policy::inflate_allowance(mem, batch);
            if allowed.is_zero() {
                return Ok(self.fall_short(now, WaitReason::LowMemory, None));
            }
            let mut count = current.saturating_sub(target).min(allowed);
            let mut scrub = self.policy.scrub();
            let unscrubbed = self.pod_unscrubbed();
            if !unscrubbed.is_zero() {
                // A batch is all PoD debt (never scrubbed) or none of it.
                count = count.min(unscrubbed);
                scrub = false;
            }
            self.in_flight = Some(InFlight::Inflate(count));
            self.state = State::Inflating;
            return Ok(Action::Inflate {
                count,
                prefer: self.space.inflate_preference(),
                scrub,
            });
        }
        if current < target {
            let need = target.saturating_sub(current);
            if !self.space.ballooned().is_zero() {
                return Ok(self.start_deflate(need.min(batch)));
            }
            if self.growth != Growth::Available {
                // Never plug on a kernel that cannot take it: clip.
                return Ok(self.cancel(CancelReason::Clipped(self.growth)));
            }
            if !self.policy.hotplug() {
                return Ok(self.cancel(CancelReason::HotplugOff));
            }
            // No segment larger than UVM manages now (issue 12 bug 2).
            let limits = PlugLimits {
                max_segment: self.plug_limits.max_segment.min(mem.managed),
                ..self.plug_limits
            };
            // Every segment slot reserved at attach is taken: refused,
            // said in hw.balloon.state, never an allocation.
            if self.space.free_slots() == 0 {
                return Ok(self.cancel(CancelReason::NoSegmentSlot));
            }
            let want = if self.limit.pvh {
                // PVH: xenmem_alloc_pa places the range (kernel-growth.md
                // 5.2), above 4 GiB and clear of RAM and grant frames:
                // only its size is asked for here, bounded by the policy's
                // maximum through `need`.
                let len = need.min(limits.max_segment);
                self.space
                    .span_end()
                    .align_up(limits.align)
                    .and_then(|s| PfnRange::with_len(s, len))
            } else {
                self.space.next_plug(need, limits)
            };
            let Some(want) = want else {
                return Ok(self.cancel(CancelReason::Clipped(self.full())));
            };
            // The kernel prepares (and, PVH, places) the range first.
            self.in_flight = Some(InFlight::Reserve(want));
            self.state = State::Plugging;
            return Ok(Action::Reserve { want });
        }
        if self.policy.unplug() {
            if let Some(unplug) = self.start_unplug() {
                return Ok(unplug);
            }
        }
        self.state = State::Idle;
        Ok(Action::Idle)
    }

    /// The reason growth stops when the kernel has no room left for a
    /// segment (docs/kernel-growth.md section 8).
    fn full(&self) -> Growth {
        if self.limit.pvh {
            Growth::PvhNoRange
        } else {
            Growth::PvP2mFull
        }
    }

    /// The kernel prepared `range` for a new segment: start backing it.
    /// The bitmap grows to cover it here, before anything is backed: no
    /// memory for it (or a range the frame space cannot take) is a plug
    /// that failed, retried with the back-off, and the range goes back.
    fn reserved(&mut self, range: PfnRange) -> Outcome {
        match self.space.begin_plug(range) {
            Ok(()) => {
                self.state = State::Plugging;
                Outcome::Neutral
            }
            Err(e) => {
                self.unreserve = Some(range);
                let errno = if e == SegmentError::NoMemory {
                    Errno::ENOMEM
                } else {
                    Errno::EEXIST
                };
                Outcome::Short(WaitReason::PlugFailed, Some(errno))
            }
        }
    }

    fn cancel(&mut self, why: CancelReason) -> Action {
        // A clipped target is not given up on: it is met as far as it
        // can be.
        if self.state != State::Cancelled(why) && !matches!(why, CancelReason::Clipped(_)) {
            bump(&mut self.stats.gave_up);
        }
        self.state = State::Cancelled(why);
        Action::Idle
    }

    /// A step fell short: schedule the retry or give up.
    fn fall_short(&mut self, now: Uptime, why: WaitReason, error: Option<Errno>) -> Action {
        bump(&mut self.stats.short_steps);
        if let Some(errno) = error {
            self.stats.last_error = Some(LastError {
                errno,
                step: why.step(),
            });
        }
        match self.backoff.shortfall(now) {
            Retry::At(until) => {
                bump(&mut self.stats.retries);
                self.state = State::Waiting(why);
                Action::Sleep { until }
            }
            Retry::GiveUp => self.cancel(CancelReason::RetriesExhausted(why)),
        }
    }

    /// True once the bookkeeping refused a step: the worker does nothing
    /// more until the module is reloaded.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Stops the worker for good with `why` in `hw.balloon.state`.
    fn stop(&mut self, why: CancelReason) {
        self.in_flight = None;
        self.stopped = true;
        self.cancel(why);
    }

    /// Checks, before any frame goes to Xen, that the bookkeeping will
    /// record these frames of the inflate in flight: at most as many as
    /// asked, each populated and appearing once. The frames are held as
    /// checked (not counted as ballooned) until [`Worker::complete`]
    /// records the leading ones Xen took and is given the rest.
    pub fn check_inflate(&mut self, frames: &[Pfn]) -> Result<(), WorkerError> {
        self.within_inflate(Pages(frames.len() as u64))?;
        self.space
            .check_inflated(frames)
            .map_err(WorkerError::Bookkeeping)
    }

    /// As [`Worker::check_inflate`], for runs the driver means to give as
    /// 2 MiB extents.
    pub fn check_inflate_runs(&self, runs: &[PfnRange]) -> Result<(), WorkerError> {
        self.within_inflate(total(runs))?;
        self.space
            .check_inflated_runs(runs)
            .map_err(WorkerError::Bookkeeping)
    }

    /// Whether an inflate is in flight and `n` frames are within what it
    /// asked for.
    fn within_inflate(&self, n: Pages) -> Result<(), WorkerError> {
        match self.in_flight {
            Some(InFlight::Inflate(asked)) if n > asked => Err(WorkerError::MoreThanAsked),
            Some(InFlight::Inflate(_)) => Ok(()),
            Some(_) => Err(WorkerError::Mismatch),
            None => Err(WorkerError::NothingInFlight),
        }
    }

    /// The driver refused the inflate in flight before it took effect
    /// ([`Worker::check_inflate`] failed; the pages went back to UVM):
    /// the worker stops for good with [`CancelReason::FramesRefused`].
    pub fn refuse_inflate(&mut self) {
        self.stop(CancelReason::FramesRefused);
    }

    /// The result of the step in flight, at `now`. A result refused while
    /// a step was in flight (it took effect, but the bookkeeping cannot
    /// record it) stops the worker for good with
    /// [`CancelReason::ResultRefused`]: never retried blindly.
    pub fn complete(&mut self, result: StepResult<'_>, now: Uptime) -> Result<(), WorkerError> {
        let in_flight = self.in_flight.is_some();
        let r = self.complete_step(result, now);
        if r.is_err() && in_flight {
            self.stop(CancelReason::ResultRefused);
        }
        r
    }

    fn complete_step(&mut self, result: StepResult<'_>, now: Uptime) -> Result<(), WorkerError> {
        let step = self.in_flight.take().ok_or(WorkerError::NothingInFlight)?;
        let outcome = match (step, result) {
            (
                InFlight::Inflate(asked),
                StepResult::Inflated {
                    frames,
                    rest,
                    error,
                },
            ) => {
                let got = Pages(frames.len() as u64);
                if got > asked {
                    return Err(WorkerError::MoreThanAsked);
                }
                self.space
                    .record_inflated(frames, rest)
                    .map_err(WorkerError::Bookkeeping)?;
                bump(&mut self.stats.inflate_steps);
                self.stats.pages_inflated = self.stats.pages_inflated.saturating_add(got);
                if let Some(p) = self.pod.as_mut() {
                    p.given = p.given.saturating_add(got);
                }
                short_or_progress(got.is_zero(), WaitReason::ShortInflate, error)
            }
            (InFlight::Inflate(asked), StepResult::InflatedRuns { runs, error }) => {
                let got = total(runs);
                if got > asked {
                    return Err(WorkerError::MoreThanAsked);
                }
                self.space
                    .record_inflated_runs(runs)
                    .map_err(WorkerError::Bookkeeping)?;
                bump(&mut self.stats.inflate_steps);
                self.stats.pages_inflated = self.stats.pages_inflated.saturating_add(got);
                if let Some(p) = self.pod.as_mut() {
                    p.given = p.given.saturating_add(got);
                }
                short_or_progress(got.is_zero(), WaitReason::ShortInflate, error)
            }
            (InFlight::Deflate(from, asked), StepResult::Deflated { done, error }) => {
                if done > asked {
                    return Err(WorkerError::MoreThanAsked);
                }
                self.space
                    .record_deflated_from(from, done)
                    .map_err(WorkerError::Bookkeeping)?;
                bump(&mut self.stats.deflate_steps);
                self.stats.pages_deflated = self.stats.pages_deflated.saturating_add(done);
                short_or_progress(done.is_zero(), WaitReason::ShortDeflate, error)
            }
            (InFlight::Back(frames), StepResult::Backed { done, error }) => {
                if done > frames.len() {
                    self.drop_pending_after_error();
                    return Err(WorkerError::MoreThanAsked);
                }
                self.space
                    .record_backed(frames, done)
                    .map_err(WorkerError::Bookkeeping)?;
                if done.is_zero() || error.is_some() {
                    self.plug_failed(error.unwrap_or(Errno::ENOMEM))?
                } else {
                    Outcome::Neutral
                }
            }
            (InFlight::Reserve(want), StepResult::Reserved(res)) => match res {
                Ok(range) if range.len() == want.len() => self.reserved(range),
                Ok(_) => return Err(WorkerError::Mismatch),
                Err(Errno::ERANGE) => {
                    self.cancel(CancelReason::Clipped(self.full()));
                    Outcome::Neutral
                }
                Err(e) => Outcome::Short(WaitReason::PlugFailed, Some(e)),
            },
            (InFlight::Unreserve(range), StepResult::Unreserved) => {
                if self.unreserve == Some(range) {
                    self.unreserve = None;
                }
                Outcome::Neutral
            }
            (InFlight::Plug(range), StepResult::Plugged(res)) => match res {
                Ok(()) => {
                    self.space
                        .finish_plug(range)
                        .map_err(WorkerError::Bookkeeping)?;
                    bump(&mut self.stats.segments_plugged);
                    Outcome::Progress
                }
                Err(e) => self.plug_failed(e)?,
            },
            (InFlight::Return(frames), StepResult::Returned { done, error }) => {
                let asked = frames.len();
                if done > asked {
                    return Err(WorkerError::MoreThanAsked);
                }
                self.space
                    .record_returned(frames.take_front(done))
                    .map_err(WorkerError::Bookkeeping)?;
                if done < asked || error.is_some() {
                    Outcome::Short(
                        WaitReason::ReturnShort,
                        Some(error.unwrap_or(Errno::EAGAIN)),
                    )
                } else if self.space.stranded().is_zero() {
                    // All back with Xen: now the plug's failure counts.
                    match self.failed_plug.take() {
                        Some(e) => Outcome::Short(WaitReason::PlugFailed, Some(e)),
                        None => Outcome::Neutral,
                    }
                } else {
                    Outcome::Neutral
                }
            }
            (InFlight::Unplug(range), StepResult::Unplugged(res)) => match res {
                Ok(()) => {
                    self.space
                        .record_unplugged(range)
                        .map_err(WorkerError::Bookkeeping)?;
                    bump(&mut self.stats.segments_unplugged);
                    Outcome::Progress
                }
                Err(e) => {
                    self.space.mark_unplug_refused(range);
                    Outcome::Short(WaitReason::UnplugFailed, Some(e))
                }
            },
            (InFlight::Back(_) | InFlight::Plug(_), _) => {
                self.drop_pending_after_error();
                return Err(WorkerError::Mismatch);
            }
            _ => return Err(WorkerError::Mismatch),
        };
        match outcome {
            Outcome::Progress => self.backoff.progress(),
            Outcome::Neutral => {}
            Outcome::Short(why, error) => {
                self.fall_short(now, why, error);
            }
        }
        Ok(())
    }

    /// A plug step's result could not be taken: the segment will not be
    /// plugged, and what it had backed goes back to Xen.
    fn drop_pending_after_error(&mut self) {
        if let Some(seg) = self.space.pending() {
            let _ = self.abandon_pending(seg.range);
        }
    }

    /// The segment being prepared could not be backed or plugged: it is
    /// abandoned. With frames to give back, the failure counts once they
    /// are back; with none, it counts now.
    fn plug_failed(&mut self, error: Errno) -> Result<Outcome, WorkerError> {
        if let Some(seg) = self.space.pending() {
            self.abandon_pending(seg.range)
                .map_err(WorkerError::Bookkeeping)?;
        }
        if self.space.stranded().is_zero() {
            return Ok(Outcome::Short(WaitReason::PlugFailed, Some(error)));
        }
        self.failed_plug = Some(error);
        self.state = State::Returning;
        Ok(Outcome::Neutral)
    }

    /// Checks the invariants of ARCHITECTURE.md that the core can see:
    /// the frame space is consistent, its counts add up, the target lies
    /// within `[floor, max]`, the floor is not under the safe floor, and
    /// a pending segment exists exactly while a plug is in flight.
    pub fn verify(&self) -> Result<(), &'static str> {
        self.space.verify()?;
        let c = self.space.counts();
        if c.populated.saturating_add(c.ballooned) != c.boot.saturating_add(c.plugged) {
            return Err("worker: populated + ballooned != frames of live segments");
        }
        let target = self.target();
        // The floor wins over a maximum below it (Policy::effective).
        if target > self.policy.max().max(self.policy.floor()) || target < self.policy.floor() {
            return Err("worker: target outside [floor, max]");
        }
        if self.policy.floor() < self.policy.safe_floor() {
            return Err("worker: floor below the safe floor");
        }
        let pending = self.space.pending_segment();
        match (pending, &self.in_flight) {
            (Some(p), Some(InFlight::Plug(r))) if p == *r => {}
            (Some(p), Some(InFlight::Back(f))) if p.covers(*f) => {}
            (_, Some(InFlight::Back(_) | InFlight::Plug(_))) => {
                return Err("worker: a plug step in flight for another segment")
            }
            (Some(_), Some(_)) => return Err("worker: another step in flight during a plug"),
            _ => {}
        }
        if pending.is_some() && !self.space.stranded().is_zero() {
            return Err("worker: a plug prepared while frames are stranded");
        }
        if let Some(InFlight::Inflate(n)) = self.in_flight {
            if self.current().saturating_sub(n) < self.policy.floor().min(self.current()) {
                return Err("worker: inflate in flight would go below the floor");
            }
        }
        Ok(())
    }
}

/// Frames in `runs`.
fn total(runs: &[PfnRange]) -> Pages {
    runs.iter()
        .fold(Pages::ZERO, |a, r| a.saturating_add(r.len()))
}

/// A step towards the target: short when it did nothing or reported an
/// error, else progress. A step may do less than asked with no error:
/// the driver takes whole 2 MiB extents only, or at most
/// [`policy::MAX_SINGLE_STEP`] single frames; every shortfall of Xen or
/// UVM comes with an error.
fn short_or_progress(short: bool, why: WaitReason, error: Option<Errno>) -> Outcome {
    if short || error.is_some() {
        Outcome::Short(why, error)
    } else {
        Outcome::Progress
    }
}

#[cfg(test)]
mod tests;
