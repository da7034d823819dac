//! # brisk-cache
//!
//! A two-tier cache — [moka](https://docs.rs/moka) in process (L1), Redis
//! shared by every instance (L2) — with invalidation that reaches every
//! instance, stampede protection, stale serving, and a cache fault that never
//! becomes an error.
//!
//! ```
//! use std::time::Duration;
//! use brisk_cache::{EntryOptions, TieredCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // L1 only here; add `.redis_url("redis://127.0.0.1")?` (feature `redis`) for L2.
//! let cache = TieredCache::builder().build().unwrap();
//!
//! let options = EntryOptions::new(Duration::from_secs(60)).tag("blueprints");
//! let list: Vec<String> = cache
//!     .get_or_load_with("blueprints:all", &options, || async {
//!         Ok::<_, std::io::Error>(vec!["api".to_owned(), "worker".to_owned()])
//!     })
//!     .await
//!     .unwrap()
//!     .into_value();
//! assert_eq!(list.len(), 2);
//!
//! cache.invalidate_tag("blueprints").await.unwrap();
//! assert_eq!(cache.get::<Vec<String>>("blueprints:all").await, None);
//! # }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `redis` | yes | L2 on Redis (single server or Redis Cluster), the invalidation bus, the distributed fill lease |
//! | `prometheus` | yes | `TieredCache::register`: metrics on a `prometheus_client` registry |
//! | `json` | no | `JsonCodec`, for values shared with services in other languages |
//! | `http` | no | [`http`]: `CacheLayer` (a tower HTTP response cache) and `InvalidateLayer` |
//! | `axum` | no | `http`, plus axum's matched route as the route, and the admin handlers (`CacheAdmin`) |
//!
//! With `default-features = false` the cache is L1-only: one process, the
//! same API, and no Redis or prometheus-client in the dependency tree.
//!
//! ## Design
//!
//! **Two APIs, one path.** The bytes API ([`TieredCache::get_bytes`],
//! [`set_bytes`](TieredCache::set_bytes),
//! [`get_or_load_bytes`](TieredCache::get_or_load_bytes)) returns a [`Hit`]
//! with the tier that answered, the write time (for `Age`) and whether it was
//! served stale; the typed API is the same calls plus a [`Codec`]
//! ([`PostcardCodec`] by default). Every value is stored in an
//! [`envelope`](envelope::Envelope): magic bytes, a format version, write
//! time, fresh-until and stale-until times, and the generation stamps below.
//! Bytes in Redis that are not such an envelope (or do not decode as the
//! requested type) are a miss, deleted and counted — never a panic.
//!
//! **L1** is a `moka::future::Cache` bounded by bytes (a weigher), with a
//! per-entry size cap and a TTL capped at 5 minutes; TTLs are jittered
//! downwards in both tiers so entries written together do not expire
//! together. An L2 hit fills L1.
//!
//! **An L2 hit is exactly one Redis round trip** (a `GET`). Generations are
//! not read per request: Redis holds the authoritative counters (`INCR`),
//! and each process keeps the values it has seen, kept current by the
//! invalidation bus. Each entry carries the generations it was written
//! under: the namespace (moved by [`clear`](TieredCache::clear)), each tag
//! (moved by [`invalidate_tag`](TieredCache::invalidate_tag)), and the
//! pattern epoch. A read whose stamps differ from the known generations is a
//! miss. Generations are re-read (one script call for all of them, their
//! keys share one hash slot) only when this process does not know them:
//! after start, after a bus flush, or for a tag it has never seen.
//!
//! **Pattern invalidation** ([`invalidate_pattern`](TieredCache::invalidate_pattern),
//! globs such as `cache:*/blueprints*`, see [`KeyPattern`]) cannot be a
//! counter per pattern. It records a tombstone `(pattern, epoch)` in Redis
//! and on the bus; the epoch is a counter, not a clock, so clock skew between
//! instances does not matter. An entry written under an older pattern epoch
//! whose key matches a live tombstone is a miss. Tombstones are few and live
//! twice the L2 TTL cap. The matching keys are removed physically in the
//! background with `SCAN … COUNT` and `UNLINK` in batches
//! ([`remove_matching`](TieredCache::remove_matching)); `KEYS` is never sent.
//! The background clean-ups after `invalidate_pattern` and `clear` read
//! each batch (`MGET`) and remove only entries written before the
//! invalidation, so values written since survive them.
//!
//! **Fencing.** A fill records the stamps current when its load started. Before
//! writing back, it re-reads the generations from Redis; if a tag, the
//! namespace or a matching pattern moved while it loaded, or the key was
//! deleted or set, the value is returned to its callers but not stored.
//!
//! **The bus.** Every invalidation (and every `set`, which replaces a value
//! other instances may hold in L1) is published on a Redis pub/sub channel
//! with the sender's id and a per-sender sequence number; every instance
//! evicts matching L1 entries. On a disconnect, a failed ping, or a gap in a
//! sender's sequence, an instance flushes its L1, forgets the generations it
//! knew, and counts it (`bus_flushes`); it reconnects with backoff. While the
//! bus is down, L1 is bypassed and every L2 read re-reads the generations, so
//! a missed invalidation is never served.
//!
//! **Stampedes.** Concurrent `get_or_load` misses for one key run one loader
//! per process; the load runs in its own task, so it completes and fills the
//! cache even if its callers go away. This is a small flight table rather
//! than moka's own `try_get_with`: a stale entry must stay readable while
//! its replacement loads, the loader may decide not to store its value
//! ([`Loaded::pass`]), and a loader error is shared with every waiter. With
//! `TieredCacheBuilder::distributed_lease` (feature `redis`), a lease
//! (`SET NX PX` with a random fencing token) makes it one loader across every
//! instance: taking the lease and checking for the value are one script, the
//! value is written only while the lease holds the writer's token, and the
//! lease key shares the value key's hash slot (`{key}:lease:…`).
//!
//! **Stale and early refresh.** With a stale grace, `get_or_load` serves an
//! expired value when the loader fails, or (with a soft timeout) while it is
//! slow; the hard timeout bounds every load. With early refresh, a hit near
//! its expiry starts a background reload.
//!
//! **Failure.** Every Redis call has a timeout; a circuit breaker opens after
//! consecutive failures and lets one probe through after a pause. A Redis
//! fault is a miss (reads) or an L1-only write; only invalidations report
//! that they did not reach Redis ([`Error::NotPropagated`]).
//!
//! **Redis Cluster.** Multi-key scripts keep their keys in one slot: the
//! generation keys share the `{prefix}` hash tag, and a value key and its
//! lease key share the value key's slot. Clean-up scans every master.
//!
//! Redis should run with a `volatile-*` eviction policy (or none): the
//! generation counters have no TTL and must not be evicted.

