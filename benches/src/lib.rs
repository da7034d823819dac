//! Shared set-up for brisk's criterion benchmarks (`cargo bench`).
//!
//! Each bench measures a brisk crate and, where one exists, the peer crates a
//! user would otherwise pick, side by side in the same run, so the results
//! read as ratios on whatever machine runs them.

/// A multi-threaded tokio runtime with every driver enabled, for async benches.
///
/// # Panics
///
/// When the operating system refuses the runtime's threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the operating system provides threads for the bench runtime")
}

/// Times each of `sides` (called with the iteration's index) over
/// `per_round` iterations in alternating rounds: the order turns each round,
/// so no side always runs first, and a change in the machine's load lands on
/// both sides of a round. Round 0 warms up and is not returned. Each round's
/// times, in nanoseconds per iteration, in the order of `sides`.
pub fn alternating_rounds<const N: usize>(
    rounds: usize,
    per_round: u32,
    sides: &mut [&mut dyn FnMut(u32); N],
) -> Vec<[f64; N]> {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        let mut this = [0f64; N];
        for k in 0..N {
            let which = (round + k) % N;
            let side = &mut sides[which];
            let start = std::time::Instant::now();
            for i in 0..per_round {
                side(i);
            }
            this[which] = start.elapsed().as_nanos() as f64 / f64::from(per_round);
        }
        if round > 0 {
            times.push(this);
        }
    }
    times
}

/// The median, smallest and largest of `values`.
///
/// # Panics
///
/// When `values` is empty.
pub fn median_range(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}
