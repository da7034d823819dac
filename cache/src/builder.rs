//! Configuring a [`TieredCache`].
//!
//! ```
//! use std::time::Duration;
//! use brisk_cache::TieredCache;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = TieredCache::builder()
//!     .prefix("myapp")
//!     .l1_max_bytes(32 * 1024 * 1024)
//!     .stale_grace(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//! # let _ = cache;
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;

use crate::cache::TieredCache;
use crate::clock::{Clock, SystemClock, ms};
use crate::codec::{Codec, PostcardCodec};
use crate::error::Error;
use crate::inner::{Entry, Inner};
use crate::stats::{Counters, bump};

#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct LeaseConfig {
    pub(crate) ttl: Duration,
    pub(crate) wait: Duration,
    pub(crate) poll: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) prefix: String,
    pub(crate) l1_max_entry_bytes: usize,
    pub(crate) max_entry_bytes: usize,
    pub(crate) l1_max_ttl: Duration,
    pub(crate) l2_max_ttl: Duration,
    pub(crate) jitter: f64,
    pub(crate) stale_grace: Duration,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Duration,
    pub(crate) early_refresh: Option<f64>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) lease: Option<LeaseConfig>,
}

impl Config {
    /// Tombstones outlive every entry they may apply to: the longest L2
    /// life is the TTL cap plus the grace (itself capped to the TTL cap).
    pub(crate) fn tombstone_ttl_ms(&self) -> u64 {
        ms(self.l2_max_ttl).saturating_mul(2).saturating_add(60_000)
    }
}

/// Weighs an L1 entry in bytes: key, value and a fixed overhead.
fn weigh(key: &Arc<str>, entry: &Arc<Entry>) -> u32 {
    u32::try_from(key.len() + entry.env.weight_hint() + 64).unwrap_or(u32::MAX)
}

struct L1Expiry;

impl moka::Expiry<Arc<str>, Arc<Entry>> for L1Expiry {
    fn expire_after_create(&self, _: &Arc<str>, value: &Arc<Entry>, _: std::time::Instant) -> Option<Duration> {
        Some(value.l1_ttl)
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        value: &Arc<Entry>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.l1_ttl)
    }
}

/// Builds a [`TieredCache`]. Every setter has a default; `build()` checks
/// the combination.
#[derive(Debug)]
#[must_use]
pub struct TieredCacheBuilder<C = PostcardCodec> {
    codec: C,
    prefix: String,
    l1_max_bytes: u64,
    l1_max_entry_bytes: usize,
    max_entry_bytes: usize,
    l1_max_ttl: Duration,
    l2_max_ttl: Duration,
    jitter: f64,
    stale_grace: Duration,
    soft_timeout: Option<Duration>,
    hard_timeout: Duration,
    early_refresh: Option<f64>,
    clock: Arc<dyn Clock>,
    #[cfg(feature = "redis")]
    target: Option<crate::l2::Target>,
    #[cfg(feature = "redis")]
    redis_timeout: Duration,
    #[cfg(feature = "redis")]
    breaker_failures: u32,
    #[cfg(feature = "redis")]
    breaker_open: Duration,
    #[cfg(feature = "redis")]
    lease: Option<LeaseConfig>,
}

impl TieredCacheBuilder<PostcardCodec> {
    pub(crate) fn new() -> Self {
        Self {
            codec: PostcardCodec,
            prefix: "brisk".into(),
            l1_max_bytes: 64 * 1024 * 1024,
            l1_max_entry_bytes: 1024 * 1024,
            max_entry_bytes: 16 * 1024 * 1024,
            l1_max_ttl: Duration::from_secs(300),
            l2_max_ttl: Duration::from_secs(24 * 3600),
            jitter: 0.1,
            stale_grace: Duration::ZERO,
            soft_timeout: None,
            hard_timeout: Duration::from_secs(30),
            early_refresh: None,
            clock: Arc::new(SystemClock),
            #[cfg(feature = "redis")]
            target: None,
            #[cfg(feature = "redis")]
            redis_timeout: Duration::from_millis(250),
            #[cfg(feature = "redis")]
            breaker_failures: 5,
            #[cfg(feature = "redis")]
            breaker_open: Duration::from_secs(5),
            #[cfg(feature = "redis")]
            lease: None,
        }
    }
}

