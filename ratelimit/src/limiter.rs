//! The limiter: policies, a store, the blocked-key cache, the circuit breaker
//! and the fallback when the store fails.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use brisk_ratelimit::{Policy, Quota, RateLimiter};
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//!
//! let nz = |n| NonZeroU32::new(n).unwrap();
//! let limiter = RateLimiter::builder("rl:api:")
//!     .policy(Policy::new("per-minute", Quota::per_minute(nz(100))))
//!     .policy(Policy::new("per-day", Quota::per_day(nz(5_000))))
//!     .build()
//!     .unwrap();
//! let decision = limiter.check_n("203.0.113.7", nz(10)).await.unwrap();
//! assert!(decision.is_allowed());
//! assert_eq!(decision.remaining(), 90);
//! limiter.refund("203.0.113.7", nz(10)).await.unwrap();
//! assert_eq!(limiter.peek("203.0.113.7", nz(1)).await.unwrap().remaining(), 99);
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::algorithm::{Outcome, Params};
use crate::blocked::BlockedKeys;
use crate::breaker::{Breaker, Permit, Transition};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::decision::{Decision, PolicyDecision, PolicyRef, Source};
use crate::error::{BuildError, Error};
use crate::metrics::{Metrics, Outcome as Counted, PolicyMetrics};
use crate::quota::{Algorithm, OnStoreError, Policy};
use crate::store::{MemoryStore, Namespace, Operation, Store, StoreError, StoreErrorKind, StoreKey, StoreRequest};

/// A rate limiter: named policies checked together against one store.
///
/// Cheap to clone; clones share the store connection, the blocked-key cache,
/// the circuit breaker, the fallback counters and the metrics.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    inner: Arc<LimiterInner>,
}

#[derive(Debug)]
pub(crate) struct LimiterInner {
    /// The common case, everything its check reads side by side: one
    /// policy, no per-key overrides, the in-memory store.
    single: Option<Single>,
    prefix: Arc<str>,
    defaults: PolicySet,
    overrides: HashMap<String, PolicySet>,
    store: Arc<dyn Store>,
    /// `store` when it is the in-memory store, called directly for one policy.
    memory: Option<MemoryStore>,
    local: MemoryStore,
    clock: SharedClock,
    blocked: Option<BlockedKeys>,
    breaker: Breaker,
    pub(crate) metrics: Metrics,
}

/// A limiter of one policy on the in-memory store, without overrides: the
/// copies its check reads (the policy's `Arc`s are shared with the set's).
#[derive(Debug)]
struct Single {
    memory: MemoryStore,
    policy: Policy,
    params: Params,
    policy_ref: PolicyRef,
    namespace: Namespace,
}

/// Policies with their counters, side by side.
#[derive(Debug)]
struct PolicySet {
    policies: Arc<[Policy]>,
    /// Each policy's algorithm parameters, computed once.
    params: Box<[Params]>,
    /// Each policy as decisions refer to it.
    refs: Box<[PolicyRef]>,
    /// Each policy as the in-memory store knows its states.
    namespaces: Box<[Namespace]>,
    /// Each [`OnStoreError::Local`] policy as the fallback decides it: its
    /// quota divided among the instances, under GCRA (in the set's order).
    local: Box<[Policy]>,
    local_params: Box<[Params]>,
    local_refs: Box<[PolicyRef]>,
    local_namespaces: Box<[Namespace]>,
    metrics: Box<[PolicyMetrics]>,
}

