//! Embedding rpcgate in another Rust server: build the gateway as a tower
//! `Service` and mount it in your own hyper server.
//!
//! To stay self-contained this example also starts a locator and the
//! `hello` and `echo` demo apps in-process, serves the gateway on an
//! ephemeral port, sends requests through it, and exits 0 when the answers
//! are right. Run it with `cargo run --example embed`.
//!
//! The embedded service serves the way the listeners do: the same
//! exchange (server-sent events and other push streams included), the
//! CORS and compression layers when configured, and the same metrics
//! (here read from the Prometheus recorder the example installs).
//!
//! The embedder tells the gateway each request's peer address (a
//! [`PeerAddr`] request extension): the gateway then applies the client
//! rules its own listeners apply. A client-sent `X-Client-Subject` never
//! reaches an app, and `X-Real-IP` is the peer's address unless the peer
//! is one of `request.trusted_proxies` (here 127.0.0.2, standing in for a
//! load balancer in front), whose forwarding headers are believed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // an example: fail loudly

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use rpcgate::app::demo;
use rpcgate::config::Config;
use rpcgate::gateway::GatewayBuilder;
use rpcgate::http::{Cidr, PeerAddr};
use rpcgate::locator::{LocatorConfig, RemoteLocator, RemoteLocatorConfig, RunningLocator};
use tokio::net::{TcpListener, TcpSocket};
use tower_service::Service;

#[tokio::main]
async fn main() {
    // The Cocaine side (in production: your cluster's locator and apps).
    let locator = RunningLocator::start(
        LocatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..LocatorConfig::default()
        },
        None,
    )
    .await
    .unwrap();
    let mut apps = Vec::new();
    for name in ["hello", "echo", "ticker"] {
        let app = demo::build(name, None)
            .unwrap()
            .bind("127.0.0.1:0".parse().unwrap(), vec![locator.addr])
            .await
            .unwrap();
        app.published().await;
        apps.push(app);
    }

    // The gateway as a Service, mounted in *your* hyper server.
    rpcgate::metrics::install_prometheus().unwrap();
    let mut config = Config::default();
    config.pool.size = 4;
    // Compressed when the client accepts it (as the listeners would).
    config.compression.enabled = true;
    config.compression.min_bytes = 16;
    // Your load balancer, whose X-Real-IP / X-Forwarded-For are believed.
    config.request.trusted_proxies = vec![Cidr::parse("127.0.0.2").unwrap()];
    let resolver = RemoteLocator::new(RemoteLocatorConfig {
        endpoints: vec![locator.addr],
        ..RemoteLocatorConfig::default()
    });
    let gateway = GatewayBuilder::new(config)
        .with_locator(Arc::new(resolver))
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_gateway = gateway.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let gateway = server_gateway.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                    // Who the request came from, for the client rules.
                    request.extensions_mut().insert(PeerAddr(peer));
                    let mut gateway = gateway.clone();
                    async move {
                        Ok::<_, Infallible>(
                            gateway.call(request).await.unwrap_or_else(|e| match e {}),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    // One request through it.
    let (status, body) = get(addr, "127.0.0.1", "/hello/http/").await;
    println!("{status} {}", String::from_utf8_lossy(&body));
    assert_eq!(status, 200);
    assert_eq!(&body[..], demo::HELLO);

    // What the `echo` app saw of forged client headers, from a client
    // (127.0.0.1) and from the trusted load balancer (127.0.0.2).
    for (what, from) in [("client", "127.0.0.1"), ("trusted proxy", "127.0.0.2")] {
        let (status, body) = get(addr, from, "/echo/http/").await;
        assert_eq!(status, 200);
        let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let seen = |name: &str| {
            echoed["headers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
                .map(|pair| pair[1].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let (real_ip, subject) = (seen("x-real-ip"), seen("x-client-subject"));
        println!("{what}: x-real-ip={real_ip} x-client-subject={subject}");
        assert!(subject.is_empty(), "a forged subject reached the app");
        let expected = if from == "127.0.0.2" { FORGED_IP } else { from };
        assert_eq!(real_ip, expected);
    }

    // A server-sent event stream through the embedded service: its first
    // event, as it comes (the stream goes on until the client leaves).
    let first = first_event(addr, "/ticker/http/?interval_ms=50").await;
    println!("sse: {first}");
    assert!(first.starts_with("id: "), "{first}");

    // Compressed by the configured layer.
    let (status, encoding, body) = get_gzip(addr, "/echo/http/").await;
    println!("compressed: {status} {encoding}");
    assert_eq!(encoding, "gzip");
    assert!(!body.is_empty());

    // Counted by the same observer as the listeners' requests.
    let metrics = rpcgate::metrics::render().unwrap();
    let hello = metrics
        .lines()
        .filter(|l| l.starts_with("rpcgate_requests_total{") && l.contains("service=\"hello\""))
        .count();
    println!(
        "metrics: hello counted {}",
        if hello > 0 { "yes" } else { "no" }
    );
    assert!(hello > 0, "{metrics}");

    gateway.shutdown().await;
    for app in apps {
        app.stop().await;
    }
    locator.shutdown().await;
}

/// The first server-sent event of `path` (its lines up to the blank one).
async fn first_event(addr: SocketAddr, path: &str) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "embedded")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    text.split("\n\n").next().unwrap().replace('\n', " ")
}

/// `GET path` accepting gzip: status, `Content-Encoding`, body.
async fn get_gzip(addr: SocketAddr, path: &str) -> (hyper::StatusCode, String, bytes::Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "embedded")
        .header("accept-encoding", "gzip")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let encoding = response
        .headers()
        .get("content-encoding")
        .map_or_else(String::new, |v| v.to_str().unwrap().to_owned());
    (
        status,
        encoding,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// The client address both requests claim in `X-Real-IP`.
const FORGED_IP: &str = "203.0.113.7";

/// `GET path` from the local address `from`, with a forged
/// `X-Client-Subject` and `X-Real-IP`: status and body.
async fn get(addr: SocketAddr, from: &str, path: &str) -> (hyper::StatusCode, bytes::Bytes) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "embedded")
        .header("x-client-subject", "CN=admin")
        .header("x-real-ip", FORGED_IP)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}
