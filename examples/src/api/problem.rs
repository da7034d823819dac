//! Error responses as RFC 9457 problem details (`application/problem+json`).

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// One invalid input field, listed in a problem's `errors` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, as a JSON pointer into the request (`/name`) or a query parameter (`?limit`).
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

impl FieldError {
    /// A field error.
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { pointer: bounded(pointer.into()), detail: bounded(detail.into()) }
    }
}

/// The longest `detail` (or field error text) a problem carries, in bytes.
const MAX_DETAIL_BYTES: usize = 512;

/// `text`, cut to [`MAX_DETAIL_BYTES`] (at a character boundary, marked with
/// `…`): details quote what the client sent, and a 60 KB path or query must
/// not come back as a 60 KB error.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_DETAIL_BYTES {
        let mut end = MAX_DETAIL_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// An error response. `type` is `about:blank`, so `title` is the status's
/// reason phrase and `detail` says what happened this time.
///
/// Boxed, so a `Result<T, Problem>` stays one pointer wide on the error side.
#[derive(Debug, Clone)]
pub struct Problem(Box<Details>);

#[derive(Debug, Clone)]
struct Details {
    status: StatusCode,
    detail: String,
    errors: Vec<FieldError>,
    headers: HeaderMap,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    /// A problem with this status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let detail = bounded(detail.into());
        Self(Box::new(Details { status, detail, errors: Vec::new(), headers: HeaderMap::new() }))
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 422 Unprocessable Content, listing every invalid field.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.pointer, one.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        let mut problem = Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail);
        problem.0.errors = errors;
        problem
    }

    /// Adds a response header (e.g. `WWW-Authenticate`, `Retry-After`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    /// The same problem with another status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.0.status = status;
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.status, self.0.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let details = *self.0;
        let body = Body {
            kind: "about:blank",
            title: details.status.canonical_reason().unwrap_or("Error"),
            status: details.status.as_u16(),
            detail: &details.detail,
            errors: &details.errors,
        };
        let json = serde_json::to_vec(&body).expect("a problem serializes");
        let mut response = (details.status, json).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response.headers_mut().extend(details.headers);
        response
    }
}

impl From<StoreError> for Problem {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::not_found(format!("no such {what}")),
            StoreError::Forbidden(what) => {
                Self::new(StatusCode::FORBIDDEN, format!("this {what} belongs to another user"))
            }
            StoreError::Conflict(detail) => Self::new(StatusCode::CONFLICT, detail),
            StoreError::Invalid { field, message } => {
                Self::invalid(vec![FieldError::new(format!("/{field}"), message)])
            }
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable; try again shortly")
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            other => {
                tracing::error!(error = %other, "database error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "the request could not be completed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_quoting_the_client_are_bounded_at_a_character_boundary() {
        assert_eq!(bounded("short".to_owned()), "short");
        let long = bounded("é".repeat(1000));
        assert!(long.len() <= MAX_DETAIL_BYTES + '…'.len_utf8(), "{}", long.len());
        assert!(long.ends_with('…') && long.starts_with("éé"));
        let problem = Problem::bad_request(format!("no route for /{}", "a".repeat(100_000)));
        assert!(problem.to_string().len() < 1024);
        let field = FieldError::new("?fields", "x".repeat(10_000));
        assert!(field.detail.len() <= MAX_DETAIL_BYTES + 3);
    }
}
