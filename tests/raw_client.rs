//! An independent client written straight from the spec bytes, not through
//! rpcgate's codec: it resolves `echo` on rpcgate's locator and calls the
//! app, writing the frames of PROTOCOL.md §5.6 by hand and checking the
//! reply bytes exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse};
use rpcgate::locator::LocatorConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// msgpack fixstr, written by hand.
fn fixstr(text: &str) -> Vec<u8> {
    assert!(text.len() < 32);
    let mut out = vec![0xa0 | text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}

/// msgpack bin8 (the Rust framework's header form, §2.3).
fn bin(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc4, bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

fn header(name: &str, value: &[u8]) -> Vec<u8> {
    [vec![0x93, 0xc2], bin(name.as_bytes()), bin(value)].concat()
}

fn pair(name: &str, value: &str) -> Vec<u8> {
    [vec![0x92], fixstr(name), fixstr(value)].concat()
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .expect("reply within 10 s")
        .unwrap();
    buf
}

/// The app side: answers `pong` only when the request arrived exactly as
/// §5.6 packs it.
async fn ping(req: HttpRequest, res: HttpResponse) -> rpcgate::app::HandlerResult {
    let mut problems = Vec::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if text(&req.method) != "POST"
        || text(&req.uri) != "/v1/ping?x=1"
        || text(&req.version) != "1.1"
    {
        problems.push("request line");
    }
    let headers: Vec<_> = req.headers().map(|(n, v)| (text(n), text(v))).collect();
    let expected = [
        ("Host", "api.example"),
        ("X-Request-Id", "00000000000004d2"),
        ("Authorization", "OAuth abc"),
        ("Content-Length", "2"),
    ];
    if headers != expected.map(|(n, v)| (n.to_owned(), v.to_owned())) {
        problems.push("headers");
    }
    if &req.body[..] != b"hi" {
        problems.push("body");
    }
    let h = &req.frame_headers;
    if h.trace_id() != Some(0x4d2)
        || h.span_id() != Some(0x9e37_79b9_7f4a_7c15)
        || h.parent_id() != Some(0x4d2)
    {
        problems.push("trace headers");
    }
    if h.request_timeout() != Some(Duration::from_millis(30_000)) {
        problems.push("request_timeout");
    }
    if h.get(b"authorization").map(|v| &v[..]) != Some(&b"OAuth abc"[..]) {
        problems.push("authorization header");
    }
    if problems.is_empty() {
        let headers = vec![("Content-Type".into(), "text/plain".into())];
        res.respond(200, headers, "pong").await.ok();
    } else {
        res.respond(400, vec![], problems.join(", ")).await.ok();
    }
    Ok(())
}

#[tokio::test]
async fn a_hand_written_client_resolves_and_calls_an_app() {
    let locator = support::start_locator(LocatorConfig::default()).await;
    let app = AppBuilder::new("echo")
        .on_http("http", ping)
        .bind("127.0.0.1:0".parse().unwrap(), vec![locator.addr])
        .await
        .unwrap();
    app.published().await;

    // Step 1: resolve `echo` on channel 7: [7, 0, ["echo"], []].
    let mut to_locator = TcpStream::connect(locator.addr).await.unwrap();
    to_locator
        .write_all(&[0x94, 0x07, 0x00, 0x91, 0xa4, b'e', b'c', b'h', b'o', 0x90])
        .await
        .unwrap();
    // [7, 0, [[["127.0.0.1", port]], 1, {0: ["enqueue", ...], ...}], []]
    let head = read_exactly(&mut to_locator, 4 + 2 + 10 + 3 + 1 + 1).await;
    let mut expected = vec![0x94, 0x07, 0x00, 0x93, 0x91, 0x92];
    expected.extend(fixstr("127.0.0.1"));
    expected.push(0xcd);
    assert_eq!(&head[..expected.len()], &expected[..], "resolve reply head");
    let port = u16::from_be_bytes([head[17], head[18]]);
    assert_eq!(port, app.addr.port());
    assert_eq!(head[19], 0x01, "protocol version 1");
    assert_eq!(head[20], 0x87, "a graph of 7 methods (3 + 4 control)");
    let enqueue = read_exactly(&mut to_locator, 1 + 1 + 8).await;
    assert_eq!(
        enqueue,
        [&[0x00, 0x93][..], &fixstr("enqueue")].concat(),
        "method 0 is enqueue"
    );

    // Step 2: the enqueue with the §5.6 headers in the Rust framework's bin
    // form, the request write, and close.
    let mut app_conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut frames = vec![0x94, 0x01, 0x00, 0x91];
    frames.extend(fixstr("http"));
    frames.push(0x95);
    frames.extend(header("authorization", b"OAuth abc"));
    frames.extend(header("trace_id", &0x4d2u64.to_le_bytes()));
    frames.extend(header("span_id", &0x9e37_79b9_7f4a_7c15u64.to_le_bytes()));
    frames.extend(header("parent_id", &0x4d2u64.to_le_bytes()));
    frames.extend(header("request_timeout", &30_000u64.to_le_bytes()));
    let mut request = vec![0x95];
    request.extend(fixstr("POST"));
    request.extend(fixstr("/v1/ping?x=1"));
    request.extend(fixstr("1.1"));
    request.push(0x94);
    request.extend(pair("Host", "api.example"));
    request.extend(pair("X-Request-Id", "00000000000004d2"));
    request.extend(pair("Authorization", "OAuth abc"));
    request.extend(pair("Content-Length", "2"));
    request.extend(fixstr("hi"));
    frames.extend([0x94, 0x01, 0x00, 0x91, 0xda]);
    frames.extend((request.len() as u16).to_be_bytes());
    frames.extend(&request);
    frames.push(0x90);
    frames.extend([0x94, 0x01, 0x02, 0x90, 0x90]);
    app_conn.write_all(&frames).await.unwrap();

    // Step 3: meta, "pong", close, byte for byte.
    let mut meta = vec![0x92, 0xcc, 0xc8, 0x91, 0x92];
    meta.extend(fixstr("Content-Type"));
    meta.extend(fixstr("text/plain"));
    let mut want = vec![0x94, 0x01, 0x00, 0x91, 0xa0 | meta.len() as u8];
    want.extend(&meta);
    want.push(0x90);
    want.extend([0x94, 0x01, 0x00, 0x91, 0xa4, b'p', b'o', b'n', b'g', 0x90]);
    want.extend([0x94, 0x01, 0x02, 0x90, 0x90]);
    let got = read_exactly(&mut app_conn, want.len()).await;
    assert_eq!(
        got,
        want,
        "reply bytes; as text: {}",
        String::from_utf8_lossy(&got)
    );
}
