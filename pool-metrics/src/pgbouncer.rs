//! PgBouncer's own view of its pools: `SHOW POOLS` and `SHOW STATS` from the
//! admin console, exported as `pgbouncer_exporter` names them.
//!
//! ```no_run
//! use brisk_pool_metrics::pgbouncer::PgBouncerCollector;
//! use prometheus_client::registry::Registry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bouncer = PgBouncerCollector::from_url("postgres://pgbouncer@127.0.0.1:6432/pgbouncer")?;
//! let mut registry = Registry::default();
//! bouncer.register(&mut registry);
//!
//! // In the /metrics handler: read PgBouncer (bounded by a timeout), then encode.
//! let _ = bouncer.refresh().await; // a failure is exported as pgbouncer_up 0
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry)?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Why `refresh()` and a snapshot
//!
//! prometheus-client encodes synchronously, and reading PgBouncer is network
//! I/O: doing it inside the encoder would block a runtime thread for as long as
//! PgBouncer takes to answer. So the collector exports a **snapshot**, and the
//! scrape handler awaits [`PgBouncerCollector::refresh`] (bounded by
//! [`timeout`](PgBouncerCollectorBuilder::timeout), 2 s by default) just before
//! encoding: each scrape sees data read for it, and the encoder never waits.
//! The snapshot's age is exported (`pgbouncer_snapshot_age_seconds`); a
//! snapshot older than [`max_age`](PgBouncerCollectorBuilder::max_age) (60 s
//! by default; say, when nothing calls `refresh`) is not exported and
//! `pgbouncer_up` is 0, so stale numbers never pass for current ones.
//!
//! A failed read (PgBouncer down, refused login, a timeout) sets
//! `pgbouncer_up 0`, drops the previous figures, is logged with `tracing`, and
//! never makes the scrape fail. The admin connection is reopened on the next
//! refresh.
//!
//! ## Metrics
//!
//! From `SHOW POOLS`, gauges labelled `database` and `user`:
//! `pgbouncer_pools_client_active_connections` (`cl_active`),
//! `_client_waiting_connections` (`cl_waiting`), `_server_active_connections`
//! (`sv_active`), `_server_idle_connections` (`sv_idle`),
//! `_server_used_connections` (`sv_used`), `_server_testing_connections`
//! (`sv_tested`), `_server_login_connections` (`sv_login`) and
//! `_client_maxwait_seconds` (`maxwait` + `maxwait_us`).
//!
//! From `SHOW STATS`, counters labelled `database`:
//! `pgbouncer_stats_sql_transactions_pooled_total`, `_queries_pooled_total`,
//! `_received_bytes_total`, `_sent_bytes_total`,
//! `_server_in_transaction_seconds_total`, `_queries_duration_seconds_total`,
//! `_client_wait_seconds_total`.
//!
//! Columns a PgBouncer version does not have are left out.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, SimpleQueryRow};

/// `SHOW POOLS` columns exported as connection-count gauges.
const POOL_GAUGES: [(&str, &str, &str); 7] = [
    ("cl_active", "pgbouncer_pools_client_active_connections", "Client connections linked to a server or idle"),
    ("cl_waiting", "pgbouncer_pools_client_waiting_connections", "Client connections waiting for a server"),
    ("sv_active", "pgbouncer_pools_server_active_connections", "Server connections linked to a client"),
    ("sv_idle", "pgbouncer_pools_server_idle_connections", "Server connections idle and ready"),
    ("sv_used", "pgbouncer_pools_server_used_connections", "Server connections idle, awaiting the check query"),
    ("sv_tested", "pgbouncer_pools_server_testing_connections", "Server connections running the reset or check query"),
    ("sv_login", "pgbouncer_pools_server_login_connections", "Server connections logging in"),
];

