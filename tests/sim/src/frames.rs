// SPDX-License-Identifier: BSD-2-Clause
//! Sparse frame state for the simulator (issue 13 goal 5).
//!
//! The simulated domain used to keep a hash-map or B-tree entry per frame
//! (free list, owned MFNs, populated gfns, contents): about 110 bytes per
//! page, so a whole-stack run stopped near 16 GiB. These types keep one
//! bit per frame of span instead, in chunks of `CHUNK_FRAMES` frames that
//! exist only while one of their frames is set, and 8 bytes per frame
//! only where a value must be kept (the m2p of the MFNs a PV domain owns).
//!
//! - `FrameBits`: a set of frame numbers (free list, populated gfns, PoD
//!   entries, frames holding data, kernel pages).
//! - `FrameTable`: frame number -> u64 (MFN -> m2p entry).
//! - `FrameStack`: a set with last-in first-out order, kept as runs (the
//!   kernel's pages, which it frees most recent first).

/// Frames per chunk: 4 KiB of bits.
const CHUNK_SHIFT: u32 = 15;
pub(crate) const CHUNK_FRAMES: u64 = 1 << CHUNK_SHIFT;
const WORDS: usize = (CHUNK_FRAMES / 64) as usize;
const SUMMARY: usize = WORDS / 64;
/// Frame numbers the sets take: below 2^36 (256 TiB of 4 KiB frames),
/// so that the chunk index stays a small vector.
pub(crate) const FRAME_LIMIT: u64 = 1 << 36;

/// One chunk: its bits, a bit per non-zero word, and its population.
struct Chunk {
    count: u32,
    summary: [u64; SUMMARY],
    words: [u64; WORDS],
}

impl Chunk {
    fn new() -> Box<Chunk> {
        Box::new(Chunk {
            count: 0,
            summary: [0; SUMMARY],
            words: [0; WORDS],
        })
    }

    /// Sets the bits of `mask` in word `w`; returns how many were clear.
    fn set(&mut self, w: usize, mask: u64) -> u32 {
        let new = (mask & !self.words[w]).count_ones();
        self.words[w] |= mask;
        if self.words[w] != 0 {
            self.summary[w / 64] |= 1 << (w % 64);
        }
        self.count += new;
        new
    }

    /// Clears the bits of `mask` in word `w`; returns how many were set.
    fn clear(&mut self, w: usize, mask: u64) -> u32 {
        let gone = (mask & self.words[w]).count_ones();
        self.words[w] &= !mask;
        if self.words[w] == 0 {
            self.summary[w / 64] &= !(1 << (w % 64));
        }
        self.count -= gone;
        gone
    }

    /// The highest set bit at or below `bit`.
    fn last_at_or_below(&self, bit: usize) -> Option<usize> {
        let w = bit / 64;
        let m = self.words[w] & mask_upto(bit % 64);
        if m != 0 {
            return Some(w * 64 + 63 - m.leading_zeros() as usize);
        }
        let w = highest_below(&self.summary, w)?;
        Some(w * 64 + 63 - self.words[w].leading_zeros() as usize)
    }

    /// The lowest set bit at or above `bit`.
    fn first_at_or_above(&self, bit: usize) -> Option<usize> {
        let w = bit / 64;
        let m = self.words[w] & !mask_below(bit % 64);
        if m != 0 {
            return Some(w * 64 + m.trailing_zeros() as usize);
        }
        let w = lowest_above(&self.summary, w)?;
        Some(w * 64 + self.words[w].trailing_zeros() as usize)
    }
}

/// Bits 0..=b.
fn mask_upto(b: usize) -> u64 {
    if b >= 63 {
        !0
    } else {
        (1u64 << (b + 1)) - 1
    }
}

/// Bits 0..b.
fn mask_below(b: usize) -> u64 {
    if b == 0 {
        0
    } else {
        mask_upto(b - 1)
    }
}

/// The highest index below `i` whose bit is set in the bitmap `v`.
fn highest_below(v: &[u64], i: usize) -> Option<usize> {
    if i == 0 {
        return None;
    }
    let i = i - 1;
    let mut w = i / 64;
    let mut m = v.get(w)? & mask_upto(i % 64);
    loop {
        if m != 0 {
            return Some(w * 64 + 63 - m.leading_zeros() as usize);
        }
        w = w.checked_sub(1)?;
        m = v[w];
    }
}

