//! The PgBouncer collector against a real PgBouncer in front of a real
//! PostgreSQL, from brisk-testkit.

#![cfg(feature = "pgbouncer")]

mod common;

use std::time::Duration;

use brisk_pool_metrics::pgbouncer::PgBouncerCollector;
use brisk_testkit::{PgBouncerOptions, require};
use common::{expect, scrape, value};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// `SHOW POOLS`'s row for `database`/`user`, as (column, value) pairs.
async fn show_pools(admin: &Client, database: &str, user: &str) -> Vec<(String, String)> {
    let messages = admin.simple_query("SHOW POOLS").await.expect("SHOW POOLS runs");
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message
            && row.get("database") == Some(database)
            && row.get("user") == Some(user)
        {
            return row
                .columns()
                .iter()
                .enumerate()
                .map(|(i, column)| (column.name().to_owned(), row.get(i).unwrap_or_default().to_owned()))
                .collect();
        }
    }
    panic!("SHOW POOLS has no row for {database}/{user}");
}

fn column(row: &[(String, String)], name: &str) -> f64 {
    let (_, value) = row.iter().find(|(column, _)| column == name).unwrap_or_else(|| panic!("no column {name}"));
    value.parse().unwrap_or_else(|_| panic!("{name} = {value:?} is not a number"))
}

