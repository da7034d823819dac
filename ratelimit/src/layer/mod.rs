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
//!
//! # When a request is counted
//!
//! When the limiter can decide without I/O (the in-memory store, or a key
//! its blocked-key cache knows), [`RateLimit`] decides in `call`, as
//! [`RateLimiter::check_n_now`](crate::RateLimiter::check_n_now) does: a
//! response future dropped unpolled has still used its quota. Otherwise the
//! store is asked when the response future is first polled.

mod body;
mod future;
#[allow(clippy::module_inception)] // the tower-http layout: layer.rs, service.rs, future.rs
mod layer;
pub(crate) mod response;
mod service;

pub use body::RateLimitBody;
pub use future::ResponseFuture;
pub use layer::{HeaderStyle, MissingKey, RateLimitLayer, RequestCost, UnitCost};
pub use service::RateLimit;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::num::NonZeroU32;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::clock::FakeClock;
    use crate::{Policy, Quota, RateLimiter};

    async fn echo(_: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
    }

    /// A plain tower/hyper stack: the peer address is a `SocketAddr` extension.
    #[tokio::test]
    async fn plain_tower_service_with_socket_addr_extension() {
        let limiter = RateLimiter::builder("rl:unit:")
            .policy(Policy::new("p", Quota::per_minute(NonZeroU32::MIN)))
            .clock(FakeClock::new())
            .build()
            .unwrap();
        let svc = ServiceBuilder::new().layer(RateLimitLayer::new(limiter)).service_fn(echo);
        let request = || {
            let mut r = Request::new(());
            r.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 9], 1234)));
            r
        };
        let ok = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["ratelimit"], r#""p";r=0;t=60"#);
        assert_eq!(ok.into_body().collect().await.unwrap().to_bytes(), "hello");
        let refused = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["retry-after"], "60");
        let body = refused.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["violated-policies"], serde_json::json!(["p"]));
        // Without any peer address, the default refuses loudly rather than not limiting.
        let missing = ServiceBuilder::new()
            .layer(RateLimitLayer::new(
                RateLimiter::builder("rl:unit2:")
                    .policy(Policy::new("p", Quota::per_minute(NonZeroU32::MIN)))
                    .build()
                    .unwrap(),
            ))
            .service(service_fn(echo))
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
