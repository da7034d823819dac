//! The loader's shared state: which keys are waited for, which are pending a
//! batch and which are in one. Pure bookkeeping under one short-held mutex;
//! the batch function is never called with it held (see `dispatch.rs`).

use std::collections::{HashMap, VecDeque, hash_map};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use crate::batch::ErasedBatchFn;
use crate::cache::ValueCache;
use crate::error::LoadError;
use crate::stats::LoaderStats;

pub(crate) type Answer<V, E> = Result<V, LoadError<E>>;
type Tx<V, E> = oneshot::Sender<Answer<V, E>>;

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
    pub(crate) slots: HashMap<K, Slot<V, E>>,
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
}

/// What the loader holds for a key.
pub(crate) enum Slot<V, E> {
    /// A memoized value.
    Cached(V),
    /// Callers waiting for the key's batch.
    Waiting(Entry<V, E>),
}

impl<V, E> Slot<V, E> {
    pub(crate) fn waiting(&mut self) -> Option<&mut Entry<V, E>> {
        match self {
            Slot::Waiting(entry) => Some(entry),
            Slot::Cached(_) => None,
        }
    }
}

pub(crate) struct Entry<V, E> {
    pub(crate) seq: u64,
    pub(crate) waiters: Waiters<V, E>,
}

/// The callers of one key; one caller (the common case) needs no `Vec`.
pub(crate) enum Waiters<V, E> {
    One(Tx<V, E>),
    Many(Vec<Tx<V, E>>),
}

impl<V, E> Waiters<V, E> {
    fn push(&mut self, tx: Tx<V, E>) {
        match self {
            Waiters::Many(all) => all.push(tx),
            Waiters::One(_) => {
                let Waiters::One(first) = std::mem::replace(self, Waiters::Many(Vec::new())) else {
                    unreachable!("matched One")
                };
                // Keys repeated within a request are usually repeated a few
                // times: room for four saves the first regrowths.
                let mut all = Vec::with_capacity(4);
                all.extend([first, tx]);
                *self = Waiters::Many(all);
            }
        }
    }

    /// Forgets callers that left; `false` when none is left.
    pub(crate) fn retain_open(&mut self) -> bool {
        match self {
            Waiters::One(tx) => !tx.is_closed(),
            Waiters::Many(all) => {
                all.retain(|tx| !tx.is_closed());
                !all.is_empty()
            }
        }
    }
}

impl<V: Clone, E> Waiters<V, E> {
    /// Sends `answer` to every caller still waiting (a clone to all but the last).
    pub(crate) fn answer(self, answer: Answer<V, E>) {
        match self {
            Waiters::One(tx) => {
                let _ = tx.send(answer);
            }
            Waiters::Many(all) => {
                let mut open = all.into_iter().filter(|tx| !tx.is_closed()).peekable();
                while let Some(tx) = open.next() {
                    if open.peek().is_none() {
                        let _ = tx.send(answer);
                        break;
                    }
                    let _ = tx.send(answer.clone());
                }
            }
        }
    }
}

/// What registering a key gave: an answer now, or a place in a batch.
pub(crate) enum Ticket<K: Eq + Hash + Clone, V, E> {
    Ready(Answer<V, E>),
    Wait(Waiter<K, V, E>),
}

