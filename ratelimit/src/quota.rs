//! Quotas and named policies.
//!
//! ```
//! use brisk_ratelimit::{Algorithm, OnStoreError, Policy, Quota};
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//!
//! // 1000 requests per 15 minutes, with a burst of all 1000 at once.
//! let api = Policy::new("api", Quota::per_period(NonZeroU32::new(1000).unwrap(), Duration::from_secs(15 * 60)).unwrap());
//! // 10 per hour, counted in a sliding window, refused while Redis is down.
//! let deploy = Policy::new("deploy", Quota::per_hour(NonZeroU32::new(10).unwrap()))
//!     .algorithm(Algorithm::SlidingWindow)
//!     .on_store_error(OnStoreError::FailClosed);
//! assert_eq!(api.quota().limit().get(), 1000);
//! assert_eq!(deploy.name(), "deploy");
//! ```

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// How many requests a policy admits per period, and how many at once.
///
/// A quota of `limit` per `period` replenishes one unit every
/// `period / limit` (the *emission interval*, rounded down to a whole
/// microsecond) and holds at most `burst` units (default: `limit`). A fresh
/// key can therefore spend `burst` units at once, then one per emission
/// interval.
///
/// The window algorithms count `limit` per `period` and ignore `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
}

/// The reason a [`Quota`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a quota of {limit} per {period:?} replenishes faster than one unit per microsecond")]
pub struct QuotaError {
    limit: u32,
    period: Duration,
}

impl Quota {
    /// `limit` units per `period`, burst = `limit`.
    ///
    /// Fails when the period is shorter than `limit` microseconds (the finest
    /// resolution of the limiter).
    pub fn per_period(limit: NonZeroU32, period: Duration) -> Result<Quota, QuotaError> {
        if period.as_micros() < u128::from(limit.get()) {
            return Err(QuotaError { limit: limit.get(), period });
        }
        Ok(Quota { limit, period, burst: limit })
    }

    /// `limit` units per second.
    ///
    /// # Panics
    /// When `limit` exceeds 1,000,000 (faster than one per microsecond).
    pub fn per_second(limit: NonZeroU32) -> Quota {
        Self::per_period(limit, Duration::from_secs(1)).expect("at most 1,000,000 per second")
    }

    /// `limit` units per minute.
    ///
    /// # Panics
    /// When `limit` exceeds 60,000,000.
    pub fn per_minute(limit: NonZeroU32) -> Quota {
        Self::per_period(limit, Duration::from_secs(60)).expect("at most 60,000,000 per minute")
    }

    /// `limit` units per hour. Never panics; a limit above 3,600,000,000 is
    /// replenished at the finest rate, one per microsecond.
    pub fn per_hour(limit: NonZeroU32) -> Quota {
        Quota { limit, period: Duration::from_secs(3600), burst: limit }
    }

    /// `limit` units per day (never panics).
    pub fn per_day(limit: NonZeroU32) -> Quota {
        Quota { limit, period: Duration::from_secs(86_400), burst: limit }
    }

    /// Sets how many units a fresh key may spend at once (GCRA only).
    #[must_use]
    pub fn with_burst(mut self, burst: NonZeroU32) -> Quota {
        self.burst = burst;
        self
    }

    /// Units per period.
    pub fn limit(&self) -> NonZeroU32 {
        self.limit
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Units that can be spent at once (GCRA).
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The GCRA emission interval: time to replenish one unit, in whole microseconds (at least 1).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.emission_interval_micros())
    }

    pub(crate) fn emission_interval_micros(&self) -> u64 {
        ((self.period.as_micros() / u128::from(self.limit.get())) as u64).max(1)
    }

    pub(crate) fn period_micros(&self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// This quota shared among `instances` processes: limit and burst divided
    /// (rounded down, at least 1), same period.
    pub fn divided_among(&self, instances: NonZeroU32) -> Quota {
        let div = |n: NonZeroU32| NonZeroU32::new(n.get() / instances.get()).unwrap_or(NonZeroU32::MIN);
        let limit = div(self.limit);
        Quota { limit, period: self.period.max(Duration::from_micros(u64::from(limit.get()))), burst: div(self.burst) }
    }
}

/// The counting algorithm of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// The generic cell rate algorithm (a leaky bucket kept as one timestamp):
    /// smooth, with a burst. The default.
    #[default]
    Gcra,
    /// A sliding-window counter: the previous window's count weighted by its
    /// overlap with the last `period`, plus the current window's count.
    SlidingWindow,
    /// A fixed window aligned on multiples of `period` since the Unix epoch.
    FixedWindow,
}

impl Algorithm {
    /// A short lower-case name (`gcra`, `sliding_window`, `fixed_window`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Gcra => "gcra",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::FixedWindow => "fixed_window",
        }
    }
}

/// What a policy does when its store (Redis) fails, times out or the circuit
/// breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Admit the request as if the policy did not exist.
    FailOpen,
    /// Refuse the request: the layer answers `503 Service Unavailable`.
    FailClosed,
    /// Decide in process with an in-memory GCRA whose quota is divided by the
    /// limiter's configured instance count. The default.
    #[default]
    Local,
}

impl OnStoreError {
    /// A short lower-case name (`fail_open`, `fail_closed`, `local`).
    pub fn as_str(&self) -> &'static str {
        match self {
            OnStoreError::FailOpen => "fail_open",
            OnStoreError::FailClosed => "fail_closed",
            OnStoreError::Local => "local",
        }
    }
}

/// A named quota with its algorithm and its behaviour when the store fails.
///
/// The name appears in the `RateLimit` headers, in metrics and in the store's
/// keys; it must be 1–64 characters of `A-Z a-z 0-9 _ - .` (checked when the
/// limiter is built).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    pub(crate) name: Arc<str>,
    pub(crate) quota: Quota,
    pub(crate) algorithm: Algorithm,
    pub(crate) on_store_error: OnStoreError,
}

impl Policy {
    /// A GCRA policy, falling back to a local limiter when the store fails.
    pub fn new(name: impl Into<Arc<str>>, quota: Quota) -> Policy {
        Policy { name: name.into(), quota, algorithm: Algorithm::Gcra, on_store_error: OnStoreError::Local }
    }

    /// Sets the algorithm.
    #[must_use]
    pub fn algorithm(mut self, algorithm: Algorithm) -> Policy {
        self.algorithm = algorithm;
        self
    }

    /// Sets what happens when the store fails.
    #[must_use]
    pub fn on_store_error(mut self, mode: OnStoreError) -> Policy {
        self.on_store_error = mode;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The quota.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The algorithm.
    pub fn get_algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The store-failure mode.
    pub fn get_on_store_error(&self) -> OnStoreError {
        self.on_store_error
    }

    /// Checks the name and that the window algorithms compute exactly in
    /// Redis's Lua (limit × period in microseconds below 2^53).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(format!("policy name {:?} must be 1-64 characters of A-Z a-z 0-9 _ - .", self.name));
        }
        if self.algorithm == Algorithm::Gcra {
            let capacity = u128::from(self.quota.emission_interval_micros()) * u128::from(self.quota.burst.get());
            if capacity >= 1u128 << 52 {
                return Err(format!(
                    "policy {:?}: burst x emission interval must be below 2^52 microseconds",
                    self.name
                ));
            }
        } else {
            let product = u128::from(self.quota.limit.get()) * u128::from(self.quota.period_micros());
            if product >= 1u128 << 53 {
                return Err(format!(
                    "policy {:?}: limit x period (in microseconds) must be below 2^53 for the window algorithms",
                    self.name
                ));
            }
        }
        Ok(())
    }
}
