// SPDX-License-Identifier: BSD-2-Clause
//! The set of ballooned frames: one bit per frame of the span.
//!
//! Memory is exactly one bit per frame from frame 0 to the highest frame
//! covered (32 KiB per GiB of span), whatever the order frames arrive in:
//! the worst case of every other frame costs what contiguous frames cost.
//! The bitmap is grown, fallibly, only when the span grows (at attach and
//! before a plug is backed), so adding and removing frames never
//! allocates. Every operation is a word-wise scan: a page costs the same
//! in every order and at every size (`cargo bench --bench bookkeeping`).
//!
//! Deflate takes frames lowest first; a cursor (`low`, the lowest word
//! that may hold a set bit) keeps that from rescanning the empty low
//! part of the span each time.
//!
//! Why a plain bitmap (issue 13 goal 2, issue 15): `cargo bench --bench
//! bookkeeping --features bench-roaring` runs three candidates on the
//! same frames. A run/bitmap hybrid (a word per 256 MiB group, a table
//! of 2 MiB chunks for mixed groups, a 64-byte bitmap per mixed chunk)
//! holds tens of bytes per ballooned GiB for contiguous frames, but its
//! storage grows when a chunk turns mixed, so a step allocates (3-37
//! allocations per 8192-frame step in the bench), and issue 15 forbids
//! any allocation in a step: storage may grow only at attach or before a
//! plug is backed. Reserving the hybrid's worst case there is exactly
//! this bitmap's memory (one bit per frame) plus its tables. `roaring`
//! (0.12, `default-features = false`) builds for x86_64-unknown-none with
//! no SIMD or float instruction in its code, but allocates per container
//! on every step (15-2,372 per step), is 17-61 times slower than it in
//! fragmented orders, and needs u32 frame numbers. So the store is this
//! bitmap: no allocation after it is grown, the fastest of the three,
//! and 1 bit per frame of span in every order. The cost is the
//! contiguous case: 64 KiB per ballooned GiB at half the domain, not the
//! 1 KiB issue 13 asks. What would close it without breaking issue 15:
//! keep a mixed chunk's bitmap in one of the pages the step is handling
//! (a frame of the inflate batch kept back, or one just repopulated by a
//! deflate), so that storage comes with the frames rather than from
//! kmem; that needs the shim to map those pages for the core.

use alloc::collections::TryReserveError;
use alloc::vec::Vec;

use crate::units::{Pages, Pfn, PfnRange};

/// Why a change to a frame set was refused. The set is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentError {
    /// Some frame of the range to add is already in the set.
    AlreadyPresent(Pfn),
    /// Some frame of the range to remove is not in the set.
    NotPresent(Pfn),
}

impl ExtentError {
    /// The frame the refusal names.
    pub fn pfn(self) -> Pfn {
        match self {
            ExtentError::AlreadyPresent(p) | ExtentError::NotPresent(p) => p,
        }
    }
}

/// Frames per bitmap word.
const BITS: u64 = 64;

/// A set of frames as a bitmap over `[0, covered)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameBits {
    words: Vec<u64>,
    /// Frames in the set.
    total: u64,
    /// No word below this index has a set bit.
    low: usize,
}

/// The word index and bit mask of the frames of `[lo, hi)` that lie in
/// word `w` (`lo < hi`, both within that word's reach).
fn mask(w: u64, lo: u64, hi: u64) -> u64 {
    let base = w * BITS;
    let from = lo.max(base) - base;
    let to = hi.min(base + BITS) - base;
    let upper = if to >= BITS {
        u64::MAX
    } else {
        (1u64 << to) - 1
    };
    upper & !((1u64 << from) - 1)
}

impl FrameBits {
    /// The empty set, covering no frame.
    pub fn new() -> FrameBits {
        FrameBits::default()
    }

