//! Header fields and problem documents.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::body::RateLimitBody;
use super::layer::HeaderStyle;
use crate::{Decision, PolicyDecision, Source};

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The problem type registered by draft-ietf-httpapi-ratelimit-headers.
pub(crate) const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Seconds until the policy next matters to the client: for a refusing
/// policy its retry time, otherwise the time until its quota is whole.
fn reset_secs(p: &PolicyDecision) -> u64 {
    match (p.allowed, p.retry_after()) {
        (false, Some(retry)) => ceil_secs(retry),
        _ => ceil_secs(p.reset_after()),
    }
}

fn value(s: String) -> HeaderValue {
    // Policy names are validated tokens and the rest are digits: always a valid value.
    HeaderValue::try_from(s).expect("RateLimit fields are visible ASCII")
}

/// Appends `RateLimit-Policy` and `RateLimit` (and legacy fields if asked).
pub(crate) fn add_fields(headers: &mut HeaderMap, decision: &Decision, style: HeaderStyle) {
    let known: Vec<&PolicyDecision> = decision.policies().iter().filter(|p| p.source != Source::FailOpen).collect();
    if known.is_empty() {
        return;
    }
    let (mut policy, mut state) = (String::new(), String::new());
    for (i, p) in known.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let window = ceil_secs(p.quota().period()).max(1);
        let _ = write!(policy, "{sep}\"{}\";q={};w={}", p.name(), p.quota().limit(), window);
        let _ = write!(state, "{sep}\"{}\";r={};t={}", p.name(), p.remaining, reset_secs(p));
    }
    headers.append(&RATELIMIT_POLICY, value(policy));
    headers.append(&RATELIMIT, value(state));
    if style == HeaderStyle::IetfAndLegacy
        && let Some(tightest) = known.iter().min_by_key(|p| p.remaining)
    {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        headers.insert(&X_LIMIT, HeaderValue::from(tightest.quota().limit().get()));
        headers.insert(&X_REMAINING, HeaderValue::from(tightest.remaining));
        headers.insert(&X_RESET, HeaderValue::from(ceil_secs(now) + reset_secs(tightest)));
    }
}

fn problem<B>(status: StatusCode, body: serde_json::Value) -> Response<RateLimitBody<B>> {
    let mut response = Response::new(RateLimitBody::problem(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

/// `429` with `Retry-After`, the fields and a `quota-exceeded` problem.
pub(crate) fn too_many_requests<B>(decision: &Decision, style: HeaderStyle) -> Response<RateLimitBody<B>> {
    let violated: Vec<&str> = decision.violated().map(|p| p.name()).collect();
    let retry = decision.retry_after().map(ceil_secs);
    let detail = match retry {
        Some(secs) => format!("Quota exceeded for {}; retry in {secs} s.", violated.join(", ")),
        None => format!("The request costs more than {} allows at once.", violated.join(", ")),
    };
    let mut response = problem(
        StatusCode::TOO_MANY_REQUESTS,
        serde_json::json!({
            "type": QUOTA_EXCEEDED,
            "title": "Request cannot be satisfied as assigned quota has been exceeded",
            "status": 429,
            "detail": detail,
            "violated-policies": violated,
        }),
    );
    if let Some(secs) = retry {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    let style = if style == HeaderStyle::OnlyOnRefusal { HeaderStyle::Ietf } else { style };
    add_fields(response.headers_mut(), decision, style);
    response
}

/// `503`: the store is unavailable and a policy fails closed.
pub(crate) fn unavailable<B>() -> Response<RateLimitBody<B>> {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "The rate limiter cannot reach its store and this endpoint does not run unlimited.",
        }),
    )
}

/// `500`: the request has no rate-limit key.
pub(crate) fn missing_key<B>() -> Response<RateLimitBody<B>> {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::json!({
            "type": "about:blank",
            "title": "Internal Server Error",
            "status": 500,
            "detail": "The rate-limit key of this request could not be determined.",
        }),
    )
}
