//! The typical traffic the codec benches and the alloc bench share.

#![allow(dead_code)] // each bench uses a subset

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpcgate::proto::http::{HttpRequest, ResponseMeta};
use rpcgate::proto::{Args, FrameCodec, Headers, Message, TraceContext};
use tokio_util::codec::Encoder;

/// POST with 10 headers and a 1 KiB body.
pub(crate) fn http_request() -> HttpRequest {
    let pairs = [
        ("Host", "api.example.com"),
        ("User-Agent", "curl/8.5.0"),
        ("Accept", "application/json"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Content-Type", "application/json"),
        ("Content-Length", "1024"),
        ("Authorization", "OAuth 0123456789abcdef0123456789abcdef"),
        ("X-Request-Id", "00000000000004d2"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("Cookie", "session=abcdef0123456789; theme=dark"),
    ];
    HttpRequest {
        method: Bytes::from_static(b"POST"),
        uri: Bytes::from_static(b"/api/v1/items?limit=10&offset=20"),
        version: Bytes::from_static(b"1.1"),
        headers: pairs
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::from_static(n.as_bytes()),
                    Bytes::from_static(v.as_bytes()),
                )
            })
            .collect(),
        body: Bytes::from(vec![b'{'; 1024]),
    }
}

/// The enqueue headers of §5.3: authorization, trace ids, request_timeout.
pub(crate) fn enqueue_headers() -> Headers {
    let mut headers = Headers::new();
    headers
        .insert("authorization", "OAuth 0123456789abcdef0123456789abcdef")
        .unwrap();
    headers.set_trace(TraceContext {
        trace_id: 0x4d2,
        span_id: 0x9e37_79b9_7f4a_7c15,
        parent_id: 0x4d2,
    });
    headers.set_request_timeout(Duration::from_secs(30));
    headers
}

/// enqueue + write(5-tuple) + close, as the gateway sends a request.
pub(crate) fn encode_request(
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    request: &HttpRequest,
    headers: &Headers,
) {
    let enqueue =
        Message::new(0, Args::Bytes(Bytes::from_static(b"http"))).with_headers(headers.clone());
    codec.encode((1, enqueue), buf).unwrap();
    codec
        .encode((1, Message::write(request.to_bytes())), buf)
        .unwrap();
    codec.encode((1, Message::close()), buf).unwrap();
}

/// The three frames of a typical request, encoded.
pub(crate) fn request_wire() -> Bytes {
    let mut buf = BytesMut::new();
    encode_request(
        &mut FrameCodec::default(),
        &mut buf,
        &http_request(),
        &enqueue_headers(),
    );
    buf.freeze()
}

/// `[200, [...4 headers]]`.
pub(crate) fn response_meta() -> ResponseMeta {
    let pairs = [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-cache"),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
    ];
    ResponseMeta {
        status: 200,
        headers: pairs
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::from_static(n.as_bytes()),
                    Bytes::from_static(v.as_bytes()),
                )
            })
            .collect(),
    }
}
