//! The stream caps: past `limits.max_streams` (all of the gateway's SSE,
//! push and WebSocket streams) or `limits.max_streams_per_client` (one
//! client's, IPv6 grouped by `limits.client_ipv6_prefix`), a new SSE
//! stream gets 503 `too_many_streams` with the JSON error body once the
//! app's head arrives (the app's channel cancelled), a WebSocket upgrade
//! gets it instead of the 101, and each refusal counts in
//! `rpcgate_limit_hits_total`. Against the real `ticker` (SSE) and `chat`
//! (WebSocket) demo apps.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::config::Config;
use tokio_tungstenite::tungstenite;

const WAIT: Duration = Duration::from_secs(20);

/// An SSE stream of the `ticker` demo: an event every 50 ms, so a client
/// that goes is noticed at the next one.
const TICKER: &str = "/ticker/http/?interval_ms=50";

async fn caps_cluster(f: impl FnOnce(&mut Config)) -> support::Cluster {
    let mut config = Config::default();
    config.pool.lifespan = Duration::from_secs(3600);
    config.limits.idle_timeout = Duration::from_secs(3600);
    f(&mut config);
    let apps = vec![
        demo::build("ticker", None).unwrap(),
        demo::build("chat", None).unwrap(),
    ];
    support::cluster("", apps, config).await
}

/// `rpcgate_limit_hits_total{limit="<limit>"}` now (0 before the first).
async fn limit_hits(c: &support::Cluster, limit: &str) -> u64 {
    // Once per process; every test that reads metrics calls this.
    let _ = rpcgate::metrics::install_prometheus();
    support::limit_hits(c.gateway.admin_addr.unwrap(), limit).await
}

/// An open SSE stream: its connection and response, body unread.
struct Sse {
    _sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    _response: hyper::Response<hyper::body::Incoming>,
}

/// Asks for the ticker's stream (as `forwarded_for`, through a trusted
/// proxy, if given): the stream when the gateway answered 200, else the
/// whole error response.
async fn open_sse(c: &support::Cluster, forwarded_for: Option<&str>) -> Result<Sse, support::Got> {
    let mut sender = support::h1(c.gateway.addr).await;
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|f| ("x-forwarded-for", f))
        .into_iter()
        .collect();
    let response = tokio::time::timeout(
        WAIT,
        sender.send_request(support::request("GET", TICKER, &headers, "")),
    )
    .await
    .expect("no response head")
    .unwrap();
    if response.status() == 200 {
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        return Ok(Sse {
            _sender: sender,
            _response: response,
        });
    }
    Err(support::got(response).await)
}

/// The ticker's stream, which must open.
async fn opened(c: &support::Cluster, forwarded_for: Option<&str>) -> Sse {
    match open_sse(c, forwarded_for).await {
        Ok(sse) => sse,
        Err(got) => panic!("refused: {} {:?}", got.status, got.body),
    }
}

/// Asserts a 503 `too_many_streams` JSON error.
fn assert_too_many(got: &support::Got) {
    assert_eq!(got.status, 503, "{:?}", got.body);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.json()["error"]["kind"], "too_many_streams");
    assert_eq!(got.json()["error"]["status"], 503);
}

/// Waits until the gateway has `n` streams open.
async fn streams_reach(c: &support::Cluster, n: usize) {
    let reached = async {
        while c.gateway.streams_open() != n {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, reached)
        .await
        .unwrap_or_else(|_| panic!("never {n} streams open: {}", c.gateway.streams_open()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_streams_sse_and_websocket_get_503_until_one_closes() {
    let c = caps_cluster(|config| config.limits.max_streams = 2).await;
    let before = limit_hits(&c, "max_streams").await;
    let first = opened(&c, None).await;
    let _second = opened(&c, None).await;
    assert_eq!(c.gateway.streams_open(), 2);

    // The third SSE stream: 503 with the JSON body, counted.
    let refused = open_sse(&c, None)
        .await
        .err()
        .expect("a third stream opened");
    assert_too_many(&refused);
    assert!(limit_hits(&c, "max_streams").await > before);
    // A WebSocket upgrade: 503 instead of the 101.
    let url = format!("ws://{}/chat/http/rooms/caps", c.gateway.addr);
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("the handshake hung")
    {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = response.body().clone().unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"]["kind"], "too_many_streams");
        }
        other => panic!("expected a 503, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert!(limit_hits(&c, "max_streams").await >= before + 2);
    // Nothing refused is left open.
    assert_eq!(c.gateway.streams_open(), 2);

    // One closes: a new one opens, SSE or WebSocket.
    drop(first);
    streams_reach(&c, 1).await;
    let (mut ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake hung")
        .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(c.gateway.streams_open(), 2);
    assert_too_many(
        &open_sse(&c, None)
            .await
            .err()
            .expect("a third stream opened"),
    );
    ws.close(None).await.ok();
    streams_reach(&c, 1).await;
    let _third = opened(&c, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_streams_per_client_one_client_is_refused_and_others_are_not() {
    let c = caps_cluster(|config| {
        config.limits.max_streams_per_client = 1;
        // The clients as the trusted proxy (this test) tells them.
        config.request.trusted_proxies = vec![rpcgate::cidr::Cidr::parse("127.0.0.1").unwrap()];
    })
    .await;
    let before = limit_hits(&c, "max_streams_per_client").await;
    let a = opened(&c, Some("198.51.100.1")).await;
    assert_too_many(
        &open_sse(&c, Some("198.51.100.1"))
            .await
            .err()
            .expect("a second stream from one client opened"),
    );
    assert!(limit_hits(&c, "max_streams_per_client").await > before);
    // Another client is not affected.
    let _b = opened(&c, Some("198.51.100.2")).await;
    // Two addresses of one IPv6 /64 are one client (the IPv4-mapped
    // address of 198.51.100.2 is 198.51.100.2).
    let _v6 = opened(&c, Some("2001:db8:1:2::1")).await;
    assert_too_many(
        &open_sse(&c, Some("2001:db8:1:2:ffff::7"))
            .await
            .err()
            .expect("a second stream from one /64 opened"),
    );
    assert_too_many(
        &open_sse(&c, Some("::ffff:198.51.100.2"))
            .await
            .err()
            .expect("a second stream from one IPv4 client opened"),
    );
    let _other_64 = opened(&c, Some("2001:db8:1:3::1")).await;
    // A WebSocket counts against the same cap.
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/chat/http/rooms/caps",
        c.gateway.addr
    ))
    .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request.clone()))
        .await
        .expect("the handshake hung")
    {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected a 503, got {:?}", other.map(|(_, r)| r.status())),
    }
    // The client's stream closes: it may open another.
    drop(a);
    streams_reach(&c, 3).await;
    let (_ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake hung")
        .unwrap();
    assert_eq!(response.status(), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_apply_live_on_reload() {
    let c = caps_cluster(|config| config.limits.max_streams = 1).await;
    let _first = opened(&c, None).await;
    assert_too_many(&open_sse(&c, None).await.err().expect("past the cap"));
    let mut config = c.gateway.config().as_ref().clone();
    config.limits.max_streams = 2;
    assert_eq!(c.gateway.reload(config), Ok(vec![]));
    let _second = opened(&c, None).await;
}
