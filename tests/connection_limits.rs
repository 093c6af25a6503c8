//! No lock-out by connections: at `limits.max_connections`, idle (parked)
//! keep-alive connections are closed, oldest first, to serve a new
//! client; and one client address gets at most
//! `limits.max_connections_per_client` connections (trusted proxies and
//! unix-socket peers exempt; IPv6 addresses grouped by
//! `limits.client_ipv6_prefix`). Both count in `rpcgate_limit_hits_total`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::cidr::Cidr;
use rpcgate::config::Config;
use support::child::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const HELLO: &[u8] = b"GET /hello/http/ HTTP/1.1\r\nHost: t\r\n\r\n";

fn config() -> Config {
    let mut config = Config::default();
    config.pool.size = 1;
    config
}

/// A keep-alive connection from `from` with one request answered on it.
async fn served(addr: SocketAddr, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(HELLO).await.unwrap();
    let (status, _) = support::read_response(&mut stream, &mut Vec::new()).await;
    assert_eq!(status, 200);
    stream
}

/// Whether the gateway closed `stream` (EOF or reset) without a byte.
async fn closed_unanswered(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest).await {
        Ok(_) => rest.is_empty(),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_at_max_connections_leaves_room_for_a_new_client() {
    // One recorder per process: whichever test gets here first.
    let _ = rpcgate::metrics::install_prometheus();
    let mut config = config();
    config.limits.max_connections = 20;
    // Parked right after each response.
    config.limits.idle_release = Duration::ZERO;
    config.limits.idle_timeout = Duration::from_secs(60);
    // Without eviction the new client waits for an idle timeout; with it,
    // for one connection to close. A quarter of the idle timeout tells
    // the two apart.
    let within = config.limits.idle_timeout / 4;
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let (addr, admin) = (c.gateway.addr, c.gateway.admin_addr.unwrap());
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(served(addr, "127.0.0.1").await);
    }
    let evicted_before = support::limit_hits(admin, "idle_evicted").await;
    // A new client is served while all 20 are open and idle...
    let got = tokio::time::timeout(within, support::send(addr, "GET", "/hello/http/", &[], ""))
        .await
        .unwrap_or_else(|_| panic!("a new client locked out for {within:?}"));
    assert_eq!(got.status, 200);
    // ...because an idle one was closed for it: the one parked longest,
    // which on a busy machine need not be the first one served (each
    // parks when its own task gets to it).
    let evicted = bounded("an idle connection to close", async {
        loop {
            let mut buf = [0u8; 1];
            if let Some(i) = flood
                .iter()
                .position(|stream| match stream.try_read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                })
            {
                break i;
            }
            // Polling the 20 sockets for the close.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(support::limit_hits(admin, "idle_evicted").await > evicted_before);
    // The others are still open and served.
    let other = if evicted == 0 { flood.len() - 1 } else { 0 };
    let stream = &mut flood[other];
    stream.write_all(HELLO).await.unwrap();
    let (status, _) = support::read_response(stream, &mut Vec::new()).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_connection_cap_is_closed_but_others_are_served() {
    let _ = rpcgate::metrics::install_prometheus();
    let dir = std::env::temp_dir().join(format!("rpcgate-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("http.sock");
    let mut config = config();
    config.limits.max_connections_per_client = 3;
    config.request.trusted_proxies = vec![Cidr::parse("127.0.0.3").unwrap()];
    config.listen_unix = Some(path.clone());
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let (addr, admin) = (c.gateway.addr, c.gateway.admin_addr.unwrap());
    let capped_before = support::limit_hits(admin, "connections_per_client").await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(served(addr, "127.0.0.1").await);
    }
    // The fourth from the same address is closed, unanswered.
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let _ = fourth.write_all(HELLO).await;
    assert!(bounded("the fourth to close", closed_unanswered(&mut fourth)).await);
    assert!(support::limit_hits(admin, "connections_per_client").await > capped_before);
    // Another address is served.
    let _other = served(addr, "127.0.0.2").await;
    // A trusted proxy and unix-socket peers are not capped.
    let (mut exempt, mut unix) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        exempt.push(served(addr, "127.0.0.3").await);
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut sender = support::h1_over(stream).await;
        let response = sender
            .send_request(support::request("GET", "/hello/http/", &[], ""))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        unix.push(sender);
    }
    // One of the three closes: room for one more from that address, once
    // the gateway has seen the close.
    drop(mine.pop());
    bounded("room for the client again", async {
        loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let _ = stream.write_all(HELLO).await;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            if let Ok(n @ 1..) = stream.read(&mut chunk).await {
                buf.extend_from_slice(&chunk[..n]);
                assert!(buf.starts_with(b"HTTP/1.1 200"), "{buf:?}");
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// A connection whose PROXY v1 header names `client`, with one request
/// written: the stream, to read the answer (or the close) from.
async fn proxied(addr: SocketAddr, client: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let header = format!("PROXY TCP6 {client} ::1 5555 80\r\n");
    let mut bytes = header.into_bytes();
    bytes.extend_from_slice(HELLO);
    stream.write_all(&bytes).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_of_one_prefix_share_the_connection_cap() {
    let _ = rpcgate::metrics::install_prometheus();
    let mut config = config();
    config.limits.max_connections_per_client = 1;
    // Clients as a load balancer in front tells them (IPv6 clients cannot
    // be told apart on loopback otherwise: ::1 is its only address).
    config.proxy_protocol = true;
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let (addr, admin) = (c.gateway.addr, c.gateway.admin_addr.unwrap());
    let capped_before = support::limit_hits(admin, "connections_per_client").await;
    let mut first = proxied(addr, "2001:db8:1:2::1").await;
    let (status, _) = support::read_response(&mut first, &mut Vec::new()).await;
    assert_eq!(status, 200);
    // Another address of the same /64: the same client, past its cap.
    let mut same = proxied(addr, "2001:db8:1:2:ffff:ffff:ffff:fffe").await;
    assert!(bounded("the same /64 to close", closed_unanswered(&mut same)).await);
    assert!(support::limit_hits(admin, "connections_per_client").await > capped_before);
    // The next /64 is another client.
    let mut next = proxied(addr, "2001:db8:1:3::1").await;
    let (status, _) = support::read_response(&mut next, &mut Vec::new()).await;
    assert_eq!(status, 200);
}
