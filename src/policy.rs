//! Targets, the floor, the maximum, the batch size and the low-memory
//! guard: every rule that decides how much memory the domain should hold
//! and how fast to get there. Pure functions of their inputs.

use crate::errno::Errno;
use crate::units::{Kib, Pages};

/// Frames one step (one reservation hypercall) takes at most, by
/// default: 128 extents of 2 MiB, 256 MiB, so that a GiB takes 4
/// hypercalls when memory allows (issue 13 goal 3). A 2 MiB extent counts
/// as its 512 frames; where no extent is to be had, a step takes single
/// frames, at most [`MAX_SINGLE_STEP`].
pub const DEFAULT_BATCH: Pages = Pages(65536);
/// The largest batch the knob accepts: [`MAX_STEP_EXTENTS`] extents.
pub const MAX_BATCH: Pages = Pages(65536);
/// The most single frames one step takes (the step's frame arrays, 64 KiB
/// of `u64` each, are allocated at attach with this many entries): what
/// Linux and FreeBSD use per hypercall is 512 (REFERENCE.md §7); a batch
/// of 1 to 8192 takes exactly `batch` single frames a step.
pub const MAX_SINGLE_STEP: Pages = Pages(8192);
/// What the driver keeps above UVM's `freemin` at the least: NetBSD's own
/// balloon(4) floor is freemin + 1 MiB (REFERENCE.md §7).
pub const DEFAULT_BALLAST: Pages = Pages(256);
/// LIBXL_MAXMEM_CONSTANT (1024 KiB, libxl_internal.h; x86
/// `libxl__arch_extra_memory`, libxl_x86.c): the slack libxl puts above
/// `memory` in Xen's maximum reservation at domain creation
/// (`libxl__build_pre`, libxl_dom.c @021cd1c4) and above every `xl
/// mem-set` target (`libxl_set_memory_target`, libxl_mem.c @0241809b).
/// Pages Xen counts beyond what the toolstack calls memory (a PVH guest's
/// special pages and ACPI tables) fit in it.
pub const TOOLSTACK_SLACK: Pages = Pages(256);

/// The pages Xen's reservation holds that `memory/target` does not count,
/// fixed once per load at the first target xenstore gives, as Linux fixes
/// `target_diff` at its first watch event (drivers/xen/xen-balloon.c
/// @06236046: static-max minus the pages it holds; 0 for PV). Here, for a
/// PVH guest: its reservation at load minus `memory/static-max` when that
/// lies within [`TOOLSTACK_SLACK`] (the domain was built with memory =
/// maxmem, or the module is loaded again after any `xl mem-set`), else
/// minus that first `memory/target` (memory < maxmem), else 0. Xen
/// counts at most the slack beyond memory at creation, so a larger
/// difference means neither figure is what the domain was built with.
pub fn toolstack_offset(
    pvh: bool,
    reservation: Pages,
    static_max: Option<Kib>,
    first_target: Kib,
) -> Pages {
    if !pvh {
        return Pages::ZERO;
    }
    for basis in [static_max, Some(first_target)].into_iter().flatten() {
        if let Some(d) = reservation.checked_sub(basis.pages_floor()) {
            if d <= TOOLSTACK_SLACK {
                return d;
            }
        }
    }
    Pages::ZERO
}

/// Where a requested target came from; the source decides whether an
/// out-of-range value is clamped or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// xenstore `memory/target`, written by the toolstack. Out-of-range
    /// values are clamped: the toolstack has already decided, and the
    /// driver does the nearest safe thing and says so.
    Xenstore,
    /// `sysctl -w hw.balloon.target`, written by the administrator.
    /// Out-of-range values are refused with EPERM and change nothing.
    Sysctl,
}

/// Why a value was refused. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a decimal number of KiB (empty, sign, spaces, suffix, ...).
    Malformed,
    /// Does not fit in 64 bits.
    Overflow,
    /// Below the floor; carries the floor.
    BelowFloor(Kib),
    /// Above the maximum; carries the maximum.
    AboveMax(Kib),
    /// Below the safe floor the driver computed (for `min`).
    BelowSafeFloor(Kib),
    /// A knob value outside its range (`batch` of 0, say).
    OutOfRange,
    /// The kernel cannot do this (hotplug without UVM_HOTPLUG).
    Unsupported,
}