impl<C: Codec> TieredCacheBuilder<C> {
    /// The codec for the typed API (default [`PostcardCodec`]).
    pub fn codec<C2: Codec>(self, codec: C2) -> TieredCacheBuilder<C2> {
        TieredCacheBuilder {
            codec,
            prefix: self.prefix,
            l1_max_bytes: self.l1_max_bytes,
            l1_max_entry_bytes: self.l1_max_entry_bytes,
            max_entry_bytes: self.max_entry_bytes,
            l1_max_ttl: self.l1_max_ttl,
            l2_max_ttl: self.l2_max_ttl,
            jitter: self.jitter,
            stale_grace: self.stale_grace,
            soft_timeout: self.soft_timeout,
            hard_timeout: self.hard_timeout,
            early_refresh: self.early_refresh,
            clock: self.clock,
            #[cfg(feature = "redis")]
            target: self.target,
            #[cfg(feature = "redis")]
            redis_timeout: self.redis_timeout,
            #[cfg(feature = "redis")]
            breaker_failures: self.breaker_failures,
            #[cfg(feature = "redis")]
            breaker_open: self.breaker_open,
            #[cfg(feature = "redis")]
            lease: self.lease,
        }
    }

    /// The Redis key prefix (default `brisk`): values live at
    /// `{prefix}:{key}`, and `clear()` removes everything under it. No
    /// braces; caches sharing a Redis need prefixes that are not
    /// `prefix:`-prefixes of each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// L1's bound in bytes, as weighed (key + value + overhead). Default 64 MiB.
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.l1_max_bytes = bytes;
        self
    }

    /// Values larger than this stay out of L1 (they may still be in L2).
    /// Default 1 MiB.
    pub fn l1_max_entry_bytes(mut self, bytes: usize) -> Self {
        self.l1_max_entry_bytes = bytes;
        self
    }

    /// Values larger than this are not cached at all. Default 16 MiB.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// The longest an entry stays in L1 (default 5 minutes), however long its
    /// TTL: L1 cannot be invalidated as surely as Redis.
    pub fn l1_max_ttl(mut self, ttl: Duration) -> Self {
        self.l1_max_ttl = ttl;
        self
    }

    /// The longest TTL (and stale grace) accepted (default 24 hours). Pattern
    /// tombstones live twice this long, plus a minute.
    pub fn l2_max_ttl(mut self, ttl: Duration) -> Self {
        self.l2_max_ttl = ttl;
        self
    }

    /// TTLs are shortened by a random fraction up to this (default 0.1), in
    /// both tiers, so entries written together do not expire together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// How long past its TTL `get_or_load` may serve an entry when the loader
    /// fails or is slower than the soft timeout (default 0: never).
    pub fn stale_grace(mut self, grace: Duration) -> Self {
        self.stale_grace = grace;
        self
    }

    /// With a stale value at hand, wait this long for the loader before
    /// serving the stale value; the load goes on in the background and fills
    /// the cache (default: wait for the loader).
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// A loader running longer is abandoned (default 30 s).
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = timeout;
        self
    }

    /// Refresh in the background when a hit in `get_or_load` has less than
    /// this fraction of its TTL left (e.g. `0.1`), so hot keys never expire
    /// under load. Default: off.
    pub fn early_refresh(mut self, fraction_left: f64) -> Self {
        self.early_refresh = Some(fraction_left);
        self
    }

    /// The clock for write times and freshness (default the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the cache. With Redis, must be called inside a Tokio runtime:
    /// it starts the invalidation bus subscriber.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid combination, an unusable Redis URL,
    /// or no Tokio runtime when Redis is configured.
    pub fn build(self) -> Result<TieredCache<C>, Error> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(Error::Config(format!("prefix {:?} must be non-empty, without braces", self.prefix)));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(Error::Config(format!("jitter {} must be in [0, 1)", self.jitter)));
        }
        if let Some(r) = self.early_refresh
            && !(r > 0.0 && r < 1.0)
        {
            return Err(Error::Config(format!("early refresh fraction {r} must be in (0, 1)")));
        }
        if self.l1_max_ttl.is_zero() || self.l2_max_ttl.is_zero() || self.hard_timeout.is_zero() {
            return Err(Error::Config("TTL caps and the hard timeout must be positive".into()));
        }
        let counters = Arc::new(Counters::default());
        let evictions = Arc::clone(&counters);
        let l1 = moka::future::Cache::builder()
            .max_capacity(self.l1_max_bytes)
            .weigher(weigh)
            .expire_after(L1Expiry)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    bump(&evictions.evictions);
                }
            })
            .build();
        let cfg = Config {
            prefix: self.prefix.clone(),
            l1_max_entry_bytes: self.l1_max_entry_bytes,
            max_entry_bytes: self.max_entry_bytes,
            l1_max_ttl: self.l1_max_ttl,
            l2_max_ttl: self.l2_max_ttl,
            jitter: self.jitter,
            stale_grace: self.stale_grace,
            soft_timeout: self.soft_timeout,
            hard_timeout: self.hard_timeout,
            early_refresh: self.early_refresh,
            // Waiting on another instance's lease is bounded like a load.
            #[cfg(feature = "redis")]
            lease: self.lease.map(|l| LeaseConfig { wait: self.hard_timeout.max(l.ttl), ..l }),
            #[cfg(not(feature = "redis"))]
            lease: None,
        };
        #[cfg(feature = "redis")]
        {
            let l2 = match self.target {
                None => None,
                Some(target) => {
                    if tokio::runtime::Handle::try_current().is_err() {
                        return Err(Error::Config("a cache with Redis must be built inside a Tokio runtime".into()));
                    }
                    let breaker = crate::breaker::Breaker::new(self.breaker_failures, ms(self.breaker_open));
                    let l2 = crate::l2::L2::new(target, &self.prefix, self.redis_timeout, breaker)
                        .map_err(|e| Error::Config(format!("Redis: {e}")))?;
                    Some(l2)
                }
            };
            let bus = l2.as_ref().map(|l2| (l2.bus_clients(), l2.keys.channel(), l2.timeout()));
            let inner = Arc::new(Inner::new(cfg, self.clock, l1, counters, l2));
            if let Some((clients, channel, timeout)) = bus {
                tokio::spawn(crate::bus::run(Arc::downgrade(&inner), clients, channel, timeout));
            }
            Ok(TieredCache::from_parts(inner, self.codec))
        }
        #[cfg(not(feature = "redis"))]
        {
            let inner = Arc::new(Inner::new(cfg, self.clock, l1, counters));
            Ok(TieredCache::from_parts(inner, self.codec))
        }
    }
}

