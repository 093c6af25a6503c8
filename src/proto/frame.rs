//! Frames: owns `[channel, type, args, headers]` (PROTOCOL.md §1.3), the
//! incremental [`FrameCodec`], and the outgoing [`Message`] with its typed
//! [`Args`]. Sans-IO: it sees byte buffers, never sockets or clocks.
//!
//! Decoding is lenient (3+ elements, str or bin, any integer width) and
//! zero-copy: a decoded frame is one `Bytes` split off the read buffer, and
//! its args and body chunks are slices of it. Encoding is strict: 4 elements,
//! v4 string forms, validated headers, and a length check before a single
//! byte is written.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::RemoteError;
use super::header::{HeaderError, HeaderTable, Headers, InvalidHeader};
use super::msgpack::{self, MsgpackError, Reader, Scan, ScanError, ScanState};
use super::protocol::{primitive, streaming};

/// The default largest frame accepted or sent: 64 MiB.
///
/// A frame carries one request (the whole buffered HTTP body) or one response
/// chunk, so this must exceed the gateway's body limit; it must also stay
/// small enough that a hostile peer cannot make a connection hold gigabytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 << 20;

/// The most the decoder reserves ahead of bytes that have actually arrived.
///
/// A frame header may announce a large body; growing the buffer in steps of
/// at most this (the buffer itself doubles as it grows) means memory tracks
/// what the peer really sent, not what it claimed.
pub const RESERVE_STEP: usize = 256 << 10;

/// Payloads at least this long are handed to a [`FrameWrite`] as their own
/// `Bytes` instead of being copied next to the frame head; see `mux`.
pub const LARGE_PAYLOAD: usize = 16 << 10;

/// Why bytes from the peer could not be decoded. Every variant is fatal for
/// the connection: the stream can no longer be trusted to be in step.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A frame is (or declares itself) longer than the configured maximum.
    #[error("frame exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// The bytes are msgpack but not a valid frame (transport error 6/1).
    #[error("malformed frame: {0}")]
    FrameFormat(#[source] MsgpackError),
    /// The header list could not be decoded (transport error 6/2).
    #[error("malformed headers: {0}")]
    Header(#[from] HeaderError),
    /// Reading the socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Why a message could not be encoded. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded frame would exceed the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The encoded length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A reserved header has an invalid value.
    #[error(transparent)]
    InvalidHeader(#[from] InvalidHeader),
    /// Writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// A frame's args did not match the message it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The message id is not valid in the channel's current state.
    #[error("unexpected message type {0}")]
    UnexpectedType(u64),
    /// The args have the wrong shape.
    #[error("bad arguments: {0}")]
    BadArgs(#[from] MsgpackError),
}

// === Frame (incoming) ===

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The channel id.
    pub channel: u64,
    /// The message type id, relative to the channel's current state.
    pub ty: u64,
    /// The args array, still msgpack-encoded (a slice of the frame).
    pub args: Bytes,
    /// The decoded headers.
    pub headers: Headers,
}

/// A message of the streaming protocol, as the peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// `write [chunk]`: the chunk, zero-copy.
    Write(Bytes),
    /// `error [[category, code], message]`.
    Error(RemoteError),
    /// `close []`.
    Close,
}

/// A message of the primitive protocol, as the peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimitiveEvent {
    /// `value args`: the args array, still encoded.
    Value(Bytes),
    /// `error [[category, code], message]`.
    Error(RemoteError),
}

