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
    let cache = state.cache().inner().stats();
    let report = state.budget().report();
    let body = json!({
        "uptime_seconds": state.uptime().as_secs(),
        "database": { "engine": state.store().engine(), "pool": state.store().pool_status() },
        "redis": state.redis().map(|probe| probe.kind()),
        "routes": routes(&report),
        "cache": {
            "hit_ratio": cache.hit_ratio(),
            "hits": cache.l1_hits + cache.l2_hits,
            "misses": cache.loads,
            "entries": cache.entries,
        },
        "rate_limit": { "denied": state.denials().load(std::sync::atomic::Ordering::Relaxed) },
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Each route of the budget report as the dashboard draws it.
fn routes(report: &brisk_budget::BudgetReport) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    report
        .routes
        .iter()
        .map(|route| {
            let latency = route.latency.as_ref();
            json!({
                "route": route.route,
                "count": route.count,
                "p50_ms": latency.map(|l| ms(l.p50_us)),
                "p95_ms": latency.map(|l| ms(l.p95_us)),
                "p99_ms": latency.map(|l| ms(l.p99_us)),
                "budget_p95_ms": route.check("p95").map(|c| ms(c.limit)),
                "pass": route.passed(),
            })
        })
        .collect()
}
