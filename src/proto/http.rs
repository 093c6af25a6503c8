//! HTTP over Cocaine: owns the request 5-tuple of PROTOCOL.md §5.2 and the
//! response meta `[code, [[name, value]...]]` of §5.4.
//!
//! The request is written with v4 string forms only (old worker-side msgpack
//! cannot read str8 or bin), every header line is its own pair, and no byte
//! is ever forced to UTF-8. Both are read leniently and zero-copy.

use bytes::{BufMut, Bytes, BytesMut};

use super::msgpack::{self, MsgpackError, Reader};

/// One header line: name and value as bytes.
pub type HeaderPair = (Bytes, Bytes);

/// The `enqueue` frame header by which a gateway tells the app that the
/// request body is streamed (value [`REQUEST_BODY_STREAM`]): the 5-tuple's
/// body field is empty, the body follows as `write` chunks, and an empty
/// `write` chunk ends it. Without it the 5-tuple holds the whole body.
pub const REQUEST_BODY: &[u8] = b"request_body";

/// The value of [`REQUEST_BODY`] for a streamed body.
pub const REQUEST_BODY_STREAM: &[u8] = b"stream";

/// An HTTP request as the app receives it in its first chunk:
/// `[method, uri, version, [[name, value]...], body]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// The method, e.g. `GET`.
    pub method: Bytes,
    /// Path and query, e.g. `/a/b?x=1` (§5.1 decides which).
    pub uri: Bytes,
    /// `1.1` for HTTP/1.1, `1.0` for anything else (§5.2). Workers also send
    /// `HTTP/1.1`; readers should accept both.
    pub version: Bytes,
    /// Every header line in received order, repeated names included.
    pub headers: Vec<HeaderPair>,
    /// The whole body (a str on the wire, never bin).
    pub body: Bytes,
}

/// The encoded size of a str of `bytes`.
pub(crate) fn str_len(bytes: &[u8]) -> usize {
    msgpack::str_header_len(bytes.len()) + bytes.len()
}

/// The encoded size of a list of `[name, value]` pairs.
fn pairs_len(pairs: &[HeaderPair]) -> usize {
    msgpack::container_header_len(pairs.len())
        + pairs
            .iter()
            .map(|(n, v)| 1 + str_len(n) + str_len(v))
            .sum::<usize>()
}

/// How [`RequestTuple`] writes header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderNames {
    /// As given.
    AsIs,
    /// Title-cased (`content-type` → `Content-Type`): HTTP/1 header names
    /// reach the gateway lowercased, and workers written against the old
    /// proxies look headers up in their usual case.
    TitleCase,
}

/// The request 5-tuple from borrowed parts: the one encoder, behind both
/// [`HttpRequest::to_bytes`] and the gateway's packing (which writes
/// straight from the HTTP request, with no per-header copies). v4 string
/// forms only; every header line its own pair.
#[derive(Debug, Clone)]
pub struct RequestTuple<'a, H> {
    /// The method.
    pub method: &'a [u8],
    /// Path and query.
    pub uri: &'a [u8],
    /// `1.1` or `1.0`.
    pub version: &'a [u8],
    /// Every header line, `(name, value)`, in order: called twice, to
    /// measure and to write.
    pub headers: H,
    /// How the names are written.
    pub names: HeaderNames,
    /// The whole body (empty when streamed).
    pub body: &'a [u8],
}

