use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Operation, Store, StoreError, StoreFuture, StoreRequest, sealed};
use crate::algorithm::{self, Outcome, Params, State};
use crate::clock::{Clock, SystemClock};

/// Counters in process memory: for a single instance, tests, and the
/// fallback when Redis fails. Runs the same algorithms as the Redis script.
///
/// Sharded maps behind short mutexes; a key's state is forgotten once its
/// quota is whole again, swept incrementally (amortised O(1) per call).
/// Clones share the counters.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Box<str>, Entry>,
    ops_since_sweep: usize,
}

#[derive(Debug)]
struct Entry {
    states: Vec<(Arc<str>, State)>,
    expires_at: u64,
}

impl MemoryStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new())
    }

    /// A store on the given clock.
    pub fn with_clock(clock: impl Clock) -> Self {
        Self::with_shared_clock(Arc::new(clock))
    }

    pub(crate) fn with_shared_clock(clock: Arc<dyn Clock>) -> Self {
        let shards = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4).next_power_of_two() * 8;
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
                hasher: RandomState::new(),
                clock,
            }),
        }
    }

    /// Keys currently holding state (approximate: expired keys not yet swept count).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether no key holds state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn decide(&self, request: StoreRequest<'_>) -> Vec<Outcome> {
        let now = self.inner.clock.now_micros();
        let shard_index = (self.inner.hasher.hash_one(request.key) as usize) & (self.inner.shards.len() - 1);
        let mut shard = self.inner.shards[shard_index].lock();
        shard.sweep(now);
        let entry = shard.map.get_mut(request.key);
        let state_of = |entry: &Option<&mut Entry>, name: &str| {
            entry.as_ref().and_then(|e| e.states.iter().find(|(n, _)| &**n == name).map(|(_, s)| *s))
        };
        let mut outcomes = Vec::with_capacity(request.policies.len());
        match request.op {
            Operation::Consume | Operation::Peek => {
                let mut evaluations = Vec::with_capacity(request.policies.len());
                for policy in request.policies {
                    let params = Params::from_policy(policy);
                    let e = algorithm::evaluate(params, state_of(&entry, &policy.name), now, request.cost);
                    evaluations.push(e);
                    outcomes.push(e.outcome);
                }
                let all_allowed = outcomes.iter().all(|o| o.allowed);
                if !all_allowed {
                    // Nothing is charged: policies that would admit report their untouched state.
                    for (policy, outcome) in request.policies.iter().zip(outcomes.iter_mut()) {
                        if outcome.allowed {
                            let params = Params::from_policy(policy);
                            *outcome = algorithm::evaluate(params, state_of(&entry, &policy.name), now, 0).outcome;
                        }
                    }
                }
                if request.op == Operation::Consume && all_allowed {
                    let states =
                        request.policies.iter().zip(&evaluations).map(|(p, e)| (&p.name, e.next, e.expires_at));
                    match entry {
                        Some(entry) => entry.store(states),
                        None => {
                            let mut entry = Entry { states: Vec::with_capacity(request.policies.len()), expires_at: 0 };
                            entry.store(states);
                            shard.map.insert(request.key.into(), entry);
                        }
                    }
                }
            }
            Operation::Refund => {
                let mut refunded = Vec::with_capacity(request.policies.len());
                for policy in request.policies {
                    let params = Params::from_policy(policy);
                    let state = algorithm::refund(params, state_of(&entry, &policy.name), now, request.cost);
                    outcomes.push(algorithm::evaluate(params, state, now, 0).outcome);
                    refunded.push((policy.name.clone(), state));
                }
                if let Some(entry) = entry {
                    for (name, state) in refunded {
                        entry.states.retain(|(n, _)| *n != name);
                        if let Some(state) = state {
                            entry.states.push((name, state));
                        }
                    }
                    if entry.states.is_empty() {
                        shard.map.remove(request.key);
                    }
                }
            }
        }
        outcomes
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Entry {
    fn store<'p>(&mut self, states: impl Iterator<Item = (&'p Arc<str>, State, u64)>) {
        for (name, state, expires_at) in states {
            self.expires_at = self.expires_at.max(expires_at);
            match self.states.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = state,
                None => self.states.push((name.clone(), state)),
            }
        }
    }
}

impl Shard {
    /// Drops expired keys once as many calls as there are keys have passed.
    fn sweep(&mut self, now: u64) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep > self.map.len().max(64) {
            self.ops_since_sweep = 0;
            self.map.retain(|_, e| e.expires_at > now);
        }
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[allow(private_interfaces)] // the trait is sealed: these types never leave the crate
impl sealed::Backend for MemoryStore {
    fn apply<'a>(&'a self, request: StoreRequest<'a>) -> StoreFuture<'a> {
        let outcomes = self.decide(request);
        Box::pin(async move { Ok::<_, StoreError>(outcomes) })
    }

    fn apply_now(&self, request: StoreRequest<'_>) -> Option<Vec<Outcome>> {
        Some(self.decide(request))
    }
}
