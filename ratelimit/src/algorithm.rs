//! The counting algorithms as pure functions of (parameters, state, now, cost).
//!
//! The in-memory store calls these; the Redis store runs the same arithmetic
//! in Lua (`store/limiter.lua`), and the tests hold both to the same answers.
//! All times are integer microseconds.
//!
//! # GCRA semantics
//!
//! With emission interval `T` (`period / limit`) and burst `B`, the state is
//! the *theoretical arrival time* `tat`. Let `base = max(tat, now)`. A request
//! of cost `n` is admitted iff `base + n·T - now <= B·T`; then `tat = base + n·T`.
//!
//! - `remaining` = ⌊(B·T − (tat − now)) / T⌋ after the decision (for a denied
//!   request: what is left, untouched by it);
//! - `reset_after` = `tat − now`: the time until the bucket is full again;
//! - `retry_after` (denied only) = `base + n·T − B·T − now`: the earliest time
//!   at which the same request would be admitted; `None` when `n > B`.
//!
//! These are redis-cell's `CL.THROTTLE key (B−1) limit period n` answers
//! (redis-cell's `max_burst` counts the units *beyond* the first, so its
//! limit is `max_burst + 1 = B`), and governor's with `Quota::max_burst = B`.

/// Parameters of one policy, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Params {
    /// Emission interval `t` and capacity `b·t` as `t` and `b`; `per_t` divides by `t`.
    Gcra { t: u64, burst: u64, per_t: Divisor },
    /// `limit` per `window`.
    FixedWindow { limit: u64, window: u64 },
    /// `limit` per `window`, previous window weighted.
    SlidingWindow { limit: u64, window: u64 },
}

impl Params {
    pub(crate) fn from_policy(policy: &crate::Policy) -> Params {
        let q = policy.quota;
        match policy.algorithm {
            crate::Algorithm::Gcra => Params::gcra(q.emission_interval_micros(), u64::from(q.burst().get())),
            crate::Algorithm::FixedWindow => {
                Params::FixedWindow { limit: u64::from(q.limit().get()), window: q.period_micros() }
            }
            crate::Algorithm::SlidingWindow => {
                Params::SlidingWindow { limit: u64::from(q.limit().get()), window: q.period_micros() }
            }
        }
    }

    /// GCRA with emission interval `t` (at least 1) and burst `burst`.
    pub(crate) fn gcra(t: u64, burst: u64) -> Params {
        let t = t.max(1);
        Params::Gcra { t, burst, per_t: Divisor::new(t) }
    }

    /// The largest cost this policy can ever admit.
    pub(crate) fn capacity(&self) -> u64 {
        match *self {
            Params::Gcra { burst, .. } => burst,
            Params::FixedWindow { limit, .. } | Params::SlidingWindow { limit, .. } => limit,
        }
    }
}

/// Division by a fixed divisor `d` as a multiplication, for the GCRA's
/// `remaining` on every decision: exact for every dividend below 2^52 (the
/// capacity bound `Policy` checks), by Granlund and Montgomery's theorem
/// ("Division by invariant integers using multiplication", 1994, thm 4.2):
/// with `l = ⌈log2 d⌉` and `m = ⌈2^(52+l) / d⌉`, `⌊n / d⌋ = ⌊m·n / 2^(52+l)⌋`
/// for `0 ≤ n < 2^52`. Larger dividends are divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Divisor {
    d: u64,
    m: u64,
    shift: u32,
}

impl Divisor {
    const EXACT_BELOW_BITS: u32 = 52;

    /// `d` must not be 0 (0 is taken as 1).
    pub(crate) fn new(d: u64) -> Divisor {
        let d = d.max(1);
        let l = u64::BITS - (d - 1).leading_zeros();
        let shift = Self::EXACT_BELOW_BITS + l;
        // m ≤ 2^53 + 1: fits, and m·n < 2^106.
        let m = (1u128 << shift).div_ceil(u128::from(d));
        Divisor { d, m: u64::try_from(m).expect("m is at most 2^53 + 1"), shift }
    }

    #[inline(always)]
    pub(crate) fn divide(self, n: u64) -> u64 {
        if n < 1 << Self::EXACT_BELOW_BITS {
            ((u128::from(n) * u128::from(self.m)) >> self.shift) as u64
        } else {
            n / self.d
        }
    }
}

