//! The fault suite: the blueprint API on real Redis, PostgreSQL and
//! PgBouncer (brisk-testkit) while those servers are killed, frozen and
//! restarted, while its database pool is exhausted, and under a long churn
//! of cache and rate-limit keys. Each scenario prints its figures and
//! asserts them; `RELIABILITY.md` at the repository root records a run.
//!
//! The suite takes minutes, so it runs only when asked:
//!
//! ```sh
//! BRISK_FAULTS=1 cargo test -p brisk-examples --test faults -- --nocapture
//! BRISK_FAULTS=1 BRISK_SOAK=10m cargo test -p brisk-examples --test faults soak -- --nocapture
//! ```
//!
//! Without `BRISK_FAULTS=1` each scenario prints that it is skipped.
//! Scenarios run one at a time, whatever `--test-threads` says.

#![allow(unreachable_pub)]

#[path = "common/mod.rs"]
mod common;
#[path = "faults/database.rs"]
mod database;
#[path = "faults/harness.rs"]
mod harness;
#[path = "faults/load.rs"]
mod load;
#[path = "faults/redis_down.rs"]
mod redis_down;
#[path = "faults/soak.rs"]
mod soak;

#[test]
fn redis_killed_during_mixed_load() {
    harness::run("redis killed during a mixed load", redis_down::killed_during_mixed_load);
}

#[test]
fn redis_frozen_requests_do_not_hang() {
    harness::run("redis frozen", redis_down::frozen);
}

#[test]
fn database_restarts_lose_no_write() {
    harness::run("postgres and pgbouncer restarted during writes", database::restarts_lose_no_write);
}

#[test]
fn pool_exhaustion_answers_every_writer() {
    harness::run("1,000 writers on a pool of 5", database::pool_exhaustion);
}

#[test]
fn soak_memory_stays_bounded() {
    harness::run("soak", soak::memory_stays_bounded);
}

/// Not a fault: the write path's idempotency key, which the database
/// scenarios rely on. Quick, on SQLite, always run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_makes_one_row() {
    database::idempotency_key_makes_one_row().await;
}
