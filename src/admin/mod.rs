//! The admin APIs: owns the gateway's admin routes, `/ping`, `/health`,
//! `/ready` (false while draining), `/metrics` (Prometheus text), `/pools`
//! (each connection's endpoint, age, in-flight and state), `/config` (the
//! running config as JSON, see [`crate::config::view`]) and `/log-level`;
//! and the one admin server ([`Routes`], [`serve_routes`]) that serves them
//! and the locator's, with the admin [`Token`]. Loopback by default
//! (another address needs `admin_allow_remote`, and that needs
//! `admin_token_file`).
//!
//! Every endpoint but `/log-level` is read-only: only GET and HEAD are
//! served, anything else is 405. `PUT /log-level` with a level (`error`,
//! `warn`, `info`, `debug`, `trace`) as the body changes the log level
//! live, where the binary registered how ([`set_log_level_control`]). With
//! `admin_token_file` set (re-read on every reload), every request but GET
//! and HEAD needs `Authorization: Bearer TOKEN`, else 401. Like the HTTP
//! listener, it closes a connection that takes longer than
//! `limits.header_timeout` (of the running config) to send a request head,
//! and it serves at most [`MAX_CONNECTIONS`] connections at once
//! (accepting pauses at the cap).
//!
//! `GET /ui` is a page for people: live rates, shares against weights,
//! connections, streams, limit hits and ejections, updated every second
//! from `GET /stats` ([`Stats`], computed when asked). Both are reads and
//! need no token.

mod server;
mod stats;
mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::server::{MAX_CONNECTIONS, Routes, serve as serve_routes};
pub(crate) use self::server::{error, json, method_not_allowed};
pub use self::stats::{Report, Stats, WINDOW as STATS_WINDOW};
pub use self::token::{Token, TokenError};

use crate::http::Handler;
use crate::pool::Pools;

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
    /// The samples behind `/stats` (empty until someone asks).
    pub stats: Stats,
}

/// Serves the admin API until `shutdown`, on the shared admin server.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    server::serve(listener, state, shutdown, tracker).await;
}

impl Routes for AdminState {
    const NAME: &'static str = "admin";
    const MAX_BODY: usize = LOG_LEVEL_BODY_LIMIT;

    fn header_timeout(&self) -> Duration {
        self.handler.config().limits.header_timeout
    }

    fn token(&self) -> Option<Token> {
        self.handler.config().admin_token.clone()
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Response<Full<Bytes>> {
        route(method, path, body, self)
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
        "/ping"
            | "/health"
            | "/ready"
            | "/pools"
            | "/metrics"
            | "/config"
            | "/stats"
            | "/ui"
            | "/favicon.ico"
    );
    if known && !matches!(*method, Method::GET | Method::HEAD) {
        return method_not_allowed(method, ALLOWED);
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
        "/stats" => {
            let mut response = json(StatusCode::OK, &state.stats.report(&state.pools));
            response.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-store"),
            );
            response
        }
        "/ui" => static_page(UI_PAGE, "text/html; charset=utf-8"),
        "/favicon.ico" => static_page(FAVICON, "image/svg+xml"),
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
        _ => return method_not_allowed(method, ALLOWED_HERE),
    };
    match outcome {
        Ok(level) => json(StatusCode::OK, &serde_json::json!({"log_level": level})),
        Err(reason) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": reason}),
        ),
    }
}

/// The `/ui` page: HTML, CSS and JavaScript in one file, nothing fetched
/// from elsewhere but `/stats`.
const UI_PAGE: &str = include_str!("ui.html");

/// The icon of `/ui` (also linked inline, so browsers need not ask).
const FAVICON: &str = include_str!("favicon.svg");

fn static_page(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    text(status, body)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
}
