//! # brisk-cache
//!
//! A two-tier cache — moka in process (L1), Redis shared (L2) — and a tower HTTP response cache.
//!
//! Pattern and tag invalidation reaches every instance through generation counters and a Redis bus; concurrent misses are merged; a cache fault never fails a request.
//!
//! This crate is at its first milestone: the workspace, documentation and
//! tests are in place and the public API is being built; see the CHANGELOG for
//! what has landed.
