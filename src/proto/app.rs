//! App messages: owns the method ids and argument shapes of the app service
//! (PROTOCOL.md §4.1). The HTTP payloads that ride on `enqueue` live in
//! [`super::http`].

use bytes::Bytes;

use super::frame::{Args, Message};
use super::header::Headers;
use super::msgpack::{MsgpackError, Reader};

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
}
