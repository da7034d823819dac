//! The machinery shared by every clone of a cache: lookups through both
//! tiers, writes, the load task, fencing, the lease and the bus handlers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache as MokaCache;

use crate::builder::Config;
use crate::clock::{Clock, ms};
use crate::envelope::{Envelope, Stamps};
use crate::error::LoadError;
use crate::flight::{Flight, FlightGuard, Flights, Outcome};
use crate::gens::{Check, Generations};
use crate::hit::{EntryOptions, Hit, Loaded, Tier};
use crate::pattern::KeyPattern;
use crate::stats::{CacheStats, Counters, bump};

/// An L1 entry.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) env: Arc<Envelope>,
    pub(crate) l1_ttl: Duration,
    /// When L1 drops the entry (`l1_ttl` after it was inserted), by the
    /// cache's clock.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) l1_until_ms: u64,
}

pub(crate) type L1 = MokaCache<Arc<str>, Arc<Entry>>;

/// Counts the changes of L1: one counter per stripe of keys (a key's change
/// moves its stripe's) and one for changes of many keys at once. A reader
/// that notes the count before reading L1 knows, by comparing it later, that
/// nothing in L1 changed for the key since: what the HTTP layer needs to
/// answer a hit again without reading L1 again.
#[cfg(feature = "http")]
pub(crate) struct L1Changes {
    stripes: Box<[AtomicU64]>,
    many: AtomicU64,
}

#[cfg(feature = "http")]
impl L1Changes {
    const STRIPES: usize = 256;

    fn new() -> Self {
        Self { stripes: (0..Self::STRIPES).map(|_| AtomicU64::new(0)).collect(), many: AtomicU64::new(0) }
    }

    /// The hash a key's stripe is chosen by.
    pub(crate) fn hash(key: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(key.as_bytes())
    }

    /// The count for the key of `hash`: it moves whenever that key, or many
    /// keys at once, change in L1.
    pub(crate) fn count(&self, hash: u64) -> u64 {
        let stripe = self.stripes[(hash as usize) % Self::STRIPES].load(Ordering::Acquire);
        // Both only grow, so the sum moves whenever either does.
        stripe.wrapping_add(self.many.load(Ordering::Acquire))
    }

    fn key(&self, key: &str) {
        self.stripes[(Self::hash(key) as usize) % Self::STRIPES].fetch_add(1, Ordering::AcqRel);
    }

    fn many(&self) {
        self.many.fetch_add(1, Ordering::AcqRel);
    }
}

/// What a lookup found.
pub(crate) enum Found {
    Fresh(Arc<Envelope>, Tier),
    Stale(Arc<Envelope>, Tier),
    Miss { l2_asked: bool },
}

/// The shared state behind every clone of a [`TieredCache`](crate::TieredCache).
pub(crate) struct Inner {
    pub(crate) cfg: Config,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) l1: L1,
    pub(crate) gens: Generations,
    pub(crate) flights: Flights,
    pub(crate) counters: Arc<Counters>,
    /// L1 is used only while this is true: without Redis always; with Redis
    /// while the invalidation bus is subscribed.
    bus_connected: AtomicBool,
    /// Moves on every flush, so an L1 fill validated before a flush is undone.
    trust_epoch: AtomicU64,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    bus_seq: AtomicU64,
    bus_state: tokio::sync::watch::Sender<bool>,
    pub(crate) instance: u64,
    #[cfg(feature = "redis")]
    pub(crate) l2: Option<crate::l2::L2>,
    /// Moved after every change of L1 (never before it).
    #[cfg(feature = "http")]
    pub(crate) l1_changes: L1Changes,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache").field("prefix", &self.cfg.prefix).field("instance", &self.instance).finish()
    }
}

