//! `/metrics` serves Prometheus text with requests by service and status
//! class, pool connections by state (zeroed when an idle pool closes),
//! resolves and errors. (One test: a
//! process has one global recorder.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use rpcgate::app::demo;
use rpcgate::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_prometheus_text() {
    rpcgate::metrics::install_prometheus().unwrap();
    assert!(rpcgate::metrics::install_prometheus().is_err(), "only once");
    let mut config = Config::default();
    config.pool.size = 2;
    config.request.body_limit = 1024;
    config.pool.idle_timeout = Some(std::time::Duration::from_millis(300));
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    for _ in 0..3 {
        assert_eq!(
            support::send(c.gateway.addr, "GET", "/hello/http/", &[], "")
                .await
                .status,
            200
        );
    }
    assert_eq!(
        support::send(c.gateway.addr, "GET", "/nope/http/", &[], "")
            .await
            .status,
        503
    );
    // Past the body limit: 413, counted as a limit hit.
    let big = "x".repeat(4096);
    assert_eq!(
        support::send(c.gateway.addr, "POST", "/hello/http/", &[], &big)
            .await
            .status,
        413
    );
    let (status, text) = support::http(c.gateway.admin_addr.unwrap(), "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    for expected in [
        "rpcgate_requests_total{service=\"hello\",member=\"hello\",status=\"2xx\"} 3",
        "rpcgate_requests_total{service=\"_unknown\",member=\"_unknown\",status=\"5xx\"} 1",
        "rpcgate_errors_total{kind=\"service_not_found\",category=\"none\"} 1",
        "rpcgate_pool_connects_total{service=\"hello\",result=\"ok\"}",
        "rpcgate_resolves_total{result=\"ok\"}",
        "# TYPE rpcgate_request_duration_seconds histogram",
        "rpcgate_request_duration_seconds_bucket{service=\"hello\",member=\"hello\",le=\"0.0005\"}",
        "rpcgate_request_duration_seconds_count{service=\"hello\",member=\"hello\"} 4",
        "rpcgate_requests_in_flight 0",
        "rpcgate_http_connections",
        "rpcgate_limit_hits_total{limit=\"body_size\"} 1",
        "# HELP rpcgate_requests_total",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    // The hello pool (made by requests, not configured) closes once idle,
    // and its connection gauges go to zero.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        c.gateway
            .pools()
            .wait_until(|all| all.iter().all(|p| p.service() != "hello")),
    )
    .await
    .expect("the idle pool closed");
    let (_, text) = support::http(c.gateway.admin_addr.unwrap(), "GET", "/metrics", "").await;
    for expected in [
        "rpcgate_pool_connections{service=\"hello\",state=\"live\"} 0",
        "rpcgate_pool_connections{service=\"hello\",state=\"draining\"} 0",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}
