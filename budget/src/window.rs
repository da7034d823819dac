//! A latency histogram over a sliding window: a ring of histograms, one per slice
//! of the window, each cleared when its slice comes round again.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Window slices keep two significant figures (1% precision): a slice holds a
/// few seconds of traffic, and 2 figures keep each slice near 5 KB.
const WINDOW_SIGFIG: u8 = 2;

#[derive(Debug)]
pub(crate) struct Window {
    slice_nanos: u64,
    slices: Vec<Slice>,
    /// The slice of the last record, as instants (start, end) and its epoch:
    /// a record within it needs no clock arithmetic.
    current: Option<(Instant, Instant, u64)>,
}

#[derive(Debug)]
struct Slice {
    epoch: u64,
    hist: Histogram<u32>,
}

fn histogram() -> Histogram<u32> {
    Histogram::new(WINDOW_SIGFIG).expect("2 significant figures are within hdrhistogram's 0..=5")
}

impl Window {
    /// A window of `length` made of `slices` slices (at least one).
    pub(crate) fn new(length: Duration, slices: usize) -> Self {
        let slices = slices.max(1);
        let slice_nanos = (u64::try_from(length.as_nanos()).unwrap_or(u64::MAX) / slices as u64).max(1);
        Self {
            slice_nanos,
            slices: (0..slices).map(|_| Slice { epoch: u64::MAX, hist: histogram() }).collect(),
            current: None,
        }
    }

    /// Records `value` at the instant `at`; `origin` is the layer's origin.
    pub(crate) fn record_at(&mut self, at: Instant, origin: Instant, value: u64) {
        let epoch = match self.current {
            Some((start, end, epoch)) if start <= at && at < end => epoch,
            _ => {
                let nanos = u64::try_from(at.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX);
                let epoch = nanos / self.slice_nanos;
                let start = origin.checked_add(Duration::from_nanos(epoch * self.slice_nanos));
                self.current = start
                    .and_then(|start| Some((start, start.checked_add(Duration::from_nanos(self.slice_nanos))?, epoch)));
                epoch
            }
        };
        self.record_in(epoch, value);
    }

    /// Records `value` at `at` (nanoseconds since the layer's origin).
    #[cfg(test)]
    pub(crate) fn record(&mut self, at: u64, value: u64) {
        self.record_in(at / self.slice_nanos, value);
    }

    fn record_in(&mut self, epoch: u64, value: u64) {
        let n = self.slices.len() as u64;
        let slice = &mut self.slices[(epoch % n) as usize];
        if slice.epoch != epoch {
            slice.hist.reset();
            slice.epoch = epoch;
        }
        // `record` grows the histogram as needed (`saturating_record` would clamp
        // to its current range); values are capped by the caller, so it cannot fail.
        let _ = slice.hist.record(value);
    }

    /// The values recorded in the window that ends at `now`.
    pub(crate) fn snapshot(&self, now: u64) -> Histogram<u32> {
        let current = now / self.slice_nanos;
        let n = self.slices.len() as u64;
        let mut merged = histogram();
        for slice in &self.slices {
            if slice.epoch != u64::MAX && slice.epoch <= current && current - slice.epoch < n {
                // Both sides were built with the same settings and auto-resize, so adding cannot fail.
                let _ = merged.add(&slice.hist);
            }
        }
        merged
    }

    /// The memory the counts take, in bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slices.iter().map(|s| s.hist.distinct_values() * std::mem::size_of::<u32>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn old_slices_fall_out_of_the_window() {
        let mut w = Window::new(Duration::from_secs(60), 6);
        w.record(0, 100);
        w.record(15 * S, 200);
        w.record(59 * S, 300);
        assert_eq!(w.snapshot(59 * S).len(), 3);
        // At 65 s the slice [0, 10) has left the window.
        assert_eq!(w.snapshot(65 * S).len(), 2);
        assert_eq!(w.snapshot(65 * S).min(), 200);
        // A new value in the slot of [0,10) replaces what it held.
        w.record(61 * S, 400);
        let snap = w.snapshot(61 * S);
        assert_eq!(snap.len(), 3);
        assert_eq!(snap.max(), w.snapshot(61 * S).highest_equivalent(400));
        assert!(w.snapshot(200 * S).is_empty());
    }
}
