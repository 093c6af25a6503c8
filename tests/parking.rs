//! Idle HTTP/1.1 connections are parked (hyper's connection and buffers
//! dropped at a request boundary, the socket kept) and resume on their
//! next bytes: keep-alive requests, pipelined requests and a body that
//! straddles the parked read all come through whole; the idle timeout and
//! shutdown still close parked connections. Parking is observed through
//! `rpcgate_http_connections_parked`. (One test: a process has one global
//! metrics recorder.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::config::Config;
use support::child::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The parked-connections gauge, from the admin API.
async fn parked(admin: SocketAddr) -> u64 {
    let (_, text) = support::http(admin, "GET", "/metrics", "").await;
    text.lines()
        .find_map(|l| l.strip_prefix("rpcgate_http_connections_parked "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until the gauge reads `n` (bounded).
async fn parked_becomes(admin: SocketAddr, n: u64) {
    bounded(&format!("{n} parked connection(s)"), async {
        while parked(admin).await != n {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

const HELLO: &[u8] = b"GET /hello/http/ HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_park_and_resume_without_losing_a_byte() {
    rpcgate::metrics::install_prometheus().unwrap();
    let mut config = Config::default();
    config.pool.size = 1;
    // Parked right after each response.
    config.limits.idle_release = Duration::ZERO;
    config.limits.idle_timeout = Duration::from_secs(30);
    let apps = vec![
        demo::build("hello", None).unwrap(),
        demo::build("echo", None).unwrap(),
    ];
    let c = support::cluster("", apps, config).await;
    let (addr, admin) = (c.gateway.addr, c.gateway.admin_addr.unwrap());

    // Keep-alive: parked after each response, resumed by the next request.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..3 {
        stream.write_all(HELLO).await.unwrap();
        let (status, body) = support::read_response(&mut stream, &mut buf).await;
        assert_eq!((status, &body[..]), (200, &b"Hello, World!"[..]));
        parked_becomes(admin, 1).await;
    }

    // Two pipelined requests in one write wake it; both are answered.
    stream.write_all(&[HELLO, HELLO].concat()).await.unwrap();
    for _ in 0..2 {
        let (status, _) = support::read_response(&mut stream, &mut buf).await;
        assert_eq!(status, 200);
    }
    parked_becomes(admin, 1).await;

    // A request whose body goes far past the parked read (64 bytes), sent
    // in two writes: the app gets every byte.
    let body: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let head = format!(
        "POST /echo/http/ HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let (status, echoed) = support::read_response(&mut stream, &mut buf).await;
    assert_eq!(status, 200);
    assert!(
        echoed.windows(body.len()).any(|w| w == &body[..]),
        "the body came back whole"
    );
    parked_becomes(admin, 1).await;

    // The client closing a parked connection ends it.
    drop(stream);
    parked_becomes(admin, 0).await;

    // Shutdown closes parked connections at once.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(HELLO).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(support::read_response(&mut idle, &mut buf).await.0, 200);
    parked_becomes(admin, 1).await;
    let report = bounded("the shutdown", c.gateway.shutdown()).await;
    assert!(report.is_clean(), "{report:?}");
    let mut rest = Vec::new();
    let _ = bounded(
        "the parked connection to close",
        idle.read_to_end(&mut rest),
    )
    .await;
    assert!(rest.is_empty());
    drop((c.locator, c.apps, c.client));

    // The idle timeout closes a parked connection.
    let mut config = Config::default();
    config.pool.size = 1;
    config.limits.idle_release = Duration::ZERO;
    config.limits.idle_timeout = Duration::from_millis(300);
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let admin = c.gateway.admin_addr.unwrap();
    let mut stream = TcpStream::connect(c.gateway.addr).await.unwrap();
    stream.write_all(HELLO).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(support::read_response(&mut stream, &mut buf).await.0, 200);
    parked_becomes(admin, 1).await;
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let _ = bounded("the idle close", stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
    parked_becomes(admin, 0).await;
}
