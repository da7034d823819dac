//! Parsers for `X-Forwarded-For` and `Forwarded` (RFC 7239). They take
//! hostile input: they never panic, and an element they cannot read is
//! returned as `None` (the walk stops there).

use std::net::IpAddr;

/// Parses one node: an IP, `ip:port`, `[ipv6]` or `[ipv6]:port`, optionally quoted.
pub(crate) fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"').trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || (after.starts_with(':') && after[1..].bytes().all(|b| b.is_ascii_digit()))) {
            return None;
        }
        return rest[..end].parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    // IPv4 with a port: exactly one ':'.
    let (host, port) = s.split_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The hops of all `X-Forwarded-For` values, left to right. Values are read as
/// bytes: a hop that is not an address (obs-text included) is `None` and does
/// not hide the hops after it.
pub(crate) fn x_forwarded_for<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in values {
        for part in value.split(|&b| b == b',') {
            if part.trim_ascii().is_empty() {
                continue;
            }
            hops.push(std::str::from_utf8(part).ok().and_then(parse_node));
        }
    }
    hops
}

/// The `for=` nodes of all `Forwarded` values, left to right. An element
/// without `for=`, or with an obfuscated, `unknown` or unreadable node, is
/// `None`.
///
/// Elements are split from the right: what a trusted proxy appended stays
/// readable whatever the client wrote before it (an unterminated quote or
/// obs-text swallows only the client's own elements).
pub(crate) fn forwarded<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in values {
        for element in split_from_right(value, b',') {
            if element.trim_ascii().is_empty() {
                continue;
            }
            let node = split_from_right(element, b';').into_iter().find_map(|pair| {
                let at = pair.iter().position(|&b| b == b'=')?;
                let (name, value) = (&pair[..at], &pair[at + 1..]);
                name.trim_ascii().eq_ignore_ascii_case(b"for").then(|| value.trim_ascii())
            });
            hops.push(node.and_then(|node| std::str::from_utf8(node).ok()).and_then(parse_node));
        }
    }
    hops
}

/// Splits on `sep` outside double-quoted strings, scanning from the right, and
/// returns the parts left to right. A quote is escaped by an odd run of `\`
/// before it. An unterminated quote makes the rest of the value, to its left,
/// one part; the parts to its right are unaffected.
fn split_from_right(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut end, mut quoted) = (s.len(), false);
    for i in (0..s.len()).rev() {
        let c = s[i];
        if c == b'"' {
            let backslashes = s[..i].iter().rev().take_while(|&&b| b == b'\\').count();
            if !quoted || backslashes % 2 == 0 {
                quoted = !quoted;
            }
        } else if c == sep && !quoted {
            parts.push(&s[i + 1..end]);
            end = i;
        }
    }
    parts.push(&s[..end]);
    parts.reverse();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn nodes() {
        assert_eq!(parse_node(" 192.0.2.1 "), ip("192.0.2.1"));
        assert_eq!(parse_node("192.0.2.1:8080"), ip("192.0.2.1"));
        assert_eq!(parse_node("\"[2001:db8::1]:4711\""), ip("2001:db8::1"));
        assert_eq!(parse_node("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(parse_node("[2001:db8::1]x"), None);
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(parse_node("_hidden"), None);
        assert_eq!(parse_node("192.0.2.1:"), None);
    }

    #[test]
    fn xff_lists() {
        let hops = x_forwarded_for([b"203.0.113.1, 10.0.0.1".as_slice(), b"10.0.0.2".as_slice()].into_iter());
        assert_eq!(hops, vec![ip("203.0.113.1"), ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(x_forwarded_for([b"evil, ,1.2.3.4".as_slice()].into_iter()), vec![None, ip("1.2.3.4")]);
    }

    #[test]
    fn rfc7239_examples() {
        let v = br#"for="_gazonk", For="[2001:db8:cafe::17]:4711", for=192.0.2.60;proto=http;by=203.0.113.43, for=198.51.100.17;host="a,b""#;
        let hops = forwarded([v.as_slice()].into_iter());
        assert_eq!(hops, vec![None, ip("2001:db8:cafe::17"), ip("192.0.2.60"), ip("198.51.100.17")]);
        assert_eq!(forwarded([b"proto=https".as_slice()].into_iter()), vec![None]);
    }

    #[test]
    fn a_clients_garbage_does_not_hide_the_hops_after_it() {
        let appended = forwarded([b"For=\"198.51.100.6, for=203.0.113.61".as_slice()].into_iter());
        assert_eq!(appended.last(), Some(&ip("203.0.113.61")));
        let obs_text = forwarded([b"for=\xff\xfe, for=203.0.113.62".as_slice()].into_iter());
        assert_eq!(obs_text, vec![None, ip("203.0.113.62")]);
        let escaped = forwarded([br#"for="a\",b", for=192.0.2.9"#.as_slice()].into_iter());
        assert_eq!(escaped, vec![None, ip("192.0.2.9")]);
        let xff = x_forwarded_for([b"\xff\xfe, 203.0.113.60".as_slice()].into_iter());
        assert_eq!(xff, vec![None, ip("203.0.113.60")]);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), s in ".{0,120}") {
            let _ = x_forwarded_for([bytes.as_slice(), s.as_bytes()].into_iter());
            let _ = forwarded([bytes.as_slice(), s.as_bytes()].into_iter());
            let _ = parse_node(&s);
        }

        #[test]
        fn forwarded_roundtrips_addresses(addrs in proptest::collection::vec(any::<IpAddr>(), 1..6)) {
            let value = addrs.iter().map(|a| match a {
                IpAddr::V4(v4) => format!("for={v4}"),
                IpAddr::V6(v6) => format!("for=\"[{v6}]:80\";proto=https"),
            }).collect::<Vec<_>>().join(", ");
            let hops = forwarded([value.as_bytes()].into_iter());
            prop_assert_eq!(hops, addrs.iter().copied().map(Some).collect::<Vec<_>>());
            let xff = addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
            prop_assert_eq!(x_forwarded_for([xff.as_bytes()].into_iter()), addrs.into_iter().map(Some).collect::<Vec<_>>());
        }
    }
}
