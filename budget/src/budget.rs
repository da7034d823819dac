//! Budgets in code: what a route may cost.
//!
//! ```
//! use std::time::Duration;
//! use brisk_budget::{Budgets, RouteBudget};
//! use http::Method;
//!
//! let budgets = Budgets::new()
//!     .route(Method::GET, "/api/blueprints/:id", RouteBudget::new().p95(Duration::from_millis(50)).db_queries(1))
//!     .route(Method::POST, "/api/deploy", RouteBudget::new().p95(Duration::from_millis(200)));
//! // `:id` is stored in axum's `{id}` form.
//! assert!(budgets.get(&Method::GET, "/api/blueprints/{id}").is_some());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::Method;

/// The name of the counter `db_queries` budgets apply to: bump it with
/// [`record`](crate::record)`("db_queries", 1)`.
pub const DB_QUERIES: &str = "db_queries";

/// What one route (method and path template) may cost.
///
/// Every limit is optional; a route with no limit is still measured and reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct RouteBudget {
    pub(crate) p50: Option<Duration>,
    pub(crate) p95: Option<Duration>,
    pub(crate) p99: Option<Duration>,
    pub(crate) max_payload: Option<u64>,
    pub(crate) counters: BTreeMap<String, u64>,
    pub(crate) cache_required: bool,
}

impl RouteBudget {
    /// A budget with no limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The median latency (to the end of the response body) may not exceed `limit`.
    pub fn p50(mut self, limit: Duration) -> Self {
        self.p50 = Some(limit);
        self
    }

    /// The 95th percentile latency may not exceed `limit`.
    pub fn p95(mut self, limit: Duration) -> Self {
        self.p95 = Some(limit);
        self
    }

    /// The 99th percentile latency may not exceed `limit`.
    pub fn p99(mut self, limit: Duration) -> Self {
        self.p99 = Some(limit);
        self
    }

    /// No response body may be larger than `bytes`.
    pub fn max_payload(mut self, bytes: u64) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// No request may record more than `max` database queries (the
    /// [`DB_QUERIES`] counter).
    pub fn db_queries(self, max: u64) -> Self {
        self.counter(DB_QUERIES, max)
    }

    /// No request may record more than `max` on the counter `name`
    /// (bumped with [`record`](crate::record)).
    pub fn counter(mut self, name: impl Into<String>, max: u64) -> Self {
        self.counters.insert(name.into(), max);
        self
    }

    /// Every response must have been served through a cache: it carries an
    /// `X-Cache` header of `HIT`, `MISS` or `STALE` (not `BYPASS`, not absent).
    pub fn cache_required(mut self, required: bool) -> Self {
        self.cache_required = required;
        self
    }

    /// The latency limit for a percentile budget.
    pub fn latency_limit(&self, percentile: Percentile) -> Option<Duration> {
        match percentile {
            Percentile::P50 => self.p50,
            Percentile::P95 => self.p95,
            Percentile::P99 => self.p99,
        }
    }

    /// The payload limit in bytes, if any.
    pub fn max_payload_limit(&self) -> Option<u64> {
        self.max_payload
    }

    /// The counter limits (`db_queries` and any other), by counter name.
    pub fn counter_limits(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counters.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Whether responses must come through a cache.
    pub fn is_cache_required(&self) -> bool {
        self.cache_required
    }

    /// Every latency threshold of this budget.
    pub(crate) fn latency_thresholds(&self) -> impl Iterator<Item = Duration> {
        [self.p50, self.p95, self.p99].into_iter().flatten()
    }
}

/// A latency percentile a budget can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Percentile {
    /// The median.
    P50,
    /// The 95th percentile.
    P95,
    /// The 99th percentile.
    P99,
}

impl Percentile {
    /// All percentiles, in increasing order.
    pub const ALL: [Percentile; 3] = [Percentile::P50, Percentile::P95, Percentile::P99];

    /// The quantile in `0..1` (`0.95` for p95).
    pub fn quantile(self) -> f64 {
        match self {
            Percentile::P50 => 0.50,
            Percentile::P95 => 0.95,
            Percentile::P99 => 0.99,
        }
    }

    /// The budget name (`"p95"`), as used in files, labels and reports.
    pub fn name(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P95 => "p95",
            Percentile::P99 => "p99",
        }
    }
}

impl fmt::Display for Percentile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A route: an HTTP method and a path template in axum's syntax (`/api/blueprints/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    method: String,
    template: String,
}

impl RouteKey {
    /// A route key. `:id` segments in `template` are rewritten to `{id}`;
    /// `method` is upper-cased.
    ///
    /// Returns `None` when the template does not start with `/`.
    pub fn new(method: &Method, template: &str) -> Option<Self> {
        Some(Self { method: method.as_str().to_ascii_uppercase(), template: normalize_template(template)? })
    }

