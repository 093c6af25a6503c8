//! msgpack forms: owns the v4-only writer, the lenient zero-copy reader and
//! the frame-length scanner. Knows nothing about frames, headers or sockets.
//!
//! Why not rmp-serde here: rmp-serde (like rmp's `write_str`) emits `str8`
//! for strings of 32..=255 bytes and `bin` for byte buffers, both of which
//! old worker-side msgpack libraries cannot read (PROTOCOL.md §1.2). Its
//! reader also insists on UTF-8 for `String` and copies every byte string,
//! while body chunks must stay `Bytes` slices of the read buffer. So we write
//! with hand-picked v4 markers and read with [`Reader`], using rmp's
//! [`Marker`] table to classify the first byte of each value.

use bytes::{BufMut, Bytes};
use rmp::Marker;

/// The deepest nesting [`Reader::read_value`] and typed decoders accept.
///
/// Nothing in the Cocaine protocol nests deeper than about six levels (a
/// resolve reply's graph); 32 leaves room for app-defined `info` values while
/// keeping recursion on hostile input far from the stack limit.
pub const MAX_DEPTH: usize = 32;

/// What went wrong while reading msgpack that is already complete in memory.
///
/// Every variant means the input is invalid: the framing layer only hands
/// complete values to the reader, so running out of bytes is corruption too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgpackError {
    /// The value ends past the end of the buffer.
    #[error("msgpack value is truncated")]
    Truncated,
    /// A value of another type was found where `expected` was required.
    #[error("expected {expected}, found marker 0x{found:02x}")]
    Unexpected {
        /// What the decoder wanted, e.g. "array" or "byte string".
        expected: &'static str,
        /// The marker byte that was found instead.
        found: u8,
    },
    /// An integer does not fit the type it is read into.
    #[error("integer out of range for {0}")]
    OutOfRange(&'static str),
    /// The reserved marker `0xc1` was found.
    #[error("reserved msgpack marker 0xc1")]
    Reserved,
    /// Values nest deeper than [`MAX_DEPTH`].
    #[error("msgpack nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A byte string that must name something is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
}

// === writer: v4 forms only ===

/// Writes an array header (fixarray, array16 or array32).
pub fn put_array_len(buf: &mut impl BufMut, len: usize) {
    match len {
        0..=15 => buf.put_u8(0x90 | len as u8),
        16..=0xffff => {
            buf.put_u8(0xdc);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(0xdd);
            buf.put_u32(saturate_u32(len));
        }
    }
}

/// Writes a map header (fixmap, map16 or map32).
pub fn put_map_len(buf: &mut impl BufMut, len: usize) {
    match len {
        0..=15 => buf.put_u8(0x80 | len as u8),
        16..=0xffff => {
            buf.put_u8(0xde);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(0xdf);
            buf.put_u32(saturate_u32(len));
        }
    }
}

/// Writes an unsigned integer in its smallest form.
pub fn put_uint(buf: &mut impl BufMut, value: u64) {
    match value {
        0..=0x7f => buf.put_u8(value as u8),
        0x80..=0xff => {
            buf.put_u8(0xcc);
            buf.put_u8(value as u8);
        }
        0x100..=0xffff => {
            buf.put_u8(0xcd);
            buf.put_u16(value as u16);
        }
        0x1_0000..=0xffff_ffff => {
            buf.put_u8(0xce);
            buf.put_u32(value as u32);
        }
        _ => {
            buf.put_u8(0xcf);
            buf.put_u64(value);
        }
    }
}

/// Writes a signed integer in its smallest form (unsigned forms when ≥ 0).
pub fn put_int(buf: &mut impl BufMut, value: i64) {
    if let Ok(unsigned) = u64::try_from(value) {
        return put_uint(buf, unsigned);
    }
    match value {
        -32..=-1 => buf.put_i8(value as i8),
        -0x80..=-33 => {
            buf.put_u8(0xd0);
            buf.put_i8(value as i8);
        }
        -0x8000..=-0x81 => {
            buf.put_u8(0xd1);
            buf.put_i16(value as i16);
        }
        -0x8000_0000..=-0x8001 => {
            buf.put_u8(0xd2);
            buf.put_i32(value as i32);
        }
        _ => {
            buf.put_u8(0xd3);
            buf.put_i64(value);
        }
    }
}

/// Writes a boolean.
pub fn put_bool(buf: &mut impl BufMut, value: bool) {
    buf.put_u8(if value { 0xc3 } else { 0xc2 });
}