impl PolicySet {
    /// `fallback`: whether the store can fail, so that the fallback's
    /// policies are interned too (a store that cannot fail never uses them).
    fn new(prefix: &Arc<str>, policies: Vec<Policy>, instances: NonZeroU32, fallback: bool) -> Self {
        let metrics = policies.iter().map(PolicyMetrics::new).collect();
        let params = policies.iter().map(Params::from_policy).collect();
        let refs = policies.iter().map(|p| PolicyRef::interned(&p.name, p.quota, p.algorithm)).collect();
        let local: Vec<Policy> = policies
            .iter()
            .filter(|p| p.on_store_error == OnStoreError::Local)
            .map(|p| Policy {
                name: p.name.clone(),
                quota: p.quota.divided_among(instances),
                algorithm: Algorithm::Gcra,
                on_store_error: OnStoreError::Local,
            })
            .collect();
        let local_params = local.iter().map(Params::from_policy).collect();
        let local_refs = local
            .iter()
            .map(|p| match fallback {
                true => PolicyRef::interned(&p.name, p.quota, p.algorithm),
                false => PolicyRef::shared(&p.name, p.quota, p.algorithm),
            })
            .collect();
        let namespaces = policies.iter().map(|p| Namespace::new(prefix, p)).collect();
        let local_namespaces = local.iter().map(|p| Namespace::new(prefix, p)).collect();
        PolicySet {
            policies: policies.into(),
            params,
            refs,
            namespaces,
            local: local.into(),
            local_params,
            local_refs,
            local_namespaces,
            metrics,
        }
    }
}

#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
impl LimiterInner {
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn policy_metrics(&self) -> impl Iterator<Item = &PolicyMetrics> {
        std::iter::once(&self.defaults).chain(self.overrides.values()).flat_map(|set| set.metrics.iter())
    }

    pub(crate) fn fallback_active(&self) -> bool {
        self.breaker.is_open()
    }

    pub(crate) fn blocked_entries(&self) -> usize {
        self.blocked.as_ref().map_or(0, BlockedKeys::len)
    }
}

/// Builds a [`RateLimiter`]; see [`RateLimiter::builder`].
#[must_use]
#[derive(Debug)]
pub struct RateLimiterBuilder {
    prefix: String,
    policies: Vec<Policy>,
    overrides: HashMap<String, Vec<Policy>>,
    store: Option<Arc<dyn Store>>,
    clock: Option<SharedClock>,
    instances: NonZeroU32,
    blocked_capacity: usize,
    breaker_threshold: NonZeroU32,
    breaker_cooldown: Duration,
}

