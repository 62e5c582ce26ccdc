// SPDX-License-Identifier: BSD-2-Clause
//! Core bookkeeping cost, side by side with peer-style models in the
//! same run: time per page to inflate half a domain and deflate it again
//! through the worker (policy, back-off and frame store included, no
//! I/O), and bookkeeping bytes per ballooned GiB and per GiB of span.
//! Not a test: it prints figures (medians of 3 runs).
//!
//!     cargo bench --bench bookkeeping --features bench-roaring
//!
//! (`BOOKKEEPING_GIB=1,16` runs only those sizes; the default is 1, 16,
//! 64, 256 and 1024 GiB. `BOOKKEEPING_ORDER="random half"` runs only
//! that order. Without the feature the `roaring` column is left out.
//! The load average is printed at the start and the end: figures taken
//! on a loaded machine say so.)
//!
//! Frame-store candidates, each fed the same frames in batches of 8192
//! (a worker step) and emptied lowest frame first, with the heap it
//! holds and the allocations it makes per batch counted by this
//! program's global allocator:
//! - `bitmap`: `balloon::frameset::FrameBits`, the store the driver uses;
//! - `hybrid`: a run/bitmap hybrid modelled here: a word per 256 MiB
//!   group (empty, full, or a table of its 128 chunks), a word per 2 MiB
//!   chunk of a mixed group (empty, full, or a 64-byte bitmap), storage
//!   taken from growable pools when a group or chunk turns mixed;
//! - `roaring`: the `roaring` crate's `RoaringBitmap` (frames as u32,
//!   `optimize()` after each batch so that runs are kept as runs).
//!
//! Frame orders (the order UVM hands pages out in):
//! - `contiguous`: one long run;
//! - `random half`: a random half of the frames, in random order;
//! - `every other`: every other frame (the worst case for runs);
//! - `mix`: runs of 1, 8, 64 or 512 frames taken or skipped at random.
//!
//! Peer-style models, written here from what those drivers do:
//! - `NetBSD-style`: a 16-byte entry allocated per ballooned page and
//!   pushed on a singly linked list; deflate pops from the head;
//! - `Linux-style` (FreeBSD alike): the ballooned page is linked into a
//!   list through its own page structure (already allocated for every
//!   frame, so no extra memory); deflate pops from the head.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use balloon::frameset::FrameBits;

use balloon::policy::{MemInfo, Source};
use balloon::segments::PlugLimits;
use balloon::units::{Kib, Pages, Pfn, PfnRange, Uptime};
use balloon::worker::{Action, Boot, StepResult, Worker};

const FRAMES_PER_GIB: u64 = 262_144;

#[derive(Clone, Copy, PartialEq)]
enum Order {
    Contiguous,
    RandomHalf,
    EveryOther,
    Mix,
}

