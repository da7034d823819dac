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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A source of monotonic time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// Tokio's clock (`tokio::time::Instant`): real time, or paused and advanced
/// time under `tokio::time::pause()`. The default for a layer built while
/// tokio's time is paused (see [`BudgetLayerBuilder::clock`](crate::BudgetLayerBuilder::clock)).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// The machine's monotonic clock read through the CPU's time-stamp counter
/// where it is invariant (through `quanta`, which falls back to the OS
/// monotonic clock elsewhere), as an [`Instant`]: 13–19 ns per read where
/// `Instant::now()` (`clock_gettime` through the vDSO) took 31–33 ns on the
/// virtual machine this crate is measured on (`budget/clock` bench); the
/// layer reads its clock twice per request. The default
/// for a layer built while tokio's time runs (see
/// [`BudgetLayerBuilder::clock`](crate::BudgetLayerBuilder::clock)).
///
/// Its first use in a process calibrates the counter against the OS clock
/// (up to 200 ms, once); a layer built with it does that when it is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

/// The counter's reading at one `Instant`: later readings are that `Instant`
/// plus the scaled difference.
struct Anchor {
    clock: quanta::Clock,
    raw: u64,
    at: Instant,
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();

impl MonotonicClock {
    fn anchor() -> &'static Anchor {
        ANCHOR.get_or_init(|| {
            let clock = quanta::Clock::new();
            let raw = clock.raw();
            Anchor { clock, raw, at: Instant::now() }
        })
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Instant {
        let a = Self::anchor();
        // A reading behind the anchor (another core's counter) counts as the anchor.
        a.at + Duration::from_nanos(a.clock.delta_as_nanos(a.raw, a.clock.raw()))
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

/// The layer's clock, read on every request twice: the two built-in ones
/// without a virtual call, or another one. The layer reads it as
/// [`ticks`](Self::ticks), plain nanoseconds: a request's latency is one
/// subtraction, with no `Instant` arithmetic.
#[derive(Debug, Clone)]
pub(crate) enum TimeSource {
    Monotonic,
    /// `epoch`: the clock's reading when the source was made; ticks count from it.
    Tokio {
        epoch: Instant,
    },
    Custom {
        clock: Arc<dyn Clock>,
        epoch: Instant,
    },
}

impl TimeSource {
    pub(crate) fn of(clock: impl Clock) -> Self {
        let any = &clock as &dyn Any;
        if any.is::<TokioClock>() {
            TimeSource::Tokio { epoch: TokioClock.now() }
        } else if any.is::<MonotonicClock>() {
            MonotonicClock::anchor();
            TimeSource::Monotonic
        } else {
            TimeSource::Custom { epoch: clock.now(), clock: Arc::new(clock) }
        }
    }

    /// The default: tokio's clock if its time is paused where the layer is
    /// built (a test under `start_paused`), else the monotonic clock.
    pub(crate) fn default_here() -> Self {
        if tokio_time_paused() { Self::of(TokioClock) } else { Self::of(MonotonicClock) }
    }

    /// Nanoseconds on this source's own timeline (since the counter's anchor,
    /// or since the source was made), never going back for a clock that does
    /// not: only differences between two readings mean anything.
    #[inline]
    pub(crate) fn ticks(&self) -> u64 {
        match self {
            TimeSource::Monotonic => {
                let a = MonotonicClock::anchor();
                a.clock.delta_as_nanos(a.raw, a.clock.raw())
            }
            TimeSource::Tokio { epoch } => nanos_since(*epoch, TokioClock.now()),
            TimeSource::Custom { clock, epoch } => nanos_since(*epoch, clock.now()),
        }
    }
}

/// Whether tokio's time is paused here: inside a runtime whose clock is
/// paused, tokio's time moves only when the runtime advances it, never while
/// this thread spins; running, it moves with the OS clock.
fn tokio_time_paused() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    let before = tokio::time::Instant::now();
    let start = Instant::now();
    while start.elapsed() < Duration::from_micros(2) {
        std::hint::spin_loop();
    }
    tokio::time::Instant::now() == before
}

/// The nanoseconds from `origin` to `at`: 0 if `at` is earlier, `u64::MAX`
/// past some 584 years.
pub(crate) fn nanos_since(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_is_detected() {
        assert!(tokio_time_paused());
        assert!(matches!(TimeSource::default_here(), TimeSource::Tokio { .. }));
    }

    #[tokio::test]
    async fn running_time_is_not_paused() {
        assert!(!tokio_time_paused());
        assert!(matches!(TimeSource::default_here(), TimeSource::Monotonic));
    }

    #[test]
    fn outside_a_runtime_time_is_not_paused() {
        assert!(!tokio_time_paused());
    }

    #[test]
    fn the_monotonic_clock_follows_the_os_clock() {
        let clock = MonotonicClock;
        let (ours, os) = (clock.now(), Instant::now());
        // Not a timing test: a lower bound, and an upper one far off.
        std::thread::sleep(Duration::from_millis(20));
        let (ours, os) = (clock.now() - ours, os.elapsed());
        assert!(ours >= Duration::from_millis(19), "{ours:?}");
        assert!(ours <= os + Duration::from_millis(5), "{ours:?} against {os:?}");
        let mut last = clock.now();
        for _ in 0..1_000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
    }
}
