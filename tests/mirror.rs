//! Mirroring with real apps, a real locator and the gateway on loopback:
//! with a mirror that is slow, or down, the primary's statuses and latency
//! are unchanged, and the counters add up (every copy counted once, by
//! outcome; copies past `mirror_max_in_flight` dropped and counted).

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use tokio::time::Instant;

use rpcgate::app::demo;
use rpcgate::config::{Config, ServiceConfig};

/// How long the slow mirror takes to answer (its `?ms=`).
const MIRROR_DELAY_MS: u64 = 2000;
/// Copies in flight at most.
const MAX_IN_FLIGHT: usize = 4;
/// Requests per primary.
const REQUESTS: u64 = 30;

/// The value of the series `name{labels}` in the Prometheus text (0 if absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn mirror_total(text: &str, service: &str, mirror: &str, outcome: &str) -> f64 {
    value(
        text,
        &format!(
            "rpcgate_mirror_total{{service=\"{service}\",mirror=\"{mirror}\",outcome=\"{outcome}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_dead_mirror_changes_nothing_for_the_primary_and_counters_add_up() {
    rpcgate::metrics::install_prometheus().unwrap();
    let (arrived, mut arrivals) = tokio::sync::mpsc::channel(1024);
    let mut config = Config::default();
    let mirrored = |mirror: &str| ServiceConfig {
        mirror: Some(mirror.to_owned()),
        mirror_share: 1.0,
        mirror_max_in_flight: MAX_IN_FLIGHT,
        ..ServiceConfig::default()
    };
    config.services.insert("echo".into(), mirrored("slow"));
    // `nowhere` is not published: the mirror is down.
    config.services.insert("hello".into(), mirrored("nowhere"));
    let cluster = support::cluster(
        "",
        vec![
            demo::build("echo", None).unwrap(),
            demo::build("hello", None).unwrap(),
            support::delayed("slow", "slow", arrived),
        ],
        config,
    )
    .await;
    let (gateway, admin) = (cluster.gateway.addr, cluster.gateway.admin_addr.unwrap());

    // The primary answers at its own pace: each request well inside the
    // mirror's delay, every one 200.
    for path in [
        format!("/echo/http/?ms={MIRROR_DELAY_MS}"),
        "/hello/http/".to_owned(),
    ] {
        for _ in 0..REQUESTS {
            let started = Instant::now();
            let got = support::send(gateway, "GET", &path, &[], "").await;
            let took = started.elapsed();
            assert_eq!(got.status, 200, "{path}: {:?}", got.body);
            assert!(
                took < Duration::from_millis(MIRROR_DELAY_MS / 2),
                "{path}: the primary took {took:?}, as if it waited for the mirror"
            );
        }
    }
    // The slow mirror got at most MAX_IN_FLIGHT copies at a time: the
    // first ones, before any could finish.
    let mut copies = 0;
    while let Ok(Some(())) =
        tokio::time::timeout(Duration::from_millis(MIRROR_DELAY_MS * 2), arrivals.recv()).await
    {
        copies += 1;
        if copies == MAX_IN_FLIGHT {
            break;
        }
    }
    assert_eq!(copies, MAX_IN_FLIGHT, "the slow mirror got its copies");

    // Every request is counted once, when its copy ends: wait for the sums.
    let text = support::child::bounded("the mirror counters to add up", async {
        loop {
            let (_, text) = support::http(admin, "GET", "/metrics", "").await;
            let slow: f64 = ["match", "mismatch", "error", "dropped", "abandoned"]
                .iter()
                .map(|o| mirror_total(&text, "echo", "slow", o))
                .sum();
            let down: f64 = ["match", "mismatch", "error", "dropped", "abandoned"]
                .iter()
                .map(|o| mirror_total(&text, "hello", "nowhere", o))
                .sum();
            if slow == REQUESTS as f64 && down == REQUESTS as f64 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The slow mirror: the copies in flight matched (200 both sides), the
    // rest were dropped at the bound.
    assert_eq!(
        mirror_total(&text, "echo", "slow", "match"),
        MAX_IN_FLIGHT as f64,
        "{text}"
    );
    assert_eq!(
        mirror_total(&text, "echo", "slow", "dropped"),
        (REQUESTS - MAX_IN_FLIGHT as u64) as f64
    );
    // The dead mirror: no reply, a status-class mismatch each.
    let errors = mirror_total(&text, "hello", "nowhere", "error");
    let dropped = mirror_total(&text, "hello", "nowhere", "dropped");
    assert!(errors > 0.0, "{text}");
    assert_eq!(errors + dropped, REQUESTS as f64);
    assert_eq!(
        value(
            &text,
            "rpcgate_mirror_status_mismatches_total{service=\"hello\",mirror=\"nowhere\",primary=\"2xx\",mirrored=\"error\"}"
        ),
        errors
    );
    // A latency sample per side for every copy that was sent.
    for side in ["primary", "mirror"] {
        assert_eq!(
            value(
                &text,
                &format!(
                    "rpcgate_mirror_duration_seconds_count{{service=\"echo\",mirror=\"slow\",side=\"{side}\"}}"
                )
            ),
            MAX_IN_FLIGHT as f64,
            "{side}"
        );
    }
    // The primary's own series saw every request, each a 2xx.
    assert_eq!(
        value(
            &text,
            "rpcgate_requests_total{service=\"echo\",member=\"echo\",status=\"2xx\"}"
        ),
        REQUESTS as f64
    );
}
