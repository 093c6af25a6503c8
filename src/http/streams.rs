//! Long-lived streams: owns counting the streams a gateway holds open
//! (server-sent events, WebSocket) by kind, their messages and why they
//! ended, and telling them when the gateway stops. It does not move their
//! bytes: the SSE body (`dispatch::ReplyBody` under `http::body`) and the
//! WebSocket task do.
//!
//! Each open stream holds a [`StreamGuard`]. On shutdown the gateway calls
//! [`Streams::stop`]: every stream sees [`StreamGuard::stopping`] and ends
//! cleanly (an SSE body ends, a WebSocket gets close 1001); the gateway
//! waits for the guards ([`Streams::wait`]) until its drain deadline, and
//! past it [`Streams::cut`] makes the ones left go at once.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::metrics::{
    DIRECTION, REASON, STREAM_DISCONNECTS, STREAM_KIND, STREAM_MESSAGES, STREAMS_OPEN,
};

/// What kind of stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// A `text/event-stream` response (server push).
    Sse,
    /// A WebSocket (RFC 6455) after an HTTP/1.1 upgrade.
    WebSocket,
    /// Another reply of a `push` service (`[services.X] push = true`).
    Push,
}

impl StreamKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::WebSocket => "websocket",
            Self::Push => "push",
        }
    }
}

/// A message's direction, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the app.
    In,
    /// From the app to the client.
    Out,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// Why a stream ended (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The app ended it (`close`).
    AppClosed,
    /// The app ended it with an `error`.
    AppError,
    /// The client ended it (a close frame, or it went away).
    ClientClosed,
    /// The client read too slowly: its queue filled and it was cut.
    SlowClient,
    /// Nothing moved either way for `limits.stream_idle_timeout_ms`.
    Idle,
    /// It reached `limits.stream_max_lifetime_ms`.
    Lifetime,
    /// The client broke a limit (message size, rate) or the protocol.
    Policy,
    /// The backend connection failed or sent a malformed frame.
    Backend,
    /// The gateway is shutting down.
    Shutdown,
}

impl Disconnect {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::AppClosed => "app_closed",
            Self::AppError => "app_error",
            Self::ClientClosed => "client_closed",
            Self::SlowClient => "slow_client",
            Self::Idle => "idle",
            Self::Lifetime => "lifetime",
            Self::Policy => "policy",
            Self::Backend => "backend",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The streams of one gateway.
#[derive(Debug, Default)]
pub struct Streams {
    tracker: TaskTracker,
    stopping: CancellationToken,
    cut: CancellationToken,
}

impl Streams {
    /// Counts a stream of `kind` as open until the guard is dropped.
    pub fn open(&self, kind: StreamKind) -> StreamGuard {
        metrics::gauge!(STREAMS_OPEN, STREAM_KIND => kind.label()).increment(1.0);
        StreamGuard {
            kind,
            _tracked: self.tracker.token(),
            stopping: self.stopping.clone(),
            cut: self.cut.clone(),
            ended: AtomicBool::new(false),
        }
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Tells every stream, open or to come, that the gateway is stopping.
    pub fn stop(&self) {
        self.stopping.cancel();
        self.tracker.close();
    }

    /// Makes the streams still open end at once (the drain deadline passed).
    pub fn cut(&self) {
        self.stop();
        self.cut.cancel();
    }

    /// Waits until no stream is open, once [`Streams::stop`] was called.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }
}

/// One open stream: counted in [`STREAMS_OPEN`] while it lives, and
/// waited for by a shutdown.
#[derive(Debug)]
pub struct StreamGuard {
    kind: StreamKind,
    _tracked: TaskTrackerToken,
    stopping: CancellationToken,
    cut: CancellationToken,
    ended: AtomicBool,
}

impl StreamGuard {
    /// The stream's kind.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// Counts one message.
    pub fn message(&self, direction: Direction) {
        metrics::counter!(
            STREAM_MESSAGES,
            STREAM_KIND => self.kind.label(),
            DIRECTION => direction.label()
        )
        .increment(1);
    }

    /// Counts why the stream ended; only the first reason given counts.
    pub fn disconnected(&self, reason: Disconnect) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        metrics::counter!(
            STREAM_DISCONNECTS,
            STREAM_KIND => self.kind.label(),
            REASON => reason.label()
        )
        .increment(1);
    }

    /// Whether the gateway is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Completes when the gateway starts stopping: end the stream cleanly.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stopping.cancelled()
    }

    /// Completes when the drain deadline passed: end the stream at once.
    pub fn cut(&self) -> WaitForCancellationFuture<'_> {
        self.cut.cancelled()
    }

    /// The stopping signal as an owned token (for a body polled without an
    /// async context).
    pub fn stopping_token(&self) -> CancellationToken {
        self.stopping.clone()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics::gauge!(STREAMS_OPEN, STREAM_KIND => self.kind.label()).decrement(1.0);
    }
}
