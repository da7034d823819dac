use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_secret;

use super::{Namespace, Operation, Store, StoreError, StoreFuture, StoreRequest, sealed};
use crate::algorithm::{self, Outcome, Params, State};
use crate::clock::{Clock, SharedClock, SystemClock};

/// Counters in process memory: for a single instance, tests, and the
/// fallback when Redis fails. Runs the same algorithms as the Redis script.
///
/// Sharded hash tables behind short mutexes. Each key is hashed once per
/// decision (XXH3 with a secret drawn at random for each store, so clients
/// cannot aim collisions) and, for one policy, looked up once (a decision of
/// several policies looks each up again to write, under the same lock), and
/// a decision allocates nothing but a new long key's bytes. A key's state under one
/// policy fills one 64-byte slot, a cache line of its own: the key's bytes
/// inline up to 22 bytes, the policy, the state and its expiry. A state is
/// forgotten once its quota is whole again, swept incrementally (amortised
/// O(1) per call), and a table a sweep leaves under a quarter full shrinks,
/// so memory follows the keys active within their policies' periods, not a
/// past peak. A decision holds its shard's lock from read to write
/// (all of a key's policies live in one shard), so one key never admits more
/// than its quota however many threads share it. Clones share the counters.
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

/// The states of the keys whose hash picks this shard, in a table hashed by
/// the key's 64-bit keyed hash alone: a key's states under several policies
/// sit side by side, told apart by their namespace (as the rare keys sharing
/// a hash are by their bytes).
#[derive(Debug)]
struct Shard {
    table: HashTable<Slot>,
    ops_since_sweep: usize,
    /// No state expires before this (a lower bound: states' expiry times
    /// only grow), so a sweep that could free nothing is not started.
    next_expiry: u64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { table: HashTable::new(), ops_since_sweep: 0, next_expiry: u64::MAX }
    }
}

/// One key's state under one policy: exactly one cache line.
#[derive(Debug)]
#[repr(C, align(64))]
struct Slot {
    key: KeyBytes,
    namespace: Namespace,
    expires_at: u64,
    state: PackedState,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// A [`State`] in 17 bytes of data (24 with padding): GCRA's time stamp in
/// `a`; a window's number in `a` and its two counts (each at most the
/// policy's `u32` limit) in `b`.
#[derive(Debug, Clone, Copy)]
struct PackedState {
    a: u64,
    b: u64,
    window: bool,
}

impl PackedState {
    #[inline(always)]
    fn pack(state: State) -> Self {
        match state {
            State::Gcra { tat } => PackedState { a: tat, b: 0, window: false },
            State::Window { index, current, previous } => {
                let count = |n: u64| n.min(u64::from(u32::MAX));
                PackedState { a: index, b: count(current) | count(previous) << 32, window: true }
            }
        }
    }

    #[inline(always)]
    fn unpack(self) -> State {
        if self.window {
            State::Window { index: self.a, current: self.b & u64::from(u32::MAX), previous: self.b >> 32 }
        } else {
            State::Gcra { tat: self.a }
        }
    }
}

impl Slot {
    /// Whether this is `key`'s state under `namespace`.
    #[inline(always)]
    fn is(&self, key: &str, namespace: &Namespace) -> bool {
        same_bytes(self.key.as_bytes(), key.as_bytes()) && self.namespace.is(namespace)
    }

    #[inline(always)]
    fn state(&self) -> State {
        self.state.unpack()
    }

    #[inline(always)]
    fn set(&mut self, state: State, expires_at: u64) {
        self.state = PackedState::pack(state);
        self.expires_at = self.expires_at.max(expires_at);
    }
}

/// A key's bytes: up to 22 inline (IPv4 addresses, most API keys), so that
/// comparing them reads the slot's line and no other; longer ones on the heap.
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

