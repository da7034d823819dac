//! The Redis store against a real Redis: the Lua script agrees with the
//! in-memory algorithms, decides several policies in one round trip, reloads
//! itself after SCRIPT FLUSH, and survives corrupt state.

use std::num::NonZeroU32;
use std::time::Duration;

use brisk_ratelimit::clock::FakeClock;
use brisk_ratelimit::store::RedisStore;
use brisk_ratelimit::{Algorithm, Policy, Quota, RateLimiter, Source};
use brisk_testkit::require;

mod common;
use common::{evalsha_calls, runtime_with_redis};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

async fn store(redis: &brisk_testkit::Redis) -> RedisStore {
    RedisStore::builder().timeout(Duration::from_secs(2)).connect(redis.client()).await.unwrap()
}

fn policies() -> Vec<Policy> {
    vec![
        Policy::new("gcra", Quota::per_hour(nz(7)).with_burst(nz(5))),
        Policy::new("fixed", Quota::per_hour(nz(9))).algorithm(Algorithm::FixedWindow),
        Policy::new("sliding", Quota::per_day(nz(6))).algorithm(Algorithm::SlidingWindow),
    ]
}

fn build(prefix: &str, store: Option<RedisStore>, policies: Vec<Policy>) -> RateLimiter {
    let mut b = RateLimiter::builder(prefix).blocked_keys_capacity(0).clock(FakeClock::new());
    for p in policies {
        b = b.policy(p);
    }
    if let Some(s) = store {
        b = b.store(s);
    }
    b.build().unwrap()
}

