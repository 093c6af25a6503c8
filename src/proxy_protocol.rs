//! The PROXY protocol (HAProxy's, v1 text and v2 binary): owns reading the
//! header an L4 balancer puts before a client's bytes, and what it says
//! about the client's address. Turned on per listener; a listener with it
//! on requires the header on every connection.
//!
//! Used: the source address of `PROXY TCP4`/`TCP6` (v1) and of a v2
//! `PROXY` command over IPv4/IPv6. A v1 `UNKNOWN`, a v2 `LOCAL` (health
//! checks from the balancer itself) or a v2 address family other than IP
//! keep the connection's own peer. v2 TLVs are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use crate::prefixed::Prefixed;

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (the spec's limit).
const V1_MAX: usize = 107;
/// The longest v2 header accepted (16 bytes + addresses + TLVs). The spec
/// allows 64 KiB; balancers send well under this.
pub const V2_MAX: usize = 4096;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection does not start with a PROXY header.
    #[error("no PROXY protocol header")]
    Missing,
    /// A header that breaks the protocol.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The connection ended or failed before the header was complete.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Its length in bytes.
    pub len: usize,
    /// The client's address, if the header carries one to use.
    pub source: Option<SocketAddr>,
}

/// Parses the start of a connection: `Ok(None)` while more bytes are
/// needed, the header once complete, or why it is refused.
pub fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let sig = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig] == V2_SIGNATURE[..sig] {
        return if buf.len() < 16 {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let prefix = buf.len().min(V1_PREFIX.len());
    if buf[..prefix] == V1_PREFIX[..prefix] {
        return parse_v1(buf);
    }
    Err(ProxyHeaderError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end])
        .map_err(|_| ProxyHeaderError::Malformed("v1 line is not text"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    let source = match family {
        "UNKNOWN" => None,
        "TCP4" | "TCP6" => {
            let (Some(src), Some(dst), Some(src_port), Some(dst_port), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return Err(ProxyHeaderError::Malformed("v1 needs four fields"));
            };
            let ip = |text: &str| -> Result<IpAddr, ProxyHeaderError> {
                let ip = if family == "TCP4" {
                    text.parse::<Ipv4Addr>().map(IpAddr::V4)
                } else {
                    text.parse::<Ipv6Addr>().map(IpAddr::V6)
                };
                ip.map_err(|_| ProxyHeaderError::Malformed("v1 address"))
            };
            let port = |text: &str| {
                text.parse::<u16>()
                    .map_err(|_| ProxyHeaderError::Malformed("v1 port"))
            };
            ip(dst)?;
            port(dst_port)?;
            Some(SocketAddr::new(ip(src)?, port(src_port)?))
        }
        _ => return Err(ProxyHeaderError::Malformed("v1 protocol family")),
    };
    Ok(Some(ProxyHeader {
        len: end + 2,
        source,
    }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyHeaderError::Malformed("v2 version"));
    }
    let family = buf[13];
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Err(ProxyHeaderError::Malformed("v2 header too long"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    let source = match command {
        // LOCAL: the balancer's own connection (a health check).
        0x0 => None,
        0x1 => match family >> 4 {
            // IPv4: source, destination, source port, destination port.
            0x1 => {
                let a: [u8; 12] = body
                    .get(..12)
                    .and_then(|a| a.try_into().ok())
                    .ok_or(ProxyHeaderError::Malformed("v2 IPv4 addresses"))?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
            }
            0x2 => {
                let a: [u8; 36] = body
                    .get(..36)
                    .and_then(|a| a.try_into().ok())
                    .ok_or(ProxyHeaderError::Malformed("v2 IPv6 addresses"))?;
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&a[..16]);
                Some(SocketAddr::new(
                    Ipv6Addr::from(ip).into(),
                    u16::from_be_bytes([a[32], a[33]]),
                ))
            }
            // Unspecified or a unix socket: keep the connection's peer.
            0x0 | 0x3 => None,
            _ => return Err(ProxyHeaderError::Malformed("v2 address family")),
        },
        _ => return Err(ProxyHeaderError::Malformed("v2 command")),
    };
    Ok(Some(ProxyHeader { len, source }))
}

/// The start of a connection on a listener: with `required`, its PROXY
/// header is read within `limit`, and the client is the header's source
/// (else `peer`); without, the stream is passed through as is.
pub async fn accept<IO>(
    io: IO,
    peer: SocketAddr,
    required: bool,
    limit: std::time::Duration,
) -> Result<(Prefixed<IO>, SocketAddr), ProxyHeaderError>
where
    IO: AsyncRead + Unpin,
{
    if !required {
        return Ok((Prefixed::new(BytesMut::new(), io), peer));
    }
    let (stream, source) = tokio::time::timeout(limit, read_header(io))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok((stream, source.unwrap_or(peer)))
}

/// Reads the PROXY header from the start of `io`. Returns the stream to
/// go on with (bytes read past the header come first) and the header's
/// client address, if it carries one. The caller bounds the time.
pub async fn read_header<IO>(
    mut io: IO,
) -> Result<(Prefixed<IO>, Option<SocketAddr>), ProxyHeaderError>
where
    IO: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if !buf.is_empty() {
            if let Some(header) = parse(&buf)? {
                buf.advance(header.len);
                return Ok((Prefixed::new(buf, io), header.source));
            }
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn done(buf: &[u8]) -> ProxyHeader {
        parse(buf).unwrap().unwrap()
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            done(line),
            ProxyHeader {
                len: 43,
                source: Some("203.0.113.7:56324".parse().unwrap())
            }
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 4000 80\r\n";
        assert_eq!(
            done(line).source,
            Some("[2001:db8::1]:4000".parse().unwrap())
        );
        let line = b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n";
        assert_eq!(
            done(line),
            ProxyHeader {
                len: 31,
                source: None
            }
        );
        assert_eq!(done(b"PROXY UNKNOWN\r\n").len, 15);
    }

    #[test]
    fn v1_needs_more_bytes_until_the_line_ends() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n";
        for end in 1..line.len() {
            assert!(parse(&line[..end]).unwrap().is_none(), "{end}");
        }
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 203.0.113.7 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyHeaderError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Err(ProxyHeaderError::Malformed(_))));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            parse(b"\x16\x03\x01"),
            Err(ProxyHeaderError::Missing)
        ));
    }

    /// A v2 header: `command`, `family`, then `body`.
    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        let ipv4 = v2(
            1,
            0x11,
            &[203, 0, 113, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb],
        );
        assert_eq!(
            done(&ipv4),
            ProxyHeader {
                len: 28,
                source: Some("203.0.113.7:56324".parse().unwrap())
            }
        );
        let mut body = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0x0f, 0xa0, 0, 80]);
        // A TLV after the addresses (type 0x04 NOOP, 3 bytes) is skipped.
        body.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]);
        let ipv6 = v2(1, 0x21, &body);
        assert_eq!(
            done(&ipv6),
            ProxyHeader {
                len: 16 + 42,
                source: Some("[2001:db8::1]:4000".parse().unwrap())
            }
        );
        // LOCAL carries no client; nor does an unspecified family.
        assert_eq!(done(&v2(0, 0x00, &[])).source, None);
        assert_eq!(done(&v2(1, 0x00, &[])).source, None);
        // Incomplete until every announced byte is there.
        for end in 1..ipv6.len() {
            assert!(parse(&ipv6[..end]).unwrap().is_none(), "{end}");
        }
    }

    #[test]
    fn v2_refusals() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        let short_ipv4 = v2(1, 0x11, &[0; 8]);
        let bad_command = v2(2, 0x11, &[0; 12]);
        let bad_family = v2(1, 0x41, &[0; 12]);
        let mut too_long = v2(1, 0x11, &[0; 12]);
        too_long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        for bad in [bad_version, short_ipv4, bad_command, bad_family, too_long] {
            assert!(
                matches!(parse(&bad), Err(ProxyHeaderError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_bytes_after_the_header_are_read_first() {
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(
            &mut client,
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
        drop(client);
        let (mut stream, source) = read_header(server).await.unwrap();
        assert_eq!(source, Some("1.2.3.4:1".parse().unwrap()));
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_connection_that_ends_early_is_an_error() {
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 1.2")
            .await
            .unwrap();
        drop(client);
        assert!(matches!(
            read_header(server).await,
            Err(ProxyHeaderError::Io(_))
        ));
    }
}
