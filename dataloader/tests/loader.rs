//! Behaviour of the loader: batching, dedup, errors, cancellation, cache.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brisk_dataloader::{BatchFn, DataLoader, LoadError, LoaderStats, batch_fn};
use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// Fails a test that would otherwise hang. Under paused time a stuck test
/// reaches it at once instead of after the real duration.
const GUARD: Duration = Duration::from_secs(10);

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

#[derive(Debug, PartialEq)]
struct Boom(&'static str);

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Boom {}

/// Records every batch; answers `k * 10`, or not found for keys ≥ 1,000,000.
/// With a gate, each call waits for a permit before answering.
#[derive(Clone, Default)]
struct Recorder {
    batches: Arc<Mutex<Vec<Vec<u64>>>>,
    gate: Option<Arc<Semaphore>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Recorder {
    fn gated() -> (Self, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        (Recorder { gate: Some(Arc::clone(&gate)), ..Recorder::default() }, gate)
    }
    fn batches(&self) -> Vec<Vec<u64>> {
        self.batches.lock().unwrap().clone()
    }
    fn calls(&self) -> usize {
        self.batches.lock().unwrap().len()
    }
}

impl BatchFn<u64, u64> for Recorder {
    type Error = Boom;
    type Output = HashMap<u64, u64>;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Boom> {
        self.batches.lock().unwrap().push(keys.to_vec());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(keys.iter().filter(|&&k| k < 1_000_000).map(|&k| (k, k * 10)).collect())
    }
}

/// Lets spawned tasks run until they block, without moving (paused) time.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn thousand_loads_in_one_tick_make_ten_batches_of_a_hundred() {
    let rec = Recorder::default();
    let loader = DataLoader::builder(rec.clone()).max_batch_size(nz(100)).build();
    let answers = timeout(GUARD, join_all((0..1000u64).map(|k| loader.load(k)))).await.expect("no hang");
    for (k, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), k as u64 * 10);
    }
    let batches = rec.batches();
    assert_eq!(batches.len(), 10);
    assert!(batches.iter().all(|b| b.len() == 100));
    let mut all: Vec<u64> = batches.concat();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>(), "each key exactly once");
    let stats = loader.stats().snapshot();
    assert_eq!((stats.loads, stats.batches, stats.batch_keys), (1000, 10, 1000));
    assert_eq!(stats.batch_sizes.iter().find(|(le, _)| *le == 100).map(|b| b.1), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_loads_in_one_poll_on_a_multi_thread_runtime_make_ten_batches() {
    // The dispatcher runs on another worker; the batch still waits for the
    // submitting task to yield.
    let rec = Recorder::default();
    let loader = DataLoader::builder(rec.clone()).max_batch_size(nz(100)).build();
    let answers = timeout(GUARD, join_all((0..950u64).map(|k| loader.load(k)))).await.expect("no hang");
    assert!(answers.iter().all(Result::is_ok));
    let mut sizes: Vec<usize> = rec.batches().iter().map(Vec::len).collect();
    sizes.sort_unstable(); // batches run concurrently, on either worker
    assert_eq!(sizes, [50, 100, 100, 100, 100, 100, 100, 100, 100, 100]);
}

#[tokio::test]
async fn a_lead_load_polled_once_and_neglected_does_not_stall_the_batch() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    let mut neglected = Box::pin(loader.load(1));
    assert!(futures_util::poll!(neglected.as_mut()).is_pending());
    // `neglected` leads the batch but is not polled again while this waits.
    assert_eq!(timeout(GUARD, loader.load(2)).await.expect("no hang").unwrap(), 20);
    assert_eq!(rec.batches(), vec![vec![1, 2]]);
    assert_eq!(neglected.await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_loads_from_many_tasks_on_a_multi_thread_runtime() {
    let rec = Recorder::default();
    let loader = DataLoader::builder(rec.clone()).max_batch_size(nz(100)).build();
    let tasks: Vec<_> = (0..1000u64)
        .map(|k| {
            let loader = loader.clone();
            tokio::spawn(async move { loader.load(k % 500).await })
        })
        .collect();
    for (k, task) in timeout(GUARD, join_all(tasks)).await.expect("no hang").into_iter().enumerate() {
        assert_eq!(task.unwrap().unwrap(), (k as u64 % 500) * 10);
    }
    let mut all: Vec<u64> = rec.batches().concat();
    all.sort_unstable();
    assert_eq!(all, (0..500).collect::<Vec<_>>(), "each key requested once");
    assert!(rec.batches().iter().all(|b| b.len() <= 100));
}

#[tokio::test]
async fn duplicates_are_requested_once_and_every_caller_answered() {
    let rec = Recorder::default();
    let loader = DataLoader::builder(rec.clone()).max_batch_size(nz(100)).build();
    let keys: Vec<u64> = (0..600).map(|i| i % 150).collect();
    let answers = timeout(GUARD, join_all(keys.iter().map(|&k| loader.load(k)))).await.unwrap();
    for (k, answer) in keys.iter().zip(answers) {
        assert_eq!(answer.unwrap(), k * 10);
    }
    let batches = rec.batches();
    let mut all: Vec<u64> = batches.concat();
    all.sort_unstable();
    assert_eq!(all, (0..150).collect::<Vec<_>>());
    assert_eq!(batches.len(), 2);
    // The first batch fills at the 100th load and, its batch function
    // answering at once, answers there: later loads of its keys are hits.
    // Loads of keys 100..150 join the second batch, which goes at the tick.
    let stats = loader.stats().snapshot();
    assert_eq!((stats.cache_hits, stats.dedups), (300, 150));
}

#[tokio::test]
async fn load_many_keeps_order_and_reports_not_found_per_key() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    let answers = loader.load_many([5, 2_000_000, 1, 5]).await;
    assert_eq!(answers[0].as_ref().unwrap(), &50);
    assert!(answers[1].as_ref().unwrap_err().is_not_found());
    assert_eq!(answers[2].as_ref().unwrap(), &10);
    assert_eq!(answers[3].as_ref().unwrap(), &50);
    assert_eq!(rec.batches(), vec![vec![5, 2_000_000, 1]]);
    assert_eq!(loader.try_load(2_000_000).await.unwrap(), None);
    assert_eq!(loader.try_load(1).await.unwrap(), Some(10));
    assert_eq!(loader.stats().snapshot().not_found, 2, "not-found is not cached");
}

#[tokio::test]
async fn per_key_errors_reach_only_their_key() {
    let loader = DataLoader::new(batch_fn(|keys: Vec<u64>| async move {
        Ok::<_, Boom>(
            keys.iter().map(|&k| if k % 2 == 0 { Ok(k) } else { Err(Boom("odd")) }).collect::<Vec<Result<u64, Boom>>>(),
        )
    }));
    let answers = loader.load_many(0..6).await;
    for (k, answer) in answers.into_iter().enumerate() {
        if k % 2 == 0 {
            assert_eq!(answer.unwrap(), k as u64);
        } else {
            let err = answer.unwrap_err();
            assert!(matches!(err, LoadError::Key(ref e) if **e == Boom("odd")), "{err:?}");
            assert_eq!(err.to_string(), "loading this key failed: odd");
            assert!(std::error::Error::source(&err).is_some());
        }
    }
    assert_eq!(loader.stats().snapshot().errors, 3);
}

#[tokio::test]
async fn a_batch_error_reaches_every_key_as_one_shared_error() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let loader = DataLoader::new(batch_fn(move |_keys: Vec<u64>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<HashMap<u64, u64>, _>(Boom("database down")) }
    }));
    let answers = timeout(GUARD, join_all([1, 2, 3, 1].map(|k| loader.load(k)))).await.unwrap();
    let errors: Vec<_> = answers.into_iter().map(|a| a.unwrap_err()).collect();
    let LoadError::Batch(first) = &errors[0] else { panic!("{:?}", errors[0]) };
    for err in &errors {
        let LoadError::Batch(e) = err else { panic!("{err:?}") };
        assert!(Arc::ptr_eq(first, e), "one error, shared");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Errors are not cached: the next load asks again.
    assert!(loader.load(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_wrong_count_fails_every_waiter_without_hanging() {
    let loader = DataLoader::new(batch_fn(|keys: Vec<u64>| async move {
        Ok::<_, Boom>(keys.iter().skip(1).map(|&k| Some(k)).collect::<Vec<_>>())
    }));
    let answers = timeout(GUARD, join_all([1, 2, 3, 2].map(|k| loader.load(k)))).await.expect("no hang");
    for answer in answers {
        assert!(matches!(answer, Err(LoadError::WrongCount { expected: 3, returned: 2 })), "{answer:?}");
    }
}

#[tokio::test]
async fn a_panicking_batch_function_fails_every_waiter_without_hanging() {
    let loader = DataLoader::new(batch_fn(|keys: Vec<u64>| async move {
        if keys.contains(&13) {
            panic!("unlucky key");
        }
        Ok::<_, Boom>(keys.iter().map(|&k| Some(k)).collect::<Vec<_>>())
    }));
    let answers = timeout(GUARD, join_all([12, 13, 14].map(|k| loader.load(k)))).await.expect("no hang");
    for answer in answers {
        let err = answer.unwrap_err();
        assert!(matches!(&err, LoadError::Panicked(Some(m)) if &**m == "unlucky key"), "{err:?}");
    }
    // The loader still works afterwards.
    assert_eq!(loader.load(12).await.unwrap(), 12);
}

/// A batch function that panics while building its future, not inside it.
struct PanicsEagerly;

impl BatchFn<u64, u64> for PanicsEagerly {
    type Error = Boom;
    type Output = Vec<Option<u64>>;

    #[allow(clippy::manual_async_fn)]
    fn load(&self, _keys: &[u64]) -> impl Future<Output = Result<Vec<Option<u64>>, Boom>> + Send {
        panic!("before the future");
        #[allow(unreachable_code)]
        async {
            unreachable!()
        }
    }
}

#[tokio::test]
async fn a_batch_function_panicking_before_its_future_still_answers() {
    let loader = DataLoader::new(PanicsEagerly);
    let answer = timeout(GUARD, loader.load(1)).await.expect("no hang");
    assert!(matches!(answer, Err(LoadError::Panicked(_))), "{answer:?}");
}

#[tokio::test(start_paused = true)]
async fn a_batch_timeout_fails_a_stuck_batch() {
    let (rec, _gate) = Recorder::gated();
    let loader = DataLoader::builder(rec).batch_timeout(Duration::from_secs(2)).build();
    let answer = timeout(GUARD, loader.load(1)).await.expect("no hang");
    assert!(matches!(answer, Err(LoadError::TimedOut(d)) if d == Duration::from_secs(2)), "{answer:?}");
}

#[tokio::test]
async fn a_key_in_flight_is_not_requested_again() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::builder(rec.clone()).build();
    let first = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    settle().await;
    assert_eq!(rec.calls(), 1, "batch started");
    let second = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load_many([1, 2]).await }
    });
    settle().await;
    assert_eq!(rec.batches(), vec![vec![1], vec![2]], "1 joined the running batch");
    gate.add_permits(2);
    assert_eq!(timeout(GUARD, first).await.unwrap().unwrap().unwrap(), 10);
    let second = timeout(GUARD, second).await.unwrap().unwrap();
    assert_eq!(second[0].as_ref().unwrap(), &10);
    assert_eq!(second[1].as_ref().unwrap(), &20);
    assert_eq!(loader.stats().snapshot().dedups, 1);
}

