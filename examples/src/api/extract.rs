//! Extractors that turn every malformed request into a problem+json 4xx.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::problem::Problem;

/// The largest request body accepted, in bytes; larger bodies get 413.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON request body; rejections become problem+json (400 syntax, 413 too
/// large, 415 not JSON, 422 wrong shape or unknown field).
#[derive(Debug, Clone)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = rejection.status();
                let detail = match status {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                        format!("the request body is larger than {MAX_BODY_BYTES} bytes")
                    }
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                        "the request body must be JSON (Content-Type: application/json)".to_owned()
                    }
                    _ => rejection.body_text(),
                };
                Err(Problem::new(status, detail))
            }
        }
    }
}

/// A positive integer id from the path (`/api/blueprints/{id}`); anything else is 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id(pub(crate) i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        parse_id(&raw)
            .map(Self)
            .ok_or_else(|| Problem::bad_request(format!("{raw:?} is not a valid id (a positive integer)")))
    }
}

/// The query string as name → value (the last value of a repeated name wins);
/// a malformed query string is 400.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryParams(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        Ok(Self(params))
    }
}

fn parse_id(raw: &str) -> Option<i64> {
    // Digits only: no sign, no spaces, no leading zeros that would alias another id.
    if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) || raw.starts_with('0') {
        return None;
    }
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_positive_canonical_integers() {
        assert_eq!(parse_id("1"), Some(1));
        assert_eq!(parse_id("123456"), Some(123_456));
        for bad in ["", "0", "-1", "+1", "01", "1.0", "1e3", " 1", "abc", "9999999999999999999", "١"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
