//! The tower layer: measures each request against its route's budget.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use brisk_budget::{BudgetLayer, Budgets, RouteBudget};
//! use http::Method;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let budgets = Budgets::new().route(
//!     Method::GET,
//!     "/api/blueprints/{id}",
//!     RouteBudget::new().p95(Duration::from_millis(50)).db_queries(1),
//! );
//! let budget = BudgetLayer::new(budgets);
//! let app = Router::new()
//!     .route(
//!         "/api/blueprints/{id}",
//!         get(|| async {
//!             brisk_budget::record("db_queries", 1);
//!             "blueprint"
//!         }),
//!     )
//!     // `Router::layer` runs the layer after routing, so it sees `MatchedPath`.
//!     .layer(budget.clone());
//!
//! let response = app.oneshot(http::Request::get("/api/blueprints/7").body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! // The request is recorded when its body has been sent (here: dropped).
//! drop(response);
//! let report = budget.report();
//! assert_eq!(report.route("GET /api/blueprints/{id}").unwrap().count, 1);
//! # }
//! ```
//!
//! # What is measured
//!
//! - **Route**: a [`RouteTemplate`] request extension if present, else axum's
//!   `MatchedPath` (feature `axum`), else the fallback label (`unmatched` by
//!   default). Raw paths are never labels, and past
//!   [`max_routes`](BudgetLayerBuilder::max_routes) routes new ones share the
//!   fallback label, so the number of series stays bounded.
//! - **Latency**: from the call of the service to the end of the response body
//!   (its last frame, or when it is dropped), read from the layer's
//!   [`Clock`](crate::Clock); recorded once, in an HDR histogram of the sliding
//!   window's current slice, which is folded into the whole-run histogram and
//!   the window when the slice ends or a report is read.
//! - **Payload**: the bytes of the response body's data frames.
//! - **Counters**: whatever the request [`record`](crate::record)ed, in the
//!   handler or while its body streams.
//! - **Cache**: the response's `X-Cache` header (`HIT`, `STALE`, `MISS`, `BYPASS`).
//!
//! # Violations
//!
//! A request breaks a percentile budget (`p95`…) when it takes longer than that
//! threshold; the *budget* holds while at most 5% of requests (for p95) do, and
//! that is what [`BudgetReport`](crate::BudgetReport) and the generated alerts
//! judge. A request breaks `max_payload` when its body is larger, a counter
//! budget when it recorded more, and `cache_required` when its response has no
//! `X-Cache` header or `X-Cache: BYPASS`. Each broken budget increments
//! `budget_violations_total` (feature `prometheus`) and logs a `tracing` warning,
//! at most one per route and budget per
//! [`warn_interval`](BudgetLayerBuilder::warn_interval).

mod body;
mod future;
// tower-http's layout (`layer.rs` beside `service.rs` and `future.rs`) inside the `layer` module.
#[allow(clippy::module_inception)]
mod layer;
mod service;

use std::sync::Arc;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::{BudgetLayer, BudgetLayerBuilder};
pub use service::Budget;

/// The route template of a request, for routers other than axum: insert it in
/// the request's extensions before the layer runs. Its values must be bounded
/// (templates, never raw paths).
///
/// ```
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(brisk_budget::RouteTemplate::new("/users/{id}"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate(Arc<str>);

impl RouteTemplate {
    /// A template such as `/users/{id}`.
    pub fn new(template: impl Into<Arc<str>>) -> Self {
        Self(template.into())
    }

    /// The template.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
