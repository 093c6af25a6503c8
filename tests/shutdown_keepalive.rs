//! A shutdown under HTTP/1.1 keep-alive load loses nothing it accepted:
//! clients send requests back to back or paced (some paced past
//! `idle_release`, so their connections are parked between requests), the
//! gateway shuts down mid-run, and every request sent gets a status; the
//! last response on each connection carries `Connection: close`, after
//! which the gateway closes it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::config::Config;
use support::child::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HELLO: &[u8] = b"GET /hello/http/ HTTP/1.1\r\nHost: t\r\n\r\n";

/// Keep-alive clients.
const CLIENTS: usize = 16;

/// Responses each client has before the shutdown starts.
const BEFORE: usize = 3;

/// How one client's connection ended.
#[derive(Debug)]
enum End {
    /// A response said `Connection: close`, then the gateway closed.
    Told { responses: usize },
    /// A request sent got no status: the connection closed first.
    Lost { responses: usize },
    /// A response without `Connection: close`, then the next request
    /// lost; or the gateway kept the connection open after saying close.
    Broken(String),
}

/// One response head and body from `stream` (Content-Length or chunked),
/// with `buf` holding bytes read earlier: its status and whether it says
/// `Connection: close`; `None` if the connection closed first.
async fn response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, bool)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            let close = head.lines().any(|l| l == "connection: close");
            let body = &buf[end + 4..];
            let used = if head.contains("transfer-encoding: chunked") {
                body.windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                    .map(|p| p + 5)
            } else {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                (body.len() >= len).then_some(len)
            };
            if let Some(used) = used {
                buf.drain(..end + 4 + used);
                return Some((status, close));
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Sends requests on one connection, `pace` apart, until the gateway says
/// close (or fails to answer one); tells `ready` after [`BEFORE`] responses.
async fn client(
    addr: std::net::SocketAddr,
    pace: Duration,
    ready: tokio::sync::mpsc::Sender<()>,
) -> End {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let mut responses = 0;
    loop {
        if stream.write_all(HELLO).await.is_err() {
            return End::Lost { responses };
        }
        let Some((status, close)) = response(&mut stream, &mut buf).await else {
            return End::Lost { responses };
        };
        if status != 200 {
            return End::Broken(format!("status {status} after {responses} responses"));
        }
        responses += 1;
        if responses == BEFORE {
            ready.send(()).await.unwrap();
        }
        if close {
            // Said close: the gateway closes it, with nothing more sent.
            let mut rest = [0u8; 64];
            return match stream.read(&mut rest).await {
                Ok(0) | Err(_) if buf.is_empty() => End::Told { responses },
                other => End::Broken(format!("after close: {other:?}, {buf:?}")),
            };
        }
        if !pace.is_zero() {
            // Load shape, not synchronisation: a client's think time.
            tokio::time::sleep(pace).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_answers_every_keep_alive_request_and_says_close() {
    let mut config = Config::default();
    config.pool.size = 2;
    // Clients paced past this are parked between their requests.
    config.limits.idle_release = Duration::from_millis(5);
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(CLIENTS);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            // 0 (back to back), 10, 20 and 30 ms apart, like the drill's
            // 20 ms; the longer ones are parked in between.
            let pace = Duration::from_millis(10 * (i % 4) as u64);
            tokio::spawn(client(addr, pace, ready_tx.clone()))
        })
        .collect();
    for _ in 0..CLIENTS {
        bounded("every client under way", ready.recv()).await;
    }
    let report = bounded("the shutdown", c.gateway.shutdown()).await;
    let mut ends = Vec::new();
    for client in clients {
        ends.push(bounded("a client to finish", client).await.unwrap());
    }
    // Every connection ended told, none with a request unanswered.
    let mut answered = 0;
    let mut failed = Vec::new();
    for (i, end) in ends.iter().enumerate() {
        match end {
            End::Told { responses } => answered += responses,
            End::Lost { responses } => {
                failed.push(format!(
                    "client {i}: request lost after {responses} responses"
                ));
            }
            End::Broken(why) => failed.push(format!("client {i}: {why}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {CLIENTS} connections failed ({answered} requests answered on the others): {failed:#?}",
        failed.len()
    );
    assert!(report.is_clean(), "{report:?}");
}
