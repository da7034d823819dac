//! # brisk-dataloader
//!
//! A DataLoader that batches and de-duplicates loads: the N+1 queries of a
//! page of results become one query per batch of keys.
//!
//! ```
//! use std::collections::HashMap;
//! use brisk_dataloader::{BatchFn, DataLoader};
//!
//! #[derive(Clone, Debug, PartialEq)]
//! struct User { id: i64, name: String }
//!
//! struct UsersById; // holds the connection pool in a real service
//!
//! impl BatchFn<i64, User> for UsersById {
//!     type Error = std::io::Error;
//!     type Output = HashMap<i64, User>; // a missing id is `LoadError::NotFound`
//!
//!     async fn load(&self, ids: &[i64]) -> Result<Self::Output, Self::Error> {
//!         // SELECT id, name FROM users WHERE id = ANY($1)
//!         Ok(ids.iter().filter(|&&id| id > 0).map(|&id| (id, User { id, name: format!("user {id}") })).collect())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let users = DataLoader::new(UsersById);
//! // Three loads in one tick: one call of the batch function with [1, 2].
//! let (a, b, again) = tokio::join!(users.load(1), users.load(2), users.load(1));
//! assert_eq!(a.unwrap().name, "user 1");
//! assert_eq!(b.unwrap().name, "user 2");
//! assert_eq!(again.unwrap().name, "user 1");
//! assert!(users.load(-5).await.unwrap_err().is_not_found());
//! assert_eq!(users.stats().snapshot().batches, 2);
//! # }
//! ```
//!
//! ## How it behaves
//!
//! - **Batching.** A load registers its key when first polled. Keys are
//!   collected until the task that made the batch's first load has yielded
//!   once (the tick): every load that task makes in the same poll — a
//!   `join!`, a `join_all` over a page of rows — and every load other tasks
//!   make meanwhile share the batch, on a current-thread or a multi-thread
//!   runtime alike. With [`Builder::window`] keys are collected for a fixed
//!   time instead. A batch that reaches [`Builder::max_batch_size`] is
//!   dispatched at once (first polled by the load that filled it, so a batch
//!   function that answers without waiting answers before that task's next
//!   loads); larger sets are split. At most [`Builder::max_in_flight`]
//!   batches run at once, concurrently, a batch that waits on its own task:
//!   no lock is held while the batch function runs.
//! - **De-duplication.** A key already pending or in a running batch is not
//!   requested again; all its callers get the one answer (`V: Clone` — wrap
//!   large values in an `Arc`).
//! - **Errors.** The batch function reports per key ([`BatchOutput`]) or fails
//!   as a whole; a whole-batch error reaches every key of the batch as one
//!   shared `Arc<E>` ([`LoadError::Batch`]); a per-key error only its key
//!   ([`LoadError::Key`]); a key it returns nothing for is
//!   [`LoadError::NotFound`] (or `Ok(None)` from [`DataLoader::try_load`]). A
//!   batch function that panics, returns the wrong number of positional
//!   results, or overruns [`Builder::batch_timeout`] fails every key of its
//!   batch — a caller never hangs.
//! - **Cancellation.** Dropping a load before its batch is dispatched
//!   withdraws the key when nobody else wants it; a batch nobody waits for is
//!   not started; a started batch finishes for the callers still waiting.
//! - **Cache.** By default each loader memoizes into its own map — give each
//!   request its own loaders (`RequestLoadersLayer`, `tower` feature) and
//!   nothing leaks between users. Loaders shared across requests can use a bounded LRU/TTL cache
//!   ([`cache`]) or none ([`Builder::cache`]`(false)`).
//! - **Stats.** [`LoaderStats`]: loads, cache hits, dedups, batches, a
//!   batch-size histogram, not-found and errors; exported to Prometheus with
//!   the `prometheus` feature.
//!
//! ## Features
//!
//! | feature | enables | pulls in |
//! | --- | --- | --- |
//! | `tower` | `RequestLoadersLayer`: fresh request-scoped loaders in each request's extensions | `tower-layer`, `tower-service`, `http` |
//! | `prometheus` | `register(&mut Registry)` on [`DataLoader`] and [`LoaderStats`] (scrape-time collector) | `prometheus-client` |
//! | `moka` | [`ValueCache`] for `moka::sync::Cache`: a bounded LRU/TTL cache for shared loaders | `moka` |
//!
//! No feature is on by default; the core needs only `tokio` (`rt`, `sync`,
//! `time`), `futures-util` and `tracing`.

mod answers;
pub mod cache;
mod dispatch;
mod error;
mod load;
mod loader;
#[cfg(feature = "tower")]
pub mod request_scope;
mod state;
mod stats;

mod batch;

pub use crate::batch::{BatchFn, BatchOutput, FnBatch, batch_fn};
pub use crate::cache::ValueCache;
pub use crate::error::LoadError;
pub use crate::loader::{Builder, DataLoader};
#[cfg(feature = "tower")]
pub use crate::request_scope::{RequestLoaders, RequestLoadersLayer};
pub use crate::stats::{BATCH_SIZE_BUCKETS, LoaderStats, StatsSnapshot};