pub(crate) fn hit_from(env: &Envelope, tier: Tier, now: u64, stale: bool) -> Hit<Bytes> {
    Hit {
        tier,
        stale,
        written_at_ms: env.written_at_ms(),
        fresh_until_ms: env.fresh_until_ms(),
        read_at_ms: now,
        value: env.payload().clone(),
    }
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: Config,
        clock: Arc<dyn Clock>,
        l1: L1,
        counters: Arc<Counters>,
        #[cfg(feature = "redis")] l2: Option<crate::l2::L2>,
    ) -> Self {
        #[cfg(feature = "redis")]
        let shared = l2.is_some();
        #[cfg(not(feature = "redis"))]
        let shared = false;
        Self {
            cfg,
            clock,
            l1,
            gens: Generations::new(!shared),
            flights: Flights::default(),
            counters,
            bus_connected: AtomicBool::new(!shared),
            trust_epoch: AtomicU64::new(0),
            bus_seq: AtomicU64::new(0),
            bus_state: tokio::sync::watch::channel(!shared).0,
            instance: fastrand::u64(..),
            #[cfg(feature = "redis")]
            l2,
            #[cfg(feature = "http")]
            l1_changes: L1Changes::new(),
        }
    }

    /// Removes `key` from L1.
    pub(crate) async fn l1_invalidate(&self, key: &str) {
        self.l1.invalidate(key).await;
        self.l1_key_changed(key);
    }

    /// Empties L1.
    pub(crate) fn l1_invalidate_all(&self) {
        self.l1.invalidate_all();
        self.l1_many_changed();
    }

    fn l1_invalidate_if(&self, f: impl Fn(&Arc<str>, &Arc<Entry>) -> bool + Send + Sync + 'static) {
        let _ = self.l1.invalidate_entries_if(f);
        self.l1_many_changed();
    }

    fn l1_key_changed(&self, key: &str) {
        #[cfg(feature = "http")]
        self.l1_changes.key(key);
        #[cfg(not(feature = "http"))]
        let _ = key;
    }

    fn l1_many_changed(&self) {
        #[cfg(feature = "http")]
        self.l1_changes.many();
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn has_l2(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.l2.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// `Some(epoch)` while L1 may be used.
    pub(crate) fn trusted(&self) -> Option<u64> {
        let epoch = self.trust_epoch.load(Ordering::SeqCst);
        self.bus_connected.load(Ordering::SeqCst).then_some(epoch)
    }

    pub(crate) fn bus_state_rx(&self) -> tokio::sync::watch::Receiver<bool> {
        self.bus_state.subscribe()
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let mut s = CacheStats::from_counters(&self.counters);
        s.entries = self.l1.entry_count();
        s.bytes = self.l1.weighted_size();
        s.bus_connected = self.bus_connected.load(Ordering::SeqCst);
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2 {
            s.breaker = l2.breaker.state();
        }
        s
    }

    pub(crate) fn grace(&self, options: &EntryOptions) -> Duration {
        options.stale_grace.unwrap_or(self.cfg.stale_grace).min(self.cfg.l2_max_ttl)
    }

    pub(crate) fn jittered(&self, d: Duration) -> Duration {
        if self.cfg.jitter <= 0.0 {
            return d;
        }
        d.mul_f64(1.0 - self.cfg.jitter * fastrand::f64())
    }

    /// An envelope written now: TTL capped and jittered down.
    pub(crate) fn envelope(
        &self,
        now: u64,
        ttl: Duration,
        grace: Duration,
        stamps: Stamps,
        payload: Bytes,
    ) -> Envelope {
        let fresh = ms(self.jittered(ttl.min(self.cfg.l2_max_ttl)));
        let fresh_until = now.saturating_add(fresh);
        Envelope::new(now, fresh_until, fresh_until.saturating_add(ms(grace)), stamps, payload)
    }

    pub(crate) fn wants_early_refresh(&self, env: &Envelope, now: u64) -> bool {
        let Some(ratio) = self.cfg.early_refresh else { return false };
        let life = env.fresh_until_ms().saturating_sub(env.written_at_ms());
        let at = env.fresh_until_ms().saturating_sub((life as f64 * ratio) as u64);
        now >= at
    }

    /// The stamps a write made now carries; `None` when the generations
    /// cannot be known (Redis unreachable).
    pub(crate) async fn current_stamps(&self, tags: &[String]) -> Option<Stamps> {
        #[cfg(feature = "redis")]
        if self.l2.is_some() && (self.trusted().is_none() || self.gens.needs_sync(tags)) {
            self.sync(tags).await;
        }
        self.gens.stamps_for(tags)
    }

    /// Re-reads generations from Redis; false when Redis did not answer.
    #[cfg(feature = "redis")]
    pub(crate) async fn sync(&self, tags: &[String]) -> bool {
        let Some(l2) = &self.l2 else { return true };
        let now = self.now();
        match l2.sync(&self.counters, now, tags).await {
            Ok(s) => {
                self.gens.merge_sync(s.namespace, s.pattern_epoch, &s.tags, s.tombstones, now);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether an entry written under `stamps` for `key` is still valid,
    /// asking Redis when this process cannot tell (or, with `authoritative`,
    /// always). `None`: nobody could tell.
    pub(crate) async fn valid(&self, key: &str, stamps: &Stamps, authoritative: bool) -> Option<bool> {
        let now = self.now();
        #[cfg(feature = "redis")]
        if self.l2.is_some() {
            let tags: Vec<String> = stamps.tags.iter().map(|(t, _)| t.clone()).collect();
            let mut synced = false;
            if authoritative || self.trusted().is_none() || self.gens.needs_sync(&tags) {
                if !self.sync(&tags).await {
                    return None;
                }
                synced = true;
            }
            return match self.gens.check(key, stamps, now) {
                Check::Valid => Some(true),
                Check::Invalid => Some(false),
                Check::Unknown if synced => None,
                Check::Unknown => {
                    if !self.sync(&tags).await {
                        return None;
                    }
                    Some(self.gens.check(key, stamps, now) == Check::Valid)
                }
            };
        }
        let _ = authoritative;
        Some(self.gens.check(key, stamps, now) == Check::Valid)
    }

    /// The entry under `key` when L1 holds it fresh and valid (generations
    /// and tombstones), with the time it was found so. Whether L1 may be
    /// used at all ([`trusted`](Self::trusted)) is the caller's to check.
    pub(crate) async fn l1_fresh_entry(&self, key: &str) -> Option<(Arc<Entry>, u64)> {
        let e = self.l1.get(key).await?;
        let now = self.now();
        (now < e.env.fresh_until_ms() && self.gens.check(key, e.env.stamps(), now) == Check::Valid).then_some((e, now))
    }

    pub(crate) async fn lookup(&self, key: &str) -> Found {
        let now = self.now();
        let mut stale: Option<(Arc<Envelope>, Tier)> = None;
        if self.trusted().is_some()
            && let Some(e) = self.l1.get(key).await
        {
            if self.gens.check(key, e.env.stamps(), now) == Check::Valid {
                if now < e.env.fresh_until_ms() {
                    return Found::Fresh(Arc::clone(&e.env), Tier::L1);
                }
                if now < e.env.stale_until_ms() {
                    stale = Some((Arc::clone(&e.env), Tier::L1));
                }
            } else {
                self.l1_invalidate(key).await;
            }
        }
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2 {
            if let Ok(Some(bytes)) = l2.get(&self.counters, now, key).await {
                match Envelope::decode(bytes) {
                    Err(e) => {
                        tracing::debug!(key, error = %e, "brisk-cache: foreign or corrupt value in Redis, deleted");
                        self.discard_corrupt(key).await;
                    }
                    Ok(env) => {
                        let env = Arc::new(env);
                        if self.valid(key, env.stamps(), false).await == Some(true) {
                            if now < env.fresh_until_ms() {
                                self.l1_insert(key, &env, now).await;
                                return Found::Fresh(env, Tier::L2);
                            }
                            if now < env.stale_until_ms()
                                && stale.as_ref().is_none_or(|(s, _)| s.written_at_ms() < env.written_at_ms())
                            {
                                stale = Some((env, Tier::L2));
                            }
                        }
                    }
                }
            }
            return match stale {
                Some((env, tier)) => Found::Stale(env, tier),
                None => Found::Miss { l2_asked: true },
            };
        }
        match stale {
            Some((env, tier)) => Found::Stale(env, tier),
            None => Found::Miss { l2_asked: false },
        }
    }

    pub(crate) async fn discard_corrupt(&self, key: &str) {
        bump(&self.counters.corrupt);
        self.l1_invalidate(key).await;
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2 {
            let _ = l2.delete(&self.counters, self.now(), key).await;
        }
    }

    pub(crate) async fn l1_insert(&self, key: &str, env: &Arc<Envelope>, now: u64) {
        let Some(epoch) = self.trusted() else { return };
        if env.payload().len() > self.cfg.l1_max_entry_bytes {
            return;
        }
        let left = Duration::from_millis(env.stale_until_ms().saturating_sub(now));
        let l1_ttl = left.min(self.jittered(self.cfg.l1_max_ttl));
        if l1_ttl.is_zero() {
            return;
        }
        let l1_until_ms = now.saturating_add(ms(l1_ttl));
        let key: Arc<str> = Arc::from(key);
        self.l1.insert(Arc::clone(&key), Arc::new(Entry { env: Arc::clone(env), l1_ttl, l1_until_ms })).await;
        self.l1_key_changed(&key);
        if self.trust_epoch.load(Ordering::SeqCst) != epoch {
            // A flush happened while this fill was validated and inserted.
            self.l1_invalidate(&key).await;
        }
    }

    /// Writes to both tiers (under the lease when one is held).
    pub(crate) async fn write(&self, key: &str, env: &Arc<Envelope>, now: u64, lease: Option<&Lease>) {
        if env.payload().len() > self.cfg.max_entry_bytes {
            bump(&self.counters.oversized);
            tracing::debug!(key, size = env.payload().len(), "brisk-cache: value over the size cap, not stored");
            self.l1_invalidate(key).await;
            #[cfg(feature = "redis")]
            if let Some(l2) = &self.l2 {
                let _ = l2.delete(&self.counters, now, key).await;
            }
            return;
        }
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2 {
            let encoded = env.encode();
            let px = env.stale_until_ms().saturating_sub(now);
            match lease {
                Some(lease) => {
                    let _ = l2
                        .fill_with_lease(
                            &self.counters,
                            now,
                            &lease.value_key,
                            &lease.lease_key,
                            &lease.token,
                            &encoded,
                            px,
                        )
                        .await;
                }
                None => {
                    let _ = l2.set(&self.counters, now, key, &encoded, px).await;
                }
            }
        }
        let _ = lease;
        self.l1_insert(key, env, now).await;
    }

    /// Runs a loader with the hard timeout, outside any flight, storing nothing.
    pub(crate) async fn load_direct<E, F, Fut>(&self, loader: F) -> Result<Hit<Bytes>, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded, E>>,
    {
        match tokio::time::timeout(self.cfg.hard_timeout, loader()).await {
            Err(_) => {
                bump(&self.counters.load_timeouts);
                Err(LoadError::Timeout(self.cfg.hard_timeout))
            }
            Ok(Err(e)) => {
                bump(&self.counters.load_errors);
                Err(LoadError::Loader(Arc::new(e)))
            }
            Ok(Ok(loaded)) => {
                bump(&self.counters.loads);
                let now = self.now();
                let env = self.envelope(
                    now,
                    loaded.ttl.unwrap_or(Duration::ZERO),
                    Duration::ZERO,
                    Stamps::default(),
                    loaded.value,
                );
                Ok(hit_from(&env, Tier::Loader, now, false))
            }
        }
    }

    pub(crate) async fn load_task<E, F, Fut>(
        self: Arc<Self>,
        key: Arc<str>,
        options: EntryOptions,
        loader: F,
        flight: Arc<Flight>,
    ) where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        let guard = FlightGuard { flights: &self.flights, key: Arc::clone(&key), flight: Arc::clone(&flight) };
        let outcome = self.load_and_fill(&key, &options, loader, &flight).await;
        // Unregister first: a caller arriving now finds the value in L1.
        drop(guard);
        flight.complete(outcome);
    }

    pub(crate) async fn load_and_fill<E, F, Fut>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
        flight: &Flight,
    ) -> Outcome
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded, E>> + Send + 'static,
    {
        let start = self.current_stamps(&options.tags).await;
        #[allow(unused_mut)]
        let mut lease: Option<Lease> = None;
        #[cfg(feature = "redis")]
        if start.is_some() {
            match self.lease_phase(key).await {
                LeasePhase::Found(hit) => return Outcome::Value(hit),
                LeasePhase::Acquired(l) => lease = Some(l),
                LeasePhase::Proceed => {}
            }
        }
        let hard = self.cfg.hard_timeout;
        let outcome = match tokio::time::timeout(hard, loader()).await {
            Err(_) => {
                bump(&self.counters.load_timeouts);
                tracing::warn!(key, timeout = ?hard, "brisk-cache: loader hit the hard timeout");
                Outcome::Timeout(hard)
            }
            Ok(Err(e)) => {
                bump(&self.counters.load_errors);
                Outcome::Failed(Arc::new(e))
            }
            Ok(Ok(loaded)) => {
                bump(&self.counters.loads);
                let now = self.now();
                let ttl = loaded.ttl.unwrap_or(options.ttl);
                let store = loaded.store;
                let stamps = start.clone().unwrap_or_default();
                let env = Arc::new(self.envelope(now, ttl, self.grace(options), stamps.clone(), loaded.value));
                let hit = hit_from(&env, Tier::Loader, now, false);
                if !store {
                    Outcome::Pass(hit)
                } else if start.is_none() {
                    Outcome::Value(hit)
                } else if flight.fenced.load(Ordering::SeqCst) {
                    bump(&self.counters.fenced);
                    tracing::debug!(key, "brisk-cache: key changed during the load, not written back");
                    Outcome::Value(hit)
                } else {
                    // Fencing: the generations read when the load started
                    // must still be current (asked of Redis, not assumed).
                    match self.valid(key, &stamps, true).await {
                        Some(true) => {
                            self.write(key, &env, now, lease.as_ref()).await;
                            lease = None;
                        }
                        Some(false) => {
                            bump(&self.counters.fenced);
                            tracing::debug!(key, "brisk-cache: invalidated during the load, not written back");
                        }
                        None => {}
                    }
                    Outcome::Value(hit)
                }
            }
        };
        #[cfg(feature = "redis")]
        if let (Some(lease), Some(l2)) = (lease, &self.l2) {
            let _ = l2.release(&self.counters, self.now(), &lease.lease_key, &lease.token).await;
        }
        #[cfg(not(feature = "redis"))]
        let _ = lease;
        outcome
    }

    pub(crate) fn evict_tag(&self, tag: &str) {
        let owned = tag.to_owned();
        self.l1_invalidate_if(move |_, e| e.env.stamps().tags.iter().any(|(t, _)| *t == owned));
    }

    pub(crate) fn evict_matching(&self, pattern: KeyPattern) {
        self.flights.fence_matching(|k| pattern.matches(k));
        self.l1_invalidate_if(move |k, _| pattern.matches(k));
    }

    /// Drops everything this process knows: L1 and generations.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn flush_local(&self, why: &'static str) {
        self.trust_epoch.fetch_add(1, Ordering::SeqCst);
        self.gens.forget();
        self.l1_invalidate_all();
        self.flights.fence_matching(|_| true);
        bump(&self.counters.bus_flushes);
        tracing::warn!(why, "brisk-cache: L1 flushed");
    }
}

/// A fill lease held in Redis.
#[derive(Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Lease {
    value_key: String,
    lease_key: String,
    token: String,
}

