//! The HTTP layer in an axum application, L1 only: every header value, each
//! bypass rule, `Vary`, `304`, large bodies, `HEAD`, invalidation on writes,
//! stampedes, and the admin handlers' counts.

#![cfg(feature = "axum")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::routing::get;
use brisk_cache::http::{CacheAdmin, CacheLayer, InvalidateLayer, Targets};
use brisk_cache::{ManualClock, TieredCache};
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Counts the inner service's calls, and what the last one saw.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    last_headers: Arc<parking_lot::Mutex<HeaderMap>>,
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn seen(&self, headers: &HeaderMap) -> usize {
        *self.last_headers.lock() = headers.clone();
        self.calls.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// A cache whose clock stands still, so TTLs in `Cache-Status` are exact.
fn frozen_cache() -> TieredCache {
    TieredCache::builder().jitter(0.0).clock(ManualClock::new(1_000_000_000)).build().unwrap()
}

/// The application: reads under `/api`, writes that may fail.
fn make_app(cache: &TieredCache, layer: CacheLayer, origin: &Origin) -> Router {
    let routes = Router::new()
        .route(
            "/api/items",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                let n = o.seen(&headers);
                ([("content-type", "application/json")], format!("{{\"items\":{n}}}"))
            })
            .post(|State(o): State<Origin>, body: String| async move {
                o.seen(&HeaderMap::new());
                if body == "fail" { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::CREATED }
            }),
        )
        .route(
            "/api/items/{id}",
            get(|State(o): State<Origin>, headers: HeaderMap| async move { format!("item {}", o.seen(&headers)) }),
        )
        .route(
            "/api/private",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                ([("cache-control", "private, max-age=60")], "mine")
            }),
        )
        .route(
            "/api/nostore",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                ([("cache-control", "no-store")], "fresh")
            }),
        )
        .route(
            "/api/login",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                ([("set-cookie", "session=abc")], "welcome")
            }),
        )
        .route(
            "/api/lang",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                let lang = headers.get("accept-language").and_then(|v| v.to_str().ok()).unwrap_or("none").to_owned();
                ([("vary", "Accept-Language")], format!("lang={lang}"))
            }),
        )
        .route(
            "/api/star",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                ([("vary", "*")], "star")
            }),
        )
        .route(
            "/api/short",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                ([("cache-control", "public, max-age=1, s-maxage=2")], "short")
            }),
        )
        .route(
            "/api/zero",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                ([("cache-control", "max-age=0")], "zero")
            }),
        )
        .route(
            "/api/boom",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                (StatusCode::INTERNAL_SERVER_ERROR, "boom")
            }),
        )
        .route(
            "/api/tagged-etag",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                ([("etag", "W/\"v7\"")], "seven")
            }),
        )
        .route(
            "/api/big",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                big_body()
            }),
        )
        .route(
            "/api/slow",
            get(|State(o): State<Origin>, headers: HeaderMap| async move {
                o.seen(&headers);
                tokio::time::sleep(Duration::from_millis(100)).await;
                "slow"
            }),
        )
        .with_state(origin.clone())
        .layer(layer)
        .layer(InvalidateLayer::new(cache).route("/api/items*", Targets::new().tag("items")));
    Router::new().merge(routes)
}

/// 64 KiB in 1 KiB chunks, without a length.
fn big_body() -> Body {
    Body::new(Chunks((0..64u8).map(|i| Bytes::from(vec![i; 1024])).collect()))
}

fn big_bytes() -> Vec<u8> {
    (0..64u8).flat_map(|i| vec![i; 1024]).collect()
}

/// A body of chunks, one frame each, with no size hint.
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

async fn send(app: &Router, req: Request<Body>) -> (Response<()>, Bytes) {
    let response = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, ()), bytes)
}

async fn get_(app: &Router, uri: &str) -> (Response<()>, Bytes) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

fn header<'a>(r: &'a Response<()>, name: &str) -> &'a str {
    r.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

fn layer(cache: &TieredCache) -> CacheLayer {
    CacheLayer::new(cache)
        .ttl(Duration::from_secs(60))
        .route_ttl("/api/items/{id}", Duration::from_secs(120))
        .tags_fn(|req| if req.route().starts_with("/api/items") { vec!["items".to_owned()] } else { Vec::new() })
        .condition(|req| !req.query_has("cache", "false"))
        .max_body_bytes(4096)
}

