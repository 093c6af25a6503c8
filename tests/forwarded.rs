//! Behind a proxy: forwarding headers are believed only from trusted
//! peers (`request.trusted_proxies`), and the client address that results
//! reaches the app in `X-Real-IP`, whatever the client put there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse};
use rpcgate::config::Config;
use rpcgate::http::Cidr;

/// An app answering with every `X-Real-IP` it received.
fn whoami() -> AppBuilder {
    AppBuilder::new("whoami").on_http("http", |req: HttpRequest, res: HttpResponse| async move {
        let seen: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-real-ip"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        res.respond(200, vec![], seen.join(",")).await.ok();
        Ok(())
    })
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
