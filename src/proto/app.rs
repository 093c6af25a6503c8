//! App messages: owns the method ids and argument shapes of the app service
//! (PROTOCOL.md §4.1). The HTTP payloads that ride on `enqueue` live in
//! [`super::http`].

use bytes::{Bytes, BytesMut};

use super::frame::{Args, Message, RawArgs};
use super::header::Headers;
use super::msgpack::{self, MsgpackError, Reader, Value};

/// App method ids.
pub mod method {
    /// `enqueue [event]` (or `[event, tag]`, the tag ignored): streaming both ways.
    pub const ENQUEUE: u64 = 0;
    /// `info []` → primitive `[dynamic]`.
    pub const INFO: u64 = 1;
    /// `control []` → streaming of worker counts in, primitive out.
    pub const CONTROL: u64 = 2;
}

/// The app protocol version that `resolve` reports for apps.
pub const PROTOCOL_VERSION: u64 = 1;

/// `enqueue [event]`: opens a channel to the handler of `event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueue {
    /// The event name, e.g. `http`.
    pub event: Bytes,
}

impl Enqueue {
    /// The `enqueue` message with `headers` (trace ids, timeout, ...).
    pub fn message(&self, headers: Headers) -> Message {
        Message::new(method::ENQUEUE, Args::Bytes(self.event.clone())).with_headers(headers)
    }

    /// Reads the args array; a deprecated tag after the event is ignored.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let mut r = Reader::new(bytes);
        if r.read_array_len()? == 0 {
            return Err(MsgpackError::Unexpected {
                expected: "[event, tag?]",
                found: 0x90,
            });
        }
        Ok(Self {
            event: r.read_bytes()?,
        })
    }
}

/// The `value` of `info`: `[dynamic]`, an app-defined description of the
/// app and its overseer (queue depth, pool state, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct InfoReply {
    /// The app-defined value, usually a map.
    pub info: Value,
}

impl InfoReply {
    /// The `value` args array.
    pub fn to_args(&self) -> Args {
        let mut buf = BytesMut::new();
        msgpack::put_array_len(&mut buf, 1);
        self.info.encode(&mut buf);
        RawArgs::new(buf.freeze()).map_or(Args::Empty, Args::Raw)
    }

    /// Reads the `value` args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let mut r = Reader::new(bytes);
        if r.read_array_len()? == 0 {
            return Err(MsgpackError::Unexpected {
                expected: "[info]",
                found: 0x90,
            });
        }
        Ok(Self {
            info: r.read_value()?,
        })
    }
}

/// A `write` on a `control` channel: `[workers]`, the desired worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlChunk {
    /// How many workers the app should run.
    pub workers: u64,
}

impl ControlChunk {
    /// The `write` args array.
    pub fn to_args(&self) -> Args {
        let mut buf = BytesMut::new();
        msgpack::put_array_len(&mut buf, 1);
        msgpack::put_uint(&mut buf, self.workers);
        RawArgs::new(buf.freeze()).map_or(Args::Empty, Args::Raw)
    }

    /// Reads the `write` args array.
    pub fn decode_args(bytes: &Bytes) -> Result<Self, MsgpackError> {
        let mut r = Reader::new(bytes);
        if r.read_array_len()? == 0 {
            return Err(MsgpackError::Unexpected {
                expected: "[workers]",
                found: 0x90,
            });
        }
        Ok(Self {
            workers: r.read_uint()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_round_trips_and_ignores_the_tag() {
        let enqueue = Enqueue {
            event: "http".into(),
        };
        let message = enqueue.message(Headers::new());
        assert_eq!(message.ty, method::ENQUEUE);
        let args = message.args.to_bytes();
        assert_eq!(&args[..], b"\x91\xa4http");
        assert_eq!(Enqueue::decode_args(&args).unwrap(), enqueue);
        let tagged = Bytes::from_static(b"\x92\xa4http\xa3tag");
        assert_eq!(Enqueue::decode_args(&tagged).unwrap(), enqueue);
        assert!(Enqueue::decode_args(&Bytes::from_static(b"\x90")).is_err());
    }

    #[test]
    fn info_and_control_round_trip() {
        let info = InfoReply {
            info: Value::Map(vec![(
                Value::Bytes("queue".into()),
                Value::Map(vec![(Value::Bytes("depth".into()), Value::Int(3))]),
            )]),
        };
        assert_eq!(
            InfoReply::decode_args(&info.to_args().to_bytes()).unwrap(),
            info
        );
        let control = ControlChunk { workers: 8 };
        assert_eq!(control.to_args().to_bytes(), &b"\x91\x08"[..]);
        assert_eq!(
            ControlChunk::decode_args(&control.to_args().to_bytes()).unwrap(),
            control
        );
    }
}
