//! The limiter in memory, on a fake clock: policies, weights, peek, refund,
//! overrides, the window algorithms and the blocked-key cache.

use std::num::NonZeroU32;
use std::time::Duration;

use brisk_ratelimit::clock::FakeClock;
use brisk_ratelimit::{Algorithm, ErrorKind, Policy, Quota, RateLimiter, Source};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn limiter(clock: &FakeClock, policies: Vec<Policy>) -> RateLimiter {
    let mut b = RateLimiter::builder("rl:test:").clock(clock.clone());
    for p in policies {
        b = b.policy(p);
    }
    b.build().unwrap()
}

#[tokio::test]
async fn multi_policy_is_all_or_nothing() {
    let clock = FakeClock::new();
    let l = limiter(
        &clock,
        vec![Policy::new("minute", Quota::per_minute(nz(5))), Policy::new("day", Quota::per_day(nz(8)))],
    );
    for _ in 0..5 {
        assert!(l.check("k").await.unwrap().is_allowed());
    }
    // Denied by "minute": "day" must not be charged.
    let d = l.check("k").await.unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.violated().map(|p| p.name()).collect::<Vec<_>>(), ["minute"]);
    assert_eq!(d.policies()[1].remaining(), 3);
    assert_eq!(d.retry_after(), Some(Duration::from_secs(12)));
    clock.advance(Duration::from_secs(60));
    for _ in 0..3 {
        assert!(l.check("k").await.unwrap().is_allowed());
    }
    let d = l.check("k").await.unwrap();
    assert_eq!(d.violated().map(|p| p.name()).collect::<Vec<_>>(), ["day"]);
    assert_eq!(d.policies()[0].remaining(), 2, "minute not charged when day refuses");
}

#[tokio::test]
async fn weights_peek_and_refund() {
    let clock = FakeClock::new();
    let l = limiter(&clock, vec![Policy::new("p", Quota::per_second(nz(10)))]);
    assert_eq!(l.check_n("k", nz(7)).await.unwrap().remaining(), 3);
    let peek = l.peek("k", nz(4)).await.unwrap();
    assert!(!peek.is_allowed());
    assert_eq!(peek.retry_after(), Some(Duration::from_millis(100)));
    assert_eq!(l.peek("k", nz(3)).await.unwrap().remaining(), 0);
    assert_eq!(l.peek("k", nz(1)).await.unwrap().remaining(), 2, "peeks change nothing");
    assert!(!l.check_n("k", nz(4)).await.unwrap().is_allowed());
    let refunded = l.refund("k", nz(5)).await.unwrap();
    assert_eq!(refunded.remaining(), 8);
    assert!(l.check_n("k", nz(8)).await.unwrap().is_allowed());
    // More than the capacity is never admitted.
    let d = l.check_n("other", nz(11)).await.unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.retry_after(), None);
}

#[tokio::test]
async fn fixed_and_sliding_windows_through_the_limiter() {
    let clock = FakeClock::starting_at(1_700_000_040_000_000); // on a minute boundary
    let l = limiter(
        &clock,
        vec![
            Policy::new("fixed", Quota::per_minute(nz(4))).algorithm(Algorithm::FixedWindow),
            Policy::new("sliding", Quota::per_minute(nz(6))).algorithm(Algorithm::SlidingWindow),
        ],
    );
    clock.advance(Duration::from_secs(50));
    for _ in 0..4 {
        assert!(l.check("k").await.unwrap().is_allowed());
    }
    let d = l.check("k").await.unwrap();
    assert_eq!(d.violated().map(|p| p.name()).collect::<Vec<_>>(), ["fixed"]);
    assert_eq!(d.retry_after(), Some(Duration::from_secs(10)));
    clock.advance(Duration::from_secs(10));
    // New fixed window; sliding still weighs 4 × 60/60 = 4 of 6.
    let d = l.check("k").await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.policies()[0].remaining(), 3);
    assert_eq!(d.policies()[1].remaining(), 1);
    assert!(l.check("k").await.unwrap().is_allowed());
    let d = l.check("k").await.unwrap();
    assert_eq!(d.violated().map(|p| p.name()).collect::<Vec<_>>(), ["sliding"]);
    // 2 current + ceil(4 × (60 − e)/60) ≤ 5 ⇔ e ≥ 15 s.
    assert_eq!(d.retry_after(), Some(Duration::from_secs(15)));
}

