//! What the layer's functions see of a request, and the default key.

use http::{Extensions, HeaderMap, Method, Request, Uri};

/// A read-only view of a request, given to the layer's key, condition, TTL
/// and tag functions and to [`InvalidateLayer`](super::InvalidateLayer)'s
/// target functions.
#[derive(Debug, Clone, Copy)]
pub struct CacheRequest<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> CacheRequest<'a> {
    /// A view of `request`.
    pub fn new<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The path.
    pub fn path(&self) -> &'a str {
        self.uri.path()
    }

    /// The query, without `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.uri.query()
    }

    /// Whether the query holds `name` (e.g. `cache`) with value `value`
    /// (e.g. `false`), compared without percent-decoding.
    pub fn query_has(&self, name: &str, value: &str) -> bool {
        self.query().is_some_and(|q| {
            q.split('&').any(|pair| match pair.split_once('=') {
                Some((n, v)) => n == name && v == value,
                None => pair == name && value.is_empty(),
            })
        })
    }

    /// The headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The extensions (where a router puts path parameters and its matched route).
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// The route template that matched (axum's `MatchedPath`, e.g.
    /// `/api/blueprints/{id}`) when the `axum` feature is on and the layer
    /// runs inside an axum `Router`; otherwise the path.
    pub fn route(&self) -> &'a str {
        #[cfg(feature = "axum")]
        if let Some(matched) = self.extensions.get::<axum::extract::MatchedPath>() {
            return matched.as_str();
        }
        self.path()
    }
}

/// The default key: `{prefix}:{method}{path}`, then `?` and the query's
/// `name=value` pairs sorted (duplicates kept, empty pairs dropped), so
/// `?b=2&a=1` and `?a=1&b=2` share an entry while `?a=1&a=1` and `?a=1` do
/// not. `HEAD` is keyed as `GET` (it is answered from the `GET` entry).
/// The layer builds it as [`get_key`] of [`with_target`]; written out here
/// for the tests to check that against.
#[cfg(test)]
pub(crate) fn default_key(prefix: &str, req: &CacheRequest<'_>) -> String {
    let method = if req.method() == Method::HEAD { GET } else { req.method().as_str() };
    let mut key = format!("{prefix}:{method}");
    push_target(&mut key, req.path(), req.query().unwrap_or(""));
    key
}

/// The default key's method, as a `GET` (and a `HEAD`) has it.
const GET: &str = "GET";

/// The default key of a `GET` (or `HEAD`) whose target (see
/// [`with_target`]) is `target`: `{prefix}:GET{target}`.
pub(crate) fn get_key(prefix: &str, target: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + 1 + GET.len() + target.len());
    key.push_str(prefix);
    key.push(':');
    key.push_str(GET);
    key.push_str(target);
    key
}

thread_local! {
    /// A buffer for the targets that are not the URI's own, kept between a
    /// thread's lookups.
    static TARGET: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// `f` of what the default key of a `GET` of `uri` holds after
/// `{prefix}:GET`: the path, then the sorted query. Taken from the URI itself
/// when it is already in that form (a query of one pair, or none), so a
/// lookup builds no key; otherwise written in a buffer kept for the next.
pub(crate) fn with_target<R>(uri: &Uri, f: impl FnOnce(&str) -> R) -> R {
    if let Some(pq) = uri.path_and_query() {
        let target = pq.as_str();
        // A path of its own (an empty one reads as `/`), and a query of one
        // pair or none: the default key holds it as it is.
        let one_pair = match pq.query() {
            None => true,
            Some(q) => !q.is_empty() && !q.as_bytes().contains(&b'&'),
        };
        if one_pair && target.starts_with('/') {
            return f(target);
        }
    }
    let mut buf = TARGET.take();
    buf.clear();
    push_target(&mut buf, uri.path(), uri.query().unwrap_or(""));
    let out = f(&buf);
    TARGET.set(buf);
    out
}

/// Where the target (see [`with_target`]) starts in `key` when `key` is a
/// default key (under `prefix`) of a `GET`, as [`get_key`] writes it; `None`
/// for any other key.
pub(crate) fn get_key_target_at(key: &str, prefix: &str) -> Option<usize> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(':')?.strip_prefix(GET)?;
    Some(key.len() - rest.len())
}

fn push_target(key: &mut String, path: &str, query: &str) {
    key.push_str(path);
    push_sorted_query(key, query);
}

fn push_sorted_query(key: &mut String, query: &str) {
    if !query.contains('&') {
        // One pair, or none: nothing to sort.
        if !query.is_empty() {
            key.push('?');
            key.push_str(query);
        }
        return;
    }
    // Up to this many pairs are sorted on the stack.
    const FEW: usize = 16;
    let mut few = [""; FEW];
    let mut n = 0;
    let mut pairs = query.split('&').filter(|p| !p.is_empty());
    for pair in pairs.by_ref() {
        if n == FEW {
            let mut many: Vec<&str> = few.to_vec();
            many.push(pair);
            many.extend(pairs);
            many.sort_unstable();
            push_pairs(key, &many);
            return;
        }
        few[n] = pair;
        n += 1;
    }
    let few = &mut few[..n];
    few.sort_unstable();
    push_pairs(key, few);
}

fn push_pairs(key: &mut String, pairs: &[&str]) {
    if pairs.is_empty() {
        return;
    }
    key.push('?');
    for (i, pair) in pairs.iter().enumerate() {
        if i > 0 {
            key.push('&');
        }
        key.push_str(pair);
    }
}