impl<K, V, E> Shared<K, V, E> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<K, V, E>> {
        // The state is consistent between statements (no user code runs under
        // the lock), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, V, E> State<K, V, E>
where
    K: Eq + Hash + Clone,
{
    pub(crate) fn new(memoize: bool) -> Self {
        State {
            memoize,
            slots: HashMap::new(),
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
        }
    }

    /// Moves up to `max` pending keys, oldest first, into a batch.
    pub(crate) fn take_batch(&mut self, max: usize) -> Vec<K> {
        let mut batch = Vec::with_capacity(self.pending.min(max));
        if self.stale == 0 {
            let n = max.min(self.order.len());
            batch.extend(self.order.drain(..n).map(|(_, key)| key));
        } else {
            while batch.len() < max {
                let Some((seq, key)) = self.order.pop_front() else { break };
                if matches!(self.slots.get(&key), Some(Slot::Waiting(entry)) if entry.seq == seq) {
                    batch.push(key);
                } else {
                    self.stale -= 1;
                }
            }
        }
        self.dispatched = self.order.front().map_or(self.next_seq, |(seq, _)| *seq);
        self.pending -= batch.len();
        self.pending_since = if self.pending == 0 { None } else { Some(Instant::now()) };
        batch
    }

    /// Withdraws every pending key (their callers see [`LoadError::Abandoned`]).
    pub(crate) fn abandon_pending(&mut self) {
        let dispatched = self.dispatched;
        self.slots.retain(|_, slot| !matches!(slot, Slot::Waiting(entry) if entry.seq >= dispatched));
        self.order.clear();
        self.stale = 0;
        self.pending = 0;
        self.pending_since = None;
        self.dispatched = self.next_seq;
    }

    /// Takes every pending key, in batches of at most `max`.
    pub(crate) fn take_all(&mut self, max: usize) -> Vec<Vec<K>> {
        let mut batches = Vec::new();
        while self.pending > 0 {
            let batch = self.take_batch(max);
            if batch.is_empty() {
                break;
            }
            batches.push(batch);
        }
        batches
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
    #[must_use = "the caller yields once, then drops the lead"]
    pub(crate) fn register(
        self: &Arc<Self>,
        keys: impl IntoIterator<Item = K>,
        mut tickets: impl FnMut(Ticket<K, V, E>),
    ) -> Option<Lead<K, V, E>> {
        let mut lead = None;
        let max = self.config.max_batch_size;
        let (mut loads, mut hits, mut dedups) = (0u64, 0u64, 0u64);
        let mut full = Vec::new();
        let mut start_dispatcher = false;
        {
            let mut st = self.lock();
            for key in keys {
                loads += 1;
                if let Some(shared) = &self.shared_cache
                    && let Some(value) = shared.get(&key)
                {
                    hits += 1;
                    tickets(Ticket::Ready(Ok(value)));
                    continue;
                }
                let seq = st.next_seq;
                let (tx, rx);
                let is_new = match st.slots.entry(key.clone()) {
                    hash_map::Entry::Occupied(slot) => match slot.into_mut() {
                        Slot::Cached(value) => {
                            hits += 1;
                            tickets(Ticket::Ready(Ok(value.clone())));
                            continue;
                        }
                        Slot::Waiting(entry) => {
                            (tx, rx) = oneshot::channel();
                            entry.waiters.push(tx);
                            false
                        }
                    },
                    hash_map::Entry::Vacant(slot) => {
                        (tx, rx) = oneshot::channel();
                        slot.insert(Slot::Waiting(Entry { seq, waiters: Waiters::One(tx) }));
                        true
                    }
                };
                st.registered += 1;
                if !is_new {
                    dedups += 1;
                } else {
                    st.next_seq += 1;
                    st.order.push_back((seq, key.clone()));
                    st.pending += 1;
                    if st.pending == 1 {
                        st.pending_since = Some(Instant::now());
                    }
                    if st.pending >= max {
                        let batch = st.take_batch(max);
                        full.push((batch, st.in_flight_leaves));
                    } else if !st.dispatcher {
                        st.dispatcher = true;
                        start_dispatcher = true;
                        if let Schedule::Tick = self.config.schedule {
                            st.tick_gen += 1;
                            st.ticked = false;
                            lead = Some(Lead { shared: Arc::clone(self), tick_gen: st.tick_gen });
                        }
                    }
                }
                tickets(Ticket::Wait(Waiter { shared: Arc::clone(self), key: Some(key), rx, done: false }));
            }
        }
        self.stats.add_loads(loads);
        self.stats.add_cache_hits(hits);
        self.stats.add_dedups(dedups);
        for (batch, leaves) in full {
            tokio::spawn(crate::dispatch::run_batch(Arc::clone(self), batch, leaves));
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
pub(crate) struct Lead<K, V, E> {
    shared: Arc<Shared<K, V, E>>,
    tick_gen: u64,
}

impl<K, V, E> Drop for Lead<K, V, E> {
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
pub(crate) struct Waiter<K: Eq + Hash + Clone, V, E> {
    shared: Arc<Shared<K, V, E>>,
    key: Option<K>,
    rx: oneshot::Receiver<Answer<V, E>>,
    done: bool,
}

// Nothing in a waiter is structurally pinned.
impl<K: Eq + Hash + Clone, V, E> Unpin for Waiter<K, V, E> {}

impl<K: Eq + Hash + Clone, V, E> Future for Waiter<K, V, E> {
    type Output = Answer<V, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Outside tokio's cooperative budget: the answer is already computed,
        // and a task awaiting a page of loads would otherwise be forced to
        // yield after every 128 of them, re-polling everything it joins.
        match Pin::new(&mut tokio::task::unconstrained(&mut this.rx)).poll(cx) {
            Poll::Ready(answer) => {
                this.done = true;
                // The sender is dropped without an answer only when the task
                // running the batch was dropped (the runtime shut down).
                Poll::Ready(answer.unwrap_or(Err(LoadError::Abandoned)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<K: Eq + Hash + Clone, V, E> Drop for Waiter<K, V, E> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.rx.close();
        let Some(key) = self.key.take() else { return };
        let mut st = self.shared.lock();
        let dispatched = st.dispatched;
        let Some(entry) = st.slots.get_mut(&key).and_then(Slot::waiting) else { return };
        if entry.seq < dispatched {
            // A dispatched batch still runs for the callers still waiting; it
            // checks for callers that left before it starts.
            st.in_flight_leaves += 1;
            return;
        }
        if !entry.waiters.retain_open() {
            st.slots.remove(&key);
            st.stale += 1;
            st.pending -= 1;
            if st.pending == 0 {
                st.pending_since = None;
            }
            drop(st);
            self.shared.stats.add_cancelled(1);
        }
    }
}
