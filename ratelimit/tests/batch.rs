//! Decisions batched into one script call against a real Redis (and Redis
//! Cluster): exact quotas, all-or-nothing per decision, mixed outcomes in one
//! batch, the same answers as unbatched, and each decision's own failure mode
//! when its batch fails.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use brisk_ratelimit::clock::FakeClock;
use brisk_ratelimit::store::{RedisStore, RedisStoreBuilder};
use brisk_ratelimit::{Algorithm, Decision, Error, ErrorKind, OnStoreError, Policy, Quota, RateLimiter, Source};
use brisk_testkit::require;

mod common;
use common::{evalsha_calls, runtime_with_redis};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// One call in flight: every decision that arrives while it is out waits for
/// the next batch.
fn one_call_in_flight(timeout: Duration) -> RedisStoreBuilder {
    RedisStore::builder()
        .timeout(timeout)
        .max_calls_in_flight(NonZeroUsize::new(1).unwrap())
        .max_batch_size(NonZeroUsize::new(64).unwrap())
}

fn build(prefix: &str, store: RedisStore, policies: &[Policy]) -> RateLimiter {
    let mut b = RateLimiter::builder(prefix).blocked_keys_capacity(0).clock(FakeClock::new()).store(store);
    for p in policies {
        b = b.policy(p.clone());
    }
    b.build().unwrap()
}

/// The same policies in memory, for comparison at one instant.
fn in_memory(policies: &[Policy]) -> RateLimiter {
    let b = RateLimiter::builder("m:").blocked_keys_capacity(0).clock(FakeClock::new());
    policies.iter().fold(b, |b, p| b.policy(p.clone())).build().unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Check(u32),
    Peek(u32),
    Refund(u32),
}

async fn run(limiter: &RateLimiter, key: &str, op: Op) -> Result<Decision, Error> {
    match op {
        Op::Check(cost) => limiter.check_n(key, nz(cost)).await,
        Op::Peek(cost) => limiter.peek(key, nz(cost)).await,
        Op::Refund(cost) => limiter.refund(key, nz(cost)).await,
    }
}

/// What a caller sees of a decision, timing aside: allowed, and per policy
/// its name, allowed and remaining.
fn seen(d: &Decision) -> (bool, Vec<(String, bool, u32)>) {
    (d.is_allowed(), d.policies().iter().map(|p| (p.name().to_owned(), p.is_allowed(), p.remaining())).collect())
}

