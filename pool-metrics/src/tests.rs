//! Unit tests on pools of in-memory objects: no server needed.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{Manager, Metrics, Pool, PoolError, RecycleResult, TimeoutType, Timeouts};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use prometheus_client::registry::Registry;
use tracing::Instrument;

use crate::{InstrumentedPool, PoolMetrics, PoolRecorder};

#[derive(Debug, Default)]
struct Numbers {
    fail: AtomicBool,
}

#[derive(Debug, PartialEq)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl Manager for Numbers {
    type Type = u64;
    type Error = Refused;

    async fn create(&self) -> Result<u64, Refused> {
        if self.fail.load(Ordering::Relaxed) { Err(Refused) } else { Ok(42) }
    }

    async fn recycle(&self, _: &mut u64, _: &Metrics) -> RecycleResult<Refused> {
        Ok(())
    }
}

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn scrape(registry: &Registry) -> (String, Exposition) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encoding into a String cannot fail");
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("invalid OpenMetrics ({e:?}):\n{text}"));
    (text, parsed)
}

fn value(m: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.families.get(family)?.iter_samples().find_map(|sample| {
        let set = sample.get_labelset().ok()?;
        if !labels.iter().all(|(k, v)| set.get_label_value(k) == Some(*v)) {
            return None;
        }
        match &sample.value {
            OpenMetricsValue::Gauge(n) => Some(n.as_f64()),
            OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
            OpenMetricsValue::Histogram(h) => h.count.map(|c| c as f64),
            _ => None,
        }
    })
}

fn setup(metrics: &PoolMetrics) -> Registry {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    registry
}

/// Captures what `tracing` writes.
#[derive(Clone, Default)]
struct Logs(Arc<parking_lot::Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let logs = self.clone();
        tracing_subscriber::fmt().with_writer(move || logs.clone()).with_ansi(false).finish()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

#[tokio::test]
async fn gauges_follow_checkouts_and_output_is_valid_openmetrics() {
    let metrics = PoolMetrics::new();
    let registry = setup(&metrics);
    let pool =
        metrics.instrument_pool("numbers", Pool::<Numbers>::builder(Numbers::default()).max_size(5).build().unwrap());

    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let c = pool.get().await.unwrap();
    drop(c);
    assert_eq!(**a + **b, 84);
    let (_, m) = scrape(&registry);
    let n = [("pool", "numbers")];
    assert_eq!(value(&m, "db_client_connection_count", &[("pool", "numbers"), ("state", "used")]), Some(2.0));
    assert_eq!(value(&m, "db_client_connection_count", &[("pool", "numbers"), ("state", "idle")]), Some(1.0));
    assert_eq!(value(&m, "db_client_connection_max", &n), Some(5.0));
    assert_eq!(value(&m, "db_pool_size", &[("pool", "numbers"), ("state", "total")]), Some(3.0));
    assert_eq!(value(&m, "db_client_connection_wait_time_seconds", &n), Some(3.0));
    assert_eq!(value(&m, "db_client_connection_use_time_seconds", &n), Some(1.0));
    // No post_create hook on this pool: creation is not reported at all.
    assert_eq!(value(&m, "db_client_connection_created", &n), None);
    assert!(!m.families.contains_key("db_client_connection_create_time_seconds"));
}

#[tokio::test]
async fn a_watched_pool_exports_gauges_only_and_disappears_when_dropped() {
    let metrics = PoolMetrics::new();
    let registry = setup(&metrics);
    let pool: Pool<Numbers> = Pool::<Numbers>::builder(Numbers::default()).max_size(2).build().unwrap();
    metrics.observe("replica", &pool);
    let held = pool.get().await.unwrap();
    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_count", &[("pool", "replica"), ("state", "used")]), Some(1.0));
    assert!(!m.families.contains_key("db_client_connection_wait_time_seconds"));
    drop(held);
    drop(pool);
    // Nothing is left to export (the parser refuses an exposition without
    // families, so the text is checked as is).
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert_eq!(text.trim(), "# EOF");
}

#[tokio::test]
async fn name_schemes_can_be_switched_off() {
    let metrics = PoolMetrics::builder().opentelemetry_names(false).build();
    let registry = setup(&metrics);
    let pool: Pool<Numbers> = Pool::<Numbers>::builder(Numbers::default()).max_size(2).build().unwrap();
    metrics.observe("p", &pool);
    let (_, m) = scrape(&registry);
    assert!(!m.families.contains_key("db_client_connection_count"));
    assert_eq!(value(&m, "db_pool_size", &[("pool", "p"), ("state", "total")]), Some(0.0));

    let metrics = PoolMetrics::builder().db_pool_size(false).build();
    let registry = setup(&metrics);
    metrics.observe("p", &pool);
    let (_, m) = scrape(&registry);
    assert!(!m.families.contains_key("db_pool_size"));
    assert_eq!(value(&m, "db_client_connection_max", &[("pool", "p")]), Some(2.0));
}

/// A one-connection pool that fails a checkout at once when it is taken,
/// instrumented by `recorder` (creation times included).
fn one_connection_no_wait(recorder: &PoolRecorder) -> InstrumentedPool<Numbers> {
    let pool = Pool::<Numbers>::builder(Numbers::default())
        .max_size(1)
        .wait_timeout(Some(Duration::ZERO))
        .runtime(Runtime::Tokio1)
        .post_create(recorder.post_create_hook())
        .build()
        .unwrap();
    recorder.instrument_pool(pool)
}

#[tokio::test]
async fn failures_are_counted_by_reason() {
    let metrics = PoolMetrics::new();
    let registry = setup(&metrics);
    let recorder = metrics.pool("numbers");
    let pool = one_connection_no_wait(&recorder);

    let held = pool.get().await.unwrap();
    assert!(matches!(pool.get().await, Err(PoolError::Timeout(TimeoutType::Wait))));
    drop(held);
    pool.pool().manager().fail.store(true, Ordering::Relaxed);
    pool.pool().retain(|_, _| false); // close the idle connection: the next checkout creates one
    assert!(matches!(pool.get().await, Err(PoolError::Backend(Refused))));
    pool.pool().close();
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));

    let (_, m) = scrape(&registry);
    let reason = |family, reason| value(&m, family, &[("pool", "numbers"), ("reason", reason)]);
    assert_eq!(reason("db_client_connection_timeouts", "wait"), Some(1.0));
    assert_eq!(reason("db_client_connection_timeouts", "create"), Some(0.0));
    assert_eq!(reason("db_client_connection_errors", "backend"), Some(1.0));
    assert_eq!(reason("db_client_connection_errors", "closed"), Some(1.0));
    assert_eq!(value(&m, "db_client_connection_created", &[("pool", "numbers")]), Some(1.0));
    assert_eq!(value(&m, "db_client_connection_create_time_seconds", &[("pool", "numbers")]), Some(1.0));
}

