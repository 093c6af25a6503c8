//! Frame headers: owns the header list of a frame (element 3), its wire forms
//! (PROTOCOL.md §2.1), and the typed, validated accessors of §2.2.
//!
//! Emit: only `[false, name, value]` with v4 strings. Decode: bare indexes of
//! any integer width, `[store, name, value]` and `[store, name_index, value]`,
//! honouring `store = true` in the connection's [`HeaderTable`].
//!
//! The runtime drops the whole connection on a trace header that is not 8
//! bytes or a `trace_bit` that is not `"0"`/`"1"`, so the reserved names are
//! validated on insertion *and* again by [`Headers::validate`] before any
//! frame is encoded: an invalid header can never be sent.

mod table;

use std::time::Duration;

use bytes::{BufMut, Bytes};

pub use self::table::{
    DYNAMIC_TABLE_CAPACITY, ENTRY_OVERHEAD, HeaderTable, STATIC_TABLE_LEN, entry_size, static_entry,
};
use super::msgpack::{self, MsgpackError, Reader};

/// Header names with a meaning to the runtime (§2.2).
pub mod name {
    /// Trace id: 8 bytes, u64 little-endian.
    pub const TRACE_ID: &[u8] = b"trace_id";
    /// Span id: 8 bytes, u64 little-endian.
    pub const SPAN_ID: &[u8] = b"span_id";
    /// Parent span id: 8 bytes, u64 little-endian.
    pub const PARENT_ID: &[u8] = b"parent_id";
    /// Verbose tracing: `"0"` or `"1"`.
    pub const TRACE_BIT: &[u8] = b"trace_bit";
    /// Per-request timeout in milliseconds: 8 bytes, u64 little-endian.
    pub const REQUEST_TIMEOUT: &[u8] = b"request_timeout";
    /// W3C trace context (`00-<trace>-<span>-<flags>`), sent beside the
    /// three ids when OpenTelemetry export is on.
    pub const TRACEPARENT: &[u8] = b"traceparent";
    /// Forwarded HTTP `Authorization`.
    pub const AUTHORIZATION: &[u8] = b"authorization";
}

/// One header: a name and a value, both arbitrary bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// The name.
    pub name: Bytes,
    /// The value.
    pub value: Bytes,
}

/// The trace ids carried by `trace_id`, `span_id` and `parent_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceContext {
    /// The trace id (the HTTP `X-Request-Id`).
    pub trace_id: u64,
    /// This span's id.
    pub span_id: u64,
    /// The parent span's id.
    pub parent_id: u64,
}

/// A header that must not be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{}` header: {reason}", String::from_utf8_lossy(name))]
pub struct InvalidHeader {
    /// The header name.
    pub name: Bytes,
    /// What is wrong with the value.
    pub reason: &'static str,
}

/// A header list that could not be decoded; the connection's header table is
/// out of step with the peer's, so the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A reference to index 0 or past the end of the table.
    #[error("header index {0} is not in the table")]
    BadIndex(u64),
    /// An entry is neither an index nor `[store, name, value]`.
    #[error("malformed header entry: {0}")]
    Malformed(#[from] MsgpackError),
}

/// The header list of one frame, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers {
    entries: Vec<Header>,
}

