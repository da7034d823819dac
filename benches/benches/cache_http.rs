//! brisk-cache's HTTP layer: a cached `GET` (L1 hit, 1 KiB body) through
//! `Cache<S>`, next to calling the bare inner service and next to the peer
//! HTTP caches on their in-memory stores, in one group.
//!
//! ```sh
//! cargo bench -p brisk-benches --bench cache_http -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Every measured call clones the service (as axum does per request), builds
//! the request, waits for the service to be ready, calls it and reads the
//! whole body: the same steps for every cache. Every cache is warmed with
//! the entry first and checked to answer from the cache (`X-Cache: HIT`, or
//! the inner service not being called again).
//!
//! The inner service makes its response when its future is polled, as an
//! async handler does: axum-response-cache calls the inner service on every
//! request and drops the future on a hit, and so pays for the call there,
//! not for a response no handler would have made.
//!
//! The inner service is the same for all: a 1 KiB body and two headers,
//! `Cache-Control: public, max-age=300` included so that the peers that only
//! store responses which say they may be stored do. axum-response-cache
//! works on axum's `Body` only, so its inner service answers with one; the
//! others get an `http_body_util::Full<Bytes>` (tower-http-cache requires a
//! `Sync` body, which axum's is not).

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brisk_cache::TieredCache;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower_service::Service;

const BODY: usize = 1024;
const URI: &str = "/api/blueprints?page=1";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime")
}

fn body() -> Bytes {
    Bytes::from(vec![b'x'; BODY])
}

fn response<B>(body: B) -> Response<B> {
    let mut r = Response::new(body);
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=300"));
    r
}

/// The inner service, counting its calls.
#[derive(Clone)]
struct Origin {
    body: Bytes,
    calls: Arc<AtomicUsize>,
}

impl Origin {
    fn new() -> Self {
        Self { body: body(), calls: Arc::default() }
    }
}

impl<B> Service<Request<B>> for Origin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Counted<Response<Full<Bytes>>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        Counted::new(self, |body| response(Full::new(body)))
    }
}

/// The inner service's work: counts the call and makes the response when it
/// is polled, as an async handler does its work when polled. A cache that
/// calls the inner service but drops its future on a hit
/// (axum-response-cache does) pays for the call, not for a response it
/// never reads, and has not made the inner service work.
struct Counted<R> {
    calls: Arc<AtomicUsize>,
    body: Option<Bytes>,
    make: fn(Bytes) -> R,
}

impl<R> Counted<R> {
    fn new(origin: &Origin, make: fn(Bytes) -> R) -> Self {
        Self { calls: Arc::clone(&origin.calls), body: Some(origin.body.clone()), make }
    }
}

impl<R> std::future::Future for Counted<R> {
    type Output = Result<R, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let body = self.body.take().expect("polled once");
        std::task::Poll::Ready(Ok((self.make)(body)))
    }
}

/// The same, answering with axum's body.
#[derive(Clone)]
struct AxumOrigin(Origin);

impl Service<Request<axum::body::Body>> for AxumOrigin {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Counted<axum::response::Response>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<axum::body::Body>) -> Self::Future {
        Counted::new(&self.0, |body| response(axum::body::Body::from(body)))
    }
}

/// One request through `service`, body read in full.
async fn get<S, B>(service: &mut S) -> (Response<()>, Bytes)
where
    S: Service<Request<axum::body::Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| service.poll_ready(cx)).await.expect("ready");
    let req = Request::get(URI).body(axum::body::Body::empty()).expect("a request");
    let response = service.call(req).await.expect("a response");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("a body").to_bytes();
    (Response::from_parts(parts, ()), bytes)
}