/// Writes nil.
pub fn put_nil(buf: &mut impl BufMut) {
    buf.put_u8(0xc0);
}

/// Writes the header of a raw/str value of `len` bytes in v4 form:
/// fixstr below 32 bytes, then str16, then str32. Never str8 or bin.
pub fn put_str_header(buf: &mut impl BufMut, len: usize) {
    match len {
        0..=31 => buf.put_u8(0xa0 | len as u8),
        32..=0xffff => {
            buf.put_u8(0xda);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(0xdb);
            buf.put_u32(saturate_u32(len));
        }
    }
}

/// Writes bytes as a raw/str value in v4 form (see [`put_str_header`]).
pub fn put_str(buf: &mut impl BufMut, bytes: &[u8]) {
    put_str_header(buf, bytes.len());
    buf.put_slice(bytes);
}

/// The encoded size of a [`put_str_header`] for `len` bytes.
pub fn str_header_len(len: usize) -> usize {
    match len {
        0..=31 => 1,
        32..=0xffff => 3,
        _ => 5,
    }
}

/// The encoded size of a [`put_array_len`] or [`put_map_len`] header.
pub fn container_header_len(len: usize) -> usize {
    match len {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

/// The encoded size of [`put_uint`].
pub fn uint_len(value: u64) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Lengths above `u32::MAX` cannot be expressed in msgpack. Every caller is
/// bounded by a maximum frame length that is itself at most `u32::MAX`, so
/// saturating never happens in practice; it only avoids a panic path.
fn saturate_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

// === scanner: where does the next value end? ===

/// The result of scanning a buffer for one complete msgpack value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A complete value occupies the first `n` bytes.
    Complete(usize),
    /// More bytes are needed: at least `min_len` in total.
    Incomplete {
        /// The smallest total buffer length that could complete the value.
        min_len: usize,
    },
}

/// Why [`scan_value`] rejected its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// The reserved marker `0xc1` was found.
    Reserved,
    /// The value would be longer than the allowed maximum.
    TooLong,
}

/// Where an interrupted [`scan_resume`] picks up: the offset of the next
/// value boundary and how many values were still to read there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanState {
    pos: usize,
    pending: u64,
}

impl Default for ScanState {
    fn default() -> Self {
        Self { pos: 0, pending: 1 }
    }
}

/// Finds where the first msgpack value in `buf` ends, without recursion and
/// without allocating. See [`scan_resume`].
pub fn scan_value(buf: &[u8], max_len: usize) -> Result<Scan, ScanError> {
    scan_resume(buf, max_len, &mut ScanState::default())
}

/// Finds where the first msgpack value in `buf` ends, resuming from `state`
/// when an earlier call on a prefix of the same bytes returned
/// `Incomplete`, so each byte is scanned about once however the input is
/// split. Anything whose declared sizes exceed `max_len` is an error at
/// once, before any more bytes are awaited.
///
/// The scan keeps one counter of values still to read: an array of `n` adds
/// `n`, a map adds `2n`. Each value takes at least one byte, so `pos +
/// pending` is a lower bound on the total length; once it passes `max_len`
/// the value can never fit, which also bounds the work.
pub fn scan_resume(buf: &[u8], max_len: usize, state: &mut ScanState) -> Result<Scan, ScanError> {
    let mut pos = state.pos;
    let mut pending = state.pending;
    let incomplete = |min_len: usize| {
        if min_len > max_len {
            Err(ScanError::TooLong)
        } else {
            Ok(Scan::Incomplete { min_len })
        }
    };
    while pending > 0 {
        if pending > (max_len.saturating_sub(pos)) as u64 {
            return Err(ScanError::TooLong);
        }
        // A value boundary: resume here if this value is incomplete.
        *state = ScanState { pos, pending };
        let Some(&byte) = buf.get(pos) else {
            return incomplete(pos.saturating_add(pending as usize));
        };
        pending -= 1;
        pos += 1;
        // (payload bytes to skip, a length field of this many bytes, children per element)
        let (fixed, len_field, children): (usize, usize, u64) = match Marker::from_u8(byte) {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0, 0),
            Marker::U16 | Marker::I16 => (2, 0, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0, 0),
            Marker::FixStr(n) => (n as usize, 0, 0),
            Marker::Str8 | Marker::Bin8 => (0, 1, 0),
            Marker::Str16 | Marker::Bin16 => (0, 2, 0),
            Marker::Str32 | Marker::Bin32 => (0, 4, 0),
            Marker::FixArray(n) => {
                pending += u64::from(n);
                (0, 0, 0)
            }
            Marker::FixMap(n) => {
                pending += 2 * u64::from(n);
                (0, 0, 0)
            }
            Marker::Array16 => (0, 2, 1),
            Marker::Array32 => (0, 4, 1),
            Marker::Map16 => (0, 2, 2),
            Marker::Map32 => (0, 4, 2),
            Marker::FixExt1 => (2, 0, 0),
            Marker::FixExt2 => (3, 0, 0),
            Marker::FixExt4 => (5, 0, 0),
            Marker::FixExt8 => (9, 0, 0),
            Marker::FixExt16 => (17, 0, 0),
            // ext8/16/32: length field, then a type byte, then the payload.
            Marker::Ext8 => (1, 1, 0),
            Marker::Ext16 => (1, 2, 0),
            Marker::Ext32 => (1, 4, 0),
            Marker::Reserved => return Err(ScanError::Reserved),
        };
        let mut skip = fixed;
        if len_field > 0 {
            let Some(field) = buf.get(pos..pos + len_field) else {
                return incomplete((pos + len_field).saturating_add(pending as usize));
            };
            let n = field.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            pos += len_field;
            if children > 0 {
                pending = pending.saturating_add(n.saturating_mul(children));
            } else {
                skip = skip.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            }
        }
        if skip > max_len.saturating_sub(pos) {
            return Err(ScanError::TooLong);
        }
        pos += skip;
        if pos > buf.len() {
            return incomplete(pos.saturating_add(pending as usize));
        }
    }
    *state = ScanState::default();
    Ok(Scan::Complete(pos))
}

