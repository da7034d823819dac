//! The blueprint API: an axum service shaped like a production API platform,
//! built on the brisk crates as a user would build it.
//!
//! Run it with `cargo run --example blueprint_api` from the repository root.
//! This first milestone serves the liveness probe; the routes, database,
//! caching, rate limiting and metrics arrive with the crates they show.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = blueprint::Config::from_env().expect("valid configuration");
//! let app: axum::Router = blueprint::app(&config);
//! # let _ = app;
//! # }
//! ```

mod config;

use axum::Json;
use axum::Router;
use axum::routing::get;

pub use crate::config::{Config, ConfigError};

/// The service's router.
pub fn app(_config: &Config) -> Router {
    Router::new().route("/health/live", get(live))
}

/// Liveness: the process is up and serving. Says nothing about dependencies
/// (that is readiness).
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn liveness_answers_ok() {
        let app = app(&Config::default());
        let response = app.oneshot(Request::get("/health/live").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"status":"ok"}"#);
    }
}
