//! WebSocket (RFC 6455) over an HTTP/1.1 upgrade: owns recognising an
//! upgrade request and the session after the 101, which moves messages
//! between the client and the app's channel (the 101's handshake headers
//! are `http::websocket`'s). The framing, masking,
//! ping answers and close handshake are tungstenite's; the mapping of a
//! message to a `write` chunk is [`crate::proto::websocket`]'s.
//!
//! The request itself goes the usual way (route, admission, member choice,
//! the 5-tuple with every header, `Upgrade` and `Sec-WebSocket-*`
//! included), so the app can authorise it. Its first chunk (the response
//! meta) decides: 101 upgrades, anything else is an ordinary response.
//!
//! After the 101, one task (the connection's) runs the session:
//! - each client text/binary message is one `write` to the app, each app
//!   `write` one message to the client;
//! - messages for the client wait in a queue of `limits.stream_queue`
//!   (and the channel itself is cut past as many frames, see
//!   [`crate::mux::ChannelReceiver::cut_when_full`]): a client that reads
//!   too slowly is cut with close 1008, never waited for, so the backend
//!   connection it shares goes on;
//! - the app's `close` is close 1000; its `error`, or a chunk that is not
//!   a message, close 1011 (the error's message as the reason);
//! - the client's close frame ends our side with `close`, and the session
//!   ends once the app's side has (or after `CLOSE_GRACE`); a client that
//!   vanishes cancels the app's channel (`error [[7, 3]]`);
//! - limits: message size (1009), messages per second (1008), idle in both
//!   directions and lifetime (1001), and the gateway stopping (1001).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::streams::{Direction, Disconnect, StreamGuard};
use crate::config::LimitsConfig;
use crate::mux::{ChannelError, ChannelReceiver, ChannelSender};
use crate::proto::StreamEvent;
use crate::proto::websocket::{self as mapping, Kind};

/// How long an ending session waits for its last frames to go out, for the
/// client's close answer, or for the app's side to end after the client's
/// close.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The read buffer of a session: most messages are small, and the buffer
/// is allocated whole for every open WebSocket.
const READ_BUFFER: usize = 8 << 10;

/// Bytes of outgoing frames gathered before a write to the socket (a flush
/// after each batch writes them anyway).
const WRITE_BUFFER: usize = 16 << 10;

/// The `Sec-WebSocket-Key` of a WebSocket upgrade request (RFC 6455
/// §4.2.1: HTTP/1.1 GET, `Upgrade: websocket`, `Connection: upgrade`,
/// version 13); `None` for any other request.
pub fn upgrade_key(method: &Method, version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if method != Method::GET || version != Version::HTTP_11 {
        return None;
    }
    let lists = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !lists(header::UPGRADE, "websocket") || !lists(header::CONNECTION, "upgrade") {
        return None;
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes().trim_ascii() != b"13")
    {
        return None;
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| !key.is_empty())
        .cloned()
}

/// The limits of one session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    queue: usize,
    max_message: usize,
    max_rate: u32,
    ping: Duration,
    idle: Duration,
    lifetime: Duration,
}

impl Limits {
    /// The limits `limits` sets.
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            queue: limits.stream_queue.max(1),
            max_message: limits.websocket_max_message,
            max_rate: limits.websocket_max_rate.max(1),
            ping: limits.websocket_ping,
            idle: limits.stream_idle_timeout,
            lifetime: limits.stream_max_lifetime,
        }
    }
}

/// One WebSocket after its 101: the app's channel and the stream's guard.
#[derive(Debug)]
pub struct Session {
    sender: ChannelSender,
    receiver: ChannelReceiver,
    guard: StreamGuard,
    limits: Limits,
}

impl Session {
    /// A session over the channel of an app that answered 101. The channel
    /// is cut rather than waited for once `limits.queue` frames wait.
    pub fn new(
        sender: ChannelSender,
        mut receiver: ChannelReceiver,
        guard: StreamGuard,
        limits: Limits,
    ) -> Self {
        receiver.cut_when_full(limits.queue);
        Self {
            sender,
            receiver,
            guard,
            limits,
        }
    }