#[tokio::test]
async fn a_missing_runtime_is_reported_as_such() {
    let metrics = PoolMetrics::new();
    let registry = setup(&metrics);
    let pool =
        metrics.instrument_pool("numbers", Pool::<Numbers>::builder(Numbers::default()).max_size(1).build().unwrap());
    // A timeout without a runtime cannot be enforced.
    let timeouts = Timeouts { wait: Some(Duration::from_secs(1)), ..Timeouts::new() };
    assert!(matches!(pool.timeout_get(&timeouts).await, Err(PoolError::NoRuntimeSpecified)));
    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_errors", &[("pool", "numbers"), ("reason", "no_runtime")]), Some(1.0));
}

#[tokio::test]
async fn a_connection_held_too_long_is_counted_and_names_its_holder() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let metrics = PoolMetrics::builder().held_too_long(Some(Duration::ZERO)).build();
    let registry = setup(&metrics);
    let pool =
        metrics.instrument_pool("numbers", Pool::<Numbers>::builder(Numbers::default()).max_size(1).build().unwrap());

    async {
        let connection = pool.get().await.unwrap();
        drop(connection);
    }
    .instrument(tracing::info_span!("load_blueprints"))
    .await;

    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_held_too_long", &[("pool", "numbers")]), Some(1.0));
    let text = logs.text();
    assert!(text.contains("connection held longer than the threshold"), "{text}");
    assert!(text.contains("holder=\"load_blueprints\""), "{text}");
}

