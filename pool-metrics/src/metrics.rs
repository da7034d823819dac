//! [`PoolMetrics`]: the prometheus-client collector for any number of named
//! deadpool pools.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use deadpool::Status;
use deadpool::managed::{Manager, Object, Pool};
use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::labels::{Labels, Set, writes_text};
use crate::pool::{InstrumentedPool, PoolRecorder};
use crate::state::{PoolState, Settings};

/// Connection-pool metrics for any number of named deadpool pools, read at
/// scrape time. Cheap to clone; clones share the pools and their metrics.
///
/// ```
/// use brisk_pool_metrics::PoolMetrics;
/// use prometheus_client::registry::Registry;
/// # use deadpool::managed::{Manager, Metrics, Pool, RecycleResult};
/// # struct Numbers;
/// # impl Manager for Numbers {
/// #     type Type = u32;
/// #     type Error = std::convert::Infallible;
/// #     async fn create(&self) -> Result<u32, Self::Error> { Ok(7) }
/// #     async fn recycle(&self, _: &mut u32, _: &Metrics) -> RecycleResult<Self::Error> { Ok(()) }
/// # }
///
/// let metrics = PoolMetrics::builder()
///     .pressure_threshold(5)
///     .held_too_long(Some(std::time::Duration::from_secs(10)))
///     .build();
/// let mut registry = Registry::default();
/// metrics.register(&mut registry);
///
/// // Gauges only, for a pool built elsewhere:
/// let replica = Pool::<Numbers>::builder(Numbers).max_size(8).build().unwrap();
/// metrics.observe("replica", &replica);
///
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains(r#"db_client_connection_max{pool="replica"} 8"#));
/// ```
///
/// # What is exported
///
/// Gauges, read from `Pool::status()` at each scrape (labels `pool`, and `state`):
///
/// | metric | meaning |
/// |---|---|
/// | `db_client_connection_count{state="idle"\|"used"}` | open connections idle in the pool / checked out |
/// | `db_client_connection_max` | the pool's `max_size` |
/// | `db_client_connection_pending_requests` | tasks waiting for a connection now |
/// | `db_pool_size{state="idle"\|"total"\|"waiting"}` | the same, under the older `db_pool_size` name |
/// | `db_client_connection_pending_requests_peak` | the most tasks waiting at once since the previous scrape (seen by every checkout of an [`InstrumentedPool`]; a pool that is only watched reports the count at the scrape) |
/// | `db_client_connection_starved` | 1 when no connection is idle and tasks are waiting |
///
/// The first three and `db_pool_size` can each be switched off
/// ([`opentelemetry_names`](PoolMetricsBuilder::opentelemetry_names),
/// [`db_pool_size`](PoolMetricsBuilder::db_pool_size)).
///
/// Recorded by [`InstrumentedPool`] (and, for creation, by
/// [`PoolRecorder::post_create_hook`]); absent for pools without them:
///
/// | metric | meaning |
/// |---|---|
/// | `db_client_connection_wait_time_seconds` | histogram: time to obtain a connection |
/// | `db_client_connection_use_time_seconds` | histogram: time from checkout to return |
/// | `db_client_connection_create_time_seconds` | histogram: time to open a connection |
/// | `db_client_connection_created_total` | connections opened |
/// | `db_client_connection_timeouts_total{reason="wait"\|"create"\|"recycle"}` | checkouts that timed out |
/// | `db_client_connection_errors_total{reason="backend"\|"closed"\|"no_runtime"\|"post_create_hook"\|"cancelled"}` | checkouts that failed otherwise |
/// | `db_client_connection_held_too_long_total` | connections held past [`held_too_long`](PoolMetricsBuilder::held_too_long) |
///
/// The waiter peak is reset by each scrape: with several scrapers, each sees
/// the peak since any scrape.
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: Arc<Settings>,
    pools: RwLock<PoolList>,
}

#[derive(Debug, Default)]
struct PoolList {
    by_name: HashMap<Arc<str>, Arc<PoolState>>,
    /// In registration order, so the output is stable.
    ordered: Vec<Arc<PoolState>>,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolMetrics {
    /// Metrics with the default settings (see [`PoolMetricsBuilder`]).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures the metrics.
    pub fn builder() -> PoolMetricsBuilder {
        PoolMetricsBuilder::default()
    }

    /// Registers the collector with `registry`. Register once per registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(PoolCollector { shared: self.shared.clone(), rendered_labels: true }));
    }

