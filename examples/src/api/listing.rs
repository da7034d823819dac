//! List parameters: `?limit=`, `?cursor=` (opaque, tamper-evident) and `?fields=`.

use std::collections::HashMap;

pub(crate) use super::cursor::{decode_cursor, encode_cursor};
use super::problem::{FieldError, Problem};

/// Rows per page unless `?limit=` says otherwise.
pub(crate) const DEFAULT_LIMIT: u32 = 20;
/// The largest `?limit=`.
pub(crate) const MAX_LIMIT: u32 = 100;

/// The fields a response shows: a subset of a resource's allow-list, in the
/// allow-list's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fields(Vec<&'static str>);

impl Fields {
    /// The selected field names.
    pub(crate) fn names(&self) -> &[&'static str] {
        &self.0
    }

    /// Whether `field` is shown.
    pub(crate) fn has(&self, field: &str) -> bool {
        self.0.contains(&field)
    }

    /// Keeps only the selected members of `object`.
    pub(crate) fn select(&self, object: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
        let mut object = object;
        let mut out = serde_json::Map::with_capacity(self.0.len());
        for field in &self.0 {
            if let Some(value) = object.remove(*field) {
                out.insert((*field).to_owned(), value);
            }
        }
        serde_json::Value::Object(out)
    }

    /// Parses `?fields=a,b`; `None` means every field.
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&'static str]) -> Result<Self, Problem> {
        let Some(raw) = raw else { return Ok(Self(allowed.to_vec())) };
        let mut wanted = Vec::new();
        for name in raw.split(',').map(str::trim) {
            if name.is_empty() {
                continue;
            }
            match allowed.iter().find(|a| **a == name) {
                Some(field) => wanted.push(*field),
                None => {
                    return Err(Problem::invalid(vec![FieldError::new(
                        "?fields",
                        format!("unknown field {name:?}; allowed: {}", allowed.join(", ")),
                    )])
                    .with_status(axum::http::StatusCode::BAD_REQUEST));
                }
            }
        }
        if wanted.is_empty() {
            return Err(Problem::bad_request(format!("?fields= names no field; allowed: {}", allowed.join(", "))));
        }
        Ok(Self(allowed.iter().copied().filter(|a| wanted.contains(a)).collect()))
    }
}

/// `?limit=&cursor=&fields=` of a list route, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListQuery {
    /// Rows per page.
    pub(crate) limit: u32,
    /// Rows after this id.
    pub(crate) after: i64,
    /// The fields to show.
    pub(crate) fields: Fields,
}

impl ListQuery {
    /// Reads the parameters of `listing` (its cursor namespace) from the query string.
    pub(crate) fn parse(
        params: &HashMap<String, String>,
        listing: &str,
        allowed: &[&'static str],
    ) -> Result<Self, Problem> {
        let limit = match params.get("limit").map(|v| v.trim()) {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(Problem::bad_request(format!(
                        "limit={raw:?} is not valid: a whole number from 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let after = match params.get("cursor") {
            None => 0,
            Some(raw) => decode_cursor(listing, raw.trim()).ok_or_else(|| {
                Problem::bad_request("cursor is not valid: pass the next_cursor of a previous page unchanged")
            })?,
        };
        let fields = Fields::parse(params.get("fields").map(String::as_str), allowed)?;
        Ok(Self { limit, after, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_listing() {
        let cursor = encode_cursor("blueprints", 1234);
        assert_eq!(decode_cursor("blueprints", &cursor), Some(1234));
        assert_eq!(decode_cursor("projects", &cursor), None);
    }

    #[test]
    fn tampered_or_garbage_cursors_are_refused() {
        let cursor = encode_cursor("blueprints", 20);
        for i in 0..cursor.len() {
            let mut bytes = cursor.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != cursor {
                assert_eq!(decode_cursor("blueprints", &tampered), None, "{tampered}");
            }
        }
        for garbage in ["", "x", "!!!!", "AAAAAAAAAAAAAAAAAAAAAAA", &"A".repeat(200), "MjA"] {
            assert_eq!(decode_cursor("blueprints", garbage), None, "{garbage}");
        }
    }

    #[test]
    fn fields_follow_the_allow_list() {
        let allowed = &["id", "name", "owner"];
        assert_eq!(Fields::parse(None, allowed).unwrap(), Fields(vec!["id", "name", "owner"]));
        assert_eq!(Fields::parse(Some("owner, id,id"), allowed).unwrap(), Fields(vec!["id", "owner"]));
        assert_eq!(Fields::parse(Some("password"), allowed).unwrap_err().status(), 400);
        assert_eq!(Fields::parse(Some(" , "), allowed).unwrap_err().status(), 400);
    }

    #[test]
    fn limits_are_bounded() {
        let allowed = &["id"];
        let q = |v: &str| ListQuery::parse(&HashMap::from([("limit".to_owned(), v.to_owned())]), "b", allowed);
        assert_eq!(q("5").unwrap().limit, 5);
        for bad in ["0", "101", "-1", "ten", ""] {
            assert_eq!(q(bad).unwrap_err().status(), 400, "{bad}");
        }
    }
}
