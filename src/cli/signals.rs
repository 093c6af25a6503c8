//! The signals a long-running command waits for, and how a SIGHUP reload
//! is announced.

use tokio::signal::unix::{SignalKind, signal};

/// What a signal asks the process to do.
pub(crate) enum Signal {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP (only when asked for: otherwise SIGHUP keeps its default).
    Reload,
}

/// The signals a long-running command listens to, registered once so none
/// is lost between two waits.
pub(crate) struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn new(reload: bool) -> Result<Self, String> {
        let listen = |kind| signal(kind).map_err(|e| e.to_string());
        Ok(Self {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
            hangup: if reload {
                Some(listen(SignalKind::hangup())?)
            } else {
                None
            },
        })
    }

    pub(crate) async fn next(&mut self) -> Signal {
        let hangup = async {
            match &mut self.hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
            _ = hangup => Signal::Reload,
        }
    }
}

/// Says what a SIGHUP reload did, in the log and as one stdout line that
/// scripts and tests read: reloaded, reloaded but these keys need a
/// restart, or refused with the reason (the running config stays).
pub(crate) fn announce_reload(outcome: Result<Vec<&'static str>, String>) {
    match outcome {
        Ok(restart) if restart.is_empty() => {
            tracing::info!("config reloaded");
            println!("config reloaded");
        }
        Ok(restart) => {
            let keys = restart.join(", ");
            tracing::warn!(keys, "config reloaded; these keys need a restart to apply");
            println!("config reloaded; needs a restart to apply: {keys}");
        }
        Err(e) => {
            tracing::error!(error = %e, "config refused; keeping the running config");
            println!("config refused: {e}");
        }
    }
}
