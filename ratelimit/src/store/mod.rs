//! Where the limiter keeps its counters: in process ([`MemoryStore`]) or in
//! Redis ([`RedisStore`], feature `redis`).
//!
//! ```
//! use brisk_ratelimit::clock::FakeClock;
//! use brisk_ratelimit::store::MemoryStore;
//! use brisk_ratelimit::{Policy, Quota, RateLimiter};
//! use std::num::NonZeroU32;
//!
//! let clock = FakeClock::new();
//! let limiter = RateLimiter::builder("rl:api:")
//!     .policy(Policy::new("api", Quota::per_second(NonZeroU32::new(5).unwrap())))
//!     .store(MemoryStore::with_clock(clock.clone()))
//!     .clock(clock)
//!     .build()
//!     .unwrap();
//! # let _ = limiter;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use crate::algorithm::{Outcome, Params};
use crate::quota::Policy;

#[cfg(feature = "redis")]
mod batch;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};

/// What to do with a request's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Admit and count, or refuse and count nothing (all-or-nothing across policies).
    Consume,
    /// Answer as `Consume` would, but change nothing.
    Peek,
    /// Give units back to every policy; answers as a peek of cost 0 afterwards.
    Refund,
}

/// A limiter's key in a store: `prefix{key}`, kept in its two parts so that
/// no string is built per decision (the in-memory store reads the bare key;
/// its policies' namespaces carry the prefix).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreKey<'a> {
    /// The limiter's prefix.
    pub(crate) prefix: &'a Arc<str>,
    pub(crate) key: &'a str,
}

impl StoreKey<'_> {
    /// The length of `prefix{key}`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.prefix.len() + self.key.len() + 2
    }
}

/// A limiter's policy as the in-memory store knows its states: the prefix
/// and the policy's name, behind one pointer (a state's slot holds a
/// clone). Made once per limiter and policy when the limiter is built;
/// limiters sharing a store, a prefix and a policy name share its states,
/// told apart from others by pointer first and by name otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Namespace(Arc<NamespaceNames>);

#[derive(Debug)]
struct NamespaceNames {
    prefix: Arc<str>,
    name: Arc<str>,
}

impl Namespace {
    pub(crate) fn new(prefix: &Arc<str>, policy: &Policy) -> Self {
        Namespace(Arc::new(NamespaceNames { prefix: prefix.clone(), name: policy.name.clone() }))
    }

    /// Whether both name the same prefix and policy.
    #[inline(always)]
    pub(crate) fn is(&self, other: &Namespace) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.prefix == other.0.prefix && self.0.name == other.0.name)
    }
}

/// One call to a store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreRequest<'a> {
    /// `prefix{key}`; the store appends `:policy` per policy.
    pub(crate) key: StoreKey<'a>,
    pub(crate) policies: &'a [Policy],
    /// Each policy's namespace under the limiter's prefix (read by the
    /// in-memory store; may be empty for any other).
    pub(crate) namespaces: &'a [Namespace],
    /// `policies`' parameters, computed once when the limiter was built.
    pub(crate) params: &'a [Params],
    pub(crate) cost: u64,
    pub(crate) op: Operation,
}

pub(crate) type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Outcome>, StoreError>> + Send + 'a>>;

#[allow(private_interfaces)] // sealed: the trait and these types never leave the crate
pub(crate) mod sealed {
    use super::{Outcome, StoreFuture, StoreRequest};

    /// The store operations, kept private so every store keeps this crate's semantics.
    pub trait Backend {
        /// Applies a request; answers in policy order.
        fn apply<'a>(&'a self, request: StoreRequest<'a>) -> StoreFuture<'a>;

        /// Applies a request at once, into `out`, when the store needs no I/O
        /// and cannot fail; `false` when it must go through [`apply`](Self::apply).
        fn apply_now(&self, _request: StoreRequest<'_>, _out: &mut Vec<Outcome>) -> bool {
            false
        }

        /// The store itself when it is the in-memory store, which the limiter
        /// calls directly for a limiter of one policy.
        fn as_memory(&self) -> Option<&super::MemoryStore> {
            None
        }
    }
}

/// A backend for the limiter's counters. Implemented by [`MemoryStore`] and
/// [`RedisStore`]; sealed, so the semantics every store must share (atomic,
/// all-or-nothing across policies) are kept in this crate.
pub trait Store: sealed::Backend + fmt::Debug + Send + Sync + 'static {
    /// A short name for metrics and logs (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{kind} error from the rate-limit store: {message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The kind of a [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store did not answer in time.
    Timeout,
    /// The connection failed.
    Connection,
    /// The store answered with an error or an unexpected reply.
    Response,
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StoreErrorKind {
    /// A short lower-case name for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Connection => "connection",
            StoreErrorKind::Response => "response",
        }
    }
}

impl StoreError {
    #[allow(dead_code)] // used by the Redis store
    pub(crate) fn new(
        kind: StoreErrorKind,
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError { kind, message: message.into(), source }
    }

    /// The kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    #[cfg(feature = "redis")]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}
