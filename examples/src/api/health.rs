//! `/health/live` and `/health/ready`.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;

/// How long the database check may take.
const DB_TIMEOUT: Duration = Duration::from_secs(2);

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Liveness: the process is up and serving. Says nothing about dependencies
/// (that is readiness).
pub(super) async fn live() -> Response {
    no_store(Json(json!({ "status": "ok" })).into_response())
}

/// Readiness: 200 when the database (and Redis, when configured) answer; 503
/// with each check's outcome when one does not.
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let database = async {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(DB_TIMEOUT, state.store().ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {DB_TIMEOUT:?}")),
        };
        check(outcome, started, json!({ "engine": state.store().engine(), "pool": state.store().pool_status() }))
    };
    let redis = async {
        match state.redis() {
            None => None,
            Some(probe) => {
                let started = Instant::now();
                Some(check(probe.ping().await, started, json!({ "mode": probe.kind() })))
            }
        }
    };
    let ((db_up, db), redis) = tokio::join!(database, redis);
    let mut checks = serde_json::Map::new();
    checks.insert("database".into(), db);
    let mut up = db_up;
    if let Some((redis_up, redis)) = redis {
        up &= redis_up;
        checks.insert("redis".into(), redis);
    }
    let status = if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if up { "ready" } else { "unavailable" }, "checks": checks });
    no_store((status, Json(body)).into_response())
}

fn check(outcome: Result<(), String>, started: Instant, extra: Value) -> (bool, Value) {
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let mut value = match &outcome {
        Ok(()) => json!({ "status": "up", "latency_ms": latency_ms }),
        Err(error) => json!({ "status": "down", "latency_ms": latency_ms, "error": error }),
    };
    if let (Value::Object(map), Value::Object(extra)) = (&mut value, extra) {
        map.extend(extra);
    }
    (outcome.is_ok(), value)
}
