//! JSON-RPC 2.0 end to end: a single call, a batch (answers in order), a
//! notification (no answer), bad JSON, unknown and unexposed methods, a
//! streaming method of a test service, and `locator.resolve` of a
//! published app, through a gateway in front of an in-process locator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use rpcgate::app::demo;
use rpcgate::config::Config;
use rpcgate::mux::{Channel, MuxHandle};
use rpcgate::proto::graph::{Method, Node, Transition};
use rpcgate::proto::msgpack;
use rpcgate::proto::{Args, ErrorCode, Graph, Message, RawArgs, RemoteError};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// The test service's graph: `stream` (streaming reply), `sum` and
/// `fail` (primitive replies).
fn calc_graph() -> Graph {
    let method = |name: &str, upstream: Node| Method {
        name: name.to_owned(),
        dispatch: Transition::Node(Node::terminal()),
        upstream: Transition::Node(upstream),
    };
    Graph {
        methods: BTreeMap::from([
            (0, method("stream", Node::streaming())),
            (1, method("sum", Node::primitive())),
            (2, method("fail", Node::primitive())),
            (3, method("wait", Node::primitive())),
            (4, method("release", Node::primitive())),
        ]),
    }
}

/// Serves the `calc` protocol: `stream [n]` writes `n` chunks then
/// closes; `sum [a, b]` answers `a + b`; `fail` answers `error [[43, 7]]`;
/// `wait` answers only when a `release` arrives (both answer `released`).
async fn serve_calc(peer: support::Peer) {
    // `wait` calls, from any connection: each one's channel and the way
    // back to its connection's task; and releases that came first (the
    // calls of a batch run at once, so either may arrive first), each
    // kept for the next `wait`.
    #[derive(Default)]
    struct Waiting {
        waiters: Vec<(u64, tokio::sync::mpsc::UnboundedSender<u64>)>,
        early_releases: usize,
    }
    let waiting: Arc<Mutex<Waiting>> = Arc::default();
    loop {
        let mut conn = peer.accept().await;
        let waiting = Arc::clone(&waiting);
        tokio::spawn(async move {
            let (released_tx, mut released) = tokio::sync::mpsc::unbounded_channel();
            let reply = |text: &'static [u8]| {
                Message::new(
                    0,
                    Args::Raw(RawArgs::build(1, |b| msgpack::put_str(b, text)).unwrap()),
                )
            };
            loop {
                let frame = tokio::select! {
                    frame = conn.next_frame() => frame,
                    Some(channel) = released.recv() => {
                        conn.send(channel, reply(b"released")).await;
                        continue;
                    }
                };
                let Some(frame) = frame else { break };
                let mut r = frame.args_reader();
                let _ = r.read_array_len();
                match frame.ty {
                    0 => {
                        let n = r.read_uint().unwrap_or(0);
                        for i in 0..n {
                            conn.send(frame.channel, Message::write(format!("chunk {i}")))
                                .await;
                        }
                        conn.send(frame.channel, Message::close()).await;
                    }
                    1 => {
                        let sum = r.read_integer().unwrap() + r.read_integer().unwrap();
                        let args = RawArgs::build(1, |b| msgpack::put_int(b, sum as i64)).unwrap();
                        conn.send(frame.channel, Message::new(0, Args::Raw(args)))
                            .await;
                    }
                    2 => {
                        let code = ErrorCode {
                            category: 43,
                            code: 7,
                        };
                        conn.send(
                            frame.channel,
                            Message::error(1, RemoteError::new(code, "nope")),
                        )
                        .await;
                    }
                    3 => {
                        let mut waiting = waiting.lock().unwrap();
                        if waiting.early_releases > 0 {
                            waiting.early_releases -= 1;
                            let _ = released_tx.send(frame.channel);
                        } else {
                            waiting.waiters.push((frame.channel, released_tx.clone()));
                        }
                    }
                    4 => {
                        let held = {
                            let mut waiting = waiting.lock().unwrap();
                            let held = std::mem::take(&mut waiting.waiters);
                            if held.is_empty() {
                                waiting.early_releases += 1;
                            }
                            held
                        };
                        for (channel, to) in held {
                            let _ = to.send(channel);
                        }
                        conn.send(frame.channel, reply(b"released")).await;
                    }
                    _ => {}
                }
            }
        });
    }
}

/// `calc` is not an app, so JSON-RPC reaches its methods (and the
/// locator's `resolve`) only when `jsonrpc.allow` lists them.
const ALLOW: [&str; 6] = [
    "calc.stream",
    "calc.sum",
    "calc.fail",
    "calc.wait",
    "calc.release",
    "locator.resolve",
];

