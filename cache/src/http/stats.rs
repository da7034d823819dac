//! The layer's own counters: one outcome per request that went through it.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) bypasses: AtomicU64,
    pub(crate) not_modified: AtomicU64,
    pub(crate) stored: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HttpCacheStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HttpCacheStats {
            hits: r(&self.hits),
            stale: r(&self.stale),
            misses: r(&self.misses),
            bypasses: r(&self.bypasses),
            not_modified: r(&self.not_modified),
            stored: r(&self.stored),
        }
    }
}

/// What a [`CacheLayer`](super::CacheLayer) did, counted since it was built.
/// Every request that goes through it counts once in exactly one of `hits`,
/// `stale`, `misses` and `bypasses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HttpCacheStats {
    /// Answered from the cache, fresh (`X-Cache: HIT`).
    pub hits: u64,
    /// Answered from the cache past its TTL, because the inner service
    /// failed or was slow (`X-Cache: STALE`).
    pub stale: u64,
    /// Answered by the inner service (`X-Cache: MISS`), including requests
    /// that waited on another request's load of the same key.
    pub misses: u64,
    /// Not looked up (`X-Cache: BYPASS`): method, condition, credentials…
    pub bypasses: u64,
    /// Of the hits and misses, those answered `304 Not Modified`.
    pub not_modified: u64,
    /// Responses this layer stored.
    pub stored: u64,
}

impl HttpCacheStats {
    /// Answers from the cache (fresh or stale) over lookups, in `0.0..=1.0`
    /// (0 with no lookups). Bypasses are not lookups.
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits + self.stale;
        let lookups = served + self.misses;
        if lookups == 0 { 0.0 } else { served as f64 / lookups as f64 }
    }
}
