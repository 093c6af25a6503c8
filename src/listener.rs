//! Accepting connections: owns the accept step every listener shares (the
//! gateway's HTTP, HTTPS, unix-socket and admin listeners, the locator and
//! its admin API, app servers): wait for a connection or for shutdown, and ride out accept
//! errors such as running out of file descriptors with a short pause,
//! instead of spinning on them or stopping.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// The pause after a failed accept: long enough not to spin while file
/// descriptors are exhausted, short enough to resume at once after.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Pending connections a listener queues before accepting.
const BACKLOG: u32 = 1024;

/// Binds a TCP listener with `SO_REUSEPORT` (and `SO_REUSEADDR`), so a new
/// gateway process can bind the same address beside a running one and take
/// over before the old one drains (see the README's restart procedure).
/// The kernel spreads new connections over every socket bound so.
pub fn bind_reuse_port(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A socket that accepts connections: TCP, or a unix socket.
pub trait Listener {
    /// The accepted connection.
    type Stream;

    /// Whether its peers have addresses of their own (TCP), rather than a
    /// stand-in shared by all (a unix socket's).
    const PEERS_HAVE_ADDRESSES: bool;

    /// Accepts one connection, with its peer as an IP address (a unix
    /// socket's peers count as 127.0.0.1).
    fn accept_one(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    const PEERS_HAVE_ADDRESSES: bool = true;

    async fn accept_one(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    const PEERS_HAVE_ADDRESSES: bool = false;

    async fn accept_one(&self) -> std::io::Result<(UnixStream, SocketAddr)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, SocketAddr::from(([127, 0, 0, 1], 0))))
    }
}

/// The next connection (TCP with `TCP_NODELAY` on), or `None` once
/// `shutdown` is cancelled. `what` names the listener in logs.
///
/// # Cancel safety
///
/// Cancel safe: accepting is.
pub async fn accept<L: Listener>(
    listener: &L,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<L::Stream> {
    accept_with_peer(listener, shutdown, what)
        .await
        .map(|(stream, _)| stream)
}

/// [`accept`], with the peer's address.
///
/// # Cancel safety
///
/// Cancel safe: accepting is.
pub async fn accept_with_peer<L: Listener>(
    listener: &L,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(L::Stream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept_one() => accepted,
            () = shutdown.cancelled() => return None,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "accept failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    () = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// Like [`accept_with_peer`], but only while one of `connections`'
/// permits is free: at the limit, accepting pauses (clients wait in the
/// kernel's backlog) until a served connection ends and drops its permit.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn accept_limited<L: Listener>(
    listener: &L,
    shutdown: &CancellationToken,
    what: &str,
    connections: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Option<(L::Stream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let permit = match std::sync::Arc::clone(connections).try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            crate::metrics::limit_hit("connections");
            tracing::warn!(
                listener = what,
                "connection limit reached; accepting paused"
            );
            tokio::select! {
                permit = std::sync::Arc::clone(connections).acquire_owned() => permit.ok()?,
                () = shutdown.cancelled() => return None,
            }
        }
    };
    let (stream, peer) = accept_with_peer(listener, shutdown, what).await?;
    Some((stream, peer, permit))
}
