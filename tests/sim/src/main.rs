//! balloon-sim: the simulated NetBSD/Xen domU balloon.kmod runs in on Linux.
//!
//! Until the simulated domU carries the C shim, this prints a worked
//! example of the core's policy: a PV domU booted with 1 GiB and a 4 GiB
//! maximum, steered through `xl mem-set` targets, each step carried out by
//! an ideal host (every hypercall succeeds) so the numbers show what the
//! core decides and why.

use balloon::policy::{self, MemInfo, Source};
use balloon::segments::PlugLimits;
use balloon::units::{Kib, Pages, Pfn, PfnRange, Uptime};
use balloon::worker::{Action, Boot, StepResult, Worker};

const MIB: u64 = 256; // pages

fn mib(p: Pages) -> String {
    format!("{} MiB", p.0 / MIB)
}

/// An ideal host: UVM hands out the highest free frames, Xen grants all.
struct Ideal {
    /// Free UVM frames, lowest first (kept sorted).
    free: Vec<u64>,
}

impl Ideal {
    fn carry_out(&mut self, w: &mut Worker, action: Action, now: Uptime) -> &'static str {
        match action {
            Action::Inflate { count, prefer, .. } => {
                let mut got: Vec<Pfn> = Vec::new();
                if let Some(r) = prefer {
                    self.free.retain(|&f| {
                        let take = r.contains(Pfn(f)) && (got.len() as u64) < count.0;
                        if take {
                            got.push(Pfn(f));
                        }
                        !take
                    });
                }
                while (got.len() as u64) < count.0 {
                    match self.free.pop() {
                        Some(f) => got.push(Pfn(f)),
                        None => break,
                    }
                }
                w.complete(
                    StepResult::Inflated {
                        frames: &got,
                        error: None,
                    },
                    now,
                )
                .expect("inflate result");
                "inflate"
            }
            Action::Deflate { runs } => {
                let mut n = 0;
                for r in &runs {
                    self.free.extend(r.frames().map(|f| f.0));
                    n += r.len().0;
                }
                self.free.sort_unstable();
                w.complete(
                    StepResult::Deflated {
                        done: Pages(n),
                        error: None,
                    },
                    now,
                )
                .expect("deflate result");
                "deflate"
            }
            Action::Plug { range } => {
                self.free.extend(range.frames().map(|f| f.0));
                self.free.sort_unstable();
                w.complete(StepResult::Plugged(Ok(())), now)
                    .expect("plug result");
                "plug"
            }
            Action::Unplug { range } => {
                w.complete(StepResult::Unplugged(Ok(())), now)
                    .expect("unplug result");
                let _ = range;
                "unplug"
            }
            Action::Sleep { .. } | Action::Idle => "idle",
        }
    }
}

fn main() {
    let boot_pages = 1024 * MIB;
    let kernel = 64 * MIB;
    let seg = [PfnRange::new(Pfn(0), Pfn(boot_pages)).expect("boot segment")];
    let boot = Boot {
        segments: &seg,
        reservation: Pages(boot_pages),
        max_reservation: Pages(4096 * MIB),
        freemin: Pages(1024),
        hotplug_supported: true,
        plug: PlugLimits {
            align: Pages(512),
            max_segment: Pages(128 * MIB),
            frame_limit: Pfn(8192 * MIB),
            floor: Pfn(0),
        },
    };
    let mut w = Worker::new(&boot).expect("boot");
    let mut host = Ideal {
        free: (kernel..boot_pages).collect(),
    };
    println!("balloon-sim: worked example of the balloon core's policy");
    println!(
        "  boot memory {}  maximum {}",
        mib(Pages(boot_pages)),
        mib(w.policy().max())
    );
    println!(
        "  safe floor {} = max(freemin {} pages + ballast {} pages, piecewise {} for 1 GiB)",
        mib(w.policy().floor()),
        boot.freemin.0,
        policy::DEFAULT_BALLAST.0,
        mib(policy::piecewise_minimum(Pages(boot_pages)))
    );
    println!("  batch {} frames per hypercall", w.policy().batch().0);
    println!();
    println!(
        "{:<26} {:>10} {:>10} {:>8} {:>8} {:>6} {:>7} {:>9}",
        "xl mem-set", "target", "reached", "inflate", "deflate", "plug", "unplug", "segments"
    );
    let now = Uptime(0);
    for (label, kib) in [
        ("512M (down by half)", Kib(512 * 1024)),
        ("1024M (back to boot)", Kib(1024 * 1024)),
        ("2560M (above boot)", Kib(2560 * 1024)),
        ("768M (below boot)", Kib(768 * 1024)),
        ("16M (below the floor)", Kib(16 * 1024)),
        ("8G (above the maximum)", Kib(8 * 1024 * 1024)),
    ] {
        let t = w
            .set_target(kib, Source::Xenstore)
            .expect("xenstore targets clamp");
        let mut n = [0u32; 4];
        loop {
            let mem = MemInfo {
                free: Pages(host.free.len() as u64),
                freetarg: Pages(2048),
            };
            let action = w.next_action(now, mem).expect("action");
            match host.carry_out(&mut w, action, now) {
                "inflate" => n[0] += 1,
                "deflate" => n[1] += 1,
                "plug" => n[2] += 1,
                "unplug" => n[3] += 1,
                _ => break,
            }
        }
        let clamp = match t.clamp {
            Some(policy::Clamp::ToFloor) => " (clamped to floor)",
            Some(policy::Clamp::ToMax) => " (clamped to max)",
            None => "",
        };
        println!(
            "{:<26} {:>10} {:>10} {:>8} {:>8} {:>6} {:>7} {:>9}{}",
            label,
            mib(t.pages),
            mib(w.current()),
            n[0],
            n[1],
            n[2],
            n[3],
            w.counts().plugged_segments,
            clamp
        );
        w.verify().expect("invariants hold");
    }
    let s = w.stats();
    println!();
    println!(
        "pages inflated {}, deflated {}, segments plugged {}, unplugged {}; state {:?}",
        s.pages_inflated.0,
        s.pages_deflated.0,
        s.segments_plugged,
        s.segments_unplugged,
        w.state()
    );
}
