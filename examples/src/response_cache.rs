//! Cached GET responses on a brisk-cache `TieredCache`: moka in process, and
//! Redis shared by every instance when `REDIS_URL` (or a cluster) is set.
//!
//! Public reads are cached under keys built from the parsed request (so
//! `?fields=name,id` and `?fields=id,name` share an entry), tagged by the
//! resource they show. Writes invalidate those tags, which reaches every
//! instance through Redis. Responses say `X-Cache: HIT` or `MISS`, `Age`, and
//! `Cache-Control: public, max-age=<ttl>`.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use brisk_cache::{EntryOptions, LoadError, Loaded, Tier, TieredCache};
use bytes::{BufMut, Bytes, BytesMut};

use crate::api::extract::Shareable;
use crate::api::problem::Problem;

/// How long a blueprint (or page of them) is cached.
pub(crate) const BLUEPRINT_TTL: Duration = Duration::from_secs(300);
/// How long a project (or page of them) is cached.
pub(crate) const PROJECT_TTL: Duration = Duration::from_secs(180);
/// How long the stats summary is cached.
pub(crate) const STATS_TTL: Duration = Duration::from_secs(60);
/// A load slower than this fails (and is not cached).
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Tags: what invalidates an entry.
pub(crate) mod tags {
    /// Every page of blueprints.
    pub(crate) const BLUEPRINT_PAGES: &str = "blueprints:pages";
    /// Every page of projects.
    pub(crate) const PROJECT_PAGES: &str = "projects:pages";
    /// The stats summary.
    pub(crate) const STATS: &str = "stats";

    /// One blueprint.
    pub(crate) fn blueprint(id: i64) -> String {
        format!("blueprint:{id}")
    }

    /// One project.
    pub(crate) fn project(id: i64) -> String {
        format!("project:{id}")
    }
}

/// A response body to cache, with its `Link` header. (The queries the load
/// took travel in the stored frame and are charged to the request that missed.)
#[derive(Debug)]
pub(crate) struct Fresh {
    pub(crate) body: Vec<u8>,
    pub(crate) link: Option<String>,
}

/// The service's response cache. Clones share one cache.
#[derive(Debug, Clone)]
pub(crate) struct ResponseCache {
    cache: TieredCache,
}

impl ResponseCache {
    pub(crate) fn new(cache: TieredCache) -> Self {
        Self { cache }
    }

    pub(crate) fn inner(&self) -> &TieredCache {
        &self.cache
    }

    /// The cached response under `key`, or `load`'s (cached when it succeeds).
    /// Concurrent misses of one key run one load. A request that is not
    /// [`Shareable`] (it carries credentials) is answered by `load` alone,
    /// `X-Cache: BYPASS`, `Cache-Control: private, no-store`: the shared
    /// cache neither answers it nor stores its response.
    pub(crate) async fn respond<F, Fut>(
        &self,
        Shareable(shared): Shareable,
        key: String,
        ttl: Duration,
        tags: Vec<String>,
        load: F,
    ) -> Response
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fresh, Problem>> + Send + 'static,
    {
        if !shared {
            return match tokio::time::timeout(LOAD_TIMEOUT, load()).await {
                Ok(Ok(fresh)) => {
                    let mut response = json(Bytes::from(fresh.body), fresh.link);
                    let headers = response.headers_mut();
                    headers.insert("x-cache", HeaderValue::from_static("BYPASS"));
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
                    response
                }
                Ok(Err(problem)) => problem.into_response(),
                Err(_) => {
                    Problem::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "the database did not answer in time")
                        .into_response()
                }
            };
        }
        let options = EntryOptions::new(ttl).tags(tags);
        let loaded = self
            .cache
            .get_or_load_bytes(&key, &options, move || async move {
                // The load runs on its own task: count its queries in a scope
                // of its own and carry the count to the request that missed.
                let (queries, fresh) = brisk_budget::RequestScope::new()
                    .run(tokio::time::timeout(LOAD_TIMEOUT, load()))
                    .await
                    .map(|scope, out| (scope.get(brisk_budget::DB_QUERIES).unwrap_or(0), out));
                match fresh {
                    Ok(Ok(fresh)) => Ok(Loaded::cache(frame(&fresh, queries))),
                    Ok(Err(problem)) => Err(problem),
                    Err(_) => Err(Problem::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "the database did not answer in time",
                    )),
                }
            })
            .await;
        match loaded {
            Ok(hit) => {
                let Some((link, queries, body)) = unframe(hit.value()) else {
                    tracing::warn!(key, "unreadable cached response; answering without it");
                    return Problem::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
                };
                let from_cache = !matches!(hit.tier(), Tier::Loader);
                if !from_cache {
                    brisk_budget::record(brisk_budget::DB_QUERIES, queries);
                }
                let mut response = json(body, link);
                let headers = response.headers_mut();
                headers.insert("x-cache", HeaderValue::from_static(if from_cache { "HIT" } else { "MISS" }));
                headers.insert(header::AGE, HeaderValue::from(hit.age().as_secs()));
                headers.insert(header::CACHE_CONTROL, cache_control(ttl));
                response
            }
            Err(LoadError::Loader(problem)) => (*problem).clone().into_response(),
            Err(err) => {
                tracing::warn!(key, error = %err, "cached load failed");
                Problem::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "the response could not be produced in time")
                    .into_response()
            }
        }
    }

    /// Invalidates `tags` on every instance. A failure to reach Redis is
    /// logged: this instance's entries are gone, the others' expire by TTL.
    pub(crate) async fn invalidate(&self, tags: &[String]) {
        for tag in tags {
            if let Err(err) = self.cache.invalidate_tag(tag).await {
                tracing::warn!(tag, error = %err, "cache invalidation did not reach every instance");
            }
        }
    }
}

