//! Counters and the batch-size histogram.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the batch-size histogram buckets (the last bucket is `+Inf`).
pub const BATCH_SIZE_BUCKETS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/// What loaders did: loads, batches, batch sizes, cache hits, dedups, errors.
///
/// Clones share the counters, so one `LoaderStats` can be given to every
/// request-scoped loader made by a factory (see
/// [`Builder::stats`](crate::Builder::stats)) and registered once.
///
/// ```
/// use brisk_dataloader::LoaderStats;
///
/// let stats = LoaderStats::new("users");
/// assert_eq!(stats.name(), "users");
/// assert_eq!(stats.snapshot().loads, 0);
/// ```
#[derive(Clone)]
pub struct LoaderStats {
    inner: Arc<Counters>,
}

struct Counters {
    name: Cow<'static, str>,
    loads: AtomicU64,
    cache_hits: AtomicU64,
    dedups: AtomicU64,
    cancelled: AtomicU64,
    batches: AtomicU64,
    batch_keys: AtomicU64,
    batch_size_buckets: [AtomicU64; BATCH_SIZE_BUCKETS.len() + 1],
    not_found: AtomicU64,
    errors: AtomicU64,
}

/// A point-in-time copy of [`LoaderStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Calls for a key (each key of a `load_many` counts once). A load
    /// answered from the cache is counted at once; one that waits (and so
    /// its dedup) when its batch is dispatched or answers, or when it leaves
    /// first — a loader counts its waiting loads under its own lock and adds
    /// them here in one go.
    pub loads: u64,
    /// Loads answered from the cache.
    pub cache_hits: u64,
    /// Loads that joined a key already waiting for, or in, a batch.
    pub dedups: u64,
    /// Keys dropped by all their callers before their batch started, and so never requested.
    pub cancelled: u64,
    /// Calls of the batch function.
    pub batches: u64,
    /// Keys passed to the batch function, summed over batches.
    pub batch_keys: u64,
    /// Batches per size bucket: `(upper bound, count)`, not cumulative; the
    /// last entry, `u64::MAX`, is the `+Inf` bucket.
    pub batch_sizes: Vec<(u64, u64)>,
    /// Keys the batch function returned no value for.
    pub not_found: u64,
    /// Keys answered with an error (per key or from a failed, panicked, timed
    /// out or wrong-count batch), counted once per key.
    pub errors: u64,
}

impl LoaderStats {
    /// Empty stats for a loader called `name` (the `loader` label of the metrics).
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        LoaderStats {
            inner: Arc::new(Counters {
                name: name.into(),
                loads: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                dedups: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                batch_keys: AtomicU64::new(0),
                batch_size_buckets: Default::default(),
                not_found: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        }
    }

    /// The loader's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A copy of the counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.inner;
        StatsSnapshot {
            loads: c.loads.load(Relaxed),
            cache_hits: c.cache_hits.load(Relaxed),
            dedups: c.dedups.load(Relaxed),
            cancelled: c.cancelled.load(Relaxed),
            batches: c.batches.load(Relaxed),
            batch_keys: c.batch_keys.load(Relaxed),
            batch_sizes: BATCH_SIZE_BUCKETS
                .iter()
                .copied()
                .chain([u64::MAX])
                .zip(c.batch_size_buckets.iter().map(|b| b.load(Relaxed)))
                .collect(),
            not_found: c.not_found.load(Relaxed),
            errors: c.errors.load(Relaxed),
        }
    }