/// The lowest index above `i` whose bit is set in the bitmap `v`.
fn lowest_above(v: &[u64], i: usize) -> Option<usize> {
    let i = i + 1;
    let mut w = i / 64;
    let mut m = v.get(w)? & !mask_below(i % 64);
    loop {
        if m != 0 {
            return Some(w * 64 + m.trailing_zeros() as usize);
        }
        w += 1;
        m = *v.get(w)?;
    }
}

/// A set of frame numbers: a bit per frame, in chunks that exist only
/// while one of their bits is set.
#[derive(Default)]
pub(crate) struct FrameBits {
    chunks: Vec<Option<Box<Chunk>>>,
    /// A bit per chunk that exists.
    live: Vec<u64>,
    len: u64,
}

impl FrameBits {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn contains(&self, f: u64) -> bool {
        let (c, b) = split(f);
        match self.chunks.get(c) {
            Some(Some(ch)) => ch.words[b / 64] & (1 << (b % 64)) != 0,
            _ => false,
        }
    }

    /// Chunk `c`, made if need be. Panics past `FRAME_LIMIT`, a frame
    /// number no simulated domain has.
    fn chunk_mut(&mut self, c: usize) -> &mut Chunk {
        assert!(
            (c as u64) < FRAME_LIMIT >> CHUNK_SHIFT,
            "simulator: a frame number in chunk {c:#x}, past the model's limit"
        );
        if c >= self.chunks.len() {
            self.chunks.resize_with(c + 1, || None);
            self.live.resize(self.chunks.len().div_ceil(64), 0);
        }
        self.live[c / 64] |= 1 << (c % 64);
        self.chunks[c].get_or_insert_with(Chunk::new)
    }

    /// Drops chunk `c` if it holds nothing.
    fn trim(&mut self, c: usize) {
        if matches!(self.chunks.get(c), Some(Some(ch)) if ch.count == 0) {
            self.chunks[c] = None;
            self.live[c / 64] &= !(1 << (c % 64));
        }
    }

    /// Adds `f`; false if it was there.
    pub(crate) fn insert(&mut self, f: u64) -> bool {
        let (c, b) = split(f);
        let new = self.chunk_mut(c).set(b / 64, 1 << (b % 64));
        self.len += u64::from(new);
        new != 0
    }

    /// Removes `f`; false if it was not there.
    pub(crate) fn remove(&mut self, f: u64) -> bool {
        if !self.contains(f) {
            return false;
        }
        let (c, b) = split(f);
        if let Some(Some(ch)) = self.chunks.get_mut(c) {
            ch.clear(b / 64, 1 << (b % 64));
        }
        self.len -= 1;
        self.trim(c);
        true
    }

    /// Calls `each(chunk, word, mask)` for the words of [lo, hi).
    fn words_of(lo: u64, hi: u64, mut each: impl FnMut(usize, usize, u64)) {
        let mut f = lo;
        while f < hi {
            let (c, b) = split(f);
            let w = b / 64;
            let first = b % 64;
            let n = (64 - first as u64).min(hi - f);
            let mask = if n == 64 {
                !0
            } else {
                ((1u64 << n) - 1) << first
            };
            each(c, w, mask);
            f += n;
        }
    }

    /// Adds every frame of [lo, hi); returns how many were not there.
    pub(crate) fn insert_range(&mut self, lo: u64, hi: u64) -> u64 {
        let mut added = 0;
        Self::words_of(lo, hi, |c, w, mask| {
            added += u64::from(self.chunk_mut(c).set(w, mask));
        });
        self.len += added;
        added
    }

    /// How many frames of [lo, hi) are in the set: whole chunks by their
    /// count, the ends word by word.
    pub(crate) fn count_in(&self, lo: u64, hi: u64) -> u64 {
        let hi = hi.min((self.chunks.len() as u64) << CHUNK_SHIFT);
        let mut n = 0;
        let mut f = lo;
        while f < hi {
            let (c, _) = split(f);
            let end = (((c as u64) + 1) << CHUNK_SHIFT).min(hi);
            match &self.chunks[c] {
                None => {}
                Some(ch) if f & (CHUNK_FRAMES - 1) == 0 && end - f == CHUNK_FRAMES => {
                    n += u64::from(ch.count)
                }
                Some(ch) => Self::words_of(f, end, |_, w, mask| {
                    n += u64::from((ch.words[w] & mask).count_ones());
                }),
            }
            f = end;
        }
        n
    }

