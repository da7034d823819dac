//! What the layer keeps per route, and how a finished request is judged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use parking_lot::{Mutex, RwLock};

use crate::budget::{Budgets, Percentile, RouteBudget, RouteKey};
use crate::clock::TimeSource;
use crate::scope::RequestScope;
use crate::window::Latencies;

/// Latencies are recorded in microseconds, up to one hour (longer ones are
/// recorded as one hour), with three significant figures (0.1%) by default.
pub(crate) const LATENCY_SIGFIG: u8 = 3;
pub(crate) const LATENCY_MAX_US: u64 = 3_600_000_000;

/// The layer's settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) fallback_route: Arc<str>,
    pub(crate) max_routes: usize,
    pub(crate) window: Duration,
    pub(crate) window_slices: usize,
    pub(crate) warm_up: u64,
    pub(crate) min_samples: u64,
    pub(crate) server_timing: bool,
    pub(crate) warn_interval: Duration,
    pub(crate) significant_figures: u8,
    pub(crate) cache_misses_break: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            fallback_route: Arc::from("unmatched"),
            max_routes: 1000,
            window: Duration::from_secs(60),
            window_slices: 6,
            warm_up: 0,
            min_samples: 1,
            server_timing: false,
            warn_interval: Duration::from_secs(10),
            significant_figures: LATENCY_SIGFIG,
            cache_misses_break: false,
        }
    }
}

/// State shared by a layer, its services and its reports.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) budgets: Budgets,
    pub(crate) config: Config,
    pub(crate) clock: TimeSource,
    /// The clock's ticks when the layer was made.
    pub(crate) origin: u64,
    /// Route template → one state per method. A template is looked up by `&str`
    /// so the hot path does not allocate.
    routes: RwLock<HashMap<Box<str>, Vec<Arc<RouteState>>>>,
    route_count: Mutex<usize>,
    #[cfg(feature = "prometheus")]
    pub(crate) metrics: crate::metrics::RedMetrics,
}

/// The method label: one of the standard methods, else `_OTHER` (as
/// OpenTelemetry's semantic conventions advise) so label values stay bounded.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

impl Shared {
    pub(crate) fn new(budgets: Budgets, config: Config, clock: TimeSource) -> Self {
        let origin = clock.ticks();
        Self {
            #[cfg(feature = "prometheus")]
            metrics: crate::metrics::RedMetrics::new(&budgets),
            budgets,
            config,
            clock,
            origin,
            routes: RwLock::new(HashMap::new()),
            route_count: Mutex::new(0),
        }
    }

    /// The state of `method` on `template`; past `max_routes` distinct routes,
    /// new ones are counted under the fallback route.
    pub(crate) fn route(&self, method: &'static str, template: &str) -> Arc<RouteState> {
        if let Some(state) = self.find(method, template) {
            return state;
        }
        let is_fallback = template == &*self.config.fallback_route;
        {
            let mut count = self.route_count.lock();
            if !is_fallback && *count >= self.config.max_routes {
                drop(count);
                tracing::debug!(route = template, "route limit reached; counting it under the fallback route");
                return self.route(method, &self.config.fallback_route);
            }
            let mut routes = self.routes.write();
            let states = routes.entry(template.into()).or_default();
            if let Some(state) = states.iter().find(|s| s.method == method) {
                return state.clone();
            }
            let state = Arc::new(self.new_route(method, template));
            states.push(state.clone());
            *count += 1;
            state
        }
    }

    fn find(&self, method: &str, template: &str) -> Option<Arc<RouteState>> {
        self.routes.read().get(template)?.iter().find(|s| s.method == method).cloned()
    }

    fn new_route(&self, method: &'static str, template: &str) -> RouteState {
        let http_method = Method::from_bytes(method.as_bytes()).ok();
        let budget = http_method.as_ref().and_then(|m| self.budgets.get(m, template)).cloned();
        RouteState {
            method,
            http_method,
            template: template.into(),
            clock: self.clock.clone(),
            origin: self.origin,
            config: self.config.clone(),
            limits: budget.as_ref().map(Limits::of),
            budget,
            stats: Mutex::new(RouteStats::new(
                &self.config,
                #[cfg(feature = "prometheus")]
                self.metrics.histograms(),
            )),
            #[cfg(feature = "prometheus")]
            metrics: self
                .metrics
                .route(&crate::metrics::RouteLabels { method: method.to_owned(), route: template.to_owned() }),
        }
    }

