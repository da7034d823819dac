//! brisk-ratelimit, side by side with its baselines in one run:
//!
//! - `ratelimit/redis_decision`: one decision on Redis with 1 and 2
//!   policies (1 policy also with the store's batching off: alone, a
//!   decision goes out at once either way), and a blocked key (answered
//!   locally). The Redis commands each costs are counted with
//!   `INFO commandstats` and printed before the timings.
//! - `ratelimit/redis_64_callers`: decisions per second with 64 concurrent
//!   callers vs raw `EVALSHA` of a trivial script on the same connection,
//!   with the store's batching (the default: decisions waiting together share
//!   one script call) and without. The commands per decision at 64 callers
//!   are printed too: batched decisions share a round trip, so a decision
//!   costs a fraction of an `EVALSHA`.
//! - `ratelimit/memory_keyed`: the in-memory GCRA vs governor's keyed limiter
//!   on the same workload (1,024 keys, round robin, never refused, each key's
//!   state kept between visits: 1,000 per hour with a burst of 10,000,000, so
//!   a key's state outlives the time between its visits however slow the
//!   machine). `brisk_gcra_now` is `check_now`, synchronous as governor's
//!   `check_key` is; `brisk_gcra` is `check`, the same decision through its
//!   future (polled once). `brisk_gcra_churn`: each key's state has expired
//!   by its next visit (1,000,000 per second) and is forgotten and created
//!   again (governor keeps every key until `retain_recent` is called).
//!   `brisk_gcra_now`, `brisk_gcra` and `governor_keyed` are also timed in
//!   alternating rounds, per call behind a `dyn FnMut` and in loops the
//!   compiler sees whole (printed).
//!
//! Run: `cargo bench -p brisk-benches --bench ratelimit -- --warm-up-time 1 --measurement-time 3`
//! (needs `redis-server` on PATH, or `REDIS_URL`).

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use brisk_ratelimit::store::RedisStore;
use brisk_ratelimit::{Policy, Quota, RateLimiter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::aio::ConnectionManager;

const CALLERS: usize = 64;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn one_policy() -> Vec<Policy> {
    vec![Policy::new("minute", Quota::per_hour(nz(u32::MAX / 2)))]
}

fn two_policies() -> Vec<Policy> {
    vec![Policy::new("minute", Quota::per_hour(nz(u32::MAX / 2))), Policy::new("day", Quota::per_day(nz(u32::MAX / 2)))]
}

fn limiter(prefix: &str, policies: Vec<Policy>, store: RedisStore) -> RateLimiter {
    let mut b = RateLimiter::builder(prefix).store(store);
    for p in policies {
        b = b.policy(p);
    }
    b.build().unwrap()
}

async fn command_calls(con: &mut ConnectionManager) -> BTreeMap<String, u64> {
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

/// Commands Redis ran for `n` decisions of `limiter`, one at a time, per decision.
async fn commands_per_decision(con: &mut ConnectionManager, limiter: &RateLimiter, key: &str, n: u32) -> String {
    let before = command_calls(con).await;
    for _ in 0..n {
        limiter.check(key).await.unwrap();
    }
    per_decision(&before, &command_calls(con).await, n)
}

/// Commands Redis ran for `n` decisions of `limiter` from 64 concurrent callers, per decision.
async fn commands_per_decision_64(con: &mut ConnectionManager, limiter: &RateLimiter, n: u32) -> String {
    let before = command_calls(con).await;
    let limiter = limiter.clone();
    concurrently(u64::from(n), move |caller| {
        let limiter = limiter.clone();
        async move {
            assert!(limiter.check(KEYS[caller]).await.unwrap().is_allowed());
        }
    })
    .await;
    per_decision(&before, &command_calls(con).await, n)
}

fn per_decision(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, n: u32) -> String {
    let parts: Vec<String> = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k}={:.3}", d as f64 / f64::from(n)))
        })
        .collect();
    if parts.is_empty() { "none (zero round trips)".into() } else { parts.join(" ") }
}

