//! Key extractors: which client a request counts against.
//!
//! ```
//! use brisk_ratelimit::key::{ClientIp, ExtensionKey, KeyExtractor, PeerIp};
//! use http::Request;
//! use std::net::SocketAddr;
//!
//! #[derive(Clone)]
//! struct User { id: u64 }
//!
//! // Behind a load balancer in 10.0.0.0/8: the client is the first untrusted hop from the right.
//! let client_ip = ClientIp::trusting(["10.0.0.0/8".parse().unwrap()]);
//! let mut req = Request::new(());
//! req.extensions_mut().insert(SocketAddr::from(([10, 0, 0, 5], 4000)));
//! req.headers_mut().insert("x-forwarded-for", "198.51.100.9, 10.1.2.3".parse().unwrap());
//! assert_eq!(client_ip.extract(&req).as_deref(), Some("198.51.100.9"));
//! // The peer itself, ignoring headers:
//! assert_eq!(PeerIp::new().extract(&req).as_deref(), Some("10.0.0.5"));
//!
//! // An authenticated user put into the extensions by an auth layer:
//! let by_user = ExtensionKey::new(|user: &User| user.id.to_string());
//! req.extensions_mut().insert(User { id: 42 });
//! assert_eq!(by_user.extract(&req).as_deref(), Some("42"));
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderName, Request};
use ipnet::{IpNet, Ipv6Net};

pub(crate) mod forwarded;

/// Finds the rate-limit key of a request; `None` when it has none (see
/// [`MissingKey`](crate::MissingKey)).
///
/// Implemented by the extractors of this module, by pairs `(A, B)` (the key
/// `a|b`, e.g. route and user), and by closures `Fn(&Request<B>) -> Option<String>`.
pub trait KeyExtractor<B> {
    /// The key of `request`.
    fn extract(&self, request: &Request<B>) -> Option<String>;
}

impl<B, F> KeyExtractor<B> for F
where
    F: Fn(&Request<B>) -> Option<String>,
{
    fn extract(&self, request: &Request<B>) -> Option<String> {
        self(request)
    }
}

impl<B, X: KeyExtractor<B>, Y: KeyExtractor<B>> KeyExtractor<B> for (X, Y) {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        let a = self.0.extract(request)?;
        let b = self.1.extract(request)?;
        Some(format!("{a}|{b}"))
    }
}

/// How the peer (TCP) address is found in the request extensions.
pub type PeerAddrFn = fn(&Extensions) -> Option<IpAddr>;

/// The default peer lookup: axum's `ConnectInfo<SocketAddr>` or
/// `MockConnectInfo<SocketAddr>` (feature `axum`), else a `SocketAddr` or `IpAddr` extension (insert one yourself
/// when serving with hyper directly).
pub fn default_peer_addr(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    {
        if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
            return Some(info.0.ip());
        }
        // What axum's own `ConnectInfo` extractor falls back to in tests.
        if let Some(info) = extensions.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>() {
            return Some(info.0.ip());
        }
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip).or_else(|| extensions.get::<IpAddr>().copied())
}

/// Formats an address as a key: IPv4 as is, IPv4-mapped IPv6 as IPv4, other
/// IPv6 as its `/prefix` network (a host holds a whole /64).
fn ip_key(ip: IpAddr, v6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None if v6_prefix >= 128 => v6.to_string(),
            None => match Ipv6Net::new(v6, v6_prefix) {
                Ok(net) => net.trunc().to_string(),
                Err(_) => v6.to_string(),
            },
        },
    }
}

/// The TCP peer's address, IPv6 grouped by prefix (default /64). The default key.
///
/// Behind a proxy or load balancer every client shares the proxy's address:
/// use [`ClientIp`] there.
#[derive(Clone, Copy)]
pub struct PeerIp {
    v6_prefix: u8,
    peer: PeerAddrFn,
}

impl PeerIp {
    /// Peer IP, IPv6 grouped by /64.
    pub fn new() -> Self {
        PeerIp { v6_prefix: 64, peer: default_peer_addr }
    }

    /// Groups IPv6 addresses by this prefix length (128 = no grouping; values above 128 mean 128).
    #[must_use]
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.v6_prefix = prefix.min(128);
        self
    }

    /// Finds the peer address with `peer` instead of [`default_peer_addr`].
    #[must_use]
    pub fn peer_addr(mut self, peer: PeerAddrFn) -> Self {
        self.peer = peer;
        self
    }
}

impl Default for PeerIp {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PeerIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIp").field("v6_prefix", &self.v6_prefix).finish_non_exhaustive()
    }
}

impl<B> KeyExtractor<B> for PeerIp {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        (self.peer)(request.extensions()).map(|ip| ip_key(ip, self.v6_prefix))
    }
}

