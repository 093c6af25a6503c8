//! Routing groups end to end, with a real locator and real apps: each
//! member's share of requests is its weight within a percentage point over
//! 10,000 requests (3:1 and 19:1); a weight change under load fails nothing
//! and applies at once; sticky keys land where the locator's seeded resolve
//! says; slow start ramps a newcomer; a killed member is ejected and later
//! returns.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpcgate::app::demo;
use rpcgate::config::Config;
use rpcgate::pool::Pools;
use support::groups::{members_active, wait_connected};

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 60 s"))
}

/// What a batch of requests came to: answers per `X-App-Version`, and the
/// statuses of the others.
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

    fn add(&mut self, other: Self) {
        for (v, n) in other.versions {
            *self.versions.entry(v).or_insert(0) += n;
        }
        self.failed.extend(other.failed);
    }
}

/// Answers received so far by a [`load_counted`] run.
#[derive(Debug, Default)]
struct Progress {
    done: std::sync::atomic::AtomicUsize,
    answered: tokio::sync::Notify,
}

impl Progress {
    async fn at_least(&self, n: usize) {
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if self.done.load(std::sync::atomic::Ordering::Acquire) >= n {
                return;
            }
            answered.await;
        }
    }
}

/// `total` GETs of `path` over `clients` keep-alive connections, each
/// client sending its next request when the last one is answered.
async fn load(addr: SocketAddr, path: &str, total: usize, clients: usize) -> Tally {
    load_counted(addr, path, total, clients, Arc::default()).await
}

