//! The admin listener: owns `/ping`, `/health`, `/ready` (false while
//! draining), `/metrics` (Prometheus text), `/pools` (each connection's
//! endpoint, age, in-flight and state), `/config` (the running config as
//! JSON, see [`crate::config::view`]) and `/log-level`. Loopback by default
//! (another address needs `admin_allow_remote`); it has no auth.
//!
//! Every endpoint but `/log-level` is read-only: only GET and HEAD are
//! served, anything else is 405. `PUT /log-level` with a level (`error`,
//! `warn`, `info`, `debug`, `trace`) as the body changes the log level
//! live, where the binary registered how ([`set_log_level_control`]). Like the HTTP listener, it closes a connection that takes
//! longer than `limits.header_timeout` (of the running config) to send a
//! request head, and it serves at most [`MAX_CONNECTIONS`] connections at
//! once (accepting pauses at the cap).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::Handler;
use crate::pool::Pools;

/// The most admin connections served at once: plenty for scrapers,
/// probes and an operator, few enough that a misbehaving client cannot
/// hold many sockets. Past it, accepting pauses until one closes.
pub const MAX_CONNECTIONS: usize = 64;

/// Reads (`None`) or sets (`Some(level)`) the process's log level,
/// returning the level in force, or why the level was refused.
pub type LogLevelControl = Box<dyn Fn(Option<&str>) -> Result<String, String> + Send + Sync>;

static LOG_LEVEL: std::sync::OnceLock<LogLevelControl> = std::sync::OnceLock::new();

/// Registers how `/log-level` reads and changes the log level (the binary
/// does this when it installs its subscriber). Only the first call takes
/// effect.
pub fn set_log_level_control(control: LogLevelControl) {
    let _ = LOG_LEVEL.set(control);
}

/// The largest `PUT /log-level` body read.
const LOG_LEVEL_BODY_LIMIT: usize = 64;

/// What the admin API reads.
#[derive(Debug)]
pub struct AdminState {
    /// The request handler, whose config is the running one.
    pub handler: Arc<Handler>,
    /// The pools.
    pub pools: Arc<Pools>,
    /// False once shutdown starts.
    pub ready: AtomicBool,
}

/// Serves the admin API until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while let Some((stream, _, permit)) =
        crate::listener::accept_limited(&listener, &shutdown, "admin", &connections).await
    {
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let header_timeout = state.handler.config().limits.header_timeout;
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let state = Arc::clone(&state);
                async move {
                    let (parts, body) = request.into_parts();
                    // Only a PUT carries a body worth reading, and a short one.
                    let body = if parts.method == Method::PUT {
                        http_body_util::BodyExt::collect(http_body_util::Limited::new(
                            body,
                            LOG_LEVEL_BODY_LIMIT,
                        ))
                        .await
                        .ok()
                        .map(http_body_util::Collected::to_bytes)
                    } else {
                        None
                    };
                    Ok::<_, Infallible>(route(&parts.method, parts.uri.path(), body, &state))
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

/// The methods every admin endpoint serves.
const ALLOWED: &str = "GET, HEAD";

fn route(
    method: &Method,
    path: &str,
    body: Option<Bytes>,
    state: &AdminState,
) -> Response<Full<Bytes>> {
    if path == "/log-level" {
        return log_level(method, body);
    }
    let known = matches!(
        path,
        "/ping" | "/health" | "/ready" | "/pools" | "/metrics" | "/config"
    );
    if known && !matches!(*method, Method::GET | Method::HEAD) {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": format!("method {method} not allowed; use {ALLOWED}")}),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static(ALLOWED),
        );
        return response;
    }
    match path {
        "/ping" => text(StatusCode::OK, "pong\n"),
        "/health" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/ready" => {
            if state.ready.load(Ordering::Acquire) {
                json(StatusCode::OK, &serde_json::json!({"ready": true}))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"ready": false}),
                )
            }
        }
        "/pools" => json(StatusCode::OK, &state.pools.view()),
        "/metrics" => match crate::metrics::render() {
            Some(text) => {
                let mut response = text_response(StatusCode::OK, &text);
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            None => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "no metrics recorder installed"}),
            ),
        },
        "/config" => json(
            StatusCode::OK,
            &crate::config::view(&state.handler.config()),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no such admin route"}),
        ),
    }
}

/// `GET /log-level` reads the level, `PUT /log-level` sets it.
fn log_level(method: &Method, body: Option<Bytes>) -> Response<Full<Bytes>> {
    const ALLOWED_HERE: &str = "GET, HEAD, PUT";
    let Some(control) = LOG_LEVEL.get() else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "this process does not let the admin API change its log level"}),
        );
    };
    let outcome = match *method {
        Method::GET | Method::HEAD => control(None),
        Method::PUT => match body.as_deref().map(std::str::from_utf8) {
            Some(Ok(level)) => control(Some(level.trim())),
            _ => Err(format!(
                "the body must be a level (error, warn, info, debug or trace), at most {LOG_LEVEL_BODY_LIMIT} bytes"
            )),
        },
        _ => {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"error": format!("method {method} not allowed; use {ALLOWED_HERE}")}),
            );
            response.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static(ALLOWED_HERE),
            );
            return response;
        }
    };
    match outcome {
        Ok(level) => json(StatusCode::OK, &serde_json::json!({"log_level": level})),
        Err(reason) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": reason}),
        ),
    }
}

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    text(status, body)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut response = text(status, &serde_json::to_string(value).unwrap_or_default());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
