//! The remote locator client: owns talking to Cocaine locators (endpoints
//! tried in order, connect and resolve timeouts), the resolve cache with
//! single-flight, the `routing` subscription kept alive with exponential
//! backoff, and publishing a service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod resolve;

pub use self::resolve::{ResolveError, resolve_split};
use super::continuum::Continuum;
use super::{BoxFuture, Locator, LocatorError, Resolved, Rings, socket_addrs};
use crate::backoff::Backoff;
use crate::mux::{self, Channel, ChannelSender, Invocation, MuxConfig, MuxHandle};
use crate::proto::locator::{
    Endpoint, PublishRequest, ResolveReply, ResolveRequest, RoutingRequest, RoutingUpdate, method,
};
use crate::proto::protocol::streaming;
use crate::proto::{Args, Graph, Message, PrimitiveEvent, Protocol, RemoteError};

/// The pause before replacing a `routing` stream that had worked: short,
/// the next locator in the list is likely up.
const RESUBSCRIBE_AFTER_LOSS: Duration = Duration::from_millis(100);

/// The longest pause between `routing` resubscriptions (2^6 s, as the old
/// proxy's retry policy).
pub const MAX_BACKOFF: Duration = Duration::from_secs(64);

/// Settings of a [`RemoteLocator`].
#[derive(Debug, Clone)]
pub struct RemoteLocatorConfig {
    /// Locator endpoints, tried in order.
    pub endpoints: Vec<SocketAddr>,
    /// The limit on one TCP connect.
    pub connect_timeout: Duration,
    /// The limit on one resolve, connect included.
    pub resolve_timeout: Duration,
    /// How long a resolve result is reused.
    pub cache_ttl: Duration,
    /// Whether to follow the `routing` stream.
    pub follow_routing: bool,
}

impl Default for RemoteLocatorConfig {
    fn default() -> Self {
        Self {
            endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 10053))],
            connect_timeout: Duration::from_secs(1),
            resolve_timeout: Duration::from_secs(3),
            cache_ttl: Duration::from_secs(5),
            follow_routing: true,
        }
    }
}

type Flight = Arc<OnceCell<Result<Resolved, LocatorError>>>;

#[derive(Debug)]
struct Inner {
    config: RemoteLocatorConfig,
    connection: tokio::sync::Mutex<Option<MuxHandle>>,
    cache: Mutex<HashMap<String, (Resolved, Instant)>>,
    flights: Mutex<HashMap<String, Flight>>,
    rings: watch::Sender<Arc<Rings>>,
    /// Whether a `routing` dump has arrived: only then is it known which
    /// names are groups, and so which results may be cached.
    rings_known: watch::Sender<bool>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// A client of one or more Cocaine locators.
///
/// Resolves go over one shared, multiplexed connection to the first
/// locator that answers. Results are cached for the TTL, and concurrent
/// resolves of one name share a single request. Group names are mapped to a
/// member client-side from the `routing` rings; while no dump has arrived,
/// group names go to the locator and nothing is cached (the reply does not
/// say whether a name was a group, and caching a group's pick would pin
/// every new connection to one member).
#[derive(Debug, Clone)]
pub struct RemoteLocator {
    inner: Arc<Inner>,
}

impl RemoteLocator {
    /// Starts a client; the `routing` subscription (if enabled) runs in
    /// the background until [`RemoteLocator::shutdown`].
    pub fn new(config: RemoteLocatorConfig) -> Self {
        let follow = config.follow_routing;
        let inner = Arc::new(Inner {
            config,
            connection: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            rings: watch::Sender::new(Arc::new(Rings::new())),
            rings_known: watch::Sender::new(false),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        if follow {
            let task = follow_routing(Arc::clone(&inner));
            inner.tracker.spawn(task);
        }
        Self { inner }
    }

    /// Stops the background subscription and closes connections.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        if let Some(handle) = self.inner.connection.lock().await.take() {
            handle.drain().await;
        }
        self.inner.tracker.wait().await;
    }

    /// Waits until the first `routing` dump has arrived.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn routing_ready(&self) {
        let mut known = self.inner.rings_known.subscribe();
        let _ = known.wait_for(|known| *known).await;
    }

