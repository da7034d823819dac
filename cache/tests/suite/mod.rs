//! The integration suite, run against a single Redis (`tests/redis.rs`) and
//! a Redis Cluster (`tests/cluster.rs`).

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brisk_cache::{CacheStats, EntryOptions, Tier, TieredCache, TieredCacheBuilder};
use redis::AsyncCommands;
use tokio::sync::oneshot;

pub const MIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub enum Backend {
    Single(String),
    Cluster(Vec<String>),
}

/// A plain connection for looking at Redis behind the cache's back.
pub enum Raw {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    pub async fn set(&mut self, key: &str, value: &[u8]) {
        let _: () = match self {
            Raw::Single(c) => c.set(key, value).await.unwrap(),
            Raw::Cluster(c) => c.set(key, value).await.unwrap(),
        };
    }

    pub async fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        match self {
            Raw::Single(c) => c.get(key).await.unwrap(),
            Raw::Cluster(c) => c.get(key).await.unwrap(),
        }
    }

    pub async fn exists(&mut self, key: &str) -> bool {
        match self {
            Raw::Single(c) => c.exists(key).await.unwrap(),
            Raw::Cluster(c) => c.exists(key).await.unwrap(),
        }
    }
}

impl Backend {
    pub fn builder(&self, prefix: &str) -> TieredCacheBuilder {
        let b = TieredCache::builder().prefix(prefix).jitter(0.0).redis_timeout(Duration::from_millis(500));
        match self {
            Backend::Single(url) => b.redis_url(url).unwrap(),
            Backend::Cluster(urls) => b.redis_cluster(urls.clone()),
        }
    }

    pub async fn cache(&self, prefix: &str) -> TieredCache {
        let cache = self.builder(prefix).build().unwrap();
        ready(&cache).await;
        cache
    }

    pub async fn raw(&self) -> Raw {
        match self {
            Backend::Single(url) => Raw::Single(
                redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap(),
            ),
            Backend::Cluster(urls) => Raw::Cluster(
                redis::cluster::ClusterClient::new(urls.clone()).unwrap().get_async_connection().await.unwrap(),
            ),
        }
    }

    /// One connection per node (every node for a cluster).
    pub async fn nodes(&self) -> Vec<redis::aio::MultiplexedConnection> {
        let urls = match self {
            Backend::Single(url) => vec![url.clone()],
            Backend::Cluster(urls) => urls.clone(),
        };
        let mut out = Vec::new();
        for url in urls {
            out.push(redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap());
        }
        out
    }

    /// Commands Redis has run, summed over nodes, without `INFO` itself.
    pub async fn commands(&self) -> u64 {
        let mut total = 0;
        for mut node in self.nodes().await {
            let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut node).await.unwrap();
            for line in info.lines() {
                // INFO and CONFIG RESETSTAT are the test's own; PING is the
                // bus subscribers' keep-alive.
                if line.starts_with("cmdstat_info:")
                    || line.starts_with("cmdstat_config|")
                    || line.starts_with("cmdstat_ping:")
                {
                    continue;
                }
                if let Some(calls) = line.split("calls=").nth(1).and_then(|r| r.split(',').next()) {
                    total += calls.parse::<u64>().unwrap();
                }
            }
        }
        total
    }

    pub async fn reset_stats(&self) {
        for mut node in self.nodes().await {
            let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut node).await.unwrap();
        }
    }
}

pub async fn ready(cache: &TieredCache) {
    tokio::time::timeout(Duration::from_secs(10), cache.wait_until_ready())
        .await
        .expect("the invalidation bus subscribes");
}