/// Stored state of one policy for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Theoretical arrival time.
    Gcra { tat: u64 },
    /// Window number (`now / window`), its count, and the previous window's count.
    Window { index: u64, current: u64, previous: u64 },
}

/// The answer for one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    pub(crate) reset_after: u64,
    pub(crate) retry_after: Option<u64>,
}

/// An outcome with the state to store if the request is admitted, and when that state may be forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evaluation {
    pub(crate) outcome: Outcome,
    pub(crate) next: State,
    pub(crate) expires_at: u64,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// Decides a request of `cost` (0 = a pure read) against `state`.
#[inline(always)] // the store's hot path: GCRA inline, the window algorithms called
pub(crate) fn evaluate(params: Params, state: Option<State>, now: u64, cost: u64) -> Evaluation {
    match params {
        Params::Gcra { t, burst, per_t } => {
            let tat = match state {
                Some(State::Gcra { tat }) => tat,
                _ => now,
            };
            gcra(t, burst, per_t, tat, now, cost)
        }
        Params::FixedWindow { limit, window } => fixed_window(limit, window, state, now, cost),
        Params::SlidingWindow { limit, window } => sliding_window(limit, window, state, now, cost),
    }
}

/// GCRA with emission interval `t`, burst `burst`, and the key's `tat` (`now` for a new key).
#[inline(always)]
pub(crate) fn gcra(t: u64, burst: u64, per_t: Divisor, tat: u64, now: u64, cost: u64) -> Evaluation {
    let base = tat.max(now);
    let capacity = t.saturating_mul(burst);
    let new_tat = base.saturating_add(t.saturating_mul(cost));
    if new_tat - now <= capacity {
        Evaluation {
            outcome: Outcome {
                allowed: true,
                remaining: per_t.divide(capacity - (new_tat - now)),
                reset_after: new_tat - now,
                retry_after: None,
            },
            next: State::Gcra { tat: new_tat },
            expires_at: new_tat,
        }
    } else {
        let retry_after = (cost <= burst).then(|| new_tat - capacity - now);
        Evaluation {
            outcome: Outcome {
                allowed: false,
                remaining: per_t.divide(capacity.saturating_sub(base - now)),
                reset_after: base - now,
                retry_after,
            },
            next: State::Gcra { tat: base },
            expires_at: base,
        }
    }
}

/// A GCRA decision's outcome from whether it was admitted and its
/// `reset_after` alone, the two values a uniform batch's script reply carries
/// per decision: equal to `gcra(...).outcome` for every state and time.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn gcra_outcome(t: u64, burst: u64, per_t: Divisor, cost: u64, allowed: bool, reset_after: u64) -> Outcome {
    let capacity = t.saturating_mul(burst);
    Outcome {
        allowed,
        // Admitted: reset_after = new_tat − now; denied: base − now.
        remaining: per_t.divide(capacity.saturating_sub(reset_after)),
        reset_after,
        // new_tat − capacity − now = (base − now) + cost·T − capacity.
        retry_after: (!allowed && cost <= burst)
            .then(|| reset_after.saturating_add(t.saturating_mul(cost)).saturating_sub(capacity)),
    }
}

fn fixed_window(limit: u64, window: u64, state: Option<State>, now: u64, cost: u64) -> Evaluation {
    let index = now / window;
    let window_end = (index + 1) * window;
    let count = match state {
        Some(State::Window { index: i, current, .. }) if i == index => current,
        _ => 0,
    };
    let allowed = count.saturating_add(cost) <= limit;
    let used = if allowed { count + cost } else { count };
    Evaluation {
        outcome: Outcome {
            allowed,
            remaining: limit.saturating_sub(used),
            reset_after: if used > 0 { window_end - now } else { 0 },
            retry_after: (!allowed && cost <= limit).then(|| window_end - now),
        },
        next: State::Window { index, current: used, previous: 0 },
        expires_at: window_end,
    }
}

