//! The admin listener against misbehaving clients, on real sockets: a slow
//! or missing request head is closed at `limits.header_timeout`, at most
//! `admin::MAX_CONNECTIONS` connections are served at once, and every
//! endpoint is read-only (GET and HEAD; anything else is 405).

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rpcgate::admin::MAX_CONNECTIONS;
use rpcgate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Every admin endpoint.
const ENDPOINTS: [&str; 6] = [
    "/ping", "/health", "/ready", "/pools", "/metrics", "/config",
];

fn config(header_timeout: Duration) -> Config {
    let mut config = Config::default();
    config.pool.size = 1;
    config.limits.header_timeout = header_timeout;
    config
}

async fn admin(config: Config) -> (support::Cluster, SocketAddr) {
    let c = support::cluster("", vec![], config).await;
    let addr = c.gateway.admin_addr.unwrap();
    (c, addr)
}

/// Reads until the server closes `stream` (EOF or reset); what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// How long the server took to close a connection that sends `sent` and
/// then nothing, with `header_timeout` configured. Fails if it stays open
/// for many times that.
async fn closed_after(addr: SocketAddr, sent: &[u8], header_timeout: Duration) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent).await.unwrap();
    // Generous against a loaded machine, yet far below "never".
    let bound = header_timeout * 20;
    tokio::time::timeout(bound, until_closed(&mut stream))
        .await
        .unwrap_or_else(|_| panic!("still open after {bound:?} (head timeout {header_timeout:?})"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_missing_head_is_closed_at_the_header_timeout() {
    let header_timeout = Duration::from_millis(300);
    let (_c, addr) = admin(config(header_timeout)).await;
    // Half a head, then silence (slowloris).
    let slow = closed_after(addr, b"GET /ping HTTP/1.1\r\nHost: a\r\n", header_timeout).await;
    assert!(
        slow >= header_timeout,
        "closed after {slow:?}, before the timeout"
    );
    // Nothing at all.
    let silent = closed_after(addr, b"", header_timeout).await;
    assert!(
        silent >= header_timeout,
        "closed after {silent:?}, before the timeout"
    );
    // A complete head is served, and the kept-alive connection is then
    // closed once it has waited that long for the next head.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let bound = header_timeout * 20;
    let sent = tokio::time::timeout(bound, until_closed(&mut stream))
        .await
        .expect("the kept-alive connection to be closed");
    let text = String::from_utf8_lossy(&sent);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("pong\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_connections_are_served_at_once() {
    // A head timeout far longer than the test: held connections stay open.
    let (_c, addr) = admin(config(Duration::from_secs(600))).await;
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        // Each answered once: accepted, and holding its place.
        let mut sender = support::h1(addr).await;
        let response = sender
            .send_request(support::request("GET", "/ping", &[], ""))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        held.push(sender);
    }
    // One more connects (the kernel's backlog) but is not served...
    let mut extra = tokio::spawn(async move { support::send(addr, "GET", "/ping", &[], "").await });
    if let Ok(done) = tokio::time::timeout(Duration::from_millis(500), &mut extra).await {
        panic!("served past the cap: {}", done.unwrap().status);
    }
    // ...until one of the others closes.
    drop(held.pop());
    let got = tokio::time::timeout(Duration::from_secs(20), extra)
        .await
        .expect("the extra connection to be served once one closed")
        .unwrap();
    assert_eq!(got.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_and_head_are_served() {
    let (_c, addr) = admin(config(Duration::from_secs(10))).await;
    for path in ENDPOINTS {
        for method in ["DELETE", "POST", "PUT", "PATCH", "OPTIONS"] {
            let got = support::send(addr, method, path, &[], "").await;
            assert_eq!(got.status, 405, "{method} {path}");
            assert_eq!(got.header("allow"), Some("GET, HEAD"), "{method} {path}");
            assert_eq!(got.header("content-type"), Some("application/json"));
            let error = got.json()["error"].as_str().unwrap().to_owned();
            assert!(error.contains(method), "{error}");
        }
        // GET is served (`/metrics` is 404 without a recorder installed,
        // as in these tests), and HEAD the same without a body.
        let get = support::send(addr, "GET", path, &[], "").await;
        assert!(
            get.status == 200 || (path == "/metrics" && get.status == 404),
            "GET {path}: {}",
            get.status
        );
        let head = support::send(addr, "HEAD", path, &[], "").await;
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path}: {:?}", head.body);
    }
    // An unknown path stays 404 whatever the method.
    assert_eq!(
        support::send(addr, "DELETE", "/nope", &[], "").await.status,
        404
    );
    assert_eq!(
        support::send(addr, "GET", "/nope", &[], "").await.status,
        404
    );
}
