//! Why a pool could not give a connection, and why its last connect failed
//! (kept as the error's source).

use super::*;

/// Why no connection could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// The locator does not know the service.
    #[error("service `{0}` is not available")]
    NotFound(String),
    /// No connection came up before the deadline.
    #[error("no connection to `{service}` before the deadline: {last_error}")]
    NoConnection {
        /// The service.
        service: String,
        /// The last connect or resolve failure (or that the first connect
        /// was still under way).
        #[source]
        last_error: ConnectError,
    },
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The service has no connection and the locator cannot be reached
    /// (503, at once or within the resolve timeout, not at the deadline).
    #[error("no connection to `{service}`, and the locator is unreachable: {source}")]
    LocatorUnavailable {
        /// The service.
        service: String,
        /// What the locator client said.
        #[source]
        source: LocatorError,
    },
    /// The service resolved, but its protocol graph is not an app's: it is
    /// never sent an HTTP request.
    #[error("service `{0}` is not an app: it does not take HTTP requests")]
    NotAnApp(String),
    /// The pool was closed while the request waited: its service left
    /// the routing group it served. Nothing was sent; choose again.
    #[error("the pool of `{0}` closed: it left its routing group")]
    Left(String),
}

/// Why the pool's last attempt to connect failed: the source of
/// [`PoolError::NoConnection`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// Resolving the service failed.
    #[error(transparent)]
    Locator(LocatorError),
    /// The service resolved to no endpoints.
    #[error("`{0}` resolved to nothing")]
    ResolvedToNothing(String),
    /// Every endpoint refused the connection or did not answer in time.
    #[error("`{service}` ({member}): {}", EndpointFailure::list(failures))]
    Unreachable {
        /// The service (or routing-group member) asked for.
        service: String,
        /// The service it resolved to.
        member: String,
        /// Each endpoint tried, in order, and why it failed.
        failures: Vec<EndpointFailure>,
    },
    /// A connection could not be set up after it was accepted.
    #[error("{endpoint}: {source}")]
    Setup {
        /// The backend address.
        endpoint: SocketAddr,
        /// What failed.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A connection closed right after connecting, without being asked to
    /// drain: a backend that accepts and drops at once.
    #[error("{0}: closed right after connecting")]
    ClosedAtOnce(SocketAddr),
    /// The service resolved, but its graph is not an app's.
    #[error("`{0}` is not an app")]
    NotAnApp(String),
    /// No attempt has finished yet.
    #[error("still connecting")]
    StillConnecting,
}

/// One endpoint a connect attempt tried, and why it failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint}: {}", match error { Some(e) => e.to_string(), None => "connect timed out".to_owned() })]
pub struct EndpointFailure {
    /// The backend address.
    pub endpoint: SocketAddr,
    /// The connect error; `None` when the connect timed out.
    #[source]
    pub error: Option<Arc<std::io::Error>>,
}

impl EndpointFailure {
    pub(super) fn list(failures: &[Self]) -> String {
        failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}