#[tokio::test]
async fn a_caller_dropped_before_dispatch_withdraws_its_key() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    let kept = loader.load(1);
    let mut dropped = Box::pin(loader.load(2));
    // Register key 2, then drop its only caller before the tick.
    assert!(futures_util::poll!(dropped.as_mut()).is_pending());
    drop(dropped);
    assert_eq!(timeout(GUARD, kept).await.unwrap().unwrap(), 10);
    assert_eq!(rec.batches(), vec![vec![1]]);
    assert_eq!(loader.stats().snapshot().cancelled, 1);
}

#[tokio::test]
async fn a_key_still_wanted_by_another_caller_stays() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    let mut dropped = Box::pin(loader.load(2));
    let mut kept = Box::pin(loader.load(2));
    assert!(futures_util::poll!(dropped.as_mut()).is_pending());
    assert!(futures_util::poll!(kept.as_mut()).is_pending());
    drop(dropped);
    assert_eq!(timeout(GUARD, kept).await.unwrap().unwrap(), 20);
    assert_eq!(rec.batches(), vec![vec![2]]);
    assert_eq!(loader.stats().snapshot().cancelled, 0);
}

#[tokio::test]
async fn a_batch_with_no_waiters_left_is_not_started() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    let mut a = Box::pin(loader.load(1));
    let mut b = Box::pin(loader.load_many([2, 3]));
    assert!(futures_util::poll!(a.as_mut()).is_pending());
    assert!(futures_util::poll!(b.as_mut()).is_pending());
    drop((a, b));
    settle().await;
    assert_eq!(rec.calls(), 0, "nobody waits: not started");
    assert_eq!(loader.stats().snapshot().cancelled, 3);
    // The loader is not stuck: a new load is batched and answered.
    assert_eq!(timeout(GUARD, loader.load(1)).await.unwrap().unwrap(), 10);
    assert_eq!(rec.batches(), vec![vec![1]]);
}

