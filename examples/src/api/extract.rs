//! Extractors that turn every malformed request into a problem+json 4xx.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
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
        // A declared length over the limit is refused before reading: the
        // client would otherwise hold the connection open for a body that is
        // refused anyway once its first 64 KiB have arrived.
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = rejection.status();
                let detail = match status {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
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

fn too_large() -> Problem {
    Problem::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
    )
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

/// The query string as name → value; a malformed query string, or a name
/// given more than once, is 400.
///
/// A repeated name is refused rather than resolved: a proxy or cache in front
/// may read the first value where the service would read the last, and
/// `?limit=5&limit=50` must not be answered as, or stored as, either one.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryParams(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        let mut params = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if params.contains_key(&name) {
                return Err(Problem::bad_request(format!("?{name} is given more than once; give it once")));
            }
            params.insert(name, value);
        }
        Ok(Self(params))
    }
}

/// Whether the shared response cache may answer this read and store its
/// response: not when the request carries credentials (`Authorization` or
/// `Cookie`), so that nothing a client sends with its credentials is ever
/// served to another, whatever a route does with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shareable(pub(crate) bool);

impl<S: Send + Sync> FromRequestParts<S> for Shareable {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        Ok(Self(!headers.contains_key(header::AUTHORIZATION) && !headers.contains_key(header::COOKIE)))
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