    pub(crate) fn add_loads(&self, n: u64) {
        if n > 0 {
            self.inner.loads.fetch_add(n, Relaxed);
        }
    }
    pub(crate) fn add_cache_hits(&self, n: u64) {
        if n > 0 {
            self.inner.cache_hits.fetch_add(n, Relaxed);
        }
    }
    pub(crate) fn add_dedups(&self, n: u64) {
        if n > 0 {
            self.inner.dedups.fetch_add(n, Relaxed);
        }
    }
    pub(crate) fn add_cancelled(&self, n: u64) {
        if n > 0 {
            self.inner.cancelled.fetch_add(n, Relaxed);
        }
    }
    pub(crate) fn add_outcomes(&self, not_found: u64, errors: u64) {
        if not_found > 0 {
            self.inner.not_found.fetch_add(not_found, Relaxed);
        }
        if errors > 0 {
            self.inner.errors.fetch_add(errors, Relaxed);
        }
    }
    pub(crate) fn record_batch(&self, size: usize) {
        let size = size as u64;
        self.inner.batches.fetch_add(1, Relaxed);
        self.inner.batch_keys.fetch_add(size, Relaxed);
        let bucket = BATCH_SIZE_BUCKETS.iter().position(|&le| size <= le).unwrap_or(BATCH_SIZE_BUCKETS.len());
        self.inner.batch_size_buckets[bucket].fetch_add(1, Relaxed);
    }
}

impl Default for LoaderStats {
    fn default() -> Self {
        LoaderStats::new("default")
    }
}

impl std::fmt::Debug for LoaderStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderStats").field("name", &self.name()).field("snapshot", &self.snapshot()).finish()
    }
}

#[cfg(feature = "prometheus")]
mod prometheus {
    use super::{BATCH_SIZE_BUCKETS, LoaderStats};
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Registry;

    /// A counter family: name, help, and how to read it from a snapshot.
    type Counter = (&'static str, &'static str, fn(&super::StatsSnapshot) -> u64);

    /// Exposes any number of [`LoaderStats`] at scrape time, one `loader`
    /// label value each, so each metric family is written once.
    #[derive(Debug)]
    struct StatsCollector(Vec<LoaderStats>);

    impl Collector for StatsCollector {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            let snapshots: Vec<_> = self.0.iter().map(|s| (s.name().to_owned(), s.snapshot())).collect();
            let counters: [Counter; 7] = [
                ("brisk_dataloader_loads", "Keys requested from the loader.", |s| s.loads),
                ("brisk_dataloader_cache_hits", "Loads answered from the cache.", |s| s.cache_hits),
                ("brisk_dataloader_dedups", "Loads that joined a key already pending or in flight.", |s| s.dedups),
                ("brisk_dataloader_cancelled", "Keys dropped by every caller before their batch started.", |s| {
                    s.cancelled
                }),
                ("brisk_dataloader_batches", "Calls of the batch function.", |s| s.batches),
                ("brisk_dataloader_not_found", "Keys the batch function returned no value for.", |s| s.not_found),
                ("brisk_dataloader_errors", "Keys answered with an error.", |s| s.errors),
            ];
            for (name, help, get) in counters {
                let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (loader, snapshot) in &snapshots {
                    let labels = [("loader", loader.as_str())];
                    metric.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&get(snapshot), None)?;
                }
            }
            let mut metric = encoder.encode_descriptor(
                "brisk_dataloader_batch_size",
                "Keys per call of the batch function.",
                None,
                MetricType::Histogram,
            )?;
            for (loader, snapshot) in &snapshots {
                let labels = [("loader", loader.as_str())];
                let buckets: Vec<(f64, u64)> = BATCH_SIZE_BUCKETS
                    .iter()
                    .map(|&le| le as f64)
                    .chain([f64::INFINITY])
                    .zip(snapshot.batch_sizes.iter().map(|&(_, n)| n))
                    .collect();
                metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    snapshot.batch_keys as f64,
                    snapshot.batches,
                    &buckets,
                    None,
                )?;
            }
            Ok(())
        }
    }

    impl LoaderStats {
        /// Registers these stats with a prometheus-client registry: counters
        /// `brisk_dataloader_{loads,cache_hits,dedups,cancelled,batches,not_found,errors}_total`
        /// and the histogram `brisk_dataloader_batch_size`, labelled `loader="<name>"`,
        /// read at scrape time. To export several loaders, use
        /// [`register_all`](LoaderStats::register_all) so each family is written once.
        pub fn register(&self, registry: &mut Registry) {
            Self::register_all(registry, [self.clone()]);
        }

        /// Registers several loaders' stats as one collector.
        pub fn register_all(registry: &mut Registry, stats: impl IntoIterator<Item = LoaderStats>) {
            registry.register_collector(Box::new(StatsCollector(stats.into_iter().collect())));
        }
    }
}
