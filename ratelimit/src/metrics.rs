//! Prometheus metrics (feature `prometheus`); without the feature every
//! method is a no-op the compiler removes.

#[cfg(feature = "prometheus")]
mod enabled {
    use std::fmt::Write as _;
    use std::sync::Arc;

    use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    /// A shared label value without a copy per request.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Label(Arc<str>);

    impl EncodeLabelValue for Label {
        fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
            encoder.write_str(&self.0)
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct DecisionLabels {
        policy: Label,
        outcome: &'static str,
        source: &'static str,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct ErrorLabels {
        kind: &'static str,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct ModeLabels {
        mode: &'static str,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct FallbackLabels {
        policy: Label,
        mode: &'static str,
    }

    #[derive(Debug, Default)]
    pub(crate) struct Metrics {
        decisions: Family<DecisionLabels, Counter>,
        store_errors: Family<ErrorLabels, Counter>,
        mode_changes: Family<ModeLabels, Counter>,
        fallback_active: Gauge,
        fallback_decisions: Family<FallbackLabels, Counter>,
        blocked_cache_hits: Counter,
        blocked_cache_entries: Gauge,
    }

    impl Metrics {
        pub(crate) fn decision(&self, policy: &Arc<str>, allowed: bool, source: &'static str) {
            let outcome = if allowed { "allowed" } else { "denied" };
            self.decisions.get_or_create(&DecisionLabels { policy: Label(policy.clone()), outcome, source }).inc();
        }

        pub(crate) fn unavailable(&self, policy: &Arc<str>) {
            self.decisions
                .get_or_create(&DecisionLabels {
                    policy: Label(policy.clone()),
                    outcome: "unavailable",
                    source: "fail_closed",
                })
                .inc();
        }

        pub(crate) fn fallback(&self, policy: &Arc<str>, mode: &'static str) {
            self.fallback_decisions.get_or_create(&FallbackLabels { policy: Label(policy.clone()), mode }).inc();
        }

        pub(crate) fn store_error(&self, kind: &'static str) {
            self.store_errors.get_or_create(&ErrorLabels { kind }).inc();
        }

        pub(crate) fn mode_change(&self, to_fallback: bool) {
            let mode = if to_fallback { "fallback" } else { "store" };
            self.mode_changes.get_or_create(&ModeLabels { mode }).inc();
            self.fallback_active.set(i64::from(to_fallback));
        }

        pub(crate) fn blocked_hit(&self) {
            self.blocked_cache_hits.inc();
        }

        pub(crate) fn blocked_entries(&self, n: usize) {
            self.blocked_cache_entries.set(n as i64);
        }

        pub(crate) fn register(&self, registry: &mut Registry) {
            registry.register(
                "ratelimit_decisions",
                "Rate-limit decisions by policy, outcome (allowed, denied, unavailable) and source",
                self.decisions.clone(),
            );
            registry.register(
                "ratelimit_store_errors",
                "Rate-limit store calls that failed, by kind (timeout, connection, response)",
                self.store_errors.clone(),
            );
            registry.register(
                "ratelimit_mode_changes",
                "Switches between the store and the fallback (circuit breaker opened or closed), by new mode",
                self.mode_changes.clone(),
            );
            registry.register(
                "ratelimit_fallback_active",
                "1 while the circuit breaker is open and policies use their store-failure mode",
                self.fallback_active.clone(),
            );
            registry.register(
                "ratelimit_fallback_decisions",
                "Policy decisions taken without the store, by policy and mode (local, fail_open, fail_closed)",
                self.fallback_decisions.clone(),
            );
            registry.register(
                "ratelimit_blocked_cache_hits",
                "Requests refused from the local blocked-key cache without a store round trip",
                self.blocked_cache_hits.clone(),
            );
            registry.register(
                "ratelimit_blocked_cache_entries",
                "Keys in the local blocked-key cache (updated on insert)",
                self.blocked_cache_entries.clone(),
            );
        }
    }
}

#[cfg(feature = "prometheus")]
pub(crate) use enabled::Metrics;

#[cfg(not(feature = "prometheus"))]
mod disabled {
    use std::sync::Arc;

    #[derive(Debug, Default)]
    pub(crate) struct Metrics(());

    impl Metrics {
        #[inline]
        pub(crate) fn decision(&self, _policy: &Arc<str>, _allowed: bool, _source: &'static str) {}
        #[inline]
        pub(crate) fn unavailable(&self, _policy: &Arc<str>) {}
        #[inline]
        pub(crate) fn fallback(&self, _policy: &Arc<str>, _mode: &'static str) {}
        #[inline]
        pub(crate) fn store_error(&self, _kind: &'static str) {}
        #[inline]
        pub(crate) fn mode_change(&self, _to_fallback: bool) {}
        #[inline]
        pub(crate) fn blocked_hit(&self) {}
        #[inline]
        pub(crate) fn blocked_entries(&self, _n: usize) {}
    }
}

#[cfg(not(feature = "prometheus"))]
pub(crate) use disabled::Metrics;
