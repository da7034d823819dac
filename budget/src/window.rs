//! A route's latency histograms over the whole run and over a sliding window,
//! with each latency recorded once.
//!
//! A request's latency goes into one histogram: the live slice, the current
//! slice of the window at the run's precision. When the slice ends (or a report
//! reads the histograms), the live slice is folded into the whole-run histogram
//! and, at the window's precision, into the window's ring of slices, then
//! cleared. The histograms' buckets nest (each bucket of a coarser histogram is
//! a union of buckets of a finer one), so folding counts every latency in the
//! bucket it would have been recorded in directly.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Window slices keep two significant figures (1% precision): a slice holds a
/// few seconds of traffic, and 2 figures keep each slice near 5 KB.
const WINDOW_SIGFIG: u8 = 2;

#[derive(Debug)]
pub(crate) struct Latencies {
    /// Every latency folded so far; those in `live` are not in it yet.
    run: Histogram<u64>,
    /// Latencies of the live slice not folded yet, at the run's precision. A
    /// slice holds seconds of traffic: it is folded before a count could pass
    /// `u32::MAX`.
    live: Histogram<u32>,
    /// The epoch (slice number since the layer's origin) of the live slice;
    /// `None` before the first record.
    live_epoch: Option<u64>,
    /// The live slice's bounds (nanoseconds since the layer's origin), so a
    /// record within it needs no division; `None` before the first record.
    live_bounds: Option<(u64, u64)>,
    /// Records the live slice takes before it is folded.
    live_limit: u64,
    slice_nanos: u64,
    ring: Vec<Slice>,
    window_sigfig: u8,
}

/// A slice of the window that has been folded (or recorded late).
#[derive(Debug)]
struct Slice {
    epoch: u64,
    hist: Histogram<u32>,
}

fn histogram<T: hdrhistogram::Counter>(sigfig: u8) -> Histogram<T> {
    Histogram::new(sigfig.clamp(1, 5)).expect("1 to 5 significant figures are within hdrhistogram's range")
}

impl Latencies {
    /// Histograms at `sigfig` significant figures (the window at 2, or fewer
    /// if `sigfig` is lower), the window `length` long in `slices` slices (at
    /// least one).
    pub(crate) fn new(sigfig: u8, length: Duration, slices: usize) -> Self {
        let slices = slices.max(1);
        let slice_nanos = (u64::try_from(length.as_nanos()).unwrap_or(u64::MAX) / slices as u64).max(1);
        let window_sigfig = WINDOW_SIGFIG.min(sigfig);
        Self {
            run: histogram(sigfig),
            live: histogram(sigfig),
            live_epoch: None,
            live_bounds: None,
            live_limit: u64::from(u32::MAX),
            slice_nanos,
            ring: (0..slices).map(|_| Slice { epoch: u64::MAX, hist: histogram(window_sigfig) }).collect(),
            window_sigfig,
        }
    }

    /// Records `micros` taken by a request that ended `at` nanoseconds after
    /// the layer's origin. Values must be capped by the caller (the
    /// histograms grow to hold them).
    #[inline]
    pub(crate) fn record(&mut self, at: u64, micros: u64) {
        let within = match self.live_bounds {
            Some((start, end)) => start <= at && at < end,
            None => false,
        };
        if (within && self.live.len() < self.live_limit) || self.enter_slice(at, micros) {
            // `record` grows the auto-resizing histogram; it fails only on a
            // resize beyond `usize`, which capped values do not reach.
            let _ = self.live.record(micros);
        }
    }