/// A cluster with the `echo` demo app and the `calc` test service, whose
/// methods `config` is made to allow.
async fn start(mut config: Config) -> (support::Cluster, (MuxHandle, Channel)) {
    config
        .jsonrpc
        .allow
        .extend(ALLOW.iter().map(|m| (*m).to_owned()));
    let c = support::cluster("", vec![demo::build("echo", None).unwrap()], config).await;
    let peer = support::Peer::bind().await;
    let port = peer.addr.port();
    tokio::spawn(serve_calc(peer));
    let published = support::publish_graph(c.locator.addr, "calc", port, calc_graph()).await;
    (c, published)
}

async fn rpc(addr: SocketAddr, body: &str) -> support::Got {
    support::send(addr, "POST", "/", &[("x-cocaine-json-rpc", "1")], body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_call_answers_with_its_value() {
    let (c, _published) = start(Config::default()).await;
    let got = rpc(
        c.gateway.addr,
        r#"{"jsonrpc": "2.0", "method": "calc.sum", "params": [40, 2], "id": 7}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.json(),
        json!({"jsonrpc": "2.0", "result": [42], "id": 7})
    );
    // `Content-Type: application/json-rpc` asks for JSON-RPC too.
    let got = support::send(
        c.gateway.addr,
        "POST",
        "/",
        &[("content-type", "application/json-rpc")],
        r#"{"jsonrpc": "2.0", "method": "calc.sum", "params": [-1, 1], "id": "a"}"#,
    )
    .await;
    assert_eq!(
        got.json(),
        json!({"jsonrpc": "2.0", "result": [0], "id": "a"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_method_collects_its_chunks_until_close() {
    let (c, _published) = start(Config::default()).await;
    let got = rpc(
        c.gateway.addr,
        r#"{"jsonrpc": "2.0", "method": "calc.stream", "params": [3], "id": 1}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json()["result"],
        json!({"chunks": [["chunk 0"], ["chunk 1"], ["chunk 2"]]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_in_order_without_its_notifications() {
    let (c, _published) = start(Config::default()).await;
    let got = rpc(
        c.gateway.addr,
        r#"[
            {"jsonrpc": "2.0", "method": "calc.stream", "params": [2], "id": 1},
            {"jsonrpc": "2.0", "method": "calc.sum", "params": [1, 2]},
            {"jsonrpc": "2.0", "method": "calc.fail", "id": 2},
            {"jsonrpc": "2.0", "method": "calc.nope", "id": 3},
            {"jsonrpc": "2.0", "method": "calc.sum", "params": [1, 2], "id": 4},
            7
        ]"#,
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let replies = got.json();
    let replies = replies.as_array().unwrap();
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert_eq!(replies[0]["id"], 1);
    assert_eq!(replies[0]["result"]["chunks"].as_array().unwrap().len(), 2);
    assert_eq!(
        replies[1],
        json!({"jsonrpc": "2.0", "id": 2, "error":
            {"code": -32000, "message": "nope", "data": {"category": 43, "code": 7}}})
    );
    assert_eq!(replies[2]["id"], 3);
    assert_eq!(replies[2]["error"]["code"], -32601);
    assert_eq!(replies[3]["result"], json!([3]));
    assert_eq!(replies[4]["id"], Value::Null);
    assert_eq!(replies[4]["error"]["code"], -32600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_not_answered() {
    let (c, _published) = start(Config::default()).await;
    let addr = c.gateway.addr;
    let got = rpc(
        addr,
        r#"{"jsonrpc": "2.0", "method": "calc.sum", "params": [1, 2]}"#,
    )
    .await;
    assert_eq!(got.status, 204);
    assert!(got.body.is_empty());
    let got = rpc(
        addr,
        r#"[{"jsonrpc": "2.0", "method": "calc.fail"}, {"jsonrpc": "2.0", "method": "x.y"}]"#,
    )
    .await;
    assert_eq!(got.status, 204);
    assert!(got.body.is_empty());
    // The gateway is still there.
    let got = rpc(
        addr,
        r#"{"jsonrpc": "2.0", "method": "calc.sum", "params": [1, 2], "id": 0}"#,
    )
    .await;
    assert_eq!(got.json()["result"], json!([3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_and_bad_shapes_are_errors() {
    let (c, _published) = start(Config {
        jsonrpc: rpcgate::config::JsonRpcConfig {
            max_batch: 2,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    let addr = c.gateway.addr;
    let got = rpc(addr, r#"{"jsonrpc": "2.0", "method""#).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["error"]["code"], -32700);
    assert_eq!(got.json()["id"], Value::Null);
    for (body, code) in [
        (r#"[]"#, -32600),
        (r#"{"method": "calc.sum", "id": 1}"#, -32600),
        (r#"{"jsonrpc": "2.0", "method": 5, "id": 1}"#, -32600),
        (
            r#"{"jsonrpc": "2.0", "method": "calc.sum", "params": 5, "id": 1}"#,
            -32602,
        ),
        (r#"[1, 2, 3]"#, -32600),
    ] {
        let got = rpc(addr, body).await;
        assert_eq!(got.status, 200, "{body}");
        assert_eq!(got.json()["error"]["code"], code, "{body}: {:?}", got.body);
    }
    // Over the body limit: the gateway's 413, as for any request.
    let config = Config {
        request: rpcgate::config::RequestConfig {
            body_limit: 16,
            ..Default::default()
        },
        ..Config::default()
    };
    let (small, _published) = start(config).await;
    let got = rpc(
        small.gateway.addr,
        r#"{"jsonrpc": "2.0", "method": "calc.sum", "params": [1, 2], "id": 0}"#,
    )
    .await;
    assert_eq!(got.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unexposed_methods_are_not_found() {
    let mut config = Config::default();
    config.routing.expose = Some(["echo".to_owned(), "locator.resolve".to_owned()].into());
    let (c, _published) = start(config).await;
    let addr = c.gateway.addr;
    for method in [
        "nobody.call",
        "calc.sum",
        "locator.uuid",
        "echo.nope",
        "nodot",
    ] {
        let body =
            format!(r#"{{"jsonrpc": "2.0", "method": "{method}", "params": [1, 2], "id": 9}}"#);
        let got = rpc(addr, &body).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.json()["error"]["code"],
            -32601,
            "{method}: {:?}",
            got.body
        );
        assert_eq!(got.json()["id"], 9);
    }
    // An exposed method of an otherwise unexposed service works.
    let got = rpc(
        addr,
        r#"{"jsonrpc": "2.0", "method": "locator.resolve", "params": ["echo"], "id": 1}"#,
    )
    .await;
    assert!(got.json()["result"].is_array(), "{:?}", got.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locator_resolve_of_a_published_app() {
    let (c, _published) = start(Config::default()).await;
    let got = rpc(
        c.gateway.addr,
        r#"{"jsonrpc": "2.0", "method": "locator.resolve", "params": ["echo"], "id": 1}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let result = &got.json()["result"];
    let port = c.apps[0].addr.port();
    assert_eq!(result[0], json!([["127.0.0.1", port]]), "{result}");
    assert_eq!(result[1], 1);
    assert_eq!(result[2]["0"][0], "enqueue", "{result}");
    // An unknown name is the locator's own error.
    let got = rpc(
        c.gateway.addr,
        r#"{"jsonrpc": "2.0", "method": "locator.resolve", "params": ["nobody"], "id": 2}"#,
    )
    .await;
    let error = &got.json()["error"];
    assert_eq!(error["code"], -32000);
    assert_eq!(error["data"], json!({"category": 10, "code": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_its_calls_at_once_under_one_deadline() {
    let (c, _published) = start(Config::default()).await;
    // `wait` answers only once `release` has arrived: run one after the
    // other, the batch could never finish.
    let body = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "calc.wait", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "calc.release", "params": []},
    ]);
    let got = rpc(c.gateway.addr, &body.to_string()).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let answers = got.json();
    assert_eq!(answers[0]["id"], 1, "{answers}");
    assert_eq!(answers[0]["result"], json!(["released"]), "{answers}");
    assert_eq!(answers[1]["result"], json!(["released"]), "{answers}");
    // A batch whose call never answers ends at the request's deadline,
    // with the batch answered (its calls as errors), not hung.
    let body = json!([{"jsonrpc": "2.0", "id": 7, "method": "calc.wait", "params": []}]);
    let got = support::send(
        c.gateway.addr,
        "POST",
        "/",
        &[("x-cocaine-json-rpc", "1"), ("x-request-timeout", "300")],
        &body.to_string(),
    )
    .await;
    let text = String::from_utf8_lossy(&got.body).into_owned();
    assert!(
        got.status == 504 || text.contains("\"error\""),
        "the deadline ends the batch: {} {text}",
        got.status
    );
}
