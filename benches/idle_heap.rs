//! Live heap per idle keep-alive connection, counted by a global allocator
//! wrapper (stats_alloc), beside a plain hyper server (hyper-util's auto
//! builder) in the same process: each server gets N connections (default
//! 2,000), one request answered on each and kept open; after the idle
//! buffer release (`limits.idle_release_ms`, 100 ms) the bytes still
//! allocated are divided by N. Client sockets are counted on both sides
//! alike. Loopback only; bounded, stops by itself.
//!
//! `cargo bench --bench idle_heap [-- N]`

#![allow(missing_docs)] // a bench binary
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed bench setup should abort loudly

use std::alloc::System;
use std::net::SocketAddr;
use std::time::Duration;

use rpcgate::config::Config;
use rpcgate::gateway::Standalone;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/hello.rs"]
mod hello;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Opens `n` connections to `addr`, one GET `path` answered on each, and
/// returns them open.
async fn idle_connections(addr: SocketAddr, path: &str, n: usize) -> Vec<TcpStream> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 512];
        // Both servers answer 13-byte bodies with Content-Length: read
        // until the head and body are in.
        while !head.windows(4).any(|w| w == b"\r\n\r\n") || !head.ends_with(b"Hello, World!") {
            let read = stream.read(&mut byte).await.unwrap();
            assert!(read > 0, "closed: {}", String::from_utf8_lossy(&head));
            head.extend_from_slice(&byte[..read]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"));
        open.push(stream);
    }
    open
}

/// Live heap per connection once `n` idle connections settle.
async fn per_connection(addr: SocketAddr, path: &str, n: usize) -> f64 {
    // Warm up lazily built state (pools, metrics handles, buffers).
    drop(idle_connections(addr, path, 10).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let region = Region::new(GLOBAL);
    let open = idle_connections(addr, path, n).await;
    // Well past the gateway's idle buffer release (100 ms by default).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stats = region.change();
    let live = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
    drop(open);
    live / n as f64
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            ..Config::default()
        };
        config.pool.size = 2;
        // All from 127.0.0.1, with room for the warm-up's connections
        // while their close is under way.
        config.limits.max_connections_per_client = n.saturating_add(100);
        let standalone = Standalone::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let gateway = per_connection(standalone.gateway.addr, "/hello/http/", n).await;
        let hyper = per_connection(hello::plain_hyper().await, "/", n).await;
        println!(
            "live heap per idle keep-alive connection ({n} connections, client side included):"
        );
        println!("  rpcgate      {gateway:>8.0} B");
        println!("  plain hyper  {hyper:>8.0} B");
        println!("  ratio        {:>8.2}", gateway / hyper);
        standalone.shutdown().await;
    });
}