    /// Every route seen so far, ordered by template then method.
    pub(crate) fn routes(&self) -> Vec<Arc<RouteState>> {
        let mut all: Vec<Arc<RouteState>> = self.routes.read().values().flatten().cloned().collect();
        all.sort_by(|a, b| a.template.cmp(&b.template).then_with(|| a.method.cmp(b.method)));
        all
    }

    /// Forgets every measurement (the routes stay).
    pub(crate) fn reset(&self) {
        for route in self.routes() {
            let mut stats = route.stats.lock();
            // The RED histograms are Prometheus counters: they only go up.
            *stats = RouteStats::new(
                &self.config,
                #[cfg(feature = "prometheus")]
                stats.red.clone(),
            );
        }
    }
}

/// The `X-Cache` verdict of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    Hit,
    Stale,
    Miss,
    Bypass,
    Absent,
}

impl CacheStatus {
    #[inline]
    pub(crate) fn from_header(value: Option<&http::HeaderValue>) -> Self {
        let Some(value) = value else {
            return CacheStatus::Absent;
        };
        // The common, exact verdicts first.
        match value.as_bytes() {
            b"HIT" => CacheStatus::Hit,
            b"MISS" => CacheStatus::Miss,
            b"STALE" => CacheStatus::Stale,
            b"BYPASS" => CacheStatus::Bypass,
            bytes => Self::from_words(bytes),
        }
    }

    /// Caches may append details (`HIT from edge`); the first word decides.
    #[cold]
    fn from_words(bytes: &[u8]) -> Self {
        let end = bytes.iter().position(|b| b.is_ascii_whitespace() || *b == b',' || *b == b';').unwrap_or(bytes.len());
        let word = &bytes[..end];
        if word.eq_ignore_ascii_case(b"HIT") {
            CacheStatus::Hit
        } else if word.eq_ignore_ascii_case(b"STALE") {
            CacheStatus::Stale
        } else if word.eq_ignore_ascii_case(b"MISS") {
            CacheStatus::Miss
        } else if word.eq_ignore_ascii_case(b"BYPASS") {
            CacheStatus::Bypass
        } else {
            CacheStatus::Absent
        }
    }

    /// Whether the response meets `cache_required`: any cache verdict but
    /// `BYPASS`, or only `HIT`/`STALE` when misses count against it.
    fn meets_cache_requirement(self, misses_break: bool) -> bool {
        match self {
            CacheStatus::Hit | CacheStatus::Stale => true,
            CacheStatus::Miss => !misses_break,
            CacheStatus::Bypass | CacheStatus::Absent => false,
        }
    }
}

/// Cache verdicts of a route's responses.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CacheCounts {
    pub(crate) hit: u64,
    pub(crate) stale: u64,
    pub(crate) miss: u64,
    pub(crate) bypass: u64,
    pub(crate) absent: u64,
}

/// One route's measurements.
#[derive(Debug)]
pub(crate) struct RouteStats {
    pub(crate) seen: u64,
    pub(crate) warm_up_skipped: u64,
    pub(crate) errors: u64,
    /// Latencies in microseconds, over the run and the sliding window.
    pub(crate) latency_us: Latencies,
    pub(crate) payload_max: u64,
    pub(crate) counters_max: Vec<(Box<str>, u64)>,
    pub(crate) cache: CacheCounts,
    pub(crate) violations: Vec<(String, u64)>,
    warnings: Vec<(String, Option<u64>, u64)>,
    /// The RED counts, counted under this lock and read at scrape time; they
    /// include warm-up requests and survive [`Shared::reset`].
    #[cfg(feature = "prometheus")]
    pub(crate) red: crate::metrics::RouteHistograms,
}

impl RouteStats {
    fn new(config: &Config, #[cfg(feature = "prometheus")] red: crate::metrics::RouteHistograms) -> Self {
        Self {
            seen: 0,
            warm_up_skipped: 0,
            errors: 0,
            latency_us: Latencies::new(config.significant_figures, config.window, config.window_slices),
            payload_max: 0,
            counters_max: Vec::new(),
            cache: CacheCounts::default(),
            violations: Vec::new(),
            warnings: Vec::new(),
            #[cfg(feature = "prometheus")]
            red,
        }
    }

