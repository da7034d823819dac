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

/// The hops of all `X-Forwarded-For` values, left to right.
pub(crate) fn x_forwarded_for<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            hops.push(None);
            continue;
        };
        for part in value.split(',') {
            if part.trim().is_empty() {
                continue;
            }
            hops.push(parse_node(part));
        }
    }
    hops
}

/// The `for=` nodes of all `Forwarded` values, left to right. An element
/// without `for=`, or with an obfuscated or `unknown` node, is `None`.
pub(crate) fn forwarded<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            hops.push(None);
            continue;
        };
        for element in split_outside_quotes(value, ',') {
            if element.trim().is_empty() {
                continue;
            }
            let node = split_outside_quotes(element, ';').into_iter().find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim().eq_ignore_ascii_case("for").then(|| value.trim())
            });
            hops.push(node.and_then(parse_node));
        }
    }
    hops
}

/// Splits on `sep` except inside double quotes (with `\` escapes).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
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
