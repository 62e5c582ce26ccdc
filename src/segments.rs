//! The domain's frame space, segment by segment.
//!
//! UVM knows physical memory as segments (`uvm_physseg`): the ones found
//! at boot and, with `options UVM_HOTPLUG`, ones plugged later. This
//! module keeps the driver's picture of them and of the state of every
//! frame inside (ARCHITECTURE.md, "Invariants"):
//!
//! - **populated**: in a live segment, backed by Xen, owned by UVM (in use
//!   or on a free list);
//! - **ballooned**: in a live segment; the driver holds its `vm_page` and
//!   the frame has been given back to Xen;
//! - **unpopulated**: in a segment the driver is preparing to plug; not
//!   yet known to UVM. Its leading frames may already be backed by Xen:
//!   a plug backs the segment one batch a step before plugging it;
//! - **stranded**: backed by Xen but in no segment, left by a plug that
//!   did not happen; given back to Xen before anything else, and never
//!   reused by a plug while backed;
//! - **absent**: in no segment.
//!
//! Ballooned frames are stored as a bitmap ([`FrameBits`]): one bit per
//! frame of the span, grown fallibly at attach and before a plug is
//! backed, so recording a step never allocates. An inflate batch is
//! checked before its frames go to Xen ([`FrameSpace::check_inflated`]):
//! the check sets the frames' bits and holds the batch, uncounted, until
//! the record after the hypercall, which is held to the same frames and
//! clears only those Xen did not take. A frame costs one bitmap touch,
//! not three (set, clear, set again). Segments are few (each is
//! at least one plug's worth of frames) and sit in a table sorted by first
//! frame whose capacity is reserved, fallibly, at attach
//! ([`PLUG_SLOTS`] beyond the boot segments): adding a segment never
//! allocates, and a full table is a refusal ([`SegmentError::Full`]).
//! Stranded frames are one run (a plug is begun only while none are
//! stranded, and they are given back lowest first), kept inline.
//!
//! Hot-plugged segments always lie above every boot segment (each new one
//! is placed above the highest frame), so "ballooned frames in boot
//! memory first, then plugged segments lowest first" is simply address
//! order; [`FrameSpace::verify`] checks the premise.

use alloc::vec::Vec;

use crate::frameset::FrameBits;
use crate::units::{Pages, Pfn, PfnRange};

/// Where a segment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Found at boot; never unplugged by the driver.
    Boot,
    /// Plugged by the driver with `uvm_physseg_plug`.
    Plugged,
}

/// Where a segment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Chosen and being backed; UVM does not know it yet.
    Pending,
    /// Known to UVM.
    Live,
}

/// One segment of the frame space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its frames.
    pub range: PfnRange,
    /// Boot memory or hot-plugged.
    pub origin: Origin,
    /// Pending or live.
    pub life: Life,
    /// How many of its frames are ballooned (always 0 while pending).
    pub ballooned: Pages,
    /// Pending: how many of its leading frames Xen backs already (the
    /// plug backs them in order). Live: always 0.
    pub backed: Pages,
}

impl Segment {
    /// True when every frame of a live segment is ballooned: the whole
    /// segment may be unplugged.
    pub fn is_fully_ballooned(&self) -> bool {
        self.life == Life::Live && self.ballooned == self.range.len()
    }

    /// Frames of the segment UVM owns.
    pub fn populated(&self) -> Pages {
        match self.life {
            Life::Live => self.range.len().saturating_sub(self.ballooned),
            Life::Pending => Pages::ZERO,
        }
    }
}

/// The state of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameState {
    /// Backed and owned by UVM.
    Populated,
    /// Given to Xen; its `vm_page` is held by the driver.
    Ballooned,
    /// In a segment being prepared for plugging.
    Unpopulated,
    /// Backed by Xen, in no segment: to be given back.
    Stranded,
    /// In no segment.
    Absent,
}

/// Why the frame space refused a change. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// A segment would be empty.
    Empty,
    /// A new segment would overlap an existing one (for UVM, a panic).
    Overlap(PfnRange),
    /// The frame is not in the state the operation needs.
    WrongState(Pfn, FrameState),
    /// The same frame appears twice in one batch.
    Duplicate(Pfn),
    /// No segment with exactly this range and the needed kind and life.
    NoSuchSegment(PfnRange),
    /// The segment still has frames that are not ballooned.
    NotFullyBallooned(PfnRange),
    /// A pending segment is not backed the way the operation needs
    /// (frames backed out of order, or plugged before fully backed).
    NotBacked(PfnRange),
    /// The kernel had no memory for the bookkeeping of a new span.
    NoMemory,
    /// Every segment slot reserved at attach is taken.
    Full,
    /// An inflate's record does not match the batch checked before it
    /// (other frames or another count), or a batch was checked while
    /// another checked one was not yet recorded.
    NotChecked,
}

/// Segments that may be plugged beyond the boot segments: the slots of
/// the segment table reserved at attach. At 128 MiB a segment (the
/// largest plug) that is 32 GiB of growth; an unplug frees its slot.
pub const PLUG_SLOTS: usize = 256;

/// Frames Xen backs that lie in no segment: the backed part of a plug
/// that did not happen. One run at most, since a plug is begun only
/// while nothing is stranded and the run is given back from its start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stranded(Option<PfnRange>);

impl Stranded {
    fn total(&self) -> Pages {
        self.0.map_or(Pages::ZERO, |r| r.len())
    }

    fn contains(&self, pfn: Pfn) -> bool {
        self.0.is_some_and(|r| r.contains(pfn))
    }
}

/// Frame counts by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// Frames owned by UVM.
    pub populated: Pages,
    /// Frames given to Xen.
    pub ballooned: Pages,
    /// Frames of segments being prepared.
    pub unpopulated: Pages,
    /// Frames of the segment being prepared that Xen backs already.
    pub backing: Pages,
    /// Frames Xen backs that lie in no segment, to be given back.
    pub stranded: Pages,
    /// Frames of boot segments.
    pub boot: Pages,
    /// Frames of live plugged segments.
    pub plugged: Pages,
    /// Live plugged segments.
    pub plugged_segments: usize,
}

/// Where the next hot-plugged segment may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlugLimits {
    /// Segments start on a multiple of this many frames.
    pub align: Pages,
    /// The largest segment plugged at once.
    pub max_segment: Pages,
    /// First frame the platform cannot take (PV: the p2m table's
    /// capacity; both: the highest address the guest may use).
    pub frame_limit: Pfn,
    /// No segment starts below this frame: frames under it may be backed
    /// without being in UVM (PV: every frame the boot p2m maps).
    pub floor: Pfn,
    /// Frames no segment may cover (PVH: [0xfc000000, 4 GiB), which holds
    /// ACPI tables, the local APIC and the xenstore and console rings;
    /// Xen would populate over them without complaint).
    pub hole: Option<PfnRange>,
}

