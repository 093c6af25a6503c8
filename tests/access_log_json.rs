//! The JSON access log (`access_log = "json"`): one JSON object per
//! request with every field and the right values, written off the request
//! path; a writer that cannot keep up drops (and counts) lines instead of
//! holding up requests; shutdown writes out the last lines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::path::PathBuf;
use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::config::{AccessLogFormat, Config};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rpcgate-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn json_config(file: PathBuf, queue: usize) -> Config {
    let mut config = Config::default();
    config.pool.size = 1;
    config.access_log = true;
    config.access_log_format = AccessLogFormat::Json;
    config.access_log_queue = queue;
    config.access_log_file = Some(file);
    config
}

/// The file's lines, once it holds `n` (the writer flushes whenever its
/// queue is empty; bounded wait, polled).
async fn lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let read = async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<_> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::task::yield_now().await;
        }
    };
    let lines = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the access log lines were not written");
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_json_line_with_every_field() {
    let path = temp_path("fields.log");
    let c = support::cluster(
        "",
        vec![demo::build("echo", None).unwrap()],
        json_config(path.clone(), 64),
    )
    .await;
    let got = support::send(
        c.gateway.addr,
        "POST",
        "/echo/http/x?y=1",
        &[("x-request-id", "00000000000000ab")],
        "hello body",
    )
    .await;
    assert_eq!(got.status, 200);
    let sent = got.body.len() as u64;
    let missing = support::send(c.gateway.addr, "GET", "/", &[], "").await;
    assert_eq!(missing.status, 404);
    let missing_len = missing.body.len() as u64;

    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let ok = &lines[0];
    for field in [
        "time",
        "request_id",
        "trace_id",
        "span_id",
        "client",
        "method",
        "uri",
        "status",
        "service",
        "event",
        "member",
        "upstream",
        "attempts",
        "bytes_in",
        "bytes_out",
        "complete",
        "head_ms",
        "duration_ms",
    ] {
        assert!(ok.get(field).is_some(), "{field} missing in {ok}");
    }
    let time = ok["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    assert_eq!(ok["request_id"], "00000000000000ab");
    assert_eq!(ok["trace_id"], "00000000000000ab");
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["uri"], "/echo/http/x?y=1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["service"], "echo");
    assert_eq!(ok["event"], "http");
    assert_eq!(ok["member"], "echo");
    assert_eq!(ok["upstream"], c.apps[0].addr.to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["bytes_in"], 10);
    assert_eq!(ok["bytes_out"], sent);
    assert_eq!(ok["complete"], true);
    let (head, total) = (
        ok["head_ms"].as_f64().unwrap(),
        ok["duration_ms"].as_f64().unwrap(),
    );
    assert!(head > 0.0 && total >= head, "{head} {total}");

    let missing = &lines[1];
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["method"], "GET");
    assert!(missing["service"].is_null() && missing["upstream"].is_null());
    assert!(missing["attempts"].is_null());
    assert_eq!(missing["bytes_out"], missing_len);
    assert_eq!(missing["bytes_in"], serde_json::Value::Null, "never read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_cannot_keep_up_never_holds_up_requests() {
    // A FIFO nobody reads: the writer blocks opening it, for good, with a
    // queue of one.
    let path = temp_path("stalled.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let c = support::cluster(
        "",
        vec![demo::build("hello", None).unwrap()],
        json_config(path.clone(), 1),
    )
    .await;
    let requests = async {
        for _ in 0..20 {
            let got = support::send(c.gateway.addr, "GET", "/hello/http/", &[], "").await;
            assert_eq!(got.status, 200);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), requests)
        .await
        .expect("requests waited for the access log");
    // The queue holds one (the writer may have taken one more before it
    // blocked): the rest were dropped and counted.
    let dropped = c.gateway.access_log_dropped();
    assert!((18..=19).contains(&dropped), "{dropped} dropped");
    // Unblock the writer (it opens the FIFO, writes what it holds, and
    // ends with the gateway).
    let reader = std::fs::File::open(&path).unwrap();
    drop(c);
    drop(reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_out_the_last_lines() {
    let path = temp_path("shutdown.log");
    let c = support::cluster(
        "",
        vec![demo::build("hello", None).unwrap()],
        json_config(path.clone(), 4096),
    )
    .await;
    let mut sender = support::h1(c.gateway.addr).await;
    for _ in 0..200 {
        sender.ready().await.unwrap();
        let response = sender
            .send_request(support::request("GET", "/hello/http/", &[], ""))
            .await
            .unwrap();
        assert_eq!(support::got(response).await.status, 200);
    }
    drop(sender);
    let support::Cluster { gateway, .. } = c;
    gateway.shutdown().await;
    // No waiting here: once shutdown returns, every line is in the file.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 200);
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["status"], 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_json_rpc_call_is_one_line_under_its_own_service() {
    let path = temp_path("jsonrpc.log");
    let c = support::cluster(
        "",
        vec![demo::build("echo", None).unwrap()],
        json_config(path.clone(), 64),
    )
    .await;
    let body = serde_json::json!([
        {"jsonrpc": "2.0", "method": "echo.info", "params": [], "id": 1},
        {"jsonrpc": "2.0", "method": "nosuch.method", "params": [], "id": 2},
        {"jsonrpc": "2.0", "method": "echo.info", "params": []},
    ]);
    let got = support::send(
        c.gateway.addr,
        "POST",
        "/",
        &[
            ("x-cocaine-json-rpc", "1"),
            ("x-request-id", "00000000000000cd"),
        ],
        &body.to_string(),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);

    // One line per call (the notification's too), none for the request.
    let lines = lines(&path, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let mut by_event: Vec<_> = lines
        .iter()
        .map(|l| (l["event"].as_str().unwrap().to_owned(), l))
        .collect();
    by_event.sort_by(|a, b| a.0.cmp(&b.0));
    for (event, line) in &by_event {
        assert_eq!(line["request_id"], "00000000000000cd", "{line}");
        assert_eq!(line["trace_id"], "00000000000000cd", "the request's trace");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["uri"], "/");
        if event == "echo.info" {
            assert_eq!(line["status"], 200, "{line}");
            assert_eq!(line["service"], "echo");
            assert_eq!(line["member"], "echo");
            assert_eq!(line["upstream"], c.apps[0].addr.to_string());
            assert_eq!(line["attempts"], 1);
        } else {
            assert_eq!(event, "nosuch.method");
            assert_eq!(line["status"], 404, "{line}");
            assert!(line["service"].is_null(), "{line}");
        }
    }
    // Each call its own span id.
    let spans: std::collections::BTreeSet<_> =
        lines.iter().map(|l| l["span_id"].to_string()).collect();
    assert_eq!(spans.len(), 3, "{lines:#?}");
}
