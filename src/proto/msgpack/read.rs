//! The reader: lenient (str or bin, any integer width) and zero-copy.

use super::*;

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