#[cfg(feature = "redis")]
impl<C: Codec> TieredCacheBuilder<C> {
    /// Uses a single Redis server as L2 (and for the bus and the lease).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the URL does not parse.
    pub fn redis_url(self, url: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::Config(format!("Redis URL: {e}")))?;
        Ok(self.redis_client(client))
    }

    /// Uses a single Redis server as L2, from a client.
    pub fn redis_client(mut self, client: redis::Client) -> Self {
        self.target = Some(crate::l2::Target::Single(client));
        self
    }

    /// Uses a Redis Cluster as L2, given some of its nodes' URLs. The bus
    /// subscribes through one of them (pub/sub reaches every node).
    pub fn redis_cluster<I, S>(mut self, node_urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.target = Some(crate::l2::Target::Cluster(node_urls.into_iter().map(Into::into).collect()));
        self
    }

    /// The timeout of every Redis call (default 250 ms). A timeout counts as
    /// a failure for the breaker and is a miss for the caller.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// The circuit breaker opens after this many consecutive Redis failures
    /// (default 5) and stays open for `open_for` (default 5 s) before one
    /// probe call is let through.
    pub fn circuit_breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_open = open_for;
        self
    }

    /// Runs each key's loader once across every instance: a lease
    /// (`SET NX PX ttl` with a random fencing token) is taken before loading;
    /// others poll Redis every `poll` for the value, for up to the hard
    /// timeout (or the lease TTL, if longer), then load themselves. The value is written only while the
    /// lease still holds the writer's token. Default: off (once per process).
    pub fn distributed_lease(mut self, ttl: Duration, poll: Duration) -> Self {
        self.lease = Some(LeaseConfig { ttl, wait: ttl, poll });
        self
    }
}
