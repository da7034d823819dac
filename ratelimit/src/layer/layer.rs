use std::sync::Arc;

use http::Request;
use tower_layer::Layer;

use super::service::RateLimit;
use crate::RateLimiter;
use crate::key::PeerIp;

/// Which rate-limit header fields to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10). The default.
    #[default]
    Ietf,
    /// The IETF fields plus `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    IetfAndLegacy,
    /// No fields on admitted responses; refusals keep `Retry-After` and the IETF fields.
    OnlyOnRefusal,
}

/// What to do with a request whose key cannot be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Answer `500` with a problem body: a misconfiguration must not disable limiting. The default.
    #[default]
    Reject,
    /// Pass the request through unlimited (e.g. a per-user limiter on a route
    /// where unauthenticated requests are refused further in).
    Allow,
}

/// How many units a request costs.
pub trait RequestCost<B> {
    /// The cost of `request` (0 is taken as 1).
    fn cost(&self, request: &Request<B>) -> u32;
}

/// Every request costs 1. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCost;

impl<B> RequestCost<B> for UnitCost {
    fn cost(&self, _request: &Request<B>) -> u32 {
        1
    }
}

impl<B, F: Fn(&Request<B>) -> u32> RequestCost<B> for F {
    fn cost(&self, request: &Request<B>) -> u32 {
        self(request)
    }
}

#[derive(Debug, Copy)]
pub(crate) struct Config {
    pub(crate) headers: HeaderStyle,
    pub(crate) missing_key: MissingKey,
}

/// Applies a [`RateLimiter`] to every request, keyed by `K` (default: the
/// peer IP), each request costing `C` (default: 1).
///
/// Clones of this layer, and every service it makes, share one limiter (its
/// store connection, blocked-key cache and breaker).
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitLayer<K = PeerIp, C = UnitCost> {
    pub(crate) limiter: RateLimiter,
    pub(crate) key: K,
    pub(crate) cost: C,
    pub(crate) config: Arc<Config>,
}

impl RateLimitLayer {
    /// Limits by peer IP (IPv6 grouped by /64), one unit per request.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer {
            limiter,
            key: PeerIp::new(),
            cost: UnitCost,
            config: Arc::new(Config { headers: HeaderStyle::Ietf, missing_key: MissingKey::Reject }),
        }
    }
}

impl<K, C> RateLimitLayer<K, C> {
    /// Keys requests with `key` instead (see [`crate::key`]).
    pub fn key<K2>(self, key: K2) -> RateLimitLayer<K2, C> {
        RateLimitLayer { limiter: self.limiter, key, cost: self.cost, config: self.config }
    }

    /// Weighs requests with `cost`, e.g. `|req: &Request<Body>| if req.method() == "POST" { 5 } else { 1 }`.
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<K, C2> {
        RateLimitLayer { limiter: self.limiter, key: self.key, cost, config: self.config }
    }

    /// Chooses the header fields.
    pub fn headers(mut self, style: HeaderStyle) -> Self {
        Arc::make_mut(&mut self.config).headers = style;
        self
    }

    /// Chooses what happens to requests without a key.
    pub fn on_missing_key(mut self, missing: MissingKey) -> Self {
        Arc::make_mut(&mut self.config).missing_key = missing;
        self
    }
}

impl Clone for Config {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, K: Clone, C: Clone> Layer<S> for RateLimitLayer<K, C> {
    type Service = RateLimit<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            config: self.config.clone(),
        }
    }
}
