//! Every way serving a request can fail, by who failed: the client (its
//! route, its body), the backend side ([`DispatchError`]) or the gateway
//! (closing, stream caps). The one mapping to HTTP statuses is
//! `http::response`'s.

use super::streams::TooManyStreams;
use std::time::Duration;

use super::{BadRequestId, UploadError};
use crate::mux::ChannelError;
use crate::pool::PoolError;
use crate::proto::category;
use crate::proto::msgpack::MsgpackError;
use crate::proto::{MessageError, RemoteError};
use crate::route::RouteError;

/// Why a request could not be answered by the app. Each says who failed;
/// the single HTTP mapping lives in `http::response`.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The locator does not know the service (503).
    #[error("service `{0}` is not available")]
    NotFound(String),
    /// No backend connection before the deadline (503).
    #[error("{0}")]
    NoConnection(#[source] PoolError),
    /// The service is not an app (its graph from `resolve`), so it is never
    /// sent an HTTP request (404: the URL names nothing that serves HTTP).
    #[error("service `{0}` is not an app: it does not take HTTP requests")]
    NotAnApp(String),
    /// No backend connection, and the locator cannot be reached (503).
    #[error("{0}")]
    LocatorUnavailable(#[source] PoolError),
    /// Every attempt was refused as "queue full" or equivalent (503 +
    /// Retry-After).
    #[error("the app is overloaded after {attempts} attempts: {last}")]
    Overloaded {
        /// Attempts made.
        attempts: u32,
        /// The last refusal.
        last: RemoteError,
    },
    /// The deadline passed (504).
    #[error("no reply from the app within {0:?}")]
    Deadline(Duration),
    /// The backend broke the protocol before the response head (502).
    #[error("bad gateway: {0}")]
    Protocol(&'static str),
    /// The app's response meta could not be read (502).
    #[error("bad gateway: the app's response meta is malformed: {0}")]
    BadMeta(#[source] MsgpackError),
    /// A frame on the request's channel did not fit its protocol (502).
    #[error("bad gateway: a malformed frame on the request's channel: {0}")]
    BadFrame(#[source] MessageError),
    /// The app sent a status that is not an HTTP status (502).
    #[error("bad gateway: the app sent status {0}")]
    BadStatus(u16),
    /// The backend connection failed under the request before the
    /// response head: lost, refused, or a message it could not carry (502).
    #[error("bad gateway: {0}")]
    Channel(#[source] ChannelError),
    /// The app answered with an error (500).
    #[error("app error {0}")]
    App(RemoteError),
    /// A streamed upload stopped on the client's side before the response
    /// head (413, 408 or 400); the app's channel was cancelled.
    #[error("{0}")]
    Upload(#[source] UploadError),
    /// Too many requests in flight (at the gateway or for the service):
    /// refused at once (503 + `Retry-After`).
    #[error("too many requests in flight {0}; try again shortly")]
    Shed(&'static str),
    /// The gateway is shutting down (503).
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Every way the request path can fail, by who failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route (client: 400 or 404).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A malformed `X-Request-Id` (client: 400).
    #[error(transparent)]
    RequestId(#[from] BadRequestId),
    /// The body is over the limit (client: 413).
    #[error("request body larger than the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// The client sent no body bytes for `limits.body_timeout` (client:
    /// 408).
    #[error("no request body bytes for {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The body could not be read (client: 400).
    #[error("reading the request body failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend side failed (locator, connection, app).
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The request came on a connection being closed because its client
    /// cancelled most of its requests (rapid reset): not dispatched (503).
    #[error("this connection is closing: its client cancelled most of its requests")]
    ConnectionClosing,
    /// A new long-lived stream past `limits.max_streams` or
    /// `limits.max_streams_per_client` (503).
    #[error(transparent)]
    TooManyStreams(#[from] TooManyStreams),
}

impl GatewayError {
    /// The `rpcgate_limit_hits_total` label of the client limit this
    /// error is, if it is one of the body's (size or timeout).
    pub fn body_limit_hit(&self) -> Option<&'static str> {
        match self {
            Self::BodyTooLarge(_) => Some("body_size"),
            Self::BodyTimeout(_) => Some("body_timeout"),
            Self::Dispatch(DispatchError::Upload(e)) => e.limit(),
            _ => None,
        }
    }

    /// The app error's category name, when the app answered with one.
    pub fn app_category(&self) -> Option<&'static str> {
        match self {
            Self::Dispatch(DispatchError::App(e) | DispatchError::Overloaded { last: e, .. }) => {
                Some(category::name(e.code.category))
            }
            _ => None,
        }
    }

    /// Whether it failed before a known service was reached (the locator
    /// does not know the name, or cannot be asked): its metrics then carry
    /// no service label, so unknown names cannot grow the label set.
    pub fn is_unknown_service(&self) -> bool {
        matches!(
            self,
            Self::Route(_)
                | Self::RequestId(_)
                | Self::Dispatch(DispatchError::NotFound(_) | DispatchError::LocatorUnavailable(_))
        )
    }
}
