//! Pools end to end: the configured size is held; connections refresh by
//! jittered lifespan, never more than the cap at once, and draining ones
//! finish their requests; a routing-group weight change shifts traffic
//! with no failed request; a dead locator does not stop live connections.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::config::{Config, ServiceConfig};

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 30 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_size_is_held_from_start() {
    let mut config = Config::default();
    config.pool.size = 4;
    config.services.insert(
        "hello".into(),
        ServiceConfig {
            pool_size: Some(6),
            ..ServiceConfig::default()
        },
    );
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    // Configured services connect at start, before any request.
    let pool = c.gateway.pools().get("hello");
    bounded(
        "6 live connections",
        pool.wait_until(|conns| conns.iter().filter(|c| c.state == "live").count() == 6),
    )
    .await;
    assert_eq!(pool.snapshot().len(), 6);
    let got = support::send(c.gateway.addr, "GET", "/hello/http/", &[], "").await;
    assert_eq!(got.status, 200);
    let (admin_status, pools) =
        support::http(c.gateway.admin_addr.unwrap(), "GET", "/pools", "").await;
    assert_eq!(admin_status, 200);
    assert!(
        pools.contains("\"hello\"") && pools.contains("\"live\""),
        "{pools}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifespan_refresh_is_jittered_capped_and_drains() {
    let mut config = Config::default();
    config.pool.size = 8;
    config.pool.lifespan = Duration::from_millis(300);
    config.pool.jitter = 0.2;
    config.pool.reconnect_share = 0.25; // at most 2 at once
    let c = support::cluster(
        "",
        vec![
            demo::build("hello", None).unwrap(),
            demo::build("slow", None).unwrap(),
        ],
        config,
    )
    .await;
    let pool = c.gateway.pools().get("hello");
    bounded("8 connections", pool.wait_until(|conns| conns.len() == 8)).await;
    let first: Vec<_> = pool.snapshot();
    let lifespans: Vec<f64> = first.iter().map(|c| c.lifespan.as_secs_f64()).collect();
    assert!(
        lifespans.iter().all(|l| (0.24..=0.36).contains(l)),
        "±20% of 300 ms: {lifespans:?}"
    );
    let distinct: std::collections::BTreeSet<_> =
        lifespans.iter().map(|l| (l * 1e6) as u64).collect();
    assert!(distinct.len() > 1, "jittered, not all equal: {lifespans:?}");

    // A request longer than a lifespan, on a connection that is replaced
    // under it: it still completes.
    let slow = support::send(c.gateway.addr, "GET", "/slow/http/?delay_ms=700", &[], "").await;
    assert_eq!(
        slow.status, 200,
        "a draining connection finishes its request"
    );

    // Every first-generation connection gets replaced.
    bounded(
        "a full refresh",
        pool.wait_until(|conns| {
            conns.len() == 8 && conns.iter().all(|c| c.age < Duration::from_millis(300))
        }),
    )
    .await;
    let (now, peak) = pool.connecting();
    assert!(
        (1..=2).contains(&peak),
        "never more than the cap (2) at once: peak {peak}, now {now}"
    );
    for _ in 0..20 {
        assert_eq!(
            support::send(c.gateway.addr, "GET", "/hello/http/", &[], "")
                .await
                .status,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_shifts_traffic_with_no_failed_request() {
    let toml = "[groups.shift]\necho-v1 = 1\necho-v2 = 0\n";
    let mut config = Config::default();
    config.pool.size = 8;
    config.pool.lifespan = Duration::from_secs(3600); // only the routing change refreshes
    let apps = vec![
        demo::build("echo", Some("v1")).unwrap(),
        demo::build("echo", Some("v2")).unwrap(),
    ];
    let c = support::cluster(toml, apps, config).await;
    let addr = c.gateway.addr;
    let mut sender = support::h1(addr).await;
    let version = async |sender: &mut hyper::client::conn::http1::SendRequest<_>| {
        sender.ready().await.unwrap();
        let response = sender
            .send_request(support::request("GET", "/shift/http/", &[], ""))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "no request fails during the shift");
        let tag = response
            .headers()
            .get("x-app-version")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        // Read the body so the connection is ready for the next request.
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        tag
    };
    for _ in 0..50 {
        assert_eq!(version(&mut sender).await, "v1");
    }
    let admin = c.locator.admin_addr.unwrap();
    let (status, _) = support::http(
        admin,
        "PUT",
        "/groups/shift",
        r#"{"echo-v1": 0, "echo-v2": 1}"#,
    )
    .await;
    assert_eq!(status, 200);
    // The update reaches the gateway's locator client...
    let mut routing = rpcgate::locator::Locator::routing(&c.client);
    bounded(
        "the routing update",
        routing.wait_for(|rings| {
            rings
                .get("shift")
                .is_some_and(|r| r.points().iter().all(|(_, m)| m == "echo-v2"))
        }),
    )
    .await
    .unwrap();
    // ...and from then on, with requests flowing, traffic moves to v2.
    let mut v2 = 0;
    for _ in 0..1000 {
        if version(&mut sender).await == "v2" {
            v2 += 1;
        }
    }
    assert!(
        v2 >= 990,
        "at least 99% of requests after the change reach v2: {v2}/1000"
    );
    let pool = c.gateway.pools().get("shift");
    bounded(
        "every connection on v2",
        pool.wait_until(|conns| {
            conns
                .iter()
                .filter(|c| c.state == "live")
                .all(|c| c.member == "echo-v2")
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_connections_keep_serving_while_the_locator_is_down() {
    let mut config = Config::default();
    config.pool.size = 4;
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    assert_eq!(
        support::send(addr, "GET", "/hello/http/", &[], "")
            .await
            .status,
        200
    );
    let pool = c.gateway.pools().get("hello");
    bounded("4 connections", pool.wait_until(|conns| conns.len() == 4)).await;
    let support::Cluster {
        locator,
        apps,
        gateway,
        client,
    } = c;
    locator.shutdown().await;
    for _ in 0..100 {
        assert_eq!(
            support::send(addr, "GET", "/hello/http/", &[], "")
                .await
                .status,
            200
        );
    }
    drop((apps, gateway, client));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_keeps_failing_is_retried_with_growing_pauses() {
    // A backend that accepts and drops every connection at once: each
    // connect "succeeds", then the connection dies.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = backend.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = backend.accept().await {
            let _ = accepted_tx.send(tokio::time::Instant::now());
            drop(stream);
        }
    });
    let mut config = Config::default();
    config.pool.size = 2;
    config
        .services
        .insert("dying".into(), ServiceConfig::default());
    let c = support::cluster("", vec![], config).await;
    let _published = support::publish_members(c.locator.addr, &[("dying", port)]).await;
    // The configured pool starts connecting at once; collect six attempts.
    let mut at = Vec::new();
    while at.len() < 6 {
        at.push(
            bounded("another connect attempt", accepted.recv())
                .await
                .unwrap(),
        );
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Without backoff the maintainer would reconnect in a tight loop (gaps
    // of microseconds). With it, the pauses double from 100 ms: by the
    // sixth attempt at least three failures were counted, so the last gap
    // is at least 400 ms and the whole run at least 100+200+400 ms.
    // These are lower bounds: a slow machine only makes gaps longer.
    assert!(gaps[4] >= Duration::from_millis(400), "gaps {gaps:?}");
    assert!(at[5] - at[0] >= Duration::from_millis(700), "gaps {gaps:?}");
    // Requests meanwhile fail cleanly (no live connection before the deadline).
    let got = support::send(
        c.gateway.addr,
        "GET",
        "/dying/http/",
        &[("x-request-timeout", "200")],
        "",
    )
    .await;
    assert_eq!(got.status, 503, "{:?}", got.body);
}
