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
