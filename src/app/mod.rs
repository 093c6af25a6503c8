//! The app SDK: owns writing a Cocaine app in Rust. An [`AppBuilder`]
//! registers handlers per event, then serves the app protocol of
//! PROTOCOL.md §4.1 (`enqueue` streaming both ways, `info`, `control`) on a
//! TCP listener and publishes itself to locators under its name.
//!
//! Behaviour a gateway can rely on, as with a real runtime:
//! - an unknown event gets `error [[42, 1], "event not found"]`;
//! - past the concurrency limit a request gets `error [[0x52FF, 1],
//!   "queue is full"]` at once (safe to retry elsewhere);
//! - while stopping, a request gets `error [[0x0C, 32], "the application
//!   has been stopped"]` (also safe to retry);
//! - a handler that fails or panics answers its own request with an error
//!   and the app keeps serving.
//!
//! ```no_run
//! use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let app = AppBuilder::new("hello")
//!     .on_http("http", |_req: HttpRequest, res: HttpResponse| async move {
//!         res.respond(200, vec![], "Hello, World!").await.ok();
//!         Ok(())
//!     })
//!     .bind("127.0.0.1:0".parse().unwrap(), vec!["127.0.0.1:10053".parse().unwrap()])
//!     .await?;
//! app.published().await;
//! # Ok(()) }
//! ```

pub mod demo;
mod handler;
mod http;
mod websocket;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::handler::{Handler, Isolated, report_failure};
pub use self::handler::{HandlerResult, Request, RequestError, Response};
pub use self::http::{HttpRequest, HttpResponse};
pub use self::websocket::{WebSocket, WebSocketMessage, WebSocketRequest, WebSocketSender};
use crate::backoff::Backoff;
use crate::locator::client::publish;
use crate::proto::app::{Enqueue, InfoReply, method};
use crate::proto::graph::{GOAWAY, PING, REVOKE};
use crate::proto::locator::Endpoint;
use crate::proto::msgpack::Value;
use crate::proto::{Args, ErrorCode, Protocol, RemoteError};
use crate::session::{self, Call, Reply, Service};

/// The default number of requests an app runs at once.
pub const DEFAULT_CONCURRENCY: usize = 1024;

/// How long one publish attempt may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);

/// Builds an app: its name, handlers and limits.
pub struct AppBuilder {
    name: String,
    handlers: HashMap<Bytes, Handler>,
    concurrency: usize,
    advertise: Option<IpAddr>,
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("name", &self.name)
            .field("events", &self.handlers.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl AppBuilder {
    /// An app published under `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            handlers: HashMap::new(),
            concurrency: DEFAULT_CONCURRENCY,
            advertise: None,
        }
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// At most `limit` requests run at once; more get "queue is full".
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit;
        self
    }

    /// The address published to locators, when the listener's own (an
    /// unspecified address becomes 127.0.0.1) is not what clients should use.
    pub fn advertise(mut self, ip: IpAddr) -> Self {
        self.advertise = Some(ip);
        self
    }

    /// Registers a raw handler for `event`.
    pub fn on<F, Fut>(mut self, event: impl Into<Bytes>, handler: F) -> Self
    where
        F: Fn(Request, Response) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler: Handler =
            Arc::new(move |request, response| Box::pin(handler(request, response)));
        self.handlers.insert(event.into(), handler);
        self
    }

    /// Registers an HTTP handler for `event` (§5): it gets the decoded
    /// request and writes meta, body chunks and `close`.
    pub fn on_http<F, Fut>(self, event: impl Into<Bytes>, handler: F) -> Self
    where
        F: Fn(HttpRequest, HttpResponse) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.on(event, move |request, response| {
            let handler = Arc::clone(&handler);
            async move {
                let request = HttpRequest::read(request)
                    .await
                    .map_err(|e| http::bad_request(&e))?;
                handler(request, HttpResponse::new(response)).await
            }
        })
    }

    /// Registers a WebSocket handler for `event`: it gets each request to
    /// the event as a [`WebSocketRequest`], which it accepts (101) or
    /// answers with any HTTP response (a refusal, or a plain request's
    /// answer). See [`WebSocket`] for the messages after.
    pub fn on_websocket<F, Fut>(self, event: impl Into<Bytes>, handler: F) -> Self
    where
        F: Fn(WebSocketRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.on_http(event, move |request, response| {
            let handler = Arc::clone(&handler);
            async move { handler(WebSocketRequest::new(request, response)).await }
        })
    }

    /// Binds `addr` and serves; publishes to `locators` (if any).
    pub async fn bind(
        self,
        addr: SocketAddr,
        locators: Vec<SocketAddr>,
    ) -> std::io::Result<RunningApp> {
        let listener = TcpListener::bind(addr).await?;
        Ok(self.serve(listener, locators))
    }

    /// Serves on a bound listener; publishes to `locators` (if any).
    pub fn serve(self, listener: TcpListener, locators: Vec<SocketAddr>) -> RunningApp {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let ip = match (self.advertise, local.ip()) {
            (Some(ip), _) => ip,
            (None, ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (None, ip) => ip,
        };
        let service = Arc::new(AppService {
            name: self.name.clone(),
            handlers: self.handlers,
            limit: Arc::new(Semaphore::new(self.concurrency)),
            concurrency: self.concurrency,
            stopping: AtomicBool::new(false),
            requests: TaskTracker::new(),
        });
        let accept_stop = CancellationToken::new();
        let sessions_stop = CancellationToken::new();
        let sessions = TaskTracker::new();
        sessions.spawn(session::accept_loop(
            listener,
            Arc::clone(&service),
            "app",
            accept_stop.clone(),
            sessions_stop.clone(),
            sessions.clone(),
        ));
        let (published_tx, published) = watch::channel(false);
        let publish_stop = CancellationToken::new();
        let publisher = TaskTracker::new();
        if !locators.is_empty() {
            let endpoint = Endpoint::from(SocketAddr::new(ip, local.port()));
            publisher.spawn(keep_published(
                locators,
                self.name.clone(),
                endpoint,
                published_tx,
                publish_stop.clone(),
                publisher.clone(),
            ));
        }
        tracing::info!(app = %self.name, addr = %local, "app listening");
        RunningApp {
            addr: local,
            name: self.name,
            service,
            sessions,
            accept_stop,
            sessions_stop,
            publisher,
            publish_stop,
            published,
        }
    }
}

