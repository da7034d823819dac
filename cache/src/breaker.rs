//! A circuit breaker for the L2 tier: pure state, time from the caller.

use parking_lot::Mutex;

/// The state of the L2 circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Redis is called.
    Closed,
    /// Redis is not called until the open period ends.
    Open,
    /// One probe call is allowed; its outcome closes or re-opens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until_ms: u64 },
    HalfOpen { probe_started_ms: u64 },
}

/// Opens after `threshold` consecutive failures, stays open for `open_ms`,
/// then lets one probe through. A probe that never reports back (its future
/// was dropped) is replaced by another after `open_ms`.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    open_ms: u64,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_ms: u64) -> Self {
        Self { threshold: threshold.max(1), open_ms, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    /// Whether a call may go to Redis now.
    pub(crate) fn allow(&self, now_ms: u64) -> bool {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until_ms } if now_ms >= until_ms => {
                *state = State::HalfOpen { probe_started_ms: now_ms };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probe_started_ms } if now_ms >= probe_started_ms.saturating_add(self.open_ms) => {
                *state = State::HalfOpen { probe_started_ms: now_ms };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    pub(crate) fn success(&self) {
        *self.state.lock() = State::Closed { failures: 0 };
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub(crate) fn failure(&self, now_ms: u64) -> bool {
        let mut state = self.state.lock();
        match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed { failures: failures + 1 };
                false
            }
            State::Open { .. } => false,
            _ => {
                *state = State::Open { until_ms: now_ms.saturating_add(self.open_ms) };
                true
            }
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.state.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once() {
        let b = Breaker::new(3, 1_000);
        assert!(b.allow(0));
        assert!(!b.failure(0));
        b.success();
        assert!(!b.failure(1));
        assert!(!b.failure(2));
        assert!(b.failure(3), "third consecutive failure opens");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(500));
        assert!(b.allow(1_003), "the open period is over: one probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(1_004), "only one probe at a time");
        assert!(b.failure(1_010), "a failed probe re-opens");
        assert!(!b.allow(1_500));
        assert!(b.allow(2_010));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(2_011));
    }

    #[test]
    fn a_lost_probe_is_replaced() {
        let b = Breaker::new(1, 100);
        b.failure(0);
        assert!(b.allow(100));
        assert!(!b.allow(150));
        assert!(b.allow(200), "the first probe never reported back");
    }
}
