//! Where loaded values are kept between loads.
//!
//! By default a loader memoizes into its own map, which lives exactly as long
//! as the loader: give each request its own loader (see the `tower` feature's
//! `RequestLoadersLayer`) and nothing leaks from one user to another. A loader
//! shared across requests should instead use a bounded cache that implements
//! [`ValueCache`] — with the `moka` feature, a `moka::sync::Cache` (LRU-like
//! eviction by size, time-to-live) — or no cache at all
//! ([`Builder::cache`](crate::Builder::cache)`(false)`).
//!
//! ```
//! # #[cfg(feature = "moka")] {
//! use std::time::Duration;
//! use brisk_dataloader::{DataLoader, batch_fn};
//!
//! let shared = moka::sync::Cache::builder()
//!     .max_capacity(10_000)
//!     .time_to_live(Duration::from_secs(30))
//!     .build();
//! let loader = DataLoader::builder(batch_fn(|keys: Vec<u32>| async move {
//!     Ok::<_, std::io::Error>(keys.iter().map(|&k| Some(k * 2)).collect::<Vec<_>>())
//! }))
//! .shared_cache(shared)
//! .build();
//! # let _ = loader; }
//! ```

/// A cache of loaded values that may be shared by many loaders and tasks.
///
/// Only successful values are cached; not-found keys and errors are asked for
/// again on the next load.
pub trait ValueCache<K, V>: Send + Sync + 'static {
    /// The cached value of `key`, if any.
    fn get(&self, key: &K) -> Option<V>;
    /// Caches `value` for `key`, replacing any earlier value.
    fn insert(&self, key: K, value: V);
    /// Forgets `key`.
    fn remove(&self, key: &K);
    /// Forgets every key.
    fn clear(&self);
}

#[cfg(feature = "moka")]
impl<K, V, S> ValueCache<K, V> for moka::sync::Cache<K, V, S>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: std::hash::BuildHasher + Clone + Send + Sync + 'static,
{
    fn get(&self, key: &K) -> Option<V> {
        moka::sync::Cache::get(self, key)
    }
    fn insert(&self, key: K, value: V) {
        moka::sync::Cache::insert(self, key, value);
    }
    fn remove(&self, key: &K) {
        self.invalidate(key);
    }
    fn clear(&self) {
        self.invalidate_all();
    }
}
