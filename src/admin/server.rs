//! The one admin HTTP/1.1 server, for the gateway's admin API and the
//! locator's: owns accepting (at most [`MAX_CONNECTIONS`] at once), the
//! request-head timeout, the token check on writes, and reading a write's
//! short body. What each path does belongs to the side's [`Routes`].
//!
//! A request whose method is not GET or HEAD may change state, so when a
//! token is configured it needs `Authorization: Bearer TOKEN`; without it,
//! or with another, it is answered 401 with `WWW-Authenticate: Bearer` and
//! a JSON error body, and neither its body is read nor its route called.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Token;
use crate::http::log_limit::LogLimit;

/// Refused writes are logged at most once a second: anyone who reaches
/// the listener can make it refuse.
static REFUSED_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

/// The most admin connections served at once: plenty for scrapers,
/// probes and an operator, few enough that a misbehaving client cannot
/// hold many sockets. Past it, accepting pauses until one closes.
pub const MAX_CONNECTIONS: usize = 64;

/// One side's admin routes, served by [`serve`].
pub trait Routes: Send + Sync + 'static {
    /// Names the listener in logs.
    const NAME: &'static str;
    /// The largest write body read; a longer one reaches the route as
    /// `None`.
    const MAX_BODY: usize;

    /// How long a connection may take to send a request head (read when
    /// the connection is accepted).
    fn header_timeout(&self) -> Duration;

    /// The token writes need, if any (read for each request).
    fn token(&self) -> Option<Token>;

    /// Answers one request. `body` is a write's body (`None` for GET and
    /// HEAD, and for a body over [`Self::MAX_BODY`] or broken off).
    fn route(
        &self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Serves `routes` on `listener` until `shutdown`; each connection is a
/// task of `tracker`.
pub async fn serve<R: Routes>(
    listener: TcpListener,
    routes: Arc<R>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while let Some((stream, _, permit)) =
        crate::listener::accept_limited(&listener, &shutdown, R::NAME, &connections).await
    {
        let routes = Arc::clone(&routes);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let header_timeout = routes.header_timeout();
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let routes = Arc::clone(&routes);
                async move { Ok::<_, Infallible>(answer(&*routes, request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(listener = R::NAME, error = %e, "admin connection ended");
                },
                () = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

/// Whether `method` only reads.
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

async fn answer<R: Routes>(
    routes: &R,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if is_read(&parts.method) {
        return routes.route(&parts.method, parts.uri.path(), None).await;
    }
    if let Some(token) = routes.token()
        && !token.admits(&parts.headers)
    {
        if let Some(suppressed) = REFUSED_LOG.allow() {
            tracing::warn!(
                listener = R::NAME,
                method = %parts.method,
                path = parts.uri.path(),
                suppressed,
                "admin write refused: no valid bearer token"
            );
        }
        return unauthorized();
    }
    let body = Limited::new(body, R::MAX_BODY)
        .collect()
        .await
        .ok()
        .map(http_body_util::Collected::to_bytes);
    routes.route(&parts.method, parts.uri.path(), body).await
}

/// 401 with `WWW-Authenticate: Bearer` and the JSON error body.
fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this request changes state and needs `Authorization: Bearer TOKEN` \
         with the admin token",
    );
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error: `{"error": {"status": ..., "message": ...}}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({"error": {"status": status.as_u16(), "message": message}}),
    )
}

/// 405 naming the methods `allowed` (as the `Allow` header lists them).
pub(crate) fn method_not_allowed(method: &Method, allowed: &'static str) -> Response<Full<Bytes>> {
    let mut response = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"error": format!("method {method} not allowed; use {allowed}")}),
    );
    response.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allowed),
    );
    response
}
