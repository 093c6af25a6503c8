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

mod read;
mod scan;
mod value;
mod write;
pub use self::read::*;
pub use self::scan::*;
pub use self::value::*;
pub use self::write::*;

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

#[cfg(test)]
mod tests;
