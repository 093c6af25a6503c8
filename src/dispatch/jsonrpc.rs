//! JSON-RPC 2.0: owns calling any exposed service method by name
//! (`"service.method"`, PROTOCOL.md §5.5): parsing single calls, batches
//! and notifications, the JSON ↔ msgpack conversion of args and replies,
//! and driving each call's channel through the service's graph (from
//! `resolve`) to its terminal state. The HTTP side only detects a JSON-RPC
//! request and hands over the collected body; it picks the HTTP status
//! (`http::response`).
//!
//! Conversions:
//! - JSON → msgpack (params): `null` → nil, booleans, integers (`u64` or
//!   `i64`), other numbers → float64, strings → str, arrays, objects → maps
//!   with str keys.
//! - msgpack → JSON (replies): nil → `null`, booleans, integers, floats
//!   (NaN and infinities → `null`), str and bin → a string when valid
//!   UTF-8, else an array of byte values; maps → objects, a key that is not
//!   a string written as its JSON text (the graph's `0` → `"0"`), cut to
//!   64 bytes; ext values → `null`.
//!
//! Replies: a `value` gives `result` = its args tuple as a JSON array; a
//! streaming reply gives `result` = `{"chunks": [...]}`, each chunk a
//! `write`'s args tuple, collected until `close`; an `error` frame is
//! error -32000 with `data: {category, code}`.
//!
//! Reach: a call reaches an app's methods (a service whose graph is an
//! app's, [`Graph::is_app`]); a method of any other service (the locator,
//! `node`, `storage`, `logging`...) only when `jsonrpc.allow` lists it as
//! `"service.method"`. Anything else is -32601, decided from the resolved
//! graph before any connection to the service is opened, so nothing is
//! sent to it. `routing.expose`, when set, narrows both further.
//!
//! Connections: services that are not apps have no pool (pools serve
//! HTTP to apps only), so each name a call resolves gets one connection
//! here, kept while it lives and replaced when it closes. A routing
//! group's name keeps the member its first resolve picked.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Number, Value as Json, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::locator::{Locator, LocatorError};
use crate::mux::{self, ChannelError, Invocation, MuxConfig, MuxHandle};
use crate::proto::graph::{Node, Transition};
use crate::proto::msgpack::{Reader, Value as Pack};
use crate::proto::{Args, Graph, Message, MessageError, Protocol, RawArgs, RemoteError};

/// The limit on connecting to one endpoint of a service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one JSON-RPC call failed; each maps to a JSON-RPC error code
/// ([`CallError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The body is not JSON (-32700).
    #[error("parse error: {0}")]
    Parse(#[source] serde_json::Error),
    /// The JSON is not a JSON-RPC request (-32600).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// No such service or method, or not exposed (-32601).
    #[error("method `{0}` not found")]
    MethodNotFound(String),
    /// The params do not fit the method (-32602).
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// The locator could not be asked (-32603).
    #[error("{0}")]
    Locator(#[source] LocatorError),
    /// No endpoint of the service accepted a connection (-32603).
    #[error("no connection to `{0}`")]
    Connect(String),
    /// The connection failed under the call (-32603).
    #[error("{0}")]
    Channel(#[source] ChannelError),
    /// The service broke its protocol (-32603).
    #[error("the service sent a malformed reply: {0}")]
    BadReply(#[source] MessageError),
    /// The method's graph has a shape rpcgate does not drive (-32603).
    #[error("method `{0}` has a protocol rpcgate cannot drive")]
    Unsupported(String),
    /// The request's deadline passed (-32603).
    #[error("no reply within {0:?}")]
    Deadline(Duration),
    /// The service answered with an `error` frame (-32000).
    #[error("{0}")]
    Backend(RemoteError),
}

impl CallError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            Self::Parse(_) => -32700,
            Self::InvalidRequest(_) => -32600,
            Self::MethodNotFound(_) => -32601,
            Self::InvalidParams(_) => -32602,
            Self::Backend(_) => -32000,
            Self::Locator(_)
            | Self::Connect(_)
            | Self::Channel(_)
            | Self::BadReply(_)
            | Self::Unsupported(_)
            | Self::Deadline(_) => -32603,
        }
    }

    /// The JSON-RPC error object.
    fn to_json(&self) -> Json {
        match self {
            Self::Backend(e) => json!({
                "code": self.code(),
                "message": e.message_lossy(),
                "data": {"category": e.code.category, "code": e.code.code},
            }),
            _ => json!({"code": self.code(), "message": self.to_string()}),
        }
    }
}

