//! The exchange: owns serving one request whole, from its head to what the
//! app answered, and saying what was served. In order: route, admission
//! and the deadline, the body (collected, or streamed for a service that
//! takes uploads), packing, the member and connection, sending with
//! retries, and the kind of reply (a whole or streamed body, a push or SSE
//! stream, a WebSocket upgrade). A JSON-RPC request goes through the same
//! door: each of its calls is admitted, chosen a member and sent on its
//! own (see [`super::jsonrpc`]).
//!
//! It runs in two steps. [`Dispatcher::begin`] is synchronous: it routes,
//! admits and (when the body is already complete, as for most requests
//! without one) packs, so the request head is gone before hyper reads
//! ahead on the connection (a head still alive then keeps hyper's read
//! buffer from being reused, and hyper allocates a new one per request).
//! [`Dispatcher::serve`] is the rest.
//!
//! The HTTP side turns the [`Served`] into a response, metrics, a span and
//! an access-log line; nothing here knows HTTP statuses beyond the app's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Body;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use tokio::time::Instant;

use super::pack::pack;
pub use super::served::{Answer, AppBody, AppReply, Served, Upgrade};
use super::streams::{StreamCaps, StreamKind};
use super::upload::collect_body;
use super::{
    BadRequestId, DispatchError, Dispatcher, GatewayError, PackedRequest, Policy, PushLimits,
    Ticket, TraceDecision, jsonrpc, upload, websocket,
};
use crate::proto::http::HeaderPair;
use crate::route;

/// The client of a request, as far as trusted proxies tell: set in the
/// request's extensions by the listeners (and the embedded service) from
/// the peer and its forwarding headers. Its streams count against its
/// caps.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// What the observer of requests wants the exchange to keep or add.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watching {
    /// Keep the event name (for a JSON access log or a sampled span).
    pub event: bool,
    /// Send the app a W3C `traceparent` (OpenTelemetry export is on).
    pub traceparent: bool,
}

/// A request after its synchronous first step ([`Dispatcher::begin`]).
pub struct Exchange<B> {
    started: Instant,
    request_id: u64,
    service: Option<String>,
    event: Option<String>,
    step: Step<B>,
}

// Most requests are admitted: boxing that variant would cost each an
// allocation to save the few that fail a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
enum Step<B> {
    /// It failed already (no route, shed...).
    Failed(GatewayError),
    Admitted(Admitted<B>),
    /// A JSON-RPC request (boxed: kept out of every other request's future).
    JsonRpc(Box<JsonRpcRequest<B>>),
}

/// A JSON-RPC request: its calls are admitted one by one once the body is in.
struct JsonRpcRequest<B> {
    headers: HeaderMap,
    body: B,
    decision: TraceDecision,
}

impl<B> std::fmt::Debug for Exchange<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("request_id", &self.request_id)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<B> Exchange<B> {
    /// An exchange that failed before it began (a malformed trace header).
    pub fn failed(error: GatewayError, started: Instant) -> Self {
        Self {
            started,
            request_id: rand::random(),
            service: None,
            event: None,
            step: Step::Failed(error),
        }
    }

    /// The request's id (its trace id): its `X-Request-Id`.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// Whether it is a JSON-RPC request.
    pub fn is_jsonrpc(&self) -> bool {
        matches!(self.step, Step::JsonRpc(_))
    }
}

/// A routed request that passed load shedding.
struct Admitted<B> {
    target: route::Target,
    /// Counted in flight until the request ends; its deadline.
    ticket: Ticket,
    head_request: bool,
    /// A WebSocket upgrade request's `Sec-WebSocket-Key`.
    websocket: Option<HeaderValue>,
    /// The client (as trusted proxies tell), when known.
    client: Option<IpAddr>,
    request: Packing<B>,
}

/// A request's `enqueue`, or what it is made of once the body is in.
enum Packing<B> {
    /// Packed already: the body was complete (the head is gone).
    Packed(PackedRequest),
    /// The body is still coming; the head waits for it (boxed: the
    /// uncommon case, kept out of every request's future).
    Collect(Box<Collecting<B>>),
}