impl<'a, H, I> RequestTuple<'a, H>
where
    H: Fn() -> I,
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    /// The number of header lines and the exact encoded length.
    fn measure(&self) -> (usize, usize) {
        let (count, lines) = (self.headers)().fold((0, 0), |(n, len), (name, value)| {
            (n + 1, len + 1 + str_len(name) + str_len(value))
        });
        let len = 1
            + str_len(self.method)
            + str_len(self.uri)
            + str_len(self.version)
            + msgpack::container_header_len(count)
            + lines
            + str_len(self.body);
        (count, len)
    }

    /// The exact length of [`RequestTuple::encode`].
    pub fn encoded_len(&self) -> usize {
        self.measure().1
    }

    /// Writes the 5-tuple.
    pub fn encode(self, buf: &mut impl BufMut) {
        let count = (self.headers)().count();
        self.write(buf, count);
    }

    /// The encoded 5-tuple in one buffer of its exact size, ready to be a
    /// `write` chunk.
    pub fn to_bytes(self) -> Bytes {
        let (count, len) = self.measure();
        let mut buf = BytesMut::with_capacity(len);
        self.write(&mut buf, count);
        buf.freeze()
    }

    fn write(self, buf: &mut impl BufMut, count: usize) {
        msgpack::put_array_len(buf, 5);
        msgpack::put_str(buf, self.method);
        msgpack::put_str(buf, self.uri);
        msgpack::put_str(buf, self.version);
        // `count` is every line, so repeated headers are all there.
        msgpack::put_array_len(buf, count);
        for (name, value) in (self.headers)() {
            msgpack::put_array_len(buf, 2);
            match self.names {
                HeaderNames::AsIs => msgpack::put_str(buf, name),
                HeaderNames::TitleCase => {
                    msgpack::put_str_header(buf, name.len());
                    put_title_cased(buf, name);
                }
            }
            msgpack::put_str(buf, value);
        }
        msgpack::put_str(buf, self.body);
    }
}

/// Writes `name` title-cased (`content-type` → `Content-Type`), through a
/// small stack buffer rather than byte by byte.
fn put_title_cased(buf: &mut impl BufMut, name: &[u8]) {
    let mut upper = true;
    let mut chunk = [0u8; 64];
    for part in name.chunks(chunk.len()) {
        let out = &mut chunk[..part.len()];
        for (o, &b) in out.iter_mut().zip(part) {
            *o = if upper { b.to_ascii_uppercase() } else { b };
            upper = b == b'-';
        }
        buf.put_slice(out);
    }
}

fn pair_line((name, value): &HeaderPair) -> (&[u8], &[u8]) {
    (name, value)
}

impl HttpRequest {
    /// The exact length of [`HttpRequest::encode`].
    pub fn encoded_len(&self) -> usize {
        1 + str_len(&self.method)
            + str_len(&self.uri)
            + str_len(&self.version)
            + pairs_len(&self.headers)
            + str_len(&self.body)
    }

    /// Writes the 5-tuple with v4 forms only.
    pub fn encode(&self, buf: &mut impl BufMut) {
        RequestTuple {
            method: &self.method,
            uri: &self.uri,
            version: &self.version,
            headers: || self.headers.iter().map(pair_line),
            names: HeaderNames::AsIs,
            body: &self.body,
        }
        .write(buf, self.headers.len());
    }

    /// The encoded 5-tuple, ready to be a `write` chunk.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Reads a 5-tuple: str or bin anywhere, extra elements ignored.
    pub fn decode(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let tuple = LazyHttpRequest::decode(bytes)?;
        Ok(Self {
            headers: tuple.headers.to_pairs(),
            method: tuple.method,
            uri: tuple.uri,
            version: tuple.version,
            body: tuple.body,
        })
    }
}

/// A request 5-tuple as [`HttpRequest::decode`] reads it, but with the
/// header lines checked and left encoded (see [`EncodedHeaders`]).
#[derive(Debug, Clone, Default)]
pub struct LazyHttpRequest {
    /// The method.
    pub method: Bytes,
    /// Path and query.
    pub uri: Bytes,
    /// The version as sent.
    pub version: Bytes,
    /// The header lines.
    pub headers: EncodedHeaders,
    /// The whole body.
    pub body: Bytes,
}

impl LazyHttpRequest {
    /// Reads a 5-tuple like [`HttpRequest::decode`].
    pub fn decode(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let mut r = Reader::new(bytes);
        let len = r.read_array_len()?;
        if len < 5 {
            return Err(MsgpackError::Unexpected {
                expected: "[method, uri, version, headers, body]",
                found: 0x90 | len as u8,
            });
        }
        Ok(Self {
            method: r.read_bytes()?,
            uri: r.read_bytes()?,
            version: r.read_bytes()?,
            headers: EncodedHeaders::read(&mut r, bytes)?,
            body: r.read_bytes()?,
        })
    }
}

/// The response meta, the app's first chunk: `[code, [[name, value]...]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseMeta {
    /// The HTTP status code as the app sent it (not yet range-checked).
    pub status: u16,
    /// Header lines in order, repeated names included.
    pub headers: Vec<HeaderPair>,
}

