//! brisk-dataloader against the `dataloader` crate (0.18) and async-graphql 7's
//! DataLoader, side by side: the same batch function (a map built from the
//! keys, no I/O, so the loaders' own overhead is what is measured) and the
//! same workload, a fresh request-scoped loader per iteration, batches of at
//! most 100 keys.
//!
//! `cargo bench -p brisk-benches --bench dataloader`

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroUsize;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
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

criterion_group!(benches, side_by_side);
criterion_main!(benches);
