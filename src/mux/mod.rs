//! One backend connection: owns the socket task, the channel table, channel
//! id allocation, write batching, cancellation, and failing every open
//! channel when the connection dies. It knows nothing about pools, HTTP or
//! the locator.
//!
//! ```text
//! MuxHandle::open ──bounded queue──▶ Connection task ──▶ socket
//!        │                                 │
//!        └── Channel { sender, receiver } ◀┘ (per-channel bounded queue)
//! ```
//!
//! - Ids are allocated per connection from 1, strictly increasing, never
//!   reused, and reach the wire in that order (allocation and queueing happen
//!   under one lock).
//! - Dropping a [`ChannelSender`] whose side is not terminal cancels the
//!   channel on the wire with `error [[7, 3], ...]` (PROTOCOL.md §4.3).
//! - When the connection dies, every open channel gets
//!   [`ChannelError::ConnectionLost`] with a [`Delivery`] saying whether its
//!   request reached the socket, so callers can tell whether a retry is safe.
//! - Frames are batched: queued messages are encoded together and written
//!   with one vectored write; large payloads are written from their own
//!   `Bytes`, never copied. Body chunks read are slices of the read buffer.
//!
//! # Example
//!
//! ```no_run
//! use rpcgate::mux::{self, Invocation, MuxConfig};
//! use rpcgate::proto::http::HttpRequest;
//! use rpcgate::proto::{Args, Headers, Message, StreamEvent, TraceContext};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let stream = tokio::net::TcpStream::connect("127.0.0.1:41234").await?;
//! let (handle, connection) = mux::from_tcp(stream, MuxConfig::default())?;
//! tokio::spawn(connection.run());
//!
//! let mut headers = Headers::new();
//! headers.set_trace(TraceContext { trace_id: 0x4d2, span_id: 7, parent_id: 0x4d2 });
//! let enqueue = Message::new(0, Args::Bytes("http".into())).with_headers(headers);
//! let (mut tx, mut rx) = handle.open(Invocation::enqueue(enqueue)).await?.split();
//! let request = HttpRequest {
//!     method: "GET".into(),
//!     uri: "/".into(),
//!     version: "1.1".into(),
//!     ..Default::default()
//! };
//! tx.write(request.to_bytes()).await?;
//! tx.close().await?;
//! while let Some(frame) = rx.recv().await {
//!     match frame?.stream_event()? {
//!         StreamEvent::Write(chunk) => println!("{} bytes", chunk.len()),
//!         StreamEvent::Error(e) => println!("app error {e}"),
//!         StreamEvent::Close => break,
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Backpressure: by default, when a channel's reply queue is full, the
//! task stops reading the socket until its owner catches up (Cocaine has
//! no flow control). Writes and cancellations go on meanwhile. A
//! connection given a [`ReplyBudget`] ([`MuxConfig::reply_budget`], what
//! the gateway's pools use) never stops reading for one owner: replies are
//! buffered within the budget's bounds, and an owner past them is cut
//! (its channel cancelled), so no slow reader holds up the others.

pub(crate) mod batch_queue;
mod channel;
mod error;
pub(crate) mod frame_queue;
mod handle;
pub(crate) mod id_hash;
mod reply_budget;
mod table;
mod task;
pub(crate) mod write;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

pub use self::channel::{Channel, ChannelReceiver, ChannelSender};
pub use self::error::{ChannelError, ConnectionError, Delivery};
pub use self::handle::{Invocation, MuxHandle};
pub use self::reply_budget::ReplyBudget;
pub use self::table::{Cancel, ChannelTable, OpenAction, ReceiveAction, SendAction};
pub use self::task::Connection;
pub use self::write::{MAX_IOVECS, WriteQueue};
use crate::proto::DEFAULT_MAX_FRAME_LEN;

/// Settings of one backend connection.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// The largest frame sent or accepted.
    pub max_frame_len: usize,
    /// Room in the queue from handles to the task. When full, `open` and
    /// `send` wait: that is the backpressure on callers.
    pub command_queue: usize,
    /// Frames buffered per channel before the task stops reading.
    pub channel_queue: usize,
    /// The read buffer's size; it grows for larger frames.
    pub read_buffer: usize,
    /// Unwritten bytes above which the task stops taking commands.
    pub write_high_water: usize,
    /// When set, the connection never stops reading for a slow owner:
    /// each channel's replies are buffered within this budget (per reply
    /// and, shared with the other connections given it, in total), and a
    /// channel past it is cut and cancelled (see [`ReplyBudget`]).
    /// `channel_queue` then bounds only streams that asked to be cut when
    /// full. Unset: a full queue pauses the connection's reads.
    pub reply_budget: Option<ReplyBudget>,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            // Enough for a burst of requests from many HTTP connections
            // without making any of them wait.
            command_queue: 1024,
            // A streamed response can run ahead of a slow client by this
            // many chunks before the connection pauses.
            channel_queue: 64,
            // One read syscall takes many small replies at once.
            read_buffer: 64 << 10,
            // Bounds memory per connection while keeping writes large.
            write_high_water: 1 << 20,
            reply_budget: None,
        }
    }
}

/// Sets up a connection over any reader and writer pair. Spawn
/// [`Connection::run`]; use the handle to open channels.
pub fn new<R, W>(reader: R, writer: W, config: MuxConfig) -> (MuxHandle, Connection<R, W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (commands_tx, commands_rx) = batch_queue::channel(config.command_queue);
    let (wake_tx, wake_rx) = mpsc::channel(1);
    let shared = Arc::new(handle::Shared::new(config, wake_tx));
    let handle = MuxHandle::new(commands_tx, Arc::clone(&shared));
    let connection = Connection::new(reader, writer, commands_rx, wake_rx, shared);
    (handle, connection)
}

/// Sets up a connection over a TCP stream, with `TCP_NODELAY` on (frames are
/// already batched; Nagle would only add latency).
pub fn from_tcp(
    stream: TcpStream,
    config: MuxConfig,
) -> std::io::Result<(MuxHandle, Connection<OwnedReadHalf, OwnedWriteHalf>)> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().ok();
    let (reader, writer) = stream.into_split();
    let (handle, connection) = new(reader, writer, config);
    if let Some(peer) = peer {
        handle.set_peer(peer);
    }
    Ok((handle, connection))
}

/// Sets up a connection over one duplex stream (tests, benches, TLS).
pub fn from_io<IO>(
    io: IO,
    config: MuxConfig,
) -> (MuxHandle, Connection<ReadHalf<IO>, WriteHalf<IO>>)
where
    IO: AsyncRead + AsyncWrite,
{
    let (reader, writer) = tokio::io::split(io);
    new(reader, writer, config)
}
