//! When is a pool under pressure? A small pure state machine: time is passed
//! in, so it is tested without clocks.

use std::time::{Duration, Instant};

/// Tracks how long the number of waiters has stayed above a threshold.
#[derive(Debug, Clone)]
pub(crate) struct PressureTracker {
    threshold: usize,
    period: Duration,
    above_since: Option<Instant>,
    last_warned: Option<Instant>,
}

/// What an observation of the waiter count concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pressure {
    /// At or below the threshold, or above it for less than the period.
    Normal,
    /// Above the threshold for at least the period; warn now. Repeated at
    /// most once per period while the pressure lasts.
    Sustained { waiting: usize, for_: Duration },
}

impl PressureTracker {
    pub(crate) fn new(threshold: usize, period: Duration) -> Self {
        Self { threshold, period, above_since: None, last_warned: None }
    }

    /// `true` when an observation could change the state, so callers can skip
    /// taking a lock on the hot path.
    pub(crate) fn is_tracking(&self) -> bool {
        self.above_since.is_some()
    }

    pub(crate) fn threshold(&self) -> usize {
        self.threshold
    }

    /// Records that `waiting` tasks were waiting at `now`.
    pub(crate) fn observe(&mut self, waiting: usize, now: Instant) -> Pressure {
        if waiting <= self.threshold {
            self.above_since = None;
            self.last_warned = None;
            return Pressure::Normal;
        }
        let since = *self.above_since.get_or_insert(now);
        let lasted = now.saturating_duration_since(since);
        if lasted < self.period {
            return Pressure::Normal;
        }
        let due = self.last_warned.is_none_or(|at| now.saturating_duration_since(at) >= self.period);
        if due {
            self.last_warned = Some(now);
            Pressure::Sustained { waiting, for_: lasted }
        } else {
            Pressure::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn short_spikes_do_not_warn() {
        let t0 = Instant::now();
        let mut p = PressureTracker::new(5, 10 * S);
        assert_eq!(p.observe(6, t0), Pressure::Normal);
        assert_eq!(p.observe(50, t0 + 9 * S), Pressure::Normal);
        assert_eq!(p.observe(5, t0 + 10 * S), Pressure::Normal);
        // The episode restarted: another 10 s are needed.
        assert_eq!(p.observe(6, t0 + 11 * S), Pressure::Normal);
        assert_eq!(p.observe(6, t0 + 20 * S), Pressure::Normal);
        assert!(p.is_tracking());
    }

    #[test]
    fn sustained_pressure_warns_once_per_period() {
        let t0 = Instant::now();
        let mut p = PressureTracker::new(5, 10 * S);
        assert_eq!(p.observe(6, t0), Pressure::Normal);
        assert_eq!(p.observe(7, t0 + 10 * S), Pressure::Sustained { waiting: 7, for_: 10 * S });
        assert_eq!(p.observe(8, t0 + 15 * S), Pressure::Normal);
        assert_eq!(p.observe(9, t0 + 20 * S), Pressure::Sustained { waiting: 9, for_: 20 * S });
        assert_eq!(p.observe(0, t0 + 21 * S), Pressure::Normal);
        assert!(!p.is_tracking());
    }

    #[test]
    fn threshold_is_exclusive() {
        let t0 = Instant::now();
        let mut p = PressureTracker::new(5, Duration::ZERO);
        assert_eq!(p.observe(5, t0), Pressure::Normal);
        assert_eq!(p.observe(6, t0), Pressure::Sustained { waiting: 6, for_: Duration::ZERO });
    }
}
