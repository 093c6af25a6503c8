//! Faults on the backend side, with real processes: two instances behind
//! one name share a pool, and killing one stalls nothing; with the locator
//! down, requests for services without a pool fail fast and leave nothing
//! behind; an app publishes again soon after its locator comes back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpcgate::config::Config;
use rpcgate::gateway::RunningGateway;
use rpcgate::locator::{RemoteLocator, RemoteLocatorConfig, RunningLocator};
use tokio::time::Instant;

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 60 s"))
}

/// A gateway on `locator` with `config` (addresses made loopback).
async fn gateway(locator: SocketAddr, mut config: Config) -> RunningGateway {
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    config.locators = vec![locator];
    let client = RemoteLocator::new(RemoteLocatorConfig {
        endpoints: vec![locator],
        resolve_timeout: config.resolve_timeout,
        ..RemoteLocatorConfig::default()
    });
    bounded("the routing dump", client.routing_ready()).await;
    RunningGateway::start(config, Arc::new(client))
        .await
        .unwrap()
}

/// Waits until the locator resolves `name` to `count` distinct endpoints
/// over a few resolves (each app publishes after it prints its address).
async fn published(locator: &RunningLocator, name: &str, count: usize) {
    let (handle, _task) = support::connect(locator.addr, rpcgate::mux::MuxConfig::default()).await;
    bounded("the instances published", async {
        loop {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..2 * count {
                if let Ok(reply) = support::resolve(&handle, name, None).await {
                    seen.insert(reply.endpoints[0].port);
                }
            }
            if seen.len() >= count {
                return;
            }
            // Polling the locator: the apps publish on their own schedule.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_pool_and_a_kill_stalls_nothing() {
    let locator = support::start_locator(support::locator_config("")).await;
    let (mut first, first_addr) =
        support::child::demo_app("hello", None, "127.0.0.1:0", &[locator.addr]).await;
    let (_second, second_addr) =
        support::child::demo_app("hello", None, "127.0.0.1:0", &[locator.addr]).await;
    published(&locator, "hello", 2).await;
    let mut config = Config::default();
    config.pool.size = 8;
    let gateway = gateway(locator.addr, config).await;
    let pool = gateway.pools().get("hello");
    bounded(
        "8 live connections",
        pool.wait_until(|conns| conns.iter().filter(|c| c.state == "live").count() == 8),
    )
    .await;
    let mut per_endpoint: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for conn in pool.snapshot() {
        *per_endpoint.entry(conn.endpoint).or_insert(0) += 1;
    }
    assert_eq!(
        per_endpoint.get(&first_addr).copied().unwrap_or(0),
        4,
        "the pool spreads over both instances: {per_endpoint:?}"
    );
    assert_eq!(per_endpoint.get(&second_addr).copied().unwrap_or(0), 4);

    // 8 clients send requests back to back; each completion is timed.
    let clients = 8;
    let addr = gateway.addr;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut sender = support::h1(addr).await;
            let mut log = Vec::new();
            for _ in 0..500 {
                let sent = Instant::now();
                sender.ready().await.unwrap();
                let response = sender
                    .send_request(support::request("GET", "/hello/http/", &[], ""))
                    .await
                    .unwrap();
                let got = support::got(response).await;
                let now = Instant::now();
                log.push((now, now - sent, got.status));
                done.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            log
        }));
    }
    // Kill the first instance once traffic flows.
    bounded("traffic", async {
        while done.load(std::sync::atomic::Ordering::Acquire) < 400 {
            // Polling a counter the clients bump.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let mut log = Vec::new();
    for task in tasks {
        log.extend(task.await.unwrap());
    }
    log.sort_by_key(|(at, _, _)| *at);
    let failed: Vec<_> = log.iter().filter(|(_, _, s)| *s != 200).collect();
    let figures = |slowest: Duration, gap: Duration| {
        eprintln!(
            "drill: {} requests, {} failed, slowest {slowest:?}, longest gap {gap:?}",
            log.len(),
            failed.len()
        );
    };
    // What was in flight on the killed instance fails: each client's
    // request at the kill, and at most one more per client written to a
    // connection whose close the gateway had not read yet (a request that
    // reached the socket cannot be proven undelivered).
    assert!(
        failed.len() <= 2 * clients,
        "only requests in flight on the killed instance fail (at most {}): {failed:?}",
        2 * clients
    );
    let slowest = log.iter().map(|(_, took, _)| *took).max().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "no request takes a second: the slowest took {slowest:?}"
    );
    let mut previous = started;
    let mut longest_gap = Duration::ZERO;
    for (at, _, _) in &log {
        longest_gap = longest_gap.max(at.saturating_duration_since(previous));
        previous = *at;
    }
    figures(slowest, longest_gap);
    assert!(
        longest_gap < Duration::from_millis(500),
        "requests keep completing: the longest gap was {longest_gap:?}"
    );
    // The pool is whole again, on the live instance.
    bounded(
        "8 live connections on the live instance",
        pool.wait_until(|conns| {
            conns
                .iter()
                .filter(|c| c.state == "live" && c.endpoint == second_addr)
                .count()
                == 8
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_locator_down_new_services_fail_fast_and_leave_nothing() {
    // The only test in this file that reads metrics: the recorder is
    // process-wide.
    rpcgate::metrics::install_prometheus().unwrap();
    let locator = support::start_locator(support::locator_config("")).await;
    let locator_addr = locator.addr;
    let mut config = Config::default();
    config.request.timeout = Duration::from_secs(20);
    let resolve_timeout = config.resolve_timeout;
    let gateway = gateway(locator_addr, config).await;
    let admin = gateway.admin_addr.unwrap();
    locator.shutdown().await;
    for i in 0..200 {
        let path = format!("/made-up-{i}/http/");
        let sent = Instant::now();
        let got = support::send(gateway.addr, "GET", &path, &[], "").await;
        let took = sent.elapsed();
        assert_eq!(got.status, 503, "{path}");
        let body = got.json();
        assert_eq!(body["error"]["kind"], "locator_unavailable", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("locator is unreachable"),
            "{body}"
        );
        assert!(
            took < resolve_timeout,
            "{path} failed in {took:?}, not within the resolve timeout {resolve_timeout:?}"
        );
    }
    // No pool, task or metric series per made-up name.
    bounded(
        "no pools left",
        gateway
            .pools()
            .wait_until(|all| all.iter().all(|p| !p.service().starts_with("made-up"))),
    )
    .await;
    let (_, pools) = support::http(admin, "GET", "/pools", "").await;
    assert!(!pools.contains("made-up"), "{pools}");
    let text = rpcgate::metrics::render().unwrap();
    assert!(
        text.contains("rpcgate_errors_total{kind=\"locator_unavailable\""),
        "the refusals are counted: {text}"
    );
    assert!(
        !text.contains("made-up"),
        "no series per made-up name: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_publishes_again_soon_after_its_locator_returns() {
    let locator = support::start_locator(support::locator_config("")).await;
    let addr = locator.addr;
    let app = rpcgate::app::demo::build("hello", None)
        .unwrap()
        .bind("127.0.0.1:0".parse().unwrap(), vec![addr])
        .await
        .unwrap();
    bounded("published", app.published()).await;
    locator.shutdown().await;
    // The app notices the lost connection.
    bounded("the app unpublished", async {
        while app.is_published() {
            // Polling the app's published flag.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Down for a while: its retries back off, but never past the cap.
    // Long enough that an uncapped doubling backoff (1, 2, 4, 8 s...) would
    // next try 15 s after the locator returns.
    let down_for = Duration::from_secs(16);
    tokio::time::sleep(down_for).await;
    let mut config = support::locator_config("");
    config.listen = addr;
    let again = RunningLocator::start(config, None).await.unwrap();
    let back = Instant::now();
    bounded("published again", app.published()).await;
    let took = back.elapsed();
    // One backoff pause at most, plus the publish itself (bounded by its
    // own timeout).
    let bound = rpcgate::app::PUBLISH_BACKOFF_MAX + Duration::from_secs(3);
    assert!(
        took <= bound,
        "published again {took:?} after the locator returned (at most {bound:?})"
    );
    again.shutdown().await;
    app.stop().await;
}
