//! `rpcgate --config FILE` as a child process, stopped with SIGTERM while
//! requests are in flight on a real locator and app: `/ready` turns false,
//! new connections are refused, the requests in flight complete, and the
//! process exits 0. Past `shutdown_timeout_ms` it cuts them, says so in
//! one line, and exits non-zero.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;

use rpcgate::app::RunningApp;
use rpcgate::locator::RunningLocator;
use support::child::{GatewayChild, bounded};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// A locator and an app `hold` that answers after `?ms=N`, telling when
/// each request starts.
async fn backend() -> (RunningLocator, RunningApp, mpsc::Receiver<()>) {
    let locator = support::start_locator(support::locator_config("")).await;
    let (started_tx, started) = mpsc::channel(64);
    let app = support::delayed("hold", "done", started_tx)
        .bind("127.0.0.1:0".parse().unwrap(), vec![locator.addr])
        .await
        .unwrap();
    app.published().await;
    (locator, app, started)
}

async fn start_gateway(locator: SocketAddr, shutdown_timeout_ms: u64) -> GatewayChild {
    GatewayChild::start(
        &format!("lifecycle-{shutdown_timeout_ms}"),
        &format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nlocators = [\"{locator}\"]\n\
             shutdown_timeout_ms = {shutdown_timeout_ms}\n[pool]\nsize = 2\n"
        ),
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_refuses_new_ones_and_exits_0() {
    let (_locator, _app, mut started) = backend().await;
    let mut gateway = start_gateway(_locator.addr, 20_000).await;
    let http = gateway.http;
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(
                async move { support::send(http, "GET", "/hold/http/?ms=3000", &[], "").await },
            )
        })
        .collect();
    for _ in 0..3 {
        bounded("a request at the app", started.recv()).await;
    }
    gateway.signal("TERM");
    // /ready turns false (once the signal is handled) while the admin API
    // still answers and the requests are still in flight.
    let admin = gateway.admin.unwrap();
    bounded("/ready to turn false", async {
        while support::http(admin, "GET", "/ready", "").await.0 != 503 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        in_flight.iter().all(|r| !r.is_finished()),
        "still in flight"
    );
    // New connections are refused (the listener is closed).
    bounded("new connections to be refused", async {
        while tokio::net::TcpStream::connect(http).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The requests in flight complete.
    for request in in_flight {
        let got = bounded("a request in flight", request).await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(&got.body[..], b"done");
        // ...and their kept-alive connections are told to close.
        assert_eq!(got.header("connection"), Some("close"));
    }
    gateway.exits_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_shutdown_deadline_requests_are_cut_and_the_exit_is_non_zero() {
    let (_locator, _app, mut started) = backend().await;
    let mut gateway = start_gateway(_locator.addr, 300).await;
    let http = gateway.http;
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
                tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"GET /hold/http/?ms=30000 HTTP/1.1\r\nHost: t\r\n\r\n",
                )
                .await
                .unwrap();
                let mut response = Vec::new();
                let _ = stream.read_to_end(&mut response).await;
                response
            })
        })
        .collect();
    for _ in 0..2 {
        bounded("a request at the app", started.recv()).await;
    }
    gateway.signal("TERM");
    let status = bounded("the gateway to exit", gateway.child.wait())
        .await
        .unwrap();
    assert!(!status.success(), "cutting requests must not exit 0");
    let mut stderr = String::new();
    gateway
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("shutdown deadline passed: cut 2 request(s) on 2 connection(s)"),
        "{stderr}"
    );
    // The clients saw the connection end without a response.
    for request in in_flight {
        let response = bounded("the cut client", request).await.unwrap();
        assert!(
            response.is_empty(),
            "{}",
            String::from_utf8_lossy(&response)
        );
    }
}
