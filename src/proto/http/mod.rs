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
mod tests;