    /// A fresh resolve: no cached answer and no shared flight; the answer
    /// is cached for others.
    async fn resolve_name_fresh(&self, name: &str) -> Result<Resolved, LocatorError> {
        let target = self.target(name)?;
        let result = self.resolve_remote(&target).await;
        if let Ok(resolved) = &result
            && *self.inner.rings_known.borrow()
        {
            self.inner
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(target, (resolved.clone(), Instant::now()));
        }
        result
    }

    /// The name to resolve: a routing group's member picked by weight, or
    /// the name itself.
    fn target(&self, name: &str) -> Result<String, LocatorError> {
        let rings = self.inner.rings.borrow();
        match rings.get(name) {
            Some(ring) => Ok(ring
                .lookup(rand::rng().random())
                .ok_or_else(|| LocatorError::NotFound(name.to_owned()))?
                .to_owned()),
            None => Ok(name.to_owned()),
        }
    }

    async fn resolve_name(&self, name: &str) -> Result<Resolved, LocatorError> {
        let target = self.target(name)?;
        let cacheable = *self.inner.rings_known.borrow();
        if cacheable {
            let cache = self
                .inner
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((resolved, at)) = cache.get(&target) {
                if at.elapsed() < self.inner.config.cache_ttl {
                    return Ok(resolved.clone());
                }
            }
        }
        // Single flight: concurrent resolves of one name share one request.
        let flight = Arc::clone(
            self.inner
                .flights
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(target.clone())
                .or_default(),
        );
        flight
            .get_or_init(|| async {
                let result = self.resolve_remote(&target).await;
                self.inner
                    .flights
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&target);
                if let (Ok(resolved), true) = (&result, cacheable) {
                    self.inner
                        .cache
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(target.clone(), (resolved.clone(), Instant::now()));
                }
                result
            })
            .await
            .clone()
    }

    async fn resolve_remote(&self, name: &str) -> Result<Resolved, LocatorError> {
        let limit = self.inner.config.resolve_timeout;
        let result = match timeout(limit, self.resolve_once(name)).await {
            Ok(result) => result,
            Err(_) => Err(LocatorError::Unavailable(format!(
                "resolve of `{name}` took longer than {limit:?}"
            ))),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.is_not_found() => "not_found",
            Err(_) => "error",
        };
        metrics::counter!(crate::metrics::RESOLVES, crate::metrics::RESULT => outcome).increment(1);
        result
    }

    async fn resolve_once(&self, name: &str) -> Result<Resolved, LocatorError> {
        let request = ResolveRequest {
            name: name.to_owned(),
            seed: None,
        };
        let message = Message::new(method::RESOLVE, request.to_args());
        // A connection that died since last use is replaced once: resolve
        // is idempotent, so a retry is always safe.
        let mut last_error = None;
        for _ in 0..2 {
            let handle = self.connection().await?;
            let invocation =
                Invocation::new(message.clone(), Protocol::Terminal, Protocol::Primitive);
            let mut channel = match handle.open(invocation).await {
                Ok(channel) => channel,
                Err(e) => {
                    last_error = Some(e.to_string());
                    self.forget(&handle).await;
                    continue;
                }
            };
            let frame = match channel.receiver.recv().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    last_error = Some(e.to_string());
                    self.forget(&handle).await;
                    continue;
                }
                None => {
                    return Err(LocatorError::Protocol(
                        "resolve channel ended without a reply".into(),
                    ));
                }
            };
            return match frame.primitive_event() {
                Ok(PrimitiveEvent::Value(args)) => {
                    let reply = ResolveReply::decode_args(&args)
                        .map_err(|e| LocatorError::Protocol(e.to_string()))?;
                    to_resolved(name, reply)
                }
                Ok(PrimitiveEvent::Error(error)) => Err(LocatorError::from_remote(name, error)),
                Err(e) => Err(LocatorError::Protocol(e.to_string())),
            };
        }
        Err(LocatorError::Unavailable(
            last_error.unwrap_or_else(|| "connection lost".into()),
        ))
    }

    /// The shared connection to a locator, connecting if needed.
    async fn connection(&self) -> Result<MuxHandle, LocatorError> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(handle) = slot.as_ref().filter(|h| !h.is_closed()) {
            return Ok(handle.clone());
        }
        let handle = connect_any(&self.inner.config, &self.inner.tracker).await?;
        *slot = Some(handle.clone());
        Ok(handle)
    }

    async fn forget(&self, handle: &MuxHandle) {
        let mut slot = self.inner.connection.lock().await;
        if slot
            .as_ref()
            .is_some_and(|h| h.is_closed() || h.is_draining())
            || handle.is_closed()
        {
            *slot = None;
        }
    }
}

