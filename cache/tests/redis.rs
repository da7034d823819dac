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
suite_test!(a_set_replaces_the_value_in_every_l1);
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
        assert!(start.elapsed() < 4 * timeout, "call {i} took {:?}", start.elapsed());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_at_most_the_timeout_per_call() {
    let mut redis = require!(brisk_testkit::redis().await);
    let timeout = Duration::from_millis(150);
    let cache = TieredCache::builder()
        .prefix(brisk_testkit::unique_name("bc"))
        .redis_url(redis.url())
        .unwrap()
        .redis_timeout(timeout)
        .circuit_breaker(2, Duration::from_secs(60))
        .build()
        .unwrap();
    suite::ready(&cache).await;
    if redis.freeze().is_err() {
        return;
    }
    let mut slowest = Duration::ZERO;
    for i in 0..6u32 {
        let start = Instant::now();
        let v = cache.get_or_load(&format!("k{i}"), MIN, move || async move { Ok::<_, std::io::Error>(i) }).await;
        assert_eq!(v.unwrap(), i);
        slowest = slowest.max(start.elapsed());
    }
    let s = cache.stats();
    redis.thaw().unwrap();
    // A miss makes at most two Redis calls before the loader (GET, then the
    // generations), each bounded by the timeout; then the breaker is open.
    // One more timeout's worth of slack for a loaded machine.
    assert!(slowest < 4 * timeout, "slowest call {slowest:?}");
    assert!(s.l2_timeouts >= 2, "{s:?}");
    assert_eq!(s.breaker, BreakerState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_a_senders_sequence_flushes_l1() {
    let Some((_redis, b)) = backend().await else { return };
    let Backend::Single(url) = &b else { unreachable!() };
    let prefix = brisk_testkit::unique_name("bc");
    let cache = b.cache(&prefix).await;
    cache.set("k", &1u8, MIN).await.unwrap();
    assert_eq!(cache.get_bytes("k").await.unwrap().tier(), Tier::L1);
    let mut raw = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    // Bus wire format v1: version, then postcard (origin, seq, Event::Key("x")).
    let message = |seq: u8| vec![1u8, 77, seq, 0, 1, b'x'];
    let channel = format!("{prefix}:bus");
    for seq in [1u8, 2] {
        let _: u64 = redis::cmd("PUBLISH").arg(&channel).arg(message(seq)).query_async(&mut raw).await.unwrap();
    }
    suite::eventually(&cache, Duration::from_secs(2), |s| s.bus_messages == 2).await;
    assert_eq!(cache.stats().bus_flushes, 0, "1, 2: no gap");
    assert_eq!(cache.get_bytes("k").await.unwrap().tier(), Tier::L1);
    let _: u64 = redis::cmd("PUBLISH").arg(&channel).arg(message(4)).query_async(&mut raw).await.unwrap();
    suite::eventually(&cache, Duration::from_secs(2), |s| s.bus_flushes == 1).await;
    cache.run_pending_tasks().await;
    assert_eq!(cache.stats().entries, 0, "3 was missed: L1 flushed");
}

/// Whatever bytes another writer leaves under a key, a read is a miss and
/// never a panic.
#[test]
fn arbitrary_bytes_in_l2_are_misses() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some((_redis, b)) = rt.block_on(backend()) else { return };
    let prefix = brisk_testkit::unique_name("bc");
    // Every case must reach the decoder (the count below): a patient timeout,
    // so a busy machine cannot turn a read into a timed-out miss instead.
    let (cache, raw) = rt.block_on(async {
        let cache = b.builder(&prefix).redis_timeout(Duration::from_secs(5)).build().unwrap();
        suite::ready(&cache).await;
        (cache, tokio::sync::Mutex::new(b.raw().await))
    });
    let mut runner = TestRunner::new(Config { cases: 128, ..Config::default() });
    let strategy = proptest::collection::vec(any::<u8>(), 0..300).prop_map(|mut v| {
        // Half of the cases start like an envelope, to reach the header decoder.
        if v.len() > 3 && v[0] % 2 == 0 {
            v[0] = 0xB7;
            v[1] = 0xCA;
            v[2] = 1;
        }
        v
    });
    // Bytes that happen to decode as an envelope (a valid header, fields
    // that fit) are a miss by their stamps or expiry, not corrupt ones.
    let undecodable = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&strategy, |bytes| {
            if brisk_cache::envelope::Envelope::decode(bytes::Bytes::from(bytes.clone())).is_err() {
                undecodable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            rt.block_on(async {
                raw.lock().await.set(&format!("{prefix}:k"), &bytes).await;
                assert_eq!(cache.get_bytes("k").await, None);
                assert_eq!(cache.get::<u64>("k").await, None);
            });
            Ok(())
        })
        .unwrap();
    let undecodable = undecodable.into_inner();
    assert!(undecodable >= 64, "most cases are not envelopes: {undecodable} of 128");
    let stats = cache.stats();
    assert!(
        stats.corrupt >= undecodable,
        "every undecodable value was found corrupt: {} of {undecodable}; {stats:?}",
        stats.corrupt
    );
}
