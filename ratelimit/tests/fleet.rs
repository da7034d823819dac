//! A fleet of limiter instances on one key: exactly the quota is admitted in
//! total, on a single Redis and on Redis Cluster.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use brisk_ratelimit::store::RedisStore;
use brisk_ratelimit::{Algorithm, Policy, Quota, RateLimiter};
use brisk_testkit::require;

const INSTANCES: usize = 4;
const CLIENTS: usize = 200;
const QUOTA: u32 = 50;

fn policy(algorithm: Algorithm) -> Policy {
    Policy::new("fleet", Quota::per_hour(NonZeroU32::new(QUOTA).unwrap())).algorithm(algorithm)
}

/// 200 clients spread over the instances, all released at once on one key.
async fn allowed_in_total(limiters: Vec<RateLimiter>) -> usize {
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let limiter = limiters[i % limiters.len()].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                limiter.check("one-key").await.unwrap().is_allowed()
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    allowed
}

fn limiter(prefix: &str, algorithm: Algorithm, store: RedisStore) -> RateLimiter {
    RateLimiter::builder(prefix)
        .policy(policy(algorithm))
        .store(store)
        .instances(NonZeroU32::new(INSTANCES as u32).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_on_single_redis_admits_exactly_the_quota() {
    let redis = require!(brisk_testkit::redis().await);
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingWindow, Algorithm::FixedWindow] {
        let prefix = brisk_testkit::unique_name("rl:fleet:");
        let mut limiters = Vec::new();
        for _ in 0..INSTANCES {
            let store = RedisStore::builder().timeout(Duration::from_secs(5)).connect(redis.client()).await.unwrap();
            limiters.push(limiter(&prefix, algorithm, store));
        }
        assert_eq!(allowed_in_total(limiters).await, QUOTA as usize, "{algorithm:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_on_redis_cluster_admits_exactly_the_quota() {
    let cluster = require!(brisk_testkit::redis_cluster().await);
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingWindow, Algorithm::FixedWindow] {
        let prefix = brisk_testkit::unique_name("rl:cfleet:");
        let mut limiters = Vec::new();
        for _ in 0..INSTANCES {
            let store =
                RedisStore::builder().timeout(Duration::from_secs(5)).connect_cluster(cluster.client()).await.unwrap();
            limiters.push(limiter(&prefix, algorithm, store));
        }
        assert_eq!(allowed_in_total(limiters).await, QUOTA as usize, "{algorithm:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_on_cluster_share_one_slot() {
    let cluster = require!(brisk_testkit::redis_cluster().await);
    let store = RedisStore::builder().timeout(Duration::from_secs(5)).connect_cluster(cluster.client()).await.unwrap();
    let limiter = RateLimiter::builder(brisk_testkit::unique_name("rl:slot:"))
        .policy(Policy::new("minute", Quota::per_minute(NonZeroU32::new(3).unwrap())))
        .policy(Policy::new("day", Quota::per_day(NonZeroU32::new(5).unwrap())).algorithm(Algorithm::FixedWindow))
        .store(store)
        .build()
        .unwrap();
    // Many keys, so they land on every node; each decision's two keys must share a slot (no CROSSSLOT).
    for i in 0..30 {
        let key = format!("user-{i}");
        for expected in [2, 1, 0] {
            let d = limiter.check(&key).await.unwrap();
            assert!(d.is_allowed());
            assert_eq!(d.remaining(), expected);
        }
        let d = limiter.check(&key).await.unwrap();
        assert_eq!(d.violated().map(|p| p.name()).collect::<Vec<_>>(), ["minute"]);
        assert_eq!(d.policies()[1].remaining(), 2);
    }
}