fn sliding_window(limit: u64, window: u64, state: Option<State>, now: u64, cost: u64) -> Evaluation {
    let index = now / window;
    let elapsed = now - index * window;
    let (current, previous) = match state {
        Some(State::Window { index: i, current, previous }) if i == index => (current, previous),
        Some(State::Window { index: i, current, .. }) if i + 1 == index => (0, current),
        _ => (0, 0),
    };
    // Exact as long as previous × window < 2^53 (checked by Policy::validate), so Lua agrees.
    let weighted = ceil_div(previous * (window - elapsed), window);
    let used = current + weighted;
    let allowed = used.saturating_add(cost) <= limit;
    let new_current = if allowed { current + cost } else { current };
    let retry_after = if allowed || cost > limit {
        None
    } else if current + cost <= limit {
        // Wait until the previous window's weight has decayed enough.
        let room = limit - current - cost;
        Some(window - room * window / previous - elapsed)
    } else {
        // Wait for the next window, where this window's count becomes the weighted one.
        let room = limit - cost;
        Some((window - elapsed) + (window - room * window / current))
    };
    let reset_after = if new_current > 0 {
        2 * window - elapsed
    } else if previous > 0 {
        window - elapsed
    } else {
        0
    };
    Evaluation {
        outcome: Outcome {
            allowed,
            remaining: limit.saturating_sub(used + if allowed { cost } else { 0 }),
            reset_after,
            retry_after,
        },
        next: State::Window { index, current: new_current, previous },
        expires_at: (index + 2) * window,
    }
}

