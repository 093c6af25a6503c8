//! HTTP: owns the hyper glue. Listeners and connections (HTTP/1.1 and
//! HTTP/2, upgrades, the PROXY header, connection limits), the client
//! header rules, the one error → status table ([`response`]), the CORS and
//! compression layers, and one observer that turns what was served into
//! metrics, a span and an access-log line. Serving the request itself is
//! the dispatcher's exchange ([`crate::dispatch::exchange`]).

pub mod accept;
mod access_log;
mod body;
mod client_addr;
mod connection;
mod connection_limit;
mod layers;
pub(crate) mod log_limit;
mod observer;
mod push_h1;
pub mod response;
mod send_watch;
mod websocket;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use hyper::body::Body;
use hyper::header::HeaderName;
use hyper::{Request, Response};
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
pub use crate::dispatch::ClientAddr;
use crate::dispatch::{Answer, Dispatcher, Exchange, Policy, Served, TraceDecision};

/// Serves requests: the exchange's two steps, and the response and
/// observation of what was served.
#[derive(Debug)]
pub struct Handler {
    /// What requests read from the config; a reload swaps it whole.
    settings: std::sync::RwLock<Arc<Settings>>,
    dispatcher: Dispatcher,
    observer: observer::Observer,
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
    /// Settings for `config`, keeping `previous`' counters where they still
    /// apply (see [`Policy::new`]).
    fn new(config: Arc<Config>, previous: Option<&Self>, observer: &observer::Observer) -> Self {
        let policy = Policy::new(Arc::clone(&config), previous.map(|p| &p.policy));
        Self {
            layers: layers::Layers::new(&config),
            json_log: observer.json_log_for(&config),
            config,
            policy,
        }
    }
}

/// A request after [`Handler::begin`]: its exchange, and what the
/// observer took from its head.
struct Begun<B> {
    exchange: Exchange<B>,
    watch: observer::Watch,
    /// What the exchange keeps or adds for the observer.
    watching: crate::dispatch::Watching,
}

