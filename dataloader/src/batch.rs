//! The batch function: many keys in, their values out.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;

/// Loads the values of many keys at once — one query for the whole batch.
///
/// `load` receives the keys of one batch: unique, at most `max_batch_size`
/// of them, in the order they were first requested. It returns either a
/// batch-level error (which reaches every caller of the batch) or a
/// [`BatchOutput`]: a map of the values found (a key missing from the map is
/// [`LoadError::NotFound`](crate::LoadError::NotFound)), a map or a list of
/// per-key `Result`s (an error reaches only its key), or a list of `Option`s.
///
/// ```
/// use std::collections::HashMap;
/// use brisk_dataloader::BatchFn;
///
/// struct Squares;
///
/// impl BatchFn<u64, u64> for Squares {
///     type Error = std::convert::Infallible;
///     type Output = HashMap<u64, u64>;
///
///     async fn load(&self, keys: &[u64]) -> Result<Self::Output, Self::Error> {
///         Ok(keys.iter().map(|&k| (k, k * k)).collect())
///     }
/// }
/// ```
pub trait BatchFn<K, V>: Send + Sync + 'static {
    /// The error of a failed batch, or of one key.
    type Error: Send + Sync + 'static;
    /// What a successful batch returns; see [`BatchOutput`].
    type Output: BatchOutput<K, V, Self::Error> + Send + 'static;

    /// Loads `keys`.
    fn load(&self, keys: &[K]) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}

/// A shared batch function is one too.
impl<K, V, T: BatchFn<K, V>> BatchFn<K, V> for Arc<T> {
    type Error = T::Error;
    type Output = T::Output;

    fn load(&self, keys: &[K]) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send {
        T::load(self, keys)
    }
}

/// The values a batch function returns, matched to its keys.
///
/// Implemented for:
/// - `HashMap<K, V>`: the values found; a missing key is not found.
/// - `HashMap<K, Result<V, E>>`: per-key results; a missing key is not found.
/// - `Vec<Result<V, E>>`: per-key results, one per key in the order given.
/// - `Vec<Option<V>>`: one per key in the order given; `None` is not found.
///
/// A positional (`Vec`) output of the wrong length fails every key of the
/// batch with [`LoadError::WrongCount`](crate::LoadError::WrongCount).
pub trait BatchOutput<K, V, E> {
    /// One entry per key, in the order of `keys`: `None` when not found.
    ///
    /// # Errors
    ///
    /// `Err(returned)` with the number of results when a positional output
    /// does not have one result per key.
    fn into_results(self, keys: &[K]) -> Result<Vec<Option<Result<V, E>>>, usize>;
}

impl<K: Eq + Hash, V, E, S: BuildHasher> BatchOutput<K, V, E> for HashMap<K, V, S> {
    fn into_results(mut self, keys: &[K]) -> Result<Vec<Option<Result<V, E>>>, usize> {
        Ok(keys.iter().map(|k| self.remove(k).map(Ok)).collect())
    }
}

impl<K: Eq + Hash, V, E, S: BuildHasher> BatchOutput<K, V, E> for HashMap<K, Result<V, E>, S> {
    fn into_results(mut self, keys: &[K]) -> Result<Vec<Option<Result<V, E>>>, usize> {
        Ok(keys.iter().map(|k| self.remove(k)).collect())
    }
}

impl<K, V, E> BatchOutput<K, V, E> for Vec<Result<V, E>> {
    fn into_results(self, keys: &[K]) -> Result<Vec<Option<Result<V, E>>>, usize> {
        if self.len() != keys.len() {
            return Err(self.len());
        }
        Ok(self.into_iter().map(Some).collect())
    }
}

impl<K, V, E> BatchOutput<K, V, E> for Vec<Option<V>> {
    fn into_results(self, keys: &[K]) -> Result<Vec<Option<Result<V, E>>>, usize> {
        if self.len() != keys.len() {
            return Err(self.len());
        }
        Ok(self.into_iter().map(|v| v.map(Ok)).collect())
    }
}

/// A [`BatchFn`] made from a closure that takes the batch's keys as a `Vec`;
/// see [`batch_fn`].
#[derive(Clone)]
pub struct FnBatch<F> {
    f: F,
}

impl<F> std::fmt::Debug for FnBatch<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnBatch").finish_non_exhaustive()
    }
}

/// Makes a [`BatchFn`] from a closure `Fn(Vec<K>) -> impl Future<Output = Result<O, E>>`.
///
/// ```
/// use std::collections::HashMap;
/// use brisk_dataloader::{DataLoader, batch_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let loader = DataLoader::new(batch_fn(|keys: Vec<u64>| async move {
///     Ok::<_, std::io::Error>(keys.into_iter().map(|k| (k, k + 1)).collect::<HashMap<_, _>>())
/// }));
/// assert_eq!(loader.load(41).await.unwrap(), 42);
/// # }
/// ```
pub fn batch_fn<K, V, O, E, F, Fut>(f: F) -> FnBatch<F>
where
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send,
    O: BatchOutput<K, V, E> + Send + 'static,
    E: Send + Sync + 'static,
    K: Clone,
{
    FnBatch { f }
}

impl<K, V, O, E, F, Fut> BatchFn<K, V> for FnBatch<F>
where
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send,
    O: BatchOutput<K, V, E> + Send + 'static,
    E: Send + Sync + 'static,
    K: Clone,
{
    type Error = E;
    type Output = O;

    fn load(&self, keys: &[K]) -> impl Future<Output = Result<O, E>> + Send {
        (self.f)(keys.to_vec())
    }
}

/// How a batch can fail as a whole (before per-key results exist).
pub(crate) enum BatchFailure<E> {
    Batch(E),
    WrongCount { expected: usize, returned: usize },
}

pub(crate) type BatchResults<V, E> = Result<Vec<Option<Result<V, E>>>, BatchFailure<E>>;
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A batch function with its output type erased, so that `DataLoader<K, V, E>`
/// names no batch-function type (and fits in request extensions by name).
pub(crate) trait ErasedBatchFn<K, V, E>: Send + Sync + 'static {
    fn call(&self, keys: Arc<[K]>) -> BoxFuture<BatchResults<V, E>>;
}

pub(crate) struct Erased<F>(pub(crate) Arc<F>);

impl<K, V, F> ErasedBatchFn<K, V, F::Error> for Erased<F>
where
    F: BatchFn<K, V>,
    K: Send + Sync + 'static,
{
    fn call(&self, keys: Arc<[K]>) -> BoxFuture<BatchResults<V, F::Error>> {
        let f = Arc::clone(&self.0);
        Box::pin(async move {
            let output = f.load(&keys).await.map_err(BatchFailure::Batch)?;
            output.into_results(&keys).map_err(|returned| BatchFailure::WrongCount { expected: keys.len(), returned })
        })
    }
}