fn setup() -> (TieredCache, CacheLayer, Origin, Router) {
    let cache = frozen_cache();
    let layer = layer(&cache);
    let origin = Origin::default();
    let app = make_app(&cache, layer.clone(), &origin);
    (cache, layer, origin, app)
}

#[tokio::test]
async fn miss_then_hit_with_every_header() {
    let (_cache, _layer, origin, app) = setup();
    let (first, body1) = get_(&app, "/api/items?b=2&a=1").await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-cache"), "MISS");
    assert_eq!(header(&first, "x-cache-key"), "cache:GET/api/items?a=1&b=2");
    assert_eq!(header(&first, "age"), "0");
    assert_eq!(header(&first, "cache-status"), "brisk; fwd=uri-miss; stored");
    assert_eq!(header(&first, "content-type"), "application/json");
    let etag = header(&first, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 18, "{etag}");
    assert_eq!(header(&first, "content-length"), body1.len().to_string());

    // Query order does not split the entry.
    let (second, body2) = get_(&app, "/api/items?a=1&b=2").await;
    assert_eq!(header(&second, "x-cache"), "HIT");
    assert_eq!(header(&second, "x-cache-key"), "cache:GET/api/items?a=1&b=2");
    assert_eq!(header(&second, "age"), "0");
    assert_eq!(header(&second, "cache-status"), "brisk; hit; ttl=60");
    assert_eq!(header(&second, "etag"), etag);
    assert_eq!(body1, body2);
    assert_eq!(origin.calls(), 1);

    // Repeated pairs are not merged: another entry.
    let (third, _) = get_(&app, "/api/items?a=1&a=1&b=2").await;
    assert_eq!(header(&third, "x-cache"), "MISS");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test]
async fn route_ttl_applies_to_the_route_template() {
    let (_cache, _layer, _origin, app) = setup();
    get_(&app, "/api/items/7").await;
    let (hit, body) = get_(&app, "/api/items/7").await;
    assert_eq!(header(&hit, "cache-status"), "brisk; hit; ttl=120");
    assert_eq!(body, "item 1");
}

