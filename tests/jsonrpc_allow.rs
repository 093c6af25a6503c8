//! JSON-RPC reaches apps only unless `[jsonrpc] allow` lists a method:
//! with the default config `locator.publish` and `locator.routing` are
//! unknown methods answered at once, and the locator never sees them; a
//! non-app service's methods are refused before any connection is opened
//! to it; an app's method works; `allow` opens one method, `expose`
//! narrows it; the standalone default allows the read-only locator
//! methods only; `allow` entries must be whole methods.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::path::Path;

use rpcgate::app::demo;
use rpcgate::config::Config;
use rpcgate::proto::Graph;
use serde_json::{Value, json};
use tokio::time::Instant;

async fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let got = support::send(
        addr,
        "POST",
        "/",
        &[("x-cocaine-json-rpc", "1")],
        &body.to_string(),
    )
    .await;
    assert_eq!(got.status, 200, "{method}: {:?}", got.body);
    got.json()
}

fn code(answer: &Value) -> Option<i64> {
    answer["error"]["code"].as_i64()
}

fn config(allow: &[&str], expose: Option<&[&str]>) -> Config {
    let mut config = Config::default();
    config.jsonrpc.allow = allow.iter().map(|m| (*m).to_owned()).collect();
    config.routing.expose = expose.map(|list| list.iter().map(|s| (*s).to_owned()).collect());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_publish_and_routing_are_unknown_and_never_reach_the_locator() {
    let c = support::cluster(
        "",
        vec![demo::build("echo", None).unwrap()],
        Config::default(),
    )
    .await;
    let addr = c.gateway.addr;
    let registry = c.locator.registry();
    let mut services = registry.watch_services();
    services.borrow_and_update();
    let subscribers = registry.subscriber_count();

    let answer = rpc(addr, "locator.publish", json!(["evil", [["127.0.0.1", 1]]])).await;
    assert_eq!(code(&answer), Some(-32601), "{answer}");
    // Nothing was published, not even for a moment.
    assert!(
        !services.has_changed().unwrap(),
        "the locator's services changed"
    );
    assert!(!registry.has_service("evil"));
    assert_eq!(
        code(&rpc(addr, "locator.resolve", json!(["evil"])).await),
        Some(-32601),
        "resolve is not allowed by default either"
    );

    // `routing` would hold the request until its deadline: refused at once.
    let timeout = Config::default().request.timeout;
    let started = Instant::now();
    let answer = rpc(addr, "locator.routing", json!(["spy"])).await;
    assert_eq!(code(&answer), Some(-32601), "{answer}");
    assert!(
        started.elapsed() < timeout / 2,
        "answered after {:?} (deadline {timeout:?})",
        started.elapsed()
    );
    assert_eq!(registry.subscriber_count(), subscribers);
    assert!(!services.has_changed().unwrap());

    // An app's methods stay callable.
    let answer = rpc(addr, "echo.info", json!([])).await;
    assert!(answer["result"].is_array(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_app_service_gets_no_connection_unless_allowed() {
    let c = support::cluster(
        "",
        vec![demo::build("echo", None).unwrap()],
        config(&["spy.uuid"], None),
    )
    .await;
    // A service with the locator's graph (not an app's), whose listener
    // is only watched: nothing accepts, so an opened connection stays in
    // its backlog.
    let spy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    spy.set_nonblocking(true).unwrap();
    let port = spy.local_addr().unwrap().port();
    let _published = support::publish_graph(c.locator.addr, "spy", port, Graph::locator()).await;

    for method in ["spy.publish", "spy.routing", "spy.resolve", "spy.nope"] {
        let answer = rpc(c.gateway.addr, method, json!(["evil", [["127.0.0.1", 1]]])).await;
        assert_eq!(code(&answer), Some(-32601), "{method}: {answer}");
        // The answer came after any connect would have completed.
        assert_eq!(
            spy.accept().map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "{method}: the gateway connected to a service it may not call"
        );
    }
    // The allowed method does connect (and, nobody answering, ends at a
    // short deadline).
    let body = json!({"jsonrpc": "2.0", "method": "spy.uuid", "id": 1});
    let got = support::send(
        c.gateway.addr,
        "POST",
        "/",
        &[("x-cocaine-json-rpc", "1"), ("x-request-timeout", "200")],
        &body.to_string(),
    )
    .await;
    assert_ne!(got.json()["error"]["code"], -32601, "{:?}", got.body);
    spy.set_nonblocking(false).unwrap();
    spy.accept().expect("the allowed call connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_opens_one_method_and_expose_narrows_it() {
    let c = support::cluster(
        "",
        vec![demo::build("echo", None).unwrap()],
        config(&["locator.resolve"], None),
    )
    .await;
    let answer = rpc(c.gateway.addr, "locator.resolve", json!(["echo"])).await;
    assert_eq!(answer["result"][2]["0"][0], "enqueue", "{answer}");
    for method in ["locator.uuid", "locator.cluster", "locator.publish"] {
        let answer = rpc(c.gateway.addr, method, json!([])).await;
        assert_eq!(code(&answer), Some(-32601), "{method}: {answer}");
    }

    // `expose` naming the whole locator does not open what `allow` does
    // not list, and what it leaves out stays closed (apps included).
    let c = support::cluster(
        "",
        vec![demo::build("echo", None).unwrap()],
        config(&["locator.resolve", "locator.uuid"], Some(&["locator"])),
    )
    .await;
    let answer = rpc(c.gateway.addr, "locator.uuid", json!([])).await;
    assert!(answer["result"][0].is_string(), "{answer}");
    for method in ["locator.cluster", "echo.info"] {
        let answer = rpc(c.gateway.addr, method, json!([])).await;
        assert_eq!(code(&answer), Some(-32601), "{method}: {answer}");
    }
    let c = support::cluster(
        "",
        vec![demo::build("echo", None).unwrap()],
        config(
            &["locator.resolve", "locator.uuid"],
            Some(&["echo", "locator.resolve"]),
        ),
    )
    .await;
    let answer = rpc(c.gateway.addr, "locator.uuid", json!([])).await;
    assert_eq!(
        code(&answer),
        Some(-32601),
        "expose narrows allow: {answer}"
    );
    let answer = rpc(c.gateway.addr, "locator.resolve", json!(["echo"])).await;
    assert!(answer["result"].is_array(), "{answer}");
    let answer = rpc(c.gateway.addr, "echo.info", json!([])).await;
    assert!(answer["result"].is_array(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_default_allows_the_read_only_locator_methods() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: None,
        ..Config::default()
    };
    let standalone = rpcgate::gateway::Standalone::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = standalone.gateway.addr;
    let answer = rpc(addr, "locator.resolve", json!(["echo"])).await;
    assert!(answer["result"].is_array(), "{answer}");
    let answer = rpc(addr, "locator.uuid", json!([])).await;
    assert!(answer["result"][0].is_string(), "{answer}");
    let answer = rpc(addr, "locator.cluster", json!([])).await;
    assert!(answer["result"].is_array(), "{answer}");
    let registry = standalone.locator.registry();
    let mut services = registry.watch_services();
    services.borrow_and_update();
    for (method, params) in [
        ("locator.publish", json!(["evil", [["127.0.0.1", 1]]])),
        ("locator.routing", json!(["spy"])),
    ] {
        let answer = rpc(addr, method, params).await;
        assert_eq!(code(&answer), Some(-32601), "{method}: {answer}");
    }
    assert!(!services.has_changed().unwrap());
    standalone.shutdown().await;
}

#[test]
fn allow_takes_whole_methods_only() {
    let file = Path::new("gw.toml");
    let config = Config::parse("[jsonrpc]\nallow = [\"locator.resolve\"]\n", file).unwrap();
    assert!(config.jsonrpc.allow.contains("locator.resolve"));
    assert!(Config::default().jsonrpc.allow.is_empty());
    for bad in ["locator", "locator.", ".resolve", ""] {
        let text = format!("[jsonrpc]\nallow = [\"{bad}\"]\n");
        let error = Config::parse(&text, file).unwrap_err().to_string();
        assert!(
            error.contains("jsonrpc.allow") && error.contains("gw.toml"),
            "{bad}: {error}"
        );
    }
}
