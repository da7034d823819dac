//! The error a load resolves to.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a load produced no value.
///
/// Cheap to clone: the batch function's own error is held in an [`Arc`], so
/// one batch-level error reaches every caller of every key of the batch, and
/// one per-key error reaches every caller of that key.
///
/// ```
/// use brisk_dataloader::LoadError;
///
/// let err: LoadError<std::io::Error> = LoadError::NotFound;
/// assert!(err.is_not_found());
/// assert_eq!(err.to_string(), "no value for this key");
/// ```
#[non_exhaustive]
pub enum LoadError<E> {
    /// The batch function returned no value for this key.
    NotFound,
    /// The batch function reported an error for this key only.
    Key(Arc<E>),
    /// The batch function failed as a whole; every key of the batch gets this error.
    Batch(Arc<E>),
    /// The batch function returned a positional result whose length differs
    /// from the number of keys it was given.
    WrongCount {
        /// Keys passed to the batch function.
        expected: usize,
        /// Results it returned.
        returned: usize,
    },
    /// The batch function panicked; the panic message, when it had one.
    Panicked(Option<Arc<str>>),
    /// The batch function did not finish within the configured batch timeout.
    TimedOut(Duration),
    /// The batch was abandoned before it could answer: the runtime it ran on
    /// shut down.
    Abandoned,
}

impl<E> LoadError<E> {
    /// `true` when the batch function returned no value for the key.
    pub fn is_not_found(&self) -> bool {
        matches!(self, LoadError::NotFound)
    }

    /// The batch function's own error (per key or for the whole batch), if
    /// that is what this is.
    pub fn inner(&self) -> Option<&E> {
        match self {
            LoadError::Key(e) | LoadError::Batch(e) => Some(e),
            _ => None,
        }
    }

    /// A short, bounded name for the kind of error, for metrics and logs:
    /// `not_found`, `key`, `batch`, `wrong_count`, `panicked`, `timed_out`, `abandoned`.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::NotFound => "not_found",
            LoadError::Key(_) => "key",
            LoadError::Batch(_) => "batch",
            LoadError::WrongCount { .. } => "wrong_count",
            LoadError::Panicked(_) => "panicked",
            LoadError::TimedOut(_) => "timed_out",
            LoadError::Abandoned => "abandoned",
        }
    }
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        match self {
            LoadError::NotFound => LoadError::NotFound,
            LoadError::Key(e) => LoadError::Key(Arc::clone(e)),
            LoadError::Batch(e) => LoadError::Batch(Arc::clone(e)),
            LoadError::WrongCount { expected, returned } => {
                LoadError::WrongCount { expected: *expected, returned: *returned }
            }
            LoadError::Panicked(m) => LoadError::Panicked(m.clone()),
            LoadError::TimedOut(d) => LoadError::TimedOut(*d),
            LoadError::Abandoned => LoadError::Abandoned,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound => f.write_str("NotFound"),
            LoadError::Key(e) => f.debug_tuple("Key").field(e).finish(),
            LoadError::Batch(e) => f.debug_tuple("Batch").field(e).finish(),
            LoadError::WrongCount { expected, returned } => {
                f.debug_struct("WrongCount").field("expected", expected).field("returned", returned).finish()
            }
            LoadError::Panicked(m) => f.debug_tuple("Panicked").field(m).finish(),
            LoadError::TimedOut(d) => f.debug_tuple("TimedOut").field(d).finish(),
            LoadError::Abandoned => f.write_str("Abandoned"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound => f.write_str("no value for this key"),
            LoadError::Key(e) => write!(f, "loading this key failed: {e}"),
            LoadError::Batch(e) => write!(f, "the batch failed: {e}"),
            LoadError::WrongCount { expected, returned } => {
                write!(f, "the batch function returned {returned} results for {expected} keys")
            }
            LoadError::Panicked(Some(m)) => write!(f, "the batch function panicked: {m}"),
            LoadError::Panicked(None) => f.write_str("the batch function panicked"),
            LoadError::TimedOut(d) => write!(f, "the batch function did not finish within {d:?}"),
            LoadError::Abandoned => f.write_str("the batch was abandoned before it answered (runtime shut down)"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Key(e) | LoadError::Batch(e) => Some(&**e),
            _ => None,
        }
    }
}
