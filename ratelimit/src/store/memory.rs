use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Operation, Store, StoreError, StoreFuture, StoreRequest, sealed};
use crate::algorithm::{self, Outcome, Params, State};
use crate::clock::{Clock, SystemClock};

/// Counters in process memory: for a single instance, tests, and the
/// fallback when Redis fails. Runs the same algorithms as the Redis script.
///
/// Sharded maps behind short mutexes, each key hashed once (SipHash with a
/// random key, so clients cannot aim collisions); a key's state is forgotten
/// once its quota is whole again, swept incrementally (amortised O(1) per
/// call). Clones share the counters.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

/// The map is keyed by the key's 64-bit keyed hash, computed once per call;
/// the rare keys sharing a hash share a bucket and are told apart by name.
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, Vec<Entry>, BuildHasherDefault<HashIsKey>>,
    ops_since_sweep: usize,
}

/// Feeds an already-hashed `u64` through unchanged.
#[derive(Debug, Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug)]
struct Entry {
    key: Box<str>,
    states: Vec<(Arc<str>, State)>,
    expires_at: u64,
}

impl MemoryStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new())
    }

    /// A store on the given clock.
    pub fn with_clock(clock: impl Clock) -> Self {
        Self::with_shared_clock(Arc::new(clock))
    }

    pub(crate) fn with_shared_clock(clock: Arc<dyn Clock>) -> Self {
        let shards = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4).next_power_of_two() * 8;
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
                hasher: RandomState::new(),
                clock,
            }),
        }
    }

    /// Keys currently holding state (approximate: expired keys not yet swept count).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().map.values().map(Vec::len).sum::<usize>()).sum()
    }

    /// Whether no key holds state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn decide(&self, request: StoreRequest<'_>) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(request.policies.len());
        self.decide_into(request, &mut out);
        out
    }

    fn decide_into(&self, request: StoreRequest<'_>, outcomes: &mut Vec<Outcome>) {
        outcomes.clear();
        let now = self.inner.clock.now_micros();
        let hash = self.inner.hasher.hash_one(request.key);
        // The high bits pick the shard; the map uses the whole hash.
        let shard_index = (hash >> 40) as usize & (self.inner.shards.len() - 1);
        let mut shard = self.inner.shards[shard_index].lock();
        shard.sweep(now);

        let stored = shard.map.get(&hash).and_then(|b| b.iter().find(|e| &*e.key == request.key));
        let state_of = |name: &Arc<str>| stored.and_then(|e| e.state(name));
        if request.op == Operation::Refund {
            let mut refunded = Vec::with_capacity(request.policies.len());
            for policy in request.policies {
                let params = Params::from_policy(policy);
                let state = algorithm::refund(params, state_of(&policy.name), now, request.cost);
                outcomes.push(algorithm::evaluate(params, state, now, 0).outcome);
                refunded.push(state);
            }
            if stored.is_some() {
                let bucket = shard.map.get_mut(&hash).expect("the bucket was just read");
                if let Some(i) = bucket.iter().position(|e| &*e.key == request.key) {
                    let entry = &mut bucket[i];
                    for (policy, state) in request.policies.iter().zip(refunded) {
                        entry.states.retain(|(n, _)| **n != *policy.name);
                        if let Some(state) = state {
                            entry.states.push((policy.name.clone(), state));
                        }
                    }
                    if entry.states.is_empty() {
                        bucket.swap_remove(i);
                    }
                }
                if bucket.is_empty() {
                    shard.map.remove(&hash);
                }
            }
            return;
        }

        for policy in request.policies {
            let params = Params::from_policy(policy);
            outcomes.push(algorithm::evaluate(params, state_of(&policy.name), now, request.cost).outcome);
        }
        if !outcomes.iter().all(|o| o.allowed) {
            // Nothing is charged: policies that would admit report their untouched state.
            for (policy, outcome) in request.policies.iter().zip(outcomes.iter_mut()) {
                if outcome.allowed {
                    let params = Params::from_policy(policy);
                    *outcome = algorithm::evaluate(params, state_of(&policy.name), now, 0).outcome;
                }
            }
            return;
        }
        if request.op != Operation::Consume {
            return;
        }
        let bucket = shard.map.entry(hash).or_default();
        let entry = match bucket.iter().position(|e| &*e.key == request.key) {
            Some(i) => &mut bucket[i],
            None => {
                bucket.push(Entry {
                    key: request.key.into(),
                    states: Vec::with_capacity(request.policies.len()),
                    expires_at: 0,
                });
                bucket.last_mut().expect("just pushed")
            }
        };
        for policy in request.policies {
            let params = Params::from_policy(policy);
            let e = algorithm::evaluate(params, entry.state(&policy.name), now, request.cost);
            entry.expires_at = entry.expires_at.max(e.expires_at);
            match entry.states.iter_mut().find(|(n, _)| Arc::ptr_eq(n, &policy.name) || **n == *policy.name) {
                Some(slot) => slot.1 = e.next,
                None => entry.states.push((policy.name.clone(), e.next)),
            }
        }
    }
}

impl Entry {
    fn state(&self, name: &Arc<str>) -> Option<State> {
        self.states.iter().find(|(n, _)| Arc::ptr_eq(n, name) || **n == **name).map(|(_, s)| *s)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Shard {
    /// Drops expired keys once as many calls as there are keys have passed.
    fn sweep(&mut self, now: u64) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep > self.map.len().max(64) {
            self.ops_since_sweep = 0;
            self.map.retain(|_, bucket| {
                bucket.retain(|e| e.expires_at > now);
                !bucket.is_empty()
            });
        }
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[allow(private_interfaces)] // the trait is sealed: these types never leave the crate
impl sealed::Backend for MemoryStore {
    fn apply<'a>(&'a self, request: StoreRequest<'a>) -> StoreFuture<'a> {
        let outcomes = self.decide(request);
        Box::pin(async move { Ok::<_, StoreError>(outcomes) })
    }

    fn apply_now(&self, request: StoreRequest<'_>, out: &mut Vec<Outcome>) -> bool {
        self.decide_into(request, out);
        true
    }
}