fn redis_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Ok(redis) = rt.block_on(brisk_testkit::redis()) else {
        eprintln!("ratelimit benches: no Redis available, skipping the Redis benches");
        return;
    };
    let (mut con, store, unbatched) = rt.block_on(async {
        let con = ConnectionManager::new(redis.client()).await.unwrap();
        let store = RedisStore::builder().timeout(Duration::from_secs(2)).connection_manager(con.clone());
        let unbatched = RedisStore::builder()
            .timeout(Duration::from_secs(2))
            .batch_decisions(false)
            .connection_manager(con.clone());
        (con, store, unbatched)
    });
    let one = limiter("rl:bench1:", one_policy(), store.clone());
    let one_unbatched = limiter("rl:bench1:", one_policy(), unbatched);
    let two = limiter("rl:bench2:", two_policies(), store.clone());
    let blocked = limiter("rl:benchb:", vec![Policy::new("tiny", Quota::per_day(nz(1)))], store.clone());
    rt.block_on(async {
        one.check("warm").await.unwrap();
        blocked.check("abuser").await.unwrap();
        assert!(!blocked.check("abuser").await.unwrap().is_allowed());
        eprintln!("commands per decision, 1 policy:  {}", commands_per_decision(&mut con, &one, "k", 1000).await);
        eprintln!("commands per decision, 2 policies: {}", commands_per_decision(&mut con, &two, "k", 1000).await);
        eprintln!(
            "commands per decision, blocked key: {}",
            commands_per_decision(&mut con, &blocked, "abuser", 1000).await
        );
        eprintln!(
            "commands per decision, 1 policy, 64 concurrent callers, batched (the default; a batch's decisions share \
             one EVALSHA and one round trip): {}",
            commands_per_decision_64(&mut con, &one, 64_000).await
        );
        eprintln!(
            "commands per decision, 1 policy, 64 concurrent callers, unbatched: {}",
            commands_per_decision_64(&mut con, &one_unbatched, 64_000).await
        );
    });

    let mut group = c.benchmark_group("ratelimit/redis_decision");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_policy", |b| b.to_async(&rt).iter(|| async { one.check("k").await.unwrap() }));
    // Alone, a decision goes out at once: batching adds no delay when idle.
    group.bench_function("one_policy_unbatched", |b| {
        b.to_async(&rt).iter(|| async { one_unbatched.check("k").await.unwrap() })
    });
    group.bench_function("two_policies", |b| b.to_async(&rt).iter(|| async { two.check("k").await.unwrap() }));
    group.bench_function("blocked_key", |b| b.to_async(&rt).iter(|| async { blocked.check("abuser").await.unwrap() }));
    group.finish();

    let trivial = Arc::new(redis::Script::new("return 1"));
    let mut group = c.benchmark_group("ratelimit/redis_64_callers");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_evalsha_return_1", |b| {
        b.to_async(&rt).iter_custom(|iters| raw_evalshas(iters, &con, &trivial))
    });
    for (name, limiter) in [("brisk_decision", &one), ("brisk_decision_unbatched", &one_unbatched)] {
        group.bench_function(name, |b| b.to_async(&rt).iter_custom(|iters| decisions(iters, limiter)));
    }
    group.finish();

    // The same side by side in alternating rounds of 64,000 decisions each.
    let rounds = brisk_benches::alternating_rounds(
        20,
        1,
        &mut [
            &mut |_| {
                rt.block_on(decisions(64_000, &one));
            },
            &mut |_| {
                rt.block_on(raw_evalshas(64_000, &con, &trivial));
            },
        ],
    );
    // Each round's time for 64,000 operations, as operations per second.
    let per_second: Vec<[f64; 2]> = rounds.iter().map(|r| [64_000e9 / r[0], 64_000e9 / r[1]]).collect();
    report_rounds(
        "ratelimit/redis_64_callers interleaved: brisk_decision (batched) vs raw_evalsha_return_1, per second",
        &per_second,
    );
    drop(redis);
}