/// A serving app.
#[derive(Debug)]
pub struct RunningApp {
    /// Where the app listens.
    pub addr: SocketAddr,
    name: String,
    service: Arc<AppService>,
    sessions: TaskTracker,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    publisher: TaskTracker,
    publish_stop: CancellationToken,
    published: watch::Receiver<bool>,
}

impl RunningApp {
    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until the app is published to a locator (returns at once if it
    /// has no locators and so never will be: check [`RunningApp::is_published`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn published(&self) {
        if self.publisher.is_empty() {
            return;
        }
        let mut published = self.published.clone();
        let _ = published.wait_for(|p| *p).await;
    }

    /// Whether the app is currently published.
    pub fn is_published(&self) -> bool {
        *self.published.borrow()
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.service.in_flight()
    }

    /// Stops gracefully: unpublish, refuse new requests (`app stopped`),
    /// finish the open ones, then close every connection.
    pub async fn stop(self) {
        // Refuse first, so nothing is admitted between unpublishing and
        // stopping: a client that resolved us late gets a retry-safe error.
        self.service.stopping.store(true, Ordering::Release);
        self.publish_stop.cancel();
        self.publisher.close();
        self.publisher.wait().await;
        self.accept_stop.cancel();
        self.service.requests.close();
        self.service.requests.wait().await;
        self.sessions_stop.cancel();
        self.sessions.close();
        self.sessions.wait().await;
        tracing::info!(app = %self.name, "app stopped");
    }
}

/// The app protocol over a handler table.
struct AppService {
    name: String,
    handlers: HashMap<Bytes, Handler>,
    limit: Arc<Semaphore>,
    concurrency: usize,
    stopping: AtomicBool,
    requests: TaskTracker,
}

impl std::fmt::Debug for AppService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppService")
            .field("name", &self.name)
            .finish()
    }
}

impl AppService {
    fn in_flight(&self) -> usize {
        self.concurrency - self.limit.available_permits()
    }

    /// Runs a request's handler: first right here, in the session's task,
    /// then (if it has to wait for anything) as a task of its own.
    ///
    /// A handler that can answer at once (its request is complete and the
    /// reply queue has room, the common case for small requests) costs no
    /// task spawn, no scheduling and no cross-task wake-up, which the load
    /// profile showed as a large share of an app's work per request; and
    /// its future, boxed already, is polled where it is, not moved into a
    /// second box. The first poll uses a no-op waker: if the handler is not
    /// done, the spawned task polls it again at once, registering its real
    /// waker, as every future must allow. Like hyper's own services, a
    /// handler's code up to its first wait runs on the connection's task.
    fn start(
        &self,
        handler: &Handler,
        request: Request,
        reply: Reply,
        permit: OwnedSemaphorePermit,
    ) {
        // Tracked from its first poll: `stop` must wait for a handler that
        // is running here (it may have told someone it started) and is
        // about to become a task.
        let _running = self.requests.token();
        let response = Response::new(reply);
        let mut run = Isolated::new(handler, request, response.clone());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let finished = match std::pin::Pin::new(&mut run).poll(&mut cx) {
            std::task::Poll::Ready(Ok(Ok(()))) => return,
            std::task::Poll::Ready(failed) => Some(failed),
            std::task::Poll::Pending => None,
        };
        // Still running, or failed (reporting it waits for the reply).
        self.requests.spawn(async move {
            let _permit = permit;
            let outcome = match finished {
                Some(outcome) => outcome,
                None => run.await,
            };
            report_failure(outcome, response).await;
        });
    }

