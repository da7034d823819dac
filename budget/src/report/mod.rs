//! What was measured, judged against the budgets: for `/budget/report`, for CI
//! (JSON, JUnit XML) and for tests ([`BudgetReport::assert_within`]).
//!
//! ```
//! use std::time::Duration;
//! use brisk_budget::{BudgetLayer, Budgets, RouteBudget};
//! use http::Method;
//!
//! let layer = BudgetLayer::builder(
//!     Budgets::new().route(Method::GET, "/health", RouteBudget::new().p95(Duration::from_millis(5))),
//! )
//! .min_samples(100)
//! .build();
//! let report = layer.report();
//! // Nothing was served yet: not enough samples to judge.
//! assert!(!report.passed());
//! assert!(report.to_json().contains("insufficient_samples"));
//! ```

#[cfg(feature = "junit")]
mod junit;
mod regression;

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::{Counter, Histogram};
use serde::{Deserialize, Serialize};

use crate::budget::{Percentile, RouteBudget};
use crate::state::{RouteState, Shared};

pub use regression::{Regression, RegressionPolicy, RegressionReport};

/// Per-route measurements and the verdict of each budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BudgetReport {
    /// Every route seen and every budgeted route, ordered by template then method.
    pub routes: Vec<RouteReport>,
    /// The samples a route needs (after warm-up) before its budgets are judged.
    pub min_samples: u64,
    /// The requests per route left out as warm-up.
    pub warm_up: u64,
}

/// One route's measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RouteReport {
    /// `GET /api/blueprints/{id}`.
    pub route: String,
    /// Requests measured (after warm-up).
    pub count: u64,
    /// Requests left out as warm-up.
    pub warm_up_skipped: u64,
    /// Requests whose inner service returned an error, or that were dropped
    /// (cancelled) before their response head.
    pub errors: u64,
    /// Latency over the whole run; `None` before the first sample.
    pub latency: Option<Latency>,
    /// Latency over the sliding window; `None` when the window is empty.
    pub window: Option<Latency>,
    /// The largest response body, in bytes.
    pub payload_max_bytes: u64,
    /// The most `db_queries` one request recorded.
    pub queries_max: u64,
    /// The most each counter recorded in one request, by counter name.
    pub counters_max: BTreeMap<String, u64>,
    /// Responses by `X-Cache` verdict.
    pub cache: CacheCounts,
    /// Requests that broke each budget, by budget name.
    pub violations: BTreeMap<String, u64>,
    /// The verdict of each budget of the route.
    pub checks: Vec<BudgetCheck>,
}

/// Latency percentiles, in microseconds. Values carry the histogram's 0.1%
/// precision and are rounded down to the start of their bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl Latency {
    fn of<T: Counter>(h: &Histogram<T>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let at = |q: f64| h.lowest_equivalent(h.value_at_quantile(q));
        Some(Self {
            count: h.len(),
            p50_us: at(0.50),
            p95_us: at(0.95),
            p99_us: at(0.99),
            max_us: h.lowest_equivalent(h.max()),
        })
    }

    /// The value of `percentile`, in microseconds.
    pub fn percentile_us(&self, percentile: Percentile) -> u64 {
        match percentile {
            Percentile::P50 => self.p50_us,
            Percentile::P95 => self.p95_us,
            Percentile::P99 => self.p99_us,
        }
    }
}

/// Responses by `X-Cache` verdict.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CacheCounts {
    /// `X-Cache: HIT`.
    pub hit: u64,
    /// `X-Cache: STALE`.
    pub stale: u64,
    /// `X-Cache: MISS`.
    pub miss: u64,
    /// `X-Cache: BYPASS`.
    pub bypass: u64,
    /// No (or an unknown) `X-Cache` header.
    pub absent: u64,
    /// `(hit + stale) / all`; `None` before the first response.
    pub hit_share: Option<f64>,
}

/// The verdict on one budget of one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BudgetCheck {
    /// `p50`, `p95`, `p99`, `max_payload`, `cache_required` or a counter's name.
    pub budget: String,
    /// The limit, in `unit`.
    pub limit: u64,
    /// The measured value, in `unit`; `None` without samples.
    pub actual: Option<u64>,
    /// The unit of `limit` and `actual`.
    pub unit: CheckUnit,
    /// The verdict.
    pub outcome: Outcome,
}

/// The unit of a [`BudgetCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckUnit {
    /// Latency.
    Microseconds,
    /// Body size.
    Bytes,
    /// A counter per request.
    Count,
    /// Responses that did not come through the cache.
    Responses,
}

/// A budget's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Within budget.
    Pass,
    /// Over budget.
    Fail,
    /// Fewer samples than the minimum: not judged, which an assertion counts as a failure.
    InsufficientSamples,
}

