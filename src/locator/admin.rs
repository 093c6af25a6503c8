//! The locator's admin API: owns a small HTTP/1.1 listener to read and set
//! routing-group weights without editing files, and to reload the config.
//!
//! | request | effect |
//! |---|---|
//! | `GET /ping` | 200 |
//! | `GET /groups` | every group's weights, as JSON |
//! | `PUT /groups/{name}` with `{"member": weight, ...}` | sets a group; a new dump goes to every `routing` subscriber |
//! | `DELETE /groups/{name}` | removes a group |
//! | `GET /services` | every resolvable name and its instances |
//! | `POST /reload` | re-reads the config file, as SIGHUP does |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry::Registry;
use super::server::Reloader;

/// The largest admin request body accepted.
const MAX_BODY: usize = 64 << 10;

pub(crate) async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    while let Some(stream) = crate::listener::accept(&listener, &shutdown, "locator admin").await {
        let registry = Arc::clone(&registry);
        let reloader = Arc::clone(&reloader);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |request| {
                let registry = Arc::clone(&registry);
                let reloader = Arc::clone(&reloader);
                async move { Ok::<_, Infallible>(route(request, &registry, &reloader).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(error = %e, "admin connection ended");
                },
                () = shutdown.cancelled() => {}
            }
        });
    }
}

async fn route(
    request: Request<Incoming>,
    registry: &Registry,
    reloader: &Reloader,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let group = path
        .strip_prefix("/groups/")
        .filter(|name| !name.is_empty());
    match (request.method(), path.as_str(), group) {
        (&Method::GET, "/ping", _) => json(StatusCode::OK, &serde_json::json!({"ok": true})),
        (&Method::GET, "/groups", _) => json(StatusCode::OK, &registry.groups()),
        (&Method::GET, "/services", _) => {
            let services: BTreeMap<_, Vec<_>> = registry
                .services()
                .into_iter()
                .map(|(name, instances)| {
                    let list = instances
                        .iter()
                        .map(|i| {
                            serde_json::json!({
                                "endpoints": i.endpoints.iter().map(|e| format!("{}:{}", e.host, e.port)).collect::<Vec<_>>(),
                                "version": i.version,
                            })
                        })
                        .collect();
                    (name, list)
                })
                .collect();
            json(StatusCode::OK, &services)
        }
        (&Method::POST, "/reload", _) => match reloader.reload() {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({"reloaded": true})),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        (&Method::PUT, _, Some(name)) => {
            let name = name.to_owned();
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
            };
            let weights: BTreeMap<String, u32> = match serde_json::from_slice(&body) {
                Ok(weights) => weights,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("expected {{\"member\": weight, ...}} with whole weights: {e}"),
                    );
                }
            };
            match registry.set_group(&name, weights) {
                Ok(()) => {
                    tracing::info!(group = %name, "weights set through the admin API");
                    json(StatusCode::OK, &registry.groups().get(&name))
                }
                Err(reason) => error(StatusCode::BAD_REQUEST, &reason),
            }
        }
        (&Method::DELETE, _, Some(name)) => {
            if registry.remove_group(name) {
                json(StatusCode::OK, &serde_json::json!({"removed": name}))
            } else {
                error(StatusCode::NOT_FOUND, &format!("no group `{name}`"))
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no route for {} {path}", request.method()),
        ),
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({"error": {"status": status.as_u16(), "message": message}}),
    )
}