    /// States currently held: one per key and policy (approximate: expired
    /// states not yet swept count).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.0.lock().table.len()).sum()
    }

    /// Whether no state is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slots the shards' tables have room for.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.inner.shards.iter().map(|s| s.0.lock().table.capacity()).sum()
    }

    /// The key's hash and its shard, locked, swept if its turn has come.
    #[inline(always)]
    fn shard(&self, key: &str, now: u64) -> (u64, parking_lot::MutexGuard<'_, Shard>) {
        let hash = key_hash(&self.inner.secret, key.as_bytes());
        // The high bits pick the shard; the table uses the whole hash.
        let index = (hash >> 40) as usize & (self.inner.shards.len() - 1);
        let mut shard = self.inner.shards[index].0.lock();
        shard.sweep(now, &self.inner.secret);
        (hash, shard)
    }

    /// Adds a state (the key has none under `namespace`).
    #[inline]
    fn insert(
        &self,
        table: &mut HashTable<Slot>,
        hash: u64,
        key: &str,
        namespace: &Namespace,
        state: State,
        expires_at: u64,
    ) {
        let slot =
            Slot { key: KeyBytes::new(key), namespace: namespace.clone(), expires_at, state: PackedState::pack(state) };
        table.insert_unique(hash, slot, |s| key_hash(&self.inner.secret, s.key.as_bytes()));
    }

    /// Decides for one policy: one look-up, the state updated in place.
    #[inline(always)]
    pub(crate) fn decide_one(
        &self,
        key: &str,
        namespace: &Namespace,
        params: &Params,
        cost: u64,
        op: Operation,
    ) -> Outcome {
        let params = *params;
        let now = self.inner.clock.now_micros();
        let (hash, mut shard) = self.shard(key, now);
        let Shard { table, next_expiry, .. } = &mut *shard;
        match op {
            Operation::Consume => {
                if let Some(slot) = table.find_mut(hash, |s| s.is(key, namespace)) {
                    // A known key under GCRA: its time stamp read and written in place.
                    if let (Params::Gcra { t, burst, per_t }, false) = (params, slot.state.window) {
                        let e = algorithm::gcra(t, burst, per_t, slot.state.a, now, cost);
                        if e.outcome.allowed {
                            slot.state.a = e.expires_at;
                            slot.expires_at = slot.expires_at.max(e.expires_at);
                        }
                        return e.outcome;
                    }
                    let e = algorithm::evaluate(params, Some(slot.state()), now, cost);
                    if e.outcome.allowed {
                        slot.set(e.next, e.expires_at);
                    }
                    return e.outcome;
                }
                let e = algorithm::evaluate(params, None, now, cost);
                if e.outcome.allowed {
                    self.insert(table, hash, key, namespace, e.next, e.expires_at);
                    *next_expiry = (*next_expiry).min(e.expires_at);
                }
                e.outcome
            }
            Operation::Peek => {
                let state = table.find(hash, |s| s.is(key, namespace)).map(Slot::state);
                algorithm::evaluate(params, state, now, cost).outcome
            }
            Operation::Refund => refund(table, hash, key, namespace, params, now, cost),
        }
    }

    pub(crate) fn decide(&self, request: StoreRequest<'_>) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(request.policies.len());
        self.decide_into(request, &mut out);
        out
    }

    fn decide_into(&self, request: StoreRequest<'_>, outcomes: &mut Vec<Outcome>) {
        outcomes.clear();
        debug_assert_eq!(request.namespaces.len(), request.params.len(), "one namespace per policy");
        let key = request.key.key;
        if let ([params], [namespace]) = (request.params, request.namespaces) {
            outcomes.push(self.decide_one(key, namespace, params, request.cost, request.op));
            return;
        }
        let now = self.inner.clock.now_micros();
        let (hash, mut shard) = self.shard(key, now);
        let Shard { table, next_expiry, .. } = &mut *shard;
        let policies = || request.params.iter().copied().zip(request.namespaces);
        let state_of = |table: &HashTable<Slot>, namespace| table.find(hash, |s| s.is(key, namespace)).map(Slot::state);

        if request.op == Operation::Refund {
            for (params, namespace) in policies() {
                outcomes.push(refund(table, hash, key, namespace, params, now, request.cost));
            }
            return;
        }
        for (params, namespace) in policies() {
            outcomes.push(algorithm::evaluate(params, state_of(table, namespace), now, request.cost).outcome);
        }
        if !outcomes.iter().all(|o| o.allowed) {
            // Nothing is charged: policies that would admit report their untouched state.
            for ((params, namespace), outcome) in policies().zip(outcomes.iter_mut()) {
                if outcome.allowed {
                    *outcome = algorithm::evaluate(params, state_of(table, namespace), now, 0).outcome;
                }
            }
            return;
        }
        if request.op != Operation::Consume {
            return;
        }
        for (params, namespace) in policies() {
            match table.find_mut(hash, |s| s.is(key, namespace)) {
                Some(slot) => {
                    let e = algorithm::evaluate(params, Some(slot.state()), now, request.cost);
                    slot.set(e.next, e.expires_at);
                }
                None => {
                    let e = algorithm::evaluate(params, None, now, request.cost);
                    self.insert(table, hash, key, namespace, e.next, e.expires_at);
                    *next_expiry = (*next_expiry).min(e.expires_at);
                }
            }
        }
    }
}