    /// Runs the session on `io`, the connection after its 101 (with any
    /// bytes read ahead put back in front), until either side ends it.
    pub async fn run<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Self {
            sender,
            receiver,
            guard,
            limits,
        } = self;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(Some(limits.max_message))
            .max_frame_size(Some(limits.max_message));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (mut sink, mut stream) = socket.split();
        let (out, mut queue) = mpsc::channel(limits.queue);
        let mut pump = Pump {
            sender: Some(sender),
            receiver,
            guard: &guard,
            limits,
            out,
            rate: Bucket::new(limits.max_rate),
        };
        let mut writer = Box::pin(write_queue(&mut sink, &mut queue));
        let ending = tokio::select! {
            ending = pump.run(&mut stream) => ending,
            () = &mut writer => Ending::gone(),
        };
        guard.disconnected(ending.reason);
        // Everything from here is bounded by one grace, and cut short past
        // the shutdown's deadline.
        let deadline = Instant::now() + CLOSE_GRACE;
        match ending.close {
            // What was queued goes first, then the close frame.
            Some(frame) if ending.clean => {
                within(deadline, &guard, async {
                    if pump.out.send(Message::Close(Some(frame))).await.is_ok() {
                        (&mut writer).await;
                    }
                })
                .await;
                drop(writer);
            }
            // The queue is dropped: the client is cut.
            Some(frame) => {
                drop(writer);
                within(deadline, &guard, async {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                })
                .await;
            }
            // The client closed (tungstenite queued its answer) or vanished.
            None => {
                drop(writer);
                within(deadline, &guard, async {
                    let _ = sink.flush().await;
                })
                .await;
            }
        }
        // The client's close answer, then the end of its stream.
        if !ending.client_gone {
            within(deadline, &guard, async {
                while let Some(Ok(_)) = stream.next().await {}
            })
            .await;
        }
        // Dropped here: the app's channel is cancelled unless it ended, and
        // the connection closes.
        drop(pump);
    }
}

/// Runs `step` until it is done, `deadline` passes, or the shutdown cuts
/// the streams still open.
async fn within(deadline: Instant, guard: &StreamGuard, step: impl Future<Output = ()>) {
    tokio::select! {
        _ = tokio::time::timeout_at(deadline, step) => {}
        () = guard.cut() => {}
    }
}

/// How a session ends.
#[derive(Debug)]
struct Ending {
    reason: Disconnect,
    /// The close frame the client gets; `None` when it closed or vanished.
    close: Option<CloseFrame>,
    /// Messages queued for the client go before the close frame.
    clean: bool,
    /// Nothing more can be read from the client.
    client_gone: bool,
}

impl Ending {
    fn close(reason: Disconnect, code: CloseCode, why: &str, clean: bool) -> Self {
        Self {
            reason,
            close: Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(mapping::close_reason(why)),
            }),
            clean,
            client_gone: false,
        }
    }

    /// The client vanished (its socket failed or ended without a close).
    fn gone() -> Self {
        Self {
            reason: Disconnect::ClientClosed,
            close: None,
            clean: false,
            client_gone: true,
        }
    }
}

/// Writes the queued messages to the client, flushing after each batch,
/// until a close frame went or the socket failed.
async fn write_queue<K>(sink: &mut K, queue: &mut mpsc::Receiver<Message>)
where
    K: Sink<Message> + Unpin,
{
    while let Some(message) = queue.recv().await {
        let mut last = message.is_close();
        if sink.feed(message).await.is_err() {
            return;
        }
        // What else is waiting goes in the same write.
        while !last && let Ok(message) = queue.try_recv() {
            last = message.is_close();
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() || last {
            return;
        }
    }
}

/// A token bucket: `rate` a second, as deep as one second's worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    /// Takes one token; `false` if there is none.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The session's state between the client and the app's channel.
struct Pump<'g> {
    /// `None` once our side ended; dropped while `Some`, it cancels the
    /// app's channel.
    sender: Option<ChannelSender>,
    receiver: ChannelReceiver,
    guard: &'g StreamGuard,
    limits: Limits,
    /// Messages for the client (bounded: a full queue cuts the client).
    out: mpsc::Sender<Message>,
    rate: Bucket,
}

