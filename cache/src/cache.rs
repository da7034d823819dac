//! The tiered cache.
//!
//! ```
//! use std::time::Duration;
//! use brisk_cache::TieredCache;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = TieredCache::builder().build().unwrap();
//! cache.set("answer", &42u32, Duration::from_secs(60)).await.unwrap();
//! assert_eq!(cache.get::<u32>("answer").await, Some(42));
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builder::TieredCacheBuilder;
use crate::codec::{Codec, CodecError, PostcardCodec};
use crate::error::{Error, LoadError};
use crate::flight::Outcome;
use crate::hit::{EntryOptions, Hit, Loaded};
use crate::inner::{Found, Inner, hit_from};
use crate::pattern::KeyPattern;
use crate::stats::{CacheStats, bump};

/// A two-tier cache: moka in this process (L1), Redis shared by every
/// instance (L2). Cheap to clone: clones share one cache.
///
/// See the [crate docs](crate) for the design, and [`TieredCache::builder`]
/// for the options.
#[derive(Debug, Clone)]
pub struct TieredCache<C = PostcardCodec> {
    pub(crate) inner: Arc<Inner>,
    codec: C,
}

impl TieredCache<PostcardCodec> {
    /// A builder with the defaults: 64 MiB L1, no Redis.
    pub fn builder() -> TieredCacheBuilder<PostcardCodec> {
        TieredCacheBuilder::new()
    }
}

impl<C: Codec> TieredCache<C> {
    pub(crate) fn from_parts(inner: Arc<Inner>, codec: C) -> Self {
        Self { inner, codec }
    }

    // ----- typed API -------------------------------------------------------

