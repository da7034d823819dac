//! A bounded LRU/TTL cache (moka) shared by loaders across requests.
#![cfg(feature = "moka")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brisk_dataloader::{DataLoader, batch_fn};

#[tokio::test]
async fn loaders_sharing_a_bounded_cache_reuse_each_others_values() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    let cache = moka::sync::Cache::builder().max_capacity(100).time_to_live(Duration::from_secs(60)).build();
    let factory = DataLoader::builder(batch_fn(move |ids: Vec<u64>| {
        counted.fetch_add(ids.len(), Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(ids.iter().map(|&id| Some(id * 2)).collect::<Vec<_>>()) }
    }))
    .shared_cache(cache.clone());

    let (a, b) = (factory.build(), factory.build());
    assert_eq!(a.load(1).await.unwrap(), 2);
    assert_eq!(b.load(1).await.unwrap(), 2, "answered from the shared cache");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(b.stats().snapshot().cache_hits, 1);

    assert!(b.prime(5, 50));
    assert_eq!(a.load(5).await.unwrap(), 50);
    a.clear(&5);
    assert_eq!(b.load(5).await.unwrap(), 10);
    assert_eq!(asked.load(Ordering::SeqCst), 2);

    a.clear_all();
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 0);
}

#[tokio::test]
async fn the_shared_cache_stays_within_its_bound() {
    let cache = moka::sync::Cache::builder().max_capacity(10).build();
    let loader = DataLoader::builder(batch_fn(|ids: Vec<u64>| async move {
        Ok::<_, std::io::Error>(ids.iter().map(|&id| Some(id)).collect::<Vec<_>>())
    }))
    .shared_cache(cache.clone())
    .build();
    let answers = loader.load_many(0..1000).await;
    assert!(answers.iter().all(Result::is_ok));
    cache.run_pending_tasks();
    assert!(cache.entry_count() <= 10, "{} entries", cache.entry_count());
}
