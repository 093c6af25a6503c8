//! WebSocket messages on a channel: owns the mapping of one WebSocket data
//! message to one `write` chunk and back. No sockets: the gateway's
//! WebSocket task and the app SDK both use it.
//!
//! A chunk is the message's opcode in one byte, then its payload:
//!
//! | first byte | message | payload |
//! |---|---|---|
//! | `0x01` | text | UTF-8 text |
//! | `0x02` | binary | any bytes |
//!
//! These are RFC 6455's own opcodes (§5.2). Control frames (ping, pong,
//! close) never travel as chunks: the gateway answers pings itself, and a
//! close is the channel's `close` (or `error`).

use bytes::{BufMut, Bytes, BytesMut};

/// The first byte of a text message's chunk.
pub const TEXT: u8 = 0x01;
/// The first byte of a binary message's chunk.
pub const BINARY: u8 = 0x02;

/// The longest close reason RFC 6455 allows (a control frame's 125 bytes,
/// less the 2-byte code).
pub const MAX_CLOSE_REASON: usize = 123;

/// What kind of data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// Any bytes.
    Binary,
}

impl Kind {
    /// The opcode byte.
    pub fn opcode(self) -> u8 {
        match self {
            Self::Text => TEXT,
            Self::Binary => BINARY,
        }
    }
}

/// A chunk that is not a WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadChunk {
    /// An empty chunk has no opcode.
    #[error("an empty chunk is not a WebSocket message (it needs an opcode byte)")]
    Empty,
    /// The first byte is neither `0x01` (text) nor `0x02` (binary).
    #[error("opcode {0:#04x} is not a data message (0x01 text, 0x02 binary)")]
    Opcode(u8),
    /// A text message that is not UTF-8.
    #[error("a text message is not valid UTF-8")]
    NotUtf8,
}

/// The chunk of a `kind` message carrying `payload`.
pub fn encode(kind: Kind, payload: &[u8]) -> Bytes {
    let mut chunk = BytesMut::with_capacity(1 + payload.len());
    chunk.put_u8(kind.opcode());
    chunk.put_slice(payload);
    chunk.freeze()
}

/// The message in `chunk`: its kind and payload (a slice of `chunk`, no
/// copy). A text payload is checked to be UTF-8.
pub fn decode(chunk: &Bytes) -> Result<(Kind, Bytes), BadChunk> {
    let (&opcode, rest) = chunk.split_first().ok_or(BadChunk::Empty)?;
    let kind = match opcode {
        TEXT => Kind::Text,
        BINARY => Kind::Binary,
        other => return Err(BadChunk::Opcode(other)),
    };
    if kind == Kind::Text && std::str::from_utf8(rest).is_err() {
        return Err(BadChunk::NotUtf8);
    }
    Ok((kind, chunk.slice(1..)))
}

/// `reason` cut to at most [`MAX_CLOSE_REASON`] bytes, on a character
/// boundary.
pub fn close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_and_binary() {
        let text = encode(Kind::Text, "héllo".as_bytes());
        assert_eq!(text[0], 0x01);
        assert_eq!(decode(&text), Ok((Kind::Text, Bytes::from("héllo"))));
        let binary = encode(Kind::Binary, &[0, 0xff, 7]);
        assert_eq!(&binary[..], &[0x02, 0, 0xff, 7]);
        assert_eq!(
            decode(&binary),
            Ok((Kind::Binary, Bytes::from_static(&[0, 0xff, 7])))
        );
        assert_eq!(
            decode(&encode(Kind::Binary, b"")),
            Ok((Kind::Binary, Bytes::new()))
        );
    }

    #[test]
    fn refuses_chunks_that_are_not_messages() {
        assert_eq!(decode(&Bytes::new()), Err(BadChunk::Empty));
        assert_eq!(
            decode(&Bytes::from_static(b"\x09ping")),
            Err(BadChunk::Opcode(9))
        );
        assert_eq!(
            decode(&Bytes::from_static(b"hello")),
            Err(BadChunk::Opcode(b'h'))
        );
        assert_eq!(
            decode(&Bytes::from_static(b"\x01\xff\xfe")),
            Err(BadChunk::NotUtf8)
        );
    }

    #[test]
    fn close_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = close_reason(&long);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
        let ascii = "x".repeat(200);
        assert_eq!(close_reason(&ascii).len(), MAX_CLOSE_REASON);
    }
}
