//! Errors of the limiter and of its builder.

use std::fmt;

use crate::store::StoreError;

/// Why a check could not be decided. A refusal is not an error: it is a
/// [`Decision`](crate::Decision) that is not allowed.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    /// Boxed: a check's `Result` is then no larger than its `Decision`.
    source: Option<Box<StoreError>>,
}

/// The kind of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store failed (or its circuit breaker is open) and a policy is
    /// [`FailClosed`](crate::OnStoreError::FailClosed).
    Unavailable,
    /// The key is empty.
    InvalidKey,
}

impl Error {
    pub(crate) fn unavailable(source: Option<StoreError>) -> Self {
        Error { kind: ErrorKind::Unavailable, source: source.map(Box::new) }
    }

    pub(crate) fn invalid_key() -> Self {
        Error { kind: ErrorKind::InvalidKey, source: None }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the limiter refused because its store is unavailable (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Unavailable => match &self.source {
                Some(_) => f.write_str("rate-limit store failed and a policy fails closed"),
                None => f.write_str("rate-limit store circuit is open and a policy fails closed"),
            },
            ErrorKind::InvalidKey => f.write_str("rate-limit key is empty"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// A limiter configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limiter configuration: {0}")]
pub struct BuildError(pub(crate) String);