    /// Keeps the most each counter of `scope` reached in one request.
    #[cold]
    fn count_max(&mut self, scope: &RequestScope) {
        scope.for_each(|name, value| match self.counters_max.iter_mut().find(|(n, _)| &**n == name) {
            Some((_, max)) => *max = (*max).max(value),
            None => self.counters_max.push((name.into(), value)),
        });
    }

    /// The memory the histograms take, in bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.latency_us.heap_bytes()
    }
}

/// One route's state.
#[derive(Debug)]
pub(crate) struct RouteState {
    pub(crate) method: &'static str,
    /// `method` as a `Method`, for a quick comparison with a request's.
    pub(crate) http_method: Option<Method>,
    pub(crate) template: Box<str>,
    /// The layer's clock, origin and settings, copied here so a request in
    /// flight holds its route and nothing else.
    pub(crate) clock: TimeSource,
    origin: u64,
    pub(crate) config: Config,
    pub(crate) budget: Option<RouteBudget>,
    /// The budget's limits in the form the hot path checks first.
    limits: Option<Limits>,
    pub(crate) stats: Mutex<RouteStats>,
    #[cfg(feature = "prometheus")]
    pub(crate) metrics: crate::metrics::RouteMetrics,
}

/// A finished request, as the layer saw it.
#[derive(Debug)]
pub(crate) struct Finished<'a> {
    pub(crate) latency: Duration,
    /// The clock's ticks at the end.
    pub(crate) at: u64,
    pub(crate) status: Option<u16>,
    pub(crate) body_bytes: u64,
    pub(crate) cache: CacheStatus,
    /// `None` when the request recorded nothing.
    pub(crate) scope: Option<&'a RequestScope>,
}

impl RouteState {
    pub(crate) fn key(&self) -> Option<RouteKey> {
        RouteKey::new(self.http_method.as_ref()?, &self.template)
    }

    /// The route's name in reports and logs: `GET /api/blueprints/{id}`.
    pub(crate) fn name(&self) -> String {
        format!("{} {}", self.method, self.template)
    }

    /// The budgets `done` broke, checked against the limits first.
    pub(crate) fn broken(&self, done: &Finished<'_>) -> Vec<(String, String)> {
        match (&self.budget, &self.limits) {
            (Some(budget), Some(limits)) if !limits.surely_within(done, self.config.cache_misses_break) => {
                broken(budget, done, self.config.cache_misses_break)
            }
            _ => Vec::new(),
        }
    }

    /// Records a finished request and checks it against the budget.
    #[inline]
    pub(crate) fn finish(&self, done: &Finished<'_>) {
        let mut stats = self.stats.lock();
        #[cfg(feature = "prometheus")]
        stats.red.observe(done.latency, done.body_bytes, done.status);
        stats.seen += 1;
        if stats.seen <= self.config.warm_up {
            stats.warm_up_skipped += 1;
            return;
        }
        let micros = u64::try_from(done.latency.as_micros()).unwrap_or(u64::MAX).min(LATENCY_MAX_US);
        stats.latency_us.record(done.at.saturating_sub(self.origin), micros);
        if done.status.is_none() {
            stats.errors += 1;
        }
        stats.payload_max = stats.payload_max.max(done.body_bytes);
        if let Some(scope) = done.scope {
            stats.count_max(scope);
        }
        match done.cache {
            CacheStatus::Hit => stats.cache.hit += 1,
            CacheStatus::Stale => stats.cache.stale += 1,
            CacheStatus::Miss => stats.cache.miss += 1,
            CacheStatus::Bypass => stats.cache.bypass += 1,
            CacheStatus::Absent => stats.cache.absent += 1,
        }
        if let (Some(budget), Some(limits)) = (&self.budget, &self.limits)
            && !limits.surely_within(done, self.config.cache_misses_break)
        {
            self.violated(stats, budget, done);
        }
    }