    /// The fresh value under `key`, decoded; `None` on a miss. Never fails:
    /// a Redis fault is a miss, and a value that does not decode as `T` is
    /// deleted, counted as corrupt and a miss.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let hit = self.get_bytes(key).await?;
        match self.codec.decode(hit.value()) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(key, error = %e, "brisk-cache: cached value does not decode, deleted");
                self.inner.discard_corrupt(key).await;
                None
            }
        }
    }

    /// Stores `value` under `key` for `ttl`.
    ///
    /// # Errors
    ///
    /// Only when the value cannot be encoded. A Redis fault is not an error:
    /// the value is then kept in L1 only, or not at all.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T, ttl: Duration) -> Result<(), Error> {
        self.set_with(key, value, &EntryOptions::new(ttl)).await
    }

    /// Stores `value` under `key` with tags and a stale grace.
    ///
    /// # Errors
    ///
    /// Only when the value cannot be encoded.
    pub async fn set_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: &EntryOptions,
    ) -> Result<(), Error> {
        let bytes = self.codec.encode(value).map_err(Error::Encode)?;
        self.set_bytes(key, Bytes::from(bytes), options).await;
        Ok(())
    }

    /// The value under `key`, or the loader's, stored for `ttl`.
    ///
    /// Concurrent calls for one key run one loader in this process (and in
    /// all processes with the distributed lease); the others wait for its
    /// value.
    ///
    /// # Errors
    ///
    /// When the loader fails or times out and no stale value can be served,
    /// or the value cannot be encoded.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &str, ttl: Duration, loader: F) -> Result<T, LoadError<E>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.get_or_load_with(key, &EntryOptions::new(ttl), loader).await.map(Hit::into_value)
    }

    /// [`get_or_load`](Self::get_or_load) with tags and a stale grace, and
    /// where the value came from.
    ///
    /// # Errors
    ///
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn get_or_load_with<T, E, F, Fut>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
    ) -> Result<Hit<T>, LoadError<E>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let codec = self.codec.clone();
        // The typed loader is the bytes loader plus encoding; an encoding
        // failure travels as this error and is unwrapped below.
        let bytes_loader = move || async move {
            match loader().await {
                Ok(v) => codec.encode(&v).map(|b| Loaded::cache(Bytes::from(b))).map_err(Typed::Encode),
                Err(e) => Err(Typed::User(Arc::new(e))),
            }
        };
        let codec = self.codec.clone();
        let decode = move |b: &Bytes| codec.decode::<T>(b);
        match self.get_or_load_core(key, options, bytes_loader, &decode).await {
            Ok(hit) => Ok(hit),
            Err(LoadError::Loader(e)) => Err(match &*e {
                Typed::User(e) => LoadError::Loader(Arc::clone(e)),
                Typed::Encode(c) => LoadError::Codec(c.clone()),
            }),
            Err(LoadError::Timeout(d)) => Err(LoadError::Timeout(d)),
            Err(LoadError::Codec(c)) => Err(LoadError::Codec(c)),
            Err(_) => Err(LoadError::Aborted),
        }
    }

    // ----- bytes API -------------------------------------------------------

    /// The fresh bytes under `key`, with where they came from and when they
    /// were written; `None` on a miss. Never fails.
    pub async fn get_bytes(&self, key: &str) -> Option<Hit<Bytes>> {
        let inner = &self.inner;
        match inner.lookup(key).await {
            Found::Fresh(env, tier) => {
                inner.counters.hit(tier);
                Some(hit_from(&env, tier, inner.now(), false))
            }
            Found::Stale(..) => {
                inner.counters.miss(inner.has_l2());
                None
            }
            Found::Miss { l2_asked } => {
                inner.counters.miss(l2_asked);
                None
            }
        }
    }

    /// Stores bytes under `key`, and evicts the key from every other
    /// instance's L1 (a bus message). Values over the size cap are not stored
    /// (and any older value is deleted); a Redis fault leaves it in L1 only,
    /// or nowhere.
    pub async fn set_bytes(&self, key: &str, value: Bytes, options: &EntryOptions) {
        let inner = &self.inner;
        inner.flights.fence(key);
        let Some(stamps) = inner.current_stamps(&options.tags).await else {
            tracing::debug!(key, "brisk-cache: generations unknown (Redis unreachable), not stored");
            return;
        };
        let now = inner.now();
        let env = Arc::new(inner.envelope(now, options.ttl, inner.grace(options), stamps, value));
        inner.write(key, &env, now, None).await;
        // Other instances may hold the previous value in L1.
        #[cfg(feature = "redis")]
        inner.publish(crate::bus::Event::Key(key.to_owned())).await;
    }

    /// The bytes under `key`, or the loader's. The loader decides with
    /// [`Loaded`] whether its value is stored. See
    /// [`get_or_load`](Self::get_or_load).
    ///
    /// # Errors
    ///
    /// When the loader fails or times out and no stale value can be served.
    pub async fn get_or_load_bytes<E, F, Fut>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
    ) -> Result<Hit<Bytes>, LoadError<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        self.get_or_load_core(key, options, loader, &|b: &Bytes| Ok::<_, CodecError>(b.clone())).await
    }

    /// The HTTP layer's fast path: the entry under `key` (whose
    /// [`L1Changes::hash`](crate::inner::L1Changes::hash) is `hash`) when
    /// this process's L1 holds it valid (same generation and tombstone check
    /// as every read) and fresh, with whether an early refresh is due and
    /// what [`l1_still_fresh`](Self::l1_still_fresh) needs to tell later
    /// that it still is. Counts nothing and never looks at Redis: on `None`
    /// the caller goes through [`get_or_load_bytes`](Self::get_or_load_bytes),
    /// which counts; when the caller answers from the returned hit it calls
    /// [`count_l1_hit`](Self::count_l1_hit).
    #[cfg(feature = "http")]
    pub(crate) async fn l1_fresh(&self, key: &str, hash: u64) -> Option<L1Read> {
        let inner = &self.inner;
        let trust = inner.trusted()?;
        // Noted before the read: a change made after it moves the count.
        let changes = inner.l1_changes.count(hash);
        let (entry, now) = inner.l1_fresh_entry(key).await?;
        let refresh = inner.wants_early_refresh(&entry.env, now);
        Some(L1Read {
            hit: hit_from(&entry.env, crate::hit::Tier::L1, now, false),
            refresh,
            seen: L1Seen { env: Arc::clone(&entry.env), changes, trust, l1_until_ms: entry.l1_until_ms },
        })
    }

    /// Whether the entry [`l1_fresh`](Self::l1_fresh) read for `key` still
    /// answers a read now, without reading L1 again: nothing changed in L1
    /// for the key since (no write, delete, eviction by this crate, flush),
    /// L1 is still trusted, and the entry is fresh, within its L1 lifetime,
    /// valid (generations and tombstones, as every read checks) and not due
    /// for an early refresh. Returns the time of the check.
    #[cfg(feature = "http")]
    pub(crate) fn l1_still_fresh(&self, key: &str, hash: u64, seen: &L1Seen) -> Option<u64> {
        let inner = &self.inner;
        if inner.trusted() != Some(seen.trust) || inner.l1_changes.count(hash) != seen.changes {
            return None;
        }
        let now = inner.now();
        let env = &seen.env;
        if now >= env.fresh_until_ms()
            || now >= seen.l1_until_ms
            || inner.gens.check(key, env.stamps(), now) != crate::gens::Check::Valid
            || inner.wants_early_refresh(env, now)
        {
            return None;
        }
        Some(now)
    }

    /// Counts a read answered from [`l1_fresh`](Self::l1_fresh)'s hit as an
    /// L1 hit, as [`get_or_load_bytes`](Self::get_or_load_bytes) would.
    #[cfg(feature = "http")]
    pub(crate) fn count_l1_hit(&self) {
        self.inner.counters.hit(crate::hit::Tier::L1);
    }

    // ----- invalidation ----------------------------------------------------

    /// Deletes `key` in both tiers and in every instance's L1. A load of the
    /// key in flight in this instance is not written back.
    ///
    /// # Errors
    ///
    /// [`Error::NotPropagated`] when Redis could not be reached: the key is
    /// gone from this instance's L1 only.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let inner = &self.inner;
        bump(&inner.counters.invalidations);
        inner.flights.fence(key);
        inner.l1_invalidate(key).await;
        #[cfg(feature = "redis")]
        if let Some(l2) = &inner.l2 {
            l2.delete(&inner.counters, inner.now(), key).await.map_err(|_| Error::NotPropagated)?;
            inner.publish(crate::bus::Event::Key(key.to_owned())).await;
        }
        Ok(())
    }

    /// Makes every entry tagged `tag` a miss, in every instance: one `INCR`
    /// in Redis and a bus message, whatever the number of entries.
    ///
    /// # Errors
    ///
    /// [`Error::NotPropagated`] when Redis could not be reached.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), Error> {
        let inner = &self.inner;
        bump(&inner.counters.invalidations);
        #[allow(unused_mut)]
        let mut result = Ok(());
        #[cfg(feature = "redis")]
        if let Some(l2) = &inner.l2 {
            match l2.incr(&inner.counters, inner.now(), l2.keys.tag(tag)).await {
                Ok(g) => {
                    inner.gens.apply_tag(tag, g);
                    inner.publish(crate::bus::Event::Tag(tag.to_owned(), g)).await;
                }
                Err(_) => {
                    // The new generation is unknown: trust nothing known.
                    inner.gens.forget();
                    result = Err(Error::NotPropagated);
                }
            }
        }
        if !inner.has_l2() {
            inner.gens.bump_local_tag(tag);
        }
        inner.evict_tag(tag);
        tracing::debug!(tag, "brisk-cache: tag invalidated");
        result
    }

    /// Makes every entry whose key matches `pattern` (see [`KeyPattern`]) a
    /// miss, in every instance, in O(1) Redis commands: a tombstone and a bus
    /// message. The matching keys are then removed from Redis in the
    /// background (`SCAN` + `UNLINK`, see [`remove_matching`](Self::remove_matching)).
    ///
    /// Route-shaped patterns are often better expressed as tags.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPattern`], or [`Error::NotPropagated`] when Redis
    /// could not be reached.
    pub async fn invalidate_pattern(&self, pattern: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let p = KeyPattern::new(pattern)?;
        bump(&inner.counters.invalidations);
        let now = inner.now();
        #[allow(unused_mut)]
        let mut result = Ok(());
        #[cfg(feature = "redis")]
        if let Some(l2) = &inner.l2 {
            match l2.tombstone(&inner.counters, now, &p, inner.cfg.tombstone_ttl_ms()).await {
                Ok((epoch, expires_ms)) => {
                    inner.gens.apply_tombstone(crate::gens::Tombstone { pattern: p.clone(), epoch, expires_ms }, now);
                    inner.publish(crate::bus::Event::Pattern { pattern: pattern.to_owned(), epoch, expires_ms }).await;
                    let cache = self.clone();
                    let owned = p.clone();
                    tokio::spawn(async move {
                        let outdated = move |env: &crate::envelope::Envelope| env.stamps().pattern_epoch < epoch;
                        if let Err(e) = cache.cleanup(&owned, Some(&outdated)).await {
                            tracing::warn!(pattern = owned.as_str(), error = %e, "brisk-cache: clean-up stopped");
                        }
                    });
                }
                Err(_) => {
                    inner.gens.forget();
                    result = Err(Error::NotPropagated);
                }
            }
        }
        if !inner.has_l2() {
            inner.gens.bump_local_pattern(p.clone(), now.saturating_add(inner.cfg.tombstone_ttl_ms()), now);
        }
        inner.evict_matching(p);
        tracing::debug!(pattern, "brisk-cache: pattern invalidated");
        result
    }

    /// Empties the cache for every instance: the namespace generation moves
    /// (O(1)), every L1 is flushed, and the keys under the prefix are removed
    /// from Redis in the background.
    ///
    /// # Errors
    ///
    /// [`Error::NotPropagated`] when Redis could not be reached.
    pub async fn clear(&self) -> Result<(), Error> {
        let inner = &self.inner;
        bump(&inner.counters.invalidations);
        #[allow(unused_mut)]
        let mut result = Ok(());
        #[cfg(feature = "redis")]
        if let Some(l2) = &inner.l2 {
            match l2.incr(&inner.counters, inner.now(), l2.keys.namespace()).await {
                Ok(g) => {
                    inner.gens.apply_namespace(g);
                    inner.publish(crate::bus::Event::Namespace(g)).await;
                    let cache = self.clone();
                    tokio::spawn(async move {
                        let outdated = move |env: &crate::envelope::Envelope| env.stamps().namespace < g;
                        let everything = KeyPattern::new("*").expect("`*` is a valid pattern");
                        if let Err(e) = cache.cleanup(&everything, Some(&outdated)).await {
                            tracing::warn!(error = %e, "brisk-cache: clean-up after clear stopped");
                        }
                    });
                }
                Err(_) => {
                    inner.gens.forget();
                    result = Err(Error::NotPropagated);
                }
            }
        }
        if !inner.has_l2() {
            inner.gens.bump_local_namespace();
        }
        inner.flights.fence_matching(|_| true);
        inner.l1_invalidate_all();
        result
    }

    /// Removes from Redis, now, every value whose key matches `pattern`:
    /// `SCAN … MATCH … COUNT 250` on every master and `UNLINK` per batch,
    /// so Redis is never blocked for long. `KEYS` is never sent. Returns the
    /// number of keys removed (0 without Redis).
    ///
    /// This is the physical clean-up; [`invalidate_pattern`](Self::invalidate_pattern)
    /// is what makes the entries misses, and starts a clean-up in the
    /// background that removes only the entries written before it (values
    /// are read with `MGET` per batch), so fresh writes survive it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPattern`], or [`Error::Unavailable`] when Redis
    /// failed part-way (what was removed stays removed).
    pub async fn remove_matching(&self, pattern: &str) -> Result<u64, Error> {
        let p = KeyPattern::new(pattern)?;
        self.cleanup(&p, None).await
    }

    /// `SCAN` + `UNLINK` of the keys matching `pattern` (and, with
    /// `outdated`, only those whose envelope it selects, or that are not
    /// envelopes at all).
    async fn cleanup(
        &self,
        pattern: &KeyPattern,
        outdated: Option<&(dyn Fn(&crate::envelope::Envelope) -> bool + Send + Sync)>,
    ) -> Result<u64, Error> {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.inner.l2 {
            let scan = pattern.redis_scan_pattern(&format!("{}:", l2.keys.prefix()));
            let filter = |k: &str| pattern.matches(k);
            return l2
                .cleanup(&self.inner.counters, &scan, &filter, outdated)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()));
        }
        let _ = (pattern, outdated);
        Ok(0)
    }

    // ----- observation -----------------------------------------------------

    /// Counters and gauges.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }

    /// Waits until the invalidation bus is subscribed (at once without
    /// Redis). Until then, L1 is bypassed: reads go to Redis.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.inner.bus_state_rx();
        let _ = rx.wait_for(|up| *up).await;
    }

    /// Whether L1 is in use (the bus is subscribed, or there is no Redis).
    pub fn is_ready(&self) -> bool {
        self.inner.trusted().is_some()
    }

    /// Runs moka's pending maintenance (evictions, invalidation closures),
    /// so that [`stats`](Self::stats) counts are exact. Mostly for tests.
    pub async fn run_pending_tasks(&self) {
        self.inner.l1.run_pending_tasks().await;
    }

    // ----- the load path ---------------------------------------------------

    async fn get_or_load_core<V, E, F, Fut>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
        decode: &(dyn Fn(&Bytes) -> Result<V, CodecError> + Send + Sync),
    ) -> Result<Hit<V>, LoadError<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        let inner = &self.inner;
        let mut stale: Option<Hit<V>> = None;
        let l2_asked = match inner.lookup(key).await {
            Found::Fresh(env, tier) => match decode(env.payload()) {
                Ok(v) => {
                    inner.counters.hit(tier);
                    let now = inner.now();
                    let refresh = inner.wants_early_refresh(&env, now);
                    let hit = hit_from(&env, tier, now, false).map(|_| v);
                    if refresh {
                        self.spawn_early_refresh(key, options, loader);
                    }
                    return Ok(hit);
                }
                Err(_) => {
                    inner.discard_corrupt(key).await;
                    true
                }
            },
            Found::Stale(env, tier) => {
                match decode(env.payload()) {
                    Ok(v) => stale = Some(hit_from(&env, tier, inner.now(), true).map(|_| v)),
                    Err(_) => inner.discard_corrupt(key).await,
                }
                inner.has_l2()
            }
            Found::Miss { l2_asked } => l2_asked,
        };
        inner.counters.miss(l2_asked);

        let key_arc: Arc<str> = Arc::from(key);
        let (flight, leader) = inner.flights.join_or_lead(&key_arc);
        let mut rx = flight.subscribe();
        let mut loader = Some(loader);
        if leader {
            // A load of the key that finished between this call's look-up and
            // its joining the flights has filled L1 already: answer with that
            // value (and to any caller that joined this flight meanwhile)
            // rather than load a second time.
            if inner.trusted().is_some()
                && let Some((entry, now)) = inner.l1_fresh_entry(key).await
            {
                let hit = hit_from(&entry.env, crate::hit::Tier::L1, now, false);
                inner.flights.finish(key, &flight);
                flight.complete(Outcome::Value(hit.clone()));
                return decode_hit(hit, decode);
            }
            if let Some(l) = loader.take() {
                tokio::spawn(Arc::clone(inner).load_task(key_arc, options.clone(), l, flight));
            }
        } else {
            drop(flight);
        }
        let waited = {
            let wait = async { rx.wait_for(Option::is_some).await.map(|o| o.clone()) };
            match (&stale, inner.cfg.soft_timeout) {
                (Some(_), Some(soft)) => match tokio::time::timeout(soft, wait).await {
                    Ok(r) => r,
                    Err(_) => return Ok(self.serve_stale(stale, "soft timeout")),
                },
                _ => wait.await,
            }
        };
        let outcome = match waited {
            Ok(Some(o)) => o,
            _ => {
                if stale.is_some() {
                    return Ok(self.serve_stale(stale, "load aborted"));
                }
                return Err(LoadError::Aborted);
            }
        };
        match outcome {
            Outcome::Value(hit) => decode_hit(hit, decode),
            Outcome::Pass(hit) if loader.is_none() => decode_hit(hit, decode),
            Outcome::Pass(_) => match loader.take() {
                Some(l) => decode_hit(inner.load_direct(l).await?, decode),
                None => Err(LoadError::Aborted),
            },
            Outcome::Failed(err) => {
                if stale.is_some() {
                    return Ok(self.serve_stale(stale, "loader failed"));
                }
                match err.downcast::<E>() {
                    Ok(e) => Err(LoadError::Loader(e)),
                    // Another call for this key with another error type led
                    // the load: run our own loader to get our own error.
                    Err(_) => match loader.take() {
                        Some(l) => decode_hit(inner.load_direct(l).await?, decode),
                        None => Err(LoadError::Aborted),
                    },
                }
            }
            Outcome::Timeout(d) => {
                if stale.is_some() {
                    return Ok(self.serve_stale(stale, "hard timeout"));
                }
                Err(LoadError::Timeout(d))
            }
        }
    }

    fn serve_stale<V>(&self, stale: Option<Hit<V>>, why: &'static str) -> Hit<V> {
        bump(&self.inner.counters.stale_served);
        tracing::debug!(why, "brisk-cache: serving stale");
        // Callers check `is_some` first.
        stale.expect("a stale value is present")
    }

    fn spawn_early_refresh<E, F, Fut>(&self, key: &str, options: &EntryOptions, loader: F)
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        let key_arc: Arc<str> = Arc::from(key);
        if let Some(flight) = self.inner.flights.lead_if_idle(&key_arc) {
            bump(&self.inner.counters.early_refreshes);
            tokio::spawn(Arc::clone(&self.inner).load_task(key_arc, options.clone(), loader, flight));
        }
    }
}

