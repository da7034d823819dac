//! A circuit breaker in front of the store, on the limiter's clock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parking_lot::Mutex;

/// Whether a call may go to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Closed: call.
    Call,
    /// Half-open: this call is the probe.
    Probe,
    /// Open: use the fallback.
    Skip,
}

/// A change between the store and the fallback, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened,
    Closed,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    open: AtomicBool,
    failures: AtomicU32,
    state: Mutex<OpenState>,
    threshold: u32,
    cooldown: u64,
    probe_timeout: u64,
}

#[derive(Debug)]
struct OpenState {
    /// While open: when the next probe may go.
    retry_at: u64,
    /// Start of the probe in flight, if any.
    probing_since: Option<u64>,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures; probes every `cooldown` µs.
    pub(crate) fn new(threshold: u32, cooldown: u64, probe_timeout: u64) -> Self {
        Breaker {
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            state: Mutex::new(OpenState { retry_at: 0, probing_since: None }),
            threshold: threshold.max(1),
            cooldown,
            probe_timeout,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn permit(&self, now: u64) -> Permit {
        if !self.open.load(Ordering::Acquire) {
            return Permit::Call;
        }
        let mut state = self.state.lock();
        if !self.open.load(Ordering::Acquire) {
            return Permit::Call;
        }
        match state.probing_since {
            // A probe that never reported (its caller was cancelled) does not block forever.
            Some(since) if now.saturating_sub(since) < self.probe_timeout => Permit::Skip,
            _ if now >= state.retry_at => {
                state.probing_since = Some(now);
                Permit::Probe
            }
            _ => Permit::Skip,
        }
    }

    pub(crate) fn record(&self, ok: bool, now: u64) -> Option<Transition> {
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            if self.open.load(Ordering::Acquire) {
                let mut state = self.state.lock();
                if self.open.swap(false, Ordering::AcqRel) {
                    state.probing_since = None;
                    return Some(Transition::Closed);
                }
            }
            return None;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let mut state = self.state.lock();
        if self.open.load(Ordering::Acquire) {
            // A failed probe: wait another cooldown.
            state.probing_since = None;
            state.retry_at = now + self.cooldown;
            return None;
        }
        if failures >= self.threshold {
            state.probing_since = None;
            state.retry_at = now + self.cooldown;
            self.open.store(true, Ordering::Release);
            return Some(Transition::Opened);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_cooldown_and_closes() {
        let b = Breaker::new(2, 1_000, 500);
        assert_eq!(b.permit(0), Permit::Call);
        assert_eq!(b.record(false, 0), None);
        assert_eq!(b.record(false, 1), Some(Transition::Opened));
        assert_eq!(b.permit(500), Permit::Skip);
        assert_eq!(b.permit(1_001), Permit::Probe);
        assert_eq!(b.permit(1_002), Permit::Skip, "one probe at a time");
        assert_eq!(b.record(false, 1_003), None);
        assert_eq!(b.permit(1_500), Permit::Skip);
        assert_eq!(b.permit(2_003), Permit::Probe);
        assert_eq!(b.record(true, 2_004), Some(Transition::Closed));
        assert_eq!(b.permit(2_005), Permit::Call);
    }

    #[test]
    fn lost_probe_is_replaced() {
        let b = Breaker::new(1, 100, 50);
        b.record(false, 0);
        assert_eq!(b.permit(100), Permit::Probe);
        assert_eq!(b.permit(149), Permit::Skip);
        assert_eq!(b.permit(150), Permit::Probe);
    }
}