#[tokio::test]
async fn unkeyed_forwarded_headers_share_the_entry() {
    let (_cache, _layer, origin, app) = setup();
    let req = |host: &str| {
        Request::get("/api/items").header("x-forwarded-host", host).header("host", host).body(Body::empty()).unwrap()
    };
    let (a, _) = send(&app, req("a.example")).await;
    let (b, _) = send(&app, req("evil.example")).await;
    assert_eq!(header(&a, "x-cache-key"), header(&b, "x-cache-key"));
    assert_eq!(header(&b, "x-cache"), "HIT");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn writes_and_conditions_bypass() {
    let (_cache, layer, origin, app) = setup();
    let (post, _) = send(&app, Request::post("/api/items").body(Body::from("x")).unwrap()).await;
    assert_eq!(post.status(), 201);
    assert_eq!(header(&post, "x-cache"), "BYPASS");
    assert_eq!(header(&post, "cache-status"), "brisk; fwd=method; detail=method");
    assert_eq!(header(&post, "age"), "0");
    assert!(post.headers().get("x-cache-key").is_none());

    for _ in 0..2 {
        let (r, _) = get_(&app, "/api/items?cache=false").await;
        assert_eq!(header(&r, "x-cache"), "BYPASS");
        assert_eq!(header(&r, "cache-status"), "brisk; fwd=bypass; detail=condition");
    }
    let (r, _) = send(&app, Request::get("/api/items").header("range", "bytes=0-1").body(Body::empty()).unwrap()).await;
    assert_eq!(header(&r, "cache-status"), "brisk; fwd=bypass; detail=range");
    let (r, _) =
        send(&app, Request::get("/api/items").header("cache-control", "no-store").body(Body::empty()).unwrap()).await;
    assert_eq!(header(&r, "cache-status"), "brisk; fwd=bypass; detail=no-store");
    assert_eq!(origin.calls(), 5);
    assert_eq!(layer.stats().bypasses, 5);
}

#[tokio::test]
async fn credentials_bypass_unless_the_key_holds_the_principal() {
    let (_cache, _layer, origin, app) = setup();
    for (name, value, detail) in [("authorization", "Bearer t", "authorization"), ("cookie", "session=s", "cookie")] {
        for _ in 0..2 {
            let (r, _) = send(&app, Request::get("/api/items").header(name, value).body(Body::empty()).unwrap()).await;
            assert_eq!(header(&r, "x-cache"), "BYPASS", "{name}");
            assert_eq!(header(&r, "cache-status"), format!("brisk; fwd=bypass; detail={detail}"));
        }
    }
    assert_eq!(origin.calls(), 4);

    // With a principal function, each principal has its own entry.
    let cache = frozen_cache();
    let layer = layer(&cache).principal(|req| {
        req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer user-").map(str::to_owned)
    });
    let origin = Origin::default();
    let app = make_app(&cache, layer, &origin);
    let as_user = |u: &str| {
        Request::get("/api/items").header("authorization", format!("Bearer user-{u}")).body(Body::empty()).unwrap()
    };
    let (a1, body_a) = send(&app, as_user("a")).await;
    let (b1, body_b) = send(&app, as_user("b")).await;
    let (a2, body_a2) = send(&app, as_user("a")).await;
    assert_eq!((header(&a1, "x-cache"), header(&b1, "x-cache"), header(&a2, "x-cache")), ("MISS", "MISS", "HIT"));
    assert_ne!(body_a, body_b);
    assert_eq!(body_a, body_a2);
    // Keys holding a principal are not shown.
    assert!(a2.headers().get("x-cache-key").is_none());
    // No principal: bypass.
    let (anon, _) =
        send(&app, Request::get("/api/items").header("authorization", "Basic x").body(Body::empty()).unwrap()).await;
    assert_eq!(header(&anon, "x-cache"), "BYPASS");
    assert_eq!(origin.calls(), 3);
}

#[tokio::test]
async fn unstorable_responses_are_never_stored() {
    let (cache, _layer, origin, app) = setup();
    for (uri, detail) in [
        ("/api/private", "private"),
        ("/api/nostore", "no-store"),
        ("/api/login", "set-cookie"),
        ("/api/star", "vary-star"),
    ] {
        let before = origin.calls();
        for _ in 0..2 {
            let (r, _) = get_(&app, uri).await;
            assert_eq!(header(&r, "x-cache"), "MISS", "{uri}");
            assert_eq!(header(&r, "cache-status"), format!("brisk; fwd=uri-miss; detail={detail}"), "{uri}");
        }
        assert_eq!(origin.calls(), before + 2, "{uri}");
    }
    let (login, _) = get_(&app, "/api/login").await;
    assert_eq!(header(&login, "set-cookie"), "session=abc");
    cache.run_pending_tasks().await;
    assert_eq!(cache.stats().entries, 0);
}

#[tokio::test]
async fn inner_server_errors_pass_through_unchanged_and_are_not_stored() {
    let (_cache, _layer, origin, app) = setup();
    for _ in 0..2 {
        let (r, body) = get_(&app, "/api/boom").await;
        assert_eq!(r.status(), 500);
        assert_eq!(body, "boom");
        assert_eq!(header(&r, "x-cache"), "MISS");
        assert_eq!(header(&r, "cache-status"), "brisk; fwd=uri-miss; detail=status");
    }
    assert_eq!(origin.calls(), 2);
}

#[tokio::test]
async fn inner_service_errors_reach_the_caller_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Refused(u32);
    let cache = frozen_cache();
    let service = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(&cache))
        .service_fn(|_req: Request<Body>| async { Err::<Response<Body>, _>(Refused(7)) });
    let err = service.clone().oneshot(Request::get("/x").body(Body::empty()).unwrap()).await.unwrap_err();
    assert_eq!(err, Refused(7));
    let err = service.oneshot(Request::post("/x").body(Body::empty()).unwrap()).await.unwrap_err();
    assert_eq!(err, Refused(7));
}

