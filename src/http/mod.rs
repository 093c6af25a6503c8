//! The HTTP side: owns the listeners and accept loop, serving HTTP/1.1 and
//! HTTP/2 (h2c, prior knowledge) through hyper-util's auto builder, turning
//! each request into a dispatch, and writing the streamed reply. Errors
//! become responses only in [`response`].

mod access_log;
mod body;
mod client_addr;
mod connection;
mod connection_limit;
mod layers;
pub(crate) mod log_limit;
mod push_h1;
pub mod response;
mod send_watch;
pub mod streams;
mod websocket;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::access_log::Logged as LoggedBody;
pub use self::body::GatewayBody;
pub use self::client_addr::client_addr;
pub use self::connection::serve_connection;
pub use self::connection_limit::ConnectionLimit;
pub use self::response::GatewayError;
pub use crate::cidr::Cidr;
use crate::config::Config;
use crate::dispatch::{self, Dispatcher, Policy, Ticket, TraceDecision, pack_request};
use crate::route;

/// Headers that describe one hop and are never copied from the app.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Serves requests: route, pack, dispatch, respond.
#[derive(Debug)]
pub struct Handler {
    /// What requests read from the config; a reload swaps it whole.
    settings: std::sync::RwLock<Arc<Settings>>,
    dispatcher: Dispatcher,
    /// MIRROR HOOK (issue 27): copies to `[services.X] mirror`.
    mirrors: dispatch::mirror::Mirrors,
    metrics: crate::metrics::RequestMetrics,
    /// The header that carries a verified client subject (mTLS): removed
    /// from every request, TLS configured or not, and set only from a
    /// verified certificate.
    subject_header: HeaderName,
    /// Cancelled when a shutdown's deadline passes: open connections are
    /// dropped at once.
    pub(crate) cut: CancellationToken,
    /// Client connections open now.
    pub(crate) open_connections: AtomicUsize,
    /// Requests in flight now, bodies included.
    pub(crate) busy: Arc<AtomicUsize>,
    /// Long-lived streams open now (SSE, WebSocket).
    pub streams: streams::Streams,
    /// The JSON access log's writer, started by the first config that
    /// asks for it (`access_log = "json"`).
    json_log: std::sync::OnceLock<Arc<access_log::AccessLog>>,
    /// OpenTelemetry export (`[tracing] otlp_endpoint`), when configured.
    otlp: Option<crate::otlp::Tracer>,
}

/// One config's worth of request settings. A request reads one snapshot
/// from start to end, so a reload never mixes two configs in one request.
#[derive(Debug)]
struct Settings {
    config: Arc<Config>,
    /// Admission, deadlines and retries of this config.
    policy: Policy,
    /// CORS and compression, when either is on.
    layers: Option<layers::Layers>,
    /// Where access-log lines go when they are JSON.
    json_log: Option<Arc<access_log::AccessLog>>,
}

impl Settings {
    /// Whether `service` is a push service (`[services.X] push = true`).
    fn is_push(&self, service: &str) -> bool {
        !self.config.services.is_empty()
            && self.config.services.get(service).is_some_and(|s| s.push)
    }

    /// Settings for `config`, keeping `previous`' counters where they still
    /// apply (see [`Policy::new`]).
    fn new(
        config: Arc<Config>,
        previous: Option<&Self>,
        json_log: &std::sync::OnceLock<Arc<access_log::AccessLog>>,
    ) -> Self {
        let policy = Policy::new(Arc::clone(&config), previous.map(|p| &p.policy));
        let json_log = (config.access_log
            && config.access_log_format == crate::config::AccessLogFormat::Json)
            .then(|| {
                Arc::clone(json_log.get_or_init(|| {
                    Arc::new(access_log::AccessLog::start(
                        config.access_log_queue,
                        config.access_log_file.clone(),
                    ))
                }))
            });
        Self {
            layers: layers::Layers::new(&config),
            config,
            policy,
            json_log,
        }
    }
}

