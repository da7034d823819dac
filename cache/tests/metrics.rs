//! The Prometheus metrics, parsed with a real OpenMetrics parser.

#![cfg(feature = "prometheus")]

use std::time::Duration;

use brisk_cache::TieredCache;
use prometheus_client::registry::Registry;

#[tokio::test]
async fn metrics_parse_as_openmetrics_and_follow_the_cache() {
    let cache = TieredCache::builder().build().unwrap();
    let mut registry = Registry::default();
    cache.register(&mut registry);
    cache.set("k", &1u8, Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get::<u8>("k").await, Some(1));
    assert_eq!(cache.get::<u8>("missing").await, None);
    cache.run_pending_tasks().await;

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let exposition = openmetrics_parser::openmetrics::parse_openmetrics(&text).expect("valid OpenMetrics");
    for family in [
        "brisk_cache_requests",
        "brisk_cache_loads",
        "brisk_cache_l2_errors",
        "brisk_cache_bus_flushes",
        "brisk_cache_entries",
        "brisk_cache_size_bytes",
        "brisk_cache_breaker_state",
    ] {
        assert!(exposition.families.contains_key(family), "{family} missing in\n{text}");
    }
    assert!(text.contains("brisk_cache_requests_total{tier=\"l1\",result=\"hit\"} 1"), "{text}");
    assert!(text.contains("brisk_cache_requests_total{tier=\"l1\",result=\"miss\"} 1"), "{text}");
    assert!(text.contains("brisk_cache_entries 1"), "{text}");
    assert!(text.contains("brisk_cache_breaker_state{state=\"closed\"} 1"), "{text}");
    drop(cache);
    let mut after = String::new();
    prometheus_client::encoding::text::encode(&mut after, &registry).unwrap();
    assert!(!after.contains("brisk_cache_entries"), "a dropped cache is not kept alive by the registry");
}
