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
    // v1 left the group: its pool drained and is gone; the group is v2.
    let pools = c.gateway.pools();
    bounded(
        "v1's pool gone",
        pools.wait_until(|all| all.iter().all(|p| p.service() != "echo-v1")),
    )
    .await;
    let members: Vec<_> = pools
        .group("shift")
        .unwrap()
        .view()
        .into_iter()
        .map(|m| m.member)
        .collect();
    assert_eq!(members, ["echo-v2"]);
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
    // Requests meanwhile fail cleanly: 503 (no live connection before the
    // deadline), or 502 when the request caught a connection in the moment
    // between its connect and its reset (written, so not provably
    // undelivered, so not retried).
    let got = support::send(
        c.gateway.addr,
        "GET",
        "/dying/http/",
        &[("x-request-timeout", "200")],
        "",
    )
    .await;
    assert!(matches!(got.status, 502 | 503), "{:?}", got.body);
    let kind = got.json()["error"]["kind"].as_str().unwrap().to_owned();
    assert!(
        matches!(kind.as_str(), "bad_gateway" | "no_connection"),
        "{kind}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_made_on_demand_is_closed_and_a_configured_one_is_kept() {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;
    use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse};
    use rpcgate::proto::{ErrorCode, RemoteError};
    use tokio::sync::oneshot;

    // `held` sends its head and a first chunk, then the rest once the test
    // says so: a response streaming after the gateway has its head.
    let release: Arc<Mutex<Option<oneshot::Receiver<()>>>> = Arc::default();
    let (release_tx, release_rx) = oneshot::channel();
    *release.lock().unwrap() = Some(release_rx);
    let held =
        AppBuilder::new("held").on_http("http", move |_req: HttpRequest, mut res: HttpResponse| {
            let release = release.lock().unwrap().take();
            async move {
                let failed = |e: rpcgate::session::ReplyError| {
                    RemoteError::new(ErrorCode::UNCAUGHT_ERROR, e.to_string())
                };
                res.head(200, vec![]).await.map_err(failed)?;
                res.body("first ").await.map_err(failed)?;
                if let Some(release) = release {
                    let _ = release.await;
                }
                res.body("rest").await.map_err(failed)?;
                res.finish().await.map_err(failed)
            }
        });
    let mut config = Config::default();
    config.pool.size = 2;
    config.pool.idle_timeout = Some(Duration::from_millis(300));
    config
        .services
        .insert("echo".into(), ServiceConfig::default());
    let c = support::cluster(
        "",
        vec![
            demo::build("hello", None).unwrap(),
            demo::build("echo", None).unwrap(),
            held,
        ],
        config,
    )
    .await;
    let pools = c.gateway.pools();
    let names = |all: &[Arc<rpcgate::pool::Pool>]| -> Vec<String> {
        all.iter().map(|p| p.service().to_owned()).collect()
    };

    // A pool made by a request is closed once it served nothing for the
    // idle timeout; the configured one stays.
    let got = support::send(c.gateway.addr, "GET", "/hello/http/", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(names(&pools.all()), ["echo", "hello"]);
    bounded(
        "the idle hello pool closed",
        pools.wait_until(|all| names(all) == ["echo"]),
    )
    .await;
    let (_, listed) = support::http(c.gateway.admin_addr.unwrap(), "GET", "/pools", "").await;
    assert!(!listed.contains("\"hello\""), "{listed}");
    // The next request for the name connects afresh.
    let got = support::send(c.gateway.addr, "GET", "/hello/http/", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(names(&pools.all()), ["echo", "hello"]);

    // A pool with a response still streaming is not idle, however long it
    // takes (the request path no longer holds the pool once it has the head).
    let mut sender = support::h1(c.gateway.addr).await;
    let response = sender
        .send_request(support::request("GET", "/held/http/", &[], ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = bounded("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first ");
    let closed_while_streaming = tokio::time::timeout(
        Duration::from_millis(2500),
        pools.wait_until(|all| !names(all).contains(&"held".to_owned())),
    )
    .await;
    assert!(
        closed_while_streaming.is_err(),
        "the pool closed with a response streaming"
    );
    release_tx.send(()).unwrap();
    let rest = bounded("the rest", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "rest");
    bounded(
        "the held pool closed once idle",
        pools.wait_until(|all| !names(all).contains(&"held".to_owned())),
    )
    .await;
    assert!(
        names(&pools.all()).contains(&"echo".to_owned()),
        "configured pools are kept"
    );
}
