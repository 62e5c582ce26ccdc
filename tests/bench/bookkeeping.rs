//! Core bookkeeping cost: time per page to inflate and deflate 1 GiB and
//! 1 TiB worth of frames through the worker (policy, back-off and frame
//! space included, no I/O), and heap bytes of bookkeeping per ballooned
//! GiB. Not a test: it prints figures.
//!
//!     cargo bench --bench bookkeeping
//!
//! Frame order matters for a run-based set, so two orders are measured:
//! `contiguous` (UVM handing out one long free run, the common case after
//! boot and for plugged segments) and `scattered` (every other frame, the
//! worst case: one run per frame; 1 GiB only, as 1 TiB of it would need
//! several GiB of host memory, which is the point of the figure).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use balloon::policy::{MemInfo, Source};
use balloon::segments::PlugLimits;
use balloon::units::{Kib, Pages, Pfn, PfnRange, Uptime};
use balloon::worker::{Action, Boot, StepResult, Worker};

/// Counts live heap bytes so bookkeeping size can be read off directly.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p came from System.alloc with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Clone, Copy)]
enum Order {
    Contiguous,
    Scattered,
}

struct Figures {
    frames: u64,
    inflate_ns_per_page: f64,
    deflate_ns_per_page: f64,
    heap: usize,
    bytes_per_gib: f64,
    runs: usize,
}

fn run(frames: u64, order: Order) -> Figures {
    let seg = [PfnRange::new(Pfn(0), Pfn(frames)).expect("range")];
    let mut w = Worker::new(&Boot {
        segments: &seg,
        reservation: Pages(frames),
        max_reservation: Pages(frames),
        freemin: Pages(64),
        hotplug_supported: false,
        plug: PlugLimits {
            align: Pages(512),
            max_segment: Pages(32768),
            frame_limit: Pfn(frames),
            floor: Pfn(0),
        },
    })
    .expect("boot");
    let mem = MemInfo {
        free: Pages(u64::MAX / 2),
        freetarg: Pages(0),
        managed: Pages(u64::MAX / 2),
    };
    // Which frames the "allocator" hands out, highest first as UVM's
    // free lists tend to.
    let mut next: Box<dyn Iterator<Item = u64>> = match order {
        Order::Contiguous => Box::new((0..frames).rev()),
        Order::Scattered => Box::new((0..frames).rev().filter(|f| f % 2 == 0)),
    };
    w.set_target(Kib(0), Source::Xenstore).expect("target");
    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut buf: Vec<Pfn> = Vec::with_capacity(8192);
    let start = Instant::now();
    let mut now = Uptime(0);
    loop {
        match w.next_action(now, mem).expect("action") {
            Action::Inflate { count, .. } => {
                buf.clear();
                buf.extend(next.by_ref().take(count.0 as usize).map(Pfn));
                if buf.is_empty() {
                    w.complete(
                        StepResult::Inflated {
                            frames: &[],
                            error: None,
                        },
                        now,
                    )
                    .expect("complete");
                    break;
                }
                w.complete(
                    StepResult::Inflated {
                        frames: &buf,
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
    let inflate = start.elapsed();
    let ballooned = w.frames().ballooned();
    let heap = LIVE.load(Ordering::Relaxed).saturating_sub(heap_before) - buf.capacity() * 8;
    let runs = w.frames().ballooned_runs();
    w.set_target(Kib(u64::MAX), Source::Xenstore)
        .expect("target");
    let start = Instant::now();
    loop {
        match w.next_action(now, mem).expect("action") {
            Action::Deflate { count, .. } => {
                let n = count.0;
                w.complete(
                    StepResult::Deflated {
                        done: Pages(n),
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
    let gib = ballooned.0 as f64 / 262_144.0;
    Figures {
        frames: ballooned.0,
        inflate_ns_per_page: inflate.as_nanos() as f64 / ballooned.0 as f64,
        deflate_ns_per_page: deflate.as_nanos() as f64 / ballooned.0 as f64,
        heap,
        bytes_per_gib: heap as f64 / gib,
        runs,
    }
}

fn main() {
    println!("balloon core bookkeeping (ballooned = pages; ns/pg = wall time per page)");
    println!(
        "{:<7} {:<11} {:>10} {:>10} {:>10} {:>7} {:>10} {:>13}",
        "domain", "order", "ballooned", "inflate", "deflate", "runs", "heap", "per ball. GiB"
    );
    let cases = [
        ("1 GiB", 1u64 << 18, Order::Contiguous),
        ("1 GiB", 1 << 18, Order::Scattered),
        ("1 TiB", 1 << 28, Order::Contiguous),
    ];
    for (name, frames, order) in cases {
        let f = run(frames, order);
        println!(
            "{:<7} {:<11} {:>10} {:>5.1} ns/pg {:>5.1} ns/pg {:>7} {:>8} B {:>11.1} B",
            name,
            match order {
                Order::Contiguous => "contiguous",
                Order::Scattered => "scattered",
            },
            f.frames,
            f.inflate_ns_per_page,
            f.deflate_ns_per_page,
            f.runs,
            f.heap,
            f.bytes_per_gib
        );
    }
}