/// What a JSON-RPC request is answered with.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Only notifications: nothing to answer.
    Nothing,
    /// A response object or a batch's array, serialized.
    Json(Bytes),
}

/// The limits and exposure one request is served with.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The most calls in one batch.
    pub max_batch: usize,
    /// `routing.expose`: services and `"service.method"` entries.
    pub expose: Option<&'a std::collections::BTreeSet<String>>,
    /// `jsonrpc.allow`: the `"service.method"` entries of services that
    /// are not apps which may be called.
    pub allow: &'a std::collections::BTreeSet<String>,
    /// When the whole request's time is up.
    pub deadline: Instant,
    /// Its timeout, for error messages.
    pub timeout: Duration,
}

impl<'a> Scope<'a> {
    /// The scope `config` gives a request with this deadline.
    pub fn new(config: &'a Config, deadline: Instant, timeout: Duration) -> Self {
        Self {
            max_batch: config.jsonrpc.max_batch,
            expose: config.routing.expose.as_ref(),
            allow: &config.jsonrpc.allow,
            deadline,
            timeout,
        }
    }
}

/// A connection to a service and its graph.
#[derive(Debug, Clone)]
struct Backend {
    handle: MuxHandle,
    graph: Arc<Graph>,
}

/// Serves JSON-RPC requests: resolves names, keeps one connection per
/// name, and calls methods through the graphs.
#[derive(Debug)]
pub struct JsonRpc {
    locator: Arc<dyn Locator>,
    backends: Mutex<HashMap<String, Backend>>,
    tracker: TaskTracker,
}

impl JsonRpc {
    /// Calls resolved through `locator`.
    pub fn new(locator: Arc<dyn Locator>) -> Self {
        Self {
            locator,
            backends: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
        }
    }

    /// Answers a whole request body: one call, or a batch run
    /// concurrently and answered in order. Never fails: every error is a
    /// JSON-RPC error object.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops each call's channel, which
    /// cancels it on the wire.
    pub async fn answer(&self, body: &[u8], scope: Scope<'_>) -> Answer {
        let parsed: Json = match serde_json::from_slice(body) {
            Ok(parsed) => parsed,
            Err(e) => return error_answer(&CallError::Parse(e)),
        };
        let reply = match parsed {
            Json::Array(calls) if calls.is_empty() => {
                return error_answer(&CallError::InvalidRequest("an empty batch"));
            }
            Json::Array(calls) if calls.len() > scope.max_batch => {
                return error_answer(&CallError::InvalidRequest("the batch is too long"));
            }
            Json::Array(calls) => {
                let replies = join_all(calls.into_iter().map(|c| self.one(c, scope))).await;
                let replies: Vec<Json> = replies.into_iter().flatten().collect();
                if replies.is_empty() {
                    return Answer::Nothing;
                }
                Json::Array(replies)
            }
            call => match self.one(call, scope).await {
                Some(reply) => reply,
                None => return Answer::Nothing,
            },
        };
        Answer::Json(serialize(&reply))
    }