/// `SHOW STATS` columns exported as counters: column, name, unit, scale to the unit.
const STATS_COUNTERS: [(&str, &str, Option<Unit>, f64, &str); 7] = [
    ("total_xact_count", "pgbouncer_stats_sql_transactions_pooled", None, 1.0, "SQL transactions pooled"),
    ("total_query_count", "pgbouncer_stats_queries_pooled", None, 1.0, "SQL queries pooled"),
    ("total_received", "pgbouncer_stats_received", Some(Unit::Bytes), 1.0, "Bytes received from clients"),
    ("total_sent", "pgbouncer_stats_sent", Some(Unit::Bytes), 1.0, "Bytes sent to clients"),
    (
        "total_xact_time",
        "pgbouncer_stats_server_in_transaction",
        Some(Unit::Seconds),
        1e-6,
        "Time connected to a server in a transaction",
    ),
    ("total_query_time", "pgbouncer_stats_queries_duration", Some(Unit::Seconds), 1e-6, "Time running queries"),
    ("total_wait_time", "pgbouncer_stats_client_wait", Some(Unit::Seconds), 1e-6, "Time clients waited for a server"),
];

/// Reads PgBouncer's admin console and exports what it says. Cheap to clone;
/// clones share the connection and the snapshot.
#[derive(Clone)]
pub struct PgBouncerCollector {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    timeout: Duration,
    max_age: Duration,
    client: tokio::sync::Mutex<Option<Client>>,
    snapshot: RwLock<Snapshot>,
}

impl fmt::Debug for PgBouncerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.inner.snapshot.read();
        f.debug_struct("PgBouncerCollector")
            .field("hosts", &self.inner.config.get_hosts())
            .field("ports", &self.inner.config.get_ports())
            .field("timeout", &self.inner.timeout)
            .field("max_age", &self.inner.max_age)
            .field("up", &snapshot.read_at.is_some())
            .finish_non_exhaustive()
    }
}

/// The last successful read; `read_at` is `None` after a failure.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    read_at: Option<Instant>,
    pools: Vec<PoolRow>,
    stats: Vec<StatsRow>,
}

#[derive(Debug, Clone)]
struct PoolRow {
    database: String,
    user: String,
    gauges: [Option<i64>; POOL_GAUGES.len()],
    maxwait_seconds: Option<f64>,
}

#[derive(Debug, Clone)]
struct StatsRow {
    database: String,
    counters: [Option<f64>; STATS_COUNTERS.len()],
}

impl PgBouncerCollector {
    /// A collector for the admin console at `config` (database `pgbouncer`,
    /// a user listed in `admin_users` or `stats_users`), with default settings.
    /// Does not connect until the first [`refresh`](Self::refresh).
    ///
    /// The connection is made without TLS: reach the admin console over
    /// loopback or a private network, as PgBouncer sidecars usually are.
    pub fn new(config: tokio_postgres::Config) -> Self {
        Self::builder(config).build()
    }