/// Which header carries the proxies' chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The client's address behind **trusted proxies only**.
///
/// When the peer is not a trusted proxy, its own address is the key and the
/// forwarding headers are ignored (anyone can send them). When it is, the
/// chain is walked from the right — the hops each trusted proxy appended —
/// skipping trusted addresses; the first untrusted address is the client. An
/// unreadable hop ends the walk at the last trusted address read. IPv6 is
/// grouped by prefix as in [`PeerIp`].
#[derive(Clone)]
pub struct ClientIp {
    trusted: Arc<[IpNet]>,
    header: ForwardedHeader,
    v6_prefix: u8,
    peer: PeerAddrFn,
}

impl ClientIp {
    /// Trusts proxies in `networks` (e.g. `10.0.0.0/8`, your load balancer's range).
    pub fn trusting(networks: impl IntoIterator<Item = IpNet>) -> Self {
        ClientIp {
            trusted: networks.into_iter().collect(),
            header: ForwardedHeader::XForwardedFor,
            v6_prefix: 64,
            peer: default_peer_addr,
        }
    }

    /// Reads this header (default `X-Forwarded-For`).
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Groups IPv6 addresses by this prefix length (default 64).
    #[must_use]
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.v6_prefix = prefix.min(128);
        self
    }

    /// Finds the peer address with `peer` instead of [`default_peer_addr`].
    #[must_use]
    pub fn peer_addr(mut self, peer: PeerAddrFn) -> Self {
        self.peer = peer;
        self
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request whose peer is `peer`.
    pub fn client_addr(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => {
                forwarded::x_forwarded_for(headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes()))
            }
            ForwardedHeader::Forwarded => {
                forwarded::forwarded(headers.get_all(http::header::FORWARDED).iter().map(|v| v.as_bytes()))
            }
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("trusted", &self.trusted)
            .field("header", &self.header)
            .field("v6_prefix", &self.v6_prefix)
            .finish_non_exhaustive()
    }
}

impl<B> KeyExtractor<B> for ClientIp {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        let peer = (self.peer)(request.extensions())?;
        Some(ip_key(self.client_addr(peer, request.headers()), self.v6_prefix))
    }
}

/// The value of a header, e.g. an API key. Requests without it (or with a
/// value that is empty or not visible ASCII) have no key.
///
/// The value is used as the store key verbatim; prefer a key id over a secret.
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the header `name`.
    pub fn new(name: HeaderName) -> Self {
        HeaderKey { name }
    }
}

impl<B> KeyExtractor<B> for HeaderKey {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        let value = request.headers().get(&self.name)?.to_str().ok()?.trim();
        (!value.is_empty() && value.len() <= 512).then(|| value.to_owned())
    }
}

/// A value from the request extensions, e.g. the user an auth layer inserted.
pub struct ExtensionKey<T, F> {
    key: F,
    _type: PhantomData<fn(&T)>,
}

impl<T, F> ExtensionKey<T, F>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> String,
{
    /// Keys by `key(extension)`; requests without a `T` have no key.
    pub fn new(key: F) -> Self {
        ExtensionKey { key, _type: PhantomData }
    }
}

impl<T, F: Clone> Clone for ExtensionKey<T, F> {
    fn clone(&self) -> Self {
        ExtensionKey { key: self.key.clone(), _type: PhantomData }
    }
}

impl<T, F> fmt::Debug for ExtensionKey<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtensionKey").field("type", &std::any::type_name::<T>()).finish_non_exhaustive()
    }
}

impl<B, T, F> KeyExtractor<B> for ExtensionKey<T, F>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> String,
{
    fn extract(&self, request: &Request<B>) -> Option<String> {
        request.extensions().get::<T>().map(&self.key).filter(|k| !k.is_empty())
    }
}

/// The matched route template (`/users/{id}`), from axum's `MatchedPath`:
/// one budget for a route across all clients, or paired with a client key
/// `(RouteTemplate, PeerIp::new())` for per-route, per-client limits.
///
/// A request that matched no route (the layer is on the whole `Router`, not a
/// `route_layer`, and the path is unknown) is keyed
/// [`RouteTemplate::UNMATCHED`]: every unknown path shares that one key, so
/// spelling a path differently (`/API/x`, `//x`, `%2F`) neither earns a fresh
/// budget nor grows the key space, and the router still answers its 404.
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteTemplate;

#[cfg(feature = "axum")]
impl RouteTemplate {
    /// The key of a request that matched no route. Not a valid route
    /// template, so it cannot collide with one.
    pub const UNMATCHED: &'static str = "<unmatched>";
}

