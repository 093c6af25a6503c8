//! `rpcgate locator` as a child process: SIGHUP reloads the config file and
//! pushes a new dump to a live `routing` subscriber; a broken file is
//! refused with the key and the reason, and the running state is kept;
//! SIGTERM exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use rpcgate::mux::MuxConfig;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

struct Locator {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
    config: PathBuf,
}

impl Locator {
    async fn start(config_text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rpcgate-sighup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("locator.toml");
        std::fs::write(&config, config_text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
            .args(["locator", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        // Readiness: the locator prints its bound address once listening.
        let line = stdout.next_line().await.unwrap().unwrap();
        let addr = line
            .strip_prefix("locator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self {
            child,
            stdout,
            addr,
            config,
        }
    }

    async fn hangup(&mut self, new_config: &str) -> String {
        std::fs::write(&self.config, new_config).unwrap();
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        self.stdout.next_line().await.unwrap().unwrap()
    }
}

const V1_HEAVY: &str = "[groups.myapp]\napp_v1 = 1\napp_v2 = 3\n";
const V2_ONLY: &str = "[groups.myapp]\napp_v1 = 0\napp_v2 = 1\n";
const BROKEN: &str = "[groups.myapp]\napp_v1 = 0\n";
const V1_ONLY: &str = "[groups.myapp]\napp_v1 = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_broken_file_keeps_the_running_state() {
    let mut locator = Locator::start(V1_HEAVY).await;
    let publications =
        support::publish_members(locator.addr, &[("app_v1", 1001), ("app_v2", 1002)]).await;
    let (handle, _conn) = support::connect(locator.addr, MuxConfig::default()).await;
    let mut stream = support::subscribe(&handle, "sighup-test").await;
    let first = support::next_dump(&mut stream).await;
    assert_eq!(first.groups["myapp"].len(), 512);

    assert_eq!(locator.hangup(V2_ONLY).await, "config reloaded");
    let second = support::next_dump(&mut stream).await;
    assert!(second.groups["myapp"].iter().all(|(_, m)| m == "app_v2"));

    let refused = locator.hangup(BROKEN).await;
    assert!(refused.starts_with("config refused: "), "{refused}");
    assert!(
        refused.contains(locator.config.to_str().unwrap()),
        "names the file: {refused}"
    );
    assert!(refused.contains("groups.myapp"), "names the key: {refused}");
    for _ in 0..20 {
        let reply = support::resolve(&handle, "myapp", None).await.unwrap();
        assert_eq!(
            reply.endpoints[0].port, 1002,
            "the running weights are kept"
        );
    }

    // The next dump the subscriber sees is the next good config: the broken
    // one pushed nothing.
    assert_eq!(locator.hangup(V1_ONLY).await, "config reloaded");
    let third = support::next_dump(&mut stream).await;
    assert!(third.groups["myapp"].iter().all(|(_, m)| m == "app_v1"));

    let pid = locator.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = locator.child.wait().await.unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status}");
    drop(publications);
}