#[tokio::test]
async fn per_key_overrides() {
    let clock = FakeClock::new();
    let l = RateLimiter::builder("rl:test:")
        .policy(Policy::new("api", Quota::per_minute(nz(1))))
        .override_key("partner", [Policy::new("api", Quota::per_minute(nz(3)))])
        .clock(clock)
        .build()
        .unwrap();
    assert!(l.check("anon").await.unwrap().is_allowed());
    assert!(!l.check("anon").await.unwrap().is_allowed());
    for _ in 0..3 {
        assert!(l.check("partner").await.unwrap().is_allowed());
    }
    assert!(!l.check("partner").await.unwrap().is_allowed());
}

#[tokio::test]
async fn memory_store_decides_every_request_itself() {
    // Nothing to save by caching blocked keys in front of memory: every answer is fresh.
    let clock = FakeClock::new();
    let l = limiter(&clock, vec![Policy::new("p", Quota::per_second(nz(2)))]);
    l.check("k").await.unwrap();
    l.check("k").await.unwrap();
    clock.advance(Duration::from_millis(200));
    let d = l.check("k").await.unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.source(), Source::Store);
    assert_eq!(d.retry_after(), Some(Duration::from_millis(300)));
    clock.advance(Duration::from_millis(300));
    assert!(l.check("k").await.unwrap().is_allowed());
}

#[tokio::test]
async fn check_now_decides_as_check_does_and_shares_its_counts() {
    let clock = FakeClock::new();
    // One policy (decided inline), two policies, and a limiter with overrides (both through the store's path).
    let one = limiter(&clock, vec![Policy::new("p", Quota::per_minute(nz(3)))]);
    let two =
        limiter(&clock, vec![Policy::new("p", Quota::per_minute(nz(3))), Policy::new("d", Quota::per_day(nz(100)))]);
    let overridden = RateLimiter::builder("rl:test:")
        .policy(Policy::new("p", Quota::per_minute(nz(3))))
        .override_key("partner", [Policy::new("partner", Quota::per_minute(nz(5)))])
        .clock(clock.clone())
        .build()
        .unwrap();
    let twin = limiter(&clock, vec![Policy::new("p", Quota::per_minute(nz(3)))]);
    for l in [&one, &two, &overridden] {
        // Calls without and with a future alternate on one key, and count as one sequence.
        assert_eq!(l.check_now("k").unwrap().unwrap().remaining(), 2);
        assert_eq!(l.check("k").await.unwrap().remaining(), 1);
        let last = l.check_now("k").unwrap().unwrap();
        assert_eq!((last.is_allowed(), last.remaining()), (true, 0));
        let refused = l.check_now("k").unwrap().unwrap();
        assert!(!refused.is_allowed());
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(20)));
        assert_eq!(refused.source(), Source::Store);
        // The same question asked of a twin limiter in the same state, with a future, gets the same answer.
        for _ in 0..3 {
            twin.check("k").await.unwrap();
        }
        assert_eq!(refused.policies()[0], twin.check("k").await.unwrap().policies()[0]);
        clock.advance(Duration::from_secs(60));
        // Weights: all of a cost or none of it.
        assert_eq!(l.check_n_now("w", nz(3)).unwrap().unwrap().remaining(), 0);
        assert!(!l.check_n_now("w", nz(1)).unwrap().unwrap().is_allowed());
        assert_eq!(l.check_now("").unwrap().unwrap_err().kind(), ErrorKind::InvalidKey);
        clock.advance(Duration::from_secs(60));
    }
    // An overridden key has its own policies without a future too.
    let partner = overridden.check_now("partner").unwrap().unwrap();
    assert_eq!((partner.policies()[0].name(), partner.remaining()), ("partner", 4));
}

#[tokio::test]
async fn invalid_configuration_and_keys_are_refused() {
    assert!(RateLimiter::builder("rl:").build().is_err());
    assert!(RateLimiter::builder("rl:").policy(Policy::new("bad name", Quota::per_second(nz(1)))).build().is_err());
    assert!(RateLimiter::builder("rl:{x}:").policy(Policy::new("p", Quota::per_second(nz(1)))).build().is_err());
    let dup = RateLimiter::builder("rl:")
        .policy(Policy::new("p", Quota::per_second(nz(1))))
        .policy(Policy::new("p", Quota::per_second(nz(2))))
        .build();
    assert!(dup.is_err());
    let too_fine = Quota::per_period(nz(1_000_001), Duration::from_secs(1));
    assert!(too_fine.is_err());
    let l = RateLimiter::builder("rl:").policy(Policy::new("p", Quota::per_second(nz(1)))).build().unwrap();
    assert_eq!(l.check("").await.unwrap_err().kind(), ErrorKind::InvalidKey);
}

