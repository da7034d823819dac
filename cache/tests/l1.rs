//! The cache without Redis: L1, single-flight, stale handling, invalidation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brisk_cache::{EntryOptions, LoadError, Loaded, ManualClock, Tier, TieredCache};
use bytes::Bytes;
use tokio::sync::oneshot;

fn cache_with(clock: Arc<ManualClock>) -> TieredCache {
    TieredCache::builder().jitter(0.0).clock(clock).build().unwrap()
}

const MIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn typed_and_bytes_round_trip_with_metadata() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cache = cache_with(clock.clone());
    cache.set("k", &("a".to_owned(), 7u64), MIN).await.unwrap();
    assert_eq!(cache.get::<(String, u64)>("k").await, Some(("a".to_owned(), 7)));
    clock.advance(Duration::from_secs(5));
    let hit = cache.get_bytes("k").await.unwrap();
    assert_eq!(hit.tier(), Tier::L1);
    assert_eq!(hit.age(), Duration::from_secs(5));
    assert_eq!(hit.ttl_remaining(), Duration::from_secs(55));
    assert!(!hit.is_stale());
    // A value of another type is a miss, deleted and counted.
    assert_eq!(cache.get::<Vec<String>>("k").await, None);
    assert_eq!(cache.get_bytes("k").await, None);
    let s = cache.stats();
    assert_eq!(s.corrupt, 1);
    assert_eq!((s.l1_hits, s.l1_misses), (3, 1));
}

#[tokio::test]
async fn entries_expire_by_the_cache_clock() {
    let clock = Arc::new(ManualClock::new(0));
    let cache = cache_with(clock.clone());
    cache.set("k", &1u8, Duration::from_secs(10)).await.unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(cache.get::<u8>("k").await, Some(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get::<u8>("k").await, None);
}

#[tokio::test]
async fn jitter_shortens_ttls_within_the_fraction() {
    let clock = Arc::new(ManualClock::new(0));
    let cache = TieredCache::builder().jitter(0.5).clock(clock).build().unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..50 {
        let key = format!("k{i}");
        cache.set(&key, &1u8, Duration::from_secs(100)).await.unwrap();
        let ttl = cache.get_bytes(&key).await.unwrap().ttl_remaining();
        assert!(ttl <= Duration::from_secs(100) && ttl >= Duration::from_secs(50), "{ttl:?}");
        seen.insert(ttl);
    }
    assert!(seen.len() > 10, "TTLs are spread: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_run_the_loader_once() {
    let cache = TieredCache::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate) = oneshot::channel::<()>();
    let gate = Arc::new(tokio::sync::Mutex::new(Some(gate)));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("cold", MIN, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if let Some(g) = gate.lock().await.take() {
                        let _ = g.await;
                    }
                    Ok::<_, std::io::Error>(42u32)
                })
                .await
        }));
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    open.send(()).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().loads, 1);
}