impl Order {
    fn name(self) -> &'static str {
        match self {
            Order::Contiguous => "contiguous",
            Order::RandomHalf => "random half",
            Order::EveryOther => "every other",
            Order::Mix => "mix",
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The frames to balloon, in the order UVM hands them out: half the span.
fn frames_in_order(span: u64, order: Order) -> Vec<u64> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    match order {
        Order::Contiguous => (span / 2..span).rev().collect(),
        Order::EveryOther => (0..span).rev().filter(|f| f.is_multiple_of(2)).collect(),
        Order::RandomHalf => {
            // The first half of a random permutation of the span (a
            // power of two): an odd multiplier, xor-shifts and an odd
            // addend, each a bijection modulo the span. No shuffle of the
            // whole span, so 1 TiB needs only the list itself.
            let mask = span - 1;
            let (m1, m2) = (rng.next() | 1, rng.next() | 1);
            let bits = span.trailing_zeros();
            let perm = |i: u64| {
                let mut x = i.wrapping_mul(m1) & mask;
                x ^= x >> (bits / 2).max(1);
                x = x.wrapping_mul(m2).wrapping_add(m1) & mask;
                x ^= x >> (bits / 3).max(1);
                x
            };
            (0..span / 2).map(perm).collect()
        }
        Order::Mix => {
            let mut out = Vec::new();
            let mut f = 0;
            while f < span && (out.len() as u64) < span / 2 {
                let len = [1, 8, 64, 512][(rng.next() % 4) as usize].min(span - f);
                if rng.next().is_multiple_of(2) {
                    out.extend(f..f + len);
                }
                f += len;
            }
            out
        }
    }
}

struct Figures {
    inflate: f64,
    deflate: f64,
    ballooned: u64,
    bytes: usize,
}

/// The project's worker and frame store.
fn project(span: u64, list: &[u64]) -> Figures {
    let seg = [PfnRange::new(Pfn(0), Pfn(span)).expect("range")];
    let mut w = Worker::new(&Boot {
        segments: &seg,
        reservation: Pages(span),
        max_reservation: Pages(span),
        freemin: Pages(64),
        growth: balloon::worker::Growth::NoUvmHotplug,
        plug: PlugLimits {
            align: Pages(512),
            max_segment: Pages(32768),
            frame_limit: Pfn(span),
            floor: Pfn(0),
            hole: None,
        },
    })
    .expect("boot");
    let mem = MemInfo {
        free: Pages(u64::MAX / 2),
        freetarg: Pages(0),
        managed: Pages(u64::MAX / 2),
    };
    let target = span - list.len() as u64;
    w.set_target(Kib(target * 4), Source::Xenstore)
        .expect("target");
    let mut next = list.iter().copied();
    let mut buf: Vec<Pfn> = Vec::with_capacity(8192);
    let mut now = Uptime(0);
    let start = Instant::now();
    loop {
        match w.next_action(now, mem).expect("action") {
            Action::Inflate { count, .. } => {
                buf.clear();
                buf.extend(next.by_ref().take(count.0 as usize).map(Pfn));
                let empty = buf.is_empty();
                // What the driver does: check before the frames go to
                // Xen, record after.
                w.check_inflate(&buf).expect("check");
                w.complete(
                    StepResult::Inflated {
                        frames: &buf,
                        rest: &[],
                        error: None,
                    },
                    now,
                )
                .expect("complete");
                if empty {
                    break;
                }
            }
            Action::Sleep { until } => now = until,
            _ => break,
        }
    }
    let inflate = start.elapsed();
    let ballooned = w.frames().ballooned().0;
    let bytes = w.frames().bookkeeping_bytes();
    w.set_target(Kib(u64::MAX), Source::Xenstore)
        .expect("target");
    let start = Instant::now();
    loop {
        match w.next_action(now, mem).expect("action") {
            Action::Deflate { from, count } => {
                // What the driver does: read the frames off the store.
                let mut last = 0;
                for pfn in w.frames().ballooned_from(from).take(count.0 as usize) {
                    last = pfn.0;
                }
                black_box(last);
                w.complete(
                    StepResult::Deflated {
                        done: count,
                        error: None,
                    },
                    now,
                )
                .expect("complete");
            }
            Action::Sleep { until } => now = until,
            _ => break,
        }
    }
    let deflate = start.elapsed();
    assert!(w.frames().ballooned().is_zero());
    Figures {
        inflate: inflate.as_nanos() as f64 / ballooned as f64,
        deflate: deflate.as_nanos() as f64 / ballooned as f64,
        ballooned,
        bytes,
    }
}

/// NetBSD-style: a 16-byte entry per page on a singly linked list.
struct Entry {
    next: Option<Box<Entry>>,
    pfn: u64,
}

fn netbsd_style(list: &[u64]) -> Figures {
    assert_eq!(std::mem::size_of::<Entry>(), 16);
    let mut head: Option<Box<Entry>> = None;
    let start = Instant::now();
    for &pfn in list {
        head = Some(Box::new(Entry { next: head, pfn }));
    }
    let inflate = start.elapsed();
    let start = Instant::now();
    let mut sum = 0u64;
    while let Some(mut e) = head {
        sum = sum.wrapping_add(e.pfn);
        head = e.next.take();
    }
    black_box(sum);
    let deflate = start.elapsed();
    let n = list.len() as f64;
    Figures {
        inflate: inflate.as_nanos() as f64 / n,
        deflate: deflate.as_nanos() as f64 / n,
        ballooned: list.len() as u64,
        bytes: list.len() * 16,
    }
}

/// Linux/FreeBSD-style: a doubly linked list through the page structure
/// (the array stands for `struct page` / `vm_page`, there for every frame
/// anyway: no extra memory).
#[derive(Clone, Copy)]
struct PageLinks {
    next: u64,
    prev: u64,
    _rest: [u64; 6],
}

const NIL: u64 = u64::MAX;

fn linux_style(span: u64, list: &[u64]) -> Figures {
    let mut pages = vec![
        PageLinks {
            next: NIL,
            prev: NIL,
            _rest: [0; 6]
        };
        span as usize
    ];
    let mut head = NIL;
    let start = Instant::now();
    for &pfn in list {
        let p = &mut pages[pfn as usize];
        p.next = head;
        p.prev = NIL;
        if head != NIL {
            pages[head as usize].prev = pfn;
        }
        head = pfn;
    }
    let inflate = start.elapsed();
    let start = Instant::now();
    let mut n = 0u64;
    while head != NIL {
        let next = pages[head as usize].next;
        pages[head as usize].next = NIL;
        if next != NIL {
            pages[next as usize].prev = NIL;
        }
        head = next;
        n += 1;
    }
    black_box(n);
    let deflate = start.elapsed();
    let n = list.len() as f64;
    Figures {
        inflate: inflate.as_nanos() as f64 / n,
        deflate: deflate.as_nanos() as f64 / n,
        ballooned: list.len() as u64,
        bytes: 0,
    }
}

/// Counts this program's allocations and the heap bytes it holds, so
/// that every candidate's memory and allocations per step are measured
/// the same way.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
/// Counting is on only while a store candidate runs, so that the peer
/// models' own allocations (one per page) pay nothing for it.
static ON: AtomicBool = AtomicBool::new(false);

fn count(add: u64, sub: u64) {
    if ON.load(Relaxed) {
        ALLOCS.fetch_add(u64::from(add != 0), Relaxed);
        LIVE.fetch_add(add, Relaxed);
        LIVE.fetch_sub(sub, Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as u64, 0);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as u64, 0);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as u64, layout.size() as u64);
        // SAFETY: ptr came from System with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, layout.size() as u64);
        // SAFETY: ptr came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Frames a worker step handles at most (policy::MAX_BATCH).
const BATCH: usize = 8192;

/// A frame-store candidate, driven the way the worker drives its store.
trait Store {
    /// Adds a frame; false if present.
    fn insert_one(&mut self, pfn: u64) -> bool;
    /// Reads the lowest `n` frames (xor-ed into the result, as the driver
    /// reads them to populate) and removes them; returns how many.
    fn take_lowest(&mut self, n: usize, sink: &mut u64) -> usize;
    /// Called after each inflate batch.
    fn end_batch(&mut self) {}
}

impl Store for FrameBits {
    fn insert_one(&mut self, pfn: u64) -> bool {
        FrameBits::insert_one(self, Pfn(pfn))
    }
    fn take_lowest(&mut self, n: usize, sink: &mut u64) -> usize {
        let Some(first) = self.first() else { return 0 };
        for p in self.iter_from(first).take(n) {
            *sink ^= p.0;
        }
        self.remove_first(first, self.covered(), Pages(n as u64)).0 as usize
    }
}

const CHUNK: u64 = 512;
const GROUP: u64 = 128;
const EMPTY: u32 = u32::MAX;
const FULL: u32 = u32::MAX - 1;

/// The run/bitmap hybrid (see the header): storage grows as groups and
/// chunks turn mixed, and returns to free lists when they turn empty or
/// full again.
#[derive(Default)]
struct Hybrid {
    top: Vec<u32>,
    groups: Vec<[u32; GROUP as usize]>,
    free_groups: Vec<u32>,
    chunks: Vec<[u64; 8]>,
    free_chunks: Vec<u32>,
    low: usize,
}

impl Hybrid {
    fn new(span: u64) -> Hybrid {
        Hybrid {
            top: vec![EMPTY; span.div_ceil(CHUNK * GROUP) as usize],
            ..Hybrid::default()
        }
    }
    fn new_group(&mut self, fill: u32) -> u32 {
        if let Some(i) = self.free_groups.pop() {
            self.groups[i as usize] = [fill; GROUP as usize];
            return i;
        }
        grow(&mut self.groups);
        self.groups.push([fill; GROUP as usize]);
        (self.groups.len() - 1) as u32
    }
    fn new_chunk(&mut self, fill: u64) -> u32 {
        if let Some(i) = self.free_chunks.pop() {
            self.chunks[i as usize] = [fill; 8];
            return i;
        }
        grow(&mut self.chunks);
        self.chunks.push([fill; 8]);
        (self.chunks.len() - 1) as u32
    }
}

/// Pools grow by half their length (Vec's own policy starts at four
/// 512-byte group tables, which would dominate a small domain's figure).
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 2 + 1);
    }
}

