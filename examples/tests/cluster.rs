//! Two instances on one database with a Redis Cluster (brisk-testkit):
//! readiness checks the cluster, the shared tier answers the other instance,
//! and a write on one instance invalidates the other's cache.

mod common;

use std::time::Duration;

use axum::http::Method;
use brisk_testkit::require;
use common::{Client, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_crosses_instances_on_redis_cluster() {
    let cluster = require!(brisk_testkit::redis_cluster().await);
    let urls = cluster.urls().join(",");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.sqlite3");
    let vars = [("SQLITE_PATH", db.to_str().unwrap()), ("REDIS_CLUSTER_URLS", urls.as_str())];
    let a = blueprint::App::start(config(&vars)).await.expect("instance a starts");
    let b = blueprint::App::start(config(&vars)).await.expect("instance b starts");
    let (ca, cb) = (Client { router: a.router() }, Client { router: b.router() });

    let ready = ca.get("/health/ready").await;
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
    assert_eq!(ready.json()["checks"]["redis"]["mode"], "cluster");

    assert_eq!(cb.get("/api/projects/4").await.header("x-cache"), Some("MISS"));
    assert_eq!(ca.get("/api/projects/4").await.header("x-cache"), Some("HIT"), "A reads B's fill from the cluster");
    let owner = ca.get("/api/projects/4").await.json()["owner_id"].as_i64().unwrap();
    let before = cb.get("/cache/stats").await.json()["bus_messages"].as_u64().unwrap();
    let patched = ca
        .call(Method::PATCH, "/api/projects/4", Some(&a.token_of(owner).unwrap()), Some(r#"{"status":"paused"}"#))
        .await;
    assert_eq!(patched.status, 200, "{}", String::from_utf8_lossy(&patched.body));
    tokio::time::timeout(Duration::from_secs(10), async {
        while cb.get("/cache/stats").await.json()["bus_messages"].as_u64().unwrap() <= before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("B hears A's invalidation on the bus");
    let after = cb.get("/api/projects/4").await;
    assert_eq!(after.header("x-cache"), Some("MISS"));
    assert_eq!(after.json()["status"], "paused");
    a.shutdown().await;
    b.shutdown().await;
}