#[tokio::test]
async fn a_batch_waiting_for_a_slot_whose_callers_left_is_not_started() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::builder(rec.clone()).max_in_flight(nz(1)).build();
    let first = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    settle().await;
    // Key 2 is dispatched but waits for the only in-flight slot.
    let waiting = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(2).await }
    });
    settle().await;
    assert_eq!(rec.calls(), 1);
    waiting.abort();
    let _ = waiting.await;
    gate.add_permits(1);
    assert_eq!(timeout(GUARD, first).await.unwrap().unwrap().unwrap(), 10);
    settle().await;
    assert_eq!(rec.batches(), vec![vec![1]], "the batch for 2 was never started");
    assert_eq!(loader.stats().snapshot().cancelled, 1);
}

#[tokio::test]
async fn a_key_withdrawn_from_the_middle_of_a_batch_leaves_the_others_their_own_values() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    let mut first = Box::pin(loader.load_many([1, 2]));
    let mut leaving = Box::pin(loader.load(3));
    let mut last = Box::pin(loader.load_many([4, 1, 5, 4]));
    assert!(futures_util::poll!(first.as_mut()).is_pending());
    assert!(futures_util::poll!(leaving.as_mut()).is_pending());
    assert!(futures_util::poll!(last.as_mut()).is_pending());
    drop(leaving);
    let (first, last) = timeout(GUARD, futures_util::future::join(first, last)).await.unwrap();
    let values =
        |answers: Vec<Result<u64, LoadError<Boom>>>| answers.into_iter().map(Result::unwrap).collect::<Vec<_>>();
    assert_eq!(values(first), [10, 20]);
    assert_eq!(values(last), [40, 10, 50, 40]);
    assert_eq!(rec.batches(), vec![vec![1, 2, 4, 5]]);
}