/// An entry [`TieredCache::l1_fresh`] found.
#[cfg(feature = "http")]
pub(crate) struct L1Read {
    pub(crate) hit: Hit<Bytes>,
    pub(crate) refresh: bool,
    pub(crate) seen: L1Seen,
}

/// What [`TieredCache::l1_still_fresh`] checks an entry read from L1 against.
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub(crate) struct L1Seen {
    pub(crate) env: Arc<crate::envelope::Envelope>,
    changes: u64,
    trust: u64,
    l1_until_ms: u64,
}

/// The typed loader's error: the user's, or the encoding's.
enum Typed<E> {
    User(Arc<E>),
    Encode(CodecError),
}

fn decode_hit<V, E>(
    hit: Hit<Bytes>,
    decode: &(dyn Fn(&Bytes) -> Result<V, CodecError> + Send + Sync),
) -> Result<Hit<V>, LoadError<E>> {
    match decode(hit.value()) {
        Ok(v) => Ok(hit.map(|_| v)),
        Err(e) => Err(LoadError::Codec(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn l1_keeps_entries_at_most_the_l1_ttl_cap_jittered() {
        let cache = TieredCache::builder().l1_max_ttl(Duration::from_secs(300)).jitter(0.1).build().unwrap();
        cache.set("long", &1u8, Duration::from_secs(3600)).await.unwrap();
        cache.set("short", &1u8, Duration::from_secs(10)).await.unwrap();
        let long = cache.inner.l1.get("long").await.unwrap();
        assert!(long.l1_ttl <= Duration::from_secs(300) && long.l1_ttl >= Duration::from_secs(270), "{long:?}");
        let short = cache.inner.l1.get("short").await.unwrap();
        assert!(short.l1_ttl <= Duration::from_secs(10), "{short:?}");
    }
}
