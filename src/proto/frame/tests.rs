//! Golden tests: every framing and header byte example of PROTOCOL.md §1.7
//! and §2.3, encoded and decoded.

use super::*;
use crate::proto::error::ErrorCode;
use crate::proto::header::TraceContext;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn encode(channel: u64, message: Message) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode((channel, message), &mut buf)
        .unwrap();
    buf.to_vec()
}

fn decode_one(bytes: &[u8]) -> Frame {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(bytes);
    let frame = codec.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "one frame, nothing left over");
    frame
}

#[test]
fn golden_resolve_echo() {
    let bytes = hex("94 01 00 91 a4 65 63 68 6f 90");
    assert_eq!(
        encode(1, Message::new(0, Args::Bytes("echo".into()))),
        bytes
    );
    let frame = decode_one(&bytes);
    assert_eq!((frame.channel, frame.ty), (1, 0));
    assert_eq!(frame.chunk().unwrap(), "echo");
    assert!(frame.headers.is_empty());
}

#[test]
fn golden_close() {
    let bytes = hex("94 01 02 90 90");
    assert_eq!(encode(1, Message::close()), bytes);
    assert_eq!(decode_one(&bytes).stream_event(), Ok(StreamEvent::Close));
}

#[test]
fn golden_queue_is_full() {
    let bytes = hex("94 01 01 92 92 cd 52 ff 01 ad 71 75 65 75 65 20 69 73 20 66 75 6c 6c 90");
    let error = RemoteError::new(ErrorCode::QUEUE_IS_FULL, "queue is full");
    assert_eq!(encode(1, Message::error(1, error.clone())), bytes);
    assert_eq!(
        decode_one(&bytes).stream_event(),
        Ok(StreamEvent::Error(error))
    );
}

#[test]
fn golden_service_not_available() {
    let bytes = hex(
        "94 01 01 92 92 0a 01 b8 73 65 72 76 69 63 65 20 69 73 20 6e 6f 74 20 61 76 61 69 6c 61 62 6c 65 90",
    );
    let error = RemoteError::new(ErrorCode::SERVICE_NOT_AVAILABLE, "service is not available");
    assert_eq!(encode(1, Message::error(1, error.clone())), bytes);
    let frame = decode_one(&bytes);
    assert_eq!(
        frame.primitive_event(),
        Ok(PrimitiveEvent::Error(error.clone()))
    );
    assert_eq!(error.to_string(), "[1]: service is not available");
}

fn trace() -> TraceContext {
    TraceContext {
        trace_id: 0x0123_4567_89ab_cdef,
        span_id: 0x1111_1111_1111_1111,
        parent_id: 0x0123_4567_89ab_cdef,
    }
}

