//! A set of frames stored as maximal runs.
//!
//! A 1 TiB domain has 2^28 frames; a set that cost anything per frame
//! would eat the memory the balloon is trying to give back. Frames are
//! kept as disjoint, non-adjacent half-open runs in a B-tree keyed by the
//! run's first frame, so memory is proportional to the number of runs and
//! every range operation is O(log n + k), k being the runs it touches.

use alloc::collections::BTreeMap;
use core::ops::Bound;

use crate::units::{Pages, Pfn, PfnRange};

/// Why a change to an [`Extents`] set was refused. The set is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentError {
    /// Some frame of the range to add is already in the set.
    AlreadyPresent(Pfn),
    /// Some frame of the range to remove is not in the set.
    NotPresent(Pfn),
}

/// Disjoint runs of frames, coalesced: no two runs touch or overlap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extents {
    /// first frame of a run -> first frame past it.
    runs: BTreeMap<u64, u64>,
    /// Frames in all runs, kept so counting is O(1).
    total: u64,
}

impl Extents {
    /// The empty set.
    pub fn new() -> Extents {
        Extents::default()
    }

    /// Frames in the set.
    pub fn total(&self) -> Pages {
        Pages(self.total)
    }

    /// Number of maximal runs: what the set's memory is proportional to.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// True when the set has no frame.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The run that contains `pfn`, if any.
    fn run_containing(&self, pfn: u64) -> Option<(u64, u64)> {
        let (&s, &e) = self.runs.range(..=pfn).next_back()?;
        (pfn < e).then_some((s, e))
    }

    /// True when `pfn` is in the set.
    pub fn contains(&self, pfn: Pfn) -> bool {
        self.run_containing(pfn.0).is_some()
    }

