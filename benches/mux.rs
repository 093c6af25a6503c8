//! Mux benchmarks: 1, 64 and 1,024 concurrent request channels (enqueue +
//! 1 KiB write + close, then a 13-byte reply and close) over an in-memory
//! duplex to an in-process peer. Throughput is in requests.

#![allow(missing_docs)] // criterion's macros generate undocumented items
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed bench setup should abort loudly

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rpcgate::mux::{self, Invocation, MuxConfig, MuxHandle};
use rpcgate::proto::{Args, Message};

#[path = "support/echo_peer.rs"]
mod echo_peer;

/// One request round trip on its own channel.
async fn request(handle: MuxHandle, body: Bytes) -> usize {
    let message = Message::new(0, Args::Bytes(Bytes::from_static(b"http")));
    let channel = handle.open(Invocation::enqueue(message)).await.unwrap();
    let (mut tx, mut rx) = channel.split();
    tx.write(body).await.unwrap();
    tx.close().await.unwrap();
    let mut frames = 0;
    while let Some(frame) = rx.recv().await {
        frame.unwrap();
        frames += 1;
    }
    frames
}

fn concurrent_channels(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 20);
        tokio::spawn(echo_peer::serve(server));
        let (handle, connection) = mux::from_io(client, MuxConfig::default());
        tokio::spawn(connection.run());
        handle
    });
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut group = c.benchmark_group("mux");
    for concurrency in [1usize, 64, 1024] {
        group.throughput(Throughput::Elements(concurrency as u64));
        group.bench_with_input(
            BenchmarkId::new("channels", concurrency),
            &concurrency,
            |b, &n| {
                b.to_async(&runtime).iter(|| {
                    let handle = handle.clone();
                    let body = body.clone();
                    async move {
                        let tasks: Vec<_> = (0..n)
                            .map(|_| tokio::spawn(request(handle.clone(), body.clone())))
                            .collect();
                        let mut frames = 0;
                        for task in tasks {
                            frames += task.await.unwrap();
                        }
                        black_box(frames)
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, concurrent_channels);
criterion_main!(benches);
