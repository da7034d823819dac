//! Loads in flight, one per key: concurrent misses wait on the same load.
//!
//! The load runs in its own task, so it finishes (and fills the cache) even
//! when the caller that started it stops waiting — after a soft timeout, or
//! because its request was cancelled.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::hit::Hit;

/// A loader error, shared with every waiter; each downcasts it to its own
/// error type.
pub(crate) type Erased = Arc<dyn Any + Send + Sync>;

#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// The value, cached (unless fenced) and shared with every waiter.
    Value(Hit<Bytes>),
    /// The leader's value, not stored: waiters run their own loader.
    Pass(Hit<Bytes>),
    Failed(Erased),
    Timeout(Duration),
}

#[derive(Debug)]
pub(crate) struct Flight {
    id: u64,
    tx: watch::Sender<Option<Outcome>>,
    /// Set by a delete, a set or a bus message for this key while the load
    /// runs: its result must not be written back.
    pub(crate) fenced: AtomicBool,
}

impl Flight {
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Outcome>> {
        self.tx.subscribe()
    }

    pub(crate) fn complete(&self, outcome: Outcome) {
        self.tx.send_replace(Some(outcome));
    }
}

#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
    next_id: AtomicU64,
}

impl Flights {
    /// The flight for `key`, and whether the caller must start it.
    pub(crate) fn join_or_lead(&self, key: &Arc<str>) -> (Arc<Flight>, bool) {
        let mut map = self.map.lock();
        if let Some(f) = map.get(key) {
            return (Arc::clone(f), false);
        }
        let f = self.new_flight();
        map.insert(Arc::clone(key), Arc::clone(&f));
        (f, true)
    }

    /// A new flight for `key` when none is running (early refresh).
    pub(crate) fn lead_if_idle(&self, key: &Arc<str>) -> Option<Arc<Flight>> {
        let mut map = self.map.lock();
        if map.contains_key(key) {
            return None;
        }
        let f = self.new_flight();
        map.insert(Arc::clone(key), Arc::clone(&f));
        Some(f)
    }

    fn new_flight(&self) -> Arc<Flight> {
        let (tx, _) = watch::channel(None);
        Arc::new(Flight { id: self.next_id.fetch_add(1, Ordering::Relaxed), tx, fenced: AtomicBool::new(false) })
    }

    /// Removes the flight, if it is still the one registered for `key`.
    pub(crate) fn finish(&self, key: &str, flight: &Flight) {
        let mut map = self.map.lock();
        if map.get(key).is_some_and(|f| f.id == flight.id) {
            map.remove(key);
        }
    }

    pub(crate) fn fence(&self, key: &str) {
        if let Some(f) = self.map.lock().get(key) {
            f.fenced.store(true, Ordering::SeqCst);
        }
    }

    pub(crate) fn fence_matching(&self, pred: impl Fn(&str) -> bool) {
        for (k, f) in self.map.lock().iter() {
            if pred(k) {
                f.fenced.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Removes the flight when the load task ends, also by a panic: the flight's
/// sender then drops and waiters see the load was aborted.
#[derive(Debug)]
pub(crate) struct FlightGuard<'a> {
    pub(crate) flights: &'a Flights,
    pub(crate) key: Arc<str>,
    pub(crate) flight: Arc<Flight>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.flights.finish(&self.key, &self.flight);
    }
}
