//! Comparing a report with a saved baseline.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{BudgetReport, RouteReport};
use crate::budget::Percentile;

/// How much worse than the baseline a report may be.
///
/// ```
/// use brisk_budget::RegressionPolicy;
/// // Fail when a percentile grows by more than 10% or a request makes one more query.
/// let policy = RegressionPolicy::default().latency_increase(0.10).counter_increase(0);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct RegressionPolicy {
    latency_increase: f64,
    payload_increase: f64,
    counter_increase: u64,
    min_samples: u64,
}

impl Default for RegressionPolicy {
    /// p50/p95/p99 may grow by 10%, the largest payload by 10%, counters not at all;
    /// routes with fewer than 100 samples on either side are not compared.
    fn default() -> Self {
        Self { latency_increase: 0.10, payload_increase: 0.10, counter_increase: 0, min_samples: 100 }
    }
}

impl RegressionPolicy {
    /// The fraction (`0.10` = 10%) by which p50, p95 or p99 may grow.
    pub fn latency_increase(mut self, fraction: f64) -> Self {
        self.latency_increase = fraction.max(0.0);
        self
    }

    /// The fraction by which the largest payload may grow.
    pub fn payload_increase(mut self, fraction: f64) -> Self {
        self.payload_increase = fraction.max(0.0);
        self
    }

    /// How much a counter's per-request maximum (`db_queries`) may grow.
    pub fn counter_increase(mut self, by: u64) -> Self {
        self.counter_increase = by;
        self
    }

    /// Routes with fewer samples than this, in the report or the baseline, are
    /// not compared.
    pub fn min_samples(mut self, samples: u64) -> Self {
        self.min_samples = samples;
        self
    }
}

/// One measure that got worse than the policy allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Regression {
    /// The route.
    pub route: String,
    /// `p50`, `p95`, `p99`, `max_payload` or a counter's name.
    pub measure: String,
    /// The baseline's value (µs, bytes or count).
    pub baseline: u64,
    /// This report's value.
    pub current: u64,
}

impl fmt::Display for Regression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let change = if self.baseline == 0 {
            "from zero".to_owned()
        } else {
            format!("{:+.1}%", (self.current as f64 / self.baseline as f64 - 1.0) * 100.0)
        };
        write!(f, "{}: {} went from {} to {} ({change})", self.route, self.measure, self.baseline, self.current)
    }
}

/// The outcome of [`BudgetReport::compare`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegressionReport {
    /// Routes compared (present with enough samples in both reports).
    pub compared: Vec<String>,
    /// Routes not compared, for lack of samples or of a baseline.
    pub skipped: Vec<String>,
    /// What got worse.
    pub regressions: Vec<Regression>,
}

impl RegressionReport {
    /// Whether nothing regressed.
    pub fn passed(&self) -> bool {
        self.regressions.is_empty()
    }
}

impl fmt::Display for RegressionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} regression(s) over {} compared route(s) ({} skipped)",
            self.regressions.len(),
            self.compared.len(),
            self.skipped.len()
        )?;
        for r in &self.regressions {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}

impl BudgetReport {
    /// Compares this report with `baseline` (e.g. one saved by a previous CI run
    /// with [`BudgetReport::to_json`]).
    pub fn compare(&self, baseline: &BudgetReport, policy: &RegressionPolicy) -> RegressionReport {
        let mut out = RegressionReport { compared: Vec::new(), skipped: Vec::new(), regressions: Vec::new() };
        for current in &self.routes {
            let Some(base) = baseline.route(&current.route) else {
                out.skipped.push(current.route.clone());
                continue;
            };
            if current.count < policy.min_samples.max(1) || base.count < policy.min_samples.max(1) {
                out.skipped.push(current.route.clone());
                continue;
            }
            out.compared.push(current.route.clone());
            regressions(current, base, policy, &mut out.regressions);
        }
        out
    }

    /// Asserts that nothing regressed against `baseline`.
    ///
    /// # Panics
    ///
    /// When a measure regressed beyond `policy`; the message lists each.
    #[track_caller]
    pub fn assert_no_regression(&self, baseline: &BudgetReport, policy: &RegressionPolicy) {
        let report = self.compare(baseline, policy);
        assert!(report.passed(), "{report}");
    }
}

fn grew(base: u64, current: u64, fraction: f64) -> bool {
    current as f64 > base as f64 * (1.0 + fraction)
}

fn regressions(current: &RouteReport, base: &RouteReport, policy: &RegressionPolicy, out: &mut Vec<Regression>) {
    let mut push = |measure: &str, baseline: u64, now: u64| {
        out.push(Regression { route: current.route.clone(), measure: measure.to_owned(), baseline, current: now });
    };
    if let (Some(now), Some(then)) = (current.latency, base.latency) {
        for p in Percentile::ALL {
            let (b, c) = (then.percentile_us(p), now.percentile_us(p));
            if grew(b, c, policy.latency_increase) {
                push(p.name(), b, c);
            }
        }
    }
    if grew(base.payload_max_bytes, current.payload_max_bytes, policy.payload_increase) {
        push("max_payload", base.payload_max_bytes, current.payload_max_bytes);
    }
    for (name, now) in &current.counters_max {
        let then = base.counters_max.get(name).copied().unwrap_or(0);
        if *now > then.saturating_add(policy.counter_increase) {
            push(name, then, *now);
        }
    }
}
