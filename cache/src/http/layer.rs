//! `CacheLayer`: the configuration, built with `self`-taking setters.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tower_layer::Layer;

use super::request::CacheRequest;
use super::service::Cache;
use super::stats::{Counters, HttpCacheStats};
use crate::{Codec, TieredCache};

type KeyFn = dyn Fn(&CacheRequest<'_>) -> Option<String> + Send + Sync;
type PrincipalFn = dyn Fn(&CacheRequest<'_>) -> Option<String> + Send + Sync;
type ConditionFn = dyn Fn(&CacheRequest<'_>) -> bool + Send + Sync;
type TagsFn = dyn Fn(&CacheRequest<'_>) -> Vec<String> + Send + Sync;
type TtlFn = dyn Fn(&CacheRequest<'_>) -> Option<Duration> + Send + Sync;

/// Statuses stored by default: those RFC 9110 §15.1 calls heuristically
/// cacheable.
pub const DEFAULT_CACHEABLE_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Applies [`Cache`] to a service: a shared HTTP response cache on a
/// [`TieredCache`]. Clones of this layer share one cache and one set of
/// counters.
///
/// The pluggable parts (key, principal, condition, TTL, tags) are boxed
/// closures rather than type parameters, so the layer's type stays
/// `CacheLayer` whatever it is configured with and can be stored in an
/// application's state.
///
/// See the [module docs](super) for what it does and an example.
#[derive(Clone)]
#[must_use]
pub struct CacheLayer {
    pub(crate) config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) cache: TieredCache,
    pub(crate) key_prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) route_ttls: HashMap<String, Duration>,
    pub(crate) ttl_fn: Option<Arc<TtlFn>>,
    pub(crate) key_fn: Option<Arc<KeyFn>>,
    pub(crate) principal_fn: Option<Arc<PrincipalFn>>,
    pub(crate) condition: Option<Arc<ConditionFn>>,
    pub(crate) tags_fn: Option<Arc<TagsFn>>,
    pub(crate) statuses: Vec<u16>,
    pub(crate) max_body_bytes: usize,
    pub(crate) ttl_from_response: bool,
    pub(crate) request_no_cache: bool,
    pub(crate) expose_key: bool,
    pub(crate) name: String,
    pub(crate) counters: Arc<Counters>,
    /// `Cache-Status` values for bypasses, built once.
    pub(crate) bypass_status: Arc<[HeaderValue; super::service::BYPASS_REASONS.len()]>,
    /// Recent L1 hits, decoded. Each configuration has its own: the
    /// headers it holds are built with the configuration's name and options.
    pub(crate) front: Arc<super::front::Front>,
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("CacheLayer")
            .field("key_prefix", &c.key_prefix)
            .field("ttl", &c.ttl)
            .field("route_ttls", &c.route_ttls)
            .field("statuses", &c.statuses)
            .field("max_body_bytes", &c.max_body_bytes)
            .field("ttl_from_response", &c.ttl_from_response)
            .field("request_no_cache", &c.request_no_cache)
            .field("custom_key", &c.key_fn.is_some())
            .field("principal", &c.principal_fn.is_some())
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// A layer storing responses in `cache` (its clones share it), with the
    /// defaults: keys `cache:{method}{path}?{sorted query}`, 60 s TTL,
    /// [`DEFAULT_CACHEABLE_STATUSES`], bodies up to 1 MiB, requests with
    /// `Authorization` or `Cookie` bypassed, the TTL not taken from the
    /// response, request `no-cache` honoured, `X-Cache-Key` shown.
    pub fn new<C: Codec>(cache: &TieredCache<C>) -> Self {
        let name = "brisk".to_owned();
        Self {
            config: Arc::new(Config {
                cache: TieredCache::from_parts(Arc::clone(&cache.inner), crate::PostcardCodec),
                key_prefix: "cache".to_owned(),
                ttl: Duration::from_secs(60),
                route_ttls: HashMap::new(),
                ttl_fn: None,
                key_fn: None,
                principal_fn: None,
                condition: None,
                tags_fn: None,
                statuses: DEFAULT_CACHEABLE_STATUSES.to_vec(),
                max_body_bytes: 1024 * 1024,
                ttl_from_response: false,
                request_no_cache: true,
                expose_key: true,
                bypass_status: Arc::new(super::service::bypass_statuses(&name)),
                name,
                counters: Arc::default(),
                front: Arc::default(),
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        let config = Arc::make_mut(&mut self.config);
        config.front = Arc::default();
        config
    }

    /// The TTL of entries whose route has none of its own (default 60 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config().ttl = ttl;
        self
    }

    /// The TTL of entries for `route`: a route template as axum's
    /// `MatchedPath` gives it (`/api/blueprints/{id}`), or a path when the
    /// layer runs outside a router (see [`CacheRequest::route`]).
    pub fn route_ttl(mut self, route: impl Into<String>, ttl: Duration) -> Self {
        self.config().route_ttls.insert(route.into(), ttl);
        self
    }

    /// A TTL per request, asked before [`route_ttl`](Self::route_ttl): `None`
    /// falls back to the route's TTL, then the default.
    pub fn ttl_fn(mut self, f: impl Fn(&CacheRequest<'_>) -> Option<Duration> + Send + Sync + 'static) -> Self {
        self.config().ttl_fn = Some(Arc::new(f));
        self
    }

    /// The prefix of default keys (default `cache`, giving
    /// `cache:GET/api/blueprints?page=2`). The admin handlers only accept
    /// invalidation patterns under it.
    ///
    /// # Panics
    ///
    /// When `prefix` is empty or holds `*` or `?` (it would not be a literal
    /// prefix of the patterns that invalidate it).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(!prefix.is_empty() && !prefix.contains(['*', '?']), "a key prefix is a non-empty literal");
        self.config().key_prefix = prefix;
        self
    }

    /// Keys from `f` instead of the default key; `None` bypasses the cache
    /// for that request. The key should start with the
    /// [`key_prefix`](Self::key_prefix) for the admin handlers' patterns to
    /// reach it. The values of the response's `Vary` headers are still added
    /// to the key. Example: `|r| Some(format!("cache:project:{}", r.path()))`.
    pub fn key_fn(mut self, f: impl Fn(&CacheRequest<'_>) -> Option<String> + Send + Sync + 'static) -> Self {
        self.config().key_fn = Some(Arc::new(f));
        self
    }

    /// Lets requests with `Authorization` or `Cookie` be cached, per
    /// principal: `f` returns who the request is from (a user id — not a
    /// secret, it becomes part of the key), and that is added to the key, so
    /// no response is shared between principals. When `f` returns `None`,
    /// the request bypasses the cache. Without this, such requests always
    /// bypass. The key of such a request is not shown in `X-Cache-Key`.
    pub fn principal(mut self, f: impl Fn(&CacheRequest<'_>) -> Option<String> + Send + Sync + 'static) -> Self {
        self.config().principal_fn = Some(Arc::new(f));
        self
    }

    /// Whether to use the cache for a request at all (`false` bypasses),
    /// e.g. `|r| !r.query_has("cache", "false")`.
    pub fn condition(mut self, f: impl Fn(&CacheRequest<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.config().condition = Some(Arc::new(f));
        self
    }

    /// Tags for the entry a request fills (e.g. from
    /// [`CacheRequest::route`]); `invalidate_tag` or an
    /// [`InvalidateLayer`](super::InvalidateLayer) makes them misses.
    pub fn tags_fn(mut self, f: impl Fn(&CacheRequest<'_>) -> Vec<String> + Send + Sync + 'static) -> Self {
        self.config().tags_fn = Some(Arc::new(f));
        self
    }

    /// The statuses that may be stored (default [`DEFAULT_CACHEABLE_STATUSES`]).
    pub fn cacheable_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.config().statuses = statuses.into_iter().collect();
        self
    }

    /// The largest body stored (default 1 MiB). Larger bodies stream through
    /// to the client unchanged and are not stored.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.config().max_body_bytes = bytes;
        self
    }

    /// Takes the TTL from the response's `s-maxage` (else `max-age`) when it
    /// has one, instead of the route's; `max-age=0` is then not stored.
    /// Off by default.
    pub fn ttl_from_response(mut self, on: bool) -> Self {
        self.config().ttl_from_response = on;
        self
    }

    /// Whether a request's `Cache-Control: no-cache` (or `max-age=0`,
    /// `Pragma: no-cache`) goes to the inner service and refreshes the entry
    /// (default `true`). Turn off when clients must not be able to make the
    /// origin work.
    pub fn request_no_cache(mut self, honour: bool) -> Self {
        self.config().request_no_cache = honour;
        self
    }

    /// Whether responses carry `X-Cache-Key` (default `true`).
    pub fn expose_key(mut self, on: bool) -> Self {
        self.config().expose_key = on;
        self
    }

    /// The cache's name in `Cache-Status` (default `brisk`).
    ///
    /// # Panics
    ///
    /// When `name` is not an RFC 8941 token (letters, digits and
    /// `!#$%&'*+-.^_`|~:/`, starting with a letter or `*`).
    pub fn cache_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        let token = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c));
        assert!(token, "a cache name is an RFC 8941 token");
        let config = self.config();
        config.bypass_status = Arc::new(super::service::bypass_statuses(&name));
        config.name = name;
        self
    }

    /// This layer's counters (shared by its clones and the services it made).
    pub fn stats(&self) -> HttpCacheStats {
        self.config.counters.snapshot()
    }

    /// The cache it stores in.
    pub fn cache(&self) -> &TieredCache {
        &self.config.cache
    }

    /// The prefix of default keys.
    pub fn prefix(&self) -> &str {
        &self.config.key_prefix
    }
}

impl Config {
    pub(crate) fn ttl_for(&self, req: &CacheRequest<'_>) -> Duration {
        if let Some(ttl) = self.ttl_fn.as_ref().and_then(|f| f(req)) {
            return ttl;
        }
        if self.route_ttls.is_empty() {
            return self.ttl;
        }
        self.route_ttls.get(req.route()).copied().unwrap_or(self.ttl)
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        Cache::new(inner, Arc::clone(&self.config))
    }
}