    /// Counts and reports the budgets `done` may have broken.
    #[cold]
    #[inline(never)]
    fn violated(&self, mut stats: parking_lot::MutexGuard<'_, RouteStats>, budget: &RouteBudget, done: &Finished<'_>) {
        let violations = broken(budget, done, self.config.cache_misses_break);
        let now = done.at.saturating_sub(self.origin);
        let mut warn: Vec<(&str, &str, u64)> = Vec::new();
        for (budget, detail) in &violations {
            match stats.violations.iter_mut().find(|(b, _)| b == budget) {
                Some((_, n)) => *n += 1,
                None => stats.violations.push((budget.clone(), 1)),
            }
            // At most one warning per route and budget per interval; the
            // next one says how many were held back.
            let interval = u64::try_from(self.config.warn_interval.as_nanos()).unwrap_or(u64::MAX);
            let slot = match stats.warnings.iter().position(|w| &w.0 == budget) {
                Some(i) => i,
                None => {
                    stats.warnings.push((budget.clone(), None, 0));
                    stats.warnings.len() - 1
                }
            };
            let entry = &mut stats.warnings[slot];
            let due = entry.1.is_none_or(|last| now.saturating_sub(last) >= interval);
            if due {
                warn.push((budget, detail, entry.2));
                entry.1 = Some(now);
                entry.2 = 0;
            } else {
                entry.2 += 1;
            }
        }
        drop(stats);
        #[cfg(feature = "prometheus")]
        for (budget, _) in &violations {
            self.metrics.violation(budget);
        }
        for (budget, detail, suppressed) in warn {
            tracing::warn!(
                route = %self.name(),
                budget = %budget,
                suppressed,
                "performance budget exceeded: {detail}"
            );
        }
    }
}

/// A route budget's limits as the hot path checks them: one comparison per
/// kind of budget, before [`broken`] works out which budgets a request broke.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// The lowest latency limit (`Duration::MAX` when none).
    latency: Duration,
    /// `u64::MAX` when none.
    payload: u64,
    has_counters: bool,
    cache_required: bool,
}

impl Limits {
    fn of(budget: &RouteBudget) -> Self {
        Self {
            latency: budget.latency_thresholds().min().unwrap_or(Duration::MAX),
            payload: budget.max_payload.unwrap_or(u64::MAX),
            has_counters: budget.counter_limits().next().is_some(),
            cache_required: budget.cache_required,
        }
    }

    /// Whether the request certainly broke none of the budget (`false` when it
    /// may have: [`broken`] decides).
    #[inline]
    fn surely_within(&self, done: &Finished<'_>, cache_misses_break: bool) -> bool {
        done.latency <= self.latency
            && done.body_bytes <= self.payload
            // A request that recorded nothing is within every counter budget.
            && !(self.has_counters && done.scope.is_some())
            && (!self.cache_required || done.cache.meets_cache_requirement(cache_misses_break))
    }
}

/// The budgets one request broke, as (budget, what happened).
fn broken(budget: &RouteBudget, done: &Finished<'_>, cache_misses_break: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in Percentile::ALL {
        if let Some(limit) = budget.latency_limit(p)
            && done.latency > limit
        {
            out.push((p.name().to_owned(), format!("took {:?}, over the {p} limit of {:?}", done.latency, limit)));
        }
    }
    if let Some(limit) = budget.max_payload
        && done.body_bytes > limit
    {
        out.push(("max_payload".to_owned(), format!("body of {} bytes, over {limit}", done.body_bytes)));
    }
    // A request that recorded nothing is within every counter budget.
    if let Some(scope) = done.scope {
        for (name, limit) in budget.counter_limits() {
            let value = scope.get(name).unwrap_or(0);
            if value > limit {
                out.push((name.to_owned(), format!("{name} = {value}, over {limit}")));
            }
        }
    }
    if budget.cache_required && !done.cache.meets_cache_requirement(cache_misses_break) {
        let what = match done.cache {
            CacheStatus::Bypass => "X-Cache: BYPASS",
            CacheStatus::Miss => "X-Cache: MISS",
            _ => "no X-Cache header",
        };
        out.push(("cache_required".to_owned(), format!("{what} on a route that requires the cache")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_header_words() {
        let h = |s: &'static str| CacheStatus::from_header(Some(&http::HeaderValue::from_static(s)));
        assert_eq!(h("HIT"), CacheStatus::Hit);
        assert_eq!(h("hit from edge"), CacheStatus::Hit);
        assert_eq!(h("STALE"), CacheStatus::Stale);
        assert_eq!(h("MISS"), CacheStatus::Miss);
        assert_eq!(h("BYPASS"), CacheStatus::Bypass);
        assert_eq!(h("banana"), CacheStatus::Absent);
        assert_eq!(CacheStatus::from_header(None), CacheStatus::Absent);
    }
}
