//! Handler plumbing: owns the raw request/response types of one `enqueue`
//! channel, the boxed handler type, and isolating a handler's failure or
//! panic to its own request.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::Mutex;

use crate::proto::{ErrorCode, Headers, Message, RemoteError, StreamEvent};
use crate::session::{Incoming, Reply, ReplyError};

/// What a handler returns: `Err` is sent to the client as the channel's
/// `error`, unless the handler already finished its reply.
pub type HandlerResult = Result<(), RemoteError>;

/// A boxed handler future.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A registered handler.
pub(crate) type Handler = Arc<dyn Fn(Request, Response) -> HandlerFuture + Send + Sync>;

/// Why reading the request stream stopped early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// The client ended its side with `error` (e.g. `[[7, 3]]`, cancelled).
    #[error("request cancelled by the client: {0}")]
    Cancelled(RemoteError),
    /// The client disconnected.
    #[error("client disconnected")]
    Disconnected,
    /// A frame did not have the shape of its message.
    #[error("malformed request frame: {0}")]
    Malformed(String),
}

/// The client's side of one `enqueue` channel.
#[derive(Debug)]
pub struct Request {
    /// The event name.
    pub event: Bytes,
    /// The `enqueue` frame's headers (trace ids, timeout, forwarded ones).
    pub headers: Headers,
    incoming: Incoming,
}

impl Request {
    pub(crate) fn new(event: Bytes, headers: Headers, incoming: Incoming) -> Self {
        Self {
            event,
            headers,
            incoming,
        }
    }

    /// The next chunk the client wrote; `None` after its `close`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, RequestError>> {
        let frame = match self.incoming.recv().await? {
            Ok(frame) => frame,
            Err(ReplyError::Disconnected) => return Some(Err(RequestError::Disconnected)),
            Err(e) => return Some(Err(RequestError::Malformed(e.to_string()))),
        };
        match frame.stream_event() {
            Ok(StreamEvent::Write(chunk)) => Some(Ok(chunk)),
            Ok(StreamEvent::Close) => None,
            Ok(StreamEvent::Error(e)) => Some(Err(RequestError::Cancelled(e))),
            Err(e) => Some(Err(RequestError::Malformed(e.to_string()))),
        }
    }

    /// Waits until the client cancels or disconnects, skipping any chunks
    /// and ignoring a normal `close` (after which the client can still
    /// disconnect). Use it beside slow work: `select!` on both.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but chunks it skipped are gone.
    pub async fn cancelled(&mut self) -> RequestError {
        loop {
            match self.next_chunk().await {
                Some(Err(e)) => return e,
                Some(Ok(_)) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// Our side of one `enqueue` channel. Cloneable: the framework keeps a clone
/// so that a handler's `Err` or panic can still be reported.
#[derive(Debug, Clone)]
pub struct Response {
    reply: Arc<Mutex<Option<Reply>>>,
}

impl Response {
    pub(crate) fn new(reply: Reply) -> Self {
        Self {
            reply: Arc::new(Mutex::new(Some(reply))),
        }
    }

    /// Writes one chunk.
    pub async fn write(&self, chunk: impl Into<Bytes>) -> Result<(), ReplyError> {
        match self.reply.lock().await.as_mut() {
            Some(reply) => reply.write(chunk).await,
            None => Err(finished()),
        }
    }

    /// Ends the reply with `close`.
    pub async fn close(&self) -> Result<(), ReplyError> {
        self.end_with([Message::close()]).await
    }

    /// Ends the reply with `messages`, the last of them terminal, in one
    /// hand-off to the session.
    pub(crate) async fn end_with<const N: usize>(
        &self,
        messages: [Message; N],
    ) -> Result<(), ReplyError> {
        match self.reply.lock().await.take() {
            Some(mut reply) => reply.send_all(messages).await,
            None => Err(finished()),
        }
    }

    /// Ends the reply with `error [[category, code], message]`.
    pub async fn error(&self, error: RemoteError) -> Result<(), ReplyError> {
        match self.reply.lock().await.take() {
            Some(reply) => reply.error(error).await,
            None => Err(finished()),
        }
    }

    /// Whether the reply was ended.
    pub async fn is_finished(&self) -> bool {
        self.reply.lock().await.is_none()
    }
}

fn finished() -> ReplyError {
    ReplyError::NotAllowed {
        ty: crate::proto::protocol::streaming::WRITE,
        state: crate::proto::Protocol::Terminal,
    }
}

/// A handler's run, with a panic caught: its output is the handler's
/// result, or the panic. [`report_failure`] answers either failure.
pub(crate) struct Isolated {
    inner: HandlerFuture,
}

impl Isolated {
    pub(crate) fn new(handler: &Handler, request: Request, response: Response) -> Self {
        Self {
            inner: handler(request, response),
        }
    }
}

impl Future for Isolated {
    type Output = Result<HandlerResult, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().inner.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Answers a handler's `Err` or panic on its own request only, unless the
/// handler finished its reply already.
pub(crate) async fn report_failure(
    outcome: Result<HandlerResult, Box<dyn Any + Send>>,
    response: Response,
) {
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error,
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            tracing::error!(panic = %what, "app handler panicked");
            RemoteError::new(
                ErrorCode::UNCAUGHT_ERROR,
                format!("handler panicked: {what}"),
            )
        }
    };
    // Not finished yet: report the failure. Finished: it already answered.
    let _ = response.error(error).await;
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