impl Frame {
    /// Parses one complete frame. `bytes` must hold exactly one msgpack value.
    pub fn parse(bytes: Bytes, table: &mut HeaderTable) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&bytes);
        let len = r.read_array_len().map_err(DecodeError::FrameFormat)?;
        if len < 3 {
            return Err(DecodeError::FrameFormat(MsgpackError::Unexpected {
                expected: "a frame of at least 3 elements",
                found: 0x90 | len as u8,
            }));
        }
        let channel = r.read_uint().map_err(DecodeError::FrameFormat)?;
        let ty = r.read_uint().map_err(DecodeError::FrameFormat)?;
        let args_start = r.position();
        // Element 2 must be an array; checking the header is enough because
        // the scanner already proved the whole value is complete.
        let mut peek = r.clone();
        peek.read_array_len().map_err(DecodeError::FrameFormat)?;
        r.skip().map_err(DecodeError::FrameFormat)?;
        let args = bytes.slice(args_start..r.position());
        let headers = if len >= 4 {
            Headers::decode(&mut r, table)?
        } else {
            Headers::new()
        };
        for _ in 4..len {
            r.skip().map_err(DecodeError::FrameFormat)?;
        }
        Ok(Self {
            channel,
            ty,
            args,
            headers,
        })
    }

    /// A reader over the args array.
    pub fn args_reader(&self) -> Reader<'_> {
        Reader::new(&self.args)
    }

    /// The single byte-string argument of a `write`, zero-copy.
    pub fn chunk(&self) -> Result<Bytes, MsgpackError> {
        let mut r = self.args_reader();
        if r.read_array_len()? == 0 {
            return Err(MsgpackError::Unexpected {
                expected: "[chunk]",
                found: 0x90,
            });
        }
        r.read_bytes()
    }

    /// Interprets the frame as a message of the streaming protocol.
    pub fn stream_event(&self) -> Result<StreamEvent, MessageError> {
        match self.ty {
            streaming::WRITE => Ok(StreamEvent::Write(self.chunk()?)),
            streaming::ERROR => Ok(StreamEvent::Error(RemoteError::decode_args(&self.args)?)),
            streaming::CLOSE => Ok(StreamEvent::Close),
            other => Err(MessageError::UnexpectedType(other)),
        }
    }

    /// Interprets the frame as a message of the primitive protocol.
    pub fn primitive_event(&self) -> Result<PrimitiveEvent, MessageError> {
        match self.ty {
            primitive::VALUE => Ok(PrimitiveEvent::Value(self.args.clone())),
            primitive::ERROR => Ok(PrimitiveEvent::Error(RemoteError::decode_args(&self.args)?)),
            other => Err(MessageError::UnexpectedType(other)),
        }
    }
}

// === Args and Message (outgoing) ===

/// A pre-encoded args array, checked to be exactly one msgpack array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawArgs(Bytes);

impl RawArgs {
    /// Checks that `bytes` is exactly one msgpack array.
    pub fn new(bytes: Bytes) -> Result<Self, MsgpackError> {
        let mut r = Reader::new(&bytes);
        r.clone().read_array_len()?;
        r.skip()?;
        if !r.is_empty() {
            return Err(MsgpackError::Unexpected {
                expected: "exactly one args array",
                found: bytes[r.position()],
            });
        }
        Ok(Self(bytes))
    }

    /// Encodes an args array of `len` elements written by `write`, which
    /// must write exactly `len` values.
    pub fn build(len: usize, write: impl FnOnce(&mut BytesMut)) -> Result<Self, MsgpackError> {
        let mut buf = BytesMut::new();
        msgpack::put_array_len(&mut buf, len);
        write(&mut buf);
        let bytes = buf.freeze();
        let mut r = Reader::new(&bytes);
        if r.read_array_len()? != len {
            return Err(MsgpackError::OutOfRange("args length"));
        }
        Self::new(bytes)
    }

    /// The encoded array.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

/// The args of an outgoing message, in the shapes the IDL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// `[]`.
    Empty,
    /// `[bytes]`: a `write` chunk or an `enqueue` event name, as a v4 str.
    Bytes(Bytes),
    /// `[[category, code], message?]`.
    Error(RemoteError),
    /// Anything else, pre-encoded.
    Raw(RawArgs),
}

impl Args {
    /// The exact encoded length.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Empty => 1,
            Self::Bytes(b) => 1 + msgpack::str_header_len(b.len()) + b.len(),
            Self::Error(e) => e.encoded_args_len(),
            Self::Raw(raw) => raw.0.len(),
        }
    }

    fn encode(&self, out: &mut impl FrameWrite) {
        match self {
            Self::Empty => msgpack::put_array_len(out.buf(), 0),
            Self::Bytes(b) => {
                msgpack::put_array_len(out.buf(), 1);
                msgpack::put_str_header(out.buf(), b.len());
                out.put_payload(b);
            }
            Self::Error(e) => e.encode_args(out.buf()),
            Self::Raw(raw) => out.put_payload(&raw.0),
        }
    }

    /// The args as one encoded array.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// An outgoing message: what one frame carries, less the channel id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message type id.
    pub ty: u64,
    /// The args.
    pub args: Args,
    /// The headers; validated before encoding.
    pub headers: Headers,
}

