//! The documented config files parse and validate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

use std::path::Path;

use rpcgate::locator::LocatorConfig;

#[test]
fn locator_example_parses_with_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/locator.toml");
    let config = LocatorConfig::load(&path).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:10053");
    assert_eq!(config.admin.unwrap().to_string(), "127.0.0.1:10054");
    assert_eq!(config.services["legacy-echo"].endpoints[0].port, 41234);
    assert_eq!(config.groups["canary"]["echo-v1"], 3);
    assert_eq!(config.groups["canary"]["echo-v2"], 1);
    // The commented-out uuid key is valid too.
    let text = std::fs::read_to_string(&path).unwrap();
    let uncommented = text.replace("# uuid = ", "uuid = ");
    let config = LocatorConfig::parse(&uncommented, &path).unwrap();
    assert!(config.uuid.is_some());
    // So is the commented-out [cluster] section.
    let uncommented = text
        .replace("# [cluster]", "[cluster]")
        .replace("# etcd = ", "etcd = ")
        .replace("# prefix = ", "prefix = ")
        .replace("# lease_ttl_ms = ", "lease_ttl_ms = ");
    let cluster = LocatorConfig::parse(&uncommented, &path)
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(
        cluster,
        rpcgate::locator::ClusterConfig::new(vec!["http://127.0.0.1:2379".into()])
    );
}

#[test]
fn cluster_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster");
    let locator = LocatorConfig::load(&dir.join("locator.toml")).unwrap();
    let cluster = locator.cluster.unwrap();
    assert_eq!(cluster.etcd.len(), 3);
    assert_eq!(cluster.prefix, "/rpcgate");
    assert_eq!(locator.groups["canary"]["echo-v1"], 3);
    let gateway = rpcgate::config::Config::load(&dir.join("gateway.toml")).unwrap();
    assert_eq!(gateway.locators.len(), 3);
}