impl Locator for RemoteLocator {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Resolved, LocatorError>> {
        Box::pin(self.resolve_name(name))
    }

    fn routing(&self) -> watch::Receiver<Arc<Rings>> {
        self.inner.rings.subscribe()
    }

    fn resolve_fresh<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Resolved, LocatorError>> {
        Box::pin(self.resolve_name_fresh(name))
    }

    fn forget_endpoint(&self, name: &str, endpoint: SocketAddr) {
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.retain(|cached, (resolved, _)| {
            let stale = (cached == name || resolved.service == name)
                && resolved.endpoints.contains(&endpoint);
            if stale {
                tracing::debug!(service = %name, %endpoint, "resolve cache entry dropped: endpoint unreachable");
            }
            !stale
        });
    }
}

fn to_resolved(name: &str, reply: ResolveReply) -> Result<Resolved, LocatorError> {
    let endpoints = socket_addrs(&reply.endpoints);
    if endpoints.is_empty() {
        return Err(LocatorError::Protocol(format!(
            "`{name}` resolved to no usable endpoint"
        )));
    }
    Ok(Resolved {
        service: name.to_owned(),
        endpoints,
        version: reply.version,
        graph: Arc::new(reply.graph),
    })
}

/// Connects to the first locator endpoint that accepts within the connect
/// timeout, in order.
async fn connect_any(
    config: &RemoteLocatorConfig,
    tracker: &TaskTracker,
) -> Result<MuxHandle, LocatorError> {
    let mut errors = Vec::new();
    for addr in &config.endpoints {
        match timeout(config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let (handle, connection) = mux::from_tcp(stream, MuxConfig::default())
                    .map_err(|e| LocatorError::Unavailable(format!("{addr}: {e}")))?;
                tracker.spawn(connection.run());
                return Ok(handle);
            }
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: connect timed out")),
        }
    }
    Err(LocatorError::Unavailable(if errors.is_empty() {
        "no locator endpoints configured".into()
    } else {
        errors.join("; ")
    }))
}

/// Follows the `routing` stream for the client's lifetime: subscribe, keep
/// the rings per group, and on any failure resubscribe after 0.1 s, then
/// 1, 2, 4 … 64 s (reset once a dump arrives). A new subscription starts with a full
/// dump, so nothing is missed across a reconnect.
async fn follow_routing(inner: Arc<Inner>) {
    let router_id = format!("rpcgate-{}", super::server::random_uuid());
    let mut failures = 0u32;
    loop {
        let outcome = subscribe_once(&inner, &router_id, &mut failures).await;
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "routing subscription ended");
        }
        // A stream that had delivered a dump (its locator stopped or died)
        // is replaced at once from the next locator in the list, so weight
        // changes are not missed for long; the rings are kept meanwhile.
        // Failures in a row back off.
        let delay = match failures {
            0 => RESUBSCRIBE_AFTER_LOSS,
            n => RESUBSCRIBE_BACKOFF.pause(n - 1),
        };
        failures = failures.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = inner.shutdown.cancelled() => return,
        }
    }
}

/// The pause after `n + 1` consecutive failures: 1, 2, 4 … 64 seconds.
const RESUBSCRIBE_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);

