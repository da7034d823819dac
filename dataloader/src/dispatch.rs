//! Dispatching: when pending keys become a batch, and running a batch so that
//! every caller gets an answer — also when the batch function fails, panics,
//! returns the wrong count, times out, or its task is dropped.

use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::time::Instant;

use crate::batch::BatchFailure;
use crate::error::LoadError;
use crate::state::{Answer, Schedule, Shared, Slot};

/// Yields without a new load after which the tick dispatcher stops waiting for
/// a leading load that is not polled again (polled once, then neither polled
/// nor dropped — rare, but it must not stall the batch). Large, because on a
/// multi-thread runtime the dispatcher yields on another worker while the
/// submitting task may still be registering loads in the same poll, or be
/// preempted by the OS for milliseconds. It bounds how long a neglected lead
/// can hold a batch (tens of milliseconds) without needing a timer.
const NEGLECTED_LEAD_YIELDS: u32 = 50_000;

/// The dispatcher task of a collecting batch: waits for the tick (or window),
/// then dispatches every pending key.
pub(crate) async fn dispatch_pending<K, V, E>(shared: Arc<Shared<K, V, E>>)
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    let mut guard = DispatcherGuard { shared: Some(Arc::clone(&shared)) };
    match shared.config.schedule {
        Schedule::Tick => {
            // Normally the leading load signals the tick within a yield or two.
            // If it is never polled again (polled once, then neglected), go
            // anyway once loads have stopped arriving for a while.
            let mut seen = shared.lock().registered;
            let mut quiet = 0;
            loop {
                {
                    let st = shared.lock();
                    if st.ticked {
                        break;
                    }
                    if st.registered == seen {
                        quiet += 1;
                        if quiet > NEGLECTED_LEAD_YIELDS {
                            break;
                        }
                    } else {
                        quiet = 0;
                        seen = st.registered;
                    }
                }
                tokio::task::yield_now().await;
            }
        }
        Schedule::Window(window) => loop {
            let since = shared.lock().pending_since;
            let Some(since) = since else { break };
            let deadline = since + window;
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep_until(deadline).await;
        },
    }
    let (mut batches, leaves) = {
        let mut st = shared.lock();
        st.dispatcher = false;
        st.ticked = false;
        (st.take_all(shared.config.max_batch_size), st.in_flight_leaves)
    };
    guard.shared = None;
    let last = batches.pop();
    for batch in batches {
        tokio::spawn(run_batch(Arc::clone(&shared), batch, leaves));
    }
    if let Some(batch) = last {
        run_batch(shared, batch, leaves).await;
    }
}

/// If a dispatcher task is dropped before it dispatched (its runtime shut
/// down), its pending keys would wait for ever: abandon them instead.
struct DispatcherGuard<K: Eq + Hash + Clone, V, E> {
    shared: Option<Arc<Shared<K, V, E>>>,
}

impl<K: Eq + Hash + Clone, V, E> Drop for DispatcherGuard<K, V, E> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut st = shared.lock();
            st.dispatcher = false;
            st.ticked = false;
            st.abandon_pending();
        }
    }
}

/// Fails the keys of a batch whose task is dropped before it answered.
struct BatchGuard<K: Eq + Hash, V, E> {
    shared: Arc<Shared<K, V, E>>,
    keys: Option<Arc<[K]>>,
}

impl<K: Eq + Hash, V, E> Drop for BatchGuard<K, V, E> {
    fn drop(&mut self) {
        if let Some(keys) = self.keys.take() {
            let mut st = self.shared.lock();
            for key in keys.iter() {
                // Dropping the senders answers every caller with `Abandoned`.
                if let Some(Slot::Waiting(_)) = st.slots.get(key) {
                    st.slots.remove(key);
                }
            }
        }
    }
}

