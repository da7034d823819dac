//! The loader and its builder.

use std::collections::hash_map;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::answers::Settled;
use crate::batch::{BatchFn, Erased, ErasedBatchFn};
use crate::cache::ValueCache;
use crate::error::LoadError;
use crate::load::Load;
use crate::state::{Config, Schedule, Shared, Slot, State, Ticket, YieldOnce};
use crate::stats::LoaderStats;

const DEFAULT_MAX_BATCH_SIZE: usize = 1_000;
const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// Batches and de-duplicates loads of `K` into calls of a [`BatchFn`], and
/// memoizes the values (`V`) it returns.
///
/// Cheap to clone: clones share the pending keys, the batches in flight, the
/// cache and the stats. Loads must be awaited inside a Tokio runtime (batches
/// run on spawned tasks).
///
/// ```
/// use std::collections::HashMap;
/// use brisk_dataloader::{DataLoader, batch_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let loader = DataLoader::new(batch_fn(|ids: Vec<u32>| async move {
///     // one query for the whole batch, e.g. `SELECT … WHERE id = ANY($1)`
///     Ok::<_, std::io::Error>(ids.iter().map(|&id| (id, format!("user {id}"))).collect::<HashMap<_, _>>())
/// }));
/// let (a, b) = tokio::join!(loader.load(1), loader.load(2)); // one batch: [1, 2]
/// assert_eq!(a.unwrap(), "user 1");
/// assert_eq!(b.unwrap(), "user 2");
/// # }
/// ```
pub struct DataLoader<K, V, E> {
    shared: Arc<Shared<K, V, E>>,
}

impl<K, V, E> Clone for DataLoader<K, V, E> {
    fn clone(&self) -> Self {
        DataLoader { shared: Arc::clone(&self.shared) }
    }
}

impl<K, V, E> fmt::Debug for DataLoader<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("DataLoader")
            .field("name", &self.shared.stats.name())
            .field("max_batch_size", &self.shared.config.max_batch_size)
            .field("pending_keys", &st.pending)
            .field("memoized_and_waiting_keys", &st.slots.len())
            .finish_non_exhaustive()
    }
}

