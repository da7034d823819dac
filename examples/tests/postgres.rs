//! The service on real PostgreSQL behind PgBouncer in transaction mode, two
//! instances sharing one database (brisk-testkit servers).

mod common;

use std::collections::HashSet;

use axum::http::Method;
use brisk_testkit::require;
use common::{Client, config, wait_for_deploy};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_postgres_through_pgbouncer() {
    let pg = require!(brisk_testkit::postgres().await);
    let bouncer = require!(brisk_testkit::pgbouncer(&pg).await);
    let url = bouncer.url();
    let vars = [("DATABASE_URL", url.as_str()), ("DB_POOL_SIZE", "5"), ("DEPLOY_DURATION", "0s")];

    // Both instances start at once: migrations and the seed are serialised by
    // an advisory lock, so exactly one of them seeds.
    let (a, b) = tokio::join!(blueprint::App::start(config(&vars)), blueprint::App::start(config(&vars)));
    let (a, b) = (a.expect("instance a starts"), b.expect("instance b starts"));
    assert_eq!(a.engine(), "postgres");
    assert_eq!(a.demo_token(), b.demo_token(), "one seed, one set of users");
    let (ca, cb) = (Client { router: a.router() }, Client { router: b.router() });

    let ready = ca.get("/health/ready").await;
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
    assert_eq!(ready.json()["checks"]["database"]["engine"], "postgres");

    let stats = cb.get("/api/projects/stats/summary").await.json();
    assert_eq!(stats["blueprints_total"], 1200);
    assert_eq!(stats["projects_total"], 300);

    // Pagination through PgBouncer, alternating instances.
    let mut seen = HashSet::new();
    let mut path = "/api/blueprints?limit=100&fields=id,owner".to_owned();
    for page in 0.. {
        let client = if page % 2 == 0 { &ca } else { &cb };
        let reply = client.get(&path).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let body = reply.json();
        for item in body["data"].as_array().unwrap() {
            assert!(item["owner"]["name"].is_string());
            assert!(seen.insert(item["id"].as_i64().unwrap()));
        }
        match body["page"]["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/blueprints?limit=100&fields=id,owner&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1200);

    // A write on one instance is read on the other.
    let token = a.token_of(6).unwrap();
    let created = ca
        .call(
            Method::POST,
            "/api/blueprints",
            Some(&token),
            Some(r#"{"name":"Shared","category":"data","tags":["postgres"]}"#),
        )
        .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let id = created.json()["id"].as_i64().unwrap();
    assert!(id > 1200, "sequences were moved past the seed");
    let path = format!("/api/blueprints/{id}");
    assert_eq!(cb.get(&path).await.json()["name"], "Shared");
    let replaced = cb.call(Method::PUT, &path, Some(&token), Some(r#"{"name":"Shared v2","category":"data"}"#)).await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.json()["version"], 2);
    cb.call(Method::PUT, &path, Some(&a.token_of(7).unwrap()), Some(r#"{"name":"x","category":"data"}"#))
        .await
        .problem(403);

    // Projects, the in-use rule and atomic refusals.
    let project = ca
        .call(
            Method::POST,
            "/api/projects",
            Some(&token),
            Some(&json!({ "name": "shared-project", "blueprint_id": id, "region": "us-east-1" }).to_string()),
        )
        .await;
    assert_eq!(project.status, 201, "{}", String::from_utf8_lossy(&project.body));
    let project_id = project.json()["id"].as_i64().unwrap();
    cb.call(Method::DELETE, &path, Some(&token), None).await.problem(409);
    ca.call(
        Method::POST,
        "/api/projects",
        Some(&token),
        Some(r#"{"name":"orphan-one","blueprint_id":999999,"region":"us-east-1"}"#),
    )
    .await
    .problem(422);
    let patched = cb
        .call(Method::PATCH, &format!("/api/projects/{project_id}"), Some(&token), Some(r#"{"region":"us-west-2"}"#))
        .await;
    assert_eq!(patched.json()["region"], "us-west-2");

    // A deploy queued on one instance is claimed by one worker and read from the other.
    let mut events_a = a.deploy_events();
    let mut events_b = b.deploy_events();
    let queued = cb
        .call(Method::POST, "/api/deploy", Some(&token), Some(&json!({ "project_id": project_id }).to_string()))
        .await;
    assert_eq!(queued.status, 202, "{}", String::from_utf8_lossy(&queued.body));
    let job = queued.json()["id"].as_i64().unwrap();
    let done = tokio::select! {
        d = wait_for_deploy(&mut events_a, job) => d,
        d = wait_for_deploy(&mut events_b, job) => d,
    };
    assert_eq!(done.status, blueprint::store::DeployStatus::Succeeded);
    let status = ca.get_as(&format!("/api/deploy/{job}"), &token).await.json();
    assert_eq!(status["status"], "succeeded");

    let stats = ca.get("/api/projects/stats/summary").await.json();
    assert_eq!(stats["blueprints_total"], 1201);
    assert_eq!(stats["projects_total"], 301);

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_rides_out_a_database_restart_and_reports_a_crash() {
    let mut pg = require!(brisk_testkit::postgres().await);
    let url = pg.url();
    let app = blueprint::App::start(config(&[("DATABASE_URL", url.as_str()), ("DB_POOL_TIMEOUT", "1s")]))
        .await
        .expect("starts");
    let client = Client { router: app.router() };
    assert_eq!(client.get("/health/ready").await.status, 200);
    assert_eq!(client.get("/api/blueprints/1").await.status, 200);

    // A restart (fast shutdown) breaks every pooled connection. They are
    // discarded as they are met; meanwhile a read says 503 (try again), never 500.
    pg.restart().await.expect("restart PostgreSQL");
    // Reads of rows not yet cached, so each one goes to the database.
    let mut read_ok = false;
    for id in 100..150 {
        let read = client.get(&format!("/api/blueprints/{id}")).await;
        if read.status == 200 {
            read_ok = true;
            break;
        }
        read.problem(503);
    }
    assert!(read_ok, "reads recover after the restart");

    pg.kill().expect("stop PostgreSQL");
    // SIGKILL reaches the postmaster at once; its backends, and with them the
    // pooled connections, end as they notice. Poll (bounded) until they have.
    let mut down = None;
    for _ in 0..200 {
        let ready = client.get("/health/ready").await;
        if ready.status == 503 {
            down = Some(ready.json());
            break;
        }
        tokio::task::yield_now().await;
    }
    let body = down.expect("readiness turns 503 once the database is gone");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"]["status"], "down");
    assert!(body["checks"]["database"]["error"].is_string());
    let read = client.get("/api/blueprints/500").await;
    read.problem(503);
    assert_eq!(read.header("retry-after"), Some("1"));

    pg.start().await.expect("start PostgreSQL again");
    let mut recovered = false;
    for _ in 0..50 {
        if client.get("/health/ready").await.status == 200 {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "readiness recovers once the database is back");
}

/// Waits (bounded) until instance `client` has received more cache bus
/// messages than `before`.
async fn bus_messages(client: &Client) -> u64 {
    client.get("/cache/stats").await.json()["bus_messages"].as_u64().expect("bus_messages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_cache_invalidation_and_deploy_limits_through_redis() {
    let pg = require!(brisk_testkit::postgres().await);
    let bouncer = require!(brisk_testkit::pgbouncer(&pg).await);
    let redis = require!(brisk_testkit::redis().await);
    let url = bouncer.url();
    let admin_url = bouncer.admin_url();
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("PGBOUNCER_ADMIN_URL", admin_url.as_str()),
        ("REDIS_URL", redis.url()),
        ("DB_POOL_SIZE", "5"),
        ("DEPLOY_DURATION", "0s"),
    ];
    let a = blueprint::App::start(config(&vars)).await.expect("instance a starts");
    let b = blueprint::App::start(config(&vars)).await.expect("instance b starts");
    let (ca, cb) = (Client { router: a.router() }, Client { router: b.router() });

    let ready = cb.get("/health/ready").await;
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
    assert_eq!(ready.json()["checks"]["redis"]["status"], "up");

    // B caches blueprint 7; A's write reaches B's cache through Redis.
    assert_eq!(cb.get("/api/blueprints/7").await.header("x-cache"), Some("MISS"));
    assert_eq!(cb.get("/api/blueprints/7").await.header("x-cache"), Some("HIT"));
    // A reads it from the shared tier (L2) without touching the database.
    assert_eq!(ca.get("/api/blueprints/7").await.header("x-cache"), Some("HIT"));
    let owner = cb.get("/api/blueprints/7").await.json()["owner_id"].as_i64().unwrap();
    let token = a.token_of(owner).unwrap();
    let before = bus_messages(&cb).await;
    let put = ca
        .call(Method::PUT, "/api/blueprints/7", Some(&token), Some(r#"{"name":"Renamed on A","category":"web"}"#))
        .await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while bus_messages(&cb).await <= before {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("B hears A's invalidation on the bus");
    let after = cb.get("/api/blueprints/7").await;
    assert_eq!(after.header("x-cache"), Some("MISS"));
    assert_eq!(after.json()["name"], "Renamed on A");

    // The deploy limit is shared: 10 per hour per user across both instances.
    let project = ca
        .call(
            Method::POST,
            "/api/projects",
            Some(&token),
            Some(r#"{"name":"shared-limit","blueprint_id":7,"region":"eu-west-1"}"#),
        )
        .await;
    assert_eq!(project.status, 201, "{}", String::from_utf8_lossy(&project.body));
    let body = json!({ "project_id": project.json()["id"] }).to_string();
    for n in 1..=10 {
        let client = if n % 2 == 0 { &ca } else { &cb };
        let reply = client.call(Method::POST, "/api/deploy", Some(&token), Some(&body)).await;
        assert_eq!(reply.status, 202, "deploy {n}: {}", String::from_utf8_lossy(&reply.body));
    }
    let refused = ca.call(Method::POST, "/api/deploy", Some(&token), Some(&body)).await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());

    // /metrics: the pool's gauges and PgBouncer's own view.
    let metrics = String::from_utf8(ca.get("/metrics").await.body).unwrap();
    for line in ["pgbouncer_up 1", "pgbouncer_pools_client_active_connections", "db_client_connection_count"] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    a.shutdown().await;
    b.shutdown().await;
}
