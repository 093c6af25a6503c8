//! The WebSocket helper: owns the app side of a WebSocket through the
//! gateway. The upgrade request arrives as an ordinary HTTP request (the
//! 5-tuple, with `Upgrade` and `Sec-WebSocket-*` headers); the handler
//! looks at it and accepts (the meta with status 101; the gateway completes
//! the handshake) or answers it with any other response, which refuses it.
//! After that, each `write` chunk is one message, its first byte the
//! opcode (see [`crate::proto::websocket`]); `close` is a normal close and
//! `error` an abnormal one (close 1011 with the error's message).
//!
//! ```no_run
//! use rpcgate::app::{AppBuilder, WebSocketMessage, WebSocketRequest};
//!
//! let app = AppBuilder::new("echo-ws").on_websocket("http", |req: WebSocketRequest| async move {
//!     if !req.is_upgrade() {
//!         req.respond(400, vec![], "WebSocket only\n").await.ok();
//!         return Ok(());
//!     }
//!     let Ok(mut ws) = req.accept().await else { return Ok(()) };
//!     while let Some(Ok(message)) = ws.recv().await {
//!         if ws.send(message).await.is_err() {
//!             break;
//!         }
//!     }
//!     ws.close().await.ok();
//!     Ok(())
//! });
//! ```

use std::borrow::Cow;

use bytes::Bytes;

use super::handler::{RequestError, Response};
use super::http::{HttpRequest, HttpResponse};
use crate::proto::RemoteError;
use crate::proto::http::HeaderPair;
use crate::proto::websocket::{self as mapping, Kind};
use crate::session::ReplyError;

/// One message of a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebSocketMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl WebSocketMessage {
    /// The chunk that carries it.
    fn to_chunk(&self) -> Bytes {
        match self {
            Self::Text(text) => mapping::encode(Kind::Text, text.as_bytes()),
            Self::Binary(data) => mapping::encode(Kind::Binary, data),
        }
    }

    /// The message a chunk carries.
    fn from_chunk(chunk: &Bytes) -> Result<Self, mapping::BadChunk> {
        let (kind, payload) = mapping::decode(chunk)?;
        Ok(match kind {
            Kind::Binary => Self::Binary(payload),
            Kind::Text => Self::Text(
                String::from_utf8(payload.to_vec()).map_err(|_| mapping::BadChunk::NotUtf8)?,
            ),
        })
    }
}

impl From<String> for WebSocketMessage {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for WebSocketMessage {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Bytes> for WebSocketMessage {
    fn from(data: Bytes) -> Self {
        Self::Binary(data)
    }
}

/// A request that may become a WebSocket: look at it, then
/// [`accept`](Self::accept) or [`respond`](Self::respond).
#[derive(Debug)]
pub struct WebSocketRequest {
    request: HttpRequest,
    response: HttpResponse,
}

impl WebSocketRequest {
    pub(super) fn new(request: HttpRequest, response: HttpResponse) -> Self {
        Self { request, response }
    }

    /// The HTTP request (method, uri, headers, query).
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// Whether the client asks for a WebSocket (`Upgrade: websocket`);
    /// otherwise it is a plain HTTP request, to be answered with
    /// [`respond`](Self::respond) (or [`into_http`](Self::into_http)).
    pub fn is_upgrade(&self) -> bool {
        self.request.header("upgrade").is_some_and(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        })
    }

    /// The path, without the query.
    pub fn path(&self) -> Cow<'_, str> {
        self.request.path()
    }

