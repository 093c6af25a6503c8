//! The locator's admin API: owns a small HTTP/1.1 listener to read and set
//! routing-group weights without editing files, and to reload the config.
//!
//! | request | effect |
//! |---|---|
//! | `GET /ping` | 200 |
//! | `GET /ready` | 200 with details: in a cluster, whether the store is reachable (the locator serves its last view when not) |
//! | `GET /metrics` | Prometheus text, when the binary installed the recorder |
//! | `GET /groups` | every group's weights, as JSON |
//! | `PUT /groups/{name}` with `{"member": weight, ...}` | sets a group; a new dump goes to every `routing` subscriber (in a cluster: written to the store, 503 if it cannot be reached) |
//! | `DELETE /groups/{name}` | removes a group (in a cluster: from the store) |
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
        (&Method::GET, "/ready", _) => {
            // Ready either way: without the store the locator still
            // serves its last view; the details say so.
            let cluster = reloader.cluster().map(|c| {
                let status = c.status();
                serde_json::json!({
                    "store": if status.connected { "connected" } else { "unreachable: serving the last view" },
                    "connected": status.connected,
                    "error": status.error,
                    "revision": status.revision,
                    "failures": status.failures,
                    "peers": registry.peers().len(),
                })
            });
            json(
                StatusCode::OK,
                &serde_json::json!({"ready": true, "uuid": registry.uuid(), "cluster": cluster}),
            )
        }
        (&Method::GET, "/metrics", _) => match crate::metrics::render() {
            Some(text) => {
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            None => error(StatusCode::NOT_FOUND, "no metrics recorder installed"),
        },
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
            if let Some(cluster) = reloader.cluster() {
                if let Err(reason) = super::config::validate_group(&weights) {
                    return error(StatusCode::BAD_REQUEST, &reason);
                }
                return match cluster.put_group(&name, &weights).await {
                    Ok(()) => {
                        tracing::info!(group = %name, "weights written to the cluster store");
                        json(StatusCode::OK, &weights)
                    }
                    Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                };
            }
            match registry.set_group(&name, weights) {
                Ok(()) => {
                    tracing::info!(group = %name, "weights set through the admin API");
                    json(StatusCode::OK, &registry.groups().get(&name))
                }
                Err(reason) => error(StatusCode::BAD_REQUEST, &reason),
            }
        }
        (&Method::DELETE, _, Some(name)) => {
            if let Some(cluster) = reloader.cluster() {
                return match cluster.delete_group(name).await {
                    Ok(true) => json(StatusCode::OK, &serde_json::json!({"removed": name})),
                    Ok(false) => error(StatusCode::NOT_FOUND, &format!("no group `{name}`")),
                    Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                };
            }
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
