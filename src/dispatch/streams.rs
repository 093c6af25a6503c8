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
//!
//! It also caps them: [`Streams::try_open`] refuses a stream past
//! `limits.max_streams` (all of the gateway's) or
//! `limits.max_streams_per_client` (one client's, keyed as the connection
//! cap keys clients: IPv6 by `limits.client_ipv6_prefix`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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

/// A new stream was refused: too many are open (503 `too_many_streams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooManyStreams {
    /// `limits.max_streams` are open.
    #[error("the gateway has its limit of {0} long-lived streams open")]
    Gateway(usize),
    /// `limits.max_streams_per_client` are open from this client.
    #[error("this client has its limit of {0} long-lived streams open")]
    Client(usize),
}

impl TooManyStreams {
    /// The `rpcgate_limit_hits_total` label.
    pub fn limit(self) -> &'static str {
        match self {
            Self::Gateway(_) => "max_streams",
            Self::Client(_) => "max_streams_per_client",
        }
    }
}

/// The caps a new stream is checked against (from `[limits]`, read when
/// it opens: a reload applies to the next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCaps {
    /// `limits.max_streams`.
    pub total: usize,
    /// `limits.max_streams_per_client`.
    pub per_client: usize,
    /// `limits.client_ipv6_prefix`.
    pub ipv6_prefix: u8,
}

impl StreamCaps {
    /// The caps `limits` sets.
    pub fn new(limits: &crate::config::LimitsConfig) -> Self {
        Self {
            total: limits.max_streams,
            per_client: limits.max_streams_per_client,
            ipv6_prefix: limits.client_ipv6_prefix,
        }
    }
}

/// Streams open now: in all, and by client key (only keys with some).
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    clients: HashMap<IpAddr, usize>,
}

/// The streams of one gateway.
#[derive(Debug, Default)]
pub struct Streams {
    tracker: TaskTracker,
    stopping: CancellationToken,
    cut: CancellationToken,
    counts: Arc<Mutex<Counts>>,
}

impl Streams {
    /// Counts a stream of `kind` from `client` (`None`: unknown, counted
    /// in the total only) as open until the guard is dropped; refused
    /// (counted in `rpcgate_limit_hits_total`) if `caps` are reached.
    pub fn try_open(
        &self,
        kind: StreamKind,
        client: Option<IpAddr>,
        caps: StreamCaps,
    ) -> Result<StreamGuard, TooManyStreams> {
        let client = client.map(|c| crate::cidr::client_key(c, caps.ipv6_prefix));
        let refused = {
            let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            let from_client = client.map_or(0, |c| counts.clients.get(&c).copied().unwrap_or(0));
            if counts.total >= caps.total {
                Some(TooManyStreams::Gateway(caps.total))
            } else if client.is_some() && from_client >= caps.per_client {
                Some(TooManyStreams::Client(caps.per_client))
            } else {
                counts.total += 1;
                if let Some(c) = client {
                    *counts.clients.entry(c).or_default() += 1;
                }
                None
            }
        };
        if let Some(refused) = refused {
            crate::metrics::limit_hit(refused.limit());
            tracing::debug!(kind = kind.label(), %refused, "stream refused");
            return Err(refused);
        }
        metrics::gauge!(STREAMS_OPEN, STREAM_KIND => kind.label()).increment(1.0);
        Ok(StreamGuard {
            kind,
            _tracked: self.tracker.token(),
            stopping: self.stopping.clone(),
            cut: self.cut.clone(),
            ended: AtomicBool::new(false),
            _counted: Counted {
                counts: Arc::clone(&self.counts),
                client,
            },
        })
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
    _counted: Counted,
}

/// A stream's place in [`Counts`], given back when dropped.
#[derive(Debug)]
struct Counted {
    counts: Arc<Mutex<Counts>>,
    /// Its client's key.
    client: Option<IpAddr>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(client) = self.client
            && let Some(open) = counts.clients.get_mut(&client)
        {
            *open -= 1;
            if *open == 0 {
                counts.clients.remove(&client);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    fn caps(total: usize, per_client: usize) -> StreamCaps {
        StreamCaps {
            total,
            per_client,
            ipv6_prefix: 64,
        }
    }

    #[test]
    fn the_caps_refuse_and_a_closed_stream_makes_room() {
        let streams = Streams::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_too: IpAddr = "2001:db8::2".parse().unwrap();
        let caps = caps(3, 1);
        let first = streams.try_open(StreamKind::Sse, Some(a), caps).unwrap();
        assert_eq!(
            streams
                .try_open(StreamKind::WebSocket, Some(a), caps)
                .unwrap_err(),
            TooManyStreams::Client(1)
        );
        let second = streams.try_open(StreamKind::Push, Some(b), caps).unwrap();
        // One /64: one client.
        assert_eq!(
            streams
                .try_open(StreamKind::Sse, Some(b_too), caps)
                .unwrap_err(),
            TooManyStreams::Client(1)
        );
        // An unknown client counts in the total only.
        let third = streams.try_open(StreamKind::Sse, None, caps).unwrap();
        assert_eq!(
            streams.try_open(StreamKind::Sse, None, caps).unwrap_err(),
            TooManyStreams::Gateway(3)
        );
        assert_eq!(streams.len(), 3);
        drop(first);
        let again = streams.try_open(StreamKind::Sse, Some(a), caps).unwrap();
        drop((second, third, again));
        assert_eq!(streams.len(), 0);
        let counts = streams.counts.lock().unwrap();
        assert_eq!(counts.total, 0);
        assert!(counts.clients.is_empty(), "no leftovers");
    }

    #[test]
    fn the_caps_are_read_at_each_open() {
        let streams = Streams::default();
        let one = streams.try_open(StreamKind::Sse, None, caps(1, 1)).unwrap();
        assert!(streams.try_open(StreamKind::Sse, None, caps(1, 1)).is_err());
        let two = streams.try_open(StreamKind::Sse, None, caps(2, 1)).unwrap();
        drop((one, two));
    }
}
