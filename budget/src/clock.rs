//! Where the layer reads the time, so tests can drive it.
//!
//! ```
//! use std::time::Duration;
//! use brisk_budget::{Clock, ManualClock};
//!
//! let clock = ManualClock::new();
//! let start = clock.now();
//! clock.advance(Duration::from_millis(30));
//! assert_eq!(clock.now() - start, Duration::from_millis(30));
//! ```

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of monotonic time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// Tokio's clock (`tokio::time::Instant`): real time, or paused and advanced
/// time under `tokio::time::pause()`. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A clock that moves only when told to. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    base: Instant,
    offset_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at an arbitrary instant.
    pub fn new() -> Self {
        Self { base: Instant::now(), offset_nanos: Arc::new(AtomicU64::new(0)) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

/// The layer's clock: tokio's, read without a virtual call (the default, on
/// every request twice), or another one.
#[derive(Debug, Clone)]
pub(crate) enum TimeSource {
    Tokio,
    Custom(Arc<dyn Clock>),
}

impl TimeSource {
    pub(crate) fn of(clock: impl Clock) -> Self {
        if (&clock as &dyn Any).is::<TokioClock>() { TimeSource::Tokio } else { TimeSource::Custom(Arc::new(clock)) }
    }

    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match self {
            TimeSource::Tokio => TokioClock.now(),
            TimeSource::Custom(clock) => clock.now(),
        }
    }
}

/// The nanoseconds from `origin` to `at`: 0 if `at` is earlier, `u64::MAX`
/// past some 584 years.
pub(crate) fn nanos_since(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}