/// Gives back `cost` units; returns the new state (`None`: nothing left to remember).
pub(crate) fn refund(params: Params, state: Option<State>, now: u64, cost: u64) -> Option<State> {
    match (params, state?) {
        (Params::Gcra { t, .. }, State::Gcra { tat }) => {
            let tat = tat.saturating_sub(t.saturating_mul(cost)).max(now);
            (tat > now).then_some(State::Gcra { tat })
        }
        (Params::FixedWindow { window, .. }, State::Window { index, current, previous }) => {
            (index == now / window).then(|| State::Window { index, current: current.saturating_sub(cost), previous })
        }
        (Params::SlidingWindow { window, .. }, State::Window { index, current, previous }) => {
            let now_index = now / window;
            (index == now_index || index + 1 == now_index).then(|| State::Window {
                index,
                current: current.saturating_sub(cost),
                previous,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000_000;

    /// Runs `costs` at `now`, storing admitted states, as a store would.
    fn run(params: Params, state: &mut Option<State>, now: u64, cost: u64) -> Outcome {
        let e = evaluate(params, *state, now, cost);
        if e.outcome.allowed {
            *state = Some(e.next);
        }
        e.outcome
    }

    #[test]
    fn divisor_divides_exactly() {
        let divisors = [1, 2, 3, 7, 10, 1_000, 3_600_000, 86_400_000_000, (1 << 52) - 1, 1 << 52, u64::MAX];
        for d in divisors.into_iter().chain(1..=300) {
            let div = Divisor::new(d);
            let near = |k: u64| {
                [k.saturating_mul(d).saturating_sub(1), k.saturating_mul(d), k.saturating_mul(d).saturating_add(1)]
            };
            let dividends = (0..=300).chain([(1 << 52) - 1, 1 << 52, u64::MAX]).chain((1..=300).flat_map(near));
            for n in dividends.chain(near(((1u64 << 52) - 1) / d)) {
                assert_eq!(div.divide(n), n / d, "{n} / {d}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn divisor_matches_division(d in 1u64.., small in 0u64..(1 << 52), any: u64, bits in 1u32..=52) {
            let div = Divisor::new(d);
            let scaled = small >> (52 - bits);
            for n in [small, any, scaled] {
                proptest::prop_assert_eq!(div.divide(n), n / d);
            }
            let d = d >> (64 - bits);
            if d > 0 {
                proptest::prop_assert_eq!(Divisor::new(d).divide(small), small / d);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn gcra_outcome_from_reset_matches_gcra(
            t in 1u64..10_000_000,
            burst in 1u64..100_000,
            ahead in 0u64..(1 << 40),
            behind: bool,
            cost in 1u64..200_000,
        ) {
            let tat = if behind { NOW - ahead.min(NOW) } else { NOW + ahead };
            let Params::Gcra { t, burst, per_t } = Params::gcra(t, burst) else { unreachable!() };
            let o = gcra(t, burst, per_t, tat, NOW, cost).outcome;
            proptest::prop_assert_eq!(gcra_outcome(t, burst, per_t, cost, o.allowed, o.reset_after), o);
        }
    }

    #[test]
    fn gcra_burst_then_steady_rate() {
        let p = Params::gcra(1_000, 3);
        let mut s = None;
        for remaining in [2, 1, 0] {
            let o = run(p, &mut s, NOW, 1);
            assert!(o.allowed);
            assert_eq!(o.remaining, remaining);
        }
        let o = run(p, &mut s, NOW, 1);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, Some(1_000));
        assert_eq!(o.reset_after, 3_000);
        assert!(!run(p, &mut s, NOW + 999, 1).allowed);
        let o = run(p, &mut s, NOW + 1_000, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        // Full after 3 intervals.
        let o = evaluate(p, s, NOW + 4_000, 0).outcome;
        assert_eq!((o.remaining, o.reset_after), (3, 0));
    }

    #[test]
    fn gcra_weights_and_impossible_cost() {
        let p = Params::gcra(10, 5);
        let mut s = None;
        assert_eq!(run(p, &mut s, NOW, 3).remaining, 2);
        let o = run(p, &mut s, NOW, 3);
        assert!(!o.allowed);
        assert_eq!(o.remaining, 2);
        assert_eq!(o.retry_after, Some(10));
        let o = run(p, &mut s, NOW, 6);
        assert_eq!((o.allowed, o.retry_after), (false, None));
    }

    #[test]
    fn gcra_refund_restores_units() {
        let p = Params::gcra(10, 5);
        let mut s = None;
        run(p, &mut s, NOW, 5);
        s = refund(p, s, NOW, 2);
        assert_eq!(evaluate(p, s, NOW, 0).outcome.remaining, 2);
        assert_eq!(refund(p, s, NOW, 100), None);
    }

    #[test]
    fn fixed_window_boundaries() {
        let p = Params::FixedWindow { limit: 2, window: 1_000 };
        let start = NOW - NOW % 1_000;
        let mut s = None;
        assert!(run(p, &mut s, start + 998, 1).allowed);
        assert!(run(p, &mut s, start + 999, 1).allowed);
        let o = run(p, &mut s, start + 999, 1);
        assert_eq!((o.allowed, o.retry_after, o.remaining), (false, Some(1), 0));
        // The boundary: a fresh window at once (the known double burst of fixed windows).
        let o = run(p, &mut s, start + 1_000, 1);
        assert_eq!((o.allowed, o.remaining, o.reset_after), (true, 1, 1_000));
    }

    #[test]
    fn sliding_window_weights_previous_window() {
        let p = Params::SlidingWindow { limit: 10, window: 1_000 };
        let start = NOW - NOW % 1_000;
        let mut s = None;
        for _ in 0..10 {
            assert!(run(p, &mut s, start + 500, 1).allowed);
        }
        // Halfway through the next window: 10 × 0.5 = 5 still counted.
        let o = run(p, &mut s, start + 1_500, 1);
        assert_eq!((o.allowed, o.remaining), (true, 4));
        for _ in 0..4 {
            assert!(run(p, &mut s, start + 1_500, 1).allowed);
        }
        let o = run(p, &mut s, start + 1_500, 1);
        assert!(!o.allowed);
        // 5 current + ceil(10 × (1000 − e)/1000) ≤ 9 ⇔ e ≥ 600.
        assert_eq!(o.retry_after, Some(100));
        assert!(!run(p, &mut s, start + 1_599, 1).allowed);
        assert!(run(p, &mut s, start + 1_600, 1).allowed);
    }

    #[test]
    fn sliding_window_retry_into_next_window() {
        let p = Params::SlidingWindow { limit: 4, window: 1_000 };
        let start = NOW - NOW % 1_000;
        let mut s = None;
        assert!(run(p, &mut s, start, 4).allowed);
        let o = run(p, &mut s, start + 200, 1);
        // Next window: ceil(4 × (1000 − e)/1000) ≤ 3 ⇔ e ≥ 250 → 800 + 250.
        assert_eq!(o.retry_after, Some(1_050));
        let mut probe = s;
        assert!(!run(p, &mut probe, start + 200 + 1_049, 1).allowed);
        assert!(run(p, &mut s, start + 200 + 1_050, 1).allowed);
    }
}