#[tokio::test]
async fn a_loader_error_is_shared_and_not_cached() {
    let cache = TieredCache::builder().build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate) = oneshot::channel::<()>();
    let gate = Arc::new(tokio::sync::Mutex::new(Some(gate)));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load::<u32, _, _, _>("k", MIN, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if let Some(g) = gate.lock().await.take() {
                        let _ = g.await;
                    }
                    Err(std::io::Error::other("db down"))
                })
                .await
        }));
    }
    tokio::task::yield_now().await;
    open.send(()).unwrap();
    for t in tasks {
        match t.await.unwrap() {
            Err(LoadError::Loader(e)) => assert_eq!(e.to_string(), "db down"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get::<u32>("k").await, None);
    assert_eq!(cache.stats().load_errors, 1);
}

#[tokio::test]
async fn stale_is_served_when_the_loader_fails_within_the_grace() {
    let clock = Arc::new(ManualClock::new(0));
    let cache = TieredCache::builder().jitter(0.0).clock(clock.clone()).stale_grace(MIN).build().unwrap();
    cache.set("k", &1u32, Duration::from_secs(10)).await.unwrap();
    clock.advance(Duration::from_secs(30));
    let hit = cache
        .get_or_load_with::<u32, _, _, _>("k", &EntryOptions::new(MIN), || async {
            Err(std::io::Error::other("db down"))
        })
        .await
        .unwrap();
    assert_eq!((*hit.value(), hit.is_stale(), hit.tier()), (1, true, Tier::L1));
    assert_eq!(hit.age(), Duration::from_secs(30));
    assert_eq!(cache.stats().stale_served, 1);
    // A plain get never serves stale.
    assert_eq!(cache.get::<u32>("k").await, None);
    // Past the grace: the error.
    clock.advance(Duration::from_secs(41));
    let r = cache.get_or_load::<u32, _, _, _>("k", MIN, || async { Err(std::io::Error::other("db down")) }).await;
    assert!(matches!(r, Err(LoadError::Loader(_))));
}

#[tokio::test(start_paused = true)]
async fn a_slow_loader_serves_stale_after_the_soft_timeout_and_fills_later() {
    let clock = Arc::new(ManualClock::new(0));
    let cache = TieredCache::builder()
        .jitter(0.0)
        .clock(clock.clone())
        .stale_grace(MIN)
        .soft_timeout(Duration::from_millis(100))
        .hard_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    cache.set("k", &1u32, Duration::from_secs(10)).await.unwrap();
    clock.advance(Duration::from_secs(11));
    let (done_tx, done_rx) = oneshot::channel();
    let hit = cache
        .get_or_load_with::<u32, std::io::Error, _, _>("k", &EntryOptions::new(MIN), move || async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = done_tx.send(());
            Ok(2)
        })
        .await
        .unwrap();
    assert_eq!((*hit.value(), hit.is_stale()), (1, true));
    // The load goes on in the background and fills the cache.
    done_rx.await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.get::<u32>("k").await, Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_hard_timeout_bounds_a_load_without_stale() {
    let cache = TieredCache::builder().hard_timeout(Duration::from_secs(2)).build().unwrap();
    let r = cache
        .get_or_load::<u32, std::io::Error, _, _>("k", MIN, || async {
            std::future::pending::<()>().await;
            Ok(1)
        })
        .await;
    assert!(matches!(r, Err(LoadError::Timeout(d)) if d == Duration::from_secs(2)), "{r:?}");
    assert_eq!(cache.stats().load_timeouts, 1);
}

#[tokio::test]
async fn a_fill_in_flight_during_a_tag_invalidation_is_not_written_back() {
    let cache = TieredCache::builder().build().unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let (open, gate) = oneshot::channel::<()>();
    let c = cache.clone();
    let load = tokio::spawn(async move {
        c.get_or_load_with::<String, std::io::Error, _, _>(
            "bp:1",
            &EntryOptions::new(MIN).tag("blueprints"),
            move || async move {
                let _ = started_tx.send(());
                let _ = gate.await;
                Ok("old".to_owned())
            },
        )
        .await
    });
    started_rx.await.unwrap();
    cache.invalidate_tag("blueprints").await.unwrap();
    open.send(()).unwrap();
    // Its caller gets the value it loaded...
    assert_eq!(load.await.unwrap().unwrap().into_value(), "old");
    // ...but it is not served afterwards.
    assert_eq!(cache.get::<String>("bp:1").await, None);
    assert_eq!(cache.stats().fenced, 1);
}

#[tokio::test]
async fn a_delete_during_a_load_fences_it_too() {
    let cache = TieredCache::builder().build().unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let (open, gate) = oneshot::channel::<()>();
    let c = cache.clone();
    let load = tokio::spawn(async move {
        c.get_or_load::<u8, std::io::Error, _, _>("k", MIN, move || async move {
            let _ = started_tx.send(());
            let _ = gate.await;
            Ok(1)
        })
        .await
    });
    started_rx.await.unwrap();
    cache.delete("k").await.unwrap();
    open.send(()).unwrap();
    load.await.unwrap().unwrap();
    assert_eq!(cache.get::<u8>("k").await, None);
}

#[tokio::test]
async fn tags_patterns_and_clear_invalidate_what_they_name() {
    let cache = TieredCache::builder().build().unwrap();
    let bp = EntryOptions::new(MIN).tag("blueprints");
    cache.set_with("cache:GET/api/blueprints", &1u8, &bp).await.unwrap();
    cache.set_with("cache:GET/api/blueprints?page=2", &2u8, &EntryOptions::new(MIN)).await.unwrap();
    cache.set("cache:GET/api/projects", &3u8, MIN).await.unwrap();
    cache.invalidate_tag("blueprints").await.unwrap();
    assert_eq!(cache.get::<u8>("cache:GET/api/blueprints").await, None);
    assert_eq!(cache.get::<u8>("cache:GET/api/blueprints?page=2").await, Some(2));
    cache.invalidate_pattern("cache:*/blueprints*").await.unwrap();
    assert_eq!(cache.get::<u8>("cache:GET/api/blueprints?page=2").await, None);
    assert_eq!(cache.get::<u8>("cache:GET/api/projects").await, Some(3));
    // Written after the invalidation: served.
    cache.set("cache:GET/api/blueprints?page=3", &4u8, MIN).await.unwrap();
    assert_eq!(cache.get::<u8>("cache:GET/api/blueprints?page=3").await, Some(4));
    cache.clear().await.unwrap();
    assert_eq!(cache.get::<u8>("cache:GET/api/projects").await, None);
    assert!(cache.invalidate_pattern("").await.is_err());
}

#[tokio::test]
async fn l1_is_bounded_by_bytes_and_big_values_stay_out() {
    let cache = TieredCache::builder()
        .l1_max_bytes(64 * 1024)
        .l1_max_entry_bytes(8 * 1024)
        .max_entry_bytes(16 * 1024)
        .build()
        .unwrap();
    for i in 0..200 {
        cache.set_bytes(&format!("k{i}"), Bytes::from(vec![0u8; 1024]), &EntryOptions::new(MIN)).await;
    }
    cache.run_pending_tasks().await;
    let s = cache.stats();
    assert!(s.bytes <= 64 * 1024, "{} bytes", s.bytes);
    assert!(s.entries < 200 && s.evictions > 0, "{s:?}");
    cache.set_bytes("big", Bytes::from(vec![0u8; 10 * 1024]), &EntryOptions::new(MIN)).await;
    assert_eq!(cache.get_bytes("big").await, None, "over the L1 entry cap, no L2: not kept");
    cache.set_bytes("huge", Bytes::from(vec![0u8; 20 * 1024]), &EntryOptions::new(MIN)).await;
    assert_eq!(cache.stats().oversized, 1);
}

#[tokio::test]
async fn early_refresh_reloads_in_the_background_before_expiry() {
    let clock = Arc::new(ManualClock::new(0));
    let cache = TieredCache::builder().jitter(0.0).clock(clock.clone()).early_refresh(0.2).build().unwrap();
    cache.set("k", &1u32, Duration::from_secs(10)).await.unwrap();
    clock.advance(Duration::from_secs(7));
    let never = || async { Ok::<u32, std::io::Error>(99) };
    assert_eq!(cache.get_or_load("k", Duration::from_secs(10), never).await.unwrap(), 1);
    assert_eq!(cache.stats().early_refreshes, 0, "70% of the TTL: not yet");
    clock.advance(Duration::from_secs(1));
    let (done_tx, done_rx) = oneshot::channel();
    let refreshed = move || async move {
        let _ = done_tx.send(());
        Ok::<u32, std::io::Error>(2)
    };
    assert_eq!(cache.get_or_load("k", Duration::from_secs(10), refreshed).await.unwrap(), 1, "served at once");
    done_rx.await.unwrap();
    let mut v = None;
    for _ in 0..100 {
        v = cache.get::<u32>("k").await;
        if v == Some(2) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(v, Some(2));
    assert_eq!(cache.stats().early_refreshes, 1);
}

#[tokio::test]
async fn a_passed_value_is_not_stored_and_waiters_load_their_own() {
    let cache = TieredCache::builder().build().unwrap();
    let hit = cache
        .get_or_load_bytes("k", &EntryOptions::new(MIN), || async {
            Ok::<_, std::io::Error>(Loaded::pass(Bytes::from_static(b"private")))
        })
        .await
        .unwrap();
    assert_eq!(hit.value().as_ref(), b"private");
    assert_eq!(hit.tier(), Tier::Loader);
    assert_eq!(cache.get_bytes("k").await, None);
    let hit = cache
        .get_or_load_bytes("k", &EntryOptions::new(MIN), || async {
            Ok::<_, std::io::Error>(Loaded::cache_for(Bytes::from_static(b"shared"), Duration::from_secs(5)))
        })
        .await
        .unwrap();
    assert!(hit.ttl_remaining() <= Duration::from_secs(5));
    assert_eq!(cache.get_bytes("k").await.unwrap().value().as_ref(), b"shared");
}

#[tokio::test]
async fn invalid_configuration_is_refused() {
    assert!(TieredCache::builder().prefix("").build().is_err());
    assert!(TieredCache::builder().prefix("a{b}").build().is_err());
    assert!(TieredCache::builder().jitter(1.5).build().is_err());
    assert!(TieredCache::builder().early_refresh(0.0).build().is_err());
}