impl RateLimiter {
    /// Starts a limiter whose keys all begin with `prefix` (e.g. `rl:api:`).
    ///
    /// Defaults: an in-memory store, the system clock, 1 instance, a blocked-key
    /// cache of 10,000 keys, a breaker opening after 3 consecutive store
    /// failures and probing again every second.
    pub fn builder(prefix: impl Into<String>) -> RateLimiterBuilder {
        RateLimiterBuilder {
            prefix: prefix.into(),
            policies: Vec::new(),
            overrides: HashMap::new(),
            store: None,
            clock: None,
            instances: NonZeroU32::MIN,
            blocked_capacity: 10_000,
            breaker_threshold: NonZeroU32::new(3).expect("3 is not zero"),
            breaker_cooldown: Duration::from_secs(1),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The policies applied to `key` (its override, or the defaults).
    pub fn policies_for(&self, key: &str) -> &[Policy] {
        &self.policy_set(key).policies
    }

    #[inline]
    fn policy_set(&self, key: &str) -> &PolicySet {
        if self.inner.overrides.is_empty() {
            return &self.inner.defaults;
        }
        self.inner.overrides.get(key).unwrap_or(&self.inner.defaults)
    }

    /// Whether the circuit breaker is open (policies use their store-failure mode).
    pub fn is_degraded(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Checks and counts one request for `key` at once, without a future,
    /// when no I/O is needed: always on the in-memory store (the limiter's
    /// whole answer), and on other stores when the blocked-key cache knows
    /// `key` is refused. `None` when the store must be asked; then nothing
    /// was counted, and [`check`](Self::check) asks it (also while the
    /// store's circuit breaker is open: `check` then decides by each
    /// policy's fallback).
    ///
    /// For code that cannot wait (a tonic interceptor, a synchronous
    /// handler), and the cheapest check: it costs no future and, for a
    /// one-policy limiter on the in-memory store, no allocation once the key
    /// is known.
    ///
    /// ```
    /// use brisk_ratelimit::{Policy, Quota, RateLimiter};
    /// use std::num::NonZeroU32;
    ///
    /// let limiter = RateLimiter::builder("rl:api:")
    ///     .policy(Policy::new("api", Quota::per_minute(NonZeroU32::new(1).unwrap())))
    ///     .build()
    ///     .unwrap();
    /// // The default store is in memory: every check is decided at once.
    /// assert!(limiter.check_now("198.51.100.1").unwrap().unwrap().is_allowed());
    /// assert!(!limiter.check_now("198.51.100.1").unwrap().unwrap().is_allowed());
    /// ```
    #[inline]
    pub fn check_now(&self, key: &str) -> Option<Result<Decision, Error>> {
        self.decide_without_waiting(key, 1, Operation::Consume).ok()
    }

    /// [`check_now`](Self::check_now) for a request weighing `cost` units.
    #[inline]
    pub fn check_n_now(&self, key: &str, cost: NonZeroU32) -> Option<Result<Decision, Error>> {
        self.decide_without_waiting(key, u64::from(cost.get()), Operation::Consume).ok()
    }

    /// For the layer: [`check_n_now`](Self::check_n_now)'s answer, or the
    /// time at which the store must be asked, to hand to
    /// [`check_n_by_store`](Self::check_n_by_store) (so that nothing looked
    /// at here is looked at again).
    #[cfg(feature = "tower")]
    pub(crate) fn check_n_at_once(&self, key: &str, cost: NonZeroU32) -> Result<Result<Decision, Error>, u64> {
        self.decide_without_waiting(key, u64::from(cost.get()), Operation::Consume).map_err(|(now, _)| now)
    }

    /// For the layer: asks the store, after [`check_n_at_once`](Self::check_n_at_once)
    /// found at `now` that it must.
    #[cfg(feature = "tower")]
    pub(crate) async fn check_n_by_store(&self, key: &str, cost: NonZeroU32, now: u64) -> Result<Decision, Error> {
        let set = self.policy_set(key);
        self.decide_by_store(key, set, u64::from(cost.get()), Operation::Consume, now).await
    }

    /// Checks and counts one request for `key`.
    pub fn check<'a>(&'a self, key: &'a str) -> impl Future<Output = Result<Decision, Error>> + Send + 'a {
        Call::new(self, key, 1, Operation::Consume)
    }

    /// Checks and counts a request weighing `cost` units: admitted only if
    /// every policy has `cost` units; a refused request consumes nothing.
    pub fn check_n<'a>(
        &'a self,
        key: &'a str,
        cost: NonZeroU32,
    ) -> impl Future<Output = Result<Decision, Error>> + Send + 'a {
        Call::new(self, key, cost.get(), Operation::Consume)
    }

    /// Answers as [`check_n`](Self::check_n) would, without counting anything.
    pub fn peek<'a>(
        &'a self,
        key: &'a str,
        cost: NonZeroU32,
    ) -> impl Future<Output = Result<Decision, Error>> + Send + 'a {
        Call::new(self, key, cost.get(), Operation::Peek)
    }

    /// Gives `cost` units back to every policy of `key` (e.g. a request that
    /// failed through no fault of the client), and forgets a cached block.
    /// Answers with each policy's state afterwards.
    pub fn refund<'a>(
        &'a self,
        key: &'a str,
        cost: NonZeroU32,
    ) -> impl Future<Output = Result<Decision, Error>> + Send + 'a {
        Call::new(self, key, cost.get(), Operation::Refund)
    }

    /// Registers this limiter's metrics, each series labelled
    /// `limiter="<prefix>"`, read at scrape time.
    ///
    /// A registry must hold each metric family once: to export **several
    /// limiters** from one registry, register them together with
    /// [`register_all`](Self::register_all), not one by one.
    #[cfg(feature = "prometheus")]
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        Self::register_all(registry, [self]);
    }

    /// Registers several limiters' metrics as one collector: each metric
    /// family is written once, with one series per limiter (label
    /// `limiter="<prefix>"`) and policy. Limiters sharing a prefix add up.
    /// The registry does not keep the limiters alive: a dropped limiter's
    /// series leave the exposition.
    ///
    /// ```
    /// use brisk_ratelimit::{Policy, Quota, RateLimiter};
    /// use prometheus_client::registry::Registry;
    /// use std::num::NonZeroU32;
    ///
    /// let nz = |n| NonZeroU32::new(n).unwrap();
    /// let api = RateLimiter::builder("rl:api:").policy(Policy::new("api", Quota::per_minute(nz(100)))).build().unwrap();
    /// let deploy = RateLimiter::builder("rl:deploy:").policy(Policy::new("deploy", Quota::per_hour(nz(10)))).build().unwrap();
    /// let mut registry = Registry::default();
    /// RateLimiter::register_all(&mut registry, [&api, &deploy]);
    /// ```
    #[cfg(feature = "prometheus")]
    pub fn register_all<'a>(
        registry: &mut prometheus_client::registry::Registry,
        limiters: impl IntoIterator<Item = &'a RateLimiter>,
    ) {
        let limiters = limiters.into_iter().map(|l| Arc::downgrade(&l.inner)).collect();
        registry.register_collector(Box::new(crate::metrics::LimiterCollector::new(limiters)));
    }

    /// Decides at once when no I/O is needed: the one-policy in-memory
    /// limiter inline, any other case out of line. `Err` when the store must
    /// be asked: the time and the key's policies.
    #[inline(always)]
    fn decide_without_waiting(
        &self,
        key: &str,
        cost: u64,
        op: Operation,
    ) -> Result<Result<Decision, Error>, (u64, &PolicySet)> {
        match self.decide_single(key, cost, op) {
            Some(decision) => Ok(Ok(decision)),
            None => self.decide_at_once_or_invalid(key, cost, op),
        }
    }

    /// The common case, decided where it is returned: one policy, no
    /// per-key overrides, the in-memory store. `None` for any other limiter
    /// or an empty key.
    #[inline(always)]
    fn decide_single(&self, key: &str, cost: u64, op: Operation) -> Option<Decision> {
        let inner = &*self.inner;
        let (Some(Single { memory, policy, params, policy_ref: r, namespace }), false) =
            (&inner.single, key.is_empty())
        else {
            return None;
        };
        let outcome = memory.decide_one(key, namespace, params, cost, op);
        if op == Operation::Consume {
            inner.defaults.metrics[0].decision(counted(outcome.allowed), Source::Store);
            if !outcome.allowed {
                let retry_after = outcome.retry_after.map(Duration::from_micros);
                self.log_denied(key, &[policy.name()], retry_after);
            }
        }
        Some(Decision::one(policy_decision(r, &outcome, Source::Store)))
    }

    /// Every case but [`decide_single`](Self::decide_single)'s: an empty key
    /// is an error; otherwise the decision at once when no I/O is needed (a
    /// store that needs none, or a key the blocked-key cache knows). `Err`
    /// when the store must be asked: the time and the key's policies.
    #[inline(never)]
    fn decide_at_once_or_invalid(
        &self,
        key: &str,
        cost: u64,
        op: Operation,
    ) -> Result<Result<Decision, Error>, (u64, &PolicySet)> {
        if key.is_empty() {
            return Ok(Err(Error::invalid_key()));
        }
        let set = self.policy_set(key);
        if let Some(decision) = self.decide_now(key, set, cost, op) {
            return Ok(Ok(decision));
        }
        let inner = &*self.inner;
        let now = inner.clock.now_micros();
        // The blocked-key cache is the limiter's own: the bare key names an entry.
        if let Some(blocked) = &inner.blocked {
            if op == Operation::Refund {
                blocked.remove(key);
            } else if let Some(decision) = blocked.get(key, cost, now) {
                inner.metrics.blocked_hit();
                record(&decision, set);
                return Ok(Ok(decision));
            }
        }
        Err((now, set))
    }

    /// Asks the store (or, when it fails, each policy's fallback).
    async fn decide_by_store(
        &self,
        key: &str,
        set: &PolicySet,
        cost: u64,
        op: Operation,
        now: u64,
    ) -> Result<Decision, Error> {
        let inner = &*self.inner;
        let policies = &*set.policies;
        let storage_key = StoreKey { prefix: &inner.prefix, key };
        let request =
            StoreRequest { key: storage_key, policies, namespaces: &set.namespaces, params: &set.params, cost, op };
        let permit = inner.breaker.permit(now);
        let result = match permit {
            Permit::Skip => Err(None),
            Permit::Call | Permit::Probe => {
                let result = inner.store.apply(request).await;
                let result = result.and_then(|o| {
                    if o.len() == policies.len() {
                        Ok(o)
                    } else {
                        Err(StoreError::new(StoreErrorKind::Response, "wrong number of policy answers", None))
                    }
                });
                if let Err(e) = &result {
                    inner.metrics.store_error(e.kind());
                    tracing::warn!(limiter = %inner.prefix, error = %e, "rate-limit store failed");
                }
                match inner.breaker.record(result.is_ok(), inner.clock.now_micros()) {
                    Some(Transition::Opened) => {
                        inner.metrics.mode_change(true);
                        tracing::warn!(limiter = %inner.prefix, "rate-limit store circuit opened; using fallback modes");
                    }
                    Some(Transition::Closed) => {
                        inner.metrics.mode_change(false);
                        tracing::info!(limiter = %inner.prefix, "rate-limit store circuit closed; back on the store");
                    }
                    None => {}
                }
                result.map_err(Some)
            }
        };

        let decision = match result {
            Ok(outcomes) => {
                let decision = Decision::new(
                    policies
                        .iter()
                        .zip(&set.refs)
                        .zip(&outcomes)
                        .map(|((_, r), o)| policy_decision(r, o, Source::Store))
                        .collect(),
                );
                if let (Operation::Consume, false, Some(blocked)) = (op, decision.allowed, &inner.blocked) {
                    blocked.insert(key, cost, now, &decision);
                }
                decision
            }
            Err(error) => self.fallback(storage_key, set, cost, op, error)?,
        };
        if op == Operation::Consume {
            record(&decision, set);
            if !decision.allowed {
                self.log_denied(
                    key,
                    &decision.violated().map(|p| p.name()).collect::<Vec<_>>(),
                    decision.retry_after(),
                );
            }
        }
        Ok(decision)
    }

    /// The path of stores that answer without I/O and cannot fail (memory):
    /// no blocked-key cache (nothing to save), no breaker, and no allocation
    /// but the key's first insertion.
    #[inline]
    fn decide_now(&self, key: &str, set: &PolicySet, cost: u64, op: Operation) -> Option<Decision> {
        let policies = &*set.policies;
        let inner = &*self.inner;
        let decision = if let ([params], [r], [namespace]) = (&*set.params, &*set.refs, &*set.namespaces) {
            let outcome = inner.memory.as_ref()?.decide_one(key, namespace, params, cost, op);
            Decision::one(policy_decision(r, &outcome, Source::Store))
        } else {
            thread_local! {
                static SCRATCH: std::cell::RefCell<Vec<Outcome>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            SCRATCH.with(|scratch| {
                let Ok(mut scratch) = scratch.try_borrow_mut() else { return None };
                let outcomes = &mut *scratch;
                let request = StoreRequest {
                    key: StoreKey { prefix: &inner.prefix, key },
                    policies,
                    namespaces: &set.namespaces,
                    params: &set.params,
                    cost,
                    op,
                };
                if !inner.store.apply_now(request, outcomes) || outcomes.len() != policies.len() {
                    return None;
                }
                Some(Decision::new(
                    policies
                        .iter()
                        .zip(&set.refs)
                        .zip(outcomes.iter())
                        .map(|((_, r), o)| policy_decision(r, o, Source::Store))
                        .collect(),
                ))
            })?
        };
        if op == Operation::Consume {
            record(&decision, set);
            if !decision.allowed {
                self.log_denied(
                    key,
                    &decision.violated().map(|p| p.name()).collect::<Vec<_>>(),
                    decision.retry_after(),
                );
            }
        }
        Some(decision)
    }

    /// The `tracing` event of a refusal.
    #[cold]
    fn log_denied(&self, key: &str, policies: &[&str], retry_after: Option<Duration>) {
        tracing::info!(
            limiter = %self.inner.prefix,
            key,
            policies = ?policies,
            retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
            "rate limit exceeded"
        );
    }

    /// Decides without the store, policy by policy, as each is configured.
    fn fallback(
        &self,
        storage_key: StoreKey<'_>,
        set: &PolicySet,
        cost: u64,
        op: Operation,
        error: Option<StoreError>,
    ) -> Result<Decision, Error> {
        let inner = &*self.inner;
        let policies = &*set.policies;
        if let Some(i) = policies.iter().position(|p| p.on_store_error == OnStoreError::FailClosed) {
            set.metrics[i].decision(Counted::Unavailable, Source::Store);
            set.metrics[i].fallback(OnStoreError::FailClosed);
            return Err(Error::unavailable(error));
        }
        let mut local_outcomes = inner
            .local
            .decide(StoreRequest {
                key: storage_key,
                policies: &set.local,
                namespaces: &set.local_namespaces,
                params: &set.local_params,
                cost,
                op,
            })
            .into_iter()
            .zip(&*set.local_refs);
        let mut decisions = Vec::with_capacity(policies.len());
        for (((p, params), r), counters) in policies.iter().zip(&set.params).zip(&set.refs).zip(&set.metrics) {
            counters.fallback(p.on_store_error);
            if p.on_store_error == OnStoreError::Local {
                let (outcome, local_ref) = local_outcomes.next().expect("one local outcome per local policy");
                decisions.push(policy_decision(local_ref, &outcome, Source::Local));
            } else {
                decisions.push(PolicyDecision::new(r.clone(), true, params.capacity(), 0, None, Source::FailOpen));
            }
        }
        Ok(Decision::new(decisions))
    }
}

