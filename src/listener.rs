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