    /// The highest frame of the set in [lo, hi).
    pub(crate) fn last_in(&self, lo: u64, hi: u64) -> Option<u64> {
        let hi = hi
            .min(FRAME_LIMIT)
            .min((self.chunks.len() as u64) << CHUNK_SHIFT);
        if lo >= hi {
            return None;
        }
        let (mut c, mut b) = split(hi - 1);
        loop {
            if let Some(Some(ch)) = self.chunks.get(c) {
                if let Some(x) = ch.last_at_or_below(b) {
                    let f = ((c as u64) << CHUNK_SHIFT) + x as u64;
                    return (f >= lo).then_some(f);
                }
            }
            c = highest_below(&self.live, c)?;
            if ((c as u64 + 1) << CHUNK_SHIFT) <= lo {
                return None;
            }
            b = CHUNK_FRAMES as usize - 1;
        }
    }

    /// The lowest frame of the set in [lo, hi).
    pub(crate) fn first_in(&self, lo: u64, hi: u64) -> Option<u64> {
        let hi = hi.min(FRAME_LIMIT);
        if lo >= hi {
            return None;
        }
        let (mut c, mut b) = split(lo);
        loop {
            if let Some(Some(ch)) = self.chunks.get(c) {
                if let Some(x) = ch.first_at_or_above(b) {
                    let f = ((c as u64) << CHUNK_SHIFT) + x as u64;
                    return (f < hi).then_some(f);
                }
            }
            c = lowest_above(&self.live, c)?;
            if (c as u64) << CHUNK_SHIFT >= hi {
                return None;
            }
            b = 0;
        }
    }

    /// The frames in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut next = 0u64;
        std::iter::from_fn(move || {
            let f = self.first_in(next, FRAME_LIMIT)?;
            next = f + 1;
            Some(f)
        })
    }

    /// The frames in descending order.
    pub(crate) fn iter_rev(&self) -> impl Iterator<Item = u64> + '_ {
        let mut end = FRAME_LIMIT;
        std::iter::from_fn(move || {
            let f = self.last_in(0, end)?;
            end = f;
            Some(f)
        })
    }

    /// Empties the set and frees its chunks.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Host memory the set holds, in bytes.
    pub(crate) fn heap_bytes(&self) -> u64 {
        let live = self.chunks.iter().filter(|c| c.is_some()).count() as u64;
        live * std::mem::size_of::<Chunk>() as u64
            + (self.chunks.capacity() * std::mem::size_of::<Option<Box<Chunk>>>()) as u64
            + (self.live.capacity() * 8) as u64
    }

    /// Whether chunk `c` holds nothing.
    fn chunk_empty(&self, c: usize) -> bool {
        !matches!(self.chunks.get(c), Some(Some(_)))
    }
}

/// (chunk, bit in chunk) of frame `f`.
fn split(f: u64) -> (usize, usize) {
    (
        (f >> CHUNK_SHIFT) as usize,
        (f & (CHUNK_FRAMES - 1)) as usize,
    )
}

/// Frame number -> u64: the keys as a `FrameBits`, the values in arrays of
/// a chunk's size that exist while their chunk does.
#[derive(Default)]
pub(crate) struct FrameTable {
    keys: FrameBits,
    vals: Vec<Option<Box<[u64]>>>,
}

impl FrameTable {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn len(&self) -> u64 {
        self.keys.len()
    }

    pub(crate) fn contains(&self, f: u64) -> bool {
        self.keys.contains(f)
    }

    pub(crate) fn get(&self, f: u64) -> Option<u64> {
        if !self.keys.contains(f) {
            return None;
        }
        let (c, b) = split(f);
        self.vals.get(c)?.as_ref().map(|v| v[b])
    }

    /// Sets `f` to `v`, adding it; returns the old value.
    pub(crate) fn insert(&mut self, f: u64, v: u64) -> Option<u64> {
        let old = self.get(f);
        self.keys.insert(f);
        let (c, b) = split(f);
        if c >= self.vals.len() {
            self.vals.resize_with(c + 1, || None);
        }
        let arr = self.vals[c]
            .get_or_insert_with(|| vec![0u64; CHUNK_FRAMES as usize].into_boxed_slice());
        arr[b] = v;
        old
    }

