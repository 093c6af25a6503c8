//! Property tests for `proto`: encode → decode round-trips for every message
//! type, a valid stream cut at arbitrary points decodes to the same frames,
//! and arbitrary bytes never panic (through the fuzz targets' functions).

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use rpcgate::fuzzing;
use rpcgate::proto::http::{HttpRequest, ResponseMeta};
use rpcgate::proto::locator::{
    ClusterReply, Endpoint, PublishRequest, RefreshRequest, ResolveReply, ResolveRequest,
    RoutingRequest, RoutingUpdate,
};
use rpcgate::proto::msgpack::{Reader, Value};
use rpcgate::proto::{
    Args, ErrorCode, Frame, FrameCodec, Graph, Headers, Message, RawArgs, RemoteError, TraceContext,
};
use tokio_util::codec::{Decoder, Encoder};

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Lengths around every msgpack size boundary.
fn sized_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        bytes(40),
        (0usize..4).prop_flat_map(|i| {
            let len = [31usize, 32, 255, 256][i];
            vec(any::<u8>(), len..=len + 1).prop_map(Bytes::from)
        }),
        (65_530usize..65_540).prop_map(|len| Bytes::from(vec![7u8; len])),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_.-]{0,40}"
}

fn remote_error() -> impl Strategy<Value = RemoteError> {
    (any::<u64>(), any::<u64>(), proptest::option::of(bytes(80))).prop_map(|(c, n, m)| {
        RemoteError {
            code: ErrorCode::new(c, n),
            message: m,
        }
    })
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Int(i.into())),
        any::<u64>().prop_map(|u| Value::Int(u.into())),
        (-1e9f64..1e9).prop_map(Value::Float),
        bytes(40).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
        ]
    })
}

fn args() -> impl Strategy<Value = Args> {
    prop_oneof![
        Just(Args::Empty),
        sized_bytes().prop_map(Args::Bytes),
        remote_error().prop_map(Args::Error),
        vec(value(), 0..5).prop_map(|items| {
            let mut buf = BytesMut::new();
            Value::Array(items).encode(&mut buf);
            Args::Raw(RawArgs::new(buf.freeze()).unwrap())
        }),
    ]
}

fn headers() -> impl Strategy<Value = Headers> {
    (
        vec(("[a-z-]{1,20}", bytes(300)), 0..6),
        proptest::option::of(any::<(u64, u64, u64)>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0u64..u64::MAX / 2),
    )
        .prop_map(|(plain, trace, bit, timeout)| {
            let mut h = Headers::new();
            for (n, v) in plain {
                h.insert(n, v).unwrap();
            }
            if let Some((t, s, p)) = trace {
                h.set_trace(TraceContext {
                    trace_id: t,
                    span_id: s,
                    parent_id: p,
                });
            }
            if let Some(bit) = bit {
                h.set_trace_bit(bit);
            }
            if let Some(ms) = timeout {
                h.set_request_timeout(std::time::Duration::from_millis(ms));
            }
            h
        })
}

fn message() -> impl Strategy<Value = (u64, Message)> {
    (any::<u64>(), any::<u64>(), args(), headers())
        .prop_map(|(channel, ty, args, headers)| (channel, Message { ty, args, headers }))
}

fn encode(frames: &[(u64, Message)]) -> BytesMut {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for (channel, message) in frames {
        codec.encode((*channel, message.clone()), &mut buf).unwrap();
    }
    buf
}