// Without Redis the breaker only reports "closed".
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod breaker;
mod builder;
mod cache;
mod clock;
mod codec;
pub mod envelope;
mod error;
mod flight;
// Without Redis, generations are local counters: the sync half is unused.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod gens;
mod hit;
mod inner;
mod pattern;
mod stats;

#[cfg(feature = "http")]
pub mod http;

#[cfg(feature = "redis")]
mod bus;
#[cfg(feature = "redis")]
mod l2;
#[cfg(feature = "prometheus")]
mod metrics;

pub use crate::breaker::BreakerState;
pub use crate::builder::TieredCacheBuilder;
pub use crate::cache::TieredCache;
pub use crate::clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "json")]
pub use crate::codec::JsonCodec;
pub use crate::codec::{Codec, CodecError, PostcardCodec};
pub use crate::error::{Error, LoadError};
pub use crate::hit::{EntryOptions, Hit, Loaded, Tier};
pub use crate::pattern::{KeyPattern, MAX_PATTERN_LEN};
pub use crate::stats::CacheStats;

/// Internals the fuzz targets (`fuzz/` in the repository) check; not part of
/// the API and exempt from semver.
#[doc(hidden)]
pub mod fuzzing {
    use crate::KeyPattern;

    /// The Redis `SCAN MATCH` pattern the physical clean-up sends for
    /// `pattern` under the key prefix `prefix`.
    pub fn redis_scan_pattern(pattern: &KeyPattern, prefix: &str) -> String {
        pattern.redis_scan_pattern(prefix)
    }
}
