//! brisk-pool-metrics: what instrumenting a deadpool pool costs.
//!
//! - `checkout`: `get()` + drop on a plain deadpool pool, side by side with
//!   the same pool through `InstrumentedPool` (with and without the
//!   held-too-long span capture). The objects are in-memory, so the figures
//!   are the pools' own overhead.
//! - `scrape`: encoding the metrics of 10 instrumented pools to OpenMetrics
//!   text (9 gauges, 3 histograms and 10 counters per pool), and of 10 pools
//!   watched for their gauges only.
//!
//! `cargo bench -p brisk-benches --bench pool_metrics`
//!
//! Instructions per scrape, repeatable on a busy machine: run the bench
//! binary under `valgrind --tool=callgrind --toggle-collect='prometheus_client::registry::Registry::encode'`
//! with `--bench --profile-time 2 'scrape 10 pools$'`, and divide the total by
//! the number of calls to the collector's `encode` in the output file.

use std::hint::black_box;
use std::time::Duration;

use brisk_pool_metrics::PoolMetrics;
use criterion::{Criterion, criterion_group, criterion_main};
use deadpool::managed::{Manager, Metrics, Pool, RecycleResult};
use prometheus_client::registry::Registry;

/// A connection that costs nothing to open or check.
struct InMemory;

impl Manager for InMemory {
    type Type = u64;
    type Error = std::convert::Infallible;

    async fn create(&self) -> Result<u64, Self::Error> {
        Ok(1)
    }

    async fn recycle(&self, _: &mut u64, _: &Metrics) -> RecycleResult<Self::Error> {
        Ok(())
    }
}

fn builder() -> deadpool::managed::PoolBuilder<InMemory> {
    Pool::builder(InMemory).max_size(16).wait_timeout(Some(Duration::from_secs(1))).runtime(deadpool::Runtime::Tokio1)
}

fn pool() -> Pool<InMemory> {
    builder().build().expect("the pool builds")
}

fn checkout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let mut group = c.benchmark_group("pool_metrics/checkout");

    let plain = pool();
    group.bench_function("deadpool get+drop", |b| {
        b.to_async(&rt).iter(|| async { black_box(plain.get().await.expect("a connection")) })
    });

    let metrics = PoolMetrics::new();
    let instrumented = metrics.instrument_pool("bench", pool());
    group.bench_function("instrumented get+drop", |b| {
        b.to_async(&rt).iter(|| async { black_box(instrumented.get().await.expect("a connection")) })
    });

    let metrics = PoolMetrics::builder().held_too_long(None).build();
    let no_span = metrics.instrument_pool("bench", pool());
    group.bench_function("instrumented get+drop, no held-too-long", |b| {
        b.to_async(&rt).iter(|| async { black_box(no_span.get().await.expect("a connection")) })
    });
    group.finish();
}

fn scrape(c: &mut Criterion) {
    // The defaults (OpenTelemetry's 9 bucket bounds per histogram), next to
    // 14, 11 and 11 bounds (the earlier defaults): the cost is per line.
    let wide = PoolMetrics::builder()
        .wait_time_buckets([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        .use_time_buckets([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0])
        .create_time_buckets([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        .build();
    for (name, metrics) in
        [("pool_metrics/scrape 10 pools", PoolMetrics::new()), ("pool_metrics/scrape 10 pools, 14/11/11 buckets", wide)]
    {
        scrape_with(c, name, &metrics);
    }
}

fn scrape_with(c: &mut Criterion, name: &str, metrics: &PoolMetrics) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    // Everything on: instrumented checkouts and the post_create hook.
    let pools: Vec<_> = (0..10)
        .map(|i| {
            let recorder = metrics.pool(&format!("pool_{i}"));
            let pool = builder().post_create(recorder.post_create_hook()).build().expect("the pool builds");
            recorder.instrument_pool(pool)
        })
        .collect();
    // Some traffic, so every histogram has samples.
    rt.block_on(async {
        for pool in &pools {
            for _ in 0..100 {
                drop(pool.get().await.expect("a connection"));
            }
        }
    });
    let mut text = String::with_capacity(64 * 1024);
    c.bench_function(name, |b| {
        b.iter(|| {
            text.clear();
            prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoding cannot fail");
            black_box(text.len())
        })
    });
}

fn scrape_gauges_only(c: &mut Criterion) {
    let metrics = PoolMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let pools: Vec<_> = (0..10).map(|_| pool()).collect();
    for (i, pool) in pools.iter().enumerate() {
        metrics.observe(&format!("pool_{i}"), pool);
    }
    let mut text = String::with_capacity(64 * 1024);
    c.bench_function("pool_metrics/scrape 10 pools, gauges only", |b| {
        b.iter(|| {
            text.clear();
            prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoding cannot fail");
            black_box(text.len())
        })
    });
}

criterion_group!(benches, checkout, scrape, scrape_gauges_only);
criterion_main!(benches);