/// A request head waiting for its body.
struct Collecting<B> {
    parts: Parts,
    body: B,
    decision: TraceDecision,
    /// The service takes streamed uploads (`stream_request_body`).
    stream: bool,
}

/// Who served a request, as far as it got.
#[derive(Default)]
struct Who {
    member: Option<Arc<str>>,
    attempts: u32,
    upstream: Option<SocketAddr>,
    bytes_in: Option<u64>,
}

impl Dispatcher {
    /// The synchronous first step of a request (see the module docs):
    /// JSON-RPC detection, route, load shedding, deadline, and the packing
    /// when the body is already complete. `decision` is the request's
    /// trace ids, or why its `X-Request-Id` is malformed.
    pub fn begin<B>(
        &self,
        policy: &Policy,
        parts: Parts,
        body: B,
        decision: Result<TraceDecision, BadRequestId>,
        started: Instant,
        watching: Watching,
    ) -> Exchange<B>
    where
        B: Body<Data = Bytes>,
    {
        let config = policy.config();
        // The path first (one comparison), then two header look-ups: a
        // request elsewhere than the JSON-RPC path pays only the first.
        if config.jsonrpc.enabled
            && parts.uri.path() == config.jsonrpc.path
            && is_jsonrpc(&parts.headers)
        {
            let decision = decision.unwrap_or_else(|_| TraceDecision::fresh());
            return Exchange {
                started,
                request_id: decision.trace.trace_id,
                service: None,
                event: None,
                step: Step::JsonRpc(Box::new(JsonRpcRequest {
                    headers: parts.headers,
                    body,
                    decision,
                })),
            };
        }
        let decision = match decision {
            Ok(decision) => decision,
            Err(e) => return Exchange::failed(e.into(), started),
        };
        let mut service = None;
        let step = match self.admit_request(
            policy,
            parts,
            body,
            decision,
            started,
            watching,
            &mut service,
        ) {
            Ok(admitted) => Step::Admitted(admitted),
            Err(e) => Step::Failed(e),
        };
        let event = match &step {
            Step::Admitted(admitted) if watching.event => Some(admitted.target.event.clone()),
            _ => None,
        };
        Exchange {
            started,
            request_id: decision.trace.trace_id,
            service,
            event,
            step,
        }
    }