impl fmt::Display for BudgetCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: u64| match self.unit {
            CheckUnit::Microseconds => format!("{:.3}ms", v as f64 / 1000.0),
            CheckUnit::Bytes => format!("{v} B"),
            CheckUnit::Count => v.to_string(),
            CheckUnit::Responses => format!("{v} uncached responses"),
        };
        let actual = self.actual.map_or_else(|| "no samples".to_owned(), show);
        match self.outcome {
            Outcome::Pass => write!(f, "{}: {actual} within {}", self.budget, show(self.limit)),
            Outcome::Fail => write!(f, "{}: {actual} over {}", self.budget, show(self.limit)),
            Outcome::InsufficientSamples => {
                write!(f, "{}: insufficient samples ({actual}) to judge against {}", self.budget, show(self.limit))
            }
        }
    }
}

impl RouteReport {
    fn build(name: String, budget: Option<&RouteBudget>, state: Option<&RouteState>, shared: &Shared) -> Self {
        let mut report = RouteReport {
            route: name,
            count: 0,
            warm_up_skipped: 0,
            errors: 0,
            latency: None,
            window: None,
            payload_max_bytes: 0,
            queries_max: 0,
            counters_max: BTreeMap::new(),
            cache: CacheCounts::default(),
            violations: BTreeMap::new(),
            checks: Vec::new(),
        };
        if let Some(state) = state {
            let now = shared.clock.ticks().saturating_sub(shared.origin);
            let mut stats = state.stats.lock();
            report.count = stats.latency_us.run().len();
            report.warm_up_skipped = stats.warm_up_skipped;
            report.errors = stats.errors;
            report.latency = Latency::of(stats.latency_us.run());
            report.window = Latency::of(&stats.latency_us.window(now));
            report.payload_max_bytes = stats.payload_max;
            report.counters_max = stats.counters_max.iter().map(|(n, v)| (n.to_string(), *v)).collect();
            let c = stats.cache;
            let all = c.hit + c.stale + c.miss + c.bypass + c.absent;
            report.cache = CacheCounts {
                hit: c.hit,
                stale: c.stale,
                miss: c.miss,
                bypass: c.bypass,
                absent: c.absent,
                hit_share: (all > 0).then(|| (c.hit + c.stale) as f64 / all as f64),
            };
            report.violations = stats.violations.iter().cloned().collect();
        }
        report.queries_max = report.counters_max.get(crate::budget::DB_QUERIES).copied().unwrap_or(0);
        if let Some(budget) = budget {
            report.checks = report.judge(budget, shared.config.min_samples, shared.config.cache_misses_break);
        }
        report
    }

    fn judge(&self, budget: &RouteBudget, min_samples: u64, cache_misses_break: bool) -> Vec<BudgetCheck> {
        let enough = self.count > 0 && self.count >= min_samples;
        let verdict = |limit: u64, actual: Option<u64>| match actual {
            Some(actual) if enough => {
                if actual <= limit {
                    Outcome::Pass
                } else {
                    Outcome::Fail
                }
            }
            _ => Outcome::InsufficientSamples,
        };
        let mut checks = Vec::new();
        let mut push = |budget: &str, limit: u64, actual: Option<u64>, unit: CheckUnit| {
            let outcome = verdict(limit, actual);
            checks.push(BudgetCheck { budget: budget.to_owned(), limit, actual, unit, outcome });
        };
        for p in Percentile::ALL {
            if let Some(limit) = budget.latency_limit(p) {
                let limit = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
                push(p.name(), limit, self.latency.map(|l| l.percentile_us(p)), CheckUnit::Microseconds);
            }
        }
        let measured = |v: u64| (self.count > 0).then_some(v);
        if let Some(limit) = budget.max_payload_limit() {
            push("max_payload", limit, measured(self.payload_max_bytes), CheckUnit::Bytes);
        }
        for (name, limit) in budget.counter_limits() {
            let actual = self.counters_max.get(name).copied().unwrap_or(0);
            push(name, limit, measured(actual), CheckUnit::Count);
        }
        if budget.is_cache_required() {
            let misses = if cache_misses_break { self.cache.miss } else { 0 };
            let uncached = self.cache.bypass + self.cache.absent + misses;
            push("cache_required", 0, measured(uncached), CheckUnit::Responses);
        }
        checks
    }

    /// Whether every budget of the route passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome == Outcome::Pass)
    }

    /// The check of `budget` (`"p95"`), if the route has that budget.
    pub fn check(&self, budget: &str) -> Option<&BudgetCheck> {
        self.checks.iter().find(|c| c.budget == budget)
    }
}

