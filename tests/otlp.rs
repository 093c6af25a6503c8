//! OpenTelemetry export end to end: a collector on loopback decodes what
//! the gateway POSTs to `/v1/traces` (the OTLP protobuf messages) and
//! hands each span to the test; an app records the `traceparent` of its
//! enqueue headers. Spans are flushed with `RunningGateway::flush_traces`,
//! which returns once the collector answered: no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message as _;
use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse};
use rpcgate::config::Config;
use rpcgate::proto::{ErrorCode, RemoteError};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A span as it arrived, with its resource's `service.name`.
struct Got {
    span: Span,
    resource_service: Option<String>,
}

/// A collector on 127.0.0.1: each `POST /v1/traces` is decoded, its spans
/// sent on the channel, then answered 200 (so a flush that returned has
/// delivered every span it exported).
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Got>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        assert_eq!(request.method(), hyper::Method::POST);
                        assert_eq!(request.uri().path(), "/v1/traces");
                        assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        for resource in export.resource_spans {
                            let resource_service = resource.resource.as_ref().and_then(|r| {
                                r.attributes
                                    .iter()
                                    .find(|kv| kv.key == "service.name")
                                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                        Value::StringValue(s) => Some(s.clone()),
                                        _ => None,
                                    })
                            });
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    let _ = tx.send(Got {
                                        span,
                                        resource_service: resource_service.clone(),
                                    });
                                }
                            }
                        }
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// An app `traced`: `http` answers 200 and records the enqueue's
/// `traceparent`; `fail` answers with an app error.
fn traced_app(seen: mpsc::UnboundedSender<Option<String>>) -> AppBuilder {
    AppBuilder::new("traced")
        .on_http("http", move |req: HttpRequest, res: HttpResponse| {
            let seen = seen.clone();
            async move {
                let traceparent = req
                    .frame_headers
                    .get(b"traceparent")
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                let _ = seen.send(traceparent);
                res.respond(200, vec![], "ok").await.ok();
                Ok(())
            }
        })
        .on_http("fail", |_req: HttpRequest, _res: HttpResponse| async {
            Err(RemoteError::new(ErrorCode::INVALID_ARGUMENT, "no"))
        })
}

