//! Rate limits with brisk-ratelimit: the API per client IP (1000 per 15
//! minutes by default), deploys per user (10 per hour). In memory on one
//! instance; on Redis, shared by every instance, when Redis is configured.
//!
//! Refusals are `429` with `Retry-After`, the IETF `RateLimit-Policy` /
//! `RateLimit` fields and a problem+json body, from the layer itself.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use brisk_ratelimit::key::ExtensionKey;
use brisk_ratelimit::{MissingKey, OnStoreError, Policy, Quota, RateLimitLayer, RateLimiter};

use super::AppState;
use super::auth::{Authenticated, bearer, unauthorized};
use crate::config::RateLimit;

/// The service's limiters, when configured.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) api: Option<RateLimiter>,
    pub(crate) deploy: Option<RateLimiter>,
}

/// A limiter from a configured rate, on `store` (Redis) or in memory.
pub(crate) fn limiter(
    prefix: &str,
    name: &str,
    rate: RateLimit,
    store: Option<brisk_ratelimit::store::RedisStore>,
) -> Result<RateLimiter, String> {
    let quota = Quota::per_period(rate.limit, rate.period).map_err(|e| e.to_string())?;
    // While Redis is unreachable each instance limits on its own (the
    // default, `OnStoreError::Local`): neither an outage nor a free-for-all.
    let policy = Policy::new(name, quota).on_store_error(OnStoreError::Local);
    let mut builder = RateLimiter::builder(prefix).policy(policy);
    if let Some(store) = store {
        builder = builder.store(store);
    }
    builder.build().map_err(|e| e.to_string())
}

impl Limits {
    /// Puts the deploy limit (per authenticated user) on the deploy route. The
    /// token is checked first, so unauthenticated requests get 401 and do not
    /// count.
    pub(crate) fn deploy_route(&self, route: MethodRouter<AppState>, state: AppState) -> MethodRouter<AppState> {
        let route = match &self.deploy {
            Some(limiter) => {
                let route = route.layer(
                    RateLimitLayer::new(limiter.clone())
                        .key(ExtensionKey::new(|user: &Authenticated| user.user_id.to_string())),
                );
                // Without the API limit around everything, 429s are counted here.
                if self.api.is_none() {
                    route.layer(middleware::from_fn_with_state(state.clone(), count_denials))
                } else {
                    route
                }
            }
            None => route,
        };
        route.layer(middleware::from_fn_with_state(state, authenticate))
    }

    /// Puts the API limit (per client IP) around every route it is given, and
    /// counts 429s (of both limits).
    pub(crate) fn api_layer(&self, router: Router<AppState>, state: AppState) -> Router<AppState> {
        match &self.api {
            // Served without ConnectInfo (e.g. in-process tests), a request has
            // no peer address and passes; `blueprint_api` serves with it.
            Some(limiter) => router
                .layer(RateLimitLayer::new(limiter.clone()).on_missing_key(MissingKey::Allow))
                .layer(middleware::from_fn_with_state(state, count_denials)),
            None => router,
        }
    }
}

/// Checks the bearer token and puts the user in the request's extensions.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let user = match bearer(&parts) {
        Ok(token) => state.tokens().verify(token),
        Err(problem) => return problem.into_response(),
    };
    let Some(user) = user else {
        return unauthorized(Some("invalid_token"), "the bearer token is not valid").into_response();
    };
    parts.extensions.insert(user);
    request = Request::from_parts(parts, body);
    next.run(request).await
}

async fn count_denials(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
        state.denials().fetch_add(1, Ordering::Relaxed);
    }
    response
}
