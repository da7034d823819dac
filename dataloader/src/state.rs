//! The loader's shared state: which keys are waited for, which are pending a
//! batch and which are in one. Pure bookkeeping under one short-held mutex;
//! the batch function is never called with it held (see `dispatch.rs`).

use std::collections::{HashMap, VecDeque, hash_map};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::answers::{AnswerSlot, Answerer, Settled};
use crate::batch::ErasedBatchFn;
use crate::cache::ValueCache;
use crate::error::LoadError;
use crate::stats::LoaderStats;

pub(crate) type Answer<V, E> = Result<V, LoadError<E>>;

/// When a batch that is collecting keys is dispatched (besides being full).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Schedule {
    /// When the task that made the batch's first load has yielded once (the
    /// tick): that load yields and then signals the dispatcher.
    Tick,
    /// A fixed time after the batch's first key.
    Window(Duration),
}

pub(crate) struct Config {
    pub(crate) max_batch_size: usize,
    pub(crate) schedule: Schedule,
    pub(crate) batch_timeout: Option<Duration>,
}

pub(crate) struct Shared<K, V, E> {
    pub(crate) batch_fn: Arc<dyn ErasedBatchFn<K, V, E>>,
    pub(crate) config: Config,
    pub(crate) shared_cache: Option<Arc<dyn ValueCache<K, V>>>,
    pub(crate) permits: Option<Arc<Semaphore>>,
    pub(crate) stats: LoaderStats,
    pub(crate) state: Mutex<State<K, V, E>>,
}

pub(crate) struct State<K, V, E> {
    /// Whether answered values are memoized in `slots` (the per-loader
    /// cache); off when caching is off or a shared cache is used.
    pub(crate) memoize: bool,
    /// Every key with callers waiting (pending, or in a batch) and, when
    /// memoizing, every cached value: one map, so a load costs one look-up.
    pub(crate) slots: Slots<K, V, E>,
    /// The answers of the collecting batch: every pending key has a slot in
    /// it. Taken with the pending keys when they are dispatched.
    pub(crate) collecting: Option<Answerer<V, E>>,
    /// Pending keys with their sequence numbers, in the order first
    /// requested. May hold `stale` keys since withdrawn (all callers dropped),
    /// which are skipped when a batch is taken.
    pub(crate) order: VecDeque<(u64, K)>,
    /// Withdrawn keys still listed in `order`; while 0, taking a batch
    /// needs no look-ups.
    pub(crate) stale: usize,
    /// The sequence number of the next new pending key.
    pub(crate) next_seq: u64,
    /// Every key with a lower sequence number has been dispatched: an entry is
    /// pending exactly when its `seq` is at least this.
    pub(crate) dispatched: u64,
    /// Callers dropped after their key was dispatched; a batch that sees this
    /// unchanged when it starts knows all its keys are still wanted.
    pub(crate) in_flight_leaves: u64,
    /// Live pending keys.
    pub(crate) pending: usize,
    /// When the oldest live pending key arrived (window scheduling).
    pub(crate) pending_since: Option<Instant>,
    /// Loads that had to wait, ever; the tick dispatcher watches it move.
    pub(crate) registered: u64,
    /// A dispatcher task is scheduled for the pending keys.
    pub(crate) dispatcher: bool,
    /// Which dispatcher is scheduled (tick scheduling), so that a late tick
    /// of an earlier batch's leading load is not taken for this one's.
    pub(crate) tick_gen: u64,
    /// The leading load of the collecting batch has yielded (or was dropped).
    pub(crate) ticked: bool,
    /// Bumped by `clear`/`clear_all`: a batch that started before a clear
    /// still answers its callers but does not write its values to the cache.
    pub(crate) epoch: u64,
    /// Loads and dedups counted under the lock and added to the shared
    /// stats in one go (see [`Counts::flush`]), not one atomic add per
    /// load on a cache line every loader of the stats shares.
    pub(crate) counts: Counts,
}

/// Loads not yet added to the loader's stats.
#[derive(Default)]
pub(crate) struct Counts {
    loads: u64,
    hits: u64,
    dedups: u64,
}

