//! A deadpool-sqlite pool (SQLite is embedded: no server to start).

mod common;

use std::time::Duration;

use brisk_pool_metrics::PoolMetrics;
use common::{expect, scrape};
use deadpool::Runtime;
use prometheus_client::registry::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_pool_is_exported_like_any_other() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let metrics = PoolMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let embedded = metrics.pool("sqlite");
    let pool = deadpool_sqlite::Config::new(dir.path().join("app.db"))
        .builder(Runtime::Tokio1)
        .expect("the SQLite config is valid")
        .max_size(3)
        .wait_timeout(Some(Duration::from_secs(5)))
        .post_create(embedded.post_create_hook())
        .build()
        .expect("the pool builds");
    let pool = embedded.instrument_pool(pool);

    let first = pool.get().await.expect("a connection");
    let second = pool.get().await.expect("another connection");
    let answer = first
        .interact(|db| db.query_row("SELECT 40 + 2", [], |row| row.get::<_, i64>(0)))
        .await
        .expect("the closure ran")
        .expect("the query ran");
    assert_eq!(answer, 42);
    drop(second);

    let m = scrape(&registry);
    assert_eq!(expect(&m, "db_client_connection_count", &[("pool", "sqlite"), ("state", "used")]), 1.0);
    assert_eq!(expect(&m, "db_client_connection_count", &[("pool", "sqlite"), ("state", "idle")]), 1.0);
    assert_eq!(expect(&m, "db_client_connection_max", &[("pool", "sqlite")]), 3.0);
    assert_eq!(expect(&m, "db_client_connection_created", &[("pool", "sqlite")]), 2.0);
    assert_eq!(expect(&m, "db_client_connection_use_time_seconds", &[("pool", "sqlite")]), 1.0);
    drop(first);
}
