//! Internals the fuzz targets (`fuzz/` in the repository) check; not part of
//! the API and exempt from semver.

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderMap;

use crate::decision::PolicyRef;
use crate::{Decision, HeaderStyle, Policy, PolicyDecision, Source};

/// The hops of these `X-Forwarded-For` values, left to right.
pub fn x_forwarded_for(values: &[&[u8]]) -> Vec<Option<IpAddr>> {
    crate::key::forwarded::x_forwarded_for(values.iter().copied())
}

/// The `for=` nodes of these `Forwarded` values, left to right.
pub fn forwarded(values: &[&[u8]]) -> Vec<Option<IpAddr>> {
    crate::key::forwarded::forwarded(values.iter().copied())
}

/// One node of either header.
pub fn parse_node(raw: &str) -> Option<IpAddr> {
    crate::key::forwarded::parse_node(raw)
}

/// What the limiter decided for one policy, as [`PolicyDecision`] holds it
/// (times rounded up to the microsecond).
#[derive(Debug, Clone, Copy)]
pub struct PolicyState {
    /// Whether the policy admits the request.
    pub allowed: bool,
    /// Units left.
    pub remaining: u32,
    /// Time until the quota is whole again.
    pub reset_after: Duration,
    /// For a refusal: time until the request would be admitted.
    pub retry_after: Option<Duration>,
    /// Where the answer came from.
    pub source: Source,
}

/// The `RateLimit-Policy` / `RateLimit` (and legacy) fields the layer writes
/// for these policies in these states.
///
/// # Errors
///
/// A policy the limiter's builder refuses (its message).
pub fn rate_limit_fields(policies: &[(Policy, PolicyState)], style: HeaderStyle) -> Result<HeaderMap, String> {
    let mut decisions = Vec::with_capacity(policies.len());
    for (policy, state) in policies {
        policy.validate()?;
        // Whole microseconds, rounded up as the fields round seconds up.
        let micros = |d: Duration| u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX);
        decisions.push(PolicyDecision::new(
            // Not interned: the policies here come from the caller, unbounded.
            PolicyRef::shared(&policy.name, policy.quota, policy.algorithm),
            state.allowed,
            u64::from(state.remaining),
            micros(state.reset_after),
            state.retry_after.map(micros),
            state.source,
        ));
    }
    let mut headers = HeaderMap::new();
    crate::layer::response::add_fields(&mut headers, &Decision::new(decisions), style);
    Ok(headers)
}