async fn client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("PgBouncer accepts the client");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_on_twenty_server_connections_are_exported_as_show_pools_says() {
    const CLIENTS: usize = 200;
    const POOL: usize = 20;
    let pg = require!(brisk_testkit::postgres().await);
    let bouncer =
        require!(brisk_testkit::pgbouncer_with(&pg, PgBouncerOptions::default().default_pool_size(POOL as u32)).await);
    let collector = PgBouncerCollector::from_url(&bouncer.admin_url()).expect("the admin URL parses");
    let mut registry = Registry::default();
    collector.register(&mut registry);
    let admin = bouncer.admin().await.expect("the admin console answers");

    // Every client opens a transaction and keeps it open until released: in
    // transaction mode, 20 hold a server connection and 180 wait for one.
    let (began_tx, mut began) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = client(&bouncer.url()).await;
        let began_tx = began_tx.clone();
        let mut released = released.clone();
        tasks.push(tokio::spawn(async move {
            client.simple_query("BEGIN").await?;
            let _ = began_tx.send(());
            let _ = released.wait_for(|go| *go).await;
            client.simple_query("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for _ in 0..POOL {
        began.recv().await.expect("a transaction began");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row = show_pools(&admin, pg.database(), pg.user()).await;
        if column(&row, "cl_waiting") == (CLIENTS - POOL) as f64 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "clients did not queue: {row:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    collector.refresh().await.expect("PgBouncer is read");
    let m = scrape(&registry);
    let truth = show_pools(&admin, pg.database(), pg.user()).await;
    let labels = [("database", pg.database()), ("user", pg.user())];
    assert_eq!(expect(&m, "pgbouncer_up", &[]), 1.0);
    for (metric, col) in [
        ("pgbouncer_pools_client_active_connections", "cl_active"),
        ("pgbouncer_pools_client_waiting_connections", "cl_waiting"),
        ("pgbouncer_pools_server_active_connections", "sv_active"),
        ("pgbouncer_pools_server_idle_connections", "sv_idle"),
        ("pgbouncer_pools_server_used_connections", "sv_used"),
    ] {
        assert_eq!(expect(&m, metric, &labels), column(&truth, col), "{metric} vs SHOW POOLS {col}");
    }
    assert_eq!(expect(&m, "pgbouncer_pools_client_active_connections", &labels), POOL as f64);
    assert_eq!(expect(&m, "pgbouncer_pools_client_waiting_connections", &labels), (CLIENTS - POOL) as f64);
    assert_eq!(expect(&m, "pgbouncer_pools_server_active_connections", &labels), POOL as f64);
    let servers: f64 =
        ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"].iter().map(|c| column(&truth, c)).sum();
    assert!(servers <= POOL as f64, "{servers} server connections");
    // The oldest waiter has been waiting a measurable, finite time.
    let maxwait = expect(&m, "pgbouncer_pools_client_maxwait_seconds", &labels);
    assert!((0.0..60.0).contains(&maxwait), "maxwait {maxwait}");
    // PostgreSQL agrees: no more than 20 server connections to the database.
    let own = pg.connect().await.expect("a direct connection");
    let row = own
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&pg.database()],
        )
        .await
        .expect("pg_stat_activity is readable");
    assert!(row.get::<_, i64>(0) <= POOL as i64);

    release.send(true).expect("the clients listen");
    for task in tasks {
        task.await.expect("the client did not panic").expect("the client's transaction committed");
    }
    collector.refresh().await.expect("PgBouncer is read");
    let m = scrape(&registry);
    assert_eq!(expect(&m, "pgbouncer_pools_client_waiting_connections", &labels), 0.0);
    let database = [("database", pg.database())];
    let transactions = expect(&m, "pgbouncer_stats_sql_transactions_pooled", &database);
    let queries = expect(&m, "pgbouncer_stats_queries_pooled", &database);
    // Each client ran one transaction of two queries (BEGIN, COMMIT), and had
    // its answers before PgBouncer was read.
    assert_eq!(transactions, CLIENTS as f64);
    assert_eq!(queries, 2.0 * CLIENTS as f64);
    assert!(value(&m, "pgbouncer_stats_received_bytes", &database).is_some());
    assert!(value(&m, "pgbouncer_stats_client_wait_seconds", &database).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_pgbouncer_exports_up_zero_and_the_scrape_still_succeeds() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("a bound address").port()
    };
    let collector = PgBouncerCollector::builder(
        format!("postgres://nobody@127.0.0.1:{port}/pgbouncer").parse().expect("the URL parses"),
    )
    .timeout(Duration::from_secs(2))
    .build();
    let mut registry = Registry::default();
    collector.register(&mut registry);
    // Before any refresh: nothing read yet.
    assert_eq!(expect(&scrape(&registry), "pgbouncer_up", &[]), 0.0);

    let error = collector.refresh().await.expect_err("nothing listens there");
    assert!(!error.to_string().is_empty());
    let m = scrape(&registry);
    assert_eq!(expect(&m, "pgbouncer_up", &[]), 0.0);
    assert!(!m.families.contains_key("pgbouncer_pools_client_active_connections"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_reconnects_after_pgbouncer_restarts() {
    let pg = require!(brisk_testkit::postgres().await);
    let mut bouncer = require!(brisk_testkit::pgbouncer(&pg).await);
    let collector = PgBouncerCollector::from_url(&bouncer.admin_url()).expect("the admin URL parses");
    let mut registry = Registry::default();
    collector.register(&mut registry);
    collector.refresh().await.expect("PgBouncer is read");
    assert_eq!(expect(&scrape(&registry), "pgbouncer_up", &[]), 1.0);

    if bouncer.restart().await.is_err() {
        // Only a locally started PgBouncer can be restarted.
        return;
    }
    // The old admin connection is gone: at most one refresh finds out, the
    // next one reconnects.
    if collector.refresh().await.is_err() {
        assert_eq!(expect(&scrape(&registry), "pgbouncer_up", &[]), 0.0);
        collector.refresh().await.expect("the collector reconnected");
    }
    assert_eq!(expect(&scrape(&registry), "pgbouncer_up", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_older_than_max_age_is_not_exported() {
    let pg = require!(brisk_testkit::postgres().await);
    let bouncer = require!(brisk_testkit::pgbouncer(&pg).await);
    let fresh = PgBouncerCollector::from_url(&bouncer.admin_url()).expect("the admin URL parses");
    let stale = PgBouncerCollector::builder(bouncer.admin_url().parse().expect("the admin URL parses"))
        .max_age(Duration::ZERO)
        .build();
    let mut registry = Registry::default();
    fresh.register(&mut registry);
    let mut stale_registry = Registry::default();
    stale.register(&mut stale_registry);
    fresh.refresh().await.expect("PgBouncer is read");
    stale.refresh().await.expect("PgBouncer is read");

    let m = scrape(&registry);
    assert_eq!(expect(&m, "pgbouncer_up", &[]), 1.0);
    assert!(expect(&m, "pgbouncer_snapshot_age_seconds", &[]) >= 0.0);
    // The admin console's own pool is always listed.
    assert!(value(&m, "pgbouncer_pools_client_active_connections", &[("database", "pgbouncer")]).is_some());

    // Any time at all is older than a zero max age.
    let m = scrape(&stale_registry);
    assert_eq!(expect(&m, "pgbouncer_up", &[]), 0.0);
    assert!(expect(&m, "pgbouncer_snapshot_age_seconds", &[]) > 0.0);
    assert!(!m.families.contains_key("pgbouncer_pools_client_active_connections"));
}
