//! Streamed uploads: owns sending a request body to the app as `write`
//! chunks as it arrives, for a service with `stream_request_body` (issue
//! 17): reading the client's body under `request.body_limit` and
//! `limits.body_timeout`, cutting it into chunks of at most [`MAX_CHUNK`]
//! bytes, backpressure (at most [`WINDOW`] chunks of one request wait in the
//! connection's queue), the end-of-body marker, and keeping the first chunk
//! for a retry.
//!
//! # On the wire
//!
//! ```text
//! [c, 0, [event], H + [request_body: "stream"]]   enqueue
//! [c, 0, [REQUEST]]                               the 5-tuple, body field ""
//! [c, 0, [chunk]] ...                             the body, as it arrives
//! [c, 0, [""]]                                    end of body (empty chunk)
//! [c, 2, []]                                      close, once the reply ended
//! ```
//!
//! The end of the body is an **empty `write` chunk**, as an empty chunk
//! ends a response body under `X-Cocaine-HTTP-Proto-Version: 1.1`
//! (PROTOCOL.md §5.4); body chunks are never empty. Our side's `close`
//! comes only when the reply has ended, as for every request: until then
//! the gateway can still cancel (`error [[7, 3]]`) if the client goes away.
//! An app learns that a request's body is streamed from the `enqueue`
//! frame header `request_body = "stream"` (a header only the gateway sets;
//! see [`REQUEST_BODY`]); a request without a body is never streamed, its
//! 5-tuple is complete.
//!
//! # Early replies
//!
//! The app may answer before the body has all been sent. The response then
//! streams to the client while the upload goes on (the reply body drives
//! both, see [`super::ReplyBody`]). If the reply ends first, the rest of
//! the body is not forwarded and the channel is cancelled (`error [[7,
//! 3]]`: the body was cut short); the client has its complete response.
//!
//! # Retries
//!
//! A body cannot be replayed once it was taken from the client and sent.
//! A streamed request is therefore retried (under the usual rule: provably
//! not delivered to a worker, within budget and deadline) only while the
//! gateway has taken **at most one** body frame from the client: that
//! frame is kept until the second is taken, and a retry sends it again.
//! After that, a failure is final.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use tokio::sync::Semaphore;

use super::GatewayError;
use super::body::BodyAborted;
use crate::mux::{ChannelError, ChannelSender};

/// A request body as the upload reads it: any HTTP body, boxed (only
/// streamed requests pay for the box).
pub type UploadSource = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub use crate::proto::http::{REQUEST_BODY, REQUEST_BODY_STREAM};

/// The largest body chunk sent: larger client frames are cut (without
/// copying). Small enough that the few chunks one upload may have queued
/// stay small; large enough that a chunk's frame overhead is noise.
pub const MAX_CHUNK: usize = 64 << 10;

/// Chunks of one upload that may wait in the connection's command queue
/// at once. Past them the upload waits until the connection task has
/// moved one into its write queue (bounded by `write_high_water`), so one
/// upload holds at most `WINDOW × MAX_CHUNK` (256 KiB) there, and the
/// queue keeps room for the connection's other channels.
pub const WINDOW: usize = 4;

/// Why a streamed upload stopped. Each is the client's doing.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The body passed `request.body_limit` (413 before the response
    /// head).
    #[error("request body larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// No body bytes for `limits.body_timeout` (408 before the response
    /// head).
    #[error("no request body bytes for {0:?}")]
    Stalled(Duration),
    /// Reading the body failed: the client broke the connection or the
    /// framing (400 before the response head).
    #[error("reading the request body failed: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl UploadError {
    /// The `rpcgate_limit_hits_total` label of a limit that fired.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Self::TooLarge(_) => Some("body_size"),
            Self::Stalled(_) => Some("body_timeout"),
            Self::Client(_) => None,
        }
    }
}

/// Why one step of an upload failed.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The client's side.
    Upload(UploadError),
    /// The backend channel.
    Channel(ChannelError),
}

/// The rest of an upload after the response head: it holds our sender
/// and gives it back once the end of the body is queued. Dropping it
/// drops the sender, which cancels the channel.
pub(crate) struct UploadTail(
    Pin<Box<dyn Future<Output = Result<ChannelSender, BodyAborted>> + Send>>,
);

impl UploadTail {
    /// Drives the upload; see [`Upload::into_tail`].
    pub(crate) fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<ChannelSender, BodyAborted>> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for UploadTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadTail")
    }
}