#[tokio::test]
async fn a_connection_returned_in_time_is_not_flagged() {
    let metrics = PoolMetrics::builder().held_too_long(Some(Duration::from_secs(3600))).build();
    let registry = setup(&metrics);
    let pool =
        metrics.instrument_pool("numbers", Pool::<Numbers>::builder(Numbers::default()).max_size(1).build().unwrap());
    drop(pool.get().await.unwrap());
    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_held_too_long", &[("pool", "numbers")]), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn waiters_above_the_threshold_warn_and_starve_the_pool() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let metrics = PoolMetrics::builder().pressure_threshold(1).pressure_period(Duration::ZERO).build();
    let registry = setup(&metrics);
    let pool = metrics.instrument_pool(
        "numbers",
        Pool::<Numbers>::builder(Numbers::default())
            .max_size(1)
            .wait_timeout(Some(Duration::from_secs(1)))
            .runtime(Runtime::Tokio1)
            .build()
            .unwrap(),
    );
    let held = pool.get().await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get().await.map(|_| ()) })
        })
        .collect();
    while pool.status().waiting < 3 {
        tokio::task::yield_now().await;
    }
    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_starved", &[("pool", "numbers")]), Some(1.0));
    assert_eq!(value(&m, "db_client_connection_pending_requests", &[("pool", "numbers")]), Some(3.0));
    assert_eq!(value(&m, "db_client_connection_pending_requests_peak", &[("pool", "numbers")]), Some(3.0));
    assert!(logs.text().contains("sustained pressure"), "{}", logs.text());

    drop(held);
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_starved", &[("pool", "numbers")]), Some(0.0));
    assert_eq!(value(&m, "db_client_connection_pending_requests_peak", &[("pool", "numbers")]), Some(0.0));
}

#[tokio::test]
async fn one_name_is_one_pool_and_output_order_is_stable() {
    let metrics = PoolMetrics::new();
    let registry = setup(&metrics);
    let b: Pool<Numbers> = Pool::<Numbers>::builder(Numbers::default()).max_size(2).build().unwrap();
    let a: Pool<Numbers> = Pool::<Numbers>::builder(Numbers::default()).max_size(3).build().unwrap();
    metrics.observe("b", &b);
    metrics.observe("a", &a);
    assert_eq!(metrics.pool("a").name(), "a");
    let (text, _) = scrape(&registry);
    let first_b = text.find("pool=\"b\"").unwrap();
    let first_a = text.find("pool=\"a\"").unwrap();
    assert!(first_b < first_a, "registration order: {text}");
    assert_eq!(text.matches("db_client_connection_max{").count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_checkout_abandoned_by_its_caller_counts_as_cancelled() {
    let metrics = PoolMetrics::new();
    let registry = setup(&metrics);
    let pool = metrics.instrument_pool(
        "numbers",
        Pool::<Numbers>::builder(Numbers::default()).max_size(1).runtime(Runtime::Tokio1).build().unwrap(),
    );
    let _held = pool.get().await.unwrap();
    // deadpool waits forever by default; the caller gives up first.
    let outcome = tokio::time::timeout(Duration::from_secs(1), pool.get()).await;
    assert!(outcome.is_err());

    let (_, m) = scrape(&registry);
    let errors = |reason| value(&m, "db_client_connection_errors", &[("pool", "numbers"), ("reason", reason)]);
    assert_eq!(errors("cancelled"), Some(1.0));
    assert_eq!(errors("backend"), Some(0.0));
    assert_eq!(value(&m, "db_client_connection_wait_time_seconds", &[("pool", "numbers")]), Some(1.0));
}

#[tokio::test]
async fn a_connection_still_held_too_long_is_reported_by_the_scrape_once() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let metrics = PoolMetrics::builder().held_too_long(Some(Duration::ZERO)).build();
    let registry = setup(&metrics);
    let pool =
        metrics.instrument_pool("numbers", Pool::<Numbers>::builder(Numbers::default()).max_size(2).build().unwrap());

    let leaked = async { pool.get().await.unwrap() }.instrument(tracing::info_span!("export_report")).await;
    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_held_too_long", &[("pool", "numbers")]), Some(1.0));
    let text = logs.text();
    assert!(text.contains("holder=\"export_report\"") && text.contains("still_held=true"), "{text}");

    // Reported once: neither the next scrape nor the return counts it again.
    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_held_too_long", &[("pool", "numbers")]), Some(1.0));
    drop(leaked);
    let (_, m) = scrape(&registry);
    assert_eq!(value(&m, "db_client_connection_held_too_long", &[("pool", "numbers")]), Some(1.0));
    assert_eq!(logs.text().matches("connection held longer than the threshold").count(), 1);
}

/// The exposition of `metrics` as written with the label sets rendered at
/// registration, and as written label by label (prometheus-client's own
/// encoding of `(key, value)` pairs) — in a plain registry, and under a
/// prefix and a constant label.
fn rendered_and_label_by_label(metrics: &PoolMetrics) -> [(String, String); 2] {
    let encode = |registry: &Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encoding into a String cannot fail");
        text
    };
    let mut rendered = Registry::default();
    metrics.register(&mut rendered);
    let mut label_by_label = Registry::default();
    metrics.register_label_by_label(&mut label_by_label);
    let plain = (encode(&rendered), encode(&label_by_label));

    let mut rendered = Registry::default();
    metrics.register(rendered.sub_registry_with_prefix("app").sub_registry_with_label(("zone".into(), "a".into())));
    let mut label_by_label = Registry::default();
    metrics.register_label_by_label(
        label_by_label.sub_registry_with_prefix("app").sub_registry_with_label(("zone".into(), "a".into())),
    );
    [plain, (encode(&rendered), encode(&label_by_label))]
}

