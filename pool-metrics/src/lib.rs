//! # brisk-pool-metrics
//!
//! Connection-pool metrics for [deadpool] pools (deadpool-postgres,
//! deadpool-redis, deadpool-sqlite, any `deadpool::managed::Pool<M>`) and for
//! PgBouncer, on `prometheus-client`.
//!
//! ```
//! use brisk_pool_metrics::PoolMetrics;
//! use deadpool::managed::{Manager, Metrics, Pool, RecycleResult};
//! use prometheus_client::registry::Registry;
//!
//! struct Numbers;
//! impl Manager for Numbers {
//!     type Type = u32;
//!     type Error = std::convert::Infallible;
//!     async fn create(&self) -> Result<u32, Self::Error> { Ok(7) }
//!     async fn recycle(&self, _: &mut u32, _: &Metrics) -> RecycleResult<Self::Error> { Ok(()) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let metrics = PoolMetrics::new();
//! let mut registry = Registry::default();
//! metrics.register(&mut registry);
//!
//! let primary = metrics.pool("primary");
//! let pool = Pool::<Numbers>::builder(Numbers)
//!     .max_size(16)
//!     .wait_timeout(Some(std::time::Duration::from_secs(2))) // see below
//!     .runtime(deadpool::Runtime::Tokio1)
//!     .post_create(primary.post_create_hook())
//!     .build()
//!     .unwrap();
//! let pool = primary.instrument_pool(pool);
//!
//! let connection = pool.get().await.unwrap(); // wait time recorded
//! drop(connection);                           // use time recorded
//!
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains(r#"db_client_connection_count{pool="primary",state="idle"} 1"#));
//! # }
//! ```
//!
//! ## What you get
//!
//! - **Gauges read at scrape time** ([`PoolMetrics`], a prometheus-client
//!   `Collector`: no background task): `db_client_connection_count{state="idle|used"}`,
//!   `db_client_connection_max`, `db_client_connection_pending_requests`, and
//!   `db_pool_size{state="idle|total|waiting"}`, per pool (`pool` label).
//! - **An instrumented pool** ([`InstrumentedPool`]) whose `get()` records the
//!   wait time, timeouts and errors by reason, the use time (until the
//!   [`Checkout`] is dropped), and the peak number of waiters since the last
//!   scrape — a spike between two scrapes is not lost. A deadpool
//!   `post_create` hook ([`PoolRecorder::post_create_hook`]) records
//!   connection creation.
//! - **Pressure signals**: a `tracing` warning when more than
//!   [`pressure_threshold`](PoolMetricsBuilder::pressure_threshold) tasks
//!   (default 5) keep waiting for a
//!   [`pressure_period`](PoolMetricsBuilder::pressure_period) (default 10 s);
//!   `db_client_connection_starved` (no idle connection and tasks waiting);
//!   connections held longer than
//!   [`held_too_long`](PoolMetricsBuilder::held_too_long) (default 30 s) are
//!   counted and warned about, naming the `tracing` span that checked them
//!   out — while still held, so a leaked connection is reported too.
//! - **PgBouncer** (feature `pgbouncer`): `SHOW POOLS` and `SHOW STATS` from the
//!   admin console, as `pgbouncer_exporter` exports them.
//!
//! ## Set a wait timeout: deadpool has none by default
//!
//! A deadpool pool built without timeouts makes `get()` wait **forever** when
//! every connection is checked out: under load, requests pile up behind the
//! pool instead of failing fast, and nothing in the metrics says why until the
//! service stops answering. Always set [`Timeouts`](deadpool::managed::Timeouts)
//! **and a runtime** (deadpool cannot time out without one, and `get()` then
//! fails with `NoRuntimeSpecified`):
//!
//! ```no_run
//! use std::time::Duration;
//! use deadpool::managed::Timeouts;
//!
//! # fn build(manager: deadpool_postgres::Manager) -> Result<(), deadpool::managed::BuildError> {
//! let pool = deadpool_postgres::Pool::builder(manager)
//!     .max_size(16)
//!     .timeouts(Timeouts {
//!         // Fail a checkout after this: well under the request's own
//!         // deadline, so the caller can still answer 503.
//!         wait: Some(Duration::from_secs(2)),
//!         // Opening a connection (TCP + TLS + auth).
//!         create: Some(Duration::from_secs(5)),
//!         // The health check run on an idle connection before reuse.
//!         recycle: Some(Duration::from_secs(1)),
//!     })
//!     .runtime(deadpool::Runtime::Tokio1)
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! With `deadpool_postgres::Config`, set `cfg.pool = Some(PoolConfig { timeouts, .. })`
//! and pass `Some(Runtime::Tokio1)` to `create_pool`. The timeouts then
//! appear in `db_client_connection_timeouts_total{reason="wait|create|recycle"}`.
//! Size `max_size` below the database's (or PgBouncer's) connection budget
//! divided by the number of instances.
//!
//! ## Features
//!
//! | feature | enables | pulls in |
//! |---|---|---|
//! | *(none)* | [`PoolMetrics`], [`InstrumentedPool`] for any deadpool pool | `deadpool` (no default features), `prometheus-client`, `tracing`, `parking_lot` |
//! | `pgbouncer` | `pgbouncer::PgBouncerCollector` (`SHOW POOLS`, `SHOW STATS`) | `tokio-postgres`, `tokio` |
//!
//! The core does not depend on any deadpool backend: deadpool-postgres,
//! deadpool-redis and deadpool-sqlite pools are all `deadpool::managed::Pool`s.

mod held;
mod labels;
mod metrics;
#[cfg(feature = "pgbouncer")]
pub mod pgbouncer;
mod pool;
mod pressure;
mod state;

pub use crate::metrics::{PoolMetrics, PoolMetricsBuilder};
pub use crate::pool::{Checkout, InstrumentedPool, PoolRecorder};

#[cfg(test)]
mod tests;
