//! Mux benchmarks: 1, 64 and 1,024 concurrent request channels (enqueue +
//! 1 KiB write + close, then a 13-byte reply and close) over an in-memory
//! duplex to an in-process peer. Throughput is in requests.

#![allow(missing_docs)] // criterion's macros generate undocumented items
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed bench setup should abort loudly

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[path = "support/echo_peer.rs"]
mod echo_peer;

fn concurrent_channels(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.block_on(async { echo_peer::connect() });
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
                            .map(|_| {
                                tokio::spawn({
                                    let (handle, body) = (handle.clone(), body.clone());
                                    async move { echo_peer::request(&handle, body).await }
                                })
                            })
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
