//! The baseline of the load harness (`benches/load.sh`): a plain hyper
//! server (HTTP/1.1 and h2c, hyper-util's auto builder, as the gateway
//! uses) answering every request with the 13-byte `Hello, World!`.
//!
//! `cargo run --release --example hello_server -- 127.0.0.1:18081`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark baseline: fail loudly

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let listener = TcpListener::bind(&addr).await.unwrap();
    println!(
        "hello server listening on {}",
        listener.local_addr().unwrap()
    );
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_request| async {
                let mut response =
                    hyper::Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
                response.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("text/plain"),
                );
                Ok::<_, Infallible>(response)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