    /// Runs that share a frame with `r`, clipped to it, lowest first.
    pub fn clipped(&self, r: PfnRange) -> impl Iterator<Item = PfnRange> + '_ {
        let (lo, hi) = (r.start().0, r.end().0);
        // The run starting at or below `lo` may reach into the range.
        let first = self
            .runs
            .range(..=lo)
            .next_back()
            .filter(|(_, &e)| e > lo)
            .map(|(&s, _)| s)
            .unwrap_or(lo);
        self.runs
            .range((Bound::Included(first), Bound::Excluded(hi)))
            .filter_map(move |(&s, &e)| PfnRange::new(Pfn(s.max(lo)), Pfn(e.min(hi))))
            .filter(|c| !c.is_empty())
    }

    /// Frames of `r` that are in the set.
    pub fn count_in(&self, r: PfnRange) -> Pages {
        Pages(self.clipped(r).map(|c| c.len().0).sum())
    }

    /// True when every frame of `r` is in the set.
    pub fn covers(&self, r: PfnRange) -> bool {
        r.is_empty()
            || self
                .run_containing(r.start().0)
                .is_some_and(|(_, e)| e >= r.end().0)
    }

    /// The first frame of `r` that is in the set, if any.
    fn first_present(&self, r: PfnRange) -> Option<Pfn> {
        self.clipped(r).next().map(|c| c.start())
    }

    /// The first frame of `r` that is not in the set, if any.
    fn first_absent(&self, r: PfnRange) -> Option<Pfn> {
        if r.is_empty() {
            return None;
        }
        match self.run_containing(r.start().0) {
            None => Some(r.start()),
            Some((_, e)) => (e < r.end().0).then_some(Pfn(e)),
        }
    }

    /// Adds every frame of `r`; refuses if any is already present.
    pub fn insert(&mut self, r: PfnRange) -> Result<(), ExtentError> {
        if r.is_empty() {
            return Ok(());
        }
        if let Some(p) = self.first_present(r) {
            return Err(ExtentError::AlreadyPresent(p));
        }
        let (mut s, mut e) = (r.start().0, r.end().0);
        // Merge with a run ending exactly at s.
        if let Some((&ps, &pe)) = self.runs.range(..s).next_back() {
            if pe == s {
                self.runs.remove(&ps);
                s = ps;
            }
        }
        // Merge with a run starting exactly at e.
        if let Some(ne) = self.runs.remove(&e) {
            e = ne;
        }
        self.runs.insert(s, e);
        self.total += r.len().0;
        Ok(())
    }

    /// Removes every frame of `r`; refuses if any is absent.
    pub fn remove(&mut self, r: PfnRange) -> Result<(), ExtentError> {
        if r.is_empty() {
            return Ok(());
        }
        if let Some(p) = self.first_absent(r) {
            return Err(ExtentError::NotPresent(p));
        }
        // `r` lies inside one run because runs are maximal.
        let Some((s, e)) = self.run_containing(r.start().0) else {
            return Err(ExtentError::NotPresent(r.start()));
        };
        self.runs.remove(&s);
        if s < r.start().0 {
            self.runs.insert(s, r.start().0);
        }
        if r.end().0 < e {
            self.runs.insert(r.end().0, e);
        }
        self.total -= r.len().0;
        Ok(())
    }

    /// Removes whatever frames of `r` are present and returns how many.
    pub fn remove_all_in(&mut self, r: PfnRange) -> Pages {
        let pieces: alloc::vec::Vec<PfnRange> = self.clipped(r).collect();
        let mut n = Pages::ZERO;
        for p in pieces {
            if self.remove(p).is_ok() {
                n = n.saturating_add(p.len());
            }
        }
        n
    }

    /// All runs, lowest first.
    pub fn runs(&self) -> impl Iterator<Item = PfnRange> + '_ {
        self.runs
            .iter()
            .filter_map(|(&s, &e)| PfnRange::new(Pfn(s), Pfn(e)))
    }

    /// Checks the representation: runs non-empty, disjoint, not
    /// touching, and the cached total right. For `verify()` and tests.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut prev_end: Option<u64> = None;
        let mut sum: u64 = 0;
        for (&s, &e) in &self.runs {
            if s >= e {
                return Err("extents: empty or inverted run");
            }
            if prev_end.is_some_and(|pe| pe >= s) {
                return Err("extents: runs overlap or touch");
            }
            prev_end = Some(e);
            sum += e - s;
        }
        if sum != self.total {
            return Err("extents: cached total is wrong");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn r(s: u64, e: u64) -> PfnRange {
        PfnRange::new(Pfn(s), Pfn(e)).unwrap()
    }

    #[test]
    fn insert_coalesces_neighbours() {
        let mut x = Extents::new();
        x.insert(r(0, 4)).unwrap();
        x.insert(r(8, 12)).unwrap();
        assert_eq!(x.run_count(), 2);
        x.insert(r(4, 8)).unwrap();
        assert_eq!(x.run_count(), 1);
        assert_eq!(x.total(), Pages(12));
        assert_eq!(
            x.insert(r(11, 13)),
            Err(ExtentError::AlreadyPresent(Pfn(11)))
        );
        assert_eq!(x.total(), Pages(12));
        x.check().unwrap();
    }

    #[test]
    fn remove_splits_and_refuses_absent() {
        let mut x = Extents::new();
        x.insert(r(0, 10)).unwrap();
        x.remove(r(3, 5)).unwrap();
        assert_eq!(x.runs().collect::<std::vec::Vec<_>>(), [r(0, 3), r(5, 10)]);
        assert_eq!(x.remove(r(2, 6)), Err(ExtentError::NotPresent(Pfn(3))));
        assert_eq!(x.total(), Pages(8));
        assert_eq!(x.count_in(r(2, 7)), Pages(3));
        assert!(x.covers(r(5, 10)) && !x.covers(r(2, 6)));
        assert_eq!(x.remove_all_in(r(0, 100)), Pages(8));
        assert!(x.is_empty());
        x.check().unwrap();
    }

    #[test]
    fn clipped_reports_runs_cut_to_the_range() {
        let mut x = Extents::new();
        x.insert(r(0, 10)).unwrap();
        x.insert(r(20, 30)).unwrap();
        let got: std::vec::Vec<_> = x.clipped(r(5, 25)).collect();
        assert_eq!(got, [r(5, 10), r(20, 25)]);
        assert_eq!(x.clipped(r(10, 20)).count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The run set behaves exactly like a set of frames.
        #[test]
        fn matches_a_plain_set(ops in proptest::collection::vec((any::<bool>(), 0u64..200, 1u64..20), 1..200)) {
            let mut x = Extents::new();
            let mut model = BTreeSet::new();
            for (add, s, len) in ops {
                let range = r(s, s + len);
                let present = (s..s + len).filter(|p| model.contains(p)).count() as u64;
                if add {
                    let res = x.insert(range);
                    prop_assert_eq!(res.is_ok(), present == 0);
                    if present == 0 { model.extend(s..s + len); }
                } else {
                    let res = x.remove(range);
                    prop_assert_eq!(res.is_ok(), present == len);
                    if present == len { for p in s..s + len { model.remove(&p); } }
                }
                x.check().map_err(TestCaseError::fail)?;
                prop_assert_eq!(x.total().0, model.len() as u64);
                let q = r(s / 2, s / 2 + 3 * len);
                let expect = (q.start().0..q.end().0).filter(|p| model.contains(p)).count() as u64;
                prop_assert_eq!(x.count_in(q).0, expect);
            }
        }
    }
}
