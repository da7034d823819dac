//! RED metrics and budget violations on a prometheus-client registry.
//!
//! The RED series (`http_server_request_duration_seconds`,
//! `http_server_response_body_size_bytes`, `http_server_requests_total`,
//! `http_server_active_requests`) are not prometheus-client metrics: their
//! counts live in each route's statistics, under the lock a finished request
//! takes anyway to record its latency, and a [`Collector`] writes them out at
//! scrape time. A request then pays for one lock and one atomic increment (its
//! start, for the active requests), not for a lock or an atomic per series.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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
const REQUESTS_NAME: &str = "http_server_requests";
const REQUESTS_HELP: &str = "Requests served, by route and status";
const ACTIVE_NAME: &str = "http_server_active_requests";
const ACTIVE_HELP: &str = "Requests in flight";

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

/// Histogram bucket edges shared by every series of a family: as exposed, and
/// in the integer unit a request is counted in (nanoseconds, bytes).
#[derive(Debug, Clone)]
pub(crate) struct Buckets {
    edges: Arc<[f64]>,
    limits: Arc<[u64]>,
}

impl Buckets {
    /// `scale` turns an edge into the integer unit (`1e9` for seconds to nanoseconds).
    fn merged(defaults: &[f64], thresholds: impl IntoIterator<Item = f64>, scale: f64) -> Self {
        let mut edges: Vec<f64> = defaults.iter().copied().chain(thresholds).filter(|e| e.is_finite()).collect();
        edges.sort_by(f64::total_cmp);
        edges.dedup();
        // `as` saturates: a negative edge is 0, a huge one `u64::MAX`.
        let limits = edges.iter().map(|e| (e * scale).round() as u64).collect();
        Self { edges: edges.into(), limits }
    }

    pub(crate) fn edges(&self) -> &[f64] {
        &self.edges
    }
}

/// One route's counts of a histogram: per bucket (not cumulative), the last
/// one for values above every edge (`+Inf`), and the sum of the values, in the
/// integer unit of [`Buckets::limits`].
#[derive(Debug, Clone)]
pub(crate) struct BucketCounts {
    edges: Buckets,
    counts: Box<[u64]>,
    sum: u64,
}

impl BucketCounts {
    fn new(edges: &Buckets) -> Self {
        Self { edges: edges.clone(), counts: vec![0; edges.edges.len() + 1].into(), sum: 0 }
    }

    /// Counts `value` in the first bucket whose edge is at least `value`, as
    /// prometheus-client's `Histogram::observe` does (compared in whole
    /// nanoseconds or bytes). The search runs up from the lowest edge:
    /// latencies and body sizes crowd the low buckets, where it ends after a
    /// comparison or two (a binary search takes four or five whatever the value).
    #[inline]
    fn observe(&mut self, value: u64) {
        let bucket = self.edges.limits.iter().position(|limit| *limit >= value).unwrap_or(self.edges.limits.len());
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum = self.sum.saturating_add(value);
    }

    /// The number of values counted.
    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum (divided by `scale`), count and the (edge, count) pairs
    /// prometheus-client's encoder takes.
    fn snapshot(&self, scale: f64) -> (f64, u64, Vec<(f64, u64)>) {
        let edges = self.edges.edges.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = edges.zip(self.counts.iter().copied()).collect();
        (self.sum as f64 / scale, self.count(), buckets)
    }
}

/// A route's RED counts, kept in its statistics: they include warm-up requests
/// and survive a reset (Prometheus counters only go up).
#[derive(Debug, Clone)]
pub(crate) struct RouteHistograms {
    duration: BucketCounts,
    body_size: BucketCounts,
    /// Finished requests by status (`None`: no response head), in the order
    /// first seen; most requests of a route end with its first status.
    statuses: Vec<(Option<u16>, u64)>,
}