/// Waits (polling) until `cond` holds on the cache's stats, up to `within`.
pub async fn eventually(cache: &TieredCache, within: Duration, cond: impl Fn(&CacheStats) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond(&cache.stats()) {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {:?}", cache.stats());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn prefix() -> String {
    brisk_testkit::unique_name("bc")
}

pub async fn l2_hit_fills_l1_and_costs_one_command(b: &Backend) {
    let p = prefix();
    let (a, c) = (b.cache(&p).await, b.cache(&p).await);
    a.set("first", &1u32, MIN).await.unwrap();
    a.set("second", &2u32, MIN).await.unwrap();
    // The first read may also read the generations (nothing known yet).
    assert_eq!(c.get_bytes("first").await.map(|h| h.tier()), Some(Tier::L2));
    b.reset_stats().await;
    let hit = c.get_bytes("second").await.unwrap();
    assert_eq!(hit.tier(), Tier::L2);
    assert_eq!(b.commands().await, 1, "an L2 hit is one GET");
    assert_eq!(c.get_bytes("second").await.unwrap().tier(), Tier::L1, "the L2 hit filled L1");
    assert_eq!(b.commands().await, 1, "an L1 hit sends nothing");
    assert_eq!(c.get::<u32>("second").await, Some(2));
}

pub async fn garbage_in_l2_is_a_miss_deleted_and_counted(b: &Backend) {
    let p = prefix();
    let cache = b.cache(&p).await;
    let mut raw = b.raw().await;
    for (i, garbage) in
        [&b"not an envelope"[..], &[0xB7, 0xCA, 1, 0xff, 0xff][..], &[0xB7, 0xCA, 9][..], b""].into_iter().enumerate()
    {
        let key = format!("g{i}");
        raw.set(&format!("{p}:{key}"), garbage).await;
        assert_eq!(cache.get::<u32>(&key).await, None);
        assert!(!raw.exists(&format!("{p}:{key}")).await, "garbage is deleted");
    }
    assert_eq!(cache.stats().corrupt, 4);
    // A valid envelope holding the wrong type is a miss too, and get_or_load reloads.
    cache.set("typed", &"text", MIN).await.unwrap();
    let v = cache.get_or_load("typed", MIN, || async { Ok::<_, std::io::Error>(5u64) }).await.unwrap();
    assert_eq!(v, 5);
    assert_eq!(cache.get::<u64>("typed").await, Some(5));
}

pub async fn lease_runs_the_loader_once_across_four_caches(b: &Backend) {
    let p = prefix();
    let mut caches = Vec::new();
    for _ in 0..4 {
        // A Redis call that fails or times out lets an instance load without
        // the lease (availability first, as documented): the calls get a
        // timeout no busy machine reaches, so that what is tested here is
        // the lease itself.
        let c = b
            .builder(&p)
            .redis_timeout(Duration::from_secs(5))
            .distributed_lease(Duration::from_secs(5), Duration::from_millis(10))
            .build()
            .unwrap();
        ready(&c).await;
        caches.push(c);
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let cache = caches[i % 4].clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("cold", MIN, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>("loaded".to_owned())
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "loaded");
    }
    let failed: u64 = caches.iter().map(|c| c.stats().l2_errors + c.stats().l2_timeouts).sum();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one loader call across four instances ({failed} Redis calls failed or timed out)"
    );
    let leases: u64 = caches.iter().map(|c| c.stats().lease_acquired).sum();
    assert_eq!(leases, 1);
}

pub async fn a_fill_in_flight_during_a_remote_invalidation_is_fenced(b: &Backend) {
    let p = prefix();
    let (a, other) = (b.cache(&p).await, b.cache(&p).await);
    let (started_tx, started_rx) = oneshot::channel();
    let (open, gate) = oneshot::channel::<()>();
    let loader_cache = a.clone();
    let load = tokio::spawn(async move {
        loader_cache
            .get_or_load_with::<String, std::io::Error, _, _>(
                "bp:1",
                &EntryOptions::new(MIN).tag("blueprints"),
                move || async move {
                    let _ = started_tx.send(());
                    let _ = gate.await;
                    Ok("before the write".to_owned())
                },
            )
            .await
    });
    started_rx.await.unwrap();
    // The write path of another instance: data changed, tag invalidated.
    other.invalidate_tag("blueprints").await.unwrap();
    open.send(()).unwrap();
    assert_eq!(load.await.unwrap().unwrap().into_value(), "before the write");
    assert_eq!(a.stats().fenced, 1, "the fill saw the new generation in Redis");
    assert_eq!(a.get::<String>("bp:1").await, None);
    assert_eq!(other.get::<String>("bp:1").await, None);
    assert!(!b.raw().await.exists(&format!("{p}:bp:1")).await, "nothing written back");
}

