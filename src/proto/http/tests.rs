use super::*;
use crate::proto::frame::{FrameCodec, Message, StreamEvent};
use tokio_util::codec::{Decoder, Encoder};

#[test]
fn meta_encoded_len_is_exact() {
    for (status, headers) in [(200u16, 0usize), (404, 1), (599, 15), (200, 16), (100, 300)] {
        let meta = ResponseMeta {
            status,
            headers: (0..headers)
                .map(|i| {
                    (
                        Bytes::from(format!("X-H{i}")),
                        Bytes::from("v".repeat(i % 40)),
                    )
                })
                .collect(),
        };
        assert_eq!(
            meta.encoded_len(),
            meta.to_bytes().len(),
            "{status} {headers}"
        );
    }
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn pair(n: &'static str, v: &'static str) -> HeaderPair {
    (
        Bytes::from_static(n.as_bytes()),
        Bytes::from_static(v.as_bytes()),
    )
}

const REQUEST_52: &str = "95 a3 47 45 54 aa 2f 68 65 6c 6c 6f 3f 78 3d 31 a3 31 2e 31 92
        92 a4 48 6f 73 74 ab 65 78 61 6d 70 6c 65 2e 63 6f 6d
        92 a6 41 63 63 65 70 74 a3 2a 2f 2a a0";

fn hello_request() -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        uri: "/hello?x=1".into(),
        version: "1.1".into(),
        headers: vec![pair("Host", "example.com"), pair("Accept", "*/*")],
        body: Bytes::new(),
    }
}

#[test]
fn title_cased_names_across_the_stack_buffer() {
    // A `-` as the 64th byte: the next chunk starts upper-cased.
    let name = format!("{}-{}", "a".repeat(63), "b".repeat(70));
    let lines = [(name.as_bytes(), &b"v"[..])];
    let tuple = RequestTuple {
        method: b"GET",
        uri: b"/",
        version: b"1.1",
        headers: || lines.iter().copied(),
        names: HeaderNames::TitleCase,
        body: b"",
    };
    assert_eq!(tuple.encoded_len(), tuple.clone().to_bytes().len());
    let decoded = HttpRequest::decode(&tuple.to_bytes()).unwrap();
    let expected = format!("A{}-B{}", "a".repeat(62), "b".repeat(69));
    assert_eq!(decoded.headers[0].0, expected.as_bytes());
}

#[test]
fn golden_request_tuple() {
    let expected = hex(REQUEST_52);
    assert_eq!(expected.len(), 52);
    let request = hello_request();
    assert_eq!(request.to_bytes(), expected);
    assert_eq!(request.encoded_len(), 52);
    assert_eq!(
        HttpRequest::decode(&Bytes::from(expected)).unwrap(),
        request
    );
}

#[test]
fn golden_request_write_frame_uses_str16_for_the_outer_string() {
    // "v4-only alternative for the outer string: 94 01 00 91 da 00 34 <52 bytes> 90"
    let mut expected = hex("94 01 00 91 da 00 34");
    expected.extend(hex(REQUEST_52));
    expected.push(0x90);
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode((1, Message::write(hello_request().to_bytes())), &mut buf)
        .unwrap();
    assert_eq!(&buf[..], &expected[..]);
    // The Rust framework's str8 form decodes to the same request.
    let mut str8 = hex("94 01 00 91 d9 34");
    str8.extend(hex(REQUEST_52));
    str8.push(0x90);
    let frame = FrameCodec::default()
        .decode(&mut BytesMut::from(&str8[..]))
        .unwrap()
        .unwrap();
    assert_eq!(
        HttpRequest::decode(&frame.chunk().unwrap()).unwrap(),
        hello_request()
    );
}

#[test]
fn fields_over_31_bytes_use_str16_never_str8() {
    let request = HttpRequest {
        uri: Bytes::from(vec![b'/'; 40]),
        body: Bytes::from(vec![b'b'; 200]),
        ..hello_request()
    };
    let bytes = request.to_bytes();
    let mut r = Reader::new(&bytes);
    r.read_array_len().unwrap();
    r.skip().unwrap();
    assert_eq!(bytes[r.position()], 0xda, "uri as str16");
    assert!(!bytes.windows(2).any(|w| w == [0xd9, 40]));
    assert_eq!(HttpRequest::decode(&bytes).unwrap(), request);
}