/// The domain's frame space and the state of every frame in it. Not
/// `Clone`: a clone's tables would lose the capacity reserved at attach.
#[derive(Debug)]
pub struct FrameSpace {
    /// The segment table: every slot allocated at attach; the first
    /// `count` hold the segments, sorted by first frame. Adding and
    /// removing rotate slots; the Vec never grows after attach, so no
    /// step can reach an allocation through it.
    table: Vec<Segment>,
    /// Per slot: the kernel refused to unplug that segment; it is not
    /// offered again until [`FrameSpace::clear_unplug_refused`].
    refused: Vec<bool>,
    /// Slots in use.
    count: usize,
    ballooned: FrameBits,
    /// The inflate batch [`FrameSpace::check_inflated`] accepted and
    /// [`FrameSpace::record_inflated`] has not recorded yet: its bits
    /// are set already (so each frame costs one bitmap touch, not three)
    /// but it is not counted as ballooned.
    checked: Option<Checked>,
    /// Frames backed by Xen for a plug that did not happen.
    stranded: Stranded,
    /// Frames of all live segments, kept so `populated()` is O(1).
    live: Pages,
}

/// A checked inflate batch: how many frames, and a fingerprint of them
/// (a sum, so that the frames Xen took and those it did not add up to
/// it) that the record is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checked {
    frames: u64,
    print: u64,
}

