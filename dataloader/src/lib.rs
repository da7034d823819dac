//! # brisk-dataloader
//!
//! A DataLoader that batches and de-duplicates loads.
//!
//! Loads made in one tick are gathered into batches of bounded size; a key requested twice is fetched once; every caller gets an answer, even when the batch function fails.
//!
//! This crate is at its first milestone: the workspace, documentation and
//! tests are in place and the public API is being built; see the CHANGELOG for
//! what has landed.
