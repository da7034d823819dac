//! # brisk-budget
//!
//! Per-route performance budgets (latency percentiles, payload size, DB queries) checked at run time and in tests and CI.
//!
//! A tower layer records HDR histograms per route template and RED metrics; a report asserts the budgets.
//!
//! This crate is at its first milestone: the workspace, documentation and
//! tests are in place and the public API is being built; see the CHANGELOG for
//! what has landed.