/// A JSON response with its `Link` header.
fn json(body: Bytes, link: Option<String>) -> Response {
    let mut response = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// `Cache-Control` for a TTL; the service's three are static.
fn cache_control(ttl: Duration) -> HeaderValue {
    match ttl.as_secs() {
        300 => HeaderValue::from_static("public, max-age=300"),
        180 => HeaderValue::from_static("public, max-age=180"),
        60 => HeaderValue::from_static("public, max-age=60"),
        secs => HeaderValue::from_str(&format!("public, max-age={secs}")).expect("ASCII"),
    }
}

const FRAME_VERSION: u8 = 1;

/// `[version][queries u32][link len u16][link][body]`.
fn frame(fresh: &Fresh, queries: u64) -> Bytes {
    let link = fresh.link.as_deref().unwrap_or("").as_bytes();
    let link_len = u16::try_from(link.len()).unwrap_or(0);
    let mut out = BytesMut::with_capacity(7 + link.len() + fresh.body.len());
    out.put_u8(FRAME_VERSION);
    out.put_u32(u32::try_from(queries).unwrap_or(u32::MAX));
    out.put_u16(link_len);
    out.put_slice(&link[..usize::from(link_len)]);
    out.put_slice(&fresh.body);
    out.freeze()
}

fn unframe(bytes: &Bytes) -> Option<(Option<String>, u64, Bytes)> {
    if bytes.len() < 7 || bytes[0] != FRAME_VERSION {
        return None;
    }
    let queries = u64::from(u32::from_be_bytes(bytes[1..5].try_into().ok()?));
    let link_len = usize::from(u16::from_be_bytes(bytes[5..7].try_into().ok()?));
    let link = bytes.get(7..7 + link_len)?;
    let link = if link.is_empty() { None } else { Some(String::from_utf8(link.to_vec()).ok()?) };
    Some((link, queries, bytes.slice(7 + link_len..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let fresh = Fresh { body: b"{\"a\":1}".to_vec(), link: Some("</x?cursor=y>; rel=\"next\"".into()) };
        let (link, queries, body) = unframe(&frame(&fresh, 2)).unwrap();
        assert_eq!(link.as_deref(), Some("</x?cursor=y>; rel=\"next\""));
        assert_eq!(queries, 2);
        assert_eq!(&body[..], b"{\"a\":1}");
        let plain = Fresh { body: b"[]".to_vec(), link: None };
        assert_eq!(unframe(&frame(&plain, 1)).unwrap().0, None);
        for garbage in [&b""[..], b"\x02abcdefgh", b"\x01\0\0\0\x01\xff\xffab"] {
            assert!(unframe(&Bytes::copy_from_slice(garbage)).is_none());
        }
    }
}