#[tokio::test]
async fn keys_whose_callers_left_while_their_batch_waited_leave_the_others_their_own_values() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::builder(rec.clone()).max_in_flight(nz(1)).build();
    let first = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(100).await }
    });
    settle().await;
    // Keys 1..=4 are dispatched together but wait for the only in-flight slot.
    let loads: Vec<_> = (1..=4)
        .map(|k| {
            tokio::spawn({
                let loader = loader.clone();
                async move { loader.load(k).await }
            })
        })
        .collect();
    let again = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(4).await }
    });
    settle().await;
    let mut loads = loads.into_iter();
    let (one, two, three, four) =
        (loads.next().unwrap(), loads.next().unwrap(), loads.next().unwrap(), loads.next().unwrap());
    for leaving in [&one, &three] {
        leaving.abort();
    }
    assert!(one.await.unwrap_err().is_cancelled());
    assert!(three.await.unwrap_err().is_cancelled());
    gate.add_permits(2);
    assert_eq!(timeout(GUARD, first).await.unwrap().unwrap().unwrap(), 1000);
    assert_eq!(timeout(GUARD, two).await.unwrap().unwrap().unwrap(), 20);
    assert_eq!(timeout(GUARD, four).await.unwrap().unwrap().unwrap(), 40);
    assert_eq!(timeout(GUARD, again).await.unwrap().unwrap().unwrap(), 40);
    assert_eq!(rec.batches(), vec![vec![100], vec![2, 4]]);
    assert_eq!(loader.stats().snapshot().cancelled, 2);
}

