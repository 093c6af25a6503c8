//! `rpcgate rollout` end to end, every component a real process on
//! loopback: a locator with its admin API (and a token), demo apps
//! (echo-v1, echo-v2, and the `fail` demo as fail-v2), gateways, steady
//! client load, and the rollout itself; with `--prometheus`, a real
//! Prometheus (Debian's `prometheus`) scraping two gateways.
//!
//! - A failing canary is rolled back at the first step, before its window
//!   ends (as soon as `--min-requests` show the breach): clients see fewer
//!   failures than that step's share, and the group is restored exactly.
//! - A healthy canary is promoted: then it serves every request, and no
//!   request failed during the whole rollout.
//! - SIGTERM during a step leaves the last completed step's weights (exit 2).
//! - Bad input exits 2 with one line, changing nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use support::child::{GatewayChild, bounded, demo_app};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A step's window for the steps that must pass.
const STEP_MS: u64 = 1500;
/// The failing canary's window: long, so a rollback before it ends shows
/// the breach was acted on as soon as it was certain.
const LONG_STEP_MS: u64 = 60_000;
/// Requests a step needs before it is judged.
const MIN_REQUESTS: u64 = 40;
/// The first step's share of the group, in percent.
const FIRST_SHARE: f64 = 10.0;

const TOKEN: &str = "rollout-test-token";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rpcgate-rollout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn token_file(dir: &Path) -> PathBuf {
    let file = dir.join("admin.token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

/// `rpcgate locator` with `groups` (TOML) and its admin API needing the
/// token; returns the child, its address and its admin address.
async fn locator(dir: &Path, groups: &str) -> (Child, SocketAddr, SocketAddr) {
    let file = dir.join("locator.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nadmin_token_file = \"{}\"\n{groups}",
            token_file(dir).display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .args(["locator", "--log-level", "error", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut admin) = (None, None);
    while admin.is_none() {
        let line = bounded("the locator's lines", lines.next_line())
            .await
            .unwrap()
            .expect("the locator prints its addresses");
        if let Some(a) = line.strip_prefix("locator listening on ") {
            addr = Some(a.parse().unwrap());
        }
        if let Some(a) = line.strip_prefix("admin listening on ") {
            admin = Some(a.parse().unwrap());
        }
    }
    (child, addr.unwrap(), admin.unwrap())
}

async fn groups(admin: SocketAddr) -> BTreeMap<String, BTreeMap<String, u32>> {
    let (status, body) = support::http(admin, "GET", "/groups", "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// What the clients saw: answers by `X-App-Version` and status.
#[derive(Debug, Default, Clone)]
struct Seen {
    ok: BTreeMap<String, u64>,
    failed: u64,
}

impl Seen {
    fn total(&self) -> u64 {
        self.ok.values().sum::<u64>() + self.failed
    }
}

/// Steady load: `clients` keep-alive connections per path, spread over
/// `gateways`, each sending its next request when the last is answered.
struct Load {
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gateways: &[SocketAddr], paths: &[&str], clients: usize) -> Self {
        let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for path in paths {
            for client in 0..clients {
                let gateway = gateways[client % gateways.len()];
                let (seen, stopped, path) =
                    (Arc::clone(&seen), stopped.clone(), (*path).to_owned());
                tasks.push(tokio::spawn(async move {
                    let mut sender = support::h1(gateway).await;
                    while !*stopped.borrow() {
                        let request = support::request("GET", &path, &[], "");
                        let Ok(response) = sender.send_request(request).await else {
                            sender = support::h1(gateway).await;
                            seen.lock().unwrap().entry(path.clone()).or_default().failed += 1;
                            continue;
                        };
                        let got = support::got(response).await;
                        let mut seen = seen.lock().unwrap();
                        let entry = seen.entry(path.clone()).or_default();
                        match (got.status, got.header("x-app-version")) {
                            (200, Some(version)) => {
                                *entry.ok.entry(version.to_owned()).or_default() += 1;
                            }
                            _ => entry.failed += 1,
                        }
                    }
                }));
            }
        }
        Self { seen, stop, tasks }
    }

    fn seen(&self, path: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `path` has `n` more answers than `since`.
    async fn more(&self, path: &str, since: &Seen, n: u64) -> Seen {
        bounded("load answers", async {
            loop {
                let now = self.seen(path);
                if now.total() >= since.total() + n {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// A rollout as a child process; its stdout lines and exit code.
struct RolloutRun {
    lines: Vec<String>,
    code: i32,
    took: Duration,
}

fn rollout_command(args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcgate"));
    command
        .args(["--log-level", "error", "rollout"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn rollout(args: &[String]) -> RolloutRun {
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_millis(LONG_STEP_MS * 2),
        rollout_command(args).output(),
    )
    .await
    .expect("the rollout ends")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("{stdout}{stderr}");
    RolloutRun {
        lines: stdout.lines().map(str::to_owned).collect(),
        code: output.status.code().unwrap(),
        took: started.elapsed(),
    }
}

/// The flags of a rollout of `canary` in `group`.
fn flags(
    admin: SocketAddr,
    token: &Path,
    source: &[String],
    group: &str,
    canary: &str,
    step_ms: u64,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--admin",
        &format!("http://{admin}"),
        "--group",
        group,
        "--canary",
        canary,
        "--steps",
        &format!("{FIRST_SHARE},50,100"),
        "--step-ms",
        &step_ms.to_string(),
        "--min-requests",
        &MIN_REQUESTS.to_string(),
        "--max-error-ratio",
        "0.01",
        "--poll-ms",
        "100",
        "--token-file",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(token.display().to_string());
    args.extend(source.iter().cloned());
    args
}

const GROUPS: &str =
    "[groups.bad]\necho-v1 = 1\nfail-v2 = 0\n[groups.good]\necho-v1 = 1\necho-v2 = 0\n";

/// The two decisions, judged on `source` (flags), with load through
/// `gateways`.
async fn both_decisions(
    dir: &Path,
    locator_admin: SocketAddr,
    gateways: &[SocketAddr],
    source: &[String],
) {
    let token = dir.join("admin.token");
    let before = groups(locator_admin).await;
    let load = Load::start(gateways, &["/bad/http/", "/good/http/"], 4);
    let warm = load.more("/bad/http/", &Seen::default(), 200).await;
    load.more("/good/http/", &Seen::default(), 200).await;
    assert_eq!(warm.failed, 0, "nothing fails before the rollout: {warm:?}");

    // The failing canary: rolled back at the first step, at once.
    let run = rollout(&flags(
        locator_admin,
        &token,
        source,
        "bad",
        "fail-v2",
        LONG_STEP_MS,
    ))
    .await;
    assert_eq!(run.code, 1, "rolled back: {:?}", run.lines);
    assert!(
        run.took < Duration::from_millis(LONG_STEP_MS),
        "the breach was acted on before the step's window ended ({:?})",
        run.took
    );
    let steps: Vec<_> = run
        .lines
        .iter()
        .filter(|l| l.starts_with("step "))
        .collect();
    assert_eq!(steps.len(), 1, "only the first step ran: {:?}", run.lines);
    assert!(
        steps[0].starts_with("step 1/3") && steps[0].contains("breach"),
        "{}",
        steps[0]
    );
    assert!(
        run.lines.iter().any(|l| l.starts_with("rolled back")),
        "{:?}",
        run.lines
    );
    assert_eq!(
        groups(locator_admin).await["bad"],
        before["bad"],
        "the group is restored exactly"
    );
    let after = load.more("/bad/http/", &load.seen("/bad/http/"), 200).await;
    let share = after.failed as f64 / after.total() as f64;
    assert!(after.failed > 0, "the canary did serve (and fail) requests");
    assert!(
        share < FIRST_SHARE / 100.0,
        "clients saw {share:.3} of requests fail, under the first step's share: {after:?}"
    );

    // The healthy canary: promoted; then it serves everything.
    let start = load.seen("/good/http/");
    let run = rollout(&flags(
        locator_admin,
        &token,
        source,
        "good",
        "echo-v2",
        STEP_MS,
    ))
    .await;
    assert_eq!(run.code, 0, "promoted: {:?}", run.lines);
    let passed = run
        .lines
        .iter()
        .filter(|l| l.starts_with("step ") && l.contains("pass"))
        .count();
    assert_eq!(passed, 3, "{:?}", run.lines);
    assert!(
        run.lines.iter().any(|l| l.starts_with("promoted")),
        "{:?}",
        run.lines
    );
    let promoted = groups(locator_admin).await["good"].clone();
    assert_eq!(promoted["echo-v1"], 0, "{promoted:?}");
    assert!(promoted["echo-v2"] > 0, "{promoted:?}");
    let during = load.seen("/good/http/");
    let tail = load.more("/good/http/", &during, 200).await;
    load.stop().await;
    assert_eq!(
        during.failed - start.failed,
        0,
        "no request failed during the rollout: {during:?}"
    );
    assert_eq!(
        tail.ok.get("v1").copied().unwrap_or(0),
        during.ok.get("v1").copied().unwrap_or(0),
        "after the promotion echo-v2 serves every request: {tail:?}"
    );
    assert_eq!(tail.failed, during.failed);
}

/// Starts the apps publishing to `locator`.
async fn apps(locator: SocketAddr) -> Vec<Child> {
    let mut children = Vec::new();
    for (name, version) in [("echo", "v1"), ("echo", "v2"), ("fail", "v2")] {
        let (child, _) = demo_app(name, Some(version), "127.0.0.1:0", &[locator]).await;
        children.push(child);
    }
    children
}

async fn gateway(name: &str, locator: SocketAddr) -> GatewayChild {
    let config =
        format!("listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nlocators = [\"{locator}\"]\n");
    GatewayChild::start(name, &config, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_and_a_healthy_one_promoted() {
    let dir = temp_dir("metrics");
    let (_locator, addr, admin) = locator(&dir, GROUPS).await;
    let _apps = apps(addr).await;
    let gateway = gateway("rollout-metrics", addr).await;
    let source = vec![
        "--metrics".to_owned(),
        format!("http://{}/metrics", gateway.admin.unwrap()),
    ];
    both_decisions(&dir, admin, &[gateway.http], &source).await;
}

/// A free loopback port (the listener is closed before it is used).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_decisions_with_prometheus_scraping_two_gateways() {
    let dir = temp_dir("prometheus");
    let (_locator, addr, admin) = locator(&dir, GROUPS).await;
    let _apps = apps(addr).await;
    let one = gateway("rollout-prom-1", addr).await;
    let two = gateway("rollout-prom-2", addr).await;
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: rpcgate\n    static_configs:\n      - targets: [\"{}\", \"{}\"]\n",
            one.admin.unwrap(),
            two.admin.unwrap()
        ),
    )
    .unwrap();
    let _prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("Prometheus must be installed (Debian: apt-get install prometheus; see .ci/run)");
    let prometheus: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Ready once it has scraped both gateways.
    bounded("Prometheus scraping both gateways", async {
        loop {
            if let Ok(Ok(stream)) = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(prometheus),
            )
            .await
            {
                drop(stream);
                let (status, body) =
                    support::http(prometheus, "GET", "/api/v1/query?query=sum(up)", "").await;
                if status == 200 && body.contains("\"2\"") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let source = vec!["--prometheus".to_owned(), format!("http://{prometheus}")];
    both_decisions(&dir, admin, &[one.http, two.http], &source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_leaves_the_last_completed_step_and_bad_input_changes_nothing() {
    let dir = temp_dir("signal");
    let (_locator, addr, admin) = locator(&dir, GROUPS).await;
    let _apps = apps(addr).await;
    let gateway = gateway("rollout-signal", addr).await;
    let metrics = format!("http://{}/metrics", gateway.admin.unwrap());
    let source = vec!["--metrics".to_owned(), metrics.clone()];
    let token = dir.join("admin.token");
    let before = groups(admin).await;

    // Bad input: exit 2, one line, nothing changed.
    let base = flags(admin, &token, &source, "good", "echo-v2", STEP_MS);
    let with = |key: &str, value: &str| {
        let mut args = base.clone();
        let at = args.iter().position(|a| a == key).unwrap();
        args[at + 1] = value.to_owned();
        args
    };
    let mut no_token = base.clone();
    let at = no_token.iter().position(|a| a == "--token-file").unwrap();
    no_token.drain(at..at + 2);
    for (args, expected) in [
        (with("--group", "nope"), "no group `nope`"),
        (with("--canary", "echo-v9"), "not a member"),
        (with("--steps", "10,50"), "rise to 100"),
        (with("--steps", "50,10,100"), "must rise"),
        (
            with("--admin", "http://127.0.0.1:1"),
            "cannot reach the admin API",
        ),
        (
            with("--metrics", "http://127.0.0.1:1/metrics"),
            "cannot read the metrics",
        ),
        (no_token, "401"),
    ] {
        let output = rollout_command(&args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "`{expected}` in: {stderr}");
    }
    assert_eq!(groups(admin).await, before, "bad input changed nothing");

    // SIGTERM in step 2 leaves step 1's weights.
    let load = Load::start(&[gateway.http], &["/good/http/"], 4);
    load.more("/good/http/", &Seen::default(), 100).await;
    let mut child = rollout_command(&flags(
        admin,
        &token,
        &source,
        "good",
        "echo-v2",
        STEP_MS * 4,
    ))
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    loop {
        let line = bounded("step 1's line", lines.next_line())
            .await
            .unwrap()
            .expect("the rollout prints step 1");
        printed.push(line.clone());
        if line.starts_with("step 1/3") {
            assert!(line.contains("pass"), "{line}");
            break;
        }
    }
    let step1 = groups(admin).await["good"].clone();
    assert_eq!(
        step1["echo-v2"], 1000,
        "step 2 starts after the line: {step1:?}"
    );
    // Step 2's weights are set right after step 1's line.
    bounded("step 2's weights", async {
        while groups(admin).await["good"]["echo-v2"] != 5000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = bounded("the rollout to stop", child.wait()).await.unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        printed.push(line);
    }
    load.stop().await;
    assert_eq!(status.code(), Some(2), "{printed:?}");
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("interrupted") && l.contains("step 1")),
        "{printed:?}"
    );
    assert_eq!(
        groups(admin).await["good"],
        step1,
        "step 1's weights are left"
    );
}
