//! Embedding rpcgate in another Rust server: build the gateway as a tower
//! `Service` and mount it in your own hyper server.
//!
//! To stay self-contained this example also starts a locator and the
//! `hello` demo app in-process, serves the gateway on an ephemeral port,
//! sends one request through it, and exits 0 when the answer is right.
//! Run it with `cargo run --example embed`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // an example: fail loudly

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use rpcgate::app::demo;
use rpcgate::config::Config;
use rpcgate::gateway::GatewayBuilder;
use rpcgate::locator::{LocatorConfig, RemoteLocator, RemoteLocatorConfig, RunningLocator};
use tokio::net::{TcpListener, TcpStream};
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
    let app = demo::build("hello", None)
        .unwrap()
        .bind("127.0.0.1:0".parse().unwrap(), vec![locator.addr])
        .await
        .unwrap();
    app.published().await;

    // The gateway as a Service, mounted in *your* hyper server.
    let mut config = Config::default();
    config.pool.size = 4;
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
            let (stream, _) = listener.accept().await.unwrap();
            let gateway = server_gateway.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
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
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/hello/http/")
        .header("host", "embedded")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    println!("{status} {}", String::from_utf8_lossy(&body));
    assert_eq!(status, 200);
    assert_eq!(&body[..], demo::HELLO);
    gateway.shutdown().await;
    app.stop().await;
    locator.shutdown().await;
}
