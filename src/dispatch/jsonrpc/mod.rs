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

mod call;
mod convert;
mod send;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper::HeaderMap;
use serde_json::{Value as Json, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub(crate) use self::call::Call;
pub(crate) use self::convert::to_args;
pub use self::convert::{to_json, to_pack};
use self::send::{PooledCall, converse, plan};
use super::attempt::attempts;
use super::{DispatchError, Dispatcher, Policy, TraceDecision, Trail};
use crate::locator::{Locator, LocatorError};
use crate::mux::{self, ChannelError, Invocation, MuxConfig, MuxHandle};
use crate::proto::{Args, Graph, Message, MessageError, RemoteError};

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
    /// The call's deadline passed (-32603).
    #[error("no reply within {0:?}")]
    Deadline(Duration),
    /// Refused at once: too many requests in flight at the gateway or for
    /// the service, or the gateway is stopping (-32001: try again).
    #[error("{0}")]
    Refused(#[source] Box<DispatchError>),
    /// The app's pool could not serve it: no connection, a lost channel,
    /// every attempt refused (-32603).
    #[error("{0}")]
    Dispatch(#[source] Box<DispatchError>),
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
            Self::Refused(_) => -32001,
            Self::Locator(_)
            | Self::Connect(_)
            | Self::Channel(_)
            | Self::BadReply(_)
            | Self::Unsupported(_)
            | Self::Deadline(_)
            | Self::Dispatch(_) => -32603,
        }
    }

    /// Who failed, for the observer (metrics, span, access log).
    pub fn failure(&self) -> CallFailure {
        match self {
            Self::Parse(_) | Self::InvalidRequest(_) | Self::InvalidParams(_) => {
                CallFailure::Invalid
            }
            Self::MethodNotFound(_) => CallFailure::NotFound,
            Self::Refused(_) => CallFailure::Refused,
            Self::Deadline(_) => CallFailure::Deadline,
            Self::Locator(_) | Self::Connect(_) | Self::Dispatch(_) => CallFailure::Unreachable,
            Self::Channel(_) | Self::BadReply(_) | Self::Unsupported(_) => CallFailure::BadReply,
            Self::Backend(_) => CallFailure::Backend,
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

/// Who failed a call, in a few kinds (the HTTP side maps each to a status
/// for its metrics and log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The call itself is malformed (parse, request or params).
    Invalid,
    /// No such service or method, or not callable.
    NotFound,
    /// Shed: too many in flight, or the gateway stopping.
    Refused,
    /// The service could not be reached.
    Unreachable,
    /// Its deadline passed.
    Deadline,
    /// The service broke its protocol, or the connection failed under it.
    BadReply,
    /// The service answered with an error.
    Backend,
}

/// What one call of a request went through: one metrics sample, one span
/// and one access-log line each.
#[derive(Debug)]
pub struct CallRecord {
    /// `"service.method"` as the call named it (cut to 256 bytes).
    pub method: String,
    /// The service, once the locator knew it (`None`: unknown, so it is
    /// never a metrics label).
    pub service: Option<String>,
    /// The routing-group member (or the app) of its last attempt.
    pub member: Option<Arc<str>>,
    /// Attempts made through the app's pool (0 for other services).
    pub attempts: u32,
    /// The backend connection of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// Why it failed, if it did.
    pub failure: Option<CallFailure>,
    /// How long it took.
    pub elapsed: Duration,
    /// Its span: a child of the request's.
    pub trace: TraceDecision,
}

/// What a JSON-RPC request is answered with.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Only notifications: nothing to answer.
    Nothing,
    /// A response object or a batch's array, serialized.
    Json(Bytes),
}

/// The door every call of a request goes through: the dispatcher's
/// admission (each call against its own service's limits, with its own
/// slot) and its member choice (weights, or the sticky key when the
/// request sends one).
#[derive(Debug, Clone, Copy)]
pub struct Door<'a> {
    /// The dispatcher whose admission, pools and retries calls use.
    pub dispatcher: &'a Dispatcher,
    /// The config's limits, exposure and retry policy.
    pub policy: &'a Policy,
    /// The request's headers (`X-Request-Timeout`, the sticky key).
    pub headers: &'a HeaderMap,
    /// When the request came.
    pub started: Instant,
    /// The request's trace: each call's span is a child of it.
    pub trace: TraceDecision,
}

/// A connection to a service and its graph.
#[derive(Debug, Clone)]
struct Backend {
    handle: MuxHandle,
    graph: Arc<Graph>,
}