/// A request body being streamed to the app.
pub struct Upload {
    source: UploadSource,
    limit: usize,
    timeout: Duration,
    /// Body bytes taken from the client.
    received: u64,
    /// Data frames taken from the client.
    frames: u64,
    /// The first frame, kept while it is the only one taken (for a retry).
    first: Option<Bytes>,
    /// What is left of the frame being sent.
    rest: Bytes,
    /// A chunk taken for sending and not yet queued (kept across a
    /// cancelled step).
    pending: Option<Bytes>,
    /// The client's body ended.
    client_done: bool,
    /// The end-of-body marker is queued.
    ended: bool,
    window: Arc<Semaphore>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("limit", &self.limit)
            .field("received", &self.received)
            .field("frames", &self.frames)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// An upload of `source`, cut past `limit` bytes or after `timeout`
    /// without a byte.
    pub fn new<B>(source: B, limit: usize, timeout: Duration) -> Self
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Self {
            source: source.map_err(Into::into).boxed_unsync(),
            limit,
            timeout,
            received: 0,
            frames: 0,
            first: None,
            rest: Bytes::new(),
            pending: None,
            client_done: false,
            ended: false,
            window: Arc::new(Semaphore::new(WINDOW)),
        }
    }

    /// Whether the body can still be sent again from its start: at most
    /// one frame was taken from the client, and it is kept.
    pub fn is_replayable(&self) -> bool {
        self.frames <= 1
    }

    /// Whether the end-of-body marker is queued.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// Body bytes taken from the client so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Starts sending again from the body's start, for a new attempt on a
    /// new channel. Only meaningful while [`Self::is_replayable`].
    pub(crate) fn rewind(&mut self) {
        self.rest = self.first.clone().unwrap_or_default();
        self.pending = None;
        self.ended = false;
        // Permits held by the old channel's queued chunks come back when
        // its connection drops or skips them; this attempt need not wait.
        self.window = Arc::new(Semaphore::new(WINDOW));
    }

    /// The next chunk to send; `None` once the client's body has ended
    /// and everything taken was handed out.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a frame is taken from the client only when its chunk
    /// is returned (or kept in `rest`).
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, UploadError> {
        loop {
            if !self.rest.is_empty() {
                let n = self.rest.len().min(MAX_CHUNK);
                return Ok(Some(self.rest.split_to(n)));
            }
            if self.client_done {
                return Ok(None);
            }
            let frame = match tokio::time::timeout(self.timeout, self.source.frame()).await {
                Err(_) => return Err(UploadError::Stalled(self.timeout)),
                Ok(None) => {
                    self.client_done = true;
                    continue;
                }
                Ok(Some(Err(e))) => return Err(UploadError::Client(e)),
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers are not forwarded; an empty frame would read as the
            // end of the body.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.received += data.len() as u64;
            if self.received > self.limit as u64 {
                return Err(UploadError::TooLarge(self.limit));
            }
            self.frames += 1;
            self.first = (self.frames == 1).then(|| data.clone());
            self.rest = data;
        }
    }

    /// Queues the next chunk on `sender`, or the end-of-body marker (then
    /// `Ok(true)`). Waits for the client and for room ([`WINDOW`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a chunk taken from the client and not yet queued is
    /// kept for the next call.
    pub(crate) async fn step(&mut self, sender: &mut ChannelSender) -> Result<bool, StepError> {
        let chunk = match &self.pending {
            Some(chunk) => chunk.clone(),
            None => {
                let chunk = self
                    .next_chunk()
                    .await
                    .map_err(StepError::Upload)?
                    .unwrap_or_default();
                self.pending = Some(chunk.clone());
                chunk
            }
        };
        let Ok(hold) = Arc::clone(&self.window).acquire_owned().await else {
            // The semaphore is never closed; were it, go on unbounded.
            return Err(StepError::Channel(ChannelError::Refused));
        };
        let end = chunk.is_empty();
        sender
            .write_held(chunk, hold)
            .await
            .map_err(StepError::Channel)?;
        self.pending = None;
        self.ended = end;
        Ok(end)
    }

    /// Sends the rest of the body on `sender` (after the response head)
    /// and gives the sender back once the end-of-body marker is queued.
    /// A limit that fires is counted here: no error response can follow.
    pub(crate) fn into_tail(mut self, mut sender: ChannelSender) -> UploadTail {
        UploadTail(Box::pin(async move {
            loop {
                match self.step(&mut sender).await {
                    Ok(true) => return Ok(sender),
                    Ok(false) => {}
                    Err(StepError::Upload(e)) => {
                        if let Some(limit) = e.limit() {
                            crate::metrics::limit_hit(limit);
                        }
                        // Dropping the sender cancels the app's channel.
                        return Err(BodyAborted::Upload(e));
                    }
                    Err(StepError::Channel(e)) => {
                        return Err(BodyAborted::Sending(e));
                    }
                }
            }
        }))
    }
}
/// A request body collected whole, up to `limit` bytes (413 past it), from
/// a client that never pauses for `timeout` or longer mid-body (408).
pub(super) async fn collect_body<B>(
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(Limited::new(body, limit));
    // One frame is kept as it came; more are copied into one buffer.
    let mut first = Bytes::new();
    let mut more: Option<bytes::BytesMut> = None;
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(GatewayError::BodyTimeout(timeout)),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e)))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(GatewayError::BodyTooLarge(limit));
            }
            Ok(Some(Err(e))) => return Err(GatewayError::Body(e)),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &mut more {
            Some(buf) => buf.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut buf = bytes::BytesMut::with_capacity(first.len() + data.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                more = Some(buf);
            }
        }
    }
    Ok(more.map_or(first, bytes::BytesMut::freeze))
}
