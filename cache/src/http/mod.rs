//! A shared HTTP response cache as a tower layer, on a [`TieredCache`](crate::TieredCache)
//! (feature `http`; the admin handlers need `axum`).
//!
//! ```
//! use std::time::Duration;
//! use brisk_cache::TieredCache;
//! use brisk_cache::http::CacheLayer;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = TieredCache::builder().build().unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(
//!         CacheLayer::new(&cache)
//!             .ttl(Duration::from_secs(30))
//!             .route_ttl("/api/blueprints", Duration::from_secs(300))
//!             .tags_fn(|req| vec![req.route().trim_start_matches("/api/").to_owned()])
//!             .condition(|req| !req.query_has("cache", "false")),
//!     )
//!     .service_fn(|_req: Request<Full<bytes::Bytes>>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(bytes::Bytes::from_static(b"[\"api\"]"))))
//!     });
//!
//! let first = service.clone().oneshot(Request::get("/api/blueprints").body(Full::default()).unwrap()).await.unwrap();
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! let second = service.oneshot(Request::get("/api/blueprints").body(Full::default()).unwrap()).await.unwrap();
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(second.headers()["x-cache-key"], "cache:GET/api/blueprints");
//! assert_eq!(second.into_body().collect().await.unwrap().to_bytes(), "[\"api\"]");
//! # }
//! ```
//!
//! ## What is cached
//!
//! `GET` responses with a cacheable status ([`DEFAULT_CACHEABLE_STATUSES`],
//! configurable) and a body of at most [`CacheLayer::max_body_bytes`]; larger
//! bodies stream through to the client, byte for byte, and are not stored.
//! `HEAD` is answered from the `GET` entry (a `HEAD` miss goes to the inner
//! service and stores nothing).
//!
//! The key is `{prefix}:{METHOD}{path}?{query}` with the query's pairs sorted
//! (`?b=2&a=1` and `?a=1&b=2` share an entry; repeated pairs are kept, so
//! distinct queries never merge), or [`CacheLayer::key_fn`]'s. A response
//! with `Vary` is stored with the request's values of those headers; a
//! request with other values is looked up under the key plus those values
//! (`#vary:accept=…`). The key holds nothing else: not `Host`, not
//! `X-Forwarded-Host` or any other `X-Forwarded-*` header, not cookies. A
//! service whose responses depend on such a header must name it in `Vary`
//! or put it in the key with `key_fn`; otherwise one client's response would
//! be served to others.
//!
//! ## Safe as a shared cache by default
//!
//! - A request with `Authorization` or `Cookie` bypasses the cache, unless
//!   [`CacheLayer::principal`] says whom it is from: the principal is then
//!   part of the key.
//! - A response with `Set-Cookie`, `Cache-Control: private`, `no-store` or
//!   `no-cache`, or `Vary: *`, is never stored.
//! - A request with `Cache-Control: no-cache` (or `max-age=0`,
//!   `Pragma: no-cache`) goes to the inner service and its response replaces
//!   the entry; `no-store` in a request bypasses.
//! - With [`CacheLayer::ttl_from_response`], `s-maxage` (else `max-age`) sets the TTL.
//! - Requests with `Range` bypass.
//!
//! ## Headers
//!
//! Every response that goes through the layer carries `X-Cache` (`HIT`,
//! `MISS`, `STALE` or `BYPASS`), `Age`, and an RFC 9211 `Cache-Status`
//! (`brisk; hit; ttl=42`, `brisk; fwd=uri-miss; stored`,
//! `brisk; fwd=bypass; detail=authorization`…); responses that were looked up
//! also carry `X-Cache-Key`, unless it is not a valid header value or holds a
//! principal. Stored responses keep their `ETag` or get one (a hash of the
//! body), and a request whose `If-None-Match` matches is answered `304` from
//! the cache; the inner service never sees the condition.
//!
//! ## Hits
//!
//! Each layer keeps the decoded responses of up to 128 recent L1 hits, so a
//! repeated `GET` (no credentials, no `If-None-Match`, no `Vary` on the
//! entry) is answered in `call` itself, without reading L1 again. It is
//! answered so only while the entry would still answer from L1: nothing
//! changed in L1 for the key since it was read, and the entry is fresh,
//! valid (generations and tombstones) and not due for an early refresh. Up
//! to 128 bodies may so stay in memory after L1 dropped them.
//!
//! ## Concurrency and failure
//!
//! Concurrent misses of one key call the inner service once (the others wait
//! for its response, `Cache-Status: …; collapsed`), through
//! [`TieredCache::get_or_load_bytes`](crate::TieredCache::get_or_load_bytes);
//! the call runs in its own task, so it completes and fills the cache even if
//! the client goes away. A response that may not be stored is returned to its
//! own request only: the waiting requests call the inner service themselves.
//! An error of the inner service reaches the client unchanged (or, with a
//! stale grace on the cache, a stale entry is served, `X-Cache: STALE`). A
//! cache fault (Redis down or slow) is a miss: the response is the inner
//! service's.
//!
//! Since the inner service is called from the load's task, task-local values
//! of the request's task are not visible to it on a miss.
//!
//! [`InvalidateLayer`] invalidates tags and patterns after successful writes;
//! [`CacheAdmin`] (feature `axum`) serves stats and invalidation endpoints.

mod body;
mod digits;
mod front;
mod future;
mod invalidate;
mod layer;
mod policy;
mod record;
mod request;
mod service;
mod stats;

#[cfg(feature = "axum")]
mod admin;

pub use self::body::CacheBody;
pub use self::future::ResponseFuture;
pub use self::invalidate::{Invalidate, InvalidateFuture, InvalidateLayer, Targets};
pub use self::layer::{CacheLayer, DEFAULT_CACHEABLE_STATUSES};
pub use self::request::CacheRequest;
pub use self::service::Cache;
pub use self::stats::HttpCacheStats;

#[cfg(feature = "axum")]
pub use self::admin::{CacheAdmin, clear, invalidate, stats};
