//! Time sources: the system clock and a fake clock for tests.
//!
//! ```
//! use brisk_ratelimit::clock::{Clock, FakeClock};
//! use std::time::Duration;
//!
//! let clock = FakeClock::new();
//! let before = clock.now_micros();
//! clock.advance(Duration::from_millis(5));
//! assert_eq!(clock.now_micros() - before, 5_000);
//! ```

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of time in microseconds.
///
/// The in-memory store, the blocked-key cache and the circuit breaker read
/// it; the Redis store reads Redis `TIME` instead, so that every instance of a
/// fleet agrees on one clock.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Microseconds since an arbitrary fixed origin; never goes backwards.
    fn now_micros(&self) -> u64;
}

/// Wall-clock microseconds since the Unix epoch, made monotonic: the wall
/// clock is read once at creation, and time advances by the CPU's time-stamp
/// counter (through `quanta`, as governor does), a few nanoseconds per read
/// instead of a `clock_gettime`. `quanta` uses the counter only where it is
/// invariant (constant rate, synchronised across cores) and the OS monotonic
/// clock elsewhere.
#[derive(Debug, Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
    origin: u64,
    origin_micros: u64,
}

impl SystemClock {
    /// A clock starting at the current wall-clock time.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin_micros =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default();
        SystemClock { origin: clock.raw(), clock, origin_micros }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_micros(&self) -> u64 {
        self.origin_micros + self.clock.delta_as_nanos(self.origin, self.clock.raw()) / 1_000
    }
}

/// A clock that only moves when told to. Clones share one time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    now: Arc<AtomicU64>,
}

impl FakeClock {
    /// A fake clock at a fixed, realistic epoch time (2023-11-14T22:13:20Z).
    pub fn new() -> Self {
        Self::starting_at(1_700_000_000_000_000)
    }

    /// A fake clock at `micros` microseconds.
    pub fn starting_at(micros: u64) -> Self {
        FakeClock { now: Arc::new(AtomicU64::new(micros)) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FakeClock {
    fn now_micros(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// A clock as the crate keeps it: the system clock read inline (the hot path
/// of the in-memory store), any other through the trait.
#[derive(Debug, Clone)]
pub(crate) enum SharedClock {
    System(SystemClock),
    Other(Arc<dyn Clock>),
}

impl SharedClock {
    pub(crate) fn new<C: Clock>(clock: C) -> SharedClock {
        match (&clock as &dyn std::any::Any).downcast_ref::<SystemClock>() {
            Some(system) => SharedClock::System(system.clone()),
            None => SharedClock::Other(Arc::new(clock)),
        }
    }

    #[inline(always)]
    pub(crate) fn now_micros(&self) -> u64 {
        match self {
            SharedClock::System(clock) => clock.now_micros(),
            SharedClock::Other(clock) => clock.now_micros(),
        }
    }
}
