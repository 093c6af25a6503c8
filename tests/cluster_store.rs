//! Locators sharing services and routing groups through a real etcd
//! (started on 127.0.0.1 by `support::etcd`; the tests fail if the `etcd`
//! binary is missing): publishes are seen by every locator and leave with
//! their session or their locator; weights set on one locator reach the
//! `routing` subscribers of another; `cluster` lists the others; without
//! etcd the last view is served and publishes made meanwhile are applied
//! when it returns.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rpcgate::locator::{Continuum, RunningLocator};
use rpcgate::mux::{Invocation, MuxConfig, MuxHandle};
use rpcgate::proto::locator::{ClusterReply, method};
use rpcgate::proto::{Args, ErrorCode, Message, PrimitiveEvent, Protocol};
use support::child::bounded;
use support::etcd::Etcd;
use tokio::time::Instant;

/// A locator in this process, in the cluster on `etcd`.
async fn locator(etcd: &Etcd, extra: &str) -> RunningLocator {
    let toml = format!(
        "{extra}\n[cluster]\netcd = [\"{}\"]\nprefix = \"/test\"\nlease_ttl_ms = 2000\n",
        etcd.url
    );
    support::start_locator(support::locator_config(&toml)).await
}

/// Waits until `locator`'s registry says `present` for `name`.
async fn until_service(locator: &RunningLocator, name: &str, present: bool) {
    let registry = Arc::clone(locator.registry());
    let mut changes = registry.watch_services();
    bounded(&format!("`{name}` present={present}"), async {
        changes
            .wait_for(|_| registry.has_service(name) == present)
            .await
            .unwrap();
    })
    .await;
}

/// Waits until `locator`'s session with the store is up (`true`) or down.
async fn until_connected(locator: &RunningLocator, connected: bool) {
    let mut status = locator.cluster().unwrap().watch_status();
    bounded(&format!("store connected={connected}"), async {
        status.wait_for(|s| s.connected == connected).await.unwrap();
    })
    .await;
}

async fn cluster_nodes(handle: &MuxHandle) -> ClusterReply {
    let invocation = Invocation::new(
        Message::new(method::CLUSTER, Args::Empty),
        Protocol::Terminal,
        Protocol::Primitive,
    );
    let mut channel = handle.open(invocation).await.unwrap();
    let frame = channel.receiver.recv().await.unwrap().unwrap();
    match frame.primitive_event().unwrap() {
        PrimitiveEvent::Value(args) => ClusterReply::decode_args(&args).unwrap(),
        PrimitiveEvent::Error(e) => panic!("cluster failed: {e}"),
    }
}

#[tokio::test]
async fn publishes_reach_every_locator_and_leave_with_their_session() {
    let etcd = Etcd::start("publish").await;
    let a = locator(&etcd, "uuid = \"locator-a\"").await;
    let b = locator(&etcd, "uuid = \"locator-b\"").await;
    until_connected(&a, true).await;
    until_connected(&b, true).await;

    let publications = support::publish_members(a.addr, &[("svc", 7001)]).await;
    until_service(&b, "svc", true).await;
    let (handle, _conn) = support::connect(b.addr, MuxConfig::default()).await;
    let reply = support::resolve(&handle, "svc", None).await.unwrap();
    assert_eq!(reply.endpoints[0].port, 7001);
    assert_eq!(reply.version, 1);
    assert_eq!(reply.graph, rpcgate::proto::Graph::app());

    // A second instance through B: both locators hand out both in turn.
    let more = support::publish_members(b.addr, &[("svc", 7002)]).await;
    let registry = Arc::clone(a.registry());
    let mut changes = registry.watch_services();
    bounded("A sees two instances", async {
        changes
            .wait_for(|_| registry.services().get("svc").map(Vec::len) == Some(2))
            .await
            .unwrap();
    })
    .await;
    let mut ports: Vec<u16> = Vec::new();
    for _ in 0..4 {
        ports.push(
            support::resolve(&handle, "svc", None)
                .await
                .unwrap()
                .endpoints[0]
                .port,
        );
    }
    ports.sort_unstable();
    assert_eq!(ports, [7001, 7001, 7002, 7002]);

    // `cluster` answers with the other locators.
    let nodes = cluster_nodes(&handle).await;
    assert_eq!(nodes.nodes.keys().collect::<Vec<_>>(), ["locator-a"]);
    assert_eq!(nodes.nodes["locator-a"].port, a.addr.port());

    // The publisher's session ends: its key goes at once, not at the TTL.
    let started = Instant::now();
    for publication in publications.into_iter().chain(more) {
        publication.unpublish().await;
    }
    until_service(&b, "svc", false).await;
    let took = started.elapsed();
    println!("unpublish on A → gone from B: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        support::resolve(&handle, "svc", None)
            .await
            .unwrap_err()
            .code,
        ErrorCode::SERVICE_NOT_AVAILABLE
    );

    // A locator that shuts down revokes its lease: it leaves `cluster`.
    a.shutdown().await;
    let mut status = b.cluster().unwrap().watch_status();
    bounded("A leaves B's peers", async {
        while !b.registry().peers().is_empty() {
            status.changed().await.unwrap();
        }
    })
    .await;
    assert!(cluster_nodes(&handle).await.nodes.is_empty());
    b.shutdown().await;
}