/// A waker that counts its wake-ups.
struct CountingWaker(AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_caller_that_left_is_not_woken_by_its_key_s_answer() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    let staying = loader.load(1);
    tokio::pin!(staying);
    assert!(futures_util::poll!(staying.as_mut()).is_pending());
    let left = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let mut leaving = Box::pin(loader.load(1));
    let waker = std::task::Waker::from(Arc::clone(&left));
    assert!(leaving.as_mut().poll(&mut std::task::Context::from_waker(&waker)).is_pending());
    drop(leaving);
    assert_eq!(timeout(GUARD, staying).await.unwrap().unwrap(), 10);
    assert_eq!(left.0.load(Ordering::SeqCst), 0, "the caller that left is not woken");
    assert_eq!(rec.calls(), 1);
}

#[tokio::test]
async fn a_load_polled_again_from_another_task_is_woken_there() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::new(rec.clone());
    let mut load = Box::pin(async move { loader.load(7).await });
    let first = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = std::task::Waker::from(Arc::clone(&first));
    assert!(load.as_mut().poll(&mut std::task::Context::from_waker(&waker)).is_pending());
    settle().await;
    // Polled once more with the first waker (the load has yielded: the batch
    // goes), then moved to a task of its own.
    assert!(load.as_mut().poll(&mut std::task::Context::from_waker(&waker)).is_pending());
    settle().await;
    assert_eq!(rec.calls(), 1);
    let moved = tokio::spawn(load);
    settle().await;
    gate.add_permits(1);
    assert_eq!(timeout(GUARD, moved).await.unwrap().unwrap().unwrap(), 70);
}

#[tokio::test]
async fn a_started_batch_finishes_for_the_callers_still_waiting() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::builder(rec.clone()).build();
    let leaving = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    let staying = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    settle().await;
    assert_eq!(rec.calls(), 1);
    leaving.abort();
    assert!(leaving.await.unwrap_err().is_cancelled());
    gate.add_permits(1);
    assert_eq!(timeout(GUARD, staying).await.unwrap().unwrap().unwrap(), 10);
    // And the value was cached for the next caller.
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(rec.calls(), 1);
}