    /// Changes the value of a key already there; false if it is not.
    pub(crate) fn set(&mut self, f: u64, v: u64) -> bool {
        if !self.keys.contains(f) {
            return false;
        }
        let (c, b) = split(f);
        match self.vals.get_mut(c) {
            Some(Some(arr)) => {
                arr[b] = v;
                true
            }
            // A key's chunk always has its values (insert makes them).
            _ => false,
        }
    }

    pub(crate) fn remove(&mut self, f: u64) -> Option<u64> {
        let old = self.get(f)?;
        self.keys.remove(f);
        let (c, _) = split(f);
        if self.keys.chunk_empty(c) {
            self.vals[c] = None;
        }
        Some(old)
    }

    /// The keys in ascending order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys.iter()
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    pub(crate) fn heap_bytes(&self) -> u64 {
        let live = self.vals.iter().filter(|c| c.is_some()).count() as u64;
        self.keys.heap_bytes()
            + live * CHUNK_FRAMES * 8
            + (self.vals.capacity() * std::mem::size_of::<Option<Box<[u64]>>>()) as u64
    }
}

/// A set of frames taken back most recent first: runs of frames pushed
/// one after the other (each one above or below the last), and a bit per
/// frame for membership.
#[derive(Default)]
pub(crate) struct FrameStack {
    /// (first pushed, last pushed) of each run, oldest run first.
    runs: Vec<(u64, u64)>,
    bits: FrameBits,
}

impl FrameStack {
    pub(crate) fn len(&self) -> u64 {
        self.bits.len()
    }

    pub(crate) fn contains(&self, f: u64) -> bool {
        self.bits.contains(f)
    }

    /// How many of its frames lie in [lo, hi).
    pub(crate) fn count_in(&self, lo: u64, hi: u64) -> u64 {
        self.bits.count_in(lo, hi)
    }