impl Handler {
    /// A handler sending through `dispatcher`, with `config`'s request,
    /// limit and retry settings.
    pub fn new(config: Arc<Config>, dispatcher: Dispatcher) -> Self {
        let json_log = std::sync::OnceLock::new();
        let otlp = crate::otlp::Tracer::start(&config.tracing).unwrap_or_else(|error| {
            tracing::error!(%error, "OpenTelemetry export is off");
            None
        });
        Self {
            subject_header: config
                .tls
                .as_ref()
                .and_then(|t| HeaderName::from_bytes(t.client_subject_header.as_bytes()).ok())
                .unwrap_or(X_CLIENT_SUBJECT),
            settings: std::sync::RwLock::new(Arc::new(Settings::new(config, None, &json_log))),
            mirrors: dispatch::mirror::Mirrors::new(&dispatcher), // MIRROR HOOK
            dispatcher,
            metrics: crate::metrics::RequestMetrics::new(),
            cut: CancellationToken::new(),
            open_connections: AtomicUsize::new(0),
            busy: Arc::new(AtomicUsize::new(0)),
            streams: streams::Streams::default(),
            json_log,
            otlp,
        }
    }

    /// JSON access-log lines dropped so far because the writer fell behind
    /// (also counted in `rpcgate_access_log_dropped_total`).
    pub fn access_log_dropped(&self) -> u64 {
        self.json_log.get().map_or(0, |log| log.dropped())
    }

    /// The OpenTelemetry tracer, when `[tracing] otlp_endpoint` is set.
    pub fn tracer(&self) -> Option<&crate::otlp::Tracer> {
        self.otlp.as_ref()
    }

    /// Waits (at most `limit`) until the JSON access log's queued lines are
    /// written and flushed; logs a warning if they were not. Shutdown's last
    /// step, in the gateway and the library service alike.
    pub(crate) async fn flush_access_log(&self, limit: std::time::Duration) {
        if let Some(log) = self.json_log.get()
            && !log.flush(limit).await
        {
            tracing::warn!("the last access-log lines were not written in time");
        }
    }

    fn settings(&self) -> Arc<Settings> {
        Arc::clone(
            &self
                .settings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The config requests are served with now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.settings().config)
    }

    /// Serves new requests and connections with `config` (routes,
    /// timeouts, request and retry settings, limits). Requests in flight
    /// finish with the config they started with; connections already open
    /// keep their connection limits (head size, timeouts, HTTP/2 settings).
    pub fn reload(&self, config: Arc<Config>) {
        let mut settings = self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *settings = Arc::new(Settings::new(config, Some(&settings), &self.json_log));
    }

    /// Answers one request of the embedded service
    /// ([`crate::gateway::GatewayService`]). Never fails: errors become
    /// responses.
    ///
    /// The client-header rules are the listeners' (the same function): a
    /// client-sent `X-Client-Subject` (or `tls.client_subject_header`) is
    /// removed, and `X-Real-IP` is set from the peer, forwarding headers
    /// believed from `request.trusted_proxies` only. The peer is the
    /// request's [`PeerAddr`] extension, which the embedder sets from its
    /// accepted connection; without one, `X-Real-IP` is removed (nothing
    /// vouches for it) and the client is unknown (not counted per client).
    pub async fn handle<B>(&self, mut request: Request<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let settings = self.settings();
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        if peer.is_none() {
            request.headers_mut().remove(X_REAL_IP);
        }
        client_addr::apply_client_rules(
            &mut request,
            &self.subject_header,
            None,
            peer,
            None,
            &settings.config.request.trusted_proxies,
        );
        let begun = self.begin(&settings, request);
        self.finish(&settings, begun).await
    }

    /// A JSON-RPC request: admitted (load shedding, one deadline for the
    /// whole batch), its body collected under `request.body_limit`, and
    /// answered by the dispatcher's JSON-RPC module.
    async fn jsonrpc<B>(&self, settings: &Settings, request: Request<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _in_flight = self.metrics.in_flight();
        let started = Instant::now();
        let request_id: u64 = rand::random();
        let (parts, body) = request.into_parts();
        let config = &settings.config;
        let answered = async {
            let ticket = self
                .dispatcher
                .admit(&settings.policy, "", &parts.headers, started)?;
            let limit = config.request.body_limit;
            let body = collect_body(body, limit, config.limits.body_timeout).await?;
            Ok::<_, GatewayError>(self.dispatcher.jsonrpc(config, &body, &ticket).await)
        }
        .await;
        let response = match answered {
            Ok(answer) => response::jsonrpc(answer, request_id),
            Err(e) => {
                if let Some(limit) = e.body_limit_hit() {
                    crate::metrics::limit_hit(limit);
                }
                let (_, kind) = e.status();
                metrics::counter!(crate::metrics::ERRORS, crate::metrics::KIND => kind, crate::metrics::CATEGORY => "none")
                    .increment(1);
                e.into_response(request_id)
            }
        };
        self.metrics
            .member(JSONRPC_LABEL, JSONRPC_LABEL)
            .record(response.status().as_u16(), started.elapsed());
        response
    }

