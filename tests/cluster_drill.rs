//! The multi-host drill on one machine: one real etcd, three locators (A a
//! child process, B and C in this process), two app versions with two
//! instances each, two gateways listing the locators in different orders.
//! Weights changed through A shift both gateways; A killed (`kill -9`)
//! under load fails no request; etcd stopped under load fails none, and
//! once it is back every view converges; an app instance killed with
//! `kill -9` leaves every locator's view. Prints the figures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::config::Config;
use rpcgate::gateway::RunningGateway;
use rpcgate::locator::{Continuum, Locator, RemoteLocator, RunningLocator};
use rpcgate::pool::Pools;
use support::child::bounded;
use support::etcd::Etcd;
use tokio::process::Child;
use tokio::time::Instant;

async fn locator(etcd: &Etcd) -> RunningLocator {
    let toml = format!(
        "[cluster]\netcd = [\"{}\"]\nprefix = \"/test\"\nlease_ttl_ms = 2000\n",
        etcd.url
    );
    support::start_locator(support::locator_config(&toml)).await
}

async fn gateway(locators: Vec<SocketAddr>) -> (RunningGateway, RemoteLocator) {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        locators,
        ..Config::default()
    };
    let (gateway, remote) = RunningGateway::start_remote(config).await.unwrap();
    bounded("the gateway's first routing dump", remote.routing_ready()).await;
    (gateway, remote)
}

/// A demo echo app as a child process, publishing through `locators`.
async fn app_process(version: &str, locators: &[SocketAddr]) -> Child {
    let (child, _) = support::child::demo_app("echo", Some(version), "127.0.0.1:0", locators).await;
    child
}

fn weights(v1: u32, v2: u32) -> BTreeMap<String, u32> {
    [("echo-v1".to_owned(), v1), ("echo-v2".to_owned(), v2)].into()
}

/// Sets the group's weights through the admin API at `admin`.
async fn put_weights(admin: SocketAddr, w: &BTreeMap<String, u32>) {
    let body = serde_json::to_string(w).unwrap();
    let (status, text) = support::http(admin, "PUT", "/groups/canary", &body).await;
    assert_eq!(status, 200, "{text}");
}

/// Waits until every gateway's locator client holds the ring of `w`.
async fn gateways_have(remotes: &[&RemoteLocator], w: &BTreeMap<String, u32>) {
    let expected = Continuum::new(w).unwrap().points().to_vec();
    for remote in remotes {
        let mut rings = remote.routing();
        bounded("the weights on a gateway", async {
            rings
                .wait_for(|r| r.get("canary").map(|c| c.points()) == Some(&expected[..]))
                .await
                .unwrap();
        })
        .await;
    }
}

/// Waits until both members of `canary` take traffic on a gateway.
async fn members_active(pools: &Arc<Pools>) {
    for member in ["echo-v1", "echo-v2"] {
        let pool = pools.get(member);
        bounded(
            "a live connection",
            pool.wait_until(|conns| conns.iter().any(|c| c.state == "live")),
        )
        .await;
    }
    bounded(
        "the members active",
        pools.wait_until_groups(|groups| {
            groups.iter().any(|g| {
                let view = g.view();
                g.name() == "canary" && view.len() == 2 && view.iter().all(|m| m.state == "active")
            })
        }),
    )
    .await;
}

/// Requests answered per version, and the statuses of failed ones.
#[derive(Debug, Default)]
struct Tally {
    versions: BTreeMap<String, usize>,
    failed: Vec<u16>,
}

impl Tally {
    fn share(&self, version: &str) -> f64 {
        let total: usize = self.versions.values().sum();
        *self.versions.get(version).unwrap_or(&0) as f64 / total.max(1) as f64
    }
}