    /// Makes the slice of `at` the live one, or records `micros` there
    /// directly when that slice is older than the live one (a request that
    /// ended before another one rolled the slice over took the lock after it).
    /// Returns whether `micros` is still to be recorded in the live slice.
    #[cold]
    fn enter_slice(&mut self, at: u64, micros: u64) -> bool {
        let epoch = at / self.slice_nanos;
        match self.live_epoch {
            Some(live) if epoch < live => {
                let _ = self.run.record(micros);
                if live - epoch < self.ring.len() as u64 {
                    let _ = slice_for(&mut self.ring, epoch).record(micros);
                }
                false
            }
            Some(live) if epoch == live => {
                // The live slice is full, or its end is past `u64::MAX`.
                if self.live.len() >= self.live_limit {
                    self.fold();
                }
                true
            }
            _ => {
                self.fold();
                self.live_epoch = Some(epoch);
                let start = epoch * self.slice_nanos;
                self.live_bounds = start.checked_add(self.slice_nanos).map(|end| (start, end));
                true
            }
        }
    }

    /// Moves the live slice's latencies into the whole run and the window.
    fn fold(&mut self) {
        let Some(epoch) = self.live_epoch else {
            return;
        };
        if self.live.is_empty() {
            return;
        }
        let slice = slice_for(&mut self.ring, epoch);
        for value in self.live.iter_recorded() {
            // Each value is the top of a bucket of the live slice: it falls in
            // the bucket of the run, and of the coarser window, that holds
            // every value of that bucket.
            let _ = slice.record_n(value.value_iterated_to(), value.count_at_value());
            let _ = self.run.record_n(value.value_iterated_to(), u64::from(value.count_at_value()));
        }
        self.live.reset();
    }

    /// Every latency recorded, over the whole run.
    pub(crate) fn run(&mut self) -> &Histogram<u64> {
        self.fold();
        &self.run
    }

    /// The latencies recorded in the window that ends at `now` (nanoseconds
    /// since the layer's origin), at the window's precision.
    pub(crate) fn window(&mut self, now: u64) -> Histogram<u32> {
        self.fold();
        let current = now / self.slice_nanos;
        let n = self.ring.len() as u64;
        let mut merged = histogram(self.window_sigfig);
        for slice in &self.ring {
            if slice.epoch != u64::MAX && slice.epoch <= current && current - slice.epoch < n {
                // Both sides were built with the same settings and auto-resize, so adding cannot fail.
                let _ = merged.add(&slice.hist);
            }
        }
        merged
    }

    /// The memory the counts take, in bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.run.distinct_values() * std::mem::size_of::<u64>()
            + self.live.distinct_values() * std::mem::size_of::<u32>()
            + self.ring.iter().map(|s| s.hist.distinct_values() * std::mem::size_of::<u32>()).sum::<usize>()
    }
}

