//! brisk-dataloader against the `dataloader` crate (0.18) and async-graphql 7's
//! DataLoader, side by side: the same batch function (a map built from the
//! keys, no I/O, so the loaders' own overhead is what is measured) and the
//! same workload, a fresh request-scoped loader per iteration, batches of at
//! most 100 keys.
//!
//! `cargo bench -p brisk-benches --bench dataloader`
//!
//! Instruction counts, which a shared machine's load does not move: with
//! `DATALOADER_COUNT=<loader>:<unique keys>:<iterations>` (loader `brisk`,
//! `dataloader` or `async-graphql`) the binary runs that many iterations of
//! the workload (1,000 loads of keys `0..unique`) and exits, the loop in one
//! function for `--toggle-collect` (`brisk-cached`: the cached-keys group's
//! `load_many` of 1,000 keys a loader holds):
//!
//! ```sh
//! cargo bench -p brisk-benches --bench dataloader --no-run
//! DATALOADER_COUNT=brisk:250:25 valgrind --tool=callgrind --toggle-collect='dataloader::count' \
//!     target/release/deps/dataloader-<hash>
//! ```
//!
//! The difference between the counts of 25 and 5 iterations, divided by
//! 20,000, is the instructions per load (the runtime's start-up and the
//! first iterations' allocations cancel out).

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroUsize;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use futures_util::future::join_all;

const MAX_BATCH: usize = 100;

fn values(keys: &[u64]) -> HashMap<u64, u64> {
    keys.iter().map(|&k| (k, k.wrapping_mul(2_654_435_761))).collect()
}

#[derive(Clone)]
struct Batch;

impl brisk_dataloader::BatchFn<u64, u64> for Batch {
    type Error = Infallible;
    type Output = HashMap<u64, u64>;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Infallible> {
        Ok(values(keys))
    }
}

impl dataloader::BatchFn<u64, u64> for Batch {
    async fn load(&mut self, keys: &[u64]) -> HashMap<u64, u64> {
        values(keys)
    }
}

impl async_graphql::dataloader::Loader<u64> for Batch {
    type Value = u64;
    type Error = Infallible;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Infallible> {
        Ok(values(keys))
    }
}

/// One "request": `loads` loads of keys `0..unique` (repeating), all made in
/// one tick, through a fresh loader.
async fn brisk(loads: u64, unique: u64) -> u64 {
    let loader = brisk_dataloader::DataLoader::builder(Batch)
        .max_batch_size(NonZeroUsize::new(MAX_BATCH).expect("non-zero"))
        .build();
    join_all((0..loads).map(|i| loader.load(i % unique))).await.into_iter().map(|v| v.expect("found")).sum()
}

async fn dataloader_crate(loads: u64, unique: u64) -> u64 {
    let loader = dataloader::cached::Loader::new(Batch).with_max_batch_size(MAX_BATCH);
    join_all((0..loads).map(|i| loader.load(i % unique))).await.into_iter().sum()
}

async fn async_graphql(loads: u64, unique: u64) -> u64 {
    let loader = async_graphql::dataloader::DataLoader::with_cache(
        Batch,
        tokio::spawn,
        async_graphql::dataloader::HashMapCache::default(),
    )
    .max_batch_size(MAX_BATCH);
    join_all((0..loads).map(|i| loader.load_one(i % unique)))
        .await
        .into_iter()
        .map(|v| v.expect("infallible").expect("found"))
        .sum()
}

fn side_by_side(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // (name, loads per tick, unique keys)
    for (workload, loads, unique) in [("1000_keys_per_tick", 1000u64, 1000u64), ("1000_loads_250_keys", 1000, 250)] {
        let mut group = c.benchmark_group(format!("dataloader/{workload}"));
        group.throughput(Throughput::Elements(loads));
        group.bench_function(BenchmarkId::from_parameter("brisk"), |b| {
            b.to_async(&rt).iter(|| async { black_box(brisk(loads, unique).await) })
        });
        group.bench_function(BenchmarkId::from_parameter("dataloader-0.18"), |b| {
            b.to_async(&rt).iter(|| async { black_box(dataloader_crate(loads, unique).await) })
        });
        group.bench_function(BenchmarkId::from_parameter("async-graphql-7"), |b| {
            b.to_async(&rt).iter(|| async { black_box(async_graphql(loads, unique).await) })
        });
        group.finish();
    }

    // Cache hits: the same loader answering keys it already holds.
    let mut group = c.benchmark_group("dataloader/1000_cached_keys");
    group.throughput(Throughput::Elements(1000));
    let loader = brisk_dataloader::DataLoader::builder(Batch)
        .max_batch_size(NonZeroUsize::new(MAX_BATCH).expect("non-zero"))
        .build();
    rt.block_on(loader.load_many(0..1000));
    group.bench_function(BenchmarkId::from_parameter("brisk"), |b| {
        b.to_async(&rt).iter(|| async { black_box(loader.load_many(0..1000).await.len()) })
    });
    group.finish();
}

/// Runs `iterations` requests of `loads` loads of `0..unique` through one
/// loader implementation, for callgrind.
#[inline(never)]
fn count(rt: &tokio::runtime::Runtime, loader: &str, unique: u64, iterations: u64) -> u64 {
    const LOADS: u64 = 1000;
    let mut sum = 0u64;
    if loader == "brisk-cached" {
        // The `1000_cached_keys` group: one loader answering keys it holds.
        let loader = brisk_dataloader::DataLoader::builder(Batch)
            .max_batch_size(NonZeroUsize::new(MAX_BATCH).expect("non-zero"))
            .build();
        rt.block_on(loader.load_many(0..LOADS));
        for _ in 0..iterations {
            sum = sum.wrapping_add(rt.block_on(loader.load_many(0..LOADS)).len() as u64);
        }
        return sum;
    }
    for _ in 0..iterations {
        sum = sum.wrapping_add(rt.block_on(async {
            match loader {
                "brisk" => brisk(LOADS, unique).await,
                "dataloader" => dataloader_crate(LOADS, unique).await,
                _ => async_graphql(LOADS, unique).await,
            }
        }));
    }
    sum
}

criterion_group!(benches, side_by_side);

fn main() {
    if let Ok(spec) = std::env::var("DATALOADER_COUNT") {
        let mut parts = spec.split(':');
        let loader = parts.next().unwrap_or("brisk").to_owned();
        let unique = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1000u64).max(1);
        let iterations = parts.next().and_then(|n| n.parse().ok()).unwrap_or(10u64);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        black_box(count(&rt, &loader, unique, iterations));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
