//! Pools of real PostgreSQL (and Redis) connections from brisk-testkit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brisk_pool_metrics::PoolMetrics;
use brisk_testkit::require;
use common::{expect, scrape};
use deadpool::Runtime;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use prometheus_client::registry::Registry;

fn manager(pg: &brisk_testkit::Postgres) -> Manager {
    let config: tokio_postgres::Config = pg.url().parse().expect("the testkit's URL parses");
    Manager::from_config(config, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast })
}

/// Server connections PostgreSQL has open to `database`, other than `own`'s.
async fn server_connections(own: &tokio_postgres::Client, database: &str) -> i64 {
    let row = own
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", &[&database])
        .await
        .expect("pg_stat_activity is readable");
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_k_of_n_connections_is_exported_exactly() {
    let pg = require!(brisk_testkit::postgres().await);
    let metrics = PoolMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let recorder = metrics.pool("primary");
    let pool = deadpool_postgres::Pool::builder(manager(&pg))
        .max_size(6)
        .wait_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .post_create(recorder.post_create_hook())
        .build()
        .expect("the pool builds");
    let pool = recorder.instrument_pool(pool);

    let mut held = Vec::new();
    for _ in 0..6 {
        let client = pool.get().await.expect("a connection");
        client.simple_query("SELECT 1").await.expect("the query runs");
        held.push(client);
    }
    held.truncate(2); // return 4, hold 2

    let m = scrape(&registry);
    let primary = [("pool", "primary")];
    assert_eq!(expect(&m, "db_client_connection_count", &[("pool", "primary"), ("state", "used")]), 2.0);
    assert_eq!(expect(&m, "db_client_connection_count", &[("pool", "primary"), ("state", "idle")]), 4.0);
    assert_eq!(expect(&m, "db_client_connection_max", &primary), 6.0);
    assert_eq!(expect(&m, "db_client_connection_pending_requests", &primary), 0.0);
    assert_eq!(expect(&m, "db_pool_size", &[("pool", "primary"), ("state", "idle")]), 4.0);
    assert_eq!(expect(&m, "db_pool_size", &[("pool", "primary"), ("state", "total")]), 6.0);
    assert_eq!(expect(&m, "db_pool_size", &[("pool", "primary"), ("state", "waiting")]), 0.0);
    assert_eq!(expect(&m, "db_client_connection_starved", &primary), 0.0);
    assert_eq!(expect(&m, "db_client_connection_created", &primary), 6.0);
    assert_eq!(expect(&m, "db_client_connection_create_time_seconds", &primary), 6.0);
    assert_eq!(expect(&m, "db_client_connection_wait_time_seconds", &primary), 6.0);
    assert_eq!(expect(&m, "db_client_connection_use_time_seconds", &primary), 4.0);
    assert_eq!(expect(&m, "db_client_connection_timeouts", &[("pool", "primary"), ("reason", "wait")]), 0.0);

    // PostgreSQL agrees: six server connections are open.
    let own = pg.connect().await.expect("a direct connection");
    assert_eq!(server_connections(&own, pg.database()).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_share_25_connections_and_the_waiter_peak_survives() {
    const TASKS: usize = 1_000;
    const SIZE: usize = 25;
    let pg = require!(brisk_testkit::postgres().await);
    let metrics = PoolMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let pool = deadpool_postgres::Pool::builder(manager(&pg))
        .max_size(SIZE)
        .wait_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .build()
        .expect("the pool builds");
    let pool = metrics.instrument_pool("primary", pool);
    // A second, gauge-only view, scraped during the run without resetting
    // the first one's peak.
    let watcher = PoolMetrics::new();
    let mut watcher_registry = Registry::default();
    watcher.register(&mut watcher_registry);
    watcher.observe("primary", pool.pool());

    // Saturate: hold every connection, then start the tasks.
    let mut held = Vec::new();
    for _ in 0..SIZE {
        held.push(pool.get().await.expect("a connection"));
    }
    let largest_seen = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let pool = pool.clone();
            let largest_seen = largest_seen.clone();
            tokio::spawn(async move {
                let client = pool.get().await?;
                largest_seen.fetch_max(pool.status().size, Ordering::Relaxed);
                let row = client.query_one("SELECT $1::int8", &[&(i as i64)]).await.map_err(|e| e.to_string());
                Ok::<_, deadpool_postgres::PoolError>(row.map(|row| row.get::<_, i64>(0)))
            })
        })
        .collect();
    // Wait (bounded) until every task is queued.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pool.status().waiting < TASKS {
        assert!(tokio::time::Instant::now() < deadline, "tasks did not queue: {:?}", pool.status());
        tokio::task::yield_now().await;
    }
    let during = scrape(&watcher_registry);
    assert_eq!(expect(&during, "db_client_connection_pending_requests", &[("pool", "primary")]), TASKS as f64);
    assert_eq!(expect(&during, "db_client_connection_starved", &[("pool", "primary")]), 1.0);
    assert_eq!(expect(&during, "db_client_connection_count", &[("pool", "primary"), ("state", "used")]), SIZE as f64);

    drop(held);
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.expect("the task did not panic").expect("no checkout failed");
        assert_eq!(answer, Ok(i as i64));
    }
    assert!(largest_seen.load(Ordering::Relaxed) <= SIZE);

    let after = scrape(&registry);
    let primary = [("pool", "primary")];
    assert_eq!(expect(&after, "db_client_connection_pending_requests", &primary), 0.0);
    assert_eq!(expect(&after, "db_client_connection_pending_requests_peak", &primary), TASKS as f64);
    assert_eq!(expect(&after, "db_client_connection_count", &[("pool", "primary"), ("state", "idle")]), SIZE as f64);
    assert_eq!(expect(&after, "db_client_connection_count", &[("pool", "primary"), ("state", "used")]), 0.0);
    assert_eq!(expect(&after, "db_client_connection_wait_time_seconds", &primary), (TASKS + SIZE) as f64);
    assert_eq!(expect(&after, "db_client_connection_use_time_seconds", &primary), (TASKS + SIZE) as f64);
    assert_eq!(expect(&after, "db_client_connection_timeouts", &[("pool", "primary"), ("reason", "wait")]), 0.0);
    // The peak belongs to the scrape interval that saw it.
    let next = scrape(&registry);
    assert_eq!(expect(&next, "db_client_connection_pending_requests_peak", &primary), 0.0);

    let own = pg.connect().await.expect("a direct connection");
    assert!(server_connections(&own, pg.database()).await <= SIZE as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_timeout_is_counted_by_reason() {
    let pg = require!(brisk_testkit::postgres().await);
    let metrics = PoolMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let pool = deadpool_postgres::Pool::builder(manager(&pg))
        .max_size(1)
        .wait_timeout(Some(Duration::from_millis(50)))
        .runtime(Runtime::Tokio1)
        .build()
        .expect("the pool builds");
    let pool = metrics.instrument_pool("primary", pool);
    let _held = pool.get().await.expect("a connection");
    let error = pool.get().await.expect_err("the only connection is held");
    assert!(matches!(error, deadpool_postgres::PoolError::Timeout(deadpool::managed::TimeoutType::Wait)));

    let m = scrape(&registry);
    assert_eq!(expect(&m, "db_client_connection_timeouts", &[("pool", "primary"), ("reason", "wait")]), 1.0);
    assert_eq!(expect(&m, "db_client_connection_errors", &[("pool", "primary"), ("reason", "backend")]), 0.0);
    assert_eq!(expect(&m, "db_client_connection_wait_time_seconds", &[("pool", "primary")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pool_and_a_postgres_pool_share_one_registry() {
    let pg = require!(brisk_testkit::postgres().await);
    let redis = require!(brisk_testkit::redis().await);
    let metrics = PoolMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let db = metrics.pool("postgres");
    let pg_pool = deadpool_postgres::Pool::builder(manager(&pg))
        .max_size(3)
        .wait_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .post_create(db.post_create_hook())
        .build()
        .expect("the postgres pool builds");
    let pg_pool = db.instrument_pool(pg_pool);

    let cache = metrics.pool("redis");
    let redis_pool = deadpool_redis::Config::from_url(redis.url())
        .builder()
        .expect("the redis URL is valid")
        .max_size(4)
        .wait_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .post_create(cache.post_create_hook())
        .build()
        .expect("the redis pool builds");
    let redis_pool = cache.instrument_pool(redis_pool);

    let pg_client = pg_pool.get().await.expect("a postgres connection");
    pg_client.simple_query("SELECT 1").await.expect("the query runs");
    let mut first = redis_pool.get().await.expect("a redis connection");
    let second = redis_pool.get().await.expect("another redis connection");
    let pong: String = tokio::time::timeout(Duration::from_secs(5), redis::cmd("PING").query_async(&mut *first))
        .await
        .expect("Redis answers in time")
        .expect("PING succeeds");
    assert_eq!(pong, "PONG");
    drop(second);

    let m = scrape(&registry);
    let count = |pool, state| expect(&m, "db_client_connection_count", &[("pool", pool), ("state", state)]);
    assert_eq!(count("postgres", "used"), 1.0);
    assert_eq!(count("postgres", "idle"), 0.0);
    assert_eq!(count("redis", "used"), 1.0);
    assert_eq!(count("redis", "idle"), 1.0);
    assert_eq!(expect(&m, "db_client_connection_max", &[("pool", "postgres")]), 3.0);
    assert_eq!(expect(&m, "db_client_connection_max", &[("pool", "redis")]), 4.0);
    assert_eq!(expect(&m, "db_client_connection_created", &[("pool", "redis")]), 2.0);
    assert_eq!(expect(&m, "db_client_connection_created", &[("pool", "postgres")]), 1.0);
    assert_eq!(expect(&m, "db_client_connection_use_time_seconds", &[("pool", "redis")]), 1.0);
    drop(first);
    drop(pg_client);
}