impl Counts {
    /// Adds the loads counted so far to `stats`.
    pub(crate) fn flush(&mut self, stats: &LoaderStats) {
        let Counts { loads, hits, dedups } = std::mem::take(self);
        stats.add_loads(loads);
        stats.add_cache_hits(hits);
        stats.add_dedups(dedups);
    }
}

/// The loader's keys, each hashed once per load (or removal): the map stores
/// the hash next to the key, so growing the map re-hashes nothing, and a
/// look-up followed by a removal hashes the key once. The hash is std's
/// (SipHash with per-loader random keys, for keys that come from requests).
pub(crate) struct Slots<K, V, E> {
    hasher: RandomState,
    map: HashMap<Hashed<K>, Slot<V, E>, BuildHasherDefault<Prehashed>>,
}

/// A key and its hash.
pub(crate) struct Hashed<K> {
    hash: u64,
    pub(crate) key: K,
}

impl<K: Eq> PartialEq for Hashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Hashed<K> {}

impl<K> Hash for Hashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands a [`Hashed`] key's stored hash to the map.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called (by `Hashed`); folded in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl<K, V, E> Slots<K, V, E> {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

impl<K: Eq + Hash + Clone, V, E> Slots<K, V, E> {
    fn new() -> Self {
        Slots { hasher: RandomState::new(), map: HashMap::default() }
    }

    /// `key` with its hash, for the look-ups below.
    pub(crate) fn hashed(&self, key: K) -> Hashed<K> {
        Hashed { hash: self.hasher.hash_one(&key), key }
    }

    /// The entry of `key`, hashing it once.
    pub(crate) fn entry(&mut self, key: K) -> hash_map::Entry<'_, Hashed<K>, Slot<V, E>> {
        let key = self.hashed(key);
        self.map.entry(key)
    }

    pub(crate) fn get(&self, key: &Hashed<K>) -> Option<&Slot<V, E>> {
        self.map.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &Hashed<K>) -> Option<&mut Slot<V, E>> {
        self.map.get_mut(key)
    }

    pub(crate) fn remove(&mut self, key: &Hashed<K>) -> Option<Slot<V, E>> {
        self.map.remove(key)
    }

    /// Removes the slot of `key` if `remove` says so.
    pub(crate) fn remove_if(&mut self, key: &K, remove: impl FnOnce(&Slot<V, E>) -> bool) {
        let key = self.hashed(key.clone());
        if self.map.get(&key).is_some_and(remove) {
            self.map.remove(&key);
        }
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&mut Slot<V, E>) -> bool) {
        self.map.retain(|_, slot| keep(slot));
    }
}

/// What the loader holds for a key.
pub(crate) enum Slot<V, E> {
    /// A memoized value: primed, or read once from its batch's answers.
    Cached(V),
    /// The key's batch: callers waiting for it, or — once it has answered,
    /// when memoizing — its answer, which later loads read in place (a value
    /// is cached; an error or not-found is asked for again).
    Waiting(Entry<V, E>),
}

impl<V, E> Slot<V, E> {
    /// The key's entry while its batch has not answered.
    pub(crate) fn waiting(&mut self) -> Option<&mut Entry<V, E>> {
        match self {
            Slot::Waiting(entry) if !entry.slot.is_answered() => Some(entry),
            _ => None,
        }
    }

    /// Whether the slot's batch has answered (or it holds a primed value):
    /// no caller waits on it, and dropping it forgets only a cached answer.
    pub(crate) fn is_settled(&self) -> bool {
        match self {
            Slot::Cached(_) => true,
            Slot::Waiting(entry) => entry.slot.is_answered(),
        }
    }
}

pub(crate) struct Entry<V, E> {
    /// Unique to this request of the key: a caller that finds another entry
    /// of its key was answered already.
    pub(crate) seq: u64,
    /// Callers still waiting; a pending key whose last caller leaves is
    /// withdrawn, a dispatched one is dropped from its batch if that has not
    /// started.
    pub(crate) callers: usize,
    /// The key's slot in its batch's answers, shared by every caller.
    pub(crate) slot: AnswerSlot<V, E>,
}

