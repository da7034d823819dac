//! The brisk crates in the service, in process on SQLite: cached reads and
//! invalidation (brisk-cache), rate limits (brisk-ratelimit), budgets and
//! metrics (brisk-budget, brisk-pool-metrics), owners through a DataLoader
//! (brisk-dataloader).

mod common;

use std::net::SocketAddr;

use axum::extract::connect_info::MockConnectInfo;
use axum::http::Method;
use common::{Client, config};
use serde_json::json;

struct Service {
    app: blueprint::App,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn service_with(extra: &[(&str, &str)]) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blueprints.sqlite3");
    let path = path.to_str().unwrap().to_owned();
    let mut vars = vec![
        ("SQLITE_PATH", path.as_str()),
        ("DEPLOY_DURATION", "0s"),
        ("ADMIN_TOKEN", "admin-token-for-tests-0123456789"),
    ];
    vars.extend_from_slice(extra);
    let app = blueprint::App::start(config(&vars)).await.expect("the service starts");
    let client = Client { router: app.router() };
    Service { app, client, _dir: dir }
}

#[tokio::test]
async fn reads_are_cached_and_writes_invalidate_them() {
    let s = service_with(&[]).await;
    let first = s.client.get("/api/blueprints/5").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("cache-control"), Some("public, max-age=300"));
    let second = s.client.get("/api/blueprints/5").await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body, "a hit serves the same bytes");
    assert!(second.header("age").is_some());

    // Owner 5's blueprint: replace it as its owner, then read it again.
    let owner = first.json()["owner_id"].as_i64().unwrap();
    let token = s.app.token_of(owner).unwrap();
    let put = s
        .client
        .call(Method::PUT, "/api/blueprints/5", Some(&token), Some(r#"{"name":"Renamed","category":"api"}"#))
        .await;
    assert_eq!(put.status, 200);
    let third = s.client.get("/api/blueprints/5").await;
    assert_eq!(third.header("x-cache"), Some("MISS"), "the write invalidated the entry");
    assert_eq!(third.json()["name"], "Renamed");

    // Pages and the stats summary: cached, and invalidated by a create.
    assert_eq!(s.client.get("/api/blueprints?limit=3").await.header("x-cache"), Some("MISS"));
    let page = s.client.get("/api/blueprints?limit=3").await;
    assert_eq!(page.header("x-cache"), Some("HIT"));
    assert!(page.header("link").is_some(), "a cached page keeps its Link header");
    assert_eq!(s.client.get("/api/projects/stats/summary").await.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(s.client.get("/api/projects/stats/summary").await.header("x-cache"), Some("HIT"));
    let created = s
        .client
        .call(
            Method::POST,
            "/api/projects",
            Some(&token),
            Some(r#"{"name":"cache-test","blueprint_id":5,"region":"eu-west-1"}"#),
        )
        .await;
    assert_eq!(created.status, 201);
    let stats = s.client.get("/api/projects/stats/summary").await;
    assert_eq!(stats.header("x-cache"), Some("MISS"));
    assert_eq!(stats.json()["projects_total"], 301);
    assert_eq!(s.client.get("/api/projects/1").await.header("cache-control"), Some("public, max-age=180"));

    // Equivalent field selections share one entry; errors are not cached.
    assert_eq!(s.client.get("/api/blueprints/9?fields=name,id").await.header("x-cache"), Some("MISS"));
    assert_eq!(s.client.get("/api/blueprints/9?fields=id,name").await.header("x-cache"), Some("HIT"));
    s.client.get("/api/blueprints/999999").await.problem(404);
    s.client.get("/api/blueprints/999999").await.problem(404);

    let stats = s.client.get("/cache/stats").await.json();
    assert!(stats["hit_ratio"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn cache_admin_routes_need_the_admin_token() {
    let s = service_with(&[]).await;
    s.client.get("/api/blueprints/3").await;
    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("HIT"));
    s.client.call(Method::DELETE, "/cache/clear", None, None).await.problem(401);
    s.client.call(Method::DELETE, "/cache/clear", Some(s.app.demo_token()), None).await.problem(401);
    let admin = "admin-token-for-tests-0123456789";
    let cleared = s.client.call(Method::DELETE, "/cache/clear", Some(admin), None).await;
    assert_eq!(cleared.status, 204);
    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("MISS"));

    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("HIT"));
    let by_tag = s.client.call(Method::DELETE, "/cache/invalidate?tag=blueprint:3", Some(admin), None).await;
    assert_eq!(by_tag.status, 200, "{}", String::from_utf8_lossy(&by_tag.body));
    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("MISS"));

    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("HIT"));
    let by_pattern = s.client.call(Method::DELETE, "/cache/invalidate?pattern=blueprint:*", Some(admin), None).await;
    assert_eq!(by_pattern.status, 200, "{}", String::from_utf8_lossy(&by_pattern.body));
    assert_eq!(s.client.get("/api/blueprints/3").await.header("x-cache"), Some("MISS"));

    s.client.call(Method::DELETE, "/cache/invalidate", Some(admin), None).await.problem(400);
    s.client.call(Method::DELETE, "/cache/invalidate?tag=a&pattern=b", Some(admin), None).await.problem(400);
    s.client.call(Method::DELETE, "/cache/invalidate?tag=x", None, None).await.problem(401);
}

#[tokio::test]
async fn the_eleventh_deploy_within_an_hour_is_429() {
    let s = service_with(&[]).await;
    let token = s.app.token_of(8).unwrap();
    let project = s
        .client
        .call(
            Method::POST,
            "/api/projects",
            Some(&token),
            Some(r#"{"name":"limited","blueprint_id":1,"region":"eu-west-1"}"#),
        )
        .await
        .json();
    let body = json!({ "project_id": project["id"] }).to_string();
    for n in 1..=10 {
        let reply = s.client.call(Method::POST, "/api/deploy", Some(&token), Some(&body)).await;
        assert_eq!(reply.status, 202, "deploy {n}");
        assert!(reply.header("ratelimit").is_some_and(|v| v.contains("\"deploy\"")), "deploy {n}");
    }
    let refused = s.client.call(Method::POST, "/api/deploy", Some(&token), Some(&body)).await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("content-type").unwrap().starts_with("application/problem+json"));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // The limit is per user: another user deploys their own project.
    let other = s.app.token_of(9).unwrap();
    let project = s
        .client
        .call(
            Method::POST,
            "/api/projects",
            Some(&other),
            Some(r#"{"name":"unlimited","blueprint_id":1,"region":"eu-west-1"}"#),
        )
        .await
        .json();
    let body = json!({ "project_id": project["id"] }).to_string();
    assert_eq!(s.client.call(Method::POST, "/api/deploy", Some(&other), Some(&body)).await.status, 202);
    // Unauthenticated deploys are 401 and do not count.
    s.client.call(Method::POST, "/api/deploy", None, Some(&body)).await.problem(401);
    let dashboard = s.client.get("/dashboard/stats").await.json();
    assert_eq!(dashboard["rate_limit"]["denied"], 1);
}

#[tokio::test]
async fn the_api_limit_counts_per_client_ip() {
    let s = service_with(&[("API_RATE_LIMIT", "5/15m")]).await;
    let one = Client { router: s.app.router().layer(MockConnectInfo(SocketAddr::from(([198, 51, 100, 1], 1000)))) };
    let two = Client { router: s.app.router().layer(MockConnectInfo(SocketAddr::from(([198, 51, 100, 2], 1000)))) };
    for _ in 0..5 {
        assert_eq!(one.get("/api/blueprints/1").await.status, 200);
    }
    let refused = one.get("/api/blueprints/1").await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(two.get("/api/blueprints/1").await.status, 200, "another client is not limited");
    // Probes and scrapes are not limited: a load balancer polls from one address.
    assert_eq!(one.get("/health/live").await.status, 200);
    assert_eq!(one.get("/health/ready").await.status, 200);
    assert_eq!(one.get("/metrics").await.status, 200);
}

#[tokio::test]
async fn budgets_metrics_and_the_report_see_every_route() {
    let s = service_with(&[]).await;
    for _ in 0..20 {
        assert_eq!(s.client.get("/api/blueprints?limit=10").await.status, 200);
        assert_eq!(s.client.get("/api/blueprints/2").await.status, 200);
    }
    let report = s.client.get("/budget/report").await;
    assert_eq!(report.status, 200);
    let report = report.json();
    let routes = report["routes"].as_array().unwrap();
    let list = routes.iter().find(|r| r["route"] == "GET /api/blueprints").expect("the list route is reported");
    // The first 10 requests of a route are warm-up, not judged.
    assert_eq!(list["count"].as_u64().unwrap() + list["warm_up_skipped"].as_u64().unwrap(), 20, "{list}");
    assert!(list["queries_max"].as_u64().unwrap() <= 2, "owners come in one batch: {list}");
    assert!(list["cache"]["hit"].as_u64().unwrap() >= 9, "{list}");

    let metrics = s.client.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let text = String::from_utf8(metrics.body).unwrap();
    for name in ["http_server_request_duration_seconds", "http_server_requests_total", "db_client_connection_count"] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    if let Err(err) = openmetrics_parser::openmetrics::parse_openmetrics(&text) {
        panic!("/metrics is not valid OpenMetrics: {err:?}\n{text}");
    }

    let dashboard = s.client.get("/dashboard/stats").await.json();
    assert!(dashboard["cache"]["hit_ratio"].as_f64().unwrap() > 0.5);
    assert!(dashboard["routes"].as_array().unwrap().iter().any(|r| r["route"] == "GET /api/blueprints/{id}"));
}

#[tokio::test]
async fn deploy_refusals_are_counted_with_the_api_limit_off() {
    let s = service_with(&[("API_RATE_LIMIT", "off"), ("DEPLOY_RATE_LIMIT", "2/1h")]).await;
    let token = s.app.token_of(10).unwrap();
    let project = s
        .client
        .call(
            Method::POST,
            "/api/projects",
            Some(&token),
            Some(r#"{"name":"two-only","blueprint_id":2,"region":"us-east-1"}"#),
        )
        .await
        .json();
    let body = json!({ "project_id": project["id"] }).to_string();
    for _ in 0..2 {
        assert_eq!(s.client.call(Method::POST, "/api/deploy", Some(&token), Some(&body)).await.status, 202);
    }
    let refused = s.client.call(Method::POST, "/api/deploy", Some(&token), Some(&body)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["type"], "https://iana.org/assignments/http-problem-types#quota-exceeded");
    assert_eq!(s.client.get("/dashboard/stats").await.json()["rate_limit"]["denied"], 1);
    // No API limit: no RateLimit fields outside the deploy route.
    assert!(s.client.get("/api/blueprints/1").await.header("ratelimit").is_none());
}
