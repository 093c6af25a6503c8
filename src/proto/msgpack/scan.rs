//! The scanner: where the next value ends, resumable across reads.

use super::*;

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
