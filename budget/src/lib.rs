//! # brisk-budget
//!
//! Per-route performance budgets (latency percentiles, payload size, DB
//! queries, cache use) checked at run time by a tower layer, and in tests and CI
//! by a report; with RED metrics and generated Prometheus alerts.
//!
//! ```
//! use axum::{Router, routing::get};
//! use brisk_budget::{BudgetLayer, Budgets};
//!
//! # fn main() -> Result<(), brisk_budget::BudgetFileError> {
//! let budgets = Budgets::from_yaml_str(
//!     r#"
//! api_endpoints:
//!   GET /api/blueprints:     {p50: 30ms, p95: 100ms, p99: 300ms, max_payload: 100KB, db_queries: 2, cache_required: true}
//!   GET /api/blueprints/:id: {p95: 50ms, max_payload: 20KB, db_queries: 1, cache_required: true}
//!   POST /api/deploy:        {p95: 200ms, max_payload: 50KB, db_queries: 5}
//! "#,
//! )?;
//! let budget = BudgetLayer::builder(budgets).warm_up(10).min_samples(100).build();
//!
//! let mut registry = prometheus_client::registry::Registry::default();
//! budget.register(&mut registry);
//!
//! let app: Router = Router::new()
//!     .route("/api/blueprints", get(|| async {
//!         brisk_budget::record("db_queries", 1);
//!         "[]"
//!     }))
//!     .layer(budget.clone());
//! // ... serve `app`; later, in a test or at `/budget/report`:
//! let report = budget.report();
//! println!("{}", report.to_json());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! - [`file`](mod@file): the budgets file (YAML, TOML, JSON) and its errors.
//! - [`layer`]: [`BudgetLayer`] → [`Budget`] → [`ResponseFuture`], what it
//!   measures and when a request breaks a budget.
//! - [`scope`]: [`record`] per-request counters from any code.
//! - [`report`]: [`BudgetReport`], JSON, JUnit XML, `assert_within`, baselines.
//! - [`alerts`]: Prometheus alerting rules from the budgets.
//!
//! # Features
//!
//! | feature      | default | what it adds                                                       |
//! |--------------|---------|--------------------------------------------------------------------|
//! | `axum`       | yes     | route label from axum's `MatchedPath`                              |
//! | `prometheus` | yes     | [`BudgetLayer::register`]: RED metrics and `budget_violations_total` |
//! | `toml`       | yes     | [`Budgets::from_toml_str`]                                         |
//! | `junit`      | yes     | [`BudgetReport::to_junit`]                                         |
//!
//! YAML (serde-saphyr) and JSON are always available.

pub mod alerts;
mod budget;
mod clock;
pub mod file;
pub mod layer;
#[cfg(feature = "prometheus")]
mod metrics;
pub mod report;
pub mod scope;
mod state;
mod window;

pub use budget::{Budgets, DB_QUERIES, Percentile, RouteBudget, RouteKey};
pub use clock::{Clock, ManualClock, MonotonicClock, TokioClock};
pub use file::{BudgetFileError, FileFormat};
pub use layer::{Budget, BudgetLayer, BudgetLayerBuilder, ResponseBody, ResponseFuture, RouteTemplate};
pub use report::{BudgetFailures, BudgetReport, RegressionPolicy, RouteReport};
pub use scope::{RequestScope, current, record};