impl ResponseMeta {
    /// Writes the meta with v4 forms.
    pub fn encode(&self, buf: &mut impl BufMut) {
        msgpack::put_array_len(buf, 2);
        msgpack::put_uint(buf, u64::from(self.status));
        msgpack::put_array_len(buf, self.headers.len());
        for (name, value) in &self.headers {
            msgpack::put_array_len(buf, 2);
            msgpack::put_str(buf, name);
            msgpack::put_str(buf, value);
        }
    }

    /// The exact length of [`ResponseMeta::encode`].
    pub fn encoded_len(&self) -> usize {
        1 + msgpack::uint_len(u64::from(self.status)) + pairs_len(&self.headers)
    }

    /// The encoded meta, ready to be a `write` chunk.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Reads a meta leniently: any integer width for the code, str or bin
    /// for names and values, and headers as a list of pairs or as a map
    /// (what a Python dict would become if packed as-is).
    pub fn decode(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let mut r = Reader::new(bytes);
        if r.read_array_len()? < 2 {
            return Err(MsgpackError::Unexpected {
                expected: "[code, headers]",
                found: bytes.first().copied().unwrap_or(0),
            });
        }
        let status = r.read_u16()?;
        let headers = if matches!(
            r.peek_marker()?,
            rmp::Marker::FixMap(_) | rmp::Marker::Map16 | rmp::Marker::Map32
        ) {
            let len = r.read_map_len()?;
            let mut headers = Vec::with_capacity(len);
            for _ in 0..len {
                headers.push((r.read_bytes()?, r.read_bytes()?));
            }
            headers
        } else {
            read_pairs(&mut r)?
        };
        Ok(Self { status, headers })
    }
}

/// Header lines still encoded: a checked `[[name, value, ...]...]` array,
/// read pair by pair when looked at. An app that reads few or none of a
/// request's headers pays for no list and no reference per line.
#[derive(Debug, Clone, Default)]
pub struct EncodedHeaders {
    /// The array, header included.
    raw: Bytes,
    len: usize,
}

impl EncodedHeaders {
    /// Checks the array at `r`'s position (every line a list of at least a
    /// str-or-bin name and value) and keeps its bytes, a slice of `whole`,
    /// the buffer `r` reads.
    pub fn read(r: &mut Reader<'_>, whole: &Bytes) -> Result<Self, MsgpackError> {
        let start = r.position();
        let len = r.read_array_len()?;
        for _ in 0..len {
            read_pair(r)?;
        }
        Ok(Self {
            raw: whole.slice(start..r.position()),
            len,
        })
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lines as zero-copy slices of the buffer they were read from.
    pub fn to_pairs(&self) -> Vec<HeaderPair> {
        self.iter()
            .map(|(name, value)| (self.raw.slice_ref(name), self.raw.slice_ref(value)))
            .collect()
    }

    /// The lines in order, repeated names included, borrowed.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut r = Reader::new(&self.raw);
        // Checked when read: these cannot fail, and would only end the
        // iteration early if they did.
        let len = r.read_array_len().unwrap_or(0);
        (0..len).map_while(move |_| read_pair(&mut r).ok())
    }
}

/// One `[name, value, ...]` line, borrowed; elements past the value skipped.
fn read_pair<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], &'a [u8]), MsgpackError> {
    read_line(r, Reader::read_slice)
}

/// One `[name, value, ...]` line, each of the two read by `read`.
fn read_line<'a, T>(
    r: &mut Reader<'a>,
    read: impl Fn(&mut Reader<'a>) -> Result<T, MsgpackError>,
) -> Result<(T, T), MsgpackError> {
    let fields = r.read_array_len()?;
    if fields < 2 {
        return Err(MsgpackError::Unexpected {
            expected: "[name, value]",
            found: 0x90 | fields as u8,
        });
    }
    let line = (read(r)?, read(r)?);
    for _ in 2..fields {
        r.skip()?;
    }
    Ok(line)
}

fn read_pairs(r: &mut Reader<'_>) -> Result<Vec<HeaderPair>, MsgpackError> {
    let len = r.read_array_len()?;
    let mut pairs = Vec::with_capacity(len);
    for _ in 0..len {
        pairs.push(read_line(r, Reader::read_bytes)?);
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
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
}