#[test]
fn repeated_headers_and_non_utf8_bytes_pass_through() {
    let request = HttpRequest {
        headers: vec![
            pair("Cookie", "a=1"),
            pair("Cookie", "b=2"),
            (
                Bytes::from_static(b"X-Bin"),
                Bytes::from_static(b"\xff\x00\xfe"),
            ),
        ],
        body: Bytes::from_static(b"\x80\x81"),
        ..hello_request()
    };
    assert_eq!(HttpRequest::decode(&request.to_bytes()).unwrap(), request);
    // Read lazily: the same lines, borrowed, in order.
    let lazy = LazyHttpRequest::decode(&request.to_bytes()).unwrap();
    assert_eq!(lazy.headers.len(), 3);
    let lines: Vec<_> = lazy.headers.iter().collect();
    let expected: Vec<_> = request
        .headers
        .iter()
        .map(|(n, v)| (&n[..], &v[..]))
        .collect();
    assert_eq!(lines, expected);
    assert_eq!((lazy.method, lazy.body), (request.method, request.body));
}

#[test]
fn golden_response_meta_and_stream() {
    let meta_bytes = hex(
        "92 cc c8 92 92 ac 43 6f 6e 74 65 6e 74 2d 54 79 70 65 aa 74 65 78 74 2f 70 6c 61 69 6e
             92 ae 43 6f 6e 74 65 6e 74 2d 4c 65 6e 67 74 68 a1 35",
    );
    assert_eq!(meta_bytes.len(), 47);
    let meta = ResponseMeta {
        status: 200,
        headers: vec![
            pair("Content-Type", "text/plain"),
            pair("Content-Length", "5"),
        ],
    };
    assert_eq!(meta.to_bytes(), meta_bytes);
    assert_eq!(
        ResponseMeta::decode(&Bytes::from(meta_bytes.clone())).unwrap(),
        meta
    );

    // The runtime's frames: meta, body "hello", close, each with 3 trace headers.
    let trace = "93 93 c2 a8 74 72 61 63 65 5f 69 64 a8 00 00 00 00 00 00 00 00
                        93 c2 a7 73 70 61 6e 5f 69 64 a8 00 00 00 00 00 00 00 00
                        93 c2 a9 70 61 72 65 6e 74 5f 69 64 a8 00 00 00 00 00 00 00 00";
    let mut wire = BytesMut::new();
    wire.extend(hex("94 01 00 91 da 00 2f"));
    wire.extend(&meta_bytes);
    wire.extend(hex(trace));
    wire.extend(hex("94 01 00 91 a5 68 65 6c 6c 6f"));
    wire.extend(hex(trace));
    wire.extend(hex("94 01 02 90"));
    wire.extend(hex(trace));
    let mut codec = FrameCodec::default();
    let frames: Vec<_> = std::iter::from_fn(|| codec.decode(&mut wire).unwrap()).collect();
    assert_eq!(frames.len(), 3);
    let StreamEvent::Write(first) = frames[0].stream_event().unwrap() else {
        panic!("meta first")
    };
    assert_eq!(ResponseMeta::decode(&first).unwrap(), meta);
    assert_eq!(
        frames[1].stream_event().unwrap(),
        StreamEvent::Write("hello".into())
    );
    assert_eq!(frames[2].stream_event().unwrap(), StreamEvent::Close);
    assert!(frames.iter().all(|f| f.headers.trace_id() == Some(0)));
}

#[test]
fn meta_is_read_leniently() {
    // Code as uint32, names as bin, value as str8.
    let bytes = Bytes::from(hex("92 ce 00 00 01 94 91 92 c4 01 41 d9 01 42"));
    let meta = ResponseMeta::decode(&bytes).unwrap();
    assert_eq!(meta.status, 404);
    assert_eq!(meta.headers, vec![pair("A", "B")]);
    // Headers as a map.
    let bytes = Bytes::from(hex("92 cc c8 81 a1 41 a1 42"));
    assert_eq!(
        ResponseMeta::decode(&bytes).unwrap().headers,
        vec![pair("A", "B")]
    );
    // A code that is not a u16 is an error, not a truncation.
    let bytes = Bytes::from(hex("92 ce 00 01 00 00 90"));
    assert_eq!(
        ResponseMeta::decode(&bytes),
        Err(MsgpackError::OutOfRange("u16"))
    );
}