    /// The synchronous first step of a request: trace ids, route, load
    /// shedding, deadline, and (when the body is already complete, as for
    /// most requests without one) the packing, which lets the request head
    /// go.
    ///
    /// Why here and not in the first poll: the head's header values share
    /// hyper's read buffer, and hyper, right after handing over a request,
    /// reads ahead on the connection; if the head is still alive then, the
    /// buffer cannot be reused and hyper allocates a new one for every
    /// request.
    fn begin<B>(&self, settings: &Settings, request: Request<B>) -> Begun<B>
    where
        B: Body<Data = Bytes>,
    {
        let started = Instant::now();
        let config = &settings.config;
        // The path first (one comparison), then two header look-ups: a
        // request elsewhere than the JSON-RPC path pays only the first.
        if config.jsonrpc.enabled
            && request.uri().path() == config.jsonrpc.path
            && is_jsonrpc(request.headers())
        {
            return Begun {
                started,
                request_id: rand::random(),
                logged: None,
                service: None,
                step: Err(GatewayError::ConnectionClosing),
                jsonrpc: Some(Box::new(request)),
                otlp: None,
            };
        }
        let (parts, body) = request.into_parts();
        let decision =
            match TraceDecision::from_headers(&parts.headers, config.request.tracing_probability) {
                Ok(decision) => decision,
                Err(e) => {
                    return Begun {
                        started,
                        request_id: rand::random(),
                        logged: None,
                        service: None,
                        step: Err(e.into()),
                        jsonrpc: None,
                        otlp: None,
                    };
                }
            };
        // What the access log needs, taken now: the head does not live on.
        let logged = config.access_log.then(|| AccessLine {
            client: parts
                .extensions
                .get::<ClientAddr>()
                .map_or_else(|| "-".to_owned(), |c| c.0.to_string()),
            method: parts.method.clone(),
            uri: parts.uri.to_string(),
            time: settings.json_log.as_ref().map(|_| access_log::now()),
            span_id: decision.trace.span_id,
            trace_hi: decision.trace_hi,
        });
        let otlp = self.otlp.as_ref().map(|t| t.begin(decision, &parts));
        let mut service = None;
        let step = self.admit(settings, parts, body, decision, started, &mut service);
        Begun {
            started,
            request_id: decision.trace.trace_id,
            logged,
            service,
            step,
            jsonrpc: None,
            otlp,
        }
    }