async fn subscribe_once(
    inner: &Inner,
    router_id: &str,
    failures: &mut u32,
) -> Result<(), LocatorError> {
    let handle = tokio::select! {
        handle = connect_any(&inner.config, &inner.tracker) => handle?,
        () = inner.shutdown.cancelled() => return Ok(()),
    };
    let request = RoutingRequest {
        router_id: router_id.to_owned().into(),
    };
    let invocation = Invocation::new(
        Message::new(method::ROUTING, request.to_args()),
        Protocol::Discard,
        Protocol::Streaming,
    );
    let mut channel = handle
        .open(invocation)
        .await
        .map_err(|e| LocatorError::Unavailable(e.to_string()))?;
    loop {
        let frame = tokio::select! {
            frame = channel.receiver.recv() => frame,
            () = inner.shutdown.cancelled() => {
                drop(channel); // sends `discard`
                handle.drain().await;
                return Ok(());
            }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(LocatorError::Unavailable(e.to_string())),
            None => return Err(LocatorError::Unavailable("routing stream closed".into())),
        };
        // A routing `write` carries a map, not a byte-string chunk, so the
        // message is told apart by its id, not by `Frame::stream_event`.
        match frame.ty {
            streaming::WRITE => {
                let update = RoutingUpdate::decode_args(&frame.args)
                    .map_err(|e| LocatorError::Protocol(e.to_string()))?;
                apply_update(inner, update);
                *failures = 0;
            }
            streaming::ERROR => {
                let error = RemoteError::decode_args(&frame.args)
                    .map_err(|e| LocatorError::Protocol(e.to_string()))?;
                return Err(LocatorError::Remote(error));
            }
            _ => return Err(LocatorError::Unavailable("routing stream closed".into())),
        }
    }
}

fn apply_update(inner: &Inner, update: RoutingUpdate) {
    let rings: Rings = update
        .groups
        .into_iter()
        .map(|(group, points)| (group, Arc::new(Continuum::from_points(points))))
        .collect();
    tracing::debug!(groups = rings.len(), "routing update");
    inner.rings.send_replace(Arc::new(rings));
    // Names that became (or stopped being) groups must not hit stale
    // cache entries.
    inner
        .cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    inner.rings_known.send_replace(true);
}

// === publish ===

/// A published service. It stays registered while this value lives;
/// dropping it (or [`Publication::unpublish`]) sends `discard`.
#[derive(Debug)]
pub struct Publication {
    sender: ChannelSender,
    handle: MuxHandle,
}

impl Publication {
    /// Removes the service from the locator and closes the connection.
    pub async fn unpublish(self) {
        let Self { mut sender, handle } = self;
        let _ = sender.send(Message::new(0, Args::Empty)).await;
        handle.drain().await;
    }

    /// Waits until the locator connection is gone (the publication with it).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn lost(&self) {
        self.handle.closed().await;
    }
}

/// Publishes `name` at `endpoints` (with the app graph, version 1) on the
/// first locator that accepts.
pub async fn publish(
    locators: &[SocketAddr],
    name: &str,
    endpoints: Vec<Endpoint>,
    limit: Duration,
    tracker: &TaskTracker,
) -> Result<Publication, LocatorError> {
    let config = RemoteLocatorConfig {
        endpoints: locators.to_vec(),
        connect_timeout: limit,
        ..RemoteLocatorConfig::default()
    };
    let handle = connect_any(&config, tracker).await?;
    let request = PublishRequest {
        name: name.to_owned(),
        endpoints,
        meta: Some((crate::proto::app::PROTOCOL_VERSION, Graph::app())),
    };
    let invocation = Invocation::new(
        Message::new(method::PUBLISH, request.to_args()),
        Protocol::Discard,
        Protocol::Primitive,
    );
    let channel: Channel = handle
        .open(invocation)
        .await
        .map_err(|e| LocatorError::Unavailable(e.to_string()))?;
    let (sender, mut receiver) = channel.split();
    let frame = match timeout(limit, receiver.recv()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => return Err(LocatorError::Unavailable(e.to_string())),
        Ok(None) => {
            return Err(LocatorError::Protocol(
                "publish ended without a reply".into(),
            ));
        }
        Err(_) => return Err(LocatorError::Unavailable("publish timed out".into())),
    };
    match frame.primitive_event() {
        Ok(PrimitiveEvent::Value(_)) => Ok(Publication { sender, handle }),
        Ok(PrimitiveEvent::Error(e)) => Err(LocatorError::Remote(e)),
        Err(e) => Err(LocatorError::Protocol(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_64() {
        let secs: Vec<_> = (0..9)
            .map(|n| RESUBSCRIBE_BACKOFF.pause(n).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
    }
}
