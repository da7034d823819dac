//! Bearer tokens: `Authorization: Bearer bp_<user id>_<secret>`.
//!
//! Reads are public; writes and deploys name a seeded user by token. Secrets
//! are compared in constant time, and an unknown user id is compared against a
//! dummy secret so the answer takes as long as for a known one.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};

use super::AppState;
use super::problem::Problem;
use crate::secret;
use crate::store::UserToken;

const PREFIX: &str = "bp_";
const DUMMY_SECRET: &[u8] = b"00000000000000000000000000000000";

/// The users' tokens, loaded at start.
#[derive(Clone)]
pub(crate) struct Tokens {
    users: HashMap<i64, (String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("users", &self.users.len()).finish_non_exhaustive()
    }
}

impl Tokens {
    pub(crate) fn new(users: Vec<UserToken>) -> Self {
        Self { users: users.into_iter().map(|u| (u.user_id, (u.name, u.secret.into_bytes()))).collect() }
    }

    /// The bearer token of `user`, when known.
    pub(crate) fn token_of(&self, user: i64) -> Option<String> {
        self.users.get(&user).map(|(_, secret)| format!("{PREFIX}{user}_{}", String::from_utf8_lossy(secret)))
    }

    /// The user a token names, when the token is valid.
    pub(crate) fn verify(&self, token: &str) -> Option<Authenticated> {
        let (user, given) = token.strip_prefix(PREFIX)?.split_once('_')?;
        let user: i64 = user.parse().ok()?;
        match self.users.get(&user) {
            Some((name, expected)) => {
                secret::matches(given.as_bytes(), expected).then(|| Authenticated { user_id: user, name: name.clone() })
            }
            None => {
                let _ = secret::matches(given.as_bytes(), DUMMY_SECRET);
                None
            }
        }
    }
}

/// The user a request's bearer token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// User id.
    pub user_id: i64,
    /// Display name.
    pub name: String,
}

/// The token from `Authorization: Bearer <token>` (scheme case-insensitive).
pub(crate) fn bearer(parts: &Parts) -> Result<&str, Problem> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized(None, "this request needs Authorization: Bearer <token>"))?;
    let value = value.to_str().map_err(|_| unauthorized(Some("invalid_request"), "malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(unauthorized(Some("invalid_request"), "the Authorization header must be: Bearer <token>")),
    }
}

pub(crate) fn unauthorized(error: Option<&str>, detail: &str) -> Problem {
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"blueprint-api\", error=\"{error}\""),
        None => "Bearer realm=\"blueprint-api\"".to_owned(),
    };
    Problem::new(StatusCode::UNAUTHORIZED, detail)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).expect("ASCII challenge"))
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Already checked by a layer (the deploy route's, before its rate limit).
        if let Some(user) = parts.extensions.get::<Authenticated>() {
            return Ok(user.clone());
        }
        let token = bearer(parts)?;
        state.tokens().verify(token).ok_or_else(|| unauthorized(Some("invalid_token"), "the bearer token is not valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(vec![UserToken {
            user_id: 7,
            name: "Ada".into(),
            secret: "abcdef0123456789abcdef0123456789".into(),
        }])
    }

    #[test]
    fn only_the_exact_token_verifies() {
        let tokens = tokens();
        let good = tokens.token_of(7).unwrap();
        assert_eq!(good, "bp_7_abcdef0123456789abcdef0123456789");
        assert_eq!(tokens.verify(&good).unwrap().user_id, 7);
        for bad in [
            "bp_7_abcdef0123456789abcdef012345678",
            "bp_7_abcdef0123456789abcdef01234567890",
            "bp_8_abcdef0123456789abcdef0123456789",
            "bp_x_abcdef0123456789abcdef0123456789",
            "7_abcdef0123456789abcdef0123456789",
            "",
        ] {
            assert!(tokens.verify(bad).is_none(), "{bad}");
        }
    }
}