impl Store for Hybrid {
    fn insert_one(&mut self, pfn: u64) -> bool {
        let g = (pfn / (CHUNK * GROUP)) as usize;
        let c = ((pfn / CHUNK) % GROUP) as usize;
        let b = pfn % CHUNK;
        let gi = match self.top[g] {
            FULL => return false,
            EMPTY => {
                let i = self.new_group(EMPTY);
                self.top[g] = i;
                i
            }
            i => i,
        };
        self.low = self.low.min(g);
        let ci = match self.groups[gi as usize][c] {
            FULL => return false,
            EMPTY => {
                let i = self.new_chunk(0);
                self.groups[gi as usize][c] = i;
                i
            }
            i => i,
        };
        let chunk = &mut self.chunks[ci as usize];
        let (w, bit) = ((b / 64) as usize, 1u64 << (b % 64));
        if chunk[w] & bit != 0 {
            return false;
        }
        chunk[w] |= bit;
        if chunk[w] == u64::MAX && chunk.iter().all(|&x| x == u64::MAX) {
            self.free_chunks.push(ci);
            self.groups[gi as usize][c] = FULL;
            if self.groups[gi as usize].iter().all(|&x| x == FULL) {
                self.free_groups.push(gi);
                self.top[g] = FULL;
            }
        }
        true
    }