#[tokio::test]
async fn request_no_cache_revalidates_and_refreshes_the_entry() {
    let (_cache, _layer, origin, app) = setup();
    let (_, v1) = get_(&app, "/api/items").await;
    for (name, value) in [("cache-control", "no-cache"), ("pragma", "no-cache"), ("cache-control", "max-age=0")] {
        let (r, v) = send(&app, Request::get("/api/items").header(name, value).body(Body::empty()).unwrap()).await;
        assert_eq!(header(&r, "x-cache"), "MISS");
        assert_eq!(header(&r, "cache-status"), "brisk; fwd=request; stored");
        assert_ne!(v, v1);
        let (hit, cached) = get_(&app, "/api/items").await;
        assert_eq!(header(&hit, "x-cache"), "HIT");
        assert_eq!(cached, v);
    }
    assert_eq!(origin.calls(), 4);
}

#[tokio::test]
async fn response_ttls_are_honoured_when_enabled() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let cache = TieredCache::builder().jitter(0.0).clock(Arc::clone(&clock)).build().unwrap();
    let origin = Origin::default();
    let app = make_app(&cache, layer(&cache).ttl_from_response(true), &origin);
    get_(&app, "/api/short").await;
    let (hit, _) = get_(&app, "/api/short").await;
    assert_eq!(header(&hit, "cache-status"), "brisk; hit; ttl=2", "s-maxage wins over max-age");
    clock.advance(Duration::from_millis(2500));
    let (r, _) = get_(&app, "/api/short").await;
    assert_eq!(header(&r, "x-cache"), "MISS");
    for _ in 0..2 {
        let (r, _) = get_(&app, "/api/zero").await;
        assert_eq!(header(&r, "cache-status"), "brisk; fwd=uri-miss; detail=ttl-zero");
    }

    // Off (the default): the route's TTL.
    let cache = frozen_cache();
    let app = make_app(&cache, layer(&cache), &origin);
    get_(&app, "/api/short").await;
    let (hit, _) = get_(&app, "/api/short").await;
    assert_eq!(header(&hit, "cache-status"), "brisk; hit; ttl=60");
}

#[tokio::test]
async fn vary_keeps_one_entry_per_header_value() {
    let (_cache, _layer, origin, app) = setup();
    let lang = |l: &str| Request::get("/api/lang").header("accept-language", l).body(Body::empty()).unwrap();
    let (en, en_body) = send(&app, lang("en")).await;
    assert_eq!(header(&en, "x-cache"), "MISS");
    assert_eq!(en_body, "lang=en");
    let (fr, fr_body) = send(&app, lang("fr")).await;
    assert_eq!(header(&fr, "x-cache"), "MISS");
    assert_eq!(header(&fr, "cache-status"), "brisk; fwd=vary-miss; stored");
    assert_eq!(header(&fr, "x-cache-key"), "cache:GET/api/lang#vary:accept-language=fr");
    assert_eq!(fr_body, "lang=fr");
    let (en2, en2_body) = send(&app, lang("en")).await;
    let (fr2, fr2_body) = send(&app, lang("fr")).await;
    assert_eq!((header(&en2, "x-cache"), header(&fr2, "x-cache")), ("HIT", "HIT"));
    assert_eq!((en2_body, fr2_body), (en_body, fr_body));
    let (none, none_body) = get_(&app, "/api/lang").await;
    assert_eq!(header(&none, "x-cache"), "MISS");
    assert_eq!(none_body, "lang=none");
    assert_eq!(origin.calls(), 3);
}

#[tokio::test]
async fn if_none_match_is_answered_304_from_the_cache() {
    let (_cache, layer, origin, app) = setup();
    let (first, _) = get_(&app, "/api/items").await;
    let etag = header(&first, "etag").to_owned();
    let conditional = |tag: &str| Request::get("/api/items").header("if-none-match", tag).body(Body::empty()).unwrap();
    let (r, body) = send(&app, conditional(&etag)).await;
    assert_eq!(r.status(), 304);
    assert!(body.is_empty());
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(header(&r, "etag"), etag);
    let (r, body) = send(&app, conditional(&format!("\"other\", W/{etag}"))).await;
    assert_eq!(r.status(), 304);
    assert!(body.is_empty());
    let (r, body) = send(&app, conditional("\"other\"")).await;
    assert_eq!(r.status(), 200);
    assert!(!body.is_empty());
    assert_eq!(origin.calls(), 1);
    assert_eq!(layer.stats().not_modified, 2);

    // On a miss the inner service never sees the condition; the layer answers it.
    let (r, _) =
        send(&app, Request::get("/api/tagged-etag").header("if-none-match", "W/\"v7\"").body(Body::empty()).unwrap())
            .await;
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(header(&r, "etag"), "W/\"v7\"", "the origin's ETag is kept");
    assert!(origin.last_headers.lock().get("if-none-match").is_none());
}

