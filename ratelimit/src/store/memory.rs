use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_secret;

use super::{Operation, Store, StoreError, StoreFuture, StoreKey, StoreRequest, sealed};
use crate::algorithm::{self, Outcome, Params, State};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::quota::Policy;

/// Counters in process memory: for a single instance, tests, and the
/// fallback when Redis fails. Runs the same algorithms as the Redis script.
///
/// Sharded maps behind short mutexes. Each key is hashed once per decision
/// (XXH3 with a secret drawn at random for each store, so clients cannot aim
/// collisions) and looked up once, and a decision allocates nothing but a new
/// key's entry. A key's state is forgotten once its quota is whole again,
/// swept incrementally (amortised O(1) per call), so memory is bounded by the
/// keys active within their policies' periods. A decision holds its shard's
/// lock from read to write, so one key never admits more than its quota
/// however many threads share it. Clones share the counters.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[PaddedShard]>,
    /// XXH3's secret: random, so the hash of a key cannot be predicted.
    secret: Box<[u8]>,
    clock: SharedClock,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("shards", &self.shards.len()).field("clock", &self.clock).finish()
    }
}

/// A shard on cache lines of its own, so threads deciding for keys of
/// different shards do not contend on one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedShard(Mutex<Shard>);

/// The map is keyed by the key's 64-bit keyed hash, computed once per call;
/// the rare keys sharing a hash share a bucket and are told apart by name.
#[derive(Debug)]
struct Shard {
    map: Map,
    ops_since_sweep: usize,
    /// No entry expires before this (a lower bound: entries' expiry times
    /// only grow), so a sweep that could free nothing is not started.
    next_expiry: u64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { map: Map::default(), ops_since_sweep: 0, next_expiry: u64::MAX }
    }
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

/// One key's states, one per policy.
#[derive(Debug)]
struct Entry {
    /// The limiter's prefix (a clone of its `Arc`: several limiters may share a store).
    prefix: Arc<str>,
    key: KeyBytes,
    expires_at: u64,
    /// The first policy's state inline (most limiters have one policy), the others after it.
    first: Option<(Arc<str>, State)>,
    others: Spill<(Arc<str>, State)>,
}

/// A key's bytes: up to 22 inline (IPv4 addresses, most API keys), so that
/// comparing them reads the map's slot and no other cache line; longer ones
/// on the heap.
#[derive(Debug)]
enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

const INLINE_KEY: usize = 22;

impl KeyBytes {
    fn new(key: &str) -> KeyBytes {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[..key.len()].copy_from_slice(key.as_bytes());
                KeyBytes::Inline { len, bytes }
            }
            _ => KeyBytes::Heap(key.as_bytes().into()),
        }
    }

    #[inline(always)]
    fn as_bytes(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyBytes::Heap(bytes) => bytes,
        }
    }
}

/// The rare overflow of an inline slot: a pointer while empty, so that the
/// map's slots stay small (fewer cache lines per look-up).
#[derive(Debug)]
#[allow(clippy::box_collection)] // the point: one word in the slot instead of a `Vec`'s three
struct Spill<T>(Option<Box<Vec<T>>>);

impl<T> Default for Spill<T> {
    fn default() -> Self {
        Spill(None)
    }
}

impl<T> Spill<T> {
    fn as_slice(&self) -> &[T] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        self.0.as_deref_mut().map_or(&mut [], Vec::as_mut_slice)
    }

    fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.as_mut_slice().iter_mut()
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn push(&mut self, item: T) -> &mut T {
        let items = self.0.get_or_insert_with(Box::default);
        items.push(item);
        items.last_mut().expect("just pushed")
    }

    fn pop(&mut self) -> Option<T> {
        let item = self.0.as_mut()?.pop();
        if self.is_empty() {
            self.0 = None;
        }
        item
    }

    fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if let Some(items) = &mut self.0 {
            items.retain(keep);
            if items.is_empty() {
                self.0 = None;
            }
        }
    }
}

/// The size of XXH3's default secret (it needs at least 136 bytes).
const SECRET_SIZE: usize = 192;