    /// Routes and admits a request, and packs it if its body is complete.
    fn admit<B>(
        &self,
        settings: &Settings,
        mut parts: hyper::http::request::Parts,
        body: B,
        decision: TraceDecision,
        started: Instant,
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
        let config = &settings.config;
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
        // deadline: the dispatcher's.
        let ticket =
            self.dispatcher
                .admit(&settings.policy, &target.service, &parts.headers, started)?;
        // A WebSocket upgrade: packed with every header (`Upgrade` and
        // `Sec-WebSocket-*` included) for the app to authorise.
        let websocket = websocket::upgrade_key(&parts.method, parts.version, &parts.headers);
        // A push service's app (or a WebSocket's) is told how long the
        // gateway keeps its stream, not the deadline for the response head.
        let timeout = if websocket.is_some() || settings.is_push(&target.service) {
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
            Packing::Packed(self.pack(settings, &parts, &target, Bytes::new(), decision, timeout))
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

    /// The `enqueue` for a request whose body is `body`.
    fn pack(
        &self,
        settings: &Settings,
        parts: &hyper::http::request::Parts,
        target: &route::Target,
        body: Bytes,
        decision: TraceDecision,
        timeout: Duration,
    ) -> dispatch::PackedRequest {
        let mut packed = pack_request(
            &parts.method,
            parts.version,
            &parts.headers,
            &target.uri,
            body,
            &target.event,
            &settings.config.request.forward_headers,
            decision,
            timeout,
        );
        if self.otlp.is_some() {
            packed
                .headers
                .set_traceparent(crate::otlp::traceparent(&decision));
        }
        packed
    }

    /// The rest of a request after [`Self::begin`]: the body (if it was
    /// still coming), the dispatch, the response, metrics and the access
    /// log.
    async fn finish<B>(&self, settings: &Settings, begun: Begun<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(request) = begun.jsonrpc {
            // Boxed: kept out of every other request's future.
            return Box::pin(self.jsonrpc(settings, *request)).await;
        }
        let _in_flight = self.metrics.in_flight();
        let Begun {
            started,
            request_id,
            logged,
            mut service,
            step,
            jsonrpc: _,
            otlp,
        } = begun;
        let mut served = Served::default();
        // The event, for the JSON access log and a sampled request's span.
        if (settings.json_log.is_some()
            || otlp.as_ref().is_some_and(crate::otlp::Pending::is_sampled))
            && let Ok(admitted) = &step
        {
            served.event = Some(admitted.target.event.clone());
        }
        let result = match step {
            Ok(admitted) => {
                self.answer(settings, admitted, request_id, &mut served)
                    .await
            }
            Err(e) => Err(e),
        };
        let mut error_kind = None;
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                if let Some(limit) = e.body_limit_hit() {
                    crate::metrics::limit_hit(limit);
                }
                let (_, kind) = e.status();
                error_kind = Some(kind);
                if matches!(
                    kind,
                    "service_not_found"
                        | "locator_unavailable"
                        | "no_route"
                        | "bad_route"
                        | "bad_request_id"
                ) {
                    service = None;
                }
                let category = e.app_category().unwrap_or("none");
                metrics::counter!(crate::metrics::ERRORS, crate::metrics::KIND => kind, crate::metrics::CATEGORY => category)
                    .increment(1);
                e.into_response(request_id)
            }
        };
        let label = service
            .as_deref()
            .unwrap_or(crate::metrics::UNKNOWN_SERVICE);
        // Before a member was chosen (shed, not found...), the service is
        // its own member.
        let member_label = match (&service, &served.member) {
            (Some(_), Some(member)) => &**member,
            _ => label,
        };
        let elapsed = started.elapsed();
        self.metrics
            .member(label, member_label)
            .record(response.status().as_u16(), elapsed);
        if let (Some(tracer), Some(pending)) = (&self.otlp, otlp) {
            let ended = crate::otlp::Ended {
                service: service.as_deref(),
                event: served.event.as_deref(),
                member: service.is_some().then_some(member_label),
                attempts: served.attempts,
                upstream: served.upstream,
                error: error_kind,
            };
            tracer.end(pending, &mut response, &ended);
        }
        if let Some(line) = logged {
            if let Some(log) = &settings.json_log {
                let record = access_log::Record {
                    time: line.time.unwrap_or_else(access_log::now),
                    request_id,
                    trace_id: request_id,
                    trace_hi: line.trace_hi,
                    span_id: line.span_id,
                    client: line.client,
                    method: line.method,
                    uri: line.uri,
                    status: response.status().as_u16(),
                    member: service.as_ref().and(served.member),
                    service,
                    event: served.event,
                    upstream: served.upstream,
                    attempts: (served.attempts > 0).then_some(served.attempts),
                    bytes_in: served.bytes_in,
                    bytes_out: None,
                    complete: None,
                    head: elapsed,
                    duration: elapsed,
                };
                return log_json(response, record, log, started);
            }
            tracing::info!(
                target: "access",
                request_id = %format!("{request_id:016x}"),
                client = %line.client,
                method = %line.method,
                uri = %line.uri,
                service = label,
                member = member_label,
                status = response.status().as_u16(),
                ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        }
        response
    }

    /// Collects the body (if it was still coming), packs, dispatches, and
    /// makes the response from the app's meta; `served` learns who served
    /// it, as far as it got.
    async fn answer<B>(
        &self,
        settings: &Settings,
        admitted: Admitted<B>,
        request_id: u64,
        served: &mut Served,
    ) -> Result<Response<GatewayBody>, GatewayError>
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
                served.bytes_in = Some(0);
                // MIRROR HOOK: `dispatcher.send` plus the mirror copy.
                let buffered = websocket.is_none() && !settings.is_push(&target.service);
                let (config, policy) = (&settings.config, &settings.policy);
                self.mirrors
                    .send(
                        &self.dispatcher,
                        config,
                        policy,
                        &target.service,
                        &ticket,
                        &packed,
                        buffered,
                    )
                    .await
            }
            Packing::Collect(collecting) => {
                let Collecting {
                    parts,
                    body,
                    decision,
                    stream,
                } = *collecting;
                let config = &settings.config;
                let (limit, body_timeout) = (config.request.body_limit, config.limits.body_timeout);
                // What the app is told as `request_timeout`.
                let remaining = || {
                    if settings.is_push(&target.service) {
                        config.limits.stream_max_lifetime
                    } else {
                        ticket.deadline().saturating_duration_since(Instant::now())
                    }
                };
                if stream {
                    // The 5-tuple goes with an empty body; the body follows
                    // as it arrives (see `dispatch::upload`).
                    let remaining = remaining();
                    let mut packed =
                        self.pack(settings, &parts, &target, Bytes::new(), decision, remaining);
                    drop(parts);
                    packed
                        .headers
                        .insert(
                            dispatch::upload::REQUEST_BODY,
                            dispatch::upload::REQUEST_BODY_STREAM,
                        )
                        .map_err(|_| {
                            GatewayError::Dispatch(dispatch::DispatchError::Protocol(
                                "the streamed-body header was refused",
                            ))
                        })?;
                    let upload = dispatch::Upload::new(body, limit, body_timeout);
                    // Boxed: kept out of every other request's future.
                    Box::pin(self.dispatcher.send_streamed(
                        &settings.policy,
                        &target.service,
                        &ticket,
                        &packed,
                        upload,
                    ))
                    .await
                } else {
                    // Boxed: most requests have no body to wait for, and
                    // their futures need not carry room for this one.
                    let body = Box::pin(collect_body(body, limit, body_timeout)).await?;
                    served.bytes_in = Some(body.len() as u64);
                    let remaining = remaining();
                    let packed = self.pack(settings, &parts, &target, body, decision, remaining);
                    // MIRROR HOOK: `dispatcher.send` plus the mirror copy.
                    let buffered = websocket.is_none() && !settings.is_push(&target.service);
                    let (config, policy) = (&settings.config, &settings.policy);
                    self.mirrors
                        .send(
                            &self.dispatcher,
                            config,
                            policy,
                            &target.service,
                            &ticket,
                            &packed,
                            buffered,
                        )
                        .await
                }
            }
        };
        served.member = outcome.member;
        served.attempts = outcome.attempts;
        served.upstream = outcome.upstream;
        let reply = outcome.result?;
        let status = StatusCode::from_u16(reply.meta.status).map_err(|_| {
            GatewayError::Dispatch(dispatch::DispatchError::BadStatus(reply.meta.status))
        })?;
        if let Some(key) = websocket
            && status == StatusCode::SWITCHING_PROTOCOLS
        {
            return self.upgrade(settings, reply, &key, request_id, client);
        }
        let no_body = head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_informational();
        // A long-lived stream: server-sent events, or any reply of a push
        // service. No deadline from here on; its own limits instead.
        let event_stream = !no_body && is_event_stream(&reply.meta.headers);
        let push = event_stream || (!no_body && settings.is_push(&target.service));
        let body = if no_body {
            reply.body.discard();
            GatewayBody::empty()
        } else if push {
            let limits = &settings.config.limits;
            let push_limits = dispatch::PushLimits {
                queue: limits.stream_queue,
                keepalive: event_stream.then_some(limits.sse_keepalive),
                idle: limits.stream_idle_timeout,
                lifetime: limits.stream_max_lifetime,
            };
            let kind = if event_stream {
                streams::StreamKind::Sse
            } else {
                streams::StreamKind::Push
            };
            // Past the stream caps: 503, and the reply dropped, which
            // cancels the app's channel.
            let caps = streams::StreamCaps::new(limits);
            let guard = self.streams.try_open(kind, client, caps)?;
            match reply.body.into_push(push_limits, guard) {
                Ok(push) => GatewayBody::Push(push),
                Err(complete) => GatewayBody::Stream(complete),
            }
        } else {
            GatewayBody::Stream(reply.body)
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        // By value: each header value's bytes move into the response.
        for (name, value) in reply.meta.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&name),
                HeaderValue::from_maybe_shared(value),
            ) else {
                tracing::debug!("dropping an invalid response header from the app");
                continue;
            };
            if HOP_BY_HOP.contains(&name.as_str()) {
                continue;
            }
            // `append`: repeated headers (Set-Cookie...) are all kept.
            headers.append(name, value);
        }
        if no_body {
            headers.remove(hyper::header::CONTENT_LENGTH);
        }
        if push {
            // nginx in front must pass each chunk on at once.
            headers.remove(hyper::header::CONTENT_LENGTH);
            headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
            if event_stream && !headers.contains_key(hyper::header::CACHE_CONTROL) {
                headers.insert(
                    hyper::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache"),
                );
            }
        }
        response::set_request_id(headers, request_id);
        Ok(response)
    }
}

