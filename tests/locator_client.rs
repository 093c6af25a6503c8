//! The remote locator client: endpoints tried in order, timeouts, the
//! resolve cache and single-flight, client-side group picks, and the
//! `routing` subscription resuming after the locator restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpcgate::locator::{
    Locator, LocatorConfig, RemoteLocator, RemoteLocatorConfig, RunningLocator, publish,
};
use rpcgate::proto::locator::{Endpoint, ResolveReply};
use rpcgate::proto::{Graph, Message};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

fn endpoint(port: u16) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

/// A port with nothing listening on it.
async fn dead_port() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Waits for the first routing dump, bounded so a bug fails instead of hanging.
async fn ready(remote: &RemoteLocator) {
    tokio::time::timeout(Duration::from_secs(10), remote.routing_ready())
        .await
        .expect("a routing dump within 10 s");
}

fn client(endpoints: Vec<std::net::SocketAddr>, follow_routing: bool) -> RemoteLocator {
    RemoteLocator::new(RemoteLocatorConfig {
        endpoints,
        connect_timeout: Duration::from_secs(2),
        resolve_timeout: Duration::from_secs(5),
        cache_ttl: Duration::from_secs(60),
        follow_routing,
    })
}

#[tokio::test]
async fn endpoints_are_tried_in_order() {
    let locator = support::start_locator(support::locator_config(
        "[services.echo]\nendpoints = [\"127.0.0.1:41234\"]\n",
    ))
    .await;
    let remote = client(vec![dead_port().await, locator.addr], false);
    let resolved = remote.resolve("echo").await.unwrap();
    assert_eq!(resolved.endpoints, ["127.0.0.1:41234".parse().unwrap()]);
    assert_eq!(resolved.service, "echo");
    assert!(remote.resolve("missing").await.unwrap_err().is_not_found());
    let none = client(vec![dead_port().await], false);
    assert!(
        !none.resolve("echo").await.unwrap_err().is_not_found(),
        "unavailable, not unknown"
    );
}

#[tokio::test]
async fn a_silent_locator_times_out() {
    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let remote = RemoteLocator::new(RemoteLocatorConfig {
        endpoints: vec![addr],
        resolve_timeout: Duration::from_millis(300),
        follow_routing: false,
        ..RemoteLocatorConfig::default()
    });
    let error = remote.resolve("echo").await.unwrap_err();
    assert!(error.to_string().contains("longer than"), "{error}");
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_resolves_of_one_name_make_one_request() {
    // A scripted locator that counts resolve requests.
    let peer = support::Peer::bind().await;
    let addr = peer.addr;
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    tokio::spawn(async move {
        let mut conn = peer.accept().await;
        while let Some(frame) = conn.next_frame().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let reply = ResolveReply {
                endpoints: vec![endpoint(5555)],
                version: 1,
                graph: Graph::app(),
            };
            conn.send(frame.channel, Message::new(0, reply.to_args()))
                .await;
        }
    });
    let remote = client(vec![addr], false);
    // On a current-thread runtime the 50 tasks all join the flight before
    // the first request can complete.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.resolve("svc").await.unwrap().endpoints[0].port() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 5555);
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "one request for 50 resolves"
    );
}

#[tokio::test]
async fn results_are_cached_for_the_ttl() {
    let locator = support::start_locator(LocatorConfig::default()).await;
    let tracker = TaskTracker::new();
    let publication = publish(
        &[locator.addr],
        "svc",
        vec![endpoint(6001)],
        Duration::from_secs(5),
        &tracker,
    )
    .await
    .unwrap();
    let cached = client(vec![locator.addr], true);
    let uncached = RemoteLocator::new(RemoteLocatorConfig {
        endpoints: vec![locator.addr],
        cache_ttl: Duration::ZERO,
        ..RemoteLocatorConfig::default()
    });
    ready(&cached).await;
    ready(&uncached).await;
    assert_eq!(
        cached.resolve("svc").await.unwrap().endpoints[0].port(),
        6001
    );
    assert_eq!(
        uncached.resolve("svc").await.unwrap().endpoints[0].port(),
        6001
    );

    let registry = Arc::clone(locator.registry());
    let mut changes = registry.watch_services();
    publication.unpublish().await;
    changes
        .wait_for(|_| !registry.has_service("svc"))
        .await
        .unwrap();
    assert_eq!(
        cached.resolve("svc").await.unwrap().endpoints[0].port(),
        6001,
        "served from the cache within the TTL"
    );
    assert!(uncached.resolve("svc").await.unwrap_err().is_not_found());
}

const GROUP: &str = "[groups.myapp]\napp_v1 = 1\napp_v2 = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_picked_client_side_and_the_subscription_resumes() {
    let locator = support::start_locator(support::locator_config(GROUP)).await;
    let addr = locator.addr;
    let publications = support::publish_members(addr, &[("app_v1", 1001), ("app_v2", 1002)]).await;
    let remote = client(vec![addr], true);
    ready(&remote).await;
    let mut routing = remote.routing();
    assert_eq!(routing.borrow_and_update()["myapp"].points().len(), 512);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        seen.insert(remote.resolve("myapp").await.unwrap().service);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["app_v1", "app_v2"]);

    // A weight change arrives on the live subscription.
    let admin = locator.admin_addr.unwrap();
    let (status, _) = support::http(
        admin,
        "PUT",
        "/groups/myapp",
        r#"{"app_v1": 0, "app_v2": 1}"#,
    )
    .await;
    assert_eq!(status, 200);
    routing
        .wait_for(|rings| rings["myapp"].points().iter().all(|(_, m)| m == "app_v2"))
        .await
        .unwrap();
    for _ in 0..32 {
        assert_eq!(remote.resolve("myapp").await.unwrap().service, "app_v2");
    }

    // The locator restarts on the same port with other weights: the client
    // resubscribes (after its backoff) and gets the new rings.
    drop(publications);
    locator.shutdown().await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let restarted = RunningLocator::serve(
        listener,
        None,
        support::locator_config("[groups.myapp]\napp_v1 = 1\n"),
        None,
    );
    tokio::time::timeout(
        Duration::from_secs(30),
        routing.wait_for(|rings| rings["myapp"].points().iter().all(|(_, m)| m == "app_v1")),
    )
    .await
    .expect("resubscribed within the backoff")
    .unwrap();
    remote.shutdown().await;
    restarted.shutdown().await;
}