// === reader: lenient, zero-copy ===

/// A cursor over one complete msgpack buffer.
///
/// Lenient as PROTOCOL.md §1.2 asks: str and bin are both byte strings (and
/// never need to be UTF-8), and integers are accepted in any width, signed
/// forms included when the value is non-negative. Byte strings come back as
/// [`Bytes`] slices of the input, so nothing is copied.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// The offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn peek_byte(&self) -> Result<u8, MsgpackError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(MsgpackError::Truncated)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MsgpackError> {
        let end = self.pos.checked_add(n).ok_or(MsgpackError::Truncated)?;
        let buf: &'a Bytes = self.buf;
        let slice = buf.get(self.pos..end).ok_or(MsgpackError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn take_be(&mut self, n: usize) -> Result<u64, MsgpackError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// The marker of the next value, without consuming it.
    pub fn peek_marker(&self) -> Result<Marker, MsgpackError> {
        Ok(Marker::from_u8(self.peek_byte()?))
    }

    /// Whether the next value is nil.
    pub fn is_nil(&self) -> bool {
        self.buf.get(self.pos) == Some(&0xc0)
    }

    /// Reads nil.
    pub fn read_nil(&mut self) -> Result<(), MsgpackError> {
        match self.peek_byte()? {
            0xc0 => {
                self.pos += 1;
                Ok(())
            }
            found => Err(MsgpackError::Unexpected {
                expected: "nil",
                found,
            }),
        }
    }

    /// Reads a boolean.
    pub fn read_bool(&mut self) -> Result<bool, MsgpackError> {
        let value = match self.peek_byte()? {
            0xc2 => false,
            0xc3 => true,
            found => {
                return Err(MsgpackError::Unexpected {
                    expected: "boolean",
                    found,
                });
            }
        };
        self.pos += 1;
        Ok(value)
    }

    /// Reads an integer of any width as `i128`, which holds every msgpack
    /// integer exactly.
    pub fn read_integer(&mut self) -> Result<i128, MsgpackError> {
        let byte = self.peek_byte()?;
        let value = match Marker::from_u8(byte) {
            Marker::FixPos(n) => {
                self.pos += 1;
                return Ok(i128::from(n));
            }
            Marker::FixNeg(n) => {
                self.pos += 1;
                return Ok(i128::from(n));
            }
            Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                self.pos += 1;
                let width = 1 << (byte - 0xcc);
                i128::from(self.take_be(width)?)
            }
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                self.pos += 1;
                let width = 1usize << (byte - 0xd0);
                let raw = self.take_be(width)?;
                let shift = 64 - 8 * width as u32;
                i128::from(((raw << shift) as i64) >> shift)
            }
            _ => {
                return Err(MsgpackError::Unexpected {
                    expected: "integer",
                    found: byte,
                });
            }
        };
        Ok(value)
    }

    /// Reads a non-negative integer of any width that fits in `u64`.
    pub fn read_uint(&mut self) -> Result<u64, MsgpackError> {
        let start = self.pos;
        let value = self.read_integer()?;
        u64::try_from(value).map_err(|_| {
            self.pos = start;
            MsgpackError::OutOfRange("u64")
        })
    }

    /// Reads a non-negative integer that fits in `u32`.
    pub fn read_u32(&mut self) -> Result<u32, MsgpackError> {
        u32::try_from(self.read_uint()?).map_err(|_| MsgpackError::OutOfRange("u32"))
    }

    /// Reads a non-negative integer that fits in `u16`.
    pub fn read_u16(&mut self) -> Result<u16, MsgpackError> {
        u16::try_from(self.read_uint()?).map_err(|_| MsgpackError::OutOfRange("u16"))
    }

    /// Reads a str or bin value as a zero-copy slice of the input.
    pub fn read_bytes(&mut self) -> Result<Bytes, MsgpackError> {
        let (start, end) = self.bytes_span()?;
        Ok(self.buf.slice(start..end))
    }

    /// Reads a str or bin value as a borrowed slice: no reference count is
    /// taken, for values looked at and not kept.
    pub fn read_slice(&mut self) -> Result<&'a [u8], MsgpackError> {
        let (start, end) = self.bytes_span()?;
        let buf: &'a Bytes = self.buf;
        Ok(&buf[start..end])
    }

    /// Where the str or bin value at the current position lies; moves past
    /// it.
    fn bytes_span(&mut self) -> Result<(usize, usize), MsgpackError> {
        let byte = self.peek_byte()?;
        let (header, len) = match Marker::from_u8(byte) {
            Marker::FixStr(n) => (1, u64::from(n)),
            Marker::Str8 | Marker::Bin8 => (2, self.peek_len(1)?),
            Marker::Str16 | Marker::Bin16 => (3, self.peek_len(2)?),
            Marker::Str32 | Marker::Bin32 => (5, self.peek_len(4)?),
            _ => {
                return Err(MsgpackError::Unexpected {
                    expected: "byte string",
                    found: byte,
                });
            }
        };
        let start = self.pos + header;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|end| *end <= self.buf.len())
            .ok_or(MsgpackError::Truncated)?;
        self.pos = end;
        Ok((start, end))
    }

    /// Reads a str or bin value that must be UTF-8, naming `what` on error.
    pub fn read_string(&mut self, what: &'static str) -> Result<String, MsgpackError> {
        let bytes = self.read_bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| MsgpackError::NotUtf8(what))
    }

    fn peek_len(&self, width: usize) -> Result<u64, MsgpackError> {
        let field = self
            .buf
            .get(self.pos + 1..self.pos + 1 + width)
            .ok_or(MsgpackError::Truncated)?;
        Ok(field.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// Reads an array header and returns the element count.
    pub fn read_array_len(&mut self) -> Result<usize, MsgpackError> {
        self.read_container_len("array", 0x90, 0xdc)
    }

    /// Reads a map header and returns the number of key/value pairs.
    pub fn read_map_len(&mut self) -> Result<usize, MsgpackError> {
        self.read_container_len("map", 0x80, 0xde)
    }

    fn read_container_len(
        &mut self,
        expected: &'static str,
        fix: u8,
        wide16: u8,
    ) -> Result<usize, MsgpackError> {
        let byte = self.peek_byte()?;
        let len = if byte & 0xf0 == fix {
            self.pos += 1;
            u64::from(byte & 0x0f)
        } else if byte == wide16 {
            self.pos += 1;
            self.take_be(2)?
        } else if byte == wide16 + 1 {
            self.pos += 1;
            self.take_be(4)?
        } else {
            return Err(MsgpackError::Unexpected {
                expected,
                found: byte,
            });
        };
        let len = usize::try_from(len).map_err(|_| MsgpackError::Truncated)?;
        // Every element takes at least one byte: a larger count is corrupt,
        // and checking here keeps `Vec::with_capacity(len)` bounded.
        if len > self.buf.len() - self.pos {
            return Err(MsgpackError::Truncated);
        }
        Ok(len)
    }

    /// Skips one value of any type, returning it as a raw slice.
    pub fn read_raw(&mut self) -> Result<Bytes, MsgpackError> {
        let start = self.pos;
        let n = self.next_value_len()?;
        self.pos += n;
        Ok(self.buf.slice(start..start + n))
    }

    /// Skips one value of any type (no slice is taken).
    pub fn skip(&mut self) -> Result<(), MsgpackError> {
        self.pos += self.next_value_len()?;
        Ok(())
    }

    /// The encoded length of the value at the current position.
    fn next_value_len(&self) -> Result<usize, MsgpackError> {
        let rest = self.buf.get(self.pos..).ok_or(MsgpackError::Truncated)?;
        match scan_value(rest, rest.len()) {
            Ok(Scan::Complete(n)) => Ok(n),
            Ok(Scan::Incomplete { .. }) | Err(ScanError::TooLong) => Err(MsgpackError::Truncated),
            Err(ScanError::Reserved) => Err(MsgpackError::Reserved),
        }
    }

    /// Reads any value into a dynamic [`Value`].
    pub fn read_value(&mut self) -> Result<Value, MsgpackError> {
        self.read_value_at(0)
    }

    fn read_value_at(&mut self, depth: usize) -> Result<Value, MsgpackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        let byte = self.peek_byte()?;
        Ok(match Marker::from_u8(byte) {
            Marker::Null => {
                self.pos += 1;
                Value::Nil
            }
            Marker::True | Marker::False => Value::Bool(self.read_bool()?),
            Marker::FixPos(_)
            | Marker::FixNeg(_)
            | Marker::U8
            | Marker::U16
            | Marker::U32
            | Marker::U64
            | Marker::I8
            | Marker::I16
            | Marker::I32
            | Marker::I64 => Value::Int(self.read_integer()?),
            Marker::F32 => {
                self.pos += 1;
                Value::Float(f64::from(f32::from_bits(self.take_be(4)? as u32)))
            }
            Marker::F64 => {
                self.pos += 1;
                Value::Float(f64::from_bits(self.take_be(8)?))
            }
            Marker::FixStr(_)
            | Marker::Str8
            | Marker::Str16
            | Marker::Str32
            | Marker::Bin8
            | Marker::Bin16
            | Marker::Bin32 => Value::Bytes(self.read_bytes()?),
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                let len = self.read_array_len()?;
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.read_value_at(depth + 1)?);
                }
                Value::Array(items)
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let len = self.read_map_len()?;
                let mut pairs = Vec::with_capacity(len);
                for _ in 0..len {
                    let key = self.read_value_at(depth + 1)?;
                    let value = self.read_value_at(depth + 1)?;
                    pairs.push((key, value));
                }
                Value::Map(pairs)
            }
            Marker::Reserved => return Err(MsgpackError::Reserved),
            _ => Value::Ext(self.read_raw()?),
        })
    }
}