#[cfg(feature = "axum")]
impl<B> KeyExtractor<B> for RouteTemplate {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        Some(match request.extensions().get::<axum::extract::MatchedPath>() {
            Some(path) => path.as_str().to_owned(),
            None => Self::UNMATCHED.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(peer: &str, xff: &[&str], forwarded: &[&str]) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(peer.parse::<IpAddr>().unwrap());
        for v in xff {
            req.headers_mut().append("x-forwarded-for", v.parse().unwrap());
        }
        for v in forwarded {
            req.headers_mut().append("forwarded", v.parse().unwrap());
        }
        req
    }

    fn trusted() -> ClientIp {
        ClientIp::trusting(["10.0.0.0/8".parse().unwrap(), "2001:db8:ffff::/48".parse().unwrap()])
    }

    #[test]
    fn spoofed_header_from_untrusted_peer_is_ignored() {
        let req = request("198.51.100.7", &["1.2.3.4"], &["for=1.2.3.4"]);
        assert_eq!(trusted().extract(&req).as_deref(), Some("198.51.100.7"));
        assert_eq!(trusted().header(ForwardedHeader::Forwarded).extract(&req).as_deref(), Some("198.51.100.7"));
    }

    #[test]
    fn walks_from_the_right_to_the_first_untrusted_hop() {
        // The client forged "6.6.6.6"; the trusted proxies appended 203.0.113.9 and 10.0.0.2.
        let req = request("10.0.0.1", &["6.6.6.6, 203.0.113.9", "10.0.0.2"], &[]);
        assert_eq!(trusted().extract(&req).as_deref(), Some("203.0.113.9"));
        let req = request("10.0.0.1", &[], &["for=6.6.6.6, for=\"203.0.113.9:1234\";proto=https", "for=10.0.0.2"]);
        assert_eq!(trusted().header(ForwardedHeader::Forwarded).extract(&req).as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn all_trusted_or_garbage_stops_at_last_trusted() {
        let req = request("10.0.0.1", &["10.0.0.3, 10.0.0.2"], &[]);
        assert_eq!(trusted().extract(&req).as_deref(), Some("10.0.0.3"));
        let req = request("10.0.0.1", &["garbage, 10.0.0.2"], &[]);
        assert_eq!(trusted().extract(&req).as_deref(), Some("10.0.0.2"));
        let req = request("10.0.0.1", &[], &[]);
        assert_eq!(trusted().extract(&req).as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn ipv6_is_grouped_and_mapped_v4_unwrapped() {
        let req = request("2001:db8:1:2:3:4:5:6", &[], &[]);
        assert_eq!(PeerIp::new().extract(&req).as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(PeerIp::new().ipv6_prefix(48).extract(&req).as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(PeerIp::new().ipv6_prefix(128).extract(&req).as_deref(), Some("2001:db8:1:2:3:4:5:6"));
        let req = request("::ffff:192.0.2.1", &[], &[]);
        assert_eq!(PeerIp::new().extract(&req).as_deref(), Some("192.0.2.1"));
        let req = request("2001:db8:ffff::1", &["2001:db8:aaaa:bbbb:1::1"], &[]);
        assert_eq!(trusted().extract(&req).as_deref(), Some("2001:db8:aaaa:bbbb::/64"));
    }

    #[test]
    fn header_extension_and_pairs() {
        let mut req = request("192.0.2.1", &[], &[]);
        req.headers_mut().insert("x-api-key", "k-123".parse().unwrap());
        let header = HeaderKey::new(HeaderName::from_static("x-api-key"));
        assert_eq!(header.extract(&req).as_deref(), Some("k-123"));
        assert_eq!((header, PeerIp::new()).extract(&req).as_deref(), Some("k-123|192.0.2.1"));
        assert_eq!(ExtensionKey::new(|n: &u32| n.to_string()).extract(&req), None);
        let closure = |r: &Request<()>| Some(r.uri().path().to_owned());
        assert_eq!(closure.extract(&req).as_deref(), Some("/"));
    }

    proptest! {
        #[test]
        fn hostile_headers_never_panic_and_untrusted_peers_win(
            xff in ".{0,100}",
            fwd in "[ -~]{0,100}",
            peer in any::<std::net::Ipv4Addr>(),
        ) {
            let mut req = Request::new(());
            req.extensions_mut().insert(IpAddr::V4(peer));
            if let Ok(v) = http::HeaderValue::from_str(&xff) { req.headers_mut().insert("x-forwarded-for", v); }
            if let Ok(v) = http::HeaderValue::from_str(&fwd) { req.headers_mut().insert("forwarded", v); }
            let key = trusted().extract(&req).unwrap();
            let _ = trusted().header(ForwardedHeader::Forwarded).extract(&req).unwrap();
            if !trusted().is_trusted(IpAddr::V4(peer)) {
                prop_assert_eq!(key, peer.to_string());
            }
        }
    }
}