impl<V, E> Entry<V, E> {
    /// A key's first caller, with a new slot in the collecting batch: the
    /// key's entry and the caller's slot.
    fn first(seq: u64, collecting: &mut Option<Answerer<V, E>>) -> (Self, AnswerSlot<V, E>) {
        let slot = collecting.get_or_insert_with(Answerer::new).add_slot();
        let caller = slot.share();
        (Entry { seq, callers: 1, slot }, caller)
    }
}

/// Pending keys taken for one batch, with the answers their callers wait on.
pub(crate) struct Dispatch<K, V, E> {
    pub(crate) keys: Vec<K>,
    /// The answer slot of each key, when not simply its position (some keys
    /// of the batch were withdrawn while it collected).
    pub(crate) slots: Option<Vec<usize>>,
    pub(crate) answerer: Answerer<V, E>,
}

/// What registering a key gave: an answer now, or a place in a batch.
pub(crate) enum Ticket<'a, K: Eq + Hash + Clone, V, E> {
    Ready(Answer<V, E>),
    Wait(Waiter<'a, K, V, E>),
}

impl<K, V, E> Shared<K, V, E> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<K, V, E>> {
        // The state is consistent between statements (no user code runs under
        // the lock), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, V, E> Drop for Shared<K, V, E> {
    /// Counts the loads not counted yet (of keys withdrawn or still waiting).
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        st.counts.flush(&self.stats);
    }
}

impl<K, V, E> State<K, V, E>
where
    K: Eq + Hash + Clone,
{
    pub(crate) fn new(memoize: bool) -> Self {
        State {
            memoize,
            slots: Slots::new(),
            collecting: None,
            order: VecDeque::new(),
            stale: 0,
            next_seq: 0,
            dispatched: 0,
            in_flight_leaves: 0,
            pending: 0,
            pending_since: None,
            registered: 0,
            dispatcher: false,
            tick_gen: 0,
            ticked: false,
            epoch: 0,
            counts: Counts::default(),
        }
    }

    /// Moves every pending key, oldest first, into a batch (`None` when all
    /// were withdrawn). A batch is taken as soon as it is full, so there are
    /// never more than `max_batch_size` pending keys.
    pub(crate) fn take_pending(&mut self) -> Option<Dispatch<K, V, E>> {
        let answerer = self.collecting.take()?;
        let mut keys = Vec::with_capacity(self.pending);
        let slots = if self.stale == 0 {
            keys.extend(self.order.drain(..).map(|(_, key)| key));
            None
        } else {
            let mut slots = Vec::with_capacity(self.pending);
            for (seq, key) in self.order.drain(..) {
                let key = self.slots.hashed(key);
                if let Some(Slot::Waiting(entry)) = self.slots.get(&key)
                    && entry.seq == seq
                {
                    slots.push(entry.slot.index());
                    keys.push(key.key);
                }
            }
            Some(slots)
        };
        self.stale = 0;
        self.dispatched = self.next_seq;
        self.pending = 0;
        self.pending_since = None;
        if keys.is_empty() {
            return None;
        }
        Some(Dispatch { keys, slots, answerer })
    }

    /// Withdraws every pending key. Returns their answerer, which answers
    /// their callers [`LoadError::Abandoned`] when dropped (after the lock).
    #[must_use = "dropped after the lock is released"]
    pub(crate) fn abandon_pending(&mut self) -> Option<Answerer<V, E>> {
        let dispatched = self.dispatched;
        self.slots.retain(|slot| !matches!(slot, Slot::Waiting(entry) if entry.seq >= dispatched));
        self.order.clear();
        self.stale = 0;
        self.pending = 0;
        self.pending_since = None;
        self.dispatched = self.next_seq;
        self.collecting.take()
    }
}

