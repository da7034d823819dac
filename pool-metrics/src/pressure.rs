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

    proptest::proptest! {
        /// Against a model: a warning comes exactly when waiters have been
        /// above the threshold without a break for at least the period, and
        /// no warning was given in this episode during the last period.
        #[test]
        fn warns_exactly_when_pressure_is_sustained(
            steps in proptest::collection::vec((0u64..4_000, 0usize..10), 1..60),
        ) {
            let period = Duration::from_millis(3_000);
            let t0 = Instant::now();
            let mut tracker = PressureTracker::new(5, period);
            let mut now = t0;
            let mut episode_start: Option<Instant> = None;
            let mut last_warning: Option<Instant> = None;
            for (dt, waiting) in steps {
                now += Duration::from_millis(dt);
                let verdict = tracker.observe(waiting, now);
                if waiting <= 5 {
                    episode_start = None;
                    last_warning = None;
                    proptest::prop_assert_eq!(verdict, Pressure::Normal);
                    continue;
                }
                let start = *episode_start.get_or_insert(now);
                let due = now - start >= period && last_warning.is_none_or(|at| now - at >= period);
                if due {
                    last_warning = Some(now);
                    proptest::prop_assert_eq!(verdict, Pressure::Sustained { waiting, for_: now - start });
                } else {
                    proptest::prop_assert_eq!(verdict, Pressure::Normal);
                }
            }
        }
    }

    #[test]
    fn threshold_is_exclusive() {
        let t0 = Instant::now();
        let mut p = PressureTracker::new(5, Duration::ZERO);
        assert_eq!(p.observe(5, t0), Pressure::Normal);
        assert_eq!(p.observe(6, t0), Pressure::Sustained { waiting: 6, for_: Duration::ZERO });
    }
}