    /// The rest of a request after [`Dispatcher::begin`]: the body (if it
    /// was still coming), the sending, and the reply's kind.
    pub async fn serve<B>(
        &self,
        policy: &Policy,
        exchange: Exchange<B>,
        watching: Watching,
    ) -> Served
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Exchange {
            started,
            request_id: _,
            mut service,
            event,
            step,
        } = exchange;
        let mut who = Who::default();
        let answer = match step {
            Step::Failed(e) => Err(e),
            Step::Admitted(admitted) => self.answer(policy, admitted, watching, &mut who).await,
            // Boxed: kept out of every other request's future.
            Step::JsonRpc(request) => {
                Box::pin(self.answer_jsonrpc(policy, *request, started, &mut who)).await
            }
        };
        if answer.as_ref().is_err_and(GatewayError::is_unknown_service) {
            service = None;
        }
        Served {
            service,
            member: who.member,
            event,
            attempts: who.attempts,
            upstream: who.upstream,
            bytes_in: who.bytes_in,
            answer,
        }
    }

    /// Routes and admits a request, and packs it if its body is complete.
    #[allow(clippy::too_many_arguments)] // the request's parts and its step's context
    fn admit_request<B>(
        &self,
        policy: &Policy,
        mut parts: Parts,
        body: B,
        decision: TraceDecision,
        started: Instant,
        watching: Watching,
        service: &mut Option<String>,
    ) -> Result<Admitted<B>, GatewayError>
    where
        B: Body<Data = Bytes>,
    {
        // HTTP/2 carries the host as `:authority`, which hyper keeps in the
        // uri: the app gets it as `Host`, as from HTTP/1.1.
        if !parts.headers.contains_key(hyper::header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(value) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(hyper::header::HOST, value);
        }
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = parts
            .headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok());
        let config = policy.config();
        let target = route::route(
            path_and_query,
            host,
            &parts.headers,
            &config.routes,
            &config.routing,
        )?;
        *service = Some(target.service.clone());
        // Its streams are counted against its client's cap.
        let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
        // Load shedding (refused at once rather than queued) and the
        // deadline.
        let ticket = self.admit(policy, &target.service, &parts.headers, started)?;
        // A WebSocket upgrade: packed with every header (`Upgrade` and
        // `Sec-WebSocket-*` included) for the app to authorise.
        let websocket = websocket::upgrade_key(&parts.method, parts.version, &parts.headers);
        // A push service's app (or a WebSocket's) is told how long the
        // gateway keeps its stream, not the deadline for the response head.
        let timeout = if websocket.is_some() || policy.is_push(&target.service) {
            config.limits.stream_max_lifetime
        } else {
            ticket.timeout()
        };
        let limit = config.request.body_limit;
        if parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|len| len > limit as u64)
        {
            return Err(GatewayError::BodyTooLarge(limit));
        }
        let head_request = parts.method == Method::HEAD;
        let request = if body.is_end_stream() {
            let packed = pack(
                policy,
                &parts,
                &target,
                Bytes::new(),
                decision,
                timeout,
                watching,
            );
            Packing::Packed(packed)
        } else {
            // Only a request with a body to come looks up its service.
            let stream = config
                .services
                .get(&target.service)
                .is_some_and(|s| s.stream_request_body);
            Packing::Collect(Box::new(Collecting {
                parts,
                body,
                decision,
                stream,
            }))
        };
        Ok(Admitted {
            target,
            ticket,
            head_request,
            websocket,
            client,
            request,
        })
    }

    /// Collects the body (if it was still coming), packs, sends, and makes
    /// the answer from the app's meta; `who` learns who served it, as far
    /// as it got.
    async fn answer<B>(
        &self,
        policy: &Policy,
        admitted: Admitted<B>,
        watching: Watching,
        who: &mut Who,
    ) -> Result<Answer, GatewayError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Admitted {
            target,
            ticket,
            head_request,
            websocket,
            client,
            request,
        } = admitted;
        let outcome = match request {
            Packing::Packed(packed) => {
                who.bytes_in = Some(0);
                let buffered = websocket.is_none() && !policy.is_push(&target.service);
                self.send_buffered(policy, &target.service, &ticket, &packed, buffered)
                    .await
            }
            Packing::Collect(collecting) => {
                let Collecting {
                    parts,
                    body,
                    decision,
                    stream,
                } = *collecting;
                let config = policy.config();
                let (limit, body_timeout) = (config.request.body_limit, config.limits.body_timeout);
                // What the app is told as `request_timeout`.
                let remaining = || {
                    if policy.is_push(&target.service) {
                        config.limits.stream_max_lifetime
                    } else {
                        ticket.deadline().saturating_duration_since(Instant::now())
                    }
                };
                if stream {
                    // The 5-tuple goes with an empty body; the body follows
                    // as it arrives (see `dispatch::upload`).
                    let remaining = remaining();
                    let mut packed = pack(
                        policy,
                        &parts,
                        &target,
                        Bytes::new(),
                        decision,
                        remaining,
                        watching,
                    );
                    drop(parts);
                    packed
                        .headers
                        .insert(upload::REQUEST_BODY, upload::REQUEST_BODY_STREAM)
                        .map_err(|_| {
                            GatewayError::Dispatch(DispatchError::Protocol(
                                "the streamed-body header was refused",
                            ))
                        })?;
                    let upload = super::Upload::new(body, limit, body_timeout);
                    // Boxed: kept out of every other request's future.
                    Box::pin(self.send_streamed(policy, &target.service, &ticket, &packed, upload))
                        .await
                } else {
                    // Boxed: most requests have no body to wait for, and
                    // their futures need not carry room for this one.
                    let body = Box::pin(collect_body(body, limit, body_timeout)).await?;
                    who.bytes_in = Some(body.len() as u64);
                    let remaining = remaining();
                    let packed = pack(policy, &parts, &target, body, decision, remaining, watching);
                    let buffered = websocket.is_none() && !policy.is_push(&target.service);
                    self.send_buffered(policy, &target.service, &ticket, &packed, buffered)
                        .await
                }
            }
        };
        who.member = outcome.member;
        who.attempts = outcome.attempts;
        who.upstream = outcome.upstream;
        let reply = outcome.result?;
        let status = StatusCode::from_u16(reply.meta.status)
            .map_err(|_| GatewayError::Dispatch(DispatchError::BadStatus(reply.meta.status)))?;
        if let Some(key) = websocket
            && status == StatusCode::SWITCHING_PROTOCOLS
        {
            // Past the stream caps: 503 instead of the 101, and the reply
            // dropped, which cancels the app's channel.
            let caps = StreamCaps::new(&policy.config().limits);
            let guard = self.streams.try_open(StreamKind::WebSocket, client, caps)?;
            let (sender, receiver) = reply.body.into_channel().ok_or(GatewayError::Dispatch(
                DispatchError::Protocol("the app ended the stream with its 101"),
            ))?;
            let limits = websocket::Limits::new(&policy.config().limits);
            return Ok(Answer::Upgrade(Upgrade {
                headers: reply.meta.headers,
                key,
                session: websocket::Session::new(sender, receiver, guard, limits),
            }));
        }
        let no_body = head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_informational();
        // A long-lived stream: server-sent events, or any reply of a push
        // service. No deadline from here on; its own limits instead.
        let event_stream = !no_body && is_event_stream(&reply.meta.headers);
        let push = event_stream || (!no_body && policy.is_push(&target.service));
        let body = if no_body {
            reply.body.discard();
            AppBody::Empty
        } else if push {
            let limits = &policy.config().limits;
            let push_limits = PushLimits {
                queue: limits.stream_queue,
                keepalive: event_stream.then_some(limits.sse_keepalive),
                idle: limits.stream_idle_timeout,
                lifetime: limits.stream_max_lifetime,
            };
            let kind = if event_stream {
                StreamKind::Sse
            } else {
                StreamKind::Push
            };
            // Past the stream caps: 503, and the reply dropped, which
            // cancels the app's channel.
            let guard = self
                .streams
                .try_open(kind, client, StreamCaps::new(limits))?;
            match reply.body.into_push(push_limits, guard) {
                Ok(push) => AppBody::Push(push),
                Err(complete) => AppBody::Stream(complete),
            }
        } else {
            AppBody::Stream(reply.body)
        };
        Ok(Answer::Reply(AppReply {
            status,
            headers: reply.meta.headers,
            body,
            no_body,
            push,
            event_stream,
        }))
    }

    /// A JSON-RPC request: its body collected under `request.body_limit`,
    /// then each call admitted, chosen a member and sent on its own (see
    /// [`jsonrpc::JsonRpc::answer`]).
    async fn answer_jsonrpc<B>(
        &self,
        policy: &Policy,
        request: JsonRpcRequest<B>,
        started: Instant,
        who: &mut Who,
    ) -> Result<Answer, GatewayError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let config = policy.config();
        let body = collect_body(
            request.body,
            config.request.body_limit,
            config.limits.body_timeout,
        )
        .await?;
        who.bytes_in = Some(body.len() as u64);
        let door = jsonrpc::Door {
            dispatcher: self,
            policy,
            headers: &request.headers,
            started,
            trace: request.decision,
        };
        let (answer, calls) = self.jsonrpc.answer(&body, door).await;
        Ok(Answer::JsonRpc { answer, calls })
    }
}

/// Whether the app's response headers say `Content-Type:
/// text/event-stream` (parameters allowed).
fn is_event_stream(headers: &[HeaderPair]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case(b"content-type")
            && value.split(|&b| b == b';').next().is_some_and(|media| {
                media
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"text/event-stream")
            })
    })
}

/// The header that marks a JSON-RPC request (any value).
const X_COCAINE_JSON_RPC: HeaderName = HeaderName::from_static("x-cocaine-json-rpc");

/// Whether a request asks for JSON-RPC: `X-Cocaine-JSON-RPC` (any value)
/// or `Content-Type: application/json-rpc`.
fn is_jsonrpc(headers: &HeaderMap) -> bool {
    headers.contains_key(X_COCAINE_JSON_RPC)
        || headers
            .get(hyper::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json-rpc"))
}