#[tokio::test]
async fn large_bodies_stream_through_uncached_with_the_same_bytes() {
    let (cache, _layer, origin, app) = setup();
    for _ in 0..2 {
        let (r, body) = get_(&app, "/api/big").await;
        assert_eq!(header(&r, "x-cache"), "MISS");
        assert_eq!(header(&r, "cache-status"), "brisk; fwd=uri-miss; detail=too-large");
        assert_eq!(body.len(), 64 * 1024);
        assert!(body == big_bytes());
    }
    assert_eq!(origin.calls(), 2);
    cache.run_pending_tasks().await;
    assert_eq!(cache.stats().entries, 0);
}

#[tokio::test]
async fn head_is_answered_from_the_get_entry() {
    let (_cache, layer, origin, app) = setup();
    let head = || Request::head("/api/items/1").body(Body::empty()).unwrap();
    let (r, body) = send(&app, head()).await;
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(header(&r, "cache-status"), "brisk; fwd=uri-miss; detail=head");
    assert!(body.is_empty());
    let (get1, get_body) = get_(&app, "/api/items/1").await;
    assert_eq!(header(&get1, "x-cache"), "MISS", "a HEAD stores nothing");
    let (r, body) = send(&app, head()).await;
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert!(body.is_empty());
    assert_eq!(header(&r, "content-length"), get_body.len().to_string());
    assert_eq!(header(&r, "x-cache-key"), "cache:GET/api/items/1");
    assert_eq!(origin.calls(), 2);
    let s = layer.stats();
    assert_eq!((s.hits, s.misses), (1, 2));
}

#[tokio::test]
async fn a_failed_write_invalidates_nothing_and_a_successful_one_does() {
    let (_cache, _layer, origin, app) = setup();
    get_(&app, "/api/items").await;
    get_(&app, "/api/items/3").await;
    let (failed, _) = send(&app, Request::post("/api/items").body(Body::from("fail")).unwrap()).await;
    assert_eq!(failed.status(), 422);
    for uri in ["/api/items", "/api/items/3"] {
        let (r, _) = get_(&app, uri).await;
        assert_eq!(header(&r, "x-cache"), "HIT", "{uri} after a failed write");
    }
    let (ok, _) = send(&app, Request::post("/api/items").body(Body::from("new")).unwrap()).await;
    assert_eq!(ok.status(), 201);
    for uri in ["/api/items", "/api/items/3"] {
        let (r, _) = get_(&app, uri).await;
        assert_eq!(header(&r, "x-cache"), "MISS", "{uri} after a successful write");
    }
    assert_eq!(origin.calls(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_call_the_inner_service_once() {
    let (_cache, layer, origin, app) = setup();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get_(&app, "/api/slow").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let (r, body) = t.await.unwrap();
        assert_eq!(body, "slow");
        statuses.push(header(&r, "cache-status").to_owned());
    }
    assert_eq!(origin.calls(), 1);
    assert_eq!(statuses.iter().filter(|s| s.ends_with("stored")).count(), 1, "{statuses:?}");
    assert_eq!(layer.stats().hits + layer.stats().misses, 16);
}

#[tokio::test]
async fn keys_that_are_not_header_values_are_not_shown() {
    let cache = frozen_cache();
    let service = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(&cache).key_fn(|req| Some(format!("cache:ключ{}", req.path()))))
        .service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::from("x"))) });
    let r = service.clone().oneshot(Request::get("/a").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert!(r.headers().get("x-cache-key").is_none());
    let r = service.oneshot(Request::get("/a").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
}

#[tokio::test]
async fn stale_entries_are_served_when_the_inner_service_fails() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let cache = TieredCache::builder()
        .jitter(0.0)
        .clock(Arc::clone(&clock))
        .stale_grace(Duration::from_secs(30))
        .build()
        .unwrap();
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    let service = tower::ServiceBuilder::new().layer(CacheLayer::new(&cache).ttl(Duration::from_secs(10))).service_fn(
        move |_req: Request<Body>| {
            let ok = flag.load(Ordering::SeqCst);
            async move {
                let mut r = Response::new(Body::from(if ok { "good" } else { "down" }));
                if !ok {
                    *r.status_mut() = StatusCode::BAD_GATEWAY;
                }
                Ok::<_, Infallible>(r)
            }
        },
    );
    let r = service.clone().oneshot(Request::get("/s").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    healthy.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(15));
    let r = service.clone().oneshot(Request::get("/s").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "STALE");
    assert_eq!(r.headers()["cache-status"], "brisk; hit; ttl=-5; detail=stale");
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "good");
    // Past the grace: the error.
    clock.advance(Duration::from_secs(60));
    let r = service.oneshot(Request::get("/s").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-cache"], "MISS");
}