#[tokio::test]
async fn batches_run_concurrently_up_to_the_in_flight_bound() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::builder(rec.clone()).max_batch_size(nz(10)).max_in_flight(nz(3)).build();
    let all = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load_many(0..50).await }
    });
    settle().await;
    assert_eq!(rec.calls(), 3, "three batches started, none finished: no lock held across the call");
    assert_eq!(rec.running.load(Ordering::SeqCst), 3);
    gate.add_permits(5);
    let answers = timeout(GUARD, all).await.unwrap().unwrap();
    assert!(answers.iter().enumerate().all(|(k, a)| a.as_ref().ok() == Some(&(k as u64 * 10))));
    assert_eq!(rec.calls(), 5);
    assert_eq!(rec.max_running.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_window_gathers_loads_across_ticks() {
    let rec = Recorder::default();
    let loader = DataLoader::builder(rec.clone()).window(Duration::from_millis(10)).build();
    let start = tokio::time::Instant::now();
    let at = |ms: u64, key: u64| {
        let loader = loader.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let value = loader.load(key).await;
            (value, start.elapsed())
        })
    };
    let tasks = [at(0, 1), at(4, 2), at(9, 3), at(12, 4)];
    let results = timeout(GUARD, join_all(tasks)).await.unwrap();
    let elapsed: Vec<_> = results.into_iter().map(|r| r.unwrap()).map(|(v, t)| (v.unwrap(), t)).collect();
    assert_eq!(rec.batches(), vec![vec![1, 2, 3], vec![4]]);
    assert_eq!(elapsed[0], (10, Duration::from_millis(10)));
    assert_eq!(elapsed[2], (30, Duration::from_millis(10)));
    assert_eq!(elapsed[3], (40, Duration::from_millis(22)));
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_does_not_wait_for_the_window() {
    let rec = Recorder::default();
    let loader = DataLoader::builder(rec.clone()).window(Duration::from_secs(5)).max_batch_size(nz(3)).build();
    let start = tokio::time::Instant::now();
    let answers = timeout(GUARD, loader.load_many(0..3)).await.unwrap();
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn the_cache_answers_repeat_loads_and_honours_prime_and_clear() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(rec.calls(), 1);
    assert!(loader.prime(2, 99));
    assert!(!loader.prime(2, 100), "prime does not overwrite");
    assert_eq!(loader.load(2).await.unwrap(), 99);
    assert_eq!(rec.calls(), 1);
    loader.clear(&2);
    assert_eq!(loader.load(2).await.unwrap(), 20);
    assert_eq!(rec.calls(), 2);
    loader.clear_all();
    assert_eq!(loader.load_many([1, 2]).await.len(), 2);
    assert_eq!(rec.batches().last().unwrap(), &vec![1, 2]);
    let stats = loader.stats().snapshot();
    assert_eq!((stats.loads, stats.cache_hits), (6, 2));
}

#[tokio::test]
async fn a_clear_during_a_batch_keeps_its_stale_values_out_of_the_cache() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::new(rec.clone());
    let running = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    settle().await;
    loader.clear(&1);
    gate.add_permits(2);
    assert_eq!(timeout(GUARD, running).await.unwrap().unwrap().unwrap(), 10, "its callers are answered");
    assert_eq!(timeout(GUARD, loader.load(1)).await.unwrap().unwrap(), 10);
    assert_eq!(rec.calls(), 2, "but the value was not cached");
}

#[tokio::test]
async fn prime_leaves_a_key_being_loaded_to_its_batch() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::new(rec.clone());
    let running = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    settle().await;
    assert!(!loader.prime(1, 99), "a load of 1 is in flight");
    gate.add_permits(1);
    assert_eq!(timeout(GUARD, running).await.unwrap().unwrap().unwrap(), 10);
    assert_eq!(loader.load(1).await.unwrap(), 10, "the batch's value was cached");
    assert_eq!(rec.calls(), 1);
}

#[tokio::test]
async fn a_shared_batch_function_serves_several_loaders() {
    let rec = Arc::new(Recorder::default());
    let (a, b) = (DataLoader::new(Arc::clone(&rec)), DataLoader::new(Arc::clone(&rec)));
    let (x, y) = tokio::join!(a.load(1), b.load(2));
    assert_eq!((x.unwrap(), y.unwrap()), (10, 20));
    let mut batches = rec.batches();
    batches.sort();
    assert_eq!(batches, vec![vec![1], vec![2]], "each loader batches its own keys");
}

#[test]
fn errors_say_what_happened() {
    let cases: [(LoadError<Boom>, &str, &str); 6] = [
        (LoadError::NotFound, "not_found", "no value for this key"),
        (LoadError::Batch(Arc::new(Boom("down"))), "batch", "the batch failed: down"),
        (
            LoadError::WrongCount { expected: 3, returned: 2 },
            "wrong_count",
            "the batch function returned 2 results for 3 keys",
        ),
        (LoadError::Panicked(Some("oops".into())), "panicked", "the batch function panicked: oops"),
        (LoadError::TimedOut(Duration::from_secs(2)), "timed_out", "the batch function did not finish within 2s"),
        (LoadError::Abandoned, "abandoned", "the batch was abandoned before it answered (runtime shut down)"),
    ];
    for (err, kind, text) in cases {
        assert_eq!(err.kind(), kind);
        assert_eq!(err.to_string(), text);
        assert_eq!(err.clone().to_string(), text);
    }
    assert_eq!(LoadError::Key(Arc::new(Boom("x"))).inner(), Some(&Boom("x")));
}

