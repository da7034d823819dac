//! Operations: `/metrics`, `/budget/report`, `/cache/stats`, and the admin
//! routes `DELETE /cache/invalidate?pattern=|tag=` and `DELETE /cache/clear`
//! (bearer `ADMIN_TOKEN`).

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::{bearer, unauthorized};
use super::extract::QueryParams;
use super::problem::Problem;
use crate::secret;

/// A request bearing the admin token.
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if secret::matches(token.as_bytes(), state.admin_token().as_bytes()) {
            Ok(Self)
        } else {
            Err(unauthorized(Some("invalid_token"), "this route needs the admin token (ADMIN_TOKEN)"))
        }
    }
}

/// OpenMetrics text of every metric: RED metrics and budget violations
/// (brisk-budget), cache (brisk-cache), rate limits (brisk-ratelimit), pools
/// (brisk-pool-metrics).
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    // PgBouncer is read just before encoding (bounded by the collector's
    // timeout); a failure shows as `pgbouncer_up 0`, never as a failed scrape.
    if let Some(pgbouncer) = state.pgbouncer()
        && let Err(err) = pgbouncer.refresh().await
    {
        tracing::warn!(error = %err, "reading PgBouncer's admin console failed");
    }
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, state.metrics()) {
        tracing::error!(error = %err, "encoding metrics failed");
        return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded").into_response();
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Each route's latency, payload and query counts against its budget.
pub(super) async fn budget_report(State(state): State<AppState>) -> Response {
    let report = state.budget().report();
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], report.to_json()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The cache's counters and hit ratio.
pub(super) async fn cache_stats(State(state): State<AppState>) -> Response {
    let stats = state.cache().inner().stats();
    let mut response = Json(json!({
        "hit_ratio": stats.hit_ratio(),
        "l1_hits": stats.l1_hits,
        "l1_misses": stats.l1_misses,
        "l2_hits": stats.l2_hits,
        "l2_misses": stats.l2_misses,
        "loads": stats.loads,
        "load_errors": stats.load_errors,
        "entries": stats.entries,
        "bytes": stats.bytes,
        "evictions": stats.evictions,
        "invalidations": stats.invalidations,
        "l2_errors": stats.l2_errors,
        "bus_connected": stats.bus_connected,
        "bus_messages": stats.bus_messages,
        "bus_flushes": stats.bus_flushes,
    }))
    .into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `DELETE /cache/invalidate?tag=…` or `?pattern=…` (a glob over cache keys,
/// e.g. `blueprint:*`), on every instance.
pub(super) async fn invalidate(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(params): QueryParams,
) -> Result<Response, Problem> {
    let cache = state.cache().inner();
    let (kind, value, result) = match (params.get("tag"), params.get("pattern")) {
        (Some(tag), None) if !tag.is_empty() => ("tag", tag, cache.invalidate_tag(tag).await),
        (None, Some(pattern)) if !pattern.is_empty() => {
            check_pattern(pattern)?;
            ("pattern", pattern, cache.invalidate_pattern(pattern).await)
        }
        _ => return Err(Problem::bad_request("give exactly one of ?tag= or ?pattern=")),
    };
    match result {
        Ok(()) => Ok(Json(json!({ "invalidated": { kind: value } })).into_response()),
        Err(brisk_cache::Error::InvalidPattern { pattern, reason }) => {
            Err(Problem::bad_request(format!("pattern {pattern:?} is not valid: {reason}")))
        }
        Err(err) => Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, format!("applied here only: {err}"))),
    }
}

/// The families of the response cache's keys (`blueprint:{id}?…`,
/// `blueprints?…`, `project:{id}?…`, `projects?…`, `stats:summary`).
const KEY_FAMILIES: &[&str] = &["blueprint", "project", "stats"];

/// A pattern must name a family of the response cache's keys in its literal
/// head: `blueprint:*` and `projects?*` pass; `*`, `?*`, `b*` or `rl:*`,
/// which could reach keys the cache does not own on a shared Redis (rate
/// limits, other services), are refused. Emptying the whole cache is
/// `DELETE /cache/clear`.
fn check_pattern(pattern: &str) -> Result<(), Problem> {
    if KEY_FAMILIES.iter().any(|family| pattern.starts_with(family)) {
        Ok(())
    } else {
        Err(Problem::bad_request(format!(
            "pattern {pattern:?} is not valid: it must start with one of {} (the response cache's keys); \
             DELETE /cache/clear empties the whole cache",
            KEY_FAMILIES.join(", ")
        )))
    }
}

/// `DELETE /cache/clear`: every entry, on every instance.
pub(super) async fn clear(State(state): State<AppState>, _admin: Admin) -> Result<Response, Problem> {
    match state.cache().inner().clear().await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(err) => Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, format!("applied here only: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::check_pattern;

    #[test]
    fn patterns_stay_inside_the_cache_key_families() {
        for good in ["blueprint:*", "blueprint:3?*", "blueprints?*", "project*", "stats:summary"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["*", "**", "?*", "b*", "rl:*", "{blueprint-api}:*", "*blueprint*", "Blueprint:*", " blueprint:*"] {
            assert_eq!(check_pattern(bad).unwrap_err().status(), 400, "{bad}");
        }
    }
}
