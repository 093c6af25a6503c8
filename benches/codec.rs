//! Codec benchmarks: a typical HTTP request (enqueue + 5-tuple with 10
//! headers and a 1 KiB body + close), a response meta, and body chunks of
//! 1 KiB and 64 KiB; decoding is fed in 64 B, 1500 B and 64 KiB pieces.
//! Allocations per operation are measured by `benches/alloc.rs`.

#![allow(missing_docs)] // criterion's macros generate undocumented items
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed bench setup should abort loudly

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rpcgate::proto::http::{HttpRequest, ResponseMeta};
use rpcgate::proto::{FrameCodec, Message, StreamEvent};
use tokio_util::codec::{Decoder, Encoder};

#[path = "support/workload.rs"]
mod workload;

fn encode_request(c: &mut Criterion) {
    let request = workload::http_request();
    let headers = workload::enqueue_headers();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("http_request", |b| {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            workload::encode_request(&mut codec, &mut buf, black_box(&request), &headers);
            black_box(buf.len())
        });
    });
    let meta = workload::response_meta();
    group.bench_function("response_meta", |b| {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            codec
                .encode((1, Message::write(black_box(&meta).to_bytes())), &mut buf)
                .unwrap();
            black_box(buf.len())
        });
    });
    for size in [1024usize, 64 << 10] {
        let chunk = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("body_chunk", size), &chunk, |b, chunk| {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::with_capacity(size + 64);
            b.iter(|| {
                buf.clear();
                codec
                    .encode((1, Message::write(chunk.clone())), &mut buf)
                    .unwrap();
                black_box(buf.len())
            });
        });
    }
    group.finish();
}

/// Decodes `wire` fed in `piece`-sized reads into one growing buffer, as a
/// socket would deliver it; returns the number of frames.
fn decode_in_pieces(wire: &[u8], piece: usize) -> usize {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut frames = 0;
    for chunk in wire.chunks(piece) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            black_box(&frame);
            frames += 1;
        }
    }
    frames
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    let request_wire = workload::request_wire();
    let mut inputs = vec![("http_request", request_wire)];
    let meta = workload::response_meta().to_bytes();
    let mut meta_wire = BytesMut::new();
    FrameCodec::default()
        .encode((1, Message::write(meta)), &mut meta_wire)
        .unwrap();
    inputs.push(("response_meta", meta_wire.freeze()));
    for size in [1024usize, 64 << 10] {
        let mut wire = BytesMut::new();
        FrameCodec::default()
            .encode((1, Message::write(vec![b'x'; size])), &mut wire)
            .unwrap();
        inputs.push((
            if size == 1024 { "body_1k" } else { "body_64k" },
            wire.freeze(),
        ));
    }
    for (name, wire) in &inputs {
        group.throughput(Throughput::Bytes(wire.len() as u64));
        // Baseline: the same reads into the same buffer, without decoding.
        group.bench_with_input(
            BenchmarkId::new(*name, "copy_only_1500B"),
            wire,
            |b, wire| {
                b.iter(|| {
                    let mut buf = BytesMut::with_capacity(64 << 10);
                    for chunk in black_box(wire).chunks(1500) {
                        buf.extend_from_slice(chunk);
                    }
                    black_box(buf.len())
                })
            },
        );
        for piece in [64usize, 1500, 64 << 10] {
            group.bench_with_input(
                BenchmarkId::new(*name, format!("{piece}B_pieces")),
                wire,
                |b, wire| b.iter(|| decode_in_pieces(black_box(wire), piece)),
            );
        }
    }
    // Typed views on top of a decoded frame: the meta and the 5-tuple.
    let meta_frame = FrameCodec::default()
        .decode(&mut BytesMut::from(&inputs[1].1[..]))
        .unwrap()
        .unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("response_meta_typed", |b| {
        b.iter(|| {
            let StreamEvent::Write(chunk) = black_box(&meta_frame).stream_event().unwrap() else {
                unreachable!()
            };
            black_box(ResponseMeta::decode(&chunk).unwrap())
        });
    });
    let request_bytes = workload::http_request().to_bytes();
    group.bench_function("http_request_typed", |b| {
        b.iter(|| black_box(HttpRequest::decode(black_box(&request_bytes)).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, encode_request, decode);
criterion_main!(benches);