/// The fingerprint of a set of frames: a wrapping sum of a mixed form of
/// each frame number (order does not matter; splitting a batch in two
/// parts splits the sum).
fn fingerprint(frames: &[Pfn]) -> u64 {
    frames.iter().fold(0u64, |acc, p| {
        let x = (p.0 ^ (p.0 >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        acc.wrapping_add(x ^ (x >> 29))
    })
}

impl FrameSpace {
    /// The frame space of a domain that booted with these segments, all
    /// populated. Refuses empty or overlapping segments. Every allocation
    /// the frame space makes for its segments happens here, fallibly:
    /// [`SegmentError::NoMemory`] when the kernel has none.
    pub fn new(boot: &[PfnRange]) -> Result<FrameSpace, SegmentError> {
        let mut space = FrameSpace {
            table: Vec::new(),
            refused: Vec::new(),
            count: 0,
            ballooned: FrameBits::new(),
            checked: None,
            stranded: Stranded::default(),
            live: Pages::ZERO,
        };
        let slots = boot
            .len()
            .checked_add(PLUG_SLOTS)
            .ok_or(SegmentError::NoMemory)?;
        let blank = Segment {
            range: PfnRange::with_len(Pfn(0), Pages::ZERO).ok_or(SegmentError::Empty)?,
            origin: Origin::Boot,
            life: Life::Live,
            ballooned: Pages::ZERO,
            backed: Pages::ZERO,
        };
        space
            .table
            .try_reserve_exact(slots)
            .map_err(|_| SegmentError::NoMemory)?;
        space
            .refused
            .try_reserve_exact(slots)
            .map_err(|_| SegmentError::NoMemory)?;
        // Within the capacity just reserved: no further allocation.
        space.table.resize(slots, blank);
        space.refused.resize(slots, false);
        // The bitmap fails rather than waits, like everything here.
        let end = boot.iter().map(|r| r.end()).max().unwrap_or_default();
        space
            .ballooned
            .try_cover(end)
            .map_err(|_| SegmentError::NoMemory)?;
        for &range in boot {
            space.add_segment(range, Origin::Boot, Life::Live)?;
        }
        Ok(space)
    }

    fn add_segment(
        &mut self,
        range: PfnRange,
        origin: Origin,
        life: Life,
    ) -> Result<(), SegmentError> {
        if range.is_empty() {
            return Err(SegmentError::Empty);
        }
        if let Some(other) = self.overlapping(range) {
            return Err(SegmentError::Overlap(other.range));
        }
        let at = self.below(range.start().0);
        let n = self.count.checked_add(1).ok_or(SegmentError::Full)?;
        // The slots from `at` to the first free one move up by one
        // (a memmove: no allocation, a small stack frame).
        let (Some(segs), Some(flags)) = (self.table.get_mut(at..n), self.refused.get_mut(at..n))
        else {
            return Err(SegmentError::Full);
        };
        let last = segs.len().saturating_sub(1);
        segs.copy_within(..last, 1);
        flags.copy_within(..last, 1);
        if let (Some(seg), Some(flag)) = (segs.first_mut(), flags.first_mut()) {
            *seg = Segment {
                range,
                origin,
                life,
                ballooned: Pages::ZERO,
                backed: Pages::ZERO,
            };
            *flag = false;
        }
        self.count = n;
        if life == Life::Live {
            self.live = self.live.saturating_add(range.len());
        }
        Ok(())
    }

    /// The segments, lowest first.
    fn segs(&self) -> &[Segment] {
        self.table.get(..self.count).unwrap_or(&[])
    }

    /// How many segments start below frame `pfn`.
    fn below(&self, pfn: u64) -> usize {
        self.segs().partition_point(|s| s.range.start().0 < pfn)
    }

    /// The index of the segment starting at frame `start`.
    fn index_of(&self, start: u64) -> Option<usize> {
        self.segs()
            .binary_search_by_key(&start, |s| s.range.start().0)
            .ok()
    }

    fn get(&self, start: u64) -> Option<&Segment> {
        self.segs().get(self.index_of(start)?)
    }

    fn get_mut(&mut self, start: u64) -> Option<&mut Segment> {
        let i = self.index_of(start)?;
        self.table.get_mut(..self.count)?.get_mut(i)
    }

    /// Removes the segment starting at frame `start` (no allocation).
    fn remove(&mut self, start: u64) {
        let Some(i) = self.index_of(start) else {
            return;
        };
        let n = self.count;
        if let (Some(segs), Some(flags)) = (self.table.get_mut(i..n), self.refused.get_mut(i..n)) {
            segs.copy_within(1.., 0);
            flags.copy_within(1.., 0);
            self.count = n.saturating_sub(1);
        }
    }

    /// Segment slots still free in the table reserved at attach.
    pub fn free_slots(&self) -> usize {
        self.table.len().saturating_sub(self.count)
    }

    /// A segment sharing a frame with `range`, if any.
    fn overlapping(&self, range: PfnRange) -> Option<&Segment> {
        // Only the segment starting below `range.end()` with the highest
        // start, and those starting inside `range`, can overlap.
        let i = self.below(range.end().0).checked_sub(1)?;
        self.segs().get(i).filter(|s| s.range.overlaps(range))
    }

    /// The segment containing `pfn`.
    pub fn segment_of(&self, pfn: Pfn) -> Option<&Segment> {
        let i = self.below(pfn.0.saturating_add(1)).checked_sub(1)?;
        self.segs().get(i).filter(|s| s.range.contains(pfn))
    }

    /// The state of one frame.
    pub fn state(&self, pfn: Pfn) -> FrameState {
        match self.segment_of(pfn) {
            None if self.stranded.contains(pfn) => FrameState::Stranded,
            None => FrameState::Absent,
            Some(s) if s.life == Life::Pending => FrameState::Unpopulated,
            Some(_) if self.ballooned.contains(pfn) => FrameState::Ballooned,
            Some(_) => FrameState::Populated,
        }
    }

    /// All segments, lowest first.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &Segment> + '_ {
        self.segs().iter()
    }

    /// Frames now given to Xen.
    pub fn ballooned(&self) -> Pages {
        self.recorded()
    }

    /// Frames now owned by UVM. O(1).
    pub fn populated(&self) -> Pages {
        self.live.saturating_sub(self.recorded())
    }

    /// The segment being prepared for plugging, if any.
    pub fn pending_segment(&self) -> Option<PfnRange> {
        self.pending().map(|s| s.range)
    }

    /// The segment being prepared for plugging, with how much of it is
    /// backed.
    pub fn pending(&self) -> Option<Segment> {
        self.segs()
            .iter()
            .rev()
            .find(|s| s.life == Life::Pending)
            .copied()
    }

    /// Frames backed by Xen for a plug that did not happen, not yet
    /// given back.
    pub fn stranded(&self) -> Pages {
        self.stranded.total()
    }

    /// Frames Xen backs outside every live segment: the backed part of
    /// the segment being prepared and the stranded frames. They count in
    /// Xen's reservation but UVM does not know them.
    pub fn backed_outside(&self) -> Pages {
        let backing = self.pending().map_or(Pages::ZERO, |s| s.backed);
        self.stranded.total().saturating_add(backing)
    }

    /// Frame counts by state. O(number of segments).
    pub fn counts(&self) -> FrameCounts {
        let mut c = FrameCounts {
            ballooned: self.recorded(),
            ..FrameCounts::default()
        };
        c.stranded = self.stranded.total();
        for s in self.segs() {
            c.populated = c.populated.saturating_add(s.populated());
            match (s.origin, s.life) {
                (_, Life::Pending) => {
                    c.unpopulated = c.unpopulated.saturating_add(s.range.len());
                    c.backing = c.backing.saturating_add(s.backed);
                }
                (Origin::Boot, Life::Live) => c.boot = c.boot.saturating_add(s.range.len()),
                (Origin::Plugged, Life::Live) => {
                    c.plugged = c.plugged.saturating_add(s.range.len());
                    c.plugged_segments += 1;
                }
            }
        }
        c
    }

    /// Runs of ballooned frames (a scan of the bitmap: for figures and
    /// tests).
    pub fn ballooned_runs(&self) -> usize {
        self.ballooned.run_count()
    }

    /// Heap bytes of the ballooned-frame bitmap.
    pub fn bookkeeping_bytes(&self) -> usize {
        self.ballooned.heap_bytes()
    }

    /// Ballooned frames: the bits set, less those of a checked batch
    /// not recorded yet.
    fn recorded(&self) -> Pages {
        let checked = self.checked.map_or(0, |c| c.frames);
        self.ballooned.total().saturating_sub(Pages(checked))
    }

    /// Records frames just given to Xen: `frames` are the leading frames
    /// a decrease hypercall reported done, `rest` the frames of the same
    /// batch it did not take (empty when it took them all). Every frame
    /// must be populated and appear once; otherwise nothing is recorded
    /// and the first offender is named. One bit per frame, any order; no
    /// allocation.
    ///
    /// After [`FrameSpace::check_inflated`] the bits are set already:
    /// `frames` and `rest` together must be the checked batch (the same
    /// count and fingerprint, or [`SegmentError::NotChecked`] and nothing
    /// changes), only the bits of `rest` are cleared, and the bitmap is
    /// not touched for `frames`.
    pub fn record_inflated(&mut self, frames: &[Pfn], rest: &[Pfn]) -> Result<(), SegmentError> {
        match self.checked {
            Some(c) => {
                let n = (frames.len() as u64).saturating_add(rest.len() as u64);
                let print = fingerprint(frames).wrapping_add(fingerprint(rest));
                if n != c.frames || print != c.print {
                    return Err(SegmentError::NotChecked);
                }
                self.ballooned.remove_batch(rest);
                self.checked = None;
            }
            None => self.mark_inflated(frames)?,
        }
        self.count_by_segment(frames);
        Ok(())
    }

    /// Sets the bit of every frame of `frames`, all or nothing: each must
    /// be in a live segment, not ballooned, and appear once; otherwise no
    /// bit is changed and the first offender is named. The per-segment
    /// counts are left alone.
    fn mark_inflated(&mut self, frames: &[Pfn]) -> Result<(), SegmentError> {
        let mut i = 0;
        while let Some(&pfn) = frames.get(i) {
            // A run of the batch's frames in one live segment is set in
            // one call: a tight loop, no segment test per frame.
            let (refused, at) = match self.segment_of(pfn) {
                None => (FrameState::Absent, i),
                Some(s) if s.life == Life::Pending => (FrameState::Unpopulated, i),
                Some(s) => {
                    let range = s.range;
                    let rest = frames.get(i..).unwrap_or(&[]);
                    let n = rest.iter().take_while(|&&p| range.contains(p)).count();
                    match self.ballooned.insert_each(rest.get(..n).unwrap_or(&[])) {
                        Ok(()) => {
                            i += n.max(1);
                            continue;
                        }
                        Err(j) => (FrameState::Ballooned, i + j),
                    }
                }
            };
            self.ballooned.remove_batch(frames.get(..at).unwrap_or(&[]));
            let pfn = frames.get(at).copied().unwrap_or(pfn);
            // Set before this batch, or earlier in this batch.
            return Err(match refused {
                FrameState::Ballooned if !self.ballooned.contains(pfn) => {
                    SegmentError::Duplicate(pfn)
                }
                state => SegmentError::WrongState(pfn, state),
            });
        }
        Ok(())
    }

    /// Adds the frames of `frames` to their segments' ballooned counts,
    /// a run of frames of one segment at a time (one table lookup per
    /// run). Frames in no segment are skipped.
    fn count_by_segment(&mut self, frames: &[Pfn]) {
        let mut i = 0;
        while let Some(&pfn) = frames.get(i) {
            let Some(range) = self.segment_of(pfn).map(|s| s.range) else {
                i += 1;
                continue;
            };
            let rest = frames.get(i..).unwrap_or(&[]);
            let n = rest.iter().take_while(|&&p| range.contains(p)).count();
            i += n.max(1);
            if let Some(seg) = self.get_mut(range.start().0) {
                seg.ballooned = seg.ballooned.saturating_add(Pages(n as u64));
            }
        }
    }

    /// Checks that [`FrameSpace::record_inflated`] will accept `frames`
    /// (or a leading part of them, the rest passed as not taken): every
    /// frame populated and appearing once. The driver asks before any
    /// frame goes to Xen, so that the record after the hypercall cannot
    /// be refused. The frames' bits are set now, all or nothing, and the
    /// batch is held as checked: not counted as ballooned until it is
    /// recorded. No allocation.
    pub fn check_inflated(&mut self, frames: &[Pfn]) -> Result<(), SegmentError> {
        if self.checked.is_some() {
            return Err(SegmentError::NotChecked);
        }
        self.mark_inflated(frames)?;
        self.checked = Some(Checked {
            frames: frames.len() as u64,
            print: fingerprint(frames),
        });
        Ok(())
    }

    /// Checks, changing nothing, that [`FrameSpace::record_inflated_runs`]
    /// would accept `runs`: each inside one live segment, none of its
    /// frames ballooned, no two overlapping. No allocation.
    pub fn check_inflated_runs(&self, runs: &[PfnRange]) -> Result<(), SegmentError> {
        for (i, &r) in runs.iter().enumerate() {
            let seg = self.segment_of(r.start());
            match seg {
                None => return Err(SegmentError::WrongState(r.start(), FrameState::Absent)),
                Some(s) if s.life == Life::Pending => {
                    return Err(SegmentError::WrongState(r.start(), FrameState::Unpopulated))
                }
                Some(s) if r.end() > s.range.end() => {
                    return Err(SegmentError::WrongState(s.range.end(), FrameState::Absent))
                }
                Some(_) => {}
            }
            if !self.ballooned.none_in(r) {
                return Err(SegmentError::Duplicate(r.start()));
            }
            let earlier = runs.get(..i).unwrap_or(&[]);
            if let Some(o) = earlier
                .iter()
                .find(|o| o.start() < r.end() && r.start() < o.end())
            {
                return Err(SegmentError::Duplicate(o.start().max(r.start())));
            }
        }
        Ok(())
    }

    /// Records whole runs given to Xen as 2 MiB extents: as
    /// [`FrameSpace::record_inflated`], a run at a time. Refused, changing
    /// nothing, when [`FrameSpace::check_inflated_runs`] refuses them.
    pub fn record_inflated_runs(&mut self, runs: &[PfnRange]) -> Result<(), SegmentError> {
        self.check_inflated_runs(runs)?;
        for &r in runs {
            self.ballooned
                .insert(r)
                .map_err(|_| SegmentError::Duplicate(r.start()))?;
            let key = self.segment_of(r.start()).map(|s| s.range.start().0);
            if let Some(seg) = key.and_then(|k| self.get_mut(k)) {
                seg.ballooned = seg.ballooned.saturating_add(r.len());
            }
        }
        Ok(())
    }

    /// How many frames of `r` are ballooned.
    pub fn ballooned_in(&self, r: PfnRange) -> Pages {
        self.ballooned.count_in(r)
    }

    /// Chooses up to `max` ballooned frames to take back from Xen: boot
    /// memory first, then plugged segments, lowest frames first. Returns
    /// runs in that order; they total `min(max, ballooned)`.
    pub fn choose_deflate(&self, max: Pages) -> Vec<PfnRange> {
        let mut out = Vec::new();
        let mut left = max;
        for run in self.ballooned.runs() {
            if left.is_zero() {
                break;
            }
            let take = run.take_front(left);
            left = left.saturating_sub(take.len());
            out.push(take);
        }
        out
    }

    /// Where the next deflate starts and how many frames it takes: the
    /// lowest ballooned frame and `min(max, ballooned)`. Boot memory comes
    /// first, then plugged segments, because they lie above it. `None`
    /// when nothing is ballooned. No allocation: the frames are read with
    /// [`FrameSpace::ballooned_from`] as the step goes.
    pub fn deflate_cursor(&self, max: Pages) -> Option<(Pfn, Pages)> {
        let first = self.ballooned.first()?;
        let count = max.min(self.recorded());
        (!count.is_zero()).then_some((first, count))
    }

    /// Ballooned frames at or after `from`, lowest first.
    pub fn ballooned_from(&self, from: Pfn) -> impl Iterator<Item = Pfn> + '_ {
        self.ballooned.iter_from(from)
    }

    /// Records that the first `n` ballooned frames at or after `from` are
    /// backed again and back in UVM. Refused, changing nothing, when
    /// there are fewer. A word of the bitmap at a time; no allocation.
    pub fn record_deflated_from(&mut self, from: Pfn, n: Pages) -> Result<(), SegmentError> {
        if self.ballooned.count_from(from, n) < n {
            return Err(SegmentError::WrongState(from, self.state(from)));
        }
        let mut left = n;
        let count = self.count;
        for seg in self.table.get_mut(..count).unwrap_or(&mut []) {
            if left.is_zero() {
                break;
            }
            if seg.range.end() <= from {
                continue;
            }
            let got =
                self.ballooned
                    .remove_first(from.max(seg.range.start()), seg.range.end(), left);
            seg.ballooned = seg.ballooned.saturating_sub(got);
            left = left.saturating_sub(got);
        }
        Ok(())
    }

    /// Records that these ballooned frames are backed again and back in
    /// UVM. All must be ballooned; otherwise nothing changes.
    pub fn record_deflated(&mut self, runs: &[PfnRange]) -> Result<(), SegmentError> {
        for (i, &r) in runs.iter().enumerate() {
            if let Err(e) = self.ballooned.remove(r) {
                // Put back what this call already removed.
                for &done in &runs[..i] {
                    let _ = self.ballooned.insert(done);
                }
                let pfn = e.pfn();
                return Err(SegmentError::WrongState(pfn, self.state(pfn)));
            }
        }
        for &r in runs {
            self.adjust_ballooned_range(r);
        }
        Ok(())
    }

    /// Takes the frames of `r` off the ballooned counts of the segments
    /// it touches (O(log n + segments touched)).
    fn adjust_ballooned_range(&mut self, r: PfnRange) {
        let n = self.below(r.end().0);
        for seg in self.table.get_mut(..n).unwrap_or(&mut []).iter_mut().rev() {
            if seg.range.end() <= r.start() {
                break;
            }
            let lo = seg.range.start().max(r.start());
            let hi = seg.range.end().min(r.end());
            let n = hi.pages_since(lo).unwrap_or_default();
            seg.ballooned = seg.ballooned.saturating_sub(n);
        }
    }

    /// The newest live plugged segment that still has populated frames:
    /// inflation claims frames there first so plugged memory empties out
    /// and can be unplugged.
    pub fn inflate_preference(&self) -> Option<PfnRange> {
        self.segs()
            .iter()
            .rev()
            .take_while(|s| s.origin == Origin::Plugged)
            .find(|s| s.life == Life::Live && !s.populated().is_zero())
            .map(|s| s.range)
    }

    /// The highest frame of any segment, plus one (0 when there is none).
    pub fn span_end(&self) -> Pfn {
        self.segs()
            .last()
            .map(|s| s.range.end())
            .unwrap_or_default()
    }

    /// Where the next hot-plugged segment of up to `want` frames goes:
    /// above the highest frame, aligned, at most `max_segment` long and
    /// ending at or below `frame_limit`. `None` when no frame fits.
    /// A segment never covers a frame of `hole`: it ends at the hole's
    /// start, and the next one starts above the hole.
    pub fn next_plug(&self, want: Pages, limits: PlugLimits) -> Option<PfnRange> {
        // The hole's frames do not count against the limit.
        let limit = match limits.hole {
            Some(h) if h.start() < limits.frame_limit => limits.frame_limit.checked_add(h.len())?,
            _ => limits.frame_limit,
        };
        let mut start = self.span_end().max(limits.floor).align_up(limits.align)?;
        let mut room = limit.pages_since(start)?;
        if let Some(h) = limits.hole {
            if h.contains(start) {
                start = h.end().align_up(limits.align)?;
                room = limit.pages_since(start)?;
            } else if let Some(below) = h.start().pages_since(start) {
                room = room.min(below);
            }
        }
        let len = want.min(limits.max_segment).min(room);
        if len.is_zero() {
            return None;
        }
        PfnRange::with_len(start, len)
    }

    /// Marks `range` as a segment being prepared, none of it backed yet.
    /// It must not overlap any segment or stranded frame (those are still
    /// backed: a plug there would back them twice), and must lie above
    /// every existing segment. The bitmap is grown to cover it here, the
    /// one allocation of a plug; [`SegmentError::NoMemory`] when it fails.
    pub fn begin_plug(&mut self, range: PfnRange) -> Result<(), SegmentError> {
        if range.start() < self.span_end() {
            if let Some(other) = self.overlapping(range) {
                return Err(SegmentError::Overlap(other.range));
            }
            return Err(SegmentError::Overlap(range));
        }
        // Stranded frames go back before a plug is begun: that keeps them
        // one run, and a plug never backs a frame Xen still backs.
        if let Some(taken) = self.stranded.0 {
            return Err(SegmentError::Overlap(taken));
        }
        if self.free_slots() == 0 {
            return Err(SegmentError::Full);
        }
        self.ballooned
            .try_cover(range.end())
            .map_err(|_| SegmentError::NoMemory)?;
        self.add_segment(range, Origin::Plugged, Life::Pending)
    }

    /// The next frames of the pending segment to back: up to `max` after
    /// those backed already. `None` when it is fully backed or there is
    /// no pending segment.
    pub fn next_backing(&self, max: Pages) -> Option<PfnRange> {
        let s = self.pending()?;
        let left = s.range.len().saturating_sub(s.backed);
        if left.is_zero() || max.is_zero() {
            return None;
        }
        let start = s.range.start().checked_add(s.backed)?;
        PfnRange::with_len(start, left.min(max))
    }

    /// The first `done` frames of `frames` (as [`FrameSpace::next_backing`]
    /// gave them) are backed now.
    pub fn record_backed(&mut self, frames: PfnRange, done: Pages) -> Result<(), SegmentError> {
        let s = self.pending().ok_or(SegmentError::NoSuchSegment(frames))?;
        let next = s.range.start().checked_add(s.backed);
        if next != Some(frames.start()) || !s.range.covers(frames) || done > frames.len() {
            return Err(SegmentError::NotBacked(frames));
        }
        if let Some(seg) = self.get_mut(s.range.start().0) {
            seg.backed = seg.backed.saturating_add(done);
        }
        Ok(())
    }

    fn pending_is(&self, range: PfnRange) -> Result<(), SegmentError> {
        match self.get(range.start().0) {
            Some(s) if s.range == range && s.life == Life::Pending => Ok(()),
            _ => Err(SegmentError::NoSuchSegment(range)),
        }
    }

    /// The pending segment is fully backed and plugged: its frames are
    /// now populated and owned by UVM.
    pub fn finish_plug(&mut self, range: PfnRange) -> Result<(), SegmentError> {
        self.pending_is(range)?;
        if let Some(s) = self.get_mut(range.start().0) {
            if s.backed != s.range.len() {
                return Err(SegmentError::NotBacked(range));
            }
            s.life = Life::Live;
            s.backed = Pages::ZERO;
            self.live = self.live.saturating_add(range.len());
        }
        Ok(())
    }

    /// The pending segment will not be plugged: it goes away, and the
    /// frames Xen backs for it become stranded (to be given back).
    /// Returns how many.
    pub fn abandon_plug(&mut self, range: PfnRange) -> Result<Pages, SegmentError> {
        self.pending_is(range)?;
        let backed = self.get(range.start().0).map_or(Pages::ZERO, |s| s.backed);
        if let Some(part) = PfnRange::with_len(range.start(), backed).filter(|r| !r.is_empty()) {
            // A plug is begun only while nothing is stranded.
            if let Some(other) = self.stranded.0 {
                return Err(SegmentError::Overlap(other));
            }
            self.stranded = Stranded(Some(part));
        }
        self.remove(range.start().0);
        Ok(backed)
    }

    /// Up to `max` stranded frames to give back: the lowest ones, one run.
    pub fn choose_return(&self, max: Pages) -> Option<PfnRange> {
        let take = self.stranded.0?.take_front(max);
        (!take.is_empty()).then_some(take)
    }

    /// Xen took these stranded frames back: they are absent now. They
    /// must be the lowest stranded frames (as [`FrameSpace::choose_return`]
    /// gave them, or a leading part); otherwise nothing changes.
    pub fn record_returned(&mut self, frames: PfnRange) -> Result<(), SegmentError> {
        if frames.is_empty() {
            return Ok(());
        }
        match self.stranded.0 {
            Some(run) if run.start() == frames.start() && run.covers(frames) => {
                self.stranded =
                    Stranded(PfnRange::new(frames.end(), run.end()).filter(|r| !r.is_empty()));
                Ok(())
            }
            _ => Err(SegmentError::WrongState(
                frames.start(),
                self.state(frames.start()),
            )),
        }
    }

    /// Live plugged segments whose every frame is ballooned, newest first.
    pub fn unplug_candidates(&self) -> impl Iterator<Item = PfnRange> + '_ {
        self.segs()
            .iter()
            .rev()
            .filter(|s| s.origin == Origin::Plugged && s.is_fully_ballooned())
            .map(|s| s.range)
    }

    /// Candidates for unplug whose unplug was not refused since the last
    /// [`FrameSpace::clear_unplug_refused`], newest first.
    pub fn unplug_untried(&self) -> impl Iterator<Item = PfnRange> + '_ {
        self.segs()
            .iter()
            .zip(self.refused.get(..self.count).unwrap_or(&[]).iter())
            .rev()
            .filter(|(s, &refused)| {
                !refused && s.origin == Origin::Plugged && s.is_fully_ballooned()
            })
            .map(|(s, _)| s.range)
    }

    /// The kernel refused to unplug the segment `range`: it is not
    /// offered again until [`FrameSpace::clear_unplug_refused`]. A flag in
    /// the slot; no allocation.
    pub fn mark_unplug_refused(&mut self, range: PfnRange) {
        if let Some(i) = self.index_of(range.start().0) {
            if let Some(f) = self.refused.get_mut(i) {
                *f = true;
            }
        }
    }

    /// Offers every refused segment for unplug again.
    pub fn clear_unplug_refused(&mut self) {
        self.refused.iter_mut().for_each(|f| *f = false);
    }

    /// The fully ballooned plugged segment `range` was unplugged: its
    /// `vm_page`s are gone and its frames are absent. The driver must
    /// forget those pages (never `uvm_pagefree` them).
    pub fn record_unplugged(&mut self, range: PfnRange) -> Result<(), SegmentError> {
        match self.get(range.start().0) {
            Some(s) if s.range == range && s.origin == Origin::Plugged && s.life == Life::Live => {
                if !s.is_fully_ballooned() {
                    return Err(SegmentError::NotFullyBallooned(range));
                }
            }
            _ => return Err(SegmentError::NoSuchSegment(range)),
        }
        self.ballooned
            .remove(range)
            .map_err(|_| SegmentError::NotFullyBallooned(range))?;
        self.remove(range.start().0);
        self.live = self.live.saturating_sub(range.len());
        Ok(())
    }

    /// Checks every invariant of the representation (ARCHITECTURE.md):
    /// segments disjoint and non-empty, plugged segments above boot ones,
    /// ballooned frames only in live segments, per-segment counts right,
    /// backed frames only in the pending segment (at most all of it),
    /// stranded frames in no segment.
    pub fn verify(&self) -> Result<(), &'static str> {
        self.ballooned.check()?;
        if self.checked.is_some() {
            return Err("segments: a checked inflate batch is not recorded");
        }
        if let Some(r) = self.stranded.0 {
            if r.is_empty() {
                return Err("segments: empty stranded run");
            }
            if self.overlapping(r).is_some() {
                return Err("segments: stranded frame inside a segment");
            }
        }
        if self.refused.len() != self.table.len() || self.count > self.table.len() {
            return Err("segments: segment table out of step");
        }
        let mut prev_end: Option<Pfn> = None;
        let mut seen_plugged = false;
        let mut sum = Pages::ZERO;
        for s in self.segs() {
            if s.range.is_empty() {
                return Err("segments: empty segment");
            }
            if prev_end.is_some_and(|e| e > s.range.start()) {
                return Err("segments: segments overlap");
            }
            prev_end = Some(s.range.end());
            match s.origin {
                Origin::Plugged => seen_plugged = true,
                Origin::Boot if seen_plugged => {
                    return Err("segments: boot segment above a plugged one")
                }
                Origin::Boot if s.life == Life::Pending => {
                    return Err("segments: pending boot segment")
                }
                Origin::Boot => {}
            }
            let n = self.ballooned.count_in(s.range);
            if n != s.ballooned {
                return Err("segments: per-segment ballooned count is wrong");
            }
            if s.life == Life::Pending && !n.is_zero() {
                return Err("segments: ballooned frame in a pending segment");
            }
            if s.backed > s.range.len() || (s.life == Life::Live && !s.backed.is_zero()) {
                return Err("segments: backed count of a segment is wrong");
            }
            sum = sum.saturating_add(n);
        }
        if sum != self.ballooned.total() {
            return Err("segments: ballooned frame outside every segment");
        }
        let live = self
            .segs()
            .iter()
            .filter(|s| s.life == Life::Live)
            .fold(Pages::ZERO, |a, s| a.saturating_add(s.range.len()));
        if live != self.live {
            return Err("segments: cached live frame count is wrong");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u64, e: u64) -> PfnRange {
        PfnRange::new(Pfn(s), Pfn(e)).unwrap()
    }

    fn back_all(fs: &mut FrameSpace, seg: PfnRange) {
        while let Some(next) = fs.next_backing(Pages(300)) {
            fs.record_backed(next, next.len()).unwrap();
        }
        assert_eq!(fs.pending().map(|s| s.backed), Some(seg.len()));
    }

    #[test]
    fn plugs_end_below_the_hole_and_resume_above_it() {
        let mut fs = FrameSpace::new(&[r(0, 1000)]).unwrap();
        let hole = Some(r(2048, 4096));
        let l = PlugLimits {
            hole,
            ..limits(3000)
        };
        // Ends at the hole; the limit does not count the hole's frames.
        let first = fs.next_plug(Pages(5000), l).unwrap();
        assert_eq!(first, r(1024, 2048));
        fs.begin_plug(first).unwrap();
        back_all(&mut fs, first);
        fs.finish_plug(first).unwrap();
        assert_eq!(fs.next_plug(Pages(5000), l), Some(r(4096, 5048)));
    }

    fn limits(limit: u64) -> PlugLimits {
        PlugLimits {
            align: Pages(512),
            max_segment: Pages(32768),
            frame_limit: Pfn(limit),
            floor: Pfn(0),
            hole: None,
        }
    }

    #[test]
    fn boot_segments_must_not_overlap() {
        assert!(FrameSpace::new(&[r(0, 100), r(200, 300)]).is_ok());
        assert_eq!(
            FrameSpace::new(&[r(0, 100), r(50, 300)]).unwrap_err(),
            SegmentError::Overlap(r(0, 100))
        );
        assert_eq!(
            FrameSpace::new(&[r(5, 5)]).unwrap_err(),
            SegmentError::Empty
        );
    }

    #[test]
    fn inflate_records_only_populated_frames_all_or_nothing() {
        let mut fs = FrameSpace::new(&[r(0, 100)]).unwrap();
        fs.record_inflated(&[Pfn(1), Pfn(2), Pfn(7)], &[]).unwrap();
        assert_eq!(fs.state(Pfn(2)), FrameState::Ballooned);
        assert_eq!(fs.state(Pfn(3)), FrameState::Populated);
        assert_eq!(fs.state(Pfn(100)), FrameState::Absent);
        // A frame already ballooned, one absent, and a duplicate: refused whole.
        assert_eq!(
            fs.record_inflated(&[Pfn(9), Pfn(2)], &[]),
            Err(SegmentError::WrongState(Pfn(2), FrameState::Ballooned))
        );
        assert_eq!(
            fs.record_inflated(&[Pfn(9), Pfn(150)], &[]),
            Err(SegmentError::WrongState(Pfn(150), FrameState::Absent))
        );
        assert_eq!(
            fs.record_inflated(&[Pfn(9), Pfn(9)], &[]),
            Err(SegmentError::Duplicate(Pfn(9)))
        );
        assert_eq!(fs.ballooned(), Pages(3));
        assert_eq!(fs.state(Pfn(9)), FrameState::Populated);
        fs.verify().unwrap();
    }

    #[test]
    fn deflate_prefers_boot_memory_then_lowest_plugged() {
        let mut fs = FrameSpace::new(&[r(0, 1000)]).unwrap();
        let seg = fs.next_plug(Pages(600), limits(1 << 20)).unwrap();
        assert_eq!(seg, r(1024, 1624));
        fs.begin_plug(seg).unwrap();
        assert_eq!(fs.state(Pfn(1024)), FrameState::Unpopulated);
        back_all(&mut fs, seg);
        fs.finish_plug(seg).unwrap();
        fs.record_inflated(&[Pfn(1500), Pfn(1501), Pfn(10), Pfn(11), Pfn(12)], &[])
            .unwrap();
        assert_eq!(fs.choose_deflate(Pages(4)), [r(10, 13), r(1500, 1501)]);
        assert_eq!(
            fs.choose_deflate(Pages(100))
                .iter()
                .map(|x| x.len().0)
                .sum::<u64>(),
            5
        );
        fs.record_deflated(&[r(10, 12)]).unwrap();
        assert_eq!(fs.ballooned(), Pages(3));
        assert!(fs.record_deflated(&[r(12, 13), r(13, 14)]).is_err());
        assert_eq!(
            fs.ballooned(),
            Pages(3),
            "a refused deflate changes nothing"
        );
        fs.verify().unwrap();
    }

    #[test]
    fn plug_goes_above_everything_within_the_limit() {
        let mut fs = FrameSpace::new(&[r(0, 1000)]).unwrap();
        assert_eq!(
            fs.next_plug(Pages(100_000), limits(1 << 20)),
            Some(r(1024, 1024 + 32768))
        );
        assert_eq!(fs.next_plug(Pages(100), limits(1100)), Some(r(1024, 1100)));
        assert_eq!(fs.next_plug(Pages(100), limits(1024)), None);
        assert_eq!(fs.next_plug(Pages(100), limits(10)), None);
        assert_eq!(fs.next_plug(Pages(0), limits(1 << 20)), None);
        let above = PlugLimits {
            floor: Pfn(5000),
            ..limits(1 << 20)
        };
        assert_eq!(fs.next_plug(Pages(10), above), Some(r(5120, 5130)));
        let seg = r(1024, 2048);
        fs.begin_plug(seg).unwrap();
        // The pending segment counts for placement: no overlap possible.
        assert_eq!(fs.next_plug(Pages(1), limits(1 << 20)), Some(r(2048, 2049)));
        assert!(fs.begin_plug(r(1500, 1600)).is_err());
        assert!(fs.begin_plug(r(900, 950)).is_err());
        fs.abandon_plug(seg).unwrap();
        assert_eq!(fs.state(Pfn(1024)), FrameState::Absent);
        assert_eq!(fs.abandon_plug(seg), Err(SegmentError::NoSuchSegment(seg)));
        fs.verify().unwrap();
    }

    #[test]
    fn only_fully_ballooned_plugged_segments_unplug() {
        let mut fs = FrameSpace::new(&[r(0, 512)]).unwrap();
        let seg = r(512, 516);
        fs.begin_plug(seg).unwrap();
        back_all(&mut fs, seg);
        fs.finish_plug(seg).unwrap();
        assert_eq!(fs.inflate_preference(), Some(seg));
        fs.record_inflated(&[Pfn(512), Pfn(513), Pfn(514)], &[])
            .unwrap();
        assert_eq!(fs.unplug_candidates().count(), 0);
        assert_eq!(
            fs.record_unplugged(seg),
            Err(SegmentError::NotFullyBallooned(seg))
        );
        fs.record_inflated(&[Pfn(515)], &[]).unwrap();
        assert_eq!(fs.inflate_preference(), None);
        assert_eq!(fs.unplug_candidates().collect::<Vec<_>>(), [seg]);
        fs.record_unplugged(seg).unwrap();
        assert_eq!(fs.ballooned(), Pages(0));
        assert_eq!(fs.state(Pfn(513)), FrameState::Absent);
        assert_eq!(fs.counts().plugged_segments, 0);
        // Boot segments are never unplug candidates.
        fs.record_inflated(&(0..512).map(Pfn).collect::<Vec<_>>(), &[])
            .unwrap();
        assert_eq!(fs.unplug_candidates().count(), 0);
        assert_eq!(
            fs.record_unplugged(r(0, 512)),
            Err(SegmentError::NoSuchSegment(r(0, 512)))
        );
        fs.verify().unwrap();
    }

    #[test]
    fn a_plug_backs_in_order_and_an_abandoned_one_strands_its_frames() {
        let mut fs = FrameSpace::new(&[r(0, 1024)]).unwrap();
        let seg = r(1024, 2048);
        fs.begin_plug(seg).unwrap();
        assert_eq!(fs.next_backing(Pages(100)), Some(r(1024, 1124)));
        // Out of order, or more than asked: refused, nothing changes.
        assert_eq!(
            fs.record_backed(r(1100, 1200), Pages(100)),
            Err(SegmentError::NotBacked(r(1100, 1200)))
        );
        assert_eq!(
            fs.record_backed(r(1024, 1124), Pages(101)),
            Err(SegmentError::NotBacked(r(1024, 1124)))
        );
        fs.record_backed(r(1024, 1124), Pages(100)).unwrap();
        fs.record_backed(r(1124, 1224), Pages(40)).unwrap();
        assert_eq!(fs.next_backing(Pages(1000)), Some(r(1164, 2048)));
        assert_eq!(fs.backed_outside(), Pages(140));
        assert_eq!(fs.finish_plug(seg), Err(SegmentError::NotBacked(seg)));
        fs.verify().unwrap();
        assert_eq!(fs.abandon_plug(seg), Ok(Pages(140)));
        assert_eq!(fs.pending_segment(), None);
        assert_eq!(fs.stranded(), Pages(140));
        assert_eq!(fs.backed_outside(), Pages(140));
        assert_eq!(fs.state(Pfn(1100)), FrameState::Stranded);
        assert_eq!(fs.state(Pfn(1164)), FrameState::Absent);
        assert_eq!(fs.counts().stranded, Pages(140));
        // Never plugged over while its frames are backed.
        assert_eq!(
            fs.begin_plug(seg),
            Err(SegmentError::Overlap(r(1024, 1164)))
        );
        assert_eq!(fs.choose_return(Pages(100)), Some(r(1024, 1124)));
        assert!(fs.record_returned(r(2000, 2001)).is_err());
        assert!(fs.record_returned(r(1100, 1124)).is_err(), "not the lowest");
        assert!(fs.record_returned(r(1024, 1200)).is_err(), "past the run");
        assert_eq!(
            fs.stranded(),
            Pages(140),
            "a refused return changes nothing"
        );
        fs.record_returned(r(1024, 1124)).unwrap();
        fs.record_returned(fs.choose_return(Pages(100)).unwrap())
            .unwrap();
        assert_eq!(fs.choose_return(Pages(100)), None);
        assert_eq!(fs.stranded(), Pages(0));
        fs.verify().unwrap();
        fs.begin_plug(seg).unwrap();
        fs.verify().unwrap();
    }

    #[test]
    fn counts_add_up() {
        let mut fs = FrameSpace::new(&[r(0, 100), r(256, 356)]).unwrap();
        fs.record_inflated(&[Pfn(0), Pfn(300)], &[]).unwrap();
        fs.begin_plug(r(512, 612)).unwrap();
        let c = fs.counts();
        assert_eq!(c.populated, Pages(198));
        assert_eq!(c.ballooned, Pages(2));
        assert_eq!(c.unpopulated, Pages(100));
        assert_eq!(c.boot, Pages(200));
        assert_eq!(fs.ballooned_runs(), 2);
        assert_eq!(fs.populated(), c.populated);
        assert_eq!(fs.pending_segment(), Some(r(512, 612)));
    }

    #[test]
    fn a_checked_batch_is_held_to_its_frames_and_recorded_in_two_parts() {
        let mut fs = FrameSpace::new(&[r(0, 1024)]).unwrap();
        let batch = [Pfn(5), Pfn(700), Pfn(6), Pfn(9)];
        fs.check_inflated(&batch).unwrap();
        // Held, not counted: the bits are set, the figures unchanged.
        assert_eq!(fs.ballooned(), Pages::ZERO);
        assert_eq!(fs.populated(), Pages(1024));
        assert!(fs.verify().is_err());
        assert_eq!(
            fs.check_inflated(&[Pfn(100)]),
            Err(SegmentError::NotChecked)
        );
        // A record of other frames, or of part of the batch without the
        // rest, is refused and changes nothing.
        let other = [Pfn(6), Pfn(10)];
        assert_eq!(
            fs.record_inflated(&batch[..2], &other),
            Err(SegmentError::NotChecked)
        );
        assert_eq!(
            fs.record_inflated(&batch[..1], &[]),
            Err(SegmentError::NotChecked)
        );
        assert_eq!(fs.ballooned(), Pages::ZERO);
        // Xen took the first two; the other two went back to UVM.
        fs.record_inflated(&batch[..2], &batch[2..]).unwrap();
        fs.verify().unwrap();
        assert_eq!(fs.ballooned(), Pages(2));
        assert_eq!(fs.state(Pfn(700)), FrameState::Ballooned);
        assert_eq!(fs.state(Pfn(6)), FrameState::Populated);
        assert_eq!(fs.state(Pfn(9)), FrameState::Populated);
        // They can be taken again.
        fs.check_inflated(&[Pfn(9), Pfn(6)]).unwrap();
        fs.record_inflated(&[Pfn(9), Pfn(6)], &[]).unwrap();
        fs.verify().unwrap();
        assert_eq!(fs.ballooned(), Pages(4));
        // A refused check sets no bit and holds nothing.
        assert_eq!(
            fs.check_inflated(&[Pfn(1), Pfn(2), Pfn(1)]),
            Err(SegmentError::Duplicate(Pfn(1)))
        );
        fs.verify().unwrap();
        assert_eq!(fs.state(Pfn(2)), FrameState::Populated);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Differential test of the driver's protocol against a plain set
        /// of frames: random batches (duplicates and ballooned frames
        /// included) are checked; an accepted one is split where a
        /// partial hypercall would cut it and recorded; deflates take the
        /// lowest frames. The store and the set agree after every step.
        #[test]
        fn check_and_record_match_a_reference_set(
            steps in proptest::collection::vec(
                (proptest::collection::vec(0u64..600, 0..40), 0usize..41, 0u64..30),
                1..60,
            )
        ) {
            let mut fs = FrameSpace::new(&[r(0, 300), r(300, 600)]).unwrap();
            let mut model = std::collections::BTreeSet::new();
            for (batch, cut, deflate) in steps {
                let frames: Vec<Pfn> = batch.iter().map(|&p| Pfn(p)).collect();
                let mut seen = std::collections::BTreeSet::new();
                let ok = batch.iter().all(|p| !model.contains(p) && seen.insert(*p));
                proptest::prop_assert_eq!(fs.check_inflated(&frames).is_ok(), ok);
                if ok {
                    let cut = cut.min(frames.len());
                    fs.record_inflated(&frames[..cut], &frames[cut..]).unwrap();
                    model.extend(batch[..cut].iter().copied());
                }
                if let Some((from, n)) = fs.deflate_cursor(Pages(deflate)) {
                    let taken: Vec<u64> = fs.ballooned_from(from).take(n.0 as usize).map(|p| p.0).collect();
                    let want: Vec<u64> = model.iter().copied().take(n.0 as usize).collect();
                    proptest::prop_assert_eq!(&taken, &want);
                    fs.record_deflated_from(from, n).unwrap();
                    for p in want { model.remove(&p); }
                }
                fs.verify().map_err(proptest::test_runner::TestCaseError::fail)?;
                proptest::prop_assert_eq!(fs.ballooned().0, model.len() as u64);
                let all: Vec<u64> = fs.ballooned_from(Pfn(0)).map(|p| p.0).collect();
                proptest::prop_assert_eq!(all, model.iter().copied().collect::<Vec<_>>());
            }
        }
    }
}
