//! The wire: owns everything about Cocaine v12 bytes (PROTOCOL.md §1–§5):
//! msgpack forms, frames and their incremental codec, header tables, typed
//! messages, error categories and protocol graphs.
//!
//! Sans-IO: no sockets, tasks or clocks live here, so every piece is unit
//! tested, fuzzed (`fuzz/`) and benchmarked (`benches/codec.rs`) on plain
//! byte buffers. The connection that drives it is [`crate::mux`].

pub mod app;
pub mod error;
pub mod frame;
pub mod graph;
pub mod header;
pub mod http;
pub mod locator;
pub mod msgpack;
pub mod protocol;
pub mod websocket;

pub use self::error::{ErrorCode, RemoteError, category};
pub use self::frame::{
    Args, DEFAULT_MAX_FRAME_LEN, DecodeError, EncodeError, Frame, FrameCodec, FrameWrite, Message,
    MessageError, PrimitiveEvent, RawArgs, StreamEvent,
};
pub use self::graph::Graph;
pub use self::header::{Header, HeaderTable, Headers, InvalidHeader, TraceContext};
pub use self::protocol::Protocol;
