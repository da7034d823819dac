//! Properties over random load patterns: every kept caller is answered with
//! its key's value, no key is requested twice, no batch exceeds its bound.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brisk_dataloader::{DataLoader, batch_fn};
use proptest::prelude::*;

fn run(keys: Vec<u8>, dropped: Vec<bool>, max_batch: usize, in_flight: usize) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let batches: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let recorded = Arc::clone(&batches);
        let loader = DataLoader::builder(batch_fn(move |keys: Vec<u8>| {
            recorded.lock().unwrap().push(keys.clone());
            async move {
                tokio::task::yield_now().await;
                Ok::<_, std::io::Error>(keys.iter().map(|&k| (k, u32::from(k) * 10)).collect::<HashMap<_, _>>())
            }
        }))
        .max_batch_size(NonZeroUsize::new(max_batch).unwrap())
        .max_in_flight(NonZeroUsize::new(in_flight).unwrap())
        .build();

        // Register every load (one poll each), then drop some before dispatch.
        let mut loads: Vec<_> = keys.iter().map(|&k| (k, Box::pin(loader.load(k)))).collect();
        for (_, load) in &mut loads {
            prop_assert!(futures_util::poll!(load.as_mut()).is_pending());
        }
        let kept: Vec<_> = loads
            .into_iter()
            .zip(dropped.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, d)| !**d)
            .map(|(l, _)| l)
            .collect();
        let kept_keys: HashSet<u8> = kept.iter().map(|(k, _)| *k).collect();
        for (key, load) in kept {
            let answer = tokio::time::timeout(Duration::from_secs(10), load).await;
            prop_assert_eq!(answer.expect("no hang").expect("found"), u32::from(key) * 10);
        }

        let batches = batches.lock().unwrap().clone();
        let mut requested = HashSet::new();
        for batch in &batches {
            prop_assert!(!batch.is_empty() && batch.len() <= max_batch, "batch of {}", batch.len());
            for key in batch {
                prop_assert!(requested.insert(*key), "key {} requested twice", key);
            }
        }
        prop_assert!(kept_keys.is_subset(&requested));
        let all: HashSet<u8> = keys.iter().copied().collect();
        prop_assert!(requested.is_subset(&all));
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_kept_load_is_answered_and_no_key_is_requested_twice(
        keys in proptest::collection::vec(0u8..40, 1..150),
        dropped in proptest::collection::vec(any::<bool>(), 0..150),
        max_batch in 1usize..20,
        in_flight in 1usize..4,
    ) {
        run(keys, dropped, max_batch, in_flight)?;
    }
}
