//! Channel protocol states: owns which message ids may come next in one
//! direction of a channel (PROTOCOL.md §1.4–§1.5). Pure data, no I/O.

/// Message ids of the primitive ("option_of") protocol.
pub mod primitive {
    /// `value`: the result; terminal.
    pub const VALUE: u64 = 0;
    /// `error`: terminal.
    pub const ERROR: u64 = 1;
}

/// Message ids of the streaming ("stream_of") protocol.
pub mod streaming {
    /// `write` (C++ `chunk`): a chunk; may repeat.
    pub const WRITE: u64 = 0;
    /// `error`: terminal.
    pub const ERROR: u64 = 1;
    /// `close` (C++ `choke`): terminal.
    pub const CLOSE: u64 = 2;
}

/// The `discard` message that ends a locator `publish` or `routing` channel
/// from the client side.
pub const DISCARD: u64 = 0;

/// The state of one direction of a channel: what may be sent next.
///
/// This covers every transition protocol that Cocaine services use in
/// practice (§1.5). A [`super::graph::Graph`] describes the same thing for a
/// whole service and maps onto these with [`super::graph::Transition::protocol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Nothing more may be sent: the direction is finished (`{}` in a graph).
    Terminal,
    /// `value` or `error`, then terminal.
    Primitive,
    /// `write` any number of times, then `close` or `error`.
    Streaming,
    /// Only `discard`, then terminal (locator `publish` and `routing`).
    Discard,
}

impl Protocol {
    /// The state after sending message `ty`, or `None` when `ty` is not
    /// allowed here.
    pub fn next(self, ty: u64) -> Option<Self> {
        match (self, ty) {
            (Self::Primitive, primitive::VALUE | primitive::ERROR) => Some(Self::Terminal),
            (Self::Streaming, streaming::WRITE) => Some(Self::Streaming),
            (Self::Streaming, streaming::ERROR | streaming::CLOSE) => Some(Self::Terminal),
            (Self::Discard, DISCARD) => Some(Self::Terminal),
            _ => None,
        }
    }

    /// Whether nothing more may be sent.
    pub fn is_terminal(self) -> bool {
        self == Self::Terminal
    }

    /// The message id that aborts this direction with an error, if any.
    pub fn error_id(self) -> Option<u64> {
        match self {
            Self::Primitive => Some(primitive::ERROR),
            Self::Streaming => Some(streaming::ERROR),
            Self::Terminal | Self::Discard => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_repeats_then_ends() {
        let s = Protocol::Streaming;
        assert_eq!(s.next(streaming::WRITE), Some(Protocol::Streaming));
        assert_eq!(s.next(streaming::CLOSE), Some(Protocol::Terminal));
        assert_eq!(s.next(streaming::ERROR), Some(Protocol::Terminal));
        assert_eq!(s.next(3), None);
        assert_eq!(Protocol::Terminal.next(streaming::WRITE), None);
    }

    #[test]
    fn primitive_ends_after_one() {
        assert_eq!(
            Protocol::Primitive.next(primitive::VALUE),
            Some(Protocol::Terminal)
        );
        assert_eq!(Protocol::Primitive.next(2), None);
        assert_eq!(Protocol::Discard.next(DISCARD), Some(Protocol::Terminal));
        assert_eq!(Protocol::Discard.error_id(), None);
    }
}
