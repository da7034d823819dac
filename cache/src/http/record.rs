//! A stored response: `[version][meta length u32 BE][meta (postcard)][body]`.
//! The body is the tail of the stored bytes, so a hit slices it without a copy.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, response};
use serde::{Deserialize, Serialize};

use super::policy;

const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Meta<'a> {
    status: u16,
    #[serde(borrow)]
    headers: Vec<(&'a str, &'a [u8])>,
    /// The request's values of the response's `Vary` headers.
    #[serde(borrow)]
    vary: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// The request's values of the `Vary` headers a response names.
pub(crate) type VaryValues = Vec<(String, Option<Vec<u8>>)>;

/// A decoded stored response.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) vary: VaryValues,
    pub(crate) body: Bytes,
}

/// Headers never stored: hop-by-hop ones, those the layer writes itself, and
/// the length (recomputed from the body).
fn stored(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "set-cookie"
            | "age"
            | "content-length"
            | "x-cache"
            | "x-cache-key"
            | "cache-status"
    )
}

/// The request's values for `names`.
pub(crate) fn vary_values(request: &HeaderMap, names: &[String]) -> VaryValues {
    names
        .iter()
        .map(|name| {
            let mut joined: Option<Vec<u8>> = None;
            for value in request.get_all(name.as_str()) {
                let v = joined.get_or_insert_with(Vec::new);
                if !v.is_empty() {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(value.as_bytes());
            }
            (name.clone(), joined)
        })
        .collect()
}

/// Whether `request` carries the values a record was stored for.
pub(crate) fn vary_matches(request: &HeaderMap, vary: &VaryValues) -> bool {
    if vary.is_empty() {
        return true;
    }
    let names: Vec<String> = vary.iter().map(|(n, _)| n.clone()).collect();
    vary_values(request, &names) == *vary
}

/// Encodes a response for storage, adding a computed `ETag` when it has none.
pub(crate) fn encode(parts: &response::Parts, vary: &VaryValues, body: &[u8]) -> Bytes {
    let etag = (!parts.headers.contains_key(header::ETAG)).then(|| policy::computed_etag(body));
    let mut headers: Vec<(&str, &[u8])> =
        parts.headers.iter().filter(|(n, _)| stored(n)).map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
    if let Some(etag) = &etag {
        headers.push(("etag", etag.as_bytes()));
    }
    let meta = Meta {
        status: parts.status.as_u16(),
        headers,
        vary: vary.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect(),
    };
    let meta = postcard::to_allocvec(&meta).expect("postcard writes to a Vec without failing");
    let mut out = BytesMut::with_capacity(5 + meta.len() + body.len());
    out.put_u8(VERSION);
    out.put_u32(u32::try_from(meta.len()).unwrap_or(u32::MAX));
    out.put_slice(&meta);
    out.put_slice(body);
    out.freeze()
}

/// Decodes stored bytes; `None` for anything this version did not write.
pub(crate) fn decode(bytes: &Bytes) -> Option<Record> {
    if bytes.len() < 5 || bytes[0] != VERSION {
        return None;
    }
    let len = usize::try_from(u32::from_be_bytes(bytes[1..5].try_into().ok()?)).ok()?;
    let end = 5usize.checked_add(len)?;
    let meta: Meta<'_> = postcard::from_bytes(bytes.get(5..end)?).ok()?;
    let status = StatusCode::from_u16(meta.status).ok()?;
    let mut headers = HeaderMap::with_capacity(meta.headers.len() + 6);
    for (name, value) in meta.headers {
        // The value shares the stored bytes: no copy.
        let value = if value.is_empty() { Bytes::new() } else { bytes.slice_ref(value) };
        headers.append(HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_maybe_shared(value).ok()?);
    }
    let vary = meta.vary.into_iter().map(|(n, v)| (n.to_owned(), v.map(<[u8]>::to_vec))).collect();
    Some(Record { status, headers, vary, body: bytes.slice(end..) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_adds_an_etag_and_drops_hop_by_hop_headers() {
        let (parts, ()) = http::Response::builder()
            .status(203)
            .header("content-type", "text/plain")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .header("connection", "close")
            .header("content-length", "5")
            .body(())
            .unwrap()
            .into_parts();
        let vary = vec![("accept".to_owned(), Some(b"text/plain".to_vec())), ("x-absent".to_owned(), None)];
        let bytes = encode(&parts, &vary, b"hello");
        let rec = decode(&bytes).unwrap();
        assert_eq!(rec.status, 203);
        assert_eq!(&rec.body[..], b"hello");
        assert_eq!(rec.vary, vary);
        assert_eq!(rec.headers.get_all("x-multi").iter().count(), 2);
        assert!(rec.headers.get("connection").is_none() && rec.headers.get("content-length").is_none());
        assert_eq!(rec.headers.get("etag").unwrap().as_bytes(), policy::computed_etag(b"hello").as_bytes());
    }

    #[test]
    fn an_etag_of_the_origin_is_kept() {
        let (parts, ()) = http::Response::builder().header("etag", "W/\"v1\"").body(()).unwrap().into_parts();
        let rec = decode(&encode(&parts, &Vec::new(), b"x")).unwrap();
        assert_eq!(rec.headers.get_all("etag").iter().map(|v| v.as_bytes()).collect::<Vec<_>>(), [b"W/\"v1\""]);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&Bytes::from(bytes));
        }
    }
}
