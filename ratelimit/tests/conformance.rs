//! GCRA conformance: the limiter must answer as governor and as redis-cell's
//! `CL.THROTTLE` do, for any sequence of requests.

use std::num::NonZeroU32;
use std::time::Duration;

use brisk_ratelimit::clock::FakeClock;
use brisk_ratelimit::{Policy, Quota, RateLimiter};
use governor::clock::{Clock as _, FakeRelativeClock};
use governor::middleware::StateInformationMiddleware;
use proptest::prelude::*;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// redis-cell's `CL.THROTTLE key max_burst count period quantity`, transcribed
/// from the throttled GCRA it implements (times in microseconds). The one
/// liberty: the reset of a denied request on an idle key is taken from
/// `max(tat, now)` (redis-cell would report a negative reset there).
struct RedisCell {
    tat: Option<u64>,
    emission: u64,
    dvt: u64,
}

#[derive(Debug, PartialEq)]
struct CellReply {
    limited: bool,
    limit: u64,
    remaining: u64,
    retry_after: Option<u64>,
    reset_after: u64,
}

impl RedisCell {
    fn new(max_burst: u64, count: u64, period: u64) -> Self {
        let emission = period / count;
        RedisCell { tat: None, emission, dvt: emission * (max_burst + 1) }
    }

    fn throttle(&mut self, now: u64, quantity: u64) -> CellReply {
        let tat = self.tat.unwrap_or(now).max(now);
        let increment = self.emission * quantity;
        let new_tat = tat + increment;
        let allow_at = new_tat as i128 - self.dvt as i128;
        let diff = now as i128 - allow_at;
        let (limited, ttl, retry_after) = if diff < 0 {
            let retry = (increment <= self.dvt).then_some((-diff) as u64);
            (true, tat - now, retry)
        } else {
            self.tat = Some(new_tat);
            (false, new_tat - now, None)
        };
        let next = self.dvt as i128 - ttl as i128;
        let remaining = if next > -(self.emission as i128) { (next / self.emission as i128).max(0) as u64 } else { 0 };
        CellReply { limited, limit: self.dvt / self.emission, remaining, retry_after, reset_after: ttl }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn gcra_agrees_with_governor_and_redis_cell(
        emission_ms in 1u64..2_000,
        limit in 1u32..20,
        burst in 1u32..20,
        requests in proptest::collection::vec((0u64..5_000_000, 1u32..25), 1..60),
    ) {
        let emission = Duration::from_millis(emission_ms);
        let quota = Quota::per_period(nz(limit), emission * limit).unwrap().with_burst(nz(burst));
        prop_assert_eq!(quota.emission_interval(), emission);

        let clock = FakeClock::new();
        let ours = RateLimiter::builder("rl:conf:")
            .policy(Policy::new("p", quota))
            .clock(clock.clone())
            .blocked_keys_capacity(0)
            .build()
            .unwrap();
        let gclock = FakeRelativeClock::default();
        let governor = governor::RateLimiter::direct_with_clock(
            governor::Quota::with_period(emission).unwrap().allow_burst(nz(burst)),
            gclock.clone(),
        )
        .with_middleware::<StateInformationMiddleware>();
        let mut cell = RedisCell::new(u64::from(burst) - 1, u64::from(limit), emission.as_micros() as u64 * u64::from(limit));

        for (advance_us, cost) in requests {
            clock.advance(Duration::from_micros(advance_us));
            gclock.advance(Duration::from_micros(advance_us));
            let decision = block_on(ours.check_n("k", nz(cost))).unwrap();
            let p = &decision.policies()[0];

            let reply = cell.throttle(clock_now(&clock), u64::from(cost));
            prop_assert_eq!(reply.limit, u64::from(burst));
            prop_assert_eq!(!reply.limited, decision.is_allowed());
            prop_assert_eq!(reply.remaining, u64::from(p.remaining()));
            prop_assert_eq!(reply.reset_after, p.reset_after().as_micros() as u64);
            prop_assert_eq!(reply.retry_after, p.retry_after().map(|d| d.as_micros() as u64));
            prop_assert_eq!(decision.retry_after(), p.retry_after());

            match governor.check_n(nz(cost)) {
                Ok(Ok(snapshot)) => {
                    prop_assert!(decision.is_allowed());
                    prop_assert_eq!(snapshot.remaining_burst_capacity(), p.remaining());
                }
                Ok(Err(not_until)) => {
                    prop_assert!(!decision.is_allowed());
                    prop_assert_eq!(Some(not_until.wait_time_from(gclock.now())), p.retry_after());
                }
                Err(_insufficient) => {
                    prop_assert!(!decision.is_allowed());
                    prop_assert_eq!(p.retry_after(), None);
                }
            }
        }
    }
}

fn clock_now(clock: &FakeClock) -> u64 {
    use brisk_ratelimit::clock::Clock;
    clock.now_micros()
}

#[test]
fn burst_and_remaining_semantics_documented() {
    // Quota 10/min with burst 3: three at once, then one per 6 s.
    let clock = FakeClock::new();
    let limiter = RateLimiter::builder("rl:doc:")
        .policy(Policy::new("p", Quota::per_minute(nz(10)).with_burst(nz(3))))
        .clock(clock.clone())
        .build()
        .unwrap();
    let remaining: Vec<_> = (0..4)
        .map(|_| {
            let d = block_on(limiter.check("k")).unwrap();
            (d.is_allowed(), d.remaining(), d.retry_after())
        })
        .collect();
    assert_eq!(
        remaining,
        vec![(true, 2, None), (true, 1, None), (true, 0, None), (false, 0, Some(Duration::from_secs(6)))]
    );
    clock.advance(Duration::from_secs(6));
    let d = block_on(limiter.check("k")).unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.policies()[0].reset_after(), Duration::from_secs(18));
}
