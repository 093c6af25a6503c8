//! The access log: off by default, one config key turns it on, and each
//! request is one structured `access` event with its id, method, uri,
//! status and duration.
//!
//! Its own test binary: it installs a global `tracing` subscriber that
//! writes into a buffer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use rpcgate::app::demo;
use rpcgate::config::Config;

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn access_lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(" access:"))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_off_by_default_and_one_key_turns_it_on() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    // Off by default.
    let mut config = Config::default();
    config.pool.size = 1;
    assert!(!config.access_log);
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let got = support::send(c.gateway.addr, "GET", "/hello/http/", &[], "").await;
    assert_eq!(got.status, 200);
    assert!(captured.access_lines().is_empty());
    drop(c);

    // On: one line per request, with the request id the client saw.
    let mut config = Config::default();
    config.pool.size = 1;
    config.access_log = true;
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let got = support::send(c.gateway.addr, "GET", "/hello/http/?x=1", &[], "").await;
    assert_eq!(got.status, 200);
    let id = got.header("x-request-id").unwrap().to_owned();
    let missing = support::send(c.gateway.addr, "POST", "/", &[], "").await;
    assert_eq!(missing.status, 404);
    let lines = captured.access_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let ok = &lines[0];
    for part in [
        format!("request_id={id}"),
        "client=127.0.0.1".to_owned(),
        "method=GET".to_owned(),
        "uri=/hello/http/?x=1".to_owned(),
        "status=200".to_owned(),
        "ms=".to_owned(),
    ] {
        assert!(ok.contains(&part), "{part} missing in {ok}");
    }
    assert!(
        lines[1].contains("method=POST") && lines[1].contains("status=404"),
        "{}",
        lines[1]
    );
}