impl RouteHistograms {
    #[inline]
    pub(crate) fn observe(&mut self, latency: std::time::Duration, body_bytes: u64, status: Option<u16>) {
        self.duration.observe(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        self.body_size.observe(body_bytes);
        match self.statuses.first_mut() {
            Some((first, count)) if *first == status => *count += 1,
            _ => self.count_status(status),
        }
    }

    #[cold]
    fn count_status(&mut self, status: Option<u16>) {
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += 1,
            None => self.statuses.push((status, 1)),
        }
    }
}

/// Writes every route's RED series at scrape time.
#[derive(Debug)]
struct RedCollector {
    shared: Arc<Shared>,
}

/// What the collector reads from one route under its lock.
struct RouteSnapshot<'a> {
    labels: &'a RouteLabels,
    duration: (f64, u64, Vec<(f64, u64)>),
    body_size: (f64, u64, Vec<(f64, u64)>),
    statuses: Vec<(Option<u16>, u64)>,
    active: i64,
}

impl Collector for RedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let routes = self.shared.routes();
        // As a registered family with no series: no descriptor either.
        if routes.is_empty() {
            return Ok(());
        }
        // One lock per route; the encoding happens after it is released.
        let snapshots: Vec<RouteSnapshot<'_>> = routes
            .iter()
            .map(|route| {
                let stats = route.stats.lock();
                let finished = stats.red.duration.count();
                let snapshot = RouteSnapshot {
                    labels: &route.metrics.labels,
                    duration: stats.red.duration.snapshot(1e9),
                    body_size: stats.red.body_size.snapshot(1.0),
                    statuses: stats.red.statuses.clone(),
                    active: 0,
                };
                drop(stats);
                // Read after the finished count: a request finishes after it
                // starts, so this is never below it.
                let started = route.metrics.started.load(Ordering::Acquire);
                RouteSnapshot {
                    active: i64::try_from(started.saturating_sub(finished)).unwrap_or(i64::MAX),
                    ..snapshot
                }
            })
            .collect();
        {
            let mut family = encoder.encode_descriptor(DURATION_NAME, DURATION_HELP, None, MetricType::Histogram)?;
            for route in &snapshots {
                let (sum, count, buckets) = &route.duration;
                family.encode_family(route.labels)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(BODY_SIZE_NAME, BODY_SIZE_HELP, None, MetricType::Histogram)?;
            for route in &snapshots {
                let (sum, count, buckets) = &route.body_size;
                family.encode_family(route.labels)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
            }
        }
        // A route's first request may still be in flight: no status yet, and
        // no descriptor while no route has one.
        if snapshots.iter().any(|route| !route.statuses.is_empty()) {
            let mut family = encoder.encode_descriptor(REQUESTS_NAME, REQUESTS_HELP, None, MetricType::Counter)?;
            for route in &snapshots {
                for (status, count) in &route.statuses {
                    let labels = RequestLabels {
                        method: route.labels.method.clone(),
                        route: route.labels.route.clone(),
                        status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
                    };
                    ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(ACTIVE_NAME, ACTIVE_HELP, None, MetricType::Gauge)?;
        for route in &snapshots {
            ConstGauge::new(route.active).encode(family.encode_family(route.labels)?)?;
        }
        Ok(())
    }
}

/// The violation counters' family and the RED histograms' bucket edges.
#[derive(Debug)]
pub(crate) struct RedMetrics {
    violations: Family<ViolationLabels, Counter>,
    pub(crate) duration_buckets: Buckets,
    size_buckets: Buckets,
}

impl RedMetrics {
    pub(crate) fn new(budgets: &Budgets) -> Self {
        let duration_buckets = Buckets::merged(&DURATION_EDGES, budgets.latency_thresholds_seconds(), 1e9);
        let size_buckets =
            Buckets::merged(&SIZE_EDGES, budgets.payload_thresholds().into_iter().map(|b| b as f64), 1.0);
        Self { violations: Family::default(), duration_buckets, size_buckets }
    }

    /// Registers the families on `registry`; the RED series are read from
    /// `shared`'s routes when the registry is encoded.
    pub(crate) fn register(&self, registry: &mut Registry, shared: Arc<Shared>) {
        registry.register(
            "budget_violations",
            "Requests that broke a route budget, by budget",
            self.violations.clone(),
        );
        // The unit is in the histograms' names, without a `# UNIT` line: strict
        // OpenMetrics parsers (openmetrics-parser 0.5) reject `# UNIT` on histograms.
        registry.register_collector(Box::new(RedCollector { shared }));
    }

    /// Empty counts for a new route.
    pub(crate) fn histograms(&self) -> RouteHistograms {
        RouteHistograms {
            duration: BucketCounts::new(&self.duration_buckets),
            body_size: BucketCounts::new(&self.size_buckets),
            statuses: Vec::new(),
        }
    }

    /// The series of one route.
    pub(crate) fn route(&self, labels: &RouteLabels) -> RouteMetrics {
        RouteMetrics {
            labels: labels.clone(),
            started: AtomicU64::new(0),
            violations: Mutex::new(Vec::new()),
            violation_family: self.violations.clone(),
        }
    }
}

/// One route's series.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    pub(crate) labels: RouteLabels,
    /// Requests started; those finished are counted in the route's statistics,
    /// and the difference is `http_server_active_requests`.
    started: AtomicU64,
    /// This route's violation counters, by budget, looked up in
    /// `violation_family` on a budget's first violation.
    violations: Mutex<Vec<(String, Counter)>>,
    violation_family: Family<ViolationLabels, Counter>,
}

impl RouteMetrics {
    /// Counts a request that starts.
    #[inline]
    pub(crate) fn start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
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
        let counter = self.violation_family.get_or_create(&labels).clone();
        counter.inc();
        violations.push((budget.to_owned(), counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_an_edge_counts_in_its_bucket_and_one_above_every_edge_in_inf() {
        let edges = Buckets::merged(&[1.0, 2.0], [0.5, f64::NAN], 10.0);
        assert_eq!(edges.edges(), &[0.5, 1.0, 2.0]);
        assert_eq!(&*edges.limits, &[5, 10, 20]);
        let mut counts = BucketCounts::new(&edges);
        // In tenths: 0.1, 0.5, 0.6, 2.0, 2.5, 9.0.
        for value in [1, 5, 6, 20, 25, 90] {
            counts.observe(value);
        }
        let (sum, count, buckets) = counts.snapshot(10.0);
        assert_eq!(count, 6);
        assert_eq!(sum, 14.7);
        assert_eq!(buckets, vec![(0.5, 2), (1.0, 1), (2.0, 1), (f64::INFINITY, 2)]);
    }

    #[test]
    fn latencies_are_bucketed_in_whole_nanoseconds_with_an_edge_inclusive() {
        let edges = Buckets::merged(&DURATION_EDGES, [0.03, 0.333], 1e9);
        assert_eq!(edges.limits[..3], [5_000_000, 10_000_000, 25_000_000]);
        assert!(edges.limits.contains(&333_000_000));
        let mut counts = RouteHistograms {
            duration: BucketCounts::new(&edges),
            body_size: BucketCounts::new(&Buckets::merged(&SIZE_EDGES, [], 1.0)),
            statuses: Vec::new(),
        };
        let ms = std::time::Duration::from_millis;
        counts.observe(ms(30), 256, Some(200));
        counts.observe(ms(30) + std::time::Duration::from_nanos(1), 257, Some(200));
        counts.observe(ms(20_000), 0, None);
        let (sum, count, buckets) = counts.duration.snapshot(1e9);
        assert_eq!((sum, count), (20.060000001, 3));
        let at = |edge: f64| buckets.iter().find(|(e, _)| *e == edge).map(|(_, n)| *n);
        assert_eq!((at(0.03), at(0.05), at(f64::INFINITY)), (Some(1), Some(1), Some(1)));
        let (_, _, sizes) = counts.body_size.snapshot(1.0);
        assert_eq!((sizes[0], sizes[1]), ((256.0, 2), (1024.0, 1)));
        assert_eq!(counts.statuses, vec![(Some(200), 2), (None, 1)]);
    }
}
