//! A bounded local cache of keys known to be blocked, so a blocked client
//! costs no store round trip until its retry time.
//!
//! A small sharded map rather than a cache crate: entries carry their own
//! deadline, so expiry is a comparison on read, and when a shard is full the
//! entry nearest its deadline among a few samples is evicted (Redis's
//! approximated eviction). Memory stays at most `capacity` entries.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;

use crate::decision::{Decision, Source};

const SHARDS: usize = 16;
const EVICTION_SAMPLES: usize = 8;

type Shard = Mutex<HashMap<Box<str>, Blocked>>;

#[derive(Debug)]
pub(crate) struct BlockedKeys {
    shards: Box<[Shard]>,
    per_shard: usize,
    hasher: RandomState,
}

#[derive(Debug)]
struct Blocked {
    decided_at: u64,
    until: u64,
    cost: u64,
    decision: Decision,
}

impl BlockedKeys {
    /// `capacity` must be at least 1.
    pub(crate) fn new(capacity: usize) -> Self {
        BlockedKeys {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The cached refusal for a request of `cost` on `key`, aged to `now`.
    pub(crate) fn get(&self, key: &str, cost: u64, now: u64) -> Option<Decision> {
        let mut shard = self.shard(key).lock();
        let entry = shard.get(key)?;
        if entry.until <= now {
            shard.remove(key);
            return None;
        }
        // A denial of cost c says nothing about a smaller cost.
        if cost < entry.cost {
            return None;
        }
        let elapsed = now.saturating_sub(entry.decided_at);
        let mut decision = entry.decision.clone();
        for p in decision.policies.iter_mut() {
            p.age(elapsed);
            p.source = Source::BlockedCache;
        }
        Some(decision)
    }

    /// Remembers a refusal until its retry time.
    pub(crate) fn insert(&self, key: &str, cost: u64, now: u64, decision: &Decision) {
        let Some(retry) = decision.retry_after() else { return };
        let until = now.saturating_add(retry.as_micros() as u64);
        if until <= now {
            return;
        }
        let mut shard = self.shard(key).lock();
        if shard.len() >= self.per_shard && !shard.contains_key(key) {
            shard.retain(|_, b| b.until > now);
            if shard.len() >= self.per_shard {
                let victim = shard.iter().take(EVICTION_SAMPLES).min_by_key(|(_, b)| b.until).map(|(k, _)| k.clone());
                if let Some(victim) = victim {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(key.into(), Blocked { decided_at: now, until, cost, decision: decision.clone() });
    }

    pub(crate) fn remove(&self, key: &str) {
        self.shard(key).lock().remove(key);
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