/// Warms `service` and checks that the next call is answered by the cache.
fn warm<S, B>(rt: &Runtime, name: &str, service: &mut S, calls: &AtomicUsize)
where
    S: Service<Request<axum::body::Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        get(service).await;
        // Some caches store after the response is sent.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = calls.load(Ordering::SeqCst);
        let (_, bytes) = get(service).await;
        assert_eq!(bytes.len(), BODY, "{name}: the body");
        assert_eq!(calls.load(Ordering::SeqCst), before, "{name}: the second call must be a cache hit");
    });
}

fn cached_get(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("cache_http_hit_1KiB");

    let mut bare = Origin::new();
    group.bench_function("bare_inner_service", |b| {
        b.to_async(&rt).iter(|| {
            let mut s = bare.clone();
            async move { black_box(get(&mut s).await) }
        })
    });
    let _ = &mut bare;

    let origin = Origin::new();
    let cache = TieredCache::builder().build().expect("an L1-only cache");
    let mut brisk = tower_layer::Layer::layer(
        &brisk_cache::http::CacheLayer::new(&cache).ttl(Duration::from_secs(300)),
        origin.clone(),
    );
    warm(&rt, "brisk", &mut brisk, &origin.calls);
    rt.block_on(async {
        let (r, _) = get(&mut brisk).await;
        assert_eq!(r.headers()["x-cache"], "HIT");
    });
    group.bench_function("brisk_cache", |b| {
        b.to_async(&rt).iter(|| {
            let mut s = brisk.clone();
            async move { black_box(get(&mut s).await) }
        })
    });

    let origin = Origin::new();
    let manager = http_cache::MokaManager::default();
    let mut peer = tower_layer::Layer::layer(&http_cache_tower_server::ServerCacheLayer::new(manager), origin.clone());
    warm(&rt, "http-cache-tower-server", &mut peer, &origin.calls);
    group.bench_function("http_cache_tower_server_moka", |b| {
        b.to_async(&rt).iter(|| {
            let mut s = peer.clone();
            async move { black_box(get(&mut s).await) }
        })
    });

    let origin = AxumOrigin(Origin::new());
    let mut peer = tower_layer::Layer::layer(
        &axum_response_cache::CacheLayer::with_lifespan(Duration::from_secs(300)),
        origin.clone(),
    );
    warm(&rt, "axum-response-cache", &mut peer, &origin.0.calls);
    group.bench_function("axum_response_cache_ttlcache", |b| {
        b.to_async(&rt).iter(|| {
            let mut s = peer.clone();
            async move { black_box(get(&mut s).await) }
        })
    });

    let origin = Origin::new();
    let layer = tower_http_cache::layer::CacheLayer::builder(tower_http_cache::prelude::InMemoryBackend::new(10_000))
        .ttl(Duration::from_secs(300))
        .build();
    let mut peer = tower_layer::Layer::layer(&layer, origin.clone());
    warm(&rt, "tower-http-cache", &mut peer, &origin.calls);
    group.bench_function("tower_http_cache_in_memory", |b| {
        b.to_async(&rt).iter(|| {
            let mut s = peer.clone();
            async move { black_box(get(&mut s).await) }
        })
    });

    group.finish();
}

/// The cache's own read of the entry, alone and through `get_or_load_bytes`:
/// what a request costs the layer when its front of recent hits cannot
/// answer it (the first hit of a key, or one after L1 changed for it).
fn components(c: &mut Criterion) {
    let rt = runtime();
    let cache = TieredCache::builder().build().expect("an L1-only cache");
    let options = brisk_cache::EntryOptions::new(Duration::from_secs(300));
    rt.block_on(cache.set_bytes("k", body(), &options));
    let mut group = c.benchmark_group("cache_http_components");
    group.bench_function("get_bytes", |b| b.to_async(&rt).iter(|| async { black_box(cache.get_bytes("k").await) }));
    group.bench_function("get_or_load_bytes_hit", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                cache
                    .get_or_load_bytes("k", &options, || async {
                        Ok::<_, Infallible>(brisk_cache::Loaded::cache(body()))
                    })
                    .await,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, components, cached_get);
criterion_main!(benches);
