//! The HTTP layer on a real Redis: two application instances share it, and
//! a write on one invalidates the other's cached read; with Redis down, the
//! responses are the inner service's.

#![cfg(all(feature = "axum", feature = "redis"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use brisk_cache::TieredCache;
use brisk_cache::http::{CacheLayer, InvalidateLayer, Targets};
use brisk_testkit::require;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// One instance: `GET /api/blueprints` (cached, tagged) and `POST` (invalidates).
fn instance(cache: &TieredCache, version: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/api/blueprints",
            get(|State(v): State<Arc<AtomicUsize>>| async move { format!("v{}", v.load(Ordering::SeqCst)) }).post(
                |State(v): State<Arc<AtomicUsize>>| async move {
                    v.fetch_add(1, Ordering::SeqCst);
                    StatusCode::CREATED
                },
            ),
        )
        .with_state(version)
        .layer(CacheLayer::new(cache).tags_fn(|req| vec![format!("route:{}", req.route())]))
        .layer(InvalidateLayer::new(cache).route("/api/blueprints*", Targets::new().tag("route:/api/blueprints")))
}

async fn call(app: &Router, method: &str, uri: &str) -> (String, String) {
    let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let x_cache = response.headers().get("x-cache").map_or("", |v| v.to_str().unwrap()).to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (x_cache, String::from_utf8(body.to_vec()).unwrap())
}

async fn tiered(url: &str, prefix: &str) -> TieredCache {
    let cache = TieredCache::builder().prefix(prefix).redis_url(url).unwrap().build().unwrap();
    tokio::time::timeout(Duration::from_secs(10), cache.wait_until_ready()).await.expect("the bus subscribes");
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_invalidates_the_others_cached_read() {
    let redis = require!(brisk_testkit::redis().await);
    let prefix = brisk_testkit::unique_name("http_");
    // The database both instances read.
    let version = Arc::new(AtomicUsize::new(1));
    let a = instance(&tiered(redis.url(), &prefix).await, Arc::clone(&version));
    let b = instance(&tiered(redis.url(), &prefix).await, Arc::clone(&version));

    assert_eq!(call(&a, "GET", "/api/blueprints").await, ("MISS".into(), "v1".into()));
    assert_eq!(call(&a, "GET", "/api/blueprints").await, ("HIT".into(), "v1".into()));
    // B finds A's entry in Redis.
    assert_eq!(call(&b, "GET", "/api/blueprints").await, ("HIT".into(), "v1".into()));

    assert_eq!(call(&b, "POST", "/api/blueprints").await.0, "BYPASS");
    // The invalidation reaches A's L1 through the bus; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (x_cache, body) = call(&a, "GET", "/api/blueprints").await;
        if x_cache == "MISS" {
            assert_eq!(body, "v2");
            break;
        }
        assert_eq!(body, "v1");
        assert!(Instant::now() < deadline, "A still serves its cached read 2 s after B's write");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(call(&b, "GET", "/api/blueprints").await, ("HIT".into(), "v2".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_responses_are_the_inner_services() {
    let mut redis = require!(brisk_testkit::redis().await);
    let prefix = brisk_testkit::unique_name("http_");
    let cache = TieredCache::builder()
        .prefix(&prefix)
        .redis_url(redis.url())
        .unwrap()
        .redis_timeout(Duration::from_millis(200))
        .circuit_breaker(2, Duration::from_secs(60))
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), cache.wait_until_ready()).await.expect("the bus subscribes");
    let version = Arc::new(AtomicUsize::new(1));
    let app = instance(&cache, Arc::clone(&version));
    assert_eq!(call(&app, "GET", "/api/blueprints").await, ("MISS".into(), "v1".into()));

    redis.kill().expect("the test's Redis stops");
    version.store(2, Ordering::SeqCst);
    for _ in 0..5 {
        let (x_cache, body) = call(&app, "GET", "/api/blueprints").await;
        // Whatever the cache can still trust, the answer is a valid one:
        // the entry from before (HIT) or the inner service's (MISS).
        assert!(matches!((x_cache.as_str(), body.as_str()), ("HIT", "v1") | ("MISS", "v2")), "{x_cache} {body}");
    }
    // A write still succeeds (its invalidation is applied locally and logged).
    assert_eq!(call(&app, "POST", "/api/blueprints").await.0, "BYPASS");
    let (x_cache, body) = call(&app, "GET", "/api/blueprints").await;
    assert_eq!((x_cache.as_str(), body.as_str()), ("MISS", "v3"));
    assert!(cache.stats().l2_errors + cache.stats().l2_rejected + cache.stats().l2_timeouts > 0);
}