impl Message {
    /// A message with no headers.
    pub fn new(ty: u64, args: Args) -> Self {
        Self {
            ty,
            args,
            headers: Headers::new(),
        }
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Streaming `write [chunk]`.
    pub fn write(chunk: impl Into<Bytes>) -> Self {
        Self::new(streaming::WRITE, Args::Bytes(chunk.into()))
    }

    /// Streaming `close []`.
    pub fn close() -> Self {
        Self::new(streaming::CLOSE, Args::Empty)
    }

    /// `error [[category, code], message]` with the given message id.
    pub fn error(ty: u64, error: RemoteError) -> Self {
        Self::new(ty, Args::Error(error))
    }

    /// The exact length of the frame on `channel`.
    pub fn encoded_len(&self, channel: u64) -> usize {
        1 + msgpack::uint_len(channel)
            + msgpack::uint_len(self.ty)
            + self.args.encoded_len()
            + self.headers.encoded_len()
    }

    /// Checks headers and length against `max_frame_len`, so that encoding
    /// can no longer fail.
    pub fn check(&self, channel: u64, max_frame_len: usize) -> Result<(), EncodeError> {
        self.headers.validate()?;
        let len = self.encoded_len(channel);
        if len > max_frame_len {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: max_frame_len,
            });
        }
        Ok(())
    }

    /// Writes the frame. Call [`Message::check`] first; this does not
    /// validate.
    pub fn encode(&self, channel: u64, out: &mut impl FrameWrite) {
        let buf = out.buf();
        msgpack::put_array_len(buf, 4);
        msgpack::put_uint(buf, channel);
        msgpack::put_uint(buf, self.ty);
        self.args.encode(out);
        self.headers.encode(out.buf());
    }
}

/// Where [`Message::encode`] writes: a buffer for the small parts, and a
/// hook for payloads, so a writer can queue large ones without copying.
pub trait FrameWrite {
    /// The buffer for frame heads, small args and headers.
    fn buf(&mut self) -> &mut BytesMut;

    /// Appends a payload (a chunk or pre-encoded args). The default copies.
    fn put_payload(&mut self, payload: &Bytes) {
        self.buf().put_slice(payload);
    }
}

impl FrameWrite for BytesMut {
    fn buf(&mut self) -> &mut BytesMut {
        self
    }
}

// === FrameCodec ===

/// The incremental frame codec of one connection.
///
/// It owns the receive-side [`HeaderTable`], so a new connection must get a
/// new codec (that is the "reset on reconnect" of §2.1).
#[derive(Debug)]
pub struct FrameCodec {
    max_frame_len: usize,
    table: HeaderTable,
    /// Where the scan of a partly received frame resumes.
    scan: ScanState,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max_frame_len` bytes, which
    /// is capped at `u32::MAX` (the largest msgpack length).
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: max_frame_len.min(u32::MAX as usize),
            table: HeaderTable::new(),
            scan: ScanState::default(),
        }
    }

    /// The configured maximum frame length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The receive-side header table.
    pub fn table(&self) -> &HeaderTable {
        &self.table
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if let Some(&first) = src.first() {
            // A frame is an array: reject anything else at its first byte,
            // without waiting for more (an HTTP client on the wrong port, say).
            if !matches!(first, 0x90..=0x9f | 0xdc | 0xdd) {
                return Err(DecodeError::FrameFormat(MsgpackError::Unexpected {
                    expected: "a frame array",
                    found: first,
                }));
            }
        }
        match msgpack::scan_resume(src, self.max_frame_len, &mut self.scan) {
            Ok(Scan::Complete(len)) => {
                let bytes = src.split_to(len).freeze();
                Frame::parse(bytes, &mut self.table).map(Some)
            }
            Ok(Scan::Incomplete { min_len }) => {
                src.reserve((min_len - src.len()).min(RESERVE_STEP));
                Ok(None)
            }
            Err(ScanError::TooLong) => Err(DecodeError::FrameTooLarge {
                max: self.max_frame_len,
            }),
            Err(ScanError::Reserved) => Err(DecodeError::FrameFormat(MsgpackError::Reserved)),
        }
    }
}

impl Encoder<(u64, Message)> for FrameCodec {
    type Error = EncodeError;

    fn encode(
        &mut self,
        (channel, message): (u64, Message),
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        message.check(channel, self.max_frame_len)?;
        dst.reserve(message.encoded_len(channel));
        message.encode(channel, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
