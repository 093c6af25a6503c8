//! Push replies: owns a long-lived reply stream (server-sent events, or any
//! reply of a `push` service) after its head. A small task per stream
//! reads the app's channel as fast as frames come and hands them to the
//! HTTP body through a queue of `limits.stream_queue` chunks, so a client
//! that stalls never holds up the backend connection the stream shares
//! with other requests: when the queue is full the client is cut (its
//! connection closed) and the app's channel cancelled.
//!
//! The task also owns the stream's clocks, which must run while the
//! client reads nothing (hyper polls a body only when it can send):
//! - a `: keepalive` comment every `limits.sse_keepalive_ms` the app is
//!   quiet (SSE only: a comment line is part of that format);
//! - the idle limit, `limits.stream_idle_timeout_ms` with nothing from the
//!   app (the client of an SSE stream sends nothing once its request is
//!   in), and the lifetime limit, `limits.stream_max_lifetime_ms`;
//! - the gateway stopping ([`StreamGuard::stopping`]).
//!
//! Each of those ends the body cleanly (the last chunk of a chunked body,
//! or the end of an HTTP/2 stream) and cancels the app's channel (`error
//! [[7, 3]]`); so does the client going away. The app's `close` ends it
//! cleanly with our `close`; its `error` aborts the body.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame as HttpFrame, SizeHint};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::body::BodyAborted;
use super::streams::{Direction, Disconnect, StreamGuard};
use crate::mux::{ChannelError, ChannelReceiver, ChannelSender};
use crate::proto::StreamEvent;

/// The comment an SSE stream gets while its app is quiet.
const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// The clocks and limits of one push stream.
#[derive(Debug, Clone, Copy)]
pub struct PushLimits {
    /// Chunks held for a slow client before it is cut.
    pub queue: usize,
    /// `Some` for SSE: a keepalive comment after this long of app silence.
    pub keepalive: Option<Duration>,
    /// Ended after this long with nothing from the app.
    pub idle: Duration,
    /// Ended at this age.
    pub lifetime: Duration,
}

/// What the body and its connection share with the stream's task.
#[derive(Debug, Default)]
struct Shared {
    /// The client was cut for reading too slowly.
    cut: AtomicBool,
    /// The HTTP/1.1 connection's close signal, once attached (see
    /// [`PushBody::close_connection_on_cut`]).
    connection: Mutex<Option<Arc<Notify>>>,
}

impl Shared {
    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(connection) = connection {
            connection.notify_one();
        }
    }
}

/// A push stream's body: the chunks its task queued.
#[derive(Debug)]
pub struct PushBody {
    chunks: mpsc::Receiver<Result<Bytes, BodyAborted>>,
    shared: Arc<Shared>,
}

impl PushBody {
    /// Streams the app's reply after its head (`sender` and `receiver` are
    /// its channel's halves) on a task of its own, counted by `guard`.
    pub(crate) fn start(
        sender: ChannelSender,
        receiver: ChannelReceiver,
        proto11: bool,
        limits: PushLimits,
        guard: StreamGuard,
    ) -> Self {
        let (tx, chunks) = mpsc::channel(limits.queue.max(1));
        let shared = Arc::new(Shared::default());
        let task = Pump {
            sender: Some(sender),
            receiver,
            proto11,
            limits,
            guard,
            tx,
            shared: Arc::clone(&shared),
        };
        tokio::spawn(task.run());
        Self { chunks, shared }
    }

    /// Closes the HTTP/1.1 connection at `signal` if the client is cut:
    /// a client that stalls leaves hyper waiting to write, and polling
    /// this body no more, so only the connection can end the stream.
    pub(crate) fn close_connection_on_cut(&self, signal: Arc<Notify>) {
        *self
            .shared
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&signal));
        if self.shared.cut.load(Ordering::Acquire) {
            signal.notify_one();
        }
    }
}

impl Body for PushBody {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<HttpFrame<Bytes>, BodyAborted>>> {
        if self.shared.cut.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(BodyAborted::SlowClient)));
        }
        match std::task::ready!(self.chunks.poll_recv(cx)) {
            Some(Ok(chunk)) => Poll::Ready(Some(Ok(HttpFrame::data(chunk)))),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None if self.shared.cut.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(BodyAborted::SlowClient)))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The task of one push stream.
