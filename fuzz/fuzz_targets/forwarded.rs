//! The `X-Forwarded-For` and `Forwarded` (RFC 7239) parsers behind
//! `brisk_ratelimit::key::ClientIp`. For arbitrary header values: no panic,
//! one hop per list element (split on bytes: invalid UTF-8 in one element
//! does not hide the others), every address read is one the parser reads back
//! from its own text, and the client address is the peer or one of the hops
//! (the peer itself when it is not a trusted proxy). For addresses written
//! in every form the RFCs allow (ports, brackets, quotes, parameters, case),
//! both parsers read back exactly the addresses written.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use brisk_ratelimit::fuzzing::{forwarded, parse_node, x_forwarded_for};
use brisk_ratelimit::key::{ClientIp, ForwardedHeader};
use http::HeaderMap;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Addr {
    V4([u8; 4]),
    V6([u16; 8]),
    Mapped([u8; 4]),
}

impl Addr {
    fn ip(&self) -> IpAddr {
        match *self {
            Addr::V4(o) => IpAddr::V4(Ipv4Addr::from(o)),
            Addr::V6(s) => IpAddr::V6(Ipv6Addr::from(s)),
            Addr::Mapped(o) => IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Written {
    addr: Addr,
    port: Option<u16>,
    bracket_v6: bool,
    quote: bool,
    upper_for: bool,
    params_before: bool,
    params_after: bool,
    pad: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    values: Vec<Vec<u8>>,
    written: Vec<Written>,
    peer: Addr,
    trusted: Vec<(Addr, u8)>,
}

fn check_hops(hops: &[Option<IpAddr>]) {
    for ip in hops.iter().flatten() {
        assert_eq!(parse_node(&ip.to_string()), Some(*ip));
        let bracketed = match ip {
            IpAddr::V4(v4) => format!("{v4}:8080"),
            IpAddr::V6(v6) => format!("\"[{v6}]:8080\""),
        };
        assert_eq!(parse_node(&bracketed), Some(*ip));
    }
}

/// Addresses written as a proxy chain would: the XFF and the Forwarded text.
fn write(written: &[Written]) -> (String, String) {
    let (mut xff, mut fwd) = (Vec::new(), Vec::new());
    for w in written {
        let ip = w.addr.ip();
        let node = match (ip, w.port) {
            (IpAddr::V4(v4), Some(port)) => format!("{v4}:{port}"),
            (IpAddr::V4(v4), None) => v4.to_string(),
            (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
            (IpAddr::V6(v6), None) if w.bracket_v6 => format!("[{v6}]"),
            (IpAddr::V6(v6), None) => v6.to_string(),
        };
        let pad = if w.pad { " " } else { "" };
        xff.push(format!("{pad}{node}{pad}"));
        // RFC 7239: a node with ':' or '[' must be quoted.
        let value = if w.quote || node.contains([':', '[']) { format!("\"{node}\"") } else { node };
        let name = if w.upper_for { "For" } else { "for" };
        let mut pairs = Vec::new();
        if w.params_before {
            pairs.push("by=\"[2001:db8::1];x,y\"".to_owned());
        }
        pairs.push(format!("{name}={value}"));
        if w.params_after {
            pairs.push("proto=https;host=\"a,b;c\"".to_owned());
        }
        fwd.push(format!("{pad}{}", pairs.join(";")));
    }
    (xff.join(","), fwd.join(","))
}

fuzz_target!(|input: Input| {
    let values: Vec<&[u8]> = input.values.iter().map(Vec::as_slice).take(8).collect();

    // Arbitrary values.
    let xff = x_forwarded_for(&values);
    let expected: usize =
        values.iter().map(|v| v.split(|&b| b == b',').filter(|p| !p.trim_ascii().is_empty()).count()).sum();
    assert_eq!(xff.len(), expected, "one X-Forwarded-For hop per element");
    check_hops(&xff);
    let fwd = forwarded(&values);
    assert!(fwd.len() <= values.iter().map(|v| v.len() + 1).sum::<usize>());
    check_hops(&fwd);

    // The client address, through the public extractor.
    let trusted: Vec<IpNet> =
        input.trusted.iter().take(4).filter_map(|(a, len)| IpNet::new(a.ip(), *len).ok()).collect();
    let mut headers = HeaderMap::new();
    for v in &values {
        if let Ok(v) = http::HeaderValue::from_bytes(v) {
            headers.append("x-forwarded-for", v.clone());
            headers.append(http::header::FORWARDED, v);
        }
    }
    let peer = input.peer.ip();
    let peer_trusted = trusted.iter().any(|net| {
        let ip = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        net.contains(&ip)
    });
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let client = ClientIp::trusting(trusted.iter().copied()).header(header).client_addr(peer, &headers);
        if !peer_trusted {
            assert_eq!(client, peer, "an untrusted peer chose its own key");
        } else if client != peer {
            let names = match header {
                ForwardedHeader::XForwardedFor => "x-forwarded-for",
                _ => "forwarded",
            };
            let sent: Vec<&[u8]> = headers.get_all(names).iter().map(|v| v.as_bytes()).collect();
            let hops = match header {
                ForwardedHeader::XForwardedFor => x_forwarded_for(&sent),
                _ => forwarded(&sent),
            };
            assert!(hops.contains(&Some(client)), "client {client} is neither the peer nor a hop");
        }
    }

    // Addresses written in every allowed form read back exactly.
    let written = &input.written[..input.written.len().min(16)];
    if written.is_empty() {
        return;
    }
    let ips: Vec<Option<IpAddr>> = written.iter().map(|w| Some(w.addr.ip())).collect();
    let (xff_text, fwd_text) = write(written);
    assert_eq!(x_forwarded_for(&[xff_text.as_bytes()]), ips, "X-Forwarded-For: {xff_text}");
    assert_eq!(forwarded(&[fwd_text.as_bytes()]), ips, "Forwarded: {fwd_text}");
});