const KEYS: [&str; CALLERS] = {
    const K: [&str; 64] = [
        "c00", "c01", "c02", "c03", "c04", "c05", "c06", "c07", "c08", "c09", "c10", "c11", "c12", "c13", "c14", "c15",
        "c16", "c17", "c18", "c19", "c20", "c21", "c22", "c23", "c24", "c25", "c26", "c27", "c28", "c29", "c30", "c31",
        "c32", "c33", "c34", "c35", "c36", "c37", "c38", "c39", "c40", "c41", "c42", "c43", "c44", "c45", "c46", "c47",
        "c48", "c49", "c50", "c51", "c52", "c53", "c54", "c55", "c56", "c57", "c58", "c59", "c60", "c61", "c62", "c63",
    ];
    K
};

/// `n` `EVALSHA`s of the trivial script from 64 concurrent callers on one
/// connection; the wall time of all.
async fn raw_evalshas(n: u64, con: &ConnectionManager, trivial: &Arc<redis::Script>) -> Duration {
    let (con, trivial) = (con.clone(), trivial.clone());
    concurrently(n, move |_| {
        let (mut con, trivial) = (con.clone(), trivial.clone());
        async move { assert_eq!(trivial.key("k").invoke_async::<i64>(&mut con).await.unwrap(), 1) }
    })
    .await
}

/// `n` decisions of `limiter` from 64 concurrent callers, each on a key of
/// its own (all admitted); the wall time of all.
async fn decisions(n: u64, limiter: &RateLimiter) -> Duration {
    let limiter = limiter.clone();
    concurrently(n, move |caller| {
        let limiter = limiter.clone();
        async move { assert!(limiter.check(KEYS[caller]).await.unwrap().is_allowed()) }
    })
    .await
}

/// Runs `iters` operations spread over 64 concurrent callers; the wall time of all.
async fn concurrently<F, Fut>(iters: u64, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let op = op.clone();
            let n = iters / CALLERS as u64 + u64::from((caller as u64) < iters % CALLERS as u64);
            tokio::spawn(async move {
                for _ in 0..n {
                    op(caller).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Polls a future that completes without waiting (the in-memory store never does I/O).
fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-memory limiter never waits"),
    }
}

fn memory_benches(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("198.51.{}.{}", i / 256, i % 256)).collect();
    let brisk = RateLimiter::builder("rl:mem:")
        .policy(Policy::new("api", Quota::per_hour(nz(1_000)).with_burst(nz(10_000_000))))
        .build()
        .unwrap();
    let governor =
        governor::RateLimiter::<String, _, _>::keyed(governor::Quota::per_hour(nz(1_000)).allow_burst(nz(10_000_000)));
    let churn =
        RateLimiter::builder("rl:churn:").policy(Policy::new("api", Quota::per_second(nz(1_000_000)))).build().unwrap();

    let mut group = c.benchmark_group("ratelimit/memory_keyed");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("brisk_gcra", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            now_or_never(brisk.check(&keys[i])).unwrap().is_allowed()
        })
    });
    let mut i = 0usize;
    group.bench_function("brisk_gcra_now", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            brisk.check_now(&keys[i]).unwrap().unwrap().is_allowed()
        })
    });
    let mut i = 0usize;
    group.bench_function("governor_keyed", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            governor.check_key(&keys[i]).is_ok()
        })
    });
    let mut i = 0usize;
    group.bench_function("brisk_gcra_churn", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            now_or_never(churn.check(&keys[i])).unwrap().is_allowed()
        })
    });
    group.finish();

    // Side by side in time as well: criterion measures one after the other,
    // and on a shared machine the same code timed first or second in a run
    // moved by a third; alternating rounds share each round's conditions.
    let rounds = brisk_benches::alternating_rounds(
        30,
        1_000_000,
        &mut [
            &mut |i| {
                black_box(brisk.check_now(&keys[i as usize & 1023]).unwrap().unwrap().is_allowed());
            },
            &mut |i| {
                black_box(now_or_never(brisk.check(&keys[i as usize & 1023])).unwrap().is_allowed());
            },
            &mut |i| {
                black_box(governor.check_key(&keys[i as usize & 1023]).is_ok());
            },
        ],
    );
    report_memory_rounds("ratelimit/memory_keyed interleaved, ns per decision", &rounds);

    // The same decisions in a loop the compiler sees whole, each answer
    // consumed where it is made (above, each decision is a `dyn FnMut` call
    // whose answer leaves the frame it was made in).
    const LOOP: u32 = 1_000_000;
    let rounds = brisk_benches::alternating_rounds(
        30,
        1,
        &mut [
            &mut |_| {
                black_box(brisk_now_loop(&brisk, &keys, LOOP));
            },
            &mut |_| {
                black_box(brisk_loop(&brisk, &keys, LOOP));
            },
            &mut |_| {
                black_box(governor_loop(&governor, &keys, LOOP));
            },
        ],
    );
    let per_decision: Vec<[f64; 3]> = rounds.iter().map(|r| r.map(|ns| ns / f64::from(LOOP))).collect();
    report_memory_rounds("ratelimit/memory_keyed loops interleaved, ns per decision", &per_decision);
}