    /// Registers a collector that writes every label set label by label, as
    /// prometheus-client encodes a slice of pairs: the reference the rendered
    /// label sets are compared with.
    #[cfg(test)]
    pub(crate) fn register_label_by_label(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(PoolCollector { shared: self.shared.clone(), rendered_labels: false }));
    }

    /// The recorder of the pool called `name`, created on first use. Its
    /// metrics carry `pool="<name>"`. Keep names few and fixed (`primary`,
    /// `replica`, `cache`): each is a label value.
    pub fn pool(&self, name: &str) -> PoolRecorder {
        if let Some(state) = self.shared.pools.read().by_name.get(name) {
            return PoolRecorder { state: state.clone() };
        }
        let mut pools = self.shared.pools.write();
        let name: Arc<str> = Arc::from(name);
        let state = pools
            .by_name
            .entry(name.clone())
            .or_insert_with(|| Arc::new(PoolState::new(name, self.shared.settings.clone())))
            .clone();
        if !pools.ordered.iter().any(|known| Arc::ptr_eq(known, &state)) {
            pools.ordered.push(state.clone());
        }
        PoolRecorder { state }
    }

    /// Exports `pool`'s gauges under `name`. Shorthand for
    /// `self.pool(name).watch(pool)`.
    pub fn observe<M, W>(&self, name: &str, pool: &Pool<M, W>)
    where
        M: Manager + 'static,
        W: From<Object<M>>,
    {
        self.pool(name).watch(pool);
    }

    /// Wraps `pool` so that its checkouts are recorded under `name`.
    /// Shorthand for `self.pool(name).instrument_pool(pool)`.
    pub fn instrument_pool<M, W>(&self, name: &str, pool: Pool<M, W>) -> InstrumentedPool<M, W>
    where
        M: Manager + 'static,
        W: From<Object<M>>,
    {
        self.pool(name).instrument_pool(pool)
    }
}

/// Configures [`PoolMetrics`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PoolMetricsBuilder {
    settings: Settings,
}

/// The bucket bounds, in seconds, that OpenTelemetry's semantic conventions
/// give `db.client.connection.wait_time`, `.use_time` and `.create_time`.
const SEMCONV_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

impl Default for PoolMetricsBuilder {
    fn default() -> Self {
        Self {
            settings: Settings {
                opentelemetry_names: true,
                db_pool_size: true,
                pressure_threshold: 5,
                pressure_period: Duration::from_secs(10),
                held_too_long: Some(Duration::from_secs(30)),
                // OpenTelemetry's bucket bounds for these histograms: a scrape
                // encodes every bucket of every pool, so few of them.
                wait_buckets: SEMCONV_BUCKETS.to_vec(),
                use_buckets: SEMCONV_BUCKETS.to_vec(),
                create_buckets: SEMCONV_BUCKETS.to_vec(),
            },
        }
    }
}

impl PoolMetricsBuilder {
    /// Export `db_client_connection_count`, `_max` and `_pending_requests`
    /// (OpenTelemetry's names). On by default.
    pub fn opentelemetry_names(mut self, on: bool) -> Self {
        self.settings.opentelemetry_names = on;
        self
    }

    /// Export `db_pool_size{state="idle|total|waiting"}`. On by default.
    pub fn db_pool_size(mut self, on: bool) -> Self {
        self.settings.db_pool_size = on;
        self
    }

    /// Warn when more than `waiting` tasks wait for a connection for the
    /// [`pressure_period`](Self::pressure_period). Default 5.
    pub fn pressure_threshold(mut self, waiting: usize) -> Self {
        self.settings.pressure_threshold = waiting;
        self
    }

    /// How long waiters must stay above the threshold before a warning; the
    /// warning then repeats at most once per period. Default 10 s.
    ///
    /// There is no background task: the number of waiters is looked at by
    /// each checkout of an [`InstrumentedPool`] and by each scrape, so a pool
    /// that is only watched is checked once per scrape.
    pub fn pressure_period(mut self, period: Duration) -> Self {
        self.settings.pressure_period = period;
        self
    }

