//! Counters the driver reports under `hw.balloon.stats`. They only grow
//! (saturating), so a reader can take differences.

use crate::errno::Errno;
use crate::units::Pages;

/// The kind of step an error came from, for `hw.balloon.stats.last_error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// Giving pages to Xen.
    Inflate,
    /// Taking pages back from Xen.
    Deflate,
    /// Plugging a new segment.
    Plug,
    /// Unplugging a segment.
    Unplug,
}

impl StepKind {
    /// The word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Inflate => "inflate",
            StepKind::Deflate => "deflate",
            StepKind::Plug => "plug",
            StepKind::Unplug => "unplug",
        }
    }
}

/// The last error a step reported and the step it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastError {
    /// The error.
    pub errno: Errno,
    /// Where it happened.
    pub step: StepKind,
}

impl core::fmt::Display for LastError {
    /// `ENOMEM (12) in deflate`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} in {}", self.errno, self.step.as_str())
    }
}

/// What the worker has done since load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pages given to Xen.
    pub pages_inflated: Pages,
    /// Pages taken back from Xen.
    pub pages_deflated: Pages,
    /// Inflate steps carried out (one decrease_reservation batch each).
    pub inflate_steps: u64,
    /// Deflate steps carried out.
    pub deflate_steps: u64,
    /// Steps that did less than they asked.
    pub short_steps: u64,
    /// Waits scheduled by the back-off.
    pub retries: u64,
    /// Times the worker gave up on a target.
    pub gave_up: u64,
    /// Segments hot-plugged.
    pub segments_plugged: u64,
    /// Segments unplugged.
    pub segments_unplugged: u64,
    /// Targets accepted (clamped or not).
    pub targets_accepted: u64,
    /// Accepted targets that had to be clamped.
    pub targets_clamped: u64,
    /// Targets refused.
    pub targets_refused: u64,
    /// The last error a step reported.
    pub last_error: Option<LastError>,
}

/// `a + 1`, saturating.
pub(crate) fn bump(a: &mut u64) {
    *a = a.saturating_add(1);
}