    fn take_lowest(&mut self, n: usize, sink: &mut u64) -> usize {
        let mut left = n as u64;
        while left > 0 && self.low < self.top.len() {
            let g = self.low;
            let base = g as u64 * CHUNK * GROUP;
            let gi = match self.top[g] {
                EMPTY => {
                    self.low += 1;
                    continue;
                }
                FULL if left >= CHUNK * GROUP => {
                    for p in base..base + CHUNK * GROUP {
                        *sink ^= p;
                    }
                    self.top[g] = EMPTY;
                    left -= CHUNK * GROUP;
                    continue;
                }
                FULL => {
                    let i = self.new_group(FULL);
                    self.top[g] = i;
                    i
                }
                i => i,
            };
            for c in 0..GROUP as usize {
                if left == 0 {
                    break;
                }
                let cbase = base + c as u64 * CHUNK;
                let ci = match self.groups[gi as usize][c] {
                    EMPTY => continue,
                    FULL if left >= CHUNK => {
                        for p in cbase..cbase + CHUNK {
                            *sink ^= p;
                        }
                        self.groups[gi as usize][c] = EMPTY;
                        left -= CHUNK;
                        continue;
                    }
                    FULL => {
                        let i = self.new_chunk(u64::MAX);
                        self.groups[gi as usize][c] = i;
                        i
                    }
                    i => i,
                };
                let chunk = &mut self.chunks[ci as usize];
                for (w, word) in chunk.iter_mut().enumerate() {
                    while *word != 0 && left > 0 {
                        *sink ^= cbase + w as u64 * 64 + u64::from(word.trailing_zeros());
                        *word &= *word - 1;
                        left -= 1;
                    }
                }
                if chunk.iter().all(|&x| x == 0) {
                    self.free_chunks.push(ci);
                    self.groups[gi as usize][c] = EMPTY;
                }
            }
            if self.groups[gi as usize].iter().all(|&x| x == EMPTY) {
                self.free_groups.push(gi);
                self.top[g] = EMPTY;
                self.low += 1;
            }
        }
        n - left as usize
    }
}

#[cfg(feature = "bench-roaring")]
impl Store for roaring::RoaringBitmap {
    fn insert_one(&mut self, pfn: u64) -> bool {
        self.insert(pfn as u32)
    }
    fn take_lowest(&mut self, n: usize, sink: &mut u64) -> usize {
        let mut last = None;
        let mut got = 0;
        for p in self.iter().take(n) {
            *sink ^= u64::from(p);
            last = Some(p);
            got += 1;
        }
        if let Some(last) = last {
            self.remove_range(..=last);
        }
        got
    }
    fn end_batch(&mut self) {
        self.optimize();
    }
}

/// One candidate's run: ns/page each way, heap bytes held once half the
/// domain is ballooned, and the most allocations made by one batch.
struct StoreFigures {
    inflate: f64,
    deflate: f64,
    bytes: u64,
    allocs: u64,
}

