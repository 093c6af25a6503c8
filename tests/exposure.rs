//! What a client may call, end to end: configured routes come first (the
//! shipped example matches beside the path rule); `routing.expose` answers
//! an unlisted service exactly as an unknown one, by path and by header; a
//! service whose graph is not an app's is never sent a request; HTTP/2
//! requests reach the app with `Host`; an encoded `/` or `\\` in the path
//! is refused (400 `bad_path`) unless `routing.allow_encoded_slash`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::path::Path;

use rpcgate::app::demo;
use rpcgate::config::Config;
use rpcgate::proto::Graph;

fn shipped_config() -> Config {
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rpcgate.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_route_matches_beside_the_path_rule() {
    let shipped = shipped_config();
    let config = Config {
        routes: shipped.routes.clone(),
        routing: shipped.routing.clone(),
        ..Config::default()
    };
    let c = support::cluster("", vec![demo::build("echo", None).unwrap()], config).await;
    let mut sender = support::h1(c.gateway.addr).await;
    let request = hyper::Request::builder()
        .uri("/v2/users")
        .header("host", "api.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = support::got(sender.send_request(request).await.unwrap()).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.json()["uri"], "/users");
    // The path rule still serves everything else.
    let got = support::send(c.gateway.addr, "GET", "/echo/http/a?b=1", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["uri"], "/a?b=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexposed_service_is_answered_as_unknown() {
    let mut config = Config::default();
    config.routing.expose = Some(["echo".to_owned()].into());
    let apps = vec![
        demo::build("echo", None).unwrap(),
        demo::build("hello", None).unwrap(),
    ];
    let c = support::cluster("", apps, config).await;
    let addr = c.gateway.addr;
    assert_eq!(
        support::send(addr, "GET", "/echo/http/", &[], "")
            .await
            .status,
        200
    );
    // `hello` runs, but is not exposed: by path and by header it is
    // answered exactly as a name nobody publishes.
    let unknown = support::send(addr, "GET", "/nobody/http/", &[], "").await;
    let hidden = support::send(addr, "GET", "/hello/http/", &[], "").await;
    let by_header = support::send(
        addr,
        "GET",
        "/x",
        &[("x-cocaine-service", "hello"), ("x-cocaine-event", "http")],
        "",
    )
    .await;
    let strip = |got: &support::Got| {
        let mut json = got.json();
        json["error"]["request_id"] = serde_json::Value::Null;
        let message = json["error"]["message"].as_str().unwrap().to_owned();
        json["error"]["message"] = serde_json::Value::Null;
        (got.status, json, message)
    };
    let (status, body, message) = strip(&unknown);
    assert_eq!(status, 503);
    assert_eq!(body["error"]["kind"], "service_not_found");
    for got in [&hidden, &by_header] {
        let (s, b, m) = strip(got);
        assert_eq!((s, &b), (status, &body));
        assert_eq!(m, message.replace("nobody", "hello"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_is_not_an_app_is_never_sent_a_request() {
    let c = support::cluster("", Vec::new(), Config::default()).await;
    // A service with the locator's graph, at an address that counts
    // connections: a plain std listener, checked without blocking.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let _published = support::publish_graph(c.locator.addr, "notapp", port, Graph::locator()).await;
    for _ in 0..3 {
        let got = support::send(c.gateway.addr, "GET", "/notapp/http/", &[], "").await;
        assert_eq!(got.status, 404, "{:?}", got.body);
        let json = got.json();
        assert_eq!(json["error"]["kind"], "not_an_app", "{json}");
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the gateway connected to a service that is not an app: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_reach_the_app_with_host() {
    let c = support::cluster(
        "",
        vec![demo::build("echo", None).unwrap()],
        Config::default(),
    )
    .await;
    let mut sender = support::h2(c.gateway.addr).await;
    let request = hyper::Request::builder()
        .method("GET")
        .uri("http://api.example.com:8080/echo/http/")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = support::got(sender.send_request(request).await.unwrap()).await;
    assert_eq!(got.status, 200);
    let json = got.json();
    let hosts: Vec<_> = json["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case("host"))
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(hosts, ["api.example.com:8080"], "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_slash_is_refused_by_every_rule_unless_allowed() {
    let route = rpcgate::config::RouteConfig {
        host: None,
        prefix: Some("/files/".into()),
        service: "echo".into(),
        event: "http".into(),
        strip_prefix: true,
    };
    let config = Config {
        routes: vec![route],
        ..Config::default()
    };
    let c = support::cluster("", vec![demo::build("echo", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    let by_header = [("x-cocaine-service", "echo"), ("x-cocaine-event", "http")];
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("/echo/http/a%2fb", &[]),
        ("/echo/http/..%5C..%5Cwin.ini", &[]),
        ("/x%2Fy", &by_header),
        ("/y%5cz", &by_header),
        ("/files/a%2F..%2F..%2Fsecret", &[]),
    ];
    for (path, headers) in cases {
        let got = support::send(addr, "GET", path, headers, "").await;
        assert_eq!(got.status, 400, "{path}: {:?}", got.body);
        assert_eq!(got.json()["error"]["kind"], "bad_path", "{path}");
    }
    // In the query, or not a slash: passed on.
    let got = support::send(addr, "GET", "/files/a%20b?next=%2F", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["uri"], "/a%20b?next=%2F");

    // Allowed: passed to the app as sent, by every rule.
    let mut config = c.gateway.config().as_ref().clone();
    config.routing.allow_encoded_slash = true;
    assert_eq!(c.gateway.reload(config), Ok(vec![]));
    for (path, headers, uri) in [
        ("/echo/http/a%2fb", &[][..], "/a%2fb"),
        ("/x%2Fy", &by_header[..], "/x%2Fy"),
        ("/files/a%2Fb", &[][..], "/a%2Fb"),
    ] {
        let got = support::send(addr, "GET", path, headers, "").await;
        assert_eq!(got.status, 200, "{path}: {:?}", got.body);
        assert_eq!(got.json()["uri"], uri, "{path}");
    }
}
