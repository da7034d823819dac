//! Rate-limit evasion: a client must not get a fresh key by forging
//! forwarding headers, rotating IPv6 addresses inside its prefix, or spelling
//! a route another way. Each test states the key a request must get, or
//! drives the layer and counts what it admits.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::routing::get;
use brisk_ratelimit::clock::FakeClock;
use brisk_ratelimit::key::{ClientIp, ForwardedHeader, KeyExtractor, PeerIp, RouteTemplate};
use brisk_ratelimit::{Policy, Quota, RateLimitLayer, RateLimiter};
use http::{HeaderValue, Request, StatusCode};
use tower::ServiceExt;

fn one_per_hour(prefix: &str) -> RateLimiter {
    RateLimiter::builder(prefix)
        .policy(Policy::new("api", Quota::per_hour(NonZeroU32::MIN)))
        .clock(FakeClock::new())
        .build()
        .unwrap()
}

/// A request from `peer` with these raw header values (bytes, so obs-text can be sent).
fn request(peer: &str, headers: &[(&str, &[u8])]) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(peer.parse::<IpAddr>().unwrap());
    for (name, value) in headers {
        req.headers_mut()
            .append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
    }
    req
}

fn behind(trusted: &str) -> ClientIp {
    ClientIp::trusting([trusted.parse().unwrap()])
}

/// Forged forwarding fields a client can send itself.
fn forgeries() -> Vec<(&'static str, Vec<u8>)> {
    let mut forged: Vec<(&str, Vec<u8>)> = vec![
        ("x-forwarded-for", b"198.51.100.1".to_vec()),
        ("x-forwarded-for", b"198.51.100.2, 198.51.100.3".to_vec()),
        ("x-forwarded-for", b"10.0.0.9".to_vec()),
        ("x-forwarded-for", b"127.0.0.1".to_vec()),
        ("x-forwarded-for", b"::ffff:10.0.0.9".to_vec()),
        ("x-forwarded-for", b"[2001:db8::1]:443".to_vec()),
        ("x-forwarded-for", b"unknown".to_vec()),
        ("x-forwarded-for", b"\xff\xfe".to_vec()),
        ("x-forwarded-for", b",,,".to_vec()),
        ("forwarded", b"for=198.51.100.4".to_vec()),
        ("forwarded", b"for=\"[2001:db8::2]:80\";proto=https".to_vec()),
        ("forwarded", b"for=10.0.0.9, for=198.51.100.5".to_vec()),
        ("forwarded", b"For=\"198.51.100.6".to_vec()),
        ("forwarded", b"for=_hidden".to_vec()),
        ("x-real-ip", b"198.51.100.7".to_vec()),
        ("true-client-ip", b"198.51.100.8".to_vec()),
    ];
    let long: Vec<u8> = (0..2000).map(|i| format!("198.18.{}.{}, ", i / 250, i % 250)).collect::<String>().into_bytes();
    forged.push(("x-forwarded-for", long));
    forged
}

#[test]
fn untrusted_peers_cannot_choose_their_key() {
    let mut cases = 0;
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let key = behind("10.0.0.0/8").header(header);
        for (name, value) in forgeries() {
            let req = request("203.0.113.50", &[(name, &value)]);
            assert_eq!(
                key.extract(&req).as_deref(),
                Some("203.0.113.50"),
                "{name}: {:?}",
                String::from_utf8_lossy(&value)
            );
            assert_eq!(PeerIp::new().extract(&req).as_deref(), Some("203.0.113.50"));
            cases += 1;
        }
    }
    assert_eq!(cases, 2 * forgeries().len());
}

#[tokio::test]
async fn forged_headers_from_an_untrusted_peer_share_one_limit() {
    let layer = RateLimitLayer::new(one_per_hour("rl:evasion:untrusted:")).key(behind("10.0.0.0/8"));
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
        .layer(MockConnectInfo(SocketAddr::from(([203, 0, 113, 51], 4000))));
    let mut admitted = 0;
    for (name, value) in forgeries() {
        let req = Request::get("/").header(name, HeaderValue::from_bytes(&value).unwrap()).body(Body::empty()).unwrap();
        let status = app.clone().oneshot(req).await.unwrap().status();
        assert!(status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS, "{name}: {status}");
        admitted += usize::from(status == StatusCode::OK);
    }
    assert_eq!(admitted, 1, "one unit for the peer, however it labels itself");
}

