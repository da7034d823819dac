//! Recording what a load saw: each request's kind, status, latency and when
//! it started, and the figures a scenario prints and asserts.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Status recorded for a request the service did not answer in time.
pub const NO_ANSWER: u16 = 0;

/// One request's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub kind: &'static str,
    pub status: u16,
    /// From the start of the load to the request's start.
    pub at: Duration,
    pub latency: Duration,
}

/// Every outcome of a load, from many tasks.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    outcomes: Mutex<Vec<Outcome>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self { start: Instant::now(), outcomes: Mutex::new(Vec::new()) }
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records a request that started at `started` and ended now.
    pub fn record(&self, kind: &'static str, status: u16, started: Instant) {
        let outcome = Outcome { kind, status, at: started.duration_since(self.start), latency: started.elapsed() };
        self.outcomes.lock().expect("no recorder panics while holding the lock").push(outcome);
    }

    /// The outcomes so far that `keep` selects.
    pub fn select(&self, keep: impl Fn(&Outcome) -> bool) -> Vec<Outcome> {
        self.outcomes.lock().expect("no recorder panics while holding the lock").iter().copied().filter(keep).collect()
    }
}

/// Counts by status and latency percentiles of some outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub requests: usize,
    pub by_status: BTreeMap<u16, usize>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn of(outcomes: &[Outcome]) -> Self {
        let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        latencies.sort_unstable();
        let at = |q: f64| -> Duration {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((latencies.len() as f64) * q).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1]
        };
        let mut by_status = BTreeMap::new();
        for outcome in outcomes {
            *by_status.entry(outcome.status).or_insert(0) += 1;
        }
        Self {
            requests: outcomes.len(),
            by_status,
            p50: at(0.50),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }

    /// Requests answered 5xx, or not answered at all.
    pub fn server_errors(&self) -> usize {
        self.by_status.iter().filter(|(status, _)| **status >= 500 || **status == NO_ANSWER).map(|(_, n)| n).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>7} requests, status ", self.requests)?;
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(status, n)| if *status == NO_ANSWER { format!("no-answer×{n}") } else { format!("{status}×{n}") })
            .collect();
        write!(
            f,
            "{}; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            statuses.join(" "),
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Least-squares slope of `(seconds, bytes)` samples, in bytes per second.
pub fn slope(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.0 - mean_x) * (s.1 - mean_y)).sum();
    let var: f64 = samples.iter().map(|s| (s.0 - mean_x).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_errors_are_counted() {
        let outcomes: Vec<Outcome> = (1..=100)
            .map(|i| Outcome {
                kind: "read",
                status: if i == 100 {
                    503
                } else if i == 99 {
                    NO_ANSWER
                } else {
                    200
                },
                at: Duration::ZERO,
                latency: Duration::from_millis(i),
            })
            .collect();
        let summary = Summary::of(&outcomes);
        assert_eq!(summary.requests, 100);
        assert_eq!(summary.p50, Duration::from_millis(50));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
        assert_eq!(summary.server_errors(), 2);
    }

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 3.0 * f64::from(i) + 7.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 5.0)).collect();
        assert_eq!(slope(&flat), 0.0);
    }
}
