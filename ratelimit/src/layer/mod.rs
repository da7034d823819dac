//! The tower middleware: [`RateLimitLayer`] → [`RateLimit<S>`] → [`ResponseFuture`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use axum::{Router, routing::post, extract::connect_info::MockConnectInfo};
//! use brisk_ratelimit::key::ExtensionKey;
//! use brisk_ratelimit::{Policy, Quota, RateLimitLayer, RateLimiter};
//! use std::{net::SocketAddr, num::NonZeroU32, time::Duration};
//! use tower::ServiceExt;
//!
//! #[derive(Clone)]
//! struct User { id: String }
//! let nz = |n| NonZeroU32::new(n).unwrap();
//!
//! // `rl:api:` 1000 per 15 minutes per client IP (the default key).
//! let api = RateLimiter::builder("rl:api:")
//!     .policy(Policy::new("api", Quota::per_period(nz(1000), Duration::from_secs(15 * 60)).unwrap()))
//!     .build()
//!     .unwrap();
//! // `rl:deploy:` 10 per hour per user, the user put in the extensions by an auth layer.
//! let deploy = RateLimiter::builder("rl:deploy:")
//!     .policy(Policy::new("deploy", Quota::per_hour(nz(10))))
//!     .build()
//!     .unwrap();
//!
//! let app = Router::new()
//!     .route("/deploy", post(|| async { "deployed" }))
//!     .layer(RateLimitLayer::new(deploy).key(ExtensionKey::new(|u: &User| u.id.clone())))
//!     .layer(axum::Extension(User { id: "u-1".into() })) // stands in for the auth layer
//!     .layer(RateLimitLayer::new(api))
//!     .layer(MockConnectInfo(SocketAddr::from(([203, 0, 113, 7], 40000))));
//!
//! let request = http::Request::post("/deploy").body(axum::body::Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! let fields: Vec<_> = response.headers().get_all("ratelimit").iter().collect();
//! assert_eq!(fields, [r#""deploy";r=9;t=360"#, r#""api";r=999;t=1"#]);
//! # }
//! ```
//!
//! # Responses
//!
//! - Admitted: the inner response, with `RateLimit-Policy: "name";q=<limit>;w=<period s>`
//!   and `RateLimit: "name";r=<remaining>;t=<reset s>` for every policy
//!   (draft-ietf-httpapi-ratelimit-headers-10; stacked layers append their
//!   own). `t` is the time until the quota is whole again, rounded up.
//! - Refused: `429 Too Many Requests`, `Retry-After: <s>` (rounded up), the
//!   same fields — for a refusing policy `t` is its retry time — and an RFC 9457
//!   `application/problem+json` body of type
//!   `https://iana.org/assignments/http-problem-types#quota-exceeded` with
//!   `violated-policies`.
//! - Store unavailable with a [`FailClosed`](crate::OnStoreError::FailClosed)
//!   policy: `503 Service Unavailable` with a problem body.
//! - No key (e.g. no peer address): `500` with a problem body, or the request
//!   passes unlimited with [`MissingKey::Allow`].
//! - Optional legacy fields ([`HeaderStyle::IetfAndLegacy`]):
//!   `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (Unix
//!   seconds) of the policy with the fewest units left.
//!
//! Policies that failed open (store down) are left out of the fields: their state is unknown.

mod body;
mod future;
#[allow(clippy::module_inception)] // the tower-http layout: layer.rs, service.rs, future.rs
mod layer;
mod response;
mod service;

pub use body::RateLimitBody;
pub use future::ResponseFuture;
pub use layer::{HeaderStyle, MissingKey, RateLimitLayer, RequestCost, UnitCost};
pub use service::RateLimit;