/// Runs `f` on `threads` OS threads at once and sums what they return.
fn on_threads(threads: usize, f: impl Fn(usize) -> u64 + Send + Sync) -> u64 {
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (f, start) = (&f, &start);
                s.spawn(move || {
                    start.wait();
                    f(t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

#[test]
fn threads_hammering_one_key_get_exactly_the_quota() {
    let clock = FakeClock::new();
    let l = limiter(
        &clock,
        vec![Policy::new("minute", Quota::per_minute(nz(100))), Policy::new("day", Quota::per_day(nz(150)))],
    );
    let allowed =
        on_threads(8, |_| (0..1_000).filter(|_| ready(l.check("one-key")).unwrap().is_allowed()).count() as u64);
    assert_eq!(allowed, 100);
    // Refused requests consumed nothing from "day".
    let d = ready(l.peek("one-key", nz(1))).unwrap();
    assert_eq!(d.policies()[1].remaining(), 50);
}

#[test]
fn threads_with_weights_and_a_moving_clock_never_exceed_the_quota() {
    let clock = FakeClock::new();
    // 10 units per second, burst 10: one unit per 100 ms.
    let l = limiter(&clock, vec![Policy::new("p", Quota::per_second(nz(10)))]);
    let ticks = 50u64;
    let units = on_threads(5, |t| {
        if t == 0 {
            // The clock moves while the others hammer: 50 × 100 ms refills 50 units.
            for _ in 0..ticks {
                std::thread::yield_now();
                clock.advance(Duration::from_millis(100));
            }
            return 0;
        }
        let cost = nz(t as u32); // 1, 2, 3, 4 units
        let mut granted = 0;
        for _ in 0..2_000 {
            if ready(l.check_n("one-key", cost)).unwrap().is_allowed() {
                granted += u64::from(cost.get());
            }
        }
        granted
    });
    // GCRA never grants more than the burst plus what the elapsed time refilled.
    assert!(units <= 10 + ticks, "{units} units granted, at most {} possible", 10 + ticks);
    assert!(units >= 10, "the burst is granted: {units}");
}

/// Polls a future the in-memory limiter completes at once.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the in-memory limiter never waits"),
    }
}

#[tokio::test]
async fn a_state_written_by_another_algorithm_reads_as_none() {
    // Two limiters sharing a store, a prefix and a policy name, but not the algorithm.
    let clock = FakeClock::new();
    let store = brisk_ratelimit::store::MemoryStore::with_clock(clock.clone());
    let build = |algorithm| {
        RateLimiter::builder("rl:shared:")
            .policy(Policy::new("p", Quota::per_minute(nz(3))).algorithm(algorithm))
            .store(store.clone())
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let (gcra, window) = (build(Algorithm::Gcra), build(Algorithm::FixedWindow));
    assert_eq!(window.check("k").await.unwrap().remaining(), 2);
    assert_eq!(window.check("k").await.unwrap().remaining(), 1);
    // The window's counts are no GCRA time stamp: GCRA starts afresh, and its stamp is no window.
    assert_eq!(gcra.check("k").await.unwrap().remaining(), 2);
    assert_eq!(gcra.peek("k", nz(1)).await.unwrap().remaining(), 1);
    assert_eq!(window.check("k").await.unwrap().remaining(), 2);
    assert_eq!(store.len(), 1, "one key, one policy name: one state");
}

#[tokio::test]
async fn limiters_sharing_a_memory_store_keep_their_keys_apart() {
    let clock = FakeClock::new();
    let store = brisk_ratelimit::store::MemoryStore::with_clock(clock.clone());
    let build = |prefix: &str| {
        RateLimiter::builder(prefix)
            .policy(Policy::new("p", Quota::per_minute(nz(1))))
            .store(store.clone())
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    // The same user key under two prefixes, and keys that only differ around the braces.
    let (a, b, ab) = (build("rl:a:"), build("rl:b:"), build("rl:a"));
    assert!(a.check("k").await.unwrap().is_allowed());
    assert!(b.check("k").await.unwrap().is_allowed());
    assert!(ab.check("k").await.unwrap().is_allowed());
    assert!(a.check("{k}").await.unwrap().is_allowed());
    assert!(!a.check("k").await.unwrap().is_allowed());
    assert!(!b.check("k").await.unwrap().is_allowed());
    assert_eq!(store.len(), 4);
    a.refund("k", nz(1)).await.unwrap();
    assert!(a.check("k").await.unwrap().is_allowed());
    assert!(!b.check("k").await.unwrap().is_allowed());
}