/// [`load`], counting answers in `progress`.
async fn load_counted(
    addr: SocketAddr,
    path: &str,
    total: usize,
    clients: usize,
    progress: Arc<Progress>,
) -> Tally {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let n = total / clients + usize::from(c < total % clients);
        let path = path.to_owned();
        let progress = Arc::clone(&progress);
        tasks.push(tokio::spawn(async move {
            let mut sender = support::h1(addr).await;
            let mut tally = Tally::default();
            for _ in 0..n {
                sender.ready().await.unwrap();
                let response = sender
                    .send_request(support::request("GET", &path, &[], ""))
                    .await
                    .unwrap();
                let got = support::got(response).await;
                if got.status == 200 {
                    let version = got.header("x-app-version").unwrap_or("-").to_owned();
                    *tally.versions.entry(version).or_insert(0) += 1;
                } else {
                    tally.failed.push(got.status);
                }
                progress
                    .done
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                progress.answered.notify_waiters();
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await.unwrap());
    }
    tally
}

fn versioned_echo() -> Vec<rpcgate::app::AppBuilder> {
    vec![
        demo::build("echo", Some("v1")).unwrap(),
        demo::build("echo", Some("v2")).unwrap(),
    ]
}

async fn assert_shares(weights: &str, v2_expected: f64) {
    let toml = format!("[groups.g]\n{weights}\n");
    let c = support::cluster(&toml, versioned_echo(), Config::default()).await;
    let pools = c.gateway.pools();
    wait_connected(pools, &["echo-v1", "echo-v2"]).await;
    members_active(pools, "g", &["echo-v1", "echo-v2"]).await;
    for round in 0..2 {
        let tally = load(c.gateway.addr, "/g/http/", 10_000, 8).await;
        assert!(tally.failed.is_empty(), "{:?}", tally.failed);
        let share = tally.share("v2");
        assert!(
            (share - v2_expected).abs() <= 0.01,
            "round {round}: v2 got {share:.4} of 10,000 requests, its weight says {v2_expected}: {:?}",
            tally.versions
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_follow_weights_3_to_1_within_a_point() {
    assert_shares("echo-v1 = 3\necho-v2 = 1", 0.25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_percent_canary_gets_5_percent_within_a_point() {
    assert_shares("echo-v1 = 19\necho-v2 = 1", 0.05).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_under_load_fails_nothing_and_applies_at_once() {
    let toml = "[groups.g]\necho-v1 = 3\necho-v2 = 1\n";
    let c = support::cluster(toml, versioned_echo(), Config::default()).await;
    let pools = Arc::clone(c.gateway.pools());
    wait_connected(&pools, &["echo-v1", "echo-v2"]).await;
    members_active(&pools, "g", &["echo-v1", "echo-v2"]).await;
    let addr = c.gateway.addr;
    // 4 clients keep sending while the weights change.
    let during = tokio::spawn(load(addr, "/g/http/", 4_000, 4));
    let admin = c.locator.admin_addr.unwrap();
    let (status, _) =
        support::http(admin, "PUT", "/groups/g", r#"{"echo-v1": 1, "echo-v2": 1}"#).await;
    assert_eq!(status, 200);
    let mut routing = rpcgate::locator::Locator::routing(&c.client);
    bounded(
        "the routing update",
        routing.wait_for(|rings| {
            rings
                .get("g")
                .is_some_and(|r| r.points().iter().filter(|(_, m)| m == "echo-v2").count() == 256)
        }),
    )
    .await
    .unwrap();
    // The gateway follows the same stream: the new weights are in its
    // schedule within a second of the update.
    tokio::time::timeout(
        Duration::from_secs(1),
        pools.wait_until_groups(|groups| {
            groups
                .iter()
                .any(|g| g.name() == "g" && g.view().iter().all(|m| m.effective_weight == 256.0))
        }),
    )
    .await
    .expect("the new weights apply within 1 s of the routing update");
    let tally = during.await.unwrap();
    assert!(
        tally.failed.is_empty(),
        "no request fails during the change: {:?}",
        tally.failed
    );
    let after = load(addr, "/g/http/", 10_000, 4).await;
    assert!(after.failed.is_empty(), "{:?}", after.failed);
    let share = after.share("v2");
    assert!(
        (share - 0.5).abs() <= 0.01,
        "after the change v2 gets half: {share:.4} {:?}",
        after.versions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_stay_on_the_member_the_seeded_resolve_names() {
    let toml = "[groups.g]\necho-v1 = 1\necho-v2 = 3\n";
    let c = support::cluster(toml, versioned_echo(), Config::default()).await;
    let pools = Arc::clone(c.gateway.pools());
    wait_connected(&pools, &["echo-v1", "echo-v2"]).await;
    members_active(&pools, "g", &["echo-v1", "echo-v2"]).await;
    let (locator, _task) =
        support::connect(c.locator.addr, rpcgate::mux::MuxConfig::default()).await;
    let mut sender = support::h1(c.gateway.addr).await;
    let mut seen = BTreeMap::new();
    // 100 keys, 10 requests each, interleaved.
    for round in 0..10 {
        for k in 0..100 {
            let key = format!("user-{k}");
            sender.ready().await.unwrap();
            let response = sender
                .send_request(support::request(
                    "GET",
                    "/g/http/",
                    &[("x-cocaine-sticky", key.as_str())],
                    "",
                ))
                .await
                .unwrap();
            let got = support::got(response).await;
            assert_eq!(got.status, 200);
            let version = got.header("x-app-version").unwrap().to_owned();
            if round == 0 {
                let resolved = support::resolve(&locator, "g", Some(&key)).await.unwrap();
                let port = resolved.endpoints[0].port;
                let expected = c
                    .apps
                    .iter()
                    .find(|a| a.addr.port() == port)
                    .map(|a| a.name().trim_start_matches("echo-").to_owned())
                    .unwrap();
                assert_eq!(version, expected, "key {key}: the seeded resolve's member");
                seen.insert(key, version);
            } else {
                assert_eq!(seen[&key], version, "key {key} stays on its member");
            }
        }
    }
    let on_v1 = seen.values().filter(|v| *v == "v1").count();
    assert!(
        (5..=50).contains(&on_v1),
        "both members hold keys: {on_v1} of 100 on v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_new_member_up() {
    // The ramp is long enough for three measured batches on a busy box;
    // the bounds come from the effective weight before and after each.
    let slow_start = Duration::from_secs(6);
    let mut config = Config::default();
    config.pool.slow_start = slow_start;
    let toml = "[groups.g]\necho-v1 = 1\necho-v2 = 0\n";
    let c = support::cluster(toml, versioned_echo(), config).await;
    let pools = Arc::clone(c.gateway.pools());
    wait_connected(&pools, &["echo-v1"]).await;
    members_active(&pools, "g", &["echo-v1"]).await;
    let admin = c.locator.admin_addr.unwrap();
    let (status, _) =
        support::http(admin, "PUT", "/groups/g", r#"{"echo-v1": 1, "echo-v2": 1}"#).await;
    assert_eq!(status, 200);
    let v2_effective = |pools: &Pools| {
        pools
            .group("g")
            .and_then(|g| g.view().into_iter().find(|m| m.member == "echo-v2"))
            .map(|m| (m.effective_weight / f64::from(m.weight), m.state))
    };
    // The ramp starts once v2 is connected.
    bounded(
        "v2 ramping",
        pools.wait_until_groups(|_| {
            v2_effective(&pools).is_some_and(|(f, state)| state == "slow_start" && f > 0.0)
        }),
    )
    .await;
    let mut shares = Vec::new();
    for until in [0.0, 0.5, 1.0] {
        bounded(
            "the ramp's next point",
            pools.wait_until_groups(|_| {
                v2_effective(&pools)
                    .is_some_and(|(f, state)| f >= until && (until < 1.0 || state == "active"))
            }),
        )
        .await;
        let (before, _) = v2_effective(&pools).unwrap();
        let tally = load(c.gateway.addr, "/g/http/", 600, 4).await;
        let (after, _) = v2_effective(&pools).unwrap();
        assert!(tally.failed.is_empty(), "{:?}", tally.failed);
        let share = tally.share("v2");
        // v1 weighs 1 (in the same points), v2 `factor`: its share is
        // factor / (1 + factor), between the two ends of the batch.
        let low = before / (1.0 + before) - 0.05;
        let high = after / (1.0 + after) + 0.05;
        assert!(
            (low..=high).contains(&share),
            "at {until}: v2's share {share:.3} outside [{low:.3}, {high:.3}]"
        );
        shares.push(share);
    }
    assert!(
        shares[0] < shares[1] && shares[1] < shares[2],
        "the share grows along the ramp: {shares:?}"
    );
    assert!((shares[2] - 0.5).abs() <= 0.05, "{shares:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_ejected_and_returns() {
    let mut config = Config::default();
    config.outlier.consecutive_failures = 3;
    // Long enough to see it out (and restart it), short for a test.
    config.outlier.base_ejection = Duration::from_secs(3);
    // The apps publish before the gateway starts: a member the locator
    // does not know yet counts as failing.
    let locator = support::start_locator(support::locator_config(
        "[groups.g]\necho-v1 = 1\necho-v2 = 1\n",
    ))
    .await;
    let (_v1, _) =
        support::child::demo_app("echo", Some("v1"), "127.0.0.1:0", &[locator.addr]).await;
    let (mut v2, v2_addr) =
        support::child::demo_app("echo", Some("v2"), "127.0.0.1:0", &[locator.addr]).await;
    let (locator_handle, _task) =
        support::connect(locator.addr, rpcgate::mux::MuxConfig::default()).await;
    for name in ["echo-v1", "echo-v2"] {
        bounded("the app published", async {
            while support::resolve(&locator_handle, name, None).await.is_err() {
                // The app prints its address before publishing; a resolve
                // is the readiness probe.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin = None;
    config.locators = vec![locator.addr];
    let client = rpcgate::locator::RemoteLocator::new(rpcgate::locator::RemoteLocatorConfig {
        endpoints: vec![locator.addr],
        ..rpcgate::locator::RemoteLocatorConfig::default()
    });
    bounded("the routing dump", client.routing_ready()).await;
    let gateway = rpcgate::gateway::RunningGateway::start(config, Arc::new(client))
        .await
        .unwrap();
    let pools = Arc::clone(gateway.pools());
    wait_connected(&pools, &["echo-v1", "echo-v2"]).await;
    members_active(&pools, "g", &["echo-v1", "echo-v2"]).await;
    let addr = gateway.addr;
    let clients = 4;
    let progress = Arc::new(Progress::default());
    let running = tokio::spawn(load_counted(
        addr,
        "/g/http/",
        6_000,
        clients,
        Arc::clone(&progress),
    ));
    // Kill v2 once traffic flows.
    bounded("traffic", progress.at_least(500)).await;
    v2.start_kill().unwrap();
    v2.wait().await.unwrap();
    bounded(
        "v2 ejected",
        pools.wait_until_groups(|groups| {
            groups.iter().any(|g| {
                g.view()
                    .iter()
                    .any(|m| m.member == "echo-v2" && m.state == "ejected")
            })
        }),
    )
    .await;
    let during = running.await.unwrap();
    assert!(
        during.failed.len() <= clients,
        "only requests in flight on the killed member fail (at most {clients}): {:?}",
        during.failed
    );
    assert!(during.versions.get("v1").is_some_and(|n| *n > 0));
    // While it is out, v1 takes everything.
    let out = load(addr, "/g/http/", 400, clients).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.share("v1"), 1.0, "{:?}", out.versions);
    // It comes back on the same address; once its ejection ends it
    // serves again.
    let (_v2, again) =
        support::child::demo_app("echo", Some("v2"), &v2_addr.to_string(), &[locator.addr]).await;
    assert_eq!(again, v2_addr);
    wait_connected(&pools, &["echo-v2"]).await;
    members_active(&pools, "g", &["echo-v1", "echo-v2"]).await;
    let view = pools.group("g").unwrap().view();
    let v2_view = view.iter().find(|m| m.member == "echo-v2").unwrap();
    assert!(v2_view.ejections >= 1, "{view:?}");
    let back = load(addr, "/g/http/", 2_000, clients).await;
    assert!(back.failed.is_empty(), "{:?}", back.failed);
    assert!(
        (back.share("v2") - 0.5).abs() <= 0.02,
        "v2 serves its half again: {:?}",
        back.versions
    );
}
