//! Dispatching: when pending keys become a batch, and running a batch so that
//! every caller gets an answer — also when the batch function fails, panics,
//! returns the wrong count, times out, or its task is dropped.

use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Context;

use futures_util::FutureExt;
use tokio::time::Instant;

use crate::answers::Answerer;
use crate::batch::BatchFailure;
use crate::error::LoadError;
use crate::state::{Answer, Dispatch, Schedule, Shared, Slot};

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
    let (batch, leaves) = {
        let mut st = shared.lock();
        st.dispatcher = false;
        st.ticked = false;
        st.counts.flush(&shared.stats);
        (st.take_pending(), st.in_flight_leaves)
    };
    guard.shared = None;
    if let Some(batch) = batch {
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
            let abandoned = {
                let mut st = shared.lock();
                st.dispatcher = false;
                st.ticked = false;
                st.abandon_pending()
            };
            // Answers the withdrawn keys' callers, outside the lock.
            drop(abandoned);
        }
    }
}

/// Withdraws the keys of a batch whose task is dropped before it answered
/// (the batch's answerer, dropped with it, answers their callers).
struct BatchGuard<K: Eq + Hash + Clone, V, E> {
    shared: Arc<Shared<K, V, E>>,
    keys: Option<Arc<[K]>>,
}

impl<K: Eq + Hash + Clone, V, E> Drop for BatchGuard<K, V, E> {
    fn drop(&mut self) {
        if let Some(keys) = self.keys.take() {
            let mut st = self.shared.lock();
            for key in keys.iter() {
                st.slots.remove_if(key, |slot| matches!(slot, Slot::Waiting(_)));
            }
        }
    }
}

/// Starts a batch dispatched because it is full. With `cx`, the context of
/// the task whose load filled it, the batch is first polled right there (no
/// lock held): a batch function that answers without waiting (from memory, a
/// cache) answers before that task's next loads, which then find its values
/// instead of waiting for them. A batch that waits goes on on its own task.
#[inline]
pub(crate) fn start_full<K, V, E>(
    shared: &Arc<Shared<K, V, E>>,
    batch: Dispatch<K, V, E>,
    leaves_at_dispatch: u64,
    cx: Option<&mut Context<'_>>,
) where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    let run = run_batch(Arc::clone(shared), batch, leaves_at_dispatch);
    let Some(cx) = cx else {
        tokio::spawn(run);
        return;
    };
    let mut run = Box::pin(run);
    if run.as_mut().poll(cx).is_pending() {
        tokio::spawn(run);
    }
}

/// Runs one dispatched batch: waits for an in-flight permit, drops keys nobody
/// waits for any more (a batch with none left is not started), calls the batch
/// function without any lock held, and answers every caller.
///
/// `leaves_at_dispatch` is the loader's count of callers that left after
/// dispatch, read when this batch was dispatched: if it has not moved, every
/// key is still wanted and no look-ups are needed.
pub(crate) async fn run_batch<K, V, E>(shared: Arc<Shared<K, V, E>>, batch: Dispatch<K, V, E>, leaves_at_dispatch: u64)
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    let Dispatch { keys, mut slots, answerer } = batch;
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
            let mut live_slots = Vec::with_capacity(all.len());
            let mut cancelled = 0;
            for (i, key) in all.iter().enumerate() {
                let key = st.slots.hashed(key.clone());
                match st.slots.get_mut(&key).and_then(Slot::waiting).map(|entry| entry.callers) {
                    Some(0) => {
                        st.slots.remove(&key);
                        cancelled += 1;
                    }
                    Some(_) => {
                        live.push(key.key);
                        live_slots.push(slots.as_ref().and_then(|slots| slots.get(i).copied()).unwrap_or(i));
                    }
                    None => cancelled += 1,
                }
            }
            shared.stats.add_cancelled(cancelled);
            slots = Some(live_slots);
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
    deliver(&shared, &keys, slots.as_deref(), answers, epoch, answerer);
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

/// Answers every caller of `keys` (the key at `i` has answer slot
/// `slots[i]`, or `i`). When memoizing and the cache was not cleared since
/// the batch started, the keys' entries keep the answers in place (later
/// loads read a value from there, and ask again after an error), so no key
/// is looked up; otherwise the keys' entries are dropped. Callers are woken
/// after the lock is released.
fn deliver<K, V, E>(
    shared: &Shared<K, V, E>,
    keys: &[K],
    slots: Option<&[usize]>,
    answers: Vec<Answer<V, E>>,
    epoch: u64,
    answerer: Answerer<V, E>,
) where
    K: Eq + Hash + Clone + 'static,
    V: Clone + 'static,
{
    let (mut not_found, mut errors) = (0, 0);
    for answer in &answers {
        match answer {
            Ok(_) => {}
            Err(LoadError::NotFound) => not_found += 1,
            Err(_) => errors += 1,
        }
    }
    shared.stats.add_outcomes(not_found, errors);
    // Copies for a shared cache, written before any caller is woken.
    let to_cache: Vec<(K, V)> = match &shared.shared_cache {
        Some(_) => keys
            .iter()
            .zip(&answers)
            .filter_map(|(key, answer)| answer.as_ref().ok().map(|value| (key.clone(), value.clone())))
            .collect(),
        None => Vec::new(),
    };
    let by_slot = match slots {
        None if answers.len() == answerer.slots() => answers.into_iter().map(Some).collect(),
        _ => {
            let mut by_slot: Vec<Option<Answer<V, E>>> =
                std::iter::repeat_with(|| None).take(answerer.slots()).collect();
            for (i, answer) in answers.into_iter().enumerate() {
                let slot = slots.and_then(|slots| slots.get(i).copied()).unwrap_or(i);
                if let Some(place) = by_slot.get_mut(slot) {
                    *place = Some(answer);
                }
            }
            by_slot
        }
    };
    let (wakers, cache_fresh) = {
        let mut st = shared.lock();
        st.counts.flush(&shared.stats);
        let cache_fresh = st.epoch == epoch;
        if !(st.memoize && cache_fresh) {
            for key in keys {
                st.slots.remove_if(key, |slot| matches!(slot, Slot::Waiting(entry) if answerer.owns(&entry.slot)));
            }
        }
        // Under the lock, so that the state never shows an entry whose batch
        // has delivered without its answer.
        (answerer.publish(by_slot), cache_fresh)
    };
    if cache_fresh && let Some(cache) = &shared.shared_cache {
        for (key, value) in to_cache {
            cache.insert(key, value);
        }
    }
    crate::answers::wake(wakers);
}