struct Pump {
    /// Dropped without `close` to cancel the app's channel.
    sender: Option<ChannelSender>,
    receiver: ChannelReceiver,
    proto11: bool,
    limits: PushLimits,
    guard: StreamGuard,
    tx: mpsc::Sender<Result<Bytes, BodyAborted>>,
    shared: Arc<Shared>,
}

/// What one step of the pump came to.
enum Step {
    Go,
    End(Disconnect),
}

impl Pump {
    async fn run(mut self) {
        let started = Instant::now();
        let lifetime_end = started + self.limits.lifetime;
        let mut last_data = started;
        let keepalive = self.limits.keepalive;
        let next_keepalive = tokio::time::sleep(keepalive.unwrap_or(Duration::MAX / 4));
        tokio::pin!(next_keepalive);
        let reason = loop {
            let idle_end = last_data + self.limits.idle;
            let step = tokio::select! {
                frame = self.receiver.recv() => {
                    let step = self.frame(frame);
                    if matches!(step, Step::Go) {
                        last_data = Instant::now();
                        if let Some(every) = keepalive {
                            next_keepalive.as_mut().reset(last_data + every);
                        }
                    }
                    step
                }
                () = &mut next_keepalive, if keepalive.is_some() => {
                    let every = keepalive.unwrap_or(Duration::MAX / 4);
                    next_keepalive.as_mut().reset(Instant::now() + every);
                    self.queue(Bytes::from_static(KEEPALIVE))
                }
                () = tokio::time::sleep_until(idle_end) => Step::End(Disconnect::Idle),
                () = tokio::time::sleep_until(lifetime_end) => Step::End(Disconnect::Lifetime),
                () = self.guard.stopping() => Step::End(Disconnect::Shutdown),
                () = self.tx.closed() => Step::End(Disconnect::ClientClosed),
            };
            if let Step::End(reason) = step {
                break reason;
            }
        };
        self.guard.disconnected(reason);
        if reason == Disconnect::SlowClient {
            self.shared.cut();
        }
        // Dropped here: the sender cancels the app's channel unless the
        // reply ended (then it closed), and the body ends after what it
        // holds.
    }

    /// Queues `chunk` for the client, or cuts it if its queue is full.
    fn queue(&mut self, chunk: Bytes) -> Step {
        match self.tx.try_send(Ok(chunk)) {
            Ok(()) => Step::Go,
            Err(mpsc::error::TrySendError::Full(_)) => Step::End(Disconnect::SlowClient),
            Err(mpsc::error::TrySendError::Closed(_)) => Step::End(Disconnect::ClientClosed),
        }
    }

    /// Ends the reply as complete: our side closes.
    fn complete(&mut self) {
        if let Some(mut sender) = self.sender.take() {
            sender.close_on_drop();
        }
    }

    /// Aborts the body with `error` (queued after the chunks before it).
    fn abort(&mut self, error: BodyAborted, reason: Disconnect) -> Step {
        // Best effort: a full queue is cut anyway when the body is next
        // polled, and a gone client needs nothing.
        let _ = self.tx.try_send(Err(error));
        Step::End(reason)
    }

    fn frame(&mut self, frame: Option<Result<crate::proto::Frame, ChannelError>>) -> Step {
        let frame = match frame {
            None => {
                self.complete();
                return Step::End(Disconnect::AppClosed);
            }
            Some(Err(e)) => return self.abort(BodyAborted::Channel(e), Disconnect::Backend),
            Some(Ok(frame)) => frame,
        };
        match frame.stream_event() {
            Ok(StreamEvent::Write(chunk)) if chunk.is_empty() && self.proto11 => {
                self.complete();
                Step::End(Disconnect::AppClosed)
            }
            Ok(StreamEvent::Write(chunk)) if chunk.is_empty() => Step::Go,
            Ok(StreamEvent::Write(chunk)) => {
                self.guard.message(Direction::Out);
                self.queue(chunk)
            }
            Ok(StreamEvent::Close) => {
                self.complete();
                Step::End(Disconnect::AppClosed)
            }
            Ok(StreamEvent::Error(e)) => {
                // The app's own terminal message: our side ends cleanly.
                self.complete();
                self.abort(BodyAborted::App(e), Disconnect::AppError)
            }
            Err(e) => self.abort(BodyAborted::BadFrame(e), Disconnect::Backend),
        }
    }
}
