//! Prometheus metrics (feature `prometheus`); without the feature every
//! method is a no-op the compiler removes.
//!
//! Counters are plain atomics owned by the limiter, one set per policy, found
//! without a lookup (the limiter keeps them next to its policies). They are
//! read at scrape time by one collector per registration, which writes each
//! metric family once for every limiter it was given, each series labelled
//! `limiter="<prefix>"`: several limiters in one registry make one valid
//! OpenMetrics exposition.

use crate::decision::Source;
use crate::quota::OnStoreError;

/// What a policy answered, for the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed,
    Denied,
    /// The store failed and the policy fails closed.
    Unavailable,
}

#[cfg(feature = "prometheus")]
mod enabled {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Weak};

    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
    use prometheus_client::metrics::MetricType;

    use super::{OnStoreError, Outcome, Source};
    use crate::limiter::LimiterInner;

    const OUTCOMES: [&str; 3] = ["allowed", "denied", "unavailable"];
    const SOURCES: [&str; 5] = ["store", "blocked_cache", "local", "fail_open", "fail_closed"];
    const MODES: [&str; 3] = ["local", "fail_open", "fail_closed"];
    const ERROR_KINDS: [&str; 3] = ["timeout", "connection", "response"];
    const MODE_CHANGES: [&str; 2] = ["fallback", "store"];

    fn source_index(source: Source) -> usize {
        match source {
            Source::Store => 0,
            Source::BlockedCache => 1,
            Source::Local => 2,
            Source::FailOpen => 3,
        }
    }

    fn mode_index(mode: OnStoreError) -> usize {
        match mode {
            OnStoreError::Local => 0,
            OnStoreError::FailOpen => 1,
            OnStoreError::FailClosed => 2,
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One policy's counters.
    #[derive(Debug)]
    pub(crate) struct PolicyMetrics {
        name: Arc<str>,
        /// By outcome, then source.
        decisions: [[AtomicU64; SOURCES.len()]; OUTCOMES.len()],
        /// By store-failure mode.
        fallback: [AtomicU64; MODES.len()],
    }

    impl PolicyMetrics {
        pub(crate) fn new(policy: &crate::Policy) -> Self {
            PolicyMetrics { name: policy.name.clone(), decisions: Default::default(), fallback: Default::default() }
        }

        pub(crate) fn decision(&self, outcome: Outcome, source: Source) {
            let source = match outcome {
                Outcome::Unavailable => SOURCES.len() - 1,
                _ => source_index(source),
            };
            add(&self.decisions[outcome as usize][source]);
        }

        pub(crate) fn fallback(&self, mode: OnStoreError) {
            add(&self.fallback[mode_index(mode)]);
        }
    }

    /// The limiter-wide counters.
    #[derive(Debug, Default)]
    pub(crate) struct Metrics {
        store_errors: [AtomicU64; ERROR_KINDS.len()],
        mode_changes: [AtomicU64; MODE_CHANGES.len()],
        blocked_cache_hits: AtomicU64,
    }

    impl Metrics {
        pub(crate) fn store_error(&self, kind: crate::store::StoreErrorKind) {
            let kind = kind.as_str();
            let i = ERROR_KINDS.iter().position(|k| *k == kind).unwrap_or(ERROR_KINDS.len() - 1);
            add(&self.store_errors[i]);
        }

        pub(crate) fn mode_change(&self, to_fallback: bool) {
            add(&self.mode_changes[usize::from(!to_fallback)]);
        }

        pub(crate) fn blocked_hit(&self) {
            add(&self.blocked_cache_hits);
        }
    }

    /// The metrics of several limiters, each family written once. Holds the
    /// limiters weakly: a dropped limiter's series leave the exposition.
    #[derive(Debug)]
    pub(crate) struct LimiterCollector {
        limiters: Vec<Weak<LimiterInner>>,
    }

    impl LimiterCollector {
        pub(crate) fn new(limiters: Vec<Weak<LimiterInner>>) -> Self {
            LimiterCollector { limiters }
        }
    }

    /// Samples of one family, by label values; limiters sharing a prefix add up.
    type Samples<const N: usize> = BTreeMap<[Arc<str>; N], u64>;

    #[derive(Default)]
    struct Snapshot {
        decisions: Samples<4>,
        store_errors: Samples<2>,
        mode_changes: Samples<2>,
        fallback_active: Samples<1>,
        fallback_decisions: Samples<3>,
        blocked_cache_hits: Samples<1>,
        blocked_cache_entries: Samples<1>,
    }

    impl LimiterCollector {
        fn snapshot(&self) -> Snapshot {
            let mut s = Snapshot::default();
            let label = |v: &str| -> Arc<str> { Arc::from(v) };
            for limiter in self.limiters.iter().filter_map(Weak::upgrade) {
                let prefix = label(limiter.prefix());
                let m = &limiter.metrics;
                for p in limiter.policy_metrics() {
                    for (o, by_source) in p.decisions.iter().enumerate() {
                        for (src, c) in by_source.iter().enumerate() {
                            let v = read(c);
                            if v > 0 {
                                let key = [prefix.clone(), p.name.clone(), label(OUTCOMES[o]), label(SOURCES[src])];
                                *s.decisions.entry(key).or_default() += v;
                            }
                        }
                    }
                    for (mode, c) in p.fallback.iter().enumerate() {
                        let v = read(c);
                        if v > 0 {
                            let key = [prefix.clone(), p.name.clone(), label(MODES[mode])];
                            *s.fallback_decisions.entry(key).or_default() += v;
                        }
                    }
                }
                for (i, c) in m.store_errors.iter().enumerate() {
                    let v = read(c);
                    if v > 0 {
                        *s.store_errors.entry([prefix.clone(), label(ERROR_KINDS[i])]).or_default() += v;
                    }
                }
                for (i, c) in m.mode_changes.iter().enumerate() {
                    let v = read(c);
                    if v > 0 {
                        *s.mode_changes.entry([prefix.clone(), label(MODE_CHANGES[i])]).or_default() += v;
                    }
                }
                let active = s.fallback_active.entry([prefix.clone()]).or_default();
                *active = (*active).max(u64::from(limiter.fallback_active()));
                *s.blocked_cache_hits.entry([prefix.clone()]).or_default() += read(&m.blocked_cache_hits);
                *s.blocked_cache_entries.entry([prefix]).or_default() += limiter.blocked_entries() as u64;
            }
            s
        }
    }

    fn encode_family<const N: usize>(
        encoder: &mut DescriptorEncoder<'_>,
        (name, help, metric_type): (&str, &str, MetricType),
        label_names: [&str; N],
        samples: &Samples<N>,
    ) -> Result<(), std::fmt::Error> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
        for (values, v) in samples {
            let labels: [(&str, &str); N] = std::array::from_fn(|i| (label_names[i], &*values[i]));
            let mut sample = metric.encode_family(&labels)?;
            match metric_type {
                MetricType::Gauge => sample.encode_gauge(&(*v as i64))?,
                _ => sample.encode_counter::<NoLabelSet, _, u64>(v, None)?,
            }
        }
        Ok(())
    }

    impl Collector for LimiterCollector {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            let s = self.snapshot();
            let e = &mut encoder;
            encode_family(
                e,
                (
                    "ratelimit_decisions",
                    "Rate-limit decisions by limiter, policy, outcome (allowed, denied, unavailable) and source",
                    MetricType::Counter,
                ),
                ["limiter", "policy", "outcome", "source"],
                &s.decisions,
            )?;
            encode_family(
                e,
                (
                    "ratelimit_store_errors",
                    "Rate-limit store calls that failed, by limiter and kind (timeout, connection, response)",
                    MetricType::Counter,
                ),
                ["limiter", "kind"],
                &s.store_errors,
            )?;
            encode_family(
                e,
                (
                    "ratelimit_mode_changes",
                    "Switches between the store and the fallback (circuit breaker opened or closed), by new mode",
                    MetricType::Counter,
                ),
                ["limiter", "mode"],
                &s.mode_changes,
            )?;
            encode_family(
                e,
                (
                    "ratelimit_fallback_active",
                    "1 while the circuit breaker is open and policies use their store-failure mode",
                    MetricType::Gauge,
                ),
                ["limiter"],
                &s.fallback_active,
            )?;
            encode_family(
                e,
                (
                    "ratelimit_fallback_decisions",
                    "Policy decisions taken without the store, by policy and mode (local, fail_open, fail_closed)",
                    MetricType::Counter,
                ),
                ["limiter", "policy", "mode"],
                &s.fallback_decisions,
            )?;
            encode_family(
                e,
                (
                    "ratelimit_blocked_cache_hits",
                    "Requests refused from the local blocked-key cache without a store round trip",
                    MetricType::Counter,
                ),
                ["limiter"],
                &s.blocked_cache_hits,
            )?;
            encode_family(
                e,
                ("ratelimit_blocked_cache_entries", "Keys in the local blocked-key cache", MetricType::Gauge),
                ["limiter"],
                &s.blocked_cache_entries,
            )
        }
    }
}

#[cfg(feature = "prometheus")]
pub(crate) use enabled::{LimiterCollector, Metrics, PolicyMetrics};

#[cfg(not(feature = "prometheus"))]
mod disabled {
    use super::{OnStoreError, Outcome, Source};

    #[derive(Debug, Default)]
    pub(crate) struct PolicyMetrics(());

    impl PolicyMetrics {
        #[inline]
        pub(crate) fn new(_policy: &crate::Policy) -> Self {
            PolicyMetrics(())
        }
        #[inline]
        pub(crate) fn decision(&self, _outcome: Outcome, _source: Source) {}
        #[inline]
        pub(crate) fn fallback(&self, _mode: OnStoreError) {}
    }

    #[derive(Debug, Default)]
    pub(crate) struct Metrics(());

    impl Metrics {
        #[inline]
        pub(crate) fn store_error(&self, _kind: crate::store::StoreErrorKind) {}
        #[inline]
        pub(crate) fn mode_change(&self, _to_fallback: bool) {}
        #[inline]
        pub(crate) fn blocked_hit(&self) {}
    }
}

#[cfg(not(feature = "prometheus"))]
pub(crate) use disabled::{Metrics, PolicyMetrics};
