//! Instructions per in-memory decision, brisk next to governor's keyed
//! limiter on the `ratelimit/memory_keyed` workload (1,024 keys, round robin,
//! states kept), for `valgrind --tool=callgrind`: instruction counts repeat
//! where timings on a shared machine do not.
//!
//! ```sh
//! cargo bench -p brisk-benches --bench ratelimit_instructions --no-run
//! valgrind --tool=callgrind --toggle-collect='ratelimit_instructions::decide_with_brisk' \
//!     target/release/deps/ratelimit_instructions-* brisk 100000
//! valgrind --tool=callgrind --toggle-collect='ratelimit_instructions::decide_with_brisk_now' \
//!     target/release/deps/ratelimit_instructions-* brisk_now 100000
//! valgrind --tool=callgrind --toggle-collect='ratelimit_instructions::decide_with_governor' \
//!     target/release/deps/ratelimit_instructions-* governor 100000
//! ```
//!
//! Each run's "Collected" count divided by 101,024 (the 100,000 counted and
//! the 1,024 that first make every key known, in the same function) is the
//! instructions per decision, the loop included. `brisk` is `check` (its
//! future polled once), `brisk_now` is `check_now`. Without arguments (as
//! `cargo bench` runs it) every loop runs briefly.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use brisk_ratelimit::{Policy, Quota, RateLimiter};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("not zero")
}

/// Polls a future that completes without waiting (the in-memory store never does I/O).
fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-memory limiter never waits"),
    }
}

#[inline(never)]
fn decide_with_brisk(limiter: &RateLimiter, keys: &[String], n: usize) -> usize {
    let mut allowed = 0;
    for i in 0..n {
        allowed += usize::from(now_or_never(limiter.check(black_box(&keys[i & 1023]))).unwrap().is_allowed());
    }
    allowed
}

#[inline(never)]
fn decide_with_brisk_now(limiter: &RateLimiter, keys: &[String], n: usize) -> usize {
    let mut allowed = 0;
    for i in 0..n {
        allowed += usize::from(limiter.check_now(black_box(&keys[i & 1023])).unwrap().unwrap().is_allowed());
    }
    allowed
}

#[inline(never)]
fn decide_with_governor(limiter: &governor::DefaultKeyedRateLimiter<String>, keys: &[String], n: usize) -> usize {
    let mut allowed = 0;
    for i in 0..n {
        allowed += usize::from(limiter.check_key(black_box(&keys[i & 1023])).is_ok());
    }
    allowed
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let which = args.first().map_or("both", String::as_str);
    let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let keys: Vec<String> = (0..1024).map(|i| format!("198.51.{}.{}", i / 256, i % 256)).collect();
    let brisk = || {
        RateLimiter::builder("rl:mem:")
            .policy(Policy::new("api", Quota::per_hour(nz(1_000)).with_burst(nz(10_000_000))))
            .build()
            .unwrap()
    };
    if which == "brisk" || which == "both" {
        let brisk = brisk();
        decide_with_brisk(&brisk, &keys, 1024); // every key known before the counted loop
        let allowed = decide_with_brisk(&brisk, &keys, n);
        assert_eq!(allowed, n);
        eprintln!("brisk: {n} decisions");
    }
    if which == "brisk_now" || which == "both" {
        let brisk = brisk();
        decide_with_brisk_now(&brisk, &keys, 1024);
        let allowed = decide_with_brisk_now(&brisk, &keys, n);
        assert_eq!(allowed, n);
        eprintln!("brisk_now: {n} decisions");
    }
    if which == "governor" || which == "both" {
        let governor = governor::RateLimiter::<String, _, _>::keyed(
            governor::Quota::per_hour(nz(1_000)).allow_burst(nz(10_000_000)),
        );
        decide_with_governor(&governor, &keys, 1024);
        let allowed = decide_with_governor(&governor, &keys, n);
        assert_eq!(allowed, n);
        eprintln!("governor: {n} decisions");
    }
}