/// Starts every `(key, op)` at once on a current-thread runtime: the first
/// goes out alone and the others, in order, wait for one batch behind it.
async fn all_at_once(limiter: &RateLimiter, ops: &[(&str, Op)]) -> Vec<Result<Decision, Error>> {
    let tasks: Vec<_> = ops
        .iter()
        .map(|&(key, op)| {
            let limiter = limiter.clone();
            let key = key.to_owned();
            tokio::spawn(async move { run(&limiter, &key, op).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

fn two_policies() -> Vec<Policy> {
    vec![
        Policy::new("gcra", Quota::per_hour(nz(10))),
        Policy::new("fixed", Quota::per_day(nz(7))).algorithm(Algorithm::FixedWindow),
    ]
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_mixes_allowed_and_denied_decisions_and_answers_as_unbatched() {
    let redis = require!(brisk_testkit::redis().await);
    let mut con = redis.client().get_multiplexed_async_connection().await.unwrap();
    let batched = one_call_in_flight(Duration::from_secs(2)).connect(redis.client()).await.unwrap();
    let unbatched = RedisStore::builder()
        .timeout(Duration::from_secs(2))
        .batch_decisions(false)
        .connect(redis.client())
        .await
        .unwrap();
    let prefix = brisk_testkit::unique_name("rl:batch:");
    let policies = two_policies();
    let a = build(&format!("{prefix}a:"), batched, &policies);
    let b = build(&format!("{prefix}b:"), unbatched, &policies);
    let c = RateLimiter::builder(format!("{prefix}c:")).blocked_keys_capacity(0).clock(FakeClock::new());
    let c = policies.iter().fold(c, |c, p| c.policy(p.clone())).build().unwrap();
    a.check("warm").await.unwrap(); // the script is cached: one EVALSHA per call below
    let ops = [
        ("k", Op::Check(3)),
        ("k", Op::Check(2)),
        ("j", Op::Check(1)),
        ("k", Op::Check(4)), // the fixed window has 2 left: denied, and charges neither policy
        ("k", Op::Peek(2)),
        ("k", Op::Check(2)), // the last 2 units of the fixed window
        ("k", Op::Check(1)), // denied
        ("k", Op::Refund(3)),
        ("k", Op::Check(3)),
        ("j", Op::Check(9)), // the day's 7 are exceeded: denied, gcra untouched
        ("j", Op::Check(6)),
        ("j", Op::Check(1)), // denied
    ];
    let before = evalsha_calls(&mut con).await;
    let together = all_at_once(&a, &ops).await;
    assert_eq!(evalsha_calls(&mut con).await - before, 2, "the first alone, the other eleven in one batch");
    let mut allowed = 0;
    for (&(key, op), batched) in ops.iter().zip(&together) {
        let batched = batched.as_ref().unwrap();
        let unbatched = run(&b, key, op).await.unwrap();
        let in_memory = run(&c, key, op).await.unwrap();
        assert_eq!(seen(batched), seen(&unbatched), "{key} {op:?}");
        assert_eq!(seen(batched), seen(&in_memory), "{key} {op:?}");
        assert!(batched.policies().iter().all(|p| p.source() == Source::Store));
        allowed += usize::from(batched.is_allowed() && matches!(op, Op::Check(_)));
    }
    assert_eq!(allowed, 6, "denied and allowed decisions side by side in one batch");
    // The batch wrote each key once at its end, with the expiry the
    // unbatched calls gave it.
    for key in ["{k}:gcra", "{k}:fixed", "{j}:gcra", "{j}:fixed"] {
        let ttl = |limiter: &str| {
            let key = format!("{prefix}{limiter}:{key}");
            let mut con = con.clone();
            async move { redis::cmd("PTTL").arg(key).query_async::<i64>(&mut con).await.unwrap() }
        };
        let (a, b) = (ttl("a").await, ttl("b").await);
        assert!(a > 0 && (a - b).abs() < 2_000, "{key}: {a} ms batched, {b} ms unbatched");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn limiters_sharing_a_store_share_its_batches() {
    let redis = require!(brisk_testkit::redis().await);
    let mut con = redis.client().get_multiplexed_async_connection().await.unwrap();
    let store = one_call_in_flight(Duration::from_secs(2)).connect(redis.client()).await.unwrap();
    let prefix = brisk_testkit::unique_name("rl:batchshare:");
    let shapes = [
        two_policies(),
        vec![Policy::new("gcra", Quota::per_hour(nz(4)))],
        vec![Policy::new("sliding", Quota::per_day(nz(3))).algorithm(Algorithm::SlidingWindow)],
    ];
    let on_redis: Vec<RateLimiter> =
        shapes.iter().enumerate().map(|(i, p)| build(&format!("{prefix}{i}:"), store.clone(), p)).collect();
    let in_memory: Vec<RateLimiter> = shapes
        .iter()
        .map(|p| {
            let b = RateLimiter::builder("m:").blocked_keys_capacity(0).clock(FakeClock::new());
            p.iter().fold(b, |b, p| b.policy(p.clone())).build().unwrap()
        })
        .collect();
    on_redis[0].check("warm").await.unwrap();
    let ops: Vec<(usize, Op)> =
        (0..30).map(|i| (i % 3, if i % 7 == 6 { Op::Refund(1) } else { Op::Check(1 + i as u32 % 2) })).collect();
    let before = evalsha_calls(&mut con).await;
    let tasks: Vec<_> = ops
        .iter()
        .map(|&(l, op)| {
            let limiter = on_redis[l].clone();
            tokio::spawn(async move { run(&limiter, "k", op).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert_eq!(evalsha_calls(&mut con).await - before, 2, "three limiters' decisions in one batch");
    for (&(l, op), batched) in ops.iter().zip(&results) {
        assert_eq!(seen(batched), seen(&run(&in_memory[l], "k", op).await.unwrap()), "limiter {l} {op:?}");
    }
}

/// Random batches of every operation on three algorithms and two keys answer
/// as the same requests one by one in memory.
#[test]
fn random_batches_agree_with_memory() {
    use proptest::prelude::*;
    let Some((rt, redis)) = runtime_with_redis() else { return };
    let config = ProptestConfig { cases: 32, ..ProptestConfig::default() };
    proptest!(config, |(
        ops in proptest::collection::vec((0u8..3, 1u32..5, 0usize..2), 2..30),
        limits in (1u32..10, 1u32..10, 1u32..10),
    )| {
        rt.block_on(async {
            let prefix = brisk_testkit::unique_name("rl:batchprop:");
            let policies = common::one_of_each_algorithm(limits);
            let single = vec![policies[0].clone()];
            for (i, policies) in [policies, single].iter().enumerate() {
                let store = one_call_in_flight(Duration::from_secs(2)).connect(redis.client()).await.unwrap();
                let on_redis = build(&format!("{prefix}{i}:"), store, policies);
                let in_memory = in_memory(policies);
                let ops: Vec<(&str, Op)> = ops
                    .iter()
                    .map(|&(op, cost, key)| {
                        let key = ["a", "b"][key];
                        (key, match op { 0 => Op::Check(cost), 1 => Op::Peek(cost), _ => Op::Refund(cost) })
                    })
                    .collect();
                let together = all_at_once(&on_redis, &ops).await;
                for (&(key, op), batched) in ops.iter().zip(&together) {
                    let expected = run(&in_memory, key, op).await.unwrap();
                    prop_assert_eq!(seen(batched.as_ref().unwrap()), seen(&expected), "{} {:?}", key, op);
                }
            }
            Ok(())
        })?;
    });
}

/// Batches in the script's compact form (every decision one GCRA policy
/// consumed at one cost, keys repeating) answer as the same requests one by
/// one in memory, retry-after included.
#[test]
fn random_uniform_batches_agree_with_memory() {
    use proptest::prelude::*;
    let Some((rt, redis)) = runtime_with_redis() else { return };
    let config = ProptestConfig { cases: 32, ..ProptestConfig::default() };
    proptest!(config, |(
        keys in proptest::collection::vec(0usize..3, 2..40),
        cost in 1u32..4,
        limit in 1u32..10,
        burst in 1u32..10,
    )| {
        rt.block_on(async {
            let prefix = brisk_testkit::unique_name("rl:uniformprop:");
            let policies = vec![Policy::new("gcra", Quota::per_hour(nz(limit)).with_burst(nz(burst)))];
            let store = one_call_in_flight(Duration::from_secs(2)).connect(redis.client()).await.unwrap();
            let on_redis = build(&prefix, store, &policies);
            let in_memory = in_memory(&policies);
            let ops: Vec<(&str, Op)> = keys.iter().map(|&k| (["a", "b", "c"][k], Op::Check(cost))).collect();
            let together = all_at_once(&on_redis, &ops).await;
            for (&(key, op), batched) in ops.iter().zip(&together) {
                let batched = batched.as_ref().unwrap();
                let expected = run(&in_memory, key, op).await.unwrap();
                prop_assert_eq!(seen(batched), seen(&expected), "{} {:?}", key, op);
                prop_assert_eq!(batched.retry_after().is_some(), expected.retry_after().is_some(), "{}", key);
            }
            Ok(())
        })?;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_one_key_get_exactly_the_quota() {
    let redis = require!(brisk_testkit::redis().await);
    let mut con = redis.client().get_multiplexed_async_connection().await.unwrap();
    let store = one_call_in_flight(Duration::from_secs(5)).connect(redis.client()).await.unwrap();
    let prefix = brisk_testkit::unique_name("rl:batch1:");
    let limiter =
        build(&prefix, store, &[Policy::new("p", Quota::per_hour(nz(50))).on_store_error(OnStoreError::FailClosed)]);
    limiter.check("warm").await.unwrap();
    let before = evalsha_calls(&mut con).await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check("k").await.unwrap().is_allowed() })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 50);
    let calls = evalsha_calls(&mut con).await - before;
    assert!(calls < 200, "batches formed: {calls} calls for 200 decisions");
    assert_eq!(limiter.peek("k", nz(1)).await.unwrap().remaining(), 0);
}

/// Many keys, two policies, weighted requests from concurrent callers: for
/// every key, each policy was charged exactly the admitted requests' cost,
/// so no refused request charged either policy.
async fn all_or_nothing_on_many_keys(store: RedisStore) {
    let prefix = brisk_testkit::unique_name("rl:batch2:");
    let policies: Vec<Policy> =
        two_policies().into_iter().map(|p| p.on_store_error(OnStoreError::FailClosed)).collect();
    let limiter = build(&prefix, store, &policies);
    let keys: Vec<String> = (0..16).map(|i| format!("client-{i}")).collect();
    let tasks: Vec<_> = (0..256)
        .map(|i| {
            let limiter = limiter.clone();
            let key = keys[i % keys.len()].clone();
            let cost = 1 + (i as u32 * 7) % 3;
            tokio::spawn(async move {
                let d = limiter.check_n(&key, nz(cost)).await.unwrap();
                (key, cost, d.is_allowed())
            })
        })
        .collect();
    let mut admitted: BTreeMap<String, u32> = BTreeMap::new();
    for t in tasks {
        let (key, cost, allowed) = t.await.unwrap();
        *admitted.entry(key).or_default() += if allowed { cost } else { 0 };
    }
    for key in &keys {
        let used = admitted.get(key).copied().unwrap_or(0);
        assert!((5..=7).contains(&used), "{key}: {used} admitted of 7 (the last refusal left at most 2 units)");
        // A peek answers as a check of 1 would: after it, or (refused by the
        // full window) with the other policy untouched.
        let state = limiter.peek(key, nz(1)).await.unwrap();
        let remaining: Vec<u32> = state.policies().iter().map(|p| p.remaining()).collect();
        let expected = if used < 7 { [9 - used, 6 - used] } else { [10 - used, 0] };
        assert_eq!(remaining, expected, "{key}: each policy charged only the admitted requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_many_keys_keep_all_or_nothing_per_decision() {
    let redis = require!(brisk_testkit::redis().await);
    all_or_nothing_on_many_keys(one_call_in_flight(Duration::from_secs(5)).connect(redis.client()).await.unwrap())
        .await;
    let unbatched = RedisStore::builder().timeout(Duration::from_secs(5)).batch_decisions(false);
    all_or_nothing_on_many_keys(unbatched.connect(redis.client()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_batches_keep_to_one_slot() {
    let cluster = require!(brisk_testkit::redis_cluster().await);
    let store = one_call_in_flight(Duration::from_secs(5)).connect_cluster(cluster.client()).await.unwrap();
    // Sixteen keys over the three nodes' slots: a batch mixing slots would fail with CROSSSLOT.
    all_or_nothing_on_many_keys(store).await;
}

/// The circuit breaker of [`three_failure_modes`]' limiters probes the store
/// once per this much of their clock.
const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

/// Three limiters on `store` and `clock`, one per failure mode (open, closed,
/// local), each having decided once through Redis.
async fn three_failure_modes(store: &RedisStore, prefix: &str, clock: &FakeClock) -> [RateLimiter; 3] {
    let prefix = brisk_testkit::unique_name(prefix);
    let limiter = |name: &str, mode: OnStoreError| {
        RateLimiter::builder(format!("{prefix}{name}:"))
            .policy(Policy::new(name, Quota::per_hour(nz(10))).on_store_error(mode))
            .store(store.clone())
            .clock(clock.clone())
            .circuit_breaker(nz(3), BREAKER_COOLDOWN)
            .instances(nz(2))
            .build()
            .unwrap()
    };
    let limiters = [
        limiter("open", OnStoreError::FailOpen),
        limiter("closed", OnStoreError::FailClosed),
        limiter("local", OnStoreError::Local),
    ];
    for l in &limiters {
        assert_eq!(l.check("k").await.unwrap().source(), Source::Store);
    }
    limiters
}

/// Nine concurrent checks, three per limiter, in turn.
async fn nine_checks(limiters: [&RateLimiter; 3]) -> Vec<Result<Decision, Error>> {
    let tasks: Vec<_> = (0..9)
        .map(|i| {
            let l = limiters[i % 3].clone();
            tokio::spawn(async move { l.check("k").await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

/// Each of [`nine_checks`]' results answered by its limiter's failure mode.
fn assert_each_failure_mode(results: &[Result<Decision, Error>]) {
    for (i, result) in results.iter().enumerate() {
        match i % 3 {
            0 => assert_eq!(result.as_ref().unwrap().source(), Source::FailOpen),
            1 => assert_eq!(result.as_ref().unwrap_err().kind(), ErrorKind::Unavailable),
            _ => assert_eq!(result.as_ref().unwrap().source(), Source::Local),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_batch_applies_each_decisions_failure_mode() {
    let mut redis = require!(brisk_testkit::redis().await);
    let store = one_call_in_flight(Duration::from_secs(5)).connect(redis.client()).await.unwrap();
    let [open, closed, local] = three_failure_modes(&store, "rl:batchfail:", &FakeClock::new()).await;
    redis.kill().unwrap();
    // The first call fails alone; the other eight wait behind it and fail in one batch.
    let started = Instant::now();
    let results = nine_checks([&open, &closed, &local]).await;
    assert!(started.elapsed() < Duration::from_secs(4), "failed, not timed out: {:?}", started.elapsed());
    assert_each_failure_mode(&results);
}

#[tokio::test(flavor = "current_thread")]
async fn decisions_waiting_on_a_hung_redis_time_out_into_their_failure_modes() {
    let mut redis = require!(brisk_testkit::redis().await);
    let store = one_call_in_flight(Duration::from_millis(300)).connect(redis.client()).await.unwrap();
    let clock = FakeClock::new();
    let [open, closed, local] = three_failure_modes(&store, "rl:batchhung:", &clock).await;
    redis.freeze().unwrap();
    let started = Instant::now();
    let results = nine_checks([&open, &closed, &local]).await;
    let waited = started.elapsed();
    redis.thaw().unwrap();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "bounded by the timeout: {waited:?}"
    );
    assert_each_failure_mode(&results);
    // Redis back: the store answers again, at the breaker's next probe (one
    // per cooldown of the limiters' clock; each probe waits at most the
    // store's timeout).
    for _ in 0..20 {
        clock.advance(BREAKER_COOLDOWN);
        if open.check("k2").await.unwrap().source() == Source::Store {
            return;
        }
    }
    panic!("the store did not answer again after Redis was thawed");
}
