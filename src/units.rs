//! Units of memory the driver talks in, each its own type.
//!
//! Xen counts extents (pages), the toolstack writes KiB, UVM hands out
//! page frame numbers and the hypercalls want machine frame numbers.
//! Mixing any two of them is the classic balloon bug (a target in KiB
//! compared with a count of pages is off by a factor of four), so each is
//! a distinct type and every conversion is a named method that says which
//! way it rounds and what happens on overflow.

use core::fmt;

/// log2 of the page size: 4 KiB pages on NetBSD/amd64 and in Xen's ABI.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes in one page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// KiB in one page.
pub const KIB_PER_PAGE: u64 = PAGE_SIZE / 1024;

/// A number of pages (4 KiB each): what Xen's reservation calls counts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pages(pub u64);

/// A size in KiB: what xenstore `memory/target` and `hw.balloon.*` hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kib(pub u64);

/// A size in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

/// A guest page frame number: the pseudo-physical frame UVM knows
/// (`atop(VM_PAGE_TO_PHYS(pg))`), the unit of `uvm_physseg_plug`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pfn(pub u64);

/// A machine frame number: the host frame behind a [`Pfn`] in a PV
/// guest. PVH guests never see one; their hypercalls take `Pfn`s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mfn(pub u64);

impl Pages {
    /// No pages.
    pub const ZERO: Pages = Pages(0);

    /// The size of these pages in KiB, or `None` if it does not fit in
    /// 64 bits (only for counts beyond 2^62 pages, which no domain has).
    pub fn checked_kib(self) -> Option<Kib> {
        self.0.checked_mul(KIB_PER_PAGE).map(Kib)
    }

    /// The size in KiB, saturating at `u64::MAX` KiB. For reporting
    /// only, where a saturated figure is still the truth to a human.
    pub fn saturating_kib(self) -> Kib {
        Kib(self.0.saturating_mul(KIB_PER_PAGE))
    }

    /// The size in bytes, or `None` when it does not fit in 64 bits.
    pub fn checked_bytes(self) -> Option<Bytes> {
        self.0.checked_mul(PAGE_SIZE).map(Bytes)
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Pages) -> Option<Pages> {
        self.0.checked_add(other.0).map(Pages)
    }

    /// `self + other`, saturating: for figures that only grow a report.
    pub fn saturating_add(self, other: Pages) -> Pages {
        Pages(self.0.saturating_add(other.0))
    }

    /// `self - other`, clamped at zero: "how many more are needed".
    pub fn saturating_sub(self, other: Pages) -> Pages {
        Pages(self.0.saturating_sub(other.0))
    }

    /// `self - other`, or `None` when `other` is larger.
    pub fn checked_sub(self, other: Pages) -> Option<Pages> {
        self.0.checked_sub(other.0).map(Pages)
    }

    /// The smaller of two counts.
    pub fn min(self, other: Pages) -> Pages {
        Pages(self.0.min(other.0))
    }

    /// The larger of two counts.
    pub fn max(self, other: Pages) -> Pages {
        Pages(self.0.max(other.0))
    }

    /// True for zero pages.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl Kib {
    /// Whole pages in this many KiB, rounding down: a target never asks
    /// for a page the toolstack did not fully grant.
    pub fn pages_floor(self) -> Pages {
        Pages(self.0 / KIB_PER_PAGE)
    }

    /// Pages needed to hold this many KiB, rounding up: a floor is never
    /// weakened by rounding.
    pub fn pages_ceil(self) -> Pages {
        Pages(self.0.div_ceil(KIB_PER_PAGE))
    }
}

impl Bytes {
    /// Whole pages in this many bytes, rounding down.
    pub fn pages_floor(self) -> Pages {
        Pages(self.0 >> PAGE_SHIFT)
    }

    /// Pages needed to hold this many bytes, rounding up.
    pub fn pages_ceil(self) -> Pages {
        Pages(self.0.div_ceil(PAGE_SIZE))
    }

    /// KiB in this many bytes, rounding down.
    pub fn kib_floor(self) -> Kib {
        Kib(self.0 / 1024)
    }
}

impl Pfn {
    /// The frame `n` pages above this one, or `None` past the top of the
    /// frame space.
    pub fn checked_add(self, n: Pages) -> Option<Pfn> {
        self.0.checked_add(n.0).map(Pfn)
    }

    /// Pages from `lower` up to (not including) this frame, or `None`
    /// when `lower` is above it.
    pub fn pages_since(self, lower: Pfn) -> Option<Pages> {
        self.0.checked_sub(lower.0).map(Pages)
    }

    /// The lowest frame at or above this one that is a multiple of
    /// `align` pages (`align` of zero or one means no alignment), or
    /// `None` past the top of the frame space.
    pub fn align_up(self, align: Pages) -> Option<Pfn> {
        if align.0 <= 1 {
            return Some(self);
        }
        let rem = self.0 % align.0;
        if rem == 0 {
            Some(self)
        } else {
            self.0.checked_add(align.0 - rem).map(Pfn)
        }
    }

    /// The physical byte address of this frame, or `None` when it does
    /// not fit in 64 bits.
    pub fn checked_addr(self) -> Option<u64> {
        self.0.checked_mul(PAGE_SIZE)
    }
}

/// A half-open run of frames `[start, end)`: the unit in which segments
/// are plugged and ballooned frames are remembered.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PfnRange {
    start: Pfn,
    end: Pfn,
}