/// The future of [`RateLimiter::check`] and its siblings. Its first poll
/// decides at once when no I/O is needed (the in-memory store, or a key known
/// to be blocked), with no allocation; otherwise it boxes the store call and
/// polls that.
struct Call<'a> {
    limiter: &'a RateLimiter,
    key: &'a str,
    cost: u32,
    op: Operation,
    store: Option<StoreCall<'a>>,
}

// A check's future and its answer are moved in and out of every caller's
// frame: each is kept to six words (the cost as `u32`, the error's source boxed).
const _: () = assert!(std::mem::size_of::<Call<'static>>() <= 48);
const _: () = assert!(std::mem::size_of::<Result<Decision, Error>>() <= 48);

type StoreCall<'a> = Pin<Box<dyn Future<Output = Result<Decision, Error>> + Send + 'a>>;

impl<'a> Call<'a> {
    fn new(limiter: &'a RateLimiter, key: &'a str, cost: u32, op: Operation) -> Self {
        Call { limiter, key, cost, op, store: None }
    }

    /// The first poll past the one-policy in-memory path: decides at once
    /// when it can, else starts the store call. Kept out of line, so that a
    /// caller polling a check inlines only that path.
    #[inline(never)]
    fn first_poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Decision, Error>> {
        let (limiter, key, cost, op) = (self.limiter, self.key, u64::from(self.cost), self.op);
        match limiter.decide_at_once_or_invalid(key, cost, op) {
            Ok(result) => Poll::Ready(result),
            Err((now, set)) => {
                self.store.insert(Box::pin(limiter.decide_by_store(key, set, cost, op, now))).as_mut().poll(cx)
            }
        }
    }
}

impl Future for Call<'_> {
    type Output = Result<Decision, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(store) = &mut this.store {
            return store.as_mut().poll(cx);
        }
        if let Some(decision) = this.limiter.decide_single(this.key, u64::from(this.cost), this.op) {
            return Poll::Ready(Ok(decision));
        }
        this.first_poll(cx)
    }
}

