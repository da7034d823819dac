//! RFC 9111 / 9110 rules the layer applies: `Cache-Control` directives,
//! what may be stored, entity-tag comparison.

use std::time::Duration;

use http::header::{CACHE_CONTROL, HeaderMap, PRAGMA, SET_COOKIE, VARY};

/// The `Cache-Control` directives the layer acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
}

/// Parses every `Cache-Control` header of `headers`. Unknown directives and
/// unreadable values are ignored; a directive that restricts caching is
/// honoured wherever it appears.
pub(crate) fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else {
            // Unreadable: be conservative.
            d.no_store = true;
            continue;
        };
        for part in text.split(',') {
            let part = part.trim();
            let (name, arg) = match part.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (part, None),
            };
            let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
            if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("private") {
                d.private = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                // A malformed max-age is stale at once (RFC 9111 §4.2.1).
                d.max_age = Some(seconds().unwrap_or(0));
            } else if name.eq_ignore_ascii_case("s-maxage") {
                d.s_maxage = Some(seconds().unwrap_or(0));
            }
        }
    }
    d
}

/// Whether the request asks for a response validated at the origin:
/// `Cache-Control: no-cache` or `max-age=0`, or `Pragma: no-cache`.
pub(crate) fn request_wants_revalidation(headers: &HeaderMap, d: &Directives) -> bool {
    d.no_cache
        || d.max_age == Some(0)
        || headers.get_all(PRAGMA).iter().any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("no-cache")))
}

/// Why a response is not stored, or `None` when it may be.
pub(crate) fn unstorable_reason(headers: &HeaderMap, d: &Directives) -> Option<&'static str> {
    if headers.contains_key(SET_COOKIE) {
        return Some("set-cookie");
    }
    if d.no_store {
        return Some("no-store");
    }
    if d.private {
        return Some("private");
    }
    if d.no_cache {
        return Some("no-cache");
    }
    if vary_names(headers).is_none() {
        return Some("vary-star");
    }
    None
}

/// The TTL the response asks shared caches for: `s-maxage`, else `max-age`.
pub(crate) fn response_ttl(d: &Directives) -> Option<Duration> {
    d.s_maxage.or(d.max_age).map(Duration::from_secs)
}

/// The header names listed in `Vary`, lower-cased, sorted and deduplicated;
/// `None` for `Vary: *` (or an unreadable `Vary`): never stored.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        let text = value.to_str().ok()?;
        for name in text.split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if !name.is_empty() {
                names.push(name.to_ascii_lowercase());
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    Some(names)
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison, RFC 9110 §13.1.2).
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &[u8]) -> bool {
    let Some(ours) = opaque_tag(etag) else {
        return false;
    };
    headers.get_all(http::header::IF_NONE_MATCH).iter().any(|value| {
        let bytes = value.as_bytes();
        if bytes.iter().all(|b| b.is_ascii_whitespace() || *b == b'*') && bytes.contains(&b'*') {
            return true;
        }
        EntityTags(bytes).any(|t| t == ours)
    })
}

/// The quoted part of an entity tag (`"…"`), without `W/`.
fn opaque_tag(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.trim_ascii();
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    (tag.len() >= 2 && tag[0] == b'"' && tag[tag.len() - 1] == b'"').then_some(tag)
}

/// The entity tags of an `If-None-Match` value (commas may appear inside quotes).
struct EntityTags<'a>(&'a [u8]);

impl<'a> Iterator for EntityTags<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let rest = self.0.trim_ascii_start();
            let rest = rest.strip_prefix(b",").unwrap_or(rest).trim_ascii_start();
            if rest.is_empty() {
                self.0 = rest;
                return None;
            }
            let body = rest.strip_prefix(b"W/").unwrap_or(rest);
            if body.first() == Some(&b'"')
                && let Some(end) = body[1..].iter().position(|&b| b == b'"')
            {
                let tag = &body[..end + 2];
                self.0 = &body[end + 2..];
                return Some(tag);
            }
            // Not an entity tag: skip to the next comma.
            match rest.iter().position(|&b| b == b',') {
                Some(i) => self.0 = &rest[i + 1..],
                None => {
                    self.0 = &[];
                    return None;
                }
            }
        }
    }
}

/// A strong entity tag for `body`: `"` + 16 hex digits of XXH3-64 + `"`.
pub(crate) fn computed_etag(body: &[u8]) -> String {
    format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cache_control_directives() {
        let d = directives(&headers(&[("cache-control", "public, max-age=60"), ("cache-control", "S-MaxAge=\"30\"")]));
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert_eq!(response_ttl(&d), Some(Duration::from_secs(30)));
        assert!(!d.private && !d.no_store);
        assert_eq!(directives(&headers(&[("cache-control", "max-age=abc")])).max_age, Some(0));
        let h = headers(&[("cache-control", "Private")]);
        assert_eq!(unstorable_reason(&h, &directives(&h)), Some("private"));
        let h = headers(&[("cache-control", "no-store")]);
        assert_eq!(unstorable_reason(&h, &directives(&h)), Some("no-store"));
        let h = headers(&[("set-cookie", "a=b")]);
        assert_eq!(unstorable_reason(&h, &directives(&h)), Some("set-cookie"));
        let h = headers(&[("vary", "Accept, *")]);
        assert_eq!(unstorable_reason(&h, &directives(&h)), Some("vary-star"));
        let h = headers(&[("vary", "Accept-Language, accept"), ("vary", "ACCEPT")]);
        assert_eq!(unstorable_reason(&h, &directives(&h)), None);
        assert_eq!(vary_names(&h).unwrap(), ["accept", "accept-language"]);
    }

    #[test]
    fn request_revalidation() {
        for (n, v) in [("cache-control", "no-cache"), ("cache-control", "max-age=0"), ("pragma", "no-cache")] {
            let h = headers(&[(n, v)]);
            assert!(request_wants_revalidation(&h, &directives(&h)), "{n}: {v}");
        }
        let h = headers(&[("cache-control", "max-age=10")]);
        assert!(!request_wants_revalidation(&h, &directives(&h)));
    }

    #[test]
    fn entity_tags_compare_weakly() {
        let tag = b"\"abc\"";
        assert!(if_none_match(&headers(&[("if-none-match", "\"abc\"")]), tag));
        assert!(if_none_match(&headers(&[("if-none-match", "W/\"abc\"")]), tag));
        assert!(if_none_match(&headers(&[("if-none-match", "\"x,y\", W/\"abc\"")]), tag));
        assert!(if_none_match(&headers(&[("if-none-match", "*")]), tag));
        assert!(!if_none_match(&headers(&[("if-none-match", "\"abcd\"")]), tag));
        assert!(!if_none_match(&headers(&[("if-none-match", "abc")]), tag));
        assert!(!if_none_match(&headers(&[("if-none-match", "\"x,\"abc\"")]), tag));
        assert!(!if_none_match(&HeaderMap::new(), tag));
        assert!(if_none_match(&headers(&[("if-none-match", "W/\"abc\"")]), b"W/\"abc\""));
    }
}