fn run_store<S: Store>(make: impl FnOnce() -> S, list: &[u64]) -> StoreFigures {
    ON.store(true, Relaxed);
    let live0 = LIVE.load(Relaxed);
    let mut s = make();
    let mut allocs = 0u64;
    let start = Instant::now();
    for batch in list.chunks(BATCH) {
        let a = ALLOCS.load(Relaxed);
        for &pfn in batch {
            let fresh = s.insert_one(pfn);
            assert!(fresh);
        }
        s.end_batch();
        allocs = allocs.max(ALLOCS.load(Relaxed) - a);
    }
    let inflate = start.elapsed();
    let bytes = LIVE.load(Relaxed).saturating_sub(live0);
    let mut sink = 0u64;
    let mut left = list.len();
    let start = Instant::now();
    while left > 0 {
        let a = ALLOCS.load(Relaxed);
        let got = s.take_lowest(BATCH.min(left), &mut sink);
        assert!(got > 0);
        left -= got;
        allocs = allocs.max(ALLOCS.load(Relaxed) - a);
    }
    let deflate = start.elapsed();
    drop(s);
    ON.store(false, Relaxed);
    black_box(sink);
    let n = list.len() as f64;
    StoreFigures {
        inflate: inflate.as_nanos() as f64 / n,
        deflate: deflate.as_nanos() as f64 / n,
        bytes,
        allocs,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median of 3 runs of `f`: (inflate, deflate, last figures).
fn med<T>(mut f: impl FnMut() -> T, times: impl Fn(&T) -> (f64, f64)) -> (f64, f64, T) {
    let (mut i, mut d) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..3 {
        let x = f();
        let (a, b) = times(&x);
        i.push(a);
        d.push(b);
        last = Some(x);
    }
    (median(i), median(d), last.expect("three runs"))
}

/// The largest domain the roaring candidate is run at.
const ROARING_MAX_GIB: u64 = 64;

/// Heap a peer model may take in this run; bigger sizes are skipped
/// (the machine has 24 GiB, shared).
const PEER_BUDGET: u64 = 4 << 30;

/// The host's load averages (`/proc/loadavg`), or why not.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown (no /proc/loadavg)".to_string())
}

fn main() {
    let sizes: Vec<u64> = std::env::var("BOOKKEEPING_GIB")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 64, 256, 1024]);
    let orders = [
        Order::Contiguous,
        Order::RandomHalf,
        Order::EveryOther,
        Order::Mix,
    ];
    let only_order = std::env::var("BOOKKEEPING_ORDER").ok();
    let roaring = cfg!(feature = "bench-roaring");
    println!("machine load at start: {}", load());
    println!("bookkeeping, half the domain ballooned and taken back; ns/page in/out, median of 3");
    println!(
        "store memory: heap bytes per ballooned GiB (and per GiB of span); allocs: most in one 8192-frame step"
    );
    println!(
        "{:<11} {:>4} | {:>11} | {:>11} {:>8} | {:>11} {:>8} {:>6} | {:>11} {:>8} {:>6} | {:>11} {:>11} | {:>7}",
        "order",
        "GiB",
        "driver",
        "bitmap",
        "B/ballGiB",
        "hybrid",
        "B/ballGiB",
        "allocs",
        "roaring",
        "B/ballGiB",
        "allocs",
        "NetBSD",
        "Linux",
        "B/spanGiB"
    );
    let mut worst = (0.0f64, 0.0f64);
    let mut peer_ratio = 0.0f64;
    let mut flat = 0.0f64;
    let mut span_bytes = 0.0f64;
    let mut contiguous_ball = 0.0f64;
    let mut worst_ball = 0.0f64;
    let mut skipped = Vec::new();
    let pair = |x: Option<(f64, f64)>| {
        x.map_or_else(|| "-".to_string(), |(a, b)| format!("{a:.2}/{b:.2}"))
    };
    for order in orders {
        if only_order.as_ref().is_some_and(|o| o != order.name()) {
            continue;
        }
        let mut per_size = Vec::new();
        for &gib in &sizes {
            let span = gib * FRAMES_PER_GIB;
            let list = frames_in_order(span, order);
            let ball_gib = list.len() as f64 / FRAMES_PER_GIB as f64;
            let (pi, pd, p) = med(|| project(span, &list), |f| (f.inflate, f.deflate));
            let (bi, bd, b) = med(
                || {
                    run_store(
                        || {
                            let mut x = FrameBits::new();
                            x.try_cover(Pfn(span)).expect("cover");
                            x
                        },
                        &list,
                    )
                },
                |f| (f.inflate, f.deflate),
            );
            let (hi, hd, h) = med(
                || run_store(|| Hybrid::new(span), &list),
                |f| (f.inflate, f.deflate),
            );
            // roaring's array containers insert in the middle: a random
            // half of 256 GiB took about a microsecond a frame here, so
            // it stops at 64 GiB.
            let r: Option<(f64, f64, StoreFigures)> = if roaring && gib > ROARING_MAX_GIB {
                skipped.push(format!("roaring at {gib} GiB"));
                None
            } else if roaring {
                #[cfg(feature = "bench-roaring")]
                {
                    Some(med(
                        || run_store(roaring::RoaringBitmap::new, &list),
                        |f| (f.inflate, f.deflate),
                    ))
                }
                #[cfg(not(feature = "bench-roaring"))]
                None
            } else {
                None
            };
            let netbsd = if list.len() as u64 * 16 <= PEER_BUDGET {
                let (i, d, _) = med(|| netbsd_style(&list), |f| (f.inflate, f.deflate));
                Some((i, d))
            } else {
                skipped.push(format!("NetBSD-style at {gib} GiB"));
                None
            };
            let linux = if span * 64 <= PEER_BUDGET {
                let (i, d, _) = med(|| linux_style(span, &list), |f| (f.inflate, f.deflate));
                Some((i, d))
            } else {
                skipped.push(format!("Linux-style at {gib} GiB"));
                None
            };
            let per_span = p.bytes as f64 / gib as f64;
            println!(
                "{:<11} {:>4} | {:>11} | {:>11} {:>8.0} | {:>11} {:>8.0} {:>6} | {:>11} {:>8} {:>6} | {:>11} {:>11} | {:>7.0}",
                order.name(),
                gib,
                pair(Some((pi, pd))),
                pair(Some((bi, bd))),
                b.bytes as f64 / ball_gib,
                pair(Some((hi, hd))),
                h.bytes as f64 / ball_gib,
                h.allocs,
                pair(r.as_ref().map(|x| (x.0, x.1))),
                r.as_ref()
                    .map_or("-".to_string(), |x| format!("{:.0}", x.2.bytes as f64 / ball_gib)),
                r.as_ref().map_or("-".to_string(), |x| x.2.allocs.to_string()),
                pair(netbsd),
                pair(linux),
                per_span
            );
            assert_eq!(b.allocs, 0, "the bitmap allocated in a step");
            worst.0 = worst.0.max(pi);
            worst.1 = worst.1.max(pd);
            let fastest = [netbsd, linux]
                .iter()
                .flatten()
                .fold((f64::MAX, f64::MAX), |m, x| (m.0.min(x.0), m.1.min(x.1)));
            if fastest.0 < f64::MAX {
                peer_ratio = peer_ratio.max(pi / fastest.0).max(pd / fastest.1);
            }
            span_bytes = span_bytes.max(per_span);
            let ball = p.bytes as f64 / (p.ballooned as f64 / FRAMES_PER_GIB as f64);
            worst_ball = worst_ball.max(ball);
            if order == Order::Contiguous {
                contiguous_ball = contiguous_ball.max(ball);
            }
            per_size.push(pi.max(pd));
        }
        let max = per_size.iter().copied().fold(0.0, f64::max);
        let min = per_size.iter().copied().fold(f64::MAX, f64::min);
        flat = flat.max(max / min);
    }
    // Each order skips the same sizes: name each once.
    skipped.sort();
    skipped.dedup();
    if !skipped.is_empty() {
        println!(
            "skipped (peer models over {} GiB of heap each; roaring above {} GiB): {}",
            PEER_BUDGET >> 30,
            ROARING_MAX_GIB,
            skipped.join(", ")
        );
    }
    println!(
        "ratios (driver): worst ns/page inflate {:.2}, deflate {:.2} (goal <= 20); \
         worst driver/fastest peer run {:.2} (goal <= 1); flatness {}-{} GiB (max/min) {:.2} (goal <= 1.5); \
         bytes per GiB of span {:.0} = {:.2} bit/frame (goal <= 1); bytes per ballooned GiB \
         contiguous {:.0} (goal <= 1024), worst {:.0}, NetBSD-style 4194304",
        worst.0,
        worst.1,
        peer_ratio,
        sizes.first().copied().unwrap_or(0),
        sizes.last().copied().unwrap_or(0),
        flat,
        span_bytes,
        span_bytes * 8.0 / FRAMES_PER_GIB as f64,
        contiguous_ball,
        worst_ball
    );
    println!("machine load at end: {}", load());
}
