//! The one accept path of the HTTP listeners, plain and TLS alike: accept
//! (pausing while the connection limit is full), the PROXY header when
//! required, the per-client cap, then the listener's [`Handshake`] (none
//! for plain HTTP, TLS for HTTPS), then the connection served.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ConnectionLimit, Handler, connection};
use crate::prefixed::Prefixed;

/// What a listener does between admitting a connection and serving HTTP
/// on it.
pub trait Handshake<S>: Send + Sync + 'static {
    /// The listener's name in logs and metrics.
    const NAME: &'static str;

    /// The limit on the PROXY header and the handshake together; `None`:
    /// the config's `limits.header_timeout`, for the PROXY header alone.
    fn timeout(&self) -> Option<Duration>;

    /// Serves `stream` (after its PROXY header, if any) from `client`:
    /// the handshake by `deadline`, then HTTP until the connection ends.
    fn serve(
        &self,
        stream: Prefixed<S>,
        client: SocketAddr,
        handler: Arc<Handler>,
        connections: Arc<ConnectionLimit>,
        shutdown: CancellationToken,
        deadline: Instant,
    ) -> impl Future<Output = ()> + Send;
}

/// Plain HTTP: no handshake.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl<S> Handshake<S> for Plain
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    const NAME: &'static str = "http";

    fn timeout(&self) -> Option<Duration> {
        None
    }

    async fn serve(
        &self,
        stream: Prefixed<S>,
        client: SocketAddr,
        handler: Arc<Handler>,
        connections: Arc<ConnectionLimit>,
        shutdown: CancellationToken,
        _deadline: Instant,
    ) {
        connection::serve_prefixed(stream, Some(client), handler, &connections, shutdown, None)
            .await;
    }
}

/// Accepts connections on `listener` until `shutdown`, each while
/// `connections` has room (see [`ConnectionLimit::acquire`]) and its
/// client is under `limits.max_connections_per_client` (past it, the
/// connection is closed unanswered). With `proxy_protocol`, each
/// connection must start with a PROXY header. Each is then served through
/// `handshake`.
pub async fn serve_with<L, H>(
    listener: L,
    proxy_protocol: bool,
    handshake: Arc<H>,
    handler: Arc<Handler>,
    connections: Arc<ConnectionLimit>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    L: crate::listener::Listener,
    L::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handshake<L::Stream>,
{
    loop {
        let Some((stream, peer)) =
            crate::listener::accept_with_peer(&listener, &shutdown, H::NAME).await
        else {
            return;
        };
        // Room for it, made by closing an idle connection if need be
        // (only once a client is there); meanwhile accepting pauses.
        let Some(permit) = connections.acquire(&shutdown, H::NAME).await else {
            return;
        };
        let handshake = Arc::clone(&handshake);
        let handler = Arc::clone(&handler);
        let connections = Arc::clone(&connections);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let config = handler.config();
            // The PROXY header (when required) and the handshake share
            // the handshake's limit.
            let limit = handshake.timeout().unwrap_or(config.limits.header_timeout);
            let deadline = Instant::now() + limit;
            match crate::proxy_protocol::accept(stream, peer, proxy_protocol, limit).await {
                Ok((stream, client)) => {
                    let ip = L::PEERS_HAVE_ADDRESSES.then_some(client.ip());
                    // Past its client's cap: dropped before any
                    // handshake, so closed unanswered.
                    let Ok(_client) = connections.admit(ip, &config) else {
                        return;
                    };
                    drop(config);
                    handshake
                        .serve(stream, client, handler, connections, shutdown, deadline)
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
fn refuse_proxy_header(error: &crate::proxy_protocol::ProxyHeaderError) {
    crate::metrics::limit_hit("proxy_header");
    tracing::debug!(%error, "connection closed: PROXY protocol header refused");
}
