//! # brisk-ratelimit
//!
//! A rate limiter for fleets of `tower` services: GCRA (default),
//! sliding-window and fixed-window counters, each decided atomically by one
//! Lua script on Redis (single server or Redis Cluster) that reads Redis
//! `TIME`, or in process memory; several policies per request decided
//! together, all-or-nothing; a tower layer answering `429` with the IETF
//! `RateLimit-Policy` / `RateLimit` fields and an RFC 9457 problem body.
//! On Redis, decisions that arrive while the store's calls are busy share
//! one script call, each still atomic and all-or-nothing on its own (see
//! [`store::RedisStore`], feature `redis`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use brisk_ratelimit::{clock::FakeClock, Policy, Quota, RateLimiter};
//! use std::num::NonZeroU32;
//!
//! let limiter = RateLimiter::builder("rl:api:")
//!     .policy(Policy::new("api", Quota::per_second(NonZeroU32::new(2).unwrap())))
//!     .clock(FakeClock::new()) // time stands still in this example
//!     .build()
//!     .unwrap();
//! assert!(limiter.check("198.51.100.1").await.unwrap().is_allowed());
//! assert!(limiter.check("198.51.100.1").await.unwrap().is_allowed());
//! let third = limiter.check("198.51.100.1").await.unwrap();
//! assert!(!third.is_allowed());
//! assert_eq!(third.retry_after(), Some(std::time::Duration::from_millis(500)));
//! # }
//! ```
//!
//! Where no I/O is needed — always on the in-memory store —
//! [`RateLimiter::check_now`] answers without a future, for code that cannot
//! wait (a tonic interceptor) and as the cheapest check.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `tower` | yes | [`RateLimitLayer`], key extractors, `RateLimit` headers, problem bodies (tower, http, ipnet, serde_json) |
//! | `axum` | no | peer address from axum's `ConnectInfo`, the route template from `MatchedPath` |
//! | `redis` | no | [`store::RedisStore`] for a single Redis or Redis Cluster (redis 1.x, tokio) |
//! | `prometheus` | no | `RateLimiter::register` with `prometheus-client` |
//!
//! Without features the crate is the limiter itself: the algorithms, the
//! in-memory store, hashbrown, parking_lot, quanta, thiserror, tracing and
//! xxhash-rust.
//!
//! ## Semantics
//!
//! See [`Quota`] for what `limit`, `period` and `burst` mean, and the
//! [`algorithm`](crate::Algorithm) docs for each algorithm's `remaining`,
//! `reset_after` and `retry_after`. GCRA answers as redis-cell's
//! `CL.THROTTLE` and governor do: a `Quota` with burst `B` is
//! `CL.THROTTLE key (B-1) limit period` and governor's `max_burst = B`.

pub mod clock;
pub mod store;

mod algorithm;
mod blocked;
mod breaker;
mod decision;
mod error;
mod limiter;
mod metrics;
mod quota;

#[cfg(feature = "tower")]
pub mod key;
#[cfg(feature = "tower")]
mod layer;

#[cfg(feature = "tower")]
#[doc(hidden)]
pub mod fuzzing;

pub use decision::{Decision, PolicyDecision, Source};
pub use error::{BuildError, Error, ErrorKind};
pub use limiter::{RateLimiter, RateLimiterBuilder};
pub use quota::{Algorithm, OnStoreError, Policy, Quota, QuotaError};

#[cfg(feature = "tower")]
pub use layer::{
    HeaderStyle, MissingKey, RateLimit, RateLimitBody, RateLimitLayer, RequestCost, ResponseFuture, UnitCost,
};
