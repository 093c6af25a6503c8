//! Slow readers never hold a backend connection (issue 25, point 1): a
//! client that stops reading a large reply is cut within
//! `limits.reply_buffer` (its app channel cancelled), while the requests
//! that share its one backend connection go on; a slow but steady client
//! still gets a 64 MB download whole; a client that takes nothing for
//! `limits.send_timeout_ms` is cut; and at `limits.reply_buffer_total` the
//! stalled replies go, never the readers that keep up. Real gateway,
//! locator and `stream` demo app on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use rpcgate::app::demo;
use rpcgate::config::Config;
use support::child::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// 1,000 chunks of 64 KiB: a 64 MB reply, written by the app as fast as
/// it can.
const BIG: &str = "/stream/http/?chunks=1000&size=65536&delay_ms=0";
const BIG_BYTES: usize = 1000 * 65536;

fn config() -> Config {
    let mut config = Config::default();
    config.pool.size = 1;
    config
}

/// Waits until `limit` was hit `n` more times than `before`.
async fn hits_reach(admin: SocketAddr, limit: &str, before: u64, n: u64) {
    bounded(&format!("{n} {limit} hits"), async {
        loop {
            if support::limit_hits(admin, limit).await >= before + n {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A client that asks for `path` and then reads nothing: a small receive
/// buffer, so the gateway's writes stall early.
async fn stalled_reader(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads what `stream` still gets until the gateway closes it: the bytes,
/// and whether the chunked body was complete (its last chunk came).
async fn drain(stream: &mut TcpStream) -> (usize, bool) {
    let mut total = 0;
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
            }
        }
    }
    (total, tail.ends_with(b"0\r\n\r\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stalled_readers_are_cut_and_the_shared_connection_keeps_serving() {
    let _ = rpcgate::metrics::install_prometheus();
    let mut config = config();
    config.limits.reply_buffer = 4 << 20;
    let bound = config.limits.reply_buffer;
    let c = support::cluster("", vec![demo::build("stream", None).unwrap()], config).await;
    let (addr, admin) = (c.gateway.addr, c.gateway.admin_addr.unwrap());
    let before = support::limit_hits(admin, "slow_client").await;
    // The one backend connection is up before the readers come.
    let got = support::send(addr, "GET", "/stream/http/?chunks=1", &[], "").await;
    assert_eq!(got.status, 200);

    let mut stalled = vec![
        stalled_reader(addr, BIG).await,
        stalled_reader(addr, BIG).await,
    ];
    // Ordinary requests on the same service, so on the same backend
    // connection, while the two 64 MB replies pour in.
    let mut sender = support::h1(addr).await;
    let mut took = Vec::new();
    let mut cut_seen_at = None;
    for i in 0.. {
        sender.ready().await.unwrap();
        let started = Instant::now();
        let request = support::request("GET", "/stream/http/?chunks=2&delay_ms=0", &[], "");
        let response = bounded("a fast request", sender.send_request(request))
            .await
            .unwrap();
        let got = support::got(response).await;
        took.push(started.elapsed());
        assert_eq!(got.status, 200);
        assert_eq!(&got.body[..], b"chunk 0\nchunk 1\n");
        // Until both readers are cut, and as many again after.
        if cut_seen_at.is_none() && support::limit_hits(admin, "slow_client").await >= before + 2 {
            cut_seen_at = Some(i);
        }
        if cut_seen_at.is_some_and(|at| i >= 2 * at.max(100)) {
            break;
        }
        assert!(i < 100_000, "the readers were never cut");
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(20),
        "fast requests beside the stalled readers: p99 {p99:?} over {} requests",
        took.len()
    );
    // Each stalled reader lost its connection well short of its reply:
    // what it still gets is what was in flight when it was cut (the
    // socket buffers and at most the per-reply bound).
    for stream in &mut stalled {
        let (bytes, complete) = bounded("the cut reader's end", drain(stream)).await;
        assert!(!complete, "a cut reply must not look complete");
        assert!(bytes < BIG_BYTES, "{bytes} bytes reached a stalled reader");
        assert!(bytes < BIG_BYTES / 4, "{bytes}: far past the {bound} bound");
    }
    // The service still serves, on the same single connection.
    let got = support::send(addr, "GET", "/stream/http/?chunks=1", &[], "").await;
    assert_eq!(got.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_gets_a_64_mb_download_whole() {
    // The defaults: a 64 MiB reply buffer.
    let config = config();
    assert!(config.limits.reply_buffer >= BIG_BYTES + 1000 * 128);
    let c = support::cluster("", vec![demo::build("stream", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    let mut sender = support::h1(addr).await;
    let response = sender
        .send_request(support::request("GET", BIG, &[], ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Read at about 8 MB/s, in 64 KiB steps: far slower than the app
    // writes (it is done within a second or so), so the gateway holds
    // most of the reply meanwhile.
    const RATE: f64 = 8.0 * 1024.0 * 1024.0;
    let started = Instant::now();
    let mut got = 0usize;
    while let Some(frame) = bounded("the next chunk", body.frame()).await {
        let frame = frame.expect("the download is not cut");
        if let Some(data) = frame.data_ref() {
            got += data.len();
        }
        // Pacing the reader (what is being tested), not waiting for an event.
        let due = started + Duration::from_secs_f64(got as f64 / RATE);
        tokio::time::sleep_until(due).await;
    }
    assert_eq!(got, BIG_BYTES, "the whole reply arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_takes_nothing_is_cut_after_the_send_timeout() {
    let _ = rpcgate::metrics::install_prometheus();
    let mut config = config();
    config.limits.send_timeout = Duration::from_millis(1500);
    let timeout = config.limits.send_timeout;
    let c = support::cluster("", vec![demo::build("stream", None).unwrap()], config).await;
    let (addr, admin) = (c.gateway.addr, c.gateway.admin_addr.unwrap());
    let before = support::limit_hits(admin, "send_timeout").await;
    // 6.4 MB: well inside the reply buffer, so only the send timeout can
    // cut it.
    let mut stream = stalled_reader(addr, "/stream/http/?chunks=100&size=65536&delay_ms=0").await;
    let started = Instant::now();
    hits_reach(admin, "send_timeout", before, 1).await;
    assert!(
        started.elapsed() >= timeout,
        "cut after {:?}, before the send timeout",
        started.elapsed()
    );
    let (_, complete) = bounded("the cut reader's end", drain(&mut stream)).await;
    assert!(!complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_total_budget_stalled_replies_go_and_readers_that_keep_up_finish() {
    let _ = rpcgate::metrics::install_prometheus();
    let mut config = config();
    config.limits.reply_buffer = 8 << 20;
    config.limits.reply_buffer_total = 12 << 20;
    let c = support::cluster("", vec![demo::build("stream", None).unwrap()], config).await;
    let (addr, admin) = (c.gateway.addr, c.gateway.admin_addr.unwrap());
    let before = support::limit_hits(admin, "slow_client").await;
    let mut stalled = vec![
        stalled_reader(addr, BIG).await,
        stalled_reader(addr, BIG).await,
    ];
    // Readers that keep up, each taking a 2 MB reply whole, while the
    // stalled ones fill the total budget.
    let mut sender = support::h1(addr).await;
    let mut fast = 0;
    loop {
        sender.ready().await.unwrap();
        let request = support::request(
            "GET",
            "/stream/http/?chunks=32&size=65536&delay_ms=0",
            &[],
            "",
        );
        let response = bounded("a reader that keeps up", sender.send_request(request))
            .await
            .unwrap();
        let got = support::got(response).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), 32 * 65536, "never cut");
        fast += 1;
        if fast >= 20 && support::limit_hits(admin, "slow_client").await >= before + 2 {
            break;
        }
        assert!(fast < 10_000, "the stalled readers were never cut");
    }
    for stream in &mut stalled {
        let (_, complete) = bounded("the cut reader's end", drain(stream)).await;
        assert!(!complete);
    }
}