impl<K, V, E> Shared<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    /// Registers `keys`, handing one ticket per key (in order) to `tickets`,
    /// and starts whatever dispatching that calls for.
    ///
    /// Returns a [`Lead`] when these keys started a new collecting batch under
    /// tick scheduling: the caller must yield once, then drop it.
    ///
    /// A batch these keys fill starts at once, after the lock is released
    /// (see [`start_full`](crate::dispatch::start_full) for `cx`).
    #[must_use = "the caller yields once, then drops the lead"]
    pub(crate) fn register<'a>(
        self: &'a Arc<Self>,
        keys: impl IntoIterator<Item = K>,
        mut cx: Option<&mut Context<'_>>,
        mut tickets: impl FnMut(Ticket<'a, K, V, E>),
    ) -> Option<Lead<'a, K, V, E>> {
        let mut lead = None;
        let max = self.config.max_batch_size;
        let mut full = None;
        let mut start_dispatcher = false;
        {
            let mut guard = self.lock();
            // Borrow the fields apart: the key's entry and the collecting batch.
            let st = &mut *guard;
            let hits_before = st.counts.hits;
            for key in keys {
                st.counts.loads += 1;
                if let Some(shared) = &self.shared_cache
                    && let Some(value) = shared.get(&key)
                {
                    st.counts.hits += 1;
                    tickets(Ticket::Ready(Ok(value)));
                    continue;
                }
                let seq;
                let slot = match st.slots.entry(key.clone()) {
                    hash_map::Entry::Occupied(slot) => {
                        let slot = slot.into_mut();
                        match slot {
                            Slot::Cached(value) => {
                                st.counts.hits += 1;
                                tickets(Ticket::Ready(Ok(value.clone())));
                                continue;
                            }
                            Slot::Waiting(entry) => match entry.slot.settled() {
                                Settled::Pending => {
                                    entry.callers += 1;
                                    seq = entry.seq;
                                    entry.slot.share()
                                }
                                Settled::Value(value) => {
                                    // Kept as a plain value from now on: later
                                    // hits take no lock, and the batch's answers
                                    // go once all its keys are read.
                                    *slot = Slot::Cached(value.clone());
                                    st.counts.hits += 1;
                                    tickets(Ticket::Ready(Ok(value)));
                                    continue;
                                }
                                // An error or not-found is not cached: ask again.
                                Settled::Failed => {
                                    seq = st.next_seq;
                                    let (first, caller) = Entry::first(seq, &mut st.collecting);
                                    *entry = first;
                                    caller
                                }
                            },
                        }
                    }
                    hash_map::Entry::Vacant(vacant) => {
                        seq = st.next_seq;
                        let (first, caller) = Entry::first(seq, &mut st.collecting);
                        vacant.insert(Slot::Waiting(first));
                        caller
                    }
                };
                st.registered += 1;
                if seq < st.next_seq {
                    st.counts.dedups += 1;
                } else {
                    st.next_seq += 1;
                    st.order.push_back((seq, key.clone()));
                    st.pending += 1;
                    if st.pending == 1 {
                        st.pending_since = Some(Instant::now());
                    }
                    if st.pending >= max {
                        if let Some(batch) = st.take_pending() {
                            full.get_or_insert_with(Vec::new).push((batch, st.in_flight_leaves));
                        }
                    } else if !st.dispatcher {
                        st.dispatcher = true;
                        start_dispatcher = true;
                        if let Schedule::Tick = self.config.schedule {
                            st.tick_gen += 1;
                            st.ticked = false;
                            lead = Some(Lead { shared: self, tick_gen: st.tick_gen });
                        }
                    }
                }
                tickets(Ticket::Wait(Waiter { shared: self, key: Some(key), slot }));
            }
            // Loads answered now are counted now; loads that wait, when their
            // batch is dispatched or answers.
            if st.counts.hits != hits_before || full.is_some() {
                st.counts.flush(&self.stats);
            }
        }
        if let Some(full) = full {
            for (batch, leaves) in full {
                crate::dispatch::start_full(self, batch, leaves, cx.as_deref_mut());
            }
        }
        if start_dispatcher {
            tokio::spawn(crate::dispatch::dispatch_pending(Arc::clone(self)));
        }
        lead
    }
}

/// Held by the load that started a collecting batch, across one yield of its
/// task. Dropping it tells the dispatcher that the task has yielded — so every
/// load it made in the same poll is registered — and the batch can go.
pub(crate) struct Lead<'a, K, V, E> {
    shared: &'a Shared<K, V, E>,
    tick_gen: u64,
}