#[tokio::test]
async fn with_the_cache_off_every_load_asks_again() {
    let rec = Recorder::default();
    let loader = DataLoader::builder(rec.clone()).cache(false).build();
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert!(!loader.prime(1, 5));
    assert_eq!(rec.calls(), 2);
    // Loads of a key in one tick still share a request.
    let (a, b) = tokio::join!(loader.load(3), loader.load(3));
    assert_eq!((a.unwrap(), b.unwrap()), (30, 30));
    assert_eq!(rec.batches().last().unwrap(), &vec![3]);
}

#[tokio::test]
async fn loaders_built_from_one_builder_have_their_own_caches_and_shared_stats() {
    let rec = Recorder::default();
    let stats = LoaderStats::new("users");
    let factory = DataLoader::builder(rec.clone()).stats(stats.clone());
    let (one, two) = (factory.build(), factory.build());
    one.load(1).await.unwrap();
    two.load(1).await.unwrap();
    assert_eq!(rec.calls(), 2, "no value crosses from one loader to another");
    assert_eq!(stats.snapshot().loads, 2);
    assert_eq!(stats.snapshot().batches, 2);
}

#[test]
fn a_load_abandoned_by_its_runtime_reports_so() {
    let (rec, _gate) = Recorder::gated();
    let loader = DataLoader::new(rec);
    let other = loader.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let stuck = tokio::spawn(async move { other.load(1).await });
        settle().await;
        drop(stuck);
    });
    drop(runtime); // drops the running batch task
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Key 1 is no longer held by a dead batch: a new load starts a new batch
    // (which then waits on the closed gate until the guard times out).
    let answer = runtime.block_on(async { timeout(Duration::from_millis(200), loader.load(1)).await });
    assert!(answer.is_err(), "a new batch was started and is waiting on the gate");
    assert_eq!(loader.stats().snapshot().batches, 2);
}

#[test]
fn loaders_and_their_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let loader = DataLoader::new(Recorder::default());
    send_sync(&loader);
    send(&loader.load(1));
    send(&loader.load_many([1]));
    send(&loader.try_load(1));
}

#[tokio::test]
async fn answered_keys_are_cached_in_place_and_failed_ones_asked_again() {
    let rec = Recorder::default();
    let loader = DataLoader::new(rec.clone());
    let answers = loader.load_many([1, 2_000_000, 3]).await;
    assert_eq!(answers.len(), 3);
    // Values answered by the batch are hits; the not-found key is asked again.
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert!(loader.load(2_000_000).await.unwrap_err().is_not_found());
    assert_eq!(rec.batches(), vec![vec![1, 2_000_000, 3], vec![2_000_000]]);
    // A key that holds no value can be primed; one that holds a value cannot.
    assert!(loader.prime(2_000_000, 7));
    assert!(!loader.prime(3, 7));
    assert_eq!(loader.load(2_000_000).await.unwrap(), 7);
    assert_eq!(loader.load(3).await.unwrap(), 30);
    // A value answered by a batch is forgotten by `clear` and `clear_all`.
    loader.clear(&1);
    assert_eq!(loader.load(1).await.unwrap(), 10);
    assert_eq!(rec.batches().last().unwrap(), &vec![1]);
    loader.clear_all();
    assert_eq!(loader.load_many([3, 2_000_000]).await.len(), 2);
    assert_eq!(rec.batches().last().unwrap(), &vec![3, 2_000_000]);
    let stats = loader.stats().snapshot();
    assert_eq!((stats.loads, stats.cache_hits, stats.batches), (10, 3, 4));
}