#[test]
fn golden_enqueue_with_trace_headers_in_bin_form_decodes() {
    // §2.3, as the Rust framework sends it (bin names and values).
    let bytes = hex("94 01 00 91 a4 68 74 74 70 93
         93 c2 c4 08 74 72 61 63 65 5f 69 64   c4 08 ef cd ab 89 67 45 23 01
         93 c2 c4 07 73 70 61 6e 5f 69 64      c4 08 11 11 11 11 11 11 11 11
         93 c2 c4 09 70 61 72 65 6e 74 5f 69 64 c4 08 ef cd ab 89 67 45 23 01");
    let frame = decode_one(&bytes);
    assert_eq!(frame.chunk().unwrap(), "http");
    assert_eq!(frame.headers.trace(), Some(trace()));
}

#[test]
fn golden_enqueue_with_trace_headers_in_runtime_form_round_trips() {
    // The same headers as the runtime writes them: str instead of bin, which
    // is also exactly what rpcgate emits.
    let bytes = hex("94 01 00 91 a4 68 74 74 70 93
         93 c2 a8 74 72 61 63 65 5f 69 64   a8 ef cd ab 89 67 45 23 01
         93 c2 a7 73 70 61 6e 5f 69 64      a8 11 11 11 11 11 11 11 11
         93 c2 a9 70 61 72 65 6e 74 5f 69 64 a8 ef cd ab 89 67 45 23 01");
    let mut headers = Headers::new();
    headers.set_trace(trace());
    let message = Message::new(0, Args::Bytes("http".into())).with_headers(headers.clone());
    assert_eq!(encode(1, message), bytes);
    assert_eq!(decode_one(&bytes).headers, headers);
}

#[test]
fn golden_request_timeout_and_trace_bit_headers_decode() {
    // §2.3 (bin form), wrapped in a close frame.
    let mut bytes = hex("94 01 02 90 92");
    bytes.extend(hex(
        "93 c2 c4 0f 72 65 71 75 65 73 74 5f 74 69 6d 65 6f 75 74 c4 08 88 13 00 00 00 00 00 00",
    ));
    bytes.extend(hex("93 c2 c4 09 74 72 61 63 65 5f 62 69 74 c4 01 31"));
    let frame = decode_one(&bytes);
    assert_eq!(
        frame.headers.request_timeout(),
        Some(std::time::Duration::from_millis(5000))
    );
    assert_eq!(frame.headers.trace_bit(), Some(true));
}

#[test]
fn python_compressed_trace_header_is_stored() {
    // `[true, 80, "\xef\xcd…"]` then a bare reference to dynamic index 83.
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    buf.extend(hex("94 01 00 90 91 93 c3 50 a8 ef cd ab 89 67 45 23 01"));
    buf.extend(hex("94 01 00 90 91 53"));
    let first = codec.decode(&mut buf).unwrap().unwrap();
    let second = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(first.headers.trace_id(), Some(0x0123_4567_89ab_cdef));
    assert_eq!(second.headers.trace_id(), Some(0x0123_4567_89ab_cdef));
    assert_eq!(codec.table().len(), 1);
}

#[test]
fn accepts_three_and_five_element_frames() {
    let three = decode_one(&hex("93 05 02 90"));
    assert_eq!((three.channel, three.ty), (5, 2));
    assert!(three.headers.is_empty());
    let five = decode_one(&hex("95 05 00 91 a1 78 90 c0"));
    assert_eq!(five.chunk().unwrap(), "x");
}

#[test]
fn rejects_malformed_frames() {
    for bad in [
        "92 01 00",          // too few elements
        "93 a1 78 00 90",    // channel is not an integer
        "93 01 00 a0",       // args is not an array
        "93 ff 00 90",       // negative channel id
        "94 01 00 90 a0",    // headers is not an array
        "94 01 00 90 91 00", // header index 0
    ] {
        let mut buf = BytesMut::from(&hex(bad)[..]);
        assert!(
            FrameCodec::default().decode(&mut buf).is_err(),
            "{bad} must be rejected"
        );
    }
}

#[test]
fn rejects_a_non_array_at_the_first_byte() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert!(matches!(
        FrameCodec::default().decode(&mut buf),
        Err(DecodeError::FrameFormat(_))
    ));
}

#[test]
fn checks_the_maximum_before_growing_the_buffer() {
    let mut codec = FrameCodec::new(1024);
    // A write whose chunk declares 1 MiB: refused from its 10-byte head.
    let mut buf = BytesMut::from(&hex("94 01 00 91 db 00 10 00 00")[..]);
    let capacity = buf.capacity();
    assert!(matches!(
        codec.decode(&mut buf),
        Err(DecodeError::FrameTooLarge { max: 1024 })
    ));
    assert_eq!(buf.capacity(), capacity);

    // Under the limit, the buffer grows by at most RESERVE_STEP ahead.
    let mut codec = FrameCodec::new(64 << 20);
    let mut buf = BytesMut::from(&hex("94 01 00 91 db 02 00 00 00")[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() <= buf.len() + 2 * RESERVE_STEP);
}

#[test]
fn refuses_to_encode_oversized_or_invalid_frames() {
    let mut codec = FrameCodec::new(16);
    let mut buf = BytesMut::new();
    let err = codec
        .encode((1, Message::write(vec![0u8; 32])), &mut buf)
        .unwrap_err();
    assert!(matches!(
        err,
        EncodeError::FrameTooLarge { len: 40, max: 16 }
    ));
    let bad_headers: Headers = [crate::proto::header::Header {
        name: "trace_id".into(),
        value: "short".into(),
    }]
    .into_iter()
    .collect();
    let err = FrameCodec::default()
        .encode((1, Message::close().with_headers(bad_headers)), &mut buf)
        .unwrap_err();
    assert!(matches!(err, EncodeError::InvalidHeader(_)));
    assert!(buf.is_empty(), "nothing written on error");
}

#[test]
fn body_chunks_are_slices_of_the_read_buffer() {
    let mut wire = BytesMut::new();
    let body = vec![7u8; 1024];
    FrameCodec::default()
        .encode((3, Message::write(body.clone())), &mut wire)
        .unwrap();
    let frame = FrameCodec::default().decode(&mut wire).unwrap().unwrap();
    let frame_start = frame.args.as_ptr() as usize;
    let chunk = frame.chunk().unwrap();
    assert_eq!(chunk, body);
    let offset = chunk.as_ptr() as usize - frame_start;
    assert!(offset < frame.args.len(), "the chunk points into the frame");
}

#[test]
fn encoded_len_is_exact() {
    let mut headers = Headers::new();
    headers.set_trace(trace());
    headers.insert("authorization", vec![b'a'; 300]).unwrap();
    for message in [
        Message::close(),
        Message::write(vec![0u8; 40]),
        Message::write(vec![0u8; 70_000]),
        Message::error(1, RemoteError::new(ErrorCode::NOT_CONNECTED, "cancelled")),
        Message::new(0, Args::Bytes("http".into())).with_headers(headers),
    ] {
        for channel in [1, 200, 70_000, u64::MAX] {
            assert_eq!(
                encode(channel, message.clone()).len(),
                message.encoded_len(channel)
            );
        }
    }
}

#[test]
fn raw_args_must_be_one_array() {
    assert!(RawArgs::new(Bytes::from_static(b"\x91\x01")).is_ok());
    assert!(RawArgs::new(Bytes::from_static(b"\x01")).is_err());
    assert!(RawArgs::new(Bytes::from_static(b"\x91\x01\x01")).is_err());
    assert!(RawArgs::new(Bytes::from_static(b"\x92\x01")).is_err());
    assert!(
        RawArgs::build(2, |b| {
            msgpack::put_uint(b, 1);
            msgpack::put_uint(b, 2);
        })
        .is_ok()
    );
    assert!(RawArgs::build(2, |b| msgpack::put_uint(b, 1)).is_err());
}