    fn reply_error(&self, reply: Reply, error: RemoteError) {
        self.requests.spawn(async move {
            let _ = reply.error(error).await;
        });
    }

    fn info(&self) -> Value {
        let text = |s: &str| Value::Bytes(Bytes::copy_from_slice(s.as_bytes()));
        let mut events: Vec<_> = self
            .handlers
            .keys()
            .map(|e| Value::Bytes(e.clone()))
            .collect();
        events.sort_by_key(|e| format!("{e:?}"));
        Value::Map(vec![
            (text("name"), text(&self.name)),
            (text("events"), Value::Array(events)),
            (text("load"), Value::Int(self.in_flight() as i128)),
            (text("limit"), Value::Int(self.concurrency as i128)),
            (
                text("state"),
                text(if self.stopping.load(Ordering::Acquire) {
                    "stopping"
                } else {
                    "running"
                }),
            ),
        ])
    }
}

impl Service for AppService {
    fn protocols(&self, method: u64) -> Option<(Protocol, Protocol)> {
        Some(match method {
            method::ENQUEUE => (Protocol::Streaming, Protocol::Streaming),
            method::INFO => (Protocol::Terminal, Protocol::Primitive),
            method::CONTROL => (Protocol::Streaming, Protocol::Primitive),
            GOAWAY..=REVOKE => (Protocol::Terminal, Protocol::Primitive),
            _ => return None,
        })
    }

    fn call(&self, call: Call) {
        let Call {
            method,
            args,
            headers,
            mut incoming,
            reply,
            ..
        } = call;
        match method {
            method::ENQUEUE => {
                let event = match Enqueue::decode_args(&args) {
                    Ok(enqueue) => enqueue.event,
                    Err(e) => {
                        return self.reply_error(
                            reply,
                            RemoteError::new(ErrorCode::INVALID_ARGUMENT, e.to_string()),
                        );
                    }
                };
                if self.stopping.load(Ordering::Acquire) {
                    return self.reply_error(
                        reply,
                        RemoteError::new(
                            ErrorCode::APP_STOPPED,
                            "the application has been stopped",
                        ),
                    );
                }
                let Some(handler) = self.handlers.get(&event).cloned() else {
                    return self.reply_error(
                        reply,
                        RemoteError::new(ErrorCode::EVENT_NOT_FOUND, "event not found"),
                    );
                };
                let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
                    return self.reply_error(
                        reply,
                        RemoteError::new(ErrorCode::QUEUE_IS_FULL, "queue is full"),
                    );
                };
                self.start(
                    &handler,
                    Request::new(event, headers, incoming),
                    reply,
                    permit,
                );
            }
            method::INFO => {
                let info = InfoReply { info: self.info() };
                self.requests.spawn(async move {
                    let _ = reply.value(info.to_args()).await;
                });
            }
            method::CONTROL => {
                // rpcgate apps have no worker pool to resize: accept the
                // stream and acknowledge it when the client closes.
                self.requests.spawn(async move {
                    while let Some(Ok(_)) = incoming.recv().await {}
                    let _ = reply.value(Args::Empty).await;
                });
            }
            PING => {
                self.requests.spawn(async move {
                    let _ = reply.value(Args::Empty).await;
                });
            }
            _ => self.reply_error(
                reply,
                RemoteError::new(ErrorCode::SLOT_NOT_FOUND, "control message not supported"),
            ),
        }
    }
}

/// Publishes the app and keeps it published: after the locator connection
/// is lost, publishes again with backoff, until stopped (then unpublishes).
async fn keep_published(
    locators: Vec<SocketAddr>,
    name: String,
    endpoint: Endpoint,
    published: watch::Sender<bool>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            attempt = publish(&locators, &name, vec![endpoint.clone()], PUBLISH_TIMEOUT, &tracker) => attempt,
            () = stop.cancelled() => return,
        };
        match attempt {
            Ok(publication) => {
                tracing::info!(app = %name, "published");
                published.send_replace(true);
                failures = 0;
                tokio::select! {
                    () = publication.lost() => {
                        published.send_replace(false);
                        tracing::warn!(app = %name, "locator connection lost; publishing again");
                    }
                    () = stop.cancelled() => {
                        publication.unpublish().await;
                        published.send_replace(false);
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(app = %name, error = %e, "publish failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(PUBLISH_BACKOFF.pause(failures)) => {}
            () = stop.cancelled() => return,
        }
        failures = failures.saturating_add(1);
    }
}

/// The longest pause between publish attempts: an app is back in the
/// locator at most this long after the locator is.
pub const PUBLISH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The pause after `failures` failed publishes in a row (0 after a lost
/// connection): 100 ms, doubling, at most [`PUBLISH_BACKOFF_MAX`].
const PUBLISH_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), PUBLISH_BACKOFF_MAX);
