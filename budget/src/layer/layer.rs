use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::Budget;
use crate::budget::Budgets;
use crate::clock::{Clock, TimeSource};
use crate::report::BudgetReport;
use crate::state::{Config, Shared};

/// Measures every request against its route's budget; see the [module docs](crate::layer).
///
/// Clones of this layer, and every [`Budget`] service it makes, share one set of
/// measurements: the layer is also the handle that reports them.
#[derive(Debug, Clone)]
pub struct BudgetLayer {
    pub(crate) shared: Arc<Shared>,
}

impl BudgetLayer {
    /// A layer with the default settings (see [`BudgetLayerBuilder`]).
    pub fn new(budgets: Budgets) -> Self {
        Self::builder(budgets).build()
    }

    /// A builder for a layer enforcing `budgets`.
    pub fn builder(budgets: Budgets) -> BudgetLayerBuilder {
        BudgetLayerBuilder { budgets, config: Config::default(), clock: None }
    }

    /// The budgets this layer enforces.
    pub fn budgets(&self) -> &Budgets {
        &self.shared.budgets
    }

    /// What was measured so far, judged against the budgets.
    pub fn report(&self) -> BudgetReport {
        BudgetReport::from_shared(&self.shared)
    }

    /// Forgets every measurement, e.g. between the phases of a load test.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The memory the per-route histograms take now, in bytes.
    pub fn histogram_bytes(&self) -> usize {
        self.shared.routes().iter().map(|r| r.stats.lock().heap_bytes()).sum()
    }

    /// Registers the RED metrics and `budget_violations_total` on `registry`:
    ///
    /// - `http_server_request_duration_seconds{method,route}`: histogram; its
    ///   bucket edges are OpenTelemetry's defaults plus every latency threshold
    ///   of the budgets, so whether a percentile is above a threshold is read
    ///   from a bucket edge rather than interpolated;
    /// - `http_server_requests_total{method,route,status}` (`status="error"`
    ///   when the inner service failed or the request was dropped before its
    ///   response head);
    /// - `http_server_active_requests{method,route}`: gauge;
    /// - `http_server_response_body_size_bytes{method,route}`: histogram, with
    ///   every `max_payload` as a bucket edge;
    /// - `budget_violations_total{method,route,budget}`: requests that broke
    ///   `budget` (`p50`, `p95`, `p99`, `max_payload`, `db_queries`,
    ///   `cache_required` or another counter's name).
    ///
    /// The two histograms are read from the layer's per-route statistics at
    /// each scrape, so the registry keeps those statistics alive.
    #[cfg(feature = "prometheus")]
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.shared.metrics.register(registry, self.shared.clone());
    }
}

#[cfg(feature = "prometheus")]
impl BudgetLayer {
    /// The bucket edges of `http_server_request_duration_seconds`, in seconds:
    /// OpenTelemetry's defaults plus every latency threshold of the budgets.
    pub fn duration_buckets(&self) -> Vec<f64> {
        self.shared.metrics.duration_buckets.edges().to_vec()
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget { inner, shared: self.shared.clone(), last: None }
    }
}

/// Settings of a [`BudgetLayer`].
#[derive(Debug)]
#[must_use]
pub struct BudgetLayerBuilder {
    budgets: Budgets,
    config: Config,
    /// `None`: chosen when the layer is built.
    clock: Option<TimeSource>,
}

impl BudgetLayerBuilder {
    /// The route label of requests with no route template (no axum
    /// `MatchedPath`, no [`RouteTemplate`](super::RouteTemplate)). Default
    /// `unmatched`. Raw paths are never used as labels.
    pub fn fallback_route(mut self, label: impl Into<Arc<str>>) -> Self {
        self.config.fallback_route = label.into();
        self
    }

    /// At most this many distinct routes (method and template) are tracked;
    /// requests to further routes are counted under the fallback route. Default 1000.
    pub fn max_routes(mut self, max: usize) -> Self {
        self.config.max_routes = max;
        self
    }

    /// The sliding window's length and the number of slices it moves by.
    /// Default 60 s in 6 slices. A zero slice count is taken as one.
    pub fn window(mut self, length: Duration, slices: usize) -> Self {
        self.config.window = length;
        self.config.window_slices = slices.max(1);
        self
    }

    /// The first `requests` requests of each route are counted in the RED
    /// metrics but not in the report nor checked (caches fill, connections
    /// open). Default 0.
    pub fn warm_up(mut self, requests: u64) -> Self {
        self.config.warm_up = requests;
        self
    }

    /// A percentile budget is judged only once its route has this many samples
    /// (after warm-up); below it the report says "insufficient samples" and
    /// [`BudgetReport::assert_within`] fails. Default 1.
    pub fn min_samples(mut self, samples: u64) -> Self {
        self.config.min_samples = samples;
        self
    }

    /// Adds a `Server-Timing` header to responses with the time to the response
    /// head and the request's counters (`db_queries`…), and the budgets already
    /// broken when the head is sent. Default off: it tells clients about internals.
    pub fn server_timing(mut self, enabled: bool) -> Self {
        self.config.server_timing = enabled;
        self
    }

    /// At most one warning per route and budget in this interval; the next says
    /// how many were held back. Default 10 s.
    pub fn warn_interval(mut self, interval: Duration) -> Self {
        self.config.warn_interval = interval;
        self
    }

    /// The precision of the whole-run latency histogram, in significant figures
    /// (taken within 1..=5). Default 3 (0.1%). The sliding window keeps 2 (or
    /// this, if lower). Each latency is recorded once, in the window's current
    /// slice held at this precision, which is folded into the whole-run
    /// histogram and the window when the slice ends or a report is read.
    /// Memory per route, for latencies up to 1 s: about 180 KB at 3 figures,
    /// 65 KB at 2; at most about 360 KB and 120 KB (the crate README has the
    /// measured figures).
    pub fn significant_figures(mut self, figures: u8) -> Self {
        self.config.significant_figures = figures.clamp(1, 5);
        self
    }

    /// Whether `X-Cache: MISS` breaks a `cache_required` budget. Default
    /// `false`: a miss went through the cache (and filled it), and only a
    /// response without a cache verdict or with `BYPASS` breaks it. With
    /// `true`, only `HIT` and `STALE` meet it: combine with
    /// [`warm_up`](Self::warm_up) to require a warm cache.
    pub fn cache_misses_break_budget(mut self, misses_break: bool) -> Self {
        self.config.cache_misses_break = misses_break;
        self
    }

    /// The clock that times requests. By default, chosen when the layer is
    /// built: [`TokioClock`](crate::TokioClock) if tokio's time is paused
    /// there (a `#[tokio::test(start_paused = true)]`: latencies follow
    /// `tokio::time::advance` and auto-advance), else
    /// [`MonotonicClock`](crate::MonotonicClock), the cheaper read. A layer
    /// built before `tokio::time::pause()` is called, or outside the runtime
    /// that pauses, needs `TokioClock` here to follow paused time.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(TimeSource::of(clock));
        self
    }

    /// The layer.
    pub fn build(self) -> BudgetLayer {
        let clock = self.clock.unwrap_or_else(TimeSource::default_here);
        BudgetLayer { shared: Arc::new(Shared::new(self.budgets, self.config, clock)) }
    }
}