impl Refusal {
    /// The errno a sysctl write or modcmd returns for this refusal:
    /// EINVAL for a value that is not a value, EPERM for one outside the
    /// safe range, EOPNOTSUPP for what the kernel cannot do.
    pub fn errno(self) -> Errno {
        match self {
            Refusal::Malformed | Refusal::Overflow => Errno::EINVAL,
            Refusal::BelowFloor(_)
            | Refusal::AboveMax(_)
            | Refusal::BelowSafeFloor(_)
            | Refusal::OutOfRange => Errno::EPERM,
            Refusal::Unsupported => Errno::EOPNOTSUPP,
        }
    }
}

/// How an accepted target was adjusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clamp {
    /// Raised to the floor.
    ToFloor,
    /// Lowered to the maximum.
    ToMax,
}

/// A target the policy accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// What was asked for.
    pub requested: Kib,
    /// Pages the domain should hold (after rounding down and clamping).
    pub pages: Pages,
    /// Whether and how the value was clamped.
    pub clamp: Option<Clamp>,
}

/// Parses a size in KiB as xenstore and sysctl strings carry it: ASCII
/// decimal digits only, optionally followed by one newline or NUL
/// padding. Everything else (empty, signs, spaces, unit suffixes, hex,
/// a NUL with anything but NULs after it) is malformed: guessing what
/// "1G", " 512" or "300000<NUL>junk" meant is how targets go wrong
/// silently.
pub fn parse_kib(text: &[u8]) -> Result<Kib, Refusal> {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let (mut digits, padding) = text.split_at(end);
    if padding.iter().any(|&b| b != 0) {
        return Err(Refusal::Malformed);
    }
    if let [rest @ .., b'\n'] = digits {
        digits = rest;
    }
    if digits.is_empty() {
        return Err(Refusal::Malformed);
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(Refusal::Malformed);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(Refusal::Overflow)?;
    }
    Ok(Kib(value))
}

/// The least memory a domain of `boot` pages should keep, by size class:
/// small domains keep a larger share. The shape (four classes, each a
/// fixed base plus a fraction) follows FreeBSD's Xen balloon
/// (REFERENCE.md §7); the numbers are restated here in pages.
pub fn piecewise_minimum(boot: Pages) -> Pages {
    const MIB: u64 = 256; // pages per MiB
    let m = boot.0;
    let floor = if m < 128 * MIB {
        8 * MIB + m / 2
    } else if m < 512 * MIB {
        40 * MIB + m / 4
    } else if m < 2048 * MIB {
        104 * MIB + m / 8
    } else {
        296 * MIB + m / 32
    };
    Pages(floor)
}

/// The safe floor: never inflate below it. The larger of UVM's `freemin`
/// plus a ballast and the piecewise minimum for the boot size.
pub fn safe_floor(boot: Pages, freemin: Pages, ballast: Pages) -> Pages {
    freemin.saturating_add(ballast).max(piecewise_minimum(boot))
}

/// UVM's free-memory figures at one moment (`uvmexp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// Free pages (`uvm_availmem(false)` on NetBSD 10, else `uvmexp.free`).
    pub free: Pages,
    /// The pagedaemon's free target (`uvmexp.freetarg`).
    pub freetarg: Pages,
    /// Pages UVM manages (`uvmexp.npages`). `uvm_physseg_plug` refuses
    /// a segment of more pages than this (uvm_physseg.c 1.18: the first
    /// `vm_page` slab is sized from it), so no plug is larger.
    pub managed: Pages,
}

/// How many pages inflation may take now without pushing UVM into
/// memory pressure: none while free memory is at or under its target
/// plus a reserve of one batch (at most one 2 MiB extent, [`EXTENT`]),
/// else what is above that, at most one batch. This is the guard that
/// keeps a large deflate-to-inflate swing from starving the guest (the
/// XSA-300 lesson, REFERENCE.md §7). The reserve stays at 2 MiB for
/// larger batches: a step never takes more than is above it.
pub fn inflate_allowance(mem: MemInfo, batch: Pages) -> Pages {
    let reserve = mem.freetarg.saturating_add(batch.min(EXTENT));
    mem.free.saturating_sub(reserve).min(batch)
}

