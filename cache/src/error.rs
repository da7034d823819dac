//! Errors.

use std::sync::Arc;
use std::time::Duration;

use crate::codec::CodecError;

/// An error from configuring or writing to the cache. Reads never fail: a
/// cache fault is a miss.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given a value it cannot use.
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// A typed value could not be encoded.
    #[error("the value could not be encoded")]
    Encode(#[source] CodecError),
    /// A pattern given to `invalidate_pattern` cannot be used.
    #[error("invalid key pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The invalidation was applied to this instance's L1 but could not be
    /// recorded in Redis, so other instances and L2 did not see it.
    #[error("the invalidation was applied locally but did not reach Redis")]
    NotPropagated,
    /// Redis failed during an operation that needs it (the clean-up).
    #[error("Redis failed: {0}")]
    Unavailable(String),
}

/// Why `get_or_load` returned no value.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError<E> {
    /// The loader failed (and no stale value could be served). Shared with
    /// every caller that waited on the same load.
    Loader(Arc<E>),
    /// The loader did not finish within the hard timeout, and no stale value
    /// could be served.
    Timeout(Duration),
    /// The load ended without a result (the loader panicked).
    Aborted,
    /// The loaded value could not be encoded, or a cached one decoded.
    Codec(CodecError),
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        match self {
            LoadError::Loader(e) => LoadError::Loader(Arc::clone(e)),
            LoadError::Timeout(d) => LoadError::Timeout(*d),
            LoadError::Aborted => LoadError::Aborted,
            LoadError::Codec(e) => LoadError::Codec(e.clone()),
        }
    }
}

impl<E> LoadError<E> {
    /// The loader's error, when that is why.
    pub fn loader_error(&self) -> Option<&E> {
        match self {
            LoadError::Loader(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Loader(e) => write!(f, "the loader failed: {e}"),
            LoadError::Timeout(d) => write!(f, "the loader did not finish within {d:?}"),
            LoadError::Aborted => f.write_str("the load ended without a result"),
            LoadError::Codec(e) => write!(f, "{e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Loader(e) => Some(&**e),
            LoadError::Codec(e) => Some(e),
            _ => None,
        }
    }
}
