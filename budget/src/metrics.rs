//! RED metrics and budget violations on a prometheus-client registry.
//!
//! The two histograms (`http_server_request_duration_seconds`,
//! `http_server_response_body_size_bytes`) are not prometheus-client
//! `Histogram`s: their bucket counts live in each route's statistics, under the
//! lock a finished request takes anyway to record its latency, and a
//! [`Collector`] writes them out at scrape time. A request then pays for one
//! lock, not three.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::budget::Budgets;
use crate::state::Shared;

/// OpenTelemetry's advised bucket edges for `http.server.request.duration`, in seconds.
const DURATION_EDGES: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// Body-size edges in bytes: powers of four from 256 B to 16 MiB.
const SIZE_EDGES: [f64; 9] =
    [256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0, 4_194_304.0, 16_777_216.0];

const DURATION_NAME: &str = "http_server_request_duration_seconds";
const DURATION_HELP: &str = "Time from receiving the request to the end of the response body";
const BODY_SIZE_NAME: &str = "http_server_response_body_size_bytes";
const BODY_SIZE_HELP: &str = "Size of response bodies";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) method: String,
    pub(crate) route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    method: String,
    route: String,
    budget: String,
}

/// Histogram bucket edges shared by every series of a family.
#[derive(Debug, Clone)]
pub(crate) struct Buckets(Arc<[f64]>);

impl Buckets {
    fn merged(defaults: &[f64], thresholds: impl IntoIterator<Item = f64>) -> Self {
        let mut edges: Vec<f64> = defaults.iter().copied().chain(thresholds).filter(|e| e.is_finite()).collect();
        edges.sort_by(f64::total_cmp);
        edges.dedup();
        Self(edges.into())
    }

    pub(crate) fn edges(&self) -> &[f64] {
        &self.0
    }
}

/// One route's counts of a histogram: per bucket (not cumulative), the last
/// one for values above every edge (`+Inf`), and the sum of the values.
#[derive(Debug, Clone)]
pub(crate) struct BucketCounts {
    edges: Buckets,
    counts: Box<[u64]>,
    sum: f64,
}

impl BucketCounts {
    fn new(edges: &Buckets) -> Self {
        Self { edges: edges.clone(), counts: vec![0; edges.0.len() + 1].into(), sum: 0.0 }
    }

    /// Counts `value` in the first bucket whose edge is at least `value`, as
    /// prometheus-client's `Histogram::observe` does. The search runs up from
    /// the lowest edge: latencies and body sizes crowd the low buckets, where
    /// it ends after a comparison or two (a binary search takes four or five
    /// whatever the value).
    #[inline]
    fn observe(&mut self, value: f64) {
        let bucket = self.edges.0.iter().position(|edge| *edge >= value).unwrap_or(self.edges.0.len());
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum += value;
    }

    /// Sum, count and the (edge, count) pairs prometheus-client's encoder takes.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let edges = self.edges.0.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = edges.zip(self.counts.iter().copied()).collect();
        (self.sum, self.counts.iter().sum(), buckets)
    }
}

/// A route's RED histograms, kept in its statistics.
#[derive(Debug, Clone)]
pub(crate) struct RouteHistograms {
    duration: BucketCounts,
    body_size: BucketCounts,
}

impl RouteHistograms {
    pub(crate) fn observe(&mut self, seconds: f64, body_bytes: u64) {
        self.duration.observe(seconds);
        self.body_size.observe(body_bytes as f64);
    }
}

/// Writes every route's RED histograms at scrape time.
#[derive(Debug)]
struct HistogramCollector {
    shared: Arc<Shared>,
}

impl Collector for HistogramCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let routes = self.shared.routes();
        // As a registered family with no series: no descriptor either.
        if routes.is_empty() {
            return Ok(());
        }
        // One lock per route; the encoding happens after it is released.
        let snapshots: Vec<_> = routes
            .iter()
            .map(|route| {
                let stats = route.stats.lock();
                (&route.metrics.labels, stats.red.duration.snapshot(), stats.red.body_size.snapshot())
            })
            .collect();
        {
            let mut family = encoder.encode_descriptor(DURATION_NAME, DURATION_HELP, None, MetricType::Histogram)?;
            for (labels, (sum, count, buckets), _) in &snapshots {
                family.encode_family(*labels)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
            }
        }
        let mut family = encoder.encode_descriptor(BODY_SIZE_NAME, BODY_SIZE_HELP, None, MetricType::Histogram)?;
        for (labels, _, (sum, count, buckets)) in &snapshots {
            family.encode_family(*labels)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }
}