/// Frames in one 2 MiB extent (`extent_order` 9, the largest a domU may
/// use on x86: xen/common/memory.c @c447b730 max_order, domu_max_order
/// = CONFIG_DOMU_MAX_ORDER = PAGETABLE_ORDER).
pub const EXTENT_ORDER: u32 = 9;
/// [`EXTENT_ORDER`] in frames.
pub const EXTENT: Pages = Pages(1 << EXTENT_ORDER);
/// The most 2 MiB extents one step takes: [`MAX_BATCH`] frames, 256 MiB.
pub const MAX_STEP_EXTENTS: Pages = Pages(MAX_BATCH.0 >> EXTENT_ORDER);

/// The sizes the policy works with, and the knobs that change them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    safe_floor: Pages,
    floor: Pages,
    max: Pages,
    batch: Pages,
    hotplug_supported: bool,
    hotplug: bool,
    unplug: bool,
    scrub: bool,
}

impl Policy {
    /// A policy for a domain whose safe floor and Xen maximum reservation
    /// are given. Hotplug is on when the kernel supports it.
    pub fn new(safe_floor: Pages, max: Pages, hotplug_supported: bool) -> Policy {
        Policy {
            safe_floor: safe_floor.min(max),
            floor: safe_floor.min(max),
            max,
            batch: DEFAULT_BATCH,
            hotplug_supported,
            hotplug: hotplug_supported,
            unplug: false,
            scrub: true,
        }
    }

    /// The floor now in force (the safe floor or what the admin raised it
    /// to).
    pub fn floor(&self) -> Pages {
        self.floor
    }

    /// The floor the driver computed; `min` cannot go below it.
    pub fn safe_floor(&self) -> Pages {
        self.safe_floor
    }

    /// Xen's maximum reservation for the domain.
    pub fn max(&self) -> Pages {
        self.max
    }

    /// Frames per hypercall.
    pub fn batch(&self) -> Pages {
        self.batch
    }

    /// Grow past boot memory by plugging segments.
    pub fn hotplug(&self) -> bool {
        self.hotplug
    }

    /// True when the kernel has UVM_HOTPLUG.
    pub fn hotplug_supported(&self) -> bool {
        self.hotplug_supported
    }

    /// Unplug plugged segments once fully ballooned.
    pub fn unplug(&self) -> bool {
        self.unplug
    }

    /// Zero pages before they are given to Xen.
    pub fn scrub(&self) -> bool {
        self.scrub
    }

    fn kib(p: Pages) -> Kib {
        p.saturating_kib()
    }

    /// Accepts a target in KiB from `source` (rounded down to whole
    /// pages), clamping (xenstore) or refusing (sysctl) values outside
    /// `[floor, max]`.
    pub fn accept_target(&self, requested: Kib, source: Source) -> Result<Target, Refusal> {
        let pages = requested.pages_floor();
        let floor = self.floor;
        let (pages, clamp) = if pages < floor {
            match source {
                Source::Xenstore => (floor, Some(Clamp::ToFloor)),
                Source::Sysctl => return Err(Refusal::BelowFloor(Self::kib(floor))),
            }
        } else if pages > self.max {
            match source {
                Source::Xenstore => (self.max, Some(Clamp::ToMax)),
                Source::Sysctl => return Err(Refusal::AboveMax(Self::kib(self.max))),
            }
        } else {
            (pages, None)
        };
        Ok(Target {
            requested,
            pages,
            clamp,
        })
    }

    /// Sets the floor (`hw.balloon.min`, KiB rounded up to pages): never
    /// below the safe floor, never above the maximum.
    pub fn set_floor(&mut self, min: Kib) -> Result<(), Refusal> {
        let pages = min.pages_ceil();
        if pages < self.safe_floor {
            return Err(Refusal::BelowSafeFloor(Self::kib(self.safe_floor)));
        }
        if pages > self.max {
            return Err(Refusal::AboveMax(Self::kib(self.max)));
        }
        self.floor = pages;
        Ok(())
    }

    /// Sets the frames per step (per hypercall): 1 to [`MAX_BATCH`].
    pub fn set_batch(&mut self, batch: Pages) -> Result<(), Refusal> {
        if batch.is_zero() || batch > MAX_BATCH {
            return Err(Refusal::OutOfRange);
        }
        self.batch = batch;
        Ok(())
    }

    /// Turns growth by hotplug on or off; on is refused without UVM_HOTPLUG.
    pub fn set_hotplug(&mut self, on: bool) -> Result<(), Refusal> {
        if on && !self.hotplug_supported {
            return Err(Refusal::Unsupported);
        }
        self.hotplug = on;
        Ok(())
    }

