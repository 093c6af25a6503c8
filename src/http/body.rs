//! Response bodies: owns the body type the gateway hands hyper, either a
//! complete buffer (errors, admin) or the app's streamed reply.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use crate::dispatch::{BodyAborted, PushBody, ReplyBody};

/// The body of a gateway response.
#[derive(Debug)]
pub enum GatewayBody {
    /// A complete body (taken once).
    Full(Option<Bytes>),
    /// The app's chunks as they arrive.
    Stream(ReplyBody),
    /// A long-lived push stream (server-sent events).
    Push(PushBody),
    /// Another body, counted for the JSON access log, whose line it writes
    /// when dropped (`access_log = "json"`; never a push stream).
    Logged(Box<super::access_log::Logged>),
    /// Another body through tower-http's compression (the embedded
    /// service's; the listeners' connections keep their own).
    Compressed(Box<CompressedBody>),
}

/// A body through tower-http's compression.
pub struct CompressedBody(pub(crate) tower_http::compression::CompressionBody<GatewayBody>);

impl std::fmt::Debug for CompressedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CompressedBody")
            .field(self.0.get_ref())
            .finish()
    }
}

impl Default for GatewayBody {
    /// No body (a CORS preflight's answer).
    fn default() -> Self {
        Self::empty()
    }
}

impl GatewayBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        Self::Full(Some(bytes).filter(|b| !b.is_empty()))
    }

    /// No body.
    pub fn empty() -> Self {
        Self::Full(None)
    }

    /// Notifies `signal` if the reply is cut for a slow client, so that
    /// its HTTP/1.1 connection closes: hyper, waiting to write, would not
    /// poll the body to learn it.
    pub(crate) fn close_connection_on_cut(&self, signal: &Arc<Notify>) {
        match self {
            Self::Full(_) => {}
            Self::Stream(stream) => stream.close_connection_on_cut(signal),
            Self::Push(push) => push.close_connection_on_cut(Arc::clone(signal)),
            Self::Logged(logged) => logged.body().close_connection_on_cut(signal),
            Self::Compressed(compressed) => compressed.0.get_ref().close_connection_on_cut(signal),
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(stream) => Pin::new(stream).poll_frame(cx),
            Self::Push(push) => Pin::new(push).poll_frame(cx),
            Self::Logged(logged) => Pin::new(&mut **logged).poll_frame(cx),
            Self::Compressed(compressed) => Pin::new(&mut compressed.0)
                .poll_frame(cx)
                .map_err(BodyAborted::Compression),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Stream(stream) => stream.is_end_stream(),
            Self::Push(push) => push.is_end_stream(),
            Self::Logged(logged) => logged.is_end_stream(),
            Self::Compressed(compressed) => compressed.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(stream) => stream.size_hint(),
            Self::Push(push) => push.size_hint(),
            Self::Logged(logged) => logged.size_hint(),
            Self::Compressed(compressed) => compressed.0.size_hint(),
        }
    }
}

/// A body that holds `G` until it is dropped (sent or abandoned): a
/// connection counts its request as in flight until the body is done.
#[derive(Debug)]
pub(crate) struct Guarded<G> {
    body: GatewayBody,
    _guard: G,
}

impl GatewayBody {
    /// This body, holding `guard` until it is dropped.
    pub(crate) fn with_guard<G>(self, guard: G) -> Guarded<G> {
        Guarded {
            body: self,
            _guard: guard,
        }
    }
}

impl<G: Unpin> Body for Guarded<G> {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
