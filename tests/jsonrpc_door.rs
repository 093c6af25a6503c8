//! JSON-RPC goes through the same door as every request: each call of a
//! batch is admitted against its own service's `max_in_flight` and takes
//! its own slot; a routing group's name gets the weighted member choice
//! per call (and the sticky one when the request sends the header), not
//! the member of its first resolve.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use rpcgate::app::demo;
use rpcgate::config::{Config, ServiceConfig};
use serde_json::{Value, json};
use support::groups::{members_active, wait_connected};

/// A batch of `n` calls of `method` (ids 0..n), answered in order.
async fn batch(addr: SocketAddr, method: &str, n: usize, headers: &[(&str, &str)]) -> Vec<Value> {
    let calls: Vec<Value> = (0..n)
        .map(|id| json!({"jsonrpc": "2.0", "method": method, "params": [], "id": id}))
        .collect();
    let mut headers = headers.to_vec();
    headers.push(("x-cocaine-json-rpc", "1"));
    let got = support::send(
        addr,
        "POST",
        "/",
        &headers,
        &Value::Array(calls).to_string(),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let answers = got.json();
    let answers = answers.as_array().expect("a batch's answers").clone();
    assert_eq!(answers.len(), n, "{answers:?}");
    answers
}

/// The app an `info` answer came from (its `name`).
fn app_name(answer: &Value) -> String {
    answer["result"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("not an info answer: {answer}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_of_a_batch_takes_its_own_slot_of_its_service() {
    let _ = rpcgate::metrics::install_prometheus();
    let mut config = Config::default();
    config.services.insert(
        "echo".into(),
        ServiceConfig {
            max_in_flight: Some(1),
            ..ServiceConfig::default()
        },
    );
    let c = support::cluster("", vec![demo::build("echo", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    // Warm: the pool connected and the name resolved, so the batch below
    // is decided by admission alone.
    assert_eq!(app_name(&batch(addr, "echo.info", 1, &[]).await[0]), "echo");

    // The calls of a batch start together: the first takes the service's
    // one slot until its answer, so the other four are refused at once,
    // with the code that says "try again".
    let answers = batch(addr, "echo.info", 5, &[]).await;
    let served = answers.iter().filter(|a| a["result"].is_array()).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a["error"]["code"] == -32001)
        .collect();
    assert_eq!(served, 1, "{answers:?}");
    assert_eq!(refused.len(), 4, "{answers:?}");
    assert!(
        refused[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in flight"),
        "{refused:?}"
    );
    // Counted as the service's limit.
    let hits = support::limit_hits(c.gateway.admin_addr.unwrap(), "service_in_flight").await;
    assert!(hits >= 4, "service_in_flight hits: {hits}");
    // The slots came back: one call at a time passes.
    for _ in 0..3 {
        assert_eq!(app_name(&batch(addr, "echo.info", 1, &[]).await[0]), "echo");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_name_gets_the_weighted_choice_per_call_and_the_sticky_one() {
    let c = support::cluster(
        "[groups.g]\necho-v1 = 3\necho-v2 = 1\n",
        vec![
            demo::build("echo", Some("v1")).unwrap(),
            demo::build("echo", Some("v2")).unwrap(),
        ],
        Config::default(),
    )
    .await;
    let addr = c.gateway.addr;
    let pools = c.gateway.pools();
    wait_connected(pools, &["echo-v1", "echo-v2"]).await;
    members_active(pools, "g", &["echo-v1", "echo-v2"]).await;

    // 2,000 calls in batches of 100: the weights' 1 in 4 within a point
    // (the choice is exact per call; a batch is not one member's).
    let mut by_member: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        let answers = batch(addr, "g.info", 100, &[]).await;
        let names: std::collections::BTreeSet<_> = answers.iter().map(app_name).collect();
        assert_eq!(names.len(), 2, "one batch reaches both members: {names:?}");
        for answer in &answers {
            *by_member.entry(app_name(answer)).or_default() += 1;
        }
    }
    let total: usize = by_member.values().sum();
    let v2 = by_member.get("echo-v2").copied().unwrap_or(0) as f64 / total as f64;
    assert_eq!(total, 2000, "{by_member:?}");
    assert!(
        (v2 - 0.25).abs() <= 0.01,
        "echo-v2 got {v2:.4}: {by_member:?}"
    );

    // A sticky key: every call of every batch on one member, the same one
    // an HTTP request with that key gets.
    for key in ["user-1", "user-2", "user-3", "user-4"] {
        let answers = batch(addr, "g.info", 50, &[("x-cocaine-sticky", key)]).await;
        let names: std::collections::BTreeSet<_> = answers.iter().map(app_name).collect();
        assert_eq!(names.len(), 1, "key {key}: {names:?}");
        let http = support::send(addr, "GET", "/g/http/", &[("x-cocaine-sticky", key)], "").await;
        let version = http.header("x-app-version").unwrap().to_owned();
        assert_eq!(
            names.first().unwrap(),
            &format!("echo-{version}"),
            "key {key}"
        );
    }
}
