//! CORS and response compression (tower-http): off by default; when on, the
//! gateway answers CORS preflights itself and adds the CORS headers to app
//! responses; it compresses compressible bodies with gzip or br by
//! `Accept-Encoding`, and leaves event streams, pre-encoded and small
//! bodies alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse};
use rpcgate::config::Config;

/// A JSON body well over the 1024-byte threshold.
fn big_json() -> String {
    let items: Vec<String> = (0..200)
        .map(|i| format!("{{\"n\":{i},\"v\":\"item\"}}"))
        .collect();
    format!("[{}]", items.join(","))
}

/// An app `typed` answering `?kind=`: `json` (big), `small` (JSON under
/// the threshold, its length in the head), `png` (big, not compressible), `encoded` (big text the
/// app gzipped itself: bytes the gateway must pass as they are), `sse` (an
/// event stream of two big events). Counts the requests it gets.
fn typed(seen: Arc<AtomicUsize>) -> AppBuilder {
    AppBuilder::new("typed").on_http("http", move |req: HttpRequest, mut res: HttpResponse| {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let header = |name: &'static str, value: &'static str| {
                (
                    Bytes::from_static(name.as_bytes()),
                    Bytes::from_static(value.as_bytes()),
                )
            };
            let kind = req.query_param("kind").unwrap_or_default();
            match kind.as_str() {
                "sse" => {
                    res.head(200, vec![header("content-type", "text/event-stream")])
                        .await
                        .ok();
                    let event = format!("data: {}\n\n", "x".repeat(4000));
                    res.body(event.clone()).await.ok();
                    res.body(event).await.ok();
                    res.finish().await.ok();
                }
                "small" => {
                    // A length known from the head: under the threshold.
                    // (A body of unknown length is compressed.)
                    let head = vec![
                        header("content-type", "application/json"),
                        header("content-length", "14"),
                    ];
                    res.respond(200, head, "{\"small\":true}").await.ok();
                }
                "png" => {
                    let head = vec![header("content-type", "image/png")];
                    res.respond(200, head, big_json()).await.ok();
                }
                "encoded" => {
                    let head = vec![
                        header("content-type", "text/plain"),
                        header("content-encoding", "gzip"),
                    ];
                    res.respond(200, head, "not really gzip, ".repeat(200))
                        .await
                        .ok();
                }
                _ => {
                    let head = vec![header("content-type", "application/json")];
                    res.respond(200, head, big_json()).await.ok();
                }
            }
            Ok(())
        }
    })
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn unbrotli(bytes: &[u8]) -> String {
    let mut out = String::new();
    brotli_decompressor::Decompressor::new(bytes, 4096)
        .read_to_string(&mut out)
        .unwrap();
    out
}

