//! The dashboard page at `/` (static HTML and JavaScript compiled into the
//! binary) and the JSON it polls, `/dashboard/stats`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::AppState;

const PAGE: &str = include_str!("dashboard.html");

pub(super) async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What the dashboard shows, in one document. Parts the running
/// configuration does not have are `null`.
pub(super) async fn stats(State(state): State<AppState>) -> Response {
    let body = json!({
        "uptime_seconds": state.uptime().as_secs(),
        "database": { "engine": state.store().engine(), "pool": state.store().pool_status() },
        "redis": state.redis().map(|probe| probe.kind()),
        "routes": null,
        "cache": null,
        "rate_limit": null,
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