/// What one step came to.
enum Step {
    Go,
    End(Ending),
}

impl Pump<'_> {
    async fn run<T>(&mut self, stream: &mut T) -> Ending
    where
        T: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    {
        let started = Instant::now();
        let lifetime_end = started + self.limits.lifetime;
        let mut last_message = started;
        let mut ping = tokio::time::interval_at(started + self.limits.ping, self.limits.ping);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let idle_end = last_message + self.limits.idle;
            let step = tokio::select! {
                message = stream.next() => {
                    let step = self.on_client(message).await;
                    if matches!(step, Step::Go) {
                        last_message = Instant::now();
                    }
                    step
                }
                frame = self.receiver.recv() => {
                    let step = self.on_app(frame).await;
                    if matches!(step, Step::Go) {
                        last_message = Instant::now();
                    }
                    step
                }
                _ = ping.tick() => self.queue(Message::Ping(Bytes::new())),
                () = tokio::time::sleep_until(idle_end) => Step::End(Ending::close(
                    Disconnect::Idle,
                    CloseCode::Away,
                    "idle",
                    true,
                )),
                () = tokio::time::sleep_until(lifetime_end) => Step::End(Ending::close(
                    Disconnect::Lifetime,
                    CloseCode::Away,
                    "stream lifetime reached",
                    true,
                )),
                () = self.guard.stopping() => Step::End(Ending::close(
                    Disconnect::Shutdown,
                    CloseCode::Away,
                    "the gateway is shutting down",
                    true,
                )),
            };
            if let Step::End(ending) = step {
                return ending;
            }
        }
    }

    /// Queues `message` for the client, or cuts it if its queue is full.
    fn queue(&mut self, message: Message) -> Step {
        match self.out.try_send(message) {
            Ok(()) => Step::Go,
            Err(mpsc::error::TrySendError::Full(_)) => Step::End(self.slow_client()),
            Err(mpsc::error::TrySendError::Closed(_)) => Step::End(Ending::gone()),
        }
    }

    fn slow_client(&self) -> Ending {
        Ending::close(
            Disconnect::SlowClient,
            CloseCode::Policy,
            "the client reads too slowly",
            false,
        )
    }

    async fn on_client(&mut self, message: Option<Result<Message, tungstenite::Error>>) -> Step {
        let message = match message {
            None => return Step::End(Ending::gone()),
            Some(Ok(message)) => message,
            Some(Err(tungstenite::Error::Capacity(e))) => {
                crate::metrics::limit_hit("websocket_message_size");
                return Step::End(Ending::close(
                    Disconnect::Policy,
                    CloseCode::Size,
                    &e.to_string(),
                    false,
                ));
            }
            Some(Err(tungstenite::Error::Protocol(e))) => {
                return Step::End(Ending::close(
                    Disconnect::Policy,
                    CloseCode::Protocol,
                    &e.to_string(),
                    false,
                ));
            }
            Some(Err(tungstenite::Error::Utf8(_))) => {
                return Step::End(Ending::close(
                    Disconnect::Policy,
                    CloseCode::Invalid,
                    "a text message is not valid UTF-8",
                    false,
                ));
            }
            Some(Err(_)) => return Step::End(Ending::gone()),
        };
        if !matches!(message, Message::Close(_)) && !self.rate.take() {
            crate::metrics::limit_hit("websocket_rate");
            return Step::End(Ending::close(
                Disconnect::Policy,
                CloseCode::Policy,
                "too many messages",
                false,
            ));
        }
        let chunk = match message {
            Message::Text(text) => mapping::encode(Kind::Text, text.as_bytes()),
            Message::Binary(data) => mapping::encode(Kind::Binary, &data),
            // Answered by tungstenite (a ping) or nothing to answer.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Step::Go,
            Message::Close(_) => return Step::End(self.client_closed().await),
        };
        self.guard.message(Direction::In);
        let Some(sender) = self.sender.as_mut() else {
            return Step::Go;
        };
        match sender.write(chunk).await {
            Ok(()) => Step::Go,
            Err(e) => Step::End(self.backend_failed(&e)),
        }
    }

    /// The client sent its close frame (tungstenite answers it): our side
    /// of the channel ends with `close`, and the app's side is waited for.
    async fn client_closed(&mut self) -> Ending {
        if let Some(sender) = self.sender.take() {
            let _ = sender.close().await;
        }
        let app_done = async { while let Some(Ok(_)) = self.receiver.recv().await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, app_done).await;
        Ending {
            reason: Disconnect::ClientClosed,
            close: None,
            clean: false,
            client_gone: false,
        }
    }

    fn backend_failed(&mut self, e: &ChannelError) -> Ending {
        tracing::debug!(error = %e, "websocket: the app's channel failed");
        Ending::close(
            Disconnect::Backend,
            CloseCode::Error,
            "the backend connection failed",
            true,
        )
    }

    async fn on_app(&mut self, frame: Option<Result<crate::proto::Frame, ChannelError>>) -> Step {
        let frame = match frame {
            None => return Step::End(self.app_closed().await),
            Some(Err(e)) if e.is_slow_reader() => return Step::End(self.slow_client()),
            Some(Err(e)) => return Step::End(self.backend_failed(&e)),
            Some(Ok(frame)) => frame,
        };
        match frame.stream_event() {
            Ok(StreamEvent::Write(chunk)) => match mapping::decode(&chunk) {
                Ok((kind, payload)) => {
                    let message = match kind {
                        Kind::Binary => Message::Binary(payload),
                        Kind::Text => match Utf8Bytes::try_from(payload) {
                            Ok(text) => Message::Text(text),
                            Err(_) => {
                                return Step::End(self.bad_chunk(&mapping::BadChunk::NotUtf8));
                            }
                        },
                    };
                    self.guard.message(Direction::Out);
                    self.queue(message)
                }
                Err(e) => Step::End(self.bad_chunk(&e)),
            },
            Ok(StreamEvent::Close) => Step::End(self.app_closed().await),
            Ok(StreamEvent::Error(e)) => {
                // The app's own terminal message: our side ends cleanly.
                if let Some(mut sender) = self.sender.take() {
                    sender.close_on_drop();
                }
                let why = e
                    .message
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                Step::End(Ending::close(
                    Disconnect::AppError,
                    CloseCode::Error,
                    &why,
                    true,
                ))
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket: a malformed frame from the app");
                Step::End(Ending::close(
                    Disconnect::Backend,
                    CloseCode::Error,
                    "a malformed frame from the app",
                    true,
                ))
            }
        }
    }

    /// The app ended its side: so does ours, and the client gets 1000.
    async fn app_closed(&mut self) -> Ending {
        if let Some(sender) = self.sender.take() {
            let _ = sender.close().await;
        }
        Ending::close(Disconnect::AppClosed, CloseCode::Normal, "", true)
    }

    /// A chunk from the app that is not a message fails this stream only:
    /// the client gets 1011, the app's channel is cancelled.
    fn bad_chunk(&self, e: &mapping::BadChunk) -> Ending {
        tracing::debug!(error = %e, "websocket: a chunk from the app is not a message");
        Ending::close(
            Disconnect::AppError,
            CloseCode::Error,
            "the app sent a malformed message",
            true,
        )
    }
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