impl<K, V, E> DataLoader<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    /// A loader with the default settings: batches of at most 1,000 keys
    /// dispatched at the tick, at most 16 batches in flight, a per-loader cache.
    pub fn new<F: BatchFn<K, V, Error = E>>(batch_fn: F) -> Self {
        Self::builder(batch_fn).build()
    }

    /// A builder to configure the loader.
    pub fn builder<F: BatchFn<K, V, Error = E>>(batch_fn: F) -> Builder<K, V, E> {
        Builder {
            batch_fn: Arc::new(Erased(Arc::new(batch_fn))),
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_in_flight: NonZeroUsize::new(DEFAULT_MAX_IN_FLIGHT),
            schedule: Schedule::Tick,
            batch_timeout: None,
            cache: CacheChoice::PerLoader,
            stats: None,
        }
    }

    /// Loads the value of `key`.
    ///
    /// The key is registered when the future is first polled, and batched
    /// with every other key registered before the batch is dispatched.
    /// Dropping the future before then withdraws the key (if no other caller
    /// wants it); after, the batch still answers the other callers.
    ///
    /// # Errors
    ///
    /// [`LoadError::NotFound`] when the batch function returned no value for
    /// the key, or the error of the key or of its batch.
    ///
    /// # Panics
    ///
    /// When polled outside a Tokio runtime (batches run on spawned tasks), as
    /// `tokio::spawn` does. A panic of the batch function is not propagated:
    /// it is [`LoadError::Panicked`].
    pub fn load(&self, key: K) -> impl Future<Output = Result<V, LoadError<E>>> + '_ {
        Load::new(&self.shared, key)
    }

    /// Like [`load`](Self::load), with "not found" as `Ok(None)`.
    ///
    /// # Errors
    ///
    /// The error of the key or of its batch.
    pub async fn try_load(&self, key: K) -> Result<Option<V>, LoadError<E>> {
        match self.load(key).await {
            Ok(value) => Ok(Some(value)),
            Err(LoadError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Loads many keys at once; the answers are in the order of `keys`.
    /// Repeated keys are requested once.
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use brisk_dataloader::{DataLoader, batch_fn};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let loader = DataLoader::new(batch_fn(|ids: Vec<u32>| async move {
    /// #     Ok::<_, std::io::Error>(ids.iter().filter(|&&id| id != 7).map(|&id| (id, id * 10)).collect::<HashMap<_, _>>())
    /// # }));
    /// let answers = loader.load_many([3, 7, 3]).await;
    /// assert_eq!(answers[0].as_ref().ok(), Some(&30));
    /// assert!(answers[1].as_ref().is_err_and(|e| e.is_not_found()));
    /// // all or nothing:
    /// let values: Result<Vec<u32>, _> = loader.load_many([1, 2]).await.into_iter().collect();
    /// assert_eq!(values.unwrap(), [10, 20]);
    /// # }
    /// ```
    pub fn load_many<I>(&self, keys: I) -> impl Future<Output = Vec<Result<V, LoadError<E>>>> + Send + '_
    where
        I: IntoIterator<Item = K>,
    {
        let keys: Vec<K> = keys.into_iter().collect();
        async move {
            let mut tickets = Vec::with_capacity(keys.len());
            if let Some(lead) = self.shared.register(keys, None, |t| tickets.push(t)) {
                YieldOnce::default().await;
                drop(lead);
            }
            let mut answers = Vec::with_capacity(tickets.len());
            // Every key is registered before the first await, so they all share
            // batches; awaiting them in order costs nothing extra.
            for ticket in tickets {
                answers.push(match ticket {
                    Ticket::Ready(answer) => answer,
                    Ticket::Wait(waiter) => waiter.await,
                });
            }
            answers
        }
    }

    /// Puts `value` in the cache for `key`, unless the key is cached already
    /// or being loaded; returns whether it was put. Does nothing (and returns
    /// `false`) when caching is off.
    pub fn prime(&self, key: K, value: V) -> bool {
        if let Some(shared) = &self.shared.shared_cache {
            if shared.get(&key).is_some() {
                return false;
            }
            shared.insert(key, value);
            return true;
        }
        let mut st = self.shared.lock();
        if !st.memoize {
            return false;
        }
        match st.slots.entry(key) {
            hash_map::Entry::Vacant(slot) => {
                slot.insert(Slot::Cached(value));
                true
            }
            hash_map::Entry::Occupied(mut slot) => match slot.get() {
                // A key whose batch answered an error or not-found holds no value.
                Slot::Waiting(entry) if matches!(entry.slot.settled(), Settled::Failed) => {
                    slot.insert(Slot::Cached(value));
                    true
                }
                _ => false,
            },
        }
    }

    /// Forgets the cached value of `key`. A batch already running does not
    /// write its values back into the cache.
    pub fn clear(&self, key: &K) {
        let mut st = self.shared.lock();
        st.epoch += 1;
        st.slots.remove_if(key, Slot::is_settled);
        drop(st);
        if let Some(shared) = &self.shared.shared_cache {
            shared.remove(key);
        }
    }

    /// Forgets every cached value. A batch already running does not write its
    /// values back into the cache.
    pub fn clear_all(&self) {
        let mut st = self.shared.lock();
        st.epoch += 1;
        st.slots.retain(|slot| !slot.is_settled());
        drop(st);
        if let Some(shared) = &self.shared.shared_cache {
            shared.clear();
        }
    }

    /// What this loader (and every loader sharing its stats) did.
    pub fn stats(&self) -> &LoaderStats {
        self.shared.lock().counts.flush(&self.shared.stats);
        &self.shared.stats
    }

    /// Registers the loader's stats with a prometheus-client registry; see
    /// [`LoaderStats::register`].
    #[cfg(feature = "prometheus")]
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.shared.stats.register(registry);
    }
}

enum CacheChoice<K, V> {
    PerLoader,
    Disabled,
    Shared(Arc<dyn ValueCache<K, V>>),
}

impl<K, V> Clone for CacheChoice<K, V> {
    fn clone(&self) -> Self {
        match self {
            CacheChoice::PerLoader => CacheChoice::PerLoader,
            CacheChoice::Disabled => CacheChoice::Disabled,
            CacheChoice::Shared(c) => CacheChoice::Shared(Arc::clone(c)),
        }
    }
}

/// Configures a [`DataLoader`]; from [`DataLoader::builder`].
///
/// [`build`](Builder::build) takes `&self`, so a builder is also a factory of
/// fresh request-scoped loaders that share the batch function, the stats and
/// any shared cache:
///
/// ```
/// use std::collections::HashMap;
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use brisk_dataloader::{DataLoader, LoaderStats, batch_fn};
///
/// let users = DataLoader::builder(batch_fn(|ids: Vec<i64>| async move {
///     Ok::<_, std::io::Error>(HashMap::<i64, String>::new())
/// }))
/// .max_batch_size(NonZeroUsize::new(100).unwrap())
/// .batch_timeout(Duration::from_secs(5))
/// .stats(LoaderStats::new("users"));
/// let for_this_request = users.build();
/// let for_the_next_one = users.build(); // its own cache
/// # drop((for_this_request, for_the_next_one));
/// ```
#[must_use]
pub struct Builder<K, V, E> {
    batch_fn: Arc<dyn ErasedBatchFn<K, V, E>>,
    max_batch_size: usize,
    max_in_flight: Option<NonZeroUsize>,
    schedule: Schedule,
    batch_timeout: Option<Duration>,
    cache: CacheChoice<K, V>,
    stats: Option<LoaderStats>,
}

impl<K, V, E> Clone for Builder<K, V, E> {
    fn clone(&self) -> Self {
        Builder {
            batch_fn: Arc::clone(&self.batch_fn),
            max_batch_size: self.max_batch_size,
            max_in_flight: self.max_in_flight,
            schedule: self.schedule,
            batch_timeout: self.batch_timeout,
            cache: self.cache.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<K, V, E> fmt::Debug for Builder<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("max_batch_size", &self.max_batch_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("schedule", &self.schedule)
            .field("batch_timeout", &self.batch_timeout)
            .finish_non_exhaustive()
    }
}

impl<K, V, E> Builder<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    /// Keys per call of the batch function, at most (default 1,000). A batch
    /// that reaches it is dispatched at once — first polled by the load that
    /// filled it (no lock held), then, if the batch function waits, on its
    /// own task — and larger sets of pending keys are split.
    pub fn max_batch_size(mut self, max: NonZeroUsize) -> Self {
        self.max_batch_size = max.get();
        self
    }

    /// Batches of this loader running at once, at most (default 16); more wait
    /// for one to finish. Their keys count as in flight meanwhile (later loads
    /// of them join), and a batch whose callers all left while it waited is
    /// not started.
    pub fn max_in_flight(mut self, max: NonZeroUsize) -> Self {
        self.max_in_flight = Some(max);
        self
    }

    /// No bound on the batches running at once.
    pub fn unbounded_in_flight(mut self) -> Self {
        self.max_in_flight = None;
        self
    }

    /// Collect keys for `window` after the first key of a batch instead of
    /// until the tick (the default); a full batch is still dispatched at once.
    /// `Duration::ZERO` restores the tick.
    pub fn window(mut self, window: Duration) -> Self {
        self.schedule = if window.is_zero() { Schedule::Tick } else { Schedule::Window(window) };
        self
    }

    /// Fail a batch whose batch function has not finished after `limit`
    /// (every key gets [`LoadError::TimedOut`]). Off by default.
    pub fn batch_timeout(mut self, limit: Duration) -> Self {
        self.batch_timeout = Some(limit);
        self
    }

    /// `false` turns memoization off: every load after an answer asks the
    /// batch function again (loads of a key pending or in flight still share
    /// one request). `true` (the default) memoizes in a map owned by the loader.
    pub fn cache(mut self, enabled: bool) -> Self {
        self.cache = if enabled { CacheChoice::PerLoader } else { CacheChoice::Disabled };
        self
    }

    /// Memoize in `cache` — bounded, with expiry, shared by every loader built
    /// with it — instead of a per-loader map. For loaders shared across
    /// requests; see [`crate::cache`].
    pub fn shared_cache(mut self, cache: impl ValueCache<K, V>) -> Self {
        self.cache = CacheChoice::Shared(Arc::new(cache));
        self
    }

    /// Count into `stats` (shared by every loader given a clone of it).
    /// Default: fresh stats named `default` per built loader.
    pub fn stats(mut self, stats: LoaderStats) -> Self {
        self.stats = Some(stats);
        self
    }

    /// A new loader with its own pending keys, batches and (unless shared)
    /// cache.
    pub fn build(&self) -> DataLoader<K, V, E> {
        let shared_cache = match &self.cache {
            CacheChoice::Shared(c) => Some(Arc::clone(c)),
            _ => None,
        };
        DataLoader {
            shared: Arc::new(Shared {
                batch_fn: Arc::clone(&self.batch_fn),
                config: Config {
                    max_batch_size: self.max_batch_size,
                    schedule: self.schedule,
                    batch_timeout: self.batch_timeout,
                },
                shared_cache,
                permits: self.max_in_flight.map(|n| Arc::new(Semaphore::new(n.get().min(Semaphore::MAX_PERMITS)))),
                stats: self.stats.clone().unwrap_or_default(),
                state: Mutex::new(State::new(matches!(self.cache, CacheChoice::PerLoader))),
            }),
        }
    }
}
