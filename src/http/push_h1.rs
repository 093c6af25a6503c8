//! HTTP/1.1 push streams after their head: owns writing a long-lived
//! stream (server-sent events) on a connection taken back from hyper.
//!
//! An idle stream would otherwise keep hyper's connection and its 16 KiB
//! of read and write buffers for as long as it lasts (see
//! `benches/sse_rss.sh`). So hyper writes the response head, as for any
//! response, with `Transfer-Encoding: chunked` and `Connection: close`;
//! the body's first poll hands the stream to the connection
//! ([`Handoff`]); once everything hyper buffered reached the socket
//! ([`super::send_watch::SendWatch`] tells), the connection drops hyper's state and the
//! stream goes on here, one chunk per write, until it ends. Then the
//! connection closes: a client reconnects for its next stream.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatch::PushBody;

/// The last chunk of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Where a push stream waits for its connection to take it from hyper.
pub(super) struct HandoffSlot<G> {
    stream: std::sync::Mutex<Option<(PushBody, G)>>,
    /// Notified when a stream was put in.
    pub(super) ready: Notify,
}

impl<G> Default for HandoffSlot<G> {
    fn default() -> Self {
        Self {
            stream: std::sync::Mutex::new(None),
            ready: Notify::new(),
        }
    }
}

// By hand: the guard refers back to the connection that holds the slot.
impl<G> std::fmt::Debug for HandoffSlot<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.stream.lock().map_or(true, |stream| stream.is_some());
        f.debug_struct("HandoffSlot").field("held", &held).finish()
    }
}

impl<G> HandoffSlot<G> {
    fn put(&self, push: PushBody, guard: G) {
        *self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((push, guard));
        self.ready.notify_one();
    }

    /// The stream handed over, if any (taken: the slot must not keep it,
    /// since its guard refers to the connection that holds the slot).
    pub(super) fn take(&self) -> Option<(PushBody, G)> {
        self.stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// A push stream's body as hyper sees it: at its first poll (hyper has
/// the head, and flushes it next) it puts the stream in the connection's
/// slot and never yields anything.
pub(super) struct Handoff<G> {
    stream: Option<(PushBody, G)>,
    slot: Arc<HandoffSlot<G>>,
}

impl<G> Handoff<G> {
    /// `push` (with its request's `guard`), to be put in `slot`.
    pub(super) fn new(push: PushBody, guard: G, slot: Arc<HandoffSlot<G>>) -> Self {
        Self {
            stream: Some((push, guard)),
            slot,
        }
    }

    /// Puts the stream in the slot, once.
    pub(super) fn poll_handoff(&mut self) {
        if let Some((push, guard)) = self.stream.take() {
            self.slot.put(push, guard);
        }
    }
}

/// Writes the rest of `push` on `io` as chunks, until the stream ends (the
/// last chunk, then the connection is closed), fails or is cut (closed
/// without the last chunk, so it never looks complete), or the client
/// goes away (the stream is dropped: its app is cancelled).
/// `slow` is notified when the stream cut its client for reading too
/// slowly; `cut`, when the shutdown deadline passed.
pub(super) async fn serve<IO>(
    mut io: IO,
    mut push: PushBody,
    slow: &Notify,
    cut: &CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut scratch = [0u8; 64];
    loop {
        let data = tokio::select! {
            frame = push.frame() => match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
                // The app failed mid-stream: never end it cleanly.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "push stream aborted");
                    return;
                }
                None => break,
            },
            // After its request, a client sends nothing more; the end of
            // its stream (or an error) is it going away.
            read = io.read(&mut scratch) => match read {
                Ok(n) if n > 0 => continue,
                _ => return,
            },
            () = slow.notified() => return,
            () = cut.cancelled() => return,
        };
        // One write per event; nothing kept between events.
        let mut chunk = BytesMut::with_capacity(data.len() + 20);
        chunk.put_slice(format!("{:X}\r\n", data.len()).as_bytes());
        chunk.put_slice(&data);
        chunk.put_slice(b"\r\n");
        let written = tokio::select! {
            written = write_flush(&mut io, &chunk) => written,
            () = slow.notified() => return,
            () = cut.cancelled() => return,
        };
        if written.is_err() {
            return;
        }
    }
    // Ended cleanly: the last chunk, then the connection closes.
    let end = async {
        if write_flush(&mut io, LAST_CHUNK).await.is_ok() {
            let _ = io.shutdown().await;
        }
    };
    tokio::select! {
        () = end => {}
        () = slow.notified() => {}
        () = cut.cancelled() => {}
    }
}

async fn write_flush<IO: AsyncWrite + Unpin>(io: &mut IO, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}
