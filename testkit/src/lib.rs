//! # brisk-testkit
//!
//! Real servers for brisk's integration tests: a single Redis, a Redis Cluster
//! of three masters, PostgreSQL with a fresh database, and PgBouncer in
//! transaction mode in front of it. Each is a value that stops its server when
//! it is dropped — also when the test panics.
//!
//! ```no_run
//! # async fn example() {
//! // Skips the test with the reason when no Redis can be had here,
//! // and fails it instead when `CI` is set.
//! let redis = brisk_testkit::require!(brisk_testkit::redis().await);
//! let client = redis::Client::open(redis.url()).unwrap();
//! # }
//! ```
//!
//! ## Where the servers come from
//!
//! Each function tries, in order:
//!
//! 1. **The environment**: `REDIS_URL`, `REDIS_CLUSTER_URLS` (comma-separated
//!    node URLs) or `DATABASE_URL`. The server is shared with other tests, so
//!    tests must use their own key prefixes ([`unique_name`]); `postgres()`
//!    still creates (and later drops) a fresh database on it.
//! 2. **testcontainers**, when a Docker engine answers on `DOCKER_HOST` or
//!    the default socket. If a container cannot be started (no image, no
//!    network), the next source is tried.
//! 3. **Server binaries on `PATH`**: `redis-server`, PostgreSQL's `initdb` and
//!    `postgres` (found through `pg_config --bindir` when not on `PATH`) and
//!    `pgbouncer`, started on free loopback ports in a temporary directory.
//!    PostgreSQL and PgBouncer refuse to run as root, so when the tests run as
//!    root they are started as the `postgres` user.
//! 4. **None**: [`require!`] prints why and what to install, and skips the
//!    test — except when the `CI` environment variable is set, where it fails.
//!
//! Servers bind `127.0.0.1` only. A locally started server also receives a
//! signal when the thread that started it exits (`setpriv --pdeathsig`), so
//! a test process that is killed leaves no server behind. Start servers from
//! the test's own task, not from `spawn_blocking`.
//!
//! ## Faults
//!
//! Locally started servers can be killed, started again on the same port, frozen
//! (`SIGSTOP`) and thawed, for failure tests: see [`Redis::kill`],
//! [`Redis::freeze`], [`Postgres::restart`], [`PgBouncer::stop`] and
//! [`PgBouncer::restart`].

mod docker;
mod error;
mod postgres;
mod process;
mod redis_server;
mod sources;

pub use crate::error::{Error, skip_or_fail};
pub use crate::postgres::{PgBouncer, PgBouncerOptions, PoolMode, Postgres, pgbouncer, pgbouncer_with, postgres};
pub use crate::redis_server::{Redis, RedisCluster, redis, redis_cluster};

/// Where a test server came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A URL from the environment (`REDIS_URL`, `REDIS_CLUSTER_URLS`, `DATABASE_URL`).
    Environment,
    /// A container started through testcontainers.
    Container,
    /// A server binary on `PATH`, started in a temporary directory.
    LocalBinary,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Environment => "environment",
            Source::Container => "container",
            Source::LocalBinary => "local binary",
        })
    }
}

/// A name no other test in any process on this machine is using at the same
/// time: `prefix` followed by the process id, a counter and random digits.
/// Lower-case ASCII, so it is valid as a Redis key prefix and a PostgreSQL
/// identifier.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}{}_{n}_{nanos:09}", std::process::id())
}

/// Unwraps a test server, or skips the test when none is available here.
///
/// On [`Error`]s that mean "no source could provide this server", prints the
/// reason and what to install and returns from the test — unless `CI` is set,
/// in which case the test fails. Any other error (a server that was found but
/// did not start) always fails the test.
///
/// The test function must return `()` (or another type with a `Default`).
#[macro_export]
macro_rules! require {
    ($server:expr) => {
        match $server {
            ::core::result::Result::Ok(server) => server,
            ::core::result::Result::Err(err) => {
                $crate::skip_or_fail(&err);
                return ::core::default::Default::default();
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_identifiers() {
        let a = unique_name("brisk_");
        let b = unique_name("brisk_");
        assert_ne!(a, b);
        assert!(a.starts_with("brisk_"));
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
}