#[test]
fn a_bad_file_names_the_file_and_key() {
    let err = LocatorConfig::parse(
        "[groups.g]\nv1 = \"heavy\"",
        Path::new("/etc/rpcgate/locator.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("/etc/rpcgate/locator.toml: "), "{err}");
    assert!(err.contains("v1") || err.contains("groups"), "{err}");
    let missing = LocatorConfig::load(Path::new("/nonexistent/locator.toml")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/locator.toml: ")
    );
}

#[test]
fn gateway_example_parses_with_every_key() {
    use rpcgate::config::Config;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rpcgate.toml");
    let config = Config::load(&path).unwrap();
    let defaults = Config::default();
    // The file shows the defaults, plus one service override and one route.
    assert_eq!(config.listen, defaults.listen);
    assert_eq!(config.admin, defaults.admin);
    assert_eq!(config.locators, defaults.locators);
    assert_eq!(config.resolve_timeout, defaults.resolve_timeout);
    assert_eq!(config.resolve_timeout, std::time::Duration::from_secs(2));
    let text = std::fs::read_to_string(&path).unwrap();
    let shorter = text.replace("resolve_timeout_ms = 2000", "resolve_timeout_ms = 250");
    assert_eq!(
        Config::parse(&shorter, &path).unwrap().resolve_timeout,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(config.request, defaults.request);
    assert_eq!(config.pool, defaults.pool);
    assert_eq!(config.retry, defaults.retry);
    assert_eq!(config.limits, defaults.limits);
    assert_eq!(config.shutdown_timeout, defaults.shutdown_timeout);
    assert_eq!(config.tracing, defaults.tracing, "OTLP export is off");
    assert_eq!(config.services["echo"].max_in_flight, Some(1000));
    assert_eq!(config.services["echo"].pool_size, Some(8));
    assert_eq!(config.routes[0].prefix.as_deref(), Some("/v2/"));
    assert!(config.routes[0].strip_prefix);
    assert_eq!(config.tls, None, "TLS is off unless configured");
    assert_eq!(config.listen_unix, None);
    let text = std::fs::read_to_string(&path).unwrap();
    let unix = Config::parse(&text.replace("# listen_unix = ", "listen_unix = "), &path).unwrap();
    assert_eq!(
        unix.listen_unix.as_deref(),
        Some(Path::new("/run/rpcgate/http.sock"))
    );
    // The commented-out [tls] section is valid too, with its defaults.
    let text = std::fs::read_to_string(&path).unwrap();
    let keys = [
        "[tls]",
        "[[tls.certificates]]",
        "listen =",
        "handshake_timeout_ms",
        "reload_poll_ms",
        "client_ca",
        "client_subject_header",
        "cert =",
        "key =",
        "names =",
    ];
    let after_tls = text.find("# [tls]").unwrap();
    let tls_on = format!(
        "{}{}",
        &text[..after_tls],
        text[after_tls..]
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.starts_with(k)) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
    let tls = Config::parse(&tls_on, &path).unwrap().tls.unwrap();
    let dir = path.parent().unwrap();
    assert_eq!(tls.listen.to_string(), "127.0.0.1:8443");
    assert_eq!(tls.certificates[0].cert, dir.join("example.pem"));
    assert_eq!(tls.certificates[0].names, ["example.com", "*.example.com"]);
    assert_eq!(tls.client_ca, Some(dir.join("client-ca.pem")));
    assert_eq!(tls.client_subject_header, "x-client-subject");
    assert_eq!(tls.handshake_timeout, std::time::Duration::from_secs(10));
}

#[test]
fn gateway_errors_name_the_file_and_key() {
    use rpcgate::config::Config;
    for (text, key) in [
        ("[pool]\nsize = 0", "pool.size"),
        ("[pool]\nsize = 300", "pool.size"),
        ("[pool]\njitter = 2.0", "pool.jitter"),
        ("[request]\ntimeout_ms = 0", "request.timeout_ms"),
        ("resolve_timeout_ms = 0", "resolve_timeout_ms"),
        ("resolve_timeout_ms = -5", "resolve_timeout_ms"),
        (
            "[request.forward_headers]\nauthorization = \"trace_id\"",
            "request.forward_headers.authorization",
        ),
        ("[[routes]]\nservice = \"x\"", "routes[0]"),
        ("[retry]\nattempts = 0", "retry.attempts"),
        (
            "[limits]\nclient_ipv6_prefix = 0",
            "limits.client_ipv6_prefix",
        ),
        (
            "[limits]\nclient_ipv6_prefix = 129",
            "limits.client_ipv6_prefix",
        ),
        ("[limits]\nmax_streams = 0", "limits.max_streams"),
        (
            "[limits]\nmax_streams_per_client = 0",
            "limits.max_streams_per_client",
        ),
        ("[routing]\nallow_encoded_slash = 1", "allow_encoded_slash"),
        (
            "[tracing]\notlp_endpoint = \"https://127.0.0.1:4318\"",
            "tracing.otlp_endpoint",
        ),
        (
            "[tracing]\notlp_endpoint = \"127.0.0.1:4318\"",
            "tracing.otlp_endpoint",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://collector/v1/traces\"",
            "tracing.otlp_endpoint",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://u:p@127.0.0.1:4318\"",
            "tracing.otlp_endpoint",
        ),
        ("[tracing]\notlp_queue = 0", "tracing.otlp_queue"),
        ("[tracing]\notlp_timeout_ms = 0", "tracing.otlp_timeout_ms"),
        ("listn = \"x\"", "listn"),
        (
            "[limits]\nmax_header_bytes = 100",
            "limits.max_header_bytes",
        ),
        ("[limits]\nmax_conections = 1", "max_conections"),
        (
            "[tls]\nlisten = \"127.0.0.1:1\"\ncertificates = []",
            "tls.certificates",
        ),
        (
            "[tls]\nlisten = \"nowhere\"\n[[tls.certificates]]\ncert = \"a\"\nkey = \"b\"",
            "tls.listen",
        ),
        (
            "[tls]\nlisten = \"127.0.0.1:1\"\n[[tls.certificates]]\ncert = \"a\"\nkey = \"b\"\nnames = [\"a*b\"]",
            "tls.certificates[0].names",
        ),
    ] {
        let err = Config::parse(text, Path::new("gw.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("gw.toml: "), "{err}");
        assert!(err.contains(key), "{text:?} → {err}");
    }
}

#[test]
fn check_config_exits_non_zero_with_one_line() {
    let bin = env!("CARGO_BIN_EXE_rpcgate");
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rpcgate.toml");
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("rpcgate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[pool]\nsize = 0\n").unwrap();
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("bad.toml") && stderr.contains("pool.size"),
        "{stderr}"
    );
}

#[test]
fn access_log_cors_and_compression_keys_parse_and_bad_combinations_name_their_key() {
    use rpcgate::config::{AccessLogFormat, Config};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rpcgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::load(&path).unwrap();
    let defaults = Config::default();
    assert_eq!(config.cors, defaults.cors);
    assert!(!config.cors.enabled());
    assert_eq!(config.compression, defaults.compression);
    assert!(!config.compression.enabled);
    assert_eq!(config.access_log_queue, 4096);
    // The commented-out keys are valid too.
    let on = text
        .replace("# max_age_secs = 600", "max_age_secs = 600")
        .replace("# access_log_file = ", "access_log_file = ");
    let on = Config::parse(&on, &path).unwrap();
    assert_eq!(on.cors.max_age, Some(std::time::Duration::from_secs(600)));
    assert_eq!(
        on.access_log_file.as_deref(),
        Some(Path::new("/var/log/rpcgate/access.log"))
    );
    // `access_log` takes a bool, as before, or a format.
    let inline = Path::new("t.toml");
    for (value, on, format) in [
        ("false", false, AccessLogFormat::Text),
        ("true", true, AccessLogFormat::Text),
        ("\"text\"", true, AccessLogFormat::Text),
        ("\"json\"", true, AccessLogFormat::Json),
    ] {
        let c = Config::parse(&format!("access_log = {value}\n"), inline).unwrap();
        assert_eq!((c.access_log, c.access_log_format), (on, format), "{value}");
    }
    for (text, key) in [
        ("access_log = \"xml\"\n", "access_log"),
        ("access_log_queue = 0\n", "access_log_queue"),
        (
            "[cors]\nallow_origins = [\"*\"]\nallow_credentials = true\n",
            "cors.allow_credentials",
        ),
        (
            "[cors]\nallow_origins = [\"https://a.example\"]\nallow_headers = [\"*\"]\nallow_credentials = true\n",
            "cors.allow_credentials",
        ),
        (
            "[cors]\nallow_origins = [\"*\", \"https://a.example\"]\n",
            "cors.allow_origins",
        ),
        (
            "[cors]\nallow_origins = [\"a.example\"]\n",
            "cors.allow_origins",
        ),
        ("[cors]\nallow_methods = [\"GE T\"]\n", "cors.allow_methods"),
        ("[cors]\nmax_age_secs = -1\n", "cors.max_age_secs"),
        (
            "[compression]\nmin_bytes = 70000\n",
            "compression.min_bytes",
        ),
        ("[compression]\nlevel = 3\n", "level"),
    ] {
        let err = Config::parse(text, inline).unwrap_err().to_string();
        assert!(
            err.contains(key) && err.contains("t.toml"),
            "{text:?} → {err}"
        );
    }
}