    /// Count, and warn about, connections held at least this long, naming the
    /// span that was current at checkout. `None` turns it off (and the span is
    /// no longer captured). Default 30 s.
    ///
    /// Each connection is reported once: at the first scrape that finds it
    /// still held past the threshold (so a connection that is never returned
    /// is reported too), or when it is returned, whichever comes first. The
    /// warning says which (`still_held`).
    pub fn held_too_long(mut self, threshold: Option<Duration>) -> Self {
        self.settings.held_too_long = threshold;
        self
    }

    /// Bucket upper bounds, in seconds, of the wait-time histogram. Default:
    /// OpenTelemetry's 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5 and 10 s.
    /// Each bound is a line per pool in every scrape.
    pub fn wait_time_buckets(mut self, buckets: impl IntoIterator<Item = f64>) -> Self {
        self.settings.wait_buckets = buckets.into_iter().collect();
        self
    }

    /// Bucket upper bounds, in seconds, of the use-time histogram. Default:
    /// OpenTelemetry's 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5 and 10 s.
    /// Each bound is a line per pool in every scrape.
    pub fn use_time_buckets(mut self, buckets: impl IntoIterator<Item = f64>) -> Self {
        self.settings.use_buckets = buckets.into_iter().collect();
        self
    }

    /// Bucket upper bounds, in seconds, of the create-time histogram. Default:
    /// OpenTelemetry's 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5 and 10 s.
    /// Each bound is a line per pool in every scrape.
    pub fn create_time_buckets(mut self, buckets: impl IntoIterator<Item = f64>) -> Self {
        self.settings.create_buckets = buckets.into_iter().collect();
        self
    }

    /// Builds the metrics.
    pub fn build(self) -> PoolMetrics {
        PoolMetrics {
            shared: Arc::new(Shared { settings: Arc::new(self.settings), pools: RwLock::new(PoolList::default()) }),
        }
    }
}

#[derive(Debug)]
struct PoolCollector {
    shared: Arc<Shared>,
    /// Write each sample's label set rendered in advance when the encoder
    /// writes text (off in tests, to compare with label-by-label encoding).
    rendered_labels: bool,
}

/// One pool's state at a scrape.
struct Reading {
    pool: Arc<PoolState>,
    status: Status,
    peak: usize,
    /// Checkouts are recorded (an [`InstrumentedPool`]).
    instrumented: bool,
    /// Creations are recorded (a `post_create` hook).
    hooked: bool,
}

impl Reading {
    fn labels(&self, set: Set, text: bool) -> Labels<'_> {
        self.pool.labels.get(&self.pool.name, set, text)
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let readings: Vec<Reading> = self
            .shared
            .pools
            .read()
            .ordered
            .iter()
            .filter_map(|pool| {
                let status = pool.status()?;
                Some(Reading {
                    peak: pool.take_peak(status.waiting),
                    instrumented: pool.instrumented.load(Relaxed),
                    hooked: pool.hooked.load(Relaxed),
                    pool: pool.clone(),
                    status,
                })
            })
            .collect();
        if readings.is_empty() {
            return Ok(());
        }
        // Outside the lock on the pool list: these may log.
        let now = Instant::now();
        for r in &readings {
            r.pool.observe_pressure(r.status.waiting, now);
            r.pool.report_overdue(now);
        }
        let settings = &self.shared.settings;
        let text = self.rendered_labels && writes_text(&encoder);