/// The ring's slice of `epoch`, cleared if it held an older one.
fn slice_for(ring: &mut [Slice], epoch: u64) -> &mut Histogram<u32> {
    let n = ring.len() as u64;
    let slice = &mut ring[(epoch % n) as usize];
    if slice.epoch != epoch {
        slice.hist.reset();
        slice.epoch = epoch;
    }
    &mut slice.hist
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: u64 = 1_000_000_000;

    /// `Latencies` at 3 significant figures over a 60 s window in 6 slices,
    /// with a record at `at` nanoseconds after the origin.
    struct Fixture {
        latencies: Latencies,
    }

    impl Fixture {
        fn new() -> Self {
            Self { latencies: Latencies::new(3, Duration::from_secs(60), 6) }
        }

        fn record(&mut self, at: u64, micros: u64) {
            self.latencies.record(at, micros);
        }
    }

    #[test]
    fn old_slices_fall_out_of_the_window() {
        let mut f = Fixture::new();
        f.record(0, 100);
        f.record(15 * S, 200);
        f.record(59 * S, 300);
        assert_eq!(f.latencies.window(59 * S).len(), 3);
        // At 65 s the slice [0, 10) has left the window.
        assert_eq!(f.latencies.window(65 * S).len(), 2);
        assert_eq!(f.latencies.window(65 * S).min(), 200);
        // A new value in the slot of [0,10) replaces what it held.
        f.record(61 * S, 400);
        let snap = f.latencies.window(61 * S);
        assert_eq!(snap.len(), 3);
        assert_eq!(snap.max(), snap.highest_equivalent(400));
        assert!(f.latencies.window(200 * S).is_empty());
        assert_eq!(f.latencies.run().len(), 4, "the run keeps every value");
    }

    #[test]
    fn a_late_record_counts_in_its_own_slice_and_in_the_run() {
        let mut f = Fixture::new();
        f.record(25 * S, 1_000);
        // Another request rolled the live slice over to [30, 40) first.
        f.record(31 * S, 2_000);
        f.record(29 * S, 3_000);
        // Too old for the window (its slice left it), still in the run.
        f.record(65 * S, 4_000);
        f.record(5 * S, 5_000);
        assert_eq!(f.latencies.run().len(), 5);
        let window = f.latencies.window(65 * S);
        assert_eq!(window.len(), 4, "[20, 30) to [60, 70)");
        assert_eq!(window.count_between(3_000, 3_000), 1);
        assert_eq!(f.latencies.window(85 * S).len(), 2, "[30, 40) left at 90 s, [20, 30) at 80 s");
    }

    #[test]
    fn a_full_live_slice_is_folded_and_keeps_recording() {
        let mut f = Fixture::new();
        f.latencies.live_limit = 3;
        for i in 0..10 {
            f.record(i * 1_000, 100 + i);
        }
        assert!(f.latencies.live.len() <= 3);
        assert_eq!(f.latencies.run().len(), 10);
        assert_eq!(f.latencies.window(S).len(), 10);
    }

    #[test]
    fn reading_between_records_of_one_slice_counts_each_value_once() {
        let mut f = Fixture::new();
        f.record(S, 10);
        assert_eq!(f.latencies.run().len(), 1);
        assert_eq!(f.latencies.window(S).len(), 1);
        f.record(2 * S, 20);
        assert_eq!(f.latencies.run().len(), 2);
        assert_eq!(f.latencies.window(2 * S).len(), 2);
    }

    /// Percentiles as the report reads them.
    fn percentiles<T: hdrhistogram::Counter>(h: &Histogram<T>) -> Vec<u64> {
        let mut out: Vec<u64> = [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
            .iter()
            .map(|q| h.lowest_equivalent(h.value_at_quantile(*q)))
            .collect();
        out.extend([h.len(), h.lowest_equivalent(h.max()), h.min()]);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Folding gives the histograms that recording every value in each would.
        #[test]
        fn folding_equals_recording_every_value(
            steps in prop::collection::vec(
                (
                    0u64..25 * S,
                    prop_oneof![0u64..5_000, 0u64..3_600_000_000],
                    any::<bool>(),
                    prop::bool::weighted(0.1),
                ),
                1..200,
            ),
            sigfig in 1u8..=3,
            limit in 1u64..50,
        ) {
            let mut latencies = Latencies::new(sigfig, Duration::from_secs(60), 6);
            latencies.live_limit = limit;
            let mut run = histogram::<u64>(sigfig);
            let mut records: Vec<(u64, u64)> = Vec::new();
            let mut at = 0u64;
            for (step, micros, late, read) in steps {
                // Mostly forward in time; now and then a request that ended
                // up to 80 s earlier than the last one.
                let when = if late { at.saturating_sub(step * 4 % (80 * S)) } else { at += step; at };
                latencies.record(when, micros);
                run.record(micros).unwrap();
                records.push((when, micros));
                prop_assert_eq!(latencies.run.len() + latencies.live.len(), run.len());
                // A report in between folds the live slice early.
                if read {
                    prop_assert_eq!(percentiles(latencies.run()), percentiles(&run));
                }
            }
            prop_assert_eq!(percentiles(latencies.run()), percentiles(&run));
            // The window at `at` holds the values whose slice is one of its
            // last six, of those recorded while their slice was current.
            let slice = 10 * S;
            let mut window = histogram::<u32>(WINDOW_SIGFIG.min(sigfig));
            let mut newest = 0;
            for (when, micros) in &records {
                newest = newest.max(when / slice);
                if when / slice + 6 > newest && when / slice + 6 > at / slice {
                    window.record(*micros).unwrap();
                }
            }
            prop_assert_eq!(percentiles(&latencies.window(at)), percentiles(&window));
        }
    }
}
