//! `rpcgate` with no config: the standalone default as a child process
//! (gateway, embedded locator, demo apps). It prints the curl lines, serves
//! the demo apps and the canary group, and its admin API serves Prometheus
//! metrics from the recorder the binary installs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The address after `prefix` in `line` (up to the next space).
fn addr_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_binary_serves_demo_apps_and_metrics() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--locator", "127.0.0.1:0", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Readiness: everything is up once the banner is printed, which ends
    // with "Ctrl-C stops it.".
    let (mut gateway, mut admin, mut curls) = (None, None, 0);
    loop {
        let line = lines.next_line().await.unwrap().expect("banner");
        gateway = gateway.or_else(|| addr_after(&line, "gateway http://"));
        admin = admin.or_else(|| addr_after(&line, "admin   http://"));
        curls += usize::from(line.trim_start().starts_with("curl "));
        if line.starts_with("Ctrl-C stops it.") {
            break;
        }
    }
    let (gateway, admin) = (gateway.unwrap(), admin.unwrap());
    assert!(curls >= 5, "the banner prints curl lines to try");

    let got = support::send(gateway, "GET", "/hello/http/", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], rpcgate::app::demo::HELLO);
    let got = support::send(gateway, "GET", "/canary/http/", &[], "").await;
    assert_eq!(got.status, 200);
    let version = got.header("x-app-version").unwrap().to_owned();
    assert!(version == "v1" || version == "v2", "{version}");

    let (status, text) = support::http(admin, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{text}");
    // The group's requests are labelled with the member that served them.
    let canary = format!(
        "rpcgate_requests_total{{service=\"canary\",member=\"echo-{version}\",status=\"2xx\"}} 1"
    );
    let picks =
        format!("rpcgate_member_picks_total{{service=\"canary\",member=\"echo-{version}\"}} 1");
    for expected in [
        "rpcgate_requests_total{service=\"hello\",member=\"hello\",status=\"2xx\"} 1",
        canary.as_str(),
        picks.as_str(),
        "rpcgate_member_weight{service=\"canary\",member=\"echo-v1\",kind=\"configured\"} 384",
        "# HELP rpcgate_requests_total",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }

    // SIGTERM stops it cleanly.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().await.unwrap().success());
}
