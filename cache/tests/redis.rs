//! The integration suite on a single real Redis, plus the failure tests
//! that need to stop the server.

#![cfg(feature = "redis")]

mod suite;

use std::time::{Duration, Instant};

use brisk_cache::{BreakerState, Tier, TieredCache};
use brisk_testkit::require;
use suite::{Backend, MIN};

async fn backend() -> Option<(brisk_testkit::Redis, Backend)> {
    let redis = brisk_testkit::redis().await;
    let redis = match redis {
        Ok(r) => r,
        Err(e) => {
            brisk_testkit::skip_or_fail(&e);
            return None;
        }
    };
    let b = Backend::Single(redis.url().to_owned());
    Some((redis, b))
}

macro_rules! suite_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((_redis, b)) = backend().await else { return };
            suite::$name(&b).await;
        }
    };
}

suite_test!(l2_hit_fills_l1_and_costs_one_command);
suite_test!(garbage_in_l2_is_a_miss_deleted_and_counted);
suite_test!(lease_runs_the_loader_once_across_four_caches);
suite_test!(a_fill_in_flight_during_a_remote_invalidation_is_fenced);
suite_test!(invalidations_reach_the_other_l1_within_100ms);
suite_test!(losing_the_bus_flushes_l1);
suite_test!(pattern_invalidation_is_o1_and_cleanup_removes_only_matches);
suite_test!(clear_empties_every_instance);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_never_fails_a_call_and_recovers() {
    let mut redis = require!(brisk_testkit::redis().await);
    let timeout = Duration::from_millis(200);
    let prefix = brisk_testkit::unique_name("bc");
    let cache = TieredCache::builder()
        .prefix(prefix.clone())
        .redis_url(redis.url())
        .unwrap()
        .redis_timeout(timeout)
        .circuit_breaker(3, Duration::from_millis(300))
        .build()
        .unwrap();
    suite::ready(&cache).await;
    cache.set("k", &1u32, MIN).await.unwrap();
    if redis.kill().is_err() {
        // Not a local server (REDIS_URL or a container): nothing to stop.
        return;
    }
    suite::eventually(&cache, Duration::from_secs(5), |s| s.bus_flushes >= 1).await;
    // Every call returns, from the loader, within the Redis timeout per call.
    for i in 0..10u32 {
        let start = Instant::now();
        let v = cache.get_or_load(&format!("k{i}"), MIN, move || async move { Ok::<_, std::io::Error>(i) }).await;
        assert_eq!(v.unwrap(), i);
        assert!(start.elapsed() < 3 * timeout, "call {i} took {:?}", start.elapsed());
        assert_eq!(cache.get::<u32>("k").await, None, "no L2, and L1 is not trusted without the bus");
    }
    let s = cache.stats();
    assert_eq!(s.breaker, BreakerState::Open, "{s:?}");
    assert!(s.l2_rejected > 0, "calls skipped while open: {s:?}");
    assert!(s.bus_flushes >= 1);
    assert!(cache.set("x", &1u8, MIN).await.is_ok(), "a write is never an error for a Redis fault");
    assert!(cache.invalidate_tag("t").await.is_err(), "an invalidation says it did not reach Redis");

    redis.start().await.unwrap();
    // The bus reconnects, a probe closes the breaker, and L2 is used again.
    suite::ready(&cache).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cache.set("back", &7u32, MIN).await.unwrap();
        if cache.stats().breaker == BreakerState::Closed {
            break;
        }
        assert!(Instant::now() < deadline, "breaker never closed: {:?}", cache.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = TieredCache::builder().prefix(prefix).redis_url(redis.url()).unwrap().build().unwrap();
    suite::ready(&other).await;
    let hit = other.get_bytes("back").await.expect("written to L2 after recovery");
    assert_eq!(hit.tier(), Tier::L2);
}
