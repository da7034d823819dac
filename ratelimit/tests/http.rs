//! The tower layer in an axum app: exact header fields, problem bodies,
//! key extraction behind proxies, stacking, weights, and a Redis outage.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::routing::get;
use brisk_ratelimit::clock::FakeClock;
use brisk_ratelimit::key::{ClientIp, ForwardedHeader, HeaderKey, PeerIp, RouteTemplate};
use brisk_ratelimit::store::RedisStore;
use brisk_ratelimit::{HeaderStyle, MissingKey, OnStoreError, Policy, Quota, RateLimitLayer, RateLimiter};
use brisk_testkit::require;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn limiter(clock: &FakeClock, prefix: &str, policies: Vec<Policy>) -> RateLimiter {
    let mut b = RateLimiter::builder(prefix).clock(clock.clone());
    for p in policies {
        b = b.policy(p);
    }
    b.build().unwrap()
}

fn peer(ip: [u8; 4]) -> MockConnectInfo<SocketAddr> {
    MockConnectInfo(SocketAddr::from((ip, 50000)))
}

async fn send(app: &Router, request: Request<Body>) -> Response<Body> {
    app.clone().oneshot(request).await.unwrap()
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn fields(response: &Response<Body>, name: &str) -> Vec<String> {
    response.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

async fn json(response: Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn headers_and_problem_body_exact_values() {
    let clock = FakeClock::new();
    let l = limiter(
        &clock,
        "rl:api:",
        vec![Policy::new("minute", Quota::per_minute(nz(3))), Policy::new("day", Quota::per_day(nz(100)))],
    );
    let app =
        Router::new().route("/", get(|| async { "ok" })).layer(RateLimitLayer::new(l)).layer(peer([192, 0, 2, 1]));

    let r = send(&app, get_req("/")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(fields(&r, "ratelimit-policy"), [r#""minute";q=3;w=60, "day";q=100;w=86400"#]);
    assert_eq!(fields(&r, "ratelimit"), [r#""minute";r=2;t=20, "day";r=99;t=864"#]);
    assert!(r.headers().get("x-ratelimit-limit").is_none());
    send(&app, get_req("/")).await;
    clock.advance(Duration::from_millis(500));
    let r = send(&app, get_req("/")).await;
    assert_eq!(fields(&r, "ratelimit"), [r#""minute";r=0;t=60, "day";r=97;t=2592"#]);

    let r = send(&app, get_req("/")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Next unit of "minute" in 20 s − 0.5 s: rounded up.
    assert_eq!(fields(&r, "retry-after"), ["20"]);
    assert_eq!(fields(&r, "ratelimit"), [r#""minute";r=0;t=20, "day";r=97;t=2592"#]);
    assert_eq!(fields(&r, "ratelimit-policy"), [r#""minute";q=3;w=60, "day";q=100;w=86400"#]);
    assert_eq!(fields(&r, "content-type"), ["application/problem+json"]);
    assert_eq!(
        json(r).await,
        serde_json::json!({
            "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "title": "Request cannot be satisfied as assigned quota has been exceeded",
            "status": 429,
            "detail": "Quota exceeded for minute; retry in 20 s.",
            "violated-policies": ["minute"],
        })
    );
}

#[tokio::test]
async fn legacy_fields_are_opt_in() {
    let clock = FakeClock::new();
    let l = limiter(&clock, "rl:legacy:", vec![Policy::new("api", Quota::per_hour(nz(10)))]);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(l).headers(HeaderStyle::IetfAndLegacy))
        .layer(peer([192, 0, 2, 1]));
    let r = send(&app, get_req("/")).await;
    assert_eq!(fields(&r, "x-ratelimit-limit"), ["10"]);
    assert_eq!(fields(&r, "x-ratelimit-remaining"), ["9"]);
    let reset: u64 = fields(&r, "x-ratelimit-reset")[0].parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 360..=now + 362).contains(&reset), "Unix time of the reset: {reset} vs {now}");

    let l = limiter(&clock, "rl:quiet:", vec![Policy::new("api", Quota::per_hour(nz(1)))]);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(l).headers(HeaderStyle::OnlyOnRefusal))
        .layer(peer([192, 0, 2, 1]));
    let r = send(&app, get_req("/")).await;
    assert!(r.headers().get("ratelimit").is_none());
    let r = send(&app, get_req("/")).await;
    assert_eq!(fields(&r, "ratelimit"), [r#""api";r=0;t=3600"#]);
}

#[tokio::test]
async fn spoofed_forwarded_for_from_untrusted_peer_does_not_change_the_key() {
    let clock = FakeClock::new();
    let app_from = |peer_ip: [u8; 4], header: ForwardedHeader| {
        let l = limiter(&clock, "rl:ip:", vec![Policy::new("api", Quota::per_hour(nz(1)))]);
        let key = ClientIp::trusting(["10.0.0.0/8".parse().unwrap()]).header(header);
        Router::new().route("/", get(|| async { "ok" })).layer(RateLimitLayer::new(l).key(key)).layer(peer(peer_ip))
    };
    let with = |name: &str, value: &str| Request::get("/").header(name, value).body(Body::empty()).unwrap();

    // An untrusted client forging X-Forwarded-For is still itself.
    let app = app_from([198, 51, 100, 7], ForwardedHeader::XForwardedFor);
    assert_eq!(send(&app, with("x-forwarded-for", "1.1.1.1")).await.status(), StatusCode::OK);
    assert_eq!(send(&app, with("x-forwarded-for", "2.2.2.2")).await.status(), StatusCode::TOO_MANY_REQUESTS);

    // Behind the trusted proxy, each client has its own key.
    let app = app_from([10, 0, 0, 1], ForwardedHeader::XForwardedFor);
    assert_eq!(send(&app, with("x-forwarded-for", "1.1.1.1")).await.status(), StatusCode::OK);
    assert_eq!(send(&app, with("x-forwarded-for", "2.2.2.2")).await.status(), StatusCode::OK);
    assert_eq!(send(&app, with("x-forwarded-for", "6.6.6.6, 2.2.2.2")).await.status(), StatusCode::TOO_MANY_REQUESTS);

    let app = app_from([10, 0, 0, 1], ForwardedHeader::Forwarded);
    assert_eq!(send(&app, with("forwarded", "for=3.3.3.3")).await.status(), StatusCode::OK);
    assert_eq!(send(&app, with("forwarded", "for=\"[2001:db8::1]:80\"")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, with("forwarded", "for=\"[2001:db8::2]\"")).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "same /64"
    );
}

#[tokio::test]
async fn stacked_per_route_limiters_and_route_keys() {
    let clock = FakeClock::new();
    let global = limiter(&clock, "rl:global:", vec![Policy::new("global", Quota::per_hour(nz(100)))]);
    let search = limiter(&clock, "rl:search:", vec![Policy::new("search", Quota::per_hour(nz(1)))]);
    let app = Router::new()
        .route("/search/{term}", get(|| async { "found" }))
        .route_layer(RateLimitLayer::new(search).key((RouteTemplate, PeerIp::new())))
        .route("/other", get(|| async { "other" }))
        .layer(RateLimitLayer::new(global))
        .layer(peer([192, 0, 2, 1]));
    let r = send(&app, get_req("/search/a")).await;
    assert_eq!(fields(&r, "ratelimit"), [r#""search";r=0;t=3600"#, r#""global";r=99;t=36"#]);
    let r = send(&app, get_req("/search/b")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "one key per route template, not per path");
    assert_eq!(fields(&r, "ratelimit"), [r#""search";r=0;t=3600"#, r#""global";r=98;t=72"#]);
    assert_eq!(send(&app, get_req("/other")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn weighted_requests_and_missing_keys() {
    let clock = FakeClock::new();
    let l = limiter(&clock, "rl:cost:", vec![Policy::new("api", Quota::per_hour(nz(10)))]);
    let app = Router::new().route("/", get(|| async { "ok" }).post(|| async { "posted" })).layer(
        RateLimitLayer::new(l.clone())
            .key(HeaderKey::new(http::HeaderName::from_static("x-api-key")))
            .cost(|r: &Request<Body>| if r.method() == http::Method::POST { 4 } else { 1 }),
    );
    let post = || Request::post("/").header("x-api-key", "key-1").body(Body::empty()).unwrap();
    let r = send(&app, post()).await;
    assert_eq!(fields(&r, "ratelimit"), [r#""api";r=6;t=1440"#]);
    send(&app, post()).await;
    let r = send(&app, post()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fields(&r, "retry-after"), ["720"]);

    // No API key: refused as a misconfiguration, or let through when asked.
    let r = send(&app, get_req("/")).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json(r).await["status"], 500);
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        RateLimitLayer::new(l)
            .key(HeaderKey::new(http::HeaderName::from_static("x-api-key")))
            .on_missing_key(MissingKey::Allow),
    );
    let r = send(&app, get_req("/")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("ratelimit").is_none());
}

#[tokio::test]
async fn in_memory_requests_are_counted_when_the_service_is_called() {
    use tower::{Layer, Service};
    let clock = FakeClock::new();
    let l = limiter(&clock, "rl:call:", vec![Policy::new("p", Quota::per_minute(nz(2)))]);
    let mut service = RateLimitLayer::new(l.clone())
        .key(HeaderKey::new(http::HeaderName::from_static("x-api-key")))
        .layer(tower::service_fn(|_: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        }));
    let request = || Request::get("/").header("x-api-key", "k").body(Body::empty()).unwrap();
    // Called, never polled: the in-memory decision is already made and counted.
    let unpolled = ServiceExt::ready(&mut service).await.unwrap().call(request());
    drop(unpolled);
    assert_eq!(l.check_now("k").unwrap().unwrap().remaining(), 0, "the dropped request used a unit");
    let refused = ServiceExt::ready(&mut service).await.unwrap().call(request()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "30");
}

#[tokio::test]
async fn redis_decisions_and_cached_refusals_through_the_layer() {
    let redis = require!(brisk_testkit::redis().await);
    let store = RedisStore::builder().timeout(Duration::from_secs(2)).connect(redis.client()).await.unwrap();
    let clock = FakeClock::new();
    let l = RateLimiter::builder(brisk_testkit::unique_name("rl:http:"))
        .policy(Policy::new("deploy", Quota::per_hour(nz(1))))
        .store(store)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(l.clone()))
        .layer(peer([192, 0, 2, 1]));
    // Asked of Redis on the first poll: admitted, then refused.
    let admitted = send(&app, get_req("/")).await;
    assert_eq!(admitted.status(), StatusCode::OK);
    assert_eq!(fields(&admitted, "ratelimit"), [r#""deploy";r=0;t=3600"#]);
    let refused = send(&app, get_req("/")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // Then answered from the blocked-key cache when the layer is called, with the same fields.
    let cached = send(&app, get_req("/")).await;
    assert_eq!(cached.status(), StatusCode::TOO_MANY_REQUESTS);
    for name in ["retry-after", "ratelimit", "ratelimit-policy"] {
        assert_eq!(fields(&cached, name), fields(&refused, name), "{name}");
    }
    assert_eq!(l.check_now("192.0.2.1").unwrap().unwrap().source(), brisk_ratelimit::Source::BlockedCache);
}

#[tokio::test]
async fn fail_closed_answers_503_with_a_problem_body() {
    let mut redis = require!(brisk_testkit::redis().await);
    let store = RedisStore::builder().timeout(Duration::from_millis(500)).connect(redis.client()).await.unwrap();
    let l = RateLimiter::builder(brisk_testkit::unique_name("rl:http:"))
        .policy(Policy::new("deploy", Quota::per_hour(nz(10))).on_store_error(OnStoreError::FailClosed))
        .store(store)
        .build()
        .unwrap();
    let app =
        Router::new().route("/", get(|| async { "ok" })).layer(RateLimitLayer::new(l)).layer(peer([192, 0, 2, 1]));
    assert_eq!(send(&app, get_req("/")).await.status(), StatusCode::OK);
    redis.kill().unwrap();
    let r = send(&app, get_req("/")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fields(&r, "content-type"), ["application/problem+json"]);
    assert_eq!(
        json(r).await,
        serde_json::json!({
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "The rate limiter cannot reach its store and this endpoint does not run unlimited.",
        })
    );
}
