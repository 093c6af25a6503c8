//! Fuzzing entry points: owns one function per target in `fuzz/`. Each
//! target there is a one-line call into this module, and
//! `tests/fuzz_corpus.rs` runs the same functions over the committed corpus
//! in the normal `cargo test`, so stable CI covers them.
//!
//! The functions take arbitrary bytes and panic only when an invariant of
//! the library is broken; that panic is what a fuzzer looks for. They are
//! not meant for production use.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::mux::{ChannelTable, OpenAction, ReceiveAction, SendAction};
use crate::proto::header::{
    DYNAMIC_TABLE_CAPACITY, ENTRY_OVERHEAD, STATIC_TABLE_LEN, static_entry,
};
use crate::proto::msgpack;
use crate::proto::msgpack::Reader;
use crate::proto::{
    Args, Frame, FrameCodec, Graph, Header, HeaderTable, Headers, Message, Protocol, RawArgs,
    RemoteError, app, http, locator,
};

mod codec;
mod edge;
mod etcd;
mod mux;
pub use self::codec::*;
pub use self::edge::*;
pub use self::etcd::*;
pub use self::mux::*;

/// The frame limit the targets use: small, so the fuzzer reaches it.
const FUZZ_MAX_FRAME: usize = 1 << 16;

#[cfg(test)]
mod tests;