/// Appends the request's values of the response's `Vary` headers to `key`:
/// `#vary:accept=text%2Fhtml&accept-language=` (values percent-escaped, so
/// no value can forge another's suffix).
pub(crate) fn vary_key(key: &str, vary: &[(String, Option<Vec<u8>>)]) -> String {
    let mut out = String::with_capacity(key.len() + 16 * vary.len() + 6);
    out.push_str(key);
    out.push_str("#vary:");
    for (i, (name, value)) in vary.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            for &b in value {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'*' | b'/' | b',' | b';') {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key_of(uri: &str) -> String {
        let req = Request::get(uri).body(()).unwrap();
        default_key("cache", &CacheRequest::new(&req))
    }

    #[test]
    fn query_order_does_not_split_keys_and_duplicates_do_not_merge() {
        assert_eq!(key_of("/a?b=2&a=1"), key_of("/a?a=1&b=2"));
        assert_eq!(key_of("/a?b=2&a=1"), "cache:GET/a?a=1&b=2");
        assert_ne!(key_of("/a?a=1&a=1"), key_of("/a?a=1"));
        assert_ne!(key_of("/a?a=1&a=2"), key_of("/a?a=2"));
        assert_eq!(key_of("/a?"), key_of("/a"));
        assert_eq!(key_of("/a?x=1&"), key_of("/a?x=1"));
        assert_ne!(key_of("/a?x"), key_of("/a"));
        let head = Request::head("/a").body(()).unwrap();
        assert_eq!(default_key("cache", &CacheRequest::new(&head)), key_of("/a"));
    }

    #[test]
    fn long_queries_are_sorted_too() {
        let pairs: Vec<String> = (0..40).map(|i| format!("p{:02}={}", (i * 7) % 40, i % 3)).collect();
        let mut sorted = pairs.clone();
        sorted.sort_unstable();
        let reversed: Vec<&str> = pairs.iter().rev().map(String::as_str).collect();
        let key = key_of(&format!("/a?{}", pairs.join("&")));
        assert_eq!(key, format!("cache:GET/a?{}", sorted.join("&")));
        assert_eq!(key, key_of(&format!("/a?&{}&", reversed.join("&&"))));
        assert_eq!(key_of("/a?x=1"), "cache:GET/a?x=1");
    }

    #[test]
    fn query_has_compares_pairs() {
        let req = Request::get("/a?x=1&cache=false").body(()).unwrap();
        let view = CacheRequest::new(&req);
        assert!(view.query_has("cache", "false"));
        assert!(!view.query_has("cache", "true"));
        assert!(!view.query_has("ache", "false"));
    }

    #[test]
    fn vary_values_cannot_forge_each_other() {
        let a = vary_key("k", &[("accept".into(), Some(b"a&accept-language=b".to_vec()))]);
        let b =
            vary_key("k", &[("accept".into(), Some(b"a".to_vec())), ("accept-language".into(), Some(b"b".to_vec()))]);
        assert_ne!(a, b);
        let absent = vary_key("k", &[("accept".into(), None)]);
        let empty = vary_key("k", &[("accept".into(), Some(Vec::new()))]);
        assert_ne!(absent, empty);
    }

    /// What a lookup compares (the URI's target, borrowed or built) is what
    /// the default key holds after `{prefix}:GET`.
    fn target_matches_the_key(uri: &str) {
        let req = Request::get(uri).body(()).unwrap();
        let key = default_key("cache", &CacheRequest::new(&req));
        let target = with_target(req.uri(), str::to_owned);
        let at = get_key_target_at(&key, "cache").unwrap();
        assert_eq!(&key[at..], target, "{uri}");
        assert_eq!(format!("cache:GET{target}"), key, "{uri}");
        assert_eq!(get_key("cache", &target), key, "{uri}");
    }

    #[test]
    fn lookup_targets_are_the_keys_targets() {
        for uri in [
            "/api/blueprints?page=1",
            "/api/blueprints",
            "/",
            "/a?",
            "/a?b=2&a=1",
            "/a?&",
            "/a&b?x=1",
            "/a&b",
            "/a?x",
            "http://example.com",
            "http://example.com/p?q=1",
            "http://example.com?q=1",
            "*",
        ] {
            target_matches_the_key(uri);
        }
        assert_eq!(get_key_target_at("cache:GET/a", "cache"), Some(9));
        assert_eq!(get_key_target_at("cache:HEAD/a", "cache"), None);
        assert_eq!(get_key_target_at("other:GET/a", "cache"), None);
    }

    proptest! {
        #[test]
        fn lookup_targets_match_keys_for_any_uri(path in "(/[a-z&%=?]{0,4}){0,3}", query in proptest::option::of("[a-c=&]{0,8}")) {
            let uri = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            if Request::get(uri.as_str()).body(()).is_ok() {
                target_matches_the_key(&uri);
            }
        }

        #[test]
        fn keys_depend_on_the_multiset_of_pairs(pairs in proptest::collection::vec("[a-c]{1,2}=[0-2]{0,1}", 0..6), seed in any::<u64>()) {
            let mut shuffled = pairs.clone();
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut shuffled);
            let q1 = pairs.join("&");
            let q2 = shuffled.join("&");
            prop_assert_eq!(key_of(&format!("/p?{q1}")), key_of(&format!("/p?{q2}")));
            // Dropping one pair changes the key.
            if !pairs.is_empty() {
                let q3 = pairs[1..].join("&");
                prop_assert_ne!(key_of(&format!("/p?{q1}")), key_of(&format!("/p?{q3}")));
            }
        }
    }
}