#[tokio::test]
async fn a_per_key_error_is_asked_again_and_a_batch_error_too() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let loader = DataLoader::new(batch_fn(move |keys: Vec<u64>| {
        let n = {
            let mut calls = seen.lock().unwrap();
            calls.push(keys.clone());
            calls.len()
        };
        async move {
            if n == 1 {
                return Err(Boom("down"));
            }
            Ok(keys.iter().map(|&k| if n == 2 { Err(Boom("odd")) } else { Ok(k) }).collect::<Vec<_>>())
        }
    }));
    assert!(matches!(loader.load(4).await, Err(LoadError::Batch(_))));
    assert!(matches!(loader.load(4).await, Err(LoadError::Key(_))));
    let (a, b) = tokio::join!(loader.load(4), loader.load(4));
    assert_eq!((a.unwrap(), b.unwrap()), (4, 4));
    assert_eq!(loader.load(4).await.unwrap(), 4);
    assert_eq!(*calls.lock().unwrap(), vec![vec![4], vec![4], vec![4]]);
}

#[tokio::test]
async fn shared_stats_count_loads_by_the_time_their_batch_is_dispatched() {
    let (rec, gate) = Recorder::gated();
    let stats = LoaderStats::new("users");
    let loader = DataLoader::builder(rec.clone()).stats(stats.clone()).build();
    let running = tokio::spawn({
        let loader = loader.clone();
        async move { join_all([1, 2, 1].map(|k| loader.load(k))).await }
    });
    settle().await;
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.loads, snapshot.dedups, snapshot.batches), (3, 1, 1), "counted while the batch runs");
    gate.add_permits(1);
    assert_eq!(timeout(GUARD, running).await.unwrap().unwrap().len(), 3);
    assert_eq!(loader.load(2).await.unwrap(), 20);
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.loads, snapshot.cache_hits), (4, 1), "a hit is counted at once");
    // A load withdrawn before its batch went is counted when it leaves.
    let stats = LoaderStats::new("projects");
    let loader = DataLoader::builder(rec.clone()).stats(stats.clone()).window(Duration::from_secs(60)).build();
    let mut load = Box::pin(loader.load(5));
    assert!(futures_util::poll!(load.as_mut()).is_pending());
    drop(load);
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.loads, snapshot.cancelled, snapshot.batches), (1, 1, 0));
}

#[tokio::test]
async fn a_full_batch_answering_at_once_answers_in_the_load_that_filled_it() {
    let rec = Recorder::default();
    let loader = DataLoader::builder(rec.clone()).max_batch_size(nz(2)).build();
    let mut a = Box::pin(loader.load(1));
    let mut b = Box::pin(loader.load(2));
    assert!(futures_util::poll!(a.as_mut()).is_pending());
    // The second key fills the batch: it runs, and answers, in this poll.
    assert!(matches!(futures_util::poll!(b.as_mut()), std::task::Poll::Ready(Ok(20))));
    assert_eq!(rec.batches(), vec![vec![1, 2]]);
    assert_eq!(timeout(GUARD, a).await.unwrap().unwrap(), 10);
    // A panicking batch function run there answers its callers, too.
    let loader = DataLoader::builder(batch_fn(|_keys: Vec<u64>| async move {
        panic!("inline");
        #[allow(unreachable_code)]
        Ok::<_, Boom>(Vec::<Option<u64>>::new())
    }))
    .max_batch_size(nz(1))
    .build();
    let answer = timeout(GUARD, loader.load(1)).await.expect("no hang");
    assert!(matches!(answer, Err(LoadError::Panicked(_))), "{answer:?}");
}

#[tokio::test]
async fn a_full_batch_that_waits_goes_on_on_its_own_task() {
    let (rec, gate) = Recorder::gated();
    let loader = DataLoader::builder(rec.clone()).max_batch_size(nz(2)).build();
    let mut a = Box::pin(loader.load(1));
    let mut b = Box::pin(loader.load(2));
    assert!(futures_util::poll!(a.as_mut()).is_pending());
    assert!(futures_util::poll!(b.as_mut()).is_pending());
    assert_eq!(rec.calls(), 1, "started in the load that filled it");
    // The load that started it leaves; the batch still answers the other.
    drop(b);
    gate.add_permits(1);
    assert_eq!(timeout(GUARD, a).await.unwrap().unwrap(), 10);
    assert_eq!(loader.load(2).await.unwrap(), 20, "and its values were cached");
    assert_eq!(rec.calls(), 1);
}
