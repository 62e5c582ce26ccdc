//! When to try again after a step that did less than it asked.
//!
//! Users' worst balloon experiences are a guest spinning at 100% CPU on a
//! target the host cannot meet, and one that never stops retrying
//! (REFERENCE.md §7). The rule here: after a short or failed step, wait
//! `initial` (1 s), doubling each time up to `max_delay` (32 s); after
//! `max_retries` (4) shortfalls in a row, give up until something changes
//! (a new target or a knob). A step that does all it asked resets it. A
//! `max_retries` of 0 means never give up, as Linux's `max_retry_count`.

use crate::units::{Millis, Uptime};

/// The back-off knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first delay after a shortfall.
    pub initial: Millis,
    /// The longest delay.
    pub max_delay: Millis,
    /// Shortfalls in a row before giving up; 0 = retry forever.
    pub max_retries: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Millis(1000),
            max_delay: Millis(32_000),
            max_retries: 4,
        }
    }
}

/// The limits the retry knobs must stay within: a delay of at least 1 ms
/// (0 would spin) and at most one day (`mstohz` of more overflows an
/// `int` of ticks at high HZ).
pub const MAX_DELAY_LIMIT: Millis = Millis(86_400_000);

impl BackoffConfig {
    /// True when the knobs make sense together.
    pub fn is_valid(&self) -> bool {
        self.initial.0 >= 1 && self.initial <= self.max_delay && self.max_delay <= MAX_DELAY_LIMIT
    }
}

/// What to do after a shortfall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Try again at this time.
    At(Uptime),
    /// Stop until the target or a knob changes.
    GiveUp,
}

/// The back-off state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    config: BackoffConfig,
    /// Shortfalls in a row.
    shortfalls: u32,
    /// The delay the next shortfall waits.
    next_delay: Millis,
    /// When the current wait ends, if waiting.
    until: Option<Uptime>,
    gave_up: bool,
}

impl Backoff {
    /// Fresh back-off with these knobs.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            shortfalls: 0,
            next_delay: config.initial,
            until: None,
            gave_up: false,
        }
    }

    /// The knobs in force.
    pub fn config(&self) -> BackoffConfig {
        self.config
    }

    /// New knobs; resets the state (a changed knob is a reason to try again).
    pub fn set_config(&mut self, config: BackoffConfig) {
        *self = Backoff::new(config);
    }

    /// Something changed (target, knob): forget past shortfalls.
    pub fn reset(&mut self) {
        *self = Backoff::new(self.config);
    }

    /// A step did all it asked.
    pub fn progress(&mut self) {
        self.reset();
    }

    /// A step fell short at `now`: when to try again, or give up.
    pub fn shortfall(&mut self, now: Uptime) -> Retry {
        self.shortfalls = self.shortfalls.saturating_add(1);
        if self.config.max_retries != 0 && self.shortfalls > self.config.max_retries {
            self.gave_up = true;
            self.until = None;
            return Retry::GiveUp;
        }
        let delay = self.next_delay.min(self.config.max_delay);
        self.next_delay = Millis(delay.0.saturating_mul(2)).min(self.config.max_delay);
        let at = now.after(delay);
        self.until = Some(at);
        Retry::At(at)
    }

    /// When the current wait ends, if it has not yet at `now`.
    pub fn waiting_until(&self, now: Uptime) -> Option<Uptime> {
        self.until.filter(|&t| now < t)
    }

    /// True after giving up, until [`Backoff::reset`].
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Shortfalls in a row so far.
    pub fn shortfalls(&self) -> u32 {
        self.shortfalls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_then_gives_up() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut now = Uptime(0);
        let mut delays = std::vec::Vec::new();
        while let Retry::At(t) = b.shortfall(now) {
            delays.push(t.0 - now.0);
            assert_eq!(b.waiting_until(now), Some(t));
            assert_eq!(b.waiting_until(t), None);
            now = t;
        }
        assert_eq!(delays, [1000, 2000, 4000, 8000]);
        assert!(b.gave_up());
        b.reset();
        assert!(!b.gave_up());
        assert_eq!(b.shortfall(now), Retry::At(now.after(Millis(1000))));
    }

    #[test]
    fn caps_the_delay_and_retries_forever_when_asked() {
        let cfg = BackoffConfig {
            initial: Millis(1000),
            max_delay: Millis(32_000),
            max_retries: 0,
        };
        let mut b = Backoff::new(cfg);
        let mut last = 0;
        for _ in 0..100 {
            match b.shortfall(Uptime(0)) {
                Retry::At(t) => last = t.0,
                Retry::GiveUp => panic!("max_retries 0 never gives up"),
            }
        }
        assert_eq!(last, 32_000);
    }

    #[test]
    fn progress_resets() {
        let mut b = Backoff::new(BackoffConfig::default());
        b.shortfall(Uptime(0));
        b.shortfall(Uptime(0));
        b.progress();
        assert_eq!(b.shortfalls(), 0);
        assert_eq!(b.shortfall(Uptime(5)), Retry::At(Uptime(1005)));
    }

    #[test]
    fn config_validity() {
        assert!(BackoffConfig::default().is_valid());
        let bad = BackoffConfig {
            initial: Millis(0),
            ..BackoffConfig::default()
        };
        assert!(!bad.is_valid());
        let inverted = BackoffConfig {
            initial: Millis(5000),
            max_delay: Millis(1000),
            max_retries: 1,
        };
        assert!(!inverted.is_valid());
    }
}
