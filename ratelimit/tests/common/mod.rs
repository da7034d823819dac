//! Helpers shared by the Redis-backed test files.

use std::num::NonZeroU32;

use brisk_ratelimit::{Algorithm, Policy, Quota};

/// One policy of each algorithm, their limits from `limits` (GCRA: burst
/// `limits.0` of `3 × limits.0` per hour), for the property tests.
pub(crate) fn one_of_each_algorithm(limits: (u32, u32, u32)) -> Vec<Policy> {
    let nz = |n| NonZeroU32::new(n).expect("the tests' limits are not zero");
    vec![
        Policy::new("gcra", Quota::per_hour(nz(limits.0 * 3)).with_burst(nz(limits.0))),
        Policy::new("fixed", Quota::per_hour(nz(limits.1))).algorithm(Algorithm::FixedWindow),
        Policy::new("sliding", Quota::per_day(nz(limits.2))).algorithm(Algorithm::SlidingWindow),
    ]
}

/// `EVALSHA` calls Redis has counted so far (`INFO commandstats`).
pub(crate) async fn evalsha_calls(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(con).await.unwrap();
    info.lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(['=', ',']).nth(1))
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

/// A current-thread runtime and a Redis, for a property test driving async
/// code; none when there is no Redis (the test is skipped, or fails where
/// Redis is required).
pub(crate) fn runtime_with_redis() -> Option<(tokio::runtime::Runtime, brisk_testkit::Redis)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match rt.block_on(brisk_testkit::redis()) {
        Ok(redis) => Some((rt, redis)),
        Err(err) => {
            brisk_testkit::skip_or_fail(&err);
            None
        }
    }
}