    /// The first header named `name`, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.request.header(name)
    }

    /// The subprotocols the client offers (`Sec-WebSocket-Protocol`), in
    /// its order of preference.
    pub fn protocols(&self) -> Vec<String> {
        self.request
            .headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"sec-websocket-protocol"))
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Accepts the WebSocket: sends the meta with status 101.
    pub async fn accept(self) -> Result<WebSocket, ReplyError> {
        self.accept_with(Vec::new()).await
    }

    /// Accepts the WebSocket with `headers` on the 101 (say, the chosen
    /// `Sec-WebSocket-Protocol`); the gateway adds the handshake's own.
    pub async fn accept_with(self, headers: Vec<HeaderPair>) -> Result<WebSocket, ReplyError> {
        let Self {
            request,
            mut response,
        } = self;
        response.head(101, headers).await?;
        let (response, _) = response.into_parts();
        Ok(WebSocket {
            request,
            sender: WebSocketSender { response },
        })
    }

    /// Answers with an ordinary HTTP response: refuses an upgrade (403,
    /// say), or answers a plain request.
    pub async fn respond(
        self,
        status: u16,
        headers: Vec<HeaderPair>,
        body: impl Into<Bytes>,
    ) -> Result<(), ReplyError> {
        self.response.respond(status, headers, body).await
    }

    /// The request and response as plain HTTP, for any other answer.
    pub fn into_http(self) -> (HttpRequest, HttpResponse) {
        (self.request, self.response)
    }
}

/// An accepted WebSocket: receive the client's messages, send yours.
#[derive(Debug)]
pub struct WebSocket {
    request: HttpRequest,
    sender: WebSocketSender,
}

impl WebSocket {
    /// The upgrade request.
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// The client's next message; `None` once it closed the WebSocket.
    /// `Err` if the gateway cancelled the stream (the client vanished, a
    /// limit, the gateway stopping) or sent a chunk that is not a message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Result<WebSocketMessage, RequestError>> {
        match self.request.next_body_chunk().await? {
            Ok(chunk) => Some(
                WebSocketMessage::from_chunk(&chunk)
                    .map_err(|e| RequestError::Malformed(e.to_string())),
            ),
            Err(e) => Some(Err(e)),
        }
    }

    /// Sends `message` to the client.
    pub async fn send(&self, message: impl Into<WebSocketMessage>) -> Result<(), ReplyError> {
        self.sender.send(message).await
    }

    /// A cloneable sender of this WebSocket's messages, for other tasks
    /// (a broadcast, say).
    pub fn sender(&self) -> WebSocketSender {
        self.sender.clone()
    }

    /// Closes the WebSocket normally (the client gets close 1000).
    pub async fn close(self) -> Result<(), ReplyError> {
        self.sender.close().await
    }

    /// Ends the WebSocket with an error (the client gets close 1011 and
    /// the error's message as the reason, cut to 123 bytes).
    pub async fn fail(self, error: RemoteError) -> Result<(), ReplyError> {
        self.sender.fail(error).await
    }
}

/// Sends messages on a WebSocket; cloneable. The first close or failure
/// through any clone ends it.
#[derive(Debug, Clone)]
pub struct WebSocketSender {
    response: Response,
}

impl WebSocketSender {
    /// Sends `message` to the client.
    pub async fn send(&self, message: impl Into<WebSocketMessage>) -> Result<(), ReplyError> {
        self.response.write(message.into().to_chunk()).await
    }

    /// Closes the WebSocket normally (close 1000).
    pub async fn close(&self) -> Result<(), ReplyError> {
        self.response.close().await
    }

    /// Ends the WebSocket with an error (close 1011).
    pub async fn fail(&self, error: RemoteError) -> Result<(), ReplyError> {
        self.response.error(error).await
    }

    /// Whether the WebSocket was ended from this side.
    pub async fn is_closed(&self) -> bool {
        self.response.is_finished().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_map_to_chunks_and_back() {
        for message in [
            WebSocketMessage::from("héllo"),
            WebSocketMessage::from(Bytes::from_static(&[0, 1, 0xff])),
            WebSocketMessage::from(String::new()),
        ] {
            let chunk = message.to_chunk();
            assert_eq!(WebSocketMessage::from_chunk(&chunk), Ok(message));
        }
        assert_eq!(
            WebSocketMessage::from_chunk(&Bytes::from_static(b"\x03x")),
            Err(mapping::BadChunk::Opcode(3))
        );
    }
}