        if settings.opentelemetry_names {
            let mut family = gauge(&mut encoder, "db_client_connection_count", "Open connections by state")?;
            for r in &readings {
                let used = r.status.size.saturating_sub(r.status.available);
                encode_gauge(&mut family, r.labels(Set::Idle, text), r.status.available)?;
                encode_gauge(&mut family, r.labels(Set::Used, text), used)?;
            }
            let mut family = gauge(&mut encoder, "db_client_connection_max", "Maximum open connections allowed")?;
            for r in &readings {
                encode_gauge(&mut family, r.labels(Set::Pool, text), r.status.max_size)?;
            }
            let mut family =
                gauge(&mut encoder, "db_client_connection_pending_requests", "Tasks waiting for a connection")?;
            for r in &readings {
                encode_gauge(&mut family, r.labels(Set::Pool, text), r.status.waiting)?;
            }
        }
        if settings.db_pool_size {
            let mut family = gauge(&mut encoder, "db_pool_size", "Connection pool size by state")?;
            for r in &readings {
                encode_gauge(&mut family, r.labels(Set::Idle, text), r.status.available)?;
                encode_gauge(&mut family, r.labels(Set::Total, text), r.status.size)?;
                encode_gauge(&mut family, r.labels(Set::Waiting, text), r.status.waiting)?;
            }
        }
        let mut family = gauge(
            &mut encoder,
            "db_client_connection_pending_requests_peak",
            "Most tasks waiting for a connection at once since the previous scrape",
        )?;
        for r in &readings {
            encode_gauge(&mut family, r.labels(Set::Pool, text), r.peak)?;
        }
        let mut family = gauge(
            &mut encoder,
            "db_client_connection_starved",
            "1 when no connection is idle and tasks are waiting for one",
        )?;
        for r in &readings {
            let starved = r.status.available == 0 && r.status.waiting > 0;
            encode_gauge(&mut family, r.labels(Set::Pool, text), usize::from(starved))?;
        }

        // Creation is timed only for checkouts through the instrumented pool.
        let histograms: [(&str, &str, HistogramOf, Recorded); 3] = [
            (
                "db_client_connection_wait_time_seconds",
                "Time it took to obtain a connection from the pool",
                |p| &p.wait_time,
                |r| r.instrumented,
            ),
            (
                "db_client_connection_use_time_seconds",
                "Time between checking a connection out and returning it",
                |p| &p.use_time,
                |r| r.instrumented,
            ),
            (
                "db_client_connection_create_time_seconds",
                "Time it took to open a new connection",
                |p| &p.create_time,
                |r| r.hooked && r.instrumented,
            ),
        ];
        for (name, help, histogram, recorded) in histograms {
            if !readings.iter().any(recorded) {
                continue;
            }
            // The unit is in the name; no `# UNIT` line, which some OpenMetrics
            // parsers refuse on histograms.
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for r in readings.iter().filter(|r| recorded(r)) {
                histogram(&r.pool).encode(family.encode_family(&r.labels(Set::Pool, text))?)?;
            }
        }
        if readings.iter().any(|r| r.hooked) {
            let mut family = encoder.encode_descriptor(
                "db_client_connection_created",
                "Connections opened",
                None,
                MetricType::Counter,
            )?;
            for r in readings.iter().filter(|r| r.hooked) {
                r.pool.created.encode(family.encode_family(&r.labels(Set::Pool, text))?)?;
            }
        }
        if !readings.iter().any(|r| r.instrumented) {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "db_client_connection_timeouts",
            "Checkouts that timed out, by the step that timed out",
            None,
            MetricType::Counter,
        )?;
        for r in readings.iter().filter(|r| r.instrumented) {
            for (i, counter) in r.pool.timeouts.iter().enumerate() {
                counter.encode(family.encode_family(&r.labels(Set::Timeout(i), text))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "db_client_connection_errors",
            "Checkouts that failed other than by a timeout, by reason",
            None,
            MetricType::Counter,
        )?;
        for r in readings.iter().filter(|r| r.instrumented) {
            for (i, counter) in r.pool.errors.iter().enumerate() {
                counter.encode(family.encode_family(&r.labels(Set::Error(i), text))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "db_client_connection_held_too_long",
            "Connections held at least the configured threshold",
            None,
            MetricType::Counter,
        )?;
        for r in readings.iter().filter(|r| r.instrumented) {
            r.pool.held_too_long.encode(family.encode_family(&r.labels(Set::Pool, text))?)?;
        }
        Ok(())
    }
}

/// Picks one of a pool's histograms.
type HistogramOf = fn(&PoolState) -> &Histogram;

/// Whether a pool's histogram is recorded.
type Recorded = fn(&Reading) -> bool;

fn gauge<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, MetricType::Gauge)
}

fn encode_gauge(family: &mut MetricEncoder<'_>, labels: Labels<'_>, value: usize) -> Result<(), std::fmt::Error> {
    family.encode_family(&labels)?.encode_gauge(&i64::try_from(value).unwrap_or(i64::MAX))
}
