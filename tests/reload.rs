//! Config reload while serving. `rpcgate --config FILE` as a child process:
//! SIGHUP applies a changed route, timeout, limit and pool size while a
//! request is in flight (it completes); a broken file is refused with the
//! file and the key, and the running config stays; a changed listen
//! address is reported as needing a restart. In process: a smaller pool
//! drains its surplus, and a new connection limit applies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::config::{Config, ServiceConfig};
use support::child::{GatewayChild, bounded};
use tokio::sync::mpsc;

fn gateway_config(locator: SocketAddr, rest: &str) -> String {
    format!("listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nlocators = [\"{locator}\"]\n{rest}")
}

const BEFORE: &str = "[pool]\nsize = 2\n\
    [[routes]]\nprefix = \"/x\"\nservice = \"alpha\"\nstrip_prefix = true\n";
const AFTER: &str = "[request]\ntimeout_ms = 300\n[pool]\nsize = 3\n[limits]\nmax_headers = 5\n\
    [[routes]]\nprefix = \"/x\"\nservice = \"beta\"\nstrip_prefix = true\n";

/// Six header lines: more than `max_headers = 5`.
const SIX_HEADERS: [(&str, &str); 6] = [
    ("a", "1"),
    ("b", "2"),
    ("c", "3"),
    ("d", "4"),
    ("e", "5"),
    ("f", "6"),
];

