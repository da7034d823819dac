//! RED metrics and budget violations on a prometheus-client registry.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::budget::Budgets;

/// OpenTelemetry's advised bucket edges for `http.server.request.duration`, in seconds.
const DURATION_EDGES: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// Body-size edges in bytes: powers of four from 256 B to 16 MiB.
const SIZE_EDGES: [f64; 9] =
    [256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0, 4_194_304.0, 16_777_216.0];

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

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The metric families; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct RedMetrics {
    duration: Family<RouteLabels, Histogram, Buckets>,
    requests: Family<RequestLabels, Counter>,
    active: Family<RouteLabels, Gauge>,
    body_size: Family<RouteLabels, Histogram, Buckets>,
    violations: Family<ViolationLabels, Counter>,
    pub(crate) duration_buckets: Buckets,
}

impl RedMetrics {
    pub(crate) fn new(budgets: &Budgets) -> Self {
        let duration_buckets = Buckets::merged(&DURATION_EDGES, budgets.latency_thresholds_seconds());
        let size_buckets = Buckets::merged(&SIZE_EDGES, budgets.payload_thresholds().into_iter().map(|b| b as f64));
        Self {
            duration: Family::new_with_constructor(duration_buckets.clone()),
            requests: Family::default(),
            active: Family::default(),
            body_size: Family::new_with_constructor(size_buckets),
            violations: Family::default(),
            duration_buckets,
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        // The unit is in the name, without a `# UNIT` line: strict OpenMetrics
        // parsers (openmetrics-parser 0.5) reject `# UNIT` on histograms.
        registry.register(
            "http_server_request_duration_seconds",
            "Time from receiving the request to the end of the response body",
            self.duration.clone(),
        );
        registry.register("http_server_requests", "Requests served, by route and status", self.requests.clone());
        registry.register("http_server_active_requests", "Requests in flight", self.active.clone());
        registry.register("http_server_response_body_size_bytes", "Size of response bodies", self.body_size.clone());
        registry.register(
            "budget_violations",
            "Requests that broke a route budget, by budget",
            self.violations.clone(),
        );
    }

    /// The handles of one route, looked up once so a request touches no label map.
    pub(crate) fn route(&self, labels: &RouteLabels) -> RouteMetrics {
        RouteMetrics {
            labels: labels.clone(),
            duration: self.duration.get_or_create(labels).clone(),
            active: self.active.get_or_create(labels).clone(),
            body_size: self.body_size.get_or_create(labels).clone(),
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
    labels: RouteLabels,
    duration: Histogram,
    pub(crate) active: Gauge,
    body_size: Histogram,
    /// The counter of the first status seen, read without a lock: most
    /// requests of a route end with the same status.
    first_status: OnceLock<(Option<u16>, Counter)>,
    requests: Mutex<Vec<(Option<u16>, Counter)>>,
    violations: Mutex<Vec<(String, Counter)>>,
    families: RedMetrics,
}

impl RouteMetrics {
    pub(crate) fn observe(&self, status: Option<u16>, seconds: f64, body_bytes: u64) {
        self.duration.observe(seconds);
        self.body_size.observe(body_bytes as f64);
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
