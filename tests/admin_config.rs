//! The admin API's config and log level: `/config` is the running config as
//! JSON; `PUT /log-level` changes the binary's log level live; the admin
//! listener refuses a non-loopback address unless `admin_allow_remote`
//! (with a token).

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::path::Path;

use rpcgate::config::Config;
use support::child::GatewayChild;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_config_is_served_as_json() {
    let mut config = Config::default();
    config.request.timeout = std::time::Duration::from_millis(1234);
    config.routing.expose = Some(["echo".to_owned()].into());
    let c = support::cluster("", Vec::new(), config).await;
    let (status, body) = support::http(c.gateway.admin_addr.unwrap(), "GET", "/config", "").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["request"]["timeout_ms"], 1234);
    assert_eq!(json["routing"]["expose"], serde_json::json!(["echo"]));
    assert_eq!(
        json["request"]["forward_headers"]["authorization"],
        "authorization"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_changes_live() {
    let config =
        "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nlocators = [\"127.0.0.1:9\"]\n";
    let gateway = GatewayChild::start("log-level", config, &[]).await;
    let admin = gateway.admin.unwrap();
    // The child runs with `--log-level error`.
    let (status, body) = support::http(admin, "GET", "/log-level", "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"log_level":"error"}"#));
    let (status, body) = support::http(admin, "PUT", "/log-level", "debug").await;
    assert_eq!((status, body.as_str()), (200, r#"{"log_level":"debug"}"#));
    let (_, body) = support::http(admin, "GET", "/log-level", "").await;
    assert_eq!(body, r#"{"log_level":"debug"}"#);
    let (status, body) = support::http(admin, "PUT", "/log-level", "loud").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a log level"), "{body}");
    let (status, _) = support::http(admin, "DELETE", "/log-level", "").await;
    assert_eq!(status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_admin_address_needs_admin_allow_remote() {
    let file = Path::new("remote.toml");
    let err = Config::parse("admin = \"0.0.0.0:9090\"\n", file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("remote.toml") && err.contains("admin"),
        "{err}"
    );
    assert!(err.contains("admin_allow_remote"), "{err}");
    // Allowed with a token (admin_token.rs covers the refusals).
    let token =
        std::env::temp_dir().join(format!("rpcgate-admin-config-{}.token", std::process::id()));
    std::fs::write(&token, "t").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let allowed = Config::parse(
        &format!(
            "admin = \"0.0.0.0:9090\"\nadmin_allow_remote = true\nadmin_token_file = \"{}\"\n",
            token.display()
        ),
        file,
    )
    .unwrap();
    assert!(allowed.admin_allow_remote);
    // A config built in code is checked when the gateway starts.
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: Some("0.0.0.0:0".parse().unwrap()),
        ..Config::default()
    };
    let locator = std::sync::Arc::new(rpcgate::locator::FixedLocator::new(
        &support::locator_config(""),
    ));
    let refused = rpcgate::gateway::RunningGateway::start(config, locator).await;
    let Err(err) = refused else {
        panic!("a remote admin address is refused");
    };
    let err = err.to_string();
    assert!(err.contains("admin_allow_remote"), "{err}");
}
