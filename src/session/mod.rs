//! The serving side of one connection: owns accepting the channels a client
//! opens, checking every frame against the channel's protocol, routing later
//! frames to the channel's handler, and writing the handlers' replies in
//! batches. It is [`crate::mux`] seen from the other end, and serves both
//! the locator server and the app SDK through the [`Service`] trait.
//!
//! Like a Cocaine runtime (PROTOCOL.md §1.4), a session closes the whole
//! connection when the client breaks the protocol: a corrupt frame, an
//! unknown method, a channel id that does not increase, or a message its
//! channel's state does not allow. Nothing else is affected: other
//! connections keep being served.

mod reply;
mod task;

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::reply::{Incoming, Reply, ReplyError};
use crate::mux::batch_queue;
use crate::proto::{DEFAULT_MAX_FRAME_LEN, Headers, Protocol};

/// A service served over sessions: the locator, or an app.
pub trait Service: Send + Sync + 'static {
    /// For method `method`: what the client may send after it, and what the
    /// service sends back. `None` for an unknown method, which closes the
    /// connection (`slot_not_found`, as the runtime does).
    fn protocols(&self, method: u64) -> Option<(Protocol, Protocol)>;

    /// A new channel. Runs on the session task, so it must not block:
    /// spawn (and track) any real work. When the client disconnects, the
    /// call's [`Incoming`] ends with [`ReplyError::Disconnected`].
    fn call(&self, call: Call);
}

/// A channel the client opened.
#[derive(Debug)]
pub struct Call {
    /// The channel id.
    pub channel: u64,
    /// The method id (the opening frame's type).
    pub method: u64,
    /// The opening frame's args, still encoded.
    pub args: Bytes,
    /// The opening frame's headers.
    pub headers: Headers,
    /// Later frames from the client on this channel.
    pub incoming: Incoming,
    /// Our side of the channel.
    pub reply: Reply,
}

/// Settings of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The largest frame accepted or sent.
    pub max_frame_len: usize,
    /// Replies queued from handlers before they wait.
    pub reply_queue: usize,
    /// Frames buffered per channel before the session stops reading.
    pub channel_queue: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            reply_queue: 1024,
            channel_queue: 64,
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client closed the connection.
    #[error("client closed the connection")]
    Eof,
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// The client sent something the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// Accepts connections on `listener` until `accept_stop` is cancelled, and
/// serves each as a session (tracked by `sessions`) until it ends or
/// `sessions_stop` is cancelled ([`serve_until`]). `role` names the server
/// in the log (`app`, `locator`). The one accept loop of the locator server
/// and the app SDK.
pub async fn accept_loop<S>(
    listener: TcpListener,
    service: Arc<S>,
    role: &'static str,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    sessions: TaskTracker,
) where
    S: Service,
{
    while let Some(stream) = crate::listener::accept(&listener, &accept_stop, role).await {
        let service = Arc::clone(&service);
        let stop = sessions_stop.clone();
        sessions.spawn(async move {
            let result = serve_until(stream, service, SessionConfig::default(), stop).await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "{role} session ended");
            }
        });
    }
}

/// Serves one connection until the client leaves or breaks the protocol.
pub async fn serve<IO, S>(
    io: IO,
    service: Arc<S>,
    config: SessionConfig,
) -> Result<(), SessionError>
where
    IO: AsyncRead + AsyncWrite,
    S: Service + ?Sized,
{
    serve_until(io, service, config, CancellationToken::new()).await
}

/// Like [`serve`], and closes gracefully once `shutdown` is cancelled: it
/// stops reading, writes every reply already queued, then closes. Call it
/// after the handlers have finished, so their last frames go out.
pub async fn serve_until<IO, S>(
    io: IO,
    service: Arc<S>,
    config: SessionConfig,
    shutdown: CancellationToken,
) -> Result<(), SessionError>
where
    IO: AsyncRead + AsyncWrite,
    S: Service + ?Sized,
{
    let (reader, writer) = tokio::io::split(io);
    let (replies_tx, replies_rx) = batch_queue::channel(config.reply_queue);
    let (wake_tx, wake_rx) = mpsc::channel(1);
    let shared = Arc::new(reply::Shared::new(
        replies_tx,
        wake_tx,
        config.max_frame_len,
    ));
    let queues = task::ReplyQueues {
        shared,
        replies: replies_rx,
        wake: wake_rx,
    };
    task::Session::new(reader, writer, service.as_ref(), queues, config, shutdown)
        .run()
        .await
}
