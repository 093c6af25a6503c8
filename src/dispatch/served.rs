//! What serving a request came to ([`Served`]): who served it, as far as
//! it got, and the app's answer (a reply, a WebSocket session, or a
//! JSON-RPC request's calls), for the HTTP side to turn into a response.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::StatusCode;
use hyper::header::HeaderValue;

use super::{GatewayError, PushBody, ReplyBody, jsonrpc, websocket};
use crate::proto::http::HeaderPair;

/// What serving a request came to: who served it (as far as it got), and
/// the answer or why there is none.
#[derive(Debug)]
pub struct Served {
    /// The routed service; `None` before routing, or when the name turned
    /// out unknown (see [`GatewayError::is_unknown_service`]).
    pub service: Option<String>,
    /// The group member of the last attempt, or the app itself.
    pub member: Option<Arc<str>>,
    /// The event, when [`Watching::event`](super::Watching::event) asked for it.
    pub event: Option<String>,
    /// Attempts made (0: none got as far as a connection).
    pub attempts: u32,
    /// The backend connection of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// The request body's bytes, when read whole (not a streamed upload).
    pub bytes_in: Option<u64>,
    /// The answer.
    pub answer: Result<Answer, GatewayError>,
}

/// What the app (or the JSON-RPC calls) answered.
#[derive(Debug)]
pub enum Answer {
    /// A response head and its body.
    Reply(AppReply),
    /// A WebSocket the app accepted with its 101.
    Upgrade(Upgrade),
    /// A JSON-RPC request's answer, and what each call went through.
    JsonRpc {
        /// The JSON to send back.
        answer: jsonrpc::Answer,
        /// One record per call, in order.
        calls: Vec<jsonrpc::CallRecord>,
    },
}

/// The app's response head and body.
#[derive(Debug)]
pub struct AppReply {
    /// The status the app sent.
    pub status: StatusCode,
    /// The headers the app sent, in order.
    pub headers: Vec<HeaderPair>,
    /// The body.
    pub body: AppBody,
    /// The response carries no body (HEAD, 204, 304, 1xx).
    pub no_body: bool,
    /// A long-lived stream: server-sent events, or a push service's reply.
    pub push: bool,
    /// It is `text/event-stream`.
    pub event_stream: bool,
}

/// The body of an [`AppReply`].
#[derive(Debug)]
pub enum AppBody {
    /// None (the reply's chunks, if any, were discarded).
    Empty,
    /// Chunks streamed as the app sends them, under the deadline.
    Stream(ReplyBody),
    /// A long-lived stream with its own limits.
    Push(PushBody),
}

/// A WebSocket the app accepted.
#[derive(Debug)]
pub struct Upgrade {
    /// The app's headers on its 101.
    pub headers: Vec<HeaderPair>,
    /// The client's `Sec-WebSocket-Key`.
    pub key: HeaderValue,
    /// The session to run once the 101 is written.
    pub session: websocket::Session,
}