impl Handler {
    /// The 101 for a WebSocket the app accepted: the app's headers (its
    /// `Sec-WebSocket-Protocol`...), the handshake's own, and the session
    /// to run once the 101 is written (see [`websocket`]).
    fn upgrade(
        &self,
        settings: &Settings,
        reply: dispatch::Reply,
        key: &HeaderValue,
        request_id: u64,
        client: Option<std::net::IpAddr>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        // Past the stream caps: 503 instead of the 101, and the reply
        // dropped, which cancels the app's channel.
        let caps = streams::StreamCaps::new(&settings.config.limits);
        let guard = self
            .streams
            .try_open(streams::StreamKind::WebSocket, client, caps)?;
        let (sender, receiver) = reply.body.into_channel().ok_or_else(|| {
            GatewayError::Dispatch(dispatch::DispatchError::Protocol(
                "the app ended the stream with its 101",
            ))
        })?;
        let limits = websocket::Limits::new(&settings.config.limits);
        let session = websocket::Session::new(sender, receiver, guard, limits);
        let mut response = Response::new(GatewayBody::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        for (name, value) in reply.meta.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&name),
                HeaderValue::from_maybe_shared(value),
            ) else {
                tracing::debug!("dropping an invalid response header from the app");
                continue;
            };
            if HOP_BY_HOP.contains(&name.as_str()) || websocket::is_own_header(&name) {
                continue;
            }
            headers.append(name, value);
        }
        websocket::accept(headers, key);
        response::set_request_id(headers, request_id);
        response
            .extensions_mut()
            .insert(websocket::Pending::new(session));
        Ok(response)
    }
}