/// `clients` keep-alive clients per gateway send `/canary/http/` until
/// `stop` is set (or `count` requests each, if given).
async fn load(
    gateways: &[SocketAddr],
    clients: usize,
    count: Option<usize>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tasks = Vec::new();
    for addr in gateways {
        for _ in 0..clients {
            let addr = *addr;
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let mut sender = support::h1(addr).await;
                let mut tally = Tally::default();
                let mut sent = 0;
                while !stop.load(Ordering::Acquire) && count.is_none_or(|c| sent < c) {
                    sent += 1;
                    sender.ready().await.unwrap();
                    let response = sender
                        .send_request(support::request("GET", "/canary/http/", &[], ""))
                        .await
                        .unwrap();
                    let got = support::got(response).await;
                    if got.status == 200 {
                        let version = got.header("x-app-version").unwrap_or("-").to_owned();
                        *tally.versions.entry(version).or_insert(0) += 1;
                    } else {
                        tally.failed.push(got.status);
                    }
                }
                tally
            }));
        }
    }
    let mut tally = Tally::default();
    for task in tasks {
        let one = task.await.unwrap();
        for (v, n) in one.versions {
            *tally.versions.entry(v).or_insert(0) += n;
        }
        tally.failed.extend(one.failed);
    }
    tally
}

/// Runs load on `gateways` while `during` happens, for at least `after`
/// more once it has; what the load came to.
async fn under_load(
    gateways: &[SocketAddr],
    during: impl std::future::Future<Output = ()>,
    after: Duration,
) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn({
        let gateways = gateways.to_vec();
        let stop = Arc::clone(&stop);
        async move { load(&gateways, 2, None, stop).await }
    });
    during.await;
    tokio::time::sleep(after).await; // load keeps running: a duration, not a sync
    stop.store(true, Ordering::Release);
    running.await.unwrap()
}

/// The number of instances of `name` each locator serves.
fn instances(locators: &[&RunningLocator], name: &str) -> Vec<usize> {
    locators
        .iter()
        .map(|l| l.registry().services().get(name).map_or(0, Vec::len))
        .collect()
}

