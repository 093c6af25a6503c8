//! `rpcgate` with no config: the standalone default as a child process
//! (gateway, embedded locator, demo apps). It prints the curl lines, serves
//! the demo apps and the canary group, and its admin API serves Prometheus
//! metrics from the recorder the binary installs. The embedded locator's
//! admin API listens too, and writes to both admin APIs need the token the
//! standalone creates in `$HOME/.rpcgate/admin.token`.

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
    let home = std::env::temp_dir().join(format!("rpcgate-standalone-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--locator", "127.0.0.1:0", "--locator-admin", "127.0.0.1:0"])
        .args(["--log-level", "warn"])
        .env("HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Readiness: everything is up once the banner is printed, which ends
    // with "Ctrl-C stops it.".
    let (mut gateway, mut admin, mut curls) = (None, None, 0);
    let (mut locator_admin, mut shift) = (None, None);
    loop {
        let line = lines.next_line().await.unwrap().expect("banner");
        gateway = gateway.or_else(|| addr_after(&line, "gateway http://"));
        admin = admin.or_else(|| addr_after(&line, "admin   http://"));
        locator_admin = locator_admin.or_else(|| addr_after(&line, "locator admin http://"));
        if line.contains("-X PUT") {
            shift = Some(line.trim().to_owned());
        }
        curls += usize::from(line.trim_start().starts_with("curl "));
        if line.starts_with("Ctrl-C stops it.") {
            break;
        }
    }
    let (gateway, admin) = (gateway.unwrap(), admin.unwrap());
    let locator_admin = locator_admin.expect("the locator admin's address is printed");
    assert!(curls >= 5, "the banner prints curl lines to try");
    assert_eq!(
        shift.expect("the canary-shift curl line"),
        format!(
            "curl -s -X PUT -H \"Authorization: Bearer $(cat ~/.rpcgate/admin.token)\" http://{locator_admin}/groups/canary -d '{{\"echo-v1\": 1, \"echo-v2\": 1}}'"
        )
    );

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

    // The token: created private, and every admin write needs it.
    use std::os::unix::fs::PermissionsExt;
    let token_file = home.join(".rpcgate/admin.token");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home.join(".rpcgate")), 0o700);
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    let bearer = format!("Bearer {token}");
    let all_v2 = r#"{"echo-v1": 0, "echo-v2": 1}"#;
    let (status, body) = support::http(locator_admin, "PUT", "/groups/canary", all_v2).await;
    assert_eq!(status, 401, "a write without the token: {body}");
    let (status, body) = support::http(admin, "PUT", "/log-level", "warn").await;
    assert_eq!(status, 401, "the gateway admin's writes too: {body}");
    let put = support::send(
        locator_admin,
        "PUT",
        "/groups/canary",
        &[("authorization", &bearer)],
        all_v2,
    )
    .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    // The gateway applies the new ring once its `routing` stream has it.
    support::child::bounded("the split to change", async {
        loop {
            let got = support::send(gateway, "GET", "/canary/http/", &[], "").await;
            if got.header("x-app-version") == Some("v2") {
                let all: Vec<_> = twenty_versions(gateway).await;
                if all.iter().all(|v| v == "v2") {
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    // SIGTERM stops it cleanly.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().await.unwrap().success());
}

/// The versions of 20 requests to the canary group.
async fn twenty_versions(gateway: SocketAddr) -> Vec<String> {
    let mut versions = Vec::new();
    for _ in 0..20 {
        let got = support::send(gateway, "GET", "/canary/http/", &[], "").await;
        versions.push(got.header("x-app-version").unwrap_or("none").to_owned());
    }
    versions
}