impl Handler {
    /// A handler sending through `dispatcher`, with `config`'s request,
    /// limit and retry settings.
    pub fn new(config: Arc<Config>, dispatcher: Dispatcher) -> Self {
        let observer = observer::Observer::new(&config);
        Self {
            subject_header: config
                .tls
                .as_ref()
                .and_then(|t| HeaderName::from_bytes(t.client_subject_header.as_bytes()).ok())
                .unwrap_or(X_CLIENT_SUBJECT),
            settings: std::sync::RwLock::new(Arc::new(Settings::new(config, None, &observer))),
            dispatcher,
            observer,
            cut: CancellationToken::new(),
            open_connections: AtomicUsize::new(0),
            busy: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The long-lived streams open now (SSE, push, WebSocket).
    pub fn streams(&self) -> &crate::dispatch::streams::Streams {
        self.dispatcher.streams()
    }

    /// JSON access-log lines dropped so far because the writer fell behind
    /// (also counted in `rpcgate_access_log_dropped_total`).
    pub fn access_log_dropped(&self) -> u64 {
        self.observer.access_log_dropped()
    }

    /// The OpenTelemetry tracer, when `[tracing] otlp_endpoint` is set.
    pub fn tracer(&self) -> Option<&crate::otlp::Tracer> {
        self.observer.tracer()
    }

    /// Waits (at most `limit`) until the JSON access log's queued lines are
    /// written and flushed; logs a warning if they were not. Shutdown's last
    /// step, in the gateway and the library service alike.
    pub(crate) async fn flush_access_log(&self, limit: std::time::Duration) {
        self.observer.flush_access_log(limit).await;
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
        *settings = Arc::new(Settings::new(config, Some(&settings), &self.observer));
    }

    /// Answers one request of the embedded service
    /// ([`crate::gateway::GatewayService`]) the way the listeners do:
    /// through the same exchange, the CORS and compression layers, and the
    /// observer. Never fails: errors become responses.
    ///
    /// The client-header rules are the listeners' (the same function): a
    /// client-sent `X-Client-Subject` (or `tls.client_subject_header`) is
    /// removed, and `X-Real-IP` is set from the peer, forwarding headers
    /// believed from `request.trusted_proxies` only. The peer is the
    /// request's [`PeerAddr`] extension, which the embedder sets from its
    /// accepted connection; without one, `X-Real-IP` is removed (nothing
    /// vouches for it) and the client is unknown (not counted per client).
    pub async fn handle<B>(self: &Arc<Self>, mut request: Request<B>) -> Response<GatewayBody>
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
        if let Some(layers) = &settings.layers {
            let layered = layers.call(Arc::clone(self), Arc::clone(&settings), request);
            return layered.response().await.into_gateway_body();
        }
        let begun = self.begin(&settings, request);
        self.finish(&settings, begun).await
    }

    /// The synchronous first step of a request: what the observer needs
    /// from its head, then the exchange's first step (see
    /// [`Dispatcher::begin`]: the head is gone before hyper reads ahead).
    fn begin<B>(&self, settings: &Settings, request: Request<B>) -> Begun<B>
    where
        B: Body<Data = Bytes>,
    {
        let started = Instant::now();
        let config = &settings.config;
        let (parts, body) = request.into_parts();
        let decision =
            TraceDecision::from_headers(&parts.headers, config.request.tracing_probability);
        let json = settings.json_log.is_some();
        let watch = self
            .observer
            .begin(config, json, &parts, decision.as_ref().ok(), started);
        let watching = self.observer.watching(json, &watch);
        let exchange =
            self.dispatcher
                .begin(&settings.policy, parts, body, decision, started, watching);
        let watch = watch.for_exchange(exchange.is_jsonrpc());
        Begun {
            exchange,
            watch,
            watching,
        }
    }

    /// The rest of a request after [`Self::begin`]: the exchange served,
    /// its response, and the observer's record of it.
    async fn finish<B>(&self, settings: &Settings, begun: Begun<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _in_flight = self.observer.metrics.in_flight();
        let Begun {
            exchange,
            watch,
            watching,
        } = begun;
        let request_id = exchange.request_id();
        let Served {
            service,
            member,
            event,
            attempts,
            upstream,
            bytes_in,
            answer,
        } = self
            .dispatcher
            .serve(&settings.policy, exchange, watching)
            .await;
        let mut calls = Vec::new();
        let mut error = None;
        let response = match answer {
            Ok(Answer::Reply(reply)) => response::reply(reply, request_id),
            Ok(Answer::Upgrade(upgrade)) => response::upgrade(upgrade, request_id),
            Ok(Answer::JsonRpc { answer, calls: c }) => {
                calls = c;
                response::jsonrpc(answer, request_id)
            }
            Err(e) => {
                error = Some(observer::count_error(&e));
                e.into_response(request_id)
            }
        };
        let seen = observer::Seen {
            request_id,
            service,
            member,
            event,
            attempts,
            upstream,
            bytes_in,
            error,
            calls,
        };
        self.observer
            .end(settings.json_log.as_ref(), watch, seen, response)
    }
}

/// Accepts plain HTTP connections on `listener` (TCP or a unix socket)
/// until `shutdown`: the one accept path (see [`accept::serve_with`]) with
/// no handshake.
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
    let plain = Arc::new(accept::Plain);
    accept::serve_with(
        listener,
        proxy_protocol,
        plain,
        handler,
        connections,
        shutdown,
        tracker,
    )
    .await;
}

/// The header that carries the client address to the app.
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The client-subject header when no `[tls]` section names one (the
/// default of `tls.client_subject_header`).
const X_CLIENT_SUBJECT: HeaderName = HeaderName::from_static("x-client-subject");

/// The address of the peer a request came from, set by an embedder in the
/// request's extensions before it calls
/// [`GatewayService`](crate::gateway::GatewayService) (from its accepted
/// connection: `TcpListener::accept`'s address, axum's `ConnectInfo`):
/// the embedded service applies the listeners' `X-Real-IP` and
/// trusted-proxy rules to it (see [`Handler::handle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);