/// What [`Handler::answer`] learnt of who served a request, for metrics,
/// the access log and the request's span.
#[derive(Default)]
struct Served {
    member: Option<Arc<str>>,
    /// Kept for the JSON access log and a sampled request's span only.
    event: Option<String>,
    /// Attempts made (0: none got as far as a connection).
    attempts: u32,
    /// The backend connection of the last attempt.
    upstream: Option<std::net::SocketAddr>,
    /// The request body's bytes, when read whole (not for a streamed
    /// upload).
    bytes_in: Option<u64>,
}

/// `response` with its JSON access-log line: written now for a push
/// stream (its body is never wrapped, so the HTTP/1.1 connection can still
/// take it over; `bytes_out` unknown), else when its body is dropped (sent
/// or abandoned), with the bytes it passed on.
fn log_json(
    response: Response<GatewayBody>,
    record: access_log::Record,
    log: &Arc<access_log::AccessLog>,
    started: Instant,
) -> Response<GatewayBody> {
    if matches!(response.body(), GatewayBody::Push(_)) {
        log.send(record);
        return response;
    }
    response.map(|body| {
        GatewayBody::Logged(Box::new(access_log::Logged::new(
            body,
            record,
            Arc::clone(log),
            started,
        )))
    })
}

/// Tells nginx not to buffer a push stream.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Whether the app's response headers say `Content-Type:
/// text/event-stream` (parameters allowed).
fn is_event_stream(headers: &[crate::proto::http::HeaderPair]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case(b"content-type")
            && value.split(|&b| b == b';').next().is_some_and(|media| {
                media
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"text/event-stream")
            })
    })
}

/// A request body collected whole, up to `limit` bytes (413 past it), from
/// a client that never pauses for `timeout` or longer mid-body (408).
async fn collect_body<B>(body: B, limit: usize, timeout: Duration) -> Result<Bytes, GatewayError>
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

/// A request after [`Handler::begin`].
struct Begun<B> {
    started: Instant,
    /// The trace id, which is also the response's `X-Request-Id`.
    request_id: u64,
    logged: Option<AccessLine>,
    /// The routed service, for the metrics label.
    service: Option<String>,
    step: Result<Admitted<B>, GatewayError>,
    /// A JSON-RPC request, whole (its `step` is never read).
    jsonrpc: Option<Box<Request<B>>>,
    /// Its span's start, when OpenTelemetry export is on.
    otlp: Option<crate::otlp::Pending>,
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
    client: Option<std::net::IpAddr>,
    request: Packing<B>,
}

