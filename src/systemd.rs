//! Service-manager notifications (`sd_notify`): owns telling systemd (or
//! anything listening on `$NOTIFY_SOCKET`) that the gateway is ready, is
//! reloading, or is stopping, so a `Type=notify` unit orders its
//! dependants by the real state. Without `$NOTIFY_SOCKET` it does nothing.
//!
//! The unit uses `Type=notify` with `ExecReload=kill -HUP`, not
//! `Type=notify-reload`: the latter needs `MONOTONIC_USEC` with the reload,
//! and std does not expose `CLOCK_MONOTONIC`'s value without `unsafe`.

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// What the process tells the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving: every listener is bound (again, after a reload).
    Ready,
    /// Reading the config again; `Ready` follows.
    Reloading,
    /// Shutting down.
    Stopping,
}

impl State {
    fn message(self) -> &'static str {
        match self {
            Self::Ready => "READY=1",
            Self::Reloading => "RELOADING=1",
            Self::Stopping => "STOPPING=1",
        }
    }
}

/// Sends `state` to `$NOTIFY_SOCKET`, if set. Failures are logged, never
/// fatal: the gateway serves the same either way.
pub fn notify(state: State) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, state.message()) {
        tracing::warn!(error = %e, ?socket, "cannot notify the service manager");
    }
}

/// To a socket path, or an abstract socket when it starts with `@`.
fn send(socket: &OsString, message: &str) -> std::io::Result<()> {
    let addr = match socket.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}