/// Serves JSON-RPC requests: resolves names, sends calls to apps through
/// their pools, and keeps one connection per name for other services.
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
    /// concurrently and answered in order; with what each call went
    /// through. Never fails: every error is a JSON-RPC error object.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops each call's channel, which
    /// cancels it on the wire.
    pub async fn answer(&self, body: &[u8], door: Door<'_>) -> (Answer, Vec<CallRecord>) {
        let max_batch = door.policy.config().jsonrpc.max_batch;
        let parsed: Json = match serde_json::from_slice(body) {
            Ok(parsed) => parsed,
            Err(e) => return (error_answer(&CallError::Parse(e)), Vec::new()),
        };
        let (reply, records) = match parsed {
            Json::Array(calls) if calls.is_empty() => {
                let e = CallError::InvalidRequest("an empty batch");
                return (error_answer(&e), Vec::new());
            }
            Json::Array(calls) if calls.len() > max_batch => {
                let e = CallError::InvalidRequest("the batch is too long");
                return (error_answer(&e), Vec::new());
            }
            Json::Array(calls) => {
                let done = join_all(calls.into_iter().map(|c| self.one(c, door))).await;
                let (replies, records): (Vec<_>, Vec<_>) = done.into_iter().unzip();
                let replies: Vec<Json> = replies.into_iter().flatten().collect();
                if replies.is_empty() {
                    return (Answer::Nothing, records);
                }
                (Json::Array(replies), records)
            }
            call => match self.one(call, door).await {
                (Some(reply), record) => (reply, vec![record]),
                (None, record) => return (Answer::Nothing, vec![record]),
            },
        };
        (Answer::Json(serialize(&reply)), records)
    }

    /// One call of a request: its response object (`None` for a
    /// notification), and its record.
    async fn one(&self, call: Json, door: Door<'_>) -> (Option<Json>, CallRecord) {
        let started = Instant::now();
        let mut record = CallRecord {
            method: String::new(),
            service: None,
            member: None,
            attempts: 0,
            upstream: None,
            failure: None,
            elapsed: Duration::ZERO,
            trace: door.trace.child(),
        };
        let (id, call) = match Call::parse(call) {
            Ok(parsed) => parsed,
            Err((id, e)) => {
                record.failure = Some(e.failure());
                record.elapsed = started.elapsed();
                return (Some(response(id.unwrap_or(Json::Null), Err(e))), record);
            }
        };
        record.method = call.method.chars().take(256).collect();
        let result = self.call(&call, door, &mut record).await;
        if let Err(e) = &result {
            tracing::debug!(method = %call.method, error = %e, "json-rpc call failed");
            record.failure = Some(e.failure());
        }
        record.elapsed = started.elapsed();
        (id.map(|id| response(id, result)), record)
    }

    /// A call: admitted against its service's limits, then sent to an
    /// app through its pool (the member choice of a routing group
    /// included), or to another service on this module's connection.
    async fn call(
        &self,
        call: &Call,
        door: Door<'_>,
        record: &mut CallRecord,
    ) -> Result<Json, CallError> {
        let not_found = || CallError::MethodNotFound(call.method.clone());
        let (service, name) = call
            .method
            .split_once('.')
            .filter(|(s, m)| !s.is_empty() && !m.is_empty())
            .ok_or_else(not_found)?;
        let config = door.policy.config();
        if let Some(expose) = &config.routing.expose
            && !expose.contains(service)
            && !expose.contains(&call.method)
        {
            return Err(not_found());
        }
        // Its own slot, its own deadline.
        let ticket = door
            .dispatcher
            .admit(door.policy, service, door.headers, door.started)
            .map_err(|e| CallError::Refused(Box::new(e)))?;
        let (deadline, timeout) = (ticket.deadline(), ticket.timeout());
        let sent = async {
            // Listed methods are callable whatever the graph; any other
            // only when the service turns out to be an app.
            let allowed = config.jsonrpc.allow.contains(&call.method);
            let graph = self.graph(service, &call.method, allowed).await?;
            record.service = Some(service.to_owned());
            let plan = plan(&graph, call, name)?;
            if graph.is_app() {
                let mut trail = Trail::default();
                let sent = attempts(
                    door.dispatcher.pools(),
                    door.policy.retry(),
                    service,
                    &ticket,
                    PooledCall { call, plan: &plan },
                    &mut trail,
                )
                .await;
                record.member = trail.member;
                record.attempts = trail.attempts;
                record.upstream = trail.upstream;
                return sent.map_err(|e| match e {
                    DispatchError::Shed(_) | DispatchError::ShuttingDown => {
                        CallError::Refused(Box::new(e))
                    }
                    DispatchError::Deadline(total) => CallError::Deadline(total),
                    other => CallError::Dispatch(Box::new(other)),
                })?;
            }
            let backend = self.backend(service, &call.method, allowed).await?;
            record.upstream = backend.handle.peer();
            let channel = backend
                .handle
                .open(Invocation::new(
                    Message::new(plan.id, Args::Raw(plan.args.clone())),
                    plan.tx,
                    plan.rx,
                ))
                .await
                .map_err(CallError::Channel)?;
            let (sender, receiver) = channel.split();
            converse(sender, receiver, &plan, call).await
        };
        match tokio::time::timeout_at(deadline, sent).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Deadline(timeout)),
        }
    }

    /// The graph of `service` (from a resolve, which the locator client
    /// caches); not found unless it is an app's or `allowed`.
    async fn graph(
        &self,
        service: &str,
        method: &str,
        allowed: bool,
    ) -> Result<Arc<Graph>, CallError> {
        let not_found = || CallError::MethodNotFound(method.to_owned());
        let resolved = self.locator.resolve(service).await.map_err(|e| match e {
            LocatorError::NotFound(_) => not_found(),
            other => CallError::Locator(other),
        })?;
        if !allowed && !resolved.graph.is_app() {
            return Err(not_found());
        }
        Ok(resolved.graph)
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