/// `n` in-memory decisions without a future in one loop; how many were allowed.
#[inline(never)]
fn brisk_now_loop(limiter: &RateLimiter, keys: &[String], n: u32) -> u32 {
    (0..n)
        .map(|i| u32::from(limiter.check_now(black_box(&keys[i as usize & 1023])).unwrap().unwrap().is_allowed()))
        .sum()
}

/// `n` in-memory decisions in one loop; how many were allowed.
#[inline(never)]
fn brisk_loop(limiter: &RateLimiter, keys: &[String], n: u32) -> u32 {
    (0..n)
        .map(|i| u32::from(now_or_never(limiter.check(black_box(&keys[i as usize & 1023]))).unwrap().is_allowed()))
        .sum()
}

/// `n` decisions of governor's keyed limiter in one loop; how many were allowed.
#[inline(never)]
fn governor_loop(limiter: &governor::DefaultKeyedRateLimiter<String>, keys: &[String], n: u32) -> u32 {
    (0..n).map(|i| u32::from(limiter.check_key(black_box(&keys[i as usize & 1023])).is_ok())).sum()
}

/// Prints each side's median time and the per-round ratio of the first to the second.
fn report_rounds(what: &str, rounds: &[[f64; 2]]) {
    let (first, _, _) = brisk_benches::median_range(rounds.iter().map(|r| r[0]).collect());
    let (second, _, _) = brisk_benches::median_range(rounds.iter().map(|r| r[1]).collect());
    let (ratio, low, high) = brisk_benches::median_range(rounds.iter().map(|r| r[0] / r[1]).collect());
    println!(
        "{what}: {first:.1} vs {second:.1} (medians of {} alternating rounds); ratio per round: median {ratio:.3} (rounds {low:.3} to {high:.3})",
        rounds.len()
    );
}

/// Prints each side's median time and, per round, the ratio of each brisk
/// side to governor's (the last).
fn report_memory_rounds(what: &str, rounds: &[[f64; 3]]) {
    let median = |side: usize| brisk_benches::median_range(rounds.iter().map(|r| r[side]).collect()).0;
    println!(
        "{what}: brisk_gcra_now {:.1}, brisk_gcra {:.1}, governor_keyed {:.1} (medians of {} alternating rounds)",
        median(0),
        median(1),
        median(2),
        rounds.len()
    );
    for (side, name) in [(0, "brisk_gcra_now"), (1, "brisk_gcra")] {
        let (ratio, low, high) = brisk_benches::median_range(rounds.iter().map(|r| r[side] / r[2]).collect());
        println!("  {name} / governor_keyed per round: median {ratio:.3} (rounds {low:.3} to {high:.3})");
    }
}

criterion_group!(benches, memory_benches, redis_benches);
criterion_main!(benches);