impl<K, V, E> Drop for Lead<'_, K, V, E> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st.dispatcher && st.tick_gen == self.tick_gen {
            st.ticked = true;
        }
    }
}

/// Yields once: wakes its own task and returns `Pending` the first time it is
/// polled, so the task's other work in this poll runs first.
#[derive(Debug, Default)]
pub(crate) struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A caller's place in a batch. Dropping it before its batch is dispatched
/// withdraws the caller; a key nobody waits for any more leaves the batch.
pub(crate) struct Waiter<'a, K: Eq + Hash + Clone, V, E> {
    /// Borrowed from the loader, as the load's future is.
    shared: &'a Shared<K, V, E>,
    /// Until answered: the key, to withdraw the caller if it leaves first.
    key: Option<K>,
    slot: AnswerSlot<V, E>,
}

// Nothing in a waiter is structurally pinned.
impl<K: Eq + Hash + Clone, V, E> Unpin for Waiter<'_, K, V, E> {}

impl<K: Eq + Hash + Clone, V: Clone, E> Future for Waiter<'_, K, V, E> {
    type Output = Answer<V, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // No tokio resource is polled, so no cooperative budget is spent: the
        // answer is already computed, and a task awaiting a page of loads is
        // not forced to yield every 128 of them.
        let answer = std::task::ready!(this.slot.poll_answer(cx));
        this.key = None;
        Poll::Ready(answer)
    }
}

impl<K: Eq + Hash + Clone, V, E> Drop for Waiter<'_, K, V, E> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut st = self.shared.lock();
        let dispatched = st.dispatched;
        let key = st.slots.hashed(key);
        let Some(entry) = st.slots.get_mut(&key).and_then(Slot::waiting) else { return };
        if !entry.slot.is(&self.slot) {
            // The key was answered (or abandoned) and asked for again since.
            return;
        }
        entry.callers -= 1;
        let nobody_left = entry.callers == 0;
        let withdrawn = if entry.seq < dispatched {
            // A dispatched batch still runs for the callers still waiting; it
            // checks for callers that left before it starts.
            st.in_flight_leaves += 1;
            false
        } else if nobody_left {
            st.counts.flush(&self.shared.stats);
            st.slots.remove(&key);
            st.stale += 1;
            st.pending -= 1;
            if st.pending == 0 {
                st.pending_since = None;
            }
            true
        } else {
            false
        };
        drop(st);
        if withdrawn {
            self.shared.stats.add_cancelled(1);
        }
        self.slot.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_find_every_key_through_growth_and_removal() {
        let mut slots: Slots<String, u32, ()> = Slots::new();
        for i in 0..1000u32 {
            assert!(matches!(slots.entry(i.to_string()), hash_map::Entry::Vacant(_)));
            slots.entry(i.to_string()).or_insert(Slot::Cached(i));
        }
        assert_eq!(slots.len(), 1000);
        for i in (0..1000u32).step_by(2) {
            assert!(slots.remove(&slots.hashed(i.to_string())).is_some());
        }
        for i in 0..1000u32 {
            let found = slots.get(&slots.hashed(i.to_string())).map(|slot| matches!(slot, Slot::Cached(v) if *v == i));
            assert_eq!(found, (i % 2 == 1).then_some(true), "key {i}");
        }
        slots.retain(|slot| matches!(slot, Slot::Cached(v) if *v < 500));
        assert_eq!(slots.len(), 250);
    }

    #[test]
    fn keys_with_the_same_hash_stay_apart() {
        let mut slots: Slots<&str, u32, ()> = Slots::new();
        slots.map.insert(Hashed { hash: 7, key: "a" }, Slot::Cached(1));
        slots.map.insert(Hashed { hash: 7, key: "b" }, Slot::Cached(2));
        assert_eq!(slots.len(), 2);
        assert!(matches!(slots.map.get(&Hashed { hash: 7, key: "b" }), Some(Slot::Cached(2))));
        assert!(!slots.map.contains_key(&Hashed { hash: 8, key: "a" }), "the hash is part of the key");
    }
}