async fn pool_size(admin: SocketAddr, service: &str) -> u64 {
    let (status, body) = support::http(admin, "GET", "/pools", "").await;
    assert_eq!(status, 200);
    let pools: serde_json::Value = serde_json::from_str(&body).unwrap();
    pools[service]["size"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_without_dropping_requests_and_refuses_a_broken_one() {
    let locator = support::start_locator(support::locator_config("")).await;
    let (alpha_tx, mut alpha_arrived) = mpsc::channel(64);
    let (beta_tx, _beta_arrived) = mpsc::channel(64);
    let mut apps = Vec::new();
    for app in [
        support::delayed("alpha", "alpha", alpha_tx),
        support::delayed("beta", "beta", beta_tx),
    ] {
        let app = app
            .bind("127.0.0.1:0".parse().unwrap(), vec![locator.addr])
            .await
            .unwrap();
        app.published().await;
        apps.push(app);
    }
    let mut gateway =
        GatewayChild::start("reload", &gateway_config(locator.addr, BEFORE), &[]).await;
    let (http, admin) = (gateway.http, gateway.admin.unwrap());

    // Before: the route goes to alpha, slow requests are fine, six headers
    // are fine, and the pool has 2 connections.
    let got = support::send(http, "GET", "/x", &[], "").await;
    assert_eq!((got.status, &got.body[..]), (200, &b"alpha"[..]));
    alpha_arrived.recv().await;
    let got = support::send(http, "GET", "/beta/http/?ms=600", &[], "").await;
    assert_eq!(got.status, 200, "600 ms is within the default timeout");
    let got = support::send(http, "GET", "/x", &SIX_HEADERS, "").await;
    assert_eq!(got.status, 200);
    alpha_arrived.recv().await;
    assert_eq!(pool_size(admin, "alpha").await, 2);

    // A request in flight across the reload.
    let in_flight =
        tokio::spawn(async move { support::send(http, "GET", "/x?ms=1500", &[], "").await });
    bounded("the request at alpha", alpha_arrived.recv()).await;

    let after = gateway_config(locator.addr, AFTER);
    assert_eq!(gateway.reload(&after).await, "config reloaded");

    let got = support::send(http, "GET", "/x", &[], "").await;
    assert_eq!(
        (got.status, &got.body[..]),
        (200, &b"beta"[..]),
        "the changed route"
    );
    let got = support::send(http, "GET", "/beta/http/?ms=600", &[], "").await;
    assert_eq!(got.status, 504, "the new 300 ms timeout");
    let got = support::send(http, "GET", "/x", &SIX_HEADERS, "").await;
    assert_eq!(got.status, 431, "the new header limit, on a new connection");
    assert_eq!(pool_size(admin, "alpha").await, 3, "the new pool size");
    let pools = admin;
    bounded("alpha's pool to grow to 3 connections", async {
        loop {
            let (_, body) = support::http(pools, "GET", "/pools", "").await;
            let pools: serde_json::Value = serde_json::from_str(&body).unwrap();
            let live = pools["alpha"]["connections"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["state"] == "live")
                .count();
            if live == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    // The request that started under the old config finished under it
    // (its 30 s timeout, not the new 300 ms).
    let got = bounded("the request in flight", in_flight).await.unwrap();
    assert_eq!((got.status, &got.body[..]), (200, &b"alpha"[..]));

    // A broken file is refused, naming the file and the key; the running
    // config stays.
    let refused = gateway.reload(&format!("{after}bogus_key = 1\n")).await;
    assert!(refused.starts_with("config refused: "), "{refused}");
    assert!(
        refused.contains(gateway.file.to_str().unwrap()),
        "names the file: {refused}"
    );
    assert!(refused.contains("bogus_key"), "names the key: {refused}");
    let got = support::send(http, "GET", "/x", &[], "").await;
    assert_eq!((got.status, &got.body[..]), (200, &b"beta"[..]));

    // A new listen address cannot apply live: reported, the rest applies,
    // and the old address keeps serving.
    let moved = after
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
        .replace("timeout_ms = 300", "timeout_ms = 30000");
    assert_eq!(
        gateway.reload(&moved).await,
        "config reloaded; needs a restart to apply: listen"
    );
    let got = support::send(http, "GET", "/beta/http/?ms=600", &[], "").await;
    assert_eq!(got.status, 200, "the timeout change applied");
    let (_, config) = support::http(admin, "GET", "/config", "").await;
    assert!(
        config.contains(r#""listen":"127.0.0.1:0""#),
        "the running listen address stays in the config: {config}"
    );

    gateway.signal("TERM");
    gateway.exits_cleanly().await;
}

fn config_with_pool(size: usize) -> Config {
    let mut config = Config::default();
    config.services.insert(
        "hello".to_owned(),
        ServiceConfig {
            pool_size: Some(size),
            ..Default::default()
        },
    );
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_pool_drains_its_surplus_and_a_new_service_connects() {
    let c = support::cluster(
        "",
        vec![
            demo::build("hello", None).unwrap(),
            demo::build("echo", None).unwrap(),
        ],
        config_with_pool(4),
    )
    .await;
    let pool = c.gateway.pools().get("hello");
    bounded("4 connections", pool.wait_until(|c| c.len() == 4)).await;

    // The running config with other pool sizes (its addresses are fixed).
    let mut smaller = (*c.gateway.config()).clone();
    smaller.services = config_with_pool(2).services;
    smaller.services.insert(
        "echo".to_owned(),
        ServiceConfig {
            pool_size: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(c.gateway.reload(smaller).unwrap(), Vec::<&str>::new());
    bounded(
        "the surplus to drain and close",
        pool.wait_until(|c| c.len() == 2 && c.iter().all(|c| c.state == "live")),
    )
    .await;
    // A service configured by the reload connects at once, unasked.
    let echo = c.gateway.pools().get("echo");
    bounded("echo's connection", echo.wait_until(|c| c.len() == 1)).await;
    let got = support::send(c.gateway.addr, "GET", "/hello/http/", &[], "").await;
    assert_eq!(got.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_connection_limit_applies_to_accepting() {
    let c = support::cluster(
        "",
        vec![demo::build("hello", None).unwrap()],
        Config::default(),
    )
    .await;
    let addr = c.gateway.addr;
    let mut lower = (*c.gateway.config()).clone();
    lower.limits.max_connections = 1;
    // Never parked here, so never closed to make room (see
    // `tests/connection_limits.rs`).
    lower.limits.idle_release = Duration::from_secs(30);
    c.gateway.reload(lower.clone()).unwrap();
    let mut first = support::h1(addr).await;
    let response = first
        .send_request(support::request("GET", "/hello/http/", &[], ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A second connects (the kernel's backlog) but is not served...
    let mut second =
        tokio::spawn(async move { support::send(addr, "GET", "/hello/http/", &[], "").await });
    if let Ok(done) = tokio::time::timeout(Duration::from_millis(500), &mut second).await {
        panic!("served past the reloaded limit: {}", done.unwrap().status);
    }
    // ...until the limit is raised again.
    lower.limits.max_connections = 2;
    c.gateway.reload(lower).unwrap();
    let got = bounded("the second connection to be served", second)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_reports_ready_reloading_and_stopping() {
    let dir = std::env::temp_dir().join(format!("rpcgate-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    let next = async || {
        let mut buf = [0u8; 256];
        let n = bounded("a notification", socket.recv(&mut buf))
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let locator = support::start_locator(support::locator_config("")).await;
    let config = gateway_config(locator.addr, "");
    let mut gateway = GatewayChild::start_with_env(
        "notify",
        &config,
        &[],
        &[("NOTIFY_SOCKET", path.as_os_str())],
    )
    .await;
    assert_eq!(next().await, "READY=1");
    assert_eq!(gateway.reload(&config).await, "config reloaded");
    assert_eq!(next().await, "RELOADING=1");
    assert_eq!(next().await, "READY=1");
    gateway.signal("TERM");
    assert_eq!(next().await, "STOPPING=1");
    gateway.exits_cleanly().await;
}
