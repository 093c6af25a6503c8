//! Zero-downtime restart (the README's procedure) with two real gateway
//! processes: while a steady client sends requests, a second `rpcgate`
//! binds the same address (`SO_REUSEPORT`), the first gets SIGTERM and
//! drains, and not one request fails.
//!
//! The kernel spreads new connections over both listeners; when the old
//! one closes, connections queued in its accept backlog move to the new
//! one only with `net.ipv4.tcp_migrate_req = 1` (Linux ≥ 5.14), which the
//! procedure requires. The test turns it on in its network namespace when
//! it can, and skips with a message when it cannot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rpcgate::app::demo;
use support::child::{GatewayChild, bounded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Turns on `tcp_migrate_req`, or says why it cannot.
fn migrate_requests() -> Result<(), String> {
    match std::fs::read_to_string(MIGRATE_REQ) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => std::fs::write(MIGRATE_REQ, "1")
            .map_err(|e| format!("cannot set {MIGRATE_REQ} to 1: {e}")),
        Err(e) => Err(format!("{MIGRATE_REQ}: {e} (Linux < 5.14?)")),
    }
}

/// One request on a fresh connection; the status, or what went wrong.
async fn one_request(addr: SocketAddr) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /hello/http/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response: {text:?}"))
}

/// Requests answered with 200 by one gateway, from its `/metrics`.
async fn answered(admin: SocketAddr) -> f64 {
    let (_, text) = support::http(admin, "GET", "/metrics", "").await;
    text.lines()
        .filter(|l| l.starts_with("rpcgate_requests_total{") && l.contains("status=\"2xx\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_beside_the_running_gateway_fails_no_request() {
    if let Err(why) = migrate_requests() {
        eprintln!("SKIPPED: zero-downtime restart needs net.ipv4.tcp_migrate_req = 1: {why}");
        return;
    }
    let locator = support::start_locator(support::locator_config("")).await;
    let app = demo::build("hello", None)
        .unwrap()
        .bind("127.0.0.1:0".parse().unwrap(), vec![locator.addr])
        .await
        .unwrap();
    app.published().await;
    let config = |listen: &str| {
        format!(
            "listen = \"{listen}\"\nadmin = \"127.0.0.1:0\"\nlocators = [\"{}\"]\n[pool]\nsize = 2\n",
            locator.addr
        )
    };
    let mut old = GatewayChild::start("restart-old", &config("127.0.0.1:0"), &[]).await;
    let addr = old.http;

    // The steady client: 4 workers, one request per connection, until told
    // to stop (or 20,000 requests, whichever first).
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = watch::channel(0usize);
    let done_tx = Arc::new(done_tx);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, sent, done_tx) = (
                Arc::clone(&stop),
                Arc::clone(&failures),
                Arc::clone(&sent),
                Arc::clone(&done_tx),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) && sent.fetch_add(1, Ordering::AcqRel) < 20_000
                {
                    match one_request(addr).await {
                        Ok(200) => {}
                        Ok(status) => failures.lock().unwrap().push(format!("status {status}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    done_tx.send_modify(|n| *n += 1);
                }
            })
        })
        .collect();
    let mut wait_for = async |n: usize| {
        let target = *done.borrow() + n;
        bounded("the steady client", done.wait_for(|d| *d >= target))
            .await
            .unwrap();
    };

    wait_for(200).await;
    // The new process binds the same address beside the old one...
    let new = GatewayChild::start("restart-new", &config(&addr.to_string()), &[]).await;
    assert_eq!(new.http, addr);
    let new_admin = new.admin.unwrap();
    // ...takes a share of new connections...
    bounded("the new gateway to answer requests", async {
        while answered(new_admin).await < 1.0 {
            wait_for(10).await;
        }
    })
    .await;
    // ...and the old one drains and exits 0.
    old.signal("TERM");
    old.exits_cleanly().await;
    wait_for(500).await;
    stop.store(true, Ordering::Release);
    for worker in workers {
        bounded("a worker", worker).await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let total = *done.borrow();
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        total < 20_000,
        "the client stopped by itself, not by its cap"
    );
    assert!(answered(new_admin).await >= 500.0);
    new.signal("TERM");
}