/// Behind a trusted proxy that appends the address it saw, whatever the
/// client put before that hop, the key is the address the proxy saw —
/// whether the proxy adds its own field line or appends to the client's
/// (as nginx's `$proxy_add_x_forwarded_for` does). Every case is checked and
/// every wrong key listed.
#[test]
fn forged_hops_before_a_trusted_proxy_do_not_change_the_key() {
    let mut wrong = Vec::new();
    let mut check = |key: &ClientIp, case: String, headers: &[(&str, &[u8])], expected: &str| {
        let got = key.extract(&request("10.0.0.1", headers));
        if got.as_deref() != Some(expected) {
            wrong.push(format!("{case}: {got:?}, not {expected}"));
        }
    };
    let xff = behind("10.0.0.0/8");
    let fwd = behind("10.0.0.0/8").header(ForwardedHeader::Forwarded);
    let mut cases = 0;
    for (name, value) in forgeries() {
        let shown = String::from_utf8_lossy(&value[..value.len().min(40)]).into_owned();
        let (key, own, appended, client) = match name {
            "x-forwarded-for" => (&xff, b"203.0.113.60".as_slice(), b", 203.0.113.60".as_slice(), "203.0.113.60"),
            "forwarded" => {
                (&fwd, b"for=203.0.113.61;proto=https".as_slice(), b", for=203.0.113.61".as_slice(), "203.0.113.61")
            }
            _ => continue,
        };
        // The proxy adds a field line of its own.
        check(key, format!("{name} {shown:?} then the proxy's own line"), &[(name, &value), (name, own)], client);
        // The proxy appends to the client's line.
        let joined = [value.as_slice(), appended].concat();
        check(key, format!("{name} {shown:?} appended to by the proxy"), &[(name, &joined)], client);
        cases += 2;
    }
    check(
        &fwd,
        "forwarded obs-text appended to".to_owned(),
        &[("forwarded", b"for=\xff\xfe, for=203.0.113.62")],
        "203.0.113.62",
    );
    cases += 1;
    let count = |header: &str| forgeries().iter().filter(|(n, _)| *n == header).count();
    assert_eq!(cases, 2 * count("x-forwarded-for") + 2 * count("forwarded") + 1);
    assert!(wrong.is_empty(), "{} of {cases} cases got the wrong key:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn ipv6_rotation_inside_a_prefix_keeps_one_key() {
    let peer = PeerIp::new();
    let mut keys = std::collections::BTreeSet::new();
    for i in 0..1000_u16 {
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 0xaa, 0xbb, i, i.wrapping_mul(7), 0xffff - i, i | 1);
        keys.insert(peer.extract(&request(&ip.to_string(), &[])).unwrap());
    }
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["2001:db8:aa:bb::/64"]);

    // Spellings of one address, through a trusted proxy: one key.
    let key = behind("10.0.0.0/8");
    for spelling in [
        "2001:db8:aa:bb::1",
        "2001:DB8:AA:BB::1",
        "2001:0db8:00aa:00bb:0000:0000:0000:0001",
        "[2001:db8:aa:bb::1]:443",
        "\"[2001:db8:aa:bb:ffff:ffff:ffff:ffff]\"",
        "2001:db8:aa:bb:1:2:3:4",
    ] {
        let req = request("10.0.0.1", &[("x-forwarded-for", spelling.as_bytes())]);
        assert_eq!(key.extract(&req).as_deref(), Some("2001:db8:aa:bb::/64"), "{spelling}");
    }
    // IPv4, and the same IPv4 mapped into IPv6, are one client.
    for spelling in ["203.0.113.70", "::ffff:203.0.113.70", "[::ffff:203.0.113.70]:80", "203.0.113.70:5555"] {
        let req = request("10.0.0.1", &[("x-forwarded-for", spelling.as_bytes())]);
        assert_eq!(key.extract(&req).as_deref(), Some("203.0.113.70"), "{spelling}");
    }
    let req = request("::ffff:203.0.113.70", &[]);
    assert_eq!(PeerIp::new().extract(&req).as_deref(), Some("203.0.113.70"));

    // A provider that hands out /56s: grouped by /56, rotating /64s does not help.
    let by_56 = PeerIp::new().ipv6_prefix(56);
    let keys: std::collections::BTreeSet<_> = (0..=255_u16)
        .map(|subnet| by_56.extract(&request(&format!("2001:db8:aa:bb{subnet:02x}::1"), &[])).unwrap())
        .collect();
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["2001:db8:aa:bb00::/56"]);
}

#[tokio::test]
async fn ipv6_rotation_inside_a_slash_64_is_refused_by_the_layer() {
    let limiter = one_per_hour("rl:evasion:v6:");
    let app = |ip: Ipv6Addr| {
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(RateLimitLayer::new(limiter.clone()))
            .layer(MockConnectInfo(SocketAddr::from((ip, 4000))))
    };
    let mut statuses = Vec::new();
    for host in 1..=5_u16 {
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, host, host, host, host);
        statuses.push(app(ip).oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 429, 429, 429, 429]);
    let next_64 = Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1);
    let status = app(next_64).oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
}

/// With a per-route, per-client key, every spelling of a path either is the
/// route (same template, same key) or is no route at all (404): none reaches
/// the handler with a fresh key, none is a 5xx.
#[tokio::test]
async fn route_spellings_share_the_route_key_or_reach_no_route() {
    let mut wrong = Vec::new();
    for layered_on_router in [false, true] {
        let limiter = one_per_hour(if layered_on_router { "rl:evasion:r1:" } else { "rl:evasion:r2:" });
        let layer = RateLimitLayer::new(limiter).key((RouteTemplate, PeerIp::new()));
        let routes = Router::new().route("/api/deploy/{id}", get(|| async { "deployed" }));
        let routes = if layered_on_router { routes.layer(layer) } else { routes.route_layer(layer) };
        let app = routes.layer(MockConnectInfo(SocketAddr::from(([203, 0, 113, 80], 4000))));
        let send = |path: &str| {
            let app = app.clone();
            let req = Request::get(path).body(Body::empty()).unwrap();
            async move { app.oneshot(req).await.unwrap().status() }
        };
        assert_eq!(send("/api/deploy/1").await, StatusCode::OK);
        for path in [
            "/api/deploy/1",
            "/api/deploy/2",
            "/api/deploy/%31",
            "/api/deploy/1?x=1",
            "/api/%64eploy/1",
            "/API/deploy/1",
            "/api/Deploy/1",
            "/api/deploy/1/",
            "//api/deploy/1",
            "/api//deploy/1",
            "/api/./deploy/1",
            "/api/x/../deploy/1",
            "/api/deploy/1%2F",
        ] {
            let status = send(path).await;
            if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::NOT_FOUND {
                wrong.push(format!("{path} (layer on the router: {layered_on_router}): {status}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} spellings neither limited nor 404:\n{}", wrong.len(), wrong.join("\n"));
}