#[tokio::test]
async fn instances_leave_when_their_locator_dies() {
    let etcd = Etcd::start("dies").await;
    let b = locator(&etcd, "").await;
    let (mut a, a_addr, _) = support::etcd::locator_process(&etcd, "dies", "").await;
    let _publications = support::publish_members(a_addr, &[("svc", 7001)]).await;
    until_service(&b, "svc", true).await;
    bounded("A in B's peers", async {
        let mut status = b.cluster().unwrap().watch_status();
        while b.registry().peers().is_empty() {
            status.changed().await.unwrap();
        }
    })
    .await;

    // kill -9: no revoke, the lease (2 s) ends the keys.
    a.kill().await.unwrap();
    let started = Instant::now();
    until_service(&b, "svc", false).await;
    let took = started.elapsed();
    println!("locator killed → its instance gone from B: {took:?} (lease TTL 2 s)");
    assert!(
        took >= Duration::from_millis(500),
        "{took:?}: before the lease ended?"
    );
    assert!(b.registry().peers().is_empty());
    b.shutdown().await;
}

fn weights(v1: u32, v2: u32) -> BTreeMap<String, u32> {
    [("app_v1".to_owned(), v1), ("app_v2".to_owned(), v2)].into()
}

#[tokio::test]
async fn weights_set_on_one_locator_reach_routing_subscribers_of_another() {
    let etcd = Etcd::start("weights").await;
    // A's file has a group: written to the store on start.
    let a = locator(&etcd, "[groups.canary]\napp_v1 = 3\napp_v2 = 1").await;
    let b = locator(&etcd, "").await;
    until_connected(&a, true).await;
    until_connected(&b, true).await;
    let (handle, _conn) = support::connect(b.addr, MuxConfig::default()).await;
    let mut routing = support::subscribe(&handle, "gateway-1").await;
    let expected = Continuum::new(&weights(3, 1)).unwrap().points().to_vec();
    bounded("the file's group on B", async {
        while support::next_dump(&mut routing).await.groups.get("canary") != Some(&expected) {}
    })
    .await;

    let admin = a.admin_addr.unwrap();
    let mut times = Vec::new();
    for i in 1..=20u32 {
        let w = weights(i, 21 - i);
        let body = serde_json::to_string(&w).unwrap();
        let expected = Continuum::new(&w).unwrap().points().to_vec();
        let started = Instant::now();
        let (status, text) = support::http(admin, "PUT", "/groups/canary", &body).await;
        assert_eq!(status, 200, "{text}");
        bounded("the new weights on B's subscriber", async {
            while support::next_dump(&mut routing).await.groups.get("canary") != Some(&expected) {}
        })
        .await;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    println!(
        "weight change on A → B's routing subscriber, 20 changes: median {:?}, worst {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(times[times.len() - 1] < Duration::from_secs(1), "{times:?}");
    assert_eq!(b.registry().groups()["canary"], weights(20, 1));

    // A seeded resolve on B follows the store's ring.
    let _p = support::publish_members(a.addr, &[("app_v1", 7001), ("app_v2", 7002)]).await;
    until_service(&b, "app_v2", true).await;
    until_service(&b, "app_v1", true).await;
    let ring = Continuum::new(&weights(20, 1)).unwrap();
    let member = ring.lookup_seed(b"user-42").unwrap().to_owned();
    let port = support::resolve(&handle, "canary", Some("user-42"))
        .await
        .unwrap()
        .endpoints[0]
        .port;
    assert_eq!(port, if member == "app_v1" { 7001 } else { 7002 });

    // Invalid weights are refused before the store; DELETE removes it
    // everywhere.
    let (status, _) = support::http(admin, "PUT", "/groups/canary", "{\"app_v1\": 0}").await;
    assert_eq!(status, 400);
    let (status, text) = support::http(admin, "DELETE", "/groups/canary", "").await;
    assert_eq!(status, 200, "{text}");
    bounded("the group gone on B", async {
        while support::next_dump(&mut routing)
            .await
            .groups
            .contains_key("canary")
        {}
    })
    .await;
    let (status, _) = support::http(admin, "DELETE", "/groups/canary", "").await;
    assert_eq!(status, 404);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn without_etcd_the_last_view_is_served_and_publishes_catch_up() {
    let mut etcd = Etcd::start("down").await;
    let a = locator(&etcd, "").await;
    let b = locator(&etcd, "[groups.canary]\napp_v1 = 1\napp_v2 = 1").await;
    let _first = support::publish_members(a.addr, &[("first", 7001)]).await;
    until_service(&b, "first", true).await;
    until_connected(&a, true).await;
    bounded("the group on A", async {
        let mut dump = a.registry().watch_dump();
        dump.wait_for(|d| d.groups.contains_key("canary"))
            .await
            .unwrap();
    })
    .await;

    etcd.kill().await;
    until_connected(&a, false).await;
    until_connected(&b, false).await;
    // B still resolves what A published, and A still has the group.
    let (handle, _conn) = support::connect(b.addr, MuxConfig::default()).await;
    assert_eq!(
        support::resolve(&handle, "first", None)
            .await
            .unwrap()
            .endpoints[0]
            .port,
        7001
    );
    assert!(a.registry().groups().contains_key("canary"));
    let (status, ready) = support::http(b.admin_addr.unwrap(), "GET", "/ready", "").await;
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["cluster"]["connected"], false, "{ready}");
    assert!(ready["cluster"]["error"].is_string(), "{ready}");
    // The admin API cannot write weights without the store.
    let (status, _) = support::http(
        a.admin_addr.unwrap(),
        "PUT",
        "/groups/canary",
        "{\"app_v1\": 1}",
    )
    .await;
    assert_eq!(status, 503);

    // A publish while etcd is down: served by A at once, by B when etcd
    // is back.
    let _second = support::publish_members(a.addr, &[("second", 7002)]).await;
    assert!(a.registry().has_service("second"));
    etcd.restart().await;
    let started = Instant::now();
    until_service(&b, "second", true).await;
    println!(
        "etcd back → the publish made meanwhile on B: {:?}",
        started.elapsed()
    );
    until_connected(&a, true).await;
    until_connected(&b, true).await;
    assert!(b.registry().has_service("first"));
    let (_, ready) = support::http(b.admin_addr.unwrap(), "GET", "/ready", "").await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["cluster"]["connected"], true, "{ready}");
    assert!(
        ready["cluster"]["failures"].as_u64().unwrap() >= 1,
        "{ready}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_gateways_routing_subscription_moves_to_the_next_locator_keeping_its_weights() {
    use rpcgate::locator::{Locator, RemoteLocator, RemoteLocatorConfig};
    let etcd = Etcd::start("moves").await;
    let a = locator(&etcd, "[groups.canary]\napp_v1 = 3\napp_v2 = 1").await;
    let b = locator(&etcd, "").await;
    until_connected(&b, true).await;
    bounded("the group on B", async {
        let mut dump = b.registry().watch_dump();
        dump.wait_for(|d| d.groups.contains_key("canary"))
            .await
            .unwrap();
    })
    .await;
    // What a gateway runs: a client of the locators in order.
    let client = RemoteLocator::new(RemoteLocatorConfig {
        endpoints: vec![a.addr, b.addr],
        ..RemoteLocatorConfig::default()
    });
    bounded("the first dump", client.routing_ready()).await;
    let mut rings = client.routing();
    let ring = |w: BTreeMap<String, u32>| Continuum::new(&w).unwrap().points().to_vec();
    assert_eq!(
        rings.borrow_and_update()["canary"].points(),
        ring(weights(3, 1))
    );

    // A stops: the client keeps its rings and subscribes to B.
    a.shutdown().await;
    assert_eq!(rings.borrow()["canary"].points(), ring(weights(3, 1)));
    let admin = b.admin_addr.unwrap();
    let started = Instant::now();
    let (status, text) = support::http(
        admin,
        "PUT",
        "/groups/canary",
        "{\"app_v1\": 1, \"app_v2\": 1}",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let expected = ring(weights(1, 1));
    bounded("the new weights through B", async {
        rings
            .wait_for(|r| r.get("canary").map(|c| c.points()) == Some(&expected[..]))
            .await
            .unwrap();
    })
    .await;
    println!(
        "locator A stopped; a weight change through B reached the client in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    client.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_reload_writes_the_files_groups_to_the_store() {
    let etcd = Etcd::start("reload").await;
    let dir = std::env::temp_dir().join(format!("rpcgate-cluster-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("locator.toml");
    let text = |v1: u32| {
        format!(
            "listen = \"127.0.0.1:0\"\n[groups.canary]\napp_v1 = {v1}\napp_v2 = 1\n[cluster]\netcd = [\"{}\"]\nprefix = \"/test\"\n",
            etcd.url
        )
    };
    std::fs::write(&file, text(3)).unwrap();
    let config = rpcgate::locator::LocatorConfig::load(&file).unwrap();
    let a = RunningLocator::start(config, Some(file.clone()))
        .await
        .unwrap();
    let b = locator(&etcd, "").await;
    let until_b_has = |w: BTreeMap<String, u32>| {
        let registry = Arc::clone(b.registry());
        async move {
            let mut dump = registry.watch_dump();
            bounded("the file's weights on B", async {
                dump.wait_for(|_| registry.groups().get("canary") == Some(&w))
                    .await
                    .unwrap();
            })
            .await;
        }
    };
    until_b_has(weights(3, 1)).await;

    // A weight change through the admin API, then the file again (what
    // SIGHUP does): the file wins at that moment.
    let (status, _) = support::http(
        b.admin_addr.unwrap(),
        "PUT",
        "/groups/canary",
        "{\"app_v1\": 1, \"app_v2\": 1}",
    )
    .await;
    assert_eq!(status, 200);
    until_b_has(weights(1, 1)).await;
    std::fs::write(&file, text(5)).unwrap();
    a.reload().unwrap();
    until_b_has(weights(5, 1)).await;
    a.shutdown().await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
