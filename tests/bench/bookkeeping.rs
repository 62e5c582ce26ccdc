// SPDX-License-Identifier: BSD-2-Clause
//! Core bookkeeping cost, side by side with peer-style models in the
//! same run: time per page to inflate half a domain and deflate it again
//! through the worker (policy, back-off and frame store included, no
//! I/O), and bookkeeping bytes per ballooned GiB and per GiB of span.
//! Not a test: it prints figures (medians of 3 runs).
//!
//!     cargo bench --bench bookkeeping
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

use std::hint::black_box;
use std::time::Instant;

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
            let mut all: Vec<u64> = (0..span).collect();
            for i in (1..all.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                all.swap(i, j);
            }
            all.truncate((span / 2) as usize);
            all
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
                w.complete(
                    StepResult::Inflated {
                        frames: &buf,
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median of 3 runs of `f`: (inflate, deflate, last figures).
fn med(mut f: impl FnMut() -> Figures) -> (f64, f64, Figures) {
    let (mut i, mut d) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..3 {
        let x = f();
        i.push(x.inflate);
        d.push(x.deflate);
        last = Some(x);
    }
    (median(i), median(d), last.expect("three runs"))
}

fn main() {
    let sizes: [u64; 3] = [1, 16, 64];
    let orders = [
        Order::Contiguous,
        Order::RandomHalf,
        Order::EveryOther,
        Order::Mix,
    ];
    println!("bookkeeping, half the domain ballooned and taken back; ns/page, median of 3");
    println!(
        "{:<12} {:>5} | {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7} | {:>11} {:>9} | {:>11}",
        "order",
        "GiB",
        "proj in",
        "out",
        "NetBSD",
        "out",
        "Linux",
        "out",
        "B/ball. GiB",
        "B/span GiB",
        "NetBSD B/GiB"
    );
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    let mut peer_ratio = 0.0f64;
    let mut flat = 0.0f64;
    let mut span_bytes = 0.0f64;
    for order in orders {
        let mut per_size = Vec::new();
        for &gib in &sizes {
            let span = gib * FRAMES_PER_GIB;
            let list = frames_in_order(span, order);
            let (pi, pd, p) = med(|| project(span, &list));
            let (ni, nd, n) = med(|| netbsd_style(&list));
            let (li, ld, _) = med(|| linux_style(span, &list));
            let ball_gib = p.ballooned as f64 / FRAMES_PER_GIB as f64;
            let per_ball = p.bytes as f64 / ball_gib;
            let per_span = p.bytes as f64 / gib as f64;
            let netbsd_per = n.bytes as f64 / (n.ballooned as f64 / FRAMES_PER_GIB as f64);
            println!(
                "{:<12} {:>5} | {:>7.2} {:>7.2} | {:>7.2} {:>7.2} | {:>7.2} {:>7.2} | {:>11.0} {:>9.0} | {:>11.0}",
                order.name(),
                gib,
                pi,
                pd,
                ni,
                nd,
                li,
                ld,
                per_ball,
                per_span,
                netbsd_per
            );
            worst.0 = worst.0.max(pi);
            worst.1 = worst.1.max(pd);
            worst.2 = worst.2.max(per_ball);
            peer_ratio = peer_ratio.max(pi / ni.min(li)).max(pd / nd.min(ld));
            span_bytes = span_bytes.max(per_span);
            per_size.push(pi.max(pd));
        }
        let max = per_size.iter().copied().fold(0.0, f64::max);
        let min = per_size.iter().copied().fold(f64::MAX, f64::min);
        flat = flat.max(max / min);
    }
    println!(
        "ratios: worst project ns/page inflate {:.2}, deflate {:.2} (goal <= 20); \
         worst project/fastest peer {:.2}; flatness across sizes (max/min) {:.2} (goal <= 1.5); \
         bytes per GiB of span {:.0} = {:.2} bit/frame (goal <= 1); worst bytes per ballooned GiB {:.0} \
         vs NetBSD-style 4194304",
        worst.0,
        worst.1,
        peer_ratio,
        flat,
        span_bytes,
        span_bytes * 8.0 / FRAMES_PER_GIB as f64,
        worst.2
    );
}
