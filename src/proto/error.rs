//! Protocol errors: owns the `[[category, code], message?]` shape of §1.6,
//! the category table as named constants, and the well-known codes that the
//! rest of rpcgate makes decisions on (retry, HTTP status).

use std::fmt;

use bytes::{BufMut, Bytes};

use super::msgpack::{self, MsgpackError, Reader};

/// Error category ids (PROTOCOL.md §1.6).
pub mod category {
    /// `std::system_category`: errno values.
    pub const SYSTEM: u64 = 0x01;
    /// asio system errors.
    pub const ASIO_SYSTEM: u64 = 0x02;
    /// asio netdb errors.
    pub const ASIO_NETDB: u64 = 0x03;
    /// asio addrinfo errors.
    pub const ASIO_ADDRINFO: u64 = 0x04;
    /// asio misc errors.
    pub const ASIO_MISC: u64 = 0x05;
    /// `cocaine.rpc.transport`: framing and header errors.
    pub const TRANSPORT: u64 = 0x06;
    /// `cocaine.rpc.dispatch`: channel and slot errors.
    pub const DISPATCH: u64 = 0x07;
    /// `cocaine.plugins`: the plugin repository.
    pub const PLUGINS: u64 = 0x08;
    /// Security (tokens, ACLs).
    pub const SECURITY: u64 = 0x09;
    /// `cocaine.service.locator`.
    pub const LOCATOR: u64 = 0x0a;
    /// Unicorn.
    pub const UNICORN: u64 = 0x0b;
    /// `std::generic_category`: errno values ("the application has been stopped" is `EPIPE`).
    pub const GENERIC: u64 = 0x0c;
    /// `cocaine.rpc.protocol`.
    pub const PROTOCOL: u64 = 0x0d;
    /// Unknown category.
    pub const UNKNOWN: u64 = 0xff;
    /// Docker (curl) errors.
    pub const DOCKER: u64 = 0x50ff;
    /// The node service.
    pub const NODE: u64 = 0x51ff;
    /// The node's overseer (queue and pool limits).
    pub const OVERSEER: u64 = 0x52ff;
    /// The node's slaves (worker processes).
    pub const SLAVE: u64 = 0x53ff;
    /// Vicodyn, the runtime-side proxy. Unverified (\[U\] in PROTOCOL.md §9): only the old
    /// proxy names it; nothing here depends on it beyond a label.
    pub const VICODYN: u64 = 0x54ff;
    /// Worker errors raised by a framework (event not found).
    pub const WORKER: u64 = 42;
    /// Worker errors raised by user code.
    pub const WORKER_USER: u64 = 43;

    /// A short name for a category id, for logs and metric labels.
    pub fn name(category: u64) -> &'static str {
        match category {
            SYSTEM => "system",
            ASIO_SYSTEM | ASIO_NETDB | ASIO_ADDRINFO | ASIO_MISC => "asio",
            TRANSPORT => "transport",
            DISPATCH => "dispatch",
            PLUGINS => "plugins",
            SECURITY => "security",
            LOCATOR => "locator",
            UNICORN => "unicorn",
            GENERIC => "generic",
            PROTOCOL => "protocol",
            DOCKER => "docker",
            NODE => "node",
            OVERSEER => "overseer",
            SLAVE => "slave",
            VICODYN => "vicodyn",
            WORKER => "worker",
            WORKER_USER => "app",
            _ => "unknown",
        }
    }
}

/// An error code: a category id and a code within it, `[category, code]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode {
    /// The category id (see [`category`]).
    pub category: u64,
    /// The code within the category.
    pub code: u64,
}

impl ErrorCode {
    /// Transport: the frame is malformed (6, 1).
    pub const FRAME_FORMAT: Self = Self::new(category::TRANSPORT, 1);
    /// Transport: the header list is malformed (6, 2).
    pub const HPACK: Self = Self::new(category::TRANSPORT, 2);
    /// Dispatch: arguments could not be decoded (7, 2).
    pub const INVALID_ARGUMENT: Self = Self::new(category::DISPATCH, 2);
    /// Dispatch: the other side went away (7, 3). rpcgate cancels channels with it (§4.3).
    pub const NOT_CONNECTED: Self = Self::new(category::DISPATCH, 3);
    /// Dispatch: the message id is not valid in this state (7, 5).
    pub const SLOT_NOT_FOUND: Self = Self::new(category::DISPATCH, 5);
    /// Dispatch: a handler failed without a better error (7, 7).
    pub const UNCAUGHT_ERROR: Self = Self::new(category::DISPATCH, 7);
    /// Locator: "service is not available" (10, 1).
    pub const SERVICE_NOT_AVAILABLE: Self = Self::new(category::LOCATOR, 1);
    /// Locator: a graph was published with version 0 (10, 3).
    pub const MISSING_VERSION: Self = Self::new(category::LOCATOR, 3);
    /// Generic `EPIPE`: "the application has been stopped" (0x0C, 32).
    pub const APP_STOPPED: Self = Self::new(category::GENERIC, 32);
    /// Node: the event expired in the queue (0x51FF, 1).
    pub const DEADLINE: Self = Self::new(category::NODE, 1);
    /// Node: the invocation timed out (0x51FF, 3).
    pub const TIMEOUT: Self = Self::new(category::NODE, 3);
    /// Node: the app is not running (0x51FF, 6).
    pub const NOT_RUNNING: Self = Self::new(category::NODE, 6);
    /// Overseer: "queue is full" (0x52FF, 1).
    pub const QUEUE_IS_FULL: Self = Self::new(category::OVERSEER, 1);
    /// Worker: "event not found" (42, 1).
    pub const EVENT_NOT_FOUND: Self = Self::new(category::WORKER, 1);