fn config(endpoint: String, probability: f64) -> Config {
    let mut config = Config::default();
    config.pool.size = 1;
    config.request.tracing_probability = probability;
    config.tracing.otlp_endpoint = Some(endpoint);
    config
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Value::IntValue(i)) => *i,
        other => panic!("{key}: {other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `00-<trace>-<span>-<flags>` → (trace, span, flags).
fn parts(traceparent: &str) -> (String, String, String) {
    let mut it = traceparent.split('-');
    assert_eq!(it.next(), Some("00"), "{traceparent}");
    let trace = it.next().unwrap().to_owned();
    let span = it.next().unwrap().to_owned();
    let flags = it.next().unwrap().to_owned();
    (trace, span, flags)
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_request_exports_one_span_in_its_callers_trace() {
    let (collector, mut spans) = collector().await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let c = support::cluster(
        "",
        vec![traced_app(seen_tx)],
        config(format!("http://{collector}/v1/traces"), 0.0),
    )
    .await;
    let app_addr = c.apps[0].addr;
    let addr = c.gateway.addr;

    // Sampled by the caller's flag.
    let incoming = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let got = support::send(
        addr,
        "GET",
        "/traced/http/a?q=1",
        &[("traceparent", &incoming)],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let response_tp = got.header("traceparent").expect("traceparent").to_owned();
    let (trace, gateway_span, flags) = parts(&response_tp);
    assert_eq!(trace, CALLER_TRACE, "the caller's trace goes on");
    assert_ne!(gateway_span, CALLER_SPAN, "the gateway's own span");
    assert_eq!(flags, "01");
    assert_eq!(
        seen.recv().await.unwrap().as_deref(),
        Some(response_tp.as_str()),
        "the app got the same traceparent"
    );

    // Not sampled: the caller's flag is 0 (and the probability is 0).
    let unsampled = format!("00-{}-{CALLER_SPAN}-00", "1".repeat(32));
    let got = support::send(
        addr,
        "GET",
        "/traced/http/b",
        &[("traceparent", &unsampled)],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let quiet_tp = got.header("traceparent").expect("traceparent").to_owned();
    assert!(quiet_tp.starts_with(&format!("00-{}-", "1".repeat(32))));
    assert!(quiet_tp.ends_with("-00"), "{quiet_tp}");
    assert_eq!(seen.recv().await.unwrap(), Some(quiet_tp));
    // Nor without any trace header.
    let got = support::send(addr, "GET", "/traced/http/c", &[], "").await;
    assert!(got.header("traceparent").unwrap().ends_with("-00"));
    assert!(seen.recv().await.unwrap().is_some());

    // Sampled, and failing in the app.
    let failing_trace = "2".repeat(32);
    let failing = format!("00-{failing_trace}-{CALLER_SPAN}-01");
    let got = support::send(
        addr,
        "POST",
        "/traced/fail",
        &[("traceparent", &failing)],
        "x",
    )
    .await;
    assert_eq!(got.status, 500);
    let failing_tp = got.header("traceparent").expect("an error carries it too");
    assert_eq!(parts(failing_tp).0, failing_trace);

    c.gateway.flush_traces().await;
    let mut arrived = Vec::new();
    while let Ok(got) = spans.try_recv() {
        arrived.push(got);
    }
    assert_eq!(arrived.len(), 2, "one span per sampled request, none else");
    assert_eq!(c.gateway.trace_stats().unwrap().exported, 2);

    let ok = arrived
        .iter()
        .find(|g| hex(&g.span.trace_id) == CALLER_TRACE)
        .expect("the sampled request's span");
    assert_eq!(ok.resource_service.as_deref(), Some("rpcgate"));
    let span = &ok.span;
    assert_eq!(hex(&span.span_id), gateway_span);
    assert_eq!(hex(&span.parent_span_id), CALLER_SPAN);
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, "traced/http");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert_eq!(string(span, "rpc.system"), "cocaine");
    assert_eq!(string(span, "rpc.service"), "traced");
    assert_eq!(string(span, "rpc.method"), "http");
    assert_eq!(string(span, "http.request.method"), "GET");
    assert_eq!(string(span, "url.path"), "/traced/http/a");
    assert_eq!(int(span, "http.response.status_code"), 200);
    assert_eq!(string(span, "rpcgate.member"), "traced");
    assert_eq!(int(span, "rpcgate.attempts"), 1);
    assert_eq!(string(span, "server.address"), app_addr.ip().to_string());
    assert_eq!(int(span, "server.port"), i64::from(app_addr.port()));
    assert!(attribute(span, "error.type").is_none());
    let status = span.status.clone().unwrap_or_default();
    assert_ne!(status.code, StatusCode::Error as i32);

    let failed = arrived
        .iter()
        .find(|g| hex(&g.span.trace_id) == failing_trace)
        .expect("the failing request's span");
    let span = &failed.span;
    assert_eq!(hex(&span.parent_span_id), CALLER_SPAN);
    assert_eq!(string(span, "error.type"), "app_error");
    assert_eq!(int(span, "http.response.status_code"), 500);
    assert_eq!(string(span, "rpc.method"), "fail");
    assert_eq!(string(span, "http.request.method"), "POST");
    assert_eq!(span.status.clone().unwrap().code, StatusCode::Error as i32);
    c.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_requests_export_nothing_and_a_request_id_roots_the_trace() {
    let (collector, mut spans) = collector().await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    // A bare host:port gets the OTLP path.
    let mut config = config(String::new(), 0.0);
    config.tracing = Config::parse(
        &format!("[tracing]\notlp_endpoint = \"http://{collector}\""),
        std::path::Path::new("<test>"),
    )
    .unwrap()
    .tracing;
    assert_eq!(
        config.tracing.otlp_endpoint,
        Some(format!("http://{collector}/v1/traces"))
    );
    let c = support::cluster("", vec![traced_app(seen_tx)], config).await;
    for _ in 0..20 {
        let got = support::send(c.gateway.addr, "GET", "/traced/http/", &[], "").await;
        assert_eq!(got.status, 200);
        assert!(seen.recv().await.unwrap().is_some());
    }
    c.gateway.flush_traces().await;
    assert!(spans.try_recv().is_err(), "nothing sampled, nothing sent");
    assert_eq!(c.gateway.trace_stats().unwrap().exported, 0);

    // X-Request-Id, sampled by the policy header: the id is the trace id
    // (zero-extended to 128 bits) and the span has no parent.
    let got = support::send(
        c.gateway.addr,
        "GET",
        "/traced/http/",
        &[
            ("x-request-id", "00000000000004d2"),
            ("x-cocaine-tracing-policy", "1"),
        ],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    seen.recv().await.unwrap();
    c.gateway.flush_traces().await;
    let got = spans.try_recv().expect("the sampled request's span");
    assert_eq!(hex(&got.span.trace_id), "000000000000000000000000000004d2");
    assert!(got.span.parent_span_id.is_empty(), "a root span");
    assert!(spans.try_recv().is_err());
    c.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_neither_fails_nor_slows_requests() {
    // A closed port: every export is refused at once.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut config = config(format!("http://{closed}/v1/traces"), 1.0);
    config.tracing.queue = 8;
    config.tracing.batch = 4;
    let c = support::cluster("", vec![traced_app(seen_tx)], config).await;
    let mut sender = support::h1(c.gateway.addr).await;
    for _ in 0..50 {
        sender.ready().await.unwrap();
        let response = sender
            .send_request(support::request("GET", "/traced/http/", &[], ""))
            .await
            .unwrap();
        let got = support::got(response).await;
        assert_eq!(got.status, 200);
        assert!(got.header("traceparent").unwrap().ends_with("-01"));
        assert!(seen.recv().await.unwrap().is_some());
    }
    c.gateway.flush_traces().await;
    let stats = c.gateway.trace_stats().unwrap();
    assert_eq!(stats.exported, 0);
    assert_eq!(stats.dropped, 50, "every span dropped and counted");
    assert!(stats.queued_peak <= 8, "{stats:?}");
    c.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_costs_a_bounded_queue_and_no_request_time() {
    // A collector that accepts and never answers: the first export hangs
    // for its whole timeout while requests go on.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole = black_hole.local_addr().unwrap();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut config = config(format!("http://{hole}/v1/traces"), 1.0);
    config.tracing.queue = 8;
    config.tracing.batch = 4;
    config.tracing.export_timeout = Duration::from_secs(60);
    let c = support::cluster("", vec![traced_app(seen_tx)], config).await;
    let mut sender = support::h1(c.gateway.addr).await;
    let mut send = async || {
        sender.ready().await.unwrap();
        let response = sender
            .send_request(support::request("GET", "/traced/http/", &[], ""))
            .await
            .unwrap();
        assert_eq!(support::got(response).await.status, 200);
        assert!(seen.recv().await.unwrap().is_some());
    };
    // Four spans fill a batch; its export connects and hangs.
    for _ in 0..4 {
        send().await;
    }
    accepted.recv().await.unwrap();
    let started = tokio::time::Instant::now();
    for _ in 0..200 {
        send().await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "requests waited for the exporter: {took:?}"
    );
    let stats = c.gateway.trace_stats().unwrap();
    assert_eq!(stats.exported, 0);
    assert!(stats.queued_peak <= 8, "{stats:?}");
    // At most a queue and a batch held; the rest dropped and counted.
    assert!(stats.dropped >= 200 - 8 - 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_json_rpc_call_is_a_child_span_of_its_request() {
    let (collector, mut spans) = collector().await;
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let c = support::cluster(
        "",
        vec![traced_app(seen_tx)],
        config(format!("http://{collector}/v1/traces"), 0.0),
    )
    .await;
    let body = serde_json::json!([
        {"jsonrpc": "2.0", "method": "traced.info", "params": [], "id": 1},
        {"jsonrpc": "2.0", "method": "nosuch.method", "params": [], "id": 2},
    ]);
    let incoming = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let got = support::send(
        c.gateway.addr,
        "POST",
        "/",
        &[("x-cocaine-json-rpc", "1"), ("traceparent", &incoming)],
        &body.to_string(),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let (_, request_span, _) = parts(got.header("traceparent").expect("traceparent"));
    c.gateway.flush_traces().await;
    let mut calls = Vec::new();
    let mut request = None;
    while let Ok(got) = spans.try_recv() {
        assert_eq!(hex(&got.span.trace_id), CALLER_TRACE, "one trace");
        if hex(&got.span.span_id) == request_span {
            request = Some(got.span);
        } else {
            calls.push(got.span);
        }
    }
    let request = request.expect("the request's own span");
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(calls.len(), 2, "one span per call");
    calls.sort_by_key(|s| string(s, "rpc.method"));
    for call in &calls {
        assert_eq!(
            hex(&call.parent_span_id),
            request_span,
            "a child of the request"
        );
    }
    assert_eq!(string(&calls[0], "rpc.method"), "nosuch.method");
    assert_eq!(int(&calls[0], "http.response.status_code"), 404);
    assert_eq!(string(&calls[1], "rpc.method"), "traced.info");
    assert_eq!(string(&calls[1], "rpc.service"), "traced");
    assert_eq!(string(&calls[1], "rpcgate.member"), "traced");
    assert_eq!(int(&calls[1], "http.response.status_code"), 200);
    c.gateway.shutdown().await;
}