    /// One call of a request: its response object, or `None` for a
    /// notification.
    async fn one(&self, call: Json, scope: Scope<'_>) -> Option<Json> {
        let (id, call) = match Call::parse(call) {
            Ok(parsed) => parsed,
            Err((id, e)) => return Some(response(id.unwrap_or(Json::Null), Err(e))),
        };
        let result = match tokio::time::timeout_at(scope.deadline, self.call(&call, scope)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Deadline(scope.timeout)),
        };
        if let Err(e) = &result {
            tracing::debug!(method = %call.method, error = %e, "json-rpc call failed");
        }
        id.map(|id| response(id, result))
    }

    async fn call(&self, call: &Call, scope: Scope<'_>) -> Result<Json, CallError> {
        let not_found = || CallError::MethodNotFound(call.method.clone());
        let (service, name) = call
            .method
            .split_once('.')
            .filter(|(s, m)| !s.is_empty() && !m.is_empty())
            .ok_or_else(not_found)?;
        if let Some(expose) = scope.expose
            && !expose.contains(service)
            && !expose.contains(&call.method)
        {
            return Err(not_found());
        }
        // Listed methods are callable whatever the graph; any other only
        // when the service turns out to be an app.
        let allowed = scope.allow.contains(&call.method);
        let backend = self
            .backend(service, &call.method, allowed)
            .await
            .map_err(|e| match e {
                CallError::Locator(LocatorError::NotFound(_)) => not_found(),
                other => other,
            })?;
        let id = backend.graph.method_id(name).ok_or_else(not_found)?;
        // Control messages are never sent (PROTOCOL.md §1.5).
        if id >= crate::proto::graph::GOAWAY {
            return Err(not_found());
        }
        let method = &backend.graph.methods[&id];
        let unsupported = || CallError::Unsupported(call.method.clone());
        let tx = method
            .dispatch
            .protocol(Protocol::Terminal)
            .ok_or_else(unsupported)?;
        let rx = match &method.upstream {
            Transition::Recursive => return Err(unsupported()),
            other => other.protocol(Protocol::Terminal).ok_or_else(unsupported)?,
        };
        let open = Message::new(id, Args::Raw(to_args(&call.args)?));
        let channel = backend
            .handle
            .open(Invocation::new(open, tx, rx))
            .await
            .map_err(CallError::Channel)?;
        let (mut sender, mut receiver) = channel.split();
        let chunk_ids = match &method.dispatch {
            Transition::Node(node) => node,
            Transition::Recursive => &Node::terminal(),
        };
        for (chunk_name, args) in &call.chunks {
            let Some((chunk_id, _)) = chunk_ids
                .messages
                .iter()
                .find(|(_, (n, _))| n == chunk_name)
            else {
                return Err(CallError::InvalidParams(format!(
                    "`{chunk_name}` is not a message of `{}`",
                    call.method
                )));
            };
            sender
                .send(Message::new(*chunk_id, Args::Raw(to_args(args)?)))
                .await
                .map_err(|e| match e {
                    ChannelError::NotAllowed { .. } => {
                        CallError::InvalidParams(format!("`{chunk_name}` is not allowed here"))
                    }
                    other => CallError::Channel(other),
                })?;
        }
        // A stream we were given no end for ends now.
        if sender.state() == Protocol::Streaming {
            sender.close_on_drop();
        }
        let mut chunks = Vec::new();
        loop {
            let Some(frame) = receiver.recv().await else {
                // Terminal: nothing (more) comes back.
                return Ok(match rx {
                    Protocol::Streaming => json!({ "chunks": chunks }),
                    _ => Json::Null,
                });
            };
            let frame = frame.map_err(CallError::Channel)?;
            let args = || to_json_args(&frame.args).map_err(CallError::BadReply);
            match (rx, frame.ty) {
                (Protocol::Primitive, 0) => return args(),
                (Protocol::Streaming, 0) => chunks.push(args()?),
                (Protocol::Streaming, 2) => return Ok(json!({ "chunks": chunks })),
                (_, 1) => {
                    let error = RemoteError::decode_args(&frame.args)
                        .map_err(|e| CallError::BadReply(e.into()))?;
                    return Err(CallError::Backend(error));
                }
                (_, other) => return Err(CallError::BadReply(MessageError::UnexpectedType(other))),
            }
        }
    }

    /// The connection to `service`, made (after a fresh resolve) if there
    /// is none or it closed. Unless `allowed`, a service whose graph is not
    /// an app's refuses `method` as not found, before any connection is
    /// made.
    async fn backend(
        &self,
        service: &str,
        method: &str,
        allowed: bool,
    ) -> Result<Backend, CallError> {
        let refused = || CallError::MethodNotFound(method.to_owned());
        if let Some(backend) = self
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
            .filter(|b| !b.handle.is_closed() && !b.handle.is_draining())
        {
            if !allowed && !backend.graph.is_app() {
                return Err(refused());
            }
            return Ok(backend.clone());
        }
        let resolved = self
            .locator
            .resolve(service)
            .await
            .map_err(CallError::Locator)?;
        if !allowed && !resolved.graph.is_app() {
            return Err(refused());
        }
        for endpoint in &resolved.endpoints {
            let Ok(Ok(stream)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await
            else {
                self.locator.forget_endpoint(&resolved.service, *endpoint);
                continue;
            };
            let Ok((handle, connection)) = mux::from_tcp(stream, MuxConfig::default()) else {
                continue;
            };
            // It ends once every handle is gone and its channels ended.
            self.tracker.spawn(connection.run());
            let backend = Backend {
                handle,
                graph: Arc::clone(&resolved.graph),
            };
            self.backends
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(service.to_owned(), backend.clone());
            return Ok(backend);
        }
        Err(CallError::Connect(service.to_owned()))
    }
}

