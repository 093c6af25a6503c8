//! Behind a proxy: forwarding headers are believed only from trusted
//! peers (`request.trusted_proxies`), and the client address that results
//! reaches the app in `X-Real-IP`, whatever the client put there. The
//! unix-socket listener (for `proxy_pass http://unix:...`) serves the same,
//! its peers counting as 127.0.0.1. `X-Client-Subject`, set only from a
//! verified client certificate, never passes from a client without TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use rpcgate::app::AppBuilder;
use rpcgate::config::Config;
use rpcgate::http::Cidr;

/// An app answering with every `X-Real-IP` it received.
fn whoami() -> AppBuilder {
    support::header_echo("whoami", "x-real-ip")
}

async fn seen(config: Config, headers: &[(&str, &str)]) -> String {
    let c = support::cluster("", vec![whoami()], config).await;
    let got = support::send(c.gateway.addr, "GET", "/whoami/http/", headers, "").await;
    assert_eq!(got.status, 200);
    String::from_utf8(got.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let mut untrusted = Config::default();
    untrusted.pool.size = 1;
    let mut trusted = untrusted.clone();
    trusted.request.trusted_proxies = vec![Cidr::parse("127.0.0.1/32").unwrap()];
    let claims: &[(&str, &str)] = &[
        ("x-forwarded-for", "203.0.113.7"),
        ("x-real-ip", "198.51.100.99"),
    ];
    // Nobody trusted: the peer's own address, claims replaced.
    assert_eq!(seen(untrusted.clone(), claims).await, "127.0.0.1");
    assert_eq!(seen(untrusted, &[]).await, "127.0.0.1");
    // The peer is a trusted proxy: the client it reports.
    assert_eq!(seen(trusted.clone(), claims).await, "203.0.113.7");
    assert_eq!(
        seen(trusted, &[("forwarded", "for=192.0.2.60;proto=http")]).await,
        "192.0.2.60"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_listener_serves_with_its_peer_as_127_0_0_1() {
    let dir = std::env::temp_dir().join(format!("rpcgate-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("http.sock");
    // A stale socket file from an earlier run does not stop the bind.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let mut config = Config::default();
    config.pool.size = 1;
    config.listen_unix = Some(path.clone());
    config.request.trusted_proxies = vec![Cidr::parse("127.0.0.1").unwrap()];
    let _c = support::cluster("", vec![whoami()], config).await;
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let mut sender = support::h1_over(stream).await;
    let response = sender
        .send_request(support::request(
            "GET",
            "/whoami/http/",
            &[("x-forwarded-for", "203.0.113.5")],
            "",
        ))
        .await
        .unwrap();
    let got = support::got(response).await;
    assert_eq!(got.status, 200);
    // The local proxy (trusted as 127.0.0.1) reports the client.
    assert_eq!(&got.body[..], b"203.0.113.5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sent_subject_never_reaches_the_app_without_tls() {
    let mut config = Config::default();
    config.pool.size = 1;
    assert!(config.tls.is_none());
    let c = support::cluster(
        "",
        vec![support::header_echo("subject", "x-client-subject")],
        config,
    )
    .await;
    for name in ["x-client-subject", "X-Client-Subject"] {
        let headers = [(name, "CN=admin"), (name, "CN=root")];
        let got = support::send(c.gateway.addr, "GET", "/subject/http/", &headers, "").await;
        assert_eq!(got.status, 200);
        assert_eq!(&got.body[..], b"", "{name} reached the app");
    }
    // HTTP/2 the same.
    let mut sender = support::h2(c.gateway.addr).await;
    let response = sender
        .send_request(support::request(
            "GET",
            "/subject/http/",
            &[("x-client-subject", "CN=admin")],
            "",
        ))
        .await
        .unwrap();
    let got = support::got(response).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"");
}