    /// Parses `"GET /api/blueprints/:id"`.
    pub(crate) fn parse(key: &str) -> Result<Self, RouteKeyError> {
        let key = key.trim();
        let (method, path) = key.split_once(char::is_whitespace).ok_or(RouteKeyError::MissingMethod)?;
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| RouteKeyError::BadMethod)?;
        Self::new(&method, path.trim()).ok_or(RouteKeyError::BadPath)
    }

    /// The method, upper case (`GET`).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path template in axum's syntax (`/api/blueprints/{id}`).
    pub fn template(&self) -> &str {
        &self.template
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.template)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKeyError {
    MissingMethod,
    BadMethod,
    BadPath,
}

impl fmt::Display for RouteKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteKeyError::MissingMethod => "a route is written `METHOD /path`, e.g. `GET /api/blueprints/:id`",
            RouteKeyError::BadMethod => "the HTTP method is not a valid token",
            RouteKeyError::BadPath => "the path must start with `/` and may not contain whitespace",
        })
    }
}

/// Rewrites `:param` segments to `{param}`; `None` when the path is not a template.
pub(crate) fn normalize_template(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
        return None;
    }
    let mut out = String::with_capacity(path.len() + 4);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match segment.strip_prefix(':') {
            Some(name) if !name.is_empty() => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
            _ => out.push_str(segment),
        }
    }
    Some(out)
}

/// A set of route budgets, written in code or read from a file (see
/// [`Budgets::from_yaml_str`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Budgets {
    pub(crate) routes: BTreeMap<RouteKey, RouteBudget>,
}

impl Budgets {
    /// No budgets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the budget of `method` `template`. `:id` segments are
    /// stored as `{id}`.
    ///
    /// # Panics
    ///
    /// When `template` does not start with `/` or contains whitespace: a
    /// template written in code is a programming error. Files are checked
    /// without panicking.
    pub fn route(mut self, method: Method, template: &str, budget: RouteBudget) -> Self {
        let key = RouteKey::new(&method, template)
            .unwrap_or_else(|| panic!("route template {template:?} must start with `/` and contain no whitespace"));
        self.routes.insert(key, budget);
        self
    }

    /// The budget of `method` `template` (in axum's `{id}` syntax or `:id`).
    pub fn get(&self, method: &Method, template: &str) -> Option<&RouteBudget> {
        self.routes.get(&RouteKey::new(method, template)?)
    }

    /// Every route and its budget, ordered by path then method.
    pub fn iter(&self) -> impl Iterator<Item = (&RouteKey, &RouteBudget)> {
        self.routes.iter()
    }

    /// The number of budgeted routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no budgets.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every latency threshold of every route, in seconds, sorted and deduplicated.
    pub fn latency_thresholds_seconds(&self) -> Vec<f64> {
        let mut out: Vec<f64> =
            self.routes.values().flat_map(RouteBudget::latency_thresholds).map(|d| d.as_secs_f64()).collect();
        out.sort_by(f64::total_cmp);
        out.dedup();
        out
    }

    /// Every payload threshold, in bytes, sorted and deduplicated.
    pub fn payload_thresholds(&self) -> Vec<u64> {
        let mut out: Vec<u64> = self.routes.values().filter_map(|b| b.max_payload).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_params_become_braces() {
        assert_eq!(normalize_template("/a/:id/b/:x").as_deref(), Some("/a/{id}/b/{x}"));
        assert_eq!(normalize_template("/a/{id}").as_deref(), Some("/a/{id}"));
        assert_eq!(normalize_template("/").as_deref(), Some("/"));
        assert_eq!(normalize_template("a/b"), None);
        assert_eq!(normalize_template("/a b"), None);
    }

    #[test]
    fn route_keys_parse() {
        let key = RouteKey::parse("get  /api/blueprints/:id").unwrap();
        assert_eq!(key.to_string(), "GET /api/blueprints/{id}");
        assert_eq!(RouteKey::parse("/api"), Err(RouteKeyError::MissingMethod));
        assert_eq!(RouteKey::parse("GET api"), Err(RouteKeyError::BadPath));
        assert_eq!(RouteKey::parse("G(T /api"), Err(RouteKeyError::BadMethod));
    }

    #[test]
    fn thresholds_are_collected_once() {
        let b = Budgets::new()
            .route(Method::GET, "/a", RouteBudget::new().p50(Duration::from_millis(30)).p95(Duration::from_millis(100)))
            .route(Method::GET, "/b", RouteBudget::new().p95(Duration::from_millis(100)).max_payload(10));
        assert_eq!(b.latency_thresholds_seconds(), vec![0.03, 0.1]);
        assert_eq!(b.payload_thresholds(), vec![10]);
    }
}
