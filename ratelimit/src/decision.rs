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

/// A policy as decisions name it: its name, quota and algorithm.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PolicyInfo {
    pub(crate) name: Box<str>,
    pub(crate) quota: Quota,
    pub(crate) algorithm: Algorithm,
}

/// A decision's reference to its policy: for an interned policy a plain
/// pointer, so that making, moving and dropping a decision copies a few
/// words and touches no reference count shared by every thread deciding for
/// the policy.
///
/// A limiter's policies are interned when it is built: each distinct
/// (name, quota, algorithm) is stored once for the life of the process, a few
/// dozen bytes however many limiters and decisions use it. Past
/// [`MAX_INTERNED`] distinct policies (a process building limiters from
/// unbounded input) the table stops growing and policies are shared by
/// reference count instead.
#[derive(Clone)]
pub(crate) enum PolicyRef {
    Interned(&'static PolicyInfo),
    Shared(Arc<PolicyInfo>),
}

/// The most distinct policies interned per process.
const MAX_INTERNED: usize = 4096;

impl PolicyRef {
    /// The interned reference to this policy (see the type's documentation).
    pub(crate) fn interned(name: &str, quota: Quota, algorithm: Algorithm) -> PolicyRef {
        static INTERNED: std::sync::LazyLock<Interner> = std::sync::LazyLock::new(|| Interner::new(MAX_INTERNED));
        INTERNED.intern(PolicyInfo { name: name.into(), quota, algorithm })
    }

    /// A reference to a policy that is not interned (one-off decisions).
    pub(crate) fn shared(name: &str, quota: Quota, algorithm: Algorithm) -> PolicyRef {
        PolicyRef::Shared(Arc::new(PolicyInfo { name: name.into(), quota, algorithm }))
    }
}

/// Distinct policies, each stored once for the life of the process, up to a bound.
struct Interner {
    table: parking_lot::Mutex<std::collections::HashSet<&'static PolicyInfo>>,
    bound: usize,
}

impl Interner {
    fn new(bound: usize) -> Interner {
        Interner { table: Default::default(), bound }
    }

    fn intern(&self, info: PolicyInfo) -> PolicyRef {
        let mut table = self.table.lock();
        if let Some(interned) = table.get(&info) {
            return PolicyRef::Interned(interned);
        }
        if table.len() >= self.bound {
            return PolicyRef::Shared(Arc::new(info));
        }
        let interned: &'static PolicyInfo = Box::leak(Box::new(info));
        table.insert(interned);
        PolicyRef::Interned(interned)
    }
}

impl std::ops::Deref for PolicyRef {
    type Target = PolicyInfo;

    #[inline]
    fn deref(&self) -> &PolicyInfo {
        match self {
            PolicyRef::Interned(info) => info,
            PolicyRef::Shared(info) => info,
        }
    }
}

impl std::fmt::Debug for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for PolicyRef {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for PolicyRef {}

/// A `retry_after` of "never": the cost exceeds the policy's capacity.
const NEVER: u64 = u64::MAX;

/// One policy's part of a [`Decision`].
#[derive(Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub(crate) policy: PolicyRef,
    /// Microseconds.
    pub(crate) reset_after: u64,
    /// Microseconds; [`NEVER`] when admitted or never admissible.
    pub(crate) retry_after: u64,
    pub(crate) remaining: u32,
    pub(crate) allowed: bool,
    pub(crate) source: Source,
}

impl std::fmt::Debug for PolicyDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyDecision")
            .field("name", &self.name())
            .field("quota", self.quota())
            .field("algorithm", &self.algorithm())
            .field("allowed", &self.allowed)
            .field("remaining", &self.remaining)
            .field("reset_after", &self.reset_after())
            .field("retry_after", &self.retry_after())
            .field("source", &self.source)
            .finish()
    }
}

impl PolicyDecision {
    /// A policy's answer; times in microseconds.
    #[inline]
    pub(crate) fn new(
        policy: PolicyRef,
        allowed: bool,
        remaining: u64,
        reset_after: u64,
        retry_after: Option<u64>,
        source: Source,
    ) -> PolicyDecision {
        PolicyDecision {
            policy,
            reset_after,
            retry_after: retry_after.map_or(NEVER, |r| r.min(NEVER - 1)),
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            allowed,
            source,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.policy.name
    }

    /// The policy's quota (for [`Source::Local`]: the divided local quota).
    pub fn quota(&self) -> &Quota {
        &self.policy.quota
    }

    /// The policy's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.policy.algorithm
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
        Duration::from_micros(self.reset_after)
    }