// === dynamic values ===

/// Any msgpack value, for the few places whose shape is app-defined
/// (`info` replies, `cluster` maps). Byte strings are zero-copy slices.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// nil.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer of any width.
    Int(i128),
    /// A float32 or float64.
    Float(f64),
    /// A str or bin value.
    Bytes(Bytes),
    /// An array.
    Array(Vec<Self>),
    /// A map, in wire order.
    Map(Vec<(Self, Self)>),
    /// An ext value, kept raw (marker included).
    Ext(Bytes),
}

impl Value {
    /// Writes the value back with v4 string forms. Integers outside the
    /// `i64`/`u64` ranges cannot occur (the reader only makes those), and
    /// floats are written as float64.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Nil => put_nil(buf),
            Self::Bool(b) => put_bool(buf, *b),
            Self::Int(i) => match (u64::try_from(*i), i64::try_from(*i)) {
                (Ok(u), _) => put_uint(buf, u),
                (_, Ok(s)) => put_int(buf, s),
                _ => put_nil(buf),
            },
            Self::Float(f) => {
                buf.put_u8(0xcb);
                buf.put_f64(*f);
            }
            Self::Bytes(b) => put_str(buf, b),
            Self::Array(items) => {
                put_array_len(buf, items.len());
                for item in items {
                    item.encode(buf);
                }
            }
            Self::Map(pairs) => {
                put_map_len(buf, pairs.len());
                for (k, v) in pairs {
                    k.encode(buf);
                    v.encode(buf);
                }
            }
            Self::Ext(raw) => buf.put_slice(raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut buf = BytesMut::new();
        f(&mut buf);
        buf.to_vec()
    }