/// The metric families; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct RedMetrics {
    requests: Family<RequestLabels, Counter>,
    active: Family<RouteLabels, Gauge>,
    violations: Family<ViolationLabels, Counter>,
    pub(crate) duration_buckets: Buckets,
    size_buckets: Buckets,
}

impl RedMetrics {
    pub(crate) fn new(budgets: &Budgets) -> Self {
        let duration_buckets = Buckets::merged(&DURATION_EDGES, budgets.latency_thresholds_seconds());
        let size_buckets = Buckets::merged(&SIZE_EDGES, budgets.payload_thresholds().into_iter().map(|b| b as f64));
        Self {
            requests: Family::default(),
            active: Family::default(),
            violations: Family::default(),
            duration_buckets,
            size_buckets,
        }
    }

    /// Registers the families on `registry`; the histograms are read from
    /// `shared`'s routes when the registry is encoded.
    pub(crate) fn register(&self, registry: &mut Registry, shared: Arc<Shared>) {
        registry.register("http_server_requests", "Requests served, by route and status", self.requests.clone());
        registry.register("http_server_active_requests", "Requests in flight", self.active.clone());
        registry.register(
            "budget_violations",
            "Requests that broke a route budget, by budget",
            self.violations.clone(),
        );
        // The unit is in the histograms' names, without a `# UNIT` line: strict
        // OpenMetrics parsers (openmetrics-parser 0.5) reject `# UNIT` on histograms.
        registry.register_collector(Box::new(HistogramCollector { shared }));
    }

    /// Empty histograms for a new route.
    pub(crate) fn histograms(&self) -> RouteHistograms {
        RouteHistograms {
            duration: BucketCounts::new(&self.duration_buckets),
            body_size: BucketCounts::new(&self.size_buckets),
        }
    }

    /// The handles of one route, looked up once so a request touches no label map.
    pub(crate) fn route(&self, labels: &RouteLabels) -> RouteMetrics {
        RouteMetrics {
            labels: labels.clone(),
            active: self.active.get_or_create(labels).clone(),
            first_status: OnceLock::new(),
            requests: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            families: self.clone(),
        }
    }
}

/// One route's series.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    pub(crate) labels: RouteLabels,
    pub(crate) active: Gauge,
    /// The counter of the first status seen, read without a lock: most
    /// requests of a route end with the same status.
    first_status: OnceLock<(Option<u16>, Counter)>,
    requests: Mutex<Vec<(Option<u16>, Counter)>>,
    violations: Mutex<Vec<(String, Counter)>>,
    families: RedMetrics,
}

impl RouteMetrics {
    /// Counts a request in `http_server_requests_total` under its status.
    pub(crate) fn count_request(&self, status: Option<u16>) {
        if let Some((first, counter)) = self.first_status.get()
            && *first == status
        {
            counter.inc();
            return;
        }
        let mut requests = self.requests.lock();
        // The first status may have been set while this waited for the lock.
        if let Some((_, counter)) =
            self.first_status.get().into_iter().chain(requests.iter()).find(|(s, _)| *s == status)
        {
            counter.inc();
            return;
        }
        let labels = RequestLabels {
            method: self.labels.method.clone(),
            route: self.labels.route.clone(),
            status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
        };
        let counter = self.families.requests.get_or_create(&labels).clone();
        counter.inc();
        // Under the lock, so the first status is set once and never listed twice.
        if self.first_status.get().is_none() {
            let _ = self.first_status.set((status, counter));
            return;
        }
        requests.push((status, counter));
    }

    pub(crate) fn violation(&self, budget: &str) {
        let mut violations = self.violations.lock();
        if let Some((_, counter)) = violations.iter().find(|(b, _)| b == budget) {
            counter.inc();
            return;
        }
        let labels = ViolationLabels {
            method: self.labels.method.clone(),
            route: self.labels.route.clone(),
            budget: budget.to_owned(),
        };
        let counter = self.families.violations.get_or_create(&labels).clone();
        counter.inc();
        violations.push((budget.to_owned(), counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_an_edge_counts_in_its_bucket_and_one_above_every_edge_in_inf() {
        let edges = Buckets::merged(&[1.0, 2.0], [0.5, f64::NAN]);
        assert_eq!(edges.edges(), &[0.5, 1.0, 2.0]);
        let mut counts = BucketCounts::new(&edges);
        for value in [0.1, 0.5, 0.6, 2.0, 2.5, 9.0] {
            counts.observe(value);
        }
        let (sum, count, buckets) = counts.snapshot();
        assert_eq!(count, 6);
        assert_eq!(sum, 0.1 + 0.5 + 0.6 + 2.0 + 2.5 + 9.0);
        assert_eq!(buckets, vec![(0.5, 2), (1.0, 1), (2.0, 1), (f64::INFINITY, 2)]);
    }
}
