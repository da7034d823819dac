//! The HTTP surface: routes, shared state, request parsing and error bodies.

pub(crate) mod auth;
mod blueprints;
mod dashboard;
mod deploys;
pub(crate) mod extract;
mod health;
pub(crate) mod listing;
pub(crate) mod problem;
mod projects;
mod validate;
mod views;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use self::auth::Tokens;
use self::listing::ListQuery;
use self::problem::Problem;
use crate::deploy::DeployQueue;
use crate::redis_probe::RedisProbe;
use crate::store::Store;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    tokens: Tokens,
    deploys: DeployQueue,
    redis: Option<RedisProbe>,
    started: Instant,
}

impl AppState {
    pub(crate) fn new(store: Arc<dyn Store>, tokens: Tokens, deploys: DeployQueue, redis: Option<RedisProbe>) -> Self {
        Self(Arc::new(Inner { store, tokens, deploys, redis, started: Instant::now() }))
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.0.store
    }

    pub(crate) fn tokens(&self) -> &Tokens {
        &self.0.tokens
    }

    pub(crate) fn deploys(&self) -> &DeployQueue {
        &self.0.deploys
    }

    pub(crate) fn redis(&self) -> Option<&RedisProbe> {
        self.0.redis.as_ref()
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }
}

/// The service's routes.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard/stats", get(dashboard::stats))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/api/blueprints", get(blueprints::list).post(blueprints::create))
        .route("/api/blueprints/{id}", get(blueprints::get).put(blueprints::replace).delete(blueprints::delete))
        .route("/api/projects", get(projects::list).post(projects::create))
        .route("/api/projects/stats/summary", get(projects::stats))
        .route("/api/projects/{id}", get(projects::get).patch(projects::update))
        .route("/api/deploy", axum::routing::post(deploys::create))
        .route("/api/deploy/{id}", get(deploys::get))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
}

/// A list page: `{"data": [...], "page": {"limit", "next_cursor"}}` and, when
/// more rows follow, a `Link: <…>; rel="next"` header.
fn page_response(path: &str, data: Vec<Value>, next: Option<String>, query: &ListQuery, keep_fields: bool) -> Response {
    let body = json!({ "data": data, "page": { "limit": query.limit, "next_cursor": next } });
    let mut response = Json(body).into_response();
    if let Some(cursor) = next {
        let mut link = format!("{path}?limit={}&cursor={cursor}", query.limit);
        if keep_fields {
            link.push_str("&fields=");
            link.push_str(&query.fields.names().join(","));
        }
        if let Ok(value) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}
