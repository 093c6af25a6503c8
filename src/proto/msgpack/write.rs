//! The writer: v4 forms only (no `str8`, no `bin`), and the encoded sizes.

use super::*;

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
pub(super) fn saturate_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