// === impl Headers ===

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `capacity` headers.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The headers in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.entries.iter()
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// Appends a header after checking the reserved names of §2.2.
    pub fn insert(
        &mut self,
        name: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<&mut Self, InvalidHeader> {
        let header = Header {
            name: name.into(),
            value: value.into(),
        };
        check(&header)?;
        self.entries.push(header);
        Ok(self)
    }

    /// Sets the three trace headers, replacing any earlier ones.
    pub fn set_trace(&mut self, trace: TraceContext) -> &mut Self {
        // One shared buffer for the three values: one allocation, and a
        // clone of the list (a request's retry) only counts references.
        let mut ids = [0u8; 24];
        ids[..8].copy_from_slice(&trace.trace_id.to_le_bytes());
        ids[8..16].copy_from_slice(&trace.span_id.to_le_bytes());
        ids[16..].copy_from_slice(&trace.parent_id.to_le_bytes());
        let ids = Bytes::from_owner(ids);
        self.replace(name::TRACE_ID, ids.slice(..8));
        self.replace(name::SPAN_ID, ids.slice(8..16));
        self.replace(name::PARENT_ID, ids.slice(16..));
        self
    }

    /// Sets `traceparent`, replacing any earlier one.
    pub fn set_traceparent(&mut self, value: Bytes) -> &mut Self {
        self.replace(name::TRACEPARENT, value);
        self
    }

    /// Sets `trace_bit` to `"1"` or `"0"`.
    pub fn set_trace_bit(&mut self, verbose: bool) -> &mut Self {
        let value: &'static [u8] = if verbose { b"1" } else { b"0" };
        self.replace(name::TRACE_BIT, Bytes::from_static(value));
        self
    }

    /// Sets `request_timeout` in whole milliseconds (saturating).
    pub fn set_request_timeout(&mut self, timeout: Duration) -> &mut Self {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.replace(name::REQUEST_TIMEOUT, u64_le(ms));
        self
    }

    fn replace(&mut self, name: &'static [u8], value: Bytes) {
        self.entries.retain(|h| h.name != name);
        self.entries.push(Header {
            name: Bytes::from_static(name),
            value,
        });
    }

    /// `trace_id`, when present and exactly 8 bytes.
    pub fn trace_id(&self) -> Option<u64> {
        self.get(name::TRACE_ID).and_then(|v| read_u64_le(v))
    }

    /// `span_id`, when present and exactly 8 bytes.
    pub fn span_id(&self) -> Option<u64> {
        self.get(name::SPAN_ID).and_then(|v| read_u64_le(v))
    }

    /// `parent_id`, when present and exactly 8 bytes.
    pub fn parent_id(&self) -> Option<u64> {
        self.get(name::PARENT_ID).and_then(|v| read_u64_le(v))
    }

    /// All three trace ids, when all are present and valid (the runtime sets
    /// up a trace context only then).
    pub fn trace(&self) -> Option<TraceContext> {
        Some(TraceContext {
            trace_id: self.trace_id()?,
            span_id: self.span_id()?,
            parent_id: self.parent_id()?,
        })
    }

    /// `trace_bit`, when present and `"0"` or `"1"`.
    pub fn trace_bit(&self) -> Option<bool> {
        match self.get(name::TRACE_BIT).map(|v| &v[..]) {
            Some(b"1") => Some(true),
            Some(b"0") => Some(false),
            _ => None,
        }
    }

    /// `request_timeout`, when present and exactly 8 bytes.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.get(name::REQUEST_TIMEOUT)
            .and_then(|v| read_u64_le(v))
            .map(Duration::from_millis)
    }

    /// Checks every reserved header. Decoded lists are not validated on the
    /// way in (the peer may send anything), so encoders call this first.
    pub fn validate(&self) -> Result<(), InvalidHeader> {
        self.entries.iter().try_for_each(check)
    }

    /// The exact size of [`Headers::encode`].
    pub fn encoded_len(&self) -> usize {
        msgpack::container_header_len(self.entries.len())
            + self
                .entries
                .iter()
                .map(|h| {
                    2 + msgpack::str_header_len(h.name.len())
                        + h.name.len()
                        + msgpack::str_header_len(h.value.len())
                        + h.value.len()
                })
                .sum::<usize>()
    }

    /// Writes the list as uncompressed `[false, name, value]` entries.
    /// Callers must have run [`Headers::validate`].
    pub fn encode(&self, buf: &mut impl BufMut) {
        msgpack::put_array_len(buf, self.entries.len());
        for h in &self.entries {
            msgpack::put_array_len(buf, 3);
            msgpack::put_bool(buf, false);
            msgpack::put_str(buf, &h.name);
            msgpack::put_str(buf, &h.value);
        }
    }

    /// Reads a header list in any of the forms of §2.1, resolving indexes
    /// against `table` and storing `store = true` entries in it.
    pub fn decode(r: &mut Reader<'_>, table: &mut HeaderTable) -> Result<Self, HeaderError> {
        let len = r.read_array_len()?;
        let mut entries = Vec::with_capacity(len);
        for _ in 0..len {
            let header = if matches!(
                r.peek_marker()?,
                rmp::Marker::FixArray(_) | rmp::Marker::Array16 | rmp::Marker::Array32
            ) {
                decode_literal(r, table)?
            } else {
                let index = r.read_uint()?;
                table.get(index).ok_or(HeaderError::BadIndex(index))?
            };
            entries.push(header);
        }
        Ok(Self { entries })
    }
}

fn decode_literal(r: &mut Reader<'_>, table: &mut HeaderTable) -> Result<Header, HeaderError> {
    let fields = r.read_array_len()?;
    if fields != 3 {
        return Err(HeaderError::Malformed(MsgpackError::Unexpected {
            expected: "[store, name, value]",
            found: 0x90 | (fields.min(15) as u8),
        }));
    }
    let store = r.read_bool()?;
    let name = match r.peek_marker()? {
        rmp::Marker::FixPos(_)
        | rmp::Marker::U8
        | rmp::Marker::U16
        | rmp::Marker::U32
        | rmp::Marker::U64
        | rmp::Marker::I8
        | rmp::Marker::I16
        | rmp::Marker::I32
        | rmp::Marker::I64 => {
            let index = r.read_uint()?;
            table.get(index).ok_or(HeaderError::BadIndex(index))?.name
        }
        _ => r.read_bytes()?,
    };
    let header = Header {
        name,
        value: r.read_bytes()?,
    };
    if store {
        table.insert(&header);
    }
    Ok(header)
}

fn check(header: &Header) -> Result<(), InvalidHeader> {
    let reason = match &header.name[..] {
        name::TRACE_ID | name::SPAN_ID | name::PARENT_ID | name::REQUEST_TIMEOUT
            if header.value.len() != 8 =>
        {
            "must be exactly 8 bytes (u64 little-endian)"
        }
        name::TRACE_BIT if !matches!(&header.value[..], b"0" | b"1") => "must be \"0\" or \"1\"",
        _ => return Ok(()),
    };
    Err(InvalidHeader {
        name: header.name.clone(),
        reason,
    })
}

/// A u64 header value. Shared from the start (not a `Vec`-backed `Bytes`,
/// whose first clone allocates), so cloning the list never allocates.
fn u64_le(value: u64) -> Bytes {
    Bytes::from_owner(value.to_le_bytes())
}

fn read_u64_le(value: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(value).ok().map(u64::from_le_bytes)
}

impl FromIterator<Header> for Headers {
    /// Collects headers without validation; [`Headers::validate`] runs
    /// before anything is encoded.
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests;