#[tokio::test]
async fn admin_stats_count_exactly_the_requests_made() {
    let (cache, layer, _origin, app) = setup();
    let admin = CacheAdmin::new(&layer);
    let app = app.merge(admin.router());
    get_(&app, "/api/items").await; // miss
    get_(&app, "/api/items").await; // hit
    get_(&app, "/api/items").await; // hit
    get_(&app, "/api/items/1").await; // miss
    get_(&app, "/api/items?cache=false").await; // bypass
    send(&app, Request::post("/api/items").body(Body::from("fail")).unwrap()).await; // bypass
    let (r, body) = get_(&app, "/cache/stats").await;
    assert_eq!(r.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["hits"], 2);
    assert_eq!(json["misses"], 2);
    assert_eq!(json["hitRate"], 0.5);
    assert_eq!(json["keys"], 2);
    assert_eq!(json["layer"]["bypasses"], 2);
    assert_eq!(json["tiers"]["l1"]["hits"], 2);
    assert_eq!(json["tiers"]["l1"]["misses"], 2);

    // Invalidation: patterns must stay under the key prefix.
    for bad in ["*", "cach*", "other:*", "", "cache"] {
        let uri = format!("/cache/invalidate?pattern={bad}");
        let (r, _) = send(&app, Request::delete(uri.as_str()).body(Body::empty()).unwrap()).await;
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    let (r, _) = send(&app, Request::delete("/cache/invalidate").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), 400);
    let (r, _) =
        send(&app, Request::delete("/cache/invalidate?pattern=cache:GET/api/items/*").body(Body::empty()).unwrap())
            .await;
    assert_eq!(r.status(), 200);
    let (r, _) = get_(&app, "/api/items/1").await;
    assert_eq!(header(&r, "x-cache"), "MISS");
    let (r, _) = get_(&app, "/api/items").await;
    assert_eq!(header(&r, "x-cache"), "HIT");
    let (r, _) = send(&app, Request::delete("/cache/invalidate?tag=items").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), 200);
    let (r, _) = get_(&app, "/api/items").await;
    assert_eq!(header(&r, "x-cache"), "MISS");
    let (r, _) = send(&app, Request::delete("/cache/clear").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), 200);
    let (r, _) = get_(&app, "/api/items").await;
    assert_eq!(header(&r, "x-cache"), "MISS");
    cache.run_pending_tasks().await;
}

/// A service counting its calls, answering `n` (the call's number), behind
/// `layer` on `cache`; the layer, to read its stats.
#[allow(clippy::type_complexity)]
fn counting(
    cache: &TieredCache,
    layer: impl FnOnce(CacheLayer) -> CacheLayer,
) -> (
    impl tower::Service<
        Request<Body>,
        Response = Response<brisk_cache::http::CacheBody<Body>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static,
    CacheLayer,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let layer = layer(CacheLayer::new(cache).ttl(Duration::from_secs(60)).tags_fn(|_| vec!["things".to_owned()]));
    let service = tower::ServiceBuilder::new().layer(layer.clone()).service_fn(move |_req: Request<Body>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, Infallible>(Response::new(Body::from(n.to_string()))) }
    });
    (service, layer, calls)
}

async fn call<S>(service: &S, uri: &str) -> (Response<()>, Bytes)
where
    S: tower::Service<Request<Body>, Response = Response<brisk_cache::http::CacheBody<Body>>, Error = Infallible>
        + Clone,
{
    let r = service.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = r.into_parts();
    (Response::from_parts(parts, ()), body.collect().await.unwrap().to_bytes())
}

