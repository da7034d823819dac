//! The testkit's own proof that each source works here: real servers, real
//! commands.

use std::time::Duration;

use brisk_testkit::{Source, require};

async fn ping(client: &redis::Client) -> redis::RedisResult<String> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

#[tokio::test]
async fn redis_answers_ping() {
    let redis = require!(brisk_testkit::redis().await);
    let client = redis.client();
    assert_eq!(ping(&client).await.unwrap(), "PONG");
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = brisk_testkit::unique_name("testkit:");
    let _: () = redis::cmd("SET").arg(&key).arg("value").query_async(&mut conn).await.unwrap();
    let value: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(value, "value");
}

#[tokio::test]
async fn a_local_redis_can_be_killed_frozen_and_brought_back() {
    let mut redis = require!(brisk_testkit::redis().await);
    if redis.source() != Source::LocalBinary {
        assert!(redis.kill().is_err(), "fault injection is only for servers the testkit started");
        return;
    }
    let client = redis.client();
    redis.kill().unwrap();
    assert!(ping(&client).await.is_err(), "a killed server must not answer");
    redis.start().await.unwrap();
    assert_eq!(ping(&client).await.unwrap(), "PONG");

    redis.freeze().unwrap();
    let frozen = tokio::time::timeout(Duration::from_millis(300), ping(&client)).await;
    assert!(frozen.is_err(), "a frozen server must not answer: {frozen:?}");
    redis.thaw().unwrap();
    assert_eq!(ping(&client).await.unwrap(), "PONG");
}

#[tokio::test]
async fn dropping_a_local_redis_stops_it() {
    let redis = require!(brisk_testkit::redis().await);
    if redis.source() != Source::LocalBinary {
        return;
    }
    let client = redis.client();
    drop(redis);
    assert!(ping(&client).await.is_err(), "the server must be gone once its handle is dropped");
}

#[tokio::test]
async fn redis_cluster_routes_commands_to_each_master() {
    let cluster = require!(brisk_testkit::redis_cluster().await);
    assert_eq!(cluster.urls().len(), 3);
    let mut conn = cluster.client().get_async_connection().await.unwrap();
    let prefix = brisk_testkit::unique_name("testkit:");
    let keys: Vec<String> = (0..30).map(|i| format!("{prefix}:{i}")).collect();
    for key in &keys {
        let _: () = redis::cmd("SET").arg(key).arg(key).query_async(&mut conn).await.unwrap();
    }
    for key in &keys {
        let value: String = redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap();
        assert_eq!(&value, key);
    }
    // Each master holds its share: the cluster client routed by slot.
    let mut total = 0;
    for url in cluster.urls() {
        let mut node = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut node).await.unwrap();
        assert!(info.contains("cluster_state:ok"), "{url}: {info}");
        assert!(info.contains("cluster_slots_ok:16384"), "{url}: {info}");
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut node).await.unwrap();
        assert_eq!(role.first(), Some(&redis::Value::BulkString(b"master".to_vec())), "{url} is not a master");
        let mut held = 0;
        for key in &keys {
            let exists: i64 = match redis::cmd("EXISTS").arg(key).query_async(&mut node).await {
                Ok(n) => n,
                Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => 0,
                Err(err) => panic!("{url}: {err}"),
            };
            held += exists;
        }
        assert!(held > 0, "{url} holds none of the keys: commands were not routed to it");
        total += held;
    }
    assert_eq!(total, 30, "every key lives on exactly one master");
}

#[tokio::test]
async fn postgres_gives_a_fresh_database() {
    let postgres = require!(brisk_testkit::postgres().await);
    let client = postgres.connect().await.unwrap();
    let row = client.query_one("SELECT 1::int4, current_database()", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, String>(1), postgres.database());
    let tables: i64 = client
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a fresh database has no tables");
}

#[tokio::test]
async fn postgres_restarts_with_its_data() {
    let mut postgres = require!(brisk_testkit::postgres().await);
    if postgres.source() != Source::LocalBinary {
        assert!(postgres.kill().is_err());
        return;
    }
    let client = postgres.connect().await.unwrap();
    client.batch_execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (7);").await.unwrap();
    postgres.restart().await.unwrap();
    assert!(client.simple_query("SELECT 1").await.is_err(), "the old connection was closed by the restart");
    let client = postgres.connect().await.unwrap();
    let id: i32 = client.query_one("SELECT id FROM kept", &[]).await.unwrap().get(0);
    assert_eq!(id, 7);
}

#[tokio::test]
async fn pgbouncer_serves_queries_and_its_admin_console() {
    let postgres = require!(brisk_testkit::postgres().await);
    let bouncer = require!(brisk_testkit::pgbouncer(&postgres).await);
    let (client, connection) = tokio_postgres::connect(&bouncer.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // Transaction pooling: the simple protocol needs no server-side prepared statement.
    let rows = client.simple_query("SELECT 1").await.unwrap();
    let first = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(first.as_deref(), Some("1"));

    let admin = bouncer.admin().await.unwrap();
    let pools = admin.simple_query("SHOW POOLS").await.unwrap();
    let ours = pools.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) if row.get("database") == Some(postgres.database()) => {
            Some(row.get("pool_mode").map(str::to_owned))
        }
        _ => None,
    });
    assert_eq!(ours, Some(Some("transaction".to_owned())), "SHOW POOLS lists the test database's pool");
}

#[tokio::test]
async fn pgbouncer_restarts_on_its_port() {
    let postgres = require!(brisk_testkit::postgres().await);
    let mut bouncer = require!(brisk_testkit::pgbouncer(&postgres).await);
    if bouncer.source() != Source::LocalBinary {
        return;
    }
    let port = bouncer.port();
    bouncer.restart().await.unwrap();
    assert_eq!(bouncer.port(), port);
    let admin = bouncer.admin().await.unwrap();
    admin.simple_query("SHOW VERSION").await.unwrap();
}

/// Runs one test of this binary again with no server reachable from any source.
fn run_without_servers(test: &str, ci: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("PATH", "")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER_URLS")
        .env_remove("DATABASE_URL")
        .env_remove("CI");
    if let Some(ci) = ci {
        command.env("CI", ci);
    }
    command.output().unwrap()
}

#[test]
fn without_servers_a_test_is_skipped_with_the_reason() {
    let out = run_without_servers("redis_answers_ping", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "skipped, not failed: {stderr}");
    assert!(stderr.contains("SKIPPED redis_answers_ping: no redis for this test"), "{stderr}");
    assert!(stderr.contains("redis-server is not on PATH"), "{stderr}");
    assert!(stderr.contains("apt-get install redis-server"), "{stderr}");
}

#[test]
fn without_servers_a_test_fails_when_ci_is_set() {
    for test in ["redis_answers_ping", "postgres_gives_a_fresh_database"] {
        let out = run_without_servers(test, Some("true"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{test} must fail in CI without a server: {stderr}");
        assert!(stderr.contains("CI is set"), "{test}: {stderr}");
    }
}
