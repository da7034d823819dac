//! What is recorded per pool, shared by the collector and the instrumented pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool::Status;
use deadpool::managed::{PoolError, TimeoutType};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::held::{Held, HeldConnections};
use crate::labels::PoolLabels;
use crate::pressure::{Pressure, PressureTracker};

/// Reads a pool's status; `None` once the pool has been dropped.
pub(crate) type StatusSource = Box<dyn Fn() -> Option<Status> + Send + Sync>;

/// Settings shared by every pool of one [`PoolMetrics`](crate::PoolMetrics).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) opentelemetry_names: bool,
    pub(crate) db_pool_size: bool,
    pub(crate) pressure_threshold: usize,
    pub(crate) pressure_period: Duration,
    pub(crate) held_too_long: Option<Duration>,
    pub(crate) wait_buckets: Vec<f64>,
    pub(crate) use_buckets: Vec<f64>,
    pub(crate) create_buckets: Vec<f64>,
}

/// Why a checkout failed, as the `reason` label of the timeouts counter.
pub(crate) const TIMEOUT_REASONS: [&str; 3] = ["wait", "create", "recycle"];
/// Why a checkout failed, as the `reason` label of the errors counter.
pub(crate) const ERROR_REASONS: [&str; 5] = ["backend", "closed", "no_runtime", "post_create_hook", "cancelled"];

pub(crate) struct PoolState {
    pub(crate) name: Arc<str>,
    /// The label sets of the pool's samples, rendered once.
    pub(crate) labels: PoolLabels,
    pub(crate) settings: Arc<Settings>,
    source: RwLock<Option<StatusSource>>,
    /// Whether checkouts are recorded (an [`InstrumentedPool`](crate::InstrumentedPool)),
    /// so that the checkout histograms and counters mean something.
    pub(crate) instrumented: AtomicBool,
    /// Whether creations are recorded (a `post_create` hook).
    pub(crate) hooked: AtomicBool,
    peak_waiting: AtomicUsize,
    pub(crate) wait_time: Histogram,
    pub(crate) use_time: Histogram,
    pub(crate) create_time: Histogram,
    pub(crate) created: Counter,
    pub(crate) timeouts: [Counter; 3],
    pub(crate) errors: [Counter; 5],
    pub(crate) held_too_long: Counter,
    held: Mutex<HeldConnections>,
    pressure: Mutex<PressureTracker>,
    pressure_active: AtomicBool,
}

