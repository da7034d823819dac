//! The HTTP surface: routes, shared state, request parsing and error bodies.

mod admin;
pub(crate) mod auth;
mod blueprints;
mod cursor;
mod dashboard;
mod deploys;
pub(crate) mod extract;
mod health;
pub(crate) mod limits;
pub(crate) mod listing;
pub(crate) mod problem;
mod projects;
mod validate;
mod views;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde_json::{Value, json};

use self::auth::Tokens;
use self::listing::ListQuery;
use self::problem::Problem;
use crate::deploy::DeployQueue;
use crate::redis_probe::RedisProbe;
use crate::response_cache::{Fresh, ResponseCache};
use crate::store::Store;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

/// The parts of the running service the handlers use.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) tokens: Tokens,
    pub(crate) deploys: DeployQueue,
    pub(crate) redis: Option<RedisProbe>,
    pub(crate) cache: ResponseCache,
    pub(crate) budget: brisk_budget::BudgetLayer,
    pub(crate) metrics: Arc<prometheus_client::registry::Registry>,
    pub(crate) pgbouncer: Option<brisk_pool_metrics::pgbouncer::PgBouncerCollector>,
    pub(crate) limits: limits::Limits,
    pub(crate) admin_token: String,
}

#[derive(Debug)]
struct Inner {
    parts: Parts,
    started: Instant,
    denials: AtomicU64,
}

impl AppState {
    pub(crate) fn new(parts: Parts) -> Self {
        Self(Arc::new(Inner { parts, started: Instant::now(), denials: AtomicU64::new(0) }))
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.0.parts.store
    }

    pub(crate) fn store_arc(&self) -> Arc<dyn Store> {
        self.0.parts.store.clone()
    }

    pub(crate) fn cache(&self) -> &ResponseCache {
        &self.0.parts.cache
    }

    pub(crate) fn budget(&self) -> &brisk_budget::BudgetLayer {
        &self.0.parts.budget
    }

    pub(crate) fn metrics(&self) -> &prometheus_client::registry::Registry {
        &self.0.parts.metrics
    }

    pub(crate) fn pgbouncer(&self) -> Option<&brisk_pool_metrics::pgbouncer::PgBouncerCollector> {
        self.0.parts.pgbouncer.as_ref()
    }

    pub(crate) fn admin_token(&self) -> &str {
        &self.0.parts.admin_token
    }

    /// Requests refused with 429 since start.
    pub(crate) fn denials(&self) -> &AtomicU64 {
        &self.0.denials
    }

    pub(crate) fn tokens(&self) -> &Tokens {
        &self.0.parts.tokens
    }

    pub(crate) fn deploys(&self) -> &DeployQueue {
        &self.0.parts.deploys
    }

    pub(crate) fn redis(&self) -> Option<&RedisProbe> {
        self.0.parts.redis.as_ref()
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }
}

/// The service's routes.
pub(crate) fn router(state: AppState) -> Router {
    let limits = state.0.parts.limits.clone();
    let deploy = limits.deploy_route(axum::routing::post(deploys::create), state.clone());
    let api = Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard/stats", get(dashboard::stats))
        .route("/budget/report", get(admin::budget_report))
        .route("/cache/stats", get(admin::cache_stats))
        .route("/cache/invalidate", delete(admin::invalidate))
        .route("/cache/clear", delete(admin::clear))
        .route("/api/blueprints", get(blueprints::list).post(blueprints::create))
        .route("/api/blueprints/{id}", get(blueprints::get).put(blueprints::replace).delete(blueprints::delete))
        .route("/api/projects", get(projects::list).post(projects::create))
        .route("/api/projects/stats/summary", get(projects::stats))
        .route("/api/projects/{id}", get(projects::get).patch(projects::update))
        .route("/api/deploy", deploy)
        .route("/api/deploy/{id}", get(deploys::get))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        // After routing (`Router::layer`), so it labels by route template.
        .layer(state.budget().clone());
    let api = limits.api_layer(api, state.clone());
    // Probes and scrapes are neither rate limited (a load balancer or
    // Prometheus polls from one address) nor budgeted.
    let operations = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(admin::metrics));
    operations.merge(api).fallback(not_found).method_not_allowed_fallback(method_not_allowed).with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
}

/// A list page: `{"data": [...], "page": {"limit", "next_cursor"}}` and, when
/// more rows follow, a `Link: <…>; rel="next"` header.
fn page(listing: &str, data: Vec<Value>, next: Option<String>, query: &ListQuery, keep_fields: bool) -> Fresh {
    let body = json!({ "data": data, "page": { "limit": query.limit, "next_cursor": next } });
    let link = next.map(|cursor| {
        let mut link = format!("/api/{listing}?limit={}&cursor={cursor}", query.limit);
        if keep_fields {
            link.push_str("&fields=");
            link.push_str(&query.fields.names().join(","));
        }
        format!("<{link}>; rel=\"next\"")
    });
    Fresh { body: serde_json::to_vec(&body).expect("JSON values serialize"), link }
}