    /// For a policy that refused the request: how long until the same request
    /// would be admitted. `None` when admitted, or when the cost exceeds the
    /// policy's capacity (it will never be admitted).
    pub fn retry_after(&self) -> Option<Duration> {
        (self.retry_after != NEVER).then(|| Duration::from_micros(self.retry_after))
    }

    /// Where the answer came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Ages the answer by `elapsed` microseconds.
    pub(crate) fn age(&mut self, elapsed: u64) {
        self.reset_after = self.reset_after.saturating_sub(elapsed);
        if self.retry_after != NEVER {
            self.retry_after = self.retry_after.saturating_sub(elapsed);
        }
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
            longest = longest.max(p.retry_after()?);
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

// A decision is moved through every check's future: kept to six words.
const _: () = assert!(std::mem::size_of::<Decision>() <= 48);

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    fn quota(n: u32) -> Quota {
        Quota::per_minute(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn equal_policies_are_interned_once_and_different_ones_apart() {
        let a = PolicyRef::interned("interning-a", quota(10), Algorithm::Gcra);
        let b = PolicyRef::interned("interning-a", quota(10), Algorithm::Gcra);
        let (PolicyRef::Interned(a), PolicyRef::Interned(b)) = (&a, &b) else { panic!("not interned") };
        assert!(std::ptr::eq(*a, *b));
        for other in [
            PolicyRef::interned("interning-b", quota(10), Algorithm::Gcra),
            PolicyRef::interned("interning-a", quota(11), Algorithm::Gcra),
            PolicyRef::interned("interning-a", quota(10), Algorithm::FixedWindow),
        ] {
            let PolicyRef::Interned(other) = other else { panic!("not interned") };
            assert!(!std::ptr::eq(*a, other));
        }
    }

    #[test]
    fn past_its_bound_the_table_stops_growing_and_shares_instead() {
        let interner = Interner::new(2);
        let info = |name: &str| PolicyInfo { name: name.into(), quota: quota(3), algorithm: Algorithm::Gcra };
        let PolicyRef::Interned(a) = interner.intern(info("bound-a")) else { panic!("not interned") };
        assert!(matches!(interner.intern(info("bound-b")), PolicyRef::Interned(_)));
        let third = interner.intern(info("bound-c"));
        assert!(matches!(third, PolicyRef::Shared(_)));
        assert_eq!(third.name.as_ref(), "bound-c");
        assert_eq!(interner.table.lock().len(), 2);
        // Policies already interned are still found.
        let PolicyRef::Interned(again) = interner.intern(info("bound-a")) else { panic!("not interned") };
        assert!(std::ptr::eq(a, again));
    }

    #[test]
    fn an_interned_and_a_shared_reference_to_one_policy_are_equal() {
        let interned = PolicyRef::interned("interning-c", quota(5), Algorithm::Gcra);
        let shared = PolicyRef::shared("interning-c", quota(5), Algorithm::Gcra);
        let decision = |policy| PolicyDecision::new(policy, false, 0, 7_000_000, Some(1_500_000), Source::Store);
        assert_eq!(decision(interned.clone()), decision(shared));
        for other in [
            PolicyRef::shared("interning-x", quota(5), Algorithm::Gcra),
            PolicyRef::shared("interning-c", quota(6), Algorithm::Gcra),
            PolicyRef::shared("interning-c", quota(5), Algorithm::SlidingWindow),
        ] {
            assert_ne!(decision(interned.clone()), decision(other));
        }
    }

    #[test]
    fn times_are_read_back_as_given_and_never_is_none() {
        let policy = PolicyRef::interned("interning-d", quota(5), Algorithm::Gcra);
        let refused = PolicyDecision::new(policy.clone(), false, 0, 7_000_001, Some(1_500_000), Source::Store);
        assert_eq!(refused.reset_after(), Duration::from_micros(7_000_001));
        assert_eq!(refused.retry_after(), Some(Duration::from_millis(1_500)));
        let never = PolicyDecision::new(policy.clone(), false, 0, 0, None, Source::Store);
        assert_eq!(never.retry_after(), None);
        // A retry time of u64::MAX µs is kept apart from "never".
        let far = PolicyDecision::new(policy, false, u64::MAX, 0, Some(u64::MAX), Source::Store);
        assert_eq!(far.retry_after(), Some(Duration::from_micros(u64::MAX - 1)));
        assert_eq!(far.remaining(), u32::MAX);
        let mut aged = refused.clone();
        aged.age(2_000_000);
        assert_eq!((aged.reset_after(), aged.retry_after()), (Duration::from_micros(5_000_001), Some(Duration::ZERO)));
        let mut never = never;
        never.age(5);
        assert_eq!(never.retry_after(), None);
    }
}