    /// Makes the bitmap cover every frame below `end`; the only call that
    /// allocates, and it fails rather than waits.
    pub fn try_cover(&mut self, end: Pfn) -> Result<(), TryReserveError> {
        let need = usize::try_from(end.0.div_ceil(BITS)).unwrap_or(usize::MAX);
        if need > self.words.len() {
            self.words.try_reserve_exact(need - self.words.len())?;
            self.words.resize(need, 0);
        }
        Ok(())
    }

    /// The first frame not covered.
    pub fn covered(&self) -> Pfn {
        Pfn((self.words.len() as u64).saturating_mul(BITS))
    }

    /// Bytes of heap the bitmap holds.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * core::mem::size_of::<u64>()
    }

    /// Frames in the set.
    pub fn total(&self) -> Pages {
        Pages(self.total)
    }

    /// True when `pfn` is in the set.
    pub fn contains(&self, pfn: Pfn) -> bool {
        let w = usize::try_from(pfn.0 / BITS).unwrap_or(usize::MAX);
        self.words
            .get(w)
            .is_some_and(|&x| x & (1u64 << (pfn.0 % BITS)) != 0)
    }

    /// Word range and masks of `r`, or `None` if `r` is not covered.
    fn words_of(&self, r: PfnRange) -> Option<(u64, u64)> {
        if r.end() > self.covered() {
            return None;
        }
        Some((r.start().0 / BITS, r.end().0.div_ceil(BITS)))
    }

    /// Adds one frame; false (and no change) if it is present already or
    /// not covered.
    pub fn insert_one(&mut self, pfn: Pfn) -> bool {
        let w = usize::try_from(pfn.0 / BITS).unwrap_or(usize::MAX);
        let bit = 1u64 << (pfn.0 % BITS);
        match self.words.get_mut(w) {
            Some(x) if *x & bit == 0 => {
                *x |= bit;
                self.total += 1;
                self.low = self.low.min(w);
                true
            }
            _ => false,
        }
    }

    /// Adds every frame of `frames` (any order), as
    /// [`FrameBits::insert_one`] would one by one; at the first frame
    /// present already or not covered, takes back those this call added
    /// and returns that frame's index.
    pub fn insert_each(&mut self, frames: &[Pfn]) -> Result<(), usize> {
        let mut low = self.low;
        for (i, &pfn) in frames.iter().enumerate() {
            let w = usize::try_from(pfn.0 / BITS).unwrap_or(usize::MAX);
            let bit = 1u64 << (pfn.0 % BITS);
            match self.words.get_mut(w) {
                Some(x) if *x & bit == 0 => {
                    *x |= bit;
                    low = low.min(w);
                }
                _ => {
                    self.total += i as u64;
                    self.low = low;
                    self.remove_batch(frames.get(..i).unwrap_or(&[]));
                    return Err(i);
                }
            }
        }
        self.total += frames.len() as u64;
        self.low = low;
        Ok(())
    }

    /// Removes one frame; false (and no change) if it is absent.
    pub fn remove_one(&mut self, pfn: Pfn) -> bool {
        let w = usize::try_from(pfn.0 / BITS).unwrap_or(usize::MAX);
        let bit = 1u64 << (pfn.0 % BITS);
        match self.words.get_mut(w) {
            Some(x) if *x & bit != 0 => {
                *x &= !bit;
                self.total -= 1;
                self.advance_low();
                true
            }
            _ => false,
        }
    }

    /// Removes frames that [`FrameBits::insert_one`] just added (each
    /// once, all present), moving the cursor once at the end rather than
    /// after each frame.
    pub fn remove_batch(&mut self, frames: &[Pfn]) {
        for &pfn in frames {
            let w = usize::try_from(pfn.0 / BITS).unwrap_or(usize::MAX);
            let bit = 1u64 << (pfn.0 % BITS);
            if let Some(x) = self.words.get_mut(w) {
                if *x & bit != 0 {
                    *x &= !bit;
                    self.total -= 1;
                }
            }
        }
        self.advance_low();
    }

    /// Moves the cursor past empty words.
    fn advance_low(&mut self) {
        while self.words.get(self.low).is_some_and(|&x| x == 0) {
            self.low += 1;
        }
    }

    /// Adds every frame of `r`; refuses (changing nothing) if any is
    /// present or not covered.
    pub fn insert(&mut self, r: PfnRange) -> Result<(), ExtentError> {
        if r.is_empty() {
            return Ok(());
        }
        if let Some(p) = self.first_in(r, true) {
            return Err(ExtentError::AlreadyPresent(p));
        }
        let (a, b) = self
            .words_of(r)
            .ok_or(ExtentError::AlreadyPresent(r.start()))?;
        for w in a..b {
            if let Some(x) = self.words.get_mut(w as usize) {
                *x |= mask(w, r.start().0, r.end().0);
            }
        }
        self.total += r.len().0;
        self.low = self.low.min(a as usize);
        Ok(())
    }

    /// Removes every frame of `r`; refuses (changing nothing) if any is
    /// absent.
    pub fn remove(&mut self, r: PfnRange) -> Result<(), ExtentError> {
        if r.is_empty() {
            return Ok(());
        }
        if let Some(p) = self.first_in(r, false) {
            return Err(ExtentError::NotPresent(p));
        }
        let (a, b) = self.words_of(r).ok_or(ExtentError::NotPresent(r.start()))?;
        for w in a..b {
            if let Some(x) = self.words.get_mut(w as usize) {
                *x &= !mask(w, r.start().0, r.end().0);
            }
        }
        self.total -= r.len().0;
        self.advance_low();
        Ok(())
    }

    /// The first frame of `r` that is present (`present`) or absent
    /// (`!present`); frames not covered count as absent.
    fn first_in(&self, r: PfnRange, present: bool) -> Option<Pfn> {
        let (lo, hi) = (r.start().0, r.end().0);
        let mut w = lo / BITS;
        while w * BITS < hi {
            let m = mask(w, lo, hi);
            let x = match self.words.get(w as usize) {
                Some(&x) => x,
                None if present => return None,
                None => return Some(Pfn(lo.max(w * BITS))),
            };
            let hit = if present { x & m } else { !x & m };
            if hit != 0 {
                return Some(Pfn(w * BITS + u64::from(hit.trailing_zeros())));
            }
            w += 1;
        }
        None
    }

    /// Frames of `r` that are in the set.
    pub fn count_in(&self, r: PfnRange) -> Pages {
        if r.is_empty() {
            return Pages::ZERO;
        }
        let (lo, hi) = (r.start().0, r.end().0.min(self.covered().0));
        let mut n = 0u64;
        let mut w = lo / BITS;
        while w * BITS < hi {
            if let Some(&x) = self.words.get(w as usize) {
                n += u64::from((x & mask(w, lo, hi)).count_ones());
            }
            w += 1;
        }
        Pages(n)
    }

    /// True when `r` has no frame in the set.
    pub fn none_in(&self, r: PfnRange) -> bool {
        r.is_empty() || self.first_in(r, true).is_none()
    }

    /// The lowest run of set frames starting at or after `from`.
    pub fn next_run(&self, from: Pfn) -> Option<PfnRange> {
        let start = self.next_bit(from.0.max(self.low as u64 * BITS), true)?;
        let end = self.next_bit(start, false).unwrap_or(self.covered().0);
        PfnRange::new(Pfn(start), Pfn(end))
    }

    /// The first frame at or after `from` whose bit is `set`.
    fn next_bit(&self, from: u64, set: bool) -> Option<u64> {
        let mut w = from / BITS;
        let mut skip = from % BITS;
        while let Some(&x) = self.words.get(w as usize) {
            let x = if set { x } else { !x };
            let m = x & (u64::MAX << skip);
            if m != 0 {
                return Some(w * BITS + u64::from(m.trailing_zeros()));
            }
            w += 1;
            skip = 0;
        }
        None
    }

    /// The lowest frame in the set.
    pub fn first(&self) -> Option<Pfn> {
        self.next_bit(self.low as u64 * BITS, true).map(Pfn)
    }

    /// Frames in the set at or after `from`, lowest first: a word at a
    /// time, one `trailing_zeros` per frame.
    pub fn iter_from(&self, from: Pfn) -> impl Iterator<Item = Pfn> + '_ {
        let from = from.0.max(self.low as u64 * BITS);
        let mut w = from / BITS;
        let mut word = self
            .words
            .get(w as usize)
            .map_or(0, |&x| x & (u64::MAX << (from % BITS)));
        core::iter::from_fn(move || loop {
            if word != 0 {
                let bit = u64::from(word.trailing_zeros());
                word &= word - 1;
                return Some(Pfn(w * BITS + bit));
            }
            w += 1;
            word = *self.words.get(w as usize)?;
        })
    }

    /// How many frames of the set lie at or after `from`, counting no
    /// further than `enough`.
    pub fn count_from(&self, from: Pfn, enough: Pages) -> Pages {
        let mut n = 0u64;
        let mut w = from.0 / BITS;
        let mut m = u64::MAX << (from.0 % BITS);
        while let Some(&x) = self.words.get(w as usize) {
            n += u64::from((x & m).count_ones());
            if n >= enough.0 {
                return enough;
            }
            m = u64::MAX;
            w += 1;
        }
        Pages(n)
    }

    /// Removes the lowest frames of the set in `[from, end)`, at most
    /// `max` of them, a word at a time; returns how many it removed.
    pub fn remove_first(&mut self, from: Pfn, end: Pfn, max: Pages) -> Pages {
        let (lo, hi) = (from.0, end.0.min(self.covered().0));
        let mut left = max.0;
        let mut w = lo / BITS;
        while left > 0 && w * BITS < hi {
            let m = mask(w, lo, hi);
            if let Some(x) = self.words.get_mut(w as usize) {
                let mut hit = *x & m;
                let c = u64::from(hit.count_ones());
                if c <= left {
                    *x &= !hit;
                    left -= c;
                } else {
                    for _ in 0..left {
                        let low = hit & hit.wrapping_neg();
                        *x &= !low;
                        hit &= !low;
                    }
                    left = 0;
                }
            }
            w += 1;
        }
        let done = max.0 - left;
        self.total -= done;
        self.advance_low();
        Pages(done)
    }

    /// All runs, lowest first.
    pub fn runs(&self) -> impl Iterator<Item = PfnRange> + '_ {
        let mut pos = Pfn(0);
        core::iter::from_fn(move || {
            let r = self.next_run(pos)?;
            pos = r.end();
            Some(r)
        })
    }

    /// Number of maximal runs (a scan of the bitmap: for figures and
    /// tests, not the step path).
    pub fn run_count(&self) -> usize {
        self.runs().count()
    }

    /// Checks the representation: the cached total and the cursor.
    pub fn check(&self) -> Result<(), &'static str> {
        let sum: u64 = self.words.iter().map(|x| u64::from(x.count_ones())).sum();
        if sum != self.total {
            return Err("frameset: cached total is wrong");
        }
        if self.words.iter().take(self.low).any(|&x| x != 0) {
            return Err("frameset: a set bit below the cursor");
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
    fn ranges_across_words() {
        let mut x = FrameBits::new();
        x.try_cover(Pfn(1000)).unwrap();
        x.insert(r(60, 200)).unwrap();
        assert_eq!(x.total(), Pages(140));
        assert_eq!(
            x.insert(r(199, 201)),
            Err(ExtentError::AlreadyPresent(Pfn(199)))
        );
        x.remove(r(64, 128)).unwrap();
        assert_eq!(
            x.runs().collect::<std::vec::Vec<_>>(),
            [r(60, 64), r(128, 200)]
        );
        assert_eq!(x.remove(r(63, 65)), Err(ExtentError::NotPresent(Pfn(64))));
        assert_eq!(x.count_in(r(0, 130)), Pages(6));
        assert_eq!(
            x.insert(r(1000, 1100)),
            Err(ExtentError::AlreadyPresent(Pfn(1000)))
        );
        assert!(!x.insert_one(Pfn(5000)));
        x.check().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Differential test: the bitmap behaves exactly like a plain set
        /// of frames over random range and single-frame operations.
        #[test]
        fn matches_a_reference_set(ops in proptest::collection::vec((0u8..4, 0u64..700, 1u64..150), 1..300)) {
            let mut x = FrameBits::new();
            x.try_cover(Pfn(640)).unwrap();
            let mut model = BTreeSet::new();
            for (op, s, len) in ops {
                let e = s + len;
                let covered = e <= 640;
                match op {
                    0 => {
                        let clear = (s..e).all(|p| !model.contains(&p));
                        prop_assert_eq!(x.insert(r(s, e)).is_ok(), clear && covered);
                        if clear && covered { model.extend(s..e); }
                    }
                    1 => {
                        let full = (s..e).all(|p| model.contains(&p));
                        prop_assert_eq!(x.remove(r(s, e)).is_ok(), full && covered);
                        if full && covered { for p in s..e { model.remove(&p); } }
                    }
                    2 if len % 3 == 0 => {
                        let want: std::vec::Vec<u64> = model.range(s..).copied().collect();
                        prop_assert_eq!(x.count_from(Pfn(s), Pages(len)).0, (want.len() as u64).min(len));
                        let got: std::vec::Vec<u64> = x.iter_from(Pfn(s)).map(|p| p.0).collect();
                        prop_assert_eq!(&got, &want);
                        let end = (s + 2 * len).min(700);
                        let gone: std::vec::Vec<u64> = model.range(s..end).copied().take(len as usize).collect();
                        prop_assert_eq!(x.remove_first(Pfn(s), Pfn(end), Pages(len)).0, gone.len() as u64);
                        for p in gone { model.remove(&p); }
                        prop_assert_eq!(x.first().map(|p| p.0), model.first().copied());
                    }
                    2 => prop_assert_eq!(x.insert_one(Pfn(s)), s < 640 && model.insert(s)),
                    3 if len % 5 == 1 => {
                        // A batch set at once: refused at the first
                        // frame present or repeated, changing nothing.
                        let batch: std::vec::Vec<Pfn> = (s..e.min(640)).step_by(2).chain([Pfn(s).0]).map(Pfn).collect();
                        let before = x.clone();
                        let mut seen = BTreeSet::new();
                        let bad = batch.iter().position(|p| p.0 >= 640 || model.contains(&p.0) || !seen.insert(p.0));
                        match x.insert_each(&batch) {
                            Ok(()) => { prop_assert_eq!(bad, None); model.extend(batch.iter().map(|p| p.0)); }
                            Err(i) => { prop_assert_eq!(bad, Some(i)); prop_assert_eq!(&x.words, &before.words); prop_assert_eq!(x.total, before.total); }
                        }
                    }
                    3 if len % 5 == 0 => {
                        // A tentative batch (what check_inflated does):
                        // added one by one, then taken back together.
                        let batch: std::vec::Vec<Pfn> = (s..e.min(640)).step_by(3).filter(|p| !model.contains(p)).map(Pfn).collect();
                        for &p in &batch { prop_assert!(x.insert_one(p)); }
                        x.remove_batch(&batch);
                    }
                    _ => prop_assert_eq!(x.remove_one(Pfn(s)), model.remove(&s)),
                }
                x.check().map_err(TestCaseError::fail)?;
                prop_assert_eq!(x.total().0, model.len() as u64);
                let expect = (s / 2..s / 2 + 3 * len).filter(|p| model.contains(p)).count() as u64;
                prop_assert_eq!(x.count_in(r(s / 2, s / 2 + 3 * len)).0, expect);
                prop_assert_eq!(x.contains(Pfn(s)), model.contains(&s));
                let runs: std::vec::Vec<u64> = x.runs().flat_map(|r| r.start().0..r.end().0).collect();
                prop_assert_eq!(runs, model.iter().copied().collect::<std::vec::Vec<_>>());
            }
        }
    }
}
