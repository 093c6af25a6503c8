//! Credentials for every admin write, on real listeners: the gateway's
//! `PUT /log-level` and the locator's `PUT`/`DELETE /groups/NAME` and
//! `POST /reload` need `Authorization: Bearer TOKEN` (401 with a JSON body
//! and nothing changed without it or with a wrong one), reads stay open; a
//! token file readable by everyone refuses the start naming the file
//! (config loaders and the binary); an admin API off loopback without a
//! token refuses to start (binary: the gateway's `admin_allow_remote`, the
//! locator's `--admin 0.0.0.0:0`); the locator's admin runs on the
//! hardened admin server (head timeout, connection cap).

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rpcgate::admin::{MAX_CONNECTIONS, Token};
use rpcgate::config::Config;
use rpcgate::locator::{LocatorConfig, RunningLocator};
use support::child::{GatewayChild, bounded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const TOKEN: &str = "correct-horse-battery-staple";

/// A file in this test's temp dir holding `content`, with `mode`.
fn token_file(name: &str, content: &str, mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rpcgate-admin-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts a 401 with `WWW-Authenticate: Bearer` and a JSON error body.
fn assert_unauthorized(got: &support::Got, what: &str) {
    assert_eq!(got.status, 401, "{what}: {:?}", got.body);
    assert_eq!(got.header("www-authenticate"), Some("Bearer"), "{what}");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.json()["error"]["status"], 401, "{what}");
    assert!(got.json()["error"]["message"].is_string(), "{what}");
}

// === gateway ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_writes_need_the_token_and_reads_stay_open() {
    let file = token_file("gateway.token", &format!("  {TOKEN}\n"), 0o600);
    // Off loopback with a token: allowed.
    let config = format!(
        "listen = \"127.0.0.1:0\"\nadmin = \"0.0.0.0:0\"\nadmin_allow_remote = true\n\
         admin_token_file = \"{}\"\nlocators = [\"127.0.0.1:9\"]\n",
        file.display()
    );
    let gateway = GatewayChild::start("admin-token", &config, &[]).await;
    let admin = SocketAddr::from(([127, 0, 0, 1], gateway.admin.unwrap().port()));
    let level = || async {
        support::send(admin, "GET", "/log-level", &[], "")
            .await
            .json()
    };
    // The child runs with `--log-level error`.
    assert_eq!(level().await["log_level"], "error");

    let got = support::send(admin, "PUT", "/log-level", &[], "debug").await;
    assert_unauthorized(&got, "no token");
    assert_eq!(
        level().await["log_level"],
        "error",
        "changed without a token"
    );
    for wrong in [
        bearer("wrong"),
        bearer(&TOKEN[1..]),
        format!("Basic {TOKEN}"),
    ] {
        let got = support::send(
            admin,
            "PUT",
            "/log-level",
            &[("authorization", &wrong)],
            "debug",
        )
        .await;
        assert_unauthorized(&got, &wrong);
    }
    assert_eq!(
        level().await["log_level"],
        "error",
        "changed with a wrong token"
    );

    let got = support::send(
        admin,
        "PUT",
        "/log-level",
        &[("authorization", &bearer(TOKEN))],
        "debug",
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(level().await["log_level"], "debug");

    // Reads need nothing; `/config` names the file, never the token.
    for path in ["/ping", "/health", "/pools", "/config"] {
        let got = support::send(admin, "GET", path, &[], "").await;
        assert_eq!(got.status, 200, "{path}");
        assert!(
            !String::from_utf8_lossy(&got.body).contains(TOKEN),
            "{path}"
        );
    }
    let got = support::send(admin, "GET", "/config", &[], "").await;
    assert_eq!(
        got.json()["admin_token_file"],
        file.display().to_string().as_str()
    );
}

// === locator ===

async fn locator(token: Option<Token>, header_timeout: Duration) -> RunningLocator {
    let mut config = support::locator_config("[groups.kept]\na = 1\n");
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    config.admin_token = token;
    config.admin_header_timeout = header_timeout;
    RunningLocator::start(config, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locator_writes_need_the_token_and_reads_stay_open() {
    let file = token_file("locator.token", TOKEN, 0o640);
    let locator = locator(Some(Token::load(&file).unwrap()), Duration::from_secs(10)).await;
    let admin = locator.admin_addr.unwrap();
    let groups = || async { support::send(admin, "GET", "/groups", &[], "").await.json() };
    let writes = [
        ("PUT", "/groups/new", r#"{"a": 1, "b": 2}"#),
        ("DELETE", "/groups/kept", ""),
        ("POST", "/reload", ""),
    ];
    for auth in [
        None,
        Some(bearer("nope")),
        Some(bearer(&format!("{TOKEN}x"))),
    ] {
        for (method, path, body) in writes {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            let got = support::send(admin, method, path, &headers, body).await;
            assert_unauthorized(&got, &format!("{method} {path} with {auth:?}"));
        }
        // Nothing changed.
        assert_eq!(
            groups().await,
            serde_json::json!({"kept": {"a": 1}}),
            "{auth:?}"
        );
    }
    let ok = bearer(TOKEN);
    let with_token = [("authorization", ok.as_str())];
    let got = support::send(
        admin,
        "PUT",
        "/groups/new",
        &with_token,
        r#"{"a": 1, "b": 2}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let got = support::send(admin, "DELETE", "/groups/kept", &with_token, "").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(groups().await, serde_json::json!({"new": {"a": 1, "b": 2}}));
    let got = support::send(admin, "POST", "/reload", &with_token, "").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    for path in ["/ping", "/ready", "/groups", "/services"] {
        let got = support::send(admin, "GET", path, &[], "").await;
        assert_eq!(got.status, 200, "{path}: {:?}", got.body);
    }
    // A known path asked with a method it does not serve: 405, as on the
    // gateway's admin (with the token, to get past the check).
    let got = support::send(admin, "POST", "/groups", &with_token, "").await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), Some("GET, HEAD"));
    locator.shutdown().await;
}

/// Reads until the server closes `stream` (EOF or reset).
async fn until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locator_admin_cuts_a_slow_head_at_its_header_timeout() {
    let header_timeout = Duration::from_millis(300);
    let locator = locator(None, header_timeout).await;
    let addr = locator.admin_addr.unwrap();
    for sent in [&b"GET /groups HTTP/1.1\r\nHost: a\r\n"[..], b""] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        // Generous against a loaded machine, yet far below "never".
        let bound = header_timeout * 20;
        tokio::time::timeout(bound, until_closed(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("still open after {bound:?}"));
        let took = started.elapsed();
        assert!(
            took >= header_timeout,
            "closed after {took:?}, before the timeout"
        );
    }
    locator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locator_admin_serves_at_most_max_connections() {
    // A head timeout far longer than the test: held connections stay open.
    let locator = locator(None, Duration::from_secs(600)).await;
    let addr = locator.admin_addr.unwrap();
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut sender = support::h1(addr).await;
        let response = sender
            .send_request(support::request("GET", "/ping", &[], ""))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        held.push(sender);
    }
    // One more connects (the kernel's backlog) but is not served...
    let mut extra = tokio::spawn(async move { support::send(addr, "GET", "/ping", &[], "").await });
    if let Ok(done) = tokio::time::timeout(Duration::from_millis(500), &mut extra).await {
        panic!("served past the cap: {}", done.unwrap().status);
    }
    // ...until one of the others closes.
    drop(held.pop());
    let got = tokio::time::timeout(Duration::from_secs(20), extra)
        .await
        .expect("the extra connection to be served once one closed")
        .unwrap();
    assert_eq!(got.status, 200);
    drop(held);
    locator.shutdown().await;
}

// === refusing to start ===

#[test]
fn a_world_readable_or_empty_token_file_is_a_config_error_naming_it() {
    let open = token_file("open.token", TOKEN, 0o644);
    let empty = token_file("empty.token", " \n", 0o600);
    let missing = std::env::temp_dir().join("rpcgate-admin-token-missing.token");
    for file in [&open, &empty, &missing] {
        let text = format!("admin_token_file = \"{}\"\n", file.display());
        let error = Config::parse(&text, Path::new("gw.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("gw.toml")
                && error.contains("admin_token_file")
                && error.contains(&file.display().to_string()),
            "{error}"
        );
        let error = LocatorConfig::parse(&text, Path::new("loc.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("loc.toml")
                && error.contains("admin_token_file")
                && error.contains(&file.display().to_string()),
            "{error}"
        );
    }
    let good = token_file("good.token", TOKEN, 0o600);
    let text = format!("admin_token_file = \"{}\"\n", good.display());
    assert!(
        Config::parse(&text, Path::new("gw.toml"))
            .unwrap()
            .admin_token
            .is_some()
    );
}

#[test]
fn an_off_loopback_admin_without_a_token_is_a_config_error() {
    let error = Config::parse(
        "admin = \"0.0.0.0:9090\"\nadmin_allow_remote = true\n",
        Path::new("gw.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("admin_token_file"), "{error}");
    let error = LocatorConfig::parse("admin = \"0.0.0.0:10054\"\n", Path::new("loc.toml"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("admin_token_file"), "{error}");
    let good = token_file("remote.token", TOKEN, 0o600);
    let text = format!(
        "admin = \"0.0.0.0:10054\"\nadmin_token_file = \"{}\"\n",
        good.display()
    );
    assert!(LocatorConfig::parse(&text, Path::new("loc.toml")).is_ok());
}

/// Runs the binary with `args`; it must exit non-zero within 20 s. Its
/// stderr, which must be one line.
async fn refused(args: &[&str]) -> String {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .args(["--log-level", "error"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = bounded("the binary to refuse to start", child.wait_with_output())
        .await
        .unwrap();
    assert!(!output.status.success(), "{args:?} started");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    stderr
}

fn config_file(name: &str, text: &str) -> PathBuf {
    token_file(name, text, 0o644)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_world_readable_token_file_naming_it() {
    let open = token_file("cli-open.token", TOKEN, 0o604);
    let config = config_file(
        "cli-open.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nadmin_token_file = \"{}\"\n",
            open.display()
        ),
    );
    let stderr = refused(&["--config", config.to_str().unwrap()]).await;
    assert!(stderr.contains(open.to_str().unwrap()), "{stderr}");
    let stderr = refused(&[
        "locator",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--admin-token-file",
        open.to_str().unwrap(),
    ])
    .await;
    assert!(stderr.contains(open.to_str().unwrap()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_an_off_loopback_admin_without_a_token() {
    let config = config_file(
        "cli-remote.toml",
        "listen = \"127.0.0.1:0\"\nadmin = \"0.0.0.0:0\"\nadmin_allow_remote = true\n",
    );
    let stderr = refused(&["--config", config.to_str().unwrap()]).await;
    assert!(stderr.contains("admin_token_file"), "{stderr}");
    let stderr = refused(&["locator", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"]).await;
    assert!(stderr.contains("--admin-token-file"), "{stderr}");

    // With a token the same locator starts.
    let good = token_file("cli-good.token", TOKEN, 0o600);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .args(["--log-level", "error", "locator", "--listen", "127.0.0.1:0"])
        .args(["--admin", "0.0.0.0:0", "--admin-token-file"])
        .arg(&good)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    bounded("the admin listening line", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("admin listening on ") {
                return;
            }
        }
        panic!("the locator exited without serving its admin API");
    })
    .await;
    child.kill().await.unwrap();
}