/// A request's `enqueue`, or what it is made of once the body is in.
enum Packing<B> {
    /// Packed already: the body was complete (the head is gone).
    Packed(dispatch::PackedRequest),
    /// The body is still coming; the head waits for it (boxed: the
    /// uncommon case, kept out of every request's future).
    Collect(Box<Collecting<B>>),
}

/// A request head waiting for its body.
struct Collecting<B> {
    parts: hyper::http::request::Parts,
    body: B,
    decision: TraceDecision,
    /// The service takes streamed uploads (`stream_request_body`).
    stream: bool,
}

/// Accepts HTTP connections on `listener` (TCP or a unix socket) until
/// `shutdown`, each while `connections` has room (see
/// [`ConnectionLimit::acquire`]) and its client is under
/// `limits.max_connections_per_client` (past it, the connection is closed
/// unanswered). With `proxy_protocol`, each connection
/// must start with a PROXY header.
pub async fn serve<L>(
    listener: L,
    proxy_protocol: bool,
    handler: Arc<Handler>,
    connections: Arc<ConnectionLimit>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    L: crate::listener::Listener,
    L::Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let Some((stream, peer)) =
            crate::listener::accept_with_peer(&listener, &shutdown, "http").await
        else {
            return;
        };
        // Room for it, made by closing an idle connection if need be
        // (only once a client is there); meanwhile accepting pauses.
        let Some(permit) = connections.acquire(&shutdown, "http").await else {
            return;
        };
        let handler = Arc::clone(&handler);
        let connections = Arc::clone(&connections);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let config = handler.config();
            let limit = config.limits.header_timeout;
            match crate::proxy_protocol::accept(stream, peer, proxy_protocol, limit).await {
                Ok((stream, client)) => {
                    let ip = L::PEERS_HAVE_ADDRESSES.then_some(client.ip());
                    // Past its client's cap: dropped, so closed unanswered.
                    let Ok(_client) = connections.admit(ip, &config) else {
                        return;
                    };
                    drop(config);
                    connection::serve_prefixed(
                        stream,
                        Some(client),
                        handler,
                        &connections,
                        shutdown,
                        None,
                    )
                    .await;
                }
                Err(e) => refuse_proxy_header(&e),
            }
            drop(permit);
        });
    }
}

/// A connection whose PROXY header was missing, malformed or late is
/// closed: counted and logged.
pub(crate) fn refuse_proxy_header(error: &crate::proxy_protocol::ProxyHeaderError) {
    crate::metrics::limit_hit("proxy_header");
    tracing::debug!(%error, "connection closed: PROXY protocol header refused");
}

/// A request's fields for its access-log line.
struct AccessLine {
    client: String,
    method: Method,
    uri: String,
    /// When the head came (JSON lines only).
    time: Option<std::time::SystemTime>,
    span_id: u64,
    /// The high half of an incoming W3C trace id (0: none).
    trace_hi: u64,
}

/// The metrics label of JSON-RPC requests (their calls may name many
/// services).
const JSONRPC_LABEL: &str = "jsonrpc";

/// The header that marks a JSON-RPC request (any value).
const X_COCAINE_JSON_RPC: HeaderName = HeaderName::from_static("x-cocaine-json-rpc");

/// Whether a request asks for JSON-RPC: `X-Cocaine-JSON-RPC` (any value)
/// or `Content-Type: application/json-rpc`.
fn is_jsonrpc(headers: &hyper::HeaderMap) -> bool {
    headers.contains_key(X_COCAINE_JSON_RPC)
        || headers
            .get(hyper::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json-rpc"))
}

/// The header that carries the client address to the app.
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The client-subject header when no `[tls]` section names one (the
/// default of `tls.client_subject_header`).
const X_CLIENT_SUBJECT: HeaderName = HeaderName::from_static("x-client-subject");

/// The client address of a request (see [`client_addr`]), in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

/// The address of the peer a request came from, set by an embedder in the
/// request's extensions before it calls
/// [`GatewayService`](crate::gateway::GatewayService) (from its accepted
/// connection: `TcpListener::accept`'s address, axum's `ConnectInfo`):
/// the embedded service applies the listeners' `X-Real-IP` and
/// trusted-proxy rules to it (see [`Handler::handle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);