#[cfg(feature = "redis")]
enum LeasePhase {
    Found(Hit<Bytes>),
    Acquired(Lease),
    Proceed,
}

#[cfg(feature = "redis")]
impl Inner {
    pub(crate) fn bus_state_tx(&self) -> &tokio::sync::watch::Sender<bool> {
        &self.bus_state
    }

    pub(crate) fn bus_up(&self) {
        self.trust_epoch.fetch_add(1, Ordering::SeqCst);
        self.gens.forget();
        self.l1_invalidate_all();
        self.bus_connected.store(true, Ordering::SeqCst);
        self.bus_state_tx().send_replace(true);
        tracing::debug!("brisk-cache: invalidation bus subscribed");
    }

    pub(crate) fn bus_down(&self) {
        self.bus_connected.store(false, Ordering::SeqCst);
        self.bus_state_tx().send_replace(false);
        self.flush_local("the invalidation bus disconnected");
    }

    pub(crate) async fn publish(&self, event: crate::bus::Event) {
        let Some(l2) = &self.l2 else { return };
        let seq = self.bus_seq.fetch_add(1, Ordering::SeqCst);
        let msg = crate::bus::Message { origin: self.instance, seq, event };
        if l2.publish(&self.counters, self.now(), msg.encode()).await.is_err() {
            // Receivers will see the gap in sequence numbers and flush.
            tracing::warn!("brisk-cache: invalidation not published; other instances will flush on the gap");
        }
    }