impl MemoryStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new())
    }

    /// A store on the given clock.
    pub fn with_clock(clock: impl Clock) -> Self {
        Self::with_shared_clock(SharedClock::new(clock))
    }

    pub(crate) fn with_shared_clock(clock: SharedClock) -> Self {
        let shards = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4).next_power_of_two() * 8;
        // `RandomState` keys SipHash with random keys: its hashes of a counter are random bytes.
        let random = RandomState::new();
        let secret = (0..SECRET_SIZE / 8).flat_map(|i| random.hash_one(i).to_le_bytes()).collect();
        MemoryStore {
            inner: Arc::new(Inner { shards: (0..shards).map(|_| PaddedShard::default()).collect(), secret, clock }),
        }
    }

    /// Keys currently holding state (approximate: expired keys not yet swept count).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.0.lock().map.values().map(Bucket::len).sum::<usize>()).sum()
    }

    /// Whether no key holds state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key's hash and its shard, locked, swept if its turn has come.
    #[inline(always)]
    fn shard(&self, key: &str, now: u64) -> (u64, parking_lot::MutexGuard<'_, Shard>) {
        let hash = xxh3_64_with_secret(key.as_bytes(), &self.inner.secret);
        // The high bits pick the shard; the map uses the whole hash.
        let index = (hash >> 40) as usize & (self.inner.shards.len() - 1);
        let mut shard = self.inner.shards[index].0.lock();
        shard.sweep(now);
        (hash, shard)
    }

    /// Decides for a limiter of one policy: one look-up, the state updated in place.
    #[inline(always)]
    pub(crate) fn decide_one(
        &self,
        key: StoreKey<'_>,
        policy: &Policy,
        params: &Params,
        cost: u64,
        op: Operation,
    ) -> Outcome {
        let params = *params;
        // The bare key is hashed (the prefix is the same for most keys of a
        // store); entries compare prefix and key.
        let now = self.inner.clock.now_micros();
        let (hash, mut shard) = self.shard(key.key, now);
        let Shard { map, next_expiry, .. } = &mut *shard;
        let mut stored = map.get_mut(&hash).and_then(|b| b.find_mut(&key));
        match op {
            Operation::Consume => {
                // A known key under GCRA: its time stamp read and written in place.
                if let (Params::Gcra { t, burst, per_t }, Some(entry)) = (params, stored.as_deref_mut())
                    && let Some(State::Gcra { tat }) = entry.slot(&policy.name)
                {
                    let e = algorithm::gcra(t, burst, per_t, *tat, now, cost);
                    if e.outcome.allowed {
                        *tat = e.expires_at;
                        entry.expires_at = entry.expires_at.max(e.expires_at);
                    }
                    return e.outcome;
                }
                let e = algorithm::evaluate(params, stored.as_deref().and_then(|e| e.state(&policy.name)), now, cost);
                if e.outcome.allowed {
                    match stored {
                        Some(entry) => entry.store(&policy.name, e.next, e.expires_at),
                        None => insert(map, hash, &key).store(&policy.name, e.next, e.expires_at),
                    }
                    *next_expiry = (*next_expiry).min(e.expires_at);
                }
                e.outcome
            }
            Operation::Peek => {
                algorithm::evaluate(params, stored.as_deref().and_then(|e| e.state(&policy.name)), now, cost).outcome
            }
            Operation::Refund => {
                let Some(entry) = stored else {
                    return algorithm::evaluate(params, None, now, 0).outcome;
                };
                let state = algorithm::refund(params, entry.state(&policy.name), now, cost);
                entry.replace(&policy.name, state);
                if entry.is_empty() {
                    remove(map, hash, &key);
                }
                algorithm::evaluate(params, state, now, 0).outcome
            }
        }
    }

    pub(crate) fn decide(&self, request: StoreRequest<'_>) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(request.policies.len());
        self.decide_into(request, &mut out);
        out
    }

    fn decide_into(&self, request: StoreRequest<'_>, outcomes: &mut Vec<Outcome>) {
        outcomes.clear();
        if let ([policy], [params]) = (request.policies, request.params) {
            outcomes.push(self.decide_one(request.key, policy, params, request.cost, request.op));
            return;
        }
        let now = self.inner.clock.now_micros();
        let (hash, mut shard) = self.shard(request.key.key, now);
        let Shard { map, next_expiry, .. } = &mut *shard;
        let policies = || request.policies.iter().zip(request.params.iter().copied());

        // One lookup: the entry is read, and written in place when admitted.
        let mut stored = map.get_mut(&hash).and_then(|b| b.find_mut(&request.key));
        if request.op == Operation::Refund {
            let Some(entry) = stored else {
                outcomes.extend(policies().map(|(_, params)| algorithm::evaluate(params, None, now, 0).outcome));
                return;
            };
            for (policy, params) in policies() {
                let state = algorithm::refund(params, entry.state(&policy.name), now, request.cost);
                outcomes.push(algorithm::evaluate(params, state, now, 0).outcome);
                entry.replace(&policy.name, state);
            }
            if entry.is_empty() {
                remove(map, hash, &request.key);
            }
            return;
        }

        let state_of = |stored: &Option<&mut Entry>, name: &Arc<str>| stored.as_deref().and_then(|e| e.state(name));
        for (policy, params) in policies() {
            outcomes.push(algorithm::evaluate(params, state_of(&stored, &policy.name), now, request.cost).outcome);
        }
        if !outcomes.iter().all(|o| o.allowed) {
            // Nothing is charged: policies that would admit report their untouched state.
            for ((policy, params), outcome) in policies().zip(outcomes.iter_mut()) {
                if outcome.allowed {
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
            None => insert(map, hash, &request.key),
        };
        for (policy, params) in policies() {
            let e = algorithm::evaluate(params, entry.state(&policy.name), now, request.cost);
            entry.store(&policy.name, e.next, e.expires_at);
            *next_expiry = (*next_expiry).min(e.expires_at);
        }
    }
}

/// Adds a key without state (the caller stores its states at once).
fn insert<'m>(map: &'m mut Map, hash: u64, key: &StoreKey<'_>) -> &'m mut Entry {
    let entry = Entry {
        prefix: key.prefix.clone(),
        key: KeyBytes::new(key.key),
        expires_at: 0,
        first: None,
        others: Spill::default(),
    };
    match map.entry(hash) {
        std::collections::hash_map::Entry::Occupied(bucket) => bucket.into_mut().push(entry),
        std::collections::hash_map::Entry::Vacant(slot) => {
            &mut slot.insert(Bucket { first: entry, others: Spill::default() }).first
        }
    }
}

/// Forgets a key.
fn remove(map: &mut Map, hash: u64, key: &StoreKey<'_>) {
    if let Some(bucket) = map.get_mut(&hash)
        && bucket.remove(key)
    {
        map.remove(&hash);
    }
}

/// The keys sharing one 64-bit hash: almost always exactly one, kept inline.
#[derive(Debug)]
struct Bucket {
    first: Entry,
    others: Spill<Entry>,
}

impl Bucket {
    #[inline(always)]
    fn find_mut(&mut self, key: &StoreKey<'_>) -> Option<&mut Entry> {
        if self.first.is(key) {
            return Some(&mut self.first);
        }
        self.others.iter_mut().find(|e| e.is(key))
    }

    fn push(&mut self, entry: Entry) -> &mut Entry {
        self.others.push(entry)
    }

    /// Removes `key`; `true` when the bucket is left empty.
    fn remove(&mut self, key: &StoreKey<'_>) -> bool {
        if self.first.is(key) {
            match self.others.pop() {
                Some(last) => self.first = last,
                None => return true,
            }
        } else {
            self.others.retain(|e| !e.is(key));
        }
        false
    }

    /// Keeps the entries alive at `now`; `true` when the bucket is left empty.
    fn sweep(&mut self, now: u64) -> bool {
        if !self.others.is_empty() {
            self.others.retain(|e| e.expires_at > now);
        }
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

    fn next_expiry(&self) -> u64 {
        self.others.iter().map(|e| e.expires_at).fold(self.first.expires_at, u64::min)
    }
}

impl Entry {
    /// Whether this is `key`'s entry: the prefix by pointer first (the entry
    /// holds its limiter's `Arc`, so no other prefix can sit at that
    /// address), by bytes otherwise.
    #[inline(always)]
    fn is(&self, key: &StoreKey<'_>) -> bool {
        same_bytes(self.key.as_bytes(), key.key.as_bytes())
            && (std::ptr::addr_eq(Arc::as_ptr(&self.prefix), Arc::as_ptr(key.prefix)) || *self.prefix == **key.prefix)
    }

    #[inline]
    fn state(&self, name: &Arc<str>) -> Option<State> {
        let same = |n: &Arc<str>| Arc::ptr_eq(n, name) || **n == **name;
        match &self.first {
            Some((n, state)) if same(n) => Some(*state),
            _ => self.others.iter().find(|(n, _)| same(n)).map(|(_, s)| *s),
        }
    }

    #[inline(always)]
    fn slot(&mut self, name: &Arc<str>) -> Option<&mut State> {
        let same = |n: &Arc<str>| Arc::ptr_eq(n, name) || **n == **name;
        match &mut self.first {
            Some((n, state)) if same(n) => Some(state),
            _ => self.others.iter_mut().find(|(n, _)| same(n)).map(|(_, s)| s),
        }
    }

    #[inline]
    fn store(&mut self, name: &Arc<str>, state: State, expires_at: u64) {
        self.expires_at = self.expires_at.max(expires_at);
        match self.slot(name) {
            Some(slot) => *slot = state,
            None => self.add(name, state),
        }
    }

    /// Adds a policy's first state.
    #[cold]
    fn add(&mut self, name: &Arc<str>, state: State) {
        if self.first.is_none() {
            self.first = Some((name.clone(), state));
        } else {
            self.others.push((name.clone(), state));
        }
    }

    /// Sets or forgets (`None`) one policy's state.
    fn replace(&mut self, name: &Arc<str>, state: Option<State>) {
        match (self.slot(name), state) {
            (Some(slot), Some(state)) => *slot = state,
            (None, Some(state)) => self.store(name, state, 0),
            (None, None) => {}
            (Some(_), None) => {
                if matches!(&self.first, Some((n, _)) if Arc::ptr_eq(n, name) || **n == **name) {
                    self.first = self.others.pop();
                } else {
                    self.others.retain(|(n, _)| !(Arc::ptr_eq(n, name) || **n == **name));
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.others.is_empty()
    }
}

/// `a == b`, with keys of 4 to 32 bytes (IP addresses, most API keys)
/// compared as two overlapping words instead of by a call to `memcmp`.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        4..=8 => a.first_chunk::<4>() == b.first_chunk::<4>() && a.last_chunk::<4>() == b.last_chunk::<4>(),
        9..=16 => a.first_chunk::<8>() == b.first_chunk::<8>() && a.last_chunk::<8>() == b.last_chunk::<8>(),
        17..=32 => a.first_chunk::<16>() == b.first_chunk::<16>() && a.last_chunk::<16>() == b.last_chunk::<16>(),
        _ => a == b,
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Shard {
    /// Drops expired keys once as many calls as there are keys have passed,
    /// if a key may have expired.
    #[inline]
    fn sweep(&mut self, now: u64) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep > self.map.len().max(64) && now >= self.next_expiry {
            self.sweep_now(now);
        }
    }

    #[cold]
    fn sweep_now(&mut self, now: u64) {
        self.ops_since_sweep = 0;
        let mut next_expiry = u64::MAX;
        self.map.retain(|_, bucket| {
            let empty = bucket.sweep(now);
            if !empty {
                next_expiry = next_expiry.min(bucket.next_expiry());
            }
            !empty
        });
        self.next_expiry = next_expiry;
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

    fn as_memory(&self) -> Option<&MemoryStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::quota::Quota;
    use std::num::NonZeroU32;
    use std::time::Duration;

    #[test]
    fn same_bytes_tells_every_length_and_position_apart() {
        for len in 0..=40usize {
            let a: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "len {len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "len {len}, byte {at}");
            }
            let mut longer = a.clone();
            longer.push(b'a');
            assert!(!same_bytes(&a, &longer), "len {len} against {}", len + 1);
        }
    }

    fn one(store: &MemoryStore, prefix: &Arc<str>, key: &str, policy: &Policy, op: Operation) -> Outcome {
        store.decide_one(StoreKey { prefix, key }, policy, &Params::from_policy(policy), 1, op)
    }

    #[test]
    fn keys_inline_and_on_the_heap_keep_their_own_state() {
        let store = MemoryStore::with_clock(FakeClock::new());
        let prefix: Arc<str> = Arc::from("rl:t:");
        let policy = Policy::new("p", Quota::per_hour(NonZeroU32::new(1).expect("1")));
        // Every length around the inline limit, and keys differing only in their last byte.
        let keys: Vec<String> =
            (1..=40).flat_map(|len| ["a", "b"].map(|last| format!("{}{last}", "k".repeat(len - 1)))).collect();
        for key in &keys {
            assert!(one(&store, &prefix, key, &policy, Operation::Consume).allowed, "{key}");
        }
        for key in &keys {
            assert!(!one(&store, &prefix, key, &policy, Operation::Consume).allowed, "{key}");
        }
        assert_eq!(store.len(), keys.len());
    }

    #[test]
    fn expired_keys_are_swept_and_live_ones_kept() {
        let clock = FakeClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let prefix: Arc<str> = Arc::from("rl:t:");
        let policy = Policy::new("p", Quota::per_second(NonZeroU32::new(10).expect("10")));
        let old: Vec<String> = (0..1_000).map(|i| format!("old-{i}")).collect();
        let new: Vec<String> = (0..1_000).map(|i| format!("new-{i}")).collect();
        for key in &old {
            assert!(one(&store, &prefix, key, &policy, Operation::Consume).allowed);
        }
        assert_eq!(store.len(), 1_000);
        // Nothing has expired yet: calls on known keys sweep nothing.
        for _ in 0..50 {
            for key in &old {
                one(&store, &prefix, key, &policy, Operation::Peek);
            }
        }
        assert_eq!(store.len(), 1_000);
        // Every state is 100 ms deep: a second later all have expired.
        clock.advance(Duration::from_secs(1));
        for round in 0..200 {
            let op = if round == 0 { Operation::Consume } else { Operation::Peek };
            for key in &new {
                assert!(one(&store, &prefix, key, &policy, op).allowed);
            }
            clock.advance(Duration::from_micros(100));
        }
        assert_eq!(store.len(), 1_000, "only the keys counted in the last 100 ms are left");
        // A swept key starts afresh, as an expired one would.
        let fresh = one(&store, &prefix, &old[0], &policy, Operation::Peek);
        assert_eq!((fresh.allowed, fresh.remaining), (true, 9));
    }
}