/// One parsed call.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) args: Vec<Json>,
    /// `(message name, args)` to send after the opening message.
    pub(crate) chunks: Vec<(String, Vec<Json>)>,
}

impl Call {
    /// The call's id (`None`: a notification) and the call, or the id to
    /// answer with and why the call is invalid.
    #[allow(clippy::type_complexity)] // the two halves of JSON-RPC's rule
    pub(crate) fn parse(call: Json) -> Result<(Option<Json>, Self), (Option<Json>, CallError)> {
        let Json::Object(mut object) = call else {
            return Err((None, CallError::InvalidRequest("a call must be an object")));
        };
        let id = object.remove("id");
        if let Some(id) = &id
            && !matches!(id, Json::Null | Json::Number(_) | Json::String(_))
        {
            return Err((
                None,
                CallError::InvalidRequest("`id` must be a string, a number or null"),
            ));
        }
        let invalid = |what| Err((Some(id.clone().unwrap_or(Json::Null)), what));
        if object.get("jsonrpc").and_then(Json::as_str) != Some("2.0") {
            return invalid(CallError::InvalidRequest("`jsonrpc` must be \"2.0\""));
        }
        let Some(Json::String(method)) = object.remove("method") else {
            return invalid(CallError::InvalidRequest("`method` must be a string"));
        };
        let bad_params = |why: &str| CallError::InvalidParams(why.to_owned());
        let (args, chunks) = match object.remove("params") {
            None => (Vec::new(), Vec::new()),
            Some(Json::Array(args)) => (args, Vec::new()),
            Some(Json::Object(mut params)) => {
                let args = match params.remove("args") {
                    None => Vec::new(),
                    Some(Json::Array(args)) => args,
                    Some(_) => return invalid(bad_params("`args` must be an array")),
                };
                let chunks = match params.remove("chunks") {
                    None => Vec::new(),
                    Some(Json::Array(chunks)) => {
                        let mut parsed = Vec::with_capacity(chunks.len());
                        for chunk in chunks {
                            match chunk {
                                Json::Object(chunk) if chunk.len() == 1 => {
                                    for (name, args) in chunk {
                                        let Json::Array(args) = args else {
                                            return invalid(bad_params(
                                                "a chunk's args must be an array",
                                            ));
                                        };
                                        parsed.push((name, args));
                                    }
                                }
                                _ => {
                                    return invalid(bad_params(
                                        "a chunk must be {\"<message>\": [args]}",
                                    ));
                                }
                            }
                        }
                        parsed
                    }
                    Some(_) => return invalid(bad_params("`chunks` must be an array")),
                };
                if !params.is_empty() {
                    return invalid(bad_params("only `args` and `chunks` are known"));
                }
                (args, chunks)
            }
            Some(_) => return invalid(bad_params("`params` must be an array or an object")),
        };
        Ok((
            id,
            Self {
                method,
                args,
                chunks,
            },
        ))
    }
}

/// A response object.
fn response(id: Json, result: Result<Json, CallError>) -> Json {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err(e) => error_response(id, &e),
    }
}

fn error_response(id: Json, error: &CallError) -> Json {
    json!({"jsonrpc": "2.0", "error": error.to_json(), "id": id})
}

/// A request answered with one error, `id` null.
fn error_answer(error: &CallError) -> Answer {
    Answer::Json(serialize(&error_response(Json::Null, error)))
}

fn serialize(value: &Json) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// JSON params as a msgpack args array.
pub(crate) fn to_args(args: &[Json]) -> Result<RawArgs, CallError> {
    let mut buf = BytesMut::new();
    crate::proto::msgpack::put_array_len(&mut buf, args.len());
    for arg in args {
        to_pack(arg).encode(&mut buf);
    }
    RawArgs::new(buf.freeze()).map_err(|e| CallError::InvalidParams(e.to_string()))
}