    /// Makes a code.
    pub const fn new(category: u64, code: u64) -> Self {
        Self { category, code }
    }

    /// Whether an error with this code proves that the request never reached
    /// a worker, so sending it again cannot run it twice (DESIGN.md §3.4):
    /// queue full, app stopped, or app not running.
    pub fn is_never_delivered(self) -> bool {
        matches!(
            self,
            Self::QUEUE_IS_FULL | Self::APP_STOPPED | Self::NOT_RUNNING
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", category::name(self.category), self.code)
    }
}

/// An `error` message from the peer, or one to send: `[[category, code], message?]`.
///
/// Displays as `[code]: message`, as the Cocaine Rust framework did, so HTTP
/// error bodies read the same as the old proxy's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RemoteError {
    /// The category and code.
    pub code: ErrorCode,
    /// The optional message; arbitrary bytes.
    pub message: Option<Bytes>,
}

impl RemoteError {
    /// Makes an error with a message.
    pub fn new(code: ErrorCode, message: impl Into<Bytes>) -> Self {
        Self {
            code,
            message: Some(message.into()),
        }
    }

    /// The message as text, with invalid UTF-8 replaced.
    pub fn message_lossy(&self) -> String {
        self.message
            .as_deref()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .unwrap_or_default()
    }

    /// Decodes the args of an `error` message. The message string is
    /// optional (§1.6), and further elements are ignored.
    pub fn decode_args(args: &Bytes) -> Result<Self, MsgpackError> {
        let mut r = Reader::new(args);
        let len = r.read_array_len()?;
        if len == 0 {
            return Err(MsgpackError::Unexpected {
                expected: "[[category, code], message?]",
                found: 0x90,
            });
        }
        if r.read_array_len()? < 2 {
            return Err(MsgpackError::Unexpected {
                expected: "[category, code]",
                found: 0x91,
            });
        }
        let code = ErrorCode::new(r.read_uint()?, r.read_uint()?);
        let message = if len >= 2 && !r.is_nil() {
            Some(r.read_bytes()?)
        } else {
            None
        };
        Ok(Self { code, message })
    }

    /// Writes the args array `[[category, code], message]`.
    pub fn encode_args(&self, buf: &mut impl BufMut) {
        msgpack::put_array_len(buf, if self.message.is_some() { 2 } else { 1 });
        msgpack::put_array_len(buf, 2);
        msgpack::put_uint(buf, self.code.category);
        msgpack::put_uint(buf, self.code.code);
        if let Some(message) = &self.message {
            msgpack::put_str(buf, message);
        }
    }

    /// The exact size of [`RemoteError::encode_args`].
    pub fn encoded_args_len(&self) -> usize {
        2 + msgpack::uint_len(self.code.category)
            + msgpack::uint_len(self.code.code)
            + self
                .message
                .as_ref()
                .map_or(0, |m| msgpack::str_header_len(m.len()) + m.len())
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]: {}", self.code.code, self.message_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn displays_like_the_rust_framework() {
        let e = RemoteError::new(ErrorCode::SERVICE_NOT_AVAILABLE, "service is not available");
        assert_eq!(e.to_string(), "[1]: service is not available");
    }

    #[test]
    fn message_is_optional() {
        let args = Bytes::from_static(b"\x91\x92\xcd\x51\xff\x03");
        let e = RemoteError::decode_args(&args).unwrap();
        assert_eq!(e.code, ErrorCode::TIMEOUT);
        assert_eq!(e.message, None);
        let mut buf = BytesMut::new();
        e.encode_args(&mut buf);
        assert_eq!(&buf[..], &args[..]);
        assert_eq!(e.encoded_args_len(), args.len());
    }

    #[test]
    fn retry_safety_follows_design() {
        assert!(ErrorCode::QUEUE_IS_FULL.is_never_delivered());
        assert!(ErrorCode::APP_STOPPED.is_never_delivered());
        assert!(ErrorCode::NOT_RUNNING.is_never_delivered());
        assert!(!ErrorCode::TIMEOUT.is_never_delivered());
        assert!(!ErrorCode::DEADLINE.is_never_delivered());
    }
}
