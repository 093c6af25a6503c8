//! Bytes and allocations per operation for the codec and mux workloads,
//! counted by a global allocator wrapper (stats_alloc). Prints a table;
//! run with `cargo bench --bench alloc`.

#![allow(missing_docs)] // a bench binary
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed bench setup should abort loudly

use std::alloc::System;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use rpcgate::proto::http::{HttpRequest, ResponseMeta};
use rpcgate::proto::{FrameCodec, Message, StreamEvent};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio_util::codec::{Decoder, Encoder};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[path = "support/workload.rs"]
mod workload;

#[path = "support/echo_peer.rs"]
mod echo_peer;

#[path = "support/hello.rs"]
mod hello;

const OPS: usize = 1000;

/// Runs `op` OPS times and prints bytes and allocations per op.
fn measure(name: &str, mut op: impl FnMut()) {
    op(); // warm up lazily grown buffers
    let region = Region::new(GLOBAL);
    for _ in 0..OPS {
        op();
    }
    let stats = region.change();
    println!(
        "{name:<40} {:>10.1} B/op {:>8.2} allocs/op",
        stats.bytes_allocated as f64 / OPS as f64,
        stats.allocations as f64 / OPS as f64
    );
}

/// Decodes OPS back-to-back copies of `frame` from one buffer.
fn measure_decode(name: &str, wire: &Bytes, check: impl Fn(&rpcgate::proto::Frame)) {
    let mut buf = BytesMut::with_capacity(wire.len() * (OPS + 1));
    for _ in 0..=OPS {
        buf.extend_from_slice(wire);
    }
    let mut codec = FrameCodec::default();
    black_box(codec.decode(&mut buf).unwrap());
    let region = Region::new(GLOBAL);
    for _ in 0..OPS {
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        check(&frame);
        black_box(frame);
    }
    let stats = region.change();
    println!(
        "{name:<40} {:>10.1} B/op {:>8.2} allocs/op",
        stats.bytes_allocated as f64 / OPS as f64,
        stats.allocations as f64 / OPS as f64
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probes
    }
    println!("{:<40} {:>15} {:>18}", "operation", "bytes", "allocations");
    let request = workload::http_request();
    let headers = workload::enqueue_headers();
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(8192);
    measure("encode http request (3 frames)", || {
        buf.clear();
        workload::encode_request(&mut codec, &mut buf, &request, &headers);
    });
    let meta = workload::response_meta();
    measure("encode response meta", || {
        buf.clear();
        codec
            .encode((1, Message::write(meta.to_bytes())), &mut buf)
            .unwrap();
    });
    for size in [1024usize, 64 << 10] {
        let chunk = Bytes::from(vec![b'x'; size]);
        let mut out = BytesMut::with_capacity(size + 64);
        measure(&format!("encode body chunk {size} B"), || {
            out.clear();
            codec
                .encode((1, Message::write(chunk.clone())), &mut out)
                .unwrap();
        });
    }

    let wire = workload::request_wire();
    let mut pieces = BytesMut::new();
    measure("decode http request (3 frames, 1500 B reads)", || {
        let mut codec = FrameCodec::default();
        pieces.clear();
        for piece in wire.chunks(1500) {
            pieces.extend_from_slice(piece);
            while let Some(frame) = codec.decode(&mut pieces).unwrap() {
                black_box(frame);
            }
        }
    });
    let request_bytes = request.to_bytes();
    measure("decode 5-tuple (typed)", || {
        black_box(HttpRequest::decode(&request_bytes).unwrap());
    });
    let mut meta_wire = BytesMut::new();
    codec
        .encode((1, Message::write(meta.to_bytes())), &mut meta_wire)
        .unwrap();
    measure_decode("decode response meta frame", &meta_wire.freeze(), |f| {
        let StreamEvent::Write(chunk) = f.stream_event().unwrap() else {
            unreachable!()
        };
        black_box(ResponseMeta::decode(&chunk).unwrap());
    });
    for size in [1024usize, 64 << 10] {
        let mut wire = BytesMut::new();
        codec
            .encode((1, Message::write(vec![b'x'; size])), &mut wire)
            .unwrap();
        measure_decode(
            &format!("decode body chunk {size} B"),
            &wire.freeze(),
            |f| {
                // Zero-copy: the chunk lies inside the frame's own buffer.
                let chunk = f.chunk().unwrap();
                let start = f.args.as_ptr() as usize;
                assert!(
                    (chunk.as_ptr() as usize) >= start
                        && (chunk.as_ptr() as usize) < start + f.args.len()
                );
            },
        );
    }

    // A full mux round trip (client side and the in-process peer together).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.block_on(async { echo_peer::connect() });
    let body = Bytes::from(vec![b'x'; 1024]);
    measure("mux request round trip (client + peer)", || {
        black_box(runtime.block_on(echo_peer::request(&handle, body.clone())));
    });
    drop(handle);
    drop(runtime);
    end_to_end();
}

/// A whole HTTP request end to end, counted over every thread of the
/// process: the standalone gateway with its in-process `hello` app, beside
/// a plain hyper server answering the same 13 bytes. One keep-alive
/// client connection sends the requests one after another; its own
/// reading allocates nothing, so the two rows compare the servers.
fn end_to_end() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = rpcgate::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            ..rpcgate::config::Config::default()
        };
        let standalone =
            rpcgate::gateway::Standalone::start(config, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
        let mut gateway = KeepAlive::connect(standalone.gateway.addr, "/hello/http/").await;
        let mut hyper = KeepAlive::connect(hello::plain_hyper().await, "/").await;
        for (name, client) in [
            ("http request end to end: rpcgate + hello", &mut gateway),
            ("http request end to end: plain hyper", &mut hyper),
        ] {
            for _ in 0..OPS {
                client.request().await; // warm up pools, buffers, metrics handles
            }
            let region = Region::new(GLOBAL);
            for _ in 0..OPS {
                client.request().await;
            }
            let stats = region.change();
            println!(
                "{name:<40} {:>10.1} B/op {:>8.2} allocs/op",
                stats.bytes_allocated as f64 / OPS as f64,
                stats.allocations as f64 / OPS as f64
            );
        }
        standalone.shutdown().await;
    });
}

/// A raw HTTP/1.1 keep-alive client reusing its buffers.
struct KeepAlive {
    stream: tokio::net::TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl KeepAlive {
    async fn connect(addr: std::net::SocketAddr, path: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            request: format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes(),
            buf: vec![0; 4096],
        }
    }

    /// One request; returns once the 13-byte body is in.
    async fn request(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(&self.request).await.unwrap();
        let mut len = 0;
        while !self.buf[..len].ends_with(b"Hello, World!") {
            let read = self.stream.read(&mut self.buf[len..]).await.unwrap();
            assert!(read > 0, "closed");
            len += read;
        }
        assert!(self.buf.starts_with(b"HTTP/1.1 200"));
    }
}