fn counted(allowed: bool) -> Counted {
    if allowed { Counted::Allowed } else { Counted::Denied }
}

/// Counts a decision per policy (the decision lists its policies in the set's order).
#[inline]
fn record(decision: &Decision, set: &PolicySet) {
    for (p, counters) in decision.policies.iter().zip(&set.metrics) {
        counters.decision(if p.allowed { Counted::Allowed } else { Counted::Denied }, p.source);
    }
}

#[inline]
fn policy_decision(policy: &PolicyRef, o: &Outcome, source: Source) -> PolicyDecision {
    PolicyDecision::new(policy.clone(), o.allowed, o.remaining, o.reset_after, o.retry_after, source)
}

impl RateLimiterBuilder {
    /// Adds a policy; a request must satisfy every policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// Replaces the policies for one key (e.g. a partner's API key with a larger quota).
    pub fn override_key(mut self, key: impl Into<String>, policies: impl IntoIterator<Item = Policy>) -> Self {
        self.overrides.insert(key.into(), policies.into_iter().collect());
        self
    }

    /// Sets the store (default: a [`MemoryStore`] on the limiter's clock).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Sets the clock of the in-memory store, blocked-key cache and breaker.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(SharedClock::new(clock));
        self
    }

    /// How many instances share the store: [`OnStoreError::Local`] policies
    /// divide their quota by this while the store is unavailable.
    pub fn instances(mut self, instances: NonZeroU32) -> Self {
        self.instances = instances;
        self
    }

    /// How many blocked keys to remember locally (0 disables the cache).
    pub fn blocked_keys_capacity(mut self, capacity: usize) -> Self {
        self.blocked_capacity = capacity;
        self
    }

    /// Opens the circuit after `failures` consecutive store failures, and
    /// sends one probe to the store every `cooldown` while open.
    pub fn circuit_breaker(mut self, failures: NonZeroU32, cooldown: Duration) -> Self {
        self.breaker_threshold = failures;
        self.breaker_cooldown = cooldown;
        self
    }

    /// Builds the limiter.
    pub fn build(self) -> Result<RateLimiter, BuildError> {
        if self.policies.is_empty() {
            return Err(BuildError("a limiter needs at least one policy".into()));
        }
        for set in std::iter::once(&self.policies).chain(self.overrides.values()) {
            if set.is_empty() {
                return Err(BuildError("a key override needs at least one policy".into()));
            }
            for (i, p) in set.iter().enumerate() {
                p.validate().map_err(BuildError)?;
                if set[..i].iter().any(|q| q.name == p.name) {
                    return Err(BuildError(format!("policy name {:?} is used twice", p.name)));
                }
            }
        }
        if self.prefix.contains(['{', '}']) {
            return Err(BuildError("the key prefix must not contain '{' or '}' (they form the Redis hash tag)".into()));
        }
        let clock = self.clock.unwrap_or_else(|| SharedClock::System(SystemClock::new()));
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::with_shared_clock(clock.clone())));
        let memory = store.as_memory().cloned();
        let cooldown = self.breaker_cooldown.as_micros() as u64;
        let prefix: Arc<str> = self.prefix.into();
        let defaults = PolicySet::new(&prefix, self.policies, self.instances, memory.is_none());
        let single = match (&memory, &*defaults.policies, &*defaults.params, &*defaults.refs, &*defaults.namespaces) {
            (Some(memory), [policy], [params], [policy_ref], [namespace]) if self.overrides.is_empty() => {
                Some(Single {
                    memory: memory.clone(),
                    policy: policy.clone(),
                    params: *params,
                    policy_ref: policy_ref.clone(),
                    namespace: namespace.clone(),
                })
            }
            _ => None,
        };
        Ok(RateLimiter {
            inner: Arc::new(LimiterInner {
                single,
                defaults,
                overrides: self
                    .overrides
                    .into_iter()
                    .map(|(k, v)| (k, PolicySet::new(&prefix, v, self.instances, memory.is_none())))
                    .collect(),
                prefix,
                store,
                memory,
                local: MemoryStore::with_shared_clock(clock.clone()),
                clock,
                blocked: (self.blocked_capacity > 0).then(|| BlockedKeys::new(self.blocked_capacity)),
                breaker: Breaker::new(self.breaker_threshold.get(), cooldown, cooldown.max(1)),
                metrics: Metrics::default(),
            }),
        })
    }
}