    /// Turns unplugging of fully ballooned segments on or off.
    pub fn set_unplug(&mut self, on: bool) {
        self.unplug = on;
    }

    /// Turns scrubbing on or off.
    pub fn set_scrub(&mut self, on: bool) {
        self.scrub = on;
    }

    /// Xen lowered or raised the maximum reservation (re-read with every
    /// target). The floors stay: a maximum under them (`xl mem-set 0`
    /// sets Xen's maximum to 1 MiB) is not a reason to starve the guest;
    /// Xen lets a reservation above its maximum stand and only refuses new
    /// allocations (XEN_DOMCTL_max_mem, xen/common/domctl.c).
    pub fn set_max(&mut self, max: Pages) {
        self.max = max;
    }

    /// `target` clamped to the maximum and then raised to the floor: what
    /// the worker steers to. The floor wins over a maximum below it.
    pub fn effective(&self, target: Pages) -> Pages {
        target.min(self.max).max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_plain_decimal() {
        assert_eq!(parse_kib(b"1048576"), Ok(Kib(1_048_576)));
        assert_eq!(parse_kib(b"0"), Ok(Kib(0)));
        assert_eq!(parse_kib(b"42\n"), Ok(Kib(42)));
        assert_eq!(parse_kib(b"42\0\0"), Ok(Kib(42)));
        assert_eq!(parse_kib(b"18446744073709551615"), Ok(Kib(u64::MAX)));
        assert_eq!(parse_kib(b"18446744073709551616"), Err(Refusal::Overflow));
        for bad in [
            &b""[..],
            b"\n",
            b"-5",
            b"+5",
            b" 5",
            b"5 ",
            b"1G",
            b"512k",
            b"0x10",
            b"1.5",
            b"5\n\n",
            b"300000\0junk",
            b"300000\0\x001",
            b"\x00300000",
        ] {
            assert_eq!(parse_kib(bad), Err(Refusal::Malformed), "{:?}", bad);
        }
    }

    #[test]
    fn piecewise_minimum_by_size_class() {
        const MIB: u64 = 256;
        assert_eq!(piecewise_minimum(Pages(64 * MIB)), Pages(40 * MIB));
        assert_eq!(piecewise_minimum(Pages(256 * MIB)), Pages(104 * MIB));
        assert_eq!(piecewise_minimum(Pages(1024 * MIB)), Pages(232 * MIB));
        assert_eq!(piecewise_minimum(Pages(4096 * MIB)), Pages(424 * MIB));
        // Never above the memory itself for any plausible size.
        for mib in [32, 127, 128, 511, 512, 2047, 2048, 1 << 20] {
            assert!(piecewise_minimum(Pages(mib * MIB)) < Pages(mib * MIB));
        }
    }

    #[test]
    fn safe_floor_takes_the_larger_rule() {
        let boot = Pages(262_144); // 1 GiB
        assert_eq!(
            safe_floor(boot, Pages(1000), DEFAULT_BALLAST),
            piecewise_minimum(boot)
        );
        assert_eq!(
            safe_floor(boot, Pages(100_000), DEFAULT_BALLAST),
            Pages(100_256)
        );
    }

    fn policy() -> Policy {
        Policy::new(Pages(1000), Pages(100_000), true)
    }

    #[test]
    fn xenstore_targets_clamp_sysctl_targets_refuse() {
        let p = policy();
        let t = p.accept_target(Kib(40_002), Source::Xenstore).unwrap();
        assert_eq!((t.pages, t.clamp), (Pages(10_000), None));
        let t = p.accept_target(Kib(0), Source::Xenstore).unwrap();
        assert_eq!((t.pages, t.clamp), (Pages(1000), Some(Clamp::ToFloor)));
        let t = p.accept_target(Kib(u64::MAX), Source::Xenstore).unwrap();
        assert_eq!((t.pages, t.clamp), (Pages(100_000), Some(Clamp::ToMax)));
        assert_eq!(
            p.accept_target(Kib(3999), Source::Sysctl),
            Err(Refusal::BelowFloor(Kib(4000)))
        );
        assert_eq!(
            p.accept_target(Kib(400_004), Source::Sysctl),
            Err(Refusal::AboveMax(Kib(400_000)))
        );
        assert_eq!(Refusal::BelowFloor(Kib(1)).errno(), Errno::EPERM);
        assert_eq!(Refusal::Malformed.errno(), Errno::EINVAL);
    }

    #[test]
    fn floor_knob_never_goes_below_safe() {
        let mut p = policy();
        assert_eq!(
            p.set_floor(Kib(3996)),
            Err(Refusal::BelowSafeFloor(Kib(4000)))
        );
        p.set_floor(Kib(8001)).unwrap();
        assert_eq!(p.floor(), Pages(2001), "KiB round up for a floor");
        assert_eq!(
            p.set_floor(Kib(400_004)),
            Err(Refusal::AboveMax(Kib(400_000)))
        );
        assert_eq!(p.floor(), Pages(2001));
        assert_eq!(p.effective(Pages(5)), Pages(2001));
        assert_eq!(p.effective(Pages(1 << 40)), Pages(100_000));
        // A maximum under the floor (xl mem-set 0 sets Xen's to 1 MiB):
        // the floor still wins, and stays when the maximum rises again.
        p.set_max(Pages(1500));
        assert_eq!((p.floor(), p.safe_floor()), (Pages(2001), Pages(1000)));
        assert_eq!(p.effective(Pages(5)), Pages(2001));
        assert_eq!(p.effective(Pages(1 << 40)), Pages(2001));
        p.set_max(Pages(100_000));
        assert_eq!(p.effective(Pages(50_000)), Pages(50_000));
    }

    #[test]
    fn toolstack_offset_is_what_xen_counts_beyond_static_max() {
        // PVH built with memory = maxmem = 1 GiB: 8 special pages and
        // 4 pages of ACPI tables above it.
        let gib = Kib(1 << 20);
        let off = |pvh, r, s, t| toolstack_offset(pvh, Pages(r), s, Kib(t));
        assert_eq!(off(true, 262_144 + 12, Some(gib), 1 << 20), Pages(12));
        assert_eq!(off(true, 262_144, Some(gib), 1 << 20), Pages(0));
        // Loaded again after xl mem-set 512m: static-max still says it.
        assert_eq!(off(true, 262_144 + 12, Some(gib), 1 << 19), Pages(12));
        // PV: the reservation is what xl calls memory.
        assert_eq!(off(false, 262_144 + 12, Some(gib), 1 << 20), Pages(0));
        // memory (256 MiB) < maxmem: the first target says it.
        assert_eq!(off(true, 65_536 + 8, Some(gib), 1 << 18), Pages(8));
        assert_eq!(off(true, 65_536 + 8, None, 1 << 18), Pages(8));
        // More than libxl's slack from both: no guess.
        assert_eq!(off(true, 262_144 + 257, Some(gib), 1 << 20), Pages(0));
        assert_eq!(off(true, 262_144 + 256, Some(gib), 1 << 20), Pages(256));
    }

    #[test]
    fn knobs_validate() {
        let mut p = policy();
        assert_eq!(p.set_batch(Pages(0)), Err(Refusal::OutOfRange));
        assert_eq!(p.set_batch(Pages(65537)), Err(Refusal::OutOfRange));
        p.set_batch(Pages(64)).unwrap();
        assert_eq!(p.batch(), Pages(64));
        let mut q = Policy::new(Pages(1), Pages(2), false);
        assert!(!q.hotplug());
        assert_eq!(q.set_hotplug(true), Err(Refusal::Unsupported));
        q.set_hotplug(false).unwrap();
        assert_eq!(Refusal::Unsupported.errno(), Errno::EOPNOTSUPP);
    }

    #[test]
    fn low_memory_guard() {
        let b = Pages(512);
        let mem = |free, freetarg| MemInfo {
            free: Pages(free),
            freetarg: Pages(freetarg),
            managed: Pages(1 << 20),
        };
        assert_eq!(inflate_allowance(mem(1000, 488), b), Pages(0));
        assert_eq!(inflate_allowance(mem(1001, 488), b), Pages(1));
        assert_eq!(inflate_allowance(mem(100_000, 488), b), b);
        assert_eq!(inflate_allowance(mem(0, 488), b), Pages(0));
        // A batch above one 2 MiB extent keeps the same reserve, and a
        // step takes at most what is above it.
        let big = Pages(65536);
        assert_eq!(inflate_allowance(mem(1001, 488), big), Pages(1));
        assert_eq!(inflate_allowance(mem(50_000, 488), big), Pages(49_000));
        assert_eq!(inflate_allowance(mem(1 << 20, 488), big), big);
    }
}
