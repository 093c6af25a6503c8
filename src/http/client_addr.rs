//! The client's address behind proxies: owns which peers are trusted
//! (CIDRs) and reading `X-Forwarded-For`, `X-Real-IP` and `Forwarded` only
//! from them. The result is what the app sees in `X-Real-IP` and what the
//! access log shows. It also owns the client-header rules every request
//! gets, from a listener or through the embedded service
//! ([`apply_client_rules`]).

use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

use super::{ClientAddr, X_REAL_IP};
use crate::cidr::Cidr;

/// The client-header rules, one function for the listeners
/// (`connection::RequestService`) and the embedded service
/// ([`super::Handler::handle`]), so the two cannot drift apart:
/// - `subject_header` (`X-Client-Subject` by default) is removed, whatever
///   the client sent, and set to `subject` (a verified client
///   certificate's) when there is one;
/// - with the `peer` known, the client is found by [`client_addr`]
///   (forwarding headers believed from `trusted` peers only) and put in
///   `X-Real-IP`, replacing what the client sent there, and in the
///   [`ClientAddr`] extension (access log, stream caps). `peer_header` is
///   the peer's address as a header value, if made already.
pub(crate) fn apply_client_rules<B>(
    request: &mut hyper::Request<B>,
    subject_header: &HeaderName,
    subject: Option<&HeaderValue>,
    peer: Option<IpAddr>,
    peer_header: Option<&HeaderValue>,
    trusted: &[Cidr],
) {
    request.headers_mut().remove(subject_header);
    if let Some(subject) = subject {
        request
            .headers_mut()
            .insert(subject_header.clone(), subject.clone());
    }
    let Some(peer) = peer else {
        return;
    };
    let client = client_addr(peer, request.headers(), trusted);
    let value = match peer_header {
        Some(value) if client == peer => Some(value.clone()),
        _ => HeaderValue::from_str(&client.to_string()).ok(),
    };
    if let Some(value) = value {
        request.headers_mut().insert(X_REAL_IP, value);
    }
    request.extensions_mut().insert(ClientAddr(client));
}

/// The client address for a request from `peer`: forwarding headers are
/// believed only when `peer` is trusted. `X-Forwarded-For` is read from the
/// right, skipping trusted hops; then `Forwarded: for=`; then `X-Real-IP`.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |addr: IpAddr| trusted.iter().any(|c| c.contains(addr));
    if !is_trusted(peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| parse_hop(hop.trim()))
        .collect();
    if chain.is_empty() {
        chain = headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_hop(value.trim().trim_matches('"')))?
                })
            })
            .collect();
    }
    if chain.is_empty() {
        return headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_hop(v.trim()))
            .unwrap_or(peer);
    }
    // The rightmost hop no trusted proxy vouches for; if all are trusted,
    // the leftmost.
    chain
        .iter()
        .rev()
        .find(|hop| !is_trusted(**hop))
        .or_else(|| chain.first())
        .copied()
        .unwrap_or(peer)
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80` or `::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, v.parse().unwrap_or_else(|_| unreachable!()));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn cidrs() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap_or_else(|| unreachable!());
        assert!(lan.contains(ip("10.1.2.3")));
        assert!(lan.contains(ip("::ffff:10.1.2.3")));
        assert!(!lan.contains(ip("11.0.0.1")));
        assert!(
            Cidr::parse("::1")
                .unwrap_or_else(|| unreachable!())
                .contains(ip("::1"))
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap_or_else(|| unreachable!())
                .contains(ip("8.8.8.8"))
        );
        for bad in ["10.0.0.0/33", "nope", "1.2.3.4/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn headers_only_from_trusted_peers() {
        let trusted = [
            Cidr::parse("127.0.0.1").unwrap_or_else(|| unreachable!()),
            Cidr::parse("10.0.0.0/8").unwrap_or_else(|| unreachable!()),
        ];
        let xff = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.2")]);
        // Untrusted peer: its own address, whatever it claims.
        assert_eq!(
            client_addr(ip("192.0.2.9"), &xff, &trusted),
            ip("192.0.2.9")
        );
        // Trusted: the rightmost untrusted hop (a client cannot prepend).
        assert_eq!(
            client_addr(ip("127.0.0.1"), &xff, &trusted),
            ip("203.0.113.7")
        );
        let fwd = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(
            client_addr(ip("127.0.0.1"), &fwd, &trusted),
            ip("2001:db8::1")
        );
        let real = headers(&[("x-real-ip", "203.0.113.9")]);
        assert_eq!(
            client_addr(ip("10.9.9.9"), &real, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(ip("127.0.0.1"), &headers(&[]), &trusted),
            ip("127.0.0.1")
        );
    }
}
