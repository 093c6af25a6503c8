//! The locator's routing groups over real sockets: the `routing` dump equals
//! the §3.4 test vectors, keyed and keyless resolves follow the continuum,
//! and weight changes reach live subscribers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;

use rpcgate::locator::{Continuum, Publication, RunningLocator};
use rpcgate::mux::{MuxConfig, MuxHandle};
use rpcgate::proto::StreamEvent;

const GROUP: &str = "[groups.myapp]\napp_v1 = 1\napp_v2 = 3\n";

struct Setup {
    locator: RunningLocator,
    handle: MuxHandle,
    _publications: Vec<Publication>,
}

/// A locator with group `myapp` over app_v1 (port 1001) and app_v2 (1002).
async fn setup() -> Setup {
    let locator = support::start_locator(support::locator_config(GROUP)).await;
    let publications =
        support::publish_members(locator.addr, &[("app_v1", 1001), ("app_v2", 1002)]).await;
    let (handle, _conn) = support::connect(locator.addr, MuxConfig::default()).await;
    Setup {
        locator,
        handle,
        _publications: publications,
    }
}

#[tokio::test]
async fn routing_dump_equals_the_spec_test_vectors() {
    let s = setup().await;
    let mut stream = support::subscribe(&s.handle, "router-1").await;
    let dump = support::next_dump(&mut stream).await;
    let ring = &dump.groups["myapp"];
    assert_eq!(ring.len(), 512);
    let first: Vec<_> = ring[..4].iter().map(|(p, n)| (*p, n.as_str())).collect();
    assert_eq!(
        first,
        [
            (10_939_163, "app_v2"),
            (16_345_443, "app_v2"),
            (16_578_313, "app_v2"),
            (18_838_917, "app_v1")
        ]
    );
    let last: Vec<_> = ring[510..].iter().map(|(p, n)| (*p, n.as_str())).collect();
    assert_eq!(last, [(4_286_865_993, "app_v1"), (4_288_951_102, "app_v2")]);
}

#[tokio::test]
async fn keyed_resolves_follow_the_spec_table() {
    let s = setup().await;
    for (seed, port) in [("user-42", 1001), ("alice", 1001), ("bob", 1002)] {
        let reply = support::resolve(&s.handle, "myapp", Some(seed))
            .await
            .unwrap();
        assert_eq!(reply.endpoints[0].port, port, "seed {seed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_resolves_match_ring_shares() {
    const RESOLVES: usize = 100_000;
    const TASKS: usize = 64;
    let s = setup().await;
    let weights: BTreeMap<String, u32> =
        [("app_v1".to_owned(), 1), ("app_v2".to_owned(), 3)].into();
    let shares = Continuum::new(&weights).unwrap().shares();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let handle = s.handle.clone();
        tasks.push(tokio::spawn(async move {
            let mut v1 = 0usize;
            for _ in 0..RESOLVES / TASKS {
                let reply = support::resolve(&handle, "myapp", None).await.unwrap();
                if reply.endpoints[0].port == 1001 {
                    v1 += 1;
                }
            }
            v1
        }));
    }
    let mut v1 = 0;
    for task in tasks {
        v1 += task.await.unwrap();
    }
    let total = (RESOLVES / TASKS) * TASKS;
    let observed = v1 as f64 / total as f64;
    // "Within 1%" read as one percentage point: with 100k samples the
    // standard deviation of a 0.218 share is 0.0013, so this is a 7σ bound
    // that still catches a ring built or looked up wrongly (0.25 vs 0.218).
    assert!(
        (observed - shares["app_v1"]).abs() < 0.01,
        "app_v1 got {observed:.4} of resolves; its ring share is {:.4}",
        shares["app_v1"]
    );
}

#[tokio::test]
async fn an_admin_weight_change_reaches_a_live_subscriber() {
    let s = setup().await;
    let admin = s.locator.admin_addr.unwrap();
    let mut stream = support::subscribe(&s.handle, "router-1").await;
    let before = support::next_dump(&mut stream).await;
    assert_eq!(before.groups["myapp"].len(), 512);

    // A refused change keeps the running weights and pushes nothing.
    let (status, body) = support::http(admin, "PUT", "/groups/myapp", r#"{"app_v1": 0}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (_, groups) = support::http(admin, "GET", "/groups", "").await;
    assert!(groups.contains("\"app_v2\":3"), "{groups}");

    let (status, body) = support::http(
        admin,
        "PUT",
        "/groups/myapp",
        r#"{"app_v1": 0, "app_v2": 1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let after = support::next_dump(&mut stream).await;
    let ring = &after.groups["myapp"];
    assert_eq!(ring.len(), 512);
    assert!(ring.iter().all(|(_, member)| member == "app_v2"));
    for _ in 0..50 {
        let reply = support::resolve(&s.handle, "myapp", None).await.unwrap();
        assert_eq!(reply.endpoints[0].port, 1002);
    }
}

#[tokio::test]
async fn resubscribing_replaces_the_stream_and_discard_ends_it() {
    let s = setup().await;
    let mut first = support::subscribe(&s.handle, "same-id").await;
    support::next_dump(&mut first).await;
    let second = support::subscribe(&s.handle, "same-id").await;
    let (second_tx, mut second_rx) = second.split();
    assert_eq!(
        support::next_routing_event(&mut first).await,
        Some(StreamEvent::Close),
        "the old stream is closed"
    );
    // The new one is live: a change reaches it.
    let frame = second_rx.recv().await.unwrap().unwrap();
    assert_eq!(frame.ty, 0);
    let admin = s.locator.admin_addr.unwrap();
    let (status, _) = support::http(admin, "PUT", "/groups/other", r#"{"x": 1}"#).await;
    assert_eq!(status, 200);
    let frame = second_rx.recv().await.unwrap().unwrap();
    let update = rpcgate::proto::locator::RoutingUpdate::decode_args(&frame.args).unwrap();
    assert!(update.groups.contains_key("other"));
    assert_eq!(s.locator.registry().subscriber_count(), 1);

    drop(second_tx); // sends `discard`
    let frame = second_rx.recv().await.unwrap().unwrap();
    assert_eq!(frame.stream_event().unwrap(), StreamEvent::Close);
    assert_eq!(s.locator.registry().subscriber_count(), 0);
}
