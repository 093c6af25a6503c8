//! The reply body: owns streaming the app's body chunks to hyper as they
//! arrive, ending on `close` (or on an empty chunk under
//! `X-Cocaine-HTTP-Proto-Version: 1.1`), aborting on errors so a failed
//! response never looks complete, and ending our side of the channel:
//! `close` when the reply is complete, `error [[7, 3]]` when dropped early.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame as HttpFrame, SizeHint};

use crate::mux::{ChannelReceiver, ChannelSender};
use crate::proto::StreamEvent;

/// Why a streamed body stopped before its end, by who stopped it.
#[derive(Debug, thiserror::Error)]
pub enum BodyAborted {
    /// The backend connection failed under the reply.
    #[error("backend failed mid-response: {0}")]
    Channel(#[source] crate::mux::ChannelError),
    /// The app ended its reply with an `error`.
    #[error("the app failed mid-response: {0}")]
    App(#[source] crate::proto::RemoteError),
    /// A frame on the reply's channel did not fit its protocol.
    #[error("backend sent a malformed frame mid-response: {0}")]
    BadFrame(#[source] crate::proto::MessageError),
    /// The client read too slowly and was cut.
    #[error("the client read too slowly and was cut")]
    SlowClient,
    /// A streamed upload still going under the reply failed.
    #[error("the request body failed mid-response: {0}")]
    Upload(#[source] super::UploadError),
    /// The streamed upload could not be sent to the app.
    #[error("sending the request body failed mid-response: {0}")]
    Sending(#[source] crate::mux::ChannelError),
    /// Compressing the body failed.
    #[error("compressing the response failed: {0}")]
    Compression(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The app's body chunks as an HTTP body.
#[derive(Debug)]
pub struct ReplyBody {
    sender: Option<ChannelSender>,
    receiver: ChannelReceiver,
    /// `X-Cocaine-HTTP-Proto-Version: 1.1`: an empty chunk ends the body.
    proto11: bool,
    /// Bytes still due under the meta's `Content-Length`. The body is
    /// complete when they have arrived: hyper stops polling there, so the
    /// channel must end with `close` without waiting for the app's.
    remaining: Option<u64>,
    done: bool,
    /// A streamed upload still sending after the response head (it holds
    /// our sender until the body's end is queued); polled with the reply.
    upload: Option<super::upload::UploadTail>,
}

impl ReplyBody {
    pub(crate) fn new(
        sender: ChannelSender,
        receiver: ChannelReceiver,
        proto11: bool,
        content_length: Option<u64>,
    ) -> Self {
        let mut body = Self {
            sender: Some(sender),
            receiver,
            proto11,
            remaining: content_length,
            done: false,
            upload: None,
        };
        if content_length == Some(0) {
            body.finish();
        }
        body
    }

    /// The reply of a streamed upload whose app answered before the body
    /// was all sent: `upload` goes on sending it as the reply is read, and
    /// gives our sender back at the body's end.
    pub(crate) fn uploading(
        upload: super::upload::UploadTail,
        receiver: ChannelReceiver,
        proto11: bool,
        content_length: Option<u64>,
    ) -> Self {
        let mut body = Self {
            sender: None,
            receiver,
            proto11,
            remaining: content_length,
            done: false,
            upload: Some(upload),
        };
        if content_length == Some(0) {
            body.finish();
        }
        body
    }

    /// The reply is complete: end our side with `close`.
    fn finish(&mut self) {
        self.done = true;
        // The reply ended before the upload did: the rest of the body is
        // not sent, and dropping the upload (with our sender) cancels.
        self.upload = None;
        if let Some(mut sender) = self.sender.take() {
            sender.close_on_drop();
        }
    }

    /// Notifies `signal` when the reply is cut for a client that reads too
    /// slowly (see [`crate::mux::ChannelReceiver::notify_on_cut`]).
    pub(crate) fn close_connection_on_cut(&self, signal: &std::sync::Arc<tokio::sync::Notify>) {
        self.receiver.notify_on_cut(std::sync::Arc::clone(signal));
    }

    /// Discards the body, ending our side with `close` (HEAD, 204, 304).
    pub fn discard(mut self) {
        self.finish();
    }

    /// The channel's two halves, for a reply that becomes a two-way stream
    /// (a WebSocket after its 101); `None` if the reply is complete
    /// already (our side then ends with `close`).
    pub fn into_channel(mut self) -> Option<(ChannelSender, ChannelReceiver)> {
        if self.done {
            return None;
        }
        let sender = self.sender.take()?;
        Some((sender, self.receiver))
    }

    /// Streams the rest of the reply as a long-lived push stream (see
    /// [`super::PushBody`]); the body back if the reply is complete already.
    #[allow(clippy::result_large_err)] // `Err` is the body handed back, once per request; boxing it would allocate for nothing
    pub fn into_push(
        mut self,
        limits: super::push::PushLimits,
        guard: super::streams::StreamGuard,
    ) -> Result<super::push::PushBody, Self> {
        if self.done {
            return Err(self);
        }
        match self.sender.take() {
            Some(sender) => Ok(super::push::PushBody::start(
                sender,
                self.receiver,
                self.proto11,
                limits,
                guard,
            )),
            None => Err(self),
        }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<HttpFrame<Bytes>, BodyAborted>>> {
        let this = &mut *self;
        if let Some(upload) = &mut this.upload {
            match upload.poll(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(sender)) => {
                    this.upload = None;
                    this.sender = Some(sender);
                }
                Poll::Ready(Err(e)) => {
                    this.upload = None;
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match std::task::ready!(this.receiver.poll_recv(cx)) {
                None => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(BodyAborted::Channel(e))));
                }
                Some(Ok(frame)) => frame,
            };
            match frame.stream_event() {
                Ok(StreamEvent::Write(chunk)) if chunk.is_empty() && this.proto11 => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(StreamEvent::Write(chunk)) if chunk.is_empty() => {}
                Ok(StreamEvent::Write(chunk)) => {
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(chunk.len() as u64);
                        if *remaining == 0 {
                            this.finish();
                        }
                    }
                    return Poll::Ready(Some(Ok(HttpFrame::data(chunk))));
                }
                Ok(StreamEvent::Close) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(StreamEvent::Error(e)) => {
                    // The app's own terminal message: our side ends cleanly.
                    if let Some(mut sender) = this.sender.take() {
                        sender.close_on_drop();
                    }
                    this.done = true;
                    return Poll::Ready(Some(Err(BodyAborted::App(e))));
                }
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(BodyAborted::BadFrame(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