/// Runs one dispatched batch: waits for an in-flight permit, drops keys nobody
/// waits for any more (a batch with none left is not started), calls the batch
/// function without any lock held, and answers every caller.
///
/// `leaves_at_dispatch` is the loader's count of callers that left after
/// dispatch, read when this batch was dispatched: if it has not moved, every
/// key is still wanted and no look-ups are needed.
pub(crate) async fn run_batch<K, V, E>(shared: Arc<Shared<K, V, E>>, keys: Vec<K>, leaves_at_dispatch: u64)
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    if keys.is_empty() {
        return;
    }
    let mut guard = BatchGuard { shared: Arc::clone(&shared), keys: Some(keys.into()) };
    let _permit = match &shared.permits {
        // The semaphore is never closed; `ok()` keeps that an invariant of this module only.
        Some(permits) => Arc::clone(permits).acquire_owned().await.ok(),
        None => None,
    };

    let (keys, epoch) = {
        let mut st = shared.lock();
        let all = guard.keys.take().expect("armed until here");
        if st.in_flight_leaves == leaves_at_dispatch {
            (all, st.epoch)
        } else {
            let mut live = Vec::with_capacity(all.len());
            let mut cancelled = 0;
            for key in all.iter() {
                match st.slots.get_mut(key).and_then(Slot::waiting).map(|entry| entry.waiters.retain_open()) {
                    Some(true) => live.push(key.clone()),
                    Some(false) => {
                        st.slots.remove(key);
                        cancelled += 1;
                    }
                    None => cancelled += 1,
                }
            }
            shared.stats.add_cancelled(cancelled);
            (Arc::<[K]>::from(live), st.epoch)
        }
    };
    if keys.is_empty() {
        tracing::trace!("every caller of the batch left before it started; not started");
        return;
    }
    guard.keys = Some(Arc::clone(&keys));
    shared.stats.record_batch(keys.len());
    tracing::trace!(keys = keys.len(), "batch started");

    let call = AssertUnwindSafe(shared.batch_fn.call(Arc::clone(&keys))).catch_unwind();
    let outcome = match shared.config.batch_timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map(|r| r.map_err(Failure::from)),
            Err(_) => Ok(Err(Failure::TimedOut(limit))),
        },
        None => call.await.map(|r| r.map_err(Failure::from)),
    };
    let answers: Vec<Answer<V, E>> = match outcome {
        Ok(Ok(results)) => results
            .into_iter()
            .map(|r| match r {
                None => Err(LoadError::NotFound),
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => Err(LoadError::Key(Arc::new(e))),
            })
            .collect(),
        Ok(Err(failure)) => {
            let err = match failure {
                Failure::Batch(e) => LoadError::Batch(Arc::new(e)),
                Failure::WrongCount { expected, returned } => {
                    tracing::warn!(expected, returned, "batch function returned the wrong number of results");
                    LoadError::WrongCount { expected, returned }
                }
                Failure::TimedOut(limit) => {
                    tracing::warn!(?limit, keys = keys.len(), "batch function timed out");
                    LoadError::TimedOut(limit)
                }
            };
            vec![Err(err); keys.len()]
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| Arc::<str>::from(*s))
                .or_else(|| panic.downcast_ref::<String>().map(|s| Arc::<str>::from(s.as_str())));
            tracing::error!(message = message.as_deref(), "batch function panicked");
            vec![Err(LoadError::Panicked(message)); keys.len()]
        }
    };
    guard.keys = None;
    deliver(&shared, &keys, answers, epoch);
}

/// A batch-level failure, including the ones the loader itself detects.
enum Failure<E> {
    Batch(E),
    WrongCount { expected: usize, returned: usize },
    TimedOut(std::time::Duration),
}

impl<E> From<BatchFailure<E>> for Failure<E> {
    fn from(f: BatchFailure<E>) -> Self {
        match f {
            BatchFailure::Batch(e) => Failure::Batch(e),
            BatchFailure::WrongCount { expected, returned } => Failure::WrongCount { expected, returned },
        }
    }
}

/// Answers every caller of `keys`; caches the values found unless the cache was
/// cleared since the batch started. Values are cloned and sent after the lock
/// is released.
fn deliver<K, V, E>(shared: &Shared<K, V, E>, keys: &[K], answers: Vec<Answer<V, E>>, epoch: u64)
where
    K: Eq + Hash + Clone + 'static,
    V: Clone + 'static,
{
    let (mut not_found, mut errors) = (0, 0);
    let mut deliveries = Vec::with_capacity(keys.len());
    let cache_fresh;
    {
        let mut st = shared.lock();
        cache_fresh = st.epoch == epoch;
        let memoize = st.memoize && cache_fresh;
        for (key, answer) in keys.iter().zip(answers) {
            match &answer {
                Ok(_) => {}
                Err(LoadError::NotFound) => not_found += 1,
                Err(_) => errors += 1,
            }
            let waiters = match (st.slots.get_mut(key), &answer) {
                (Some(slot @ Slot::Waiting(_)), Ok(value)) if memoize => {
                    match std::mem::replace(slot, Slot::Cached(value.clone())) {
                        Slot::Waiting(entry) => Some(entry.waiters),
                        Slot::Cached(_) => None,
                    }
                }
                (Some(Slot::Waiting(_)), _) => match st.slots.remove(key) {
                    Some(Slot::Waiting(entry)) => Some(entry.waiters),
                    _ => None,
                },
                _ => None,
            };
            deliveries.push((waiters, answer));
        }
    }
    shared.stats.add_outcomes(not_found, errors);
    if cache_fresh && let Some(cache) = &shared.shared_cache {
        for (key, (_, answer)) in keys.iter().zip(&deliveries) {
            if let Ok(value) = answer {
                cache.insert(key.clone(), value.clone());
            }
        }
    }
    for (waiters, answer) in deliveries {
        if let Some(waiters) = waiters {
            waiters.answer(answer);
        }
    }
}
