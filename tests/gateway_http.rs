//! The HTTP side end to end: routing by headers and by path, streaming
//! (the first chunk reaches the client before the app closes), repeated
//! headers, HEAD/204/304, cancellation reaching the app, h2c.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse, RequestError, demo};
use rpcgate::config::Config;
use rpcgate::proto::ErrorCode;
use tokio::sync::{Semaphore, mpsc};

fn small() -> Config {
    let mut config = Config::default();
    config.pool.size = 2;
    config
}

fn h(name: &'static str, value: &'static str) -> (Bytes, Bytes) {
    (
        Bytes::from_static(name.as_bytes()),
        Bytes::from_static(value.as_bytes()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_headers_and_by_path_and_echoes_the_request_id() {
    let c = support::cluster("", vec![demo::build("echo", None).unwrap()], small()).await;
    let addr = c.gateway.addr;
    let got = support::send(
        addr,
        "POST",
        "/echo/http/a/b?x=1",
        &[("x-request-id", "00000000000004d2")],
        "hi",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-request-id"), Some("00000000000004d2"));
    let json = got.json();
    assert_eq!(json["uri"], "/a/b?x=1");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["body"], "hi");
    assert_eq!(json["trace_id"], "00000000000004d2");
    let got = support::send(
        addr,
        "GET",
        "/any/thing?q=2",
        &[("x-cocaine-service", "echo"), ("x-cocaine-event", "http")],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["uri"], "/any/thing?q=2", "the full original uri");
    assert_eq!(got.header("x-request-id").unwrap().len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_reaches_the_client_before_the_app_closes() {
    let gate = Arc::new(Semaphore::new(0));
    let app = {
        let gate = Arc::clone(&gate);
        AppBuilder::new("gated").on_http("http", move |_req: HttpRequest, mut res: HttpResponse| {
            let gate = Arc::clone(&gate);
            async move {
                res.head(200, vec![h("Content-Type", "text/plain")])
                    .await
                    .ok();
                res.body("first ").await.ok();
                let _permit = gate.acquire().await;
                res.body("second").await.ok();
                res.finish().await.ok();
                Ok(())
            }
        })
    };
    let c = support::cluster("", vec![app], small()).await;
    let mut sender = support::h1(c.gateway.addr).await;
    let response = sender
        .send_request(support::request("GET", "/gated/http/", &[], ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("transfer-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("chunked"),
        "no Content-Length from the app: chunked"
    );
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        &first[..],
        b"first ",
        "arrived while the app is still blocked"
    );
    gate.add_permits(1);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_headers_and_bodiless_responses() {
    let app =
        AppBuilder::new("meta").on_http("http", |req: HttpRequest, res: HttpResponse| async move {
            let status = req
                .query_param("status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let headers = vec![
                h("Set-Cookie", "a=1"),
                h("Set-Cookie", "b=2"),
                h("Content-Length", "4"),
            ];
            res.respond(status, headers, "body").await.ok();
            Ok(())
        });
    let c = support::cluster("", vec![app], small()).await;
    let addr = c.gateway.addr;
    let got = support::send(addr, "GET", "/meta/http/", &[], "").await;
    let cookies: Vec<_> = got
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"], "both kept");
    assert_eq!(&got.body[..], b"body");
    let head = support::send(addr, "HEAD", "/meta/http/", &[], "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for status in ["204", "304"] {
        let got = support::send(
            addr,
            "GET",
            &format!("/meta/http/?status={status}"),
            &[],
            "",
        )
        .await;
        assert_eq!(got.status.to_string(), status);
        assert!(got.body.is_empty(), "{status} has no body");
    }
    // The connection is still usable after bodiless responses.
    assert_eq!(
        support::send(addr, "GET", "/meta/http/", &[], "")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_app_channel() {
    let (started_tx, mut started) = mpsc::channel(1);
    let (cancelled_tx, mut cancelled) = mpsc::channel(1);
    let app =
        AppBuilder::new("wait").on_http("http", move |mut req: HttpRequest, _res: HttpResponse| {
            let started = started_tx.clone();
            let cancelled = cancelled_tx.clone();
            async move {
                started.send(()).await.ok();
                let reason = req.cancelled().await;
                cancelled.send(reason).await.ok();
                Ok(())
            }
        });
    let c = support::cluster("", vec![app], small()).await;
    let mut sender = support::h1(c.gateway.addr).await;
    let request = tokio::spawn(async move {
        sender
            .send_request(support::request("GET", "/wait/http/", &[], ""))
            .await
    });
    started.recv().await.unwrap();
    request.abort(); // the client goes away: its connection closes
    let reason = cancelled.recv().await.unwrap();
    let RequestError::Cancelled(error) = reason else {
        panic!("expected a cancel from the gateway, got {reason:?}");
    };
    assert_eq!(error.code, ErrorCode::NOT_CONNECTED, "error [[7, 3]]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_cancels_the_app_channel() {
    let (cancelled_tx, mut cancelled) = mpsc::channel(1);
    let app =
        AppBuilder::new("wait").on_http("http", move |mut req: HttpRequest, _res: HttpResponse| {
            let cancelled = cancelled_tx.clone();
            async move {
                let reason = req.cancelled().await;
                cancelled.send(reason).await.ok();
                Ok(())
            }
        });
    let c = support::cluster("", vec![app], small()).await;
    let got = support::send(
        c.gateway.addr,
        "GET",
        "/wait/http/",
        &[("x-request-timeout", "200")],
        "",
    )
    .await;
    assert_eq!(got.status, 504);
    let reason = cancelled.recv().await.unwrap();
    assert!(matches!(reason, RequestError::Cancelled(e) if e.code == ErrorCode::NOT_CONNECTED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge() {
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], small()).await;
    let mut sender = support::h2(c.gateway.addr).await;
    let mut responses = Vec::new();
    for _ in 0..10 {
        let request = support::request("GET", "/hello/http/", &[], "");
        responses.push(sender.send_request(request));
    }
    for response in responses {
        let response = response.await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], demo::HELLO);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_head_aborts_the_response() {
    let gate = Arc::new(Semaphore::new(0));
    let app = {
        let gate = Arc::clone(&gate);
        AppBuilder::new("breaks").on_http(
            "http",
            move |_req: HttpRequest, mut res: HttpResponse| {
                let gate = Arc::clone(&gate);
                async move {
                    res.head(200, vec![h("Content-Type", "text/plain")])
                        .await
                        .ok();
                    res.body("partial").await.ok();
                    let _permit = gate.acquire().await;
                    Err(rpcgate::proto::RemoteError::new(
                        ErrorCode::new(43, 9),
                        "died mid-body",
                    ))
                }
            },
        )
    };
    let c = support::cluster("", vec![app], small()).await;
    let mut sender = support::h1(c.gateway.addr).await;
    let response = sender
        .send_request(support::request("GET", "/breaks/http/", &[], ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the head was sent");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"partial");
    gate.add_permits(1);
    let rest = body.collect().await;
    assert!(
        rest.is_err(),
        "the client sees an aborted body, not a complete one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_1_1_ends_the_body_at_an_empty_chunk() {
    let gate = Arc::new(Semaphore::new(0));
    let app = {
        let gate = Arc::clone(&gate);
        AppBuilder::new("p11").on_http("http", move |_req: HttpRequest, mut res: HttpResponse| {
            let gate = Arc::clone(&gate);
            async move {
                res.head(200, vec![h("X-Cocaine-HTTP-Proto-Version", "1.1")])
                    .await
                    .ok();
                res.body("abc").await.ok();
                res.body(Bytes::new()).await.ok();
                // Never closes until released: the empty chunk ended the body.
                let _permit = gate.acquire().await;
                res.finish().await.ok();
                Ok(())
            }
        })
    };
    let c = support::cluster("", vec![app], small()).await;
    let got = support::send(c.gateway.addr, "GET", "/p11/http/", &[], "").await;
    assert_eq!(&got.body[..], b"abc");
    gate.add_permits(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_response_ends_the_app_channel_with_close_not_a_cancel() {
    // The app answers, then waits to see how the gateway ends its side:
    // `None` is a `close`, an error is a cancel.
    let (ended_tx, mut ended) = mpsc::channel(4);
    let app = AppBuilder::new("fixed").on_http(
        "http",
        move |mut req: HttpRequest, mut res: HttpResponse| {
            let ended = ended_tx.clone();
            async move {
                let sized = req.uri.ends_with(b"sized");
                let headers = if sized {
                    vec![h("Content-Length", "5")]
                } else {
                    vec![]
                };
                res.head(200, headers).await.unwrap();
                res.body("hello").await.unwrap();
                res.finish().await.unwrap();
                let how = req.next_body_chunk().await;
                ended
                    .send(how.map(|r| r.map_err(|e| e.to_string())))
                    .await
                    .ok();
                Ok(())
            }
        },
    );
    let c = support::cluster("", vec![app], small()).await;
    for path in ["/fixed/http/sized", "/fixed/http/chunked"] {
        let got = support::send(c.gateway.addr, "GET", path, &[], "").await;
        assert_eq!(got.status, 200);
        assert_eq!(&got.body[..], b"hello");
        // hyper stops reading a sized body at its length and drops it; the
        // channel must still end with `close` (sent even on an idle
        // connection, where no later request carries it).
        let how = ended.recv().await.unwrap();
        assert!(how.is_none(), "{path}: the app saw {how:?}, not a close");
    }
}
