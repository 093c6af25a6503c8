//! `config/grafana/rpcgate.json` is a dashboard Grafana can import, and
//! every metric its panels query is one a running gateway really serves:
//! the gateway here serves requests, an unknown service, a body past the
//! limit, a routing group (with a member that never resolves, so it is
//! ejected and returns), a retried request and an SSE stream, then each
//! name in the panels' PromQL must have a series in `/metrics`. (One
//! test: a process has one global recorder.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use http_body_util::BodyExt;
use rpcgate::app::demo;
use rpcgate::config::Config;

const DASHBOARD: &str = include_str!("../config/grafana/rpcgate.json");

/// Every `rpcgate_*` identifier in `expr` (not in its quoted strings).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in expr.chars().chain([' ']) {
        if quoted {
            quoted = escaped || c != '"';
            escaped = !escaped && c == '\\';
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if word.starts_with("rpcgate_") {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
        quoted = c == '"';
    }
    names
}

/// The PromQL of every panel (rows' nested panels included), with the
/// panel's title.
fn panel_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Whether the Prometheus text has a sample of `name` (for a histogram's
/// `_bucket`, `_sum` and `_count`, also that the base name is a histogram).
fn has_series(text: &str, name: &str) -> bool {
    let sampled = text.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    });
    let histogram = ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .all(|base| text.contains(&format!("# TYPE {base} histogram")));
    sampled && histogram
}

#[test]
fn the_dashboard_is_importable() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    assert_eq!(variable("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(
        variable("service")["query"]["query"],
        "label_values(rpcgate_requests_total, service)"
    );
    let exprs = panel_exprs(&dashboard);
    assert!(exprs.len() >= 15, "{exprs:?}");
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{}",
                panel["title"]
            );
        }
    }
    assert!(exprs.iter().any(|(_, e)| e.contains(
        "histogram_quantile(0.99, sum by (le, service, member) (rate(rpcgate_request_duration_seconds_bucket"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_is_served() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut wanted = BTreeSet::new();
    for (title, expr) in panel_exprs(&dashboard) {
        let names = metric_names(&expr);
        assert!(
            !names.is_empty(),
            "panel `{title}` queries no metric: {expr}"
        );
        wanted.extend(names);
    }

    rpcgate::metrics::install_prometheus().unwrap();
    let mut config = Config::default();
    config.pool.size = 2;
    config.request.body_limit = 1024;
    // Parked after every response: the parked-connections gauge appears.
    config.limits.idle_release = Duration::ZERO;
    // `gone` never resolves: one failure ejects it, briefly.
    config.outlier.consecutive_failures = 1;
    config.outlier.base_ejection = Duration::from_millis(50);
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::channel(4);
    let apps = vec![
        demo::build("echo", Some("v1")).unwrap(),
        demo::build("ticker", None).unwrap(),
        // One request at a time: a second one is refused with "queue is
        // full", which proves non-delivery, so it is retried.
        support::delayed("one", "ok", arrived_tx).concurrency(1),
    ];
    let c = support::cluster("[groups.g]\necho-v1 = 3\ngone = 1\n", apps, config).await;
    let gw = c.gateway.addr;

    // Requests through the routing group (picks, weights, pools).
    for _ in 0..5 {
        let got = support::send(gw, "GET", "/g/http/", &[], "").await;
        assert_eq!(got.status, 200, "{:?}", got.body);
    }
    // An error, and a limit hit.
    assert_eq!(
        support::send(gw, "GET", "/nope/http/", &[], "")
            .await
            .status,
        503
    );
    let big = "x".repeat(4096);
    assert_eq!(
        support::send(gw, "POST", "/g/http/", &[], &big)
            .await
            .status,
        413
    );
    // An SSE stream of two events, read to its end.
    let mut sender = support::h1(gw).await;
    let response = sender
        .send_request(support::request(
            "GET",
            "/ticker/http/?interval_ms=5&count=2",
            &[],
            "",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    // A retry: `one` is busy with a slow request when the next comes.
    let slow = tokio::spawn(support::send(gw, "GET", "/one/http/?ms=1000", &[], ""));
    arrived.recv().await.unwrap();
    let refused = support::send(gw, "GET", "/one/http/", &[], "").await;
    assert!(
        [200, 503].contains(&refused.status),
        "{} {:?}",
        refused.status,
        refused.body
    );
    // `gone` ejected, back, and ejected again (a return in between).
    support::child::bounded(
        "the member that never resolves ejected twice",
        c.gateway.pools().wait_until_groups(|groups| {
            groups.iter().any(|g| {
                g.view()
                    .iter()
                    .any(|m| m.member == "gone" && m.ejections >= 2)
            })
        }),
    )
    .await;
    assert_eq!(slow.await.unwrap().status, 200);

    let (status, text) = support::http(c.gateway.admin_addr.unwrap(), "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let missing: Vec<_> = wanted
        .iter()
        .filter(|name| !has_series(&text, name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the gateway did not serve: {missing:?}\n{text}"
    );
}

#[test]
fn names_are_extracted_from_promql() {
    assert_eq!(
        metric_names(
            "sum(rate(rpcgate_a_total{x=\"rpcgate_not\"}[1m])) / xrpcgate_b + rpcgate_c_bucket"
        ),
        ["rpcgate_a_total", "rpcgate_c_bucket"]
    );
}
