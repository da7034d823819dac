use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Operation, Store, StoreError, StoreFuture, StoreKey, StoreRequest, sealed};
use crate::algorithm::{self, Outcome, Params, State};
use crate::clock::{Clock, SystemClock};
use crate::quota::Policy;

/// Counters in process memory: for a single instance, tests, and the
/// fallback when Redis fails. Runs the same algorithms as the Redis script.
///
/// Sharded maps behind short mutexes, each key hashed once (SipHash with a
/// random key, so clients cannot aim collisions) and looked up once per
/// decision, with no allocation but a new key's; a key's state is forgotten
/// once its quota is whole again, swept incrementally (amortised O(1) per
/// call). A decision holds its shard's lock from read to write, so one key
/// never admits more than its quota however many threads share it. Clones
/// share the counters.
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
    map: Map,
    ops_since_sweep: usize,
}

type Map = HashMap<u64, Bucket, BuildHasherDefault<HashIsKey>>;

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
        self.inner.shards.iter().map(|s| s.lock().map.values().map(Bucket::len).sum::<usize>()).sum()
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
        // The bare key is hashed (the prefix is the same for most keys of a
        // store); entries compare whole `prefix{key}` names.
        let hash = self.inner.hasher.hash_one(request.key.key);
        // The high bits pick the shard; the map uses the whole hash.
        let shard_index = (hash >> 40) as usize & (self.inner.shards.len() - 1);
        let mut shard = self.inner.shards[shard_index].lock();
        shard.sweep(now);
        let map = &mut shard.map;

        // One lookup: the entry is read, and written in place when admitted.
        let mut stored = map.get_mut(&hash).and_then(|b| b.find_mut(&request.key));
        if request.op == Operation::Refund {
            let Some(entry) = stored else {
                for policy in request.policies {
                    outcomes.push(algorithm::evaluate(Params::from_policy(policy), None, now, 0).outcome);
                }
                return;
            };
            for policy in request.policies {
                let params = Params::from_policy(policy);
                let state = algorithm::refund(params, entry.state(&policy.name), now, request.cost);
                outcomes.push(algorithm::evaluate(params, state, now, 0).outcome);
                entry.states.retain(|(n, _)| **n != *policy.name);
                if let Some(state) = state {
                    entry.states.push((policy.name.clone(), state));
                }
            }
            if entry.states.is_empty() {
                let bucket = map.get_mut(&hash).expect("the entry was just found");
                if bucket.remove(&request.key) {
                    map.remove(&hash);
                }
            }
            return;
        }

        // The common case, one policy: evaluated once, stored from the same evaluation.
        if let [policy] = request.policies {
            let params = Params::from_policy(policy);
            let e =
                algorithm::evaluate(params, stored.as_deref().and_then(|e| e.state(&policy.name)), now, request.cost);
            outcomes.push(e.outcome);
            if e.outcome.allowed && request.op == Operation::Consume {
                match stored {
                    Some(entry) => entry.store(policy, e.next, e.expires_at),
                    None => insert(map, hash, &request.key, std::slice::from_ref(policy)).store(
                        policy,
                        e.next,
                        e.expires_at,
                    ),
                }
            }
            return;
        }

        let state_of = |stored: &Option<&mut Entry>, name: &Arc<str>| stored.as_deref().and_then(|e| e.state(name));
        for policy in request.policies {
            let params = Params::from_policy(policy);
            outcomes.push(algorithm::evaluate(params, state_of(&stored, &policy.name), now, request.cost).outcome);
        }
        if !outcomes.iter().all(|o| o.allowed) {
            // Nothing is charged: policies that would admit report their untouched state.
            for (policy, outcome) in request.policies.iter().zip(outcomes.iter_mut()) {
                if outcome.allowed {
                    let params = Params::from_policy(policy);
                    *outcome = algorithm::evaluate(params, state_of(&stored, &policy.name), now, 0).outcome;
                }
            }
            return;
        }
        if request.op != Operation::Consume {
            return;
        }
        let entry = match stored.take() {
            Some(entry) => entry,
            None => insert(map, hash, &request.key, request.policies),
        };
        for policy in request.policies {
            let params = Params::from_policy(policy);
            let e = algorithm::evaluate(params, entry.state(&policy.name), now, request.cost);
            entry.store(policy, e.next, e.expires_at);
        }
    }
}

/// Adds a key without state (the caller stores its states at once).
fn insert<'m>(map: &'m mut Map, hash: u64, key: &StoreKey<'_>, policies: &[Policy]) -> &'m mut Entry {
    let entry =
        Entry { key: key.with_suffix("").into_boxed_str(), states: Vec::with_capacity(policies.len()), expires_at: 0 };
    match map.entry(hash) {
        std::collections::hash_map::Entry::Occupied(bucket) => bucket.into_mut().push(entry),
        std::collections::hash_map::Entry::Vacant(slot) => {
            &mut slot.insert(Bucket { first: entry, others: Vec::new() }).first
        }
    }
}

/// The keys sharing one 64-bit hash: almost always exactly one, kept inline.
#[derive(Debug)]
struct Bucket {
    first: Entry,
    others: Vec<Entry>,
}

impl Bucket {
    fn find_mut(&mut self, key: &StoreKey<'_>) -> Option<&mut Entry> {
        if key.is(&self.first.key) {
            return Some(&mut self.first);
        }
        self.others.iter_mut().find(|e| key.is(&e.key))
    }

    fn push(&mut self, entry: Entry) -> &mut Entry {
        self.others.push(entry);
        self.others.last_mut().expect("just pushed")
    }

    /// Removes `key`; `true` when the bucket is left empty.
    fn remove(&mut self, key: &StoreKey<'_>) -> bool {
        if key.is(&self.first.key) {
            match self.others.pop() {
                Some(last) => self.first = last,
                None => return true,
            }
        } else {
            self.others.retain(|e| !key.is(&e.key));
        }
        false
    }

    /// Keeps the entries alive at `now`; `true` when the bucket is left empty.
    fn sweep(&mut self, now: u64) -> bool {
        self.others.retain(|e| e.expires_at > now);
        if self.first.expires_at <= now {
            match self.others.pop() {
                Some(last) => self.first = last,
                None => return true,
            }
        }
        false
    }

    fn len(&self) -> usize {
        1 + self.others.len()
    }
}

impl Entry {
    fn state(&self, name: &Arc<str>) -> Option<State> {
        self.states.iter().find(|(n, _)| Arc::ptr_eq(n, name) || **n == **name).map(|(_, s)| *s)
    }

    fn store(&mut self, policy: &Policy, state: State, expires_at: u64) {
        self.expires_at = self.expires_at.max(expires_at);
        match self.states.iter_mut().find(|(n, _)| Arc::ptr_eq(n, &policy.name) || **n == *policy.name) {
            Some(slot) => slot.1 = state,
            None => self.states.push((policy.name.clone(), state)),
        }
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
            self.map.retain(|_, bucket| !bucket.sweep(now));
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