/// Hits after the first are answered without reading L1 again; each kind of
/// invalidation still makes the next request a miss, and `Age` and
/// `Cache-Status` follow the clock.
#[tokio::test]
async fn repeated_hits_honour_every_invalidation() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let cache = TieredCache::builder().jitter(0.0).clock(Arc::clone(&clock)).build().unwrap();
    let (service, layer, calls) = counting(&cache, |l| l);
    let key = "cache:GET/t?a=1";

    // A miss that fills, then hits (the third and later answered from what
    // the second read).
    let warm = |expected: &'static str| {
        let service = service.clone();
        async move {
            let (r, body) = call(&service, "/t?a=1").await;
            assert_eq!(header(&r, "x-cache"), "MISS");
            assert_eq!(body, expected);
            for _ in 0..3 {
                let (r, body) = call(&service, "/t?a=1").await;
                assert_eq!(header(&r, "x-cache"), "HIT");
                assert_eq!(header(&r, "x-cache-key"), key);
                assert_eq!(body, expected);
            }
        }
    };

    warm("1").await;
    clock.advance(Duration::from_millis(5_500));
    let (r, _) = call(&service, "/t?a=1").await;
    assert_eq!((header(&r, "age"), header(&r, "cache-status")), ("5", "brisk; hit; ttl=54"));
    assert_eq!(header(&r, "content-length"), "1");
    assert_eq!(header(&r, "etag").len(), 18);

    cache.delete(key).await.unwrap();
    warm("2").await;
    cache.invalidate_tag("things").await.unwrap();
    warm("3").await;
    cache.invalidate_pattern("cache:GET/t*").await.unwrap();
    warm("4").await;
    cache.clear().await.unwrap();
    warm("5").await;
    // A value other code wrote under the key replaces the response; it is
    // not one this layer wrote, so the inner service answers (uncached) and
    // the entry is dropped.
    cache.set(key, &"not a response", Duration::from_secs(60)).await.unwrap();
    let (r, body) = call(&service, "/t?a=1").await;
    assert_eq!((header(&r, "x-cache"), &body[..]), ("MISS", &b"6"[..]));
    assert_eq!(header(&r, "cache-status"), "brisk; fwd=uri-miss; detail=unusable-entry");
    warm("7").await;
    assert_eq!(calls.load(Ordering::SeqCst), 7);
    // Past the TTL.
    clock.advance(Duration::from_secs(61));
    let (r, body) = call(&service, "/t?a=1").await;
    assert_eq!((header(&r, "x-cache"), &body[..]), ("MISS", &b"8"[..]));
    // Every hit counted once, in both the layer's and the cache's counts
    // (the cache also counts the read of the value other code wrote).
    let hits = 6 * 3 + 1;
    assert_eq!(layer.stats().hits, hits);
    assert_eq!(cache.stats().l1_hits, hits + 1);
}

/// An early refresh due is not skipped by hits answered without reading L1.
#[tokio::test]
async fn repeated_hits_still_refresh_early() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let cache = TieredCache::builder().jitter(0.0).early_refresh(0.25).clock(Arc::clone(&clock)).build().unwrap();
    // The inner service counts its calls in a channel the test can wait on.
    let (called, mut calls) = tokio::sync::watch::channel(0usize);
    let called = Arc::new(called);
    let service = tower::ServiceBuilder::new().layer(CacheLayer::new(&cache).ttl(Duration::from_secs(60))).service_fn(
        move |_req: Request<Body>| {
            let mut n = 0;
            called.send_modify(|c| {
                *c += 1;
                n = *c;
            });
            async move { Ok::<_, Infallible>(Response::new(Body::from(n.to_string()))) }
        },
    );
    for _ in 0..4 {
        call(&service, "/r").await;
    }
    assert_eq!(*calls.borrow(), 1);
    assert_eq!(cache.stats().early_refreshes, 0);
    clock.advance(Duration::from_secs(50));
    let (r, body) = call(&service, "/r").await;
    assert_eq!((header(&r, "x-cache"), &body[..]), ("HIT", &b"1"[..]));
    assert_eq!(cache.stats().early_refreshes, 1);
    // The refresh runs in the background with the request's service and
    // request: the inner service is called once more and its response
    // stored, so the next read is a hit on the new one. Without Redis
    // nothing after the call waits, so the refresh's task has stored the
    // response by the time this test runs again.
    tokio::time::timeout(Duration::from_secs(5), calls.wait_for(|&n| n >= 2))
        .await
        .expect("the early refresh did not call the inner service")
        .unwrap();
    assert_eq!(cache.stats().loads, 2, "the early refresh did not reload the entry");
    let (r, body) = call(&service, "/r").await;
    assert_eq!((header(&r, "x-cache"), &body[..]), ("HIT", &b"2"[..]));
    assert_eq!(*calls.borrow(), 2);
}

