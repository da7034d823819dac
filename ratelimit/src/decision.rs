//! The result of a rate-limit check.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use brisk_ratelimit::{Policy, Quota, RateLimiter};
//! use std::num::NonZeroU32;
//!
//! let limiter = RateLimiter::builder("rl:doc:")
//!     .policy(Policy::new("api", Quota::per_minute(NonZeroU32::new(2).unwrap())))
//!     .build()
//!     .unwrap();
//! let decision = limiter.check("203.0.113.7").await.unwrap();
//! assert!(decision.is_allowed());
//! assert_eq!(decision.policies()[0].remaining(), 1);
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::quota::{Algorithm, Quota};

/// Where a policy's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The configured store (Redis, or memory).
    Store,
    /// The local cache of keys known to be blocked: no store round trip.
    BlockedCache,
    /// The in-process fallback limiter, because the store failed.
    Local,
    /// Admitted without counting, because the store failed and the policy fails open.
    FailOpen,
}

impl Source {
    /// A short lower-case name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Store => "store",
            Source::BlockedCache => "blocked_cache",
            Source::Local => "local",
            Source::FailOpen => "fail_open",
        }
    }
}

/// A policy's name as a decision holds it: a name of up to 22 bytes inline
/// (most are), so that making and dropping a decision touches no reference
/// count shared by every thread deciding for the policy; a longer one shared.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PolicyName {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Shared(Arc<str>),
}

const INLINE_NAME: usize = 22;

impl PolicyName {
    pub(crate) fn new(name: &Arc<str>) -> PolicyName {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE_NAME => {
                let mut bytes = [0; INLINE_NAME];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                PolicyName::Inline { len, bytes }
            }
            _ => PolicyName::Shared(name.clone()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            PolicyName::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("the bytes of a whole str")
            }
            PolicyName::Shared(name) => name,
        }
    }
}

impl std::fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One policy's part of a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub(crate) name: PolicyName,
    pub(crate) quota: Quota,
    pub(crate) algorithm: Algorithm,
    pub(crate) allowed: bool,
    pub(crate) remaining: u32,
    pub(crate) reset_after: Duration,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) source: Source,
}

impl PolicyDecision {
    /// The policy's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The policy's quota (for [`Source::Local`]: the divided local quota).
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The policy's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether this policy alone would admit the request.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Units still available after this decision (a denied request consumes nothing).
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Time until the policy's quota is whole again for this key.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// For a policy that refused the request: how long until the same request
    /// would be admitted. `None` when admitted, or when the cost exceeds the
    /// policy's capacity (it will never be admitted).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Where the answer came from.
    pub fn source(&self) -> Source {
        self.source
    }
}

/// The answer to "may this request proceed?": a value, not an error.
///
/// A request is admitted only if every policy admits it; a request refused by
/// one policy consumes nothing from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub(crate) allowed: bool,
    pub(crate) policies: PolicyList,
}

/// One policy inline (the common case, no allocation), or several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PolicyList {
    One(PolicyDecision),
    Many(Vec<PolicyDecision>),
}

impl std::ops::Deref for PolicyList {
    type Target = [PolicyDecision];

    fn deref(&self) -> &[PolicyDecision] {
        match self {
            PolicyList::One(p) => std::slice::from_ref(p),
            PolicyList::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for PolicyList {
    fn deref_mut(&mut self) -> &mut [PolicyDecision] {
        match self {
            PolicyList::One(p) => std::slice::from_mut(p),
            PolicyList::Many(v) => v,
        }
    }
}

impl Decision {
    pub(crate) fn new(mut policies: Vec<PolicyDecision>) -> Decision {
        let allowed = policies.iter().all(|p| p.allowed);
        let policies = match policies.len() {
            1 => PolicyList::One(policies.pop().expect("one policy")),
            _ => PolicyList::Many(policies),
        };
        Decision { allowed, policies }
    }

    pub(crate) fn one(policy: PolicyDecision) -> Decision {
        Decision { allowed: policy.allowed, policies: PolicyList::One(policy) }
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Each policy's answer, in the limiter's policy order.
    pub fn policies(&self) -> &[PolicyDecision] {
        &self.policies
    }

    /// The policies that refused the request.
    pub fn violated(&self) -> impl Iterator<Item = &PolicyDecision> {
        self.policies.iter().filter(|p| !p.allowed)
    }

    /// The fewest units left across policies.
    pub fn remaining(&self) -> u32 {
        self.policies.iter().map(|p| p.remaining).min().unwrap_or(u32::MAX)
    }

    /// How long until the same request would be admitted: the longest wait
    /// among the refusing policies. `None` when admitted or never admissible.
    pub fn retry_after(&self) -> Option<Duration> {
        if self.allowed {
            return None;
        }
        let mut longest = Duration::ZERO;
        for p in self.violated() {
            longest = longest.max(p.retry_after?);
        }
        Some(longest)
    }

    /// Where the answer came from: the least authoritative source among the policies.
    pub fn source(&self) -> Source {
        let rank = |s: Source| match s {
            Source::Store => 0,
            Source::BlockedCache => 1,
            Source::Local => 2,
            Source::FailOpen => 3,
        };
        self.policies.iter().map(|p| p.source).max_by_key(|s| rank(*s)).unwrap_or(Source::Store)
    }
}