#[tokio::test]
async fn rendered_label_sets_are_byte_for_byte_what_label_by_label_encoding_writes() {
    let metrics = PoolMetrics::new();
    let recorder = metrics.pool("primary");
    let primary = one_connection_no_wait(&recorder);
    let odd = metrics.instrument_pool(
        "we\"ird\\na\nme é",
        Pool::<Numbers>::builder(Numbers::default()).max_size(3).build().unwrap(),
    );
    let watched: Pool<Numbers> = Pool::<Numbers>::builder(Numbers::default()).max_size(2).build().unwrap();
    metrics.observe("watched", &watched);
    let held = primary.get().await.unwrap();
    assert!(matches!(primary.get().await, Err(PoolError::Timeout(TimeoutType::Wait))));
    let _odd = odd.get().await.unwrap();
    drop(held);
    let _watched = watched.get().await.unwrap();

    for (rendered, label_by_label) in rendered_and_label_by_label(&metrics) {
        assert_eq!(rendered, label_by_label);
    }
    let (text, m) = scrape(&setup(&metrics));
    assert!(text.contains("db_client_connection_count{pool=\"we\\\"ird\\\\na\\nme é\",state=\"used\"} 1\n"), "{text}");
    assert!(text.contains("db_client_connection_timeouts_total{pool=\"primary\",reason=\"wait\"} 1\n"), "{text}");
    assert!(
        text.contains("db_client_connection_wait_time_seconds_bucket{le=\"0.001\",pool=\"primary\"} 1\n"),
        "{text}"
    );
    assert_eq!(value(&m, "db_client_connection_count", &[("pool", "watched"), ("state", "used")]), Some(1.0));
    assert_eq!(value(&m, "db_client_connection_errors", &[("pool", "primary"), ("reason", "cancelled")]), Some(0.0));
    assert_eq!(value(&m, "db_pool_size", &[("pool", "we\"ird\\na\nme é"), ("state", "waiting")]), Some(0.0));
}

#[test]
fn the_text_encoder_is_recognised() {
    #[derive(Debug)]
    struct Probe(Arc<AtomicBool>);
    impl prometheus_client::collector::Collector for Probe {
        fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> std::fmt::Result {
            self.0.store(crate::labels::writes_text(&encoder), Ordering::Relaxed);
            Ok(())
        }
    }
    let seen = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Probe(seen.clone())));
    prometheus_client::encoding::text::encode(&mut String::new(), &registry).unwrap();
    // Otherwise every label set is written label by label: slower.
    assert!(seen.load(Ordering::Relaxed), "prometheus-client's text encoder is no longer recognised");
}

proptest::proptest! {
    #[test]
    fn any_pool_name_is_rendered_as_label_by_label_encoding_writes_it(name in ".{0,12}") {
        let metrics = PoolMetrics::new();
        let _pool = metrics.instrument_pool(&name, Pool::<Numbers>::builder(Numbers::default()).max_size(2).build().unwrap());
        for (rendered, label_by_label) in rendered_and_label_by_label(&metrics) {
            proptest::prop_assert_eq!(rendered, label_by_label);
        }
    }
}
