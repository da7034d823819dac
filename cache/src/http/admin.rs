//! Admin handlers for axum: `GET /cache/stats`, `DELETE /cache/invalidate`,
//! `DELETE /cache/clear`. Mount them behind your own authentication.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::{Value, json};

use super::layer::CacheLayer;
use super::stats::Counters;
use crate::{Error, KeyPattern, TieredCache};

/// The state of the admin handlers: the cache and the counters of one
/// [`CacheLayer`]. Cheap to clone.
///
/// ```
/// use axum::Router;
/// use brisk_cache::TieredCache;
/// use brisk_cache::http::{CacheAdmin, CacheLayer};
///
/// let cache = TieredCache::builder().build().unwrap();
/// let layer = CacheLayer::new(&cache);
/// // Put your authentication in front, e.g. with `route_layer`.
/// let admin: Router = CacheAdmin::new(&layer).router();
/// # let _ = admin;
/// ```
#[derive(Debug, Clone)]
pub struct CacheAdmin {
    cache: TieredCache,
    counters: Arc<Counters>,
    prefix: Arc<str>,
}

impl CacheAdmin {
    /// Handlers for the cache and counters of `layer`.
    pub fn new(layer: &CacheLayer) -> Self {
        let config = &layer.config;
        Self {
            cache: config.cache.clone(),
            counters: Arc::clone(&config.counters),
            prefix: config.key_prefix.as_str().into(),
        }
    }

    /// A router with `GET /cache/stats`, `DELETE /cache/invalidate` and
    /// `DELETE /cache/clear`, to merge into an application's router.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        axum::Router::new()
            .route("/cache/stats", get(stats).with_state(self.clone()))
            .route("/cache/invalidate", delete(invalidate).with_state(self.clone()))
            .route("/cache/clear", delete(clear).with_state(self.clone()))
    }

    /// The body of `GET /cache/stats`.
    ///
    /// `hits`, `misses` and `hitRate` count the requests of this layer in
    /// this instance (a stale answer counts as a hit; bypasses are not
    /// lookups); `keys` is the number of entries in this instance's L1 (the
    /// whole cache, not only HTTP entries). `layer` and `tiers` give the detail.
    pub async fn stats_json(&self) -> Value {
        // Exact entry counts need moka's pending maintenance done.
        self.cache.run_pending_tasks().await;
        let http = self.counters.snapshot();
        let s = self.cache.stats();
        json!({
            "hits": http.hits + http.stale,
            "misses": http.misses,
            "hitRate": http.hit_ratio(),
            "keys": s.entries,
            "layer": {
                "fresh": http.hits,
                "stale": http.stale,
                "bypasses": http.bypasses,
                "notModified": http.not_modified,
                "stored": http.stored,
            },
            "tiers": {
                "l1": { "hits": s.l1_hits, "misses": s.l1_misses, "entries": s.entries, "bytes": s.bytes, "evictions": s.evictions },
                "l2": {
                    "hits": s.l2_hits,
                    "misses": s.l2_misses,
                    "errors": s.l2_errors,
                    "timeouts": s.l2_timeouts,
                    "rejected": s.l2_rejected,
                    "corrupt": s.corrupt,
                    "breaker": s.breaker.as_str(),
                },
            },
            "loads": s.loads,
            "loadErrors": s.load_errors,
            "staleServed": s.stale_served,
            "fenced": s.fenced,
            "invalidations": s.invalidations,
            "bus": { "connected": s.bus_connected, "messages": s.bus_messages, "flushes": s.bus_flushes },
        })
    }

    /// Whether `pattern` stays inside this layer's keys: it must start with
    /// the key prefix and `:` literally, so no pattern reaches other entries
    /// of the cache.
    pub fn check_pattern(&self, pattern: &str) -> Result<KeyPattern, String> {
        let inside = pattern.strip_prefix(&*self.prefix).is_some_and(|rest| rest.starts_with(':'));
        if !inside {
            return Err(format!("a pattern must start with {:?}", format!("{}:", self.prefix)));
        }
        KeyPattern::new(pattern).map_err(|e| e.to_string())
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    no_store((status, Json(json!({ "error": message.into() }))).into_response())
}

/// `GET /cache/stats`: see [`CacheAdmin::stats_json`].
pub async fn stats(State(admin): State<CacheAdmin>) -> Response {
    no_store(Json(admin.stats_json().await).into_response())
}

/// `DELETE /cache/invalidate?tag=…` or `?pattern=…` (exactly one): `200`
/// with what was invalidated, `400` for a missing, empty or out-of-prefix
/// pattern, `503` when it was applied to this instance only (Redis down).
pub async fn invalidate(State(admin): State<CacheAdmin>, Query(params): Query<HashMap<String, String>>) -> Response {
    let (kind, value, result) = match (params.get("tag"), params.get("pattern")) {
        (Some(tag), None) if !tag.is_empty() => ("tag", tag, admin.cache.invalidate_tag(tag).await),
        (None, Some(pattern)) => {
            if let Err(why) = admin.check_pattern(pattern) {
                return error(StatusCode::BAD_REQUEST, why);
            }
            ("pattern", pattern, admin.cache.invalidate_pattern(pattern).await)
        }
        _ => return error(StatusCode::BAD_REQUEST, "give exactly one of ?tag= or ?pattern="),
    };
    match result {
        Ok(()) => no_store(Json(json!({ "invalidated": { kind: value } })).into_response()),
        Err(Error::InvalidPattern { reason, .. }) => error(StatusCode::BAD_REQUEST, reason),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, format!("applied to this instance only: {err}")),
    }
}

/// `DELETE /cache/clear`: every entry of the cache, in every instance.
pub async fn clear(State(admin): State<CacheAdmin>) -> Response {
    match admin.cache.clear().await {
        Ok(()) => no_store(Json(json!({ "cleared": true })).into_response()),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, format!("applied to this instance only: {err}")),
    }
}