impl BudgetReport {
    pub(crate) fn from_shared(shared: &Shared) -> Self {
        let states = shared.routes();
        let mut routes: Vec<RouteReport> = Vec::new();
        for state in &states {
            let budget = state.budget.as_ref();
            routes.push(RouteReport::build(state.name(), budget, Some(state), shared));
        }
        // Budgeted routes never requested are reported too: unmeasured is not "passed".
        for (key, budget) in shared.budgets.iter() {
            let name = key.to_string();
            if !states.iter().any(|s| s.key().as_ref() == Some(key)) {
                routes.push(RouteReport::build(name, Some(budget), None, shared));
            }
        }
        routes.sort_by(|a, b| route_order(&a.route).cmp(&route_order(&b.route)));
        Self { routes, min_samples: shared.config.min_samples, warm_up: shared.config.warm_up }
    }

    /// The report of `route` (`"GET /api/blueprints/{id}"`).
    pub fn route(&self, route: &str) -> Option<&RouteReport> {
        self.routes.iter().find(|r| r.route == route)
    }

    /// Whether every budget of every route passed (with enough samples).
    pub fn passed(&self) -> bool {
        self.routes.iter().all(RouteReport::passed)
    }

    /// Every check that did not pass, with its route.
    pub fn failures(&self) -> impl Iterator<Item = (&RouteReport, &BudgetCheck)> {
        self.routes.iter().flat_map(|r| r.checks.iter().filter(|c| c.outcome != Outcome::Pass).map(move |c| (r, c)))
    }

    /// `Ok` when every budget passed with enough samples.
    ///
    /// # Errors
    ///
    /// [`BudgetFailures`] listing each budget over its limit or not judged for
    /// lack of samples.
    pub fn check(&self) -> Result<(), BudgetFailures> {
        let failures: Vec<String> = self.failures().map(|(r, c)| format!("{}: {c}", r.route)).collect();
        if failures.is_empty() { Ok(()) } else { Err(BudgetFailures { failures }) }
    }

    /// Asserts that every budget passed, for tests. Configure the warm-up and the
    /// minimum sample count on the layer
    /// ([`warm_up`](crate::BudgetLayerBuilder::warm_up),
    /// [`min_samples`](crate::BudgetLayerBuilder::min_samples)) so that a test
    /// does not judge cold caches or a handful of samples.
    ///
    /// # Panics
    ///
    /// When a budget is over its limit or a budgeted route has fewer samples
    /// than the minimum; the message lists each failure.
    #[track_caller]
    pub fn assert_within(&self) {
        if let Err(failures) = self.check() {
            panic!("{failures}\n\n{self}");
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report has string keys and finite numbers only")
    }

    /// A report saved with [`BudgetReport::to_json`], e.g. a baseline.
    ///
    /// # Errors
    ///
    /// The text is not such a report.
    pub fn from_json(text: &str) -> Result<Self, ReportError> {
        serde_json::from_str(text).map_err(ReportError)
    }
}

fn route_order(route: &str) -> (&str, &str) {
    match route.split_once(' ') {
        Some((method, template)) => (template, method),
        None => (route, ""),
    }
}

impl fmt::Display for BudgetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "{:<40} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>6}  budgets",
            "route", "count", "p50 ms", "p95 ms", "p99 ms", "max ms", "payload", "queries", "hit%"
        )?;
        for r in &self.routes {
            let (p50, p95, p99, max) =
                r.latency.map_or((0.0, 0.0, 0.0, 0.0), |l| (ms(l.p50_us), ms(l.p95_us), ms(l.p99_us), ms(l.max_us)));
            let hit = r.cache.hit_share.map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s * 100.0));
            let verdict = if r.checks.is_empty() {
                "-"
            } else if r.passed() {
                "pass"
            } else {
                "FAIL"
            };
            writeln!(
                f,
                "{:<40} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10} {:>7} {:>6}  {verdict}",
                r.route, r.count, p50, p95, p99, max, r.payload_max_bytes, r.queries_max, hit
            )?;
        }
        Ok(())
    }
}

/// The budgets a report failed; `Display` lists them one per line.
#[derive(Debug, Clone)]
pub struct BudgetFailures {
    failures: Vec<String>,
}

impl BudgetFailures {
    /// One line per failed budget: `GET /api/x: p95: 120.000ms over 100.000ms`.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }
}

impl fmt::Display for BudgetFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} performance budget(s) not met:", self.failures.len())?;
        for failure in &self.failures {
            writeln!(f, "  {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BudgetFailures {}

/// A saved report could not be read.
#[derive(Debug)]
pub struct ReportError(serde_json::Error);

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a budget report: {}", self.0)
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