/// Layers configured differently from one layer do not share the hits they
/// answer without reading L1: each answers with its own headers.
#[tokio::test]
async fn reconfigured_layers_answer_with_their_own_headers() {
    let cache = frozen_cache();
    let (service, base, _calls) = counting(&cache, |l| l);
    let renamed = base.clone().cache_name("edge").expose_key(false);
    let other = tower::ServiceBuilder::new()
        .layer(renamed)
        .service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::from("unused"))) });
    for _ in 0..3 {
        call(&service, "/n").await;
    }
    for _ in 0..3 {
        let (r, body) = call(&other, "/n").await;
        assert_eq!((header(&r, "x-cache"), &body[..]), ("HIT", &b"1"[..]));
        assert_eq!(header(&r, "cache-status"), "brisk; hit; ttl=60".replace("brisk", "edge"));
        assert!(r.headers().get("x-cache-key").is_none());
    }
    let (r, _) = call(&service, "/n").await;
    assert_eq!(header(&r, "cache-status"), "brisk; hit; ttl=60");
    assert_eq!(header(&r, "x-cache-key"), "cache:GET/n");
}

/// Hits answered without building the key: every spelling of one default key
/// (query order, an empty query) reaches its entry, other paths and queries
/// never do, and an entry cached for a principal never answers a request
/// without credentials, however often either is read.
#[tokio::test]
async fn repeated_hits_find_their_own_key_only() {
    let cache = frozen_cache();
    let (service, layer, calls) = counting(&cache, |l| {
        l.principal(|r| r.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned))
    });
    let read = |uri: &'static str| {
        let service = service.clone();
        async move {
            let (r, body) = call(&service, uri).await;
            (
                header(&r, "x-cache").to_owned(),
                r.headers().get("x-cache-key").map(|v| v.to_str().unwrap().to_owned()),
                body,
            )
        }
    };
    for uri in ["/k?b=2&a=1", "/k?a=1&b=2", "/k?&a=1&b=2&"] {
        for _ in 0..3 {
            let (x, key, body) = read(uri).await;
            assert_eq!(key.as_deref(), Some("cache:GET/k?a=1&b=2"), "{uri}");
            assert_eq!(body, "1", "{uri}: {x}");
        }
    }
    for uri in ["/k", "/k?a=1", "/k?a=1&b=2&b=2", "/kk?a=1&b=2"] {
        let before = calls.load(Ordering::SeqCst);
        let (x, _, body) = read(uri).await;
        assert_eq!((x.as_str(), body), ("MISS", Bytes::from((before + 1).to_string())), "{uri}");
    }
    // `/k` and `/k?` share one entry, answered from then on.
    for uri in ["/k", "/k?", "/k", "/k?"] {
        let (x, key, _) = read(uri).await;
        assert_eq!((x.as_str(), key.as_deref()), ("HIT", Some("cache:GET/k")), "{uri}");
    }

    let with_auth = || Request::get("/p").header("authorization", "alice").body(Body::empty()).unwrap();
    for expected in ["MISS", "HIT", "HIT", "HIT"] {
        let r = service.clone().oneshot(with_auth()).await.unwrap();
        assert_eq!(r.headers()["x-cache"], expected);
        assert!(r.headers().get("x-cache-key").is_none());
    }
    let before = calls.load(Ordering::SeqCst);
    for expected in ["MISS", "HIT", "HIT"] {
        let (x, key, body) = read("/p").await;
        assert_eq!((x.as_str(), key.as_deref()), (expected, Some("cache:GET/p")));
        assert_eq!(body, (before + 1).to_string());
    }
    let s = layer.stats();
    assert_eq!((s.hits, s.misses), (8 + 4 + 3 + 2, 1 + 4 + 1 + 1));
}