    /// As [`new`](Self::new), from a URL such as
    /// `postgres://stats@127.0.0.1:6432/pgbouncer`.
    ///
    /// # Errors
    ///
    /// When the URL does not parse.
    pub fn from_url(url: &str) -> Result<Self, PgBouncerError> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| PgBouncerError::new(Step::Config, e))?;
        Ok(Self::new(config))
    }

    /// Configures a collector for the admin console at `config`.
    pub fn builder(config: tokio_postgres::Config) -> PgBouncerCollectorBuilder {
        PgBouncerCollectorBuilder { config, timeout: Duration::from_secs(2), max_age: Duration::from_secs(60) }
    }

    /// Registers the collector with `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// Reads `SHOW POOLS` and `SHOW STATS` and replaces the snapshot. On
    /// failure the snapshot is emptied (`pgbouncer_up 0`) and the admin
    /// connection is reopened on the next call. Concurrent calls take turns.
    ///
    /// # Errors
    ///
    /// Why PgBouncer could not be read. The failure is also logged and
    /// exported, so a scrape handler may ignore it.
    pub async fn refresh(&self) -> Result<(), PgBouncerError> {
        let mut client = self.inner.client.lock().await;
        let read = tokio::time::timeout(self.inner.timeout, self.read(&mut client)).await;
        let result = match read {
            Ok(Ok((pools, stats))) => {
                *self.inner.snapshot.write() = Snapshot { read_at: Some(Instant::now()), pools, stats };
                return Ok(());
            }
            Ok(Err(error)) => error,
            Err(_elapsed) => PgBouncerError::timeout(self.inner.timeout),
        };
        // The connection may be mid-query or broken: open a new one next time.
        *client = None;
        *self.inner.snapshot.write() = Snapshot::default();
        tracing::warn!(error = %result, "could not read PgBouncer's admin console; exporting pgbouncer_up 0");
        Err(result)
    }

    async fn read(&self, client: &mut Option<Client>) -> Result<(Vec<PoolRow>, Vec<StatsRow>), PgBouncerError> {
        let connected = match client.take() {
            Some(open) if !open.is_closed() => open,
            _ => self.connect().await?,
        };
        let client = client.insert(connected);
        let pools = client.simple_query("SHOW POOLS").await.map_err(|e| PgBouncerError::new(Step::Query, e))?;
        let stats = client.simple_query("SHOW STATS").await.map_err(|e| PgBouncerError::new(Step::Query, e))?;
        Ok((rows(&pools).filter_map(parse_pool).collect(), rows(&stats).filter_map(parse_stats).collect()))
    }

    async fn connect(&self) -> Result<Client, PgBouncerError> {
        let (client, connection) =
            self.inner.config.connect(NoTls).await.map_err(|e| PgBouncerError::new(Step::Connect, e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "PgBouncer admin connection closed");
            }
        });
        Ok(client)
    }
}

fn rows(messages: &[SimpleQueryMessage]) -> impl Iterator<Item = &SimpleQueryRow> {
    messages.iter().filter_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    })
}

/// A column's text, `None` when the column is absent or NULL.
fn text<'r>(row: &'r SimpleQueryRow, column: &str) -> Option<&'r str> {
    row.try_get(column).ok().flatten()
}

fn number<T: FromStr>(row: &SimpleQueryRow, column: &str) -> Option<T> {
    let raw = text(row, column)?;
    match raw.trim().parse() {
        Ok(value) => Some(value),
        Err(_) => {
            tracing::debug!(column, raw, "unexpected value from PgBouncer; left out");
            None
        }
    }
}

fn parse_pool(row: &SimpleQueryRow) -> Option<PoolRow> {
    let database = text(row, "database")?.to_owned();
    let user = text(row, "user")?.to_owned();
    let gauges = POOL_GAUGES.map(|(column, _, _)| number::<i64>(row, column));
    let maxwait = number::<f64>(row, "maxwait");
    let maxwait_us = number::<f64>(row, "maxwait_us").unwrap_or(0.0);
    Some(PoolRow { database, user, gauges, maxwait_seconds: maxwait.map(|s| s + maxwait_us / 1e6) })
}

fn parse_stats(row: &SimpleQueryRow) -> Option<StatsRow> {
    let database = text(row, "database")?.to_owned();
    let counters = STATS_COUNTERS.map(|(column, _, _, scale, _)| number::<f64>(row, column).map(|v| v * scale));
    Some(StatsRow { database, counters })
}