/// Calls per command, from INFO commandstats (commands run inside scripts included).
async fn command_calls(con: &mut redis::aio::MultiplexedConnection) -> std::collections::BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(con).await.unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| !l.starts_with("info:"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            Some((name.to_owned(), rest.split(['=', ',']).nth(1)?.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn lua_agrees_with_memory_on_every_algorithm() {
    let redis = require!(brisk_testkit::redis().await);
    let prefix = brisk_testkit::unique_name("rl:agree:");
    let on_redis = build(&prefix, Some(store(&redis).await), policies());
    let in_memory = build(&prefix, None, policies());
    for cost in [1, 2, 1, 3, 1, 1, 4, 1, 1, 1] {
        let a = on_redis.check_n("k", nz(cost)).await.unwrap();
        let b = in_memory.check_n("k", nz(cost)).await.unwrap();
        assert_eq!(a.is_allowed(), b.is_allowed(), "cost {cost}");
        for (x, y) in a.policies().iter().zip(b.policies()) {
            assert_eq!((x.name(), x.is_allowed(), x.remaining()), (y.name(), y.is_allowed(), y.remaining()));
            assert_eq!(x.retry_after().is_some(), y.retry_after().is_some());
            assert_eq!(x.source(), Source::Store);
        }
        let (pa, pb) = (on_redis.peek("k", nz(1)).await.unwrap(), in_memory.peek("k", nz(1)).await.unwrap());
        assert_eq!(pa.remaining(), pb.remaining());
    }
    let a = on_redis.refund("k", nz(2)).await.unwrap();
    let b = in_memory.refund("k", nz(2)).await.unwrap();
    assert_eq!(
        a.policies().iter().map(|p| p.remaining()).collect::<Vec<_>>(),
        b.policies().iter().map(|p| p.remaining()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn gcra_timing_on_redis_time() {
    let redis = require!(brisk_testkit::redis().await);
    let prefix = brisk_testkit::unique_name("rl:timing:");
    let l = build(&prefix, Some(store(&redis).await), vec![Policy::new("p", Quota::per_minute(nz(2)))]);
    assert_eq!(l.check("k").await.unwrap().remaining(), 1);
    assert_eq!(l.check("k").await.unwrap().remaining(), 0);
    let denied = l.check("k").await.unwrap();
    assert!(!denied.is_allowed());
    let retry = denied.retry_after().unwrap();
    // One unit every 30 s; Redis time moved on by at most the test's runtime.
    assert!(retry <= Duration::from_secs(30) && retry > Duration::from_secs(25), "{retry:?}");
    let reset = denied.policies()[0].reset_after();
    assert!(reset <= Duration::from_secs(60) && reset > Duration::from_secs(55), "{reset:?}");
    // The key expires with its state.
    let mut con = redis.client().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg(format!("{prefix}{{k}}:p")).query_async(&mut con).await.unwrap();
    assert!(ttl > 55_000 && ttl <= 60_000, "{ttl}");
}

#[tokio::test]
async fn one_round_trip_per_decision_also_with_two_policies() {
    let redis = require!(brisk_testkit::redis().await);
    let mut con = redis.client().get_multiplexed_async_connection().await.unwrap();
    let prefix = brisk_testkit::unique_name("rl:rtt:");
    let l = build(
        &prefix,
        Some(store(&redis).await),
        vec![Policy::new("minute", Quota::per_minute(nz(100))), Policy::new("day", Quota::per_day(nz(5_000)))],
    );
    l.check("warm").await.unwrap(); // caches the script (NOSCRIPT, then EVAL)
    let before = command_calls(&mut con).await;
    for i in 0..50 {
        assert!(l.check(&format!("client-{}", i % 5)).await.unwrap().is_allowed());
    }
    let after = command_calls(&mut con).await;
    let delta: std::collections::BTreeMap<_, _> = after
        .iter()
        .map(|(k, v)| (k.as_str(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    // One EVALSHA per decision from the client; inside it TIME, and GET + PSETEX per policy.
    assert_eq!(delta, [("evalsha", 50), ("get", 100), ("psetex", 100), ("time", 50)].into_iter().collect());
}

#[tokio::test]
async fn blocked_keys_cost_no_round_trip() {
    let redis = require!(brisk_testkit::redis().await);
    let mut con = redis.client().get_multiplexed_async_connection().await.unwrap();
    let prefix = brisk_testkit::unique_name("rl:blocked:");
    let clock = FakeClock::new();
    let l = RateLimiter::builder(&prefix)
        .policy(Policy::new("p", Quota::per_hour(nz(1))))
        .store(store(&redis).await)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(l.check("k").await.unwrap().is_allowed());
    let first = l.check("k").await.unwrap();
    assert!(!first.is_allowed());
    assert_eq!(first.source(), Source::Store);
    let before = evalsha_calls(&mut con).await;
    for _ in 0..100 {
        let d = l.check("k").await.unwrap();
        assert!(!d.is_allowed());
        assert_eq!(d.source(), Source::BlockedCache);
    }
    assert_eq!(evalsha_calls(&mut con).await, before);
    // The cached refusal ages on the limiter's clock, and ends at the retry time.
    clock.advance(Duration::from_secs(600));
    let aged = l.check("k").await.unwrap();
    assert_eq!(aged.source(), Source::BlockedCache);
    assert_eq!(aged.retry_after(), first.retry_after().map(|r| r - Duration::from_secs(600)));
    // Smaller costs are not answered by a refusal of a larger one, larger ones are.
    assert_eq!(l.check_n("k", nz(2)).await.unwrap().source(), Source::BlockedCache);
    clock.advance(first.retry_after().unwrap());
    let d = l.check("k").await.unwrap();
    assert_eq!(d.source(), Source::Store, "the cache forgets the key at its retry time");
    // A refund forgets the cached refusal too.
    l.refund("k", nz(1)).await.unwrap();
}

#[tokio::test]
async fn check_now_answers_only_what_needs_no_round_trip() {
    let redis = require!(brisk_testkit::redis().await);
    let mut con = redis.client().get_multiplexed_async_connection().await.unwrap();
    let prefix = brisk_testkit::unique_name("rl:now:");
    let clock = FakeClock::new();
    let l = RateLimiter::builder(&prefix)
        .policy(Policy::new("p", Quota::per_hour(nz(2))))
        .store(store(&redis).await)
        .clock(clock.clone())
        .build()
        .unwrap();
    let before = evalsha_calls(&mut con).await;
    // Only Redis knows an unblocked key's count: no answer, no round trip, nothing counted.
    assert!(l.check_now("k").is_none());
    assert!(l.check_n_now("k", nz(2)).is_none());
    assert_eq!(evalsha_calls(&mut con).await, before);
    assert_eq!(l.check("k").await.unwrap().remaining(), 1, "check_now counted nothing");
    assert!(l.check("k").await.unwrap().is_allowed());
    let refused = l.check("k").await.unwrap();
    assert_eq!((refused.is_allowed(), refused.source()), (false, Source::Store));
    // A key the blocked-key cache knows is answered at once.
    let before = evalsha_calls(&mut con).await;
    let cached = l.check_now("k").unwrap().unwrap();
    assert_eq!((cached.is_allowed(), cached.source()), (false, Source::BlockedCache));
    assert_eq!(cached.retry_after(), refused.retry_after());
    assert_eq!(evalsha_calls(&mut con).await, before);
    assert!(l.check_now("").unwrap().is_err(), "an empty key is an error at once");
    // Once the refusal ends, Redis must be asked again.
    clock.advance(refused.retry_after().unwrap());
    assert!(l.check_now("k").is_none());
}

#[tokio::test]
async fn script_reloads_after_flush_and_corrupt_state_is_reset() {
    let redis = require!(brisk_testkit::redis().await);
    let mut con = redis.client().get_multiplexed_async_connection().await.unwrap();
    let prefix = brisk_testkit::unique_name("rl:flush:");
    let l = build(
        &prefix,
        Some(store(&redis).await),
        vec![
            Policy::new("g", Quota::per_hour(nz(3))),
            Policy::new("w", Quota::per_hour(nz(3))).algorithm(Algorithm::SlidingWindow),
        ],
    );
    assert_eq!(l.check("k").await.unwrap().remaining(), 2);
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut con).await.unwrap();
    assert_eq!(l.check("k").await.unwrap().remaining(), 1);
    // The script's one-policy path reads the state the same way.
    let alone = build(&prefix, Some(store(&redis).await), vec![Policy::new("g", Quota::per_hour(nz(3)))]);
    // Text, and 8-byte values that are not a GCRA time (an integer number of
    // microseconds below 2^52 as a little-endian double): NaN, infinity, negative,
    // fractional, too large, and eight ASCII digits.
    let text =
        ["garbage", "inf", "nan", "1e300", "-5", "99999999999999999999", "1 2", ""].map(|g| g.as_bytes().to_vec());
    let binary = [f64::NAN, f64::INFINITY, -5.0, 0.5, 2f64.powi(53), 1e300].map(|v| v.to_le_bytes().to_vec());
    for garbage in text.into_iter().chain(binary).chain([b"12345678".to_vec()]) {
        let garbage = garbage.as_slice();
        for key in ["g", "w"] {
            let _: () =
                redis::cmd("SET").arg(format!("{prefix}{{k}}:{key}")).arg(garbage).query_async(&mut con).await.unwrap();
        }
        let d = l.check("k").await.unwrap();
        assert!(d.is_allowed(), "{garbage:?}");
        assert_eq!(d.remaining(), 2, "unreadable state {garbage:?} counts as fresh, never an error");
        let _: () = redis::cmd("SET").arg(format!("{prefix}{{k}}:g")).arg(garbage).query_async(&mut con).await.unwrap();
        let d = alone.check("k").await.unwrap();
        assert_eq!((d.is_allowed(), d.remaining()), (true, 2), "one policy, unreadable state {garbage:?}");
    }
}

/// Random request sequences (costs, peeks, refunds) at one instant: the Lua
/// script and the in-memory store give the same answers, for every algorithm.
#[test]
fn lua_agrees_with_memory_on_random_sequences() {
    use proptest::prelude::*;
    let Some((rt, redis)) = runtime_with_redis() else { return };
    let config = ProptestConfig { cases: 48, ..ProptestConfig::default() };
    proptest!(config, |(
        ops in proptest::collection::vec((0u8..3, 1u32..6), 1..25),
        limits in (1u32..12, 1u32..12, 1u32..12),
    )| {
        rt.block_on(async {
            let prefix = brisk_testkit::unique_name("rl:prop:");
            let policies = common::one_of_each_algorithm(limits);
            // All three together, and the GCRA policy alone (the script's one-policy path).
            let single = vec![policies[0].clone()];
            let pairs = [
                (build(&prefix, Some(store(&redis).await), policies.clone()), build(&prefix, None, policies)),
                (build(&format!("{prefix}1:"), Some(store(&redis).await), single.clone()), build(&prefix, None, single)),
            ];
            for (on_redis, in_memory) in &pairs {
                for &(op, cost) in &ops {
                    let (a, b) = match op {
                        0 => (on_redis.check_n("k", nz(cost)).await, in_memory.check_n("k", nz(cost)).await),
                        1 => (on_redis.peek("k", nz(cost)).await, in_memory.peek("k", nz(cost)).await),
                        _ => (on_redis.refund("k", nz(cost)).await, in_memory.refund("k", nz(cost)).await),
                    };
                    let (a, b) = (a.unwrap(), b.unwrap());
                    prop_assert_eq!(a.is_allowed(), b.is_allowed());
                    prop_assert_eq!(a.policies().len(), b.policies().len());
                    for (x, y) in a.policies().iter().zip(b.policies()) {
                        prop_assert_eq!((x.is_allowed(), x.remaining()), (y.is_allowed(), y.remaining()), "{}", x.name());
                        prop_assert_eq!(x.retry_after().is_some(), y.retry_after().is_some());
                    }
                }
            }
            Ok(())
        })?;
    });
}
