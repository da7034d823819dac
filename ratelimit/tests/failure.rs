//! Redis stopped in the middle of a test: each store-failure mode behaves as
//! documented, the breaker stops calling Redis, and the limiter returns to
//! Redis on its own when Redis is back.

use std::num::NonZeroU32;
use std::time::Duration;

use brisk_ratelimit::clock::FakeClock;
use brisk_ratelimit::store::RedisStore;
use brisk_ratelimit::{Algorithm, Decision, ErrorKind, OnStoreError, Policy, Quota, RateLimiter, Source};
use brisk_testkit::require;
use prometheus_client::registry::Registry;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

const COOLDOWN: Duration = Duration::from_secs(5);

async fn limiter(redis: &brisk_testkit::Redis, clock: &FakeClock, policies: Vec<Policy>) -> RateLimiter {
    let store = RedisStore::builder().timeout(Duration::from_millis(500)).connect(redis.client()).await.unwrap();
    let mut b = RateLimiter::builder(brisk_testkit::unique_name("rl:fail:"))
        .store(store)
        .clock(clock.clone())
        .instances(nz(2))
        .circuit_breaker(nz(1), COOLDOWN);
    for p in policies {
        b = b.policy(p);
    }
    b.build().unwrap()
}

/// Probes until the limiter is back on Redis: the connection may need a
/// probe or two to reconnect. Each probe waits one cooldown on the fake clock.
async fn until_back_on_redis(l: &RateLimiter, clock: &FakeClock, key: &str) -> Decision {
    for _ in 0..50 {
        clock.advance(COOLDOWN);
        if let Ok(d) = l.check(key).await
            && d.source() == Source::Store
        {
            assert!(!l.is_degraded());
            return d;
        }
    }
    panic!("the limiter did not return to Redis");
}

#[tokio::test]
async fn local_mode_divides_the_quota_and_recovers() {
    let mut redis = require!(brisk_testkit::redis().await);
    let clock = FakeClock::new();
    let l = limiter(&redis, &clock, vec![Policy::new("api", Quota::per_hour(nz(10)))]).await;
    let mut registry = Registry::default();
    l.register(&mut registry);

    assert_eq!(l.check("k").await.unwrap().source(), Source::Store);
    redis.kill().unwrap();
    // 10 per hour over 2 instances: 5 here.
    for remaining in (0..5).rev() {
        let d = l.check("k").await.unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.source(), Source::Local);
        assert_eq!(d.remaining(), remaining);
        assert_eq!(d.policies()[0].quota().limit().get(), 5);
    }
    let d = l.check("k").await.unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.source(), Source::Local);
    assert!(l.is_degraded());

    redis.start().await.unwrap();
    let d = until_back_on_redis(&l, &clock, "k").await;
    assert!(d.is_allowed(), "Redis lost its data when it restarted");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    openmetrics_parser::openmetrics::parse_openmetrics(&text).unwrap();
    assert!(text.contains("ratelimit_mode_changes_total{limiter=\""), "{text}");
    for needle in ["mode=\"fallback\"} 1", "mode=\"store\"} 1", "ratelimit_fallback_active{"] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    assert!(text.contains("ratelimit_store_errors_total{"), "{text}");
    assert!(text.contains("policy=\"api\",outcome=\"denied\",source=\"local\"} 1"), "{text}");
}

/// The local fallback decides by GCRA on the divided quota, and its
/// decisions say so, next to a fail-open policy's, each under its own name.
#[tokio::test]
async fn local_decisions_name_their_policy_its_divided_quota_and_gcra() {
    let mut redis = require!(brisk_testkit::redis().await);
    let clock = FakeClock::new();
    let window = Policy::new("window", Quota::per_minute(nz(8))).algorithm(Algorithm::SlidingWindow);
    let open = Policy::new("open", Quota::per_hour(nz(100))).on_store_error(OnStoreError::FailOpen);
    let l = limiter(&redis, &clock, vec![window, open]).await;
    let d = l.check("k").await.unwrap();
    let describe = |d: &Decision| -> Vec<(String, u32, Algorithm, Source)> {
        d.policies().iter().map(|p| (p.name().to_owned(), p.quota().limit().get(), p.algorithm(), p.source())).collect()
    };
    assert_eq!(
        describe(&d),
        [
            ("window".to_owned(), 8, Algorithm::SlidingWindow, Source::Store),
            ("open".to_owned(), 100, Algorithm::Gcra, Source::Store)
        ]
    );
    redis.kill().unwrap();
    let d = l.check("k").await.unwrap();
    assert_eq!(
        describe(&d),
        [
            ("window".to_owned(), 4, Algorithm::Gcra, Source::Local),
            ("open".to_owned(), 100, Algorithm::Gcra, Source::FailOpen)
        ]
    );
    assert_eq!(d.policies()[0].remaining(), 3);
}

#[tokio::test]
async fn fail_closed_refuses_and_recovers() {
    let mut redis = require!(brisk_testkit::redis().await);
    let clock = FakeClock::new();
    let policy = Policy::new("deploy", Quota::per_hour(nz(10))).on_store_error(OnStoreError::FailClosed);
    let l = limiter(&redis, &clock, vec![policy]).await;
    assert!(l.check("u").await.unwrap().is_allowed());
    redis.kill().unwrap();
    let err = l.check("u").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(std::error::Error::source(&err).is_some(), "the Redis error is the source");
    // Breaker open: refused without calling Redis.
    let err = l.check("u").await.unwrap_err();
    assert!(err.is_unavailable());
    assert!(std::error::Error::source(&err).is_none());
    redis.start().await.unwrap();
    until_back_on_redis(&l, &clock, "u").await;
}

#[tokio::test]
async fn fail_open_admits_and_mixed_policies_each_follow_their_mode() {
    let mut redis = require!(brisk_testkit::redis().await);
    let clock = FakeClock::new();
    let l = limiter(
        &redis,
        &clock,
        vec![
            Policy::new("open", Quota::per_hour(nz(1))).on_store_error(OnStoreError::FailOpen),
            Policy::new("local", Quota::per_hour(nz(6))),
        ],
    )
    .await;
    assert!(l.check("k").await.unwrap().is_allowed());
    redis.kill().unwrap();
    for _ in 0..3 {
        let d = l.check("k").await.unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.policies()[0].source(), Source::FailOpen);
        assert_eq!(d.policies()[1].source(), Source::Local);
    }
    let d = l.check("k").await.unwrap();
    assert_eq!(d.violated().map(|p| p.name()).collect::<Vec<_>>(), ["local"]);
    redis.start().await.unwrap();
    until_back_on_redis(&l, &clock, "k").await;
}

#[tokio::test]
async fn a_hung_redis_times_out_into_the_fallback() {
    let mut redis = require!(brisk_testkit::redis().await);
    let clock = FakeClock::new();
    let l = limiter(&redis, &clock, vec![Policy::new("api", Quota::per_hour(nz(10)))]).await;
    assert_eq!(l.check("k").await.unwrap().source(), Source::Store);
    redis.freeze().unwrap();
    let started = std::time::Instant::now();
    let d = l.check("k").await.unwrap();
    assert_eq!(d.source(), Source::Local);
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by the 500 ms timeout");
    // Open breaker: no waiting at all now.
    assert_eq!(l.check("k").await.unwrap().source(), Source::Local);
    redis.thaw().unwrap();
    until_back_on_redis(&l, &clock, "k").await;
}