async fn until_instances(locators: &[&RunningLocator], name: &str, n: usize) {
    for locator in locators {
        let registry = Arc::clone(locator.registry());
        let mut changes = registry.watch_services();
        bounded(&format!("{n} instances of {name}"), async {
            changes
                .wait_for(|_| registry.services().get(name).map_or(0, Vec::len) == n)
                .await
                .unwrap();
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_locator_cluster_survives_its_failures() {
    let mut etcd = Etcd::start("drill").await;
    let (mut a, a_addr, a_admin) = support::etcd::locator_process(&etcd, "drill", "").await;
    let b = locator(&etcd).await;
    let c = locator(&etcd).await;
    let views = [&b, &c];

    // Two versions, two instances each: three in this process publishing
    // through A (then B), one a child process publishing through C.
    let mut apps = Vec::new();
    for version in ["v1", "v2", "v2"] {
        let app = demo::build("echo", Some(version))
            .unwrap()
            .bind("127.0.0.1:0".parse().unwrap(), vec![a_addr, b.addr])
            .await
            .unwrap();
        app.published().await;
        apps.push(app);
    }
    let mut doomed = app_process("v1", &[c.addr]).await;
    until_instances(&views, "echo-v1", 2).await;
    until_instances(&views, "echo-v2", 2).await;

    put_weights(a_admin, &weights(3, 1)).await;
    let (gw1, remote1) = gateway(vec![a_addr, b.addr, c.addr]).await;
    let (gw2, remote2) = gateway(vec![b.addr, c.addr, a_addr]).await;
    let remotes = [&remote1, &remote2];
    gateways_have(&remotes, &weights(3, 1)).await;
    members_active(gw1.pools()).await;
    members_active(gw2.pools()).await;
    let addrs = [gw1.addr, gw2.addr];

    // 1. Weights changed through A shift both gateways.
    let mut times = Vec::new();
    for i in 1..=20u32 {
        let w = weights(i, 21 - i);
        let started = Instant::now();
        put_weights(a_admin, &w).await;
        gateways_have(&remotes, &w).await;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    println!(
        "weight change through A → both gateways, 20 changes: median {:?}, worst {:?}",
        times[10], times[19]
    );
    assert!(times[19] < Duration::from_secs(1), "{times:?}");
    put_weights(a_admin, &weights(1, 3)).await;
    gateways_have(&remotes, &weights(1, 3)).await;
    let tally = load(&addrs, 2, Some(500), Arc::default()).await;
    assert!(tally.failed.is_empty(), "{tally:?}");
    let share = tally.share("v2");
    println!("after 1:3 through A, v2's share over 2,000 requests: {share:.3}");
    assert!((share - 0.75).abs() < 0.03, "{tally:?}");

    // 2. A dies under load: nothing fails; the gateway that listed it
    // first follows B, and the apps publish again through B. A's keys
    // leave every view with its lease (its locator key among them, in the
    // same revision).
    let mut gone_after = Duration::ZERO;
    let tally = under_load(
        &addrs,
        async {
            a.kill().await.unwrap();
            let killed = Instant::now();
            for view in views {
                let mut status = view.cluster().unwrap().watch_status();
                bounded("A gone from the peers", async {
                    while view.registry().peers().len() != 1 {
                        status.changed().await.unwrap();
                    }
                })
                .await;
            }
            gone_after = killed.elapsed();
        },
        Duration::from_secs(1),
    )
    .await;
    println!(
        "locator A killed under load: {} requests, {} failed; its keys gone from every view after {gone_after:?} (lease TTL 2 s)",
        tally.versions.values().sum::<usize>(),
        tally.failed.len()
    );
    assert!(tally.failed.is_empty(), "{tally:?}");
    until_instances(&views, "echo-v2", 2).await;
    until_instances(&views, "echo-v1", 2).await;
    let started = Instant::now();
    put_weights(b.admin_addr.unwrap(), &weights(3, 1)).await;
    gateways_have(&remotes, &weights(3, 1)).await;
    println!(
        "after A's death, a change through B reached both gateways in {:?}",
        started.elapsed()
    );

    // 3. etcd stops under load: nothing fails, the last view is served;
    // it comes back and every view converges.
    let mut b_status = b.cluster().unwrap().watch_status();
    let mut c_status = c.cluster().unwrap().watch_status();
    let tally = under_load(
        &addrs,
        async {
            etcd.kill().await;
            bounded("B and C see etcd gone", async {
                b_status.wait_for(|s| !s.connected).await.unwrap();
                c_status.wait_for(|s| !s.connected).await.unwrap();
            })
            .await;
        },
        Duration::from_secs(2),
    )
    .await;
    println!(
        "etcd stopped under load: {} requests, {} failed",
        tally.versions.values().sum::<usize>(),
        tally.failed.len()
    );
    assert!(tally.failed.is_empty(), "{tally:?}");
    etcd.restart().await;
    let started = Instant::now();
    bounded("B and C back on etcd", async {
        b_status.wait_for(|s| s.connected).await.unwrap();
        c_status.wait_for(|s| s.connected).await.unwrap();
    })
    .await;
    put_weights(c.admin_addr.unwrap(), &weights(1, 1)).await;
    gateways_have(&remotes, &weights(1, 1)).await;
    println!(
        "etcd restarted: connected and a change through C on both gateways in {:?}",
        started.elapsed()
    );
    for view in views {
        let mut dump = view.registry().watch_dump();
        bounded("the weights on every locator", async {
            dump.wait_for(|_| view.registry().groups()["canary"] == weights(1, 1))
                .await
                .unwrap();
        })
        .await;
    }
    assert_eq!(instances(&views, "echo-v1"), [2, 2]);
    assert_eq!(instances(&views, "echo-v2"), [2, 2]);

    // 4. An app instance killed with kill -9 leaves every view.
    doomed.kill().await.unwrap();
    let started = Instant::now();
    until_instances(&views, "echo-v1", 1).await;
    println!(
        "app instance killed → gone from every locator's view in {:?}",
        started.elapsed()
    );

    drop(apps);
    gw1.shutdown().await;
    gw2.shutdown().await;
    remote1.shutdown().await;
    remote2.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}