pub async fn invalidations_reach_the_other_l1_within_100ms(b: &Backend) {
    let p = prefix();
    let (a, c) = (b.cache(&p).await, b.cache(&p).await);
    let tagged = EntryOptions::new(MIN).tag("projects");
    a.set_with("cache:GET/api/projects", &1u8, &tagged).await.unwrap();
    a.set("cache:GET/api/blueprints?page=1", &2u8, MIN).await.unwrap();
    a.set("plain", &3u8, MIN).await.unwrap();
    for key in ["cache:GET/api/projects", "cache:GET/api/blueprints?page=1", "plain"] {
        c.get_bytes(key).await.unwrap();
        assert_eq!(c.get_bytes(key).await.unwrap().tier(), Tier::L1, "{key} in c's L1");
    }
    let seen = c.stats().bus_messages;
    a.invalidate_tag("projects").await.unwrap();
    let took = eventually(&c, Duration::from_millis(100), |s| s.bus_messages > seen).await;
    assert_eq!(c.get_bytes("cache:GET/api/projects").await, None, "evicted after {took:?}");

    let seen = c.stats().bus_messages;
    a.invalidate_pattern("cache:*/blueprints*").await.unwrap();
    eventually(&c, Duration::from_millis(100), |s| s.bus_messages > seen).await;
    assert_eq!(c.get_bytes("cache:GET/api/blueprints?page=1").await, None);

    let seen = c.stats().bus_messages;
    a.delete("plain").await.unwrap();
    eventually(&c, Duration::from_millis(100), |s| s.bus_messages > seen).await;
    assert_eq!(c.get_bytes("plain").await, None);
    assert_eq!(c.stats().bus_flushes, 0, "no message was missed");
}

pub async fn a_set_replaces_the_value_in_every_l1(b: &Backend) {
    let p = prefix();
    let (a, c) = (b.cache(&p).await, b.cache(&p).await);
    a.set("k", &1u8, MIN).await.unwrap();
    assert_eq!(c.get::<u8>("k").await, Some(1));
    assert_eq!(c.get_bytes("k").await.unwrap().tier(), Tier::L1);
    let seen = c.stats().bus_messages;
    a.set("k", &2u8, MIN).await.unwrap();
    eventually(&c, Duration::from_millis(100), |s| s.bus_messages > seen).await;
    assert_eq!(c.get::<u8>("k").await, Some(2));
}

pub async fn losing_the_bus_flushes_l1(b: &Backend) {
    let p = prefix();
    let cache = b.cache(&p).await;
    cache.set("k", &1u8, MIN).await.unwrap();
    assert_eq!(cache.get_bytes("k").await.unwrap().tier(), Tier::L1);
    for mut node in b.nodes().await {
        let _: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut node).await.unwrap();
    }
    eventually(&cache, Duration::from_secs(5), |s| s.bus_flushes >= 1).await;
    cache.run_pending_tasks().await;
    assert_eq!(cache.stats().entries, 0, "L1 flushed");
    // It reconnects; the value is still in L2.
    ready(&cache).await;
    assert_eq!(cache.get_bytes("k").await.unwrap().tier(), Tier::L2);
}

pub async fn pattern_invalidation_is_o1_and_cleanup_removes_only_matches(b: &Backend) {
    let p = prefix();
    let cache = b.cache(&p).await;
    for i in 0..300 {
        cache.set(&format!("cache:GET/api/blueprints/{i}"), &i, MIN).await.unwrap();
        cache.set(&format!("cache:GET/api/projects/{i}"), &i, MIN).await.unwrap();
    }
    b.reset_stats().await;
    cache.invalidate_pattern("cache:*/blueprints/*").await.unwrap();
    // Written after the invalidation: current, and the clean-up leaves it.
    cache.set("cache:GET/api/blueprints/new", &1000, MIN).await.unwrap();
    // Wait for the background clean-up, then check what it sent and removed.
    eventually(&cache, Duration::from_secs(10), |s| s.cleanup_deleted == 300).await;
    let mut raw = b.raw().await;
    assert!(!raw.exists(&format!("{p}:cache:GET/api/blueprints/7")).await);
    assert!(raw.exists(&format!("{p}:cache:GET/api/projects/7")).await);
    assert_eq!(cache.get::<i32>("cache:GET/api/blueprints/7").await, None);
    assert_eq!(cache.get::<i32>("cache:GET/api/projects/7").await, Some(7));
    assert_eq!(cache.get::<i32>("cache:GET/api/blueprints/new").await, Some(1000));
    assert_eq!(cache.remove_matching("cache:*/projects/1*").await.unwrap(), 111);
}

pub async fn clear_empties_every_instance(b: &Backend) {
    let p = prefix();
    let (a, c) = (b.cache(&p).await, b.cache(&p).await);
    a.set("x", &1u8, MIN).await.unwrap();
    assert!(c.get::<u8>("x").await.is_some());
    let seen = c.stats().bus_messages;
    a.clear().await.unwrap();
    eventually(&c, Duration::from_millis(100), |s| s.bus_messages > seen).await;
    assert_eq!(c.get::<u8>("x").await, None);
    assert_eq!(a.get::<u8>("x").await, None);
    a.set("y", &2u8, MIN).await.unwrap();
    assert_eq!(c.get::<u8>("y").await, Some(2), "writes after the clear are served");
}
