//! Accepting connections: owns the accept step every listener shares (the
//! gateway's HTTP and admin listeners, the locator and its admin API, app
//! servers): wait for a connection or for shutdown, and ride out accept
//! errors such as running out of file descriptors with a short pause,
//! instead of spinning on them or stopping.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The pause after a failed accept: long enough not to spin while file
/// descriptors are exhausted, short enough to resume at once after.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection (with `TCP_NODELAY` on), or `None` once `shutdown`
/// is cancelled. `what` names the listener in logs.
///
/// # Cancel safety
///
/// Cancel safe: `TcpListener::accept` is.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<TcpStream> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return None,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
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

/// Like [`accept`], but only while one of `connections`' permits is free:
/// at the limit, accepting pauses (clients wait in the kernel's backlog)
/// until a served connection ends and drops its permit.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn accept_limited(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
    connections: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
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
    let stream = accept(listener, shutdown, what).await?;
    Some((stream, permit))
}
