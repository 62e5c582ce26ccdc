//! A budget for kernel log lines, so a storm of target requests cannot
//! flood dmesg.
//!
//! The shape is ratecheck(9)'s, with a burst: at most `burst` lines in
//! each window of `window`. A line over budget is not lost when it
//! matters: the driver holds back the newest outcome line and prints it,
//! after a count of what was dropped, once the window reopens (see
//! [`crate::driver`]). The budget itself is pure: it is given the time.

use crate::units::{Millis, Uptime};

/// Lines allowed in one window.
pub const LOG_BURST: u32 = 5;
/// The window.
pub const LOG_WINDOW: Millis = Millis(10_000);

/// What the budget says of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Print it.
    Print,
    /// Over budget until the given time.
    OverUntil(Uptime),
}

/// At most `burst` lines per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBudget {
    window: Millis,
    burst: u32,
    /// Start of the current window, if one has begun.
    opened: Option<Uptime>,
    /// Lines printed in it.
    used: u32,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new(LOG_WINDOW, LOG_BURST)
    }
}

impl LogBudget {
    /// A budget of `burst` lines (at least one) per `window`.
    pub const fn new(window: Millis, burst: u32) -> LogBudget {
        LogBudget {
            window,
            burst: if burst == 0 { 1 } else { burst },
            opened: None,
            used: 0,
        }
    }

    /// When a window that is used up reopens; `None` when a line may be
    /// printed now or no window has begun.
    pub fn reopens_at(&self) -> Option<Uptime> {
        match self.opened {
            Some(t) if self.used >= self.burst => Some(t.after(self.window)),
            _ => None,
        }
    }

    /// Whether a line may be printed at `now`; counts it if so.
    pub fn admit(&mut self, now: Uptime) -> Verdict {
        let fresh = match self.opened {
            None => true,
            // A clock that went backwards opens a new window too.
            Some(t) => now < t || now >= t.after(self.window),
        };
        if fresh {
            self.opened = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Verdict::Print
        } else {
            let opened = self.opened.unwrap_or(now);
            Verdict::OverUntil(opened.after(self.window))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_silence_then_a_new_window() {
        let mut b = LogBudget::new(Millis(10_000), 3);
        for t in [0, 1, 2] {
            assert_eq!(b.admit(Uptime(t)), Verdict::Print);
        }
        assert_eq!(b.admit(Uptime(3)), Verdict::OverUntil(Uptime(10_000)));
        assert_eq!(b.admit(Uptime(9_999)), Verdict::OverUntil(Uptime(10_000)));
        assert_eq!(b.admit(Uptime(10_000)), Verdict::Print);
        assert_eq!(b.admit(Uptime(10_001)), Verdict::Print);
    }

    #[test]
    fn a_clock_going_backwards_never_silences_for_ever() {
        let mut b = LogBudget::new(Millis(10_000), 1);
        assert_eq!(b.admit(Uptime(50_000)), Verdict::Print);
        assert_eq!(b.admit(Uptime(50_001)), Verdict::OverUntil(Uptime(60_000)));
        assert_eq!(b.admit(Uptime(10)), Verdict::Print);
    }

    #[test]
    fn zero_burst_still_prints_one_line_per_window() {
        let mut b = LogBudget::new(Millis(100), 0);
        assert_eq!(b.admit(Uptime(0)), Verdict::Print);
        assert_eq!(b.admit(Uptime(1)), Verdict::OverUntil(Uptime(100)));
    }

    #[test]
    fn lines_in_any_window_never_exceed_the_burst() {
        let mut b = LogBudget::default();
        let mut printed = std::vec::Vec::new();
        // A line every 7 ms for a minute.
        for t in (0..60_000).step_by(7) {
            if b.admit(Uptime(t)) == Verdict::Print {
                printed.push(t);
            }
        }
        for (i, &t) in printed.iter().enumerate() {
            let in_window = printed[i..]
                .iter()
                .take_while(|&&u| u < t + LOG_WINDOW.0)
                .count();
            assert!(in_window <= 2 * LOG_BURST as usize, "at {t}: {in_window}");
        }
        // 6 windows, a full burst in each.
        assert_eq!(printed.len(), 6 * LOG_BURST as usize);
    }
}
