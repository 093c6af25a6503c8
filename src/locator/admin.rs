//! The locator's admin API: owns the routes to read and set routing-group
//! weights without editing files, and to reload the config. They run on
//! the gateway's admin server ([`crate::admin::serve_routes`]): the head
//! timeout (`admin_header_timeout_ms`), at most
//! [`crate::admin::MAX_CONNECTIONS`] connections, and with
//! `admin_token_file` (or `--admin-token-file`) every PUT, POST and DELETE
//! needs `Authorization: Bearer TOKEN` (else 401). A known path asked with
//! another method is 405 with `Allow`.
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
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};

use super::registry::Registry;
use super::server::Reloader;
use crate::admin::{Routes, Token, error, json, method_not_allowed};

/// The largest admin request body accepted.
const MAX_BODY: usize = 64 << 10;

/// The locator's admin routes, served by the shared admin server
/// ([`crate::admin::serve_routes`]).
#[derive(Debug)]
pub(crate) struct LocatorAdmin {
    pub(crate) registry: Arc<Registry>,
    pub(crate) reloader: Arc<Reloader>,
    /// The token writes need (`admin_token_file`), fixed at start.
    pub(crate) token: Option<Token>,
    /// `admin_header_timeout_ms`.
    pub(crate) header_timeout: Duration,
}

impl Routes for LocatorAdmin {
    const NAME: &'static str = "locator admin";
    const MAX_BODY: usize = MAX_BODY;

    fn header_timeout(&self) -> Duration {
        self.header_timeout
    }

    fn token(&self) -> Option<Token> {
        self.token.clone()
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Response<Full<Bytes>> {
        route(method, path, body, &self.registry, &self.reloader).await
    }
}

/// The methods each path serves, for 405's `Allow`.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/ping" | "/ready" | "/metrics" | "/groups" | "/services" => Some("GET, HEAD"),
        "/reload" => Some("POST"),
        _ if path.strip_prefix("/groups/").is_some_and(|n| !n.is_empty()) => Some("PUT, DELETE"),
        _ => None,
    }
}

async fn route(
    method: &Method,
    path: &str,
    body: Option<Bytes>,
    registry: &Registry,
    reloader: &Reloader,
) -> Response<Full<Bytes>> {
    let group = path
        .strip_prefix("/groups/")
        .filter(|name| !name.is_empty());
    // HEAD is answered as GET (hyper leaves the body out).
    let get = Method::GET;
    let method = if *method == Method::HEAD {
        &get
    } else {
        method
    };
    match (method, path, group) {
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
            let Some(body) = body else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body was broken off or over {MAX_BODY} bytes"),
                );
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
        _ => match allowed(path) {
            Some(allowed) => method_not_allowed(method, allowed),
            None => error(
                StatusCode::NOT_FOUND,
                &format!("no route for {method} {path}"),
            ),
        },
    }
}