    #[test]
    fn strings_use_v4_forms_only() {
        assert_eq!(encoded(|b| put_str(b, b"echo")), b"\xa4echo");
        let s31 = [b'x'; 31];
        assert_eq!(encoded(|b| put_str(b, &s31))[0], 0xbf);
        let s32 = [b'x'; 32];
        assert_eq!(encoded(|b| put_str(b, &s32))[..3], [0xda, 0x00, 0x20]);
        let s255 = [b'x'; 255];
        assert_eq!(encoded(|b| put_str(b, &s255))[..3], [0xda, 0x00, 0xff]);
        let big = vec![b'x'; 0x1_0000];
        assert_eq!(
            encoded(|b| put_str(b, &big))[..5],
            [0xdb, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(str_header_len(32), 3);
    }

    #[test]
    fn integers_use_smallest_forms() {
        assert_eq!(encoded(|b| put_uint(b, 1)), [0x01]);
        assert_eq!(encoded(|b| put_uint(b, 200)), [0xcc, 0xc8]);
        assert_eq!(encoded(|b| put_uint(b, 0x52ff)), [0xcd, 0x52, 0xff]);
        assert_eq!(encoded(|b| put_uint(b, 1 << 32))[0], 0xcf);
        assert_eq!(encoded(|b| put_int(b, -1)), [0xff]);
        assert_eq!(encoded(|b| put_int(b, -200)), [0xd1, 0xff, 0x38]);
        for v in [0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, u64::MAX] {
            assert_eq!(encoded(|b| put_uint(b, v)).len(), uint_len(v));
        }
    }

    #[test]
    fn reader_accepts_every_integer_width() {
        for (bytes, value) in [
            (&[0x05][..], 5i128),
            (&[0xcc, 0x05], 5),
            (&[0xcd, 0x00, 0x05], 5),
            (&[0xce, 0, 0, 0, 0x05], 5),
            (&[0xcf, 0, 0, 0, 0, 0, 0, 0, 0x05], 5),
            (&[0xd0, 0x05], 5),
            (&[0xd3, 0, 0, 0, 0, 0, 0, 0, 0x05], 5),
            (&[0xd0, 0xfb], -5),
            (&[0xfb], -5),
        ] {
            let buf = Bytes::copy_from_slice(bytes);
            assert_eq!(Reader::new(&buf).read_integer(), Ok(value), "{bytes:x?}");
        }
        let neg = Bytes::from_static(&[0xff]);
        assert_eq!(
            Reader::new(&neg).read_uint(),
            Err(MsgpackError::OutOfRange("u64"))
        );
    }

    #[test]
    fn reader_accepts_str_and_bin_alike_without_utf8() {
        for bytes in [
            &b"\xa2\xff\xfe"[..],
            b"\xd9\x02\xff\xfe",
            b"\xda\x00\x02\xff\xfe",
            b"\xc4\x02\xff\xfe",
            b"\xc6\x00\x00\x00\x02\xff\xfe",
        ] {
            let buf = Bytes::copy_from_slice(bytes);
            assert_eq!(
                Reader::new(&buf).read_bytes().as_deref(),
                Ok(&b"\xff\xfe"[..])
            );
        }
    }

    #[test]
    fn scanner_finds_ends_and_asks_for_more() {
        let frame = b"\x94\x01\x00\x91\xa4echo\x90";
        assert_eq!(scan_value(frame, 1024), Ok(Scan::Complete(frame.len())));
        for cut in 0..frame.len() {
            assert!(matches!(
                scan_value(&frame[..cut], 1024),
                Ok(Scan::Incomplete { min_len }) if min_len > cut && min_len <= frame.len()
            ));
        }
        assert_eq!(scan_value(b"\xc1", 1024), Err(ScanError::Reserved));
        // A str32 declaring 1 GiB is refused before any byte of it arrives.
        assert_eq!(
            scan_value(b"\xdb\x40\x00\x00\x00", 1 << 20),
            Err(ScanError::TooLong)
        );
        // So is an array claiming more elements than could ever fit.
        assert_eq!(
            scan_value(b"\xdd\xff\xff\xff\xff", 1 << 20),
            Err(ScanError::TooLong)
        );
    }

    #[test]
    fn values_round_trip() {
        let value = Value::Map(vec![
            (Value::Bytes(Bytes::from_static(b"k")), Value::Int(-7)),
            (
                Value::Int(1),
                Value::Array(vec![Value::Nil, Value::Bool(true), Value::Float(1.5)]),
            ),
        ]);
        let buf = Bytes::from(encoded(|b| value.encode(b)));
        assert_eq!(Reader::new(&buf).read_value(), Ok(value));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let buf = Bytes::from(vec![0x91; 10_000]);
        assert!(Reader::new(&buf).read_value().is_err());
    }
}