fn expected(channel: u64, m: &Message) -> Frame {
    Frame {
        channel,
        ty: m.ty,
        args: m.args.to_bytes(),
        headers: m.headers.clone(),
    }
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| Endpoint::from(std::net::SocketAddr::from((ip, port))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip((channel, message) in message()) {
        let mut buf = encode(&[(channel, message.clone())]);
        prop_assert_eq!(buf.len(), message.encoded_len(channel));
        let frame = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(frame, expected(channel, &message));
    }

    #[test]
    fn a_stream_cut_anywhere_decodes_the_same(
        frames in vec(message(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let wire = encode(&frames).freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for w in points.windows(2) {
            buf.extend_from_slice(&wire[w[0]..w[1]]);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                got.push(frame);
            }
        }
        let want: Vec<_> = frames.iter().map(|(c, m)| expected(*c, m)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn http_requests_round_trip(
        method in bytes(10), uri in sized_bytes(), version in prop_oneof![Just("1.1"), Just("1.0")],
        headers in vec((bytes(40), sized_bytes()), 0..12), body in sized_bytes(),
    ) {
        let request = HttpRequest { method, uri, version: version.into(), headers, body };
        let encoded = request.to_bytes();
        prop_assert_eq!(encoded.len(), request.encoded_len());
        prop_assert_eq!(HttpRequest::decode(&encoded).unwrap(), request);
    }

    #[test]
    fn response_metas_round_trip(status in any::<u16>(), headers in vec((bytes(40), bytes(300)), 0..12)) {
        let meta = ResponseMeta { status, headers };
        prop_assert_eq!(ResponseMeta::decode(&meta.to_bytes()).unwrap(), meta);
    }

    #[test]
    fn errors_round_trip(error in remote_error()) {
        let args = Args::Error(error.clone()).to_bytes();
        prop_assert_eq!(RemoteError::decode_args(&args).unwrap(), error);
    }

    #[test]
    fn values_round_trip(v in value()) {
        let mut buf = BytesMut::new();
        v.encode(&mut buf);
        let buf = buf.freeze();
        prop_assert_eq!(Reader::new(&buf).read_value().unwrap(), v);
    }

    #[test]
    fn locator_messages_round_trip(
        service in name(), seed in proptest::option::of(bytes(20).prop_filter("non-empty", |b| !b.is_empty())),
        endpoints in vec(endpoint(), 0..4), version in any::<u64>(),
        rings in vec((name(), vec((any::<u32>(), name()), 0..20)), 0..4),
        groups in vec(name(), 0..5),
    ) {
        let resolve = ResolveRequest { name: service.clone(), seed };
        prop_assert_eq!(ResolveRequest::decode_args(&resolve.to_args().to_bytes()).unwrap(), resolve);
        let reply = ResolveReply { endpoints: endpoints.clone(), version, graph: Graph::app() };
        prop_assert_eq!(ResolveReply::decode_args(&reply.to_args().to_bytes()).unwrap(), reply);
        let publish = PublishRequest { name: service.clone(), endpoints: endpoints.clone(), meta: Some((version, Graph::locator())) };
        prop_assert_eq!(PublishRequest::decode_args(&publish.to_args().to_bytes()).unwrap(), publish);
        let routing = RoutingRequest { router_id: Bytes::from(service.clone()) };
        prop_assert_eq!(RoutingRequest::decode_args(&routing.to_args().to_bytes()).unwrap(), routing);
        let update = RoutingUpdate { groups: rings.into_iter().collect::<BTreeMap<_, _>>() };
        prop_assert_eq!(RoutingUpdate::decode_args(&update.to_args().to_bytes()).unwrap(), update);
        let refresh = RefreshRequest { groups };
        prop_assert_eq!(RefreshRequest::decode_args(&refresh.to_args().to_bytes()).unwrap(), refresh);
        let cluster = ClusterReply { nodes: endpoints.into_iter().map(|e| (service.clone() + &e.port.to_string(), e)).collect() };
        prop_assert_eq!(ClusterReply::decode_args(&cluster.to_args().to_bytes()).unwrap(), cluster);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..512)) {
        fuzzing::frame_decode(&data);
        fuzzing::split_stream(&data);
        fuzzing::header_table(&data);
        fuzzing::mux_ops(&data);
    }

    #[test]
    fn valid_streams_survive_the_split_target(frames in vec(message(), 1..4), seed in any::<u8>()) {
        let mut data = vec![seed];
        data.extend_from_slice(&encode(&frames));
        fuzzing::split_stream(&data);
        fuzzing::frame_decode(&data[1..]);
    }
}
