//! The admin listener: owns `/ping`, `/health`, `/ready` (false while
//! draining), `/metrics` (Prometheus text), `/pools` (each connection's
//! endpoint, age, in-flight and state) and `/config`. Loopback by default; it has no auth.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::Handler;
use crate::pool::Pools;

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
    while let Some(stream) = crate::listener::accept(&listener, &shutdown, "admin").await {
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(request.uri().path(), &state)) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

fn route(path: &str, state: &AdminState) -> Response<Full<Bytes>> {
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
        // Nothing in the config is secret yet; if credentials are added,
        // redact them here.
        "/config" => text(StatusCode::OK, &format!("{:#?}\n", state.handler.config())),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no such admin route"}),
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