impl PfnRange {
    /// The frames from `start` up to, not including, `end`; `None` when
    /// `end` is below `start`. An empty range (`start == end`) is allowed.
    pub fn new(start: Pfn, end: Pfn) -> Option<PfnRange> {
        (start <= end).then_some(PfnRange { start, end })
    }

    /// `len` frames from `start`, or `None` past the top of the frame space.
    pub fn with_len(start: Pfn, len: Pages) -> Option<PfnRange> {
        start.checked_add(len).map(|end| PfnRange { start, end })
    }

    /// The one frame `pfn`, or `None` when it is the very last frame
    /// number (which has no exclusive end).
    pub fn single(pfn: Pfn) -> Option<PfnRange> {
        PfnRange::with_len(pfn, Pages(1))
    }

    /// First frame of the range.
    pub fn start(self) -> Pfn {
        self.start
    }

    /// First frame past the range.
    pub fn end(self) -> Pfn {
        self.end
    }

    /// Number of frames in the range.
    pub fn len(self) -> Pages {
        Pages(self.end.0 - self.start.0)
    }

    /// True when the range holds no frame.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// True when `pfn` lies in the range.
    pub fn contains(self, pfn: Pfn) -> bool {
        self.start <= pfn && pfn < self.end
    }

    /// True when every frame of `other` lies in this range.
    pub fn covers(self, other: PfnRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// True when the two ranges share at least one frame.
    pub fn overlaps(self, other: PfnRange) -> bool {
        self.start < other.end && other.start < self.end && !self.is_empty() && !other.is_empty()
    }

    /// The first `n` frames of the range (all of it when shorter).
    pub fn take_front(self, n: Pages) -> PfnRange {
        let len = self.len().min(n);
        PfnRange {
            start: self.start,
            end: Pfn(self.start.0 + len.0),
        }
    }

    /// The frames of the range one by one, lowest first.
    pub fn frames(self) -> impl Iterator<Item = Pfn> {
        (self.start.0..self.end.0).map(Pfn)
    }
}

impl fmt::Debug for PfnRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end.0)
    }
}

impl fmt::Display for Pages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pages", self.0)
    }
}

impl fmt::Display for Kib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} KiB", self.0)
    }
}

/// A span of time in milliseconds: back-off delays and retry knobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

/// A point on the kernel's monotonic clock, in milliseconds since boot
/// (the shim reads `getmicrouptime(9)`). The core has no clock of its
/// own: every decision that depends on time is given one of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uptime(pub u64);

impl Uptime {
    /// The time `d` later, saturating at the end of time.
    pub fn after(self, d: Millis) -> Uptime {
        Uptime(self.0.saturating_add(d.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kib_to_pages_rounds_as_documented() {
        assert_eq!(Kib(0).pages_floor(), Pages(0));
        assert_eq!(Kib(3).pages_floor(), Pages(0));
        assert_eq!(Kib(3).pages_ceil(), Pages(1));
        assert_eq!(Kib(4).pages_floor(), Pages(1));
        assert_eq!(Kib(4).pages_ceil(), Pages(1));
        assert_eq!(Kib(1_048_576).pages_floor(), Pages(262_144));
        assert_eq!(Kib(u64::MAX).pages_ceil(), Pages(u64::MAX / 4 + 1));
    }

    #[test]
    fn pages_to_kib_refuses_overflow() {
        assert_eq!(Pages(262_144).checked_kib(), Some(Kib(1_048_576)));
        assert_eq!(Pages(u64::MAX / 4 + 1).checked_kib(), None);
        assert_eq!(Pages(u64::MAX).saturating_kib(), Kib(u64::MAX));
        assert_eq!(Pages(1 << 52).checked_bytes(), None);
        assert_eq!(Pages(3).checked_bytes(), Some(Bytes(12288)));
    }

    #[test]
    fn bytes_round_both_ways() {
        assert_eq!(Bytes(4095).pages_floor(), Pages(0));
        assert_eq!(Bytes(4095).pages_ceil(), Pages(1));
        assert_eq!(Bytes(8192).pages_ceil(), Pages(2));
        assert_eq!(Bytes(2047).kib_floor(), Kib(1));
    }

    #[test]
    fn alignment_and_ranges() {
        assert_eq!(Pfn(0).align_up(Pages(512)), Some(Pfn(0)));
        assert_eq!(Pfn(1).align_up(Pages(512)), Some(Pfn(512)));
        assert_eq!(Pfn(513).align_up(Pages(0)), Some(Pfn(513)));
        assert_eq!(Pfn(u64::MAX).align_up(Pages(2)), None);
        let r = PfnRange::with_len(Pfn(10), Pages(5)).unwrap();
        assert_eq!(r.len(), Pages(5));
        assert!(r.contains(Pfn(14)) && !r.contains(Pfn(15)));
        assert_eq!(
            r.take_front(Pages(2)),
            PfnRange::new(Pfn(10), Pfn(12)).unwrap()
        );
        assert_eq!(r.take_front(Pages(99)), r);
        assert!(PfnRange::new(Pfn(3), Pfn(2)).is_none());
        assert!(PfnRange::single(Pfn(u64::MAX)).is_none());
        let s = PfnRange::new(Pfn(14), Pfn(20)).unwrap();
        assert!(r.overlaps(s) && !r.covers(s));
        let empty = PfnRange::new(Pfn(12), Pfn(12)).unwrap();
        assert!(!r.overlaps(empty) && r.covers(empty));
        assert_eq!(r.frames().count(), 5);
    }
}