    /// Its frames in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter()
    }

    /// Host memory it holds, in bytes.
    pub(crate) fn heap_bytes(&self) -> u64 {
        self.bits.heap_bytes() + (self.runs.capacity() * 16) as u64
    }

    /// Pushes `f`; false (and nothing done) if it is there already.
    pub(crate) fn push(&mut self, f: u64) -> bool {
        if !self.bits.insert(f) {
            return false;
        }
        match self.runs.last_mut() {
            Some((first, last)) if *first <= *last && f == *last + 1 => *last = f,
            Some((first, last)) if *first >= *last && f + 1 == *last => *last = f,
            _ => self.runs.push((f, f)),
        }
        true
    }

    /// Takes the frame pushed last.
    pub(crate) fn pop(&mut self) -> Option<u64> {
        let (first, last) = *self.runs.last()?;
        if first == last {
            self.runs.pop();
        } else if let Some(r) = self.runs.last_mut() {
            r.1 = if first < last { last - 1 } else { last + 1 };
        }
        self.bits.remove(last);
        Some(last)
    }

    /// Takes `f` out wherever it is; false if it is not there.
    pub(crate) fn remove(&mut self, f: u64) -> bool {
        if !self.bits.remove(f) {
            return false;
        }
        let Some(i) = self
            .runs
            .iter()
            .rposition(|&(a, b)| a.min(b) <= f && f <= a.max(b))
        else {
            return true;
        };
        let (a, b) = self.runs[i];
        let up = a <= b;
        let before = (f != a).then(|| (a, if up { f - 1 } else { f + 1 }));
        let after = (f != b).then(|| (if up { f + 1 } else { f - 1 }, b));
        self.runs.splice(i..=i, before.into_iter().chain(after));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A small deterministic generator (xorshift), so that failures replay.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Every operation of `FrameBits` against a `BTreeSet` over random
    /// operations on a span of several chunks.
    #[test]
    fn frame_bits_match_a_reference_set() {
        for seed in 1..=4u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let span = 5 * CHUNK_FRAMES;
            let base = rng.below(4) * CHUNK_FRAMES + rng.below(100);
            let (mut s, mut r) = (FrameBits::new(), BTreeSet::new());
            for step in 0..3000 {
                let a = base + rng.below(span);
                let b = (a + rng.below(3 * CHUNK_FRAMES / 2)).min(base + span);
                match rng.below(9) {
                    0 | 1 | 5 => assert_eq!(s.insert(a), r.insert(a), "seed {seed} step {step}"),
                    2 | 3 => assert_eq!(s.remove(a), r.remove(&a), "seed {seed} step {step}"),
                    4 => {
                        let want = (a..b).filter(|f| r.insert(*f)).count() as u64;
                        assert_eq!(s.insert_range(a, b), want, "seed {seed} step {step}");
                    }
                    6 => assert_eq!(
                        s.last_in(a, b),
                        r.range(a..b).next_back().copied(),
                        "seed {seed} step {step} last_in({a:#x}, {b:#x})"
                    ),
                    7 => assert_eq!(
                        s.first_in(a, b),
                        r.range(a..b).next().copied(),
                        "seed {seed} step {step} first_in({a:#x}, {b:#x})"
                    ),
                    _ => assert_eq!(
                        s.count_in(a, b),
                        r.range(a..b).count() as u64,
                        "seed {seed} step {step}"
                    ),
                }
                assert_eq!(s.len(), r.len() as u64);
                assert_eq!(s.contains(a), r.contains(&a));
            }
            assert!(s.iter().eq(r.iter().copied()), "seed {seed}: iter");
            assert!(
                s.iter_rev().eq(r.iter().rev().copied()),
                "seed {seed}: iter_rev"
            );
        }
    }

    /// Chunks go when their last frame does, so an emptied set holds
    /// nothing but its index.
    #[test]
    fn an_emptied_set_frees_its_chunks() {
        let mut s = FrameBits::new();
        s.insert_range(0, 10 * CHUNK_FRAMES);
        let full = s.heap_bytes();
        assert!(full >= 10 * CHUNK_FRAMES / 8, "{full} bytes for 10 chunks");
        for f in 0..10 * CHUNK_FRAMES {
            assert!(s.remove(f));
        }
        assert!(s.is_empty());
        assert!(s.heap_bytes() < 1024, "{} bytes left", s.heap_bytes());
        assert_eq!(s.last_in(0, FRAME_LIMIT), None);
        assert_eq!(s.first_in(0, FRAME_LIMIT), None);
    }

    #[test]
    fn frame_table_keeps_values_and_frees_them() {
        let mut t = FrameTable::new();
        let base = 0x40_0000;
        for i in 0..3 * CHUNK_FRAMES {
            assert_eq!(t.insert(base + i, i * 7), None);
        }
        assert_eq!(t.get(base + 5), Some(35));
        assert!(t.set(base + 5, 1));
        assert!(!t.set(base + 3 * CHUNK_FRAMES, 1));
        assert_eq!(t.insert(base + 5, 2), Some(1));
        assert_eq!(t.remove(base + 5), Some(2));
        assert_eq!(t.get(base + 5), None);
        assert_eq!(t.len(), 3 * CHUNK_FRAMES - 1);
        let full = t.heap_bytes();
        for k in t.keys().collect::<Vec<_>>() {
            t.remove(k);
        }
        assert_eq!(t.len(), 0);
        assert!(
            t.heap_bytes() < full / 100,
            "{} of {full} bytes left",
            t.heap_bytes()
        );
    }

    /// `FrameStack` against a Vec used as a stack with `retain` for
    /// removal, as the kernel's page list was.
    #[test]
    fn frame_stack_matches_a_vec_stack() {
        let mut rng = Rng(42);
        let (mut s, mut v) = (FrameStack::default(), Vec::<u64>::new());
        let mut next_up = 1_000_000u64;
        let mut next_down = 999_999u64;
        for step in 0..20_000 {
            match rng.below(6) {
                0 | 1 => {
                    let f = if rng.below(2) == 0 {
                        next_up += 1 + rng.below(2);
                        next_up
                    } else {
                        next_down -= 1 + rng.below(2);
                        next_down
                    };
                    assert!(s.push(f));
                    v.push(f);
                }
                2 | 3 => assert_eq!(s.pop(), v.pop(), "step {step}"),
                4 if !v.is_empty() => {
                    let f = v[rng.below(v.len() as u64) as usize];
                    v.retain(|&x| x != f);
                    assert!(s.remove(f), "step {step}");
                }
                _ => {
                    if let Some(&f) = v.last() {
                        assert!(!s.push(f), "a frame pushed twice");
                    }
                }
            }
            assert_eq!(s.len(), v.len() as u64);
        }
        while let Some(f) = v.pop() {
            assert_eq!(s.pop(), Some(f));
        }
        assert_eq!(s.pop(), None);
    }
}