impl std::fmt::Debug for PoolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolState")
            .field("name", &self.name)
            .field("instrumented", &self.instrumented.load(Ordering::Relaxed))
            .field("hooked", &self.hooked.load(Ordering::Relaxed))
            .field("peak_waiting", &self.peak_waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PoolState {
    pub(crate) fn new(name: Arc<str>, settings: Arc<Settings>) -> Self {
        let pressure = PressureTracker::new(settings.pressure_threshold, settings.pressure_period);
        Self {
            labels: PoolLabels::new(&name),
            name,
            source: RwLock::new(None),
            instrumented: AtomicBool::new(false),
            hooked: AtomicBool::new(false),
            peak_waiting: AtomicUsize::new(0),
            wait_time: Histogram::new(settings.wait_buckets.iter().copied()),
            use_time: Histogram::new(settings.use_buckets.iter().copied()),
            create_time: Histogram::new(settings.create_buckets.iter().copied()),
            created: Counter::default(),
            timeouts: Default::default(),
            errors: Default::default(),
            held_too_long: Counter::default(),
            held: Mutex::new(HeldConnections::default()),
            pressure: Mutex::new(pressure),
            pressure_active: AtomicBool::new(false),
            settings,
        }
    }

    pub(crate) fn set_source(&self, source: StatusSource) {
        *self.source.write() = Some(source);
    }

    /// The pool's status, `None` when no pool is watched or it was dropped.
    pub(crate) fn status(&self) -> Option<Status> {
        self.source.read().as_ref().and_then(|read| read())
    }

    /// Records the number of tasks waiting for a connection, seen by a
    /// checkout once it has queued (or been served).
    pub(crate) fn observe_waiting(&self, waiting: usize) {
        // Most checkouts see no waiters: read before writing the shared line.
        if waiting > self.peak_waiting.load(Ordering::Relaxed) {
            self.peak_waiting.fetch_max(waiting, Ordering::Relaxed);
        }
        if self.may_be_under_pressure(waiting) {
            self.observe_pressure(waiting, Instant::now());
        }
    }

    /// `false` when an observation of `waiting` cannot change the pressure
    /// state: the hot path then reads no clock and takes no lock.
    fn may_be_under_pressure(&self, waiting: usize) -> bool {
        waiting > self.settings.pressure_threshold || self.pressure_active.load(Ordering::Relaxed)
    }

    /// The highest number of waiters since the last call, at least `current`;
    /// resets the peak.
    pub(crate) fn take_peak(&self, current: usize) -> usize {
        self.peak_waiting.swap(0, Ordering::Relaxed).max(current)
    }

    pub(crate) fn observe_pressure(&self, waiting: usize, now: Instant) {
        if !self.may_be_under_pressure(waiting) {
            return;
        }
        let (verdict, threshold) = {
            let mut tracker = self.pressure.lock();
            let verdict = tracker.observe(waiting, now);
            self.pressure_active.store(tracker.is_tracking(), Ordering::Relaxed);
            (verdict, tracker.threshold())
        };
        if let Pressure::Sustained { waiting, for_ } = verdict {
            tracing::warn!(
                pool = %self.name,
                waiting,
                threshold,
                for_ms = u64::try_from(for_.as_millis()).unwrap_or(u64::MAX),
                "connection pool under sustained pressure: tasks keep waiting for a connection; \
                 raise max_size, shorten the time connections are held, or shed load"
            );
        }
    }

    pub(crate) fn record_failure<E>(&self, error: &PoolError<E>) {
        let (counter, reason) = match error {
            PoolError::Timeout(TimeoutType::Wait) => (&self.timeouts[0], TIMEOUT_REASONS[0]),
            PoolError::Timeout(TimeoutType::Create) => (&self.timeouts[1], TIMEOUT_REASONS[1]),
            PoolError::Timeout(TimeoutType::Recycle) => (&self.timeouts[2], TIMEOUT_REASONS[2]),
            PoolError::Backend(_) => (&self.errors[0], ERROR_REASONS[0]),
            PoolError::Closed => (&self.errors[1], ERROR_REASONS[1]),
            PoolError::NoRuntimeSpecified => (&self.errors[2], ERROR_REASONS[2]),
            PoolError::PostCreateHook(_) => (&self.errors[3], ERROR_REASONS[3]),
        };
        counter.inc();
        tracing::debug!(pool = %self.name, reason, "connection checkout failed");
    }

    pub(crate) fn record_cancelled(&self) {
        self.errors[4].inc();
        tracing::debug!(pool = %self.name, reason = ERROR_REASONS[4], "connection checkout abandoned by its caller");
    }

    /// A connection was checked out at `now`: remembers it (with the current
    /// span) when held-too-long detection is on.
    pub(crate) fn checked_out(&self, now: Instant) -> Option<usize> {
        self.settings.held_too_long?;
        let held = Held { since: now, holder: tracing::Span::current(), reported: false };
        Some(self.held.lock().insert(held))
    }

    /// A connection went back to the pool after being held for `held_for`.
    pub(crate) fn checked_in(&self, key: Option<usize>, held_for: Duration) {
        self.use_time.observe(held_for.as_secs_f64());
        let (Some(limit), Some(key)) = (self.settings.held_too_long, key) else { return };
        let held = self.held.lock().remove(key);
        if let Some(held) = held
            && held_for >= limit
            && !held.reported
        {
            self.report_held_too_long(held_for, limit, &held.holder, false);
        }
    }

    /// Reports the connections that have been held too long and are still
    /// out, once each.
    pub(crate) fn report_overdue(&self, now: Instant) {
        let Some(limit) = self.settings.held_too_long else { return };
        let overdue = self.held.lock().newly_overdue(now, limit);
        for (held_for, holder) in overdue {
            self.report_held_too_long(held_for, limit, &holder, true);
        }
    }

    fn report_held_too_long(&self, held_for: Duration, limit: Duration, holder: &tracing::Span, still_held: bool) {
        self.held_too_long.inc();
        let held_ms = u64::try_from(held_for.as_millis()).unwrap_or(u64::MAX);
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let name = holder.metadata().map_or("none", |m| m.name());
        tracing::warn!(
            parent: holder,
            pool = %self.name, held_ms, limit_ms, holder = name, still_held,
            "connection held longer than the threshold"
        );
    }
}