impl Collector for PgBouncerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.inner.snapshot.read().clone();
        let age = snapshot.read_at.map(|at| at.elapsed());
        let fresh = age.is_some_and(|age| age <= self.inner.max_age);

        let up = ConstGauge::new(i64::from(fresh));
        up.encode(encoder.encode_descriptor(
            "pgbouncer_up",
            "1 when PgBouncer's admin console was read successfully",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some(age) = age {
            ConstGauge::new(age.as_secs_f64()).encode(encoder.encode_descriptor(
                "pgbouncer_snapshot_age",
                "Time since PgBouncer was last read",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?)?;
        }
        if !fresh {
            return Ok(());
        }

        for (i, (_, name, help)) in POOL_GAUGES.iter().enumerate() {
            if snapshot.pools.iter().all(|row| row.gauges[i].is_none()) {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for row in &snapshot.pools {
                if let Some(value) = row.gauges[i] {
                    let labels = [("database", row.database.as_str()), ("user", row.user.as_str())];
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        if snapshot.pools.iter().any(|row| row.maxwait_seconds.is_some()) {
            let mut family = encoder.encode_descriptor(
                "pgbouncer_pools_client_maxwait",
                "How long the oldest waiting client has waited",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for row in &snapshot.pools {
                if let Some(value) = row.maxwait_seconds {
                    let labels = [("database", row.database.as_str()), ("user", row.user.as_str())];
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (i, (_, name, unit, _, help)) in STATS_COUNTERS.iter().enumerate() {
            if snapshot.stats.iter().all(|row| row.counters[i].is_none()) {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            for row in &snapshot.stats {
                if let Some(value) = row.counters[i] {
                    let labels = [("database", row.database.as_str())];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Configures a [`PgBouncerCollector`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PgBouncerCollectorBuilder {
    config: tokio_postgres::Config,
    timeout: Duration,
    max_age: Duration,
}

impl PgBouncerCollectorBuilder {
    /// The most one [`refresh`](PgBouncerCollector::refresh) may take,
    /// connecting included. Default 2 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A snapshot older than this is not exported (and `pgbouncer_up` is 0).
    /// Default 60 s.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Builds the collector.
    pub fn build(self) -> PgBouncerCollector {
        PgBouncerCollector {
            inner: Arc::new(Inner {
                config: self.config,
                timeout: self.timeout,
                max_age: self.max_age,
                client: tokio::sync::Mutex::new(None),
                snapshot: RwLock::new(Snapshot::default()),
            }),
        }
    }
}

/// Why PgBouncer's admin console could not be read.
#[derive(Debug)]
pub struct PgBouncerError {
    step: Step,
    source: Option<tokio_postgres::Error>,
    timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Config,
    Connect,
    Query,
    Timeout,
}

impl PgBouncerError {
    fn new(step: Step, source: tokio_postgres::Error) -> Self {
        Self { step, source: Some(source), timeout: None }
    }

    fn timeout(after: Duration) -> Self {
        Self { step: Step::Timeout, source: None, timeout: Some(after) }
    }

    /// `true` when PgBouncer did not answer within the timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.step, Step::Timeout)
    }
}

impl fmt::Display for PgBouncerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Step::Config => f.write_str("invalid PgBouncer admin console URL"),
            Step::Connect => f.write_str("could not connect to PgBouncer's admin console"),
            Step::Query => f.write_str("PgBouncer's admin console refused SHOW POOLS / SHOW STATS"),
            Step::Timeout => {
                write!(f, "PgBouncer's admin console did not answer within {:?}", self.timeout.unwrap_or_default())
            }
        }
    }
}

impl std::error::Error for PgBouncerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_url_is_a_clear_error() {
        let error = PgBouncerCollector::from_url("postgres://[::1").expect_err("not a URL");
        assert_eq!(error.to_string(), "invalid PgBouncer admin console URL");
        assert!(std::error::Error::source(&error).is_some());
        assert!(!error.is_timeout());
    }

    #[test]
    fn before_any_refresh_only_pgbouncer_up_0_is_exported() {
        let collector = PgBouncerCollector::from_url("postgres://stats@127.0.0.1:6432/pgbouncer").expect("a URL");
        let mut registry = Registry::default();
        collector.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoding cannot fail");
        assert_eq!(
            text,
            "# HELP pgbouncer_up 1 when PgBouncer's admin console was read successfully\n# TYPE pgbouncer_up gauge\npgbouncer_up 0\n# EOF\n"
        );
    }
}