async fn get(addr: std::net::SocketAddr, kind: &str, headers: &[(&str, &str)]) -> support::Got {
    let path = format!("/typed/http/?kind={kind}");
    support::send(addr, "GET", &path, headers, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_is_off_by_default() {
    let seen = Arc::new(AtomicUsize::new(0));
    let c = support::cluster("", vec![typed(seen)], Config::default()).await;
    let got = get(c.gateway.addr, "json", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.body, big_json().as_bytes());
    // No CORS either.
    let got = get(c.gateway.addr, "json", &[("origin", "https://a.example")]).await;
    assert_eq!(got.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_br_bodies_decode_to_the_original() {
    let mut config = Config::default();
    config.compression.enabled = true;
    let seen = Arc::new(AtomicUsize::new(0));
    let c = support::cluster("", vec![typed(seen)], config).await;
    let original = big_json();

    let got = get(c.gateway.addr, "json", &[("accept-encoding", "gzip")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert!(
        got.body.len() < original.len() / 2,
        "{} bytes",
        got.body.len()
    );
    assert_eq!(gunzip(&got.body), original);
    assert!(
        got.header("vary").unwrap().contains("accept-encoding"),
        "{:?}",
        got.headers
    );
    assert!(
        got.header("x-request-id").is_some(),
        "the gateway's headers stay"
    );

    let got = get(c.gateway.addr, "json", &[("accept-encoding", "br")]).await;
    assert_eq!(got.header("content-encoding"), Some("br"));
    assert_eq!(unbrotli(&got.body), original);

    // Over HTTP/2 too.
    let mut h2 = support::h2(c.gateway.addr).await;
    let request = support::request(
        "GET",
        &format!("http://{}/typed/http/?kind=json", c.gateway.addr),
        &[("accept-encoding", "gzip")],
        "",
    );
    let got = support::got(h2.send_request(request).await.unwrap()).await;
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&got.body), original);

    // Nothing accepted, or only what is not built: as it was.
    for accept in [None, Some("identity"), Some("zstd")] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let got = get(c.gateway.addr, "json", &headers).await;
        assert_eq!(got.header("content-encoding"), None, "{accept:?}");
        assert_eq!(got.body, original.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_binary_pre_encoded_and_event_stream_bodies_are_untouched() {
    let mut config = Config::default();
    config.compression.enabled = true;
    config.limits.stream_idle_timeout = Duration::from_secs(60);
    let seen = Arc::new(AtomicUsize::new(0));
    let c = support::cluster("", vec![typed(seen)], config).await;
    let accept = [("accept-encoding", "gzip, br")];

    let got = get(c.gateway.addr, "small", &accept).await;
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.body, &b"{\"small\":true}"[..]);

    let got = get(c.gateway.addr, "png", &accept).await;
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.body, big_json().as_bytes());

    let got = get(c.gateway.addr, "encoded", &accept).await;
    assert_eq!(
        got.header("content-encoding"),
        Some("gzip"),
        "the app's own"
    );
    assert_eq!(got.body, "not really gzip, ".repeat(200).as_bytes());

    // The event stream: plain, and (HTTP/1.1) still taken over from hyper,
    // which ends the connection with the stream.
    let mut h1 = support::h1(c.gateway.addr).await;
    let response = h1
        .send_request(support::request(
            "GET",
            "/typed/http/?kind=sse",
            &accept,
            "",
        ))
        .await
        .unwrap();
    assert_eq!(response.headers().get("content-encoding"), None);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["connection"], "close");
    let body = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let event = format!("data: {}\n\n", "x".repeat(4000));
    assert_eq!(body, format!("{event}{event}").as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_by_the_gateway_and_responses_get_the_headers() {
    let mut config = Config::default();
    config.cors.allow_origins = vec!["https://a.example".into()];
    config.cors.allow_methods = vec!["GET".into(), "PUT".into()];
    config.cors.allow_headers = vec!["x-token".into()];
    config.cors.expose_headers = vec!["x-request-id".into()];
    config.cors.allow_credentials = true;
    config.cors.max_age = Some(Duration::from_secs(600));
    let seen = Arc::new(AtomicUsize::new(0));
    let c = support::cluster("", vec![typed(Arc::clone(&seen))], config).await;

    let preflight = support::send(
        c.gateway.addr,
        "OPTIONS",
        "/typed/http/?kind=json",
        &[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-token"),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET,PUT")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("x-token")
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    assert!(preflight.body.is_empty());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a preflight never reaches the app"
    );

    // An actual request: the app answers, the gateway adds the headers.
    let got = get(c.gateway.addr, "small", &[("origin", "https://a.example")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(
        got.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));

    // Another origin gets no allowance.
    let got = get(
        c.gateway.addr,
        "small",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("access-control-allow-origin"), None);

    // A plain OPTIONS (not a preflight) still goes to the app.
    let got = support::send(
        c.gateway.addr,
        "OPTIONS",
        "/typed/http/?kind=small",
        &[],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_compression_apply_live_on_reload() {
    let seen = Arc::new(AtomicUsize::new(0));
    let c = support::cluster("", vec![typed(seen)], Config::default()).await;
    let headers = [("origin", "https://b.example"), ("accept-encoding", "gzip")];
    // One kept-alive connection across the reload.
    let mut h1 = support::h1(c.gateway.addr).await;
    // hyper's client takes the next request only once the connection is
    // idle again, which `ready` waits for.
    let send = async |h1: &mut hyper::client::conn::http1::SendRequest<_>| {
        h1.ready().await.unwrap();
        h1.send_request(support::request(
            "GET",
            "/typed/http/?kind=json",
            &headers,
            "",
        ))
        .await
    };
    let before = support::got(send(&mut h1).await.unwrap()).await;
    assert_eq!(before.header("access-control-allow-origin"), None);
    assert_eq!(before.header("content-encoding"), None);

    let mut new = (*c.gateway.config()).clone();
    new.cors.allow_origins = vec!["*".into()];
    new.compression.enabled = true;
    assert!(
        c.gateway.reload(new).unwrap().is_empty(),
        "nothing needs a restart"
    );

    let after = support::got(send(&mut h1).await.unwrap()).await;
    assert_eq!(after.header("access-control-allow-origin"), Some("*"));
    assert_eq!(after.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&after.body), big_json());
}