/// A JSON value as msgpack.
pub fn to_pack(value: &Json) -> Pack {
    match value {
        Json::Null => Pack::Nil,
        Json::Bool(b) => Pack::Bool(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Pack::Int(i128::from(u)),
            (_, Some(i)) => Pack::Int(i128::from(i)),
            _ => Pack::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Pack::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        Json::Array(items) => Pack::Array(items.iter().map(to_pack).collect()),
        Json::Object(map) => Pack::Map(
            map.iter()
                .map(|(k, v)| {
                    (
                        Pack::Bytes(Bytes::copy_from_slice(k.as_bytes())),
                        to_pack(v),
                    )
                })
                .collect(),
        ),
    }
}

/// A msgpack value as JSON (see the module docs).
pub fn to_json(value: &Pack) -> Json {
    match value {
        Pack::Nil | Pack::Ext(_) => Json::Null,
        Pack::Bool(b) => Json::Bool(*b),
        Pack::Int(i) => match (u64::try_from(*i), i64::try_from(*i)) {
            (Ok(u), _) => Json::Number(u.into()),
            (_, Ok(s)) => Json::Number(s.into()),
            _ => Json::Null,
        },
        Pack::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Pack::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => Json::String(s.to_owned()),
            Err(_) => Json::Array(b.iter().map(|byte| Json::Number((*byte).into())).collect()),
        },
        Pack::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Pack::Map(pairs) => {
            let mut object = Map::with_capacity(pairs.len());
            for (k, v) in pairs {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => key_text(&other),
                };
                object.insert(key, to_json(v));
            }
            Json::Object(object)
        }
    }
}

/// The most bytes of JSON text a map key that is not a string becomes.
/// Keys nested in keys escape their quotes again at every level, so without
/// a cap 134 bytes of msgpack (thirty maps as keys of maps) ask for 2 GB.
const MAX_KEY_TEXT: usize = 64;

/// A key that is not a string as its JSON text, cut to [`MAX_KEY_TEXT`]
/// bytes on a character boundary.
fn key_text(key: &Json) -> String {
    let mut text = key.to_string();
    if text.len() > MAX_KEY_TEXT {
        let mut end = MAX_KEY_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A reply's args array as JSON.
fn to_json_args(args: &Bytes) -> Result<Json, MessageError> {
    Ok(to_json(&Reader::new(args).read_value()?))
}

/// Runs `futures` concurrently; their outputs in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_msgpack_convert_both_ways() {
        let value = json!([null, true, 1, -2, 1.5, "s", [1], {"k": "v"}]);
        assert_eq!(to_json(&to_pack(&value)), value);
        assert_eq!(
            to_json(&Pack::Bytes(Bytes::from_static(b"\xff\x00"))),
            json!([255, 0])
        );
        let map = Pack::Map(vec![(Pack::Int(0), Pack::Nil)]);
        assert_eq!(to_json(&map), json!({"0": null}));
    }

    #[test]
    fn keys_nested_in_keys_stay_small() {
        // Found by the `jsonrpc_convert` fuzz target: each map used as a
        // key doubles the escaping of the key inside it.
        let mut value = Pack::Bytes(Bytes::from_static(b"\"k\""));
        for _ in 0..20 {
            value = Pack::Map(vec![(value, Pack::Nil)]);
        }
        let text = to_json(&value).to_string();
        assert!(text.len() < 4 * MAX_KEY_TEXT, "{} bytes", text.len());
        // Short non-string keys are still their JSON text.
        let map = Pack::Map(vec![(Pack::Array(vec![Pack::Int(1)]), Pack::Bool(true))]);
        assert_eq!(to_json(&map), json!({"[1]": true}));
    }

    #[test]
    fn calls_parse_by_the_spec() {
        let (id, call) = Call::parse(json!({"jsonrpc": "2.0", "method": "a.b", "id": 1})).unwrap();
        assert_eq!(id, Some(json!(1)));
        assert!(call.args.is_empty());
        let (id, _) = Call::parse(json!({"jsonrpc": "2.0", "method": "a.b"})).unwrap();
        assert_eq!(id, None);
        let (id, e) = Call::parse(json!({"jsonrpc": "1.0", "method": "a.b", "id": 7})).unwrap_err();
        assert_eq!((id, e.code()), (Some(json!(7)), -32600));
        let (_, e) = Call::parse(json!({"jsonrpc": "2.0", "method": "a.b", "params": 3, "id": 1}))
            .unwrap_err();
        assert_eq!(e.code(), -32602);
        let (_, call) = Call::parse(json!({"jsonrpc": "2.0", "method": "e.enqueue",
            "params": {"args": ["ping"], "chunks": [{"write": ["x"]}, {"close": []}]}}))
        .unwrap();
        assert_eq!(call.chunks.len(), 2);
    }
}
