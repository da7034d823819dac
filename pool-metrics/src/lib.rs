//! # brisk-pool-metrics
//!
//! Connection-pool gauges and histograms for deadpool pools and PgBouncer, on prometheus-client.
//!
//! Gauges are read at scrape time; checkout wait, use and creation times are histograms; pressure and starvation are signalled.
//!
//! This crate is at its first milestone: the workspace, documentation and
//! tests are in place and the public API is being built; see the CHANGELOG for
//! what has landed.
