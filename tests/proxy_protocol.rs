//! The PROXY protocol on the HTTP listener (`proxy_protocol = true`), with
//! raw v1 and v2 headers from a real socket: the header's source address
//! reaches the app as `X-Real-IP` for every request on the connection; a
//! v2 LOCAL keeps the socket's peer; a connection without a header gets
//! no answer; forwarded headers are believed only from a trusted source.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rpcgate::config::Config;
use support::child::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GET: &[u8] = b"GET /ip/http/ HTTP/1.1\r\nHost: t\r\n\r\n";

async fn gateway(trusted: &[&str]) -> support::Cluster {
    let mut config = Config::default();
    config.pool.size = 1;
    config.proxy_protocol = true;
    config.request.trusted_proxies = trusted
        .iter()
        .map(|c| rpcgate::http::Cidr::parse(c).unwrap())
        .collect();
    support::cluster("", vec![support::header_echo("ip", "x-real-ip")], config).await
}

/// Sends `header` and then `requests` GETs with the header lines `extra`
/// (one write), returning the bodies in order.
async fn through(addr: SocketAddr, header: &[u8], extra: &str, requests: usize) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let get = String::from_utf8_lossy(GET).replace("\r\n\r\n", &format!("\r\n{extra}\r\n"));
    let mut bytes = header.to_vec();
    for _ in 0..requests {
        bytes.extend_from_slice(get.as_bytes());
    }
    stream.write_all(&bytes).await.unwrap();
    let mut bodies = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..requests {
        let (status, body) = support::read_response(&mut stream, &mut buf).await;
        assert_eq!(status, 200);
        bodies.push(String::from_utf8(body).unwrap());
    }
    bodies
}

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_headers_name_the_client_for_every_request_on_the_connection() {
    let c = gateway(&[]).await;
    let addr = c.gateway.addr;
    // v1, and two pipelined requests behind it in the same write.
    let bodies = through(addr, b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n", "", 2).await;
    assert_eq!(bodies, ["203.0.113.7", "203.0.113.7"]);
    let bodies = through(addr, b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n", "", 1).await;
    assert_eq!(bodies, ["2001:db8::7"]);
    // v2 over IPv6, with a TLV after the addresses.
    let mut body = "2001:db8::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&[0x0f, 0xa0, 0, 80, 0x04, 0, 2, 0, 0]);
    assert_eq!(
        through(addr, &v2(1, 0x21, &body), "", 2).await,
        ["2001:db8::1", "2001:db8::1"]
    );
    // v2 LOCAL (the balancer's health check): the socket's own peer.
    assert_eq!(through(addr, &v2(0, 0x00, &[]), "", 1).await, ["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_header_gets_no_answer() {
    let c = gateway(&[]).await;
    for bad in [
        GET.to_vec(),
        b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
    ] {
        let mut stream = TcpStream::connect(c.gateway.addr).await.unwrap();
        stream.write_all(&bad).await.unwrap();
        let mut rest = Vec::new();
        let _ = bounded("the connection to close", stream.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    // A header that never completes is cut at the head timeout.
    let mut config = Config {
        proxy_protocol: true,
        ..Config::default()
    };
    config.limits.header_timeout = Duration::from_millis(200);
    let slow = support::cluster("", vec![], config).await;
    let mut stream = TcpStream::connect(slow.gateway.addr).await.unwrap();
    stream.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
    let mut rest = Vec::new();
    let _ = bounded("the late header to be cut", stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_believed_only_from_a_trusted_proxy_source() {
    let c = gateway(&["10.0.0.0/8"]).await;
    let addr = c.gateway.addr;
    let xff = "X-Forwarded-For: 198.51.100.9\r\n";
    let trusted = through(addr, b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 80\r\n", xff, 1).await;
    assert_eq!(trusted, ["198.51.100.9"]);
    let untrusted = through(
        addr,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n",
        xff,
        1,
    )
    .await;
    assert_eq!(untrusted, ["203.0.113.7"]);
}