    pub(crate) async fn apply_remote(&self, event: crate::bus::Event) {
        use crate::bus::Event;
        match event {
            Event::Key(key) => {
                self.flights.fence(&key);
                self.l1_invalidate(&key).await;
            }
            Event::Tag(tag, g) => {
                self.gens.apply_tag(&tag, g);
                self.evict_tag(&tag);
            }
            Event::Namespace(g) => {
                self.gens.apply_namespace(g);
                self.flights.fence_matching(|_| true);
                self.l1_invalidate_all();
            }
            Event::Pattern { pattern, epoch, expires_ms } => match KeyPattern::new(&pattern) {
                Ok(p) => {
                    self.gens
                        .apply_tombstone(crate::gens::Tombstone { pattern: p.clone(), epoch, expires_ms }, self.now());
                    self.evict_matching(p);
                }
                Err(_) => self.flush_local("an unreadable pattern invalidation"),
            },
        }
        // Counted once applied: whoever reads the counter sees the effect.
        bump(&self.counters.bus_messages);
    }

    /// Takes the distributed fill lease, or waits for the instance that has
    /// it to write the value.
    async fn lease_phase(&self, key: &str) -> LeasePhase {
        let (Some(cfg), Some(l2)) = (self.cfg.lease, &self.l2) else { return LeasePhase::Proceed };
        let value_key = l2.keys.value(key);
        let Some(lease_key) = l2.keys.lease(&value_key) else { return LeasePhase::Proceed };
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let deadline = tokio::time::Instant::now() + cfg.wait;
        let mut ignore_value = false;
        let mut waited = false;
        loop {
            let now = self.now();
            match l2.acquire(&self.counters, now, &value_key, &lease_key, &token, ms(cfg.ttl), ignore_value).await {
                Err(_) => return LeasePhase::Proceed,
                Ok(crate::l2::Acquire::Acquired) => {
                    bump(&self.counters.lease_acquired);
                    return LeasePhase::Acquired(Lease { value_key, lease_key, token });
                }
                Ok(crate::l2::Acquire::Value(bytes)) => {
                    if let Some(hit) = self.accept_l2(key, bytes).await {
                        return LeasePhase::Found(hit);
                    }
                    ignore_value = true;
                    continue;
                }
                Ok(crate::l2::Acquire::Held) => {
                    if !waited {
                        bump(&self.counters.lease_waits);
                        waited = true;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        tracing::debug!(key, "brisk-cache: lease holder too slow, loading here");
                        return LeasePhase::Proceed;
                    }
                    tokio::time::sleep(cfg.poll).await;
                    if let Ok(Some(bytes)) = l2.get(&self.counters, self.now(), key).await
                        && let Some(hit) = self.accept_l2(key, bytes).await
                    {
                        return LeasePhase::Found(hit);
                    }
                }
            }
        }
    }

    /// A value read from Redis during the lease phase: fresh and valid, or
    /// nothing.
    async fn accept_l2(&self, key: &str, bytes: Bytes) -> Option<Hit<Bytes>> {
        let Ok(env) = Envelope::decode(bytes) else {
            self.discard_corrupt(key).await;
            return None;
        };
        let env = Arc::new(env);
        let now = self.now();
        if now >= env.fresh_until_ms() || self.valid(key, env.stamps(), false).await != Some(true) {
            return None;
        }
        self.l1_insert(key, &env, now).await;
        Some(hit_from(&env, Tier::L2, now, false))
    }
}