/// A key's hash under the store's secret: the shard's bits and the table's hash.
#[inline(always)]
fn key_hash(secret: &[u8], key: &[u8]) -> u64 {
    xxh3_64_with_secret(key, secret)
}

/// Gives `cost` units back to one policy's state (forgotten when whole) and
/// answers as a peek of cost 0.
fn refund(
    table: &mut HashTable<Slot>,
    hash: u64,
    key: &str,
    namespace: &Namespace,
    params: Params,
    now: u64,
    cost: u64,
) -> Outcome {
    let Ok(mut slot) = table.find_entry(hash, |s| s.is(key, namespace)) else {
        return algorithm::evaluate(params, None, now, 0).outcome;
    };
    let state = algorithm::refund(params, Some(slot.get().state()), now, cost);
    match state {
        Some(state) => slot.get_mut().state = PackedState::pack(state),
        None => drop(slot.remove()),
    }
    algorithm::evaluate(params, state, now, 0).outcome
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
    /// Drops expired states once as many calls as there are states have
    /// passed, if a state may have expired. `secret`: the store's, to rehash
    /// the slots when the table shrinks.
    #[inline]
    fn sweep(&mut self, now: u64, secret: &[u8]) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep > self.table.len().max(64) && now >= self.next_expiry {
            self.sweep_now(now, secret);
        }
    }

    /// Drops expired states, and gives back the room of a past peak: a
    /// table left under a quarter full shrinks to half full, so memory
    /// follows the keys active now, not the most ever seen.
    #[cold]
    fn sweep_now(&mut self, now: u64, secret: &[u8]) {
        self.ops_since_sweep = 0;
        let mut next_expiry = u64::MAX;
        self.table.retain(|slot| {
            let live = slot.expires_at > now;
            if live {
                next_expiry = next_expiry.min(slot.expires_at);
            }
            live
        });
        self.next_expiry = next_expiry;
        if self.table.capacity() > Self::MIN_CAPACITY && self.table.len() < self.table.capacity() / 4 {
            self.table.shrink_to(self.table.len() * 2, |s| key_hash(secret, s.key.as_bytes()));
        }
    }

    /// Tables of this many slots or fewer (64 KiB) are not shrunk, so that a
    /// shard whose keys come and go within a sweep's interval does not
    /// shrink and grow again at every sweep.
    const MIN_CAPACITY: usize = 1024;
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
    use crate::quota::{Algorithm, Policy, Quota};
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
        store.decide_one(key, &Namespace::new(prefix, policy), &Params::from_policy(policy), 1, op)
    }

    #[test]
    fn window_states_pack_and_unpack_whole() {
        for state in [
            State::Gcra { tat: 0 },
            State::Gcra { tat: u64::MAX },
            State::Window { index: 0, current: 0, previous: 0 },
            State::Window { index: u64::MAX, current: u64::from(u32::MAX), previous: 1 },
            State::Window { index: 7, current: 1, previous: u64::from(u32::MAX) },
        ] {
            assert_eq!(PackedState::pack(state).unpack(), state);
        }
    }

    #[test]
    fn namespaces_keep_prefixes_and_policies_apart_and_equal_ones_together() {
        let store = MemoryStore::with_clock(FakeClock::new());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("rl:a:"), Arc::from("rl:b:"));
        let p = Policy::new("p", Quota::per_hour(NonZeroU32::new(2).expect("2")));
        let q = Policy::new("q", Quota::per_hour(NonZeroU32::new(2).expect("2")));
        let decide = |ns: &Namespace| store.decide_one("k", ns, &Params::from_policy(&p), 1, Operation::Consume);
        let (ap, bp, aq) = (Namespace::new(&a, &p), Namespace::new(&b, &p), Namespace::new(&a, &q));
        // Another limiter's namespace for the same prefix and policy name: made apart, equal in names.
        let ap_twin = Namespace::new(&Arc::from("rl:a:"), &p);
        assert_eq!(decide(&ap).remaining, 1);
        assert_eq!(decide(&bp).remaining, 1, "another prefix has its own state");
        assert_eq!(decide(&aq).remaining, 1, "another policy has its own state");
        assert_eq!(decide(&ap_twin).remaining, 0, "the same prefix and policy share the state");
        assert!(!decide(&ap).allowed);
        assert_eq!(store.len(), 3, "one state per key and policy");
    }

    #[test]
    fn several_policies_of_one_key_decide_together_and_forget_apart() {
        let clock = FakeClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let prefix: Arc<str> = Arc::from("rl:t:");
        let policies = [
            Policy::new("second", Quota::per_second(NonZeroU32::new(2).expect("2"))),
            Policy::new("hour", Quota::per_hour(NonZeroU32::new(3).expect("3"))).algorithm(Algorithm::FixedWindow),
        ];
        let params: Vec<Params> = policies.iter().map(Params::from_policy).collect();
        let namespaces: Vec<Namespace> = policies.iter().map(|p| Namespace::new(&prefix, p)).collect();
        let decide = |op| {
            store.decide(StoreRequest {
                key: super::super::StoreKey { prefix: &prefix, key: "k" },
                policies: &policies,
                namespaces: &namespaces,
                params: &params,
                cost: 1,
                op,
            })
        };
        let remaining = |outcomes: &[Outcome]| outcomes.iter().map(|o| (o.allowed, o.remaining)).collect::<Vec<_>>();
        assert_eq!(remaining(&decide(Operation::Consume)), [(true, 1), (true, 2)]);
        assert_eq!(remaining(&decide(Operation::Consume)), [(true, 0), (true, 1)]);
        // Refused by "second": "hour" is not charged and reports its state.
        assert_eq!(remaining(&decide(Operation::Consume)), [(false, 0), (true, 1)]);
        assert_eq!(store.len(), 2);
        // A second later "second" is whole again and forgotten by a refund; "hour" is kept.
        clock.advance(std::time::Duration::from_secs(1));
        assert_eq!(remaining(&decide(Operation::Refund)), [(true, 2), (true, 2)]);
        assert_eq!(store.len(), 1);
        assert_eq!(remaining(&decide(Operation::Consume)), [(true, 1), (true, 1)]);
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
    fn tables_give_back_the_room_of_a_past_peak() {
        let clock = FakeClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let prefix: Arc<str> = Arc::from("rl:t:");
        let policy = Policy::new("p", Quota::per_second(NonZeroU32::new(10).expect("10")));
        for i in 0..20_000 {
            assert!(one(&store, &prefix, &format!("peak-{i}"), &policy, Operation::Consume).allowed);
        }
        let peak = store.capacity();
        assert!(peak >= 20_000, "room for the peak: {peak}");
        // The peak's states expire; 1,024 keys keep calling (in every shard,
        // whatever the store's random hash), and every shard is swept.
        clock.advance(Duration::from_secs(1));
        let live: Vec<String> = (0..1_024).map(|i| format!("live-{i}")).collect();
        for _ in 0..40 {
            for key in &live {
                one(&store, &prefix, key, &policy, Operation::Consume);
            }
        }
        assert_eq!(store.len(), 1_024);
        assert!(store.capacity() < peak / 4, "room for {} after a peak of {peak}", store.capacity());
        for key in &live {
            assert!(!one(&store, &prefix, key, &policy, Operation::Peek).allowed, "{key} kept its state");
        }
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
