//! Who the client is, for the per-address limits: the TCP peer, or, when the peer is
//! a configured trusted reverse proxy, the rightmost hop of `Forwarded` (RFC 7239
//! `for=`) or else `X-Forwarded-For` that is not itself a trusted proxy. From any
//! other peer those headers are ignored: a client cannot pick its own limit key.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use axum::http::header::FORWARDED;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The key the per-address limits use for a request from `peer`.
pub(crate) fn client_key(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> String {
    if !trusted.contains(&normal(peer)) {
        return peer.to_string();
    }
    let forwarded: Vec<String> = headers
        .get_all(FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(forwarded_for)
        .collect();
    let hops = if forwarded.is_empty() {
        headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|hop| hop.trim().to_owned())
            .filter(|hop| !hop.is_empty())
            .collect()
    } else {
        forwarded
    };
    // Walk from the proxy next to us towards the client; the first hop that is not a
    // proxy we trust is the client as far as anyone we trust can tell.
    let mut client = None;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if trusted.contains(&ip) => client = Some(ip.to_string()),
            Some(ip) => return ip.to_string(),
            // An obfuscated or unknown hop ("_hidden", "unknown"): its name is all
            // there is to key on.
            None => return hop.clone(),
        }
    }
    client.unwrap_or_else(|| peer.to_string())
}

/// The `for=` value of one `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<String> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// An address as a hop names it: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711` or a bare `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
        .map(normal)
}

/// IPv4 as itself even when it came as an IPv4-mapped IPv6 address.
pub(crate) fn normal(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    const PROXY: &str = "10.0.0.1";

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an ip")
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(client_key(ip("9.9.9.9"), &spoofed, &[]), "9.9.9.9");
        assert_eq!(client_key(ip("9.9.9.9"), &spoofed, &[ip(PROXY)]), "9.9.9.9");
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = [ip(PROXY), ip("10.0.0.2")];
        // The client may put anything on the left; only what our proxies added counts.
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")]);
        assert_eq!(client_key(ip(PROXY), &xff, &trusted), "1.2.3.4");
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        assert_eq!(client_key(ip(PROXY), &split, &trusted), "1.2.3.4");
        let forwarded = headers(&[
            ("x-forwarded-for", "7.7.7.7"),
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.2",
            ),
        ]);
        assert_eq!(
            client_key(ip(PROXY), &forwarded, &trusted),
            "2001:db8::1",
            "Forwarded wins over X-Forwarded-For"
        );
        let port = headers(&[("forwarded", "for=\"192.0.2.43:47011\"")]);
        assert_eq!(client_key(ip(PROXY), &port, &trusted), "192.0.2.43");
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(client_key(ip(PROXY), &hidden, &trusted), "_hidden");
        assert_eq!(
            client_key(ip(PROXY), &HeaderMap::new(), &trusted),
            PROXY,
            "no header: the proxy itself"
        );
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.2")]);
        assert_eq!(client_key(ip(PROXY), &all_trusted, &trusted), "10.0.0.2");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(client_key(mapped, &xff, &trusted), "1.2.3.4");
    }
}
